// hx_text.c — reading text files for evaluation, calibration and configuration (hx_text.h).
#include "hx_text.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qp.h"
#include "qp_utf8.h"

int hx_read_bytes(const char *path, char **buf, size_t *len, char *err) {
    *buf = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return qp_fail(err, QP_EIO, "cannot read '%s': %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    size_t got;
    while (b && (got = fread(b + n, 1, cap - n - 1, f)) > 0) {
        n += got;
        if (cap - n < 2) {
            char *nb = cap > SIZE_MAX / 2 ? NULL : realloc(b, cap * 2);
            if (!nb) {
                free(b);
                b = NULL;
                break;
            }
            b = nb;
            cap *= 2;
        }
    }
    int bad = ferror(f), bad_errno = errno; // e.g. EISDIR: fopen opens a directory, fread fails
    fclose(f);
    if (!b) return qp_fail(err, QP_ENOMEM, "cannot read '%s': out of memory", path);
    if (bad) {
        free(b);
        return qp_fail(err, QP_EIO, "cannot read '%s': %s", path,
                       bad_errno ? strerror(bad_errno) : "read error");
    }
    b[n] = 0;
    *buf = b;
    *len = n;
    return 0;
}

int hx_read_text(const char *path, char **buf, size_t *len, char *err) {
    char *b;
    size_t n;
    int rc = hx_read_bytes(path, &b, &n, err);
    if (rc) return rc;
    if (n == 0) {
        free(b);
        return qp_fail(err, QP_EFORMAT, "cannot use '%s': the text is empty", path);
    }
    size_t bad_at = qp_utf8_bad_at(b, n);
    if (bad_at < n) {
        free(b);
        return qp_fail(err, QP_EFORMAT, "cannot use '%s': not valid UTF-8 at byte %zu", path, bad_at);
    }
    if (memchr(b, 0, n)) {
        free(b);
        return qp_fail(err, QP_EFORMAT, "cannot use '%s': contains NUL bytes (not a text file)", path);
    }
    *buf = b;
    *len = n;
    return 0;
}
