"""Music-SincNet, JETATAG's 'ms' encoder (jaehwlee/jetatag, ``training/modules.py`` ``MusicSinc1D`` and
``training/model.py`` ``resemul(ms=True)``): a bank of learnable sinc band-pass filters (Ravanelli & Bengio
2018, "Speaker recognition from raw waveform with SincNet") in front of Sample-CNN with rese blocks.
Written in torch after the source's description.

Input: (batch, samples) at 16 kHz, mu-law companded by the caller; trained on 59,049-sample crops
(3.69 s, :data:`MS_SAMPLES`). Then:

  zero padding 1,250 samples each end, then the 256 filters of 2,501 taps, stride 1, with 'same' padding
  (1,250 more each end): samples + 2,500 steps (61,549 for a crop) x 256 channels
  -> Sample-CNN, rese blocks, 256 input channels: conv 128 k3 s3 -> 20,516 steps, nine blocks pooling by 3
     (6,838, 2,279, 759, 253, 84, 28, 9, 3, 1 steps), Dense 1024 -> BN -> ReLU: the 1024 features

Filter k is a band-pass between ``low_k`` = |b_k| + 50 Hz and ``high_k`` = low_k + |w_k| + 50 Hz, its two
parameters b_k and w_k stored in units of the sample rate (Hz / 16,000) as the source stores them:
the difference of two ideal low-passes 2 f sinc(2 pi f t) (f in units of the rate, t in samples),
divided by its largest tap, times the window 0.54 - 0.46 cos(2 pi n / 2501), n = 0 ... 2500. The band
edges start mel-spaced: 256 points equally spaced from 80 mel to the Nyquist frequency in mel, filter k
spanning point k - 1 to point k + 1, the first starting at 30 Hz and the last ending 100 Hz below the
Nyquist frequency.

Where we differ: (1) the source designs the filters for 22,050 Hz while feeding 16 kHz audio (so every
band sits at 16/22.05 of its intended frequency); here they are designed at the real input rate. In both
the edges learn: the low edge and width of each filter are trainable weights, the filters recomputed from
them on every call, as in SincNet.
(2) The source's sinc is sin(2 f t) / (2 f t), without SincNet's pi, which puts every cut-off at 1/pi of
its parameter; here the sinc has its pi, so the edges are where the parameters say.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from mde.trainer.models.samplecnn import SampleCNNEncoder

MS_RATE = 16000
"""Input rate in Hz."""
MS_SAMPLES = 59049
"""Samples per input crop (3.69 s at 16 kHz)."""
SINC_FILTERS = 256
SINC_TAPS = 2501
"""Filter length in samples (odd: the filters are symmetric about their middle tap)."""
MIN_LOW_HZ = 50.0
"""Added to every filter's low edge, in Hz."""
MIN_BAND_HZ = 50.0
"""Added to every filter's band width, in Hz."""
FIRST_LOW_HZ = 30.0
NYQUIST_MARGIN_HZ = 100.0
LOW_MEL = 80.0


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def initial_band_edges(n_filters: int = SINC_FILTERS, sample_rate: int = MS_RATE) -> tuple[np.ndarray, np.ndarray]:
    """The initial (low, high) edges in Hz (before the 50 Hz minimums are added), each (n_filters,)."""
    centres = mel_to_hz(np.linspace(LOW_MEL, hz_to_mel(sample_rate / 2), n_filters))
    low, high = np.roll(centres, 1), np.roll(centres, -1)
    low[0], high[-1] = FIRST_LOW_HZ, sample_rate / 2 - NYQUIST_MARGIN_HZ
    return low, high


