"""``mde bench frontend``: the C log-mel kernel against other implementations of the same recipe.

The recipe is the first seed's (SEED_FCN: 16 kHz, n_fft 512, hop 256, 128 HTK mels, power, 10 log10(max(x,
1e-10)) dB). Implementations, each a no-argument call on one clip returning (n_mels, frames) dB:
  * ours: mde.MelSpectrogram(threads=t), the C kernel called from Python;
  * torch.stft: mde.trainer.frontend.TorchMelSpectrogram (torch.stft + matmul with the same filterbank +
    clamp + 10 log10) with torch.set_num_threads(t); on --device cuda also on the GPU (copy in and out
    and a synchronize included);
  * librosa: melspectrogram(htk=True, norm=None) + power_to_db(ref=1.0), BLAS limited to t threads
    (its FFT is single-threaded);
  * torchaudio: transforms.MelSpectrogram + AmplitudeToDB, when installed.
Clips of 0.5, 3.7, 29 and 300 s (quick: 0.5 and 3.7 s) cut from (or tiled from) the MTAT clip of the
shared test data, else a synthesized music-like signal; 1 and N threads. Calls are interleaved round by
round within a (clip, threads) group; each row's ratio is against ours in the same group.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Optional

import numpy as np

from mde.bench.report import Column, Timing, time_interleaved
from mde.bench.suites import BenchSettings, SuiteResult, finish, reference_clip
from mde.runtime.frontend import MelSpectrogram
from mde.runtime.frontend_config import SEED_FCN, FrontendConfig

OURS = "ours (C kernel)"
CLIP_SECONDS = (0.5, 3.7, 29.0, 300.0)
QUICK_CLIP_SECONDS = (0.5, 3.7)
ROUNDS, QUICK_ROUNDS = 20, 3
Method = Callable[[], np.ndarray]


def load_clip(settings: BenchSettings, seconds: float, rate: int) -> tuple[np.ndarray, str]:
    """``seconds`` of mono float32 audio at ``rate`` Hz (the reference clip, tiled when too short) and
    where it came from."""
    from mde.export.examples import example_signal

    n = round(seconds * rate)
    clip = reference_clip(settings)
    if clip is None:
        return example_signal(n, rate), "synthesized music-like signal"
    from mde.audio import load_audio

    samples, _ = load_audio(clip, sr=rate)
    tiled = "" if n <= len(samples) else f", tiled {n / len(samples):.1f} times"
    return np.ascontiguousarray(np.resize(samples, n)), f"{clip.name} ({n} samples{tiled})"


def ours_method(clip: np.ndarray, cfg: FrontendConfig, threads: int) -> Method:
    """The C kernel on ``threads`` threads."""
    frontend = MelSpectrogram.from_config(cfg, threads=threads)
    return lambda: frontend(clip)


def torch_method(clip: np.ndarray, cfg: FrontendConfig, device: str = "cpu") -> Method:
    """torch.stft + filterbank matmul + dB, the trainer's twin of the C kernel (threads: set by the caller)."""
    import torch

    from mde.trainer.frontend import TorchMelSpectrogram

    twin = TorchMelSpectrogram(cfg).to(device)
    waveform = torch.from_numpy(clip)

    def run() -> np.ndarray:
        with torch.no_grad():
            result = twin(waveform.to(device)).cpu().numpy()
        if device == "cuda":
            torch.cuda.synchronize()
        return result

    return run


def librosa_method(clip: np.ndarray, cfg: FrontendConfig) -> Method:
    """librosa's melspectrogram + power_to_db on the same recipe."""
    import librosa

    def run() -> np.ndarray:
        mel = librosa.feature.melspectrogram(
            y=clip, sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length, n_mels=cfg.n_mels,
            fmin=cfg.f_min, fmax=cfg.f_max, htk=True, norm=None, center=True, pad_mode="reflect", power=2.0,
        )
        return librosa.power_to_db(mel, ref=1.0, amin=cfg.amin, top_db=None)

    return run


def torchaudio_method(clip: np.ndarray, cfg: FrontendConfig) -> Method:
    """torchaudio's MelSpectrogram + AmplitudeToDB on the same recipe."""
    import torch
    import torchaudio

    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length, n_mels=cfg.n_mels,
        f_min=cfg.f_min, f_max=cfg.f_max, mel_scale="htk", norm=None, center=True, pad_mode="reflect", power=2.0,
    )
    to_db = torchaudio.transforms.AmplitudeToDB(stype="power", top_db=None)
    waveform = torch.from_numpy(clip)

    def run() -> np.ndarray:
        with torch.no_grad():
            return to_db(mel(waveform)).numpy()

    return run


