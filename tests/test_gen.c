// test_gen.c — free-running generation (harness/run/hx_gen.h, docs/GENERATION.md) on stories260K:
// the ordering of median first divergence across q8_0, q4_k_m and 3-bit RTN; bit-identical
// results for 1 and 2 threads; the reference's NLL of a continuation as its own step; the
// silent-degradation detector in report and gate on a planted variant; sampling; sweep
// configurations; bad prompt files. Prompts come from the evaluation slice `make demo` uses
// (tinystories_val.txt from byte 400000).
#include <math.h>
#include <sqlite3.h>

#include "hx_gen.h"
#include "hx_model.h"
#include "hx_tokenizer.h"
#include "kn_engine.h"
#include "qp.h"
#include "qp_test.h"

#define MODEL "models/llama2c/stories260K.bin"
#define TOK "models/llama2c/tok512.bin"
// The planted case: only the classifier quantized (q4_0). On this slice its perplexity is 1.2 %
// above the reference's, its mean KLD 0.033, yet its greedy continuations split at token 1.
#define PLANTED "f32;name~output=q4_0"

static const char *eval_text(void) { return qpt_text_part("eval.txt", 400000, 60000); }

static const char *tmp_path(const char *name) {
    static char buf[4][512];
    static int k;
    char *b = buf[k++ % 4];
    snprintf(b, 512, "%s/%s", qpt_tmpdir(), name);
    return b;
}

// `qprobe eval` of spec with generation into db; the JSON line (malloc'd).
static char *eval_gen(const char *db, const char *spec, const char *gen, int threads) {
    char cmd[8192], text[1024], model[1024], tok[1024], *out = NULL;
    snprintf(text, sizeof text, "%s", eval_text());
    snprintf(model, sizeof model, "%s", qpt_fixture(MODEL));
    snprintf(tok, sizeof tok, "%s", qpt_fixture(TOK));
    snprintf(cmd, sizeof cmd,
             "'%s' eval -m '%s' -z '%s' --text '%s' --db '%s' -q '%s' %s -t %d --chunks 4 --layer-chunks 0 "
             "--act-chunks 0 --json 2>/dev/null",
             qpt_qprobe(), model, tok, text, db, spec, gen, threads);
    int rc = qpt_run(cmd, &out);
    QP_CHECK_MSG(rc == 0, "exit %d: %s", rc, cmd);
    return out;
}

QP_TEST(median_first_divergence_should_order_q8_0_above_q4_k_m_above_rtn3) {
    const char *db = tmp_path("order.sqlite");
    static const char *specs[] = {"q8_0", "q4_k_m", "rtn:bits=3:group=32:asym"};
    double med[3], share[3], agree[3];
    for (int i = 0; i < 3; i++) {
        char *j = eval_gen(db, specs[i], "--generate 16:64", 2);
        med[i] = qpt_json_num(j, "median_first_div");
        share[i] = qpt_json_num(j, "identical_share");
        agree[i] = qpt_json_num(j, "agree_k");
        free(j);
    }
    // Measured: 52, 6 and 0; identical 8 of 16, 0 and 0.
    QP_CHECK_MSG(med[0] > med[1] && med[1] > med[2], "median first divergence %g, %g, %g", med[0], med[1], med[2]);
    QP_CHECK_MSG(med[0] >= 48 && share[0] >= 0.4 && agree[0] >= 0.85, "q8_0: median %g, identical %g, agree %g",
                 med[0], share[0], agree[0]);
    QP_CHECK_MSG(med[2] <= 2 && share[2] == 0, "rtn 3-bit: median %g, identical %g", med[2], share[2]);
    // One row per prompt for the reference (stored once) and for each variant.
    QP_CHECK_INT_EQ(qpt_db_int(db, "SELECT count(*) FROM gen_item g JOIN variant v ON v.id = g.variant_id"
                                   " WHERE v.is_reference = 1"), 16);
    QP_CHECK_INT_EQ(qpt_db_int(db, "SELECT count(*) FROM gen_item"), 4 * 16);
    // An identical continuation has no first divergence; the stored rows agree with the summary.
    QP_CHECK_INT_EQ(qpt_db_int(db, "SELECT count(*) FROM gen_item g JOIN variant v ON v.id = g.variant_id"
                                   " WHERE v.spec = 'q8_0' AND g.first_div IS NULL"),
                    (long long)llround(share[0] * 16));
}

