// kn_engine.c — the forward pass of every family (kn_engine.h). Reads top to bottom: types,
// weight preparation, state, the block, the forward pass.
//
// Numerics follow llama2.c's run.c: RMSNorm as w * (x * 1/sqrt(mean(x^2) + eps)); RoPE on
// adjacent pairs with frequencies 1/theta^(2i/head_size) computed in float; attention scores
// divided by sqrt(head_size); SwiGLU as silu(gate) * up. Every dot product and sum has the fixed
// order kn_ops.h defines, so any ISA and any thread count give the same bits.
// The family variants (kn_model.h) follow llama.cpp's graphs at the golden commit: biases added
// after the product, before RoPE; rotate-half RoPE pairs (i, i + head/2); RoPE angles divided by
// the frequency factors and times the linear scale, cos/sin times the attention factor; Gemma 2's
// queries times attn_scale after RoPE, scores soft-capped before the softmax, post-norms on the
// block outputs before the residual add, embeddings times embd_scale, logits soft-capped; a
// sliding window keeps the last swa_window keys. The element-wise math beyond Llama's lives in
// kn_block.c (plain C: the same bits on every ISA).
#include "kn_engine.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>

#include "kn_block.h"
#include "kn_blocks.h"
#include "kn_cpu.h"
#include "kn_qdot.h"
#include "qp.h"

// ---------------------------------------------------------------------------------------------
// Types

#define KN_QBLOCK 32 // queries per attention task
#define KN_NCG 128   // own GEMM: output columns per task (a multiple of KN_NR; see kn_matmul)

struct kn_lin {
    int n_in, n_out;
    struct kn_tensor src; // the weights as stored (the own GEMM builds its panels from them)
    size_t src_row;       // bytes per stored row
    float *wp;       // own GEMM, prepacked: panels (ceil(n_out / KN_NR), n_in, KN_NR), 64-byte
                     // aligned; NULL when the engine streams (panels built per call, kn_panel)
    uint16_t *wp16;  // own GEMM on F16 weights, streaming with release_source: fp16 panels
                     // (ceil(n_out / KN_NR), n_in, KN_NR), 64-byte aligned, replacing src; else NULL
    uint8_t *wx;     // act=q8 with an x16 layout (kn_qdot.h): ceil(n_out / 16) groups of
                     // qt->x16_bytes(n_in), replacing src; else NULL
    const float *w;  // OpenBLAS GEMM: row-major (n_out, n_in), the tensor itself when F32
    float *w_owned;  // a converted copy backing w, or NULL
    const struct kn_qtype *qt; // packed path (act=q8): the weight type's dot product on src's
                               // rows, else NULL
    float act_scale;           // act_int8 == KN_ACT_INT8_TENSOR: the static scale of the input
};

struct kn_layer {
    const float *attn_norm, *ffn_norm; // (dim)
    const float *bq, *bk, *bv;         // (q_dim), (kv_dim), (kv_dim) or NULL
    const float *attn_post, *ffn_post; // (dim) or NULL
    struct kn_lin wq, wk, wv, wo, gate, up, down;
};

struct kn_engine {
    struct kn_config cfg;
    const struct kn_ops *ops;
    enum kn_gemm gemm;
    int act_q8;
    int act_int8; // kn_engine_opts.act_int8
    int stream;   // own GEMM: 1 = panels built per call from the stored weights, 0 = prepacked
    void (*release_source)(const void *p, size_t n); // kn_engine_opts's, during creation
    struct kn_tensor tok_embd; // (vocab, dim) as stored: rows are converted as tokens come
    const float *out_norm; // (dim)
    // RoPE frequency divisors (head_size / 2) or NULL: rope_freqs for every context, else
    // rope_short / rope_long chosen by the state's context (kn_state_create).
    const float *rope_freqs, *rope_short, *rope_long;
    // Soft-capped attention (kn_block.h): the FMA build with the AVX2/AVX-512 tables (same bits).
    void (*attend_capped)(float *out, const float *q, const float *kt, size_t kt_stride, const float *v,
                          int head_size, int n_keys, float cap, float *scratch);
    struct kn_layer *layers;
    struct kn_lin output;
    void **owned; // fp32 copies of non-F32 vectors, freed on destroy
    int n_owned;
};

struct kn_state {
    const struct kn_engine *e;
    int max_ctx, max_batch, n_threads, n_past;
    float *x;      // residual stream     (max_batch, dim)
    float *xb;     // normed input        (max_batch, dim)
    float *q;      // queries             (max_batch, q_dim)
    float *k;      // new keys            (max_batch, kv_dim)
    float *v;      // new values          (max_batch, kv_dim)
    float *mix;    // attention output    (max_batch, q_dim)
    float *proj;   // wo / w_down output  (max_batch, dim)
    float *hb;     // gate, then gated    (max_batch, hidden)
    float *hb2;    // up                  (max_batch, hidden)
    uint8_t *actq; // quantized activations for packed weights (max_batch, 2 * max(dim, hidden) bytes)
    size_t actq_stride;
    float *acti8;  // act_int8: fake-quantized input rows (max_batch, max(dim, hidden)), else NULL
    float *scores; // per thread          (n_threads, KN_QBLOCK, max_ctx rounded up to 16)
    float *xp;     // own GEMM: the input rows packed for gemm_xp (max_batch rounded up to the
                   //   table's xmr, max(dim, hidden)), 64-byte aligned
    float *pbuf;   // streaming engines, per thread: KN_NCG / KN_NR panels, then KN_NR dequantized
    size_t pbuf_stride; //   rows       (n_threads, (KN_NCG + KN_NR) * max(dim, hidden)) floats
    size_t scores_stride;
    float *kt;     // keys, transposed    (n_layers, n_kv_heads, head_size, max_ctx)
    float *vc;     // values              (n_layers, n_kv_heads, max_ctx, head_size)
    float *rope_cos, *rope_sin; // (max_ctx, head_size / 2)
};

// The widest row any linear reads or the activation buffers hold: dim, hidden_dim or q_dim.
static size_t kn_max_width(const struct kn_config *c) {
    return (size_t)QP_MAX(QP_MAX(c->dim, c->hidden_dim), kn_q_dim(c));
}

const char *kn_site_name(enum kn_site s) {
    static const char *names[KN_SITE_COUNT] = {"block_in", "attn_norm",     "attn_mix", "attn_out",
                                               "attn_post_norm", "ffn_norm", "ffn_act", "mlp_out",
                                               "ffn_post_norm",  "resid_out", "logits"};
    return (unsigned)s < KN_SITE_COUNT ? names[s] : "?";
}

int kn_site_used(const struct kn_config *c, enum kn_site s) {
    if (s == KN_SITE_ATTN_POST || s == KN_SITE_MLP_POST) return c->post_norms;
    return (unsigned)s < KN_SITE_COUNT;
}

int kn_site_width(const struct kn_config *c, enum kn_site s) {
    switch (s) {
    case KN_SITE_ATTN_MIX: return kn_q_dim(c);
    case KN_SITE_FFN_ACT: return c->hidden_dim;
    case KN_SITE_LOGITS: return c->vocab_size;
    default: return c->dim;
    }
}

// ---------------------------------------------------------------------------------------------
// Weight preparation

