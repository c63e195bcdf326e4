"""Log-mel windows of real audio, cut exactly as the runtime cuts them, for int8 calibration and parity.

The audio comes from a folder (every audio file under it), a manifest CSV (its ``path`` column, all
splits) or a single audio file. Each file is decoded at the model's rate (mono) and framed with the
model's grid (:func:`mde.runtime.chunker.frame_grid`), with ``hop`` seconds between frames so that a few
clips can still give enough windows; frames go through the C front end like ``Model.embed``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from mde.audio import find_audio_files, load_audio, pad_to_length
from mde.errors import MdeError, ModelError
from mde.runtime.chunker import frame_grid
from mde.runtime.extractor import frame_inputs
from mde.runtime.frontend import MelSpectrogram
from mde.runtime.package import ModelInfo

MANIFEST_SUFFIX = ".csv"
CALIBRATION_BATCH = 64


def audio_paths(source: str | Path) -> list[Path]:
    """The audio files of a folder, a manifest CSV or one audio file (MdeError when none)."""
    source = Path(source)
    if not source.exists():
        raise MdeError(f"{source}: no such calibration folder, manifest or audio file")
    if source.is_file() and source.suffix.lower() == MANIFEST_SUFFIX:
        from mde.trainer.data.manifest import read_manifest

        paths = [row.path for row in read_manifest(source)]
    else:
        paths = find_audio_files([source])
    if not paths:
        raise MdeError(f"{source}: no audio files to calibrate on")
    return paths


def audio_windows(source: str | Path, info: ModelInfo, hop: Optional[float] = None) -> np.ndarray:
    """float32 (n, n_mels, frames): the model inputs of every frame of the audio in ``source``.

    hop: seconds between frame starts (default: the model's hop). A clip shorter than one frame is zero-padded to one, as ``embed`` does.
    """
    if info.frontend is None:
        raise ModelError(f"{info.name}: calibration needs a model with a log-mel front end")
    grid = frame_grid(info, hop=hop)
    frontend = MelSpectrogram.from_config(info.frontend)
    parts = []
    for path in audio_paths(source):
        samples, _ = load_audio(path, sr=info.sample_rate)
        samples, _ = pad_to_length(samples, grid.min_samples)
        _, batches = frame_inputs(samples, grid, frontend, CALIBRATION_BATCH)
        parts.extend(batches)
    return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)


def spread(windows: np.ndarray, limit: int) -> np.ndarray:
    """At most ``limit`` of ``windows`` (first axis), evenly spread over all of them."""
    if len(windows) <= limit:
        return windows
    return windows[np.linspace(0, len(windows) - 1, limit).round().astype(np.int64)]
