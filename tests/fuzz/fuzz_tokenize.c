// fuzz_tokenize.c — fuzz target for encoding arbitrary bytes with the real stories260K
// tokenizer (harness/io/hx_tokenizer.c, hx_tok_encode / hx_tok_piece) from the shared fixtures.
//
// Input: the low two bits of the first byte are the encoding flags (HX_TOK_ADD_BOS,
// HX_TOK_SPACE_PREFIX), the rest is the text. Encoding must succeed, give at most len + 2 ids,
// all inside the vocabulary, BOS first when asked for. Decoding the ids again with
// hx_tok_piece must give back the text (with "▁" read as a space, and the space the prefix
// added, or the leading space BOS swallows, accounted for), unless a control or unknown token
// was produced: SentencePiece encoding with byte fallback loses nothing else.
//
// Depends on harness/io/hx_tokenizer.h, kernels/qp.h and fuzz.h.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "qp.h"
#include "hx_tokenizer.h"

#define FK_VOCAB 512     // tok512.bin, the stories260K vocabulary
#define FK_PIECE_MAX 64  // longer than any token of it (max_token_length 7)

static struct hx_tok *fk_tok; // loaded once, lives until the process ends

int fuzz_tokenize_init(const char *path, int vocab_size, char *err) {
    if (fk_tok) hx_tok_destroy(fk_tok);
    fk_tok = NULL;
    return hx_tok_load_llama2c(path, vocab_size, &fk_tok, err);
}

static void fk_default_init(void) {
    const char *root = getenv("QP_FIXTURES");
    if (!root || !*root) root = "../shared/fixtures";
    char path[FUZZ_PATH_MAX], err[QP_ERRLEN] = "";
    snprintf(path, sizeof path, "%s/models/llama2c/tok512.bin", root);
    if (fuzz_tokenize_init(path, FK_VOCAB, err) != 0)
        fuzz_fail(__FILE__, __LINE__, "cannot load the tokenizer (set QP_FIXTURES): %s", err);
}

// The text decoding should give back: "▁" read as a space, a space prepended when asked for;
// then BOS swallows one leading space if the first token's string starts with one. Returns
// the length written into out (room for len + 1 bytes).
static size_t fk_expected(const uint8_t *text, size_t len, unsigned flags, char *out) {
    size_t n = 0;
    if ((flags & HX_TOK_SPACE_PREFIX) && len > 0) out[n++] = ' ';
    for (size_t i = 0; i < len; i++) {
        if (text[i] == 0xe2 && len - i >= 3 && text[i + 1] == 0x96 && text[i + 2] == 0x81) {
            out[n++] = ' ';
            i += 2;
        } else {
            out[n++] = (char)text[i];
        }
    }
    return n;
}

int fuzz_tokenize(const uint8_t *data, size_t size) {
    if (!fk_tok) fk_default_init();
    const struct hx_tok *t = fk_tok;
    unsigned flags = size > 0 ? data[0] & 3u : 0u;
    const uint8_t *text = size > 0 ? data + 1 : data;
    size_t len = size > 0 ? size - 1 : 0;

    int *ids = NULL;
    size_t n = 0;
    int rc = hx_tok_encode(t, (const char *)text, len, flags, &ids, &n);
    FUZZ_CHECK(rc == 0, "encoding %zu bytes failed: %d", len, rc);
    FUZZ_CHECK(n <= len + 2, "%zu ids for %zu bytes", n, len);
    FUZZ_CHECK(len > 0 || n == ((flags & HX_TOK_ADD_BOS) ? 1u : 0u), "%zu ids for no text", n);
    int n_vocab = hx_tok_n_vocab(t), lossy = 0;
    for (size_t i = 0; i < n; i++) {
        FUZZ_CHECK(ids[i] >= 0 && ids[i] < n_vocab, "id %d at %zu outside vocabulary of %d",
                   ids[i], i, n_vocab);
        int type = hx_tok_type(t, ids[i]);
        if (i > 0 || !(flags & HX_TOK_ADD_BOS))
            lossy |= type == HX_TOK_CONTROL || type == HX_TOK_UNKNOWN;
    }
    if (flags & HX_TOK_ADD_BOS) FUZZ_CHECK(n >= 1 && ids[0] == hx_tok_bos(t), "no BOS first");

    if (!lossy) {
        char *want = malloc(len + 2), *got = malloc((n + 1) * FK_PIECE_MAX);
        FUZZ_CHECK(want && got, "out of memory");
        size_t want_n = fk_expected(text, len, flags, want), got_n = 0;
        size_t first = (flags & HX_TOK_ADD_BOS) ? 1 : 0;
        if (first && n > first) {
            // After BOS, hx_tok_piece drops the leading space of a (non-byte) token.
            size_t l0;
            const char *s0 = hx_tok_str(t, ids[first], &l0);
            int byte_tok = hx_tok_type(t, ids[first]) == HX_TOK_BYTE;
            if (!byte_tok && l0 > 0 && s0[0] == ' ' && want_n > 0 && want[0] == ' ') {
                memmove(want, want + 1, want_n - 1);
                want_n--;
            }
        }
        int prev = -1;
        for (size_t i = 0; i < n; i++) {
            got_n += hx_tok_piece(t, prev, ids[i], got + got_n, FK_PIECE_MAX);
            prev = ids[i];
        }
        FUZZ_CHECK(got_n == want_n && memcmp(got, want, got_n) == 0,
                   "decoding %zu ids gives %zu bytes, the text has %zu", n, got_n, want_n);
        free(want);
        free(got);
    }
    free(ids);
    return 0;
}

#ifdef QP_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_tokenize(data, size); }

// Loads the tokenizer before the first input, so that a missing fixture stops the run at once.
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fk_default_init();
    return 0;
}
#endif
