// hx_qat.c — quantization-aware training of a whole model (hx_qat.h). Reads top to bottom: the
// student (latent parameters and grids), the step (teacher, forward, loss, backward, STE/LSQ
// gradients, clipping, AdamW), the loop with progress, and the packed result.
//
// Depends on kernels/, quantizers/, harness/run/hx_calib.h and hx_variant.h.
#include "hx_qat.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hx_calib.h"
#include "hx_qmodel.h"
#include "kn_engine.h"
#include "kn_train.h"
#include "kn_types.h"
#include "qp.h"
#include "qz_qat.h"
#include "qz_rtn.h"
#include "qz_spec.h"

// ---------------------------------------------------------------------------------------------
// The student

struct hx_qat_tensor {
    int param;              // index into the layout (kn_train_layout.t)
    int mode;               // HX_QT_GRID (trained on a grid), HX_QT_F16 (fallback), HX_QT_F32
    struct qz_qat_grid grid; // HX_QT_GRID only
    float *gs, *gm;          // grid gradients: scale, min (per group)
    float *ms, *vs, *mm, *vm; // their AdamW moments
};

enum { HX_QT_F32, HX_QT_F16, HX_QT_GRID };

struct hx_qat {
    const struct kn_weights *src;
    const struct qz_variant *v;
    const struct hx_calib *cal;
    int nt;
    struct kn_train_layout L;
    float *p, *g, *m1, *m2;      // latent, gradient, AdamW moments (n_floats); the effective
                                 // (fake-quantized) weights are computed when the products need
                                 // them (hx_qat_wsrc_*), never stored for the whole model
    struct hx_qat_tensor *t;     // L.n_tensors
    struct kn_engine *teacher;
    struct kn_state *ts;
    struct kn_train *tr;
    float *tlogits, *dlogits;    // (seq_len, vocab)
    double *rows;                // (2 seq_len) loss scratch
    int *targets;                // (seq_len) next tokens of a window
    int *order;                  // window order (n_seqs)
    uint64_t rng;
};

// Everything only training needs: the gradients, the optimizer state, the teacher and the
// workspace (freed before the result is packed, so that the peak is the training's, not the
// training's plus the packed model's).
static void hx_qat_free_training(struct hx_qat *q) {
    if (q->t)
        for (int i = 0; i < q->L.n_tensors; i++) {
            struct hx_qat_tensor *t = &q->t[i];
            qp_free(t->gs), qp_free(t->gm), qp_free(t->ms), qp_free(t->vs), qp_free(t->mm), qp_free(t->vm);
            t->gs = t->gm = t->ms = t->vs = t->mm = t->vm = NULL;
        }
    qp_free(q->g), qp_free(q->m1), qp_free(q->m2);
    q->g = q->m1 = q->m2 = NULL;
    kn_state_destroy(q->ts);
    kn_engine_destroy(q->teacher);
    kn_train_destroy(q->tr);
    q->ts = NULL, q->teacher = NULL, q->tr = NULL;
    qp_free(q->tlogits), qp_free(q->dlogits), qp_free(q->rows);
    q->tlogits = q->dlogits = NULL, q->rows = NULL;
}

static void hx_qat_free(struct hx_qat *q) {
    hx_qat_free_training(q);
    if (q->t)
        for (int i = 0; i < q->L.n_tensors; i++) qz_qat_grid_deinit(&q->t[i].grid);
    free(q->t);
    qp_free(q->p);
    free(q->order);
    free(q->targets);
    kn_train_layout_deinit(&q->L);
}

// The latent parameters: the source's, or (init=gptq) those of the GPTQ variant on the same grid.
static int hx_qat_latent(struct hx_qat *q, const struct kn_weights *src, char *err) {
    const struct qz_base *b = &q->v->base;
    if (b->qat.init != QZ_QAT_INIT_GPTQ) return kn_train_params_from(&q->L, src, q->p, err);
    char spec[64];
    if (b->ggml_type >= 0) snprintf(spec, sizeof spec, "gptq:%s", kn_type_info(b->ggml_type)->name);
    else snprintf(spec, sizeof spec, "gptq:bits=%d:group=%lld%s", b->bits, (long long)b->group, b->sym ? "" : ":asym");
    struct qz_variant *gv;
    int rc = qz_variant_parse(spec, &gv, err);
    if (rc) return rc;
    gv->keep = q->v->keep;
    struct hx_quant_model *gq = NULL;
    rc = hx_calib_quantize(src, gv, q->cal, &gq, err);
    qz_variant_destroy(gv);
    if (rc) return rc;
    rc = kn_train_params_from(&q->L, &gq->w, q->p, err);
    hx_quant_model_destroy(gq);
    return rc;
}

