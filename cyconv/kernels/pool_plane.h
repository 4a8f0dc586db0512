/* Pooling driver: ISA table choice and the rows of one NCHW plane (see pool_isa.h).
 *
 * Shape legend: x[H, W] one input plane, y[OH, OW] its output plane. Output row oh reads input
 * rows ih = oh*sh - ph + i*dh (i < kh); the rows outside [0, H) are padding and are skipped,
 * so the vertical pass runs over the contiguous range of valid i. Its result lands at
 * tmp[pw : pw + W]; the rest of tmp holds the identity (-inf for max, 0 for sums), so the
 * horizontal pass reads output ow's taps at tmp[ow*sw + j*dw] with no bounds tests.
 */
#ifndef CYCONV_POOL_PLANE_H
#define CYCONV_POOL_PLANE_H

#include <string.h>
#include "pool_generic.h"
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include "pool_avx2.h"
#include "pool_avx512.h"
#define CY_POOL_X86 1
#endif

/* The table called ``name`` ("avx512f", "avx2", "generic") if this CPU runs it, else NULL. */
static const cy_pool_isa *cy_pool_isa_by_name(const char *name)
{
#ifdef CY_POOL_X86
    __builtin_cpu_init();
    if (!strcmp(name, "avx512f"))
        return __builtin_cpu_supports("avx512f") ? &cy_pool_avx512 : NULL;
    if (!strcmp(name, "avx2"))
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
               ? &cy_pool_avx2 : NULL;
#endif
    if (!strcmp(name, "generic"))
        return &cy_pool_generic;
    return NULL;
}

static const cy_pool_isa *cy_pool_isa_best(void)
{
    const cy_pool_isa *isa = cy_pool_isa_by_name("avx512f");
    if (!isa)
        isa = cy_pool_isa_by_name("avx2");
    return isa ? isa : &cy_pool_generic;
}

/* Length of the row buffer for a plane of width W: the padded row, or the span of the taps
 * when ceil_mode windows run past it, plus the vector loads' overrun. */
static ptrdiff_t cy_pool_tmp_len(ptrdiff_t W, ptrdiff_t OW, int kw, int sw, int dw, int pw)
{
    ptrdiff_t taps = (OW - 1) * (ptrdiff_t)sw + (ptrdiff_t)(kw - 1) * dw + 1;
    ptrdiff_t row = pw + W;
    return (taps > row ? taps : row) + CY_POOL_SLACK;
}

static void cy_pool_fill(float *p, ptrdiff_t n, float v)
{
    for (ptrdiff_t i = 0; i < n; i++)
        p[i] = v;
}

/* Output rows [oh0, oh1) of one plane. tmp: float[cy_pool_tmp_len(..)] filled with the
 * identity by the caller (once per buffer: only tmp[pw : pw + W] is ever written).
 * Average: y = window sum * (recip_h[oh] * recip_w[ow]), the reciprocals of the tap counts. */
static void cy_pool_plane_rows(const cy_pool_isa *isa, const float *x, float *y, ptrdiff_t H,
                               ptrdiff_t W, ptrdiff_t OW, ptrdiff_t oh0, ptrdiff_t oh1, int kh,
                               int kw, int sh, int sw, int dh, int dw, int ph, int pw,
                               int is_max, const float *recip_h, const float *recip_w,
                               float *tmp)
{
    if (isa->plane && isa->plane(x, y, H, W, OW, oh0, oh1, kh, kw, sh, sw, dh, dw, ph, pw,
                                 is_max, recip_h, recip_w))
        return;
    for (ptrdiff_t oh = oh0; oh < oh1; oh++) {
        ptrdiff_t ih0 = oh * sh - ph;
        /* valid taps: 0 <= ih0 + i*dh <= H-1  <=>  i_lo <= i < i_hi */
        ptrdiff_t i_lo = ih0 >= 0 ? 0 : (-ih0 + dh - 1) / dh;
        ptrdiff_t i_hi = ih0 > H - 1 ? 0 : (H - 1 - ih0) / dh + 1;
        if (i_hi > kh)
            i_hi = kh;
        if (i_hi <= i_lo)
            cy_pool_fill(tmp + pw, W, is_max ? -__builtin_inff() : 0.0f);
        else if (is_max)
            isa->vmax(x + (ih0 + i_lo * dh) * W, (ptrdiff_t)dh * W, (int)(i_hi - i_lo),
                      tmp + pw, W);
        else
            isa->vsum(x + (ih0 + i_lo * dh) * W, (ptrdiff_t)dh * W, (int)(i_hi - i_lo),
                      tmp + pw, W);
        if (is_max)
            isa->hmax(tmp, y + oh * OW, OW, kw, sw, dw);
        else
            isa->havg(tmp, y + oh * OW, OW, kw, sw, dw, recip_h[oh], recip_w);
    }
}

#endif
