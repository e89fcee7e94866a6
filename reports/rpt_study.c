// rpt_study.c — loading one run of a study for the report (rpt_study.h).
#include "rpt_study.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "qp.h"
#include "hx_store.h"

// ---------------------------------------------------------------------------------------------
// Helpers

static double rpt_col_double(sqlite3_stmt *q, int i) {
    return sqlite3_column_type(q, i) == SQLITE_NULL ? NAN : sqlite3_column_double(q, i);
}

static int64_t rpt_col_i64(sqlite3_stmt *q, int i) {
    return sqlite3_column_type(q, i) == SQLITE_NULL ? -1 : sqlite3_column_int64(q, i);
}

static char *rpt_col_strdup(sqlite3_stmt *q, int i) {
    const unsigned char *t = sqlite3_column_text(q, i);
    return strdup(t ? (const char *)t : "");
}

static int rpt_db_fail(const struct rpt_study *s, char *err) {
    return qp_fail(err, QP_EIO, "cannot read '%s': %s", s->path, sqlite3_errmsg(s->db));
}

static int rpt_metric_cmp(const void *a, const void *b) {
    const struct rpt_metric *x = a, *y = b;
    int c = strcmp(x->suite, y->suite);
    return c ? c : strcmp(x->name, y->name);
}

// ---------------------------------------------------------------------------------------------
// Loading

static int rpt_load_run(struct rpt_study *s, int64_t run_id, char *err) {
    sqlite3_stmt *q = NULL;
    int rc = 0;
    int64_t n_runs = 0, latest = 0;
    if (sqlite3_prepare_v2(s->db, "SELECT count(*), coalesce(max(id), 0) FROM run", -1, &q, NULL) != SQLITE_OK)
        return rpt_db_fail(s, err);
    if (sqlite3_step(q) == SQLITE_ROW) {
        n_runs = sqlite3_column_int64(q, 0);
        latest = sqlite3_column_int64(q, 1);
    }
    sqlite3_finalize(q);
    s->n_runs = (int)n_runs;
    if (n_runs == 0) return qp_fail(err, QP_ENOENT, "cannot report '%s': the study has no run yet", s->path);
    s->run_id = run_id > 0 ? run_id : latest;

    if (sqlite3_prepare_v2(s->db, "SELECT * FROM run WHERE id = ?", -1, &q, NULL) != SQLITE_OK)
        return rpt_db_fail(s, err);
    sqlite3_bind_int64(q, 1, s->run_id);
    int step = sqlite3_step(q);
    if (step == SQLITE_ROW) {
        int n = sqlite3_column_count(q);
        s->run = calloc((size_t)n, sizeof *s->run);
        if (!s->run) rc = qp_fail(err, QP_ENOMEM, "out of memory");
        for (int i = 0; !rc && i < n; i++) {
            s->run[i].name = strdup(sqlite3_column_name(q, i));
            s->run[i].value = rpt_col_strdup(q, i);
            s->n_run++;
            if (!s->run[i].name || !s->run[i].value) rc = qp_fail(err, QP_ENOMEM, "out of memory");
            if (!rc && strcmp(s->run[i].name, "n_layers") == 0) s->n_layers = sqlite3_column_int(q, i);
        }
    } else if (step == SQLITE_DONE) {
        if (n_runs == 1)
            rc = qp_fail(err, QP_ENOENT, "cannot report '%s': no run %lld (its only run is %lld)", s->path,
                         (long long)s->run_id, (long long)latest);
        else
            rc = qp_fail(err, QP_ENOENT, "cannot report '%s': no run %lld (it has %lld runs, the latest %lld)",
                         s->path, (long long)s->run_id, (long long)n_runs, (long long)latest);
    } else {
        rc = rpt_db_fail(s, err);
    }
    sqlite3_finalize(q);
    return rc;
}

