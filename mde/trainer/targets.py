"""Fitting the regression targets of Schindler et al.: TF-IDF then LSI over the training split.

:func:`fit_text_space` fits scikit-learn's ``TfidfVectorizer`` (smoothed idf, L2 rows, on the terms of
:func:`mde.runtime.text_space.terms`) and ``TruncatedSVD`` on the training documents only, and returns
the plain-array :class:`~mde.runtime.text_space.TextSpace` that maps any document, seen or new, into the
space. The seed's spaces have 340 topics; a smaller split gets fewer: at most one less than its terms and
no more than its documents (the rank of its TF-IDF matrix). :func:`fit_targets` does this for a run's
target kinds and gives every clip of the dataset its target vector (:class:`TrainingTargets`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer

from mde.errors import MdeError
from mde.runtime.text_space import TextSpace, terms
from mde.trainer.data.dataset import Clip, TaggingDataset

DEFAULT_TOPICS = 340


def fit_text_space(documents: Sequence[str | Sequence[str]], kind: str, n_topics: int = DEFAULT_TOPICS,
                   seed: int = 0) -> TextSpace:
    """The space fitted on ``documents`` (the training split's tag sets or texts, one per track):
    ``min(n_topics, n_terms - 1, n_documents)`` topics, the SVD seeded with ``seed``."""
    if n_topics < 1:
        raise MdeError(f"a text space needs at least one topic, got {n_topics}")
    vectorizer = TfidfVectorizer(analyzer=lambda document: terms(document, kind), lowercase=False)
    matrix = vectorizer.fit_transform(list(documents)) if len(documents) else None
    if matrix is None or matrix.shape[1] < 2:
        raise MdeError(f"the training split's {kind} hold {0 if matrix is None else matrix.shape[1]} distinct "
                       "terms: a text space needs at least 2")
    topics = min(n_topics, matrix.shape[1] - 1, matrix.shape[0])
    svd = TruncatedSVD(n_components=topics, random_state=seed).fit(matrix)
    vocabulary = tuple(vectorizer.get_feature_names_out())
    return TextSpace(kind, vocabulary, vectorizer.idf_.astype(np.float64), svd.components_.astype(np.float64))


def clip_document(clip: Clip, kind: str, tag_names: Sequence[str]) -> str | list[str]:
    """What a clip says for target ``kind``: its tag set (the names of its positive labels) or its text."""
    if kind == "tags":
        return [tag_names[int(i)] for i in np.flatnonzero(np.asarray(clip.labels) > 0.5)]
    return clip.text


@dataclass(frozen=True)
class TrainingTargets:
    """The target spaces of a similarity run and every clip's target vector.

    spaces: {kind: TextSpace} in the run's order; vectors: {audio path (``os.fspath``): float32 (sum of the
    spaces' topics,)}, the clip's point in each space, concatenated in that order."""

    spaces: dict[str, TextSpace]
    vectors: dict[str, np.ndarray]

    @property
    def topics(self) -> dict[str, int]:
        """{kind: topics}: the sizes of the network's target heads."""
        return {kind: space.n_topics for kind, space in self.spaces.items()}

    def split(self, columns: torch.Tensor) -> dict[str, torch.Tensor]:
        """Concatenated target columns (batch, sum of topics) -> {kind: (batch, topics)}."""
        return dict(zip(self.spaces, columns.split(list(self.topics.values()), dim=1)))

    def save(self, folder: Path) -> None:
        """Write each space as ``folder/<kind>.npz`` (plain arrays, see TextSpace.save)."""
        folder.mkdir(parents=True, exist_ok=True)
        for kind, space in self.spaces.items():
            space.save(folder / f"{kind}.npz")


def fit_targets(dataset: TaggingDataset, kinds: Sequence[str], n_topics: int = DEFAULT_TOPICS, seed: int = 0,
                saved: Optional[Path] = None) -> TrainingTargets:
    """The spaces of ``kinds`` fitted on the train split (or read from ``saved``, a run's target folder, when
    it holds them) and the target vector of every clip of every split. MdeError for text targets over a
    train split without any text."""
    spaces: dict[str, TextSpace] = {}
    for kind in kinds:
        stored = saved / f"{kind}.npz" if saved is not None else None
        if stored is not None and stored.is_file():
            spaces[kind] = TextSpace.load(stored)
            continue
        documents = [clip_document(clip, kind, dataset.tag_names) for clip in dataset.split("train")]
        if kind == "text" and not any(documents):
            raise MdeError(f"{dataset.name}: --targets text needs free text per clip (a manifest's 'text' "
                           "column), and no train clip has any")
        spaces[kind] = fit_text_space(documents, kind, n_topics, seed)
    clips = [clip for split in dataset.splits.values() for clip in split]
    points = [space.transform([clip_document(c, kind, dataset.tag_names) for c in clips])
              for kind, space in spaces.items()]
    stacked = np.concatenate(points, axis=1) if points else np.zeros((len(clips), 0), np.float32)
    return TrainingTargets(spaces, {os.fspath(clip.path): row for clip, row in zip(clips, stacked)})
