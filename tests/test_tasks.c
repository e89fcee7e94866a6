// test_tasks.c — task suites: the data model, acc/acc_norm/flips on a hand-computed example,
// the built-in TinyStories suites, log-likelihood scoring against a direct forward pass (token
// boundary rule, rewind, left cut, thread independence), the file readers on real datasets
// and on garbage, and `qprobe tasks` end to end on stories260K.
#include <stdint.h>
#include <unistd.h>

#include "kn_engine.h"
#include "met_paired.h"
#include "hx_model.h"
#include "qp.h"
#include "qp_utf8.h"
#include "qp_test.h"
#include "task.h"
#include "task_builtin.h"
#include "hx_task_io.h"
#include "task_score.h"
#include "hx_tasks_run.h"
#include "hx_tokenizer.h"

#define STORIES "models/llama2c/stories260K.bin"
#define TOK512 "models/llama2c/tok512.bin"
#define TINY "data/tinystories/tinystories_val.txt"

// Scoring vs the direct forward pass: the same engine rows, but the reference below sums
// exp() in double where the engine's logsumexp sums its float exps (|rel err| < 2e-7 each), so
// a continuation of a few dozen tokens agrees to about 1e-6 nats.
#define LL_TOL 1e-5

// Floors for stories260K on the built-in suites, a few standard errors below the measured
// values (nextsent acc 0.359, acc_norm 0.379, n = 493, stderr 0.022; cloze acc 0.150,
// stderr 0.016). Chance is 0.25 for nextsent and about 0 for cloze.
#define NEXTSENT_ACC_FLOOR 0.31
#define NEXTSENT_ACC_NORM_FLOOR 0.32
#define CLOZE_ACC_FLOOR 0.10

// ---------------------------------------------------------------------------------------------
// Helpers

static const char *scratch(const char *name, const char *text) {
    static char bufs[4][4096];
    static int next;
    char *p = bufs[next++ % 4];
    snprintf(p, 4096, "%s/%s", qpt_tmpdir(), name);
    FILE *f = fopen(p, "wb");
    QP_CHECK(f && fwrite(text, 1, strlen(text), f) == strlen(text));
    fclose(f);
    return p;
}

struct fixture {
    struct hx_model *m;
    struct kn_engine *e;
    struct task_tok tt;
};

static void fixture_open(struct fixture *f) {
    char err[QP_ERRLEN];
    QP_CHECK_MSG(hx_model_open(qpt_fixture(STORIES), qpt_fixture(TOK512), &f->m, err) == 0, "%s", err);
    QP_CHECK_MSG(kn_engine_create(&f->m->w, NULL, &f->e, err) == 0, "%s", err);
    hx_tasks_tok(f->m->tok, &f->tt);
}

static void fixture_close(struct fixture *f) {
    kn_engine_destroy(f->e);
    hx_model_close(f->m);
}

static struct task_suite *builtin(const char *name, int n) {
    size_t len;
    char *text = qpt_read_file(qpt_fixture(TINY), &len);
    QP_CHECK(text != NULL);
    struct task_suite *s;
    char err[QP_ERRLEN];
    QP_CHECK_MSG(task_builtin_create(name, text, len, &s, err) == 0, "%s", err);
    if (n > 0) task_suite_truncate(s, n);
    free(text);
    return s;
}

static int encode(const struct task_tok *tt, const char *text, int **out) {
    int n = tt->encode(tt->ctx, text, 1, NULL, 0);
    QP_CHECK(n > 0);
    *out = malloc((size_t)n * sizeof **out);
    QP_CHECK(tt->encode(tt->ctx, text, 1, *out, n) == n);
    return n;
}

// The log-likelihood of cont after ctx computed directly: lm-eval's rule written out again,
// the whole sequence (with `cut` tokens removed after BOS) in one forward pass, every row's
// log-softmax in double.
static double direct_ll(const struct kn_engine *e, const struct task_tok *tt, const char *ctx, const char *cont,
                        int cut, int *ntok, int *greedy) {
    size_t cl = strlen(ctx), tl = cl;
    while (tl > 0 && strchr(" \t\n\r\v\f", ctx[tl - 1])) tl--;
    char *a = strndup(ctx, tl), *b = malloc(cl + strlen(cont) + 1);
    strcpy(b, ctx);
    strcat(b, cont);
    int *ta, *tb;
    int na = encode(tt, a, &ta), nb = encode(tt, b, &tb), p = 0;
    while (p < na && p < nb && ta[p] == tb[p]) p++;
    if (p > nb - 1) p = nb - 1;
    if (p < 1) p = 1;
    // sequence: BOS, then tb[cut + 1 ..]
    int n = nb - cut;
    int *seq = malloc((size_t)n * sizeof *seq);
    seq[0] = tb[0];
    memcpy(seq + 1, tb + cut + 1, (size_t)(n - 1) * sizeof *seq);
    int vocab = kn_engine_config(e)->vocab_size;
    struct kn_state *st;
    char err[QP_ERRLEN];
    QP_CHECK_MSG(kn_state_create(e, n, n, 1, &st, err) == 0, "%s", err);
    float *logits = malloc((size_t)n * vocab * sizeof *logits);
    kn_forward(st, seq, n - 1, logits, 0, NULL);
    double ll = 0;
    int g = 1;
    for (int k = p; k < nb; k++) { // token tb[k] sits at position k - cut, predicted by row k - cut - 1
        const float *row = logits + (size_t)(k - cut - 1) * vocab;
        double mx = row[0];
        int arg = 0;
        for (int j = 1; j < vocab; j++)
            if (row[j] > mx) mx = row[j], arg = j;
        double s = 0;
        for (int j = 0; j < vocab; j++) s += exp((double)row[j] - mx);
        ll += (double)row[tb[k]] - mx - log(s);
        g &= arg == tb[k];
    }
    *ntok = nb - p;
    *greedy = g;
    kn_state_destroy(st);
    free(logits), free(seq), free(ta), free(tb), free(a), free(b);
    return ll;
}

static struct task_result *score(const struct fixture *f, const struct task_suite *s, int window, int threads) {
    struct task_score_opts o = {.window = window, .n_threads = threads};
    struct task_result *r;
    char err[QP_ERRLEN];
    QP_CHECK_MSG(task_score(f->e, s, &f->tt, &o, &r, err) == 0, "%s", err);
    return r;
}

// ---------------------------------------------------------------------------------------------
// Data model and hand-computed statistics

