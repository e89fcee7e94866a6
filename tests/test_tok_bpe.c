// test_tok_bpe.c — the byte-level BPE tokenizers (harness/io/hx_tok_bpe.c, hx_tok_pre.c,
// hx_tok_json.c) and the special-token and decoding paths every vocabulary shares:
// - llama.cpp's tokenizer test vectors (models/gguf/ggml-vocab-NAME.gguf.inp/.out), 100 %, for
//   every vocabulary in the fixtures: the GGUF ones directly, llama-bpe and qwen2 through the
//   Llama 3 and Qwen3 tokenizer.json files (the same vocabularies);
// - decode(encode(text)) == text on the whole WikiText-2 test file and the TinyStories text;
// - the byte map, merges by rank against a plain reference, special tokens, the BOS rules;
// - malformed vocabularies: one message naming the file and the problem.
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "hx_gguf.h"
#include "hx_model.h"
#include "hx_safetensors.h"
#include "hx_tok_impl.h"
#include "hx_tokenizer.h"
#include "kn_types.h"
#include "qp.h"
#include "qp_sha256.h"
#include "qp_test.h"
#include "qp_utf8.h"

// ---------------------------------------------------------------------------------------------
// Helpers

static struct hx_tok *open_tok(const char *rel) {
    char err[QP_ERRLEN] = "";
    struct hx_tok *t = NULL;
    int rc = hx_tok_open(qpt_fixture(rel), 0, &t, err);
    QP_CHECK_MSG(rc == 0 && t, "open %s: %d %s", rel, rc, err);
    return t;
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
    char *inp = qpt_read_fixture(rel, &inp_len);
    snprintf(rel, sizeof rel, "models/gguf/%s.gguf.out", name);
    char *outs = qpt_read_fixture(rel, &out_len);
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
        int *want = qpt_parse_ids(outs + line, line_len, &n_want), *got;
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
        char *text = qpt_read_fixture(texts[k], &len), *back, sha[65], sha_ref[65];
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

// ---------------------------------------------------------------------------------------------
// Bad vocabularies through the binary: one line naming the file and the problem, exit 2

// Runs qprobe ARGS with stdout discarded; checks exit 2, exactly one line on stderr, naming
// file and saying want.
static void expect_refused(const char *file, const char *want, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void expect_refused(const char *file, const char *want, const char *fmt, ...) {
    char args[8192], cmd[12288];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "'%s' %s 2>&1 >/dev/null", qpt_qprobe(), args);
    char *err = NULL;
    int rc = qpt_run(cmd, &err);
    QP_CHECK(err != NULL);
    size_t n = strlen(err);
    QP_CHECK_MSG(rc == 2, "exit %d, stderr: %s", rc, err);
    QP_CHECK_MSG(n > 0 && err[n - 1] == '\n' && memchr(err, '\n', n) == err + n - 1, "not one line: %s", err);
    QP_CHECK_MSG(strstr(err, file) != NULL, "does not name '%s': %s", file, err);
    QP_CHECK_MSG(strstr(err, want) != NULL, "does not say '%s': %s", want, err);
    free(err);
}

// A copy of the GPT-2 GGUF vocabulary with the first occurrence of from (after key) replaced
// by to (same length), in the scratch directory.
static const char *patched_gpt2_n(const char *name, const char *key, const char *from, const char *to, size_t n) {
    size_t len;
    char *d = qpt_read_fixture("models/gguf/ggml-vocab-gpt-2.gguf", &len);
    char *k = memmem(d, len, key, strlen(key));
    QP_CHECK(k != NULL);
    char *at = memmem(k, len - (size_t)(k - d), from, n);
    QP_CHECK(at != NULL);
    memcpy(at, to, n);
    const char *p = qpt_write_tmp(name, d, len);
    free(d);
    return p;
}

static const char *patched_gpt2(const char *name, const char *key, const char *from, const char *to) {
    QP_CHECK(strlen(from) == strlen(to));
    return patched_gpt2_n(name, key, from, to, strlen(from));
}

static const char *text_file(void) { return qpt_write_tmp("text.txt", "Hello world\n", 12); }

QP_TEST(gguf_merge_naming_an_unknown_token_should_be_refused_naming_it) {
    // The first merge "Ġ t" becomes "ɠ t": U+0260 is no token of GPT-2's.
    const char *p = patched_gpt2("badmerge.gguf", "tokenizer.ggml.merges", "\xc4\xa0 t", "\xc9\xa0 t");
    char path[4096];
    snprintf(path, sizeof path, "%s", p);
    expect_refused(path, "merge 0 '\xc9\xa0 t' names '\xc9\xa0', which is not a token", "tokenize -z '%s' --text '%s'",
                   path, text_file());
}

QP_TEST(gguf_unknown_pre_tokenizer_should_be_refused_listing_the_known_ones) {
    const char *p = patched_gpt2("badpre.gguf", "tokenizer.ggml.pre", "gpt-2", "gpt-9");
    char path[4096];
    snprintf(path, sizeof path, "%s", p);
    expect_refused(path, "pre-tokenizer 'gpt-9' is not known (known: default, llama3, llama-v3, llama-bpe",
                   "tokenize -z '%s' --text '%s'", path, text_file());
}

QP_TEST(gguf_two_ids_for_one_string_should_be_refused_as_llama_cpp_does) {
    // Token 1 '"' becomes '!', token 0's string (llama.cpp asserts on such a vocabulary).
    const char *p = patched_gpt2_n("dup.gguf", "tokenizer.ggml.tokens", "\x01\x00\x00\x00\x00\x00\x00\x00\"",
                                   "\x01\x00\x00\x00\x00\x00\x00\x00!", 9);
    char path[4096];
    snprintf(path, sizeof path, "%s", p);
    expect_refused(path, "tokens 0 and 1 are the same string '!'", "tokenize -z '%s' --text '%s'", path, text_file());
}

QP_TEST(vocabulary_larger_than_the_embedding_should_be_refused) {
    const char *voc = qpt_fixture("models/gguf/ggml-vocab-gpt-2.gguf");
    expect_refused(voc, "the tokenizer has 50257 tokens, the model 512", "ppl -m '%s' -z '%s' --text '%s'",
                   qpt_fixture("models/llama2c/stories260K.bin"), voc, text_file());
}

static const char *json_file(const char *name, const char *json) { return qpt_write_tmp(name, json, strlen(json)); }

#define JSON_HEAD "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}, \"merges\": [\"a b\"]}, "

QP_TEST(tokenizer_json_problems_should_be_refused_naming_the_file) {
    static const struct {
        const char *name, *json, *want;
    } cases[] = {
        {"regex.json", JSON_HEAD "\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"(a\"}, "
                                 "\"behavior\": \"Isolated\"}}",
         "pre-tokenizer expression '(a' does not compile: missing closing parenthesis"},
        {"utf8.json", JSON_HEAD "\"normalizer\": \"\xff\"}", "not valid UTF-8 at byte"},
        {"cut.json", JSON_HEAD "\"pre_tokenizer\": {\"type\": \"ByteLe", "the JSON ends early (truncated?)"},
        {"syntax.json", "{\"model\": [1, 2,, 3]}", "not valid JSON near byte"},
        {"merge.json", "{\"model\": {\"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [[\"a\", \"c\"]]}}",
         "merge 0 'a c' names 'c', which is not a token"},
        {"result.json", "{\"model\": {\"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a b\"]}}",
         "merge 0 'a b' makes 'ab', which is not a token"},
        {"sameid.json", "{\"model\": {\"vocab\": {\"a\": 0, \"b\": 0}, \"merges\": []}}",
         "'a' and 'b' both have id 0 in model.vocab"},
        {"samestr.json", "{\"model\": {\"vocab\": {\"a\": 0, \"a\": 1}, \"merges\": []}}",
         "tokens 0 and 1 are the same string 'a'"},
        {"added.json", "{\"model\": {\"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": []}, "
                       "\"added_tokens\": [{\"id\": 1, \"content\": \"<s>\", \"special\": true}]}",
         "added token '<s>' has the id 1 of 'b'"},
        {"wordpiece.json", "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}}}",
         "model type 'WordPiece' is not supported (only BPE)"},
        {"behavior.json", JSON_HEAD "\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"String\": \" \"}, "
                                    "\"behavior\": \"Removed\"}}",
         "pre-tokenizer Split with behavior 'Removed' is not supported (only Isolated)"},
        {"normalizer.json", JSON_HEAD "\"normalizer\": {\"type\": \"NFKC\"}}", "normalizer 'NFKC' is not supported"},
    };
    for (size_t i = 0; i < QP_ARRAY_LEN(cases); i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s", json_file(cases[i].name, cases[i].json));
        expect_refused(path, cases[i].want, "tokenize -z '%s' --text '%s'", path, text_file());
    }
}

// ---------------------------------------------------------------------------------------------
// Behaviour

QP_TEST(every_byte_should_be_its_gpt2_stand_in_token_and_decode_back) {
    struct hx_tok *t = open_tok("models/gguf/ggml-vocab-gpt-2.gguf");
    for (int b = 0; b < 256; b++) {
        char c = (char)b, *back;
        int *ids;
        size_t n, len;
        QP_CHECK(hx_tok_encode(t, &c, 1, 0, &ids, &n) == 0);
        QP_CHECK_MSG(n == 1, "byte %d: %zu tokens", b, n);
        QP_CHECK(hx_tok_decode(t, ids, n, 0, &back, &len) == 0);
        QP_CHECK_MSG(len == 1 && back[0] == c, "byte %d decodes to %zu bytes", b, len);
        if (b == ' ') QP_CHECK_STR_EQ(hx_tok_str(t, ids[0], NULL), "\xc4\xa0"); // U+0120 "Ġ"
        if (b == '\n') QP_CHECK_STR_EQ(hx_tok_str(t, ids[0], NULL), "\xc4\x8a"); // U+010A "Ċ"
        if (b == 'a') QP_CHECK_STR_EQ(hx_tok_str(t, ids[0], NULL), "a");
        if (b == 0xad) QP_CHECK_STR_EQ(hx_tok_str(t, ids[0], NULL), "\xc5\x83"); // the 68th: U+0143
        free(ids);
        free(back);
    }
    // Invalid UTF-8 is kept byte for byte (llama.cpp would read U+FFFD).
    static const char bad[] = "a\xff\xc3(b\xe2\x82";
    int *ids;
    size_t n, len;
    char *back;
    QP_CHECK(hx_tok_encode(t, bad, sizeof bad - 1, 0, &ids, &n) == 0);
    QP_CHECK(hx_tok_decode(t, ids, n, 0, &back, &len) == 0);
    QP_CHECK(len == sizeof bad - 1 && memcmp(back, bad, len) == 0);
    free(ids);
    free(back);
    hx_tok_destroy(t);
}

// The byte map itself against GPT-2's bytes_to_unicode, built here the way its Python builds it:
// the printable bytes stand for themselves, the others are appended in increasing order with the
// code points 256, 257, ... Every code point up to U+0800 is decoded once, so both directions
// and every code point that is no stand-in are checked exhaustively.
QP_TEST(gpt2_byte_map_should_be_bytes_to_unicode_both_ways) {
    int standin[256], byte_of[0x800];
    for (int cp = 0; cp < 0x800; cp++) byte_of[cp] = -1;
    int next = 256;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
        standin[b] = printable ? b : next++;
        byte_of[standin[b]] = b;
    }
    QP_CHECK_INT_EQ(next, 256 + 68);
    for (int b = 0; b < 256; b++) {
        char got[4], want[4];
        size_t n = hx_bpe_byte_char((unsigned)b, got);
        size_t wn = qp_utf8_put((uint32_t)standin[b], want);
        QP_CHECK_MSG(n == wn && memcmp(got, want, n) == 0, "byte 0x%02x: stand-in is not U+%04X", b, standin[b]);
    }
    for (int cp = 0; cp < 0x800; cp++) {
        char s[4];
        size_t n = qp_utf8_put((uint32_t)cp, s), used = 0;
        int b = hx_bpe_char_byte(s, n, &used);
        QP_CHECK_MSG(b == byte_of[cp] && used == n, "U+%04X decodes to %d (want %d), %zu of %zu bytes", cp, b,
                     byte_of[cp], used, n);
    }
    size_t used = 0;
    QP_CHECK_INT_EQ(hx_bpe_char_byte("\xc4", 1, &used), -1); // a cut sequence: one byte, no stand-in
    QP_CHECK_INT_EQ(used, 1);
}

