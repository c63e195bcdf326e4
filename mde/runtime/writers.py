"""Writing embedding results to .npz, Parquet or JSON lines, each output recording how it was made.

Every output is written through :func:`mde.atomic.atomic_path`, so a killed batch leaves either a whole
output or none, and carries its :class:`OutputSettings`, so a resumed batch reuses only outputs made
with the same model file and settings (:func:`reuse_problem`). Time is ``timestamp`` (seconds from the
start of the file to the start of the frame, also when only a span from ``offset`` was embedded) in every
format. The layout of each format:

npz
    Arrays ``embedding`` (frames, dim) float32, ``tags`` (frames, n_tags) float32 (n_tags = 0 for a model
    without tags), ``timestamp`` (frames,) float64 seconds, ``tag_names`` (n_tags,) str, and 0-d arrays
    ``model``, ``padded``, ``duration`` (s) and the settings: ``model_sha256``, ``layer``, ``window`` (s),
    ``hop`` (s), ``pad``, ``sample_rate`` (Hz), ``offset`` (s), ``max_duration`` (s), ``format_version``.
parquet
    A row per frame: ``source``, ``model``, ``timestamp`` (s), ``embedding`` and ``tags`` (fixed-size
    lists). The schema metadata holds ``mde.<key>`` = JSON value for ``tag_names``, ``padded``,
    ``duration`` and every setting.
jsonl
    The first line is a header object ``{"mde": {...}}`` holding ``model``, ``source``, ``tag_names``,
    ``padded``, ``duration`` and every setting; each further line is one frame:
    ``{"source", "model", "timestamp", "embedding": [...], "tags": {name: p}}``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from mde.atomic import atomic_path
from mde.runtime.extractor import EmbeddingResult
from mde.runtime.remote import OutputPath, written_atomically

FORMATS = ("npz", "parquet", "jsonl")
FORMAT_VERSION = 2
"""Layout version of the outputs: 1 had no settings and called the time ``timestamps`` (npz) or ``t``
(jsonl); 2 is described in this module's docstring."""


@dataclass(frozen=True)
class OutputSettings:
    """What an output was made with. A resumed batch reuses an output only if all of these match.

    model_sha256: hex SHA-256 of the model file's bytes.
    layer: the model output stored as the embedding.
    window, hop: frame length and step, in seconds.
    pad: whether clips shorter than one window are zero-padded to one window.
    sample_rate: the model's sample rate in Hz.
    offset: seconds from the start of the file where the embedded span starts.
    max_duration: the most seconds embedded from ``offset``; 0 for 'to the end'.
    format_version: :data:`FORMAT_VERSION` of the writer that made the output.
    """

    model_sha256: str
    layer: str
    window: float
    hop: float
    pad: bool
    sample_rate: int
    offset: float = 0.0
    max_duration: float = 0.0
    format_version: int = FORMAT_VERSION

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SETTING_KEYS = tuple(f.name for f in dataclasses.fields(OutputSettings))
_LATER_SETTINGS = {"offset": 0.0, "max_duration": 0.0}
"""Settings added within format version 2, and what an output made before them was made with (the whole file)."""


def _described(result: EmbeddingResult, settings: OutputSettings) -> dict[str, Any]:
    """The per-file facts and settings that every format stores beside the frames."""
    return {"model": result.model, "source": result.source, "tag_names": list(result.tag_names),
            "padded": result.padded, "duration": result.duration, **settings.as_dict()}


def _write_npz(result: EmbeddingResult, settings: OutputSettings, path: Path) -> None:
    facts = _described(result, settings)
    del facts["source"]
    arrays: dict[str, Any] = {key: np.array(value, dtype=str if key == "tag_names" else None)
                              for key, value in facts.items()}
    tags = result.tags if result.tags is not None else np.zeros((len(result.timestamps), 0), np.float32)
    with open(path, "wb") as handle:
        np.savez(handle, embedding=result.embedding, tags=tags, timestamp=result.timestamps, **arrays)


def _read_npz(path: Path) -> dict[str, Any]:
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}  # reads (and CRC-checks) every member
    settings = {key: arrays[key].item() for key in SETTING_KEYS if key in arrays}
    return _complete(settings, arrays, ("embedding", "tags", "timestamp"))


