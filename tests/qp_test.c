// qp_test.c — registry, main() and helpers of the test framework (see qp_test.h).
#include "qp_test.h"

#include <sqlite3.h>

#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define QPT_MAX 512

static struct {
    const char *name;
    qpt_fn fn;
} qpt_cases[QPT_MAX];
static int qpt_count;
static const char *qpt_current = "?";

void qpt_register(const char *name, qpt_fn fn) {
    if (qpt_count == QPT_MAX) {
        fprintf(stderr, "too many test cases\n");
        exit(2);
    }
    qpt_cases[qpt_count].name = name;
    qpt_cases[qpt_count].fn = fn;
    qpt_count++;
}

void qpt_fail(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "  %s: %s:%d: ", qpt_current, file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

void qpt_skip(const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "  %s: skipped: ", qpt_current);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(77);
}

const char *qpt_fixture(const char *rel) {
    static char bufs[8][4096]; // rotating, so that several calls can share one expression
    static int next;
    char *buf = bufs[next++ % 8];
    // The search order of the Makefile: FIXTURES (passed as QP_FIXTURES), ../shared/fixtures,
    // then the repository's own fixtures/ (its made files, and what `make fixtures` fetched),
    // per file, so that a made file kept in the repository is found beside a shared folder.
    const char *env = getenv("QP_FIXTURES"), *repo = getenv("QP_ROOT");
    if (!repo || !*repo) repo = ".";
    char roots[3][2048];
    int n = 0;
    if (env && *env) snprintf(roots[n++], sizeof roots[0], "%s", env);
    snprintf(roots[n++], sizeof roots[0], "%s/../shared/fixtures", repo);
    snprintf(roots[n++], sizeof roots[0], "%s/fixtures", repo);
    for (int i = 0; i < n; i++) {
        snprintf(buf, sizeof bufs[0], "%.2000s/%.2000s", roots[i], rel);
        if (access(buf, R_OK) == 0) return buf;
    }
    qpt_skip("fixture '%s' not found in '%s' (run 'make fixtures', or set FIXTURES)", rel, roots[0]);
}

const char *qpt_tmpdir(void) {
    static char buf[4096];
    if (buf[0]) return buf;
    const char *root = getenv("QP_TMP");
    if (!root || !*root) root = "/tmp";
    snprintf(buf, sizeof buf, "%s/qpt-%s-%d", root, qpt_current, (int)getpid());
    mkdir(buf, 0700);
    return buf;
}

const char *qpt_qprobe(void) {
    const char *b = getenv("QP_BIN");
    if (!b || !*b) qpt_skip("QP_BIN not set: end-to-end case needs the qprobe binary");
    return b;
}

int qpt_run(const char *cmd, char **out) {
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    size_t n;
    while (buf && (n = fread(buf + len, 1, cap - len - 1, p)) > 0) {
        len += n;
        if (cap - len < 2) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) {
                free(buf);
                buf = NULL;
            }
            buf = nb;
        }
    }
    int st = pclose(p);
    if (buf) buf[len] = 0;
    if (out) *out = buf;
    else free(buf);
    if (st == -1) return -1;
    if (WIFEXITED(st)) return WEXITSTATUS(st);
    if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
    return -1;
}

const char *qpt_write_tmp(const char *name, const void *data, size_t len) {
    static char path[8192];
    snprintf(path, sizeof path, "%s/%s", qpt_tmpdir(), name);
    FILE *f = fopen(path, "wb");
    QP_CHECK(f != NULL);
    QP_CHECK(fwrite(data, 1, len, f) == len);
    QP_CHECK(fclose(f) == 0);
    return path;
}

