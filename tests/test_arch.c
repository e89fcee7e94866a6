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

#include "hx_model.h"
#include "hx_synth.h"
#include "hx_tokenizer.h"
#include "kn_engine.h"
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
static const char *synth_arch(const char *arch, const struct golden *g) {
    static char path[4200];
    snprintf(path, sizeof path, "%s/%s.gguf", qpt_tmpdir(), arch);
    char cmd[8800];
    snprintf(cmd, sizeof cmd, "QP_FIXTURES='%s' '%s' synth --arch %s --seed 1 -t 2 -o '%s' >/dev/null 2>&1",
             getenv("QP_FIXTURES") ? getenv("QP_FIXTURES") : "../shared/fixtures", qpt_qprobe(), arch, path);
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
    QP_CHECK_MSG(kn_state_create(e, 128, 128, 2, &s, err) == 0, "%s", err);
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
    double base = ppl_inproc(&m->w, toks, 2);
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
        double p = ppl_inproc(&x, toks, 2);
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
