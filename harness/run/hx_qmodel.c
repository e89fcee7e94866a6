// hx_qmodel.c — a quantized model and the tensor-level steps its builders share (hx_qmodel.h).
#include "hx_qmodel.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kn_blocks.h"
#include "kn_engine.h"
#include "kn_ops.h"
#include "qz_ggml.h"
#include "qz_kquants.h"
#include "qz_mix.h"
#include "qz_rtn.h"
#include "qz_smooth.h"
#include "qz_spec.h"

// ---------------------------------------------------------------------------------------------
// The model

int hx_quant_model_begin(const struct kn_weights *src, const struct qz_variant *v,
                         struct hx_quant_model **out, char *err) {
    *out = NULL;
    struct hx_quant_model *q = calloc(1, sizeof *q);
    if (!q) return qp_fail(err, QP_ENOMEM, "out of memory");
    int L = src->cfg.n_layers;
    q->w = *src;
    q->act_q8 = v->act == QZ_ACT_Q8;
    q->act_int8 = hx_variant_act_int8(v);
    struct kn_layer_weights *layers = qp_calloc_array((size_t)L, sizeof *layers);
    if (qp_owned_add(&q->owned, layers)) {
        free(q);
        return qp_fail(err, QP_ENOMEM, "out of memory");
    }
    memcpy(layers, src->layers, (size_t)L * sizeof *layers);
    q->w.layers = layers;
    *out = q;
    return 0;
}

void hx_quant_model_end(struct hx_quant_model *q) {
    q->w.tied = q->w.output.data == q->w.tok_embd.data;
    q->bits_per_weight = q->n_weights ? 8.0 * (double)q->bytes / (double)q->n_weights : 0;
}

void hx_quant_model_destroy(struct hx_quant_model *q) {
    if (!q) return;
    qp_owned_free(&q->owned);
    free(q);
}

void hx_quant_model_engine_opts(const struct hx_quant_model *q, struct kn_engine_opts *eo) {
    eo->act_q8 = q->act_q8;
    eo->act_int8 = q->act_int8;
    eo->act_scales = q->act_scales; // W8A8's static scales (NULL unless act=tensor)
}

// ---------------------------------------------------------------------------------------------
// Tensors

int hx_tensor_f32(const struct kn_tensor *t, const float **rows, float **owned) {
    size_t cap = 0;
    *owned = NULL;
    int rc = hx_tensor_f32_buf(t, rows, owned, &cap);
    if (rc) qp_free(*owned), *owned = NULL;
    return rc;
}

int hx_tensor_f32_buf(const struct kn_tensor *t, const float **rows, float **bufp, size_t *cap) {
    if (t->type == KN_F32) {
        *rows = t->data;
        return 0;
    }
    if (!kn_type_has_dequant(t->type)) return QP_ENOTSUP;
    size_t n = (size_t)(t->ne0 * t->ne1);
    if (n > *cap) {
        qp_free(*bufp);
        *cap = 0;
        if (!(*bufp = qp_alloc_array(n, sizeof(float)))) return QP_ENOMEM;
        *cap = n;
    }
    float *buf = *bufp;
    size_t rb = kn_row_bytes(t->type, t->ne0);
    // The best ISA's row dequantization: kn_dequantize_row's bits (kn_ops.h), faster where it has SIMD.
    void (*deq)(enum kn_type, const void *, float *, int64_t) = kn_ops_best()->dequant_row;
#pragma omp parallel for schedule(static) if (t->ne0 * t->ne1 >= (1 << 16))
    for (int64_t r = 0; r < t->ne1; r++)
        deq(t->type, (const uint8_t *)t->data + (size_t)r * rb, buf + r * t->ne0, t->ne0);
    *rows = buf;
    return 0;
}

static int hx_is_kquant(enum kn_type type) {
    return type == KN_Q2_K || type == KN_Q3_K || type == KN_Q4_K || type == KN_Q5_K || type == KN_Q6_K;
}

