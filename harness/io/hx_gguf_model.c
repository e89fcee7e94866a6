// gguf_model.c — Llama models as GGUF files: loading one into kn_weights (tensors stay in the
// reader's mapping, any ggml type) and writing kn_weights back out as F32 or F16 GGUF with the
// key set, key order and tensor order of llama.cpp's llama2.c converter, so that llama.cpp
// loads it and tools that compare files see the familiar layout.
//
// No weight is permuted: llama2.c checkpoints and GGUF "llama" files store Q and K rows in the
// same (interleaved-RoPE) order; stories260K.bin and llama.cpp's conversion of it are
// byte-identical tensor for tensor.
//
// The streaming writer (hx_gguf_stream_*) lays out the same GGUF v3 file as gguf.c's writer but
// takes the tensor bytes piece by piece after the header, so that a multi-gigabyte model never
// sits in memory (qprobe synth).
//
// Depends on kernels/ (qp.h, kn_types.h, kn_model.h), harness/io/hx_gguf.h, harness/io/hx_tokenizer.h and
// harness/io/hx_model_load.h; not on the engine, the store or any report code.
#include "hx_gguf_model.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hx_gguf.h"
#include "hx_model.h"
#include "hx_model_load.h"
#include "qp.h"
#include "hx_tokenizer.h"

#define HX_ROPE_THETA_DEFAULT 10000.0
#define HX_NORM_EPS_DEFAULT 1e-5

// ---------------------------------------------------------------------------------------------
// Loading

// An integer hyperparameter in 1..INT_MAX. def < 0: the key is required.
static int get_dim(const struct hx_gguf *g, const char *key, int def, int *out, char *err) {
    const char *path = hx_gguf_path(g);
    int64_t v;
    int rc = hx_gguf_get_int(g, key, &v);
    if (rc == QP_ENOENT) {
        if (def < 0)
            return qp_fail(err, QP_ENOENT, "cannot read '%s': missing key '%s'", path, key);
        *out = def;
        return 0;
    }
    if (rc)
        return qp_fail(err, QP_EFORMAT, "cannot read '%s': key '%s' is not an integer", path,
                       key);
    if (v < 1 || v > INT_MAX) {
        return qp_fail(err, QP_ERANGE, "cannot read '%s': %s = %lld is out of range", path, key,
                       (long long)v);
    }
    *out = (int)v;
    return 0;
}

static int get_real(const struct hx_gguf *g, const char *key, double def, float *out, char *err) {
    double v;
    int rc = hx_gguf_get_float(g, key, &v);
    if (rc == QP_ENOENT) v = def;
    else if (rc)
        return qp_fail(err, QP_EFORMAT, "cannot read '%s': key '%s' is not a float",
                       hx_gguf_path(g), key);
    *out = (float)v;
    return 0;
}

// The family of a GGUF file by general.architecture, KN_ARCH_COUNT when unknown or absent.
static enum kn_arch kn_arch_of(const struct hx_gguf *g) {
    const char *arch;
    size_t len;
    if (hx_gguf_get_str(g, "general.architecture", &arch, &len)) return KN_ARCH_COUNT;
    for (int a = 0; a < KN_ARCH_COUNT; a++) {
        const char *n = kn_arch_name((enum kn_arch)a);
        if (len == strlen(n) && memcmp(arch, n, len) == 0) return (enum kn_arch)a;
    }
    return KN_ARCH_COUNT;
}

// Fills t from the tensor called name, which must have at most 2 dimensions.
static int get_tensor(const struct hx_gguf *g, const char *name, struct kn_tensor *t, char *err) {
    const struct hx_gguf_tensor *gt = hx_gguf_find_tensor(g, name);
    if (!gt) return qp_fail(err, QP_ENOENT, "cannot read '%s': tensor '%s' is missing",
                            hx_gguf_path(g), name);
    if (gt->ne[2] != 1 || gt->ne[3] != 1) {
        return qp_fail(err, QP_EFORMAT,
                       "cannot read '%s': tensor '%s' has %d dimensions, expected 2",
                       hx_gguf_path(g), name, gt->n_dims);
    }
    t->type = gt->type;
    t->ne0 = gt->ne[0];
    t->ne1 = gt->ne[1];
    t->data = gt->data;
    return 0;
}

// ---------------------------------------------------------------------------------------------
// The families' keys

// "ARCH.suffix" into buf.
static const char *akey(char *buf, size_t cap, enum kn_arch a, const char *suffix) {
    snprintf(buf, cap, "%s.%s", kn_arch_name(a), suffix);
    return buf;
}

// A float key that must be finite and >= 0 when present (def when absent).
static int get_real_pos(const struct hx_gguf *g, const char *key, double def, float *out, char *err) {
    int rc = get_real(g, key, def, out, err);
    if (!rc && !(isfinite(*out) && *out >= 0.0f))
        return qp_fail(err, QP_ERANGE, "cannot read '%s': %s = %g is out of range", hx_gguf_path(g), key,
                       (double)*out);
    return rc;
}

// An integer key that may be 0 (def when absent).
static int get_count(const struct hx_gguf *g, const char *key, int def, int *out, char *err) {
    int64_t v;
    int rc = hx_gguf_get_int(g, key, &v);
    if (rc == QP_ENOENT) {
        *out = def;
        return 0;
    }
    if (rc || v < 0 || v > INT_MAX)
        return qp_fail(err, rc ? QP_EFORMAT : QP_ERANGE, "cannot read '%s': key '%s' is not a count", hx_gguf_path(g),
                       key);
    *out = (int)v;
    return 0;
}

// Gemma 2's query scale as llama.cpp picks it by the model size (layer count): 1/sqrt(dim/heads)
// for the 46-layer 27B, 1/sqrt(head size) otherwise (query_pre_attn_scalar is not stored in GGUF).
static float gemma2_query_scale(const struct kn_config *c) {
    return 1.0f / sqrtf((float)(c->n_layers == 46 ? c->dim / c->n_heads : c->head_size));
}

// rope.scaling.*: linear scaling (a frequency scale) and Phi-3's attention factor and original
// context; any other scaling type (yarn, longrope as a type) changes the math: refused by name.
static int get_rope_scaling(const struct hx_gguf *g, struct kn_config *c, char *err) {
    char key[96];
    const char *path = hx_gguf_path(g), *type;
    size_t len;
    int rc = hx_gguf_get_str(g, akey(key, sizeof key, c->arch, "rope.scaling.type"), &type, &len);
    int linear = rc == QP_ENOENT || (rc == 0 && ((len == 6 && memcmp(type, "linear", 6) == 0) ||
                                                 (len == 4 && memcmp(type, "none", 4) == 0)));
    if (rc && rc != QP_ENOENT) return qp_fail(err, QP_EFORMAT, "cannot read '%s': key '%s' is not a string", path, key);
    if (!linear)
        return qp_fail(err, QP_ENOTSUP, "cannot read '%s': key '%s' = '%.*s' is not supported (only linear)", path, key,
                       (int)QP_MIN(len, (size_t)32), type);
    float factor;
    if ((rc = get_real_pos(g, akey(key, sizeof key, c->arch, "rope.scaling.factor"), 0.0, &factor, err))) return rc;
    c->rope_freq_scale = factor > 0 && factor != 1.0f ? 1.0f / factor : 0.0f;
    if ((rc = get_real_pos(g, akey(key, sizeof key, c->arch, "rope.scaling.attn_factor"), 0.0, &c->rope_attn_factor,
                           err)) ||
        (rc = get_count(g, akey(key, sizeof key, c->arch, "rope.scaling.original_context_length"), 0,
                        &c->rope_ctx_orig, err)))
        return rc;
    return 0;
}

