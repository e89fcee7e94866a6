// sweep.c — the sweep configuration (sweep.h).
#include "hx_sweep.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <libgen.h>
#include <math.h>
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
    // The range first: converting a double beyond long long (9.2e21) is undefined (fuzz_sweep_config).
    if (!cJSON_IsNumber(j) || !(v >= lo && v <= hi) || v != (double)(long long)v)
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
    double d = cJSON_IsNumber(j) ? j->valuedouble : NAN; // in int range before the cast (as hx_cfg_int)
    if (d >= INT_MIN && d <= INT_MAX && d == (double)(int)d) snprintf(out, 64, "%d", (int)d);
    else if (cJSON_IsString(j) && *j->valuestring && strlen(j->valuestring) < 64) snprintf(out, 64, "%s", j->valuestring);
    else if (cJSON_IsBool(j)) snprintf(out, 64, "%s", cJSON_IsTrue(j) ? "true" : "false");
    else return hx_cfg_fail(c, p, "must be an integer, a string or a boolean, not %s", hx_json_type(j));
    return 0;
}

// Axis key of grid g (its JSON path: path.key); dflt: the one value when absent (NULL: required).
static int hx_cfg_axis(struct hx_cfg_ctx *c, const cJSON *g, const char *path, const char *key, const char *dflt,
                       struct hx_axis *ax) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(g, key), *it;
    char p[256];
    hx_path_join(p, sizeof p, path, key);
    ax->n = 0;
    if (!j && !dflt) return hx_cfg_fail(c, p, "missing (required)");
    if (!j) {
        ax->n = 1;
        snprintf(ax->v[0], sizeof ax->v[0], "%s", dflt);
        return 0;
    }
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

// An axis value that must be one of two words: *out = 1 for yes, 0 for no.
static int hx_cfg_choice(struct hx_cfg_ctx *c, const char *path, const char *key, const char *v, const char *yes,
                         const char *no, bool *out) {
    char p[300];
    hx_path_join(p, sizeof p, path, key);
    if (strcmp(v, yes) && strcmp(v, no)) return hx_cfg_fail(c, p, "'%s': must be \"%s\" or \"%s\"", v, yes, no);
    *out = strcmp(v, yes) == 0;
    return 0;
}

// v as a positive decimal integer up to QZ_MAX_GROUP, else -1.
static int64_t hx_axis_count(const char *v) {
    if (!*v || strspn(v, "0123456789") != strlen(v) || strlen(v) > 10) return -1;
    int64_t n = strtoll(v, NULL, 10);
    return n >= 1 && n <= QZ_MAX_GROUP ? n : -1;
}

// A positive integer axis value (bits); anything else is refused naming the axis.
static int hx_cfg_count(struct hx_cfg_ctx *c, const char *path, const char *key, const char *v, int64_t *out) {
    char p[300];
    hx_path_join(p, sizeof p, path, key);
    if ((*out = hx_axis_count(v)) < 0) return hx_cfg_fail(c, p, "'%s': must be a positive integer", v);
    return 0;
}

// group axis values: an integer G (QZ_GROUP), or, where the method takes them, "tensor" and
// "channel".
static int hx_cfg_group(struct hx_cfg_ctx *c, const char *path, const char *v, bool grans, struct qz_base *b) {
    if (grans && (strcmp(v, "tensor") == 0 || strcmp(v, "channel") == 0)) {
        b->gran = strcmp(v, "tensor") == 0 ? QZ_TENSOR : QZ_CHANNEL;
        b->group = 0;
        return 0;
    }
    char p[300];
    hx_path_join(p, sizeof p, path, "group");
    if ((b->group = hx_axis_count(v)) < 0)
        return hx_cfg_fail(c, p, "'%s': must be a positive integer%s", v, grans ? ", \"tensor\" or \"channel\"" : "");
    b->gran = QZ_GROUP;
    return 0;
}

