// variant.c — quantizing a model under a variant spec (variant.h).
#include "hx_variant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hx_calib.h"
#include "kn_blocks.h"
#include "hx_model.h"
#include "qp.h"
#include "qz_ggml.h"
#include "qz_kquants.h"
#include "qz_mix.h"
#include "qz_rtn.h"
#include "qz_smooth.h"
#include "qz_spec.h"

static int hx_own(struct hx_quant_model *q, void *p) {
    if (!p) return QP_ENOMEM;
    if (q->n_owned == q->cap_owned) {
        int cap = q->cap_owned ? 2 * q->cap_owned : 32;
        void **nb = realloc(q->owned, (size_t)cap * sizeof *nb);
        if (!nb) {
            qp_free(p);
            return QP_ENOMEM;
        }
        q->owned = nb;
        q->cap_owned = cap;
    }
    q->owned[q->n_owned++] = p;
    return 0;
}



int hx_tensor_f32(const struct kn_tensor *t, const float **rows, float **owned) {
    *owned = NULL;
    if (t->type == KN_F32) {
        *rows = t->data;
        return 0;
    }
    if (!kn_type_has_dequant(t->type)) return QP_ENOTSUP;
    float *buf = qp_alloc_array((size_t)(t->ne0 * t->ne1), sizeof(float));
    if (!buf) return QP_ENOMEM;
    size_t rb = kn_row_bytes(t->type, t->ne0);
#pragma omp parallel for schedule(static) if (t->ne0 * t->ne1 >= (1 << 16))
    for (int64_t r = 0; r < t->ne1; r++)
        kn_dequantize_row(t->type, (const uint8_t *)t->data + (size_t)r * rb, buf + r * t->ne0, t->ne0);
    *rows = *owned = buf;
    return 0;
}

static int hx_is_kquant(int type) {
    return type == KN_Q2_K || type == KN_Q3_K || type == KN_Q4_K || type == KN_Q5_K || type == KN_Q6_K;
}

// Packs rows of x into blocks of type (a llama.cpp type or f16/bf16). *dst owned. Rows are
// independent and go over OpenMP threads (the row quantizers keep no state).
int hx_pack_rows(int type, const float *x, int64_t rows, int64_t cols, const float *imatrix, void *out) {
    size_t rb = kn_row_bytes(type, cols);
    int min_rc = 0; // the codes are negative; every row of a tensor fails alike, if at all
#pragma omp parallel for schedule(static) if (rows * cols >= (1 << 16)) reduction(min : min_rc)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * cols;
        uint8_t *yr = (uint8_t *)out + (size_t)r * rb;
        int rc = 0;
        if (type == KN_F16 || type == KN_BF16) {
            uint16_t *h = (uint16_t *)yr;
            for (int64_t j = 0; j < cols; j++) h[j] = type == KN_F16 ? qp_fp32_to_fp16(xr[j]) : qp_fp32_to_bf16(xr[j]);
        } else if (hx_is_kquant(type)) {
            rc = qz_quantize_row_k(type, xr, yr, cols, imatrix);
        } else {
            rc = qz_quantize_row(type, xr, yr, cols, imatrix);
        }
        if (rc < min_rc) min_rc = rc;
    }
    return min_rc;
}

static int hx_pack(struct hx_quant_model *q, int type, const float *x, int64_t rows, int64_t cols,
                   struct kn_tensor *dst, char *err, const char *name) {
    size_t rb = kn_row_bytes(type, cols);
    uint8_t *buf = qp_alloc_array((size_t)rows, rb);
    if (hx_own(q, buf)) return qp_fail(err, QP_ENOMEM, "out of memory quantizing %s", name);
    int rc = hx_pack_rows(type, x, rows, cols, NULL, buf);
    if (rc) return qp_fail(err, rc, "cannot quantize %s as %s", name, kn_type_info(type)->name);
    *dst = (struct kn_tensor){type, cols, rows, buf};
    q->bytes += (uint64_t)rb * (uint64_t)rows;
    return 0;
}

// The name llama.cpp's mix rules see for tensor `name` of w: the fused tensor a Phi-3 part is
// stored in (q, k, v → attn_qkv; gate, up → ffn_up), else the name itself.
static const char *hx_mix_name(const struct kn_weights *w, const char *name, char *buf, size_t cap) {
    int layer;
    char what[32];
    if (sscanf(name, "blk.%d.%31[a-z_].weight", &layer, what) != 2) return name;
    const char *fused = NULL;
    if (w->cfg.fused_qkv && (!strcmp(what, "attn_q") || !strcmp(what, "attn_k") || !strcmp(what, "attn_v")))
        fused = "attn_qkv";
    if (w->cfg.fused_gate_up && (!strcmp(what, "ffn_gate") || !strcmp(what, "ffn_up"))) fused = "ffn_up";
    if (!fused) return name;
    snprintf(buf, cap, "blk.%d.%s.weight", layer, fused);
    return buf;
}

