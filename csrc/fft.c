/*
 * Real FFT power spectra over MDE_LANES frames in structure-of-arrays layout (see fft.h).
 *
 * The complex transform of m = n/2 points is a decimation-in-frequency FFT: natural-order input,
 * bit-reversed output. Pairs of radix-2 stages are fused into radix-4 passes (an extra radix-2 pass
 * runs first when log2(m) is odd); a fused pass computes exactly what the two radix-2 stages would,
 * so the output stays in bit-reversed order and the split step reads it through a permutation table.
 * All twiddles are computed once per plan in double precision.
 */
#include "fft.h"

#include <math.h>
#include <stdlib.h>

#define LANES MDE_LANES
#define MDE_PI 3.14159265358979323846

typedef void (*power_kernel)(const mde_rfft_plan *plan, mde_real *re, mde_real *im, mde_real *power);

struct mde_rfft_plan {
    size_t half;               /* m = n/2, points of the complex transform */
    int leading_radix2;        /* 1 when log2(m) is odd: one radix-2 pass before the radix-4 passes */
    mde_real *radix2_twiddles;    /* m/2 pairs (re, im) of W_m^j; NULL when unused */
    mde_real *radix4_twiddles;    /* per twiddled radix-4 pass of block 4q: q sextets (W^j, W^2j, W^3j) */
    unsigned *bitrev;          /* m entries: buffer position of complex output k */
    mde_real *split_twiddles;     /* m/2 pairs (re, im) of W_n^k, k < m/2 */
    power_kernel kernel;       /* the AVX2+FMA or portable build of the transform */
};

/* ---------------------------------------------------------------- CPU features */

