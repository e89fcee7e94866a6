// kn_engine.h — the transformer forward pass: Llama blocks (RMSNorm, RoPE, grouped-query
// causal attention, SwiGLU MLP) and the variants of the other families in kn_model.h (biases,
// rotate-half RoPE and scaled frequencies, GELU gating, post-norms, soft-capping, sliding
// windows) over whole windows (prefill) or one token at a time (decode), with a KV cache and
// probe hooks.
//
// An engine holds the prepared weights (packed into the GEMM panel layout, fp32) and is shared
// read-only; a state holds one sequence's activations and KV cache and belongs to one caller.
// Results do not depend on the thread count: every output is computed by one thread in a fixed
// order (kn_ops.h). Depends on kernels/ only.
#ifndef KN_ENGINE_H
#define KN_ENGINE_H

#include "kn_model.h"
#include "kn_ops.h"

// Probe sites, in the order the forward pass reaches them within a layer. Every family has the
// same sites with the same meaning; the post-norm sites exist only in families with post-norms
// (kn_site_used), so per-layer reports compare across families.
enum kn_site {
    KN_SITE_BLOCK_IN,  // residual stream entering the block           (n, dim)
    KN_SITE_ATTN_NORM, // normed input of wq/wk/wv                      (n, dim)
    KN_SITE_ATTN_MIX,  // attention-weighted values, input of wo        (n, q_dim)
    KN_SITE_ATTN_OUT,  // wo output, before the residual add            (n, dim)
    KN_SITE_ATTN_POST, // attn_out through the post-attention norm      (n, dim)   post_norms only
    KN_SITE_FFN_NORM,  // normed input of w_gate/w_up                   (n, dim)
    KN_SITE_FFN_ACT,   // gated activations, input of w_down            (n, hidden)
    KN_SITE_MLP_OUT,   // w_down output, before the residual add        (n, dim)
    KN_SITE_MLP_POST,  // mlp_out through the post-FFN norm             (n, dim)   post_norms only
    KN_SITE_RESID_OUT, // residual stream leaving the block             (n, dim)
    KN_SITE_LOGITS,    // final logits (layer = n_layers)               (n, vocab)
    KN_SITE_COUNT
};

// Names: "block_in", "attn_norm", "attn_mix", "attn_out", "attn_post_norm", "ffn_norm", "ffn_act",
// "mlp_out", "ffn_post_norm", "resid_out", "logits".
const char *kn_site_name(enum kn_site s);
// Does a model of this config reach site s? (All but the post-norm sites: always.)
int kn_site_used(const struct kn_config *c, enum kn_site s);
// Row width at site s: q_dim at ATTN_MIX, hidden_dim at FFN_ACT, vocab_size at LOGITS, else dim.
int kn_site_width(const struct kn_config *c, enum kn_site s);

// A probe is called at every site with the rows of this call (positions pos0..pos0+n-1). It may
// read x but not keep the pointer. No probe, no cost.
// inject (optional) is called at the start of every block, before the KN_SITE_BLOCK_IN probe, with
// the residual stream (n, dim) that the block is about to read; it may overwrite it. Feeding the
// reference model's block input into a quantized model this way measures each layer's local error.
struct kn_probe {
    void (*fn)(void *ctx, enum kn_site site, int layer, const float *x, int n, int width, int pos0);
    void *ctx;
    void (*inject)(void *ctx, int layer, float *x, int n, int width, int pos0);
};

struct kn_engine;
struct kn_state;

// Matrix products: the engine's own kernels (default; bit-identical across ISAs and threads), or
// OpenBLAS's sgemm (the CLI's QPROBE_GEMM=blas), whose summation order is OpenBLAS's own:
// results agree with the own kernels to about 1e-6 relative, not bit for bit.
enum kn_gemm { KN_GEMM_OWN, KN_GEMM_BLAS };
const char *kn_gemm_name(enum kn_gemm g); // "own", "openblas (CORE)"
// How the own GEMM holds its fp32 weight panels (docs/ENGINE.md, "Memory"): by model size
// (auto), prepacked once, or streamed (built per call from the stored weights). Same bits.
enum kn_panels { KN_PANELS_AUTO, KN_PANELS_PREPACK, KN_PANELS_STREAM };

