// lockstep.c — reference and variant on the same windows (lockstep.h).
#include "hx_lockstep.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "qp.h"

// ---------------------------------------------------------------------------------------------
// Per-layer probes

enum hx_probe_mode { HX_CAPTURE, HX_COMPARE };

// Every site's rows of one chunk of the reference: site (l, s) at cap + off[l*S+s], (ctx, width).
struct hx_layer_probe {
    enum hx_probe_mode mode;
    float *cap;
    size_t *off;
    int *width;
    int ctx;
    int inject;          // COMPARE: feed the reference's block input into every block
    struct met_err *err; // COMPARE: accumulators, (n_layers + 1) × KN_SITE_COUNT
};

static void hx_layer_probe_fn(void *p, enum kn_site site, int layer, const float *x, int n, int width,
                              int pos0) {
    struct hx_layer_probe *lp = p;
    if (site == KN_SITE_LOGITS) return; // compared from the logit rows themselves
    int k = hx_layer_index(layer, site);
    QP_ASSERT(width == lp->width[k] && pos0 + n <= lp->ctx);
    float *ref = lp->cap + lp->off[k] + (size_t)pos0 * width;
    if (lp->mode == HX_CAPTURE) memcpy(ref, x, (size_t)n * width * sizeof(float));
    else met_err_add(&lp->err[k], ref, x, n, width);
}

static void hx_layer_inject_fn(void *p, int layer, float *x, int n, int width, int pos0) {
    struct hx_layer_probe *lp = p;
    int k = hx_layer_index(layer, KN_SITE_BLOCK_IN);
    memcpy(x, lp->cap + lp->off[k] + (size_t)pos0 * width, (size_t)n * width * sizeof(float));
}

// ---------------------------------------------------------------------------------------------
// Chunks

struct hx_lane { // one thread's pair of sequences
    struct kn_state *ref, *var;
    float *lref, *lvar; // logits of the scored rows, (ctx, vocab)
    int *buf;
};

// Runs chunk ci on both engines and fills its per-token values; with lp, also the layer errors.
static void hx_lockstep_chunk(struct hx_lane *ln, const struct kn_config *c, const int *tokens,
                              size_t n_tokens, const struct hx_lockstep_opts *o, int ci,
                              struct met_dist_tok *out, int *count,
                              struct hx_layer_probe *lp, struct met_err *logit_err) {
    struct hx_chunk ch = hx_chunk_of(o->protocol, n_tokens, o->ctx, ci);
    memcpy(ln->buf, tokens + ch.start, (size_t)ch.len * sizeof(int));
    if (o->protocol == HX_PROTO_LLAMACPP && o->bos >= 0) ln->buf[0] = o->bos;
    struct kn_probe probe = {hx_layer_probe_fn, lp, NULL};
    kn_state_reset(ln->ref);
    if (lp) lp->mode = HX_CAPTURE;
    kn_forward(ln->ref, ln->buf, ch.len, ln->lref, ch.first, lp ? &probe : NULL);
    kn_state_reset(ln->var);
    if (lp) {
        lp->mode = HX_COMPARE;
        lp->inject = 0;
    }
    kn_forward(ln->var, ln->buf, ch.len, ln->lvar, ch.first, lp ? &probe : NULL);
    int vocab = c->vocab_size, k = 0;
    for (int j = ch.first; j <= ch.last; j++, k++) {
        const float *r = ln->lref + (size_t)(j - ch.first) * vocab;
        const float *v = ln->lvar + (size_t)(j - ch.first) * vocab;
        met_dist_token(r, v, vocab, tokens[ch.start + j + 1], &out[k]);
    }
    *count = k;
    if (lp) {
        met_err_add(logit_err, ln->lref, ln->lvar, ch.len - ch.first, vocab);
        // Local error: the reference's block input into every block of the variant.
        struct met_err *acc = lp->err;
        lp->err = acc + (size_t)(c->n_layers + 1) * KN_SITE_COUNT;
        lp->inject = 1;
        struct kn_probe inj = {hx_layer_probe_fn, lp, hx_layer_inject_fn};
        kn_state_reset(ln->var);
        kn_forward(ln->var, ln->buf, ch.len, NULL, ch.len, &inj);
        lp->err = acc;
    }
}

