"""``mde bench search``: the faiss indexes of ``mde index`` at 10^4, 10^5 and 10^6 vectors (quick: 10^4).

Vectors of dimension 200 drawn as synthetic clusters with a fixed seed: 1,000 centres from N(0, I), each
vector a centre plus N(0, 1.5^2 I) noise, normalised (so the inner product is the cosine). The queries are
more vectors drawn alike and not indexed (held out). Each size is indexed as ``mde index`` indexes it
(:func:`mde.search.faiss_kinds.build`: exact up to 100,000 vectors, IVF-Flat with its nprobe tuned beyond),
and where that is not exact, also exactly (IndexFlatIP), for comparison. Per row:

- build time: the index built once (IVF: k-means training, adding, tuning nprobe), faiss on N threads;
- query latency: one query at a time, k = 10, faiss on one thread (it parallelises over queries, so one
  query runs on one thread and more threads only add synchronisation): median, min, max and p99;
- recall@10 of the held-out queries against exact search (by score, see ``faiss_kinds.recall_at``);
- memory: the index file's size, and this process's peak resident set while the row was built and queried
  (the vectors themselves, 0.8 kB each, included).

Goal (issue 17): p99 under 10 ms at 10^6 vectors with recall@10 >= 0.95.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from mde.bench.report import Column, Timing, own_peak_mb, reset_peak_rss, timing_of
from mde.bench.suites import BenchSettings, SuiteResult, finish

SIZES = (10_000, 100_000, 1_000_000)
QUICK_SIZES = (10_000,)
DIM = 200
CLUSTERS = 1_000
SPREAD = 1.5
"""Standard deviation of each cluster's noise per dimension (the centres': 1)."""
QUERIES, QUICK_QUERIES = 1_000, 200
"""Held-out queries per row (``--rounds`` overrides)."""
K = 10
SEED = 0
GOAL_SIZE, GOAL_P99_MS, GOAL_RECALL = 1_000_000, 10.0, 0.95
_CHUNK = 100_000


def run(settings: BenchSettings) -> SuiteResult:
    from mde.search import faiss_kinds

    faiss = faiss_kinds.load_faiss()
    sizes = QUICK_SIZES if settings.quick else SIZES
    n_queries = settings.rounds or (QUICK_QUERIES if settings.quick else QUERIES)
    timings: list[Timing] = []
    metrics: dict[str, dict[str, Any]] = {}
    faiss.omp_set_num_threads(settings.n_threads)  # for building; queries run on one (see _latencies)
    for n in sizes:
        settings.announce(f"{n:,} vectors of dimension {DIM}: drawing, then indexing")
        vectors, queries = clustered(n, n_queries, np.random.default_rng(SEED))
        exact_scores = faiss.knn(queries, vectors, K, metric=faiss.METRIC_INNER_PRODUCT)[0]
        for exact in (False, True) if n > faiss_kinds.EXACT_LIMIT else (False,):  # else the default is exact
            timing, row = _row(faiss, vectors, queries, exact_scores, exact)
            timings.append(timing)
            metrics[timing.name] = row
    return finish(
        settings, "search", f"mde index / search: faiss on {DIM}-d unit vectors, k = {K}, one query at a time",
        timings, metrics=metrics, extra=_extra(sizes, n_queries), notes=_notes(metrics, n_queries, settings),
        packages=("numpy", "faiss-cpu"), ratio_heading="-",
        columns=[Column("build_s", "build (s)", ".2f"), Column("p99_ms", "p99 (ms)", ".3f"),
                 Column("recall_at_10", "recall@10", ".3f"), Column("nlist", "nlist", "d"),
                 Column("nprobe", "nprobe", "d"), Column("index_mb", "index (MB)", ".0f"),
                 Column("peak_rss_mb", "peak RSS (MB)", ".0f")],
    )


def _row(faiss: Any, vectors: np.ndarray, queries: np.ndarray, exact_scores: np.ndarray,
         exact: bool) -> tuple[Timing, dict[str, Any]]:
    """Build one index of ``vectors`` as ``mde index`` would (``exact``: as with --exact) and measure it."""
    from mde.search import faiss_kinds

    reset_peak_rss()
    started = time.perf_counter()
    index, kind = faiss_kinds.build(vectors, exact=exact)
    build_s = time.perf_counter() - started
    found = faiss_kinds.search(index, queries, K)[0]
    latencies = _latencies(faiss, index, queries)
    name = f"{len(vectors):,} vectors, {'--exact' if exact else 'default'}: {kind.kind}"
    return timing_of(name, latencies), {
        "vectors": len(vectors), "kind": kind.kind, "exact_forced": exact, "build_s": build_s,
        "p50_ms": float(np.percentile(latencies, 50)) * 1e3, "p99_ms": float(np.percentile(latencies, 99)) * 1e3,
        "recall_at_10": faiss_kinds.recall_at(found, exact_scores), "nlist": kind.nlist, "nprobe": kind.nprobe,
        "tuned_recall_at_10": kind.recall_at_10, "index_mb": _file_mb(faiss, index), "peak_rss_mb": own_peak_mb(),
    }


def clustered(n: int, n_queries: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` indexed and ``n_queries`` held-out float32 unit vectors of DIM, drawn from the same clusters."""
    from mde.search.vectors import unit_rows

    centres = rng.standard_normal((CLUSTERS, DIM), dtype=np.float32)
    drawn = np.empty((n + n_queries, DIM), np.float32)
    for start in range(0, len(drawn), _CHUNK):
        block = drawn[start:start + _CHUNK]
        noise = rng.standard_normal(block.shape, dtype=np.float32) * np.float32(SPREAD)
        block[:] = unit_rows(centres[rng.integers(0, CLUSTERS, len(block))] + noise)
    return drawn[:n], drawn[n:]