QP_TEST(acc_and_acc_norm_should_match_a_hand_computed_example) {
    struct task_suite *s;
    char err[QP_ERRLEN];
    QP_CHECK(task_suite_create("hand", TASK_MC, &s) == 0);
    const char *c0[] = {" a", " bbbb", " cc"}, *c1[] = {" yes", " no"}, *c2[] = {" x", " y"},
               *c3[] = {" long answer", " s"};
    QP_CHECK(task_suite_add_mc(s, "0", "q", c0, 3, 1, 0, err) == 0);
    QP_CHECK(task_suite_add_mc(s, "1", "q", c1, 2, 0, 0, err) == 0);
    QP_CHECK(task_suite_add_mc(s, "2", "q", c2, 2, 1, 0, err) == 0);
    QP_CHECK(task_suite_add_mc(s, "3", "q", c3, 2, 0, 0, err) == 0);
    struct task_result *r;
    QP_CHECK(task_result_create(s, &r) == 0);
    // item 0: ll -2 -4 -3 → pred 0 (wrong); per char -2 -1 -1.5 → pred_norm 1 (right)
    // item 1: ll -1 -1.5 → 0 right; per char -1/3 -0.75 → 0 right
    // item 2: ll -1 -1 (tie: the first wins) → 0 wrong, norm 0 wrong
    // item 3: ll -6 -2 → 1 wrong; per char -6/11 -2 → 0 right
    const double ll[4][3] = {{-2, -4, -3}, {-1, -1.5}, {-1, -1}, {-6, -2}};
    for (int i = 0; i < 4; i++) {
        for (int j = 0; j < r->items[i].n_choices; j++) r->items[i].ll[j] = ll[i][j];
        task_item_decide(&s->items[i], s->kind, &r->items[i]);
    }
    const int pred[4] = {0, 0, 0, 1}, pred_norm[4] = {1, 0, 0, 0};
    const double margin[4] = {-2, 0.5, 0, -4};
    for (int i = 0; i < 4; i++) {
        QP_CHECK_INT_EQ(r->items[i].pred, pred[i]);
        QP_CHECK_INT_EQ(r->items[i].pred_norm, pred_norm[i]);
        QP_CHECK_NEAR(r->items[i].margin, margin[i], 1e-15);
    }
    task_summarize(r);
    QP_CHECK_INT_EQ(r->sum.n, 4);
    QP_CHECK_NEAR(r->sum.acc, 0.25, 1e-15);
    QP_CHECK_NEAR(r->sum.acc_norm, 0.75, 1e-15);
    QP_CHECK_NEAR(r->sum.acc_stderr, sqrt(0.25 * 0.75 / 3), 1e-15); // lm-eval: sqrt(p(1-p)/(n-1))
    QP_CHECK_NEAR(r->sum.acc_norm_stderr, 0.25, 1e-15);

    // A variant that gets items 0 and 2 right as well: 2 flips wrong→right, none the other way;
    // McNemar p = 2 * P(X <= 0 | n = 2) = 0.5.
    struct task_result *v;
    QP_CHECK(task_result_create(s, &v) == 0);
    const double lv[4][3] = {{-5, -1, -3}, {-1, -1.5}, {-2, -1}, {-6, -2}};
    for (int i = 0; i < 4; i++) {
        for (int j = 0; j < v->items[i].n_choices; j++) v->items[i].ll[j] = lv[i][j];
        task_item_decide(&s->items[i], s->kind, &v->items[i]);
    }
    task_summarize(v);
    QP_CHECK_NEAR(v->sum.acc, 0.75, 1e-15);
    struct met_paired p;
    QP_CHECK_MSG(hx_tasks_compare(r, v, 0, NULL, &p, err) == 0, "%s", err);
    QP_CHECK_INT_EQ(p.flips_wc, 2);
    QP_CHECK_INT_EQ(p.flips_cw, 0);
    QP_CHECK_INT_EQ(p.both_correct, 1);
    QP_CHECK_INT_EQ(p.both_wrong, 1);
    QP_CHECK_NEAR(p.mcnemar_p, 0.5, 1e-15);
    QP_CHECK_NEAR(p.delta, 0.5, 1e-15);
    QP_CHECK(p.ci_lo >= 0 && p.ci_hi <= 1 && p.ci_lo <= 0.5 && p.ci_hi >= 0.5);
    // Against itself: no flip, p = 1, interval [0, 0].
    QP_CHECK(hx_tasks_compare(r, r, 0, NULL, &p, err) == 0);
    QP_CHECK(p.flips_wc == 0 && p.flips_cw == 0 && p.mcnemar_p == 1 && p.ci_lo == 0 && p.ci_hi == 0);
    task_result_destroy(v);
    task_result_destroy(r);
    task_suite_destroy(s);
}

QP_TEST(cloze_summary_should_match_a_hand_computed_example) {
    struct task_suite *s;
    char err[QP_ERRLEN];
    QP_CHECK(task_suite_create("hand", TASK_CLOZE, &s) == 0);
    for (int i = 0; i < 3; i++) QP_CHECK(task_suite_add_cloze(s, "i", "ctx", " w", 0, err) == 0);
    struct task_result *r;
    QP_CHECK(task_result_create(s, &r) == 0);
    const double ll[3] = {-1, -2, -3};
    const int ntok[3] = {1, 2, 3}, greedy[3] = {1, 0, 1};
    for (int i = 0; i < 3; i++) {
        r->items[i].ll[0] = ll[i];
        r->items[i].n_tokens[0] = ntok[i];
        r->items[i].greedy[0] = (unsigned char)greedy[i];
        task_item_decide(&s->items[i], s->kind, &r->items[i]);
    }
    task_summarize(r);
    QP_CHECK_NEAR(r->sum.acc, 2.0 / 3, 1e-15);
    QP_CHECK_NEAR(r->sum.ll_mean, -2, 1e-15);
    QP_CHECK_NEAR(r->sum.target_ppl, exp(2.0), 1e-15);
    QP_CHECK_NEAR(r->sum.token_ppl, exp(1.0), 1e-15); // 6 nats over 6 tokens
    QP_CHECK_INT_EQ(r->sum.target_tokens, 6);
    task_result_destroy(r);
    task_suite_destroy(s);
}

QP_TEST(suites_should_refuse_malformed_items) {
    struct task_suite *s;
    char err[QP_ERRLEN];
    QP_CHECK(task_suite_create("x", TASK_MC, &s) == 0);
    const char *two[] = {" a", " b"}, *empty[] = {" a", ""}, *withnull[] = {" a", NULL};
    QP_CHECK(task_suite_add_mc(s, "i", "c", two, 2, 2, 0, err) == QP_EINVAL);
    QP_CHECK(strstr(err, "gold 2") != NULL);
    QP_CHECK(task_suite_add_mc(s, "i", "c", two, 2, -1, 0, err) == QP_EINVAL);
    QP_CHECK(task_suite_add_mc(s, "i", "c", two, 1, 0, 0, err) == QP_EINVAL);
    QP_CHECK(task_suite_add_mc(s, "i", "c", empty, 2, 0, 0, err) == QP_EINVAL);
    QP_CHECK(task_suite_add_mc(s, "i", "c", withnull, 2, 0, 0, err) == QP_EINVAL);
    QP_CHECK(task_suite_add_mc(s, "i", NULL, two, 2, 0, 0, err) == QP_EINVAL);
    QP_CHECK(task_suite_add_cloze(s, "i", "c", " t", 0, err) == QP_EINVAL); // wrong kind
    QP_CHECK_INT_EQ(s->n_items, 0);
    QP_CHECK(task_suite_add_mc(s, "i", "", two, 2, 1, 7, err) == 0);
    QP_CHECK_INT_EQ(s->n_items, 1);
    QP_CHECK_INT_EQ(s->items[0].line, 7);
    task_suite_truncate(s, 0);
    QP_CHECK_INT_EQ(s->n_items, 0);
    task_suite_destroy(s);
}

