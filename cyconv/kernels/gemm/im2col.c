/* Implicit B operands of convolutions, packed straight into GEMM panels (see im2col.h):
 * im2col, and the pre-activated input of a 1x1 conv.
 *
 * Per row k of the block (one (c, kh, kw) tap) and per NR-wide panel, the panel's pixels are
 * walked in runs along one output row: a run reads one input row, contiguous when sw == 1,
 * and the parts of it that fall in the padding are zero. The row's valid output range
 * [lo, hi) (taps inside the image horizontally) is computed once per tap.
 */
#include "im2col.h"

#include <string.h>
#include "clones.h"


static int floordiv(int a, int b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

/* Output columns ow in [lo, hi) read input column ow*s + off inside [0, W). */
static void valid_cols(int off, int s, int W, int OW, int *lo, int *hi)
{
    int a = -floordiv(off, s);                 /* ceil(-off / s) */
    int b = floordiv(W - 1 - off, s) + 1;
    if (a < 0) a = 0;
    if (b > OW) b = OW;
    if (b < a) b = a;
    *lo = a;
    *hi = b;
}

/* The packer over a phase-split padded image (g->phases): every run of a panel row is a
 * contiguous, in-bounds copy. Runs are as short as the output rows (14 floats on a 14x14
 * plane, 7 on a 7x7 one), so each is copied as whole 16-float chunks (one vector move,
 * reading into the buffer's slack) into a staging row, and the staging row into the panel:
 * per-run memcpy calls and scalar strided loops had made packing cost 3 cycles a float. */
static inline __attribute__((always_inline)) void
pack_phases(const cy_im2col *g, int k0, int kc, int j0, int nc, int NR, float *dst)
{
    const int KK = g->KH * g->KW, OW = g->OW, W = g->W;
    const int panels = (nc + NR - 1) / NR;
    const int first_oh = (g->p0 + j0) / OW, first_ow = (g->p0 + j0) % OW;
    float stage[64 + 16];
    for (int k = k0; k < k0 + kc; k++) {
        const int c = k / KK, kh = (k % KK) / g->KW, kw = k % g->KW;
        const float *xc = g->x + (size_t)(c * g->phases + (kw * g->dw) % g->phases) * g->H * W
                          + (kw * g->dw) / g->phases + (size_t)kh * g->dh * W;
        int oh = first_oh, ow = first_ow;
        for (int q = 0; q < panels; q++) {
            float *d = dst + ((size_t)q * kc + (k - k0)) * NR;
            const int cols = nc - q * NR < NR ? nc - q * NR : NR;
            for (int j = 0; j < cols;) {
                const int len = OW - ow < cols - j ? OW - ow : cols - j;
                const float *src = xc + (size_t)oh * g->sh * W + ow;
                for (int o = 0; o < len; o += 16)
                    memcpy(stage + j + o, src + o, 16 * sizeof(float));   /* one vector move */
                j += len;
                ow += len;
                if (ow == OW) {
                    ow = 0;
                    oh++;
                }
            }
            /* full panels with a fixed count (a few vector moves), per ISA panel width */
            if (cols == 32 && NR == 32) {
                memcpy(d, stage, 32 * sizeof(float));
            } else if (cols == 16 && NR == 16) {
                memcpy(d, stage, 16 * sizeof(float));
            } else {
                for (int t = 0; t < cols; t++) d[t] = stage[t];
                for (int t = cols; t < NR; t++) d[t] = 0.0f;
            }
        }
    }
}

/* d[o] = xr[o * sw] for o < n, sw 1 or 2; n a constant after inlining (fixed-count moves) */
static inline __attribute__((always_inline)) void
copy_strided(float *d, const float *xr, int sw, const int n)
{
    if (sw == 1)
        for (int o = 0; o < n; o++) d[o] = xr[o];
    else
        for (int o = 0; o < n; o++) d[o] = xr[2 * o];
}

/* The packer over the image itself: runs clipped to the image, zeros for the padding. */
static inline __attribute__((always_inline)) void
pack_direct(const cy_im2col *g, int k0, int kc, int j0, int nc, int NR, float *dst)
{
    const int KK = g->KH * g->KW, OW = g->OW, sw = g->sw;
    const int panels = (nc + NR - 1) / NR;
    /* output position of the block's first pixel; panels follow each other */
    const int first_oh = (g->p0 + j0) / OW, first_ow = (g->p0 + j0) % OW;
    for (int k = k0; k < k0 + kc; k++) {
        const int c = k / KK, kh = (k % KK) / g->KW, kw = k % g->KW;
        const float *xc = g->x + (size_t)c * g->H * g->W;
        const int off = kw * g->dw - g->pl;      /* input column = ow*sw + off */
        int lo, hi;
        valid_cols(off, sw, g->W, OW, &lo, &hi);
        int panel_oh = first_oh, panel_ow = first_ow;
        for (int q = 0; q < panels; q++) {
            float *d = dst + ((size_t)q * kc + (k - k0)) * NR;
            const int p_begin = g->p0 + j0 + q * NR;
            const int p_end = g->p0 + j0 + (nc < (q + 1) * NR ? nc : (q + 1) * NR);
            int p = p_begin, oh = panel_oh, ow = panel_ow;
            panel_ow += NR;
            while (panel_ow >= OW) {
                panel_ow -= OW;
                panel_oh++;
            }
            /* the common case: a whole panel (32 pixels with AVX-512, 16 with AVX2) inside
             * one output row and inside the image, copied with a fixed count the compiler
             * turns into a few vector moves */
            const int ih0 = oh * g->sh - g->pt + kh * g->dh;
            if ((NR == 32 || NR == 16) && p_end - p_begin == NR && ow + NR <= OW && ow >= lo &&
                ow + NR <= hi && ih0 >= 0 && ih0 < g->H && (sw == 1 || sw == 2)) {
                const float *xr = xc + (size_t)ih0 * g->W + off + (ptrdiff_t)ow * sw;
                if (NR == 32) copy_strided(d, xr, sw, 32);
                else copy_strided(d, xr, sw, 16);
                continue;
            }
            while (p < p_end) {
                /* run: pixels p .. p + len - 1 on output row oh, columns ow .. */
                const int len = OW - ow < p_end - p ? OW - ow : p_end - p;
                float *dr = d + (p - p_begin) - ow;    /* dr[o] is the slot of column o */
                const int ih = oh * g->sh - g->pt + kh * g->dh;
                const int end = ow + len;
                if (ih < 0 || ih >= g->H) {
                    memset(dr + ow, 0, (size_t)len * sizeof(float));
                } else {
                    const float *xr = xc + (size_t)ih * g->W + off;
                    const int a = lo > ow ? lo : ow, b = hi < end ? hi : end;
                    for (int o = ow; o < a && o < end; o++) dr[o] = 0.0f;
                    if (sw == 1) {
                        if (b > a) memcpy(dr + a, xr + a, (size_t)(b - a) * sizeof(float));
                    } else if (sw == 2) {
                        for (int o = a; o < b; o++) dr[o] = xr[2 * (ptrdiff_t)o];
                    } else if (sw == 4) {       /* AlexNet's 11x11 stride-4 first layer */
                        for (int o = a; o < b; o++) dr[o] = xr[4 * (ptrdiff_t)o];
                    } else {
                        for (int o = a; o < b; o++) dr[o] = xr[(ptrdiff_t)o * sw];
                    }
                    for (int o = b > ow ? b : ow; o < end; o++) dr[o] = 0.0f;
                }
                p += len;
                oh++;
                ow = 0;
            }
            for (int j = p_end - p_begin; j < NR; j++) d[j] = 0.0f;
        }
    }
}

CY_CLONES void cy_im2col_pack_b(const void *ctx, int k0, int kc, int j0, int nc, int NR,
                             float *dst)
{
    const cy_im2col *g = (const cy_im2col *)ctx;
    if (g->phases && NR <= 64)
        pack_phases(g, k0, kc, j0, nc, NR, dst);
    else
        pack_direct(g, k0, kc, j0, nc, NR, dst);
}

/* Stride 2 across: both column phases of a row in one pass. The row goes into a zero-padded
 * staging row t (t[u] = x column u - pl, zero outside the image), whose even and odd floats
 * are the two phase rows: a loop the compiler vectorizes, where a gather per phase (xr[2j])
 * ran ~2.5 cycles a float, 10% of ResNet-50's 3x3 s2 conv at 56x56 (perf). In-process A/B,
 * 2 threads, one layer: 128 -> 128 3x3 s2 at 56x56 0.93x, 64 -> 64 at 112x112 0.91x,
 * MobileNetV2's 3 -> 32 3x3 s2 at 224x224 (row offsets, phased) 0.83x, 7x7 s2 0.99x. */
#define SPLIT2_STAGE 1024
static inline __attribute__((always_inline)) void
split_columns2(const float *xr, int W, int pl, int Wq, float *d0, float *d1)
{
    float t[SPLIT2_STAGE];
    const int n = 2 * Wq, copy = W < n - pl ? W : n - pl;
    for (int u = 0; u < pl; u++) t[u] = 0.0f;
    memcpy(t + pl, xr, (size_t)copy * sizeof(float));
    for (int u = pl + copy; u < n; u++) t[u] = 0.0f;
    for (int j = 0; j < Wq; j++) {
        d0[j] = t[2 * j];
        d1[j] = t[2 * j + 1];
    }
}

/* Phase p of row xr (x's row, column 0 at xr[0]) into d: d[j] = x column j*sw + p - pl,
 * zero outside [0, W). */
static inline __attribute__((always_inline)) void
split_phase(const float *xr, int W, int pl, int sw, int p, int Wq, float *d)
{
    int ja = 0, jb = Wq;                /* columns j in [ja, jb) fall inside the image */
    while (ja < Wq && ja * sw + p - pl < 0) ja++;
    while (jb > ja && (jb - 1) * sw + p - pl >= W) jb--;
    for (int j = 0; j < ja; j++) d[j] = 0.0f;
    for (int j = ja; j < jb; j++) d[j] = xr[(ptrdiff_t)j * sw + p - pl];
    for (int j = jb; j < Wq; j++) d[j] = 0.0f;
}

CY_CLONES void cy_im2col_phase_split_rows(const float *x, int H, int W, int pt, int pl,
                                          int sh, int sw, int Hq, int Wq, float *dst,
                                          int u0, int u1)
{
    const size_t phase_plane = (size_t)Hq * Wq;
    for (int u = u0; u < u1; u++) {
        const int a = u / Hq, r = u - a * Hq;
        /* phase p of this row: dst + (a*sw + p) * phase_plane + r*Wq */
        float *d = dst + (size_t)a * sw * phase_plane + (size_t)r * Wq;
        const int ih = r * sh + a - pt;
        if (ih < 0 || ih >= H) {
            for (int p = 0; p < sw; p++) memset(d + p * phase_plane, 0, Wq * sizeof(float));
        } else if (sw == 2 && 2 * Wq <= SPLIT2_STAGE && pl < 2 * Wq) {
            split_columns2(x + (size_t)ih * W, W, pl, Wq, d, d + phase_plane);
        } else {
            for (int p = 0; p < sw; p++)
                split_phase(x + (size_t)ih * W, W, pl, sw, p, Wq, d + p * phase_plane);
        }
    }
}

CY_CLONES void cy_preact_pack_b(const void *ctx, int k0, int kc, int j0, int nc, int NR,
                             float *dst)
{
    const cy_preact *g = (const cy_preact *)ctx;
    const int panels = (nc + NR - 1) / NR;
    for (int k = k0; k < k0 + kc; k++) {
        const float s = g->scale[k], t = g->shift[k];
        const float *row = g->x + (ptrdiff_t)k * g->ld + g->p0 + j0;
        for (int q = 0; q < panels; q++) {
            float *d = dst + ((size_t)q * kc + (k - k0)) * NR;
            const int cols = nc - q * NR < NR ? nc - q * NR : NR;
            const float *r = row + (ptrdiff_t)q * NR;
            for (int j = 0; j < cols; j++) {
                const float v = s * r[j] + t;
                d[j] = v > 0.0f ? v : 0.0f;
            }
            for (int j = cols; j < NR; j++) d[j] = 0.0f;
        }
    }
}
