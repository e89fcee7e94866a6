// test_refcache.c — the reference cache (harness/run/hx_refcache.h) and a variant evaluated
// against it alone (hx_refeval.h): the same figures as the lockstep for every variant of the demo
// sweep (NLL, Δp, top-1 and the per-layer errors bit for bit, KLD within met_dist.h's bound per
// token), and a foreign, truncated or corrupt cache refused in one line.
#include <sys/stat.h>
#include <unistd.h>

#include "hx_calib.h"
#include "hx_lockstep.h"
#include "hx_model.h"
#include "hx_plan.h"
#include "hx_refcache.h"
#include "hx_refeval.h"
#include "hx_sweep.h"
#include "hx_tokenizer.h"
#include "hx_variant.h"
#include "kn_engine.h"
#include "qp.h"
#include "qp_test.h"
#include "qz_spec.h"

#define MODEL "models/llama2c/stories260K.bin"
#define TOK "models/llama2c/tok512.bin"
#define CTX 512
#define CHUNKS 6
#define LAYER_CHUNKS 2

// The model, the demo's evaluation text tokenized, the reference engine.
struct fx {
    struct hx_model *m;
    int *toks;
    size_t n;
    struct kn_engine *ref;
};

static void fx_open(struct fx *f) {
    char err[QP_ERRLEN];
    QP_CHECK_MSG(hx_model_open(qpt_fixture(MODEL), qpt_fixture(TOK), &f->m, err) == 0, "%s", err);
    size_t len;
    char *text = qpt_read_fixture("made/tinystories-eval.txt", &len);
    QP_CHECK(hx_tok_encode(f->m->tok, text, len, HX_TOK_ADD_BOS | HX_TOK_SPACE_PREFIX, &f->toks, &f->n) == 0);
    free(text);
    QP_CHECK_MSG(kn_engine_create(&f->m->w, NULL, &f->ref, err) == 0, "%s", err);
}

static void fx_close(struct fx *f) {
    kn_engine_destroy(f->ref);
    free(f->toks);
    hx_model_close(f->m);
}

static struct hx_refcache_id fx_id(const struct fx *f, const char *text_sha) {
    return (struct hx_refcache_id){.model_sha256 = "m", .tokenizer_sha256 = "t", .text_sha256 = text_sha,
                                   .gemm = "own", .protocol = HX_PROTO_LLAMACPP, .ctx = CTX, .bos = 1,
                                   .n_chunks = CHUNKS, .layer_chunks = LAYER_CHUNKS, .n_tokens = f->n};
}

static struct hx_refcache *fx_cache(const struct fx *f, const char *dir, const char *text_sha) {
    char err[QP_ERRLEN];
    struct hx_refcache_id id = fx_id(f, text_sha);
    struct hx_refcache_build b = {.ref = f->ref, .tokens = f->toks, .n_tokens = f->n, .n_threads = 2, .quiet = 1};
    struct hx_refcache *rc;
    QP_CHECK_MSG(hx_refcache_build(dir, &id, &b, &rc, err) == 0, "%s", err);
    return rc;
}

// Per scored token (in the protocol's order) the bound of met_dist.h from the exact rows of both
// models: the oracle the cached KLD is held to.
static double *token_bounds(const struct fx *f, const struct kn_engine *var, size_t *n_out) {
    char err[QP_ERRLEN];
    int V = f->m->w.cfg.vocab_size;
    struct kn_state *a, *b;
    QP_CHECK(kn_state_create(f->ref, CTX, CTX, 2, &a, err) == 0);
    QP_CHECK(kn_state_create(var, CTX, CTX, 2, &b, err) == 0);
    float *la = malloc(sizeof(float) * CTX * V), *lb = malloc(sizeof(float) * CTX * V);
    double *bound = malloc(sizeof(double) * CHUNKS * CTX);
    int buf[CTX];
    size_t n = 0;
    for (int c = 0; c < CHUNKS; c++) {
        struct hx_chunk ch = hx_chunk_of(HX_PROTO_LLAMACPP, f->n, CTX, c);
        memcpy(buf, f->toks + ch.start, sizeof buf);
        buf[0] = 1;
        kn_state_reset(a), kn_state_reset(b);
        kn_forward(a, buf, CTX, la, ch.first, NULL);
        kn_forward(b, buf, CTX, lb, ch.first, NULL);
        for (int j = ch.first; j <= ch.last; j++)
            bound[n++] = met_dist_cached_bound(la + (size_t)(j - ch.first) * V, lb + (size_t)(j - ch.first) * V, V);
    }
    kn_state_destroy(a), kn_state_destroy(b);
    free(la), free(lb);
    *n_out = n;
    return bound;
}

