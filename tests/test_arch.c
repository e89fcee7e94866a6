// test_arch.c — the model families (Llama 3 / Mistral, Qwen2, Phi-3, Gemma 2) against llama.cpp:
// the small model of each family (`qprobe synth --arch A --seed 1`) gives llama.cpp's perplexity
// within 0.05 % and its greedy tokens (tests/golden/arch/, written by scripts/arch-golden.sh
// with llama.cpp at the commit tests/golden/arch/README.md names); each variant of the block,
// switched off, moves the perplexity far beyond that tolerance (so the match means something);
// the same weights through safetensors + config.json give the same numbers; every command runs
// on every family; bad files fail with one line and exit status 2.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hx_gguf.h"
#include "hx_model.h"
#include "hx_synth.h"
#include "hx_variant.h"
#include "kn_ops.h"
#include "qz_spec.h"
#include "hx_tokenizer.h"
#include "kn_engine.h"
#include "kn_train.h"
#include "qp.h"
#include "qp_sha256.h"
#include "qp_test.h"

#define ARCH_TEXT_BYTES 8192 // the golden files' text: this prefix of tinystories_val.txt
#define PPL_REL_TOL 5e-4     // the bound: 0.05 % of llama.cpp's perplexity
#define MAX_IDS 64


// ---------------------------------------------------------------------------------------------
// Golden files

struct golden {
    char sha[65];
    double ppl;
    int n_prompts;
    char prompt[2][64];
    int ids[2][MAX_IDS], n_ids[2];
};

static void golden_read(const char *arch, struct golden *g) {
    const char *root = getenv("QP_ROOT");
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/golden/arch/%s.txt", root ? root : ".", arch);
    char *text = qpt_read_file(path, NULL);
    QP_CHECK_MSG(text != NULL, "cannot read '%s' (set QP_ROOT to the repository)", path);
    memset(g, 0, sizeof *g);
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        if (sscanf(line, "model_sha256 %64s", g->sha) == 1) continue;
        if (sscanf(line, "ppl_ctx128_chunks4 %lf", &g->ppl) == 1) continue;
        if (strncmp(line, "greedy_ctx128 \"", 15) == 0 && g->n_prompts < 2) {
            int k = g->n_prompts++;
            char *q = strchr(line + 15, '"');
            QP_CHECK(q && q - (line + 15) < 64);
            memcpy(g->prompt[k], line + 15, (size_t)(q - (line + 15)));
            for (char *p = q + 1; *p && g->n_ids[k] < MAX_IDS;) {
                char *end;
                long v = strtol(p, &end, 10);
                if (end == p) break;
                g->ids[k][g->n_ids[k]++] = (int)v;
                p = end;
            }
        }
    }
    free(text);
    QP_CHECK_MSG(g->sha[0] && g->ppl > 0 && g->n_prompts == 2, "incomplete golden file '%s'", path);
}

// ---------------------------------------------------------------------------------------------
// Helpers

static void run_ok(const char *cmd, char **out) {
    int rc = qpt_run(cmd, out);
    QP_CHECK_MSG(rc == 0, "'%s' exited %d: %s", cmd, rc, out && *out ? *out : "");
}

// Writes the family's small model with seed 1 (as the golden files were made) and checks that its
// bytes are the ones llama.cpp read. Returns the path (static).
static const char *synth_arch_layers(const char *arch, const struct golden *g, int layers) {
    static char path[4200];
    snprintf(path, sizeof path, "%s/%s.gguf", qpt_tmpdir(), arch);
    char cmd[8800], lopt[32] = "";
    if (layers) snprintf(lopt, sizeof lopt, "--layers %d", layers);
    snprintf(cmd, sizeof cmd, "QP_FIXTURES='%s' '%s' synth --arch %s --seed 1 %s -t 2 -o '%s' >/dev/null 2>&1",
             getenv("QP_FIXTURES") ? getenv("QP_FIXTURES") : "../shared/fixtures", qpt_qprobe(), arch, lopt, path);
    run_ok(cmd, NULL);
    if (g) {
        char hex[65], err[QP_ERRLEN];
        QP_CHECK_MSG(qp_sha256_file(path, hex, err) == 0, "%s", err);
        QP_CHECK_MSG(strcmp(hex, g->sha) == 0,
                     "synth --arch %s wrote other bytes than llama.cpp read (%s, golden %s): the generator "
                     "changed; rerun scripts/arch-golden.sh", arch, hex, g->sha);
    }
    return path;
}

static const char *synth_arch(const char *arch, const struct golden *g) { return synth_arch_layers(arch, g, 0); }

