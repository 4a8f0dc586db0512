/* AVX2+FMA micro-kernel: 6 x 16 register tile, the classic Haswell / Zen shape.
 *
 * Registers (16 ymm): 6 rows x 2 ymm = 12 accumulators, 2 for the B row, 1 broadcast of A.
 * Per k: 2 loads of B, 6 broadcasts of A, 12 FMAs (6 cycles on two FMA pipes).
 * Edge tiles run a narrower instance (4, 2 or 1 rows; 8 columns) of the same template.
 * The structure follows gemm_avx512.c: software prefetch of A, B, C and the residual, a
 * straight-line store for the common epilogue, a B operand read in place by row offsets, and
 * a dedicated M == 1 kernel.
 *
 * Full-width vectors use plain loads and stores, masks only the ragged right edge: on AMD Zen
 * vmaskmovps stores are microcoded (about one per 12 cycles), and a full 6 x 16 tile stored
 * through masks cost ~15% of a K = 256 GEMM on Zen 3 (L1 kernel 65-80 -> 84-89 GFLOP/s).
 */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include "gemm_isa.h"
#include "act_avx2.h"

#define MR 6
#define NR 16
#define TARGET __attribute__((target("avx2,fma")))
#define INLINE static inline __attribute__((always_inline))

TARGET INLINE __m256i lane_mask(int n)
{
    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), iota);
}

/* 8 floats of a tile row: plain moves when the whole vector is in range (FULL), else masked
 * by m (vmaskmovps neither reads nor faults on a masked-off lane). */
TARGET INLINE __m256 load8(const int FULL, const float *p, __m256i m)
{
    return FULL ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, m);
}

TARGET INLINE void store8(const int FULL, float *p, __m256i m, __m256 x)
{
    if (FULL) _mm256_storeu_ps(p, x);
    else _mm256_maskstore_ps(p, m, x);
}

/* Floats of A read ahead (32 k steps), as in gemm_avx512.c: at batch 1 a weight micro-panel is
 * used by a few column panels only (N = 49 on a 7x7 plane), so it comes from L3 or memory and
 * each 6 KiB slice is too short a stream for the hardware prefetchers to ramp up on. */
#define A_PREFETCH (32 * MR)
/* Floats of a packed B panel read ahead (16 k steps, one cache line each). */
#define B_PREFETCH (16 * NR)
/* KC, the depth of a K block (see the blocking at the end). A longer panel (kc > KC) is the
 * whole K of a few rows (gemm.c's small M: a fully connected layer on a few images), a weight
 * panel streamed once from L3 or memory, one sequential stream a tile: read it 128 k steps
 * (8 KiB) ahead, not 16, to keep more misses in flight. 4096 @ 4096x1000 prepacked, Zen 3,
 * 1 thread: 2 rows 0.87 -> 0.60 ms, 4 rows 0.88 -> 0.61, 6 rows 1.05 -> 0.98 (4 KiB ahead:
 * 0.71, 0.82, 0.97). */
#define KC 256
#define B_PREFETCH_FAR (128 * NR)

/* One step of k: acc[i][v] += ak[i] * bk[8v] for the tile's rows and columns; ak is the step's
 * MR floats of the A micro-panel, bk the step's row of B: in a packed panel, or read in place
 * at b + boff[k]. Either way whole 8-float vectors are loaded, also in a partial last panel: a
 * packed panel is zero padded, and an in-place B has readable slack past its last column
 * (gemm.h, row_off). Masked loads there (vmaskmovps, extra uops on AMD Zen) had made the
 * 15-column last panel of ResNet's 7x7 row-offset layers the slowest part of them. */
#define STEP_AT(acc, ak, bk)                                                            \
    do {                                                                                \
        const float *ak_ = (ak), *bk_ = (bk);                                           \
        const __m256 b0_ = _mm256_loadu_ps(bk_);                                        \
        const __m256 b1_ = COLS < 2 ? b0_ : _mm256_loadu_ps(bk_ + 8);                   \
        _Pragma("GCC unroll 6")                                                         \
        for (int i = 0; i < ROWS; i++) {                                                \
            const __m256 ai_ = _mm256_broadcast_ss(ak_ + i);                            \
            acc[i][0] = _mm256_fmadd_ps(ai_, b0_, acc[i][0]);                           \
            if (COLS > 1) acc[i][1] = _mm256_fmadd_ps(ai_, b1_, acc[i][1]);             \
        }                                                                               \
    } while (0)