// The cached run against the lockstep: per token and per layer.
static void compare_runs(const char *spec, const struct hx_lockstep_result *l, const struct hx_lockstep_result *c,
                         const double *bound, size_t nb) {
    QP_CHECK_INT_EQ(l->n_tokens, c->n_tokens);
    QP_CHECK_INT_EQ(l->n_tokens, nb);
    double sum_l = 0, sum_c = 0, sum_b = 0, worst = 0;
    for (size_t i = 0; i < nb; i++) {
        const struct met_dist_tok *a = &l->tokens[i], *b = &c->tokens[i];
        QP_CHECK_MSG(a->nll_ref == b->nll_ref && a->nll_var == b->nll_var && a->dp == b->dp, "%s: token %zu", spec, i);
        QP_CHECK(a->top_ref == b->top_ref && a->top_var == b->top_var && a->same_top == b->same_top);
        QP_CHECK_MSG(fabs(a->kld - b->kld) <= bound[i], "%s: token %zu: KLD %.12g vs %.12g, bound %.3g", spec, i,
                     b->kld, a->kld, bound[i]);
        sum_l += a->kld, sum_c += b->kld, sum_b += bound[i];
        if (bound[i] > 0) worst = fmax(worst, fabs(a->kld - b->kld) / bound[i]);
    }
    QP_CHECK(l->distinct_argmax_ref == c->distinct_argmax_ref && l->distinct_argmax_var == c->distinct_argmax_var);
    size_t n_err = 2 * (size_t)(l->n_layers + 1) * KN_SITE_COUNT;
    QP_CHECK_MSG(memcmp(l->acc, c->acc, n_err * sizeof *l->acc) == 0, "%s: layer errors differ", spec);
    fprintf(stderr, "%-28s mean KLD lockstep %.8f cache %.8f (rel %+.1e, bound %.1e), worst |err|/bound %.3f\n",
            spec, sum_l / nb, sum_c / nb, (sum_c - sum_l) / sum_l, sum_b / nb, worst);
}

// The demo sweep's variants, as its configuration expands them.
static struct hx_sweep_config *demo_variants(void) {
    char err[QP_ERRLEN], root[1024];
    const char *model = qpt_fixture(MODEL);
    snprintf(root, sizeof root, "%.*s", (int)(strlen(model) - strlen(MODEL) - 1), model);
    setenv("FIXTURES", root, 1);
    struct hx_sweep_config *cfg;
    char path[1200];
    const char *qp_root = getenv("QP_ROOT");
    snprintf(path, sizeof path, "%s/examples/sweep-stories260K.json", qp_root && *qp_root ? qp_root : ".");
    QP_CHECK_MSG(hx_sweep_config_load(path, &cfg, err) == 0, "%s", err);
    return cfg;
}

