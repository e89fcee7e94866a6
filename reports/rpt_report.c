// rpt_report.c — the comparison report: tables, findings, index.html, summary.md, CSV files and
// the figures (rpt_report.h).
#include "rpt_report.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sqlite3.h>

#include "rpt_figs.h"
#include "rpt_gen.h"
#include "rpt_gnuplot.h"
#include "rpt_html.h"
#include "rpt_study.h"
#include "rpt_table.h"
#include "rpt_trends.h"


// The tables of the report, each written as NAME.csv (and shown in index.html).
enum { T_VARIANTS, T_LAYERS, T_SENS, T_WEIGHTS, T_ACTS, T_GRID, T_TASKS, T_GEN, T_COUNT };

static const struct {
    const char *file, *title, *what;
} rpt_tables[T_COUNT] = {
    {"variants", "Variants", "one row per variant of the run; ΔPPL against the reference's perplexity"},
    {"layers", "Per-layer error", "relative error of the residual stream after each block (resid_out) and of "
                                  "the logits; accumulated = end to end, local = the block alone"},
    {"sensitivity", "Isolated sensitivity", "mean KLD and top-1 agreement when only this layer (tensor "
                                            "empty) or only this tensor is quantized; rank 1 = most harmful; "
                                            "method estimate: the variant's KLD split among layers by their "
                                            "local error (no top-1)"},
    {"weights", "Weight outliers", "statistics of the unquantized weights, heaviest tails first"},
    {"activations", "Activation outliers", "the reference's activations at each probe site, most extreme "
                                           "channel first"},
    {"grid", "Weight error and grid use", "over all 2-D weights of each variant: relative error (weighted by "
                                          "weights) and, where stored, grid collapse"},
    {"tasks", "Tasks", "task accuracy with its standard error, answer flips against the reference, McNemar's "
                       "p and the 95% interval of the accuracy change"},
    {"generation", "Generation", "free-running continuations of each variant against the reference's "
                                 "(docs/GENERATION.md): where they split, identical share, loops, the "
                                 "reference's NLL of the variant's text"},
};

struct rpt_ctx {
    const struct rpt_opts *o;
    struct rpt_study *s;
    struct rpt_table t[T_COUNT];
    char **findings; // Markdown-ish lines: `code` spans only (n_findings of cap_findings)
    int n_findings, cap_findings;
    int findings_oom; // a finding could not be stored: the report fails (never a silent cut)
    struct rpt_figs figs;
    struct rpt_gnuplot gp;
    int has_gate;
    struct rpt_trends *trends; // the history, when written
    struct rpt_gen *gen;       // generation and the silent-degradation detector
    char *err;
};

// ---------------------------------------------------------------------------------------------
// Helpers

static void finding(struct rpt_ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void finding(struct rpt_ctx *c, const char *fmt, ...) {
    if (c->n_findings == c->cap_findings) {
        int cap = c->cap_findings ? 2 * c->cap_findings : 64;
        char **nf = realloc(c->findings, (size_t)cap * sizeof *nf);
        if (!nf) {
            c->findings_oom = 1;
            return;
        }
        c->findings = nf;
        c->cap_findings = cap;
    }
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) >= 0) c->findings[c->n_findings++] = s;
    else c->findings_oom = 1;
    va_end(ap);
}

static void add_finding(void *ctx, const char *line) { finding(ctx, "%s", line); }

static double col_d(sqlite3_stmt *q, int i) {
    return sqlite3_column_type(q, i) == SQLITE_NULL ? NAN : sqlite3_column_double(q, i);
}

static const char *col_t(sqlite3_stmt *q, int i) {
    const unsigned char *t = sqlite3_column_text(q, i);
    return t ? (const char *)t : "";
}

static int db_fail(struct rpt_ctx *c) {
    return qp_fail(c->err, QP_EIO, "cannot read '%s': %s", c->s->path, sqlite3_errmsg(c->s->db));
}

static int prepare(struct rpt_ctx *c, const char *sql, sqlite3_stmt **q) {
    if (sqlite3_prepare_v2(c->s->db, sql, -1, q, NULL) != SQLITE_OK) return db_fail(c);
    sqlite3_bind_int64(*q, 1, c->s->run_id);
    return 0;
}

// Creates dir and its parents (mkdir -p).
static int make_dirs(const char *dir, char *err) {
    char path[4096];
    if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path)
        return qp_fail(err, QP_EINVAL, "cannot create '%s': path too long", dir);
    for (char *p = path + 1;; p++) {
        if (*p == '/' || *p == 0) {
            char saved = *p;
            *p = 0;
            struct stat sb;
            if (stat(path, &sb) != 0) {
                if (mkdir(path, 0777) != 0 && errno != EEXIST)
                    return qp_fail(err, QP_EIO, "cannot create '%s': %s", path, strerror(errno));
            } else if (!S_ISDIR(sb.st_mode)) {
                return qp_fail(err, QP_EIO, "cannot create '%s': '%s' is not a directory", dir, path);
            }
            *p = saved;
            if (!saved) break;
        }
    }
    return 0;
}

static double ppl_ref_of(const struct rpt_study *s, const struct rpt_variant *v) {
    double r = rpt_metric_get(v, "ppl", "ppl_ref", NULL);
    return isfinite(r) ? r : rpt_ref_ppl(s);
}

// ---------------------------------------------------------------------------------------------
// Tables

// The specs of the other variants with variant i's weights, "q6_k, q8_0" ("" when unique).
static void same_names(const struct rpt_study *s, int i, char *out, size_t cap) {
    size_t n = 0;
    out[0] = 0;
    for (int j = 0; j < s->n_v && n < cap - 1; j++)
        if (j != i && s->v[j].same_as == s->v[i].same_as) rpt_catf(out, cap, &n, "%s%s", n ? ", " : "", s->v[j].spec);
}

