// store.c — the SQLite study database (store.h, schema in store_schema.sql.h).
#include "hx_store.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "qp.h"
#include "qp_sha256.h"
#include "hx_store_schema.sql.h"

// 'qprb': marks a database as a qprobe study, so that someone else's SQLite file is refused.
#define HX_STORE_APP_ID 0x71707262
#define HX_STORE_BUSY_MS 10000
#define HX_STORE_CACHE 24

_Static_assert(QP_ARRAY_LEN(hx_store_migrations) == HX_STORE_SCHEMA_VERSION,
               "one migration per schema version");

struct hx_store {
    sqlite3 *db;
    char *path;
    int in_txn;
    int timeout_ms; // how long a writer waits for another one's write lock
    // Prepared statements keyed by the SQL text's address (callers pass string literals).
    struct {
        const char *sql;
        sqlite3_stmt *stmt;
    } cache[HX_STORE_CACHE];
    int cache_next;
};

// ---------------------------------------------------------------------------------------------
// Errors and statements

// A disk that fills up or fails while the study is written is a runtime failure (QP_EWRITE,
// exit 3), so is memory (QP_ENOMEM); a database that cannot be used at all (read-only, locked by
// another writer, not a database, corrupt) is bad input (QP_EIO, exit 2).
int hx_store_sqlite_code(sqlite3 *db) {
    switch (sqlite3_errcode(db) & 0xff) {
    case SQLITE_FULL:
    case SQLITE_IOERR: return QP_EWRITE;
    case SQLITE_NOMEM: return QP_ENOMEM;
    default: return QP_EIO;
    }
}

static int hx_store_code(struct hx_store *st) { return hx_store_sqlite_code(st->db); }

// Who holds the write lock of the study at path, for the message of a writer that gave up
// waiting: "pid N: COMMAND LINE", or "" when it cannot be told. A study is in WAL mode, where the
// write lock is a POSIX lock on byte 120 of PATH-shm (SQLite's WAL_WRITE_LOCK); Linux lists every
// such lock with its owner in /proc/locks ("N: POSIX ADVISORY WRITE PID MAJ:MIN:INODE START END").
static void hx_store_lock_holder(const char *path, char *who, size_t cap) {
    who[0] = 0;
    char shm[4200], line[256];
    struct stat sb;
    snprintf(shm, sizeof shm, "%s-shm", path);
    FILE *f = stat(shm, &sb) == 0 ? fopen("/proc/locks", "r") : NULL;
    if (!f) return;
    int pid = 0;
    while (!pid && fgets(line, sizeof line, f)) {
        char kind[16], mode[16], end[24];
        unsigned maj, min;
        unsigned long long ino, start;
        int p;
        if (strstr(line, "->") ||
            sscanf(line, "%*d: %15s %*s %15s %d %x:%x:%llu %llu %23s", kind, mode, &p, &maj, &min, &ino, &start, end) != 8)
            continue;
        unsigned long long last = strcmp(end, "EOF") == 0 ? ~0ull : strtoull(end, NULL, 10);
        if (strcmp(kind, "POSIX") == 0 && strcmp(mode, "WRITE") == 0 && ino == (unsigned long long)sb.st_ino &&
            maj == major(sb.st_dev) && min == minor(sb.st_dev) && start <= 120 && last >= 120 && p != getpid())
            pid = p;
    }
    fclose(f);
    if (!pid) return;
    char cmd[160] = "", proc[64];
    snprintf(proc, sizeof proc, "/proc/%d/cmdline", pid);
    FILE *c = fopen(proc, "r");
    size_t n = c ? fread(cmd, 1, sizeof cmd - 1, c) : 0;
    if (c) fclose(c);
    for (size_t i = 0; i < n; i++) // arguments are NUL-separated; the message stays one line
        if ((unsigned char)cmd[i] < 0x20) cmd[i] = i + 1 < n ? ' ' : 0;
    cmd[n] = 0;
    snprintf(who, cap, "pid %d%s%s", pid, cmd[0] ? ": " : "", cmd);
}

