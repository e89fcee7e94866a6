// rpt_gate.c — the regression gate (rpt_gate.h, docs/GATE.md): rules parsed and validated with
// cJSON, the study database read with plain SELECTs (never written), checks collected into a
// result, printed as a table and written as JUnit XML.
//
// Depends on kernels/qp.h, harness/store/hx_store.h, SQLite and cJSON. It must not depend on the engine,
// the quantizers or the metrics code: every number it judges is already stored.
#include "rpt_gate.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fnmatch.h>
#include <math.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "qp.h"
#include "qp_sha256.h"
#include "qp_utf8.h"
#include "hx_store.h"

// A rules file is a few hundred bytes; anything near this is not a rules file.
#define RPT_GATE_RULES_MAX_BYTES (1 << 20)

// ---------------------------------------------------------------------------------------------
// Rules: the table of keys

enum rpt_gate_domain {
    RPT_GATE_NONNEG,  // a finite number >= 0
    RPT_GATE_SHARE,   // a number in [0, 1]
    RPT_GATE_INTEGER, // a whole number >= 0
};

static const struct rpt_gate_rule_info {
    const char *key;
    int is_min;   // 1: value >= limit passes; 0: value <= limit passes
    int relative; // needs the baseline's value for the same variant
    enum rpt_gate_domain domain;
} rpt_gate_info[RPT_GATE_N_RULES] = {
    [RPT_GATE_PPL_INCREASE] = {"max_ppl_increase_pct", 0, 1, RPT_GATE_NONNEG},
    [RPT_GATE_KLD_MEAN] = {"max_kld_mean", 0, 0, RPT_GATE_NONNEG},
    [RPT_GATE_KLD_P99] = {"max_kld_p99", 0, 0, RPT_GATE_NONNEG},
    [RPT_GATE_TOP1] = {"min_top1", 1, 0, RPT_GATE_SHARE},
    [RPT_GATE_RECOVERY] = {"min_recovery", 1, 1, RPT_GATE_NONNEG},
    [RPT_GATE_FLIPS] = {"max_significant_flips", 0, 0, RPT_GATE_INTEGER},
    [RPT_GATE_IDENTICAL] = {"min_identical_share", 1, 0, RPT_GATE_SHARE},
    [RPT_GATE_LOOP_INC] = {"max_loop_rate_increase", 0, 0, RPT_GATE_SHARE},
    [RPT_GATE_FIRST_DIV] = {"min_median_first_divergence", 1, 0, RPT_GATE_NONNEG},
};

const char *rpt_gate_rule_key(enum rpt_gate_rule rule) {
    QP_ASSERT((int)rule >= 0 && rule < RPT_GATE_N_RULES);
    return rpt_gate_info[rule].key;
}

static int rpt_gate_rule_find(const char *key) {
    for (int r = 0; r < RPT_GATE_N_RULES; r++)
        if (strcmp(key, rpt_gate_info[r].key) == 0) return r;
    return -1;
}

// One block of limits: defaults (no globs) or a variants[] entry.
struct rpt_gate_entry {
    char **globs; // n_globs malloc'd strings
    int n_globs;
    signed char state[RPT_GATE_N_RULES]; // 0 not mentioned, 1 set to limit[r], -1 lifted (null)
    double limit[RPT_GATE_N_RULES];
};

struct rpt_gate_rules {
    struct rpt_gate_entry defaults;
    struct rpt_gate_entry *entries; // n_entries, in file order
    int n_entries;
    char *comment;    // the top-level "comment", malloc'd; NULL when none
    char sha256[65];  // of the document's bytes: names the rule set a run was judged by
};

static void rpt_gate_entry_deinit(struct rpt_gate_entry *e) {
    for (int i = 0; i < e->n_globs; i++) free(e->globs[i]);
    free(e->globs);
}

void rpt_gate_rules_destroy(struct rpt_gate_rules *rules) {
    if (!rules) return;
    rpt_gate_entry_deinit(&rules->defaults);
    for (int i = 0; i < rules->n_entries; i++) rpt_gate_entry_deinit(&rules->entries[i]);
    free(rules->entries);
    free(rules->comment);
    free(rules);
}

const char *rpt_gate_rules_comment(const struct rpt_gate_rules *rules) { return rules->comment; }
const char *rpt_gate_rules_sha256(const struct rpt_gate_rules *rules) { return rules->sha256; }

// ---------------------------------------------------------------------------------------------
// Rules: parsing and validation

// A JSON key as it may appear in a one-line message: at most 40 bytes, control bytes as '?'.
static void rpt_gate_key_clean(const char *key, char out[48]) {
    size_t i = 0;
    for (; key[i] && i < 40; i++) {
        unsigned char ch = (unsigned char)key[i];
        out[i] = ch < 0x20 || ch == 0x7f ? '?' : (char)ch;
    }
    out[i] = 0;
    if (key[i]) strcpy(out + i, "...");
}

