// rpt_trends.c — the history page of a study (rpt_trends.h).
//
// The values are the gate's: each run goes through rpt_gate_evaluate against its own reference,
// once under "measure" rules whose limits nothing can fail (every value computed, none judged)
// and, with --rules, once under the given rules (the verdicts). So a number on this page is the
// number `qprobe gate --baseline reference` prints for that run.
#include "rpt_trends.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "qp.h"
#include "rpt_gate.h"
#include "rpt_html.h"
#include "rpt_table.h"

#define K RPT_GATE_N_RULES

enum { ST_NONE = -1, ST_PASS = RPT_GATE_PASS, ST_FAIL = RPT_GATE_FAIL, ST_SKIP = RPT_GATE_SKIP };

struct tr_run {
    int64_t id;
    char created[40], label[160], model[16], commit[24];
    int judged;          // the gate could evaluate it
    int n_checks, n_fail; // under the rules (0 without)
    char note[QP_ERRLEN]; // why it could not be judged
};

struct rpt_trends {
    const struct rpt_study *s;
    struct tr_run *runs;
    int n_runs;
    char **specs; // union over the runs, in order of first appearance
    int *family;
    int n_specs, cap_specs;
    double *value, *limit;  // [(run * n_specs + spec) * K + rule], NaN when none
    signed char *status;    // ST_*
    int cap_cells;
    int has_rules;
    char rules_path[1024], rules_sha[65], *rules_comment;
    struct rpt_figs figs;
    struct rpt_table csv;
};

// The titles of the metrics, by rule.
static const struct {
    const char *title, *ylabel;
    int log; // a log axis when every value is positive
} tr_rule_text[K] = {
    [RPT_GATE_PPL_INCREASE] = {"ΔPPL % against each run's reference", "ΔPPL %", 0},
    [RPT_GATE_KLD_MEAN] = {"mean KLD(reference || variant)", "mean KLD, nats (log scale)", 1},
    [RPT_GATE_KLD_P99] = {"99th percentile of the per-token KLD", "KLD p99, nats (log scale)", 1},
    [RPT_GATE_TOP1] = {"top-1 agreement with the reference", "top-1 agreement", 0},
    [RPT_GATE_RECOVERY] = {"worst task recovery (accuracy / the reference's)", "recovery", 0},
    [RPT_GATE_FLIPS] = {"task suites with significant answer flips", "suites", 0},
    [RPT_GATE_IDENTICAL] = {"share of prompts continued identically", "identical share", 0},
    [RPT_GATE_LOOP_INC] = {"loop rate minus the reference's", "loop rate increase", 0},
    [RPT_GATE_FIRST_DIV] = {"median first divergence of the continuations", "tokens", 0},
};

// Limits no value can fail: every check is computed, none is judged.
static const char tr_measure_rules[] =
    "{\"defaults\": {\"max_ppl_increase_pct\": 1e300, \"max_kld_mean\": 1e300, \"max_kld_p99\": 1e300,"
    " \"min_top1\": 0, \"min_recovery\": 0, \"max_significant_flips\": 1000000000,"
    " \"min_identical_share\": 0, \"max_loop_rate_increase\": 1, \"min_median_first_divergence\": 0}}";

static size_t tr_cell(const struct rpt_trends *t, int run, int spec, int rule) {
    return ((size_t)run * (size_t)t->n_specs + (size_t)spec) * K + (size_t)rule;
}

// ---------------------------------------------------------------------------------------------
// Collecting

static int tr_find(const struct rpt_trends *t, const char *spec) {
    for (int i = 0; i < t->n_specs; i++)
        if (strcmp(t->specs[i], spec) == 0) return i;
    return -1;
}

// The index of spec, added (with room in the cell arrays) when new; -1 when out of memory.
static int tr_spec(struct rpt_trends *t, const char *spec) {
    int i = tr_find(t, spec);
    if (i >= 0) return i;
    if (t->n_specs == t->cap_specs) {
        int cap = t->cap_specs ? 2 * t->cap_specs : 32;
        char **ns = realloc(t->specs, (size_t)cap * sizeof *ns);
        if (!ns) return -1;
        t->specs = ns;
        int *nf = realloc(t->family, (size_t)cap * sizeof *nf);
        if (!nf) return -1;
        t->family = nf;
        t->cap_specs = cap;
    }
    if (!(t->specs[t->n_specs] = strdup(spec))) return -1;
    t->family[t->n_specs] = rpt_family_of(spec);
    return t->n_specs++;
}

