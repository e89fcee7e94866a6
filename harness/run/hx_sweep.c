// sweep.c — the sweep configuration (sweep.h).
#include "hx_sweep.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hx_text.h"
#include "qp.h"
#include "qz_spec.h"

// Every message starts with the file and the JSON path.
struct hx_cfg_ctx {
    const char *file;
    char *dir; // the file's directory, for relative paths
    char *err;
};

static int hx_cfg_fail(struct hx_cfg_ctx *c, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int hx_cfg_fail(struct hx_cfg_ctx *c, const char *path, const char *fmt, ...) {
    char msg[QP_ERRLEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return qp_fail(c->err, QP_EINVAL, "%s: %s: %s", c->file, path, msg);
}

static const char *hx_json_type(const cJSON *j) {
    if (cJSON_IsString(j)) return "a string";
    if (cJSON_IsNumber(j)) return "a number";
    if (cJSON_IsBool(j)) return "a boolean";
    if (cJSON_IsNull(j)) return "null";
    if (cJSON_IsArray(j)) return "an array";
    if (cJSON_IsObject(j)) return "an object";
    return "invalid";
}

// Fails on any key of obj not in allowed (NULL-terminated).
static int hx_cfg_keys(struct hx_cfg_ctx *c, const cJSON *obj, const char *path, const char *const *allowed) {
    const cJSON *it;
    cJSON_ArrayForEach(it, obj) {
        int ok = 0;
        for (int i = 0; allowed[i] && !ok; i++) ok = strcmp(it->string, allowed[i]) == 0;
        if (!ok) {
            char list[512] = "";
            for (int i = 0; allowed[i]; i++) {
                strncat(list, i ? ", " : "", sizeof list - strlen(list) - 1);
                strncat(list, allowed[i], sizeof list - strlen(list) - 1);
            }
            char p[256];
            snprintf(p, sizeof p, "%s%s%s", path, *path ? "." : "", it->string);
            return hx_cfg_fail(c, p, "unknown key (expected one of: %s)", list);
        }
    }
    return 0;
}

static void hx_path_join(char *buf, size_t cap, const char *path, const char *key) {
    snprintf(buf, cap, "%s%s%s", path, *path ? "." : "", key);
}

// An optional object member: NULL when absent.
static int hx_cfg_object(struct hx_cfg_ctx *c, const cJSON *obj, const char *path, const char *key,
                         const cJSON **out) {
    *out = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (*out && !cJSON_IsObject(*out)) {
        char p[256];
        hx_path_join(p, sizeof p, path, key);
        return hx_cfg_fail(c, p, "must be an object, not %s", hx_json_type(*out));
    }
    return 0;
}

static int hx_cfg_int(struct hx_cfg_ctx *c, const cJSON *obj, const char *path, const char *key, int lo,
                      int hi, int *out) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!j) return 0; // keep the default
    char p[256];
    hx_path_join(p, sizeof p, path, key);
    double v = cJSON_IsNumber(j) ? j->valuedouble : 0;
    if (!cJSON_IsNumber(j) || v != (double)(long long)v || v < lo || v > hi)
        return hx_cfg_fail(c, p, "must be an integer in %d..%d", lo, hi);
    *out = (int)v;
    return 0;
}

static int hx_cfg_bool(struct hx_cfg_ctx *c, const cJSON *obj, const char *path, const char *key, int *out) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!j) return 0;
    char p[256];
    hx_path_join(p, sizeof p, path, key);
    if (!cJSON_IsBool(j)) return hx_cfg_fail(c, p, "must be true or false, not %s", hx_json_type(j));
    *out = cJSON_IsTrue(j);
    return 0;
}

static int hx_cfg_string(struct hx_cfg_ctx *c, const cJSON *obj, const char *path, const char *key,
                         int required, const char **out) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(obj, key);
    char p[256];
    hx_path_join(p, sizeof p, path, key);
    *out = NULL;
    if (!j) return required ? hx_cfg_fail(c, p, "missing (required)") : 0;
    if (!cJSON_IsString(j)) return hx_cfg_fail(c, p, "must be a string, not %s", hx_json_type(j));
    if (!*j->valuestring) return hx_cfg_fail(c, p, "must not be empty");
    *out = j->valuestring;
    return 0;
}

