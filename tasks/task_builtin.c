// task_builtin.c — built-in TinyStories suites (task_builtin.h); the construction is specified
// in docs/TASKS.md, section "Built-in suites", and this file follows it step by step.
// Depends on tasks/task.h and kernels/qp.h only.
#include "task_builtin.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qp.h"

// ---------------------------------------------------------------------------------------------
// Types

// A sentence: bytes [b, e) of the text, e just after its closing punctuation (and quotes).
// [word_b, word_e): its last word when the sentence is a cloze candidate, else (size_t)-1.
struct tb_sent {
    size_t b, e, word_b, word_e;
    int para; // index of its paragraph
};

// A paragraph: bytes [b, e) (trimmed), holding sentences s0 .. s0 + ns - 1.
struct tb_para {
    size_t b, e;
    int s0, ns;
};

struct tb_text {
    const char *t;
    size_t len;
    struct tb_para *paras;
    int n_paras, cap_paras;
    struct tb_sent *sents;
    int n_sents, cap_sents;
};

// Seeds of the splitmix64 streams ("cloze", "nextsent", "distract" in ASCII).
#define TB_SEED_CLOZE 0x636c6f7a65ULL
#define TB_SEED_NEXT 0x6e65787473656e74ULL
#define TB_SEED_DISTRACT 0x6469737472616374ULL
#define TB_N_DISTRACT 3
#define TB_MAX_DRAWS 1000   // per item, when looking for distractors (then the item is dropped)
#define TB_MIN_DISTANCE 3   // distractors come from paragraphs at least this far away
#define TB_LEN_NUM 11       // and are within a factor 11/10 of the true sentence's length
#define TB_LEN_DEN 10

static const char *const tb_names[] = {"tinystories-cloze", "tinystories-nextsent"};

// ---------------------------------------------------------------------------------------------
// Helpers

// splitmix64 (Steele, Lea, Flood 2014): state advances by the golden gamma, output mixed.
static uint64_t tb_rng(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static int tb_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }
static int tb_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static int tb_upper(char c) { return c >= 'A' && c <= 'Z'; }
static int tb_term(char c) { return c == '.' || c == '!' || c == '?'; }

// Length of a closing quote at p (", ', ), U+201D or U+2019), 0 if none.
static size_t tb_close_quote(const char *p, size_t left) {
    if (left >= 1 && (p[0] == '"' || p[0] == '\'' || p[0] == ')')) return 1;
    if (left >= 3 && (unsigned char)p[0] == 0xe2 && (unsigned char)p[1] == 0x80 &&
        ((unsigned char)p[2] == 0x9d || (unsigned char)p[2] == 0x99))
        return 3;
    return 0;
}

// 1 when a sentence may start at p: an ASCII capital, '"' or U+201C.
static int tb_opener(const char *p, size_t left) {
    if (left >= 1 && (tb_upper(p[0]) || p[0] == '"')) return 1;
    return left >= 3 && (unsigned char)p[0] == 0xe2 && (unsigned char)p[1] == 0x80 && (unsigned char)p[2] == 0x9c;
}

// 1 when the word ending just before position i is an abbreviation that takes a period.
static int tb_abbrev(const char *t, size_t s, size_t i) {
    static const char *const abbr[] = {"Mr", "Mrs", "Ms", "Dr", "St", "Mt"};
    size_t b = i;
    while (b > s && tb_alpha(t[b - 1])) b--;
    if (b > s && !tb_space(t[b - 1])) return 0;
    for (size_t k = 0; k < QP_ARRAY_LEN(abbr); k++)
        if (strlen(abbr[k]) == i - b && memcmp(t + b, abbr[k], i - b) == 0) return 1;
    return 0;
}

static int tb_push_sent(struct tb_text *x, struct tb_sent s) {
    if (x->n_sents == x->cap_sents) {
        int cap = x->cap_sents ? x->cap_sents * 2 : 1024;
        struct tb_sent *n = realloc(x->sents, (size_t)cap * sizeof *n);
        if (!n) return QP_ENOMEM;
        x->sents = n;
        x->cap_sents = cap;
    }
    x->sents[x->n_sents++] = s;
    return 0;
}