// What each parameter tensor becomes, and its initial grid.
static int hx_qat_grids(struct hx_qat *q, char *err) {
    char name[64];
    for (int i = 0; i < q->L.n_tensors; i++) {
        const struct kn_tparam *tp = &q->L.t[i];
        struct hx_qat_tensor *t = &q->t[i];
        t->param = i;
        t->mode = HX_QT_F32;
        if (tp->rows == 1) continue; // RMSNorm weights: fp32 in every variant
        kn_train_tensor_name(&q->L, i, name, sizeof name);
        const struct qz_base *b = qz_variant_for_tensor(q->v, name, qz_tensor_class_of(name));
        if (b->method != QZ_QAT) continue; // keep=: stays f32
        if (!qz_qat_fits(b, tp->cols)) {   // llama.cpp's fallback for the legacy types: f16
            t->mode = HX_QT_F16;
            continue;
        }
        if (b->ggml_type < 0 && b->group > tp->cols)
            return qp_fail(err, QP_EINVAL, "group of %lld is larger than the rows of %s (%lld values)",
                           (long long)b->group, name, (long long)tp->cols);
        t->mode = HX_QT_GRID;
        int rc = qz_qat_grid_init(&t->grid, b, q->p + tp->off, tp->rows, tp->cols);
        size_t ng = (size_t)qz_qat_n_groups(&t->grid);
        if (!rc && !((t->gs = qp_calloc_array(ng, 4)) && (t->ms = qp_calloc_array(ng, 4)) &&
                     (t->vs = qp_calloc_array(ng, 4))))
            rc = QP_ENOMEM;
        if (!rc && t->grid.min && !((t->gm = qp_calloc_array(ng, 4)) && (t->mm = qp_calloc_array(ng, 4)) &&
                                    (t->vm = qp_calloc_array(ng, 4))))
            rc = QP_ENOMEM;
        if (rc) return qp_fail(err, rc, rc == QP_ENOMEM ? "out of memory for the grid of %s" : "tensor %s is not finite", name);
    }
    return 0;
}

// The effective weights the training multiplies with (kn_train_wsrc): a tensor on a grid is its
// fake quantization under the current grid, computed from the latent weights row by row.
static int hx_qat_wsrc_derived(void *ctx, int i) { return ((struct hx_qat *)ctx)->t[i].mode == HX_QT_GRID; }

static void hx_qat_wsrc_rows(void *ctx, int i, const float *params, int64_t r0, int64_t r1, float *out) {
    struct hx_qat *q = ctx;
    qz_qat_fake_rows(&q->t[i].grid, params + q->L.t[i].off, r0, r1, out);
}

static int hx_qat_setup(struct hx_qat *q, const struct kn_weights *src, char *err) {
    const struct kn_config *c = &src->cfg;
    int T = q->cal->seq_len, rc;
    // Untied, as every variant stores the classifier, unless the source has none of its own
    // (embd_only): then, as llama.cpp and the other variants do, the trained embedding serves.
    if ((rc = kn_train_layout_init(&q->L, c, src->embd_only, err)) ||
        (rc = kn_train_layout_rope(&q->L, src->rope_freqs.data, src->rope_short.data, src->rope_long.data, err)))
        return rc;
    size_t n = q->L.n_floats;
    q->t = calloc((size_t)q->L.n_tensors, sizeof *q->t);
    q->p = qp_alloc_array(n, 4);
    if (!q->t || !q->p) return qp_fail(err, QP_ENOMEM, "out of memory for training (%zu parameters)", n);
    // The latent weights first: init=gptq quantizes a whole GPTQ variant, which should not sit
    // next to the gradient and the optimizer state (the peak stays the training's).
    if ((rc = hx_qat_latent(q, src, err)) || (rc = hx_qat_grids(q, err))) return rc;
    q->g = qp_alloc_array(n, 4);
    q->m1 = qp_calloc_array(n, 4), q->m2 = qp_calloc_array(n, 4);
    q->tlogits = qp_alloc_array((size_t)T * c->vocab_size, 4);
    q->dlogits = qp_alloc_array((size_t)T * c->vocab_size, 4);
    q->rows = qp_alloc_array((size_t)2 * T, sizeof(double));
    q->order = malloc((size_t)q->cal->n_seqs * sizeof(int));
    q->targets = malloc((size_t)T * sizeof(int));
    if (!q->g || !q->m1 || !q->m2 || !q->tlogits || !q->dlogits || !q->rows || !q->order || !q->targets)
        return qp_fail(err, QP_ENOMEM, "out of memory for training (%zu parameters)", n);
    if ((rc = kn_engine_create(src, NULL, &q->teacher, err)) ||
        (rc = kn_state_create(q->teacher, T, T, q->nt, &q->ts, err)) ||
        (rc = kn_train_create(&q->L, T, q->nt, &q->tr, err)))
        return rc;
    struct kn_train_wsrc ws = {.derived = hx_qat_wsrc_derived, .rows = hx_qat_wsrc_rows, .ctx = q};
    return kn_train_set_wsrc(q->tr, &ws, err);
}

