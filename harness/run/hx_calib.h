// calib.h — calibration data and the calibrated quantizers' driver: token windows from a text,
// activation statistics streamed through the engine's probes, the overlap check between
// calibration and evaluation texts, and a whole model quantized with GPTQ, AWQ, SmoothQuant W8A8
// or llama.cpp types with an importance matrix (spec grammar: quantizers/qz_spec.h).
//
// Calibration windows: the text is tokenized as evaluation texts are (whole text, BOS, SPM space
// prefix, one trailing newline dropped) and cut into consecutive non-overlapping windows of
// seq_len tokens from the start; each window's first token is replaced by BOS (as llama.cpp's
// perplexity and imatrix tools do). n_seqs windows are used (HX_CALIB_SEQS × HX_CALIB_LEN by
// default), fewer when the text is shorter, and one shorter window when the text holds less
// than seq_len tokens.
//
// Statistics, per linear input ("site"), accumulated over every calibration token and never
// stored per token: Σ x xᵀ (fp64, with OpenBLAS's dsyrk on each window's rows converted to
// fp64), and per channel Σ|x|, Σ x² (fp64) and max|x|. Sites: the input of wq/wk/wv (the engine's
// KN_SITE_ATTN_NORM), of wo (KN_SITE_ATTN_MIX), of w_gate/w_up (KN_SITE_FFN_NORM), of w_down
// (KN_SITE_FFN_ACT), and of the classifier (the last block's output through the final RMSNorm,
// computed here from KN_SITE_RESID_OUT with the engine's own rmsnorm kernel).
//
// Depends on kernels/, quantizers/, harness/io/hx_tokenizer.h and harness/run/hx_qmodel.h (the
// result struct and the tensor-level steps); not on hx_variant.h, which calls into this module.
#ifndef HX_CALIB_H
#define HX_CALIB_H

#include <stddef.h>
#include <stdint.h>

#include "kn_model.h"
#include "qz_spec.h" // enum qz_method

struct hx_quant_model;
struct hx_tok;
struct qz_variant;

#define HX_CALIB_SEQS 128      // default number of windows
#define HX_CALIB_LEN 512       // default window length in tokens
#define HX_CALIB_MIN_TOKENS 16 // a shorter calibration text is refused

// ---------------------------------------------------------------------------------------------
// Calibration windows

struct hx_calib_report;

struct hx_calib {
    int *tokens;       // (n_seqs, seq_len) token ids, each window starting with BOS
    int n_seqs, seq_len;
    size_t text_bytes; // bytes of the calibration text the windows cover (a prefix of it)
    int n_threads;     // windows run at once, one thread each (default 1; the caller may set it)
    // Optional, caller-owned: when set, every hx_calib_quantize (and so
    // hx_quant_model_create_calib) with this calibration replaces its contents with the run's
    // per-module records (free them with hx_calib_report_clear).
    struct hx_calib_report *report;
    // Optional, caller-owned: polled by long calibrated runs (QAT, harness/run/hx_qat.h; GPTQ,
    // AWQ and SmoothQuant after each layer), which stop with QP_EINTR once it is nonzero
    // (Ctrl-C). NULL: never stopped.
    const volatile int *stop;
    // Optional: set, calibrated quantization reports its layers done on stderr (hx_progress.h)
    // under this label (e.g. "[3/8] gptq:bits=4:group=128"). NULL: silent.
    const char *progress_label;
};

// Cuts text[0..len) into windows as described above. seq_len must not exceed the context the
// model is run at (the caller caps it at the model's trained context). On success *out is new
// (free with hx_calib_destroy); else QP_EINVAL (too short: fewer than HX_CALIB_MIN_TOKENS
// tokens) or QP_ENOMEM with err, *out = NULL.
int hx_calib_create(const struct hx_tok *tok, const char *text, size_t len, int n_seqs, int seq_len,
                    struct hx_calib **out, char *err);
void hx_calib_destroy(struct hx_calib *c); // NULL is fine

