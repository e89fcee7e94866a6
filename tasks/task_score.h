// task_score.h — scoring a task suite by log-likelihood with the engine, as
// lm-evaluation-harness does (docs/TASKS.md, "Scoring").
//
// Per item the context (with BOS) is run once; every continuation then runs after
// kn_state_rewind to the shared context length. The log-likelihood of a continuation is the sum
// of log p of its tokens (fp64 log-softmax of the fp32 logits, the engine's logsumexp); greedy
// means every continuation token is the argmax of its row (first index on ties, as torch).
//
// Token boundary rule (lm-eval's): trailing whitespace of the context moves to the front of the
// continuation; enc(context) and enc(context + continuation) are both encoded with BOS, and the
// continuation's tokens are the tail of enc(context + continuation) after its longest common
// prefix with enc(context) (at least the last token; never the BOS).
// Window: a sequence holds at most `window` positions. When the longest choice needs more, the
// same number of tokens is cut from every choice right after BOS (BOS is kept: the models were
// trained with BOS at position 0); an item whose continuation alone does not fit is marked
// skipped and left out of the statistics.
//
// Threads: items are scored in parallel, one engine state per thread (or, with fewer items
// than threads, one state with the threads inside kn_forward). Every item is computed by one
// state in a fixed order and the summary is taken in item order, so results are bit-identical
// for any thread count.
// Depends on tasks/task.h and kernels/ (no harness: tokenization is a callback).
#ifndef TASK_SCORE_H
#define TASK_SCORE_H

#include <stdint.h>

#include "task.h"

struct kn_engine;

// Tokenization, supplied by the caller.
struct task_tok {
    // Encodes the NUL-terminated text (BOS first when add_bos) into out[0..cap). Returns the
    // token count n; when n > cap only cap tokens were written and the scorer calls again with
    // room for n. A negative QP_E* code on failure. Called from several threads at once.
    int (*encode)(void *ctx, const char *text, int add_bos, int *out, int cap);
    // Generation only (task_gen.h): the text of ids[0..n) as they continue a text (a leading
    // space kept), into *text (malloc'd); 0 or a negative QP_E* code. And the ids that end a
    // generation (EOS; BOS, as llama2.c stops at it), -1 for none.
    int (*decode)(void *ctx, const int *ids, int n, char **text);
    int stop_ids[2];
    void *ctx;
};

struct task_score_opts {
    int window;    // positions per sequence, >= 2 (0 = the model's trained context)
    int n_threads; // >= 1
    // Called from the calling thread after finished items: done of total, tokens run so far.
    void (*progress)(void *ctx, int done, int total, int64_t tokens_done);
    void *progress_ctx;
};

// One item's outcome. The arrays point into the owning task_result.
struct task_item_result {
    int n_choices;
    double *ll;             // (n_choices) log-likelihood of each continuation, nats (<= 0)
    int *n_tokens;          // (n_choices) continuation tokens scored
    unsigned char *greedy;  // (n_choices) 1 when every continuation token is the argmax
    int pred;               // argmax of ll (first on ties); cloze: 0
    int pred_norm;          // argmax of ll / task_choice_chars (acc_norm); cloze: 0
    int correct;            // MC: pred == gold; cloze: greedy[0]
    int correct_norm;       // MC: pred_norm == gold; cloze: = correct
    double margin;          // MC: ll[gold] - max over other choices of ll; cloze: 0
    int ctx_tokens;         // shared context tokens run, BOS included, after any cut
    int cut;                // tokens cut after BOS to fit the window (0 = none)
    int skipped;            // 1: a continuation alone exceeds the window; not scored or counted
};

struct task_summary {
    int n;                   // items scored (skipped ones excluded)
    int n_skipped;           // items skipped (too long for the window)
    double acc, acc_stderr;  // mean of correct; sqrt(p (1 - p) / (n - 1)) as lm-eval
    double acc_norm, acc_norm_stderr; // MC only (cloze: = acc)
    // Cloze only (0 for MC):
    double ll_mean;          // mean target log-likelihood
    double target_ppl;       // exp(-ll_mean): lm-eval's lambada "perplexity" (per target)
    double token_ppl;        // exp(-sum ll / sum target tokens)
    int64_t target_tokens;
};

struct task_result {
    enum task_kind kind;            // TASK_GEN for every result of task_gen_score
    int n_items;
    struct task_item_result *items; // (n_items) aligned with the suite's items
    struct task_summary sum;
    int window, n_threads;
    int64_t tokens_processed;       // every token run through the model
    double seconds;                 // scoring time (tokenization included)
    // Storage behind the items' arrays (one slot per choice of the suite, in item order).
    double *ll_store;
    int *ntok_store;
    unsigned char *greedy_store;
    char **gen_text;                // task_gen_score: (n_items) each item's generated text, cut at
                                    // its stop string (owned); NULL for log-likelihood results
};

// Scores every item of s (a suite scored by log-likelihood: not s->generate). 0, or QP_EINVAL (bad window or a token outside the model's
// vocabulary), QP_ENOMEM, or the tokenizer's error; message in err. *out freed by the caller
// with task_result_destroy.
int task_score(const struct kn_engine *e, const struct task_suite *s, const struct task_tok *tok,
               const struct task_score_opts *o, struct task_result **out, char *err);

// The item loop both scorers share: fn(ctx, i, thread, &tokens, err) for every i < n on outer
// OpenMP threads (dynamic schedule; thread in 0..outer-1), adding the tokens each call ran to
// the progress count (o->progress from the calling thread). After a failure no new item starts;
// the code of the lowest failing index is returned with its message in err.
typedef int (*task_item_fn)(void *ctx, int i, int thread, int64_t *tokens, char *err);
int task_for_items(int n, int outer, task_item_fn fn, void *ctx, const struct task_score_opts *o, char *err);

// A zeroed result shaped for s (items' arrays allocated), e.g. to fill log-likelihoods by hand.
// 0 or QP_ENOMEM. Free with task_result_destroy.
int task_result_create(const struct task_suite *s, struct task_result **out);
void task_result_destroy(struct task_result *r); // NULL is fine

// From r->ll and r->greedy of item it: pred, pred_norm, correct, correct_norm, margin.
void task_item_decide(const struct task_item *it, enum task_kind kind, struct task_item_result *r);
// r->sum from the items (skipped ones excluded), in item order.
void task_summarize(struct task_result *r);

// sqrt(p (1 - p) / (n - 1)), the sample standard error of a mean of 0/1 values; 0 when n < 2.
double task_acc_stderr(double p, int n);

#endif