// ---------------------------------------------------------------------------------------------
// One step

// xorshift64*: the window order, from the spec's seed.
static uint64_t hx_qat_rand(struct hx_qat *q) {
    q->rng ^= q->rng >> 12;
    q->rng ^= q->rng << 25;
    q->rng ^= q->rng >> 27;
    return q->rng * 2685821657736338717ull;
}

// The window for draw k (k counts windows over the whole run): a fresh permutation per pass.
static int hx_qat_window(struct hx_qat *q, int64_t k) {
    int n = q->cal->n_seqs;
    if (k % n == 0) {
        for (int i = 0; i < n; i++) q->order[i] = i;
        for (int i = n - 1; i > 0; i--) { // Fisher-Yates
            int j = (int)(hx_qat_rand(q) % (uint64_t)(i + 1)), x = q->order[i];
            q->order[i] = q->order[j], q->order[j] = x;
        }
    }
    return q->order[k % n];
}

// Forward, loss and backward of one window into q->g; returns its loss sum (KL + ce · CE).
static double hx_qat_window_grad(struct hx_qat *q, int w, double scale) {
    const struct kn_config *c = &q->L.cfg;
    int T = q->cal->seq_len, V = c->vocab_size;
    const int *tok = q->cal->tokens + (size_t)w * T;
    kn_state_reset(q->ts);
    kn_forward(q->ts, tok, T, q->tlogits, 0, NULL);
    const float *z = kn_train_forward(q->tr, q->p, tok, T);
    for (int i = 0; i < T; i++) q->targets[i] = i + 1 < T ? tok[i + 1] : -1; // the last: KL only
    double ce_w = q->v->base.qat.ce, kl, ce;
    kn_train_loss(z, q->tlogits, q->targets, T, V, ce_w, scale, q->nt, q->dlogits, q->rows, &kl, &ce);
    kn_train_backward(q->tr, q->p, q->dlogits, q->g);
    return kl + ce_w * ce;
}

// dL/dw' in q->g becomes the latent weights' gradient (STE) and the grids' gradients; returns
// the sum of squares of everything trained (fp64, in tensor order).
static double hx_qat_grid_grads(struct hx_qat *q) {
    double ss = 0;
    for (int i = 0; i < q->L.n_tensors; i++) {
        const struct kn_tparam *tp = &q->L.t[i];
        struct hx_qat_tensor *t = &q->t[i];
        float *g = q->g + tp->off;
        if (t->mode == HX_QT_GRID) {
#pragma omp parallel for num_threads(q->nt) schedule(static) if (q->nt > 1 && tp->rows * tp->cols >= KN_TRAIN_PAR_WORK / 4)
            for (int64_t r = 0; r < tp->rows; r++) qz_qat_grad(&t->grid, q->p + tp->off, g, g, t->gs, t->gm, r, r + 1);
            int64_t ng = qz_qat_n_groups(&t->grid);
            double n1 = kn_train_grad_norm(t->gs, (size_t)ng), n2 = t->gm ? kn_train_grad_norm(t->gm, (size_t)ng) : 0;
            ss += n1 * n1 + n2 * n2;
        }
        double n0 = kn_train_grad_norm(g, (size_t)(tp->rows * tp->cols));
        ss += n0 * n0;
    }
    return ss;
}

// The learning rate of step t (1-based): linear warm-up over W steps, then cosine to lr/10.
static double hx_qat_lr(const struct qz_base *b, int64_t t) {
    int64_t S = b->qat.steps, W = S / 20 > 1 ? S / 20 : 1;
    if (t <= W) return b->qat.lr * (double)t / (double)W;
    double x = S > W ? (double)(t - W) / (double)(S - W) : 1.0;
    return b->qat.lr * (0.1 + 0.9 * 0.5 * (1.0 + cos(M_PI * x)));
}