// The program's choices for every engine made after the call (the CLI passes QPROBE_GEMM and
// QPROBE_PANELS; the defaults are own and auto). Call from one thread, before making engines.
void kn_engine_defaults(enum kn_gemm gemm, enum kn_panels panels);
// Parse the names "own" / "blas" and "prepack" / "stream" ("" or NULL: the default);
// QP_EINVAL for other names (no message: the caller names its source).
int kn_gemm_parse(const char *name, enum kn_gemm *out);
int kn_panels_parse(const char *name, enum kn_panels *out);

// Debian 12's OpenBLAS 0.3.21 does not recognise newer AVX-512 CPUs (AMD Zen 4/5) and silently
// runs its Haswell kernels at half the fp32 peak; OPENBLAS_CORETYPE=SkylakeX, read when the library
// loads, restores its AVX-512 kernels. kn_blas_coretype_fix decides: the core type to set when
// the CPU has AVX-512 (F/BW/VL/DQ), OpenBLAS chose a core without it, and the user did not set
// OPENBLAS_CORETYPE (env); NULL otherwise. kn_blas_coretype_needed asks it with this machine's
// values and the variable's value env (main() then sets the variable and re-executes itself).
const char *kn_blas_coretype_fix(int has_avx512, const char *corename, const char *env);
const char *kn_blas_coretype_needed(const char *env);

struct kn_engine_opts {
    const struct kn_ops *ops; // NULL = kn_ops_best()
    // 0: every matrix runs in fp32 (packed types dequantized once into fp32 panels: the weight
    //    error alone). 1: packed types run on their blocks with activations quantized per block
    //    as llama.cpp's CPU dot products do (q8_0 / q8_1 / q8_K); f32/f16/bf16 stay fp32.
    int act_q8;
    // W8A8's activation half (SmoothQuant, w8a8): the input rows of every linear of the blocks
    // (wq wk wv wo w_gate w_up w_down; not the classifier, which W8A8 keeps in float) are
    // fake-quantized to int8 before the product. Applied before act_q8's block quantization when
    // both are set. KN_ACT_INT8_OFF (0): off.
    // KN_ACT_INT8_TOKEN (1), per token, dynamic: scale = max|x| / 127 over the row (fp32),
    //    x' = rint(x / scale) · scale (ties to even, as torch.round); an all-zero row stays 0.
    // KN_ACT_INT8_TENSOR (2), per tensor, static: one scale per linear input from act_scales,
    //    x' = clamp(rint(x / scale), −127, 127) · scale (values beyond 127 · scale saturate).
    int act_int8;
    // act_int8 == KN_ACT_INT8_TENSOR: (n_layers, KN_LIN_IN_COUNT) scales, layer l's input i at
    // [l * KN_LIN_IN_COUNT + i]; each finite and >= 0 (0: that input becomes 0). Caller-owned,
    // read by kn_engine_create_opts only (copied). Ignored otherwise.
    const float *act_scales;
    // Optional: the weights live in a file mapping whose pages the caller lets the engine drop
    // (the harness passes hx_release_source). Then matrices that decoding would otherwise read
    // in a slow layout are copied once, here, into the engine's own layout of the same size, and
    // release_source(data, bytes) is called on each stored matrix so copied: F16 matrices of a
    // streaming engine become fp16 panels (kn_ops.h gemv_f16), and act_q8 matrices whose
    // kernels have an x16 layout (kn_qdot.h; Q4_0 on AVX512-VNNI) take it. The engine never
    // reads those stored matrices again. NULL: every matrix is read as stored. Same bits.
    void (*release_source)(const void *p, size_t n);
};

