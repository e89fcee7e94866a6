// hx_variant.c — quantizing a model under a variant spec without calibration data, and the
// dispatch to the calibrated driver (hx_variant.h).
#include "hx_variant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hx_calib.h"
#include "hx_model.h"
#include "hx_qat.h"
#include "kn_engine.h"
#include "qp.h"
#include "qp_sha256.h"
#include "qz_spec.h"

// One tensor's rows under its resolved base b (rules, keep=, the mix's per-tensor type and the
// block fallback applied). Calibrated bases cannot be done here; plain W8A8 keeps the embedding
// and the classifier in float, as SmoothQuant does.
static int hx_quantize_rows(struct hx_quant_model *q, const struct qz_base *b, const float *x, float **scr,
                            int64_t rows, int64_t cols, const char *name, struct kn_tensor *dst, char *err) {
    static const struct qz_base f32 = {.method = QZ_F32, .bits = 32, .ggml_type = -1};
    int plain_w8a8 = b->method == QZ_SMOOTHQUANT && !b->smooth && b->a8 == QZ_A8_TOKEN;
    if (b->method == QZ_GPTQ || b->method == QZ_AWQ || (b->method == QZ_SMOOTHQUANT && !plain_w8a8)) {
        char spec[256];
        qz_base_print(b, spec, sizeof spec);
        return qp_fail(err, QP_ENOTSUP, "'%s' needs calibration data, which this command does not take yet", spec);
    }
    if (plain_w8a8) {
        int tc = qz_tensor_class_of(name);
        if (tc == QZ_TC_EMBED || tc == QZ_TC_OUTPUT) b = &f32;
    }
    if ((b->method == QZ_RTN || b->method == QZ_NF4 || b->method == QZ_FP4) && b->gran == QZ_GROUP && b->group > cols)
        return qp_fail(err, QP_EINVAL, "group of %lld is larger than the rows of %s (%lld values)",
                       (long long)b->group, name, (long long)cols);
    return hx_quant_model_tensor(q, b, name, x, scr, rows, cols, NULL, dst, err);
}

// Quantizes src into *dst as the variant says for this tensor. A fp32 copy of a non-F32 source
// lives only while this tensor is quantized, unless the result is that copy (f32 and fake
// quantization results are fp32 by nature): peak memory stays near source + result.
static int hx_quantize_tensor(struct hx_quant_model *q, const struct qz_variant *v, const struct kn_tensor *src,
                              const char *name, struct kn_tensor *dst, char *err) {
    int64_t rows = src->ne1, cols = src->ne0;
    q->n_weights += rows * cols;
    struct qz_base resolved;
    hx_tensor_base(v, name, &q->w, cols, &resolved);
    const float *x;
    float *owned;
    if (hx_tensor_f32(src, &x, &owned))
        return qp_fail(err, QP_ENOTSUP, "cannot read %s (type %s)", name, kn_type_info(src->type)->name);
    int rc = hx_quantize_rows(q, &resolved, x, &owned, rows, cols, name, dst, err);
    qp_free(owned); // NULL when the model took it over
    return rc;
}

int hx_quant_model_create(const struct kn_weights *src, const struct qz_variant *v,
                          struct hx_quant_model **out, char *err) {
    *out = NULL;
    if (v->imatrix) return qp_fail(err, QP_ENOTSUP, "';imatrix' needs calibration text (--calib FILE)");
    for (int i = 0; i < v->n_rules; i++)
        if (v->rules[i].base.method == QZ_SMOOTHQUANT)
            return qp_fail(err, QP_ENOTSUP, "smoothquant and w8a8 apply to the whole model, not in a name~ rule");
    struct hx_quant_model *q;
    int L = src->cfg.n_layers, rc = hx_quant_model_begin(src, v, &q, err);
    if (rc) return rc;
    // Every destination starts as its source tensor (q->w is a copy of *src with its own layers).
    struct hx_weight_ref *refs = malloc(HX_N_WEIGHTS(L) * sizeof *refs);
    if (!refs) rc = qp_fail(err, QP_ENOMEM, "out of memory");
    else hx_weight_refs(&q->w, refs);
    for (int i = 0; i < HX_N_WEIGHTS(L) && !rc; i++) {
        if (src->embd_only && refs[i].t == &q->w.output) continue; // shares the embedding's result
        struct kn_tensor from = *refs[i].t;
        rc = hx_quantize_tensor(q, v, &from, refs[i].name, refs[i].t, err);
        // A source read from a model file is done with unless the variant kept it as it is.
        if (!rc && refs[i].t->data != from.data && from.data)
            hx_release_source(from.data, kn_row_bytes(from.type, from.ne0) * (size_t)from.ne1);
    }
    free(refs);
    if (src->embd_only) q->w.output = q->w.tok_embd;
    if (rc) {
        hx_quant_model_destroy(q);
        return rc;
    }
    hx_quant_model_end(q);
    *out = q;
    return 0;
}

int hx_quant_model_create_calib(const struct kn_weights *src, const struct qz_variant *v,
                                const struct hx_calib *cal, struct hx_quant_model **out, char *err) {
    *out = NULL;
    if (!hx_variant_needs_calib(v)) return hx_quant_model_create(src, v, out, err);
    if (!cal) {
        char spec[256];
        qz_variant_print(v, spec, sizeof spec);
        return qp_fail(err, QP_EINVAL, "'%s' needs calibration data (--calib FILE)", spec);
    }
    if (v->base.method == QZ_QAT) return hx_qat_model_create(src, v, cal, out, NULL, err); // hx_qat.h
    return hx_calib_quantize(src, v, cal, out, err);
}

void hx_weights_digest(const struct kn_weights *w, int act_q8, int act_int8, const float *act_scales,
                       char hex[65]) {
    int L = w->cfg.n_layers;
    struct hx_weight_ref *refs = malloc(HX_N_WEIGHTS(L) * sizeof *refs);
    struct qp_sha256 s;
    qp_sha256_init(&s);
    char head[96];
    int n = snprintf(head, sizeof head, "qprobe-weights 1 act_q8=%d act_int8=%d\n", act_q8, act_int8);
    qp_sha256_update(&s, head, (size_t)n);
    if (act_int8 == KN_ACT_INT8_TENSOR && act_scales)
        qp_sha256_update(&s, act_scales, (size_t)L * KN_LIN_IN_COUNT * sizeof *act_scales);
    if (!refs) { // out of memory: no digest (stored NULL), never a false match
        hex[0] = 0;
        return;
    }
    // Cast away const: hx_weight_refs only takes the tensors' addresses.
    hx_weight_refs((struct kn_weights *)w, refs);
    for (int i = 0; i < HX_N_WEIGHTS(L); i++) {
        const struct kn_tensor *t = refs[i].t;
        n = snprintf(head, sizeof head, "%s %d %lld %lld\n", refs[i].name, t->type, (long long)t->ne0,
                     (long long)t->ne1);
        qp_sha256_update(&s, head, (size_t)n);
        if (t->data) qp_sha256_update(&s, t->data, kn_row_bytes(t->type, t->ne0) * (size_t)t->ne1);
    }
    free(refs);
    qp_sha256_final(&s, hex);
}

