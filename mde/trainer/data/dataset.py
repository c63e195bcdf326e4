"""The labelled-audio description every data source produces and every trainer part consumes.

A source (MagnaTagATune, GTZAN, a CSV manifest, a synthesized corpus) is read into a
:class:`TaggingDataset`: tag names, whether labels are single-label (one class per clip, e.g. genres),
and per split ('train', 'valid', 'test') a list of :class:`Clip` with an audio path and a label vector.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Clip:
    """One labelled audio file. ``labels`` is float32 (n_tags,): multi-hot, or one-hot when single-label;
    ``text`` is free text about it (a review, a description; '' for none), which text targets read."""

    path: Path
    labels: np.ndarray = field(compare=False)
    text: str = field(default="", compare=False)


@dataclass
class TaggingDataset:
    """Clips per split with their tag vocabulary."""

    name: str
    tag_names: tuple[str, ...]
    single_label: bool
    splits: dict[str, list[Clip]]

    @property
    def n_tags(self) -> int:
        return len(self.tag_names)

    def split(self, name: str) -> list[Clip]:
        """The clips of one split; an unknown or empty split is an error naming what exists."""
        from mde.errors import MdeError

        clips = self.splits.get(name)
        if not clips:
            present = ", ".join(f"{k} ({len(v)})" for k, v in self.splits.items() if v) or "none"
            raise MdeError(f"{self.name}: no clips in split {name!r}; splits with clips: {present}")
        return clips

    def label_matrix(self, split: str) -> np.ndarray:
        """float32 (clips, n_tags) labels of one split."""
        return np.stack([clip.labels for clip in self.split(split)]).astype(np.float32)

    def check_trainable(self) -> None:
        """MdeError (one line) unless training on this dataset can pick a best checkpoint.

        Single-label data needs at least two classes (one class is "learned" at accuracy 1.0). Multi-label
        data needs, in the train and the valid split, a tag that some clips have and others lack:
        without one the validation ROC-AUC is undefined for every tag and no epoch can be the best.
        """
        from mde.errors import MdeError

        if self.single_label:
            if self.n_tags < 2:
                raise MdeError(f"{self.name}: single-label training needs at least 2 classes, got "
                               f"{self.n_tags} ({', '.join(self.tag_names) or 'none'})")
            return
        for split in ("train", "valid"):
            labels = self.label_matrix(split)
            positives = labels.sum(axis=0)
            if not np.any((positives > 0) & (positives < len(labels))):
                raise MdeError(f"{self.name}: no tag is both present and absent among the {len(labels)} clips of the "
                               f"{split} split, so its ROC-AUC is undefined; give that split clips that differ in tags")
