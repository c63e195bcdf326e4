"""One file's vectors as an index stores them, and the staging area that keeps them until an update commits.

A file's frames (the chosen layer of every frame) become unit rows; its clip vector is the mean of the
frames before normalising, normalised; its tags are the mean over frames of the tag probabilities. The
same rules turn a query's audio into query vectors (:func:`clip_vector`, :func:`unit_rows`).

Staging: each file embedded by an update is written at once to ``<index>/staging/<key>.npz`` (atomically;
key: SHA-256 of the path), recording the file's size and mtime and how it was embedded. A killed update
leaves them there; the next one reuses an entry only when the file and the embedding settings are unchanged.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from mde.atomic import atomic_path
from mde.runtime.extractor import EmbeddingResult


@dataclass(frozen=True)
class FileVectors:
    """An audio file's entry in an index.

    path: the file, absolute with links resolved. size: bytes; mtime_ns: modification time (ns) when it
    was embedded. duration: seconds of audio, before any padding.
    clip: (dim,) float32 unit vector. frames: (n_frames, dim) float32 unit rows. times: (n_frames,)
    float64, each frame's start in seconds. tags: (n_tags,) float32 mean tag probabilities, or None for
    a model without tags.
    """

    path: str
    size: int
    mtime_ns: int
    duration: float
    clip: np.ndarray
    frames: np.ndarray
    times: np.ndarray
    tags: Optional[np.ndarray]


def unit_rows(x: np.ndarray) -> np.ndarray:
    """float32 copy of ``x`` (..., dim) with every row scaled to unit L2 norm (all-zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    unit: np.ndarray = (x / np.maximum(norms, np.finfo(np.float32).tiny)).astype(np.float32)
    return unit


def clip_vector(frames: np.ndarray) -> np.ndarray:
    """The clip vector of (n_frames, dim) raw frame vectors: their mean, normalised; float32 (dim,)."""
    return unit_rows(np.asarray(frames, dtype=np.float64).mean(axis=0))


def file_vectors(result: EmbeddingResult, path: str, size: int, mtime_ns: int) -> FileVectors:
    """The index entry of one embedded file."""
    return FileVectors(
        path=path, size=size, mtime_ns=mtime_ns, duration=result.duration, clip=clip_vector(result.embedding),
        frames=unit_rows(result.embedding), times=np.asarray(result.timestamps, dtype=np.float64),
        tags=result.mean_tags().astype(np.float32) if result.tags is not None else None,
    )


def staged_path(staging: Path, path: str) -> Path:
    """Where the staging entry of the file ``path`` is kept."""
    return staging / f"{hashlib.sha256(path.encode()).hexdigest()[:40]}.npz"


def save_staged(staging: Path, vectors: FileVectors, made_with: str) -> None:
    """Keep ``vectors`` in the staging folder (atomically), recording ``made_with`` (the embedding settings)."""
    tags = vectors.tags if vectors.tags is not None else np.zeros(0, np.float32)
    with atomic_path(staged_path(staging, vectors.path)) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, path=np.array(vectors.path), size=np.array(vectors.size), made_with=np.array(made_with),
                 mtime_ns=np.array(vectors.mtime_ns), duration=np.array(vectors.duration), clip=vectors.clip,
                 frames=vectors.frames, times=vectors.times, tags=tags, has_tags=np.array(vectors.tags is not None))


def load_staged(staging: Path, path: str, size: int, mtime_ns: int, made_with: str) -> Optional[FileVectors]:
    """The staging entry of ``path`` if there is one for this size, mtime and ``made_with``; None otherwise
    (also for an entry that cannot be read, which is then embedded again)."""
    try:
        with np.load(staged_path(staging, path), allow_pickle=False) as stored:
            if (str(stored["path"]), int(stored["size"]), int(stored["mtime_ns"]), str(stored["made_with"])) != (
                    path, size, mtime_ns, made_with):
                return None
            return FileVectors(
                path=path, size=size, mtime_ns=mtime_ns, duration=float(stored["duration"]),
                clip=stored["clip"].astype(np.float32), frames=stored["frames"].astype(np.float32),
                times=stored["times"].astype(np.float64),
                tags=stored["tags"].astype(np.float32) if bool(stored["has_tags"]) else None,
            )
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        return None
