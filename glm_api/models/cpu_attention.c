/* Decode attention over the slot KV cache, x86 CPUs with AVX2, FMA and F16C.
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
 * Scores go 8 keys at a time (one FMA chain per key, then a fixed tree across lanes) for
 * every head of the group while those keys sit in L1; the weighted sum of values keeps each
 * output's one FMA chain in registers, 64 value rows at a time. Memory-bound at 16 sequences
 * of 200 tokens (2.2x the one-dot-product-at-a-time loop it replaced, measured). While it
 * scores a block of 8 keys it prefetches the keys two blocks on (to L1) and the block's own
 * values (to L2, for the weighing): 24 layers of 16 sequences on the Zen 5 EPYC, 130 / 200 /
 * 400 keys, 7.3 / 9.4 / 18.8 -> 5.5 / 7.1 / 13.5 ms (interleaved; the same bits). Built for
 * AVX-512, the weighing takes two heads x 128 dims at a time and reads each value row whole
 * (weigh128): 130 / 200 / 400 keys 6.5 / 6.5 / 12.9 -> 4.7 / 5.0 / 9.6 ms, the same bits.
 *
 * The cache holds float32, or float16 or bfloat16 (`--kv-cache-dtype`: half the memory and
 * half the traffic). A 16-bit cache is written rounded to nearest even, as torch's `.to()`
 * rounds, and read back exactly into float32, so all arithmetic is float32 either way; each
 * function below takes the cache's `kind` as a constant and is inlined into one copy per
 * kind.
 *
 * Softmax is exact in form (max subtracted, then exp, then divided by the sum); exp is a
 * degree-6 polynomial after Cody-Waite range reduction (Cephes' expf), within 2 ulp. A NaN
 * or infinite score makes that head's output NaN, as in SDPA, rather than hiding it.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_simd.h"

#define VALUE_BLOCK 64 /* value rows weighed for all dims at a time: 64 x D floats, in L1 */

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

#define INLINE static inline __attribute__((always_inline))

/* what a cache holds: glm_decode_attention's `kind` */
enum { KV_F32 = 0, KV_F16 = 1, KV_BF16 = 2 };
#define ELEMENT(kind) ((kind) == KV_F32 ? 4 : 2) /* bytes per cache element */

/* cache elements i..i+7 as floats: float32 loaded; float16 or bfloat16 widened (exact) */
INLINE __m256 load_kv(const void *cache, int64_t i, const int kind) {
    if (kind == KV_F32) return _mm256_loadu_ps((const float *)cache + i);
    __m128i bits = _mm_loadu_si128((const __m128i *)((const uint16_t *)cache + i));
    if (kind == KV_F16) return _mm256_cvtph_ps(bits);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16));
}

/* 8 floats rounded to bfloat16 as torch's vectorized conversion rounds them: to nearest even,
 * every NaN to 0xFFFF */
static inline __m128i to_bf16(__m256 x) {
    __m256i b = _mm256_castps_si256(x);
    __m256i odd = _mm256_and_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_srli_epi32(_mm256_add_epi32(b, _mm256_add_epi32(odd, _mm256_set1_epi32(0x7FFF))), 16);
    __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q));
    r = _mm256_blendv_epi8(r, _mm256_set1_epi32(0xFFFF), nan);
    /* 8 x 32 -> 8 x 16 bits (values <= 0xFFFF: the unsigned pack keeps them), lanes in order */
    __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);
    return _mm256_castsi256_si128(packed);
}

/* D floats (a multiple of 8) into the cache at element i: copied, or rounded to nearest even */
INLINE void store_kv(void *cache, int64_t i, const float *x, int64_t D, const int kind) {
    if (kind == KV_F32) {
        memcpy((float *)cache + i, x, (size_t)D * sizeof(float));
        return;
    }
    for (int64_t d = 0; d < D; d += 8) {
        __m256 v = _mm256_loadu_ps(x + d);
        __m128i bits = kind == KV_F16 ? _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT) : to_bf16(v);
        _mm_storeu_si128((__m128i *)((uint16_t *)cache + i + d), bits);
    }
}