def _latencies(faiss: Any, index: Any, queries: np.ndarray) -> list[float]:
    """Seconds per search of one query (k = K), faiss on one thread, after one untimed query."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        index.search(queries[:1], K)
        times = []
        for row in range(len(queries)):
            started = time.perf_counter()
            index.search(queries[row:row + 1], K)
            times.append(time.perf_counter() - started)
    finally:
        faiss.omp_set_num_threads(threads)
    return times


def _file_mb(faiss: Any, index: Any) -> float:
    """The size of the index written as ``mde index`` writes it, in MB."""
    with tempfile.TemporaryDirectory(prefix="mde-bench-search-") as folder:
        path = Path(folder) / "index.faiss"
        faiss.write_index(index, str(path))
        return path.stat().st_size / 1e6


def _extra(sizes: tuple[int, ...], n_queries: int) -> dict[str, object]:
    return {"sizes": list(sizes), "dim": DIM, "clusters": CLUSTERS, "spread": SPREAD, "queries": n_queries,
            "k": K, "seed": SEED, "goal": {"vectors": GOAL_SIZE, "p99_ms": GOAL_P99_MS, "recall_at_10": GOAL_RECALL}}


def _notes(metrics: dict[str, dict[str, Any]], n_queries: int, settings: BenchSettings) -> str:
    goal = next((row for row in metrics.values() if row["vectors"] == GOAL_SIZE and not row["exact_forced"]), None)
    if goal is None:
        verdict = f"not measured (no {GOAL_SIZE:,}-vector row{' with --quick' if settings.quick else ''})"
    else:
        met = goal["p99_ms"] < GOAL_P99_MS and goal["recall_at_10"] >= GOAL_RECALL
        verdict = f"{'met' if met else 'MISSED'} ({goal['p99_ms']:.2f} ms, recall@10 {goal['recall_at_10']:.3f})"
    return (
        f"Synthetic clusters: {CLUSTERS:,} centres from N(0, I), noise N(0, {SPREAD:g}^2 I), dimension {DIM}, "
        f"unit norm, seed {SEED}; {n_queries:,} held-out queries per row, searched one at a time (k = {K}) with "
        f"faiss on one thread (build: {settings.n_threads} threads). Recall@10 against exact search; nprobe chosen "
        f"at build time on stored vectors (tuned_recall_at_10 in the JSON). Peak RSS: this process while the row "
        f"was built and queried, the vectors included. Goal: p99 < {GOAL_P99_MS:g} ms at {GOAL_SIZE:,} vectors with "
        f"recall@10 >= {GOAL_RECALL:g}: {verdict}."
    )
