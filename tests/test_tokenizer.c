// test_tokenizer.c — the SPM tokenizer (harness/io/hx_tokenizer.c) against llama.cpp's own outputs:
// its tokenizer test vectors for the Llama 2 vocabulary, and llama-perplexity's tokenization of
// the TinyStories prefix with the 512-token vocabulary, from both tokenizer.bin and GGUF sources.
// Also decoding, a naive O(n^2) reference merge loop, speed, and malformed tokenizer files.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hx_gguf.h"
#include "qp.h"
#include "qp_test.h"
#include "hx_tokenizer.h"

// ---------------------------------------------------------------------------------------------
// Helpers

#define LLAMA_VOCAB 32000
#define STORIES_VOCAB 512


static void put_i32(unsigned char *p, int32_t v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(u >> (8 * i));
}

static char *dup_path(const char *p) {
    char *s = strdup(p);
    QP_CHECK(s != NULL);
    return s;
}

static struct hx_tok *load_llama2c(const char *rel, int vocab) {
    char err[QP_ERRLEN] = "";
    struct hx_tok *t = NULL;
    int rc = hx_tok_load_llama2c(qpt_fixture(rel), vocab, &t, err);
    QP_CHECK_MSG(rc == 0 && t, "load %s: %d %s", rel, rc, err);
    return t;
}

// Opens a GGUF fixture and builds its tokenizer; *g must be closed by the caller.
static struct hx_tok *load_gguf(const char *rel, struct hx_gguf **g) {
    char err[QP_ERRLEN] = "";
    int rc = hx_gguf_open(qpt_fixture(rel), g, err);
    QP_CHECK_MSG(rc == 0 && *g, "open %s: %d %s", rel, rc, err);
    struct hx_tok *t = NULL;
    rc = hx_tok_from_gguf(*g, &t, err);
    QP_CHECK_MSG(rc == 0 && t, "tokenizer of %s: %d %s", rel, rc, err);
    return t;
}



static void check_ids_equal(const int *got, size_t n_got, const int *want, size_t n_want,
                            const char *what) {
    size_t n = QP_MIN(n_got, n_want);
    for (size_t i = 0; i < n; i++)
        QP_CHECK_MSG(got[i] == want[i], "%s: token %zu is %d, expected %d", what, i, got[i], want[i]);
    QP_CHECK_MSG(n_got == n_want, "%s: %zu tokens, expected %zu", what, n_got, n_want);
}

// Runs llama.cpp's test vectors (.inp inputs separated by "\n__ggml_vocab_test__\n", each
// followed by one; .out one line of ids per input) through t with the space prefix, no BOS,
// as llama.cpp's test-tokenizer-0 does (add_special=false).
static void check_vocab_vectors(const struct hx_tok *t) {
    static const char sep[] = "\n__ggml_vocab_test__\n";
    size_t inp_len, out_len;
    char *inp = qpt_read_fixture("models/gguf/ggml-vocab-llama-spm.gguf.inp", &inp_len);
    char *outs = qpt_read_fixture("models/gguf/ggml-vocab-llama-spm.gguf.out", &out_len);
    size_t pos = 0, line = 0, n_cases = 0;
    while (pos < inp_len) {
        const char *end = memmem(inp + pos, inp_len - pos, sep, sizeof sep - 1);
        QP_CHECK_MSG(end != NULL, "input %zu has no separator", n_cases);
        size_t len = (size_t)(end - (inp + pos));
        QP_CHECK_MSG(line < out_len, "no expected line for input %zu", n_cases);
        const char *eol = memchr(outs + line, '\n', out_len - line);
        size_t line_len = eol ? (size_t)(eol - (outs + line)) : out_len - line;
        size_t n_want, n_got;
        int *want = qpt_parse_ids(outs + line, line_len, &n_want);
        int *got;
        QP_CHECK(hx_tok_encode(t, inp + pos, len, HX_TOK_SPACE_PREFIX, &got, &n_got) == 0);
        char what[160];
        snprintf(what, sizeof what, "input %zu ('%.40s')", n_cases, inp + pos);
        check_ids_equal(got, n_got, want, n_want, what);
        free(got);
        free(want);
        n_cases++;
        pos += len + sizeof sep - 1;
        line += line_len + 1;
    }
    QP_CHECK_INT_EQ(n_cases, 46); // the file's count of separators
    QP_CHECK_MSG(line >= out_len, "more expected lines than inputs");
    free(inp);
    free(outs);
}

// TinyStories prefix of `bytes` bytes, with one trailing '\n' removed (llama-perplexity's -f).
static char *stories_prefix(size_t bytes, size_t *len) {
    size_t n;
    char *d = qpt_read_fixture("data/tinystories/tinystories_val.txt", &n);
    QP_CHECK(n >= bytes);
    if (bytes > 0 && d[bytes - 1] == '\n') bytes--;
    *len = bytes;
    return d;
}

