/* Greedy decoding's argmax over a float32 output layer, exact, from an INT8 copy of it.
 *
 * Built and loaded by cpu_kernels.py; called through greedy_screen.py. A single stream's
 * decode step reads every weight once, and the output layer (vocabulary x hidden: 620 MB of
 * GLM-4's 1.7 GB at hidden 1024) is a third of it. A greedy row needs only its argmax, so:
 *
 * 1. screen: a_j = s_j t S_j, with S_j = c . q_j the integer dot product of the row's
 *    int16 codes c (x ~ t c, one scale t per row, `levels` steps each side) and the int8
 *    weights q_j (w_j ~ s_j q_j), exact in int32 (levels <= (2^31 - 1) / (127 K)), then
 *    scaled in float32 (3 roundings);
 * 2. bound: |a_j - e_j| <= B_j, where e_j is what glm_linear_f32 computes:
 *    B_j = min(|x|_2 c_j, |x|_1 h_j)     the weights' quantization and e_j's own rounding
 *        + min(|d|_2 n_j, |d|_inf l_j)   the row's quantization d = x - t c
 *        + 4u |a_j| + K 1e-44            the scaling's roundings, products that underflow
 *    with c_j, h_j, n_j = |s_j q_j|_2 and l_j = |s_j q_j|_1 from greedy_screen.py, rounded
 *    up (Cauchy-Schwarz serves spread rows, Hoelder rows with a few large inputs);
 * 3. m = max_j (a_j - B_j) is at most max_j e_j, and any j with a_j + B_j < m has e_j < m:
 *    not the argmax. The panels (16 outputs) holding the other j are computed exactly, with
 *    cpu_gemm.c's own kernel (the same bits as the full layer), and their first maximum is
 *    the argmax of the full row, ties to the lowest id as torch.argmax.
 *
 * Why int16 codes and vpmaddwd (16 multiply-adds an instruction, pairs of k added in int32):
 * the int8 -> float32 widening of a float screen is arithmetic enough to hold one row to
 * 16-20 GB/s here, while this reads the copy at memory speed (measured on GLM-4's 151,552 x
 * 1024 output layer, 2 threads: 9.8 -> 5.3 ms for one row, 15.5 -> 6.7 ms for four). The
 * row's codes are fine enough (16,513 steps each side at K = 1024) for their term of the
 * bound to stay below the weights'.
 *
 * Layout: panels of 16 outputs, panel[p][g][j][t] = q[16 p + j][2 g + t], K padded to even
 * with zeros: one ymm of 16 int16 holds 8 outputs x 2 k, against a broadcast pair of codes.
 *
 * Built for AVX-512 with VNNI, one zmm holds a group's 16 outputs x 2 k, vpdpwssd adds both
 * products into each output's int32 lane, and a pass takes up to 16 rows: the same exact
 * sums, the same bits (tested). The pair of codes is vpdpwssd's last operand, broadcast
 * straight from memory (16 rows: 9.6 -> 8.4-8.8 ms). GCC emits that as a vpbroadcastd load
 * beside each vpdpwssd, not as the instruction's embedded {1to16} operand; folding it in by
 * hand (inline asm) measured the same, 7.0 ms at 16 rows.
 *
 * Comparisons are in double. A row falls back (id -1: the caller computes every logit) when
 * anything is not finite, when sums could overflow, or when more than `max_panels` panels
 * qualify.
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_simd.h"

#define PANEL 16
#if defined(__AVX512F__) && defined(__AVX512VNNI__)
#define ROWS 16 /* rows a pass takes against a panel */
#else
#define ROWS 4
#endif
#define MAX_M 64  /* greedy_screen.py's MAX_ROWS */
#define CHUNK 16 /* panels a thread takes at a time, as cpu_gemm.c (1 row 4.1 -> 3.7 ms, 16 rows 8.3 -> 7.5) */
#if ROWS == 16
#define AHEAD 4096 /* bytes: the first pass's prefetch distance, as cpu_gemm_int8.c */
#else
#define AHEAD 1024 /* bytes: the first pass's prefetch distance, as cpu_gemm_int8.c */
#endif
#define U 5.9604644775390625e-8 /* 2^-24 */

