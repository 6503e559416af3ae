/* SIMD helpers shared by the CPU kernels (AVX2/FMA): included, not compiled on its own. */
#ifndef GLM_CPU_SIMD_H
#define GLM_CPU_SIMD_H
#include <immintrin.h>
#include <math.h>
#include <stdint.h>

/* e^x: Cody-Waite range reduction, then Cephes' degree-6 expf polynomial; within 2 ulp.
 * Inputs are clamped to [-87.3, 88.4]: no infinities, no denormals. */
static inline __m256 exp256(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.33654f)), _mm256_set1_ps(88.37626f));
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
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r);
    p = _mm256_add_ps(p, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* max |x[i]| over n floats (0 for n = 0), and whether any is NaN: the scale of an INT8 row */
static inline float abs_max(const float *x, int64_t n, int *has_nan) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 top8 = _mm256_setzero_ps(), nan8 = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= n; k += 8) {
        __m256 v = _mm256_loadu_ps(x + k);
        top8 = _mm256_max_ps(top8, _mm256_andnot_ps(sign, v));
        nan8 = _mm256_or_ps(nan8, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    }
    float lanes[8], top = 0.0f;
    _mm256_storeu_ps(lanes, top8);
    for (int i = 0; i < 8; i++) top = fmaxf(top, lanes[i]);
    int nan = _mm256_movemask_ps(nan8) != 0;
    for (; k < n; k++) {
        top = fmaxf(top, fabsf(x[k]));
        nan |= x[k] != x[k];
    }
    *has_nan = nan;
    return top;
}

#endif