// Row r of t as fp32 (n = t->ne0 floats) for any type with a dequantizer.
static void kn_row_f32(const struct kn_tensor *t, int64_t r, float *out) {
    size_t rb = kn_row_bytes(t->type, t->ne0);
    kn_dequantize_row(t->type, (const uint8_t *)t->data + (size_t)r * rb, out, t->ne0);
}

// Asks for transparent huge pages over the 2 MiB-aligned inside of a large buffer (best effort:
// where THP is "madvise" this turns 512 page faults into one while the copy is written, and
// decoding streams the buffer with fewer TLB misses). Changes no byte.
static void kn_hugepages(void *p, size_t n) {
#ifdef MADV_HUGEPAGE
    const uintptr_t huge = (uintptr_t)2 << 20, lo = ((uintptr_t)p + huge - 1) & ~(huge - 1);
    const uintptr_t hi = ((uintptr_t)p + n) & ~(huge - 1);
    if (hi > lo) (void)madvise((void *)lo, hi - lo, MADV_HUGEPAGE);
#else
    (void)p, (void)n;
#endif
}

// The engine's own copy of a stored matrix in the layout decoding reads (kn_engine_opts
// release_source): fp16 panels for F16 weights that would stream, the x16 layout for act=q8
// types that have one; then the stored matrix's pages go. Otherwise nothing (src is read).
static int kn_lin_own_layout(struct kn_lin *l, const struct kn_engine *e, const char *name, char *err) {
    if (!e->release_source) return 0;
    const size_t bytes = l->src_row * (size_t)l->n_out;
    if (l->qt && l->qt->x16_pack) {
        const size_t gb = l->qt->x16_bytes(l->n_in);
        if (!(l->wx = qp_alloc_array((size_t)(l->n_out + 15) / 16, gb)))
            return qp_fail(err, QP_ENOMEM, "out of memory laying out %s", name);
        kn_hugepages(l->wx, (size_t)(l->n_out + 15) / 16 * gb);
        l->qt->x16_pack(l->src.data, l->src_row, l->n_out, l->n_in, l->wx);
    } else if (!l->qt && l->src.type == KN_F16 && e->gemm == KN_GEMM_OWN) {
        const size_t n_panels = (size_t)(l->n_out + KN_NR - 1) / KN_NR;
        if (!(l->wp16 = qp_alloc_array(n_panels * l->n_in, KN_NR * sizeof(uint16_t))))
            return qp_fail(err, QP_ENOMEM, "out of memory packing %s", name);
        kn_hugepages(l->wp16, n_panels * l->n_in * KN_NR * sizeof(uint16_t));
        kn_f16_panels_pack(l->src.data, (size_t)l->n_in, l->n_out, l->n_in, l->wp16);
    } else {
        return 0;
    }
    e->release_source(l->src.data, bytes);
    return 0;
}

static int kn_lin_init(struct kn_lin *l, const struct kn_tensor *t, const struct kn_engine *e,
                       const char *name, char *err) {
    l->n_in = (int)t->ne0;
    l->n_out = (int)t->ne1;
    l->src = *t;
    l->src_row = kn_row_bytes(t->type, t->ne0);
    if (e->act_q8 && (l->qt = kn_qtype_for_isa(t->type, e->ops->name)) != NULL) // runs on the blocks
        return kn_lin_own_layout(l, e, name, err);
    if (!kn_type_has_dequant(t->type)) {
        const struct kn_type_info *ti = kn_type_info(t->type);
        return qp_fail(err, QP_ENOTSUP, "tensor %s has type %s, which qprobe cannot run",
                       name, ti ? ti->name : "?");
    }
    float *row = qp_alloc_array((size_t)l->n_in, sizeof(float));
    if (!row) return qp_fail(err, QP_ENOMEM, "out of memory packing %s", name);
    if (e->gemm == KN_GEMM_BLAS) {
        if (t->type == KN_F32) {
            l->w = t->data;
        } else {
            l->w_owned = qp_alloc_array((size_t)l->n_in * l->n_out, sizeof(float));
            if (!l->w_owned) {
                qp_free(row);
                return qp_fail(err, QP_ENOMEM, "out of memory converting %s", name);
            }
            for (int j = 0; j < l->n_out; j++) kn_row_f32(t, j, l->w_owned + (size_t)j * l->n_in);
            l->w = l->w_owned;
        }
        qp_free(row);
        return 0;
    }
    if (e->stream) {
        qp_free(row);
        return kn_lin_own_layout(l, e, name, err);
    }
    int n_panels = (l->n_out + KN_NR - 1) / KN_NR;
    l->wp = qp_calloc_array((size_t)n_panels * l->n_in, KN_NR * sizeof(float));
    if (!l->wp) {
        qp_free(row);
        return qp_fail(err, QP_ENOMEM, "out of memory packing %s", name);
    }
    for (int j = 0; j < l->n_out; j++) {
        float *dst = l->wp + (size_t)(j / KN_NR) * l->n_in * KN_NR + j % KN_NR;
        kn_row_f32(t, j, row);
        for (int k = 0; k < l->n_in; k++) dst[(size_t)k * KN_NR] = row[k];
    }
    qp_free(row);
    return 0;
}

// A fp32 view of a plain tensor: the data itself when F32, else a converted copy.
static int kn_f32_view(struct kn_engine *e, const struct kn_tensor *t, const char *name,
                       const float **out, char *err) {
    if (!kn_type_has_dequant(t->type))
        return qp_fail(err, QP_ENOTSUP, "tensor %s has a type qprobe cannot read", name);
    if (t->type == KN_F32) {
        *out = t->data;
        return 0;
    }
    int64_t n = t->ne0 * t->ne1;
    float *buf = qp_alloc_array((size_t)n, sizeof(float));
    if (!buf) return qp_fail(err, QP_ENOMEM, "out of memory converting %s", name);
    for (int64_t r = 0; r < t->ne1; r++) kn_row_f32(t, r, buf + r * t->ne0);
    e->owned[e->n_owned++] = buf;
    *out = buf;
    return 0;
}

// Prepacked panels are a fp32 copy of every matrix: fastest when few rows go through at a time
// (decoding, task continuations), but four bytes per weight on top of the model. Models whose
// panels fit in KN_PREPACK_MAX bytes get them; larger ones stream. QPROBE_PANELS=prepack|stream
// overrides. Both give the same bits.
#define KN_PREPACK_MAX ((int64_t)256 << 20)

// kn_engine_defaults: the program's choices (written once before engines are made).
static enum kn_gemm kn_default_gemm = KN_GEMM_OWN;
static enum kn_panels kn_default_panels = KN_PANELS_AUTO;

void kn_engine_defaults(enum kn_gemm gemm, enum kn_panels panels) {
    kn_default_gemm = gemm;
    kn_default_panels = panels;
}

