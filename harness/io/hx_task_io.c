// task_io.c — task suites from files and --suite names (task_io.h). Prompt formats follow
// lm-evaluation-harness's task configs (lm_eval/tasks/<name>/*.yaml); docs/TASKS.md has them.
#include "hx_task_io.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hx_text.h"
#include "qp.h"
#include "qp_utf8.h"
#include "task_builtin.h"

// ---------------------------------------------------------------------------------------------
// Lines

// A whole file split into lines in place: each '\n' becomes a NUL.
struct hx_lines {
    char *buf;
    size_t len, pos;
    int64_t line; // 1-based number of the line last returned
};

static int hx_lines_open(const char *path, struct hx_lines *L, char *err) {
    memset(L, 0, sizeof *L);
    return hx_read_bytes(path, &L->buf, &L->len, err);
}

// The next line (without '\n' and a trailing '\r'); 0 at the end of the file.
static int hx_lines_next(struct hx_lines *L, char **s, size_t *n) {
    if (L->pos >= L->len) return 0;
    char *b = L->buf + L->pos, *nl = memchr(b, '\n', L->len - L->pos);
    size_t m = nl ? (size_t)(nl - b) : L->len - L->pos;
    L->pos += m + (nl ? 1 : 0);
    b[m] = 0; // the '\n', or the terminator already there
    if (m > 0 && b[m - 1] == '\r') b[--m] = 0;
    L->line++;
    *s = b;
    *n = m;
    return 1;
}

static void hx_lines_close(struct hx_lines *L) {
    free(L->buf);
    L->buf = NULL;
}

static int hx_blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!strchr(" \t\r\v\f", s[i])) return 0;
    return 1;
}

// NULL when line s[0..n) is usable text, else what is wrong with it.
static const char *hx_line_problem(const char *s, size_t n) {
    if (memchr(s, 0, n)) return "contains a NUL byte";
    if (!qp_utf8_valid(s, n)) return "is not valid UTF-8";
    return NULL;
}

// Trims ASCII whitespace from both ends of s in place; returns the new start.
static char *hx_trim(char *s) {
    while (*s && strchr(" \t\r\n\v\f", *s)) s++;
    size_t n = strlen(s);
    while (n > 0 && strchr(" \t\r\n\v\f", s[n - 1])) s[--n] = 0;
    return s;
}

// ---------------------------------------------------------------------------------------------
// JSONL driver

struct hx_reader;
// Handles one JSON object. 0 ok; QP_EFORMAT: malformed (msg says why; skipped when lenient);
// anything else is fatal (msg says why).
typedef int (*hx_item_fn)(struct hx_reader *r, const cJSON *obj, int64_t line, char *msg);

struct hx_reader {
    const char *path;
    const struct hx_task_read_opts *o;
    struct task_suite *suite; // created by the caller, or by the first item (generic JSONL)
    int64_t record;           // 0-based index of the current non-blank line
    int64_t kind_line;        // generic JSONL: the line that fixed the suite's kind
    int64_t skipped;
    const int *labels;        // PIQA: one per record (-1 = unreadable), n_labels of them
    const int64_t *label_lines;
    int64_t n_labels;
    const char *labels_path;
};

static int hx_reader_full(const struct hx_reader *r) {
    return r->o->limit > 0 && r->suite && r->suite->n_items >= r->o->limit;
}

// Either skips a malformed record (lenient) or turns msg into "PATH:LINE: msg".
static int hx_reader_bad(struct hx_reader *r, int64_t line, const char *msg, char *err) {
    if (r->o->lenient) {
        r->skipped++;
        return 0;
    }
    return qp_fail(err, QP_EFORMAT, "%s:%lld: %s", r->path, (long long)line, msg);
}

