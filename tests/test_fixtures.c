// test_fixtures.c — `make fixtures` (scripts/fixtures.sh, fixtures/MANIFEST) without a network:
// downloads from a local file:// mirror, checked and renamed into place; a checksum mismatch is a
// clear error that leaves nothing behind; files already present are never rewritten; an
// unreachable host is reported as "no network"; and the repository's manifest matches the real
// fixture files byte for byte.
//
// Test data made here: two small files (a text and 3000 pseudo-random bytes) in a scratch mirror,
// with a manifest written by the case.
#include <sys/stat.h>
#include <unistd.h>

#include "qp.h"
#include "qp_sha256.h"
#include "qp_test.h"

static const char *root(void) {
    const char *r = getenv("QP_ROOT");
    return r && *r ? r : ".";
}

static void put_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    QP_CHECK_MSG(f != NULL, "cannot write %s", path);
    QP_CHECK(fwrite(data, 1, n, f) == n);
    fclose(f);
}

static int same_bytes(const char *a, const void *data, size_t n) {
    size_t len = 0;
    char *got = qpt_read_file(a, &len);
    int same = got && len == n && memcmp(got, data, n) == 0;
    free(got);
    return same;
}

// The scratch layout: MIRROR/{a.txt, sub/b.bin}, an empty DIR, and MANIFEST listing both with
// their true SHA-256 unless bad_b (then b's is wrong).
struct fx {
    char mirror[1024], dir[1024], manifest[1024];
    unsigned char b[3000];
};
static const char fx_a[] = "a small made text\n";

static void fx_make(struct fx *x, const char *name, int bad_b) {
    snprintf(x->mirror, sizeof x->mirror, "%s/%s-mirror", qpt_tmpdir(), name);
    snprintf(x->dir, sizeof x->dir, "%s/%s-dir", qpt_tmpdir(), name);
    snprintf(x->manifest, sizeof x->manifest, "%s/%s-MANIFEST", qpt_tmpdir(), name);
    char p[1200];
    mkdir(x->mirror, 0700);
    snprintf(p, sizeof p, "%s/sub", x->mirror);
    mkdir(p, 0700);
    uint32_t s = 12345;
    for (size_t i = 0; i < sizeof x->b; i++) x->b[i] = (unsigned char)((s = s * 1664525u + 1013904223u) >> 24);
    snprintf(p, sizeof p, "%s/a.txt", x->mirror);
    put_file(p, fx_a, strlen(fx_a));
    snprintf(p, sizeof p, "%s/sub/b.bin", x->mirror);
    put_file(p, x->b, sizeof x->b);
    char ha[65], hb[65], text[600];
    qp_sha256_hex(fx_a, strlen(fx_a), ha);
    qp_sha256_hex(x->b, sizeof x->b, hb);
    if (bad_b) hb[0] = hb[0] == '0' ? '1' : '0';
    snprintf(text, sizeof text,
             "# a test manifest\n%s %zu a.txt https://example.org/a.txt\n\n%s %zu sub/b.bin https://example.org/b.bin\n",
             ha, strlen(fx_a), hb, sizeof x->b);
    put_file(x->manifest, text, strlen(text));
}

// Runs the script on x->dir with the mirror (or none); stderr into *err. Returns the exit code.
static int fx_run(const struct fx *x, int use_mirror, char **err) {
    char cmd[8192], errf[1100];
    snprintf(errf, sizeof errf, "%s.stderr", x->dir);
    snprintf(cmd, sizeof cmd, "FIXTURES_MANIFEST='%s' FIXTURES_MIRROR='%s%s' '%s/scripts/fixtures.sh' '%s' >/dev/null 2>'%s'",
             x->manifest, use_mirror ? "file://" : "", use_mirror ? x->mirror : "", root(), x->dir, errf);
    int rc = qpt_run(cmd, NULL);
    *err = qpt_read_file(errf, NULL);
    QP_CHECK(*err != NULL);
    return rc;
}

// Files in dir (recursively) whose name holds ".part": a half-written download.
static int leftovers(const char *dir) {
    char cmd[1200], *out = NULL;
    snprintf(cmd, sizeof cmd, "find '%s' -name '*.part*' 2>/dev/null | wc -l", dir);
    QP_CHECK(qpt_run(cmd, &out) == 0);
    int n = atoi(out);
    free(out);
    return n;
}

QP_TEST(fixtures_should_download_from_a_mirror_check_and_rename_into_place) {
    struct fx x;
    fx_make(&x, "ok", 0);
    char *err = NULL, p[1200];
    QP_CHECK_MSG(fx_run(&x, 1, &err) == 0, "%s", err);
    free(err);
    snprintf(p, sizeof p, "%s/a.txt", x.dir);
    QP_CHECK(same_bytes(p, fx_a, strlen(fx_a)));
    snprintf(p, sizeof p, "%s/sub/b.bin", x.dir);
    QP_CHECK(same_bytes(p, x.b, sizeof x.b));
    QP_CHECK_INT_EQ(leftovers(x.dir), 0);
    // A second run finds everything in place and adds nothing.
    QP_CHECK(fx_run(&x, 1, &err) == 0 && strstr(err, "2 present, 0 added, 0 missing"));
    free(err);
}

