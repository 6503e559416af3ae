/* A whole decode step of the v2+ GLM decoder (glm.py) in one call, float32 activations
 * (float32 or INT8 linears), AVX2/FMA CPUs.
 *
 * Built and loaded by cpu_kernels.py; called through cpu_decoder.py. It runs, layer after
 * layer, exactly the kernels glm.py's Python code calls on a decode step, in the same order
 * on the same buffers: RMSNorm, the qkv linear, the rotary embedding in place, decode
 * attention (cache writes included), the output linear, [RMSNorm], the residual add fused
 * with the next RMSNorm, the gate/up linear, SwiGLU, the down linear, [RMSNorm], and the
 * residual add fused with the next layer's (or the final) RMSNorm. So every bit is the same
 * as the Python path's, and batch invariance holds as it does there.
 *
 * What it saves is the Python between the kernels: about 40 dispatches per layer, 10-15 ms
 * of a 24-layer step on the 2-core EPYC we measure on, whatever the number of rows.
 */
#include <stdint.h>
#include <string.h>

void glm_linear_f32(const float *x, int64_t M, int64_t K, const float *panels, int64_t N,
                    const float *bias, float *out, int num_threads);
int64_t glm_decode_attention(const float *q, int64_t q_stride, const float *k, int64_t k_stride,
                             const float *v, int64_t v_stride, void *key_cache,
                             void *value_cache, int64_t cache_len, const int64_t *rows,
                             const int64_t *slots, const int64_t *lengths, int64_t num_seqs,
                             int64_t num_heads, int64_t num_kv_heads, int64_t D, float scale,
                             float *out, int num_threads, int kind);
void glm_rms_norm_f32(const float *x, const float *weight, float eps, int64_t rows, int64_t dim,
                      float *out);
void glm_add_rms_norm_f32(const float *hidden, const float *delta, const float *weight, float eps,
                          int64_t rows, int64_t dim, float *sum, float *out);
void glm_rotary_interleaved_f32(float *x, int64_t rows, int64_t row_stride, int64_t num_heads,
                                int64_t head_dim, int64_t half, const float *cos,
                                const float *sin);
void glm_silu_mul_f32(const float *gate_up, int64_t rows, int64_t inner, float *out);
int64_t glm_linear_int8(const float *x, int64_t M, int64_t K, const int8_t *panels,
                        const int32_t *col_sums, const float *w_scales, int64_t N,
                        const float *bias, float *out, int num_threads);

/* One linear (cpu_decoder.py's _Linear): float32 panels as cpu_gemm.c takes them, or int8
 * panels with their column sums and scales as cpu_gemm_int8.c takes them (col_sums set). */
typedef struct {
    const void *panels;
    const int32_t *col_sums;
    const float *scales, *bias;
} glm_linear;

/* out (M, N) = x (M, K) through the linear; 0, or -1 when INT8 finds no memory */
static int64_t linear(const glm_linear *w, const float *x, int64_t M, int64_t K, int64_t N,
                      float *out, int num_threads) {
    if (w->col_sums)
        return glm_linear_int8(x, M, K, w->panels, w->col_sums, w->scales, N, w->bias, out,
                               num_threads);
    glm_linear_f32(x, M, K, w->panels, N, w->bias, out, num_threads);
    return 0;
}

/* One decoder layer's weights (cpu_decoder.py's _Layer): biases and the two optional
 * GLM-4-0414 norms NULL where absent. */
typedef struct {
    glm_linear qkv, dense, gate_up, down;
    const float *input_norm, *post_self_attn_norm, *post_attention_norm, *post_mlp_norm;
} glm_layer;

/* The model's shape (cpu_decoder.py's _Decoder). */
typedef struct {
    int64_t num_layers, hidden, num_heads, num_kv_heads, head_dim, intermediate, rotary_half;
    float eps, scale;
    const glm_layer *layers;
    const float *final_norm;
} glm_decoder;

/* x, or the optional norm of x written to `spare` (GLM-4-0414's post-attention/-MLP norms) */
static const float *post_norm(const glm_decoder *d, const float *weight, const float *x,
                              float *spare, int64_t M) {
    if (!weight) return x;
    glm_rms_norm_f32(x, weight, d->eps, M, d->hidden, spare);
    return spare;
}

/* hidden (M, hidden): the embeddings in, the final-normed hidden states out. Row r is
 * sequence r's one new token at cache position lengths[r] of slot slots[r]; cos/sin
 * (M, rotary_half). key_caches/value_caches: per layer (num_slots, num_kv_heads, cache_len,
 * head_dim) of kv_kind (cpu_attention.c: 0 float32, 1 float16, 2 bfloat16). work: M * (3 hidden + qkv width + q width + 3 intermediate) floats.
 * Returns 0, or the count of attention tasks left undone for want of scratch memory, or -1
 * when an INT8 linear found no memory for its codes. */
int64_t glm_decode_step_f32(const glm_decoder *d, float *hidden, int64_t M, const float *cos,
                            const float *sin, const int64_t *slots, const int64_t *lengths,
                            void *const *key_caches, void *const *value_caches,
                            int64_t cache_len, const int64_t *rows, float *work,
                            int num_threads, int kv_kind) {
    int64_t H = d->hidden, D = d->head_dim, I = d->intermediate;
    int64_t q_width = d->num_heads * D, kv_width = d->num_kv_heads * D;
    int64_t qkv_width = q_width + 2 * kv_width;
    float *normed = work, *delta = normed + M * H, *sum = delta + M * H;
    float *qkv = sum + M * H, *attn = qkv + M * qkv_width, *gate_up = attn + M * q_width;
    float *act = gate_up + M * 2 * I;

    glm_rms_norm_f32(hidden, d->layers[0].input_norm, d->eps, M, H, normed);
    for (int64_t l = 0; l < d->num_layers; l++) {
        const glm_layer *w = d->layers + l;
        if (linear(&w->qkv, normed, M, H, qkv_width, qkv, num_threads)) return -1;
        glm_rotary_interleaved_f32(qkv, M, qkv_width, d->num_heads + d->num_kv_heads, D,
                                   d->rotary_half, cos, sin);
        const float *k = qkv + q_width, *v = qkv + q_width + kv_width;
        int64_t undone = glm_decode_attention(
            qkv, qkv_width, k, qkv_width, v, qkv_width, key_caches[l], value_caches[l],
            cache_len, rows, slots, lengths, M, d->num_heads, d->num_kv_heads, D, d->scale, attn,
            num_threads, kv_kind);
        if (undone) return undone;
        if (linear(&w->dense, attn, M, q_width, H, delta, num_threads)) return -1;
        glm_add_rms_norm_f32(hidden, post_norm(d, w->post_self_attn_norm, delta, sum, M),
                             w->post_attention_norm, d->eps, M, H, hidden, normed);
        if (linear(&w->gate_up, normed, M, H, 2 * I, gate_up, num_threads)) return -1;
        glm_silu_mul_f32(gate_up, M, I, act);
        if (linear(&w->down, act, M, I, H, delta, num_threads)) return -1;
        /* the residual add, fused with the norm that reads it next */
        const float *next_norm = l + 1 < d->num_layers ? d->layers[l + 1].input_norm : d->final_norm;
        glm_add_rms_norm_f32(hidden, post_norm(d, w->post_mlp_norm, delta, sum, M), next_norm,
                             d->eps, M, H, hidden, normed);
    }
    memcpy(hidden, normed, (size_t)(M * H) * sizeof(float));
    return 0;
}