static int hx_jsonl_each(struct hx_reader *r, hx_item_fn fn, char *err) {
    struct hx_lines L;
    int rc = hx_lines_open(r->path, &L, err);
    if (rc) return rc;
    char *s, msg[QP_ERRLEN];
    size_t n;
    while (!rc && !hx_reader_full(r) && hx_lines_next(&L, &s, &n)) {
        if (hx_blank(s, n)) continue;
        const char *problem = hx_line_problem(s, n);
        if (problem) {
            rc = hx_reader_bad(r, L.line, problem, err);
            r->record++;
            continue;
        }
        const char *end = NULL;
        cJSON *obj = cJSON_ParseWithLengthOpts(s, n, &end, 0);
        if (!obj) {
            size_t col = end && end >= s && end <= s + n ? (size_t)(end - s) + 1 : 1;
            snprintf(msg, sizeof msg, "invalid JSON near column %zu", col);
            rc = hx_reader_bad(r, L.line, msg, err);
        } else if (end && !hx_blank(end, n - (size_t)(end - s))) {
            snprintf(msg, sizeof msg, "unexpected text after the JSON value at column %zu", (size_t)(end - s) + 1);
            rc = hx_reader_bad(r, L.line, msg, err);
        } else if (!cJSON_IsObject(obj)) {
            rc = hx_reader_bad(r, L.line, "not a JSON object", err);
        } else {
            msg[0] = 0;
            int irc = fn(r, obj, L.line, msg);
            if (irc == QP_EFORMAT) rc = hx_reader_bad(r, L.line, msg, err);
            else if (irc) rc = qp_fail(err, irc, "%s:%lld: %s", r->path, (long long)L.line, msg);
        }
        cJSON_Delete(obj);
        r->record++;
    }
    hx_lines_close(&L);
    return rc;
}

// Finishes a read: the suite must hold items; skips are recorded on it.
static int hx_reader_finish(struct hx_reader *r, int rc, struct task_suite **out, char *err) {
    if (!rc && (!r->suite || r->suite->n_items == 0))
        rc = qp_fail(err, QP_EFORMAT, "%s: no items%s", r->path,
                     r->skipped ? " (every record was malformed and skipped)" : "");
    if (rc) {
        task_suite_destroy(r->suite);
        r->suite = NULL;
        return rc;
    }
    r->suite->n_skipped = r->skipped;
    *out = r->suite;
    return 0;
}

// Creates the reader's suite up front (the dataset readers know their kind).
static int hx_reader_init(struct hx_reader *r, const char *path, const struct hx_task_read_opts *o,
                          const char *name, enum task_kind kind, char *err) {
    static const struct hx_task_read_opts none = {0};
    memset(r, 0, sizeof *r);
    r->path = path;
    r->o = o ? o : &none;
    if (name && task_suite_create(name, kind, &r->suite)) return qp_fail(err, QP_ENOMEM, "out of memory");
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Field access: QP_EFORMAT with a message for missing keys and wrong types.

static int hx_get_str(const cJSON *o, const char *key, const char **out, char *msg) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v) return qp_fail(msg, QP_EFORMAT, "missing \"%s\"", key);
    if (!cJSON_IsString(v) || !v->valuestring) return qp_fail(msg, QP_EFORMAT, "\"%s\" is not a string", key);
    *out = v->valuestring;
    return 0;
}

// A JSON number with an integral value in int range.
static int hx_json_int(const cJSON *v, int *out) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= -2147483648.0 && d <= 2147483647.0) || d != floor(d)) return -1;
    *out = (int)d;
    return 0;
}

static int hx_get_int(const cJSON *o, const char *key, int *out, char *msg) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v) return qp_fail(msg, QP_EFORMAT, "missing \"%s\"", key);
    if (hx_json_int(v, out)) return qp_fail(msg, QP_EFORMAT, "\"%s\" is not an integer", key);
    return 0;
}

// task_suite_add_* report bad items as QP_EINVAL: for a reader those are malformed records.
static int hx_add_rc(int rc) { return rc == QP_EINVAL ? QP_EFORMAT : rc; }

// printf into a fresh string (NULL when out of memory).
static char *hx_fmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *hx_fmt(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    return n < 0 ? NULL : s;
}

// The file name without directories and without one extension, for suite names.
static void hx_stem(const char *path, char *buf, size_t cap) {
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    snprintf(buf, cap, "%s", b);
    char *dot = strrchr(buf, '.');
    if (dot && dot != buf) *dot = 0;
}

// ---------------------------------------------------------------------------------------------
// Generic JSONL

