"""The index folder on disk: its layout, its arrays, and replacing one version by the next atomically.

::

    INDEX/
      manifest.json          the commit point: which data folder is current, and how it was made
                             (mde.search.manifest); written last, atomically
      data-000003/           the current version's data (never changed once written)
        files.parquet        a row per file: path (absolute), size (bytes), mtime_ns, duration (s), n_frames
        clips.npy            (n_files, dim) float32 clip vectors, unit norm, in the rows' order
        clip_tags.npy        (n_files, n_tags) float32 mean tag probabilities (only for models with tags)
        frames.npy           (n_frames, dim) float32 frame vectors, unit norm: each file's frames in turn
        frame_times.npy      (n_frames,) float64 start of each frame in seconds
        clips.faiss          the faiss index of clips.npy (kind in the manifest; rebuilt if missing)
        frames.faiss         the faiss index of frames.npy
      staging/               files embedded by an update that has not committed yet (mde.search.vectors)
      .lock                  held (flock) by the update in progress

An update writes the next version into ``.data-000004.building``, flushes it to disk, renames it to
``data-000004``, then replaces ``manifest.json``; only then is ``data-000003`` removed. A reader sees the old
manifest and its data or the new ones, never a part: a killed update leaves a folder that no manifest
names, which the next update removes (:func:`remove_leftovers`).
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from mde.atomic import PART_SUFFIX, remove_stale_parts, stale_parts
from mde.errors import MdeError
from mde.search import faiss_kinds
from mde.search.manifest import MANIFEST, Manifest
from mde.search.vectors import FileVectors

STAGING = "staging"
LOCK = ".lock"
FILES = "files.parquet"
CLIPS, CLIP_TAGS, FRAMES, FRAME_TIMES = "clips.npy", "clip_tags.npy", "frames.npy", "frame_times.npy"
CLIP_INDEX, FRAME_INDEX = "clips.faiss", "frames.faiss"
_BUILDING = ".building"
_DATA = re.compile(r"data-\d{6,}")
_UNFINISHED = re.compile(rf"\.data-\d{{6,}}{re.escape(_BUILDING)}")


@dataclass(frozen=True)
class IndexArrays:
    """The stored rows of one version: per file (in row order) and per frame (each file's frames in turn).

    paths: absolute file paths. sizes (bytes), mtimes_ns, n_frames: int64 (n_files,); durations: float64
    seconds. clips: (n_files, dim) float32 unit rows; tags: (n_files, n_tags) float32 or None.
    frames: (total frames, dim) float32 unit rows; frame_times: float64 seconds (start of each frame).
    """

    paths: list[str]
    sizes: np.ndarray
    mtimes_ns: np.ndarray
    durations: np.ndarray
    n_frames: np.ndarray
    clips: np.ndarray
    tags: Optional[np.ndarray]
    frames: np.ndarray
    frame_times: np.ndarray

    @property
    def frame_offsets(self) -> np.ndarray:
        """int64 (n_files + 1,): file i's frames are rows frame_offsets[i]:frame_offsets[i + 1]."""
        return np.concatenate([[0], np.cumsum(self.n_frames)]).astype(np.int64)

    def file_of_frames(self, rows: np.ndarray) -> np.ndarray:
        """The file row of each frame row in ``rows`` (int64 array of any shape)."""
        found: np.ndarray = np.searchsorted(self.frame_offsets, rows, side="right") - 1
        return found

    def kept(self, keep: np.ndarray) -> IndexArrays:
        """These arrays with only the files where the boolean ``keep`` (n_files,) is True."""
        frame_keep = np.repeat(keep, self.n_frames)
        return IndexArrays(
            paths=[p for p, k in zip(self.paths, keep) if k], sizes=self.sizes[keep], mtimes_ns=self.mtimes_ns[keep],
            durations=self.durations[keep], n_frames=self.n_frames[keep], clips=self.clips[keep],
            tags=None if self.tags is None else self.tags[keep], frames=self.frames[frame_keep],
            frame_times=self.frame_times[frame_keep],
        )

    def extended(self, added: list[FileVectors]) -> IndexArrays:
        """These arrays followed by the ``added`` files."""
        def stack(old: np.ndarray, new: list[np.ndarray]) -> np.ndarray:
            return np.concatenate([old, *new]) if new else np.asarray(old)

        return IndexArrays(
            paths=self.paths + [v.path for v in added],
            sizes=stack(self.sizes, [np.array([v.size], np.int64) for v in added]),
            mtimes_ns=stack(self.mtimes_ns, [np.array([v.mtime_ns], np.int64) for v in added]),
            durations=stack(self.durations, [np.array([v.duration], np.float64) for v in added]),
            n_frames=stack(self.n_frames, [np.array([len(v.frames)], np.int64) for v in added]),
            clips=stack(self.clips, [v.clip[None] for v in added]),
            tags=None if self.tags is None else stack(self.tags, [v.tags[None] for v in added if v.tags is not None]),
            frames=stack(self.frames, [v.frames for v in added]),
            frame_times=stack(self.frame_times, [v.times for v in added]),
        )

    @classmethod
    def empty(cls, dim: int, n_tags: Optional[int]) -> IndexArrays:
        """No files, vectors of width ``dim``; tags of width ``n_tags`` (None: the model has no tags)."""
        none = np.zeros(0, np.int64)
        return cls([], none, none, np.zeros(0), none, np.zeros((0, dim), np.float32),
                   None if n_tags is None else np.zeros((0, n_tags), np.float32),
                   np.zeros((0, dim), np.float32), np.zeros(0))


def check_index_folder(folder: Path) -> None:
    """MdeError (one line) unless ``folder`` is absent, empty or holds only what an index holds: an
    update never writes into (or cleans up) a folder of other files."""
    if folder.exists() and not folder.is_dir():
        raise MdeError(f"{folder} is a file, not an index folder")
    if not folder.is_dir():
        return
    parts = {path.name for path in stale_parts([folder / MANIFEST])}
    for entry in folder.iterdir():
        if not (entry.name in (MANIFEST, STAGING, LOCK) or entry.name in parts or _DATA.fullmatch(entry.name)
                or _UNFINISHED.fullmatch(entry.name)):
            raise MdeError(f"{folder} is not an mde index (it holds {entry.name!r}); choose a new or empty folder")


@contextmanager
def writer_lock(folder: Path) -> Iterator[None]:
    """Hold the index's write lock for the block (the folder is created); one-line MdeError if another
    update holds it. The kernel releases it however the process ends."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise MdeError(f"another 'mde index' is updating {folder}; wait for it to finish") from None
            raise
        yield


def remove_leftovers(folder: Path, manifest: Optional[Manifest]) -> None:
    """Remove what killed updates left: data folders that the manifest does not name, unfinished
    ``.building`` folders and temporary files. Call only while holding :func:`writer_lock`."""
    current = manifest.data if manifest else None
    for entry in folder.iterdir():
        if (_DATA.fullmatch(entry.name) and entry.name != current) or _UNFINISHED.fullmatch(entry.name):
            shutil.rmtree(entry)
    remove_stale_parts([folder / MANIFEST])
    staging = folder / STAGING
    if staging.is_dir():
        for entry in staging.glob(f".*{PART_SUFFIX}"):
            entry.unlink()


def read_arrays(folder: Path, manifest: Manifest) -> IndexArrays:
    """The arrays of the version ``manifest`` names (memory-mapped; FileNotFoundError if its folder is gone)."""
    import pyarrow.parquet as pq

    data = folder / manifest.data
    table = pq.read_table(data / FILES).to_pydict()

    def load(name: str) -> np.ndarray:
        array: np.ndarray = np.load(data / name, mmap_mode="r", allow_pickle=False)
        return array

    return IndexArrays(
        paths=[str(p) for p in table["path"]], sizes=np.asarray(table["size"], np.int64),
        mtimes_ns=np.asarray(table["mtime_ns"], np.int64), durations=np.asarray(table["duration"], np.float64),
        n_frames=np.asarray(table["n_frames"], np.int64), clips=load(CLIPS),
        tags=load(CLIP_TAGS) if manifest.space.tag_names else None, frames=load(FRAMES),
        frame_times=load(FRAME_TIMES),
    )


def write_version(folder: Path, manifest: Manifest, arrays: IndexArrays, indexes: Mapping[str, Any],
                  previous: Optional[Manifest]) -> Manifest:
    """Make ``manifest`` and ``arrays`` (with the faiss ``indexes``, file name -> index) the index's current
    version, atomically (see the module docstring); returns the manifest as written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    building = folder / f".{manifest.data}{_BUILDING}"
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir()
    table = pa.table({"path": pa.array(arrays.paths, pa.string()), "size": arrays.sizes,
                      "mtime_ns": arrays.mtimes_ns, "duration": arrays.durations, "n_frames": arrays.n_frames})
    pq.write_table(table, building / FILES)
    named = {CLIPS: arrays.clips, FRAMES: arrays.frames, FRAME_TIMES: arrays.frame_times}
    if arrays.tags is not None:
        named[CLIP_TAGS] = arrays.tags
    for name, array in named.items():
        np.save(building / name, np.ascontiguousarray(array), allow_pickle=False)
    for name, index in indexes.items():
        faiss_kinds.load_faiss().write_index(index, str(building / name))
    for entry in building.iterdir():
        _fsync(entry)
    _fsync(building)
    os.rename(building, folder / manifest.data)
    written = manifest.write(folder)
    if previous is not None and previous.data != manifest.data:
        shutil.rmtree(folder / previous.data, ignore_errors=True)
    return written


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