// A grid being expanded: its path, its clauses (keep=, act=) as a template variant whose base
// each point replaces, and the configuration the points go into.
struct hx_grid {
    struct hx_cfg_ctx *c;
    struct hx_sweep_config *cfg;
    const char *path;
    struct qz_variant *tmpl[HX_AXIS_MAX]; // one per act value
    int n_act;
};

// Adds the variant of base b under every act value of the grid; what names the point in
// messages: the canonical spec (what), or the path of the value that made it (at).
static int hx_grid_add(struct hx_grid *g, const struct qz_base *b, const char *at) {
    for (int a = 0; a < g->n_act; a++) {
        struct qz_variant v = *g->tmpl[a]; // the template's clauses (it has no rules), this base
        v.base = *b;
        char spec[1024], q[1200];
        if (qz_variant_print(&v, spec, sizeof spec) < 0) return hx_cfg_fail(g->c, g->path, "spec too long");
        if (at) snprintf(q, sizeof q, "%s", at);
        else snprintf(q, sizeof q, "%s (%s)", g->path, spec);
        int rc = hx_cfg_add_variant(g->c, g->cfg, q, spec);
        if (rc) return rc;
    }
    return 0;
}

// rtn, gptq, awq: bits × group × sym × clip (rtn) × actorder (gptq).
static int hx_grid_int(struct hx_grid *g, const cJSON *j, enum qz_method m) {
    struct hx_axis bits, group, sym, clip, actorder;
    int rc = hx_cfg_axis(g->c, j, g->path, "bits", NULL, &bits);
    if (!rc) rc = hx_cfg_axis(g->c, j, g->path, "group", NULL, &group);
    if (!rc) rc = hx_cfg_axis(g->c, j, g->path, "sym", m == QZ_RTN ? "sym" : "asym", &sym);
    if (!rc) rc = hx_cfg_axis(g->c, j, g->path, "clip", "none", &clip);
    if (!rc) rc = hx_cfg_axis(g->c, j, g->path, "actorder", "false", &actorder);
    for (int bi = 0; bi < bits.n && !rc; bi++)
        for (int gi = 0; gi < group.n && !rc; gi++)
            for (int si = 0; si < sym.n && !rc; si++)
                for (int ki = 0; ki < clip.n && !rc; ki++)
                    for (int oi = 0; oi < actorder.n && !rc; oi++) {
                        struct qz_base b;
                        int64_t nbits;
                        qz_base_init(&b, m);
                        rc = hx_cfg_count(g->c, g->path, "bits", bits.v[bi], &nbits);
                        b.bits = (int)nbits;
                        if (!rc) rc = hx_cfg_group(g->c, g->path, group.v[gi], m == QZ_RTN, &b);
                        if (!rc) rc = hx_cfg_choice(g->c, g->path, "sym", sym.v[si], "sym", "asym", &b.sym);
                        if (!rc && m == QZ_RTN) rc = hx_cfg_choice(g->c, g->path, "clip", clip.v[ki], "mse", "none", &b.clip_mse);
                        if (!rc && m != QZ_RTN)
                            rc = hx_cfg_choice(g->c, g->path, "actorder", actorder.v[oi], "true", "false", &b.actorder);
                        if (!rc && m == QZ_AWQ && b.actorder) rc = hx_cfg_fail(g->c, g->path, "actorder: only gptq takes it");
                        if (!rc) rc = hx_grid_add(g, &b, NULL);
                    }
    return rc;
}

// nf4, fp4: group × dq.
static int hx_grid_nfp4(struct hx_grid *g, const cJSON *j, enum qz_method m) {
    struct hx_axis group, dq;
    int rc = hx_cfg_axis(g->c, j, g->path, "group", "64", &group);
    if (!rc) rc = hx_cfg_axis(g->c, j, g->path, "dq", "false", &dq);
    for (int gi = 0; gi < group.n && !rc; gi++)
        for (int d = 0; d < dq.n && !rc; d++) {
            struct qz_base b;
            qz_base_init(&b, m);
            rc = hx_cfg_group(g->c, g->path, group.v[gi], false, &b);
            if (!rc) rc = hx_cfg_choice(g->c, g->path, "dq", dq.v[d], "true", "false", &b.dq);
            if (!rc) rc = hx_grid_add(g, &b, NULL);
        }
    return rc;
}