static int tb_push_para(struct tb_text *x, struct tb_para p) {
    if (x->n_paras == x->cap_paras) {
        int cap = x->cap_paras ? x->cap_paras * 2 : 256;
        struct tb_para *n = realloc(x->paras, (size_t)cap * sizeof *n);
        if (!n) return QP_ENOMEM;
        x->paras = n;
        x->cap_paras = cap;
    }
    x->paras[x->n_paras++] = p;
    return 0;
}

// The cloze candidate of sentence [s, e) whose terminal punctuation starts at i: its last word
// is ASCII letters only, directly before a single '.', '!' or '?', preceded by exactly one space
// after a non-space character (so it is not the sentence's first word).
static void tb_cloze_word(const char *t, size_t s, size_t i, size_t e, struct tb_sent *out) {
    out->word_b = out->word_e = (size_t)-1;
    if (i + 1 < e && tb_term(t[i + 1])) return; // "...", "?!"
    size_t wb = i;
    while (wb > s && tb_alpha(t[wb - 1])) wb--;
    if (wb == i || wb < s + 2 || t[wb - 1] != ' ' || tb_space(t[wb - 2])) return;
    out->word_b = wb;
    out->word_e = i;
}

// Splits paragraph [pb, pe) into sentences (docs/TASKS.md): a sentence ends after a run of
// '.', '!', '?' and closing quotes that is followed by the paragraph end, or by whitespace and
// then a capital or an opening quote — unless the run is one '.' after Mr/Mrs/Ms/Dr/St/Mt.
// Text after the last such end is not a sentence.
static int tb_split(struct tb_text *x, size_t pb, size_t pe) {
    const char *t = x->t;
    struct tb_para p = {pb, pe, x->n_sents, 0};
    size_t s = pb;
    for (size_t i = pb; i < pe;) {
        if (!tb_term(t[i])) {
            i++;
            continue;
        }
        size_t j = i;
        while (j < pe && tb_term(t[j])) j++;
        int single_dot = j == i + 1 && t[i] == '.';
        size_t q;
        while (j < pe && (q = tb_close_quote(t + j, pe - j)) > 0) j += q;
        size_t k = j;
        int end = 0;
        if (j == pe) {
            end = 1;
        } else if (tb_space(t[j])) {
            while (k < pe && tb_space(t[k])) k++;
            end = k == pe || (tb_opener(t + k, pe - k) && !(single_dot && tb_abbrev(t, s, i)));
        }
        if (!end) {
            i = j > i ? j : i + 1;
            continue;
        }
        struct tb_sent se = {s, j, 0, 0, x->n_paras};
        tb_cloze_word(t, s, i, j, &se);
        if (tb_push_sent(x, se)) return QP_ENOMEM;
        p.ns++;
        s = i = k;
    }
    return tb_push_para(x, p);
}

// Paragraphs: maximal runs of lines holding a non-whitespace character, trimmed.
static int tb_parse(struct tb_text *x) {
    const char *t = x->t;
    size_t len = x->len, pos = 0;
    while (pos < len) {
        // skip blank lines
        size_t line = pos;
        while (line < len) {
            size_t e = line;
            int blank = 1;
            while (e < len && t[e] != '\n') blank &= tb_space(t[e]), e++;
            if (!blank) break;
            line = e < len ? e + 1 : len;
        }
        if (line >= len) break;
        size_t pe = line;
        for (;;) { // extend over non-blank lines
            size_t e = pe;
            while (e < len && t[e] != '\n') e++;
            pe = e;
            if (e >= len) break;
            size_t n = e + 1, f = n;
            int blank = 1;
            while (f < len && t[f] != '\n') blank &= tb_space(t[f]), f++;
            if (blank || n >= len) break;
            pe = n;
        }
        size_t b = line, e = pe;
        while (b < e && tb_space(t[b])) b++;
        while (e > b && tb_space(t[e - 1])) e--;
        if (e > b && tb_split(x, b, e)) return QP_ENOMEM;
        pos = pe;
    }
    return 0;
}

static void tb_free(struct tb_text *x) {
    free(x->paras);
    free(x->sents);
}

// A NUL-terminated copy of t[b, e) with prefix prepended (may be ""). NULL on failure.
static char *tb_slice(const char *prefix, const char *t, size_t b, size_t e) {
    size_t pl = strlen(prefix);
    char *s = malloc(pl + (e - b) + 1);
    if (!s) return NULL;
    memcpy(s, prefix, pl);
    memcpy(s + pl, t + b, e - b);
    s[pl + e - b] = 0;
    return s;
}