static void check_stories(const struct hx_tok *t, size_t bytes, const char *golden) {
    size_t len, glen, n_want, n_got;
    char *text = stories_prefix(bytes, &len);
    char *g = qpt_read_fixture(golden, &glen);
    int *want = qpt_parse_ids(g, glen, &n_want);
    int *got;
    QP_CHECK(hx_tok_encode(t, text, len, HX_TOK_ADD_BOS | HX_TOK_SPACE_PREFIX, &got, &n_got) == 0);
    check_ids_equal(got, n_got, want, n_want, golden);
    free(got);
    free(want);
    free(g);
    free(text);
}

// ---------------------------------------------------------------------------------------------
// llama.cpp's test vectors

QP_TEST(llama_vocab_vectors_should_match_llama_cpp_with_gguf_vocab) {
    struct hx_gguf *g;
    struct hx_tok *t = load_gguf("models/gguf/ggml-vocab-llama-spm.gguf", &g);
    QP_CHECK_INT_EQ(hx_tok_n_vocab(t), LLAMA_VOCAB);
    check_vocab_vectors(t);
    hx_tok_destroy(t);
    hx_gguf_close(g);
}

QP_TEST(llama_vocab_vectors_should_match_llama_cpp_with_tokenizer_bin) {
    struct hx_tok *t = load_llama2c("models/llama2c/tokenizer.bin", LLAMA_VOCAB);
    check_vocab_vectors(t);
    hx_tok_destroy(t);
}

// Both sources of the Llama 2 vocabulary, and of the 512-token one, must load identically:
// same strings (▁ as space, ids 1/2 renamed as llama.cpp's converter does), scores and types.
static void check_same_vocab(const struct hx_tok *a, const struct hx_tok *b) {
    QP_CHECK_INT_EQ(hx_tok_n_vocab(a), hx_tok_n_vocab(b));
    QP_CHECK_INT_EQ(hx_tok_bos(a), hx_tok_bos(b));
    QP_CHECK_INT_EQ(hx_tok_eos(a), hx_tok_eos(b));
    QP_CHECK_INT_EQ(hx_tok_unk(a), hx_tok_unk(b));
    for (int id = 0; id < hx_tok_n_vocab(a); id++) {
        size_t la, lb;
        const char *sa = hx_tok_str(a, id, &la), *sb = hx_tok_str(b, id, &lb);
        QP_CHECK_MSG(la == lb && memcmp(sa, sb, la) == 0, "token %d: '%s' vs '%s'", id, sa, sb);
        QP_CHECK_MSG(hx_tok_score(a, id) == hx_tok_score(b, id), "token %d score", id);
        QP_CHECK_MSG(hx_tok_type(a, id) == hx_tok_type(b, id), "token %d type %d vs %d", id,
                     hx_tok_type(a, id), hx_tok_type(b, id));
    }
}

QP_TEST(llama2c_and_gguf_sources_should_load_the_same_vocabulary) {
    struct hx_gguf *g;
    struct hx_tok *a = load_llama2c("models/llama2c/tokenizer.bin", LLAMA_VOCAB);
    struct hx_tok *b = load_gguf("models/gguf/ggml-vocab-llama-spm.gguf", &g);
    check_same_vocab(a, b);
    hx_tok_destroy(a);
    hx_tok_destroy(b);
    hx_gguf_close(g);

    a = load_llama2c("models/llama2c/tok512.bin", STORIES_VOCAB);
    b = load_gguf("golden/ppl/stories260K-F32.gguf", &g);
    check_same_vocab(a, b);
    hx_tok_destroy(a);
    hx_tok_destroy(b);
    hx_gguf_close(g);
}

QP_TEST(load_llama2c_should_infer_token_types_as_llama_cpp_converter) {
    struct hx_tok *t = load_llama2c("models/llama2c/tok512.bin", STORIES_VOCAB);
    QP_CHECK_INT_EQ(hx_tok_bos(t), 1);
    QP_CHECK_INT_EQ(hx_tok_eos(t), 2);
    QP_CHECK_INT_EQ(hx_tok_unk(t), 0);
    QP_CHECK_INT_EQ(hx_tok_type(t, 0), HX_TOK_UNKNOWN);
    QP_CHECK_INT_EQ(hx_tok_type(t, 1), HX_TOK_CONTROL);
    QP_CHECK_INT_EQ(hx_tok_type(t, 2), HX_TOK_CONTROL);
    QP_CHECK_STR_EQ(hx_tok_str(t, 0, NULL), "<unk>");
    QP_CHECK_STR_EQ(hx_tok_str(t, 1, NULL), "<s>");
    QP_CHECK_STR_EQ(hx_tok_str(t, 2, NULL), "</s>");
    for (int id = 3; id < 3 + 256; id++) QP_CHECK_INT_EQ(hx_tok_type(t, id), HX_TOK_BYTE);
    QP_CHECK_STR_EQ(hx_tok_str(t, 3 + 0x41, NULL), "<0x41>");
    QP_CHECK_INT_EQ(hx_tok_type(t, 259), HX_TOK_NORMAL);
    QP_CHECK_STR_EQ(hx_tok_str(t, 259, NULL), " t");
    hx_tok_destroy(t);
}