class MusicSinc(nn.Module):
    """The learnable sinc filter bank: (batch, 1, samples) -> (batch, n_filters, samples + length - 1),
    with the source's explicit padding then 'same' padding (``length`` - 1 zeros in all at each end)."""

    t_right: torch.Tensor
    """Tap offsets 1 ... (length - 1) / 2 in samples, (1, half)."""
    window: torch.Tensor
    """The source's window over the taps, (1, length)."""

    def __init__(self, n_filters: int = SINC_FILTERS, length: int = SINC_TAPS, sample_rate: int = MS_RATE) -> None:
        super().__init__()
        if length % 2 != 1:
            raise ValueError(f"the filter length must be odd, got {length}")
        self.length, self.sample_rate = length, sample_rate
        low, high = initial_band_edges(n_filters, sample_rate)
        self.low_hz_ = nn.Parameter(torch.tensor(low / sample_rate, dtype=torch.float32).unsqueeze(1))
        """Low edges minus 50 Hz, in units of the sample rate, (n_filters, 1)."""
        self.band_hz_ = nn.Parameter(torch.tensor((high - low) / sample_rate, dtype=torch.float32).unsqueeze(1))
        """Band widths minus 50 Hz, in units of the sample rate, (n_filters, 1)."""
        half = (length - 1) // 2
        self.register_buffer("t_right", torch.arange(1, half + 1, dtype=torch.float32).unsqueeze(0), persistent=False)
        n = torch.arange(length, dtype=torch.float64)
        window = (0.54 - 0.46 * torch.cos(2 * math.pi * n / length)).float()
        self.register_buffer("window", window.unsqueeze(0), persistent=False)

    def edges(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The (low, high) band edges in units of the sample rate, each (n_filters, 1)."""
        low = self.low_hz_.abs() + MIN_LOW_HZ / self.sample_rate
        high = low + self.band_hz_.abs() + MIN_BAND_HZ / self.sample_rate
        return low, high

    def _low_pass(self, cutoff: torch.Tensor) -> torch.Tensor:
        """2 f sinc(2 pi f t) over the taps t = -half ... half samples, for cut-offs f (n, 1) in units of the rate."""
        arg = 2 * math.pi * cutoff * self.t_right
        right = torch.sin(arg) / arg
        return 2 * cutoff * torch.cat([right.flip(1), torch.ones_like(cutoff), right], dim=1)

    def filters(self) -> torch.Tensor:
        """The windowed, peak-normalised band-pass filters, (n_filters, 1, length)."""
        low, high = self.edges()
        band_pass = self._low_pass(high) - self._low_pass(low)
        band_pass = band_pass / band_pass.amax(dim=1, keepdim=True)
        return (band_pass * self.window).unsqueeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, 1, samples) -> (batch, n_filters, samples + length - 1): each filter run over the signal
        zero-padded by length - 1 samples at both ends (the full linear convolution).

        In torch this is computed through the FFT (:func:`full_correlation`): the same sums as the direct
        convolution, at about 1/50 of the arithmetic for 2,501 taps, and without torch's CPU convolution,
        which takes minutes for a batch of two or more with a kernel this long. The graph an ONNX export
        traces holds the direct convolution (ONNX Conv, which ONNX Runtime and TensorRT run well); the
        export's parity check compares the two."""
        if torch.jit.is_tracing():
            with torch.backends.mkldnn.flags(enabled=False):  # torch's own loop: 1.6 s a window, not minutes
                return nn.functional.conv1d(x, self.filters(), padding=self.length - 1)
        return full_correlation(x, self.filters())


def full_correlation(x: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    """``conv1d(x, filters, padding=taps - 1)`` through the FFT: x (batch, 1, samples), filters (n, 1, taps)
    -> (batch, n, samples + taps - 1). The FFT length is the next power of two at or above the output's."""
    length = x.shape[-1] + filters.shape[-1] - 1
    size = 1 << (length - 1).bit_length()
    spectrum = torch.fft.rfft(x, n=size) * torch.fft.rfft(filters.flip(-1), n=size).transpose(0, 1)
    return torch.fft.irfft(spectrum, n=size)[..., :length]


class MusicSincNet(nn.Module):
    """:class:`MusicSinc` (256 filters of 2,501 taps at 16 kHz) -> Sample-CNN with rese blocks taking its
    256 channels; ``forward`` takes (batch, samples) and returns the (batch, 1024) features."""

    def __init__(self) -> None:
        super().__init__()
        self.sinc = MusicSinc()
        self.samplecnn = SampleCNNEncoder("rese", in_channels=SINC_FILTERS)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.samplecnn(self.sinc(waveform.unsqueeze(1)))