// "cannot use rules 'NAME': PATH: MESSAGE" as QP_EFORMAT.
static int rpt_gate_rules_fail(char *err, const char *name, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int rpt_gate_rules_fail(char *err, const char *name, const char *path, const char *fmt, ...) {
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return qp_fail(err, QP_EFORMAT, "cannot use rules '%s': %s: %s", name, path, msg);
}

static const char *rpt_gate_domain_text(enum rpt_gate_domain d) {
    switch (d) {
    case RPT_GATE_NONNEG: return "must be a non-negative number";
    case RPT_GATE_SHARE: return "must be a number between 0 and 1";
    case RPT_GATE_INTEGER: return "must be a non-negative integer";
    }
    return "?";
}

static int rpt_gate_parse_limit(const cJSON *item, int rule, const char *path, const char *name,
                                struct rpt_gate_entry *e, char *err) {
    if (cJSON_IsNull(item)) {
        e->state[rule] = -1;
        return 0;
    }
    enum rpt_gate_domain d = rpt_gate_info[rule].domain;
    double v = cJSON_IsNumber(item) ? item->valuedouble : NAN;
    int ok = isfinite(v) && v >= 0;
    if (ok && d == RPT_GATE_SHARE) ok = v <= 1;
    if (ok && d == RPT_GATE_INTEGER) ok = v == floor(v) && v <= 1e9;
    if (!ok) return rpt_gate_rules_fail(err, name, path, "%s", rpt_gate_domain_text(d));
    e->state[rule] = 1;
    e->limit[rule] = v;
    return 0;
}

static int rpt_gate_add_glob(struct rpt_gate_entry *e, const char *glob, char *err) {
    char **g = realloc(e->globs, (size_t)(e->n_globs + 1) * sizeof *g);
    if (!g) return qp_fail(err, QP_ENOMEM, "out of memory");
    e->globs = g;
    if (!(g[e->n_globs] = strdup(glob))) return qp_fail(err, QP_ENOMEM, "out of memory");
    e->n_globs++;
    return 0;
}

static int rpt_gate_parse_match(const cJSON *item, const char *path, const char *name,
                                struct rpt_gate_entry *e, char *err) {
    static const char *const what = "must be a glob on the spec (a non-empty string) or an array of globs";
    if (cJSON_IsString(item)) {
        if (!item->valuestring[0]) return rpt_gate_rules_fail(err, name, path, "%s", what);
        return rpt_gate_add_glob(e, item->valuestring, err);
    }
    if (!cJSON_IsArray(item) || !item->child) return rpt_gate_rules_fail(err, name, path, "%s", what);
    int i = 0;
    for (const cJSON *g = item->child; g; g = g->next, i++) {
        if (!cJSON_IsString(g) || !g->valuestring[0]) {
            char p[192];
            snprintf(p, sizeof p, "%s[%d]", path, i);
            return rpt_gate_rules_fail(err, name, p, "must be a non-empty string (a glob on the spec)");
        }
        int rc = rpt_gate_add_glob(e, g->valuestring, err);
        if (rc) return rc;
    }
    return 0;
}

// One object of limits at prefix ("defaults", "variants[3]"); variant entries also take "match".
static int rpt_gate_parse_entry(const cJSON *obj, const char *prefix, int is_variant, const char *name,
                                struct rpt_gate_entry *e, char *err) {
    if (!cJSON_IsObject(obj)) return rpt_gate_rules_fail(err, name, prefix, "must be an object");
    int has_match = 0, rc;
    for (const cJSON *it = obj->child; it; it = it->next) {
        char key[48], path[160];
        rpt_gate_key_clean(it->string ? it->string : "", key);
        snprintf(path, sizeof path, "%s.%s", prefix, key);
        for (const cJSON *prev = obj->child; prev != it; prev = prev->next)
            if (prev->string && it->string && strcmp(prev->string, it->string) == 0)
                return rpt_gate_rules_fail(err, name, path, "duplicate key");
        const char *k = it->string ? it->string : "";
        int rule = rpt_gate_rule_find(k);
        if (strcmp(k, "comment") == 0) {
            if (!cJSON_IsString(it)) return rpt_gate_rules_fail(err, name, path, "must be a string");
        } else if (is_variant && strcmp(k, "match") == 0) {
            if ((rc = rpt_gate_parse_match(it, path, name, e, err))) return rc;
            has_match = 1;
        } else if (rule >= 0) {
            if ((rc = rpt_gate_parse_limit(it, rule, path, name, e, err))) return rc;
        } else {
            return rpt_gate_rules_fail(err, name, path,
                                       "unknown key (expected %scomment, max_ppl_increase_pct, max_kld_mean, "
                                       "max_kld_p99, min_top1, min_recovery, max_significant_flips)",
                                       is_variant ? "match, " : "");
        }
    }
    if (is_variant && !has_match) {
        char path[160];
        snprintf(path, sizeof path, "%s.match", prefix);
        return rpt_gate_rules_fail(err, name, path, "missing (each entry needs a glob on the spec)");
    }
    return 0;
}

static int rpt_gate_rules_build(const cJSON *root, const char *name, struct rpt_gate_rules *r, char *err) {
    if (!cJSON_IsObject(root)) return rpt_gate_rules_fail(err, name, "(top level)", "must be an object");
    int rc;
    for (const cJSON *it = root->child; it; it = it->next) {
        char key[48];
        rpt_gate_key_clean(it->string ? it->string : "", key);
        for (const cJSON *prev = root->child; prev != it; prev = prev->next)
            if (prev->string && it->string && strcmp(prev->string, it->string) == 0)
                return rpt_gate_rules_fail(err, name, key, "duplicate key");
        const char *k = it->string ? it->string : "";
        if (strcmp(k, "comment") == 0) {
            if (!cJSON_IsString(it)) return rpt_gate_rules_fail(err, name, key, "must be a string");
            if (!(r->comment = strdup(it->valuestring))) return qp_fail(err, QP_ENOMEM, "out of memory");
        } else if (strcmp(k, "defaults") == 0) {
            if ((rc = rpt_gate_parse_entry(it, "defaults", 0, name, &r->defaults, err))) return rc;
        } else if (strcmp(k, "variants") == 0) {
            if (!cJSON_IsArray(it))
                return rpt_gate_rules_fail(err, name, "variants", "must be an array of {\"match\": GLOB, limits...}");
            int n = cJSON_GetArraySize(it);
            if (n > 0 && !(r->entries = calloc((size_t)n, sizeof *r->entries)))
                return qp_fail(err, QP_ENOMEM, "out of memory");
            for (const cJSON *v = it->child; v; v = v->next) {
                char prefix[48];
                snprintf(prefix, sizeof prefix, "variants[%d]", r->n_entries);
                rc = rpt_gate_parse_entry(v, prefix, 1, name, &r->entries[r->n_entries++], err);
                if (rc) return rc;
            }
        } else {
            return rpt_gate_rules_fail(err, name, key, "unknown key (expected comment, defaults, variants)");
        }
    }
    // A rules file that limits nothing would pass every nightly run: refuse it.
    int any = 0;
    for (int k = 0; k < RPT_GATE_N_RULES; k++) any |= r->defaults.state[k] == 1;
    for (int i = 0; i < r->n_entries; i++)
        for (int k = 0; k < RPT_GATE_N_RULES; k++) any |= r->entries[i].state[k] == 1;
    if (!any)
        return rpt_gate_rules_fail(err, name, "(top level)",
                                   "no limit is set (give some under \"defaults\" or \"variants\")");
    return 0;
}

static int rpt_gate_is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

int rpt_gate_rules_parse(const char *text, size_t len, const char *name, struct rpt_gate_rules **out,
                         char *err) {
    *out = NULL;
    size_t first = 0;
    while (first < len && rpt_gate_is_space(text[first])) first++;
    if (first == len) return qp_fail(err, QP_EFORMAT, "cannot use rules '%s': the file is empty", name);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    size_t stop = end && end >= text && end <= text + len ? (size_t)(end - text) : len;
    if (root) { // cJSON stops after the first value: anything but whitespace after it is an error
        while (stop < len && rpt_gate_is_space(text[stop])) stop++;
        if (stop < len) {
            cJSON_Delete(root);
            root = NULL;
        }
    }
    if (!root) {
        int line = 1, col = 1;
        for (size_t i = 0; i < stop; i++) {
            if (text[i] == '\n') line++, col = 1;
            else col++;
        }
        return qp_fail(err, QP_EFORMAT, "cannot use rules '%s': not valid JSON at line %d, column %d",
                       name, line, col);
    }
    struct rpt_gate_rules *r = calloc(1, sizeof *r);
    if (!r) {
        cJSON_Delete(root);
        return qp_fail(err, QP_ENOMEM, "out of memory");
    }
    qp_sha256_hex(text, len, r->sha256);
    int rc = rpt_gate_rules_build(root, name, r, err);
    cJSON_Delete(root);
    if (rc) {
        rpt_gate_rules_destroy(r);
        return rc;
    }
    *out = r;
    return 0;
}

int rpt_gate_rules_load(const char *path, struct rpt_gate_rules **out, char *err) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return qp_fail(err, QP_EIO, "cannot read rules '%s': %s", path, strerror(errno));
    char *buf = malloc(RPT_GATE_RULES_MAX_BYTES + 1);
    if (!buf) {
        fclose(f);
        return qp_fail(err, QP_ENOMEM, "out of memory");
    }
    size_t n = fread(buf, 1, RPT_GATE_RULES_MAX_BYTES + 1, f);
    int bad = ferror(f), e = errno;
    fclose(f);
    int rc;
    if (bad) rc = qp_fail(err, QP_EIO, "cannot read rules '%s': %s", path, strerror(e));
    else if (n > RPT_GATE_RULES_MAX_BYTES)
        rc = qp_fail(err, QP_EFORMAT, "cannot use rules '%s': larger than %d bytes", path, RPT_GATE_RULES_MAX_BYTES);
    else rc = rpt_gate_rules_parse(buf, n, path, out, err);
    free(buf);
    return rc;
}

