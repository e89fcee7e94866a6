// test_fuzz_regress.c — replays saved fuzz inputs through the fuzz targets, compiled here
// without libFuzzer: every file under tests/fuzz/regress/NAME/ (inputs that once crashed a
// parser or broke one of the targets' checks) and the seed corpus tests/fuzz/corpus/NAME/.
// A case fails when an input crashes, trips a sanitizer (asan variant) or a FUZZ_CHECK (which
// aborts), or when its directories hold no input at all. A few cases also state the fixed
// behaviour directly, so that a regression is named rather than only replayed.
//
// Directories are found from QP_ROOT (the repository root; make test sets it), else the
// current directory. Depends on the fuzz targets (tests/fuzz/*.c, included below), harness/
// and quantizers/ headers.
#include "qp_test.h"

#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fuzz/fuzz_config_json.c"
#include "fuzz/fuzz_gate_rules.c"
#include "fuzz/fuzz_gguf.c"
#include "fuzz/fuzz_gguf_bpe.c"
#include "fuzz/fuzz_llama2c.c"
#include "fuzz/fuzz_prompts.c"
#include "fuzz/fuzz_refcache.c"
#include "fuzz/fuzz_safetensors.c"
#include "fuzz/fuzz_spec.c"
#include "fuzz/fuzz_sweep_config.c"
#include "fuzz/fuzz_task_dataset.c"
#include "fuzz/fuzz_task_jsonl.c"
#include "fuzz/fuzz_text.c"
#include "fuzz/fuzz_tokenize.c"
#include "fuzz/fuzz_tokenizer_bin.c"
#include "fuzz/fuzz_tokenizer_json.c"
#include "fuzz/fuzz_util.c"

typedef int (*fuzz_fn)(const uint8_t *data, size_t size);

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

// Feeds every regular file of dir (in name order) to fn; returns how many. A missing
// directory holds nothing.
static int replay_dir(const char *dir, fuzz_fn fn) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    char *names[4096];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        QP_CHECK_MSG(n < (int)QP_ARRAY_LEN(names), "more than %zu inputs in '%s'",
                     QP_ARRAY_LEN(names), dir);
        names[n] = strdup(e->d_name);
        QP_CHECK(names[n] != NULL);
        n++;
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof names[0], cmp_str);
    int fed = 0;
    for (int i = 0; i < n; i++) {
        char path[FUZZ_PATH_MAX];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
            size_t len = 0;
            char *data = qpt_read_file(path, &len);
            QP_CHECK_MSG(data != NULL, "cannot read '%s'", path);
            fprintf(stderr, "  replay %s\n", path); // names the input when it aborts
            fn((const uint8_t *)data, len);
            free(data);
            fed++;
        }
        free(names[i]);
    }
    return fed;
}

// Replays tests/fuzz/regress/NAME and tests/fuzz/corpus/NAME; there must be inputs.
static void replay(const char *name, fuzz_fn fn) {
    const char *root = getenv("QP_ROOT");
    if (!root || !*root) root = ".";
    char dir[FUZZ_PATH_MAX];
    snprintf(dir, sizeof dir, "%s/tests/fuzz/regress/%s", root, name);
    int n = replay_dir(dir, fn);
    snprintf(dir, sizeof dir, "%s/tests/fuzz/corpus/%s", root, name);
    n += replay_dir(dir, fn);
    QP_CHECK_MSG(n > 0, "no saved inputs for '%s' under '%s/tests/fuzz' (set QP_ROOT)", name, root);
}

// ---------------------------------------------------------------------------------------------
// Replays

QP_TEST(gguf_saved_inputs_should_pass_the_fuzz_checks) { replay("gguf", fuzz_gguf); }

QP_TEST(safetensors_saved_inputs_should_pass_the_fuzz_checks) {
    replay("safetensors", fuzz_safetensors);
}

QP_TEST(llama2c_saved_inputs_should_pass_the_fuzz_checks) { replay("llama2c", fuzz_llama2c); }

QP_TEST(tokenizer_bin_saved_inputs_should_pass_the_fuzz_checks) {
    replay("tokenizer_bin", fuzz_tokenizer_bin);
}

QP_TEST(spec_saved_inputs_should_pass_the_fuzz_checks) { replay("spec", fuzz_spec); }

QP_TEST(sweep_config_saved_inputs_should_pass_the_fuzz_checks) { replay("sweep_config", fuzz_sweep_config); }

QP_TEST(gate_rules_saved_inputs_should_pass_the_fuzz_checks) { replay("gate_rules", fuzz_gate_rules); }

