// synth.h — synthetic models of real shapes (TinyLlama-1.1B, Llama-3.2-1B, Qwen2.5, Phi-3-mini,
// Gemma-2-2B, 7B/8B blocks, a tiny test shape) and the small test model of each family, written as
// GGUF files that qprobe and llama.cpp load: deterministic heavy-tailed weights from a seed, a few
// planted outlier input channels, and the family's real vocabulary where the fixtures have one (a
// GGUF's tokenizer.* keys copied, or a tokenizer.json converted to them). Used to measure speed at
// realistic sizes and to compare the families with llama.cpp, not quality.
//
// Weights are a pure function of (seed, tensor, element): any thread count gives the same
// bytes, and changing the layer count leaves the layers both files share identical.
// The file is generated tensor by tensor, a few megabytes at a time, and streamed to disk
// (hx_gguf_stream_*), so a 4.4 GB model needs only that much memory.
//
// Depends on kernels/ (qp.h, kn_types.h, kn_model.h), harness/io/hx_gguf.h, hx_gguf_model.h and
// hx_tokenizer.h (to convert a tokenizer.json vocabulary); not on the engine or any command code.
#ifndef HX_SYNTH_H
#define HX_SYNTH_H

#include <stdint.h>

#include "kn_model.h" // enum kn_arch
#include "kn_types.h"

// Input channels planted as outliers in every q/k/v/gate/up matrix (the same channels in all
// layers, as real models' outlier features sit in fixed hidden dimensions).
#define HX_SYNTH_N_OUTLIERS 4
// Columns of those channels are multiplied by this.
#define HX_SYNTH_OUTLIER_SCALE 20.0f
// Degrees of freedom of the Student-t the matrices are drawn from.
#define HX_SYNTH_DOF 5

// A model shape: the hyperparameters of a real model (layers may be overridden) and its family's
// block variant. Fields after rope_theta are 0 for a Llama 2.
struct hx_synth_shape {
    const char *name;  // "tinyllama-1.1b"
    const char *what;  // one line for --list-shapes
    int dim;           // embedding_length
    int hidden_dim;    // feed_forward_length
    int n_layers;      // block_count
    int n_heads;
    int n_kv_heads;
    int seq_len;       // context_length
    int vocab_size;    // embedding rows: the vocabulary's token count, or more (padded)
    float norm_eps;    // layer_norm_rms_epsilon
    float rope_theta;  // rope.freq_base
    enum kn_arch arch; // the family (general.architecture)
    int head_size;     // 0: dim / n_heads
    int tied;          // no output.weight: the embedding is the classifier
    float llama3_rope; // > 0: Llama 3's rope scaling with this factor (low 1, high 4, 8192), as rope_freqs
    int rope_ctx_orig; // Phi-3: rope_factors_short/long with this original context (0: none)
    int swa_window;    // sliding window (Phi-3, Gemma 2)
    float attn_softcap, final_softcap; // Gemma 2
    float embd_std;    // token embedding's standard deviation (0: 0.02, Llama's init range)
    float out_gain;    // classifier (tied: the final norm) times this (0: 1); > 1 makes next-token
                       // distributions peaked
    const char *vocab; // default vocabulary, relative to the fixtures ("": none)
    int pad_vocab;     // a GGUF vocabulary may have fewer tokens: padded with "[PAD<id>]" tokens
                       // (a tokenizer.json always is, as llama.cpp's converter pads it)
};

// The table of shapes (static, never freed); *n gets its length.
const struct hx_synth_shape *hx_synth_shapes(int *n);
// The shape called name, or NULL.
const struct hx_synth_shape *hx_synth_shape_find(const char *name);
// The small test model of a family (`qprobe synth --arch A`): "llama", "qwen2", "phi3",
// "gemma2" (the GGUF architecture names); NULL for another name.
const struct hx_synth_shape *hx_synth_arch_shape(const char *arch);

struct hx_synth_opts {
    const struct hx_synth_shape *shape;
    uint64_t seed;
    enum kn_type type; // KN_F32 or KN_F16: the 2-D matrices; norm vectors stay F32
    int n_layers;      // 0: the shape's own count; else 1..1024
    const char *vocab; // a GGUF (llama SPM or gpt2 BPE vocabulary) whose tokenizer.* keys are
                       // copied, or a tokenizer.json converted to them; NULL: none
    int n_threads;     // >= 1; the bytes do not depend on it
    // Called after each tensor (done of total tensors, data bytes so far); may be NULL.
    void (*progress)(void *ctx, int done, int total, uint64_t bytes);
    void *progress_ctx;
    // When non-NULL and set (by a signal handler), the write stops between chunks with
    // QP_EINTR and leaves no file.
    const volatile int *stop;
};

struct hx_synth_info {
    int outliers[HX_SYNTH_N_OUTLIERS]; // the planted input channels, ascending
    int n_layers;                      // as written
    int64_t n_params;                  // weights written
    uint64_t data_bytes;               // tensor bytes (file size minus header and padding)
    double seconds;                    // generation and writing, wall clock
};

// Writes the model described by o to path (atomically: temporary file + rename; on any failure
// no file and no temporary file is left). info may be NULL. Returns 0, QP_EINVAL (bad options),
// QP_ENOENT/QP_EFORMAT (vocabulary file unusable), QP_ENOMEM, QP_EIO (cannot create the file),
// QP_EWRITE (not enough space, a write failed) or QP_EINTR (o->stop was set), with err "cannot write
// 'PATH': ...", "cannot read 'VOCAB': ..." or "cannot use 'VOCAB' ...". Nothing of o is kept.
int hx_synth_write(const struct hx_synth_opts *o, const char *path, struct hx_synth_info *info,
                   char *err);

// The outlier channels hx_synth_write plants for seed in a model of width dim (dim >= 4):
// HX_SYNTH_N_OUTLIERS distinct values in 0..dim-1, ascending.
void hx_synth_outliers(uint64_t seed, int dim, int out[HX_SYNTH_N_OUTLIERS]);

#endif
