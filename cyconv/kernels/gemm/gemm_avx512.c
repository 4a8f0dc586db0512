/* AVX-512 micro-kernel: 12 x 32 register tile.
 *
 * Registers: 12 rows x 2 zmm (32 floats) = 24 accumulators, 2 for the B row, the A value is a
 * broadcast memory operand. Per k: 2 loads of B, 12 broadcasts of A, 24 FMAs, i.e. 768 flops
 * per 14 loads, enough to keep both FMA pipes busy from L1.
 * Edge tiles run a narrower instance (8, 4 or 1 rows, 16 columns) of the same template so
 * small channel counts waste little work; the final partial columns are stored with a mask.
 */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include "gemm_isa.h"
#include "act_avx512.h"

#define MR 12
#define NR 32
#define TARGET __attribute__((target("avx512f,fma")))
#define INLINE static inline __attribute__((always_inline))

TARGET INLINE __mmask16 lane_mask(int n)
{
    return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1u);
}

/* Floats of A read ahead (32 k steps): at batch 1 the weights are used by one or two column
 * panels only (N = 49 or 63 on a 7x7 plane), so the micro-panel comes from L3 rather than L1
 * and the hardware prefetchers alone left the FMAs waiting. Measured on ResNet's 512-channel
 * 7x7 layers in a chain (cold weights): 1 thread 2.51 -> 2.10 ms, 2 threads 1.90 -> 1.75;
 * neutral on compute-bound shapes. */
#define A_PREFETCH (32 * MR)

/* One step of k: acc[i][v] += a[k*MR + i] * b[k*NR + 16v] for the tile's rows/columns. */
#define STEP(acc, k)                                                          \
    do {                                                                      \
        const float *ak_ = a + (k) * MR;                                      \
        const float *bk_ = boff ? b + boff[k] : b + (k) * NR;                 \
        if (!boff) _mm_prefetch((const char *)(bk_ + 16 * NR), _MM_HINT_T0);  \
        _mm_prefetch((const char *)(ak_ + A_PREFETCH), _MM_HINT_T0);          \
        __m512 b0_ = boff ? _mm512_maskz_loadu_ps(bm_[0], bk_)                \
                          : _mm512_loadu_ps(bk_);                             \
        __m512 b1_ = COLS < 2 ? b0_ : boff ? _mm512_maskz_loadu_ps(bm_[1], bk_ + 16) \
                                           : _mm512_loadu_ps(bk_ + 16);       \
        _Pragma("GCC unroll 12")                                              \
        for (int i = 0; i < ROWS; i++) {                                      \
            __m512 ai_ = _mm512_set1_ps(ak_[i]);                              \
            acc[i][0] = _mm512_fmadd_ps(ai_, b0_, acc[i][0]);                 \
            if (COLS > 1) acc[i][1] = _mm512_fmadd_ps(ai_, b1_, acc[i][1]);   \
        }                                                                     \
    } while (0)

/* C = act(acc + bias_row (+ residual)) for a tile whose K is one block; ACT (NONE, RELU or
 * CLIP) and the tile shape are compile-time constants after inlining. */
TARGET INLINE void store_tile(const int ROWS, const int COLS, const int ACT,
                              __m512 acc[MR][2], float *c, ptrdiff_t ldc, int mr,
                              const __mmask16 m[2], const int off[2], const cy_tile *t)
{
    const float *brow = t->bias_row, *res = t->residual;
    const __m512 zero = _mm512_setzero_ps();
    const __m512 lo = _mm512_set1_ps(t->act_alpha), hi = _mm512_set1_ps(t->act_beta);
#pragma GCC unroll 12
    for (int i = 0; i < ROWS; i++) {
        if (i >= mr) break;
        float *ci = c + i * ldc;
        const __m512 bi = brow ? _mm512_set1_ps(brow[i]) : zero;
#pragma GCC unroll 2
        for (int v = 0; v < COLS; v++) {
            __m512 x = _mm512_add_ps(acc[i][v], bi);
            if (res) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(m[v], res + i * t->ldr + off[v]));
            if (ACT == CY_ACT_RELU) x = _mm512_max_ps(x, zero);
            if (ACT == CY_ACT_CLIP) x = _mm512_min_ps(_mm512_max_ps(x, lo), hi);
            _mm512_mask_storeu_ps(ci + off[v], m[v], x);
        }
    }
}