static void hx_lane_free(struct hx_lane *ln) {
    kn_state_destroy(ln->ref);
    kn_state_destroy(ln->var);
    qp_free(ln->lref);
    qp_free(ln->lvar);
    free(ln->buf);
}

static int hx_lane_init(struct hx_lane *ln, const struct kn_engine *ref, const struct kn_engine *var,
                        int ctx, int inner, char *err) {
    int vocab = kn_engine_config(ref)->vocab_size;
    memset(ln, 0, sizeof *ln);
    int rc = kn_state_create(ref, ctx, ctx, inner, &ln->ref, err);
    if (!rc) rc = kn_state_create(var, ctx, ctx, inner, &ln->var, err);
    if (!rc) {
        ln->lref = qp_alloc_array((size_t)ctx * vocab, sizeof(float));
        ln->lvar = qp_alloc_array((size_t)ctx * vocab, sizeof(float));
        ln->buf = malloc((size_t)ctx * sizeof(int));
        if (!ln->lref || !ln->lvar || !ln->buf) rc = qp_fail(err, QP_ENOMEM, "out of memory for logits");
    }
    return rc;
}

// ---------------------------------------------------------------------------------------------
// The run

void hx_lockstep_result_free(struct hx_lockstep_result *res) {
    met_dist_destroy(res->dist);
    free(res->acc);
    qp_free(res->tokens);
    memset(res, 0, sizeof *res);
}

static int hx_configs_match(const struct kn_config *a, const struct kn_config *b) {
    return a->dim == b->dim && a->hidden_dim == b->hidden_dim && a->n_layers == b->n_layers &&
           a->n_heads == b->n_heads && a->n_kv_heads == b->n_kv_heads && a->vocab_size == b->vocab_size;
}

// The run's state: the chunks, their per-token slots, the lanes and the layer probe.
struct hx_ls {
    const struct kn_config *c;
    const int *tokens;
    size_t n_tokens;
    const struct hx_lockstep_opts *o;
    int n_chunks, layer_chunks, threads, outer, per_chunk;
    struct met_dist_tok *toks; // (n_chunks, per_chunk) slots
    int *counts;               // filled slots per chunk
    struct hx_lane *lanes, own, *big; // big: the lane of the layer-error chunks
    struct hx_layer_probe lp;
};

// The chunks to run, after the inputs are checked: shapes, context, token ids (hx_ppl_plan).
static int hx_ls_check(struct hx_ls *ls, const struct kn_engine *var, char *err) {
    const struct kn_config *c = ls->c;
    const struct hx_lockstep_opts *o = ls->o;
    if (!hx_configs_match(c, kn_engine_config(var)))
        return qp_fail(err, QP_EINVAL, "the variant's shape differs from the reference's");
    int rc = hx_ppl_plan(c, ls->tokens, ls->n_tokens, o->protocol, o->ctx, o->max_chunks, &ls->n_chunks,
                         &ls->per_chunk, err);
    if (rc) return rc;
    ls->layer_chunks = QP_MIN(QP_MAX(o->layer_chunks, 0), ls->n_chunks);
    ls->threads = QP_MAX(o->n_threads, 1);
    ls->outer = ls->n_chunks - ls->layer_chunks >= ls->threads ? ls->threads : 1;
    return 0;
}

