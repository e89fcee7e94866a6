// task_gen.h — scoring a task suite by greedy generation (docs/TASKS.md, "Generative tasks"):
// generate-until items (TASK_GEN) and the greedy form of cloze suites (LAMBADA's last word as
// generated, beside lm-evaluation-harness's log-likelihood acc).
//
// Per item: the context is encoded with BOS (as the log-likelihood scorer encodes it) and the
// model continues it greedily (argmax, first index on ties) with the KV cache, one token at a time,
// until a stop token (EOS or BOS), a stop condition, or the token limit:
//  - TASK_GEN: stop when the text generated so far contains one of the item's `until` strings,
//    or after max_tokens (TASK_GEN_MAX_TOKENS by default). The text is cut at the earliest stop
//    string (lm-eval's generate_until). Correct (exact match) when the text and the answer are
//    equal after trimming ASCII whitespace at both ends; `contains` when the trimmed answer
//    occurs in the text.
//  - cloze, greedy form: the target has W whitespace-separated words; stop once the text holds
//    W words followed by whitespace, or after 2 × (the target's tokens) + 4 tokens. Correct
//    (exact match) when the text's first W words equal the target's, the last word of each with
//    its trailing ASCII punctuation (.,;:!?"')]) removed ("Tom." matches "Tom"); `contains` when
//    the trimmed target occurs in the text.
// When context + limit exceed the window, tokens are cut after BOS as the log-likelihood scorer
// does; an item whose limit alone does not fit is skipped.
//
// Results are task_result's (kind TASK_GEN whatever the suite's kind): correct = exact match,
// correct_norm = contains, n_tokens[0] = tokens generated, gen_text = the text. Items run in
// parallel, one engine state per thread (or threads inside the forward pass with fewer items than
// threads): bit-identical for any thread count.
// Depends on tasks/task.h, tasks/task_score.h and kernels/.
#ifndef TASK_GEN_H
#define TASK_GEN_H

#include <stddef.h>

#include "task.h"
#include "task_score.h"

// Scores every item of s (TASK_GEN, or TASK_CLOZE in its greedy form) by generation; tok must
// have decode. 0, or QP_EINVAL (no decode, bad window, a token outside the vocabulary),
// QP_ENOMEM, or the tokenizer's error, with err. *out freed with task_result_destroy.
int task_gen_score(const struct kn_engine *e, const struct task_suite *s, const struct task_tok *tok,
                   const struct task_score_opts *o, struct task_result **out, char *err);

// The pure parts, as defined above (exposed for tests).
size_t task_gen_cut(const char *text, char *const *until, int n_until); // length before the first stop string
int task_gen_exact(const char *text, const char *answer);
int task_gen_contains(const char *text, const char *answer);
int task_gen_words_done(const char *text, int w); // w words followed by whitespace
int task_gen_words_match(const char *text, const char *target);
int task_gen_word_count(const char *s);

#endif