// The family's block variant, from llama.cpp's defaults and keys (llama-model.cpp at the golden
// commit): RoPE type, biases, fusing, Gemma 2's scales, caps and alternating window.
static int get_family(const struct hx_gguf *g, struct kn_config *c, char *err) {
    char key[96];
    int rc = 0;
    kn_config_set_family(c);
    switch (c->arch) {
    case KN_ARCH_LLAMA: // Mistral too; a window only from qprobe's own files (llama.cpp ignores it)
        return get_count(g, akey(key, sizeof key, c->arch, "attention.sliding_window"), 0, &c->swa_window, err);
    case KN_ARCH_QWEN2: return 0;
    case KN_ARCH_PHI3:
        return get_count(g, akey(key, sizeof key, c->arch, "attention.sliding_window"), 0, &c->swa_window, err);
    case KN_ARCH_GEMMA2:
        // llama.cpp picks the query scale by the model size (layer count): 1/sqrt(dim/heads)
        // for the 46-layer 27B, 1/sqrt(head size) otherwise (query_pre_attn_scalar is not stored).
        c->attn_scale = gemma2_query_scale(c);
        if ((rc = get_count(g, akey(key, sizeof key, c->arch, "attention.sliding_window"), 4096, &c->swa_window, err)) ||
            (rc = get_real_pos(g, akey(key, sizeof key, c->arch, "attn_logit_softcapping"), 50.0, &c->attn_softcap,
                               err)) ||
            (rc = get_real_pos(g, akey(key, sizeof key, c->arch, "final_logit_softcapping"), 30.0,
                               &c->final_softcap, err)))
            return rc;
        return 0;
    default: return qp_fail(err, QP_ENOTSUP, "cannot read '%s': unknown architecture", hx_gguf_path(g));
    }
}

static int get_config(const struct hx_gguf *g, struct kn_config *c, char *err) {
    char k[12][96];
    enum kn_arch a = c->arch;
    int rc;
    if ((rc = get_dim(g, akey(k[0], 96, a, "embedding_length"), -1, &c->dim, err)) ||
        (rc = get_dim(g, akey(k[1], 96, a, "feed_forward_length"), -1, &c->hidden_dim, err)) ||
        (rc = get_dim(g, akey(k[2], 96, a, "block_count"), -1, &c->n_layers, err)) ||
        (rc = get_dim(g, akey(k[3], 96, a, "attention.head_count"), -1, &c->n_heads, err)) ||
        (rc = get_dim(g, akey(k[4], 96, a, "attention.head_count_kv"), c->n_heads, &c->n_kv_heads, err)) ||
        (rc = get_dim(g, akey(k[5], 96, a, "context_length"), -1, &c->seq_len, err)) ||
        (rc = get_real(g, akey(k[6], 96, a, "attention.layer_norm_rms_epsilon"), HX_NORM_EPS_DEFAULT, &c->norm_eps,
                       err)) ||
        (rc = get_real(g, akey(k[7], 96, a, "rope.freq_base"), HX_ROPE_THETA_DEFAULT, &c->rope_theta, err)))
        return rc;
    const char *path = hx_gguf_path(g);
    int key_len, val_len, rope_dims;
    if ((rc = get_dim(g, akey(k[8], 96, a, "attention.key_length"), c->dim / c->n_heads, &key_len, err)) ||
        (rc = get_dim(g, akey(k[9], 96, a, "attention.value_length"), key_len, &val_len, err)))
        return rc;
    if (val_len != key_len)
        return qp_fail(err, QP_ENOTSUP, "cannot read '%s': key '%s' (%d) differs from the key length %d", path, k[9],
                       val_len, key_len);
    c->head_size = key_len;
    if ((rc = get_dim(g, akey(k[10], 96, a, "rope.dimension_count"), c->head_size, &rope_dims, err))) return rc;
    if (rope_dims != c->head_size)
        return qp_fail(err, QP_ENOTSUP, "cannot read '%s': partial RoPE (%d of %d head dimensions) is not supported",
                       path, rope_dims, c->head_size);
    if ((rc = get_rope_scaling(g, c, err))) return rc;
    return get_family(g, c, err);
}

// ---------------------------------------------------------------------------------------------
// The families' tensors

// The tensors a loader took, to find the ones it did not (which would change the math).
struct taken {
    const struct hx_gguf *g;
    uint8_t *used; // (n_tensors)
};

static int take(struct taken *tk, const char *name, struct kn_tensor *t, char *err) {
    int rc = get_tensor(tk->g, name, t, err);
    if (!rc) tk->used[hx_gguf_find_tensor(tk->g, name) - hx_gguf_tensor(tk->g, 0)] = 1;
    return rc;
}

// An optional tensor: absent leaves t zeroed.
static int take_opt(struct taken *tk, const char *name, struct kn_tensor *t, char *err) {
    if (!hx_gguf_find_tensor(tk->g, name)) return 0;
    return take(tk, name, t, err);
}

// Rows [r0, r0 + rows) of t as a tensor of their own (rows are whole blocks in every type).
static struct kn_tensor row_view(const struct kn_tensor *t, int64_t r0, int64_t rows) {
    size_t rb = kn_row_bytes(t->type, t->ne0);
    return (struct kn_tensor){t->type, t->ne0, rows, (const uint8_t *)t->data + (size_t)r0 * rb};
}

// Phi-3's fused attn_qkv (q_dim + 2 kv_dim rows) and ffn_up (gate then up, 2 hidden rows),
// split into views. A fused tensor of another size is refused by name.
static int take_fused(struct taken *tk, const struct kn_config *c, int l, struct kn_layer_weights *L, char *err) {
    char name[64];
    struct kn_tensor t;
    int64_t q = kn_q_dim(c), kv = kn_kv_dim(c);
    int rc;
    snprintf(name, sizeof name, "blk.%d.attn_qkv.weight", l);
    if ((rc = take(tk, name, &t, err))) return rc;
    if (t.ne1 != q + 2 * kv || t.ne0 != c->dim)
        return qp_fail(err, QP_EFORMAT, "cannot read '%s': tensor '%s' has shape (%lld, %lld), expected (%lld, %d)",
                       hx_gguf_path(tk->g), name, (long long)t.ne1, (long long)t.ne0, (long long)(q + 2 * kv), c->dim);
    L->wq = row_view(&t, 0, q);
    L->wk = row_view(&t, q, kv);
    L->wv = row_view(&t, q + kv, kv);
    snprintf(name, sizeof name, "blk.%d.ffn_up.weight", l);
    if ((rc = take(tk, name, &t, err))) return rc;
    if (t.ne1 != 2 * (int64_t)c->hidden_dim || t.ne0 != c->dim)
        return qp_fail(err, QP_EFORMAT, "cannot read '%s': tensor '%s' has shape (%lld, %lld), expected (%lld, %d)",
                       hx_gguf_path(tk->g), name, (long long)t.ne1, (long long)t.ne0, 2 * (long long)c->hidden_dim,
                       c->dim);
    L->w_gate = row_view(&t, 0, c->hidden_dim);
    L->w_up = row_view(&t, c->hidden_dim, c->hidden_dim);
    return 0;
}

