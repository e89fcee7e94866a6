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

// general.architecture must be "llama".
static int gguf_arch(const struct hx_gguf *g, const char *path, char *err) {
    const char *arch;
    size_t arch_len;
    int rc = hx_gguf_get_str(g, "general.architecture", &arch, &arch_len);
    if (rc == QP_ENOENT)
        return qp_fail(err, QP_ENOENT, "cannot read '%s': missing key 'general.architecture'", path);
    if (rc) return qp_fail(err, QP_EFORMAT, "cannot read '%s': general.architecture is not a string", path);
    if (arch_len != 5 || memcmp(arch, "llama", 5) != 0)
        return qp_fail(err, QP_ENOTSUP, "cannot read '%s': architecture '%.*s' is not supported (only 'llama')", path,
                       (int)QP_MIN(arch_len, (size_t)64), arch);
    return 0;
}

// The hyperparameters (llama.* keys) into c; the vocabulary comes from the embedding later.
static int gguf_config(const struct hx_gguf *g, const char *path, struct kn_config *c, char *err) {
    int rc, rope_dims;
    if ((rc = get_dim(g, "llama.embedding_length", -1, &c->dim, err)) ||
        (rc = get_dim(g, "llama.feed_forward_length", -1, &c->hidden_dim, err)) ||
        (rc = get_dim(g, "llama.block_count", -1, &c->n_layers, err)) ||
        (rc = get_dim(g, "llama.attention.head_count", -1, &c->n_heads, err)) ||
        (rc = get_dim(g, "llama.attention.head_count_kv", c->n_heads, &c->n_kv_heads, err)) ||
        (rc = get_dim(g, "llama.context_length", -1, &c->seq_len, err)) ||
        (rc = get_real(g, "llama.attention.layer_norm_rms_epsilon", HX_NORM_EPS_DEFAULT, &c->norm_eps, err)) ||
        (rc = get_real(g, "llama.rope.freq_base", HX_ROPE_THETA_DEFAULT, &c->rope_theta, err)))
        return rc;
    c->head_size = c->dim / c->n_heads;
    if ((rc = get_dim(g, "llama.rope.dimension_count", c->head_size, &rope_dims, err))) return rc;
    if (rope_dims != c->head_size)
        return qp_fail(err, QP_ENOTSUP, "cannot read '%s': partial RoPE (%d of %d head dimensions) is not supported",
                       path, rope_dims, c->head_size);
    return 0;
}

// Every block's tensors, blk.L.NAME.weight.
static int gguf_layers(const struct hx_gguf *g, struct kn_weights *w, char *err) {
    static const struct {
        const char *name;
        size_t off;
    } names[] = {
        {"attn_norm", offsetof(struct kn_layer_weights, attn_norm)},
        {"attn_q", offsetof(struct kn_layer_weights, wq)},
        {"attn_k", offsetof(struct kn_layer_weights, wk)},
        {"attn_v", offsetof(struct kn_layer_weights, wv)},
        {"attn_output", offsetof(struct kn_layer_weights, wo)},
        {"ffn_norm", offsetof(struct kn_layer_weights, ffn_norm)},
        {"ffn_gate", offsetof(struct kn_layer_weights, w_gate)},
        {"ffn_down", offsetof(struct kn_layer_weights, w_down)},
        {"ffn_up", offsetof(struct kn_layer_weights, w_up)},
    };
    int rc = 0;
    for (int l = 0; l < w->cfg.n_layers && !rc; l++)
        for (size_t i = 0; i < QP_ARRAY_LEN(names) && !rc; i++) {
            char name[64];
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, names[i].name);
            rc = get_tensor(g, name, (struct kn_tensor *)((char *)&w->layers[l] + names[i].off), err);
        }
    return rc;
}

