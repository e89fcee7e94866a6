// hx_refeval.c — a variant against the reference cache (hx_refeval.h).
#include "hx_refeval.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "qp.h"

// ---------------------------------------------------------------------------------------------
// Per-layer probes

// The variant's rows compared with the cached reference's of layer chunk `chunk`.
struct hx_re_probe {
    const struct hx_refcache *rc;
    int chunk;
    struct met_err *err; // (n_layers + 1) × KN_SITE_COUNT: the accumulated or the local ones
};

// Site (layer, site)'s reference rows at compare row k, and its row stride.
static const float *hx_re_ref_row(const struct hx_re_probe *p, int layer, enum kn_site site, int pos, int k) {
    const struct hx_refcache_shape *s = hx_refcache_shape(p->rc);
    if (site == KN_SITE_BLOCK_IN) return hx_refcache_block_in(p->rc, p->chunk, layer) + (size_t)pos * s->dim;
    return hx_refcache_site(p->rc, p->chunk, layer, site) + (size_t)k * s->width[site];
}

static void hx_re_probe_fn(void *ctx, enum kn_site site, int layer, const float *x, int n, int width, int pos0) {
    struct hx_re_probe *p = ctx;
    if (site == KN_SITE_LOGITS) return; // compared from the logit rows themselves
    const struct hx_refcache_shape *s = hx_refcache_shape(p->rc);
    QP_ASSERT(width == s->width[site] && pos0 + n <= s->ctx);
    struct met_err *e = &p->err[hx_layer_index(layer, site)];
    if (s->stride == 1) { // every position: the lockstep's one call, the same sums
        met_err_add(e, hx_re_ref_row(p, layer, site, pos0, pos0), x, n, width);
        return;
    }
    for (int i = 0; i < n; i++) {
        int pos = pos0 + i, k = (pos + 1) / s->stride - 1;
        if ((pos + 1) % s->stride == 0 && k < s->n_cmp)
            met_err_add(e, hx_re_ref_row(p, layer, site, pos, k), x + (size_t)i * width, 1, width);
    }
}

static void hx_re_inject_fn(void *ctx, int layer, float *x, int n, int width, int pos0) {
    struct hx_re_probe *p = ctx;
    memcpy(x, hx_refcache_block_in(p->rc, p->chunk, layer) + (size_t)pos0 * width, (size_t)n * width * sizeof(float));
}

// ---------------------------------------------------------------------------------------------
// Chunks

struct hx_re_lane { // one thread's sequence
    struct kn_state *st;
    float *logits; // (ctx, vocab): rows first..len-1
    int *buf;
};

static void hx_re_lane_free(struct hx_re_lane *ln) {
    kn_state_destroy(ln->st);
    qp_free(ln->logits);
    free(ln->buf);
}

// logits 0: a lane for local passes only, which compute no logits (ctx × vocab floats saved).
static int hx_re_lane_init(struct hx_re_lane *ln, const struct kn_engine *var, int ctx, int inner, int logits,
                           char *err) {
    memset(ln, 0, sizeof *ln);
    int rc = kn_state_create(var, ctx, ctx, inner, &ln->st, err);
    if (rc) return rc;
    if (logits) ln->logits = qp_alloc_array((size_t)ctx * kn_engine_config(var)->vocab_size, sizeof(float));
    ln->buf = malloc((size_t)ctx * sizeof(int));
    return (ln->logits || !logits) && ln->buf ? 0 : qp_fail(err, QP_ENOMEM, "out of memory for logits");
}

// The run's state: the chunks, their per-token slots, the lanes, the layer accumulators.
struct hx_re {
    const struct hx_refcache *rc;
    const struct hx_refcache_shape *sh;
    const int *tokens;
    size_t n_tokens;
    const struct hx_lockstep_opts *o;
    int n_chunks, layer_chunks, outer, threads;
    struct met_dist_tok *toks; // (n_chunks, per_chunk) slots
    int *counts;
    struct hx_re_lane *lanes, own, *big; // (outer) lanes; big: every thread, for the local passes
};

// Chunk ci's tokens into the lane's buffer (llama.cpp's protocol: BOS first); its extent.
static struct hx_chunk hx_re_load(const struct hx_re *r, struct hx_re_lane *ln, int ci) {
    const struct hx_lockstep_opts *o = r->o;
    struct hx_chunk ch = hx_chunk_of(o->protocol, r->n_tokens, o->ctx, ci);
    memcpy(ln->buf, r->tokens + ch.start, (size_t)ch.len * sizeof(int));
    if (o->protocol == HX_PROTO_LLAMACPP && o->bos >= 0) ln->buf[0] = o->bos;
    return ch;
}