// ---------------------------------------------------------------------------------------------
// The two suites

// The paragraph an item's context starts at: the one before the item's own (the file has no
// story boundaries; the previous paragraph is usually the same story), or the first.
static int tb_ctx_para(int p) { return p > 0 ? p - 1 : 0; }

static int tb_cloze(const struct tb_text *x, int n_items, struct task_suite *s, char *err) {
    uint64_t rng = TB_SEED_CLOZE;
    int *pick = malloc((size_t)QP_MAX(n_items, 1) * sizeof *pick); // sentence index per item
    int *cand = malloc((size_t)QP_MAX(x->n_sents, 1) * sizeof *cand);
    int n = 0;
    if (!pick || !cand) {
        free(pick), free(cand);
        return qp_fail(err, QP_ENOMEM, "out of memory");
    }
    for (int p = x->n_paras - 1; p >= 0 && n < n_items; p--) {
        int nc = 0;
        for (int k = 0; k < x->paras[p].ns; k++)
            if (x->sents[x->paras[p].s0 + k].word_b != (size_t)-1) cand[nc++] = x->paras[p].s0 + k;
        if (nc) pick[n++] = cand[tb_rng(&rng) % (uint64_t)nc];
    }
    int rc = 0;
    for (int i = n - 1; i >= 0 && !rc; i--) { // file order
        const struct tb_sent *se = &x->sents[pick[i]];
        char id[64];
        snprintf(id, sizeof id, "%s@%zu", tb_names[0], se->word_b);
        char *ctx = tb_slice("", x->t, x->paras[tb_ctx_para(se->para)].b, se->word_b - 1);
        char *tgt = tb_slice(" ", x->t, se->word_b, se->word_e);
        rc = ctx && tgt ? task_suite_add_cloze(s, id, ctx, tgt, 0, err) : qp_fail(err, QP_ENOMEM, "out of memory");
        free(ctx), free(tgt);
    }
    if (n > 0) {
        s->src_begin = x->paras[tb_ctx_para(x->sents[pick[n - 1]].para)].b;
        s->src_end = x->len;
    }
    free(pick), free(cand);
    return rc;
}

// 1 when sentences a and b have the same bytes.
static int tb_same(const struct tb_text *x, int a, int b) {
    const struct tb_sent *p = &x->sents[a], *q = &x->sents[b];
    return p->e - p->b == q->e - q->b && memcmp(x->t + p->b, x->t + q->b, p->e - p->b) == 0;
}

// 1 when sentence c may stand as a distractor for the true sentence `truth`: not the first
// sentence of its paragraph (the truth never is), from a paragraph at least TB_MIN_DISTANCE
// away, within a factor 11/10 of the truth's length in bytes (so that the raw log-likelihood
// is not decided by length), and with different text.
static int tb_distractor_ok(const struct tb_text *x, int c, int truth) {
    const struct tb_sent *sc = &x->sents[c], *st = &x->sents[truth];
    size_t lc = sc->e - sc->b, lt = st->e - st->b;
    return c != x->paras[sc->para].s0 && abs(sc->para - st->para) >= TB_MIN_DISTANCE &&
           lc * TB_LEN_DEN <= lt * TB_LEN_NUM && lc * TB_LEN_NUM >= lt * TB_LEN_DEN && !tb_same(x, c, truth);
}

