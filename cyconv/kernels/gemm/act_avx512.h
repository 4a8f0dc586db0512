/* AVX-512 activations for the GEMM epilogue (see gemm.h for the definitions).
 *
 * exp: x = n*ln2 + r, |r| <= ln2/2, exp(r) by the Cephes degree-6 polynomial (max rel. error
 * ~1 ulp), times 2^n with vscalefps (no exponent-field overflow to guard against).
 * tanh: Eigen's rational approximation x*P(x^2)/Q(x^2) on |x| <= 7.9 (~3 ulp; tanh is
 * +-1 in float beyond). Included by gemm_avx512.c only; every function carries the target.
 */
#ifndef CYCONV_ACT_AVX512_H
#define CYCONV_ACT_AVX512_H
#include <immintrin.h>
#include "gemm_isa.h"

#define A5_TARGET __attribute__((target("avx512f,fma")))
#define A5_INLINE static inline __attribute__((always_inline))

A5_TARGET A5_INLINE __m512 cy_exp512(__m512 x)
{
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-104.0f)), _mm512_set1_ps(88.7f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

A5_TARGET A5_INLINE __m512 cy_sigmoid512(__m512 x)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    return _mm512_div_ps(one, _mm512_add_ps(one, cy_exp512(_mm512_sub_ps(_mm512_setzero_ps(), x))));
}

A5_TARGET A5_INLINE __m512 cy_tanh512(__m512 x)
{
    const __m512 lim = _mm512_set1_ps(7.90531110763549805f);
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_sub_ps(_mm512_setzero_ps(), lim)), lim);
    const __m512 x2 = _mm512_mul_ps(x, x);
    __m512 p = _mm512_set1_ps(-2.76076847742355e-16f);
    p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(2.00018790482477e-13f));
    p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(-8.60467152213735e-11f));
    p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(5.12229709037114e-08f));
    p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(1.48572235717979e-05f));
    p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(6.37261928875436e-04f));
    p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(4.89352455891786e-03f));
    p = _mm512_mul_ps(p, x);
    __m512 q = _mm512_set1_ps(1.19825839466702e-06f);
    q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(1.18534705686654e-04f));
    q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(2.26843463243900e-03f));
    q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(4.89352518554385e-03f));
    return _mm512_div_ps(p, q);
}

A5_TARGET A5_INLINE __m512 cy_clamp01_512(__m512 x)
{
    return _mm512_min_ps(_mm512_max_ps(x, _mm512_setzero_ps()), _mm512_set1_ps(1.0f));
}

/* act(x) for one vector of row i; `slope` is that row's PRelu slope (or alpha). */
A5_TARGET A5_INLINE __m512 cy_act512(__m512 x, int act, float alpha, float beta, float slope)
{
    const __m512 zero = _mm512_setzero_ps();
    switch (act) {
    case CY_ACT_RELU: return _mm512_max_ps(x, zero);
    case CY_ACT_LEAKY_RELU: case CY_ACT_PRELU: {
        const float s = act == CY_ACT_PRELU ? slope : alpha;
        __mmask16 neg = _mm512_cmp_ps_mask(x, zero, _CMP_LT_OQ);
        return _mm512_mask_mul_ps(x, neg, x, _mm512_set1_ps(s));
    }
    case CY_ACT_CLIP:
        return _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(alpha)), _mm512_set1_ps(beta));
    case CY_ACT_SIGMOID: return cy_sigmoid512(x);
    case CY_ACT_TANH: return cy_tanh512(x);
    case CY_ACT_HARD_SIGMOID:
        return cy_clamp01_512(_mm512_fmadd_ps(x, _mm512_set1_ps(alpha), _mm512_set1_ps(beta)));
    case CY_ACT_HARD_SWISH:
        return _mm512_mul_ps(x, cy_clamp01_512(_mm512_fmadd_ps(
            x, _mm512_set1_ps(1.0f / 6.0f), _mm512_set1_ps(0.5f))));
    case CY_ACT_SWISH: return _mm512_mul_ps(x, cy_sigmoid512(x));
    default: return x;
    }
}
#endif
