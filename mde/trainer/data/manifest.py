"""CSV manifests: any labelled audio collection as ``path,split,tags`` rows.

Format (UTF-8, comma-separated, quoted as the csv module does)::

    path,split,tags
    clips/00000.wav,train,piano|drums|fast
    /abs/path/song.mp3,valid,strings

``path`` is relative to the CSV's folder or absolute; ``split`` is one of train, valid, test; ``tags``
are joined by ``|`` (surrounding spaces are ignored; an empty field is a clip with no tags, allowed
only for multi-label data). An optional ``text`` column holds free text about each clip (a review, a
description, in any language; empty when there is none), read by the text targets. Columns may come in
any order and extra columns are ignored.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from mde.errors import MdeError
from mde.trainer.data.common import csv_records, require_files, top_k_by_count
from mde.trainer.data.dataset import SPLITS, Clip, TaggingDataset

COLUMNS = ("path", "split", "tags")
TEXT_COLUMN = "text"
TAG_SEPARATOR = "|"


class ManifestRow(NamedTuple):
    """One manifest line: an audio path, its split, its tags and its free text ('' for none)."""

    path: Path
    split: str
    tags: tuple[str, ...]
    text: str = ""


def load_manifest(path: Path, *, single_label: bool = False, top_k: int = 50) -> TaggingDataset:
    """Read a manifest into a dataset.

    The vocabulary is the sorted set of tags; with more than ``top_k`` distinct tags only the
    ``top_k`` most frequent are kept (ties broken by name). A multi-label clip keeps its row even if
    none of its tags is kept (all-zero labels); a single-label clip whose class is dropped is left out.
    With ``single_label`` every row must carry exactly one tag, and labels are one-hot.
    Raises MdeError (with the line number where one applies) for any malformed input, for a
    manifest without any tag, and for audio files that do not exist.
    """
    rows = read_manifest(path, single_label=single_label)
    counts = Counter(tag for row in rows for tag in row.tags)
    if not counts:
        raise MdeError(f"{path}: no row has a tag")
    ranked = sorted(counts)
    kept = sorted(ranked[i] for i in top_k_by_count([counts[t] for t in ranked], top_k))
    index = {tag: i for i, tag in enumerate(kept)}
    splits: dict[str, list[Clip]] = {name: [] for name in SPLITS}
    for row in rows:
        if single_label and row.tags[0] not in index:
            continue
        labels = np.zeros(len(kept), np.float32)
        labels[[index[t] for t in row.tags if t in index]] = 1.0
        splits[row.split].append(Clip(row.path, labels, row.text))
    return TaggingDataset(path.name, tuple(kept), single_label, splits)


def read_manifest(path: Path, *, single_label: bool = False) -> list[ManifestRow]:
    """Parse and check a manifest; paths come back resolved against the CSV's folder.

    Raises MdeError for a missing file or header column, a row with the wrong number of fields, an
    empty path, an unknown split, a row without exactly one tag when ``single_label``, a manifest
    without rows, and audio files that do not exist (up to 3 named, with the count).
    """
    if not path.is_file():
        raise MdeError(f"{path}: manifest not found")
    records = csv_records(path)
    header = [name.strip() for name in next(records, (0, []))[1]]
    lacking = [name for name in COLUMNS if name not in header]
    if lacking:
        raise MdeError(f"{path}: the header lacks column(s) {', '.join(lacking)} (expected {','.join(COLUMNS)})")
    columns = [header.index(name) for name in (*COLUMNS, TEXT_COLUMN) if name in header]
    rows = [
        _parse_row(fields, header, columns, path, line, single_label)
        for line, fields in records
        if any(field.strip() for field in fields)
    ]
    if not rows:
        raise MdeError(f"{path}: the manifest has no rows")
    require_files([row.path for row in rows], str(path))
    return rows


def write_manifest(rows: Iterable[ManifestRow | tuple[Path, str, Sequence[str]]], path: Path) -> Path:
    """Write rows (path, split, tags[, text]) as a manifest CSV at ``path`` and return ``path``; the
    ``text`` column is written when some row has text.

    Audio paths inside the CSV's folder are written relative to it (with '/'), others absolute.
    Raises MdeError for an unknown split or a tag that is empty or contains '|'.
    """
    folder = path.parent.resolve()
    lines = []
    texts = []
    for audio, split, tags, *text in rows:
        texts.append(text[0] if text else "")
        if split not in SPLITS:
            raise MdeError(f"{audio}: split {split!r} is not one of {', '.join(SPLITS)}")
        bad = [t for t in tags if not t.strip() or TAG_SEPARATOR in t or t != t.strip()]
        if bad:
            raise MdeError(
                f"{audio}: tag {bad[0]!r} is empty, padded with spaces or contains {TAG_SEPARATOR!r}"
            )
        lines.append((_relative_to(Path(audio), folder), split, TAG_SEPARATOR.join(tags)))
    with_text = any(texts)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow((*COLUMNS, TEXT_COLUMN) if with_text else COLUMNS)
        writer.writerows([(*line, text) for line, text in zip(lines, texts)] if with_text else lines)
    return path


def _parse_row(
    fields: list[str], header: list[str], columns: list[int], path: Path, line: int, single_label: bool
) -> ManifestRow:
    """One data row -> ManifestRow; ``line`` is its line number in the file (for messages)."""
    where = f"{path}:{line}"
    if len(fields) != len(header):
        raise MdeError(f"{where}: expected {len(header)} fields ({','.join(header)}), got {len(fields)}")
    audio, split, tag_field, *text = (fields[i].strip() for i in columns)
    if not audio:
        raise MdeError(f"{where}: empty path")
    if split not in SPLITS:
        raise MdeError(f"{where}: split {split!r} is not one of {', '.join(SPLITS)}")
    tags = tuple(dict.fromkeys(t.strip() for t in tag_field.split(TAG_SEPARATOR) if t.strip()))
    if single_label and len(tags) != 1:
        raise MdeError(
            f"{where}: a single-label manifest needs exactly one tag per row, got {len(tags)} ({tag_field!r})"
        )
    return ManifestRow(path.parent / audio, split, tags, text[0] if text else "")


def _relative_to(audio: Path, folder: Path) -> str:
    """``audio`` relative to ``folder`` in '/' form when it lies inside it, else its absolute path."""
    resolved = audio.resolve()
    if resolved.is_relative_to(folder):
        return resolved.relative_to(folder).as_posix()
    return os.fspath(resolved)
