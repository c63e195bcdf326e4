"""Trainer efficiency: seconds per epoch and epochs to a score, the defaults against the old loop.

Run from the repository root (after `pip install '.[test]'`), on a corpus made by `mde synth`:
    mde synth --out corpus10 --n 400 --seconds 10
    python benchmarks/bench_train_epochs.py --corpus corpus10 [--mp3-rate 44100] [--first N]
        [--models fcn05,musicnn,shortchunk_res] [--epochs 10] [--target 0.88] [--paths uncached,cached]
        [--out benchmarks/results] [--stem NAME]

--mp3-rate R first transcodes the corpus to MP3 at R Hz (in a temporary folder), so that every use of a
file costs a real decode and resampling, as for users' collections; --first N keeps the first N clips of
the manifest, in the same train / valid / test proportions.

For each model and each data path (uncached: the audio files; cached: a float16 feature cache made
once by `mde prepare`), two runs from the same seed:
- "old loop": one random crop per clip per epoch (`--crops-per-clip 1`) and `--memory-budget 0`, which
  decodes every file at every use and cuts the validation inputs every epoch, as mde train did before
  issue 12 (with a cache, only the crops differ);
- "defaults": `--crops-per-clip auto` and the 2 GiB memory budget (decode once, validation inputs once).
Rows: the median epoch (training plus validation), with the ratio to the defaults' run of the same
model and path; columns: windows per epoch, epochs and seconds until the validation ROC-AUC first
reaches --target, the whole run's seconds, and the best checkpoint's test ROC-AUC.
Writes <stem>.json and <stem>.md (default stem: train_epochs_cpu).
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import soundfile as sf
import soxr
import torch

from mde.bench.report import Column, timing_of, write_results
from mde.trainer.config import TrainConfig
from mde.trainer.data.cache import prepare_cache
from mde.trainer.data.loading import decoded_length
from mde.trainer.data.sources import load_dataset
from mde.trainer.loop import Trainer
from mde.trainer.models import get_model_spec

REPO = Path(__file__).resolve().parents[1]
RUNS = {"old loop": {"crops_per_clip": 1, "memory_budget": 0.0}, "defaults": {}}


def train_once(manifest: Path, model: str, cache: Path | None, out: Path, epochs: int, target: float,
               changes: dict) -> dict:
    """One run of ``epochs``: per-epoch seconds and scores, the time to ``target`` and the test score."""
    config = TrainConfig(model=model, dataset="manifest", data=str(manifest), out=str(out), epochs=epochs,
                         device="cpu", cache=str(cache) if cache else None, seed=0, **changes)
    rows: list[dict] = []
    started = time.perf_counter()
    trainer = Trainer(config)
    results = trainer.run(on_epoch=rows.append)
    total = time.perf_counter() - started
    reached = next((row for row in rows if row["valid_score"] >= target), None)
    return {
        "epoch_seconds": [row["seconds"] for row in rows],
        "valid_scores": [round(row["valid_score"], 4) for row in rows],
        "windows_per_epoch": trainer.windows_per_epoch,
        "epochs_to_target": reached["epoch"] if reached else None,
        "seconds_to_target": round(sum(row["seconds"] for row in rows[: reached["epoch"]]), 1) if reached else None,
        "run_seconds": round(total, 1),
        "test_roc_auc": round(results["test"]["roc_auc"], 4),
    }


def transcoded(manifest: Path, out: Path, rate: int, first: int | None) -> Path:
    """A copy of the corpus of ``manifest`` as MP3 at ``rate`` Hz in ``out`` (the first ``first`` clips of
    each split in proportion, all when None); returns the new manifest."""
    rows = list(csv.DictReader(manifest.open()))
    if first is not None:
        splits = {r["split"] for r in rows}
        quota = {split: round(first / len(rows) * sum(r["split"] == split for r in rows)) for split in splits}
        rows = [r for split in sorted(splits) for r in [r for r in rows if r["split"] == split][: quota[split]]]
    (out / "clips").mkdir(parents=True, exist_ok=True)
    for row in rows:
        audio, source_rate = sf.read(manifest.parent / row["path"], dtype="float32")
        row["path"] = str(Path("clips") / Path(row["path"]).with_suffix(".mp3").name)
        sf.write(out / row["path"], soxr.resample(audio, source_rate, rate), rate, format="MP3")
    with (out / "manifest.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "split", "tags"])
        writer.writeheader()
        writer.writerows(rows)
    return out / "manifest.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, required=True, help="folder with manifest.csv (mde synth)")
    parser.add_argument("--mp3-rate", type=int, help="transcode the corpus to MP3 at this rate (Hz) first")
    parser.add_argument("--first", type=int, help="use only the first N clips (with --mp3-rate)")
    parser.add_argument("--models", default="fcn05,musicnn,shortchunk_res", help="comma-separated registry names")
    parser.add_argument("--epochs", type=int, default=10, help="epochs per run")
    parser.add_argument("--target", type=float, default=0.88, help="validation ROC-AUC to count epochs to")
    parser.add_argument("--paths", default="uncached,cached", help="uncached, cached or both")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results", help="output folder")
    parser.add_argument("--stem", default="train_epochs_cpu", help="output file name, without .json / .md")
    args = parser.parse_args()

    timings, metrics, references = [], {}, {}
    with tempfile.TemporaryDirectory(prefix="mde-bench-train-") as scratch:
        manifest = args.corpus / "manifest.csv"
        if args.mp3_rate:
            manifest = transcoded(manifest, Path(scratch) / "mp3", args.mp3_rate, args.first)
        dataset = load_dataset("manifest", manifest)
        for model in args.models.split(","):
            spec = get_model_spec(model)
            for path in args.paths.split(","):
                cache = None
                if path == "cached":
                    cache = Path(scratch) / f"cache-{spec.sample_rate}"
                    if not cache.exists():
                        longest = max(decoded_length(c.path, spec.sample_rate)
                                      for clips in dataset.splits.values() for c in clips)
                        prepare_cache(dataset, cache, sample_rate=spec.sample_rate, length=longest)
                for run, changes in RUNS.items():
                    name = f"{model}, {path}, {run}"
                    print(f"running {name} ...", flush=True)
                    found = train_once(manifest, model, cache, Path(scratch) / name.replace(", ", "-"),
                                       args.epochs, args.target, changes)
                    timings.append(timing_of(name, found.pop("epoch_seconds")))
                    metrics[name] = found
                    references[name] = f"{model}, {path}, defaults"
        corpus = f"{args.corpus.name} as MP3 at {args.mp3_rate} Hz" if args.mp3_rate else args.corpus.name
    notes = (
        f"{torch.get_num_threads()} torch threads on CPU, corpus {corpus} "
        f"({', '.join(f'{k} {len(v)}' for k, v in dataset.splits.items())} clips), {args.epochs} epochs per run. "
        "Median (ms) is one epoch: training plus validation; 'time / defaults' is that epoch against the "
        f"defaults' epoch of the same model and path. 'to {args.target}' columns: the first epoch whose "
        "validation ROC-AUC reaches it and the seconds of the epochs until then (- : not within the run). "
        "No GPU was lent to the session that produced this file."
    )
    _, md = write_results(
        args.out / args.stem, "Trainer efficiency: epochs to a score, old loop vs defaults",
        timings, None, {"epochs": args.epochs, "target": args.target, "corpus": str(args.corpus)},
        packages=("torch",), notes=notes, references=references, metrics=metrics,
        columns=(Column("windows_per_epoch", "windows / epoch", "d"),
                 Column("epochs_to_target", f"epochs to {args.target}", "d"),
                 Column("seconds_to_target", f"s to {args.target}", ".0f"),
                 Column("run_seconds", "run (s)", ".0f"), Column("test_roc_auc", "test ROC-AUC", ".3f")),
        ratio_heading="time / defaults",
    )
    print(md.read_text())


if __name__ == "__main__":
    main()