/* ROWS <= MR rows and COLS <= 2 zmm columns: compile-time constants after inlining, so
 * the accumulators live in registers. A single row (M = 1: a fully connected layer on one
 * image) has only 2 accumulators, too few to hide the 4-cycle FMA latency, so it keeps two
 * sets (even and odd k) added at the end; the order of the sum depends only on the tile
 * shape, never on the thread count. */
TARGET INLINE void tile(const int ROWS, const int COLS, int kc, const float *a, const float *b,
                        const ptrdiff_t *boff, float *c, ptrdiff_t ldc, int mr, int nr,
                        const cy_tile *t)
{
    __m512 acc[MR][2], acc2[MR][2];
#pragma GCC unroll 12
    for (int i = 0; i < ROWS; i++) {
        acc[i][0] = acc[i][1] = _mm512_setzero_ps();
        acc2[i][0] = acc2[i][1] = _mm512_setzero_ps();
    }
    /* C and the residual are read or written once at the end: start pulling their rows
     * into L1 now. The tiles walk down 240-row blocks of C, too many streams for the
     * hardware prefetchers: an unprefetched residual made a 64->256 1x1 conv with a 3 MiB
     * residual 1.8x slower than without one. */
    const float *res_pf = t->last ? t->residual : 0;
    /* B read in place (boff) is loaded with the tile's column mask: a row's last panel then
     * never reads past the columns that exist (a 1x1 conv reads its input tensor itself) */
    const __mmask16 bm_[2] = {lane_mask(nr), lane_mask(nr - 16)};
#pragma GCC unroll 12
    for (int i = 0; i < ROWS; i++) {
        if (i >= mr) break;
        _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + i * ldc + 16), _MM_HINT_T0);
        if (res_pf) {
            _mm_prefetch((const char *)(res_pf + i * t->ldr), _MM_HINT_T0);
            _mm_prefetch((const char *)(res_pf + i * t->ldr + 16), _MM_HINT_T0);
        }
    }
    if (ROWS == 1) {
        int k = 0;
#pragma GCC unroll 2
        for (; k + 1 < kc; k += 2) {
            STEP(acc, k);
            STEP(acc2, k + 1);
        }
        if (k < kc) STEP(acc, k);
#pragma GCC unroll 1
        for (int i = 0; i < ROWS; i++) {
            acc[i][0] = _mm512_add_ps(acc[i][0], acc2[i][0]);
            acc[i][1] = _mm512_add_ps(acc[i][1], acc2[i][1]);
        }
    } else {
#pragma GCC unroll 4
        for (int k = 0; k < kc; k++) STEP(acc, k);
    }

    __mmask16 m[2] = {lane_mask(nr), lane_mask(nr - 16)};
    int off[2] = {0, 16};           /* where each vector's columns go, from c */
    if (t->grid) {
        /* Grid output: each vector keeps its columns whose bit of keep is set, packed to its
         * low lanes (vcompressps between registers: the memory form is microcoded on Zen 4)
         * and stored contiguously, the second vector's after the first's. Everything after
         * is per element, so the bias, residual and activation apply to the packed lanes. */
        const __mmask16 k0 = m[0] & (__mmask16)t->keep, k1 = m[1] & (__mmask16)(t->keep >> 16);
#pragma GCC unroll 12
        for (int i = 0; i < ROWS; i++) {
            acc[i][0] = _mm512_maskz_compress_ps(k0, acc[i][0]);
            if (COLS > 1) acc[i][1] = _mm512_maskz_compress_ps(k1, acc[i][1]);
        }
        off[1] = __builtin_popcount(k0);
        m[0] = lane_mask(off[1]);
        m[1] = lane_mask(__builtin_popcount(k1));
    }
    const int act = t->last ? t->act : CY_ACT_NONE;
    if (t->last && !t->accumulate && t->alpha == 1.0f && !t->bias_col &&
        (act == CY_ACT_NONE || act == CY_ACT_RELU || act == CY_ACT_CLIP)) {
        /* The common case (one K block, a conv's bias, ReLU / ReLU6 or none): straight-line
         * stores with the activation chosen once per tile. Through the general path below,
         * re-testing alpha, accumulate and the activation for each of the 24 vectors, the
         * epilogue had cost a quarter of a K = 96 tile (MobileNetV2's expansions). */
        if (act == CY_ACT_RELU)
            store_tile(ROWS, COLS, CY_ACT_RELU, acc, c, ldc, mr, m, off, t);
        else if (act == CY_ACT_CLIP)
            store_tile(ROWS, COLS, CY_ACT_CLIP, acc, c, ldc, mr, m, off, t);
        else
            store_tile(ROWS, COLS, CY_ACT_NONE, acc, c, ldc, mr, m, off, t);
        return;
    }
    const __m512 alpha = _mm512_set1_ps(t->alpha), zero = _mm512_setzero_ps();
    /* Clip (ReLU6: MobileNets) has its bounds hoisted like ReLU: through cy_act512's switch
     * it took 15% of a 96 -> 576 1x1 conv */
    const __m512 lo = _mm512_set1_ps(t->act_alpha), hi = _mm512_set1_ps(t->act_beta);
    const int scale = t->alpha != 1.0f, accumulate = t->accumulate, last = t->last;
    const float *res = last ? t->residual : 0;
    const float *brow = last ? t->bias_row : 0;
    __m512 bcol[2] = {zero, zero};
    if (last && t->bias_col) {
        bcol[0] = _mm512_maskz_loadu_ps(m[0], t->bias_col);
        if (COLS > 1) bcol[1] = _mm512_maskz_loadu_ps(m[1], t->bias_col + 16);
    }
