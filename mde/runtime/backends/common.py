"""What every inference backend offers, and the checks they share."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from mde.errors import MdeError, ModelError
from mde.runtime.package import ModelInfo

BACKENDS = ("ort", "tensorrt", "torch")
DEVICES = ("cpu", "cuda")


class Backend(Protocol):
    """Runs a model's graph: ``run`` maps a float32 batch of network inputs ((batch, n_mels, frames)
    log-mels, or (batch, [channels,] samples) waveforms) to named (batch, size) float32 outputs."""

    info: ModelInfo
    output_names: list[str]

    def run(self, batch: np.ndarray, outputs: Sequence[str]) -> dict[str, np.ndarray]: ...


def check_outputs(info: ModelInfo, available: Sequence[str], requested: Sequence[str]) -> None:
    """Refuse output names the graph does not have."""
    unknown = [name for name in requested if name not in available]
    if unknown:
        raise ModelError(f"{info.name}: no output {unknown[0]!r}; it has {list(available)}")


def check_choice(backend: str, device: str) -> None:
    """Refuse unknown backend or device names."""
    if backend not in BACKENDS:
        raise MdeError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if device not in DEVICES:
        raise MdeError(f"unknown device {device!r}; choose from {', '.join(DEVICES)}")
    if backend == "tensorrt" and device != "cuda":
        raise MdeError("the tensorrt backend runs on CUDA only; use --device cuda")
