// task_gen.c — scoring by greedy generation (task_gen.h). Depends on tasks/ and kernels/.
#include "task_gen.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kn_engine.h"
#include "qp.h"

#define TG_MAX_BATCH 256 // tokens per kn_forward call of the context

// ---------------------------------------------------------------------------------------------
// Text

static int tg_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

size_t task_gen_cut(const char *text, char *const *until, int n_until) {
    size_t cut = strlen(text);
    for (int j = 0; j < n_until; j++) {
        const char *at = strstr(text, until[j]);
        if (at && (size_t)(at - text) < cut) cut = (size_t)(at - text);
    }
    return cut;
}

// s trimmed of ASCII whitespace: its start and length.
static const char *tg_trim(const char *s, size_t *n) {
    while (*s && tg_space(*s)) s++;
    size_t m = strlen(s);
    while (m > 0 && tg_space(s[m - 1])) m--;
    *n = m;
    return s;
}

int task_gen_exact(const char *text, const char *answer) {
    size_t a, b;
    const char *x = tg_trim(text, &a), *y = tg_trim(answer, &b);
    return a == b && memcmp(x, y, a) == 0;
}

int task_gen_contains(const char *text, const char *answer) {
    size_t b;
    const char *y = tg_trim(answer, &b);
    if (b == 0) return 0;
    size_t tl = strlen(text);
    for (size_t i = 0; i + b <= tl; i++)
        if (memcmp(text + i, y, b) == 0) return 1;
    return 0;
}

int task_gen_word_count(const char *s) {
    int w = 0;
    while (*s) {
        while (*s && tg_space(*s)) s++;
        if (!*s) break;
        w++;
        while (*s && !tg_space(*s)) s++;
    }
    return w;
}

int task_gen_words_done(const char *text, int w) {
    const char *s = text;
    for (int k = 0; k < w; k++) {
        while (*s && tg_space(*s)) s++;
        if (!*s) return 0;
        while (*s && !tg_space(*s)) s++;
    }
    return *s && tg_space(*s);
}

// The next word of *s (after whitespace): its start and length; *s moves past it. 0 at the end.
static int tg_next_word(const char **s, const char **w, size_t *n) {
    const char *p = *s;
    while (*p && tg_space(*p)) p++;
    if (!*p) return 0;
    *w = p;
    while (*p && !tg_space(*p)) p++;
    *n = (size_t)(p - *w);
    *s = p;
    return 1;
}

static size_t tg_strip_punct(const char *w, size_t n) {
    while (n > 0 && strchr(".,;:!?\"')]", w[n - 1])) n--;
    return n;
}

int task_gen_words_match(const char *text, const char *target) {
    int W = task_gen_word_count(target);
    const char *a = text, *b = target;
    for (int k = 0; k < W; k++) {
        const char *wa, *wb;
        size_t na, nb;
        if (!tg_next_word(&a, &wa, &na) || !tg_next_word(&b, &wb, &nb)) return 0;
        if (k == W - 1) na = tg_strip_punct(wa, na), nb = tg_strip_punct(wb, nb);
        if (na != nb || memcmp(wa, wb, na) != 0) return 0;
    }
    return W > 0;
}

// ---------------------------------------------------------------------------------------------
// One item

struct tg_worker {
    struct kn_state *st;
    float *logits; // (vocab)
    int max_ctx;
    int64_t tokens;
};

// Encodes text (BOS first when add_bos) into a malloc'd array; the count, or a negative code.
static int tg_encode(const struct task_tok *tok, const char *text, int add_bos, int **out) {
    int cap = 64;
    for (int attempt = 0; attempt < 3; attempt++) {
        int *b = malloc((size_t)cap * sizeof *b);
        if (!b) return QP_ENOMEM;
        int n = tok->encode(tok->ctx, text, add_bos, b, cap);
        if (n >= 0 && n <= cap) {
            *out = b;
            return n;
        }
        free(b);
        if (n < 0) return n;
        cap = n;
    }
    return QP_EINVAL;
}

