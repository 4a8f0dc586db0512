/* Winograd F(m x m, 3x3) convolution, m = 4 or 2 (contract and math in winograd.h).
 *
 * Shapes: x (N, C, H, W), y (N, M, OH, OW). Tiles are the m x m output blocks, numbered over
 * (n, ty, tx) row-major: TH = ceil(OH/m), TW = ceil(OW/m), T = N*TH*TW. Tile (ty, tx) reads
 * the a x a input patch (a = m + 2) at rows m*ty - pt .., columns m*tx - pl ..; the a*a
 * positions xi of the transform (nxi: 36 or 16) each give one GEMM.
 *
 * Work goes chunk by chunk (nt tiles at a time, a multiple of the GEMM's NR) through three
 * phases that share two buffers:
 *
 *   input   V[xi] = B^T d B for every (channel, tile), written as packed-B panels
 *           V + xi*C*ntp + p*C*NR + c*NR + jj  (panel p holds tiles p*NR + jj)
 *   gemm    R[xi] (M x ntp) = U[xi] (M x C, prepacked) @ V[xi] (C x ntp), 36 GEMMs
 *   output  y = act(A^T R A + bias + z) for every (output channel, tile)
 *
 * A chunk's V and R (36 x (C + M) x nt floats) are sized to stay in L2. With many chunks
 * each thread takes whole chunks (no barrier at all); with few (one image of a 14x14
 * layer) the chunks run in turn and each phase is split across the threads (by channel,
 * by xi, by output channel). Every output value is computed by the same operations in the
 * same order either way, so results do not depend on the thread count.
 *
 * The transforms are written as loops over the NR tiles of a panel, so the compiler turns
 * them into vector code; target_clones builds them for AVX-512 and AVX2 as well as the
 * baseline ISA and the loader picks one (the package is never built with -march=native).
 */
#include "winograd.h"

#include <stdlib.h>
#include <string.h>
#include "clones.h"
#include "gemm_isa.h"
#include "pool.h"
#include "scratch.h"


#define NXI_MAX 36      /* positions of the 6x6 transform of F(4x4, 3x3); F(2x2): 16 */
#define NR_MAX 32       /* widest GEMM panel of any micro-kernel (gemm_avx512.c) */
#define L2_FLOATS 262144    /* 1 MiB: V + R of one chunk */

/* ---- weights: U = G g G^T ------------------------------------------------------------- */

static const double G4[6][3] = {
    {1.0 / 4, 0, 0},
    {-1.0 / 6, -1.0 / 6, -1.0 / 6},
    {-1.0 / 6, 1.0 / 6, -1.0 / 6},
    {1.0 / 24, 1.0 / 12, 1.0 / 6},
    {1.0 / 24, -1.0 / 12, 1.0 / 6},
    {0, 0, 1},
};

static const double G2[4][3] = {
    {1, 0, 0},
    {0.5, 0.5, 0.5},
    {0.5, -0.5, 0.5},
    {0, 0, 1},
};

/* transform side a = m + 2 and positions a*a, or 0 for an unsupported tile */
static int side_of(int m) { return m == 4 ? 6 : m == 2 ? 4 : 0; }

size_t cy_winograd_weights_size(int M, int C, int m)
{
    const int a = side_of(m);
    return (size_t)a * a * cy_sgemm_packed_a_size(M, C);
}

int cy_winograd_pack_weights(int M, int C, int m, const float *w, float *dst)
{
    const int side = side_of(m), nxi = side * side;
    if (!side) return CY_EINVAL;
    const double(*G)[3] = m == 4 ? G4 : G2;
    const size_t one = cy_sgemm_packed_a_size(M, C);
    /* one xi at a time: U_xi (M x C), then packed; the 9 products per value are cheap next
     * to holding all 36 planes (36x the weights) in a temporary */
    float *u = (float *)malloc(sizeof(float) * ((size_t)M * C > 0 ? (size_t)M * C : 1));
    if (!u) return CY_ENOMEM;
    for (int xi = 0; xi < nxi; xi++) {
        const int i = xi / side, k = xi % side;
        for (size_t mc = 0; mc < (size_t)M * C; mc++) {
            const float *g = w + mc * 9;
            double s = 0;
            for (int a = 0; a < 3; a++)
                for (int b = 0; b < 3; b++) s += G[i][a] * (double)g[a * 3 + b] * G[k][b];
            u[mc] = (float)s;
        }
        cy_sgemm_pack_a(M, C, u, C, 1, dst + xi * one);
    }
    free(u);
    return CY_OK;
}