QP_TEST(task_jsonl_saved_inputs_should_pass_the_fuzz_checks) { replay("task_jsonl", fuzz_task_jsonl); }

QP_TEST(tokenizer_json_saved_inputs_should_pass_the_fuzz_checks) { replay("tokenizer_json", fuzz_tokenizer_json); }

QP_TEST(gguf_bpe_saved_inputs_should_pass_the_fuzz_checks) { replay("gguf_bpe", fuzz_gguf_bpe); }

QP_TEST(config_json_saved_inputs_should_pass_the_fuzz_checks) { replay("config_json", fuzz_config_json); }

QP_TEST(task_dataset_saved_inputs_should_pass_the_fuzz_checks) { replay("task_dataset", fuzz_task_dataset); }

QP_TEST(text_saved_inputs_should_pass_the_fuzz_checks) { replay("text", fuzz_text); }

// The fixtures' root, from the path of one of their files.
static void fixtures_root(char *root, size_t cap) {
    snprintf(root, cap, "%s", qpt_fixture("models/llama2c/tok512.bin"));
    char *cut = strstr(root, "/models/llama2c/tok512.bin");
    QP_CHECK(cut != NULL);
    *cut = 0;
}
QP_TEST(prompts_saved_inputs_should_pass_the_fuzz_checks) {
    char err[QP_ERRLEN] = "", root[FUZZ_PATH_MAX];
    fixtures_root(root, sizeof root);
    QP_CHECK_MSG(fuzz_prompts_init(root, err) == 0, "%s", err);
    replay("prompts", fuzz_prompts);
}
QP_TEST(refcache_saved_inputs_should_pass_the_fuzz_checks) {
    char err[QP_ERRLEN] = "", root[FUZZ_PATH_MAX];
    fixtures_root(root, sizeof root);
    QP_CHECK_MSG(fuzz_refcache_init(root, err) == 0, "%s", err);
    replay("refcache", fuzz_refcache);
}
QP_TEST(tokenize_saved_inputs_should_pass_the_fuzz_checks) {
    char err[QP_ERRLEN] = "";
    int rc = fuzz_tokenize_init(qpt_fixture("models/llama2c/tok512.bin"), 512, err);
    QP_CHECK_MSG(rc == 0, "%s", err);
    replay("tokenize", fuzz_tokenize);
}

// ---------------------------------------------------------------------------------------------
// The harness itself: a broken property must abort, or the replays could never fail.

QP_TEST(fuzz_check_should_abort_on_a_false_condition) {
    pid_t pid = fork();
    QP_CHECK(pid >= 0);
    if (pid == 0) {
        fclose(stderr); // keep the expected report out of the test output
        FUZZ_CHECK(1 + 1 == 3, "arithmetic");
        _exit(0);
    }
    int st = 0;
    QP_CHECK(waitpid(pid, &st, 0) == pid);
    QP_CHECK_MSG(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT, "status %d", st);
}

// ---------------------------------------------------------------------------------------------
// Findings fixed in the parsers, stated directly (their inputs are also in tests/fuzz/regress).

// Parses s as a variant; returns the code, err holds the message.
static int spec_rc(const char *s, char *err) {
    struct qz_variant *v = NULL;
    err[0] = 0;
    int rc = qz_variant_parse(s, &v, err);
    qz_variant_destroy(v);
    return rc;
}

QP_TEST(spec_rule_with_back_reference_should_be_refused) {
    char err[QP_ERRLEN];
    // glibc's regexec recursed until the stack overflowed on this one (SIGSEGV).
    QP_CHECK_INT_EQ(spec_rc("q4_k;name~(|)(\\1\\1)*=q8_0", err), QP_EINVAL);
    QP_CHECK_MSG(strstr(err, "back-reference") != NULL, "%s", err);
    // Inside a bracket expression a backslash and a digit are two literal characters.
    QP_CHECK_INT_EQ(spec_rc("q4_k;name~blk[\\1]=q8_0", err), 0);
}

