// cli.c — shared command plumbing (cli.h).
#include "hx_cli.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hx_model.h"
#include "kn_engine.h"
#include "qp.h"
#include "qp_utf8.h"

int hx_open_model(const char *cmd, const char *path, const char *tok, int need_tok,
                  struct hx_model **out) {
    char err[QP_ERRLEN];
    *out = NULL;
    if (!path) return hx_usage_error(cmd, "no model given (-m MODEL); see 'qprobe %s --help'", cmd);
    int rc = hx_model_open(path, tok, out, err);
    if (rc) return hx_fail(cmd, rc, "%s", err);
    if (need_tok && !(*out)->tok) {
        hx_model_close(*out);
        *out = NULL;
        return hx_usage_error(cmd, "model '%s' carries no tokenizer: pass a llama2.c tokenizer.bin with -z", path);
    }
    return 0;
}

int hx_unknown_option(const char *cmd, char **argv) {
    return hx_usage_error(cmd, "unknown or incomplete option '%s'; see 'qprobe %s --help'", argv[optind - 1], cmd);
}

int hx_task_list_add(struct hx_task_list *l, const char *name, int limit) {
    char **nn = realloc(l->names, (size_t)(l->n + 1) * sizeof *nn);
    if (nn) l->names = nn;
    int *nl = nn ? realloc(l->limits, (size_t)(l->n + 1) * sizeof *nl) : NULL;
    if (nl) l->limits = nl;
    if (!nn || !nl || !(l->names[l->n] = strdup(name))) return QP_ENOMEM;
    l->limits[l->n++] = limit;
    return 0;
}

int hx_task_list_split(struct hx_task_list *l, const char *csv, int limit) {
    char *copy = strdup(csv);
    int rc = copy ? 0 : QP_ENOMEM;
    for (char *save = NULL, *t = copy ? strtok_r(copy, ",", &save) : NULL; t && !rc; t = strtok_r(NULL, ",", &save))
        rc = hx_task_list_add(l, t, limit);
    free(copy);
    return rc;
}

void hx_task_list_free(struct hx_task_list *l) {
    for (int i = 0; i < l->n; i++) free(l->names[i]);
    free(l->names);
    free(l->limits);
    memset(l, 0, sizeof *l);
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
