"""Outputs on a pyarrow filesystem: ``mde embed -o s3://bucket/emb`` (or ``gs://``, ``hdfs://``, ``file://``...).

An output folder given as a URI is a :class:`RemotePath`; a file in it is one too. The batch treats it as
it treats a local :class:`~pathlib.Path` (``/``, ``name``, ``exists()``, ``is_dir()``), and the few steps
that touch bytes go through this module:

- :func:`written_atomically` writes an output to a local temporary file first, uploads it to
  ``.<name>.<random>.part`` in the folder and moves that onto the output's name (the local batch's
  atomic rename; an object store's move is a copy whose object appears whole), so a reader never sees a
  part and a killed upload leaves only a part file, which :func:`remove_stale_remote_parts` clears.
- :func:`on_local_file` reads an output through a downloaded copy (the up-to-date check of a rerun).

The filesystem comes from :func:`pyarrow.fs.FileSystem.from_uri` (credentials as pyarrow reads them: the
environment, the cloud's configuration files), made once per folder and process.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from mde.atomic import part_name, part_of, remove_stale_parts
from mde.errors import MdeError

_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+://")
"""A URI's scheme and '://' (two letters at least: 'C:/' is a Windows drive, not a scheme)."""
_COPY_CHUNK = 1 << 20


def is_uri(text: str) -> bool:
    """Whether ``text`` names a folder by URI ('s3://bucket/emb') rather than a local path."""
    return bool(_URI.match(text))


@dataclass(frozen=True)
class RemotePath:
    """A file or folder on a pyarrow filesystem, by URI (picklable: it travels to Ray actors)."""

    uri: str

    def __str__(self) -> str:
        return self.uri

    def __truediv__(self, name: str) -> RemotePath:
        return RemotePath(f"{self.uri.rstrip('/')}/{name}")

    @property
    def name(self) -> str:
        return self.uri.rstrip("/").rpartition("/")[2]

    @property
    def parent(self) -> RemotePath:
        return RemotePath(self.uri.rstrip("/").rpartition("/")[0])

    @property
    def _location(self) -> tuple[Any, str]:
        """(the pyarrow filesystem, this file's path on it)."""
        folder, _, name = self.uri.rstrip("/").rpartition("/")
        fs, path = _filesystem(folder)
        return fs, f"{path.rstrip('/')}/{name}"

    def _type(self) -> Any:
        import pyarrow.fs as pafs

        fs, path = self._location
        return pafs, fs.get_file_info(path).type

    def exists(self) -> bool:
        pafs, kind = self._type()
        return bool(kind != pafs.FileType.NotFound)

    def is_dir(self) -> bool:
        pafs, kind = self._type()
        return bool(kind == pafs.FileType.Directory)


OutputPath = Union[Path, RemotePath]
"""Where one output goes, or the folder of a batch's outputs: a local path or a :class:`RemotePath`."""


def output_path(text: str | os.PathLike[str]) -> OutputPath:
    """A RemotePath for a URI, else a local Path."""
    text = os.fspath(text)
    return RemotePath(text) if is_uri(text) else Path(text)


@functools.lru_cache(maxsize=16)
def _filesystem(folder_uri: str) -> tuple[Any, str]:
    """(pyarrow filesystem, path on it) of a folder URI; MdeError (one line) when pyarrow cannot open it."""
    import pyarrow.fs as pafs

    try:
        fs, path = pafs.FileSystem.from_uri(folder_uri)
    except Exception as exc:  # ArrowInvalid for a scheme pyarrow lacks, OSError for credentials or network
        raise MdeError(f"cannot open {folder_uri}: {str(exc).strip().splitlines()[0]}") from None
    return fs, str(path)


def check_remote_folder(folder: RemotePath) -> None:
    """MdeError (one line) unless files can be created in ``folder`` (created if missing): checked by
    writing and deleting a small object, since permissions are the store's to decide."""
    fs, path = _filesystem(folder.uri.rstrip("/"))
    probe = f"{path.rstrip('/')}/{part_name('mde-probe')}"
    try:
        fs.create_dir(path, recursive=True)
        with fs.open_output_stream(probe) as stream:
            stream.write(b"")
        fs.delete_file(probe)
    except OSError as exc:
        raise MdeError(f"cannot write outputs to {folder}: {str(exc).strip().splitlines()[0]}") from None


@contextmanager
def written_atomically(target: RemotePath) -> Iterator[Path]:
    """A local temporary path for the block to write; when the block succeeds it becomes ``target``
    (uploaded to a part file beside it, then moved onto it). On any exception nothing stays behind but
    what a kill mid-upload leaves (a part file). OSError when the upload fails."""
    fs, path = target._location
    with tempfile.TemporaryDirectory(prefix="mde-upload-") as folder:
        local = Path(folder) / target.name
        yield local
        part = f"{path.rpartition('/')[0]}/{part_name(target.name)}"
        try:
            with open(local, "rb") as source, fs.open_output_stream(part) as sink:
                shutil.copyfileobj(source, sink, _COPY_CHUNK)
            fs.move(part, path)
        except BaseException:
            _delete_quietly(fs, part)
            raise


@contextmanager
def local_copy(target: RemotePath) -> Iterator[Path]:
    """``target`` downloaded to a local temporary file for the block (removed after it)."""
    fs, path = target._location
    with tempfile.TemporaryDirectory(prefix="mde-download-") as folder:
        local = Path(folder) / target.name
        with fs.open_input_stream(path) as source, open(local, "wb") as sink:
            shutil.copyfileobj(source, sink, _COPY_CHUNK)
        yield local


def remove_stale_remote_parts(targets: Iterable[RemotePath]) -> list[RemotePath]:
    """Remove the part files that killed uploads of ``targets`` left in their folders (one listing per
    folder); call it only while nothing else writes those targets. Returns what was removed."""
    import pyarrow.fs as pafs

    wanted: dict[RemotePath, set[str]] = {}
    for target in targets:
        wanted.setdefault(target.parent, set()).add(target.name)
    removed = []
    for folder, names in wanted.items():
        fs, path = _filesystem(folder.uri)
        for info in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True)):
            if info.type == pafs.FileType.File and part_of(info.base_name) in names:
                _delete_quietly(fs, info.path)
                removed.append(folder / info.base_name)
    return removed


def _delete_quietly(fs: Any, path: str) -> None:
    with suppress(OSError):
        fs.delete_file(path)


def remove_partial_outputs(targets: Iterable[OutputPath]) -> None:
    """Remove what interrupted writes of ``targets`` left (local part files, remote part uploads); call it
    only while nothing else writes those targets."""
    local: list[Path] = []
    remote: list[RemotePath] = []
    for target in targets:
        if isinstance(target, Path):
            local.append(target)
        else:
            remote.append(target)
    remove_stale_parts(local)
    remove_stale_remote_parts(remote)


def on_local_file(target: OutputPath, use: Callable[[Path], Any]) -> Any:
    """``use`` of ``target`` as a local file (a downloaded copy for a RemotePath)."""
    if isinstance(target, Path):
        return use(target)
    with local_copy(target) as local:
        return use(local)
