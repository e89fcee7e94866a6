// kn_train.h — the backward pass of the engine's block (every family), for training (quantization-aware training,
// harness/run/hx_qat.h): a training forward that keeps the activations the gradients need, the
// backward pass that turns dL/dlogits into dL/dparameter for every parameter, the distillation
// loss (KL(teacher ‖ student), optionally plus next-token cross-entropy) with its gradient, and
// an AdamW step.
//
// Two precisions from one source (kn_train_impl.h, included twice by kn_train.c): `kn_train_*`
// computes in fp32 (the training path), `kn_train64_*` in fp64 (the specification the
// gradient-check test compares against central finite differences). Sums that need it (RMSNorm's
// sum of squares, softmax denominators, the loss, the gradient norm) are taken in fp64 in both.
//
// The model is the engine's block (kn_engine.h) with its family variants (kn_model.h): RMSNorm
// w·(x·1/sqrt(mean x² + eps)); q/k/v biases (Qwen2) added before RoPE; RoPE on adjacent pairs or
// rotated halves (rope_neox) with the engine's float tables (freq = 1/theta^(2i/head_size), the
// angle pos·freq divided by the frequency factor — Llama 3's rope_freqs, Phi-3's short or long
// factors chosen by the window length as the engine chooses by its context — and times the linear
// scale, cos and sin times the attention factor); queries times attn_scale (Gemma 2) after RoPE;
// grouped-query causal attention over all keys or a sliding window (every layer, or layers
// l % swa_every == 0), scores divided by sqrt(head_size) — or, soft-capped (Gemma 2), capped as
// c·tanh(s/c) and not divided, as the engine does; the attention output n_heads · head_size wide;
// post-norms (Gemma 2) on the attention and MLP outputs before the residual adds; SwiGLU
// silu(gate)·up or GELU-tanh gating; embeddings times embd_scale; final RMSNorm, the classifier,
// tied (output = tok_embd) or not, and soft-capped logits. Fused tensors (Phi-3) are the loaders'
// views, trained as the separate matrices they are. The training forward's logits equal
// kn_forward's up to rounding (the engine sums in 16-lane fp32 trees and uses its own exp and
// tanh; tests/test_qat.c states the tolerance).
//
// Parameters live in one flat array (struct kn_train_layout): every tensor at a 64-byte aligned
// offset, row-major as kn_model.h stores it. Gradients use the same layout.
//
// Determinism: the result does not depend on the thread count. Matrix products go to OpenBLAS in
// fixed chunks of KN_TRAIN_CHUNK output rows or columns (the chunking depends on the shapes only;
// threads take whole chunks, each one single-threaded sgemm/dgemm call, so every element is
// computed by the same call whatever thread runs it). Weight gradients are partitioned by output
// row, never reduced across threads; attention's backward is partitioned by KV head (a task
// writes dq of its query heads and dk, dv of its KV head only); RMSNorm weight gradients, the
// embedding scatter and the loss sums run in token order on one thread. No atomics. (The bits do
// depend on which OpenBLAS kernels run: OPENBLAS_CORETYPE changes their rounding.)
//
// Depends on kernels/ (kn_model.h, kn_blocks.h, kn_engine.h for the RoPE tables, qp.h), OpenBLAS's cblas and OpenMP.
#ifndef KN_TRAIN_H
#define KN_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "kn_model.h"

#define KN_TRAIN_CHUNK 64 // rows or columns per matrix-product call (see Determinism)
// Work (multiply-adds) below which a step runs on one thread: on small models (stories260K) the
// barriers of a parallel region cost more than they save, and far more on a loaded machine
// (measured 15x slower with 2 threads than 1 on windows of 64 tokens). Does not change any bit.
#define KN_TRAIN_PAR_WORK ((int64_t)1 << 18)

// What a parameter tensor is. Block tensors carry their layer.
enum kn_tp_kind {
    KN_TP_EMBED,     // token embedding (vocab, dim)
    KN_TP_ATTN_NORM, // (dim)
    KN_TP_WQ,        // (q_dim, dim), q_dim = n_heads · head_size
    KN_TP_WK,        // (kv_dim, dim)
    KN_TP_WV,        // (kv_dim, dim)
    KN_TP_WO,        // (dim, q_dim)
    KN_TP_FFN_NORM,  // (dim)
    KN_TP_GATE,      // (hidden, dim)
    KN_TP_DOWN,      // (dim, hidden)
    KN_TP_UP,        // (hidden, dim)
    KN_TP_OUT_NORM,  // (dim)
    KN_TP_OUTPUT,    // classifier (vocab, dim); absent when tied
    KN_TP_BQ,        // (q_dim) q bias, has_qkv_bias only
    KN_TP_BK,        // (kv_dim)
    KN_TP_BV,        // (kv_dim)
    KN_TP_ATTN_POST, // (dim) post-attention norm, post_norms only
    KN_TP_FFN_POST,  // (dim) post-FFN norm
    KN_TP_COUNT
};

