// hx_plan.c — the cost of a sweep before it is paid (hx_plan.h).
#include "hx_plan.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hx_model.h"
#include "hx_qmodel.h"
#include "kn_engine.h"
#include "qp.h"
#include "qz_spec.h"

#define HX_PLAN_ROWS 64        // rows of the probe tensor quantized per variant
#define HX_PLAN_KLD_NS 10.0    // ns per vocabulary entry and scored token (two exps in fp64)
#define HX_PLAN_Q8_LEGACY 0.75 // act=q8 speed against the fp32 engine: llama.cpp's legacy types
#define HX_PLAN_Q8_KQUANT 0.45 // ... and k-quants (docs/BENCH.md, TinyLlama)
// GPTQ's fp64 work runs at these shares of the probe's dgemm rate: its lazy updates and loss
// are dgemm; the Gram matrices are dsyrk over 512-token windows; the factorizations are our own
// blocked Cholesky plus a triangular solve against the identity (measured on TinyLlama's shape,
// docs/BENCH.md).
// The rest (the column sweep itself, zeroing fresh pages) adds about HX_PLAN_GPTQ_REST to them.
#define HX_PLAN_GEMM_EFF 0.8
#define HX_PLAN_SYRK_EFF 0.6
#define HX_PLAN_CHOL_EFF 0.5
#define HX_PLAN_GPTQ_REST 1.15
#define HX_PLAN_F64_N 640 // the probe's dgemm: 0.5 GFLOP

// ---------------------------------------------------------------------------------------------
// The probe

// Seconds of one forward pass of n tokens on state st: the fastest of the passes run in 0.2 s
// (at least one, at most 50): small models take microseconds, and the machine may be shared.
static double hx_plan_fwd(struct kn_state *st, int vocab, int n) {
    int *t = malloc((size_t)n * sizeof *t);
    if (!t) return NAN;
    for (int i = 0; i < n; i++) t[i] = (1 + 7 * i) % vocab;
    double best = INFINITY, start = qp_now();
    for (int rep = 0; rep < 50 && (rep == 0 || qp_now() - start < 0.2); rep++) {
        kn_state_reset(st);
        double t0 = qp_now();
        kn_forward(st, t, n, NULL, n, NULL);
        best = fmin(best, qp_now() - t0);
    }
    free(t);
    return best;
}

// The model's largest layer tensor (the probe's subject): layer 0's, by element count.
static const struct kn_tensor *hx_plan_subject(const struct kn_weights *w, char *name, size_t cap) {
    struct hx_weight_ref refs[HX_N_WEIGHTS(1)];
    struct kn_weights one = *w;
    one.cfg.n_layers = 1;
    hx_weight_refs(&one, refs);
    int best = 2;
    for (int i = 3; i < HX_N_WEIGHTS(1); i++)
        if (refs[i].t->ne0 * refs[i].t->ne1 > refs[best].t->ne0 * refs[best].t->ne1) best = i;
    snprintf(name, cap, "%s", refs[best].name);
    return refs[best].t;
}

// GFLOP/s of OpenBLAS's dgemm on this machine: the best of three products of HX_PLAN_F64_N² (a
// few tens of milliseconds). 1 when out of memory.
static double hx_plan_f64(void) {
    const int n = HX_PLAN_F64_N;
    double *a = qp_alloc_array((size_t)3 * n * n, sizeof(double)), best = INFINITY;
    if (!a) return 1;
    for (size_t i = 0; i < (size_t)3 * n * n; i++) a[i] = (double)(i % 17) / 16 - 0.5;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = qp_now();
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0, a, n, a + (size_t)n * n, n, 0.0,
                    a + (size_t)2 * n * n, n);
        best = fmin(best, qp_now() - t0);
    }
    qp_free(a);
    return 2.0 * n * n * (double)n / fmax(best, 1e-9) * 1e-9;
}