// The cell arrays, n_runs × n_specs × K, all empty: laid out once every spec is known (the first
// gate pass), since the layout depends on n_specs.
static int tr_layout(struct rpt_trends *t) {
    size_t n = (size_t)t->n_runs * (size_t)(t->n_specs ? t->n_specs : 1) * K;
    t->value = malloc(n * sizeof *t->value);
    t->limit = malloc(n * sizeof *t->limit);
    t->status = malloc(n);
    if (!t->value || !t->limit || !t->status) return QP_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        t->value[i] = t->limit[i] = NAN;
        t->status[i] = ST_NONE;
    }
    return 0;
}

static int tr_load_runs(struct rpt_trends *t, char *err) {
    const struct rpt_study *s = t->s;
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(s->db,
                           "SELECT id, created, coalesce(label, ''), coalesce(model_sha256, ''),"
                           " coalesce(qprobe_commit, '') FROM run WHERE id <= ? ORDER BY id",
                           -1, &q, NULL) != SQLITE_OK)
        return qp_fail(err, QP_EIO, "cannot read '%s': %s", s->path, sqlite3_errmsg(s->db));
    sqlite3_bind_int64(q, 1, s->run_id);
    int step, cap = 0, rc = 0;
    while ((step = sqlite3_step(q)) == SQLITE_ROW) {
        if (t->n_runs == cap) {
            cap = cap ? 2 * cap : 16;
            struct tr_run *nr = realloc(t->runs, (size_t)cap * sizeof *nr);
            if (!nr) {
                rc = qp_fail(err, QP_ENOMEM, "out of memory");
                break;
            }
            t->runs = nr;
        }
        struct tr_run *r = &t->runs[t->n_runs++];
        memset(r, 0, sizeof *r);
        r->id = sqlite3_column_int64(q, 0);
        snprintf(r->created, sizeof r->created, "%s", (const char *)sqlite3_column_text(q, 1));
        snprintf(r->label, sizeof r->label, "%s", (const char *)sqlite3_column_text(q, 2));
        snprintf(r->model, sizeof r->model, "%.12s", (const char *)sqlite3_column_text(q, 3));
        snprintf(r->commit, sizeof r->commit, "%.12s", (const char *)sqlite3_column_text(q, 4));
    }
    if (!rc && step != SQLITE_DONE) rc = qp_fail(err, QP_EIO, "cannot read '%s': %s", s->path, sqlite3_errmsg(s->db));
    sqlite3_finalize(q);
    return rc;
}

static int tr_rule_index(const char *key) {
    for (int k = 0; k < K; k++)
        if (strcmp(key, rpt_gate_rule_key((enum rpt_gate_rule)k)) == 0) return k;
    return -1;
}

// Runs the gate over every run under rules; pass 0 registers the specs (and marks which runs
// can be judged), pass 1 stores values (measure) or verdicts (judge).
static int tr_gate_pass(struct rpt_trends *t, const struct rpt_gate_rules *rules, int pass, int judge, char *err) {
    struct rpt_gate_baseline base = {.kind = RPT_GATE_BASE_REFERENCE};
    for (int r = 0; r < t->n_runs; r++) {
        struct tr_run *run = &t->runs[r];
        if (pass == 1 && !run->judged) continue;
        struct rpt_gate_result *res = NULL;
        char msg[QP_ERRLEN];
        int rc = rpt_gate_evaluate(t->s->store, run->id, &base, rules, &res, msg);
        if (rc == QP_ENOENT || rc == QP_EINVAL || rc == QP_EFORMAT) { // this run cannot be judged
            snprintf(run->note, sizeof run->note, "%s", msg);
            continue;
        }
        if (rc) return qp_fail(err, rc, "%s", msg);
        run->judged = 1;
        if (judge) {
            run->n_checks = res->n_checks;
            run->n_fail = res->n_fail;
        }
        for (int c = 0; c < res->n_checks && rc == 0; c++) {
            const struct rpt_gate_check *ch = &res->checks[c];
            int k = tr_rule_index(ch->rule), sp = pass == 0 ? tr_spec(t, ch->spec) : tr_find(t, ch->spec);
            if (sp < 0 && pass == 0) rc = qp_fail(err, QP_ENOMEM, "out of memory");
            if (k < 0 || sp < 0 || pass == 0) continue;
            size_t i = tr_cell(t, r, sp, k);
            if (judge) {
                t->status[i] = (signed char)ch->status;
                t->limit[i] = ch->limit;
            } else {
                t->value[i] = ch->value;
            }
        }
        rpt_gate_result_destroy(res);
        if (rc) return rc;
    }
    return 0;
}