static int tb_nextsent(const struct tb_text *x, int n_items, struct task_suite *s, char *err) {
    uint64_t rng = TB_SEED_NEXT, drng = TB_SEED_DISTRACT;
    int *truths = malloc((size_t)QP_MAX(n_items, 1) * sizeof *truths); // true next sentence per item
    int n = 0;
    if (!truths) return qp_fail(err, QP_ENOMEM, "out of memory");
    for (int p = x->n_paras - 1; p >= 0 && n < n_items; p--)
        if (x->paras[p].ns >= 2) truths[n++] = x->paras[p].s0 + 1 + (int)(tb_rng(&rng) % (uint64_t)(x->paras[p].ns - 1));
    int rc = 0;
    if (n > 0) {
        int region = tb_ctx_para(x->sents[truths[n - 1]].para);
        // The pool: every sentence of the paragraphs from the region's first on.
        int pool0 = x->paras[region].s0, pool_n = x->n_sents - pool0;
        for (int i = n - 1; i >= 0 && !rc; i--) { // file order
            int truth = truths[i], d[TB_N_DISTRACT], nd = 0;
            for (int draw = 0; draw < TB_MAX_DRAWS && nd < TB_N_DISTRACT; draw++) {
                int c = pool0 + (int)(tb_rng(&drng) % (uint64_t)pool_n);
                int ok = tb_distractor_ok(x, c, truth);
                for (int k = 0; ok && k < nd; k++) ok = !tb_same(x, c, d[k]);
                if (ok) d[nd++] = c;
            }
            if (nd < TB_N_DISTRACT) continue; // no item: too few sentences of a similar length
            int gold = (int)(tb_rng(&drng) % (TB_N_DISTRACT + 1));
            char *ch[TB_N_DISTRACT + 1] = {0};
            int ok = 1;
            for (int j = 0, k = 0; j <= TB_N_DISTRACT; j++) {
                const struct tb_sent *se = &x->sents[j == gold ? truth : d[k++]];
                ok &= (ch[j] = tb_slice(" ", x->t, se->b, se->e)) != NULL;
            }
            char id[64];
            snprintf(id, sizeof id, "%s@%zu", tb_names[1], x->sents[truth].b);
            char *ctx = tb_slice("", x->t, x->paras[tb_ctx_para(x->sents[truth].para)].b, x->sents[truth - 1].e);
            rc = ok && ctx ? task_suite_add_mc(s, id, ctx, (const char *const *)ch, TB_N_DISTRACT + 1, gold, 0, err)
                           : qp_fail(err, QP_ENOMEM, "out of memory");
            free(ctx);
            for (int j = 0; j <= TB_N_DISTRACT; j++) free(ch[j]);
        }
        s->src_begin = x->paras[region].b;
        s->src_end = x->len;
    }
    free(truths);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// Public

int task_builtin_count(void) { return (int)QP_ARRAY_LEN(tb_names); }

const char *task_builtin_name(int i) {
    return i >= 0 && i < task_builtin_count() ? tb_names[i] : NULL;
}

int task_builtin_is(const char *name) {
    for (int i = 0; i < task_builtin_count(); i++)
        if (strcmp(name, tb_names[i]) == 0) return 1;
    return 0;
}

int task_builtin_create(const char *name, const char *text, size_t len, struct task_suite **out,
                        char *err) {
    *out = NULL;
    int which = -1;
    for (int i = 0; i < task_builtin_count(); i++)
        if (strcmp(name, tb_names[i]) == 0) which = i;
    if (which < 0) return qp_fail(err, QP_ENOENT, "'%s' is not a built-in suite", name);
    if (memchr(text, 0, len)) return qp_fail(err, QP_EFORMAT, "the text contains NUL bytes");
    int n_items = TASK_BUILTIN_ITEMS;
    struct tb_text x = {.t = text, .len = len};
    if (tb_parse(&x)) {
        tb_free(&x);
        return qp_fail(err, QP_ENOMEM, "out of memory");
    }
    struct task_suite *s;
    if (task_suite_create(name, which == 0 ? TASK_CLOZE : TASK_MC, &s)) {
        tb_free(&x);
        return qp_fail(err, QP_ENOMEM, "out of memory");
    }
    int rc = which == 0 ? tb_cloze(&x, n_items, s, err) : tb_nextsent(&x, n_items, s, err);
    tb_free(&x);
    if (!rc && s->n_items == 0)
        rc = qp_fail(err, QP_EFORMAT, "the text (%zu bytes, %d paragraphs) yields no item for '%s'", len,
                     x.n_paras, name);
    if (rc) {
        task_suite_destroy(s);
        return rc;
    }
    *out = s;
    return 0;
}

int task_builtin_range(const char *text, size_t len, size_t *begin, size_t *end, char *err) {
    *begin = *end = len;
    for (int i = 0; i < task_builtin_count(); i++) {
        struct task_suite *s;
        int rc = task_builtin_create(tb_names[i], text, len, &s, err);
        if (rc) return rc;
        if (s->src_begin < *begin) *begin = s->src_begin;
        task_suite_destroy(s);
    }
    return 0;
}
