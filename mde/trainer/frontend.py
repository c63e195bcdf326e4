"""The torch twins of the runtime's input stages (the C log-mel front end, the per-band standardisation, the
waveform input transform), for training and for torch baselines.

It follows the same :class:`~mde.runtime.frontend_config.FrontendConfig` and takes its mel filterbank
from the C kernel, so both compute the same function (tested equal within float32 noise).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional

import torch
from torch import nn

from mde.runtime.band_norm import BandNorm
from mde.runtime.frontend import MelSpectrogram
from mde.runtime.frontend_config import FrontendConfig
from mde.runtime.input_transform import InputTransform

if TYPE_CHECKING:
    from mde.trainer.models.registry import ModelSpec


class TorchMelSpectrogram(nn.Module):
    """Waveforms (batch, samples) or (batch, channels, samples) float32 -> log-mel (batch, n_mels, frames) or
    (batch, channels, n_mels, frames), differentiable; the channels of one window share the dB peak."""

    window: torch.Tensor  # buffers, registered in __init__
    filterbank: torch.Tensor

    def __init__(self, config: FrontendConfig) -> None:
        super().__init__()
        self.config = config
        kernel = MelSpectrogram.from_config(config)
        self.register_buffer("window", torch.from_numpy(kernel.window.copy()), persistent=False)
        self.register_buffer("filterbank", torch.from_numpy(kernel.filterbank.T.copy()), persistent=False)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        spectrum = torch.stft(
            waveform.reshape(-1, waveform.shape[-1]), cfg.n_fft, cfg.hop_length, window=self.window,
            center=cfg.center, pad_mode=cfg.pad_mode, return_complex=True,
        )
        power = spectrum.real.square() + spectrum.imag.square()
        magnitude = power if cfg.power == 2.0 else power.sqrt()
        mel = torch.matmul(self.filterbank, magnitude)
        return self._log(mel.reshape(*waveform.shape[:-1], *mel.shape[-2:]), peak_dims=1 + (waveform.ndim == 3))

    def _log(self, mel: torch.Tensor, peak_dims: int) -> torch.Tensor:
        """The log of ``mel``; the dB peak is taken over its last ``peak_dims`` + 1 axes (bands and frames, and
        channels for multichannel input)."""
        cfg = self.config
        if cfg.fp16_round:  # before any log, as the C kernel rounds
            mel = mel.half().float()
        if cfg.log == "db":
            db = 10.0 * torch.log10(torch.clamp(mel, min=cfg.amin))
            if cfg.top_db is not None or cfg.db_ref == "max":
                peak = db.amax(dim=tuple(range(-1 - peak_dims, 0)), keepdim=True)
                if cfg.top_db is not None:
                    db = torch.maximum(db, peak - cfg.top_db)
                if cfg.db_ref == "max":
                    db = db - peak
            return db
        if cfg.log == "log10p":
            return torch.log10(1.0 + cfg.log_scale * mel)
        if cfg.log == "ln":
            return torch.log(torch.clamp(mel, min=cfg.amin))
        return mel


class TorchBandNorm(nn.Module):
    """The torch twin of :func:`mde.runtime.band_norm.apply_band_norm`: log-mel (batch, n_bands, frames)
    -> (logmel - mean[band]) / std[band], with the same float32 constants."""

    mean: torch.Tensor  # buffers, registered in __init__
    scale: torch.Tensor

    def __init__(self, norm: BandNorm) -> None:
        super().__init__()
        mean, scale = norm.constants()
        self.register_buffer("mean", torch.from_numpy(mean), persistent=False)
        self.register_buffer("scale", torch.from_numpy(scale), persistent=False)

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        return (logmel - self.mean) * self.scale


class TorchInputTransform(nn.Module):
    """The torch twin of :func:`mde.runtime.input_transform.apply_transform`: waveforms (batch, samples)
    float32 at full scale [-1, 1] -> the waveform network's input, same shape."""

    def __init__(self, transform: InputTransform) -> None:
        super().__init__()
        self.transform = transform

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        t = self.transform
        if t.kind == "gain":
            return waveform * t.gain
        if t.kind == "mulaw":
            x = waveform
            if t.peak_normalize:
                peak = x.abs().amax(dim=-1, keepdim=True)
                x = x / torch.where(peak > 0, peak, torch.ones_like(peak))
            return torch.sign(x) * torch.log1p(t.mu * x.abs()) / math.log1p(t.mu)
        return waveform


def network_input(spec: ModelSpec, band_norm: Optional[BandNorm] = None) -> nn.Module:
    """What turns a batch of waveform windows (batch, samples) into the network's input: the log-mel
    front end of a log-mel network (then ``band_norm``, when given), the input transform of a waveform one."""
    if spec.frontend is None:
        return TorchInputTransform(spec.input_transform)
    frontend = TorchMelSpectrogram(spec.frontend)
    return frontend if band_norm is None else nn.Sequential(frontend, TorchBandNorm(band_norm))
