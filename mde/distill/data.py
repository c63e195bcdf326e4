"""What a distillation run reads: unlabelled audio split three ways, and student windows with teacher targets.

The audio is a manifest CSV (its ``path`` and ``split`` columns; tags are ignored: the teacher labels
the audio) or a folder, whose files are split by a hash of their path relative to the folder (80 % train,
10 % valid, 10 % test: a file keeps its split when others are added). Clips carry the teacher's tag
vocabulary and zero labels: targets come per window from the teacher cache (:mod:`mde.distill.teacher`).

Randomness: training crop k of clip i in epoch e picks its anchor with ``np.random.default_rng((seed,
e, i, k))``, so it depends on nothing else (not on workers or order).
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Union

import numpy as np
import torch
from torch.utils.data import Dataset

from mde.audio import find_audio_files
from mde.distill.spans import StudentSpans, evaluation_anchors, student_spans
from mde.distill.teacher import TeacherCache, TeacherGrid
from mde.errors import MdeError
from mde.trainer.data.dataset import SPLITS, Clip, TaggingDataset
from mde.trainer.data.loading import Source, split_clips

FOLDER_SPLIT = (("train", 0.8), ("valid", 0.1), ("test", 0.1))
"""How a folder's files are split (by a hash of the path relative to the folder)."""
MAX_AUTO_CROPS = 64
"""The most training crops per clip per epoch that crops_per_clip='auto' draws."""


def folder_split(relative: str) -> str:
    """The split of a file of a folder, from the SHA-1 of its path relative to the folder."""
    fraction = int(hashlib.sha1(relative.encode()).hexdigest()[:8], 16) / 16**8
    edge = 0.0
    for split, share in FOLDER_SPLIT:
        edge += share
        if fraction < edge:
            return split
    return FOLDER_SPLIT[-1][0]


def load_unlabelled(data: Path, tag_names: Sequence[str]) -> TaggingDataset:
    """The audio of a manifest CSV or a folder as a dataset with ``tag_names`` and zero labels.
    MdeError for a missing path, and for a train or valid split without a file."""
    data = Path(data)
    if data.is_file():
        from mde.trainer.data.manifest import read_manifest

        pairs = [(row.path, row.split) for row in read_manifest(data)]
    elif data.is_dir():
        pairs = [(path, folder_split(os.fspath(path.relative_to(data)))) for path in find_audio_files([data])]
    else:
        raise MdeError(f"{data}: no such folder or manifest")
    zeros = np.zeros(len(tag_names), np.float32)
    splits: dict[str, list[Clip]] = {name: [] for name in SPLITS}
    for path, split in pairs:
        splits[split].append(Clip(path, zeros))
    for split in ("train", "valid"):
        if not splits[split]:
            raise MdeError(f"{data}: no audio file in the {split} split ({sum(map(len, splits.values()))} files "
                           "in all); distillation needs train and valid audio")
    return TaggingDataset(data.name, tuple(tag_names), False, splits)


CropsPerClip = Union[int, str]


def distill_crops_for(spans: StudentSpans, window: float, crops_per_clip: CropsPerClip) -> int:
    """Training crops of a clip per epoch: ``crops_per_clip``, or for 'auto' its non-overlapping student
    windows (at least 1, at most MAX_AUTO_CROPS)."""
    if crops_per_clip == "auto":
        return int(min(MAX_AUTO_CROPS, len(evaluation_anchors(spans, window, MAX_AUTO_CROPS))))
    return int(crops_per_clip)


class _Targets:
    """The teacher grid and the student spans of each clip of a split (in the split's order)."""

    def __init__(self, clips, cache: TeacherCache, window: float) -> None:
        self.grids: list[TeacherGrid] = [cache.load(clips.path(i)) for i in range(len(clips))]
        self.spans = [student_spans(grid, window, cache.hop) for grid in self.grids]

    def of(self, i: int, anchors: np.ndarray, embedding: bool) -> np.ndarray:
        """float32 (anchors, n_tags [+ dim]): the tag targets, then (``embedding``) the embedding targets."""
        parts = [self.spans[i].targets(self.grids[i], anchors, "tags")]
        if embedding:
            parts.append(self.spans[i].targets(self.grids[i], anchors, "embedding"))
        return np.concatenate(parts, axis=1)