static void table_variants(struct rpt_ctx *c) {
    const struct rpt_study *s = c->s;
    const char *cols[] = {"spec",
                          "#bits_per_weight|bpw",
                          "#weight_bytes|bytes",
                          "#ppl|PPL ±",
                          "@#ppl_stderr",
                          "#dppl_pct|ΔPPL %",
                          "#kld_mean|mean KLD ±",
                          "@#kld_stderr",
                          "#kld_p99|KLD p99",
                          "#top1|top-1 % ±",
                          "@#top1_stderr",
                          s->n_tasks ? "tasks|tasks (accuracy)" : "@tasks", // shown when there are tasks
                          "#tokens_per_second|tokens/s",
                          "types|tensors as asked; fallbacks",
                          "@#tensors", "@#tensors_as_asked", "@fallbacks",
                          "same_weights|same weights as",
                          "@weights_sha256",
                          c->has_gate ? "gate" : NULL,
                          NULL};
    struct rpt_table *t = &c->t[T_VARIANTS];
    if (rpt_table_init(t, cols)) return;
    for (int i = 0; i < s->n_v; i++) {
        const struct rpt_variant *v = &s->v[i];
        if (rpt_table_row(t) < 0) return;
        rpt_table_text(t, 0, "%s", v->spec);
        rpt_table_num(t, 1, v->bpw, "%.3f");
        rpt_table_num(t, 2, v->weight_bytes > 0 ? (double)v->weight_bytes : NAN, "%.0f");
        double se, ppl = rpt_metric_get(v, "ppl", "ppl", &se);
        if (isfinite(ppl)) rpt_table_numtext(t, 3, ppl, isfinite(se) ? "%.4f ± %.4f" : "%.4f", ppl, se);
        else rpt_table_num(t, 3, NAN, "");
        rpt_table_num(t, 4, se, "%g");
        double ref = ppl_ref_of(s, v);
        rpt_table_num(t, 5, v->is_reference ? NAN : 100.0 * (ppl / ref - 1.0), "%+.2f");
        double kld = rpt_metric_get(v, "kld", "mean", &se);
        if (isfinite(kld)) rpt_table_numtext(t, 6, kld, isfinite(se) ? "%.5g ± %.2g" : "%.5g", kld, se);
        else rpt_table_num(t, 6, NAN, "");
        rpt_table_num(t, 7, se, "%g");
        rpt_table_num(t, 8, rpt_metric_get(v, "kld", "p99", NULL), "%.5g");
        double top1 = rpt_metric_get(v, "top1", "agreement", &se);
        if (isfinite(top1))
            rpt_table_numtext(t, 9, top1, isfinite(se) ? "%.2f ± %.2f" : "%.2f", 100 * top1, 100 * se);
        else rpt_table_num(t, 9, NAN, "");
        rpt_table_num(t, 10, se, "%g");
        char tasks[512] = "";
        size_t n = 0;
        for (int k = 0; k < s->n_tasks && n < sizeof tasks - 1; k++) {
            char suite[160];
            snprintf(suite, sizeof suite, "task:%s", s->tasks[k]);
            double acc = rpt_metric_get(v, suite, "acc", NULL);
            if (isfinite(acc)) rpt_catf(tasks, sizeof tasks, &n, "%s%s %.1f%%", n ? "; " : "", s->tasks[k], 100 * acc);
        }
        rpt_table_text(t, 11, "%s", tasks);
        rpt_table_num(t, 12, v->tokens_per_second, "%.0f");
        if (v->n_tensors) {
            rpt_table_text(t, 13, "%d of %d%s%s", v->n_asked, v->n_tensors, v->fell[0] ? "; " : "", v->fell);
            rpt_table_num(t, 14, v->n_tensors, "%.0f");
            rpt_table_num(t, 15, v->n_asked, "%.0f");
            rpt_table_text(t, 16, "%s", v->fell);
        }
        same_names(s, i, tasks, sizeof tasks);
        rpt_table_text(t, 17, "%s", tasks);
        rpt_table_text(t, 18, "%s", v->weights_sha256 ? v->weights_sha256 : "");
        if (c->has_gate) rpt_table_text(t, 19, "%s", v->gate[0] ? v->gate : "no result");
    }
}

// Ends a query: 0 when it ran to its end (or stopped at a row on purpose), else the database's
// error. Finalizes q either way.
static int query_end(struct rpt_ctx *c, sqlite3_stmt *q, int step) {
    int rc = step == SQLITE_DONE || step == SQLITE_ROW ? 0 : db_fail(c);
    sqlite3_finalize(q);
    return rc;
}

// Fills table k (columns cols) with one row per result row of sql (the run id bound to ?1), each
// set by row(). 0, QP_ENOMEM or the database's error.
static int table_query(struct rpt_ctx *c, int k, const char *const *cols, const char *sql,
                       void (*row)(struct rpt_table *t, sqlite3_stmt *q)) {
    struct rpt_table *t = &c->t[k];
    if (rpt_table_init(t, cols)) return QP_ENOMEM;
    sqlite3_stmt *q;
    int rc = prepare(c, sql, &q);
    if (rc) return rc;
    int step;
    while ((step = sqlite3_step(q)) == SQLITE_ROW) {
        if (rpt_table_row(t) < 0) break;
        row(t, q);
    }
    return query_end(c, q, step);
}

// Sets cells [0, n) of the last row from result columns [0, n) as they are: fmt[i] "%s" a text,
// any other a number's format.
static void row_as_is(struct rpt_table *t, sqlite3_stmt *q, const char *const *fmt, int n) {
    for (int i = 0; i < n; i++) {
        if (strcmp(fmt[i], "%s") == 0) rpt_table_text(t, i, "%s", col_t(q, i));
        else rpt_table_num(t, i, col_d(q, i), fmt[i]);
    }
}

// spec, layer, site as the first three cells.
static const char *const spec_layer_site[] = {"%s", "%.0f", "%s"};

static void row_layers(struct rpt_table *t, sqlite3_stmt *q) {
    double acc = col_d(q, 3), loc = col_d(q, 4);
    row_as_is(t, q, spec_layer_site, 3);
    rpt_table_num(t, 3, acc, "%.4f");
    rpt_table_num(t, 4, loc, "%.4f");
    rpt_table_num(t, 5, loc > 0 ? acc / loc : NAN, "%.2f");
    rpt_table_num(t, 6, col_d(q, 5), "%.5f");
}

static int table_layers(struct rpt_ctx *c) {
    const char *cols[] = {"spec", "#layer", "site", "#accumulated|accumulated rel. err", "#local|local rel. err",
                          "#accumulation_factor|accumulation factor", "#cosine|cosine (accumulated)", NULL};
    return table_query(c, T_LAYERS, cols,
                       "SELECT v.spec, a.layer, a.site, a.rel_err, l.rel_err, a.cosine FROM layer_error a"
                       " JOIN variant v ON v.id = a.variant_id"
                       " LEFT JOIN layer_error l ON l.variant_id = a.variant_id AND l.layer = a.layer"
                       "  AND l.site = a.site AND l.kind = 'local'"
                       " WHERE v.run_id = ? AND a.kind = 'accumulated' AND a.site IN ('resid_out', 'logits')"
                       " ORDER BY v.ord, v.id, a.layer, a.site",
                       row_layers);
}

static void row_sensitivity(struct rpt_table *t, sqlite3_stmt *q) {
    double kld = col_d(q, 3), se = col_d(q, 4);
    row_as_is(t, q, spec_layer_site, 3); // the third is the tensor
    if (isfinite(kld)) rpt_table_numtext(t, 3, kld, isfinite(se) ? "%.5g ± %.2g" : "%.5g", kld, se);
    rpt_table_num(t, 4, se, "%g");
    double top1 = col_d(q, 5);
    rpt_table_numtext(t, 5, top1, "%.2f", 100 * top1);
    rpt_table_num(t, 6, col_d(q, 6), "%.0f");
    rpt_table_text(t, 7, "%s", col_t(q, 7));
}