static double ppl_of(const char *model, const char *extra) {
    char cmd[9000], *out = NULL;
    snprintf(cmd, sizeof cmd, "'%s' ppl -m '%s' --text '%s' --ctx 128 --chunks 4 -t 2 --json %s 2>/dev/null", qpt_qprobe(),
             model, qpt_text_prefix(ARCH_TEXT_BYTES), extra ? extra : "");
    run_ok(cmd, &out);
    double ppl = qpt_json_num(out, "ppl");
    free(out);
    return ppl;
}

// The ids qprobe generates after prompt in a context of 128 (llama.cpp's -c 128).
static int greedy_of(const char *model, const char *prompt, const char *extra, int *ids, int max) {
    char cmd[9000], *out = NULL;
    snprintf(cmd, sizeof cmd, "'%s' generate -m '%s' -p '%s' -n 128 --json %s 2>/dev/null", qpt_qprobe(), model, prompt,
             extra ? extra : "");
    run_ok(cmd, &out);
    char *p = strstr(out, "\"ids\":[");
    QP_CHECK_MSG(p != NULL, "no ids in %s", out);
    int n = 0;
    for (p += 7; *p && *p != ']' && n < max;) {
        char *end;
        ids[n++] = (int)strtol(p, &end, 10);
        p = end + (*end == ',');
    }
    free(out);
    return n;
}

static void check_ppl(const char *arch, double got, double want, const char *how) {
    double rel = fabs(got - want) / want;
    QP_CHECK_MSG(rel <= PPL_REL_TOL, "%s %s: qprobe %.4f, llama.cpp %.4f (%.4f %%, bound 0.05 %%)", arch, how, got, want,
                 100 * rel);
    fprintf(stderr, "%s %s: qprobe %.4f, llama.cpp %.4f (%.5f %%)\n", arch, how, got, want, 100 * rel);
}

static void check_greedy(const char *arch, const char *model, const struct golden *g, const char *extra) {
    for (int k = 0; k < g->n_prompts; k++) {
        int ids[128];
        int n = greedy_of(model, g->prompt[k], extra, ids, 128);
        QP_CHECK_MSG(n >= g->n_ids[k], "%s: %d tokens generated, llama.cpp %d", arch, n, g->n_ids[k]);
        for (int i = 0; i < g->n_ids[k]; i++)
            QP_CHECK_MSG(ids[i] == g->ids[k][i], "%s \"%s\": token %d is %d, llama.cpp's %d", arch, g->prompt[k], i,
                         ids[i], g->ids[k][i]);
    }
}

// ---------------------------------------------------------------------------------------------
// The core proof: GGUF against llama.cpp

static void gguf_vs_llamacpp(const char *arch) {
    struct golden g;
    golden_read(arch, &g);
    const char *m = synth_arch(arch, &g);
    check_ppl(arch, ppl_of(m, NULL), g.ppl, "gguf ppl");
    check_greedy(arch, m, &g, NULL);
}

QP_TEST(llama_gguf_should_match_llamacpp_ppl_and_greedy_tokens) { gguf_vs_llamacpp("llama"); }
QP_TEST(qwen2_gguf_should_match_llamacpp_ppl_and_greedy_tokens) { gguf_vs_llamacpp("qwen2"); }
QP_TEST(phi3_gguf_should_match_llamacpp_ppl_and_greedy_tokens) { gguf_vs_llamacpp("phi3"); }
QP_TEST(gemma2_gguf_should_match_llamacpp_ppl_and_greedy_tokens) { gguf_vs_llamacpp("gemma2"); }

// ---------------------------------------------------------------------------------------------
// Each variant matters: switched off in the loaded config, the perplexity (2 windows of 128)
// moves by more than 0.5 % (ten times the tolerance), so agreeing with llama.cpp within 0.05 %
// tests it.

static double ppl_inproc(const struct kn_weights *w, const int *toks, int n_chunks) {
    char err[QP_ERRLEN];
    struct kn_engine *e;
    struct kn_state *s;
    QP_CHECK_MSG(kn_engine_create(w, NULL, &e, err) == 0, "%s", err);
    QP_CHECK_MSG(kn_state_create(e, 128, 128, 1, &s, err) == 0, "%s", err); // (one thread: no spinning on a busy machine)
    int V = w->cfg.vocab_size;
    float *lg = malloc(sizeof(float) * 64 * (size_t)V);
    double nll = 0;
    int n = 0;
    for (int c = 0; c < n_chunks; c++) {
        kn_state_reset(s);
        kn_forward(s, toks + c * 128, 128, lg, 64, NULL);
        for (int i = 64; i < 127; i++) {
            const float *l = lg + (size_t)(i - 64) * V;
            nll += kn_ops_ref.logsumexp(l, V, NULL) - l[toks[c * 128 + i + 1]];
            n++;
        }
    }
    free(lg);
    kn_state_destroy(s);
    kn_engine_destroy(e);
    return exp(nll / n);
}