// ---------------------------------------------------------------------------------------------
// llama-perplexity's tokenization of the TinyStories prefix (golden/ppl)

QP_TEST(tok512_should_match_llama_cpp_on_first_2000_bytes) {
    struct hx_tok *t = load_llama2c("models/llama2c/tok512.bin", STORIES_VOCAB);
    check_stories(t, 2000, "golden/ppl/tokens_first2000B.txt");
    hx_tok_destroy(t);
}

QP_TEST(tok512_should_match_llama_cpp_on_200000_bytes) {
    struct hx_tok *t = load_llama2c("models/llama2c/tok512.bin", STORIES_VOCAB);
    check_stories(t, 200000, "golden/ppl/tokens_200000B.txt");
    hx_tok_destroy(t);
}

QP_TEST(gguf_stories_tokenizer_should_match_llama_cpp_on_first_2000_bytes) {
    struct hx_gguf *g;
    struct hx_tok *t = load_gguf("golden/ppl/stories260K-F32.gguf", &g);
    check_stories(t, 2000, "golden/ppl/tokens_first2000B.txt");
    hx_tok_destroy(t);
    hx_gguf_close(g);
}

QP_TEST(gguf_stories_tokenizer_should_match_llama_cpp_on_200000_bytes) {
    struct hx_gguf *g;
    struct hx_tok *t = load_gguf("golden/ppl/stories260K-F32.gguf", &g);
    check_stories(t, 200000, "golden/ppl/tokens_200000B.txt");
    hx_tok_destroy(t);
    hx_gguf_close(g);
}

// ---------------------------------------------------------------------------------------------
// Encoding details

QP_TEST(encode_should_handle_empty_text_and_flags) {
    struct hx_tok *t = load_llama2c("models/llama2c/tok512.bin", STORIES_VOCAB);
    int *ids;
    size_t n;
    QP_CHECK(hx_tok_encode(t, "", 0, HX_TOK_ADD_BOS | HX_TOK_SPACE_PREFIX, &ids, &n) == 0);
    QP_CHECK_INT_EQ(n, 1); // no space prefix on empty text
    QP_CHECK_INT_EQ(ids[0], 1);
    free(ids);
    QP_CHECK(hx_tok_encode(t, "", 0, 0, &ids, &n) == 0);
    QP_CHECK_INT_EQ(n, 0);
    QP_CHECK(ids != NULL);
    free(ids);
    // "a" alone is a byte-level piece; with the prefix, " a" is one token.
    QP_CHECK(hx_tok_encode(t, "a", 1, 0, &ids, &n) == 0);
    QP_CHECK_INT_EQ(n, 1);
    QP_CHECK_STR_EQ(hx_tok_str(t, ids[0], NULL), "a");
    free(ids);
    QP_CHECK(hx_tok_encode(t, "a", 1, HX_TOK_SPACE_PREFIX, &ids, &n) == 0);
    QP_CHECK_INT_EQ(n, 1);
    QP_CHECK_STR_EQ(hx_tok_str(t, ids[0], NULL), " a");
    free(ids);
    hx_tok_destroy(t);
}

QP_TEST(encode_should_fall_back_to_byte_tokens_for_unknown_and_malformed_utf8) {
    struct hx_tok *t = load_llama2c("models/llama2c/tok512.bin", STORIES_VOCAB);
    // "é" (c3 a9), a lone continuation byte, a NUL, a 3-byte lead cut off at the end (e2 82
    // counts as one 2-byte character, as llama.cpp caps it at the end of the text).
    static const char text[] = "x\xc3\xa9y\x80z\0w\xe2\x82";
    size_t len = sizeof text - 1;
    int *ids;
    size_t n;
    QP_CHECK(hx_tok_encode(t, text, len, 0, &ids, &n) == 0);
    // Reassembling the pieces gives the bytes back.
    char back[64];
    size_t w = 0;
    for (size_t i = 0; i < n; i++) w += hx_tok_piece(t, -1, ids[i], back + w, sizeof back - w);
    QP_CHECK_INT_EQ(w, len);
    QP_CHECK(memcmp(back, text, len) == 0);
    int n_bytes = 0;
    for (size_t i = 0; i < n; i++) n_bytes += hx_tok_type(t, ids[i]) == HX_TOK_BYTE;
    // "é" is in this vocabulary; 80, 00 and the cut-off e2 82 are not: four byte tokens.
    QP_CHECK_INT_EQ(n_bytes, 4);
    QP_CHECK_INT_EQ(n, 9);
    free(ids);
    hx_tok_destroy(t);
}