QP_TEST(generation_should_be_bit_identical_for_1_and_2_threads) {
    const char *a = tmp_path("t1.sqlite"), *b = tmp_path("t2.sqlite");
    free(eval_gen(a, "q4_k_m", "--generate 6:48", 1));
    free(eval_gen(b, "q4_k_m", "--generate 6:48", 2));
    const char *q = "SELECT group_concat(variant_id || ':' || prompt || ':' || tokens || ':' || quote(ref_nll) || ':' ||"
                    " quote(nll_self) || ':' || quote(first_div), '|') FROM (SELECT * FROM gen_item ORDER BY variant_id, prompt)";
    char *x = qpt_db_text(a, q), *y = qpt_db_text(b, q);
    QP_CHECK(strlen(x) > 100);
    QP_CHECK_STR_EQ(x, y);
    free(x), free(y);
}

// The reference's NLL of its own continuations, scored teacher-forced in batches (hx_gen_score),
// equals the NLL accumulated while it generated them one token at a time: the two paths of the
// engine give the same logits.
QP_TEST(scoring_step_should_reproduce_the_generating_models_own_nll) {
    struct hx_model *m;
    char err[QP_ERRLEN];
    QP_CHECK_MSG(hx_model_open(qpt_fixture(MODEL), qpt_fixture(TOK), &m, err) == 0, "%s", err);
    struct kn_engine *e;
    QP_CHECK(kn_engine_create(&m->w, NULL, &e, err) == 0);
    size_t len;
    char *text = qpt_read_file(eval_text(), &len);
    int *ids;
    size_t n;
    QP_CHECK(hx_tok_encode(m->tok, text, len, HX_TOK_ADD_BOS | HX_TOK_SPACE_PREFIX, &ids, &n) == 0);
    struct hx_gen_opts o;
    hx_gen_opts_default(&o);
    o.n_prompts = 5, o.n_tokens = 40;
    struct hx_gen_prompts p;
    QP_CHECK_MSG(hx_gen_prompts_from_text(ids, n, hx_tok_bos_added(m->tok), m->tok, &o, &p, err) == 0, "%s", err);
    struct hx_gen_conts c;
    QP_CHECK_MSG(hx_gen_run(e, m->tok, &p, &o, 2, NULL, NULL, &c, err) == 0, "%s", err);
    double nll[5];
    QP_CHECK_MSG(hx_gen_score(e, &p, &c, 2, nll, err) == 0, "%s", err);
    for (int i = 0; i < 5; i++) {
        QP_CHECK(c.n_tok[i] > 0 && p.n_tok[i] > 16);
        QP_CHECK_NEAR(nll[i], c.nll_self[i], 1e-9);
    }
    hx_gen_conts_free(&c);
    hx_gen_prompts_free(&p);
    free(ids), free(text);
    kn_engine_destroy(e);
    hx_model_close(m);
}

QP_TEST(detector_should_flag_a_planted_variant_and_not_q8_0) {
    const char *db = tmp_path("planted.sqlite"), *rules = tmp_path("rules.json"), *rep = tmp_path("rep");
    char *j = eval_gen(db, PLANTED, "--generate 16:64", 2);
    double dppl = 100 * (qpt_json_num(j, "ppl") / qpt_json_num(j, "ppl_ref") - 1);
    QP_CHECK_MSG(dppl < 3 && qpt_json_num(j, "kld_mean") < 0.05, "planted: ΔPPL %g %%", dppl);
    QP_CHECK(qpt_json_num(j, "median_first_div") <= 4);
    free(j);
    free(eval_gen(db, "q8_0", "--generate 16:64", 2));
    // The report, with its default limits.
    char cmd[4096], *out = NULL;
    snprintf(cmd, sizeof cmd, "'%s' report --db '%s' -o '%s' 2>&1", qpt_qprobe(), db, rep);
    QP_CHECK_INT_EQ(qpt_run(cmd, &out), 0);
    free(out);
    char path[1024];
    snprintf(path, sizeof path, "%s/summary.md", rep);
    char *md = qpt_read_file(path, NULL);
    QP_CHECK(md && strstr(md, "- Silent degradation in 1 variant: "));
    QP_CHECK(strstr(md, "  - `" PLANTED "`: ΔPPL +") && strstr(md, "median first divergence at token"));
    QP_CHECK(!strstr(md, "  - `q8_0`: ΔPPL"));
    free(md);
    snprintf(path, sizeof path, "%s/index.html", rep);
    char *html = qpt_read_file(path, NULL);
    QP_CHECK(html && strstr(html, "<h2 id=\"silent\">") && strstr(html, "<mark>"));
    QP_CHECK(strstr(html, "<h3>f32;name~output=q4_0</h3>") && !strstr(html, "<h3>q8_0</h3>"));
    free(html);
    snprintf(path, sizeof path, "%s/generation.csv", rep);
    char *csv = qpt_read_file(path, NULL);
    QP_CHECK(csv && strstr(csv, PLANTED ",16,64,") && strstr(csv, "median_first_div"));
    free(csv);
    // The gate: the generation rules fail the planted variant, with the silent-degradation note.
    FILE *f = fopen(rules, "w");
    fputs("{\"defaults\": {\"max_ppl_increase_pct\": 3, \"max_kld_mean\": 0.05, \"min_identical_share\": 0.25,"
          " \"min_median_first_divergence\": 16, \"max_loop_rate_increase\": 0.25}}\n", f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "'%s' gate --db '%s' --baseline reference --rules '%s'", qpt_qprobe(), db, rules);
    QP_CHECK_INT_EQ(qpt_run(cmd, &out), 1);
    QP_CHECK(strstr(out, "note: " PLANTED ": silent degradation"));
    QP_CHECK(!strstr(out, "note: q8_0: silent"));
    int q8_pass = 0;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n"))
        q8_pass |= strncmp(line, "q8_0 ", 5) == 0 && strstr(line, "min_median_first_divergence") && strstr(line, "PASS");
    QP_CHECK(q8_pass);
    free(out);
}

