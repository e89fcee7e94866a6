// test_tok_bpe.c — the byte-level BPE tokenizers (harness/io/hx_tok_bpe.c, hx_tok_pre.c,
// hx_tok_json.c) and the special-token and decoding paths every vocabulary shares:
// - llama.cpp's tokenizer test vectors (models/gguf/ggml-vocab-NAME.gguf.inp/.out), 100 %, for
//   every vocabulary in the fixtures: the GGUF ones directly, llama-bpe and qwen2 through the
//   Llama 3 and Qwen3 tokenizer.json files (the same vocabularies);
// - decode(encode(text)) == text on the whole WikiText-2 test file and the TinyStories text;
// - the byte map, merges by rank against a plain reference, special tokens, the BOS rules;
// - malformed vocabularies: one message naming the file and the problem.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hx_gguf.h"
#include "hx_tokenizer.h"
#include "qp.h"
#include "qp_sha256.h"
#include "qp_test.h"

// ---------------------------------------------------------------------------------------------
// Helpers

static struct hx_tok *open_tok(const char *rel) {
    char err[QP_ERRLEN] = "";
    struct hx_tok *t = NULL;
    int rc = hx_tok_open(qpt_fixture(rel), 0, &t, err);
    QP_CHECK_MSG(rc == 0 && t, "open %s: %d %s", rel, rc, err);
    return t;
}

static char *read_fixture(const char *rel, size_t *len) {
    char *d = qpt_read_file(qpt_fixture(rel), len);
    QP_CHECK_MSG(d != NULL, "cannot read fixture %s", rel);
    return d;
}

__attribute__((unused)) static const char *write_tmp(const char *name, const void *data, size_t len) {
    static char path[4096];
    snprintf(path, sizeof path, "%s/%s", qpt_tmpdir(), name);
    FILE *f = fopen(path, "wb");
    QP_CHECK(f != NULL);
    QP_CHECK(fwrite(data, 1, len, f) == len);
    QP_CHECK(fclose(f) == 0);
    return path;
}

// Whitespace-separated ids of s[0..len) into a malloc'd array.
static int *parse_ids(const char *s, size_t len, size_t *n) {
    int *ids = malloc((len / 2 + 1) * sizeof *ids);
    QP_CHECK(ids != NULL);
    size_t k = 0, i = 0;
    while (i < len) {
        while (i < len && (s[i] == ' ' || s[i] == '\r')) i++;
        if (i == len) break;
        long v = 0;
        QP_CHECK_MSG(s[i] >= '0' && s[i] <= '9', "bad id list near byte %zu", i);
        while (i < len && s[i] >= '0' && s[i] <= '9') v = v * 10 + (s[i++] - '0');
        ids[k++] = (int)v;
    }
    *n = k;
    return ids;
}