static int take_layer(struct taken *tk, const struct kn_config *c, int l, struct kn_layer_weights *L, char *err) {
    const struct {
        const char *name;
        size_t off;
        int want; // 1 always, else the flag that asks for it
    } names[] = {
        {"attn_norm.weight", offsetof(struct kn_layer_weights, attn_norm), 1},
        {"attn_q.weight", offsetof(struct kn_layer_weights, wq), !c->fused_qkv},
        {"attn_k.weight", offsetof(struct kn_layer_weights, wk), !c->fused_qkv},
        {"attn_v.weight", offsetof(struct kn_layer_weights, wv), !c->fused_qkv},
        {"attn_output.weight", offsetof(struct kn_layer_weights, wo), 1},
        {"ffn_norm.weight", offsetof(struct kn_layer_weights, ffn_norm), 1},
        {"ffn_gate.weight", offsetof(struct kn_layer_weights, w_gate), !c->fused_gate_up},
        {"ffn_down.weight", offsetof(struct kn_layer_weights, w_down), 1},
        {"ffn_up.weight", offsetof(struct kn_layer_weights, w_up), !c->fused_gate_up},
        {"attn_q.bias", offsetof(struct kn_layer_weights, bq), c->has_qkv_bias},
        {"attn_k.bias", offsetof(struct kn_layer_weights, bk), c->has_qkv_bias},
        {"attn_v.bias", offsetof(struct kn_layer_weights, bv), c->has_qkv_bias},
        {"post_attention_norm.weight", offsetof(struct kn_layer_weights, attn_post_norm), c->post_norms},
        {"post_ffw_norm.weight", offsetof(struct kn_layer_weights, ffn_post_norm), c->post_norms},
    };
    int rc;
    for (size_t i = 0; i < QP_ARRAY_LEN(names); i++) {
        if (!names[i].want) continue;
        char name[80];
        snprintf(name, sizeof name, "blk.%d.%s", l, names[i].name);
        if ((rc = take(tk, name, (struct kn_tensor *)((char *)L + names[i].off), err))) return rc;
    }
    if ((c->fused_qkv || c->fused_gate_up) && (rc = take_fused(tk, c, l, L, err))) return rc;
    return 0;
}

// The classifier: its own output.weight, or the embedding (tied: the small Llama 3.2, Qwen2 and
// always Gemma 2, whose llama.cpp graph ignores an output.weight).
static int take_output(struct taken *tk, struct kn_weights *w, char *err) {
    if (w->cfg.arch == KN_ARCH_GEMMA2 || !hx_gguf_find_tensor(tk->g, "output.weight")) {
        w->output = w->tok_embd;
        w->tied = w->embd_only = 1;
        return 0;
    }
    int rc = take(tk, "output.weight", &w->output, err);
    if (rc) return rc;
    // llama.cpp's llama2.c converter stores a tied classifier as an explicit copy of the
    // embedding: recognise it, so that the model is treated (and quantized) as tied.
    size_t bytes = kn_row_bytes(w->tok_embd.type, w->tok_embd.ne0) * (size_t)w->tok_embd.ne1;
    if (w->output.type == w->tok_embd.type && w->output.ne0 == w->tok_embd.ne0 && w->output.ne1 == w->tok_embd.ne1 &&
        bytes > 0 && memcmp(w->output.data, w->tok_embd.data, bytes) == 0) {
        w->output.data = w->tok_embd.data;
        w->tied = 1;
    }
    return 0;
}

// Every tensor of the file must have been taken: one the block does not use (attention biases in
// a llama file, an unknown norm) would make qprobe evaluate a different model than llama.cpp.
static int check_all_taken(const struct taken *tk, char *err) {
    for (int64_t i = 0; i < hx_gguf_n_tensors(tk->g); i++)
        if (!tk->used[i])
            return qp_fail(err, QP_ENOTSUP, "cannot read '%s': tensor '%s' is not part of a '%s' block qprobe implements",
                           hx_gguf_path(tk->g), hx_gguf_tensor(tk->g, i)->name, kn_arch_name(kn_arch_of(tk->g)));
    return 0;
}

static int take_all(struct taken *tk, struct hx_model *m, char *err) {
    struct kn_weights *w = &m->w;
    const struct kn_config *c = &w->cfg;
    int rc;
    for (int l = 0; l < c->n_layers; l++)
        if ((rc = take_layer(tk, c, l, &w->layers[l], err))) return rc;
    if ((rc = take(tk, "output_norm.weight", &w->out_norm, err)) || (rc = take_output(tk, w, err))) return rc;
    // llama.cpp names the per-model RoPE factors without a layer.
    if ((rc = take_opt(tk, "rope_freqs.weight", &w->rope_freqs, err)) ||
        (rc = take_opt(tk, "rope_factors_short.weight", &w->rope_short, err)) ||
        (rc = take_opt(tk, "rope_factors_long.weight", &w->rope_long, err)))
        return rc;
    return check_all_taken(tk, err);
}

// general.architecture: one of the families qprobe implements.
static int gguf_arch(const struct hx_gguf *g, const char *path, enum kn_arch *a, char *err) {
    const char *arch;
    size_t arch_len;
    int rc = hx_gguf_get_str(g, "general.architecture", &arch, &arch_len);
    if (rc == QP_ENOENT)
        return qp_fail(err, QP_ENOENT, "cannot read '%s': missing key 'general.architecture'", path);
    if (rc) return qp_fail(err, QP_EFORMAT, "cannot read '%s': general.architecture is not a string", path);
    *a = kn_arch_of(g);
    if (*a == KN_ARCH_COUNT)
        return qp_fail(err, QP_ENOTSUP,
                       "cannot read '%s': architecture '%.*s' is not supported (llama, qwen2, phi3, gemma2)", path,
                       (int)QP_MIN(arch_len, (size_t)64), arch);
    return 0;
}

// The file's tokenizer, when it has one; its vocabulary must be the model's.
static int gguf_tokenizer(struct hx_model *m, const struct hx_gguf *g, const char *path, char *err) {
    if (!hx_gguf_find(g, "tokenizer.ggml.model")) return 0;
    int rc = hx_tok_from_gguf(g, &m->tok, err);
    if (rc) return rc;
    return hx_tok_fit_rows(m->tok, m->w.cfg.vocab_size, path, err);
}