QP_TEST(choice_chars_should_count_code_points_without_the_delimiter) {
    QP_CHECK_INT_EQ(task_choice_chars(" yes"), 3);      // lm-eval: len("yes")
    QP_CHECK_INT_EQ(task_choice_chars("yes"), 3);
    QP_CHECK_INT_EQ(task_choice_chars("  two"), 4);     // only one delimiter is dropped
    QP_CHECK_INT_EQ(task_choice_chars(" h\xc3\xa9llo"), 5);
    QP_CHECK_INT_EQ(task_choice_chars(" \xe2\x80\x9cok\xe2\x80\x9d"), 4);
    QP_CHECK_INT_EQ(task_choice_chars(" \xff\xfe"), 2); // invalid bytes count one each
    QP_CHECK_INT_EQ(task_choice_chars(" "), 1);         // never 0
    QP_CHECK(qp_utf8_valid("h\xc3\xa9", 3));
    QP_CHECK(!qp_utf8_valid("\xc3", 1));
    QP_CHECK(!qp_utf8_valid("\xc0\xaf", 2));          // overlong
    QP_CHECK(!qp_utf8_valid("\xed\xa0\x80", 3));      // surrogate
}

// ---------------------------------------------------------------------------------------------
// Built-in suites

QP_TEST(builtin_suites_should_be_deterministic_and_held_out_at_the_end) {
    size_t len;
    char *text = qpt_read_file(qpt_fixture(TINY), &len);
    QP_CHECK(text != NULL);
    size_t begin, end;
    char err[QP_ERRLEN];
    QP_CHECK_MSG(task_builtin_range(text, len, &begin, &end, err) == 0, "%s", err);
    QP_CHECK(end == len);
    QP_CHECK_MSG(begin > len * 3 / 4, "items start at byte %zu of %zu", begin, len); // a tail only
    for (int k = 0; k < task_builtin_count(); k++) {
        struct task_suite *a, *b;
        QP_CHECK(task_builtin_create(task_builtin_name(k), text, len, &a, err) == 0);
        QP_CHECK(task_builtin_create(task_builtin_name(k), text, len, &b, err) == 0);
        QP_CHECK_MSG(a->n_items >= 480 && a->n_items <= TASK_BUILTIN_ITEMS, "%d items", a->n_items);
        QP_CHECK_INT_EQ(a->n_items, b->n_items);
        QP_CHECK(a->src_begin >= begin && a->src_end == len);
        for (int i = 0; i < a->n_items; i++) {
            const struct task_item *x = &a->items[i], *y = &b->items[i];
            QP_CHECK_STR_EQ(x->id, y->id);
            QP_CHECK_STR_EQ(x->context, y->context);
            QP_CHECK_INT_EQ(x->gold, y->gold);
            for (int j = 0; j < x->n_choices; j++) QP_CHECK_STR_EQ(x->choices[j], y->choices[j]);
            // every context and choice is text of the held-out range
            const char *at = memmem(text + a->src_begin, len - a->src_begin, x->context, strlen(x->context));
            QP_CHECK_MSG(at != NULL, "item %s: context not in the range", x->id);
            for (int j = 0; j < x->n_choices; j++)
                QP_CHECK(memmem(text + a->src_begin, len - a->src_begin, x->choices[j] + 1, strlen(x->choices[j]) - 1));
            if (i > 0) QP_CHECK(strcmp(a->items[i - 1].id, x->id) != 0);
        }
        task_suite_destroy(a);
        task_suite_destroy(b);
    }
    free(text);
}

QP_TEST(builtin_cloze_items_should_stop_before_a_sentences_last_word) {
    size_t len;
    char *text = qpt_read_file(qpt_fixture(TINY), &len);
    struct task_suite *s = builtin("tinystories-cloze", 0);
    QP_CHECK(s->kind == TASK_CLOZE);
    for (int i = 0; i < s->n_items; i++) {
        const struct task_item *it = &s->items[i];
        const char *t = task_item_target(it);
        QP_CHECK(t[0] == ' ' && t[1]);
        for (const char *c = t + 1; *c; c++) QP_CHECK_MSG((*c | 32) >= 'a' && (*c | 32) <= 'z', "target '%s'", t);
        size_t cl = strlen(it->context), at = 0;
        QP_CHECK(sscanf(it->id, "tinystories-cloze@%zu", &at) == 1 && at < len);
        // in the text: context, the space, the word, then sentence punctuation
        QP_CHECK(memcmp(text + at - 1 - cl, it->context, cl) == 0);
        QP_CHECK(memcmp(text + at - 1, t, strlen(t)) == 0);
        char after = text[at + strlen(t) - 1];
        QP_CHECK_MSG(after == '.' || after == '!' || after == '?', "item %s ends with '%c'", it->id, after);
    }
    task_suite_destroy(s);
    free(text);
}

QP_TEST(builtin_nextsent_items_should_offer_the_true_next_sentence) {
    size_t len;
    char *text = qpt_read_file(qpt_fixture(TINY), &len);
    struct task_suite *s = builtin("tinystories-nextsent", 0);
    QP_CHECK(s->kind == TASK_MC);
    int gold_count[4] = {0};
    for (int i = 0; i < s->n_items; i++) {
        const struct task_item *it = &s->items[i];
        QP_CHECK_INT_EQ(it->n_choices, 4);
        gold_count[it->gold]++;
        size_t at;
        QP_CHECK(sscanf(it->id, "tinystories-nextsent@%zu", &at) == 1 && at < len);
        const char *g = it->choices[it->gold];
        QP_CHECK(memcmp(text + at, g + 1, strlen(g) - 1) == 0); // the true sentence sits at `at`
        size_t cl = strlen(it->context);
        const char *ce = memmem(text, len, it->context, cl);
        QP_CHECK(ce != NULL);
        for (const char *q = ce + cl; q < text + at; q++) QP_CHECK(*q == ' ' || *q == '\n'); // adjacent
        for (int j = 0; j < 4; j++) {
            QP_CHECK(it->choices[j][0] == ' ');
            for (int k = 0; k < j; k++) QP_CHECK(strcmp(it->choices[j], it->choices[k]) != 0);
            double ratio = (double)strlen(it->choices[j]) / (double)strlen(g);
            QP_CHECK_MSG(ratio > 0.88 && ratio < 1.13, "item %s: lengths %zu vs %zu", it->id, strlen(it->choices[j]),
                         strlen(g));
        }
    }
    for (int j = 0; j < 4; j++) QP_CHECK_MSG(gold_count[j] > s->n_items / 8, "gold %d only %d times", j, gold_count[j]);
    task_suite_destroy(s);
    free(text);
}

