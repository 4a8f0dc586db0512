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

/* ---- whole output rows in registers (small planes) ----------------------------------
 *
 * The row path above stores each vertical result into a row buffer and reads it back, two
 * calls per output row: on 14x14 and 7x7 planes (GoogLeNet's inception pools) that
 * overhead was most of the time (512x14x14, 3x3 s1: 110 us, ORT 37). Here, per block of 16
 * outputs, the vertical pass reduces the valid input rows with masked loads (columns
 * outside [0, W) read as the identity) into 2 or 3 registers, and the horizontal taps are
 * lane permutes of those registers. Same operations in the same order as the row path, so
 * the results are bitwise the same. Stride 1 or 2, taps spanning at most 16 columns
 * ((kw-1)*dw <= 16); other pools take the row path. */

/* lanes l of a 16-float load at column c whose column c + l lies in [0, W) */
static inline __mmask16 cy_p512_cols(ptrdiff_t c, ptrdiff_t W)
{
    const ptrdiff_t lo = c < 0 ? -c : 0, hi = W - c < 16 ? W - c : 16;
    if (hi <= lo) return 0;
    return (__mmask16)(((1u << hi) - 1u) & ~((1u << lo) - 1u));
}

/* op over the nr rows r0 + r*step of columns [c, c+16), the identity outside [0, W) */
CY_AVX512 __attribute__((always_inline)) static inline __m512
cy_p512_vred(const float *r0, ptrdiff_t step, int nr, ptrdiff_t c, ptrdiff_t W, __m512 ident,
             const int is_max)
{
    const __mmask16 m = cy_p512_cols(c, W);
    if (nr <= 0 || !m) return ident;
    __m512 a = _mm512_mask_loadu_ps(ident, m, r0 + c);
    for (int r = 1; r < nr; r++) {
        const __m512 v = _mm512_mask_loadu_ps(ident, m, r0 + r * step + c);
        a = is_max ? _mm512_max_ps(v, a) : _mm512_add_ps(a, v);
    }
    return a;
}

/* One output row: 16-column blocks of the nr valid input rows from r0 (step apart) */
CY_AVX512 __attribute__((always_inline)) static inline void
cy_p512_row(const float *r0, ptrdiff_t step, const int nr, float *yr, ptrdiff_t W,
            ptrdiff_t OW, const int kw, const int sw, const int dw, int pw, __m512 vrh,
            const float *recip_w, const int is_max)
{
    const __m512 ident = _mm512_set1_ps(is_max ? -__builtin_inff() : 0.0f);
    const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14,
                                           15);
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26,
                                           28, 30);
    const int span = (kw - 1) * dw;
    /* the block's vertical results v0 (columns c..c+15), v1, v2 (the next 16s): the next
     * block starts 16 * sw columns on, at the current v1 (s = 1) or v2 (s = 2) */
    __m512 v0 = cy_p512_vred(r0, step, nr, -pw, W, ident, is_max);
    for (ptrdiff_t ow0 = 0; ow0 < OW; ow0 += 16) {
        const ptrdiff_t c = ow0 * sw - pw;
        const __m512 v1 = (sw == 2 || span > 0)
            ? cy_p512_vred(r0, step, nr, c + 16, W, ident, is_max) : ident;
        const __m512 v2 = (sw == 2 && span > 0)
            ? cy_p512_vred(r0, step, nr, c + 32, W, ident, is_max) : ident;
        __m512 a = ident;
        for (int j = 0; j < kw; j++) {
            const int o = j * dw;
            const __m512i shift = _mm512_add_epi32(iota, _mm512_set1_epi32(o));
            __m512 tap;
            if (sw == 1) {
                tap = o ? _mm512_permutex2var_ps(v0, shift, v1) : v0;
            } else if (dw == 1 && kw <= 3) {
                /* columns c + j + 2l: the even, the odd, and the even shifted a lane with
                 * column c + 32 coming in (3 permutes where the general form takes 7) */
                const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
                const __m512 e = _mm512_permutex2var_ps(v0, even, v1);
                tap = j == 0 ? e
                    : j == 1 ? _mm512_permutex2var_ps(v0, odd, v1)
                             : _mm512_permutex2var_ps(e, _mm512_add_epi32(iota,
                                                       _mm512_set1_epi32(1)), v2);
            } else {
                const __m512 w0 = o ? _mm512_permutex2var_ps(v0, shift, v1) : v0;
                const __m512 w1 = o ? _mm512_permutex2var_ps(v1, shift, v2) : v1;
                tap = _mm512_permutex2var_ps(w0, even, w1);
            }
            a = j == 0 ? tap : is_max ? _mm512_max_ps(tap, a) : _mm512_add_ps(a, tap);
        }
        const __mmask16 mo = cy_p512_mask(OW - ow0);
        if (!is_max)
            a = _mm512_mul_ps(a, _mm512_mul_ps(vrh, _mm512_maskz_loadu_ps(mo, recip_w + ow0)));
        _mm512_mask_storeu_ps(yr + ow0, mo, a);
        v0 = sw == 1 ? (span > 0 ? v1 : cy_p512_vred(r0, step, nr, c + 16, W, ident, is_max))
                     : (span > 0 ? v2 : cy_p512_vred(r0, step, nr, c + 32, W, ident, is_max));
    }
}