QP_TEST(encode_should_treat_lower_one_eighth_block_in_text_as_space) {
    // llama.cpp escapes ' ' to "▁" before merging, so both spell the same text.
    struct hx_tok *t = load_llama2c("models/llama2c/tokenizer.bin", LLAMA_VOCAB);
    static const char a[] = "Hello world  x", b[] = "Hello\xe2\x96\x81world\xe2\x96\x81 x";
    int *ia, *ib;
    size_t na, nb;
    QP_CHECK(hx_tok_encode(t, a, sizeof a - 1, HX_TOK_SPACE_PREFIX, &ia, &na) == 0);
    QP_CHECK(hx_tok_encode(t, b, sizeof b - 1, HX_TOK_SPACE_PREFIX, &ib, &nb) == 0);
    check_ids_equal(ib, nb, ia, na, "with U+2581");
    static const int want[] = {15043, 3186, 29871, 921}; // " Hello", " world", " ", " x"
    check_ids_equal(ia, na, want, QP_ARRAY_LEN(want), "plain spaces");
    free(ia);
    free(ib);
    hx_tok_destroy(t);
}

// The plain specification: scan all adjacent pairs, merge the best (leftmost on ties), repeat.
// O(n^2); only for short texts. (About 80 lines on purpose: the reference reads top to bottom —
// units, merges, ids — as one piece to check by eye against the description above.)
static int *naive_encode(const struct hx_tok *t, const char *text, size_t len, size_t *n_out) {
    size_t blen = len + 1;
    char *buf = malloc(blen);
    size_t *start = malloc(blen * sizeof *start), *sz = malloc(blen * sizeof *sz);
    int *out = malloc((blen + 1) * sizeof *out);
    QP_CHECK(buf && start && sz && out);
    buf[0] = ' ';
    // U+2581 "▁" in the text is a space, as in llama.cpp.
    size_t w = 1;
    for (size_t i = 0; i < len; i++) {
        if (i + 2 < len && memcmp(text + i, "\xe2\x96\x81", 3) == 0) {
            buf[w++] = ' ';
            i += 2;
        } else {
            buf[w++] = text[i];
        }
    }
    blen = w;
    size_t n = 0;
    for (size_t p = 0; p < blen;) {
        unsigned char c = (unsigned char)buf[p];
        size_t cl = c < 0xc0 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
        if (cl > blen - p) cl = blen - p;
        start[n] = p;
        sz[n++] = cl;
        p += cl;
    }
    // Lookups by a linear scan of the vocabulary: slow and obviously right.
    for (;;) {
        float best = 0;
        size_t best_i = SIZE_MAX;
        for (size_t i = 0; i + 1 < n; i++) {
            size_t l = sz[i] + sz[i + 1];
            for (int id = 0; id < hx_tok_n_vocab(t); id++) {
                size_t tl;
                const char *s = hx_tok_str(t, id, &tl);
                if (tl == l && memcmp(s, buf + start[i], l) == 0) {
                    float sc = hx_tok_score(t, id);
                    if (best_i == SIZE_MAX || sc > best) {
                        best = sc;
                        best_i = i;
                    }
                }
            }
        }
        if (best_i == SIZE_MAX) break;
        sz[best_i] += sz[best_i + 1];
        memmove(start + best_i + 1, start + best_i + 2, (n - best_i - 2) * sizeof *start);
        memmove(sz + best_i + 1, sz + best_i + 2, (n - best_i - 2) * sizeof *sz);
        n--;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int found = -1;
        for (int id = hx_tok_n_vocab(t) - 1; id >= 0 && found < 0; id--) {
            size_t tl;
            const char *s = hx_tok_str(t, id, &tl);
            if (tl == sz[i] && memcmp(s, buf + start[i], tl) == 0) found = id;
        }
        if (found >= 0) {
            out[k++] = found;
            continue;
        }
        for (size_t b = 0; b < sz[i]; b++) {
            char name[8];
            snprintf(name, sizeof name, "<0x%02X>", (unsigned char)buf[start[i] + b]);
            int bid = hx_tok_unk(t);
            for (int id = 0; id < hx_tok_n_vocab(t); id++) {
                size_t tl;
                const char *s = hx_tok_str(t, id, &tl);
                if (tl == 6 && memcmp(s, name, 6) == 0) bid = id;
            }
            out[k++] = bid;
        }
    }
    free(buf);
    free(start);
    free(sz);
    *n_out = k;
    return out;
}