int hx_plan_probe(const struct kn_weights *w, int ctx, int n_threads, struct hx_plan_speed *sp, char *err) {
    memset(sp, 0, sizeof *sp);
    struct kn_engine *e;
    struct kn_state *st;
    // Large models: 64 tokens (the weights dominate); small ones a whole window, since attention,
    // quadratic in the window, is much of their cost.
    int64_t per_token = (int64_t)w->cfg.n_layers * 12 * w->cfg.dim * w->cfg.dim;
    int n = per_token < (int64_t)50 << 20 ? ctx : QP_MIN(64, ctx), rc = kn_engine_create(w, NULL, &e, err);
    if (rc) return rc;
    if ((rc = kn_state_create(e, n, n, QP_MAX(n_threads, 1), &st, err))) {
        kn_engine_destroy(e);
        return rc;
    }
    int V = w->cfg.vocab_size;
    int n0 = QP_MIN(16, n / 4);
    hx_plan_fwd(st, V, n0); // warm: the weights' pages come in
    double t16 = hx_plan_fwd(st, V, n0), tn = hx_plan_fwd(st, V, n);
    kn_state_destroy(st);
    kn_engine_destroy(e);
    sp->tok_s = fmax((tn - t16) / (n - n0), 1e-9);
    sp->pass_s = fmax(t16 - n0 * sp->tok_s, 0);
    int64_t params = 0;
    struct hx_weight_ref *refs = malloc(HX_N_WEIGHTS(w->cfg.n_layers) * sizeof *refs);
    if (!refs) return qp_fail(err, QP_ENOMEM, "out of memory");
    hx_weight_refs((struct kn_weights *)w, refs);
    for (int i = 1; i < HX_N_WEIGHTS(w->cfg.n_layers); i++) params += refs[i].t->ne0 * refs[i].t->ne1;
    free(refs);
    sp->gflops = 2.0 * (double)params / sp->tok_s * 1e-9;
    sp->f64_gflops = hx_plan_f64();
    char name[64];
    const struct kn_tensor *t = hx_plan_subject(w, name, sizeof name);
    const float *x;
    float *owned = NULL;
    double t0 = qp_now();
    if (hx_tensor_f32(t, &x, &owned)) return qp_fail(err, QP_ENOTSUP, "cannot read %s", name);
    sp->read_ns = (qp_now() - t0) * 1e9 / (double)(t->ne0 * t->ne1);
    qp_free(owned);
    hx_release_source(t->data, kn_row_bytes(t->type, t->ne0) * (size_t)t->ne1);
    return 0;
}

// ns per weight of v's data-free format on the subject's first rows (calibrated bases probed as
// their RTN grid or llama.cpp type). NaN when the format cannot be probed.
static double hx_plan_quant_ns(const struct kn_weights *w, const struct qz_variant *v) {
    char name[64], err[QP_ERRLEN];
    const struct kn_tensor *t = hx_plan_subject(w, name, sizeof name);
    struct kn_tensor sub = *t;
    sub.ne1 = QP_MIN(t->ne1, HX_PLAN_ROWS);
    struct hx_quant_model *q;
    if (hx_quant_model_begin(w, v, &q, err)) return NAN;
    struct qz_base b;
    hx_tensor_base(v, name, &q->w, sub.ne0, &b);
    if (b.method == QZ_GPTQ || b.method == QZ_AWQ) b.method = b.ggml_type >= 0 ? QZ_GGML : QZ_RTN;
    if (b.method == QZ_SMOOTHQUANT) b.smooth = false, b.a8 = QZ_A8_TOKEN;
    const float *x;
    float *owned = NULL;
    double ns = NAN;
    if (!hx_tensor_f32(&sub, &x, &owned)) {
        struct kn_tensor dst;
        double t0 = qp_now();
        if (!hx_quant_model_tensor(q, &b, name, x, NULL, sub.ne1, sub.ne0, NULL, &dst, err))
            ns = (qp_now() - t0) * 1e9 / (double)(sub.ne0 * sub.ne1);
    }
    qp_free(owned);
    hx_quant_model_destroy(q);
    return ns;
}

// ---------------------------------------------------------------------------------------------
// The estimate

// Weights of every 2-D tensor (the embedding once when tied).
static double hx_plan_params(const struct kn_weights *w) {
    struct hx_weight_ref *refs = malloc(HX_N_WEIGHTS(w->cfg.n_layers) * sizeof *refs);
    double params = 0;
    if (!refs) return 0;
    hx_weight_refs((struct kn_weights *)w, refs);
    for (int i = 0; i < HX_N_WEIGHTS(w->cfg.n_layers); i++)
        if (!(i == 1 && w->tied)) params += (double)refs[i].t->ne1 * (double)refs[i].t->ne0;
    free(refs);
    return params;
}

