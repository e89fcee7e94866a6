// qpt_study.h — helpers for the tests that run `qprobe sweep` on the fixture model and judge the
// study database it leaves: under injected storage faults (test_fault.c), kill -9
// (test_crash.c) and concurrent writers (test_concurrent.c). Header-only (static inline), so
// that each test binary stays one .c file plus the framework.
//
// The study: stories260K with its 512-token tokenizer on the first 30 000 bytes of the
// TinyStories validation text, windows of 128 tokens, with every diagnostic on one chunk —
// about 0.1 s per variant on one thread. Depends on qp_test.h and POSIX.
#ifndef QPT_STUDY_H
#define QPT_STUDY_H

#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "qp_test.h"

// make reliability sets QP_RELIABILITY=1: the cases that sample (fault positions, kill moments)
// then run their exhaustive set.
static inline int qpt_reliability(void) {
    const char *r = getenv("QP_RELIABILITY");
    return r && *r && strcmp(r, "0") != 0;
}

// NAME in this case's scratch directory (one of 8 rotating static buffers).
static inline const char *qpt_scratch(const char *name) {
    static char buf[8][1024];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", qpt_tmpdir(), name);
    return buf[k];
}

// Writes a sweep configuration NAME in the scratch directory: the fixture study with `chunks`
// evaluation windows and the variants given as a JSON array body (e.g. "\"q8_0\", \"q4_0\"").
// Returns its path (one of qpt_scratch's rotating buffers: copy it).
static inline const char *qpt_study_config(const char *name, int chunks, const char *variants) {
    char model[1024], tok[1024], text[1024], json[8192];
    snprintf(model, sizeof model, "%s", qpt_fixture("models/llama2c/stories260K.bin"));
    snprintf(tok, sizeof tok, "%s", qpt_fixture("models/llama2c/tok512.bin"));
    snprintf(text, sizeof text, "%s", qpt_text_prefix(30000));
    snprintf(json, sizeof json,
             "{\"model\": \"%s\", \"tokenizer\": \"%s\", \"eval\": {\"text\": \"%s\", \"ctx\": 128, \"chunks\": %d},\n"
             " \"diagnostics\": {\"layer_chunks\": 1, \"act_chunks\": 1, \"sensitivity_chunks\": 1},\n"
             " \"variants\": [%s]}\n",
             model, tok, text, chunks, variants);
    const char *path = qpt_scratch(name);
    FILE *f = fopen(path, "w");
    QP_CHECK(f != NULL);
    fputs(json, f);
    QP_CHECK(fclose(f) == 0);
    return path;
}

// Runs `ENV qprobe sweep -c cfg --db db -t 1 [--resume]` in a shell (env: assignments or "",
// may be NULL). Returns the exit status; *out and *err (when non-NULL) get stdout and stderr
// (malloc'd, caller frees).
static inline int qpt_sweep(const char *env, const char *cfg, const char *db, int resume, char **out, char **err) {
    const char *err_path = qpt_scratch("sweep.stderr");
    char cmd[32768];
    int n = snprintf(cmd, sizeof cmd, "%s '%s' sweep -c '%s' --db '%s' -t 1%s 2>'%s'", env ? env : "", qpt_qprobe(),
                     cfg, db, resume ? " --resume" : "", err_path);
    QP_CHECK(n > 0 && (size_t)n < sizeof cmd);
    char *o = NULL;
    int rc = qpt_run(cmd, &o);
    if (out) *out = o ? o : strdup("");
    else free(o);
    if (err) {
        *err = qpt_read_file(err_path, NULL);
        if (!*err) *err = strdup("");
    }
    return rc;
}

// The fault-injection shim of the build under test (tests/fault/qp_fault.c), beside its test
// binaries: QP_BIN's directory/tests/libqpfault.so; NULL when it was not built.
static inline const char *qpt_fault_so(void) {
    static char path[4096];
    char bin[4096];
    snprintf(bin, sizeof bin, "%s", qpt_qprobe());
    snprintf(path, sizeof path, "%s/tests/libqpfault.so", dirname(bin));
    return access(path, R_OK) == 0 ? path : NULL;
}

// The shell environment of a run under the shim: QP_FAULT=fault, its report to report (may be
// NULL). ASan insists on coming first in the library list; the shim is not instrumented and
// needs no such place.
static inline void qpt_fault_env(char *env, size_t cap, const char *fault, const char *report) {
    const char *so = qpt_fault_so();
    QP_CHECK(so != NULL);
    int n = snprintf(env, cap,
                     "QP_FAULT='%s' QP_FAULT_REPORT='%s' LD_PRELOAD='%s' "
                     "ASAN_OPTIONS=\"${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0\"",
                     fault, report ? report : "", so);
    QP_CHECK(n > 0 && (size_t)n < cap);
}

// Copies a file (the study database; a missing source makes a missing copy).
static inline void qpt_copy(const char *from, const char *to) {
    unlink(to);
    size_t n = 0;
    char *b = qpt_read_file(from, &n);
    if (!b) return;
    FILE *f = fopen(to, "wb");
    QP_CHECK(f && fwrite(b, 1, n, f) == n && fclose(f) == 0);
    free(b);
}

// Removes a study database with its WAL and shared-memory files.
static inline void qpt_db_remove(const char *db) {
    char p[1100];
    unlink(db);
    snprintf(p, sizeof p, "%s-wal", db);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", db);
    unlink(p);
}

