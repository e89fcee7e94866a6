// test_report.c — `qprobe report` end to end on a study made by real `qprobe eval` runs of the
// fixture model, plus the report layer's pure pieces (Pareto frontier, table writers, spec lists).
//
// The study (three variants, 2 chunks, isolated sensitivity over 1 chunk) takes ~30 s to make, so
// the cases share one: it is built once under the runner's temporary root (QP_TMP), behind a file
// lock, and only read afterwards.
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "qp.h"
#include "qp_test.h"
#include "rpt_figs.h"
#include "rpt_study.h"
#include "rpt_table.h"

static const char *const study_specs[] = {"q8_0", "q4_0;act=q8", "rtn:bits=3:group=32:asym"};

// Figures the shared study has data for (its eval runs score one task suite).
static const char *const eval_figs[] = {"bpw_ppl", "bpw_kld", "bpw_top1", "layers", "weight_hist", "act_hist",
                                        "speed_size", "grid", "tasks", "bpw_task_tinystories-cloze"};
static const char *const csvs[] = {"variants", "layers", "weights", "grid", "tasks", "sensitivity", "activations"};

// ---------------------------------------------------------------------------------------------
// Helpers

static int exists(const char *dir, const char *name) {
    char p[8192];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_size > 0;
}

static long file_size(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 ? (long)sb.st_size : -1;
}

