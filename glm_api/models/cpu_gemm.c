/* Float32 linear layers on x86 CPUs with AVX2 and FMA: out = x @ w^T (+ bias).
 *
 * Built and loaded by cpu_gemm.py. The weight is stored once in panels of 16 outputs,
 * panel[p][k][j] = w[16 p + j][k] (N padded to a multiple of 16), so one decode step streams
 * each weight byte from memory exactly once, whatever the number of rows.
 *
 * Every output is ONE chain of fused multiply-adds over k = 0 .. K-1, in order, and no other
 * arithmetic touches it but the bias add: a row's result is bit-identical whether it is
 * computed alone, among 15 others or in a 256-row prefill chunk, and whatever the number of
 * threads (a panel belongs to one thread). Rows are processed 6 at a time against a panel
 * held in cache: 12 accumulators, 2 weight vectors and 1 broadcast fill the 16 ymm
 * registers, and each weight vector loaded feeds 6 FMAs.
 *
 * With more than 6 rows a panel is passed over several times: the first pass waits on
 * memory, the others on arithmetic. So every pass also prefetches its share of the next
 * panel, one cache line (one k of a panel) every `T` values of k for T passes: memory stays
 * busy through the arithmetic (16 rows of the 0.6B model's decode step: 15-20% faster).
 * A single pass (up to 6 rows) prefetches `AHEAD` bytes ahead in its own stream instead:
 * near a panel's end that is the next panel's start (panels lie one after another). Measured
 * on the 0.6B model's layers at 1 row, interleaved: 7-12% faster than the hardware prefetcher
 * alone at 1024 bytes (16 values of k); 512, 1536, 2048 and 4096 bytes did no better.
 *
 * Threads take panels CHUNK at a time (dynamic): a thread the OS preempts for the HTTP server
 * holds up only its chunk (measured 2-5% faster steps, more with a competing process). 16
 * panels (1 MB at K = 1024) rather than 4: each thread streams longer runs of memory (Zen 5
 * EPYC, 0.6B model's layers, interleaved: 1 / 4 / 16 rows 17.0-17.6 / 19.0 / 29.2-29.6 ->
 * 15.8-16.4 / 17.5 / 27.5 ms).
 *
 * Built for AVX-512 (cpu_kernels.py does so where the CPU has it), a panel's 16 outputs are
 * one zmm register and a tile takes up to 16 rows (16 accumulators, the weight vector, the
 * broadcasts folded into the FMAs): a 16-row decode step passes over each panel once. Each
 * output is still the same single chain of FMAs in the same order, so both builds give the
 * same bits (tested).
 */
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>

#define PANEL 16
#ifdef __AVX512F__
#define TILE 16
#else
#define TILE 6
#endif
#define CHUNK 16 /* panels a thread takes at a time */
#define PACK_K 128 /* values of k in a block of the rows' packing */
#ifdef __AVX512F__
/* bytes: a single pass's prefetch distance; a pass of up to 16 rows spends longer on each
 * line (measured on the Zen 5 EPYC, 0.6B model's layers: 16 rows 38.5 -> 29.9 ms, 8 rows
 * 30.4 -> 26.4 at 4096 rather than 1024; 8192 and 16384 no better) */
#define AHEAD 4096
#else
#define AHEAD 1024 /* bytes: a single pass's prefetch distance */
#endif

