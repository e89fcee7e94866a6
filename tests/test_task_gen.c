// test_task_gen.c — generative tasks (tasks/task_gen.h): the text rules against hand examples,
// generate-until JSONL end to end on stories260K (its greedy story is llama2.c's golden output),
// the greedy form of LAMBADA beside its log-likelihood acc, thread independence, and malformed
// records named by file and line.
#include "qp_test.h"
#include "task_gen.h"

#define MODEL "models/llama2c/stories260K.bin"
#define TOK "models/llama2c/tok512.bin"

QP_TEST(text_rules_should_match_the_hand_examples) {
    char *until[] = {".", "\n"};
    QP_CHECK_INT_EQ(task_gen_cut(" Lily. She", until, 2), 5);
    QP_CHECK_INT_EQ(task_gen_cut(" Lily\nand. ", until, 2), 5);
    QP_CHECK_INT_EQ(task_gen_cut(" Lily", until, 2), 5);
    QP_CHECK(task_gen_exact(" Lily \n", "Lily"));
    QP_CHECK(!task_gen_exact(" Lily Rose", "Lily"));
    QP_CHECK(task_gen_contains(" it was Lily Rose", " Lily "));
    QP_CHECK(!task_gen_contains(" it was Lil", "Lily"));
    QP_CHECK_INT_EQ(task_gen_word_count("  the red  ball\n"), 3);
    // W words followed by whitespace: "Tom." alone is not finished (the model may add "my").
    QP_CHECK(!task_gen_words_done(" Tom.", 1));
    QP_CHECK(task_gen_words_done(" Tom. He", 1));
    QP_CHECK(!task_gen_words_done(" red", 2));
    QP_CHECK(task_gen_words_done(" red ball ", 2));
    // The last word's trailing punctuation does not count; the word itself must be equal.
    QP_CHECK(task_gen_words_match(" Tom. He", " Tom"));
    QP_CHECK(task_gen_words_match(" Tom\"", " Tom"));
    QP_CHECK(!task_gen_words_match(" Tommy", " Tom"));
    QP_CHECK(!task_gen_words_match(" tom", " Tom"));
    QP_CHECK(task_gen_words_match(" the ball!", " the ball"));
    QP_CHECK(!task_gen_words_match(" the", " the ball"));
}

static char *run(const char *args, int want) {
    char cmd[4096], model[1024], *out = NULL;
    snprintf(model, sizeof model, "%s", qpt_fixture(MODEL));
    snprintf(cmd, sizeof cmd, "'%s' tasks -m '%s' -z '%s' %s 2>&1", qpt_qprobe(), model, qpt_fixture(TOK), args);
    int rc = qpt_run(cmd, &out);
    QP_CHECK_MSG(rc == want, "exit %d (want %d): %s\n%s", rc, want, cmd, out ? out : "");
    return out;
}

static const char *write_file(const char *name, const char *text) {
    static char path[2][512];
    static int k;
    char *p = path[k++ % 2];
    snprintf(p, 512, "%s/%s", qpt_tmpdir(), name);
    FILE *f = fopen(p, "w");
    fputs(text, f);
    fclose(f);
    return p;
}

QP_TEST(generate_until_should_score_exact_match_and_contains) {
    const char *items = write_file("gen.jsonl",
        "{\"prompt\": \"Once upon a time, there was a little girl named\", \"answer\": \"Lily\", \"until\": [\".\"]}\n"
        "{\"prompt\": \"Once upon a time, there was a little girl named\", \"answer\": \"Lily loved\", \"until\": \".\"}\n"
        "{\"prompt\": \"Once upon a time, there was a little girl named\", \"answer\": \"Tom\", \"max_tokens\": 4}\n"
        "{\"prompt\": \"Once upon a time, there was a little girl named\", \"answer\": \"to play\", \"max_tokens\": 24}\n");
    char args[1024];
    snprintf(args, sizeof args, "--suite '%s' --json -t 1", items);
    char *out = run(args, 0);
    // Greedy: " Lily. She loved to play outside in the park." (llama2.c's golden story).
    // 1: " Lily" = "Lily"; 2: " Lily" is not "Lily loved" and does not contain it; 3: wrong;
    // 4: 24 tokens without a stop string hold "... to play ...": contains, not exact.
    QP_CHECK_MSG(strstr(out, "\"kind\":\"gen\""), "%s", out);
    QP_CHECK_NEAR(qpt_json_num(out, "exact_match"), 0.25, 1e-12);
    QP_CHECK_NEAR(qpt_json_num(out, "contains"), 0.5, 1e-12);
    free(out);
    // The same with 3 threads and a variant: the reference's figures do not change, and the
    // paired statistics are there.
    snprintf(args, sizeof args, "--suite '%s' --json -t 3 -q q8_0", items);
    out = run(args, 0);
    QP_CHECK_NEAR(qpt_json_num(out, "exact_match"), 0.25, 1e-12);
    QP_CHECK(strstr(out, "\"paired\":{\"compared\":4"));
    free(out);
}