// The suite of a generic JSONL file: made by its first item, whose kind every later one must have.
static int hx_generic_suite(struct hx_reader *r, enum task_kind kind, int64_t line, char *msg) {
    if (!r->suite) {
        char name[256];
        hx_stem(r->path, name, sizeof name);
        if (task_suite_create(name, kind, &r->suite)) return qp_fail(msg, QP_ENOMEM, "out of memory");
        r->suite->generate = kind == TASK_GEN;
        r->kind_line = line;
    } else if (r->suite->kind != kind) {
        return qp_fail(msg, QP_EFORMAT, "a %s item in a %s file (line %lld set the kind)", task_kind_name(kind),
                       task_kind_name(r->suite->kind), (long long)r->kind_line);
    }
    return 0;
}

// "id": a string or an integer, else the line number, into id (64 bytes) or *ids.
static int hx_generic_id(const cJSON *obj, int64_t line, char id[64], const char **ids, char *msg) {
    const cJSON *idv = cJSON_GetObjectItemCaseSensitive(obj, "id");
    int iv;
    *ids = id;
    if (!idv) snprintf(id, 64, "%lld", (long long)line);
    else if (cJSON_IsString(idv) && idv->valuestring) *ids = idv->valuestring;
    else if (!hx_json_int(idv, &iv)) snprintf(id, 64, "%d", iv);
    else return qp_fail(msg, QP_EFORMAT, "\"id\" is not a string or an integer");
    return 0;
}

// {"prompt", "answer", "until": [str, ...] or str, "max_tokens", "id"}: a generate-until item.
static int hx_gen_item(struct hx_reader *r, const cJSON *obj, int64_t line, char *msg) {
    const char *prompt, *answer, *ids;
    char id[64];
    int rc = hx_get_str(obj, "prompt", &prompt, msg), max_tokens = 0, n = 0;
    if (!rc) rc = hx_get_str(obj, "answer", &answer, msg);
    if (!rc) rc = hx_generic_suite(r, TASK_GEN, line, msg);
    if (!rc) rc = hx_generic_id(obj, line, id, &ids, msg);
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(obj, "max_tokens");
    if (!rc && mt && (hx_json_int(mt, &max_tokens) || max_tokens < 1))
        rc = qp_fail(msg, QP_EFORMAT, "\"max_tokens\" is not a positive integer");
    const cJSON *until = cJSON_GetObjectItemCaseSensitive(obj, "until"), *u;
    if (!rc && until && !cJSON_IsArray(until) && !cJSON_IsString(until))
        rc = qp_fail(msg, QP_EFORMAT, "\"until\" is not an array of strings");
    if (rc) return rc;
    int cap = until && cJSON_IsArray(until) ? cJSON_GetArraySize(until) : 1;
    const char **stops = malloc((size_t)QP_MAX(cap, 1) * sizeof *stops);
    if (!stops) return qp_fail(msg, QP_ENOMEM, "out of memory");
    if (until && cJSON_IsString(until)) stops[n++] = until->valuestring;
    else if (until) cJSON_ArrayForEach(u, until) {
        if (!cJSON_IsString(u)) {
            free(stops);
            return qp_fail(msg, QP_EFORMAT, "\"until\"[%d] is not a string", n);
        }
        stops[n++] = u->valuestring;
    }
    rc = hx_add_rc(task_suite_add_gen(r->suite, ids, prompt, answer, stops, n, max_tokens, line, msg));
    free(stops);
    return rc;
}

