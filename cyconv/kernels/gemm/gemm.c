/* GEMM driver: ISA choice, cache blocking, thread partition (see gemm.h for the contract).
 *
 * Loop nest per thread (BLIS), for its tile range C[m0:m1, n0:n1]:
 *
 *   for jc in n0..n1 step NC            B block  KC x NC  (L2, B_BLOCK_FLOATS)
 *     for pc in 0..K step KC            pack B[pc:pc+kc, jc:jc+nc] unless prepacked
 *       for ic in m0..m1 step MC        A block  MC x KC  (L2), packed unless prepacked
 *         for ir in 0..mc step MR       A micro-panel MR x KC stays in L1
 *           for jr in 0..nc step NR     micro-kernel: MR x NR tile of C in registers
 *
 * A is the broadcast operand (MR = 12 scalars per k) and B the vector one (NR = 32 floats),
 * so, as in BLIS with the roles of A and B swapped, the small A micro-panel stays in L1 and
 * B streams from L2; C's rows are then written left to right.
 *
 * The first K block overwrites C (unless accumulate), the others add to it, and the last one
 * applies the epilogue (bias, residual, activation) to the tile while it is still in registers.
 *
 * Threads: C is cut into a tm x tn grid of whole MR-row tiles and NR- (or NR/2-) column tiles
 * and each thread runs the nest above on its own part with private packing buffers. Nothing depends on how C is cut, so
 * results are bitwise identical for any thread count.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "gemm_isa.h"
#include "pack.h"
#include "pool.h"
#include "scratch.h"

/* ---- ISA selection, once ------------------------------------------------------------- */

static const cy_gemm_isa *isa_by_name(const char *name)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (!strcmp(name, "avx512f"))
        return __builtin_cpu_supports("avx512f") ? &cy_gemm_avx512 : NULL;
    if (!strcmp(name, "avx2"))
        return (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
                   ? &cy_gemm_avx2 : NULL;
#endif
    if (!strcmp(name, "generic")) return &cy_gemm_generic;
    return NULL;
}

static const cy_gemm_isa *volatile current_isa;

const cy_gemm_isa *cy_gemm_isa_get(void)
{
    const cy_gemm_isa *isa = current_isa;
    if (isa) return isa;
    /* CYCONV_GEMM_ISA=generic|avx2|avx512f caps the choice (for testing every kernel);
     * otherwise the widest the CPU and OS support. Racing first calls compute the same. */
    const char *env = getenv("CYCONV_GEMM_ISA");
    if (env && *env) isa = isa_by_name(env);
    if (!isa) isa = isa_by_name("avx512f");
    if (!isa) isa = isa_by_name("avx2");
    if (!isa) isa = &cy_gemm_generic;
    current_isa = isa;
    return isa;
}

int cy_gemm_set_isa(const char *name)
{
    const cy_gemm_isa *isa = isa_by_name(name);
    if (!isa) return CY_EINVAL;
    current_isa = isa;
    return CY_OK;
}

const char *cy_gemm_isa_name(void) { return cy_gemm_isa_get()->name; }
int cy_gemm_mr(void) { return cy_gemm_isa_get()->mr; }
int cy_gemm_nr(void) { return cy_gemm_isa_get()->nr; }

/* ---- prepacking ------------------------------------------------------------------------ */

static size_t round_up(size_t x, size_t m) { return (x + m - 1) / m * m; }
static int min_i(int a, int b) { return a < b ? a : b; }

size_t cy_sgemm_packed_a_size(int M, int K)
{
    return round_up((size_t)M, (size_t)cy_gemm_mr()) * (size_t)K;
}

size_t cy_sgemm_packed_b_size(int K, int N)
{
    return round_up((size_t)N, (size_t)cy_gemm_nr()) * (size_t)K;
}