static void encode_ids(const struct hx_tok *t, const char *text, unsigned flags, int *out, size_t cap, size_t *n) {
    int *ids;
    QP_CHECK(hx_tok_encode(t, text, strlen(text), flags, &ids, n) == 0);
    QP_CHECK(*n <= cap);
    memcpy(out, ids, *n * sizeof *ids);
    free(ids);
}

QP_TEST(control_tokens_should_be_matched_only_with_parse_special) {
    struct hx_tok *t = open_tok("models/tokenizers/llama3/tokenizer.json");
    int ids[64];
    size_t n;
    static const char text[] = "<|begin_of_text|>Hi<|eot_id|>";
    encode_ids(t, text, 0, ids, 64, &n);
    QP_CHECK(n > 3);
    for (size_t i = 0; i < n; i++) QP_CHECK(ids[i] < 128000); // text is text
    encode_ids(t, text, HX_TOK_PARSE_SPECIAL, ids, 64, &n);
    QP_CHECK_INT_EQ(n, 3);
    QP_CHECK_INT_EQ(ids[0], 128000);
    QP_CHECK_INT_EQ(ids[2], 128009);
    char *back;
    size_t len;
    QP_CHECK(hx_tok_decode(t, ids, n, 0, &back, &len) == 0);
    QP_CHECK_STR_EQ(back, "Hi"); // control tokens print nothing by default
    free(back);
    QP_CHECK(hx_tok_decode(t, ids, n, HX_TOK_PARSE_SPECIAL, &back, &len) == 0);
    QP_CHECK_STR_EQ(back, text);
    free(back);
    hx_tok_destroy(t);
}