static int tr_collect(struct rpt_trends *t, const char *rules_path, char *err) {
    struct rpt_gate_rules *measure = NULL, *rules = NULL;
    int rc = rpt_gate_rules_parse(tr_measure_rules, strlen(tr_measure_rules), "(measure)", &measure, err);
    if (!rc && rules_path) {
        rc = rpt_gate_rules_load(rules_path, &rules, err);
        if (!rc) {
            t->has_rules = 1;
            snprintf(t->rules_path, sizeof t->rules_path, "%s", rules_path);
            snprintf(t->rules_sha, sizeof t->rules_sha, "%s", rpt_gate_rules_sha256(rules));
            const char *cm = rpt_gate_rules_comment(rules);
            if (cm && !(t->rules_comment = strdup(cm))) rc = qp_fail(err, QP_ENOMEM, "out of memory");
        }
    }
    if (!rc) rc = tr_gate_pass(t, measure, 0, 0, err);
    if (!rc && tr_layout(t)) rc = qp_fail(err, QP_ENOMEM, "out of memory");
    if (!rc) rc = tr_gate_pass(t, measure, 1, 0, err);
    if (!rc && rules) rc = tr_gate_pass(t, rules, 1, 1, err);
    rpt_gate_rules_destroy(measure);
    rpt_gate_rules_destroy(rules);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// When each rule began failing

struct tr_streak {
    int n_judged, n_fail;
    int since;      // failing now: the first run of the trailing run of failures; else -1
    int first_fail; // the first failing run
    int last_fail, recovered; // the last failing run; the first passing run after it (-1: none)
    int latest;     // the last judged run
};

// Over the runs where the rule was judged (PASS or FAIL); a run without the variant, or where
// the rule was skipped, neither breaks nor extends a streak.
static void tr_streak_of(const struct rpt_trends *t, int sp, int k, struct tr_streak *st) {
    memset(st, 0, sizeof *st);
    st->since = st->first_fail = st->last_fail = st->recovered = st->latest = -1;
    for (int r = 0; r < t->n_runs; r++) {
        int s = t->status[tr_cell(t, r, sp, k)];
        if (s != ST_PASS && s != ST_FAIL) continue;
        st->n_judged++;
        st->latest = r;
        if (s == ST_FAIL) {
            st->n_fail++;
            if (st->first_fail < 0) st->first_fail = r;
            if (st->since < 0) st->since = r;
            st->last_fail = r;
            st->recovered = -1;
        } else {
            st->since = -1;
            if (st->last_fail >= 0 && st->recovered < 0) st->recovered = r;
        }
    }
}

static void tr_run_name(const struct tr_run *r, char *out, size_t cap) {
    snprintf(out, cap, "run %lld (%.10s%s%s)", (long long)r->id, r->created, r->label[0] ? ", " : "", r->label);
}

void rpt_trends_findings(const struct rpt_trends *t, void (*add)(void *ctx, const char *line), void *ctx) {
    char line[2048];
    int judged = 0;
    for (int r = 0; r < t->n_runs; r++) judged += t->runs[r].judged;
    if (!t->has_rules) {
        snprintf(line, sizeof line,
                 "History: %d run(s) in the study up to this one (%d with a reference to compare with); the gated "
                 "metrics per variant and run are in `trends.html` (judge them with `--rules`).",
                 t->n_runs, judged);
        add(ctx, line);
        return;
    }
    int failing = 0;
    for (int sp = 0; sp < t->n_specs; sp++)
        for (int k = 0; k < K; k++) {
            struct tr_streak st;
            tr_streak_of(t, sp, k, &st);
            failing += st.since >= 0 && st.since <= st.latest && st.latest == t->n_runs - 1;
        }
    // With one run, when a rule began failing says nothing: the count is enough.
    int list = failing && t->n_runs > 1;
    snprintf(line, sizeof line,
             "History: %d run%s judged by `%s` (SHA-256 %.12s) against %s own reference%s; %d rule%s failing in "
             "this run (`trends.html`)%s",
             judged, judged == 1 ? "" : "s", t->rules_path, t->rules_sha, judged == 1 ? "its" : "their",
             judged == 1 ? "" : "s", failing, failing == 1 ? "" : "s", list ? ":" : ".");
    add(ctx, line);
    if (!list) return;
    int shown = 0;
    for (int sp = 0; sp < t->n_specs; sp++)
        for (int k = 0; k < K; k++) {
            struct tr_streak st;
            tr_streak_of(t, sp, k, &st);
            if (st.since < 0 || st.latest != t->n_runs - 1) continue;
            if (shown++ == 12) {
                add(ctx, "  - ... (the full list in `trends.html`)");
                continue;
            }
            if (shown > 12) continue;
            char since[256];
            tr_run_name(&t->runs[st.since], since, sizeof since);
            snprintf(line, sizeof line, "  - `%s` %s: failing since %s%s", t->specs[sp],
                     rpt_gate_rule_key((enum rpt_gate_rule)k), since, st.since == 0 ? ", the first run" : "");
            add(ctx, line);
        }
}

// ---------------------------------------------------------------------------------------------
// trends.csv

static int tr_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static const char *tr_status_text(int s) {
    return s == ST_PASS ? "PASS" : s == ST_FAIL ? "FAIL" : s == ST_SKIP ? "SKIP" : "";
}

static int tr_write_csv(struct rpt_trends *t, const char *dir, char *err) {
    static const char *const cols[] = {"#run", "created", "label", "model_sha256", "qprobe_commit", "spec", "rule",
                                       "#value", "#limit", "status", NULL};
    struct rpt_table *tb = &t->csv;
    if (rpt_table_init(tb, cols)) return qp_fail(err, QP_ENOMEM, "out of memory");
    for (int r = 0; r < t->n_runs; r++)
        for (int sp = 0; sp < t->n_specs; sp++)
            for (int k = 0; k < K; k++) {
                size_t i = tr_cell(t, r, sp, k);
                if (!isfinite(t->value[i]) && t->status[i] == ST_NONE) continue;
                const struct tr_run *run = &t->runs[r];
                if (rpt_table_row(tb) < 0) return qp_fail(err, QP_ENOMEM, "out of memory");
                rpt_table_num(tb, 0, (double)run->id, "%.0f");
                rpt_table_text(tb, 1, "%s", run->created);
                rpt_table_text(tb, 2, "%s", run->label);
                rpt_table_text(tb, 3, "%s", run->model);
                rpt_table_text(tb, 4, "%s", run->commit);
                rpt_table_text(tb, 5, "%s", t->specs[sp]);
                rpt_table_text(tb, 6, "%s", rpt_gate_rule_key((enum rpt_gate_rule)k));
                rpt_table_num(tb, 7, t->value[i], "%.6g");
                rpt_table_num(tb, 8, t->limit[i], "%.6g");
                rpt_table_text(tb, 9, "%s", tr_status_text(t->status[i]));
            }
    if (tb->oom) return qp_fail(err, QP_ENOMEM, "out of memory");
    FILE *f = rpt_file_open(dir, "trends.csv", err);
    if (!f) return QP_EIO;
    rpt_table_write_csv(tb, f);
    return rpt_file_close(f, dir, "trends.csv", err);
}

// ---------------------------------------------------------------------------------------------
// Figures: one per metric, a line per variant over the runs

static const char *const tr_palette[10] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                           "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};

// s inside a gnuplot double-quoted string, without the quotes.
static void tr_gp_raw(FILE *f, const char *s) {
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fprintf(f, "\\%c", *s);
        else if ((unsigned char)*s < 0x20) fputc(' ', f);
        else fputc(*s, f);
    }
}

