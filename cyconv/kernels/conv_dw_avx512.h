/* Depthwise 3x3 or 5x5 conv, one plane, AVX-512 (stride 1 or 2, dilation 1).
 *
 *   y[oh, ow] = clamp(b + sum_{i,j<K} w[Ki+j] * x[oh*S - pt + i, ow*S - pl + j], lo, hi)
 *
 * taps outside the H x W plane count as 0. 16 outputs of one row per zmm.
 *
 * Register tile: R output rows (R <= 8) x one 16-column block. Each of the (R-1)*S + K
 * input rows the tile needs is loaded once and its K tap vectors (columns shifted by 0 ..
 * K-1) feed every output row that reads it, so the R accumulators are independent FMA
 * chains: one row at a time left each block a chain of 9 dependent FMAs (4-cycle latency),
 * which ran at a quarter of the FMA throughput (measured 2 cycles per output on 56x56).
 *
 * The padding is done with load masks, not a zero-padded copy of the plane: a lane whose
 * column is outside [0, W) is masked off (a masked-off lane neither reads nor faults), and
 * input rows outside [0, H) are skipped. The copy had cost a fifth of the time.
 *
 * Stride 2: lanes need columns c, c+2, ..., c+30 (tap 0), c+1, ..., c+31 (tap 1) and
 * c+2, ..., c+32 (tap 2): the even and odd halves of 32 loaded floats (vpermt2ps), and the
 * even half shifted one lane with column c+32 coming in (valignd).
 */
#ifndef CYCONV_CONV_DW_AVX512_H
#define CYCONV_CONV_DW_AVX512_H
#include <immintrin.h>
#include <stddef.h>

#define DW5_TARGET __attribute__((target("avx512f,fma")))
#define DW5_INLINE static inline __attribute__((always_inline))

/* lanes l of a 16-float load at column c whose column c + l lies in [0, W) */
static inline __mmask16 dw5_cols(int c, int W)
{
    const int lo = c < 0 ? -c : 0, hi = W - c < 16 ? W - c : 16;
    if (hi <= lo) return 0;
    return (__mmask16)(((1u << hi) - 1u) & ~((1u << lo) - 1u));
}

DW5_TARGET DW5_INLINE __m512 dw5_shift(__m512 hi, __m512 lo, const int n)
{
    /* lanes n..15 of lo followed by lanes 0..n-1 of hi */
    return _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(hi),
                                                   _mm512_castps_si512(lo), n));
}

/* The tile at output rows oh0 .. oh0+R-1, columns ow0 .. ow0+15 (masked to OW), of a KxK
 * kernel. R, S and K are constants at every call site (dw5_rows), so the loops unroll and
 * acc[] stays in registers; the K*K weights are broadcast from memory by the FMAs. */
DW5_TARGET DW5_INLINE void dw5_tile(const float *x, int H, int W, const float *wk, __m512 b,
                                    float *y, int OW, int oh0, int ow0, int pt, int pl,
                                    int clamp, __m512 lo, __m512 hi, const int R, const int SH,
                                    const int S, const int K)
{
    __m512 acc[8];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) acc[r] = b;
    const int c = ow0 * S - pl;                       /* column of lane 0, tap 0 */
    /* S = 1: columns c .. c+15+K-1; S = 2: c .. c+30+K-1 (the taps' reach past 16 lanes) */
    const __mmask16 m0 = dw5_cols(c, W);
    const __mmask16 m1 = dw5_cols(c + 16, W) & (S == 1 ? (1u << (K - 1)) - 1u : 0xffff);
    const __mmask16 m2 = dw5_cols(c + 32, W) & ((1u << (K - 2)) - 1u);
    const int ih0 = oh0 * SH - pt;
