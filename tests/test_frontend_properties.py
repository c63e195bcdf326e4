"""Property tests of the C front end against a float64 numpy reference written here (np.fft.rfft)."""

from __future__ import annotations

from typing import Optional

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mde.runtime.frontend import MelSpectrogram
from mde.runtime.frontend_config import SUPPORTED_N_FFT, FrontendConfig

LOUD_RANGE_DB = 60.0  # compare bands within 60 dB (in power) of what they could collect from the loudest bin
DB_TOLERANCE = 0.002  # dB, what float32 arithmetic may cost there (worst seen: 2.3e-4)
RELATIVE_TOLERANCE = 10 ** (DB_TOLERANCE / 10) - 1  # the same, as a ratio of mel values


def reference_spectrum(signal: np.ndarray, config: FrontendConfig) -> np.ndarray:
    """Power (or magnitude) spectrogram (n_freqs, frames) in float64: pad, frame, periodic Hann, rfft."""
    n_fft, hop = config.n_fft, config.hop_length
    samples = signal.astype(np.float64)
    if config.center:
        samples = np.pad(samples, n_fft // 2, mode=config.pad_mode)
    n_frames = 1 + (len(samples) - n_fft) // hop
    frames = samples[np.arange(n_fft)[None, :] + hop * np.arange(n_frames)[:, None]]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    return (np.abs(np.fft.rfft(frames * window, axis=1)) ** config.power).T


def reference_log(mel: np.ndarray, config: FrontendConfig) -> np.ndarray:
    """The configured log of a float64 mel spectrogram (top_db and fp16 rounding left out)."""
    if config.log == "db":
        return 10.0 * np.log10(np.maximum(mel, config.amin))
    if config.log == "log10p":
        return np.log10(1.0 + config.log_scale * mel)
    return mel


def assert_matches_reference(
    ours: np.ndarray, signal: np.ndarray, config: FrontendConfig, filterbank: np.ndarray
) -> None:
    """Finite, and equal to the float64 reference within float32 noise wherever a band holds power within
    60 dB of the most its filter could collect from the loudest bin (float32 rounding scales with that)."""
    spectrum = reference_spectrum(signal, config)
    weights = filterbank.astype(np.float64)
    mel = weights.T @ spectrum
    assert ours.shape == mel.shape == (config.n_mels, config.n_frames(len(signal)))
    assert np.isfinite(ours).all()
    reach = weights.sum(axis=0)[:, None] * spectrum.max()
    loud = mel >= reach * 10.0 ** (-LOUD_RANGE_DB * config.power / 20.0)  # power units or magnitude units
    expected = reference_log(mel, config)[loud]
    got = ours[loud].astype(np.float64)
    if config.log == "db":
        np.testing.assert_allclose(got, expected, rtol=0, atol=DB_TOLERANCE)
    elif config.log == "log10p":  # d log10(1 + C x) <= d log10(x)
        np.testing.assert_allclose(got, expected, rtol=0, atol=DB_TOLERANCE / 10)
    else:
        np.testing.assert_allclose(got, expected, rtol=RELATIVE_TOLERANCE, atol=0)


@st.composite
def configs(draw: st.DrawFn, log: Optional[str] = "db") -> FrontendConfig:
    """Any supported front end: every n_fft, hops n_fft/16..n_fft, rates 8-48 kHz, both scales and paddings."""
    n_fft = draw(st.sampled_from(SUPPORTED_N_FFT))
    sample_rate = draw(st.integers(8000, 48000))
    f_min = draw(st.floats(0.0, sample_rate / 8))
    f_max = draw(st.one_of(st.none(), st.floats(sample_rate / 4, sample_rate / 2)))
    return FrontendConfig(
        sample_rate=sample_rate, n_fft=n_fft, hop_length=draw(st.integers(n_fft // 16, n_fft)),
        n_mels=draw(st.integers(1, 128)), f_min=f_min, f_max=f_max,
        mel_scale=draw(st.sampled_from(["htk", "slaney"])), norm=draw(st.sampled_from([None, "slaney"])),
        center=draw(st.booleans()), pad_mode=draw(st.sampled_from(["reflect", "constant"])),
        power=draw(st.sampled_from([1.0, 2.0])), log=log,
    )


def signal_length(draw: st.DrawFn, config: FrontendConfig) -> int:
    """A length the config accepts: from its minimum to a few windows."""
    minimum = config.n_fft // 2 + 1 if config.center else config.n_fft
    return draw(st.integers(minimum, 4 * config.n_fft))


@st.composite
def noise_cases(draw: st.DrawFn) -> tuple[FrontendConfig, np.ndarray]:
    """A config, log mode included, and white noise of random length, gain and seed."""
    config = draw(configs(log=draw(st.sampled_from(["db", "log10p", None]))))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    gain = 10.0 ** draw(st.floats(-4, 0))
    return config, (gain * rng.uniform(-1, 1, signal_length(draw, config))).astype(np.float32)


@st.composite
def full_scale_cases(draw: st.DrawFn) -> tuple[FrontendConfig, np.ndarray]:
    """A dB config and a +-1 square wave or hard-clipped loud noise."""
    config = draw(configs())
    n_samples = signal_length(draw, config)
    if draw(st.booleans()):
        period = draw(st.integers(2, 400))
        signal = np.where(np.arange(n_samples) % period < period // 2, 1.0, -1.0)
    else:
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        signal = np.clip(draw(st.floats(1.0, 50.0)) * rng.standard_normal(n_samples), -1.0, 1.0)
    return config, signal.astype(np.float32)


@settings(max_examples=500, deadline=None)
@given(noise_cases())
def test_matches_float64_reference(case: tuple[FrontendConfig, np.ndarray]) -> None:
    config, signal = case
    mel = MelSpectrogram.from_config(config)
    ours = mel(signal)
    assert ours.dtype == np.float32
    assert_matches_reference(ours, signal, config, mel.filterbank)


@settings(max_examples=300, deadline=None)
@given(full_scale_cases())
def test_full_scale_signals_stay_finite_and_accurate(case: tuple[FrontendConfig, np.ndarray]) -> None:
    config, signal = case
    mel = MelSpectrogram.from_config(config)
    assert_matches_reference(mel(signal), signal, config, mel.filterbank)


@settings(max_examples=200, deadline=None)
@given(configs(), st.data())
def test_frame_count_matches_config(config: FrontendConfig, data: st.DataObject) -> None:
    n_samples = data.draw(st.integers(config.n_fft // 2 + 1 if config.center else config.n_fft, 20000))
    out = MelSpectrogram.from_config(config)(np.zeros((2, n_samples), np.float32))
    assert out.shape == (2, config.n_mels, config.n_frames(n_samples))


@settings(max_examples=200, deadline=None)
@given(configs(), st.data())
def test_silence_gives_exactly_the_floor(config: FrontendConfig, data: st.DataObject) -> None:
    n_samples = data.draw(st.integers(config.n_fft, 3 * config.n_fft))
    amin = 10.0 ** data.draw(st.floats(-12, -3))
    zeros = np.zeros(n_samples, np.float32)
    db = MelSpectrogram.from_config(config.with_(amin=amin))(zeros)
    assert (db == np.float32(10.0 * np.log10(float(np.float32(amin))))).all()
    for fp16_round in (False, True):
        log10p = MelSpectrogram.from_config(config.with_(log="log10p", fp16_round=fp16_round))(zeros)
        assert (log10p == 0.0).all()
