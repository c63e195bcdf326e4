"""``mde bench``: speed benchmarks of this machine, written as JSON, a Markdown table and a PNG plot.

The suites live in :mod:`mde.bench`; they import torch, librosa and friends only when they run, and
record a baseline they cannot run as skipped, with the reason.
"""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from pathlib import Path
from typing import Optional

import typer

from mde.cli.console import err, out

bench_app = typer.Typer(
    help=("Benchmarks: front end, models, decoders, end to end, streaming latency, search (and all of them). Each writes "
          "bench_<suite>_<device>.json, .md and .png to --out, naming the machine, versions and command; "
          "medians over repeated runs with min and max, ratios against a baseline measured in the same run."),
    no_args_is_help=True,
)

DEVICE_HELP = "cpu, or cuda for the GPU rows (needs a CUDA device that torch sees)."
THREADS_HELP = "N, the multi-thread setting: CPU threads for the N-thread rows and for inference (default: all cores)."
OUT_HELP = "Folder for bench_<suite>_<device>.json / .md / .png (created if needed)."
QUICK_HELP = "Few rounds, short clips and small batches: a smoke test in seconds, not a measurement."
ROUNDS_HELP = "Timed rounds per row (default: the suite's; the models suite fits rounds to the row's speed)."
MODELS_HELP = ("Models to measure, store names or .onnx paths, repeatable (default: MTT_musicnn, imported on "
               "first use, plus the first-seed models in the store; e2e: MTT_musicnn).")
AUDIO_HELP = ("Folder of real audio: the clips, the int8 calibration set, and the end-to-end files as they are "
              "(default: $MDE_TEST_DATA/audio or ../shared/data/audio beside a source checkout; e2e then "
              "copies its MP3s and makes an Ogg Vorbis of each).")
SEED_HELP = ("A first-seed FCN29 .ckpt: the end-to-end suite compares mde with the seed's torch pipeline on it "
             "(default: the shared test data's FCN29 checkpoint, except with --quick).")


# Options shared by the subcommands (typer reads these defaults; one definition each).
DEVICE = typer.Option("cpu", "--device", help=DEVICE_HELP)
THREADS = typer.Option(None, "--threads", help=THREADS_HELP)
OUT_DIR = typer.Option(Path("bench-results"), "--out", "-o", help=OUT_HELP)
QUICK = typer.Option(False, "--quick", help=QUICK_HELP)
ROUNDS = typer.Option(None, "--rounds", help=ROUNDS_HELP)
MODELS = typer.Option(None, "--models", "-m", help=MODELS_HELP)
AUDIO = typer.Option(None, "--audio", help=AUDIO_HELP)
SEED_CHECKPOINT = typer.Option(None, "--seed-checkpoint", help=SEED_HELP)


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")


def _settings(out_dir: Path, device: str, threads: Optional[int], quick: bool, rounds: Optional[int],
              models: Optional[list[str]] = None, audio: Optional[Path] = None,
              seed_checkpoint: Optional[Path] = None):
    from mde.bench.suites import BenchSettings

    return BenchSettings(out=out_dir, device=device, threads=threads, quick=quick, rounds=rounds,
                         models=tuple(models or ()), audio=audio, seed_checkpoint=seed_checkpoint,
                         announce=err.print)


def _run(names: list[str], settings) -> None:
    from mde.bench.suites import run_all

    for result in run_all(settings, names):
        out.print(result.markdown)
        written = ", ".join(str(p) for p in (result.json, result.md, result.png) if p is not None)
        err.print(f"wrote {written}")


@bench_app.command("frontend")
def frontend(
    device: str = DEVICE,
    threads: Optional[int] = THREADS,
    out_dir: Path = OUT_DIR,
    quick: bool = QUICK,
    rounds: Optional[int] = ROUNDS,
    audio: Optional[Path] = AUDIO,
) -> None:
    """The C log-mel kernel vs torch.stft, librosa and torchaudio: clips of 0.5, 3.7, 29 and 300 s, 1 and N threads."""
    _run(["frontend"], _settings(out_dir, device, threads, quick, rounds, audio=audio))


@bench_app.command("models")
def models(
    device: str = DEVICE,
    threads: Optional[int] = THREADS,
    out_dir: Path = OUT_DIR,
    quick: bool = QUICK,
    rounds: Optional[int] = ROUNDS,
    model: Optional[list[str]] = MODELS,
    audio: Optional[Path] = AUDIO,
) -> None:
    """Each model and window scale under torch eager and ONNX Runtime fp32 / int8 / fp16 (GPU: torch fp16 +
    CUDA graphs, ORT CUDA, TensorRT), batch 1 and 32: x real time and GFLOP/s against the machine's peak."""
    _run(["models"], _settings(out_dir, device, threads, quick, rounds, model, audio))


