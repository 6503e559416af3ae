/* INT8 linear layers on x86 CPUs with AVX2: out = dequant(q(x) @ w^T) (+ bias).
 *
 * Built and loaded by cpu_kernels.py; called through cpu_gemm_int8.py for quant/int8.py's
 * Int8Linear. Weights are int8 in [-127, 127] with one float scale per output channel; each
 * input row is quantized here to integers in [-63, 63] with its own scale
 * s = max(max |x|, 1e-12) / 63, code = round-half-even(x / s), as int8.py's PyTorch code.
 *
 * The integer sums: AVX2 has no int8 dot product, only vpmaddubsw (unsigned x signed bytes,
 * pairs added in int16). Codes are stored plus 64, in [1, 127], so a pair is at most
 * 2 x 127 x 127 < 2^15 and never saturates; the 64 x (column sum of w) that adds is taken off
 * afterwards. Sums are int32 and exact, in any order, so a row's result does not depend on
 * the other rows or on the number of threads (batch invariance).
 *
 * Every output is then float(sum) * w_scale[n], times the row's scale, plus the bias: the
 * roundings of fbgemm's dynamic linear (activation scale exactly 1) followed by int8.py's
 * rescale, so the result has the same bits as the fbgemm path it replaces (tested).
 *
 * Layout: panels of 16 output channels, panel[p][g][j][t] = w[16 p + j][4 g + t], K padded to
 * a multiple of 4 and N to a multiple of 16 with zeros. One ymm holds 8 channels x 4 k; a
 * broadcast of 4 codes feeds it, and vpmaddwd against ones adds the pairs into int32. Rows go
 * 4 at a time against a panel (8 accumulators, 2 weight vectors): the panel (16 K bytes)
 * stays in L1 while every row passes over it.
 *
 * The first pass over a panel reads it from memory, and prefetches the line `AHEAD` bytes
 * on at every group of 4 k (one line per group): the panels lie one after another, so near a
 * panel's end that is the next one's start. Measured on the 0.6B model's layers (2 threads,
 * interleaved, weights streaming): 10-15% faster at 4 rows and 1-5% at 1 and 16 than the
 * hardware prefetcher alone; 2048 bytes did as well, 4096 and a share of the next panel per
 * pass (cpu_gemm.c's scheme) worse. Threads take 16 panels at a time (as cpu_gemm.c; on the
 * Zen 5 EPYC 1 / 16 rows 7.4 / 10.9 -> 7.0 / 9.6 ms for the 0.6B model's layers, the output
 * layer 5.1 -> 4.4 ms at 16 rows, interleaved).
 *
 * Built for AVX-512 with VNNI (cpu_kernels.py does so where the CPU has them), a group of a
 * panel (16 channels x 4 k, 64 bytes) is one zmm, and vpdpbusd adds the four products of
 * each channel into its int32 lane in one instruction; a tile takes up to 16 rows. The sums
 * are the same exact integers, so both builds give the same bits (tested).
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_simd.h"

#define PANEL 16
#if defined(__AVX512F__) && defined(__AVX512VNNI__)
#define ROWS 16
#else
#define ROWS 4
#endif
#define OFFSET 64
#define LEVELS 63.0f
#if ROWS == 16
/* bytes: the first pass's prefetch distance; 16 rows spend longer on each line (measured on
 * the Zen 5 EPYC, 0.6B model's layers: 16 rows 21.9 -> 11.8 ms at 4096 rather than 1024) */
#define AHEAD 4096
#else
#define AHEAD 1024 /* bytes: the first pass's prefetch distance */
#endif

/* one row of x (K floats) -> codes + 64 (K4 bytes, the padding 64: zero) and its scale;
 * a NaN anywhere makes the scale NaN (and so the row's outputs), as in int8.py. Each group
 * of 4 codes lies `gs` bytes after the one before (4: the row's codes contiguous). */
