// test_sweep.c — `qprobe sweep` and `qprobe merge`: malformed configurations are refused with the
// JSON path, grids expand, a 3-shard run merged equals the unsharded run, --resume skips what is
// stored, and an interrupted sweep leaves a consistent database that --resume completes.
#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include "qp_test.h"

static const char *tmp(const char *name) {
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", qpt_tmpdir(), name);
    return buf[k];
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    QP_CHECK(f != NULL);
    fputs(text, f);
    fclose(f);
}

// A small valid configuration with the given variants JSON (a list of spec strings).
static const char *small_config(const char *name, const char *variants, const char *extra) {
    char model[1024], tok[1024], text[1024], json[8192];
    snprintf(model, sizeof model, "%s", qpt_fixture("models/llama2c/stories260K.bin"));
    snprintf(tok, sizeof tok, "%s", qpt_fixture("models/llama2c/tok512.bin"));
    snprintf(text, sizeof text, "%s", qpt_text_prefix(40000));
    snprintf(json, sizeof json,
             "{\"model\": \"%s\", \"tokenizer\": \"%s\",\n"
             " \"eval\": {\"text\": \"%s\", \"ctx\": 256, \"chunks\": 4},\n"
             " \"diagnostics\": {\"layer_chunks\": 1, \"act_chunks\": 1},\n"
             " \"variants\": %s%s}\n",
             model, tok, text, variants, extra ? extra : "");
    static char paths[4][512]; // tmp's buffers rotate; these are the configurations' own
    static int k;
    char *path = paths[k++ % 4];
    snprintf(path, sizeof paths[0], "%s", tmp(name));
    write_file(path, json);
    return path;
}

static int sweep(const char *cfg, const char *args, char **out) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' sweep -c '%s' %s 2>&1", qpt_qprobe(), cfg, args);
    return qpt_run(cmd, out);
}

// Every number a variant has, as one text per database (timings and ids left out), so that two
// databases can be compared for equality.
static char *fingerprint(const char *db_path) {
    static const char *sql =
        "SELECT group_concat(x, '|') FROM (SELECT v.spec || ':' || m.suite || '.' || m.name || '=' ||"
        " quote(m.value) || '~' || quote(m.stderr) AS x FROM metric m JOIN variant v ON v.id = m.variant_id"
        " UNION ALL SELECT v.spec || ':' || l.layer || l.site || l.kind || '=' || quote(l.rel_err) || quote(l.cosine)"
        " FROM layer_error l JOIN variant v ON v.id = l.variant_id"
        " UNION ALL SELECT v.spec || ':' || g.tensor || '=' || quote(g.rmse) FROM grid_stat g JOIN variant v ON v.id = g.variant_id"
        " UNION ALL SELECT 'w:' || tensor || '=' || quote(kurtosis) FROM weight_stat"
        " UNION ALL SELECT 'h:' || kind || subject || bin || '=' || count FROM histogram"
        " ORDER BY x)";
    return qpt_db_text(db_path, sql);
}

