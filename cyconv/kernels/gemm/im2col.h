/* A convolution's im2col matrix as a GEMM operand that is never stored: the GEMM packs each
 * KC x NC block of it straight from the image into its B panels (cy_operand.pack_b), so the
 * copy that used to build the matrix, and the second copy that packed it, become one.
 *
 *   B[k, p] = x[c, oh*sh - pt + kh*dh, ow*sw - pl + kw*dw]   (0 outside the image)
 *   k = (c*KH + kh)*KW + kw  (the weights' row order),  p = oh*OW + ow  (output pixel)
 *
 * x: one image's channels of one group, (C, H, W) contiguous. GEMM column j is output pixel
 * p = p0 + j, so a GEMM over a range of pixels numbers its columns from 0.
 */
#ifndef CYCONV_IM2COL_H
#define CYCONV_IM2COL_H

#include <stddef.h>
#include "gemm.h"

typedef struct cy_im2col {
    const float *x;
    int H, W, OW, p0;
    int KH, KW, sh, sw, dh, dw, pt, pl;
    /* 0: x is the image. phases = sw >= 2: x is its column-phase split (below), H x W the
     * padded height and the phase width, pt = pl = 0; tap (c, kh, kw) then reads plane
     * c*sw + (kw*dw) % sw from column ow + (kw*dw) / sw on, contiguously. */
    int phases;
} cy_im2col;

/* One image plane, zero-padded and split by row and column phase for a conv of strides
 * (sh, sw): dst[a][p][r][j] = x[r*sh + a - pt][j*sw + p - pl] (0 outside x), a < sh, p < sw,
 * r < Hq, j < Wq, where Hq >= ceil((H + pt + pb) / sh) and Wq >= ceil((W + pl + pr) / sw).
 * Every stride-sw tap of the padded image is then a contiguous run of one phase row, so
 * im2col packs strided convs (ResNet's 7x7 and 3x3 stride-2 layers) with plain copies
 * instead of strided gathers and edge tests (sh = 1: rows unsplit); with the rows split too,
 * tap (kh, kw) of output (oh, ow) is element (oh + kh/sh, ow + kw/sw) of phase
 * (kh % sh, kw % sw): a stride-1 read, which the row-offset GEMM takes in place.
 * A call writes the phase rows u = a*Hq + r in [u0, u1) (all of them: 0, sh*Hq), so that
 * several threads can share a plane: a 3-channel image is 3 planes for 2 threads. */
void cy_im2col_phase_split_rows(const float *x, int H, int W, int pt, int pl, int sh, int sw,
                                int Hq, int Wq, float *dst, int u0, int u1);

/* cy_pack_b_fn for ctx = const cy_im2col *. */
void cy_im2col_pack_b(const void *ctx, int k0, int kc, int j0, int nc, int NR, float *dst);

/* The input of a 1x1 conv after a per-channel affine map and ReLU, the BatchNormalization ->
 * Relu that pre-activation networks (DenseNet, ResNet v2) put before their convolutions:
 *
 *   B[k, p] = max(0, scale[k] * x[k, p0 + p] + shift[k])      x: (C, ld) rows of pixels
 *
 * computed while packing, so neither the normalised nor the rectified tensor is stored. */
typedef struct cy_preact {
    const float *x;
    const float *scale, *shift;
    ptrdiff_t ld;
    int p0;
} cy_preact;

/* cy_pack_b_fn for ctx = const cy_preact *. */
void cy_preact_pack_b(const void *ctx, int k0, int kc, int j0, int nc, int NR, float *dst);

#endif
