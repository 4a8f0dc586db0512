/* Pooling row operations with AVX-512F (16 float lanes); see pool_isa.h for the contract.
 * Tails use masked loads/stores; strides other than 1 and 2 fall back to the scalar loops. */
#ifndef CYCONV_POOL_AVX512_H
#define CYCONV_POOL_AVX512_H

#include <immintrin.h>
#include "pool_generic.h"

#define CY_AVX512 __attribute__((target("avx512f")))

CY_AVX512 static inline __mmask16 cy_p512_mask(ptrdiff_t left)
{
    return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u);
}

CY_AVX512 __attribute__((always_inline)) static inline void
cy_p512_vrows(const float *x, ptrdiff_t step, int k, float *out, ptrdiff_t n, int is_max)
{
    ptrdiff_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 a = _mm512_loadu_ps(x + i);
        for (int r = 1; r < k; r++) {
            __m512 v = _mm512_loadu_ps(x + r * step + i);
            a = is_max ? _mm512_max_ps(v, a) : _mm512_add_ps(a, v);
        }
        _mm512_storeu_ps(out + i, a);
    }
    if (i < n) {    /* masked tail: the masked-off lanes are neither read nor written */
        __mmask16 m = cy_p512_mask(n - i);
        __m512 a = _mm512_maskz_loadu_ps(m, x + i);
        for (int r = 1; r < k; r++) {
            __m512 v = _mm512_maskz_loadu_ps(m, x + r * step + i);
            a = is_max ? _mm512_max_ps(v, a) : _mm512_add_ps(a, v);
        }
        _mm512_mask_storeu_ps(out + i, m, a);
    }
}

CY_AVX512 static void cy_pool_vmax_avx512(const float *x, ptrdiff_t step, int k, float *out,
                                          ptrdiff_t n)
{
    if (k == 3)
        cy_p512_vrows(x, step, 3, out, n, 1);
    else if (k == 2)
        cy_p512_vrows(x, step, 2, out, n, 1);
    else
        cy_p512_vrows(x, step, k, out, n, 1);
}

CY_AVX512 static void cy_pool_vsum_avx512(const float *x, ptrdiff_t step, int k, float *out,
                                          ptrdiff_t n)
{
    if (k == 3)
        cy_p512_vrows(x, step, 3, out, n, 0);
    else if (k == 2)
        cy_p512_vrows(x, step, 2, out, n, 0);
    else
        cy_p512_vrows(x, step, k, out, n, 0);
}

/* Lanes 0, 2, .., 30 of the 32 floats at p: t[2o + c] for o = 0..15 when p = t + c. */
CY_AVX512 static inline __m512 cy_p512_even(const float *p)
{
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14,
                                           16, 18, 20, 22, 24, 26, 28, 30);
    return _mm512_permutex2var_ps(_mm512_loadu_ps(p), even, _mm512_loadu_ps(p + 16));
}

/* Window sum / max of 16 consecutive outputs starting at o (s = 1 or 2). The loads may run
 * past the last tap by up to 31 floats: the caller's buffer has CY_POOL_SLACK there. */
CY_AVX512 static inline __m512 cy_p512_hmax16(const float *t, ptrdiff_t o, int k, int s,
                                              int d)
{
    __m512 a;
    if (s == 1) {
        a = _mm512_loadu_ps(t + o);
        for (int j = 1; j < k; j++)
            a = _mm512_max_ps(_mm512_loadu_ps(t + o + j * d), a);
    } else {
        a = cy_p512_even(t + 2 * o);
        for (int j = 1; j < k; j++)
            a = _mm512_max_ps(cy_p512_even(t + 2 * o + j * d), a);
    }
    return a;
}

CY_AVX512 static inline __m512 cy_p512_hsum16(const float *t, ptrdiff_t o, int k, int s,
                                              int d)
{
    __m512 a;
    if (s == 1) {
        a = _mm512_loadu_ps(t + o);
        for (int j = 1; j < k; j++)
            a = _mm512_add_ps(a, _mm512_loadu_ps(t + o + j * d));
    } else {
        a = cy_p512_even(t + 2 * o);
        for (int j = 1; j < k; j++)
            a = _mm512_add_ps(a, cy_p512_even(t + 2 * o + j * d));
    }
    return a;
}

/* One row of outputs; always inlined so the calls below with constant (k, s, d) compile to
 * straight-line code for the common pools (no loop over taps, no stride test). */
CY_AVX512 __attribute__((always_inline)) static inline void
cy_p512_hmax_row(const float *t, float *y, ptrdiff_t n, int k, int s, int d)
{
    ptrdiff_t o = 0;
    for (; o + 16 <= n; o += 16)
        _mm512_storeu_ps(y + o, cy_p512_hmax16(t, o, k, s, d));
    if (o < n)
        _mm512_mask_storeu_ps(y + o, cy_p512_mask(n - o), cy_p512_hmax16(t, o, k, s, d));
}

