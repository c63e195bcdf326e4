"""The torch twin of the C front end computes the same log-mel, single and batched, and is differentiable.

Material: the MTAT clip from the shared test data (``../shared/data`` beside the checkout, or
$MDE_TEST_DATA) when it is there, else synthesized music-like audio.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import MTAT_CLIP, SHARED_DATA

from mde.runtime.frontend import MelSpectrogram
from mde.runtime.frontend_config import MULTISCALE, MUSICNN, SEED_FCN, FrontendConfig

torch = pytest.importorskip("torch")

from mde.trainer.frontend import TorchMelSpectrogram  # noqa: E402

DB_TOLERANCE = 0.01  # dB, where the C output is within WINDOW_DB of its peak
WINDOW_DB = 60.0
LOG10P_NOISE = 1e-5  # log10 units: float32 noise away from float16 rounding flips
MAX_FLIP_FRACTION = 1e-3

CONFIGS = {
    # name: (config, dB window in which DB_TOLERANCE holds; None for log10p)
    "seed_fcn": (SEED_FCN, WINDOW_DB),
    "musicnn": (MUSICNN, None),
    "top_db_constant_pad": (SEED_FCN.with_(top_db=80.0, pad_mode="constant"), WINDOW_DB),
    "slaney_uncentred_1024": (
        SEED_FCN.with_(n_fft=1024, n_mels=64, mel_scale="slaney", norm="slaney", center=False), WINDOW_DB),
    # 10 log10 of a magnitude spans half the range of a power: 30 "dB" here is 60 dB of power, beyond
    # which float32 FFT rounding (the twin's torch.stft) dominates.
    "magnitude": (SEED_FCN.with_(power=1.0), WINDOW_DB / 2),
    "natural_log": (SEED_FCN.with_(log="ln", amin=1e-20), WINDOW_DB),
    "multiscale": (MULTISCALE, WINDOW_DB),  # (its 11,025 Hz rate only names the mel bands' frequencies)
}
DB_PER_UNIT = {"db": 1.0, "ln": 10.0 / np.log(10.0)}
"""dB of power per unit of each log mode's output (one neper of 'ln' is 4.34 dB)."""


def synthesized_clip(seconds: float = 12.0, sample_rate: int = 16000) -> np.ndarray:
    """Music-like float32 audio: a few harmonic notes with decays, a chirp and a little noise."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    signal = 0.1 * np.sin(2 * np.pi * (100.0 * t + 150.0 * t ** 2))
    for start, pitch in zip(np.arange(0.0, seconds, 0.5), rng.uniform(110.0, 880.0, int(seconds * 2))):
        envelope = np.where(t >= start, np.exp(-(t - start) * 4.0), 0.0)
        for harmonic in range(1, 6):
            signal += envelope * 0.2 / harmonic * np.sin(2 * np.pi * pitch * harmonic * t)
    signal += 0.01 * rng.standard_normal(len(t))
    return (0.5 * signal / np.abs(signal).max()).astype(np.float32)


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    """16 kHz mono float32: the shared MTAT clip (29.1 s) if present, else 12 s of synthesized audio."""
    path = SHARED_DATA / MTAT_CLIP
    if not path.is_file():
        return synthesized_clip()
    import soundfile as sf

    samples, rate = sf.read(path, dtype="float32")
    assert rate == 16000 and samples.ndim == 1
    return samples


def assert_twin_matches(config: FrontendConfig, window_db: float | None, kernel_out: np.ndarray,
                        twin_out: np.ndarray) -> None:
    """The twin's output equals the C kernel's within float32 noise (per signal of a batch)."""
    assert twin_out.shape == kernel_out.shape and twin_out.dtype == np.float32
    kernel = kernel_out.astype(np.float64).reshape(-1, *kernel_out.shape[-2:])
    twin = twin_out.astype(np.float64).reshape(kernel.shape)
    for reference, ours in zip(kernel, twin):
        if config.log in DB_PER_UNIT:
            reference_db, ours_db = reference * DB_PER_UNIT[config.log], ours * DB_PER_UNIT[config.log]
            loud = reference_db > reference_db.max() - window_db
            assert np.abs(ours_db - reference_db)[loud].max() <= DB_TOLERANCE
        else:
            assert_log10p_matches(config, reference, ours)


def assert_log10p_matches(config: FrontendConfig, reference: np.ndarray, ours: np.ndarray) -> None:
    """Equal within float32 noise, except where the float16 rounding of a mel value went the other way:
    there the difference is one float16 step, and such flips are rarer than MAX_FLIP_FRACTION."""
    delta = np.abs(ours - reference)
    flips = delta > LOG10P_NOISE
    scale = config.log_scale
    rounded = ((10.0 ** reference[flips] - 1.0) / scale).astype(np.float16)
    below = np.nextafter(rounded, np.float16(0)).astype(np.float64)
    above = np.nextafter(rounded, np.float16(np.inf)).astype(np.float64)
    level = np.log10(1.0 + scale * rounded.astype(np.float64))
    step = np.maximum(np.log10(1.0 + scale * above) - level, level - np.log10(1.0 + scale * below))
    assert np.all(delta[flips] <= step * 1.01 + LOG10P_NOISE), "a difference larger than one float16 step"
    assert flips.mean() < MAX_FLIP_FRACTION


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_twin_equals_the_c_kernel_on_one_signal(clip, name):
    config, window_db = CONFIGS[name]
    kernel_out = MelSpectrogram.from_config(config)(clip)
    with torch.no_grad():
        twin_out = TorchMelSpectrogram(config)(torch.from_numpy(clip)).numpy()
    assert twin_out.shape == (config.n_mels, config.n_frames(len(clip)))
    assert_twin_matches(config, window_db, kernel_out, twin_out)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_twin_equals_the_c_kernel_on_a_batch(clip, name):
    config, window_db = CONFIGS[name]
    window = 59049
    starts = (0, len(clip) // 3, len(clip) - window)
    batch = np.stack([clip[s:s + window] for s in starts])
    batch[1] *= 0.01  # a quiet signal: top_db and the dB window act per signal
    kernel_out = MelSpectrogram.from_config(config)(batch)
    twin = TorchMelSpectrogram(config)
    with torch.no_grad():
        twin_out = twin(torch.from_numpy(batch)).numpy()
        singles = np.stack([twin(torch.from_numpy(signal)).numpy() for signal in batch])
    assert twin_out.shape == (len(starts), config.n_mels, config.n_frames(window))
    assert_twin_matches(config, window_db, kernel_out, twin_out)
    np.testing.assert_allclose(twin_out, singles, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("config", [SEED_FCN, MUSICNN], ids=["seed_fcn", "musicnn"])
def test_gradients_flow_through_the_twin(clip, config):
    waveform = torch.from_numpy(clip[None, :32000].copy()).requires_grad_(True)
    twin = TorchMelSpectrogram(config)
    twin(waveform).mean().backward()
    assert waveform.grad is not None and bool(torch.isfinite(waveform.grad).all())
    assert float(waveform.grad.abs().sum()) > 0
    assert not list(twin.parameters()) and {name for name, _ in twin.named_buffers()} == {"window", "filterbank"}
