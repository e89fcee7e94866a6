// rpt_figs.c — the report's figures as gnuplot scripts and data files (rpt_figs.h).
#include "rpt_figs.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "qp.h"

#define RPT_FIG_W 1000
#define RPT_FIG_H 620
#define RPT_TOP_HIST 6 // tensors / sites per outlier histogram

// ---------------------------------------------------------------------------------------------
// Helpers

struct rpt_fig *rpt_fig_add(struct rpt_figs *o, const char *name, const char *title, const char *caption) {
    if (o->n == RPT_MAX_FIGS) return NULL;
    struct rpt_fig *f = &o->f[o->n++];
    memset(f, 0, sizeof *f);
    snprintf(f->name, sizeof f->name, "%s", name);
    snprintf(f->title, sizeof f->title, "%s", title);
    snprintf(f->caption, sizeof f->caption, "%s", caption);
    return f;
}


void rpt_fig_skip(struct rpt_figs *o, const char *fmt, ...) {
    if (o->n_skipped == (int)QP_ARRAY_LEN(o->skipped)) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(o->skipped[o->n_skipped++], sizeof o->skipped[0], fmt, ap);
    va_end(ap);
}

// A number for a data file: NaN (declared missing in every script) when not finite.
void rpt_dat_num(FILE *f, double v) {
    if (isfinite(v)) fprintf(f, " %.10g", v);
    else fputs(" NaN", f);
}

static int fig_db_fail(const struct rpt_study *s, char *err) {
    return qp_fail(err, QP_EIO, "cannot read '%s': %s", s->path, sqlite3_errmsg(s->db));
}

static int fig_prepare(const struct rpt_study *s, const char *sql, sqlite3_stmt **q, char *err) {
    if (sqlite3_prepare_v2(s->db, sql, -1, q, NULL) != SQLITE_OK) return fig_db_fail(s, err);
    return 0;
}

static double col_d(sqlite3_stmt *q, int i) {
    return sqlite3_column_type(q, i) == SQLITE_NULL ? NAN : sqlite3_column_double(q, i);
}

// Writes the data file name.dat; close with rpt_dat_close.
FILE *rpt_dat_open(const char *dir, const char *name, const char *what, char *err) {
    char file[96];
    snprintf(file, sizeof file, "%s.dat", name);
    FILE *f = rpt_file_open(dir, file, err);
    if (f) fprintf(f, "# %s.dat — %s\n# written by `qprobe report`; missing values are NaN\n", name, what);
    return f;
}

int rpt_dat_close(FILE *f, const char *dir, const char *name, char *err) {
    char file[96];
    snprintf(file, sizeof file, "%s.dat", name);
    return rpt_file_close(f, dir, file, err);
}

// Removes the data file of a figure that turned out to have nothing to draw.
static void fig_dat_remove(const char *dir, const char *name) {
    char path[4352];
    snprintf(path, sizeof path, "%s/%s.dat", dir, name);
    unlink(path);
}

// A figure with nothing to draw: listed with the reason why, its data file removed. Returns 0.
static int fig_nothing(struct rpt_figs *o, const char *dir, const char *name, const char *why) {
    rpt_fig_skip(o, "%s", why);
    fig_dat_remove(dir, name);
    return 0;
}

// Starts NAME.gp as a multiplot of rows × cols panels under title; the caller ends its line.
static FILE *gp_multiplot(const struct rpt_gnuplot *g, const char *dir, const char *name, const char *title,
                          int width, int height, int rows, int cols, char *err) {
    FILE *f = rpt_gp_begin(g, dir, name, title, width, height, err);
    if (!f) return NULL;
    fprintf(f, "set multiplot layout %d,%d title ", rows, cols);
    rpt_gp_str(f, title);
    return f;
}

// ---------------------------------------------------------------------------------------------
// 2. Per-layer error accumulation

static int layer_kld_cmp_desc(const void *a, const void *b, void *ctx) {
    const struct rpt_study *s = ctx;
    double x = rpt_metric_get(&s->v[*(const int *)a], "kld", "mean", NULL);
    double y = rpt_metric_get(&s->v[*(const int *)b], "kld", "mean", NULL);
    if (isnan(x)) x = -INFINITY;
    if (isnan(y)) y = -INFINITY;
    return (x < y) - (x > y);
}