#pragma GCC unroll 12
    for (int i = 0; i < ROWS; i++) {
        if (i >= mr) break;
        float *ci = c + i * ldc;
#pragma GCC unroll 2
        for (int v = 0; v < COLS; v++) {
            __m512 x = acc[i][v];
            if (scale) x = _mm512_mul_ps(x, alpha);
            if (accumulate) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(m[v], ci + off[v]));
            if (last) {
                if (brow) x = _mm512_add_ps(x, _mm512_set1_ps(brow[i]));
                x = _mm512_add_ps(x, bcol[v]);
                if (res)
                    x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(m[v], res + i * t->ldr + off[v]));
                if (act == CY_ACT_RELU) x = _mm512_max_ps(x, zero);
                else if (act == CY_ACT_CLIP) x = _mm512_min_ps(_mm512_max_ps(x, lo), hi);
                else if (act) x = cy_act512(x, act, t->act_alpha, t->act_beta,
                                            t->slope_row ? t->slope_row[i] : t->act_alpha);
            }
            _mm512_mask_storeu_ps(ci + off[v], m[v], x);
        }
    }
}

/* boff: NULL (b is a packed panel, row k at b + k*NR) or the offsets of B's rows (row k at
 * b + boff[k], columns contiguous: a conv read straight from its padded input, see
 * gemm.h's cy_operand.row_off). Both compile from one template, the test hoisted out. */
