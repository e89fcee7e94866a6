// test_eval.c — lockstep evaluation and `qprobe eval`: KLD and top-1 against llama.cpp's own
// numbers, per-layer error accumulation and isolated sensitivity stored, thread independence,
// resume, and every example query of docs/SCHEMA.md on a database made by a real run.
#include <sqlite3.h>

#include "kn_engine.h"
#include "hx_lockstep.h"
#include "hx_model.h"
#include "qp.h"
#include "qp_test.h"
#include "hx_tokenizer.h"

#define MODEL "models/llama2c/stories260K.bin"
#define TOK "models/llama2c/tok512.bin"

// llama.cpp computes its reference log-probabilities from a uint16-quantized file (16/65535 nats
// resolution), so its mean KLD of a near-lossless variant differs by about 1 % from the exact
// one; the bound is 2 % relative.
#define KLD_REL_TOL 0.02
#define TOP1_REL_TOL 0.02

static const char *db_path(const char *name) {
    static char buf[512];
    snprintf(buf, sizeof buf, "%s/%s", qpt_tmpdir(), name);
    return buf;
}

// One field (1-based column) of the summary.csv row whose first field is label.
static double golden_field(const char *label, int col) {
    char *csv = qpt_read_file(qpt_fixture("golden/ppl/summary.csv"), NULL);
    QP_CHECK(csv != NULL);
    char key[128];
    snprintf(key, sizeof key, "\n%s,", label);
    char *line = strstr(csv, key);
    QP_CHECK_MSG(line != NULL, "no row %s in summary.csv", label);
    line++;
    for (int c = 1; c < col; c++) {
        line = strchr(line, ',');
        QP_CHECK(line != NULL);
        line++;
    }
    double v = atof(line);
    free(csv);
    return v;
}

static int64_t query_i64(sqlite3 *db, const char *sql) {
    sqlite3_stmt *s;
    QP_CHECK_MSG(sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK, "%s: %s", sql, sqlite3_errmsg(db));
    QP_CHECK(sqlite3_step(s) == SQLITE_ROW);
    int64_t v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return v;
}

static double query_f64(sqlite3 *db, const char *sql) {
    sqlite3_stmt *s;
    QP_CHECK_MSG(sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK, "%s: %s", sql, sqlite3_errmsg(db));
    QP_CHECK(sqlite3_step(s) == SQLITE_ROW);
    double v = sqlite3_column_double(s, 0);
    sqlite3_finalize(s);
    return v;
}

QP_TEST(kld_and_top1_should_match_llamacpp_on_its_own_quantized_files) {
    char g[1024], text[1024]; // qpt_fixture's buffers rotate: keep copies
    snprintf(g, sizeof g, "%s", qpt_fixture("golden/ppl/stories260K-F32.gguf"));
    snprintf(text, sizeof text, "%s", qpt_text_prefix(200000));
    static const char *labels[] = {"Q4_0_pure_ffndownF16", "Q4_K_M", "Q8_0_ffndownF16"};
    for (int i = 0; i < 3; i++) {
        char rel[128], cmd[4096], *out = NULL;
        snprintf(rel, sizeof rel, "golden/ppl/stories260K-%s.gguf", labels[i]);
        snprintf(cmd, sizeof cmd,
                 "'%s' eval -m '%s' --vs '%s' --act q8 --text '%s' --db '%s' --layer-chunks 0 "
                 "--act-chunks 0 -t 2 --json",
                 qpt_qprobe(), g, qpt_fixture(rel), text, db_path("golden.sqlite"));
        QP_CHECK_INT_EQ(qpt_run(cmd, &out), 0);
        double kld = qpt_json_num(out, "kld_mean"), top1 = qpt_json_num(out, "top1");
        double gk = golden_field(labels[i], 11), gt = golden_field(labels[i], 17) / 100.0;
        double gp = golden_field(labels[i], 6), ppl = qpt_json_num(out, "ppl");
        fprintf(stderr, "%s: KLD %.6f vs %.6f, top-1 %.5f vs %.5f, PPL %.5f vs %.5f\n", labels[i], kld, gk,
                top1, gt, ppl, gp);
        QP_CHECK_MSG(fabs(kld - gk) <= KLD_REL_TOL * gk, "%s: KLD %.6f vs llama.cpp %.6f", labels[i], kld, gk);
        QP_CHECK_MSG(fabs(top1 - gt) <= TOP1_REL_TOL * gt, "%s: top-1 %.5f vs %.5f", labels[i], top1, gt);
        QP_CHECK_MSG(fabs(ppl - gp) <= 1e-3 * gp, "%s: PPL %.5f vs %.5f", labels[i], ppl, gp);
        free(out);
    }
}

