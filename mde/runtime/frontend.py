"""The runtime's log-mel front end: the C kernel (csrc/melspec.c) behind a torchaudio-like class.

Imports no torch and no librosa. Lengths are in samples, rates in Hz; the output is a power (or
magnitude) mel spectrogram, optionally in dB (10 log10) or log10(1 + C x), laid out (n_mels, frames).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from mde.errors import FrontendError
from mde.runtime import _melspec
from mde.runtime.frontend_config import DbReference, FrontendConfig, LogMode, MelScale


class MelSpectrogram:
    """Log-mel spectrograms of float32 waveforms, computed by the C kernel.

    Unlike torchaudio's ``MelSpectrogram``, which returns the power mel spectrogram, this returns dB
    (``10 log10(max(x, amin))``) by default: pass ``log=None`` for power (or magnitude) values.

    Parameters
    ----------
    sample_rate : int
        Input rate in Hz.
    n_fft : int
        FFT size and periodic Hann window length in samples: a power of two from 256 to 4096.
    hop_length : int
        Frame step in samples.
    n_mels : int
        Number of mel bands.
    f_min : float, default 0.0
        Lowest band edge in Hz.
    f_max : float or None, default None
        Highest band edge in Hz; None means ``sample_rate / 2``.
    mel_scale : {'htk', 'slaney'}, default 'htk'
        Hz-to-mel formula.
    norm : {None, 'slaney'}, default None
        None keeps peak-1 triangles; 'slaney' scales each triangle to unit area.
    center : bool, default True
        Pad ``n_fft // 2`` samples at both ends so frame t is centred on sample ``t * hop_length``.
    pad_mode : {'reflect', 'constant'}, default 'reflect'
        How ``center`` pads: mirrored samples or zeros.
    power : {2.0, 1.0}, default 2.0
        2.0 for the power spectrum ``|X|**2``, 1.0 for the magnitude ``|X|``.
    log : {'db', 'log10p', 'ln', None}, default 'db'
        'db': ``10 log10(max(x, amin))`` in dB; 'log10p': ``log10(1 + log_scale * x)``; 'ln': the natural
        log ``ln(max(x, amin))`` (the multi-scale CNN's, with ``amin=1e-20``); None: spectrum units (power
        or magnitude, as torchaudio gives).
    amin : float, default 1e-10
        Floor, in spectrum units, applied before the dB or ln log.
    top_db : float or None, default None
        If set (dB), each signal's values are clipped to its peak minus ``top_db`` (the peak over all channels
        of a (batch, channels, samples) input's window).
    db_ref : {'one', 'max'}, default 'one'
        'max': dB relative to that same peak, subtracted after the clip (librosa's ``ref=np.max``).
    log_scale : float, default 10000.0
        The C of 'log10p'.
    fp16_round : bool, default False
        Round mel values to float16 before the log (musicnn's recipe).
    threads : int, default 1
        Worker threads of the kernel; the result does not depend on it.

    Raises
    ------
    FrontendError
        A setting the front end or the kernel cannot use (see :class:`FrontendConfig`).
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
        db_ref: DbReference = "one",
        log_scale: float = 10000.0,
        fp16_round: bool = False,
        threads: int = 1,
    ) -> None:
        config = FrontendConfig(
            sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, f_min=f_min,
            f_max=f_max, mel_scale=mel_scale, norm=norm, center=center, pad_mode=pad_mode,  # type: ignore[arg-type]
            power=power, log=log, amin=amin, top_db=top_db, db_ref=db_ref, log_scale=log_scale, fp16_round=fp16_round,
        )
        _check_kernel_settings(config, threads)
        self.config = config
        self.threads = threads
        self._plan = _melspec.MelPlan(config)

    @classmethod
    def from_config(cls, config: FrontendConfig, threads: int = 1) -> MelSpectrogram:
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
        """Spectrogram of waveform(s) at ``sample_rate`` (full scale is [-1, 1]).

        Parameters
        ----------
        x : np.ndarray, shape (samples,), (batch, samples) or (batch, channels, samples)
            Float samples; other float dtypes are converted to float32. The channels of one window share
            the peak that ``top_db`` and ``db_ref='max'`` refer to.

        Returns
        -------
        np.ndarray, float32, shape (n_mels, frames), (batch, n_mels, frames) or (batch, channels, n_mels, frames)
            ``frames = config.n_frames(samples)``; values in dB (the default), log10(1 + C x) or
            spectrum units according to ``log``.

        Raises
        ------
        FrontendError
            Non-float input, NaN or infinite samples, or a signal too short to frame.
        """
        array = np.asarray(x)
        signals = _as_signal_matrix(array)
        self._check_length(signals.shape[1])
        channels = array.shape[1] if array.ndim == 3 else 1
        try:
            out = self._plan.compute(signals, self.threads, channels)
        except _melspec.NonFiniteInput as error:
            raise FrontendError(_describe_non_finite(signals, error.index, array.ndim)) from None
        if array.ndim == 3:
            return out.reshape(array.shape[0], channels, *out.shape[1:])
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
    """A C-contiguous float32 (signals, samples) view or copy of a float (samples,), (batch, samples) or
    (batch, channels, samples) array (channels of one window on consecutive rows)."""
    if not np.issubdtype(array.dtype, np.floating):
        raise FrontendError(f"input must be a floating-point waveform, got dtype {array.dtype}")
    if array.ndim not in (1, 2, 3):
        raise FrontendError(
            f"input must have shape (samples,), (batch, samples) or (batch, channels, samples), got {array.shape}")
    if array.ndim == 3 and array.shape[1] == 0:
        raise FrontendError(f"input has no channels: shape {array.shape}")
    signals = array.reshape(-1, array.shape[-1]) if array.ndim == 3 else np.atleast_2d(array)
    return np.ascontiguousarray(signals, dtype=np.float32)


def _describe_non_finite(signals: np.ndarray, flat_index: int, ndim: int) -> str:
    """One line naming the first NaN/Inf sample, e.g. 'input contains NaN at sample 1234'."""
    signal, sample = divmod(flat_index, signals.shape[1])
    value = float(signals[signal, sample])
    kind = "NaN" if np.isnan(value) else ("+Inf" if value > 0 else "-Inf")
    where = f"sample {sample}" if ndim == 1 else f"signal {signal}, sample {sample}"
    return f"input contains {kind} at {where}"
