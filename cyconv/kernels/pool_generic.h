/* Pooling row operations in portable C (see pool_isa.h). The reference for the per-ISA
 * tables, their fallback for strides other than 1 and 2, and the whole table on CPUs without
 * AVX2. Compiled for the baseline ISA; GCC vectorises the contiguous loops. */
#ifndef CYCONV_POOL_GENERIC_H
#define CYCONV_POOL_GENERIC_H

#include "pool_isa.h"

static void cy_pool_vmax_generic(const float *x, ptrdiff_t step, int k, float *out,
                                 ptrdiff_t n)
{
    for (ptrdiff_t i = 0; i < n; i++)
        out[i] = x[i];
    for (int r = 1; r < k; r++) {
        const float *row = x + r * step;
        for (ptrdiff_t i = 0; i < n; i++)
            out[i] = row[i] > out[i] ? row[i] : out[i];
    }
}

static void cy_pool_vsum_generic(const float *x, ptrdiff_t step, int k, float *out,
                                 ptrdiff_t n)
{
    for (ptrdiff_t i = 0; i < n; i++)
        out[i] = x[i];
    for (int r = 1; r < k; r++) {
        const float *row = x + r * step;
        for (ptrdiff_t i = 0; i < n; i++)
            out[i] += row[i];
    }
}

/* Outputs [o0, n) of the horizontal passes: the vector tables' tails and odd strides. */
static void cy_pool_hmax_scalar(const float *t, float *y, ptrdiff_t o0, ptrdiff_t n, int k,
                                int s, int d)
{
    for (ptrdiff_t o = o0; o < n; o++) {
        const float *w = t + o * s;
        float m = w[0];
        for (int j = 1; j < k; j++)
            m = w[j * d] > m ? w[j * d] : m;
        y[o] = m;
    }
}

static void cy_pool_havg_scalar(const float *t, float *y, ptrdiff_t o0, ptrdiff_t n, int k,
                                int s, int d, float rh, const float *rw)
{
    for (ptrdiff_t o = o0; o < n; o++) {
        const float *w = t + o * s;
        float a = w[0];
        for (int j = 1; j < k; j++)
            a += w[j * d];
        y[o] = a * (rh * rw[o]);
    }
}

static void cy_pool_hmax_generic(const float *t, float *y, ptrdiff_t n, int k, int s, int d)
{
    cy_pool_hmax_scalar(t, y, 0, n, k, s, d);
}

static void cy_pool_havg_generic(const float *t, float *y, ptrdiff_t n, int k, int s, int d,
                                 float rh, const float *rw)
{
    cy_pool_havg_scalar(t, y, 0, n, k, s, d, rh, rw);
}

/* 16 independent lanes: vectorisable, and each float lane sums only n/16 terms. */
static float cy_pool_gmax_generic(const float *x, ptrdiff_t n)
{
    float acc[16];
    ptrdiff_t nb = n / 16;
    for (int l = 0; l < 16; l++)
        acc[l] = -__builtin_inff();
    for (ptrdiff_t b = 0; b < nb; b++)
        for (int l = 0; l < 16; l++)
            acc[l] = x[b * 16 + l] > acc[l] ? x[b * 16 + l] : acc[l];
    float m = -__builtin_inff();
    for (int l = 0; l < 16; l++)
        m = acc[l] > m ? acc[l] : m;
    for (ptrdiff_t i = nb * 16; i < n; i++)
        m = x[i] > m ? x[i] : m;
    return m;
}

static double cy_pool_gsum_generic(const float *x, ptrdiff_t n)
{
    float acc[16] = {0};
    ptrdiff_t nb = n / 16;
    for (ptrdiff_t b = 0; b < nb; b++)
        for (int l = 0; l < 16; l++)
            acc[l] += x[b * 16 + l];
    double s = 0.0;
    for (int l = 0; l < 16; l++)
        s += acc[l];
    for (ptrdiff_t i = nb * 16; i < n; i++)
        s += x[i];
    return s;
}

static const cy_pool_isa cy_pool_generic = {
    "generic", cy_pool_vmax_generic, cy_pool_vsum_generic, cy_pool_hmax_generic,
    cy_pool_havg_generic, cy_pool_gmax_generic, cy_pool_gsum_generic, NULL,
};

#endif