static void rpt_gate_apply(const struct rpt_gate_entry *e, struct rpt_gate_limits *out) {
    for (int k = 0; k < RPT_GATE_N_RULES; k++) {
        if (e->state[k] == 1) {
            out->set[k] = 1;
            out->limit[k] = e->limit[k];
        } else if (e->state[k] == -1) {
            out->set[k] = 0;
            out->limit[k] = NAN;
        }
    }
}

void rpt_gate_rules_for(const struct rpt_gate_rules *rules, const char *spec, struct rpt_gate_limits *out) {
    for (int k = 0; k < RPT_GATE_N_RULES; k++) {
        out->set[k] = 0;
        out->limit[k] = NAN;
    }
    rpt_gate_apply(&rules->defaults, out);
    for (int i = 0; i < rules->n_entries; i++) {
        const struct rpt_gate_entry *e = &rules->entries[i];
        for (int g = 0; g < e->n_globs; g++) {
            if (fnmatch(e->globs[g], spec, 0) == 0) {
                rpt_gate_apply(e, out);
                break;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Baseline argument

int rpt_gate_baseline_parse(const char *arg, struct rpt_gate_baseline *out, char *err) {
    memset(out, 0, sizeof *out);
    if (!arg || !*arg)
        return qp_fail(err, QP_EINVAL, "empty baseline: expected 'reference', 'previous', a run id or a database file");
    if (strcmp(arg, "reference") == 0) {
        out->kind = RPT_GATE_BASE_REFERENCE;
        return 0;
    }
    if (strcmp(arg, "previous") == 0) {
        out->kind = RPT_GATE_BASE_PREVIOUS;
        return 0;
    }
    size_t n = strspn(arg, "0123456789");
    if (arg[n] == 0) {
        errno = 0;
        long long id = strtoll(arg, NULL, 10);
        if (errno || id <= 0) return qp_fail(err, QP_EINVAL, "baseline run id '%s' is out of range", arg);
        out->kind = RPT_GATE_BASE_RUN;
        out->run_id = id;
        return 0;
    }
    out->kind = RPT_GATE_BASE_FILE;
    out->path = arg;
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Reading a study

struct rpt_gate_variant {
    int64_t id;
    char *spec; // malloc'd
    int is_ref;
};

// One run of one database: its variants in sweep order.
struct rpt_gate_run {
    sqlite3 *db;      // borrowed
    const char *path; // borrowed, for messages
    int64_t id;
    struct rpt_gate_variant *v; // n of them
    int n;
    int ref; // index of the reference variant, -1 when the run has none
};

static int rpt_gate_sql_fail(char *err, sqlite3 *db, const char *path) {
    return qp_fail(err, QP_EIO, "cannot read '%s': %s", path, sqlite3_errmsg(db));
}

static void rpt_gate_run_deinit(struct rpt_gate_run *r) {
    for (int i = 0; i < r->n; i++) free(r->v[i].spec);
    free(r->v);
    r->v = NULL;
    r->n = 0;
}

static int rpt_gate_run_load(sqlite3 *db, const char *path, int64_t id, struct rpt_gate_run *r, char *err) {
    memset(r, 0, sizeof *r);
    r->db = db;
    r->path = path;
    r->id = id;
    r->ref = -1;
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(db, "SELECT id, spec, is_reference FROM variant WHERE run_id = ? ORDER BY ord, id",
                           -1, &s, NULL) != SQLITE_OK)
        return rpt_gate_sql_fail(err, db, path);
    sqlite3_bind_int64(s, 1, id);
    int step, cap = 0, rc = 0;
    while ((step = sqlite3_step(s)) == SQLITE_ROW) {
        if (r->n == cap) {
            cap = cap ? 2 * cap : 16;
            struct rpt_gate_variant *nv = realloc(r->v, (size_t)cap * sizeof *nv);
            if (!nv) {
                rc = qp_fail(err, QP_ENOMEM, "out of memory");
                break;
            }
            r->v = nv;
        }
        const unsigned char *spec = sqlite3_column_text(s, 1);
        struct rpt_gate_variant *v = &r->v[r->n];
        v->id = sqlite3_column_int64(s, 0);
        v->is_ref = sqlite3_column_int(s, 2) != 0;
        if (!(v->spec = strdup(spec ? (const char *)spec : ""))) {
            rc = qp_fail(err, QP_ENOMEM, "out of memory");
            break;
        }
        if (v->is_ref && r->ref < 0) r->ref = r->n;
        r->n++;
    }
    if (!rc && step != SQLITE_DONE) rc = rpt_gate_sql_fail(err, db, path);
    sqlite3_finalize(s);
    if (rc) rpt_gate_run_deinit(r);
    return rc;
}

// Index of the non-reference variant with this spec, or -1.
static int rpt_gate_run_find(const struct rpt_gate_run *r, const char *spec) {
    for (int i = 0; i < r->n; i++)
        if (!r->v[i].is_ref && strcmp(r->v[i].spec, spec) == 0) return i;
    return -1;
}

// One query whose first row's first column is an integer: 1 and *out when there is a non-NULL
// value, 0 when not, < 0 on error. The optional parameter is bound as text (t) or int64 (i).
static int rpt_gate_query_i64(sqlite3 *db, const char *path, const char *sql, const char *t, int64_t i,
                              int64_t *out, char *err) {
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK) return rpt_gate_sql_fail(err, db, path);
    if (sqlite3_bind_parameter_count(s) == 1) {
        if (t) sqlite3_bind_text(s, 1, t, -1, SQLITE_TRANSIENT);
        else sqlite3_bind_int64(s, 1, i);
    }
    int step = sqlite3_step(s), rc = 0;
    if (step == SQLITE_ROW && sqlite3_column_type(s, 0) != SQLITE_NULL) {
        *out = sqlite3_column_int64(s, 0);
        rc = 1;
    } else if (step != SQLITE_ROW && step != SQLITE_DONE) {
        rc = rpt_gate_sql_fail(err, db, path);
    }
    sqlite3_finalize(s);
    return rc;
}

// The model_sha256 of a run (malloc'd into *out; NULL when the run has none). 0 or < 0.
static int rpt_gate_run_model(sqlite3 *db, const char *path, int64_t id, char **out, char *err) {
    *out = NULL;
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(db, "SELECT model_sha256 FROM run WHERE id = ?", -1, &s, NULL) != SQLITE_OK)
        return rpt_gate_sql_fail(err, db, path);
    sqlite3_bind_int64(s, 1, id);
    int step = sqlite3_step(s), rc = 0;
    if (step == SQLITE_ROW) {
        const unsigned char *t = sqlite3_column_text(s, 0);
        if (t && !(*out = strdup((const char *)t))) rc = qp_fail(err, QP_ENOMEM, "out of memory");
    } else if (step != SQLITE_DONE) {
        rc = rpt_gate_sql_fail(err, db, path);
    }
    sqlite3_finalize(s);
    return rc;
}

// A stored metric: 1 and *out when the row exists with a non-NULL value (NaN is stored as NULL),
// 0 when not, < 0 on error.
static int rpt_gate_metric(const struct rpt_gate_run *r, int64_t vid, const char *suite, const char *name,
                           double *out, char *err) {
    *out = NAN;
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(r->db, "SELECT value FROM metric WHERE variant_id = ? AND suite = ? AND name = ?",
                           -1, &s, NULL) != SQLITE_OK)
        return rpt_gate_sql_fail(err, r->db, r->path);
    sqlite3_bind_int64(s, 1, vid);
    sqlite3_bind_text(s, 2, suite, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, name, -1, SQLITE_STATIC);
    int step = sqlite3_step(s), rc = 0;
    if (step == SQLITE_ROW && sqlite3_column_type(s, 0) != SQLITE_NULL) {
        *out = sqlite3_column_double(s, 0);
        rc = isfinite(*out) ? 1 : 0;
    } else if (step != SQLITE_ROW && step != SQLITE_DONE) {
        rc = rpt_gate_sql_fail(err, r->db, r->path);
    }
    sqlite3_finalize(s);
    return rc;
}

// The task metrics of one variant: one row per suite 'task:NAME' with acc and/or mcnemar_p.
struct rpt_gate_task {
    char *suite;     // malloc'd, "task:NAME"
    double acc, p;   // NaN when not stored
};

struct rpt_gate_tasks {
    struct rpt_gate_task *t; // n of them, ordered by suite
    int n;
};

static void rpt_gate_tasks_deinit(struct rpt_gate_tasks *ts) {
    for (int i = 0; i < ts->n; i++) free(ts->t[i].suite);
    free(ts->t);
    ts->t = NULL;
    ts->n = 0;
}

static int rpt_gate_tasks_load(const struct rpt_gate_run *r, int64_t vid, struct rpt_gate_tasks *ts, char *err) {
    memset(ts, 0, sizeof *ts);
    sqlite3_stmt *s = NULL;
    // substr, not LIKE: LIKE is case-insensitive and '_' is a wildcard in it.
    if (sqlite3_prepare_v2(r->db,
                           "SELECT suite, name, value FROM metric WHERE variant_id = ? AND substr(suite, 1, 5) = 'task:'"
                           " AND name IN ('acc', 'mcnemar_p') ORDER BY suite, name",
                           -1, &s, NULL) != SQLITE_OK)
        return rpt_gate_sql_fail(err, r->db, r->path);
    sqlite3_bind_int64(s, 1, vid);
    int step, cap = 0, rc = 0;
    while ((step = sqlite3_step(s)) == SQLITE_ROW) {
        const char *suite = (const char *)sqlite3_column_text(s, 0);
        const char *name = (const char *)sqlite3_column_text(s, 1);
        double v = sqlite3_column_type(s, 2) == SQLITE_NULL ? NAN : sqlite3_column_double(s, 2);
        if (!suite || !name) continue;
        if (ts->n == 0 || strcmp(ts->t[ts->n - 1].suite, suite) != 0) {
            if (ts->n == cap) {
                cap = cap ? 2 * cap : 8;
                struct rpt_gate_task *nt = realloc(ts->t, (size_t)cap * sizeof *nt);
                if (!nt) {
                    rc = qp_fail(err, QP_ENOMEM, "out of memory");
                    break;
                }
                ts->t = nt;
            }
            struct rpt_gate_task *t = &ts->t[ts->n];
            t->acc = t->p = NAN;
            if (!(t->suite = strdup(suite))) {
                rc = qp_fail(err, QP_ENOMEM, "out of memory");
                break;
            }
            ts->n++;
        }
        struct rpt_gate_task *t = &ts->t[ts->n - 1];
        if (strcmp(name, "acc") == 0) t->acc = v;
        else t->p = v;
    }
    if (!rc && step != SQLITE_DONE && step != SQLITE_ROW) rc = rpt_gate_sql_fail(err, r->db, r->path);
    sqlite3_finalize(s);
    if (rc) rpt_gate_tasks_deinit(ts);
    return rc;
}

static const struct rpt_gate_task *rpt_gate_tasks_find(const struct rpt_gate_tasks *ts, const char *suite) {
    for (int i = 0; i < ts->n; i++)
        if (strcmp(ts->t[i].suite, suite) == 0) return &ts->t[i];
    return NULL;
}

// ---------------------------------------------------------------------------------------------
// Collecting checks

void rpt_gate_result_destroy(struct rpt_gate_result *res) {
    if (!res) return;
    for (int i = 0; i < res->n_checks; i++) free(res->checks[i].spec);
    free(res->checks);
    for (int i = 0; i < res->n_notes; i++) free(res->notes[i]);
    free(res->notes);
    free(res);
}

static int rpt_gate_add(struct rpt_gate_result *res, const char *spec, const char *rule, enum rpt_gate_status st,
                        double value, double limit, char *err, const char *fmt, ...)
    __attribute__((format(printf, 8, 9)));
static int rpt_gate_add(struct rpt_gate_result *res, const char *spec, const char *rule, enum rpt_gate_status st,
                        double value, double limit, char *err, const char *fmt, ...) {
    struct rpt_gate_check *c = realloc(res->checks, (size_t)(res->n_checks + 1) * sizeof *c);
    if (!c) return qp_fail(err, QP_ENOMEM, "out of memory");
    res->checks = c;
    c = &c[res->n_checks];
    memset(c, 0, sizeof *c);
    if (!(c->spec = strdup(spec))) return qp_fail(err, QP_ENOMEM, "out of memory");
    c->rule = rule;
    c->status = st;
    c->value = value;
    c->limit = limit;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->detail, sizeof c->detail, fmt, ap);
    va_end(ap);
    res->n_checks++;
    if (st == RPT_GATE_PASS) res->n_pass++;
    else if (st == RPT_GATE_FAIL) res->n_fail++;
    else res->n_skip++;
    return 0;
}