static void variants_matter(const char *arch) {
    const char *path = synth_arch(arch, NULL);
    char err[QP_ERRLEN];
    struct hx_model *m;
    QP_CHECK_MSG(hx_model_open(path, NULL, &m, err) == 0, "%s", err);
    size_t len;
    char *text = qpt_read_file(qpt_text_prefix(ARCH_TEXT_BYTES), &len);
    int *toks = NULL;
    size_t nt = 0;
    QP_CHECK(hx_tok_encode(m->tok, text, len, HX_TOK_ADD_BOS | HX_TOK_SPACE_PREFIX, &toks, &nt) == 0 && nt >= 512);
    int chunks = m->w.cfg.n_layers > 4 ? 1 : 2; // (Gemma 2's 26 layers: one window is enough)
    double base = ppl_inproc(&m->w, toks, chunks);
    struct kn_weights w = m->w;
    struct kn_config *c = &w.cfg;
    // (each entry is undone by the case of the same index below)
    const struct {
        const char *what;
        int applies;
    } v[] = {
        {"rotate-half RoPE", c->rope_neox},
        {"RoPE frequency factors", w.rope_freqs.data || w.rope_long.data},
        {"RoPE attention factor", c->rope_attn_factor > 0},
        {"q/k/v biases", c->has_qkv_bias},
        {"embedding scale", c->embd_scale > 0},
        {"GELU gating", c->act == KN_ACT_GELU_TANH},
        {"post-norms", c->post_norms},
        {"query scale (left out)", c->attn_scale > 0},
        {"attention soft-cap", c->attn_softcap > 0},
        {"final soft-cap", c->final_softcap > 0},
        {"sliding window", c->swa_window > 0},
        {"alternating window", c->swa_every > 1},
    };
    int tried = 0;
    for (size_t i = 0; i < QP_ARRAY_LEN(v); i++) {
        if (!v[i].applies) continue;
        struct kn_weights x = m->w;
        struct kn_config *xc = &x.cfg;
        switch (i) {
        case 0: xc->rope_neox = 0; break;
        case 1: x.rope_freqs.data = x.rope_long.data = x.rope_short.data = NULL; break;
        case 2: xc->rope_attn_factor = 0; break;
        case 3: xc->has_qkv_bias = 0; break;
        case 4: xc->embd_scale = 0; break;
        case 5: xc->act = KN_ACT_SILU; break;
        case 6: xc->post_norms = 0; break;
        case 7: xc->attn_scale = 1.0f; break;
        case 8: xc->attn_softcap = 0; break;
        case 9: xc->final_softcap = 0; break;
        case 10: xc->swa_window = 0; break;
        case 11: xc->swa_every = 0; break;
        }
        double p = ppl_inproc(&x, toks, chunks);
        fprintf(stderr, "%s without %s: ppl %.2f (%.2f %% from %.2f)\n", arch, v[i].what, p, 100 * fabs(p / base - 1),
                base);
        QP_CHECK_MSG(fabs(p / base - 1) > 10 * PPL_REL_TOL, "%s: switching off %s moves the perplexity by only %.4f %%", arch,
                     v[i].what, 100 * fabs(p / base - 1));
        tried++;
    }
    QP_CHECK(tried > 0 || strcmp(arch, "llama") == 0);
    free(toks);
    free(text);
    hx_model_close(m);
}

QP_TEST(llama_variants_should_each_move_the_ppl_beyond_the_tolerance) { variants_matter("llama"); }
QP_TEST(qwen2_variants_should_each_move_the_ppl_beyond_the_tolerance) { variants_matter("qwen2"); }
QP_TEST(phi3_variants_should_each_move_the_ppl_beyond_the_tolerance) { variants_matter("phi3"); }
QP_TEST(gemma2_variants_should_each_move_the_ppl_beyond_the_tolerance) { variants_matter("gemma2"); }

// ---------------------------------------------------------------------------------------------
// The same weights through safetensors + config.json (qprobe convert --safetensors writes them;
// the tokenizer comes from the GGUF, -z): the same numbers as llama.cpp's.

