/* Depthwise 3x3 conv, one plane, AVX-512 (stride 1 or 2, dilation 1).
 *
 *   y[oh, ow] = clamp(b + sum_{i,j<3} w[3i+j] * x[oh*S - pt + i, ow*S - pl + j], lo, hi)
 *
 * taps outside the H x W plane count as 0. 16 outputs of one row per zmm.
 *
 * Register tile: R output rows (R <= 8) x one 16-column block. Each of the (R-1)*S + 3
 * input rows the tile needs is loaded once and its three tap vectors (columns shifted by 0,
 * 1, 2) feed every output row that reads it, so the R accumulators are independent FMA
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

/* The tile at output rows oh0 .. oh0+R-1, columns ow0 .. ow0+15 (masked to OW). R and S
 * are constants at every call site (dw5_rows), so the loops unroll and acc[] stays in
 * registers. */
DW5_TARGET DW5_INLINE void dw5_tile(const float *x, int H, int W, const __m512 *w, __m512 b,
                                    float *y, int OW, int oh0, int ow0, int pt, int pl,
                                    int clamp, __m512 lo, __m512 hi, const int R, const int S)
{
    __m512 acc[8];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) acc[r] = b;
    const int c = ow0 * S - pl;                       /* column of lane 0, tap 0 */
    const __mmask16 m0 = dw5_cols(c, W);
    const __mmask16 m1 = dw5_cols(c + 16, W) & (S == 1 ? 0x3 : 0xffff);
    const __mmask16 m2 = dw5_cols(c + 32, W) & 0x1;
    const int ih0 = oh0 * S - pt;
#pragma GCC unroll 18
    for (int k = 0; k < (R - 1) * S + 3; k++) {
        const int ih = ih0 + k;
        if ((unsigned)ih >= (unsigned)H) continue;     /* a zero row: adds nothing */
        const float *p = x + (ptrdiff_t)ih * W + c;
        __m512 t0, t1, t2;
        if (S == 1) {
            const __m512 v0 = _mm512_maskz_loadu_ps(m0, p);
            const __m512 v1 = _mm512_maskz_loadu_ps(m1, p + 16);
            t0 = v0;
            t1 = dw5_shift(v1, v0, 1);
            t2 = dw5_shift(v1, v0, 2);
        } else {
            const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20,
                                                   22, 24, 26, 28, 30);
            const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23,
                                                  25, 27, 29, 31);
            const __m512 v0 = _mm512_maskz_loadu_ps(m0, p);
            const __m512 v1 = _mm512_maskz_loadu_ps(m1, p + 16);
            const __m512 v2 = _mm512_maskz_loadu_ps(m2, p + 32);
            t0 = _mm512_permutex2var_ps(v0, even, v1);
            t1 = _mm512_permutex2var_ps(v0, odd, v1);
            t2 = dw5_shift(v2, t0, 1);
        }
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            const int i = k - r * S;                   /* kernel row of input row k for r */
            if (i < 0 || i > 2) continue;
            acc[r] = _mm512_fmadd_ps(w[3 * i], t0, acc[r]);
            acc[r] = _mm512_fmadd_ps(w[3 * i + 1], t1, acc[r]);
            acc[r] = _mm512_fmadd_ps(w[3 * i + 2], t2, acc[r]);
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

/* All column blocks of output rows oh0 .. oh0+R-1, R and S constants */
DW5_TARGET DW5_INLINE void dw5_rows(const float *x, int H, int W, const __m512 *w, __m512 b,
                                    float *y, int OW, int oh0, int pt, int pl, int clamp,
                                    __m512 lo, __m512 hi, const int R, const int S)
{
    for (int ow0 = 0; ow0 < OW; ow0 += 16)
        dw5_tile(x, H, W, w, b, y, OW, oh0, ow0, pt, pl, clamp, lo, hi, R, S);
}

#define DW5_ROWS_CASE(R_)                                                              \
    case R_:                                                                           \
        if (S == 1) dw5_rows(x, H, W, w, b, y, OW, oh0, pt, pl, clamp, l, h, R_, 1);   \
        else dw5_rows(x, H, W, w, b, y, OW, oh0, pt, pl, clamp, l, h, R_, 2);          \
        break;

/* R: rows per tile, from cy_dw3x3_rows_per_tile; the last tile starts at OH - R (rows
 * computed twice are computed identically). */
DW5_TARGET static void cy_dw3x3_plane_avx512(const float *x, int H, int W, const float *wk,
                                            float bias, float *y, int OH, int OW, int S,
                                            int pt, int pl, int R, int clamp, float lo,
                                            float hi)
{
    __m512 w[9];
    for (int t = 0; t < 9; t++) w[t] = _mm512_set1_ps(wk[t]);
    const __m512 b = _mm512_set1_ps(bias), l = _mm512_set1_ps(lo), h = _mm512_set1_ps(hi);
    for (int t = 0; t < OH; t += R) {
        const int oh0 = t + R <= OH ? t : OH - R;
        switch (R) {
            DW5_ROWS_CASE(1) DW5_ROWS_CASE(2) DW5_ROWS_CASE(3) DW5_ROWS_CASE(4)
            DW5_ROWS_CASE(5) DW5_ROWS_CASE(6) DW5_ROWS_CASE(7) DW5_ROWS_CASE(8)
        }
    }
}
#undef DW5_ROWS_CASE
#endif