static int hx_generic_item(struct hx_reader *r, const cJSON *obj, int64_t line, char *msg) {
    if (cJSON_GetObjectItemCaseSensitive(obj, "prompt")) return hx_gen_item(r, obj, line, msg);
    const char *context;
    int rc = hx_get_str(obj, "context", &context, msg);
    if (rc) return rc;
    const cJSON *choices = cJSON_GetObjectItemCaseSensitive(obj, "choices");
    const cJSON *target = cJSON_GetObjectItemCaseSensitive(obj, "target");
    if (choices && target) return qp_fail(msg, QP_EFORMAT, "has both \"choices\" and \"target\"");
    if (!choices && !target) return qp_fail(msg, QP_EFORMAT, "has neither \"choices\" (multiple choice) nor \"target\" (cloze)");
    enum task_kind kind = choices ? TASK_MC : TASK_CLOZE;
    if ((rc = hx_generic_suite(r, kind, line, msg))) return rc;
    char id[64];
    const char *ids;
    if ((rc = hx_generic_id(obj, line, id, &ids, msg))) return rc;

    if (kind == TASK_CLOZE) {
        if (!cJSON_IsString(target) || !target->valuestring) return qp_fail(msg, QP_EFORMAT, "\"target\" is not a string");
        return hx_add_rc(task_suite_add_cloze(r->suite, ids, context, target->valuestring, line, msg));
    }
    if (!cJSON_IsArray(choices)) return qp_fail(msg, QP_EFORMAT, "\"choices\" is not an array");
    int n = cJSON_GetArraySize(choices), gold = -1;
    if (n < 2) return qp_fail(msg, QP_EFORMAT, "\"choices\" has %d entries: at least 2 are needed", n);
    if ((rc = hx_get_int(obj, "gold", &gold, msg))) return rc;
    if (gold < 0 || gold >= n)
        return qp_fail(msg, QP_EFORMAT, "\"gold\" is %d but there are %d choices (0..%d)", gold, n, n - 1);
    const char **ch = malloc((size_t)n * sizeof *ch);
    if (!ch) return qp_fail(msg, QP_ENOMEM, "out of memory");
    int j = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, choices) {
        if (!cJSON_IsString(c) || !c->valuestring) {
            free(ch);
            return qp_fail(msg, QP_EFORMAT, "choice %d is not a string", j);
        }
        ch[j++] = c->valuestring;
    }
    rc = hx_add_rc(task_suite_add_mc(r->suite, ids, context, ch, n, gold, line, msg));
    free(ch);
    return rc;
}

int hx_task_read_jsonl(const char *path, const struct hx_task_read_opts *o, struct task_suite **out,
                       char *err) {
    *out = NULL;
    struct hx_reader r;
    int rc = hx_reader_init(&r, path, o, NULL, TASK_MC, err);
    if (!rc) rc = hx_jsonl_each(&r, hx_generic_item, err);
    return hx_reader_finish(&r, rc, out, err);
}

// ---------------------------------------------------------------------------------------------
// LAMBADA (lm-eval lambada_openai: text.split(' ')[:-1] joined | ' ' + text.split(' ')[-1])

static int hx_lambada_item(struct hx_reader *r, const cJSON *obj, int64_t line, char *msg) {
    const char *text;
    int rc = hx_get_str(obj, "text", &text, msg);
    if (rc) return rc;
    const char *sp = strrchr(text, ' ');
    if (!sp) return qp_fail(msg, QP_EFORMAT, "\"text\" has no space before its last word");
    if (!sp[1]) return qp_fail(msg, QP_EFORMAT, "\"text\" ends with a space");
    char *ctx = hx_fmt("%.*s", (int)QP_MIN((size_t)(sp - text), (size_t)INT32_MAX), text);
    char *tgt = hx_fmt(" %s", sp + 1);
    char id[64];
    snprintf(id, sizeof id, "lambada:%lld", (long long)line);
    rc = ctx && tgt ? hx_add_rc(task_suite_add_cloze(r->suite, id, ctx, tgt, line, msg))
                    : qp_fail(msg, QP_ENOMEM, "out of memory");
    free(ctx), free(tgt);
    return rc;
}

int hx_task_read_lambada(const char *path, const struct hx_task_read_opts *o, struct task_suite **out,
                         char *err) {
    *out = NULL;
    struct hx_reader r;
    int rc = hx_reader_init(&r, path, o, "lambada", TASK_CLOZE, err);
    if (!rc) rc = hx_jsonl_each(&r, hx_lambada_item, err);
    return hx_reader_finish(&r, rc, out, err);
}

// ---------------------------------------------------------------------------------------------
// HellaSwag, llama.cpp's text format: per task, "activity_label: ctx" (already preprocessed as
// lm-eval's hellaswag does), the gold ending's index, then 4 endings.

#define HX_HS_LINES 6