static int tg_argmax(const float *row, int n) {
    int best = 0;
    for (int j = 1; j < n; j++)
        if (row[j] > row[best]) best = j;
    return best;
}

// 1 when the generation is over: a stop string (TASK_GEN) or the target's words (cloze).
static int tg_done(const struct task_item *it, int gen_kind, int W, const char *text) {
    if (gen_kind) return task_gen_cut(text, it->until, it->n_until) < strlen(text);
    return task_gen_words_done(text, W);
}

// Generates after ctx[0..n) (BOS at 0) at most max tokens; the text into *text.
static int tg_generate(const struct kn_engine *e, const struct task_tok *tok, const struct task_item *it,
                       int gen_kind, int W, const int *ctx, int n, int D, int max, struct tg_worker *w,
                       int *n_gen, char **text) {
    int vocab = kn_engine_config(e)->vocab_size, *g = malloc((size_t)(max + 1) * sizeof *g), rc = 0;
    if (!g) return QP_ENOMEM;
    kn_state_reset(w->st);
    kn_forward(w->st, ctx, 1, n == 1 ? w->logits : NULL, 0, NULL);
    for (int a = 1 + D; a < n; a += TG_MAX_BATCH) { // the context after the cut
        int m = QP_MIN(TG_MAX_BATCH, n - a);
        kn_forward(w->st, ctx + a, m, a + m == n ? w->logits : NULL, m - 1, NULL);
    }
    w->tokens += n - D;
    *text = NULL;
    int k = 0;
    while (k < max && !rc) {
        int t = tg_argmax(w->logits, vocab);
        if (t == tok->stop_ids[0] || t == tok->stop_ids[1]) break;
        g[k++] = t;
        free(*text);
        *text = NULL;
        if ((rc = tok->decode(tok->ctx, g, k, text)) < 0) break;
        if (tg_done(it, gen_kind, W, *text)) break;
        if (k < max) {
            kn_forward(w->st, &t, 1, w->logits, 0, NULL);
            w->tokens++;
        }
    }
    if (!rc && !*text) rc = tok->decode(tok->ctx, g, 0, text);
    *n_gen = k;
    free(g);
    return rc < 0 ? rc : 0;
}