/* Step k of the tile: A read ahead every step (one uop; a test of k's parity to prefetch
 * every other step, as the 6 floats a step would allow, cost more than it saved), a packed
 * B every step. */
#define STEP(acc, k)                                                                    \
    do {                                                                                \
        const float *ak = a + (k) * MR;                                                 \
        const float *bk = OFFS ? b + boff[k] : b + (k) * NR;                            \
        if (!OFFS) _mm_prefetch((const char *)(bk + b_pf), _MM_HINT_T0);                \
        _mm_prefetch((const char *)(ak + A_PREFETCH), _MM_HINT_T0);                     \
        STEP_AT(acc, ak, bk);                                                           \
    } while (0)

/* C = act(acc + bias_row (+ residual)) for a tile whose K is one block; ACT (NONE, RELU or
 * CLIP), FULL and the tile shape are compile-time constants after inlining. */
TARGET INLINE void store_tile_fast(const int ROWS, const int COLS, const int FULL, const int ACT,
                                   __m256 acc[MR][2], float *c, ptrdiff_t ldc, int mr,
                                   const __m256i m[2], const cy_tile *t)
{
    const float *brow = t->bias_row, *res = t->residual;
    const __m256 zero = _mm256_setzero_ps();
    const __m256 lo = _mm256_set1_ps(t->act_alpha), hi = _mm256_set1_ps(t->act_beta);
#pragma GCC unroll 6
    for (int i = 0; i < ROWS; i++) {
        if (i >= mr) break;
        float *ci = c + i * ldc;
        const __m256 bi = brow ? _mm256_set1_ps(brow[i]) : zero;
#pragma GCC unroll 2
        for (int v = 0; v < COLS; v++) {
            __m256 x = _mm256_add_ps(acc[i][v], bi);
            if (res) x = _mm256_add_ps(x, load8(FULL, res + i * t->ldr + 8 * v, m[v]));
            if (ACT == CY_ACT_RELU) x = _mm256_max_ps(x, zero);
            if (ACT == CY_ACT_CLIP) x = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
            store8(FULL, ci + 8 * v, m[v], x);
        }
    }
}

/* Every other case: alpha, accumulate (C +=, a K block after the first), and on the last K
 * block bias (row and column), residual and any activation. */
TARGET INLINE void store_tile_general(const int ROWS, const int COLS, const int FULL,
                                      __m256 acc[MR][2], float *c, ptrdiff_t ldc, int mr,
                                      const __m256i m[2], const cy_tile *t)
{
    const __m256 alpha = _mm256_set1_ps(t->alpha), zero = _mm256_setzero_ps();
    const int scale = t->alpha != 1.0f, accumulate = t->accumulate, last = t->last;
    const int act = last ? t->act : CY_ACT_NONE;
    const float *res = last ? t->residual : 0;
    const float *brow = last ? t->bias_row : 0;
    __m256 bcol[2] = {zero, zero};
    if (last && t->bias_col) {
        bcol[0] = load8(FULL, t->bias_col, m[0]);
        if (COLS > 1) bcol[1] = load8(FULL, t->bias_col + 8, m[1]);
    }
#pragma GCC unroll 6
    for (int i = 0; i < ROWS; i++) {
        if (i >= mr) break;
        float *ci = c + i * ldc;
#pragma GCC unroll 2
        for (int v = 0; v < COLS; v++) {
            __m256 x = acc[i][v];
            if (scale) x = _mm256_mul_ps(x, alpha);
            if (accumulate) x = _mm256_add_ps(x, load8(FULL, ci + 8 * v, m[v]));
            if (last) {
                if (brow) x = _mm256_add_ps(x, _mm256_set1_ps(brow[i]));
                x = _mm256_add_ps(x, bcol[v]);
                if (res) x = _mm256_add_ps(x, load8(FULL, res + i * t->ldr + 8 * v, m[v]));
                if (act == CY_ACT_RELU) x = _mm256_max_ps(x, zero);
                else if (act) x = cy_act256(x, act, t->act_alpha, t->act_beta,
                                            t->slope_row ? t->slope_row[i] : t->act_alpha);
            }
            store8(FULL, ci + 8 * v, m[v], x);
        }
    }
}

