// eval.c — perplexity runs over the engine (eval.h).
#include "hx_eval.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "kn_engine.h"
#include "qp.h"

int hx_ppl_n_chunks(enum hx_protocol p, size_t n_tokens, int ctx) {
    if (ctx < 4) return 0;
    size_t n = p == HX_PROTO_LLAMACPP ? n_tokens / (size_t)ctx
                                      : (n_tokens + (size_t)ctx - 2) / (size_t)ctx; // windows of >= 2
    return n > (size_t)1 << 30 ? 1 << 30 : (int)n;
}

struct hx_chunk hx_chunk_of(enum hx_protocol p, size_t n_tokens, int ctx, int c) {
    struct hx_chunk ch;
    ch.start = (size_t)c * ctx;
    if (p == HX_PROTO_LLAMACPP) {
        ch.len = ctx;
        ch.first = ctx / 2;
        ch.last = ctx - 2;
    } else {
        size_t rem = n_tokens - ch.start;
        ch.len = rem < (size_t)ctx ? (int)rem : ctx;
        ch.first = 0;
        ch.last = ch.len - 2;
    }
    return ch;
}

int hx_ppl_plan(const struct kn_config *c, const int *tokens, size_t n_tokens, enum hx_protocol p, int ctx,
                int max_chunks, int *n_chunks, int *per_chunk, char *err) {
    if (ctx < 4 || ctx > c->seq_len * 64)
        return qp_fail(err, QP_EINVAL, "context %d out of range (4..%d)", ctx, c->seq_len * 64);
    *n_chunks = hx_ppl_n_chunks(p, n_tokens, ctx);
    if (max_chunks > 0 && *n_chunks > max_chunks) *n_chunks = max_chunks;
    if (*n_chunks < 1) return qp_fail(err, QP_EINVAL, "text has %zu tokens, fewer than one window of %d", n_tokens, ctx);
    for (size_t i = 0; i < n_tokens; i++)
        if (tokens[i] < 0 || tokens[i] >= c->vocab_size)
            return qp_fail(err, QP_EFORMAT, "token %d at %zu is outside the model's vocabulary of %d", tokens[i], i,
                           c->vocab_size);
    *per_chunk = p == HX_PROTO_LLAMACPP ? ctx - 1 - ctx / 2 : ctx - 1;
    return 0;
}

// Runs chunk ch on state st (buf: ctx token ids, logits: (ctx, vocab)) and writes the NLL of every
// scored token into out; returns their count.
static int hx_ppl_chunk(struct kn_state *st, const struct kn_ops *ops, int vocab, const int *tokens,
                        const struct hx_chunk *ch, const struct hx_ppl_opts *o, int *buf, float *logits,
                        double *out) {
    memcpy(buf, tokens + ch->start, (size_t)ch->len * sizeof(int));
    if (o->protocol == HX_PROTO_LLAMACPP && o->bos >= 0) buf[0] = o->bos;
    kn_state_reset(st);
    kn_forward(st, buf, ch->len, logits, ch->first, NULL);
    int k = 0;
    for (int j = ch->first; j <= ch->last; j++, k++) {
        const float *row = logits + (size_t)(j - ch->first) * vocab;
        out[k] = met_token_nll(ops, row, vocab, tokens[ch->start + j + 1]);
    }
    return k;
}

// The per-chunk NLLs summed in chunk order (the result does not depend on the thread count),
// and kept per token when asked.
static void hx_ppl_sum(const double *nll, const int *counts, int n_chunks, int per_chunk, int keep_tokens,
                       struct hx_ppl_result *res) {
    size_t total = 0, w = 0;
    for (int ci = 0; ci < n_chunks; ci++) total += (size_t)counts[ci];
    if (keep_tokens) res->token_nll = malloc((total ? total : 1) * sizeof(double));
    for (int ci = 0; ci < n_chunks; ci++)
        for (int k = 0; k < counts[ci]; k++) {
            double v = nll[(size_t)ci * per_chunk + k];
            met_nll_add(&res->nll, v);
            if (res->token_nll) res->token_nll[w++] = v;
        }
}

int hx_ppl_run(const struct kn_engine *e, const int *tokens, size_t n_tokens,
               const struct hx_ppl_opts *o, int keep_tokens, struct hx_ppl_result *res, char *err) {
    memset(res, 0, sizeof *res);
    const struct kn_config *c = kn_engine_config(e);
    int ctx = o->ctx, n_chunks, per_chunk;
    int rc = hx_ppl_plan(c, tokens, n_tokens, o->protocol, ctx, o->max_chunks, &n_chunks, &per_chunk, err);
    if (rc) return rc;
    int threads = o->n_threads < 1 ? 1 : o->n_threads;
    int outer = n_chunks >= threads ? threads : 1; // chunk-parallel, or threads inside each chunk
    int inner = outer == 1 ? threads : 1;

    // Per-chunk scored NLLs, summed in order at the end (determinism).
    double *nll = qp_alloc_array((size_t)n_chunks * per_chunk, sizeof(double));
    int *counts = calloc((size_t)n_chunks, sizeof(int));
    struct kn_state **st = calloc((size_t)outer, sizeof *st);
    float **logits = calloc((size_t)outer, sizeof *logits);
    int **buf = calloc((size_t)outer, sizeof *buf);
    if (!nll || !counts || !st || !logits || !buf) rc = qp_fail(err, QP_ENOMEM, "out of memory");
    for (int t = 0; t < outer && !rc; t++) {
        rc = kn_state_create(e, ctx, ctx, inner, &st[t], err);
        if (!rc) {
            logits[t] = qp_alloc_array((size_t)ctx * c->vocab_size, sizeof(float));
            buf[t] = malloc((size_t)ctx * sizeof(int));
            if (!logits[t] || !buf[t]) rc = qp_fail(err, QP_ENOMEM, "out of memory for logits");
        }
    }
    if (!rc) {
        const struct kn_ops *ops = kn_engine_ops(e);
        double t0 = qp_now();
        int done = 0;
        int64_t processed = 0;
#pragma omp parallel for num_threads(outer) schedule(dynamic, 1) if (outer > 1)
        for (int ci = 0; ci < n_chunks; ci++) {
            int t = omp_get_thread_num();
            struct hx_chunk ch = hx_chunk_of(o->protocol, n_tokens, ctx, ci);
            counts[ci] = hx_ppl_chunk(st[t], ops, c->vocab_size, tokens, &ch, o, buf[t], logits[t],
                                      nll + (size_t)ci * per_chunk);
#pragma omp critical(hx_ppl_progress)
            {
                done++;
                processed += ch.len;
                if (o->progress && omp_get_thread_num() == 0) o->progress(o->progress_ctx, done, n_chunks, processed);
            }
        }
        res->seconds = qp_now() - t0;
        res->tokens_processed = processed;
        res->n_chunks = n_chunks;
        hx_ppl_sum(nll, counts, n_chunks, per_chunk, keep_tokens, res);
        if (o->progress) o->progress(o->progress_ctx, n_chunks, n_chunks, processed);
    }
    for (int t = 0; t < outer; t++) {
        if (st) kn_state_destroy(st[t]);
        if (logits) qp_free(logits[t]);
        if (buf) free(buf[t]);
    }
    free(st), free(logits), free(buf), free(counts);
    qp_free(nll);
    return rc;
}
