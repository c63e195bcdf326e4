"""Latent semantic spaces of what is said about music: TF-IDF then LSI, applied without scikit-learn.

Schindler et al. regress audio onto such spaces: each track's tag set, or a free text about it (an album
review, in any language), becomes a TF-IDF vector over the training split's vocabulary, then its
coordinates on the topics of a truncated SVD of that split's TF-IDF matrix. A :class:`TextSpace` holds the
fitted pieces as plain arrays (the trainer fits them with scikit-learn, ``mde.trainer.targets``), so new
text maps into the same space here with numpy alone, and the space saves to an ``.npz`` that loads without
pickle.

Terms (:func:`terms`): for ``kind='tags'`` each tag of a set is one term (a tag may hold spaces: "no
drums"); for ``kind='text'`` the lower-cased words of two or more letters, their pairs, and the character
3- to 5-grams inside each word padded with a space on either side. No stemming or stop words, so several
languages share one space.
"""

from __future__ import annotations

import base64
import io
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import BinaryIO, Optional

import numpy as np

from mde.errors import MdeError

KINDS = ("tags", "text")
_WORD = re.compile(r"(?u)\b\w\w+\b")
CHAR_NGRAMS = (3, 5)


def terms(document: str | Sequence[str], kind: str) -> list[str]:
    """The terms of one document: a tag set (a sequence of tags, or one '|'-separated string) for
    ``kind='tags'``, a string for ``kind='text'``."""
    if kind == "tags":
        tags = document.split("|") if isinstance(document, str) else list(document)
        return [t.strip().lower() for t in tags if t.strip()]
    if kind != "text":
        raise MdeError(f"unknown target kind {kind!r}; choose one of {', '.join(KINDS)}")
    if not isinstance(document, str):
        raise MdeError("a text target is one string per track")
    words = _WORD.findall(document.lower())
    found = [f"w:{w}" for w in words] + [f"w:{a} {b}" for a, b in pairwise(words)]
    low, high = CHAR_NGRAMS
    for word in words:
        padded = f" {word} "
        for n in range(low, high + 1):
            found += [f"c:{padded[i:i + n]}" for i in range(len(padded) - n + 1)]
    return found


@dataclass(frozen=True)
class TextSpace:
    """A fitted TF-IDF + LSI space.

    kind: 'tags' or 'text' (how documents split into terms); vocabulary: the terms, in column order;
    idf: float64 (n_terms,), scikit-learn's smoothed inverse document frequency, ln((1 + n) / (1 + df)) + 1;
    components: float64 (n_topics, n_terms), the SVD's right singular vectors (topics)."""

    kind: str
    vocabulary: tuple[str, ...]
    idf: np.ndarray
    components: np.ndarray

    @property
    def n_topics(self) -> int:
        return int(self.components.shape[0])

    def tfidf(self, documents: Iterable[str | Sequence[str]]) -> np.ndarray:
        """float64 (n_documents, n_terms): raw term counts times idf, each row scaled to unit L2 norm (a
        document without a known term stays zero)."""
        index = {term: i for i, term in enumerate(self.vocabulary)}
        rows = []
        for document in documents:
            row = np.zeros(len(self.vocabulary))
            for term, count in Counter(terms(document, self.kind)).items():
                if term in index:
                    row[index[term]] = count
            row *= self.idf
            norm = np.linalg.norm(row)
            rows.append(row / norm if norm > 0 else row)
        return np.stack(rows) if rows else np.zeros((0, len(self.vocabulary)))

    def transform(self, documents: Iterable[str | Sequence[str]]) -> np.ndarray:
        """float32 (n_documents, n_topics): each document's coordinates on the topics."""
        points: np.ndarray = (self.tfidf(documents) @ self.components.T).astype(np.float32)
        return points

    def save(self, path: str | Path | BinaryIO) -> None:
        """Write the space as an ``.npz`` of plain arrays (no pickle)."""
        np.savez(path, kind=np.array(self.kind), vocabulary=np.array(self.vocabulary, dtype=np.str_),
                 idf=self.idf, components=self.components)

    def to_base64(self) -> str:
        """The space as base64 text (a compressed ``.npz``, the topics in float32), for a model file's metadata."""
        buffer = io.BytesIO()
        np.savez_compressed(buffer, kind=np.array(self.kind), vocabulary=np.array(self.vocabulary, dtype=np.str_),
                            idf=self.idf, components=self.components.astype(np.float32))
        return base64.b64encode(buffer.getvalue()).decode("ascii")

    @classmethod
    def from_base64(cls, text: str, origin: str = "text space") -> TextSpace:
        """Inverse of :meth:`to_base64` (MdeError, one line naming ``origin``, for anything else)."""
        try:
            data = base64.b64decode(text.encode("ascii"), validate=True)
        except (ValueError, UnicodeEncodeError) as exc:
            raise MdeError(f"{origin}: not base64 ({exc})") from None
        return cls.load(io.BytesIO(data), origin)

    @classmethod
    def load(cls, path: str | Path | BinaryIO, origin: Optional[str] = None) -> TextSpace:
        """Read a space written by :meth:`save` (MdeError, one line naming ``origin`` (default: the path),
        for a file that is not one)."""
        origin = origin or str(path)
        try:
            with np.load(path, allow_pickle=False) as stored:
                space = cls(str(stored["kind"]), tuple(str(t) for t in stored["vocabulary"]),
                            stored["idf"].astype(np.float64), stored["components"].astype(np.float64))
        except (OSError, KeyError, ValueError, EOFError) as exc:
            raise MdeError(f"{origin}: not a saved text space ({exc})") from None
        if space.kind not in KINDS or space.components.shape[1:] != (len(space.vocabulary),) \
                or space.idf.shape != (len(space.vocabulary),):
            raise MdeError(f"{origin}: not a saved text space (inconsistent arrays)")
        return space
