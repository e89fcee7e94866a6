// test_gate.c — `qprobe gate` (reports/rpt_gate.[ch]): the rules (defaults and ordered globs,
// every malformed file refused with its JSON path), pass/fail and exit codes on real studies of
// stories260K made by `qprobe eval`, baselines (the reference, an earlier run, another database),
// variants matched by spec, task rules, and JUnit XML checked by Python's XML parser.
//
// Test fixtures made here: task metrics ('task:NAME' acc and mcnemar_p) do not come from `eval`,
// so task_rules_* inserts them with SQL into a real study; a few cases also edit a stored value
// (a baseline's ppl, a run's model_sha256, a spec) in a copy of a real study to reach a branch.
// Every edit is spelled out beside the case.
#include <sqlite3.h>
#include <unistd.h>

#include "qp.h"
#include "qp_test.h"
#include "rpt_gate.h"

#define MODEL "models/llama2c/stories260K.bin"
#define TOK "models/llama2c/tok512.bin"
#define TEXT_BYTES 30000
#define CHUNKS "4"

// The table prints values with 6 significant digits.
#define TABLE_TOL 1e-5

// ---------------------------------------------------------------------------------------------
// Helpers

static const char *tmp_path(const char *name) {
    static char bufs[8][1024];
    static int next;
    char *b = bufs[next++ % 8];
    snprintf(b, sizeof bufs[0], "%s/%s", qpt_tmpdir(), name);
    return b;
}

static const char *root_path(const char *rel) {
    static char buf[2048];
    const char *root = getenv("QP_ROOT");
    snprintf(buf, sizeof buf, "%s/%s", root && *root ? root : ".", rel);
    return buf;
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    QP_CHECK_MSG(f != NULL, "cannot write %s", path);
    QP_CHECK(fwrite(text, 1, strlen(text), f) == strlen(text));
    fclose(f);
}

// `qprobe eval` of one spec into db (label may be NULL); returns the run id it reports.
static long long eval_into(const char *db, const char *spec, const char *label) {
    char text[1024], model[1024], tok[1024], cmd[8192], lab[256] = "", *out = NULL;
    snprintf(text, sizeof text, "%s", qpt_text_prefix(TEXT_BYTES));
    snprintf(model, sizeof model, "%s", qpt_fixture(MODEL));
    snprintf(tok, sizeof tok, "%s", qpt_fixture(TOK));
    if (label) snprintf(lab, sizeof lab, "--label '%s'", label);
    snprintf(cmd, sizeof cmd,
             "'%s' eval -m '%s' -z '%s' --text '%s' --db '%s' -q '%s' %s --chunks " CHUNKS
             " --layer-chunks 0 --act-chunks 0 -t 2 --json",
             qpt_qprobe(), model, tok, text, db, spec, lab);
    QP_CHECK_INT_EQ(qpt_run(cmd, &out), 0);
    long long run = (long long)qpt_json_num(out, "run_id");
    free(out);
    return run;
}

// Runs `qprobe gate ARGS`; *out gets stdout, *errout stderr (both malloc'd). Returns the exit code.
static int gate(const char *args, char **out, char **errout) {
    char cmd[16384];
    const char *ef = tmp_path("gate.stderr");
    snprintf(cmd, sizeof cmd, "'%s' gate %s 2>'%s'", qpt_qprobe(), args, ef);
    int rc = qpt_run(cmd, out);
    *errout = qpt_read_file(ef, NULL);
    QP_CHECK(*errout != NULL);
    return rc;
}