QP_TEST(builtin_suites_should_cope_with_short_and_odd_texts) {
    struct task_suite *s;
    char err[QP_ERRLEN];
    QP_CHECK(task_builtin_create("tinystories-cloze", "", 0, &s, err) == QP_EFORMAT);
    QP_CHECK(task_builtin_create("tinystories-nextsent", "Hi. There.", 10, &s, err) == QP_EFORMAT);
    QP_CHECK(task_builtin_create("nope", "x", 1, &s, err) == QP_ENOENT);
    QP_CHECK(task_builtin_create("tinystories-cloze", "a\0b", 3, &s, err) == QP_EFORMAT);
    // "Mr." ends no sentence, so this text holds no finished sentence at all
    QP_CHECK(task_builtin_create("tinystories-cloze", "Tom met Mr. Bo at home", 22, &s, err) == QP_EFORMAT);
    const char *odd = "\n\n   \n\"Hi!\" said the cat.\n\n?!. ... \n\nShe ran home";
    QP_CHECK_MSG(task_builtin_create("tinystories-cloze", odd, strlen(odd), &s, err) == 0, "%s", err);
    QP_CHECK_INT_EQ(s->n_items, 1);
    QP_CHECK_STR_EQ(task_item_target(&s->items[0]), " cat");
    QP_CHECK_STR_EQ(s->items[0].context, "\"Hi!\" said the");
    task_suite_destroy(s);
    // the context starts at the previous paragraph
    const char *two = "A dog ran.\n\nThe cat sat.\n";
    QP_CHECK(task_builtin_create("tinystories-cloze", two, strlen(two), &s, err) == 0);
    QP_CHECK_INT_EQ(s->n_items, 2);
    QP_CHECK_STR_EQ(s->items[0].context, "A dog");
    QP_CHECK_STR_EQ(task_item_target(&s->items[0]), " ran");
    QP_CHECK_STR_EQ(s->items[1].context, "A dog ran.\n\nThe cat");
    QP_CHECK_STR_EQ(task_item_target(&s->items[1]), " sat");
    QP_CHECK(s->src_begin == 0 && s->src_end == strlen(two));
    task_suite_destroy(s);
}

// ---------------------------------------------------------------------------------------------
// Scoring

QP_TEST(scores_should_equal_a_direct_forward_pass_over_context_and_continuation) {
    struct fixture f;
    fixture_open(&f);
    struct task_suite *s;
    char err[QP_ERRLEN];
    QP_CHECK(task_suite_create("direct", TASK_MC, &s) == 0);
    const char *c0[] = {" outside in the park.", " xq zzv kpt.", " the the the."};
    const char *c1[] = {" yes", " no"};
    const char *c2[] = {"\nTom ran.", " Tom ran.", "Tom ran."};
    QP_CHECK(task_suite_add_mc(s, "0", "Once upon a time, there was a little girl named Lily. She loved to play", c0, 3, 0, 0, err) == 0);
    QP_CHECK(task_suite_add_mc(s, "1", "Is the sky blue?\nAnswer: ", c1, 2, 0, 0, err) == 0); // trailing space moves
    QP_CHECK(task_suite_add_mc(s, "2", "", c2, 3, 1, 0, err) == 0);                           // empty context
    struct task_result *r = score(&f, s, 0, 2);
    for (int i = 0; i < s->n_items; i++) {
        const struct task_item *it = &s->items[i];
        QP_CHECK(!r->items[i].skipped && r->items[i].cut == 0);
        for (int j = 0; j < it->n_choices; j++) {
            int nt, g;
            double want = direct_ll(f.e, &f.tt, it->context, it->choices[j], 0, &nt, &g);
            QP_CHECK_NEAR(r->items[i].ll[j], want, LL_TOL);
            QP_CHECK_INT_EQ(r->items[i].n_tokens[j], nt);
            QP_CHECK_INT_EQ(r->items[i].greedy[j], g);
        }
    }
    QP_CHECK_INT_EQ(r->items[0].pred, 0); // the fluent ending wins
    task_result_destroy(r);
    task_suite_destroy(s);

    // Real items: the first three of each built-in suite.
    struct task_suite *ns = builtin("tinystories-nextsent", 3), *cz = builtin("tinystories-cloze", 3);
    struct task_suite *both[2] = {ns, cz};
    for (int k = 0; k < 2; k++) {
        r = score(&f, both[k], 0, 1);
        for (int i = 0; i < both[k]->n_items; i++)
            for (int j = 0; j < both[k]->items[i].n_choices; j++) {
                int nt, g;
                double want = direct_ll(f.e, &f.tt, both[k]->items[i].context, both[k]->items[i].choices[j], 0, &nt, &g);
                QP_CHECK_NEAR(r->items[i].ll[j], want, LL_TOL);
                QP_CHECK_INT_EQ(r->items[i].greedy[j], g);
            }
        task_result_destroy(r);
        task_suite_destroy(both[k]);
    }
    fixture_close(&f);
}

// A character tokenizer that merges "ab" into one token, to see the boundary rule at work.
static int merge_encode(void *ctx, const char *text, int add_bos, int *out, int cap) {
    (void)ctx;
    int n = 0;
    if (add_bos) {
        if (n < cap) out[n] = 1;
        n++;
    }
    for (const char *c = text; *c; c++) {
        int t = c[0] == 'a' && c[1] == 'b' ? 300 : 3 + (unsigned char)*c % 250;
        if (t == 300) c++;
        if (n < cap) out[n] = t;
        n++;
    }
    return n;
}