// Seconds of GPTQ's fp64 work over n_tok calibration tokens (the forward passes are counted
// apart): per layer, the Gram matrix Σ x xᵀ of its four inputs (n·w² flops each, dsyrk), one
// factorization per input (n³/3 for the Cholesky, about n³ for the solve that inverts it), and
// per matrix the lazy updates (rows·cols² flops) and the loss (2·rows·cols²), dgemm.
static double hx_plan_gptq_s(const struct kn_config *c, double n_tok, double f64_gflops) {
    const double d = c->dim, q = kn_q_dim(c), kv = (double)c->n_kv_heads * c->head_size, h = c->hidden_dim;
    const double gram = n_tok * (2 * d * d + q * q + h * h);
    const double chol = 4.0 / 3.0 * (2 * d * d * d + q * q * q + h * h * h);
    const double upd = 3.0 * ((q + 2 * kv) * d * d + d * q * q + 2 * h * d * d + d * h * h);
    const double per_layer = gram / HX_PLAN_SYRK_EFF + chol / HX_PLAN_CHOL_EFF + upd / HX_PLAN_GEMM_EFF;
    const double classifier = n_tok * d * d / HX_PLAN_SYRK_EFF + 4.0 / 3.0 * d * d * d / HX_PLAN_CHOL_EFF +
                              3.0 * c->vocab_size * d * d / HX_PLAN_GEMM_EFF;
    return HX_PLAN_GPTQ_REST * (c->n_layers * per_layer + classifier) / (fmax(f64_gflops, 1e-3) * 1e9);
}

// The variant's speed against the fp32 engine.
static double hx_plan_speed_of(const struct qz_variant *v) {
    if (v->act != QZ_ACT_Q8) return 1.0;
    int k = v->base.method == QZ_GGML_MIX || (v->base.ggml_type >= KN_Q2_K && v->base.ggml_type <= KN_Q8_K);
    return k ? HX_PLAN_Q8_KQUANT : HX_PLAN_Q8_LEGACY;
}

// One variant's row from its probe (r->quant_ns set).
static void hx_plan_row(const struct hx_plan_in *in, const struct hx_plan_diag *d, const struct hx_plan_speed *sp,
                        const struct qz_variant *v, struct hx_plan_row *r) {
    const struct kn_config *c = &in->w->cfg;
    double params = hx_plan_params(in->w), chunk = sp->tok_s * in->ctx + sp->pass_s;
    double qns = isfinite(r->quant_ns) ? r->quant_ns : 50;
    enum qz_method m = v ? v->base.method : QZ_F32;
    r->quant = v ? params * (qns + sp->read_ns) * 1e-9 : 0; // the source read as fp32, quantized; file: read only
    if (m == QZ_GPTQ || m == QZ_AWQ || (v && (v->imatrix || m == QZ_SMOOTHQUANT))) {
        double passes = m == QZ_GPTQ || m == QZ_AWQ ? 2.0 : 1.0; // sequential: two one-layer passes per layer
        r->quant += passes * in->calib_seqs * (sp->tok_s * in->calib_len + sp->pass_s);
        if (m == QZ_GPTQ) r->quant += hx_plan_gptq_s(c, (double)in->calib_seqs * in->calib_len, sp->f64_gflops);
        if (m == QZ_AWQ) r->quant += 20 * params * qns * 1e-9; // its grid of 20 scales
    }
    double per_chunk = in->ctx - 1 - (in->ctx / 2);
    r->eval = (in->n_chunks + QP_MIN(d->layer_chunks, in->n_chunks)) * chunk / (v ? hx_plan_speed_of(v) : 1.0) +
              in->n_chunks * per_chunk * c->vocab_size * HX_PLAN_KLD_NS * 1e-9 / QP_MAX(in->n_threads, 1);
    r->diag = 2 * params * sp->read_ns * 1e-9 + (d->grid ? params * qns * 1e-9 : 0);
    if (d->sens_chunks > 0) r->diag += c->n_layers * (d->sens_tensors ? 8 : 1) * d->sens_chunks * chunk;
    if (d->gen_prompts > 0)
        r->diag += d->gen_prompts * (d->gen_tokens * (sp->tok_s + sp->pass_s) +
                                     2 * (d->gen_prompt_tokens + d->gen_tokens) * sp->tok_s);
    r->total = r->quant + r->eval + r->diag;
}

