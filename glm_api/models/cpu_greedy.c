/* Greedy decoding's argmax over a float32 output layer, exact, from an INT8 copy of it.
 *
 * Built and loaded by cpu_kernels.py; called through greedy_screen.py. A single stream's
 * decode step reads every weight once, and the output layer (vocabulary x hidden: 620 MB of
 * GLM-4's 1.7 GB at hidden 1024) is a third of it. A greedy row needs only its argmax, so:
 *
 * 1. screen: a_j = s_j * (x . q_j) over int8 weights q (one scale s_j per output), a quarter
 *    of the bytes, widened to float32 here: one FMA chain per output, then the scale;
 * 2. bound: |a_j - e_j| <= B_j = min(|x|_2 c_j, |x|_1 h_j), where e_j is what
 *    glm_linear_f32 computes and c_j, h_j (greedy_screen.py) the 2-norm and the largest
 *    element of the quantization error of w_j plus the roundings of both float sums, rounded
 *    up (Cauchy-Schwarz serves spread rows, Hoelder rows with a few large inputs);
 * 3. m = max_j (a_j - B_j) is at most max_j e_j, and any j with a_j + B_j < m has e_j < m:
 *    not the argmax. The panels (16 outputs) holding the other j are computed exactly, with
 *    cpu_gemm.c's own kernel (the same bits as the full layer), and their first maximum is
 *    the argmax of the full row, ties to the lowest id as torch.argmax.
 *
 * Comparisons are in double. A row falls back (id -1: the caller computes every logit) when
 * anything is not finite, when sums could overflow, or when more than `max_panels` panels
 * qualify.
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>

#define PANEL 16
#define ROWS 4 /* greedy_screen.py's MAX_ROWS */
#define CHUNK 4

void glm_panel_row_f32(const float *x, int64_t K, const float *panel, float *out16);

#define ROW(r)                                                                        \
    do {                                                                              \
        __m256 v = _mm256_broadcast_ss(x + (r) * K + k);                               \
        lo##r = _mm256_fmadd_ps(v, w0, lo##r);                                         \
        hi##r = _mm256_fmadd_ps(v, w1, hi##r);                                         \
    } while (0)

/* rows (1..4) x one int8 panel (K, 16) -> out (rows, 16 at stride ldo), scaled */
static void screen_tile(const float *x, int64_t K, int rows, const int8_t *panel,
                        const float *scales, float *out, int64_t ldo) {
    __m256 lo0 = _mm256_setzero_ps(), lo1 = lo0, lo2 = lo0, lo3 = lo0;
    __m256 hi0 = lo0, hi1 = lo0, hi2 = lo0, hi3 = lo0;
#define K_LOOP(ROWS_)                                                                    \
    for (int64_t k = 0; k < K; k++) {                                                    \
        const int8_t *at = panel + k * PANEL; /* vpmovsxbd from memory: no shuffle */     \
        __m256 w0 = _mm256_cvtepi32_ps(                                                  \
            _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)at)));                 \
        __m256 w1 = _mm256_cvtepi32_ps(                                                  \
            _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(at + 8))));           \
        ROWS_;                                                                           \
    }
    switch (rows) {
        case 4: K_LOOP(ROW(0); ROW(1); ROW(2); ROW(3)) break;
        case 3: K_LOOP(ROW(0); ROW(1); ROW(2)) break;
        case 2: K_LOOP(ROW(0); ROW(1)) break;
        default: K_LOOP(ROW(0)) break;
    }
#undef K_LOOP
    __m256 s0 = _mm256_loadu_ps(scales), s1 = _mm256_loadu_ps(scales + 8);
    __m256 lo[ROWS] = {lo0, lo1, lo2, lo3}, hi[ROWS] = {hi0, hi1, hi2, hi3};
    for (int r = 0; r < rows; r++) {
        _mm256_storeu_ps(out + r * ldo, _mm256_mul_ps(lo[r], s0));
        _mm256_storeu_ps(out + r * ldo + 8, _mm256_mul_ps(hi[r], s1));
    }
}

/* One row: its argmax from its screened logits `a` (limit of them), or -1. */
static int64_t row_argmax(const float *x, int64_t K, const float *panels, const float *a,
                          const float *bounds, const float *max_errors, double max_norm,
                          int64_t limit, int64_t max_panels) {
    double sq = 0.0, sum = 0.0;
    for (int64_t k = 0; k < K; k++) {
        sq += (double)x[k] * (double)x[k];
        sum += fabs((double)x[k]);
    }
    double norm2 = sqrt(sq) * (1.0 + 1e-9), norm1 = sum * (1.0 + 1e-9);
    if (!isfinite(norm1) || norm2 * max_norm > 1e30) return -1; /* no sum may overflow */
    /* the absolute term: a product that underflows is off by up to 2^-149 */
    const double floor = (double)K * 1e-44;
#define BOUND(j) (fmin(norm2 * bounds[j], norm1 * max_errors[j]) + floor)
    double m = -INFINITY;
    for (int64_t j = 0; j < limit; j++) {
        if (!isfinite(a[j])) return -1;
        double low = (double)a[j] - BOUND(j);
        if (low > m) m = low;
    }
    int64_t count = 0, last = -1;
    for (int64_t j = 0; j < limit; j++)
        if ((double)a[j] + BOUND(j) >= m && j / PANEL != last) {
            last = j / PANEL;
            if (++count > max_panels) return -1;
        }
    int64_t best = -1;
    float top = 0.0f, exact[PANEL];
    last = -1;
    for (int64_t j = 0; j < limit; j++) {
        if (!((double)a[j] + BOUND(j) >= m) || j / PANEL == last) continue;
        last = j / PANEL;
        glm_panel_row_f32(x, K, panels + last * K * PANEL, exact);
        for (int t = 0; t < PANEL && last * PANEL + t < limit; t++)
            if (best < 0 || exact[t] > top) { /* strict: the lowest id among equals */
                best = last * PANEL + t;
                top = exact[t];
            }
    }
#undef BOUND
    return best;
}

/* x (M <= 4, K); panels (ceil(N / 16), K, 16) float32 as glm_linear_f32 takes them;
 * q_panels the same shape in int8, q_scales, bounds (c_j) and max_errors (h_j), each
 * (16 ceil(N / 16)); max_norm: the largest |w_j|_2 or |s_j q_j|_2; limit <= N: the ids to
 * choose from; approx: M x 16 ceil(limit / 16) floats of scratch (the screened logits, left
 * there); ids (M): the argmax of each row's first `limit` logits, or -1 where the row must
 * be computed in full. */
void glm_greedy_f32(const float *x, int64_t M, int64_t K, const float *panels,
                    const int8_t *q_panels, const float *q_scales, const float *bounds,
                    const float *max_errors, double max_norm, int64_t limit,
                    int64_t max_panels, float *approx, int64_t *ids, int num_threads) {
    int64_t num_panels = (limit + PANEL - 1) / PANEL, width = num_panels * PANEL;
    if (M < 1 || M > ROWS) {
        for (int64_t r = 0; r < M; r++) ids[r] = -1;
        return;
    }
#pragma omp parallel num_threads(num_threads)
    {
#pragma omp for schedule(dynamic, CHUNK)
        for (int64_t p = 0; p < num_panels; p++)
            screen_tile(x, K, (int)M, q_panels + p * K * PANEL, q_scales + p * PANEL,
                        approx + p * PANEL, width);
#pragma omp for schedule(static)
        for (int64_t r = 0; r < M; r++)
            ids[r] = row_argmax(x + r * K, K, panels, approx + r * width, bounds, max_errors,
                                max_norm, limit, max_panels);
    }
}
