/*
 * Log-mel spectrogram front end (see melspec.h).
 *
 * Frames are processed MDE_LANES at a time in structure-of-arrays layout, which matches the output
 * layout (n_mels, n_frames): the MDE_LANES results of one band are adjacent output values. Per group
 * of frames: window and de-interleave into lanes, real FFT power spectrum (fft.c), optional square
 * root, sparse mel filterbank, optional float16 rounding, log. The hot steps are compiled for AVX2+FMA
 * and portably and picked at run time.
 */
#define _POSIX_C_SOURCE 200809L

#include "melspec.h"

#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fft.h"

#ifdef MDE_X86_DISPATCH
#include <immintrin.h>
#endif

#define LANES MDE_LANES
#define MDE_PI 3.14159265358979323846
#define SCRATCH_ALIGNMENT 64

/* Nonzero run of one triangular filter: weights[offset + j] applies to bin first_bin + j. */
typedef struct {
    size_t first_bin;
    size_t n_bins;
    size_t offset;
} mel_band;

typedef void (*load_lanes_kernel)(const float *const *frames, const float *window, size_t half, mde_real *re,
                                  mde_real *im);
typedef void (*mel_log_kernel)(const mde_melspec_plan *plan, mde_real *spectrum, float *mel);
typedef void (*flag_non_finite_kernel)(const float *values, size_t n, int *any_bad);

struct mde_melspec_plan {
    mde_melspec_config config;
    size_t n_freqs;            /* n_fft/2 + 1 */
    float *window;             /* n_fft samples of the periodic Hann window */
    mel_band *bands;           /* n_mels */
    float *weights;            /* nonzero filter weights of all bands, concatenated */
    mde_rfft_plan *fft;
    float amin;                /* dB / ln floor in spectrum units */
    float floor_db;            /* 10 log10(amin), computed in double */
    float floor_ln;            /* ln(amin), computed in double */
    float log_scale;           /* C of log10(1 + C x) */
    load_lanes_kernel load_lanes;
    mel_log_kernel mel_log;
    flag_non_finite_kernel flag_non_finite;
};

/* Per-call working memory of one thread. */
typedef struct {
    void *block;        /* the single allocation holding the buffers below */
    mde_real *re, *im;  /* half-size complex FFT input, (n_fft/2) x LANES each */
    mde_real *spectrum; /* n_freqs x LANES */
    float *mel;         /* n_mels x LANES */
    float *edges;    /* LANES padded frames of n_fft samples, for frames that overlap the padding */
} scratch;

/* ================================================================ status */

const char *mde_status_message(mde_status status)
{
    switch (status) {
    case MDE_OK:
        return "ok";
    case MDE_ERR_N_FFT:
        return "n_fft must be a power of two from 256 to 4096";
    case MDE_ERR_CONFIG:
        return "invalid front-end settings";
    case MDE_ERR_NO_MEMORY:
        return "out of memory";
    case MDE_ERR_SHORT_INPUT:
        return "input signal is too short";
    case MDE_ERR_NON_FINITE:
        return "input contains NaN or infinity";
    case MDE_ERR_TOO_LARGE:
        return "input or output too large: its size overflows size_t";
    }
    return "unknown error";
}

/* ================================================================ mel scales and filterbank */

/* librosa's Slaney scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above. */
#define SLANEY_HZ_PER_MEL (200.0 / 3.0)
#define SLANEY_LOG_START_HZ 1000.0
#define SLANEY_LOG_START_MEL (SLANEY_LOG_START_HZ / SLANEY_HZ_PER_MEL)
#define SLANEY_LOG_STEP (log(6.4) / 27.0)

static double hz_to_mel(double hz, mde_mel_scale scale)
{
    if (scale == MDE_MEL_HTK) {
        return 2595.0 * log10(1.0 + hz / 700.0);
    }
    if (hz >= SLANEY_LOG_START_HZ) {
        return SLANEY_LOG_START_MEL + log(hz / SLANEY_LOG_START_HZ) / SLANEY_LOG_STEP;
    }
    return hz / SLANEY_HZ_PER_MEL;
}

static double mel_to_hz(double mel, mde_mel_scale scale)
{
    if (scale == MDE_MEL_HTK) {
        return 700.0 * (pow(10.0, mel / 2595.0) - 1.0);
    }
    if (mel >= SLANEY_LOG_START_MEL) {
        return SLANEY_LOG_START_HZ * exp(SLANEY_LOG_STEP * (mel - SLANEY_LOG_START_MEL));
    }
    return SLANEY_HZ_PER_MEL * mel;
}

