// task.h — the data model of a task suite: a named list of items, each a context followed by
// continuations scored by log-likelihood (tasks/task_score.h).
//
//  - multiple choice (TASK_MC): context, n_choices >= 2 continuations, gold = index of the
//    correct one;
//  - cloze (TASK_CLOZE): context and one target continuation, stored as choices[0] (gold = 0),
//    correct when the model produces every target token greedily.
//  - generate until (TASK_GEN, tasks/task_gen.h): a prompt (the context) and an answer (choices[0]);
//    the model generates greedily until a stop string (`until`) or max_tokens, and is scored by
//    exact match and by contains.
// A suite with `generate` set is scored by generation (task_gen.h): every TASK_GEN suite, and the
// greedy form of a cloze suite ("lambada-greedy": the greedy continuation's words against the
// target's).
//
// Continuations are appended to the context verbatim, so they carry their own delimiter
// (" yes", " park"), as lm-evaluation-harness's requests do after it adds its target delimiter.
// For acc_norm a continuation's length is counted in characters (Unicode code points) without
// one leading space: exactly the length of lm-evaluation-harness's choice string.
//
// A suite owns all its strings. Readers of files live in harness/io/hx_task_io.h; built-in suites in
// tasks/task_builtin.h. Depends on kernels/qp.h only (no cJSON, no harness).
#ifndef TASK_H
#define TASK_H

#include <stddef.h>
#include <stdint.h>

enum task_kind { TASK_MC, TASK_CLOZE, TASK_GEN };

struct task_item {
    char *id;       // e.g. "piqa:17", an ARC id, "tinystories-cloze@123456" (owned)
    char *context;  // text the continuations follow, possibly empty (owned)
    char **choices; // n_choices continuations (owned, each owned); cloze: choices[0] = target
    int n_choices;  // MC: >= 2; cloze: 1
    int gold;       // MC: index into choices; cloze: 0
    int64_t line;   // 1-based line of the source file where the item starts (0 = not from a file)
    char **until;   // TASK_GEN: n_until stop strings (owned; may be 0 of them)
    int n_until;
    int max_tokens; // TASK_GEN: tokens generated at most (0: TASK_GEN_MAX_TOKENS)
};

#define TASK_GEN_MAX_TOKENS 64

struct task_suite {
    char *name;                // owned
    enum task_kind kind;
    struct task_item *items;   // n_items, in source order
    int n_items, cap_items;
    int64_t n_skipped;         // malformed source records skipped by a lenient reader
    // Built-in suites: the items come from bytes [src_begin, src_end) of their source text
    // (for a calibration-overlap check). Both 0 for suites read from files.
    size_t src_begin, src_end;
    int generate; // scored by greedy generation (task_gen.h): TASK_GEN, or a cloze suite's greedy form
};

const char *task_kind_name(enum task_kind k); // "multiple choice", "cloze", "generate until"

// An empty suite named name. 0 or QP_ENOMEM. Free with task_suite_destroy.
int task_suite_create(const char *name, enum task_kind kind, struct task_suite **out);
void task_suite_destroy(struct task_suite *s); // NULL is fine

// Adds a multiple-choice item, copying every string (the caller keeps its own). QP_EINVAL with a
// message (no file name: the caller prefixes "FILE:LINE: ") when the suite is cloze, a string is
// NULL, n_choices < 2, a choice is empty, or gold is outside [0, n_choices); QP_ENOMEM.
int task_suite_add_mc(struct task_suite *s, const char *id, const char *context,
                      const char *const *choices, int n_choices, int gold, int64_t line, char *err);
// Adds a cloze item (target non-empty). Same conventions.
int task_suite_add_cloze(struct task_suite *s, const char *id, const char *context,
                         const char *target, int64_t line, char *err);

// Adds a generate-until item: prompt, answer (non-empty after trimming whitespace), n_until stop
// strings (each non-empty), max_tokens (0: TASK_GEN_MAX_TOKENS; else 1..4096). Same conventions.
int task_suite_add_gen(struct task_suite *s, const char *id, const char *prompt, const char *answer,
                       const char *const *until, int n_until, int max_tokens, int64_t line, char *err);

// Keeps the first n items (n >= 0), freeing the rest.
void task_suite_truncate(struct task_suite *s, int n);

static inline const char *task_item_target(const struct task_item *it) { return it->choices[0]; }

// The acc_norm length of a continuation: its Unicode code points (each byte of an invalid UTF-8
// sequence counts as one) without one leading space; at least 1 so that the division is defined.
int task_choice_chars(const char *cont);


#endif
