// task_score.c — log-likelihood scoring of task suites over the engine (task_score.h).
// Depends on tasks/task.h and kernels/.
#include "task_score.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kn_engine.h"
#include "qp.h"

// ---------------------------------------------------------------------------------------------
// Types

#define TSC_MAX_BATCH 256 // tokens per kn_forward call (bounds the logits buffer)

// One thread's engine state and buffers.
struct tsc_worker {
    struct kn_state *st;
    float *logits;   // (max_batch, vocab) rows of the current call
    float *first;    // (vocab) logits after the shared context: predicts its next token
    int max_batch;
    int64_t tokens;  // tokens run by this worker
};

// A growable token buffer.
struct tsc_toks {
    int *t;
    int n, cap;
};

// ---------------------------------------------------------------------------------------------
// Helpers

double task_acc_stderr(double p, int n) {
    if (n < 2) return 0.0;
    double v = p * (1.0 - p) / (double)(n - 1);
    return sqrt(v > 0 ? v : 0);
}

// Encodes text into b (growing it as the callback asks). 0 or a QP_E* code with err.
static int tsc_encode(const struct task_tok *tok, const char *text, struct tsc_toks *b, char *err) {
    for (int attempt = 0; attempt < 3; attempt++) {
        int n = tok->encode(tok->ctx, text, 1, b->t, b->cap);
        if (n < 0) return qp_fail(err, n, "cannot tokenize: %s", qp_strerror(n));
        if (n <= b->cap) {
            b->n = n;
            return 0;
        }
        int *nt = realloc(b->t, (size_t)n * sizeof *nt);
        if (!nt) return qp_fail(err, QP_ENOMEM, "out of memory");
        b->t = nt;
        b->cap = n;
    }
    return qp_fail(err, QP_EINVAL, "the tokenizer's count keeps changing");
}

// log p(target) from one row of logits, and whether target is the row's argmax (first index
// of the maximum, as torch.argmax).
static double tsc_token_ll(const struct kn_ops *ops, const float *row, int vocab, int target, int *greedy) {
    float mx;
    double lse = ops->logsumexp(row, vocab, &mx);
    int g = row[target] == mx;
    for (int j = 0; g && j < target; j++) g = row[j] < mx;
    *greedy = g;
    return (double)row[target] - lse;
}

// Runs toks[0..n) from the state's current position in pieces of max_batch, without logits.
static void tsc_run(struct tsc_worker *w, const int *toks, int n) {
    for (int a = 0; a < n; a += w->max_batch) {
        int m = QP_MIN(w->max_batch, n - a);
        kn_forward(w->st, toks + a, m, NULL, 0, NULL);
    }
    w->tokens += n;
}

// ---------------------------------------------------------------------------------------------
// Results

int task_result_create(const struct task_suite *s, struct task_result **out) {
    *out = NULL;
    struct task_result *r = calloc(1, sizeof *r);
    if (!r) return QP_ENOMEM;
    size_t total = 0;
    for (int i = 0; i < s->n_items; i++) total += (size_t)s->items[i].n_choices;
    r->kind = s->kind;
    r->n_items = s->n_items;
    r->items = calloc((size_t)QP_MAX(s->n_items, 1), sizeof *r->items);
    r->ll_store = calloc(total ? total : 1, sizeof *r->ll_store);
    r->ntok_store = calloc(total ? total : 1, sizeof *r->ntok_store);
    r->greedy_store = calloc(total ? total : 1, 1);
    if (!r->items || !r->ll_store || !r->ntok_store || !r->greedy_store) {
        task_result_destroy(r);
        return QP_ENOMEM;
    }
    size_t off = 0;
    for (int i = 0; i < s->n_items; i++) {
        struct task_item_result *ir = &r->items[i];
        ir->n_choices = s->items[i].n_choices;
        ir->ll = r->ll_store + off;
        ir->n_tokens = r->ntok_store + off;
        ir->greedy = r->greedy_store + off;
        off += (size_t)ir->n_choices;
    }
    *out = r;
    return 0;
}

void task_result_destroy(struct task_result *r) {
    if (!r) return;
    free(r->items);
    free(r->ll_store);
    free(r->ntok_store);
    free(r->greedy_store);
    for (int i = 0; r->gen_text && i < r->n_items; i++) free(r->gen_text[i]);
    free(r->gen_text);
    free(r);
}