QP_TEST(malformed_configurations_should_fail_with_the_json_path) {
    char model[1024], text[1024];
    snprintf(model, sizeof model, "%s", qpt_fixture("models/llama2c/stories260K.bin"));
    snprintf(text, sizeof text, "%s", qpt_text_prefix(20000));
    // Each: the configuration body (with %1$s = model, %2$s = text) and a string the one-line
    // error must contain.
    static const struct {
        const char *json, *expect;
    } cases[] = {
        {"", "empty"},
        {"{\"model\": ", "line 1: not valid JSON"},
        {"[1, 2]", "(top level): must be an object"},
        {"{\"model\": \"%1$s\", \"eval\": {\"text\": \"%2$s\"}, \"variants\": [\"q8_0\"], \"colour\": 1}", "colour: unknown key"},
        {"{\"eval\": {\"text\": \"%2$s\"}, \"variants\": [\"q8_0\"]}", "model: missing"},
        {"{\"model\": 7, \"eval\": {\"text\": \"%2$s\"}, \"variants\": [\"q8_0\"]}", "model: must be a string"},
        {"{\"model\": \"/nonexistent/m.bin\", \"eval\": {\"text\": \"%2$s\"}, \"variants\": [\"q8_0\"]}", "model: cannot read '/nonexistent/m.bin'"},
        {"{\"model\": \"%1$s\", \"variants\": [\"q8_0\"]}", "eval: missing"},
        {"{\"model\": \"%1$s\", \"eval\": {\"txt\": \"%2$s\"}, \"variants\": [\"q8_0\"]}", "eval.txt: unknown key"},
        {"{\"model\": \"%1$s\", \"eval\": {\"text\": \"%2$s\", \"ctx\": 2}, \"variants\": [\"q8_0\"]}", "eval.ctx: must be an integer"},
        {"{\"model\": \"%1$s\", \"eval\": {\"text\": \"%2$s\", \"ctx\": 64.5}, \"variants\": [\"q8_0\"]}", "eval.ctx: must be an integer"},
        {"{\"model\": \"%1$s\", \"eval\": {\"text\": \"%2$s\", \"protocol\": \"hf\"}, \"variants\": [\"q8_0\"]}", "eval.protocol: 'hf'"},
        {"{\"model\": \"%1$s\", \"eval\": {\"text\": \"%2$s\"}, \"variants\": []}", "variants: no variants"},
        {"{\"model\": \"%1$s\", \"eval\": {\"text\": \"%2$s\"}}", "no variants"},
        {"{\"model\": \"%1$s\", \"eval\": {\"text\": \"%2$s\"}, \"variants\": \"q8_0\"}", "variants: must be an array"},
        {"{\"model\": \"%1$s\", \"eval\": {\"text\": \"%2$s\"}, \"variants\": [\"q8_0\", 4]}", "variants[1]: must be a spec string"},
        {"{\"model\": \"%1$s\", \"eval\": {\"text\": \"%2$s\"}, \"variants\": [\"q8_0\", \"q9_9\"]}", "variants[1]: "},
        {"{\"model\": \"%1$s\", \"eval\": {\"text\": \"%2$s\"}, \"grid\": [{\"method\": \"rtn\", \"bits\": [4], \"group\": [0]}]}", "grid[0].group: '0'"},
        {"{\"model\": \"%1$s\", \"eval\": {\"text\": \"%2$s\"}, \"grid\": [{\"method\": \"zip\"}]}", "grid[0].method: 'zip'"},
        {"{\"model\": \"%1$s\", \"eval\": {\"text\": \"%2$s\"}, \"grid\": [{\"method\": \"rtn\", \"group\": [32]}]}", "grid[0].bits: missing"},
        {"{\"model\": \"%1$s\", \"eval\": {\"text\": \"%2$s\"}, \"grid\": [{\"method\": \"rtn\", \"bits\": [9], \"group\": [32]}]}", "grid[0] (rtn:bits=9"},
        {"{\"model\": \"%1$s\", \"eval\": {\"text\": \"%2$s\"}, \"variants\": [\"q8_0\"], \"diagnostics\": {\"grid\": 1}}", "diagnostics.grid: must be true or false"},
        {"{\"model\": \"%1$s\", \"eval\": {\"text\": \"%2$s\"}, \"variants\": [\"q8_0\"], \"tasks\": [3]}", "tasks[0]: must be a suite name"},
        {"{\"model\": \"%1$s\", \"eval\": {\"text\": \"%2$s\"}, \"variants\": [\"q8_0\"], \"threads\": -1}", "threads: must be an integer"},
        {"{\"model\": \"${QP_NO_SUCH_VAR}/m.bin\", \"eval\": {\"text\": \"%2$s\"}, \"variants\": [\"q8_0\"]}", "QP_NO_SUCH_VAR is not set"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char json[4096], name[64], *out = NULL;
        snprintf(json, sizeof json, cases[i].json, model, text);
        snprintf(name, sizeof name, "bad%zu.json", i);
        const char *cfg = tmp(name);
        write_file(cfg, json);
        int rc = sweep(cfg, "--db /dev/null/x.sqlite", &out);
        QP_CHECK_MSG(rc == 2, "case %zu: exit %d: %s", i, rc, out);
        QP_CHECK_MSG(strstr(out, cases[i].expect) != NULL, "case %zu: expected '%s' in: %s", i, cases[i].expect, out);
        QP_CHECK_MSG(strchr(out, '\n') == out + strlen(out) - 1, "case %zu: not one line: %s", i, out);
        free(out);
    }
}

QP_TEST(variable_defaults_should_apply_when_the_variable_is_unset_or_empty) {
    char model[1024], dir[1024], text[1024], json[4096], *out = NULL;
    snprintf(model, sizeof model, "%s", qpt_fixture("models/llama2c/stories260K.bin"));
    snprintf(text, sizeof text, "%s", qpt_text_prefix(20000));
    snprintf(dir, sizeof dir, "%.*s", (int)(strrchr(model, '/') - model), model);
    // "${NAME:-DEFAULT}": the default when NAME is unset...
    snprintf(json, sizeof json, "{\"model\": \"${QP_NO_SUCH_VAR:-%s}/stories260K.bin\", \"eval\": {\"text\": \"%s\"},"
                                " \"variants\": [\"q8_0\"]}", dir, text);
    const char *cfg = tmp("defaults.json");
    write_file(cfg, json);
    QP_CHECK_MSG(sweep(cfg, "--dry-run", &out) == 0, "%s", out);
    free(out);
    // ... or empty; a value set wins over it.
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "QP_NO_SUCH_VAR= '%s' sweep -c '%s' --dry-run 2>&1", qpt_qprobe(), cfg);
    QP_CHECK_INT_EQ(qpt_run(cmd, &out), 0);
    free(out);
    snprintf(cmd, sizeof cmd, "QP_NO_SUCH_VAR=/nonexistent '%s' sweep -c '%s' --dry-run 2>&1", qpt_qprobe(), cfg);
    QP_CHECK_INT_EQ(qpt_run(cmd, &out), 2);
    QP_CHECK_MSG(strstr(out, "cannot read '/nonexistent/stories260K.bin'"), "%s", out);
    free(out);
}

