"""Querying an index: ``Index.open(path).search(audio_or_vector)``, ``.search_tags(tags)``, ``.search_text(text)``.

Scores are cosines (dot products of unit vectors), except for tag queries answered from tag probabilities,
whose score is the mean probability of the tags. Clip queries search the clip vectors. Frame queries
(``frames=True``) search the frame vectors and align: each query frame's nearest frames vote for a file
and an offset, the start time of the query within that file (the frame's start minus the query frame's, in
whole hops); a file's score is the sum of the cosines voting for its best offset divided by the number of
query frames (the mean cosine of the aligned frames, a frame with no aligned hit counting 0), and its
``t`` is that offset in seconds. So a fragment of a file finds that file and where in it the fragment
starts, within one hop.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from mde.errors import MdeError
from mde.runtime.extractor import Model
from mde.runtime.package import JOINT_OUTPUT, TARGET_PREFIX
from mde.runtime.tag_space import multi_hot
from mde.search import faiss_kinds, storage
from mde.search.build import BuildReport, build_index
from mde.search.manifest import Manifest, read_manifest
from mde.search.storage import IndexArrays
from mde.search.vectors import clip_vector, unit_rows

Query = Union[str, os.PathLike[str], np.ndarray]
FRAME_CANDIDATES = 64
"""Nearest frames fetched per query frame (at least; 4 k when larger) for the alignment vote."""


@dataclass(frozen=True)
class Hit:
    """One result: the file (absolute path), its score (a cosine, or a mean tag probability) and, for
    frame queries, ``t``: where in the file the query starts, in seconds (None for clip queries)."""

    path: str
    score: float
    t: Optional[float] = None

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {"path": self.path, "score": round(self.score, 6)}
        if self.t is not None:
            document["t"] = round(self.t, 6)
        return document


class Index:
    """An index opened for searching (see :func:`Index.open`); its arrays are memory-mapped, its faiss
    indexes and its model loaded on first use."""

    def __init__(self, folder: Path, manifest: Manifest, arrays: IndexArrays, model: Optional[str] = None) -> None:
        self.folder = folder
        self.manifest = manifest
        self.arrays = arrays
        self._model_override = model
        self._model: Optional[Model] = None
        self._faiss: dict[str, Any] = {}

    @classmethod
    def open(cls, path: str | os.PathLike[str], model: Optional[str] = None) -> Index:
        """Open the index in folder ``path``. model: where its model file is (a store name or .onnx path),
        if it is neither stored under its name nor at the path it was built from (audio, text and joint
        tag queries need it; its SHA-256 must be the index's).

        Raises MdeError (one line) for a folder that holds no index (yet) or an unreadable one.
        """
        folder = Path(path)
        manifest, arrays = _read_version(folder)
        return cls(folder, manifest, arrays, model)

    @staticmethod
    def build(paths: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], **options: Any) -> BuildReport:
        """Create or update the index ``out`` from the audio under ``paths``: see
        :func:`mde.search.build.build_index` for the options and the update rules. Returns the report."""
        return build_index(paths, out, **options)

    @property
    def paths(self) -> list[str]:
        """The indexed files, in row order."""
        return self.arrays.paths

    def model(self) -> Model:
        """The index's model, loaded once (ModelError when it cannot be found or is another file)."""
        if self._model is None:
            self._model = Model(self.manifest.space.model_file(self._model_override))
        return self._model

    def search(self, query: Query, k: int = 10, frames: bool = False) -> list[Hit]:
        """The ``k`` files nearest to ``query``, best first.

        query: an audio file (embedded with the index's model, layer and hop; its clip vector, or with
          ``frames`` its frames, are searched), or vectors of the index's width: one (dim,) vector, or with
          ``frames`` also (n, dim) consecutive frames one hop apart (without ``frames``: their mean).
        frames: search the frame vectors and report where in each file the query starts (``Hit.t``).
        """
        _check_k(k)
        if isinstance(query, np.ndarray):
            vectors = self._checked(query)
            times = np.arange(len(vectors)) * self.manifest.space.hop
        else:
            result = self.model().embed(os.fspath(query), hop=self.manifest.space.hop, layer=self.manifest.space.layer)
            vectors, times = result.embedding, result.timestamps
        if frames:
            return self._search_frames(unit_rows(vectors), np.asarray(times, dtype=np.float64), k)
        return self._search_clips(clip_vector(vectors), k)

    def search_tags(self, tags: Sequence[str], k: int = 10, frames: bool = False) -> list[Hit]:
        """The ``k`` files that best match the tag set ``tags`` (words of the model's tags; one string is one tag).

        An index of the ``joint`` layer of a model with a tag encoder is searched with the tags' point in
        that space (cosine; ``frames`` as in :meth:`search`). Otherwise, for a model with tag outputs,
        files are ranked by the mean of those tags' clip-level probabilities (score in [0, 1]; no
        ``frames``). MdeError (one line) for a model with neither, or an unknown tag.
        """
        _check_k(k)
        space = self.manifest.space
        words = [tags] if isinstance(tags, str) else list(tags)
        if space.layer == JOINT_OUTPUT and self.model().has_tag_encoder:
            return self.search(self.model().embed_tags(words), k, frames)
        if not space.tag_names or self.arrays.tags is None:
            raise MdeError(f"{space.model} has no tag outputs, and tags are compared with audio only in the "
                           f"'{JOINT_OUTPUT}' layer of a model with a tag encoder (this index: {space.layer!r})")
        if frames:
            raise MdeError(f"tag probabilities are stored per clip: frame search by tags needs an index of the "
                           f"'{JOINT_OUTPUT}' layer of a model with a tag encoder")
        chosen = multi_hot(words, space.tag_names, space.model)
        scores = np.asarray(self.arrays.tags, dtype=np.float64) @ chosen / chosen.sum()
        order = np.argsort(-scores, kind="stable")[:k]
        return [Hit(self.paths[i], float(scores[i])) for i in order]

    def search_text(self, text: str, k: int = 10, frames: bool = False) -> list[Hit]:
        """The ``k`` files nearest to ``text`` in a text target space: the index must hold a model's
        ``target_<kind>`` layer (e.g. ``--layer target_text``), and the model the matching text space
        (:meth:`mde.runtime.extractor.Model.embed_text`). MdeError (one line) otherwise, or when no word
        of ``text`` is known to the space."""
        _check_k(k)
        layer = self.manifest.space.layer
        if not layer.startswith(TARGET_PREFIX):
            raise MdeError(f"text queries need an index of a text target layer, e.g. --layer {TARGET_PREFIX}text "
                           f"(this index holds {layer!r})")
        point = self.model().embed_text(text, layer[len(TARGET_PREFIX):])
        if not np.any(point):
            raise MdeError(f"no word of {text!r} is known to the text space of {self.manifest.space.model}")
        return self.search(point, k, frames)

    def _checked(self, query: np.ndarray) -> np.ndarray:
        dim = self.manifest.space.dim
        vectors = np.asarray(query, dtype=np.float32)
        if vectors.ndim == 1:
            vectors = vectors[None]
        if vectors.ndim != 2 or vectors.shape[1] != dim or len(vectors) == 0:
            raise MdeError(f"query vectors must be ({dim},) or (n, {dim}), got shape {query.shape}")
        if not np.isfinite(vectors).all():
            raise MdeError("query vectors hold NaN or infinity")
        return vectors

    def _search_clips(self, vector: np.ndarray, k: int) -> list[Hit]:
        scores, ids = faiss_kinds.search(self._index(storage.CLIP_INDEX), vector[None], k)
        return [Hit(self.paths[i], float(s)) for s, i in zip(scores[0], ids[0]) if i >= 0]

    def _search_frames(self, vectors: np.ndarray, times: np.ndarray, k: int) -> list[Hit]:
        hop = self.manifest.space.hop
        wanted = min(self.manifest.n_frames, max(FRAME_CANDIDATES, 4 * k))
        if wanted == 0:
            return []
        scores, ids = faiss_kinds.search(self._index(storage.FRAME_INDEX), vectors, wanted)
        found = ids >= 0
        files = self.arrays.file_of_frames(ids[found])
        offsets = np.rint((self.arrays.frame_times[ids[found]] - np.broadcast_to(times[:, None], ids.shape)[found])
                          / hop).astype(np.int64)
        votes: dict[tuple[int, int], float] = {}
        for file, offset, score in zip(files.tolist(), offsets.tolist(), scores[found].tolist()):
            votes[file, offset] = votes.get((file, offset), 0.0) + score
        best: dict[int, tuple[float, int]] = {}
        for (file, offset), total in votes.items():
            if total > best.get(file, (-np.inf, 0))[0]:
                best[file] = (total, offset)
        ranked = sorted(best.items(), key=lambda item: -item[1][0])[:k]
        return [Hit(self.paths[file], total / len(vectors), max(0.0, offset * hop)) for file, (total, offset) in ranked]

    def _index(self, name: str) -> Any:
        """The faiss index file ``name`` of this version, read once; rebuilt from the stored vectors (as the
        manifest records it) when missing or unreadable, and written back when the folder allows."""
        if name not in self._faiss:
            path = self.folder / self.manifest.data / name
            try:
                self._faiss[name] = faiss_kinds.read(path)
            except (OSError, RuntimeError):
                clips = name == storage.CLIP_INDEX
                kind = self.manifest.clip_index if clips else self.manifest.frame_index
                vectors = np.asarray(self.arrays.clips if clips else self.arrays.frames)
                self._faiss[name] = faiss_kinds.rebuild(vectors, kind)
                if path.parent.is_dir():  # not when an update has removed this version meanwhile
                    with contextlib.suppress(OSError):  # a read-only index is searched all the same
                        faiss_kinds.write(self._faiss[name], path)
        return self._faiss[name]


def _read_version(folder: Path, retry: bool = True) -> tuple[Manifest, IndexArrays]:
    """The current manifest and its arrays, read again once if an update removed that version meanwhile."""
    manifest = read_manifest(folder)
    if manifest is None:
        staged = (folder / storage.STAGING).is_dir()
        hint = ": an interrupted 'mde index' embedded files for it; re-run it" if staged else ""
        raise MdeError(f"{folder}: no index here (no manifest.json){hint}")
    try:
        return manifest, storage.read_arrays(folder, manifest)
    except FileNotFoundError as exc:
        if retry:
            return _read_version(folder, retry=False)
        raise MdeError(f"{folder}: the index's {exc.filename or 'data'} is missing") from None


def _check_k(k: int) -> None:
    if k < 1:
        raise MdeError(f"k must be at least 1, got {k}")