QP_TEST(user_defined_tokens_should_always_be_matched_longest_first) {
    // MPT's user-defined whitespace runs (ids 50254.. are 24 down to 2 spaces).
    struct hx_tok *t = open_tok("models/gguf/ggml-vocab-mpt.gguf");
    int ids[16];
    size_t n;
    encode_ids(t, "a" "                         " "b", 0, ids, 16, &n); // 25 spaces
    QP_CHECK_MSG(n == 3, "%zu tokens", n);
    QP_CHECK_STR_EQ(hx_tok_str(t, ids[1], NULL), "                        "); // the 24 first
    QP_CHECK_INT_EQ(hx_tok_type(t, ids[1]), HX_TOK_USER_DEFINED);
    QP_CHECK_STR_EQ(hx_tok_str(t, ids[2], NULL), "\xc4\xa0" "b"); // the 25th joins "b" by BPE
    hx_tok_destroy(t);
}

QP_TEST(bos_should_follow_each_vocabulary_rule) {
    static const struct {
        const char *rel;
        int bos, adds;
    } cases[] = {
        {"models/gguf/ggml-vocab-deepseek-llm.gguf", 100000, 1}, // add_bos_token = true
        {"models/gguf/ggml-vocab-falcon.gguf", 11, 0},           // no key, pre 'falcon': none
        {"models/gguf/ggml-vocab-llama-spm.gguf", 1, 1},
        {"models/tokenizers/qwen3/tokenizer.json", -1, 0},      // bos_token null
        {"models/tokenizers/llama3/tokenizer.json", 128000, 0}, // no template, no add_bos_token
    };
    for (size_t i = 0; i < QP_ARRAY_LEN(cases); i++) {
        struct hx_tok *t = open_tok(cases[i].rel);
        QP_CHECK_MSG(hx_tok_bos(t) == cases[i].bos && hx_tok_adds_bos(t) == cases[i].adds, "%s: bos %d adds %d",
                     cases[i].rel, hx_tok_bos(t), hx_tok_adds_bos(t));
        QP_CHECK_INT_EQ(hx_tok_bos_added(t), cases[i].adds ? cases[i].bos : -1);
        int ids[16];
        size_t n;
        encode_ids(t, "Hi", HX_TOK_ADD_BOS | HX_TOK_SPACE_PREFIX, ids, 16, &n);
        QP_CHECK_MSG((ids[0] == cases[i].bos) == cases[i].adds, "%s: first id %d", cases[i].rel, ids[0]);
        hx_tok_destroy(t);
    }
    // Qwen3's eos from tokenizer_config.json.
    struct hx_tok *q = open_tok("models/tokenizers/qwen3/tokenizer.json");
    QP_CHECK_INT_EQ(hx_tok_eos(q), 151645);
    hx_tok_destroy(q);
}

