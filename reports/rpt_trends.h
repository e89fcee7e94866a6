// rpt_trends.h — the history of a study (docs/REPORT.md, "History"): every run up to the reported
// one, each variant's gated metrics per run (the values `qprobe gate --baseline reference`
// checks, computed by the gate's own code, rpt_gate.h), and with a rules file the verdict of each
// rule per run and the run at which each failing rule began to fail. Written as trends.html,
// trends.csv and one figure per metric (trend_RULE.gp/.dat/.svg/.png).
//
// Depends on rpt_study.h, rpt_figs.h, rpt_gate.h, rpt_html.h, rpt_table.h, SQLite, kernels/qp.h
// and libc.
#ifndef RPT_TRENDS_H
#define RPT_TRENDS_H

#include "rpt_figs.h"
#include "rpt_study.h"

struct rpt_trends;

// Reads the runs of s's database up to s->run_id and judges each against its own reference, by
// the rules at rules_path when not NULL; writes trends.csv and the figures' scripts and data into
// dir. A run that cannot be judged (no reference, no variants) is listed with the reason. 0, or
// QP_EIO / QP_ENOMEM / QP_EFORMAT (bad rules) with err. Free with rpt_trends_destroy.
int rpt_trends_build(const struct rpt_study *s, const char *rules_path, const struct rpt_gnuplot *g,
                     const char *dir, struct rpt_trends **out, char *err);
void rpt_trends_destroy(struct rpt_trends *t);

// The figures, for rendering (their `rendered` flags are set by the caller).
struct rpt_figs *rpt_trends_figs(struct rpt_trends *t);
int rpt_trends_n_runs(const struct rpt_trends *t);

// The lines the main page's findings take from the history (Markdown with `code` spans; a line
// starting "  - " is a sub-item), one call of add per line.
void rpt_trends_findings(const struct rpt_trends *t, void (*add)(void *ctx, const char *line), void *ctx);

// Writes dir/trends.html. 0 or QP_EIO with err.
int rpt_trends_write_html(const struct rpt_trends *t, const char *dir, char *err);

#endif
