/* AVX-256 activations for the GEMM epilogue (see gemm.h for the definitions).
 *
 * exp: x = n*ln2 + r, |r| <= ln2/2, exp(r) by the Cephes degree-6 polynomial (max rel. error
 * ~1 ulp), times 2^n by adding n to the exponent field (x clamped so 2^n stays normal).
 * tanh: Eigen's rational approximation x*P(x^2)/Q(x^2) on |x| <= 7.9 (~3 ulp; tanh is
 * +-1 in float beyond). Included by gemm_avx256.c only; every function carries the target.
 */
#ifndef CYCONV_ACT_AVX256_H
#define CYCONV_ACT_AVX256_H
#include <immintrin.h>
#include "gemm_isa.h"

#define A2_TARGET __attribute__((target("avx2,fma")))
#define A2_INLINE static inline __attribute__((always_inline))

/* p * 2^n for integral n in [-126, 127]: n added to the exponent bits of p (p in [0.7, 1.5]). */
A2_TARGET A2_INLINE __m256 cy_pow2n256(__m256 p, __m256 n)
{
    __m256i e = _mm256_slli_epi32(_mm256_cvtps_epi32(n), 23);
    return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), e));
}

A2_TARGET A2_INLINE __m256 cy_exp256(__m256 x)
{
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.3f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    return cy_pow2n256(p, n);
}

A2_TARGET A2_INLINE __m256 cy_sigmoid256(__m256 x)
{
    const __m256 one = _mm256_set1_ps(1.0f);
    return _mm256_div_ps(one, _mm256_add_ps(one, cy_exp256(_mm256_sub_ps(_mm256_setzero_ps(), x))));
}

A2_TARGET A2_INLINE __m256 cy_tanh256(__m256 x)
{
    const __m256 lim = _mm256_set1_ps(7.90531110763549805f);
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_sub_ps(_mm256_setzero_ps(), lim)), lim);
    const __m256 x2 = _mm256_mul_ps(x, x);
    __m256 p = _mm256_set1_ps(-2.76076847742355e-16f);
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(2.00018790482477e-13f));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-8.60467152213735e-11f));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(5.12229709037114e-08f));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(1.48572235717979e-05f));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(6.37261928875436e-04f));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(4.89352455891786e-03f));
    p = _mm256_mul_ps(p, x);
    __m256 q = _mm256_set1_ps(1.19825839466702e-06f);
    q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(1.18534705686654e-04f));
    q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(2.26843463243900e-03f));
    q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(4.89352518554385e-03f));
    return _mm256_div_ps(p, q);
}

A2_TARGET A2_INLINE __m256 cy_clamp01_256(__m256 x)
{
    return _mm256_min_ps(_mm256_max_ps(x, _mm256_setzero_ps()), _mm256_set1_ps(1.0f));
}

/* act(x) for one vector of row i; `slope` is that row's PRelu slope (or alpha). */
A2_TARGET A2_INLINE __m256 cy_act256(__m256 x, int act, float alpha, float beta, float slope)
{
    const __m256 zero = _mm256_setzero_ps();
    switch (act) {
    case CY_ACT_RELU: return _mm256_max_ps(x, zero);
    case CY_ACT_LEAKY_RELU: case CY_ACT_PRELU: {
        const float s = act == CY_ACT_PRELU ? slope : alpha;
        __m256 neg = _mm256_cmp_ps(x, zero, _CMP_LT_OQ);
        return _mm256_blendv_ps(x, _mm256_mul_ps(x, _mm256_set1_ps(s)), neg);
    }
    case CY_ACT_CLIP:
        return _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(alpha)), _mm256_set1_ps(beta));
    case CY_ACT_SIGMOID: return cy_sigmoid256(x);
    case CY_ACT_TANH: return cy_tanh256(x);
    case CY_ACT_HARD_SIGMOID:
        return cy_clamp01_256(_mm256_fmadd_ps(x, _mm256_set1_ps(alpha), _mm256_set1_ps(beta)));
    case CY_ACT_HARD_SWISH:
        return _mm256_mul_ps(x, cy_clamp01_256(_mm256_fmadd_ps(
            x, _mm256_set1_ps(1.0f / 6.0f), _mm256_set1_ps(0.5f))));
    case CY_ACT_SWISH: return _mm256_mul_ps(x, cy_sigmoid256(x));
    default: return x;
    }
}
#endif
