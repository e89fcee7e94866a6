// fuzz_gguf_bpe.c — fuzz target for GGUF "gpt2" vocabularies (harness/io/hx_tok_bpe.c,
// hx_tok_pre.c through hx_tok_from_gguf): the input describes a vocabulary, the target writes it
// as a GGUF with qprobe's writer and loads it, so that the fuzzer explores vocabularies (merges,
// pre-tokenizer names, token types, duplicates) rather than GGUF framing (fuzz_gguf does that).
//
// Input: sections separated by "\n--\n": the tokenizer.ggml.pre name; the tokens, one per line
// (a line starting with '!' is a control token, '?' a user-defined one, the mark removed); the
// merges, one per line; the text to encode. Missing sections are empty. The 256 GPT-2 byte
// tokens are added first unless the pre line starts with '-' (then the vocabulary is only
// what the input lists).
//
// Properties: a load fails with a QP_E* code, no tokenizer and a message naming the file, or
// succeeds and passes fuzz_check_tok; when it succeeds with all 256 byte tokens and no control
// or user-defined token, decode(encode(text)) == text for every text (byte-level BPE loses
// nothing).
//
// Depends on harness/io/hx_gguf.h, hx_tokenizer.h, kernels/qp*.h and fuzz.h.
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "hx_gguf.h"
#include "hx_tokenizer.h"
#include "qp.h"
#include "qp_utf8.h"

#define FB_MAX_LINES 4096

struct fb_list {
    const char *s[FB_MAX_LINES];
    size_t len[FB_MAX_LINES];
    int32_t type[FB_MAX_LINES];
    uint64_t n;
};

// The next section of data[*pos..size): up to "\n--\n" or the end.
static void fb_section(const char *d, size_t size, size_t *pos, const char **s, size_t *len) {
    *s = d + *pos;
    const char *end = *pos < size ? memmem(d + *pos, size - *pos, "\n--\n", 4) : NULL;
    *len = end ? (size_t)(end - *s) : size - *pos;
    *pos = end ? (size_t)(end - d) + 4 : size;
}

static void fb_push(struct fb_list *l, const char *s, size_t len, int32_t type) {
    if (l->n == FB_MAX_LINES) return;
    l->s[l->n] = s;
    l->len[l->n] = len;
    l->type[l->n++] = type;
}

// Lines of s[0..len); with types, a leading '!' or '?' marks control or user-defined.
static void fb_lines(const char *s, size_t len, struct fb_list *l, int types, int *special) {
    for (size_t i = 0; i < len;) {
        const char *eol = memchr(s + i, '\n', len - i);
        size_t n = eol ? (size_t)(eol - (s + i)) : len - i;
        int32_t type = 1;
        const char *p = s + i;
        if (types && n > 0 && (p[0] == '!' || p[0] == '?')) {
            type = p[0] == '!' ? 3 : 4;
            *special = 1;
            p++;
            n--;
        }
        fb_push(l, p, n, type);
        i += (size_t)(p - (s + i)) + n + 1;
    }
}

static int fb_write(const char *path, const char *pre, size_t pre_len, const struct fb_list *toks,
                    const struct fb_list *merges, char *err) {
    struct hx_gguf_writer *w;
    if (hx_gguf_writer_create(&w)) return QP_ENOMEM;
    char name[64];
    size_t n = pre_len < sizeof name - 1 ? pre_len : sizeof name - 1;
    memcpy(name, pre, n);
    name[n] = '\0';
    int rc = hx_gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2");
    if (!rc && n > 0) rc = hx_gguf_writer_set_str(w, "tokenizer.ggml.pre", name);
    if (!rc) rc = hx_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks->s, toks->len, toks->n);
    if (!rc) rc = hx_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", HX_GGUF_INT32, toks->type, toks->n);
    if (!rc) rc = hx_gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", merges->s, merges->len, merges->n);
    if (!rc) rc = hx_gguf_writer_write(w, path, err);
    hx_gguf_writer_destroy(w);
    return rc;
}

// The GPT-2 stand-in of byte b (the same map as hx_tok_bpe.c, written out independently).
static size_t fb_byte_char(unsigned b, char *out) {
    int printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
    uint32_t cp = b;
    if (!printable) {
        cp = 256;
        for (unsigned c = 0; c < b; c++) cp += !((c >= 0x21 && c <= 0x7e) || (c >= 0xa1 && c <= 0xac) || c >= 0xae);
    }
    return qp_utf8_put(cp, out);
}

static void fb_round_trip(const struct hx_tok *t, const char *text, size_t len) {
    int *ids;
    size_t n, back_len;
    char *back;
    FUZZ_CHECK(hx_tok_encode(t, text, len, 0, &ids, &n) == 0, "encoding failed");
    FUZZ_CHECK(hx_tok_decode(t, ids, n, 0, &back, &back_len) == 0, "decoding failed");
    FUZZ_CHECK(back_len == len && memcmp(back, text, len) == 0, "%zu bytes decode to %zu other bytes", len, back_len);
    free(ids);
    free(back);
}

int fuzz_gguf_bpe(const uint8_t *data, size_t size) {
    const char *d = (const char *)data;
    size_t pos = 0, pre_len, tok_len, merge_len, text_len;
    const char *pre, *tok_s, *merge_s, *text;
    fb_section(d, size, &pos, &pre, &pre_len);
    fb_section(d, size, &pos, &tok_s, &tok_len);
    fb_section(d, size, &pos, &merge_s, &merge_len);
    fb_section(d, size, &pos, &text, &text_len);
    static struct fb_list toks, merges;
    static char bytes[256][4];
    toks.n = merges.n = 0;
    int with_bytes = !(pre_len > 0 && pre[0] == '-'), special = 0;
    if (!with_bytes) pre++, pre_len--;
    for (unsigned b = 0; b < 256 && with_bytes; b++) fb_push(&toks, bytes[b], fb_byte_char(b, bytes[b]), 1);
    fb_lines(tok_s, tok_len, &toks, 1, &special);
    fb_lines(merge_s, merge_len, &merges, 0, &special);
    char path[FUZZ_PATH_MAX], err[QP_ERRLEN] = "";
    fuzz_path("vocab.gguf", path);
    if (toks.n == 0 || fb_write(path, pre, pre_len, &toks, &merges, err)) return 0;

    struct hx_gguf *g = NULL;
    FUZZ_CHECK(hx_gguf_open(path, &g, err) == 0, "qprobe cannot read the GGUF it wrote: %s", err);
    struct hx_tok *t = NULL;
    int rc = hx_tok_from_gguf(g, &t, err);
    hx_gguf_close(g);
    if (rc) {
        FUZZ_CHECK(t == NULL, "failed load left a tokenizer");
        FUZZ_CHECK(rc < 0 && rc >= QP_EINTR, "unknown error code %d", rc);
        FUZZ_CHECK(strstr(err, path) != NULL, "message does not name the file: %s", err);
        return 0;
    }
    FUZZ_CHECK(hx_tok_n_vocab(t) == (int)toks.n, "%d tokens of %d", hx_tok_n_vocab(t), (int)toks.n);
    fuzz_check_tok(t, (const uint8_t *)text, text_len);
    if (with_bytes && !special) fb_round_trip(t, text, text_len);
    hx_tok_destroy(t);
    return 0;
}

#ifdef QP_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_gguf_bpe(data, size); }
#endif