int rpt_figs_default_layer_variants(const struct rpt_study *s, int *idx, int max) {
    int *all = calloc((size_t)s->n_v + 1, sizeof *all), n = 0;
    if (!all) return 0;
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(s->db,
                           "SELECT 1 FROM layer_error WHERE variant_id = ? AND site = 'resid_out' LIMIT 1",
                           -1, &q, NULL) != SQLITE_OK) {
        free(all);
        return 0;
    }
    for (int i = 0; i < s->n_v; i++) {
        if (s->v[i].is_reference) continue;
        sqlite3_reset(q);
        sqlite3_bind_int64(q, 1, s->v[i].id);
        if (sqlite3_step(q) == SQLITE_ROW) all[n++] = i;
    }
    sqlite3_finalize(q);
    qsort_r(all, (size_t)n, sizeof *all, layer_kld_cmp_desc, (void *)s);
    int k = 0;
    if (n <= max) {
        for (int i = 0; i < n; i++) idx[k++] = all[i];
    } else if (max > 0) {
        // The worst max-1 by mean KLD, then the best (the last after sorting).
        for (int i = 0; i < max - 1; i++) idx[k++] = all[i];
        idx[k++] = all[n - 1];
    }
    free(all);
    return k;
}

// Writes layers.dat: one block per variant of sel that has resid_out errors, their indexes into
// blocks (*n_blocks of them).
static int layers_dat(const struct rpt_study *s, const char *dir, const char *name, const char *title,
                      const int *sel, int n_sel, int *blocks, int *n_blocks, char *err) {
    sqlite3_stmt *q = NULL;
    int rc = fig_prepare(s,
                         "SELECT a.layer, a.rel_err, l.rel_err FROM layer_error a"
                         " LEFT JOIN layer_error l ON l.variant_id = a.variant_id AND l.layer = a.layer"
                         "  AND l.site = a.site AND l.kind = 'local'"
                         " WHERE a.variant_id = ? AND a.kind = 'accumulated' AND a.site = 'resid_out'"
                         " ORDER BY a.layer",
                         &q, err);
    if (rc) return rc;
    FILE *f = rpt_dat_open(dir, name, title, err);
    if (!f) {
        sqlite3_finalize(q);
        return QP_EIO;
    }
    *n_blocks = 0;
    for (int k = 0; k < n_sel && k < RPT_MAX_LAYER_VARIANTS; k++) {
        const struct rpt_variant *v = &s->v[sel[k]];
        sqlite3_reset(q);
        sqlite3_bind_int64(q, 1, v->id);
        int rows = 0, step;
        while ((step = sqlite3_step(q)) == SQLITE_ROW) {
            if (rows == 0) {
                if (*n_blocks) fputs("\n\n", f);
                fprintf(f, "# index %d: ", *n_blocks);
                rpt_dat_str(f, v->spec);
                fprintf(f, " — layer accumulated_rel_err local_rel_err accumulation_factor\n");
            }
            double acc = col_d(q, 1), loc = col_d(q, 2);
            fprintf(f, "%d", sqlite3_column_int(q, 0));
            rpt_dat_num(f, acc);
            rpt_dat_num(f, loc);
            rpt_dat_num(f, loc > 0 ? acc / loc : NAN);
            fputc('\n', f);
            rows++;
        }
        if (step != SQLITE_DONE) rc = fig_db_fail(s, err);
        if (rows) blocks[(*n_blocks)++] = sel[k];
    }
    sqlite3_finalize(q);
    int crc = rpt_dat_close(f, dir, name, err);
    return rc ? rc : crc;
}

