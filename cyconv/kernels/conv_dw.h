/* Depthwise 3x3 and 5x5 (strides 1 and 2, dilation 1) on one plane, with the vector kernel of
 * the widest ISA the CPU has (conv_dw_avx512.h, conv_dw_avx2.h), chosen at run time; never
 * compiled for the host with -march=native.
 *
 *   cy_dw_supported(K, sh, sw)   whether a vector kernel applies (else the caller falls back)
 *   cy_dw_plane(...)        the plane through it
 *
 * The kernels read the plane in place (padding by load masks) and apply
 * clamp(v, lo, hi) when clamp is set: ReLU is (0, +inf), Clip (min, max).
 */
#ifndef CYCONV_CONV_DW_H
#define CYCONV_CONV_DW_H
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include "conv_dw_avx512.h"
#include "conv_dw_avx2.h"
#include "conv_dw_c8_avx2.h"
#define CY_DW_X86 1
#else
#define CY_DW_X86 0
#endif

/* Output rows per register tile: all of a plane of <= 8 rows, else the largest of 8..5
 * that divides OH (no row computed twice), else 8 (the last tile overlaps the one before). */
static inline int cy_dw_rows_per_tile(int OH)
{
    if (OH <= 8) return OH;
    for (int r = 8; r >= 5; r--)
        if (OH % r == 0) return r;
    return 8;
}

/* 2: AVX-512, 1: AVX2+FMA, 0: none. CYCONV_GEMM_ISA=avx2|generic caps it as it caps the
 * GEMM (tests run every variant that way). */
static inline int cy_dw_isa(void)
{
#if CY_DW_X86
    static int isa = -1;
    if (isa < 0) {
        __builtin_cpu_init();
        int best = __builtin_cpu_supports("avx512f") ? 2
            : (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) ? 1 : 0;
        const char *cap = getenv("CYCONV_GEMM_ISA");
        if (cap && !strcmp(cap, "avx2") && best > 1) best = 1;
        if (cap && !strcmp(cap, "generic")) best = 0;
        isa = best;
    }
    return isa;
#else
    return 0;
#endif
}

/* Whether a vector kernel computes a KxK depthwise conv of strides (sh, sw), dilation 1, on
 * this CPU: 3x3 and 5x5 (MobileNetV3, PaddleOCR), strides (1, 1), (2, 2) and (2, 1)
 * (PaddleOCR halves only the height), on AVX2 and AVX-512. */
static inline int cy_dw_supported(int K, int sh, int sw)
{
    if (!((sh == 1 && sw == 1) || (sh == 2 && sw == 2) || (sh == 2 && sw == 1)))
        return 0;
    return (K == 3 || K == 5) && cy_dw_isa() >= 1;
}

/* y = the plane's conv when cy_dw_supported(K, sh, sw) (returns 1), else untouched (0) */
static inline int cy_dw_plane(const float *x, int H, int W, const float *w, float bias,
                              float *y, int OH, int OW, int K, int sh, int sw, int pt, int pl,
                              int clamp, float lo, float hi)
{
    if (!cy_dw_supported(K, sh, sw) || OH < 1 || OW < 1) return 0;
#if CY_DW_X86
    const int R = cy_dw_rows_per_tile(OH);
    if (cy_dw_isa() == 2)
        cy_dw_plane_avx512(x, H, W, w, bias, y, OH, OW, sh, sw, K, pt, pl, R, clamp, lo, hi);
    else
        cy_dw_plane_avx2(x, H, W, w, bias, y, OH, OW, sh, sw, K, pt, pl, R, clamp, lo, hi);
    return 1;
#else
    (void)x; (void)H; (void)W; (void)w; (void)bias; (void)y; (void)pt; (void)pl;
    (void)clamp; (void)lo; (void)hi;
    return 0;
#endif
}

/* Whether cy_dw_c8 computes a 3x3 depthwise conv (dilation 1) of strides (sh, sw) to an
 * OH x OW plane: stride 1 only (at stride 2 the plane kernel was as fast, having 4x less
 * input to transpose per output), planes small enough for its stack buffers, on AVX2 and
 * AVX-512 machines alike (a 16-lane plane kernel wastes even more lanes on such planes; not
 * timed there, the results are the same floats). */
static inline int cy_dw_c8_supported(int K, int sh, int sw, int OH, int OW)
{
#if CY_DW_X86
    return K == 3 && sh == 1 && sw == 1 && OH >= 1 && OW >= 1 &&
           cy_dw_isa() >= 1 && cy_dw_c8_fits(OH, OW);
#else
    (void)K; (void)sh; (void)sw; (void)OH; (void)OW;
    return 0;
#endif
}

/* nc <= 8 planes at once (conv_dw_c8_avx2.h) when cy_dw_c8_supported */
static inline void cy_dw_c8(const float *x, ptrdiff_t xs, int nc, int H, int W, const float *w,
                            const float *bias, float *y, ptrdiff_t ys, int OH, int OW, int pt,
                            int pl, int clamp, float lo, float hi)
{
#if CY_DW_X86
    cy_dw_c8_avx2(x, xs, nc, H, W, w, bias, y, ys, OH, OW, pt, pl, clamp, lo, hi);
#else
    (void)x; (void)xs; (void)nc; (void)H; (void)W; (void)w; (void)bias; (void)y; (void)ys;
    (void)OH; (void)OW; (void)pt; (void)pl; (void)clamp; (void)lo; (void)hi;
#endif
}
#endif