// ggml: one llama.cpp type or mix per value of types.
static int hx_grid_ggml(struct hx_grid *g, const cJSON *j) {
    struct hx_axis types;
    int rc = hx_cfg_axis(g->c, j, g->path, "types", NULL, &types);
    for (int t = 0; t < types.n && !rc; t++) {
        char q[300], msg[QP_ERRLEN];
        snprintf(q, sizeof q, "%s.types[%d]", g->path, t);
        struct qz_base b;
        if (qz_base_parse(types.v[t], &b, msg)) return hx_cfg_fail(g->c, q, "%s", msg);
        rc = hx_grid_add(g, &b, q);
    }
    return rc;
}

// The grid's clauses: keep (a keep= list) and act values, each as a template variant.
static int hx_grid_clauses(struct hx_grid *g, const cJSON *j) {
    struct hx_axis act;
    const char *keep = NULL;
    int rc = hx_cfg_axis(g->c, j, g->path, "act", "f32", &act);
    if (!rc) rc = hx_cfg_string(g->c, j, g->path, "keep", 0, &keep);
    for (int a = 0; a < act.n && !rc; a++) {
        char p[300], text[512], msg[QP_ERRLEN];
        snprintf(p, sizeof p, "%s.act", g->path);
        if (strcmp(act.v[a], "f32") && strcmp(act.v[a], "q8"))
            return hx_cfg_fail(g->c, p, "'%s': must be \"f32\" or \"q8\"", act.v[a]);
        snprintf(text, sizeof text, "f32%s%s%s", keep ? ";keep=" : "", keep ? keep : "",
                 strcmp(act.v[a], "q8") == 0 ? ";act=q8" : "");
        if (qz_variant_parse(text, &g->tmpl[a], msg)) return hx_cfg_fail(g->c, g->path, "keep: %s", msg);
        g->n_act = a + 1;
    }
    return rc;
}

