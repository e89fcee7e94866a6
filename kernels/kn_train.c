// kn_train.c — the training forward/backward (kn_train.h): the parameter layout, conversion from
// and to the engine's weights, the body in fp32 and fp64 (kn_train_impl.h, included twice), the
// gradient norm and AdamW.
//
// Depends on kernels/ (kn_model.h, kn_blocks.h, qp.h), OpenBLAS's cblas and OpenMP.
#include "kn_train.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>

#include "kn_blocks.h"
#include "kn_types.h"
#include "qp.h"

// ---------------------------------------------------------------------------------------------
// Layout

static const char *const kn_tp_names[KN_TP_COUNT] = {
    "token_embd", "attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
    "ffn_norm", "ffn_gate", "ffn_down", "ffn_up", "output_norm", "output"};

#define KN_TP_PER_LAYER 9 // attn_norm .. ffn_up

int kn_train_index(const struct kn_train_layout *L, int kind, int layer) {
    int nl = L->cfg.n_layers;
    switch (kind) {
    case KN_TP_EMBED: return 0;
    case KN_TP_OUT_NORM: return 1 + KN_TP_PER_LAYER * nl;
    case KN_TP_OUTPUT: return L->tied ? -1 : 2 + KN_TP_PER_LAYER * nl;
    default:
        QP_ASSERT(kind > KN_TP_EMBED && kind < KN_TP_OUT_NORM && layer >= 0 && layer < nl);
        return 1 + KN_TP_PER_LAYER * layer + (kind - KN_TP_ATTN_NORM);
    }
}

int kn_train_block_check(const struct kn_config *c, int rope_factors, char *err) {
    // Each block variant field of kn_config (kn_config_set_family and the loaders set them) with
    // what it adds; the training forward implements none of them.
    const struct {
        int set;
        const char *what;
    } f[] = {
        {c->rope_neox, "rotate-half RoPE"},
        {c->has_qkv_bias, "q/k/v biases"},
        {c->fused_qkv || c->fused_gate_up, "fused qkv and gate/up tensors"},
        {c->post_norms, "post-norms"},
        {c->act != KN_ACT_SILU, "GELU gating"},
        {c->embd_scale > 0, "a scaled embedding"},
        {c->attn_scale > 0, "a query scale"},
        {c->attn_softcap > 0 || c->final_softcap > 0, "soft-capping"},
        {c->swa_window > 0, "a sliding window"},
        {(c->rope_freq_scale > 0 && c->rope_freq_scale != 1.0f) ||
             (c->rope_attn_factor > 0 && c->rope_attn_factor != 1.0f) || rope_factors,
         "RoPE scaling"},
        {c->head_size * c->n_heads != c->dim, "a head size apart from dim / heads"},
    };
    for (size_t i = 0; i < QP_ARRAY_LEN(f); i++)
        if (f[i].set)
            return qp_fail(err, QP_ENOTSUP,
                           "qat: training implements the Llama 2 block only; this %s model has %s",
                           kn_arch_name(c->arch), f[i].what);
    return 0;
}

int kn_train_layout_init(struct kn_train_layout *L, const struct kn_config *cfg, int tied, char *err) {
    memset(L, 0, sizeof *L);
    int rc = kn_config_check(cfg, err);
    if (!rc) rc = kn_train_block_check(cfg, 0, err);
    if (rc) return rc;
    L->cfg = *cfg;
    L->tied = tied ? 1 : 0;
    int nl = cfg->n_layers;
    L->n_tensors = 2 + KN_TP_PER_LAYER * nl + (L->tied ? 0 : 1);
    L->t = qp_calloc_array((size_t)L->n_tensors, sizeof *L->t);
    if (!L->t) return qp_fail(err, QP_ENOMEM, "out of memory");
    int64_t D = cfg->dim, H = cfg->hidden_dim, KV = (int64_t)cfg->n_kv_heads * cfg->head_size;
    int64_t V = cfg->vocab_size;
    const int64_t shape[KN_TP_COUNT][2] = {{V, D}, {1, D}, {D, D}, {KV, D}, {KV, D}, {D, D},
                                           {1, D}, {H, D}, {D, H}, {H, D}, {1, D}, {V, D}};
    size_t off = 0;
    for (int i = 0; i < L->n_tensors; i++) {
        struct kn_tparam *p = &L->t[i];
        if (i == 0) p->kind = KN_TP_EMBED, p->layer = -1;
        else if (i <= KN_TP_PER_LAYER * nl)
            p->kind = KN_TP_ATTN_NORM + (i - 1) % KN_TP_PER_LAYER, p->layer = (i - 1) / KN_TP_PER_LAYER;
        else p->kind = i == 1 + KN_TP_PER_LAYER * nl ? KN_TP_OUT_NORM : KN_TP_OUTPUT, p->layer = -1;
        p->rows = shape[p->kind][0];
        p->cols = shape[p->kind][1];
        p->off = off;
        off += ((size_t)(p->rows * p->cols) + 15) / 16 * 16; // each tensor 64-byte aligned
    }
    L->n_floats = off;
    return 0;
}

void kn_train_layout_deinit(struct kn_train_layout *L) {
    qp_free(L->t);
    memset(L, 0, sizeof *L);
}

void kn_train_tensor_name(const struct kn_train_layout *L, int i, char *buf, size_t cap) {
    const struct kn_tparam *p = &L->t[i];
    if (p->layer >= 0) snprintf(buf, cap, "blk.%d.%s.weight", p->layer, kn_tp_names[p->kind]);
    else snprintf(buf, cap, "%s.weight", kn_tp_names[p->kind]);
}

