/* Pooling row operations with AVX2 (8 float lanes); see pool_isa.h for the contract.
 * Row tails run the scalar loops; strides other than 1 and 2 are scalar throughout. The plane
 * path (at the end) keeps whole output rows in registers for strides 1 and 2. */
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

/* 64-bit quarters 0, 2, 1, 3 of s: [a0 a2 b0 b2 | a4 a6 b4 b6] -> [a0 a2 a4 a6 b0 b2 b4 b6] */
CY_AVX2 static inline __m256 cy_p256_q0213(__m256 s)
{
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(s),
                                                  _MM_SHUFFLE(3, 1, 2, 0)));
}

/* Lanes 0, 2, .., 14 of the 16 floats a, b: shuffle keeps lanes 0,2 of each 128-bit half of
 * both ([a0 a2 b0 b2 | a4 a6 b4 b6]), the 64-bit permute puts the halves in order. */
CY_AVX2 static inline __m256 cy_p256_evens(__m256 a, __m256 b)
{
    return cy_p256_q0213(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0)));
}

/* t[2o + c] for o = 0..7 when p = t + c */
CY_AVX2 static inline __m256 cy_p256_even(const float *p)
{
    return cy_p256_evens(_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8));
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

/* ---- whole output rows in registers (small planes) ----------------------------------
 *
 * The AVX-512 table's plane path (pool_avx512.h) in 8 lanes: per block of 8 outputs the
 * vertical pass reduces the valid input rows (masked loads where the 8 columns cross [0, W),
 * which read as the identity) into 2 or 3 registers, and the horizontal taps are lane
 * permutes of those. The row path's buffer round trip, two calls per output row and scalar
 * tails were most of the time on small planes (raw pool2d, Zen 3, 1 thread, row path -> this,
 * medians of interleaved runs: 480x14x14 MaxPool 3x3 s1 pad 1 253 -> 113 us, 32x30x30 2x2 s2
 * 21 -> 12, 6x28x28 AveragePool 2x2 s2 6.0 -> 3.9, 16x10x10 5.2 -> 3.9, 96x55x55 3x3 s2
 * 91 -> 47, 64x112x112 3x3 s2 pad 1 261 -> 189). Same operations in the same order as the
 * row path, so the results are bitwise the same. Stride 1 or 2, taps spanning at most 8
 * columns ((kw-1)*dw <= 8); other pools take the row path. */

/* lanes l whose column c + l lies in [0, W), for -8 < c < W (int lanes: W < 2^30) */
CY_AVX2 static inline __m256i cy_p256_cols(ptrdiff_t c, ptrdiff_t W)
{
    const __m256i col = _mm256_add_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                         _mm256_set1_epi32((int)c));
    return _mm256_andnot_si256(_mm256_cmpgt_epi32(_mm256_setzero_si256(), col),
                               _mm256_cmpgt_epi32(_mm256_set1_epi32((int)W), col));
}

/* op over the nr rows r0 + r*step of columns [c, c+8), the identity outside [0, W). Masked
 * loads read 0 in the masked-off lanes: the identity of the sum; max blends -inf in once. */
CY_AVX2 __attribute__((always_inline)) static inline __m256
cy_p256_vred(const float *r0, ptrdiff_t step, int nr, ptrdiff_t c, ptrdiff_t W, __m256 ident,
             const int is_max)
{
    if (nr <= 0 || c >= W || c + 8 <= 0) return ident;
    __m256 a;
    if (c >= 0 && c + 8 <= W) {
        a = _mm256_loadu_ps(r0 + c);
        for (int r = 1; r < nr; r++) {
            const __m256 v = _mm256_loadu_ps(r0 + r * step + c);
            a = is_max ? _mm256_max_ps(v, a) : _mm256_add_ps(a, v);
        }
        return a;
    }
    const __m256i m = cy_p256_cols(c, W);
    a = _mm256_maskload_ps(r0 + c, m);
    for (int r = 1; r < nr; r++) {
        const __m256 v = _mm256_maskload_ps(r0 + r * step + c, m);
        a = is_max ? _mm256_max_ps(v, a) : _mm256_add_ps(a, v);
    }
    return is_max ? _mm256_blendv_ps(ident, a, _mm256_castsi256_ps(m)) : a;
}

#define CY_P256_ALIGNR(hi, lo, n)                                                          \
    _mm256_castsi256_ps(_mm256_alignr_epi8(_mm256_castps_si256(hi), _mm256_castps_si256(lo), \
                                           4 * (n)))