/* The tile's epilogue: the common case (one K block, a conv's bias, ReLU / ReLU6 or none)
 * with the activation chosen once per tile instead of per vector, else the general one. */
TARGET INLINE void store_tile(const int ROWS, const int COLS, const int FULL,
                              __m256 acc[MR][2], float *c, ptrdiff_t ldc, int mr, int nr,
                              const cy_tile *t)
{
    const __m256i m[2] = {lane_mask(nr), lane_mask(nr - 8)};
    const int act = t->last ? t->act : CY_ACT_NONE;
    if (t->last && !t->accumulate && t->alpha == 1.0f && !t->bias_col &&
        (act == CY_ACT_NONE || act == CY_ACT_RELU || act == CY_ACT_CLIP)) {
        if (act == CY_ACT_RELU)
            store_tile_fast(ROWS, COLS, FULL, CY_ACT_RELU, acc, c, ldc, mr, m, t);
        else if (act == CY_ACT_CLIP)
            store_tile_fast(ROWS, COLS, FULL, CY_ACT_CLIP, acc, c, ldc, mr, m, t);
        else
            store_tile_fast(ROWS, COLS, FULL, CY_ACT_NONE, acc, c, ldc, mr, m, t);
        return;
    }
    store_tile_general(ROWS, COLS, FULL, acc, c, ldc, mr, m, t);
}

/* ROWS <= MR rows, COLS <= 2 ymm columns, FULL (nr == 8 * COLS): compile-time constants
 * after inlining, so the accumulators live in registers. A single row (M = 1) has only 2
 * accumulators, too few to hide the FMA latency, so it keeps two sets (even and odd k) added
 * at the end; the order of the sum depends only on the tile shape, never on the threads. */
TARGET INLINE void tile(const int OFFS, const int ROWS, const int COLS, const int FULL, int kc,
                        const float *a, const float *b, const ptrdiff_t *boff, float *c,
                        ptrdiff_t ldc, int mr, int nr, const cy_tile *t)
{
    __m256 acc[MR][2], acc2[MR][2];
#pragma GCC unroll 6
    for (int i = 0; i < ROWS; i++) {
        acc[i][0] = acc[i][1] = _mm256_setzero_ps();
        acc2[i][0] = acc2[i][1] = _mm256_setzero_ps();
    }
    /* C and the residual are touched once, at the end: start pulling their rows in now
     * (tiles walk down blocks of C, more streams than the hardware prefetchers follow). */
    const ptrdiff_t b_pf = kc > KC ? B_PREFETCH_FAR : B_PREFETCH;
    const float *res_pf = t->last ? t->residual : 0;
#pragma GCC unroll 6
    for (int i = 0; i < ROWS; i++) {
        if (i >= mr) break;
        _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
        if (res_pf) _mm_prefetch((const char *)(res_pf + i * t->ldr), _MM_HINT_T0);
    }
    if (ROWS == 1) {
        int k = 0;
        for (; k + 1 < kc; k += 2) {
            STEP(acc, k);
            STEP(acc2, k + 1);
        }
        if (k < kc) STEP(acc, k);
        acc[0][0] = _mm256_add_ps(acc[0][0], acc2[0][0]);
        acc[0][1] = _mm256_add_ps(acc[0][1], acc2[0][1]);
    } else {
#pragma GCC unroll 2
        for (int k = 0; k < kc; k++) STEP(acc, k);
    }

    store_tile(ROWS, COLS, FULL, acc, c, ldc, mr, nr, t);
}

/* t for the tile `rows` rows further down: its bias, slope and residual rows. */
INLINE cy_tile tile_rows_down(const cy_tile *t, int rows)
{
    cy_tile d = *t;
    if (d.bias_row) d.bias_row += rows;
    if (d.slope_row) d.slope_row += rows;
    if (d.residual) d.residual += (ptrdiff_t)rows * d.ldr;
    return d;
}