void glm_panel_row_f32(const float *x, int64_t K, const float *panel, float *out16);

/* A row's codes and what its bound needs. */
typedef struct {
    float scale;              /* t */
    double norm2, norm1;      /* |x|_2, |x|_1, widened */
    double error2, error_max; /* |d|_2, |d|_inf, widened */
    int ok;                   /* finite: the row may be screened */
} RowCodes;

/* x (K floats) -> codes (K2 int16, the padding 0), and its norms */
/* each pair of codes lies `ps` int16 after the one before (2: the row's codes contiguous) */
static RowCodes quantize_row(const float *x, int64_t K, int64_t K2, int levels, int16_t *codes,
                             int64_t ps) {
    RowCodes row = {1.0f, 0.0, 0.0, 0.0, 0.0, 0};
    int has_nan;
    float top = abs_max(x, K, &has_nan);
    for (int64_t k = 0; k < K2; k++) codes[(k >> 1) * ps + (k & 1)] = 0;
    if (has_nan || !(top < INFINITY)) return row;
    float t = top / (float)levels;
    if (!(t >= 1.17549435e-38f)) t = 1.17549435e-38f; /* no denormal scale; |x / t| <= levels */
    row.scale = t;
    double sq = 0.0, sum = 0.0, err_sq = 0.0, err_max = 0.0;
    for (int64_t k = 0; k < K; k++) {
        double v = (double)x[k], c = nearbyint(v / (double)t);
        c = fmin(fmax(c, (double)-levels), (double)levels);
        codes[(k >> 1) * ps + (k & 1)] = (int16_t)c;
        double d = fabs(v - c * (double)t); /* t c is exact in double: 24 + 15 bits */
        sq += v * v;
        sum += fabs(v);
        err_sq += d * d;
        err_max = fmax(err_max, d);
    }
    /* double sums of K terms are within K 2^-53 of their values: widen by 1e-9 */
    row.norm2 = sqrt(sq) * (1.0 + 1e-9);
    row.norm1 = sum * (1.0 + 1e-9);
    row.error2 = sqrt(err_sq) * (1.0 + 1e-9);
    row.error_max = err_max * (1.0 + 1e-9);
    row.ok = isfinite(row.norm2) && isfinite(row.norm1);
    return row;
}

#if ROWS == 4
#define ROW(r)                                                                        \
    do {                                                                              \
        int32_t pair;                                                                 \
        memcpy(&pair, codes + (r) * K2 + 2 * g, sizeof pair);                         \
        __m256i v = _mm256_set1_epi32(pair);                                          \
        lo##r = _mm256_add_epi32(lo##r, _mm256_madd_epi16(v, w0));                    \
        hi##r = _mm256_add_epi32(hi##r, _mm256_madd_epi16(v, w1));                    \
    } while (0)

/* rows (1..4) of codes x one panel -> out (rows, 16 at stride ldo): s_j t_r S_rj;
 * `prefetch`: the first pass over the panel */
static void screen_tile(const int16_t *codes, int64_t K2, int rows, const int8_t *panel,
                        const float *scales, const RowCodes *info, float *out, int64_t ldo,
                        int prefetch) {
    __m256i lo0 = _mm256_setzero_si256(), lo1 = lo0, lo2 = lo0, lo3 = lo0;
    __m256i hi0 = lo0, hi1 = lo0, hi2 = lo0, hi3 = lo0;
#define G_LOOP(ROWS_)                                                                    \
    for (int64_t g = 0; g < K2 / 2; g++) {                                               \
        const int8_t *at = panel + g * 2 * PANEL;                                        \
        if (prefetch) _mm_prefetch((const char *)at + AHEAD, _MM_HINT_T0);               \
        __m256i w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)at));         \
        __m256i w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(at + 16)));  \
        ROWS_;                                                                           \
    }
    switch (rows) {
        case 4: G_LOOP(ROW(0); ROW(1); ROW(2); ROW(3)) break;
        case 3: G_LOOP(ROW(0); ROW(1); ROW(2)) break;
        case 2: G_LOOP(ROW(0); ROW(1)) break;
        default: G_LOOP(ROW(0)) break;
    }
