/* Packed single-precision GEMM with a fused epilogue.
 *
 *   C[M,N] = act( alpha * A[M,K] @ B[K,N]  (+ C if accumulate)  + bias )
 *
 * A and B are read through general strides (A[i*rs + k*cs], B[k*rs + j*cs]) so transposed
 * operands cost nothing, or from panels prepacked once at load (cy_sgemm_pack_a/_b) so
 * constant weights are never packed again. C is row-major with leading dimension ldc.
 *
 * The computation is BLIS-style: blocks of NC columns, KC depth, MC rows; packed A
 * (MC x KC) and B (KC x NC) panels; an MR x NR register micro-kernel chosen per ISA at
 * first use (avx512f > avx2+fma > generic C). Threads partition C into tiles; K is never
 * split, so each C element is summed in the same order whatever the thread count.
 */
#ifndef CYCONV_GEMM_H
#define CYCONV_GEMM_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Activation applied in the epilogue, on registers, after bias and residual. Ids are stable.
 * Parameters (act_alpha, act_beta) as in the ONNX operators of the same name:
 *   LEAKY_RELU   x >= 0 ? x : alpha*x
 *   CLIP         min(max(x, alpha), beta)
 *   SIGMOID      1 / (1 + exp(-x))
 *   TANH         tanh(x)
 *   HARD_SIGMOID max(0, min(1, alpha*x + beta))
 *   HARD_SWISH   x * max(0, min(1, x/6 + 1/2))
 *   SWISH        x * sigmoid(x)
 *   PRELU        x >= 0 ? x : slope*x, slope = slope_row[i] (per row: a conv's output
 *                channel) when given, else alpha */
enum {
    CY_ACT_NONE = 0, CY_ACT_RELU = 1, CY_ACT_LEAKY_RELU = 2, CY_ACT_CLIP = 3,
    CY_ACT_SIGMOID = 4, CY_ACT_TANH = 5, CY_ACT_HARD_SIGMOID = 6, CY_ACT_HARD_SWISH = 7,
    CY_ACT_SWISH = 8, CY_ACT_PRELU = 9
};

/* What happens to each finished C tile while it is still in registers:
 *   C = act(alpha*A@B (+ C) + bias_row[i] + bias_col[j] + residual[i*ldr + j])
 * Zero-initialise the struct ({0}) so fields added later default to "off". */
typedef struct cy_epilogue {
    const float *bias_row;   /* [M]: added to row i (per output channel of a conv), or NULL */
    const float *bias_col;   /* [N]: added to column j (per output feature of Gemm), or NULL */
    int act;                 /* CY_ACT_* */
    float act_alpha;         /* activation parameters (see above) */
    float act_beta;
    const float *slope_row;  /* [M]: PRelu slopes per row, or NULL (then act_alpha) */
    const float *residual;   /* [M, ldr]: added before the activation (skip connection) or NULL */
    ptrdiff_t ldr;
    /* Grid output (grid_wp > 0; needs cy_gemm_has_grid_store()): column j of the product is
     * position q = grid_q0 + j of a row-major grid grid_wp wide, of which only the first
     * grid_ow columns exist (a row-offset conv computes its padded-width grid, conv.pyx):
     * it is stored at C[i*ldc + (q / grid_wp)*grid_ow + q % grid_wp] (and the residual read
     * alike) when q % grid_wp < grid_ow, and dropped otherwise, so C is the conv's output
     * plane itself and no grid is copied. bias_col must be NULL. */
    int grid_wp, grid_ow;
    ptrdiff_t grid_q0;
} cy_epilogue;

/* Packs rows [k0, k0+kc) x columns [j0, j0+nc) of a B operand that exists only implicitly
 * (a convolution's im2col matrix, see im2col.h) into NR-wide panels, the layout of
 * cy_sgemm_pack_b: dst[(j / NR)*kc*NR + (k - k0)*NR + j % NR], zero past column nc. */
typedef void (*cy_pack_b_fn)(const void *ctx, int k0, int kc, int j0, int nc, int NR,
                             float *dst);

/* One GEMM operand: either strided (packed == 0: element (r, c) at data[r*rs + c*cs]),
 * prepacked panels from cy_sgemm_pack_a / cy_sgemm_pack_b (packed == 1, rs/cs unused), or,
 * for B only, packed on the fly by pack_b(pack_ctx, ...) (pack_b != NULL; data unused).
 * Zero-initialise unused fields. */
