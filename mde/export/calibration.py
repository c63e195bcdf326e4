"""Network inputs of real audio windows, cut exactly as the runtime cuts them, for int8 calibration and
parity: log-mels for log-mel models, transformed samples for waveform models.

The audio comes from a folder (every audio file under it), a manifest CSV (its ``path`` column, all
splits) or a single audio file. A file that cannot be opened or decoded is skipped with a note; only a
source with no usable file, or too little audio, is an error.

Each file is decoded at the model's rate (mono, or stereo for a stereo model) and framed with the
model's grid (:func:`mde.runtime.chunker.frame_grid`); frames go through the model's input stage
(:mod:`mde.runtime.inputs`) like ``Model.embed``. The hop between windows is given in seconds, or chosen
from the audio (``hop=None``, 'auto'): the model's hop when that gives ``limit`` windows, else the
longest hop that does, but never shorter than one spectrogram frame (``hop_length`` samples: a shorter
shift only repeats frames) or, for a waveform model, FINEST_WAVEFORM_HOP_S. At most ``limit`` windows,
evenly spread over all those the audio gives, are computed, one file at a time: memory holds one
decoded file and the chosen windows (``limit`` network inputs, float32), whatever the audio's length.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from mde.audio import find_audio_files, load_audio, open_audio, pad_to_length
from mde.errors import AudioError, MdeError
from mde.export.progress import Progress, no_progress
from mde.runtime.chunker import FrameGrid, cut_frames, frame_grid
from mde.runtime.inputs import frame_source, input_stage, model_inputs
from mde.runtime.package import ModelInfo

MANIFEST_SUFFIX = ".csv"
CALIBRATION_BATCH = 64
"""Windows cut and run through the input stage at a time."""
FINEST_WAVEFORM_HOP_S = 0.01
"""The shortest automatic hop of a waveform model, in seconds (it has no spectrogram frame to bound it)."""
READING = "reading calibration audio"
"""The progress stage of decoding the calibration files (counted in files)."""

_SHOWN_SKIPPED = 3
"""Unreadable files named in the error when none is usable."""

Notes = Callable[[str], None]


def audio_paths(source: str | os.PathLike[str]) -> list[Path]:
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


@dataclass(frozen=True)
class CalibrationPlan:
    """Which windows of which files to compute.

    grid: the frame grid (its step is the chosen hop). files: the usable files. picks: per file, the
    indices of its windows to compute (ascending). available: the windows all the audio gives at this
    hop. seconds: the audio's length (s, from the file headers). finest_step: the shortest automatic
    step (grid units, one spectrogram frame); at_finest: the windows the audio gives at it.
    """

    grid: FrameGrid
    files: tuple[Path, ...]
    picks: tuple[np.ndarray, ...]
    available: int
    seconds: float
    finest_step: int
    at_finest: int

    @property
    def n_windows(self) -> int:
        return int(sum(len(p) for p in self.picks))


def audio_windows(source: str | os.PathLike[str], info: ModelInfo, hop: Optional[float] = None,
                  limit: Optional[int] = None, minimum: int = 1, on_note: Optional[Notes] = None,
                  on_progress: Progress = no_progress) -> np.ndarray:
    """float32 (n, ...): the model inputs ((n, n_mels, frames) log-mels or (n, [channels,] samples)
    waveforms) of up to ``limit`` windows (all without a limit) of the audio in ``source``, evenly spread
    over every window it gives.

    hop: seconds between frame starts; None chooses it from the audio (see the module docstring; without
    a limit, the model's hop). minimum: the fewest windows accepted (MdeError naming how much audio is
    missing). A clip shorter than one frame is zero-padded to one, as ``embed`` does. Unreadable files
    are skipped: ``on_note`` gets one line per file. ``on_progress`` counts the files decoded.
    """
    plan = plan_windows(source, info, hop=hop, limit=limit, minimum=minimum, on_note=on_note)
    windows: Optional[np.ndarray] = None
    got = 0
    for batch in plan_inputs(plan, info, on_note=on_note, on_progress=on_progress):
        if windows is None:
            windows = np.empty((plan.n_windows, *batch.shape[1:]), np.float32)
        windows[got : got + len(batch)] = batch
        got += len(batch)
    if windows is None or got < minimum:  # a file that opened failed while decoding
        raise MdeError(_shortfall(plan, got, minimum, hop))
    return windows[:got]


def plan_windows(source: str | os.PathLike[str], info: ModelInfo, hop: Optional[float] = None,
                 limit: Optional[int] = None, minimum: int = 1, on_note: Optional[Notes] = None) -> CalibrationPlan:
    """The windows :func:`audio_windows` computes, from the files' headers (no decoding)."""
    paths = audio_paths(source)
    files, lengths, skipped = [], [], []
    for path in paths:
        try:
            with open_audio(path) as f:
                lengths.append(int(f.frames) * info.sample_rate // int(f.samplerate))
        except AudioError as exc:
            skipped.append(_skipped(path, exc))
            continue
        files.append(path)
    if not files:
        shown = "; ".join(skipped[:_SHOWN_SKIPPED]) + ("; ..." if len(skipped) > _SHOWN_SKIPPED else "")
        raise MdeError(f"{source}: no usable calibration file among {len(paths)} ({shown})")
    if on_note:
        for line in skipped:
            on_note(f"skipped calibration file {line}")
    grid = frame_grid(info) if hop is None else frame_grid(info, hop=hop)
    units = [_units(grid, info, n) for n in lengths]
    finest = _finest_step(frame_grid(info), info)
    if hop is None and limit is not None:
        grid = dataclasses.replace(grid, step=_longest_step(units, grid, finest, limit))
    counts = [_count(u, grid) for u in units]
    at_finest = sum(_count(u, dataclasses.replace(grid, step=finest)) for u in units)
    total = sum(counts)
    chosen = np.arange(total) if limit is None or total <= limit else np.unique(
        np.linspace(0, total - 1, limit).round().astype(np.int64))
    edges = np.concatenate([[0], np.cumsum(counts)])
    picks = tuple(chosen[(chosen >= lo) & (chosen < hi)] - lo for lo, hi in itertools.pairwise(edges))
    plan = CalibrationPlan(grid, tuple(files), picks, total, sum(lengths) / info.sample_rate, finest, at_finest)
    if total < minimum:
        raise MdeError(_shortfall(plan, total, minimum, hop))
    return plan


def plan_inputs(plan: CalibrationPlan, info: ModelInfo, on_note: Optional[Notes] = None,
                on_progress: Progress = no_progress) -> Iterator[np.ndarray]:
    """float32 model inputs of the planned windows, at most CALIBRATION_BATCH at a time, file by file.

    A file that fails to decode is skipped (``on_note``); in a file whose decoded length gives fewer
    windows than its header promised (MP3 lengths are estimates), the picks past its end take its last window.
    """
    stage = input_stage(info)
    grid = plan.grid
    for done, (path, picks) in enumerate(zip(plan.files, plan.picks), 1):
        if len(picks):
            try:
                samples, _ = load_audio(path, sr=info.sample_rate, channels=info.channels)
            except AudioError as exc:
                if on_note:
                    on_note(f"skipped calibration file {_skipped(path, exc)}")
                samples = None
            if samples is not None:
                samples, _ = pad_to_length(samples, grid.min_samples)
                source = frame_source(samples) if grid.unit == "sample" else stage.whole(samples)
                starts = grid.starts(source.shape[-1])
                starts = starts[np.minimum(picks, len(starts) - 1)]
                for first in range(0, len(starts), CALIBRATION_BATCH):
                    frames = cut_frames(source, starts[first : first + CALIBRATION_BATCH], grid.length)
                    yield model_inputs(frames, grid, stage)
        on_progress(READING, done, len(plan.files))


def spread(windows: np.ndarray, limit: int) -> np.ndarray:
    """At most ``limit`` of ``windows`` (first axis), evenly spread over all of them."""
    if len(windows) <= limit:
        return windows
    return windows[np.linspace(0, len(windows) - 1, limit).round().astype(np.int64)]


def _skipped(path: Path, exc: Exception) -> str:
    """``<path>: <reason>``, naming the file once (audio errors start with the path)."""
    reason, prefix = str(exc), f"{path}: "
    return f"{path}: {reason[len(prefix):] if reason.startswith(prefix) else reason}"


def _units(grid: FrameGrid, info: ModelInfo, n_samples: int) -> int:
    """Grid units (samples or spectrogram frames) of a clip of ``n_samples``, padded to one frame."""
    n_samples = max(n_samples, grid.min_samples)
    if grid.unit == "sample":
        return n_samples
    assert info.frontend is not None  # mel patches: checked with the metadata
    return info.frontend.n_frames(n_samples)


def _count(units: int, grid: FrameGrid) -> int:
    return (units - grid.length) // grid.step + 1 if units >= grid.length else 0


def _finest_step(grid: FrameGrid, info: ModelInfo) -> int:
    """The shortest automatic step, in grid units: one spectrogram frame, or FINEST_WAVEFORM_HOP_S for a
    waveform model (not above the model's step)."""
    if info.frontend is None:
        frame = max(1, round(FINEST_WAVEFORM_HOP_S * info.sample_rate))
    else:
        frame = info.frontend.hop_length if grid.unit == "sample" else 1
    return min(frame, grid.step)


def _longest_step(units: list[int], grid: FrameGrid, finest: int, limit: int) -> int:
    """The longest step in [finest, grid.step] giving ``limit`` windows over ``units`` (else ``finest``)."""
    def enough(step: int) -> bool:
        return sum(_count(u, dataclasses.replace(grid, step=step)) for u in units) >= limit

    if enough(grid.step):
        return grid.step
    low, high = finest, grid.step  # windows only fall as the step grows: search where enough() turns false
    if not enough(low):
        return low
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if enough(middle) else (low, middle)
    return low


def _shortfall(plan: CalibrationPlan, got: int, minimum: int, hop: Optional[float]) -> str:
    """The one-line error for too few windows: what the audio gives, and how much more would do."""
    grid, unit = plan.grid, plan.grid.unit_seconds
    finest = f"the finest hop ({plan.finest_step * unit:.3g} s)"
    text = (f"int8 calibration needs at least {minimum} windows of {grid.window_seconds:.3g} s; "
            f"{len(plan.files)} usable file(s) ({plan.seconds:.1f} s of audio) give {got} at ")
    if hop is not None and plan.at_finest >= minimum:
        return text + f"--calib-hop {hop:g} s: leave --calib-hop at auto, which gives enough"
    if hop is not None:
        text += f"--calib-hop {hop:g} s and {plan.at_finest} at {finest}"
    else:
        text += finest
    base = got if hop is None else plan.at_finest
    extra = math.ceil((grid.length + (minimum - base - 1) * plan.finest_step) * unit * 10) / 10
    return text + f": add at least {extra:.1f} s of audio in one more file"
