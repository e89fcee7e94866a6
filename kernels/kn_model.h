// kn_model.h — a decoder-only transformer as the engine sees it: hyperparameters, the block
// variant of its family (Llama 2/3 and Mistral, Qwen2/2.5, Phi-3, Gemma 2) and typed weight
// tensors. The harness's loaders fill it (pointers into a mapped file or into buffers the loader
// owns); the engine reads it and never frees it.
//
// Layout conventions (the same as llama2.c and as llama.cpp's GGUF files):
// - a matrix of n_out rows and n_in columns is row-major, one output row after another:
//   ne0 = n_in (contiguous), ne1 = n_out;
// - Q and K rows are in the order of the family's RoPE: interleaved ("adjacent pairs") for
//   rope_neox = 0, as llama2.c and llama.cpp's llama-architecture files store them (Hugging Face
//   checkpoints are permuted into this order by their loader); halves (x[i], x[i + head/2])
//   for rope_neox = 1 (Qwen2, Phi-3, Gemma 2: Hugging Face's own order, not permuted);
// - fused tensors (Phi-3's attn_qkv and gate/up ffn_up) are split by the loader into views of
//   their row ranges (wq, wk, wv; w_gate, w_up), so that every consumer sees separate matrices;
//   the fused_* flags tell writers to concatenate them again;
// - norm weights are the multipliers the block applies (w * x / rms): Gemma's checkpoints store
//   w - 1, and llama.cpp's converter adds the 1, as qprobe's safetensors loader does.
// Every field added for a family is 0 for Llama 2, so that a zeroed config is a Llama.
// Depends on kn_types.h only.
#ifndef KN_MODEL_H
#define KN_MODEL_H

#include <stdint.h>

#include "kn_types.h"

// The families, by their GGUF general.architecture names.
enum kn_arch { KN_ARCH_LLAMA, KN_ARCH_QWEN2, KN_ARCH_PHI3, KN_ARCH_GEMMA2, KN_ARCH_COUNT };
const char *kn_arch_name(enum kn_arch a); // "llama", "qwen2", "phi3", "gemma2"

// The gating activation of the MLP: act(gate) * up.
enum kn_act { KN_ACT_SILU, KN_ACT_GELU_TANH };

struct kn_config {
    int dim;        // model width
    int hidden_dim; // MLP width
    int n_layers;
    int n_heads;
    int n_kv_heads; // divides n_heads (grouped-query attention)
    int vocab_size; // rows of the embedding (may exceed the tokenizer's, padded rows)
    int seq_len;    // trained context length
    int head_size;  // per head; dim / n_heads except Gemma 2 (q width n_heads * head_size)
    float norm_eps; // RMSNorm epsilon (1e-5 for llama2.c checkpoints)
    float rope_theta; // RoPE frequency base (10000)

    // The block variant (0 everywhere: Llama 2).
    enum kn_arch arch;
    int rope_neox;          // 1: rotate halves (i, i + head/2), 0: adjacent pairs (2i, 2i + 1)
    float rope_freq_scale;  // linear RoPE scaling: angles times this (0: 1)
    float rope_attn_factor; // cos and sin times this (Phi-3 long-context models; 0: 1)
    int rope_ctx_orig;      // rope_long replaces rope_short above this context (0: seq_len)
    int has_qkv_bias;       // bq, bk, bv present (Qwen2)
    float embd_scale;       // token embeddings times this (Gemma: sqrt(dim); 0: none)
    enum kn_act act;        // MLP gating activation
    int post_norms;         // attn_post_norm / ffn_post_norm on the block outputs (Gemma 2)
    float attn_scale;       // queries times this before q.k (0: scores divided by sqrt(head_size))
    float attn_softcap;     // scores -> c * tanh(scores / c) (0: none)
    float final_softcap;    // logits -> c * tanh(logits / c) (0: none)
    int swa_window;         // sliding window: query p sees keys p - window + 1 .. p (0: none)
    int swa_every;          // window on layers l % swa_every == 0 (Gemma 2: 2); 0: every layer
    int fused_qkv;          // stored as one attn_qkv (Phi-3)
    int fused_gate_up;      // stored as one ffn_up of 2 * hidden rows, gate first (Phi-3)
};