/* ---- one call ------------------------------------------------------------------------- */

typedef struct {
    int N, C, H, W, M, OH, OW, pt, pl;
    int m, side, nxi;       /* output tile m x m, input patch side x side, side^2 GEMMs */
    int TH, TW, nr;
    const float *x, *u;
    float *y;
    const cy_epilogue *ep;
    size_t u_one;           /* floats per packed U_xi */
} conv_t;

typedef struct {
    long t0;                /* first tile */
    int nt, ntp;            /* tiles, and tiles rounded up to NR (the panels' width) */
    float *v, *r;           /* V: nxi x C x ntp, R: nxi x M x ntp */
} chunk_t;

static int imin(int a, int b) { return a < b ? a : b; }

/* Tile t's image, top output row and left output column. */
static void tile_pos(const conv_t *cv, long t, int *n, int *oh, int *ow)
{
    const long per_image = (long)cv->TH * cv->TW;
    const long q = t % per_image;
    *n = (int)(t / per_image);
    *oh = cv->m * (int)(q / cv->TW);
    *ow = cv->m * (int)(q % cv->TW);
}

/* A panel's tiles come in runs along one tile row: run_start gives the first tile's
 * position, run_next steps to the next run (same image, next tile row, or next image). */
typedef struct { int n, oh, ow, len; } run_t;

static void run_first(const conv_t *cv, long t0, int cnt, run_t *r)
{
    tile_pos(cv, t0, &r->n, &r->oh, &r->ow);
    r->len = imin(cnt, cv->TW - r->ow / cv->m);
}

static void run_next(const conv_t *cv, int left, run_t *r)
{
    r->ow = 0;
    r->oh += cv->m;
    if (r->oh >= cv->OH) {
        r->oh = 0;
        r->n++;
    }
    r->len = imin(left, cv->TW);
}

/* d[r*A + s][j0 + q] = patch (r, s) of tile q of the run, zero outside the image; A is the
 * patch side and S = A - 2 the step between tiles (compile-time constants once inlined) */
static inline void gather_run(const conv_t *cv, const float *xc, const run_t *run, int j0,
                              float d[NXI_MAX][NR_MAX], const int A, const int S)
{
    const int H = cv->H, W = cv->W, ih0 = run->oh - cv->pt, iw0 = run->ow - cv->pl;
    /* tiles q in [q_lo, q_hi) read columns inside the image */
    int q_lo = iw0 >= 0 ? 0 : (-iw0 + S - 1) / S;
    int q_hi = W - A - iw0 >= 0 ? (W - A - iw0) / S + 1 : 0;
    if (ih0 < 0 || ih0 + A > H) q_hi = 0;
    if (q_lo > run->len) q_lo = run->len;
    if (q_hi > run->len) q_hi = run->len;
    if (q_hi < q_lo) q_hi = q_lo;
    for (int r = 0; r < A && q_lo < q_hi; r++)
        for (int s = 0; s < A; s++) {
            const float *src = xc + (size_t)(ih0 + r) * W + iw0 + s;
            float *dst = d[r * A + s] + j0;
            for (int q = q_lo; q < q_hi; q++) dst[q] = src[S * q];
        }
    for (int q = 0; q < run->len; q++) {
        if (q == q_lo) q = q_hi;
        if (q >= run->len) break;
        for (int r = 0; r < A; r++) {
            const int ih = ih0 + r;
            for (int s = 0; s < A; s++) {
                const int iw = iw0 + S * q + s;
                d[r * A + s][j0 + q] = (ih >= 0 && ih < H && iw >= 0 && iw < W)
                                           ? xc[(size_t)ih * W + iw] : 0.0f;
            }
        }
    }
}

/* Gathers the patches of a panel's cnt tiles of channel c into d (zero from cnt to L). */
static inline void gather_panel(const conv_t *cv, int c, long t0, int cnt,
                                float d[NXI_MAX][NR_MAX], const int A, const int S, const int L)
{
    run_t run;
    run_first(cv, t0, cnt, &run);
    for (int jj = 0; jj < cnt; jj += run.len, run_next(cv, cnt - jj, &run))
        gather_run(cv, cv->x + ((size_t)run.n * cv->C + c) * cv->H * cv->W, &run, jj, d, A, S);
    for (int xi = 0; xi < A * A; xi++)
        for (int jj = cnt; jj < L; jj++) d[xi][jj] = 0.0f;
}