// The x tics: each run's id and date, label, model and qprobe commit on four lines (every
// step-th run when there are many).
static void tr_xtics(FILE *f, const struct rpt_trends *t) {
    int step = t->n_runs > 12 ? (t->n_runs + 11) / 12 : 1;
    fprintf(f, "set xtics (");
    int first = 1;
    for (int r = 0; r < t->n_runs; r++) {
        if (r % step && r != t->n_runs - 1) continue;
        const struct tr_run *run = &t->runs[r];
        fprintf(f, "%s\"#%lld %.10s\\n", first ? "" : ", ", (long long)run->id, run->created);
        tr_gp_raw(f, run->label[0] ? run->label : "-");
        fprintf(f, "\\nmodel ");
        tr_gp_raw(f, run->model);
        fprintf(f, "\\nqprobe ");
        tr_gp_raw(f, run->commit);
        fprintf(f, "\" %d", r);
        first = 0;
    }
    fprintf(f, ") font \",9\"\n");
}

// The y axis of rule k: log when the rule asks for it and every value is positive. The range
// leaves out outlying variants (rpt_fit_clip over the variants' medians: a 2-bit variant at
// +30000 % would flatten the rest) and then outlying values; what it leaves out is drawn at the
// edge. *any: values exist.
static void tr_fit(const struct rpt_trends *t, int k, int *logy, double *lo, double *hi, int *any) {
    size_t cap = (size_t)t->n_runs * (size_t)(t->n_specs ? t->n_specs : 1);
    double *v = malloc(cap * sizeof *v), *med = malloc((size_t)(t->n_specs + 1) * sizeof *med);
    int n = 0, n_med = 0, all_pos = 1;
    *any = 0;
    *logy = 0;
    *lo = 0;
    *hi = 1;
    if (!v || !med) {
        free(v);
        free(med);
        return;
    }
    for (int r = 0; r < t->n_runs; r++)
        for (int sp = 0; sp < t->n_specs; sp++) {
            double x = t->value[tr_cell(t, r, sp, k)];
            if (isfinite(x)) all_pos &= x > 0, *any = 1;
        }
    *logy = tr_rule_text[k].log && all_pos;
    // Each variant's median, in axis units (med[sp], NaN when it has no value; sorted copies of
    // the finite ones in v to find the range of the medians).
    for (int sp = 0; sp < t->n_specs; sp++) {
        int m = 0;
        for (int r = 0; r < t->n_runs; r++) {
            double x = t->value[tr_cell(t, r, sp, k)];
            if (isfinite(x)) v[m++] = *logy ? log10(x) : x;
        }
        med[sp] = NAN;
        if (!m) continue;
        qsort(v, (size_t)m, sizeof *v, tr_cmp_double);
        med[sp] = m % 2 ? v[m / 2] : 0.5 * (v[m / 2 - 1] + v[m / 2]);
    }
    for (int sp = 0; sp < t->n_specs; sp++)
        if (isfinite(med[sp])) v[n_med++] = med[sp];
    double mag = 0, mlo = -INFINITY, mhi = INFINITY;
    for (int i = 0; i < n_med; i++) mag = fmax(mag, fabs(v[i]));
    if (n_med) rpt_fit_clip(v, n_med, *logy ? 0.5 : 0.1 * mag, &mlo, &mhi);
    // The values of the variants kept.
    for (int sp = 0; sp < t->n_specs; sp++) {
        if (!(med[sp] >= mlo && med[sp] <= mhi)) continue;
        for (int r = 0; r < t->n_runs; r++) {
            double x = t->value[tr_cell(t, r, sp, k)];
            if (isfinite(x)) v[n++] = *logy ? log10(x) : x;
        }
    }
    mag = 0;
    for (int i = 0; i < n; i++) mag = fmax(mag, fabs(v[i]));
    double a = 0, b = 1;
    if (n) rpt_fit_clip(v, n, *logy ? 0.5 : 0.1 * mag, &a, &b);
    free(v);
    free(med);
    double span = b - a;
    if (!(span > 0)) span = *logy ? 0.2 : fmax(fabs(b) * 0.1, 0.01);
    a -= 0.08 * span;
    b += 0.08 * span;
    *lo = *logy ? pow(10, a) : a;
    *hi = *logy ? pow(10, b) : b;
}

