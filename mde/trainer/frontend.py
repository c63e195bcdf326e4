"""The torch twin of the C front end, for training and for torch baselines.

It follows the same :class:`~mde.runtime.frontend_config.FrontendConfig` and takes its mel filterbank
from the C kernel, so both compute the same function (tested equal within float32 noise).
"""

from __future__ import annotations

import torch
from torch import nn

from mde.runtime.frontend import MelSpectrogram
from mde.runtime.frontend_config import FrontendConfig


class TorchMelSpectrogram(nn.Module):
    """Waveforms (batch, samples) float32 -> log-mel (batch, n_mels, frames), differentiable."""

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
            waveform, cfg.n_fft, cfg.hop_length, window=self.window, center=cfg.center,
            pad_mode=cfg.pad_mode, return_complex=True,
        )
        power = spectrum.real.square() + spectrum.imag.square()
        magnitude = power if cfg.power == 2.0 else power.sqrt()
        mel = torch.matmul(self.filterbank, magnitude)
        return self._log(mel)

    def _log(self, mel: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if cfg.log == "db":
            db = 10.0 * torch.log10(torch.clamp(mel, min=cfg.amin))
            if cfg.top_db is not None:
                peak = db.amax(dim=(-2, -1), keepdim=True)
                db = torch.maximum(db, peak - cfg.top_db)
            return db
        if cfg.log == "log10p":
            if cfg.fp16_round:
                mel = mel.half().float()
            return torch.log10(1.0 + cfg.log_scale * mel)
        return mel
