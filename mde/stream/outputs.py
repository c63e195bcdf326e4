"""Where streamed frames go: JSON lines as they come, arrays written at the end and flushed periodically.

JSON lines (one object per frame): ``timestamp`` (frame start, seconds since the stream began), ``scale``
(window, seconds), ``model``, ``latency_ms``, ``embedding`` (list of floats) and ``top_tags``
(list of [tag, probability]). A reader that closes the pipe (``| head``) ends the stream quietly.
The array file (.npz or .parquet) is rewritten atomically every ``flush_seconds`` while streaming and
once at the end, so a crash loses at most that much; its folder is checked for writability up front,
and frames that cannot be written there at the end are kept in a file in the temporary folder instead.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, TextIO

import numpy as np

from mde.atomic import atomic_path
from mde.errors import MdeError
from mde.stream.engine import StreamFrame, StreamSummary
from mde.stream.scales import scale_label

ARRAY_FORMATS = (".npz", ".parquet")
DEFAULT_FLUSH_SECONDS = 5.0


def frame_record(frame: StreamFrame, top_k: int) -> dict:
    """The JSON-lines object of one frame."""
    return {
        "timestamp": round(frame.timestamp, 6),
        "scale": frame.scale,
        "model": frame.model,
        "latency_ms": round(frame.latency_ms, 3),
        "embedding": frame.embedding.tolist(),
        "top_tags": [[name, round(p, 6)] for name, p in frame.top_tags(top_k)],
    }


def check_writable(path: Path, what: str) -> None:
    """MdeError unless a file can be created at ``path``: its folder exists and takes a probe file.

    what: the option's name for the message. The probe is created and removed beside ``path``, so
    permissions, read-only mounts and a full inode table are all caught (root ignores permission bits).
    """
    folder = path.parent
    if path.is_dir():
        raise MdeError(f"{what}: {path} is a folder, not a file")
    if not folder.is_dir():
        state = "is not a folder" if folder.exists() else "does not exist"
        raise MdeError(f"{what}: {folder} {state}")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=folder)
    except OSError as exc:
        raise MdeError(f"{what}: cannot write to {folder}: {exc.strerror or exc}") from None
    os.close(fd)
    os.unlink(probe)


def check_array_path(path: Path) -> None:
    """MdeError unless ``path`` ends in .npz or .parquet and can be written (:func:`check_writable`)."""
    if path.suffix.lower() not in ARRAY_FORMATS:
        raise MdeError(f"--out must end in {' or '.join(ARRAY_FORMATS)}, got {path.name!r}")
    check_writable(path, "--out")


class JsonlSink:
    """Writes each frame as one JSON line to a file or, for '-', standard output; flushed per line.

    on_closed: called once when the reader has gone (a broken pipe); later frames are discarded and
    standard output is pointed at the null device, so nothing more is reported at exit.
    """

    def __init__(self, target: str, top_k: int = 5, on_closed: Optional[Callable[[], None]] = None) -> None:
        self._own = target != "-"
        if self._own:
            check_writable(Path(target), "--jsonl")
        self._handle: TextIO = open(target, "w", encoding="utf-8") if self._own else sys.stdout  # noqa: SIM115 (closed in close)
        self._top_k = top_k
        self._on_closed = on_closed
        self.reader_gone = False

    def add(self, frame: StreamFrame) -> None:
        if self.reader_gone:
            return
        try:
            self._handle.write(json.dumps(frame_record(frame, self._top_k)) + "\n")
            self._handle.flush()
        except BrokenPipeError:
            self.reader_gone = True
            null = os.open(os.devnull, os.O_WRONLY)  # the unflushed rest goes nowhere, also at exit
            os.dup2(null, self._handle.fileno())
            os.close(null)
            if self._on_closed is not None:
                self._on_closed()

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
            return {scale: sorted(frames, key=lambda f: f.timestamp) for scale, frames in self._frames.items()}

    def results(self) -> dict[float, StreamedArrays]:
        """Per scale: start times (s), embeddings, tags and latencies as arrays."""
        return {scale: StreamedArrays.of(frames) for scale, frames in self.snapshot().items()}


@dataclass
class StreamedArrays:
    """One scale's frames as arrays: timestamps (frame starts, s, float64), embedding (frames, dim),
    tags (frames, n_tags) or None, latency_ms (float32), plus the model and its tag names."""

    timestamps: np.ndarray
    embedding: np.ndarray
    tags: Optional[np.ndarray]
    latency_ms: np.ndarray
    model: str
    tag_names: tuple[str, ...]

    @classmethod
    def of(cls, frames: list[StreamFrame]) -> StreamedArrays:
        first = frames[0]
        return cls(
            timestamps=np.array([f.timestamp for f in frames], np.float64),
            embedding=np.stack([f.embedding for f in frames]).astype(np.float32),
            tags=None if first.tags is None
            else np.stack([f.tags for f in frames if f.tags is not None]).astype(np.float32),
            latency_ms=np.array([f.latency_ms for f in frames], np.float32),
            model=first.model, tag_names=first.tag_names,
        )


class ArraySink(FrameCollector):
    """Collects frames and writes them to ``path`` (.npz or .parquet) every ``flush_seconds`` and at the end.

    npz keys per scale label L (like '0.5s'): 'L/timestamp' (s), 'L/embedding', 'L/tags', 'L/latency_ms',
    'L/model', 'L/tag_names'; plus 'scales'. Parquet: one row per frame with scale, model, timestamp (s),
    latency_ms, embedding and tags columns, tag names per model in the schema metadata.

    The folder is probed for writability at once (MdeError). A write that fails later is retried at the
    next flush (``warn`` hears of the first failure); if the final write fails, the frames go to a file
    in the temporary folder instead: ``kept_in`` names it and ``write_error`` holds the failure.
    """

    def __init__(self, path: Path, flush_seconds: float = DEFAULT_FLUSH_SECONDS,
                 warn: Optional[Callable[[str], None]] = None) -> None:
        super().__init__()
        check_array_path(path)
        self.path = path
        self.write_error: Optional[OSError] = None
        self.kept_in: Optional[Path] = None
        self._warn = warn
        self._stop = threading.Event()
        self._write_lock = threading.Lock()
        self._flusher = threading.Thread(target=self._flush_loop, args=(flush_seconds,), daemon=True,
                                         name="mde-stream-flush")
        self._flusher.start()

    def _flush_loop(self, every: float) -> None:
        while not self._stop.wait(every):
            self.flush()

    def flush(self) -> None:
        """Rewrite the file with every frame so far (atomically; nothing if there is none yet).

        A failure is kept in ``write_error`` (cleared by the next success), never raised."""
        results = self.results()
        if not results:
            return
        with self._write_lock:
            try:
                _write_arrays(results, self.path)
            except OSError as exc:
                if self.write_error is None and self._warn is not None:
                    self._warn(f"warning: cannot write {self.path} ({_reason(exc)}); "
                               "the frames are kept and written again at the next flush")
                self.write_error = exc
            else:
                self.write_error = None

    def close(self, summary: StreamSummary) -> None:
        self._stop.set()
        self._flusher.join()
        self.flush()
        if self.write_error is not None:
            self.kept_in = _keep_elsewhere(self.results(), self.path)


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _keep_elsewhere(results: dict[float, StreamedArrays], path: Path) -> Optional[Path]:
    """Write ``results`` to a new file in the temporary folder ($TMPDIR) named after ``path``; None if that
    fails too."""
    try:
        fd, name = tempfile.mkstemp(prefix=f"mde-stream-{path.stem}-", suffix=path.suffix)
        os.close(fd)
        _write_arrays(results, Path(name))
    except OSError:
        return None
    return Path(name)


def _write_arrays(results: dict[float, StreamedArrays], path: Path) -> None:
    with atomic_path(path) as tmp:
        (_write_npz if path.suffix.lower() == ".npz" else _write_parquet)(results, tmp)


def _write_npz(results: dict[float, StreamedArrays], path: Path) -> None:
    arrays: dict[str, Any] = {"scales": np.array(sorted(results), np.float64)}
    for scale, r in results.items():
        key = scale_label(scale)
        arrays.update({
            f"{key}/timestamp": r.timestamps, f"{key}/embedding": r.embedding, f"{key}/latency_ms": r.latency_ms,
            f"{key}/tags": r.tags if r.tags is not None else np.zeros((len(r.timestamps), 0), np.float32),
            f"{key}/model": np.array(r.model), f"{key}/tag_names": np.array(r.tag_names, dtype=str),
        })
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


def _write_parquet(results: dict[float, StreamedArrays], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for scale, r in sorted(results.items()):
        n = len(r.timestamps)
        tags = r.tags if r.tags is not None else np.zeros((n, 0), np.float32)
        tables.append(pa.table({
            "scale": pa.array(np.full(n, scale), pa.float64()),
            "model": pa.array([r.model] * n, pa.string()),
            "timestamp": pa.array(r.timestamps, pa.float64()),
            "latency_ms": pa.array(r.latency_ms, pa.float32()),
            "embedding": pa.array(list(r.embedding), pa.list_(pa.float32())),
            "tags": pa.array(list(tags), pa.list_(pa.float32())),
        }))
    names = {r.model: list(r.tag_names) for r in results.values()}
    table = pa.concat_tables(tables).replace_schema_metadata({"mde.tag_names": json.dumps(names)})
    pq.write_table(table, path)