QP_TEST(spec_rule_with_exploding_repetition_should_be_refused) {
    // Each of these made glibc's regcomp run for seconds to minutes and take gigabytes.
    static const char *const bad[] = {
        "q4_k;name~o++++++++++++++++++++=q8_0",            // repetition operators in a row
        "q4_k;name~^o+t0++++x++*+++++++++y+=f32",            // (the fuzzer's second finding)
        "q4_k;name~((((((((((a*)+)+)+)+)+)+)+)+)+)+=q8_0", // nested copying repetitions
        "q4_k;name~((o+)+)+=q8_0",
        "q4_k;name~((a*)+){300}=q8_0",                      // too many copied nodes
        "q4_k;name~b(a*){,300}c=q8_0",                      // glibc's {,m} counts too
        "q4_k;name~o{257}=q8_0",
    };
    char err[QP_ERRLEN];
    for (size_t i = 0; i < QP_ARRAY_LEN(bad); i++) {
        QP_CHECK_MSG(spec_rc(bad[i], err) == QP_EINVAL, "'%s' accepted", bad[i]);
        QP_CHECK_MSG(strstr(err, "regex") != NULL, "%s", err);
    }
    // Ordinary rules, and repetition up to the bounds, are still accepted.
    static const char *const good[] = {
        "q4_k;name~blk\\.[0-9]+\\.(ffn_down|attn_v)=q6_k",
        "q4_k;name~^blk\\.[[:digit:]]{1,3}\\.ffn_.*=q8_0",
        "q4_k;name~blk\\.(1[0-9]|2[0-3])\\.attn_v\\.weight$=q6_k",
        "q4_k;name~o{256}=q8_0",
        "q4_k;name~((o+)a)+=q8_0",
        "q4_k;name~(a|b*|c?)+=q8_0",
        "q4_k;name~[+*]+x\\++=q8_0", // operators in brackets or escaped are characters
    };
    for (size_t i = 0; i < QP_ARRAY_LEN(good); i++)
        QP_CHECK_MSG(spec_rc(good[i], err) == 0, "'%s' refused: %s", good[i], err);
}

QP_TEST(spec_whose_canonical_form_exceeds_the_limit_should_be_refused) {
    char err[QP_ERRLEN];
    static char s[QZ_SPEC_MAX + 1];
    // 4095 bytes of nf4 rules print as "nf4:group=64" each: about 7 kB, which the parser would
    // refuse when reading the canonical form back.
    size_t n = (size_t)snprintf(s, sizeof s, "nf4");
    while (n + 11 <= QZ_SPEC_MAX) n += (size_t)snprintf(s + n, sizeof s - n, ";name~a=nf4");
    QP_CHECK_INT_EQ(spec_rc(s, err), QP_EINVAL);
    QP_CHECK_MSG(strstr(err, "canonical form longer") != NULL, "%s", err);
    // The same length of rules that print as written is accepted and round-trips.
    n = (size_t)snprintf(s, sizeof s, "f32");
    while (n + 11 <= QZ_SPEC_MAX) n += (size_t)snprintf(s + n, sizeof s - n, ";name~a=f32");
    struct qz_variant *v = NULL;
    QP_CHECK_INT_EQ(qz_variant_parse(s, &v, err), 0);
    static char p[QZ_SPEC_MAX + 1];
    QP_CHECK_INT_EQ(qz_variant_print(v, p, sizeof p), (long long)n);
    QP_CHECK_STR_EQ(p, s);
    qz_variant_destroy(v);
}

// ---------------------------------------------------------------------------------------------
// Hash flooding. The GGUF reader's key/tensor tables and the tokenizer's string table hashed
// with plain FNV-1a, whose low bits depend only on the low bits of the state: blocks that
// collide there can be chained, so 2^m keys that all land in one bucket are cheap to make, and
// each insert then walks all earlier ones. A 4 MB GGUF of 65536 such keys took 33 s to open,
// 65536 such tokens 24 s to load; both grow quadratically. The files below hold 2^19 (the
// old code needed about 35 minutes for each): a regression fails by the runner's time limit.
// The hashes are now seeded per reader / tokenizer.

enum { FLOOD_BLOCKS = 19, FLOOD_BITS = 20, FLOOD_KEY_LEN = 1 + 3 * FLOOD_BLOCKS };

// blk[i][0] and blk[i][1]: two 3-byte blocks (no NUL bytes) that take plain FNV-1a, after 'k'
// and the blocks before, to the same low FLOOD_BITS bits of state.
static void flood_blocks(uint8_t blk[FLOOD_BLOCKS][2][3]) {
    uint32_t *seen = malloc(sizeof(uint32_t) << FLOOD_BITS);
    QP_CHECK(seen != NULL);
    const uint64_t mask = (1ull << FLOOD_BITS) - 1, prime = 1099511628211ull;
    uint64_t h = (1469598103934665603ull ^ 'k') * prime;
    for (int i = 0; i < FLOOD_BLOCKS; i++) {
        memset(seen, 0xff, sizeof(uint32_t) << FLOOD_BITS);
        for (uint32_t x = 0;; x++) {
            uint8_t b[3] = {(uint8_t)x, (uint8_t)(x >> 8), (uint8_t)(x >> 16)};
            if (!b[0] || !b[1] || !b[2]) continue;
            uint64_t s = h;
            for (int k = 0; k < 3; k++) s = (s ^ b[k]) * prime;
            uint32_t *other = &seen[s & mask];
            if (*other != UINT32_MAX) {
                uint32_t y = *other;
                uint8_t c[3] = {(uint8_t)y, (uint8_t)(y >> 8), (uint8_t)(y >> 16)};
                memcpy(blk[i][0], c, 3);
                memcpy(blk[i][1], b, 3);
                h = s;
                break;
            }
            *other = x;
        }
    }
    free(seen);
}