// A small real study: stories260K under rtn 3 bits, with layers, sensitivity and tokens kept.
static const char *small_study(void) {
    const char *db = db_path("study.sqlite");
    char cmd[4096], *out = NULL;
    snprintf(cmd, sizeof cmd,
             "'%s' eval -m '%s' -z '%s' --text '%s' --db '%s' -q 'rtn:bits=3:group=32:asym' --chunks 6 "
             "--layer-chunks 2 --sensitivity 2 --sensitivity-tensors --keep-tokens --generate 4:16 -t 2 --json",
             qpt_qprobe(), qpt_fixture(MODEL), qpt_fixture(TOK), qpt_text_prefix(60000), db);
    QP_CHECK_INT_EQ(qpt_run(cmd, &out), 0);
    QP_CHECK(qpt_json_num(out, "kld_mean") > 0);
    free(out);
    return db;
}

QP_TEST(accumulated_error_should_exceed_local_error_at_the_last_layer) {
    sqlite3 *db;
    QP_CHECK(sqlite3_open(small_study(), &db) == SQLITE_OK);
    int64_t L = query_i64(db, "SELECT n_layers FROM run");
    char sql[512];
    snprintf(sql, sizeof sql,
             "SELECT a.rel_err - l.rel_err FROM layer_error a JOIN layer_error l ON l.variant_id = a.variant_id"
             " AND l.layer = a.layer AND l.site = a.site AND l.kind = 'local'"
             " WHERE a.kind = 'accumulated' AND a.site = 'resid_out' AND a.layer = %lld", (long long)(L - 1));
    double diff = query_f64(db, sql);
    QP_CHECK_MSG(diff > 0, "accumulated - local = %g at layer %lld", diff, (long long)(L - 1));
    // Local error at the first block's input is zero by construction (the reference's input).
    QP_CHECK(query_f64(db, "SELECT rel_err FROM layer_error WHERE kind = 'local' AND layer = 0 AND site = 'block_in'") == 0);
    // Every site of every layer in both kinds, plus the logits.
    QP_CHECK_INT_EQ(query_i64(db, "SELECT count(*) FROM layer_error"), L * 8 * 2 + 1);
    // Isolated sensitivity: one row per layer with ranks 1..L, and 7 tensors per layer ranked too.
    QP_CHECK_INT_EQ(query_i64(db, "SELECT count(*) FROM sensitivity WHERE tensor = ''"), L);
    QP_CHECK_INT_EQ(query_i64(db, "SELECT count(DISTINCT rank) FROM sensitivity WHERE tensor = ''"), L);
    QP_CHECK_INT_EQ(query_i64(db, "SELECT count(*) FROM sensitivity WHERE tensor <> ''"), 7 * L);
    QP_CHECK(query_i64(db, "SELECT count(*) FROM sensitivity a JOIN sensitivity b ON a.variant_id = b.variant_id"
                           " AND a.tensor = '' AND b.tensor = '' AND a.rank < b.rank AND a.kld_mean < b.kld_mean") == 0);
    // The kept tokens reproduce the stored mean KLD.
    double mean = query_f64(db, "SELECT avg(kld) FROM token");
    double stored = query_f64(db, "SELECT value FROM metric WHERE suite = 'kld' AND name = 'mean'");
    QP_CHECK_NEAR(mean, stored, 1e-12);
    QP_CHECK_INT_EQ(query_i64(db, "SELECT count(*) FROM token"),
                    query_i64(db, "SELECT n FROM metric WHERE suite = 'kld' AND name = 'mean'"));
    sqlite3_close(db);
}

// The run row records the CPU and each kernel family's path, as it records the ISA.
QP_TEST(run_row_should_record_cpu_and_kernel_paths) {
    sqlite3 *db;
    QP_CHECK(sqlite3_open(small_study(), &db) == SQLITE_OK);
    QP_CHECK_INT_EQ(query_i64(db, "SELECT count(*) FROM run WHERE cpu LIKE '%;%' AND kernels LIKE 'ops ' || isa || ' (gemm %'"
                                  " AND kernels LIKE '%; act=q8 %'"),
                    query_i64(db, "SELECT count(*) FROM run"));
    QP_CHECK(query_i64(db, "SELECT count(*) FROM run") > 0);
    sqlite3_close(db);
}

