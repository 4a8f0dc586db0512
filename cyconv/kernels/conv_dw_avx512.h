/* Depthwise 3x3 conv, one output plane, AVX-512 (stride 1 or 2, dilation 1).
 *
 *   y[oh, ow] = b + sum_{i,j<3} w[3i+j] * xp[oh*s + i, ow*s + j]
 *
 * xp: the input plane already zero-padded (conv_dw.h builds it), row stride ldx, with at
 * least 32 readable floats past the last column any output needs, so every vector load is
 * in bounds and the loop has no edge cases (stride 1 reads up to 31 floats past a block).
 * 16 outputs per zmm; two blocks (32 outputs) in
 * flight per iteration so the nine dependent FMAs of one block overlap with the other's.
 * Stride 2: the even and odd input columns of 32 consecutive floats are pulled apart with
 * vpermt2ps (taps j = 0, 1) and from the pair loaded 2 floats further on (tap j = 2).
 */
#ifndef CYCONV_CONV_DW_AVX512_H
#define CYCONV_CONV_DW_AVX512_H
#include <immintrin.h>
#include <stddef.h>

#define DW5_TARGET __attribute__((target("avx512f,fma")))
#define DW5_INLINE static inline __attribute__((always_inline))

DW5_TARGET DW5_INLINE __m512 dw5_even(const float *p)
{
    const __m512i idx = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26,
                                          28, 30);
    return _mm512_permutex2var_ps(_mm512_loadu_ps(p), idx, _mm512_loadu_ps(p + 16));
}

DW5_TARGET DW5_INLINE __m512 dw5_odd(const float *p)
{
    const __m512i idx = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27,
                                          29, 31);
    return _mm512_permutex2var_ps(_mm512_loadu_ps(p), idx, _mm512_loadu_ps(p + 16));
}

/* one block of 16 outputs starting at column o of output row y, input rows r0..r2 */
DW5_TARGET DW5_INLINE __m512 dw5_block(const float *r0, const float *r1, const float *r2,
                                       ptrdiff_t o, int s, const __m512 *w, __m512 acc)
{
    const float *rows[3] = {r0, r1, r2};
    for (int i = 0; i < 3; i++) {
        const float *p = rows[i] + o * s;
        if (s == 1) {
            /* taps j = 1, 2 shifted out of two loads (valignd) rather than two more
             * unaligned loads, most of which would split a cache line */
            const __m512 lo = _mm512_loadu_ps(p), hi = _mm512_loadu_ps(p + 16);
            const __m512 x1 = _mm512_castsi512_ps(_mm512_alignr_epi32(
                _mm512_castps_si512(hi), _mm512_castps_si512(lo), 1));
            const __m512 x2 = _mm512_castsi512_ps(_mm512_alignr_epi32(
                _mm512_castps_si512(hi), _mm512_castps_si512(lo), 2));
            acc = _mm512_fmadd_ps(w[3 * i], lo, acc);
            acc = _mm512_fmadd_ps(w[3 * i + 1], x1, acc);
            acc = _mm512_fmadd_ps(w[3 * i + 2], x2, acc);
        } else {
            acc = _mm512_fmadd_ps(w[3 * i], dw5_even(p), acc);
            acc = _mm512_fmadd_ps(w[3 * i + 1], dw5_odd(p), acc);
            acc = _mm512_fmadd_ps(w[3 * i + 2], dw5_even(p + 2), acc);
        }
    }
    return acc;
}

DW5_TARGET static void cy_dw3x3_plane_avx512(const float *xp, ptrdiff_t ldx, const float *wk,
                                            float bias, float *y, int OH, int OW, int s,
                                            int relu)
{
    __m512 w[9];
    for (int t = 0; t < 9; t++) w[t] = _mm512_set1_ps(wk[t]);
    const __m512 b = _mm512_set1_ps(bias), zero = _mm512_setzero_ps();
    for (int oh = 0; oh < OH; oh++) {
        const float *r0 = xp + (ptrdiff_t)oh * s * ldx, *r1 = r0 + ldx, *r2 = r1 + ldx;
        float *yr = y + (ptrdiff_t)oh * OW;
        int o = 0;
        for (; o + 32 <= OW; o += 32) {
            __m512 a0 = dw5_block(r0, r1, r2, o, s, w, b);
            __m512 a1 = dw5_block(r0, r1, r2, o + 16, s, w, b);
            if (relu) {
                a0 = _mm512_max_ps(a0, zero);
                a1 = _mm512_max_ps(a1, zero);
            }
            _mm512_storeu_ps(yr + o, a0);
            _mm512_storeu_ps(yr + o + 16, a1);
        }
        for (; o < OW; o += 16) {
            const int n = OW - o < 16 ? OW - o : 16;
            __m512 a0 = dw5_block(r0, r1, r2, o, s, w, b);
            if (relu) a0 = _mm512_max_ps(a0, zero);
            _mm512_mask_storeu_ps(yr + o, (__mmask16)((1u << n) - 1u), a0);
        }
    }
}
#endif
