// lockstep.h — a variant evaluated against the reference on the same windows: per scored token
// NLL, KLD(reference ‖ variant), Δp and top-1 agreement (metrics/met_dist.h), and per-layer
// hidden-state error at every probe site (metrics/met_layer.h).
//
// For every chunk of the protocol (eval.h) the reference and the variant run the same tokens; their
// logit rows are compared at once and dropped, so memory holds O(ctx × vocab) logits, never
// tokens × vocab. Per-token values are pushed in token order after all chunks finish, so results
// do not depend on the thread count.
//
// Per-layer error, on the first layer_chunks chunks (run one at a time with threads inside the
// forward pass, because they hold every site's activations of the reference):
//  - accumulated: the variant run end to end, each site compared with the reference's;
//  - local: the variant run with the reference's block input injected at every block
//    (kn_probe.inject), so each layer sees exactly the reference's input;
// both as relative Frobenius error and cosine. Site KN_SITE_LOGITS (layer n_layers) is compared
// in the accumulated run only.
// Depends on kernels/, metrics/ and eval.h.
#ifndef HX_LOCKSTEP_H
#define HX_LOCKSTEP_H

#include <stdint.h>

#include "hx_eval.h"
#include "kn_engine.h"
#include "met_dist.h"
#include "met_layer.h"

struct hx_lockstep_opts {
    enum hx_protocol protocol;
    int ctx;
    int n_threads;
    int bos; // BOS id put at each chunk start (llamacpp protocol), or -1 when the vocabulary adds none
    int max_chunks;   // 0 = all
    int layer_chunks; // chunks with per-layer error (0 = none)
    int keep_tokens;  // return every scored token's values (res->tokens)
    // When non-NULL and set (by a signal handler), the remaining chunks are skipped and the run
    // returns QP_EINTR with nothing in res.
    const volatile int *stop;
    void (*progress)(void *ctx, int done, int total, int64_t tokens_done);
    void *progress_ctx;
};

struct hx_lockstep_result {
    struct met_dist *dist;     // every scored token, in order (owned)
    struct met_dist_tok *tokens; // with keep_tokens: n_tokens values in token order (owned)
    size_t n_tokens;
    int n_chunks;
    int64_t tokens_processed;  // tokens run through the variant
    double seconds;
    int n_layers;              // layer error arrays are (n_layers + 1) × KN_SITE_COUNT
    struct met_err *acc, *loc; // NULL when layer_chunks = 0; loc has no logits entry
    int distinct_argmax_ref, distinct_argmax_var; // distinct predicted tokens over scored positions
};

// Runs the protocol on both engines (same config required). 0 or a QP_E* code with err.
// Free the result with hx_lockstep_result_free.
int hx_lockstep_run(const struct kn_engine *ref, const struct kn_engine *var, const int *tokens,
                    size_t n_tokens, const struct hx_lockstep_opts *o, struct hx_lockstep_result *res,
                    char *err);
void hx_lockstep_result_free(struct hx_lockstep_result *res);

// The per-chunk slots toks ((n_chunks, per_chunk), counts[c] filled in chunk c) compacted into
// token order and pushed into res->dist in that order (so the statistics do not depend on the
// thread count), with the distinct argmax tokens of both models. Shared with hx_refeval.c.
int hx_lockstep_collect(struct met_dist_tok *toks, const int *counts, int n_chunks, int per_chunk, int vocab,
                        struct hx_lockstep_result *res, char *err);

static inline int hx_layer_index(int layer, enum kn_site site) {
    return layer * KN_SITE_COUNT + (int)site;
}

#endif
