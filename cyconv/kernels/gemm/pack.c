/* Packing: copy a block of A or B into the micro-kernel's panel layout so the inner loop
 * reads both operands with unit stride from cache.
 *
 *   A block [mc, kc] -> ceil(mc/MR) panels, panel p = [kc][MR]: dst[p*kc*MR + k*MR + r]
 *   B block [kc, nc] -> ceil(nc/NR) panels, panel q = [kc][NR]: dst[q*kc*NR + k*NR + c]
 *
 * Rows/columns past the matrix edge are zero so the kernel never needs a remainder loop.
 * A and B are read through general strides; the common unit-stride cases get a loop whose
 * inner dimension is contiguous in the source.
 */
#include <string.h>
#include "pack.h"

void cy_pack_a_block(int mc, int kc, const float *A, ptrdiff_t rsa, ptrdiff_t csa, int MR,
                     float *dst)
{
    for (int p = 0; p < mc; p += MR) {
        int rows = mc - p < MR ? mc - p : MR;
        const float *src = A + p * rsa;
        if (rsa == 1) {
            /* A^T stored row-major: a panel row k is contiguous in the source */
            for (int k = 0; k < kc; k++) {
                const float *s = src + k * csa;
                int r = 0;
                for (; r < rows; r++) dst[k * MR + r] = s[r];
                for (; r < MR; r++) dst[k * MR + r] = 0.0f;
            }
        } else {
            for (int r = 0; r < rows; r++) {
                const float *s = src + r * rsa;
                for (int k = 0; k < kc; k++) dst[k * MR + r] = s[k * csa];
            }
            for (int r = rows; r < MR; r++)
                for (int k = 0; k < kc; k++) dst[k * MR + r] = 0.0f;
        }
        dst += (size_t)kc * MR;
    }
}

void cy_pack_b_block(int kc, int nc, const float *B, ptrdiff_t rsb, ptrdiff_t csb, int NR,
                     float *dst)
{
    for (int q = 0; q < nc; q += NR) {
        int cols = nc - q < NR ? nc - q : NR;
        const float *src = B + q * csb;
        if (csb == 1 && cols == 32 && NR == 32) {
            /* whole AVX-512 panels (most of a 1x1 conv's packing): a fixed-size copy the
             * compiler inlines as vector moves; the libc call per 128-byte row, through its
             * size dispatch, had cost 8% of MobileNetV2 at batch 1 */
            for (int k = 0; k < kc; k++) memcpy(dst + k * 32, src + k * rsb, 32 * sizeof(float));
        } else if (csb == 1 && cols == 16 && NR == 16) {
            /* the same for whole AVX2 panels */
            for (int k = 0; k < kc; k++) memcpy(dst + k * 16, src + k * rsb, 16 * sizeof(float));
        } else if (csb == 1) {
            for (int k = 0; k < kc; k++) {
                memcpy(dst + k * NR, src + k * rsb, (size_t)cols * sizeof(float));
                for (int c = cols; c < NR; c++) dst[k * NR + c] = 0.0f;
            }
        } else {
            for (int k = 0; k < kc; k++) {
                const float *s = src + k * rsb;
                int c = 0;
                for (; c < cols; c++) dst[k * NR + c] = s[c * csb];
                for (; c < NR; c++) dst[k * NR + c] = 0.0f;
            }
        }
        dst += (size_t)kc * NR;
    }
}