/* The transforms below run over L lanes, a compile-time count the compiler vectorises fully:
 * HALF_LANES when a panel holds that many tiles or fewer (a 13x13 to 16x16 plane has 16 tiles
 * of 4x4, half of a 32-wide AVX-512 panel), NR_MAX otherwise. The lanes past L are neither
 * computed nor stored: the GEMM of a chunk of <= HALF_LANES tiles reads only that many
 * columns of each panel row. Before, every panel paid all 32 lanes: the 64 -> 64 conv at
 * 13x13 spent more time in its transforms than in its GEMMs. */
#define HALF_LANES 16

static inline int lanes_for(int cnt) { return cnt <= HALF_LANES ? HALF_LANES : NR_MAX; }

/* V for channel c and the tiles jj < cnt of one panel (cnt <= nr; the panel's columns from
 * cnt to L are zero). vdst: the panel's row c of xi = 0; xi planes are xi_stride apart. */
static inline __attribute__((always_inline)) void input_lanes4(
    const conv_t *cv, int c, long t0, int cnt, float *vdst, size_t xi_stride, const int L)
{
    float d[NXI_MAX][NR_MAX], t[NXI_MAX][NR_MAX];
    const int nr = cv->nr < L ? cv->nr : L;
    gather_panel(cv, c, t0, cnt, d, 6, 4, L);

    /* Both passes run over all NR_MAX lanes, a compile-time count the compiler vectorises
     * fully, into local arrays; only the panel's nr columns are copied out. */
    /* columns: t = B^T d, for each column s of the patch */
    for (int s = 0; s < 6; s++)
        for (int jj = 0; jj < L; jj++) {
            const float d0 = d[s][jj], d1 = d[6 + s][jj], d2 = d[12 + s][jj],
                        d3 = d[18 + s][jj], d4 = d[24 + s][jj], d5 = d[30 + s][jj];
            t[s][jj] = 4.0f * d0 - 5.0f * d2 + d4;
            t[6 + s][jj] = -4.0f * (d1 + d2) + d3 + d4;
            t[12 + s][jj] = 4.0f * (d1 - d2) - d3 + d4;
            t[18 + s][jj] = 2.0f * (d3 - d1) - d2 + d4;
            t[24 + s][jj] = 2.0f * (d1 - d3) - d2 + d4;
            t[30 + s][jj] = 4.0f * d1 - 5.0f * d3 + d5;
        }
    /* rows: V = t B, for each row i (into d, free again) */
    for (int i = 0; i < 6; i++)
        for (int jj = 0; jj < L; jj++) {
            const float e0 = t[i * 6][jj], e1 = t[i * 6 + 1][jj], e2 = t[i * 6 + 2][jj],
                        e3 = t[i * 6 + 3][jj], e4 = t[i * 6 + 4][jj], e5 = t[i * 6 + 5][jj];
            d[i * 6][jj] = 4.0f * e0 - 5.0f * e2 + e4;
            d[i * 6 + 1][jj] = -4.0f * (e1 + e2) + e3 + e4;
            d[i * 6 + 2][jj] = 4.0f * (e1 - e2) - e3 + e4;
            d[i * 6 + 3][jj] = 2.0f * (e3 - e1) - e2 + e4;
            d[i * 6 + 4][jj] = 2.0f * (e1 - e3) - e2 + e4;
            d[i * 6 + 5][jj] = 4.0f * e1 - 5.0f * e3 + e5;
        }
    for (int xi = 0; xi < 36; xi++)
        memcpy(vdst + (size_t)xi * xi_stride, d[xi], (size_t)nr * sizeof(float));
}