QP_TEST(cached_figures_should_equal_the_lockstep_for_every_demo_variant) {
    struct fx f;
    fx_open(&f);
    struct hx_refcache *rc = fx_cache(&f, qpt_tmpdir(), "x");
    struct hx_sweep_config *cfg = demo_variants();
    char err[QP_ERRLEN];
    size_t clen;
    char *ctext = qpt_read_fixture("made/tinystories-calib.txt", &clen);
    struct hx_calib *cal;
    QP_CHECK(hx_calib_create(f.m->tok, ctext, clen, 16, 256, &cal, err) == 0);
    struct hx_lockstep_opts o = {.protocol = HX_PROTO_LLAMACPP, .ctx = CTX, .n_threads = 2, .bos = 1,
                                 .max_chunks = CHUNKS, .layer_chunks = LAYER_CHUNKS, .keep_tokens = 1};
    QP_CHECK(cfg->n_variants >= 18);
    for (int i = 0; i < cfg->n_variants; i++) {
        struct qz_variant *v;
        struct hx_quant_model *q;
        struct kn_engine *e;
        QP_CHECK_MSG(qz_variant_parse(cfg->variants[i], &v, err) == 0, "%s", err);
        QP_CHECK_MSG(hx_quant_model_create_calib(&f.m->w, v, cal, &q, err) == 0, "%s: %s", cfg->variants[i], err);
        struct kn_engine_opts eo = {0};
        hx_quant_model_engine_opts(q, &eo);
        QP_CHECK(kn_engine_create_opts(&q->w, &eo, &e, err) == 0);
        struct hx_lockstep_result l, c;
        QP_CHECK_MSG(hx_lockstep_run(f.ref, e, f.toks, f.n, &o, &l, err) == 0, "%s", err);
        QP_CHECK_MSG(hx_refeval_run(rc, e, f.toks, f.n, &o, &c, err) == 0, "%s", err);
        size_t nb;
        double *bound = token_bounds(&f, e, &nb);
        compare_runs(cfg->variants[i], &l, &c, bound, nb);
        free(bound);
        hx_lockstep_result_free(&l), hx_lockstep_result_free(&c);
        kn_engine_destroy(e);
        hx_quant_model_destroy(q);
        qz_variant_destroy(v);
    }
    hx_calib_destroy(cal);
    free(ctext);
    hx_sweep_config_free(cfg);
    hx_refcache_close(rc);
    fx_close(&f);
}

// Copies file a to b.
static void copy_file(const char *a, const char *b) {
    size_t n;
    char *s = qpt_read_file(a, &n);
    QP_CHECK(s != NULL);
    FILE *o = fopen(b, "wb");
    QP_CHECK(o && fwrite(s, 1, n, o) == n);
    fclose(o);
    free(s);
}

QP_TEST(a_foreign_truncated_or_corrupt_cache_should_be_refused_in_one_line) {
    struct fx f;
    fx_open(&f);
    char dir[1024], path[1200], err[QP_ERRLEN];
    snprintf(dir, sizeof dir, "%s", qpt_tmpdir());
    struct hx_refcache *rc = fx_cache(&f, dir, "text-a");
    snprintf(path, sizeof path, "%s", hx_refcache_path(rc));
    int64_t bytes = hx_refcache_bytes(rc);
    hx_refcache_close(rc);
    struct hx_refcache_id a = fx_id(&f, "text-a"), b = fx_id(&f, "text-b");
    // Text b has no cache; text a's file put where b's belongs is foreign.
    QP_CHECK_INT_EQ(hx_refcache_open(dir, &b, &f.m->w.cfg, &rc, err), 0);
    struct hx_refcache *rb = fx_cache(&f, dir, "text-b");
    char pb[1200];
    snprintf(pb, sizeof pb, "%s", hx_refcache_path(rb));
    hx_refcache_close(rb);
    copy_file(path, pb);
    QP_CHECK_INT_EQ(hx_refcache_open(dir, &b, &f.m->w.cfg, &rc, err), QP_EFORMAT);
    QP_CHECK_MSG(strstr(err, "another model, text") && !strchr(err, '\n'), "%s", err);
    // Truncated.
    QP_CHECK(truncate(path, bytes - 4096) == 0);
    QP_CHECK_INT_EQ(hx_refcache_open(dir, &a, &f.m->w.cfg, &rc, err), QP_EFORMAT);
    QP_CHECK_MSG(strstr(err, "truncated") && strstr(err, path), "%s", err);
    // Whole length, one byte changed in the body.
    QP_CHECK(truncate(path, 0) == 0);
    rc = fx_cache(&f, dir, "text-a"); // rebuilt in place (the empty file was refused)
    hx_refcache_close(rc);
    FILE *fp = fopen(path, "r+b");
    QP_CHECK(fp && fseek(fp, 5000, SEEK_SET) == 0);
    int ch = fgetc(fp);
    fseek(fp, 5000, SEEK_SET);
    fputc(ch ^ 1, fp);
    fclose(fp);
    QP_CHECK_INT_EQ(hx_refcache_open(dir, &a, &f.m->w.cfg, &rc, err), QP_EFORMAT);
    QP_CHECK_MSG(strstr(err, "corrupt"), "%s", err);
    fx_close(&f);
}

