/* Depthwise 3x3 (stride 1 or 2, dilation 1) on one plane through a zero-padded copy, with the
 * vector kernel of the widest ISA the CPU has (conv_dw_avx512.h, conv_dw_avx2.h), chosen at
 * run time; never compiled for the host with -march=native.
 *
 *   cy_dw3x3_pad_size(OH, OW, s)   floats of scratch the padded plane needs
 *   cy_dw3x3_plane(...)            returns 0 when no vector kernel applies (caller falls back)
 *
 * Padded plane: rows ih = oh*s - pt + i for the Hp = (OH-1)*s + 3 rows the outputs read,
 * columns iw = ow*s - pl + j over ldx = OW*s + 34 floats (the last vector's over-read
 * included); entries outside the input are 0. Copying costs one pass over the input plane
 * (in L1/L2) and leaves the kernels without a single bounds test.
 */
#ifndef CYCONV_CONV_DW_H
#define CYCONV_CONV_DW_H
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include "conv_dw_avx512.h"
#include "conv_dw_avx2.h"
#define CY_DW_X86 1
#else
#define CY_DW_X86 0
#endif

static inline ptrdiff_t cy_dw3x3_ldx(int OW, int s) { return (ptrdiff_t)OW * s + 34; }

static inline size_t cy_dw3x3_pad_size(int OH, int OW, int s)
{
    return (size_t)((OH - 1) * s + 3) * (size_t)cy_dw3x3_ldx(OW, s);
}

/* 2: AVX-512, 1: AVX2+FMA, 0: none. CYCONV_GEMM_ISA=avx2|generic caps it as it caps the
 * GEMM (tests run every variant that way). */
static inline int cy_dw3x3_isa(void)
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

/* fresh: the scratch holds something else; otherwise it holds an earlier plane of the same
 * geometry, whose zero border is still in place and only the interior is copied again. */
static inline int cy_dw3x3_plane(const float *x, int H, int W, const float *w, float bias,
                                 float *y, int OH, int OW, int s, int pt, int pl, int relu,
                                 float *scratch, int fresh)
{
    const int isa = cy_dw3x3_isa();
    if (!isa || (s != 1 && s != 2)) return 0;
    const ptrdiff_t ldx = cy_dw3x3_ldx(OW, s);
    const int Hp = (OH - 1) * s + 3;
    if (fresh) memset(scratch, 0, (size_t)Hp * (size_t)ldx * sizeof(float));
    /* row r = ih + pt, columns [pl, pl + n): x[ih, 0:n] (the rest stays 0) */
    const int lo = pl < ldx ? pl : (int)ldx;
    const int n = W < ldx - lo ? W : (int)ldx - lo;
    const int ih0 = pt > 0 ? 0 : -pt, ih1 = H < Hp - pt ? H : Hp - pt;
    if (n > 0)
        for (int ih = ih0; ih < ih1; ih++)
            memcpy(scratch + (ptrdiff_t)(ih + pt) * ldx + lo, x + (ptrdiff_t)ih * W,
                   (size_t)n * sizeof(float));
#if CY_DW_X86
    if (isa == 2) cy_dw3x3_plane_avx512(scratch, ldx, w, bias, y, OH, OW, s, relu);
    else cy_dw3x3_plane_avx2(scratch, ldx, w, bias, y, OH, OW, s, relu);
    return 1;
#else
    (void)x; (void)w; (void)bias; (void)y; (void)relu;
    return 0;
#endif
}
#endif