// Runs llama.cpp's vectors NAME.gguf.inp/.out (inputs separated by "\n__ggml_vocab_test__\n",
// the last one ending before the final "\n__ggml_vocab_test__"; one line of ids per input) as
// its test-tokenizer-0 does (add_special = false, parse_special = false), and checks that each
// input also decodes back to itself. Prints every mismatch; returns their count.
static int run_vectors(const struct hx_tok *t, const char *name, unsigned flags, int *n_cases) {
    static const char sep[] = "\n__ggml_vocab_test__\n";
    char rel[256];
    size_t inp_len, out_len;
    snprintf(rel, sizeof rel, "models/gguf/%s.gguf.inp", name);
    char *inp = read_fixture(rel, &inp_len);
    snprintf(rel, sizeof rel, "models/gguf/%s.gguf.out", name);
    char *outs = read_fixture(rel, &out_len);
    size_t pos = 0, line = 0;
    int bad = 0, cases = 0;
    while (pos < inp_len) {
        const char *end = memmem(inp + pos, inp_len - pos, sep, sizeof sep - 1);
        size_t len = end ? (size_t)(end - (inp + pos)) : inp_len - pos;
        if (!end && len >= sizeof sep - 2 && memcmp(inp + pos + len - (sizeof sep - 2), sep, sizeof sep - 2) == 0)
            len -= sizeof sep - 2; // the final separator has no newline after it
        QP_CHECK_MSG(line < out_len, "%s: no expected line for input %d", name, cases);
        const char *eol = memchr(outs + line, '\n', out_len - line);
        size_t line_len = eol ? (size_t)(eol - (outs + line)) : out_len - line;
        size_t n_want, n_got;
        int *want = parse_ids(outs + line, line_len, &n_want), *got;
        QP_CHECK(hx_tok_encode(t, inp + pos, len, flags, &got, &n_got) == 0);
        int same = n_got == n_want && memcmp(got, want, n_got * sizeof *got) == 0;
        if (!same) {
            fprintf(stderr, "%s input %d '%.*s':\n  want", name, cases, (int)QP_MIN(len, (size_t)60), inp + pos);
            for (size_t i = 0; i < n_want; i++) fprintf(stderr, " %d", want[i]);
            fprintf(stderr, "\n  got ");
            for (size_t i = 0; i < n_got; i++) fprintf(stderr, " %d", got[i]);
            fprintf(stderr, "\n");
            bad++;
        }
        char *back;
        size_t back_len;
        QP_CHECK(hx_tok_decode(t, got, n_got, flags, &back, &back_len) == 0);
        if (back_len != len || memcmp(back, inp + pos, len) != 0) {
            fprintf(stderr, "%s input %d '%.*s' decodes to '%.*s'\n", name, cases, (int)QP_MIN(len, (size_t)60),
                    inp + pos, (int)QP_MIN(back_len, (size_t)60), back);
            bad++;
        }
        free(back);
        free(got);
        free(want);
        cases++;
        pos += len + (end ? sizeof sep - 1 : inp_len - pos - len);
        line += line_len + 1;
    }
    QP_CHECK_MSG(line >= out_len, "%s: more expected lines than inputs", name);
    free(inp);
    free(outs);
    *n_cases = cases;
    return bad;
}

static void check_gguf_vectors(const char *name, const char *want_kind, unsigned flags) {
    char rel[256];
    snprintf(rel, sizeof rel, "models/gguf/%s.gguf", name);
    struct hx_tok *t = open_tok(rel);
    QP_CHECK_MSG(strstr(hx_tok_describe(t), want_kind) == hx_tok_describe(t), "%s is '%s'", name,
                 hx_tok_describe(t));
    int cases, bad = run_vectors(t, name, flags, &cases);
    QP_CHECK_MSG(bad == 0, "%s: %d of %d vectors differ from llama.cpp's", name, bad, cases);
    QP_CHECK_MSG(cases >= 40, "%s: only %d vectors", name, cases);
    hx_tok_destroy(t);
}

// ---------------------------------------------------------------------------------------------
// llama.cpp's test vectors, one vocabulary per case

QP_TEST(gpt2_vocab_should_match_llama_cpp_vectors) { check_gguf_vectors("ggml-vocab-gpt-2", "bpe", 0); }
QP_TEST(deepseek_llm_vocab_should_match_llama_cpp_vectors) { check_gguf_vectors("ggml-vocab-deepseek-llm", "bpe", 0); }
QP_TEST(deepseek_coder_vocab_should_match_llama_cpp_vectors) {
    check_gguf_vectors("ggml-vocab-deepseek-coder", "bpe", 0);
}
QP_TEST(falcon_vocab_should_match_llama_cpp_vectors) { check_gguf_vectors("ggml-vocab-falcon", "bpe", 0); }
QP_TEST(starcoder_vocab_should_match_llama_cpp_vectors) { check_gguf_vectors("ggml-vocab-starcoder", "bpe", 0); }
QP_TEST(mpt_vocab_should_match_llama_cpp_vectors) { check_gguf_vectors("ggml-vocab-mpt", "bpe", 0); }
QP_TEST(refact_vocab_should_match_llama_cpp_vectors) { check_gguf_vectors("ggml-vocab-refact", "bpe", 0); }
QP_TEST(phi3_spm_vocab_should_match_llama_cpp_vectors) {
    check_gguf_vectors("ggml-vocab-phi-3", "spm", HX_TOK_SPACE_PREFIX);
}
QP_TEST(llama_spm_vocab_should_match_llama_cpp_vectors) {
    check_gguf_vectors("ggml-vocab-llama-spm", "spm", HX_TOK_SPACE_PREFIX);
}