// Every ```sql block of docs/SCHEMA.md prepares, runs to completion, and returns rows.
QP_TEST(every_schema_doc_query_should_run_on_a_real_study) {
    char path[1024];
    snprintf(path, sizeof path, "%s/docs/SCHEMA.md", getenv("QP_ROOT") ? getenv("QP_ROOT") : ".");
    char *doc = qpt_read_file(path, NULL);
    QP_CHECK_MSG(doc != NULL, "cannot read %s", path);
    sqlite3 *db;
    QP_CHECK(sqlite3_open(small_study(), &db) == SQLITE_OK);
    int n = 0;
    for (char *p = strstr(doc, "```sql\n"); p; p = strstr(p, "```sql\n")) {
        p += 7;
        char *end = strstr(p, "```");
        QP_CHECK(end != NULL);
        *end = 0;
        sqlite3_stmt *s;
        QP_CHECK_MSG(sqlite3_prepare_v2(db, p, -1, &s, NULL) == SQLITE_OK, "query %d: %s\n%s", n + 1,
                     sqlite3_errmsg(db), p);
        int rows = 0, rc;
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) rows++;
        QP_CHECK_MSG(rc == SQLITE_DONE, "query %d: %s", n + 1, sqlite3_errmsg(db));
        QP_CHECK_MSG(rows > 0, "query %d returned no rows:\n%s", n + 1, p);
        sqlite3_finalize(s);
        n++;
        p = end + 3;
    }
    QP_CHECK(n >= 8);
    sqlite3_close(db);
    free(doc);
}

QP_TEST(a_stored_variant_should_be_refused_or_skipped_with_resume) {
    const char *db = small_study();
    char cmd[4096], *out = NULL;
    snprintf(cmd, sizeof cmd,
             "'%s' eval -m '%s' -z '%s' --text '%s' --db '%s' -q 'rtn:bits=3:group=32:asym' --chunks 6 "
             "-t 2 --json 2>&1",
             qpt_qprobe(), qpt_fixture(MODEL), qpt_fixture(TOK), qpt_text_prefix(60000), db);
    QP_CHECK_INT_EQ(qpt_run(cmd, &out), 2);
    QP_CHECK_MSG(strstr(out, "already stored") && strstr(out, "--resume"), "%s", out);
    free(out);
    strcat(cmd, " --resume");
    QP_CHECK_INT_EQ(qpt_run(cmd, &out), 0);
    QP_CHECK_MSG(strstr(out, "\"skipped\":true"), "%s", out);
    free(out);
}

QP_TEST(a_bad_spec_should_fail_before_any_work_and_write_nothing) {
    char cmd[4096], *out = NULL;
    snprintf(cmd, sizeof cmd, "'%s' eval -m '%s' -z '%s' --text '%s' --db '%s' -q 'rtn:bits=9:group=32:sym' 2>&1",
             qpt_qprobe(), qpt_fixture(MODEL), qpt_fixture(TOK), qpt_text_prefix(20000), db_path("bad.sqlite"));
    QP_CHECK_INT_EQ(qpt_run(cmd, &out), 2);
    QP_CHECK_MSG(strstr(out, "bits") && strchr(out, '\n') == strrchr(out, '\n'), "%s", out);
    free(out);
    FILE *f = fopen(db_path("bad.sqlite"), "r");
    QP_CHECK(f == NULL);
}

// In-process: the variant against itself is exact, and 1 vs 2 threads give identical bits.
static void run_lockstep(const struct kn_engine *a, const struct kn_engine *b, const int *toks, size_t n,
                         int threads, int layer_chunks, struct met_dist_summary *d, struct hx_lockstep_result *lr) {
    char err[QP_ERRLEN];
    struct hx_lockstep_opts o = {.protocol = HX_PROTO_LLAMACPP, .ctx = 128, .n_threads = threads, .bos = 1,
                                 .max_chunks = 6, .layer_chunks = layer_chunks};
    QP_CHECK_MSG(hx_lockstep_run(a, b, toks, n, &o, lr, err) == 0, "%s", err);
    met_dist_finish(lr->dist, d);
}