// Layer chunk ci's logit rows at the compare positions, from the lane's logits of its pass.
static void hx_re_logit_err(struct hx_re *r, struct hx_re_lane *ln, int ci, const struct hx_chunk *ch,
                            struct hx_lockstep_result *res) {
    const struct hx_refcache_shape *s = r->sh;
    struct met_err *logit_err = &res->acc[hx_layer_index(s->n_layers, KN_SITE_LOGITS)];
    const float *ref = hx_refcache_logits(r->rc, ci);
    if (s->stride == 1) {
        met_err_add(logit_err, ref, ln->logits, ch->len - ch->first, s->vocab);
    } else {
        for (int c = s->cmp_logit0; c < s->n_cmp && (c + 1) * s->stride - 1 < ch->len; c++)
            met_err_add(logit_err, ref + (size_t)(c - s->cmp_logit0) * s->vocab,
                        ln->logits + (size_t)((c + 1) * s->stride - 1 - ch->first) * s->vocab, 1, s->vocab);
    }
}

// Layer chunk ci's local pass: every block of the variant on the reference's input (injected
// from the cache). It needs nothing of the chunk's own pass.
static void hx_re_local(struct hx_re *r, struct hx_re_lane *ln, int ci, struct hx_lockstep_result *res) {
    struct hx_chunk ch = hx_re_load(r, ln, ci);
    struct hx_re_probe p = {r->rc, ci, res->loc};
    struct kn_probe inj = {hx_re_probe_fn, &p, hx_re_inject_fn};
    kn_state_reset(ln->st);
    kn_forward(ln->st, ln->buf, ch.len, NULL, ch.len, &inj);
}

// Chunk ci on the variant: its per-token values against the cache, and on a layer chunk (res
// non-NULL) the accumulated layer errors and the logits' (its cache pages are kept for the
// local pass). Returns the tokens run.
static int hx_re_chunk(struct hx_re *r, struct hx_re_lane *ln, int ci, struct hx_lockstep_result *res) {
    const struct hx_refcache_shape *s = r->sh;
    struct hx_chunk ch = hx_re_load(r, ln, ci);
    struct hx_re_probe p = {r->rc, ci, res ? res->acc : NULL};
    struct kn_probe probe = {hx_re_probe_fn, &p, NULL};
    kn_state_reset(ln->st);
    kn_forward(ln->st, ln->buf, ch.len, ln->logits, ch.first, res ? &probe : NULL);
    const struct met_dist_ref *recs;
    const uint16_t *codes;
    hx_refcache_chunk(r->rc, ci, &recs, &codes);
    struct met_dist_tok *out = r->toks + (size_t)ci * s->per_chunk;
    int k = 0, V = s->vocab;
    for (int j = ch.first; j <= ch.last; j++, k++)
        met_dist_token_cached(&recs[k], codes + (size_t)k * V, ln->logits + (size_t)(j - ch.first) * V, V,
                              r->tokens[ch.start + j + 1], &out[k]);
    r->counts[ci] = k;
    if (res) hx_re_logit_err(r, ln, ci, &ch, res);
    else hx_refcache_release(r->rc, ci);
    return ch.len;
}

static void hx_re_progress(const struct hx_re *r, int done, int64_t processed) {
    if (r->o->progress) r->o->progress(r->o->progress_ctx, done, r->n_chunks, processed);
}

// Every chunk's pass over the outer lanes, then the layer chunks' local passes with every
// thread. Lane 0 takes the layer chunks first, in order (their error accumulators are shared and
// summed in chunk order), then every lane the next chunk left: the chunk passes balance over
// the lanes as in a plain perplexity run, and the local passes (one per layer chunk) add half a
// round each on two threads rather than a whole round with a lane idle. Which lane or how many
// threads ran a pass changes no bit (the engine gives the same results for any thread count).
static int64_t hx_re_chunks(struct hx_re *r, struct hx_lockstep_result *res) {
    const struct hx_lockstep_opts *o = r->o;
    int done = 0, next = r->layer_chunks;
    int64_t processed = 0;
#pragma omp parallel num_threads(r->outer) if (r->outer > 1)
    {
        const int t = omp_get_thread_num();
        for (int k = 0;; k++) {
            int ci, layer = t == 0 && k < r->layer_chunks;
            if (layer) {
                ci = k;
            } else {
#pragma omp atomic capture
                ci = next++;
            }
            if (ci >= r->n_chunks || (o->stop && *o->stop)) break; // done, or interrupted: skip what is left
            int n = hx_re_chunk(r, &r->lanes[t], ci, layer ? res : NULL);
#pragma omp critical(hx_refeval_progress)
            {
                done += !layer; // a layer chunk is done after its local pass
                processed += n;
                if (t == 0) hx_re_progress(r, done, processed);
            }
        }
    }
    for (int ci = 0; ci < r->layer_chunks && !(o->stop && *o->stop); ci++) {
        hx_re_local(r, r->big, ci, res);
        hx_refcache_release(r->rc, ci);
        hx_re_progress(r, ++done, processed);
    }
    return processed;
}