static void quantize_row(const float *x, int64_t K, int64_t K4, uint8_t *codes, int64_t gs,
                         float *scale) {
#define AT(k) codes[((k) >> 2) * gs + ((k) & 3)]
    int has_nan;
    float top = abs_max(x, K, &has_nan);
    int64_t k;
    float s = has_nan ? __builtin_nanf("") : fmaxf(top, 1e-12f) / LEVELS;
    *scale = s;
    if (has_nan || !(s < INFINITY)) { /* no codes to speak of: zeros (the scale tells) */
        for (k = 0; k < K4; k++) AT(k) = OFFSET;
        return;
    }
    __m256 s8 = _mm256_set1_ps(s);
    for (k = 0; k + 8 <= K; k += 8) {
        __m256 q = _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(x + k), s8),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m256i c = _mm256_add_epi32(_mm256_cvtps_epi32(q), _mm256_set1_epi32(OFFSET));
        int32_t v[8];
        _mm256_storeu_si256((__m256i *)v, c);
        for (int i = 0; i < 8; i++) AT(k + i) = (uint8_t)v[i];
    }
    for (; k < K; k++) AT(k) = (uint8_t)((int32_t)nearbyintf(x[k] / s) + OFFSET);
    for (; k < K4; k++) AT(k) = OFFSET;
#undef AT
}

static inline int32_t four_codes(const uint8_t *at) {
    int32_t v;
    memcpy(&v, at, sizeof v);
    return v;
}

#if ROWS == 4
#define MAC(r)                                                                          \
    do {                                                                                \
        __m256i a = _mm256_set1_epi32(four_codes(codes + (r) * K4 + 4 * g));             \
        acc##r##0 = _mm256_add_epi32(acc##r##0,                                         \
                                     _mm256_madd_epi16(_mm256_maddubs_epi16(a, w0), one)); \
        acc##r##1 = _mm256_add_epi32(acc##r##1,                                         \
                                     _mm256_madd_epi16(_mm256_maddubs_epi16(a, w1), one)); \
    } while (0)

/* `rows` (1..4, a constant where inlined) rows of codes x one panel -> int32 sums (rows, 16);
 * `prefetch`: the first pass over the panel (see AHEAD) */
static inline __attribute__((always_inline)) void tile(const uint8_t *codes, int64_t K4,
                                                       const int rows, const int8_t *panel,
                                                       int32_t *sums, int prefetch) {
    const __m256i one = _mm256_set1_epi16(1);
    __m256i acc00 = _mm256_setzero_si256(), acc01 = acc00, acc10 = acc00, acc11 = acc00;
    __m256i acc20 = acc00, acc21 = acc00, acc30 = acc00, acc31 = acc00;
    for (int64_t g = 0; g < K4 / 4; g++) {
        __m256i w0 = _mm256_loadu_si256((const __m256i *)(panel + g * 64));
        __m256i w1 = _mm256_loadu_si256((const __m256i *)(panel + g * 64 + 32));
        if (prefetch) _mm_prefetch((const char *)(panel + g * 64 + AHEAD), _MM_HINT_T0);
        MAC(0);
        if (rows > 1) MAC(1);
        if (rows > 2) MAC(2);
        if (rows > 3) MAC(3);
    }
    __m256i lo[ROWS] = {acc00, acc10, acc20, acc30}, hi[ROWS] = {acc01, acc11, acc21, acc31};
    for (int r = 0; r < rows; r++) {
        _mm256_storeu_si256((__m256i *)(sums + r * PANEL), lo[r]);
        _mm256_storeu_si256((__m256i *)(sums + r * PANEL + 8), hi[r]);
    }
}
#else
/* `rows` (1..16, a constant where inlined) rows of codes x one panel -> int32 sums; the
 * tile's codes are packed group-major (row r's group g at 4 (g rows + r)): one pointer and
 * constant offsets reach all rows */
static inline __attribute__((always_inline)) void tile(const uint8_t *codes, int64_t K4,
                                                       const int rows, const int8_t *panel,
                                                       int32_t *sums, int prefetch) {
    /* named accumulators, not an array: GCC keeps a 1 KB array in memory */
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0,
            a7 = a0, a8 = a0, a9 = a0, a10 = a0, a11 = a0, a12 = a0, a13 = a0, a14 = a0,
            a15 = a0;
#define DOT(r) \
    if (r < rows) a##r = _mm512_dpbusd_epi32(a##r, _mm512_set1_epi32(four_codes(at + 4 * r)), w)
    for (int64_t g = 0; g < K4 / 4; g++) {
        __m512i w = _mm512_loadu_si512((const void *)(panel + g * 64));
        if (prefetch) _mm_prefetch((const char *)(panel + g * 64 + AHEAD), _MM_HINT_T0);
        const uint8_t *at = codes + g * 4 * rows;
        DOT(0); DOT(1); DOT(2); DOT(3); DOT(4); DOT(5); DOT(6); DOT(7);
        DOT(8); DOT(9); DOT(10); DOT(11); DOT(12); DOT(13); DOT(14); DOT(15);
    }
#undef DOT
    __m512i acc[ROWS] = {a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15};
    for (int r = 0; r < rows; r++) _mm512_storeu_si512((void *)(sums + r * PANEL), acc[r]);
}
#endif

