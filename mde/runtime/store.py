"""The model store: ``$MDE_HOME/models/<name>.onnx`` (``MDE_HOME`` defaults to ``~/.cache/mde``), the user's
own models, over the models bundled with mde (the package folder ``mde/models``, or ``$MDE_BUNDLED_MODELS``).

A name resolves to the user's model first, then to the bundled one: a user model of the same name wins.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from mde.atomic import atomic_path
from mde.errors import ModelError, ModelNotFound
from mde.runtime.package import ModelInfo, read_model_info

MODEL_SUFFIX = ".onnx"
BUNDLED_ENV = "MDE_BUNDLED_MODELS"
"""Environment variable naming a folder that replaces the package's bundled-models folder (tests use it)."""
_PACKAGE_MODELS = Path(__file__).resolve().parent.parent / "models"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def mde_home() -> Path:
    """Root of mde's per-user data."""
    return Path(os.environ.get("MDE_HOME") or Path.home() / ".cache" / "mde")


def models_dir() -> Path:
    """Folder holding the stored model files (not created here)."""
    return mde_home() / "models"


def bundled_models_dir() -> Path:
    """Folder holding the model files shipped with mde (it may not exist).

    The package folder ``mde/models``, unless the environment variable ``MDE_BUNDLED_MODELS`` names another
    folder (a test points it at tiny models, or at an empty folder to see none); an empty value is unset.
    """
    override = os.environ.get(BUNDLED_ENV)
    return Path(override).expanduser() if override else _PACKAGE_MODELS


def is_bundled(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a model file in the bundled folder (as opposed to the user's store or elsewhere)."""
    return Path(path).expanduser().resolve().parent == bundled_models_dir().resolve()


def check_name(name: str) -> str:
    """A model name is a plain file stem: letters, digits, '.', '_' and '-'."""
    if not _NAME.match(name) or name.endswith(MODEL_SUFFIX):
        raise ModelError(f"invalid model name {name!r}: use letters, digits, '.', '_' and '-'")
    return name


def model_path(name: str) -> Path:
    """Where the user's stored model of this name lives (it may not exist); imports and exports write here."""
    return models_dir() / f"{check_name(name)}{MODEL_SUFFIX}"


def bundled_path(name: str) -> Path:
    """Where a bundled model of this name would be (it may not exist)."""
    return bundled_models_dir() / f"{check_name(name)}{MODEL_SUFFIX}"


def find(name: str) -> Path | None:
    """The model file stored under ``name``: the user's first, then the bundled one; None when neither exists."""
    for path in (model_path(name), bundled_path(name)):
        if path.is_file():
            return path
    return None


def _names_in(folder: Path) -> set[str]:
    """Stems of the model files in ``folder`` that are valid model names (none when it is not a folder)."""
    if not folder.is_dir():
        return set()
    return {p.stem for p in folder.glob(f"*{MODEL_SUFFIX}") if p.is_file() and _NAME.match(p.stem)}


def stored_names() -> list[str]:
    """Names of every model available by name, the user's and the bundled ones, sorted, each once."""
    return sorted(_names_in(models_dir()) | _names_in(bundled_models_dir()))


def names_a_file(name_or_path: str | os.PathLike[str]) -> bool:
    """Whether ``name_or_path`` is a path to a model file (an ``.onnx`` suffix or a folder in it), not a name."""
    text = os.fspath(name_or_path)
    return Path(text).suffix == MODEL_SUFFIX or os.sep in text


def resolve(name_or_path: str | os.PathLike[str]) -> Path:
    """A model file from a name (the user's store first, then the bundled models) or a path to an ``.onnx`` file."""
    text = os.fspath(name_or_path)
    candidate = Path(text).expanduser()
    if names_a_file(text):
        if candidate.is_file():
            return candidate
        raise ModelNotFound(f"{text}: no such model file")
    found = find(text)
    if found is not None:
        return found
    known = ", ".join(stored_names()) or "none yet (see 'mde import --help')"
    raise ModelNotFound(f"unknown model {text!r}; available models: {known}")


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
    """The ``source`` metadata of the user's stored model ``name``; None when there is none or it is unreadable."""
    path = model_path(name)
    if not path.is_file():
        return None
    try:
        return read_model_info(path).source
    except ModelError:
        return None


def list_models() -> list[tuple[Path, ModelInfo | ModelError]]:
    """Every model available by name (the file a name resolves to: the user's, else the bundled one) with its
    metadata, or the error that reading it raised; :func:`is_bundled` tells the two apart."""
    rows: list[tuple[Path, ModelInfo | ModelError]] = []
    for name in stored_names():
        path = find(name)
        if path is None:  # removed since it was listed
            continue
        try:
            rows.append((path, read_model_info(path)))
        except ModelError as exc:
            rows.append((path, exc))
    return rows