/* Columns o..o+7 (0 <= o <= 8) of the 16 columns a, b: m = columns 4..11, then a byte
 * alignment within each 128-bit half (no 2-source lane permute in AVX2). o is a constant in
 * the fixed-shape instances, where the switch folds away. */
CY_AVX2 static inline __m256 cy_p256_win(__m256 a, __m256 b, int o)
{
    const __m256 m = _mm256_permute2f128_ps(a, b, 0x21);
    switch (o) {
    case 0: return a;
    case 1: return CY_P256_ALIGNR(m, a, 1);
    case 2: return CY_P256_ALIGNR(m, a, 2);
    case 3: return CY_P256_ALIGNR(m, a, 3);
    case 4: return m;
    case 5: return CY_P256_ALIGNR(b, m, 1);
    case 6: return CY_P256_ALIGNR(b, m, 2);
    case 7: return CY_P256_ALIGNR(b, m, 3);
    default: return b;
    }
}

/* y[0:n] = a[0:n], n < 8: plain 4-, 2- and 1-float stores (a masked store, vmaskmovps to
 * memory, is microcoded on AMD Zen) */
CY_AVX2 static inline void cy_p256_store_n(float *y, __m256 a, ptrdiff_t n)
{
    __m128 h = _mm256_castps256_ps128(a);
    if (n & 4) {
        _mm_storeu_ps(y, h);
        h = _mm256_extractf128_ps(a, 1);
        y += 4;
    }
    if (n & 2) {
        _mm_storel_pi((__m64 *)y, h);
        h = _mm_movehl_ps(h, h);
        y += 2;
    }
    if (n & 1)
        _mm_store_ss(y, h);
}

/* One output row: 8-column blocks of the nr valid input rows from r0 (step apart) */
CY_AVX2 __attribute__((always_inline)) static inline void
cy_p256_row(const float *r0, ptrdiff_t step, const int nr, float *yr, ptrdiff_t W,
            ptrdiff_t OW, const int kw, const int sw, const int dw, int pw, __m256 vrh,
            const float *recip_w, const int is_max)
{
    const __m256 ident = _mm256_set1_ps(is_max ? -__builtin_inff() : 0.0f);
    const int span = (kw - 1) * dw;
    /* the block's vertical results v0 (columns c..c+7), v1, v2 (the next 8s): the next
     * block starts 8 * sw columns on, at the current v1 (s = 1) or v2 (s = 2) */
    __m256 v0 = cy_p256_vred(r0, step, nr, -pw, W, ident, is_max);
    for (ptrdiff_t ow0 = 0; ow0 < OW; ow0 += 8) {
        const ptrdiff_t c = ow0 * sw - pw;
        const __m256 v1 = (sw == 2 || span > 0)
            ? cy_p256_vred(r0, step, nr, c + 8, W, ident, is_max) : ident;
        const __m256 v2 = (sw == 2 && span > 0)
            ? cy_p256_vred(r0, step, nr, c + 16, W, ident, is_max) : ident;
        __m256 a = ident;
        if (sw == 1) {
            a = v0;
            for (int j = 1; j < kw; j++) {
                const __m256 tap = cy_p256_win(v0, v1, j * dw);
                a = is_max ? _mm256_max_ps(tap, a) : _mm256_add_ps(a, tap);
            }
        } else if (dw == 1 && kw <= 3) {
            /* taps 0 and 1 (the even and the odd columns) are combined before the 64-bit
             * permute that orders their lanes (one permute for both); tap 2 is the ordered
             * even columns shifted a lane with column c + 16 coming in */
            const __m256 e = _mm256_shuffle_ps(v0, v1, _MM_SHUFFLE(2, 0, 2, 0));
            a = e;
            if (kw >= 2) {
                const __m256 odd = _mm256_shuffle_ps(v0, v1, _MM_SHUFFLE(3, 1, 3, 1));
                a = is_max ? _mm256_max_ps(odd, a) : _mm256_add_ps(a, odd);
            }
            a = cy_p256_q0213(a);
            if (kw == 3) {
                const __m256 tap = cy_p256_win(cy_p256_q0213(e), v2, 1);
                a = is_max ? _mm256_max_ps(tap, a) : _mm256_add_ps(a, tap);
            }
        } else {
            for (int j = 0; j < kw; j++) {
                const __m256 tap = cy_p256_evens(cy_p256_win(v0, v1, j * dw),
                                                 cy_p256_win(v1, v2, j * dw));
                a = j == 0 ? tap : is_max ? _mm256_max_ps(tap, a) : _mm256_add_ps(a, tap);
            }
        }
        const ptrdiff_t n = OW - ow0;
        if (n >= 8) {
            if (!is_max)
                a = _mm256_mul_ps(a, _mm256_mul_ps(vrh, _mm256_loadu_ps(recip_w + ow0)));
            _mm256_storeu_ps(yr + ow0, a);
        } else {
            if (!is_max)
                a = _mm256_mul_ps(a, _mm256_mul_ps(vrh, _mm256_maskload_ps(recip_w + ow0,
                                                                          cy_p256_cols(0, n))));
            cy_p256_store_n(yr + ow0, a, n);
        }
        v0 = sw == 1 ? (span > 0 ? v1 : cy_p256_vred(r0, step, nr, c + 8, W, ident, is_max))
                     : (span > 0 ? v2 : cy_p256_vred(r0, step, nr, c + 16, W, ident, is_max));
    }
}