/* Packed A in the order the GEMM reads it: KC-deep blocks, and in block pc (at pc * Mpad,
 * Mpad = M rounded up to MR) the MR-row panels one after another, [M / MR][kc][MR]. A block's
 * panels, which the tiles walk down for each K block, are then one sequential stream. With
 * whole-K panels instead (slice pc of panel p at p*K*MR + pc*MR) each 6 KiB slice started a
 * new stream 18 KiB-110 KiB past the last, and the weights of a batch-1 7x7 layer (used by
 * few column panels, so streamed from L3 or memory) arrived too slowly for the kernel.
 * KC is the ISA's (isa->kc); a single panel (M <= MR) reads the same either way, so it also
 * serves the whole-K blocking of small M. Each ISA has its own MR, which is what a caller
 * checks to know whether its packed copy is still valid. */
void cy_sgemm_pack_a(int M, int K, const float *A, ptrdiff_t rsa, ptrdiff_t csa, float *dst)
{
    const int MR = cy_gemm_mr(), KC = cy_gemm_isa_get()->kc;
    const size_t Mpad = round_up((size_t)M, (size_t)MR);
    for (int pc = 0; pc < K; pc += KC)
        cy_pack_a_block(M, min_i(KC, K - pc), A + pc * csa, rsa, csa, MR, dst + pc * Mpad);
}

void cy_sgemm_pack_b(int K, int N, const float *B, ptrdiff_t rsb, ptrdiff_t csb, float *dst)
{
    cy_pack_b_block(K, N, B, rsb, csb, cy_gemm_nr(), dst);
}

/* Rows [k0, k0+kc) x columns [j0, j0+nc) of a B operand that is neither prepacked nor read
 * in place, into NR-wide panels: through its packer (im2col) or from its strides. */
static void pack_b_part(const cy_operand *B, int k0, int kc, int j0, int nc, int NR,
                        float *dst)
{
    if (B->pack_b)
        B->pack_b(B->pack_ctx, k0, kc, j0, nc, NR, dst);
    else
        cy_pack_b_block(kc, nc, B->data + k0 * B->rs + j0 * B->cs, B->rs, B->cs, NR, dst);
}

/* ---- one thread's share --------------------------------------------------------------- */

/* Grid output (cy_epilogue.grid_wp): the tile whose column 0 is product column j starts at
 * grid position q = grid_q0 + j; returns where its first kept column goes in a row of C
 * (output (q / wp, q % wp), or the next row's start when q % wp is a dropped column) and
 * sets bit c of *keep for each of its nr columns that exists (q + c) % wp < ow. */
static ptrdiff_t grid_place(const cy_epilogue *ep, ptrdiff_t j, int nr, unsigned *keep)
{
    const ptrdiff_t q = ep->grid_q0 + j, wp = ep->grid_wp, ow = ep->grid_ow;
    const ptrdiff_t row = q / wp;
    ptrdiff_t x = q - row * wp;
    const ptrdiff_t at = row * ow + (x < ow ? x : ow);
    uint64_t bits = 0;
    for (int c = 0; c < nr;) {          /* runs of kept, then dropped, columns */
        if (x < ow) {
            const ptrdiff_t run = ow - x < nr - c ? ow - x : nr - c;
            bits |= ((UINT64_C(1) << run) - 1) << c;
            c += (int)run;
            x += run;
        } else {
            c += (int)(wp - x);
            x = 0;
        }
    }
    *keep = (unsigned)bits;
    return at;
}

/* Floats of packed B per KC x NC block: 512 KiB, a quarter of a 2 MiB L2, leaving room for
 * the A block (MC x KC) and C's rows. Measured on 1x1-conv shapes (K = 64..576, N = 3136),
 * one thread: 1 MiB 4-6% faster than the 4.5 MiB block of KC x NC = 384 x 3072, 512 KiB 6-10%,
 * 384 KiB the same. */
#define B_BLOCK_FLOATS (128 * 1024)

