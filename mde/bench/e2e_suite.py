"""``mde bench e2e``: a folder of real MP3 / OGG files to embeddings, as ``mde embed`` does it.

Files: by default a temporary folder with the shared test clips (MP3, copied) and an Ogg Vorbis version
of each (written with soundfile), the set repeated 4 times (quick: once); --audio DIR uses the audio
files in DIR as they are. Each configuration runs in a fresh process (mde.bench.e2e_run), so its peak
memory is its own, and is timed from loading the model to the last output written (decoding,
resampling, front end, inference and writing .npz files included; interpreter start excluded):
  * mde with each model (default: MTT_musicnn): pinned to 1 core (the reference of the ratios, when there
    are more), 1 worker process on N threads (N files at a time) and 2 workers on N / 2 threads each (ONNX
    Runtime; on --device cuda the torch backend, or ORT CUDA when installed), and with --ray on Ray;
  * on cpu, each model's floor: decoding, resampling and the model timed alone on one core;
  * the first seed's pipeline, torch eager (soundfile decode, mono mean, resampled to 16 kHz with soxr,
    non-overlapping 29 s windows in batches of 16 through the torch front end and network; an .npy per
    file), against mde with the same FCN29 checkpoint exported, when a seed checkpoint is found
    (--seed-checkpoint, or the shared test data's; in quick mode only when given).
The musicnn package (TensorFlow) needs its own venv: benchmarks/bench_vs_musicnn.py compares with it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import numpy as np

from mde.bench.report import Column, Timing, timing_of
from mde.bench.suites import BenchSettings, SuiteResult, audio_dir, data_root, finish
from mde.errors import MdeError
from mde.runtime import store

COPIES, QUICK_COPIES = 4, 1
ROUNDS, QUICK_ROUNDS = 3, 1
WORKERS = (1, 2)
SEED_BATCH = 16
SEED_CHECKPOINT_GLOB = "FCN29-*.ckpt"
SEED_LABEL = "seed pipeline FCN29 (torch eager)"


def seed_pipeline(checkpoint: Path, threads: Optional[int] = None,
                  device: str = "cpu") -> Callable[[Path], np.ndarray]:
    """The first seed extractor's path as a function of an audio path, returning (frames, 64) embeddings:
    soundfile decode, mono mean, resampling to the model's rate (soxr), non-overlapping windows in
    batches of 16 through the torch front end and network."""
    import soundfile as sf
    import soxr
    import torch

    from mde.export.importers.checkpoint import extract_state_dict, read_checkpoint
    from mde.export.importers.seed import (
        STATE_PREFIX,
        identify_architecture,
        load_network,
    )
    from mde.trainer.frontend import TorchMelSpectrogram
    from mde.trainer.models import get_model_spec

    if threads is not None:
        torch.set_num_threads(threads)
    contents = read_checkpoint(checkpoint)
    state = extract_state_dict(contents, STATE_PREFIX, origin=str(checkpoint))
    spec = get_model_spec(identify_architecture(contents, state, checkpoint.name))
    network = load_network(spec, state, str(checkpoint)).to(device)
    frontend = TorchMelSpectrogram(spec.logmel_frontend).to(device)
    window, rate = spec.input_length, spec.sample_rate

    def run(path: Path) -> np.ndarray:
        audio, file_rate = sf.read(path, dtype="float32", always_2d=True)
        mono = audio.mean(axis=1)
        if file_rate != rate:
            mono = soxr.resample(mono, file_rate, rate, quality="HQ").astype(np.float32)
        waveform = torch.from_numpy(np.ascontiguousarray(mono))
        n = len(waveform) // window
        frames = waveform[: n * window].reshape(n, window).to(device)
        with torch.no_grad():
            parts = [network(frontend(batch))["embedding"] for batch in torch.split(frames, SEED_BATCH)]
        return torch.cat(parts).cpu().numpy()

    return run


def make_file_set(source: Path, target: Path, copies: int) -> list[Path]:
    """``copies`` x (each MP3 in ``source`` copied, and written again as Ogg Vorbis) in ``target``."""
    import soundfile as sf

    mp3s = sorted(p for p in source.iterdir() if p.suffix.lower() == ".mp3")
    if not mp3s:
        raise MdeError(f"{source}: no MP3 files to build the end-to-end file set from")
    target.mkdir(parents=True, exist_ok=True)
    made = []
    for mp3 in mp3s:
        audio, rate = sf.read(mp3, dtype="float32", always_2d=True)
        ogg = target / f"{mp3.stem}_vorbis.ogg"  # its own stem: outputs are named by stem
        sf.write(ogg, audio, rate, format="OGG", subtype="VORBIS")
        shutil.copyfile(mp3, target / mp3.name)
        made += [target / mp3.name, ogg]
    files = []
    for copy in range(copies):
        for path in made:
            name = target / f"{path.stem}-{copy}{path.suffix}"
            if copy == copies - 1:
                path.rename(name)
            else:
                shutil.copyfile(path, name)
            files.append(name)
    return sorted(files)


def audio_seconds(files: list[Path]) -> float:
    """Total duration of ``files`` in seconds (from their headers)."""
    import soundfile as sf

    return float(sum(sf.info(str(path)).duration for path in files))


def seed_checkpoint(settings: BenchSettings) -> Optional[Path]:
    """The FCN29 checkpoint to compare with: --seed-checkpoint, else (not in quick mode) the shared data's."""
    if settings.seed_checkpoint is not None or settings.quick:
        return settings.seed_checkpoint
    root = data_root()
    found = sorted((root / "checkpoints").glob(SEED_CHECKPOINT_GLOB)) if root else []
    return found[0] if found else None


