/* The small float32 operations of a GLM decoder layer, fused, for x86 CPUs with AVX2/FMA.
 *
 * Built and loaded by cpu_kernels.py; called through cpu_ops.py. Each function is one pass
 * over its rows where PyTorch makes several (RMSNorm alone is six kernels). A row is
 * computed the same way whatever the other rows are, so batch invariance holds.
 *
 * Compiled with -ffp-contract=off: a * b - c * d rounds each product as PyTorch's
 * elementwise kernels do, so the rotary embedding is bit-identical to layers.py's.
 */
#include <math.h>
#include <stdint.h>

#include "cpu_simd.h"

#define PARALLEL_MIN (1 << 16) /* elements: below this, one thread is faster than waking two */

/* out = weight * (x * 1 / sqrt(mean(x^2) + eps)) for one row of `dim` (a multiple of 8) */
static void rms_norm_row(const float *x, const float *weight, float eps, int64_t dim, float *out) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0;
    int64_t d = 0;
    for (; d + 16 <= dim; d += 16) {
        __m256 a = _mm256_loadu_ps(x + d), b = _mm256_loadu_ps(x + d + 8);
        s0 = _mm256_fmadd_ps(a, a, s0);
        s1 = _mm256_fmadd_ps(b, b, s1);
    }
    for (; d < dim; d += 8) {
        __m256 a = _mm256_loadu_ps(x + d);
        s0 = _mm256_fmadd_ps(a, a, s0);
    }
    float scale = 1.0f / sqrtf(hsum(_mm256_add_ps(s0, s1)) / (float)dim + eps);
    __m256 r = _mm256_set1_ps(scale);
    for (d = 0; d < dim; d += 8)
        _mm256_storeu_ps(out + d, _mm256_mul_ps(_mm256_loadu_ps(weight + d),
                                                _mm256_mul_ps(_mm256_loadu_ps(x + d), r)));
}

/* x (rows, dim) -> out (rows, dim): RMSNorm with `weight` (dim). */
void glm_rms_norm_f32(const float *x, const float *weight, float eps, int64_t rows, int64_t dim,
                      float *out) {
#pragma omp parallel for schedule(static) if (rows * dim >= PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++) rms_norm_row(x + r * dim, weight, eps, dim, out + r * dim);
}

/* sum = hidden + delta; out = RMSNorm(sum): the residual add and the next layer norm. */
void glm_add_rms_norm_f32(const float *hidden, const float *delta, const float *weight, float eps,
                          int64_t rows, int64_t dim, float *sum, float *out) {
#pragma omp parallel for schedule(static) if (rows * dim >= PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *h = hidden + r * dim, *e = delta + r * dim;
        float *s = sum + r * dim;
        for (int64_t d = 0; d < dim; d += 8)
            _mm256_storeu_ps(s + d, _mm256_add_ps(_mm256_loadu_ps(h + d), _mm256_loadu_ps(e + d)));
        rms_norm_row(s, weight, eps, dim, out + r * dim);
    }
}

/* In place, the first `num_heads` heads of each row (row r at x + r * row_stride): rotate
 * pairs (2i, 2i + 1) of the first 2 * half dims by cos/sin[r][i] (rows, half), as
 * layers.py's rotate_interleaved. */
void glm_rotary_interleaved_f32(float *x, int64_t rows, int64_t row_stride, int64_t num_heads,
                                int64_t head_dim, int64_t half, const float *cos,
                                const float *sin) {
#pragma omp parallel for schedule(static) if (rows * num_heads * half >= PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *c = cos + r * half, *s = sin + r * half;
        for (int64_t h = 0; h < num_heads; h++) {
            float *v = x + r * row_stride + h * head_dim;
            for (int64_t i = 0; i < half; i++) {
                float even = v[2 * i], odd = v[2 * i + 1];
                v[2 * i] = even * c[i] - odd * s[i];
                v[2 * i + 1] = odd * c[i] + even * s[i];
            }
        }
    }
}

/* gate_up (rows, 2 * inner) -> out (rows, inner): silu(gate) * up, silu(g) = g / (1 + e^-g).
 * inner must be a multiple of 8. */
void glm_silu_mul_f32(const float *gate_up, int64_t rows, int64_t inner, float *out) {
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
#pragma omp parallel for schedule(static) if (rows * inner >= PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *g = gate_up + r * 2 * inner, *u = g + inner;
        float *o = out + r * inner;
        for (int64_t d = 0; d < inner; d += 8) {
            __m256 x = _mm256_loadu_ps(g + d);
            __m256 silu = _mm256_div_ps(x, _mm256_add_ps(one, exp256(_mm256_sub_ps(zero, x))));
            _mm256_storeu_ps(o + d, _mm256_mul_ps(silu, _mm256_loadu_ps(u + d)));
        }
    }
}