int hx_gguf_model_load(struct hx_model *m, const char *path, char *err) {
    struct hx_gguf *g;
    int rc = hx_gguf_open(path, &g, err);
    if (rc) return rc;
    m->gguf = g; // from here on hx_model_close frees whatever this function attached to m
    m->format = HX_FMT_GGUF;
    struct kn_weights *w = &m->w;
    struct kn_config *c = &w->cfg;
    char msg[QP_ERRLEN];
    if ((rc = gguf_arch(g, path, &c->arch, err)) || (rc = get_config(g, c, err))) return rc;
    struct taken tk = {g, qp_calloc_array((size_t)QP_MAX(hx_gguf_n_tensors(g), 1), 1)};
    if (qp_owned_add(&m->owned, tk.used)) return qp_fail(err, QP_ENOMEM, "cannot read '%s': out of memory", path);
    if ((rc = take(&tk, "token_embd.weight", &w->tok_embd, err))) return rc;
    if (w->tok_embd.ne1 < 1 || w->tok_embd.ne1 > INT_MAX)
        return qp_fail(err, QP_ERANGE, "cannot read '%s': vocabulary of %lld tokens", path, (long long)w->tok_embd.ne1);
    c->vocab_size = (int)w->tok_embd.ne1;
    if ((rc = kn_config_check(c, msg))) return qp_fail(err, rc, "cannot read '%s': %s", path, msg);
    w->layers = qp_calloc_array((size_t)c->n_layers, sizeof *w->layers);
    if (qp_owned_add(&m->owned, w->layers)) {
        w->layers = NULL;
        return qp_fail(err, QP_ENOMEM, "cannot read '%s': out of memory", path);
    }
    if ((rc = take_all(&tk, m, err))) return rc;
    if ((rc = kn_weights_check(w, msg))) return qp_fail(err, rc, "cannot read '%s': %s", path, msg);
    return gguf_tokenizer(m, g, path, err);
}

// ---------------------------------------------------------------------------------------------
// Writing

// Buffers converted for one write, freed after it.
struct conv {
    void **bufs;
    int n, cap;
};

static void conv_free(struct conv *cv) {
    for (int i = 0; i < cv->n; i++) qp_free(cv->bufs[i]);
    free(cv->bufs);
}

static void *conv_alloc(struct conv *cv, size_t bytes) {
    if (cv->n == cv->cap) {
        int cap = cv->cap ? cv->cap * 2 : 64;
        void **b = realloc(cv->bufs, (size_t)cap * sizeof *b);
        if (!b) return NULL;
        cv->bufs = b;
        cv->cap = cap;
    }
    void *p = qp_alloc(bytes);
    if (p) cv->bufs[cv->n++] = p;
    return p;
}

static float src_elem(int type, const void *data, size_t i) {
    switch (type) {
    case KN_F32: return ((const float *)data)[i];
    case KN_F16: return qp_fp16_to_fp32(((const uint16_t *)data)[i]);
    default: return qp_bf16_to_fp32(((const uint16_t *)data)[i]);
    }
}

// t's data as type dst (t's own type when dst < 0): the tensor itself, or a converted copy in cv.
// Only F32, F16 and BF16 convert. NULL with err set and *rc the error.
static const void *tensor_as(struct conv *cv, const char *name, const struct kn_tensor *t, int dst,
                             const char *path, int *rc, char *err) {
    if (dst < 0 || t->type == dst) return t->data;
    if (t->type != KN_F32 && t->type != KN_F16 && t->type != KN_BF16) {
        const struct kn_type_info *ti = kn_type_info(t->type);
        *rc = qp_fail(err, QP_ENOTSUP, "cannot write '%s': tensor '%s' has type %s; only f32, f16 and bf16 tensors "
                      "can be written", path, name, ti ? ti->name : "unknown");
        return NULL;
    }
    size_t n = (size_t)t->ne0 * (size_t)t->ne1; // shapes checked by kn_weights_check
    void *out = conv_alloc(cv, n * (dst == KN_F32 ? 4 : 2));
    if (!out) {
        *rc = qp_fail(err, QP_ENOMEM, "cannot write '%s': out of memory", path);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        float x = src_elem(t->type, t->data, i);
        if (dst == KN_F32) ((float *)out)[i] = x;
        else ((uint16_t *)out)[i] = qp_fp32_to_fp16(x);
    }
    return out;
}

// Adds the row-wise concatenation of parts[0..n) (same width) as one tensor name of type dst
// (the parts' own type when dst < 0, which must then be the same for all). 1-D when is_norm.
static int add_rows(struct hx_gguf_writer *wr, struct conv *cv, const char *name, const struct kn_tensor *const *parts,
                    int n, int dst, int is_norm, const char *path, char *err) {
    int type = dst >= 0 ? dst : parts[0]->type;
    int64_t rows = 0;
    for (int i = 0; i < n; i++) {
        if (parts[i]->ne0 != parts[0]->ne0 || (dst < 0 && parts[i]->type != type))
            return qp_fail(err, QP_ENOTSUP, "cannot write '%s': the parts of fused tensor '%s' differ in type or width",
                           path, name);
        rows += parts[i]->ne1;
    }
    size_t rb = kn_row_bytes(type, parts[0]->ne0);
    const void *data = NULL;
    int rc = 0;
    if (n == 1) {
        data = tensor_as(cv, name, parts[0], type, path, &rc, err);
        if (!data) return rc;
    } else {
        uint8_t *cat = conv_alloc(cv, rb * (size_t)rows);
        if (!cat) return qp_fail(err, QP_ENOMEM, "cannot write '%s': out of memory", path);
        size_t at = 0;
        for (int i = 0; i < n; i++) {
            const void *d = tensor_as(cv, name, parts[i], type, path, &rc, err);
            if (!d) return rc;
            memcpy(cat + at, d, rb * (size_t)parts[i]->ne1);
            at += rb * (size_t)parts[i]->ne1;
        }
        data = cat;
    }
    int64_t ne[2] = {parts[0]->ne0, rows};
    rc = hx_gguf_writer_add_tensor(wr, name, type, is_norm ? 1 : 2, ne, data, rb * (size_t)rows);
    if (rc) return qp_fail(err, rc, "cannot write '%s': cannot add tensor '%s': %s", path, name, qp_strerror(rc));
    return 0;
}

// Adds t as name, stored as type dst (KN_F32 or KN_F16; < 0: as it is). 1-D when is_norm.
static int add_tensor(struct hx_gguf_writer *wr, struct conv *cv, const char *name,
                      const struct kn_tensor *t, int dst, int is_norm, const char *path,
                      char *err) {
    const struct kn_tensor *parts[1] = {t};
    return add_rows(wr, cv, name, parts, 1, dst, is_norm, path, err);
}

// general.name: the file name without directories and ".gguf", or "qprobe".
static void model_name(const char *path, char *out, size_t cap) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t len = strlen(base);
    if (len > 5 && strcmp(base + len - 5, ".gguf") == 0) len -= 5;
    if (len == 0 || len >= cap) {
        snprintf(out, cap, "qprobe");
        return;
    }
    memcpy(out, base, len);
    out[len] = 0;
}

// The block variant a file of c's architecture implies when read back (get_family), so that a
// config the architecture cannot express is refused instead of written as another model.
static int family_writable(const struct kn_config *c, const char *path, char *err) {
    struct kn_config want = *c;
    kn_config_set_family(&want);
    int gemma = c->arch == KN_ARCH_GEMMA2;
    want.attn_scale = gemma ? gemma2_query_scale(c) : 0.0f;
    if (!gemma) want.attn_softcap = want.final_softcap = 0;
    if (memcmp(&want, c, sizeof want) != 0)
        return qp_fail(err, QP_ENOTSUP, "cannot write '%s': this %s model's block (scales, biases, norms or RoPE) "
                       "cannot be expressed in a GGUF '%s' file", path, kn_arch_name(c->arch), kn_arch_name(c->arch));
    if ((c->arch == KN_ARCH_QWEN2 || c->arch == KN_ARCH_PHI3) && c->head_size * c->n_heads != c->dim)
        return qp_fail(err, QP_ENOTSUP, "cannot write '%s': llama.cpp's %s needs head size = dim / heads", path,
                       kn_arch_name(c->arch));
    return 0;
}