// One task from its 6 lines (first at line `line`); QP_EFORMAT with msg when malformed.
static int hx_hellaswag_task(struct task_suite *s, char **ln, const size_t *len, int64_t line, int64_t task,
                             char *msg) {
    for (int k = 0; k < HX_HS_LINES; k++) {
        const char *p = hx_line_problem(ln[k], len[k]);
        if (p) return qp_fail(msg, QP_EFORMAT, "line %lld of the task %s", (long long)(line + k), p);
    }
    const char *lab = hx_trim(ln[1]);
    if (!(lab[0] >= '0' && lab[0] <= '3' && lab[1] == 0))
        return qp_fail(msg, QP_EFORMAT, "the label line (%lld) is '%.20s', not 0..3", (long long)(line + 1), lab);
    char *ch[4] = {0};
    int rc = 0;
    for (int j = 0; j < 4 && !rc; j++) {
        const char *e = hx_trim(ln[2 + j]);
        if (!e[0]) rc = qp_fail(msg, QP_EFORMAT, "ending %d (line %lld) is empty", j, (long long)(line + 2 + j));
        else if (!(ch[j] = hx_fmt(" %s", e))) rc = qp_fail(msg, QP_ENOMEM, "out of memory");
    }
    char id[64];
    snprintf(id, sizeof id, "hellaswag:%lld", (long long)task);
    if (!rc) rc = hx_add_rc(task_suite_add_mc(s, id, hx_trim(ln[0]), (const char *const *)ch, 4, lab[0] - '0', line, msg));
    for (int j = 0; j < 4; j++) free(ch[j]);
    return rc;
}

int hx_task_read_hellaswag(const char *path, const struct hx_task_read_opts *o, struct task_suite **out,
                           char *err) {
    *out = NULL;
    struct hx_reader r;
    int rc = hx_reader_init(&r, path, o, "hellaswag", TASK_MC, err);
    struct hx_lines L;
    if (!rc) rc = hx_lines_open(path, &L, err);
    if (rc) return hx_reader_finish(&r, rc, out, err);
    char *ln[HX_HS_LINES], msg[QP_ERRLEN];
    size_t len[HX_HS_LINES];
    int have = 0;
    int64_t first = 0, task = 0;
    while (!rc && !hx_reader_full(&r)) {
        char *s;
        size_t n;
        if (!hx_lines_next(&L, &s, &n)) break;
        if (have == 0) first = L.line;
        ln[have] = s;
        len[have++] = n;
        if (have < HX_HS_LINES) continue;
        have = 0;
        int irc = hx_hellaswag_task(r.suite, ln, len, first, task++, msg);
        if (irc == QP_EFORMAT) rc = hx_reader_bad(&r, first, msg, err);
        else if (irc) rc = qp_fail(err, irc, "%s:%lld: %s", path, (long long)first, msg);
    }
    if (!rc && have > 0) { // a partial task at the end, unless it is only blank lines
        int blank = 1;
        for (int k = 0; k < have; k++) blank &= hx_blank(ln[k], len[k]);
        if (!blank) {
            snprintf(msg, sizeof msg, "the last task has %d of %d lines", have, HX_HS_LINES);
            rc = hx_reader_bad(&r, first, msg, err);
        }
    }
    hx_lines_close(&L);
    return hx_reader_finish(&r, rc, out, err);
}

// ---------------------------------------------------------------------------------------------
// PIQA (lm-eval piqa: "Question: {{goal}}\nAnswer:", choices [sol1, sol2], gold = label)

static int hx_piqa_item(struct hx_reader *r, const cJSON *obj, int64_t line, char *msg) {
    const char *goal, *s1, *s2;
    int rc;
    if ((rc = hx_get_str(obj, "goal", &goal, msg)) || (rc = hx_get_str(obj, "sol1", &s1, msg)) ||
        (rc = hx_get_str(obj, "sol2", &s2, msg)))
        return rc;
    if (r->record >= r->n_labels)
        return qp_fail(msg, QP_EFORMAT, "no label: '%s' has only %lld", r->labels_path, (long long)r->n_labels);
    int gold = r->labels[r->record];
    if (gold < 0)
        return qp_fail(msg, QP_EFORMAT, "its label ('%s' line %lld) is not 0 or 1", r->labels_path,
                       (long long)r->label_lines[r->record]);
    if (!s1[0] || !s2[0]) return qp_fail(msg, QP_EFORMAT, "an empty solution");
    char *ctx = hx_fmt("Question: %s\nAnswer:", goal);
    char *ch[2] = {hx_fmt(" %s", s1), hx_fmt(" %s", s2)};
    char id[64];
    snprintf(id, sizeof id, "piqa:%lld", (long long)line);
    rc = ctx && ch[0] && ch[1] ? hx_add_rc(task_suite_add_mc(r->suite, id, ctx, (const char *const *)ch, 2, gold, line, msg))
                               : qp_fail(msg, QP_ENOMEM, "out of memory");
    free(ctx), free(ch[0]), free(ch[1]);
    return rc;
}

