/* Cheap element-wise float32 loops compiled per ISA (target_clones: AVX-512, AVX2+FMA, baseline),
 * picked at load by the ifunc resolver. Cython compiles its own loops for the baseline (SSE2,
 * 4 lanes) only; these run 16 lanes where the CPU has them. All are streaming, memory-bound
 * loops: the win is fewer instructions per cache line, not arithmetic.
 *
 * Operation codes match cyconv/kernels/elementwise.pyx (B_ADD .. B_PRELU). Results equal the
 * scalar C expressions exactly (no reassociation; division stays division).
 */
#ifndef CYCONV_ELEMENTWISE_LOOPS_H
#define CYCONV_ELEMENTWISE_LOOPS_H

#include "elementwise.h"      /* CY_CLONES */

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math")   /* lets GCC if-convert the selects (see elementwise.h) */
#endif

enum { CY_B_ADD = 0, CY_B_SUB = 1, CY_B_MUL = 2, CY_B_DIV = 3, CY_B_POW = 4, CY_B_PRELU = 5 };

/* y = max(x, 0) with NaN passed through (x < 0 is false for NaN), as numpy.maximum. */
CY_CLONES static void cy_relu_f32(const float *x, float *y, ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; i++)
        y[i] = x[i] < 0.0f ? 0.0f : x[i];
}

CY_CLONES static void cy_leaky_relu_f32(const float *x, float *y, ptrdiff_t n, float a) {
    for (ptrdiff_t i = 0; i < n; i++)
        y[i] = x[i] < 0.0f ? a * x[i] : x[i];
}

/* min(max(x, lo), hi): lo > hi gives hi everywhere, as the ONNX spec says. */
CY_CLONES static void cy_clip_f32(const float *x, float *y, ptrdiff_t n, float lo, float hi) {
    for (ptrdiff_t i = 0; i < n; i++) {
        float v = x[i] < lo ? lo : x[i];
        y[i] = v > hi ? hi : v;
    }
}

/* y = x * s + b (one channel of inference BatchNormalization). */
CY_CLONES static void cy_affine_f32(const float *x, float *y, ptrdiff_t n, float s, float b) {
    for (ptrdiff_t i = 0; i < n; i++)
        y[i] = x[i] * s + b;
}

/* y = x * s[i] + b[i] (BatchNormalization on [N, C] rows). */
CY_CLONES static void cy_affine_vec_f32(const float *x, float *y, ptrdiff_t n, const float *s,
                                        const float *b) {
    for (ptrdiff_t i = 0; i < n; i++)
        y[i] = x[i] * s[i] + b[i];
}

/* y = a (op) b element-wise for op in ADD, SUB, MUL, DIV, PRELU (a = x, b = slope); returns 0
 * if op is not one of them (POW stays with libm in the caller). */
CY_CLONES static int cy_binary_vv_f32(int op, const float *a, const float *b, float *y,
                                      ptrdiff_t n) {
    ptrdiff_t i;
    switch (op) {
    case CY_B_ADD: for (i = 0; i < n; i++) y[i] = a[i] + b[i]; return 1;
    case CY_B_SUB: for (i = 0; i < n; i++) y[i] = a[i] - b[i]; return 1;
    case CY_B_MUL: for (i = 0; i < n; i++) y[i] = a[i] * b[i]; return 1;
    case CY_B_DIV: for (i = 0; i < n; i++) y[i] = a[i] / b[i]; return 1;
    case CY_B_PRELU: for (i = 0; i < n; i++) y[i] = a[i] < 0.0f ? a[i] * b[i] : a[i]; return 1;
    default: return 0;
    }
}

/* y = a (op) s, or s (op) a when scalar_first; same ops and return value as above. */
CY_CLONES static int cy_binary_vs_f32(int op, const float *a, float s, float *y, ptrdiff_t n,
                                      int scalar_first) {
    ptrdiff_t i;
    switch (op) {
    case CY_B_ADD: for (i = 0; i < n; i++) y[i] = a[i] + s; return 1;
    case CY_B_MUL: for (i = 0; i < n; i++) y[i] = a[i] * s; return 1;
    case CY_B_SUB:
        if (scalar_first) for (i = 0; i < n; i++) y[i] = s - a[i];
        else for (i = 0; i < n; i++) y[i] = a[i] - s;
        return 1;
    case CY_B_DIV:   /* a division, not a multiply by 1/s: bit-identical to numpy */
        if (scalar_first) for (i = 0; i < n; i++) y[i] = s / a[i];
        else for (i = 0; i < n; i++) y[i] = a[i] / s;
        return 1;
    case CY_B_PRELU:
        if (scalar_first) for (i = 0; i < n; i++) y[i] = s < 0.0f ? s * a[i] : s;
        else for (i = 0; i < n; i++) y[i] = a[i] < 0.0f ? a[i] * s : a[i];
        return 1;
    default: return 0;
    }
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

#endif