static int gemm_block(const cy_gemm_isa *isa, int M_total, int m0, int m1, int n0, int n1,
                      int K,
                      float alpha, const cy_operand *A, const cy_operand *B, int accumulate,
                      float *C, ptrdiff_t ldc, const cy_epilogue *ep)
{
    const int MR = isa->mr, NR = isa->nr;
    /* One or two row panels of A (M <= 2 MR: a fully connected layer on a few images) are
     * bound by streaming B, each element of which is used once or twice whatever the
     * blocking: take all of K in one block, so each micro-kernel call runs down one
     * contiguous K x NR panel of a prepacked B (the hardware prefetcher's best case) and C is
     * written once instead of once per KC block; NC shrinks to keep a packing buffer of the
     * usual KC x NC. Decided on the whole M, never on a thread's share, so the sums do not
     * depend on the thread count. Two row panels run panel by panel (below), the second
     * rereading the first's B panel from L2: 8x4096 @ 4096x1000 prepacked, Zen 3, was
     * 1.98 -> 1.72 ms on 1 thread, 1.04 -> 0.87 on 2, against K blocks of 256 whose B block
     * (512 KiB, all of Zen 3's L2) came back from L3 for the 2-row tile. */
    const int small_m = M_total <= 2 * MR;
    /* A prepacked A of two panels is in KC blocks (cy_sgemm_pack_a): its whole-K panels are
     * gathered from them (M x K floats, a copy per piece) */
    const int a_regather = small_m && A->packed && M_total > MR && K > isa->kc;
    const int grid = ep && ep->grid_wp > 0;     /* C is a grid output (gemm.h) */
    const int gemv = M_total == 1 && isa->gemv != NULL && !B->row_off && !grid;
    const int MC = isa->mc, KC = small_m ? (K > 0 ? K : 1) : isa->kc;
    int NC = isa->nc;
    if (small_m && K > isa->kc) {
        NC = (int)((long)isa->kc * isa->nc / K) / NR * NR;
        if (NC < NR) NC = NR;
    }
    /* The tiles run row by row across the packed B block (below), so that block is reread
     * from L2 once per MR rows: NC shrinks to keep it at B_BLOCK_FLOATS. */
    if (!small_m) {
        const int kc0 = K < KC ? (K > 0 ? K : 1) : KC;
        int nc_l2 = (int)(B_BLOCK_FLOATS / kc0) / NR * NR;
        if (nc_l2 < NR) nc_l2 = NR;
        if (NC > nc_l2) NC = nc_l2;
    }
    const int kc_max = K < KC ? K : KC;
    /* rows of a prepacked A (M rounded up to MR): block pc starts at pc * a_rows */
    const size_t a_rows = round_up((size_t)M_total, (size_t)MR);
    /* the gemv kernel reads x in place when its elements are contiguous (an activation row) */
    const int x_in_place = gemv && !A->packed && A->cs == 1;
    const size_t a_need = gemv ? (x_in_place ? 0 : (size_t)kc_max)
        : A->packed && !a_regather ? 0
        : (size_t)min_i(MC, (int)round_up(m1 - m0, MR)) * kc_max;
    const size_t b_need = B->packed || B->row_off ? 0
        : (size_t)min_i(NC, (int)round_up(n1 - n0, NR)) * kc_max;
    float *abuf = NULL, *bbuf = NULL;
    if (a_need + b_need) {
        abuf = cy_thread_scratch(CY_SCRATCH_GEMM, a_need + b_need);
        if (!abuf) return CY_ENOMEM;
        bbuf = abuf + a_need;
    }

    cy_tile t;
    t.alpha = alpha;
    t.act = ep ? ep->act : CY_ACT_NONE;
    t.act_alpha = ep ? ep->act_alpha : 0.0f;
    t.act_beta = ep ? ep->act_beta : 0.0f;
    const float *bias_row = ep ? ep->bias_row : NULL, *bias_col = ep ? ep->bias_col : NULL;
    const float *slope_row = ep ? ep->slope_row : NULL, *residual = ep ? ep->residual : NULL;
    t.ldr = ep ? ep->ldr : 0;
    t.grid = grid;
    t.keep = 0;

    for (int jc = n0; jc < n1; jc += NC) {
        const int nc = min_i(NC, n1 - jc);
        /* K == 0 still runs one (empty) block so C gets beta*C and the epilogue. */
        for (int pc = 0; pc < K || pc == 0; pc += KC) {
            const int kc = min_i(KC, K - pc);
            const float *bp;
            ptrdiff_t b_stride;
            if (B->row_off) {
                bp = B->data + jc;          /* panel jr: bp + jr, row k: + row_off[pc + k] */
                b_stride = 0;
            } else if (B->packed) {
                bp = B->data + (size_t)(jc / NR) * K * NR + (size_t)pc * NR;
                b_stride = (ptrdiff_t)K * NR;
            } else {
                pack_b_part(B, pc, kc, jc, nc, NR, bbuf);
                bp = bbuf;
                b_stride = (ptrdiff_t)kc * NR;
            }
            t.accumulate = accumulate || pc > 0;
            t.last = pc + kc >= K;

            for (int ic = m0; ic < m1; ic += MC) {
                const int mc = min_i(MC, m1 - ic);
                const float *ap;
                ptrdiff_t a_stride;
                if (gemv) {
                    /* one row: x contiguous (the gemv kernel's A operand), read in place or
                     * gathered from the strided matrix or from row 0 of a prepacked MR-row
                     * panel (a copy per piece: 4096 floats cost ~1 us of a 190 us layer) */
                    const float *x = abuf;
                    if (x_in_place)
                        x = A->data + ic * A->rs + pc;
                    else if (A->packed)
                        cy_pack_a_block(1, kc, A->data + (size_t)pc * MR, 1, MR, 1, abuf);
                    else
                        cy_pack_a_block(1, kc, A->data + ic * A->rs + pc * A->cs, A->rs,
                                        A->cs, 1, abuf);
                    t.bias_col = bias_col ? bias_col + jc : NULL;
                    t.bias_row = bias_row ? bias_row + ic : NULL;
                    t.slope_row = slope_row ? slope_row + ic : NULL;
                    t.residual = residual ? residual + (ptrdiff_t)ic * t.ldr + jc : NULL;
                    isa->gemv(kc, x, bp, b_stride, C + (ptrdiff_t)ic * ldc + jc, nc, &t);
                    continue;
                }
                if (a_regather) {
                    for (int p = 0; p * MR < mc; p++)
                        for (int k0 = 0; k0 < K; k0 += isa->kc) {
                            const int kb = min_i(isa->kc, K - k0);
                            memcpy(abuf + (size_t)p * kc * MR + (size_t)k0 * MR,
                                   A->data + (size_t)k0 * a_rows + (size_t)(ic / MR + p) * kb * MR,
                                   (size_t)kb * MR * sizeof(float));
                        }
                    ap = abuf;
                    a_stride = (ptrdiff_t)kc * MR;
                } else if (A->packed) {
                    /* block pc, then panel ic / MR of it (cy_sgemm_pack_a's layout) */
                    ap = A->data + (size_t)pc * a_rows + (size_t)(ic / MR) * kc * MR;
                    a_stride = (ptrdiff_t)kc * MR;
                } else {
                    cy_pack_a_block(mc, kc, A->data + ic * A->rs + pc * A->cs, A->rs, A->cs,
                                    MR, abuf);
                    ap = abuf;
                    a_stride = (ptrdiff_t)kc * MR;
                }
                /* Row tiles outer, column panels inner: each tile row of C (and of the
                 * residual) is written (read) left to right, MR sequential streams the
                 * hardware prefetchers follow, while the packed B block streams from L2.
                 * The other order (one B panel in L1, tiles walking down MC rows) touched
                 * 2 lines in each of MC = 240 rows per panel, too many streams: C and the
                 * residual then came from L3 or memory at full latency. Small M takes that
                 * other order: its two row tiles share each whole-K B panel while it is in
                 * L2, where the row order reread all of the NC columns' panels from L3. */
                const int n_ir = (mc + MR - 1) / MR, n_jr = (nc + NR - 1) / NR;
                /* A packed B's last panel of 1-4 columns (N = 49: a 7x7 plane) runs for
                 * the full-height tiles together (isa->kernel_edge, several row tiles'
                 * FMA chains in flight), when the row order reaches the last full tile of
                 * this block; each element is computed as the tile-by-tile kernel does. */
                const int edge_nr = nc - (n_jr - 1) * NR, full_tiles = mc / MR;
                const int edge_batch = isa->kernel_edge && !B->row_off && !small_m && !grid &&
                                       edge_nr <= 4 && full_tiles >= 2;
                for (int q = 0; q < n_ir * n_jr; q++) {
                    const int ir = (small_m ? q % n_ir : q / n_jr) * MR;
                    const int jr = (small_m ? q / n_ir : q % n_jr) * NR;
                    if (edge_batch && jr == (n_jr - 1) * NR && ir / MR < full_tiles) {
                        if (ir / MR == full_tiles - 1) {
                            t.bias_row = bias_row ? bias_row + ic : NULL;
                            t.slope_row = slope_row ? slope_row + ic : NULL;
                            t.bias_col = bias_col ? bias_col + jc + jr : NULL;
                            t.residual = residual ? residual + (ptrdiff_t)ic * t.ldr + jc + jr
                                                  : NULL;
                            isa->kernel_edge(kc, ap, a_stride, full_tiles,
                                             bp + (jr / NR) * b_stride,
                                             C + (ptrdiff_t)ic * ldc + jc + jr, ldc, edge_nr,
                                             &t);
                        }
                        continue;
                    }
                    t.bias_row = bias_row ? bias_row + ic + ir : NULL;
                    t.slope_row = slope_row ? slope_row + ic + ir : NULL;
                    const float *a_panel = ap + (ir / MR) * a_stride;
                    /* where the tile's column 0 goes in C's rows (and the residual's) */
                    ptrdiff_t col = jc + jr;
                    if (grid) col = grid_place(ep, col, NR, &t.keep);
                    t.bias_col = bias_col ? bias_col + jc + jr : NULL;
                    t.residual = residual ? residual + (ptrdiff_t)(ic + ir) * t.ldr + col
                                          : NULL;
                    if (B->row_off)
                        isa->kernel_offsets(kc, a_panel, bp + jr, B->row_off + pc,
                                            C + (ptrdiff_t)(ic + ir) * ldc + col, ldc,
                                            min_i(MR, mc - ir), min_i(NR, nc - jr), &t);
                    else
                        isa->kernel(kc, a_panel, bp + (jr / NR) * b_stride,
                                    C + (ptrdiff_t)(ic + ir) * ldc + col, ldc,
                                    min_i(MR, mc - ir), min_i(NR, nc - jr), &t);
                }
            }
        }
    }
    return CY_OK;
}