/* q . K[j] for the 8 keys K[0..7] (rows of D from element i0 of the cache), lane j: one FMA
 * chain per key over d, then a fixed tree of adds across its 8 lanes */
INLINE __m256 dot8(const float *q, const void *K, int64_t i0, int64_t D, const int kind) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    for (int64_t d = 0; d < D; d += 8) {
        __m256 x = _mm256_loadu_ps(q + d);
        a0 = _mm256_fmadd_ps(x, load_kv(K, i0 + d, kind), a0);
        a1 = _mm256_fmadd_ps(x, load_kv(K, i0 + D + d, kind), a1);
        a2 = _mm256_fmadd_ps(x, load_kv(K, i0 + 2 * D + d, kind), a2);
        a3 = _mm256_fmadd_ps(x, load_kv(K, i0 + 3 * D + d, kind), a3);
        a4 = _mm256_fmadd_ps(x, load_kv(K, i0 + 4 * D + d, kind), a4);
        a5 = _mm256_fmadd_ps(x, load_kv(K, i0 + 5 * D + d, kind), a5);
        a6 = _mm256_fmadd_ps(x, load_kv(K, i0 + 6 * D + d, kind), a6);
        a7 = _mm256_fmadd_ps(x, load_kv(K, i0 + 7 * D + d, kind), a7);
    }
    __m256 s0123 = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
    __m256 s4567 = _mm256_hadd_ps(_mm256_hadd_ps(a4, a5), _mm256_hadd_ps(a6, a7));
    return _mm256_add_ps(_mm256_permute2f128_ps(s0123, s4567, 0x20),
                         _mm256_permute2f128_ps(s0123, s4567, 0x31));
}

/* acc (rows of D) for `heads` (1..4, a constant where inlined) query heads, dims d0..d0+15:
 * += p[g][t] V[t] for t < L, continuing each output's one FMA chain in t order (acc holds it
 * between blocks of values: stored and reloaded exactly, so the chain's bits are as if unbroken) */
INLINE void weigh16(const float *p, int64_t padded, const void *V, int64_t L, int64_t D,
                    int64_t d0, const int heads, float *acc, const int kind) {
    __m256 a00 = _mm256_loadu_ps(acc + d0), a01 = _mm256_loadu_ps(acc + d0 + 8);
    __m256 a10 = a00, a11 = a01, a20 = a00, a21 = a01, a30 = a00, a31 = a01;
    if (heads > 1) a10 = _mm256_loadu_ps(acc + D + d0), a11 = _mm256_loadu_ps(acc + D + d0 + 8);
    if (heads > 2)
        a20 = _mm256_loadu_ps(acc + 2 * D + d0), a21 = _mm256_loadu_ps(acc + 2 * D + d0 + 8);
    if (heads > 3)
        a30 = _mm256_loadu_ps(acc + 3 * D + d0), a31 = _mm256_loadu_ps(acc + 3 * D + d0 + 8);
    for (int64_t t = 0; t < L; t++) {
        __m256 v0 = load_kv(V, t * D + d0, kind), v1 = load_kv(V, t * D + d0 + 8, kind);
        __m256 w = _mm256_broadcast_ss(p + t);
        a00 = _mm256_fmadd_ps(w, v0, a00);
        a01 = _mm256_fmadd_ps(w, v1, a01);
        if (heads > 1) {
            w = _mm256_broadcast_ss(p + padded + t);
            a10 = _mm256_fmadd_ps(w, v0, a10);
            a11 = _mm256_fmadd_ps(w, v1, a11);
        }
        if (heads > 2) {
            w = _mm256_broadcast_ss(p + 2 * padded + t);
            a20 = _mm256_fmadd_ps(w, v0, a20);
            a21 = _mm256_fmadd_ps(w, v1, a21);
        }
        if (heads > 3) {
            w = _mm256_broadcast_ss(p + 3 * padded + t);
            a30 = _mm256_fmadd_ps(w, v0, a30);
            a31 = _mm256_fmadd_ps(w, v1, a31);
        }
    }
    __m256 lo[4] = {a00, a10, a20, a30}, hi[4] = {a01, a11, a21, a31};
    for (int g = 0; g < heads; g++) {
        _mm256_storeu_ps(acc + g * D + d0, lo[g]);
        _mm256_storeu_ps(acc + g * D + d0 + 8, hi[g]);
    }
}