QP_TEST(lockstep_should_be_exact_against_itself_and_thread_independent) {
    char err[QP_ERRLEN];
    struct hx_model *m;
    QP_CHECK_MSG(hx_model_open(qpt_fixture(MODEL), qpt_fixture(TOK), &m, err) == 0, "%s", err);
    char *text = qpt_read_file(qpt_text_prefix(20000), NULL);
    int *toks;
    size_t n;
    QP_CHECK(hx_tok_encode(m->tok, text, strlen(text), HX_TOK_ADD_BOS | HX_TOK_SPACE_PREFIX, &toks, &n) == 0);
    struct kn_engine *ref, *var;
    QP_CHECK(kn_engine_create(&m->w, NULL, &ref, err) == 0);
    struct kn_engine_opts eo = {.act_q8 = 0};
    QP_CHECK(kn_engine_create_opts(&m->w, &eo, &var, err) == 0);
    struct met_dist_summary d1, d2;
    struct hx_lockstep_result r1, r2;
    run_lockstep(ref, var, toks, n, 1, 2, &d1, &r1);
    QP_CHECK(d1.kld_mean == 0 && d1.same_top == 1 && d1.ln_ratio == 0);
    struct met_err_result e;
    met_err_finish(&r1.acc[hx_layer_index(r1.n_layers - 1, KN_SITE_RESID_OUT)], &e);
    QP_CHECK(e.rel_err == 0 && e.rows == 2 * 128);
    met_err_finish(&r1.loc[hx_layer_index(r1.n_layers - 1, KN_SITE_FFN_ACT)], &e);
    QP_CHECK(e.rel_err == 0);
    hx_lockstep_result_free(&r1);

    // A perturbed variant: the f16 rounding of every weight, run with 1 and with 2 threads.
    struct kn_weights w = m->w;
    struct kn_layer_weights *layers = malloc(sizeof *layers * (size_t)w.cfg.n_layers);
    memcpy(layers, w.layers, sizeof *layers * (size_t)w.cfg.n_layers);
    w.layers = layers;
    size_t nw = (size_t)(layers[0].w_down.ne0 * layers[0].w_down.ne1);
    float *down = malloc(nw * sizeof(float));
    for (size_t i = 0; i < nw; i++) down[i] = qp_fp16_to_fp32(qp_fp32_to_fp16(((const float *)layers[0].w_down.data)[i]));
    layers[0].w_down.data = down;
    kn_engine_destroy(var);
    QP_CHECK(kn_engine_create(&w, NULL, &var, err) == 0);
    run_lockstep(ref, var, toks, n, 1, 1, &d1, &r1);
    run_lockstep(ref, var, toks, n, 2, 1, &d2, &r2);
    QP_CHECK(d1.kld_mean > 0);
    QP_CHECK(memcmp(&d1, &d2, sizeof d1) == 0);
    QP_CHECK(memcmp(r1.acc, r2.acc, sizeof(struct met_err) * 2 * (size_t)(r1.n_layers + 1) * KN_SITE_COUNT) == 0);
    hx_lockstep_result_free(&r1);
    hx_lockstep_result_free(&r2);
    kn_engine_destroy(var);
    kn_engine_destroy(ref);
    free(down);
    free(layers);
    free(toks);
    free(text);
    hx_model_close(m);
}

// The suites given are all scored and stored, however many: 65 one-item JSONL suites, one more
// than the 64 the study once held (and cut silently beyond). One thread: 130 tiny scoring runs
// would each pay OpenMP's barriers, which on a loaded shared machine cost far more than the work.
QP_TEST(eval_should_score_every_task_suite_beyond_the_old_cap_of_64) {
    enum { N_SUITES = 65 };
    size_t cap = N_SUITES * 600;
    char *list = calloc(cap, 1), *cmd = malloc(cap + 4096), *out = NULL;
    QP_CHECK(list && cmd);
    for (int i = 0; i < N_SUITES; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/suite%02d.jsonl", qpt_tmpdir(), i);
        FILE *f = fopen(path, "w");
        QP_CHECK(f != NULL);
        fprintf(f, "{\"context\": \"Lily saw a\", \"choices\": [\" cat\", \" tree %d\"], \"gold\": 0, \"id\": \"q%d\"}\n",
                i, i);
        fclose(f);
        snprintf(list + strlen(list), cap - strlen(list), "%s%s", i ? "," : "", path);
    }
    const char *db = db_path("many_suites.sqlite");
    snprintf(cmd, cap + 4096,
             "'%s' eval -m '%s' -z '%s' --text '%s' --db '%s' -q q8_0 --ctx 64 --chunks 1 --layer-chunks 0 "
             "--act-chunks 0 -t 1 --json --tasks '%s'",
             qpt_qprobe(), qpt_fixture(MODEL), qpt_fixture(TOK), qpt_text_prefix(20000), db, list);
    QP_CHECK_INT_EQ(qpt_run(cmd, &out), 0);
    free(out);
    QP_CHECK_INT_EQ(qpt_db_int(db, "SELECT count(DISTINCT m.suite) FROM metric m JOIN variant v ON v.id = m.variant_id"
                                   " WHERE v.spec = 'q8_0' AND m.suite LIKE 'task:suite%'"),
                    N_SUITES);
    QP_CHECK_INT_EQ(qpt_db_int(db, "SELECT count(*) FROM task_item t JOIN variant v ON v.id = t.variant_id"
                                   " WHERE v.is_reference = 1"),
                    N_SUITES);
    free(list);
    free(cmd);
}
