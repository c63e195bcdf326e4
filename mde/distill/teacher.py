"""The teacher's outputs over each clip, computed once and cached: what students learn from.

The teacher runs at its native window (T seconds) on a grid of windows starting every ``hop`` seconds
(default T / 2), fully inside the clip (a clip shorter than T: one zero-padded window). For each window
the cache keeps the tag probabilities and the embedding. :mod:`mde.distill.spans` turns rows of that
grid into the target of a student window of any length.

The cache is a folder: ``teacher.json`` (the teacher's name, file size and SHA-256 prefix, window and hop:
a cache made by another teacher or hop is refused) and one ``<sha1 of the audio path>.npz`` per clip
(``.failed``, holding the error, for a file that cannot be decoded), written atomically, so an
interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from mde.atomic import atomic_path, write_bytes_atomic
from mde.errors import AudioError, MdeError

TEACHER_FILE = "teacher.json"
FAILED_SUFFIX = ".failed"
"""Beside a clip's key: the decoding error that kept the teacher from it."""


@dataclass(frozen=True)
class TeacherGrid:
    """The teacher's outputs over one clip.

    starts: (windows,) float64 window starts in seconds; window: the teacher's window in seconds.
    tags: float32 (windows, n_tags) probabilities; embedding: float32 (windows, dim).
    duration: the clip's length in seconds.
    """

    starts: np.ndarray
    window: float
    tags: np.ndarray
    embedding: np.ndarray
    duration: float

    def __len__(self) -> int:
        return len(self.starts)


@dataclass(frozen=True)
class TeacherCache:
    """A folder of teacher grids for one teacher at one hop (see the module docstring)."""

    directory: Path
    teacher: str
    window: float
    hop: float
    tag_names: tuple[str, ...]

    def path_for(self, audio: str | os.PathLike[str]) -> Path:
        key = hashlib.sha1(os.fspath(Path(audio).resolve()).encode()).hexdigest()
        return self.directory / f"{key}.npz"

    def has(self, audio: str | os.PathLike[str]) -> bool:
        """Whether the teacher's outputs of ``audio`` are cached."""
        return self.path_for(audio).exists()

    def refusal(self, audio: str | os.PathLike[str]) -> Optional[str]:
        """The one-line decoding error the teacher met on ``audio`` (None when it did not fail)."""
        failed = self.path_for(audio).with_suffix(FAILED_SUFFIX)
        return failed.read_text() if failed.exists() else None

    def refuse(self, audio: str | os.PathLike[str], message: str) -> None:
        write_bytes_atomic(self.path_for(audio).with_suffix(FAILED_SUFFIX), message.encode())

    def load(self, audio: str | os.PathLike[str]) -> TeacherGrid:
        """The grid of ``audio``; MdeError when it was not computed."""
        path = self.path_for(audio)
        if not path.exists():
            raise MdeError(f"{audio}: no teacher outputs in {self.directory} (run the teacher first)")
        with np.load(path) as data:
            return TeacherGrid(data["starts"], self.window, data["tags"], data["embedding"], float(data["duration"]))

    def save(self, audio: str | os.PathLike[str], grid: TeacherGrid) -> None:
        with atomic_path(self.path_for(audio)) as tmp, open(tmp, "wb") as f:
            np.savez(f, starts=grid.starts, tags=grid.tags, embedding=grid.embedding, duration=grid.duration)


def teacher_fingerprint(path: Path) -> str:
    """The first 16 hex digits of the SHA-256 of a model file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def open_cache(directory: Path, teacher_name: str, teacher_file: Path, window: float, hop: float,
               tag_names: Sequence[str]) -> TeacherCache:
    """The cache folder for this teacher and hop, created when new; MdeError when it holds another's."""
    description = {"teacher": teacher_name, "sha256": teacher_fingerprint(teacher_file), "window": window,
                   "hop": hop, "tag_names": list(tag_names)}
    marker = directory / TEACHER_FILE
    if marker.exists():
        held = json.loads(marker.read_text())
        if {k: held.get(k) for k in description} != description:
            raise MdeError(f"{directory} holds the outputs of {held.get('teacher')} at hop {held.get('hop')} s, "
                           f"not of {teacher_name} at hop {hop:g} s; give another --cache")
    else:
        write_bytes_atomic(marker, json.dumps(description, indent=1).encode())
    return TeacherCache(directory, teacher_name, window, hop, tuple(tag_names))


def run_teacher(model, audio: Path, hop: float) -> TeacherGrid:
    """The teacher ``model`` (a runtime :class:`~mde.runtime.extractor.Model` with tags) over ``audio``."""
    result = model.embed(audio, hop=hop)
    if result.tags is None:
        raise MdeError(f"the teacher {model.name} has no tag output")
    window = model.info.window_seconds
    return TeacherGrid(np.asarray(result.timestamps, np.float64), window, result.tags.astype(np.float32),
                       result.embedding.astype(np.float32), float(result.duration))


def fill_cache(cache: TeacherCache, model, paths: Sequence[Path],
               on_progress: Optional[Callable[[int, int], None]] = None) -> dict[Path, str]:
    """Run the teacher over every path not yet cached. A file that cannot be decoded is recorded as
    refused (with its one-line error, not retried by a later fill). Returns the refused paths and their
    errors, this fill's and earlier ones'. on_progress(done, total) counts every path."""
    refused: dict[Path, str] = {}
    for done, path in enumerate(paths, 1):
        earlier = cache.refusal(path)
        if earlier is not None:
            refused[path] = earlier
        elif not cache.has(path):
            try:
                cache.save(path, run_teacher(model, path, cache.hop))
            except AudioError as error:
                refused[path] = str(error)
                cache.refuse(path, str(error))
        if on_progress:
            on_progress(done, len(paths))
    return refused