static int table_sensitivity(struct rpt_ctx *c) {
    const char *cols[] = {"spec", "#layer", "tensor", "#kld_mean|mean KLD ±", "@#kld_stderr", "#top1|top-1 %",
                          "#rank", "method", NULL};
    return table_query(c, T_SENS, cols,
                       "SELECT v.spec, s.layer, s.tensor, s.kld_mean, s.kld_stderr, s.top1, s.rank,"
                       " coalesce(s.method, 'exact') FROM sensitivity s JOIN variant v ON v.id = s.variant_id WHERE v.run_id = ?"
                       " ORDER BY v.ord, v.id, s.tensor <> '', s.layer, s.tensor",
                       row_sensitivity);
}

static void row_weights(struct rpt_table *t, sqlite3_stmt *q) {
    static const char *const fmt[] = {"%s", "%.0f", "%.0f", "%.4g", "%.2f", "%.4g", "%.2f"};
    row_as_is(t, q, fmt, 7);
    double f3 = col_d(q, 7), f6 = col_d(q, 8);
    rpt_table_numtext(t, 7, f3, "%.3f", 100 * f3);
    rpt_table_numtext(t, 8, f6, "%.4f", 100 * f6);
    rpt_table_text(t, 9, "%s", col_t(q, 9));
}

static int table_weights(struct rpt_ctx *c) {
    const char *cols[] = {"tensor", "#rows", "#cols", "#std|σ", "#kurtosis", "#max_abs|max |w|",
                          "#max_over_std|max / σ", "#frac_3sigma|> 3σ %", "#frac_6sigma|> 6σ %",
                          "outlier_channels|outlier input channels", NULL};
    return table_query(c, T_WEIGHTS, cols,
                       "SELECT tensor, rows, cols, std, kurtosis, max_abs, max_over_std, frac_3sigma, frac_6sigma,"
                       " outlier_channels FROM weight_stat WHERE run_id = ? ORDER BY kurtosis DESC, tensor",
                       row_weights);
}

static void row_acts(struct rpt_table *t, sqlite3_stmt *q) {
    static const char *const fmt[] = {"%.0f", "%s", "%.0f", "%.0f", "%.2f", "%.4g", "%.4g"};
    double mx = col_d(q, 5), med = col_d(q, 6);
    row_as_is(t, q, fmt, 7);
    rpt_table_num(t, 7, med > 0 ? mx / med : NAN, "%.2f");
    rpt_table_text(t, 8, "%s", col_t(q, 7));
}

static int table_acts(struct rpt_ctx *c) {
    const char *cols[] = {"#layer", "site", "#width", "#rows", "#kurtosis", "#max_abs|max |x|",
                          "#median_channel_absmax|median channel absmax", "#max_over_median|max / median",
                          "top_channels|top channels [channel, absmax]", NULL};
    return table_query(c, T_ACTS, cols,
                       "SELECT layer, site, width, rows, kurtosis, max_abs, median_channel_absmax, top_channels"
                       " FROM act_stat WHERE run_id = ?"
                       " ORDER BY CASE WHEN median_channel_absmax > 0 THEN max_abs / median_channel_absmax END DESC,"
                       " layer, site",
                       row_acts);
}

static void row_grid(struct rpt_table *t, sqlite3_stmt *q) {
    static const char *const fmt[] = {"%s", "%.3f", "%s", "%.4f", "%.2f", "%.0f", "%.0f", "%.3f", "%.3f", "%.3f",
                                      "%.3f"};
    row_as_is(t, q, fmt, (int)QP_ARRAY_LEN(fmt));
}

static int table_grid(struct rpt_ctx *c) {
    const char *cols[] = {"spec", "#bits_per_weight|bpw", "formats", "#rel_err|weight rel. err",
                          "#codes_used_mean|codes used / group", "#codes_used_min|fewest codes in a group",
                          "#n_codes|codes of the format", "#collisions_pct|collisions %", "#zeroed_pct|zeroed %",
                          "#clipped_pct|clipped %", "#entropy_bits|code entropy, bits", NULL};
    // Collapse columns are NULL for variants (or tensors) without grid data: each aggregate sums
    // only the tensors that have it, and stays NULL when none has.
    return table_query(c, T_GRID, cols,
                       "SELECT v.spec, v.bits_per_weight, group_concat(DISTINCT g.format),"
                       " sum(g.rel_err * g.weights) / sum(CASE WHEN g.rel_err IS NOT NULL THEN g.weights END),"
                       " sum(g.codes_used_mean * g.groups)"
                       "  / sum(CASE WHEN g.codes_used_mean IS NOT NULL THEN g.groups END),"
                       " min(g.codes_used_min), max(CASE WHEN g.codes_used_mean IS NOT NULL THEN g.n_codes END),"
                       " 100.0 * sum(g.collisions) / sum(CASE WHEN g.collisions IS NOT NULL THEN g.weights END),"
                       " 100.0 * sum(g.zeroed) / sum(CASE WHEN g.zeroed IS NOT NULL THEN g.weights END),"
                       " 100.0 * sum(g.clipped) / sum(CASE WHEN g.clipped IS NOT NULL THEN g.weights END),"
                       " sum(g.entropy_bits * g.weights)"
                       "  / sum(CASE WHEN g.entropy_bits IS NOT NULL THEN g.weights END)"
                       " FROM grid_stat g JOIN variant v ON v.id = g.variant_id WHERE v.run_id = ?"
                       " GROUP BY v.id ORDER BY v.ord, v.id",
                       row_grid);
}