QP_TEST(label_option_should_make_a_separate_run_of_the_same_inputs) {
    const char *cfg = small_config("label.json", "[\"q8_0\"]", ", \"label\": \"from-config\"");
    char args[1024], *out = NULL;
    const char *db = tmp("label.sqlite");
    snprintf(args, sizeof args, "--db '%s' -t 2 --label night-1", db);
    QP_CHECK_MSG(sweep(cfg, args, &out) == 0, "%s", out);
    free(out);
    snprintf(args, sizeof args, "--db '%s' -t 2 --label night-2", db);
    QP_CHECK_MSG(sweep(cfg, args, &out) == 0, "%s", out);
    free(out);
    char *labels = qpt_db_text(db, "SELECT group_concat(label, ',') FROM (SELECT label FROM run ORDER BY id)");
    QP_CHECK_STR_EQ(labels, "night-1,night-2");
    free(labels);
    // Without the option the configuration's label names the run.
    snprintf(args, sizeof args, "--db '%s' -t 2", db);
    QP_CHECK_MSG(sweep(cfg, args, &out) == 0, "%s", out);
    free(out);
    labels = qpt_db_text(db, "SELECT label FROM run ORDER BY id DESC LIMIT 1");
    QP_CHECK_STR_EQ(labels, "from-config");
    free(labels);
}