BASELINES: dict[str, Callable[[np.ndarray, FrontendConfig], Method]] = {
    "torch.stft": torch_method, "librosa": librosa_method, "torchaudio": torchaudio_method,
}


def build_methods(clip: np.ndarray, cfg: FrontendConfig, threads: int,
                  skipped: Optional[dict[str, str]] = None) -> dict[str, Method]:
    """Ours and every baseline that can be built here, for one clip at ``threads`` threads; baselines
    that cannot (a package missing) go into ``skipped`` with the reason."""
    methods = {OURS: ours_method(clip, cfg, threads)}
    for name, build in BASELINES.items():
        try:
            methods[name] = build(clip, cfg)
        except ImportError as exc:
            if skipped is not None:
                skipped[name] = f"not installed: {exc.name or exc}"
    return methods


@contextlib.contextmanager
def limited_threads(threads: int) -> Iterator[None]:
    """torch intra-op threads and BLAS threads (threadpoolctl, when installed) set to ``threads``."""
    restore: list[Callable[[], object]] = []
    try:
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        restore.append(lambda: torch.set_num_threads(before))
    except ImportError:
        pass
    try:
        from threadpoolctl import threadpool_limits

        limits = threadpool_limits(threads)
        restore.append(limits.restore_original_limits)
    except ImportError:
        pass
    try:
        yield
    finally:
        for undo in restore:
            undo()


def agreement_db(methods: dict[str, Method]) -> dict[str, float]:
    """Max |ours - baseline| in dB where the baseline is above -60 dB (a sanity check, not a speed figure)."""
    ours = methods[OURS]().astype(np.float64)
    found = {}
    for name, call in methods.items():
        if name != OURS:
            other = np.asarray(call(), dtype=np.float64)
            found[name] = float(np.abs(ours - other)[other > -60].max())
    return found


def run(settings: BenchSettings) -> SuiteResult:
    """Measure every (clip length, threads) group and write bench_frontend_<device>.*"""
    cfg = SEED_FCN
    lengths = QUICK_CLIP_SECONDS if settings.quick else CLIP_SECONDS
    thread_counts = sorted({1, settings.n_threads})
    rounds = settings.rounds or (QUICK_ROUNDS if settings.quick else ROUNDS)
    warmup = 1 if settings.quick else 2
    timings: list[Timing] = []
    references, metrics, groups = {}, {}, []
    skipped: dict[str, str] = {}
    agreement: dict[str, float] = {}
    sources = {}
    for seconds in lengths:
        clip, sources[f"{seconds:g} s"] = load_clip(settings, seconds, cfg.sample_rate)
        for threads in thread_counts:
            group = f"{seconds:g} s, {threads} thread{'s' if threads > 1 else ''}"
            settings.announce(f"frontend: {group}")
            methods = build_methods(clip, cfg, threads, skipped)
            if settings.device == "cuda" and "torch.stft" in methods:
                methods["torch.stft (CUDA)"] = torch_method(clip, cfg, device="cuda")
            with limited_threads(threads):
                if not agreement and seconds >= 3:
                    agreement = agreement_db(methods)
                measured = time_interleaved(methods, rounds, warmup)
            for timing in measured:
                name = f"{group}: {timing.name}"
                timings.append(Timing(name, timing.median_s, timing.min_s, timing.max_s, timing.runs))
                references[name] = f"{group}: {OURS}"
                metrics[name] = {"clip_s": seconds, "threads": threads, "method": timing.name,
                                 "x_real_time": round(seconds / timing.median_s, 1)}
                groups.append(group)
    notes = (
        "Recipe: SEED_FCN (16 kHz, n_fft 512, hop 256, 128 HTK mels, power dB). Inputs: "
        + "; ".join(f"{k}: {v}" for k, v in sources.items())
        + f". {rounds} interleaved rounds per group after {warmup} warm-up rounds; ratio = median / ours' median "
        "in the same group (clip length and threads). x real time = clip seconds / median seconds. "
        "Agreement with ours (max dB above -60 dB): " + (", ".join(f"{k} {v:.4f}" for k, v in agreement.items()) or "-")
        + "."
    )
    return finish(
        settings, "frontend", f"Log-mel front end: C kernel vs torch.stft, librosa, torchaudio ({settings.device})",
        timings, references=references, metrics=metrics, groups=groups, skipped=skipped,
        columns=[Column("x_real_time", "x real time", ".0f")], ratio_heading="time / ours (same group)",
        extra={"recipe": cfg.to_dict(), "inputs": sources, "agreement_db": agreement, "rounds": rounds},
        packages=("numpy", "torch", "librosa", "torchaudio", "threadpoolctl"), notes=notes,
    )