// layers.gp: accumulated and local error above, their ratio below, one colour per block.
static int layers_plot(const struct rpt_study *s, const struct rpt_gnuplot *g, const char *dir, const char *name,
                       const char *title, const int *blocks, int n_blocks, char *err) {
    FILE *f = gp_multiplot(g, dir, name, title, RPT_FIG_W, 760, 2, 1, err);
    if (!f) return QP_EIO;
    fprintf(f, "\nset xtics 1\nset offsets 0.15, 0.15, 0, 0\nset key outside right top vertical\n"
               "set lmargin 12\nset rmargin 34\n");
    fprintf(f, "set ylabel \"relative error ‖Δh‖ / ‖h‖\"\nset yrange [0:*]\n"
               "set title \"solid: accumulated (end to end) — dashed: local (the block alone)\" font \",11\"\n");
    fprintf(f, "plot ");
    for (int k = 0; k < n_blocks; k++) {
        fprintf(f, "%s'%s.dat' index %d using 1:2 with linespoints ls %d title ", k ? ", \\\n     " : "", name,
                k, k % 10 + 1);
        rpt_gp_str(f, s->v[blocks[k]].spec);
        fprintf(f, ", \\\n     '%s.dat' index %d using 1:3 with linespoints ls %d dt 2 pt 6 notitle", name, k,
                k % 10 + 1);
    }
    fprintf(f, "\nset title \"accumulation factor = accumulated / local (1 = no accumulation)\" font \",11\"\n"
               "set xlabel \"layer\"\nset ylabel \"accumulation factor\"\nset yrange [0:*]\n");
    fprintf(f, "plot 1 with lines ls 8 dt 3 notitle");
    for (int k = 0; k < n_blocks; k++) {
        fprintf(f, ", \\\n     '%s.dat' index %d using 1:4 with linespoints ls %d title ", name, k, k % 10 + 1);
        rpt_gp_str(f, s->v[blocks[k]].spec);
    }
    fputc('\n', f);
    return rpt_gp_end(f, dir, name, err);
}

static int figs_layers(const struct rpt_study *s, const struct rpt_gnuplot *g, const char *dir,
                       struct rpt_figs *o, const int *sel, int n_sel, char *err) {
    int def[6];
    if (n_sel == 0) {
        n_sel = rpt_figs_default_layer_variants(s, def, 6);
        sel = def;
    }
    if (n_sel == 0) {
        rpt_fig_skip(o, "layers: no per-layer error (table layer_error, site resid_out) in this run");
        return 0;
    }
    const char *name = "layers";
    const char *title = "Per-layer error accumulation through the residual stream";
    int blocks[RPT_MAX_LAYER_VARIANTS], n_blocks = 0;
    int rc = layers_dat(s, dir, name, title, sel, n_sel, blocks, &n_blocks, err);
    if (rc) return rc;
    if (n_blocks == 0)
        return fig_nothing(o, dir, name, "layers: the chosen variants have no per-layer error at site resid_out");
    if ((rc = layers_plot(s, g, dir, name, title, blocks, n_blocks, err))) return rc;
    rpt_fig_add(o, name, title,
            "Relative Frobenius error of the residual stream after each block (site resid_out), for the "
            "variants with the largest mean KLD and the best one (or those named by --variants). Accumulated: "
            "the variant run end to end; local: the reference's block input fed to the quantized block, the "
            "error that block adds by itself. Their ratio, the accumulation factor, shows how much error is "
            "inherited from earlier layers.");
    return 0;
}

// ---------------------------------------------------------------------------------------------
// 3. Outlier histograms (weights, activation channels)

// Writes one histogram block: x = log10 of the bin's centre, y = count. Empty bins between the
// first and the last stored one are written as 0.5 so that the steps fall to the floor of the
// log axis (whose range starts at 0.5). Returns the number of rows, <0 on a database error.
static int hist_block(const struct rpt_study *s, sqlite3_stmt *q, FILE *f) {
    int rows = 0, step, last_bin = 0;
    double step_w = 0.25, last_x = NAN;
    while ((step = sqlite3_step(q)) == SQLITE_ROW) {
        int bin = sqlite3_column_int(q, 0);
        double lo = col_d(q, 1), hi = col_d(q, 2), count = col_d(q, 3);
        double x;
        if (lo > 0 && isfinite(hi) && hi > lo) {
            step_w = log10(hi) - log10(lo);
            x = 0.5 * (log10(lo) + log10(hi));
        } else if (lo > 0) {
            x = log10(lo) + 0.5 * step_w; // overflow bin: [lo, inf)
        } else if (isfinite(hi) && hi > 0) {
            x = log10(hi) - 0.5 * step_w; // underflow bin: [0, hi)
        } else {
            continue;
        }
        for (int b = last_bin + 1; rows && b < bin; b++) fprintf(f, "%.6g 0.5\n", last_x + (b - last_bin) * step_w);
        fprintf(f, "%.6g %.10g\n", x, count);
        last_bin = bin;
        last_x = x;
        rows++;
    }
    (void)s;
    return step == SQLITE_DONE ? rows : -1;
}