static int hx_store_fail_msg(struct hx_store *st, char *err, const char *what, const char *msg) {
    if ((sqlite3_errcode(st->db) & 0xff) != SQLITE_BUSY)
        return qp_fail(err, hx_store_code(st), "cannot %s '%s': %s", what, st->path, msg);
    char who[200];
    hx_store_lock_holder(st->path, who, sizeof who);
    return qp_fail(err, hx_store_code(st),
                   "cannot %s '%s': %s: another process is writing to it%s%s%s and held it longer than this one "
                   "waits (%.1f s; QPROBE_DB_TIMEOUT_MS sets it)",
                   what, st->path, msg, who[0] ? " (" : "", who, who[0] ? ")" : "", st->timeout_ms / 1000.0);
}

static int hx_store_fail(struct hx_store *st, char *err, const char *what) {
    return hx_store_fail_msg(st, err, what, sqlite3_errmsg(st->db));
}

static int hx_store_raw(struct hx_store *st, const char *sql, char *err, const char *what) {
    char *msg = NULL;
    if (sqlite3_exec(st->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        int rc = hx_store_fail_msg(st, err, what, msg ? msg : "error");
        sqlite3_free(msg);
        return rc;
    }
    return 0;
}

static sqlite3_stmt *hx_store_stmt(struct hx_store *st, const char *sql, char *err) {
    for (int i = 0; i < HX_STORE_CACHE; i++)
        if (st->cache[i].sql == sql) {
            sqlite3_reset(st->cache[i].stmt);
            sqlite3_clear_bindings(st->cache[i].stmt);
            return st->cache[i].stmt;
        }
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(st->db, sql, -1, &s, NULL) != SQLITE_OK) {
        hx_store_fail(st, err, "query");
        return NULL;
    }
    int slot = st->cache_next;
    st->cache_next = (st->cache_next + 1) % HX_STORE_CACHE;
    sqlite3_finalize(st->cache[slot].stmt);
    st->cache[slot].sql = sql;
    st->cache[slot].stmt = s;
    return s;
}

static int hx_store_bind(struct hx_store *st, sqlite3_stmt *s, const char *fmt, va_list ap,
                         char *err) {
    int n = (int)strlen(fmt);
    QP_ASSERT(n == sqlite3_bind_parameter_count(s));
    for (int i = 0; i < n; i++) {
        int rc;
        switch (fmt[i]) {
        case 'i': rc = sqlite3_bind_int64(s, i + 1, va_arg(ap, int64_t)); break;
        case 'I': rc = sqlite3_bind_int64(s, i + 1, va_arg(ap, int)); break;
        case 'd': {
            double v = va_arg(ap, double);
            rc = isfinite(v) ? sqlite3_bind_double(s, i + 1, v) : sqlite3_bind_null(s, i + 1);
            break;
        }
        case 't': {
            const char *v = va_arg(ap, const char *);
            rc = v ? sqlite3_bind_text(s, i + 1, v, -1, SQLITE_TRANSIENT) : sqlite3_bind_null(s, i + 1);
            break;
        }
        default: QP_ASSERT(!"bad bind format letter");
        }
        if (rc != SQLITE_OK) return hx_store_fail(st, err, "write");
    }
    return 0;
}

int hx_store_exec(struct hx_store *st, char *err, const char *sql, const char *fmt, ...) {
    sqlite3_stmt *s = hx_store_stmt(st, sql, err);
    if (!s) return QP_EIO;
    va_list ap;
    va_start(ap, fmt);
    int rc = hx_store_bind(st, s, fmt, ap, err);
    va_end(ap);
    if (rc) return rc;
    int step;
    while ((step = sqlite3_step(s)) == SQLITE_ROW) {
    }
    rc = step == SQLITE_DONE ? 0 : hx_store_fail(st, err, "write");
    sqlite3_reset(s);
    return rc;
}

