// tasks_run.c — task suites over a model's tokenizer and engine (tasks_run.h).
#include "hx_tasks_run.h"

#include <stdlib.h>
#include <string.h>

#include "hx_progress.h"
#include "kn_engine.h"
#include "qp.h"
#include "hx_tokenizer.h"
#include "task_gen.h"

// ---------------------------------------------------------------------------------------------
// Tokenizer callback

static int hx_tasks_encode(void *ctx, const char *text, int add_bos, int *out, int cap) {
    const struct hx_tok *t = ctx;
    int *ids;
    size_t n;
    unsigned flags = HX_TOK_SPACE_PREFIX | (add_bos ? HX_TOK_ADD_BOS : 0);
    int rc = hx_tok_encode(t, text, strlen(text), flags, &ids, &n);
    if (rc) return rc;
    if (n > (size_t)INT32_MAX) {
        free(ids);
        return QP_ERANGE;
    }
    if (out && cap > 0) memcpy(out, ids, QP_MIN(n, (size_t)cap) * sizeof *out);
    free(ids);
    return (int)n;
}

static int hx_tasks_decode(void *ctx, const int *ids, int n, char **text) {
    size_t len;
    return hx_tok_decode(ctx, ids, (size_t)n, 0, text, &len);
}

void hx_tasks_tok(const struct hx_tok *t, struct task_tok *out) {
    out->encode = hx_tasks_encode;
    out->decode = hx_tasks_decode;
    out->stop_ids[0] = hx_tok_eos(t);
    out->stop_ids[1] = hx_tok_bos(t);
    out->ctx = (void *)t;
}

// ---------------------------------------------------------------------------------------------
// Runs

// Scores s by log-likelihood, or by generation when greedy.
static int hx_tasks_score(const struct kn_engine *e, const struct hx_tok *tok, const struct task_suite *s, int greedy,
                          const struct hx_tasks_opts *o, struct task_result **out, char *err) {
    struct task_tok tt;
    hx_tasks_tok(tok, &tt);
    struct task_score_opts so = {.window = o->window, .n_threads = o->n_threads};
    struct hx_progress prog;
    if (o->label) {
        hx_progress_init(&prog, o->label);
        so.progress = hx_progress_cb;
        so.progress_ctx = &prog;
    }
    int rc = greedy ? task_gen_score(e, s, &tt, &so, out, err) : task_score(e, s, &tt, &so, out, err);
    if (o->label) hx_progress_end(&prog);
    return rc;
}

int hx_tasks_run(const struct kn_engine *e, const struct hx_tok *tok, const struct task_suite *s,
                 const struct hx_tasks_opts *o, struct task_result **out, char *err) {
    return hx_tasks_score(e, tok, s, s->generate, o, out, err);
}

int hx_tasks_run_greedy(const struct kn_engine *e, const struct hx_tok *tok, const struct task_suite *s,
                        const struct hx_tasks_opts *o, struct task_result **out, char *err) {
    return hx_tasks_score(e, tok, s, 1, o, out, err);
}

int hx_tasks_compare(const struct task_result *ref, const struct task_result *var, int norm,
                     const struct met_paired_opts *po, struct met_paired *out, char *err) {
    memset(out, 0, sizeof *out);
    if (ref->n_items != var->n_items || ref->kind != var->kind)
        return qp_fail(err, QP_EINVAL, "the two results are not of the same suite");
    unsigned char *a = malloc((size_t)QP_MAX(ref->n_items, 1)), *b = malloc((size_t)QP_MAX(ref->n_items, 1));
    if (!a || !b) {
        free(a), free(b);
        return qp_fail(err, QP_ENOMEM, "out of memory");
    }
    int64_t n = 0;
    for (int i = 0; i < ref->n_items; i++) {
        const struct task_item_result *x = &ref->items[i], *y = &var->items[i];
        if (x->skipped || y->skipped) continue;
        a[n] = (unsigned char)(norm ? x->correct_norm : x->correct);
        b[n++] = (unsigned char)(norm ? y->correct_norm : y->correct);
    }
    int rc = met_paired_compare(a, b, n, po, out, err);
    free(a), free(b);
    return rc;
}
