"""JETATAG's table on a synthesized corpus: each encoder trained withJE and noJE, then `mde eval` over the runs.

Run from the repository root (after `pip install '.[test]'`):
    python benchmarks/bench_jetatag_table.py --work DIR [--n 400] [--seconds 5] [--engine fluidsynth]
        [--encoders sc,hc,sc_se,sc_res,sc_rese,ms] [--stage1-epochs 3] [--stage2-epochs 2] [--epochs 3]
        [--lr 1e-3] [--eval-crops 1] [--seed 0] [--out benchmarks/results/jetatag] [--stem synth_table_cpu]

DIR/corpus is made once by `mde synth` (the tagged corpus: instruments, drums, tempo, loudness); each run
goes in DIR/runs/<encoder>-<variant>: withJE runs --stage1-epochs of the joint stage, then --stage2-epochs
of the classifier on the frozen encoder; noJE runs --epochs of encoder and classifier together. Everything
else is the JETATAG recipe. A finished run leaves its record (config.json, metrics.json and its wall time in
seconds.json) in OUT/runs/<encoder>-<variant>, small enough to commit, and a run with a record is not trained
again, so the table can be completed over several sessions (on the same kind of machine: the wall times
are compared). The script can be stopped and started again: an unfinished run is resumed
(`mde train --resume`). When every run has a record it writes <stem>.md (the `mde eval --markdown` table over
the records, then each run's epochs, best epoch and wall time) and <stem>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENCODERS = {"sc": ["--encoder", "sc"], "sc_se": ["--encoder", "sc", "--block", "se"],
            "sc_res": ["--encoder", "sc", "--block", "res"], "sc_rese": ["--encoder", "sc", "--block", "rese"],
            "hc": ["--encoder", "hc"], "ms": ["--encoder", "ms"]}


def mde(*args: str, log: Path = Path(os.devnull)) -> subprocess.CompletedProcess:
    """``python -m mde ARGS``, its stderr appended to ``log``; CalledProcessError on failure."""
    with open(log, "a") as stderr:
        return subprocess.run([sys.executable, "-m", "mde", *args], check=True, stdout=subprocess.PIPE,
                              stderr=stderr, text=True)


def train(run: Path, encoder: str, variant: str, args: argparse.Namespace, manifest: Path) -> None:
    """Train (or resume) one run; a finished run is kept."""
    if (run / "metrics.json").is_file():
        return
    epochs = (["--je", "--stage1-epochs", str(args.stage1_epochs), "--stage2-epochs", str(args.stage2_epochs)]
              if variant == "withJE" else ["--no-je", "--epochs", str(args.epochs)])
    resume = ["--resume"] if (run / "checkpoints" / "last.pt").is_file() else []
    mde("train", "--model", "jetatag", *ENCODERS[encoder], *epochs, "--dataset", "manifest", "--data",
        str(manifest), "--out", str(run), "--lr", str(args.lr), "--eval-crops", str(args.eval_crops),
        "--device", "cpu", "--seed", str(args.seed), *resume, log=run.parent / f"{run.name}.log")


def keep_record(run: Path, record: Path, wall_s: float) -> None:
    """Copy what `mde eval` reads of a finished run (config.json, metrics.json) and its wall time to ``record``."""
    record.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "metrics.json"):
        shutil.copy2(run / name, record / name)
    (record / "seconds.json").write_text(json.dumps({"wall_s": round(wall_s, 1)}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--engine", default="fluidsynth")
    parser.add_argument("--encoders", default="sc,hc,sc_se,sc_res,sc_rese,ms")
    parser.add_argument("--stage1-epochs", type=int, default=3)
    parser.add_argument("--stage2-epochs", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-crops", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "jetatag")
    parser.add_argument("--stem", default="synth_table_cpu")
    args = parser.parse_args()

    manifest = args.work / "corpus" / "manifest.csv"
    args.work.mkdir(parents=True, exist_ok=True)
    if not manifest.is_file():
        mde("synth", "--out", str(args.work / "corpus"), "--n", str(args.n), "--seconds", str(args.seconds),
            "--engine", args.engine, "--seed", str(args.seed), "--workers", str(os.cpu_count() or 1),
            log=args.work / "synth.log")
    (args.work / "runs").mkdir(parents=True, exist_ok=True)
    times_path = args.work / "runs" / "seconds.json"
    seconds = json.loads(times_path.read_text()) if times_path.is_file() else {}
    records = []
    for encoder in args.encoders.split(","):
        for variant in ("noJE", "withJE"):
            name = f"{encoder}-{variant}"
            record = args.out / "runs" / name
            records.append(record)
            if (record / "metrics.json").is_file():
                continue
            run = args.work / "runs" / name
            started = time.perf_counter()
            try:
                train(run, encoder, variant, args, manifest)
            finally:  # an interrupted run's time counts too: it resumes from its last epoch
                seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - started
                times_path.write_text(json.dumps(seconds, indent=1))
            keep_record(run, record, seconds[name])
            print(f"{name}: {seconds[name] / 60:.1f} min", flush=True)

    table = mde("eval", *map(str, records), "--markdown", "--out", str(args.work / "table.json")).stdout.strip()
    lines = [f"# JETATAG on a synthesized corpus ({platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} cores, torch CPU)", "",
             f"Corpus: `mde synth --n {args.n} --seconds {args.seconds:g} --engine {args.engine} --seed {args.seed}` "
             "(tags: instruments, drums, tempo, loudness). Test split, macro over tags.", "",
             f"withJE: {args.stage1_epochs} joint + {args.stage2_epochs} classifier epochs; noJE: {args.epochs} "
             f"epochs; Adam at {args.lr:g} (short runs: the recipe's 1e-4 is for 200 epochs), batch 16, one crop "
             f"per clip, {args.eval_crops} evaluation crops per clip; otherwise the JETATAG recipe.", "",
             table, "", "| run | best epoch | wall time (min) |", "|---|---:|---:|"]
    for record in records:
        best = json.loads((record / "metrics.json").read_text())["best_epoch"]
        wall = json.loads((record / "seconds.json").read_text())["wall_s"]
        lines.append(f"| {record.name} | {best} | {wall / 60:.1f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.stem}.md").write_text("\n".join(lines) + "\n")
    (args.out / f"{args.stem}.json").write_text((args.work / "table.json").read_text())
    print("\n".join(lines))


if __name__ == "__main__":
    main()
