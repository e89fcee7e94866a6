// eval.h — running the engine over an evaluation text: perplexity under a stated protocol.
//
// Protocols:
//  - HX_PROTO_LLAMACPP, as llama.cpp's llama-perplexity: the whole text tokenized once with BOS,
//    cut into floor(n/ctx) non-overlapping chunks; the first token of each chunk replaced by BOS;
//    the logits at positions ctx/2 .. ctx-2 score the next token (the second half).
//  - HX_PROTO_FULL, Hugging Face style: non-overlapping windows of ctx tokens (a shorter last
//    window included), every position but the last scoring the next token.
// Chunks run in parallel (one engine state per thread) or, with fewer chunks than threads,
// one at a time with threads inside the forward pass; the result is the same bits either way,
// because per-token NLLs are summed in token order after all chunks finish.
// Depends on kernels/, metrics/.
#ifndef HX_EVAL_H
#define HX_EVAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "met_ppl.h"

struct kn_engine;

enum hx_protocol { HX_PROTO_LLAMACPP, HX_PROTO_FULL };

struct hx_ppl_opts {
    enum hx_protocol protocol;
    int ctx;
    int n_threads;
    int bos;        // BOS id (llamacpp protocol replaces each chunk's first token with it), or -1
                    // when the vocabulary adds none (Qwen2): chunks then start as the text does
    int max_chunks; // 0 = all
    // Called after each finished chunk from the calling thread: done of total.
    void (*progress)(void *ctx, int done, int total, int64_t tokens_done);
    void *progress_ctx;
};

struct hx_ppl_result {
    struct met_nll nll;
    int n_chunks;
    int64_t tokens_processed; // every token run through the model (llama.cpp's "prompt eval")
    double seconds;           // engine time
    double *token_nll;        // per scored token, in order (malloc'd; caller frees), NULL if not asked
};

// Number of chunks/windows the protocol makes of n_tokens (0 = text too short).
int hx_ppl_n_chunks(enum hx_protocol p, size_t n_tokens, int ctx);

// Where chunk c of the protocol starts in the token stream, how many tokens it runs, and which
// of its positions score the next token.
struct hx_chunk {
    size_t start;
    int len, first, last; // score logits at positions first..last (inclusive)
};
struct hx_chunk hx_chunk_of(enum hx_protocol p, size_t n_tokens, int ctx, int c);

// What a run of protocol p over tokens makes, checked first (the evaluation and the lockstep
// share it): ctx in 4..64 × the model's context, at least one window (at most max_chunks when
// > 0), every token id inside the vocabulary. *n_chunks and *per_chunk (the positions scored
// per chunk, the room a chunk's results need). 0, QP_EINVAL or QP_EFORMAT with err.
struct kn_config;
int hx_ppl_plan(const struct kn_config *c, const int *tokens, size_t n_tokens, enum hx_protocol p, int ctx,
                int max_chunks, int *n_chunks, int *per_chunk, char *err);

// Runs the protocol. keep_tokens: also return per-token NLLs. 0 or a QP_E* code with err.
int hx_ppl_run(const struct kn_engine *e, const int *tokens, size_t n_tokens,
               const struct hx_ppl_opts *o, int keep_tokens, struct hx_ppl_result *res, char *err);

// Protocol names ("llamacpp", "full"); inline so that configuration parsers need not link the
// evaluation code. parse: 0, or -1 for an unknown name.
static inline const char *hx_protocol_name(enum hx_protocol p) { return p == HX_PROTO_LLAMACPP ? "llamacpp" : "full"; }
static inline int hx_protocol_parse(const char *s, enum hx_protocol *p) {
    if (strcmp(s, "llamacpp") == 0) *p = HX_PROTO_LLAMACPP;
    else if (strcmp(s, "full") == 0) *p = HX_PROTO_FULL;
    else return -1;
    return 0;
}

#endif