static void check_json_vectors(const char *json, const char *name, const char *pre) {
    struct hx_tok *t = open_tok(json);
    QP_CHECK_STR_EQ(hx_tok_pre_name(t), pre);
    int cases, bad = run_vectors(t, name, 0, &cases);
    QP_CHECK_MSG(bad == 0, "%s: %d of %d vectors differ from llama.cpp's", name, bad, cases);
    QP_CHECK_MSG(cases >= 40, "%s: only %d vectors", name, cases);
    hx_tok_destroy(t);
}

QP_TEST(llama3_tokenizer_json_should_match_llama_bpe_vectors) {
    check_json_vectors("models/tokenizers/llama3/tokenizer.json", "ggml-vocab-llama-bpe", "llama-bpe");
}

QP_TEST(qwen3_tokenizer_json_should_match_qwen2_vectors) {
    check_json_vectors("models/tokenizers/qwen3/tokenizer.json", "ggml-vocab-qwen2", "qwen2");
}

// ---------------------------------------------------------------------------------------------
// Round trip on whole texts

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// The line of tests/golden/llama_tokenize/reference.txt for vocab and text: token count and
// the SHA-256 of llama-tokenize's stdout ("[id, id, ...]\n").
static void reference_line(const char *vocab, const char *text, size_t *n, char sha[65]) {
    char path[4096], want[128];
    snprintf(path, sizeof path, "%s/tests/golden/llama_tokenize/reference.txt",
             getenv("QP_ROOT") ? getenv("QP_ROOT") : ".");
    size_t len;
    char *ref = qpt_read_file(path, &len);
    QP_CHECK_MSG(ref != NULL, "cannot read %s (set QP_ROOT)", path);
    snprintf(want, sizeof want, "\n%s %s ", vocab, text);
    const char *at = strstr(ref, want);
    QP_CHECK_MSG(at != NULL, "no reference for %s on %s", vocab, text);
    QP_CHECK(sscanf(at + strlen(want), "%zu %64s", n, sha) == 2);
    free(ref);
}

// The SHA-256 of ids printed as llama-tokenize --ids prints them.
static void ids_sha(const int *ids, size_t n, char sha[65]) {
    struct qp_sha256 h;
    qp_sha256_init(&h);
    qp_sha256_update(&h, "[", 1);
    for (size_t i = 0; i < n; i++) {
        char buf[32];
        int l = snprintf(buf, sizeof buf, i ? ", %d" : "%d", ids[i]);
        qp_sha256_update(&h, buf, (size_t)l);
    }
    qp_sha256_update(&h, "]\n", 2);
    qp_sha256_final(&h, sha);
}