// The layer probe of the layer-error chunks: the accumulators (accumulated and local error, in
// res) and room for one chunk of the reference's activations at every site.
static int hx_ls_probe_init(struct hx_ls *ls, struct hx_lockstep_result *res, char *err) {
    const struct kn_config *c = ls->c;
    struct hx_layer_probe *lp = &ls->lp;
    size_t n_err = (size_t)(c->n_layers + 1) * KN_SITE_COUNT, total = 0;
    res->acc = calloc(2 * n_err, sizeof *res->acc);
    lp->off = calloc(n_err, sizeof *lp->off);
    lp->width = calloc(n_err, sizeof *lp->width);
    if (!res->acc || !lp->off || !lp->width) return qp_fail(err, QP_ENOMEM, "out of memory");
    for (int l = 0; l < c->n_layers; l++)
        for (int s = 0; s < KN_SITE_LOGITS; s++) {
            int k = hx_layer_index(l, (enum kn_site)s);
            lp->width[k] = kn_site_used(c, (enum kn_site)s) ? kn_site_width(c, (enum kn_site)s) : 0;
            lp->off[k] = total;
            total += (size_t)ls->o->ctx * lp->width[k];
        }
    for (size_t i = 0; i < 2 * n_err; i++) met_err_init(&res->acc[i]);
    res->loc = res->acc + n_err;
    lp->ctx = ls->o->ctx;
    lp->err = res->acc;
    if (!(lp->cap = qp_alloc_array(total, sizeof(float))))
        return qp_fail(err, QP_ENOMEM, "out of memory for %zu MiB of reference activations",
                       total * sizeof(float) >> 20);
    return 0;
}

// Slots, lanes (one per outer thread) and, for the layer-error chunks, a lane with every thread
// inside the forward pass.
static int hx_ls_init(struct hx_ls *ls, const struct kn_engine *ref, const struct kn_engine *var,
                      struct hx_lockstep_result *res, char *err) {
    size_t n_slots = (size_t)ls->n_chunks * ls->per_chunk;
    ls->toks = qp_alloc_array(n_slots, sizeof *ls->toks);
    ls->counts = calloc((size_t)ls->n_chunks, sizeof(int));
    ls->lanes = calloc((size_t)ls->outer, sizeof *ls->lanes);
    int rc = 0;
    if (!ls->toks || !ls->counts || !ls->lanes) rc = qp_fail(err, QP_ENOMEM, "out of memory");
    if (!rc && met_dist_create((int64_t)n_slots, &res->dist)) rc = qp_fail(err, QP_ENOMEM, "out of memory");
    if (!rc && ls->layer_chunks > 0) rc = hx_ls_probe_init(ls, res, err);
    for (int t = 0; t < ls->outer && !rc; t++)
        rc = hx_lane_init(&ls->lanes[t], ref, var, ls->o->ctx, ls->outer == 1 ? ls->threads : 1, err);
    ls->big = ls->lanes;
    if (!rc && ls->layer_chunks > 0 && ls->outer > 1) {
        rc = hx_lane_init(&ls->own, ref, var, ls->o->ctx, ls->threads, err);
        ls->big = &ls->own;
    }
    return rc;
}

// Every chunk: the layer-error ones first, one at a time, then the rest over the outer threads.
// Returns the tokens processed.
static int64_t hx_ls_chunks(struct hx_ls *ls, struct hx_lockstep_result *res) {
    const struct hx_lockstep_opts *o = ls->o;
    int done = 0, L = ls->c->n_layers;
    int64_t processed = 0;
    struct met_err *logit_err = ls->layer_chunks ? &res->acc[hx_layer_index(L, KN_SITE_LOGITS)] : NULL;
    for (int ci = 0; ci < ls->layer_chunks && !(o->stop && *o->stop); ci++) {
        hx_lockstep_chunk(ls->big, ls->c, ls->tokens, ls->n_tokens, o, ci, ls->toks + (size_t)ci * ls->per_chunk,
                          &ls->counts[ci], &ls->lp, logit_err);
        done++;
        processed += hx_chunk_of(o->protocol, ls->n_tokens, o->ctx, ci).len;
        if (o->progress) o->progress(o->progress_ctx, done, ls->n_chunks, processed);
    }
#pragma omp parallel for num_threads(ls->outer) schedule(dynamic, 1) if (ls->outer > 1)
    for (int ci = ls->layer_chunks; ci < ls->n_chunks; ci++) {
        int t = omp_get_thread_num();
        if (o->stop && *o->stop) continue; // interrupted: skip what is left
        hx_lockstep_chunk(&ls->lanes[t], ls->c, ls->tokens, ls->n_tokens, o, ci,
                          ls->toks + (size_t)ci * ls->per_chunk, &ls->counts[ci], NULL, NULL);
#pragma omp critical(hx_lockstep_progress)
        {
            done++;
            processed += hx_chunk_of(o->protocol, ls->n_tokens, o->ctx, ci).len;
            if (o->progress && omp_get_thread_num() == 0) o->progress(o->progress_ctx, done, ls->n_chunks, processed);
        }
    }
    return processed;
}