double qpt_urand(struct qpt_rng *r) {
    r->s ^= r->s << 13;
    r->s ^= r->s >> 7;
    r->s ^= r->s << 17;
    return ((double)(r->s >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

double qpt_gauss(struct qpt_rng *r) {
    double u1 = qpt_urand(r), u2 = qpt_urand(r); // in this order (the cases' data depend on it)
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

char *qpt_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) {
        buf[n] = 0;
        if (len) *len = (size_t)n;
    }
    return buf;
}

const char *qpt_text_part(const char *name, size_t from, size_t n) {
    static char path[2][4096 + 64]; // the scratch directory's name plus the file name
    static int k;
    char *p = path[k++ % 2];
    size_t len;
    char *all = qpt_read_file(qpt_fixture("data/tinystories/tinystories_val.txt"), &len);
    if (!all || len < from || len - from < n)
        qpt_fail(__FILE__, __LINE__, "cannot read bytes [%zu, %zu) of tinystories_val.txt", from, from + n);
    snprintf(p, sizeof path[0], "%s/%s", qpt_tmpdir(), name);
    FILE *f = fopen(p, "wb");
    if (!f || fwrite(all + from, 1, n, f) != n) qpt_fail(__FILE__, __LINE__, "cannot write '%s'", p);
    fclose(f);
    free(all);
    return p;
}

const char *qpt_text_prefix(size_t n) {
    char name[64];
    snprintf(name, sizeof name, "eval_%zuB.txt", n);
    return qpt_text_part(name, 0, n);
}

double qpt_json_num(const char *json, const char *key) {
    char pat[128];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = json ? strstr(json, pat) : NULL;
    if (!p) qpt_fail(__FILE__, __LINE__, "no %s in %s", key, json ? json : "(null)");
    return strtod(p + strlen(pat), NULL);
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "--list") == 0) {
        for (int i = 0; i < qpt_count; i++) printf("%s\n", qpt_cases[i].name);
        return 0;
    }
    if (argc == 2) {
        for (int i = 0; i < qpt_count; i++) {
            if (strcmp(qpt_cases[i].name, argv[1]) == 0) {
                qpt_current = qpt_cases[i].name;
                qpt_cases[i].fn();
                return 0;
            }
        }
        fprintf(stderr, "no test case named '%s'\n", argv[1]);
        return 2;
    }
    // No arguments: run everything in this process, stop at the first failure (debugging aid).
    for (int i = 0; i < qpt_count; i++) {
        qpt_current = qpt_cases[i].name;
        qpt_cases[i].fn();
        printf("ok %s\n", qpt_cases[i].name);
    }
    return 0;
}

// One-value queries on a study database (qp_test.h).
static sqlite3_stmt *qpt_db_step(const char *path, const char *sql, sqlite3 **db) {
    if (sqlite3_open_v2(path, db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK)
        qpt_fail(__FILE__, __LINE__, "cannot open '%s': %s", path, sqlite3_errmsg(*db));
    sqlite3_busy_timeout(*db, 5000);
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(*db, sql, -1, &s, NULL) != SQLITE_OK)
        qpt_fail(__FILE__, __LINE__, "%s: %s", sql, sqlite3_errmsg(*db));
    if (sqlite3_step(s) != SQLITE_ROW) qpt_fail(__FILE__, __LINE__, "%s: no row (%s)", sql, sqlite3_errmsg(*db));
    return s;
}

long long qpt_db_int(const char *path, const char *sql) {
    sqlite3 *db;
    sqlite3_stmt *s = qpt_db_step(path, sql, &db);
    long long v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return v;
}

char *qpt_db_text(const char *path, const char *sql) {
    sqlite3 *db;
    sqlite3_stmt *s = qpt_db_step(path, sql, &db);
    const char *t = (const char *)sqlite3_column_text(s, 0);
    char *out = strdup(t ? t : "");
    sqlite3_finalize(s);
    sqlite3_close(db);
    return out;
}

char *qpt_read_fixture(const char *rel, size_t *len) {
    char *d = qpt_read_file(qpt_fixture(rel), len);
    QP_CHECK_MSG(d != NULL, "cannot read fixture %s", rel);
    return d;
}

int *qpt_parse_ids(const char *s, size_t len, size_t *n) {
    int *ids = malloc((len / 2 + 1) * sizeof *ids);
    QP_CHECK(ids != NULL);
    size_t k = 0, i = 0;
    while (i < len) {
        while (i < len && (s[i] == ' ' || s[i] == '\n' || s[i] == '\r')) i++;
        if (i == len) break;
        long v = 0;
        QP_CHECK_MSG(s[i] >= '0' && s[i] <= '9', "bad id list near byte %zu", i);
        while (i < len && s[i] >= '0' && s[i] <= '9') v = v * 10 + (s[i++] - '0');
        ids[k++] = (int)v;
    }
    *n = k;
    return ids;
}

void qpt_db_exec(const char *path, const char *sql) {
    sqlite3 *db;
    QP_CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    char *msg = NULL;
    QP_CHECK_MSG(sqlite3_exec(db, sql, NULL, NULL, &msg) == SQLITE_OK, "%s: %s", sql, msg ? msg : "?");
    sqlite3_close(db);
}
