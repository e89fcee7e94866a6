// hx_tok_pre.c — pre-tokenizer expressions for byte-level BPE, compiled with PCRE2 (see
// hx_tok_pre.h for the splitting semantics).
//
// The named sets are llama.cpp's (src/llama-vocab.cpp, llm_tokenizer_bpe, at the golden commit):
// the expressions are reproduced as facts, the code is ours. llama.cpp runs most of them through
// std::regex over a text whose non-ASCII code points are collapsed to one byte per Unicode
// category, and two (gpt-2, llama3) through hand-written matchers; PCRE2 in UCP mode matches the
// categories directly, which is what those stand-ins emulate. The test vectors of every
// vocabulary in the fixtures agree (tests/test_tok_bpe.c).
//
// Compile options: PCRE2_UTF | PCRE2_UCP (\p{L}, \s and \d by Unicode properties),
// PCRE2_MATCH_INVALID_UTF (invalid bytes never match instead of failing the match),
// PCRE2_DOLLAR_ENDONLY ("$" only at the end of the piece, as std::regex and Hugging Face).
// Depends on kernels/qp.h and PCRE2.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "hx_tok_pre.h"

#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qp.h"

// ---------------------------------------------------------------------------------------------
// Types

#define HX_PRE_MAX_EXPR 8

struct hx_pre {
    int n;
    pcre2_code *code[HX_PRE_MAX_EXPR];
    char *src[HX_PRE_MAX_EXPR];
    int jit[HX_PRE_MAX_EXPR]; // 1 when JIT-compiled
};

struct hx_pre_scratch {
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *stack;
    struct hx_span *a, *b; // ping-pong span arrays
    size_t cap;
};

// ---------------------------------------------------------------------------------------------
// llama.cpp's named expression sets

// GPT-2's expression without the final "|\s+" (llama.cpp's form; the text it leaves unmatched
// becomes a piece anyway, so the pieces are the same).
#define RX_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
// Llama 3's expression with the case-insensitive group spelled out, as llama.cpp adapts it.
#define RX_LLAMA3_HEAD "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
#define RX_LLAMA3_TAIL "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RX_LLAMA3 RX_LLAMA3_HEAD "\\p{N}{1,3}" RX_LLAMA3_TAIL
#define RX_QWEN2 RX_LLAMA3_HEAD "\\p{N}" RX_LLAMA3_TAIL
#define RX_BLOOM " ?[^(\\s|.,!?\u2026\u3002\uff0c\u3001\u0964\u06d4\u060c)]+"

struct pre_set {
    const char *names; // the tokenizer.ggml.pre values, NUL-separated, ending with an empty one
    int ignore_merges; // llama.cpp's ignore_merges for these names
    int add_bos;       // llama.cpp's default add_bos (the GGUF key overrides it)
    const char *expr[6];
};

