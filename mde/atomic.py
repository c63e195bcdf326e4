"""Writing a file so that readers see the old file or the whole new one, never a part.

Every file mde writes goes through :func:`atomic_path` (or :func:`write_bytes_atomic`): the content is
written to ``.<name>.<random>.part`` beside the target and renamed onto it only when complete. The
temporary file is removed on any failure, KeyboardInterrupt included; only a SIGKILL (or a power cut)
can leave one behind, and :func:`remove_stale_parts` clears those before the target is written again.

Files are created with mode ``0o666`` minus the umask, as ``open()`` would create them (not the 0600
of :func:`tempfile.mkstemp`). This module imports nothing from mde, so every layer may use it.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

PART_SUFFIX = ".part"
_RANDOM_HEX = 8  # characters of the random part of a temporary name
# what _create_part names (and what tempfile.mkstemp named before): the target's name is group 1
_PART = re.compile(rf"\.(.+)\.[a-z0-9_]{{{_RANDOM_HEX}}}{re.escape(PART_SUFFIX)}")


def part_name(name: str) -> str:
    """A fresh temporary name for a file called ``name``: ``.<name>.<8 random hex digits>.part``."""
    return f".{name}.{secrets.token_hex(_RANDOM_HEX // 2)}{PART_SUFFIX}"


def part_of(name: str) -> str | None:
    """The target name whose temporary file is called ``name`` (see :func:`part_name`), or None."""
    match = _PART.fullmatch(name)
    return match.group(1) if match else None


def _create_part(target: Path) -> Path:
    """Create ``.<name>.<8 hex digits>.part`` beside ``target``, empty, mode 0o666 minus the umask."""
    while True:
        tmp = target.with_name(part_name(target.name))
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp


def _fsync(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(target: str | os.PathLike[str], fsync: bool = False) -> Iterator[Path]:
    """A temporary path beside ``target`` (its folder is created) that becomes ``target`` if the block
    succeeds; on any exception it is removed and the exception goes on.

    The temporary file exists (empty) when the block starts; the block writes it by path.
    fsync: flush the file and the folder to disk before and after the rename (for files that must
      survive a power cut, such as stored models), at the cost of a disk flush.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_part(target)
    try:
        yield tmp
        if fsync:
            _fsync(tmp)
        os.replace(tmp, target)
        if fsync:
            _fsync(target.parent, directory=True)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(target: str | os.PathLike[str], data: bytes, fsync: bool = False) -> Path:
    """Write ``data`` to ``target`` through :func:`atomic_path`; returns the target."""
    with atomic_path(target, fsync=fsync) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def stale_parts(targets: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Temporary files that interrupted writes of ``targets`` left beside them (one folder scan per folder)."""
    wanted: dict[Path, set[str]] = {}
    for target in map(Path, targets):
        wanted.setdefault(target.parent, set()).add(target.name)
    found: list[Path] = []
    for folder, names in wanted.items():
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            if part_of(entry.name) in names and entry.is_file(follow_symlinks=False):
                found.append(Path(entry.path))
    return found


def remove_stale_parts(targets: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Remove the temporary files that interrupted writes of ``targets`` left (a SIGKILL mid-write);
    call it only while no other process writes those targets. Returns what was removed."""
    removed = stale_parts(targets)
    for path in removed:
        path.unlink(missing_ok=True)
    return removed