// Key number k (k < 2^FLOOD_BLOCKS) into out (FLOOD_KEY_LEN bytes, no NUL).
static void flood_key(uint8_t blk[FLOOD_BLOCKS][2][3], uint64_t k, char *out) {
    out[0] = 'k';
    for (int i = 0; i < FLOOD_BLOCKS; i++) memcpy(out + 1 + 3 * i, blk[i][(k >> i) & 1], 3);
}

QP_TEST(gguf_open_should_not_crawl_on_keys_that_collide_in_plain_fnv) {
    static uint8_t blk[FLOOD_BLOCKS][2][3];
    flood_blocks(blk);
    const uint64_t n = 1ull << FLOOD_BLOCKS;
    char path[FUZZ_PATH_MAX];
    snprintf(path, sizeof path, "%s/flood.gguf", qpt_tmpdir());
    FILE *f = fopen(path, "wb");
    QP_CHECK(f != NULL);
    const uint32_t version = 3, type = HX_GGUF_UINT8;
    const uint64_t n_tensors = 0, len = FLOOD_KEY_LEN;
    fwrite("GGUF", 1, 4, f);
    fwrite(&version, 4, 1, f);
    fwrite(&n_tensors, 8, 1, f);
    fwrite(&n, 8, 1, f);
    char key[FLOOD_KEY_LEN + 1];
    for (uint64_t k = 0; k < n; k++) {
        flood_key(blk, k, key);
        fwrite(&len, 8, 1, f);
        fwrite(key, 1, FLOOD_KEY_LEN, f);
        fwrite(&type, 4, 1, f);
        fputc((int)(k & 0x7f), f);
    }
    QP_CHECK(fclose(f) == 0);

    struct hx_gguf *g = NULL;
    char err[QP_ERRLEN] = "";
    QP_CHECK_MSG(hx_gguf_open(path, &g, err) == 0, "%s", err);
    QP_CHECK_INT_EQ(hx_gguf_n_kv(g), (long long)n);
    for (uint64_t k = 0; k < n; k += n / 7) { // lookups go through the same table
        flood_key(blk, k, key);
        key[FLOOD_KEY_LEN] = 0;
        const struct hx_gguf_kv *kv = hx_gguf_find(g, key);
        QP_CHECK(kv != NULL && kv->val.v.u == (k & 0x7f));
    }
    hx_gguf_close(g);
    unlink(path);
}

QP_TEST(tokenizer_load_should_not_crawl_on_tokens_that_collide_in_plain_fnv) {
    static uint8_t blk[FLOOD_BLOCKS][2][3];
    flood_blocks(blk);
    const int n = 1 << FLOOD_BLOCKS;
    char path[FUZZ_PATH_MAX];
    snprintf(path, sizeof path, "%s/flood.bin", qpt_tmpdir());
    FILE *f = fopen(path, "wb");
    QP_CHECK(f != NULL);
    const int32_t max_len = FLOOD_KEY_LEN, len = FLOOD_KEY_LEN;
    const float score = 0.0f;
    fwrite(&max_len, 4, 1, f);
    char key[FLOOD_KEY_LEN];
    for (int k = 0; k < n; k++) {
        flood_key(blk, (uint64_t)k, key);
        fwrite(&score, 4, 1, f);
        fwrite(&len, 4, 1, f);
        fwrite(key, 1, FLOOD_KEY_LEN, f);
    }
    QP_CHECK(fclose(f) == 0);

    struct hx_tok *t = NULL;
    char err[QP_ERRLEN] = "";
    QP_CHECK_MSG(hx_tok_load_llama2c(path, n, &t, err) == 0, "%s", err);
    QP_CHECK_INT_EQ(hx_tok_n_vocab(t), n);
    // Encoding a token's own text looks it up through the same table and finds it.
    flood_key(blk, 12345, key);
    int *ids = NULL;
    size_t n_ids = 0;
    QP_CHECK_INT_EQ(hx_tok_encode(t, key, FLOOD_KEY_LEN, 0, &ids, &n_ids), 0);
    QP_CHECK(n_ids >= 1);
    for (size_t i = 0; i < n_ids; i++) QP_CHECK(ids[i] >= 0 && ids[i] < n);
    free(ids);
    hx_tok_destroy(t);
    unlink(path);
}

