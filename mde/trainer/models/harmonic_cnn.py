"""Harmonic CNN (Won, Chun, Kim, Lee & Serra 2020, "Data-driven harmonic filters for audio
representation learning") as the JETATAG repository builds it (jaehwlee/jetatag, ``training/model.py``
``HarmonicCNN`` and ``training/modules.py`` ``HarmonicSTFT``, ``initialize_filterbank``,
``Wave_ResNet``, ``Conv3_2d``, ``Conv3_2d_resmp``), written in torch after its layer list.

Input: (batch, samples) at 16 kHz, already mu-law companded by the caller; the encoder is trained on
80,000-sample crops (5 s, :data:`HC_SAMPLES`). Output: (batch, 1024) features.

Harmonic front end (:class:`HarmonicSTFT`), as the source gets it from kapre 0.3.4
(``kapre/time_frequency.py`` ``STFT``, ``Magnitude``, ``MagnitudeToDecibel``; ``kapre/backend.py``
``magnitude_to_decibel``, ``get_window_fn``), the version its ``environment.yaml`` pins:

  STFT      ``STFT(n_fft=512, hop_length=256, window_name='hann_window', pad_begin=True)``: kapre pads
            ``n_fft - hop_length`` = 256 zero samples at the beginning only (its docstring says
            ``win_length - hop_length``; the code uses ``n_fft``, the same here), then calls
            ``tf.signal.stft`` with ``pad_end=False``: no centring, no end padding, frames start at the
            first padded sample, so frames = 1 + (samples + 256 - 512) // 256 (312 for 80,000 samples).
            The window is ``tf.signal.hann_window``, periodic by default: 0.5 - 0.5 cos(2 pi n / 512).
            Here the DFT is a strided conv1d with fixed windowed cos / sin kernels (buffers), so the
            module exports to ONNX (opset 17) without an STFT op.
  Magnitude ``tf.abs`` of the complex STFT: |X| (not |X|^2).
  filters   triangles over the FFT bins linspace(0, sr // 2, n_fft // 2 + 1) Hz, peak 1 at the centre f0,
            zero at f0 +- bw / 2, bw = (0.1079 f0 + 24.7 Hz) / Q, Q one learnable scalar (initially 1).
            Centres: ``level`` = (high - 24) * 2 frequencies equally spaced in MIDI from C1 (24) up to
            (excluding) ``high``, the note of sr / (2 n_harmonic) (librosa's ``hz_to_note``: the MIDI
            number rounded half-to-even by ``np.round``; E6 = 88 at 16 kHz, so level = 128), times the
            harmonics 1..6: 768 filters, harmonic-major (filter h * level + i = (h + 1) * f_i). The FFT
            bins are 31.25 Hz apart, so at Q = 1 one filter (F#1, 46.25 Hz, half-width 14.8 Hz) covers
            no bin and stays at the dB floor, as in the source.
  decibel   ``MagnitudeToDecibel()`` with its defaults ref_value 1.0, amin 1e-5, dynamic_range 80:
            10 log10(max(x, amin)) - 10 log10(max(amin, ref_value)), then each example is clipped from
            below at its own maximum (over every non-batch axis) minus 80 dB. Note 10 log10, not 20, of a
            filtered magnitude; the absolute floor is 10 log10(1e-5) = -50 dB.

Where we differ: the source reshapes the (frames, 768) filter output with ``Reshape((-1, 128, 6))``,
which reads the harmonic-major filters row by row into (128, 6), so its channel c at row i is filter
6 i + c: harmonics and frequencies scrambled across channels. Here channel h is harmonic h + 1 and the
frequency axis holds its 128 centres, the layout Won et al. define. The front end returns
(batch, 6, 128, frames) in torch's (channels, freq, time) order; the source's Keras layout is
(batch, freq, time, channels), so its pool (2, 3) is 2 along frequency and 3 along time, as here.

Encoder (:class:`HarmonicCNN`): harmonic front end -> BatchNorm2d(6) -> seven blocks, all 3 x 3 'same'
convolutions and 'valid' (floor) max pools (frequency, time):

  block  kind  channels  pool    output for 80,000 samples
  1      conv  128       2 x 2   128 x 64 x 156
  2      res   128       2 x 2   128 x 32 x 78
  3      res   128       2 x 2   128 x 16 x 39
  4      conv  256       2 x 2   256 x 8 x 19
  5      res   256       2 x 2   256 x 4 x 9
  6      res   256       2 x 3   256 x 2 x 3
  7      conv  512       2 x 3   512 x 1 x 1

conv = conv -> BN -> ReLU -> max pool (``Conv3_2d``); res = conv -> BN -> ReLU -> conv -> BN, plus the
input, -> ReLU -> max pool (``Conv3_2d_resmp``). Features: the global max (over frequency and time) of
blocks 5, 6 and 7, concatenated: 256 + 256 + 512 = 1024. Keras defaults throughout: Glorot-uniform
kernels, zero biases, BatchNormalization epsilon 1e-3 and momentum 0.99 (torch momentum 0.01).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mde.trainer.pitch import midi_to_hz

HC_RATE = 16000
"""Input rate in Hz."""
HC_SAMPLES = 80000
"""Samples per input crop (5 s at 16 kHz)."""
HC_FEATURES = 1024
"""Size of the encoder's output (256 + 256 + 512)."""

