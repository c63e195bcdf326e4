"""The faiss indexes over an index's unit vectors: exact inner product up to a size, IVF-Flat beyond it.

Vectors are L2-normalised, so the inner product is the cosine. Up to ``exact_limit`` vectors (100,000 by
default) or when exact search is asked for, the index is faiss's ``IndexFlatIP``: every query is compared
with every vector. Beyond, it is ``IndexIVFFlat``: k-means (10 iterations, faiss's seed) on a seeded sample
of ``TRAIN_POINTS_PER_LIST`` vectors per list cuts the space into ``nlist = round(4 sqrt(n))`` lists, and a
query scans the ``nprobe`` lists whose centroids are nearest. ``nprobe`` is the smallest power of two (or
nlist) whose recall@10 on a held-out sample reaches ``TARGET_RECALL``: ``TUNING_QUERIES`` stored vectors,
drawn with a fixed seed, each searching the others (itself left out), against exact search. The choice
and its figures are recorded (:class:`IndexKind`), so an index file that is missing can be rebuilt from the
stored vectors as it was (:func:`rebuild`).

faiss comes with the ``search`` extra; :func:`load_faiss` names the pip command when it is missing.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from mde.atomic import atomic_path
from mde.errors import MdeError, MissingExtraError

EXACT_LIMIT = 100_000
"""The most vectors an index searches exactly (IndexFlatIP) unless told otherwise."""
TARGET_RECALL = 0.95
"""The recall@10 that the IVF ``nprobe`` is chosen to reach on the held-out sample."""
RECALL_K = 10
TUNING_QUERIES = 200
"""Held-out sample size for choosing ``nprobe``."""
TRAIN_POINTS_PER_LIST = 40
"""k-means training points per IVF list (faiss asks for at least 39)."""
KMEANS_ITERATIONS = 10
SEED = 0
"""Seed of the training and tuning samples (an index rebuilt from the same vectors is the same)."""
FLAT, IVF = "flat", "ivf"


def load_faiss() -> Any:
    """The faiss module (MissingExtraError, one line with the pip command, when it is not installed)."""
    try:
        import faiss
    except ImportError:
        raise MissingExtraError("faiss-cpu", "search", "Indexing and searching embeddings") from None
    return faiss


@dataclass(frozen=True)
class IndexKind:
    """Which faiss index holds a set of vectors, with what the choice measured.

    kind: 'flat' (exact inner product) or 'ivf' (IVF-Flat, inner product).
    vectors: how many vectors it holds.
    nlist, nprobe: IVF lists, and lists scanned per query (None for flat).
    recall_at_10: recall@10 against exact search on the held-out sample at ``nprobe`` (None for flat).
    tuning_queries, train_points: the held-out sample's size and the k-means training sample's (None for flat).
    """

    kind: str
    vectors: int
    nlist: Optional[int] = None
    nprobe: Optional[int] = None
    recall_at_10: Optional[float] = None
    tuning_queries: Optional[int] = None
    train_points: Optional[int] = None

    def to_dict(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IndexKind:
        return cls(**data)


def build(vectors: np.ndarray, exact: bool = False, exact_limit: int = EXACT_LIMIT) -> tuple[Any, IndexKind]:
    """The faiss index of ``vectors`` (n, dim) float32 unit rows and its recorded kind: flat when ``exact``,
    when n <= ``exact_limit`` or when there are too few vectors to measure recall@10; else IVF-Flat, tuned."""
    if exact_limit < 0:
        raise MdeError(f"exact_limit must be at least 0, got {exact_limit}")
    n = len(vectors)
    if exact or n <= max(exact_limit, RECALL_K + 1):
        return _flat(vectors), IndexKind(FLAT, n)
    nlist = min(n, max(1, round(4 * math.sqrt(n))))
    sample = _sample(n, TRAIN_POINTS_PER_LIST * nlist, SEED)
    index = _ivf(vectors, nlist, sample)
    nprobe, recall, queries = _tune_nprobe(index, vectors)
    index.nprobe = nprobe
    return index, IndexKind(IVF, n, nlist, nprobe, recall, queries, len(sample))


def rebuild(vectors: np.ndarray, kind: IndexKind) -> Any:
    """The index ``kind`` describes, built again from the same ``vectors`` (no tuning: its nprobe is kept)."""
    if kind.kind == FLAT:
        return _flat(vectors)
    if kind.kind != IVF or kind.nlist is None or kind.nprobe is None or kind.train_points is None:
        raise MdeError(f"unknown index kind {kind.to_dict()}")
    index = _ivf(vectors, kind.nlist, _sample(len(vectors), kind.train_points, SEED))
    index.nprobe = kind.nprobe
    return index


def search(index: Any, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Cosines (q, k) float32, best first, and row ids (q, k) int64 of the ``k`` nearest vectors to each
    of ``queries`` (q, dim) float32 unit rows; id -1 (score -inf) where fewer than ``k`` were found."""
    scores, ids = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    found: np.ndarray = np.where(ids >= 0, scores, -np.inf).astype(np.float32)
    return found, np.asarray(ids, dtype=np.int64)