// A sweep configuration's integer beyond long long (fuzz_sweep_config: "ctx": 9.2e21 was cast to
// long long before its range was checked, undefined behaviour) and a grid axis beyond int are
// refused as out of range.
QP_TEST(sweep_config_numbers_beyond_the_integer_types_should_be_refused) {
    static const char *const bad[] = {
        "\"eval\": {\"text\": \"%s\", \"ctx\": 9223372036854775808128}, \"variants\": [\"q8_0\"]",
        "\"eval\": {\"text\": \"%s\", \"ctx\": -1e300}, \"variants\": [\"q8_0\"]",
        "\"eval\": {\"text\": \"%s\"}, \"grid\": [{\"method\": \"rtn\", \"bits\": [1e300], \"group\": [32]}]",
    };
    static const char *const want[] = {"eval.ctx: must be an integer in", "eval.ctx: must be an integer in",
                                       "grid[0].bits"};
    char model[FUZZ_PATH_MAX], text[FUZZ_PATH_MAX];
    snprintf(model, sizeof model, "%s", qpt_fixture("models/llama2c/stories260K.bin"));
    snprintf(text, sizeof text, "%s", qpt_fixture("data/tinystories/tinystories_val.txt"));
    for (size_t i = 0; i < QP_ARRAY_LEN(bad); i++) {
        char json[3 * FUZZ_PATH_MAX], body[2 * FUZZ_PATH_MAX], path[FUZZ_PATH_MAX], err[QP_ERRLEN] = "";
        snprintf(body, sizeof body, bad[i], text);
        int n = snprintf(json, sizeof json, "{\"model\": \"%s\", %s}", model, body);
        fuzz_write("big.json", json, (size_t)n, path);
        struct hx_sweep_config *cfg = NULL;
        int rc = hx_sweep_config_load(path, &cfg, err);
        QP_CHECK_MSG(rc != 0 && cfg == NULL, "config %zu accepted", i);
        QP_CHECK_MSG(strstr(err, want[i]) != NULL, "config %zu: %s", i, err);
    }
}

// Prompts files (fuzz_prompts): a line holding only a NUL was skipped as blank, and a JSONL line
// with text after its object was accepted with the text dropped; both are refused, naming the line.
QP_TEST(prompts_nul_line_and_text_after_jsonl_object_should_be_refused) {
    static const char *const bad[] = {"Once upon a time\n\0\n", "{\"prompt\": \"a\"} {\"prompt\": \"b\"}\n"};
    static const size_t len[] = {19, 32};
    static const char *const want[] = {":2: contains a NUL byte", ":1: text after the JSON value"};
    char err[QP_ERRLEN] = "", root[FUZZ_PATH_MAX];
    fixtures_root(root, sizeof root);
    QP_CHECK_MSG(fuzz_prompts_init(root, err) == 0, "%s", err);
    struct hx_gen_opts o;
    hx_gen_opts_default(&o);
    o.n_tokens = 8;
    for (size_t i = 0; i < QP_ARRAY_LEN(bad); i++) {
        char path[FUZZ_PATH_MAX];
        fuzz_write("bad_prompts.txt", bad[i], len[i], path);
        struct hx_gen_prompts p;
        int rc = hx_gen_prompts_read(path, fp_tok, 512, &o, &p, err);
        QP_CHECK_MSG(rc == QP_EFORMAT, "file %zu: code %d", i, rc);
        QP_CHECK_MSG(strstr(err, want[i]) != NULL, "file %zu: %s", i, err);
    }
}

// A tokenizer.json whose ids leave more holes than tokens (fuzz_tokenizer_json: one id of 23e6 in
// a 4.6 kB file built a 23-million-token vocabulary, 1.1 GB and 28 s) is refused in one line.
QP_TEST(tokenizer_json_with_an_id_far_beyond_its_tokens_should_be_refused) {
    char path[FUZZ_PATH_MAX], err[QP_ERRLEN] = "";
    const char *root = getenv("QP_ROOT");
    snprintf(path, sizeof path, "%s/tests/fuzz/regress/tokenizer_json/id_23e6_makes_23m_token_vocab.json",
             root && *root ? root : ".");
    struct hx_tok *t = NULL;
    QP_CHECK_INT_EQ(hx_tok_load_json(path, &t, err), QP_EFORMAT);
    QP_CHECK(t == NULL);
    QP_CHECK_MSG(strstr(err, "more holes than tokens") && strstr(err, path) && !strchr(err, '\n'), "%s", err);
}