// Writes NAME.dat for rule k: one block per variant with values (blocks[sp] its index, -1 when
// none), values beyond [lo, hi] drawn at the edge.
static int tr_figure_dat(const struct rpt_trends *t, const char *dir, const char *name, const char *title, int k,
                         double lo, double hi, int *blocks, char *err) {
    FILE *f = rpt_dat_open(dir, name, title, err);
    if (!f) return QP_EIO;
    int block = 0;
    for (int sp = 0; sp < t->n_specs; sp++) {
        int rows = 0;
        for (int r = 0; r < t->n_runs; r++) rows += isfinite(t->value[tr_cell(t, r, sp, k)]);
        blocks[sp] = rows ? block : -1;
        if (!rows) continue;
        fprintf(f, "%s# index %d: %s — run_index value_drawn value status (1 FAIL, 0 PASS, 2 SKIP, -1 not judged)\n",
                block ? "\n\n" : "", block, t->specs[sp]);
        for (int r = 0; r < t->n_runs; r++) {
            size_t i = tr_cell(t, r, sp, k);
            if (!isfinite(t->value[i])) continue;
            double y = fmin(fmax(t->value[i], lo), hi); // outliers at the edge
            fprintf(f, "%d", r);
            rpt_dat_num(f, y);
            rpt_dat_num(f, t->value[i]);
            fprintf(f, " %d\n", t->status[i]);
        }
        block++;
    }
    return rpt_dat_close(f, dir, name, err);
}