// The plot of the histogram figures: one histeps line per block of NAME.dat (n of them, labelled),
// log-scale counts; with no block the figure is skipped with the reason `skip`.
static int fig_hist_plot(const struct rpt_gnuplot *g, const char *dir, const char *name, const char *title,
                         const char *xlabel, const char *ylabel, char (*labels)[200], int n, struct rpt_figs *o,
                         const char *skip, const char *caption, char *err) {
    if (n == 0) return fig_nothing(o, dir, name, skip);
    FILE *f = rpt_gp_begin(g, dir, name, title, RPT_FIG_W, RPT_FIG_H + 20 * n, err);
    if (!f) return QP_EIO;
    fprintf(f, "set title ");
    rpt_gp_str(f, title);
    fprintf(f, "\nset xlabel ");
    rpt_gp_str(f, xlabel);
    fprintf(f, "\nset ylabel ");
    rpt_gp_str(f, ylabel);
    fprintf(f, "\nset logscale y\nset yrange [0.5:*]\nset format y \"%%g\"\nset offsets 0.25, 0.25, 0, 0\n"
               "set key at screen 0.5, screen 0.01 center bottom vertical maxcols 1\n"
               "set bmargin %d\n", 5 + n);
    fprintf(f, "plot ");
    for (int k = 0; k < n; k++) {
        fprintf(f, "%s'%s.dat' index %d using 1:2 with histeps ls %d title ", k ? ", \\\n     " : "", name, k,
                k % 10 + 1);
        rpt_gp_str(f, labels[k]);
    }
    fputc('\n', f);
    int rc = rpt_gp_end(f, dir, name, err);
    if (!rc) rpt_fig_add(o, name, title, caption);
    return rc;
}

// A histogram figure: its blocks are the top RPT_TOP_HIST subjects of top_sql (run id ?1, limit
// ?2), each with its bins from hist_sql (run id ?1, subject ?2). describe() names a row of top:
// its subject, the rest of its block's comment line, its legend label. skip: the reason listed
// when no subject has bins.
struct hist_src {
    const char *name, *title, *xlabel, *ylabel, *skip, *caption;
    const char *top_sql, *hist_sql;
    void (*describe)(sqlite3_stmt *top, char *subject, size_t subject_cap, char *head, size_t head_cap,
                     char *label, size_t label_cap);
};

// Writes src's NAME.dat: one block per subject that has bins, its label into labels[*n].
static int hist_dat(const struct rpt_study *s, const char *dir, const struct hist_src *src, char (*labels)[200],
                    int *n, char *err) {
    sqlite3_stmt *top = NULL, *h = NULL;
    int rc = fig_prepare(s, src->top_sql, &top, err);
    if (!rc) rc = fig_prepare(s, src->hist_sql, &h, err);
    FILE *f = NULL;
    int step = SQLITE_DONE;
    *n = 0;
    if (!rc && !(f = rpt_dat_open(dir, src->name, src->title, err))) rc = QP_EIO;
    if (!rc) {
        sqlite3_bind_int64(top, 1, s->run_id);
        sqlite3_bind_int(top, 2, RPT_TOP_HIST);
        while (!rc && (step = sqlite3_step(top)) == SQLITE_ROW) {
            char subject[512], head[200], label[200];
            src->describe(top, subject, sizeof subject, head, sizeof head, label, sizeof label);
            sqlite3_reset(h);
            sqlite3_bind_int64(h, 1, s->run_id);
            sqlite3_bind_text(h, 2, subject, -1, SQLITE_TRANSIENT);
            if (*n) fputs("\n\n", f);
            fprintf(f, "# index %d: %s %s\n", *n, subject, head);
            int rows = hist_block(s, h, f);
            if (rows < 0) rc = fig_db_fail(s, err);
            else if (rows > 0) snprintf(labels[(*n)++], sizeof labels[0], "%s", label);
        }
        if (!rc && step != SQLITE_DONE) rc = fig_db_fail(s, err);
    }
    sqlite3_finalize(top);
    sqlite3_finalize(h);
    if (f) {
        int crc = rpt_dat_close(f, dir, src->name, err);
        if (!rc) rc = crc;
    }
    return rc;
}

