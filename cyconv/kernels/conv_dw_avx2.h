/* Depthwise 3x3 or 5x5 conv, one plane, AVX2+FMA (strides (1, 1), (2, 2) and (2, 1),
 * dilation 1): the register tile of conv_dw_avx512.h (R output rows x one column block,
 * each input row loaded once and fed to every output row that reads it, padding by load
 * masks) at 8 lanes.
 *
 * Without a cross-lane shift, column stride 1 loads the K tap vectors at columns c .. c+K-1;
 * column stride 2 loads 16 floats at c + 2q and c + 2q + 8 and takes their even (tap 2q) and
 * odd (tap 2q+1) floats with one shuffle_ps (within 128-bit lanes; the tile's columns then sit
 * in a fixed lane order, put right by one cross-lane permute per output row at the store).
 * 3x3 weights are held as 9 broadcast vectors (the compiler keeps what fits in registers);
 * 5x5 ones are broadcast from memory by the FMAs. Broadcasting 3x3 weights from memory too
 * made MobileNetV2's depthwise layers 10-40% slower. vmaskmovps neither reads nor faults on
 * a masked-off lane; tiles inside the row use plain loads, and every tile whose 8 outputs
 * exist plain stores, since masked moves are slow on AMD Zen (stores microcoded, about one
 * per 12 cycles).
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

/* 8 floats at p: a plain load inside the row (IN), else masked by m (columns in [0, W)) */
DW2_TARGET DW2_INLINE __m256 dw2_load(const int IN, const float *p, __m256i m)
{
    return IN ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, m);
}

/* even (odd = 0) or odd (odd = 1) floats of a[0..7] b[0..7], in the lane order of one
 * in-lane shuffle: a0 a2 b0 b2 | a4 a6 b4 b6 (even), i.e. output columns 0 1 4 5 | 2 3 6 7 of
 * the tile. Every tap vector of a stride-2 tile comes in that order, so the accumulators do
 * too and dw2_natural puts them back once per output row at the store, instead of a
 * cross-lane permute per tap and input row (which made half the shuffle uops of MobileNetV2's
 * stride-2 layers). Each lane's sum is unchanged: bitwise the same results. */
DW2_TARGET DW2_INLINE __m256 dw2_deinterleave(__m256 a, __m256 b, const int odd)
{
    return odd ? _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1))
               : _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
}

/* dw2_deinterleave's lane order (columns 0 1 4 5 2 3 6 7) back to columns 0 .. 7 */
DW2_TARGET DW2_INLINE __m256 dw2_natural(__m256 v)
{
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(v), _MM_SHUFFLE(3, 1, 2, 0)));
}

/* One R x 8 output tile at rows oh0.., columns ow0.. of a KxK kernel, row stride SH, column
 * stride S. IN: every load of the tile lies inside the input row (no masks); OUT: all 8
 * output columns exist. R, SH, S, K, IN and OUT are constants at every call site. */
DW2_TARGET DW2_INLINE void dw2_tile(const float *x, int H, int W, const float *wk,
                                    const __m256 *w3, __m256 b,
                                    float *y, int OW, int oh0, int ow0, int pt, int pl,
                                    int clamp, __m256 lo, __m256 hi, const int R, const int SH,
                                    const int S, const int K, const int IN, const int OUT)
{
    __m256 acc[8];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) acc[r] = b;
    const int c = ow0 * S - pl;                       /* column of lane 0, tap 0 */
    const int ih0 = oh0 * SH - pt;
    /* the load masks, once per tile: load n reads columns c + off(n) .. + 7, off(n) = n
     * (S = 1) or 2(n/2) + 8(n%2) (S = 2); unused (folded away) when IN */
    const int loads = S == 1 ? K : 2 * ((K + 1) / 2);
    __m256i m[6];
#pragma GCC unroll 6
    for (int n = 0; n < loads; n++)
        m[n] = IN ? _mm256_setzero_si256()
                  : dw2_cols(c + (S == 1 ? n : 2 * (n / 2) + 8 * (n % 2)), W);