QP_TEST(continuation_tokens_should_be_the_tail_after_the_common_prefix) {
    struct fixture f;
    fixture_open(&f);
    f.tt.encode = merge_encode;
    struct task_suite *s;
    char err[QP_ERRLEN];
    QP_CHECK(task_suite_create("merge", TASK_MC, &s) == 0);
    // "xa" + "b": enc(ctx) = [BOS x a], enc(whole) = [BOS x ab] → common prefix 2, continuation
    // [ab] (1 token, and it replaces the context's last token); "xa" + "c" → [c].
    const char *c0[] = {"b", "c", "bab"};
    QP_CHECK(task_suite_add_mc(s, "0", "xa", c0, 3, 0, 0, err) == 0);
    // trailing whitespace of the context moves to the continuation: [' ', y]
    const char *c1[] = {"y", "zz"};
    QP_CHECK(task_suite_add_mc(s, "1", "x ", c1, 2, 0, 0, err) == 0);
    struct task_result *r = score(&f, s, 0, 1);
    QP_CHECK_INT_EQ(r->items[0].n_tokens[0], 1);
    QP_CHECK_INT_EQ(r->items[0].n_tokens[1], 1);
    QP_CHECK_INT_EQ(r->items[0].n_tokens[2], 2); // [ab] [ab]
    QP_CHECK_INT_EQ(r->items[0].ctx_tokens, 2);  // BOS x: shared by every choice
    QP_CHECK_INT_EQ(r->items[1].n_tokens[0], 2);
    QP_CHECK_INT_EQ(r->items[1].n_tokens[1], 3);
    QP_CHECK_INT_EQ(r->items[1].ctx_tokens, 2);
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < s->items[i].n_choices; j++) {
            int nt, g;
            double want = direct_ll(f.e, &f.tt, s->items[i].context, s->items[i].choices[j], 0, &nt, &g);
            QP_CHECK_NEAR(r->items[i].ll[j], want, LL_TOL);
            QP_CHECK_INT_EQ(r->items[i].n_tokens[j], nt);
        }
    task_result_destroy(r);
    task_suite_destroy(s);
    fixture_close(&f);
}

QP_TEST(scores_should_not_depend_on_the_thread_count) {
    struct fixture f;
    fixture_open(&f);
    struct task_suite *s = builtin("tinystories-nextsent", 24);
    struct task_result *r1 = score(&f, s, 0, 1), *r2 = score(&f, s, 0, 2), *r3 = score(&f, s, 0, 3);
    size_t nch = (size_t)s->n_items * 4;
    QP_CHECK(memcmp(r1->ll_store, r2->ll_store, nch * sizeof(double)) == 0);
    QP_CHECK(memcmp(r1->ll_store, r3->ll_store, nch * sizeof(double)) == 0);
    QP_CHECK(memcmp(r1->greedy_store, r3->greedy_store, nch) == 0);
    QP_CHECK(r1->sum.acc == r3->sum.acc && r1->sum.acc_norm == r2->sum.acc_norm);
    // fewer items than threads: one state with threads inside the forward pass
    task_suite_truncate(s, 2);
    struct task_result *r4 = score(&f, s, 0, 3);
    QP_CHECK(memcmp(r1->ll_store, r4->ll_store, 8 * sizeof(double)) == 0);
    task_result_destroy(r1), task_result_destroy(r2), task_result_destroy(r3), task_result_destroy(r4);
    task_suite_destroy(s);
    fixture_close(&f);
}

QP_TEST(long_contexts_should_be_cut_after_bos_and_overlong_items_skipped) {
    struct fixture f;
    fixture_open(&f);
    struct task_suite *s = builtin("tinystories-nextsent", 40);
    const int window = 40;
    struct task_result *r = score(&f, s, window, 2);
    int cut = 0, skipped = 0;
    for (int i = 0; i < s->n_items; i++) {
        const struct task_item_result *ir = &r->items[i];
        if (ir->skipped) {
            skipped++;
            continue;
        }
        QP_CHECK(ir->ctx_tokens >= 1 && ir->ctx_tokens <= window);
        if (!ir->cut) continue;
        cut++;
        for (int j = 0; j < 4; j++) { // the same sequence, cut by hand, in one pass
            int nt, g;
            double want = direct_ll(f.e, &f.tt, s->items[i].context, s->items[i].choices[j], ir->cut, &nt, &g);
            QP_CHECK_NEAR(ir->ll[j], want, LL_TOL);
        }
    }
    QP_CHECK_MSG(cut > 10, "%d items cut", cut);
    QP_CHECK_MSG(skipped > 0, "no item long enough to skip at window %d", window);
    QP_CHECK_INT_EQ(r->sum.n + r->sum.n_skipped, s->n_items);
    QP_CHECK_INT_EQ(r->sum.n_skipped, skipped);
    task_result_destroy(r);
    task_suite_destroy(s);
    fixture_close(&f);
}

QP_TEST(stories260k_should_score_clearly_above_chance_on_builtin_suites) {
    struct fixture f;
    fixture_open(&f);
    struct task_suite *ns = builtin("tinystories-nextsent", 0), *cz = builtin("tinystories-cloze", 0);
    struct task_result *rn = score(&f, ns, 0, 2), *rc = score(&f, cz, 0, 2);
    fprintf(stderr, "nextsent acc %.4f ± %.4f acc_norm %.4f (n %d); cloze acc %.4f ± %.4f (n %d)\n", rn->sum.acc,
            rn->sum.acc_stderr, rn->sum.acc_norm, rn->sum.n, rc->sum.acc, rc->sum.acc_stderr, rc->sum.n);
    QP_CHECK_MSG(rn->sum.acc > NEXTSENT_ACC_FLOOR, "nextsent acc %.4f", rn->sum.acc);
    QP_CHECK_MSG(rn->sum.acc_norm > NEXTSENT_ACC_NORM_FLOOR, "nextsent acc_norm %.4f", rn->sum.acc_norm);
    QP_CHECK_MSG(rc->sum.acc > CLOZE_ACC_FLOOR, "cloze acc %.4f", rc->sum.acc);
    QP_CHECK(rn->sum.n_skipped == 0 && rc->sum.n_skipped == 0);
    task_result_destroy(rn), task_result_destroy(rc);
    task_suite_destroy(ns), task_suite_destroy(cz);
    fixture_close(&f);
}

// ---------------------------------------------------------------------------------------------
// Readers

static int read_jsonl(const char *text, int lenient, struct task_suite **s, char *err) {
    struct hx_task_read_opts o = {.lenient = lenient};
    return hx_task_read_jsonl(scratch("t.jsonl", text), &o, s, err);
}

QP_TEST(jsonl_reader_should_read_both_kinds) {
    struct task_suite *s;
    char err[QP_ERRLEN];
    QP_CHECK_MSG(read_jsonl("{\"context\": \"Q\", \"choices\": [\" a\", \" b\"], \"gold\": 1, \"id\": \"x7\"}\n\n"
                            "{\"context\": \"R\", \"choices\": [\" c\", \" d\", \" e\"], \"gold\": 0}\r\n",
                            0, &s, err) == 0,
                 "%s", err);
    QP_CHECK(s->kind == TASK_MC && s->n_items == 2);
    QP_CHECK_STR_EQ(s->items[0].id, "x7");
    QP_CHECK_STR_EQ(s->items[1].id, "3"); // its line
    QP_CHECK_INT_EQ(s->items[1].line, 3);
    QP_CHECK_STR_EQ(s->items[1].choices[2], " e");
    QP_CHECK_STR_EQ(s->name, "t");
    task_suite_destroy(s);
    QP_CHECK(read_jsonl("{\"context\": \"Lily fed\", \"target\": \" Tom\", \"id\": 5}\n", 0, &s, err) == 0);
    QP_CHECK(s->kind == TASK_CLOZE && s->n_items == 1);
    QP_CHECK_STR_EQ(task_item_target(&s->items[0]), " Tom");
    QP_CHECK_STR_EQ(s->items[0].id, "5");
    task_suite_destroy(s);
}