#undef G_LOOP
    __m256 s0 = _mm256_loadu_ps(scales), s1 = _mm256_loadu_ps(scales + 8);
    __m256i lo[ROWS] = {lo0, lo1, lo2, lo3}, hi[ROWS] = {hi0, hi1, hi2, hi3};
    for (int r = 0; r < rows; r++) {
        __m256 t = _mm256_set1_ps(info[r].scale);
        _mm256_storeu_ps(out + r * ldo, _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(lo[r]), s0), t));
        _mm256_storeu_ps(out + r * ldo + 8, _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(hi[r]), s1), t));
    }
}
#undef ROW
#else
/* the tile's codes are packed pair-major (row r's pair g at 2 (g rows + r)): one pointer
 * and constant offsets reach all rows */
static inline __attribute__((always_inline)) void screen_rows(
    const int16_t *codes, int64_t K2, const int rows, const int8_t *panel, const float *scales,
    const RowCodes *info, float *out, int64_t ldo, int prefetch) {
    /* named accumulators, not an array: GCC keeps a 1 KB array in memory */
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0,
            a7 = a0, a8 = a0, a9 = a0, a10 = a0, a11 = a0, a12 = a0, a13 = a0, a14 = a0,
            a15 = a0;
#define DOT(r)                                                                    \
    if (r < rows) {                                                               \
        int32_t pair;                                                             \
        memcpy(&pair, pairs + 2 * r, sizeof pair);                                \
        a##r = _mm512_dpwssd_epi32(a##r, w, _mm512_set1_epi32(pair));             \
    }
    for (int64_t g = 0; g < K2 / 2; g++) {
        const int8_t *at = panel + g * 2 * PANEL;
        if (prefetch) _mm_prefetch((const char *)at + AHEAD, _MM_HINT_T0);
        __m512i w = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)at));
        const int16_t *pairs = codes + g * 2 * rows;
        DOT(0) DOT(1) DOT(2) DOT(3) DOT(4) DOT(5) DOT(6) DOT(7)
        DOT(8) DOT(9) DOT(10) DOT(11) DOT(12) DOT(13) DOT(14) DOT(15)
    }
#undef DOT
    __m512i acc[ROWS] = {a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15};
    __m512 s = _mm512_loadu_ps(scales);
    for (int r = 0; r < rows; r++)
        _mm512_storeu_ps(out + r * ldo, _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc[r]), s),
                                                      _mm512_set1_ps(info[r].scale)));
}

/* rows (1..16) of codes x one panel, as the AVX2 build's screen_tile */
#define CASE(n) case n: screen_rows(codes, K2, n, panel, scales, info, out, ldo, prefetch); break;
static void screen_tile(const int16_t *codes, int64_t K2, int rows, const int8_t *panel,
                        const float *scales, const RowCodes *info, float *out, int64_t ldo,
                        int prefetch) {
    switch (rows) {
        CASE(16) CASE(15) CASE(14) CASE(13) CASE(12) CASE(11) CASE(10) CASE(9)
        CASE(8) CASE(7) CASE(6) CASE(5) CASE(4) CASE(3) CASE(2) default: CASE(1)
    }
}
#undef CASE
#endif

/* The per-output constants of the bound. */
typedef struct {
    const float *bounds, *max_errors, *norms2, *norms1; /* c_j, h_j, n_j, l_j */
} Constants;