TARGET INLINE void kernel_body(int kc, const float *a, const float *b, const ptrdiff_t *boff,
                               float *c, ptrdiff_t ldc, int mr, int nr, const cy_tile *t)
{
    if (nr > 16) {
        if (mr > 8) tile(12, 2, kc, a, b, boff, c, ldc, mr, nr, t);
        else if (mr > 4) tile(8, 2, kc, a, b, boff, c, ldc, mr, nr, t);
        else if (mr > 1) tile(4, 2, kc, a, b, boff, c, ldc, mr, nr, t);
        else tile(1, 2, kc, a, b, boff, c, ldc, mr, nr, t);
    } else {
        if (mr > 8) tile(12, 1, kc, a, b, boff, c, ldc, mr, nr, t);
        else if (mr > 4) tile(8, 1, kc, a, b, boff, c, ldc, mr, nr, t);
        else if (mr > 1) tile(4, 1, kc, a, b, boff, c, ldc, mr, nr, t);
        else tile(1, 1, kc, a, b, boff, c, ldc, mr, nr, t);
    }
}

TARGET static void kernel_avx512(int kc, const float *a, const float *b, float *c,
                                 ptrdiff_t ldc, int mr, int nr, const cy_tile *t)
{
    kernel_body(kc, a, b, NULL, c, ldc, mr, nr, t);
}

TARGET static void kernel_offsets_avx512(int kc, const float *a, const float *b,
                                         const ptrdiff_t *boff, float *c, ptrdiff_t ldc, int mr,
                                         int nr, const cy_tile *t)
{
    kernel_body(kc, a, b, boff, c, ldc, mr, nr, t);
}

/* M == 1: one row of A against NR-column panels of B. The MR x NR kernel would broadcast A
 * from a 12-row panel (12x the bytes, from L2) and keep only 4 accumulators; here x is
 * contiguous and k is unrolled by 4 into 8 independent accumulators, so the loop is bound by
 * streaming B (2 cache lines per k), not by FMA latency. Sum order depends on kc only. */
TARGET static void gemv_panel_avx512(int kc, const float *x, const float *b, float *c, int nr,
                                     const cy_tile *t)
{
    __m512 s0[4], s1[4];
    for (int u = 0; u < 4; u++) s0[u] = s1[u] = _mm512_setzero_ps();
    int k = 0;
    for (; k + 4 <= kc; k += 4) {
        _mm_prefetch((const char *)(b + (k + 32) * NR), _MM_HINT_T0);
        _mm_prefetch((const char *)(b + (k + 32) * NR + 16), _MM_HINT_T0);
        _mm_prefetch((const char *)(b + (k + 34) * NR), _MM_HINT_T0);
        _mm_prefetch((const char *)(b + (k + 34) * NR + 16), _MM_HINT_T0);
#pragma GCC unroll 4
        for (int u = 0; u < 4; u++) {
            const __m512 xa = _mm512_set1_ps(x[k + u]);
            s0[u] = _mm512_fmadd_ps(xa, _mm512_loadu_ps(b + (k + u) * NR), s0[u]);
            s1[u] = _mm512_fmadd_ps(xa, _mm512_loadu_ps(b + (k + u) * NR + 16), s1[u]);
        }
    }
    for (; k < kc; k++) {
        const __m512 xa = _mm512_set1_ps(x[k]);
        s0[0] = _mm512_fmadd_ps(xa, _mm512_loadu_ps(b + k * NR), s0[0]);
        s1[0] = _mm512_fmadd_ps(xa, _mm512_loadu_ps(b + k * NR + 16), s1[0]);
    }
    __m512 acc[2] = {_mm512_add_ps(_mm512_add_ps(s0[0], s0[1]), _mm512_add_ps(s0[2], s0[3])),
                     _mm512_add_ps(_mm512_add_ps(s1[0], s1[1]), _mm512_add_ps(s1[2], s1[3]))};
    const __mmask16 m[2] = {lane_mask(nr), lane_mask(nr - 16)};
    const int last = t->last;
    for (int v = 0; v < 2 && 16 * v < nr; v++) {
        __m512 y = acc[v];
        if (t->alpha != 1.0f) y = _mm512_mul_ps(y, _mm512_set1_ps(t->alpha));
        if (t->accumulate) y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(m[v], c + 16 * v));
        if (last) {
            if (t->bias_row) y = _mm512_add_ps(y, _mm512_set1_ps(t->bias_row[0]));
            if (t->bias_col)
                y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(m[v], t->bias_col + 16 * v));
            if (t->residual)
                y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(m[v], t->residual + 16 * v));
            if (t->act)
                y = cy_act512(y, t->act, t->act_alpha, t->act_beta,
                              t->slope_row ? t->slope_row[0] : t->act_alpha);
        }
        _mm512_mask_storeu_ps(c + 16 * v, m[v], y);
    }
}