/* n_mels + 2 band edges in Hz, equally spaced in mels from f_min to f_max (as numpy.linspace). */
static void band_edges_hz(const mde_melspec_config *config, double *edges)
{
    const size_t n_edges = (size_t)config->n_mels + 2;
    const double mel_min = hz_to_mel(config->f_min, config->mel_scale);
    const double mel_max = hz_to_mel(config->f_max, config->mel_scale);
    const double step = (mel_max - mel_min) / (double)(n_edges - 1);
    for (size_t i = 0; i + 1 < n_edges; ++i) {
        edges[i] = mel_to_hz((double)i * step + mel_min, config->mel_scale);
    }
    edges[n_edges - 1] = mel_to_hz(mel_max, config->mel_scale);
}

/* Weight of bin frequency freq_hz in triangle m (edges m, m+1, m+2), as librosa.filters.mel. */
static double triangle_weight(const double *edges, size_t m, double freq_hz, mde_mel_norm norm)
{
    const double rising = -(edges[m] - freq_hz) / (edges[m + 1] - edges[m]);
    const double falling = (edges[m + 2] - freq_hz) / (edges[m + 2] - edges[m + 1]);
    const double peak_one = fmax(0.0, fmin(rising, falling));
    return norm == MDE_NORM_SLANEY ? peak_one * (2.0 / (edges[m + 2] - edges[m])) : peak_one;
}

/* Dense n_freqs x n_mels filterbank (float32 of double-precision weights); NULL if out of memory. */
static float *dense_filterbank_create(const mde_melspec_config *config, size_t n_freqs)
{
    const size_t n_mels = (size_t)config->n_mels;
    double *edges = malloc((n_mels + 2) * sizeof *edges);
    float *dense = malloc(n_freqs * n_mels * sizeof *dense);
    if (edges && dense) {
        band_edges_hz(config, edges);
        const double hz_per_bin = 1.0 / ((double)config->n_fft * (1.0 / (double)config->sample_rate));
        for (size_t k = 0; k < n_freqs; ++k) {
            for (size_t m = 0; m < n_mels; ++m) {
                dense[k * n_mels + m] = (float)triangle_weight(edges, m, (double)k * hz_per_bin, config->norm);
            }
        }
    } else {
        free(dense);
        dense = NULL;
    }
    free(edges);
    return dense;
}

/* The run of bins from the first to the last nonzero weight of band m (empty if all are zero). */
static mel_band band_extent(const float *dense, size_t n_freqs, size_t n_mels, size_t m)
{
    mel_band band = {0, 0, 0};
    size_t k = 0;
    while (k < n_freqs && dense[k * n_mels + m] == 0.0f) {
        ++k;
    }
    band.first_bin = k;
    for (; k < n_freqs; ++k) {
        if (dense[k * n_mels + m] != 0.0f) {
            band.n_bins = k - band.first_bin + 1;
        }
    }
    return band;
}

/* Fills plan->bands and plan->weights from the dense matrix; 0 if out of memory. */
static int sparse_filterbank_create(mde_melspec_plan *plan, const float *dense)
{
    const size_t n_mels = (size_t)plan->config.n_mels;
    plan->bands = malloc(n_mels * sizeof *plan->bands);
    if (!plan->bands) {
        return 0;
    }
    size_t n_weights = 0;
    for (size_t m = 0; m < n_mels; ++m) {
        plan->bands[m] = band_extent(dense, plan->n_freqs, n_mels, m);
        plan->bands[m].offset = n_weights;
        n_weights += plan->bands[m].n_bins;
    }
    plan->weights = malloc((n_weights > 0 ? n_weights : 1) * sizeof *plan->weights);
    if (!plan->weights) {
        return 0;
    }
    for (size_t m = 0; m < n_mels; ++m) {
        const mel_band band = plan->bands[m];
        for (size_t j = 0; j < band.n_bins; ++j) {
            plan->weights[band.offset + j] = dense[(band.first_bin + j) * n_mels + m];
        }
    }
    return 1;
}

void mde_melspec_copy_filterbank(const mde_melspec_plan *plan, float *filterbank)
{
    const size_t n_mels = (size_t)plan->config.n_mels;
    memset(filterbank, 0, plan->n_freqs * n_mels * sizeof *filterbank);
    for (size_t m = 0; m < n_mels; ++m) {
        const mel_band band = plan->bands[m];
        for (size_t j = 0; j < band.n_bins; ++j) {
            filterbank[(band.first_bin + j) * n_mels + m] = plan->weights[band.offset + j];
        }
    }
}