/* R full-height tiles (A micro-panels a_stride apart, C rows following on) against a packed B
 * panel's last NRN <= 4 columns (N = 49: a 7x7 plane's 48 + 1), with the rows in the lanes:
 * per step and tile one load of the step's MR floats of A (and two of the next step's,
 * unused), NRN broadcasts of B shared by the tiles, NRN FMAs, where the 6 x 16 tile spent
 * 6 broadcasts and 6-12 FMAs on one column as on sixteen (M = 1280, K = 320: N = 49 took 0.86
 * ms, N = 48 0.65; one tile at a time, 1280 x 49 x 320 743 -> 695 us on one thread). Each C
 * element is the same chain of FMAs in the same order as in tile(), so the results are the
 * same floats; the epilogue is tile()'s, after a transpose.
 * One tile alone has only NRN dependent chains, one step each per FMA latency (4 cycles on
 * Zen 3): its 1-column edge cost 2/3 of a whole 16-column panel. R tiles side by side run
 * R x NRN chains (8 or 9: 8 FMAs in flight fill both pipes; kernel_edge_avx2). In-process A/B
 * against one tile at a time, 1x1 convs with ReLU, medians: 320 -> 1280 at 7x7 0.92-0.97x on
 * 2 threads (0.92 on one), 960 -> 160 0.94x (160 -> 960 0.91 on one), ResNet-50's 512 -> 2048
 * and 2048 -> 512 at 7x7 0.93-0.95x; 14x14 layers (4-column edge, 2 tiles) 0.96-0.99x. */
TARGET INLINE void tiles_narrow(const int R, const int NRN, int kc, const float *a,
                                ptrdiff_t a_stride, const float *b, float *c, ptrdiff_t ldc,
                                int nr, const cy_tile *t)
{
    __m256 acc[8][4];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int j = 0; j < NRN; j++) acc[r][j] = _mm256_setzero_ps();
    int k = 0;
    for (; k + 1 < kc; k++) {
        const float *bk = b + k * NR;
        __m256 bj[4];
#pragma GCC unroll 4
        for (int j = 0; j < NRN; j++) bj[j] = _mm256_broadcast_ss(bk + j);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            const float *ak = a + r * a_stride + k * MR;
            _mm_prefetch((const char *)(ak + A_PREFETCH), _MM_HINT_T0);
            const __m256 av = _mm256_loadu_ps(ak);   /* lanes 6, 7: step k+1's, unused */
#pragma GCC unroll 4
            for (int j = 0; j < NRN; j++) acc[r][j] = _mm256_fmadd_ps(av, bj[j], acc[r][j]);
        }
    }
    {   /* the last step: lanes 6 and 7 would lie past the panel */
        const __m256i m6 = lane_mask(MR);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            const __m256 av = _mm256_maskload_ps(a + r * a_stride + k * MR, m6);
#pragma GCC unroll 4
            for (int j = 0; j < NRN; j++)
                acc[r][j] = _mm256_fmadd_ps(av, _mm256_broadcast_ss(b + k * NR + j), acc[r][j]);
        }
    }
    const __m256 zero = _mm256_setzero_ps();
    for (int r = 0; r < R; r++) {
        float rows[4][8];
        for (int j = 0; j < NRN; j++) _mm256_storeu_ps(rows[j], acc[r][j]);
        __m256 tacc[MR][2];
        for (int i = 0; i < MR; i++) {
            float v[8] = {0};
            for (int j = 0; j < NRN; j++) v[j] = rows[j][i];
            tacc[i][0] = _mm256_loadu_ps(v);
            tacc[i][1] = zero;
        }
        const cy_tile tr = tile_rows_down(t, r * MR);
        store_tile(MR, 1, 0, tacc, c + r * MR * ldc, ldc, MR, nr, &tr);
    }
}

/* The narrow tiles stay out of kernel_body: inlined there beside the tile() instances they
 * made GCC compile the main tiles worse, every GEMM ~2x slower (in-process A/B). */