void task_item_decide(const struct task_item *it, enum task_kind kind, struct task_item_result *r) {
    if (kind == TASK_CLOZE) {
        r->pred = r->pred_norm = 0;
        r->correct = r->correct_norm = r->greedy[0] != 0;
        r->margin = 0;
        return;
    }
    int pred = 0, pred_norm = 0;
    double best_norm = r->ll[0] / task_choice_chars(it->choices[0]);
    for (int j = 1; j < r->n_choices; j++) {
        if (r->ll[j] > r->ll[pred]) pred = j; // strict: the first maximum wins, as np.argmax
        double v = r->ll[j] / task_choice_chars(it->choices[j]);
        if (v > best_norm) best_norm = v, pred_norm = j;
    }
    double other = -INFINITY;
    for (int j = 0; j < r->n_choices; j++)
        if (j != it->gold && r->ll[j] > other) other = r->ll[j];
    r->pred = pred;
    r->pred_norm = pred_norm;
    r->correct = pred == it->gold;
    r->correct_norm = pred_norm == it->gold;
    r->margin = r->ll[it->gold] - other;
}

void task_summarize(struct task_result *r) {
    struct task_summary s = {0};
    double sum_ll = 0;
    int64_t c = 0, cn = 0;
    for (int i = 0; i < r->n_items; i++) {
        const struct task_item_result *ir = &r->items[i];
        if (ir->skipped) {
            s.n_skipped++;
            continue;
        }
        s.n++;
        c += ir->correct;
        cn += ir->correct_norm;
        if (r->kind == TASK_CLOZE) {
            sum_ll += ir->ll[0];
            s.target_tokens += ir->n_tokens[0];
        }
    }
    if (s.n > 0) {
        s.acc = (double)c / s.n;
        s.acc_norm = (double)cn / s.n;
        if (r->kind == TASK_CLOZE) {
            s.ll_mean = sum_ll / s.n;
            s.target_ppl = exp(-s.ll_mean);
            s.token_ppl = s.target_tokens > 0 ? exp(-sum_ll / (double)s.target_tokens) : 0;
        }
    }
    s.acc_stderr = task_acc_stderr(s.acc, s.n);
    s.acc_norm_stderr = task_acc_stderr(s.acc_norm, s.n);
    r->sum = s;
}

// ---------------------------------------------------------------------------------------------
// One item

// One item's token sequences: each choice's whole sequence (context + choice) and where its
// continuation starts (p), the shortest such start (L) and the longest sequence (nmax).
struct tsc_seqs {
    int nc;
    struct tsc_toks *whole; // (nc)
    int *p;                 // (nc) first continuation position of each choice
    int L, nmax;
};

static void tsc_seqs_free(struct tsc_seqs *q) {
    for (int j = 0; q->whole && j < q->nc; j++) free(q->whole[j].t);
    free(q->whole);
    free(q->p);
}

// Encodes the context (its trailing whitespace belonging to the continuation, as lm-eval has
// it) and context + choice for every choice, and checks the tokens. 0, or a QP_E* code with err.
static int tsc_seqs_encode(const struct task_tok *tok, const struct task_item *it, int vocab, struct tsc_seqs *q,
                           char *err) {
    int nc = q->nc = it->n_choices, rc = 0;
    size_t clen = strlen(it->context), ctrim = clen, maxc = 0;
    while (ctrim > 0 && strchr(" \t\n\r\v\f", it->context[ctrim - 1])) ctrim--;
    for (int j = 0; j < nc; j++) maxc = QP_MAX(maxc, strlen(it->choices[j]));
    struct tsc_toks ctx = {0};
    char *buf = malloc(clen + maxc + 1);
    q->whole = calloc((size_t)nc, sizeof *q->whole);
    q->p = calloc((size_t)nc, sizeof *q->p);
    if (!buf || !q->whole || !q->p) rc = qp_fail(err, QP_ENOMEM, "out of memory");
    if (!rc) {
        memcpy(buf, it->context, ctrim);
        buf[ctrim] = 0;
        rc = tsc_encode(tok, buf, &ctx, err);
        memcpy(buf, it->context, clen);
    }
    q->L = INT32_MAX, q->nmax = 0;
    for (int j = 0; j < nc && !rc; j++) {
        strcpy(buf + clen, it->choices[j]);
        if ((rc = tsc_encode(tok, buf, &q->whole[j], err))) break;
        int n = q->whole[j].n, k = 0;
        while (k < n && k < ctx.n && q->whole[j].t[k] == ctx.t[k]) k++;
        if (k > n - 1) k = n - 1; // at least one continuation token
        if (k < 1) k = 1;         // the first token (BOS) is never scored
        q->p[j] = k;
        q->L = QP_MIN(q->L, k);
        q->nmax = QP_MAX(q->nmax, n);
    }
    for (int j = 0; j < nc && !rc; j++) {
        if (q->whole[j].n < 2) rc = qp_fail(err, QP_EINVAL, "item '%s': choice %d has no token", it->id, j);
        for (int k = 0; k < q->whole[j].n && !rc; k++)
            if (q->whole[j].t[k] < 0 || q->whole[j].t[k] >= vocab)
                rc = qp_fail(err, QP_EINVAL, "item '%s': token %d is outside the model's vocabulary of %d", it->id,
                             q->whole[j].t[k], vocab);
    }
    free(ctx.t);
    free(buf);
    return rc;
}

