"""Writing embedding results to .npz, Parquet or JSON lines, never leaving a half-written file.

Each writer fills a temporary file beside the target and renames it into place only when complete,
so a killed batch leaves either a whole output or none.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from mde.runtime.extractor import EmbeddingResult

FORMATS = ("npz", "parquet", "jsonl")


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """A temporary path in ``target``'s folder that is renamed to ``target`` if the block succeeds."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _write_npz(result: EmbeddingResult, path: Path) -> None:
    with open(path, "wb") as handle:
        np.savez(
            handle,
            embedding=result.embedding,
            tags=result.tags if result.tags is not None else np.zeros((len(result.timestamps), 0), np.float32),
            timestamps=result.timestamps,
            tag_names=np.array(result.tag_names, dtype=str),
            model=np.array(result.model),
            layer=np.array(result.layer),
            padded=np.array(result.padded),
            duration=np.array(result.duration),
        )


def _write_parquet(result: EmbeddingResult, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = len(result.timestamps)
    columns = {
        "source": pa.array([result.source or ""] * n, pa.string()),
        "model": pa.array([result.model] * n, pa.string()),
        "timestamp": pa.array(result.timestamps, pa.float64()),
        "embedding": pa.FixedSizeListArray.from_arrays(
            pa.array(result.embedding.reshape(-1), pa.float32()), result.embedding.shape[1]
        ),
    }
    if result.tags is not None:
        columns["tags"] = pa.FixedSizeListArray.from_arrays(
            pa.array(result.tags.reshape(-1), pa.float32()), result.tags.shape[1]
        )
    metadata = {
        "mde.tag_names": json.dumps(list(result.tag_names)),
        "mde.layer": result.layer,
        "mde.padded": json.dumps(result.padded),
    }
    table = pa.table(columns).replace_schema_metadata(metadata)
    pq.write_table(table, path)


def _write_jsonl(result: EmbeddingResult, path: Path) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for i, start in enumerate(result.timestamps):
            row: dict[str, object] = {
                "source": result.source,
                "model": result.model,
                "t": float(start),
                "embedding": result.embedding[i].tolist(),
            }
            if result.tags is not None:
                row["tags"] = dict(zip(result.tag_names, result.tags[i].tolist()))
            handle.write(json.dumps(row) + "\n")


_WRITERS: dict[str, Callable[[EmbeddingResult, Path], None]] = {
    "npz": _write_npz,
    "parquet": _write_parquet,
    "jsonl": _write_jsonl,
}


def write_result(result: EmbeddingResult, target: Path, fmt: str) -> Path:
    """Write ``result`` to ``target`` in format ``fmt`` ('npz', 'parquet' or 'jsonl') atomically."""
    if fmt not in _WRITERS:
        raise ValueError(f"unknown format {fmt!r}; choose from {FORMATS}")
    with atomic_path(target) as tmp:
        _WRITERS[fmt](result, tmp)
    return target
