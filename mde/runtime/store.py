"""The model store: ``$MDE_HOME/models/<name>.onnx`` (``MDE_HOME`` defaults to ``~/.cache/mde``)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from mde.atomic import atomic_path
from mde.errors import ModelError, ModelNotFound
from mde.runtime.package import ModelInfo, read_model_info

MODEL_SUFFIX = ".onnx"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def mde_home() -> Path:
    """Root of mde's per-user data."""
    return Path(os.environ.get("MDE_HOME") or Path.home() / ".cache" / "mde")


def models_dir() -> Path:
    """Folder holding the stored model files (not created here)."""
    return mde_home() / "models"


def check_name(name: str) -> str:
    """A model name is a plain file stem: letters, digits, '.', '_' and '-'."""
    if not _NAME.match(name) or name.endswith(MODEL_SUFFIX):
        raise ModelError(f"invalid model name {name!r}: use letters, digits, '.', '_' and '-'")
    return name


def model_path(name: str) -> Path:
    """Where a stored model of this name lives (it may not exist)."""
    return models_dir() / f"{check_name(name)}{MODEL_SUFFIX}"


def stored_names() -> list[str]:
    """Names of the stored models, sorted."""
    folder = models_dir()
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob(f"*{MODEL_SUFFIX}") if p.is_file())


def resolve(name_or_path: str | os.PathLike[str]) -> Path:
    """A model file from a store name or a path to an ``.onnx`` file."""
    text = os.fspath(name_or_path)
    candidate = Path(text).expanduser()
    if candidate.suffix == MODEL_SUFFIX or os.sep in text:
        if candidate.is_file():
            return candidate
        raise ModelNotFound(f"{text}: no such model file")
    stored = model_path(text)
    if stored.is_file():
        return stored
    known = ", ".join(stored_names()) or "none yet (see 'mde import --help')"
    raise ModelNotFound(f"unknown model {text!r}; stored models: {known}")


def save(onnx_bytes: bytes, name: str, overwrite: bool = False) -> Path:
    """Store a serialized model under ``name`` atomically (see :func:`mde.atomic.atomic_path`).

    The bytes must carry mde metadata whose name equals ``name``; that is checked before the rename.
    """
    target = model_path(name)
    if target.exists() and not overwrite:
        raise ModelError(f"model {name!r} already exists at {target} (use --overwrite to replace it)")
    with atomic_path(target, fsync=True) as tmp:
        tmp.write_bytes(onnx_bytes)
        info = read_model_info(tmp)
        if info.name != name:
            raise ModelError(f"model metadata names {info.name!r}, not {name!r}")
    return target


def stored_source(name: str) -> str | None:
    """The ``source`` metadata of the stored model ``name``; None when there is none or it is unreadable."""
    path = model_path(name)
    if not path.is_file():
        return None
    try:
        return read_model_info(path).source
    except ModelError:
        return None


def list_models() -> list[tuple[Path, ModelInfo | ModelError]]:
    """Every stored model with its metadata, or the error that reading it raised."""
    rows: list[tuple[Path, ModelInfo | ModelError]] = []
    for name in stored_names():
        path = model_path(name)
        try:
            rows.append((path, read_model_info(path)))
        except ModelError as exc:
            rows.append((path, exc))
    return rows