// "${NAME}" expanded from the environment ("${NAME:-DEFAULT}": DEFAULT when NAME is unset or
// empty), then made relative to the configuration's directory. must_exist: the file (or
// directory) must be readable.
static int hx_cfg_path(struct hx_cfg_ctx *c, const char *p, const char *value, int must_exist, char **out) {
    char buf[4096];
    size_t n = 0;
    for (const char *s = value; *s;) {
        if (s[0] == '$' && s[1] == '{') {
            const char *end = strchr(s, '}');
            if (!end) return hx_cfg_fail(c, p, "unterminated '${' in '%s'", value);
            char name[128];
            size_t len = (size_t)(end - s - 2);
            if (len == 0 || len >= sizeof name) return hx_cfg_fail(c, p, "bad variable name in '%s'", value);
            memcpy(name, s + 2, len);
            name[len] = 0;
            char *dflt = strstr(name, ":-");
            if (dflt) {
                *dflt = 0;
                dflt += 2;
            }
            const char *v = getenv(name);
            if (dflt && (!v || !*v)) v = dflt;
            if (!v) return hx_cfg_fail(c, p, "environment variable %s is not set (used in '%s')", name, value);
            size_t vl = strlen(v);
            if (n + vl >= sizeof buf) return hx_cfg_fail(c, p, "path too long");
            memcpy(buf + n, v, vl);
            n += vl;
            s = end + 1;
        } else {
            if (n + 1 >= sizeof buf) return hx_cfg_fail(c, p, "path too long");
            buf[n++] = *s++;
        }
    }
    buf[n] = 0;
    char full[8300];
    if (buf[0] == '/' || !c->dir[0] || strcmp(c->dir, ".") == 0) snprintf(full, sizeof full, "%s", buf);
    else snprintf(full, sizeof full, "%s/%s", c->dir, buf);
    if (must_exist && access(full, R_OK) != 0)
        return hx_cfg_fail(c, p, "cannot read '%s': %s", full, strerror(errno));
    if (!(*out = strdup(full))) return qp_fail(c->err, QP_ENOMEM, "out of memory");
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Variants: the explicit list and the grids

static int hx_cfg_add_variant(struct hx_cfg_ctx *c, struct hx_sweep_config *cfg, const char *p, const char *spec) {
    struct qz_variant *v;
    char msg[QP_ERRLEN], canon[1024];
    if (qz_variant_parse(spec, &v, msg)) return hx_cfg_fail(c, p, "%s", msg);
    qz_variant_print(v, canon, sizeof canon);
    qz_variant_destroy(v);
    for (int i = 0; i < cfg->n_variants; i++)
        if (strcmp(cfg->variants[i], canon) == 0) return 0; // listed twice: run once
    char **nv = realloc(cfg->variants, (size_t)(cfg->n_variants + 1) * sizeof *nv);
    if (!nv || !(nv[cfg->n_variants] = strdup(canon))) {
        if (nv) cfg->variants = nv;
        return qp_fail(c->err, QP_ENOMEM, "out of memory");
    }
    cfg->variants = nv;
    cfg->n_variants++;
    return 0;
}

// The values of one grid axis as strings: a scalar or an array of scalars.
#define HX_AXIS_MAX 16
struct hx_axis {
    int n;
    char v[HX_AXIS_MAX][64];
};

// One axis value as text: an integer, a non-empty string (< 64 bytes) or a boolean.
static int hx_cfg_axis_value(struct hx_cfg_ctx *c, const char *p, const cJSON *j, char out[64]) {
    if (cJSON_IsNumber(j) && j->valuedouble == (double)(int)j->valuedouble) snprintf(out, 64, "%d", (int)j->valuedouble);
    else if (cJSON_IsString(j) && *j->valuestring && strlen(j->valuestring) < 64) snprintf(out, 64, "%s", j->valuestring);
    else if (cJSON_IsBool(j)) snprintf(out, 64, "%s", cJSON_IsTrue(j) ? "true" : "false");
    else return hx_cfg_fail(c, p, "must be an integer, a string or a boolean, not %s", hx_json_type(j));
    return 0;
}

static int hx_cfg_axis(struct hx_cfg_ctx *c, const cJSON *g, const char *path, const char *key, int required,
                       struct hx_axis *ax) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(g, key), *it;
    char p[256];
    hx_path_join(p, sizeof p, path, key);
    ax->n = 0;
    if (!j) return required ? hx_cfg_fail(c, p, "missing (required)") : 0;
    if (!cJSON_IsArray(j)) {
        ax->n = 1;
        return hx_cfg_axis_value(c, p, j, ax->v[0]);
    }
    if (cJSON_GetArraySize(j) == 0) return hx_cfg_fail(c, p, "must not be empty");
    cJSON_ArrayForEach(it, j) {
        if (ax->n == HX_AXIS_MAX) return hx_cfg_fail(c, p, "more than %d values", HX_AXIS_MAX);
        char q[300];
        snprintf(q, sizeof q, "%s[%d]", p, ax->n);
        int rc = hx_cfg_axis_value(c, q, it, ax->v[ax->n++]);
        if (rc) return rc;
    }
    return 0;
}

