"""Similarity retrieval figures of an embedding, as Schindler et al. evaluate music representations.

Each track of a set is a query; the others are ranked by the cosine of their embeddings with it, ties in a
fixed pseudo-random order (never in the set's order, which often follows the labels: a collapsed embedding,
all ties, then scores at chance, not at the ordering's benefit). A track is relevant to a query when their tag
sets overlap with a Jaccard index of at least 0.5 (:func:`jaccard_relevance`), or, separately, when their
target vectors (points of a fitted text space) have a cosine above 0.9 (:func:`cosine_relevance`). Reported:
precision at 1, 5 and 10 (the share of relevant tracks among the first k) and the mean average precision (per
query, the mean of the precision at the rank of each relevant track), all averaged over the queries that have
at least one relevant track (the others cannot score and are counted in ``queries_without_relevant``); with no
such query the figures are None (not NaN, so that metrics.json stays strict JSON).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mde.errors import MdeError

CUTOFFS = (1, 5, 10)
JACCARD_RELEVANT = 0.5
TARGET_RELEVANT = 0.9
TIE_SEED = 0
"""Seeds the order of tied candidates."""


def jaccard_relevance(tags: np.ndarray, threshold: float = JACCARD_RELEVANT) -> np.ndarray:
    """bool (n, n): whether the 0/1 tag rows ``tags`` (n, n_tags) of two tracks have a Jaccard index of at
    least ``threshold`` (two empty tag sets are not relevant to each other)."""
    sets = np.asarray(tags) > 0.5
    both = sets.astype(np.float64) @ sets.T.astype(np.float64)
    sizes = sets.sum(axis=1).astype(np.float64)
    union = sizes[:, None] + sizes[None, :] - both
    with np.errstate(invalid="ignore", divide="ignore"):
        jaccard = np.where(union > 0, both / np.where(union > 0, union, 1.0), 0.0)
    return jaccard >= threshold


def cosine_relevance(targets: np.ndarray, threshold: float = TARGET_RELEVANT) -> np.ndarray:
    """bool (n, n): whether two tracks' target vectors (n, dim) have a cosine above ``threshold``."""
    return _unit_rows(np.asarray(targets, dtype=np.float64)) @ _unit_rows(np.asarray(targets, np.float64)).T > threshold


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def retrieval_metrics(embeddings: np.ndarray, relevant: np.ndarray,
                      cutoffs: Sequence[int] = CUTOFFS) -> dict[str, Any]:
    """{'p@k' for each cutoff, 'map', 'queries', 'queries_without_relevant'} of ``embeddings`` (n, dim)
    against the bool relevance matrix ``relevant`` (n, n) (its diagonal is ignored)."""
    vectors = np.asarray(embeddings, dtype=np.float64)
    n = len(vectors)
    if n < 2 or relevant.shape != (n, n):
        raise MdeError(f"retrieval needs at least 2 tracks and an (n, n) relevance matrix, got {n} tracks "
                       f"and {relevant.shape}")
    similarity = _unit_rows(vectors) @ _unit_rows(vectors).T
    np.fill_diagonal(similarity, -np.inf)
    tie_break = np.broadcast_to(np.random.default_rng(TIE_SEED).permutation(n), (n, n))
    order = np.lexsort((tie_break, -similarity), axis=1)[:, : n - 1]  # the query itself ranks last
    hits = np.take_along_axis(np.asarray(relevant, dtype=bool) & ~np.eye(n, dtype=bool), order, axis=1)
    scored = hits.any(axis=1)
    results: dict[str, Any] = {}
    for k in cutoffs:
        top = hits[scored, : min(k, n - 1)]
        results[f"p@{k}"] = float(top.sum(axis=1).mean() / k) if scored.any() else None
    ranks = np.arange(1, n, dtype=np.float64)
    precision_at_hits = np.cumsum(hits, axis=1) / ranks * hits
    average_precision = precision_at_hits[scored].sum(axis=1) / hits[scored].sum(axis=1)
    results["map"] = float(average_precision.mean()) if scored.any() else None
    results["queries"] = int(scored.sum())
    results["queries_without_relevant"] = int(n - scored.sum())
    return results


def retrieval_table(embeddings: np.ndarray, tags: np.ndarray, targets: dict[str, np.ndarray]) -> dict[str, Any]:
    """Retrieval figures of one embedding per relevance: {'jaccard': tag sets, 'target_<kind>': each
    target space}; ``tags`` (n, n_tags) 0/1, ``targets`` {kind: (n, topics)}."""
    table = {"jaccard": retrieval_metrics(embeddings, jaccard_relevance(tags))}
    for kind, vectors in targets.items():
        table[f"target_{kind}"] = retrieval_metrics(embeddings, cosine_relevance(vectors))
    return table