N_FFT = 512
"""STFT frame and FFT length in samples."""
HOP_LENGTH = 256
"""STFT hop in samples."""
N_HARMONIC = 6
SEMITONE_SCALE = 2
"""Filters per semitone."""
LOW_MIDI = 24
"""C1 (32.70 Hz), the lowest centre frequency."""
BW_ALPHA = 0.1079
BW_BETA = 24.7
"""Bandwidth at Q = 1 in Hz: BW_ALPHA * f0 + BW_BETA (the ERB-like rule of Won et al.)."""
REF_VALUE = 1.0
AMIN = 1e-5
DYNAMIC_RANGE = 80.0
"""kapre MagnitudeToDecibel defaults: reference (0 dB), floor, per-example range in dB."""
CONV_CHANNELS = 128
BLOCKS = (
    ("conv", 1, (2, 2)), ("res", 1, (2, 2)), ("res", 1, (2, 2)),
    ("conv", 2, (2, 2)), ("res", 2, (2, 2)), ("res", 2, (2, 3)),
    ("conv", 4, (2, 3)),
)
"""(kind, channels as a multiple of ``conv_channels``, (frequency, time) max pool) of the seven blocks."""
AGGREGATED_BLOCKS = 3
"""How many of the last blocks' global max pools make the features."""
KERAS_BN_EPS = 1e-3
KERAS_BN_MOMENTUM = 0.01  # torch convention for Keras' momentum 0.99

def hz_to_midi(hz: float | np.ndarray) -> np.ndarray:
    """Frequency in Hz -> (fractional) MIDI number, A4 = 440 Hz = 69."""
    return 12 * np.log2(np.asarray(hz, dtype=np.float64) / 440.0) + 69


def highest_midi(sample_rate: int, n_harmonic: int) -> int:
    """The MIDI number of the note of sample_rate / (2 n_harmonic) Hz, rounded as librosa's
    ``hz_to_note`` rounds (``np.round``, half to even): 88 (E6) at 16 kHz with 6 harmonics."""
    return int(np.round(hz_to_midi(sample_rate / (2 * n_harmonic))))


def harmonic_level(sample_rate: int = HC_RATE, n_harmonic: int = N_HARMONIC,
                   semitone_scale: int = SEMITONE_SCALE) -> int:
    """Filters per harmonic: (highest_midi - C1) * semitone_scale (128 at 16 kHz, 6 harmonics, 2)."""
    return (highest_midi(sample_rate, n_harmonic) - LOW_MIDI) * semitone_scale


def harmonic_center_frequencies(sample_rate: int = HC_RATE, n_harmonic: int = N_HARMONIC,
                                semitone_scale: int = SEMITONE_SCALE) -> np.ndarray:
    """Centre frequencies in Hz, float64, shape (n_harmonic * level,), harmonic-major: entry
    h * level + i is (h + 1) times the i-th fundamental, the fundamentals equally spaced in MIDI from
    C1 in steps of 1 / semitone_scale semitone (the top note itself excluded)."""
    level = harmonic_level(sample_rate, n_harmonic, semitone_scale)
    midi = np.linspace(LOW_MIDI, highest_midi(sample_rate, n_harmonic), level + 1)[:-1]
    fundamentals = midi_to_hz(midi)
    return np.concatenate([fundamentals * harmonic for harmonic in range(1, n_harmonic + 1)])