int hx_store_query_i64(struct hx_store *st, char *err, int64_t *out, int *found, const char *sql,
                       const char *fmt, ...) {
    *out = 0;
    if (found) *found = 0;
    sqlite3_stmt *s = hx_store_stmt(st, sql, err);
    if (!s) return QP_EIO;
    va_list ap;
    va_start(ap, fmt);
    int rc = hx_store_bind(st, s, fmt, ap, err);
    va_end(ap);
    if (rc) return rc;
    int step = sqlite3_step(s);
    if (step == SQLITE_ROW) {
        *out = sqlite3_column_int64(s, 0);
        if (found) *found = 1;
    } else if (step != SQLITE_DONE) {
        rc = hx_store_fail(st, err, "read");
    }
    sqlite3_reset(s);
    return rc;
}

int64_t hx_store_last_id(struct hx_store *st) { return sqlite3_last_insert_rowid(st->db); }
struct sqlite3 *hx_store_db(struct hx_store *st) { return st->db; }
const char *hx_store_path(const struct hx_store *st) { return st->path; }

// ---------------------------------------------------------------------------------------------
// Open, migrate, close

static int hx_store_pragma_int(struct hx_store *st, const char *sql, int *out, char *err) {
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(st->db, sql, -1, &s, NULL) != SQLITE_OK) {
        int rc = hx_store_fail(st, err, "read");
        sqlite3_finalize(s);
        return rc;
    }
    int step = sqlite3_step(s);
    *out = step == SQLITE_ROW ? sqlite3_column_int(s, 0) : 0;
    sqlite3_finalize(s);
    return step == SQLITE_ROW || step == SQLITE_DONE ? 0 : hx_store_fail(st, err, "read");
}

static int hx_store_migrate(struct hx_store *st, int from, char *err) {
    int rc = hx_store_begin(st, err);
    if (rc) return rc;
    // Re-read under the write lock: another process may have migrated meanwhile.
    if ((rc = hx_store_pragma_int(st, "PRAGMA user_version", &from, err)) == 0) {
        for (int v = from; v < HX_STORE_SCHEMA_VERSION && !rc; v++)
            rc = hx_store_raw(st, hx_store_migrations[v], err, "create the schema of");
        char sql[96];
        snprintf(sql, sizeof sql, "PRAGMA user_version = %d; PRAGMA application_id = %d",
                 HX_STORE_SCHEMA_VERSION, HX_STORE_APP_ID);
        if (!rc) rc = hx_store_raw(st, sql, err, "write");
    }
    if (!rc) rc = hx_store_commit(st, err);
    if (rc) hx_store_rollback(st);
    return rc;
}

// Before a study is opened for writing: the file, when it exists, and its directory must be
// writable — SQLite creates the WAL and shared-memory files beside the database — so that a
// read-only file or directory is refused at once, naming which, instead of failing when the
// first result is stored (or with SQLite's "unable to open database file"). access() checks
// the real user's permission bits and a read-only file system (EROFS); root passes the bits.
static int hx_store_check_writable(const char *path, char *err) {
    if (strcmp(path, ":memory:") == 0 || path[0] == 0) return 0;
    struct stat sb;
    int exists = stat(path, &sb) == 0;
    if (exists && S_ISDIR(sb.st_mode)) return qp_fail(err, QP_EIO, "cannot open '%s': Is a directory", path);
    if (exists && access(path, W_OK) != 0)
        return qp_fail(err, QP_EIO, "cannot write '%s': the study database is read-only (%s)", path, strerror(errno));
    char dir[4096];
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else snprintf(dir, sizeof dir, "%.*s", (int)(slash == path ? 1 : slash - path), path);
    if (access(dir, W_OK) != 0) {
        if (errno == ENOENT && !exists) return qp_fail(err, QP_EIO, "cannot create '%s': %s", path, strerror(errno));
        return qp_fail(err, QP_EIO,
                       "cannot write '%s': its directory '%s' is read-only (%s); SQLite keeps the "
                       "study's journal (-wal, -shm) beside it",
                       path, dir, strerror(errno));
    }
    return 0;
}