char *kn_engine_kernels(const struct kn_engine *e, char *buf, size_t size) {
    size_t at = 0;
#define KN_PUT(...) at += (size_t)snprintf(buf + at, at < size ? size - at : 0, __VA_ARGS__)
    KN_PUT("ops %s (gemm %s", e->ops->name, e->gemm == KN_GEMM_OWN ? "own" : "openblas");
    if (e->gemm == KN_GEMM_OWN) KN_PUT(" %dx%d %s", e->ops->xmr, KN_NCG, e->stream ? "streamed" : "prepacked");
    if (e->output.wp16 || (e->cfg.n_layers > 0 && e->layers[0].wq.wp16)) KN_PUT(", gemv f16 panels");
    KN_PUT(", attention, norms)");
    // the act=q8 kernels, one entry per weight type in the order of first use
    const struct kn_qtype *seen[16];
    int n_seen = 0;
    for (int l = -1; l < e->cfg.n_layers; l++) {
        const struct kn_layer *ly = l >= 0 ? &e->layers[l] : NULL;
        const struct kn_lin *lins[] = {l < 0 ? &e->output : &ly->wq, l < 0 ? NULL : &ly->wk, l < 0 ? NULL : &ly->wv,
                                       l < 0 ? NULL : &ly->wo, l < 0 ? NULL : &ly->gate, l < 0 ? NULL : &ly->up,
                                       l < 0 ? NULL : &ly->down};
        for (size_t i = 0; i < QP_ARRAY_LEN(lins); i++) {
            const struct kn_qtype *qt = lins[i] ? lins[i]->qt : NULL;
            int known = !qt;
            for (int k = 0; k < n_seen && !known; k++) known = seen[k] == qt;
            if (known || n_seen == (int)QP_ARRAY_LEN(seen)) continue;
            seen[n_seen++] = qt;
            KN_PUT("%s %s %s%s", n_seen == 1 ? "; q8" : ",", kn_type_info(qt->wtype)->name, qt->isa,
                   lins[i]->wx ? " x16" : "");
        }
    }
#undef KN_PUT
    if (size) buf[at < size ? at : size - 1] = 0;
    return buf;
}

int kn_gemm_parse(const char *name, enum kn_gemm *out) {
    if (!name || !*name || strcmp(name, "own") == 0) *out = KN_GEMM_OWN;
    else if (strcmp(name, "blas") == 0) *out = KN_GEMM_BLAS;
    else return QP_EINVAL;
    return 0;
}

int kn_panels_parse(const char *name, enum kn_panels *out) {
    if (!name || !*name) *out = KN_PANELS_AUTO;
    else if (strcmp(name, "prepack") == 0) *out = KN_PANELS_PREPACK;
    else if (strcmp(name, "stream") == 0) *out = KN_PANELS_STREAM;
    else return QP_EINVAL;
    return 0;
}

static int kn_stream_choice(const struct kn_weights *w) {
    const struct kn_config *c = &w->cfg;
    int64_t kv = kn_kv_dim(c), qd = kn_q_dim(c), r16 = KN_NR;
#define KN_PANEL_BYTES(out, in) ((((int64_t)(out) + r16 - 1) / r16) * r16 * (int64_t)(in) * 4)
    int64_t per_layer = KN_PANEL_BYTES(qd, c->dim) + KN_PANEL_BYTES(c->dim, qd) + 2 * KN_PANEL_BYTES(kv, c->dim) +
                        2 * KN_PANEL_BYTES(c->hidden_dim, c->dim) + KN_PANEL_BYTES(c->dim, c->hidden_dim);
    int64_t total = per_layer * c->n_layers + KN_PANEL_BYTES(c->vocab_size, c->dim);
#undef KN_PANEL_BYTES
    if (kn_default_panels == KN_PANELS_AUTO) return total > KN_PREPACK_MAX;
    return kn_default_panels == KN_PANELS_STREAM;
}

// The optional vectors of layer l (biases, post-norms) as fp32 views, NULL where the family has none.
static int kn_layer_vectors(struct kn_engine *e, const struct kn_layer_weights *lw, struct kn_layer *ly, int l,
                            char *err) {
    const struct kn_config *c = &e->cfg;
    const struct {
        const struct kn_tensor *t;
        const float **dst;
        const char *tag;
        int want;
    } v[] = {
        {&lw->bq, &ly->bq, "attn_q.bias", c->has_qkv_bias},
        {&lw->bk, &ly->bk, "attn_k.bias", c->has_qkv_bias},
        {&lw->bv, &ly->bv, "attn_v.bias", c->has_qkv_bias},
        {&lw->attn_post_norm, &ly->attn_post, "post_attention_norm", c->post_norms},
        {&lw->ffn_post_norm, &ly->ffn_post, "post_ffw_norm", c->post_norms},
    };
    char name[64];
    for (size_t i = 0; i < QP_ARRAY_LEN(v); i++) {
        *v[i].dst = NULL;
        if (!v[i].want) continue;
        snprintf(name, sizeof name, "blk.%d.%s", l, v[i].tag);
        int rc = kn_f32_view(e, v[i].t, name, v[i].dst, err);
        if (rc) return rc;
    }
    return 0;
}

// Layer l's norms, optional vectors and linears (and W8A8's static scales from act_scales).
static int kn_layer_prep(struct kn_engine *e, const struct kn_layer_weights *lw, int l, const float *act_scales,
                         char *err) {
    struct kn_layer *ly = &e->layers[l];
    const struct {
        struct kn_lin *dst;
        const struct kn_tensor *src;
        const char *tag;
    } lins[] = {{&ly->wq, &lw->wq, "attn_q"},          {&ly->wk, &lw->wk, "attn_k"},
                {&ly->wv, &lw->wv, "attn_v"},          {&ly->wo, &lw->wo, "attn_output"},
                {&ly->gate, &lw->w_gate, "ffn_gate"},  {&ly->up, &lw->w_up, "ffn_up"},
                {&ly->down, &lw->w_down, "ffn_down"}};
    char name[64];
    snprintf(name, sizeof name, "blk.%d.attn_norm", l);
    int rc = kn_f32_view(e, &lw->attn_norm, name, &ly->attn_norm, err);
    if (!rc) {
        snprintf(name, sizeof name, "blk.%d.ffn_norm", l);
        rc = kn_f32_view(e, &lw->ffn_norm, name, &ly->ffn_norm, err);
    }
    if (!rc) rc = kn_layer_vectors(e, lw, ly, l, err);
    for (size_t i = 0; i < QP_ARRAY_LEN(lins) && !rc; i++) {
        snprintf(name, sizeof name, "blk.%d.%s", l, lins[i].tag);
        rc = kn_lin_init(lins[i].dst, lins[i].src, e, name, err);
    }
    if (!rc && e->act_int8 == KN_ACT_INT8_TENSOR) {
        const float *sc = act_scales + (size_t)l * KN_LIN_IN_COUNT;
        ly->wq.act_scale = ly->wk.act_scale = ly->wv.act_scale = sc[KN_LIN_IN_ATTN];
        ly->wo.act_scale = sc[KN_LIN_IN_ATTN_MIX];
        ly->gate.act_scale = ly->up.act_scale = sc[KN_LIN_IN_FFN];
        ly->down.act_scale = sc[KN_LIN_IN_FFN_ACT];
    }
    return rc;
}

int kn_engine_create(const struct kn_weights *w, const struct kn_ops *ops, struct kn_engine **out,
                     char *err) {
    struct kn_engine_opts o = {.ops = ops};
    return kn_engine_create_opts(w, &o, out, err);
}