static int rpt_gate_note(struct rpt_gate_result *res, char *err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int rpt_gate_note(struct rpt_gate_result *res, char *err, const char *fmt, ...) {
    char buf[1400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    char **n = realloc(res->notes, (size_t)(res->n_notes + 1) * sizeof *n);
    if (!n) return qp_fail(err, QP_ENOMEM, "out of memory");
    res->notes = n;
    if (!(n[res->n_notes] = strdup(buf))) return qp_fail(err, QP_ENOMEM, "out of memory");
    res->n_notes++;
    return 0;
}

static int rpt_gate_passes(int rule, double value, double limit) {
    return rpt_gate_info[rule].is_min ? value >= limit : value <= limit;
}

// Everything one evaluation needs.
struct rpt_gate_ctx {
    const struct rpt_gate_baseline *base;
    struct rpt_gate_run *cur;
    struct rpt_gate_run *brun;     // the baseline run (the current run for the reference)
    struct rpt_gate_tasks ref_tasks; // task metrics of the current run's reference
    struct rpt_gate_result *res;
    char *err;
};

// A rule on one stored metric of the variant: kld/mean, kld/p99, top1/agreement.
static int rpt_gate_check_metric(struct rpt_gate_ctx *g, const struct rpt_gate_variant *v, int rule, double limit,
                                 const char *suite, const char *name) {
    double x;
    int rc = rpt_gate_metric(g->cur, v->id, suite, name, &x, g->err);
    if (rc < 0) return rc;
    const char *key = rpt_gate_info[rule].key;
    if (rc == 0)
        return rpt_gate_add(g->res, v->spec, key, RPT_GATE_FAIL, NAN, limit, g->err, "no %s/%s stored for the variant",
                            suite, name);
    if (rpt_gate_passes(rule, x, limit))
        return rpt_gate_add(g->res, v->spec, key, RPT_GATE_PASS, x, limit, g->err, "%s", "");
    return rpt_gate_add(g->res, v->spec, key, RPT_GATE_FAIL, x, limit, g->err, "%s/%s %.6g %s limit %.6g", suite, name,
                        x, rpt_gate_info[rule].is_min ? "<" : ">", limit);
}

static int rpt_gate_check_ppl(struct rpt_gate_ctx *g, const struct rpt_gate_variant *v,
                              const struct rpt_gate_variant *b, double limit) {
    const char *key = rpt_gate_info[RPT_GATE_PPL_INCREASE].key;
    if (!b) return rpt_gate_add(g->res, v->spec, key, RPT_GATE_SKIP, NAN, limit, g->err, "new, no baseline");
    double c, p;
    int rc = rpt_gate_metric(g->cur, v->id, "ppl", "ppl", &c, g->err);
    if (rc < 0) return rc;
    if (rc == 0) return rpt_gate_add(g->res, v->spec, key, RPT_GATE_FAIL, NAN, limit, g->err, "no ppl/ppl stored for the variant");
    if ((rc = rpt_gate_metric(g->brun, b->id, "ppl", "ppl", &p, g->err)) < 0) return rc;
    if (rc == 0 || !(p > 0))
        return rpt_gate_add(g->res, v->spec, key, RPT_GATE_FAIL, NAN, limit, g->err,
                            "no ppl/ppl stored for the baseline '%s'", b->spec);
    double d = 100.0 * (c - p) / p;
    int pass = rpt_gate_passes(RPT_GATE_PPL_INCREASE, d, limit);
    return rpt_gate_add(g->res, v->spec, key, pass ? RPT_GATE_PASS : RPT_GATE_FAIL, d, limit, g->err,
                        "ppl %.6g vs %s %.6g: %+.2f%%%s", c,
                        g->base->kind == RPT_GATE_BASE_REFERENCE ? "reference" : "baseline", p, d,
                        pass ? "" : " exceeds the limit");
}

// min_recovery: for each task suite stored for both, acc / baseline acc; the worst one counts.
static int rpt_gate_check_recovery(struct rpt_gate_ctx *g, const struct rpt_gate_variant *v,
                                   const struct rpt_gate_variant *b, double limit) {
    const char *key = rpt_gate_info[RPT_GATE_RECOVERY].key;
    struct rpt_gate_tasks tv, tb = {0};
    int rc = rpt_gate_tasks_load(g->cur, v->id, &tv, g->err);
    if (rc) return rc;
    int n_acc = 0;
    for (int i = 0; i < tv.n; i++) n_acc += isfinite(tv.t[i].acc);
    if (n_acc == 0) {
        rc = rpt_gate_add(g->res, v->spec, key, RPT_GATE_SKIP, NAN, limit, g->err, "no task metrics");
    } else if (!b) {
        rc = rpt_gate_add(g->res, v->spec, key, RPT_GATE_SKIP, NAN, limit, g->err, "new, no baseline");
    } else if (!(rc = rpt_gate_tasks_load(g->brun, b->id, &tb, g->err))) {
        double worst = INFINITY, worst_acc = NAN, worst_base = NAN;
        const char *worst_suite = NULL;
        int n = 0;
        for (int i = 0; i < tv.n; i++) {
            const struct rpt_gate_task *t = &tv.t[i], *bt = rpt_gate_tasks_find(&tb, t->suite);
            // A suite the baseline lacks, or where it scored 0, has no ratio.
            if (!isfinite(t->acc) || !bt || !(bt->acc > 0)) continue;
            double ratio = t->acc / bt->acc;
            n++;
            if (ratio < worst) worst = ratio, worst_suite = t->suite, worst_acc = t->acc, worst_base = bt->acc;
        }
        if (n == 0) {
            rc = rpt_gate_add(g->res, v->spec, key, RPT_GATE_SKIP, NAN, limit, g->err,
                              "no task suite with an acc in both the variant and the baseline");
        } else {
            int pass = rpt_gate_passes(RPT_GATE_RECOVERY, worst, limit);
            rc = rpt_gate_add(g->res, v->spec, key, pass ? RPT_GATE_PASS : RPT_GATE_FAIL, worst, limit, g->err,
                              "worst of %d suite%s: %s acc %.6g vs baseline %.6g%s", n, n == 1 ? "" : "s",
                              worst_suite, worst_acc, worst_base, pass ? "" : ", below the limit");
        }
    }
    rpt_gate_tasks_deinit(&tv);
    rpt_gate_tasks_deinit(&tb);
    return rc;
}

// max_significant_flips: the stored McNemar p pairs the variant with the reference of its own run,
// so "acc dropping" is judged against that reference's acc of the same suite.
static int rpt_gate_check_flips(struct rpt_gate_ctx *g, const struct rpt_gate_variant *v, double limit) {
    const char *key = rpt_gate_info[RPT_GATE_FLIPS].key;
    struct rpt_gate_tasks tv;
    int rc = rpt_gate_tasks_load(g->cur, v->id, &tv, g->err);
    if (rc) return rc;
    int n_p = 0, judged = 0, flips = 0;
    char which[160] = "";
    for (int i = 0; i < tv.n; i++) {
        const struct rpt_gate_task *t = &tv.t[i];
        if (!isfinite(t->p)) continue;
        n_p++;
        const struct rpt_gate_task *r = rpt_gate_tasks_find(&g->ref_tasks, t->suite);
        if (!isfinite(t->acc) || !r || !isfinite(r->acc)) continue;
        judged++;
        if (t->p < RPT_GATE_FLIP_ALPHA && t->acc < r->acc) {
            flips++;
            size_t len = strlen(which);
            snprintf(which + len, sizeof which - len, "%s%s (p %.3g)", flips > 1 ? ", " : "", t->suite, t->p);
        }
    }
    if (n_p == 0)
        rc = rpt_gate_add(g->res, v->spec, key, RPT_GATE_SKIP, NAN, limit, g->err, "no task metrics");
    else if (judged == 0)
        rc = rpt_gate_add(g->res, v->spec, key, RPT_GATE_SKIP, NAN, limit, g->err,
                          "no task acc of the run's reference to compare with");
    else if (rpt_gate_passes(RPT_GATE_FLIPS, flips, limit))
        rc = rpt_gate_add(g->res, v->spec, key, RPT_GATE_PASS, flips, limit, g->err, "%s%s", flips ? "" : "none of ",
                          flips ? which : "the task suites");
    else
        rc = rpt_gate_add(g->res, v->spec, key, RPT_GATE_FAIL, flips, limit, g->err, "%d of %d suites: %s", flips, judged,
                          which);
    rpt_gate_tasks_deinit(&tv);
    return rc;
}

// A generation rule: metric gen/NAME of the variant; skipped when the variant has no generation
// metrics (generation is optional, as tasks are).
static int rpt_gate_check_gen(struct rpt_gate_ctx *g, const struct rpt_gate_variant *v, int rule, double limit,
                              const char *name) {
    const char *key = rpt_gate_info[rule].key;
    double x, n;
    int rc = rpt_gate_metric(g->cur, v->id, "gen", "prompts", &n, g->err);
    if (rc < 0) return rc;
    if (rc == 0) return rpt_gate_add(g->res, v->spec, key, RPT_GATE_SKIP, NAN, limit, g->err, "no generation metrics");
    if ((rc = rpt_gate_metric(g->cur, v->id, "gen", name, &x, g->err)) < 0) return rc;
    if (rc == 0)
        return rpt_gate_add(g->res, v->spec, key, RPT_GATE_FAIL, NAN, limit, g->err, "no gen/%s stored for the variant",
                            name);
    int pass = rpt_gate_passes(rule, x, limit);
    return rpt_gate_add(g->res, v->spec, key, pass ? RPT_GATE_PASS : RPT_GATE_FAIL, x, limit, g->err,
                        "gen/%s %.6g%s, %.0f prompts", name, x,
                        pass ? "" : rpt_gate_info[rule].is_min ? " < limit" : " > limit", n);
}

int rpt_gate_silent(const struct rpt_gate_check *checks, int n, char *what, size_t cap) {
    int tf = 0, tf_fail = 0, bad = 0;
    size_t len = 0;
    what[0] = 0;
    for (int i = 0; i < n; i++) {
        const struct rpt_gate_check *c = &checks[i];
        int r = rpt_gate_rule_find(c->rule);
        if (r == RPT_GATE_PPL_INCREASE || r == RPT_GATE_KLD_MEAN) {
            tf += c->status == RPT_GATE_PASS;
            tf_fail += c->status == RPT_GATE_FAIL;
        } else if ((r == RPT_GATE_IDENTICAL || r == RPT_GATE_LOOP_INC || r == RPT_GATE_FIRST_DIV || r == RPT_GATE_FLIPS) &&
                   c->status == RPT_GATE_FAIL) {
            int w = snprintf(what + len, cap - len, "%s%s", bad++ ? ", " : "", c->rule);
            len = QP_MIN(cap - 1, len + (size_t)(w > 0 ? w : 0));
        }
    }
    return tf > 0 && tf_fail == 0 && bad > 0;
}

static int rpt_gate_check_variant(struct rpt_gate_ctx *g, const struct rpt_gate_variant *v,
                                  const struct rpt_gate_rules *rules) {
    struct rpt_gate_limits lim;
    rpt_gate_rules_for(rules, v->spec, &lim);
    const struct rpt_gate_variant *b = NULL;
    if (g->base->kind == RPT_GATE_BASE_REFERENCE) {
        b = &g->cur->v[g->cur->ref];
    } else {
        int j = rpt_gate_run_find(g->brun, v->spec);
        b = j >= 0 ? &g->brun->v[j] : NULL;
    }
    int any = 0, rc = 0, before = g->res->n_fail, first = g->res->n_checks;
    for (int k = 0; k < RPT_GATE_N_RULES; k++) any |= lim.set[k];
    if (!any) return rpt_gate_note(g->res, g->err, "%s: no limit applies", v->spec);
    if (!b && (rc = rpt_gate_note(g->res, g->err, "%s: new, no baseline: checked against absolute rules only", v->spec)))
        return rc;
    for (int k = 0; k < RPT_GATE_N_RULES && !rc; k++) {
        if (!lim.set[k]) continue;
        double l = lim.limit[k];
        switch ((enum rpt_gate_rule)k) {
        case RPT_GATE_PPL_INCREASE: rc = rpt_gate_check_ppl(g, v, b, l); break;
        case RPT_GATE_KLD_MEAN: rc = rpt_gate_check_metric(g, v, k, l, "kld", "mean"); break;
        case RPT_GATE_KLD_P99: rc = rpt_gate_check_metric(g, v, k, l, "kld", "p99"); break;
        case RPT_GATE_TOP1: rc = rpt_gate_check_metric(g, v, k, l, "top1", "agreement"); break;
        case RPT_GATE_RECOVERY: rc = rpt_gate_check_recovery(g, v, b, l); break;
        case RPT_GATE_FLIPS: rc = rpt_gate_check_flips(g, v, l); break;
        case RPT_GATE_IDENTICAL: rc = rpt_gate_check_gen(g, v, k, l, "identical_share"); break;
        case RPT_GATE_LOOP_INC: rc = rpt_gate_check_gen(g, v, k, l, "loop_rate_increase"); break;
        case RPT_GATE_FIRST_DIV: rc = rpt_gate_check_gen(g, v, k, l, "median_first_div"); break;
        case RPT_GATE_N_RULES: QP_ASSERT(!"bad rule"); break;
        }
    }
    char what[200];
    if (!rc && rpt_gate_silent(g->res->checks + first, g->res->n_checks - first, what, sizeof what))
        rc = rpt_gate_note(g->res, g->err,
                           "%s: silent degradation: perplexity and KLD pass their limits, but %s fail%s "
                           "(docs/GENERATION.md)", v->spec, what, strchr(what, ',') ? "" : "s");
    g->res->n_variants++;
    if (g->res->n_fail > before) g->res->n_variants_fail++;
    return rc;
}

// ---------------------------------------------------------------------------------------------
// Evaluation

// The same file (device and inode), so that a baseline database that is the study is noticed.
static int rpt_gate_same_file(const char *a, const char *b) {
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

static int rpt_gate_resolve(struct rpt_gate_ctx *g, struct hx_store *st, int64_t run_id, struct hx_store **other,
                            struct rpt_gate_run *brun) {
    sqlite3 *db = hx_store_db(st);
    const char *path = hx_store_path(st);
    char *err = g->err;
    struct rpt_gate_result *res = g->res;
    int64_t id = 0;
    int rc;
    if (run_id <= 0) {
        if ((rc = rpt_gate_query_i64(db, path, "SELECT max(id) FROM run", NULL, 0, &id, err)) < 0) return rc;
        if (rc == 0) return qp_fail(err, QP_ENOENT, "'%s' holds no runs", path);
    } else {
        if ((rc = rpt_gate_query_i64(db, path, "SELECT id FROM run WHERE id = ?", NULL, run_id, &id, err)) < 0) return rc;
        if (rc == 0) return qp_fail(err, QP_ENOENT, "no run %lld in '%s'", (long long)run_id, path);
    }
    if ((rc = rpt_gate_run_load(db, path, id, g->cur, err))) return rc;
    res->run_id = id;
    snprintf(res->current, sizeof res->current, "run %lld of '%s'", (long long)id, path);

    const struct rpt_gate_baseline *b = g->base;
    if (b->kind == RPT_GATE_BASE_REFERENCE) {
        if (g->cur->ref < 0)
            return qp_fail(err, QP_ENOENT, "run %lld of '%s' has no reference variant (is_reference = 1): no baseline",
                           (long long)id, path);
        g->brun = g->cur;
        res->base_run_id = id;
        snprintf(res->baseline, sizeof res->baseline, "the reference of run %lld", (long long)id);
        return 0;
    }
    if (b->kind == RPT_GATE_BASE_RUN || b->kind == RPT_GATE_BASE_PREVIOUS) {
        int64_t bid;
        if (b->kind == RPT_GATE_BASE_PREVIOUS) {
            rc = rpt_gate_query_i64(db, path, "SELECT max(id) FROM run WHERE id < ?", NULL, id, &bid, err);
            if (rc == 0)
                return qp_fail(err, QP_ENOENT, "run %lld is the first run of '%s': no previous run to compare with",
                               (long long)id, path);
        } else {
            rc = rpt_gate_query_i64(db, path, "SELECT id FROM run WHERE id = ?", NULL, b->run_id, &bid, err);
            if (rc == 0) return qp_fail(err, QP_ENOENT, "no baseline run %lld in '%s'", (long long)b->run_id, path);
        }
        if (rc < 0) return rc;
        if (bid == id) return qp_fail(err, QP_EINVAL, "the baseline run %lld is the current run", (long long)bid);
        if ((rc = rpt_gate_run_load(db, path, bid, brun, err))) return rc;
        g->brun = brun;
        res->base_run_id = bid;
        snprintf(res->baseline, sizeof res->baseline, "%srun %lld",
                 b->kind == RPT_GATE_BASE_PREVIOUS ? "the previous " : "", (long long)bid);
        return 0;
    }
    // Another database: its latest run of the same model.
    char *model = NULL;
    if ((rc = rpt_gate_run_model(db, path, id, &model, err))) return rc;
    if (!model) return qp_fail(err, QP_EFORMAT, "run %lld of '%s' has no model_sha256", (long long)id, path);
    char msg[QP_ERRLEN];
    if ((rc = hx_store_open(b->path, HX_STORE_READONLY, other, msg))) {
        free(model);
        return qp_fail(err, rc, "baseline: %s", msg);
    }
    sqlite3 *bdb = hx_store_db(*other);
    int64_t bid;
    rc = rpt_gate_query_i64(bdb, b->path, "SELECT max(id) FROM run WHERE model_sha256 = ?", model, 0, &bid, err);
    if (rc == 0)
        rc = qp_fail(err, QP_ENOENT, "baseline '%s' has no run of the current run's model (sha256 %.12s...)", b->path,
                     model);
    free(model);
    if (rc < 0) return rc;
    if (bid == id && rpt_gate_same_file(b->path, path))
        return qp_fail(err, QP_EINVAL, "the baseline '%s' resolves to the current run %lld", b->path, (long long)bid);
    if ((rc = rpt_gate_run_load(bdb, b->path, bid, brun, err))) return rc;
    g->brun = brun;
    res->base_run_id = bid;
    snprintf(res->baseline, sizeof res->baseline, "run %lld of '%s'", (long long)bid, b->path);
    return 0;
}

int rpt_gate_evaluate(struct hx_store *st, int64_t run_id, const struct rpt_gate_baseline *base,
                      const struct rpt_gate_rules *rules, struct rpt_gate_result **out, char *err) {
    *out = NULL;
    struct rpt_gate_result *res = calloc(1, sizeof *res);
    if (!res) return qp_fail(err, QP_ENOMEM, "out of memory");
    struct rpt_gate_run cur = {0}, brun = {0};
    struct hx_store *other = NULL;
    struct rpt_gate_ctx g = {.base = base, .cur = &cur, .res = res, .err = err};
    int rc = rpt_gate_resolve(&g, st, run_id, &other, &brun);
    int n_checked = 0;
    if (!rc && cur.ref >= 0) rc = rpt_gate_tasks_load(&cur, cur.v[cur.ref].id, &g.ref_tasks, err);
    for (int i = 0; i < cur.n && !rc; i++) {
        if (cur.v[i].is_ref) continue;
        n_checked++;
        rc = rpt_gate_check_variant(&g, &cur.v[i], rules);
    }
    if (!rc && n_checked == 0)
        rc = qp_fail(err, QP_ENOENT, "%s has no variants to check (only a reference)", res->current);
    // A variant of the baseline run that the current run lacks is a failure of its own.
    if (base->kind != RPT_GATE_BASE_REFERENCE) {
        for (int j = 0; j < brun.n && !rc; j++) {
            if (brun.v[j].is_ref || rpt_gate_run_find(&cur, brun.v[j].spec) >= 0) continue;
            rc = rpt_gate_add(res, brun.v[j].spec, "variant_present", RPT_GATE_FAIL, NAN, NAN, err,
                              "variant disappeared: in the baseline %s, not in run %lld", res->baseline,
                              (long long)res->run_id);
            res->n_variants_fail++;
        }
    }
    rpt_gate_tasks_deinit(&g.ref_tasks);
    rpt_gate_run_deinit(&cur);
    rpt_gate_run_deinit(&brun);
    hx_store_close(other);
    if (rc) {
        rpt_gate_result_destroy(res);
        return rc;
    }
    *out = res;
    return 0;
}

// ---------------------------------------------------------------------------------------------
// The table

static const char *rpt_gate_status_text(enum rpt_gate_status s) {
    return s == RPT_GATE_PASS ? "PASS" : s == RPT_GATE_FAIL ? "FAIL" : "SKIP";
}

static void rpt_gate_num(char *buf, size_t n, double v) {
    if (isnan(v)) snprintf(buf, n, "-");
    else snprintf(buf, n, "%.6g", v);
}

// s for a terminal: control bytes (a newline in a spec would break the table) become '?'.
static const char *rpt_gate_clean(const char *s, char *out, size_t n) {
    size_t i = 0;
    for (; s[i] && i + 1 < n; i++) out[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
    out[i] = 0;
    return out;
}

void rpt_gate_print(FILE *f, const struct rpt_gate_result *res) {
    char spec[1024], text[1400];
    int w = 7;
    for (int i = 0; i < res->n_checks; i++) {
        int len = (int)strlen(res->checks[i].spec);
        if (len > w) w = len;
    }
    if (w > 40) w = 40; // longer specs (file: paths) push their row's columns right
    fprintf(f, "gate: %s", rpt_gate_clean(res->current, text, sizeof text));
    fprintf(f, " against %s\n\n", rpt_gate_clean(res->baseline, text, sizeof text));
    fprintf(f, "%-*s  %-22s %12s %12s  %-6s %s\n", w, "variant", "rule", "value", "limit", "result", "detail");
    for (int i = 0; i < res->n_checks; i++) {
        const struct rpt_gate_check *c = &res->checks[i];
        char v[32], l[32];
        rpt_gate_num(v, sizeof v, c->value);
        rpt_gate_num(l, sizeof l, c->limit);
        rpt_gate_clean(c->spec, spec, sizeof spec);
        rpt_gate_clean(c->detail, text, sizeof text);
        if (c->detail[0])
            fprintf(f, "%-*s  %-22s %12s %12s  %-6s %s\n", w, spec, c->rule, v, l, rpt_gate_status_text(c->status),
                    text);
        else
            fprintf(f, "%-*s  %-22s %12s %12s  %s\n", w, spec, c->rule, v, l, rpt_gate_status_text(c->status));
    }
    if (res->n_notes) fputc('\n', f);
    for (int i = 0; i < res->n_notes; i++) fprintf(f, "note: %s\n", rpt_gate_clean(res->notes[i], text, sizeof text));
    fputc('\n', f);
    if (res->n_fail)
        fprintf(f, "gate: FAIL: %d of %d checks failed (%d variant%s), %d passed, %d skipped\n", res->n_fail,
                res->n_checks, res->n_variants_fail, res->n_variants_fail == 1 ? "" : "s", res->n_pass, res->n_skip);
    else
        fprintf(f, "gate: PASS: %d checks passed, %d skipped (%d variant%s)\n", res->n_pass, res->n_skip,
                res->n_variants, res->n_variants == 1 ? "" : "s");
}

// ---------------------------------------------------------------------------------------------
// JUnit XML

// Length of the valid UTF-8 sequence at s that XML 1.0 allows (U+FFFE and U+FFFF are not XML
// characters), or 0. s is NUL-terminated: continuation bytes are never 0, so at most 4 are read.
static int rpt_gate_utf8_len(const unsigned char *s) {
    uint32_t cp = 0;
    size_t n = qp_utf8_seq(s, strnlen((const char *)s, 4), &cp);
    return cp == 0xfffe || cp == 0xffff ? 0 : (int)n;
}

// s escaped for an attribute value or element text.
static void rpt_gate_xml(FILE *f, const char *str) {
    const unsigned char *s = (const unsigned char *)str;
    while (*s) {
        unsigned char c = *s;
        switch (c) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&apos;", f); break;
        case '\n': fputs("&#10;", f); break;
        case '\r': fputs("&#13;", f); break;
        case '\t': fputs("&#9;", f); break;
        default:
            if (c < 0x80) {
                fputc(c < 0x20 || c == 0x7f ? '?' : c, f);
            } else {
                int n = rpt_gate_utf8_len(s); // reads at most up to the NUL: continuation bytes are never 0
                if (n == 0) {
                    fputc('?', f);
                } else {
                    fwrite(s, 1, (size_t)n, f);
                    s += n - 1;
                }
            }
        }
        s++;
    }
}

static void rpt_gate_junit_body(FILE *f, const struct rpt_gate_result *res) {
    fputs("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n", f);
    fprintf(f, "<testsuite name=\"qprobe-gate\" tests=\"%d\" failures=\"%d\" errors=\"0\" skipped=\"%d\">\n",
            res->n_checks, res->n_fail, res->n_skip);
    fputs("  <properties>\n    <property name=\"run\" value=\"", f);
    rpt_gate_xml(f, res->current);
    fputs("\"/>\n    <property name=\"baseline\" value=\"", f);
    rpt_gate_xml(f, res->baseline);
    fputs("\"/>\n  </properties>\n", f);
    for (int i = 0; i < res->n_checks; i++) {
        const struct rpt_gate_check *c = &res->checks[i];
        fputs("  <testcase classname=\"", f);
        rpt_gate_xml(f, c->spec);
        fputs("\" name=\"", f);
        rpt_gate_xml(f, c->rule);
        if (c->status == RPT_GATE_PASS) {
            fputs("\"/>\n", f);
            continue;
        }
        fputs("\">\n", f);
        if (c->status == RPT_GATE_SKIP) {
            fputs("    <skipped message=\"", f);
            rpt_gate_xml(f, c->detail);
            fputs("\"/>\n", f);
        } else {
            char v[32], l[32];
            rpt_gate_num(v, sizeof v, c->value);
            rpt_gate_num(l, sizeof l, c->limit);
            fputs("    <failure type=\"regression\" message=\"", f);
            rpt_gate_xml(f, c->rule);
            fputs(": ", f);
            rpt_gate_xml(f, c->detail);
            fputs("\">", f);
            if (!isnan(c->value) || !isnan(c->limit)) fprintf(f, "value %s, limit %s: ", v, l);
            rpt_gate_xml(f, c->detail);
            fputs("</failure>\n", f);
        }
        fputs("  </testcase>\n", f);
    }
    if (res->n_notes) {
        fputs("  <system-out>", f);
        for (int i = 0; i < res->n_notes; i++) {
            rpt_gate_xml(f, res->notes[i]);
            fputs("&#10;", f);
        }
        fputs("</system-out>\n", f);
    }
    fputs("</testsuite>\n", f);
}

int rpt_gate_write_junit(const char *path, const struct rpt_gate_result *res, char *err) {
    size_t n = strlen(path) + 32;
    char *tmp = malloc(n);
    if (!tmp) return qp_fail(err, QP_ENOMEM, "out of memory");
    snprintf(tmp, n, "%s.tmp-%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) {
        int rc = qp_fail(err, QP_EIO, "cannot write '%s': %s", tmp, strerror(errno));
        free(tmp);
        return rc;
    }
    rpt_gate_junit_body(f, res);
    int bad = fflush(f) != 0 || ferror(f) || fsync(fileno(f)) != 0;
    int e = errno;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path) != 0) {
        if (!bad) e = errno;
        unlink(tmp);
        int rc = qp_fail(err, QP_EIO, "cannot write '%s': %s", path, strerror(e));
        free(tmp);
        return rc;
    }
    free(tmp);
    return 0;
}