int hx_lockstep_collect(struct met_dist_tok *toks, const int *counts, int n_chunks, int per_chunk, int vocab,
                        struct hx_lockstep_result *res, char *err) {
    int rc = 0;
    uint8_t *seen = calloc((size_t)vocab, 1);
    if (!seen) return qp_fail(err, QP_ENOMEM, "out of memory");
    size_t w = 0;
    for (int ci = 0; ci < n_chunks && !rc; ci++)
        for (int k = 0; k < counts[ci] && !rc; k++, w++) {
            toks[w] = toks[(size_t)ci * per_chunk + k];
            if (met_dist_push(res->dist, &toks[w])) rc = qp_fail(err, QP_ENOMEM, "out of memory");
            seen[toks[w].top_ref] |= 1;
            seen[toks[w].top_var] |= 2;
        }
    res->n_tokens = w;
    for (int v = 0; v < vocab; v++) {
        res->distinct_argmax_ref += seen[v] & 1;
        res->distinct_argmax_var += seen[v] >> 1;
    }
    free(seen);
    return rc;
}

static void hx_ls_free(struct hx_ls *ls) {
    for (int t = 0; t < ls->outer && ls->lanes; t++) hx_lane_free(&ls->lanes[t]);
    hx_lane_free(&ls->own);
    free(ls->lanes);
    free(ls->counts);
    qp_free(ls->toks);
    qp_free(ls->lp.cap);
    free(ls->lp.off);
    free(ls->lp.width);
}

int hx_lockstep_run(const struct kn_engine *ref, const struct kn_engine *var, const int *tokens,
                    size_t n_tokens, const struct hx_lockstep_opts *o, struct hx_lockstep_result *res,
                    char *err) {
    memset(res, 0, sizeof *res);
    struct hx_ls ls = {.c = kn_engine_config(ref), .tokens = tokens, .n_tokens = n_tokens, .o = o};
    int rc = hx_ls_check(&ls, var, err);
    if (rc) return rc;
    rc = hx_ls_init(&ls, ref, var, res, err);
    if (!rc) {
        double t0 = qp_now();
        int64_t processed = hx_ls_chunks(&ls, res);
        if (o->stop && *o->stop) rc = qp_fail(err, QP_EINTR, "interrupted");
        res->seconds = qp_now() - t0;
        res->tokens_processed = processed;
        res->n_chunks = ls.n_chunks;
        res->n_layers = ls.c->n_layers;
        if (!rc) rc = hx_lockstep_collect(ls.toks, ls.counts, ls.n_chunks, ls.per_chunk, ls.c->vocab_size, res, err);
        if (o->progress) o->progress(o->progress_ctx, ls.n_chunks, ls.n_chunks, processed);
    }
    if (!rc && o->keep_tokens) {
        res->tokens = ls.toks; // the compacted slots, in token order
        ls.toks = NULL;
    }
    hx_ls_free(&ls);
    if (rc) hx_lockstep_result_free(res);
    return rc;
}