QP_TEST(metaspace_tokenizer_json_should_merge_by_rank_with_byte_fallback) {
    // A SentencePiece-style file (Llama 2 / Mistral layout) small enough to check by hand.
    char json[8192];
    size_t w = (size_t)snprintf(json, sizeof json, "{\"model\": {\"type\": \"BPE\", \"byte_fallback\": true, "
                                                   "\"unk_token\": \"<unk>\", \"vocab\": {\"<unk>\": 0, \"<s>\": 1");
    for (int b = 0; b < 256; b++) w += (size_t)snprintf(json + w, sizeof json - w, ", \"<0x%02X>\": %d", b, 2 + b);
    snprintf(json + w, sizeof json - w,
             ", \"\xe2\x96\x81\": 258, \"a\": 259, \"b\": 260, \"\xe2\x96\x81" "a\": 261, \"ab\": 262, "
             "\"\xe2\x96\x81" "ab\": 263}, \"merges\": [\"a b\", \"\xe2\x96\x81 a\", \"\xe2\x96\x81 ab\"]}, "
             "\"added_tokens\": [{\"id\": 1, \"content\": \"<s>\", \"special\": true}], "
             "\"pre_tokenizer\": {\"type\": \"Metaspace\", \"replacement\": \"\xe2\x96\x81\", "
             "\"prepend_scheme\": \"first\", \"split\": false}, "
             "\"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": "
             "\"<s>\", \"type_id\": 0}}, {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}]}}");
    char err[QP_ERRLEN];
    struct hx_tok *t = NULL;
    QP_CHECK_MSG(hx_tok_load_json(qpt_write_tmp("tokenizer.json", json, strlen(json)), &t, err) == 0, "%s", err);
    int ids[32];
    size_t n;
    // "ab a\n": ▁ab▁a<0x0A>; "a b" (rank 0) before "▁ a" (rank 1): ▁ ab ▁a \n -> ▁ab (rank 2).
    encode_ids(t, "ab a\n", HX_TOK_ADD_BOS, ids, 32, &n);
    QP_CHECK_INT_EQ(n, 4);
    QP_CHECK_INT_EQ(ids[0], 1);
    QP_CHECK_INT_EQ(ids[1], 263);
    QP_CHECK_INT_EQ(ids[2], 261);
    QP_CHECK_INT_EQ(ids[3], 2 + '\n');
    char *back;
    size_t len;
    QP_CHECK(hx_tok_decode(t, ids, n, HX_TOK_ADD_BOS, &back, &len) == 0);
    QP_CHECK_STR_EQ(back, "ab a\n");
    free(back);
    hx_tok_destroy(t);
}