TARGET static void gemv_avx512(int kc, const float *x, const float *b, ptrdiff_t b_stride,
                               float *c, int nc, const cy_tile *t)
{
    cy_tile tj = *t;
    for (int j = 0; j < nc; j += NR) {
        tj.bias_col = t->bias_col ? t->bias_col + j : NULL;
        tj.residual = t->residual ? t->residual + j : NULL;
        gemv_panel_avx512(kc, x, b + (j / NR) * b_stride, c + j, nc - j < NR ? nc - j : NR, &tj);
    }
}

TARGET static void epilogue_avx512(int M, int N, float *c, ptrdiff_t ldc, const cy_epilogue *ep)
{
    for (int i = 0; i < M; i++) {
        float *ci = c + i * ldc;
        const float *ri = ep->residual ? ep->residual + i * ep->ldr : 0;
        const __m512 brow = _mm512_set1_ps(ep->bias_row ? ep->bias_row[i] : 0.0f);
        const float slope = ep->slope_row ? ep->slope_row[i] : ep->act_alpha;
        for (int j = 0; j < N; j += 16) {
            const __mmask16 m = lane_mask(N - j);
            __m512 x = _mm512_add_ps(_mm512_maskz_loadu_ps(m, ci + j), brow);
            if (ep->bias_col) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(m, ep->bias_col + j));
            if (ri) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(m, ri + j));
            x = cy_act512(x, ep->act, ep->act_alpha, ep->act_beta, slope);
            _mm512_mask_storeu_ps(ci + j, m, x);
        }
    }
}

/* A strided B (a 1x1 conv's input) is read in place up to this M (cy_sgemm_ex): packing
 * moves every float of B once more, about as costly as 8 rows of multiply-adds, and the
 * masked in-place loads read each panel row from 2 lines. Measured with the conv's output an
 * intermediate (Zen 4, in-place vs packed, 1 / 2 threads): 128 -> 16 at 55x55 0.74 / 0.85x,
 * 64 -> 16 0.66 / 0.89, 256 -> 32 at 27x27 0.81 / 0.77, 384 -> 48 at 13x13 0.80 / 0.73,
 * 144 -> 24 at 56x56 0.91 / 1.0, 128 -> 64 at 55x55 0.94 / 0.79, 256 -> 128 at 28x28 0.92 /
 * 0.59, 1024 -> 128 at 7x7 0.93 / 0.55, 64 -> 256 at 56x56 1.02 / 0.91, 512 -> 256 at 14x14
 * 0.98 / 0.93; from M = 512 on, within +-5% either way and 256 -> 1024 at 14x14 1.08x on
 * two threads. */
#define B_IN_PLACE_MAX_M 256

/* MC x KC = 240 x 384 floats = 360 KiB of A in L2; KC x NC = 384 x 3072 = 4.5 MiB of B in L3. */
const cy_gemm_isa cy_gemm_avx512 = {"avx512f", MR, NR, 240, 384, 3072, kernel_avx512,
                                     epilogue_avx512, gemv_avx512, kernel_offsets_avx512,
                                     NULL, B_IN_PLACE_MAX_M, 0, 1};
#endif
