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
    if (o->protocol == HX_PROTO_LLAMACPP) ln->buf[0] = o->bos;
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

int hx_lockstep_run(const struct kn_engine *ref, const struct kn_engine *var, const int *tokens,
                    size_t n_tokens, const struct hx_lockstep_opts *o, struct hx_lockstep_result *res,
                    char *err) {
    memset(res, 0, sizeof *res);
    const struct kn_config *c = kn_engine_config(ref);
    if (!hx_configs_match(c, kn_engine_config(var)))
        return qp_fail(err, QP_EINVAL, "the variant's shape differs from the reference's");
    int ctx = o->ctx, vocab = c->vocab_size, L = c->n_layers;
    if (ctx < 4 || ctx > c->seq_len * 64)
        return qp_fail(err, QP_EINVAL, "context %d out of range (4..%d)", ctx, c->seq_len * 64);
    int n_chunks = hx_ppl_n_chunks(o->protocol, n_tokens, ctx);
    if (o->max_chunks > 0 && n_chunks > o->max_chunks) n_chunks = o->max_chunks;
    if (n_chunks < 1)
        return qp_fail(err, QP_EINVAL, "text has %zu tokens, fewer than one window of %d", n_tokens, ctx);
    for (size_t i = 0; i < n_tokens; i++)
        if (tokens[i] < 0 || tokens[i] >= vocab)
            return qp_fail(err, QP_EFORMAT, "token %d at %zu is outside the model's vocabulary of %d",
                           tokens[i], i, vocab);
    int layer_chunks = QP_MIN(QP_MAX(o->layer_chunks, 0), n_chunks);
    int threads = QP_MAX(o->n_threads, 1);
    int rest = n_chunks - layer_chunks;
    int outer = rest >= threads ? threads : 1;

    int per_chunk = o->protocol == HX_PROTO_LLAMACPP ? ctx - 1 - ctx / 2 : ctx - 1;
    size_t n_slots = (size_t)n_chunks * per_chunk;
    struct met_dist_tok *toks = qp_alloc_array(n_slots, sizeof *toks);
    int *counts = calloc((size_t)n_chunks, sizeof(int));
    struct hx_lane *lanes = calloc((size_t)outer, sizeof *lanes);
    size_t n_err = (size_t)(L + 1) * KN_SITE_COUNT;
    struct hx_layer_probe lp = {0};
    int rc = 0;
    if (!toks || !counts || !lanes) rc = qp_fail(err, QP_ENOMEM, "out of memory");
    if (!rc) rc = met_dist_create((int64_t)n_slots, &res->dist) ? qp_fail(err, QP_ENOMEM, "out of memory") : 0;
    if (!rc && layer_chunks > 0) {
        res->acc = calloc(2 * n_err, sizeof *res->acc);
        lp.off = calloc(n_err, sizeof *lp.off);
        lp.width = calloc(n_err, sizeof *lp.width);
        if (!res->acc || !lp.off || !lp.width) rc = qp_fail(err, QP_ENOMEM, "out of memory");
        size_t total = 0;
        for (int l = 0; l < L && !rc; l++)
            for (int s = 0; s < KN_SITE_LOGITS; s++) {
                int k = hx_layer_index(l, (enum kn_site)s);
                lp.width[k] = kn_site_used(c, (enum kn_site)s) ? kn_site_width(c, (enum kn_site)s) : 0;
                lp.off[k] = total;
                total += (size_t)ctx * lp.width[k];
            }
        if (!rc) {
            for (size_t i = 0; i < 2 * n_err; i++) met_err_init(&res->acc[i]);
            res->loc = res->acc + n_err;
            lp.ctx = ctx;
            lp.err = res->acc;
            if (!(lp.cap = qp_alloc_array(total, sizeof(float))))
                rc = qp_fail(err, QP_ENOMEM, "out of memory for %zu MiB of reference activations",
                             total * sizeof(float) >> 20);
        }
    }
    for (int t = 0; t < outer && !rc; t++)
        rc = hx_lane_init(&lanes[t], ref, var, ctx, outer == 1 ? threads : 1, err);
    // The layer-error chunks run one at a time with every thread inside the forward pass.
    struct hx_lane own = {0}, *big = &lanes[0];
    if (!rc && layer_chunks > 0 && outer > 1) {
        rc = hx_lane_init(&own, ref, var, ctx, threads, err);
        big = &own;
    }

    if (!rc) {
        double t0 = qp_now();
        int done = 0;
        int64_t processed = 0;
        struct met_err *logit_err = layer_chunks ? &res->acc[hx_layer_index(L, KN_SITE_LOGITS)] : NULL;
        for (int ci = 0; ci < layer_chunks && !(o->stop && *o->stop); ci++) {
            hx_lockstep_chunk(big, c, tokens, n_tokens, o, ci, toks + (size_t)ci * per_chunk,
                              &counts[ci], &lp, logit_err);
            done++;
            processed += hx_chunk_of(o->protocol, n_tokens, ctx, ci).len;
            if (o->progress) o->progress(o->progress_ctx, done, n_chunks, processed);
        }
#pragma omp parallel for num_threads(outer) schedule(dynamic, 1) if (outer > 1)
        for (int ci = layer_chunks; ci < n_chunks; ci++) {
            int t = omp_get_thread_num();
            if (o->stop && *o->stop) continue; // interrupted: skip what is left
            hx_lockstep_chunk(&lanes[t], c, tokens, n_tokens, o, ci, toks + (size_t)ci * per_chunk,
                              &counts[ci], NULL, NULL);
#pragma omp critical(hx_lockstep_progress)
            {
                done++;
                processed += hx_chunk_of(o->protocol, n_tokens, ctx, ci).len;
                if (o->progress && omp_get_thread_num() == 0) o->progress(o->progress_ctx, done, n_chunks, processed);
            }
        }
        if (o->stop && *o->stop) rc = qp_fail(err, QP_EINTR, "interrupted");
        res->seconds = qp_now() - t0;
        res->tokens_processed = processed;
        res->n_chunks = n_chunks;
        res->n_layers = L;
        uint8_t *seen = calloc((size_t)vocab, 1);
        if (!seen) rc = qp_fail(err, QP_ENOMEM, "out of memory");
        // Compact the per-chunk slots into token order and push them in that order.
        size_t w = 0;
        for (int ci = 0; ci < n_chunks && !rc; ci++)
            for (int k = 0; k < counts[ci] && !rc; k++, w++) {
                toks[w] = toks[(size_t)ci * per_chunk + k];
                if (met_dist_push(res->dist, &toks[w])) rc = qp_fail(err, QP_ENOMEM, "out of memory");
                seen[toks[w].top_ref] |= 1;
                seen[toks[w].top_var] |= 2;
            }
        res->n_tokens = w;
        for (int v = 0; v < vocab && seen; v++) {
            res->distinct_argmax_ref += seen[v] & 1;
            res->distinct_argmax_var += seen[v] >> 1;
        }
        free(seen);
        if (o->progress) o->progress(o->progress_ctx, n_chunks, n_chunks, processed);
    }
    for (int t = 0; t < outer && lanes; t++) hx_lane_free(&lanes[t]);
    hx_lane_free(&own);
    free(lanes);
    free(counts);
    if (!rc && o->keep_tokens) res->tokens = toks;
    else qp_free(toks);
    qp_free(lp.cap);
    free(lp.off);
    free(lp.width);
    if (rc) hx_lockstep_result_free(res);
    return rc;
}