// The whole WikiText-2 test file and the TinyStories text: the ids llama.cpp's llama-tokenize
// printed for them (no BOS), and decode(encode(text)) == text with the flags the engine uses.
static void check_whole_texts(const char *rel, const char *vocab, unsigned flags) {
    static const char *const texts[] = {"data/wikitext-2-raw/wiki.test.raw", "data/tinystories/tinystories_val.txt"};
    struct hx_tok *t = open_tok(rel);
    for (size_t k = 0; k < QP_ARRAY_LEN(texts); k++) {
        size_t len, n, back_len, n_ref;
        char *text = read_fixture(texts[k], &len), *back, sha[65], sha_ref[65];
        int *ids;
        double t0 = now_s();
        QP_CHECK(hx_tok_encode(t, text, len, flags & ~(unsigned)HX_TOK_ADD_BOS, &ids, &n) == 0);
        double t1 = now_s();
        reference_line(vocab, strrchr(texts[k], '/') + 1, &n_ref, sha_ref);
        ids_sha(ids, n, sha);
        QP_CHECK_MSG(n == n_ref && strcmp(sha, sha_ref) == 0, "%s on %s: %zu tokens (llama.cpp %zu), ids differ", rel,
                     texts[k], n, n_ref);
        printf("%s: %s %zu bytes -> %zu tokens in %.3f s (%.1f MB/s)\n", rel, texts[k], len, n, t1 - t0,
               (double)len / 1e6 / (t1 - t0));
        free(ids);
        QP_CHECK(hx_tok_encode(t, text, len, flags, &ids, &n) == 0);
        QP_CHECK(hx_tok_decode(t, ids, n, flags, &back, &back_len) == 0);
        size_t at = 0;
        while (at < QP_MIN(len, back_len) && text[at] == back[at]) at++;
        QP_CHECK_MSG(back_len == len && at == len, "%s on %s: decoded %zu bytes of %zu, first difference at %zu", rel,
                     texts[k], back_len, len, at);
        free(ids);
        free(back);
        free(text);
    }
    hx_tok_destroy(t);
}

QP_TEST(gpt2_vocab_should_match_llama_cpp_and_round_trip_whole_texts) { check_whole_texts("models/gguf/ggml-vocab-gpt-2.gguf", "gpt-2", 0); }
QP_TEST(deepseek_llm_vocab_should_match_llama_cpp_and_round_trip_whole_texts) {
    check_whole_texts("models/gguf/ggml-vocab-deepseek-llm.gguf", "deepseek-llm", 0);
}
QP_TEST(deepseek_coder_vocab_should_match_llama_cpp_and_round_trip_whole_texts) {
    check_whole_texts("models/gguf/ggml-vocab-deepseek-coder.gguf", "deepseek-coder", 0);
}
QP_TEST(falcon_vocab_should_match_llama_cpp_and_round_trip_whole_texts) { check_whole_texts("models/gguf/ggml-vocab-falcon.gguf", "falcon", 0); }
QP_TEST(starcoder_vocab_should_match_llama_cpp_and_round_trip_whole_texts) {
    check_whole_texts("models/gguf/ggml-vocab-starcoder.gguf", "starcoder", 0);
}
QP_TEST(mpt_vocab_should_match_llama_cpp_and_round_trip_whole_texts) { check_whole_texts("models/gguf/ggml-vocab-mpt.gguf", "mpt", 0); }
QP_TEST(refact_vocab_should_match_llama_cpp_and_round_trip_whole_texts) { check_whole_texts("models/gguf/ggml-vocab-refact.gguf", "refact", 0); }
QP_TEST(phi3_vocab_should_match_llama_cpp_and_round_trip_whole_texts) {
    check_whole_texts("models/gguf/ggml-vocab-phi-3.gguf", "phi-3", HX_TOK_ADD_BOS | HX_TOK_SPACE_PREFIX);
}
QP_TEST(llama_spm_vocab_should_match_llama_cpp_and_round_trip_whole_texts) {
    check_whole_texts("models/gguf/ggml-vocab-llama-spm.gguf", "llama-spm", HX_TOK_ADD_BOS | HX_TOK_SPACE_PREFIX);
}
QP_TEST(llama3_json_should_match_llama_cpp_and_round_trip_whole_texts) {
    check_whole_texts("models/tokenizers/llama3/tokenizer.json", "llama3", HX_TOK_ADD_BOS);
}
QP_TEST(qwen3_json_should_match_llama_cpp_and_round_trip_whole_texts) {
    check_whole_texts("models/tokenizers/qwen3/tokenizer.json", "qwen2", HX_TOK_ADD_BOS);
}