// A row of weight_stat: tensor, kurtosis, max_over_std.
static void describe_weight(sqlite3_stmt *top, char *subject, size_t subject_cap, char *head, size_t head_cap,
                            char *label, size_t label_cap) {
    const char *tensor = (const char *)sqlite3_column_text(top, 0);
    snprintf(subject, subject_cap, "%s", tensor);
    snprintf(head, head_cap, "(kurtosis %.3g) — log10|w| count", col_d(top, 1));
    snprintf(label, label_cap, "%s (kurtosis %.1f, max %.1fσ)", tensor, col_d(top, 1), col_d(top, 2));
}

static const struct hist_src weight_hist = {
    "weight_hist", "Weight magnitude histograms of the heaviest-tailed tensors", "log10 |w|  (quarter-decade bins)",
    "weights per bin (log scale)",
    "weight_hist: no weight statistics or histograms (tables weight_stat, histogram) in this run",
    "Histogram of log10 |w| of the unquantized weights for the tensors with the largest kurtosis "
    "(normal = 3): a long right tail means a few large weights that stretch a quantization "
    "group's range and cost the small weights their resolution.",
    "SELECT tensor, kurtosis, max_over_std FROM weight_stat WHERE run_id = ?"
    " AND kurtosis IS NOT NULL ORDER BY kurtosis DESC, tensor LIMIT ?",
    "SELECT bin, lo, hi, count FROM histogram WHERE run_id = ? AND variant_id IS NULL"
    " AND kind = 'weight_log10_abs' AND subject = ? ORDER BY bin",
    describe_weight};

// A row of act_stat: layer, site, max / median channel absmax.
static void describe_act(sqlite3_stmt *top, char *subject, size_t subject_cap, char *head, size_t head_cap,
                         char *label, size_t label_cap) {
    snprintf(subject, subject_cap, "blk.%d.%s", sqlite3_column_int(top, 0), (const char *)sqlite3_column_text(top, 1));
    snprintf(head, head_cap, "(max / median channel absmax %.3g) — log10(channel absmax) count", col_d(top, 2));
    snprintf(label, label_cap, "%s (max = %.1f × median channel)", subject, col_d(top, 2));
}

static const struct hist_src act_hist = {
    "act_hist", "Activation channel absmax histograms of the most extreme sites", "log10 (channel absmax)",
    "channels per bin (log scale)",
    "act_hist: no activation statistics or histograms (tables act_stat, histogram) in this run",
    "Histogram over channels of each channel's largest |activation| in the reference, for the probe "
    "sites whose largest channel is furthest above the median channel. Isolated channels far to the "
    "right are the activation outliers that per-tensor activation quantization (act=q8) must cover.",
    "SELECT layer, site, max_abs / median_channel_absmax, kurtosis FROM act_stat"
    " WHERE run_id = ? AND median_channel_absmax > 0"
    " ORDER BY max_abs / median_channel_absmax DESC, layer, site LIMIT ?",
    "SELECT bin, lo, hi, count FROM histogram WHERE run_id = ? AND variant_id IS NULL"
    " AND kind = 'act_channel_absmax_log10' AND subject = ? ORDER BY bin",
    describe_act};

// The histogram figure src: its data, then its plot (or the reason it is not drawn).
static int figs_hist(const struct rpt_study *s, const struct rpt_gnuplot *g, const char *dir, struct rpt_figs *o,
                     const struct hist_src *src, char *err) {
    char labels[RPT_TOP_HIST][200];
    int n, rc = hist_dat(s, dir, src, labels, &n, err);
    if (rc) return rc;
    return fig_hist_plot(g, dir, src->name, src->title, src->xlabel, src->ylabel, labels, n, o, src->skip,
                         src->caption, err);
}

// ---------------------------------------------------------------------------------------------
// 4. Grid collapse vs bits per weight