// ---------------------------------------------------------------------------------------------
// Through the binary and the model loaders

QP_TEST(tokenize_command_should_print_what_the_library_encodes) {
    const char *voc = qpt_fixture("models/tokenizers/qwen3/tokenizer.json");
    char cmd[8192], *out = NULL, want[256];
    static const char text[] = "Hello, y'all! <|im_end|>\n";
    snprintf(cmd, sizeof cmd, "'%s' tokenize -z '%s' --text '%s' --json", qpt_qprobe(), voc,
             qpt_write_tmp("t.txt", text, sizeof text - 1));
    QP_CHECK_INT_EQ(qpt_run(cmd, &out), 0);
    struct hx_tok *t = open_tok("models/tokenizers/qwen3/tokenizer.json");
    int ids[32];
    size_t n, w = (size_t)snprintf(want, sizeof want, "\"ids\":[");
    encode_ids(t, text, HX_TOK_ADD_BOS | HX_TOK_SPACE_PREFIX, ids, 32, &n);
    for (size_t i = 0; i < n; i++) w += (size_t)snprintf(want + w, sizeof want - w, i ? ",%d" : "%d", ids[i]);
    snprintf(want + w, sizeof want - w, "]");
    QP_CHECK_MSG(strstr(out, want) && qpt_json_num(out, "n_tokens") == (double)n, "%s, want %s", out, want);
    free(out);
    hx_tok_destroy(t);
    // -z with a llama2.c tokenizer.bin alone: its records are counted.
    snprintf(cmd, sizeof cmd, "'%s' tokenize -z '%s' --text '%s'", qpt_qprobe(), qpt_fixture("models/llama2c/tok512.bin"),
             qpt_write_tmp("u.txt", "Once", 4));
    QP_CHECK_INT_EQ(qpt_run(cmd, &out), 0);
    QP_CHECK_MSG(strncmp(out, "1 ", 2) == 0, "%s", out);
    free(out);
}