// The shared context: BOS, then tokens D+1 .. L-1 (Lk positions); logits of its last row kept
// in w->first.
static void tsc_run_shared(struct tsc_worker *w, const int *shared, int L, int D, int Lk) {
    kn_state_reset(w->st);
    if (Lk == 1) {
        kn_forward(w->st, shared, 1, w->first, 0, NULL);
        w->tokens++;
        return;
    }
    kn_forward(w->st, shared, 1, NULL, 0, NULL);
    w->tokens++;
    int rest = Lk - 1; // tokens shared[D+1 .. L)
    tsc_run(w, shared + D + 1, rest - 1);
    kn_forward(w->st, shared + L - 1, 1, w->first, 0, NULL);
    w->tokens++;
}

// Choice j after the shared context: its log-likelihood, scored tokens and whether every one of
// them was the greedy pick.
static void tsc_score_choice(const struct kn_engine *e, struct tsc_worker *w, const struct tsc_seqs *q, int j,
                             int Lk, struct task_item_result *ir) {
    const struct kn_ops *ops = kn_engine_ops(e);
    int vocab = kn_engine_config(e)->vocab_size, L = q->L;
    const int *t = q->whole[j].t;
    int n = q->whole[j].n, pj = q->p[j], all_greedy = 1, g;
    double ll = 0;
    kn_state_rewind(w->st, Lk);
    if (pj == L) {
        ll += tsc_token_ll(ops, w->first, vocab, t[L], &g);
        all_greedy &= g;
    }
    // Feed t[L .. n-1): row of fed index q predicts t[q + 1]; rows with q >= pj - 1 score.
    for (int a = L; a < n - 1; a += w->max_batch) {
        int m = QP_MIN(w->max_batch, n - 1 - a);
        int fl = QP_MAX(0, pj - 1 - a);
        if (fl >= m) {
            kn_forward(w->st, t + a, m, NULL, 0, NULL);
        } else {
            kn_forward(w->st, t + a, m, w->logits, fl, NULL);
            for (int r = fl; r < m; r++) {
                ll += tsc_token_ll(ops, w->logits + (size_t)(r - fl) * vocab, vocab, t[a + r + 1], &g);
                all_greedy &= g;
            }
        }
        w->tokens += m;
    }
    ir->ll[j] = ll;
    ir->n_tokens[j] = n - pj;
    ir->greedy[j] = (unsigned char)all_greedy;
}