QP_TEST(jsonl_reader_should_name_file_and_line_of_every_kind_of_garbage) {
    static const struct {
        const char *line, *want;
    } bad[] = {
        {"{\"context\": \"c\", \"choices\": [\" a\", \" b\"], \"gold\": 2}", "\"gold\" is 2"},
        {"{\"context\": \"c\", \"choices\": [\" a\", \" b\"], \"gold\": -1}", "\"gold\" is -1"},
        {"{\"context\": \"c\", \"choices\": [\" a\", \" b\"], \"gold\": 1.5}", "not an integer"},
        {"{\"context\": \"c\", \"choices\": [\" a\", \" b\"], \"gold\": \"1\"}", "not an integer"},
        {"{\"context\": \"c\", \"choices\": [\" a\", \" b\"], \"gold\": 1e300}", "not an integer"},
        {"{\"context\": \"c\", \"choices\": [\" a\", \" b\"]}", "missing \"gold\""},
        {"{\"context\": \"c\", \"choices\": [], \"gold\": 0}", "0 entries"},
        {"{\"context\": \"c\", \"choices\": [\" a\"], \"gold\": 0}", "1 entries"},
        {"{\"context\": \"c\", \"choices\": [\" a\", \"\"], \"gold\": 0}", "choice 1 is empty"},
        {"{\"context\": \"c\", \"choices\": [\" a\", 3], \"gold\": 0}", "choice 1 is not a string"},
        {"{\"context\": \"c\", \"choices\": [\" a\", null], \"gold\": 0}", "choice 1 is not a string"},
        {"{\"context\": \"c\", \"choices\": \" a\", \"gold\": 0}", "not an array"},
        {"{\"context\": 3, \"choices\": [\" a\", \" b\"], \"gold\": 0}", "\"context\" is not a string"},
        {"{\"choices\": [\" a\", \" b\"], \"gold\": 0}", "missing \"context\""},
        {"{\"context\": \"c\"}", "neither"},
        {"{\"context\": \"c\", \"target\": \" t\", \"choices\": [\" a\", \" b\"], \"gold\": 0}", "both"},
        {"{\"context\": \"c\", \"choices\": [\" a\", \" b\"], \"gold\": 0, \"id\": [1]}", "\"id\""},
        {"{\"context\": \"c\", \"choices\": [\" a\", \" b\"], \"gold\": 0", "invalid JSON"},
        {"{\"context\": \"c\", \"choices\": [\" a\", \" b\"], \"gold\": 0} {}", "after the JSON value"},
        {"[1, 2]", "not a JSON object"},
        {"\"just a string\"", "not a JSON object"},
        {"{\"context\": \"caf\xe9\", \"choices\": [\" a\", \" b\"], \"gold\": 0}", "UTF-8"},
        {"{\"context\": \"c\", \"target\": \" t\"}", "a cloze item in a multiple choice file"},
        {"nul", "invalid JSON"},
    };
    const char *good = "{\"context\": \"c\", \"choices\": [\" a\", \" b\"], \"gold\": 0}\n";
    for (size_t k = 0; k < QP_ARRAY_LEN(bad); k++) {
        char text[1024];
        snprintf(text, sizeof text, "%s%s%s\n%s", good, good, bad[k].line, good);
        struct task_suite *s = NULL;
        char err[QP_ERRLEN];
        QP_CHECK_MSG(read_jsonl(text, 0, &s, err) == QP_EFORMAT, "case %zu accepted", k);
        QP_CHECK(s == NULL);
        QP_CHECK_MSG(strstr(err, "t.jsonl:3: ") != NULL && strstr(err, bad[k].want) != NULL, "case %zu: %s", k, err);
        QP_CHECK_MSG(read_jsonl(text, 1, &s, err) == 0, "case %zu lenient: %s", k, err);
        QP_CHECK_INT_EQ(s->n_items, 3);
        QP_CHECK_INT_EQ(s->n_skipped, 1);
        task_suite_destroy(s);
    }
    // A NUL byte inside a line, deep nesting, and a file of nothing usable.
    char nul[] = "{\"context\": \"c\", \"choices\": [\" a\", \" b\"], \"gold\": 0}\n{\"context\": \"x\0y\"}\n";
    const char *p = qpt_tmpdir();
    char path[4200];
    snprintf(path, sizeof path, "%s/nul.jsonl", p);
    FILE *fp = fopen(path, "wb");
    QP_CHECK(fp && fwrite(nul, 1, sizeof nul - 1, fp) == sizeof nul - 1);
    fclose(fp);
    struct task_suite *s;
    char err[QP_ERRLEN];
    struct hx_task_read_opts o = {0};
    QP_CHECK(hx_task_read_jsonl(path, &o, &s, err) == QP_EFORMAT);
    QP_CHECK_MSG(strstr(err, "nul.jsonl:2: contains a NUL byte") != NULL, "%s", err);
    char deep[6000];
    memset(deep, '[', 5000);
    deep[5000] = 0;
    QP_CHECK(read_jsonl(deep, 0, &s, err) == QP_EFORMAT);
    QP_CHECK(read_jsonl("\n  \n", 0, &s, err) == QP_EFORMAT);
    QP_CHECK(strstr(err, "no items") != NULL);
    QP_CHECK(read_jsonl("garbage\n", 1, &s, err) == QP_EFORMAT);
    QP_CHECK(strstr(err, "malformed") != NULL);
    QP_CHECK(hx_task_read_jsonl("/nonexistent/x.jsonl", &o, &s, err) == QP_EIO);
    QP_CHECK(hx_task_read_jsonl(qpt_tmpdir(), &o, &s, err) == QP_EIO);
}