QP_TEST(encode_should_match_naive_reference_on_wikitext_slices) {
    struct hx_tok *t = load_llama2c("models/llama2c/tok512.bin", STORIES_VOCAB);
    size_t len;
    char *text = qpt_read_fixture("data/wikitext-2-raw/wiki.test.raw", &len);
    uint64_t rng = 12345;
    for (int k = 0; k < 60; k++) {
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        size_t slice = 1 + (size_t)(rng >> 33) % 200;
        size_t at = (size_t)(rng >> 20) % (len - slice);
        size_t n_fast, n_ref;
        int *fast;
        QP_CHECK(hx_tok_encode(t, text + at, slice, HX_TOK_SPACE_PREFIX, &fast, &n_fast) == 0);
        int *ref = naive_encode(t, text + at, slice, &n_ref);
        char what[64];
        snprintf(what, sizeof what, "slice %d at %zu (+%zu)", k, at, slice);
        check_ids_equal(fast, n_fast, ref, n_ref, what);
        free(fast);
        free(ref);
    }
    free(text);
    hx_tok_destroy(t);
}

// tok512.bin with ids 500..503 replaced by entries that join across newlines, with top scores,
// so that the encoder's segment cuts (made only where no entry can span) move or vanish.
static const char *write_newline_vocab(void) {
    static const char *extra[] = {".\n", "\n\n", "\nO", "!\n"};
    size_t len;
    unsigned char *d = (unsigned char *)qpt_read_fixture("models/llama2c/tok512.bin", &len);
    unsigned char *o = malloc(len + 64);
    QP_CHECK(o != NULL);
    memcpy(o, d, 4);
    size_t ip = 4, op = 4;
    for (int id = 0; id < STORIES_VOCAB; id++) {
        int32_t l;
        memcpy(&l, d + ip + 4, 4);
        if (id >= 500 && id < 504) {
            float score = 10.0f + (float)(id - 500);
            int32_t nl = (int32_t)strlen(extra[id - 500]);
            memcpy(o + op, &score, 4);
            memcpy(o + op + 4, &nl, 4);
            memcpy(o + op + 8, extra[id - 500], (size_t)nl);
            op += 8 + (size_t)nl;
        } else {
            memcpy(o + op, d + ip, 8 + (size_t)l);
            op += 8 + (size_t)l;
        }
        ip += 8 + (size_t)l;
    }
    const char *path = qpt_write_tmp("newline.bin", o, op);
    free(o);
    free(d);
    return path;
}

QP_TEST(encode_should_match_naive_reference_on_random_bytes) {
    struct hx_tok *t = load_llama2c("models/llama2c/tok512.bin", STORIES_VOCAB);
    // Mostly common letters and spaces (so that merges happen), some newlines, NULs and bytes
    // >= 0x80 (UTF-8 leads and stray continuation bytes, often malformed).
    static const char alphabet[] = "  eeetaoinshrdlu.,\n\0\xc3\xa9\x80\xbf\xe2\x96\x81\xf0\x9f\xff";
    uint64_t rng = 99;
    for (int k = 0; k < 300; k++) {
        char text[96];
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        size_t len = (size_t)(rng >> 33) % sizeof text;
        for (size_t i = 0; i < len; i++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            text[i] = alphabet[(rng >> 33) % (sizeof alphabet - 1)];
        }
        size_t n_fast, n_ref;
        int *fast;
        QP_CHECK(hx_tok_encode(t, text, len, HX_TOK_SPACE_PREFIX, &fast, &n_fast) == 0);
        int *ref = naive_encode(t, text, len, &n_ref);
        char what[64];
        snprintf(what, sizeof what, "random text %d (%zu bytes)", k, len);
        if (len == 0) n_ref = 0; // the naive encoder always adds the prefix
        check_ids_equal(fast, n_fast, ref, n_ref, what);
        free(fast);
        free(ref);
    }
    hx_tok_destroy(t);
}