int hx_task_read_piqa(const char *path, const char *labels_path, const struct hx_task_read_opts *o,
                      struct task_suite **out, char *err) {
    *out = NULL;
    struct hx_reader r;
    int rc = hx_reader_init(&r, path, o, "piqa", TASK_MC, err);
    if (rc) return rc;
    struct hx_lines L;
    if ((rc = hx_lines_open(labels_path, &L, err))) return hx_reader_finish(&r, rc, out, err);
    int *labels = NULL;
    int64_t *lines = NULL, n = 0, cap = 0;
    char *s;
    size_t len;
    while (!rc && hx_lines_next(&L, &s, &len)) {
        if (hx_blank(s, len)) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 4096;
            int *nl = realloc(labels, (size_t)cap * sizeof *nl);
            if (nl) labels = nl;
            int64_t *nn = realloc(lines, (size_t)cap * sizeof *nn);
            if (nn) lines = nn;
            if (!nl || !nn) rc = qp_fail(err, QP_ENOMEM, "out of memory");
            if (rc) break;
        }
        const char *v = memchr(s, 0, len) ? "" : hx_trim(s);
        labels[n] = (v[0] == '0' || v[0] == '1') && v[1] == 0 ? v[0] - '0' : -1;
        lines[n++] = L.line;
    }
    hx_lines_close(&L);
    if (!rc) {
        r.labels = labels;
        r.label_lines = lines;
        r.n_labels = n;
        r.labels_path = labels_path;
        rc = hx_jsonl_each(&r, hx_piqa_item, err);
        if (!rc && !hx_reader_full(&r) && r.record < n)
            rc = qp_fail(err, QP_EFORMAT, "'%s' has %lld labels but '%s' only %lld records", labels_path, (long long)n,
                         path, (long long)r.record);
    }
    free(labels);
    free(lines);
    return hx_reader_finish(&r, rc, out, err);
}

// ---------------------------------------------------------------------------------------------
// ARC (lm-eval arc_easy: "Question: {{question}}\nAnswer:", choices = choices.text,
// gold = choices.label.index(answerKey))

// A label or answer key: a string, or an integer written as one.
static int hx_label(const cJSON *v, char *buf, size_t cap) {
    int iv;
    if (cJSON_IsString(v) && v->valuestring) snprintf(buf, cap, "%s", v->valuestring);
    else if (v && !hx_json_int(v, &iv)) snprintf(buf, cap, "%d", iv);
    else return -1;
    return 0;
}

static int hx_arc_item(struct hx_reader *r, const cJSON *obj, int64_t line, char *msg) {
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(obj, "question");
    if (!cJSON_IsObject(q)) return qp_fail(msg, QP_EFORMAT, q ? "\"question\" is not an object" : "missing \"question\"");
    const char *stem;
    int rc = hx_get_str(q, "stem", &stem, msg);
    if (rc) return rc;
    const cJSON *chs = cJSON_GetObjectItemCaseSensitive(q, "choices");
    if (!cJSON_IsArray(chs)) return qp_fail(msg, QP_EFORMAT, "\"question.choices\" is missing or not an array");
    char key[64];
    if (hx_label(cJSON_GetObjectItemCaseSensitive(obj, "answerKey"), key, sizeof key))
        return qp_fail(msg, QP_EFORMAT, "\"answerKey\" is missing or not a string");
    int n = cJSON_GetArraySize(chs), gold = -1, j = 0;
    if (n < 2) return qp_fail(msg, QP_EFORMAT, "%d choices: at least 2 are needed", n);
    char **ch = calloc((size_t)n, sizeof *ch);
    if (!ch) return qp_fail(msg, QP_ENOMEM, "out of memory");
    const cJSON *c;
    cJSON_ArrayForEach(c, chs) {
        const char *text;
        char lab[64];
        if (!cJSON_IsObject(c)) rc = qp_fail(msg, QP_EFORMAT, "choice %d is not an object", j);
        else if (hx_get_str(c, "text", &text, msg)) rc = QP_EFORMAT;
        else if (hx_label(cJSON_GetObjectItemCaseSensitive(c, "label"), lab, sizeof lab))
            rc = qp_fail(msg, QP_EFORMAT, "choice %d has no string \"label\"", j);
        else if (!(ch[j] = hx_fmt(" %s", text))) rc = qp_fail(msg, QP_ENOMEM, "out of memory");
        else if (gold < 0 && strcmp(lab, key) == 0) gold = j;
        if (rc) break;
        j++;
    }
    if (!rc && gold < 0) rc = qp_fail(msg, QP_EFORMAT, "answerKey '%s' is not among the choice labels", key);
    char *ctx = rc ? NULL : hx_fmt("Question: %s\nAnswer:", stem);
    if (!rc && !ctx) rc = qp_fail(msg, QP_ENOMEM, "out of memory");
    char idbuf[64];
    const char *id = NULL;
    if (!rc && hx_get_str(obj, "id", &id, msg)) {
        snprintf(idbuf, sizeof idbuf, "arc:%lld", (long long)line);
        id = idbuf;
    }
    if (!rc) rc = hx_add_rc(task_suite_add_mc(r->suite, id, ctx, (const char *const *)ch, n, gold, line, msg));
    free(ctx);
    for (int k = 0; k < n; k++) free(ch[k]);
    free(ch);
    return rc;
}

