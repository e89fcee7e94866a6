// hx_refeval.h — a variant evaluated alone against the reference cache (hx_refcache.h): the same
// figures as the lockstep (hx_lockstep.h) without the reference model in memory.
//
// The variant runs the cache's windows; per scored token NLL, KLD(reference ‖ variant), Δp and
// top-1 come from its logits and the cached reference (met_dist_token_cached: NLLs, Δp and top-1
// bit-identical to the lockstep's, the KLD within the bound met_dist.h states). Per-layer error
// on the first layer_chunks chunks: accumulated (the variant end to end, each site compared with
// the reference's at the cache's compare positions) and local (the reference's cached block input
// injected at every block); with stride 1 (every position: small models) bit-identical to the
// lockstep's, else the same statistics over the compare positions. The cache's pages are
// released chunk by chunk, so memory holds the variant and the chunks in flight.
// Depends on kernels/, metrics/ and harness/run/hx_lockstep.h, hx_refcache.h.
#ifndef HX_REFEVAL_H
#define HX_REFEVAL_H

#include "hx_lockstep.h"
#include "hx_refcache.h"

// Runs o's chunks (at most the cache's; o->protocol, ctx and bos must be the cache's, which the
// caller opened for the same tokens) on var. layer_chunks is capped at the cache's. 0 or a QP_E*
// code with err (QP_EINVAL: a variant of another shape); free res with hx_lockstep_result_free.
int hx_refeval_run(const struct hx_refcache *rc, const struct kn_engine *var, const int *tokens, size_t n_tokens,
                   const struct hx_lockstep_opts *o, struct hx_lockstep_result *res, char *err);

#endif