__attribute__((noinline)) TARGET static void narrow_edge(int kc, const float *a, const float *b,
                                                        float *c, ptrdiff_t ldc, int nr,
                                                        const cy_tile *t)
{
    if (nr == 1) tiles_narrow(1, 1, kc, a, 0, b, c, ldc, nr, t);
    else if (nr == 2) tiles_narrow(1, 2, kc, a, 0, b, c, ldc, nr, t);
    else if (nr == 3) tiles_narrow(1, 3, kc, a, 0, b, c, ldc, nr, t);
    else tiles_narrow(1, 4, kc, a, 0, b, c, ldc, nr, t);
}

/* cy_ukernel_edge: groups of R tiles (R x NRN = 8 or 9 chains), the rest one by one. */
__attribute__((noinline)) TARGET static void kernel_edge_avx2(int kc, const float *a,
                                                             ptrdiff_t a_stride, int tiles,
                                                             const float *b, float *c,
                                                             ptrdiff_t ldc, int nr,
                                                             const cy_tile *t)
{
    const int R = nr == 1 ? 8 : nr == 2 ? 4 : nr == 3 ? 3 : 2;
    int r = 0;
    for (; r + R <= tiles; r += R) {
        const cy_tile tg = tile_rows_down(t, r * MR);
        const float *ar = a + r * a_stride;
        float *cr = c + r * MR * ldc;
        if (nr == 1) tiles_narrow(8, 1, kc, ar, a_stride, b, cr, ldc, nr, &tg);
        else if (nr == 2) tiles_narrow(4, 2, kc, ar, a_stride, b, cr, ldc, nr, &tg);
        else if (nr == 3) tiles_narrow(3, 3, kc, ar, a_stride, b, cr, ldc, nr, &tg);
        else tiles_narrow(2, 4, kc, ar, a_stride, b, cr, ldc, nr, &tg);
    }
    for (; r < tiles; r++) {
        const cy_tile tg = tile_rows_down(t, r * MR);
        narrow_edge(kc, a + r * a_stride, b, c + r * MR * ldc, ldc, nr, &tg);
    }
}

/* One tile shape per (rows, columns): 6/4/2/1 rows so small channel counts waste little;
 * full 16 columns, or a masked 8/16-column edge. */
#define ROWS_DISPATCH(COLS, FULL)                                                          \
    do {                                                                                   \
        if (mr > 4) tile(OFFS, 6, COLS, FULL, kc, a, b, boff, c, ldc, mr, nr, t);          \
        else if (mr > 2) tile(OFFS, 4, COLS, FULL, kc, a, b, boff, c, ldc, mr, nr, t);     \
        else if (mr > 1) tile(OFFS, 2, COLS, FULL, kc, a, b, boff, c, ldc, mr, nr, t);     \
        else tile(OFFS, 1, COLS, FULL, kc, a, b, boff, c, ldc, mr, nr, t);                 \
    } while (0)

/* OFFS 0: b is a packed panel (row k at b + k*NR); OFFS 1: boff holds the offsets of B's rows
 * (row k at b + boff[k], columns contiguous: a conv read straight from its padded input, see
 * gemm.h's cy_operand.row_off). Both compile from one template; OFFS is a compile-time
 * constant, so neither inner loop tests it. The per-step test of boff (the row-offset entry
 * point could not rule out NULL) and the parity test of the A prefetch had added ~5 uops to
 * the 20 of a step (12 FMAs, 6 broadcasts, 2 loads of B); without them the row-offset tiles
 * ran 6-15% faster at the median in an in-process A/B (same best times: the gain shows when
 * the core's other hardware thread is busy, as on a shared VM), bitwise the same. Unrolling
 * the k loop by hand (2 or 4 steps a trip) made GCC shuffle and spill accumulators: 1.3-2x
 * slower. */