@bench_app.command("decode")
def decode(
    out_dir: Path = OUT_DIR,
    quick: bool = QUICK,
    rounds: Optional[int] = ROUNDS,
    audio: Optional[Path] = AUDIO,
) -> None:
    """The decoders per format (MP3, WAV, FLAC, Ogg Vorbis, M4A/AAC): soundfile (mde's), PyAV and miniaudio
    (the decoders extra): decode time against soundfile's on the same file, and agreement with its samples
    (lag, length, max |difference|, SNR)."""
    _run(["decode"], _settings(out_dir, "cpu", 1, quick, rounds, audio=audio))


@bench_app.command("e2e")
def e2e(
    device: str = DEVICE,
    threads: Optional[int] = THREADS,
    out_dir: Path = OUT_DIR,
    quick: bool = QUICK,
    rounds: Optional[int] = ROUNDS,
    model: Optional[list[str]] = MODELS,
    audio: Optional[Path] = AUDIO,
    seed_checkpoint: Optional[Path] = SEED_CHECKPOINT,
    ray: bool = typer.Option(False, "--ray", help="Also run each model on a local Ray instance (mde embed --ray: one actor of 1 thread per CPU, each decoding its own files; the ray extra): files/s against the local batch of as many 1-thread workers, the per-file overhead, Ray's start-up and an actor's peak memory."),
) -> None:
    """A folder of real MP3 / OGG files to embeddings with 1 and 2 worker processes: files/s, x real time,
    peak memory; against the first seed's torch pipeline (and with --ray, on Ray)."""
    settings = _settings(out_dir, device, threads, quick, rounds, model, audio, seed_checkpoint)
    _run(["e2e"], dataclasses.replace(settings, ray=ray))


@bench_app.command("stream")
def stream(
    device: str = typer.Option("cpu", "--device", help="cpu, or cuda to run the models with the torch backend on the GPU."),
    out_dir: Path = OUT_DIR,
    quick: bool = QUICK,
    seconds: Optional[float] = typer.Option(None, "--seconds", min=1.0, help="Seconds of audio streamed at real time (default 60, 8 with --quick; 600 is the soak test)."),
    audio: Optional[Path] = typer.Option(None, "--audio", help=AUDIO_HELP + " The stream repeats its MTAT clip, or its first file."),
) -> None:
    """Latency of 'mde stream' at 0.5, 3.7 and 29 s at once, the process pinned to one CPU core, a file
    paced at real time: p50 / p99 / max per scale, frames, drops, CPU load and peak memory."""
    settings = _settings(out_dir, device, 1, quick, None, audio=audio)
    _run(["stream"], replace(settings, stream_seconds=seconds))


@bench_app.command("search")
def search(
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for building the indexes (default: all cores); queries run one at a time on one thread."),
    out_dir: Path = OUT_DIR,
    quick: bool = typer.Option(False, "--quick", help="Only the 10^4-vector size and 200 queries: seconds, not the full 10^4 / 10^5 / 10^6 run (a few minutes, about 3 GB of memory)."),
    rounds: Optional[int] = typer.Option(None, "--rounds", help="Held-out queries timed per index (default 1000; 200 with --quick)."),
) -> None:
    """faiss indexes as 'mde index' builds them (exact up to 100,000 vectors, IVF-Flat beyond) over 10^4, 10^5
    and 10^6 synthetic 200-d vectors: build time, query latency p50 / p99 (k = 10, one query at a time),
    recall@10 against exact search, memory. Needs the search extra (faiss-cpu)."""
    _run(["search"], _settings(out_dir, "cpu", threads, quick, rounds))


@bench_app.command("all")
def run_everything(
    device: str = DEVICE,
    threads: Optional[int] = THREADS,
    out_dir: Path = OUT_DIR,
    quick: bool = QUICK,
    rounds: Optional[int] = ROUNDS,
    model: Optional[list[str]] = MODELS,
    audio: Optional[Path] = AUDIO,
    seed_checkpoint: Optional[Path] = SEED_CHECKPOINT,
) -> None:
    """Every suite in turn (mde.bench.suites.ALL_SUITES) with the same settings (about 15 minutes on 2 cores; the
    search suite needs the search extra, faiss-cpu)."""
    from mde.bench.suites import ALL_SUITES

    _run(list(ALL_SUITES), _settings(out_dir, device, threads, quick, rounds, model, audio, seed_checkpoint))