QP_TEST(dataset_readers_should_use_lm_eval_prompt_formats) {
    struct hx_task_read_opts o = {.limit = 3};
    struct task_suite *s;
    char err[QP_ERRLEN];
    QP_CHECK_MSG(hx_task_open("lambada", getenv("QP_FIXTURES"), &o, &s, err) == 0, "%s", err);
    QP_CHECK(s->kind == TASK_CLOZE && s->n_items == 3);
    QP_CHECK_STR_EQ(task_item_target(&s->items[0]), " signs");
    QP_CHECK(strncmp(s->items[0].context, "In my palm is a clear stone", 27) == 0);
    QP_CHECK(strcmp(s->items[0].context + strlen(s->items[0].context) - 18, "I don't care about") == 0);
    task_suite_destroy(s);

    QP_CHECK_MSG(hx_task_open("hellaswag", getenv("QP_FIXTURES"), &o, &s, err) == 0, "%s", err);
    QP_CHECK_STR_EQ(s->items[0].context, "Roof shingle removal: A man is sitting on a roof. he");
    QP_CHECK_INT_EQ(s->items[0].gold, 3);
    QP_CHECK_STR_EQ(s->items[0].choices[3], " starts pulling up roofing on a roof.");
    QP_CHECK_INT_EQ(s->items[1].line, 7);
    task_suite_destroy(s);

    QP_CHECK_MSG(hx_task_open("piqa", getenv("QP_FIXTURES"), &o, &s, err) == 0, "%s", err);
    QP_CHECK_STR_EQ(s->items[0].context, "Question: How do I ready a guinea pig cage for it's new occupants?\nAnswer:");
    QP_CHECK_INT_EQ(s->items[0].gold, 0);
    QP_CHECK_INT_EQ(s->items[1].gold, 1);
    QP_CHECK_STR_EQ(s->items[1].choices[0], " replace drawer with bobby pin ");
    task_suite_destroy(s);

    QP_CHECK_MSG(hx_task_open("arc-easy", getenv("QP_FIXTURES"), &o, &s, err) == 0, "%s", err);
    QP_CHECK_STR_EQ(s->items[0].id, "Mercury_417466");
    QP_CHECK_STR_EQ(s->items[0].context,
                    "Question: Which statement best explains why photosynthesis is the foundation of most food webs?\nAnswer:");
    QP_CHECK_STR_EQ(s->items[0].choices[0], " Sunlight is the source of energy for nearly all ecosystems.");
    QP_CHECK_INT_EQ(s->items[1].gold, 1);
    task_suite_destroy(s);

    QP_CHECK_MSG(hx_task_open("boolq", getenv("QP_FIXTURES"), &o, &s, err) == 0, "%s", err);
    QP_CHECK(strncmp(s->items[0].context, "Ethanol fuel -- All biomass", 27) == 0);
    const char *tail = "\nQuestion: does ethanol take more energy make that produces?\nAnswer:";
    QP_CHECK(strcmp(s->items[0].context + strlen(s->items[0].context) - strlen(tail), tail) == 0);
    QP_CHECK_STR_EQ(s->items[0].choices[0], " no");
    QP_CHECK_STR_EQ(s->items[0].choices[1], " yes");
    QP_CHECK_INT_EQ(s->items[0].gold, 0); // "label": "false"
    task_suite_destroy(s);

    // whole files: every record readable
    o.limit = 0;
    static const struct {
        const char *name;
        int n;
    } full[] = {{"lambada", 5153}, {"hellaswag", 10042}, {"piqa", 1838}, {"arc-easy", 2376}, {"boolq", 3270}};
    for (size_t k = 0; k < QP_ARRAY_LEN(full); k++) {
        QP_CHECK_MSG(hx_task_open(full[k].name, getenv("QP_FIXTURES"), &o, &s, err) == 0, "%s", err);
        QP_CHECK_MSG(s->n_items == full[k].n && s->n_skipped == 0, "%s: %d items", full[k].name, s->n_items);
        task_suite_destroy(s);
    }
}

QP_TEST(hellaswag_and_piqa_readers_should_report_broken_files) {
    struct task_suite *s;
    char err[QP_ERRLEN];
    struct hx_task_read_opts o = {0}, len = {.lenient = 1};
    const char *task = "Act: ctx\n1\na\nb\nc\nd\n";
    char text[512];
    snprintf(text, sizeof text, "%sAct: ctx\n7\na\nb\nc\nd\n%s", task, task);
    const char *hs = scratch("hs.txt", text);
    QP_CHECK(hx_task_read_hellaswag(hs, &o, &s, err) == QP_EFORMAT);
    QP_CHECK_MSG(strstr(err, "hs.txt:7: the label line (8)") != NULL, "%s", err);
    QP_CHECK(hx_task_read_hellaswag(hs, &len, &s, err) == 0);
    QP_CHECK(s->n_items == 2 && s->n_skipped == 1);
    task_suite_destroy(s);
    snprintf(text, sizeof text, "%sAct: ctx\n1\na\n", task);
    QP_CHECK(hx_task_read_hellaswag(scratch("hs2.txt", text), &o, &s, err) == QP_EFORMAT);
    QP_CHECK_MSG(strstr(err, "hs2.txt:7: the last task has 3 of 6 lines") != NULL, "%s", err);
    snprintf(text, sizeof text, "%sAct: ctx\n1\na\n\nc\nd\n", task);
    QP_CHECK(hx_task_read_hellaswag(scratch("hs3.txt", text), &o, &s, err) == QP_EFORMAT);
    QP_CHECK_MSG(strstr(err, "ending 1 (line 10) is empty") != NULL, "%s", err);

    char pj[4096]; // scratch() names rotate through 4 buffers
    snprintf(pj, sizeof pj, "%s", scratch("p.jsonl", "{\"goal\": \"g\", \"sol1\": \"a\", \"sol2\": \"b\"}\n"
                                                  "{\"goal\": \"g\", \"sol1\": \"a\", \"sol2\": \"b\"}\n"));
    QP_CHECK(hx_task_read_piqa(pj, scratch("l1.lst", "1\n"), &o, &s, err) == QP_EFORMAT);
    QP_CHECK_MSG(strstr(err, "p.jsonl:2: no label") != NULL, "%s", err);
    QP_CHECK(hx_task_read_piqa(pj, scratch("l2.lst", "1\n2\n"), &o, &s, err) == QP_EFORMAT);
    QP_CHECK_MSG(strstr(err, "p.jsonl:2: its label ('") != NULL && strstr(err, "line 2) is not 0 or 1"), "%s", err);
    QP_CHECK(hx_task_read_piqa(pj, scratch("l3.lst", "1\n0\n1\n"), &o, &s, err) == QP_EFORMAT);
    QP_CHECK_MSG(strstr(err, "has 3 labels") != NULL, "%s", err);
    QP_CHECK(hx_task_read_piqa(pj, scratch("l4.lst", "1\n0\n"), &o, &s, err) == 0);
    QP_CHECK(s->items[0].gold == 1 && s->items[1].gold == 0);
    task_suite_destroy(s);

    QP_CHECK(hx_task_read_arc(scratch("a.jsonl", "{\"question\": {\"stem\": \"s\", \"choices\": [{\"text\": \"x\", "
                                                 "\"label\": \"A\"}, {\"text\": \"y\", \"label\": \"B\"}]}, "
                                                 "\"answerKey\": \"C\"}\n"),
                              &o, &s, err) == QP_EFORMAT);
    QP_CHECK_MSG(strstr(err, "a.jsonl:1: answerKey 'C' is not among the choice labels") != NULL, "%s", err);
    QP_CHECK(hx_task_read_boolq(scratch("b.jsonl", "{\"passage\": \"p\", \"question\": \"q\", \"label\": \"maybe\"}\n"),
                                &o, &s, err) == QP_EFORMAT);
    QP_CHECK_MSG(strstr(err, "b.jsonl:1: \"label\" is not true/false or 0/1") != NULL, "%s", err);
    QP_CHECK(hx_task_read_lambada(scratch("l.jsonl", "{\"text\": \"oneword\"}\n"), &o, &s, err) == QP_EFORMAT);
    QP_CHECK_MSG(strstr(err, "l.jsonl:1: \"text\" has no space") != NULL, "%s", err);
}