static void safetensors_vs_llamacpp(const char *arch) {
    struct golden g;
    golden_read(arch, &g);
    const char *m = synth_arch(arch, &g);
    char dir[4200], cmd[9000], extra[4300];
    snprintf(dir, sizeof dir, "%s/%s-hf", qpt_tmpdir(), arch);
    snprintf(cmd, sizeof cmd, "'%s' convert -m '%s' --safetensors -o '%s' 2>&1", qpt_qprobe(), m, dir);
    run_ok(cmd, NULL);
    snprintf(extra, sizeof extra, "-z '%s'", m);
    char cfg[4300];
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    char *json = qpt_read_file(cfg, NULL);
    static const char *const cls[][2] = {
        {"llama", "LlamaForCausalLM"}, {"qwen2", "Qwen2ForCausalLM"}, {"phi3", "Phi3ForCausalLM"}, {"gemma2", "Gemma2ForCausalLM"}};
    for (size_t i = 0; i < QP_ARRAY_LEN(cls); i++)
        if (strcmp(arch, cls[i][0]) == 0) QP_CHECK_MSG(json && strstr(json, cls[i][1]), "%s: no %s in config.json", arch, cls[i][1]);
    free(json);
    // (bypassing the GGUF: -m names the directory)
    char mdir[4300];
    snprintf(mdir, sizeof mdir, "%s", dir);
    check_ppl(arch, ppl_of(mdir, extra), g.ppl, "safetensors ppl");
    check_greedy(arch, mdir, &g, extra);
}

QP_TEST(llama_safetensors_should_match_llamacpp_ppl_and_greedy_tokens) { safetensors_vs_llamacpp("llama"); }
QP_TEST(qwen2_safetensors_should_match_llamacpp_ppl_and_greedy_tokens) { safetensors_vs_llamacpp("qwen2"); }
QP_TEST(phi3_safetensors_should_match_llamacpp_ppl_and_greedy_tokens) { safetensors_vs_llamacpp("phi3"); }
QP_TEST(gemma2_safetensors_should_match_llamacpp_ppl_and_greedy_tokens) { safetensors_vs_llamacpp("gemma2"); }

// ---------------------------------------------------------------------------------------------
// Generation ends at EOS as well as BOS

// The id after "tokenizer.ggml.eos_token_id" (a UINT32 value) in the GGUF at path set to id.
static void set_eos_id(const char *path, uint32_t id) {
    size_t len;
    char *b = qpt_read_file(path, &len);
    const char *key = "tokenizer.ggml.eos_token_id";
    char *p = b ? memmem(b, len, key, strlen(key)) : NULL;
    QP_CHECK_MSG(p != NULL, "no %s in %s", key, path);
    uint32_t type;
    memcpy(&type, p + strlen(key), 4);
    QP_CHECK_INT_EQ((int)type, 4); // GGUF UINT32
    memcpy(p + strlen(key) + 4, &id, 4);
    FILE *f = fopen(path, "wb");
    QP_CHECK(f && fwrite(b, 1, len, f) == len);
    fclose(f);
    free(b);
}

// Greedy generation of the Llama test model, then the same model whose vocabulary names the k-th
// generated id its EOS: generation ends at that id's first occurrence, which counts among the
// generated ids but is not printed (as at BOS). (After "Once upon a time" this model's first token
// is its real EOS, 2: nothing is generated.)
QP_TEST(generate_should_stop_at_the_vocabularys_eos) {
    const char *m = synth_arch("llama", NULL);
    int ids[128], again[128];
    char cmd[9000], *out = NULL;
    snprintf(cmd, sizeof cmd, "'%s' generate -m '%s' -p 'Once upon a time' -n 64 --json 2>/dev/null", qpt_qprobe(), m);
    run_ok(cmd, &out);
    QP_CHECK_MSG(strstr(out, "\"tokens\":1,\"ids\":[2]") && strstr(out, "\"text\":\"Once upon a time\""), "%s", out);
    free(out);
    int n = greedy_of(m, "The little dog", NULL, ids, 128);
    QP_CHECK_MSG(n > 8, "%d tokens", n);
    int k = 1; // the first generated id after the first that has not come before
    for (int seen = 1; k < n && seen; k += seen) {
        seen = 0;
        for (int i = 0; i < k; i++) seen |= ids[i] == ids[k];
    }
    QP_CHECK_MSG(k < n, "every generated id repeats the first");
    set_eos_id(m, (uint32_t)ids[k]);
    int n2 = greedy_of(m, "The little dog", NULL, again, 128);
    QP_CHECK_MSG(n2 == k + 1, "with EOS = %d: %d tokens generated, expected %d (the EOS counted, not printed)", ids[k],
                 n2, k + 1);
    for (int i = 0; i <= k; i++) QP_CHECK_INT_EQ(again[i], ids[i]);
}

// ---------------------------------------------------------------------------------------------
// Bad input: one line on stderr naming the file and the problem, exit status 2.

static void expect_refused(const char *args, const char *needle) {
    char cmd[9000], *out = NULL;
    snprintf(cmd, sizeof cmd, "'%s' %s 2>&1 >/dev/null", qpt_qprobe(), args);
    int rc = qpt_run(cmd, &out);
    QP_CHECK_MSG(rc == 2, "'%s' exited %d (expected 2): %s", cmd, rc, out ? out : "");
    QP_CHECK_MSG(out && strstr(out, needle), "'%s' does not name '%s': %s", cmd, needle, out ? out : "");
    int lines = 0;
    for (const char *p = out; *p; p++) lines += *p == '\n';
    QP_CHECK_MSG(lines == 1, "%d lines: %s", lines, out);
    free(out);
}