QP_TEST(grids_should_expand_in_order_without_duplicates) {
    const char *cfg = small_config("grid.json", "[\"rtn:bits=4:group=32:asym\"]",
                                   ", \"grid\": [{\"method\": \"rtn\", \"bits\": [4, 2], \"group\": [32, \"channel\"],"
                                   " \"sym\": \"asym\"}, {\"method\": \"ggml\", \"types\": [\"q4_0\"], \"act\": [\"f32\", \"q8\"]},"
                                   " {\"method\": \"nf4\", \"dq\": [false, true]}]");
    char *out = NULL;
    QP_CHECK_INT_EQ(sweep(cfg, "--dry-run", &out), 0);
    const char *expect[] = {"1  rtn:bits=4:group=32:asym", "2  rtn:bits=4:channel:asym", "3  rtn:bits=2:group=32:asym",
                            "4  rtn:bits=2:channel:asym", "5  q4_0\n", "6  q4_0;act=q8", "7  nf4:group=64\n", "8  nf4:group=64:dq"};
    for (size_t i = 0; i < sizeof expect / sizeof expect[0]; i++)
        QP_CHECK_MSG(strstr(out, expect[i]), "missing '%s' in:\n%s", expect[i], out);
    QP_CHECK(strstr(out, "8 variants"));
    free(out);
}

QP_TEST(three_shards_merged_should_equal_the_unsharded_run) {
    const char *cfg = small_config("s.json", "[\"q8_0\", \"q4_0;act=q8\", \"rtn:bits=3:group=32:asym\", \"nf4\", \"q4_k\"]", NULL);
    char args[1024], *out = NULL;
    snprintf(args, sizeof args, "--db '%s' -t 2", tmp("full.sqlite"));
    QP_CHECK_MSG(sweep(cfg, args, &out) == 0, "%s", out);
    free(out);
    // A shard without a reference is refused in one line (it never runs the reference itself)...
    snprintf(args, sizeof args, "--db '%s' --shard 0/3 -t 1", tmp("lonely.sqlite"));
    QP_CHECK_INT_EQ(sweep(cfg, args, &out), 2);
    QP_CHECK_MSG(strstr(out, "no reference yet") && strstr(out, "--reference-db"), "%s", out);
    free(out);
    // ... the reference job fills the cache once; the shards read it (no cache of their own).
    snprintf(args, sizeof args, "--db '%s' --reference-only -t 2", tmp("ref.sqlite"));
    QP_CHECK_MSG(sweep(cfg, args, &out) == 0 && strstr(out, ".qpref"), "%s", out);
    free(out);
    for (int i = 0; i < 3; i++) {
        char db[64];
        snprintf(db, sizeof db, "shard%d.sqlite", i);
        snprintf(args, sizeof args, "--db '%s' --shard %d/3 --reference-db '%s' -t 1", tmp(db), i, tmp("ref.sqlite"));
        QP_CHECK_MSG(sweep(cfg, args, &out) == 0, "%s", out);
        free(out);
        char dir[600];
        snprintf(dir, sizeof dir, "%s.refcache", tmp(db));
        QP_CHECK_MSG(access(dir, F_OK) != 0, "shard %d made a cache of its own", i);
    }
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' merge '%s' '%s' '%s' '%s'", qpt_qprobe(), tmp("merged.sqlite"), tmp("shard0.sqlite"),
             tmp("shard1.sqlite"), tmp("shard2.sqlite"));
    QP_CHECK_INT_EQ(qpt_run(cmd, &out), 0);
    QP_CHECK_MSG(strstr(out, "6 variants copied"), "%s", out);
    free(out);
    QP_CHECK_INT_EQ(qpt_db_int(tmp("merged.sqlite"), "SELECT count(*) FROM variant"), 6);
    QP_CHECK_INT_EQ(qpt_db_int(tmp("merged.sqlite"), "SELECT count(*) FROM run"), 1);
    char *a = fingerprint(tmp("full.sqlite")), *b = fingerprint(tmp("merged.sqlite"));
    QP_CHECK_MSG(strcmp(a, b) == 0, "merged shards differ from the unsharded run");
    QP_CHECK(strlen(a) > 1000);
    free(a);
    free(b);
    // Merging again copies nothing; a database of another study is refused.
    QP_CHECK_INT_EQ(qpt_run(cmd, &out), 0);
    QP_CHECK_MSG(strstr(out, "0 variants copied"), "%s", out);
    free(out);
    const char *other = small_config("o.json", "[\"q8_0\"]", ", \"label\": \"other\"");
    snprintf(args, sizeof args, "--db '%s'", tmp("other.sqlite"));
    QP_CHECK_INT_EQ(sweep(other, args, &out), 0);
    free(out);
    snprintf(cmd, sizeof cmd, "'%s' merge '%s' '%s' '%s' 2>&1", qpt_qprobe(), tmp("m2.sqlite"), tmp("shard0.sqlite"),
             tmp("other.sqlite"));
    QP_CHECK_INT_EQ(qpt_run(cmd, &out), 2);
    QP_CHECK_MSG(strstr(out, "runs differ"), "%s", out);
    free(out);
}

