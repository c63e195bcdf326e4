"""What a waveform network expects done to its audio before it sees it, declared in the model file.

Samples arrive as float32 at full scale [-1, 1] (``mde.audio``). A waveform model declares one
:class:`InputTransform`; the runtime and the trainer both apply it with :func:`apply_transform` (numpy)
or its torch twin in ``mde.trainer``, so no caller needs to know it:

- 'none': the samples as they are;
- 'gain': the samples times ``gain`` (SoundNet's recipe: x256, so full scale is [-256, 256]);
- 'mulaw': with ``peak_normalize`` the whole signal divided by its peak absolute value first (a silent
  signal stays zero), then mu-law companding sign(x) ln(1 + mu |x|) / ln(1 + mu) with ``mu``
  (JETATAG's recipe: mu 255), giving values in [-1, 1].

Peak normalisation is per network input: the runtime and the trainer apply the transform to each window
after cutting it, so offline and streaming extraction give the same frames.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from mde.errors import ModelError

TransformKind = Literal["none", "gain", "mulaw"]
KINDS: tuple[str, ...] = ("none", "gain", "mulaw")


@dataclass(frozen=True)
class InputTransform:
    """kind: 'none', 'gain' or 'mulaw'. gain: the factor of 'gain' (dimensionless). mu: the mu-law
    parameter of 'mulaw' (a positive whole number, 255 for 8-bit mu-law). peak_normalize: for 'mulaw',
    divide the signal by its peak absolute value before companding."""

    kind: TransformKind = "none"
    gain: float = 1.0
    mu: int = 255
    peak_normalize: bool = False

    def __post_init__(self) -> None:
        problem = _problem(self)
        if problem:
            raise ModelError(f"bad input transform: {problem}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> InputTransform:
        """The transform a model file's metadata declares; ModelError (one line) for anything else."""
        if not isinstance(data, dict):
            raise ModelError(f"bad input transform: expected an object, got {data!r}")
        unknown = set(data) - {"kind", "gain", "mu", "peak_normalize"}
        if unknown:
            raise ModelError(f"bad input transform: unknown fields {', '.join(sorted(unknown))}")
        return cls(**data)


def _problem(transform: InputTransform) -> str | None:
    if transform.kind not in KINDS:
        return f"kind must be one of {', '.join(KINDS)}, got {transform.kind!r}"
    gain = transform.gain
    if isinstance(gain, bool) or not isinstance(gain, (int, float)) or not math.isfinite(gain) or gain <= 0:
        return f"gain must be a positive finite number, got {gain!r}"
    mu = transform.mu
    if isinstance(mu, bool) or not isinstance(mu, int) or mu < 1:
        return f"mu must be a positive whole number, got {mu!r}"
    if not isinstance(transform.peak_normalize, bool):
        return f"peak_normalize must be true or false, got {transform.peak_normalize!r}"
    return None


IDENTITY = InputTransform()
SOUNDNET_GAIN = InputTransform("gain", gain=256.0)
"""SoundNet's input scaling: samples in [-256, 256]."""
MULAW_PEAK = InputTransform("mulaw", mu=255, peak_normalize=True)
"""JETATAG's waveform encoders: peak-normalised, then mu-law with mu 255."""


def apply_transform(transform: InputTransform, signal: np.ndarray) -> np.ndarray:
    """``signal`` (float32, samples on the last axis, full scale [-1, 1]) as the network takes it
    (float32, same shape). Peak normalisation is over the last axis, so each row of a batch is its own
    signal."""
    x = np.asarray(signal, dtype=np.float32)
    if transform.kind == "gain":
        return (x * np.float32(transform.gain)).astype(np.float32, copy=False)
    if transform.kind == "mulaw":
        if transform.peak_normalize:
            peak = np.max(np.abs(x), axis=-1, keepdims=True)
            x = (x / np.where(peak > 0, peak, np.float32(1.0))).astype(np.float32, copy=False)
        mu = np.float32(transform.mu)
        companded: np.ndarray = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
        return companded.astype(np.float32, copy=False)
    return x