/* F(2x2, 3x3): V = B^T d B with B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1] */
static inline __attribute__((always_inline)) void input_lanes2(
    const conv_t *cv, int c, long t0, int cnt, float *vdst, size_t xi_stride, const int L)
{
    float d[NXI_MAX][NR_MAX], t[16][NR_MAX];
    const int nr = cv->nr < L ? cv->nr : L;
    gather_panel(cv, c, t0, cnt, d, 4, 2, L);
    for (int s = 0; s < 4; s++)
        for (int jj = 0; jj < L; jj++) {
            const float d0 = d[s][jj], d1 = d[4 + s][jj], d2 = d[8 + s][jj], d3 = d[12 + s][jj];
            t[s][jj] = d0 - d2;
            t[4 + s][jj] = d1 + d2;
            t[8 + s][jj] = d2 - d1;
            t[12 + s][jj] = d1 - d3;
        }
    for (int i = 0; i < 4; i++)
        for (int jj = 0; jj < L; jj++) {
            const float e0 = t[i * 4][jj], e1 = t[i * 4 + 1][jj], e2 = t[i * 4 + 2][jj],
                        e3 = t[i * 4 + 3][jj];
            d[i * 4][jj] = e0 - e2;
            d[i * 4 + 1][jj] = e1 + e2;
            d[i * 4 + 2][jj] = e2 - e1;
            d[i * 4 + 3][jj] = e1 - e3;
        }
    for (int xi = 0; xi < 16; xi++)
        memcpy(vdst + (size_t)xi * xi_stride, d[xi], (size_t)nr * sizeof(float));
}

/* y = o + bias (+ z) for the run's tiles at rows/columns inside the output; the activation
 * follows (finish_run) over the finished row segments. T: the tile side (constant once
 * inlined), o[i*T + k][jj]: output (i, k) of tile jj. */
static inline void scatter_run(const conv_t *cv, int m, const run_t *run, int j0,
                               float o[16][NR_MAX], float bias, const int T)
{
    const int OH = cv->OH, OW = cv->OW;
    const size_t plane = ((size_t)run->n * cv->M + m) * OH * OW;
    float *y = cv->y + plane;
    const float *z = cv->ep && cv->ep->residual ? cv->ep->residual + plane : NULL;
    const int rows = imin(T, OH - run->oh);
    /* whole tiles q < full; the last tile of a row may stick out past OW */
    const int full = imin(run->len, (OW - run->ow) / T);
    for (int i = 0; i < rows; i++) {
        const size_t at = (size_t)(run->oh + i) * OW + run->ow;
        float *yr = y + at;
        if (z) {
            const float *zr = z + at;
            for (int q = 0; q < full; q++)
                for (int k = 0; k < T; k++)
                    yr[T * q + k] = o[i * T + k][j0 + q] + bias + zr[T * q + k];
        } else {
            for (int q = 0; q < full; q++)
                for (int k = 0; k < T; k++) yr[T * q + k] = o[i * T + k][j0 + q] + bias;
        }
        for (int q = full; q < run->len; q++)
            for (int k = 0; k < T && run->ow + T * q + k < OW; k++)
                yr[T * q + k] = o[i * T + k][j0 + q] + bias + (z ? z[at + T * q + k] : 0.0f);
    }
}

/* Writes the panel's outputs o (see scatter_run) to y with the epilogue. */
static inline void finish_panel(const conv_t *cv, int m, long t0, int cnt, float o[16][NR_MAX],
                                const int T)
{
    const cy_epilogue *ep = cv->ep;
    const float bias = ep && ep->bias_row ? ep->bias_row[m] : 0.0f;
    cy_epilogue act = {0};
    if (ep) {
        act.act = ep->act;
        act.act_alpha = ep->act_alpha;
        act.act_beta = ep->act_beta;
        act.slope_row = ep->slope_row ? ep->slope_row + m : NULL;
    }
    const cy_gemm_isa *isa = cy_gemm_isa_get();
    run_t run;
    run_first(cv, t0, cnt, &run);
    for (int jj = 0; jj < cnt; jj += run.len, run_next(cv, cnt - jj, &run)) {
        scatter_run(cv, m, &run, jj, o, bias, T);
        if (act.act == CY_ACT_NONE) continue;
        /* the run's rows of y: (rows) x (width) at (oh, ow) of plane (n, m) */
        const int width = imin(T * run.len, cv->OW - run.ow), rows = imin(T, cv->OH - run.oh);
        float *y0 = cv->y + (((size_t)run.n * cv->M + m) * cv->OH + run.oh) * cv->OW + run.ow;
        for (int i = 0; i < rows; i++) isa->epilogue(1, width, y0 + (size_t)i * cv->OW, 0, &act);
    }
}