static const struct pre_set pre_sets[] = {
    {"default\0", 0, 0,
     {"[\\p{P}\\$\\+<=>\\^~\\|]+", RX_GPT2, "\\p{N}+", "[0-9][0-9][0-9]"}},
    {"llama3\0llama-v3\0llama-bpe\0falcon3\0", 1, 1, {RX_LLAMA3}},
    {"dbrx\0smaug-bpe\0", 0, 0, {RX_LLAMA3}},
    {"deepseek-llm\0", 0, 0,
     {"[\r\n]",
      "\\s?[A-Za-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u01bc-\u01bf\u01c4-\u0293\u0295-\u02af\u0370-\u0373\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c\u038e-\u03a1\u03a3-\u03f5\u03f7-\u0481\u048a-\u052f\u0531-\u0556\u10a0-\u10c5\u13a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba\u1cbd-\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45\u1f48-\u1f4d\u1f50-\u1f57\u1f59\u1f5b\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe\u1fc2-\u1fc4\u1fc6-\u1fcc\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc\u2102\u2107\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134\u2139\u213c-\u213f\u2145-\u2149\u214e\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee\u2cf2\u2cf3\ua640-\ua66d\ua680-\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf\ufb00-\ufb06\ufb13-\ufb17\uff21-\uff3a\uff41-\uff5a\U00010400-\U0001044f\U000104b0-\U000104d3\U000104d8-\U000104fb\U00010c80-\U00010cb2\U00010cc0-\U00010cf2\U000118a0-\U000118df\U0001e900-\U0001e943]+",
      "\\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+", "\\s+$", "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+", "\\p{N}+"}},
    {"deepseek-v3\0", 0, 0,
     {"\\p{N}{1,3}", "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+",
      "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| "
      "?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"}},
    {"deepseek-coder\0", 0, 0, {"[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+", "\\p{N}"}},
    {"falcon\0", 0, 0, {"[\\p{P}\\$\\+<=>\\^~\\|`]+", RX_GPT2, "[0-9][0-9][0-9]"}},
    {"starcoder\0refact\0command-r\0smollm\0codeshell\0exaone\0minerva-7b\0", 0, 0, {"\\p{N}", RX_GPT2}},
    {"gpt-2\0phi-2\0jina-es\0jina-de\0gigachat\0jina-v1-en\0jina-v2-es\0jina-v2-de\0jina-v2-code\0"
     "roberta-bpe\0mpt\0olmo\0jais\0",
     0, 0, {RX_GPT2}},
    {"qwen2\0deepseek-r1-qwen\0megrez\0stablelm2\0", 0, 0, {RX_QWEN2}},
    {"poro-chat\0bloom\0gpt3-finnish\0", 0, 0, {RX_BLOOM}},
    {"chatglm-bpe\0", 0, 0, {RX_LLAMA3}},
    {"viking\0", 0, 0, {RX_BLOOM, "\\p{N}"}},
    {"tekken\0", 1, 1,
     {"[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+"
      "((?=[\\p{L}])([^A-Z]))*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}},
    {"chameleon\0", 0, 1,
     {"<sentinel:[0-9]+>", "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z", "([\\t\\n]|    |  )", "\\p{N}",
      "[\\p{P}!-/:-@\\[-`{-~]", RX_GPT2}},
};

const char *hx_pre_known_names(void) {
    static char list[1024];
    if (list[0]) return list;
    size_t w = 0;
    for (size_t i = 0; i < QP_ARRAY_LEN(pre_sets); i++)
        for (const char *s = pre_sets[i].names; *s; s += strlen(s) + 1)
            w += (size_t)snprintf(list + w, sizeof list - w, "%s%s", w ? ", " : "", s);
    return list;
}

// ---------------------------------------------------------------------------------------------
// Compiling

int hx_pre_create(struct hx_pre **out) {
    *out = calloc(1, sizeof **out);
    return *out ? 0 : QP_ENOMEM;
}

int hx_pre_add(struct hx_pre *p, const char *pattern, size_t len, int literal, char *err) {
    if (p->n == HX_PRE_MAX_EXPR)
        return qp_fail(err, QP_ENOTSUP, "more than %d pre-tokenizer expressions", HX_PRE_MAX_EXPR);
    uint32_t opts = PCRE2_UTF | PCRE2_MATCH_INVALID_UTF;
    opts |= literal ? PCRE2_LITERAL : PCRE2_UCP | PCRE2_DOLLAR_ENDONLY;
    int code;
    PCRE2_SIZE at;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, len, opts, &code, &at, NULL);
    if (!re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(code, msg, sizeof msg);
        return qp_fail(err, QP_EFORMAT, "pre-tokenizer expression '%.*s' does not compile: %s at offset %zu",
                       (int)QP_MIN(len, (size_t)200), pattern, (const char *)msg, (size_t)at);
    }
    char *src = malloc(len + 1);
    if (!src) {
        pcre2_code_free(re);
        return QP_ENOMEM;
    }
    memcpy(src, pattern, len);
    src[len] = '\0';
    p->code[p->n] = re;
    p->src[p->n] = src;
    // Without JIT (a platform PCRE2 lacks it for) the interpreter gives the same matches.
    p->jit[p->n] = pcre2_jit_compile(re, PCRE2_JIT_COMPLETE) == 0;
    p->n++;
    return 0;
}

int hx_pre_create_named(const char *name, struct hx_pre **out, int *ignore_merges, int *add_bos,
                        char *err) {
    *out = NULL;
    const struct pre_set *set = NULL;
    for (size_t i = 0; i < QP_ARRAY_LEN(pre_sets) && !set; i++)
        for (const char *s = pre_sets[i].names; *s && !set; s += strlen(s) + 1)
            if (strcmp(s, name) == 0) set = &pre_sets[i];
    if (!set)
        return qp_fail(err, QP_ENOTSUP, "pre-tokenizer '%.64s' is not known (known: %s)", name, hx_pre_known_names());
    struct hx_pre *p;
    if (hx_pre_create(&p)) return qp_fail(err, QP_ENOMEM, "out of memory");
    for (int i = 0; i < 6 && set->expr[i]; i++) {
        int rc = hx_pre_add(p, set->expr[i], strlen(set->expr[i]), 0, err);
        if (rc) {
            hx_pre_destroy(p);
            return rc;
        }
    }
    *ignore_merges = set->ignore_merges;
    *add_bos = set->add_bos;
    *out = p;
    return 0;
}

int hx_pre_count(const struct hx_pre *p) { return p->n; }

const char *hx_pre_pattern(const struct hx_pre *p, int i) {
    QP_ASSERT(i >= 0 && i < p->n);
    return p->src[i];
}

void hx_pre_destroy(struct hx_pre *p) {
    if (!p) return;
    for (int i = 0; i < p->n; i++) {
        pcre2_code_free(p->code[i]);
        free(p->src[i]);
    }
    free(p);
}

// ---------------------------------------------------------------------------------------------
// Splitting

struct hx_pre_scratch *hx_pre_scratch_create(const struct hx_pre *p) {
    struct hx_pre_scratch *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    int any_jit = 0;
    for (int i = 0; i < p->n; i++) any_jit |= p->jit[i];
    s->md = pcre2_match_data_create(1, NULL);
    s->mctx = pcre2_match_context_create(NULL);
    // A repeat over a long run (say 100 kB of spaces for "\s+(?!\S)") needs more than the
    // default 32 kB JIT stack; 8 MB of address space is reserved, touched only as used.
    if (any_jit) s->stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, NULL);
    if (!s->md || !s->mctx || (any_jit && !s->stack)) {
        hx_pre_scratch_destroy(s);
        return NULL;
    }
    if (s->stack) pcre2_jit_stack_assign(s->mctx, NULL, s->stack);
    return s;
}