QP_TEST(an_interrupted_sweep_should_keep_finished_variants_and_resume_to_the_same_numbers) {
    const char *cfg = small_config("i.json", "[\"q8_0\", \"rtn:bits=4:group=32:asym\", \"rtn:bits=3:group=32:asym\", \"q4_k\"]", NULL);
    char args[1024], *out = NULL;
    snprintf(args, sizeof args, "--db '%s' -t 1", tmp("ref.sqlite"));
    QP_CHECK_MSG(sweep(cfg, args, &out) == 0, "%s", out);
    free(out);
    // Start the same sweep and send SIGINT once the second variant is under way.
    const char *db = tmp("int.sqlite");
    pid_t pid = fork();
    QP_CHECK(pid >= 0);
    if (pid == 0) {
        int fd = open("/dev/null", O_WRONLY);
        dup2(fd, 1), dup2(fd, 2);
        execl(qpt_qprobe(), "qprobe", "sweep", "-c", cfg, "--db", db, "-t", "1", (char *)NULL);
        _exit(127);
    }
    int64_t stored = 0;
    for (int i = 0; i < 600 && stored < 2; i++) { // the reference and the first variant
        usleep(50000);
        if (access(db, F_OK) == 0) {
            sqlite3 *h;
            if (sqlite3_open(db, &h) == SQLITE_OK) {
                sqlite3_stmt *s;
                if (sqlite3_prepare_v2(h, "SELECT count(*) FROM variant", -1, &s, NULL) == SQLITE_OK &&
                    sqlite3_step(s) == SQLITE_ROW)
                    stored = sqlite3_column_int64(s, 0);
                sqlite3_finalize(s);
                sqlite3_close(h);
            }
        }
    }
    kill(pid, SIGINT);
    int status;
    waitpid(pid, &status, 0);
    QP_CHECK_MSG(WIFEXITED(status) && (WEXITSTATUS(status) == 130 || WEXITSTATUS(status) == 0),
                 "status %d", status);
    QP_CHECK_INT_EQ(qpt_db_int(db, "SELECT count(*) FROM pragma_integrity_check WHERE integrity_check = 'ok'"), 1);
    int64_t after = qpt_db_int(db, "SELECT count(*) FROM variant");
    QP_CHECK(after >= 2 && after <= 5);
    // Every stored variant is complete: it has its metrics.
    QP_CHECK_INT_EQ(qpt_db_int(db, "SELECT count(*) FROM variant v WHERE NOT EXISTS (SELECT 1 FROM metric m WHERE m.variant_id = v.id)"), 0);
    snprintf(args, sizeof args, "--db '%s' -t 2", db);
    QP_CHECK_INT_EQ(sweep(cfg, args, &out), 2); // without --resume: refused
    QP_CHECK_MSG(strstr(out, "--resume"), "%s", out);
    free(out);
    strcat(args, " --resume");
    QP_CHECK_MSG(sweep(cfg, args, &out) == 0, "%s", out);
    free(out);
    char *a = fingerprint(tmp("ref.sqlite")), *b = fingerprint(db);
    QP_CHECK_MSG(strcmp(a, b) == 0, "resumed run differs from the uninterrupted one");
    free(a);
    free(b);
}