static void table_tasks(struct rpt_ctx *c) {
    const struct rpt_study *s = c->s;
    const char *cols[] = {"spec", "suite", "#acc|accuracy % ±", "@#acc_stderr", "#acc_norm|acc_norm %",
                          "#flips_to_wrong|right→wrong", "#flips_to_right|wrong→right", "#mcnemar_p|McNemar p",
                          "#dacc_lo|Δacc 95% low", "#dacc_hi|Δacc 95% high", NULL};
    struct rpt_table *t = &c->t[T_TASKS];
    if (rpt_table_init(t, cols)) return;
    for (int k = 0; k < s->n_tasks; k++) {
        char suite[160];
        snprintf(suite, sizeof suite, "task:%s", s->tasks[k]);
        for (int i = 0; i < s->n_v; i++) {
            const struct rpt_variant *v = &s->v[i];
            double se, acc = rpt_metric_get(v, suite, "acc", &se);
            double norm = rpt_metric_get(v, suite, "acc_norm", NULL);
            if (!isfinite(acc) && !isfinite(norm)) continue;
            if (rpt_table_row(t) < 0) return;
            rpt_table_text(t, 0, "%s", v->spec);
            rpt_table_text(t, 1, "%s", s->tasks[k]);
            if (isfinite(acc)) rpt_table_numtext(t, 2, acc, isfinite(se) ? "%.2f ± %.2f" : "%.2f", 100 * acc, 100 * se);
            rpt_table_num(t, 3, se, "%g");
            rpt_table_numtext(t, 4, norm, "%.2f", 100 * norm);
            rpt_table_num(t, 5, rpt_metric_get(v, suite, "flips_to_wrong", NULL), "%.0f");
            rpt_table_num(t, 6, rpt_metric_get(v, suite, "flips_to_right", NULL), "%.0f");
            rpt_table_num(t, 7, rpt_metric_get(v, suite, "mcnemar_p", NULL), "%.3g");
            rpt_table_num(t, 8, rpt_metric_get(v, suite, "dacc_lo", NULL), "%+.4f");
            rpt_table_num(t, 9, rpt_metric_get(v, suite, "dacc_hi", NULL), "%+.4f");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Findings

static const double rpt_budgets[] = {2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 7.0, 8.0, 8.5, 10.0, 16.0};

static void findings_budget(struct rpt_ctx *c) {
    const struct rpt_study *s = c->s;
    int last = -1, any = 0;
    for (size_t b = 0; b < QP_ARRAY_LEN(rpt_budgets); b++) {
        int best = -1;
        double best_kld = INFINITY;
        for (int i = 0; i < s->n_v; i++) {
            const struct rpt_variant *v = &s->v[i];
            double kld = rpt_metric_get(v, "kld", "mean", NULL);
            if (v->is_reference || !isfinite(v->bpw) || v->bpw > rpt_budgets[b] || !isfinite(kld)) continue;
            if (kld < best_kld) {
                best_kld = kld;
                best = i;
            }
        }
        if (best < 0 || best == last) continue;
        last = best;
        const struct rpt_variant *v = &s->v[best];
        double ppl = rpt_metric_get(v, "ppl", "ppl", NULL), ref = ppl_ref_of(s, v);
        if (!any) finding(c, "Best variant under a size budget (lowest mean KLD within the budget):");
        any = 1;
        finding(c, "  - at most %.1f bits per weight: `%s` (%.3f bpw), mean KLD %.5g, PPL %.4f (%+.2f%%)",
                rpt_budgets[b], v->spec, v->bpw, best_kld, ppl, 100 * (ppl / ref - 1));
    }
}

static void findings_pareto(struct rpt_ctx *c) {
    const struct rpt_study *s = c->s;
    double *x = calloc((size_t)s->n_v + 1, sizeof *x), *y = calloc((size_t)s->n_v + 1, sizeof *y);
    int *on = calloc((size_t)s->n_v + 1, sizeof *on);
    if (x && y && on) {
        // One point per group of identical variants, named by the whole group.
        for (int i = 0; i < s->n_v; i++) {
            x[i] = s->v[i].is_reference || s->v[i].same_as != i ? NAN : s->v[i].bpw;
            y[i] = rpt_metric_get(&s->v[i], "kld", "mean", NULL);
        }
        rpt_pareto(x, y, s->n_v, 1, on);
        char list[2048] = "";
        size_t n = 0;
        int count = 0;
        // In order of bits per weight.
        for (int pass = 0; pass < s->n_v; pass++) {
            int next = -1;
            for (int i = 0; i < s->n_v; i++)
                if (on[i] == 1 && (next < 0 || x[i] < x[next])) next = i;
            if (next < 0) break;
            on[next] = 2;
            char name[512];
            rpt_group_label(s, next, "` = `", name, sizeof name);
            rpt_catf(list, sizeof list, &n, "%s`%s` (%.2f)", count ? ", " : "", name, x[next]);
            count++;
        }
        if (count)
            finding(c, "Pareto frontier of bits per weight vs mean KLD (%d of %d variants): %s", count,
                    s->n_v - (s->ref >= 0), list);
    }
    free(x);
    free(y);
    free(on);
}

// Runs sql (the run id bound to ?1) and hands each result row to say(), at most limit of them.
static int findings_query(struct rpt_ctx *c, const char *sql, int limit,
                          void (*say)(struct rpt_ctx *c, sqlite3_stmt *q, int i)) {
    sqlite3_stmt *q;
    int rc = prepare(c, sql, &q);
    if (rc) return rc;
    int step = SQLITE_DONE, n = 0;
    while (n < limit && (step = sqlite3_step(q)) == SQLITE_ROW) say(c, q, n++);
    return query_end(c, q, step);
}

static void say_worst_layer(struct rpt_ctx *c, sqlite3_stmt *q, int i) {
    if (!i) finding(c, "Worst layer per variant (isolated sensitivity: quantized alone, or estimated):");
    const char *tensor = col_t(q, 5);
    if (strcmp(col_t(q, 6), "estimate") == 0) {
        finding(c, "  - `%s`: layer %d (estimated from the local errors: %.5g of the variant's mean KLD)",
                col_t(q, 0), sqlite3_column_int(q, 1), col_d(q, 2));
        return;
    }
    finding(c, "  - `%s`: layer %d (mean KLD %.5g ± %.2g, top-1 %.1f%%)%s%s%s", col_t(q, 0),
            sqlite3_column_int(q, 1), col_d(q, 2), col_d(q, 3), 100 * col_d(q, 4),
            *tensor ? "; worst tensor alone: `" : "", tensor, *tensor ? "`" : "");
}

static void say_accumulation(struct rpt_ctx *c, sqlite3_stmt *q, int i) {
    (void)i;
    finding(c, "Largest error accumulation: under `%s` the residual stream after the last block (layer %d) is "
               "off by %.3f relative, %.2f× the %.3f that block adds by itself.",
            col_t(q, 0), sqlite3_column_int(q, 1), col_d(q, 2), col_d(q, 2) / col_d(q, 3), col_d(q, 3));
}

static int findings_layers(struct rpt_ctx *c) {
    int rc = findings_query(c,
                            "SELECT v.spec, s.layer, s.kld_mean, s.kld_stderr, s.top1,"
                            " (SELECT t.tensor FROM sensitivity t WHERE t.variant_id = s.variant_id"
                            "  AND t.tensor <> '' ORDER BY t.rank LIMIT 1), coalesce(s.method, 'exact')"
                            " FROM sensitivity s JOIN variant v ON v.id = s.variant_id"
                            " WHERE v.run_id = ? AND s.tensor = '' AND s.rank = 1 ORDER BY v.ord, v.id",
                            INT_MAX, say_worst_layer);
    if (rc) return rc;
    // The largest accumulation factor at the last block's output.
    return findings_query(c,
                          "SELECT v.spec, a.layer, a.rel_err, l.rel_err FROM layer_error a"
                          " JOIN variant v ON v.id = a.variant_id"
                          " JOIN layer_error l ON l.variant_id = a.variant_id AND l.layer = a.layer"
                          "  AND l.site = a.site AND l.kind = 'local'"
                          " WHERE v.run_id = ? AND a.kind = 'accumulated' AND a.site = 'resid_out' AND l.rel_err > 0"
                          "  AND a.layer = (SELECT max(layer) FROM layer_error WHERE variant_id = a.variant_id"
                          "                 AND site = 'resid_out')"
                          " ORDER BY a.rel_err / l.rel_err DESC LIMIT 1",
                          1, say_accumulation);
}

static void say_heaviest_weights(struct rpt_ctx *c, sqlite3_stmt *q, int i) {
    (void)i;
    finding(c, "Heaviest-tailed weights: `%s` (kurtosis %.1f, normal = 3; largest weight %.1fσ).", col_t(q, 0),
            col_d(q, 1), col_d(q, 2));
}

static void say_extreme_acts(struct rpt_ctx *c, sqlite3_stmt *q, int i) {
    (void)i;
    finding(c, "Most extreme activations: `blk.%d.%s`, whose largest channel reaches %.1f× the median "
               "channel's absmax (kurtosis %.1f).",
            sqlite3_column_int(q, 0), col_t(q, 1), col_d(q, 2), col_d(q, 3));
}

static int findings_outliers(struct rpt_ctx *c) {
    int rc = findings_query(c,
                            "SELECT tensor, kurtosis, max_over_std FROM weight_stat WHERE run_id = ?"
                            " AND kurtosis IS NOT NULL ORDER BY kurtosis DESC LIMIT 1",
                            1, say_heaviest_weights);
    if (rc) return rc;
    return findings_query(c,
                          "SELECT layer, site, max_abs / median_channel_absmax, kurtosis FROM act_stat"
                          " WHERE run_id = ? AND median_channel_absmax > 0"
                          " ORDER BY max_abs / median_channel_absmax DESC LIMIT 1",
                          1, say_extreme_acts);
}

static void findings_misc(struct rpt_ctx *c) {
    const struct rpt_study *s = c->s;
    // Prediction collapse: far fewer distinct argmax tokens than the reference.
    for (int i = 0; i < s->n_v; i++) {
        const struct rpt_variant *v = &s->v[i];
        double dr = rpt_metric_get(v, "argmax", "distinct_ref", NULL);
        double dv = rpt_metric_get(v, "argmax", "distinct_var", NULL);
        if (isfinite(dr) && isfinite(dv) && dr > 0 && dv < 0.75 * dr)
            finding(c, "Prediction collapse: `%s` predicts only %.0f distinct tokens where the reference "
                       "predicts %.0f.", v->spec, dv, dr);
    }
    // Tasks: significant changes (McNemar p < 0.05).
    int any_task = 0, sig = 0;
    for (int k = 0; k < s->n_tasks; k++) {
        char suite[160];
        snprintf(suite, sizeof suite, "task:%s", s->tasks[k]);
        for (int i = 0; i < s->n_v; i++) {
            const struct rpt_variant *v = &s->v[i];
            double p = rpt_metric_get(v, suite, "mcnemar_p", NULL);
            if (!isfinite(p)) continue;
            any_task = 1;
            if (p >= 0.05) continue;
            sig++;
            finding(c, "Task `%s`: `%s` changes answers significantly (McNemar p = %.3g; %.0f right→wrong, %.0f "
                       "wrong→right).",
                    s->tasks[k], v->spec, p, rpt_metric_get(v, suite, "flips_to_wrong", NULL),
                    rpt_metric_get(v, suite, "flips_to_right", NULL));
        }
    }
    if (any_task && !sig) finding(c, "Tasks: no variant changes its answers significantly (McNemar p >= 0.05).");
    if (c->has_gate) {
        int fails = 0;
        for (int i = 0; i < s->n_v; i++) fails += strcmp(s->v[i].gate, "FAIL") == 0;
        finding(c, "Gate: %d variant%s failed (`%s`).", fails, fails == 1 ? "" : "s", c->o->gate_path);
    }
}

// Variants that are one model under several names, and tensors that did not get the type their
// spec asks for: both change what a row of the table means.
static void findings_identity(struct rpt_ctx *c) {
    const struct rpt_study *s = c->s;
    for (int i = 0; i < s->n_v; i++) {
        const struct rpt_variant *v = &s->v[i];
        if (v->same_as != i || v->n_same < 2) continue;
        char names[1024] = "";
        size_t n = 0;
        int k = 0;
        for (int j = i; j < s->n_v && n < sizeof names - 1; j++) {
            if (s->v[j].same_as != i) continue;
            k++;
            rpt_catf(names, sizeof names, &n, "%s`%s`", j == i ? "" : k == v->n_same ? " and " : ", ", s->v[j].spec);
        }
        finding(c, "Same weights: %s are one model here (equal SHA-256 of the weights as evaluated): their rows "
                   "are one measurement, drawn once in the figures.", names);
    }
    int any = 0;
    for (int i = 0; i < s->n_v; i++) {
        const struct rpt_variant *v = &s->v[i];
        if (!v->n_tensors || v->n_asked == v->n_tensors) continue;
        if (!any++)
            finding(c, "Type fallbacks (a block type that does not divide a tensor's rows is replaced, as "
                       "llama.cpp does):");
        finding(c, "  - `%s`: %d of %d tensors as asked; %s", v->spec, v->n_asked, v->n_tensors, v->fell);
    }
}

static int build_findings(struct rpt_ctx *c) {
    const struct rpt_study *s = c->s;
    double ref = rpt_ref_ppl(s);
    if (s->ref >= 0 && isfinite(ref)) {
        double se;
        rpt_metric_get(&s->v[s->ref], "ppl", "ppl", &se);
        finding(c, "Reference perplexity %.4f ± %.4f; %d quantized variant%s.", ref, se, s->n_v - 1,
                s->n_v - 1 == 1 ? "" : "s");
    }
    findings_identity(c);
    findings_budget(c);
    findings_pareto(c);
    int rc = findings_layers(c);
    if (!rc) rc = findings_outliers(c);
    if (!rc) findings_misc(c);
    if (!rc) rc = rpt_gen_build(c->s, c->o->rules_path, &c->t[T_GEN], add_finding, c, &c->gen, c->err);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// summary.md

static void md_protocol(const struct rpt_study *s, FILE *f) {
    static const struct {
        const char *field, *label;
    } rows[] = {
        {"created", "created"}, {"label", "label"}, {"model_path", "model"}, {"model_format", "format"},
        {"model_sha256", "model SHA-256"}, {"tokenizer", "tokenizer"}, {"text_path", "text"},
        {"text_sha256", "text SHA-256"}, {"text_tokens", "text tokens"}, {"protocol", "protocol"},
        {"ctx", "context"}, {"stride", "stride"}, {"score_from", "scored from"}, {"score_to", "scored to"},
        {"bos", "BOS"}, {"chunks", "chunks"}, {"calib_path", "calibration"}, {"qprobe_version", "qprobe"},
        {"qprobe_commit", "commit"}, {"isa", "ISA"}, {"gemm", "GEMM"}, {"threads", "threads"}, {"host", "host"},
    };
    fprintf(f, "| field | value |\n|---|---|\n");
    fprintf(f, "| run | %lld of %d |\n", (long long)s->run_id, s->n_runs);
    fprintf(f, "| shape | dim %s, hidden %s, %s layers, %s heads (%s KV), vocab %s |\n", rpt_run_field(s, "dim"),
            rpt_run_field(s, "hidden_dim"), rpt_run_field(s, "n_layers"), rpt_run_field(s, "n_heads"),
            rpt_run_field(s, "n_kv_heads"), rpt_run_field(s, "vocab"));
    for (size_t i = 0; i < QP_ARRAY_LEN(rows); i++) {
        const char *v = rpt_run_field(s, rows[i].field);
        if (!*v) continue;
        fprintf(f, "| %s | ", rows[i].label);
        for (; *v; v++) fputs(*v == '|' ? "\\|" : (char[]){*v, 0}, f);
        fputs(" |\n", f);
    }
}

static int write_md(struct rpt_ctx *c) {
    const struct rpt_study *s = c->s;
    FILE *f = rpt_file_open(c->o->out_dir, "summary.md", c->err);
    if (!f) return QP_EIO;
    fprintf(f, "# qprobe report — run %lld\n\n", (long long)s->run_id);
    fprintf(f, "Study `%s`, model `%s`, %d variants (the reference included). Figures and every table: "
               "`index.html`; data: the CSV files beside this one.\n\n",
            s->path, rpt_run_field(s, "model_path"), s->n_v);
    fprintf(f, "## Findings\n\n");
    for (int i = 0; i < c->n_findings; i++)
        fprintf(f, "%s%s\n", strncmp(c->findings[i], "  - ", 4) == 0 ? "" : "- ", c->findings[i]);
    fprintf(f, "\n## Variants\n\n%s.\n\n", rpt_tables[T_VARIANTS].what);
    rpt_table_write_md(&c->t[T_VARIANTS], f);
    fprintf(f, "\n## Protocol and provenance\n\n");
    md_protocol(s, f);
    if (c->figs.n_skipped) {
        fprintf(f, "\n## Figures not drawn\n\n");
        for (int i = 0; i < c->figs.n_skipped; i++) fprintf(f, "- %s\n", c->figs.skipped[i]);
    }
    return rpt_file_close(f, c->o->out_dir, "summary.md", c->err);
}

// ---------------------------------------------------------------------------------------------
// index.html

// Writes text HTML-escaped, with `...` spans as <code>.
static void html_inline(FILE *f, const char *s) {
    int in = 0;
    for (; *s; s++) {
        if (*s == '`') {
            fputs(in ? "</code>" : "<code>", f);
            in = !in;
        } else {
            char one[2] = {*s, 0};
            rpt_html_escape(f, one);
        }
    }
    if (in) fputs("</code>", f);
}

// Copies the <svg> element of DIR/NAME.svg into f, prefixing its ids (and the references to them)
// with "NAME-" so that several gnuplot figures can share one page. 0, or -1 when unreadable.
int rpt_html_svg(FILE *f, const char *dir, const char *name) {
    char path[4352];
    snprintf(path, sizeof path, "%s/%s.svg", dir, name);
    FILE *in = fopen(path, "rb");
    if (!in) return -1;
    size_t cap = 1 << 16, len = 0, got;
    char *buf = malloc(cap);
    while (buf && (got = fread(buf + len, 1, cap - len - 1, in)) > 0) {
        len += got;
        if (cap - len < 2) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) free(buf);
            buf = nb;
        }
    }
    fclose(in);
    if (!buf) return -1;
    buf[len] = 0;
    char *p = strstr(buf, "<svg");
    if (!p) {
        free(buf);
        return -1;
    }
    static const char *const pats[] = {"id='", "id=\"", "href='#", "href=\"#", "url(#"};
    while (*p) {
        size_t k, hit = 0;
        for (k = 0; k < QP_ARRAY_LEN(pats); k++) {
            size_t l = strlen(pats[k]);
            if (strncmp(p, pats[k], l) == 0 && (k > 1 || p == buf || p[-1] == ' ' || p[-1] == '\t' || p[-1] == '\n')) {
                hit = l;
                break;
            }
        }
        if (hit) {
            fwrite(p, 1, hit, f);
            fprintf(f, "%s-", name);
            p += hit;
        } else {
            fputc(*p++, f);
        }
    }
    free(buf);
    return 0;
}

void rpt_html_figures(FILE *f, const char *dir, const struct rpt_figs *figs) {
    for (int i = 0; i < figs->n; i++) {
        const struct rpt_fig *g = &figs->f[i];
        fprintf(f, "<figure id=\"fig-%s\">\n<h3>", g->name);
        rpt_html_escape(f, g->title);
        fprintf(f, "</h3>\n");
        if (!g->rendered || rpt_html_svg(f, dir, g->name) != 0)
            fprintf(f, "<p class=\"warn\">not rendered: run <code>gnuplot %s.gp</code> in the report folder.</p>\n",
                    g->name);
        fprintf(f, "<figcaption>");
        rpt_html_escape(f, g->caption);
        fprintf(f, " <span class=\"files\">Files: <a href=\"%s.svg\">svg</a> <a href=\"%s.png\">png</a> "
                   "<a href=\"%s.gp\">gnuplot script</a> <a href=\"%s.dat\">data</a></span></figcaption>\n"
                   "</figure>\n",
                g->name, g->name, g->name, g->name);
    }
}

const char rpt_css[] =
    "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#222;background:#f6f7f9}"
    "main{max-width:1600px;margin:0 auto;padding:16px 28px 48px;background:#fff}"
    "h1{font-size:1.6em;margin:.4em 0 .1em}h2{margin-top:1.6em;border-bottom:2px solid #e4e6ea;padding-bottom:.2em}"
    "h3{margin:1.2em 0 .3em}.sub{color:#666;margin:0 0 1em}"
    "table{border-collapse:collapse;margin:.5em 0 1em;font-size:.88em}"
    "th,td{border:1px solid #dde0e4;padding:3px 8px;vertical-align:top}td{overflow-wrap:anywhere;max-width:40em}"
    "th{background:#eef1f5;cursor:pointer;user-select:none;white-space:nowrap}"
    "th[data-dir=asc]::after{content:' \\25B2'}th[data-dir=desc]::after{content:' \\25BC'}"
    "td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}"
    "tbody tr:nth-child(even){background:#fafbfc}tbody tr:hover{background:#fff6dd}"
    "figure{margin:1em 0 2em}figure svg{max-width:100%;height:auto;display:block;border:1px solid #eee}"
    "figcaption{color:#444;font-size:.92em;max-width:1000px;margin-top:.4em}"
    ".files{font-size:.85em;color:#666}code{background:#f0f2f5;padding:0 3px;border-radius:3px}"
    ".pass{color:#1a7f37;font-weight:600}.fail{color:#c62828;font-weight:600}"
    ".warn{background:#fff4e5;border:1px solid #f0c36d;padding:6px 10px}"
    "nav a{margin-right:1em}ul.findings li{margin:.25em 0}ul.findings ul{margin:.2em 0}"
    "details summary{cursor:pointer;color:#555}"
    "#tbl-variants{font-size:.8em}#tbl-variants td:first-child{white-space:nowrap}#tbl-variants td{max-width:15em}"
    ".wide{overflow-x:auto}";

const char rpt_js[] =
    "document.querySelectorAll('table.sortable th').forEach(function(th){th.addEventListener('click',function(){"
    "var row=th.parentNode,t=row.closest('table'),b=t.tBodies[0],"
    "i=Array.prototype.indexOf.call(row.children,th),asc=th.getAttribute('data-dir')!=='asc';"
    "Array.prototype.forEach.call(row.children,function(h){h.removeAttribute('data-dir')});"
    "th.setAttribute('data-dir',asc?'asc':'desc');"
    "var rows=Array.prototype.slice.call(b.rows);"
    "rows.sort(function(r,s){var x=r.cells[i].getAttribute('data-v'),y=s.cells[i].getAttribute('data-v'),d;"
    "if(x!==null&&y!==null)d=parseFloat(x)-parseFloat(y);else if(x!==null)d=-1;else if(y!==null)d=1;"
    "else d=r.cells[i].textContent.localeCompare(s.cells[i].textContent);return asc?d:-d});"
    "rows.forEach(function(r){b.appendChild(r)})})});";

static void html_table_section(struct rpt_ctx *c, FILE *f, int k) {
    const struct rpt_table *t = &c->t[k];
    if (t->n_rows == 0) return;
    fprintf(f, "<h3 id=\"t-%s\">", rpt_tables[k].file);
    rpt_html_escape(f, rpt_tables[k].title);
    fprintf(f, "</h3>\n<p class=\"files\">");
    rpt_html_escape(f, rpt_tables[k].what);
    fprintf(f, " — <a href=\"%s.csv\">%s.csv</a></p>\n", rpt_tables[k].file, rpt_tables[k].file);
    int fold = t->n_rows > 24;
    if (fold) fprintf(f, "<details><summary>%d rows (click a column to sort)</summary>\n", t->n_rows);
    char id[64];
    snprintf(id, sizeof id, "tbl-%s", rpt_tables[k].file);
    rpt_table_write_html(t, f, id);
    if (fold) fprintf(f, "</details>\n");
}

// The page's head, title, subtitle (model, text, protocol) and navigation.
static void html_head(struct rpt_ctx *c, FILE *f) {
    const struct rpt_study *s = c->s;
    fprintf(f, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
               "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>qprobe report — ");
    rpt_html_escape(f, rpt_run_field(s, "model_path"));
    fprintf(f, " (run %lld)</title>\n<style>%s</style>\n</head>\n<body>\n<main>\n", (long long)s->run_id, rpt_css);
    fprintf(f, "<h1>qprobe report — run %lld</h1>\n<p class=\"sub\">model <code>", (long long)s->run_id);
    rpt_html_escape(f, rpt_run_field(s, "model_path"));
    fprintf(f, "</code>, text <code>");
    rpt_html_escape(f, rpt_run_field(s, "text_path"));
    fprintf(f, "</code>, protocol %s, ctx %s, %s chunks; study <code>", rpt_run_field(s, "protocol"),
            rpt_run_field(s, "ctx"), rpt_run_field(s, "chunks"));
    rpt_html_escape(f, s->path);
    fprintf(f, "</code>, created ");
    rpt_html_escape(f, rpt_run_field(s, "created"));
    fprintf(f, "</p>\n<nav><a href=\"#findings\">findings</a><a href=\"#variants\">variants</a>"
               "<a href=\"#figures\">figures</a><a href=\"#tables\">tables</a><a href=\"#protocol\">protocol</a>"
               "<a href=\"summary.md\">summary.md</a>%s</nav>\n",
            c->trends ? "<a href=\"trends.html\">history (trends.html)</a>" : "");
    if (!c->gp.found)
        fprintf(f, "<p class=\"warn\">gnuplot was not found when this report was written: the figures are "
                   "not rendered. Their scripts are beside this file: run <code>gnuplot NAME.gp</code> there "
                   "and write the report again.</p>\n");
}

// The findings as a list; the "  - " lines after a finding are its sub-list.
static void html_findings(struct rpt_ctx *c, FILE *f) {
    fprintf(f, "<h2 id=\"findings\">Findings</h2>\n<ul class=\"findings\">\n");
    int nested = 0, folded = 0;
    for (int i = 0; i < c->n_findings; i++) {
        const char *line = c->findings[i];
        int sub = strncmp(line, "  - ", 4) == 0;
        if (sub && !nested) {
            // A long list (one line per variant) is folded, so that the page opens on the
            // findings, the table and the first figures.
            int n = 0;
            while (i + n < c->n_findings && strncmp(c->findings[i + n], "  - ", 4) == 0) n++;
            folded = n > 6;
            if (folded) fprintf(f, "<details><summary>%d variants</summary>", n);
            fputs("<ul>\n", f);
        }
        if (!sub && nested) fputs(folded ? "</ul></details></li>\n" : "</ul></li>\n", f);
        else if (!sub && i > 0) fputs("</li>\n", f);
        nested = sub;
        fputs("<li>", f);
        html_inline(f, sub ? line + 4 : line);
        if (sub) fputs("</li>\n", f);
    }
    if (nested) fputs(folded ? "</ul></details>" : "</ul>", f);
    if (c->n_findings) fputs("</li>\n", f);
    fprintf(f, "</ul>\n");
}

// The variants table, the figures and what was not drawn, then the other tables.
static void html_body(struct rpt_ctx *c, FILE *f) {
    fprintf(f, "<h2 id=\"variants\">Variants</h2>\n<p class=\"files\">");
    rpt_html_escape(f, rpt_tables[T_VARIANTS].what);
    fprintf(f, "; click a column to sort — <a href=\"variants.csv\">variants.csv</a></p>\n");
    fputs("<div class=\"wide\">", f);
    rpt_table_write_html(&c->t[T_VARIANTS], f, "tbl-variants");
    fputs("</div>\n", f);

    fprintf(f, "<h2 id=\"figures\">Figures</h2>\n");
    rpt_html_figures(f, c->o->out_dir, &c->figs);
    if (c->figs.n_skipped) {
        fprintf(f, "<p class=\"files\">Not drawn (no data in this run):</p>\n<ul class=\"files\">\n");
        for (int i = 0; i < c->figs.n_skipped; i++) {
            fputs("<li>", f);
            rpt_html_escape(f, c->figs.skipped[i]);
            fputs("</li>\n", f);
        }
        fputs("</ul>\n", f);
    }

    fprintf(f, "<h2 id=\"tables\">Tables</h2>\n");
    for (int k = T_LAYERS; k < T_COUNT; k++) html_table_section(c, f, k);
}

// Every column of the run row, and the page's end.
static void html_protocol(struct rpt_ctx *c, FILE *f) {
    const struct rpt_study *s = c->s;
    fprintf(f, "<h2 id=\"protocol\">Protocol and provenance</h2>\n<p class=\"files\">Every column of the run "
               "row (table <code>run</code>): what every number above depends on.</p>\n"
               "<table class=\"sortable\" id=\"tbl-run\"><thead><tr><th>field</th><th>value</th></tr></thead><tbody>\n");
    for (int i = 0; i < s->n_run; i++) {
        fputs("<tr><td>", f);
        rpt_html_escape(f, s->run[i].name);
        fputs("</td><td>", f);
        rpt_html_escape(f, s->run[i].value);
        fputs("</td></tr>\n", f);
    }
    fprintf(f, "</tbody></table>\n<p class=\"files\">Written by qprobe %s from run %lld of %d in the study.</p>\n",
            qp_version, (long long)s->run_id, s->n_runs);
    fprintf(f, "</main>\n<script>%s</script>\n</body>\n</html>\n", rpt_js);
}

static int write_html(struct rpt_ctx *c) {
    const char *dir = c->o->out_dir;
    FILE *f = rpt_file_open(dir, "index.html", c->err);
    if (!f) return QP_EIO;
    html_head(c, f);
    html_findings(c, f);
    char gen_err[QP_ERRLEN];
    int gen_rc = c->gen ? rpt_gen_write_html(c->gen, c->s, f, gen_err) : 0;
    html_body(c, f);
    html_protocol(c, f);
    int rc = rpt_file_close(f, dir, "index.html", c->err);
    return gen_rc ? qp_fail(c->err, gen_rc, "%s", gen_err) : rc;
}

// ---------------------------------------------------------------------------------------------
// The report

static int write_csvs(struct rpt_ctx *c) {
    for (int k = 0; k < T_COUNT; k++) {
        if (c->t[k].oom) return qp_fail(c->err, QP_ENOMEM, "out of memory");
        char file[64];
        snprintf(file, sizeof file, "%s.csv", rpt_tables[k].file);
        FILE *f = rpt_file_open(c->o->out_dir, file, c->err);
        if (!f) return QP_EIO;
        rpt_table_write_csv(&c->t[k], f);
        int rc = rpt_file_close(f, c->o->out_dir, file, c->err);
        if (rc) return rc;
    }
    return 0;
}

static void render(struct rpt_ctx *c, struct rpt_figs *figs, struct rpt_outcome *out) {
    out->gnuplot_found = c->gp.found;
    out->gnuplot_unusable = c->gp.found && !c->gp.svg && !c->gp.png_term[0];
    if (!c->gp.found || out->gnuplot_unusable) return;
    for (int i = 0; i < figs->n; i++) {
        char err[QP_ERRLEN];
        if (rpt_gnuplot_run(&c->gp, c->o->out_dir, figs->f[i].name, err) == 0) {
            figs->f[i].rendered = c->gp.svg; // the page inlines the SVG
            out->n_rendered++;
        } else {
            if (!out->n_render_failed++) snprintf(out->render_err, sizeof out->render_err, "%s", err);
        }
    }
}

int rpt_report_write(const struct rpt_opts *o, struct rpt_outcome *out, char *err) {
    memset(out, 0, sizeof *out);
    struct rpt_ctx c;
    memset(&c, 0, sizeof c);
    c.o = o;
    c.err = err;
    int rc = rpt_study_open(o->db_path, o->run_id, &c.s, err);
    if (rc) return rc;
    out->run_id = c.s->run_id;
    out->n_variants = c.s->n_v;

    int layer_idx[RPT_MAX_LAYER_VARIANTS], n_layer = 0;
    if (o->variants && (rc = rpt_parse_variants(c.s, o->variants, layer_idx, RPT_MAX_LAYER_VARIANTS, &n_layer, err)))
        goto done;
    if (o->gate_path) {
        if ((rc = rpt_study_read_gate(c.s, o->gate_path, err))) goto done;
        c.has_gate = 1;
    }
    if ((rc = make_dirs(o->out_dir, err))) goto done;

    table_variants(&c);
    if (!rc) rc = table_layers(&c);
    if (!rc) rc = table_sensitivity(&c);
    if (!rc) rc = table_weights(&c);
    if (!rc) rc = table_acts(&c);
    if (!rc) rc = table_grid(&c);
    if (!rc) table_tasks(&c);
    if (!rc) rc = build_findings(&c);
    if (!rc) rc = write_csvs(&c);
    if (rc) goto done;

    rpt_gnuplot_probe(&c.gp);
    if ((rc = rpt_figs_write(c.s, &c.gp, o->out_dir, layer_idx, n_layer, &c.figs, err))) goto done;
    out->n_figs = c.figs.n;
    render(&c, &c.figs, out);
    // The history: on a study of several runs, or when asked (--history, --rules).
    if (o->history || o->rules_path || c.s->n_runs > 1) {
        if ((rc = rpt_trends_build(c.s, o->rules_path, &c.gp, o->out_dir, &c.trends, err))) goto done;
        struct rpt_figs *tf = rpt_trends_figs(c.trends);
        out->n_figs += tf->n;
        render(&c, tf, out);
        rpt_trends_findings(c.trends, add_finding, &c);
        if ((rc = rpt_trends_write_html(c.trends, o->out_dir, err))) goto done;
        out->n_runs_history = rpt_trends_n_runs(c.trends);
    }
    if (c.findings_oom) {
        rc = qp_fail(err, QP_ENOMEM, "out of memory collecting the findings");
        goto done;
    }
    if ((rc = write_md(&c))) goto done;
    rc = write_html(&c);
done:
    rpt_trends_destroy(c.trends);
    rpt_gen_destroy(c.gen);
    for (int k = 0; k < T_COUNT; k++) rpt_table_deinit(&c.t[k]);
    for (int i = 0; i < c.n_findings; i++) free(c.findings[i]);
    free(c.findings);
    rpt_study_close(c.s);
    return rc;
}