QP_TEST(encode_should_match_naive_reference_when_entries_span_newlines) {
    char err[QP_ERRLEN] = "";
    struct hx_tok *t = NULL;
    QP_CHECK_MSG(hx_tok_load_llama2c(write_newline_vocab(), STORIES_VOCAB, &t, err) == 0, "%s", err);
    size_t len;
    char *text = qpt_read_fixture("data/tinystories/tinystories_val.txt", &len);
    uint64_t rng = 777;
    int n_joined = 0;
    for (int k = 0; k < 60; k++) {
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        size_t slice = 20 + (size_t)(rng >> 33) % 180;
        size_t at = (size_t)(rng >> 20) % (len - slice);
        size_t n_fast, n_ref;
        int *fast;
        QP_CHECK(hx_tok_encode(t, text + at, slice, HX_TOK_SPACE_PREFIX, &fast, &n_fast) == 0);
        int *ref = naive_encode(t, text + at, slice, &n_ref);
        char what[64];
        snprintf(what, sizeof what, "slice %d at %zu (+%zu)", k, at, slice);
        check_ids_equal(fast, n_fast, ref, n_ref, what);
        for (size_t i = 0; i < n_fast; i++) n_joined += fast[i] >= 500 && fast[i] < 504;
        free(fast);
        free(ref);
    }
    QP_CHECK_MSG(n_joined > 10, "only %d newline-spanning tokens used", n_joined);
    free(text);
    hx_tok_destroy(t);
}

// Speed is measured by `make bench`, not here: this case checks the whole file round-trips.
QP_TEST(encode_should_round_trip_the_whole_wikitext_file) {
    struct hx_tok *t = load_llama2c("models/llama2c/tokenizer.bin", LLAMA_VOCAB);
    size_t len;
    char *text = qpt_read_fixture("data/wikitext-2-raw/wiki.test.raw", &len);
    int *ids;
    size_t n;
    QP_CHECK(hx_tok_encode(t, text, len, HX_TOK_ADD_BOS | HX_TOK_SPACE_PREFIX, &ids, &n) == 0);
    // 335,688 ids with BOS: 655 chunks of 512, as llama-perplexity reports for Llama 2 here.
    QP_CHECK_INT_EQ(n, 335688);
    // Sanity: decoding gives the text back.
    char *back = malloc(len + 16);
    QP_CHECK(back != NULL);
    size_t w = 0;
    for (size_t i = 1; i < n; i++) {
        char piece[64];
        size_t pl = hx_tok_piece(t, ids[i - 1], ids[i], piece, sizeof piece);
        QP_CHECK(w + pl <= len);
        memcpy(back + w, piece, pl);
        w += pl;
    }
    QP_CHECK_INT_EQ(w, len);
    QP_CHECK(memcmp(back, text, len) == 0);
    free(back);
    free(ids);
    free(text);
    hx_tok_destroy(t);
}

// ---------------------------------------------------------------------------------------------
// Decoding

QP_TEST(decode_should_reproduce_the_2000_byte_text) {
    struct hx_tok *t = load_llama2c("models/llama2c/tok512.bin", STORIES_VOCAB);
    size_t len, glen, n;
    char *text = stories_prefix(2000, &len);
    char *g = qpt_read_fixture("golden/ppl/tokens_first2000B.txt", &glen);
    int *ids = qpt_parse_ids(g, glen, &n);
    QP_CHECK_INT_EQ(ids[0], hx_tok_bos(t));
    char *back = malloc(len + 64);
    QP_CHECK(back != NULL);
    size_t w = 0;
    int prev = -1;
    for (size_t i = 0; i < n; i++) {
        char piece[64];
        size_t pl = hx_tok_piece(t, prev, ids[i], piece, sizeof piece);
        QP_CHECK(w + pl <= len);
        memcpy(back + w, piece, pl);
        w += pl;
        prev = ids[i];
    }
    // BOS prints nothing and the space after it is dropped: the text comes back exactly.
    QP_CHECK_INT_EQ(w, len);
    QP_CHECK(memcmp(back, text, len) == 0);
    free(back);
    free(ids);
    free(g);
    free(text);
    hx_tok_destroy(t);
}

QP_TEST(piece_should_decode_byte_tokens_and_drop_space_after_bos) {
    struct hx_tok *t = load_llama2c("models/llama2c/tok512.bin", STORIES_VOCAB);
    char out[16];
    for (int b = 0; b < 256; b++) {
        QP_CHECK_INT_EQ(hx_tok_piece(t, 5, 3 + b, out, sizeof out), 1);
        QP_CHECK_INT_EQ((unsigned char)out[0], b);
    }
    QP_CHECK_INT_EQ(hx_tok_piece(t, 1, 3 + ' ', out, sizeof out), 1); // a byte space stays
    QP_CHECK_INT_EQ(out[0], ' ');
    QP_CHECK_INT_EQ(hx_tok_piece(t, 1, 259, out, sizeof out), 1); // " t" after BOS
    QP_CHECK(memcmp(out, "t", 1) == 0);
    QP_CHECK_INT_EQ(hx_tok_piece(t, 7, 259, out, sizeof out), 2);
    QP_CHECK(memcmp(out, " t", 2) == 0);
    QP_CHECK_INT_EQ(hx_tok_piece(t, 259, 1, out, sizeof out), 0); // control tokens print nothing
    QP_CHECK_INT_EQ(hx_tok_piece(t, 259, 259, out, 1), 1);         // truncated to cap
    QP_CHECK_INT_EQ(hx_tok_piece(t, 259, 100000, out, sizeof out), 0);
    hx_tok_destroy(t);
}