static double sql_f64(const char *db_file, const char *sql) {
    sqlite3 *db;
    sqlite3_stmt *s;
    QP_CHECK(sqlite3_open(db_file, &db) == SQLITE_OK);
    QP_CHECK_MSG(sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK, "%s: %s", sql, sqlite3_errmsg(db));
    QP_CHECK_MSG(sqlite3_step(s) == SQLITE_ROW, "no row: %s", sql);
    double v = sqlite3_column_double(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return v;
}

// A consistent copy of a study (VACUUM INTO also folds in the WAL).
static void copy_db(const char *from, const char *to) {
    char sql[2200];
    unlink(to);
    snprintf(sql, sizeof sql, "VACUUM INTO '%s'", to);
    qpt_db_exec(from, sql);
}

// The row of the summary table for (spec, rule): its value (NaN for "-") and result word.
static double table_row(const char *out, const char *spec, const char *rule, char result[8]) {
    size_t ls = strlen(spec), lr = strlen(rule);
    for (const char *line = out; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        if (strncmp(line, spec, ls) != 0 || line[ls] != ' ') continue;
        const char *p = line + ls;
        while (*p == ' ') p++;
        if (strncmp(p, rule, lr) != 0 || p[lr] != ' ') continue;
        p += lr;
        char value[64], limit[64];
        QP_CHECK(sscanf(p, "%63s %63s %7s", value, limit, result) == 3);
        return strcmp(value, "-") == 0 ? NAN : strtod(value, NULL);
    }
    qpt_fail(__FILE__, __LINE__, "no row '%s' '%s' in:\n%s", spec, rule, out);
}

static int count_str(const char *s, const char *needle) {
    int n = 0;
    for (const char *p = strstr(s, needle); p; p = strstr(p + 1, needle)) n++;
    return n;
}

// The last non-empty line of a text.
static const char *last_line(const char *s) {
    static char buf[512];
    size_t n = strlen(s);
    while (n && s[n - 1] == '\n') n--;
    size_t b = n;
    while (b && s[b - 1] != '\n') b--;
    snprintf(buf, sizeof buf, "%.*s", (int)(n - b), s + b);
    return buf;
}

static void need_python(void) {
    if (qpt_run("python3 -c 'import xml.dom.minidom' >/dev/null 2>&1", NULL) != 0)
        QP_SKIP("python3 with xml.dom.minidom is not available");
}

// ---------------------------------------------------------------------------------------------
// Rules, in process

QP_TEST(rules_should_apply_defaults_then_matching_entries_in_order) {
    const char *json =
        "{\"comment\": \"x\", \"defaults\": {\"max_ppl_increase_pct\": 5, \"max_kld_mean\": 0.05, \"min_top1\": 0.9},\n"
        " \"variants\": [{\"match\": \"rtn:bits=2*\", \"max_ppl_increase_pct\": 400, \"max_kld_p99\": 2},\n"
        "              {\"match\": [\"q2_k\", \"rtn:*\"], \"max_ppl_increase_pct\": 50, \"min_top1\": null},\n"
        "              {\"match\": \"q4_0;act=q8\", \"max_significant_flips\": 1}]}";
    struct rpt_gate_rules *r;
    char err[QP_ERRLEN];
    QP_CHECK_MSG(rpt_gate_rules_parse(json, strlen(json), "t.json", &r, err) == 0, "%s", err);
    struct rpt_gate_limits l;
    rpt_gate_rules_for(r, "q8_0", &l);
    QP_CHECK(l.set[RPT_GATE_PPL_INCREASE] && l.limit[RPT_GATE_PPL_INCREASE] == 5);
    QP_CHECK(l.set[RPT_GATE_KLD_MEAN] && l.limit[RPT_GATE_KLD_MEAN] == 0.05);
    QP_CHECK(l.set[RPT_GATE_TOP1] && !l.set[RPT_GATE_KLD_P99] && !l.set[RPT_GATE_FLIPS] && !l.set[RPT_GATE_RECOVERY]);
    // rtn:bits=2 matches the first and (through the array) the second entry: the later one wins,
    // and null lifts the default min_top1.
    rpt_gate_rules_for(r, "rtn:bits=2:group=32:asym", &l);
    QP_CHECK(l.limit[RPT_GATE_PPL_INCREASE] == 50);
    QP_CHECK(l.set[RPT_GATE_KLD_P99] && l.limit[RPT_GATE_KLD_P99] == 2);
    QP_CHECK(!l.set[RPT_GATE_TOP1]);
    QP_CHECK(l.limit[RPT_GATE_KLD_MEAN] == 0.05);
    rpt_gate_rules_for(r, "q2_k", &l);
    QP_CHECK(l.limit[RPT_GATE_PPL_INCREASE] == 50 && !l.set[RPT_GATE_KLD_P99] && !l.set[RPT_GATE_TOP1]);
    // A glob is a glob: ';' and '=' are ordinary characters, and it must match the whole spec.
    rpt_gate_rules_for(r, "q4_0;act=q8", &l);
    QP_CHECK(l.set[RPT_GATE_FLIPS] && l.limit[RPT_GATE_FLIPS] == 1);
    rpt_gate_rules_for(r, "q4_0;act=q8;keep=embed", &l);
    QP_CHECK(!l.set[RPT_GATE_FLIPS]);
    rpt_gate_rules_destroy(r);
    QP_CHECK_STR_EQ(rpt_gate_rule_key(RPT_GATE_RECOVERY), "min_recovery");
}

QP_TEST(baseline_argument_should_tell_reference_run_ids_and_files_apart) {
    struct rpt_gate_baseline b;
    char err[QP_ERRLEN];
    QP_CHECK(rpt_gate_baseline_parse("reference", &b, err) == 0 && b.kind == RPT_GATE_BASE_REFERENCE);
    QP_CHECK(rpt_gate_baseline_parse("previous", &b, err) == 0 && b.kind == RPT_GATE_BASE_PREVIOUS);
    QP_CHECK(rpt_gate_baseline_parse("./previous", &b, err) == 0 && b.kind == RPT_GATE_BASE_FILE);
    QP_CHECK(rpt_gate_baseline_parse("12", &b, err) == 0 && b.kind == RPT_GATE_BASE_RUN && b.run_id == 12);
    QP_CHECK(rpt_gate_baseline_parse("./12", &b, err) == 0 && b.kind == RPT_GATE_BASE_FILE);
    QP_CHECK(rpt_gate_baseline_parse("old.sqlite", &b, err) == 0 && b.kind == RPT_GATE_BASE_FILE);
    QP_CHECK_STR_EQ(b.path, "old.sqlite");
    QP_CHECK(rpt_gate_baseline_parse("", &b, err) == QP_EINVAL);
    QP_CHECK(rpt_gate_baseline_parse("0", &b, err) == QP_EINVAL);
    QP_CHECK(rpt_gate_baseline_parse("99999999999999999999999", &b, err) == QP_EINVAL);
}

// ---------------------------------------------------------------------------------------------
// Malformed rules: exit 2, one line naming the JSON path

QP_TEST(malformed_rules_should_exit_2_with_the_json_path_in_one_line) {
    const char *db = tmp_path("malformed.sqlite");
    eval_into(db, "q8_0", NULL);
    static const struct {
        const char *name, *json, *expect; // json NULL: the file does not exist
    } cases[] = {
        {"unknown_top_key", "{\"default\": {\"max_kld_mean\": 0.05}}", "default: unknown key"},
        {"unknown_rule", "{\"variants\": [{\"match\": \"q*\", \"max_kld\": 1}]}", "variants[0].max_kld: unknown key"},
        {"wrong_type", "{\"defaults\": {\"max_kld_mean\": \"0.05\"}}",
         "defaults.max_kld_mean: must be a non-negative number"},
        {"negative",
         "{\"defaults\": {\"min_top1\": 0.9}, \"variants\": [{\"match\": \"a*\", \"min_top1\": 0.5},\n"
         " {\"match\": \"b*\", \"max_kld_mean\": -1}]}",
         "variants[1].max_kld_mean: must be a non-negative number"},
        {"bad_json", "{\"defaults\": {\"max_kld_mean\": 0.05,}\n}", "not valid JSON at line 1"},
        {"trailing", "{\"defaults\": {\"max_kld_mean\": 0.05}}\n{}", "not valid JSON at line 2, column 1"},
        {"empty", "", "the file is empty"},
        {"blank", " \n\t\n", "the file is empty"},
        {"missing", NULL, "cannot read rules"},
        {"glob_number", "{\"variants\": [{\"match\": 3, \"max_kld_mean\": 1}]}", "variants[0].match: must be a glob"},
        {"glob_array_item", "{\"variants\": [{\"match\": [\"q4*\", 7], \"max_kld_mean\": 1}]}",
         "variants[0].match[1]: must be a non-empty string"},
        {"no_match", "{\"defaults\": {\"min_top1\": 0.9}, \"variants\": [{\"max_kld_mean\": 1}]}",
         "variants[0].match: missing"},
        {"variants_object", "{\"variants\": {\"match\": \"q*\"}}", "variants: must be an array"},
        {"entry_not_object", "{\"defaults\": {\"min_top1\": 0.9}, \"variants\": [\"q*\"]}", "variants[0]: must be an object"},
        {"top_array", "[{\"max_kld_mean\": 1}]", "(top level): must be an object"},
        {"share_above_one", "{\"defaults\": {\"min_top1\": 1.5}}", "defaults.min_top1: must be a number between 0 and 1"},
        {"fraction_flips", "{\"defaults\": {\"max_significant_flips\": 1.5}}",
         "defaults.max_significant_flips: must be a non-negative integer"},
        {"bool_limit", "{\"defaults\": {\"max_kld_p99\": true}}", "defaults.max_kld_p99: must be a non-negative number"},
        {"duplicate", "{\"defaults\": {\"max_kld_mean\": 1, \"max_kld_mean\": 2}}", "defaults.max_kld_mean: duplicate key"},
        {"infinite", "{\"defaults\": {\"max_kld_mean\": 1e999}}", "defaults.max_kld_mean: must be a non-negative number"},
        {"no_limits", "{\"defaults\": {}, \"variants\": [{\"match\": \"q*\"}]}", "(top level): no limit is set"},
    };
    for (size_t i = 0; i < QP_ARRAY_LEN(cases); i++) {
        char rules[1100], args[8192], *out = NULL, *err = NULL;
        snprintf(rules, sizeof rules, "%s", tmp_path(cases[i].name));
        if (cases[i].json) write_file(rules, cases[i].json);
        snprintf(args, sizeof args, "--db '%s' --baseline reference --rules '%s' --junit '%s'", db, rules,
                 tmp_path("malformed.xml"));
        int rc = gate(args, &out, &err);
        QP_CHECK_MSG(rc == 2, "%s: exit %d, stderr: %s", cases[i].name, rc, err);
        QP_CHECK_MSG(strstr(err, cases[i].expect) != NULL, "%s: expected '%s' in: %s", cases[i].name,
                     cases[i].expect, err);
        QP_CHECK_MSG(count_str(err, "\n") == 1 && err[strlen(err) - 1] == '\n', "%s: not one line: %s",
                     cases[i].name, err);
        QP_CHECK_MSG(strncmp(err, "qprobe gate: ", 13) == 0, "%s: %s", cases[i].name, err);
        QP_CHECK_MSG(out && !*out, "%s: stdout not empty: %s", cases[i].name, out);
        QP_CHECK_MSG(access(tmp_path("malformed.xml"), F_OK) != 0, "%s: JUnit written on error", cases[i].name);
        free(out);
        free(err);
    }
}

// ---------------------------------------------------------------------------------------------
// Against the reference, with the example rules

QP_TEST(rtn2_should_fail_and_q8_0_should_pass_against_the_reference_under_example_rules) {
    const char *db = tmp_path("ref.sqlite"), *rules = root_path("examples/gate.json");
    char dbc[1100], rulesc[2100], junit[1100], args[8192], *out = NULL, *err = NULL;
    snprintf(dbc, sizeof dbc, "%s", db);
    snprintf(rulesc, sizeof rulesc, "%s", rules);
    snprintf(junit, sizeof junit, "%s", tmp_path("ref.xml"));
    QP_CHECK_MSG(access(rulesc, R_OK) == 0, "cannot read %s (set QP_ROOT)", rulesc);
    snprintf(args, sizeof args, "--db '%s' --baseline reference --rules '%s' --junit '%s'", dbc, rulesc, junit);

    eval_into(dbc, "q8_0", NULL);
    QP_CHECK_INT_EQ(gate(args, &out, &err), 0);
    QP_CHECK_MSG(strncmp(last_line(out), "gate: PASS", 10) == 0, "%s", out);
    char res[8];
    double d = table_row(out, "q8_0", "max_ppl_increase_pct", res);
    QP_CHECK_STR_EQ(res, "PASS");
    // The value is 100 (ppl - ppl_ref) / ppl_ref of the stored numbers.
    double ppl = sql_f64(dbc, "SELECT value FROM metric m JOIN variant v ON v.id = m.variant_id "
                              "WHERE v.spec = 'q8_0' AND m.suite = 'ppl' AND m.name = 'ppl'");
    double ref = sql_f64(dbc, "SELECT value FROM metric m JOIN variant v ON v.id = m.variant_id "
                              "WHERE v.is_reference = 1 AND m.suite = 'ppl' AND m.name = 'ppl'");
    QP_CHECK_NEAR(d, 100 * (ppl - ref) / ref, TABLE_TOL);
    QP_CHECK(d > 0);
    // No task metrics: the task rules are skipped, and say so.
    double r = table_row(out, "q8_0", "min_recovery", res);
    QP_CHECK(isnan(r) && strcmp(res, "SKIP") == 0);
    QP_CHECK(strstr(out, "no task metrics") != NULL);
    char *xml = qpt_read_file(junit, NULL);
    QP_CHECK(xml && count_str(xml, "<failure") == 0 && count_str(xml, "<testcase") > 0);
    free(xml);
    free(out);
    free(err);

    eval_into(dbc, "rtn:bits=2:group=32:asym", NULL);
    QP_CHECK_INT_EQ(gate(args, &out, &err), 1);
    QP_CHECK_MSG(strncmp(last_line(out), "gate: FAIL", 10) == 0, "%s", out);
    double kld = table_row(out, "rtn:bits=2:group=32:asym", "max_kld_mean", res);
    QP_CHECK_STR_EQ(res, "FAIL");
    QP_CHECK_NEAR(kld, sql_f64(dbc, "SELECT value FROM metric m JOIN variant v ON v.id = m.variant_id WHERE "
                                    "v.spec LIKE 'rtn%' AND m.suite = 'kld' AND m.name = 'mean'"), TABLE_TOL);
    table_row(out, "rtn:bits=2:group=32:asym", "min_top1", res);
    QP_CHECK_STR_EQ(res, "FAIL");
    table_row(out, "q8_0", "max_kld_mean", res);
    QP_CHECK_STR_EQ(res, "PASS");
    xml = qpt_read_file(junit, NULL);
    QP_CHECK(xml != NULL);
    // Every failure belongs to the rtn variant, and it has at least the KLD failure.
    const char *tc = strstr(xml, "<testcase classname=\"rtn:bits=2:group=32:asym\" name=\"max_kld_mean\">");
    QP_CHECK_MSG(tc != NULL, "%s", xml);
    QP_CHECK(strncmp(strstr(tc, "\n") + 1, "    <failure", 12) == 0);
    QP_CHECK(count_str(xml, "<failure") >= 1);
    for (const char *p = strstr(xml, "<failure"); p; p = strstr(p + 1, "<failure")) {
        const char *open = p;
        while (open > xml && strncmp(open, "<testcase", 9) != 0) open--;
        QP_CHECK_MSG(strncmp(open, "<testcase classname=\"rtn:", 25) == 0, "failure outside rtn: %.120s", open);
    }
    free(xml);
    free(out);
    free(err);
}

// ---------------------------------------------------------------------------------------------
// JUnit XML

QP_TEST(junit_should_be_well_formed_with_one_testcase_per_variant_and_rule) {
    need_python();
    char db[1100], copy[1100], rules[1100], junit[1100], args[8192], cmd[4096], *out = NULL, *err = NULL;
    snprintf(db, sizeof db, "%s", tmp_path("junit.sqlite"));
    snprintf(copy, sizeof copy, "%s", tmp_path("junit-odd.sqlite"));
    snprintf(rules, sizeof rules, "%s", tmp_path("junit.json"));
    snprintf(junit, sizeof junit, "%s", tmp_path("junit.xml"));
    eval_into(db, "q8_0", NULL);
    eval_into(db, "rtn:bits=2:group=32:asym", NULL);
    // 4 rules per variant: two pass for q8_0, all of KLD mean/p99 and top-1 fail for rtn 2-bit,
    // and min_recovery is skipped for both (no task metrics).
    write_file(rules, "{\"defaults\": {\"max_kld_mean\": 0.05, \"max_kld_p99\": 0.5, \"min_top1\": 0.9, "
                      "\"min_recovery\": 0.97}, \"variants\": [{\"match\": \"q8_0*\", \"max_kld_p99\": null}]}");
    // A copy whose q8_0 spec carries every XML special character, a two-byte UTF-8 letter and a
    // byte that is not UTF-8 (0xff): the spec column is free text to the database.
    copy_db(db, copy);
    qpt_db_exec(copy, "UPDATE variant SET spec = 'q8_0 <&\"''>' || char(233) || CAST(X'ff' AS TEXT) WHERE spec = 'q8_0'");
    for (int pass = 0; pass < 2; pass++) {
        snprintf(args, sizeof args, "--db '%s' --baseline reference --rules '%s' --junit '%s'", pass ? copy : db,
                 rules, junit);
        QP_CHECK_INT_EQ(gate(args, &out, &err), 1);
        free(out);
        free(err);
        snprintf(cmd, sizeof cmd, "python3 -c 'import xml.dom.minidom,sys; xml.dom.minidom.parse(sys.argv[1])' '%s'",
                 junit);
        QP_CHECK_MSG(qpt_run(cmd, NULL) == 0, "JUnit not well-formed (pass %d)", pass);
        // Counts and the classname read back through the parser.
        const char *py = tmp_path("count.py");
        write_file(py, "import sys, xml.dom.minidom as m\n"
                       "d = m.parse(sys.argv[1])\n"
                       "s = d.getElementsByTagName('testsuite')\n"
                       "t = d.getElementsByTagName('testcase')\n"
                       "print(len(s), s[0].getAttribute('name'), len(t), len(d.getElementsByTagName('failure')),\n"
                       "      len(d.getElementsByTagName('skipped')), s[0].getAttribute('tests'),\n"
                       "      s[0].getAttribute('failures'), s[0].getAttribute('skipped'))\n"
                       "print(ascii(t[0].getAttribute('classname')), t[0].getAttribute('name'))\n");
        snprintf(cmd, sizeof cmd, "python3 '%s' '%s'", py, junit);
        char *counts = NULL;
        QP_CHECK_INT_EQ(qpt_run(cmd, &counts), 0);
        // q8_0: kld_mean, top1, recovery (p99 lifted) = 3; rtn: 4; failures 3; skipped 2.
        QP_CHECK_MSG(strncmp(counts, "1 qprobe-gate 7 3 2 7 3 2\n", 26) == 0, "counts: %s", counts);
        const char *second = strchr(counts, '\n') + 1;
        if (pass) QP_CHECK_MSG(strcmp(second, "'q8_0 <&\"\\'>\\xe9?' max_kld_mean\n") == 0, "classname: %s", second);
        else QP_CHECK_MSG(strcmp(second, "'q8_0' max_kld_mean\n") == 0, "classname: %s", second);
        free(counts);
    }
    // Written atomically: no temporary file is left beside it.
    char ls[2200], *listing = NULL;
    snprintf(ls, sizeof ls, "ls '%s'", qpt_tmpdir());
    QP_CHECK_INT_EQ(qpt_run(ls, &listing), 0);
    QP_CHECK_MSG(strstr(listing, "junit.xml.tmp") == NULL, "%s", listing);
    free(listing);
}

// ---------------------------------------------------------------------------------------------
// Baselines

QP_TEST(baseline_run_should_match_variants_by_spec_and_fail_a_disappeared_one) {
    char db[1100], rules[1100], junit[1100], args[8192], sql[512], *out = NULL, *err = NULL;
    snprintf(db, sizeof db, "%s", tmp_path("nightly.sqlite"));
    snprintf(rules, sizeof rules, "%s", tmp_path("nightly.json"));
    snprintf(junit, sizeof junit, "%s", tmp_path("nightly.xml"));
    // Night 1: q8_0 and q4_0;act=q8. Night 2 (a later run, via --label): q8_0 and a new variant.
    long long r1 = eval_into(db, "q8_0", "night1");
    QP_CHECK_INT_EQ(eval_into(db, "q4_0;act=q8", "night1"), r1);
    long long r2 = eval_into(db, "q8_0", "night2");
    QP_CHECK_INT_EQ(eval_into(db, "rtn:bits=8:group=32:asym", "night2"), r2);
    QP_CHECK(r2 > r1);
    write_file(rules, "{\"defaults\": {\"max_ppl_increase_pct\": 1.0, \"max_kld_mean\": 0.05}}");

    snprintf(args, sizeof args, "--db '%s' --baseline %lld --rules '%s' --junit '%s'", db, r1, rules, junit);
    QP_CHECK_INT_EQ(gate(args, &out, &err), 1);
    char res[8];
    // The same spec, the same numbers: 0 % exactly (the reference's ppl would give about 0.2 %).
    QP_CHECK(table_row(out, "q8_0", "max_ppl_increase_pct", res) == 0.0);
    QP_CHECK_STR_EQ(res, "PASS");
    // The new variant: no baseline for the relative rule, the absolute one still checked.
    QP_CHECK(isnan(table_row(out, "rtn:bits=8:group=32:asym", "max_ppl_increase_pct", res)));
    QP_CHECK_STR_EQ(res, "SKIP");
    table_row(out, "rtn:bits=8:group=32:asym", "max_kld_mean", res);
    QP_CHECK_STR_EQ(res, "PASS");
    QP_CHECK(strstr(out, "rtn:bits=8:group=32:asym: new, no baseline") != NULL);
    // The variant of night 1 missing from night 2 fails.
    table_row(out, "q4_0;act=q8", "variant_present", res);
    QP_CHECK_STR_EQ(res, "FAIL");
    QP_CHECK(strstr(out, "variant disappeared") != NULL);
    char *xml = qpt_read_file(junit, NULL);
    QP_CHECK(xml && count_str(xml, "<failure") == 1 && strstr(xml, "classname=\"q4_0;act=q8\" name=\"variant_present\""));
    free(xml);
    free(out);
    free(err);

    // --run picks the current run explicitly; the default is the latest, the same here.
    snprintf(args, sizeof args, "--db '%s' --run %lld --baseline %lld --rules '%s'", db, r2, r1, rules);
    QP_CHECK_INT_EQ(gate(args, &out, &err), 1);
    free(out);
    free(err);

    // Fixture edit: night 1's q8_0 perplexity lowered by 2 %, so night 2 is 2 % worse than its
    // own spec's baseline (still 0.2 % from the reference): the 1 % limit must now fail.
    snprintf(sql, sizeof sql,
             "UPDATE metric SET value = value / 1.02 WHERE suite = 'ppl' AND name = 'ppl' AND variant_id = "
             "(SELECT id FROM variant WHERE run_id = %lld AND spec = 'q8_0')", r1);
    qpt_db_exec(db, sql);
    snprintf(args, sizeof args, "--db '%s' --baseline %lld --rules '%s'", db, r1, rules);
    QP_CHECK_INT_EQ(gate(args, &out, &err), 1);
    QP_CHECK_NEAR(table_row(out, "q8_0", "max_ppl_increase_pct", res), 2.0, TABLE_TOL);
    QP_CHECK_STR_EQ(res, "FAIL");
    free(out);
    free(err);

    // The reverse direction: night 1 against night 2: q4_0;act=q8 is new, rtn 8-bit disappeared.
    snprintf(args, sizeof args, "--db '%s' --run %lld --baseline %lld --rules '%s'", db, r1, r2, rules);
    QP_CHECK_INT_EQ(gate(args, &out, &err), 1);
    table_row(out, "rtn:bits=8:group=32:asym", "variant_present", res);
    QP_CHECK_STR_EQ(res, "FAIL");
    QP_CHECK(strstr(out, "q4_0;act=q8: new, no baseline") != NULL);
    free(out);
    free(err);
}

QP_TEST(baseline_previous_should_compare_with_the_run_before_and_exit_0_1_2) {
    char db[1100], rules[1100], args[8192], sql[512], *out = NULL, *err = NULL;
    snprintf(db, sizeof db, "%s", tmp_path("previous.sqlite"));
    snprintf(rules, sizeof rules, "%s", tmp_path("previous.json"));
    write_file(rules, "{\"defaults\": {\"max_ppl_increase_pct\": 1.0, \"max_kld_mean\": 0.05}}");
    long long r1 = eval_into(db, "q8_0", "night1");
    // One run: nothing before it (exit 2, one line naming the database).
    snprintf(args, sizeof args, "--db '%s' --baseline previous --rules '%s'", db, rules);
    QP_CHECK_INT_EQ(gate(args, &out, &err), 2);
    QP_CHECK(strstr(err, "no previous run") && strstr(err, db) && count_str(err, "\n") == 1);
    free(out);
    free(err);
    long long r2 = eval_into(db, "q8_0", "night2");
    long long r3 = eval_into(db, "q8_0", "night3");
    QP_CHECK(r1 < r2 && r2 < r3);
    // The latest run (3) against run 2: the same numbers, 0 % exactly.
    QP_CHECK_INT_EQ(gate(args, &out, &err), 0);
    char res[8];
    QP_CHECK(table_row(out, "q8_0", "max_ppl_increase_pct", res) == 0.0);
    QP_CHECK_STR_EQ(res, "PASS");
    char want[64];
    snprintf(want, sizeof want, "against the previous run %lld", r2);
    QP_CHECK_MSG(strstr(out, want) != NULL, "no '%s' in:\n%s", want, out);
    free(out);
    free(err);
    // Fixture edit: run 3's perplexity 3 % above run 2's: a regression against the run before...
    snprintf(sql, sizeof sql,
             "UPDATE metric SET value = value * 1.03 WHERE suite = 'ppl' AND name = 'ppl' AND variant_id = "
             "(SELECT id FROM variant WHERE run_id = %lld AND spec = 'q8_0')", r3);
    qpt_db_exec(db, sql);
    QP_CHECK_INT_EQ(gate(args, &out, &err), 1);
    QP_CHECK_NEAR(table_row(out, "q8_0", "max_ppl_increase_pct", res), 3.0, TABLE_TOL);
    QP_CHECK_STR_EQ(res, "FAIL");
    free(out);
    free(err);
    // ... while run 2 against its previous run, run 1, still passes; run 1 has no previous run.
    snprintf(args, sizeof args, "--db '%s' --run %lld --baseline previous --rules '%s'", db, r2, rules);
    QP_CHECK_INT_EQ(gate(args, &out, &err), 0);
    free(out);
    free(err);
    snprintf(args, sizeof args, "--db '%s' --run %lld --baseline previous --rules '%s'", db, r1, rules);
    QP_CHECK_INT_EQ(gate(args, &out, &err), 2);
    free(out);
    free(err);
}

QP_TEST(baseline_database_should_use_its_latest_run_of_the_same_model) {
    char base[1100], cur[1100], rules[1100], args[8192], *out = NULL, *err = NULL;
    snprintf(base, sizeof base, "%s", tmp_path("base.sqlite"));
    snprintf(cur, sizeof cur, "%s", tmp_path("cur.sqlite"));
    snprintf(rules, sizeof rules, "%s", tmp_path("base.json"));
    write_file(rules, "{\"defaults\": {\"max_ppl_increase_pct\": 1.0, \"min_top1\": 0.9}}");
    // base.sqlite: run a (q8_0), then run b (q8_0, q4_0;act=q8). cur.sqlite: q8_0 alone.
    long long ra = eval_into(base, "q8_0", "a");
    long long rb = eval_into(base, "q8_0", "b");
    eval_into(base, "q4_0;act=q8", "b");
    eval_into(cur, "q8_0", NULL);
    QP_CHECK(rb > ra);

    snprintf(args, sizeof args, "--db '%s' --baseline '%s' --rules '%s'", cur, base, rules);
    QP_CHECK_INT_EQ(gate(args, &out, &err), 1);
    char res[8], want[1200];
    snprintf(want, sizeof want, "against run %lld of '%s'", rb, base);
    QP_CHECK_MSG(strstr(out, want) != NULL, "%s", out);
    table_row(out, "q4_0;act=q8", "variant_present", res);
    QP_CHECK_STR_EQ(res, "FAIL");
    QP_CHECK(table_row(out, "q8_0", "max_ppl_increase_pct", res) == 0.0);
    QP_CHECK_STR_EQ(res, "PASS");
    free(out);
    free(err);

    // Fixture edit: run b now claims another model, so the latest run of the same model is a.
    char sql[256];
    snprintf(sql, sizeof sql, "UPDATE run SET model_sha256 = 'another model' WHERE id = %lld", rb);
    qpt_db_exec(base, sql);
    QP_CHECK_INT_EQ(gate(args, &out, &err), 0);
    snprintf(want, sizeof want, "against run %lld of '%s'", ra, base);
    QP_CHECK_MSG(strstr(out, want) != NULL, "%s", out);
    QP_CHECK_MSG(strncmp(last_line(out), "gate: PASS", 10) == 0, "%s", out);
    free(out);
    free(err);

    // ... and with no run of the model left: no baseline, exit 2.
    snprintf(sql, sizeof sql, "UPDATE run SET model_sha256 = 'another model' WHERE id = %lld", ra);
    qpt_db_exec(base, sql);
    QP_CHECK_INT_EQ(gate(args, &out, &err), 2);
    QP_CHECK_MSG(strstr(err, "has no run of the current run's model") != NULL, "%s", err);
    free(out);
    free(err);
}

// ---------------------------------------------------------------------------------------------
// Task rules

QP_TEST(task_rules_should_judge_recovery_and_significant_flips_per_suite) {
    char db[1100], rules[1100], args[8192], *out = NULL, *err = NULL;
    snprintf(db, sizeof db, "%s", tmp_path("tasks.sqlite"));
    snprintf(rules, sizeof rules, "%s", tmp_path("tasks.json"));
    eval_into(db, "q8_0", NULL);
    eval_into(db, "rtn:bits=2:group=32:asym", NULL);
    // Fixture: task metrics as the task runner stores them (suite 'task:NAME', names 'acc' and
    // 'mcnemar_p' of the paired test against the run's reference), inserted by hand:
    //   reference  hellaswag acc 0.40            arc acc 0.30
    //   q8_0       hellaswag acc 0.395, p 0.80   arc acc 0.30, p 1
    //   rtn 2-bit  hellaswag acc 0.25,  p 0.001  arc acc 0.31, p 0.02 (significant, but up)
    qpt_db_exec(db,
             "INSERT INTO metric (variant_id, suite, name, value, n) SELECT id, s, n, v, 200 FROM variant, (\n"
             "  SELECT 'reference' AS sp, 'task:hellaswag' AS s, 'acc' AS n, 0.40 AS v UNION ALL\n"
             "  SELECT 'reference', 'task:arc', 'acc', 0.30 UNION ALL\n"
             "  SELECT 'q8_0', 'task:hellaswag', 'acc', 0.395 UNION ALL\n"
             "  SELECT 'q8_0', 'task:hellaswag', 'mcnemar_p', 0.80 UNION ALL\n"
             "  SELECT 'q8_0', 'task:arc', 'acc', 0.30 UNION ALL\n"
             "  SELECT 'q8_0', 'task:arc', 'mcnemar_p', 1.0 UNION ALL\n"
             "  SELECT 'rtn:bits=2:group=32:asym', 'task:hellaswag', 'acc', 0.25 UNION ALL\n"
             "  SELECT 'rtn:bits=2:group=32:asym', 'task:hellaswag', 'mcnemar_p', 0.001 UNION ALL\n"
             "  SELECT 'rtn:bits=2:group=32:asym', 'task:arc', 'acc', 0.31 UNION ALL\n"
             "  SELECT 'rtn:bits=2:group=32:asym', 'task:arc', 'mcnemar_p', 0.02\n"
             ") WHERE spec = sp");
    write_file(rules, "{\"defaults\": {\"min_recovery\": 0.97, \"max_significant_flips\": 0}}");
    snprintf(args, sizeof args, "--db '%s' --baseline reference --rules '%s'", db, rules);
    QP_CHECK_INT_EQ(gate(args, &out, &err), 1);
    char res[8];
    // Recovery is the worst suite's acc / reference acc.
    QP_CHECK_NEAR(table_row(out, "q8_0", "min_recovery", res), 0.395 / 0.40, TABLE_TOL);
    QP_CHECK_STR_EQ(res, "PASS");
    QP_CHECK(table_row(out, "q8_0", "max_significant_flips", res) == 0);
    QP_CHECK_STR_EQ(res, "PASS");
    QP_CHECK_NEAR(table_row(out, "rtn:bits=2:group=32:asym", "min_recovery", res), 0.25 / 0.40, TABLE_TOL);
    QP_CHECK_STR_EQ(res, "FAIL");
    // Only hellaswag counts: arc is significant but its accuracy went up.
    QP_CHECK(table_row(out, "rtn:bits=2:group=32:asym", "max_significant_flips", res) == 1);
    QP_CHECK_STR_EQ(res, "FAIL");
    QP_CHECK(strstr(out, "task:hellaswag (p 0.001)") != NULL);
    free(out);
    free(err);

    // One allowed flip: the rtn variant passes that rule (and still fails recovery).
    write_file(rules, "{\"defaults\": {\"max_significant_flips\": 0}, \"variants\": [{\"match\": \"rtn:*\", "
                      "\"max_significant_flips\": 1}]}");
    QP_CHECK_INT_EQ(gate(args, &out, &err), 0);
    free(out);
    free(err);
}

// ---------------------------------------------------------------------------------------------
// Errors

QP_TEST(gate_should_exit_2_on_bad_db_missing_run_or_missing_baseline) {
    char db[1100], noref[1100], rules[1100], text[1100], args[8192], *out = NULL, *err = NULL;
    snprintf(db, sizeof db, "%s", tmp_path("errors.sqlite"));
    snprintf(noref, sizeof noref, "%s", tmp_path("errors-noref.sqlite"));
    snprintf(rules, sizeof rules, "%s", tmp_path("errors.json"));
    snprintf(text, sizeof text, "%s", tmp_path("errors.txt"));
    write_file(rules, "{\"defaults\": {\"max_kld_mean\": 0.05}}");
    write_file(text, "not a database\n");
    long long run = eval_into(db, "q8_0", NULL);
    // Fixture edit: a copy without a reference row.
    copy_db(db, noref);
    qpt_db_exec(noref, "UPDATE variant SET is_reference = 0 WHERE spec = 'reference'");
    struct {
        const char *what;
        char args[2400];
        const char *expect;
    } cases[8];
    int n = 0;
    snprintf(cases[n].args, sizeof cases[n].args, "--db '%s' --baseline reference --rules '%s'", db, rules);
    cases[n].what = "sanity";
    cases[n++].expect = NULL;
    snprintf(cases[n].args, sizeof cases[n].args, "--db '%s' --baseline reference --rules '%s'",
             tmp_path("nothing.sqlite"), rules);
    cases[n].what = "missing db";
    cases[n++].expect = "cannot open";
    snprintf(cases[n].args, sizeof cases[n].args, "--db '%s' --baseline reference --rules '%s'", text, rules);
    cases[n].what = "not a db";
    cases[n++].expect = "errors.txt";
    snprintf(cases[n].args, sizeof cases[n].args, "--db '%s' --run 99 --baseline reference --rules '%s'", db, rules);
    cases[n].what = "no such run";
    cases[n++].expect = "no run 99 in";
    snprintf(cases[n].args, sizeof cases[n].args, "--db '%s' --baseline 99 --rules '%s'", db, rules);
    cases[n].what = "no baseline run";
    cases[n++].expect = "no baseline run 99";
    snprintf(cases[n].args, sizeof cases[n].args, "--db '%s' --baseline %lld --rules '%s'", db, run, rules);
    cases[n].what = "baseline is current";
    cases[n++].expect = "is the current run";
    snprintf(cases[n].args, sizeof cases[n].args, "--db '%s' --baseline '%s' --rules '%s'", db,
             tmp_path("nothing.sqlite"), rules);
    cases[n].what = "missing baseline db";
    cases[n++].expect = "baseline: cannot open";
    snprintf(cases[n].args, sizeof cases[n].args, "--db '%s' --baseline reference --rules '%s'", noref, rules);
    cases[n].what = "no reference";
    cases[n++].expect = "has no reference variant";
    for (int i = 0; i < n; i++) {
        int rc = gate(cases[i].args, &out, &err);
        if (!cases[i].expect) {
            QP_CHECK_MSG(rc == 0, "%s: exit %d: %s", cases[i].what, rc, err);
        } else {
            QP_CHECK_MSG(rc == 2, "%s: exit %d: %s%s", cases[i].what, rc, out, err);
            QP_CHECK_MSG(strstr(err, cases[i].expect) != NULL, "%s: expected '%s' in: %s", cases[i].what,
                         cases[i].expect, err);
            QP_CHECK_MSG(count_str(err, "\n") == 1, "%s: not one line: %s", cases[i].what, err);
        }
        free(out);
        free(err);
    }
    // Usage errors are exit 2 too.
    snprintf(args, sizeof args, "--db '%s' --baseline reference", db);
    QP_CHECK_INT_EQ(gate(args, &out, &err), 2);
    QP_CHECK(strstr(err, "--rules") != NULL);
    free(out);
    free(err);
}