int hx_ggml_type_for(const struct qz_base *b, const char *name, const struct kn_weights *w, int64_t cols) {
    char buf[64];
    int type = b->method == QZ_GGML ? b->ggml_type
                                    : qz_mix_type(b->mix, hx_mix_name(w, name, buf, sizeof buf), w->cfg.n_layers,
                                                  !w->embd_only);
    return qz_fallback_type(type, cols);
}

void hx_tensor_base(const struct qz_variant *v, const char *name, const struct kn_weights *w, int64_t cols,
                    struct qz_base *out) {
    *out = *qz_variant_for_tensor(v, name, qz_tensor_class_of(name));
    if (out->method != QZ_GGML && out->method != QZ_GGML_MIX) return;
    int type = hx_ggml_type_for(out, name, w, cols);
    if (type == KN_F16 || type == KN_BF16 || type == KN_F32) {
        qz_base_parse(type == KN_F32 ? "f32" : type == KN_F16 ? "f16" : "bf16", out, NULL);
        return;
    }
    out->method = QZ_GGML;
    out->ggml_type = type;
}

static int hx_quantize_rows(struct hx_quant_model *q, const struct qz_base *b, const float *x, int64_t rows,
                            int64_t cols, const char *name, struct kn_tensor *dst, char *err);

// Quantizes src into *dst as the variant says for this tensor. A fp32 copy of a non-F32 source
// lives only while this tensor is quantized, unless the result is that copy (f32 and fake
// quantization results are fp32 by nature): peak memory stays near source + result.
static int hx_quantize_tensor(struct hx_quant_model *q, const struct qz_variant *v, const struct kn_tensor *src,
                              const char *name, const struct kn_weights *w, struct kn_tensor *dst, char *err) {
    int64_t rows = src->ne1, cols = src->ne0;
    q->n_weights += rows * cols;
    struct qz_base resolved; // rules, keep=, the mix's per-tensor type and the block fallback applied
    hx_tensor_base(v, name, w, cols, &resolved);
    const float *x;
    float *owned;
    if (hx_tensor_f32(src, &x, &owned))
        return qp_fail(err, QP_ENOTSUP, "cannot read %s (type %s)", name, kn_type_info(src->type)->name);
    int rc = hx_quantize_rows(q, &resolved, x, rows, cols, name, dst, err);
    if (owned && !rc && dst->data == owned) {
        if (hx_own(q, owned)) return qp_fail(err, QP_ENOMEM, "out of memory quantizing %s", name);
    } else {
        qp_free(owned);
    }
    return rc;
}

static int hx_quantize_rows(struct hx_quant_model *q, const struct qz_base *b, const float *x, int64_t rows,
                            int64_t cols, const char *name, struct kn_tensor *dst, char *err) {
    switch (b->method) {
    case QZ_F32:
        *dst = (struct kn_tensor){KN_F32, cols, rows, x};
        q->bytes += (uint64_t)(rows * cols) * 4;
        return 0;
    case QZ_F16:
    case QZ_BF16:
        return hx_pack(q, b->method == QZ_F16 ? KN_F16 : KN_BF16, x, rows, cols, dst, err, name);
    case QZ_RTN:
    case QZ_NF4:
    case QZ_FP4: {
        if (b->gran == QZ_GROUP && b->group > cols)
            return qp_fail(err, QP_EINVAL, "group of %lld is larger than the rows of %s (%lld values)",
                           (long long)b->group, name, (long long)cols);
        float *out = qp_alloc_array((size_t)(rows * cols), sizeof(float));
        if (hx_own(q, out)) return qp_fail(err, QP_ENOMEM, "out of memory quantizing %s", name);
        struct qz_stats st;
        memset(&st, 0, sizeof st);
        int rc = qz_fake_quant(b, x, out, rows, cols, &st);
        if (rc) return qp_fail(err, rc, "cannot quantize %s", name);
        *dst = (struct kn_tensor){KN_F32, cols, rows, out};
        q->bytes += st.bytes;
        return 0;
    }
    case QZ_GGML:
        return hx_pack(q, b->ggml_type, x, rows, cols, dst, err, name);
    default: {
        if (b->method == QZ_SMOOTHQUANT && !b->smooth && b->a8 == QZ_A8_TOKEN) { // plain W8A8
            int tc = qz_tensor_class_of(name);
            if (tc == QZ_TC_EMBED || tc == QZ_TC_OUTPUT) { // kept in float, as SmoothQuant does
                *dst = (struct kn_tensor){KN_F32, cols, rows, x};
                q->bytes += (uint64_t)(rows * cols) * 4;
                return 0;
            }
            float *out = qp_alloc_array((size_t)(rows * cols), sizeof(float));
            if (hx_own(q, out)) return qp_fail(err, QP_ENOMEM, "out of memory quantizing %s", name);
            int rc = qz_w8_channel(x, out, rows, cols, NULL);
            if (rc) return qp_fail(err, rc, "cannot quantize %s", name);
            *dst = (struct kn_tensor){KN_F32, cols, rows, out};
            q->bytes += (uint64_t)((qz_tensor_bits(b, rows, cols) + 7) / 8);
            return 0;
        }
        char spec[256];
        qz_base_print(b, spec, sizeof spec);
        return qp_fail(err, QP_ENOTSUP, "'%s' needs calibration data, which this command does not take yet", spec);
    }
    }
}