/* B_j for the 4 ids of a block from j (8 with AVX-512, the same operations lane for lane,
 * so the same doubles), in doubles. Its roundings in double (relative 2^-53 an operation)
 * are far inside the slack of its terms (norms widened by 1e-9, constants by 1e-3, and the
 * 4u |a_j| term), so B_j - and a_j -/+ B_j below - stay on the safe side. */
#if defined(__AVX512F__)
static inline __m512d bound8(const Constants *k, const RowCodes *row, const float *a, int64_t j,
                             __m512d *a8) {
#define LOAD(p) _mm512_cvtps_pd(_mm256_loadu_ps((p) + j))
    __m512d av = LOAD(a);
    __m512d weights = _mm512_min_pd(_mm512_mul_pd(_mm512_set1_pd(row->norm2), LOAD(k->bounds)),
                                    _mm512_mul_pd(_mm512_set1_pd(row->norm1), LOAD(k->max_errors)));
    __m512d codes = _mm512_min_pd(_mm512_mul_pd(_mm512_set1_pd(row->error2), LOAD(k->norms2)),
                                  _mm512_mul_pd(_mm512_set1_pd(row->error_max), LOAD(k->norms1)));
#undef LOAD
    __m512d scaling = _mm512_mul_pd(_mm512_set1_pd(4 * U), _mm512_abs_pd(av));
    *a8 = av;
    return _mm512_add_pd(_mm512_add_pd(weights, codes), scaling);
}

/* the lanes of a block of 8 ids from j that are ids below `limit` */
static inline __mmask8 valid8(int64_t limit, int64_t j) {
    return limit - j >= 8 ? 0xff : (__mmask8)((1u << (limit - j)) - 1);
}
#else
static inline __m256d bound4(const Constants *k, const RowCodes *row, const float *a, int64_t j,
                             __m256d *a4) {
#define LOAD(p) _mm256_cvtps_pd(_mm_loadu_ps((p) + j))
    const __m256d sign = _mm256_set1_pd(-0.0);
    __m256d av = LOAD(a);
    __m256d weights = _mm256_min_pd(_mm256_mul_pd(_mm256_set1_pd(row->norm2), LOAD(k->bounds)),
                                    _mm256_mul_pd(_mm256_set1_pd(row->norm1), LOAD(k->max_errors)));
    __m256d codes = _mm256_min_pd(_mm256_mul_pd(_mm256_set1_pd(row->error2), LOAD(k->norms2)),
                                  _mm256_mul_pd(_mm256_set1_pd(row->error_max), LOAD(k->norms1)));
#undef LOAD
    __m256d scaling = _mm256_mul_pd(_mm256_set1_pd(4 * U), _mm256_andnot_pd(sign, av));
    *a4 = av;
    return _mm256_add_pd(_mm256_add_pd(weights, codes), scaling);
}

/* the lanes of a block of 4 ids from j that are ids below `limit` (all bits set) */
static inline __m256d valid4(int64_t limit, int64_t j) {
    return _mm256_cmp_pd(_mm256_set_pd(3.0, 2.0, 1.0, 0.0), _mm256_set1_pd((double)(limit - j)),
                         _CMP_LT_OQ);
}
#endif

/* the largest of `lanes` lows, or NaN where a lane's check is not 0 (a non-finite a_j) */
static double lanes_best(const double *lows, const double *checks, int lanes) {
    double m = -INFINITY;
    for (int i = 0; i < lanes; i++) {
        if (checks[i] != 0.0) return NAN;
        m = fmax(m, lows[i]);
    }
    return m;
}

/* max_j (a_j - B_j) over the first `limit` ids, or NaN when any a_j is not finite. Blocks of
 * 4 ids (8 with AVX-512: 0.6B model's output layer, 16 rows, about 0.6 ms less); the last
 * block's lanes at or past `limit` are masked (a and the constants are padded to whole
 * panels, so every block's loads are in bounds). The maximum is exact and a non-finite a_j
 * makes a NaN in any grouping: both builds give the same value. */
