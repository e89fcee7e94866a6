// hx_gen.h — free-running generation, reference against variant (docs/GENERATION.md): prompts
// (cut from the evaluation text at fixed offsets, or read from a file), continuations of L tokens
// generated with the KV cache (greedy, or seeded sampling at temperature T with the same random
// numbers for both models), the reference's log-likelihood of a variant's continuation, per-prompt
// comparisons (metrics/met_gen.h) and their rows in the study database (table gen_item).
//
// The work is split so that the reference model need not be in memory beside a variant:
//  1. reference phase: hx_gen_run on the reference engine; its continuations are stored
//     (hx_gen_store, variant = the reference) and can be read back (hx_gen_load_ref);
//  2. variant phase: hx_gen_run on the variant alone;
//  3. scoring: hx_gen_score(reference engine, prompts, the variant's continuations) — the one step
//     that needs the reference model again; run it at once when both are loaded, or later in a
//     batch (gen_item.ref_nll is NULL until then).
//
// Determinism: prompts run in parallel, one engine state per thread (with fewer prompts than
// threads, one state with the threads inside the forward pass); each prompt is computed by one
// state in a fixed order, so every token and number is the same for any thread count. Sampling
// (Gumbel-max, hx_gen.c) draws from a splitmix64 stream seeded by (seed, prompt index), never
// shared between prompts and the same for the reference and every variant.
// Depends on kernels/, metrics/met_gen.h, harness/io (tokenizer) and harness/store.
#ifndef HX_GEN_H
#define HX_GEN_H

#include <stddef.h>
#include <stdint.h>

#include "met_gen.h"

struct hx_tok;
struct hx_store;
struct kn_engine;

#define HX_GEN_PROMPT_TOKENS 32 // tokens per prompt cut from the evaluation text
#define HX_GEN_K 16             // agreement window

struct hx_gen_opts {
    int n_prompts;           // N (0: no generation)
    int n_tokens;            // L, tokens generated per prompt
    int prompt_tokens;       // tokens per prompt cut from the text (BOS not counted)
    int k;                   // agreement in the first K tokens
    double temperature;      // 0: greedy (argmax, first index on ties)
    uint64_t seed;           // sampling
    const char *prompts_path; // NULL: prompts cut from the evaluation text
};

void hx_gen_opts_default(struct hx_gen_opts *o); // off; L 64, P 32, K 16, greedy, seed 1
// "N:L" (N prompts of L tokens) into o. 0, or QP_EINVAL with a message.
int hx_gen_parse_spec(const char *s, struct hx_gen_opts *o, char *err);

// The prompts: token ids (BOS first when the vocabulary adds one) and text.
struct hx_gen_prompts {
    int n;
    int **tok;       // (n) malloc'd each
    int *n_tok;      // (n)
    char **text;     // (n) the prompt as text (malloc'd each)
    int64_t *where;  // (n) source line (file) or token offset in the text
    char source[80]; // what they come from, for the setup: "text@OFFSETS" or "file SHA-256/12"
};
void hx_gen_prompts_free(struct hx_gen_prompts *p);

// N prompts of o->prompt_tokens tokens from tokens[0..n_tokens) (the evaluation text, BOS at 0):
// prompt i starts at 1 + i * (n_tokens - 1 - P - 32) / N, moved forward (at most 32 tokens) to the
// first token that starts a word, ends before the last word start within its P tokens (when that
// leaves at least P/2 + 1 of them), and gets BOS in front (bos < 0: none). 0, QP_EINVAL (text too
// short) or QP_ENOMEM with err.
int hx_gen_prompts_from_text(const int *tokens, size_t n_tokens, int bos, const struct hx_tok *tok,
                             const struct hx_gen_opts *o, struct hx_gen_prompts *out, char *err);