// Variants with equal weights digests are one model under several names: each points at the
// first of them (same_as), and all of them know how many they are (n_same).
static void rpt_group_same(struct rpt_study *s) {
    for (int i = 0; i < s->n_v; i++) {
        struct rpt_variant *v = &s->v[i];
        if (!v->weights_sha256) continue;
        for (int j = 0; j < i; j++)
            if (s->v[j].weights_sha256 && strcmp(s->v[j].weights_sha256, v->weights_sha256) == 0) {
                v->same_as = s->v[j].same_as;
                break;
            }
    }
    for (int i = 0; i < s->n_v; i++) {
        int n = 0;
        for (int j = 0; j < s->n_v; j++) n += s->v[j].same_as == s->v[i].same_as;
        s->v[i].n_same = n;
    }
}

// Appends the variant of result row q (rpt_load_variants' columns) to s->v, which has room.
static int rpt_variant_read(struct rpt_study *s, sqlite3_stmt *q, char *err) {
    int rc = 0;
    struct rpt_variant *v = &s->v[s->n_v];
    memset(v, 0, sizeof *v);
    v->id = sqlite3_column_int64(q, 0);
    v->spec = rpt_col_strdup(q, 1);
    s->n_v++;
    if (!v->spec) rc = qp_fail(err, QP_ENOMEM, "out of memory");
    v->ord = sqlite3_column_int(q, 2);
    v->is_reference = sqlite3_column_int(q, 3);
    v->bpw = rpt_col_double(q, 4);
    v->weight_bytes = rpt_col_i64(q, 5);
    v->n_weights = rpt_col_i64(q, 6);
    v->quant_seconds = rpt_col_double(q, 7);
    v->eval_seconds = rpt_col_double(q, 8);
    v->tokens = rpt_col_i64(q, 9);
    v->tokens_per_second = rpt_col_double(q, 10);
    v->same_as = s->n_v - 1;
    v->n_same = 1;
    if (sqlite3_column_type(q, 11) != SQLITE_NULL && !(v->weights_sha256 = rpt_col_strdup(q, 11)))
        rc = qp_fail(err, QP_ENOMEM, "out of memory");
    if (v->is_reference && s->ref < 0) s->ref = s->n_v - 1;
    return rc;
}

// Every metric of every variant, each variant's sorted by (suite, name).
static int rpt_load_metrics(struct rpt_study *s, char *err) {
    sqlite3_stmt *q = NULL;
    int rc = 0, step = SQLITE_DONE;
    if (sqlite3_prepare_v2(s->db, "SELECT suite, name, value, stderr, n FROM metric WHERE variant_id = ?",
                           -1, &q, NULL) != SQLITE_OK)
        return rpt_db_fail(s, err);
    for (int i = 0; !rc && i < s->n_v; i++) {
        struct rpt_variant *v = &s->v[i];
        sqlite3_reset(q);
        sqlite3_bind_int64(q, 1, v->id);
        int mcap = 0;
        while (!rc && (step = sqlite3_step(q)) == SQLITE_ROW) {
            if (v->n_metrics == mcap) {
                mcap = mcap ? 2 * mcap : 64;
                struct rpt_metric *nm = realloc(v->metrics, (size_t)mcap * sizeof *nm);
                if (!nm) {
                    rc = qp_fail(err, QP_ENOMEM, "out of memory");
                    break;
                }
                v->metrics = nm;
            }
            struct rpt_metric *m = &v->metrics[v->n_metrics++];
            m->suite = rpt_col_strdup(q, 0);
            m->name = rpt_col_strdup(q, 1);
            m->value = rpt_col_double(q, 2);
            m->se = rpt_col_double(q, 3);
            m->n = rpt_col_i64(q, 4);
            if (!m->suite || !m->name) rc = qp_fail(err, QP_ENOMEM, "out of memory");
        }
        if (!rc && step != SQLITE_DONE) rc = rpt_db_fail(s, err);
        if (!rc && v->n_metrics > 1) qsort(v->metrics, (size_t)v->n_metrics, sizeof *v->metrics, rpt_metric_cmp);
    }
    sqlite3_finalize(q);
    return rc;
}