static double lowest_best(const float *a, const Constants *k, const RowCodes *row,
                          int64_t limit) {
#if defined(__AVX512F__)
    __m512d low8 = _mm512_set1_pd(-INFINITY), finite = _mm512_setzero_pd(), av;
    for (int64_t j = 0; j < limit; j += 8) {
        __mmask8 valid = valid8(limit, j);
        __m512d b = bound8(k, row, a, j, &av);
        low8 = _mm512_mask_max_pd(low8, valid, low8, _mm512_sub_pd(av, b));
        /* NaN from any inf or NaN among the ids */
        finite = _mm512_mask_add_pd(finite, valid, finite, _mm512_sub_pd(av, av));
    }
    double lows[8], checks[8];
    _mm512_storeu_pd(lows, low8);
    _mm512_storeu_pd(checks, finite);
    return lanes_best(lows, checks, 8);
#else
    __m256d low4 = _mm256_set1_pd(-INFINITY), finite = _mm256_setzero_pd(), av;
    for (int64_t j = 0; j < limit; j += 4) {
        __m256d valid = valid4(limit, j);
        __m256d b = bound4(k, row, a, j, &av);
        low4 = _mm256_max_pd(low4, _mm256_blendv_pd(low4, _mm256_sub_pd(av, b), valid));
        finite = _mm256_add_pd(finite, _mm256_and_pd(valid, _mm256_sub_pd(av, av)));
    }
    double lows[4], checks[4];
    _mm256_storeu_pd(lows, low4);
    _mm256_storeu_pd(checks, finite);
    return lanes_best(lows, checks, 4);
#endif
}

/* The panels (in order) holding an id j < limit with a_j + B_j >= threshold, at most
 * max_panels + 1 of them: their count. */
static int64_t candidate_panels(const float *a, const Constants *k, const RowCodes *row,
                                int64_t limit, double threshold, int64_t max_panels,
                                int64_t *candidates) {
    int64_t count = 0;
#if defined(__AVX512F__)
    const __m512d t = _mm512_set1_pd(threshold);
    __m512d av;
    for (int64_t j = 0; j < limit && count <= max_panels; j += 8) {
        __mmask8 valid = valid8(limit, j);
        __m512d b = bound8(k, row, a, j, &av);
        __mmask8 hit = _mm512_mask_cmp_pd_mask(valid, _mm512_add_pd(av, b), t, _CMP_GE_OQ);
        if (hit && (count == 0 || candidates[count - 1] != j / PANEL))
            candidates[count++] = j / PANEL; /* 8 outputs never straddle two panels */
    }
#else
    const __m256d t = _mm256_set1_pd(threshold);
    __m256d av;
    for (int64_t j = 0; j < limit && count <= max_panels; j += 4) {
        __m256d valid = valid4(limit, j);
        __m256d b = bound4(k, row, a, j, &av);
        __m256d hit = _mm256_and_pd(valid, _mm256_cmp_pd(_mm256_add_pd(av, b), t, _CMP_GE_OQ));
        if (_mm256_movemask_pd(hit) && (count == 0 || candidates[count - 1] != j / PANEL))
            candidates[count++] = j / PANEL; /* 4 outputs never straddle two panels */
    }
#endif
    return count;
}

