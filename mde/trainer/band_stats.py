"""The per-band standardisation of a log-mel network's input, fitted on the training split.

For each mel band: the mean and the (population) standard deviation of its log-mel values over every
frame of every training clip, as the multi-scale CNN's source normalises over the axes (clips, time);
unlike the source, the validation and test clips are left out. A clip shorter than one window counts
zero-padded to one window, as training crops it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Optional

import numpy as np
import torch
from torch import nn

from mde.runtime.band_norm import BandNorm
from mde.trainer.data.loading import pad_last_axis

MIN_STD = 1e-3
"""Floor of a band's standard deviation in log units, so that a band without variation (silence in every
clip) maps to 0 instead of dividing by zero."""


@torch.no_grad()
def fit_band_norm(
    frontend: nn.Module, signals: Iterable[np.ndarray], window_samples: int, device: torch.device,
    on_clip: Optional[Callable[[int], None]] = None,
) -> BandNorm:
    """The BandNorm of the log-mels ``frontend`` (the torch front end, on ``device``) gives the float32
    ``signals`` (samples,) or (channels, samples) (then one mean and std per channel and band), each padded to
    at least ``window_samples``; ``on_clip(count)`` after each clip."""
    total: Optional[torch.Tensor] = None
    squares: Optional[torch.Tensor] = None
    frames = 0
    for count, signal in enumerate(signals, 1):
        padded = pad_last_axis(np.asarray(signal, dtype=np.float32), window_samples)
        logmel = frontend(torch.from_numpy(padded).to(device)[None])[0].double()
        total = logmel.sum(dim=-1) if total is None else total + logmel.sum(dim=-1)
        squares = logmel.square().sum(dim=-1) if squares is None else squares + logmel.square().sum(dim=-1)
        frames += logmel.shape[-1]
        if on_clip:
            on_clip(count)
    if total is None or squares is None:
        raise ValueError("no training clips to fit the band normalisation on")
    mean = total / frames
    std = (squares / frames - mean.square()).clamp(min=0).sqrt().clamp(min=MIN_STD)
    return BandNorm.from_arrays(mean.cpu().numpy(), std.cpu().numpy())