enum { KN_ACT_INT8_OFF, KN_ACT_INT8_TOKEN, KN_ACT_INT8_TENSOR };

// The linear inputs of a block, for act_scales (the order of harness/run/hx_calib.h's sites).
enum kn_lin_in {
    KN_LIN_IN_ATTN,     // input of wq, wk, wv (KN_SITE_ATTN_NORM)
    KN_LIN_IN_ATTN_MIX, // input of wo (KN_SITE_ATTN_MIX)
    KN_LIN_IN_FFN,      // input of w_gate, w_up (KN_SITE_FFN_NORM)
    KN_LIN_IN_FFN_ACT,  // input of w_down (KN_SITE_FFN_ACT)
    KN_LIN_IN_COUNT
};

// Prepares w for the engine: plain and (with act_q8 = 0) packed matrices become fp32 panels;
// with act_q8 packed matrices are used in place. w must outlive the engine.
// 0 or QP_ENOTSUP/QP_ENOMEM, or QP_EINVAL for bad act_int8 options, with a message.
int kn_engine_create_opts(const struct kn_weights *w, const struct kn_engine_opts *o,
                          struct kn_engine **out, char *err);
// The same with default options and the given kernel table (NULL = best).
int kn_engine_create(const struct kn_weights *w, const struct kn_ops *ops, struct kn_engine **out,
                     char *err);
void kn_engine_destroy(struct kn_engine *e);
const struct kn_config *kn_engine_config(const struct kn_engine *e);
const struct kn_ops *kn_engine_ops(const struct kn_engine *e);
enum kn_gemm kn_engine_gemm(const struct kn_engine *e);
// How the own GEMM gets its fp32 weight panels: "prepacked" (held for the engine's life) or
// "streamed" (built per call, see docs/ENGINE.md); "none" with the BLAS GEMM.
const char *kn_engine_panels(const struct kn_engine *e);

// The kernel path of each family this engine runs, as one line for logs and the store, e.g.
// "ops avx512 (gemm 6x64 streamed, attention, norms); q8 q4_0 avx512-vnni, q6_K avx2". Writes at
// most size bytes into buf and returns buf.
char *kn_engine_kernels(const struct kn_engine *e, char *buf, size_t size);

// The RoPE tables of a context of n_ctx positions, (n_ctx, head_size / 2) cos and sin each, as
// the engine computes them (kn_engine.c): frequency factors freqs for every context, else flong
// above the config's original context and fshort below (any may be NULL), the linear scale and the
// attention factor. The training forward (kn_train.h) uses the same tables.
void kn_rope_tables_fill(const struct kn_config *c, const float *freqs, const float *fshort, const float *flong,
                         int n_ctx, float *cos_out, float *sin_out);

// A state for sequences of up to max_ctx positions, processing up to max_batch tokens per call,
// using n_threads OpenMP threads inside each call (1 = none). Destroy with kn_state_destroy.
int kn_state_create(const struct kn_engine *e, int max_ctx, int max_batch, int n_threads,
                    struct kn_state **out, char *err);
void kn_state_destroy(struct kn_state *s);
void kn_state_reset(struct kn_state *s); // forget the sequence (n_past = 0)
// Forgets every position from n_past on (0 <= n_past <= current n_past): the next kn_forward
// continues from there, e.g. to score several continuations after one shared context.
void kn_state_rewind(struct kn_state *s, int n_past);

// Runs tokens[0..n) at positions n_past.. n_past+n-1 (n <= max_batch, n_past+n <= max_ctx),
// appends them to the KV cache, and writes logits for rows first_logit..n-1 into
// logits[(i - first_logit) * vocab]. logits may be NULL (no classifier computed). probe may be
// NULL. Token ids must be in [0, vocab) (checked by the caller; asserted here).
void kn_forward(struct kn_state *s, const int *tokens, int n, float *logits, int first_logit,
                const struct kn_probe *probe);

#endif