/* One row: its argmax from its screened logits `a` (limit of them), or -1. */
static int64_t row_argmax(const float *x, int64_t K, const float *panels, const float *a,
                          const Constants *k, const RowCodes *row, double max_norm,
                          int64_t limit, int64_t max_panels) {
    if (!row->ok || row->norm2 * max_norm > 1e30) return -1; /* no sum may overflow */
    /* the absolute term: a product that underflows is off by up to 2^-149 */
    const double floor = (double)K * 1e-44;
    double m = lowest_best(a, k, row, limit);
    if (isnan(m)) return -1;
    /* m - floor = max_j (a_j - B_j - floor); the candidates: a_j + B_j + floor >= m - floor */
    int64_t *candidates = malloc((size_t)(max_panels + 1) * sizeof(int64_t));
    if (!candidates) return -1;
    int64_t count = candidate_panels(a, k, row, limit, m - 2 * floor, max_panels, candidates);
    int64_t best = -1;
    if (count <= max_panels) {
        float top = 0.0f, exact[PANEL];
        for (int64_t c = 0; c < count; c++) {
            int64_t p = candidates[c];
            glm_panel_row_f32(x, K, panels + p * K * PANEL, exact);
            for (int t = 0; t < PANEL && p * PANEL + t < limit; t++)
                if (best < 0 || exact[t] > top) { /* strict: the lowest id among equals */
                    best = p * PANEL + t;
                    top = exact[t];
                }
        }
    }
    free(candidates);
    return best;
}

/* x (M <= 8, K); panels (ceil(N / 16), K, 16) float32 as glm_linear_f32 takes them;
 * q_panels (ceil(N / 16), K2 / 2, 16, 2) int8 (K2: K rounded up to even); q_scales,
 * bounds (c_j), max_errors (h_j), norms2 (n_j), norms1 (l_j), each (16 ceil(N / 16));
 * levels: the row codes' steps each side; max_norm: the largest |w_j|_2 or |s_j q_j|_2;
 * limit <= N: the ids to choose from; approx: M x 16 ceil(limit / 16) floats of scratch
 * (the screened logits, left there); ids (M): the argmax of each row's first `limit`
 * logits, or -1 where the row must be computed in full. */
void glm_greedy_f32(const float *x, int64_t M, int64_t K, const float *panels,
                    const int8_t *q_panels, const float *q_scales, const float *bounds,
                    const float *max_errors, const float *norms2, const float *norms1,
                    int64_t levels, double max_norm, int64_t limit, int64_t max_panels,
                    float *approx, int64_t *ids, int num_threads) {
    int64_t num_panels = (limit + PANEL - 1) / PANEL, width = num_panels * PANEL;
    int64_t K2 = (K + 1) & ~(int64_t)1;
    int16_t *codes = M >= 1 && M <= MAX_M ? malloc((size_t)(M * K2) * sizeof(int16_t)) : 0;
    if (!codes || levels < 1 || (double)levels * 127.0 * (double)K2 > 2147483647.0) {
        for (int64_t r = 0; r < M; r++) ids[r] = -1;
        free(codes);
        return;
    }
    RowCodes rows[MAX_M];
    const Constants constants = {bounds, max_errors, norms2, norms1};
#pragma omp parallel num_threads(num_threads)
    {
#pragma omp for schedule(static)
        for (int64_t r = 0; r < M; r++) {
#if ROWS == 16 /* a pass's codes pair-major (screen_rows above) */
            int64_t r0 = r - r % ROWS, n = M - r0 < ROWS ? M - r0 : ROWS;
            rows[r] = quantize_row(x + r * K, K, K2, (int)levels, codes + r0 * K2 + 2 * (r - r0), 2 * n);
#else
            rows[r] = quantize_row(x + r * K, K, K2, (int)levels, codes + r * K2, 2);
#endif
        }
#pragma omp for schedule(dynamic, CHUNK)
        for (int64_t p = 0; p < num_panels; p++)
            for (int64_t m = 0; m < M; m += ROWS)
                screen_tile(codes + m * K2, K2, (int)(M - m < ROWS ? M - m : ROWS),
                            q_panels + p * K2 * PANEL, q_scales + p * PANEL, rows + m,
                            approx + m * width + p * PANEL, width, m == 0);
#pragma omp for schedule(static)
        for (int64_t r = 0; r < M; r++)
            ids[r] = row_argmax(x + r * K, K, panels, approx + r * width, &constants, rows + r,
                                max_norm, limit, max_panels);
    }
    free(codes);
}