def recall_at(found: np.ndarray, exact: np.ndarray, k: int = RECALL_K, tolerance: float = 1e-5) -> float:
    """Mean recall@k of ``found`` (q, k) cosines against the ``exact`` (q, >= k) cosines, best first, of
    the same queries: the share of found neighbours at least as close as the exact k-th. Counting by
    score, not by id, makes ties (duplicate vectors, silent frames) count as found."""
    kth = exact[:, k - 1 : k]
    hits = np.minimum((found[:, :k] >= kth - tolerance).sum(axis=1), k)
    return float(hits.mean() / k)


def write(index: Any, path: Path) -> None:
    """Write a faiss index file atomically."""
    faiss = load_faiss()
    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))


def read(path: Path) -> Any:
    """Read a faiss index file (RuntimeError from faiss for one that is damaged; OSError when missing)."""
    if not path.is_file():
        raise FileNotFoundError(path)
    return load_faiss().read_index(str(path))


def _flat(vectors: np.ndarray) -> Any:
    index = load_faiss().IndexFlatIP(vectors.shape[1])
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


def _ivf(vectors: np.ndarray, nlist: int, sample: np.ndarray) -> Any:
    faiss = load_faiss()
    dim = vectors.shape[1]
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.niter = KMEANS_ITERATIONS
    index.cp.min_points_per_centroid = 1  # the sample is sized here; faiss would only warn
    index.cp.max_points_per_centroid = TRAIN_POINTS_PER_LIST + 1  # and must not subsample it again
    index.train(np.ascontiguousarray(vectors[sample], dtype=np.float32))
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


def _sample(n: int, size: int, seed: int) -> np.ndarray:
    """``min(size, n)`` distinct row numbers of ``n``, drawn with ``seed``, in increasing order."""
    if size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def _tune_nprobe(index: Any, vectors: np.ndarray) -> tuple[int, float, int]:
    """(nprobe, its recall@10, queries): the smallest nprobe reaching TARGET_RECALL on the held-out sample."""
    faiss = load_faiss()
    rows = _sample(len(vectors), TUNING_QUERIES, SEED + 1)
    queries = np.ascontiguousarray(vectors[rows], dtype=np.float32)
    exact_scores, exact_ids = faiss.knn(queries, np.ascontiguousarray(vectors, dtype=np.float32), RECALL_K + 1,
                                        metric=faiss.METRIC_INNER_PRODUCT)
    exact = _without_self(exact_scores, exact_ids, rows)
    candidates = sorted({*(2**i for i in range(int(math.log2(index.nlist)) + 1)), index.nlist})
    for nprobe in candidates:
        index.nprobe = nprobe
        recall = recall_at(_without_self(*search(index, queries, RECALL_K + 1), rows), exact)
        if recall >= TARGET_RECALL:
            break
    return nprobe, recall, len(rows)


def _without_self(scores: np.ndarray, ids: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The first RECALL_K scores of each query's results once its own row is left out (the last result
    is dropped where the row is not among them)."""
    keep = ids != rows[:, None]
    keep[keep.all(axis=1), -1] = False
    kept: np.ndarray = scores[keep].reshape(len(rows), -1)[:, :RECALL_K]
    return kept