// ---------------------------------------------------------------------------------------------
// Through the binary: rebuild, refusal, kill -9, two builders

// `qprobe eval` of spec into db with the cache in dir (NULL: beside db); extra options; stderr
// and stdout into *out. The exit status.
static int eval_run(const char *db, const char *dir, const char *spec, const char *text, const char *extra, char **out) {
    char cmd[8192], model[1024], tok[1024], rc[1200] = "";
    snprintf(model, sizeof model, "%s", qpt_fixture(MODEL));
    snprintf(tok, sizeof tok, "%s", qpt_fixture(TOK));
    if (dir) snprintf(rc, sizeof rc, "--refcache '%s/%s'", qpt_tmpdir(), dir);
    snprintf(cmd, sizeof cmd, "'%s' eval -m '%s' -z '%s' --text '%s' --db '%s/%s' -q '%s' %s %s -t 2 --json 2>&1",
             qpt_qprobe(), model, tok, text, qpt_tmpdir(), db, spec, rc, extra ? extra : "");
    return qpt_run(cmd, out);
}

// The files of directory dir (in the case's tmpdir) whose name contains part.
static int count_files(const char *dir, const char *part) {
    char cmd[2048], *out = NULL;
    snprintf(cmd, sizeof cmd, "ls '%s/%s' 2>/dev/null | grep -c -- '%s'", qpt_tmpdir(), dir, part);
    qpt_run(cmd, &out);
    int n = out ? atoi(out) : -1;
    free(out);
    return n;
}

QP_TEST(a_truncated_cache_should_be_rebuilt_by_eval_and_refused_by_a_shard) {
    const char *text = qpt_text_prefix(60000);
    char *out = NULL, cmd[4096];
    QP_CHECK_INT_EQ(eval_run("a.sqlite", NULL, "q4_0", text, "--chunks 4", &out), 0);
    double kld = qpt_json_num(out, "kld_mean");
    free(out);
    snprintf(cmd, sizeof cmd, "f=$(ls '%s'/a.sqlite.refcache/*.qpref) && truncate -s -10000 \"$f\"", qpt_tmpdir());
    QP_CHECK_INT_EQ(qpt_run(cmd, NULL), 0);
    // A shard (read-only use) refuses it in one line naming the file...
    snprintf(cmd, sizeof cmd,
             "cd '%s' && printf '{\"model\": \"%s\", \"tokenizer\": \"%s\", \"eval\": {\"text\": \"%s\", \"chunks\": 4},"
             " \"variants\": [\"q8_0\", \"q4_0\"]}' > s.json && '%s' sweep -c s.json --db a.sqlite --shard 1/2 2>&1",
             qpt_tmpdir(), qpt_fixture(MODEL), qpt_fixture(TOK), text, qpt_qprobe());
    QP_CHECK_INT_EQ(qpt_run(cmd, &out), 2);
    QP_CHECK_MSG(strstr(out, "truncated") && strstr(out, ".qpref") && !strstr(out, "rebuilding"), "%s", out);
    free(out);
    // ... eval names it and builds it again; the numbers are those of the first.
    QP_CHECK_INT_EQ(eval_run("a.sqlite", NULL, "q8_0", text, "--chunks 4", &out), 0);
    QP_CHECK_MSG(strstr(out, "truncated") && strstr(out, "rebuilding"), "%s", out);
    free(out);
    QP_CHECK_INT_EQ(eval_run("b.sqlite", NULL, "q4_0", text, "--chunks 4", &out), 0);
    QP_CHECK_NEAR(qpt_json_num(out, "kld_mean"), kld, 0);
    free(out);
}