// Replaces every occurrence of from by to (same length) in the file at path.
static void patch_file(const char *path, const char *from, const char *to) {
    size_t len, k = strlen(from), hits = 0;
    char *b = qpt_read_file(path, &len);
    QP_CHECK(b && strlen(to) == k);
    for (size_t i = 0; i + k <= len; i++)
        if (memcmp(b + i, from, k) == 0) memcpy(b + i, to, k), hits++;
    QP_CHECK(hits > 0);
    FILE *f = fopen(path, "wb");
    QP_CHECK(f && fwrite(b, 1, len, f) == len);
    fclose(f);
    free(b);
}

QP_TEST(config_with_unsupported_rope_scaling_should_be_refused_by_name) {
    const char *m = synth_arch("llama", NULL);
    char dir[4200], args[9000], cfg[4300];
    snprintf(dir, sizeof dir, "%s/hf", qpt_tmpdir());
    snprintf(args, sizeof args, "convert -m '%s' --safetensors -o '%s'", m, dir);
    char cmd[9100];
    snprintf(cmd, sizeof cmd, "'%s' %s >/dev/null 2>&1", qpt_qprobe(), args);
    run_ok(cmd, NULL);
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    patch_file(cfg, "\"rope_type\":\t\"llama3\"", "\"rope_type\":\t\"yarn\"  ");
    snprintf(args, sizeof args, "convert -m '%s' -o '%s/x.gguf'", dir, qpt_tmpdir());
    expect_refused(args, "key 'rope_scaling' of type 'yarn' is not supported");
}

QP_TEST(gguf_of_an_unknown_architecture_should_be_refused_by_name) {
    const char *m = synth_arch("qwen2", NULL);
    patch_file(m, "qwen2", "qwen9"); // general.architecture and every qwen2.* key
    char args[9000];
    snprintf(args, sizeof args, "ppl -m '%s' --text '%s'", m, qpt_text_prefix(ARCH_TEXT_BYTES));
    expect_refused(args, "architecture 'qwen9' is not supported");
}

QP_TEST(fused_tensor_of_the_wrong_size_should_be_refused_by_name) {
    const char *m = synth_arch("phi3", NULL);
    // The tensor info of blk.0.attn_qkv.weight: name, n_dims 2, ne0 = 64, ne1 = 64 + 2 * 32 = 128;
    // 96 rows instead (still inside the file).
    size_t len;
    char *b = qpt_read_file(m, &len);
    const char *name = "blk.0.attn_qkv.weight";
    char *p = memmem(b, len, name, strlen(name));
    QP_CHECK(p != NULL);
    uint64_t *ne1 = (uint64_t *)(void *)(p + strlen(name) + 4 + 8);
    uint64_t v;
    memcpy(&v, ne1, 8);
    QP_CHECK_INT_EQ((int)v, 128);
    v = 96;
    memcpy(ne1, &v, 8);
    FILE *f = fopen(m, "wb");
    QP_CHECK(f && fwrite(b, 1, len, f) == len);
    fclose(f);
    free(b);
    char args[9000];
    snprintf(args, sizeof args, "ppl -m '%s' --text '%s'", m, qpt_text_prefix(ARCH_TEXT_BYTES));
    expect_refused(args, "tensor 'blk.0.attn_qkv.weight' has shape (96, 64), expected (128, 64)");
}

// QAT trains every family (kernels/kn_train.h): `convert -q qat:q4_0 --calib` trains the small
// model of each and writes a GGUF (Phi-3's q/k/v and gate/up fused again; the tied embedding of
// the Llama 3, Qwen2 and Gemma 2 models trained tied and kept shared; biases and post-norms in
// f32) whose perplexity is the in-memory variant's, to every digit (same training, same bits).
QP_TEST(qat_should_train_every_family_and_write_it_as_gguf) {
    static const char *const arches[] = {"llama", "qwen2", "phi3", "gemma2"};
    const char *text = qpt_text_prefix(ARCH_TEXT_BYTES), *eval = qpt_text_part("eval.txt", 100000, 20000);
    const char *train = "-q 'qat:q4_0:steps=2' --calib-seqs 2 --calib-len 32 -t 1";
    for (size_t i = 0; i < sizeof arches / sizeof arches[0]; i++) {
        const char *m = synth_arch_layers(arches[i], NULL, strcmp(arches[i], "gemma2") == 0 ? 2 : 0);
        char out[4300], cmd[9000], *json = NULL;
        snprintf(out, sizeof out, "%s/qat-%s.gguf", qpt_tmpdir(), arches[i]);
        snprintf(cmd, sizeof cmd, "'%s' convert -m '%s' -o '%s' %s --calib '%s' 2>&1", qpt_qprobe(), m, out, train, text);
        run_ok(cmd, NULL);
        snprintf(cmd, sizeof cmd, "'%s' ppl -m '%s' --text '%s' --chunks 1 --ctx 64 -t 1 --json", qpt_qprobe(), out, eval);
        run_ok(cmd, &json);
        double from_file = qpt_json_num(json, "ppl");
        free(json);
        snprintf(cmd, sizeof cmd, "'%s' ppl -m '%s' --text '%s' --chunks 1 --ctx 64 %s --calib '%s' --json 2>/dev/null",
                 qpt_qprobe(), m, eval, train, text);
        run_ok(cmd, &json);
        double in_memory = qpt_json_num(json, "ppl");
        free(json);
        QP_CHECK_MSG(isfinite(from_file) && from_file > 1 && from_file == in_memory, "%s: GGUF %.9g, in memory %.9g",
                     arches[i], from_file, in_memory);
    }
}

