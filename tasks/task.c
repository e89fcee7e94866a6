// task.c — task suites: construction, ownership, character counts (task.h).
// Depends on kernels/qp.h only.
#include "task.h"

#include <stdlib.h>
#include <string.h>

#include "qp.h"
#include "qp_utf8.h"

// ---------------------------------------------------------------------------------------------
// Helpers

const char *task_kind_name(enum task_kind k) {
    return k == TASK_MC ? "multiple choice" : k == TASK_CLOZE ? "cloze" : "generate until";
}

static char *task_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static void task_item_free(struct task_item *it) {
    free(it->id);
    free(it->context);
    if (it->choices)
        for (int j = 0; j < it->n_choices; j++) free(it->choices[j]);
    free(it->choices);
    for (int j = 0; j < it->n_until; j++) free(it->until[j]);
    free(it->until);
    memset(it, 0, sizeof *it);
}

// Makes room for one more item; 0 or QP_ENOMEM.
static int task_suite_grow(struct task_suite *s) {
    if (s->n_items < s->cap_items) return 0;
    if (s->cap_items > (1 << 28)) return QP_ENOMEM;
    int cap = s->cap_items ? s->cap_items * 2 : 64;
    struct task_item *ni = realloc(s->items, (size_t)cap * sizeof *ni);
    if (!ni) return QP_ENOMEM;
    s->items = ni;
    s->cap_items = cap;
    return 0;
}

// Copies the strings into a new item at the end of s (the checks are done by the callers).
static int task_suite_push(struct task_suite *s, const char *id, const char *context,
                           const char *const *choices, int n_choices, int gold, int64_t line, char *err) {
    if (task_suite_grow(s)) return qp_fail(err, QP_ENOMEM, "out of memory");
    struct task_item it = {0};
    it.n_choices = n_choices;
    it.gold = gold;
    it.line = line;
    it.id = task_strdup(id);
    it.context = task_strdup(context);
    it.choices = calloc((size_t)n_choices, sizeof *it.choices);
    int ok = it.id && it.context && it.choices;
    for (int j = 0; ok && j < n_choices; j++) ok = (it.choices[j] = task_strdup(choices[j])) != NULL;
    if (!ok) {
        task_item_free(&it);
        return qp_fail(err, QP_ENOMEM, "out of memory");
    }
    s->items[s->n_items++] = it;
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Suites

int task_suite_create(const char *name, enum task_kind kind, struct task_suite **out) {
    *out = NULL;
    struct task_suite *s = calloc(1, sizeof *s);
    if (!s) return QP_ENOMEM;
    s->kind = kind;
    s->name = task_strdup(name ? name : "");
    if (!s->name) {
        free(s);
        return QP_ENOMEM;
    }
    *out = s;
    return 0;
}

void task_suite_destroy(struct task_suite *s) {
    if (!s) return;
    for (int i = 0; i < s->n_items; i++) task_item_free(&s->items[i]);
    free(s->items);
    free(s->name);
    free(s);
}

int task_suite_add_mc(struct task_suite *s, const char *id, const char *context,
                      const char *const *choices, int n_choices, int gold, int64_t line, char *err) {
    if (s->kind != TASK_MC) return qp_fail(err, QP_EINVAL, "a multiple-choice item in a cloze suite");
    if (!id || !context || !choices) return qp_fail(err, QP_EINVAL, "missing id, context or choices");
    if (n_choices < 2) return qp_fail(err, QP_EINVAL, "%d choices: at least 2 are needed", n_choices);
    for (int j = 0; j < n_choices; j++)
        if (!choices[j] || !choices[j][0]) return qp_fail(err, QP_EINVAL, "choice %d is empty", j);
    if (gold < 0 || gold >= n_choices)
        return qp_fail(err, QP_EINVAL, "gold %d is outside the %d choices (0..%d)", gold, n_choices, n_choices - 1);
    return task_suite_push(s, id, context, choices, n_choices, gold, line, err);
}

int task_suite_add_cloze(struct task_suite *s, const char *id, const char *context,
                         const char *target, int64_t line, char *err) {
    if (s->kind != TASK_CLOZE) return qp_fail(err, QP_EINVAL, "a cloze item in a multiple-choice suite");
    if (!id || !context || !target) return qp_fail(err, QP_EINVAL, "missing id, context or target");
    if (!target[0]) return qp_fail(err, QP_EINVAL, "the target is empty");
    return task_suite_push(s, id, context, &target, 1, 0, line, err);
}

int task_suite_add_gen(struct task_suite *s, const char *id, const char *prompt, const char *answer,
                       const char *const *until, int n_until, int max_tokens, int64_t line, char *err) {
    if (s->kind != TASK_GEN) return qp_fail(err, QP_EINVAL, "a generate-until item in a %s suite", task_kind_name(s->kind));
    if (!id || !prompt || !answer) return qp_fail(err, QP_EINVAL, "missing id, prompt or answer");
    if (!answer[strspn(answer, " \t\r\n\v\f")]) return qp_fail(err, QP_EINVAL, "the answer is empty");
    if (max_tokens < 0 || max_tokens > 4096) return qp_fail(err, QP_EINVAL, "max_tokens %d is outside 1..4096", max_tokens);
    for (int j = 0; j < n_until; j++)
        if (!until[j] || !until[j][0]) return qp_fail(err, QP_EINVAL, "stop string %d of \"until\" is empty", j);
    int rc = task_suite_push(s, id, prompt, &answer, 1, 0, line, err);
    if (rc) return rc;
    struct task_item *it = &s->items[s->n_items - 1];
    it->max_tokens = max_tokens;
    it->until = calloc((size_t)(n_until > 0 ? n_until : 1), sizeof *it->until);
    int ok = it->until != NULL;
    for (int j = 0; ok && j < n_until; j++, it->n_until++) ok = (it->until[j] = task_strdup(until[j])) != NULL;
    if (!ok) {
        task_item_free(it);
        s->n_items--;
        return qp_fail(err, QP_ENOMEM, "out of memory");
    }
    return 0;
}

void task_suite_truncate(struct task_suite *s, int n) {
    if (n < 0) n = 0;
    while (s->n_items > n) task_item_free(&s->items[--s->n_items]);
}

// ---------------------------------------------------------------------------------------------
// Text

int task_choice_chars(const char *cont) {
    const unsigned char *p = (const unsigned char *)cont;
    size_t len = strlen(cont), i = 0;
    if (len > 0 && p[0] == ' ') i = 1; // the target delimiter
    int chars = 0;
    while (i < len) {
        size_t n = qp_utf8_seq(p + i, len - i, NULL);
        i += n ? n : 1;
        if (chars < (1 << 30)) chars++;
    }
    return chars > 0 ? chars : 1;
}