// group axis values: an integer G → "group=G", "tensor", "channel".
static int hx_cfg_group_value(struct hx_cfg_ctx *c, const char *p, const char *v, char *out, size_t cap) {
    if (strcmp(v, "tensor") == 0 || strcmp(v, "channel") == 0) snprintf(out, cap, "%s", v);
    else if (atoi(v) > 0 && strspn(v, "0123456789") == strlen(v)) snprintf(out, cap, "group=%s", v);
    else return hx_cfg_fail(c, p, "'%s': must be a positive integer, \"tensor\" or \"channel\"", v);
    return 0;
}

static int hx_cfg_grid(struct hx_cfg_ctx *c, struct hx_sweep_config *cfg, const cJSON *g, const char *path) {
    static const char *const keys[] = {"method", "bits", "group", "sym", "clip", "dq", "types", "act",
                                       "keep", "actorder", NULL};
    if (!cJSON_IsObject(g)) return hx_cfg_fail(c, path, "must be an object, not %s", hx_json_type(g));
    int rc = hx_cfg_keys(c, g, path, keys);
    const char *method;
    if (!rc) rc = hx_cfg_string(c, g, path, "method", 1, &method);
    if (rc) return rc;
    struct hx_axis bits, group, sym, clip, dq, types, act, actorder;
    const char *keep = NULL;
    rc = hx_cfg_axis(c, g, path, "act", 0, &act);
    if (!rc) rc = hx_cfg_string(c, g, path, "keep", 0, &keep);
    if (rc) return rc;
    if (act.n == 0) act.n = 1, strcpy(act.v[0], "f32");
    char suffix[HX_AXIS_MAX][128];
    for (int a = 0; a < act.n; a++) {
        if (strcmp(act.v[a], "f32") && strcmp(act.v[a], "q8")) {
            char p[300];
            snprintf(p, sizeof p, "%s.act", path);
            return hx_cfg_fail(c, p, "'%s': must be \"f32\" or \"q8\"", act.v[a]);
        }
        snprintf(suffix[a], sizeof suffix[a], "%s%s%s", keep ? ";keep=" : "", keep ? keep : "",
                 strcmp(act.v[a], "q8") == 0 ? ";act=q8" : "");
    }
    char spec[512], gv[80], p[300];
    snprintf(p, sizeof p, "%s.group", path);
    if (strcmp(method, "rtn") == 0 || strcmp(method, "gptq") == 0 || strcmp(method, "awq") == 0) {
        int is_rtn = strcmp(method, "rtn") == 0;
        if ((rc = hx_cfg_axis(c, g, path, "bits", 1, &bits)) || (rc = hx_cfg_axis(c, g, path, "group", 1, &group)) ||
            (rc = hx_cfg_axis(c, g, path, "sym", 0, &sym)) || (rc = hx_cfg_axis(c, g, path, "clip", 0, &clip)) ||
            (rc = hx_cfg_axis(c, g, path, "actorder", 0, &actorder)))
            return rc;
        if (sym.n == 0) sym.n = 1, strcpy(sym.v[0], is_rtn ? "sym" : "asym");
        if (clip.n == 0) clip.n = 1, strcpy(clip.v[0], "none");
        if (actorder.n == 0) actorder.n = 1, strcpy(actorder.v[0], "false");
        for (int b = 0; b < bits.n; b++)
            for (int gi = 0; gi < group.n; gi++)
                for (int s = 0; s < sym.n; s++)
                    for (int k = 0; k < clip.n; k++)
                        for (int o = 0; o < actorder.n; o++)
                            for (int a = 0; a < act.n; a++) {
                                if ((rc = hx_cfg_group_value(c, p, group.v[gi], gv, sizeof gv))) return rc;
                                int sym_flag = strcmp(sym.v[s], "sym") == 0;
                                if (is_rtn)
                                    snprintf(spec, sizeof spec, "rtn:bits=%s:%s:%s%s%s", bits.v[b], gv, sym.v[s],
                                             strcmp(clip.v[k], "mse") == 0 ? ":clip=mse" : "", suffix[a]);
                                else
                                    snprintf(spec, sizeof spec, "%s:bits=%s:%s%s%s%s", method, bits.v[b], gv,
                                             sym_flag ? "" : ":asym",
                                             strcmp(actorder.v[o], "true") == 0 ? ":actorder" : "", suffix[a]);
                                char q[900];
                                snprintf(q, sizeof q, "%s (%s)", path, spec);
                                if ((rc = hx_cfg_add_variant(c, cfg, q, spec))) return rc;
                            }
        return 0;
    }
    if (strcmp(method, "nf4") == 0 || strcmp(method, "fp4") == 0) {
        if ((rc = hx_cfg_axis(c, g, path, "group", 0, &group)) || (rc = hx_cfg_axis(c, g, path, "dq", 0, &dq)))
            return rc;
        if (group.n == 0) group.n = 1, strcpy(group.v[0], "64");
        if (dq.n == 0) dq.n = 1, strcpy(dq.v[0], "false");
        for (int gi = 0; gi < group.n; gi++)
            for (int d = 0; d < dq.n; d++)
                for (int a = 0; a < act.n; a++) {
                    snprintf(spec, sizeof spec, "%s:group=%s%s%s", method, group.v[gi],
                             strcmp(dq.v[d], "true") == 0 ? ":dq" : "", suffix[a]);
                    char q[900];
                    snprintf(q, sizeof q, "%s (%s)", path, spec);
                    if ((rc = hx_cfg_add_variant(c, cfg, q, spec))) return rc;
                }
        return 0;
    }
    if (strcmp(method, "ggml") == 0) {
        if ((rc = hx_cfg_axis(c, g, path, "types", 1, &types))) return rc;
        for (int t = 0; t < types.n; t++)
            for (int a = 0; a < act.n; a++) {
                snprintf(spec, sizeof spec, "%s%s", types.v[t], suffix[a]);
                char q[300];
                snprintf(q, sizeof q, "%s.types[%d]", path, t);
                if ((rc = hx_cfg_add_variant(c, cfg, q, spec))) return rc;
            }
        return 0;
    }
    snprintf(p, sizeof p, "%s.method", path);
    return hx_cfg_fail(c, p, "'%s': expected rtn, nf4, fp4, ggml, gptq or awq", method);
}