static int hx_cfg_grid(struct hx_cfg_ctx *c, struct hx_sweep_config *cfg, const cJSON *j, const char *path) {
    static const char *const keys[] = {"method", "bits", "group", "sym", "clip", "dq", "types", "act",
                                       "keep", "actorder", NULL};
    static const struct {
        const char *name;
        enum qz_method method;
    } grid_methods[] = {{"rtn", QZ_RTN}, {"gptq", QZ_GPTQ}, {"awq", QZ_AWQ},
                        {"nf4", QZ_NF4}, {"fp4", QZ_FP4},   {"ggml", QZ_GGML}};
    if (!cJSON_IsObject(j)) return hx_cfg_fail(c, path, "must be an object, not %s", hx_json_type(j));
    const char *method;
    int rc = hx_cfg_keys(c, j, path, keys);
    if (!rc) rc = hx_cfg_string(c, j, path, "method", 1, &method);
    if (rc) return rc;
    int mi = -1;
    for (size_t i = 0; i < QP_ARRAY_LEN(grid_methods) && mi < 0; i++)
        if (strcmp(method, grid_methods[i].name) == 0) mi = (int)i;
    if (mi < 0) {
        char p[300];
        snprintf(p, sizeof p, "%s.method", path);
        return hx_cfg_fail(c, p, "'%s': expected rtn, nf4, fp4, ggml, gptq or awq", method);
    }
    struct hx_grid g = {.c = c, .cfg = cfg, .path = path};
    enum qz_method m = grid_methods[mi].method;
    rc = hx_grid_clauses(&g, j);
    if (!rc && m == QZ_GGML) rc = hx_grid_ggml(&g, j);
    else if (!rc && (m == QZ_NF4 || m == QZ_FP4)) rc = hx_grid_nfp4(&g, j, m);
    else if (!rc) rc = hx_grid_int(&g, j, m);
    for (int a = 0; a < g.n_act; a++) qz_variant_destroy(g.tmpl[a]);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// The file

void hx_sweep_config_free(struct hx_sweep_config *c) {
    if (!c) return;
    free(c->path), free(c->json), free(c->model), free(c->tokenizer), free(c->text), free(c->calib);
    free(c->db), free(c->label), free(c->gen_prompts_file);
    for (int i = 0; i < c->n_tasks; i++) free(c->task_names[i]);
    free(c->task_names);
    free(c->task_limits);
    for (int i = 0; i < c->n_variants; i++) free(c->variants[i]);
    free(c->variants);
    free(c);
}

// model, tokenizer, db, label, comment, threads.
static int hx_cfg_top(struct hx_cfg_ctx *c, const cJSON *root, struct hx_sweep_config *cfg) {
    const char *s;
    int rc;
    if ((rc = hx_cfg_string(c, root, "", "model", 1, &s)) || (rc = hx_cfg_path(c, "model", s, 1, &cfg->model))) return rc;
    if ((rc = hx_cfg_string(c, root, "", "tokenizer", 0, &s))) return rc;
    if (s && (rc = hx_cfg_path(c, "tokenizer", s, 1, &cfg->tokenizer))) return rc;
    if ((rc = hx_cfg_string(c, root, "", "db", 0, &s))) return rc;
    if (s && (rc = hx_cfg_path(c, "db", s, 0, &cfg->db))) return rc;
    if ((rc = hx_cfg_string(c, root, "", "label", 0, &s))) return rc;
    if (s && !(cfg->label = strdup(s))) return qp_fail(c->err, QP_ENOMEM, "out of memory");
    if ((rc = hx_cfg_string(c, root, "", "comment", 0, &s))) return rc;
    return hx_cfg_int(c, root, "", "threads", 0, 256, &cfg->threads);
}

// "eval": {"text", "protocol", "ctx", "chunks"} (required).
static int hx_cfg_eval(struct hx_cfg_ctx *c, const cJSON *root, struct hx_sweep_config *cfg) {
    static const char *const keys[] = {"text", "protocol", "ctx", "chunks", NULL};
    const char *s;
    const cJSON *o;
    int rc;
    if ((rc = hx_cfg_object(c, root, "", "eval", &o))) return rc;
    if (!o) return hx_cfg_fail(c, "eval", "missing (required: {\"text\": FILE, ...})");
    if ((rc = hx_cfg_keys(c, o, "eval", keys))) return rc;
    if ((rc = hx_cfg_string(c, o, "eval", "text", 1, &s)) || (rc = hx_cfg_path(c, "eval.text", s, 1, &cfg->text))) return rc;
    if ((rc = hx_cfg_string(c, o, "eval", "protocol", 0, &s))) return rc;
    if (s && hx_protocol_parse(s, &cfg->protocol)) return hx_cfg_fail(c, "eval.protocol", "'%s': expected \"llamacpp\" or \"full\"", s);
    if ((rc = hx_cfg_int(c, o, "eval", "ctx", 4, 1 << 20, &cfg->ctx))) return rc;
    return hx_cfg_int(c, o, "eval", "chunks", 0, 1 << 30, &cfg->max_chunks);
}

// "calibration": {"text", "sequences", "length", "allow_overlap"} (optional).
static int hx_cfg_calib(struct hx_cfg_ctx *c, const cJSON *root, struct hx_sweep_config *cfg) {
    static const char *const keys[] = {"text", "sequences", "length", "allow_overlap", NULL};
    const char *s;
    const cJSON *o;
    int rc = hx_cfg_object(c, root, "", "calibration", &o);
    if (rc || !o) return rc;
    if ((rc = hx_cfg_keys(c, o, "calibration", keys))) return rc;
    if ((rc = hx_cfg_string(c, o, "calibration", "text", 1, &s)) ||
        (rc = hx_cfg_path(c, "calibration.text", s, 1, &cfg->calib)))
        return rc;
    if ((rc = hx_cfg_int(c, o, "calibration", "sequences", 1, 1 << 20, &cfg->calib_sequences))) return rc;
    if ((rc = hx_cfg_int(c, o, "calibration", "length", 2, 1 << 20, &cfg->calib_length))) return rc;
    return hx_cfg_bool(c, o, "calibration", "allow_overlap", &cfg->calib_allow_overlap);
}

// "diagnostics": {...} (optional).
static int hx_cfg_diag(struct hx_cfg_ctx *c, const cJSON *root, struct hx_sweep_config *cfg) {
    static const char *const keys[] = {"layer_chunks", "act_chunks", "sensitivity_chunks",
                                       "sensitivity_tensors", "sensitivity_estimate", "keep_tokens", "grid",
                                       NULL};
    const cJSON *o;
    int rc = hx_cfg_object(c, root, "", "diagnostics", &o);
    if (rc || !o) return rc;
    if ((rc = hx_cfg_keys(c, o, "diagnostics", keys)) ||
        (rc = hx_cfg_int(c, o, "diagnostics", "layer_chunks", 0, 1 << 30, &cfg->layer_chunks)) ||
        (rc = hx_cfg_int(c, o, "diagnostics", "act_chunks", 0, 1 << 30, &cfg->act_chunks)) ||
        (rc = hx_cfg_int(c, o, "diagnostics", "sensitivity_chunks", 0, 1 << 30, &cfg->sens_chunks)) ||
        (rc = hx_cfg_bool(c, o, "diagnostics", "sensitivity_tensors", &cfg->sens_tensors)) ||
        (rc = hx_cfg_bool(c, o, "diagnostics", "sensitivity_estimate", &cfg->sens_estimate)) ||
        (rc = hx_cfg_bool(c, o, "diagnostics", "keep_tokens", &cfg->keep_tokens)))
        return rc;
    return hx_cfg_bool(c, o, "diagnostics", "grid", &cfg->grid);
}

// "tasks": ["suite", {"suite": ..., "limit": N}, ...] (optional; as many as given).
static int hx_cfg_tasks(struct hx_cfg_ctx *c, const cJSON *root, struct hx_sweep_config *cfg) {
    static const char *const keys[] = {"suite", "limit", NULL};
    const cJSON *tasks = cJSON_GetObjectItemCaseSensitive(root, "tasks"), *it;
    if (tasks && !cJSON_IsArray(tasks)) return hx_cfg_fail(c, "tasks", "must be an array, not %s", hx_json_type(tasks));
    int n = tasks ? cJSON_GetArraySize(tasks) : 0, rc = 0;
    if (n > 0) {
        cfg->task_names = calloc((size_t)n, sizeof *cfg->task_names);
        cfg->task_limits = calloc((size_t)n, sizeof *cfg->task_limits);
        if (!cfg->task_names || !cfg->task_limits) return qp_fail(c->err, QP_ENOMEM, "out of memory");
    }
    cJSON_ArrayForEach(it, tasks) {
        char p[64];
        const char *s;
        snprintf(p, sizeof p, "tasks[%d]", cfg->n_tasks);
        int *limit = &cfg->task_limits[cfg->n_tasks];
        if (cJSON_IsString(it)) s = it->valuestring;
        else if (!cJSON_IsObject(it))
            return hx_cfg_fail(c, p, "must be a suite name or {\"suite\": ..., \"limit\": N}, not %s", hx_json_type(it));
        else if ((rc = hx_cfg_keys(c, it, p, keys)) || (rc = hx_cfg_string(c, it, p, "suite", 1, &s)) ||
                 (rc = hx_cfg_int(c, it, p, "limit", 0, 1 << 30, limit)))
            return rc;
        // A name without '/' or '.jsonl' is a built-in suite or a dataset; a path is resolved.
        char **name = &cfg->task_names[cfg->n_tasks];
        if (strchr(s, '/') || strstr(s, ".jsonl")) {
            if ((rc = hx_cfg_path(c, p, s, 1, name))) return rc;
        } else if (!(*name = strdup(s))) {
            return qp_fail(c->err, QP_ENOMEM, "out of memory");
        }
        cfg->n_tasks++;
    }
    return 0;
}

// "generate": {"prompts", "tokens", "prompt_tokens", "k", "temperature", "seed", "prompts_file"}
// (optional): free-running generation against the reference (docs/GENERATION.md).
static int hx_cfg_generate(struct hx_cfg_ctx *c, const cJSON *root, struct hx_sweep_config *cfg) {
    static const char *const keys[] = {"prompts", "tokens", "prompt_tokens", "k", "temperature", "seed",
                                       "prompts_file", "comment", NULL};
    const cJSON *o;
    const char *s, *comment;
    int rc = hx_cfg_object(c, root, "", "generate", &o), seed = 1;
    struct hx_gen_opts *g = &cfg->gen;
    if (rc || !o) return rc;
    if ((rc = hx_cfg_keys(c, o, "generate", keys)) ||
        (rc = hx_cfg_int(c, o, "generate", "prompts", 1, 100000, &g->n_prompts)) ||
        (rc = hx_cfg_int(c, o, "generate", "tokens", 1, 1 << 20, &g->n_tokens)) ||
        (rc = hx_cfg_int(c, o, "generate", "prompt_tokens", 1, 1 << 20, &g->prompt_tokens)) ||
        (rc = hx_cfg_int(c, o, "generate", "k", 1, 1 << 20, &g->k)) ||
        (rc = hx_cfg_int(c, o, "generate", "seed", 0, INT32_MAX, &seed)) ||
        (rc = hx_cfg_string(c, o, "generate", "prompts_file", 0, &s)) ||
        (rc = hx_cfg_string(c, o, "generate", "comment", 0, &comment)))
        return rc;
    g->seed = (uint64_t)seed;
    if (s) {
        if ((rc = hx_cfg_path(c, "generate.prompts_file", s, 1, &cfg->gen_prompts_file))) return rc;
        g->prompts_path = cfg->gen_prompts_file;
    }
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "temperature");
    if (t && !(cJSON_IsNumber(t) && t->valuedouble >= 0 && t->valuedouble <= 100))
        return hx_cfg_fail(c, "generate.temperature", "must be a number in 0..100 (0: greedy)");
    if (t) g->temperature = t->valuedouble;
    if (!g->n_prompts && !g->prompts_path)
        return hx_cfg_fail(c, "generate", "give \"prompts\": N (cut from the evaluation text) or \"prompts_file\"");
    return 0;
}