// ---------------------------------------------------------------------------------------------
// Malformed tokenizer.bin files

static void check_bad_file(const char *name, const void *data, size_t len, int vocab, int want_rc,
                           const char *want_msg) {
    char *path = dup_path(qpt_write_tmp(name, data, len));
    char err[QP_ERRLEN] = "";
    struct hx_tok *t = (struct hx_tok *)&err; // must be reset to NULL
    int rc = hx_tok_load_llama2c(path, vocab, &t, err);
    QP_CHECK_MSG(rc == want_rc, "%s: rc %d (%s), want %d", name, rc, err, want_rc);
    QP_CHECK(t == NULL);
    QP_CHECK_MSG(strstr(err, path) != NULL && strncmp(err, "cannot read '", 13) == 0, "%s: message '%s'",
                 name, err);
    QP_CHECK_MSG(strstr(err, want_msg) != NULL, "%s: message '%s' lacks '%s'", name, err, want_msg);
    QP_CHECK(strchr(err, '\n') == NULL);
    free(path);
}

QP_TEST(load_llama2c_should_reject_malformed_files_with_a_message) {
    size_t len;
    unsigned char *good = (unsigned char *)qpt_read_fixture("models/llama2c/tok512.bin", &len);
    // Every truncation point fails cleanly (none may crash or succeed).
    for (size_t cut = 0; cut < len; cut += (cut < 64 ? 1 : 97)) {
        char *path = dup_path(qpt_write_tmp("cut.bin", good, cut));
        char err[QP_ERRLEN] = "";
        struct hx_tok *t = NULL;
        int rc = hx_tok_load_llama2c(path, STORIES_VOCAB, &t, err);
        QP_CHECK_MSG(rc == QP_EFORMAT && t == NULL, "cut at %zu: rc %d", cut, rc);
        QP_CHECK_MSG(strstr(err, path) != NULL, "cut at %zu: '%s'", cut, err);
        free(path);
    }
    check_bad_file("truncated.bin", good, len - 3, STORIES_VOCAB, QP_EFORMAT, "extends past end of file");
    check_bad_file("empty.bin", good, 0, STORIES_VOCAB, QP_EFORMAT, "too short");

    unsigned char *bad = malloc(len);
    QP_CHECK(bad != NULL);
    // Record 0 starts at byte 4: (score, len, bytes). Its length field is at 8.
    memcpy(bad, good, len);
    put_i32(bad + 8, -5);
    check_bad_file("negative.bin", bad, len, STORIES_VOCAB, QP_EFORMAT, "negative length -5");
    memcpy(bad, good, len);
    put_i32(bad + 8, INT32_MAX);
    check_bad_file("huge.bin", bad, len, STORIES_VOCAB, QP_EFORMAT, "token 0 (length 2147483647)");
    memcpy(bad, good, len);
    put_i32(bad + 0, -1);
    check_bad_file("maxlen.bin", bad, len, STORIES_VOCAB, QP_EFORMAT, "max_token_length");
    // A model that claims more tokens than the file holds; an impossible vocabulary size.
    check_bad_file("short.bin", good, len, 100000, QP_EFORMAT, "100000 tokens");
    check_bad_file("zero.bin", good, len, 0, QP_ERANGE, "not positive");
    free(bad);

    char err[QP_ERRLEN] = "";
    struct hx_tok *t = NULL;
    char path[4096];
    snprintf(path, sizeof path, "%s/missing.bin", qpt_tmpdir());
    QP_CHECK_INT_EQ(hx_tok_load_llama2c(path, STORIES_VOCAB, &t, err), QP_EIO);
    QP_CHECK(t == NULL && strstr(err, path) != NULL);
    free(good);
}

QP_TEST(load_llama2c_should_accept_tokens_longer_than_max_token_length) {
    size_t len;
    unsigned char *d = (unsigned char *)qpt_read_fixture("models/llama2c/tok512.bin", &len);
    put_i32(d, 1); // stated max 1, real max 7: still within the file, so accepted
    const char *path = qpt_write_tmp("shortmax.bin", d, len);
    char err[QP_ERRLEN] = "";
    struct hx_tok *t = NULL;
    QP_CHECK_MSG(hx_tok_load_llama2c(path, STORIES_VOCAB, &t, err) == 0, "%s", err);
    QP_CHECK_INT_EQ(hx_tok_n_vocab(t), STORIES_VOCAB);
    hx_tok_destroy(t);
    free(d);
}