static int figs_grid(const struct rpt_study *s, const struct rpt_gnuplot *g, const char *dir,
                     struct rpt_figs *o, char *err) {
    const char *name = "grid", *title = "Grid collapse vs bits per weight";
    sqlite3_stmt *q = NULL;
    int rc = fig_prepare(s,
                         "SELECT v.bits_per_weight, v.spec,"
                         " sum(g.codes_used_mean * g.groups) / sum(g.groups), max(g.n_codes),"
                         " 100.0 * sum(g.collisions) / sum(g.weights), 100.0 * sum(g.zeroed) / sum(g.weights)"
                         " FROM grid_stat g JOIN variant v ON v.id = g.variant_id"
                         " WHERE v.run_id = ? AND v.is_reference = 0 AND g.codes_used_mean IS NOT NULL"
                         "  AND g.groups > 0 AND g.weights > 0"
                         " GROUP BY v.id ORDER BY v.bits_per_weight, v.ord, v.id",
                         &q, err);
    if (rc) return rc;
    sqlite3_bind_int64(q, 1, s->run_id);
    FILE *f = rpt_dat_open(dir, name, title, err);
    if (!f) {
        sqlite3_finalize(q);
        return QP_EIO;
    }
    fprintf(f, "# bits_per_weight codes_used_per_group n_codes collisions_pct zeroed_pct spec\n");
    int n = 0, step;
    while ((step = sqlite3_step(q)) == SQLITE_ROW) {
        rpt_dat_num(f, col_d(q, 0));
        rpt_dat_num(f, col_d(q, 2));
        rpt_dat_num(f, col_d(q, 3));
        rpt_dat_num(f, col_d(q, 4));
        rpt_dat_num(f, col_d(q, 5));
        fputc(' ', f);
        rpt_dat_str(f, (const char *)sqlite3_column_text(q, 1));
        fputc('\n', f);
        n++;
    }
    if (step != SQLITE_DONE) rc = fig_db_fail(s, err);
    sqlite3_finalize(q);
    int crc = rpt_dat_close(f, dir, name, err);
    if (rc || crc) return rc ? rc : crc;
    if (n == 0)
        return fig_nothing(o, dir, name,
                           "grid: no grid-collapse statistics (grid_stat.codes_used_mean is NULL for every variant)");
    if (!(f = gp_multiplot(g, dir, name, title, RPT_FIG_W + 200, 520, 1, 3, err))) return QP_EIO;
    fprintf(f, "\nset xlabel \"bits per weight\"\nset offsets graph 0.05, graph 0.3, graph 0.1, graph 0.1\n"
               "set key bottom right\n");
    const char *lab = "'grid.dat' using 1:%d:6 with labels left offset char 0.6,0.5 font \",9\" tc rgb \"#222222\" notitle";
    fprintf(f, "set title \"codes used per group (mean)\" font \",11\"\nset ylabel \"codes\"\n"
               "set logscale y 2\nset format y \"%%g\"\n");
    fprintf(f, "plot 'grid.dat' using 1:3 with points ls 8 pt 6 ps 1.5 title \"codes of the format\", \\\n"
               "     'grid.dat' using 1:2 with points ls 1 title \"used per group\", \\\n     ");
    fprintf(f, lab, 2);
    fprintf(f, "\nunset logscale y\nset title \"collisions: distinct weights merged into one code\" font \",11\"\n"
               "set ylabel \"%% of weights\"\nset yrange [0:*]\nset offsets graph 0.05, graph 0.3, graph 0.1, 0\n");
    fprintf(f, "plot 'grid.dat' using 1:4 with points ls 2, \\\n     ");
    fprintf(f, lab, 4);
    fprintf(f, "\nset title \"weights rounded to zero\" font \",11\"\nset ylabel \"%% of weights\"\n");
    fprintf(f, "plot 'grid.dat' using 1:5 with points ls 3, \\\n     ");
    fprintf(f, lab, 5);
    fputc('\n', f);
    if ((rc = rpt_gp_end(f, dir, name, err))) return rc;
    rpt_fig_add(o, name, title,
            "How much of its grid each variant uses, over all quantized tensors: distinct codes used per group "
            "(against the codes the format has), distinct weights merged into an already used code, and "
            "non-zero weights rounded to zero. Variants without grid statistics are left out.");
    return 0;
}