TARGET INLINE void kernel_body(const int OFFS, int kc, const float *a, const float *b,
                               const ptrdiff_t *boff, float *c, ptrdiff_t ldc, int mr, int nr,
                               const cy_tile *t)
{
    if (!OFFS && mr == MR && nr <= 4) {
        narrow_edge(kc, a, b, c, ldc, nr, t);
        return;
    }
    if (nr == NR) ROWS_DISPATCH(2, 1);
    else if (nr > 8) ROWS_DISPATCH(2, 0);
    else if (nr == 8) ROWS_DISPATCH(1, 1);
    else ROWS_DISPATCH(1, 0);
}

TARGET static void kernel_avx2(int kc, const float *a, const float *b, float *c, ptrdiff_t ldc,
                               int mr, int nr, const cy_tile *t)
{
    kernel_body(0, kc, a, b, NULL, c, ldc, mr, nr, t);
}

TARGET static void kernel_offsets_avx2(int kc, const float *a, const float *b,
                                       const ptrdiff_t *boff, float *c, ptrdiff_t ldc, int mr,
                                       int nr, const cy_tile *t)
{
    kernel_body(1, kc, a, b, boff, c, ldc, mr, nr, t);
}

/* M == 1: one row of A against NR-column panels of B (gemm_avx512.c's gemv at 8 lanes): x
 * contiguous, k unrolled by 4 into 4 accumulators per 8 columns, so the loop is bound by
 * streaming B (one cache line per k and panel), not by FMA latency. P panels (1 or 2) run
 * side by side, each with the same accumulators and sum order as alone (which panels pair up
 * depends on the threads' pieces): two interleaved sequential streams per thread instead of
 * one keep more cache-line misses in flight, which is what bounds a weight matrix streamed
 * from L3 or memory. 1x4096 @ 4096x1000, prepacked, Zen 3: 1 thread 0.56 -> 0.40 ms,
 * 2 threads 0.26 -> 0.18 ms (medians, interleaved); the two extra accumulators spill (16 +
 * the broadcast of x), which costs nothing measurable at this bandwidth. */
TARGET INLINE void gemv_panels(const int P, int kc, const float *x, const float *b,
                               ptrdiff_t b_stride, float *c, int nc, const cy_tile *t)
{
    __m256 s0[2][4], s1[2][4];
#pragma GCC unroll 2
    for (int p = 0; p < P; p++)
        for (int u = 0; u < 4; u++) s0[p][u] = s1[p][u] = _mm256_setzero_ps();
    int k = 0;
    for (; k + 4 <= kc; k += 4) {
#pragma GCC unroll 4
        for (int u = 0; u < 4; u++) {
            const __m256 xa = _mm256_broadcast_ss(x + k + u);
#pragma GCC unroll 2
            for (int p = 0; p < P; p++) {
                const float *bk = b + p * b_stride + (k + u) * NR;
                _mm_prefetch((const char *)(bk + B_PREFETCH * 2), _MM_HINT_T0);
                s0[p][u] = _mm256_fmadd_ps(xa, _mm256_loadu_ps(bk), s0[p][u]);
                s1[p][u] = _mm256_fmadd_ps(xa, _mm256_loadu_ps(bk + 8), s1[p][u]);
            }
        }
    }
    for (; k < kc; k++) {
        const __m256 xa = _mm256_broadcast_ss(x + k);
#pragma GCC unroll 2
        for (int p = 0; p < P; p++) {
            const float *bk = b + p * b_stride + k * NR;
            s0[p][0] = _mm256_fmadd_ps(xa, _mm256_loadu_ps(bk), s0[p][0]);
            s1[p][0] = _mm256_fmadd_ps(xa, _mm256_loadu_ps(bk + 8), s1[p][0]);
        }
    }
    cy_tile tp = *t;
#pragma GCC unroll 2
    for (int p = 0; p < P; p++) {
        __m256 acc[MR][2];
        acc[0][0] = _mm256_add_ps(_mm256_add_ps(s0[p][0], s0[p][1]),
                                  _mm256_add_ps(s0[p][2], s0[p][3]));
        acc[0][1] = _mm256_add_ps(_mm256_add_ps(s1[p][0], s1[p][1]),
                                  _mm256_add_ps(s1[p][2], s1[p][3]));
        const int nr = nc - p * NR < NR ? nc - p * NR : NR;
        const __m256i m[2] = {lane_mask(nr), lane_mask(nr - 8)};
        tp.bias_col = t->bias_col ? t->bias_col + p * NR : NULL;
        tp.residual = t->residual ? t->residual + p * NR : NULL;
        if (nr == NR) store_tile_general(1, 2, 1, acc, c + p * NR, 0, 1, m, &tp);
        else store_tile_general(1, 2, 0, acc, c + p * NR, 0, 1, m, &tp);
    }
}

