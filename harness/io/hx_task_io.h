// task_io.h — reading task suites from files: the generic JSONL formats and the real datasets
// (LAMBADA, HellaSwag, PIQA, ARC-Easy, BoolQ) with lm-evaluation-harness's prompt formats, and
// resolving a --suite argument (built-in name, dataset name, or JSONL path). docs/TASKS.md
// documents every format.
//
// Malformed input never crashes and never asserts: a bad record gives QP_EFORMAT with the
// message "FILE:LINE: what is wrong", or, when lenient, is skipped and counted in the suite's
// n_skipped. Lines must be UTF-8 without NUL bytes; a trailing '\r' is dropped; blank lines are
// ignored (JSONL). Depends on tasks/, kernels/qp.h and cJSON.
#ifndef HX_TASK_IO_H
#define HX_TASK_IO_H

#include "task.h"

struct hx_task_read_opts {
    int lenient; // skip malformed records (counted in suite->n_skipped) instead of failing
    int limit;   // stop after this many items (0 = all)
};

// Generic JSONL, one item per line; the first item decides the kind of the whole file:
//   multiple choice {"context": str, "choices": [str, ...] (>= 2, non-empty), "gold": int}
//   cloze           {"context": str, "target": str (non-empty)}
// optional "id" (string or number; default: the line number). Continuations are appended to
// the context verbatim (write " yes", not "yes"). The suite is named after the file.
int hx_task_read_jsonl(const char *path, const struct hx_task_read_opts *o, struct task_suite **out,
                       char *err);

// OpenAI LAMBADA test jsonl {"text"}: cloze, context = text up to its last space, target =
// " " + the last word (lm-eval lambada_openai).
int hx_task_read_lambada(const char *path, const struct hx_task_read_opts *o, struct task_suite **out,
                         char *err);
// llama.cpp's HellaSwag text: 6 lines per task (context, gold label 0-3, 4 endings); context as
// given, choices = " " + ending.
int hx_task_read_hellaswag(const char *path, const struct hx_task_read_opts *o, struct task_suite **out,
                           char *err);
// PIQA jsonl {"goal", "sol1", "sol2"} with labels (0/1, one per line, aligned by record):
// "Question: GOAL\nAnswer:" + " SOL".
int hx_task_read_piqa(const char *path, const char *labels_path, const struct hx_task_read_opts *o,
                      struct task_suite **out, char *err);
// ARC jsonl {"id", "question": {"stem", "choices": [{"text", "label"}]}, "answerKey"}:
// "Question: STEM\nAnswer:" + " TEXT", gold = the choice whose label is answerKey.
int hx_task_read_arc(const char *path, const struct hx_task_read_opts *o, struct task_suite **out,
                     char *err);
// SuperGLUE BoolQ jsonl {"passage", "question", "idx", "label" (bool, "true"/"false" or 0/1)}:
// "PASSAGE\nQuestion: QUESTION?\nAnswer:" + " no" | " yes", gold = label.
int hx_task_read_boolq(const char *path, const struct hx_task_read_opts *o, struct task_suite **out,
                       char *err);

// The fixtures directory for dataset and built-in suites: opt if given, else the environment's
// QPROBE_FIXTURES, else "../shared/fixtures" (relative to the working directory).
const char *hx_task_fixtures(const char *opt);

// Opens the suite a --suite argument names: a built-in suite ("tinystories-cloze",
// "tinystories-nextsent", built from FIXTURES/data/tinystories/tinystories_val.txt), a dataset
// ("lambada", "hellaswag", "piqa", "arc-easy", "boolq": files under FIXTURES/data/), or else a
// path to a JSONL file. 0 or a QP_E* code with a one-line message; *out freed by the caller
// with task_suite_destroy.
int hx_task_open(const char *suite, const char *fixtures, const struct hx_task_read_opts *o,
                 struct task_suite **out, char *err);

#endif
