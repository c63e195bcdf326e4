"""mde: music deep embeddings.

The top-level names are loaded lazily so that ``import mde`` stays fast and never imports torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "FrontendConfig": "mde.runtime.frontend_config",
    "MelSpectrogram": "mde.runtime.frontend",
    "load_audio": "mde.audio",
    "load_model": "mde.runtime.extractor",
    "Model": "mde.runtime.extractor",
    "EmbeddingResult": "mde.runtime.extractor",
    "ModelInfo": "mde.runtime.package",
}

__all__ = ["__version__", *_LAZY]  # noqa: PLE0604  (the keys of _LAZY are strings)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mde' has no attribute {name!r}")