#pragma GCC unroll 20
    for (int k = 0; k < (R - 1) * SH + K; k++) {
        const int ih = ih0 + k;
        if ((unsigned)ih >= (unsigned)H) continue;     /* a zero row: adds nothing */
        const float *p = x + (ptrdiff_t)ih * W + c;
        __m256 t[5];
        if (S == 1) {
#pragma GCC unroll 5
            for (int j = 0; j < K; j++) t[j] = dw2_load(IN, p + j, m[j]);
        } else {
#pragma GCC unroll 3
            for (int q = 0; 2 * q < K; q++) {
                const __m256 a = dw2_load(IN, p + 2 * q, m[2 * q]);
                const __m256 a8 = dw2_load(IN, p + 2 * q + 8, m[2 * q + 1]);
                t[2 * q] = dw2_deinterleave(a, a8, 0);
                if (2 * q + 1 < K) t[2 * q + 1] = dw2_deinterleave(a, a8, 1);
            }
        }
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            const int i = k - r * SH;                  /* kernel row of input row k for r */
            if (i < 0 || i >= K) continue;
#pragma GCC unroll 5
            for (int j = 0; j < K; j++)
                acc[r] = _mm256_fmadd_ps(K == 3 ? w3[i * K + j]
                                                : _mm256_broadcast_ss(wk + i * K + j),
                                         t[j], acc[r]);
        }
    }
    const __m256i mo = dw2_cols(ow0, OW);
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        __m256 v = S == 2 ? dw2_natural(acc[r]) : acc[r];
        if (clamp) v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
        if (OUT) _mm256_storeu_ps(y + (ptrdiff_t)(oh0 + r) * OW + ow0, v);
        else _mm256_maskstore_ps(y + (ptrdiff_t)(oh0 + r) * OW + ow0, mo, v);
    }
}

/* All column blocks of output rows oh0 .. oh0+R-1 */
DW2_TARGET DW2_INLINE void dw2_rows(const float *x, int H, int W, const float *wk,
                                    const __m256 *w3, __m256 b,
                                    float *y, int OW, int oh0, int pt, int pl, int clamp,
                                    __m256 lo, __m256 hi, const int R, const int SH,
                                    const int S, const int K)
{
    /* input columns a tile's loads span: c .. c+K+6 (S = 1) or c .. c+K+14 (S = 2) */
    const int span = S == 1 ? K + 7 : K + 15;
    for (int ow0 = 0; ow0 < OW; ow0 += 8) {
        const int c = ow0 * S - pl;
        /* OUT: all 8 outputs exist; IN: besides, every load lies inside the row */
        const int out = ow0 + 8 <= OW, in = out && c >= 0 && c + span <= W;
        if (in)
            dw2_tile(x, H, W, wk, w3, b, y, OW, oh0, ow0, pt, pl, clamp, lo, hi, R, SH, S, K,
                     1, 1);
        else if (out)
            /* a tile at the padding (the first and last tiles of a 56-wide row): masked
             * loads, plain stores. Storing them through masks too (microcoded on Zen) made
             * MobileNetV2's 24 -> 144 -> 24 block at 56x56, fused, 5-9% slower (in process,
             * 1 and 2 threads). */
            dw2_tile(x, H, W, wk, w3, b, y, OW, oh0, ow0, pt, pl, clamp, lo, hi, R, SH, S, K,
                     0, 1);
        else
            dw2_tile(x, H, W, wk, w3, b, y, OW, oh0, ow0, pt, pl, clamp, lo, hi, R, SH, S, K,
                     0, 0);
    }
}

#define DW2_ROWS(R_, SH_, SW_, K_) \
    dw2_rows(x, H, W, wk, w3, b, y, OW, oh0, pt, pl, clamp, l, h, R_, SH_, SW_, K_)
#define DW2_ROWS_CASE(R_)                                                              \
    case R_:                                                                           \
        if (SH == 1) { if (K == 3) DW2_ROWS(R_, 1, 1, 3); else DW2_ROWS(R_, 1, 1, 5); } \
        else if (SW == 2) { if (K == 3) DW2_ROWS(R_, 2, 2, 3); else DW2_ROWS(R_, 2, 2, 5); } \
        else { if (K == 3) DW2_ROWS(R_, 2, 1, 3); else DW2_ROWS(R_, 2, 1, 5); }        \
        break;

/* K = 3 or 5; strides (SH, SW) = (1, 1), (2, 2) or (2, 1). R: rows per tile, from
 * cy_dw_rows_per_tile; the last tile starts at OH - R (rows computed twice are computed
 * identically). */
DW2_TARGET static void cy_dw_plane_avx2(const float *x, int H, int W, const float *wk,
                                        float bias, float *y, int OH, int OW, int SH, int SW,
                                        int K, int pt, int pl, int R, int clamp, float lo,
                                        float hi)
{
    const __m256 b = _mm256_set1_ps(bias), l = _mm256_set1_ps(lo), h = _mm256_set1_ps(hi);
    __m256 w3[9];
    if (K == 3)
        for (int t = 0; t < 9; t++) w3[t] = _mm256_set1_ps(wk[t]);
    for (int t = 0; t < OH; t += R) {
        const int oh0 = t + R <= OH ? t : OH - R;
        switch (R) {
            DW2_ROWS_CASE(1) DW2_ROWS_CASE(2) DW2_ROWS_CASE(3) DW2_ROWS_CASE(4)
            DW2_ROWS_CASE(5) DW2_ROWS_CASE(6) DW2_ROWS_CASE(7) DW2_ROWS_CASE(8)
        }
    }
}
#undef DW2_ROWS
#undef DW2_ROWS_CASE
#endif