// "variants": [spec, ...] and "grid": [{...}, ...]; at least one variant in all.
static int hx_cfg_variants(struct hx_cfg_ctx *c, const cJSON *root, struct hx_sweep_config *cfg) {
    const cJSON *vars = cJSON_GetObjectItemCaseSensitive(root, "variants"), *it;
    if (vars && !cJSON_IsArray(vars)) return hx_cfg_fail(c, "variants", "must be an array of spec strings, not %s", hx_json_type(vars));
    int i = 0, rc;
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

static int hx_cfg_parse(struct hx_cfg_ctx *c, const cJSON *root, struct hx_sweep_config *cfg) {
    static const char *const top[] = {"model", "tokenizer", "eval", "calibration", "tasks", "variants",
                                      "grid", "diagnostics", "threads", "db", "label", "comment", "generate", NULL};
    if (!cJSON_IsObject(root)) return hx_cfg_fail(c, "(top level)", "must be an object, not %s", hx_json_type(root));
    int rc = hx_cfg_keys(c, root, "", top);
    if (!rc) rc = hx_cfg_top(c, root, cfg);
    if (!rc) rc = hx_cfg_eval(c, root, cfg);
    if (!rc) rc = hx_cfg_calib(c, root, cfg);
    if (!rc) rc = hx_cfg_diag(c, root, cfg);
    if (!rc) rc = hx_cfg_tasks(c, root, cfg);
    if (!rc) rc = hx_cfg_generate(c, root, cfg);
    if (!rc) rc = hx_cfg_variants(c, root, cfg);
    return rc;
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
    cfg->sens_estimate = 1;
    cfg->calib_sequences = 128;
    cfg->calib_length = 512;
    hx_gen_opts_default(&cfg->gen);
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
