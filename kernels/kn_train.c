// kn_train.c — the training forward/backward (kn_train.h): the parameter layout, conversion from
// and to the engine's weights, the body in fp32 and fp64 (kn_train_impl.h, included twice), the
// gradient norm and AdamW.
//
// Depends on kernels/ (kn_model.h, kn_blocks.h, kn_engine.h for the RoPE tables, qp.h), OpenBLAS's cblas and OpenMP.
#include "kn_train.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>

#include "kn_blocks.h"
#include "kn_engine.h"
#include "kn_types.h"
#include "qp.h"

// ---------------------------------------------------------------------------------------------
// Layout

static const char *const kn_tp_names[KN_TP_COUNT] = {
    "token_embd", "attn_norm", "attn_q",      "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_down",
    "ffn_up",     "output_norm", "output",    "attn_q", "attn_k", "attn_v",      "post_attention_norm", "post_ffw_norm"};

static int kn_tp_is_bias(int kind) { return kind == KN_TP_BQ || kind == KN_TP_BK || kind == KN_TP_BV; }

int kn_train_index(const struct kn_train_layout *L, int kind, int layer) {
    int nl = L->cfg.n_layers, pl = L->per_layer;
    switch (kind) {
    case KN_TP_EMBED: return 0;
    case KN_TP_OUT_NORM: return 1 + pl * nl;
    case KN_TP_OUTPUT: return L->tied ? -1 : 2 + pl * nl;
    default:
        QP_ASSERT(kind > KN_TP_EMBED && kind < KN_TP_COUNT && L->slot[kind] >= 0 && layer >= 0 && layer < nl);
        return 1 + pl * layer + L->slot[kind];
    }
}

// Every block variant field of kn_config has its forward and backward in kn_train_impl.h: RoPE
// pairs, scaling and factors, biases, post-norms, GELU, scaled embeddings and queries, soft-caps,
// sliding windows, head sizes apart from dim / heads (fused tensors are the loaders' views). A
// field added for a new family changes the struct's size and stops this build: train it in
// kn_train_impl.h (with its gradient check and engine comparison in tests/test_qat.c), or refuse
// it by name in kn_train_layout_init, before it is silently trained as something it is not.
_Static_assert(sizeof(struct kn_config) == 104,
               "kn_config has a new block variant field: implement it in kn_train_impl.h or refuse it");

// The block tensors of cfg's family, in their order within a block; returns how many.
static int kn_train_block_kinds(const struct kn_config *c, int kinds[KN_TP_COUNT]) {
    int n = 0;
    for (int k = KN_TP_ATTN_NORM; k <= KN_TP_UP; k++) kinds[n++] = k;
    if (c->has_qkv_bias) kinds[n++] = KN_TP_BQ, kinds[n++] = KN_TP_BK, kinds[n++] = KN_TP_BV;
    if (c->post_norms) kinds[n++] = KN_TP_ATTN_POST, kinds[n++] = KN_TP_FFN_POST;
    return n;
}

