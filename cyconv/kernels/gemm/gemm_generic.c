/* Portable micro-kernel: plain C the compiler vectorises for whatever baseline it targets
 * (SSE2 on x86-64, NEON on arm64). The package builds and passes everywhere with it. */
#include "gemm_isa.h"

#define MR 4
#define NR 16

static void kernel_generic(int kc, const float *a, const float *b, float *c, ptrdiff_t ldc,
                           int mr, int nr, const cy_tile *t)
{
    float acc[MR][NR] = {{0}};
    for (int k = 0; k < kc; k++) {
        const float *ak = a + k * MR, *bk = b + k * NR;
        for (int i = 0; i < MR; i++)
            for (int j = 0; j < NR; j++)
                acc[i][j] += ak[i] * bk[j];
    }
    for (int i = 0; i < mr; i++) {
        float *ci = c + i * ldc;
        for (int j = 0; j < nr; j++) {
            float v = t->alpha * acc[i][j];
            if (t->accumulate) v += ci[j];
            if (t->last) v = cy_epilogue_scalar(v, i, j, t);
            ci[j] = v;
        }
    }
}

static void epilogue_generic(int M, int N, float *c, ptrdiff_t ldc, const cy_epilogue *ep)
{
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float v = c[i * ldc + j];
            if (ep->bias_row) v += ep->bias_row[i];
            if (ep->bias_col) v += ep->bias_col[j];
            if (ep->residual) v += ep->residual[i * ep->ldr + j];
            c[i * ldc + j] = cy_act_scalar(v, ep->act, ep->act_alpha, ep->act_beta,
                                           ep->slope_row ? ep->slope_row[i] : ep->act_alpha);
        }
}

const cy_gemm_isa cy_gemm_generic = {"generic", MR, NR, 128, 256, 2048, kernel_generic,
                                     epilogue_generic, NULL, NULL};