// Runs a shell command built from fmt; returns its exit status, stdout into *out (may be NULL).
static int sh(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int sh(char **out, const char *fmt, ...) {
    char cmd[16384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    return qpt_run(cmd, out);
}

static int count_lines(const char *s) {
    int n = 0;
    for (; s && *s; s++) n += *s == '\n';
    return n;
}

// The shared study database: built by the first case that needs it (under a lock), reused by the
// others. Without QP_TMP (a case run by hand) it is built in the case's own scratch directory.
static const char *study_db(void) {
    static char db[4200];
    if (db[0]) return db;
    const char *root = getenv("QP_TMP");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", root && *root ? root : qpt_tmpdir());
    snprintf(db, sizeof db, "%s/report_study.sqlite", dir);
    char lock[4200], done[4200];
    snprintf(lock, sizeof lock, "%s/report_study.lock", dir);
    snprintf(done, sizeof done, "%s/report_study.done", dir);
    int fd = open(lock, O_CREAT | O_RDWR, 0600);
    QP_CHECK_MSG(fd >= 0, "cannot open lock '%s': %s", lock, strerror(errno));
    QP_CHECK(flock(fd, LOCK_EX) == 0);
    if (access(done, F_OK) != 0) {
        unlink(db);
        const char *text = qpt_text_prefix(100000);
        const char *model = qpt_fixture("models/llama2c/stories260K.bin");
        const char *tok = qpt_fixture("models/llama2c/tok512.bin");
        for (size_t i = 0; i < QP_ARRAY_LEN(study_specs); i++) {
            int rc = sh(NULL, "'%s' eval -m '%s' -z '%s' --text '%s' --db '%s' -q '%s' --chunks 2 --sensitivity 1 "
                              "--tasks tinystories-cloze --task-limit 40 --json >/dev/null",
                        qpt_qprobe(), model, tok, text, db, study_specs[i]);
            QP_CHECK_MSG(rc == 0, "qprobe eval -q '%s' failed (exit %d)", study_specs[i], rc);
        }
        FILE *f = fopen(done, "w");
        QP_CHECK(f != NULL);
        fclose(f);
    }
    flock(fd, LOCK_UN);
    close(fd);
    return db;
}

// Writes the report of db into DIR = scratch/sub; returns DIR. extra: more options (may be "").
static const char *report(const char *db, const char *sub, const char *extra, int *rc, char **err_text) {
    static char dir[4200];
    char errf[4300];
    snprintf(dir, sizeof dir, "%s/%s", qpt_tmpdir(), sub);
    snprintf(errf, sizeof errf, "%s.stderr", dir);
    *rc = sh(NULL, "'%s' report --db '%s' -o '%s' %s >/dev/null 2>'%s'", qpt_qprobe(), db, dir, extra, errf);
    if (err_text) *err_text = qpt_read_file(errf, NULL);
    return dir;
}

// The file NAME of report folder dir, read whole (free it); NULL when missing.
static char *read_out(const char *dir, const char *name) {
    char path[8192];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return qpt_read_file(path, NULL);
}

// Writes the report of db into scratch/out (checking that it succeeds) and reads its file NAME.
static char *report_file(const char *db, const char *name) {
    int rc;
    const char *dir = report(db, "out", "", &rc, NULL);
    QP_CHECK_INT_EQ(rc, 0);
    char *text = read_out(dir, name);
    QP_CHECK_MSG(text != NULL, "no %s in %s", name, dir);
    return text;
}

// Opens db read-only into *h and prepares sql on it (both checked).
static sqlite3_stmt *db_query(const char *db, sqlite3 **h, const char *sql) {
    QP_CHECK(sqlite3_open_v2(db, h, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK);
    sqlite3_stmt *q;
    QP_CHECK_MSG(sqlite3_prepare_v2(*h, sql, -1, &q, NULL) == SQLITE_OK, "%s", sqlite3_errmsg(*h));
    return q;
}

// index.html, summary.md and every table's CSV file are in dir.
static void check_pages_and_tables(const char *dir) {
    QP_CHECK(exists(dir, "index.html"));
    QP_CHECK(exists(dir, "summary.md"));
    for (size_t i = 0; i < QP_ARRAY_LEN(csvs); i++) {
        char f[64];
        snprintf(f, sizeof f, "%s.csv", csvs[i]);
        QP_CHECK_MSG(exists(dir, f), "missing %s", f);
    }
}

static int gnuplot_on_path(void) { return sh(NULL, "command -v gnuplot >/dev/null 2>&1") == 0; }

// The field after the col-th '|' of a Markdown table row (0 = the first cell), trimmed.
static void md_cell(const char *row, int col, char *out, size_t cap) {
    const char *p = row;
    for (int i = 0; i <= col; i++) {
        while (*p && !(*p == '|' && (p == row || p[-1] != '\\'))) p++;
        if (*p) p++;
    }
    while (*p == ' ') p++;
    size_t n = 0;
    while (*p && *p != '\n' && !(*p == '|' && p[-1] != '\\') && n + 1 < cap) out[n++] = *p++;
    while (n && out[n - 1] == ' ') n--;
    out[n] = 0;
}

// ---------------------------------------------------------------------------------------------
// End to end

QP_TEST(report_should_write_html_md_csv_and_both_image_formats_of_every_figure) {
    const char *db = study_db();
    if (!gnuplot_on_path()) QP_SKIP("gnuplot is not on PATH (scripts/setup-deps.sh installs gnuplot-nox)");
    int rc;
    char *err = NULL;
    const char *dir = report(db, "out", "", &rc, &err);
    QP_CHECK_MSG(rc == 0, "qprobe report exit %d: %s", rc, err ? err : "");
    QP_CHECK_MSG(err && err[0] == 0, "unexpected stderr: %s", err);
    free(err);
    check_pages_and_tables(dir);
    for (size_t i = 0; i < QP_ARRAY_LEN(eval_figs); i++) {
        static const char *const ext[] = {"svg", "png", "gp", "dat"};
        for (size_t e = 0; e < QP_ARRAY_LEN(ext); e++) {
            char f[64];
            snprintf(f, sizeof f, "%s.%s", eval_figs[i], ext[e]);
            QP_CHECK_MSG(exists(dir, f), "missing %s", f);
        }
    }
    // The page is self-contained: every figure inline, nothing loaded from elsewhere.
    char *html = read_out(dir, "index.html");
    QP_CHECK(html != NULL);
    int svgs = 0;
    for (const char *p = html; (p = strstr(p, "<svg")) != NULL; p++) svgs++;
    QP_CHECK_INT_EQ(svgs, (int)QP_ARRAY_LEN(eval_figs));
    QP_CHECK(strstr(html, "src=\"http") == NULL && strstr(html, "src='http") == NULL);
    QP_CHECK(strstr(html, "<link") == NULL);
    QP_CHECK(strstr(html, "<script src") == NULL);
    for (size_t i = 0; i < QP_ARRAY_LEN(study_specs); i++) QP_CHECK_MSG(strstr(html, study_specs[i]), "%s", study_specs[i]);
    free(html);
    // A PNG is a PNG.
    char *png = read_out(dir, "bpw_kld.png");
    QP_CHECK(png && memcmp(png, "\x89PNG\r\n\x1a\n", 8) == 0);
    free(png);
}

QP_TEST(summary_md_should_show_the_ppl_and_kld_stored_in_the_database) {
    const char *db = study_db();
    char *md = report_file(db, "summary.md");
    sqlite3 *h;
    sqlite3_stmt *q = db_query(db, &h,
                               "SELECT v.spec, p.value, k.value FROM variant v"
                               " JOIN metric p ON p.variant_id = v.id AND p.suite = 'ppl' AND p.name = 'ppl'"
                               " LEFT JOIN metric k ON k.variant_id = v.id AND k.suite = 'kld' AND k.name = 'mean'"
                               " WHERE v.run_id = (SELECT max(id) FROM run) ORDER BY v.ord, v.id");
    int rows = 0, with_kld = 0;
    while (sqlite3_step(q) == SQLITE_ROW) {
        const char *spec = (const char *)sqlite3_column_text(q, 0);
        double ppl = sqlite3_column_double(q, 1);
        int has_kld = sqlite3_column_type(q, 2) != SQLITE_NULL;
        double kld = sqlite3_column_double(q, 2);
        char key[512], cell[256];
        snprintf(key, sizeof key, "\n| %s |", spec);
        const char *row = strstr(md, key);
        QP_CHECK_MSG(row, "no row for '%s' in summary.md", spec);
        row++;
        // Columns: spec | bpw | bytes | PPL ± | ΔPPL % | mean KLD ± | ...
        md_cell(row, 3, cell, sizeof cell);
        double md_ppl = strtod(cell, NULL);
        // Shown with 4 decimals: equal to the stored value within half a unit of the last digit.
        QP_CHECK_MSG(fabs(md_ppl - ppl) <= 0.5e-4 + 1e-12, "%s: PPL %s in summary.md, %.9g in the database", spec,
                     cell, ppl);
        md_cell(row, 5, cell, sizeof cell);
        if (has_kld) {
            double md_kld = strtod(cell, NULL);
            // Shown with 5 significant digits.
            QP_CHECK_MSG(fabs(md_kld - kld) <= 0.5e-4 * fabs(kld), "%s: KLD %s in summary.md, %.9g in the database",
                         spec, cell, kld);
            with_kld++;
        } else {
            QP_CHECK_MSG(cell[0] == 0, "%s: the reference has no KLD but summary.md shows '%s'", spec, cell);
        }
        rows++;
    }
    sqlite3_finalize(q);
    sqlite3_close(h);
    QP_CHECK_INT_EQ(rows, (int)QP_ARRAY_LEN(study_specs) + 1); // and the reference
    QP_CHECK_INT_EQ(with_kld, (int)QP_ARRAY_LEN(study_specs));
    QP_CHECK(strstr(md, "## Protocol and provenance") != NULL);
    QP_CHECK(strstr(md, "Worst layer per variant") != NULL); // from table sensitivity
    QP_CHECK(strstr(md, "Best variant under a size budget") != NULL);
    free(md);
}

QP_TEST(variants_csv_should_hold_the_database_values_at_full_precision) {
    const char *db = study_db();
    char *csv = report_file(db, "variants.csv");
    const char *head = "spec,bits_per_weight,weight_bytes,ppl,ppl_stderr,dppl_pct,kld_mean,kld_stderr,";
    QP_CHECK(strncmp(csv, head, strlen(head)) == 0);

    sqlite3 *h;
    sqlite3_stmt *q = db_query(db, &h,
                               "SELECT v.spec, v.bits_per_weight, k.value FROM variant v"
                               " JOIN metric k ON k.variant_id = v.id AND k.suite = 'kld' AND k.name = 'mean'"
                               " WHERE v.run_id = (SELECT max(id) FROM run)");
    int rows = 0;
    while (sqlite3_step(q) == SQLITE_ROW) {
        const char *spec = (const char *)sqlite3_column_text(q, 0);
        char key[512];
        // Specs with ';' need no quoting; those with ',' or '"' would be quoted.
        snprintf(key, sizeof key, "\n%s,", spec);
        const char *row = strstr(csv, key);
        QP_CHECK_MSG(row, "no row for '%s' in variants.csv", spec);
        row += strlen(key);
        double bpw = strtod(row, NULL);
        QP_CHECK_NEAR(bpw, sqlite3_column_double(q, 1), 1e-9);
        // kld_mean is the 7th field.
        for (int comma = 0; comma < 5; comma++) row = strchr(row, ',') + 1;
        QP_CHECK_NEAR(strtod(row, NULL), sqlite3_column_double(q, 2), 1e-9);
        rows++;
    }
    sqlite3_finalize(q);
    sqlite3_close(h);
    QP_CHECK_INT_EQ(rows, (int)QP_ARRAY_LEN(study_specs));
    free(csv);
}

QP_TEST(report_without_gnuplot_should_warn_once_and_still_write_html_md_csv) {
    const char *db = study_db();
    char empty[4200], dir[4200], errf[4300];
    snprintf(empty, sizeof empty, "%s/emptybin", qpt_tmpdir());
    snprintf(dir, sizeof dir, "%s/nognuplot", qpt_tmpdir());
    snprintf(errf, sizeof errf, "%s/nognuplot.stderr", qpt_tmpdir());
    QP_CHECK(mkdir(empty, 0700) == 0);
    int rc = sh(NULL, "env PATH='%s' '%s' report --db '%s' -o '%s' >/dev/null 2>'%s'", empty, qpt_qprobe(), db, dir,
                errf);
    char *err = qpt_read_file(errf, NULL);
    QP_CHECK_MSG(rc == 0, "exit %d: %s", rc, err ? err : "");
    QP_CHECK_MSG(count_lines(err) == 1 && strstr(err, "warning") && strstr(err, "gnuplot"),
                 "expected one warning line about gnuplot, got: %s", err ? err : "(none)");
    free(err);
    check_pages_and_tables(dir);
    // The scripts are there to be run later; nothing was rendered.
    QP_CHECK(exists(dir, "bpw_ppl.gp") && exists(dir, "bpw_ppl.dat"));
    QP_CHECK(!exists(dir, "bpw_ppl.svg") && !exists(dir, "bpw_ppl.png"));
    char *html = read_out(dir, "index.html");
    QP_CHECK(html && strstr(html, "gnuplot bpw_ppl.gp") && !strstr(html, "<svg"));
    free(html);
}

// Every bad input: exit 2 and one line on stderr naming the file.
static void check_refused(const char *what, const char *args, const char *must_name) {
    char errf[4300];
    snprintf(errf, sizeof errf, "%s/refused.stderr", qpt_tmpdir());
    int rc = sh(NULL, "'%s' report %s >/dev/null 2>'%s'", qpt_qprobe(), args, errf);
    char *err = qpt_read_file(errf, NULL);
    QP_CHECK_MSG(rc == 2, "%s: exit %d, expected 2 (%s)", what, rc, err ? err : "");
    QP_CHECK_MSG(count_lines(err) == 1, "%s: expected one line on stderr, got: %s", what, err ? err : "(none)");
    QP_CHECK_MSG(strstr(err, must_name), "%s: the message does not name '%s': %s", what, must_name, err);
    free(err);
}

QP_TEST(bad_database_run_or_folder_should_exit_2_with_one_line_naming_the_file) {
    const char *db = study_db();
    const char *t = qpt_tmpdir();
    char args[16384], path[4300], path2[4300];

    snprintf(path, sizeof path, "%s/missing.sqlite", t);
    snprintf(args, sizeof args, "--db '%s' -o '%s/o1'", path, t);
    check_refused("missing database", args, path);

    snprintf(path, sizeof path, "%s/text.sqlite", t);
    FILE *f = fopen(path, "w");
    QP_CHECK(f && fputs("this is not a database, just text that is long enough to have a header\n", f) >= 0);
    fclose(f);
    snprintf(args, sizeof args, "--db '%s' -o '%s/o2'", path, t);
    check_refused("text file as database", args, path);

    // Someone else's SQLite database.
    snprintf(path, sizeof path, "%s/foreign.sqlite", t);
    sqlite3 *h;
    QP_CHECK(sqlite3_open(path, &h) == SQLITE_OK);
    QP_CHECK(sqlite3_exec(h, "CREATE TABLE t (x); INSERT INTO t VALUES (1);", NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(h);
    snprintf(args, sizeof args, "--db '%s' -o '%s/o3'", path, t);
    check_refused("foreign SQLite database", args, path);

    snprintf(args, sizeof args, "--db '%s' --run 999 -o '%s/o4'", db, t);
    check_refused("unknown run", args, db);
    snprintf(args, sizeof args, "--db '%s' --variants 'q8_0,no_such_spec' -o '%s/o5'", db, t);
    check_refused("unknown spec in --variants", args, "no_such_spec");

    // An output folder that cannot be made: its parent is a file.
    snprintf(path, sizeof path, "%s/plainfile", t);
    f = fopen(path, "w");
    QP_CHECK(f != NULL);
    fclose(f);
    snprintf(args, sizeof args, "--db '%s' -o '%s/sub'", db, path);
    check_refused("output folder under a file", args, path);

    // A folder whose first report file cannot be written (a directory is in its place).
    snprintf(path, sizeof path, "%s/o6", t);
    snprintf(path2, sizeof path2, "%s/o6/variants.csv", t);
    QP_CHECK(mkdir(path, 0700) == 0 && mkdir(path2, 0700) == 0);
    snprintf(args, sizeof args, "--db '%s' -o '%s'", db, path);
    check_refused("unwritable report file", args, path2);

    snprintf(args, sizeof args, "-o '%s/o7'", t);
    check_refused("no --db", args, "--db");
}

QP_TEST(help_should_describe_the_command_and_exit_0) {
    char *out = NULL;
    int rc = sh(&out, "'%s' report --help", qpt_qprobe());
    QP_CHECK_INT_EQ(rc, 0);
    QP_CHECK(out && strstr(out, "--db") && strstr(out, "--variants") && strstr(out, "index.html"));
    free(out);
    rc = sh(&out, "'%s' --help", qpt_qprobe());
    QP_CHECK(rc == 0 && out && strstr(out, "report"));
    free(out);
}

QP_TEST(variants_option_should_choose_the_per_layer_figure_variants) {
    const char *db = study_db();
    int rc;
    const char *dir = report(db, "chosen", "--variants 'rtn:bits=3:group=32:asym,q8_0'", &rc, NULL);
    QP_CHECK_INT_EQ(rc, 0);
    char *dat = read_out(dir, "layers.dat");
    QP_CHECK(dat != NULL);
    int blocks = 0;
    for (const char *p = dat; (p = strstr(p, "# index ")) != NULL; p++) blocks++;
    QP_CHECK_INT_EQ(blocks, 2);
    const char *a = strstr(dat, "\"rtn:bits=3:group=32:asym\""), *b = strstr(dat, "\"q8_0\"");
    QP_CHECK(a && b && a < b); // in the order given
    QP_CHECK(strstr(dat, "q4_0;act=q8") == NULL);
    free(dat);
}

// Grid collapse and task metrics of the real study reach their CSV tables with the database's values.
static double db_value(const char *db, const char *sql) {
    sqlite3 *h;
    QP_CHECK(sqlite3_open(db, &h) == SQLITE_OK);
    sqlite3_stmt *st;
    QP_CHECK_MSG(sqlite3_prepare_v2(h, sql, -1, &st, NULL) == SQLITE_OK, "%s", sqlite3_errmsg(h));
    QP_CHECK(sqlite3_step(st) == SQLITE_ROW);
    double v = sqlite3_column_double(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(h);
    return v;
}

QP_TEST(grid_and_task_data_should_add_their_figures_tables_and_findings) {
    const char *db = study_db();
    int rc;
    char *err = NULL;
    const char *dir = report(db, "tasks", "", &rc, &err);
    QP_CHECK_MSG(rc == 0, "exit %d: %s", rc, err ? err : "");
    free(err);
    QP_CHECK(exists(dir, "grid.gp") && exists(dir, "tasks.gp") && exists(dir, "bpw_task_tinystories-cloze.gp"));
    char want[256];
    char *csv = read_out(dir, "tasks.csv");
    double acc = db_value(db, "SELECT m.value FROM metric m JOIN variant v ON v.id = m.variant_id"
                              " WHERE v.spec = 'q8_0' AND m.suite = 'task:tinystories-cloze' AND m.name = 'acc'");
    snprintf(want, sizeof want, "q8_0,tinystories-cloze,%g", acc);
    QP_CHECK_MSG(csv && strstr(csv, want), "no '%s' in tasks.csv:\n%s", want, csv ? csv : "");
    free(csv);
    csv = read_out(dir, "grid.csv");
    // One row per variant: the fewest codes any group of any tensor uses, over the tensors with codes.
    double cmin = db_value(db, "SELECT min(g.codes_used_min) FROM grid_stat g JOIN variant v ON v.id = g.variant_id"
                               " WHERE v.spec = 'q4_0;act=q8'");
    QP_CHECK(cmin >= 1 && cmin <= 16);
    snprintf(want, sizeof want, ",%.0f,16,", cmin);
    const char *row = csv ? strstr(csv, "\nq4_0;act=q8,") : NULL;
    QP_CHECK_MSG(row && strstr(row, want) && strstr(row, want) < strchr(row + 1, '\n'), "no '%s' in:\n%s", want,
                 csv ? csv : "");
    free(csv);
}

QP_TEST(gate_junit_should_add_a_pass_fail_column) {
    const char *db = study_db();
    char xml[4300];
    snprintf(xml, sizeof xml, "%s/gate.xml", qpt_tmpdir());
    // The shape `qprobe gate --junit` writes: one test case per (variant, rule), a <failure> inside
    // the failed ones.
    FILE *f = fopen(xml, "w");
    QP_CHECK(f != NULL);
    fputs("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
          "<testsuite name=\"qprobe-gate\" tests=\"3\" failures=\"1\" errors=\"0\" skipped=\"0\">\n"
          "  <testcase classname=\"q8_0\" name=\"max_kld_mean\"/>\n"
          "  <testcase classname=\"rtn:bits=3:group=32:asym\" name=\"max_kld_mean\">\n"
          "    <failure type=\"regression\" message=\"max_kld_mean: 0.78 &gt; 0.05\">value 0.78</failure>\n"
          "  </testcase>\n"
          "  <testcase classname=\"rtn:bits=3:group=32:asym\" name=\"min_top1\"/>\n"
          "</testsuite>\n", f);
    fclose(f);
    char extra[4400];
    snprintf(extra, sizeof extra, "--gate '%s'", xml);
    int rc;
    const char *dir = report(db, "gated", extra, &rc, NULL);
    QP_CHECK_INT_EQ(rc, 0);
    char *csv = read_out(dir, "variants.csv");
    QP_CHECK(csv != NULL);
    const char *q8 = strstr(csv, "\nq8_0,"), *rtn = strstr(csv, "\nrtn:bits=3:group=32:asym,");
    const char *q4 = strstr(csv, "\nq4_0;act=q8,");
    QP_CHECK(q8 && rtn && q4);
    QP_CHECK(strncmp(strchr(q8, '\r') - 4, "PASS", 4) == 0);
    QP_CHECK(strncmp(strchr(rtn, '\r') - 4, "FAIL", 4) == 0);
    QP_CHECK(strncmp(strchr(q4, '\r') - 9, "no result", 9) == 0);
    free(csv);
}

// ---------------------------------------------------------------------------------------------
// History, identical variants, fallbacks, fitted axes

// `qprobe eval` of one spec at one chunk of a short text into db, as a run labelled label.
static void eval_quick(const char *db, const char *spec, const char *label) {
    int rc = sh(NULL, "'%s' eval -m '%s' -z '%s' --text '%s' --db '%s' -q '%s' --chunks 1 --layer-chunks 0 "
                      "--act-chunks 0 -t 2 --label '%s' --json >/dev/null",
                qpt_qprobe(), qpt_fixture("models/llama2c/stories260K.bin"), qpt_fixture("models/llama2c/tok512.bin"),
                qpt_text_prefix(60000), db, spec, label);
    QP_CHECK_MSG(rc == 0, "qprobe eval -q '%s' --label %s failed (exit %d)", spec, label, rc);
}

// Field n (0-based) of the CSV line at row (RFC 4180 quoting), into out.
static void csv_field(const char *row, int n, char *out, size_t cap) {
    size_t k = 0;
    for (int field = 0; *row && *row != '\r' && *row != '\n'; field++) {
        int quoted = *row == '"';
        if (quoted) row++;
        while (*row && (quoted ? !(row[0] == '"' && row[1] != '"') : *row != ',' && *row != '\r' && *row != '\n')) {
            if (quoted && row[0] == '"') row++; // "" inside a quoted field
            if (field == n && k + 1 < cap) out[k++] = *row;
            row++;
        }
        if (quoted && *row == '"') row++;
        if (field == n) break;
        if (*row == ',') row++;
    }
    out[k] = 0;
}

// The index of a column in a CSV header line.
static int csv_col(const char *csv, const char *name) {
    char cell[256];
    for (int i = 0; i < 64; i++) {
        csv_field(csv, i, cell, sizeof cell);
        if (strcmp(cell, name) == 0) return i;
    }
    qpt_fail(__FILE__, __LINE__, "no column '%s' in %.200s", name, csv);
}

QP_TEST(history_should_show_each_runs_gate_values_from_the_database_and_when_rules_began_failing) {
    char db[4200], sql[1024];
    snprintf(db, sizeof db, "%s/history.sqlite", qpt_tmpdir());
    static const char *const labels[] = {"night-1", "night-2", "night-3"};
    for (int r = 0; r < 3; r++) {
        eval_quick(db, "q8_0", labels[r]);
        eval_quick(db, "rtn:bits=2:group=32:asym", labels[r]);
    }
    // Fixture edit: q8_0's mean KLD 100 times larger from run 2 on, a drift past the 8-bit limit
    // (0.002) of examples/gate.json, so that its rule began failing at run 2.
    qpt_db_exec(db, "UPDATE metric SET value = value * 100 WHERE suite = 'kld' AND name = 'mean' AND variant_id IN "
                "(SELECT id FROM variant WHERE spec = 'q8_0' AND run_id >= 2)");
    char extra[2048];
    snprintf(extra, sizeof extra, "--rules '%s/examples/gate.json'", getenv("QP_ROOT") ? getenv("QP_ROOT") : ".");
    int rc;
    char *err = NULL;
    const char *dir = report(db, "history", extra, &rc, &err);
    QP_CHECK_MSG(rc == 0, "exit %d: %s", rc, err ? err : "");
    free(err);
    QP_CHECK(exists(dir, "trends.html") && exists(dir, "trends.csv"));
    if (gnuplot_on_path()) QP_CHECK(exists(dir, "trend_max_kld_mean.svg") && exists(dir, "trend_min_top1.png"));

    // Every value of trends.csv against the database: mean KLD, KLD p99 and top-1 as stored, ΔPPL %
    // from the stored perplexities of the variant and its run's reference.
    char *csv = read_out(dir, "trends.csv");
    QP_CHECK(csv != NULL);
    int c_run = csv_col(csv, "run"), c_label = csv_col(csv, "label"), c_spec = csv_col(csv, "spec");
    int c_rule = csv_col(csv, "rule"), c_value = csv_col(csv, "value"), c_status = csv_col(csv, "status");
    int c_model = csv_col(csv, "model_sha256");
    int checked = 0;
    for (const char *row = strchr(csv, '\n'); row && row[1]; row = strchr(row + 1, '\n')) {
        char run[32], label[64], spec[128], rule[64], value[64], status[16], model[32];
        csv_field(row + 1, c_run, run, sizeof run);
        csv_field(row + 1, c_label, label, sizeof label);
        csv_field(row + 1, c_spec, spec, sizeof spec);
        csv_field(row + 1, c_rule, rule, sizeof rule);
        csv_field(row + 1, c_value, value, sizeof value);
        csv_field(row + 1, c_status, status, sizeof status);
        csv_field(row + 1, c_model, model, sizeof model);
        int r = atoi(run);
        QP_CHECK(r >= 1 && r <= 3);
        QP_CHECK_STR_EQ(label, labels[r - 1]);
        QP_CHECK_INT_EQ((int)strlen(model), 12);
        if (!value[0]) {
            QP_CHECK_STR_EQ(status, "SKIP"); // the task rules: no task metrics in these runs
            continue;
        }
        const char *metric = strcmp(rule, "max_kld_mean") == 0 ? "m.suite = 'kld' AND m.name = 'mean'"
                             : strcmp(rule, "max_kld_p99") == 0 ? "m.suite = 'kld' AND m.name = 'p99'"
                             : strcmp(rule, "min_top1") == 0    ? "m.suite = 'top1' AND m.name = 'agreement'"
                                                                : NULL;
        double want;
        if (metric) {
            snprintf(sql, sizeof sql, "SELECT m.value FROM metric m JOIN variant v ON v.id = m.variant_id"
                                      " WHERE v.run_id = %d AND v.spec = '%s' AND %s", r, spec, metric);
            want = db_value(db, sql);
        } else {
            QP_CHECK_STR_EQ(rule, "max_ppl_increase_pct");
            snprintf(sql, sizeof sql, "SELECT 100.0 * (m.value - r.value) / r.value FROM metric m"
                                      " JOIN variant v ON v.id = m.variant_id"
                                      " JOIN variant rv ON rv.run_id = v.run_id AND rv.is_reference = 1"
                                      " JOIN metric r ON r.variant_id = rv.id AND r.suite = 'ppl' AND r.name = 'ppl'"
                                      " WHERE v.run_id = %d AND v.spec = '%s' AND m.suite = 'ppl' AND m.name = 'ppl'",
                     r, spec);
            want = db_value(db, sql);
        }
        QP_CHECK_MSG(fabs(strtod(value, NULL) - want) <= 1e-9 * fmax(1.0, fabs(want)), "run %d %s %s: %s, database %.10g",
                     r, spec, rule, value, want);
        checked++;
    }
    QP_CHECK_INT_EQ(checked, 3 * 2 * 4); // 3 runs x 2 variants x 4 rules with values
    free(csv);

    // When each rule began failing, and by which rules.
    char *html = read_out(dir, "trends.html");
    QP_CHECK(html != NULL);
    QP_CHECK(strstr(html, "<td>q8_0</td><td>max_kld_mean</td><td>FAIL</td><td>failing since run 2 (") != NULL);
    QP_CHECK(strstr(html, "night-2)</td>") != NULL);
    QP_CHECK(strstr(html, "<td>rtn:bits=2:group=32:asym</td><td>max_kld_mean</td><td>FAIL</td><td>failing since run 1 (") !=
             NULL);
    QP_CHECK(strstr(html, "examples/gate.json") && strstr(html, "Regression gate of the example sweep"));
    free(html);
    char *md = read_out(dir, "summary.md");
    QP_CHECK(md && strstr(md, "History: 3 runs judged by") && strstr(md, "`q8_0` max_kld_mean: failing since run 2"));
    free(md);
    html = read_out(dir, "index.html");
    QP_CHECK(html && strstr(html, "href=\"trends.html\""));
    free(html);
}

QP_TEST(identical_variants_and_fallbacks_should_show_in_table_findings_and_figures) {
    char db[4200];
    snprintf(db, sizeof db, "%s/same.sqlite", qpt_tmpdir());
    // On stories260K (rows of 64 and 172 values) every q2_k and q3_k tensor falls back: to iq4_nl
    // (64) and f16 (172), which is iq4_nl's own result.
    static const char *const specs[] = {"q2_k", "q3_k", "iq4_nl", "q4_0", "q4_0;act=q8", "rtn:bits=2:group=32:asym"};
    for (size_t i = 0; i < QP_ARRAY_LEN(specs); i++) eval_quick(db, specs[i], "same");
    char sql[512];
    snprintf(sql, sizeof sql, "SELECT count(DISTINCT weights_sha256) FROM variant WHERE spec IN ('q2_k', 'q3_k', 'iq4_nl')");
    QP_CHECK(db_value(db, sql) == 1);
    // The same weights run with int8 activations compute other numbers: another digest.
    QP_CHECK(db_value(db, "SELECT count(DISTINCT weights_sha256) FROM variant WHERE spec IN ('q4_0', 'q4_0;act=q8')") == 2);
    QP_CHECK(db_value(db, "SELECT count(*) FROM variant WHERE weights_sha256 IS NULL OR length(weights_sha256) <> 64") == 0);

    int rc;
    const char *dir = report(db, "same", "", &rc, NULL);
    QP_CHECK_INT_EQ(rc, 0);
    char cell[512];
    char *csv = read_out(dir, "variants.csv");
    QP_CHECK(csv != NULL);
    int c_same = csv_col(csv, "same_weights"), c_n = csv_col(csv, "tensors"), c_ok = csv_col(csv, "tensors_as_asked");
    int c_fb = csv_col(csv, "fallbacks");
    const char *q2 = strstr(csv, "\nq2_k,"), *q4 = strstr(csv, "\nq4_0,"), *q4a = strstr(csv, "\n\"q4_0;act=q8\",");
    if (!q4a) q4a = strstr(csv, "\nq4_0;act=q8,");
    QP_CHECK(q2 && q4 && q4a);
    // (row, column, expected cell)
    const struct {
        const char *row;
        int col;
        const char *want;
    } cells[] = {
        {q2, c_same, "q3_k, iq4_nl"}, {q2, c_n, "37"}, {q2, c_ok, "0"}, {q2, c_fb, "q2_k→iq4_nl ×32, q2_k→f16 ×5"},
        // q4_0: the five ffn_down tensors (rows of 172) fall back to f16; no other variant shares it.
        {q4, c_ok, "32"}, {q4, c_fb, "q4_0→f16 ×5"}, {q4, c_same, ""},
    };
    for (size_t i = 0; i < QP_ARRAY_LEN(cells); i++) {
        csv_field(cells[i].row + 1, cells[i].col, cell, sizeof cell);
        QP_CHECK_MSG(strcmp(cell, cells[i].want) == 0, "cell %zu: '%s', want '%s'", i, cell, cells[i].want);
    }
    free(csv);
    char *md = read_out(dir, "summary.md");
    QP_CHECK(md && strstr(md, "Same weights: `q2_k`, `q3_k` and `iq4_nl` are one model here"));
    QP_CHECK(strstr(md, "`q2_k`: 0 of 37 tensors as asked; q2_k→iq4_nl ×32, q2_k→f16 ×5"));
    free(md);

    // The figure: one point for the three, named by all of them, coloured by family with a legend.
    char *dat = read_out(dir, "bpw_ppl.dat");
    QP_CHECK(dat && strstr(dat, "\"q2_k = q3_k = iq4_nl\"") && !strstr(dat, "\"q3_k\""));
    free(dat);
    char *gp = read_out(dir, "bpw_ppl.gp");
    QP_CHECK(gp && strstr(gp, "title \"llama.cpp types\"") && strstr(gp, "title \"RTN\""));
    // 2-bit RTN's perplexity (in the thousands at one chunk) is far above the others (about 8-10):
    // the axis ends well below it, and the point, at the edge, carries its value.
    double ppl2 = db_value(db, "SELECT m.value FROM metric m JOIN variant v ON v.id = m.variant_id"
                               " WHERE v.spec = 'rtn:bits=2:group=32:asym' AND m.suite = 'ppl' AND m.name = 'ppl'");
    double top = db_value(db, "SELECT max(m.value) FROM metric m JOIN variant v ON v.id = m.variant_id"
                              " WHERE v.spec <> 'rtn:bits=2:group=32:asym' AND m.suite = 'ppl' AND m.name = 'ppl'");
    QP_CHECK_MSG(ppl2 > 20 * top, "2-bit perplexity %g, the others up to %g: no outlier to test", ppl2, top);
    const char *yr = gp ? strstr(gp, "set yrange [") : NULL;
    QP_CHECK(yr != NULL);
    double lo = strtod(yr + 12, NULL), hi = strtod(strchr(yr, ':') + 1, NULL);
    QP_CHECK_MSG(hi < 2 * top && lo > 0, "y range [%g, %g] for values up to %g and one at %g", lo, hi, top, ppl2);
    char want[128];
    snprintf(want, sizeof want, "rtn:bits=2:group=32:asym ↑ %.4g", ppl2);
    QP_CHECK_MSG(strstr(gp, want) != NULL, "no label '%s' in bpw_ppl.gp", want);
    free(gp);
}

QP_TEST(axis_fit_should_clip_a_lone_outlier_but_not_a_spread_or_a_tight_cluster) {
    double lo, hi;
    // Perplexities 7..17 and one at 2000 (log10 units): 2000 is left out.
    double ppl[] = {log10(7.2), log10(7.5), log10(8.0), log10(8.6), log10(10.0), log10(11.6), log10(16.9), log10(2009)};
    rpt_fit_clip(ppl, 8, 0.5, &lo, &hi);
    QP_CHECK(fabs(hi - log10(16.9)) < 1e-12 && fabs(lo - log10(7.2)) < 1e-12);
    // Agreement spread evenly from 0.04 to 0.99: nothing is an outlier.
    double top1[] = {0.04, 0.49, 0.58, 0.70, 0.77, 0.82, 0.89, 0.99};
    rpt_fit_clip(top1, 8, 0.099, &lo, &hi);
    QP_CHECK(lo == 0.04 && hi == 0.99);
    // A tight cluster with a small step is no outlier either (the gap is under min_gap).
    double tight[] = {0.990, 0.991, 0.992, 0.999};
    rpt_fit_clip(tight, 4, 0.0999, &lo, &hi);
    QP_CHECK(lo == 0.990 && hi == 0.999);
    // Fewer than four values: never clipped.
    double three[] = {1, 2, 1000};
    rpt_fit_clip(three, 3, 0.5, &lo, &hi);
    QP_CHECK(hi == 1000);
}

// ---------------------------------------------------------------------------------------------
// In a browser

QP_TEST(index_html_should_render_in_headless_chromium) {
    if (sh(NULL, "command -v chromium >/dev/null 2>&1") != 0)
        QP_SKIP("chromium is not installed (scripts/setup-deps.sh installs it)");
    const char *db = study_db();
    int rc;
    const char *dir = report(db, "browser", "", &rc, NULL);
    QP_CHECK_INT_EQ(rc, 0);
    char abs_dir[PATH_MAX], blank[4300], shot[4300], blank_png[4300];
    QP_CHECK(realpath(dir, abs_dir) != NULL);
    snprintf(blank, sizeof blank, "%s/blank.html", abs_dir);
    FILE *f = fopen(blank, "w");
    QP_CHECK(f != NULL);
    fputs("<!DOCTYPE html><html><body></body></html>\n", f);
    fclose(f);
    snprintf(shot, sizeof shot, "%s/shot.png", abs_dir);
    snprintf(blank_png, sizeof blank_png, "%s/blank.png", abs_dir);
    static const char *const chrome =
        "chromium --headless --no-sandbox --disable-gpu --user-data-dir='%s/chrome' --window-size=1400,2000 "
        "--screenshot='%s' 'file://%s' >/dev/null 2>&1";
    char cmd[16384], index[4300];
    snprintf(index, sizeof index, "%s/index.html", abs_dir);
    snprintf(cmd, sizeof cmd, chrome, abs_dir, shot, index);
    QP_CHECK_MSG(qpt_run(cmd, NULL) == 0, "chromium failed: %s", cmd);
    snprintf(cmd, sizeof cmd, chrome, abs_dir, blank_png, blank);
    QP_CHECK_MSG(qpt_run(cmd, NULL) == 0, "chromium failed: %s", cmd);
    // Not blank, cheaply: a PNG of one flat colour compresses to a few kB whatever its size (the
    // blank page here), while text, tables and plots do not. The report's screenshot must be a PNG
    // of more than 40 kB and more than 3 times the blank page's.
    long n_shot = file_size(shot), n_blank = file_size(blank_png);
    char *png = qpt_read_file(shot, NULL);
    QP_CHECK(png && memcmp(png, "\x89PNG\r\n\x1a\n", 8) == 0);
    free(png);
    QP_CHECK_MSG(n_blank > 0 && n_shot > 40000 && n_shot > 3 * n_blank, "screenshot %ld bytes, blank page %ld",
                 n_shot, n_blank);
}

// ---------------------------------------------------------------------------------------------
// Pieces

QP_TEST(pareto_should_keep_exactly_the_undominated_points) {
    // (bits, KLD): b dominates c (fewer bits, lower KLD); d ties a in bits with worse KLD; e is NaN.
    double x[] = {4.5, 3.0, 5.0, 4.5, NAN, 8.0};
    double y[] = {0.10, 0.30, 0.40, 0.20, 0.01, 0.02};
    int on[6];
    rpt_pareto(x, y, 6, 1, on);
    int want[] = {1, 1, 0, 0, 0, 1};
    for (int i = 0; i < 6; i++) QP_CHECK_MSG(on[i] == want[i], "point %d: %d, want %d", i, on[i], want[i]);
    // Higher is better (agreement): the frontier flips.
    double a[] = {0.5, 0.9, 0.95, 0.4};
    double bx[] = {3.0, 4.5, 8.0, 5.0};
    rpt_pareto(bx, a, 4, 0, on);
    QP_CHECK(on[0] && on[1] && on[2] && !on[3]);
}

QP_TEST(table_writers_should_quote_csv_escape_md_and_html) {
    const char *cols[] = {"spec", "#v|value ±", "@#se", NULL};
    struct rpt_table t;
    QP_CHECK_INT_EQ(rpt_table_init(&t, cols), 0);
    QP_CHECK(rpt_table_row(&t) == 0);
    rpt_table_text(&t, 0, "%s", "q4_0;keep=embed,output");
    rpt_table_numtext(&t, 1, 3.14159265358979, "%.2f ± %.1f", 3.14159265358979, 0.5);
    rpt_table_num(&t, 2, 0.5, "%g");
    QP_CHECK(rpt_table_row(&t) == 1);
    rpt_table_text(&t, 0, "%s", "a|b\"<c>");
    rpt_table_num(&t, 1, NAN, "%.2f");
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    rpt_table_write_csv(&t, f);
    fclose(f);
    QP_CHECK_STR_EQ(buf, "spec,v,se\r\n\"q4_0;keep=embed,output\",3.141592654,0.5\r\n\"a|b\"\"<c>\",,\r\n");
    free(buf);
    f = open_memstream(&buf, &len);
    rpt_table_write_md(&t, f);
    fclose(f);
    QP_CHECK_STR_EQ(buf, "| spec | value ± |\n|---|---:|\n| q4_0;keep=embed,output | 3.14 ± 0.5 |\n| a\\|b\"<c> |  |\n");
    free(buf);
    f = open_memstream(&buf, &len);
    rpt_table_write_html(&t, f, "x");
    fclose(f);
    QP_CHECK(strstr(buf, "<td>a|b&quot;&lt;c&gt;</td>") && strstr(buf, "data-v=\"3.141592654\""));
    QP_CHECK(strstr(buf, ">se<") == NULL); // CSV-only column
    free(buf);
    rpt_table_deinit(&t);
}

QP_TEST(variant_lists_should_match_specs_that_contain_commas) {
    const char *db = study_db();
    char copy[4300];
    snprintf(copy, sizeof copy, "%s/commas.sqlite", qpt_tmpdir());
    QP_CHECK(sh(NULL, "cp '%s' '%s'", db, copy) == 0);
    sqlite3 *h;
    QP_CHECK(sqlite3_open(copy, &h) == SQLITE_OK);
    QP_CHECK(sqlite3_exec(h,
                          "INSERT INTO variant (run_id, spec, ord, finished) SELECT max(id),"
                          " 'q4_0;keep=embed,output', 9, 'now' FROM run;"
                          "INSERT INTO variant (run_id, spec, ord, finished) SELECT max(id), 'q4_0;keep=embed', 10,"
                          " 'now' FROM run;",
                          NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(h);
    struct rpt_study *s;
    char err[QP_ERRLEN];
    QP_CHECK_MSG(rpt_study_open(copy, 0, &s, err) == 0, "%s", err);
    int idx[8], n;
    QP_CHECK_INT_EQ(rpt_parse_variants(s, "q4_0;keep=embed,output,q8_0,q4_0;keep=embed", idx, 8, &n, err), 0);
    QP_CHECK_INT_EQ(n, 3);
    QP_CHECK_STR_EQ(s->v[idx[0]].spec, "q4_0;keep=embed,output");
    QP_CHECK_STR_EQ(s->v[idx[1]].spec, "q8_0");
    QP_CHECK_STR_EQ(s->v[idx[2]].spec, "q4_0;keep=embed");
    QP_CHECK(rpt_parse_variants(s, "q8_0,output", idx, 8, &n, err) == QP_ENOENT);
    QP_CHECK(strstr(err, "'output'") != NULL);
    rpt_study_close(s);
}

// Every finding reaches the report, however many there are (there used to be a silent cut at 64):
// the study's variant with a layer ranking is copied 70 times, each copy one more "worst layer"
// line.
QP_TEST(every_finding_should_reach_the_report_when_there_are_many) {
    char db[4200], sql[1024];
    snprintf(db, sizeof db, "%s/many.sqlite", qpt_tmpdir());
    QP_CHECK_INT_EQ(sh(NULL, "cp '%s' '%s'", study_db(), db), 0);
    for (int k = 0; k < 70; k++) {
        snprintf(sql, sizeof sql,
                 "INSERT INTO variant (run_id, spec, ord, is_reference, bits_per_weight, weight_bytes, n_weights,"
                 " finished) SELECT run_id, 'copy-%d', 100 + %d, 0, bits_per_weight, weight_bytes, n_weights, finished"
                 " FROM variant WHERE spec = 'q8_0';"
                 "INSERT INTO sensitivity (variant_id, layer, tensor, kld_mean, kld_stderr, top1, tokens, rank)"
                 " SELECT (SELECT id FROM variant WHERE spec = 'copy-%d'), layer, tensor,"
                 " kld_mean, kld_stderr, top1, tokens, rank FROM sensitivity"
                 " WHERE variant_id = (SELECT id FROM variant WHERE spec = 'q8_0');",
                 k, k, k);
        qpt_db_exec(db, sql);
    }
    char *md = report_file(db, "summary.md");
    for (int k = 0; k < 70; k++) {
        char want[64];
        snprintf(want, sizeof want, "`copy-%d`: layer", k);
        QP_CHECK_MSG(strstr(md, want) != NULL, "no finding for copy-%d in summary.md", k);
    }
    QP_CHECK_MSG(strstr(md, "Reference perplexity") != NULL, "the last finding is missing");
    free(md);
}
