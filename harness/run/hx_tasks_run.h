// tasks_run.h — scoring task suites with a model's tokenizer and engine, and comparing a
// variant's answers with the reference's: what `qprobe tasks` runs, exposed so that other
// callers (the sweep runner, the store) get every per-item field (task_score.h's
// task_item_result: log-likelihood and token count per choice, greedy flags, prediction,
// acc_norm prediction, correctness, margin, context tokens, cut, skipped).
// Depends on tasks/, metrics/, kernels/ and harness/io/hx_tokenizer.h.
#ifndef HX_TASKS_RUN_H
#define HX_TASKS_RUN_H

#include "met_paired.h"
#include "task.h"
#include "task_score.h"

struct hx_tok;
struct kn_engine;

struct hx_tasks_opts {
    int n_threads;      // >= 1
    int window;         // positions per sequence (0 = the model's trained context)
    const char *label;  // progress label on stderr; NULL = no progress output
};

// The tokenizer callback over t: BOS when asked and the SPM space prefix, as llama.cpp (and
// Hugging Face's Llama tokenizer) encode a prompt. t must outlive the callback's use.
void hx_tasks_tok(const struct hx_tok *t, struct task_tok *out);

// Scores every item of s with engine e (by generation when s->generate, task_gen.h). 0 or a QP_E* code with err; *out freed by the caller
// with task_result_destroy.
int hx_tasks_run(const struct kn_engine *e, const struct hx_tok *tok, const struct task_suite *s,
                 const struct hx_tasks_opts *o, struct task_result **out, char *err);

// The greedy form of a cloze suite s (task_gen.h: the greedy continuation's words against the
// target's), whatever s->generate says. Same conventions as hx_tasks_run.
int hx_tasks_run_greedy(const struct kn_engine *e, const struct hx_tok *tok, const struct task_suite *s,
                        const struct hx_tasks_opts *o, struct task_result **out, char *err);

// Paired statistics of var against ref (same suite) over the items scored in both, on
// correctness (norm = 0) or acc_norm correctness (norm = 1). po may be NULL (defaults).
int hx_tasks_compare(const struct task_result *ref, const struct task_result *var, int norm,
                     const struct met_paired_opts *po, struct met_paired *out, char *err);

#endif