CY_AVX512 __attribute__((always_inline)) static inline void
cy_p512_havg_row(const float *t, float *y, ptrdiff_t n, int k, int s, int d, float rh,
                 const float *rw)
{
    const __m512 vrh = _mm512_set1_ps(rh);
    ptrdiff_t o = 0;
    for (; o + 16 <= n; o += 16) {
        __m512 r = _mm512_mul_ps(vrh, _mm512_loadu_ps(rw + o));
        _mm512_storeu_ps(y + o, _mm512_mul_ps(cy_p512_hsum16(t, o, k, s, d), r));
    }
    if (o < n) {
        __mmask16 m = cy_p512_mask(n - o);
        __m512 r = _mm512_mul_ps(vrh, _mm512_maskz_loadu_ps(m, rw + o));
        _mm512_mask_storeu_ps(y + o, m, _mm512_mul_ps(cy_p512_hsum16(t, o, k, s, d), r));
    }
}

CY_AVX512 static void cy_pool_hmax_avx512(const float *t, float *y, ptrdiff_t n, int k, int s,
                                          int d)
{
    if (s > 2)
        cy_pool_hmax_scalar(t, y, 0, n, k, s, d);
    else if (d == 1 && k == 3 && s == 2)
        cy_p512_hmax_row(t, y, n, 3, 2, 1);
    else if (d == 1 && k == 3 && s == 1)
        cy_p512_hmax_row(t, y, n, 3, 1, 1);
    else if (d == 1 && k == 2 && s == 2)
        cy_p512_hmax_row(t, y, n, 2, 2, 1);
    else
        cy_p512_hmax_row(t, y, n, k, s, d);
}

CY_AVX512 static void cy_pool_havg_avx512(const float *t, float *y, ptrdiff_t n, int k, int s,
                                          int d, float rh, const float *rw)
{
    if (s > 2)
        cy_pool_havg_scalar(t, y, 0, n, k, s, d, rh, rw);
    else if (d == 1 && k == 3 && s == 2)
        cy_p512_havg_row(t, y, n, 3, 2, 1, rh, rw);
    else if (d == 1 && k == 3 && s == 1)
        cy_p512_havg_row(t, y, n, 3, 1, 1, rh, rw);
    else if (d == 1 && k == 2 && s == 2)
        cy_p512_havg_row(t, y, n, 2, 2, 1, rh, rw);
    else
        cy_p512_havg_row(t, y, n, k, s, d, rh, rw);
}

CY_AVX512 static float cy_pool_gmax_avx512(const float *x, ptrdiff_t n)
{
    const __m512 lowest = _mm512_set1_ps(-__builtin_inff());
    __m512 a = lowest, b = lowest;
    ptrdiff_t i = 0;
    for (; i + 32 <= n; i += 32) {
        a = _mm512_max_ps(_mm512_loadu_ps(x + i), a);
        b = _mm512_max_ps(_mm512_loadu_ps(x + i + 16), b);
    }
    for (; i < n; i += 16)
        a = _mm512_max_ps(_mm512_mask_loadu_ps(lowest, cy_p512_mask(n - i), x + i), a);
    return _mm512_reduce_max_ps(_mm512_max_ps(a, b));
}

/* Two float accumulators of 16 lanes (each lane sums n/32 terms), combined in double. */
CY_AVX512 static double cy_pool_gsum_avx512(const float *x, ptrdiff_t n)
{
    __m512 a = _mm512_setzero_ps(), b = _mm512_setzero_ps();
    ptrdiff_t i = 0;
    for (; i + 32 <= n; i += 32) {
        a = _mm512_add_ps(a, _mm512_loadu_ps(x + i));
        b = _mm512_add_ps(b, _mm512_loadu_ps(x + i + 16));
    }
    for (; i < n; i += 16)
        a = _mm512_add_ps(a, _mm512_maskz_loadu_ps(cy_p512_mask(n - i), x + i));
    __m512d lo = _mm512_add_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(a)),
                               _mm512_cvtps_pd(_mm512_castps512_ps256(b)));
    __m512d hi = _mm512_add_pd(
        _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1))),
        _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(b), 1))));
    return _mm512_reduce_add_pd(_mm512_add_pd(lo, hi));
}

static const cy_pool_isa cy_pool_avx512 = {
    "avx512f", cy_pool_vmax_avx512, cy_pool_vsum_avx512, cy_pool_hmax_avx512,
    cy_pool_havg_avx512, cy_pool_gmax_avx512, cy_pool_gsum_avx512,
};

#endif