int hx_task_read_arc(const char *path, const struct hx_task_read_opts *o, struct task_suite **out,
                     char *err) {
    *out = NULL;
    struct hx_reader r;
    int rc = hx_reader_init(&r, path, o, "arc-easy", TASK_MC, err);
    if (!rc) rc = hx_jsonl_each(&r, hx_arc_item, err);
    return hx_reader_finish(&r, rc, out, err);
}

// ---------------------------------------------------------------------------------------------
// BoolQ (lm-eval super_glue boolq: "{{passage}}\nQuestion: {{question}}?\nAnswer:",
// choices ["no", "yes"], gold = label)

static int hx_boolq_item(struct hx_reader *r, const cJSON *obj, int64_t line, char *msg) {
    const char *passage, *question;
    int rc;
    if ((rc = hx_get_str(obj, "passage", &passage, msg)) || (rc = hx_get_str(obj, "question", &question, msg)))
        return rc;
    const cJSON *lab = cJSON_GetObjectItemCaseSensitive(obj, "label");
    int gold = -1, iv;
    if (cJSON_IsBool(lab)) gold = cJSON_IsTrue(lab) ? 1 : 0;
    else if (cJSON_IsString(lab) && lab->valuestring && !strcmp(lab->valuestring, "true")) gold = 1;
    else if (cJSON_IsString(lab) && lab->valuestring && !strcmp(lab->valuestring, "false")) gold = 0;
    else if (lab && !hx_json_int(lab, &iv) && (iv == 0 || iv == 1)) gold = iv;
    if (gold < 0)
        return qp_fail(msg, QP_EFORMAT, lab ? "\"label\" is not true/false or 0/1" : "missing \"label\"");
    char *ctx = hx_fmt("%s\nQuestion: %s?\nAnswer:", passage, question);
    static const char *const yn[2] = {" no", " yes"};
    char id[64];
    snprintf(id, sizeof id, "boolq:%lld", (long long)line);
    rc = ctx ? hx_add_rc(task_suite_add_mc(r->suite, id, ctx, yn, 2, gold, line, msg))
             : qp_fail(msg, QP_ENOMEM, "out of memory");
    free(ctx);
    return rc;
}

int hx_task_read_boolq(const char *path, const struct hx_task_read_opts *o, struct task_suite **out,
                       char *err) {
    *out = NULL;
    struct hx_reader r;
    int rc = hx_reader_init(&r, path, o, "boolq", TASK_MC, err);
    if (!rc) rc = hx_jsonl_each(&r, hx_boolq_item, err);
    return hx_reader_finish(&r, rc, out, err);
}

// ---------------------------------------------------------------------------------------------
// --suite

const char *hx_task_fixtures(const char *opt) {
    if (opt && *opt) return opt;
    const char *env = getenv("QPROBE_FIXTURES");
    return env && *env ? env : "../shared/fixtures";
}