int kn_engine_create_opts(const struct kn_weights *w, const struct kn_engine_opts *o,
                          struct kn_engine **out, char *err) {
    *out = NULL;
    const struct kn_ops *ops = o->ops;
    int rc = kn_weights_check(w, err);
    if (rc) return rc;
    if (!ops) ops = kn_ops_best();
    struct kn_engine *e = qp_calloc_array(1, sizeof *e);
    if (!e) return qp_fail(err, QP_ENOMEM, "out of memory");
    e->cfg = w->cfg;
    e->ops = ops;
    e->act_q8 = o->act_q8;
    e->act_int8 = o->act_int8;
    if (o->act_int8 < KN_ACT_INT8_OFF || o->act_int8 > KN_ACT_INT8_TENSOR) {
        qp_free(e);
        return qp_fail(err, QP_EINVAL, "act_int8 = %d is not 0 (off), 1 (per token) or 2 (per tensor)", o->act_int8);
    }
    if (o->act_int8 == KN_ACT_INT8_TENSOR) {
        int bad = !o->act_scales;
        for (int i = 0; !bad && i < w->cfg.n_layers * KN_LIN_IN_COUNT; i++)
            bad = !(isfinite(o->act_scales[i]) && o->act_scales[i] >= 0);
        if (bad) {
            qp_free(e);
            return qp_fail(err, QP_EINVAL, "static int8 activations need a finite scale >= 0 for every linear input");
        }
    }
    e->gemm = kn_default_gemm;
    if (e->gemm == KN_GEMM_BLAS) openblas_set_num_threads(1); // threads are ours (kn_matmul)
    int L = w->cfg.n_layers;
    e->layers = qp_calloc_array((size_t)L, sizeof *e->layers);
    e->owned = qp_calloc_array((size_t)(7 * L + 4), sizeof(void *)); // every vector a layer and the model have
    if (!e->layers || !e->owned) {
        kn_engine_destroy(e);
        return qp_fail(err, QP_ENOMEM, "out of memory");
    }
    e->stream = kn_stream_choice(w);
    e->release_source = o->release_source;
    if (!kn_type_has_dequant(w->tok_embd.type)) rc = qp_fail(err, QP_ENOTSUP, "tensor token_embd has a type qprobe cannot read");
    e->tok_embd = w->tok_embd;
    if (!rc) rc = kn_f32_view(e, &w->out_norm, "output_norm", &e->out_norm, err);
    if (!rc) rc = kn_lin_init(&e->output, &w->output, e, "output", err);
    // (the rope factors are F32, kn_weights_check says so)
    e->rope_freqs = w->rope_freqs.data;
    e->rope_short = w->rope_short.data;
    e->rope_long = w->rope_long.data;
    e->attend_capped = strcmp(ops->name, "ref") == 0 ? kn_attend_capped_ref : kn_attend_capped_avx2;
    for (int l = 0; l < L && !rc; l++) rc = kn_layer_prep(e, &w->layers[l], l, o->act_scales, err);
    e->release_source = NULL; // the caller's, not kept
    if (rc) {
        kn_engine_destroy(e);
        return rc;
    }
    *out = e;
    return 0;
}

static void kn_lin_free(struct kn_lin *l) {
    qp_free(l->wp);
    qp_free(l->wp16);
    qp_free(l->wx);
    qp_free(l->w_owned);
}

void kn_engine_destroy(struct kn_engine *e) {
    if (!e) return;
    if (e->layers) {
        for (int l = 0; l < e->cfg.n_layers; l++) {
            struct kn_layer *ly = &e->layers[l];
            struct kn_lin *lins[] = {&ly->wq, &ly->wk, &ly->wv, &ly->wo, &ly->gate, &ly->up, &ly->down};
            for (size_t i = 0; i < QP_ARRAY_LEN(lins); i++) kn_lin_free(lins[i]);
        }
    }
    kn_lin_free(&e->output);
    for (int i = 0; i < e->n_owned; i++) qp_free(e->owned[i]);
    qp_free(e->owned);
    qp_free(e->layers);
    qp_free(e);
}

const struct kn_config *kn_engine_config(const struct kn_engine *e) { return &e->cfg; }
const struct kn_ops *kn_engine_ops(const struct kn_engine *e) { return e->ops; }

enum kn_gemm kn_engine_gemm(const struct kn_engine *e) { return e->gemm; }

const char *kn_engine_panels(const struct kn_engine *e) {
    return e->gemm != KN_GEMM_OWN ? "none" : e->stream ? "streamed" : "prepacked";
}

const char *kn_gemm_name(enum kn_gemm g) {
    static char buf[96];
    if (g == KN_GEMM_OWN) return "own";
    snprintf(buf, sizeof buf, "openblas (%s)", openblas_get_corename());
    return buf;
}

const char *kn_blas_coretype_fix(int has_avx512, const char *corename, const char *env) {
    static const char *const avx512_cores[] = {"SkylakeX", "Cooperlake", "SapphireRapids"};
    if (!has_avx512 || (env && *env) || !corename) return NULL;
    for (size_t i = 0; i < QP_ARRAY_LEN(avx512_cores); i++)
        if (strcasecmp(corename, avx512_cores[i]) == 0) return NULL;
    return "SkylakeX";
}

const char *kn_blas_coretype_needed(const char *env) {
    return kn_blas_coretype_fix(kn_cpu()->avx512, openblas_get_corename(), env);
}

// ---------------------------------------------------------------------------------------------
// State

// RoPE tables as llama2.c computes them: in float, freq = 1 / theta^(2i / head_size), angle
// pos * freq. The family variants as llama.cpp's rope: the angle divided by the frequency factor
// (Llama 3's rope_freqs; Phi-3's rope_long when the context exceeds rope_ctx_orig, as llama.cpp
// chooses by its context size, else rope_short), times the linear scale; cos and sin times the
// attention factor. Without any of them the tables are llama2.c's, bit for bit.
void kn_rope_tables_fill(const struct kn_config *c, const float *freqs, const float *fshort, const float *flong,
                         int n_ctx, float *cos_out, float *sin_out) {
    size_t half = (size_t)c->head_size / 2;
    int ctx_orig = c->rope_ctx_orig > 0 ? c->rope_ctx_orig : c->seq_len;
    const float *ff = freqs ? freqs : n_ctx > ctx_orig && flong ? flong : fshort;
    float fscale = c->rope_freq_scale > 0 ? c->rope_freq_scale : 1.0f;
    float mscale = c->rope_attn_factor > 0 ? c->rope_attn_factor : 1.0f;
    for (int pos = 0; pos < n_ctx; pos++) {
        for (size_t i = 0; i < half; i++) {
            float freq = 1.0f / powf(c->rope_theta, (float)(2 * i) / (float)c->head_size);
            float val = (float)pos * freq;
            if (ff) val = val / ff[i];
            if (fscale != 1.0f) val = val * fscale;
            float co = cosf(val), si = sinf(val);
            if (mscale != 1.0f) co *= mscale, si *= mscale;
            cos_out[(size_t)pos * half + i] = co;
            sin_out[(size_t)pos * half + i] = si;
        }
    }
}

