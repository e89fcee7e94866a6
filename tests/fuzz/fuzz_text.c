// fuzz_text.c — fuzz target for the text reader every text input goes through
// (harness/io/hx_text.c, hx_read_text: --text, --calib, generate's --prompt-file, task texts).
//
// The input is the whole file. The reader must accept exactly the files that are non-empty,
// hold no NUL byte and are valid UTF-8 — judged here by an independent decoder written from
// RFC 3629 (no overlong forms, no surrogates, nothing above U+10FFFF) — and then give back every
// byte unchanged with a NUL after it; a refused file gives QP_EFORMAT and one line naming it.
//
// Depends on harness/io/hx_text.h, kernels/qp.h and fuzz.h.
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "hx_text.h"
#include "qp.h"

// RFC 3629 well-formed UTF-8 (Table 3-7 of the Unicode standard, byte by byte).
static int ft_utf8_ok(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t k;
        uint8_t lo = 0x80, hi = 0xbf;
        if (c < 0x80) k = 0;
        else if (c >= 0xc2 && c <= 0xdf) k = 1;
        else if (c >= 0xe0 && c <= 0xef) {
            k = 2;
            if (c == 0xe0) lo = 0xa0;       // overlong
            else if (c == 0xed) hi = 0x9f;  // surrogates
        } else if (c >= 0xf0 && c <= 0xf4) {
            k = 3;
            if (c == 0xf0) lo = 0x90;       // overlong
            else if (c == 0xf4) hi = 0x8f;  // above U+10FFFF
        } else return 0;
        if (n - i - 1 < k) return 0;
        for (size_t j = 1; j <= k; j++) {
            uint8_t b = s[i + j];
            if (b < (j == 1 ? lo : 0x80) || b > (j == 1 ? hi : 0xbf)) return 0;
        }
        i += k + 1;
    }
    return 1;
}

int fuzz_text(const uint8_t *data, size_t size) {
    char path[FUZZ_PATH_MAX], err[QP_ERRLEN] = "";
    fuzz_write("text.txt", data, size, path);
    char *buf = NULL;
    size_t len = 0;
    int rc = hx_read_text(path, &buf, &len, err);
    int want = size > 0 && !memchr(data, 0, size) && ft_utf8_ok(data, size);
    if (rc) {
        FUZZ_CHECK(!want, "refused a good text (%zu bytes): %s", size, err);
        FUZZ_CHECK(rc == QP_EFORMAT, "code %d for a bad text: %s", rc, err);
        FUZZ_CHECK(err[0] && !strchr(err, '\n') && strstr(err, path), "bad message '%s'", err);
        return 0;
    }
    FUZZ_CHECK(want, "accepted a bad text of %zu bytes (empty, NUL or not UTF-8)", size);
    FUZZ_CHECK(buf && len == size && memcmp(buf, data, size) == 0 && buf[len] == 0, "text changed in reading");
    free(buf);
    return 0;
}

#ifdef QP_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_text(data, size); }
#endif
