/* Winograd F(4x4, 3x3) convolution: 3x3, stride 1, dilation 1, one group, NCHW float32.
 *
 * Each 4x4 block of output pixels (a "tile") is computed from the 6x6 input patch under it
 * with 36 multiplications per (input, output) channel pair instead of 144 (Lavin & Gray,
 * "Fast Algorithms for Convolutional Neural Networks", 2015):
 *
 *   Y = A^T [ (G g G^T) .* (B^T d B) ] A        g: 3x3 filter, d: 6x6 patch, Y: 4x4 output
 *
 * Over channels this is 36 independent GEMMs, one per position xi of the 6x6 transform:
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

/* Floats of the transformed, packed weights for M output and C input channels. */
size_t cy_winograd_weights_size(int M, int C);

/* w: (M, C, 3, 3) contiguous -> dst: 36 packed A operands of cy_sgemm_packed_a_size(M, C)
 * floats each (for the micro-kernel in use: pack again if the ISA changes). Returns CY_OK or
 * CY_ENOMEM (a temporary of M x C floats). */
int cy_winograd_pack_weights(int M, int C, const float *w, float *dst);

/* y (N, M, OH, OW) = act(conv3x3(x (N, C, H, W), w) + bias + residual), with pads top pt and
 * left pl (bottom/right pads are implied by OH, OW: taps outside x read zero). ep's
 * bias_row/slope_row index output channels, its residual is (N, M, OH, OW) with ldr = OH*OW
 * (or NULL); bias_col must be NULL. Returns CY_OK or CY_ENOMEM. */
int cy_winograd_conv3x3(int N, int C, int H, int W, int M, int OH, int OW, int pt, int pl,
                        const float *x, const float *u, float *y, const cy_epilogue *ep,
                        int n_threads);

#ifdef __cplusplus
}
#endif
#endif
