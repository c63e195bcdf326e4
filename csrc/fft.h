/*
 * Real FFT power spectra of MDE_LANES frames at once.
 *
 * The frames are held in structure-of-arrays layout: element j of lane l lives at [j * MDE_LANES + l],
 * so every butterfly is a plain loop over MDE_LANES values that the compiler turns into one vector
 * operation. A real transform of n points is computed as a complex transform of n/2 points (even
 * samples as real parts, odd samples as imaginary parts) followed by a split step.
 *
 * This header also holds the small set of macros the kernels use to compile their hot code twice,
 * once for AVX2+FMA and once portable, and to pick one at run time.
 */
#ifndef MDE_FFT_H
#define MDE_FFT_H

#include <stddef.h>

/* Frames processed together; 8 doubles fill two 256-bit vector registers. */
#define MDE_LANES 8

/*
 * The arithmetic type of the transform, the power spectrum and the mel sums. Double: in float32 the
 * FFT's rounding noise, relative to a frame's loudest bins, moves bins 80 dB below them by up to
 * 0.1 dB, which moves the seed models' outputs past their parity bounds on real music.
 */
typedef double mde_real;

/* Supported real transform sizes, in samples (powers of two). */
#define MDE_FFT_MIN_SIZE 256
#define MDE_FFT_MAX_SIZE 4096

#if defined(__GNUC__)
#define MDE_INLINE static inline __attribute__((always_inline))
#else
#define MDE_INLINE static inline
#endif

#if defined(__GNUC__) && defined(__x86_64__)
#define MDE_X86_DISPATCH 1
#endif

/*
 * MDE_DISPATCHED(name, params, args) defines name##_portable and, on x86-64, name##_avx2 (compiled
 * for AVX2+FMA), both thin wrappers around the always-inline name##_body.
 * MDE_PICK(name) evaluates to the variant this CPU can run.
 */
#ifdef MDE_X86_DISPATCH
#define MDE_DISPATCHED(name, params, args)                                             \
    __attribute__((target("avx2,fma"))) static void name##_avx2 params { name##_body args; } \
    static void name##_portable params { name##_body args; }
#define MDE_PICK(name) (mde_cpu_has_avx2_fma() ? name##_avx2 : name##_portable)
#else
#define MDE_DISPATCHED(name, params, args) static void name##_portable params { name##_body args; }
#define MDE_PICK(name) (name##_portable)
#endif

/* 1 when the CPU (and OS) support AVX2 and FMA, else 0. */
int mde_cpu_has_avx2_fma(void);

typedef struct mde_rfft_plan mde_rfft_plan;

/* 1 if n (samples) is a supported power of two in [MDE_FFT_MIN_SIZE, MDE_FFT_MAX_SIZE], else 0. */
int mde_rfft_size_supported(int n);

/* Precomputes twiddles and the output permutation for size n; NULL if unsupported or out of memory. */
mde_rfft_plan *mde_rfft_plan_create(int n);

/* Releases a plan (NULL is allowed). */
void mde_rfft_plan_free(mde_rfft_plan *plan);

/*
 * Power spectra |X_l[k]|^2, k = 0 .. n/2, of MDE_LANES real frames x_l of n samples.
 * re, im: n/2 * MDE_LANES values each, holding re[j * MDE_LANES + l] = x_l[2j] and
 *         im[j * MDE_LANES + l] = x_l[2j + 1]; both are overwritten (scratch).
 * power:  (n/2 + 1) * MDE_LANES values, power[k * MDE_LANES + l] = |X_l[k]|^2 (unnormalised DFT).
 * The plan is only read, so one plan may serve several threads with their own buffers.
 */
void mde_rfft_power(const mde_rfft_plan *plan, mde_real *re, mde_real *im, mde_real *power);

#endif /* MDE_FFT_H */