static int rpt_load_variants(struct rpt_study *s, char *err) {
    sqlite3_stmt *q = NULL;
    int rc = 0;
    if (sqlite3_prepare_v2(s->db,
                           "SELECT id, spec, ord, is_reference, bits_per_weight, weight_bytes, n_weights,"
                           " quant_seconds, eval_seconds, tokens, tokens_per_second, weights_sha256"
                           " FROM variant WHERE run_id = ? ORDER BY is_reference DESC, ord, id",
                           -1, &q, NULL) != SQLITE_OK)
        return rpt_db_fail(s, err);
    sqlite3_bind_int64(q, 1, s->run_id);
    int step, cap = 0;
    s->ref = -1;
    while (!rc && (step = sqlite3_step(q)) == SQLITE_ROW) {
        if (s->n_v == cap) {
            cap = cap ? 2 * cap : 16;
            struct rpt_variant *nv = realloc(s->v, (size_t)cap * sizeof *nv);
            if (!nv) {
                rc = qp_fail(err, QP_ENOMEM, "out of memory");
                break;
            }
            s->v = nv;
        }
        rc = rpt_variant_read(s, q, err);
    }
    if (!rc && step != SQLITE_DONE) rc = rpt_db_fail(s, err);
    sqlite3_finalize(q);
    if (rc) return rc;
    rpt_group_same(s);
    return rpt_load_metrics(s, err);
}

static int rpt_load_tasks(struct rpt_study *s, char *err) {
    sqlite3_stmt *q = NULL;
    int rc = 0, step, cap = 0;
    if (sqlite3_prepare_v2(s->db,
                           "SELECT DISTINCT substr(m.suite, 6) FROM metric m JOIN variant v ON v.id = m.variant_id"
                           " WHERE v.run_id = ? AND m.suite LIKE 'task:%' ORDER BY 1",
                           -1, &q, NULL) != SQLITE_OK)
        return rpt_db_fail(s, err);
    sqlite3_bind_int64(q, 1, s->run_id);
    while (!rc && (step = sqlite3_step(q)) == SQLITE_ROW) {
        if (s->n_tasks == cap) {
            cap = cap ? 2 * cap : 8;
            char **nt = realloc(s->tasks, (size_t)cap * sizeof *nt);
            if (!nt) {
                rc = qp_fail(err, QP_ENOMEM, "out of memory");
                break;
            }
            s->tasks = nt;
        }
        if (!(s->tasks[s->n_tasks] = rpt_col_strdup(q, 0))) rc = qp_fail(err, QP_ENOMEM, "out of memory");
        else s->n_tasks++;
    }
    if (!rc && step != SQLITE_DONE) rc = rpt_db_fail(s, err);
    sqlite3_finalize(q);
    return rc;
}

int rpt_study_open(const char *path, int64_t run_id, struct rpt_study **out, char *err) {
    *out = NULL;
    struct rpt_study *s = calloc(1, sizeof *s);
    if (!s) return qp_fail(err, QP_ENOMEM, "out of memory");
    s->ref = -1;
    int rc = hx_store_open(path, HX_STORE_READONLY, &s->store, err);
    if (!rc) {
        s->db = hx_store_db(s->store);
        s->path = hx_store_path(s->store);
        rc = rpt_load_run(s, run_id, err);
    }
    if (!rc) rc = rpt_load_variants(s, err);
    if (!rc) rc = rpt_load_tasks(s, err);
    if (!rc) rc = rpt_fallback_load(s, err);
    if (rc) {
        rpt_study_close(s);
        return rc;
    }
    *out = s;
    return 0;
}