int hx_quant_model_create(const struct kn_weights *src, const struct qz_variant *v,
                          struct hx_quant_model **out, char *err) {
    *out = NULL;
    if (v->imatrix) return qp_fail(err, QP_ENOTSUP, "';imatrix' needs calibration text (--calib FILE)");
    struct hx_quant_model *q = calloc(1, sizeof *q);
    if (!q) return qp_fail(err, QP_ENOMEM, "out of memory");
    q->w = *src;
    q->act_q8 = v->act == QZ_ACT_Q8;
    q->act_int8 = hx_variant_act_int8(v);
    int L = src->cfg.n_layers, rc = 0;
    for (int i = 0; i < v->n_rules; i++)
        if (v->rules[i].base.method == QZ_SMOOTHQUANT) {
            free(q);
            return qp_fail(err, QP_ENOTSUP, "smoothquant and w8a8 apply to the whole model, not in a name~ rule");
        }
    struct kn_layer_weights *layers = qp_calloc_array((size_t)L, sizeof *layers);
    if (hx_own(q, layers)) {
        free(q);
        return qp_fail(err, QP_ENOMEM, "out of memory");
    }
    memcpy(layers, src->layers, (size_t)L * sizeof *layers);
    q->w.layers = layers;
    // Every destination starts as its source tensor (q->w is a copy of *src with its own layers).
    struct hx_weight_ref *refs = malloc(HX_N_WEIGHTS(L) * sizeof *refs);
    if (!refs) rc = qp_fail(err, QP_ENOMEM, "out of memory");
    else hx_weight_refs(&q->w, refs);
    for (int i = 0; i < HX_N_WEIGHTS(L) && !rc; i++) {
        if (src->embd_only && refs[i].t == &q->w.output) continue; // shares the embedding's result
        struct kn_tensor from = *refs[i].t;
        rc = hx_quantize_tensor(q, v, &from, refs[i].name, src, refs[i].t, err);
        // A source read from a model file is done with unless the variant kept it as it is.
        if (!rc && refs[i].t->data != from.data && from.data)
            hx_release_source(from.data, kn_row_bytes(from.type, from.ne0) * (size_t)from.ne1);
    }
    free(refs);
    if (src->embd_only) q->w.output = q->w.tok_embd;
    q->w.tied = !rc && q->w.output.data == q->w.tok_embd.data;
    if (rc) {
        hx_quant_model_destroy(q);
        return rc;
    }
    q->bits_per_weight = q->n_weights ? 8.0 * (double)q->bytes / (double)q->n_weights : 0;
    *out = q;
    return 0;
}

void hx_quant_model_destroy(struct hx_quant_model *q) {
    if (!q) return;
    for (int i = 0; i < q->n_owned; i++) qp_free(q->owned[i]);
    free(q->owned);
    free(q);
}

int hx_llama_ftype(const struct qz_base *b) {
    if (b->method == QZ_F32) return 0;
    if (b->method == QZ_F16) return 1;
    if (b->method == QZ_GGML_MIX)
        return b->mix == QZ_MIX_Q3_K_M ? 12 : b->mix == QZ_MIX_Q4_K_M ? 15 : 17;
    switch (b->ggml_type) { // llama_ftype: MOSTLY_<type> (k-quants: the _S variant)
    case KN_Q4_0: return 2;
    case KN_Q4_1: return 3;
    case KN_Q8_0: return 7;
    case KN_Q5_0: return 8;
    case KN_Q5_1: return 9;
    case KN_Q2_K: return 10;
    case KN_Q3_K: return 11;
    case KN_Q4_K: return 14;
    case KN_Q5_K: return 16;
    case KN_Q6_K: return 18;
    case KN_IQ4_NL: return 25;
    default: return 0;
    }
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
    struct hx_calib_model cm;
    int rc = hx_calib_quantize(src, v, cal, &cm, err);
    if (rc) return rc;
    struct hx_quant_model *q = calloc(1, sizeof *q);
    if (!q) {
        hx_calib_model_deinit(&cm);
        return qp_fail(err, QP_ENOMEM, "out of memory");
    }
    // The buffers move over to q (hx_own frees one it cannot hold; the rest are freed below).
    for (int i = 0; i < cm.n_owned; i++) {
        if (!rc) rc = hx_own(q, cm.owned[i]);
        else qp_free(cm.owned[i]);
    }
    cm.n_owned = 0;
    q->w = cm.w;
    q->bytes = cm.bytes;
    q->n_weights = cm.n_weights;
    q->act_q8 = cm.act_q8;
    q->act_int8 = cm.act_int8;
    q->act_scales = cm.act_scales; // one of the buffers moved over
    q->bits_per_weight = q->n_weights ? 8.0 * (double)q->bytes / (double)q->n_weights : 0;
    hx_calib_model_deinit(&cm);
    if (rc) {
        hx_quant_model_destroy(q);
        return qp_fail(err, QP_ENOMEM, "out of memory");
    }
    *out = q;
    return 0;
}