#ifdef __AVX512F__
/* cache elements i..i+15 as floats (as load_kv) */
INLINE __m512 load_kv16(const void *cache, int64_t i, const int kind) {
    if (kind == KV_F32) return _mm512_loadu_ps((const float *)cache + i);
    __m256i bits = _mm256_loadu_si256((const __m256i *)((const uint16_t *)cache + i));
    if (kind == KV_F16) return _mm512_cvtph_ps(bits);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}

/* weigh16 for dims d0..d0+127 of `heads` (1..2, a constant where inlined) query heads at
 * once: each value row is read whole (8 zmm, one after another in memory, which the
 * hardware prefetcher follows), not a 64-byte piece of it per pass. Each output is the
 * same single FMA chain in t order, so the bits are weigh16's. */
INLINE void weigh128(const float *p, int64_t padded, const void *V, int64_t L, int64_t D,
                     int64_t d0, const int heads, float *acc, const int kind) {
    float *a = acc + d0, *b = acc + D + d0;
    __m512 a0 = _mm512_loadu_ps(a), a1 = _mm512_loadu_ps(a + 16), a2 = _mm512_loadu_ps(a + 32),
           a3 = _mm512_loadu_ps(a + 48), a4 = _mm512_loadu_ps(a + 64), a5 = _mm512_loadu_ps(a + 80),
           a6 = _mm512_loadu_ps(a + 96), a7 = _mm512_loadu_ps(a + 112);
    __m512 b0 = a0, b1 = a1, b2 = a2, b3 = a3, b4 = a4, b5 = a5, b6 = a6, b7 = a7;
    if (heads > 1) {
        b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16), b2 = _mm512_loadu_ps(b + 32);
        b3 = _mm512_loadu_ps(b + 48), b4 = _mm512_loadu_ps(b + 64), b5 = _mm512_loadu_ps(b + 80);
        b6 = _mm512_loadu_ps(b + 96), b7 = _mm512_loadu_ps(b + 112);
    }
#define W(j)                                                   \
    do {                                                       \
        __m512 v = load_kv16(V, t * D + d0 + 16 * (j), kind);  \
        a##j = _mm512_fmadd_ps(wa, v, a##j);                   \
        if (heads > 1) b##j = _mm512_fmadd_ps(wb, v, b##j);    \
    } while (0)
    for (int64_t t = 0; t < L; t++) {
        __m512 wa = _mm512_set1_ps(p[t]), wb = _mm512_set1_ps(p[padded + t]);
        W(0); W(1); W(2); W(3); W(4); W(5); W(6); W(7);
    }
#undef W
    _mm512_storeu_ps(a, a0), _mm512_storeu_ps(a + 16, a1), _mm512_storeu_ps(a + 32, a2);
    _mm512_storeu_ps(a + 48, a3), _mm512_storeu_ps(a + 64, a4), _mm512_storeu_ps(a + 80, a5);
    _mm512_storeu_ps(a + 96, a6), _mm512_storeu_ps(a + 112, a7);
    if (heads > 1) {
        _mm512_storeu_ps(b, b0), _mm512_storeu_ps(b + 16, b1), _mm512_storeu_ps(b + 32, b2);
        _mm512_storeu_ps(b + 48, b3), _mm512_storeu_ps(b + 64, b4), _mm512_storeu_ps(b + 80, b5);
        _mm512_storeu_ps(b + 96, b6), _mm512_storeu_ps(b + 112, b7);
    }
}
#endif