// ---------------------------------------------------------------------------------------------
// Overlap between a calibration text and an evaluation text.
//
// Rule: every 64-byte window (shingle) of the evaluation text is hashed into a bitmap of at
// least 8 bits per evaluation byte (so a shingle not in the text hits with probability <= 1/8);
// each calibration position whose 64-byte shingle hits continues a run; a run of r consecutive
// hits covers r + 63 bytes. Runs shorter than HX_OVERLAP_MIN_RUN bytes are ignored: natural
// text repeats phrases (TinyStories' two halves share runs of up to 131 bytes, e.g. "Once upon a
// time, there was a little girl named Lily. She loved to play"), and a chance streak of 193
// false hits has probability below 8^-193. *overlap_bytes = the calibration bytes in runs of
// HX_OVERLAP_MIN_RUN bytes or more. Returns 1 when that is > 0 (refuse, or warn and record),
// 0 when not, QP_ENOMEM. Memory: about m bytes for the bitmap.
#define HX_OVERLAP_SHINGLE 64
#define HX_OVERLAP_MIN_RUN 256
int hx_calib_overlap(const char *calib_text, size_t n, const char *eval_text, size_t m,
                     int64_t *overlap_bytes);

// ---------------------------------------------------------------------------------------------
// Calibration for an evaluation, set up the one way every command does it: the calibration
// text read, cut into windows (seq_len capped at the model's trained context model_ctx), and
// the bytes those windows cover compared with the evaluation text eval_text[0..eval_len)
// (hx_calib_overlap). An overlap is refused (QP_EINVAL) unless allow_overlap, which warns on
// stderr and leaves it for the caller to record. On success *out is new (hx_calib_destroy),
// *overlap_bytes the overlap; else QP_EIO/QP_EFORMAT (the text cannot be read), QP_EINVAL
// (too short, overlapping) or QP_ENOMEM with err naming the file, *out = NULL.
struct hx_calib_setup {
    const char *path;  // the calibration text
    int n_seqs, seq_len; // windows asked (HX_CALIB_SEQS, HX_CALIB_LEN by default)
    int n_threads;     // hx_calib.n_threads
    int allow_overlap; // 1: record an overlap instead of refusing it
    int can_allow;     // 1: the refusal says the overlap may be allowed (the caller has an option)
};
int hx_calib_prepare(const struct hx_calib_setup *o, const struct hx_tok *tok, int model_ctx, const char *eval_path,
                     const char *eval_text, size_t eval_len, struct hx_calib **out, int64_t *overlap_bytes,
                     char *err);

// ---------------------------------------------------------------------------------------------
// Activation statistics

enum hx_calib_site {
    HX_CS_ATTN_IN,  // input of wq, wk, wv   (dim)
    HX_CS_ATTN_MIX, // input of wo           (dim)
    HX_CS_FFN_IN,   // input of w_gate, w_up (dim)
    HX_CS_FFN_ACT,  // input of w_down       (hidden)
    HX_CS_COUNT
};

struct hx_site_stats {
    int width;        // 0: not collected
    int64_t n;        // tokens seen
    int finished;     // hx_calib_stats_finish turned sums into means
    double *gram;     // (width, width): Σ x xᵀ, after finish C = Σ x xᵀ / n (full, symmetric);
                      // NULL when not asked
    double *mean_abs; // (width): Σ|x|, after finish mean |x| (AWQ's x̄)
    double *mean_sq;  // (width): Σ x², after finish mean x² (llama.cpp's imatrix)
    float *max_abs;   // (width): max |x| (SmoothQuant)
    int gram_is_h;    // GPTQ doubled gram in place into its Hessian H = 2·C (cq_gptq)
};

struct hx_calib_stats {
    int n_layers;
    struct hx_site_stats *site; // n_layers * HX_CS_COUNT + 1 entries: layer l's site s at
                                // l * HX_CS_COUNT + s, the classifier's input last
};

static inline struct hx_site_stats *hx_calib_site(struct hx_calib_stats *st, int layer, int site) {
    return &st->site[layer * HX_CS_COUNT + site];
}
static inline struct hx_site_stats *hx_calib_site_output(struct hx_calib_stats *st) {
    return &st->site[st->n_layers * HX_CS_COUNT];
}