// Prompts from a file: one per non-blank line, or JSONL ({"prompt": "..."} per line) when the
// first non-blank line starts with '{'. Each is encoded with BOS and the SPM space prefix (as
// `qprobe generate`). A prompt that with o->n_tokens generated tokens needs more than ctx
// positions, an empty file, a line that is not UTF-8 or has a NUL byte, a JSONL line that is not
// an object with a string "prompt": QP_EFORMAT "FILE:LINE: what is wrong". At most o->n_prompts
// prompts are taken when it is > 0.
int hx_gen_prompts_read(const char *path, const struct hx_tok *tok, int ctx, const struct hx_gen_opts *o,
                        struct hx_gen_prompts *out, char *err);

// The setup every row carries: which prompts, L, temperature and seed (K is a metric option, not
// part of it). E.g. "text@16x32 L=64 greedy" or "file:1a2b3c4d5e6f L=64 T=0.8 seed=1".
void hx_gen_setup(const struct hx_gen_prompts *p, const struct hx_gen_opts *o, char *buf, size_t cap);

// Continuations, one per prompt.
struct hx_gen_conts {
    int n;
    int **tok;               // (n) generated ids, the stop token included when produced
    int *n_tok;              // (n)
    unsigned char *stopped;  // (n) 1: the last token is a stop token (EOS, or BOS as llama2.c)
    double *nll_self;        // (n) mean NLL per token under the generating model
    double seconds;          // generation time
    int64_t tokens;          // tokens generated
};
// n empty continuations (for filling by hand or from the store). 0 or QP_ENOMEM.
int hx_gen_conts_init(struct hx_gen_conts *c, int n);
void hx_gen_conts_free(struct hx_gen_conts *c);

// Generates o->n_tokens tokens after every prompt with engine e (stopping early at a stop token:
// the tokenizer's EOS and BOS). progress (may be NULL) as hx_progress_cb. 0 or a QP_E* code.
int hx_gen_run(const struct kn_engine *e, const struct hx_tok *tok, const struct hx_gen_prompts *p,
               const struct hx_gen_opts *o, int n_threads, void (*progress)(void *, int, int, int64_t),
               void *progress_ctx, struct hx_gen_conts *out, char *err);

// The reference's mean NLL per token of each continuation of c after its prompt (teacher-forced,
// fp64 log-softmax as the tasks), into nll[0..p->n). 0 or a QP_E* code.
int hx_gen_score(const struct kn_engine *ref, const struct hx_gen_prompts *p, const struct hx_gen_conts *c,
                 int n_threads, double *nll, char *err);

// Per prompt comparisons of var against ref (nll: the reference's NLL of var's continuations, may
// be NULL) into pairs[0..n).
void hx_gen_compare(const struct hx_gen_conts *ref, const struct hx_gen_conts *var, const double *nll, int k,
                    struct met_gen_pair *pairs);

// --- the store (table gen_item, docs/SCHEMA.md)

// Rows of variant vid under setup, inside the caller's transaction: the continuations c with
// their text, and (pairs non-NULL) the comparison with the reference; for the reference itself
// pairs is NULL and ref_nll is its own NLL.
int hx_gen_store(struct hx_store *st, int64_t vid, const char *setup, const struct hx_tok *tok,
                 const struct hx_gen_prompts *p, const struct hx_gen_conts *c, const struct met_gen_pair *pairs,
                 char *err);
// The summary as metrics of suite "gen" (docs/SCHEMA.md), inside the caller's transaction.
// is_ref: the reference's own figures only.
int hx_gen_store_summary(struct hx_store *st, int64_t vid, const struct met_gen_summary *s,
                         const struct hx_gen_opts *o, const struct hx_gen_conts *c, int is_ref, char *err);
// The reference's continuations stored under setup for variant ref_id: 1 and *out filled (n
// prompts expected), 0 when there are none, < 0 on error (QP_EFORMAT when the rows do not match
// n prompts).
int hx_gen_load_ref(struct hx_store *st, int64_t ref_id, const char *setup, int n, struct hx_gen_conts *out,
                    char *err);

#endif