static const struct {
    const char *name, *file, *labels;
} hx_datasets[] = {
    {"lambada", "data/lambada_openai/lambada_test.jsonl", NULL},
    {"hellaswag", "data/hellaswag/hellaswag_val_full.txt", NULL},
    {"piqa", "data/piqa/valid.jsonl", "data/piqa/valid-labels.lst"},
    {"arc-easy", "data/arc_easy/ARC-Easy-Test.jsonl", NULL},
    {"boolq", "data/boolq/val.jsonl", NULL},
};

#define HX_TINYSTORIES "data/tinystories/tinystories_val.txt"

// "NAME-greedy": the cloze suite NAME (built-in or dataset) in its greedy form (task_gen.h),
// named NAME-greedy.
static int hx_task_open_greedy(const char *suite, const char *fixtures, const struct hx_task_read_opts *o,
                               struct task_suite **out, char *err) {
    size_t n = strlen(suite) - strlen("-greedy");
    char base[256];
    if (n >= sizeof base) return qp_fail(err, QP_EINVAL, "suite name '%s' is too long", suite);
    memcpy(base, suite, n);
    base[n] = 0;
    int rc = hx_task_open(base, fixtures, o, out, err);
    if (rc) return rc;
    char *name = strdup(suite);
    if (!name || (*out)->kind != TASK_CLOZE) {
        free(name);
        rc = name ? qp_fail(err, QP_EINVAL, "suite '%s': '%s' is %s, not cloze: it has no greedy form", suite, base,
                            task_kind_name((*out)->kind))
                  : qp_fail(err, QP_ENOMEM, "out of memory");
        task_suite_destroy(*out);
        *out = NULL;
        return rc;
    }
    free((*out)->name);
    (*out)->name = name;
    (*out)->generate = 1;
    return 0;
}

int hx_task_open(const char *suite, const char *fixtures, const struct hx_task_read_opts *o,
                 struct task_suite **out, char *err) {
    static const struct hx_task_read_opts none = {0};
    size_t sl = strlen(suite);
    if (sl > 7 && strcmp(suite + sl - 7, "-greedy") == 0 && access(suite, F_OK) != 0)
        return hx_task_open_greedy(suite, fixtures, o, out, err);
    *out = NULL;
    if (!o) o = &none;
    fixtures = hx_task_fixtures(fixtures);
    char path[4096], labels[4096];
    if (task_builtin_is(suite)) {
        snprintf(path, sizeof path, "%s/%s", fixtures, HX_TINYSTORIES);
        char *text;
        size_t len;
        int rc = hx_read_text(path, &text, &len, err);
        if (rc) return rc;
        rc = task_builtin_create(suite, text, len, out, err);
        free(text);
        if (rc) {
            char inner[QP_ERRLEN];
            snprintf(inner, sizeof inner, "%s", err ? err : "");
            return qp_fail(err, rc, "cannot build '%s' from '%s': %s", suite, path, inner);
        }
        if (o->limit > 0) task_suite_truncate(*out, o->limit);
        return 0;
    }
    for (size_t i = 0; i < QP_ARRAY_LEN(hx_datasets); i++) {
        if (strcmp(suite, hx_datasets[i].name)) continue;
        snprintf(path, sizeof path, "%s/%s", fixtures, hx_datasets[i].file);
        if (access(path, R_OK) != 0)
            return qp_fail(err, QP_ENOENT, "cannot read '%s' for suite '%s': %s (set --fixtures or QPROBE_FIXTURES)",
                           path, suite, strerror(errno));
        switch (i) {
        case 0: return hx_task_read_lambada(path, o, out, err);
        case 1: return hx_task_read_hellaswag(path, o, out, err);
        case 2:
            snprintf(labels, sizeof labels, "%s/%s", fixtures, hx_datasets[i].labels);
            return hx_task_read_piqa(path, labels, o, out, err);
        case 3: return hx_task_read_arc(path, o, out, err);
        default: return hx_task_read_boolq(path, o, out, err);
        }
    }
    if (access(suite, F_OK) != 0)
        return qp_fail(err, QP_ENOENT,
                       "'%s' is neither a built-in suite (tinystories-cloze, tinystories-nextsent), a dataset "
                       "(lambada, hellaswag, piqa, arc-easy, boolq) nor a file",
                       suite);
    return hx_task_read_jsonl(suite, o, out, err);
}
