/* Decode attention over the slot KV cache, float32, x86 CPUs with AVX2 and FMA.
 *
 * Built and loaded by cpu_kernels.py; called through cpu_attention.py. One call does a whole
 * layer's decode step: for every sequence (one new query row each) it writes the row's key
 * and value into the sequence's slot, then attends over all the slot's keys, every head.
 *
 * Work is split into (sequence, kv head) tasks. A task reads its keys and values once, in
 * order, for all the query heads that share them (grouped-query attention), and is computed
 * by one thread start to end in a fixed order: a sequence's result has the same bits
 * whatever the other sequences of the step are and whatever the number of threads.
 *
 * Softmax is exact in form (max subtracted, then exp, then divided by the sum); exp is a
 * degree-6 polynomial after Cody-Waite range reduction (Cephes' expf), within 2 ulp. A NaN
 * or infinite score makes that head's output NaN, as in SDPA, rather than hiding it.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_simd.h"

/* per thread, grown as needed: scores (group, padded length) then accumulators (group, dim) */
static __thread float *scratch;
static __thread size_t scratch_floats;

static float *scratch_for(size_t floats) {
    if (floats > scratch_floats) {
        free(scratch);
        scratch = aligned_alloc(32, ((floats * sizeof(float) + 31) / 32) * 32);
        scratch_floats = scratch ? floats : 0;
    }
    return scratch;
}

/* one (sequence, kv head): keys/values (L, D) of the slot; queries and outputs (G, D) */
static void task(const float *q, const float *K, const float *V, int64_t L, int64_t G,
                 int64_t D, float scale, float *out, int64_t out_head_stride, float *work) {
    int64_t padded = (L + 7) & ~(int64_t)7;
    float *scores = work;             /* (G, padded) */
    float *acc = work + G * padded;   /* (G, D) */
    for (int64_t t = 0; t < L; t++) {
        const float *k = K + t * D;
        for (int64_t g = 0; g < G; g++) {
            const float *qg = q + g * D;
            __m256 s = _mm256_setzero_ps();
            for (int64_t d = 0; d < D; d += 8)
                s = _mm256_fmadd_ps(_mm256_loadu_ps(qg + d), _mm256_loadu_ps(k + d), s);
            scores[g * padded + t] = hsum(s) * scale;
        }
    }
    for (int64_t g = 0; g < G; g++) {
        float *sg = scores + g * padded;
        float top = sg[0];
        int invalid = sg[0] != sg[0];
        for (int64_t t = 1; t < L; t++) {
            invalid |= sg[t] != sg[t];
            top = sg[t] > top ? sg[t] : top;
        }
        if (invalid || top - top != 0.0f) { /* a NaN or an infinite score: NaN, as SDPA gives */
            for (int64_t t = 0; t < L; t++) sg[t] = __builtin_nanf("");
            continue;
        }
        for (int64_t t = L; t < padded; t++) sg[t] = top; /* exp'd with the rest, then zeroed */
        __m256 m = _mm256_set1_ps(top), total = _mm256_setzero_ps();
        for (int64_t t = 0; t < padded; t += 8) {
            __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(sg + t), m));
            _mm256_storeu_ps(sg + t, e);
        }
        for (int64_t t = L; t < padded; t++) sg[t] = 0.0f;
        for (int64_t t = 0; t < padded; t += 8) total = _mm256_add_ps(total, _mm256_loadu_ps(sg + t));
        float inv = 1.0f / hsum(total);
        for (int64_t t = 0; t < L; t++) sg[t] *= inv;
    }
    memset(acc, 0, (size_t)(G * D) * sizeof(float));
    for (int64_t t = 0; t < L; t++) {
        const float *v = V + t * D;
        for (int64_t g = 0; g < G; g++) {
            __m256 p = _mm256_set1_ps(scores[g * padded + t]);
            float *a = acc + g * D;
            for (int64_t d = 0; d < D; d += 8)
                _mm256_storeu_ps(a + d, _mm256_fmadd_ps(p, _mm256_loadu_ps(v + d), _mm256_loadu_ps(a + d)));
        }
    }
    for (int64_t g = 0; g < G; g++) memcpy(out + g * out_head_stride, acc + g * D, (size_t)D * sizeof(float));
}

/* q: row r's head h at q + r * q_stride + h * D (k, v alike with their strides; kv heads).
 * Caches (num_slots, num_kv_heads, cache_len, D). Sequence i: token row rows[i], slot
 * slots[i], lengths[i] keys already cached (its new key goes to position lengths[i]).
 * out: row r's head h at out + r * num_heads * D + h * D. D must be a multiple of 8.
 * Returns the number of tasks left undone for want of scratch memory (0: all done). */
int64_t glm_decode_attention_f32(const float *q, int64_t q_stride, const float *k, int64_t k_stride,
                              const float *v, int64_t v_stride, float *key_cache,
                              float *value_cache, int64_t cache_len, const int64_t *rows,
                              const int64_t *slots, const int64_t *lengths, int64_t num_seqs,
                              int64_t num_heads, int64_t num_kv_heads, int64_t D, float scale,
                              float *out, int num_threads) {
    int64_t G = num_heads / num_kv_heads;
    int64_t num_tasks = num_seqs * num_kv_heads, failed = 0;
#pragma omp parallel for schedule(dynamic, 1) num_threads(num_threads) reduction(+ : failed)
    for (int64_t task_id = 0; task_id < num_tasks; task_id++) {
        int64_t i = task_id / num_kv_heads, h = task_id % num_kv_heads;
        int64_t row = rows[i], pos = lengths[i], L = pos + 1;
        float *K = key_cache + (slots[i] * num_kv_heads + h) * cache_len * D;
        float *V = value_cache + (slots[i] * num_kv_heads + h) * cache_len * D;
        memcpy(K + pos * D, k + row * k_stride + h * D, (size_t)D * sizeof(float));
        memcpy(V + pos * D, v + row * v_stride + h * D, (size_t)D * sizeof(float));
        float *work = scratch_for((size_t)(G * ((L + 7) & ~(int64_t)7) + G * D));
        if (!work) {
            failed++;
            continue;
        }
        task(q + row * q_stride + h * G * D, K, V, L, G, D, scale,
             out + row * num_heads * D + h * G * D, D, work);
    }
    return failed;
}
