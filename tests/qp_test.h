// qp_test.h — the tiny test framework every tests/test_*.c uses.
//
// A test binary holds many cases, each declared with QP_TEST(name). Run without arguments it
// lists nothing and runs every case in-process; tests/run.sh instead asks for the list
// (`--list`) and runs each case in its own process (`BINARY NAME`), so that a crash in one case
// is one failure. Exit status of a case: 0 pass, 77 skip, anything else fail.
#ifndef QP_TEST_H
#define QP_TEST_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void (*qpt_fn)(void);
void qpt_register(const char *name, qpt_fn fn);

#define QP_TEST(name)                                                                          \
    static void name(void);                                                                    \
    __attribute__((constructor)) static void qpt_reg_##name(void) { qpt_register(#name, name); } \
    static void name(void)

_Noreturn void qpt_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
_Noreturn void qpt_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define QP_CHECK(cond)                                                                         \
    do {                                                                                       \
        if (!(cond)) qpt_fail(__FILE__, __LINE__, "check failed: %s", #cond);                  \
    } while (0)

#define QP_CHECK_MSG(cond, ...)                                                                \
    do {                                                                                       \
        if (!(cond)) qpt_fail(__FILE__, __LINE__, __VA_ARGS__);                                \
    } while (0)

#define QP_CHECK_INT_EQ(a, b)                                                                  \
    do {                                                                                       \
        long long qpt_a = (long long)(a), qpt_b = (long long)(b);                              \
        if (qpt_a != qpt_b)                                                                    \
            qpt_fail(__FILE__, __LINE__, "%s == %s failed: %lld != %lld", #a, #b, qpt_a, qpt_b); \
    } while (0)

#define QP_CHECK_STR_EQ(a, b)                                                                  \
    do {                                                                                       \
        const char *qpt_a = (a), *qpt_b = (b);                                                 \
        if (strcmp(qpt_a, qpt_b) != 0)                                                         \
            qpt_fail(__FILE__, __LINE__, "%s == %s failed: '%s' != '%s'", #a, #b, qpt_a, qpt_b); \
    } while (0)

// |a - b| <= tol * max(1, |b|)
#define QP_CHECK_NEAR(a, b, tol)                                                               \
    do {                                                                                       \
        double qpt_a = (double)(a), qpt_b = (double)(b), qpt_t = (double)(tol);                \
        double qpt_s = fabs(qpt_b) > 1.0 ? fabs(qpt_b) : 1.0;                                  \
        if (!(fabs(qpt_a - qpt_b) <= qpt_t * qpt_s))                                           \
            qpt_fail(__FILE__, __LINE__, "%s ~= %s failed: %.9g vs %.9g (tol %g)", #a, #b,     \
                     qpt_a, qpt_b, qpt_t);                                                     \
    } while (0)

#define QP_SKIP(...) qpt_skip(__VA_ARGS__)

// Path of a fixture file: the first of QP_FIXTURES (the FIXTURES make variable),
// QP_ROOT/../shared/fixtures and QP_ROOT/fixtures that has it. Returns one of 8 rotating static
// buffers; skips the case when the file is in none of them.
const char *qpt_fixture(const char *rel);
// A fresh scratch directory for this case (removed by the runner's temporary root).
const char *qpt_tmpdir(void);
// Path of the qprobe binary under test (QP_BIN), for end-to-end cases.
const char *qpt_qprobe(void);
// Runs a shell command, captures stdout into *out (malloc'd, NUL-terminated; may be NULL) and
// returns the exit status (or -1 if it could not run / died by a signal: then 128+sig).
int qpt_run(const char *cmd, char **out);
// Reads a whole file; NULL if it cannot. *len set when non-NULL. Caller frees.
char *qpt_read_file(const char *path, size_t *len);
// Reads a whole fixture file (skips the case when it is missing, fails when unreadable).
char *qpt_read_fixture(const char *rel, size_t *len);
// Whitespace-separated non-negative integers of s[0..len) (token id lists) into a malloc'd
// array of *n; fails the case on anything else.
int *qpt_parse_ids(const char *s, size_t len, size_t *n);

// Writes len bytes of data to NAME in the scratch directory and returns the path (static buffer);
// fails the case when it cannot.
const char *qpt_write_tmp(const char *name, const void *data, size_t len);

// A case's deterministic random numbers: xorshift64 from a nonzero seed, e.g.
// `static struct qpt_rng rng = {0x9e3779b97f4a7c15ull};`.
struct qpt_rng {
    uint64_t s;
};
double qpt_urand(struct qpt_rng *r); // uniform in (0, 1), 53 bits
double qpt_gauss(struct qpt_rng *r); // standard normal (Box-Muller over two qpt_urand draws)

// Writes the first n bytes of the shared TinyStories validation text to this case's scratch
// directory and returns the path (static buffer).
const char *qpt_text_prefix(size_t n);
// Writes bytes [from, from + n) of that text to NAME in the scratch directory and returns the path
// (one of 2 rotating static buffers).
const char *qpt_text_part(const char *name, size_t from, size_t n);
// The number after "key": in a one-line JSON object (the --json output of qprobe commands).
double qpt_json_num(const char *json, const char *key);

// The first column of the first row of sql on the SQLite database at path, as an integer / a
// malloc'd text (the caller frees; "" for NULL). The database is opened read-write so that a WAL
// file can be read, with a 5 s busy timeout; any SQLite error or an empty result fails the case.
long long qpt_db_int(const char *path, const char *sql);
char *qpt_db_text(const char *path, const char *sql);
// Runs SQL statements (a fixture edit) on the database at path; fails the case on an error.
void qpt_db_exec(const char *path, const char *sql);

#endif