int kn_state_create(const struct kn_engine *e, int max_ctx, int max_batch, int n_threads,
                    struct kn_state **out, char *err) {
    *out = NULL;
    const struct kn_config *c = &e->cfg;
    if (max_ctx <= 0 || max_ctx > (1 << 20) || max_batch <= 0 || max_batch > max_ctx)
        return qp_fail(err, QP_EINVAL, "context %d / batch %d out of range", max_ctx, max_batch);
    if (n_threads < 1) n_threads = 1;
    struct kn_state *s = qp_calloc_array(1, sizeof *s);
    if (!s) return qp_fail(err, QP_ENOMEM, "out of memory");
    s->e = e;
    s->max_ctx = max_ctx;
    s->max_batch = max_batch;
    s->n_threads = n_threads;
    size_t B = (size_t)max_batch, dim = (size_t)c->dim, hid = (size_t)c->hidden_dim;
    size_t kv_dim = (size_t)kn_kv_dim(c), q_dim = (size_t)kn_q_dim(c), wmax = kn_max_width(c);
    size_t cache = (size_t)c->n_layers * kv_dim * (size_t)max_ctx;
    s->scores_stride = ((size_t)max_ctx + 15) & ~(size_t)15;
    s->x = qp_alloc_array(B * dim, sizeof(float));
    s->xb = qp_alloc_array(B * dim, sizeof(float));
    s->q = qp_alloc_array(B * q_dim, sizeof(float));
    s->k = qp_alloc_array(B * kv_dim, sizeof(float));
    s->v = qp_alloc_array(B * kv_dim, sizeof(float));
    s->mix = qp_alloc_array(B * q_dim, sizeof(float));
    s->proj = qp_alloc_array(B * dim, sizeof(float));
    s->hb = qp_alloc_array(B * hid, sizeof(float));
    s->hb2 = qp_alloc_array(B * hid, sizeof(float));
    s->actq_stride = 2 * wmax + 512; // >= any q8 activation row (at most 1.15 B/elem)
    s->actq = qp_alloc_array(B, s->actq_stride);
    if (e->act_int8 && !(s->acti8 = qp_alloc_array(B * wmax, sizeof(float)))) {
        kn_state_destroy(s);
        return qp_fail(err, QP_ENOMEM, "out of memory for a context of %d tokens", max_ctx);
    }
    s->scores = qp_alloc_array((size_t)n_threads * KN_QBLOCK * s->scores_stride, sizeof(float));
    if (e->gemm == KN_GEMM_OWN) {
        size_t xmr = (size_t)e->ops->xmr;
        if (!(s->xp = qp_alloc_array((B + xmr - 1) / xmr * xmr * wmax, sizeof(float)))) {
            kn_state_destroy(s);
            return qp_fail(err, QP_ENOMEM, "out of memory for a context of %d tokens", max_ctx);
        }
    }
    if (e->stream && e->gemm == KN_GEMM_OWN) {
        s->pbuf_stride = (size_t)(KN_NCG + KN_NR) * wmax;
        if (!(s->pbuf = qp_alloc_array((size_t)n_threads * s->pbuf_stride, sizeof(float)))) {
            kn_state_destroy(s);
            return qp_fail(err, QP_ENOMEM, "out of memory for panel buffers");
        }
    }
    s->kt = qp_alloc_array(cache, sizeof(float));
    s->vc = qp_alloc_array(cache, sizeof(float));
    size_t half = (size_t)c->head_size / 2;
    s->rope_cos = qp_alloc_array((size_t)max_ctx * half, sizeof(float));
    s->rope_sin = qp_alloc_array((size_t)max_ctx * half, sizeof(float));
    if (!s->x || !s->xb || !s->q || !s->k || !s->v || !s->mix || !s->proj || !s->hb || !s->hb2 || !s->actq ||
        !s->scores || !s->kt || !s->vc || !s->rope_cos || !s->rope_sin) {
        kn_state_destroy(s);
        return qp_fail(err, QP_ENOMEM, "out of memory for a context of %d tokens", max_ctx);
    }
    kn_rope_tables_fill(c, e->rope_freqs, e->rope_short, e->rope_long, max_ctx, s->rope_cos, s->rope_sin);
    *out = s;
    return 0;
}

void kn_state_destroy(struct kn_state *s) {
    if (!s) return;
    qp_free(s->x);
    qp_free(s->xb);
    qp_free(s->q);
    qp_free(s->k);
    qp_free(s->v);
    qp_free(s->mix);
    qp_free(s->proj);
    qp_free(s->hb);
    qp_free(s->hb2);
    qp_free(s->actq);
    qp_free(s->acti8);
    qp_free(s->scores);
    qp_free(s->pbuf);
    qp_free(s->xp);
    qp_free(s->kt);
    qp_free(s->vc);
    qp_free(s->rope_cos);
    qp_free(s->rope_sin);
    qp_free(s);
}

void kn_state_reset(struct kn_state *s) { s->n_past = 0; }

void kn_state_rewind(struct kn_state *s, int n_past) {
    QP_ASSERT(n_past >= 0 && n_past <= s->n_past);
    s->n_past = n_past;
}

// ---------------------------------------------------------------------------------------------
// The block

// act_int8 (kn_engine_opts): x (n rows of width) fake-quantized to int8 into s->acti8, per row
// (dynamic) or with the linear's static scale (KN_ACT_INT8_TENSOR).
static const float *kn_act_int8(const struct kn_state *s, const struct kn_lin *lin, const float *x, int n,
                                int width) {
    if (s->e->act_int8 == KN_ACT_INT8_TENSOR) {
        float scale = lin->act_scale;
        for (size_t k = 0; k < (size_t)n * width; k++) {
            float q = scale > 0 ? rintf(x[k] / scale) : 0.0f;
            q = q > 127.0f ? 127.0f : q < -127.0f ? -127.0f : q; // (a NaN input stays NaN)
            s->acti8[k] = q * scale;
        }
        return s->acti8;
    }
    for (int r = 0; r < n; r++) {
        const float *xr = x + (size_t)r * width;
        float *yr = s->acti8 + (size_t)r * width, amax = 0;
        for (int k = 0; k < width; k++) amax = fmaxf(amax, fabsf(xr[k]));
        float scale = amax / 127.0f;
        for (int k = 0; k < width; k++) yr[k] = amax > 0 ? rintf(xr[k] / scale) * scale : 0.0f;
    }
    return s->acti8;
}

// The panel of output columns c0 .. c0+nc-1 (nc <= KN_NR) from the stored rows: fp32 and fp16
// rows are packed directly, other types dequantized into rows (KN_NR * n_in floats) first.
static void kn_panel(const struct kn_ops *ops, const struct kn_lin *lin, int c0, int nc, float *panel,
                     float *rows) {
    if (lin->wp16) { // the engine's fp16 panels (release_source)
        ops->f16_to_f32(lin->wp16 + (size_t)(c0 / KN_NR) * lin->n_in * KN_NR, (size_t)lin->n_in * KN_NR, panel);
        return;
    }
    const uint8_t *src = (const uint8_t *)lin->src.data + (size_t)c0 * lin->src_row;
    switch (lin->src.type) {
    case KN_F32:
        ops->pack_f32((const float *)src, (size_t)lin->n_in, nc, lin->n_in, panel);
        return;
    case KN_F16:
        ops->pack_f16((const uint16_t *)src, (size_t)lin->n_in, nc, lin->n_in, panel);
        return;
    default:
        for (int r = 0; r < nc; r++)
            ops->dequant_row(lin->src.type, src + (size_t)r * lin->src_row, rows + (size_t)r * lin->n_in,
                             lin->n_in);
        ops->pack_f32(rows, (size_t)lin->n_in, nc, lin->n_in, panel);
    }
}