/* x (M, K) float32; panels (N16 / 16, K4 / 4, 16, 4) int8; col_sums, w_scales (N16);
 * bias (N) or NULL; out (M, N). Returns 0, or -1 when there is no memory for the codes. */
int64_t glm_linear_int8(const float *x, int64_t M, int64_t K, const int8_t *panels,
                        const int32_t *col_sums, const float *w_scales, int64_t N,
                        const float *bias, float *out, int num_threads) {
    int64_t K4 = (K + 3) & ~(int64_t)3, num_panels = (N + PANEL - 1) / PANEL;
    uint8_t *codes = aligned_alloc(64, (size_t)(((M * K4) + 63) & ~(int64_t)63));
    float *scales = malloc((size_t)M * sizeof(float));
    if (!codes || !scales) {
        free(codes);
        free(scales);
        return -1;
    }
#pragma omp parallel num_threads(num_threads)
    {
#pragma omp for schedule(static)
        for (int64_t m = 0; m < M; m++) {
#if ROWS == 16 /* a tile's codes group-major (tile() above) */
            int64_t m0 = m - m % ROWS, rows = M - m0 < ROWS ? M - m0 : ROWS;
            quantize_row(x + m * K, K, K4, codes + m0 * K4 + (m - m0) * 4, 4 * rows, scales + m);
#else
            quantize_row(x + m * K, K, K4, codes + m * K4, 4, scales + m);
#endif
        }
#pragma omp for schedule(dynamic, 16) /* as cpu_gemm.c: preempted threads, long runs */
        for (int64_t p = 0; p < num_panels; p++) {
            const int8_t *panel = panels + p * K4 * PANEL;
            int64_t n0 = p * PANEL;
            int valid = (int)(N - n0 < PANEL ? N - n0 : PANEL);
            int32_t sums[ROWS * PANEL];
            for (int64_t m = 0; m < M; m += ROWS) {
                int rows = (int)(M - m < ROWS ? M - m : ROWS);
                const uint8_t *c = codes + m * K4;
#define CASE(n) case n: tile(c, K4, n, panel, sums, m == 0); break;
                switch (rows) { /* one loop per row count */
#if ROWS == 16
                    CASE(16) CASE(15) CASE(14) CASE(13) CASE(12) CASE(11) CASE(10) CASE(9)
                    CASE(8) CASE(7) CASE(6) CASE(5)
#endif
                    CASE(4) CASE(3) CASE(2) default: CASE(1)
                }
#undef CASE
                for (int r = 0; r < rows; r++) {
                    float *o = out + (m + r) * N + n0, s = scales[m + r];
                    if (valid == PANEL) { /* the same operations, 8 outputs at a time */
                        for (int j = 0; j < PANEL; j += 8) {
                            __m256i exact = _mm256_sub_epi32(
                                _mm256_loadu_si256((const __m256i *)(sums + r * PANEL + j)),
                                _mm256_mullo_epi32(_mm256_loadu_si256((const __m256i *)(col_sums + n0 + j)),
                                                   _mm256_set1_epi32(OFFSET)));
                            __m256 v = _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(exact),
                                                                   _mm256_loadu_ps(w_scales + n0 + j)),
                                                     _mm256_set1_ps(s));
                            if (bias) v = _mm256_add_ps(v, _mm256_loadu_ps(bias + n0 + j));
                            _mm256_storeu_ps(o + j, v);
                        }
                        continue;
                    }
                    for (int j = 0; j < valid; j++) {
                        int32_t exact = sums[r * PANEL + j] - OFFSET * col_sums[n0 + j];
                        float v = ((float)exact * w_scales[n0 + j]) * s;
                        o[j] = bias ? v + bias[n0 + j] : v;
                    }
                }
            }
        }
    }
    free(codes);
    free(scales);
    return 0;
}