// ---------------------------------------------------------------------------------------------
// qprobe tasks

static char *run_tasks(const char *args, int *rc) {
    char cmd[8192], *out = NULL;
    snprintf(cmd, sizeof cmd, "'%s' tasks -m '%s' -z '%s' --fixtures '%s' -t 2 %s 2>/dev/null", qpt_qprobe(),
             qpt_fixture(STORIES), qpt_fixture(TOK512), getenv("QP_FIXTURES") ? getenv("QP_FIXTURES") : "../shared/fixtures",
             args);
    *rc = qpt_run(cmd, &out);
    return out;
}

QP_TEST(real_datasets_should_score_end_to_end) {
    qpt_fixture("data/boolq/val.jsonl");
    static const char *const names[] = {"lambada", "hellaswag", "piqa", "arc-easy", "boolq"};
    for (size_t k = 0; k < QP_ARRAY_LEN(names); k++) {
        char args[256];
        snprintf(args, sizeof args, "--suite %s --limit 20 --json", names[k]);
        int rc;
        char *out = run_tasks(args, &rc);
        QP_CHECK_MSG(rc == 0, "%s: exit %d", names[k], rc);
        QP_CHECK_MSG(qpt_json_num(out, "n") == 20, "%s: %s", names[k], out);
        QP_CHECK(qpt_json_num(out, "scored") == 20);
        double acc = qpt_json_num(out, "acc");
        QP_CHECK(acc >= 0 && acc <= 1);
        free(out);
    }
}

QP_TEST(malformed_jsonl_should_exit_2_naming_file_and_line_unless_lenient) {
    const char *good = "{\"context\": \"Lily saw a cat. She\", \"choices\": [\" smiled.\", \" sky blue.\"], \"gold\": 0}\n";
    char text[1024];
    snprintf(text, sizeof text, "%s%s{\"context\": \"x\", \"choices\": [\" a\", \" b\"], \"gold\": 9}\n%s", good, good,
             good);
    const char *path = scratch("bad.jsonl", text);
    char cmd[8192], *err = NULL;
    snprintf(cmd, sizeof cmd, "'%s' tasks -m '%s' -z '%s' --suite '%s' 2>&1 >/dev/null", qpt_qprobe(),
             qpt_fixture(STORIES), qpt_fixture(TOK512), path);
    int rc = qpt_run(cmd, &err);
    QP_CHECK_MSG(rc == 2, "exit %d: %s", rc, err);
    QP_CHECK_MSG(strstr(err, "bad.jsonl:3: \"gold\" is 9") != NULL, "%s", err);
    QP_CHECK_MSG(strchr(err, '\n') == err + strlen(err) - 1, "not one line: %s", err);
    free(err);
    char args[4400];
    snprintf(args, sizeof args, "--suite '%s' --lenient --json", path);
    char *out = run_tasks(args, &rc);
    QP_CHECK_MSG(rc == 0, "exit %d", rc);
    QP_CHECK(qpt_json_num(out, "n") == 3);
    QP_CHECK(qpt_json_num(out, "skipped_records") == 1);
    free(out);
}

QP_TEST(tasks_should_refuse_bad_usage_with_one_line) {
    static const char *const args[] = {
        "",                                    // no suite
        "--suite no-such-suite",               // neither name nor file
        "--suite tinystories-cloze --limit 0", // bad limit
        "--suite tinystories-cloze -q q9_9",   // bad spec
        "--suite tinystories-cloze --bogus",   // unknown option
    };
    for (size_t k = 0; k < QP_ARRAY_LEN(args); k++) {
        char cmd[8192], *err = NULL;
        snprintf(cmd, sizeof cmd, "'%s' tasks -m '%s' -z '%s' %s 2>&1 >/dev/null", qpt_qprobe(), qpt_fixture(STORIES),
                 qpt_fixture(TOK512), args[k]);
        int rc = qpt_run(cmd, &err);
        QP_CHECK_MSG(rc == 2, "'%s': exit %d", args[k], rc);
        QP_CHECK_MSG(err && strncmp(err, "qprobe tasks: ", 14) == 0 && strchr(err, '\n') == err + strlen(err) - 1,
                     "'%s': %s", args[k], err);
        free(err);
    }
}

QP_TEST(variant_equal_to_reference_should_flip_nothing) {
    int rc;
    char *out = run_tasks("--suite tinystories-nextsent --limit 60 -q f32 --json", &rc);
    QP_CHECK_MSG(rc == 0, "exit %d", rc);
    QP_CHECK(qpt_json_num(out, "flips_correct_to_wrong") == 0);
    QP_CHECK(qpt_json_num(out, "flips_wrong_to_correct") == 0);
    QP_CHECK(qpt_json_num(out, "mcnemar_p") == 1);
    QP_CHECK(qpt_json_num(out, "ci_lo") == 0 && qpt_json_num(out, "ci_hi") == 0);
    free(out);
}

QP_TEST(quantized_variant_should_report_flips_and_intervals) {
    int rc;
    char *out = run_tasks("--suite tinystories-nextsent --limit 100 -q q4_0 --json", &rc);
    QP_CHECK_MSG(rc == 0, "exit %d", rc);
    double bc = qpt_json_num(out, "both_correct"), bw = qpt_json_num(out, "both_wrong");
    double cw = qpt_json_num(out, "flips_correct_to_wrong"), wc = qpt_json_num(out, "flips_wrong_to_correct");
    QP_CHECK(bc + bw + cw + wc == 100);
    QP_CHECK_MSG(cw + wc > 0, "q4_0 changed no answer: %s", out); // 4-bit weights on a 260K model do
    double p = qpt_json_num(out, "mcnemar_p"), lo = qpt_json_num(out, "ci_lo"), hi = qpt_json_num(out, "ci_hi");
    double d = qpt_json_num(out, "delta_acc");
    QP_CHECK(p > 0 && p <= 1);
    QP_CHECK(lo <= d && d <= hi);
    QP_CHECK_NEAR(d, (wc - cw) / 100, 1e-12);
    free(out);
}