/* Pieces of work per thread in a parallel GEMM (see cy_sgemm_ex). */
#define PIECES_PER_THREAD 4

/* ---- thread partition ----------------------------------------------------------------- */

/* Cost, per unit of K, of one piece of rows x cols of C: its multiply-adds plus what it
 * packs or streams. Packing moves a float per element where the kernel does 32 FMAs per
 * cycle, and every piece packs its own rows of A and columns of B, so splitting M repeats
 * the packing of B and splitting N that of A. A prepacked operand is not packed again but
 * is still streamed by every piece that uses it (weights, from L3 or memory): cut into 8
 * column pieces of 16, a 7x7 layer (N = 49) read its 9 MiB of weights 4 times over. Weighted
 * lightly: splitting M instead makes every piece im2col-pack all of B, which measured
 * slower for that layer than reading its weights twice. */
static double piece_cost(double rows, double cols, int a_packed, int b_packed)
{
    return rows * cols + (a_packed ? 2.0 : 16.0) * rows + (b_packed ? 2.0 : 16.0) * cols;
}

/* The grid tm x tn of whole MR-row x cu-column tiles, tm*tn == n_pieces, with the cheapest
 * piece; returns that piece's cost. */
static double partition(int M, int N, const cy_gemm_isa *isa, int cu, int n_pieces,
                        int a_packed, int b_packed, int *tm_out, int *tn_out)
{
    const long mt = (M + isa->mr - 1) / isa->mr, nt = (N + cu - 1) / cu;
    double best = 0;
    *tm_out = 1;
    *tn_out = 1;
    for (int tm = 1; tm <= n_pieces; tm++) {
        if (n_pieces % tm) continue;
        const int tn = n_pieces / tm;
        if (tm > mt || tn > nt) continue;
        const double rows = (double)((mt + tm - 1) / tm) * isa->mr;
        const double cols = (double)((nt + tn - 1) / tn) * cu;
        const double cost = piece_cost(rows, cols, a_packed, b_packed);
        if (best == 0 || cost < best) {
            best = cost;
            *tm_out = tm;
            *tn_out = tn;
        }
    }
    return best;
}