// The share [*i0, *i1) of n items that this thread of an OpenMP team takes (contiguous ranges).
static void kn_thread_share(int n, int *i0, int *i1) {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    *i0 = (int)((int64_t)n * t / nt);
    *i1 = (int)((int64_t)n * (t + 1) / nt);
}

// Decoding on fp16 panels: n <= KN_GEMV_ROWS rows, each thread one gemv_f16 call over its
// contiguous share of the panels (the weights stream from memory once).
static void kn_gemv(const struct kn_state *s, const struct kn_lin *lin, const float *x, float *y, int n) {
    const int n_panels = (lin->n_out + KN_NR - 1) / KN_NR;
#pragma omp parallel num_threads(s->n_threads) if (s->n_threads > 1)
    {
        int p0, p1;
        kn_thread_share(n_panels, &p0, &p1);
        if (p1 > p0)
            s->e->ops->gemv_f16(x, (size_t)lin->n_in, n, lin->wp16 + (size_t)p0 * lin->n_in * KN_NR, lin->n_in,
                                QP_MIN(lin->n_out, p1 * KN_NR) - p0 * KN_NR, y + (size_t)p0 * KN_NR, (size_t)lin->n_out);
    }
}

// act=q8 on the x16 layout (kn_qdot.h): the rows quantized once (split over threads); one row
// (decoding): each thread one x16_dot call over its contiguous share of the 16-row groups; more
// rows: tiles of a group x QTILE rows, groups split over threads. Every output is qt->dot's bits.
static void kn_matmul_x16(const struct kn_state *s, const struct kn_lin *lin, const float *x, float *y, int n) {
    enum { QTILE = 64 };
    const struct kn_qtype *qt = lin->qt;
    const size_t gb = qt->x16_bytes(lin->n_in), as = s->actq_stride;
    const int n_groups = (lin->n_out + 15) / 16;
#pragma omp parallel num_threads(s->n_threads) if (s->n_threads > 1)
    {
#pragma omp for schedule(static)
        for (int r = 0; r < n; r++) qt->quantize_act(x + (size_t)r * lin->n_in, s->actq + (size_t)r * as, lin->n_in);
        // (the implicit barrier above: every row is quantized before any dot product)
        if (n == 1) {
            int g0, g1;
            kn_thread_share(n_groups, &g0, &g1);
            if (g1 > g0)
                qt->x16_dot(lin->wx + (size_t)g0 * gb, QP_MIN(lin->n_out, 16 * g1) - 16 * g0, s->actq, as, 1,
                            lin->n_in, y + (size_t)16 * g0, (size_t)lin->n_out);
        } else {
            for (int r0 = 0; r0 < n; r0 += QTILE) {
#pragma omp for schedule(static) nowait
                for (int g = 0; g < n_groups; g++)
                    qt->x16_dot(lin->wx + (size_t)g * gb, QP_MIN(16, lin->n_out - 16 * g), s->actq + (size_t)r0 * as,
                                as, QP_MIN(QTILE, n - r0), lin->n_in, y + (size_t)r0 * lin->n_out + 16 * g,
                                (size_t)lin->n_out);
            }
        }
    }
}

// act=q8 on the stored blocks: the n activation rows are quantized once (rows split over
// threads), then the outputs go in tiles of QGROUP weight rows (split over threads) x QTILE
// activation rows: the kernel unpacks a few weight rows once for a whole tile, and a tile's
// activations stay in cache for every group. Every output is qt->dot of its weight row and
// activation row, bit for bit (dot_tile, kn_qdot.h), whichever thread computes it.
static void kn_matmul_q8(const struct kn_state *s, const struct kn_lin *lin, const float *x, float *y, int n) {
    enum { QGROUP = 16, QTILE = 64 };
    const struct kn_qtype *qt = lin->qt;
    if (n == 1) { // one token (decoding): one-row dot products, rows over threads; a tile
                  // would unpack 16 weight rows for a single activation row
        qt->quantize_act(x, s->actq, lin->n_in);
#pragma omp parallel for num_threads(s->n_threads) schedule(static) if (s->n_threads > 1)
        for (int j = 0; j < lin->n_out; j++)
            y[j] = qt->dot((const uint8_t *)lin->src.data + (size_t)j * lin->src_row, s->actq, lin->n_in);
        return;
    }
    const int n_groups = (lin->n_out + QGROUP - 1) / QGROUP;
#pragma omp parallel num_threads(s->n_threads) if (s->n_threads > 1)
    {
#pragma omp for schedule(static)
        for (int r = 0; r < n; r++)
            qt->quantize_act(x + (size_t)r * lin->n_in, s->actq + (size_t)r * s->actq_stride, lin->n_in);
        // (the implicit barrier above: every row is quantized before any dot product)
        for (int r0 = 0; r0 < n; r0 += QTILE) {
            const int na = QP_MIN(QTILE, n - r0);
#pragma omp for schedule(static) nowait
            for (int g = 0; g < n_groups; g++) {
                const int j0 = g * QGROUP, m = QP_MIN(QGROUP, lin->n_out - j0);
                qt->dot_tile((const uint8_t *)lin->src.data + (size_t)j0 * lin->src_row, lin->src_row, m,
                             s->actq + (size_t)r0 * s->actq_stride, s->actq_stride, na, lin->n_in,
                             y + (size_t)r0 * lin->n_out + j0, (size_t)lin->n_out);
            }
        }
    }
}

// OpenBLAS: output columns split over threads, one sgemm each.
static void kn_matmul_blas(const struct kn_state *s, const struct kn_lin *lin, const float *x, float *y, int n) {
    const int n_panels = (lin->n_out + KN_NR - 1) / KN_NR;
    const int parts = s->n_threads > 1 && n_panels >= 2 ? QP_MIN(s->n_threads, n_panels) : 1;
#pragma omp parallel for num_threads(parts) schedule(static) if (parts > 1)
    for (int p = 0; p < parts; p++) {
        int c0 = (int)((int64_t)n_panels * p / parts) * KN_NR;
        int c1 = QP_MIN((int)((int64_t)n_panels * (p + 1) / parts) * KN_NR, lin->n_out);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, c1 - c0, lin->n_in, 1.0f, x, lin->n_in,
                    lin->w + (size_t)c0 * lin->n_in, lin->n_in, 0.0f, y + c0, lin->n_out);
    }
}

