# cython: boundscheck=False, wraparound=False
"""Thin Cython layer over the C log-mel kernel (csrc/melspec.c); use :mod:`mde.runtime.frontend`."""

import numpy as np

from mde.errors import FrontendError


cdef extern from "melspec.h" nogil:
    ctypedef enum mde_mel_scale:
        MDE_MEL_HTK
        MDE_MEL_SLANEY
    ctypedef enum mde_mel_norm:
        MDE_NORM_NONE
        MDE_NORM_SLANEY
    ctypedef enum mde_pad_mode:
        MDE_PAD_REFLECT
        MDE_PAD_CONSTANT
    ctypedef enum mde_log_mode:
        MDE_LOG_NONE
        MDE_LOG_DB
        MDE_LOG_LOG10P
        MDE_LOG_LN
    ctypedef enum mde_status:
        MDE_OK
        MDE_ERR_SHORT_INPUT
        MDE_ERR_NON_FINITE
        MDE_ERR_TOO_LARGE

    ctypedef struct mde_melspec_config:
        int sample_rate
        int n_fft
        int hop_length
        int n_mels
        double f_min
        double f_max
        mde_mel_scale mel_scale
        mde_mel_norm norm
        int center
        mde_pad_mode pad_mode
        int power
        mde_log_mode log
        double amin
        int use_top_db
        double top_db
        int ref_max
        double log_scale
        int fp16_round

    ctypedef struct mde_melspec_plan:
        pass

    mde_status mde_melspec_plan_create(const mde_melspec_config *config, mde_melspec_plan **plan_out)
    void mde_melspec_plan_free(mde_melspec_plan *plan)
    const char *mde_status_message(mde_status status)
    size_t mde_melspec_min_samples(const mde_melspec_plan *plan)
    size_t mde_melspec_n_frames(const mde_melspec_plan *plan, size_t n_samples)
    mde_status mde_melspec_output_size(const mde_melspec_plan *plan, size_t batch, size_t n_samples,
                                       size_t *n_values)
    size_t mde_melspec_n_freqs(const mde_melspec_plan *plan)
    void mde_melspec_copy_window(const mde_melspec_plan *plan, float *window)
    void mde_melspec_copy_filterbank(const mde_melspec_plan *plan, float *filterbank)
    mde_status mde_melspec_compute(const mde_melspec_plan *plan, const float *signals, size_t batch,
                                   size_t signals_per_peak, size_t n_samples, float *out, int n_threads,
                                   size_t *bad_index)


class NonFiniteInput(FrontendError):
    """The input holds NaN or +-Inf; ``index`` is the flat index of the first such sample."""

    def __init__(self, index: int) -> None:
        super().__init__(f"input contains NaN or infinity at flat index {index}")
        self.index = index


cdef mde_melspec_config config_struct(config) except *:
    """The C settings for a FrontendConfig."""
    cdef mde_melspec_config c
    c.sample_rate = config.sample_rate
    c.n_fft = config.n_fft
    c.hop_length = config.hop_length
    c.n_mels = config.n_mels
    c.f_min = config.f_min
    c.f_max = config.fmax_hz
    c.mel_scale = MDE_MEL_HTK if config.mel_scale == "htk" else MDE_MEL_SLANEY
    c.norm = MDE_NORM_SLANEY if config.norm == "slaney" else MDE_NORM_NONE
    c.center = 1 if config.center else 0
    c.pad_mode = MDE_PAD_REFLECT if config.pad_mode == "reflect" else MDE_PAD_CONSTANT
    c.power = 2 if config.power == 2.0 else 1
    c.log = {"db": MDE_LOG_DB, "log10p": MDE_LOG_LOG10P, "ln": MDE_LOG_LN, None: MDE_LOG_NONE}[config.log]
    c.amin = config.amin
    c.use_top_db = 0 if config.top_db is None else 1
    c.top_db = 0.0 if config.top_db is None else config.top_db
    c.ref_max = 1 if config.db_ref == "max" else 0
    c.log_scale = config.log_scale
    c.fp16_round = 1 if config.fp16_round else 0
    return c


cdef class MelPlan:
    """A C plan (window, FFT twiddles, sparse filterbank) for one FrontendConfig."""

    cdef mde_melspec_plan *plan
    cdef readonly int n_mels
    cdef readonly int n_fft

    def __cinit__(self, config):
        cdef mde_melspec_config c = config_struct(config)
        cdef mde_status status = mde_melspec_plan_create(&c, &self.plan)
        if status != MDE_OK:
            raise FrontendError(f"cannot build the front end: {mde_status_message(status).decode()}")
        self.n_mels = c.n_mels
        self.n_fft = c.n_fft

    def __dealloc__(self):
        mde_melspec_plan_free(self.plan)

    def min_samples(self) -> int:
        """Smallest signal length the plan accepts, in samples."""
        return mde_melspec_min_samples(self.plan)

    def output_size(self, size_t batch, size_t n_samples) -> int:
        """Floats in the output (batch x n_mels x frames) for ``batch`` signals of ``n_samples`` samples.

        Raises FrontendError when that, or batch x n_samples, overflows the C size type (size_t).
        """
        cdef size_t n_values = 0
        cdef mde_status status = mde_melspec_output_size(self.plan, batch, n_samples, &n_values)
        if status != MDE_OK:
            raise FrontendError(f"{mde_status_message(status).decode()} ({batch} signals of {n_samples} samples)")
        return n_values

    def window(self) -> np.ndarray:
        """The periodic Hann window, float32 (n_fft,)."""
        out = np.empty(self.n_fft, dtype=np.float32)
        cdef float[::1] view = out
        mde_melspec_copy_window(self.plan, &view[0])
        return out

    def filterbank(self) -> np.ndarray:
        """The applied mel filterbank, densified: float32 (n_freqs, n_mels)."""
        out = np.empty((mde_melspec_n_freqs(self.plan), self.n_mels), dtype=np.float32)
        cdef float[:, ::1] view = out
        mde_melspec_copy_filterbank(self.plan, &view[0, 0])
        return out

    def compute(self, const float[:, ::1] signals, int threads, size_t signals_per_peak=1) -> np.ndarray:
        """Log-mels of C-contiguous float32 (batch, samples) -> float32 (batch, n_mels, frames).

        ``signals_per_peak`` consecutive signals (the channels of one window) share the peak that top_db
        and a dB reference of 'max' are taken from; batch must be a multiple of it.

        Runs without the GIL. Raises FrontendError for too-short or too-large input and NonFiniteInput for
        NaN/Inf.
        """
        cdef size_t batch = signals.shape[0]
        cdef size_t n_samples = signals.shape[1]
        cdef size_t bad_index = 0
        cdef mde_status status
        if n_samples < mde_melspec_min_samples(self.plan):
            raise FrontendError(
                f"{mde_status_message(MDE_ERR_SHORT_INPUT).decode()}: {n_samples} samples, "
                f"need at least {mde_melspec_min_samples(self.plan)}"
            )
        self.output_size(batch, n_samples)
        n_frames = mde_melspec_n_frames(self.plan, n_samples)
        out = np.empty((batch, self.n_mels, n_frames), dtype=np.float32)
        if batch == 0:
            return out
        cdef float[:, :, ::1] out_view = out
        with nogil:
            status = mde_melspec_compute(self.plan, &signals[0, 0], batch, signals_per_peak, n_samples,
                                         &out_view[0, 0, 0], threads, &bad_index)
        if status == MDE_ERR_NON_FINITE:
            raise NonFiniteInput(bad_index)
        if status != MDE_OK:
            raise FrontendError(mde_status_message(status).decode())
        return out