// One optimizer step: returns the mean per-token loss of its windows.
static double hx_qat_step(struct hx_qat *q, int64_t t, int64_t *draws) {
    int T = q->cal->seq_len, B = HX_QAT_BATCH < q->cal->n_seqs ? HX_QAT_BATCH : q->cal->n_seqs;
    memset(q->g, 0, q->L.n_floats * sizeof(float));
    double loss = 0, scale = 1.0 / ((double)B * T);
    for (int k = 0; k < B; k++) loss += hx_qat_window_grad(q, hx_qat_window(q, (*draws)++), scale);
    loss *= scale;
    if (!isfinite(loss)) return loss;
    double norm = sqrt(hx_qat_grid_grads(q));
    float gscale = norm > HX_QAT_CLIP ? (float)(HX_QAT_CLIP / norm) : 1.0f;
    struct kn_adamw o = {.lr = hx_qat_lr(&q->v->base, t), .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .step = t};
    kn_adamw_update(&o, q->p, q->g, q->m1, q->m2, q->L.n_floats, gscale, 0, q->nt);
    for (int i = 0; i < q->L.n_tensors; i++) {
        struct hx_qat_tensor *t2 = &q->t[i];
        if (t2->mode != HX_QT_GRID) continue;
        size_t ng = (size_t)qz_qat_n_groups(&t2->grid);
        kn_adamw_update(&o, t2->grid.scale, t2->gs, t2->ms, t2->vs, ng, gscale, 0, q->nt);
        if (t2->gm) kn_adamw_update(&o, t2->grid.min, t2->gm, t2->mm, t2->vm, ng, gscale, 0, q->nt);
        qz_qat_project(&t2->grid);
    }
    return loss;
}

// ---------------------------------------------------------------------------------------------
// The loop

static void hx_qat_progress(int tty, int64_t t, int64_t S, double loss, double tok_s, int *last) {
    if (tty) {
        fprintf(stderr, "\rqat: step %lld/%lld  loss %.5f  %.0f tok/s ", (long long)t, (long long)S, loss, tok_s);
        fflush(stderr);
    } else if (t * 10 / S > *last || t == 1) { // quiet: every tenth
        fprintf(stderr, "qat: step %lld/%lld, loss %.5f, %.0f tok/s\n", (long long)t, (long long)S, loss, tok_s);
        *last = (int)(t * 10 / S);
    }
}

static int hx_qat_train(struct hx_qat *q, struct hx_qat_info *info, char *err) {
    const struct qz_base *b = &q->v->base;
    int64_t S = b->qat.steps, draws = 0, per_step = (int64_t)(HX_QAT_BATCH < q->cal->n_seqs ? HX_QAT_BATCH : q->cal->n_seqs) * q->cal->seq_len;
    q->rng = 0x9E3779B97F4A7C15ull ^ (uint64_t)b->qat.seed * 0xD1B54A32D192ED03ull;
    if (!q->rng) q->rng = 1;
    int tty = isatty(STDERR_FILENO), last = 0;
    double t0 = qp_now(), tail = 0;
    int64_t tail_n = 0, tail_from = S - (S + 9) / 10;
    for (int64_t t = 1; t <= S; t++) {
        if (q->cal->stop && *q->cal->stop) return qp_fail(err, QP_EINTR, "training interrupted at step %lld", (long long)t);
        double loss = hx_qat_step(q, t, &draws);
        if (!isfinite(loss)) {
            if (tty) fprintf(stderr, "\r\033[K");
            return qp_fail(err, QP_ENUMERIC, "training diverged at step %lld: the loss is %s", (long long)t,
                           isnan(loss) ? "NaN" : "infinite");
        }
        if (t == 1) info->loss_first = loss;
        if (t > tail_from) tail += loss, tail_n++;
        info->steps = t;
        info->tokens = t * per_step;
        double dt = qp_now() - t0;
        hx_qat_progress(tty, t, S, loss, dt > 0 ? (double)info->tokens / dt : 0, &last);
    }
    if (tty) fprintf(stderr, "\r\033[K");
    info->seconds = qp_now() - t0;
    info->loss_last = tail_n ? tail / (double)tail_n : NAN;
    return 0;
}

// ---------------------------------------------------------------------------------------------
// The packed result

