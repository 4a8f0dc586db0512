/* Depthwise 3x3 conv, one plane, AVX2+FMA (stride 1 or 2, dilation 1): the register tile of
 * conv_dw_avx512.h (R output rows x one column block, input rows loaded once, padding by
 * load masks) at 8 lanes. Without a cross-lane shift, stride 1 loads the three tap vectors
 * at columns c, c+1, c+2; stride 2 separates even and odd columns of 16 loaded floats with
 * shuffle_ps (within 128-bit lanes) and a cross-lane permute. vmaskmovps neither reads nor
 * faults on a masked-off lane.
 */
#ifndef CYCONV_CONV_DW_AVX2_H
#define CYCONV_CONV_DW_AVX2_H
#include <immintrin.h>
#include <stddef.h>

#define DW2_TARGET __attribute__((target("avx2,fma")))
#define DW2_INLINE static inline __attribute__((always_inline))

/* lanes l of an 8-float load at column c whose column c + l lies in [0, W): all bits set */
DW2_TARGET DW2_INLINE __m256i dw2_cols(int c, int W)
{
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_and_si256(_mm256_cmpgt_epi32(lane, _mm256_set1_epi32(-c - 1)),
                            _mm256_cmpgt_epi32(_mm256_set1_epi32(W - c), lane));
}

/* even (odd = 0) or odd (odd = 1) floats of a[0..7] b[0..7], in order */
DW2_TARGET DW2_INLINE __m256 dw2_deinterleave(__m256 a, __m256 b, const int odd)
{
    /* per 128-bit lane: a0 a2 b0 b2 | a4 a6 b4 b6 (even) */
    const __m256 t = odd ? _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1))
                         : _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(t), _MM_SHUFFLE(3, 1, 2, 0)));
}

/* 8 floats at p: a plain load inside the row (IN), else masked to the columns in [0, W) */
DW2_TARGET DW2_INLINE __m256 dw2_load(const int IN, const float *p, __m256i m)
{
    return IN ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, m);
}

/* One R x 8 output tile. IN: every tap load of the tile lies inside the input row, so none
 * needs a mask; OUT: all 8 output columns exist. Plain moves matter on AMD Zen, where masked
 * stores are microcoded (about one per 12 cycles) and masked loads cost extra uops. */
DW2_TARGET DW2_INLINE void dw2_tile(const float *x, int H, int W, const __m256 *w, __m256 b,
                                    float *y, int OW, int oh0, int ow0, int pt, int pl,
                                    int clamp, __m256 lo, __m256 hi, const int R, const int S,
                                    const int IN, const int OUT)
{
    __m256 acc[8];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) acc[r] = b;
    const int c = ow0 * S - pl;
    /* S = 1: taps at columns c, c+1, c+2. S = 2: floats c..c+15 and c+2..c+17. */
    const __m256i m0 = dw2_cols(c, W);
    const __m256i m1 = dw2_cols(S == 1 ? c + 1 : c + 8, W);
    const __m256i m2 = dw2_cols(c + 2, W);
    const __m256i m3 = dw2_cols(c + 10, W);
    const int ih0 = oh0 * S - pt;
#pragma GCC unroll 18
    for (int k = 0; k < (R - 1) * S + 3; k++) {
        const int ih = ih0 + k;
        if ((unsigned)ih >= (unsigned)H) continue;
        const float *p = x + (ptrdiff_t)ih * W + c;
        __m256 t0, t1, t2;
        if (S == 1) {
            t0 = dw2_load(IN, p, m0);
            t1 = dw2_load(IN, p + 1, m1);
            t2 = dw2_load(IN, p + 2, m2);
        } else {
            const __m256 a = dw2_load(IN, p, m0), bb = dw2_load(IN, p + 8, m1);
            const __m256 a2 = dw2_load(IN, p + 2, m2);
            const __m256 b2 = dw2_load(IN, p + 10, m3);
            t0 = dw2_deinterleave(a, bb, 0);
            t1 = dw2_deinterleave(a, bb, 1);
            t2 = dw2_deinterleave(a2, b2, 0);
        }
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            const int i = k - r * S;
            if (i < 0 || i > 2) continue;
            acc[r] = _mm256_fmadd_ps(w[3 * i], t0, acc[r]);
            acc[r] = _mm256_fmadd_ps(w[3 * i + 1], t1, acc[r]);
            acc[r] = _mm256_fmadd_ps(w[3 * i + 2], t2, acc[r]);
        }
    }
    const __m256i mo = dw2_cols(ow0, OW);
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        __m256 v = acc[r];
        if (clamp) v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
        if (OUT) _mm256_storeu_ps(y + (ptrdiff_t)(oh0 + r) * OW + ow0, v);
        else _mm256_maskstore_ps(y + (ptrdiff_t)(oh0 + r) * OW + ow0, mo, v);
    }
}

DW2_TARGET DW2_INLINE void dw2_rows(const float *x, int H, int W, const __m256 *w, __m256 b,
                                    float *y, int OW, int oh0, int pt, int pl, int clamp,
                                    __m256 lo, __m256 hi, const int R, const int S)
{
    /* input columns a tile's loads span: c .. c+9 (S = 1) or c .. c+17 (S = 2) */
    const int span = S == 1 ? 10 : 18;
    for (int ow0 = 0; ow0 < OW; ow0 += 8) {
        const int c = ow0 * S - pl;
        if (c >= 0 && c + span <= W && ow0 + 8 <= OW)
            dw2_tile(x, H, W, w, b, y, OW, oh0, ow0, pt, pl, clamp, lo, hi, R, S, 1, 1);
        else
            dw2_tile(x, H, W, w, b, y, OW, oh0, ow0, pt, pl, clamp, lo, hi, R, S, 0, 0);
    }
}

#define DW2_ROWS_CASE(R_)                                                              \
    case R_:                                                                           \
        if (S == 1) dw2_rows(x, H, W, w, b, y, OW, oh0, pt, pl, clamp, l, h, R_, 1);   \
        else dw2_rows(x, H, W, w, b, y, OW, oh0, pt, pl, clamp, l, h, R_, 2);          \
        break;

DW2_TARGET static void cy_dw3x3_plane_avx2(const float *x, int H, int W, const float *wk,
                                          float bias, float *y, int OH, int OW, int S, int pt,
                                          int pl, int R, int clamp, float lo, float hi)
{
    __m256 w[9];
    for (int t = 0; t < 9; t++) w[t] = _mm256_set1_ps(wk[t]);
    const __m256 b = _mm256_set1_ps(bias), l = _mm256_set1_ps(lo), h = _mm256_set1_ps(hi);
    for (int t = 0; t < OH; t += R) {
        const int oh0 = t + R <= OH ? t : OH - R;
        switch (R) {
            DW2_ROWS_CASE(1) DW2_ROWS_CASE(2) DW2_ROWS_CASE(3) DW2_ROWS_CASE(4)
            DW2_ROWS_CASE(5) DW2_ROWS_CASE(6) DW2_ROWS_CASE(7) DW2_ROWS_CASE(8)
        }
    }
}
#undef DW2_ROWS_CASE
#endif
