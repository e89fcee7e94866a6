// task_builtin.h — the built-in suites for small TinyStories models, made deterministically from
// the text of tinystories_val.txt (given as a buffer): no file of items to ship or download.
//
//  - "tinystories-cloze": the last word of a sentence. context = the paragraph up to that word
//    (without the space before it), target = " word".
//  - "tinystories-nextsent": multiple choice. context = a paragraph up to the end of one of its
//    sentences; choices = the true next sentence and 3 distractor sentences from other
//    paragraphs, each with a leading space, the true one at a pseudo-random position.
//
// Items are taken from the END of the text (one per paragraph, walking back from the last
// paragraph) so that they are held out from calibration text, which qprobe takes from the
// beginning; suite->src_begin/src_end give the byte range they come from. The exact rules
// (paragraphs, sentences, eligible words, the splitmix64 seeds and draws) are in docs/TASKS.md.
// Depends on tasks/task.h and kernels/qp.h only.
#ifndef TASK_BUILTIN_H
#define TASK_BUILTIN_H

#include <stddef.h>

#include "task.h"

#define TASK_BUILTIN_ITEMS 500 // items per built-in suite (fewer when the text is short)

// The number of built-in suites and the name of the i-th ("tinystories-cloze", ...).
int task_builtin_count(void);
const char *task_builtin_name(int i);
int task_builtin_is(const char *name); // 1 when name is a built-in suite

// Builds the built-in suite name from text[0..len): up to TASK_BUILTIN_ITEMS items, in text
// order (a smaller suite is a task_suite_truncate away: the same first items). The text must
// not contain NUL bytes. 0, or QP_ENOENT (unknown name), QP_EFORMAT (NUL byte, or not one item
// can be made), QP_ENOMEM; message in err. *out is freed by the caller with task_suite_destroy.
int task_builtin_create(const char *name, const char *text, size_t len, struct task_suite **out,
                        char *err);

// The byte range [*begin, *end) of text that the built-in suites take items from: the union
// of their ranges, a tail of the text. Calibration text must stay below *begin.
int task_builtin_range(const char *text, size_t len, size_t *begin, size_t *end, char *err);

#endif
