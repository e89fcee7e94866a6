// fuzz_config_json.c — fuzz target for Hugging Face config.json files (harness/io/hx_safetensors.c:
// the architecture check, the shape keys, norm epsilon, RoPE, ties, biases, activation) through
// hx_model_open on a safetensors directory.
//
// The input is the whole config.json. Beside it lies a fixed, valid model.safetensors of the
// tiny Llama shape the seeds use (dim 4, hidden 4, 1 layer, 2 heads, 1 KV head, vocabulary 8,
// tied embedding), written once per process by qprobe's own safetensors writer from a llama2.c
// checkpoint built here — so every input reaches the config parser, and one whose keys agree
// with the tensors loads completely.
//
// Properties: a refused config gives a QP_E* code, no model and one line naming config.json
// (or model.safetensors, when the config was read and the tensors disagree with it); an accepted
// one gives exactly the tensors' shape, an epsilon in (0, 1), a finite RoPE base above 1, a
// context length in range, and a model that passes fuzz_check_model.
//
// Depends on harness/io/hx_model.h, harness/io/hx_safetensors.h, kernels/ and fuzz.h.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "hx_model.h"
#include "hx_safetensors.h"
#include "kn_model.h"
#include "qp.h"

enum { FC_DIM = 4, FC_HID = 4, FC_NL = 1, FC_NH = 2, FC_NKV = 1, FC_VOCAB = 8, FC_SEQ = 2 };

static char fc_st_path[FUZZ_PATH_MAX]; // the fixed model.safetensors
static size_t fc_st_size;

// The tiny model as a llama2.c checkpoint (header, then every tensor in llama2.c's order, weights
// multiples of 1/8 so that every format holds them exactly), loaded and written as safetensors
// into the scratch directory; the config.json the writer made is overwritten by each input.
static void fc_make_model(void) {
    int kv = FC_NKV * (FC_DIM / FC_NH);
    size_t n = (size_t)FC_VOCAB * FC_DIM +
               FC_NL * (2 * FC_DIM + 2 * FC_DIM * FC_DIM + 2 * kv * FC_DIM + 3 * FC_HID * FC_DIM) + FC_DIM +
               (size_t)FC_SEQ * (FC_DIM / FC_NH);
    size_t bytes = 7 * 4 + n * 4;
    unsigned char *ck = malloc(bytes);
    if (!ck) fuzz_fail(__FILE__, __LINE__, "out of memory");
    int32_t h[7] = {FC_DIM, FC_HID, FC_NL, FC_NH, FC_NKV, FC_VOCAB, FC_SEQ};
    memcpy(ck, h, sizeof h);
    for (size_t i = 0; i < n; i++) {
        float w = (float)((int)(i * 7 % 13) - 6) / 8.0f;
        memcpy(ck + 28 + 4 * i, &w, 4);
    }
    char ck_path[FUZZ_PATH_MAX], cfg_path[FUZZ_PATH_MAX], err[QP_ERRLEN];
    fuzz_write("tiny.bin", ck, bytes, ck_path);
    free(ck);
    struct hx_model *m = NULL;
    if (hx_model_open(ck_path, NULL, &m, err)) fuzz_fail(__FILE__, __LINE__, "tiny model: %s", err);
    fuzz_path("model.safetensors", fc_st_path);
    fuzz_path("config.json", cfg_path); // registered for removal
    char dir[FUZZ_PATH_MAX];
    snprintf(dir, sizeof dir, "%s", fc_st_path);
    *strrchr(dir, '/') = 0;
    if (hx_safetensors_write(&m->w, dir, KN_F32, err)) fuzz_fail(__FILE__, __LINE__, "tiny model: %s", err);
    hx_model_close(m);
    size_t len = 0;
    FILE *f = fopen(fc_st_path, "rb");
    if (!f || fseek(f, 0, SEEK_END) != 0 || (long)(len = (size_t)ftell(f)) <= 0)
        fuzz_fail(__FILE__, __LINE__, "cannot size '%s'", fc_st_path);
    fclose(f);
    fc_st_size = len;
}

int fuzz_config_json(const uint8_t *data, size_t size) {
    if (!fc_st_path[0]) fc_make_model();
    char cfg_path[FUZZ_PATH_MAX], err[QP_ERRLEN] = "";
    fuzz_write("config.json", data, size, cfg_path);
    struct hx_model *m = NULL;
    int rc = hx_model_open(fc_st_path, NULL, &m, err);
    if (rc) {
        FUZZ_CHECK(m == NULL, "failed open left a model");
        FUZZ_CHECK(rc < 0 && rc >= QP_EINTR, "unknown error code %d", rc);
        FUZZ_CHECK(err[0] && strchr(err, '\n') == NULL, "bad message '%s'", err);
        FUZZ_CHECK(strstr(err, "config.json") || strstr(err, "model.safetensors"),
                   "message names neither file: %s", err);
        return 0;
    }
    const struct kn_config *c = &m->w.cfg;
    FUZZ_CHECK(m->format == HX_FMT_SAFETENSORS, "model format %d", (int)m->format);
    FUZZ_CHECK(c->dim == FC_DIM && c->hidden_dim == FC_HID && c->n_layers == FC_NL && c->n_heads == FC_NH &&
                   c->n_kv_heads == FC_NKV && c->vocab_size == FC_VOCAB,
               "accepted a shape the tensors do not have: dim %d hidden %d layers %d heads %d/%d vocab %d",
               c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->vocab_size);
    FUZZ_CHECK(c->norm_eps > 0.0f && c->norm_eps < 1.0f, "epsilon %g", (double)c->norm_eps);
    FUZZ_CHECK(isfinite(c->rope_theta) && c->rope_theta > 1.0f, "rope theta %g", (double)c->rope_theta);
    FUZZ_CHECK(c->seq_len >= 1 && c->seq_len <= (1 << 20), "seq_len %d (kn_model.c allows 1..2^20)", c->seq_len);
    fuzz_check_model(m, fc_st_size);
    hx_model_close(m);
    return 0;
}

#ifdef QP_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_config_json(data, size); }
#endif