// PRAGMA journal_mode = WAL needs the database to itself for a moment, and SQLite does not wait
// for it through the busy handler: when another process is creating or opening the same new
// study at the same time, the pragma is retried until the busy timeout has passed.
static int hx_store_wal(struct hx_store *st, int timeout_ms, char *err) {
    double t0 = qp_now();
    for (int delay_ms = 1;; delay_ms = delay_ms < 64 ? delay_ms * 2 : 64) {
        char *msg = NULL;
        int rc = sqlite3_exec(st->db, "PRAGMA journal_mode = WAL", NULL, NULL, &msg);
        sqlite3_free(msg);
        if (rc == SQLITE_OK) return 0;
        if ((rc & 0xff) != SQLITE_BUSY && (rc & 0xff) != SQLITE_LOCKED) break;
        if ((qp_now() - t0) * 1000.0 > timeout_ms) break;
        sqlite3_sleep(delay_ms);
    }
    return hx_store_fail(st, err, "open");
}

int hx_store_open(const char *path, int flags, struct hx_store **out, char *err) {
    *out = NULL;
    int ro = flags & HX_STORE_READONLY;
    struct stat sb;
    if (ro && stat(path, &sb) != 0)
        return qp_fail(err, QP_EIO, "cannot open '%s': %s", path, strerror(errno));
    int rc = ro ? 0 : hx_store_check_writable(path, err);
    if (rc) return rc;
    struct hx_store *st = calloc(1, sizeof *st);
    if (!st || !(st->path = strdup(path))) {
        free(st);
        return qp_fail(err, QP_ENOMEM, "out of memory");
    }
    int oflags = ro ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    if (sqlite3_open_v2(path, &st->db, oflags | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        rc = st->db ? hx_store_fail(st, err, "open")
                    : qp_fail(err, QP_ENOMEM, "cannot open '%s': out of memory", path);
        goto fail;
    }
    // How long to wait for another writer (QPROBE_DB_TIMEOUT_MS overrides, e.g. for tests).
    const char *tmo = getenv("QPROBE_DB_TIMEOUT_MS");
    int timeout_ms = st->timeout_ms = tmo && atoi(tmo) > 0 ? atoi(tmo) : HX_STORE_BUSY_MS;
    sqlite3_busy_timeout(st->db, timeout_ms);
    sqlite3_extended_result_codes(st->db, 1);
    // The three read in one read transaction: another process creating the study commits its
    // tables, user_version and application_id at once, and separate reads could see the tables
    // without the id ("not a qprobe study").
    int version = 0, app = 0, n_tables = 0;
    if ((rc = hx_store_raw(st, "BEGIN", err, "read"))) goto fail;
    if ((rc = hx_store_pragma_int(st, "PRAGMA user_version", &version, err))) goto fail;
    if ((rc = hx_store_pragma_int(st, "PRAGMA application_id", &app, err))) goto fail;
    if ((rc = hx_store_pragma_int(st, "SELECT count(*) FROM sqlite_master", &n_tables, err))) goto fail;
    if ((rc = hx_store_raw(st, "COMMIT", err, "read"))) goto fail;
    if (n_tables > 0 && app != HX_STORE_APP_ID) {
        rc = qp_fail(err, QP_EFORMAT, "cannot use '%s': a SQLite database, but not a qprobe study", path);
        goto fail;
    }
    if (version > HX_STORE_SCHEMA_VERSION) {
        rc = qp_fail(err, QP_ENOTSUP,
                     "cannot use '%s': its schema version %d is newer than this qprobe's (%d); "
                     "use a newer qprobe", path, version, HX_STORE_SCHEMA_VERSION);
        goto fail;
    }
    if (ro) {
        if (version < HX_STORE_SCHEMA_VERSION) {
            rc = qp_fail(err, QP_EFORMAT, "cannot read '%s': %s", path,
                         version == 0 ? "not a qprobe study (no schema)"
                                      : "schema too old; open it once for writing to migrate");
            goto fail;
        }
    } else {
        if ((rc = hx_store_wal(st, timeout_ms, err))) goto fail;
        // Every commit reaches the disk: a result reported as stored survives a power cut too.
        if ((rc = hx_store_raw(st, "PRAGMA synchronous = FULL", err, "open"))) goto fail;
        if (version < HX_STORE_SCHEMA_VERSION && (rc = hx_store_migrate(st, version, err))) goto fail;
    }
    if ((rc = hx_store_raw(st, "PRAGMA foreign_keys = ON", err, "open"))) goto fail;
    *out = st;
    return 0;
fail:
    hx_store_close(st);
    return rc;
}

void hx_store_close(struct hx_store *st) {
    if (!st) return;
    hx_store_rollback(st);
    for (int i = 0; i < HX_STORE_CACHE; i++) sqlite3_finalize(st->cache[i].stmt);
    sqlite3_close(st->db);
    free(st->path);
    free(st);
}

int hx_store_begin(struct hx_store *st, char *err) {
    QP_ASSERT(!st->in_txn);
    int rc = hx_store_raw(st, "BEGIN IMMEDIATE", err, "write");
    if (!rc) st->in_txn = 1;
    return rc;
}

int hx_store_commit(struct hx_store *st, char *err) {
    QP_ASSERT(st->in_txn);
    int rc = hx_store_raw(st, "COMMIT", err, "write");
    if (!rc) st->in_txn = 0;
    return rc;
}

void hx_store_rollback(struct hx_store *st) {
    if (!st->in_txn) return;
    sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
    st->in_txn = 0;
}

// ---------------------------------------------------------------------------------------------
// Runs and variants

static void hx_utc_now(char buf[32]) {
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

void hx_run_identity(const struct hx_run_info *ri, char hex[65]) {
    struct qp_sha256 s;
    qp_sha256_init(&s);
    char buf[512];
    // Each field is written with its name and a terminator, so that no two runs collide by shifting
    // text from one field into the next.
#define HX_ID_STR(f) do { int n_ = snprintf(buf, sizeof buf, #f "=%s\n", ri->f ? ri->f : "(null)"); \
                          qp_sha256_update(&s, buf, (size_t)QP_MIN(n_, (int)sizeof buf - 1)); } while (0)
#define HX_ID_INT(f) do { int n_ = snprintf(buf, sizeof buf, #f "=%lld\n", (long long)ri->f); \
                          qp_sha256_update(&s, buf, (size_t)n_); } while (0)
    HX_ID_STR(label);
    HX_ID_STR(model_sha256);
    HX_ID_STR(tokenizer_sha256);
    HX_ID_STR(text_sha256);
    HX_ID_STR(protocol);
    HX_ID_INT(ctx);
    HX_ID_INT(stride);
    HX_ID_INT(score_from);
    HX_ID_INT(score_to);
    HX_ID_INT(bos);
    HX_ID_INT(chunks);
    HX_ID_STR(calib_sha256);
#undef HX_ID_STR
#undef HX_ID_INT
    int n = snprintf(buf, sizeof buf, "qprobe=%s %s\n", qp_version, QP_COMMIT);
    qp_sha256_update(&s, buf, (size_t)n);
    qp_sha256_final(&s, hex);
}