/* One call's work for cy_parallel_for: piece w is cell (w / pn, w % pn) of the pm x pn grid. */
typedef struct {
    const cy_gemm_isa *isa;
    int M, N, K, pm, pn, accumulate;
    long mt, nt;
    int cu;                     /* columns per tile of the partition */
    float alpha;
    const cy_operand *A, *B;
    float *C;
    ptrdiff_t ldc;
    const cy_epilogue *ep;
    int err;
} gemm_job;

static void gemm_piece(void *ctx, long w, int tid)
{
    gemm_job *g = (gemm_job *)ctx;
    (void)tid;
    const int im = (int)(w / g->pn), in = (int)(w % g->pn);
    const int m0 = (int)(im * g->mt / g->pm) * g->isa->mr;
    const int m1 = min_i((int)((im + 1) * g->mt / g->pm) * g->isa->mr, g->M);
    const int n0 = (int)(in * g->nt / g->pn) * g->cu;
    const int n1 = min_i((int)((in + 1) * g->nt / g->pn) * g->cu, g->N);
    if (m0 >= m1 || n0 >= n1) return;
    int e = gemm_block(g->isa, g->M, m0, m1, n0, n1, g->K, g->alpha, g->A, g->B,
                       g->accumulate, g->C, g->ldc, g->ep);
    if (e) g->err = e;          /* any failing piece's code; all failures are the same kind */
}