// y (n, lin->n_out) = x (n, lin->n_in) . W^T, columns split over threads by panel. Decoding
// layouts first (the x16 tiles for any n: they are the stored tiles without the transposes; fp16
// panels for up to KN_GEMV_ROWS rows, beyond which the GEMM on converted panels is faster).
static void kn_matmul(const struct kn_state *s, const struct kn_lin *lin, const float *x, float *y,
                      int n) {
    if (s->acti8 && lin != &s->e->output) x = kn_act_int8(s, lin, x, n, lin->n_in);
    const struct kn_ops *ops = s->e->ops;
    if (lin->wx || lin->qt || s->e->gemm == KN_GEMM_BLAS || (lin->wp16 && n <= KN_GEMV_ROWS)) {
        if (lin->wx) kn_matmul_x16(s, lin, x, y, n);
        else if (lin->qt) kn_matmul_q8(s, lin, x, y, n);
        else if (s->e->gemm == KN_GEMM_BLAS) kn_matmul_blas(s, lin, x, y, n);
        else kn_gemv(s, lin, x, y, n);
        return;
    }
    // The own GEMM: the n input rows are packed once (row blocks split over threads), then column
    // groups of KN_NCG outputs go over threads; a streaming engine first builds the group's
    // panels in the thread's buffer. Every output is the same fma chain whoever computes it.
    const int xmr = ops->xmr, n_blocks = (n + xmr - 1) / xmr, n_groups = (lin->n_out + KN_NCG - 1) / KN_NCG;
    const size_t bstride = (size_t)xmr * lin->n_in, pstride = (size_t)KN_NR * lin->n_in;
#pragma omp parallel num_threads(s->n_threads) if (s->n_threads > 1)
    {
#pragma omp for schedule(static)
        for (int b = 0; b < n_blocks; b++)
            ops->pack_x(x + (size_t)b * bstride, (size_t)lin->n_in, QP_MIN(xmr, n - b * xmr), lin->n_in,
                        s->xp + (size_t)b * bstride);
        // (the implicit barrier above: every row is packed before any product)
#pragma omp for schedule(static)
        for (int g = 0; g < n_groups; g++) {
            const int c0 = g * KN_NCG, nc = QP_MIN(KN_NCG, lin->n_out - c0);
            const float *wp = lin->wp ? lin->wp + (size_t)(c0 / KN_NR) * pstride : NULL;
            if (!wp) {
                float *panels = s->pbuf + (size_t)omp_get_thread_num() * s->pbuf_stride;
                for (int p = 0; p * KN_NR < nc; p++)
                    kn_panel(ops, lin, c0 + p * KN_NR, QP_MIN(KN_NR, nc - p * KN_NR), panels + (size_t)p * pstride,
                             panels + (size_t)KN_NCG * lin->n_in);
                wp = panels;
            }
            ops->gemm_xp(s->xp, n, wp, lin->n_in, nc, y + c0, (size_t)lin->n_out);
        }
    }
}

// Rotates the heads of one row: pairs (2i, 2i + 1), or (i, i + head/2) for rope_neox.
static void kn_rope(const struct kn_state *s, float *vec, int n_heads, int pos) {
    int hs = s->e->cfg.head_size, half = hs / 2, neox = s->e->cfg.rope_neox;
    const float *fc = s->rope_cos + (size_t)pos * half, *fs = s->rope_sin + (size_t)pos * half;
    for (int h = 0; h < n_heads; h++) {
        float *v = vec + (size_t)h * hs;
        for (int i = 0; i < half; i++) {
            int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
            float v0 = v[a], v1 = v[b];
            v[a] = v0 * fc[i] - v1 * fs[i];
            v[b] = v0 * fs[i] + v1 * fc[i];
        }
    }
}

static inline void kn_probe_call(const struct kn_probe *p, enum kn_site site, int layer,
                                 const float *x, int n, int width, int pos0) {
    if (p && p->fn) p->fn(p->ctx, site, layer, x, n, width, pos0);
}

// out (n, width) = rmsnorm of x's rows times w, rows split over threads (each row's result does
// not depend on who computes it). out may equal x.
static void kn_norm_rows(const struct kn_state *s, float *out, const float *x, const float *w, int n, int width) {
    const struct kn_ops *ops = s->e->ops;
    float eps = s->e->cfg.norm_eps;
#pragma omp parallel for num_threads(s->n_threads) schedule(static) if (s->n_threads > 1 && n > 1)
    for (int i = 0; i < n; i++) ops->rmsnorm(out + (size_t)i * width, x + (size_t)i * width, w, width, eps);
}

// Biases, RoPE (and Gemma's query scale) on the n new rows, then keys (transposed) and values
// appended to layer l's cache.
static void kn_qkv_finish(struct kn_state *s, const struct kn_layer *ly, int n, size_t cache_l) {
    const struct kn_config *c = &s->e->cfg;
    int hs = c->head_size, kv_dim = kn_kv_dim(c), q_dim = kn_q_dim(c), pos0 = s->n_past;
#pragma omp parallel for num_threads(s->n_threads) schedule(static) if (s->n_threads > 1 && n > 1)
    for (int i = 0; i < n; i++) {
        int pos = pos0 + i;
        float *q = s->q + (size_t)i * q_dim, *k = s->k + (size_t)i * kv_dim, *v = s->v + (size_t)i * kv_dim;
        if (ly->bq) {
            for (int j = 0; j < q_dim; j++) q[j] = q[j] + ly->bq[j];
            for (int j = 0; j < kv_dim; j++) k[j] = k[j] + ly->bk[j];
            for (int j = 0; j < kv_dim; j++) v[j] = v[j] + ly->bv[j];
        }
        kn_rope(s, q, c->n_heads, pos);
        kn_rope(s, k, c->n_kv_heads, pos);
        if (c->attn_scale > 0)
            for (int j = 0; j < q_dim; j++) q[j] = q[j] * c->attn_scale;
        for (int h = 0; h < c->n_kv_heads; h++) {
            float *kt = s->kt + cache_l + (size_t)h * hs * s->max_ctx;
            float *vc = s->vc + cache_l + (size_t)h * s->max_ctx * hs;
            const float *kr = k + (size_t)h * hs, *vr = v + (size_t)h * hs;
            for (int d = 0; d < hs; d++) kt[(size_t)d * s->max_ctx + pos] = kr[d];
            memcpy(vc + (size_t)pos * hs, vr, (size_t)hs * sizeof(float));
        }
    }
}

// Attention of nq queries (rows i0.., head h) whose keys start at the window's first position or
// are soft-capped: one query at a time, each over its own key range [k0, pos].
static void kn_attend_window(const struct kn_state *s, int h, int i0, int nq, const float *kt, const float *vc,
                             int window, float *scratch) {
    const struct kn_config *c = &s->e->cfg;
    int hs = c->head_size, q_dim = kn_q_dim(c);
    for (int i = i0; i < i0 + nq; i++) {
        int pos = s->n_past + i, k0 = window > 0 && pos - window + 1 > 0 ? pos - window + 1 : 0;
        float *out = s->mix + (size_t)i * q_dim + (size_t)h * hs;
        const float *q = s->q + (size_t)i * q_dim + (size_t)h * hs;
        if (c->attn_softcap > 0)
            s->e->attend_capped(out, q, kt + k0, (size_t)s->max_ctx, vc + (size_t)k0 * hs, hs, pos - k0 + 1,
                             c->attn_softcap, scratch);
        else
            s->e->ops->attend(out, q, kt + k0, (size_t)s->max_ctx, vc + (size_t)k0 * hs, hs, pos - k0 + 1, scratch);
    }
}

