"""The feature cache: decode, resample and store every clip of a dataset once, in one memory-mapped archive.

``prepare_cache`` fills a folder (row i of every file is clip i of the index, splits in dataset order):

  index.json     {"format", "config": the :class:`CacheConfig`, "rows": [{path, split, labels}]};
                 written once, atomically, after the arrays are created and before any row is filled
  features.npy   float16 or float32: (rows, length) waveforms, or (rows, n_mels, frames) log-mels of them
  n_samples.npy  int64 (rows,): each clip's decoded length in samples at sample_rate, before crop or pad
  done.npy       bool (rows,): set once the row's features and n_samples are written and flushed
  failed.json    [{row, path, split, reason}]: clips that could not be decoded (skipped, excluded from
                 training); written last, at the end of a prepare pass, so its presence marks a finished pass

Every clip is stored as exactly ``length`` samples: a longer clip keeps its centre (the samples from
(n - length) // 2 on), a shorter one is zero-padded at the end and its true length is kept in n_samples.
A log-mel cache stores the C front end's log-mel of that fitted waveform.

Resuming: preparing again into the same folder with the same dataset and settings fills only the rows
not done (clips that failed before are tried again); other settings are refused unless ``overwrite``.
A prepare that is killed leaves no failed.json, so :meth:`FeatureCache.open` refuses it as incomplete.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Optional

import numpy as np
from numpy.lib.format import open_memmap

from mde.atomic import atomic_path
from mde.audio import MIN_SAMPLE_RATE, load_audio, pad_to_length
from mde.errors import MdeError
from mde.runtime.frontend import MelSpectrogram
from mde.runtime.frontend_config import FrontendConfig
from mde.trainer.data.dataset import TaggingDataset

FEATURES = ("waveform", "logmel")
DTYPES = ("float16", "float32")

_FORMAT = "mde-feature-cache/1"
_INDEX = "index.json"
_FEATURES = "features.npy"
_N_SAMPLES = "n_samples.npy"
_DONE = "done.npy"
_FAILED = "failed.json"

_MAX_CHUNK = 16
"""The most clips one task handles: its rows are flushed together and reported when it returns."""

_Job = tuple[str, dict[str, Any], list[tuple[int, str]]]
"""(cache folder, config dict, [(row, path)]): one task for a worker."""
_Outcome = tuple[int, Optional[str]]
"""(row, None) for a stored clip, (row, reason) for one that failed."""


@dataclass(frozen=True)
class CacheConfig:
    """What a cache holds. sample_rate in Hz; length in samples per clip; frontend only for 'logmel'."""

    dataset: str
    tag_names: tuple[str, ...]
    single_label: bool
    sample_rate: int
    length: int
    features: str
    dtype: str
    frontend: Optional[FrontendConfig] = None

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

    def _check_frontend(self, frontend: FrontendConfig) -> None:
        if frontend.sample_rate != self.sample_rate:
            raise MdeError(f"the front end runs at {frontend.sample_rate} Hz but clips are stored at "
                           f"{self.sample_rate} Hz")
        if self.dtype == "float16" and frontend.log is None:
            raise MdeError("float16 cannot hold a spectrogram without a log (it overflows); use dtype='float32'")

    @property
    def row_shape(self) -> tuple[int, ...]:
        """Shape of one stored clip: (length,) samples, or (n_mels, frames)."""
        if self.frontend is None:
            return (self.length,)
        return (self.frontend.n_mels, self.frontend.n_frames(self.length))

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset, "tag_names": list(self.tag_names), "single_label": self.single_label,
            "sample_rate": self.sample_rate, "length": self.length, "features": self.features,
            "dtype": self.dtype, "frontend": None if self.frontend is None else self.frontend.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CacheConfig:
        frontend = data.get("frontend")
        return cls(**{
            **data, "tag_names": tuple(data["tag_names"]),
            "frontend": None if frontend is None else FrontendConfig.from_dict(frontend),
        })


@dataclass(frozen=True)
class FailedClip:
    """A clip that could not be decoded; ``reason`` is the one-line error."""

    row: int
    path: str
    split: str
    reason: str


@dataclass(frozen=True)
class CacheReport:
    """What one prepare run did. done: clips stored now; skipped: stored by an earlier run; elapsed in seconds."""

    directory: Path
    done: int
    skipped: int
    failed: list[FailedClip] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def n_failed(self) -> int:
        return len(self.failed)


def fit_length(signal: np.ndarray, length: int) -> np.ndarray:
    """``signal`` (samples,) cut to its centre ``length`` samples, or zero-padded at the end to ``length``."""
    if len(signal) > length:
        start = (len(signal) - length) // 2
        return signal[start : start + length]
    return pad_to_length(signal, length)[0]


def prepare_cache(
    dataset: TaggingDataset,
    out_dir: Path,
    *,
    sample_rate: int,
    length: int,
    features: str = "waveform",
    frontend: Optional[FrontendConfig] = None,
    dtype: str = "float16",
    workers: int = 1,
    overwrite: bool = False,
    on_progress: Optional[Callable[[str, bool], None]] = None,
) -> CacheReport:
    """Decode every clip of ``dataset`` at ``sample_rate`` Hz, fit it to ``length`` samples and store it in ``out_dir``.

    features: 'waveform' stores the samples, 'logmel' the log-mel of ``frontend`` (required then,
    ignored for waveforms).
    dtype: 'float16' or 'float32'. workers: processes decoding in parallel (1: in this process).
    overwrite: start afresh over a cache with other settings instead of refusing it.
    on_progress(path, ok) is called once per clip: first for clips an earlier run stored, then as files
    finish (ok False for a file that failed), so it is called len(all clips) times in all.
    Files that cannot be decoded are listed in the report and failed.json and left out of training.
    With workers > 1 the pool spawns fresh interpreters, so a script calling this needs the
    ``if __name__ == "__main__":`` guard.
    Raises MdeError for bad settings, an empty dataset, or a folder holding a cache with other settings.
    """
    started = time.perf_counter()
    if not _is_int_at_least(workers, 1):
        raise MdeError(f"workers must be a positive integer, got {workers!r}")
    config = CacheConfig(
        dataset=dataset.name, tag_names=tuple(dataset.tag_names), single_label=dataset.single_label,
        sample_rate=sample_rate, length=length, features=features, dtype=dtype,
        frontend=frontend if features == "logmel" else None,
    )
    _check_encodable(config)
    out_dir = Path(out_dir)
    index = _index_of(dataset, config)
    rows = index["rows"]
    _claim(out_dir, index, config, overwrite)

    stored = np.load(out_dir / _DONE)
    for row in np.flatnonzero(stored).tolist():
        _report(on_progress, rows[row]["path"], True)
    pending = [(int(row), rows[row]["path"]) for row in np.flatnonzero(~stored)]
    failed: list[FailedClip] = []
    workers = min(workers, max(1, len(pending)))
    with _chunk_runner(workers) as run:
        for outcomes in run(_jobs(out_dir, config, pending, workers)):
            for row, reason in outcomes:
                if reason is not None:
                    failed.append(FailedClip(row, rows[row]["path"], rows[row]["split"], reason))
                _report(on_progress, rows[row]["path"], reason is None)
    failed.sort(key=lambda clip: clip.row)
    _write_json(out_dir / _FAILED, [vars(clip) for clip in failed])
    return CacheReport(
        directory=out_dir, done=len(pending) - len(failed), skipped=int(stored.sum()), failed=failed,
        elapsed=time.perf_counter() - started,
    )


class FeatureCache:
    """A prepared cache, opened read-only. Use :meth:`open`.

    config: the :class:`CacheConfig`. features: read-only memmap (rows, length) or (rows, n_mels, frames).
    labels: float32 (rows, n_tags). n_samples: int64 (rows,) decoded lengths in samples. paths, splits:
    per row. done: bool (rows,). failed: the clips the last prepare pass could not decode.
    """

    def __init__(self, directory: Path, index: dict[str, Any], allow_incomplete: bool) -> None:
        if index["format"] != _FORMAT:
            raise MdeError(f"{directory}: a feature cache of format {index['format']!r}, "
                           f"this version reads {_FORMAT!r}")
        self.directory = directory
        self.config = CacheConfig.from_dict(index["config"])
        rows = index["rows"]
        self.paths = tuple(row["path"] for row in rows)
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

    @cached_property
    def valid_lengths(self) -> np.ndarray:
        """int64 (rows,): units of real audio at the start of each row along its last axis (samples or
        frames); the rest is zero padding (for log-mels: frames computed over the padding)."""
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


def _is_int_at_least(value: object, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _reopen(directory: str, allow_incomplete: bool) -> FeatureCache:
    return FeatureCache.open(Path(directory), allow_incomplete=allow_incomplete)


def _report(on_progress: Optional[Callable[[str, bool], None]], path: str, ok: bool) -> None:
    if on_progress is not None:
        on_progress(path, ok)


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
            rows.append({"path": os.fspath(clip.path), "split": split, "labels": labels.tolist()})
    if not rows:
        raise MdeError(f"{dataset.name}: the dataset has no clips")
    return {"format": _FORMAT, "config": config.to_dict(), "rows": rows}


def _claim(out_dir: Path, index: dict[str, Any], config: CacheConfig, overwrite: bool) -> None:
    """Make ``out_dir`` hold a cache for ``index``: create it, or check that the one there matches.

    Removes failed.json, so that an interrupted run never leaves the cache looking complete.
    """
    existing = _read_index(out_dir)
    if existing is not None and not overwrite:
        mismatch = _mismatch(existing, index)
        if mismatch:
            raise MdeError(
                f"{out_dir} holds a feature cache with other settings ({mismatch}); "
                "use overwrite (mde prepare --overwrite) or another folder"
            )
        _check_arrays(out_dir, config, len(index["rows"]))
        (out_dir / _FAILED).unlink(missing_ok=True)
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in (_INDEX, _FAILED):
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
    """Decode, fit and store the clips of one job; flush the rows, then mark them done and flush that.

    A file that fails to decode is reported with its one-line error and its row stays not done.
    """
    directory, settings, clips = job
    config = CacheConfig.from_dict(settings)
    folder = Path(directory)
    encode = _encoder(config)
    features = open_memmap(folder / _FEATURES, mode="r+")
    n_samples = open_memmap(folder / _N_SAMPLES, mode="r+")
    outcomes: list[_Outcome] = []
    for row, path in clips:
        try:
            signal, _ = load_audio(path, sr=config.sample_rate)
        except MdeError as exc:
            outcomes.append((row, str(exc)))
            continue
        features[row] = encode(fit_length(signal, config.length))
        n_samples[row] = len(signal)
        outcomes.append((row, None))
    features.flush()
    n_samples.flush()
    done = open_memmap(folder / _DONE, mode="r+")
    done[[row for row, reason in outcomes if reason is None]] = True
    done.flush()
    return outcomes


def _encoder(config: CacheConfig) -> Callable[[np.ndarray], np.ndarray]:
    """The function from a fitted waveform (length,) to the stored row (before the dtype cast)."""
    if config.frontend is None:
        return lambda signal: signal
    return MelSpectrogram.from_config(config.frontend)


def _check_encodable(config: CacheConfig) -> None:
    """MdeError unless the front end takes a clip of ``config.length`` samples (tried once on silence)."""
    try:
        _encoder(config)(np.zeros(config.length, np.float32))
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