def exported_checkpoint(checkpoint: Path, settings: BenchSettings) -> Path:
    """The seed checkpoint as an mde model file (cached in <MDE_HOME>/bench-cache by content hash)."""
    from mde.export.export import export_model

    digest = hashlib.sha1(checkpoint.read_bytes()).hexdigest()[:12]
    target = store.mde_home() / "bench-cache" / f"{checkpoint.stem.split('-')[0].lower()}-{digest}.onnx"
    if not target.is_file():
        settings.announce(f"e2e: exporting {checkpoint.name} to {target}")
        target.parent.mkdir(parents=True, exist_ok=True)
        export_model(checkpoint, target)
    return target


def model_files(settings: BenchSettings) -> list[tuple[str, Path]]:
    """(label, model file) of the models to run: --models, or the default model."""
    from mde.runtime.defaults import default_model_path
    from mde.runtime.package import read_model_info

    paths = [store.resolve(name) for name in settings.models] or [default_model_path(announce=settings.announce)]
    return [(read_model_info(path).name, path) for path in paths]


def child_env() -> dict[str, str]:
    """The environment of a run process: the mde package this process uses first on PYTHONPATH."""
    import mde

    package_parent = str(Path(mde.__file__).resolve().parents[1])
    paths = [package_parent, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def run_job(job: dict[str, Any], cwd: Path) -> dict[str, Any]:
    """Run one job in a fresh process (working folder ``cwd``) and return its JSON line."""
    proc = subprocess.run(
        [sys.executable, "-m", "mde.bench.e2e_run", json.dumps(job)], cwd=cwd, env=child_env(),
        capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise MdeError(f"end-to-end run {job['kind']} {Path(job['model']).name} failed: {last}")
    return json.loads(lines[-1])


def jobs_for(settings: BenchSettings, files: list[Path], work: Path,
             skipped: dict[str, str]) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Label -> job of every configuration, and label -> the label its ratio is taken against."""
    from mde.runtime.backends.ort import CUDA_PROVIDER

    backend = "ort"
    if settings.device == "cuda":
        import onnxruntime as ort

        backend = "ort" if CUDA_PROVIDER in ort.get_available_providers() else "torch"
    n = settings.n_threads
    base = {"files": [str(f) for f in files], "device": settings.device, "backend": backend}
    jobs: dict[str, dict[str, Any]] = {}
    references: dict[str, str] = {}
    models = model_files(settings)
    checkpoint = seed_checkpoint(settings)
    if checkpoint is not None:
        try:
            models.append(("FCN29 (seed checkpoint)", exported_checkpoint(checkpoint, settings)))
        except (ImportError, MdeError) as exc:
            skipped[SEED_LABEL] = f"the checkpoint could not be exported: {str(exc).splitlines()[0]}"
            checkpoint = None
    else:
        skipped[SEED_LABEL] = "no seed checkpoint (--seed-checkpoint)"
    for name, path in models:
        first = ""  # the first row's label (1 core when there are more): the reference of this model's rows
        if n > 1:
            first = f"mde {name}, 1 core (1 worker x 1 thread)"
            jobs[first] = {**base, "kind": "mde", "model": str(path), "workers": 1, "threads": 1, "cpus": 1,
                           "out": str(work / f"out-{len(jobs)}")}
            references[first] = first
        multi = ""  # 1 worker x n threads: the reference of the seed pipeline's row (the same threads)
        widest = ""  # the most workers' label: the reference of the Ray row (the same layout, n x 1 thread)
        for workers in WORKERS:
            label = f"mde {name}, {workers} worker{'s' if workers > 1 else ''} x {max(1, n // workers)} threads"
            first, multi, widest = first or label, multi or label, label
            jobs[label] = {**base, "kind": "mde", "model": str(path), "workers": workers,
                           "threads": max(1, n // workers), "out": str(work / f"out-{len(jobs)}")}
            references[label] = first
        if settings.ray:
            label = f"mde {name} on Ray (local instance), {n} actors x 1 thread"
            jobs[label] = {**base, "kind": "ray", "model": str(path), "workers": n, "threads": 1,
                           "out": str(work / f"out-{len(jobs)}")}
            references[label] = widest
        if checkpoint is not None and path == models[-1][1]:
            jobs[SEED_LABEL] = {**base, "kind": "seed", "model": str(checkpoint), "workers": 1, "threads": n,
                                "out": str(work / f"out-{len(jobs)}")}
            references[SEED_LABEL] = multi
    return jobs, references


def floor_of(model: str, files: list[Path], work: Path, rounds: int, settings: BenchSettings) -> dict[str, float]:
    """The floor of ``model`` over ``files`` on one core: decode, resample and model seconds, each the median
    of ``rounds`` fresh processes (see :func:`mde.bench.e2e_run.run_floor`)."""
    settings.announce(f"e2e: the floor of {Path(model).name} (decode, resample, model alone, 1 core)")
    job = {"kind": "floor", "model": model, "files": [str(f) for f in files], "cpus": 1, "device": "cpu",
           "backend": "ort", "workers": 1, "threads": 1, "out": str(work / "floor")}
    replies = [run_job(job, work) for _ in range(rounds)]
    return {key: statistics.median(reply[key] for reply in replies) for key in ("decode_s", "resample_s", "model_s")}


def _against_floor(timing: Timing, job: dict[str, Any], floors: dict[str, dict[str, float]],
                   n_threads: int) -> dict[str, float]:
    """A row's floor (its model's 1-core floor over its CPUs: perfect scaling) and its time over that floor.

    Seconds keep microseconds: a tiny model's floor is a few hundredths of a second, so rounding it to
    milliseconds would move ``over_floor`` by percents."""
    if job["kind"] not in ("mde", "ray") or job["device"] != "cpu":
        return {}
    floor = floors[job["model"]]
    seconds = sum(floor.values()) / job.get("cpus", n_threads)
    return {"floor_s": round(seconds, 6), "over_floor": round(timing.median_s / seconds, 3),
            **{f"floor_{key}": round(value, 6) for key, value in floor.items()}}


def run(settings: BenchSettings) -> SuiteResult:
    """Time every configuration over the file set; write bench_e2e_<device>.*"""
    rounds = settings.rounds or (QUICK_ROUNDS if settings.quick else ROUNDS)
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="mde-bench-e2e-") as tmp:
        work = Path(tmp)
        if settings.audio is not None:
            from mde.audio import find_audio_files

            files, origin = find_audio_files([settings.audio]), f"the audio files in {settings.audio}"
        else:
            source = audio_dir(settings)
            if source is None:
                raise MdeError("no audio for the end-to-end benchmark: pass --audio DIR (or set MDE_TEST_DATA)")
            copies = QUICK_COPIES if settings.quick else COPIES
            files = make_file_set(source, work / "audio", copies)
            origin = f"the MP3s of {source} and an Ogg Vorbis copy of each, {copies} time(s) over"
        if not files:
            raise MdeError(f"no audio files in {settings.audio}")
        total_s = audio_seconds(files)
        jobs, references = jobs_for(settings, files, work, skipped)
        samples: dict[str, list[float]] = {label: [] for label in jobs}
        memory: dict[str, dict[str, float]] = {label: {} for label in jobs}
        for round_index in range(rounds):
            for label, job in jobs.items():
                settings.announce(f"e2e: round {round_index + 1}/{rounds}: {label}")
                reply = run_job(job, work)
                if reply["failed"]:
                    raise MdeError(f"{label}: {reply['failed']} of {reply['files']} files failed")
                samples[label].append(reply["seconds"])
                for key in ("peak_rss_mb", "worker_peak_rss_mb", "ray_start_s"):
                    if key in reply:
                        memory[label][key] = max(memory[label].get(key, 0.0), reply[key])
        floors = {path: floor_of(path, files, work, rounds, settings) for path in
                  sorted({job["model"] for job in jobs.values() if job["kind"] in ("mde", "ray")})
                  if settings.device == "cpu"}
    timings: list[Timing] = [timing_of(label, seconds) for label, seconds in samples.items()]
    by_name = {t.name: t for t in timings}
    metrics = {
        t.name: {
            "files_per_s": round(len(files) / t.median_s, 2), "x_real_time": round(total_s / t.median_s, 1),
            "peak_rss_mb": memory[t.name]["peak_rss_mb"],
            "worker_peak_rss_mb": memory[t.name]["worker_peak_rss_mb"]
            if jobs[t.name]["workers"] > 1 or jobs[t.name]["kind"] == "ray" else None,
            "workers": jobs[t.name]["workers"], "threads_per_process": jobs[t.name]["threads"],
            "cpus": jobs[t.name].get("cpus", settings.n_threads),
            **_against_floor(t, jobs[t.name], floors, settings.n_threads),
            **({"ray_start_s": memory[t.name]["ray_start_s"],
                "overhead_ms_per_file": round(1000 * (t.median_s - by_name[references[t.name]].median_s)
                                              / len(files), 1)} if jobs[t.name]["kind"] == "ray" else {}),
        }
        for t in timings
    }
    notes = (
        f"Files: {len(files)} ({origin}), {total_s:.1f} s of audio. Each run is a fresh process, timed from loading "
        "the model to the last output written (decode, resample, front end, inference, .npz / .npy writing, worker "
        f"start); {rounds} round(s), configurations interleaved. Ratio = median / the first mde row of the same "
        "model's median: its 1-core row (pinned to one CPU) where there are more cores, so that the others' "
        "ratios are their scaling (a Ray row: / the local row of the same layout, most workers x 1 thread; "
        "the seed pipeline: / mde's 1 worker x N threads). Peak RSS: "
        "VmHWM of the run process, and ru_maxrss of its largest worker process "
        "(counted from the fork, so at least the main process's size then; 2 workers: the total is at most the "
        "main process plus twice that). A Ray row (--ray) runs embed_files_on_ray on a local instance "
        "started before the timer (its start-up is ray_start_s; overhead_ms_per_file = (its median - its "
        "reference row's) / files); its worker peak RSS is the largest actor's (VmHWM). The musicnn package "
        "(TensorFlow) needs its own venv: see benchmarks/bench_vs_musicnn.py. The floor (cpu): decoding "
        "(soundfile), mixdown + resampling (soxr) and the model (ONNX Runtime, 1 thread, on the prepared "
        "windows), each timed alone in a process pinned to one core and summed over the files (median of the "
        "rounds; floor_decode_s, floor_resample_s, floor_model_s in the JSON), divided by the row's cores "
        "(perfect scaling); time / floor is what the rest costs (front end, framing, writing, scheduling)."
    )
    return finish(
        settings, "e2e", f"End to end: audio files to embeddings ({settings.device})", timings,
        references=references, metrics=metrics, groups=[references[t.name] for t in timings], skipped=skipped,
        columns=[Column("files_per_s", "files/s", ".2f"), Column("x_real_time", "x real time", ".0f"),
                 Column("floor_s", "floor (s)", ".2f"), Column("over_floor", "time / floor", ".2f"),
                 Column("peak_rss_mb", "peak RSS (MB)", ".0f"),
                 Column("worker_peak_rss_mb", "worker peak RSS (MB)", ".0f")],
        ratio_heading="time / reference mde row (same model)",
        extra={"files": [f.name for f in files], "audio_seconds": round(total_s, 2), "rounds": rounds},
        packages=("numpy", "onnxruntime", "soundfile", "soxr", "torch"), notes=notes,
    )
