/* AVX2+FMA micro-kernel: 6 x 16 register tile (12 ymm accumulators, 2 for the B row,
 * 1 broadcast), the classic Haswell shape. Partial columns are stored with maskstore;
 * full ones with plain stores (masked stores are slow on AMD, see store_tile). */
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

/* 8 floats of a tile row: plain moves when the tile is FULL width, else masked by m. */
TARGET INLINE __m256 load8(const int FULL, const float *p, __m256i m)
{
    return FULL ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, m);
}

TARGET INLINE void store8(const int FULL, float *p, __m256i m, __m256 x)
{
    if (FULL) _mm256_storeu_ps(p, x);
    else _mm256_maskstore_ps(p, m, x);
}

/* Write an MR x 8*COLS accumulator tile to C, rows >= mr and columns >= nr left alone:
 * alpha, accumulate (C +=) and, on the last K block, the epilogue (bias, residual, act). */
TARGET INLINE void store_tile(const int COLS, const int FULL, __m256 acc[MR][2], float *c,
                              ptrdiff_t ldc, int mr, int nr, const cy_tile *t)
{
    const __m256i m[2] = {lane_mask(nr), lane_mask(nr - 8)};
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
    for (int i = 0; i < MR; i++) {
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
                if (res)
                    x = _mm256_add_ps(x, load8(FULL, res + i * t->ldr + 8 * v, m[v]));
                if (act == CY_ACT_RELU) x = _mm256_max_ps(x, zero);
                else if (act) x = cy_act256(x, act, t->act_alpha, t->act_beta,
                                            t->slope_row ? t->slope_row[i] : t->act_alpha);
            }
            store8(FULL, ci + 8 * v, m[v], x);
        }
    }
}

TARGET INLINE void tile(const int COLS, int kc, const float *a, const float *b, float *c,
                        ptrdiff_t ldc, int mr, int nr, const cy_tile *t)
{
    __m256 acc[MR][2];
#pragma GCC unroll 6
    for (int i = 0; i < MR; i++) {
        acc[i][0] = _mm256_setzero_ps();
        acc[i][1] = _mm256_setzero_ps();
    }
#pragma GCC unroll 2
    for (int k = 0; k < kc; k++) {
        const float *ak = a + k * MR, *bk = b + k * NR;
        __m256 b0 = _mm256_loadu_ps(bk);
        __m256 b1 = COLS > 1 ? _mm256_loadu_ps(bk + 8) : b0;
#pragma GCC unroll 6
        for (int i = 0; i < MR; i++) {
            __m256 ai = _mm256_broadcast_ss(ak + i);
            acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
            if (COLS > 1) acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
        }
    }

    /* Full-width tiles use plain loads and stores: on AMD Zen, vmaskmovps stores are
     * microcoded (about one per 12 cycles), which cost a full 6 x 16 tile ~15% of a K = 256
     * GEMM on Zen 3. The masked moves remain for the ragged right edge only. */
    if (COLS == 2 && nr == NR)
        store_tile(2, 1, acc, c, ldc, mr, nr, t);
    else
        store_tile(COLS, 0, acc, c, ldc, mr, nr, t);
}

TARGET static void kernel_avx2(int kc, const float *a, const float *b, float *c, ptrdiff_t ldc,
                               int mr, int nr, const cy_tile *t)
{
    if (nr > 8) tile(2, kc, a, b, c, ldc, mr, nr, t);
    else tile(1, kc, a, b, c, ldc, mr, nr, t);
}

TARGET static void epilogue_avx2(int M, int N, float *c, ptrdiff_t ldc, const cy_epilogue *ep)
{
    for (int i = 0; i < M; i++) {
        float *ci = c + i * ldc;
        const float *ri = ep->residual ? ep->residual + i * ep->ldr : 0;
        const __m256 brow = _mm256_set1_ps(ep->bias_row ? ep->bias_row[i] : 0.0f);
        const float slope = ep->slope_row ? ep->slope_row[i] : ep->act_alpha;
        for (int j = 0; j < N; j += 8) {
            /* full vectors with plain moves (see store_tile), the last partial one masked */
            const int full = j + 8 <= N;
            const __m256i m = lane_mask(N - j);
            __m256 x = _mm256_add_ps(full ? _mm256_loadu_ps(ci + j) : _mm256_maskload_ps(ci + j, m),
                                     brow);
            if (ep->bias_col)
                x = _mm256_add_ps(x, full ? _mm256_loadu_ps(ep->bias_col + j)
                                          : _mm256_maskload_ps(ep->bias_col + j, m));
            if (ri)
                x = _mm256_add_ps(x, full ? _mm256_loadu_ps(ri + j) : _mm256_maskload_ps(ri + j, m));
            x = cy_act256(x, ep->act, ep->act_alpha, ep->act_beta, slope);
            if (full) _mm256_storeu_ps(ci + j, x);
            else _mm256_maskstore_ps(ci + j, m, x);
        }
    }
}

/* MC x KC = 144 x 256 floats = 144 KiB of A in L2; KC x NC = 256 x 4080 = 4 MiB of B. */
const cy_gemm_isa cy_gemm_avx2 = {"avx2", MR, NR, 144, 256, 4080, kernel_avx2, epilogue_avx2, NULL,
                                   NULL};
#endif
