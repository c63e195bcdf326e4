"""Where frames start. Defined once here and used by ``embed``, ``stream`` and the trainer's evaluation.

Models declare one of two framings (``ModelInfo.framing``): 'audio_windows' (the first seed: cut audio
windows, one log-mel per window) and 'mel_patches' (musicnn: one log-mel over the whole signal, cut
into patches of spectrogram frames). They differ at window edges; :class:`FrameGrid` describes both.

A frame is a run of ``length`` consecutive units (audio samples for models that cut audio windows,
spectrogram frames for models that cut mel patches) starting every ``step`` units from 0. An
incomplete last frame is dropped; a signal shorter than one frame yields no frame (callers zero-pad
short clips to one frame first, see :func:`mde.audio.pad_to_length`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from mde.errors import MdeError, ModelError
from mde.runtime.frontend_config import FrontendConfig
from mde.runtime.package import ModelInfo, check_seconds


def frame_starts(total: int, length: int, step: int) -> np.ndarray:
    """Start offsets (int64, same unit as the arguments) of every complete frame in ``total`` units."""
    if length < 1 or step < 1:
        raise ValueError(f"frame length and step must be positive, got {length} and {step}")
    if total < length:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, total - length + 1, step, dtype=np.int64)


def cut_frames(signal: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """Frames of ``length`` along the last axis of ``signal`` at ``starts``, stacked on a new first axis.

    For a 1-d signal the result is (frames, length); for (channels, total) it is (frames, channels, length).
    The result is a C-contiguous copy.
    """
    if len(starts) == 0:
        return np.zeros((0, *signal.shape[:-1], length), dtype=signal.dtype)
    windows = np.lib.stride_tricks.sliding_window_view(signal, length, axis=-1)
    picked = windows[..., starts, :]
    return np.ascontiguousarray(np.moveaxis(picked, -2, 0))


@dataclass(frozen=True)
class FrameGrid:
    """How a model's frames are laid over a signal.

    unit: 'sample' (the model cuts audio windows and computes a log-mel per window) or 'mel_frame'
      (the model computes one log-mel over the whole signal and cuts patches of it).
    length, step: frame length and step, in units.
    min_samples: the shortest signal (in samples) that holds one complete frame.
    unit_seconds: seconds per unit (1 / sample_rate, or hop_length / sample_rate).
    """

    unit: str
    length: int
    step: int
    min_samples: int
    unit_seconds: float

    @property
    def window_seconds(self) -> float:
        return self.length * self.unit_seconds

    def starts(self, total_units: int) -> np.ndarray:
        """Frame starts, in units, over a signal of ``total_units`` units."""
        return frame_starts(total_units, self.length, self.step)


def frame_grid(info: ModelInfo, window: Optional[float] = None, hop: Optional[float] = None) -> FrameGrid:
    """The frame grid of a model, with its window and hop optionally changed (both in seconds).

    Without a hop, frames do not overlap: the step is the model's hop, or the window's length when a
    window is given. Only models declaring ``variable_length`` accept another window. For mel-patch
    models a window of
    W seconds is floor((W * rate - n_fft // 2) / hop_length) + 1 spectrogram frames (musicnn's rule:
    0.5 s -> 31, 3 s -> 187, 29 s -> 1812 frames at 16 kHz with hop 256).
    """
    rate = info.sample_rate
    check_seconds(window, hop)
    if info.framing == "audio_windows":
        length = info.window_samples if window is None else round(window * rate)
        step = (info.hop_samples if window is None else length) if hop is None else round(hop * rate)
        grid = FrameGrid("sample", length, step, length, 1.0 / rate)
    else:
        frontend = _frontend_of(info)
        length = _default_length(info) if window is None else _patch_frames(window, frontend)
        default_step = info.hop_samples // frontend.hop_length if window is None else length
        step = default_step if hop is None else round(hop * rate / frontend.hop_length)
        min_samples = _samples_for_frames(length, frontend)
        grid = FrameGrid("mel_frame", length, step, min_samples, frontend.hop_length / rate)
    if grid.length < 1 or grid.step < 1:
        raise MdeError(f"window and hop must span at least one {grid.unit}, got {grid.length} and {grid.step}")
    if window is not None and not info.variable_length and grid.length != _default_length(info):
        raise MdeError(f"{info.name} takes only {info.window_seconds:g} s windows, not {window:g} s")
    return grid


def _frontend_of(info: ModelInfo) -> FrontendConfig:
    if info.frontend is None or info.patch_frames is None:
        raise ModelError(f"{info.name}: a mel-patch model needs a front end and patch_frames in its metadata")
    return info.frontend


def _default_length(info: ModelInfo) -> int:
    return info.window_samples if info.framing == "audio_windows" else int(info.patch_frames or 0)


def _patch_frames(seconds: float, frontend: FrontendConfig) -> int:
    return int((seconds * frontend.sample_rate - frontend.n_fft // 2) // frontend.hop_length) + 1


def _samples_for_frames(frames: int, frontend: FrontendConfig) -> int:
    """The fewest samples whose log-mel has ``frames`` frames."""
    if frontend.center:
        return (frames - 1) * frontend.hop_length
    return (frames - 1) * frontend.hop_length + frontend.n_fft
