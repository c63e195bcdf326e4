"""The CUDA device as torch sees it (torch is imported lazily, only when a CUDA backend is asked for)."""

from __future__ import annotations

import re
from typing import Any

from mde.errors import MdeError, MissingExtraError


def import_torch(purpose: str) -> Any:
    """The torch module, or MissingExtraError naming ``purpose``."""
    try:
        import torch
    except ImportError:
        raise MissingExtraError("torch", "export", purpose) from None
    return torch


def require_cuda(purpose: str) -> Any:
    """torch, after checking that it sees a CUDA GPU; a one-line MdeError otherwise."""
    torch = import_torch(purpose)
    if not torch.cuda.is_available():
        raise MdeError(f"{purpose} needs a CUDA GPU, and torch finds none (torch.cuda.is_available() is False)")
    return torch


def gpu_slug(torch: Any) -> str:
    """The current GPU's name in lower case, runs of other characters as '-' (e.g. 'nvidia-h100-80gb-hbm3')."""
    return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name().lower()).strip("-")
