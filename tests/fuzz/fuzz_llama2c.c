// fuzz_llama2c.c — fuzz target for llama2.c checkpoints (harness/io/hx_llama2c.c: the 7 x int32
// header, the size it implies, the weights) through hx_model_open on a scratch file.
//
// The input is the whole checkpoint. Its name ends in ".bin", so the format is chosen from the
// bytes as for any file: inputs that look like GGUF or safetensors reach those readers instead
// (a small share; they are fuzzed on their own). An accepted model is checked with
// fuzz_check_model (every tensor inside the mapping, the mapping as long as the file); for a
// llama2.c model the size must also be exactly what the header implies and every weight finite.
//
// Depends on harness/io/hx_model.h, kernels/ and fuzz.h.
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "fuzz.h"
#include "kn_model.h"
#include "hx_model.h"
#include "qp.h"

// The file size a llama2.c header implies (the loader's formula, written out independently).
static int64_t fl_expected_size(const struct kn_config *c, int shared) {
    int64_t dim = c->dim, hid = c->hidden_dim, L = c->n_layers, V = c->vocab_size;
    int64_t kv_dim = (int64_t)c->n_kv_heads * c->head_size;
    int64_t per_layer = 2 * dim + 2 * dim * dim + 2 * kv_dim * dim + 3 * hid * dim;
    int64_t floats = V * dim + L * per_layer + dim + (int64_t)c->seq_len * c->head_size +
                     (shared ? 0 : V * dim);
    return 28 + 4 * floats;
}

// Does err name path, or (when the bytes looked like safetensors, which come with a config.json)
// a file in path's directory?
static int fl_names_file(const char *err, const char *path) {
    if (strstr(err, path)) return 1;
    const char *slash = strrchr(path, '/');
    char dir[FUZZ_PATH_MAX];
    if (!slash) return 0;
    snprintf(dir, sizeof dir, "%.*s", (int)(slash - path + 1), path);
    return strstr(err, dir) != NULL;
}

int fuzz_llama2c(const uint8_t *data, size_t size) {
    char path[FUZZ_PATH_MAX], err[QP_ERRLEN];
    fuzz_write("in.bin", data, size, path);
    struct hx_model *m = NULL;
    err[0] = 0;
    int rc = hx_model_open(path, NULL, &m, err);
    if (rc != 0) {
        FUZZ_CHECK(m == NULL, "failed open left a model");
        FUZZ_CHECK(rc < 0 && rc >= QP_EINTR, "unknown error code %d", rc);
        FUZZ_CHECK(fl_names_file(err, path), "message does not name the file: %s", err);
        return 0;
    }
    FUZZ_CHECK(m != NULL, "success without a model");
    fuzz_check_model(m, size);
    if (m->format == HX_FMT_LLAMA2C) {
        FUZZ_CHECK(m->w.tok_embd.type == KN_F32, "llama2.c weights of type %d", m->w.tok_embd.type);
        FUZZ_CHECK((int64_t)size == fl_expected_size(&m->w.cfg, m->w.tied), "%zu bytes accepted, "
                   "header implies %lld", size, (long long)fl_expected_size(&m->w.cfg, m->w.tied));
        size_t n = (size - 28) / 4;
        for (size_t i = 0; i < n; i++) {
            float f;
            memcpy(&f, data + 28 + 4 * i, sizeof f);
            FUZZ_CHECK(isfinite(f), "weight %zu is not finite", i);
        }
    }
    hx_model_close(m);
    return 0;
}

#ifdef QP_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_llama2c(data, size); }
#endif