/* y for output channel m and the tiles jj < cnt of one panel. rsrc: R row m at the panel's
 * first tile for xi = 0; xi planes are xi_stride apart. F(4x4): Y = A^T R A with
 * A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1]. */
static inline __attribute__((always_inline)) void output_lanes4(
    const conv_t *cv, int m, long t0, int cnt, const float *rsrc, size_t xi_stride, const int L)
{
    float t[24][NR_MAX], o[16][NR_MAX];
    const int nr = cv->nr < L ? cv->nr : L;
    /* columns: t = A^T R (lanes past nr hold garbage that is never stored) */
    for (int s = 0; s < 6; s++)
        for (int jj = 0; jj < nr; jj++) {
            const float m0 = rsrc[(size_t)s * xi_stride + jj],
                        m1 = rsrc[(size_t)(6 + s) * xi_stride + jj],
                        m2 = rsrc[(size_t)(12 + s) * xi_stride + jj],
                        m3 = rsrc[(size_t)(18 + s) * xi_stride + jj],
                        m4 = rsrc[(size_t)(24 + s) * xi_stride + jj],
                        m5 = rsrc[(size_t)(30 + s) * xi_stride + jj];
            const float a = m1 + m2, b = m1 - m2, c = m3 + m4, d = m3 - m4;
            t[s][jj] = m0 + a + c;
            t[6 + s][jj] = b + 2.0f * d;
            t[12 + s][jj] = a + 4.0f * c;
            t[18 + s][jj] = b + 8.0f * d + m5;
        }
    /* rows: o = t A */
    for (int i = 0; i < 4; i++)
        for (int jj = 0; jj < nr; jj++) {
            const float e0 = t[i * 6][jj], e1 = t[i * 6 + 1][jj], e2 = t[i * 6 + 2][jj],
                        e3 = t[i * 6 + 3][jj], e4 = t[i * 6 + 4][jj], e5 = t[i * 6 + 5][jj];
            const float a = e1 + e2, b = e1 - e2, c = e3 + e4, d = e3 - e4;
            o[i * 4][jj] = e0 + a + c;
            o[i * 4 + 1][jj] = b + 2.0f * d;
            o[i * 4 + 2][jj] = a + 4.0f * c;
            o[i * 4 + 3][jj] = b + 8.0f * d + e5;
        }
    finish_panel(cv, m, t0, cnt, o, 4);
}

/* F(2x2): Y = A^T R A with A^T = [1 1 1 0; 0 1 -1 -1]. */
static inline __attribute__((always_inline)) void output_lanes2(
    const conv_t *cv, int m, long t0, int cnt, const float *rsrc, size_t xi_stride, const int L)
{
    float t[8][NR_MAX], o[16][NR_MAX];
    const int nr = cv->nr < L ? cv->nr : L;
    for (int s = 0; s < 4; s++)
        for (int jj = 0; jj < nr; jj++) {
            const float m0 = rsrc[(size_t)s * xi_stride + jj],
                        m1 = rsrc[(size_t)(4 + s) * xi_stride + jj],
                        m2 = rsrc[(size_t)(8 + s) * xi_stride + jj],
                        m3 = rsrc[(size_t)(12 + s) * xi_stride + jj];
            t[s][jj] = m0 + m1 + m2;
            t[4 + s][jj] = m1 - m2 - m3;
        }
    for (int i = 0; i < 2; i++)
        for (int jj = 0; jj < nr; jj++) {
            const float e0 = t[i * 4][jj], e1 = t[i * 4 + 1][jj], e2 = t[i * 4 + 2][jj],
                        e3 = t[i * 4 + 3][jj];
            o[i * 2][jj] = e0 + e1 + e2;
            o[i * 2 + 1][jj] = e1 - e2 - e3;
        }
    finish_panel(cv, m, t0, cnt, o, 2);
}

CY_CLONES static void input_panel4(const conv_t *cv, int c, long t0, int cnt, float *vdst,
                                   size_t xi_stride)
{
    if (lanes_for(cnt) == HALF_LANES) input_lanes4(cv, c, t0, cnt, vdst, xi_stride, HALF_LANES);
    else input_lanes4(cv, c, t0, cnt, vdst, xi_stride, NR_MAX);
}

