// fuzz_prompts.c — fuzz target for the prompts file of the generation diagnostics
// (harness/run/hx_gen.c, hx_gen_prompts_read: `qprobe eval --prompts FILE`, the sweep
// configuration's generate.prompts_file): one prompt per non-blank line, or JSONL
// {"prompt": "..."} records. (`qprobe generate --prompt-file` reads one whole text: fuzz_text.)
//
// Input: the first byte chooses the options — bits 0-1 the number of prompts taken (all, 1, 2,
// 5), bits 2-3 the tokens generated L (0, 1, 8, 64), bits 4-5 the model's context (16, 64, 256,
// 512); the rest is the file. Prompts are encoded with the stories260K tokenizer (tok512.bin).
//
// Properties, from an independent reading of the file (lines split at '\n', one '\r' before it
// dropped, blank = only spaces and tabs, JSONL when the first non-blank line starts with '{'):
//  - refused: QP_EFORMAT and one line "FILE:LINE: ..." naming the file and a line that exists;
//  - accepted: as many prompts as non-blank lines (at most the number asked for); each line taken
//    holds no NUL and is valid UTF-8 (fuzz_utf8_ok, RFC 3629); a plain prompt's text is its line,
//    a JSONL line is one JSON value and nothing after it but spaces (as the task reader demands;
//    cJSON finds the value's end) and its prompt is valid UTF-8; where[] is the line number; the ids are
//    BOS then the encoding of the text (encoded again here: the same ids), all in the
//    vocabulary, and with L generated tokens they fit the context; source is "file:" and 12 hex
//    digits;
//  - plain files: accepted exactly when there is a prompt and every line taken is NUL-free UTF-8
//    whose encoding fits the context.
//
// Depends on harness/run/hx_gen.h, harness/io/hx_tokenizer.h, kernels/qp.h and fuzz.h.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "fuzz.h"
#include "hx_gen.h"
#include "hx_tokenizer.h"
#include "qp.h"

#define FP_VOCAB 512 // tok512.bin
#define FP_MAX_LINES 4096

static struct hx_tok *fp_tok; // loaded once, lives until the process ends

int fuzz_prompts_init(const char *root, char *err) {
    if (fp_tok) hx_tok_destroy(fp_tok);
    fp_tok = NULL;
    char path[FUZZ_PATH_MAX];
    snprintf(path, sizeof path, "%.4000s/models/llama2c/tok512.bin", root);
    return hx_tok_load_llama2c(path, FP_VOCAB, &fp_tok, err);
}

// One non-blank line of the file as this target reads it.
struct fp_line {
    const uint8_t *s;
    size_t n;
    long long number;
};

// The non-blank lines of data[0..size) (at most max), independently of hx_gen.c; *jsonl from
// the first one. Returns how many, and in *lines_total the number of lines in the file.
static int fp_lines(const uint8_t *data, size_t size, struct fp_line *out, int max, int *jsonl, long long *lines_total) {
    int n = 0;
    long long number = 0;
    *jsonl = -1;
    size_t pos = 0;
    while (pos < size) {
        const uint8_t *s = data + pos, *nl = memchr(s, '\n', size - pos);
        size_t len = nl ? (size_t)(nl - s) : size - pos;
        pos += len + (nl != NULL);
        number++;
        if (len > 0 && s[len - 1] == '\r') len--;
        size_t k = 0;
        while (k < len && (s[k] == ' ' || s[k] == '\t' || s[k] == '\v' || s[k] == '\f')) k++;
        if (k == len) continue;
        if (*jsonl < 0) *jsonl = s[k] == '{';
        if (n < max) out[n++] = (struct fp_line){s, len, number};
    }
    *lines_total = number;
    return n;
}

// 1 when a line's bytes are an acceptable prompt text: no NUL, valid UTF-8.
static int fp_text_ok(const uint8_t *s, size_t n) { return !memchr(s, 0, n) && fuzz_utf8_ok(s, n); }

// Tokens of text as the reader encodes it (BOS, space prefix when non-empty); -1 on failure.
static long long fp_encoded(const char *text, int **ids) {
    size_t n = 0;
    unsigned flags = HX_TOK_ADD_BOS | (*text ? HX_TOK_SPACE_PREFIX : 0);
    if (hx_tok_encode(fp_tok, text, strlen(text), flags, ids, &n)) return -1;
    return (long long)n;
}

static void fp_check_refusal(int rc, const char *err, const char *path, long long lines_total) {
    FUZZ_CHECK(rc == QP_EFORMAT, "code %d: %s", rc, err);
    FUZZ_CHECK(err[0] && !strchr(err, '\n'), "bad message '%s'", err);
    size_t pl = strlen(path);
    FUZZ_CHECK(strncmp(err, path, pl) == 0 && err[pl] == ':', "message does not start with the file: %s", err);
    long long line = strtoll(err + pl + 1, NULL, 10);
    FUZZ_CHECK(line >= 1 && line <= QP_MAX(lines_total, 1), "line %lld of a file of %lld lines: %s", line,
               lines_total, err);
}