QP_TEST(safetensors_directory_should_use_its_tokenizer_json) {
    char err[QP_ERRLEN];
    struct hx_model *m = NULL;
    QP_CHECK_MSG(hx_model_open(qpt_fixture("models/llama2c/stories260K.bin"), NULL, &m, err) == 0, "%s", err);
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/st", qpt_tmpdir());
    QP_CHECK(mkdir(dir, 0755) == 0);
    QP_CHECK_MSG(hx_safetensors_write(&m->w, dir, KN_F32, err) == 0, "%s", err);
    hx_model_close(m);
    // A byte-level vocabulary of 256 + 2 tokens: padded to the model's 512 rows.
    char path[4200];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    size_t w = 0;
    char *j = malloc(65536);
    QP_CHECK(j != NULL);
    w += (size_t)snprintf(j + w, 65536 - w, "{\"model\": {\"type\": \"BPE\", \"vocab\": {");
    for (int b = 0; b < 256; b++) {
        // The GPT-2 stand-ins, spelled as JSON \u escapes.
        int printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
        int cp = b;
        if (!printable) {
            cp = 256;
            for (int k = 0; k < b; k++) cp += !((k >= 0x21 && k <= 0x7e) || (k >= 0xa1 && k <= 0xac) || k >= 0xae);
        }
        w += (size_t)snprintf(j + w, 65536 - w, "%s\"\\u%04x\": %d", b ? ", " : "", cp, b);
    }
    w += (size_t)snprintf(j + w, 65536 - w, ", \"\\u0120t\": 256, \"he\": 257}, \"merges\": [\"\\u0120 t\", \"h e\"]}, "
                                            "\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false}}");
    FILE *f = fopen(path, "wb");
    QP_CHECK(f && fwrite(j, 1, w, f) == w && fclose(f) == 0);
    free(j);
    QP_CHECK_MSG(hx_model_open(dir, NULL, &m, err) == 0, "%s", err);
    QP_CHECK(m->tok != NULL);
    QP_CHECK_INT_EQ(hx_tok_n_vocab(m->tok), 512);
    QP_CHECK_INT_EQ(hx_tok_type(m->tok, 300), HX_TOK_UNUSED);
    int ids[8];
    size_t n;
    encode_ids(m->tok, "he t", 0, ids, 8, &n);
    QP_CHECK_INT_EQ(n, 2);
    QP_CHECK_INT_EQ(ids[0], 257);
    QP_CHECK_INT_EQ(ids[1], 256);
    hx_model_close(m);
}