QP_TEST(lambada_should_report_greedy_exact_match_beside_loglikelihood_acc) {
    qpt_fixture("data/lambada_openai/lambada_test.jsonl");
    char args[1024];
    snprintf(args, sizeof args, "--suite lambada --limit 60 --json -t 2 --fixtures '%s'", getenv("QP_FIXTURES") ? getenv("QP_FIXTURES") : "../shared/fixtures");
    char *out = run(args, 0);
    QP_CHECK_MSG(strstr(out, "\"greedy\":{\"reference\":{\"scored\":60"), "%s", out);
    double acc = qpt_json_num(out, "acc"), em = qpt_json_num(strstr(out, "\"greedy\""), "exact_match");
    QP_CHECK(acc >= 0 && acc <= 1 && em >= 0 && em <= 1);
    free(out);
    // lambada-greedy is the greedy form as a suite of its own (as a study stores it).
    snprintf(args, sizeof args, "--suite lambada-greedy --limit 60 --json -t 1 --fixtures '%s'",
             getenv("QP_FIXTURES") ? getenv("QP_FIXTURES") : "../shared/fixtures");
    char *g = run(args, 0);
    QP_CHECK(strstr(g, "\"suite\":\"lambada-greedy\""));
    QP_CHECK_NEAR(qpt_json_num(g, "exact_match"), em, 0);
    free(g);
}

QP_TEST(greedy_form_should_refuse_a_multiple_choice_suite) {
    char *out = run("--suite tinystories-nextsent-greedy", 2);
    QP_CHECK_MSG(strstr(out, "not cloze: it has no greedy form"), "%s", out);
    free(out);
}

QP_TEST(malformed_generate_until_records_should_name_file_and_line) {
    static const struct {
        const char *text, *want;
    } bad[] = {
        {"{\"prompt\": \"a\", \"answer\": \"b\"}\n{\"prompt\": \"x\", \"until\": [\".\"]}\n", "bad.jsonl:2: missing \"answer\""},
        {"{\"prompt\": \"a\", \"answer\": \"  \"}\n", "bad.jsonl:1: the answer is empty"},
        {"{\"prompt\": \"a\", \"answer\": \"b\", \"until\": [3]}\n", "bad.jsonl:1: \"until\"[0] is not a string"},
        {"{\"prompt\": \"a\", \"answer\": \"b\", \"until\": [\"\"]}\n", "bad.jsonl:1: stop string 0 of \"until\" is empty"},
        {"{\"prompt\": \"a\", \"answer\": \"b\", \"max_tokens\": 0}\n", "bad.jsonl:1: \"max_tokens\" is not a positive integer"},
        {"{\"prompt\": \"a\", \"answer\": \"b\"}\n{\"context\": \"a\", \"target\": \" b\"}\n", "bad.jsonl:2: a cloze item in a generate until file"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        const char *p = write_file("bad.jsonl", bad[i].text);
        char args[1024];
        snprintf(args, sizeof args, "--suite '%s'", p);
        char *out = run(args, 2);
        QP_CHECK_MSG(strstr(out, bad[i].want) && !strchr(strchr(out, '\n') + 1, '\n'), "case %zu: %s", i, out);
        free(out);
    }
}