int mde_cpu_has_avx2_fma(void)
{
#ifdef MDE_X86_DISPATCH
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

/* ---------------------------------------------------------------- plan */

int mde_rfft_size_supported(int n)
{
    return n >= MDE_FFT_MIN_SIZE && n <= MDE_FFT_MAX_SIZE && (n & (n - 1)) == 0;
}

static unsigned log2_exact(size_t n)
{
    unsigned bits = 0;
    while ((size_t)1 << bits < n) {
        ++bits;
    }
    return bits;
}

/* Stores exp(-2 pi i k / n) as (re, im) at dst[0], dst[1]. */
static void store_twiddle(mde_real *dst, size_t k, size_t n)
{
    const double angle = -2.0 * MDE_PI * (double)k / (double)n;
    dst[0] = (mde_real)cos(angle);
    dst[1] = (mde_real)sin(angle);
}

static mde_real *radix2_twiddles_create(size_t half)
{
    mde_real *tw = malloc(half * sizeof *tw); /* half/2 pairs */
    if (tw) {
        for (size_t j = 0; j < half / 2; ++j) {
            store_twiddle(tw + 2 * j, j, half);
        }
    }
    return tw;
}

/* Block size of the first radix-4 pass, in complex points. */
static size_t first_radix4_block(const mde_rfft_plan *plan)
{
    return plan->leading_radix2 ? plan->half / 2 : plan->half;
}

/* Twiddled radix-4 passes have blocks 4q with q >= 4; the last pass (q = 1) needs none. */
static mde_real *radix4_twiddles_create(const mde_rfft_plan *plan)
{
    size_t total = 0;
    for (size_t block = first_radix4_block(plan); block >= 16; block /= 4) {
        total += 6 * (block / 4);
    }
    mde_real *tw = malloc(total * sizeof *tw);
    if (!tw) {
        return NULL;
    }
    mde_real *dst = tw;
    for (size_t block = first_radix4_block(plan); block >= 16; block /= 4) {
        for (size_t j = 0; j < block / 4; ++j, dst += 6) {
            store_twiddle(dst, j, block);
            store_twiddle(dst + 2, 2 * j, block);
            store_twiddle(dst + 4, 3 * j, block);
        }
    }
    return tw;
}

static unsigned *bitrev_create(size_t half)
{
    unsigned *table = malloc(half * sizeof *table);
    if (table) {
        const unsigned bits = log2_exact(half);
        for (size_t k = 0; k < half; ++k) {
            unsigned reversed = 0;
            for (unsigned b = 0; b < bits; ++b) {
                reversed |= (unsigned)((k >> b) & 1u) << (bits - 1 - b);
            }
            table[k] = reversed;
        }
    }
    return table;
}

static mde_real *split_twiddles_create(size_t half)
{
    mde_real *tw = malloc(half * sizeof *tw); /* half/2 pairs */
    if (tw) {
        for (size_t k = 0; k < half / 2; ++k) {
            store_twiddle(tw + 2 * k, k, 2 * half);
        }
    }
    return tw;
}

static power_kernel pick_power_kernel(void);

mde_rfft_plan *mde_rfft_plan_create(int n)
{
    if (!mde_rfft_size_supported(n)) {
        return NULL;
    }
    mde_rfft_plan *plan = calloc(1, sizeof *plan);
    if (!plan) {
        return NULL;
    }
    plan->half = (size_t)n / 2;
    plan->leading_radix2 = (int)(log2_exact(plan->half) % 2);
    plan->radix2_twiddles = plan->leading_radix2 ? radix2_twiddles_create(plan->half) : NULL;
    plan->radix4_twiddles = radix4_twiddles_create(plan);
    plan->bitrev = bitrev_create(plan->half);
    plan->split_twiddles = split_twiddles_create(plan->half);
    plan->kernel = pick_power_kernel();
    if ((plan->leading_radix2 && !plan->radix2_twiddles) || !plan->radix4_twiddles || !plan->bitrev ||
        !plan->split_twiddles) {
        mde_rfft_plan_free(plan);
        return NULL;
    }
    return plan;
}

void mde_rfft_plan_free(mde_rfft_plan *plan)
{
    if (plan) {
        free(plan->radix2_twiddles);
        free(plan->radix4_twiddles);
        free(plan->bitrev);
        free(plan->split_twiddles);
        free(plan);
    }
}

/* ---------------------------------------------------------------- butterflies */

/* a, b <- a + b, (a - b) * w on MDE_LANES complex values. */
MDE_INLINE void butterfly2(mde_real *restrict ar, mde_real *restrict ai, mde_real *restrict br, mde_real *restrict bi,
                           mde_real wr, mde_real wi)
{
    for (int l = 0; l < LANES; ++l) {
        const mde_real dr = ar[l] - br[l];
        const mde_real di = ai[l] - bi[l];
        ar[l] += br[l];
        ai[l] += bi[l];
        br[l] = dr * wr - di * wi;
        bi[l] = dr * wi + di * wr;
    }
}

/*
 * Two fused radix-2 DIF stages on x0..x3 (points j, j+q, j+2q, j+3q of a block of 4q), MDE_LANES wide:
 * with a = x0+x2, b = x1+x3, c = x0-x2, d = -i (x1-x3) and t = W_4q^j,
 * x0 <- a+b, x1 <- (a-b) t^2, x2 <- (c+d) t, x3 <- (c-d) t^3.
 * tw holds (t, t^2, t^3) as re/im pairs; twiddled = 0 means t = 1 (compile-time constant when inlined).
 */
MDE_INLINE void butterfly4(mde_real *restrict r0, mde_real *restrict i0, mde_real *restrict r1, mde_real *restrict i1,
                           mde_real *restrict r2, mde_real *restrict i2, mde_real *restrict r3, mde_real *restrict i3,
                           const mde_real *restrict tw, int twiddled)
{
    for (int l = 0; l < LANES; ++l) {
        const mde_real ar = r0[l] + r2[l], ai = i0[l] + i2[l];
        const mde_real br = r1[l] + r3[l], bi = i1[l] + i3[l];
        const mde_real cr = r0[l] - r2[l], ci = i0[l] - i2[l];
        const mde_real dr = i1[l] - i3[l], di = r3[l] - r1[l];
        const mde_real y1r = ar - br, y1i = ai - bi;
        const mde_real y2r = cr + dr, y2i = ci + di;
        const mde_real y3r = cr - dr, y3i = ci - di;
        r0[l] = ar + br;
        i0[l] = ai + bi;
        if (twiddled) {
            r1[l] = y1r * tw[2] - y1i * tw[3];
            i1[l] = y1r * tw[3] + y1i * tw[2];
            r2[l] = y2r * tw[0] - y2i * tw[1];
            i2[l] = y2r * tw[1] + y2i * tw[0];
            r3[l] = y3r * tw[4] - y3i * tw[5];
            i3[l] = y3r * tw[5] + y3i * tw[4];
        } else {
            r1[l] = y1r;
            i1[l] = y1i;
            r2[l] = y2r;
            i2[l] = y2i;
            r3[l] = y3r;
            i3[l] = y3i;
        }
    }
}

/* ---------------------------------------------------------------- passes */

MDE_INLINE void radix2_pass(mde_real *re, mde_real *im, size_t half, const mde_real *tw)
{
    const size_t span = half / 2;
    for (size_t j = 0; j < span; ++j) {
        const size_t a = j * LANES, b = (j + span) * LANES;
        butterfly2(re + a, im + a, re + b, im + b, tw[2 * j], tw[2 * j + 1]);
    }
}

/* One radix-4 pass over blocks of 4q points; tw holds q sextets, or is NULL when q == 1. */
MDE_INLINE void radix4_pass(mde_real *re, mde_real *im, size_t half, size_t q, const mde_real *tw, int twiddled)
{
    const size_t stride = q * LANES;
    for (size_t block = 0; block < half; block += 4 * q) {
        for (size_t j = 0; j < q; ++j) {
            const size_t p = (block + j) * LANES;
            butterfly4(re + p, im + p, re + p + stride, im + p + stride, re + p + 2 * stride,
                       im + p + 2 * stride, re + p + 3 * stride, im + p + 3 * stride,
                       twiddled ? tw + 6 * j : tw, twiddled);
        }
    }
}

/* In-place complex DIF FFT of m points per lane; output k lands at position bitrev[k]. */
MDE_INLINE void complex_fft(const mde_rfft_plan *plan, mde_real *re, mde_real *im)
{
    if (plan->leading_radix2) {
        radix2_pass(re, im, plan->half, plan->radix2_twiddles);
    }
    const mde_real *tw = plan->radix4_twiddles;
    for (size_t block = first_radix4_block(plan); block >= 16; block /= 4) {
        radix4_pass(re, im, plan->half, block / 4, tw, 1);
        tw += 6 * (block / 4);
    }
    radix4_pass(re, im, plan->half, 1, NULL, 0);
}

/* Power of X[0] and X[m] (both from Z[0] = Z_re + i Z_im: X[0] = Z_re + Z_im, X[m] = Z_re - Z_im)
 * and of X[m/2] = conj(Z[m/2]), whose permuted position is 1. */
MDE_INLINE void split_power_edges(size_t half, const mde_real *restrict re, const mde_real *restrict im,
                                  mde_real *restrict power)
{
    for (int l = 0; l < LANES; ++l) {
        const mde_real sum = re[l] + im[l], diff = re[l] - im[l];
        const mde_real mid_r = re[LANES + l], mid_i = im[LANES + l];
        power[l] = sum * sum;
        power[half * LANES + l] = diff * diff;
        power[half / 2 * LANES + l] = mid_r * mid_r + mid_i * mid_i;
    }
}

/*
 * Power of the real spectrum from the half-size complex spectrum Z (split step).
 * For 0 < k < m/2, with A = Z[k], B = Z[m-k], E = A + conj(B), O = -i (A - conj(B)), T = W_n^k O:
 * X[k] = (E + T) / 2 and X[m-k] = conj(E - T) / 2.
 */
MDE_INLINE void split_power(const mde_rfft_plan *plan, const mde_real *restrict re, const mde_real *restrict im,
                            mde_real *restrict power)
{
    const size_t half = plan->half;
    split_power_edges(half, re, im, power);
    for (size_t k = 1; k < half / 2; ++k) {
        const mde_real *ar = re + plan->bitrev[k] * LANES, *ai = im + plan->bitrev[k] * LANES;
        const mde_real *br = re + plan->bitrev[half - k] * LANES, *bi = im + plan->bitrev[half - k] * LANES;
        const mde_real wr = plan->split_twiddles[2 * k], wi = plan->split_twiddles[2 * k + 1];
        mde_real *low = power + k * LANES;
        mde_real *high = power + (half - k) * LANES;
        for (int l = 0; l < LANES; ++l) {
            const mde_real er = ar[l] + br[l], ei = ai[l] - bi[l];
            const mde_real or_ = ai[l] + bi[l], oi = br[l] - ar[l];
            const mde_real tr = wr * or_ - wi * oi, ti = wr * oi + wi * or_;
            const mde_real sr = er + tr, si = ei + ti, dr = er - tr, di = ei - ti;
            low[l] = 0.25 * (sr * sr + si * si);
            high[l] = 0.25 * (dr * dr + di * di);
        }
    }
}

MDE_INLINE void power_kernel_body(const mde_rfft_plan *plan, mde_real *re, mde_real *im, mde_real *power)
{
    complex_fft(plan, re, im);
    split_power(plan, re, im, power);
}

MDE_DISPATCHED(power_kernel, (const mde_rfft_plan *plan, mde_real *re, mde_real *im, mde_real *power),
               (plan, re, im, power))

static power_kernel pick_power_kernel(void)
{
    return MDE_PICK(power_kernel);
}

void mde_rfft_power(const mde_rfft_plan *plan, mde_real *re, mde_real *im, mde_real *power)
{
    plan->kernel(plan, re, im, power);
}
