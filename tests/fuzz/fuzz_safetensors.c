// fuzz_safetensors.c — fuzz target for the safetensors reader (harness/io/hx_safetensors.c: header
// JSON, entries, data ranges, config.json) through hx_model_open.
//
// The reader has no in-memory entry point: it opens DIR/model.safetensors and DIR/config.json.
// Input layout, chosen by the low bit of the first byte:
//   even  the rest is model.safetensors; config.json is a fixed tiny Llama config (FS_CONFIG,
//         the shape the seed corpus uses), so nearly every input reaches the header parser;
//   odd   the rest is config.json up to the first NUL byte, then model.safetensors (empty when
//         there is no NUL), so that config parsing is fuzzed as well.
// An accepted model is checked with fuzz_check_model; a refused one must give a QP_E* code
// and a message.
//
// Depends on harness/io/hx_model.h, kernels/qp.h and fuzz.h.
#include <stdio.h>
#include <string.h>

#include "fuzz.h"
#include "hx_model.h"
#include "qp.h"

// dim 4, hidden 4, 1 layer, 2 heads of size 2, 1 KV head, vocabulary 8, context 2.
static const char FS_CONFIG[] =
    "{\"architectures\":[\"LlamaForCausalLM\"],\"model_type\":\"llama\",\"hidden_size\":4,"
    "\"intermediate_size\":4,\"num_hidden_layers\":1,\"num_attention_heads\":2,"
    "\"num_key_value_heads\":1,\"vocab_size\":8,\"max_position_embeddings\":2,"
    "\"rms_norm_eps\":1e-05,\"rope_theta\":10000,\"tie_word_embeddings\":true,"
    "\"hidden_act\":\"silu\"}\n";

int fuzz_safetensors(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    char st_path[FUZZ_PATH_MAX], cfg_path[FUZZ_PATH_MAX], err[QP_ERRLEN];
    const uint8_t *st = data + 1;
    size_t st_size = size - 1;
    if (data[0] & 1) {
        const uint8_t *nul = memchr(st, 0, st_size);
        size_t cfg_size = nul ? (size_t)(nul - st) : st_size;
        fuzz_write("config.json", st, cfg_size, cfg_path);
        st = nul ? nul + 1 : st + st_size;
        st_size -= nul ? cfg_size + 1 : cfg_size;
    } else {
        fuzz_write("config.json", FS_CONFIG, sizeof FS_CONFIG - 1, cfg_path);
    }
    fuzz_write("model.safetensors", st, st_size, st_path);

    struct hx_model *m = NULL;
    err[0] = 0;
    int rc = hx_model_open(st_path, NULL, &m, err);
    if (rc == 0) {
        FUZZ_CHECK(m != NULL && m->format == HX_FMT_SAFETENSORS, "model format %d",
                   m ? (int)m->format : -1);
        fuzz_check_model(m, st_size);
        hx_model_close(m);
    } else {
        FUZZ_CHECK(m == NULL, "failed open left a model");
        FUZZ_CHECK(rc < 0 && rc >= QP_EINTR, "unknown error code %d", rc);
        FUZZ_CHECK(err[0] != 0 && strchr(err, '\n') == NULL, "bad message '%s'", err);
    }
    return 0;
}

#ifdef QP_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    return fuzz_safetensors(data, size);
}
#endif
