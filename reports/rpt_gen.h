// rpt_gen.h — free-running generation in the report (docs/REPORT.md, docs/GENERATION.md): the
// generation table, and the silent-degradation detector with its evidence.
//
// A variant shows *silent degradation* when its teacher-forced figures look harmless — ΔPPL and
// mean KLD within their limits — while its free-running generation diverges from the reference's
// or a task suite flips significantly:
//  - harmless: ΔPPL % <= max_ppl_increase_pct and kld/mean <= max_kld_mean, the limits of the
//    gate rules given to the report (--rules) for that spec, else RPT_GEN_DEFAULT_PPL_PCT and
//    RPT_GEN_DEFAULT_KLD;
//  - diverges: gen/median_first_div < min_median_first_divergence (default: L / 4),
//    gen/identical_share < min_identical_share (no default), or gen/loop_rate_increase >
//    max_loop_rate_increase (default RPT_GEN_DEFAULT_LOOP_INC);
//  - flips: a task suite with McNemar p < 0.05 whose acc is below the reference's.
// The evidence of a flagged variant with generation rows: the prompts where it splits from the
// reference earliest, both continuations side by side (HTML-escaped), the shared prefix plain
// and the rest marked.
//
// Depends on rpt_study.h, rpt_table.h, rpt_gate.h, metrics/met_gen.h, SQLite and libc.
#ifndef RPT_GEN_H
#define RPT_GEN_H

#include <stdio.h>

struct rpt_study;
struct rpt_table;

#define RPT_GEN_DEFAULT_PPL_PCT 3.0   // ΔPPL % that counts as harmless without rules
#define RPT_GEN_DEFAULT_KLD 0.05      // mean KLD that counts as harmless without rules
#define RPT_GEN_DEFAULT_LOOP_INC 0.25 // loop rate increase that counts as diverging
#define RPT_GEN_EVIDENCE 4            // prompts shown per flagged variant

struct rpt_gen; // opaque

// Reads the run's generation metrics: fills table t (initialized here; one row per variant with
// generation metrics), decides the detector for every variant, and reports findings through
// finding(ctx, line): a heading line, then "  - `SPEC`: ..." per flagged variant. rules_path: gate rules for the limits (NULL: the defaults). 0, or QP_EFORMAT
// / QP_EIO (bad rules) / QP_ENOMEM with err. Free *out with rpt_gen_destroy.
int rpt_gen_build(const struct rpt_study *s, const char *rules_path, struct rpt_table *t,
                  void (*finding)(void *, const char *), void *ctx, struct rpt_gen **out, char *err);
void rpt_gen_destroy(struct rpt_gen *g);

// The number of variants flagged.
int rpt_gen_n_silent(const struct rpt_gen *g);

// The HTML section "Silent degradation: the evidence" (nothing when no variant is flagged).
// 0, or QP_EIO with err when the database cannot be read.
int rpt_gen_write_html(const struct rpt_gen *g, const struct rpt_study *s, FILE *f, char *err);

#endif
