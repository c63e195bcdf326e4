"""Where streamed frames go: JSON lines as they come, arrays written at the end and flushed periodically.

JSON lines (one object per frame): ``t`` (frame start, seconds since the stream began), ``scale``
(window, seconds), ``model``, ``latency_ms``, ``embedding`` (list of floats) and ``top_tags``
(list of [tag, probability]). The array file (.npz or .parquet) is rewritten atomically every
``flush_seconds`` while streaming and once at the end, so a crash loses at most that much.
"""

from __future__ import annotations

import json
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, TextIO

import numpy as np

from mde.errors import MdeError
from mde.runtime.writers import atomic_path
from mde.stream.engine import StreamFrame, StreamSummary
from mde.stream.scales import scale_label

ARRAY_FORMATS = (".npz", ".parquet")
DEFAULT_FLUSH_SECONDS = 5.0


def frame_record(frame: StreamFrame, top_k: int) -> dict:
    """The JSON-lines object of one frame."""
    return {
        "t": round(frame.t, 6),
        "scale": frame.scale,
        "model": frame.model,
        "latency_ms": round(frame.latency_ms, 3),
        "embedding": frame.embedding.tolist(),
        "top_tags": [[name, round(p, 6)] for name, p in frame.top_tags(top_k)],
    }


class JsonlSink:
    """Writes each frame as one JSON line to a file or, for '-', standard output; flushed per line."""

    def __init__(self, target: str, top_k: int = 5) -> None:
        self._own = target != "-"
        self._handle: TextIO = open(target, "w", encoding="utf-8") if self._own else sys.stdout
        self._top_k = top_k

    def add(self, frame: StreamFrame) -> None:
        self._handle.write(json.dumps(frame_record(frame, self._top_k)) + "\n")
        self._handle.flush()

    def close(self, summary: StreamSummary) -> None:
        if self._own:
            self._handle.close()


class FrameCollector:
    """Keeps every frame, per scale, and turns them into arrays (the Python API's result)."""

    def __init__(self) -> None:
        self._frames: dict[float, list[StreamFrame]] = {}
        self._lock = threading.Lock()

    def add(self, frame: StreamFrame) -> None:
        with self._lock:
            self._frames.setdefault(frame.scale, []).append(frame)

    def close(self, summary: StreamSummary) -> None:
        pass

    def snapshot(self) -> dict[float, list[StreamFrame]]:
        """The frames so far per scale, each list ordered by start time."""
        with self._lock:
            return {scale: sorted(frames, key=lambda f: f.t) for scale, frames in self._frames.items()}

    def results(self) -> dict[float, "StreamedArrays"]:
        """Per scale: start times (s), embeddings, tags and latencies as arrays."""
        return {scale: StreamedArrays.of(frames) for scale, frames in self.snapshot().items()}


@dataclass
class StreamedArrays:
    """One scale's frames as arrays: t (s, float64), embedding (frames, dim), tags (frames, n_tags) or
    None, latency_ms (float32), plus the model and its tag names."""

    t: np.ndarray
    embedding: np.ndarray
    tags: Optional[np.ndarray]
    latency_ms: np.ndarray
    model: str
    tag_names: tuple[str, ...]

    @classmethod
    def of(cls, frames: list[StreamFrame]) -> "StreamedArrays":
        first = frames[0]
        return cls(
            t=np.array([f.t for f in frames], np.float64),
            embedding=np.stack([f.embedding for f in frames]).astype(np.float32),
            tags=None if first.tags is None else np.stack([f.tags for f in frames]).astype(np.float32),
            latency_ms=np.array([f.latency_ms for f in frames], np.float32),
            model=first.model, tag_names=first.tag_names,
        )


class ArraySink(FrameCollector):
    """Collects frames and writes them to ``path`` (.npz or .parquet) every ``flush_seconds`` and at the end.

    npz keys per scale label L (like '0.5s'): 'L/t', 'L/embedding', 'L/tags', 'L/latency_ms', 'L/model',
    'L/tag_names'; plus 'scales'. Parquet: one row per frame with scale, model, t, latency_ms, embedding
    and tags columns, tag names per model in the schema metadata.
    """

    def __init__(self, path: Path, flush_seconds: float = DEFAULT_FLUSH_SECONDS) -> None:
        super().__init__()
        if path.suffix.lower() not in ARRAY_FORMATS:
            raise MdeError(f"--out must end in {' or '.join(ARRAY_FORMATS)}, got {path.name!r}")
        if not path.parent.exists():
            raise MdeError(f"--out: folder {path.parent} does not exist")
        self.path = path
        self._stop = threading.Event()
        self._write_lock = threading.Lock()
        self._flusher = threading.Thread(target=self._flush_loop, args=(flush_seconds,), daemon=True,
                                         name="mde-stream-flush")
        self._flusher.start()

    def _flush_loop(self, every: float) -> None:
        while not self._stop.wait(every):
            self.flush()

    def flush(self) -> None:
        """Rewrite the file with every frame so far (atomically; nothing if there is none yet)."""
        results = self.results()
        if not results:
            return
        with self._write_lock, atomic_path(self.path) as tmp:
            (_write_npz if self.path.suffix.lower() == ".npz" else _write_parquet)(results, tmp)

    def close(self, summary: StreamSummary) -> None:
        self._stop.set()
        self._flusher.join()
        self.flush()


def _write_npz(results: dict[float, StreamedArrays], path: Path) -> None:
    arrays: dict[str, np.ndarray] = {"scales": np.array(sorted(results), np.float64)}
    for scale, r in results.items():
        key = scale_label(scale)
        arrays.update({
            f"{key}/t": r.t, f"{key}/embedding": r.embedding, f"{key}/latency_ms": r.latency_ms,
            f"{key}/tags": r.tags if r.tags is not None else np.zeros((len(r.t), 0), np.float32),
            f"{key}/model": np.array(r.model), f"{key}/tag_names": np.array(r.tag_names, dtype=str),
        })
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


def _write_parquet(results: dict[float, StreamedArrays], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for scale, r in sorted(results.items()):
        n = len(r.t)
        tags = r.tags if r.tags is not None else np.zeros((n, 0), np.float32)
        tables.append(pa.table({
            "scale": pa.array(np.full(n, scale), pa.float64()),
            "model": pa.array([r.model] * n, pa.string()),
            "t": pa.array(r.t, pa.float64()),
            "latency_ms": pa.array(r.latency_ms, pa.float32()),
            "embedding": pa.array(list(r.embedding), pa.list_(pa.float32())),
            "tags": pa.array(list(tags), pa.list_(pa.float32())),
        }))
    names = {r.model: list(r.tag_names) for r in results.values()}
    table = pa.concat_tables(tables).replace_schema_metadata({"mde.tag_names": json.dumps(names)})
    pq.write_table(table, path)