// The classifier: output.weight, or the embedding when the file has none (tied). llama.cpp's
// llama2.c converter stores a tied classifier as an explicit copy of the embedding: recognise
// it, so that the model is treated (and quantized) as tied.
static int gguf_output(const struct hx_gguf *g, struct kn_weights *w, char *err) {
    if (!hx_gguf_find_tensor(g, "output.weight")) {
        w->output = w->tok_embd;
        w->tied = 1;
        return 0;
    }
    int rc = get_tensor(g, "output.weight", &w->output, err);
    if (rc) return rc;
    size_t bytes = kn_row_bytes(w->tok_embd.type, w->tok_embd.ne0) * (size_t)w->tok_embd.ne1;
    if (w->output.type == w->tok_embd.type && w->output.ne0 == w->tok_embd.ne0 && w->output.ne1 == w->tok_embd.ne1 &&
        bytes > 0 && memcmp(w->output.data, w->tok_embd.data, bytes) == 0) {
        w->output.data = w->tok_embd.data;
        w->tied = 1;
    }
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
    if ((rc = gguf_arch(g, path, err)) || (rc = gguf_config(g, path, c, err)) ||
        (rc = get_tensor(g, "token_embd.weight", &w->tok_embd, err)))
        return rc;
    if (w->tok_embd.ne1 < 1 || w->tok_embd.ne1 > INT_MAX)
        return qp_fail(err, QP_ERANGE, "cannot read '%s': vocabulary of %lld tokens", path, (long long)w->tok_embd.ne1);
    c->vocab_size = (int)w->tok_embd.ne1;
    if ((rc = kn_config_check(c, msg))) return qp_fail(err, rc, "cannot read '%s': %s", path, msg);
    w->layers = qp_calloc_array((size_t)c->n_layers, sizeof *w->layers);
    if (qp_owned_add(&m->owned, w->layers)) {
        w->layers = NULL;
        return qp_fail(err, QP_ENOMEM, "cannot read '%s': out of memory", path);
    }
    if ((rc = gguf_layers(g, w, err)) || (rc = get_tensor(g, "output_norm.weight", &w->out_norm, err)) ||
        (rc = gguf_output(g, w, err)))
        return rc;
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

// Adds t as name, stored as type dst (KN_F32 or KN_F16). 1-D when t->ne1 == 1 and is_norm.
static int add_tensor(struct hx_gguf_writer *wr, struct conv *cv, const char *name,
                      const struct kn_tensor *t, int dst, int is_norm, const char *path,
                      char *err) {
    if (dst < 0) dst = t->type; // as stored (quantized variants)
    if (t->type != dst && t->type != KN_F32 && t->type != KN_F16 && t->type != KN_BF16) {
        const struct kn_type_info *ti = kn_type_info(t->type);
        return qp_fail(err, QP_ENOTSUP,
                       "cannot write '%s': tensor '%s' has type %s; only f32, f16 and bf16 "
                       "tensors can be written",
                       path, name, ti ? ti->name : "unknown");
    }
    int64_t ne[2] = {t->ne0, t->ne1};
    size_t n = (size_t)t->ne0 * (size_t)t->ne1; // shapes checked by kn_weights_check
    const void *data = t->data;
    if (t->type != dst) {
        void *out = conv_alloc(cv, n * (dst == KN_F32 ? 4 : 2));
        if (!out) return qp_fail(err, QP_ENOMEM, "cannot write '%s': out of memory", path);
        for (size_t i = 0; i < n; i++) {
            float x = src_elem(t->type, t->data, i);
            if (dst == KN_F32) ((float *)out)[i] = x;
            else ((uint16_t *)out)[i] = qp_fp32_to_fp16(x);
        }
        data = out;
    }
    int rc = hx_gguf_writer_add_tensor(wr, name, dst, is_norm ? 1 : 2, ne, data,
                                       kn_row_bytes(dst, t->ne0) * (size_t)t->ne1);
    if (rc) return qp_fail(err, rc, "cannot write '%s': cannot add tensor '%s': %s", path, name,
                           qp_strerror(rc));
    return 0;
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

// Key/values in the order llama.cpp's llama2.c converter writes them (tokenizer first), plus
// general.file_type and (when not the default) rope.freq_base.
static int set_keys(struct hx_gguf_writer *wr, const struct kn_weights *w,
                    const struct hx_tok *tok, const char *path, int type, int file_type) {
    const struct kn_config *c = &w->cfg;
    char name[256];
    model_name(path, name, sizeof name);
    int rc = 0;
    if (tok) rc = hx_tok_write_gguf(tok, wr);
    if (!rc) rc = hx_gguf_writer_set_str(wr, "general.architecture", "llama");
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
    if (!rc) rc = hx_gguf_writer_set_u32(wr, "llama.context_length", (uint32_t)c->seq_len);
    if (!rc) rc = hx_gguf_writer_set_u32(wr, "llama.embedding_length", (uint32_t)c->dim);
    if (!rc) rc = hx_gguf_writer_set_u32(wr, "llama.feed_forward_length", (uint32_t)c->hidden_dim);
    if (!rc) rc = hx_gguf_writer_set_u32(wr, "llama.attention.head_count", (uint32_t)c->n_heads);
    if (!rc) rc = hx_gguf_writer_set_u32(wr, "llama.attention.head_count_kv",
                                         (uint32_t)c->n_kv_heads);
    if (!rc) rc = hx_gguf_writer_set_u32(wr, "llama.block_count", (uint32_t)c->n_layers);
    if (!rc) rc = hx_gguf_writer_set_u32(wr, "llama.rope.dimension_count", (uint32_t)c->head_size);
    if (!rc) rc = hx_gguf_writer_set_f32(wr, "llama.attention.layer_norm_rms_epsilon", c->norm_eps);
    if (!rc && c->rope_theta != (float)HX_ROPE_THETA_DEFAULT)
        rc = hx_gguf_writer_set_f32(wr, "llama.rope.freq_base", c->rope_theta);
    return rc;
}

// Tensors in the converter's order: embedding, final norm, classifier, then per layer
// q, k, v, output, attn_norm, gate, down, up, ffn_norm.
static int add_tensors(struct hx_gguf_writer *wr, struct conv *cv, const struct kn_weights *w,
                       int type, const char *path, char *err) {
    int rc;
    if ((rc = add_tensor(wr, cv, "token_embd.weight", &w->tok_embd, type, 0, path, err)) ||
        (rc = add_tensor(wr, cv, "output_norm.weight", &w->out_norm, KN_F32, 1, path, err)))
        return rc;
    if (!w->tied && (rc = add_tensor(wr, cv, "output.weight", &w->output, type, 0, path, err)))
        return rc;
    for (int l = 0; l < w->cfg.n_layers; l++) {
        const struct kn_layer_weights *L = &w->layers[l];
        const struct {
            const char *name;
            const struct kn_tensor *t;
            int norm;
        } list[] = {
            {"attn_q", &L->wq, 0},        {"attn_k", &L->wk, 0},       {"attn_v", &L->wv, 0},
            {"attn_output", &L->wo, 0},   {"attn_norm", &L->attn_norm, 1},
            {"ffn_gate", &L->w_gate, 0},  {"ffn_down", &L->w_down, 0}, {"ffn_up", &L->w_up, 0},
            {"ffn_norm", &L->ffn_norm, 1},
        };
        for (size_t i = 0; i < QP_ARRAY_LEN(list); i++) {
            char name[64];
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, list[i].name);
            rc = add_tensor(wr, cv, name, list[i].t, list[i].norm ? KN_F32 : type, list[i].norm,
                            path, err);
            if (rc) return rc;
        }
    }
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

// About 100 lines: validation, the header (key/values, tensor infos) and the temporary file are
// written in file order with one failure path (st_free / st_io_fail) that leaves no file behind.
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
    // Validate everything before creating the file.
    for (int64_t i = 0; i < n_tensors; i++) {
        const struct hx_gguf_stream_tensor *t = &tensors[i];
        s->sizes[i] = st_tensor_bytes(t);
        if (s->sizes[i] == 0) {
            int rc = qp_fail(err, QP_EINVAL, "cannot write '%s': tensor '%s' has a bad type or "
                             "shape", path, t->name ? t->name : "(null)");
            st_free(s);
            return rc;
        }
        for (int64_t j = 0; j < i; j++) {
            if (strcmp(tensors[j].name, t->name) == 0) {
                int rc = qp_fail(err, QP_EINVAL, "cannot write '%s': duplicate tensor '%s'",
                                 path, t->name);
                st_free(s);
                return rc;
            }
        }
        if (!(s->names[i] = strdup(t->name))) {
            st_free(s);
            return qp_fail(err, QP_ENOMEM, "cannot write '%s': out of memory", path);
        }
        if (__builtin_add_overflow(s->total, s->sizes[i], &s->total)) {
            st_free(s);
            return qp_fail(err, QP_EINVAL, "cannot write '%s': the tensors are too large", path);
        }
    }

    snprintf(s->tmp, plen + 16, "%s.tmp.XXXXXX", path);
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

    // Header: magic, version, counts, key/values, tensor infos, padding.
    st_put(s, "GGUF", 4);
    st_u32(s, 3);
    st_u64(s, (uint64_t)n_tensors);
    st_u64(s, (uint64_t)n_kv);
    for (int64_t i = 0; i < n_kv; i++) {
        const struct hx_gguf_kv *kv = &kvs[i];
        if (!kv->key) {
            hx_gguf_stream_abort(s);
            return qp_fail(err, QP_EINVAL, "cannot write '%s': key %lld has no name", path,
                           (long long)i);
        }
        st_str(s, kv->key, strlen(kv->key));
        st_u32(s, (uint32_t)kv->val.type);
        if (st_value(s, &kv->val, 1)) {
            hx_gguf_stream_abort(s);
            return qp_fail(err, QP_EINVAL, "cannot write '%s': key '%s' has a malformed value",
                           path, kv->key);
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