// ---------------------------------------------------------------------------------------------
// 5. Task accuracy with confidence intervals and flips

static int figs_tasks(const struct rpt_study *s, const struct rpt_gnuplot *g, const char *dir,
                      struct rpt_figs *o, char *err) {
    const char *name = "tasks", *title = "Task accuracy (95% intervals) and answer flips vs the reference";
    if (s->n_tasks == 0) {
        rpt_fig_skip(o, "tasks: no task metrics (suite 'task:NAME') in this run");
        return 0;
    }
    FILE *f = rpt_dat_open(dir, name, title, err);
    if (!f) return QP_EIO;
    int n_suites = QP_MIN(s->n_tasks, 10), rows = 0;
    for (int t = 0; t < n_suites; t++) {
        char suite[160];
        snprintf(suite, sizeof suite, "task:%s", s->tasks[t]);
        if (t) fputs("\n\n", f);
        fprintf(f, "# index %d: %s — x acc ci95_lo ci95_hi flips_to_right flips_to_wrong spec\n", t, s->tasks[t]);
        int x = 0;
        for (int i = 0; i < s->n_v; i++, x++) {
            const struct rpt_variant *v = &s->v[i];
            double se, acc = rpt_metric_get(v, suite, "acc", &se);
            double right = rpt_metric_get(v, suite, "flips_to_right", NULL);
            double wrong = rpt_metric_get(v, suite, "flips_to_wrong", NULL);
            // Series side by side around each variant's x.
            fprintf(f, "%.4f", x + (t - (n_suites - 1) / 2.0) * 0.7 / n_suites);
            rpt_dat_num(f, acc);
            rpt_dat_num(f, isfinite(se) ? acc - 1.96 * se : acc);
            rpt_dat_num(f, isfinite(se) ? acc + 1.96 * se : acc);
            rpt_dat_num(f, right);
            rpt_dat_num(f, isfinite(wrong) ? -wrong : NAN);
            fputc(' ', f);
            rpt_dat_str(f, v->spec);
            fputc('\n', f);
            rows += isfinite(acc);
        }
    }
    int rc = rpt_dat_close(f, dir, name, err);
    if (rc) return rc;
    if (!rows) return fig_nothing(o, dir, name, "tasks: no variant has a task accuracy (metric 'acc')");
    if (!(f = gp_multiplot(g, dir, name, title, RPT_FIG_W, 800, 2, 1, err))) return QP_EIO;
    double bw = 0.7 / n_suites;
    fprintf(f, "\nset xrange [-0.6:%d.6]\nset key outside right top vertical\nset rmargin 26\nset lmargin 12\n"
               "set xtics rotate by -25 font \",9\"\nset bmargin 6\n", s->n_v - 1);
    fprintf(f, "set title \"accuracy, ±1.96 standard errors\" font \",11\"\nset ylabel \"accuracy\"\n");
    fprintf(f, "plot ");
    for (int t = 0; t < n_suites; t++) {
        fprintf(f, "%s'%s.dat' index %d using 1:2:3:4%s with yerrorbars ls %d title ", t ? ", \\\n     " : "", name,
                t, t == 0 ? ":xticlabels(7)" : "", t % 10 + 1);
        rpt_gp_str(f, s->tasks[t]);
    }
    fprintf(f, "\nset title \"items flipped vs the reference: up = wrong→right, down = right→wrong\" font \",11\"\n"
               "set ylabel \"items\"\nset style fill solid 0.7 border -1\nset boxwidth %.4f\n", bw * 0.9);
    fprintf(f, "plot 0 with lines ls 8 notitle");
    for (int t = 0; t < n_suites; t++) {
        fprintf(f, ", \\\n     '%s.dat' index %d using 1:5%s with boxes ls %d title ", name, t,
                t == 0 ? ":xticlabels(7)" : "", t % 10 + 1);
        rpt_gp_str(f, s->tasks[t]);
        fprintf(f, ", \\\n     '%s.dat' index %d using 1:6 with boxes ls %d fs pattern 2 notitle", name, t,
                t % 10 + 1);
    }
    fputc('\n', f);
    if ((rc = rpt_gp_end(f, dir, name, err))) return rc;
    rpt_fig_add(o, name, title,
            "Accuracy of every variant on each task suite with a 95% interval (±1.96 standard errors), and "
            "how many items each variant answers differently from the reference: solid bars up are items the "
            "reference got wrong and the variant right, hatched bars down the reverse.");
    return 0;
}