int hx_store_run_get(struct hx_store *st, const struct hx_run_info *ri, int64_t *run_id,
                     int *created, char *err) {
    char id[65];
    hx_run_identity(ri, id);
    *created = 0;
    int rc = hx_store_begin(st, err), found = 0;
    if (!rc) rc = hx_store_query_i64(st, err, run_id, &found, "SELECT id FROM run WHERE identity = ?", "t", id);
    if (!rc && !found) {
        char now[32], host[256] = "";
        hx_utc_now(now);
        FILE *f = fopen("/proc/sys/kernel/hostname", "r");
        if (f) {
            if (fgets(host, sizeof host, f)) host[strcspn(host, "\n")] = 0;
            fclose(f);
        }
        rc = hx_store_exec(
            st, err,
            "INSERT INTO run (identity, created, label, model_path, model_sha256, model_format, dim,"
            " hidden_dim, n_layers, n_heads, n_kv_heads, vocab, seq_len, n_params, tokenizer,"
            " tokenizer_sha256, text_path, text_sha256, text_bytes, text_tokens, protocol, ctx,"
            " stride, score_from, score_to, bos, chunks, calib_path, calib_sha256,"
            " calib_overlap_bytes, qprobe_version, qprobe_commit, isa, gemm, threads, host, config, cpu,"
            " kernels, arch) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            "ttttttIIIIIIIittttiitIIIIIIttittttItttt" "t", id, now, ri->label, ri->model_path,
            ri->model_sha256, ri->model_format, ri->dim, ri->hidden_dim, ri->n_layers, ri->n_heads,
            ri->n_kv_heads, ri->vocab, ri->seq_len, ri->n_params, ri->tokenizer, ri->tokenizer_sha256,
            ri->text_path, ri->text_sha256, ri->text_bytes, ri->text_tokens, ri->protocol, ri->ctx,
            ri->stride, ri->score_from, ri->score_to, ri->bos, ri->chunks, ri->calib_path,
            ri->calib_sha256, ri->calib_overlap_bytes, qp_version, QP_COMMIT, ri->isa, ri->gemm,
            ri->threads, host[0] ? host : NULL, ri->config, ri->cpu, ri->kernels, ri->arch);
        if (!rc) {
            *run_id = hx_store_last_id(st);
            *created = 1;
        }
    }
    if (!rc) rc = hx_store_commit(st, err);
    if (rc) hx_store_rollback(st);
    return rc;
}

