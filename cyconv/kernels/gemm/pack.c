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

/* Whole panels of NR = W floats, row by row: row k of B (contiguous) goes to row k of every
 * panel. Called with a constant W for the ISAs' panel widths, so each copy is a few vector
 * moves. */
static inline __attribute__((always_inline)) void
pack_b_rows(int kc, int panels, const float *B, ptrdiff_t rsb, const int W, float *dst)
{
    for (int k = 0; k < kc; k++) {
        const float *s = B + k * rsb;
        float *d = dst + k * W;
        for (int q = 0; q < panels; q++)
            memcpy(d + (size_t)q * kc * W, s + q * W, W * sizeof(float));
    }
}

void cy_pack_b_block(int kc, int nc, const float *B, ptrdiff_t rsb, ptrdiff_t csb, int NR,
                     float *dst)
{
    if (csb == 1) {
        /* Rows of B contiguous (a 1x1 conv's input, [C][H*W]): read each row once, left to
         * right, writing its pieces into every panel. Panel by panel instead, each panel
         * read kc rows at one cache line apiece, hundreds of interleaved streams a page
         * apart that the prefetchers did not follow: MobileNetV2's 144 -> 24 projection at
         * 56x56 (one thread) ran 39-43 GFLOP/s that way, 54-56 this way. */
        const int full = nc / NR;
        if (NR == 16) pack_b_rows(kc, full, B, rsb, 16, dst);
        else if (NR == 32) pack_b_rows(kc, full, B, rsb, 32, dst);
        else pack_b_rows(kc, full, B, rsb, NR, dst);
        const int cols = nc - full * NR;
        if (cols > 0) {
            float *d = dst + (size_t)full * kc * NR;
            for (int k = 0; k < kc; k++) {
                memcpy(d + k * NR, B + k * rsb + full * NR, (size_t)cols * sizeof(float));
                for (int c = cols; c < NR; c++) d[k * NR + c] = 0.0f;
            }
        }
        return;
    }
    for (int q = 0; q < nc; q += NR) {
        int cols = nc - q < NR ? nc - q : NR;
        const float *src = B + q * csb;
        for (int k = 0; k < kc; k++) {
            const float *s = src + k * rsb;
            int c = 0;
            for (; c < cols; c++) dst[k * NR + c] = s[c * csb];
            for (; c < NR; c++) dst[k * NR + c] = 0.0f;
        }
        dst += (size_t)kc * NR;
    }
}
