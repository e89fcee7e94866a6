// hx_plan.h — what a sweep will cost, before it is paid (`qprobe sweep --plan`, the first lines of
// every sweep, `--budget MINUTES`; docs/SWEEP.md, "Costs before they are paid").
//
// The estimate comes from the model's shape and a short measured probe of this machine:
//  - the forward pass: the reference engine run twice on 16 tokens (the second timed) and once on
//    64, so that time(n) = a n + b separates the per-token cost a from b, the pass over the stored
//    weights every forward pays (streamed panels);
//  - quantization: each variant's format applied to 64 rows of the model's largest layer tensor,
//    in seconds per weight, times the model's weights; calibrated methods (gptq, awq) add their
//    calibration passes (two one-layer passes per layer and window, hx_calib.h) and, for GPTQ,
//    its solves (per linear: cols^3 + 2 rows cols^2 flops at the probe's rate);
//  - reading: one tensor read as fp32 rows, for the weight-error and grid diagnostics.
// Then per variant: evaluation = (chunks + layer chunks) forward passes of ctx tokens at the
// variant's speed (act=q8: the int8 tiles, 1/0.75 of the fp32 time for llama.cpp's legacy types,
// 1/0.45 for k-quants, ratios of docs/BENCH.md) plus the KLD over the vocabulary; diagnostics =
// weight error and grid (a re-quantization and two reads of every weight), exact sensitivity
// (one pass of sens_chunks chunks per layer, and per tensor), generation (prompts × tokens at the
// decode cost a + b per token); the reference pass once per run unless its cache exists. Task
// suites are not estimated (their cost depends on the items), and say so.
// Depends on kernels/, quantizers/ and harness/run (hx_variant.h, hx_qmodel.h).
#ifndef HX_PLAN_H
#define HX_PLAN_H

#include "kn_model.h"

// The probe's measurements.
struct hx_plan_speed {
    double tok_s;      // a: seconds per token of a forward pass (all threads)
    double pass_s;     // b: seconds per forward pass, whatever its length (reading the weights)
    double read_ns;    // ns per weight to read a stored tensor as fp32
    double gflops;     // fp32 throughput of the forward pass (2 flops per weight and token)
    double f64_gflops; // OpenBLAS dgemm throughput (fp64: GPTQ's Gram matrices and solves)
};

// What the sweep does (the diagnostics may be changed by hx_plan_fit).
struct hx_plan_diag {
    int layer_chunks, act_chunks, sens_chunks, sens_tensors, sens_estimate, grid;
    int gen_prompts, gen_tokens, gen_prompt_tokens;
};

struct hx_plan_in {
    const struct kn_weights *w;
    int n_chunks, ctx, n_threads;
    int calib_seqs, calib_len; // 0: no calibration text
    int n_tasks;
    int ref_cached;            // the reference cache is there: no reference pass
    const char *const *variants;
    int n_variants;
};

struct hx_plan_row {
    double quant, eval, diag, total; // seconds
    double quant_ns;                  // the probe: ns per weight of the format (NaN: calibrated only)
};

struct hx_plan {
    double ref;           // the reference pass (0 when cached)
    double total;         // ref + every row
    struct hx_plan_row *rows; // (n_variants), malloc'd
    int n;
};

// Measures this machine on model w (n_threads). 0 or a QP_E* code with err.
int hx_plan_probe(const struct kn_weights *w, int ctx, int n_threads, struct hx_plan_speed *sp, char *err);
// The estimate of every variant under diagnostics d. Probes each variant's format (a bad spec is
// QP_EINVAL). Free p->rows with free(). 0 or a QP_E* code with err.
int hx_plan_make(const struct hx_plan_in *in, const struct hx_plan_diag *d, const struct hx_plan_speed *sp,
                 struct hx_plan *p, char *err);
// Re-estimates p under d (the probes of hx_plan_make kept).
void hx_plan_update(const struct hx_plan_in *in, const struct hx_plan_diag *d, const struct hx_plan_speed *sp,
                    struct hx_plan *p);
// Fits the sweep into budget seconds by dropping or shortening optional diagnostics, in this
// order: exact sensitivity (to the estimate), generation prompts (halved down to 4, then off),
// grid statistics, activation statistics (to 1 chunk), per-layer error (to 1 chunk). Writes what
// it changed into notes (one "; "-separated line, empty when nothing). Returns 1 when the plan
// fits, 0 when it still does not (everything optional already dropped).
int hx_plan_fit(const struct hx_plan_in *in, struct hx_plan_diag *d, const struct hx_plan_speed *sp, struct hx_plan *p,
                double budget, char *notes, size_t cap);

#endif
