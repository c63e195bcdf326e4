"""Which windows a stream serves: scales (seconds), the model and hop of each, and how to parse them.

A scale given no model is served by its dedicated model (0.5, 3.7 and 29 s: DEFAULT_SCALE_MODELS in
mde.runtime.defaults) at that model's own window when those models are all available, bundled with mde or
stored; otherwise, and for any other scale, by the default model (MTT_musicnn, which takes any window
length) at that window length. A model with a fixed window serves a scale only if its window is that
long (within 10 %); the frames then have the model's own window.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Optional, Union

from mde.errors import MdeError
from mde.runtime import store
from mde.runtime.chunker import FrameGrid, frame_grid
from mde.runtime.defaults import DEFAULT_SCALE_MODELS
from mde.runtime.extractor import Model, check_request

DEFAULT_SCALES = (0.5, 3.7, 29.0)
"""Window lengths in seconds served by ``mde stream`` unless told otherwise."""
DEFAULT_MAX_HOP_S = 1.0
"""Default hop: the window itself, but at most this many seconds, so every scale updates at least once a second."""
MAX_SCALE_SECONDS = 600.0
"""The longest window a stream serves, in seconds: each scale holds up to one window of audio in memory."""

PerScale = Union[None, float, str, Mapping[float, Union[float, str]]]


@dataclass
class Scale:
    """One served scale: its window length (s), the model and frame grid that serve it, the outputs read."""

    seconds: float
    model: Model
    grid: FrameGrid
    outputs: list[str]

    @property
    def label(self) -> str:
        return scale_label(self.seconds)

    @property
    def hop_seconds(self) -> float:
        return self.grid.step * self.grid.unit_seconds


def scale_label(seconds: float) -> str:
    """How a scale is named in outputs and messages: 0.5 -> '0.5s'."""
    return f"{seconds:g}s"


def parse_scales(text: str) -> list[float]:
    """'0.5,3.7,29' -> [0.5, 3.7, 29.0]; MdeError for anything else (empty, non-numbers, not in
    (0, MAX_SCALE_SECONDS], repeats)."""
    try:
        scales = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise MdeError(f"--scales takes seconds separated by commas, like 0.5,3.7,29; got {text!r}") from None
    if not scales or any(not 0 < s <= MAX_SCALE_SECONDS for s in scales):
        raise MdeError(f"--scales needs window lengths above 0 and at most {MAX_SCALE_SECONDS:g} s, got {text!r}")
    if len(set(scales)) != len(scales):
        raise MdeError(f"--scales lists a window twice: {text!r}")
    return scales


def parse_per_scale(text: Optional[str], what: str, numeric: bool) -> PerScale:
    """'X' (every scale) or 'SCALE:X,SCALE:X' (per scale) from the command line.

    what: the option's name for messages. numeric: X is seconds (hops) rather than a name (models).
    """
    if text is None or not text.strip():
        return None
    if ":" not in text:
        return _value(text.strip(), what, numeric)
    pairs: dict[float, Union[float, str]] = {}
    for part in text.split(","):
        scale, sep, value = part.partition(":")
        if not sep or not value.strip():
            raise MdeError(f"{what} takes VALUE or SCALE:VALUE,SCALE:VALUE (like 0.5:0.25,3.7:1), got {text!r}")
        try:
            pairs[float(scale)] = _value(value.strip(), what, numeric)
        except ValueError:
            raise MdeError(f"{what}: {scale!r} is not a scale in seconds") from None
    return pairs


def _value(text: str, what: str, numeric: bool) -> Union[float, str]:
    if not numeric:
        return text
    try:
        value = float(text)
    except ValueError:
        raise MdeError(f"{what}: {text!r} is not a number of seconds") from None
    if not (value > 0 and math.isfinite(value)):
        raise MdeError(f"{what}: {text!r} must be a positive, finite number of seconds")
    return value


def pick(setting: PerScale, scale: float, scales: Sequence[float], what: str) -> Optional[Union[float, str]]:
    """The value ``setting`` gives ``scale`` (None: the default); MdeError for a scale not streamed."""
    if not isinstance(setting, Mapping):
        return setting
    unknown = [s for s in setting if s not in scales]
    if unknown:
        listed = ", ".join(f"{s:g}" for s in scales)
        raise MdeError(f"{what} names scale {unknown[0]:g} s, which is not streamed (scales: {listed})")
    return setting.get(scale)


def default_scale_models(scales: Sequence[float]) -> dict[float, str]:
    """{scale: model name} for those of ``scales`` that have a dedicated default model (DEFAULT_SCALE_MODELS),
    when all of those models resolve (bundled with mde or in the user's store); {} otherwise, so that the
    default model serves every scale given no model."""
    if any(store.find(name) is None for name in DEFAULT_SCALE_MODELS.values()):
        return {}
    return {seconds: DEFAULT_SCALE_MODELS[seconds] for seconds in scales if seconds in DEFAULT_SCALE_MODELS}


def scale_grid(model: Model, seconds: float, hop: Optional[float], native: bool = False) -> FrameGrid:
    """The frames ``model`` computes for a ``seconds`` scale with ``hop`` seconds (None: the default hop).

    native: serve at the model's own window even if it accepts any length (a dedicated default-scale model).
    """
    info = model.info
    if info.variable_length and not native:
        window: Optional[float] = seconds
    elif abs(info.window_seconds - seconds) <= 0.1 * seconds:
        window = None
    else:
        raise MdeError(
            f"{info.name} has a fixed {info.window_seconds:g} s window and cannot serve the {seconds:g} s scale"
        )
    length_s = info.window_seconds if window is None else window
    step = hop if hop is not None else min(length_s, DEFAULT_MAX_HOP_S)
    check_request(info, window=window, hop=step)
    return frame_grid(info, window=window, hop=step)