QP_TEST(kill_9_during_the_reference_pass_should_leave_nothing_a_resume_trusts) {
    const char *text = qpt_text_prefix(700000);
    char cmd[8192], *out = NULL;
    // The reference pass over 150 chunks; killed as soon as its temporary file appears.
    snprintf(cmd, sizeof cmd,
             "cd '%s' && ('%s' eval -m '%s' -z '%s' --text '%s' --db k.sqlite -q q4_0 --chunks 150 -t 2 >/dev/null 2>&1 &"
             " pid=$!; for i in $(seq 2000); do ls k.sqlite.refcache 2>/dev/null | grep -q tmp && break; sleep 0.005; done;"
             " kill -9 $pid; wait $pid; ls k.sqlite.refcache)",
             qpt_tmpdir(), qpt_qprobe(), qpt_fixture(MODEL), qpt_fixture(TOK), text);
    qpt_run(cmd, &out);
    QP_CHECK_MSG(out && strstr(out, ".tmp.") && !strstr(out, ".qpref\n"), "after kill -9: %s", out ? out : "");
    free(out);
    // Resuming builds it again (the leftover removed) and gives a clean run's numbers.
    QP_CHECK_INT_EQ(eval_run("k.sqlite", NULL, "q4_0", text, "--chunks 150 --resume", &out), 0);
    double kld = qpt_json_num(out, "kld_mean");
    free(out);
    QP_CHECK_INT_EQ(count_files("k.sqlite.refcache", ".tmp."), 0);
    QP_CHECK_INT_EQ(count_files("k.sqlite.refcache", ".qpref"), 2); // the cache and its lock
    QP_CHECK_INT_EQ(eval_run("clean.sqlite", NULL, "q4_0", text, "--chunks 150", &out), 0);
    QP_CHECK_NEAR(qpt_json_num(out, "kld_mean"), kld, 0);
    free(out);
}

QP_TEST(two_processes_building_one_cache_should_both_use_it) {
    const char *text = qpt_text_prefix(400000);
    char cmd[8192], *out = NULL, model[1024], tok[1024];
    snprintf(model, sizeof model, "%s", qpt_fixture(MODEL));
    snprintf(tok, sizeof tok, "%s", qpt_fixture(TOK));
    snprintf(cmd, sizeof cmd,
             "cd '%s' && for d in x y; do '%s' eval -m '%s' -z '%s' --text '%s' --db $d.sqlite --refcache rc -q q4_0 "
             "--chunks 120 -t 1 --json > $d.out 2>$d.err & done; wait; cat x.out y.out",
             qpt_tmpdir(), qpt_qprobe(), model, tok, text);
    QP_CHECK_INT_EQ(qpt_run(cmd, &out), 0);
    const char *second = out ? strstr(out + 1, "{\"spec\"") : NULL;
    QP_CHECK_MSG(second, "%s", out ? out : "");
    QP_CHECK(qpt_json_num(out, "kld_mean") == qpt_json_num(second, "kld_mean"));
    free(out);
    QP_CHECK_INT_EQ(count_files("rc", ".qpref"), 2); // one cache and its lock
    QP_CHECK_INT_EQ(count_files("rc", ".tmp."), 0);
}

// ---------------------------------------------------------------------------------------------
// The plan (hx_plan.h)