def _write_parquet(result: EmbeddingResult, settings: OutputSettings, path: Path) -> None:
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
    facts = _described(result, settings)
    metadata = {f"mde.{key}": json.dumps(facts[key]) for key in ("tag_names", "padded", "duration", *SETTING_KEYS)}
    pq.write_table(pa.table(columns).replace_schema_metadata(metadata), path)


def _read_parquet(path: Path) -> dict[str, Any]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    metadata = table.schema.metadata or {}
    stored = {key: metadata.get(f"mde.{key}".encode()) for key in SETTING_KEYS}
    settings = {key: json.loads(value) for key, value in stored.items() if value is not None}
    return _complete(settings, table.column_names, ("embedding", "timestamp"))


def _write_jsonl(result: EmbeddingResult, settings: OutputSettings, path: Path) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(json.dumps({"mde": _described(result, settings)}) + "\n")
        for i, start in enumerate(result.timestamps):
            row: dict[str, object] = {
                "source": result.source,
                "model": result.model,
                "timestamp": float(start),
                "embedding": result.embedding[i].tolist(),
            }
            if result.tags is not None:
                row["tags"] = dict(zip(result.tag_names, result.tags[i].tolist()))
            handle.write(json.dumps(row) + "\n")


def _read_jsonl(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        header, *rows = (json.loads(line) for line in handle)
    described = header.get("mde") if isinstance(header, dict) else None
    settings = {key: described[key] for key in SETTING_KEYS if key in described} if isinstance(described, dict) else {}
    for row in rows:
        _complete(settings, row, ("timestamp", "embedding"))
    return settings


def _complete(settings: dict[str, Any], present: Iterable[str], needed: tuple[str, ...]) -> dict[str, Any]:
    """``settings``, after checking that an output of this version holds every ``needed`` field."""
    missing = set(needed) - set(present) if settings.get("format_version") == FORMAT_VERSION else set()
    if missing:
        raise ValueError(f"no {', '.join(sorted(missing))}")
    return settings


_WRITERS: dict[str, Callable[[EmbeddingResult, OutputSettings, Path], None]] = {
    "npz": _write_npz,
    "parquet": _write_parquet,
    "jsonl": _write_jsonl,
}
_READERS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "npz": _read_npz,
    "parquet": _read_parquet,
    "jsonl": _read_jsonl,
}


def _check_format(fmt: str) -> None:
    if fmt not in _WRITERS:
        raise ValueError(f"unknown format {fmt!r}; choose from {FORMATS}")


def write_result(result: EmbeddingResult, target: OutputPath, fmt: str, settings: OutputSettings) -> OutputPath:
    """Write ``result``, made with ``settings``, to ``target`` (a local path, or a file on a pyarrow
    filesystem) in format ``fmt`` ('npz', 'parquet' or 'jsonl') atomically. OSError when the file cannot be
    written (nothing is left behind then)."""
    _check_format(fmt)
    with atomic_path(target) if isinstance(target, Path) else written_atomically(target) as tmp:
        _WRITERS[fmt](result, settings, tmp)
    return target


def reuse_problem(target: Path, fmt: str, settings: OutputSettings) -> Optional[str]:
    """None when ``target`` is a complete ``fmt`` output made with ``settings``; otherwise why it is not,
    as words that follow the file's name ("is empty (0 bytes)", "was made with other settings (...)")."""
    _check_format(fmt)
    if target.stat().st_size == 0:
        return "is empty (0 bytes)"
    try:
        stored = _READERS[fmt](target)
    except Exception as exc:  # a damaged file raises whatever its reader raises; it is simply remade
        reason = str(exc).split(". ")[0]  # the first sentence: numpy goes on to explain pickles
        return f"is unreadable ({type(exc).__name__}: {reason})"
    stored = {**_LATER_SETTINGS, **stored}
    if stored.get("format_version") != FORMAT_VERSION or set(stored) != set(SETTING_KEYS):
        return "was made by another version of mde"
    wanted = settings.as_dict()
    changed = [f"{key} {_shown(key, stored[key])}, now {_shown(key, wanted[key])}"
               for key in SETTING_KEYS if stored[key] != wanted[key]]
    return f"was made with other settings ({'; '.join(changed)})" if changed else None


def _shown(key: str, value: Any) -> str:
    """A setting as a note shows it: the model digest shortened to 12 hex digits, seconds with 's'."""
    if key == "model_sha256":
        return f"{str(value)[:12]}..."
    return f"{value:g} s" if key in ("window", "hop", "offset", "max_duration") and isinstance(value, (int, float)) \
        else str(value)