int cy_gemm_has_row_offsets(void) { return cy_gemm_isa_get()->kernel_offsets != NULL; }
int cy_gemm_has_grid_store(void) { return cy_gemm_isa_get()->grid_store; }

/* Page size assumed by the over-read test: a page is at least this, so two addresses in one
 * such block lie in one page and are both readable when one is. */
#define PAGE_BYTES 4096

int cy_gemm_reads_in_page(const float *last, size_t past)
{
    const uintptr_t a = (uintptr_t)last;
    const size_t beyond = (past + (size_t)cy_gemm_isa_get()->b_overread) * sizeof(float);
    return a / PAGE_BYTES == (a + beyond) / PAGE_BYTES;
}

/* Whether ep's grid output (if any) can be stored by this ISA and is well formed. */
static int grid_valid(const cy_gemm_isa *isa, const cy_epilogue *ep)
{
    if (!ep || ep->grid_wp <= 0) return 1;
    return isa->grid_store && !ep->bias_col && ep->grid_ow > 0 &&
           ep->grid_ow <= ep->grid_wp && ep->grid_q0 >= 0;
}

/* ---- B packed once for all threads ------------------------------------------------------ */

/* Most floats of B packed once and shared (4 MiB): beyond that it no longer stays in L2/L3
 * for the pieces that read it, and N is then large enough to be split anyway. */
#define SHARED_B_MAX_FLOATS (1L << 20)

/* Packing cost per float, in the units of piece_cost (see there). */
#define PACK_COST 16.0

typedef struct {
    const cy_operand *B;
    int K, N, NR;
    float *dst;
} pack_job;

/* Piece q: whole-K panel q of B, at dst + q*K*NR (cy_sgemm_pack_b's layout). */
static void pack_panel(void *ctx, long q, int tid)
{
    const pack_job *p = (const pack_job *)ctx;
    (void)tid;
    const int j0 = (int)q * p->NR;
    pack_b_part(p->B, 0, p->K, j0, min_i(p->NR, p->N - j0), p->NR,
                p->dst + (size_t)q * p->K * p->NR);
}

/* ---- B read in place ------------------------------------------------------------------- */