// Scores item it into r (slot i). 0 or a QP_E* code with err.
static int tg_item(const struct kn_engine *e, const struct task_tok *tok, const struct task_item *it, int gen_kind,
                   int window, struct tg_worker *w, struct task_result *r, int i, char *err) {
    int *ctx = NULL, *tt = NULL, vocab = kn_engine_config(e)->vocab_size;
    int n = tg_encode(tok, it->context, 1, &ctx), max, W = 0, rc = 0;
    if (n < 0) return qp_fail(err, n, "item '%s': cannot tokenize: %s", it->id, qp_strerror(n));
    if (gen_kind) {
        max = it->max_tokens > 0 ? it->max_tokens : TASK_GEN_MAX_TOKENS;
    } else {
        int nt = tg_encode(tok, task_item_target(it), 0, &tt);
        free(tt);
        if (nt < 0) rc = qp_fail(err, nt, "item '%s': cannot tokenize: %s", it->id, qp_strerror(nt));
        max = 2 * QP_MAX(nt, 1) + 4;
        W = task_gen_word_count(task_item_target(it));
    }
    for (int k = 0; k < n && !rc; k++)
        if (ctx[k] < 0 || ctx[k] >= vocab)
            rc = qp_fail(err, QP_EINVAL, "item '%s': token %d is outside the model's vocabulary of %d", it->id, ctx[k], vocab);
    struct task_item_result *ir = &r->items[i];
    int D = QP_MAX(0, n + max - window); // cut after BOS so that context and generation fit
    // Skipped: the limit alone does not fit, or the cut would leave no context token after BOS.
    if (!rc && (n < 1 || max + 1 > window || (D > 0 && D > n - 2))) ir->skipped = 1;
    else if (!rc) {
        ir->cut = D;
        ir->ctx_tokens = n - D;
        char *text = NULL;
        int ng = 0;
        if ((rc = tg_generate(e, tok, it, gen_kind, W, ctx, n, D, max, w, &ng, &text)))
            rc = qp_fail(err, rc, "item '%s': cannot decode: %s", it->id, qp_strerror(rc));
        if (!rc) {
            if (gen_kind) text[task_gen_cut(text, it->until, it->n_until)] = 0;
            const char *answer = task_item_target(it);
            ir->correct = gen_kind ? task_gen_exact(text, answer) : task_gen_words_match(text, answer);
            ir->correct_norm = task_gen_contains(text, answer);
            ir->greedy[0] = (unsigned char)ir->correct;
            ir->n_tokens[0] = ng;
            r->gen_text[i] = text;
        } else {
            free(text);
        }
    }
    free(ctx);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// The suite

// What the items need.
struct tg_loop {
    const struct kn_engine *e;
    const struct task_tok *tok;
    const struct task_suite *s;
    int gen_kind, window;
    struct tg_worker *w;
    struct task_result *r;
};

static int tg_loop_item(void *ctx, int i, int t, int64_t *tokens, char *err) {
    struct tg_loop *lp = ctx;
    int64_t before = lp->w[t].tokens;
    int rc = tg_item(lp->e, lp->tok, &lp->s->items[i], lp->gen_kind, lp->window, &lp->w[t], lp->r, i, err);
    *tokens = lp->w[t].tokens - before;
    return rc;
}

static void tg_workers_free(struct tg_worker *w, int n) {
    for (int t = 0; w && t < n; t++) {
        kn_state_destroy(w[t].st);
        qp_free(w[t].logits);
    }
    free(w);
}

int task_gen_score(const struct kn_engine *e, const struct task_suite *s, const struct task_tok *tok,
                   const struct task_score_opts *o, struct task_result **out, char *err) {
    *out = NULL;
    const struct kn_config *cfg = kn_engine_config(e);
    int window = o->window > 0 ? o->window : cfg->seq_len;
    if (!tok->decode) return qp_fail(err, QP_EINVAL, "generation needs a tokenizer that decodes");
    if (window < 2 || window > (1 << 20)) return qp_fail(err, QP_EINVAL, "window %d out of range (2..%d)", window, 1 << 20);
    if (s->kind == TASK_MC) return qp_fail(err, QP_EINVAL, "suite '%s' is multiple choice: it has no generative form", s->name);
    struct task_result *r;
    if (task_result_create(s, &r)) return qp_fail(err, QP_ENOMEM, "out of memory");
    r->kind = TASK_GEN;
    r->window = window;
    int threads = QP_MAX(1, o->n_threads), n = s->n_items, gen_kind = s->kind == TASK_GEN;
    r->n_threads = threads;
    int outer = n >= threads ? threads : 1, inner = outer == 1 ? threads : 1, rc = 0;
    struct tg_worker *w = calloc((size_t)outer, sizeof *w);
    r->gen_text = calloc((size_t)QP_MAX(n, 1), sizeof *r->gen_text);
    if (!w || !r->gen_text) rc = qp_fail(err, QP_ENOMEM, "out of memory");
    for (int t = 0; t < outer && !rc; t++) {
        rc = kn_state_create(e, window, QP_MIN(window, TG_MAX_BATCH), inner, &w[t].st, err);
        if (!rc && !(w[t].logits = qp_alloc_array((size_t)cfg->vocab_size, sizeof(float))))
            rc = qp_fail(err, QP_ENOMEM, "out of memory for logits");
    }
    if (!rc) {
        struct tg_loop lp = {e, tok, s, gen_kind, window, w, r};
        double t0 = qp_now();
        rc = task_for_items(n, outer, tg_loop_item, &lp, o, err);
        r->seconds = qp_now() - t0;
        for (int t = 0; t < outer; t++) r->tokens_processed += w[t].tokens;
        if (!rc && o->progress) o->progress(o->progress_ctx, n, n, r->tokens_processed);
    }
    tg_workers_free(w, outer);
    if (rc) {
        task_result_destroy(r);
        return rc;
    }
    task_summarize(r);
    *out = r;
    return 0;
}