CY_AVX2 __attribute__((always_inline)) static inline void
cy_p256_plane(const float *x, float *y, ptrdiff_t H, ptrdiff_t W, ptrdiff_t OW, ptrdiff_t oh0,
              ptrdiff_t oh1, const int kh, const int kw, const int sh, const int sw,
              const int dh, const int dw, int ph, int pw, const float *recip_h,
              const float *recip_w, const int is_max)
{
    for (ptrdiff_t oh = oh0; oh < oh1; oh++) {
        const ptrdiff_t ih0 = oh * sh - ph;
        /* valid taps i_lo <= i < i_hi (no 64-bit division for the usual dh = 1) */
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
        const __m256 vrh = _mm256_set1_ps(is_max ? 1.0f : recip_h[oh]);
        /* interior rows read all kh rows: a constant count, so the row loop unrolls */
        if (nr == kh)
            cy_p256_row(r0, step, kh, y + oh * OW, W, OW, kw, sw, dw, pw, vrh, recip_w,
                        is_max);
        else
            cy_p256_row(r0, step, nr, y + oh * OW, W, OW, kw, sw, dw, pw, vrh, recip_w,
                        is_max);
    }
}

CY_AVX2 static int cy_pool_plane_avx2(const float *x, float *y, ptrdiff_t H, ptrdiff_t W,
                                      ptrdiff_t OW, ptrdiff_t oh0, ptrdiff_t oh1, int kh,
                                      int kw, int sh, int sw, int dh, int dw, int ph, int pw,
                                      int is_max, const float *recip_h, const float *recip_w)
{
    if ((sw != 1 && sw != 2) || (kw - 1) * dw > 8 || W >= (1 << 30)) return 0;
    /* the common pools with constant shapes (the tap loops unroll), the rest generic */
#define CY_P256_PLANE(KH, KW, SH, SW, DH, DW)                                            \
    (is_max ? cy_p256_plane(x, y, H, W, OW, oh0, oh1, KH, KW, SH, SW, DH, DW, ph, pw,  \
                            recip_h, recip_w, 1)                                       \
            : cy_p256_plane(x, y, H, W, OW, oh0, oh1, KH, KW, SH, SW, DH, DW, ph, pw,  \
                            recip_h, recip_w, 0))
    if (dh == 1 && dw == 1 && kh == 3 && kw == 3 && sh == 1 && sw == 1)
        CY_P256_PLANE(3, 3, 1, 1, 1, 1);
    else if (dh == 1 && dw == 1 && kh == 3 && kw == 3 && sh == 2 && sw == 2)
        CY_P256_PLANE(3, 3, 2, 2, 1, 1);
    else if (dh == 1 && dw == 1 && kh == 2 && kw == 2 && sh == 2 && sw == 2)
        CY_P256_PLANE(2, 2, 2, 2, 1, 1);
    else
        CY_P256_PLANE(kh, kw, sh, sw, dh, dw);
#undef CY_P256_PLANE
    return 1;
}

static const cy_pool_isa cy_pool_avx2 = {
    "avx2", cy_pool_vmax_avx2, cy_pool_vsum_avx2, cy_pool_hmax_avx2,
    cy_pool_havg_avx2, cy_pool_gmax_avx2, cy_pool_gsum_avx2, cy_pool_plane_avx2,
};

#endif