int hx_store_variant_find(struct hx_store *st, int64_t run_id, const char *spec, int64_t *variant_id,
                          char *err) {
    int found = 0;
    int rc = hx_store_query_i64(st, err, variant_id, &found,
                                "SELECT id FROM variant WHERE run_id = ? AND spec = ?", "it", run_id, spec);
    return rc ? rc : found;
}

int hx_store_variant_insert(struct hx_store *st, int64_t run_id, const struct hx_variant_row *v,
                            int64_t *variant_id, char *err) {
    char now[32];
    hx_utc_now(now);
    double tps = v->eval_seconds > 0 ? (double)v->tokens / v->eval_seconds : NAN;
    int rc = hx_store_exec(st, err,
                           "INSERT INTO variant (run_id, spec, ord, is_reference, bits_per_weight,"
                           " weight_bytes, n_weights, quant_seconds, eval_seconds, tokens,"
                           " tokens_per_second, finished, weights_sha256) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                           "itIIdiiddidtt", run_id, v->spec, v->ord, v->is_reference, v->bits_per_weight,
                           v->weight_bytes, v->n_weights, v->quant_seconds, v->eval_seconds, v->tokens,
                           tps, now, v->weights_sha256);
    if (!rc) *variant_id = hx_store_last_id(st);
    return rc;
}

int hx_store_metric(struct hx_store *st, int64_t variant_id, const char *suite, const char *name,
                    double value, double stderr_, int64_t n, char *err) {
    if (n < 0)
        return hx_store_exec(st, err,
                             "INSERT INTO metric (variant_id, suite, name, value, stderr) VALUES (?,?,?,?,?)",
                             "ittdd", variant_id, suite, name, value, stderr_);
    return hx_store_exec(st, err,
                         "INSERT INTO metric (variant_id, suite, name, value, stderr, n) VALUES (?,?,?,?,?,?)",
                         "ittddi", variant_id, suite, name, value, stderr_, n);
}