TARGET static void gemv_avx2(int kc, const float *x, const float *b, ptrdiff_t b_stride,
                             float *c, int nc, const cy_tile *t)
{
    cy_tile tj = *t;
    int j = 0;
    for (; j + NR < nc; j += 2 * NR) {
        tj.bias_col = t->bias_col ? t->bias_col + j : NULL;
        tj.residual = t->residual ? t->residual + j : NULL;
        gemv_panels(2, kc, x, b + (j / NR) * b_stride, b_stride, c + j, nc - j, &tj);
    }
    if (j < nc) {
        tj.bias_col = t->bias_col ? t->bias_col + j : NULL;
        tj.residual = t->residual ? t->residual + j : NULL;
        gemv_panels(1, kc, x, b + (j / NR) * b_stride, b_stride, c + j, nc - j, &tj);
    }
}

TARGET static void epilogue_avx2(int M, int N, float *c, ptrdiff_t ldc, const cy_epilogue *ep)
{
    for (int i = 0; i < M; i++) {
        float *ci = c + i * ldc;
        const float *ri = ep->residual ? ep->residual + i * ep->ldr : 0;
        const __m256 brow = _mm256_set1_ps(ep->bias_row ? ep->bias_row[i] : 0.0f);
        const float slope = ep->slope_row ? ep->slope_row[i] : ep->act_alpha;
        int j = 0;
        for (; j + 8 <= N; j += 8) {
            __m256 x = _mm256_add_ps(_mm256_loadu_ps(ci + j), brow);
            if (ep->bias_col) x = _mm256_add_ps(x, _mm256_loadu_ps(ep->bias_col + j));
            if (ri) x = _mm256_add_ps(x, _mm256_loadu_ps(ri + j));
            _mm256_storeu_ps(ci + j, cy_act256(x, ep->act, ep->act_alpha, ep->act_beta, slope));
        }
        if (j < N) {
            const __m256i m = lane_mask(N - j);
            __m256 x = _mm256_add_ps(_mm256_maskload_ps(ci + j, m), brow);
            if (ep->bias_col) x = _mm256_add_ps(x, _mm256_maskload_ps(ep->bias_col + j, m));
            if (ri) x = _mm256_add_ps(x, _mm256_maskload_ps(ri + j, m));
            _mm256_maskstore_ps(ci + j, m, cy_act256(x, ep->act, ep->act_alpha, ep->act_beta,
                                                     slope));
        }
    }
}

/* A strided B (a 1x1 conv's input) is read in place up to this M (cy_sgemm_ex). The 6-row
 * tile rereads each in-place row once per 6 rows of C, each read a line or two from another
 * page: it paid only for the fewest rows. Measured with the conv's output an intermediate
 * (AVX2 kernels on Zen 4, in-place vs packed, 1 / 2 threads): 128 -> 16 at 55x55 0.84 /
 * 0.84x; 144 -> 24 at 56x56 1.20 / 1.15, 256 -> 32 at 27x27 1.02 / 1.09, 128 -> 64 at 55x55
 * 1.11 / 1.02, 256 -> 128 at 28x28 1.26 / 1.26. */
#define B_IN_PLACE_MAX_M 16

/* MC x KC = 144 x 256 floats = 144 KiB of A; KC x NC = 256 x 4080 = 4 MiB of B (NC is cut to
 * gemm.c's B_BLOCK_FLOATS). */
const cy_gemm_isa cy_gemm_avx2 = {"avx2", MR, NR, 144, KC, 4080, kernel_avx2, epilogue_avx2,
                                   gemv_avx2, kernel_offsets_avx2, kernel_edge_avx2,
                                   B_IN_PLACE_MAX_M, NR - 1};
#endif