// ---------------------------------------------------------------------------------------------
// The run

// The chunks and threads, after the variant's shape and the options are checked against the cache.
static int hx_re_check(struct hx_re *r, const struct kn_engine *var, char *err) {
    const struct kn_config *c = kn_engine_config(var);
    const struct hx_refcache_shape *s = r->sh;
    const struct hx_lockstep_opts *o = r->o;
    if (c->vocab_size != s->vocab || c->n_layers != s->n_layers || c->dim != s->dim)
        return qp_fail(err, QP_EINVAL, "the variant's shape differs from the reference's");
    QP_ASSERT(o->ctx == s->ctx);
    int per_chunk;
    int rc = hx_ppl_plan(c, r->tokens, r->n_tokens, o->protocol, o->ctx, o->max_chunks, &r->n_chunks, &per_chunk, err);
    if (rc) return rc;
    r->n_chunks = QP_MIN(r->n_chunks, s->n_chunks);
    r->layer_chunks = QP_MIN(QP_MIN(QP_MAX(o->layer_chunks, 0), s->layer_chunks), r->n_chunks);
    r->threads = QP_MAX(o->n_threads, 1);
    r->outer = r->n_chunks - r->layer_chunks >= r->threads ? r->threads : 1;
    return 0;
}

static int hx_re_init(struct hx_re *r, const struct kn_engine *var, struct hx_lockstep_result *res, char *err) {
    const struct hx_refcache_shape *s = r->sh;
    size_t n_slots = (size_t)r->n_chunks * s->per_chunk, n_err = (size_t)(s->n_layers + 1) * KN_SITE_COUNT;
    r->toks = qp_alloc_array(n_slots, sizeof *r->toks);
    r->counts = calloc((size_t)r->n_chunks, sizeof(int));
    r->lanes = calloc((size_t)r->outer, sizeof *r->lanes);
    int rc = 0;
    if (!r->toks || !r->counts || !r->lanes) rc = qp_fail(err, QP_ENOMEM, "out of memory");
    if (!rc && met_dist_create((int64_t)n_slots, &res->dist)) rc = qp_fail(err, QP_ENOMEM, "out of memory");
    if (!rc && r->layer_chunks > 0) {
        if (!(res->acc = calloc(2 * n_err, sizeof *res->acc))) rc = qp_fail(err, QP_ENOMEM, "out of memory");
        else res->loc = res->acc + n_err; // zeroed: met_err_init's state
    }
    for (int t = 0; t < r->outer && !rc; t++)
        rc = hx_re_lane_init(&r->lanes[t], var, s->ctx, r->outer == 1 ? r->threads : 1, 1, err);
    r->big = r->lanes; // the local passes' lane: every thread
    if (!rc && r->layer_chunks > 0 && r->outer > 1) {
        rc = hx_re_lane_init(&r->own, var, s->ctx, r->threads, 0, err);
        r->big = &r->own;
    }
    return rc;
}

static void hx_re_free(struct hx_re *r) {
    for (int t = 0; t < r->outer && r->lanes; t++) hx_re_lane_free(&r->lanes[t]);
    hx_re_lane_free(&r->own);
    free(r->lanes);
    free(r->counts);
    qp_free(r->toks);
}

int hx_refeval_run(const struct hx_refcache *rc, const struct kn_engine *var, const int *tokens, size_t n_tokens,
                   const struct hx_lockstep_opts *o, struct hx_lockstep_result *res, char *err) {
    memset(res, 0, sizeof *res);
    struct hx_re r = {.rc = rc, .sh = hx_refcache_shape(rc), .tokens = tokens, .n_tokens = n_tokens, .o = o};
    int e = hx_re_check(&r, var, err);
    if (!e) e = hx_re_init(&r, var, res, err);
    if (!e) {
        double t0 = qp_now();
        int64_t processed = hx_re_chunks(&r, res);
        res->seconds = qp_now() - t0;
        res->tokens_processed = processed;
        res->n_chunks = r.n_chunks;
        res->n_layers = r.sh->n_layers;
        if (o->stop && *o->stop) e = qp_fail(err, QP_EINTR, "interrupted");
        if (!e) e = hx_lockstep_collect(r.toks, r.counts, r.n_chunks, r.sh->per_chunk, r.sh->vocab, res, err);
        if (o->progress) o->progress(o->progress_ctx, r.n_chunks, r.n_chunks, processed);
    }
    if (!e && o->keep_tokens) {
        res->tokens = r.toks; // the compacted slots, in token order
        r.toks = NULL;
    }
    hx_re_free(&r);
    if (e) hx_lockstep_result_free(res);
    return e;
}