void rpt_study_close(struct rpt_study *s) {
    if (!s) return;
    for (int i = 0; i < s->n_run; i++) {
        free(s->run[i].name);
        free(s->run[i].value);
    }
    free(s->run);
    for (int i = 0; i < s->n_v; i++) {
        for (int j = 0; j < s->v[i].n_metrics; j++) {
            free(s->v[i].metrics[j].suite);
            free(s->v[i].metrics[j].name);
        }
        free(s->v[i].metrics);
        free(s->v[i].spec);
        free(s->v[i].weights_sha256);
    }
    free(s->v);
    for (int i = 0; i < s->n_tasks; i++) free(s->tasks[i]);
    free(s->tasks);
    hx_store_close(s->store);
    free(s);
}

// ---------------------------------------------------------------------------------------------
// Lookups

double rpt_metric_get(const struct rpt_variant *v, const char *suite, const char *name, double *se) {
    struct rpt_metric key = {(char *)suite, (char *)name, 0, 0, 0};
    const struct rpt_metric *m =
        v->n_metrics ? bsearch(&key, v->metrics, (size_t)v->n_metrics, sizeof *v->metrics, rpt_metric_cmp) : NULL;
    if (se) *se = m ? m->se : NAN;
    return m ? m->value : NAN;
}

const char *rpt_run_field(const struct rpt_study *s, const char *name) {
    for (int i = 0; i < s->n_run; i++)
        if (strcmp(s->run[i].name, name) == 0) return s->run[i].value;
    return "";
}

double rpt_ref_ppl(const struct rpt_study *s) {
    if (s->ref >= 0) {
        double p = rpt_metric_get(&s->v[s->ref], "ppl", "ppl", NULL);
        if (isfinite(p)) return p;
    }
    for (int i = 0; i < s->n_v; i++) {
        double p = rpt_metric_get(&s->v[i], "ppl", "ppl_ref", NULL);
        if (isfinite(p)) return p;
    }
    return NAN;
}

void rpt_catf(char *buf, size_t cap, size_t *len, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(buf + *len, cap - *len, fmt, ap);
    va_end(ap);
    *len = QP_MIN(cap - 1, *len + (size_t)(w > 0 ? w : 0));
}

void rpt_group_label(const struct rpt_study *s, int i, const char *sep, char *out, size_t cap) {
    size_t n = 0;
    out[0] = 0;
    int lead = s->v[i].same_as;
    for (int j = 0; j < s->n_v && n + 1 < cap; j++)
        if (s->v[j].same_as == lead) rpt_catf(out, cap, &n, "%s%s", n ? sep : "", s->v[j].spec);
}

void rpt_pareto(const double *x, const double *y, int n, int lower_better, int *on) {
    for (int i = 0; i < n; i++) {
        on[i] = isfinite(x[i]) && isfinite(y[i]);
        for (int j = 0; j < n && on[i]; j++) {
            if (j == i || !isfinite(x[j]) || !isfinite(y[j])) continue;
            double yi = lower_better ? y[i] : -y[i], yj = lower_better ? y[j] : -y[j];
            if (x[j] <= x[i] && yj <= yi && (x[j] < x[i] || yj < yi)) on[i] = 0;
        }
    }
}