def _cut(signal: np.ndarray, starts_seconds: np.ndarray, sample_rate: int, length: int) -> np.ndarray:
    """float32 (windows, length) crops of ``signal`` at ``starts_seconds``, zero-padded past its end (only the
    crops are copied, never the whole signal)."""
    starts = np.round(starts_seconds * sample_rate).astype(np.int64)
    windows = np.zeros((len(starts), length), np.float32)
    for row, start in enumerate(starts):
        piece = signal[start : start + length]
        windows[row, : len(piece)] = piece
    return windows


class DistillCrops(Dataset):
    """Random student windows of the train split with their teacher targets: item j is (float32
    (input_length,), float32 (n_tags [+ dim],)); see the module docstring for the randomness.

    source: the run's audio source (see :mod:`mde.trainer.data.loading`); cache: the teacher's outputs of
    every clip; window: the student window in seconds (``input_length`` samples at ``sample_rate`` Hz);
    embedding: append the teacher's embedding target after the tags.
    """

    def __init__(self, source: Source, cache: TeacherCache, input_length: int, sample_rate: int, *, seed: int,
                 crops_per_clip: CropsPerClip, embedding: bool) -> None:
        self.clips = split_clips(source, "train", sample_rate, "waveform")
        self.window = input_length / sample_rate
        self.targets = _Targets(self.clips, cache, self.window)
        self.input_length, self.sample_rate = input_length, sample_rate
        self.seed, self.epoch, self.embedding = seed, 0, embedding
        self.counts = np.array([distill_crops_for(s, self.window, crops_per_clip) for s in self.targets.spans])
        self.ends = np.cumsum(self.counts)

    def set_epoch(self, epoch: int) -> None:
        """Draw this epoch's crops (set it before iterating)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return int(self.ends[-1]) if len(self.ends) else 0

    def __getitem__(self, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        i = int(np.searchsorted(self.ends, j, side="right"))
        k = j - int(self.ends[i] - self.counts[i])
        spans = self.targets.spans[i]
        anchor = np.array([np.random.default_rng((self.seed, self.epoch, i, k)).integers(0, len(spans))])
        crop = _cut(self.clips.signal(i), spans.starts[anchor], self.sample_rate, self.input_length)[0]
        return torch.from_numpy(crop), torch.from_numpy(self.targets.of(i, anchor, self.embedding)[0])


class DistillEvalClips(Dataset):
    """The evaluation windows of one split: item i is (float32 (windows, input_length), float32 (windows,
    n_tags [+ dim])) for clip i, at its :func:`~mde.distill.spans.evaluation_anchors` (at most
    ``most`` non-overlapping windows per clip)."""

    def __init__(self, source: Source, split: str, cache: TeacherCache, input_length: int, sample_rate: int, *,
                 most: int, embedding: bool) -> None:
        self.clips = split_clips(source, split, sample_rate, "waveform")
        window = input_length / sample_rate
        self.targets = _Targets(self.clips, cache, window)
        self.anchors = [evaluation_anchors(spans, window, most) for spans in self.targets.spans]
        self.input_length, self.sample_rate, self.embedding = input_length, sample_rate, embedding

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def nbytes(self) -> int:
        """Bytes of float32 all items' windows hold together."""
        return 4 * self.input_length * sum(len(a) for a in self.anchors)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        anchors = self.anchors[i]
        starts = self.targets.spans[i].starts[anchors]
        windows = _cut(self.clips.signal(i), starts, self.sample_rate, self.input_length)
        return torch.from_numpy(windows), torch.from_numpy(self.targets.of(i, anchors, self.embedding))


def mean_train_tags(cache: TeacherCache, paths: Sequence[str]) -> np.ndarray:
    """float32 (n_tags,): the teacher's mean tag probability over every window of these clips (the
    per-tag threshold of the agreement ROC-AUC, see :mod:`mde.distill.agreement`)."""
    total, count = None, 0
    for path in paths:
        tags = cache.load(path).tags
        total = tags.sum(axis=0) if total is None else total + tags.sum(axis=0)
        count += len(tags)
    if total is None or count == 0 or not math.isfinite(float(total.sum())):
        raise MdeError("no teacher windows to set the tag thresholds from")
    return (total / count).astype(np.float32)