CY_CLONES static void input_panel2(const conv_t *cv, int c, long t0, int cnt, float *vdst,
                                   size_t xi_stride)
{
    if (lanes_for(cnt) == HALF_LANES) input_lanes2(cv, c, t0, cnt, vdst, xi_stride, HALF_LANES);
    else input_lanes2(cv, c, t0, cnt, vdst, xi_stride, NR_MAX);
}

CY_CLONES static void output_panel4(const conv_t *cv, int m, long t0, int cnt,
                                    const float *rsrc, size_t xi_stride)
{
    if (lanes_for(cnt) == HALF_LANES) output_lanes4(cv, m, t0, cnt, rsrc, xi_stride, HALF_LANES);
    else output_lanes4(cv, m, t0, cnt, rsrc, xi_stride, NR_MAX);
}

CY_CLONES static void output_panel2(const conv_t *cv, int m, long t0, int cnt,
                                    const float *rsrc, size_t xi_stride)
{
    if (lanes_for(cnt) == HALF_LANES) output_lanes2(cv, m, t0, cnt, rsrc, xi_stride, HALF_LANES);
    else output_lanes2(cv, m, t0, cnt, rsrc, xi_stride, NR_MAX);
}

/* The three phases over part of a chunk: channels [c0, c1), positions [x0, x1), output
 * channels [m0, m1). */
static void input_range(const conv_t *cv, const chunk_t *ch, int c0, int c1)
{
    const size_t xi_stride = (size_t)cv->C * ch->ntp;
    for (int p = 0; p * cv->nr < ch->nt; p++) {
        const int cnt = imin(cv->nr, ch->nt - p * cv->nr);
        float *panel = ch->v + (size_t)p * cv->C * cv->nr;
        for (int c = c0; c < c1; c++)
            (cv->m == 4 ? input_panel4 : input_panel2)(cv, c, ch->t0 + (long)p * cv->nr, cnt,
                                                       panel + (size_t)c * cv->nr, xi_stride);
    }
}

static int gemm_range(const conv_t *cv, const chunk_t *ch, int x0, int x1)
{
    for (int xi = x0; xi < x1; xi++) {
        cy_operand a = {cv->u + xi * cv->u_one, 0, 0, 1};
        cy_operand b = {ch->v + (size_t)xi * cv->C * ch->ntp, 0, 0, 1};
        int e = cy_sgemm_ex(cv->M, ch->nt, cv->C, 1.0f, a, b, 0,
                            ch->r + (size_t)xi * cv->M * ch->ntp, ch->ntp, NULL, 1);
        if (e) return e;
    }
    return CY_OK;
}

static void output_range(const conv_t *cv, const chunk_t *ch, int m0, int m1)
{
    const size_t xi_stride = (size_t)cv->M * ch->ntp;
    for (int m = m0; m < m1; m++)
        for (int p = 0; p * cv->nr < ch->nt; p++)
            (cv->m == 4 ? output_panel4 : output_panel2)(
                cv, m, ch->t0 + (long)p * cv->nr, imin(cv->nr, ch->nt - p * cv->nr),
                ch->r + (size_t)m * ch->ntp + (size_t)p * cv->nr, xi_stride);
}

static size_t chunk_floats(const conv_t *cv, int ntp)
{
    return (size_t)cv->nxi * (cv->C + cv->M) * ntp;
}

static void chunk_at(const conv_t *cv, long t0, int nt, float *buf, chunk_t *ch)
{
    ch->t0 = t0;
    ch->nt = nt;
    ch->ntp = (nt + cv->nr - 1) / cv->nr * cv->nr;
    ch->v = buf;
    ch->r = buf + (size_t)cv->nxi * cv->C * ch->ntp;
}

/* ---- whole chunks per thread ------------------------------------------------------------ */

typedef struct {
    const conv_t *cv;
    long T;
    int per_chunk;
    int err;
} chunks_job;