struct kn_tparam {
    int kind;          // enum kn_tp_kind
    int layer;         // block tensors: 0..n_layers-1; else -1
    int64_t rows, cols; // 1-D tensors: rows = 1
    size_t off;        // first element in the flat array (a multiple of 16)
};

struct kn_train_layout {
    struct kn_config cfg;
    int tied;               // 1: the classifier is tok_embd (its gradient adds into it)
    int per_layer;          // tensors per block: 9, + 3 biases, + 2 post-norms
    int slot[KN_TP_COUNT];  // a block tensor's place among its block's (-1: the family has none)
    int n_tensors;          // 1 + per_layer · n_layers + 1 + (tied ? 0 : 1)
    struct kn_tparam *t;    // n_tensors entries: embed, per layer (attn_norm wq wk wv wo ffn_norm
                            // gate down up [bq bk bv] [attn_post ffn_post]), out_norm, output
    size_t n_floats;        // size of the flat array
    // RoPE frequency factors (head_size / 2 each, owned copies; NULL when the model has none):
    // fixed, not trained (kn_train_layout_rope).
    float *rope_freqs, *rope_short, *rope_long;
};

// Fills L for cfg (checked with kn_config_check; every family of kn_model.h trains). 0, QP_ERANGE
// or QP_ENOMEM with err.
int kn_train_layout_init(struct kn_train_layout *L, const struct kn_config *cfg, int tied, char *err);
void kn_train_layout_deinit(struct kn_train_layout *L);
// Copies the model's RoPE frequency factors into L (each NULL or head_size / 2 floats; short and
// long come as a pair). Workspaces created afterwards use them. 0 or QP_ENOMEM / QP_EINVAL.
int kn_train_layout_rope(struct kn_train_layout *L, const float *freqs, const float *fshort, const float *flong,
                         char *err);
// Index into L->t of a tensor (layer ignored for non-block kinds); -1 for KN_TP_OUTPUT when tied.
int kn_train_index(const struct kn_train_layout *L, int kind, int layer);
// GGUF-style name of tensor i ("blk.3.attn_q.weight", "blk.3.attn_q.bias"), into buf (cap bytes).
void kn_train_tensor_name(const struct kn_train_layout *L, int i, char *buf, size_t cap);

// The tensor of w that parameter i is (w->layers must have cfg.n_layers entries).
struct kn_tensor *kn_train_slot(const struct kn_train_layout *L, int i, struct kn_weights *w);

// The flat fp32 parameters of w (any type with a dequantizer; tied as L says — when L is untied
// and w tied, output gets a copy of the embedding). params: L->n_floats floats, caller-owned.
// 0 or QP_ENOTSUP (a type qprobe cannot read) / QP_ERANGE (shapes do not match L) with err.
int kn_train_params_from(const struct kn_train_layout *L, const struct kn_weights *w, float *params,
                         char *err);
// A kn_weights view of flat fp32 params (F32 tensors pointing into params, the RoPE factors into
// L; layers: cfg.n_layers entries, caller-owned). Valid while params and L live.
void kn_train_weights_view(const struct kn_train_layout *L, const float *params,
                           struct kn_layer_weights *layers, struct kn_weights *w);

// ---------------------------------------------------------------------------------------------
// The forward/backward workspace of one window, fp32 (kn_train) and fp64 (kn_train64).

struct kn_train;
struct kn_train64;

// A workspace for windows of up to max_tokens tokens (<= cfg.seq_len), using n_threads OpenMP
// threads (for steps with at least KN_TRAIN_PAR_WORK of work). While it lives OpenBLAS runs
// single-threaded (openblas_set_num_threads(1); destroy restores the previous count): the
// products run inside our own threads. It keeps the activations of the last forward, about
// n_layers · max_tokens · (4 dim + 2 q_dim + 2 kv_dim + 3 hidden + n_heads · max_tokens) values
// (+ 2 dim with post-norms), plus the logits and n_threads · max_tokens² of attention scratch
// (twice with soft-capped scores). L must outlive it.
// 0, QP_EINVAL or QP_ENOMEM with err.
int kn_train_create(const struct kn_train_layout *L, int max_tokens, int n_threads, struct kn_train **out,
                    char *err);
int kn_train64_create(const struct kn_train_layout *L, int max_tokens, int n_threads,
                      struct kn_train64 **out, char *err);
