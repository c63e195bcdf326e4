"""Training throughput on this machine's CPU: clips per second through a full training step.

Run from the repository root (after `pip install '.[test]'`):
    python benchmarks/bench_train.py [--models fcn05,fcn,shortchunk_res,musicnn,crnn] [--batch-size 16]
        [--threads 2] [--steps 5] [--out benchmarks/results]

A step is what mde.trainer.loop does per batch: random waveform crops of the model's input length ->
the torch twin of the C front end -> network -> loss (binary cross-entropy on logits) -> backward ->
AdamW step. Inputs are synthesized music-like audio, so the figure is independent of decoding (the
feature cache takes decoding out of training). Writes train_cpu.json and train_cpu.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from mde.bench.report import time_interleaved, write_results
from mde.export.examples import example_windows
from mde.trainer.frontend import TorchMelSpectrogram
from mde.trainer.models import get_model_spec

REPO = Path(__file__).resolve().parents[1]


def training_step(name: str, batch_size: int):
    """A no-argument call running one training step of architecture ``name`` on a fixed batch."""
    spec = get_model_spec(name)
    net = spec.factory().train()
    frontend = TorchMelSpectrogram(spec.frontend)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    waveforms = torch.from_numpy(example_windows(spec.input_length, spec.sample_rate, batch_size))
    labels = (torch.rand(batch_size, spec.n_tags) < 0.1).float()

    def step() -> None:
        with torch.no_grad():
            logmel = frontend(waveforms)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(logmel)["logits"], labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="fcn05,fcn,shortchunk_res,musicnn,crnn",
                        help="comma-separated registry names")
    parser.add_argument("--batch-size", type=int, default=16, help="clips per step")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per model")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results", help="output folder")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    names = args.models.split(",")
    steps = {f"{name} step (batch {args.batch_size})": training_step(name, args.batch_size) for name in names}
    timings = time_interleaved(steps, args.steps, warmup=1)
    throughput = {t.name.split()[0]: round(args.batch_size / t.median_s, 2) for t in timings}
    seconds = {name: round(get_model_spec(name).input_seconds, 3) for name in names}
    notes = (
        f"{args.threads} torch threads on CPU. Throughput (training clips per second, median): "
        + ", ".join(f"{name} {rate} clips/s ({seconds[name]} s windows)" for name, rate in throughput.items())
        + ". No GPU was lent to the session that produced this file."
    )
    _, md = write_results(
        args.out / "train_cpu", "Training throughput on CPU (front end + forward + backward + AdamW)",
        timings, None, {"clips_per_second": throughput, "threads": args.threads, "batch_size": args.batch_size},
        packages=("torch",), notes=notes,
    )
    print(md.read_text())


if __name__ == "__main__":
    main()