/* the same for dims d0..d0+7 (the last 8 of a D that is not a multiple of 16) */
INLINE void weigh8(const float *p, int64_t padded, const void *V, int64_t L, int64_t D,
                   int64_t d0, int heads, float *acc, const int kind) {
    for (int g = 0; g < heads; g++) {
        __m256 a = _mm256_loadu_ps(acc + g * D + d0);
        for (int64_t t = 0; t < L; t++)
            a = _mm256_fmadd_ps(_mm256_broadcast_ss(p + g * padded + t),
                                load_kv(V, t * D + d0, kind), a);
        _mm256_storeu_ps(acc + g * D + d0, a);
    }
}

/* one (sequence, kv head): keys/values (L, D) of the slot; queries and outputs (G, D) */
INLINE void task(const float *q, const void *K, const void *V, int64_t L, int64_t G,
                 int64_t D, float scale, float *out, int64_t out_head_stride, float *work,
                 const int kind) {
    int64_t padded = (L + 7) & ~(int64_t)7;
    float *scores = work;             /* (G, padded) */
    float *acc = work + G * padded;   /* (G, D) */
    const __m256 scale8 = _mm256_set1_ps(scale);
    int64_t t = 0;
    const int64_t row_bytes = D * ELEMENT(kind);
    for (; t + 8 <= L; t += 8) { /* 8 keys (in L1) against every head of the group */
        /* the keys of 2 blocks on, and these keys' values for the weighing below (to L2) */
        const char *next_keys = (const char *)K + (t + 16) * row_bytes;
        const char *values = (const char *)V + t * row_bytes;
        int64_t ahead = t + 24 <= L ? 8 * row_bytes : 0;
        for (int64_t b = 0; b < ahead; b += 64) _mm_prefetch(next_keys + b, _MM_HINT_T0);
        for (int64_t b = 0; b < 8 * row_bytes; b += 64) _mm_prefetch(values + b, _MM_HINT_T1);
        for (int64_t g = 0; g < G; g++)
            _mm256_storeu_ps(scores + g * padded + t,
                             _mm256_mul_ps(dot8(q + g * D, K, t * D, D, kind), scale8));
    }
    for (; t < L; t++)
        for (int64_t g = 0; g < G; g++) {
            __m256 s = _mm256_setzero_ps();
            for (int64_t d = 0; d < D; d += 8)
                s = _mm256_fmadd_ps(_mm256_loadu_ps(q + g * D + d), load_kv(K, t * D + d, kind), s);
            scores[g * padded + t] = hsum(s) * scale;
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
    for (int64_t t0 = 0; t0 < L; t0 += VALUE_BLOCK) /* these values stay in L1 for every dim */
        for (int64_t g0 = 0; g0 < G; g0 += 4) {
            int heads = (int)(G - g0 < 4 ? G - g0 : 4);
            int64_t n = L - t0 < VALUE_BLOCK ? L - t0 : VALUE_BLOCK;
            const float *p = scores + g0 * padded + t0;
            const void *Vt = (const char *)V + t0 * D * (ELEMENT(kind));
            float *a = acc + g0 * D;
            int64_t d0 = 0;
#ifdef __AVX512F__
            for (; d0 + 128 <= D; d0 += 128) /* heads two at a time, 128 dims each */
                for (int g = 0; g < heads; g += 2) {
                    if (heads - g > 1) weigh128(p + g * padded, padded, Vt, n, D, d0, 2, a + g * D, kind);
                    else weigh128(p + g * padded, padded, Vt, n, D, d0, 1, a + g * D, kind);
                }
#endif
            for (; d0 + 16 <= D; d0 += 16) {
                switch (heads) {
                    case 4: weigh16(p, padded, Vt, n, D, d0, 4, a, kind); break;
                    case 3: weigh16(p, padded, Vt, n, D, d0, 3, a, kind); break;
                    case 2: weigh16(p, padded, Vt, n, D, d0, 2, a, kind); break;
                    default: weigh16(p, padded, Vt, n, D, d0, 1, a, kind); break;
                }
            }
            if (d0 < D) weigh8(p, padded, Vt, n, D, d0, heads, a, kind);
        }
    for (int64_t g = 0; g < G; g++) memcpy(out + g * out_head_stride, acc + g * D, (size_t)D * sizeof(float));
}

/* one prefill row's task for a cache of `kind`: row `row` of q attends to the first L keys
 * of its slot (already written by the caller); 1 when no scratch memory was left, else 0 */
INLINE int64_t prefill_task(const float *q, int64_t q_stride, const void *key_cache,
                            const void *value_cache, int64_t cache_len, int64_t row,
                            int64_t slot, int64_t L, int64_t num_heads, int64_t num_kv_heads,
                            int64_t h, int64_t D, float scale, float *out, const int kind) {
    int64_t G = num_heads / num_kv_heads;
    int64_t base = (slot * num_kv_heads + h) * cache_len * D; /* elements */
    const char *K = (const char *)key_cache + base * ELEMENT(kind);
    const char *V = (const char *)value_cache + base * ELEMENT(kind);
    float *work = scratch_for((size_t)(G * ((L + 7) & ~(int64_t)7) + G * D));
    if (!work) return 1;
    task(q + row * q_stride + h * G * D, K, V, L, G, D, scale, out + row * num_heads * D + h * G * D,
         D, work, kind);
    return 0;
}

/* one (sequence, kv head) task of glm_decode_attention for a cache of `kind`: its key and
 * value written at `pos`, then prefill_task's attention over the pos + 1 keys; 1 when no
 * scratch memory was left, else 0 */
INLINE int64_t run_task(const float *q, int64_t q_stride, const float *k, int64_t k_stride,
                        const float *v, int64_t v_stride, void *key_cache, void *value_cache,
                        int64_t cache_len, int64_t row, int64_t slot, int64_t pos,
                        int64_t num_heads, int64_t num_kv_heads, int64_t h, int64_t D,
                        float scale, float *out, const int kind) {
    int64_t base = (slot * num_kv_heads + h) * cache_len * D; /* elements */
    store_kv((char *)key_cache + base * ELEMENT(kind), pos * D, k + row * k_stride + h * D, D, kind);
    store_kv((char *)value_cache + base * ELEMENT(kind), pos * D, v + row * v_stride + h * D, D,
             kind);
    return prefill_task(q, q_stride, key_cache, value_cache, cache_len, row, slot, pos + 1,
                        num_heads, num_kv_heads, h, D, scale, out, kind);
}

/* run_task with `kind` a constant, one function each: the OpenMP region below is outlined
 * before inlining, so a kind passed through it would reach the inner loops as a variable */
#define RUN_TASK_FOR(NAME, KIND)                                                                 \
    static int64_t NAME(const float *q, int64_t q_stride, const float *k, int64_t k_stride,      \
                        const float *v, int64_t v_stride, void *key_cache, void *value_cache,    \
                        int64_t cache_len, int64_t row, int64_t slot, int64_t pos,               \
                        int64_t num_heads, int64_t num_kv_heads, int64_t h, int64_t D,           \
                        float scale, float *out) {                                               \
        return run_task(q, q_stride, k, k_stride, v, v_stride, key_cache, value_cache,           \
                        cache_len, row, slot, pos, num_heads, num_kv_heads, h, D, scale, out,    \
                        KIND);                                                                   \
    }
RUN_TASK_FOR(run_task_f32, KV_F32)
RUN_TASK_FOR(run_task_f16, KV_F16)
RUN_TASK_FOR(run_task_bf16, KV_BF16)

/* q: row r's head h at q + r * q_stride + h * D (k, v alike with their strides; kv heads).
 * Caches (num_slots, num_kv_heads, cache_len, D) of `kind`: KV_F32, KV_F16 or KV_BF16
 * (uint16_t bit patterns for the 16-bit ones). Sequence i: token row rows[i], slot slots[i],
 * lengths[i] keys already cached (its new key goes to position lengths[i]). out: row r's head
 * h at out + r * num_heads * D + h * D. D must be a multiple of 8. Returns the number of
 * tasks left undone for want of scratch memory (0: all done). */
int64_t glm_decode_attention(const float *q, int64_t q_stride, const float *k, int64_t k_stride,
                             const float *v, int64_t v_stride, void *key_cache,
                             void *value_cache, int64_t cache_len, const int64_t *rows,
                             const int64_t *slots, const int64_t *lengths, int64_t num_seqs,
                             int64_t num_heads, int64_t num_kv_heads, int64_t D, float scale,
                             float *out, int num_threads, int kind) {
    int64_t (*run)(const float *, int64_t, const float *, int64_t, const float *, int64_t,
                   void *, void *, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                   int64_t, int64_t, float, float *) =
        kind == KV_F16 ? run_task_f16 : kind == KV_BF16 ? run_task_bf16 : run_task_f32;
    int64_t num_tasks = num_seqs * num_kv_heads, failed = 0;
#pragma omp parallel for schedule(dynamic, 1) num_threads(num_threads) reduction(+ : failed)
    for (int64_t task_id = 0; task_id < num_tasks; task_id++) {
        int64_t i = task_id / num_kv_heads, h = task_id % num_kv_heads;
        failed += run(q, q_stride, k, k_stride, v, v_stride, key_cache, value_cache, cache_len,
                      rows[i], slots[i], lengths[i], num_heads, num_kv_heads, h, D, scale, out);
    }
    return failed;
}

#define PREFILL_TASK_FOR(NAME, KIND)                                                          \
    static int64_t NAME(const float *q, int64_t q_stride, const void *key_cache,              \
                        const void *value_cache, int64_t cache_len, int64_t row, int64_t slot, \
                        int64_t L, int64_t num_heads, int64_t num_kv_heads, int64_t h,         \
                        int64_t D, float scale, float *out) {                                 \
        return prefill_task(q, q_stride, key_cache, value_cache, cache_len, row, slot, L,     \
                            num_heads, num_kv_heads, h, D, scale, out, KIND);                 \
    }
PREFILL_TASK_FOR(prefill_task_f32, KV_F32)
PREFILL_TASK_FOR(prefill_task_f16, KV_F16)
PREFILL_TASK_FOR(prefill_task_bf16, KV_BF16)

/* Prompt rows: row rows[i] of q attends to the first visible[i] keys of slot slots[i] (its
 * causal or bidirectional window, P-tuning prefix included), keys and values already in the
 * cache; nothing is written there. Each row is computed exactly as a decode row (task above):
 * a position gets the same bits however its prompt was cut into chunks, whether a reused
 * prefix skipped part of it, and as a decode step would give it. Faster than SDPA's loop too
 * (24 layers, 16 x 128-token prompts 270-310 -> 190 ms; one 2048-token prompt 2.7 -> 1.4 s,
 * Zen 5 EPYC). Layouts as
 * glm_decode_attention; returns the tasks left undone for want of scratch memory. */
int64_t glm_prefill_attention(const float *q, int64_t q_stride, const void *key_cache,
                              const void *value_cache, int64_t cache_len, const int64_t *rows,
                              const int64_t *slots, const int64_t *visible, int64_t num_rows,
                              int64_t num_heads, int64_t num_kv_heads, int64_t D, float scale,
                              float *out, int num_threads, int kind) {
    int64_t (*run)(const float *, int64_t, const void *, const void *, int64_t, int64_t,
                   int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, float, float *) =
        kind == KV_F16 ? prefill_task_f16 : kind == KV_BF16 ? prefill_task_bf16 : prefill_task_f32;
    int64_t num_tasks = num_rows * num_kv_heads, failed = 0;
#pragma omp parallel for schedule(dynamic, 1) num_threads(num_threads) reduction(+ : failed)
    for (int64_t task_id = 0; task_id < num_tasks; task_id++) {
        int64_t i = task_id / num_kv_heads, h = task_id % num_kv_heads;
        failed += run(q, q_stride, key_cache, value_cache, cache_len, rows[i], slots[i],
                      visible[i], num_heads, num_kv_heads, h, D, scale, out);
    }
    return failed;
}
