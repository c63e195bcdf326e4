"""Deterministic music-like audio for export-time parity checks (no data files needed)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from mde.runtime.package import ModelInfo


def example_signal(n_samples: int, sample_rate: int, seed: int = 0) -> np.ndarray:
    """float32 (n_samples,) of a melody of harmonic tones (0.25 s notes, 6 partials, decaying) over a
    55 Hz hum and quiet noise; ``sample_rate`` in Hz."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples) / sample_rate
    note_length = sample_rate // 4
    fundamentals = 110.0 * 2.0 ** (rng.integers(0, 36, size=n_samples // note_length + 1) / 12.0)
    f0 = np.repeat(fundamentals, note_length)[:n_samples]
    envelope = np.exp(-3.0 * (np.arange(n_samples) % note_length) / sample_rate)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    partials = sum(np.sin(k * phase) / k for k in range(1, 7) if k * f0.max() < sample_rate / 2)
    hum = 0.02 * np.sin(2 * np.pi * 55.0 * t)
    signal = 0.3 * envelope * partials + hum + 0.01 * rng.standard_normal(n_samples)
    return signal.astype(np.float32)


def example_windows(window: int, sample_rate: int, n_windows: int, seed: int = 0) -> np.ndarray:
    """float32 (n_windows, window): consecutive windows (``window`` in samples) of :func:`example_signal`."""
    return example_signal(window * n_windows, sample_rate, seed).reshape(n_windows, window)


def example_inputs(info: ModelInfo, n_windows: int = 3, seed: int = 0) -> np.ndarray:
    """float32 network inputs of :func:`example_signal`, framed as the runtime frames the model: for a
    log-mel model (n_windows, [channels,] n_mels, frames), consecutive audio windows through the C front end or
    consecutive patches of one log-mel over the whole signal (standardised per band where the model says
    so); for a waveform model (n_windows, samples) or (n_windows, channels, samples), consecutive windows
    after the model's input transform (a stereo model's channels are signals of different seeds)."""
    from mde.runtime.chunker import cut_frames, frame_grid
    from mde.runtime.inputs import input_stage

    stage = input_stage(info)
    if info.framing == "audio_windows":
        windows = np.stack([example_windows(info.window_samples, info.sample_rate, n_windows, seed + c)
                            for c in range(info.channels)], axis=1)  # (n_windows, channels, samples)
        return stage.windows(np.ascontiguousarray(windows[:, 0] if info.channels == 1 else windows))
    grid = frame_grid(info)
    logmel = stage.whole(example_signal(grid.min_samples + (n_windows - 1) * info.hop_samples, info.sample_rate, seed))
    return stage.logmel_inputs(cut_frames(logmel, grid.starts(logmel.shape[-1])[:n_windows], grid.length))
