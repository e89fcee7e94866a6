// rpt_fallback.c — what each variant really is: the method family of its spec (for the figures'
// colours and legends) and, per 2-D weight, the type its spec asks for against the type stored
// (rpt_study.h). A llama.cpp block type whose block does not divide a row falls back to another
// type (quantizers/qz_mix.h); on a small model that can be most tensors, so that two specs are
// the same file — the report says so instead of drawing two points.
//
// Depends on rpt_study.h, quantizers/qz_spec.h and qz_mix.h, SQLite, kernels/qp.h and libc.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "qp.h"
#include "qz_mix.h"
#include "qz_spec.h"
#include "rpt_study.h"

// ---------------------------------------------------------------------------------------------
// Families

// Fixed per family, so that a family looks the same in every figure and every report. Colours
// from the Tableau 10 palette; point types: filled shapes for the weight-only methods, open ones
// for the methods that also change activations (SmoothQuant) or training (QAT).
const struct rpt_family rpt_families[RPT_N_FAMILIES] = {
    {"llama.cpp types", "#1f77b4", 7},   // filled circle
    {"RTN", "#d62728", 5},               // filled square
    {"NF4 / FP4", "#2ca02c", 13},        // filled diamond
    {"GPTQ", "#ff7f0e", 11},             // filled triangle down
    {"AWQ", "#9467bd", 15},              // filled pentagon
    {"SmoothQuant / W8A8", "#8c564b", 4}, // open square
    {"QAT", "#e377c2", 6},               // open circle
    {"float (f16, bf16, f32)", "#17becf", 2}, // cross
    {"other", "#7f7f7f", 1},             // plus
};

int rpt_family_of(const char *spec) {
    static const struct {
        const char *method;
        int family;
    } methods[] = {
        {"qat", 6}, {"gptq", 3}, {"awq", 4}, {"smoothquant", 5}, {"w8a8", 5}, {"rtn", 1},
        {"nf4", 2}, {"fp4", 2},  {"f16", 7}, {"bf16", 7},        {"f32", 7},  {"file", 8},
    };
    // The method is the spec's first word: up to ':' (its options) or ';' (clauses).
    size_t n = strcspn(spec, ":;");
    for (size_t i = 0; i < QP_ARRAY_LEN(methods); i++)
        if (strlen(methods[i].method) == n && strncmp(spec, methods[i].method, n) == 0) return methods[i].family;
    // llama.cpp's block types and mixes: q4_0, q4_k_m, iq4_nl, ...
    if (n > 1 && (spec[0] == 'q' || (spec[0] == 'i' && spec[1] == 'q'))) return 0;
    return 8;
}

// ---------------------------------------------------------------------------------------------
// Requested vs stored types

// The format a tensor would have without the block fallback, printed as grid_stat prints stored
// formats (qz_base_print of the resolved base).
static void rpt_requested(const struct qz_variant *v, const char *tensor, int n_layers, char *out, size_t cap) {
    struct qz_base b = *qz_variant_for_tensor(v, tensor, qz_tensor_class_of(tensor));
    if (b.method == QZ_GGML_MIX) {
        b.ggml_type = qz_mix_type(b.mix, tensor, n_layers, 1);
        b.method = QZ_GGML;
    }
    if (qz_base_print(&b, out, cap) < 0) out[0] = 0;
}

struct rpt_fall {
    char what[128]; // "q4_k→q5_0"
    int n;
};

static int rpt_fall_cmp(const void *a, const void *b) {
    const struct rpt_fall *x = a, *y = b;
    return x->n != y->n ? y->n - x->n : strcmp(x->what, y->what);
}

// One variant: counts its tensors and its fallbacks from the rows of q (tensor, format).
static int rpt_fallback_one(struct rpt_variant *rv, const struct qz_variant *v, int n_layers, sqlite3_stmt *q) {
    struct rpt_fall fall[32];
    int n_fall = 0, step;
    while ((step = sqlite3_step(q)) == SQLITE_ROW) {
        const char *tensor = (const char *)sqlite3_column_text(q, 0);
        const char *stored = (const char *)sqlite3_column_text(q, 1);
        if (!tensor || !stored) continue;
        char want[256];
        rpt_requested(v, tensor, n_layers, want, sizeof want);
        rv->n_tensors++;
        if (strcmp(want, stored) == 0) {
            rv->n_asked++;
            continue;
        }
        char what[128];
        snprintf(what, sizeof what, "%.60s→%.60s", want, stored);
        int k = 0;
        while (k < n_fall && strcmp(fall[k].what, what) != 0) k++;
        if (k == n_fall && n_fall < (int)QP_ARRAY_LEN(fall)) {
            snprintf(fall[n_fall].what, sizeof fall[0].what, "%s", what);
            fall[n_fall++].n = 0;
        }
        if (k < n_fall) fall[k].n++;
    }
    qsort(fall, (size_t)n_fall, sizeof *fall, rpt_fall_cmp);
    size_t len = 0;
    for (int k = 0; k < n_fall && len < sizeof rv->fell - 1; k++) {
        rpt_catf(rv->fell, sizeof rv->fell, &len, "%s%s ×%d", k ? ", " : "", fall[k].what, fall[k].n);
    }
    return step == SQLITE_DONE ? 0 : -1;
}

int rpt_fallback_load(struct rpt_study *s, char *err) {
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(s->db, "SELECT tensor, format FROM grid_stat WHERE variant_id = ? ORDER BY tensor", -1,
                           &q, NULL) != SQLITE_OK)
        return qp_fail(err, QP_EIO, "cannot read '%s': %s", s->path, sqlite3_errmsg(s->db));
    int rc = 0;
    for (int i = 0; i < s->n_v && !rc; i++) {
        struct rpt_variant *rv = &s->v[i];
        rv->n_tensors = rv->n_asked = 0;
        rv->fell[0] = 0;
        // The reference and file: variants have no request to compare with; a spec this build
        // cannot parse (a newer qprobe's) is left without the column rather than refused.
        struct qz_variant *v = NULL;
        if (rv->is_reference || strncmp(rv->spec, "file:", 5) == 0 || qz_variant_parse(rv->spec, &v, NULL) != 0)
            continue;
        sqlite3_reset(q);
        sqlite3_bind_int64(q, 1, rv->id);
        if (rpt_fallback_one(rv, v, s->n_layers, q) != 0)
            rc = qp_fail(err, QP_EIO, "cannot read '%s': %s", s->path, sqlite3_errmsg(s->db));
        qz_variant_destroy(v);
    }
    sqlite3_finalize(q);
    return rc;
}
