"""The runtime's log-mel front end: the C kernel (csrc/melspec.c) behind a torchaudio-like class.

Imports no torch and no librosa. Lengths are in samples, rates in Hz; the output is a power (or
magnitude) mel spectrogram, optionally in dB (10 log10) or log10(1 + C x), laid out (n_mels, frames).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from mde.errors import FrontendError
from mde.runtime import _melspec
from mde.runtime.frontend_config import FrontendConfig, LogMode, MelScale


class MelSpectrogram:
    """Log-mel spectrograms of float32 waveforms, computed by the C kernel.

    sample_rate: input rate in Hz. n_fft: FFT size and periodic Hann window length in samples (a power
    of two from 256 to 4096). hop_length: frame step in samples. n_mels: mel bands. f_min, f_max: band
    edges in Hz (None: sample_rate / 2). mel_scale: 'htk' or 'slaney'. norm: None or 'slaney' (unit-area
    triangles). center: pad n_fft // 2 samples at both ends (pad_mode 'reflect' or 'constant' zeros) so
    frame t is centred on sample t * hop_length. power: 2.0 for |X|^2, 1.0 for |X|. log: 'db' gives
    10 log10(max(x, amin)) in dB (amin in spectrum units; top_db, in dB, clips each signal to its peak
    minus top_db), 'log10p' gives log10(1 + log_scale * x), None leaves x in spectrum units.
    fp16_round: round mel values to float16 before the log (musicnn's recipe). threads: worker threads
    of the kernel; the result does not depend on it. See :class:`FrontendConfig` for the settings.
    """

    def __init__(
        self,
        sample_rate: int,
        n_fft: int,
        hop_length: int,
        n_mels: int,
        f_min: float = 0.0,
        f_max: Optional[float] = None,
        mel_scale: MelScale = "htk",
        norm: Optional[str] = None,
        center: bool = True,
        pad_mode: str = "reflect",
        power: float = 2.0,
        log: Optional[LogMode] = "db",
        amin: float = 1e-10,
        top_db: Optional[float] = None,
        log_scale: float = 10000.0,
        fp16_round: bool = False,
        threads: int = 1,
    ) -> None:
        config = FrontendConfig(
            sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, f_min=f_min,
            f_max=f_max, mel_scale=mel_scale, norm=norm, center=center, pad_mode=pad_mode,  # type: ignore[arg-type]
            power=power, log=log, amin=amin, top_db=top_db, log_scale=log_scale, fp16_round=fp16_round,
        )
        _check_kernel_settings(config, threads)
        self.config = config
        self.threads = threads
        self._plan = _melspec.MelPlan(config)

    @classmethod
    def from_config(cls, config: FrontendConfig, threads: int = 1) -> "MelSpectrogram":
        """The front end described by ``config``, run on ``threads`` worker threads."""
        return cls(**config.to_dict(), threads=threads)

    def __repr__(self) -> str:
        return f"MelSpectrogram.from_config({self.config!r}, threads={self.threads})"

    @property
    def filterbank(self) -> np.ndarray:
        """The mel filterbank the kernel applies, float32 (n_freqs, n_mels), weights per FFT bin."""
        return self._plan.filterbank()

    @property
    def window(self) -> np.ndarray:
        """The periodic Hann analysis window, float32 (n_fft,)."""
        return self._plan.window()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Spectrogram of waveform(s) in [-1, 1] at ``sample_rate``.

        x: float array (samples,) or (batch, samples); other float dtypes are converted to float32.
        Returns float32 (n_mels, frames) or (batch, n_mels, frames), frames = config.n_frames(samples),
        in dB, log10(1 + C x) or spectrum units according to ``log``.
        Raises FrontendError for non-float input, NaN/Inf samples, or signals too short to frame.
        """
        array = np.asarray(x)
        signals = _as_signal_matrix(array)
        self._check_length(signals.shape[1])
        try:
            out = self._plan.compute(signals, self.threads)
        except _melspec.NonFiniteInput as error:
            raise FrontendError(_describe_non_finite(signals, error.index, array.ndim)) from None
        return out[0] if array.ndim == 1 else out

    def _check_length(self, n_samples: int) -> None:
        """FrontendError unless a signal of ``n_samples`` samples can be framed."""
        if n_samples == 0:
            raise FrontendError("input has no samples")
        minimum = self._plan.min_samples()
        if n_samples < minimum:
            cfg = self.config
            reason = (
                f"reflect padding of n_fft // 2 = {cfg.n_fft // 2} samples"
                if cfg.center
                else f"one frame of n_fft = {cfg.n_fft} samples (center=False)"
            )
            raise FrontendError(f"input has {n_samples} samples; {reason} needs at least {minimum}")


def _check_kernel_settings(config: FrontendConfig, threads: int) -> None:
    """FrontendError for settings FrontendConfig accepts but the kernel cannot honour."""
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise FrontendError(f"threads must be a positive integer, got {threads!r}")
    if config.top_db is not None and (config.log != "db" or config.top_db < 0):
        raise FrontendError(
            f"top_db needs log='db' and a value >= 0 dB, got top_db={config.top_db}, log={config.log!r}"
        )


def _as_signal_matrix(array: np.ndarray) -> np.ndarray:
    """A C-contiguous float32 (batch, samples) view or copy of a float (samples,) / (batch, samples) array."""
    if not np.issubdtype(array.dtype, np.floating):
        raise FrontendError(f"input must be a floating-point waveform, got dtype {array.dtype}")
    if array.ndim not in (1, 2):
        raise FrontendError(f"input must have shape (samples,) or (batch, samples), got {array.shape}")
    return np.ascontiguousarray(np.atleast_2d(array), dtype=np.float32)


def _describe_non_finite(signals: np.ndarray, flat_index: int, ndim: int) -> str:
    """One line naming the first NaN/Inf sample, e.g. 'input contains NaN at sample 1234'."""
    signal, sample = divmod(flat_index, signals.shape[1])
    value = float(signals[signal, sample])
    kind = "NaN" if np.isnan(value) else ("+Inf" if value > 0 else "-Inf")
    where = f"sample {sample}" if ndim == 1 else f"signal {signal}, sample {sample}"
    return f"input contains {kind} at {where}"