// Tensor i as its format stores it, into *dst (a buffer owned by m).
static int hx_qat_store_tensor(struct hx_qat *q, int i, struct hx_quant_model *m, struct kn_tensor *dst) {
    const struct kn_tparam *tp = &q->L.t[i];
    struct hx_qat_tensor *t = &q->t[i];
    int64_t rows = tp->rows, cols = tp->cols;
    const float *lat = q->p + tp->off;
    int type = t->mode == HX_QT_GRID && t->grid.type >= 0 ? t->grid.type : t->mode == HX_QT_F16 ? KN_F16 : KN_F32;
    size_t rb = kn_row_bytes(type, cols);
    void *buf = qp_alloc_array((size_t)rows, rb);
    if (qp_owned_add(&m->owned, buf)) return QP_ENOMEM;
    if (t->mode == HX_QT_GRID && type != KN_F32) qz_qat_pack(&t->grid, lat, buf);
    else if (t->mode == HX_QT_GRID) qz_qat_fake(&t->grid, lat, buf, 0, rows);
    else if (type == KN_F16) hx_pack_rows(KN_F16, lat, rows, cols, NULL, buf);
    else memcpy(buf, lat, (size_t)(rows * cols) * sizeof(float));
    *dst = (struct kn_tensor){type, cols, rows, buf};
    if (rows > 1) {
        m->n_weights += rows * cols;
        if (t->mode == HX_QT_GRID) {
            char name[64];
            kn_train_tensor_name(&q->L, i, name, sizeof name);
            const struct qz_base *b = qz_variant_for_tensor(q->v, name, qz_tensor_class_of(name));
            m->bytes += (uint64_t)((qz_tensor_bits(b, rows, cols) + 7) / 8);
        } else {
            m->bytes += (uint64_t)rb * (uint64_t)rows;
        }
    }
    return 0;
}

static int hx_qat_result(struct hx_qat *q, struct hx_quant_model **out, struct hx_qat_info *info, char *err) {
    struct hx_quant_model *m = calloc(1, sizeof *m);
    if (!m) return qp_fail(err, QP_ENOMEM, "out of memory");
    int nl = q->L.cfg.n_layers;
    struct kn_layer_weights *layers = qp_calloc_array((size_t)nl, sizeof *layers);
    int rc = qp_owned_add(&m->owned, layers);
    if (!rc) { // the source's tensors where nothing was trained (the RoPE factors)
        m->w = *q->src;
        memcpy(layers, q->src->layers, (size_t)nl * sizeof *layers);
        m->w.layers = layers;
    }
    for (int i = 0; i < q->L.n_tensors && !rc; i++) {
        if (q->t[i].mode == HX_QT_GRID) {
            qz_qat_round_fp16(&q->t[i].grid);
            info->n_clipped += qz_qat_count_clipped(&q->t[i].grid, q->p + q->L.t[i].off);
        }
        rc = hx_qat_store_tensor(q, i, m, kn_train_slot(&q->L, i, &m->w));
    }
    if (rc) {
        hx_quant_model_destroy(m);
        return qp_fail(err, rc, "out of memory storing the trained model");
    }
    if (q->L.tied) m->w.output = m->w.tok_embd;
    m->w.tied = q->L.tied;
    m->act_q8 = q->v->act == QZ_ACT_Q8;
    m->bits_per_weight = m->n_weights ? 8.0 * (double)m->bytes / (double)m->n_weights : 0;
    *out = m;
    return 0;
}

int hx_qat_model_create(const struct kn_weights *src, const struct qz_variant *v, const struct hx_calib *cal,
                        struct hx_quant_model **out, struct hx_qat_info *info, char *err) {
    *out = NULL;
    struct hx_qat_info dummy;
    if (!info) info = &dummy;
    memset(info, 0, sizeof *info);
    QP_ASSERT(v->base.method == QZ_QAT);
    if (v->n_rules || v->imatrix)
        return qp_fail(err, QP_EINVAL, "qat trains the whole model on one grid: name~ rules and ;imatrix are not supported");
    if (!cal || cal->n_seqs < 1) return qp_fail(err, QP_EINVAL, "qat needs calibration text (--calib FILE)");
    struct hx_qat q = {.src = src, .v = v, .cal = cal, .nt = cal->n_threads > 0 ? cal->n_threads : 1};
    double t0 = qp_now();
    int rc = hx_qat_setup(&q, src, err);
    info->init_seconds = qp_now() - t0;
    if (!rc) rc = hx_qat_train(&q, info, err);
    hx_qat_free_training(&q);
    if (!rc) rc = hx_qat_result(&q, out, info, err);
    if (!rc && cal->report) { // no per-module losses: QAT trains the model as a whole
        hx_calib_report_clear(cal->report);
        cal->report->seconds = qp_now() - t0;
    }
    hx_qat_free(&q);
    return rc;
}