QP_TEST(config_with_biases_the_family_lacks_should_be_refused_by_name) {
    const char *m = synth_arch("llama", NULL);
    char dir[4200], cmd[9100], cfg[4300], args[9000];
    snprintf(dir, sizeof dir, "%s/hf", qpt_tmpdir());
    snprintf(cmd, sizeof cmd, "'%s' convert -m '%s' --safetensors -o '%s' >/dev/null 2>&1", qpt_qprobe(), m, dir);
    run_ok(cmd, NULL);
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    patch_file(cfg, "\"torch_dtype\":\t\"float32\"", "\"attention_bias\":\t  true");
    snprintf(args, sizeof args, "convert -m '%s' -o '%s/x.gguf'", dir, qpt_tmpdir());
    expect_refused(args, "key 'attention_bias'");
}

// ---------------------------------------------------------------------------------------------
// convert -q q4_k_m: llama-quantize's per-architecture rules (Phi-3's fused attn_qkv and ffn_up,
// the tied embedding taking the classifier's type), byte for byte: every tensor's type and
// bytes equal llama-quantize's Q4_K_M of the same file; and the file reads back as the variant
// qprobe evaluates, bit for bit.

// The golden "q4_k_m_tensor NAME TYPE HASH" lines of arch.
static int golden_tensors(const char *arch, char names[][64], int *types, char hashes[][17], int max) {
    const char *root = getenv("QP_ROOT");
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/golden/arch/%s.txt", root ? root : ".", arch);
    char *text = qpt_read_file(path, NULL);
    QP_CHECK(text != NULL);
    int n = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"))
        if (n < max && sscanf(line, "q4_k_m_tensor %63s %d %16s", names[n], &types[n], hashes[n]) == 3) n++;
    free(text);
    return n;
}

static void convert_q4_k_m_like_llama_quantize(const char *arch) {
    const char *m = synth_arch(arch, NULL);
    char out[4200], cmd[9000];
    snprintf(out, sizeof out, "%s/%s-q4km.gguf", qpt_tmpdir(), arch[0] == 'p' ? "fused" : arch); // (llama.cpp: no "phi3" names with this vocabulary)
    snprintf(cmd, sizeof cmd, "'%s' convert -m '%s' -q q4_k_m -o '%s' 2>&1", qpt_qprobe(), m, out);
    run_ok(cmd, NULL);
    static char names[400][64], hashes[400][17];
    static int types[400];
    int n = golden_tensors(arch, names, types, hashes, 400);
    QP_CHECK(n > 0);
    char err[QP_ERRLEN];
    struct hx_gguf *g;
    QP_CHECK_MSG(hx_gguf_open(out, &g, err) == 0, "%s", err);
    QP_CHECK_INT_EQ((int)hx_gguf_n_tensors(g), n);
    for (int i = 0; i < n; i++) {
        const struct hx_gguf_tensor *t = hx_gguf_find_tensor(g, names[i]);
        QP_CHECK_MSG(t != NULL, "%s: no tensor %s", arch, names[i]);
        QP_CHECK_MSG(t->type == types[i], "%s: %s has type %d, llama-quantize's %d", arch, names[i], t->type, types[i]);
        size_t len = t->nbytes;
        while (len > 0 && ((const uint8_t *)t->data)[len - 1] == 0) len--;
        char hex[65];
        qp_sha256_hex(t->data, len, hex);
        QP_CHECK_MSG(strncmp(hex, hashes[i], 16) == 0, "%s: %s differs from llama-quantize's bytes", arch, names[i]);
    }
    hx_gguf_close(g);
    // Read back: the tensors qprobe's own q4_k_m variant of the source holds, bit for bit.
    struct hx_model *src, *back;
    QP_CHECK_MSG(hx_model_open(m, NULL, &src, err) == 0, "%s", err);
    QP_CHECK_MSG(hx_model_open(out, NULL, &back, err) == 0, "%s", err);
    struct qz_variant *v;
    struct hx_quant_model *q;
    QP_CHECK(qz_variant_parse("q4_k_m", &v, err) == 0);
    QP_CHECK_MSG(hx_quant_model_create(&src->w, v, &q, err) == 0, "%s", err);
    int L = q->w.cfg.n_layers;
    struct hx_weight_ref *a = malloc(HX_N_WEIGHTS(L) * sizeof *a), *b = malloc(HX_N_WEIGHTS(L) * sizeof *b);
    hx_weight_refs(&q->w, a);
    hx_weight_refs(&back->w, b);
    for (int i = 0; i < HX_N_WEIGHTS(L); i++) {
        const struct kn_tensor *x = a[i].t, *y = b[i].t;
        QP_CHECK_MSG(x->type == y->type && x->ne0 == y->ne0 && x->ne1 == y->ne1 &&
                         memcmp(x->data, y->data, kn_row_bytes(x->type, x->ne0) * (size_t)x->ne1) == 0,
                     "%s: %s read back differs from the variant", arch, a[i].name);
    }
    QP_CHECK(q->w.tied == back->w.tied && back->w.cfg.arch == src->w.cfg.arch);
    free(a);
    free(b);
    hx_quant_model_destroy(q);
    qz_variant_destroy(v);
    hx_model_close(src);
    hx_model_close(back);
}

