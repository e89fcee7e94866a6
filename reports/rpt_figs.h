// rpt_figs.h — the report's figures: for each, a gnuplot script and its data in the report
// folder (rpt_gnuplot.h), drawn from one run of the study (rpt_study.h).
//
//   bpw_ppl, bpw_kld, bpw_top1, bpw_task_NAME   bits per weight vs quality, Pareto frontier
//   layers                                       per-layer error accumulation (resid_out)
//   weight_hist, act_hist                        outlier histograms (weights, activations)
//   grid                                         grid collapse vs bits per weight
//   tasks                                        task accuracy with 95% intervals, flips
//   speed_size                                   tokens/s and weight bytes per variant
//
// A figure whose data is absent from the database is skipped, not drawn empty. Depends on
// rpt_study.h, rpt_gnuplot.h, SQLite, kernels/qp.h and libc.
#ifndef RPT_FIGS_H
#define RPT_FIGS_H

#include "rpt_gnuplot.h"
#include "rpt_study.h"

#define RPT_MAX_FIGS 24
#define RPT_MAX_LAYER_VARIANTS 16

struct rpt_fig {
    char name[64];     // file stem: NAME.gp, NAME.dat, NAME.svg, NAME.png
    char title[160];
    char caption[1024]; // what it shows and how to read it (for the HTML page)
    int rendered;      // NAME.svg / NAME.png were written by gnuplot
};

struct rpt_figs {
    struct rpt_fig f[RPT_MAX_FIGS];
    int n;
    char skipped[8][160]; // (n_skipped) why a figure was not drawn, one line each
    int n_skipped;
};

// Writes the scripts and data of every figure the run has data for into dir. layer_idx (n_layer
// indexes into s->v) names the variants of the per-layer figure; n_layer = 0 picks the default
// (up to 6: the worst by mean KLD and the best). 0, or QP_EIO / QP_ENOMEM with err.
int rpt_figs_write(const struct rpt_study *s, const struct rpt_gnuplot *g, const char *dir,
                   const int *layer_idx, int n_layer, struct rpt_figs *out, char *err);

// The default choice of variants for the per-layer figure (see rpt_figs_write): indexes into
// s->v of non-reference variants that have per-layer data, worst mean KLD first, the best last.
// Returns their count (at most max).
int rpt_figs_default_layer_variants(const struct rpt_study *s, int *idx, int max);

// --- for the figure modules (rpt_figs.c, rpt_trade.c, rpt_trends.c)

// Appends a figure to o (NULL when o is full).
struct rpt_fig *rpt_fig_add(struct rpt_figs *o, const char *name, const char *title, const char *caption);
// Records why a figure was not drawn (one line).
void rpt_fig_skip(struct rpt_figs *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// DIR/NAME.dat with a header comment; close with rpt_dat_close (QP_EIO with err on a write error).
FILE *rpt_dat_open(const char *dir, const char *name, const char *what, char *err);
int rpt_dat_close(FILE *f, const char *dir, const char *name, char *err);
// " %.10g", or " NaN" (declared missing in every script) when v is not finite.
void rpt_dat_num(FILE *f, double v);

// The range [*lo_keep, *hi_keep] of the n values t (axis units: log10 for a log axis) without
// their outliers: an extreme value whose gap to its neighbour towards the middle is over 1.5
// times the span of the values inside it, and over min_gap, is left out, from either end, at
// most a quarter of the values and never with fewer than four (rpt_trade.c).
void rpt_fit_clip(const double *t, int n, double min_gap, double *lo_keep, double *hi_keep);

// The bits-per-weight figures (rpt_trade.c): bpw_ppl, bpw_kld, bpw_top1, bpw_task_NAME.
int rpt_trade_figs(const struct rpt_study *s, const struct rpt_gnuplot *g, const char *dir, struct rpt_figs *o,
                   char *err);

#endif
