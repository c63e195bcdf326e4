"""Single-thread speed of the C log-mel front end against torch and librosa on the seed recipe.

Run from the repository root (after `pip install '.[test]'`):
    python benchmarks/bench_frontend.py [--rounds 100] [--out benchmarks/results]

The same implementations as `mde bench frontend` (mde.bench.frontend_suite), on one thread and one clip
only: 29 s at 16 kHz (the MTAT clip from the shared test data when present, else a synthesized one),
the SEED_FCN recipe (n_fft 512, hop 256, 128 HTK mels, power, 10 log10(max(x, 1e-10)) dB), computed by
  * ours:    mde.MelSpectrogram(threads=1), the C kernel called from Python;
  * torch:   mde.trainer.frontend.TorchMelSpectrogram (torch.stft + matmul with the same filterbank +
             clamp + 10 log10), torch.set_num_threads(1);
  * librosa: librosa.feature.melspectrogram(htk=True, norm=None) + librosa.power_to_db(ref=1.0).
Calls are interleaved round by round. Writes frontend_cpu.json and frontend_cpu.md.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy / torch are imported

import argparse  # noqa: E402
from pathlib import Path  # noqa: E402

from mde.bench.frontend_suite import OURS, agreement_db, build_methods, load_clip  # noqa: E402
from mde.bench.report import time_interleaved, write_results  # noqa: E402
from mde.bench.suites import BenchSettings  # noqa: E402
from mde.runtime.frontend_config import SEED_FCN  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CLIP_SECONDS = 29.0  # 464000 samples at 16 kHz


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100, help="timed rounds (one call per method each)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed rounds first")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results", help="output folder")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    clip, source = load_clip(BenchSettings(), CLIP_SECONDS, SEED_FCN.sample_rate)
    methods = build_methods(clip, SEED_FCN, threads=1)
    methods.pop("torchaudio", None)  # this script keeps its three-way comparison; mde bench frontend adds it
    timings = time_interleaved(methods, args.rounds, args.warmup)
    agreement = agreement_db(methods)
    notes = (
        f"Input: {source}. One thread each; {args.rounds} interleaved rounds after {args.warmup} warm-up rounds. "
        "Goals: torch.stft / ours >= 2.5x, librosa / ours >= 80x. Agreement with ours (max dB above -60 dB): "
        + ", ".join(f"{k} {v:.4f}" for k, v in agreement.items()) + "."
    )
    _, md = write_results(
        args.out / "frontend_cpu", "C log-mel front end vs torch.stft and librosa (one CPU thread, 29 s clip)",
        timings, OURS, {"recipe": SEED_FCN.to_dict(), "input": source, "agreement_db": agreement},
        packages=("numpy", "torch", "librosa"), notes=notes,
    )
    print(md.read_text())


if __name__ == "__main__":
    main()