QP_TEST(llama_convert_q4_k_m_should_write_llama_quantize_bytes_and_read_back) { convert_q4_k_m_like_llama_quantize("llama"); }
QP_TEST(qwen2_convert_q4_k_m_should_write_llama_quantize_bytes_and_read_back) { convert_q4_k_m_like_llama_quantize("qwen2"); }
QP_TEST(phi3_convert_q4_k_m_should_write_llama_quantize_bytes_and_read_back) { convert_q4_k_m_like_llama_quantize("phi3"); }
QP_TEST(gemma2_convert_q4_k_m_should_write_llama_quantize_bytes_and_read_back) { convert_q4_k_m_like_llama_quantize("gemma2"); }

// ---------------------------------------------------------------------------------------------
// Every command on every family: eval (lockstep, per-layer error at the family's sites,
// isolated sensitivity) with q4_k_m;act=q8, GPTQ and AWQ (calibrated through the same probes),
// tasks with a variant, a two-variant sweep; the numbers land in the study database.

static void every_command(const char *arch) {
    // Gemma 2 in 2 of its 26 layers: llama.cpp needs 26 (the golden comparison), qprobe does not,
    // and calibration collects layer after layer (quadratic in the depth).
    const char *m = synth_arch_layers(arch, NULL, strcmp(arch, "gemma2") == 0 ? 2 : 0);
    const char *dir = qpt_tmpdir();
    char text[4200], calib[4200], db[4200], cmd[30000], *out = NULL;
    snprintf(text, sizeof text, "%s", qpt_text_prefix(ARCH_TEXT_BYTES));
    // calibration text: bytes 12000.. of the same file, disjoint from the evaluation prefix
    size_t len;
    char *all = qpt_read_file(qpt_fixture("data/tinystories/tinystories_val.txt"), &len);
    QP_CHECK(all && len > 20000);
    snprintf(calib, sizeof calib, "%s/calib.txt", dir);
    FILE *f = fopen(calib, "wb");
    QP_CHECK(f && fwrite(all + 12000, 1, 8000, f) == 8000);
    fclose(f);
    free(all);
    snprintf(db, sizeof db, "%s/study.sqlite", dir);
    const char *specs[] = {"q4_k_m;act=q8", "gptq:bits=4:group=32", "awq:bits=4:group=32"};
    for (size_t i = 0; i < QP_ARRAY_LEN(specs); i++) {
        snprintf(cmd, sizeof cmd,
                 "'%s' eval -m '%s' --text '%s' --db '%s' -q '%s' --ctx 128 --chunks 1 --layer-chunks 1 --sensitivity %d "
                 "--act-chunks 1 --calib '%s' --calib-seqs 4 --calib-len 64 -t 2 --json 2>&1",
                 qpt_qprobe(), m, text, db, specs[i], i == 0 ? 1 : 0, calib);
        run_ok(cmd, &out);
        double kld = qpt_json_num(out, "kld_mean");
        QP_CHECK_MSG(kld > 0 && isfinite(kld), "%s %s: kld %g", arch, specs[i], kld);
        free(out);
    }
    QP_CHECK_INT_EQ((int)qpt_db_int(db, "SELECT COUNT(*) FROM variant WHERE spec != 'reference'"), 3);
    int post = strcmp(arch, "gemma2") == 0;
    QP_CHECK_INT_EQ((int)qpt_db_int(db, "SELECT COUNT(*) FROM layer_error WHERE site = 'attn_post_norm'") > 0, post);
    QP_CHECK(qpt_db_int(db, "SELECT COUNT(*) FROM layer_error WHERE site = 'attn_mix' AND kind = 'local'") > 0);
    char *fam = qpt_db_text(db, "SELECT arch FROM run"); // recorded with the run (schema version 4)
    QP_CHECK_STR_EQ(fam, arch);
    free(fam);
    // tasks with a variant, and a sweep of two variants with its own database
    snprintf(cmd, sizeof cmd, "QPROBE_FIXTURES='%s' '%s' tasks -m '%s' --suite tinystories-cloze --limit 2 -q q4_0 -t 2 --json 2>&1",
             getenv("QP_FIXTURES") ? getenv("QP_FIXTURES") : "../shared/fixtures", qpt_qprobe(), m);
    run_ok(cmd, &out);
    QP_CHECK_MSG(strstr(out, "\"acc\""), "%s tasks: %s", arch, out);
    free(out);
    char cfg[4300], sdb[4300];
    snprintf(cfg, sizeof cfg, "%s/sweep.json", dir);
    snprintf(sdb, sizeof sdb, "%s/sweep.sqlite", dir);
    f = fopen(cfg, "w");
    QP_CHECK(f != NULL);
    fprintf(f, "{\"model\": \"%s\", \"db\": \"%s\", \"eval\": {\"text\": \"%s\", \"ctx\": 128, \"chunks\": 1},\n"
               " \"diagnostics\": {\"layer_chunks\": 0, \"act_chunks\": 0}, \"variants\": [\"q8_0\", \"q4_k_m\"], \"threads\": 2}\n",
            m, sdb, text);
    fclose(f);
    snprintf(cmd, sizeof cmd, "'%s' sweep -c '%s' 2>&1", qpt_qprobe(), cfg);
    run_ok(cmd, NULL);
    QP_CHECK_INT_EQ((int)qpt_db_int(sdb, "SELECT COUNT(*) FROM variant WHERE spec != 'reference'"), 2);
}

