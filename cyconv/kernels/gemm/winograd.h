/* Winograd F(m x m, 3x3) convolution, m = 4 or 2: 3x3, stride 1, dilation 1, one group,
 * NCHW float32.
 *
 * Each 4x4 block of output pixels (a "tile") is computed from the 6x6 input patch under it
 * with 36 multiplications per (input, output) channel pair instead of 144 (Lavin & Gray,
 * "Fast Algorithms for Convolutional Neural Networks", 2015):
 *
 *   Y = A^T [ (G g G^T) .* (B^T d B) ] A        g: 3x3 filter, d: 6x6 patch, Y: 4x4 output
 *
 * F(2x2, 3x3) is the same with 4x4 patches and 16 multiplications instead of 36: less saved
 * per output, but 4x the tiles, which is what keeps the GEMMs' 16-lane panels full on small
 * planes (a 7x7 image has 4 tiles of 4x4 but 16 of 2x2).
 *
 * Over channels this is 36 (16) independent GEMMs, one per position xi of the transform:
 *
 *   R_xi (M x T) = U_xi (M x C) @ V_xi (C x T),   U = G g G^T (weights, packed once at load),
 *                                                 V = B^T d B (input, per call)
 *
 * and the output transform Y = A^T R A turns each tile's 36 values back into 16 pixels, with
 * the bias, the residual z and the activation applied on the way out. The input transform
 * writes V straight into the GEMM's packed-B panel layout, so no im2col and no packing pass.
 *
 * Accuracy: the transforms' constants (1/4, 1/6, 1/24; 4, 5, 8) amplify rounding a little;
 * measured max |winograd - direct| stays within 1e-5 x max |y| on random and real weights
 * (tests/kernels/test_winograd.py), inside the 1e-4 contract of ARCHITECTURE.md section 3.
 */
#ifndef CYCONV_WINOGRAD_H
#define CYCONV_WINOGRAD_H

#include <stddef.h>
#include "gemm.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Floats of the transformed, packed weights for M output and C input channels, tile m. */
size_t cy_winograd_weights_size(int M, int C, int m);

/* w: (M, C, 3, 3) contiguous -> dst: (m+2)^2 packed A operands of
 * cy_sgemm_packed_a_size(M, C) floats each (for the micro-kernel in use: pack again if the
 * ISA changes). Returns CY_OK, CY_EINVAL (m not 2 or 4) or CY_ENOMEM (a temporary of M x C
 * floats). */
int cy_winograd_pack_weights(int M, int C, int m, const float *w, float *dst);

/* y (N, M, OH, OW) = act(conv3x3(x (N, C, H, W), w) + bias + residual), with pads top pt and
 * left pl (bottom/right pads are implied by OH, OW: taps outside x read zero). ep's
 * bias_row/slope_row index output channels, its residual is (N, M, OH, OW) with ldr = OH*OW
 * (or NULL); bias_col must be NULL. u: weights packed for the same m. Returns CY_OK,
 * CY_EINVAL or CY_ENOMEM. */
int cy_winograd_conv3x3(int N, int C, int H, int W, int M, int OH, int OW, int pt, int pl,
                        int m, const float *x, const float *u, float *y,
                        const cy_epilogue *ep, int n_threads);

#ifdef __cplusplus
}
#endif
#endif