CY_AVX512 __attribute__((always_inline)) static inline void
cy_p512_plane(const float *x, float *y, ptrdiff_t H, ptrdiff_t W, ptrdiff_t OW, ptrdiff_t oh0,
              ptrdiff_t oh1, const int kh, const int kw, const int sh, const int sw,
              const int dh, const int dw, int ph, int pw, const float *recip_h,
              const float *recip_w, const int is_max)
{
    for (ptrdiff_t oh = oh0; oh < oh1; oh++) {
        const ptrdiff_t ih0 = oh * sh - ph;
        /* valid taps i_lo <= i < i_hi (a 64-bit division per row was a tenth of the time:
         * none for the usual dh = 1) */
        ptrdiff_t i_lo, i_hi;
        if (dh == 1) {
            i_lo = ih0 >= 0 ? 0 : -ih0;
            i_hi = H - ih0;
        } else {
            i_lo = ih0 >= 0 ? 0 : (-ih0 + dh - 1) / dh;
            i_hi = ih0 > H - 1 ? 0 : (H - 1 - ih0) / dh + 1;
        }
        if (i_hi > kh) i_hi = kh;
        const int nr = i_hi > i_lo ? (int)(i_hi - i_lo) : 0;
        const float *r0 = x + (ih0 + i_lo * dh) * W;
        const ptrdiff_t step = (ptrdiff_t)dh * W;
        const __m512 vrh = _mm512_set1_ps(is_max ? 1.0f : recip_h[oh]);
        /* interior rows read all kh rows: a constant count, so the row loop unrolls */
        if (nr == kh)
            cy_p512_row(r0, step, kh, y + oh * OW, W, OW, kw, sw, dw, pw, vrh, recip_w,
                        is_max);
        else
            cy_p512_row(r0, step, nr, y + oh * OW, W, OW, kw, sw, dw, pw, vrh, recip_w,
                        is_max);
    }
}

CY_AVX512 static int cy_pool_plane_avx512(const float *x, float *y, ptrdiff_t H, ptrdiff_t W,
                                          ptrdiff_t OW, ptrdiff_t oh0, ptrdiff_t oh1, int kh,
                                          int kw, int sh, int sw, int dh, int dw, int ph,
                                          int pw, int is_max, const float *recip_h,
                                          const float *recip_w)
{
    if ((sw != 1 && sw != 2) || (kw - 1) * dw > 16) return 0;
    /* the common pools with constant shapes (the tap loops unroll), the rest generic */
#define CY_P512_PLANE(KH, KW, SH, SW, DH, DW)                                            \
    (is_max ? cy_p512_plane(x, y, H, W, OW, oh0, oh1, KH, KW, SH, SW, DH, DW, ph, pw,  \
                            recip_h, recip_w, 1)                                       \
            : cy_p512_plane(x, y, H, W, OW, oh0, oh1, KH, KW, SH, SW, DH, DW, ph, pw,  \
                            recip_h, recip_w, 0))
    if (dh == 1 && dw == 1 && kh == 3 && kw == 3 && sh == 1 && sw == 1)
        CY_P512_PLANE(3, 3, 1, 1, 1, 1);
    else if (dh == 1 && dw == 1 && kh == 3 && kw == 3 && sh == 2 && sw == 2)
        CY_P512_PLANE(3, 3, 2, 2, 1, 1);
    else if (dh == 1 && dw == 1 && kh == 2 && kw == 2 && sh == 2 && sw == 2)
        CY_P512_PLANE(2, 2, 2, 2, 1, 1);
    else
        CY_P512_PLANE(kh, kw, sh, sw, dh, dw);
#undef CY_P512_PLANE
    return 1;
}

static const cy_pool_isa cy_pool_avx512 = {
    "avx512f", cy_pool_vmax_avx512, cy_pool_vsum_avx512, cy_pool_hmax_avx512,
    cy_pool_havg_avx512, cy_pool_gmax_avx512, cy_pool_gsum_avx512, cy_pool_plane_avx512,
};

#endif