// ---------------------------------------------------------------------------------------------
// The file

void hx_sweep_config_free(struct hx_sweep_config *c) {
    if (!c) return;
    free(c->path), free(c->json), free(c->model), free(c->tokenizer), free(c->text), free(c->calib);
    free(c->db), free(c->label);
    for (int i = 0; i < c->n_tasks; i++) free(c->tasks[i].suite);
    free(c->tasks);
    for (int i = 0; i < c->n_variants; i++) free(c->variants[i]);
    free(c->variants);
    free(c);
}

static int hx_cfg_parse(struct hx_cfg_ctx *c, const cJSON *root, struct hx_sweep_config *cfg) {
    static const char *const top[] = {"model", "tokenizer", "eval", "calibration", "tasks", "variants",
                                      "grid", "diagnostics", "threads", "db", "label", "comment", NULL};
    static const char *const eval_keys[] = {"text", "protocol", "ctx", "chunks", NULL};
    static const char *const calib_keys[] = {"text", "sequences", "length", "allow_overlap", NULL};
    static const char *const diag_keys[] = {"layer_chunks", "act_chunks", "sensitivity_chunks",
                                            "sensitivity_tensors", "keep_tokens", "grid", NULL};
    static const char *const task_keys[] = {"suite", "limit", NULL};
    if (!cJSON_IsObject(root)) return hx_cfg_fail(c, "(top level)", "must be an object, not %s", hx_json_type(root));
    int rc = hx_cfg_keys(c, root, "", top);
    const char *s;
    const cJSON *o;
    if (rc) return rc;
    if ((rc = hx_cfg_string(c, root, "", "model", 1, &s)) || (rc = hx_cfg_path(c, "model", s, 1, &cfg->model))) return rc;
    if ((rc = hx_cfg_string(c, root, "", "tokenizer", 0, &s))) return rc;
    if (s && (rc = hx_cfg_path(c, "tokenizer", s, 1, &cfg->tokenizer))) return rc;
    if ((rc = hx_cfg_string(c, root, "", "db", 0, &s))) return rc;
    if (s && (rc = hx_cfg_path(c, "db", s, 0, &cfg->db))) return rc;
    if ((rc = hx_cfg_string(c, root, "", "label", 0, &s))) return rc;
    if (s && !(cfg->label = strdup(s))) return qp_fail(c->err, QP_ENOMEM, "out of memory");
    if ((rc = hx_cfg_string(c, root, "", "comment", 0, &s))) return rc;
    if ((rc = hx_cfg_int(c, root, "", "threads", 0, 256, &cfg->threads))) return rc;

    if ((rc = hx_cfg_object(c, root, "", "eval", &o))) return rc;
    if (!o) return hx_cfg_fail(c, "eval", "missing (required: {\"text\": FILE, ...})");
    if ((rc = hx_cfg_keys(c, o, "eval", eval_keys))) return rc;
    if ((rc = hx_cfg_string(c, o, "eval", "text", 1, &s)) || (rc = hx_cfg_path(c, "eval.text", s, 1, &cfg->text))) return rc;
    if ((rc = hx_cfg_string(c, o, "eval", "protocol", 0, &s))) return rc;
    if (s && hx_protocol_parse(s, &cfg->protocol)) return hx_cfg_fail(c, "eval.protocol", "'%s': expected \"llamacpp\" or \"full\"", s);
    if ((rc = hx_cfg_int(c, o, "eval", "ctx", 4, 1 << 20, &cfg->ctx))) return rc;
    if ((rc = hx_cfg_int(c, o, "eval", "chunks", 0, 1 << 30, &cfg->max_chunks))) return rc;

    if ((rc = hx_cfg_object(c, root, "", "calibration", &o))) return rc;
    if (o) {
        if ((rc = hx_cfg_keys(c, o, "calibration", calib_keys))) return rc;
        if ((rc = hx_cfg_string(c, o, "calibration", "text", 1, &s)) ||
            (rc = hx_cfg_path(c, "calibration.text", s, 1, &cfg->calib)))
            return rc;
        if ((rc = hx_cfg_int(c, o, "calibration", "sequences", 1, 1 << 20, &cfg->calib_sequences))) return rc;
        if ((rc = hx_cfg_int(c, o, "calibration", "length", 2, 1 << 20, &cfg->calib_length))) return rc;
        if ((rc = hx_cfg_bool(c, o, "calibration", "allow_overlap", &cfg->calib_allow_overlap))) return rc;
    }

    if ((rc = hx_cfg_object(c, root, "", "diagnostics", &o))) return rc;
    if (o) {
        if ((rc = hx_cfg_keys(c, o, "diagnostics", diag_keys)) ||
            (rc = hx_cfg_int(c, o, "diagnostics", "layer_chunks", 0, 1 << 30, &cfg->layer_chunks)) ||
            (rc = hx_cfg_int(c, o, "diagnostics", "act_chunks", 0, 1 << 30, &cfg->act_chunks)) ||
            (rc = hx_cfg_int(c, o, "diagnostics", "sensitivity_chunks", 0, 1 << 30, &cfg->sens_chunks)) ||
            (rc = hx_cfg_bool(c, o, "diagnostics", "sensitivity_tensors", &cfg->sens_tensors)) ||
            (rc = hx_cfg_bool(c, o, "diagnostics", "keep_tokens", &cfg->keep_tokens)) ||
            (rc = hx_cfg_bool(c, o, "diagnostics", "grid", &cfg->grid)))
            return rc;
    }

    const cJSON *tasks = cJSON_GetObjectItemCaseSensitive(root, "tasks"), *it;
    if (tasks && !cJSON_IsArray(tasks)) return hx_cfg_fail(c, "tasks", "must be an array, not %s", hx_json_type(tasks));
    if (tasks && cJSON_GetArraySize(tasks) > 0) {
        cfg->tasks = calloc((size_t)cJSON_GetArraySize(tasks), sizeof *cfg->tasks);
        if (!cfg->tasks) return qp_fail(c->err, QP_ENOMEM, "out of memory");
    }
    cJSON_ArrayForEach(it, tasks) {
        char p[64];
        snprintf(p, sizeof p, "tasks[%d]", cfg->n_tasks);
        struct hx_sweep_task *t = &cfg->tasks[cfg->n_tasks];
        if (cJSON_IsString(it)) {
            s = it->valuestring;
        } else if (cJSON_IsObject(it)) {
            if ((rc = hx_cfg_keys(c, it, p, task_keys)) || (rc = hx_cfg_string(c, it, p, "suite", 1, &s)) ||
                (rc = hx_cfg_int(c, it, p, "limit", 0, 1 << 30, &t->limit)))
                return rc;
        } else {
            return hx_cfg_fail(c, p, "must be a suite name or {\"suite\": ..., \"limit\": N}, not %s", hx_json_type(it));
        }
        // A name without '/' or '.jsonl' is a built-in suite or a dataset; a path is resolved.
        if (strchr(s, '/') || strstr(s, ".jsonl")) {
            if ((rc = hx_cfg_path(c, p, s, 1, &t->suite))) return rc;
        } else if (!(t->suite = strdup(s))) {
            return qp_fail(c->err, QP_ENOMEM, "out of memory");
        }
        cfg->n_tasks++;
    }

    const cJSON *vars = cJSON_GetObjectItemCaseSensitive(root, "variants");
    if (vars && !cJSON_IsArray(vars)) return hx_cfg_fail(c, "variants", "must be an array of spec strings, not %s", hx_json_type(vars));
    int i = 0;
    cJSON_ArrayForEach(it, vars) {
        char p[64];
        snprintf(p, sizeof p, "variants[%d]", i++);
        if (!cJSON_IsString(it)) return hx_cfg_fail(c, p, "must be a spec string, not %s", hx_json_type(it));
        if ((rc = hx_cfg_add_variant(c, cfg, p, it->valuestring))) return rc;
    }
    const cJSON *grid = cJSON_GetObjectItemCaseSensitive(root, "grid");
    if (grid && !cJSON_IsArray(grid)) return hx_cfg_fail(c, "grid", "must be an array of grid objects, not %s", hx_json_type(grid));
    i = 0;
    cJSON_ArrayForEach(it, grid) {
        char p[64];
        snprintf(p, sizeof p, "grid[%d]", i++);
        if ((rc = hx_cfg_grid(c, cfg, it, p))) return rc;
    }
    if (cfg->n_variants == 0)
        return hx_cfg_fail(c, vars ? "variants" : "(top level)", "no variants: give \"variants\" and/or \"grid\"");
    return 0;
}