// Writes NAME.gp for rule k: a line per variant over the runs, failed checks circled in red.
static int tr_figure_plot(const struct rpt_trends *t, const struct rpt_gnuplot *g, const char *dir,
                          const char *name, const char *title, int k, int logy, double lo, double hi,
                          const int *blocks, char *err) {
    FILE *f = rpt_gp_begin(g, dir, name, title, 1100, 600, err);
    if (!f) return QP_EIO;
    fprintf(f, "set title ");
    rpt_gp_str(f, title);
    fprintf(f, "\nset ylabel ");
    rpt_gp_str(f, tr_rule_text[k].ylabel);
    fprintf(f, "\nset xrange [-0.4:%.1f]\nset yrange [%.10g:%.10g]\n%sset bmargin 7\nset rmargin 34\n"
               "set key outside right top vertical Left reverse font \",10\"\n",
            t->n_runs - 0.6, lo, hi, logy ? "set logscale y\nset format y \"%g\"\n" : "");
    tr_xtics(f, t);
    fprintf(f, "plot ");
    int first = 1;
    for (int sp = 0; sp < t->n_specs; sp++) {
        if (blocks[sp] < 0) continue;
        const struct rpt_family *fam = &rpt_families[t->family[sp]];
        fprintf(f, "%s'%s.dat' index %d using 1:2 with linespoints lw 1.5 lc rgb \"%s\" pt %d ps 1 title ",
                first ? "" : ", \\\n     ", name, blocks[sp], tr_palette[sp % 10], fam->pt);
        // A variant drawn at the edge says so in the key.
        int off = 0;
        for (int r = 0; r < t->n_runs; r++) {
            double x = t->value[tr_cell(t, r, sp, k)];
            off |= isfinite(x) && (x > hi || x < lo);
        }
        char title_[600];
        snprintf(title_, sizeof title_, "%s%s", t->specs[sp], off ? " (off the axis)" : "");
        rpt_gp_str(f, title_);
        fprintf(f, ", \\\n     '%s.dat' index %d using 1:($4 == 1 ? $2 : NaN) with points pt 6 ps 2.2 lw 2 "
                   "lc rgb \"#d62728\" notitle", name, blocks[sp]);
        first = 0;
    }
    if (t->has_rules) fprintf(f, ", \\\n     NaN with points pt 6 ps 2.2 lw 2 lc rgb \"#d62728\" title \"fails its rule\"");
    fputc('\n', f);
    return rpt_gp_end(f, dir, name, err);
}