/* ================================================================ window */

static float *hann_window_create(int n_fft)
{
    float *window = malloc((size_t)n_fft * sizeof *window);
    if (window) {
        for (int i = 0; i < n_fft; ++i) {
            window[i] = (float)(0.5 - 0.5 * cos(2.0 * MDE_PI * (double)i / (double)n_fft));
        }
    }
    return window;
}

void mde_melspec_copy_window(const mde_melspec_plan *plan, float *window)
{
    memcpy(window, plan->window, (size_t)plan->config.n_fft * sizeof *window);
}

/* ================================================================ elementwise maths */

static inline uint32_t float_bits(float value)
{
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    return bits;
}

static inline float bits_float(uint32_t bits)
{
    float value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

/*
 * Natural log for normal x >= FLT_MIN (its callers floor at amin >= FLT_MIN or take 1 + C x); +Inf and
 * NaN pass through. Branch-free so it vectorizes: x = 2^e m with m in [sqrt(1/2), sqrt(2)), then Cephes'
 * logf polynomial in m - 1 (relative error about 1e-7, i.e. ~4e-7 dB on a dB value of magnitude 1).
 */
MDE_INLINE float fast_ln(float x)
{
    const uint32_t bits = float_bits(x);
    const float mantissa = bits_float((bits & 0x007fffffu) | 0x3f000000u); /* in [0.5, 1) */
    const float exponent = (float)(int32_t)(bits >> 23) - 126.0f;
    const int below_sqrt_half = mantissa < 0.70710678118654752f;
    const float e = below_sqrt_half ? exponent - 1.0f : exponent;
    const float t = (below_sqrt_half ? mantissa + mantissa : mantissa) - 1.0f;
    const float t2 = t * t;
    float poly = 7.0376836292e-2f;
    poly = poly * t - 1.1514610310e-1f;
    poly = poly * t + 1.1676998740e-1f;
    poly = poly * t - 1.2420140846e-1f;
    poly = poly * t + 1.4249322787e-1f;
    poly = poly * t - 1.6668057665e-1f;
    poly = poly * t + 2.0000714765e-1f;
    poly = poly * t - 2.4999993993e-1f;
    poly = poly * t + 3.3333331174e-1f;
    const float y = poly * t * t2 - 2.12194440e-4f * e - 0.5f * t2;
    const float ln = (t + y) + 0.693359375f * e;
    return x <= FLT_MAX ? ln : x;
}

/*
 * x rounded to IEEE half precision (round to nearest even) and back, for x >= 0 or NaN; values at or
 * beyond the half overflow threshold become +Inf, as numpy's float32 -> float16 cast does.
 */
MDE_INLINE float round_to_half(float x)
{
    const uint32_t bits = float_bits(x);
    /* normal halves keep 10 of float32's 23 mantissa bits: round away the low 13, ties to even */
    const float normal = bits_float((bits + 0x0fffu + ((bits >> 13) & 1u)) & ~0x1fffu);
    /* subnormal halves are multiples of 2^-24, the spacing of floats in [0.5, 1) */
    const float subnormal = (x + 0.5f) - 0.5f;
    const float rounded = x < 0x1p-14f ? subnormal : (normal > 65504.0f ? INFINITY : normal);
    return x == x ? rounded : x;
}

/* ================================================================ hot kernels */

/* Windowed frames -> lanes: re[j][l] = w[2j] f_l[2j], im[j][l] = w[2j+1] f_l[2j+1] (portable build).
 * The product is rounded to float, as the AVX2 build does, then widened. */
static void load_lanes_portable(const float *const *frames, const float *window, size_t half,
                                mde_real *restrict re, mde_real *restrict im)
{
    for (int l = 0; l < LANES; ++l) {
        const float *restrict frame = frames[l];
        for (size_t j = 0; j < half; ++j) {
            re[j * LANES + l] = frame[2 * j] * window[2 * j];
            im[j * LANES + l] = frame[2 * j + 1] * window[2 * j + 1];
        }
    }
}

#ifdef MDE_X86_DISPATCH
#if MDE_LANES != 8
#error "load_lanes_avx2 transposes 8 x 8 blocks: it needs MDE_LANES == 8"
#endif

/* rows[c] <- column c of the 8 x 8 matrix whose row l is rows[l]. */
__attribute__((target("avx2,fma"))) static inline void transpose8(__m256 rows[8])
{
    __m256 pairs[8], quads[8];
    for (int i = 0; i < 4; ++i) {
        pairs[2 * i] = _mm256_unpacklo_ps(rows[2 * i], rows[2 * i + 1]);
        pairs[2 * i + 1] = _mm256_unpackhi_ps(rows[2 * i], rows[2 * i + 1]);
    }
    for (int i = 0; i < 2; ++i) {
        quads[4 * i] = _mm256_shuffle_ps(pairs[4 * i], pairs[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        quads[4 * i + 1] = _mm256_shuffle_ps(pairs[4 * i], pairs[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        quads[4 * i + 2] = _mm256_shuffle_ps(pairs[4 * i + 1], pairs[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        quads[4 * i + 3] = _mm256_shuffle_ps(pairs[4 * i + 1], pairs[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int c = 0; c < 4; ++c) {
        rows[c] = _mm256_permute2f128_ps(quads[c], quads[c + 4], 0x20);
        rows[c + 4] = _mm256_permute2f128_ps(quads[c], quads[c + 4], 0x31);
    }
}

/* Stores the 8 floats of v as 8 doubles at dst. */
__attribute__((target("avx2,fma"))) static inline void store_widened(mde_real *dst, __m256 v)
{
    _mm256_storeu_pd(dst, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
    _mm256_storeu_pd(dst + 4, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
}

/* As load_lanes_portable, eight samples of the eight frames at a time through an 8 x 8 transpose. */
__attribute__((target("avx2,fma"))) static void load_lanes_avx2(const float *const *frames, const float *window,
                                                              size_t half, mde_real *re, mde_real *im)
{
    for (size_t first = 0; first < 2 * half; first += 8) {
        const __m256 w = _mm256_loadu_ps(window + first);
        __m256 rows[8];
        for (int l = 0; l < LANES; ++l) {
            rows[l] = _mm256_mul_ps(_mm256_loadu_ps(frames[l] + first), w);
        }
        transpose8(rows); /* rows[c] now holds sample first + c of every frame */
        for (int c = 0; c < 8; c += 2) {
            store_widened(re + (first + c) / 2 * LANES, rows[c]);
            store_widened(im + (first + c) / 2 * LANES, rows[c + 1]);
        }
    }
}
#endif

MDE_INLINE void magnitude_from_power(mde_real *restrict spectrum, size_t n_values)
{
    for (size_t i = 0; i < n_values; ++i) {
        spectrum[i] = sqrt(spectrum[i]);
    }
}

/* acc[l] += weight * bins[l] for the MDE_LANES lanes of one spectrum bin. */
MDE_INLINE void accumulate_bin(mde_real *restrict acc, mde_real weight, const mde_real *restrict bins)
{
    for (int l = 0; l < LANES; ++l) {
        acc[l] += weight * bins[l];
    }
}

/* mel[m][l] = sum over the band's bins k of weight * spectrum[k][l], summed in mde_real and rounded to
 * float once; touches only nonzero weights. */
MDE_INLINE void apply_filterbank(const mde_melspec_plan *plan, const mde_real *spectrum, float *mel)
{
    for (size_t m = 0; m < (size_t)plan->config.n_mels; ++m) {
        const mel_band band = plan->bands[m];
        mde_real acc[LANES] = {0};
        for (size_t j = 0; j < band.n_bins; ++j) {
            accumulate_bin(acc, plan->weights[band.offset + j], spectrum + (band.first_bin + j) * LANES);
        }
        for (int l = 0; l < LANES; ++l) {
            mel[m * LANES + l] = (float)acc[l];
        }
    }
}

MDE_INLINE void round_all_to_half(float *restrict values, size_t n_values)
{
    for (size_t i = 0; i < n_values; ++i) {
        values[i] = round_to_half(values[i]);
    }
}

/* values <- 10 log10(max(values, amin)), dB; exactly floor_db where values <= amin. */
MDE_INLINE void decibels(float *restrict values, size_t n_values, float amin, float floor_db)
{
    const float db_per_neper = 4.342944819032518f; /* 10 / ln(10) */
    for (size_t i = 0; i < n_values; ++i) {
        const float floored = values[i] < amin ? amin : values[i];
        const float db = db_per_neper * fast_ln(floored);
        values[i] = floored == amin ? floor_db : db;
    }
}

/* values <- ln(max(values, amin)); exactly floor_ln where values <= amin. */
MDE_INLINE void natural_logs(float *restrict values, size_t n_values, float amin, float floor_ln)
{
    for (size_t i = 0; i < n_values; ++i) {
        const float floored = values[i] < amin ? amin : values[i];
        const float ln = fast_ln(floored);
        values[i] = floored == amin ? floor_ln : ln;
    }
}

/* values <- log10(1 + log_scale * values) in float32 (log_scale * x + 1 may be one fused multiply-add). */
MDE_INLINE void log10_1p_scaled(float *restrict values, size_t n_values, float log_scale)
{
    const float log10_e = 0.4342944819032518f;
    for (size_t i = 0; i < n_values; ++i) {
        const float scaled = log_scale * values[i];
        values[i] = log10_e * fast_ln(scaled + 1.0f);
    }
}

/* Power spectrum lanes -> finished mel lanes (magnitude, filterbank, half rounding, log). */
MDE_INLINE void mel_log_body(const mde_melspec_plan *plan, mde_real *spectrum, float *mel)
{
    const mde_melspec_config *config = &plan->config;
    const size_t n_values = (size_t)config->n_mels * LANES;
    if (config->power == 1) {
        magnitude_from_power(spectrum, plan->n_freqs * LANES);
    }
    apply_filterbank(plan, spectrum, mel);
    if (config->fp16_round) {
        round_all_to_half(mel, n_values);
    }
    if (config->log == MDE_LOG_DB) {
        decibels(mel, n_values, plan->amin, plan->floor_db);
    } else if (config->log == MDE_LOG_LOG10P) {
        log10_1p_scaled(mel, n_values, plan->log_scale);
    } else if (config->log == MDE_LOG_LN) {
        natural_logs(mel, n_values, plan->amin, plan->floor_ln);
    }
}

MDE_DISPATCHED(mel_log, (const mde_melspec_plan *plan, mde_real *spectrum, float *mel), (plan, spectrum, mel))

/* *any_bad <- 1 if values[0, n) hold a NaN or +-Inf, else 0. */
MDE_INLINE void flag_non_finite_body(const float *restrict values, size_t n, int *any_bad)
{
    int bad = 0;
    for (size_t i = 0; i < n; ++i) {
        bad |= !(fabsf(values[i]) <= FLT_MAX);
    }
    *any_bad = bad;
}

MDE_DISPATCHED(flag_non_finite, (const float *values, size_t n, int *any_bad), (values, n, any_bad))

/* ================================================================ plan */

/* 1 if value is a positive normal float32 (FLT_MIN..FLT_MAX), which float keeps to 2^-24 relative; 0 for NaN. */
static int is_normal_float32(double value)
{
    return value >= FLT_MIN && value <= FLT_MAX;
}

static mde_status validate_config(const mde_melspec_config *c)
{
    if (!mde_rfft_size_supported(c->n_fft)) {
        return MDE_ERR_N_FFT;
    }
    const int ranges_ok = c->sample_rate > 0 && c->hop_length > 0 && c->n_mels > 0 && c->f_min >= 0.0 &&
                          c->f_min < c->f_max && c->f_max <= c->sample_rate / 2.0;
    const int enums_ok = (c->mel_scale == MDE_MEL_HTK || c->mel_scale == MDE_MEL_SLANEY) &&
                         (c->norm == MDE_NORM_NONE || c->norm == MDE_NORM_SLANEY) &&
                         (c->pad_mode == MDE_PAD_REFLECT || c->pad_mode == MDE_PAD_CONSTANT) &&
                         (c->log == MDE_LOG_NONE || c->log == MDE_LOG_DB || c->log == MDE_LOG_LOG10P ||
                          c->log == MDE_LOG_LN);
    const int values_ok = (c->power == 1 || c->power == 2) && is_normal_float32(c->amin) &&
                          is_normal_float32(c->log_scale) &&
                          (!c->use_top_db || (c->log == MDE_LOG_DB && c->top_db >= 0.0)) &&
                          (!c->ref_max || c->log == MDE_LOG_DB);
    return ranges_ok && enums_ok && values_ok ? MDE_OK : MDE_ERR_CONFIG;
}

mde_status mde_melspec_plan_create(const mde_melspec_config *config, mde_melspec_plan **plan_out)
{
    *plan_out = NULL;
    const mde_status status = validate_config(config);
    if (status != MDE_OK) {
        return status;
    }
    mde_melspec_plan *plan = calloc(1, sizeof *plan);
    if (!plan) {
        return MDE_ERR_NO_MEMORY;
    }
    plan->config = *config;
    plan->n_freqs = (size_t)config->n_fft / 2 + 1;
    plan->amin = (float)config->amin;
    plan->floor_db = (float)(10.0 * log10((double)plan->amin));
    plan->floor_ln = (float)log((double)plan->amin);
    plan->log_scale = (float)config->log_scale;
    plan->load_lanes = MDE_PICK(load_lanes);
    plan->mel_log = MDE_PICK(mel_log);
    plan->flag_non_finite = MDE_PICK(flag_non_finite);
    plan->window = hann_window_create(config->n_fft);
    plan->fft = mde_rfft_plan_create(config->n_fft);
    float *dense = dense_filterbank_create(config, plan->n_freqs);
    const int filterbank_ok = dense && sparse_filterbank_create(plan, dense);
    free(dense);
    if (!plan->window || !plan->fft || !filterbank_ok) {
        mde_melspec_plan_free(plan);
        return MDE_ERR_NO_MEMORY;
    }
    *plan_out = plan;
    return MDE_OK;
}

void mde_melspec_plan_free(mde_melspec_plan *plan)
{
    if (plan) {
        free(plan->window);
        free(plan->bands);
        free(plan->weights);
        mde_rfft_plan_free(plan->fft);
        free(plan);
    }
}

size_t mde_melspec_n_freqs(const mde_melspec_plan *plan)
{
    return plan->n_freqs;
}

/* Samples of padding before the first sample (n_fft/2 when centred). */
static size_t left_padding(const mde_melspec_plan *plan)
{
    return plan->config.center ? (size_t)plan->config.n_fft / 2 : 0;
}

size_t mde_melspec_min_samples(const mde_melspec_plan *plan)
{
    if (!plan->config.center) {
        return (size_t)plan->config.n_fft;
    }
    return plan->config.pad_mode == MDE_PAD_REFLECT ? left_padding(plan) + 1 : 1;
}

size_t mde_melspec_n_frames(const mde_melspec_plan *plan, size_t n_samples)
{
    const size_t hop = (size_t)plan->config.hop_length;
    if (plan->config.center) {
        return n_samples / hop + 1;
    }
    return n_samples < (size_t)plan->config.n_fft ? 0 : (n_samples - (size_t)plan->config.n_fft) / hop + 1;
}

mde_status mde_melspec_output_size(const mde_melspec_plan *plan, size_t batch, size_t n_samples,
                                   size_t *n_values)
{
    const size_t per_signal_limit = SIZE_MAX / (size_t)plan->config.n_mels;
    const size_t n_frames = mde_melspec_n_frames(plan, n_samples);
    if (n_frames > per_signal_limit) {
        return MDE_ERR_TOO_LARGE;
    }
    const size_t per_signal = (size_t)plan->config.n_mels * n_frames;
    if (batch > 0 && (n_samples > SIZE_MAX / batch || per_signal > SIZE_MAX / batch)) {
        return MDE_ERR_TOO_LARGE;
    }
    *n_values = batch * per_signal;
    return MDE_OK;
}

/* ================================================================ framing */

/* Sample `index` of the padded signal, index counted from the original first sample. */
static float padded_sample(const float *signal, size_t n_samples, ptrdiff_t index, mde_pad_mode mode)
{
    const ptrdiff_t last = (ptrdiff_t)n_samples - 1;
    if (index >= 0 && index <= last) {
        return signal[index];
    }
    if (mode == MDE_PAD_CONSTANT) {
        return 0.0f;
    }
    return signal[index < 0 ? -index : 2 * last - index];
}

/* The n_fft samples of frame t: a pointer into the signal, or into edge_buffer when padding is needed. */
static const float *frame_samples(const mde_melspec_plan *plan, const float *signal, size_t n_samples,
                                  size_t t, float *edge_buffer)
{
    const size_t n_fft = (size_t)plan->config.n_fft;
    const ptrdiff_t start = (ptrdiff_t)(t * (size_t)plan->config.hop_length) - (ptrdiff_t)left_padding(plan);
    if (start >= 0 && (size_t)start + n_fft <= n_samples) {
        return signal + start;
    }
    for (size_t i = 0; i < n_fft; ++i) {
        edge_buffer[i] = padded_sample(signal, n_samples, start + (ptrdiff_t)i, plan->config.pad_mode);
    }
    return edge_buffer;
}

/* ================================================================ per-thread work */

static int scratch_create(scratch *s, const mde_melspec_plan *plan)
{
    const size_t half_values = (size_t)plan->config.n_fft / 2 * LANES;
    const size_t spectrum_values = plan->n_freqs * LANES;
    const size_t mel_values = (size_t)plan->config.n_mels * LANES;
    const size_t edge_values = (size_t)plan->config.n_fft * LANES;
    void *block = NULL;
    const size_t real_bytes = (2 * half_values + spectrum_values) * sizeof(mde_real);
    const size_t float_bytes = (mel_values + edge_values) * sizeof(float);
    if (posix_memalign(&block, SCRATCH_ALIGNMENT, real_bytes + float_bytes) != 0) {
        return 0;
    }
    s->block = block;
    s->re = block;
    s->im = s->re + half_values;
    s->spectrum = s->im + half_values;
    s->mel = (float *)(s->spectrum + spectrum_values);
    s->edges = s->mel + mel_values;
    return 1;
}

/* out[m * n_frames + l] = mel[m][l] for the first n_lanes lanes of every band. */
MDE_INLINE void copy_lanes_to_rows(const float *mel, size_t n_mels, size_t n_lanes, float *out, size_t n_frames)
{
    for (size_t m = 0; m < n_mels; ++m) {
        memcpy(out + m * n_frames, mel + m * LANES, n_lanes * sizeof(float));
    }
}

/* copy_lanes_to_rows, with the common all-lanes case compiled for a constant width. */
static void store_lanes(const float *mel, size_t n_mels, size_t n_valid, float *out, size_t n_frames)
{
    if (n_valid == LANES) {
        copy_lanes_to_rows(mel, n_mels, LANES, out, n_frames);
    } else {
        copy_lanes_to_rows(mel, n_mels, n_valid, out, n_frames);
    }
}

/* One signal's frames [first_frame, first_frame + LANES) into its output rows (n_mels x n_frames). */
static void process_group(const mde_melspec_plan *plan, scratch *s, const float *signal, size_t n_samples,
                          size_t n_frames, size_t first_frame, float *signal_out)
{
    const size_t n_fft = (size_t)plan->config.n_fft;
    const size_t n_valid = n_frames - first_frame < LANES ? n_frames - first_frame : LANES;
    const float *frames[LANES];
    for (size_t l = 0; l < LANES; ++l) {
        const size_t t = first_frame + (l < n_valid ? l : n_valid - 1);
        frames[l] = frame_samples(plan, signal, n_samples, t, s->edges + l * n_fft);
    }
    plan->load_lanes(frames, plan->window, n_fft / 2, s->re, s->im);
    mde_rfft_power(plan->fft, s->re, s->im, s->spectrum);
    plan->mel_log(plan, s->spectrum, s->mel);
    store_lanes(s->mel, (size_t)plan->config.n_mels, n_valid, signal_out + first_frame, n_frames);
}

/* A contiguous range of frame groups, numbered over the whole batch, and where its results go. */
typedef struct {
    const mde_melspec_plan *plan;
    const float *signals;
    size_t n_samples;
    size_t n_frames;
    size_t groups_per_signal;
    float *out;
    size_t first_group, end_group;
    mde_status status;
} work_range;

static void run_range(work_range *w)
{
    scratch s;
    if (!scratch_create(&s, w->plan)) {
        w->status = MDE_ERR_NO_MEMORY;
        return;
    }
    const size_t out_per_signal = (size_t)w->plan->config.n_mels * w->n_frames;
    for (size_t g = w->first_group; g < w->end_group; ++g) {
        const size_t signal = g / w->groups_per_signal;
        const size_t first_frame = g % w->groups_per_signal * LANES;
        process_group(w->plan, &s, w->signals + signal * w->n_samples, w->n_samples, w->n_frames, first_frame,
                      w->out + signal * out_per_signal);
    }
    free(s.block);
    w->status = MDE_OK;
}

static void *run_range_in_thread(void *range)
{
    run_range(range);
    return NULL;
}

/* Frame groups (of LANES frames) a thread must have to be worth starting. */
#define MIN_GROUPS_PER_THREAD 32

/* Splits the groups evenly over n_threads ranges, runs them and returns the first failure. */
static mde_status run_threads(const work_range *whole, size_t n_threads)
{
    work_range *ranges = malloc(n_threads * sizeof *ranges);
    pthread_t *threads = malloc(n_threads * sizeof *threads);
    int *started = calloc(n_threads, sizeof *started);
    mde_status status = ranges && threads && started ? MDE_OK : MDE_ERR_NO_MEMORY;
    const size_t total = whole->end_group;
    for (size_t i = 0; status == MDE_OK && i < n_threads; ++i) {
        ranges[i] = *whole;
        ranges[i].first_group = total * i / n_threads;
        ranges[i].end_group = total * (i + 1) / n_threads;
        started[i] = i > 0 && pthread_create(&threads[i], NULL, run_range_in_thread, &ranges[i]) == 0;
    }
    for (size_t i = 0; status == MDE_OK && i < n_threads; ++i) {
        if (started[i]) {
            pthread_join(threads[i], NULL);
        } else {
            run_range(&ranges[i]); /* the calling thread's share, or one whose thread could not start */
        }
    }
    for (size_t i = 0; status == MDE_OK && i < n_threads; ++i) {
        status = ranges[i].status;
    }
    free(ranges);
    free(threads);
    free(started);
    return status;
}

/* ================================================================ whole-signal steps */

/* Index of the first NaN or +-Inf in values[0, n), or n if there is none. */
static size_t find_non_finite(const mde_melspec_plan *plan, const float *values, size_t n)
{
    const size_t chunk = 4096;
    for (size_t start = 0; start < n; start += chunk) {
        const size_t count = n - start < chunk ? n - start : chunk;
        int any_bad = 0;
        plan->flag_non_finite(values + start, count, &any_bad);
        for (size_t i = start; any_bad && i < start + count; ++i) {
            if (!(fabsf(values[i]) <= FLT_MAX)) {
                return i;
            }
        }
    }
    return n;
}

/*
 * The dB values of signals that share one peak, relative to their peak: clipped to peak - top_db when
 * use_top_db, then shifted by -peak when ref_max.
 */
static void relate_to_peak(const mde_melspec_config *config, float *values, size_t n_values)
{
    float peak = -INFINITY;
    for (size_t i = 0; i < n_values; ++i) {
        peak = values[i] > peak ? values[i] : peak;
    }
    const float threshold = config->use_top_db ? peak - (float)config->top_db : -INFINITY;
    const float shift = config->ref_max ? peak : 0.0f;
    for (size_t i = 0; i < n_values; ++i) {
        values[i] = (values[i] < threshold ? threshold : values[i]) - shift;
    }
}

mde_status mde_melspec_compute(const mde_melspec_plan *plan, const float *signals, size_t batch,
                               size_t signals_per_peak, size_t n_samples, float *out, int n_threads,
                               size_t *bad_index)
{
    if (signals_per_peak == 0 || batch % signals_per_peak != 0) {
        return MDE_ERR_CONFIG;
    }
    if (n_samples < mde_melspec_min_samples(plan)) {
        return MDE_ERR_SHORT_INPUT;
    }
    size_t n_values = 0;
    const mde_status size_status = mde_melspec_output_size(plan, batch, n_samples, &n_values);
    if (size_status != MDE_OK) {
        return size_status;
    }
    const size_t bad = find_non_finite(plan, signals, batch * n_samples);
    if (bad < batch * n_samples) {
        if (bad_index) {
            *bad_index = bad;
        }
        return MDE_ERR_NON_FINITE;
    }
    const size_t n_frames = mde_melspec_n_frames(plan, n_samples);
    const size_t groups_per_signal = (n_frames + LANES - 1) / LANES;
    const size_t total_groups = batch * groups_per_signal;
    if (total_groups == 0) {
        return MDE_OK;
    }
    /* Each thread gets at least MIN_GROUPS_PER_THREAD groups: starting a thread costs tens of microseconds,
     * more than a short clip's whole spectrogram (0.5 s at hop 256: 4 groups, about 70 us on one thread). */
    const size_t useful = total_groups / MIN_GROUPS_PER_THREAD > 1 ? total_groups / MIN_GROUPS_PER_THREAD : 1;
    const size_t wanted = n_threads > 1 ? (size_t)n_threads : 1;
    const work_range whole = {plan, signals, n_samples, n_frames, groups_per_signal, out, 0, total_groups, MDE_OK};
    const mde_status status = run_threads(&whole, wanted < useful ? wanted : useful);
    if (status == MDE_OK && (plan->config.use_top_db || plan->config.ref_max)) {
        const size_t per_peak = signals_per_peak * (size_t)plan->config.n_mels * n_frames;
        for (size_t first = 0; first < batch; first += signals_per_peak) {
            relate_to_peak(&plan->config, out + first * (size_t)plan->config.n_mels * n_frames, per_peak);
        }
    }
    return status;
}
