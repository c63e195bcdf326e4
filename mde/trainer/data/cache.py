"""The feature cache: decode, resample and store every clip of a dataset once, in one memory-mapped archive.

``prepare_cache`` fills a folder (row i of every file is clip i of the index, splits in dataset order):

  index.json       {"format", "config": the :class:`CacheConfig`, "rows": [{path, id, split, labels}]}, id
                   being the file's stem (an MSD track id for MSD files); written once, atomically, after
                   the arrays are created and before any row is filled
  features.npy     float16 or float32 rows: (length,) samples, (channels, length) for stereo, or the
                   log-mels (n_mels, frames), (channels, n_mels, frames) for stereo
  n_samples.npy    int64 (rows,): each clip's decoded length in samples at sample_rate, before crop or pad
  done.npy         bool (rows,): set once the row's features and n_samples are written and flushed
  failed.json      [{row, path, split, reason}]: the clips of the last pass that were not stored (excluded
                   from training); written last, at the end of a pass, so its presence marks a finished pass
  prepare.log.tsv  what every pass did with every clip (see below)

Every clip is fitted to a window of ``length`` samples (``length / sample_rate`` seconds):

- longer: with ``crop`` (the default) the window starts ``offset`` seconds in when an offset is given and
  the clip holds offset + length samples, at the clip's start when it is too short for that, and at its
  centre (sample (n - length) // 2) when offset is None; without crop the clip fails
  ("<path>: 12.3 s, longer than the 10.0 s window (crop is off)").
- shorter: with ``pad`` (the default) it is zero-padded at the end and its true length kept in n_samples;
  without pad it fails likewise ("... shorter than the 10.0 s window (pad is off)").

Stereo (``channels=2``): files are decoded by ``load_audio(..., channels=2)`` (a mono file repeated on both
channels, other channel counts fail); mono (the default) averages a file's channels.

A log-mel cache stores the C front end's log-mel of the fitted waveform, the channels of a stereo clip
sharing one peak (for top_db and db_ref='max', as the front end treats a multichannel window). The frames
of a padded clip past its end (from :attr:`FeatureCache.valid_lengths` on) hold the front end's floor: the
value it gives a frame of silence in that clip (peak - top_db for a dB front end with top_db, 10 log10(amin)
without), never a loud one.

Resuming: preparing again into the same folder with the same dataset and settings keeps the rows already
stored (``skip``, the default) and fills the others (clips that failed before are tried again); with
``skip=False`` every row is computed again. Other settings are refused unless ``overwrite``. A prepare that
is killed leaves no failed.json, so :meth:`FeatureCache.open` refuses it as incomplete.

The log: each pass appends a header line ``# <UTC time> pass over N clips ...`` and then one line per clip,
``row<TAB>path<TAB>status<TAB>reason<TAB>seconds``: status ``ok``, ``failed`` (reason: the one-line error,
as in failed.json) or ``skipped`` (stored by an earlier pass and kept); seconds: the clip's decoded
duration, empty when it could not be decoded. Lines are written as the workers hand back their clips, so
a killed pass keeps the lines of the rows it stored. Tabs and line breaks inside a field become spaces.

Older caches: an index of format mde-feature-cache/1 (before crop, pad, offset, channels and ids) reads as
those defaults (crop and pad on, the centre, mono, ids from the paths); a prepare with those settings into
it resumes and rewrites its index in the current format.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import numbers
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple, Optional, TextIO

import numpy as np
from numpy.lib.format import open_memmap

from mde.atomic import atomic_path
from mde.audio import MIN_SAMPLE_RATE, load_audio
from mde.errors import MdeError
from mde.runtime.frontend import MelSpectrogram
from mde.runtime.frontend_config import FrontendConfig
from mde.trainer.data.dataset import TaggingDataset

FEATURES = ("waveform", "logmel")
DTYPES = ("float16", "float32")
CHANNELS = (1, 2)

_FORMAT = "mde-feature-cache/2"
_FORMAT_1 = "mde-feature-cache/1"
"""The format before crop, pad, offset, channels and row ids: read as their defaults."""
_INDEX = "index.json"
_FEATURES = "features.npy"
_N_SAMPLES = "n_samples.npy"
_DONE = "done.npy"
_FAILED = "failed.json"
_LOG = "prepare.log.tsv"

_MAX_CHUNK = 16
"""The most clips one task handles: its rows are flushed together and reported when it returns."""

_Job = tuple[str, dict[str, Any], list[tuple[int, str]]]
"""(cache folder, config dict, [(row, path)]): one task for a worker."""
ChunkMap = Callable[[Callable[[Any], Any], list[Any]], Iterator[tuple[int, Any]]]
"""``(fn, jobs) -> (position in jobs, fn(job))`` in any order, each job once; MdeError when it stops with
jobs left (their clips are then reported as failed). ``fn`` writes its rows into the cache folder itself,
which must be where ``fn`` runs can write it."""
_Encoder = Callable[[np.ndarray, int], np.ndarray]
"""(fitted waveform, decoded length in samples) -> the stored row (before the dtype cast)."""


class _Outcome(NamedTuple):
    """What a worker did with one clip: reason None when stored; n_samples None when not decoded."""

    row: int
    reason: Optional[str]
    n_samples: Optional[int]


@dataclass(frozen=True)
class CacheConfig:
    """What a cache holds.

    sample_rate in Hz; length: the window in samples per clip; frontend only for 'logmel'.
    crop, pad: whether a clip longer (shorter) than the window is cut (zero-padded) or fails.
    offset: where a cut window starts, in seconds from the clip's start (None: the clip's centre).
    channels: 1 (mono, a file's channels averaged) or 2 (stereo).
    """

    dataset: str
    tag_names: tuple[str, ...]
    single_label: bool
    sample_rate: int
    length: int
    features: str
    dtype: str
    frontend: Optional[FrontendConfig] = None
    crop: bool = True
    pad: bool = True
    offset: Optional[float] = None
    channels: int = 1

    def __post_init__(self) -> None:
        if not _is_int_at_least(self.sample_rate, MIN_SAMPLE_RATE):
            raise MdeError(f"sample_rate must be an integer of at least {MIN_SAMPLE_RATE} Hz, got {self.sample_rate!r}")
        if not _is_int_at_least(self.length, 1):
            raise MdeError(f"length must be a positive number of samples, got {self.length!r}")
        if self.features not in FEATURES:
            raise MdeError(f"features must be one of {', '.join(FEATURES)}, got {self.features!r}")
        if self.dtype not in DTYPES:
            raise MdeError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if (self.features == "logmel") != (self.frontend is not None):
            raise MdeError("features='logmel' needs a frontend, and only it takes one")
        if self.frontend is not None:
            self._check_frontend(self.frontend)
        self._check_fitting()

    def _check_frontend(self, frontend: FrontendConfig) -> None:
        if frontend.sample_rate != self.sample_rate:
            raise MdeError(f"the front end runs at {frontend.sample_rate} Hz but clips are stored at "
                           f"{self.sample_rate} Hz")
        if self.dtype == "float16" and frontend.log is None:
            raise MdeError("float16 cannot hold a spectrogram without a log (it overflows); use dtype='float32'")

    def _check_fitting(self) -> None:
        """MdeError for crop, pad, offset or channels settings that are not of their kind."""
        for name in ("crop", "pad"):
            if not isinstance(getattr(self, name), bool):
                raise MdeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.offset is not None:
            if not (_is_real(self.offset) and 0.0 <= self.offset < math.inf):
                raise MdeError(f"offset must be a number of seconds from 0 on, or None, got {self.offset!r}")
            if not self.crop:
                raise MdeError("offset (where a cut window starts) needs crop")
        if self.channels not in CHANNELS or isinstance(self.channels, bool):
            raise MdeError(f"channels must be 1 (mono) or 2 (stereo), got {self.channels!r}")

    @property
    def offset_samples(self) -> Optional[int]:
        """``offset`` in samples at sample_rate (rounded), or None."""
        return None if self.offset is None else round(self.offset * self.sample_rate)

    @property
    def waveform_shape(self) -> tuple[int, ...]:
        """Shape of one fitted clip before any front end: (length,) samples, or (channels, length) for stereo."""
        return (self.length,) if self.channels == 1 else (self.channels, self.length)

    @property
    def row_shape(self) -> tuple[int, ...]:
        """Shape of one stored clip: :attr:`waveform_shape`, or (n_mels, frames) after (channels,) for stereo."""
        if self.frontend is None:
            return self.waveform_shape
        return (*self.waveform_shape[:-1], self.frontend.n_mels, self.frontend.n_frames(self.length))

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset, "tag_names": list(self.tag_names), "single_label": self.single_label,
            "sample_rate": self.sample_rate, "length": self.length, "features": self.features,
            "dtype": self.dtype, "frontend": None if self.frontend is None else self.frontend.to_dict(),
            "crop": self.crop, "pad": self.pad, "offset": None if self.offset is None else float(self.offset),
            "channels": self.channels,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CacheConfig:
        """Inverse of :meth:`to_dict`; keys left out (an older index) take their defaults."""
        frontend = data.get("frontend")
        return cls(**{
            **data, "tag_names": tuple(data["tag_names"]),
            "frontend": None if frontend is None else FrontendConfig.from_dict(frontend),
        })


@dataclass(frozen=True)
class FailedClip:
    """A clip that was not stored (undecodable, or outside the window with crop or pad off); ``reason`` is
    the one-line error, starting with the path."""

    row: int
    path: str
    split: str
    reason: str


@dataclass(frozen=True)
class CacheReport:
    """What one prepare pass did. done: clips stored now; skipped: stored by an earlier pass and kept;
    elapsed in seconds."""

    directory: Path
    done: int
    skipped: int
    failed: list[FailedClip] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def n_failed(self) -> int:
        return len(self.failed)

    @property
    def log_path(self) -> Path:
        """The cache's per-clip log, prepare.log.tsv (this pass is its last block)."""
        return self.directory / _LOG


def window_start(n: int, length: int, offset: Optional[int]) -> int:
    """The first sample of the ``length``-sample window cut from a clip of ``n`` >= ``length`` samples:
    ``offset`` (in samples) when the clip holds offset + length samples, else 0; the centre,
    (n - length) // 2, when offset is None."""
    if offset is None:
        return (n - length) // 2
    return offset if offset + length <= n else 0


def fit_window(signal: np.ndarray, length: int, offset: Optional[int]) -> np.ndarray:
    """``signal`` (samples on its last axis) cut to the ``length`` samples from :func:`window_start` on,
    or zero-padded at the end to ``length`` samples."""
    n = signal.shape[-1]
    if n >= length:
        start = window_start(n, length, offset)
        return signal[..., start : start + length]
    padded = np.zeros((*signal.shape[:-1], length), dtype=signal.dtype)
    padded[..., :n] = signal
    return padded


def prepare_cache(
    dataset: TaggingDataset,
    out_dir: Path,
    *,
    sample_rate: int,
    length: int,
    features: str = "waveform",
    frontend: Optional[FrontendConfig] = None,
    dtype: str = "float16",
    crop: bool = True,
    pad: bool = True,
    offset: Optional[float] = None,
    channels: int = 1,
    skip: bool = True,
    workers: int = 1,
    overwrite: bool = False,
    on_progress: Optional[Callable[[str, bool], None]] = None,
    map_chunks: Optional[ChunkMap] = None,
) -> CacheReport:
    """Decode every clip of ``dataset`` at ``sample_rate`` Hz, fit it to ``length`` samples and store it in ``out_dir``.

    features: 'waveform' stores the samples, 'logmel' the log-mel of ``frontend`` (required then,
    ignored for waveforms). dtype: 'float16' or 'float32'.
    crop: cut a clip longer than ``length`` samples (from ``offset`` seconds in, or its centre when offset
    is None), else it fails; pad: zero-pad a shorter one at the end, else it fails (see the module).
    channels: 1 (mono) or 2 (stereo rows, (2, ...)).
    skip: keep the rows an earlier pass with the same settings stored; False computes every row again.
    workers: processes decoding in parallel (1: in this process).
    map_chunks: runs the decoding elsewhere instead (e.g. on Ray, :func:`mde.cluster.pipeline.ray_chunk_map`); see
      ChunkMap. ``workers`` then only sizes the chunks.
    overwrite: start afresh over a cache with other settings instead of refusing it.
    on_progress(path, ok) is called once per clip: first for clips kept from an earlier pass, then as files
    finish (ok False for a clip that failed), so it is called len(all clips) times in all.
    Clips that are not stored are listed in the report, failed.json and prepare.log.tsv and left out of
    training. With workers > 1 the pool spawns fresh interpreters, so a script calling this needs the
    ``if __name__ == "__main__":`` guard.
    Raises MdeError for bad settings, an empty dataset, or a folder holding a cache with other settings.
    """
    started = time.perf_counter()
    if not _is_int_at_least(workers, 1):
        raise MdeError(f"workers must be a positive integer, got {workers!r}")
    config = CacheConfig(
        dataset=dataset.name, tag_names=tuple(dataset.tag_names), single_label=dataset.single_label,
        sample_rate=sample_rate, length=length, features=features, dtype=dtype,
        frontend=frontend if features == "logmel" else None, crop=crop, pad=pad, offset=offset, channels=channels,
    )
    _check_encodable(config)
    out_dir = Path(out_dir)
    index = _index_of(dataset, config)
    rows = index["rows"]
    _claim(out_dir, index, config, overwrite)

    stored = np.load(out_dir / _DONE) if skip else np.zeros(len(rows), dtype=np.bool_)
    pending = [(int(row), rows[row]["path"]) for row in np.flatnonzero(~stored)]
    with _open_log(out_dir, config.sample_rate, len(rows), len(rows) - len(pending)) as log:
        _keep_stored(out_dir, rows, np.flatnonzero(stored), log, on_progress)
        failed = _fill(out_dir, config, rows, pending, min(workers, max(1, len(pending))), log, on_progress,
                       map_chunks)
    _write_json(out_dir / _FAILED, [vars(clip) for clip in failed])
    return CacheReport(
        directory=out_dir, done=len(pending) - len(failed), skipped=len(rows) - len(pending), failed=failed,
        elapsed=time.perf_counter() - started,
    )


class FeatureCache:
    """A prepared cache, opened read-only. Use :meth:`open`.

    config: the :class:`CacheConfig`. features: read-only memmap (rows, *config.row_shape): (rows, length)
    or (rows, n_mels, frames), with a channel axis after rows for stereo. labels: float32 (rows, n_tags).
    n_samples: int64 (rows,) decoded lengths in samples. paths, splits: per row. done: bool (rows,).
    failed: the clips the last prepare pass did not store.
    """

    def __init__(self, directory: Path, index: dict[str, Any], allow_incomplete: bool) -> None:
        index = _current(index)
        if index["format"] != _FORMAT:
            raise MdeError(f"{directory}: a feature cache of format {index['format']!r}, "
                           f"this version reads {_FORMAT!r} and {_FORMAT_1!r}")
        self.directory = directory
        self.config = CacheConfig.from_dict(index["config"])
        rows = index["rows"]
        self.paths = tuple(row["path"] for row in rows)
        self._ids = tuple(row["id"] for row in rows)
        self.splits = np.array([row["split"] for row in rows])
        self.labels = np.array([row["labels"] for row in rows], dtype=np.float32).reshape(len(rows), -1)
        _check_arrays(directory, self.config, len(rows))
        self.features: np.ndarray = np.load(directory / _FEATURES, mmap_mode="r")
        self.n_samples = np.load(directory / _N_SAMPLES)
        self.done = np.load(directory / _DONE)
        failed = _read_json(directory / _FAILED)
        self.failed = [FailedClip(**clip) for clip in failed or []]
        settled = self.done.copy()
        settled[np.array([clip.row for clip in self.failed], dtype=np.int64)] = True
        self.complete = failed is not None and bool(settled.all())
        self._allow_incomplete = allow_incomplete
        if not self.complete and not allow_incomplete:
            raise MdeError(
                f"{directory}: the feature cache is incomplete ({int(self.done.sum())} of {len(rows)} clips "
                "stored); rerun mde prepare with the same settings to finish it"
            )

    @classmethod
    def open(cls, directory: Path, *, allow_incomplete: bool = False) -> FeatureCache:
        """Open the cache in ``directory``; an incomplete one is an MdeError unless ``allow_incomplete``."""
        directory = Path(directory)
        index = _read_index(directory)
        if index is None:
            raise MdeError(f"{directory}: no feature cache here (no {_INDEX}); create one with mde prepare")
        return cls(directory, index, allow_incomplete)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle as the folder (DataLoader workers reopen the memmap instead of copying it)."""
        return (_reopen, (os.fspath(self.directory), self._allow_incomplete))

    def __repr__(self) -> str:
        return f"FeatureCache({os.fspath(self.directory)!r}, {self.config.features}, rows={len(self.paths)})"

    @property
    def tag_names(self) -> tuple[str, ...]:
        return self.config.tag_names

    @property
    def single_label(self) -> bool:
        return self.config.single_label

    @property
    def channels(self) -> int:
        """Audio channels of every row: 1 (rows without a channel axis) or 2 (rows (2, ...))."""
        return self.config.channels

    @cached_property
    def valid_lengths(self) -> np.ndarray:
        """int64 (rows,): units of real audio at the start of each row along its last axis (samples or
        frames); the rest is zero padding (for log-mels: the front end's floor)."""
        stored = np.minimum(self.n_samples, self.config.length)
        frontend = self.config.frontend
        if frontend is None:
            return stored
        return np.array([frontend.n_frames(int(n)) for n in stored], dtype=np.int64)

    def rows(self, split: str) -> np.ndarray:
        """int64 indices of the usable (stored, not failed) rows of ``split``."""
        rows = np.flatnonzero((self.splits == split) & self.done)
        if len(rows) == 0:
            present = sorted(set(self.splits[self.done].tolist()))
            raise MdeError(
                f"{self.directory}: no stored clips in split {split!r}; "
                f"splits with clips: {', '.join(present) or 'none'}"
            )
        return rows

    def ids(self, split: str) -> list[str]:
        """The track ids (file stems) of :meth:`rows` of ``split``, in the same order."""
        return [self._ids[row] for row in self.rows(split)]


def _is_int_at_least(value: object, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _reopen(directory: str, allow_incomplete: bool) -> FeatureCache:
    return FeatureCache.open(Path(directory), allow_incomplete=allow_incomplete)


def _report(on_progress: Optional[Callable[[str, bool], None]], path: str, ok: bool) -> None:
    if on_progress is not None:
        on_progress(path, ok)


def _track_id(path: str) -> str:
    """A clip's id: its file's stem (MSD audio files are named by track id)."""
    return Path(path).stem


def _index_of(dataset: TaggingDataset, config: CacheConfig) -> dict[str, Any]:
    """The index of a cache of ``dataset``: format, config and one row per clip, splits in dataset order."""
    rows = []
    for split, clips in dataset.splits.items():
        for clip in clips:
            labels = np.asarray(clip.labels, dtype=np.float32)
            if labels.shape != (len(config.tag_names),):
                raise MdeError(
                    f"{clip.path}: labels have shape {labels.shape}, expected ({len(config.tag_names)},) for the tags"
                )
            path = os.fspath(clip.path)
            rows.append({"path": path, "id": _track_id(path), "split": split, "labels": labels.tolist()})
    if not rows:
        raise MdeError(f"{dataset.name}: the dataset has no clips")
    return {"format": _FORMAT, "config": config.to_dict(), "rows": rows}


def _current(index: dict[str, Any]) -> dict[str, Any]:
    """``index`` as this version writes it: its config with the settings it lacks at their defaults, and
    for format /1 the rows' ids added; an index of another format comes back unchanged."""
    if index["format"] not in (_FORMAT, _FORMAT_1):
        return index
    rows = index["rows"]
    if index["format"] == _FORMAT_1:
        rows = [{**row, "id": _track_id(row["path"])} for row in rows]
    return {"format": _FORMAT, "config": CacheConfig.from_dict(index["config"]).to_dict(), "rows": rows}


def _claim(out_dir: Path, index: dict[str, Any], config: CacheConfig, overwrite: bool) -> None:
    """Make ``out_dir`` hold a cache for ``index``: create it, or check that the one there matches (and
    bring its index to the current format).

    Removes failed.json, so that an interrupted run never leaves the cache looking complete; a fresh
    cache also starts a fresh log.
    """
    existing = _read_index(out_dir)
    if existing is not None and not overwrite:
        mismatch = _mismatch(_current(existing), index)
        if mismatch:
            raise MdeError(
                f"{out_dir} holds a feature cache with other settings ({mismatch}); "
                "use overwrite (mde prepare --overwrite) or another folder"
            )
        _check_arrays(out_dir, config, len(index["rows"]))
        (out_dir / _FAILED).unlink(missing_ok=True)
        if existing != index:  # an older index, upgraded
            _write_json(out_dir / _INDEX, index)
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in (_INDEX, _FAILED, _LOG):
        (out_dir / name).unlink(missing_ok=True)
    n = len(index["rows"])
    for name, dtype, shape in (
        (_FEATURES, config.dtype, (n, *config.row_shape)),
        (_N_SAMPLES, np.int64, (n,)),
        (_DONE, np.bool_, (n,)),
    ):
        open_memmap(out_dir / name, mode="w+", dtype=dtype, shape=shape).flush()  # zero-filled (sparse)
    _write_json(out_dir / _INDEX, index)


def _mismatch(cached: dict[str, Any], wanted: dict[str, Any]) -> str:
    """One phrase naming how ``cached`` differs from ``wanted`` (both indexes), or '' when they match."""
    if cached.get("format") != wanted["format"]:
        return f"format {cached.get('format')!r}, not {wanted['format']!r}"
    old, new = cached["config"], wanted["config"]
    for key in new:
        if old.get(key) != new[key]:
            if isinstance(new[key], (dict, list)) or isinstance(old.get(key), (dict, list)):
                return f"{key} differs"
            return f"{key} {old.get(key)!r} in the cache, {new[key]!r} asked"
    old_rows, new_rows = cached["rows"], wanted["rows"]
    if len(old_rows) != len(new_rows):
        return f"{len(old_rows)} clips in the cache, {len(new_rows)} asked"
    for i, (a, b) in enumerate(zip(old_rows, new_rows)):
        if a != b:
            what = next(key for key in b if a.get(key) != b[key])
            return f"row {i} ({b['path']}): {what} differs"
    return ""


def _check_arrays(directory: Path, config: CacheConfig, n_rows: int) -> None:
    """MdeError unless the cache's arrays have the shapes and dtypes its index announces."""
    expected = (
        (_FEATURES, np.dtype(config.dtype), (n_rows, *config.row_shape)),
        (_N_SAMPLES, np.dtype(np.int64), (n_rows,)),
        (_DONE, np.dtype(np.bool_), (n_rows,)),
    )
    for name, dtype, shape in expected:
        try:
            array = np.load(directory / name, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise MdeError(f"{directory / name}: unreadable ({exc}); prepare the cache again with overwrite") from None
        if array.dtype != dtype or array.shape != shape:
            raise MdeError(
                f"{directory / name}: holds {array.dtype} {array.shape}, the index says {dtype} {shape}; "
                "prepare the cache again with overwrite"
            )


class _PassLog:
    """One pass's lines of prepare.log.tsv; each batch of lines is flushed as it is written."""

    def __init__(self, file: TextIO, sample_rate: int) -> None:
        self._file = file
        self._sample_rate = sample_rate

    def write(self, lines: Iterable[tuple[int, str, str, str, Optional[int]]]) -> None:
        """Append (row, path, status, reason, decoded length in samples or None) lines, then flush."""
        for row, path, status, reason, n_samples in lines:
            seconds = "" if n_samples is None else f"{n_samples / self._sample_rate:.3f}"
            self._file.write("\t".join(_log_field(text) for text in (str(row), path, status, reason, seconds)) + "\n")
        self._file.flush()


def _log_field(text: str) -> str:
    """``text`` with tabs and line breaks turned into spaces (one field of one line)."""
    return text.replace("\t", " ").replace("\r", " ").replace("\n", " ")


@contextmanager
def _open_log(directory: Path, sample_rate: int, n_rows: int, n_kept: int) -> Iterator[_PassLog]:
    """prepare.log.tsv in ``directory``, opened to append a pass: its header line is written first."""
    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with open(directory / _LOG, "a", encoding="utf-8") as file:
        file.write(f"# {when} pass over {n_rows} clips ({n_kept} kept, {n_rows - n_kept} to do): "
                   "row, path, status, reason, seconds\n")
        file.flush()
        yield _PassLog(file, sample_rate)


def _keep_stored(
    out_dir: Path, rows: list[dict[str, Any]], kept: np.ndarray, log: _PassLog,
    on_progress: Optional[Callable[[str, bool], None]],
) -> None:
    """Log and report the rows an earlier pass stored and this one keeps."""
    n_samples = np.load(out_dir / _N_SAMPLES)
    log.write((int(row), rows[row]["path"], "skipped", "stored by an earlier pass", int(n_samples[row]))
              for row in kept)
    for row in kept:
        _report(on_progress, rows[row]["path"], True)


def _fill(
    out_dir: Path, config: CacheConfig, rows: list[dict[str, Any]], pending: list[tuple[int, str]], workers: int,
    log: _PassLog, on_progress: Optional[Callable[[str, bool], None]], map_chunks: Optional[ChunkMap],
) -> list[FailedClip]:
    """Store the ``pending`` (row, path) clips over ``workers`` processes (or ``map_chunks``), logging and
    reporting each batch as it comes back; the clips that failed, by row."""
    failed: list[FailedClip] = []

    def record(outcomes: list[_Outcome]) -> None:
        log.write((o.row, rows[o.row]["path"], "ok" if o.reason is None else "failed", o.reason or "",
                   o.n_samples) for o in outcomes)
        for row, reason, _ in outcomes:
            if reason is not None:
                failed.append(FailedClip(row, rows[row]["path"], rows[row]["split"], reason))
            _report(on_progress, rows[row]["path"], reason is None)

    jobs = list(_jobs(out_dir, config, pending, workers))
    if map_chunks is None:
        with _chunk_runner(workers) as run:
            for outcomes in run(jobs):
                record(outcomes)
    else:
        returned: set[int] = set()
        try:
            for position, outcomes in map_chunks(_fill_rows, jobs):
                returned.add(position)
                record(outcomes)
        except MdeError as stop:  # the runner lost jobs past its retries: their clips fail, the rest stays
            for position, (_, _, clips) in enumerate(jobs):
                if position not in returned:
                    record([_Outcome(row, f"lost: {stop}", None) for row, _ in clips])
    return sorted(failed, key=lambda clip: clip.row)


def _jobs(out_dir: Path, config: CacheConfig, pending: list[tuple[int, str]], workers: int) -> Iterator[_Job]:
    """Pending (row, path) pairs in chunks: about 8 per worker, at most _MAX_CHUNK clips each."""
    size = max(1, min(_MAX_CHUNK, math.ceil(len(pending) / (8 * workers))))
    settings = config.to_dict()
    for start in range(0, len(pending), size):
        yield os.fspath(out_dir), settings, pending[start : start + size]


@contextmanager
def _chunk_runner(workers: int) -> Iterator[Callable[[Iterable[_Job]], Iterable[list[_Outcome]]]]:
    """A map of :func:`_fill_rows` over jobs: in this process, or unordered over a spawn pool of ``workers``."""
    if workers == 1:
        yield lambda jobs: map(_fill_rows, jobs)
        return
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield lambda jobs: pool.imap_unordered(_fill_rows, jobs)


def _fill_rows(job: _Job) -> list[_Outcome]:
    """Store the clips of one job: mark their rows not done (flushed), write and flush the rows, then mark
    the stored ones done and flush that. A clip that fails keeps its row not done."""
    directory, settings, clips = job
    config = CacheConfig.from_dict(settings)
    folder = Path(directory)
    done = open_memmap(folder / _DONE, mode="r+")
    done[[row for row, _ in clips]] = False  # a row recomputed (skip off) is not done until written again
    done.flush()
    features = open_memmap(folder / _FEATURES, mode="r+")
    n_samples = open_memmap(folder / _N_SAMPLES, mode="r+")
    encode = _encoder(config)
    outcomes = [_store_clip(config, encode, row, path, features, n_samples) for row, path in clips]
    features.flush()
    n_samples.flush()
    done[[outcome.row for outcome in outcomes if outcome.reason is None]] = True
    done.flush()
    return outcomes


def _store_clip(
    config: CacheConfig, encode: _Encoder, row: int, path: str, features: np.ndarray, n_samples: np.ndarray
) -> _Outcome:
    """Decode the clip at ``path``, fit it to the window and write its row; or say why not."""
    try:
        signal = _decode(path, config)
    except MdeError as exc:
        return _Outcome(row, str(exc), None)
    n = signal.shape[-1]
    misfit = _misfit(path, n, config)
    if misfit is not None:
        return _Outcome(row, misfit, n)
    features[row] = encode(fit_window(signal, config.length, config.offset_samples), n)
    n_samples[row] = n
    return _Outcome(row, None, n)


def _decode(path: str, config: CacheConfig) -> np.ndarray:
    """float32 samples at config.sample_rate: (samples,) mono, or (channels, samples) for stereo."""
    samples, _ = load_audio(path, sr=config.sample_rate, channels=config.channels)
    return samples if config.channels == 1 else np.ascontiguousarray(samples.T)


def _misfit(path: str, n: int, config: CacheConfig) -> Optional[str]:
    """Why a clip of ``n`` samples cannot be stored: longer than the window with crop off, or shorter with
    pad off; None when it fits."""
    if n > config.length and not config.crop:
        clip, window = _durations(n, config.length, config.sample_rate)
        return f"{path}: {clip}, longer than the {window} window (crop is off)"
    if n < config.length and not config.pad:
        clip, window = _durations(n, config.length, config.sample_rate)
        return f"{path}: {clip}, shorter than the {window} window (pad is off)"
    return None


def _durations(n: int, length: int, sample_rate: int) -> tuple[str, str]:
    """Two different lengths in samples as texts that differ: seconds with 1 or 3 decimals, else samples."""
    for decimals in (1, 3):
        clip, window = f"{n / sample_rate:.{decimals}f} s", f"{length / sample_rate:.{decimals}f} s"
        if clip != window:
            return clip, window
    return f"{n} samples", f"{length}-sample"


def _encoder(config: CacheConfig) -> _Encoder:
    """The function from a fitted waveform and its decoded length to the stored row."""
    if config.frontend is None:
        return lambda window, n: window
    return _LogMel(config.frontend, config.length)


class _LogMel:
    """The log-mel rows of fitted waveforms ((length,) or (channels, length) samples): the front end of
    the waveform, the frames past a padded clip's end set to the front end's floor for that clip."""

    def __init__(self, frontend: FrontendConfig, length: int) -> None:
        self._frontend = frontend
        self._mel = MelSpectrogram.from_config(frontend)
        self._frames = frontend.n_frames(length)

    def __call__(self, window: np.ndarray, n: int) -> np.ndarray:
        """window: the fitted waveform; n: the clip's decoded length in samples (real audio: min(n, length))."""
        if n >= window.shape[-1]:
            return self._logmel(window)
        # Zeros after the window, enough for the last frame to be all silence: that frame is the floor.
        tail = np.zeros((*window.shape[:-1], self._frontend.n_fft + self._frontend.hop_length), np.float32)
        extended = self._logmel(np.concatenate([window, tail], axis=-1))
        row = extended[..., : self._frames]
        row[..., self._frontend.n_frames(n) :] = extended[..., -1:]
        return row

    def _logmel(self, signal: np.ndarray) -> np.ndarray:
        """(n_mels, frames) of (samples,), or (channels, n_mels, frames) of (channels, samples), the channels
        sharing one peak."""
        return self._mel(signal) if signal.ndim == 1 else self._mel(signal[None])[0]


def _check_encodable(config: CacheConfig) -> None:
    """MdeError unless the front end takes a clip of ``config.length`` samples (tried once on silence)."""
    try:
        _encoder(config)(np.zeros(config.waveform_shape, np.float32), config.length)
    except MdeError as exc:
        raise MdeError(f"length {config.length} samples does not suit the front end: {exc}") from None


def _read_index(directory: Path) -> Optional[dict[str, Any]]:
    """The cache index in ``directory``, or None if there is none; MdeError if it is not a cache index."""
    index = _read_json(directory / _INDEX)
    if index is not None and not (isinstance(index, dict) and {"format", "config", "rows"} <= index.keys()):
        raise MdeError(f"{directory / _INDEX}: not a feature cache index")
    return index


def _read_json(path: Path) -> Any:
    """Parsed JSON of ``path``, or None when it does not exist."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise MdeError(f"{path}: not valid JSON ({exc})") from None


def _write_json(path: Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data), encoding="utf-8")