// Width of the queries and of the attention output: n_heads * head_size.
static inline int kn_q_dim(const struct kn_config *c) { return c->n_heads * c->head_size; }
static inline int kn_kv_dim(const struct kn_config *c) { return c->n_kv_heads * c->head_size; }
// Does layer l use the sliding window?
static inline int kn_layer_swa(const struct kn_config *c, int l) {
    return c->swa_window > 0 && (c->swa_every <= 1 || l % c->swa_every == 0);
}

// A weight tensor as stored. 1-D tensors have ne1 == 1.
struct kn_tensor {
    int type;         // enum kn_type
    int64_t ne0;      // elements per row (contiguous)
    int64_t ne1;      // rows
    const void *data; // kn_row_bytes(type, ne0) * ne1 bytes
};

struct kn_layer_weights {
    struct kn_tensor attn_norm; // (dim)
    struct kn_tensor wq;        // (q_dim rows, dim cols), q_dim = n_heads * head_size
    struct kn_tensor wk;        // (kv_dim rows, dim cols), kv_dim = n_kv_heads * head_size
    struct kn_tensor wv;        // (kv_dim rows, dim cols)
    struct kn_tensor wo;        // (dim rows, q_dim cols)
    struct kn_tensor ffn_norm;  // (dim)
    struct kn_tensor w_gate;    // (hidden rows, dim cols)   llama2.c w1, GGUF ffn_gate
    struct kn_tensor w_down;    // (dim rows, hidden cols)   llama2.c w2, GGUF ffn_down
    struct kn_tensor w_up;      // (hidden rows, dim cols)   llama2.c w3, GGUF ffn_up
    // Present only where the config says so (data NULL otherwise); all 1-D.
    struct kn_tensor bq, bk, bv;      // (q_dim), (kv_dim), (kv_dim): has_qkv_bias
    struct kn_tensor attn_post_norm;  // (dim): post_norms, applied to wo's output
    struct kn_tensor ffn_post_norm;   // (dim): post_norms, applied to w_down's output
};

struct kn_weights {
    struct kn_config cfg;
    struct kn_tensor tok_embd;        // (vocab rows, dim cols)
    struct kn_layer_weights *layers;  // n_layers entries
    struct kn_tensor out_norm;        // (dim)
    struct kn_tensor output;          // (vocab rows, dim cols); same data as tok_embd when tied
    int tied;                         // 1 when output shares tok_embd's data
    int embd_only;                    // the source stores no classifier of its own (GGUF without
                                      // output.weight, Hugging Face without lm_head): quantized as
                                      // llama.cpp does it, the embedding gets the classifier's type
                                      // and stays shared
    // RoPE frequency divisors, (head_size / 2) each, or data NULL: rope_freqs (Llama 3's
    // scaling) for every context; rope_short / rope_long (Phi-3) below / above rope_ctx_orig.
    struct kn_tensor rope_freqs, rope_short, rope_long;
};

// Sets the fields every model of c->arch has (llama.cpp's graph for the family): rope_neox,
// has_qkv_bias, fused_qkv/fused_gate_up, post_norms, act, embd_scale (Gemma: sqrt(dim)) and
// swa_every. The ones a file states (windows, caps, scales, RoPE scaling) are left alone.
void kn_config_set_family(struct kn_config *c);

// Checks the hyperparameters for consistency and sane ranges (dims > 0 and below fixed
// limits, n_kv_heads divides n_heads, even head size, the family's fields consistent). Returns 0 or
// QP_ERANGE with a message (without the file name: the caller prefixes it).
int kn_config_check(const struct kn_config *c, char *err);

// Checks that every tensor has the shape the config implies. Same error convention.
int kn_weights_check(const struct kn_weights *w, char *err);

#endif