// Everything stored of one variant, as one text: its row's numbers and every row of metric,
// layer_error, sensitivity, grid_stat, histogram and task_item (and, for the reference, the
// run's weight and activation statistics); speeds (seconds, items per second) left out. Two runs that computed the same numbers give the same
// text; "" when the variant is not stored. Caller frees.
static inline char *qpt_variant_fingerprint(const char *db, const char *spec) {
    char sql[4096], q[600];
    // spec quoted for SQL: specs hold no quote character, which the check keeps true
    QP_CHECK(strchr(spec, '\'') == NULL && strlen(spec) < 500);
    snprintf(q, sizeof q, "'%s'", spec);
    snprintf(sql, sizeof sql,
             "WITH v AS (SELECT * FROM variant WHERE spec = %s)"
             " SELECT coalesce(group_concat(x, '|'), '') FROM (SELECT x FROM ("
             " SELECT 'v' || quote(bits_per_weight) || quote(weight_bytes) || quote(n_weights) || quote(tokens)"
             "   || quote(weights_sha256) || is_reference AS x FROM v"
             " UNION ALL SELECT 'm' || m.suite || m.name || quote(m.value) || quote(m.stderr) || quote(m.n) FROM metric m JOIN v ON v.id = m.variant_id"
             "   WHERE m.name <> 'items_per_second'" // a speed, not a result
             " UNION ALL SELECT 'l' || l.layer || l.site || l.kind || quote(l.rel_err) || quote(l.cosine) FROM layer_error l JOIN v ON v.id = l.variant_id"
             " UNION ALL SELECT 's' || s.layer || s.tensor || quote(s.kld_mean) || s.rank FROM sensitivity s JOIN v ON v.id = s.variant_id"
             " UNION ALL SELECT 'g' || g.tensor || g.format || quote(g.rmse) || quote(g.codes_used_mean) FROM grid_stat g JOIN v ON v.id = g.variant_id"
             " UNION ALL SELECT 'h' || h.kind || h.subject || h.bin || h.count FROM histogram h JOIN v ON v.id = h.variant_id"
             " UNION ALL SELECT 't' || t.suite || t.item || t.pred || quote(t.margin) FROM task_item t JOIN v ON v.id = t.variant_id"
             " UNION ALL SELECT 'w' || w.tensor || quote(w.kurtosis) || quote(w.max_abs) FROM weight_stat w JOIN v ON v.run_id = w.run_id AND v.is_reference"
             " UNION ALL SELECT 'a' || a.layer || a.site || quote(a.kurtosis) FROM act_stat a JOIN v ON v.run_id = a.run_id AND v.is_reference"
             " UNION ALL SELECT 'r' || h.kind || h.subject || h.bin || h.count FROM histogram h JOIN v ON v.run_id = h.run_id AND v.is_reference AND h.variant_id IS NULL"
             ") ORDER BY x)",
             q);
    return qpt_db_text(db, sql);
}

// The whole study as one text: every variant's fingerprint in spec order. Caller frees.
static inline char *qpt_study_fingerprint(const char *db) {
    char *specs = qpt_db_text(db, "SELECT coalesce(group_concat(spec, char(10)), '') FROM (SELECT spec FROM variant ORDER BY spec)");
    size_t cap = 1 << 16, len = 0;
    char *all = malloc(cap);
    QP_CHECK(all != NULL);
    all[0] = 0;
    for (char *save = NULL, *s = strtok_r(specs, "\n", &save); s; s = strtok_r(NULL, "\n", &save)) {
        char *f = qpt_variant_fingerprint(db, s);
        size_t need = len + strlen(s) + strlen(f) + 4;
        if (need > cap) {
            while (cap < need) cap *= 2;
            QP_CHECK((all = realloc(all, cap)) != NULL);
        }
        len += (size_t)sprintf(all + len, "%s=%s\n", s, f);
        free(f);
    }
    free(specs);
    return all;
}

// The database after a failure: SQLite's integrity check passes, and no variant is stored
// without its metrics (each variant is one transaction: all of it, or nothing).
// A database whose schema was never committed must hold no table at all (not half a schema).
static inline void qpt_check_consistent(const char *db, const char *when) {
    QP_CHECK_MSG(qpt_db_int(db, "SELECT count(*) FROM pragma_integrity_check WHERE integrity_check = 'ok'") == 1,
                 "%s: integrity check failed", when);
    if (qpt_db_int(db, "SELECT count(*) FROM sqlite_master WHERE name = 'variant'") == 0) {
        QP_CHECK_MSG(qpt_db_int(db, "SELECT count(*) FROM sqlite_master") == 0, "%s: half a schema", when);
        return;
    }
    QP_CHECK_MSG(qpt_db_int(db, "SELECT count(*) FROM variant v WHERE NOT EXISTS"
                                " (SELECT 1 FROM metric m WHERE m.variant_id = v.id)") == 0,
                 "%s: a variant without metrics", when);
}

// Every variant stored in db is identical to the one in ref (the undisturbed run). Returns how
// many variants db holds (0 when it has no schema yet).
static inline int qpt_check_stored_intact(const char *db, const char *ref, const char *what) {
    if (qpt_db_int(db, "SELECT count(*) FROM sqlite_master WHERE name = 'variant'") == 0) return 0;
    char *specs = qpt_db_text(db, "SELECT coalesce(group_concat(spec, char(10)), '') FROM variant");
    int n = 0;
    for (char *save = NULL, *sp = strtok_r(specs, "\n", &save); sp; sp = strtok_r(NULL, "\n", &save), n++) {
        char *a = qpt_variant_fingerprint(db, sp), *b = qpt_variant_fingerprint(ref, sp);
        QP_CHECK_MSG(strcmp(a, b) == 0, "%s: stored variant '%s' differs from the undisturbed run's", what, sp);
        free(a);
        free(b);
    }
    free(specs);
    return n;
}

// Lines of text (stderr) counted.
static inline int qpt_count_lines(const char *text) {
    int n = 0;
    for (const char *p = text; *p; p++) n += *p == '\n';
    return n;
}

#endif