QP_TEST(a_budget_should_drop_optional_diagnostics_in_order_and_say_which) {
    struct fx f;
    fx_open(&f);
    char err[QP_ERRLEN], notes[1024];
    static const char *const specs[] = {"q8_0", "gptq:bits=4:group=32", "rtn:bits=4:group=32:asym"};
    struct hx_plan_in in = {.w = &f.m->w, .n_chunks = 60, .ctx = 512, .n_threads = 2, .calib_seqs = 32,
                            .calib_len = 512, .variants = specs, .n_variants = 3};
    struct hx_plan_diag d = {.layer_chunks = 2, .act_chunks = 4, .sens_chunks = 4, .sens_tensors = 1, .grid = 1,
                             .gen_prompts = 32, .gen_tokens = 64, .gen_prompt_tokens = 32};
    // A slow machine (1 ms a token, 1 s a pass), so that the diagnostics weigh.
    struct hx_plan_speed sp = {.tok_s = 1e-3, .pass_s = 1, .read_ns = 1, .gflops = 1};
    struct hx_plan p;
    QP_CHECK_MSG(hx_plan_make(&in, &d, &sp, &p, err) == 0, "%s", err);
    QP_CHECK(p.n == 3 && p.ref > 0 && p.rows[1].quant > p.rows[0].quant); // GPTQ's calibration passes
    for (int i = 0; i < 3; i++)
        QP_CHECK(p.rows[i].eval > 0 && p.rows[i].diag > 0 &&
                 fabs(p.rows[i].total - p.rows[i].quant - p.rows[i].eval - p.rows[i].diag) < 1e-6);
    double full = p.total, sens = 3 * (5 * 8 * 4 * (512e-3 + 1));
    // A budget that exact sensitivity alone breaks: it goes, nothing else.
    QP_CHECK(hx_plan_fit(&in, &d, &sp, &p, full - sens / 2, notes, sizeof notes) == 1);
    QP_CHECK_MSG(strstr(notes, "exact sensitivity replaced by the estimate") && !strchr(notes, ';'), "%s", notes);
    QP_CHECK(d.sens_chunks == 0 && d.sens_estimate == 1 && d.gen_prompts == 32 && d.grid == 1);
    // One that nothing fits: everything optional goes, in order, and it says it does not fit.
    QP_CHECK(hx_plan_fit(&in, &d, &sp, &p, 1, notes, sizeof notes) == 0);
    QP_CHECK_MSG(strstr(notes, "generation on 16 prompts") && strstr(notes, "generation off") &&
                 strstr(notes, "grid-collapse statistics off") && strstr(notes, "per-layer error on 1 chunk"), "%s", notes);
    QP_CHECK(d.gen_prompts == 0 && !d.grid && d.act_chunks == 1 && d.layer_chunks == 1);
    free(p.rows);
    fx_close(&f);
}

QP_TEST(plan_should_list_every_variant_and_run_nothing) {
    char cmd[8192], *out = NULL;
    snprintf(cmd, sizeof cmd,
             "cd '%s' && printf '{\"model\": \"%s\", \"tokenizer\": \"%s\", \"eval\": {\"text\": \"%s\", \"chunks\": 4},"
             " \"variants\": [\"q8_0\", \"q4_k_m\", \"nf4\"]}' > p.json && '%s' sweep -c p.json --db p.sqlite --plan"
             " --budget 5 && test ! -e p.sqlite",
             qpt_tmpdir(), qpt_fixture(MODEL), qpt_fixture(TOK), qpt_text_prefix(60000), qpt_qprobe());
    QP_CHECK_INT_EQ(qpt_run(cmd, &out), 0);
    QP_CHECK_MSG(out && strstr(out, "reference pass") && strstr(out, "q8_0") && strstr(out, "q4_k_m") &&
                 strstr(out, "nf4:group=64") && strstr(out, "total"), "%s", out ? out : "");
    free(out);
}
