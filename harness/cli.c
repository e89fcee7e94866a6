// cli.c — shared command plumbing (cli.h).
#include "cli.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model.h"
#include "qp.h"

int hx_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "qprobe %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return HX_EXIT_USAGE;
}

// Offset of the first byte that is not part of well-formed UTF-8 (RFC 3629: no overlong forms,
// no surrogates, nothing above U+10FFFF), or n when all is well.
static size_t hx_utf8_bad_at(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t k;
        unsigned lo = 0x80, hi = 0xbf;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            k = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            k = 2;
            if (c == 0xe0) lo = 0xa0;
            if (c == 0xed) hi = 0x9f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            k = 3;
            if (c == 0xf0) lo = 0x90;
            if (c == 0xf4) hi = 0x8f;
        } else {
            return i;
        }
        if (i + k >= n) return i; // truncated sequence
        if (s[i + 1] < lo || s[i + 1] > hi) return i;
        for (size_t j = 2; j <= k; j++)
            if ((s[i + j] & 0xc0) != 0x80) return i;
        i += k + 1;
    }
    return n;
}

int hx_read_text(const char *path, char **buf, size_t *len, char *err) {
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
    if (n == 0) {
        free(b);
        return qp_fail(err, QP_EFORMAT, "cannot use '%s': the text is empty", path);
    }
    size_t bad_at = hx_utf8_bad_at((const unsigned char *)b, n);
    if (bad_at < n) {
        free(b);
        return qp_fail(err, QP_EFORMAT, "cannot use '%s': not valid UTF-8 at byte %zu", path, bad_at);
    }
    if (memchr(b, 0, n)) {
        free(b);
        return qp_fail(err, QP_EFORMAT, "cannot use '%s': contains NUL bytes (not a text file)", path);
    }
    b[n] = 0;
    *buf = b;
    *len = n;
    return 0;
}

int hx_open_model(const char *cmd, const char *path, const char *tok, int need_tok,
                  struct hx_model **out) {
    char err[QP_ERRLEN];
    *out = NULL;
    if (!path) return hx_usage_error(cmd, "no model given (-m MODEL); see 'qprobe %s --help'", cmd);
    int rc = hx_model_open(path, tok, out, err);
    if (rc) return hx_usage_error(cmd, "%s", err);
    if (need_tok && !(*out)->tok) {
        hx_model_close(*out);
        *out = NULL;
        return hx_usage_error(cmd, "model '%s' carries no tokenizer: pass a llama2.c tokenizer.bin with -z", path);
    }
    return 0;
}

int hx_parse_int(const char *cmd, const char *opt, const char *val, int lo, int hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(val, &end, 10);
    if (errno || end == val || *end || v < lo || v > hi)
        return hx_usage_error(cmd, "%s '%s': expected an integer in %d..%d", opt, val, lo, hi);
    *out = (int)v;
    return 0;
}

void hx_progress_init(struct hx_progress *p, const char *label) {
    p->label = label;
    p->tty = isatty(STDERR_FILENO);
    p->t0 = qp_now();
    p->last_decile = 0;
}

void hx_progress_cb(void *ctx, int done, int total, int64_t tokens) {
    struct hx_progress *p = ctx;
    double dt = qp_now() - p->t0;
    double rate = dt > 0 ? (double)tokens / dt : 0;
    double eta = done > 0 ? dt * (total - done) / done : 0;
    if (p->tty) {
        int width = 30, fill = total ? done * width / total : width;
        fprintf(stderr, "\r%s [%.*s%*s] %d/%d  %.0f tok/s  ETA %.0fs ", p->label, fill,
                "##############################", width - fill, "", done, total, rate, eta);
        fflush(stderr);
    } else {
        int decile = total ? done * 4 / total : 4; // quiet: at 25 % steps
        if (decile > p->last_decile && done < total) {
            fprintf(stderr, "%s: %d/%d chunks, %.0f tok/s\n", p->label, done, total, rate);
            p->last_decile = decile;
        }
    }
}

void hx_progress_end(struct hx_progress *p) {
    if (p->tty) fprintf(stderr, "\r\033[K");
}

void hx_print_json(cJSON *obj) {
    char *s = cJSON_PrintUnformatted(obj);
    if (s) {
        fputs(s, stdout);
        fputc('\n', stdout);
        free(s);
    }
    cJSON_Delete(obj);
}

int hx_default_threads(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (n > 256 ? 256 : (int)n);
}
