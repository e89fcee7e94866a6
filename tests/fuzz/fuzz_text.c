// fuzz_text.c — fuzz target for the text reader every text input goes through
// (harness/io/hx_text.c, hx_read_text: --text, --calib, generate's --prompt-file, task texts).
//
// The input is the whole file. The reader must accept exactly the files that are non-empty,
// hold no NUL byte and are valid UTF-8 — judged by fuzz_utf8_ok, an independent decoder written
// from RFC 3629 (no overlong forms, no surrogates, nothing above U+10FFFF) — and then give back
// every byte unchanged with a NUL after it; a refused file gives QP_EFORMAT and one line naming it.
//
// Depends on harness/io/hx_text.h, kernels/qp.h and fuzz.h.
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "hx_text.h"
#include "qp.h"

int fuzz_text(const uint8_t *data, size_t size) {
    char path[FUZZ_PATH_MAX], err[QP_ERRLEN] = "";
    fuzz_write("text.txt", data, size, path);
    char *buf = NULL;
    size_t len = 0;
    int rc = hx_read_text(path, &buf, &len, err);
    int want = size > 0 && !memchr(data, 0, size) && fuzz_utf8_ok(data, size);
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