static void chunk_task(void *ctx, long i, int tid)
{
    chunks_job *j = (chunks_job *)ctx;
    const conv_t *cv = j->cv;
    (void)tid;
    const long t0 = i * j->per_chunk;
    const int nt = (int)(j->T - t0 < j->per_chunk ? j->T - t0 : j->per_chunk);
    chunk_t ch;
    float *buf = cy_thread_scratch(CY_SCRATCH_WINOGRAD,
                                   chunk_floats(cv, (j->per_chunk + cv->nr - 1) / cv->nr * cv->nr));
    if (!buf) {
        j->err = CY_ENOMEM;
        return;
    }
    chunk_at(cv, t0, nt, buf, &ch);
    input_range(cv, &ch, 0, cv->C);
    int e = gemm_range(cv, &ch, 0, cv->nxi);
    if (e) {
        j->err = e;
        return;
    }
    output_range(cv, &ch, 0, cv->M);
}

/* ---- one chunk, phases split across threads ------------------------------------------- */

typedef struct {
    const conv_t *cv;
    const chunk_t *ch;
    int pieces;             /* of the channel ranges */
    int err;
} phase_job;

static void input_task(void *ctx, long i, int tid)
{
    phase_job *j = (phase_job *)ctx;
    (void)tid;
    const int C = j->cv->C;
    input_range(j->cv, j->ch, (int)(C * i / j->pieces), (int)(C * (i + 1) / j->pieces));
}

static void gemm_task(void *ctx, long i, int tid)
{
    phase_job *j = (phase_job *)ctx;
    (void)tid;
    int e = gemm_range(j->cv, j->ch, (int)i, (int)i + 1);
    if (e) j->err = e;
}

static void output_task(void *ctx, long i, int tid)
{
    phase_job *j = (phase_job *)ctx;
    (void)tid;
    const int M = j->cv->M;
    output_range(j->cv, j->ch, (int)(M * i / j->pieces), (int)(M * (i + 1) / j->pieces));
}

int cy_winograd_conv3x3(int N, int C, int H, int W, int M, int OH, int OW, int pt, int pl,
                        int m, const float *x, const float *u, float *y,
                        const cy_epilogue *ep, int n_threads)
{
    const int side = side_of(m);
    if (!side) return CY_EINVAL;
    if (N <= 0 || M <= 0 || OH <= 0 || OW <= 0) return CY_OK;
    conv_t cv = {N, C, H, W, M, OH, OW, pt, pl, m, side, side * side,
                 (OH + m - 1) / m, (OW + m - 1) / m,
                 cy_gemm_nr(), x, u, y, ep, cy_sgemm_packed_a_size(M, C)};
    if (cv.nr > NR_MAX) return CY_EINVAL;
    const long T = (long)N * cv.TH * cv.TW;
    const int nth = n_threads < 1 ? 1 : n_threads;

    /* tiles per chunk: V + R within L2, a multiple of NR; with threads, small enough that
     * each gets about 3 chunks, which lets them run whole chunks independently */
    long per = (long)(L2_FLOATS / ((size_t)cv.nxi * (C + M))) / cv.nr * cv.nr;
    if (per < cv.nr) per = cv.nr;
    if (per > 8L * cv.nr) per = 8L * cv.nr;
    if (nth > 1)
        while (per > cv.nr && (T + per - 1) / per < 3L * nth) per -= cv.nr;
    const long chunks = (T + per - 1) / per;

    if (nth == 1 || chunks >= 3L * nth) {
        chunks_job j = {&cv, T, (int)per, CY_OK};
        if (nth == 1)
            for (long i = 0; i < chunks && j.err == CY_OK; i++) chunk_task(&j, i, 0);
        else
            cy_parallel_for(chunks, nth, chunk_task, &j);
        return j.err;
    }

    const int per_p = (int)((per + cv.nr - 1) / cv.nr * cv.nr);
    float *buf = cy_thread_scratch(CY_SCRATCH_WINOGRAD, chunk_floats(&cv, per_p));
    if (!buf) return CY_ENOMEM;
    for (long t0 = 0; t0 < T; t0 += per) {
        chunk_t ch;
        chunk_at(&cv, t0, (int)(T - t0 < per ? T - t0 : per), buf, &ch);
        phase_job j = {&cv, &ch, 4 * nth, CY_OK};
        if (j.pieces > C) j.pieces = C;
        cy_parallel_for(j.pieces, nth, input_task, &j);
        cy_parallel_for(cv.nxi, nth, gemm_task, &j);
        if (j.err) return j.err;
        j.pieces = 4 * nth < M ? 4 * nth : M;
        cy_parallel_for(j.pieces, nth, output_task, &j);
    }
    return CY_OK;
}