// Runs the calibration windows through w (its cfg.n_layers may be smaller than the model's, to
// stop after a block) with act_q8 as the engine option, and collects into st (zeroed by the
// caller; st->n_layers is set to the full model's n_layers given as n_layers_full) the sites of
// layer `layer` (every layer of w when layer < 0) and, with classifier set, the classifier's
// input (w must then hold all layers). want_gram: also Σ x xᵀ. 0 or QP_E* with err; the
// statistics are then freed.
int hx_calib_collect(const struct kn_weights *w, int n_layers_full, const struct hx_calib *cal, int act_q8,
                     int layer, int classifier, int want_gram, struct hx_calib_stats *st, char *err);
void hx_calib_stats_finish(struct hx_calib_stats *st);
void hx_calib_stats_free(struct hx_calib_stats *st);

// ---------------------------------------------------------------------------------------------
// Quantizing a model with calibration

// What one calibrated tensor got (GPTQ, AWQ or SmoothQuant); the per-module loss record.
struct hx_calib_module {
    char name[64];      // GGUF name, "blk.3.ffn_down.weight"
    enum qz_method method; // QZ_GPTQ, QZ_AWQ, QZ_SMOOTHQUANT (qz_method_name spells it)
    double loss;        // gptq: ½ tr(ΔHΔᵀ) (qz_gptq.h); awq: output MSE (qz_awq.h); sq: 0
    double aux;         // gptq: obs_loss; awq: the group's α; sq: α
    double damp;        // gptq: damping fraction used; else 0
};

struct hx_calib_report {
    struct hx_calib_module *modules; // n_modules records (malloc'd)
    int n_modules;
    double seconds; // wall time of the quantization, statistics included
};
void hx_calib_report_clear(struct hx_calib_report *r);

// Quantizes src under v with the calibration windows cal. Calibrated methods (qz_spec.h):
//   gptq  — layers in order; the statistics of layer l come from the model whose token
//           embedding and layers < l are already quantized (and layer l is not); then each of
//           the layer's 7 linears is quantized with qz_gptq (H = 2·C of its input). The
//           classifier gets GPTQ too, from the fully quantized model's classifier input. Layers
//           are processed whole: q/k/v, wo, gate/up and w_down all see the statistics of the
//           pass before any of them is quantized (AutoGPTQ's true_sequential would re-run the
//           block between them).
//   awq   — the same sequence; per layer: wo (input: attention mix; 1/s folded into the rows of
//           wv, s shared by the query heads of one KV head, so that it folds under
//           grouped-query attention), w_down (1/s into the rows of w_up), then q/k/v (1/s into
//           attn_norm; no clipping for q and k) and gate/up (1/s into ffn_norm); the classifier
//           (1/s into the final norm).
//   smoothquant, w8a8 — one pass over the fp32 model for max|x|; for smoothquant, q/k/v and
//           gate/up smoothed with the spec's α (qz_smooth.h); every block linear W8; embedding
//           and classifier fp32; act_int8 set. With act=tensor, each linear input's static scale
//           is max over its channels of max|x_j| / 127 (fp32), max|x_j| / s_j for a smoothed
//           input (what the input is after folding 1/s into the norm) — the activations of the
//           unquantized model, as SmoothQuant calibrates its static scales.
//   ;imatrix — one pass over the fp32 model (for gptq/awq: the sequential passes) for mean x²,
//           given to llama.cpp's quantizers of every llama.cpp-typed linear (and the classifier;
//           not the token embedding, which llama.cpp quantizes without one too).
// The token embedding has no input statistics: under gptq/awq it gets the same grid
// round-to-nearest (rtn:bits=B:group=G, or the gptq:TYPE type), under smoothquant/w8a8 fp32.
// Tensors whose base (rules, keep=) is data-free are quantized as hx_quant_model_create does. One
// calibrated method per spec: mixing gptq, awq and smoothquant gives QP_ENOTSUP, and so do
// smoothquant or w8a8 in a name~ rule (int8 activations apply to the whole model).
// On success *out is the quantized model (free with hx_quant_model_destroy) and, when
// cal->report is set, the per-module records are in it. 0 or QP_E* with err, *out = NULL.
int hx_calib_quantize(const struct kn_weights *src, const struct qz_variant *v, const struct hx_calib *cal,
                      struct hx_quant_model **out, char *err);

#endif