QP_TEST(every_command_should_run_on_llama) { every_command("llama"); }
QP_TEST(every_command_should_run_on_qwen2) { every_command("qwen2"); }
QP_TEST(every_command_should_run_on_phi3) { every_command("phi3"); }
QP_TEST(every_command_should_run_on_gemma2) { every_command("gemma2"); }

// ---------------------------------------------------------------------------------------------
// Same bits for any thread count and any ISA path (the family variants included).

QP_TEST(family_logits_should_be_bit_identical_across_threads_and_isas) {
    static const char *const fams[] = {"llama", "qwen2", "phi3", "gemma2"};
    for (size_t a = 0; a < QP_ARRAY_LEN(fams); a++) {
        const char *path = synth_arch(fams[a], NULL);
        char err[QP_ERRLEN];
        struct hx_model *m;
        QP_CHECK_MSG(hx_model_open(path, NULL, &m, err) == 0, "%s", err);
        enum { N = 56, NB = 44 }; // a batch of NB, then one at a time: both cut by the windows (40, 32)
        int V = m->w.cfg.vocab_size, toks[N];
        for (int i = 0; i < N; i++) toks[i] = (i * 37 + 11) % V;
        float *ref = malloc(sizeof(float) * N * (size_t)V), *got = malloc(sizeof(float) * N * (size_t)V);
        static const char *const isas[] = {"ref", "avx2", "avx512"};
        int first = 1;
        for (size_t k = 0; k < QP_ARRAY_LEN(isas); k++) {
            const struct kn_ops *ops = kn_ops_for(isas[k]);
            if (!ops) continue; // (this CPU lacks it)
            for (int th = 1; th <= 3; th += 2) {
                struct kn_engine *e;
                struct kn_state *s;
                QP_CHECK_MSG(kn_engine_create(&m->w, ops, &e, err) == 0, "%s", err);
                QP_CHECK_MSG(kn_state_create(e, N, N, th, &s, err) == 0, "%s", err);
                kn_forward(s, toks, NB, first ? ref : got, 0, NULL);
                for (int i = NB; i < N; i++) kn_forward(s, toks + i, 1, (first ? ref : got) + (size_t)i * V, 0, NULL);
                if (!first)
                    QP_CHECK_MSG(memcmp(ref, got, sizeof(float) * N * (size_t)V) == 0, "%s: %s with %d threads differs",
                                 fams[a], isas[k], th);
                first = 0;
                kn_state_destroy(s);
                kn_engine_destroy(e);
            }
        }
        free(ref);
        free(got);
        hx_model_close(m);
    }
}