/* INT8 linears (glm_api/quant/int8.py) around fbgemm: x (rows, dim) -> codes (rows + 1, dim)
 * and scales (rows). codes row 0 is the pin row (levels + 1, then -levels); row r + 1 holds
 * round(x[r] / s) with s = max(max |x[r]|, min_scale) / levels, rounded half to even as
 * torch.round: the same bits as int8.py's PyTorch code. */
void glm_quantize_rows_f32(const float *x, int64_t rows, int64_t dim, float levels,
                           float min_scale, float *codes, float *scales) {
    codes[0] = levels + 1.0f;
    for (int64_t d = 1; d < dim; d++) codes[d] = -levels;
#pragma omp parallel for schedule(static) if (rows * dim >= PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *row = x + r * dim;
        int has_nan;
        float top = abs_max(row, dim, &has_nan);
        int64_t d;
        /* a NaN makes the row's scale NaN, as torch's amax does */
        float scale = has_nan ? __builtin_nanf("") : fmaxf(top, min_scale) / levels;
        __m256 s8 = _mm256_set1_ps(scale);
        float *out = codes + (r + 1) * dim;
        for (d = 0; d + 8 <= dim; d += 8)
            _mm256_storeu_ps(out + d, _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(row + d), s8),
                                                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        for (; d < dim; d++) out[d] = nearbyintf(row[d] / scale);
        scales[r] = scale;
    }
}

/* out (rows, dim) = acc rows 1.. (rows + 1, dim) * scales[r] (+ bias): the two roundings of
 * `acc[1:] * scale + bias` in PyTorch. */
void glm_scale_rows_f32(const float *acc, int64_t rows, int64_t dim, const float *scales,
                        const float *bias, float *out) {
#pragma omp parallel for schedule(static) if (rows * dim >= PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *a = acc + (r + 1) * dim;
        float *o = out + r * dim, s = scales[r];
        __m256 s8 = _mm256_set1_ps(s);
        int64_t d = 0;
        for (; d + 8 <= dim; d += 8) {
            __m256 v = _mm256_mul_ps(_mm256_loadu_ps(a + d), s8);
            if (bias) v = _mm256_add_ps(v, _mm256_loadu_ps(bias + d));
            _mm256_storeu_ps(o + d, v);
        }
        for (; d < dim; d++) o[d] = bias ? a[d] * s + bias[d] : a[d] * s;
    }
}

/* out[r] = the index of row r's largest value (x: rows of `dim`, row r at x + r * stride), as
 * torch.argmax: the first index of the maximum, or of the first NaN where a row has one.
 * Each lane keeps its first strict maximum; lanes then tie-break on the lower index. */
void glm_argmax_rows_f32(const float *x, int64_t rows, int64_t dim, int64_t stride,
                         int64_t *out) {
#pragma omp parallel for schedule(static) if (rows * dim >= PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *row = x + r * stride;
        int64_t best = 0, d = 0;
        float top = row[0];
        if (dim >= 8) {
            __m256 top8 = _mm256_loadu_ps(row), nan8 = _mm256_cmp_ps(top8, top8, _CMP_UNORD_Q);
            __m256i at8 = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), step = _mm256_set1_epi32(8);
            __m256i here = at8;
            for (d = 8; d + 8 <= dim; d += 8) {
                __m256 v = _mm256_loadu_ps(row + d);
                here = _mm256_add_epi32(here, step);
                __m256 greater = _mm256_cmp_ps(v, top8, _CMP_GT_OQ);
                nan8 = _mm256_or_ps(nan8, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
                top8 = _mm256_blendv_ps(top8, v, greater);
                at8 = _mm256_castps_si256(_mm256_blendv_ps(
                    _mm256_castsi256_ps(at8), _mm256_castsi256_ps(here), greater));
            }
            if (_mm256_movemask_ps(nan8)) { /* rare: the first NaN wins, as in torch */
                for (int64_t i = 0; i < dim; i++)
                    if (row[i] != row[i]) {
                        best = i;
                        break;
                    }
                out[r] = best;
                continue;
            }
            float lanes[8];
            int32_t at[8];
            _mm256_storeu_ps(lanes, top8);
            _mm256_storeu_si256((__m256i *)at, at8);
            top = lanes[0], best = at[0];
            for (int i = 1; i < 8; i++)
                if (lanes[i] > top || (lanes[i] == top && at[i] < best)) top = lanes[i], best = at[i];
        }
        for (; d < dim; d++) {
            if (row[d] != row[d]) { /* the vectors held none: this is the first NaN */
                best = d;
                break;
            }
            if (row[d] > top) top = row[d], best = d;
        }
        out[r] = best;
    }
}