/* B as row offsets for kernel_offsets, read where it lies instead of packed, when its rows are
 * contiguous (cs == 1: a 1x1 conv's input is K channel planes of rs floats) and M is small
 * enough for that to pay (cy_gemm_isa.b_in_place_max_m); otherwise B itself. Packing copies
 * every float of B once more per call, about the cost of 8 rows of multiply-adds (perf, 128 ->
 * 16 1x1 conv at 55x55: packing 32% of the time, the kernel 61%). The offsets live in the
 * calling thread's scratch, read by the workers during this call only. A kernel that reads
 * past a row's last column (b_overread) must not leave the page of B's last element: what
 * follows B is not known to be mapped (the rows before it are B's own). The sums are the
 * packed kernel's, in the same order: results are bitwise the same either way. */
static cy_operand b_in_place(const cy_gemm_isa *isa, int M, int N, int K, cy_operand B)
{
    if (!isa->kernel_offsets || M > isa->b_in_place_max_m || B.packed || B.pack_b ||
        B.row_off || B.cs != 1 || B.rs < N || K == 0)
        return B;
    /* one row keeps the GEMV kernel (and its order of sums, which a prepacked B also gets) */
    if (M == 1 && isa->gemv) return B;
    if (!cy_gemm_reads_in_page(B.data + (ptrdiff_t)(K - 1) * B.rs + N - 1, 0)) return B;
    ptrdiff_t *off = (ptrdiff_t *)cy_thread_scratch(
        CY_SCRATCH_ROW_OFF, (size_t)K * sizeof(ptrdiff_t) / sizeof(float));
    if (!off) return B;         /* no memory for K offsets: pack as usual */
    for (int k = 0; k < K; k++) off[k] = (ptrdiff_t)k * B.rs;
    B.row_off = off;
    return B;
}