void hx_pre_scratch_destroy(struct hx_pre_scratch *s) {
    if (!s) return;
    pcre2_match_data_free(s->md);
    pcre2_match_context_free(s->mctx);
    if (s->stack) pcre2_jit_stack_free(s->stack);
    free(s->a);
    free(s->b);
    free(s);
}

static int span_reserve(struct hx_pre_scratch *s, size_t need) {
    if (need <= s->cap) return 0;
    size_t cap = s->cap ? s->cap : 256;
    while (cap < need) cap *= 2;
    struct hx_span *a = realloc(s->a, cap * sizeof *a);
    if (!a) return QP_ENOMEM;
    s->a = a;
    struct hx_span *b = realloc(s->b, cap * sizeof *b);
    if (!b) return QP_ENOMEM;
    s->b = b;
    s->cap = cap;
    return 0;
}

// Length of the (possibly invalid) UTF-8 character at s[0..len): an empty match is stepped over
// by one character, as regex iterators do.
static size_t char_len(const unsigned char *s, size_t len) {
    size_t n = s[0] < 0xc0 ? 1 : s[0] < 0xe0 ? 2 : s[0] < 0xf0 ? 3 : 4;
    for (size_t k = 1; k < n; k++)
        if (k >= len || (s[k] & 0xc0) != 0x80) return k;
    return n;
}

// Cuts piece [start, start + len) of text with expression re, appending the pieces to s->b
// from *nb (room for 2 * len + 1 more is ensured by the caller).
static int split_piece(const struct hx_pre *p, int e, struct hx_pre_scratch *s, const char *text,
                       size_t start, size_t len, size_t *nb, char *err) {
    const unsigned char *subj = (const unsigned char *)text + start;
    size_t at = 0, gap = 0; // next search offset; start of the text not yet emitted
    while (at < len) {
        int rc = p->jit[e] ? pcre2_jit_match(p->code[e], subj, len, at, 0, s->md, s->mctx)
                           : pcre2_match(p->code[e], subj, len, at, 0, s->md, s->mctx);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return qp_fail(err, QP_EFORMAT, "pre-tokenizer expression '%.80s' failed: %s", p->src[e],
                           (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(s->md);
        size_t m0 = ov[0], m1 = ov[1];
        if (m1 == m0) { // an empty match emits nothing: search again one character on
            at = m0 + char_len(subj + m0, len - m0);
            continue;
        }
        if (m0 > gap) s->b[(*nb)++] = (struct hx_span){start + gap, m0 - gap};
        s->b[(*nb)++] = (struct hx_span){start + m0, m1 - m0};
        gap = at = m1;
    }
    if (gap < len) s->b[(*nb)++] = (struct hx_span){start + gap, len - gap};
    return 0;
}

int hx_pre_split(const struct hx_pre *p, struct hx_pre_scratch *s, const char *text, size_t len,
                 const struct hx_span **spans, size_t *n, char *err) {
    *spans = NULL;
    *n = 0;
    if (len == 0) return 0;
    // Pieces never outnumber the bytes: len spans suffice at every stage.
    if (span_reserve(s, len + 1)) return qp_fail(err, QP_ENOMEM, "out of memory");
    s->a[0] = (struct hx_span){0, len};
    size_t na = 1;
    for (int e = 0; e < p->n; e++) {
        size_t nb = 0;
        for (size_t i = 0; i < na; i++) {
            int rc = split_piece(p, e, s, text, s->a[i].start, s->a[i].len, &nb, err);
            if (rc) return rc;
        }
        struct hx_span *tmp = s->a;
        s->a = s->b;
        s->b = tmp;
        na = nb;
    }
    *spans = s->a;
    *n = na;
    return 0;
}
