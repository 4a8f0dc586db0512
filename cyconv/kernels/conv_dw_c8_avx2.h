/* Depthwise 3x3 on small planes, 8 channels at a time in the vector lanes (AVX2+FMA).
 *
 * The plane kernel (conv_dw_avx2.h) puts output columns in the lanes: a 7-wide plane fills 7
 * of 8 lanes, every load and store of it is masked (a masked store is microcoded on AMD Zen,
 * about one per 12 cycles) and a plane's setup is paid for 49 outputs. MobileNetV2's 7x7 and
 * 14x14 layers (960 and 576 channels) ran ~400 and ~1200 cycles a plane that way, where ONNX
 * Runtime, whose NCHWc layout keeps 8 channels in the lanes, ran its kernels 1.5-1.7x faster
 * inside the model. Here 8 planes are transposed (8x8 blocks of flat positions) into a
 * zero-bordered buffer with the channels innermost, each output is 9 FMAs of full vectors
 * with the weights in registers, and the outputs are transposed back into the 8 planes.
 *
 * The sum order is the plane kernel's (bias, then taps row by row, left to right; a tap off
 * the input adds w * 0), so the results are the same floats.
 *
 * Buffers live on the stack: (padded input rows x columns) <= CY_DW_C8_MAX_IN and
 * OH x OW <= CY_DW_C8_MAX_OUT (cy_dw_c8_fits).
 */
#ifndef CYCONV_CONV_DW_C8_AVX2_H
#define CYCONV_CONV_DW_C8_AVX2_H
#include <immintrin.h>
#include <stddef.h>

#define CY_DW_C8_MAX_IN 324      /* 18 x 18: a 16x16 input with a border of 1 */
#define CY_DW_C8_MAX_OUT 256

#define DWC8_TARGET __attribute__((target("avx2,fma")))
#define DWC8_INLINE static inline __attribute__((always_inline))

/* The padded input a 3x3 stride-1 conv reads for OH x OW outputs: Hp x Wp */
static inline int cy_dw_c8_fits(int OH, int OW)
{
    const int Hp = OH + 2, Wp = OW + 2;
    return OH * OW <= CY_DW_C8_MAX_OUT && Hp * Wp <= CY_DW_C8_MAX_IN;
}

/* r[k] <- lane k of every r[i]: r[i] lane k becomes r[k] lane i */
DWC8_TARGET DWC8_INLINE void dwc8_transpose(__m256 r[8])
{
    __m256 t[8], s[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        s[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        s[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        s[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        s[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm256_permute2f128_ps(s[i], s[i + 4], 0x20);
        r[i + 4] = _mm256_permute2f128_ps(s[i], s[i + 4], 0x31);
    }
}

/* lanes 0 .. n-1 set */
DWC8_TARGET DWC8_INLINE __m256i dwc8_mask(int n)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n),
                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* nc (1..8) planes of x (H x W, plane stride xs) -> nc planes of y (OH x OW, stride ys):
 * y = clamp(bias + 3x3 conv of stride 1, padding pt / pl (bottom and right as the
 * output size implies)), clamped to [lo, hi] when clamp is set. w: nc x 9 weights, bias: nc
 * floats or NULL. Requires cy_dw_c8_fits(OH, OW). */
DWC8_TARGET static void cy_dw_c8_avx2(const float *x, ptrdiff_t xs, int nc, int H, int W,
                                      const float *w, const float *bias, float *y,
                                      ptrdiff_t ys, int OH, int OW, int pt, int pl,
                                      int clamp, float lo, float hi)
{
    const int Hp = OH + 2, Wp = OW + 2;
    float xb[CY_DW_C8_MAX_IN * 8] __attribute__((aligned(32)));
    float yb[(CY_DW_C8_MAX_OUT + 8) * 8] __attribute__((aligned(32)));
    const __m256 zero = _mm256_setzero_ps();
    for (int i = 0; i < Hp * Wp; i++) _mm256_store_ps(xb + 8 * i, zero);

    /* input position p = i * W + j (flat, 8 at a time) -> xb[(i + pt) * Wp + j + pl] when
     * that lies inside the buffer (rows or columns past it are never read) */
    const int P = H * W;
    int i = pt, j = pl;                     /* where position p goes */
    for (int p = 0; p < P; p += 8) {
        const int n = P - p < 8 ? P - p : 8;
        const __m256i m = dwc8_mask(n);
        __m256 r[8];
        for (int c = 0; c < 8; c++)
            r[c] = c < nc ? (n == 8 ? _mm256_loadu_ps(x + c * xs + p)
                                    : _mm256_maskload_ps(x + c * xs + p, m))
                          : zero;
        dwc8_transpose(r);
        for (int k = 0; k < n; k++) {
            if (i < Hp && j < Wp) _mm256_store_ps(xb + 8 * (i * Wp + j), r[k]);
            if (++j == W + pl) {
                j = pl;
                i++;
            }
        }
    }

    /* per channel lane: the 9 taps and the bias */
    __m256 wv[9];
    float wt[8];
    for (int t = 0; t < 9; t++) {
        for (int c = 0; c < 8; c++) wt[c] = c < nc ? w[c * 9 + t] : 0.0f;
        wv[t] = _mm256_loadu_ps(wt);
    }
    for (int c = 0; c < 8; c++) wt[c] = c < nc && bias ? bias[c] : 0.0f;
    const __m256 bv = _mm256_loadu_ps(wt);
    const __m256 lov = _mm256_set1_ps(lo), hiv = _mm256_set1_ps(hi);

    for (int oh = 0; oh < OH; oh++) {
        const float *row = xb + 8 * (oh * Wp);
        float *out = yb + 8 * (oh * OW);
        for (int ow = 0; ow < OW; ow++) {
            const float *q = row + 8 * ow;
            __m256 acc = bv;
#pragma GCC unroll 3
            for (int ki = 0; ki < 3; ki++)
#pragma GCC unroll 3
                for (int kj = 0; kj < 3; kj++)
                    acc = _mm256_fmadd_ps(wv[ki * 3 + kj],
                                          _mm256_load_ps(q + 8 * (ki * Wp + kj)), acc);
            if (clamp) acc = _mm256_min_ps(_mm256_max_ps(acc, lov), hiv);
            _mm256_store_ps(out + 8 * ow, acc);
        }
    }

    /* output positions q .. q+7 of every channel: one transpose, one store per plane */
    const int Q = OH * OW;
    for (int q = 0; q < Q; q += 8) {
        const int n = Q - q < 8 ? Q - q : 8;
        __m256 r[8];
        for (int k = 0; k < 8; k++) r[k] = _mm256_load_ps(yb + 8 * (q + k));
        dwc8_transpose(r);
        const __m256i m = dwc8_mask(n);
        for (int c = 0; c < nc; c++) {
            if (n == 8) _mm256_storeu_ps(y + c * ys + q, r[c]);
            else _mm256_maskstore_ps(y + c * ys + q, m, r[c]);
        }
    }
}
#endif