int rpt_parse_variants(const struct rpt_study *s, const char *list, int *idx, int max, int *n,
                       char *err) {
    *n = 0;
    const char *p = list;
    while (*p) {
        int best = -1;
        size_t best_len = 0;
        for (int i = 0; i < s->n_v; i++) {
            size_t len = strlen(s->v[i].spec);
            if (len > best_len && strncmp(p, s->v[i].spec, len) == 0 && (p[len] == ',' || p[len] == 0)) {
                best = i;
                best_len = len;
            }
        }
        if (best < 0) {
            size_t len = strcspn(p, ",");
            return qp_fail(err, QP_ENOENT, "--variants: '%.*s' is not a variant of run %lld in '%s'",
                           (int)QP_MIN(len, (size_t)200), p, (long long)s->run_id, s->path);
        }
        int dup = 0;
        for (int k = 0; k < *n; k++) dup |= idx[k] == best;
        if (!dup && *n < max) idx[(*n)++] = best;
        p += best_len;
        if (*p == ',') p++;
    }
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Gate results (JUnit XML of `qprobe gate --junit`)

// Decodes the five predefined XML entities and numeric references below 128 in place.
static void rpt_xml_unescape(char *s) {
    static const struct {
        const char *ent;
        char c;
    } ents[] = {{"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
    char *w = s;
    while (*s) {
        int done = 0;
        if (*s == '&') {
            for (size_t i = 0; i < QP_ARRAY_LEN(ents) && !done; i++) {
                size_t l = strlen(ents[i].ent);
                if (strncmp(s, ents[i].ent, l) == 0) {
                    *w++ = ents[i].c;
                    s += l;
                    done = 1;
                }
            }
            if (!done && s[1] == '#') {
                char *end;
                long c = s[2] == 'x' ? strtol(s + 3, &end, 16) : strtol(s + 2, &end, 10);
                if (*end == ';' && c > 0 && c < 128) {
                    *w++ = (char)c;
                    s = end + 1;
                    done = 1;
                }
            }
        }
        if (!done) *w++ = *s++;
    }
    *w = 0;
}

// The value of attribute name in the tag [tag, end), malloc'd and unescaped; NULL if absent.
static char *rpt_xml_attr(const char *tag, const char *end, const char *name) {
    size_t nl = strlen(name);
    for (const char *p = tag + 1; p + nl + 2 < end; p++) {
        if ((p[-1] == ' ' || p[-1] == '\t' || p[-1] == '\n') && strncmp(p, name, nl) == 0 && p[nl] == '=' &&
            (p[nl + 1] == '"' || p[nl + 1] == '\'')) {
            char quote = p[nl + 1];
            const char *v = p + nl + 2, *ve = memchr(v, quote, (size_t)(end - v));
            if (!ve) return NULL;
            char *out = strndup(v, (size_t)(ve - v));
            if (out) rpt_xml_unescape(out);
            return out;
        }
    }
    return NULL;
}

int rpt_study_read_gate(struct rpt_study *s, const char *path, char *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return qp_fail(err, QP_EIO, "cannot read '%s': %s", path, strerror(errno));
    char *buf = NULL;
    size_t len = 0, cap = 0, got;
    char chunk[8192];
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (len + got + 1 > cap) {
            cap = (len + got + 1) * 2;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                return qp_fail(err, QP_ENOMEM, "cannot read '%s': out of memory", path);
            }
            buf = nb;
        }
        memcpy(buf + len, chunk, got);
        len += got;
    }
    fclose(f);
    if (!buf || !strstr(buf, "<testsuite")) {
        free(buf);
        return qp_fail(err, QP_EFORMAT, "cannot use '%s': not a JUnit XML file of 'qprobe gate --junit'", path);
    }
    buf[len] = 0;
    int cases = 0;
    for (char *p = strstr(buf, "<testcase"); p; p = strstr(p + 1, "<testcase")) {
        char *end = strchr(p, '>');
        if (!end) break;
        char *spec = rpt_xml_attr(p, end, "classname");
        if (!spec) continue;
        cases++;
        // A failure is a <failure> (or <error>) element before this test case closes.
        int failed = 0;
        if (end[-1] != '/') {
            char *close = strstr(end, "</testcase>");
            char *fail = strstr(end, "<failure"), *error = strstr(end, "<error");
            failed = (fail && (!close || fail < close)) || (error && (!close || error < close));
        }
        for (int i = 0; i < s->n_v; i++) {
            if (strcmp(s->v[i].spec, spec) != 0) continue;
            if (failed) snprintf(s->v[i].gate, sizeof s->v[i].gate, "FAIL");
            else if (!s->v[i].gate[0]) snprintf(s->v[i].gate, sizeof s->v[i].gate, "PASS");
        }
        free(spec);
    }
    free(buf);
    if (!cases) return qp_fail(err, QP_EFORMAT, "cannot use '%s': no <testcase classname=...> in it", path);
    return 0;
}