void hx_plan_update(const struct hx_plan_in *in, const struct hx_plan_diag *d, const struct hx_plan_speed *sp,
                    struct hx_plan *p) {
    double chunk = sp->tok_s * in->ctx + sp->pass_s;
    p->ref = in->ref_cached ? 0 : (in->n_chunks + QP_MIN(d->act_chunks, in->n_chunks)) * chunk;
    if (!in->ref_cached && d->gen_prompts > 0)
        p->ref += d->gen_prompts * d->gen_tokens * (sp->tok_s + sp->pass_s);
    p->total = p->ref;
    for (int i = 0; i < p->n; i++) {
        struct qz_variant *v = NULL;
        char err[QP_ERRLEN];
        if (strncmp(in->variants[i], "file:", 5) && qz_variant_parse(in->variants[i], &v, err)) v = NULL;
        hx_plan_row(in, d, sp, v, &p->rows[i]);
        qz_variant_destroy(v);
        p->total += p->rows[i].total;
    }
}

int hx_plan_make(const struct hx_plan_in *in, const struct hx_plan_diag *d, const struct hx_plan_speed *sp,
                 struct hx_plan *p, char *err) {
    memset(p, 0, sizeof *p);
    p->n = in->n_variants;
    if (!(p->rows = calloc((size_t)QP_MAX(p->n, 1), sizeof *p->rows))) return qp_fail(err, QP_ENOMEM, "out of memory");
    for (int i = 0; i < p->n; i++) {
        struct qz_variant *v = NULL;
        p->rows[i].quant_ns = NAN;
        if (strncmp(in->variants[i], "file:", 5) == 0) continue;
        int rc = qz_variant_parse(in->variants[i], &v, err);
        if (rc) {
            free(p->rows);
            p->rows = NULL;
            return rc;
        }
        p->rows[i].quant_ns = hx_plan_quant_ns(in->w, v);
        qz_variant_destroy(v);
    }
    hx_plan_update(in, d, sp, p);
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Fitting a budget

static void hx_plan_note(char *notes, size_t cap, const char *fmt, const char *what, double saved) {
    size_t k = strlen(notes);
    snprintf(notes + k, cap - k, "%s", k ? "; " : "");
    k = strlen(notes);
    snprintf(notes + k, cap - k, fmt, what);
    k = strlen(notes);
    snprintf(notes + k, cap - k, " (saves %.0f s)", saved);
}

int hx_plan_fit(const struct hx_plan_in *in, struct hx_plan_diag *d, const struct hx_plan_speed *sp, struct hx_plan *p,
                double budget, char *notes, size_t cap) {
    notes[0] = 0;
    for (int step = 0; p->total > budget && step < 16; step++) {
        double before = p->total;
        const char *what = NULL, *fmt = "%s";
        char buf[96];
        if (d->sens_chunks > 0) {
            d->sens_chunks = d->sens_tensors = 0;
            d->sens_estimate = 1;
            what = "exact sensitivity replaced by the estimate";
        } else if (d->gen_prompts > 4) {
            snprintf(buf, sizeof buf, "generation on %d prompts instead of %d", d->gen_prompts / 2, d->gen_prompts);
            d->gen_prompts /= 2;
            what = buf;
        } else if (d->gen_prompts > 0) {
            d->gen_prompts = 0;
            what = "generation off";
        } else if (d->grid) {
            d->grid = 0;
            what = "grid-collapse statistics off";
        } else if (d->act_chunks > 1) {
            d->act_chunks = 1;
            what = "activation statistics on 1 chunk";
        } else if (d->layer_chunks > 1) {
            d->layer_chunks = 1;
            what = "per-layer error on 1 chunk";
        } else {
            break;
        }
        hx_plan_update(in, d, sp, p);
        hx_plan_note(notes, cap, fmt, what, before - p->total);
    }
    return p->total <= budget;
}
