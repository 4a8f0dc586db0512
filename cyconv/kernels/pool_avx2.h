/* Pooling row operations with AVX2 (8 float lanes); see pool_isa.h for the contract.
 * Row tails run the scalar loops; strides other than 1 and 2 are scalar throughout. */
#ifndef CYCONV_POOL_AVX2_H
#define CYCONV_POOL_AVX2_H

#include <immintrin.h>
#include "pool_generic.h"

#define CY_AVX2 __attribute__((target("avx2,fma")))

CY_AVX2 static void cy_pool_vmax_avx2(const float *x, ptrdiff_t step, int k, float *out,
                                      ptrdiff_t n)
{
    ptrdiff_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 a = _mm256_loadu_ps(x + i);
        for (int r = 1; r < k; r++)
            a = _mm256_max_ps(_mm256_loadu_ps(x + r * step + i), a);
        _mm256_storeu_ps(out + i, a);
    }
    for (; i < n; i++) {
        float a = x[i];
        for (int r = 1; r < k; r++)
            a = x[r * step + i] > a ? x[r * step + i] : a;
        out[i] = a;
    }
}

CY_AVX2 static void cy_pool_vsum_avx2(const float *x, ptrdiff_t step, int k, float *out,
                                      ptrdiff_t n)
{
    ptrdiff_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 a = _mm256_loadu_ps(x + i);
        for (int r = 1; r < k; r++)
            a = _mm256_add_ps(a, _mm256_loadu_ps(x + r * step + i));
        _mm256_storeu_ps(out + i, a);
    }
    for (; i < n; i++) {
        float a = x[i];
        for (int r = 1; r < k; r++)
            a += x[r * step + i];
        out[i] = a;
    }
}

/* t[2o + c] for o = 0..7 when p = t + c: shuffle keeps lanes 0,2 of each 128-bit half of both
 * loads ([p0 p2 q0 q2 | p4 p6 q4 q6]), the 64-bit permute puts the halves in order. */
CY_AVX2 static inline __m256 cy_p256_even(const float *p)
{
    __m256 s = _mm256_shuffle_ps(_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8),
                                 _MM_SHUFFLE(2, 0, 2, 0));
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(s),
                                                  _MM_SHUFFLE(3, 1, 2, 0)));
}

CY_AVX2 static inline __m256 cy_p256_load(const float *t, ptrdiff_t o, int s, int off)
{
    return s == 1 ? _mm256_loadu_ps(t + o + off) : cy_p256_even(t + 2 * o + off);
}

CY_AVX2 static void cy_pool_hmax_avx2(const float *t, float *y, ptrdiff_t n, int k, int s,
                                      int d)
{
    ptrdiff_t o = 0;
    if (s <= 2) {
        for (; o + 8 <= n; o += 8) {
            __m256 a = cy_p256_load(t, o, s, 0);
            for (int j = 1; j < k; j++)
                a = _mm256_max_ps(cy_p256_load(t, o, s, j * d), a);
            _mm256_storeu_ps(y + o, a);
        }
    }
    cy_pool_hmax_scalar(t, y, o, n, k, s, d);
}

CY_AVX2 static void cy_pool_havg_avx2(const float *t, float *y, ptrdiff_t n, int k, int s,
                                      int d, float rh, const float *rw)
{
    ptrdiff_t o = 0;
    if (s <= 2) {
        const __m256 vrh = _mm256_set1_ps(rh);
        for (; o + 8 <= n; o += 8) {
            __m256 a = cy_p256_load(t, o, s, 0);
            for (int j = 1; j < k; j++)
                a = _mm256_add_ps(a, cy_p256_load(t, o, s, j * d));
            _mm256_storeu_ps(y + o, _mm256_mul_ps(a, _mm256_mul_ps(vrh,
                                                                    _mm256_loadu_ps(rw + o))));
        }
    }
    cy_pool_havg_scalar(t, y, o, n, k, s, d, rh, rw);
}

CY_AVX2 static float cy_pool_gmax_avx2(const float *x, ptrdiff_t n)
{
    __m256 a = _mm256_set1_ps(-__builtin_inff()), b = a;
    ptrdiff_t i = 0;
    for (; i + 16 <= n; i += 16) {
        a = _mm256_max_ps(_mm256_loadu_ps(x + i), a);
        b = _mm256_max_ps(_mm256_loadu_ps(x + i + 8), b);
    }
    float lanes[8];
    _mm256_storeu_ps(lanes, _mm256_max_ps(a, b));
    float m = lanes[0];
    for (int l = 1; l < 8; l++)
        m = lanes[l] > m ? lanes[l] : m;
    for (; i < n; i++)
        m = x[i] > m ? x[i] : m;
    return m;
}

CY_AVX2 static double cy_pool_gsum_avx2(const float *x, ptrdiff_t n)
{
    __m256 a = _mm256_setzero_ps(), b = _mm256_setzero_ps();
    ptrdiff_t i = 0;
    for (; i + 16 <= n; i += 16) {
        a = _mm256_add_ps(a, _mm256_loadu_ps(x + i));
        b = _mm256_add_ps(b, _mm256_loadu_ps(x + i + 8));
    }
    float la[8], lb[8];
    _mm256_storeu_ps(la, a);
    _mm256_storeu_ps(lb, b);
    double s = 0.0;
    for (int l = 0; l < 8; l++)
        s += (double)la[l] + (double)lb[l];
    for (; i < n; i++)
        s += x[i];
    return s;
}

static const cy_pool_isa cy_pool_avx2 = {
    "avx2", cy_pool_vmax_avx2, cy_pool_vsum_avx2, cy_pool_hmax_avx2,
    cy_pool_havg_avx2, cy_pool_gmax_avx2, cy_pool_gsum_avx2, NULL,
};

#endif
