"""Per-band standardisation of a log-mel model's input, declared in the model file.

A log-mel network trained on standardised inputs (the multi-scale CNN) declares one :class:`BandNorm`: for
each mel band, the mean and the standard deviation of that band's log-mel values over the frames of the
training split, in the front end's log units (ln of power for ``log='ln'``, dB for ``'db'``). Its input
is then ``(logmel - mean[band]) / std[band]``, dimensionless. A stereo network (the third seed's) has one
mean and std per channel and band, as its source normalises over (clips, frames) only. The runtime applies it with
:func:`apply_band_norm` after the C front end, the trainer with its torch twin
(``mde.trainer.frontend.TorchBandNorm``), so no caller needs to know it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from mde.errors import ModelError


@dataclass(frozen=True)
class BandNorm:
    """mean, std: one value per mel band, low band first, in the front end's log units; every std > 0.
    With ``channels`` > 1, one run of bands per channel, channel after channel."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels: int = 1

    def __post_init__(self) -> None:
        problem = _problem(self)
        if problem:
            raise ModelError(f"bad band normalisation: {problem}")

    @property
    def n_bands(self) -> int:
        """Mel bands (per channel)."""
        return len(self.mean) // self.channels

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"mean": list(self.mean), "std": list(self.std)}
        return data if self.channels == 1 else {**data, "channels": self.channels}

    @classmethod
    def from_dict(cls, data: Any) -> BandNorm:
        """The normalisation a model file's metadata declares; ModelError (one line) for anything else."""
        if not isinstance(data, dict) or not {"mean", "std"} <= set(data) <= {"mean", "std", "channels"}:
            raise ModelError(f"bad band normalisation: expected an object with 'mean' and 'std' (and 'channels'), "
                             f"got {data!r:.80}")
        if not all(isinstance(data[key], list) for key in ("mean", "std")):
            raise ModelError("bad band normalisation: 'mean' and 'std' must be lists of numbers")
        return cls(tuple(data["mean"]), tuple(data["std"]), data.get("channels", 1))

    def constants(self) -> tuple[np.ndarray, np.ndarray]:
        """float32 mean and 1 / std, the constants every implementation standardises with: (n_bands, 1), or
        (channels, n_bands, 1) for more than one channel."""
        shape = (self.n_bands, 1) if self.channels == 1 else (self.channels, self.n_bands, 1)
        mean = np.asarray(self.mean, dtype=np.float32).reshape(shape)
        scale = (1.0 / np.asarray(self.std, dtype=np.float64)).astype(np.float32).reshape(shape)
        return mean, scale

    @classmethod
    def from_arrays(cls, mean: np.ndarray, std: np.ndarray) -> BandNorm:
        """From (n_bands,) or (channels, n_bands) arrays (any float dtype), kept as Python floats."""
        channels = mean.shape[0] if np.ndim(mean) == 2 else 1
        return cls(tuple(float(v) for v in np.ravel(mean)), tuple(float(v) for v in np.ravel(std)), channels)


def _problem(norm: BandNorm) -> str | None:
    if not (isinstance(norm.channels, int) and not isinstance(norm.channels, bool) and norm.channels >= 1):
        return f"channels must be a positive integer, got {norm.channels!r}"
    if len(norm.mean) != len(norm.std) or not norm.mean or len(norm.mean) % norm.channels:
        return (f"need as many means as deviations, at least one, a whole number of bands per channel, got "
                f"{len(norm.mean)} and {len(norm.std)} for {norm.channels} channel(s)")
    for key, values in (("mean", norm.mean), ("std", norm.std)):
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
            return f"{key} must hold finite numbers"
    if min(norm.std) <= 0:
        return f"every std must be positive, got {min(norm.std)!r}"
    return None


def apply_band_norm(norm: BandNorm, logmel: np.ndarray) -> np.ndarray:
    """``logmel`` (..., n_bands, frames), or (..., channels, n_bands, frames), float32 standardised per band
    (float32, same shape)."""
    if logmel.shape[-2] != norm.n_bands:
        raise ValueError(f"the normalisation has {norm.n_bands} bands, the log-mel {logmel.shape[-2]}")
    if norm.channels > 1 and (logmel.ndim < 3 or logmel.shape[-3] != norm.channels):
        raise ValueError(f"the normalisation has {norm.channels} channels, the log-mel has shape {logmel.shape}")
    mean, scale = norm.constants()
    standardised: np.ndarray = ((logmel - mean) * scale).astype(np.float32, copy=False)
    return standardised