QP_TEST(checksum_mismatch_should_fail_clearly_and_leave_nothing_half_written) {
    struct fx x;
    fx_make(&x, "bad", 1);
    char *err = NULL, p[1200];
    QP_CHECK_INT_EQ(fx_run(&x, 1, &err), 2);
    QP_CHECK_MSG(strstr(err, "checksum mismatch") && strstr(err, "sub/b.bin") && strstr(err, "nothing written"), "%s",
                 err);
    free(err);
    snprintf(p, sizeof p, "%s/sub/b.bin", x.dir);
    QP_CHECK(access(p, F_OK) != 0);
    QP_CHECK_INT_EQ(leftovers(x.dir), 0);
    // The good file of the same run is in place.
    snprintf(p, sizeof p, "%s/a.txt", x.dir);
    QP_CHECK(same_bytes(p, fx_a, strlen(fx_a)));
}

QP_TEST(present_files_should_be_left_untouched_even_when_wrong) {
    struct fx x;
    fx_make(&x, "present", 0);
    char p[1200], q[1200], *err = NULL;
    snprintf(p, sizeof p, "%s/sub", x.dir);
    mkdir(x.dir, 0700);
    mkdir(p, 0700);
    snprintf(p, sizeof p, "%s/a.txt", x.dir);
    put_file(p, fx_a, strlen(fx_a));
    snprintf(q, sizeof q, "%s/sub/b.bin", x.dir);
    put_file(q, "not the bytes", 13);
    char cmd[2600];
    snprintf(cmd, sizeof cmd, "touch -d '2001-02-03 04:05:06' '%s' '%s'", p, q);
    QP_CHECK(qpt_run(cmd, NULL) == 0);
    struct stat before_a, before_b, after_a, after_b;
    QP_CHECK(stat(p, &before_a) == 0 && stat(q, &before_b) == 0);
    QP_CHECK_INT_EQ(fx_run(&x, 1, &err), 2);
    QP_CHECK_MSG(strstr(err, "sub/b.bin") && strstr(err, "left as it is"), "%s", err);
    free(err);
    QP_CHECK(stat(p, &after_a) == 0 && stat(q, &after_b) == 0);
    QP_CHECK(after_a.st_mtime == before_a.st_mtime && after_b.st_mtime == before_b.st_mtime);
    QP_CHECK(same_bytes(q, "not the bytes", 13));
}

QP_TEST(unreachable_host_should_be_reported_as_no_network_with_exit_3) {
    struct fx x;
    fx_make(&x, "offline", 0);
    // Without the mirror the sources are used; .invalid never resolves (RFC 6761).
    char text[400];
    snprintf(text, sizeof text, "%.64s %zu a.txt http://qprobe-fixtures.invalid/a.txt\n",
             "0000000000000000000000000000000000000000000000000000000000000000", strlen(fx_a));
    put_file(x.manifest, text, strlen(text));
    char *err = NULL;
    QP_CHECK_INT_EQ(fx_run(&x, 0, &err), 3);
    QP_CHECK_MSG(strstr(err, "no network: cannot reach qprobe-fixtures.invalid"), "%s", err);
    free(err);
    QP_CHECK_INT_EQ(leftovers(x.dir), 0);
}

QP_TEST(bad_manifest_line_should_exit_2_naming_the_line) {
    struct fx x;
    fx_make(&x, "manifest", 0);
    // The last line without its newline: still read.
    static const char bad[] = "# ok\nnot-a-hash 12 a.txt";
    put_file(x.manifest, bad, strlen(bad));
    char *err = NULL;
    QP_CHECK_INT_EQ(fx_run(&x, 1, &err), 2);
    QP_CHECK_MSG(strstr(err, "MANIFEST:2:"), "%s", err);
    free(err);
}

QP_TEST(repository_manifest_should_match_the_real_fixtures_and_download_them_through_a_mirror) {
    const char *shared = getenv("QP_FIXTURES");
    if (!shared || !*shared) QP_SKIP("QP_FIXTURES not set");
    qpt_fixture("models/llama2c/stories260K.bin"); // skips when the real fixtures are absent
    // Every downloadable entry of fixtures/MANIFEST, checked in place.
    char cmd[8192], *out = NULL;
    snprintf(cmd, sizeof cmd, "awk '$1 !~ /^#/ && NF == 4 && $4 ~ /:\\/\\// { print $3 }' '%s/fixtures/MANIFEST' | "
                              "xargs '%s/scripts/fixtures.sh' --check '%s' 2>&1", root(), root(), shared);
    QP_CHECK_MSG(qpt_run(cmd, &out) == 0, "%s", out ? out : "");
    QP_CHECK(out && strstr(out, " present, 0 added, 0 missing"));
    free(out);
    // Two of them downloaded through a file:// mirror of the real folder (one a zip member at
    // its source): the real bytes pass the manifest's checksums.
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/real", qpt_tmpdir());
    snprintf(cmd, sizeof cmd, "FIXTURES_MIRROR='file://%s' '%s/scripts/fixtures.sh' '%s' models/llama2c/tok512.bin "
                              "data/wikitext-2-raw/wiki.test.raw 2>&1",
             shared, root(), dir);
    QP_CHECK_MSG(qpt_run(cmd, &out) == 0, "%s", out ? out : "");
    QP_CHECK(out && strstr(out, "0 present, 2 added, 0 missing"));
    free(out);
}