void kn_train_destroy(struct kn_train *t);
void kn_train64_destroy(struct kn_train64 *t);

// Effective weights. Quantization-aware training multiplies with weights derived from the
// parameters (their fake quantization), not with the parameters themselves. Rather than a stored
// copy of every derived tensor (a fifth fp32 copy of the model next to the parameters, their
// gradients and two AdamW moments), the fp32 workspace asks for them when it needs them: each
// derived 2-D tensor is computed into one scratch buffer (the size of the largest derived tensor)
// just before its product — in the forward, and again in the backward where dX needs the
// weights — and the embedding's rows one token at a time. The values are the callback's, so the
// bits are those of a stored copy.
struct kn_train_wsrc {
    // 1 when tensor i (an index into L->t) is derived; asked once per tensor, by
    // kn_train_set_wsrc. Only tensors of more than one row may be.
    int (*derived)(void *ctx, int i);
    // Rows [r0, r1) of tensor i's effective weights, from the flat params, into out (row r at
    // out + (r − r0) · cols). Called from several threads at once on disjoint row ranges; a row's
    // values must not depend on the range it comes in.
    void (*rows)(void *ctx, int i, const float *params, int64_t r0, int64_t r1, float *out);
    void *ctx;
};

// Sets the effective weights of t (ws copied; ctx must outlive t). 0 or QP_ENOMEM with err.
int kn_train_set_wsrc(struct kn_train *t, const struct kn_train_wsrc *ws, char *err);

// Runs tokens[0..n) at positions 0..n-1 with params; returns the logits (n, vocab), owned by t
// and valid until the next forward. Token ids must lie in [0, vocab) (asserted).
const float *kn_train_forward(struct kn_train *t, const float *params, const int *tokens, int n);
const double *kn_train64_forward(struct kn_train64 *t, const double *params, const int *tokens, int n);

// Adds dL/dparams into grads (flat, L's layout) for dlogits = dL/dlogits (n, vocab) of the last
// forward, which must have run with the same params. With effective weights (kn_train_set_wsrc),
// a derived tensor's gradient is dL/d(effective weights): the caller maps it to the parameters.
void kn_train_backward(struct kn_train *t, const float *params, const float *dlogits, float *grads);
void kn_train64_backward(struct kn_train64 *t, const double *params, const double *dlogits,
                         double *grads);

// ---------------------------------------------------------------------------------------------
// Loss

// The distillation loss of n rows of logits against the teacher's: per row
//   KL(p_t ‖ p_s) = Σ_v p_t (log p_t − log p_s)   and, when ce_weight > 0 and targets[i] >= 0,
//   + ce_weight · (−log p_s[targets[i]]),
// with p = softmax(logits) (log-sum-exp in fp64). Writes dlogits = scale · dL_row/dlogits
// (= scale · (p_s − p_t + ce_weight · (p_s − onehot))). Returns the sums over rows (fp64, in row
// order) of the KL terms in *kl and of the cross-entropy terms in *ce (either may be NULL).
// targets may be NULL (no CE). rows: 2n doubles of caller-owned scratch (the per-row terms).
// Rows run over n_threads threads; the result does not depend on it.
void kn_train_loss(const float *logits, const float *teacher, const int *targets, int n, int vocab,
                   double ce_weight, double scale, int n_threads, float *dlogits, double *rows, double *kl,
                   double *ce);
void kn_train64_loss(const double *logits, const double *teacher, const int *targets, int n, int vocab,
                     double ce_weight, double scale, int n_threads, double *dlogits, double *rows, double *kl,
                     double *ce);

// ---------------------------------------------------------------------------------------------
// Optimizer

// The Euclidean norm of g[0..n), summed in fp64 in blocks of 4096 in a fixed order.
double kn_train_grad_norm(const float *g, size_t n);

struct kn_adamw {
    double lr, beta1, beta2, eps, weight_decay;
    int64_t step; // the step being taken, from 1: the caller increments it before each step's updates
};

// One AdamW update (Loshchilov & Hutter; PyTorch's AdamW) of p[0..n) at step t = o->step: for each i,
//   m = β1 m + (1 − β1) g,  v = β2 v + (1 − β2) g²,
//   p −= lr · (m / (1 − β1^t)) / (sqrt(v / (1 − β2^t)) + eps) + lr · wd · p   (wd only if decay),
// g = grad[i] · gscale (gradient clipping is a gscale < 1). Element-wise in fp32 (fp64 for the
// bias corrections), split over n_threads threads: each element's arithmetic is the same whoever
// computes it.
void kn_adamw_update(const struct kn_adamw *o, float *p, const float *grad, float *m, float *v, size_t n,
                     float gscale, int decay, int n_threads);

#endif