#define ROW(r)                                                                        \
    do {                                                                              \
        __m256 v = _mm256_broadcast_ss(x##r + k);                                      \
        lo##r = _mm256_fmadd_ps(v, w0, lo##r);                                         \
        hi##r = _mm256_fmadd_ps(v, w1, hi##r);                                         \
    } while (0)

#define PREFETCH_EVERY(T)                                                              \
    do {                                                                               \
        if (next && --countdown == 0) {                                                \
            _mm_prefetch((const char *)next, _MM_HINT_T0);                             \
            next += PANEL;                                                             \
            countdown = T;                                                             \
        }                                                                              \
    } while (0)

#ifndef __AVX512F__
/* rows (1..6) x one panel; `next`: the lines of the next panel this pass prefetches, one
 * every `passes` values of k (NULL: none) */
static void tile(const float *x, int packed, int64_t K, int rows, const float *panel,
                 float *out, int64_t ldo, int valid, const float *bias, const float *next,
                 int64_t passes) {
    (void)packed; /* rows as they are */
    const int ahead = passes == 1;
    int64_t countdown = passes;
    __m256 lo0 = _mm256_setzero_ps(), lo1 = lo0, lo2 = lo0, lo3 = lo0, lo4 = lo0, lo5 = lo0;
    __m256 hi0 = lo0, hi1 = lo0, hi2 = lo0, hi3 = lo0, hi4 = lo0, hi5 = lo0;
    const float *x0 = x, *x1 = x + K, *x2 = x + 2 * K, *x3 = x + 3 * K, *x4 = x + 4 * K,
                *x5 = x + 5 * K;
    /* one loop per row count, without per-k branches: a partial tile (the last rows of M,
     * 4 of them at 16 rows or in a 256-row chunk) runs as fast per row as a full one
     * (measured: 16-row steps of the 0.6B model's linears 3-12% faster than one loop that
     * tested its rows at every k) */
#define K_LOOP(ROWS)                                                                     \
    for (int64_t k = 0; k < K; k++) {                                                    \
        __m256 w0 = _mm256_loadu_ps(panel + k * PANEL);                                  \
        __m256 w1 = _mm256_loadu_ps(panel + k * PANEL + 8);                              \
        PREFETCH_EVERY(passes);                                                          \
        if (ahead) _mm_prefetch((const char *)(panel + k * PANEL) + AHEAD, _MM_HINT_T0);   \
        ROWS;                                                                            \
    }
    switch (rows) {
        case 6: K_LOOP(ROW(0); ROW(1); ROW(2); ROW(3); ROW(4); ROW(5)) break;
        case 5: K_LOOP(ROW(0); ROW(1); ROW(2); ROW(3); ROW(4)) break;
        case 4: K_LOOP(ROW(0); ROW(1); ROW(2); ROW(3)) break;
        case 3: K_LOOP(ROW(0); ROW(1); ROW(2)) break;
        case 2: K_LOOP(ROW(0); ROW(1)) break;
        default: K_LOOP(ROW(0)) break;
    }
#undef K_LOOP
    __m256 lo[TILE] = {lo0, lo1, lo2, lo3, lo4, lo5};
    __m256 hi[TILE] = {hi0, hi1, hi2, hi3, hi4, hi5};
    float row[PANEL];
    for (int r = 0; r < rows; r++) {
        _mm256_storeu_ps(row, lo[r]);
        _mm256_storeu_ps(row + 8, hi[r]);
        float *o = out + r * ldo;
        for (int j = 0; j < valid; j++) o[j] = bias ? row[j] + bias[j] : row[j];
    }
}
#endif

#ifdef __AVX512F__
/* rows (1..16, a constant where inlined) x one panel, as tile() below; row r's x[k] is
 * xt[r * rs + k * ks]: a tile's rows are packed k-major (rs 1, ks rows), so one pointer and
 * constant offsets reach all 16 (16 row pointers would spill the accumulators) */
static inline __attribute__((always_inline)) void tile16(const float *xt, int64_t rs,
                                                         int64_t ks, int64_t K, const int rows,
                                                         const float *panel, float *out,
                                                         int64_t ldo, int valid,
                                                         const float *bias, const float *next,
                                                         int64_t passes) {
    const int ahead = passes == 1;
    int64_t countdown = passes;
    /* named accumulators, not an array: GCC keeps a 1 KB array in memory */
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0,
           a7 = a0, a8 = a0, a9 = a0, a10 = a0, a11 = a0, a12 = a0, a13 = a0, a14 = a0, a15 = a0;
#define FMA16(r) \
    if (r < rows) a##r = _mm512_fmadd_ps(_mm512_set1_ps(xk[r * rs]), w, a##r)
    for (int64_t k = 0; k < K; k++) {
        __m512 w = _mm512_loadu_ps(panel + k * PANEL);
        PREFETCH_EVERY(passes);
        if (ahead) _mm_prefetch((const char *)(panel + k * PANEL) + AHEAD, _MM_HINT_T0);
        const float *xk = xt + k * ks;
        FMA16(0); FMA16(1); FMA16(2); FMA16(3); FMA16(4); FMA16(5); FMA16(6); FMA16(7);
        FMA16(8); FMA16(9); FMA16(10); FMA16(11); FMA16(12); FMA16(13); FMA16(14); FMA16(15);
    }
#undef FMA16
    __m512 acc[TILE] = {a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15};
    float row[PANEL];
    for (int r = 0; r < rows; r++) {
        _mm512_storeu_ps(row, acc[r]);
        float *o = out + r * ldo;
        for (int j = 0; j < valid; j++) o[j] = bias ? row[j] + bias[j] : row[j];
    }
}

/* rows of x packed k-major (`packed`: xt[k * rows + r]) or, without memory for that, as
 * they are (xt[r * K + k]) */
#define CASE(n)                                                                             \
    case n:                                                                                 \
        if (packed) tile16(x, 1, n, K, n, panel, out, ldo, valid, bias, next, passes);      \
        else tile16(x, K, 1, K, n, panel, out, ldo, valid, bias, next, passes);             \
        break;
static void tile(const float *x, int packed, int64_t K, int rows, const float *panel,
                 float *out, int64_t ldo, int valid, const float *bias, const float *next,
                 int64_t passes) {
    switch (rows) { /* one loop per row count, as below */
        CASE(16) CASE(15) CASE(14) CASE(13) CASE(12) CASE(11) CASE(10) CASE(9)
        CASE(8) CASE(7) CASE(6) CASE(5) CASE(4) CASE(3) CASE(2) default: CASE(1)
    }
}
#undef CASE
#endif

/* x (M, K) row-major, panels (ceil(N / 16), K, 16), bias (N) or NULL, out (M, N). */
void glm_linear_f32(const float *x, int64_t M, int64_t K, const float *panels, int64_t N,
                    const float *bias, float *out, int num_threads) {
    int64_t num_panels = (N + PANEL - 1) / PANEL, num_tiles = (M + TILE - 1) / TILE;
#ifdef __AVX512F__
    /* each tile of rows packed k-major, in place of x's rows: xt[m0 K + k rows + r] */
    float *xt = M > 1 ? aligned_alloc(64, (size_t)((M * K * 4 + 63) & ~(int64_t)63)) : 0;
    const float *rows_x = xt ? xt : x;
    const int packed = xt != 0 || M == 1;
#else
    const float *rows_x = x;
    const int packed = 0;
#endif
#pragma omp parallel num_threads(num_threads)
    {
#ifdef __AVX512F__
        if (xt) {
            /* in blocks of PACK_K values of k, so that every thread packs a share of a single
             * tile (a decode step's 16 rows) rather than one thread all of it while the other
             * waits (0.6B model's layers, 16 rows, interleaved: 27.4-28.5 -> 26.9-27.6 ms) */
            int64_t blocks = (K + PACK_K - 1) / PACK_K;
#pragma omp for schedule(static)
            for (int64_t b = 0; b < num_tiles * blocks; b++) {
                int64_t t = b / blocks, k0 = (b % blocks) * PACK_K;
                int64_t k1 = k0 + PACK_K < K ? k0 + PACK_K : K;
                int64_t m0 = t * TILE, rows = M - m0 < TILE ? M - m0 : TILE;
                for (int64_t r = 0; r < rows; r++)
                    for (int64_t k = k0; k < k1; k++) xt[m0 * K + k * rows + r] = x[(m0 + r) * K + k];
            }
        }
#endif
#pragma omp for schedule(dynamic, CHUNK)
        for (int64_t p = 0; p < num_panels; p++) {
            int64_t n0 = p * PANEL;
            int valid = (int)(N - n0 < PANEL ? N - n0 : PANEL);
            int64_t passes = num_tiles;
            /* the next panel of this thread's chunk (the next chunk may go to the other) */
            int has_next = p + 1 < num_panels && (p + 1) % CHUNK && passes > 1;
            const float *next = has_next ? panels + (p + 1) * K * PANEL : 0;
            for (int64_t m = 0, j = 0; m < M; m += TILE, j++) {
                int rows = (int)(M - m < TILE ? M - m : TILE);
                tile(rows_x + m * K, packed, K, rows, panels + p * K * PANEL, out + m * N + n0,
                     N, valid, bias ? bias + n0 : 0, next ? next + (j * K / passes) * PANEL : 0,
                     passes);
            }
        }
    }
#ifdef __AVX512F__
    free(xt);
#endif
}

/* One row against one panel: out16 = the 16 outputs glm_linear_f32 gives that row there (no
 * bias), whatever M it runs with, since each output is its own chain. cpu_greedy.c's exact
 * pass computes the candidates of a greedy argmax with it. */
void glm_panel_row_f32(const float *x, int64_t K, const float *panel, float *out16) {
    tile(x, 1, K, 1, panel, out16, PANEL, PANEL, 0, 0, 1);
}