#pragma GCC unroll 20
    for (int k = 0; k < (R - 1) * SH + K; k++) {
        const int ih = ih0 + k;
        if ((unsigned)ih >= (unsigned)H) continue;     /* a zero row: adds nothing */
        const float *p = x + (ptrdiff_t)ih * W + c;
        __m512 t[5];
        if (S == 1) {
            const __m512 v0 = _mm512_maskz_loadu_ps(m0, p);
            const __m512 v1 = _mm512_maskz_loadu_ps(m1, p + 16);
            t[0] = v0;
            t[1] = dw5_shift(v1, v0, 1);
            t[2] = dw5_shift(v1, v0, 2);
            if (K > 3) {
                t[3] = dw5_shift(v1, v0, 3);
                t[4] = dw5_shift(v1, v0, 4);
            }
        } else {
            /* tap j reads columns c + j + 2l: the even (j even) or odd (j odd) columns,
             * shifted j / 2 lanes with the next ones (from c + 32 on) coming in */
            const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20,
                                                   22, 24, 26, 28, 30);
            const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23,
                                                  25, 27, 29, 31);
            const __m512 v0 = _mm512_maskz_loadu_ps(m0, p);
            const __m512 v1 = _mm512_maskz_loadu_ps(m1, p + 16);
            const __m512 v2 = _mm512_maskz_loadu_ps(m2, p + 32);
            const __m512 e = _mm512_permutex2var_ps(v0, even, v1);
            const __m512 o = _mm512_permutex2var_ps(v0, odd, v1);
            const __m512 e2 = K > 3 ? _mm512_permutex2var_ps(v2, even, v2) : v2;
            t[0] = e;
            t[1] = o;
            t[2] = dw5_shift(e2, e, 1);
            if (K > 3) {
                const __m512 o2 = _mm512_permutex2var_ps(v2, odd, v2);
                t[3] = dw5_shift(o2, o, 1);
                t[4] = dw5_shift(e2, e, 2);
            }
        }
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            const int i = k - r * SH;                  /* kernel row of input row k for r */
            if (i < 0 || i >= K) continue;
#pragma GCC unroll 5
            for (int j = 0; j < K; j++)
                acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(wk[i * K + j]), t[j], acc[r]);
        }
    }
    const __mmask16 mo = dw5_cols(ow0, OW);
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        __m512 v = acc[r];
        if (clamp) v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
        _mm512_mask_storeu_ps(y + (ptrdiff_t)(oh0 + r) * OW + ow0, mo, v);
    }
}

/* All column blocks of output rows oh0 .. oh0+R-1, R, S and K constants */
DW5_TARGET DW5_INLINE void dw5_rows(const float *x, int H, int W, const float *wk, __m512 b,
                                    float *y, int OW, int oh0, int pt, int pl, int clamp,
                                    __m512 lo, __m512 hi, const int R, const int SH,
                                    const int S, const int K)
{
    for (int ow0 = 0; ow0 < OW; ow0 += 16)
        dw5_tile(x, H, W, wk, b, y, OW, oh0, ow0, pt, pl, clamp, lo, hi, R, SH, S, K);
}

#define DW5_ROWS(R_, SH_, SW_, K_) \
    dw5_rows(x, H, W, wk, b, y, OW, oh0, pt, pl, clamp, l, h, R_, SH_, SW_, K_)
#define DW5_ROWS_CASE(R_)                                                              \
    case R_:                                                                           \
        if (SH == 1) { if (K == 3) DW5_ROWS(R_, 1, 1, 3); else DW5_ROWS(R_, 1, 1, 5); } \
        else if (SW == 2) { if (K == 3) DW5_ROWS(R_, 2, 2, 3); else DW5_ROWS(R_, 2, 2, 5); } \
        else { if (K == 3) DW5_ROWS(R_, 2, 1, 3); else DW5_ROWS(R_, 2, 1, 5); }        \
        break;

/* K = 3 or 5; strides (SH, SW) = (1, 1), (2, 2) or (2, 1) (PaddleOCR halves only the
 * height). R: rows per tile, from cy_dw_rows_per_tile; the last tile starts at OH - R
 * (rows computed twice are computed identically). */
DW5_TARGET static void cy_dw_plane_avx512(const float *x, int H, int W, const float *wk,
                                         float bias, float *y, int OH, int OW, int SH, int SW,
                                         int K, int pt, int pl, int R, int clamp, float lo,
                                         float hi)
{
    const __m512 b = _mm512_set1_ps(bias), l = _mm512_set1_ps(lo), h = _mm512_set1_ps(hi);
    for (int t = 0; t < OH; t += R) {
        const int oh0 = t + R <= OH ? t : OH - R;
        switch (R) {
            DW5_ROWS_CASE(1) DW5_ROWS_CASE(2) DW5_ROWS_CASE(3) DW5_ROWS_CASE(4)
            DW5_ROWS_CASE(5) DW5_ROWS_CASE(6) DW5_ROWS_CASE(7) DW5_ROWS_CASE(8)
        }
    }
}
#undef DW5_ROWS
#undef DW5_ROWS_CASE
#endif
