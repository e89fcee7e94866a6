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

const char *kn_arch_name(enum kn_arch a) {
    static const char *names[KN_ARCH_COUNT] = {"llama", "qwen2", "phi3", "gemma2"};
    return (unsigned)a < KN_ARCH_COUNT ? names[a] : "?";
}

void kn_config_set_family(struct kn_config *c) {
    int gemma = c->arch == KN_ARCH_GEMMA2;
    c->rope_neox = c->arch != KN_ARCH_LLAMA;
    c->has_qkv_bias = c->arch == KN_ARCH_QWEN2;
    c->fused_qkv = c->fused_gate_up = c->arch == KN_ARCH_PHI3;
    c->post_norms = gemma;
    c->act = gemma ? KN_ACT_GELU_TANH : KN_ACT_SILU;
    c->embd_scale = gemma ? sqrtf((float)c->dim) : 0.0f;
    c->swa_every = gemma ? 2 : 0;
}

// A float field that must be finite and >= 0 (0 meaning "off" or "default").
static int kn_check_opt(float v, const char *what, char *err) {
    if (!(isfinite(v) && v >= 0.0f && v < 1e30f))
        return qp_fail(err, QP_ERANGE, "%s %g out of range", what, (double)v);
    return 0;
}

// The fields of the block variants.
static int kn_config_check_family(const struct kn_config *c, char *err) {
    int rc;
    if ((unsigned)c->arch >= KN_ARCH_COUNT) return qp_fail(err, QP_ERANGE, "unknown architecture %d", (int)c->arch);
    if (c->act != KN_ACT_SILU && c->act != KN_ACT_GELU_TANH)
        return qp_fail(err, QP_ERANGE, "unknown activation %d", (int)c->act);
    if ((rc = kn_check_opt(c->rope_freq_scale, "rope frequency scale", err)) ||
        (rc = kn_check_opt(c->rope_attn_factor, "rope attention factor", err)) ||
        (rc = kn_check_opt(c->embd_scale, "embedding scale", err)) ||
        (rc = kn_check_opt(c->attn_scale, "attention scale", err)) ||
        (rc = kn_check_opt(c->attn_softcap, "attention soft-cap", err)) ||
        (rc = kn_check_opt(c->final_softcap, "final soft-cap", err)))
        return rc;
    if (c->swa_window < 0 || c->swa_every < 0 || c->rope_ctx_orig < 0)
        return qp_fail(err, QP_ERANGE, "sliding window %d / %d or rope context %d out of range", c->swa_window,
                       c->swa_every, c->rope_ctx_orig);
    if (c->fused_gate_up && c->hidden_dim > KN_MAX_HIDDEN / 2)
        return qp_fail(err, QP_ERANGE, "hidden_dim %d too large for a fused gate/up", c->hidden_dim);
    return 0;
}

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
    if (c->n_kv_heads <= 0 || c->n_kv_heads > c->n_heads || c->n_heads % c->n_kv_heads != 0)
        return qp_fail(err, QP_ERANGE, "n_kv_heads %d does not divide n_heads %d", c->n_kv_heads,
                       c->n_heads);
    if (c->head_size <= 0 || c->head_size > KN_MAX_DIM || (int64_t)c->head_size * c->n_heads > KN_MAX_DIM)
        return qp_fail(err, QP_ERANGE, "head size %d out of range (n_heads * head size at most %d)",
                       c->head_size, KN_MAX_DIM);
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
    return kn_config_check_family(c, err);
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
    int64_t kv_dim = kn_kv_dim(c), q_dim = kn_q_dim(c);
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
        KN_CHECK(wq, "attn_q", c->dim, q_dim)
        KN_CHECK(wk, "attn_k", c->dim, kv_dim)
        KN_CHECK(wv, "attn_v", c->dim, kv_dim)
        KN_CHECK(wo, "attn_output", q_dim, c->dim)
        KN_CHECK(ffn_norm, "ffn_norm", c->dim, 1)
        KN_CHECK(w_gate, "ffn_gate", c->dim, c->hidden_dim)
        KN_CHECK(w_down, "ffn_down", c->hidden_dim, c->dim)
        KN_CHECK(w_up, "ffn_up", c->dim, c->hidden_dim)
        if (c->has_qkv_bias) {
            KN_CHECK(bq, "attn_q.bias", q_dim, 1)
            KN_CHECK(bk, "attn_k.bias", kv_dim, 1)
            KN_CHECK(bv, "attn_v.bias", kv_dim, 1)
        }
        if (c->post_norms) {
            KN_CHECK(attn_post_norm, "post_attention_norm", c->dim, 1)
            KN_CHECK(ffn_post_norm, "post_ffw_norm", c->dim, 1)
        }
#undef KN_CHECK
    }
    const struct kn_tensor *rope[] = {&w->rope_freqs, &w->rope_short, &w->rope_long};
    static const char *rope_names[] = {"rope_freqs", "rope_factors_short", "rope_factors_long"};
    for (int i = 0; i < 3; i++)
        if (rope[i]->data) {
            if ((rc = kn_check_tensor(rope[i], rope_names[i], c->head_size / 2, 1, err))) return rc;
            if (rope[i]->type != KN_F32)
                return qp_fail(err, QP_ENOTSUP, "tensor %s must be f32", rope_names[i]);
        }
    if (!w->rope_short.data != !w->rope_long.data)
        return qp_fail(err, QP_EFORMAT, "rope_factors_short and rope_factors_long come as a pair");
    return 0;
}
