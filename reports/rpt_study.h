// rpt_study.h — one run of a study database, read for reporting: the run's protocol and
// provenance, its variants with every metric, the task suites present, and small helpers the
// report's tables and plots share (metric lookup, Pareto frontier, choosing variants).
//
// Reads only; the database is opened read-only through harness/store/hx_store.h. Detail tables
// (layer_error, histogram, grid_stat, ...) are queried by the report modules themselves through
// rpt_study.db. Depends on harness/store/hx_store.h, SQLite, kernels/qp.h and libc.
#ifndef RPT_STUDY_H
#define RPT_STUDY_H

#include <stddef.h>
#include <stdint.h>

struct sqlite3;
struct hx_store;

struct rpt_metric {
    char *suite, *name; // owned
    double value;       // NaN when NULL
    double se;          // standard error (one sigma); NaN when NULL
    int64_t n;          // -1 when NULL
};

struct rpt_variant {
    int64_t id;
    char *spec; // owned
    int ord, is_reference;
    double bpw;                     // bits per weight; NaN when not stored (the reference)
    int64_t weight_bytes, n_weights; // -1 when NULL
    double quant_seconds, eval_seconds, tokens_per_second; // NaN when NULL
    int64_t tokens;
    struct rpt_metric *metrics; // (n_metrics) owned, sorted by (suite, name)
    int n_metrics;
    char gate[8]; // "PASS", "FAIL" or "" (no gate result for this spec)
    char *weights_sha256; // owned; NULL when not stored (databases before schema version 2)
    int same_as;          // index in the study's v of the first variant with the same
                          //   weights_sha256 (the same model); its own index when none
    int n_same;           // variants of the run that share that digest (1: unique)
    // Requested vs stored type of each 2-D weight (rpt_fallback_load, from grid_stat): n_tensors
    // with a stored format (0: none stored, or a variant whose request is unknown: file:, the
    // reference), n_asked of them as the spec asks; fell: what the others became, most frequent
    // first, e.g. "q4_k→q5_0 ×29, q6_k→q8_0 ×3" ("" when none).
    int n_tensors, n_asked;
    char fell[256];
};

// A (name, value) pair of the run row, for the protocol and provenance tables.
struct rpt_field {
    char *name, *value; // owned; value "" for NULL
};

struct rpt_study {
    struct hx_store *store;   // owned; read-only
    struct sqlite3 *db;       // the store's handle
    const char *path;         // the database path (the store's copy)
    int64_t run_id;
    int n_runs;               // runs in the database
    int n_layers;             // from the run row (0 when unknown)
    struct rpt_field *run;    // (n_run) every column of the run row, in schema order; owned
    int n_run;
    struct rpt_variant *v;    // (n_v) variants of the run in (ord, id) order; owned
    int n_v;
    int ref;                  // index of the reference variant in v, or -1
    char **tasks;             // (n_tasks) task suite names present, without 'task:'; owned
    int n_tasks;
};

// Opens path read-only and loads run run_id (0: the latest, i.e. the highest id). Errors, all
// with a one-line message naming the file: QP_EIO / QP_EFORMAT / QP_ENOTSUP (not a readable
// qprobe study, from hx_store_open), QP_ENOENT (no such run, or no run at all). Close with
// rpt_study_close (also after a failed open: *s is then NULL).
int rpt_study_open(const char *path, int64_t run_id, struct rpt_study **out, char *err);
void rpt_study_close(struct rpt_study *s);

// The value of metric (suite, name) of v, NaN when absent; *se (may be NULL) gets its standard
// error (NaN when none).
double rpt_metric_get(const struct rpt_variant *v, const char *suite, const char *name, double *se);
// The run field's value ("" when there is no such column).
const char *rpt_run_field(const struct rpt_study *s, const char *name);
// The reference's perplexity: its own ppl row, else the first variant's ppl/ppl_ref. NaN if none.
double rpt_ref_ppl(const struct rpt_study *s);

// Reads a gate result (the JUnit XML `qprobe gate --junit` writes: one <testcase classname=SPEC>
// per variant and rule, <failure> on a failed rule) and marks each variant PASS or FAIL. A spec
// the file does not name keeps "". 0, or QP_EIO / QP_EFORMAT with a message naming the file.
int rpt_study_read_gate(struct rpt_study *s, const char *path, char *err);

// The method family of a spec, for the figures' colours and legends: its index into
// rpt_families (llama.cpp types, RTN, NF4/FP4, GPTQ, AWQ, SmoothQuant/W8A8, QAT, float, other).
struct rpt_family {
    const char *name;  // legend text
    const char *color; // "#rrggbb"
    int pt;            // gnuplot point type
};
enum { RPT_N_FAMILIES = 9 };
extern const struct rpt_family rpt_families[RPT_N_FAMILIES];
int rpt_family_of(const char *spec);

// Appends printf text to buf (capacity cap) at *len, and moves *len past it; text that does not
// fit is cut, buf stays NUL-terminated (*len stops at cap - 1). *len < cap on entry.
void rpt_catf(char *buf, size_t cap, size_t *len, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

// The names of variant i's group of identical variants (same_as), "q2_k = q3_k = iq4_nl" in
// run order; just its spec when unique. Always NUL-terminated.
void rpt_group_label(const struct rpt_study *s, int i, const char *sep, char *out, size_t cap);

// Fills n_tensors, n_asked and fell of every variant from the run's grid_stat formats and the
// spec (quantizers/qz_spec.h): a tensor falls back when its stored format differs from the type
// the spec asks for it (after rules, keep= and a llama.cpp mix's per-tensor choice). 0 or
// QP_EIO / QP_ENOMEM with err.
int rpt_fallback_load(struct rpt_study *s, char *err);

// Pareto frontier over n points (x[i], y[i]): on[i] = 1 when no other point has x <= x[i] and a
// y at least as good, one of them strictly better. Points with a non-finite x or y are never on
// it. lower_better: 1 when lower y is better (perplexity, KLD), 0 when higher (agreement).
void rpt_pareto(const double *x, const double *y, int n, int lower_better, int *on);

// Parses a comma-separated list of specs against the run's variants. Specs may themselves hold
// commas (keep=embed,output), so the longest stored spec that matches at each position wins.
// Writes the indexes into v (at most max of them) to idx and their count to *n. QP_ENOENT with a
// message when a part names no variant of the run.
int rpt_parse_variants(const struct rpt_study *s, const char *list, int *idx, int max, int *n,
                       char *err);

#endif