static int tr_figure(struct rpt_trends *t, const struct rpt_gnuplot *g, const char *dir, int k, char *err) {
    int logy, any;
    double lo, hi;
    tr_fit(t, k, &logy, &lo, &hi, &any);
    if (!any) return 0;
    char name[64], title[200];
    snprintf(name, sizeof name, "trend_%s", rpt_gate_rule_key((enum rpt_gate_rule)k));
    snprintf(title, sizeof title, "History: %s", tr_rule_text[k].title);
    int *blocks = calloc((size_t)t->n_specs + 1, sizeof *blocks);
    if (!blocks) return qp_fail(err, QP_ENOMEM, "out of memory");
    int rc = tr_figure_dat(t, dir, name, title, k, lo, hi, blocks, err);
    if (!rc) rc = tr_figure_plot(t, g, dir, name, title, k, logy, lo, hi, blocks, err);
    free(blocks);
    if (rc) return rc;
    char caption[1024];
    snprintf(caption, sizeof caption,
             "%s of every variant in each run of the study, as `qprobe gate --baseline reference` computes it for "
             "that run. The x axis names each run by id and date, label, model SHA-256 and qprobe commit; a line "
             "changes colour by variant, its point shape by method family.%s Values far outside the others are "
             "drawn at the axis' edge; trends.csv has them all.",
             tr_rule_text[k].title, t->has_rules ? " Red circles: the run's value fails the variant's rule." : "");
    if (!rpt_fig_add(&t->figs, name, title, caption)) rpt_fig_skip(&t->figs, "%s: too many figures", name);
    return 0;
}

// ---------------------------------------------------------------------------------------------
// trends.html

static void tr_html_runs(const struct rpt_trends *t, FILE *f) {
    static const char *const cols[] = {"#run", "created", "label", "model|model SHA-256", "commit|qprobe commit",
                                       "checks|failed checks", "note", NULL};
    struct rpt_table tb;
    if (rpt_table_init(&tb, cols)) return;
    for (int r = 0; r < t->n_runs; r++) {
        const struct tr_run *run = &t->runs[r];
        if (rpt_table_row(&tb) < 0) break;
        rpt_table_num(&tb, 0, (double)run->id, "%.0f");
        rpt_table_text(&tb, 1, "%s", run->created);
        rpt_table_text(&tb, 2, "%s", run->label);
        rpt_table_text(&tb, 3, "%s", run->model);
        rpt_table_text(&tb, 4, "%s", run->commit);
        if (t->has_rules && run->judged) rpt_table_text(&tb, 5, "%d of %d", run->n_fail, run->n_checks);
        rpt_table_text(&tb, 6, "%s", run->judged ? "" : run->note);
    }
    rpt_table_write_html(&tb, f, "tbl-runs");
    rpt_table_deinit(&tb);
}

static void tr_html_failures(const struct rpt_trends *t, FILE *f) {
    static const char *const cols[] = {"spec", "rule", "now", "since|failing since / passing again since",
                                       "#failed|runs failed", "#judged|runs judged", "#value_first|value at the first failure",
                                       "#value_now|value now", "#limit|limit now", NULL};
    struct rpt_table tb;
    if (rpt_table_init(&tb, cols)) return;
    for (int sp = 0; sp < t->n_specs; sp++)
        for (int k = 0; k < K; k++) {
            struct tr_streak st;
            tr_streak_of(t, sp, k, &st);
            if (!st.n_fail || rpt_table_row(&tb) < 0) continue;
            char when[300];
            int failing = st.since >= 0;
            tr_run_name(&t->runs[failing ? st.since : st.recovered >= 0 ? st.recovered : st.latest], when, sizeof when);
            rpt_table_text(&tb, 0, "%s", t->specs[sp]);
            rpt_table_text(&tb, 1, "%s", rpt_gate_rule_key((enum rpt_gate_rule)k));
            rpt_table_text(&tb, 2, "%s", failing ? "FAIL" : "PASS");
            rpt_table_text(&tb, 3, "%s%s", failing ? "failing since " : "passing again since ", when);
            rpt_table_num(&tb, 4, st.n_fail, "%.0f");
            rpt_table_num(&tb, 5, st.n_judged, "%.0f");
            rpt_table_num(&tb, 6, t->value[tr_cell(t, failing ? st.since : st.first_fail, sp, k)], "%.6g");
            rpt_table_num(&tb, 7, t->value[tr_cell(t, st.latest, sp, k)], "%.6g");
            rpt_table_num(&tb, 8, t->limit[tr_cell(t, st.latest, sp, k)], "%.6g");
        }
    if (tb.n_rows == 0) fprintf(f, "<p>No rule failed in any run.</p>\n");
    else rpt_table_write_html(&tb, f, "tbl-failures");
    rpt_table_deinit(&tb);
}