typedef struct cy_operand {
    const float *data;
    ptrdiff_t rs, cs;
    int packed;
    cy_pack_b_fn pack_b;
    const void *pack_ctx;
    /* B only, when cy_gemm_has_row_offsets(): element (k, j) at data[row_off[k] + j], read
     * in place by the micro-kernel (no packing). A stride-1 conv over a zero-padded image
     * is such a matrix: row (c, kh, kw) starts at c*Hp*Wp + kh*dh*Wp + kw*dw and column j is
     * output position j of the padded-width grid (conv.pyx); a strided conv over the image
     * split by row and column phase is one too (im2col.h, cy_im2col_phase_split_rows). The
     * kernels read rows in whole vectors of their panel (NR floats): the NR - 1 floats after
     * a row's last column (j = N - 1) must be readable; what they hold never reaches C. */
    const ptrdiff_t *row_off;
} cy_operand;

/* Error codes */
enum { CY_OK = 0, CY_ENOMEM = -1, CY_EINVAL = -2 };

/* Whether the micro-kernel in use reads B given by row offsets (cy_operand.row_off). */
int cy_gemm_has_row_offsets(void);

/* Whether the micro-kernel in use stores a grid output (cy_epilogue.grid_wp). */
int cy_gemm_has_grid_store(void);

/* Whether B given by row offsets may be read where it lies when its rows' reads reach `past`
 * floats beyond `last`, B's last element (a conv's grid reading past its last plane): with
 * the kernel's own over-read (cy_gemm_isa.b_overread) added, they stay in last's page, so
 * they cannot fault whatever follows B. */
int cy_gemm_reads_in_page(const float *last, size_t past);

/* Name of the micro-kernel in use ("avx512f", "avx2", "generic") and its register tile. */
const char *cy_gemm_isa_name(void);
int cy_gemm_mr(void);
int cy_gemm_nr(void);
/* Force an ISA by name (tests/benchmarks); returns CY_OK or CY_EINVAL if unknown/unsupported.
 * Must not be called while a GEMM runs; panels packed before must be packed again. */
int cy_gemm_set_isa(const char *name);

/* Prepacking. A[M,K] is stored as KC-deep blocks (KC per ISA), each ceil(M/MR) panels of
 * [kc][MR] (gemm.c, cy_sgemm_pack_a); B[K,N] as ceil(N/NR) panels of [K][NR]; edges
 * zero-padded. Sizes are in floats. */
size_t cy_sgemm_packed_a_size(int M, int K);
size_t cy_sgemm_packed_b_size(int K, int N);
void cy_sgemm_pack_a(int M, int K, const float *A, ptrdiff_t rsa, ptrdiff_t csa, float *dst);
void cy_sgemm_pack_b(int K, int N, const float *B, ptrdiff_t rsb, ptrdiff_t csb, float *dst);

/* C = act(alpha*A@B (+C if accumulate) + bias). ep may be NULL. n_threads >= 1.
 * Returns CY_OK, or CY_ENOMEM if a packing buffer could not be allocated. */
int cy_sgemm_ex(int M, int N, int K, float alpha, cy_operand A, cy_operand B,
                int accumulate, float *C, ptrdiff_t ldc, const cy_epilogue *ep, int n_threads);

/* Rows [m0, m1) of the M-row product above, on the calling thread (m0 a multiple of
 * cy_gemm_mr(), m1 <= M): what one piece of a caller's own parallel region computes when it
 * splits M itself (row-offset convs: bands of output rows x ranges of output channels). A
 * prepacked A is the whole M-row matrix; C, the epilogue's bias_row / slope_row and residual
 * are indexed by the absolute row, as in cy_sgemm_ex. Every element is summed exactly as
 * cy_sgemm_ex sums it. Returns CY_OK, CY_EINVAL or CY_ENOMEM. */
int cy_sgemm_rows(int M, int m0, int m1, int N, int K, float alpha, cy_operand A,
                  cy_operand B, int accumulate, float *C, ptrdiff_t ldc,
                  const cy_epilogue *ep);

/* The epilogue alone on a computed M x N block: C = act(C + bias_row + bias_col + residual),
 * for kernels that are not GEMMs (depthwise conv) but fuse the same operations. */
void cy_epilogue_apply(int M, int N, float *C, ptrdiff_t ldc, const cy_epilogue *ep);

/* Strided convenience form; beta must be 0 (overwrite C) or 1 (accumulate into C). */
int cy_sgemm(int M, int N, int K, float alpha,
             const float *A, ptrdiff_t rsa, ptrdiff_t csa,
             const float *B, ptrdiff_t rsb, ptrdiff_t csb,
             float beta, float *C, ptrdiff_t ldc, const cy_epilogue *ep, int n_threads);

#ifdef __cplusplus
}
#endif
#endif