// Attention: one (head, block of up to KN_QBLOCK queries) per task; each task writes its own
// output slice, and every query's result is the one-query kernel's (kn_ops.h). Tasks are
// dealt round robin: later query blocks see more keys, so contiguous shares would be uneven.
// Blocks that a sliding window cuts, and soft-capped scores, go one query at a time.
static void kn_attention(struct kn_state *s, int l, int n, size_t cache_l) {
    const struct kn_config *c = &s->e->cfg;
    int hs = c->head_size, q_dim = kn_q_dim(c), group = c->n_heads / c->n_kv_heads, pos0 = s->n_past;
    int window = kn_layer_swa(c, l) ? c->swa_window : 0;
    int n_qblocks = (n + KN_QBLOCK - 1) / KN_QBLOCK;
    int tasks = n_qblocks * c->n_heads;
#pragma omp parallel for num_threads(s->n_threads) schedule(static, 1) if (s->n_threads > 1 && tasks > 1)
    for (int t = 0; t < tasks; t++) {
        int h = t % c->n_heads, i0 = (t / c->n_heads) * KN_QBLOCK, kvh = h / group;
        int nq = QP_MIN(KN_QBLOCK, n - i0);
        float *scratch = s->scores + (size_t)omp_get_thread_num() * KN_QBLOCK * s->scores_stride;
        const float *kt = s->kt + cache_l + (size_t)kvh * hs * s->max_ctx;
        const float *vc = s->vc + cache_l + (size_t)kvh * s->max_ctx * hs;
        int cut = window > 0 && pos0 + i0 + nq - window > 0; // the last query's window starts after 0
        if (cut || c->attn_softcap > 0) {
            kn_attend_window(s, h, i0, nq, kt, vc, window, scratch);
            continue;
        }
        s->e->ops->attend_rows(s->mix + (size_t)i0 * q_dim + (size_t)h * hs, (size_t)q_dim,
                               s->q + (size_t)i0 * q_dim + (size_t)h * hs, (size_t)q_dim, nq, kt,
                               (size_t)s->max_ctx, vc, hs, pos0 + i0 + 1, scratch, s->scores_stride);
    }
}

// The MLP's gating: hb = act(hb) * hb2, rows split over threads.
static void kn_gate(const struct kn_state *s, int n) {
    int hid = s->e->cfg.hidden_dim, gelu = s->e->cfg.act == KN_ACT_GELU_TANH;
    const struct kn_ops *ops = s->e->ops;
#pragma omp parallel for num_threads(s->n_threads) schedule(static) if (s->n_threads > 1 && n > 1)
    for (int i = 0; i < n; i++) {
        float *h = s->hb + (size_t)i * hid;
        if (gelu) kn_gelu_gate(h, h, s->hb2 + (size_t)i * hid, hid);
        else ops->swiglu(h, h, s->hb2 + (size_t)i * hid, hid);
    }
}

// x += proj, after the post-norm (post_norms) probed at post_site.
static void kn_residual(struct kn_state *s, int l, int n, const float *post, enum kn_site post_site,
                        const struct kn_probe *probe) {
    int dim = s->e->cfg.dim;
    if (post) {
        kn_norm_rows(s, s->proj, s->proj, post, n, dim);
        kn_probe_call(probe, post_site, l, s->proj, n, dim, s->n_past);
    }
    for (size_t i = 0; i < (size_t)n * dim; i++) s->x[i] = s->x[i] + s->proj[i];
}

static void kn_block(struct kn_state *s, int l, int n, const struct kn_probe *probe) {
    const struct kn_engine *e = s->e;
    const struct kn_config *c = &e->cfg;
    const struct kn_layer *ly = &e->layers[l];
    int dim = c->dim, hid = c->hidden_dim, pos0 = s->n_past;
    size_t cache_l = (size_t)l * kn_kv_dim(c) * s->max_ctx;

    if (probe && probe->inject) probe->inject(probe->ctx, l, s->x, n, dim, pos0);
    kn_probe_call(probe, KN_SITE_BLOCK_IN, l, s->x, n, dim, pos0);
    kn_norm_rows(s, s->xb, s->x, ly->attn_norm, n, dim);
    kn_probe_call(probe, KN_SITE_ATTN_NORM, l, s->xb, n, dim, pos0);

    kn_matmul(s, &ly->wq, s->xb, s->q, n);
    kn_matmul(s, &ly->wk, s->xb, s->k, n);
    kn_matmul(s, &ly->wv, s->xb, s->v, n);
    kn_qkv_finish(s, ly, n, cache_l);
    kn_attention(s, l, n, cache_l);
    kn_probe_call(probe, KN_SITE_ATTN_MIX, l, s->mix, n, kn_q_dim(c), pos0);

    kn_matmul(s, &ly->wo, s->mix, s->proj, n);
    kn_probe_call(probe, KN_SITE_ATTN_OUT, l, s->proj, n, dim, pos0);
    kn_residual(s, l, n, ly->attn_post, KN_SITE_ATTN_POST, probe);

    kn_norm_rows(s, s->xb, s->x, ly->ffn_norm, n, dim);
    kn_probe_call(probe, KN_SITE_FFN_NORM, l, s->xb, n, dim, pos0);
    kn_matmul(s, &ly->gate, s->xb, s->hb, n);
    kn_matmul(s, &ly->up, s->xb, s->hb2, n);
    kn_gate(s, n);
    kn_probe_call(probe, KN_SITE_FFN_ACT, l, s->hb, n, hid, pos0);
    kn_matmul(s, &ly->down, s->hb, s->proj, n);
    kn_probe_call(probe, KN_SITE_MLP_OUT, l, s->proj, n, dim, pos0);
    kn_residual(s, l, n, ly->ffn_post, KN_SITE_MLP_POST, probe);
    kn_probe_call(probe, KN_SITE_RESID_OUT, l, s->x, n, dim, pos0);
}

// ---------------------------------------------------------------------------------------------
// The forward pass

void kn_forward(struct kn_state *s, const int *tokens, int n, float *logits, int first_logit,
                const struct kn_probe *probe) {
    const struct kn_engine *e = s->e;
    const struct kn_config *c = &e->cfg;
    QP_ASSERT(n >= 1 && n <= s->max_batch && s->n_past + n <= s->max_ctx);
    QP_ASSERT(first_logit >= 0 && first_logit <= n);
    int dim = c->dim;
    for (int i = 0; i < n; i++) {
        QP_ASSERT(tokens[i] >= 0 && tokens[i] < c->vocab_size);
        float *x = s->x + (size_t)i * dim;
        kn_row_f32(&e->tok_embd, tokens[i], x);
        if (c->embd_scale > 0)
            for (int j = 0; j < dim; j++) x[j] = x[j] * c->embd_scale;
    }
    for (int l = 0; l < c->n_layers; l++) kn_block(s, l, n, probe);

    if (logits && first_logit < n) {
        int m = n - first_logit;
        for (int i = first_logit; i < n; i++)
            e->ops->rmsnorm(s->xb + (size_t)i * dim, s->x + (size_t)i * dim, e->out_norm, dim, c->norm_eps);
        kn_matmul(s, &e->output, s->xb + (size_t)first_logit * dim, logits, m);
        if (c->final_softcap > 0) {
#pragma omp parallel for num_threads(s->n_threads) schedule(static) if (s->n_threads > 1 && m > 1)
            for (int i = 0; i < m; i++) kn_softcap(logits + (size_t)i * c->vocab_size, c->vocab_size, c->final_softcap);
        }
        kn_probe_call(probe, KN_SITE_LOGITS, c->n_layers, logits, m, c->vocab_size, s->n_past + first_logit);
    }
    s->n_past += n;
}
