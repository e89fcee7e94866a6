// cli.c — shared command plumbing (cli.h).
#include "hx_cli.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hx_model.h"
#include "kn_engine.h"
#include "qp.h"
#include "qp_utf8.h"

int hx_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "qprobe %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return HX_EXIT_USAGE;
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

int hx_kernel_env(char *err) {
    const char *isa = getenv("QPROBE_ISA"), *gemm = getenv("QPROBE_GEMM"), *panels = getenv("QPROBE_PANELS");
    char why[QP_ERRLEN];
    int rc = kn_ops_force(isa, why);
    if (rc) return qp_fail(err, rc, "QPROBE_ISA=%s", why);
    enum kn_gemm g;
    enum kn_panels p;
    if (kn_gemm_parse(gemm, &g)) return qp_fail(err, QP_EINVAL, "QPROBE_GEMM='%s' is not one of own, blas", gemm);
    if (kn_panels_parse(panels, &p))
        return qp_fail(err, QP_EINVAL, "QPROBE_PANELS='%s' is not one of prepack, stream", panels);
    kn_engine_defaults(g, p);
    return 0;
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
