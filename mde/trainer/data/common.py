"""Small helpers the data sources share: CSV reading, frequency ranking of tags, the missing-file check."""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from mde.errors import MdeError

_SHOWN_MISSING = 3
"""How many missing files an error message names before it only counts the rest."""


def csv_records(path: Path, delimiter: str = ",") -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each record of a UTF-8 CSV file (a byte-order mark is skipped).

    The line number is that of the record's last line. Undecodable bytes or a malformed quote are
    an MdeError naming the file.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, delimiter=delimiter)
            for fields in reader:
                yield reader.line_num, fields
    except (UnicodeDecodeError, csv.Error) as e:
        raise MdeError(f"{path}: not a readable UTF-8 CSV file ({e})") from None


def top_k_by_count(counts: Sequence[int] | np.ndarray, k: int) -> list[int]:
    """Indices of the ``k`` largest counts, largest first; ties keep their original order."""
    if k < 1:
        raise MdeError(f"top_k must be at least 1, got {k}")
    order = np.argsort(-np.asarray(counts, dtype=np.int64), kind="stable")
    return [int(i) for i in order[:k]]


def require_files(paths: Sequence[Path], origin: str) -> None:
    """Raise MdeError if any of ``paths`` is not a file: up to 3 are named, with the total count.

    ``origin`` (a file or folder the paths come from) starts the message.
    """
    missing = [p for p in paths if not p.is_file()]
    if not missing:
        return
    shown = ", ".join(str(p) for p in missing[:_SHOWN_MISSING])
    more = f" and {len(missing) - _SHOWN_MISSING} more" if len(missing) > _SHOWN_MISSING else ""
    raise MdeError(f"{origin}: {len(missing)} audio file(s) missing: {shown}{more}")