static int set_u32(struct hx_gguf_writer *wr, enum kn_arch a, const char *suffix, uint32_t v) {
    char key[96];
    return hx_gguf_writer_set_u32(wr, akey(key, sizeof key, a, suffix), v);
}

static int set_f32(struct hx_gguf_writer *wr, enum kn_arch a, const char *suffix, float v) {
    char key[96];
    return hx_gguf_writer_set_f32(wr, akey(key, sizeof key, a, suffix), v);
}

// The family's own keys (llama: only those a Llama 2 file does not have).
static int set_family_keys(struct hx_gguf_writer *wr, const struct kn_config *c) {
    enum kn_arch a = c->arch;
    int rc = 0;
    if (!rc && c->head_size * c->n_heads != c->dim) rc = set_u32(wr, a, "attention.key_length", (uint32_t)c->head_size);
    if (!rc && c->head_size * c->n_heads != c->dim) rc = set_u32(wr, a, "attention.value_length", (uint32_t)c->head_size);
    if (!rc && c->rope_freq_scale > 0 && c->rope_freq_scale != 1.0f) {
        char key[96];
        rc = hx_gguf_writer_set_str(wr, akey(key, sizeof key, a, "rope.scaling.type"), "linear");
        if (!rc) rc = set_f32(wr, a, "rope.scaling.factor", 1.0f / c->rope_freq_scale);
    }
    if (!rc && c->rope_attn_factor > 0) rc = set_f32(wr, a, "rope.scaling.attn_factor", c->rope_attn_factor);
    if (!rc && c->rope_ctx_orig > 0) rc = set_u32(wr, a, "rope.scaling.original_context_length", (uint32_t)c->rope_ctx_orig);
    if (!rc && (a == KN_ARCH_PHI3 || a == KN_ARCH_GEMMA2 || c->swa_window > 0)) // phi3: 0 means none
        rc = set_u32(wr, a, "attention.sliding_window", (uint32_t)c->swa_window);
    if (!rc && a == KN_ARCH_GEMMA2) {
        rc = set_f32(wr, a, "attn_logit_softcapping", c->attn_softcap);
        if (!rc) rc = set_f32(wr, a, "final_logit_softcapping", c->final_softcap);
    }
    return rc;
}

// Key/values in the order llama.cpp's llama2.c converter writes them (tokenizer first), plus
// general.file_type, rope.freq_base (for llama only when not the default) and the family's keys.
static int set_keys(struct hx_gguf_writer *wr, const struct kn_weights *w,
                    const struct hx_tok *tok, const char *path, int type, int file_type) {
    const struct kn_config *c = &w->cfg;
    enum kn_arch a = c->arch;
    char name[256];
    model_name(path, name, sizeof name);
    int rc = 0;
    if (tok) rc = hx_tok_write_gguf(tok, wr);
    if (!rc) rc = hx_gguf_writer_set_str(wr, "general.architecture", kn_arch_name(a));
    if (!rc) rc = hx_gguf_writer_set_str(wr, "general.name", name);
    if (!rc) rc = hx_gguf_writer_set_u32(wr, "general.file_type", (uint32_t)file_type);
    if (!rc && type < 0) rc = hx_gguf_writer_set_u32(wr, "general.quantization_version", 2);
    if (tok) { // ids the vocabulary lacks (-1) are left out, as llama.cpp's converter does
        if (!rc && hx_tok_unk(tok) >= 0)
            rc = hx_gguf_writer_set_u32(wr, "tokenizer.ggml.unknown_token_id", (uint32_t)hx_tok_unk(tok));
        if (!rc && hx_tok_bos(tok) >= 0)
            rc = hx_gguf_writer_set_u32(wr, "tokenizer.ggml.bos_token_id", (uint32_t)hx_tok_bos(tok));
        if (!rc && hx_tok_eos(tok) >= 0)
            rc = hx_gguf_writer_set_u32(wr, "tokenizer.ggml.eos_token_id", (uint32_t)hx_tok_eos(tok));
    }
    if (!rc) rc = set_u32(wr, a, "context_length", (uint32_t)c->seq_len);
    if (!rc) rc = set_u32(wr, a, "embedding_length", (uint32_t)c->dim);
    if (!rc) rc = set_u32(wr, a, "feed_forward_length", (uint32_t)c->hidden_dim);
    if (!rc) rc = set_u32(wr, a, "attention.head_count", (uint32_t)c->n_heads);
    if (!rc) rc = set_u32(wr, a, "attention.head_count_kv", (uint32_t)c->n_kv_heads);
    if (!rc) rc = set_u32(wr, a, "block_count", (uint32_t)c->n_layers);
    if (!rc) rc = set_u32(wr, a, "rope.dimension_count", (uint32_t)c->head_size);
    if (!rc) rc = set_f32(wr, a, "attention.layer_norm_rms_epsilon", c->norm_eps);
    if (!rc && (a != KN_ARCH_LLAMA || c->rope_theta != (float)HX_ROPE_THETA_DEFAULT))
        rc = set_f32(wr, a, "rope.freq_base", c->rope_theta);
    if (!rc) rc = set_family_keys(wr, c);
    return rc;
}

// A layer's tensors in the converter's order: q, k, v (or the fused qkv), biases, output,
// attn_norm, post-attention norm, gate, down, up (or the fused gate/up), ffn_norm, post-FFN norm.
static int add_layer(struct hx_gguf_writer *wr, struct conv *cv, const struct kn_config *c,
                     const struct kn_layer_weights *L, int l, int type, const char *path, char *err) {
    const struct kn_tensor *qkv[3] = {&L->wq, &L->wk, &L->wv}, *gu[2] = {&L->w_gate, &L->w_up};
    const struct {
        const char *name;
        const struct kn_tensor *const *parts;
        int n, norm, want;
    } list[] = {
        {"attn_qkv.weight", qkv, 3, 0, c->fused_qkv},
        {"attn_q.weight", &qkv[0], 1, 0, !c->fused_qkv},
        {"attn_k.weight", &qkv[1], 1, 0, !c->fused_qkv},
        {"attn_v.weight", &qkv[2], 1, 0, !c->fused_qkv},
        {"attn_q.bias", (const struct kn_tensor *const[]){&L->bq}, 1, 1, c->has_qkv_bias},
        {"attn_k.bias", (const struct kn_tensor *const[]){&L->bk}, 1, 1, c->has_qkv_bias},
        {"attn_v.bias", (const struct kn_tensor *const[]){&L->bv}, 1, 1, c->has_qkv_bias},
        {"attn_output.weight", (const struct kn_tensor *const[]){&L->wo}, 1, 0, 1},
        {"attn_norm.weight", (const struct kn_tensor *const[]){&L->attn_norm}, 1, 1, 1},
        {"post_attention_norm.weight", (const struct kn_tensor *const[]){&L->attn_post_norm}, 1, 1, c->post_norms},
        {"ffn_gate.weight", &gu[0], 1, 0, !c->fused_gate_up},
        {"ffn_down.weight", (const struct kn_tensor *const[]){&L->w_down}, 1, 0, 1},
        {"ffn_up.weight", gu, 2, 0, c->fused_gate_up},
        {"ffn_up.weight", &gu[1], 1, 0, !c->fused_gate_up},
        {"ffn_norm.weight", (const struct kn_tensor *const[]){&L->ffn_norm}, 1, 1, 1},
        {"post_ffw_norm.weight", (const struct kn_tensor *const[]){&L->ffn_post_norm}, 1, 1, c->post_norms},
    };
    for (size_t i = 0; i < QP_ARRAY_LEN(list); i++) {
        if (!list[i].want) continue;
        char name[80];
        snprintf(name, sizeof name, "blk.%d.%s", l, list[i].name);
        int rc = add_rows(wr, cv, name, list[i].parts, list[i].n, list[i].norm ? KN_F32 : type, list[i].norm, path, err);
        if (rc) return rc;
    }
    return 0;
}