// Checks prompt i of an accepted file against its line.
static void fp_check_prompt(const struct hx_gen_prompts *p, int i, const struct fp_line *ln, int jsonl, int ctx, int L) {
    FUZZ_CHECK(fp_text_ok(ln->s, ln->n), "line %lld taken with a NUL or bad UTF-8", ln->number);
    FUZZ_CHECK(p->where[i] == ln->number, "prompt %d from line %lld, not %lld", i, (long long)p->where[i],
               ln->number);
    const char *t = p->text[i];
    FUZZ_CHECK(t != NULL, "prompt %d has no text", i);
    if (!jsonl)
        FUZZ_CHECK(strlen(t) == ln->n && memcmp(t, ln->s, ln->n) == 0, "prompt %d is not line %lld", i, ln->number);
    else {
        FUZZ_CHECK(fuzz_utf8_ok((const uint8_t *)t, strlen(t)), "JSONL prompt %d is not valid UTF-8", i);
        const char *end = NULL;
        cJSON *v = cJSON_ParseWithLengthOpts((const char *)ln->s, ln->n, &end, 0);
        FUZZ_CHECK(v != NULL, "line %lld accepted but is no JSON", ln->number);
        cJSON_Delete(v);
        for (const char *q = end; q < (const char *)ln->s + ln->n; q++)
            FUZZ_CHECK(strchr(" \t\v\f\r", *q) && *q, "line %lld: text after the JSON value accepted", ln->number);
    }
    int *ids = NULL;
    long long n = fp_encoded(t, &ids);
    FUZZ_CHECK(n >= 1 && n == p->n_tok[i], "prompt %d: %d ids, encoded again %lld", i, p->n_tok[i], n);
    FUZZ_CHECK(memcmp(ids, p->tok[i], (size_t)n * sizeof(int)) == 0, "prompt %d: other ids when encoded again", i);
    FUZZ_CHECK(ids[0] == hx_tok_bos(fp_tok), "prompt %d does not start with BOS", i);
    for (long long j = 0; j < n; j++)
        FUZZ_CHECK(ids[j] >= 0 && ids[j] < FP_VOCAB, "prompt %d: id %d", i, ids[j]);
    FUZZ_CHECK(n + L <= ctx, "prompt %d: %lld ids + %d generated > context %d", i, n, L, ctx);
    free(ids);
}

// For a plain file: 1 when the reader must accept it (the lines it takes are good and fit).
static int fp_plain_ok(const struct fp_line *lines, int n, int ctx, int L) {
    if (n == 0) return 0;
    for (int i = 0; i < n; i++) {
        if (!fp_text_ok(lines[i].s, lines[i].n)) return 0;
        char *t = strndup((const char *)lines[i].s, lines[i].n);
        int *ids = NULL;
        long long k = t ? fp_encoded(t, &ids) : -1;
        free(ids), free(t);
        if (k < 1 || k + L > ctx) return 0;
    }
    return 1;
}

int fuzz_prompts(const uint8_t *data, size_t size) {
    static const int takes[4] = {0, 1, 2, 5}, gens[4] = {0, 1, 8, 64}, ctxs[4] = {16, 64, 256, 512};
    if (!fp_tok) {
        char err[QP_ERRLEN] = "";
        const char *root = getenv("QP_FIXTURES");
        if (fuzz_prompts_init(root && *root ? root : "../shared/fixtures", err))
            fuzz_fail(__FILE__, __LINE__, "cannot load the tokenizer (set QP_FIXTURES): %s", err);
    }
    uint8_t opt = size ? data[0] : 0;
    const uint8_t *file = size ? data + 1 : data;
    size_t len = size ? size - 1 : 0;
    struct hx_gen_opts o;
    hx_gen_opts_default(&o);
    o.n_prompts = takes[opt & 3];
    o.n_tokens = gens[(opt >> 2) & 3];
    int ctx = ctxs[(opt >> 4) & 3];

    char path[FUZZ_PATH_MAX], err[QP_ERRLEN] = "";
    fuzz_write("prompts.txt", file, len, path);
    struct hx_gen_prompts p;
    int rc = hx_gen_prompts_read(path, fp_tok, ctx, &o, &p, err);

    static struct fp_line lines[FP_MAX_LINES];
    int jsonl;
    long long total;
    int max = o.n_prompts > 0 ? o.n_prompts : FP_MAX_LINES;
    int n = fp_lines(file, len, lines, max, &jsonl, &total);
    if (rc) {
        fp_check_refusal(rc, err, path, total);
        if (jsonl == 0) FUZZ_CHECK(!fp_plain_ok(lines, n, ctx, o.n_tokens), "refused a good plain file: %s", err);
        return 0;
    }
    FUZZ_CHECK(p.n == n && n > 0, "%d prompts from %d non-blank lines (at most %d)", p.n, n, max);
    for (int i = 0; i < p.n; i++) fp_check_prompt(&p, i, &lines[i], jsonl, ctx, o.n_tokens);
    FUZZ_CHECK(strncmp(p.source, "file:", 5) == 0 && strlen(p.source) == 17 &&
                   strspn(p.source + 5, "0123456789abcdef") == 12,
               "source '%s'", p.source);
    hx_gen_prompts_free(&p);
    return 0;
}

#ifdef QP_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_prompts(data, size); }
#endif