// Scores item it into ir with worker w. 0, or a QP_E* code with err.
static int tsc_item(const struct kn_engine *e, const struct task_tok *tok, const struct task_item *it,
                    int window, struct tsc_worker *w, struct task_item_result *ir, char *err) {
    struct tsc_seqs q = {0};
    int rc = tsc_seqs_encode(tok, it, kn_engine_config(e)->vocab_size, &q, err);
    if (!rc) {
        // Cut D tokens after BOS so that the longest sequence (nmax - 1 positions run) fits.
        int D = QP_MAX(0, q.nmax - 1 - window);
        ir->cut = D;
        if (D > q.L - 1) { // the continuation alone does not fit
            ir->skipped = 1;
        } else {
            int Lk = q.L - D;
            ir->ctx_tokens = Lk;
            tsc_run_shared(w, q.whole[0].t, q.L, D, Lk); // whole[0] equals every whole[j] on [0, L)
            for (int j = 0; j < q.nc; j++) tsc_score_choice(e, w, &q, j, Lk, ir);
        }
    }
    tsc_seqs_free(&q);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// The suite

int task_for_items(int n, int outer, task_item_fn fn, void *ctx, const struct task_score_opts *o, char *err) {
    int done = 0, stop = 0, bad = n, rc = 0; // bad: the first failing item (its message in err)
    int64_t toks_done = 0;
#pragma omp parallel for num_threads(outer) schedule(dynamic, 1) if (outer > 1)
    for (int i = 0; i < n; i++) {
        int t = omp_get_thread_num(), halt;
#pragma omp atomic read
        halt = stop;
        if (halt) continue;
        char ierr[QP_ERRLEN];
        int64_t toks = 0;
        int irc = fn(ctx, i, t, &toks, ierr);
#pragma omp critical(task_for_items)
        {
            if (irc && i < bad) {
                bad = i;
                rc = irc;
                if (err) snprintf(err, QP_ERRLEN, "%s", ierr);
#pragma omp atomic write
                stop = 1;
            }
            done++;
            toks_done += toks;
            if (o->progress && omp_get_thread_num() == 0) o->progress(o->progress_ctx, done, n, toks_done);
        }
    }
    return rc;
}

// What task_score's items need.
struct tsc_loop {
    const struct kn_engine *e;
    const struct task_tok *tok;
    const struct task_suite *s;
    int window;
    struct tsc_worker *w;
    struct task_result *r;
};

static int tsc_loop_item(void *ctx, int i, int t, int64_t *tokens, char *err) {
    struct tsc_loop *lp = ctx;
    int64_t before = lp->w[t].tokens;
    int rc = tsc_item(lp->e, lp->tok, &lp->s->items[i], lp->window, &lp->w[t], &lp->r->items[i], err);
    if (!rc && !lp->r->items[i].skipped) task_item_decide(&lp->s->items[i], lp->s->kind, &lp->r->items[i]);
    *tokens = lp->w[t].tokens - before;
    return rc;
}

int task_score(const struct kn_engine *e, const struct task_suite *s, const struct task_tok *tok,
               const struct task_score_opts *o, struct task_result **out, char *err) {
    *out = NULL;
    const struct kn_config *cfg = kn_engine_config(e);
    int window = o->window > 0 ? o->window : cfg->seq_len;
    if (s->generate || s->kind == TASK_GEN)
        return qp_fail(err, QP_EINVAL, "suite '%s' is scored by generation (task_gen_score)", s->name);
    if (window < 2 || window > (1 << 20)) return qp_fail(err, QP_EINVAL, "window %d out of range (2..%d)", window, 1 << 20);
    int threads = o->n_threads < 1 ? 1 : o->n_threads;
    struct task_result *r;
    if (task_result_create(s, &r)) return qp_fail(err, QP_ENOMEM, "out of memory");
    r->window = window;
    r->n_threads = threads;
    int n = s->n_items;
    int outer = n >= threads ? threads : 1; // item-parallel, or threads inside each forward
    int inner = outer == 1 ? threads : 1;
    int max_batch = QP_MIN(window, TSC_MAX_BATCH);
    struct tsc_worker *w = calloc((size_t)outer, sizeof *w);
    int rc = w ? 0 : qp_fail(err, QP_ENOMEM, "out of memory");
    for (int t = 0; t < outer && !rc; t++) {
        w[t].max_batch = max_batch;
        rc = kn_state_create(e, window, max_batch, inner, &w[t].st, err);
        if (!rc) {
            w[t].logits = qp_alloc_array((size_t)max_batch * cfg->vocab_size, sizeof(float));
            w[t].first = qp_alloc_array((size_t)cfg->vocab_size, sizeof(float));
            if (!w[t].logits || !w[t].first) rc = qp_fail(err, QP_ENOMEM, "out of memory for logits");
        }
    }
    if (!rc) {
        struct tsc_loop lp = {e, tok, s, window, w, r};
        double t0 = qp_now();
        rc = task_for_items(n, outer, tsc_loop_item, &lp, o, err);
        r->seconds = qp_now() - t0;
        for (int t = 0; t < outer; t++) r->tokens_processed += w[t].tokens;
        if (!rc && o->progress) o->progress(o->progress_ctx, n, n, r->tokens_processed);
    }
    if (w)
        for (int t = 0; t < outer; t++) {
            kn_state_destroy(w[t].st);
            qp_free(w[t].logits);
            qp_free(w[t].first);
        }
    free(w);
    if (rc) {
        task_result_destroy(r);
        return rc;
    }
    task_summarize(r);
    *out = r;
    return 0;
}
