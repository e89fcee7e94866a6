// study.h — one model, one text, one protocol, many variants, every number into the study
// database: what `qprobe eval` (one variant) and `qprobe sweep` (many) are made of.
//
// Opening a study loads the model and the text, finds or creates the run in the database
// (store.h), opens or builds the run's reference cache (hx_refcache.h: one reference pass per
// run) and, once per run, stores the reference: its perplexity, the weight outlier statistics of
// every tensor and the activation outlier statistics of every probe site; then the reference
// engine is released. Each variant is then quantized, evaluated alone against the cache
// (hx_refeval.h) and stored in ONE transaction: the variant row, its distribution metrics,
// per-layer errors, isolated sensitivities (estimated, or exact when asked), per-tensor
// grid-collapse and weight error, and (optionally) every scored token. A failure or a kill before
// the commit leaves nothing of that variant behind. hx_study_finish ends a study: the reference's
// NLL of the variants' continuations, with the reference loaded once.
// Depends on kernels/, quantizers/, metrics/ and the harness modules it names.
#ifndef HX_STUDY_H
#define HX_STUDY_H

#include <stdint.h>

#include "hx_eval.h"
#include "hx_gen.h"

struct hx_study;
struct hx_store;

struct hx_study_opts {
    const char *model_path, *tok_path, *text_path, *db_path;
    const char *label;       // part of the run identity (NULL: none)
    const char *config_json; // the sweep configuration, stored with the run (NULL for eval)
    enum hx_protocol protocol;
    int ctx, max_chunks, n_threads;
    int layer_chunks; // chunks with per-layer error (default 1; 0 = off)
    int act_chunks;   // chunks of the reference with activation statistics (default 4; 0 = off)
    int sens_chunks;  // isolated sensitivity per layer on this many chunks (0 = off)
    int sens_tensors; // ... and per tensor of each layer
    int sens_estimate; // without sens_chunks: the free per-layer estimate from the local errors
                       // (default on; needs layer_chunks > 0)
    int keep_tokens;  // store every scored token (table token)
    int grid;         // grid-collapse statistics per tensor (default on)
    int resume;       // a variant already stored is skipped instead of refused
    // The reference cache (hx_refcache.h): its directory (NULL: DB.refcache), and whether this
    // study may only read it (a shard: refuses to run when the cache or the run's reference row is
    // missing, never runs the reference model).
    const char *refcache_dir;
    int cache_read_only;
    int quiet;        // no progress on stderr
    const volatile int *stop;    // set by a signal handler: the variant in flight is discarded
    // Task suites scored for the reference and every variant (docs/TASKS.md): names as
    // `qprobe tasks --suite` takes them, each with an item limit (0 = all).
    const char *const *task_suites;
    const int *task_limits;
    int n_tasks;
    const char *fixtures; // where dataset suites live (NULL: hx_task_fixtures's default)
    // Calibration text for gptq/awq/smoothquant and ';imatrix' variants (NULL: none): calib_seqs
    // windows of calib_len tokens. A calibration text that overlaps the evaluation text is
    // refused unless allow_overlap, which records the overlap with the run instead.
    const char *calib_path;
    int calib_seqs, calib_len, allow_overlap;
    // Free-running generation against the reference (docs/GENERATION.md): on when gen.n_prompts
    // > 0 or gen.prompts_path is set.
    struct hx_gen_opts gen;
};

// Defaults for everything but the paths.
void hx_study_opts_default(struct hx_study_opts *o);

// Opens the study; evaluates and stores the reference when the run is new. On failure returns a
// QP_E* code with a one-line message in err (harness/cli/hx_exit.h maps it to the exit status).
int hx_study_open(const struct hx_study_opts *o, struct hx_study **out, char *err);
void hx_study_close(struct hx_study *s);
// Text shown before the spec in progress lines of the next variants (copied).
void hx_study_set_progress_prefix(struct hx_study *s, const char *prefix);
int64_t hx_study_run_id(const struct hx_study *s);
// The reference cache's file (valid while the study is open).
const char *hx_study_refcache_path(const struct hx_study *s);

// One task suite's figures for a variant.
struct hx_task_outcome {
    double acc, dacc; // accuracy and its change against the reference
    int flips_cw;     // items correct under the reference, wrong under the variant
};

// What one variant gave, for printing (everything is also in the database).
struct hx_variant_outcome {
    char spec[512];        // canonical spec
    int skipped;           // already stored (resume)
    int64_t variant_id;
    double bits_per_weight;
    double ppl, ppl_unc, ppl_ref, ln_ratio, ln_ratio_unc;
    double kld_mean, kld_unc, kld_p99, same_top, same_top_unc;
    double tokens_per_second, seconds;
    int worst_layer;       // layer with the highest isolated-sensitivity KLD (-1: not measured)
    int worst_estimated;   // ... from the free estimate (not the exact per-layer passes)
    struct hx_task_outcome *tasks; // one per configured suite, in order (malloc'd)
    int n_tasks;
    int gen_prompts;               // 0: no generation measured
    struct met_gen_summary gen;    // the variant's continuations against the reference's
    int gen_tokens;                // L
};

// Quantizes the model under spec, evaluates and stores it. spec is a variant spec
// (docs/SPECS.md) or "file:PATH[;act=q8]" for a model file that is already quantized (e.g.
// llama.cpp's own GGUF), evaluated as it is. ord: its position in the sweep. Returns 0, or a
// QP_E* code with err; QP_EINVAL means a bad spec. Free *out with hx_variant_outcome_clear in
// either case.
int hx_study_variant(struct hx_study *s, const char *spec, int ord, struct hx_variant_outcome *out,
                     char *err);
void hx_variant_outcome_clear(struct hx_variant_outcome *o);

// The end of a study (after the variants): with generation on, the reference model is loaded
// once more and scores the continuations of every variant of the run whose reference NLL is
// missing (gen_item.ref_nll NULL; the metrics gen/ref_nll and gen/ref_nll_increase), one
// transaction per variant; variants are stored without it so that they run alone. vo (may be
// NULL): an outcome to update when its variant is among them. 0 or a QP_E* code with err.
int hx_study_finish(struct hx_study *s, struct hx_variant_outcome *vo, char *err);

// Stores the outlier statistics of every 2-D weight of w (tables weight_stat and histogram) in
// run_id, inside the caller's transaction. cb (may be NULL) sees each tensor's statistics and its
// outlier input channels as they are computed (for printing).
struct kn_tensor;
struct kn_weights;
struct met_wstats;
struct hx_weight_stat_cb {
    void (*fn)(void *ctx, const char *name, const struct kn_tensor *t, const struct met_wstats *ws,
               const int64_t *outlier_channels, int64_t n_outliers);
    void *ctx;
};
int hx_store_weight_stats(struct hx_store *st, int64_t run_id, struct kn_weights *w,
                          struct hx_weight_stat_cb *cb, char *err);

#endif