int hx_sweep_config_load(const char *path, struct hx_sweep_config **out, char *err) {
    *out = NULL;
    struct hx_sweep_config *cfg = calloc(1, sizeof *cfg);
    if (!cfg) return qp_fail(err, QP_ENOMEM, "out of memory");
    cfg->protocol = HX_PROTO_LLAMACPP;
    cfg->ctx = 512;
    cfg->layer_chunks = 1;
    cfg->act_chunks = 4;
    cfg->grid = 1;
    cfg->calib_sequences = 128;
    cfg->calib_length = 512;
    size_t len;
    int rc = hx_read_text(path, &cfg->json, &len, err);
    char *dcopy = strdup(path);
    struct hx_cfg_ctx c = {path, NULL, err};
    if (!rc && (!dcopy || !(cfg->path = strdup(path)) || !(c.dir = strdup(dirname(dcopy)))))
        rc = qp_fail(err, QP_ENOMEM, "out of memory");
    cJSON *root = NULL;
    if (!rc) {
        root = cJSON_ParseWithLength(cfg->json, len);
        if (!root) {
            // cJSON points at where parsing stopped: report the line.
            const char *at = cJSON_GetErrorPtr();
            int line = 1;
            for (const char *p = cfg->json; at && p < at && *p; p++) line += *p == '\n';
            rc = qp_fail(err, QP_EINVAL, "%s: line %d: not valid JSON", path, line);
        }
    }
    if (!rc) rc = hx_cfg_parse(&c, root, cfg);
    cJSON_Delete(root);
    free(dcopy);
    free(c.dir);
    if (rc) {
        hx_sweep_config_free(cfg);
        return rc;
    }
    *out = cfg;
    return 0;
}