// Tensors in the converter's order: RoPE factors, embedding, final norm, classifier (untied,
// and never for Gemma 2, whose graph reads the embedding), then the layers.
static int add_tensors(struct hx_gguf_writer *wr, struct conv *cv, const struct kn_weights *w,
                       int type, const char *path, char *err) {
    int rc;
    const struct kn_tensor *rope[] = {&w->rope_freqs, &w->rope_long, &w->rope_short};
    static const char *rope_names[] = {"rope_freqs.weight", "rope_factors_long.weight", "rope_factors_short.weight"};
    for (int i = 0; i < 3; i++)
        if (rope[i]->data && (rc = add_tensor(wr, cv, rope_names[i], rope[i], KN_F32, 1, path, err))) return rc;
    if ((rc = add_tensor(wr, cv, "token_embd.weight", &w->tok_embd, type, 0, path, err)) ||
        (rc = add_tensor(wr, cv, "output_norm.weight", &w->out_norm, KN_F32, 1, path, err)))
        return rc;
    if (!w->tied && w->cfg.arch == KN_ARCH_GEMMA2)
        return qp_fail(err, QP_ENOTSUP, "cannot write '%s': a gemma2 file has no classifier of its own (untied "
                       "output, e.g. after AWQ on the classifier)", path);
    if (!w->tied && (rc = add_tensor(wr, cv, "output.weight", &w->output, type, 0, path, err)))
        return rc;
    for (int l = 0; l < w->cfg.n_layers; l++)
        if ((rc = add_layer(wr, cv, &w->cfg, &w->layers[l], l, type, path, err))) return rc;
    return 0;
}

static int hx_gguf_model_write_impl(const struct kn_weights *w, const struct hx_tok *tok,
                                    const char *path, int type, int file_type, char *err);

int hx_gguf_model_write(const struct kn_weights *w, const struct hx_tok *tok, const char *path,
                        enum kn_type type, char *err) {
    if (type != KN_F32 && type != KN_F16) {
        return qp_fail(err, QP_EINVAL, "cannot write '%s': type %d is not f32 or f16", path,
                       type);
    }
    return hx_gguf_model_write_impl(w, tok, path, type, type == KN_F16 ? 1 : 0, err);
}

int hx_gguf_model_write_as_is(const struct kn_weights *w, const struct hx_tok *tok,
                              const char *path, int file_type, char *err) {
    return hx_gguf_model_write_impl(w, tok, path, -1, file_type, err);
}

