"""From a clip's frame embeddings to one clip vector: the mean over frames, or the mean and the max.

A clip's frames are summarised once, when it is embedded, by :class:`ClipStats` (the per-dimension mean
and max over its frames); each pooling is then a cheap function of those two vectors, so the cache holds
the statistics and every pooling is read from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

POOLS = ("mean", "meanmax")
"""The poolings: 'mean' (dim,) is the frames' mean; 'meanmax' (2 * dim,) is the mean, then the max."""


@dataclass(frozen=True)
class ClipStats:
    """The per-dimension mean and max over one clip's frames (each float32 (dim,)) and its frame count."""

    mean: np.ndarray
    max: np.ndarray
    frames: int

    @classmethod
    def of_frames(cls, embedding: np.ndarray) -> ClipStats:
        """The statistics of frame embeddings (frames, dim) (wider outputs are flattened per frame)."""
        frames = np.asarray(embedding, dtype=np.float32).reshape(len(embedding), -1)
        if len(frames) == 0:
            raise ValueError("a clip without frames has no clip vector")
        return cls(frames.mean(axis=0), frames.max(axis=0), len(frames))


def pool(stats: ClipStats, mode: str) -> np.ndarray:
    """The clip vector of ``stats`` for pooling ``mode`` (one of POOLS): float32 (dim,) or (2 * dim,)."""
    if mode == "mean":
        return stats.mean
    if mode == "meanmax":
        return np.concatenate([stats.mean, stats.max])
    raise ValueError(f"unknown pooling {mode!r}; choose from {', '.join(POOLS)}")


def pool_matrix(stats: list[ClipStats], mode: str) -> np.ndarray:
    """float64 (clips, width): the pooled vector of each clip, in order."""
    return np.stack([pool(s, mode) for s in stats]).astype(np.float64)
