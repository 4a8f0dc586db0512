/* Pooling row operations, one table per ISA (pool_generic.h, pool_avx2.h, pool_avx512.h).
 *
 * A 2-D max / average pool is separable: the window of output (oh, ow) is rows
 * ih = oh*sh - ph + i*dh (i < kh) times columns iw = ow*sw - pw + j*dw (j < kw), so
 *
 *   t[iw]     = op_i x[ih_i, iw]              vertical pass: k whole input rows, contiguous
 *   y[oh, ow] = op_j t[ow*sw - pw + j*dw]      horizontal pass over one row
 *
 * (op = max, or sum followed by the division by the window's tap count). The horizontal pass
 * reads ``t`` through a row buffer padded with the pool's identity (-inf or 0) on both sides,
 * so neither pass tests bounds. Stride 1 is plain unaligned vector loads; stride 2 loads two
 * vectors and keeps the even lanes (one permute); other strides are scalar.
 *
 * Every function computes each output element with the same operations in the same order
 * whatever the caller's partition of the work, so results do not depend on the thread count.
 * NaN: max keeps the running value when a tap is NaN (x86 max semantics); only a NaN that
 * starts a window's vertical column survives. ONNX does not specify NaN in MaxPool.
 */
#ifndef CYCONV_POOL_ISA_H
#define CYCONV_POOL_ISA_H

#include <stddef.h>

/* Floats past the last tap a horizontal pass may load (whole vectors of stride 2: 2 x 16). */
#define CY_POOL_SLACK 64

typedef struct cy_pool_isa {
    const char *name;
    /* out[0:n] = max / sum of the k rows x + r*step (r < k), summed in row order. */
    void (*vmax)(const float *x, ptrdiff_t step, int k, float *out, ptrdiff_t n);
    void (*vsum)(const float *x, ptrdiff_t step, int k, float *out, ptrdiff_t n);
    /* y[o] = max_j t[o*s + j*d] (j < k), o < n; t readable up to CY_POOL_SLACK past the last tap. */
    void (*hmax)(const float *t, float *y, ptrdiff_t n, int k, int s, int d);
    /* y[o] = (sum_j t[o*s + j*d]) * (rh * rw[o]): rh, rw = reciprocals of the window's tap
     * counts along h and w (a multiply: a division per output was half the cost at 3x3 s1). */
    void (*havg)(const float *t, float *y, ptrdiff_t n, int k, int s, int d, float rh,
                 const float *rw);
    /* max(x[0:n]) and sum(x[0:n]) (float lanes, combined in double) for the global pools. */
    float (*gmax)(const float *x, ptrdiff_t n);
    double (*gsum)(const float *x, ptrdiff_t n);
    /* Optional (NULL: none): output rows [oh0, oh1) of one plane without the row buffer,
     * bitwise equal to the row path; returns 0 for a pool it does not cover. */
    int (*plane)(const float *x, float *y, ptrdiff_t H, ptrdiff_t W, ptrdiff_t OW,
                 ptrdiff_t oh0, ptrdiff_t oh1, int kh, int kw, int sh, int sw, int dh, int dw,
                 int ph, int pw, int is_max, const float *recip_h, const float *recip_w);
} cy_pool_isa;

#endif