// The source tensor of parameter p in w.
static const struct kn_tensor *kn_train_src(const struct kn_weights *w, const struct kn_tparam *p) {
    if (p->layer < 0)
        return p->kind == KN_TP_EMBED ? &w->tok_embd : p->kind == KN_TP_OUT_NORM ? &w->out_norm : &w->output;
    const struct kn_layer_weights *lw = &w->layers[p->layer];
    const struct kn_tensor *by_kind[KN_TP_COUNT] = {
        NULL, &lw->attn_norm, &lw->wq, &lw->wk, &lw->wv, &lw->wo, &lw->ffn_norm, &lw->w_gate, &lw->w_down, &lw->w_up};
    return by_kind[p->kind];
}

int kn_train_params_from(const struct kn_train_layout *L, const struct kn_weights *w, float *params,
                         char *err) {
    if (memcmp(&L->cfg, &w->cfg, sizeof L->cfg) != 0)
        return qp_fail(err, QP_ERANGE, "the training layout does not match the model's hyperparameters");
    char name[64];
    for (int i = 0; i < L->n_tensors; i++) {
        const struct kn_tparam *p = &L->t[i];
        const struct kn_tensor *s = kn_train_src(w, p);
        kn_train_tensor_name(L, i, name, sizeof name);
        if (s->ne0 != p->cols || s->ne1 != p->rows)
            return qp_fail(err, QP_ERANGE, "tensor %s has shape %lld x %lld, expected %lld x %lld", name,
                           (long long)s->ne1, (long long)s->ne0, (long long)p->rows, (long long)p->cols);
        if (!kn_type_has_dequant(s->type)) return qp_fail(err, QP_ENOTSUP, "tensor %s has a type qprobe cannot read", name);
        size_t rb = kn_row_bytes(s->type, s->ne0);
        for (int64_t r = 0; r < p->rows; r++)
            kn_dequantize_row(s->type, (const uint8_t *)s->data + (size_t)r * rb, params + p->off + r * p->cols, p->cols);
    }
    return 0;
}

void kn_train_weights_view(const struct kn_train_layout *L, const float *params,
                           struct kn_layer_weights *layers, struct kn_weights *w) {
    memset(w, 0, sizeof *w);
    w->cfg = L->cfg;
    w->layers = layers;
    for (int i = 0; i < L->n_tensors; i++) {
        const struct kn_tparam *p = &L->t[i];
        struct kn_tensor t = {.type = KN_F32, .ne0 = p->cols, .ne1 = p->rows, .data = params + p->off};
        if (p->layer < 0) {
            if (p->kind == KN_TP_EMBED) w->tok_embd = t;
            else if (p->kind == KN_TP_OUT_NORM) w->out_norm = t;
            else w->output = t;
            continue;
        }
        struct kn_layer_weights *lw = &layers[p->layer];
        struct kn_tensor *by_kind[KN_TP_COUNT] = {NULL, &lw->attn_norm, &lw->wq, &lw->wk, &lw->wv, &lw->wo,
                                                  &lw->ffn_norm, &lw->w_gate, &lw->w_down, &lw->w_up};
        *by_kind[p->kind] = t;
    }
    if (L->tied) {
        w->output = w->tok_embd;
        w->tied = 1;
    }
}

// ---------------------------------------------------------------------------------------------
// The body, in fp32 and in fp64

#define KT_R float
#define KT_S kn_train
#define KT_PUB(x) kn_train_##x
#define KT_ST(x) kt32_##x
#define KT_GEMM cblas_sgemm
#define KT_EXP expf
#include "kn_train_impl.h"

#define KT_R double
#define KT_S kn_train64
#define KT_PUB(x) kn_train64_##x
#define KT_ST(x) kt64_##x
#define KT_GEMM cblas_dgemm
#define KT_EXP exp
#include "kn_train_impl.h"

// ---------------------------------------------------------------------------------------------
// Optimizer

double kn_train_grad_norm(const float *g, size_t n) {
    double total = 0;
    for (size_t b = 0; b < n; b += 4096) {
        double s = 0;
        size_t e = QP_MIN(n, b + 4096);
        for (size_t i = b; i < e; i++) s += (double)g[i] * g[i];
        total += s;
    }
    return sqrt(total);
}

void kn_adamw_update(const struct kn_adamw *o, float *p, const float *grad, float *m, float *v, size_t n,
                     float gscale, int decay, int n_threads) {
    int64_t t = o->step;
    QP_ASSERT(t >= 1);
    float b1 = (float)o->beta1, b2 = (float)o->beta2;
    float c1 = (float)(1.0 / (1.0 - pow(o->beta1, (double)t))), c2 = (float)(1.0 / (1.0 - pow(o->beta2, (double)t)));
    float lr = (float)o->lr, eps = (float)o->eps, wd = decay ? (float)(o->lr * o->weight_decay) : 0.0f;
#pragma omp parallel for num_threads(n_threads) schedule(static) if (n_threads > 1 && n > 65536)
    for (size_t i = 0; i < n; i++) {
        float g = grad[i] * gscale;
        m[i] = b1 * m[i] + (1.0f - b1) * g;
        v[i] = b2 * v[i] + (1.0f - b2) * (g * g);
        float upd = lr * (m[i] * c1) / (sqrtf(v[i] * c2) + eps);
        p[i] -= upd + wd * p[i];
    }
}
