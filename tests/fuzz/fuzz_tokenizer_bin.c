// fuzz_tokenizer_bin.c — fuzz target for llama2.c tokenizer.bin files (harness/io/hx_tokenizer.c,
// hx_tok_load_llama2c) and encoding with whatever loads.
//
// The input is the whole file. The format does not store its vocabulary size (the model header
// does), so the target counts the complete (score, length, bytes) records the file holds, n,
// and loads it with vocab_size n, n + 1 and n / 2 (and 3 when n is 0). Real tokenizer files
// therefore work as seeds unchanged. The loader must accept exactly the files that hold
// vocab_size well-formed records with vocab_size >= 3 and a non-negative max_token_length, and
// a loaded tokenizer must pass fuzz_check_tok, encoding the last bytes of the input as text.
//
// Depends on harness/io/hx_tokenizer.h, kernels/qp.h and fuzz.h.
#include <string.h>

#include "fuzz.h"
#include "qp.h"
#include "hx_tokenizer.h"

#define FT_TEXT_MAX 64 // bytes of the input encoded as text

static int32_t ft_i32(const uint8_t *p) {
    uint32_t v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    int32_t r;
    memcpy(&r, &v, sizeof r);
    return r;
}

// Complete records after the 4-byte header, stopping at the first malformed one.
static int ft_count_records(const uint8_t *d, size_t size) {
    if (size < 4) return 0;
    size_t pos = 4;
    int n = 0;
    while (size - pos >= 8 && n < (1 << 24)) {
        int32_t len = ft_i32(d + pos + 4);
        if (len < 0 || (size_t)len > size - pos - 8) break;
        pos += 8 + (size_t)len;
        n++;
    }
    return n;
}

static void ft_load(const char *path, size_t size, int vocab_size, int n_records, int32_t max_len,
                    const uint8_t *text, size_t text_len) {
    struct hx_tok *t = NULL;
    char err[QP_ERRLEN] = "";
    int rc = hx_tok_load_llama2c(path, vocab_size, &t, err);
    // max_token_length is a hint, but one longer than the file marks a corrupt header.
    int valid = vocab_size >= 3 && vocab_size <= n_records && max_len >= 0 && (size_t)max_len <= size - 4;
    if (rc == 0) {
        FUZZ_CHECK(valid, "accepted vocab_size %d with %d records, max_token_length %d",
                   vocab_size, n_records, (int)max_len);
        FUZZ_CHECK(t != NULL && hx_tok_n_vocab(t) == vocab_size, "wrong vocabulary size");
        fuzz_check_tok(t, text, text_len);
        hx_tok_destroy(t);
        return;
    }
    FUZZ_CHECK(t == NULL, "failed load left a tokenizer");
    FUZZ_CHECK(rc < 0 && rc >= QP_EINTR, "unknown error code %d", rc);
    FUZZ_CHECK(!valid || rc == QP_ENOMEM, "refused a well-formed file (vocab_size %d of %d "
               "records): %s", vocab_size, n_records, err);
    FUZZ_CHECK(strstr(err, path) != NULL, "message does not name the file: %s", err);
}

int fuzz_tokenizer_bin(const uint8_t *data, size_t size) {
    char path[FUZZ_PATH_MAX];
    fuzz_write("tokenizer.bin", data, size, path);
    int n = ft_count_records(data, size);
    int32_t max_len = size >= 4 ? ft_i32(data) : -1;
    size_t text_len = size < FT_TEXT_MAX ? size : FT_TEXT_MAX;
    const uint8_t *text = data + size - text_len;
    ft_load(path, size, n > 0 ? n : 3, n, max_len, text, text_len);
    ft_load(path, size, n + 1, n, max_len, text, text_len);
    if (n >= 6) ft_load(path, size, n / 2, n, max_len, text, text_len);
    return 0;
}

#ifdef QP_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    return fuzz_tokenizer_bin(data, size);
}
#endif