int kn_train_layout_init(struct kn_train_layout *L, const struct kn_config *cfg, int tied, char *err) {
    memset(L, 0, sizeof *L);
    int rc = kn_config_check(cfg, err);
    if (rc) return rc;
    L->cfg = *cfg;
    L->tied = tied ? 1 : 0;
    int nl = cfg->n_layers, kinds[KN_TP_COUNT];
    L->per_layer = kn_train_block_kinds(cfg, kinds);
    for (int k = 0; k < KN_TP_COUNT; k++) L->slot[k] = -1;
    for (int j = 0; j < L->per_layer; j++) L->slot[kinds[j]] = j;
    L->n_tensors = 2 + L->per_layer * nl + (L->tied ? 0 : 1);
    L->t = qp_calloc_array((size_t)L->n_tensors, sizeof *L->t);
    if (!L->t) return qp_fail(err, QP_ENOMEM, "out of memory");
    int64_t D = cfg->dim, H = cfg->hidden_dim, KV = kn_kv_dim(cfg), QD = kn_q_dim(cfg), V = cfg->vocab_size;
    const int64_t shape[KN_TP_COUNT][2] = {{V, D}, {1, D},  {QD, D}, {KV, D}, {KV, D}, {D, QD},
                                           {1, D}, {H, D},  {D, H},  {H, D},  {1, D},  {V, D},
                                           {1, QD}, {1, KV}, {1, KV}, {1, D},  {1, D}};
    size_t off = 0;
    for (int i = 0; i < L->n_tensors; i++) {
        struct kn_tparam *p = &L->t[i];
        if (i == 0) p->kind = KN_TP_EMBED, p->layer = -1;
        else if (i <= L->per_layer * nl) p->kind = kinds[(i - 1) % L->per_layer], p->layer = (i - 1) / L->per_layer;
        else p->kind = i == 1 + L->per_layer * nl ? KN_TP_OUT_NORM : KN_TP_OUTPUT, p->layer = -1;
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
    qp_free(L->rope_freqs), qp_free(L->rope_short), qp_free(L->rope_long);
    memset(L, 0, sizeof *L);
}

int kn_train_layout_rope(struct kn_train_layout *L, const float *freqs, const float *fshort, const float *flong,
                         char *err) {
    if (!fshort != !flong) return qp_fail(err, QP_EINVAL, "rope_factors_short and rope_factors_long come as a pair");
    const float *src[3] = {freqs, fshort, flong};
    float **dst[3] = {&L->rope_freqs, &L->rope_short, &L->rope_long};
    size_t half = (size_t)L->cfg.head_size / 2;
    for (int i = 0; i < 3; i++) {
        qp_free(*dst[i]);
        *dst[i] = NULL;
        if (!src[i]) continue;
        if (!(*dst[i] = qp_alloc_array(half, sizeof(float)))) return qp_fail(err, QP_ENOMEM, "out of memory");
        memcpy(*dst[i], src[i], half * sizeof(float));
    }
    return 0;
}

void kn_train_tensor_name(const struct kn_train_layout *L, int i, char *buf, size_t cap) {
    const struct kn_tparam *p = &L->t[i];
    const char *suffix = kn_tp_is_bias(p->kind) ? "bias" : "weight";
    if (p->layer >= 0) snprintf(buf, cap, "blk.%d.%s.%s", p->layer, kn_tp_names[p->kind], suffix);
    else snprintf(buf, cap, "%s.weight", kn_tp_names[p->kind]);
}

// The tensor of kind in layer lw (block kinds only).
static struct kn_tensor *kn_train_block_tensor(struct kn_layer_weights *lw, int kind) {
    struct kn_tensor *by_kind[KN_TP_COUNT] = {
        [KN_TP_ATTN_NORM] = &lw->attn_norm, [KN_TP_WQ] = &lw->wq,        [KN_TP_WK] = &lw->wk,
        [KN_TP_WV] = &lw->wv,               [KN_TP_WO] = &lw->wo,        [KN_TP_FFN_NORM] = &lw->ffn_norm,
        [KN_TP_GATE] = &lw->w_gate,         [KN_TP_DOWN] = &lw->w_down,  [KN_TP_UP] = &lw->w_up,
        [KN_TP_BQ] = &lw->bq,               [KN_TP_BK] = &lw->bk,        [KN_TP_BV] = &lw->bv,
        [KN_TP_ATTN_POST] = &lw->attn_post_norm, [KN_TP_FFN_POST] = &lw->ffn_post_norm};
    QP_ASSERT(by_kind[kind] != NULL);
    return by_kind[kind];
}

struct kn_tensor *kn_train_slot(const struct kn_train_layout *L, int i, struct kn_weights *w) {
    const struct kn_tparam *p = &L->t[i];
    if (p->layer < 0)
        return p->kind == KN_TP_EMBED ? &w->tok_embd : p->kind == KN_TP_OUT_NORM ? &w->out_norm : &w->output;
    return kn_train_block_tensor(&w->layers[p->layer], p->kind);
}

int kn_train_params_from(const struct kn_train_layout *L, const struct kn_weights *w, float *params,
                         char *err) {
    if (memcmp(&L->cfg, &w->cfg, sizeof L->cfg) != 0)
        return qp_fail(err, QP_ERANGE, "the training layout does not match the model's hyperparameters");
    char name[64];
    for (int i = 0; i < L->n_tensors; i++) {
        const struct kn_tparam *p = &L->t[i];
        const struct kn_tensor *s = kn_train_slot(L, i, (struct kn_weights *)w); // (read only)
        kn_train_tensor_name(L, i, name, sizeof name);
        if (s->ne0 != p->cols || s->ne1 != p->rows)
            return qp_fail(err, QP_ERANGE, "tensor %s has shape %lld x %lld, expected %lld x %lld", name,
                           (long long)s->ne1, (long long)s->ne0, (long long)p->rows, (long long)p->cols);
        if (!s->data) return qp_fail(err, QP_ERANGE, "tensor %s is missing", name);
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
    memset(layers, 0, (size_t)L->cfg.n_layers * sizeof *layers);
    w->cfg = L->cfg;
    w->layers = layers;
    for (int i = 0; i < L->n_tensors; i++) {
        const struct kn_tparam *p = &L->t[i];
        *kn_train_slot(L, i, w) = (struct kn_tensor){.type = KN_F32, .ne0 = p->cols, .ne1 = p->rows, .data = params + p->off};
    }
    if (L->tied) {
        w->output = w->tok_embd;
        w->tied = 1;
    }
    int64_t half = L->cfg.head_size / 2;
    const float *f[3] = {L->rope_freqs, L->rope_short, L->rope_long};
    struct kn_tensor *rt[3] = {&w->rope_freqs, &w->rope_short, &w->rope_long};
    for (int k = 0; k < 3; k++)
        if (f[k]) *rt[k] = (struct kn_tensor){.type = KN_F32, .ne0 = half, .ne1 = 1, .data = f[k]};
}

// ---------------------------------------------------------------------------------------------
// The body, in fp32 and in fp64

#define KT_R float
#define KT_S kn_train
#define KT_PUB(x) kn_train_##x
#define KT_ST(x) kt32_##x
#define KT_GEMM cblas_sgemm
#define KT_EXP expf
#define KT_TANH tanhf
#define KT_F32 1
#include "kn_train_impl.h"

#define KT_R double
#define KT_S kn_train64
#define KT_PUB(x) kn_train64_##x
#define KT_ST(x) kt64_##x
#define KT_GEMM cblas_dgemm
#define KT_EXP exp
#define KT_TANH tanh
#define KT_F32 0
#include "kn_train_impl.h"

int kn_train_set_wsrc(struct kn_train *t, const struct kn_train_wsrc *ws, char *err) {
    const struct kn_train_layout *L = t->L;
    qp_free(t->derived), qp_free(t->wbuf);
    t->derived = NULL, t->wbuf = NULL;
    t->ws = *ws;
    size_t most = 0;
    unsigned char *d = qp_calloc_array((size_t)L->n_tensors, 1);
    if (!d) return qp_fail(err, QP_ENOMEM, "out of memory");
    for (int i = 0; i < L->n_tensors; i++) {
        d[i] = L->t[i].rows > 1 && ws->derived(ws->ctx, i);
        if (d[i]) most = QP_MAX(most, (size_t)(L->t[i].rows * L->t[i].cols));
    }
    if (most && !(t->wbuf = qp_alloc_array(most, sizeof(float)))) {
        qp_free(d);
        return qp_fail(err, QP_ENOMEM, "out of memory for effective weights (%zu values)", most);
    }
    t->derived = d;
    return 0;
}

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
