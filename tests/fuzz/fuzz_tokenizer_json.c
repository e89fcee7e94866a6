// fuzz_tokenizer_json.c — fuzz target for Hugging Face tokenizer.json files
// (harness/io/hx_tok_json.c, hx_tok_load_json) and encoding/decoding with whatever loads.
//
// The input is the whole file (no tokenizer_config.json beside it). A load either succeeds, and
// the tokenizer must pass fuzz_check_tok on the last bytes of the input as text, or fails with
// a QP_E* code, no tokenizer and a message naming the file. A file that is not valid UTF-8 must
// be refused.
//
// Depends on harness/io/hx_tokenizer.h, kernels/qp*.h and fuzz.h.
#include <string.h>

#include "fuzz.h"
#include "hx_tokenizer.h"
#include "qp.h"
#include "qp_utf8.h"

#define FJ_TEXT_MAX 96 // bytes of the input encoded as text

int fuzz_tokenizer_json(const uint8_t *data, size_t size) {
    char path[FUZZ_PATH_MAX], err[QP_ERRLEN] = "";
    fuzz_write("tokenizer.json", data, size, path);
    struct hx_tok *t = NULL;
    int rc = hx_tok_load_json(path, &t, err);
    if (rc == 0) {
        FUZZ_CHECK(t != NULL, "success without a tokenizer");
        FUZZ_CHECK(qp_utf8_valid((const char *)data, size), "accepted a file that is not UTF-8");
        size_t n = size < FJ_TEXT_MAX ? size : FJ_TEXT_MAX;
        fuzz_check_tok(t, data + size - n, n);
        hx_tok_destroy(t);
        return 0;
    }
    FUZZ_CHECK(t == NULL, "failed load left a tokenizer");
    FUZZ_CHECK(rc < 0 && rc >= QP_EINTR, "unknown error code %d", rc);
    FUZZ_CHECK(strstr(err, path) != NULL, "message does not name the file: %s", err);
    return 0;
}

#ifdef QP_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_tokenizer_json(data, size); }
#endif