QP_TEST(sampling_should_use_the_same_seed_for_both_models_and_repeat) {
    const char *a = tmp_path("s1.sqlite"), *b = tmp_path("s2.sqlite"), *c = tmp_path("s3.sqlite");
    char *x = eval_gen(a, "q8_0", "--generate 8:48 --gen-temp 0.8 --gen-seed 7", 2);
    free(eval_gen(b, "q8_0", "--generate 8:48 --gen-temp 0.8 --gen-seed 7", 2));
    free(eval_gen(c, "q8_0", "--generate 8:48 --gen-temp 0.8 --gen-seed 8", 2));
    // Coupled draws: q8_0 follows the reference's sample for a while.
    QP_CHECK_MSG(qpt_json_num(x, "median_first_div") >= 8, "%s", x);
    free(x);
    const char *q = "SELECT group_concat(tokens, '|') FROM (SELECT tokens FROM gen_item ORDER BY variant_id, prompt)";
    char *ta = qpt_db_text(a, q), *tb = qpt_db_text(b, q), *tc = qpt_db_text(c, q);
    QP_CHECK_STR_EQ(ta, tb);
    QP_CHECK(strcmp(ta, tc) != 0);
    char *setup = qpt_db_text(a, "SELECT DISTINCT setup FROM gen_item");
    QP_CHECK_STR_EQ(setup, "text@8x32 n=8 L=48 T=0.80000000000000004 seed=7");
    free(ta), free(tb), free(tc), free(setup);
}

QP_TEST(prompts_file_should_give_the_prompts_and_reject_bad_files_with_file_and_line) {
    const char *db = tmp_path("file.sqlite"), *good = tmp_path("p.jsonl"), *empty = tmp_path("empty.txt");
    const char *longp = tmp_path("long.txt"), *nokey = tmp_path("nokey.jsonl");
    FILE *f = fopen(good, "w");
    fputs("{\"prompt\": \"Once upon a time, there was a little girl named\"}\n\n{\"prompt\": \"Tom had a red ball.\"}\n", f);
    fclose(f);
    char args[1100];
    snprintf(args, sizeof args, "--prompts '%s'", good);
    free(eval_gen(db, "q8_0", args, 2));
    // Two prompts (the blank line is skipped), 64 tokens each; the first is llama2.c's golden
    // greedy story (models/llama2c/stories260K.greedy200.txt): "... a little girl named Lily."
    QP_CHECK_INT_EQ(qpt_db_int(db, "SELECT count(*) FROM gen_item WHERE variant_id = 1"), 2);
    char *t0 = qpt_db_text(db, "SELECT text FROM gen_item WHERE variant_id = 1 AND prompt = 0");
    QP_CHECK_MSG(strncmp(t0, " Lily. She loved to play outside", 32) == 0, "%s", t0);
    free(t0);
    char *setup = qpt_db_text(db, "SELECT DISTINCT setup FROM gen_item");
    QP_CHECK_MSG(strncmp(setup, "file:", 5) == 0 && strstr(setup, " n=2 L=64 greedy"), "%s", setup);
    free(setup);
    f = fopen(empty, "w");
    fclose(f);
    f = fopen(longp, "w");
    fputs("Lily went out.\n", f);
    for (int i = 0; i < 400; i++) fputs("the big dog ran to the park and ", f);
    fputs("\n", f);
    fclose(f);
    f = fopen(nokey, "w");
    fputs("{\"prompt\": \"a\"}\n{\"text\": \"b\"}\n", f);
    fclose(f);
    static const struct {
        const char *file, *want;
    } bad[] = {{"empty.txt", "empty.txt:1: no prompt in the file"},
               {"long.txt", "long.txt:2: the prompt is "},
               {"nokey.jsonl", "nokey.jsonl:2: missing \"prompt\""}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char cmd[4096], *out = NULL, model[1024], text[1024];
        snprintf(model, sizeof model, "%s", qpt_fixture(MODEL));
        snprintf(text, sizeof text, "%s", eval_text());
        snprintf(cmd, sizeof cmd,
                 "'%s' eval -m '%s' -z '%s' --text '%s' --db '%s' -q q8_0 --prompts '%s' --chunks 1 --layer-chunks 0 "
                 "--act-chunks 0 2>&1",
                 qpt_qprobe(), model, qpt_fixture(TOK), text, tmp_path("bad.sqlite"), tmp_path(bad[i].file));
        QP_CHECK_INT_EQ(qpt_run(cmd, &out), 2);
        QP_CHECK_MSG(strstr(out, bad[i].want) && !strchr(strchr(out, '\n') + 1, '\n'), "%s", out);
        free(out);
    }
}

