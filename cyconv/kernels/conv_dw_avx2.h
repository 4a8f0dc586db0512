/* Depthwise 3x3 conv, one output plane, AVX2+FMA (stride 1 or 2, dilation 1): the AVX-512
 * kernel of conv_dw_avx512.h at 8 lanes. Stride 2 separates even and odd input columns of
 * 16 consecutive floats with shuffle_ps (within 128-bit lanes) and a cross-lane permute.
 */
#ifndef CYCONV_CONV_DW_AVX2_H
#define CYCONV_CONV_DW_AVX2_H
#include <immintrin.h>
#include <stddef.h>

#define DW2_TARGET __attribute__((target("avx2,fma")))
#define DW2_INLINE static inline __attribute__((always_inline))

/* p[0], p[2], ..., p[14] (odd = 0) or p[1], p[3], ..., p[15] (odd = 1) */
DW2_TARGET DW2_INLINE __m256 dw2_deinterleave(const float *p, int odd)
{
    const __m256 a = _mm256_loadu_ps(p), b = _mm256_loadu_ps(p + 8);
    /* per 128-bit lane: a0 a2 b0 b2 | a4 a6 b4 b6 (even) */
    __m256 t = odd ? _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1))
                   : _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(t), _MM_SHUFFLE(3, 1, 2, 0)));
}

DW2_TARGET DW2_INLINE __m256 dw2_block(const float *r0, const float *r1, const float *r2,
                                       ptrdiff_t o, int s, const __m256 *w, __m256 acc)
{
    const float *rows[3] = {r0, r1, r2};
    for (int i = 0; i < 3; i++) {
        const float *p = rows[i] + o * s;
        if (s == 1) {
            acc = _mm256_fmadd_ps(w[3 * i], _mm256_loadu_ps(p), acc);
            acc = _mm256_fmadd_ps(w[3 * i + 1], _mm256_loadu_ps(p + 1), acc);
            acc = _mm256_fmadd_ps(w[3 * i + 2], _mm256_loadu_ps(p + 2), acc);
        } else {
            acc = _mm256_fmadd_ps(w[3 * i], dw2_deinterleave(p, 0), acc);
            acc = _mm256_fmadd_ps(w[3 * i + 1], dw2_deinterleave(p, 1), acc);
            acc = _mm256_fmadd_ps(w[3 * i + 2], dw2_deinterleave(p + 2, 0), acc);
        }
    }
    return acc;
}

DW2_TARGET static void cy_dw3x3_plane_avx2(const float *xp, ptrdiff_t ldx, const float *wk,
                                          float bias, float *y, int OH, int OW, int s, int relu)
{
    __m256 w[9];
    for (int t = 0; t < 9; t++) w[t] = _mm256_set1_ps(wk[t]);
    const __m256 b = _mm256_set1_ps(bias), zero = _mm256_setzero_ps();
    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (int oh = 0; oh < OH; oh++) {
        const float *r0 = xp + (ptrdiff_t)oh * s * ldx, *r1 = r0 + ldx, *r2 = r1 + ldx;
        float *yr = y + (ptrdiff_t)oh * OW;
        int o = 0;
        for (; o + 16 <= OW; o += 16) {
            __m256 a0 = dw2_block(r0, r1, r2, o, s, w, b);
            __m256 a1 = dw2_block(r0, r1, r2, o + 8, s, w, b);
            if (relu) {
                a0 = _mm256_max_ps(a0, zero);
                a1 = _mm256_max_ps(a1, zero);
            }
            _mm256_storeu_ps(yr + o, a0);
            _mm256_storeu_ps(yr + o + 8, a1);
        }
        for (; o < OW; o += 8) {
            __m256 a0 = dw2_block(r0, r1, r2, o, s, w, b);
            if (relu) a0 = _mm256_max_ps(a0, zero);
            _mm256_maskstore_ps(yr + o, _mm256_cmpgt_epi32(_mm256_set1_epi32(OW - o), iota), a0);
        }
    }
}
#endif
