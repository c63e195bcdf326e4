"""From decoded samples to the network inputs of a model's frames, for every input kind.

A log-mel model gets the C front end's log-mel of each cut audio window (or patches cut from one log-mel
over the whole signal, for mel-patch models), standardised per band when the model declares a
:class:`~mde.runtime.band_norm.BandNorm`; a waveform model gets each cut window's samples after its
declared :class:`~mde.runtime.input_transform.InputTransform`, applied per window, so ``embed``, ``stream``,
export checks and calibration all give the graph the same inputs.

Signals are float32 at the model's rate: (samples,) for mono models, (samples, channels) for stereo ones
(as :func:`mde.audio.load_audio` gives them). Frames cut from a stereo signal are (frames, channels,
window_samples), the layout of a stereo waveform graph's input.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Optional

import numpy as np

from mde.runtime.band_norm import BandNorm, apply_band_norm
from mde.runtime.chunker import FrameGrid, cut_frames
from mde.runtime.frontend import MelSpectrogram
from mde.runtime.input_transform import IDENTITY, InputTransform, apply_transform
from mde.runtime.package import ModelInfo


@dataclass(frozen=True)
class InputStage:
    """What turns a model's cut frames into its network inputs.

    frontend: the C log-mel front end of a log-mel model (None for a waveform model).
    transform: the input transform of a waveform model (None for a log-mel model).
    band_norm: the per-band standardisation of a log-mel model's input (None: none).
    """

    frontend: Optional[MelSpectrogram]
    transform: Optional[InputTransform]
    band_norm: Optional[BandNorm] = None

    def windows(self, frames: np.ndarray) -> np.ndarray:
        """Network inputs of cut audio windows (frames, samples) or (frames, channels, samples): one
        log-mel per window (frames, n_mels, n_frames), or the transformed samples (same shape)."""
        if self.frontend is not None:
            return self.logmel_inputs(self.frontend(frames))
        return apply_transform(self.transform or IDENTITY, frames)

    def logmel_inputs(self, logmels: np.ndarray) -> np.ndarray:
        """Network inputs of log-mels (..., n_mels, frames) from the front end: standardised per band when
        the model says so, else as they are."""
        return logmels if self.band_norm is None else apply_band_norm(self.band_norm, logmels)

    def whole(self, samples: np.ndarray) -> np.ndarray:
        """The log-mel (n_mels, frames) of a whole mono signal, which mel-patch models cut patches from."""
        if self.frontend is None:
            raise ValueError("a waveform model has no log-mel to cut patches from")
        return self.frontend(samples)


def input_stage(info: ModelInfo, threads: int = 1) -> InputStage:
    """The input stage of a model: its C front end (``threads`` kernel threads) or its input transform."""
    if info.frontend is not None:
        return InputStage(MelSpectrogram.from_config(info.frontend, threads=threads), None, info.band_norm)
    return InputStage(None, info.input_transform or IDENTITY)


def frame_source(samples: np.ndarray) -> np.ndarray:
    """The signal audio windows are cut from: ``samples`` with samples on the last axis ((channels, n) for a
    (n, channels) signal, a view)."""
    return samples.T if samples.ndim == 2 else samples


def frame_inputs(
    samples: np.ndarray, grid: FrameGrid, stage: InputStage, batch_size: int
) -> tuple[np.ndarray, Iterator[np.ndarray]]:
    """Frame starts (in grid units) and the model inputs of those frames, ``batch_size`` at a time.

    Audio-window models get their cut windows through ``stage``; mel-patch models get patches cut from
    one log-mel over the whole signal. ``samples`` must already hold at least ``grid.min_samples``.
    """
    # audio windows are cut from the samples, mel patches from one log-mel over the whole signal
    source = frame_source(samples) if grid.unit == "sample" else stage.whole(samples)
    starts = grid.starts(source.shape[-1])

    def batches() -> Iterator[np.ndarray]:
        for first in range(0, len(starts), batch_size):
            frames = cut_frames(source, starts[first : first + batch_size], grid.length)
            yield model_inputs(frames, grid, stage)

    return starts, batches()


def model_inputs(frames: np.ndarray, grid: FrameGrid, stage: InputStage) -> np.ndarray:
    """The model inputs of cut frames: audio windows or mel patches through ``stage``."""
    return stage.windows(frames) if grid.unit == "sample" else stage.logmel_inputs(frames)