QP_TEST(sweep_config_should_take_a_generate_section) {
    const char *cfg = tmp_path("sweep.json"), *db = tmp_path("sweep.sqlite");
    char model[1024], text[1024];
    snprintf(model, sizeof model, "%s", qpt_fixture(MODEL));
    snprintf(text, sizeof text, "%s", eval_text());
    FILE *f = fopen(cfg, "w");
    fprintf(f, "{\"model\": \"%s\", \"tokenizer\": \"%s\", \"eval\": {\"text\": \"%s\", \"chunks\": 2},"
               " \"diagnostics\": {\"layer_chunks\": 0, \"act_chunks\": 0},"
               " \"generate\": {\"prompts\": 4, \"tokens\": 16, \"k\": 8, \"comment\": \"tiny\"},"
               " \"variants\": [\"q8_0\", \"q4_0\"], \"threads\": 2}\n",
            model, qpt_fixture(TOK), text);
    fclose(f);
    char cmd[4096], *out = NULL;
    snprintf(cmd, sizeof cmd, "'%s' sweep -c '%s' --db '%s' --json 2>/dev/null", qpt_qprobe(), cfg, db);
    QP_CHECK_INT_EQ(qpt_run(cmd, &out), 0);
    QP_CHECK_MSG(strstr(out, "\"gen_median_first_div\":"), "%s", out);
    free(out);
    QP_CHECK_INT_EQ(qpt_db_int(db, "SELECT count(*) FROM gen_item"), 3 * 4);
    QP_CHECK_INT_EQ(qpt_db_int(db, "SELECT count(*) FROM metric WHERE suite = 'gen' AND name = 'k' AND value = 8"), 2);
    // An unknown key is refused with its JSON path before any work.
    f = fopen(cfg, "w");
    fprintf(f, "{\"model\": \"%s\", \"eval\": {\"text\": \"%s\"}, \"generate\": {\"prompt\": 4},"
               " \"variants\": [\"q8_0\"]}\n", model, text);
    fclose(f);
    snprintf(cmd, sizeof cmd, "'%s' sweep -c '%s' --db '%s' 2>&1", qpt_qprobe(), cfg, tmp_path("bad.sqlite"));
    QP_CHECK_INT_EQ(qpt_run(cmd, &out), 2);
    QP_CHECK_MSG(strstr(out, "generate.prompt: unknown key"), "%s", out);
    free(out);
}

QP_TEST(merge_should_carry_the_generation_rows) {
    const char *a = tmp_path("m1.sqlite"), *b = tmp_path("m2.sqlite"), *out = tmp_path("merged.sqlite");
    free(eval_gen(a, "q8_0", "--generate 4:16", 2));
    free(eval_gen(b, "q4_0", "--generate 4:16", 2));
    char cmd[4096], *o = NULL;
    snprintf(cmd, sizeof cmd, "'%s' merge '%s' '%s' '%s' 2>&1", qpt_qprobe(), out, a, b);
    QP_CHECK_INT_EQ(qpt_run(cmd, &o), 0);
    free(o);
    // The reference's rows once (the second input's reference is kept, not copied), and each
    // variant's, with their first divergences.
    QP_CHECK_INT_EQ(qpt_db_int(out, "SELECT count(*) FROM gen_item"), 3 * 4);
    QP_CHECK_INT_EQ(qpt_db_int(out, "SELECT count(*) FROM gen_item g JOIN variant v ON v.id = g.variant_id"
                                    " WHERE v.spec = 'q4_0'"), 4);
}