// ---------------------------------------------------------------------------------------------
// GGUF tokenizers that are not supported or not consistent (written with the GGUF writer)

static int write_gguf(const char *path, const char *model, uint64_t n_tok, uint64_t n_scores, char *err) {
    struct hx_gguf_writer *w;
    QP_CHECK(hx_gguf_writer_create(&w) == 0);
    const char *strs[4] = {"<unk>", "<s>", "</s>", "\xe2\x96\x81" "a"};
    size_t lens[4] = {5, 3, 4, 4};
    float scores[4] = {0, 0, 0, -1};
    QP_CHECK(hx_gguf_writer_set_str(w, "general.architecture", "llama") == 0);
    if (model) QP_CHECK(hx_gguf_writer_set_str(w, "tokenizer.ggml.model", model) == 0);
    QP_CHECK(hx_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", strs, lens, n_tok) == 0);
    QP_CHECK(hx_gguf_writer_set_arr(w, "tokenizer.ggml.scores", HX_GGUF_FLOAT32, scores, n_scores) == 0);
    int rc = hx_gguf_writer_write(w, path, err);
    hx_gguf_writer_destroy(w);
    return rc;
}

static int tok_from_written(const char *name, const char *model, uint64_t n_tok, uint64_t n_scores,
                            struct hx_tok **t, char *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", qpt_tmpdir(), name);
    QP_CHECK_MSG(write_gguf(path, model, n_tok, n_scores, err) == 0, "write: %s", err);
    struct hx_gguf *g;
    QP_CHECK_MSG(hx_gguf_open(path, &g, err) == 0, "open: %s", err);
    int rc = hx_tok_from_gguf(g, t, err);
    hx_gguf_close(g);
    return rc;
}

QP_TEST(from_gguf_should_reject_other_models_and_inconsistent_arrays) {
    char err[QP_ERRLEN] = "";
    struct hx_tok *t = NULL;
    QP_CHECK_INT_EQ(tok_from_written("bert.gguf", "bert", 4, 4, &t, err), QP_ENOTSUP);
    QP_CHECK(t == NULL);
    QP_CHECK_MSG(strstr(err, "'bert'") && strstr(err, "bert.gguf"), "'%s'", err);
    // gpt2 is byte-level BPE (test_tok_bpe.c): without merges it cannot be.
    QP_CHECK_INT_EQ(tok_from_written("gpt2.gguf", "gpt2", 4, 4, &t, err), QP_ENOENT);
    QP_CHECK_MSG(strstr(err, "tokenizer.ggml.merges") && strstr(err, "gpt2.gguf"), "'%s'", err);
    QP_CHECK_INT_EQ(tok_from_written("nomodel.gguf", NULL, 4, 4, &t, err), QP_ENOENT);
    QP_CHECK_MSG(strstr(err, "tokenizer.ggml.model"), "'%s'", err);
    QP_CHECK_INT_EQ(tok_from_written("mismatch.gguf", "llama", 4, 3, &t, err), QP_EFORMAT);
    QP_CHECK_MSG(strstr(err, "3 scores for 4 tokens") && strstr(err, "mismatch.gguf"), "'%s'", err);
    // bos defaults to 1 etc.; a 4-token vocabulary with "▁a" loads, and ▁ becomes a space.
    QP_CHECK_MSG(tok_from_written("ok.gguf", "llama", 4, 4, &t, err) == 0, "%s", err);
    QP_CHECK_STR_EQ(hx_tok_str(t, 3, NULL), " a");
    QP_CHECK_INT_EQ(hx_tok_type(t, 3), HX_TOK_NORMAL);
    int *ids;
    size_t n;
    QP_CHECK(hx_tok_encode(t, "ab", 2, HX_TOK_ADD_BOS | HX_TOK_SPACE_PREFIX, &ids, &n) == 0);
    // " a" then "b" with no byte tokens in the vocabulary: unknown.
    QP_CHECK_INT_EQ(n, 3);
    QP_CHECK_INT_EQ(ids[0], 1);
    QP_CHECK_INT_EQ(ids[1], 3);
    QP_CHECK_INT_EQ(ids[2], 0);
    free(ids);
    hx_tok_destroy(t);
    // Only 2 tokens: eos (2) is outside the vocabulary.
    QP_CHECK_INT_EQ(tok_from_written("tiny.gguf", "llama", 2, 2, &t, err), QP_ERANGE);
    QP_CHECK_MSG(strstr(err, "eos"), "'%s'", err);
}
