// kn_model.h — a Llama-family model as the engine sees it: hyperparameters and typed weight
// tensors. The harness's loaders fill it (pointers into a mapped file or into buffers the
// loader owns); the engine reads it and never frees it.
//
// Layout conventions (the same as llama2.c and as GGUF's "llama" architecture):
// - a matrix of n_out rows and n_in columns is row-major, one output row after another:
//   ne0 = n_in (contiguous), ne1 = n_out;
// - Q and K rows are in the order of interleaved ("adjacent pairs") RoPE, as llama2.c and
//   llama.cpp's llama-architecture files store them; Hugging Face checkpoints are permuted
//   into this order by their loader.
// Depends on kn_types.h only.
#ifndef KN_MODEL_H
#define KN_MODEL_H

#include <stdint.h>

#include "kn_types.h"

struct kn_config {
    int dim;        // model width
    int hidden_dim; // MLP width
    int n_layers;
    int n_heads;
    int n_kv_heads; // divides n_heads (grouped-query attention)
    int vocab_size;
    int seq_len;    // trained context length
    int head_size;  // dim / n_heads
    float norm_eps; // RMSNorm epsilon (1e-5 for llama2.c checkpoints)
    float rope_theta; // RoPE frequency base (10000)
};

// A weight tensor as stored. 1-D tensors have ne1 == 1.
struct kn_tensor {
    int type;         // enum kn_type
    int64_t ne0;      // elements per row (contiguous)
    int64_t ne1;      // rows
    const void *data; // kn_row_bytes(type, ne0) * ne1 bytes
};

struct kn_layer_weights {
    struct kn_tensor attn_norm; // (dim)
    struct kn_tensor wq;        // (dim rows, dim cols)
    struct kn_tensor wk;        // (kv_dim rows, dim cols), kv_dim = n_kv_heads * head_size
    struct kn_tensor wv;        // (kv_dim rows, dim cols)
    struct kn_tensor wo;        // (dim rows, dim cols)
    struct kn_tensor ffn_norm;  // (dim)
    struct kn_tensor w_gate;    // (hidden rows, dim cols)   llama2.c w1, GGUF ffn_gate
    struct kn_tensor w_down;    // (dim rows, hidden cols)   llama2.c w2, GGUF ffn_down
    struct kn_tensor w_up;      // (hidden rows, dim cols)   llama2.c w3, GGUF ffn_up
};

struct kn_weights {
    struct kn_config cfg;
    struct kn_tensor tok_embd;        // (vocab rows, dim cols)
    struct kn_layer_weights *layers;  // n_layers entries
    struct kn_tensor out_norm;        // (dim)
    struct kn_tensor output;          // (vocab rows, dim cols); same data as tok_embd when tied
    int tied;                         // 1 when output shares tok_embd's data
};

// Checks the hyperparameters for consistency and sane ranges (dims > 0 and below fixed
// limits, n_heads divides dim, n_kv_heads divides n_heads, even head size). Returns 0 or
// QP_ERANGE with a message (without the file name: the caller prefixes it).
int kn_config_check(const struct kn_config *c, char *err);

// Checks that every tensor has the shape the config implies. Same error convention.
int kn_weights_check(const struct kn_weights *w, char *err);

#endif