int hx_gguf_vocab_write(const struct hx_tok *tok, const char *path, char *err) {
    struct hx_gguf_writer *wr;
    if (hx_gguf_writer_create(&wr)) return qp_fail(err, QP_ENOMEM, "cannot write '%s': out of memory", path);
    // The smallest Llama shape llama.cpp's hyperparameter loader accepts.
    static const struct {
        const char *key;
        uint32_t v;
    } hp[] = {{"llama.block_count", 1},     {"llama.context_length", 4096},   {"llama.embedding_length", 64},
              {"llama.feed_forward_length", 128}, {"llama.attention.head_count", 2}, {"llama.attention.head_count_kv", 2},
              {"llama.rope.dimension_count", 32}};
    int rc = hx_tok_write_gguf(tok, wr);
    if (!rc) rc = hx_gguf_writer_set_str(wr, "general.architecture", "llama");
    if (!rc) rc = hx_gguf_writer_set_str(wr, "general.name", "qprobe-vocab");
    for (size_t i = 0; i < QP_ARRAY_LEN(hp) && !rc; i++) rc = hx_gguf_writer_set_u32(wr, hp[i].key, hp[i].v);
    if (!rc) rc = hx_gguf_writer_set_f32(wr, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    if (!rc) rc = hx_gguf_writer_set_u32(wr, "llama.vocab_size", (uint32_t)hx_tok_n_vocab(tok));
    if (!rc && hx_tok_bos(tok) >= 0) rc = hx_gguf_writer_set_u32(wr, "tokenizer.ggml.bos_token_id", (uint32_t)hx_tok_bos(tok));
    if (!rc && hx_tok_eos(tok) >= 0) rc = hx_gguf_writer_set_u32(wr, "tokenizer.ggml.eos_token_id", (uint32_t)hx_tok_eos(tok));
    if (!rc && hx_tok_unk(tok) >= 0)
        rc = hx_gguf_writer_set_u32(wr, "tokenizer.ggml.unknown_token_id", (uint32_t)hx_tok_unk(tok));
    if (rc == QP_ENOTSUP)
        rc = qp_fail(err, rc, "cannot write '%s': llama.cpp has no pre-tokenizer name for this vocabulary (%s)", path,
                     hx_tok_describe(tok));
    else if (rc)
        rc = qp_fail(err, rc, "cannot write '%s': %s", path, qp_strerror(rc));
    if (!rc) rc = hx_gguf_writer_write(wr, path, err);
    hx_gguf_writer_destroy(wr);
    return rc;
}

static int hx_gguf_model_write_impl(const struct kn_weights *w, const struct hx_tok *tok,
                                    const char *path, int type, int file_type, char *err) {
    char msg[QP_ERRLEN];
    int rc = kn_weights_check(w, msg);
    if (rc) return qp_fail(err, QP_EINVAL, "cannot write '%s': %s", path, msg);
    if (tok && hx_tok_n_vocab(tok) != w->cfg.vocab_size) {
        return qp_fail(err, QP_EINVAL,
                       "cannot write '%s': the tokenizer has %d tokens, the model %d", path,
                       hx_tok_n_vocab(tok), w->cfg.vocab_size);
    }
    if ((rc = family_writable(&w->cfg, path, err))) return rc;
    struct hx_gguf_writer *wr;
    if (hx_gguf_writer_create(&wr))
        return qp_fail(err, QP_ENOMEM, "cannot write '%s': out of memory", path);
    struct conv cv = {0};
    rc = set_keys(wr, w, tok, path, type, file_type);
    if (rc) rc = qp_fail(err, rc, "cannot write '%s': %s", path, qp_strerror(rc));
    if (!rc) rc = add_tensors(wr, &cv, w, type, path, err);
    if (!rc) rc = hx_gguf_writer_write(wr, path, err);
    hx_gguf_writer_destroy(wr);
    conv_free(&cv);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// Streaming writer

#define HX_STREAM_ALIGN 32     // GGUF's default alignment (no general.alignment key written)
#define HX_STREAM_MAX_DEPTH 8  // deepest array nesting encoded, as the reader accepts
#define HX_STREAM_BUF (1 << 20)

struct hx_gguf_stream {
    char *path;        // as given (copy)
    char *tmp;         // the temporary file next to it
    FILE *f;
    uint64_t *sizes;   // (n_tensors) data bytes of each tensor, without padding
    char **names;      // (n_tensors) copies, for messages
    int64_t n_tensors;
    int64_t cur;       // tensor whose bytes are being written
    uint64_t done;     // bytes of tensor cur written so far
    uint64_t total;    // sum of sizes
    int failed;        // a write failed: only abort remains
    int err_no;        // errno of the failed write
};

// Writes n bytes; on failure marks the stream failed and keeps the first errno.
static void st_put(struct hx_gguf_stream *s, const void *p, size_t n) {
    if (s->failed || n == 0) return;
    if (fwrite(p, 1, n, s->f) != n) {
        s->failed = 1;
        s->err_no = errno ? errno : EIO;
    }
}

static void st_u32(struct hx_gguf_stream *s, uint32_t v) {
    uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    st_put(s, x, 4);
}

static void st_u64(struct hx_gguf_stream *s, uint64_t v) {
    st_u32(s, (uint32_t)v);
    st_u32(s, (uint32_t)(v >> 32));
}

static void st_str(struct hx_gguf_stream *s, const char *p, uint64_t len) {
    st_u64(s, len);
    st_put(s, p, (size_t)len);
}

static void st_zeros(struct hx_gguf_stream *s, size_t n) {
    static const uint8_t zeros[HX_STREAM_ALIGN];
    while (n > 0) {
        size_t k = QP_MIN(n, sizeof zeros);
        st_put(s, zeros, k);
        n -= k;
    }
}

// Encodes v without its type tag. 0 or QP_EINVAL for a malformed value.
static int st_value(struct hx_gguf_stream *s, const struct hx_gguf_value *v, int depth) {
    if (depth > HX_STREAM_MAX_DEPTH) return QP_EINVAL;
    switch (v->type) {
    case HX_GGUF_UINT8: st_put(s, &(uint8_t){(uint8_t)v->v.u}, 1); return 0;
    case HX_GGUF_INT8: st_put(s, &(uint8_t){(uint8_t)(int8_t)v->v.i}, 1); return 0;
    case HX_GGUF_BOOL: st_put(s, &(uint8_t){v->v.b ? 1 : 0}, 1); return 0;
    case HX_GGUF_UINT16: {
        uint16_t x = (uint16_t)v->v.u;
        st_put(s, (uint8_t[2]){(uint8_t)x, (uint8_t)(x >> 8)}, 2);
        return 0;
    }
    case HX_GGUF_INT16: {
        uint16_t x = (uint16_t)(int16_t)v->v.i;
        st_put(s, (uint8_t[2]){(uint8_t)x, (uint8_t)(x >> 8)}, 2);
        return 0;
    }
    case HX_GGUF_UINT32: st_u32(s, (uint32_t)v->v.u); return 0;
    case HX_GGUF_INT32: st_u32(s, (uint32_t)(int32_t)v->v.i); return 0;
    case HX_GGUF_UINT64: st_u64(s, v->v.u); return 0;
    case HX_GGUF_INT64: st_u64(s, (uint64_t)v->v.i); return 0;
    case HX_GGUF_FLOAT32: {
        float x = (float)v->v.f;
        uint32_t b;
        memcpy(&b, &x, 4);
        st_u32(s, b);
        return 0;
    }
    case HX_GGUF_FLOAT64: {
        uint64_t b;
        memcpy(&b, &v->v.f, 8);
        st_u64(s, b);
        return 0;
    }
    case HX_GGUF_STRING:
        if (v->v.str.len > 0 && !v->v.str.ptr) return QP_EINVAL;
        st_str(s, v->v.str.ptr, v->v.str.len);
        return 0;
    case HX_GGUF_ARRAY: {
        enum hx_gguf_type et = v->v.arr.type;
        uint64_t n = v->v.arr.n;
        st_u32(s, (uint32_t)et);
        st_u64(s, n);
        if (et == HX_GGUF_STRING || et == HX_GGUF_ARRAY) {
            if (n > 0 && !v->v.arr.items) return QP_EINVAL;
            for (uint64_t i = 0; i < n; i++) {
                if (v->v.arr.items[i].type != et) return QP_EINVAL;
                int rc = st_value(s, &v->v.arr.items[i], depth + 1);
                if (rc) return rc;
            }
            return 0;
        }
        size_t sz = hx_gguf_scalar_size(et), bytes;
        if (sz == 0 || n > SIZE_MAX || qp_mul_overflow((size_t)n, sz, &bytes)) return QP_EINVAL;
        if (bytes > 0 && !v->v.arr.data) return QP_EINVAL;
        st_put(s, v->v.arr.data, bytes); // raw little-endian elements, as the reader keeps them
        return 0;
    }
    }
    return QP_EINVAL;
}

// Bytes of tensor t, or 0 when its type or shape is invalid.
static uint64_t st_tensor_bytes(const struct hx_gguf_stream_tensor *t) {
    if (!t->name || !kn_type_info(t->type) || t->n_dims < 1 || t->n_dims > 4) return 0;
    for (int d = 0; d < 4; d++)
        if (t->ne[d] < 1 || (d >= t->n_dims && t->ne[d] != 1)) return 0;
    uint64_t bytes = kn_row_bytes(t->type, t->ne[0]);
    for (int d = 1; d < 4; d++)
        if (__builtin_mul_overflow(bytes, (uint64_t)t->ne[d], &bytes)) return 0;
    return bytes;
}

static void st_free(struct hx_gguf_stream *s) {
    if (s->names)
        for (int64_t i = 0; i < s->n_tensors; i++) free(s->names[i]);
    free(s->names);
    free(s->sizes);
    free(s->tmp);
    free(s->path);
    free(s);
}

void hx_gguf_stream_abort(struct hx_gguf_stream *s) {
    if (!s) return;
    if (s->f) fclose(s->f);
    if (s->tmp) unlink(s->tmp);
    st_free(s);
}

static int st_io_fail(struct hx_gguf_stream *s, char *err) {
    int rc = qp_fail(err, QP_EWRITE, "cannot write '%s': %s", s->path, strerror(s->err_no));
    hx_gguf_stream_abort(s);
    return rc;
}

// Checks every tensor (type and shape, unique names) before the file is created, and fills
// s->sizes, s->names and s->total. 0 or QP_EINVAL / QP_ENOMEM; s is then still to be freed.
static int st_check_tensors(struct hx_gguf_stream *s, const char *path, const struct hx_gguf_stream_tensor *tensors,
                            int64_t n_tensors, char *err) {
    for (int64_t i = 0; i < n_tensors; i++) {
        const struct hx_gguf_stream_tensor *t = &tensors[i];
        s->sizes[i] = st_tensor_bytes(t);
        if (s->sizes[i] == 0)
            return qp_fail(err, QP_EINVAL, "cannot write '%s': tensor '%s' has a bad type or shape", path,
                           t->name ? t->name : "(null)");
        for (int64_t j = 0; j < i; j++)
            if (strcmp(tensors[j].name, t->name) == 0)
                return qp_fail(err, QP_EINVAL, "cannot write '%s': duplicate tensor '%s'", path, t->name);
        if (!(s->names[i] = strdup(t->name))) return qp_fail(err, QP_ENOMEM, "cannot write '%s': out of memory", path);
        if (__builtin_add_overflow(s->total, s->sizes[i], &s->total))
            return qp_fail(err, QP_EINVAL, "cannot write '%s': the tensors are too large", path);
    }
    return 0;
}

// Creates the temporary file beside path (s->tmp) and opens s->f on it. 0, or QP_EIO /
// QP_EWRITE with s freed.
static int st_create(struct hx_gguf_stream *s, const char *path, size_t tmp_cap, char *err) {
    snprintf(s->tmp, tmp_cap, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(s->tmp);
    if (fd < 0) {
        int rc = qp_fail(err, QP_EIO, "cannot write '%s': %s", path, strerror(errno));
        free(s->tmp);
        s->tmp = NULL; // nothing to remove
        st_free(s);
        return rc;
    }
    fchmod(fd, 0644);
    s->f = fdopen(fd, "wb");
    if (!s->f) {
        s->err_no = errno;
        close(fd);
        return st_io_fail(s, err);
    }
    setvbuf(s->f, NULL, _IOFBF, HX_STREAM_BUF);
    return 0;
}

// Writes the header: magic, version, counts, key/values, tensor infos, padding to the data.
// 0, or an error with the file removed and s freed.
static int st_header(struct hx_gguf_stream *s, const char *path, const struct hx_gguf_kv *kvs, int64_t n_kv,
                     const struct hx_gguf_stream_tensor *tensors, int64_t n_tensors, char *err) {
    st_put(s, "GGUF", 4);
    st_u32(s, 3);
    st_u64(s, (uint64_t)n_tensors);
    st_u64(s, (uint64_t)n_kv);
    for (int64_t i = 0; i < n_kv; i++) {
        const struct hx_gguf_kv *kv = &kvs[i];
        if (!kv->key) {
            hx_gguf_stream_abort(s);
            return qp_fail(err, QP_EINVAL, "cannot write '%s': key %lld has no name", path, (long long)i);
        }
        st_str(s, kv->key, strlen(kv->key));
        st_u32(s, (uint32_t)kv->val.type);
        if (st_value(s, &kv->val, 1)) {
            hx_gguf_stream_abort(s);
            return qp_fail(err, QP_EINVAL, "cannot write '%s': key '%s' has a malformed value", path, kv->key);
        }
    }
    uint64_t off = 0;
    for (int64_t i = 0; i < n_tensors; i++) {
        const struct hx_gguf_stream_tensor *t = &tensors[i];
        st_str(s, t->name, strlen(t->name));
        st_u32(s, (uint32_t)t->n_dims);
        for (int d = 0; d < t->n_dims; d++) st_u64(s, (uint64_t)t->ne[d]);
        st_u32(s, (uint32_t)t->type);
        st_u64(s, off);
        off += s->sizes[i] + (HX_STREAM_ALIGN - s->sizes[i] % HX_STREAM_ALIGN) % HX_STREAM_ALIGN;
    }
    if (s->failed) return st_io_fail(s, err);
    long at = ftell(s->f); // the header's length
    if (at < 0) {
        s->err_no = errno;
        return st_io_fail(s, err);
    }
    st_zeros(s, (HX_STREAM_ALIGN - (size_t)at % HX_STREAM_ALIGN) % HX_STREAM_ALIGN);
    if (s->failed) return st_io_fail(s, err);
    return 0;
}

// Validation, then the temporary file and the header in file order; every failure leaves no
// file behind (st_free / st_io_fail / hx_gguf_stream_abort).
int hx_gguf_stream_open(const char *path, const struct hx_gguf_kv *kvs, int64_t n_kv,
                        const struct hx_gguf_stream_tensor *tensors, int64_t n_tensors,
                        struct hx_gguf_stream **out, char *err) {
    *out = NULL;
    if (n_kv < 0 || n_tensors < 0 || (n_kv > 0 && !kvs) || (n_tensors > 0 && !tensors))
        return qp_fail(err, QP_EINVAL, "cannot write '%s': bad key or tensor list", path);
    struct hx_gguf_stream *s = calloc(1, sizeof *s);
    if (!s) return qp_fail(err, QP_ENOMEM, "cannot write '%s': out of memory", path);
    size_t plen = strlen(path);
    s->path = strdup(path);
    s->tmp = malloc(plen + 16);
    s->sizes = calloc(n_tensors ? (size_t)n_tensors : 1, sizeof *s->sizes);
    s->names = calloc(n_tensors ? (size_t)n_tensors : 1, sizeof *s->names);
    if (!s->path || !s->tmp || !s->sizes || !s->names) {
        st_free(s);
        return qp_fail(err, QP_ENOMEM, "cannot write '%s': out of memory", path);
    }
    s->n_tensors = n_tensors;
    int rc = st_check_tensors(s, path, tensors, n_tensors, err);
    if (rc) {
        st_free(s);
        return rc;
    }
    if ((rc = st_create(s, path, plen + 16, err))) return rc;
    if ((rc = st_header(s, path, kvs, n_kv, tensors, n_tensors, err))) return rc;
    *out = s;
    return 0;
}

uint64_t hx_gguf_stream_data_bytes(const struct hx_gguf_stream *s) { return s->total; }

int hx_gguf_stream_write(struct hx_gguf_stream *s, const void *data, size_t n, char *err) {
    const uint8_t *p = data;
    if (s->failed) return qp_fail(err, QP_EWRITE, "cannot write '%s': %s", s->path,
                                  strerror(s->err_no));
    while (n > 0) {
        if (s->cur >= s->n_tensors) {
            s->failed = 1;
            s->err_no = EINVAL;
            return qp_fail(err, QP_EINVAL, "cannot write '%s': %zu bytes more than the tensors "
                           "hold", s->path, n);
        }
        uint64_t left = s->sizes[s->cur] - s->done;
        size_t k = left < n ? (size_t)left : n;
        st_put(s, p, k);
        p += k;
        n -= k;
        s->done += k;
        if (s->done == s->sizes[s->cur]) {
            st_zeros(s, (size_t)((HX_STREAM_ALIGN - s->done % HX_STREAM_ALIGN) % HX_STREAM_ALIGN));
            s->cur++;
            s->done = 0;
        }
        if (s->failed) return qp_fail(err, QP_EWRITE, "cannot write '%s': %s", s->path,
                                      strerror(s->err_no));
    }
    return 0;
}

int hx_gguf_stream_finish(struct hx_gguf_stream *s, char *err) {
    if (s->failed) return st_io_fail(s, err);
    if (s->cur < s->n_tensors) {
        int rc = qp_fail(err, QP_EINVAL, "cannot write '%s': data of tensor '%s' is missing",
                         s->path, s->names[s->cur]);
        hx_gguf_stream_abort(s);
        return rc;
    }
    FILE *f = s->f;
    s->f = NULL;
    int bad = fflush(f) != 0 || fsync(fileno(f)) != 0;
    if (bad) s->err_no = errno;
    if (fclose(f) != 0 && !bad) {
        bad = 1;
        s->err_no = errno;
    }
    if (!bad && rename(s->tmp, s->path) != 0) {
        bad = 1;
        s->err_no = errno;
    }
    if (bad) return st_io_fail(s, err);
    st_free(s);
    return 0;
}