// Rows are independent and go over OpenMP threads (the row quantizers keep no state).
int hx_pack_rows(enum kn_type type, const float *x, int64_t rows, int64_t cols, const float *imatrix, void *out) {
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

int hx_quant_model_pack(struct hx_quant_model *q, enum kn_type type, const float *x, int64_t rows, int64_t cols,
                        const float *imatrix, const char *name, struct kn_tensor *dst, char *err) {
    size_t rb = kn_row_bytes(type, cols);
    uint8_t *buf = qp_alloc_array((size_t)rows, rb);
    if (qp_owned_add(&q->owned, buf)) return qp_fail(err, QP_ENOMEM, "out of memory quantizing %s", name);
    int rc = hx_pack_rows(type, x, rows, cols, imatrix, buf);
    if (rc) return qp_fail(err, rc, "cannot quantize %s as %s", name, kn_type_info(type)->name);
    *dst = (struct kn_tensor){type, cols, rows, buf};
    q->bytes += (uint64_t)rb * (uint64_t)rows;
    return 0;
}

// A llama.cpp type (mix resolved, fallback applied), with the importance matrix from mean_sq.
static int hx_quant_model_ggml(struct hx_quant_model *q, const struct qz_base *b, const char *name, const float *x,
                               int64_t rows, int64_t cols, const double *mean_sq, struct kn_tensor *dst, char *err) {
    enum kn_type type = hx_ggml_type_for(b, name, &q->w, cols);
    float *imx = NULL;
    if (mean_sq && type != KN_F16 && type != KN_BF16) {
        imx = qp_alloc_array((size_t)cols, sizeof(float));
        if (!imx) return qp_fail(err, QP_ENOMEM, "out of memory");
        for (int64_t j = 0; j < cols; j++) imx[j] = (float)mean_sq[j];
    }
    int rc = hx_quant_model_pack(q, type, x, rows, cols, imx, name, dst, err);
    qp_free(imx);
    return rc;
}

int hx_quant_model_wants_grids(const struct hx_quant_model *q) { return !q->act_q8 && !q->act_int8; }

int hx_quant_model_keep_f32(struct hx_quant_model *q, float *v, const struct qz_grid *grids, int64_t group_cols,
                            int tensor_grid, int64_t rows, int64_t cols, struct kn_tensor *dst) {
    if (hx_quant_model_wants_grids(q) && grids) {
        struct kn_block_q8_0 *blk = qp_alloc_array((size_t)(rows * cols / 32 + 1), sizeof *blk);
        if (blk && !qz_grid_q8_0_exact(v, rows, cols, grids, group_cols, tensor_grid, blk)) {
            qp_free(v);
            if (qp_owned_add(&q->owned, blk)) return QP_ENOMEM; // (it frees blk)
            *dst = (struct kn_tensor){KN_Q8_0, cols, rows, blk};
            return 0;
        }
        qp_free(blk); // not exact (or no memory for the copy): v as it is
    }
    if (qp_owned_add(&q->owned, v)) return QP_ENOMEM; // (it frees v)
    *dst = (struct kn_tensor){KN_F32, cols, rows, v};
    return 0;
}

// Fake quantization (rtn, nf4, fp4) or per-channel W8 (smoothquant, w8a8), kept as
// hx_quant_model_keep_f32 says.
static int hx_quant_model_fake(struct hx_quant_model *q, const struct qz_base *b, const char *name, const float *x,
                               int64_t rows, int64_t cols, struct kn_tensor *dst, char *err) {
    float *out = qp_alloc_array((size_t)(rows * cols), sizeof(float));
    int rtn = b->method == QZ_RTN && hx_quant_model_wants_grids(q), w8 = b->method == QZ_SMOOTHQUANT;
    struct qz_grid *grids = rtn ? qp_alloc_array((size_t)qz_rtn_n_grids(b, rows, cols), sizeof *grids) : NULL;
    if (!out || (rtn && !grids)) {
        qp_free(out);
        qp_free(grids);
        return qp_fail(err, QP_ENOMEM, "out of memory quantizing %s", name);
    }
    struct qz_stats st;
    memset(&st, 0, sizeof st);
    int rc = w8 ? qz_w8_channel(x, out, rows, cols, &st) : qz_fake_quant_grids(b, x, out, rows, cols, &st, grids);
    if (!rc && hx_quant_model_keep_f32(q, out, grids, qz_rtn_group_cols(b, cols), b->gran == QZ_TENSOR, rows, cols,
                                       dst))
        rc = QP_ENOMEM, out = NULL;
    qp_free(grids);
    if (rc) {
        if (rc != QP_ENOMEM) qp_free(out);
        return qp_fail(err, rc, rc == QP_ENOMEM ? "out of memory quantizing %s" : "cannot quantize %s", name);
    }
    q->bytes += w8 ? (uint64_t)((qz_tensor_bits(b, rows, cols) + 7) / 8) : (uint64_t)st.bytes;
    return 0;
}

int hx_quant_model_tensor(struct hx_quant_model *q, const struct qz_base *b, const char *name, const float *x,
                          float **scr, int64_t rows, int64_t cols, const double *mean_sq, struct kn_tensor *dst,
                          char *err) {
    switch (b->method) {
    case QZ_F32:
        if (*scr) { // the result is the caller's copy: it now lives with the model
            if (qp_owned_add(&q->owned, *scr)) {
                *scr = NULL;
                return qp_fail(err, QP_ENOMEM, "out of memory quantizing %s", name);
            }
            *scr = NULL;
        }
        *dst = (struct kn_tensor){KN_F32, cols, rows, x};
        q->bytes += (uint64_t)(rows * cols) * 4;
        return 0;
    case QZ_F16:
    case QZ_BF16:
        return hx_quant_model_pack(q, b->method == QZ_F16 ? KN_F16 : KN_BF16, x, rows, cols, NULL, name, dst, err);
    case QZ_RTN:
    case QZ_NF4:
    case QZ_FP4:
    case QZ_SMOOTHQUANT: return hx_quant_model_fake(q, b, name, x, rows, cols, dst, err);
    case QZ_GGML:
    case QZ_GGML_MIX: return hx_quant_model_ggml(q, b, name, x, rows, cols, mean_sq, dst, err);
    default: {
        char spec[256];
        qz_base_print(b, spec, sizeof spec);
        return qp_fail(err, QP_ENOTSUP, "'%s' cannot quantize %s without calibration data", spec, name);
    }
    }
}

// ---------------------------------------------------------------------------------------------
// What a variant means for one tensor

// The methods hx_calib.c's driver handles (w8a8 included: it runs there when the variant needs
// calibration for another reason, e.g. act=tensor or ;imatrix in a rule).
static int hx_is_calibrated(enum qz_method m) { return m == QZ_GPTQ || m == QZ_AWQ || m == QZ_SMOOTHQUANT; }

// Whether b needs activation statistics: everything calibrated but w8a8 with per-token scales.
static int hx_needs_stats(const struct qz_base *b) {
    if (b->method == QZ_SMOOTHQUANT) return b->smooth || b->a8 == QZ_A8_TENSOR;
    return hx_is_calibrated(b->method);
}

int hx_variant_needs_calib(const struct qz_variant *v) {
    int any = hx_needs_stats(&v->base) || v->imatrix || v->base.method == QZ_QAT; // QAT: hx_qat.h
    for (int i = 0; i < v->n_rules; i++) any |= hx_needs_stats(&v->rules[i].base);
    return any;
}

int hx_variant_act_int8(const struct qz_variant *v) {
    if (v->base.method != QZ_SMOOTHQUANT) return KN_ACT_INT8_OFF;
    return v->base.a8 == QZ_A8_TENSOR ? KN_ACT_INT8_TENSOR : KN_ACT_INT8_TOKEN;
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

enum kn_type hx_ggml_type_for(const struct qz_base *b, const char *name, const struct kn_weights *w, int64_t cols) {
    char buf[64];
    int type = b->method == QZ_GGML ? b->ggml_type
                                    : qz_mix_type(b->mix, hx_mix_name(w, name, buf, sizeof buf), w->cfg.n_layers,
                                                  !w->embd_only);
    return (enum kn_type)qz_fallback_type(type, cols);
}

void hx_tensor_base(const struct qz_variant *v, const char *name, const struct kn_weights *w, int64_t cols,
                    struct qz_base *out) {
    *out = *qz_variant_for_tensor(v, name, qz_tensor_class_of(name));
    if (out->method != QZ_GGML && out->method != QZ_GGML_MIX) return;
    enum kn_type type = hx_ggml_type_for(out, name, w, cols);
    if (type == KN_F16 || type == KN_BF16 || type == KN_F32) {
        qz_base_parse(type == KN_F32 ? "f32" : type == KN_F16 ? "f16" : "bf16", out, NULL);
        return;
    }
    out->method = QZ_GGML;
    out->ggml_type = type;
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