def fft_bin_frequencies(sample_rate: int, n_fft: int) -> np.ndarray:
    """The source's FFT bin frequencies in Hz: linspace(0, sample_rate // 2, n_fft // 2 + 1), float64."""
    return np.linspace(0, sample_rate // 2, n_fft // 2 + 1)


def triangular_filters(bins: torch.Tensor, centers: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """(n_bins, n_filters) weights max(0, 1 - 2 |bin - f0| / bw), bw = (BW_ALPHA f0 + BW_BETA) / q:
    1 at f0, 0 from f0 +- bw / 2 on. ``bins`` and ``centers`` in Hz; differentiable in ``q``."""
    bandwidth = (BW_ALPHA * centers + BW_BETA) / q
    distance = bins.unsqueeze(1) - centers.unsqueeze(0)
    up_slope = 1 + 2 * distance / bandwidth
    down_slope = 1 - 2 * distance / bandwidth
    return torch.clamp(torch.minimum(up_slope, down_slope), min=0.0)


def harmonic_filterbank(sample_rate: int = HC_RATE, n_fft: int = N_FFT, n_harmonic: int = N_HARMONIC,
                        semitone_scale: int = SEMITONE_SCALE, q: float = 1.0) -> np.ndarray:
    """The harmonic filterbank at bandwidth factor ``q``: float64, (n_fft // 2 + 1, n_harmonic * level),
    column h * level + i the triangle around the i-th centre of harmonic h + 1 (the same formula
    :class:`HarmonicSTFT` evaluates with its learnable Q)."""
    bins = torch.from_numpy(fft_bin_frequencies(sample_rate, n_fft))
    centers = torch.from_numpy(harmonic_center_frequencies(sample_rate, n_harmonic, semitone_scale))
    return triangular_filters(bins, centers, torch.tensor(q, dtype=torch.float64)).numpy()


def dft_kernels(n_fft: int) -> torch.Tensor:
    """(2 (n_fft // 2 + 1), 1, n_fft) float64 conv1d kernels: the periodic-Hann-windowed real parts
    w[n] cos(2 pi k n / n_fft), then the imaginary parts -w[n] sin(2 pi k n / n_fft), k = 0..n_fft // 2."""
    n = np.arange(n_fft)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft)
    phase = 2 * np.pi * np.outer(np.arange(n_fft // 2 + 1), n) / n_fft
    kernels = np.concatenate([window * np.cos(phase), -window * np.sin(phase)])
    return torch.from_numpy(kernels).unsqueeze(1)


def magnitude_to_decibel(x: torch.Tensor, ref_value: float = REF_VALUE, amin: float = AMIN,
                         dynamic_range: float = DYNAMIC_RANGE) -> torch.Tensor:
    """kapre's ``magnitude_to_decibel``: 10 log10(max(x, amin)) - 10 log10(max(amin, ref_value)) in dB,
    floored per example (dim 0) at that example's maximum minus ``dynamic_range`` dB."""
    log_spec = 10.0 * torch.log10(torch.clamp(x, min=amin)) - 10.0 * float(np.log10(max(amin, ref_value)))
    peak = torch.amax(log_spec, dim=tuple(range(1, x.dim())), keepdim=True)
    return torch.maximum(log_spec, peak - dynamic_range)


class HarmonicSTFT(nn.Module):
    """(batch, samples) waveform at ``sample_rate`` -> (batch, n_harmonic, level, frames) harmonic
    spectrogram in dB (module docstring): channel h is harmonic h + 1, the frequency axis its ``level``
    centres from C1 upwards, frames = 1 + (samples + n_fft - 2 hop_length) // hop_length.

    ``bw_q`` is the learnable bandwidth factor Q (shape (1,)); the filterbank is rebuilt from it on every
    call (:meth:`filterbank`).
    """

    kernels: torch.Tensor
    fft_bins: torch.Tensor
    centers: torch.Tensor

    def __init__(self, sample_rate: int = HC_RATE, n_fft: int = N_FFT, hop_length: int = HOP_LENGTH,
                 n_harmonic: int = N_HARMONIC, semitone_scale: int = SEMITONE_SCALE, bw_q: float = 1.0) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.n_harmonic = n_harmonic
        self.level = harmonic_level(sample_rate, n_harmonic, semitone_scale)
        self.register_buffer("kernels", dft_kernels(n_fft).float(), persistent=False)
        self.register_buffer("fft_bins", torch.from_numpy(fft_bin_frequencies(sample_rate, n_fft)).float(),
                             persistent=False)
        centers = harmonic_center_frequencies(sample_rate, n_harmonic, semitone_scale)
        self.register_buffer("centers", torch.from_numpy(centers).float(), persistent=False)
        self.bw_q = nn.Parameter(torch.tensor([bw_q]))

    def filterbank(self) -> torch.Tensor:
        """(n_fft // 2 + 1, n_harmonic * level) triangular filters at the current Q, harmonic-major."""
        return triangular_filters(self.fft_bins, self.centers, self.bw_q)

    def magnitude(self, waveform: torch.Tensor) -> torch.Tensor:
        """(batch, samples) -> (batch, n_fft // 2 + 1, frames) STFT magnitude |X|, with kapre's
        n_fft - hop_length zero samples before the signal and none after."""
        if waveform.dim() != 2:
            raise ValueError(f"expected a waveform of shape (batch, samples), got {tuple(waveform.shape)}")
        padded = F.pad(waveform.unsqueeze(1), (self.n_fft - self.hop_length, 0))
        spectrum = F.conv1d(padded, self.kernels, stride=self.hop_length)
        n_bins = self.n_fft // 2 + 1
        real, imag = spectrum[:, :n_bins], spectrum[:, n_bins:]
        return torch.sqrt(real * real + imag * imag)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        spectrum = self.magnitude(waveform)
        harmonic = torch.matmul(self.filterbank().t(), spectrum)  # (batch, n_harmonic * level, frames)
        harmonic = harmonic.reshape(harmonic.shape[0], self.n_harmonic, self.level, harmonic.shape[-1])
        return magnitude_to_decibel(harmonic)


def keras_conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    """A 3 x 3 'same' conv initialised as Keras' Conv2D: Glorot-uniform kernel, zero bias."""
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
    assert conv.bias is not None  # built with one
    nn.init.xavier_uniform_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def keras_batch_norm(channels: int) -> nn.BatchNorm2d:
    """A BatchNorm2d with Keras' epsilon and momentum."""
    return nn.BatchNorm2d(channels, eps=KERAS_BN_EPS, momentum=KERAS_BN_MOMENTUM)


class ConvBlock(nn.Module):
    """conv 3 x 3 -> BN -> ReLU -> max pool ``pool`` (frequency, time): the source's Conv3_2d."""

    def __init__(self, in_channels: int, out_channels: int, pool: tuple[int, int]) -> None:
        super().__init__()
        self.conv = keras_conv3x3(in_channels, out_channels)
        self.bn = keras_batch_norm(out_channels)
        self.mp = nn.MaxPool2d(pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mp(torch.relu(self.bn(self.conv(x))))


class ResidualBlock(nn.Module):
    """conv -> BN -> ReLU -> conv -> BN, plus the input, -> ReLU -> max pool ``pool`` (frequency, time):
    the source's Conv3_2d_resmp (the channels do not change)."""

    def __init__(self, channels: int, pool: tuple[int, int]) -> None:
        super().__init__()
        self.conv_1 = keras_conv3x3(channels, channels)
        self.bn_1 = keras_batch_norm(channels)
        self.conv_2 = keras_conv3x3(channels, channels)
        self.bn_2 = keras_batch_norm(channels)
        self.mp = nn.MaxPool2d(pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn_2(self.conv_2(torch.relu(self.bn_1(self.conv_1(x)))))
        return self.mp(torch.relu(x + out))


class HarmonicCNN(nn.Module):
    """The Harmonic CNN encoder (module docstring): (batch, samples) mu-law waveform at 16 kHz ->
    (batch, 8 conv_channels) features, 1024 by default. It needs at least 288 frames (73,728 samples)
    for its pools; it is trained on :data:`HC_SAMPLES`."""

    def __init__(self, conv_channels: int = CONV_CHANNELS) -> None:
        super().__init__()
        self.hstft = HarmonicSTFT()
        self.hstft_bn = keras_batch_norm(N_HARMONIC)
        blocks: list[nn.Module] = []
        channels = N_HARMONIC
        for kind, multiple, pool in BLOCKS:
            width = conv_channels * multiple
            blocks.append(ConvBlock(channels, width, pool) if kind == "conv" else ResidualBlock(width, pool))
            channels = width
        self.blocks = nn.ModuleList(blocks)

    def feature_maps(self, waveform: torch.Tensor) -> list[torch.Tensor]:
        """The seven blocks' outputs, each (batch, channels, frequency, time)."""
        x = self.hstft_bn(self.hstft(waveform))
        maps = []
        for block in self.blocks:
            x = block(x)
            maps.append(x)
        return maps

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        maps = self.feature_maps(waveform)[-AGGREGATED_BLOCKS:]
        return torch.cat([torch.amax(x, dim=(2, 3)) for x in maps], dim=1)
