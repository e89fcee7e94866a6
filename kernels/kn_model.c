// kn_model.c — consistency checks of a model's hyperparameters and tensor shapes (kn_model.h).
// libc only.
#include "kn_model.h"

#include <math.h>
#include <stdio.h>

#include "qp.h"

// Limits well beyond any real Llama, small enough that every product below fits in int64 and
// every per-window buffer in size_t.
#define KN_MAX_DIM (1 << 16)
#define KN_MAX_HIDDEN (1 << 18)
#define KN_MAX_LAYERS 1024
#define KN_MAX_HEADS 1024
#define KN_MAX_VOCAB (1 << 22)
#define KN_MAX_SEQ (1 << 20)

int kn_config_check(const struct kn_config *c, char *err) {
    if (c->dim <= 0 || c->dim > KN_MAX_DIM)
        return qp_fail(err, QP_ERANGE, "dim %d out of range (1..%d)", c->dim, KN_MAX_DIM);
    if (c->hidden_dim <= 0 || c->hidden_dim > KN_MAX_HIDDEN)
        return qp_fail(err, QP_ERANGE, "hidden_dim %d out of range (1..%d)", c->hidden_dim,
                       KN_MAX_HIDDEN);
    if (c->n_layers <= 0 || c->n_layers > KN_MAX_LAYERS)
        return qp_fail(err, QP_ERANGE, "n_layers %d out of range (1..%d)", c->n_layers,
                       KN_MAX_LAYERS);
    if (c->n_heads <= 0 || c->n_heads > KN_MAX_HEADS)
        return qp_fail(err, QP_ERANGE, "n_heads %d out of range (1..%d)", c->n_heads,
                       KN_MAX_HEADS);
    if (c->dim % c->n_heads != 0)
        return qp_fail(err, QP_ERANGE, "n_heads %d does not divide dim %d", c->n_heads, c->dim);
    if (c->n_kv_heads <= 0 || c->n_kv_heads > c->n_heads || c->n_heads % c->n_kv_heads != 0)
        return qp_fail(err, QP_ERANGE, "n_kv_heads %d does not divide n_heads %d", c->n_kv_heads,
                       c->n_heads);
    if (c->head_size != c->dim / c->n_heads)
        return qp_fail(err, QP_ERANGE, "head size %d is not dim/n_heads = %d", c->head_size,
                       c->dim / c->n_heads);
    if (c->head_size % 2 != 0)
        return qp_fail(err, QP_ERANGE, "head size %d is odd (RoPE rotates pairs)", c->head_size);
    if (c->vocab_size <= 0 || c->vocab_size > KN_MAX_VOCAB)
        return qp_fail(err, QP_ERANGE, "vocab_size %d out of range (1..%d)", c->vocab_size,
                       KN_MAX_VOCAB);
    if (c->seq_len <= 0 || c->seq_len > KN_MAX_SEQ)
        return qp_fail(err, QP_ERANGE, "seq_len %d out of range (1..%d)", c->seq_len, KN_MAX_SEQ);
    if (!(c->norm_eps > 0.0f && c->norm_eps < 1.0f))
        return qp_fail(err, QP_ERANGE, "rms norm epsilon %g out of range", (double)c->norm_eps);
    if (!(c->rope_theta > 1.0f && isfinite(c->rope_theta)))
        return qp_fail(err, QP_ERANGE, "rope theta %g out of range", (double)c->rope_theta);
    return 0;
}

static int kn_check_tensor(const struct kn_tensor *t, const char *name, int64_t ne0, int64_t ne1,
                           char *err) {
    if (!t->data) return qp_fail(err, QP_ENOENT, "tensor %s is missing", name);
    if (t->ne0 != ne0 || t->ne1 != ne1)
        return qp_fail(err, QP_EFORMAT, "tensor %s has shape (%lld, %lld), expected (%lld, %lld)",
                       name, (long long)t->ne1, (long long)t->ne0, (long long)ne1,
                       (long long)ne0);
    if (!kn_type_info(t->type))
        return qp_fail(err, QP_ENOTSUP, "tensor %s has unknown type %d", name, t->type);
    if (kn_row_bytes(t->type, ne0) == 0)
        return qp_fail(err, QP_EFORMAT, "tensor %s: row of %lld does not fit type %s", name,
                       (long long)ne0, kn_type_info(t->type)->name);
    return 0;
}

int kn_weights_check(const struct kn_weights *w, char *err) {
    const struct kn_config *c = &w->cfg;
    int rc = kn_config_check(c, err);
    if (rc) return rc;
    int64_t kv_dim = (int64_t)c->n_kv_heads * c->head_size;
    if ((rc = kn_check_tensor(&w->tok_embd, "token_embd", c->dim, c->vocab_size, err))) return rc;
    if ((rc = kn_check_tensor(&w->out_norm, "output_norm", c->dim, 1, err))) return rc;
    if ((rc = kn_check_tensor(&w->output, "output", c->dim, c->vocab_size, err))) return rc;
    if (!w->layers) return qp_fail(err, QP_ENOENT, "layer tensors are missing");
    for (int l = 0; l < c->n_layers; l++) {
        const struct kn_layer_weights *L = &w->layers[l];
        char name[64];
#define KN_CHECK(field, tag, n0, n1)                                                           \
        snprintf(name, sizeof name, "blk.%d.%s", l, tag);                                      \
        if ((rc = kn_check_tensor(&L->field, name, n0, n1, err))) return rc;
        KN_CHECK(attn_norm, "attn_norm", c->dim, 1)
        KN_CHECK(wq, "attn_q", c->dim, c->dim)
        KN_CHECK(wk, "attn_k", c->dim, kv_dim)
        KN_CHECK(wv, "attn_v", c->dim, kv_dim)
        KN_CHECK(wo, "attn_output", c->dim, c->dim)
        KN_CHECK(ffn_norm, "ffn_norm", c->dim, 1)
        KN_CHECK(w_gate, "ffn_gate", c->dim, c->hidden_dim)
        KN_CHECK(w_down, "ffn_down", c->hidden_dim, c->dim)
        KN_CHECK(w_up, "ffn_up", c->dim, c->hidden_dim)
#undef KN_CHECK
    }
    return 0;
}
