/*
 * Log-mel spectrogram front end: periodic Hann window, optional centre padding, real FFT, power or
 * magnitude spectrum, sparse mel filterbank, then dB / log10(1 + C x) / no log.
 *
 * A plan holds everything that depends only on the settings (window, FFT twiddles, sparse filterbank).
 * It is read-only after creation, so one plan may be used from several threads at once; every call
 * allocates its own scratch buffers.
 *
 * Pointers: every pointer argument must be non-NULL, except where its function's comment says that NULL
 * is allowed (mde_melspec_plan_free's plan; mde_melspec_compute's bad_index, and its signals and out when
 * batch is 0).
 */
#ifndef MDE_MELSPEC_H
#define MDE_MELSPEC_H

#include <stddef.h>

typedef enum { MDE_MEL_HTK = 0, MDE_MEL_SLANEY = 1 } mde_mel_scale;
typedef enum { MDE_NORM_NONE = 0, MDE_NORM_SLANEY = 1 } mde_mel_norm;
typedef enum { MDE_PAD_REFLECT = 0, MDE_PAD_CONSTANT = 1 } mde_pad_mode;
typedef enum { MDE_LOG_NONE = 0, MDE_LOG_DB = 1, MDE_LOG_LOG10P = 2, MDE_LOG_LN = 3 } mde_log_mode;

typedef enum {
    MDE_OK = 0,
    MDE_ERR_N_FFT,       /* n_fft is not a power of two in 256..4096 */
    MDE_ERR_CONFIG,      /* another setting is out of range */
    MDE_ERR_NO_MEMORY,   /* an allocation failed */
    MDE_ERR_SHORT_INPUT, /* fewer samples than mde_melspec_min_samples */
    MDE_ERR_NON_FINITE,  /* the input holds NaN or +-Inf */
    MDE_ERR_TOO_LARGE    /* batch x n_samples, or the output's size, does not fit in a size_t */
} mde_status;

/* Settings; the meaning of each field is that of mde.runtime.frontend_config.FrontendConfig. */
typedef struct {
    int sample_rate;        /* Hz */
    int n_fft;              /* FFT size and Hann window length, samples */
    int hop_length;         /* frame step, samples */
    int n_mels;             /* mel bands */
    double f_min, f_max;    /* band edges, Hz */
    mde_mel_scale mel_scale;
    mde_mel_norm norm;
    int center;             /* 1: pad n_fft/2 samples on both sides */
    mde_pad_mode pad_mode;
    int power;              /* 2: |X|^2, 1: |X| */
    mde_log_mode log;
    double amin;            /* floor before the dB or ln log, spectrum units: a normal float32, FLT_MIN..FLT_MAX */
    int use_top_db;         /* 1: clip dB values to (peak) - top_db, the peak over one group of signals */
    double top_db;          /* dB, >= 0 */
    int ref_max;            /* 1: dB relative to the peak (librosa's ref=np.max): the peak is subtracted after the
                             * top_db clip, so the group's values end at 0 dB; needs log dB */
    double log_scale;       /* C in log10(1 + C x): a normal float32, FLT_MIN..FLT_MAX */
    int fp16_round;         /* 1: round mel energies to IEEE half precision before the log */
} mde_melspec_config;

typedef struct mde_melspec_plan mde_melspec_plan;

/* Builds a plan into *plan_out (set to NULL on failure); MDE_ERR_N_FFT or MDE_ERR_CONFIG for bad settings. */
mde_status mde_melspec_plan_create(const mde_melspec_config *config, mde_melspec_plan **plan_out);

/* Releases a plan (NULL is allowed). */
void mde_melspec_plan_free(mde_melspec_plan *plan);

/* One-line English description of a status. */
const char *mde_status_message(mde_status status);

/* Smallest signal length, in samples, the plan accepts. */
size_t mde_melspec_min_samples(const mde_melspec_plan *plan);

/* Frames produced for a signal of n_samples samples (n_samples >= the minimum). */
size_t mde_melspec_n_frames(const mde_melspec_plan *plan, size_t n_samples);

/*
 * Into *n_values, the floats of the output for batch signals of n_samples samples each
 * (batch x n_mels x n_frames); MDE_ERR_TOO_LARGE when that or batch x n_samples overflows a size_t.
 */
mde_status mde_melspec_output_size(const mde_melspec_plan *plan, size_t batch, size_t n_samples,
                                   size_t *n_values);

/* Number of one-sided FFT bins, n_fft/2 + 1. */
size_t mde_melspec_n_freqs(const mde_melspec_plan *plan);

/* The periodic Hann window, n_fft floats. */
void mde_melspec_copy_window(const mde_melspec_plan *plan, float *window);

/* The filterbank the kernel applies, densified: n_freqs x n_mels floats, row-major. */
void mde_melspec_copy_filterbank(const mde_melspec_plan *plan, float *filterbank);

/*
 * Log-mel spectrograms of a batch of signals.
 * signals: batch x n_samples floats, row-major.
 * out:     batch x n_mels x n_frames floats, row-major (n_frames from mde_melspec_n_frames).
 * signals_per_peak: consecutive signals that share one peak for top_db and ref_max (the channels of one
 *          window; 1: each signal has its own); batch must be a multiple of it, else MDE_ERR_CONFIG.
 * n_threads: worker threads (frames of all signals are split between them); results do not depend
 *            on it. On MDE_ERR_NON_FINITE, *bad_index is the flat index of the first NaN or Inf
 *            (bad_index may be NULL when the caller does not need it).
 * signals and out may be NULL when batch is 0. Returns MDE_ERR_SHORT_INPUT, MDE_ERR_TOO_LARGE (see
 * mde_melspec_output_size), MDE_ERR_NON_FINITE or MDE_ERR_NO_MEMORY without writing to out.
 * Needs no Python and touches no global state, so callers may release the GIL around it.
 */
mde_status mde_melspec_compute(const mde_melspec_plan *plan, const float *signals, size_t batch,
                               size_t signals_per_peak, size_t n_samples, float *out, int n_threads,
                               size_t *bad_index);

#endif /* MDE_MELSPEC_H */