int cy_sgemm_ex(int M, int N, int K, float alpha, cy_operand A, cy_operand B, int accumulate,
                float *C, ptrdiff_t ldc, const cy_epilogue *ep, int n_threads)
{
    if (M < 0 || N < 0 || K < 0) return CY_EINVAL;
    if (B.row_off && (!cy_gemm_has_row_offsets() || K == 0)) return CY_EINVAL;
    const cy_gemm_isa *isa = cy_gemm_isa_get();
    if (!grid_valid(isa, ep)) return CY_EINVAL;
    if (M == 0 || N == 0) return CY_OK;
    B = b_in_place(isa, M, N, K, B);
    /* Columns are dealt in half panels where B is packed per piece: the 16-column tile runs
     * at full speed, and a 14x14 layer's 196 columns split 112 / 84 instead of 128 / 68.
     * A prepacked B keeps whole panels (its layout starts one at every NR columns). */
    const int cu = !B.packed && isa->nr >= 32 ? isa->nr / 2 : isa->nr;
    const long mt = (M + isa->mr - 1) / isa->mr, nt = (N + cu - 1) / cu;
    int nth = n_threads < 1 ? 1 : n_threads;
    /* below ~0.4 MFLOP the fork/join costs more than it saves (workers spin between ops, so
     * a fork costs a few us; see GRAIN in conv.pyx) */
    if ((double)M * N * K < 2e5) nth = 1;
    if (nth > mt * nt) nth = (int)(mt * nt);
    if (nth > 1) {
        /* More pieces than threads, handed out dynamically: a thread whose core is busy with
         * another process takes fewer pieces instead of making the whole call wait for it.
         * Worth it while the extra packing costs little (pieces x cost within 10%). Pieces
         * are whole tiles, so the arithmetic of every C element is the same however they
         * are dealt. */
        int tm, tn, pm, pn;
        /* B read in place by its row offsets is not packed either: splitting M then only
         * rereads the padded image (L2-sized), where splitting N made each thread stream all
         * the weights (ResNet's 512-channel 7x7 layers: 2 threads ran no faster than 1). */
        const int b_in_place = B.packed || B.row_off != NULL;
        double one = partition(M, N, isa, cu, nth, A.packed, b_in_place, &tm, &tn);
        /* When the pieces split M, each would pack the same columns of B: pack all of B
         * once instead, the threads sharing the panels (one more fork), then split as for a
         * prepacked B. At batch 1 every thread had packed the whole input of MobileNetV2's
         * and ResNet-50's 1x1 convs. Measured in the same process against ORT, 2 threads:
         * MobileNetV2 b1 1.46 -> 1.25x, ResNet-50 b1 1.17 -> 1.15x. Sharing also when the
         * grid split N (switching it to M, to halve the weights each thread streams) was
         * no better at batch 1 and 6% slower on batch-8 MobileNetV2. */
        cy_operand shared = B;
        int cu_run = cu;
        if (tm > 1 && !b_in_place && K > 0 &&
            (long)K * (long)round_up((size_t)N, (size_t)isa->nr) <= SHARED_B_MAX_FLOATS) {
            int sm, sn;
            const double grid = partition(M, N, isa, isa->nr, nth, A.packed, 1, &sm, &sn);
            if (grid + PACK_COST * N / nth < 0.95 * one) {
                float *buf = cy_thread_scratch(CY_SCRATCH_SHARED_B,
                                               (size_t)K * round_up((size_t)N, (size_t)isa->nr));
                if (buf) {
                    pack_job pj = {&B, K, N, isa->nr, buf};
                    cy_parallel_for((N + isa->nr - 1) / isa->nr, nth, pack_panel, &pj);
                    shared.data = buf;
                    shared.packed = 1;
                    shared.pack_b = NULL;
                    cu_run = isa->nr;
                    one = grid;
                    tm = sm;
                    tn = sn;
                }
            }
        }
        const long nt_run = (N + cu_run - 1) / cu_run;
        const double many = partition(M, N, isa, cu_run, nth * PIECES_PER_THREAD, A.packed,
                                      b_in_place || shared.packed, &pm, &pn);
        if (pm * pn < nth * PIECES_PER_THREAD || many * PIECES_PER_THREAD > 1.1 * one) {
            pm = tm;
            pn = tn;
        }
        gemm_job g = {isa, M, N, K, pm, pn, accumulate, mt, nt_run, cu_run, alpha, &A,
                      &shared, C, ldc, ep, CY_OK};
        cy_parallel_for((long)pm * pn, nth, gemm_piece, &g);
        return g.err;
    }
    return gemm_block(isa, M, 0, M, 0, N, K, alpha, &A, &B, accumulate, C, ldc, ep);
}

int cy_sgemm_rows(int M, int m0, int m1, int N, int K, float alpha, cy_operand A,
                  cy_operand B, int accumulate, float *C, ptrdiff_t ldc,
                  const cy_epilogue *ep)
{
    const cy_gemm_isa *isa = cy_gemm_isa_get();
    if (M < 0 || N < 0 || K < 0 || m0 < 0 || m1 > M || m0 % isa->mr) return CY_EINVAL;
    if (B.row_off && (!cy_gemm_has_row_offsets() || K == 0)) return CY_EINVAL;
    if (!grid_valid(isa, ep)) return CY_EINVAL;
    if (m0 >= m1 || N == 0) return CY_OK;
    return gemm_block(isa, M, m0, m1, 0, N, K, alpha, &A, &B, accumulate, C, ldc, ep);
}

void cy_epilogue_apply(int M, int N, float *C, ptrdiff_t ldc, const cy_epilogue *ep)
{
    if (M > 0 && N > 0 && ep) cy_gemm_isa_get()->epilogue(M, N, C, ldc, ep);
}

int cy_sgemm(int M, int N, int K, float alpha, const float *A, ptrdiff_t rsa, ptrdiff_t csa,
             const float *B, ptrdiff_t rsb, ptrdiff_t csb, float beta, float *C, ptrdiff_t ldc,
             const cy_epilogue *ep, int n_threads)
{
    if (beta != 0.0f && beta != 1.0f) return CY_EINVAL;
    cy_operand a = {A, rsa, csa, 0}, b = {B, rsb, csb, 0};
    return cy_sgemm_ex(M, N, K, alpha, a, b, beta == 1.0f, C, ldc, ep, n_threads);
}