// ---------------------------------------------------------------------------------------------
// 6. Throughput and size

static int figs_speed_size(const struct rpt_study *s, const struct rpt_gnuplot *g, const char *dir,
                           struct rpt_figs *o, char *err) {
    const char *name = "speed_size", *title = "Throughput and weight size per variant";
    FILE *f = rpt_dat_open(dir, name, title, err);
    if (!f) return QP_EIO;
    fprintf(f, "# x tokens_per_second weight_kib spec\n");
    int rows = 0;
    for (int i = 0; i < s->n_v; i++) {
        const struct rpt_variant *v = &s->v[i];
        fprintf(f, "%d", i);
        rpt_dat_num(f, v->tokens_per_second);
        rpt_dat_num(f, v->weight_bytes > 0 ? (double)v->weight_bytes / 1024.0 : NAN);
        fputc(' ', f);
        rpt_dat_str(f, v->spec);
        fputc('\n', f);
        rows += isfinite(v->tokens_per_second) || v->weight_bytes > 0;
    }
    int rc = rpt_dat_close(f, dir, name, err);
    if (rc) return rc;
    if (!rows) return fig_nothing(o, dir, name, "speed_size: no variant has tokens/s or weight bytes");
    if (!(f = gp_multiplot(g, dir, name, title, RPT_FIG_W, 760, 2, 1, err))) return QP_EIO;
    fprintf(f, "\nset xrange [-0.6:%d.6]\nset style fill solid 0.75 border -1\nset boxwidth 0.6\n"
               "set xtics rotate by -25 font \",9\"\nset bmargin 6\nset lmargin 12\nset yrange [0:*]\n"
               "set offsets 0, 0, graph 0.12, 0\n", s->n_v - 1);
    fprintf(f, "set title \"evaluation throughput (this machine, this run's thread count)\" font \",11\"\n"
               "set ylabel \"tokens / s\"\n");
    fprintf(f, "plot '%s.dat' using 1:2:xticlabels(4) with boxes ls 1, \\\n"
               "     '%s.dat' using 1:2:(sprintf(\"%%.0f\", $2)) with labels offset char 0,0.7 font \",9\"\n",
            name, name);
    fprintf(f, "set title \"weights as stored (codes, scales and minimums; the reference is not stored "
               "quantized)\" font \",11\"\nset ylabel \"KiB\"\n");
    fprintf(f, "plot '%s.dat' using 1:3:xticlabels(4) with boxes ls 3, \\\n"
               "     '%s.dat' using 1:3:(sprintf(\"%%.0f\", $3)) with labels offset char 0,0.7 font \",9\"\n",
            name, name);
    if ((rc = rpt_gp_end(f, dir, name, err))) return rc;
    rpt_fig_add(o, name, title,
            "Tokens per second of each variant's evaluation as measured in this run (single measurements: "
            "compare within a run, not across machines) and the bytes of its 2-D weights as stored.");
    return 0;
}

// ---------------------------------------------------------------------------------------------
// All figures

int rpt_figs_write(const struct rpt_study *s, const struct rpt_gnuplot *g, const char *dir,
                   const int *layer_idx, int n_layer, struct rpt_figs *out, char *err) {
    memset(out, 0, sizeof *out);
    int rc = rpt_trade_figs(s, g, dir, out, err);
    if (!rc) rc = figs_layers(s, g, dir, out, layer_idx, n_layer, err);
    if (!rc) rc = figs_hist(s, g, dir, out, &weight_hist, err);
    if (!rc) rc = figs_hist(s, g, dir, out, &act_hist, err);
    if (!rc) rc = figs_grid(s, g, dir, out, err);
    if (!rc) rc = figs_tasks(s, g, dir, out, err);
    if (!rc) rc = figs_speed_size(s, g, dir, out, err);
    return rc;
}