int rpt_trends_write_html(const struct rpt_trends *t, const char *dir, char *err) {
    const struct rpt_study *s = t->s;
    FILE *f = rpt_file_open(dir, "trends.html", err);
    if (!f) return QP_EIO;
    fprintf(f, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
               "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>qprobe history — ");
    rpt_html_escape(f, s->path);
    fprintf(f, "</title>\n<style>%s</style>\n</head>\n<body>\n<main>\n<h1>qprobe history — %d runs</h1>\n"
               "<p class=\"sub\">study <code>", rpt_css, t->n_runs);
    rpt_html_escape(f, s->path);
    fprintf(f, "</code>, runs up to %lld</p>\n<nav><a href=\"index.html\">report of run %lld</a>"
               "<a href=\"#runs\">runs</a>%s<a href=\"#figures\">figures</a><a href=\"trends.csv\">trends.csv</a></nav>\n",
            (long long)s->run_id, (long long)s->run_id, t->has_rules ? "<a href=\"#failures\">failures</a>" : "");
    fprintf(f, "<p>Each run is checked against its own unquantized reference, as <code>qprobe gate --baseline "
               "reference</code> does; every number here is the gate's value for that run. ");
    if (t->has_rules) {
        fprintf(f, "Verdicts: the rule set <code>");
        rpt_html_escape(f, t->rules_path);
        fprintf(f, "</code> (SHA-256 <code>%.12s</code>)", t->rules_sha);
        if (t->rules_comment) {
            fputs(": “", f);
            rpt_html_escape(f, t->rules_comment);
            fputs("”", f);
        }
        fputs(", applied to every run.</p>\n", f);
    } else {
        fputs("No rules were given (<code>qprobe report --rules FILE</code>): values only, no verdicts.</p>\n", f);
    }
    fprintf(f, "<h2 id=\"runs\">Runs</h2>\n");
    tr_html_runs(t, f);
    if (t->has_rules) {
        fprintf(f, "<h2 id=\"failures\">When each rule began failing</h2>\n<p class=\"files\">Every (variant, rule) "
                   "that failed in some run: failing now since the first run of its current streak of failures, or "
                   "passing again since the run after its last failure. Runs without the variant, or where the rule "
                   "was skipped, neither break nor extend a streak.</p>\n");
        tr_html_failures(t, f);
    }
    fprintf(f, "<h2 id=\"figures\">Figures</h2>\n");
    rpt_html_figures(f, dir, &t->figs);
    fprintf(f, "<p class=\"files\">Written by qprobe %s.</p>\n</main>\n<script>%s</script>\n</body>\n</html>\n",
            qp_version, rpt_js);
    return rpt_file_close(f, dir, "trends.html", err);
}

// ---------------------------------------------------------------------------------------------
// Lifetime

int rpt_trends_build(const struct rpt_study *s, const char *rules_path, const struct rpt_gnuplot *g,
                     const char *dir, struct rpt_trends **out, char *err) {
    *out = NULL;
    struct rpt_trends *t = calloc(1, sizeof *t);
    if (!t) return qp_fail(err, QP_ENOMEM, "out of memory");
    t->s = s;
    int rc = tr_load_runs(t, err);
    if (!rc) rc = tr_collect(t, rules_path, err);
    if (!rc) rc = tr_write_csv(t, dir, err);
    for (int k = 0; k < K && !rc; k++) rc = tr_figure(t, g, dir, k, err);
    if (rc) {
        rpt_trends_destroy(t);
        return rc;
    }
    *out = t;
    return 0;
}

void rpt_trends_destroy(struct rpt_trends *t) {
    if (!t) return;
    for (int i = 0; i < t->n_specs; i++) free(t->specs[i]);
    free(t->specs);
    free(t->family);
    free(t->runs);
    free(t->value);
    free(t->limit);
    free(t->status);
    free(t->rules_comment);
    rpt_table_deinit(&t->csv);
    free(t);
}

struct rpt_figs *rpt_trends_figs(struct rpt_trends *t) { return &t->figs; }
int rpt_trends_n_runs(const struct rpt_trends *t) { return t->n_runs; }
