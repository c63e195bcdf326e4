"""Single-thread speed of the C log-mel front end against torch and librosa on the seed recipe.

Run from the repository root (after `pip install '.[test]'`):
    python benchmarks/bench_frontend.py [--rounds 100] [--out benchmarks/results]

One 29 s clip at 16 kHz (the MTAT clip from the shared test data when present, else a synthesized one),
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
from typing import Callable  # noqa: E402

import numpy as np  # noqa: E402

from mde.bench.report import time_interleaved, write_results  # noqa: E402
from mde.export.examples import example_signal  # noqa: E402
from mde.runtime.frontend import MelSpectrogram  # noqa: E402
from mde.runtime.frontend_config import SEED_FCN  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CLIP_SAMPLES = 464000  # 29 s at 16 kHz
SHARED_DATA = Path(os.environ.get("MDE_TEST_DATA") or REPO.parent / "shared" / "data")
MTAT_CLIP = SHARED_DATA / "audio" / "joram-moments_of_clarity-08-solipsism-59-88.mp3"


def load_clip() -> tuple[np.ndarray, str]:
    """29 s of 16 kHz mono float32 audio and where it came from."""
    if MTAT_CLIP.is_file():
        from mde.audio import load_audio

        samples, _ = load_audio(MTAT_CLIP, sr=SEED_FCN.sample_rate)
        return samples[:CLIP_SAMPLES], f"MTAT clip {MTAT_CLIP.name} (first {CLIP_SAMPLES} samples)"
    return example_signal(CLIP_SAMPLES, SEED_FCN.sample_rate), "synthesized music-like signal"


def build_methods(clip: np.ndarray) -> dict[str, Callable[[], np.ndarray]]:
    """The three implementations of the seed recipe, each a no-argument call returning (n_mels, frames) dB."""
    import librosa
    import torch

    from mde.trainer.frontend import TorchMelSpectrogram

    torch.set_num_threads(1)
    cfg = SEED_FCN
    ours = MelSpectrogram.from_config(cfg, threads=1)
    twin = TorchMelSpectrogram(cfg)
    waveform = torch.from_numpy(clip)

    def torch_path() -> np.ndarray:
        with torch.no_grad():
            return twin(waveform).numpy()

    def librosa_path() -> np.ndarray:
        mel = librosa.feature.melspectrogram(
            y=clip, sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length, n_mels=cfg.n_mels,
            fmin=cfg.f_min, fmax=cfg.f_max, htk=True, norm=None, center=True, pad_mode="reflect", power=2.0,
        )
        return librosa.power_to_db(mel, ref=1.0, amin=cfg.amin, top_db=None)

    return {"ours (C kernel)": lambda: ours(clip), "torch.stft": torch_path, "librosa": librosa_path}


def agreement_db(methods: dict[str, Callable[[], np.ndarray]]) -> dict[str, float]:
    """Max |ours - baseline| in dB where the baseline is above -60 dB (a sanity check, not a speed figure)."""
    calls = iter(methods.items())
    _, ours_call = next(calls)
    ours = ours_call().astype(np.float64)
    return {name: float(np.abs(ours - (b := call()))[b > -60].max()) for name, call in calls}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100, help="timed rounds (one call per method each)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed rounds first")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results", help="output folder")
    args = parser.parse_args()

    clip, source = load_clip()
    methods = build_methods(clip)
    timings = time_interleaved(methods, args.rounds, args.warmup)
    agreement = agreement_db(methods)
    notes = (
        f"Input: {source}. One thread each; {args.rounds} interleaved rounds after {args.warmup} warm-up rounds. "
        "Goals: torch.stft / ours >= 2.5x, librosa / ours >= 80x. Agreement with ours (max dB above -60 dB): "
        + ", ".join(f"{k} {v:.4f}" for k, v in agreement.items()) + "."
    )
    _, md = write_results(
        args.out / "frontend_cpu", "C log-mel front end vs torch.stft and librosa (one CPU thread, 29 s clip)",
        timings, "ours (C kernel)", {"recipe": SEED_FCN.to_dict(), "input": source, "agreement_db": agreement},
        packages=("numpy", "torch", "librosa"), notes=notes,
    )
    print(md.read_text())


if __name__ == "__main__":
    main()
