/* Internal contract between the GEMM driver (gemm.c) and the per-ISA micro-kernels.
 *
 * A micro-kernel computes one MR x NR tile of C from packed panels:
 *
 *   acc[i][j] = sum_{k < kc} a[k*MR + i] * b[k*NR + j]        i < MR, j < NR
 *   c[i*ldc + j] = alpha*acc (+ c if t->accumulate)            i < mr, j < nr
 *   and if t->last (final K block):  c = act(c + bias_row[i] + bias_col[j] + residual[i*ldr + j])
 *
 * a: packed A micro-panel [kc][MR]; b: packed B micro-panel [kc][NR]; rows >= mr / columns
 * >= nr of the panels are zero padding and are never stored.
 */
#ifndef CYCONV_GEMM_ISA_H
#define CYCONV_GEMM_ISA_H

#include <math.h>
#include <stddef.h>
#include "gemm.h"

typedef struct cy_tile {
    float alpha;
    int accumulate;          /* add to C (beta = 1, or a K block after the first) */
    int last;                /* final K block: apply bias and activation */
    const float *bias_row;   /* offset to the tile's first row, or NULL */
    const float *bias_col;   /* offset to the tile's first column, or NULL */
    const float *slope_row;  /* PRelu slopes, offset to the tile's first row, or NULL */
    const float *residual;   /* offset to the tile's first element, or NULL */
    ptrdiff_t ldr;
    int act;
    float act_alpha, act_beta;
    /* Grid output (cy_epilogue.grid_wp): when grid, column j < nr of the tile is stored only
     * if bit j of keep is set, the kept columns packed one after another from c (and the
     * residual read likewise) */
    int grid;
    unsigned keep;
} cy_tile;

typedef void (*cy_ukernel)(int kc, const float *a, const float *b, float *c, ptrdiff_t ldc,
                           int mr, int nr, const cy_tile *t);

/* The micro-kernel with B's row k at b + boff[k] (columns contiguous) instead of a packed
 * panel: a conv read straight from its zero-padded input (cy_operand.row_off). */
typedef void (*cy_ukernel_offsets)(int kc, const float *a, const float *b,
                                   const ptrdiff_t *boff, float *c, ptrdiff_t ldc, int mr,
                                   int nr, const cy_tile *t);

/* The epilogue on its own, over an M x N block of C already computed (kernels that are not
 * GEMMs, e.g. depthwise conv, reuse it): C = act(C + bias_row + bias_col + residual). */
typedef void (*cy_epilogue_fn)(int M, int N, float *c, ptrdiff_t ldc, const cy_epilogue *ep);

/* Optional single-row kernel (M == 1: a fully connected layer on one image), streaming whole
 * B panels with several accumulators: c[j] = epilogue(alpha * sum_k x[k] * B[k][j]) for
 * j < nc, x contiguous [kc], column j in panel j / NR at b + (j / NR) * b_stride; t as for
 * cy_ukernel with mr = 1, bias_col and residual at column 0. The kernel may run several
 * panels at once, but each column's sum must not depend on which (the threads' pieces pair
 * the panels differently). */
typedef void (*cy_gemv_kernel)(int kc, const float *x, const float *b, ptrdiff_t b_stride,
                               float *c, int nc, const cy_tile *t);

/* Optional: `tiles` full MR-row tiles (A micro-panels a_stride floats apart, C rows and the
 * tile's bias, slope and residual rows following on) against one packed B panel's last
 * nr <= 4 columns, several tiles at once so that enough independent FMA chains are in
 * flight. Each C element must be the same chain of FMAs, in the same order, as cy_ukernel
 * computes it: which tiles run together depends on the threads' pieces. */
typedef void (*cy_ukernel_edge)(int kc, const float *a, ptrdiff_t a_stride, int tiles,
                                const float *b, float *c, ptrdiff_t ldc, int nr,
                                const cy_tile *t);

typedef struct cy_gemm_isa {
    const char *name;
    int mr, nr;              /* register tile */
    int mc, kc, nc;          /* cache blocking: A block MC x KC in L2, B panel KC x NC in L3 */
    cy_ukernel kernel;
    cy_epilogue_fn epilogue;
    cy_gemv_kernel gemv;     /* or NULL: M == 1 runs the MR x NR kernel */
    cy_ukernel_offsets kernel_offsets;   /* or NULL: no B operand given by row offsets */
    cy_ukernel_edge kernel_edge;         /* or NULL: narrow last panels tile by tile */
    /* A strided B with contiguous rows (a 1x1 conv's input: K channel planes) is read in
     * place by kernel_offsets instead of packed when M <= b_in_place_max_m (0: never); see
     * cy_sgemm_ex. kernel_offsets reads up to b_overread floats past a row's last column
     * (0: its loads are masked). */
    int b_in_place_max_m, b_overread;
    int grid_store;          /* kernel_offsets honours cy_tile.grid (cy_epilogue.grid_wp) */
} cy_gemm_isa;

/* Defined in gemm_<isa>.c; the x86 ones exist only when the compiler targets x86. */
extern const cy_gemm_isa cy_gemm_generic;
#if defined(__x86_64__) || defined(__i386__)
extern const cy_gemm_isa cy_gemm_avx2;
extern const cy_gemm_isa cy_gemm_avx512;
#endif

const cy_gemm_isa *cy_gemm_isa_get(void);

/* One activation on a scalar (generic kernel, and the reference the vector versions follow). */
static inline float cy_act_scalar(float v, int act, float alpha, float beta, float slope)
{
    switch (act) {
    case CY_ACT_RELU: return v > 0.0f ? v : 0.0f;
    case CY_ACT_LEAKY_RELU: return v >= 0.0f ? v : alpha * v;
    case CY_ACT_PRELU: return v >= 0.0f ? v : slope * v;
    case CY_ACT_CLIP: return v < alpha ? alpha : (v > beta ? beta : v);
    case CY_ACT_SIGMOID: return 1.0f / (1.0f + expf(-v));
    case CY_ACT_TANH: return tanhf(v);
    case CY_ACT_HARD_SIGMOID: {
        float h = alpha * v + beta;
        return h < 0.0f ? 0.0f : (h > 1.0f ? 1.0f : h);
    }
    case CY_ACT_HARD_SWISH: {
        float h = v * (1.0f / 6.0f) + 0.5f;
        return v * (h < 0.0f ? 0.0f : (h > 1.0f ? 1.0f : h));
    }
    case CY_ACT_SWISH: return v / (1.0f + expf(-v));
    default: return v;
    }
}

/* Scalar epilogue shared by kernels for their remainder paths: one value of row i, column j. */
static inline float cy_epilogue_scalar(float v, int i, int j, const cy_tile *t)
{
    if (t->bias_row) v += t->bias_row[i];
    if (t->bias_col) v += t->bias_col[j];
    if (t->residual) v += t->residual[i * t->ldr + j];
    return cy_act_scalar(v, t->act, t->act_alpha, t->act_beta,
                         t->slope_row ? t->slope_row[i] : t->act_alpha);
}

#endif
