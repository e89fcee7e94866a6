// calib.c — calibration windows, the overlap check, activation statistics through the engine's
// probes, and the calibrated quantization driver (calib.h). Reads top to bottom: windows,
// overlap, statistics, the driver's helpers, per-tensor quantization, per-layer methods (AWQ,
// SmoothQuant), the driver.
#include "hx_calib.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kn_blocks.h"
#include "hx_progress.h"
#include "kn_engine.h"
#include "qp.h"
#include "qz_awq.h"
#include "qz_ggml.h"
#include "qz_gptq.h"
#include "qz_kquants.h"
#include "qz_mix.h"
#include "qz_rtn.h"
#include "qz_smooth.h"
#include "qz_spec.h"
#include "hx_model.h"
#include "hx_qmodel.h"
#include "hx_text.h"
#include "hx_tokenizer.h"

// ---------------------------------------------------------------------------------------------
// Windows

int hx_calib_create(const struct hx_tok *tok, const char *text, size_t len, int n_seqs, int seq_len,
                    struct hx_calib **out, char *err) {
    *out = NULL;
    if (n_seqs < 1 || seq_len < 2) return qp_fail(err, QP_EINVAL, "calibration needs at least one window of 2 tokens");
    if (len > 0 && text[len - 1] == '\n') len--; // as evaluation texts (llama.cpp drops one)
    int *ids = NULL;
    size_t n = 0;
    if (hx_tok_encode(tok, text, len, HX_TOK_ADD_BOS | HX_TOK_SPACE_PREFIX, &ids, &n))
        return qp_fail(err, QP_ENOMEM, "out of memory tokenizing the calibration text");
    if (n < HX_CALIB_MIN_TOKENS) {
        free(ids);
        return qp_fail(err, QP_EINVAL, "the calibration text has %zu tokens, fewer than %d", n, HX_CALIB_MIN_TOKENS);
    }
    size_t avail = n / (size_t)seq_len;
    if (avail == 0) avail = 1, seq_len = (int)n; // one shorter window
    int ns = (int)QP_MIN((size_t)n_seqs, avail);
    struct hx_calib *c = calloc(1, sizeof *c);
    size_t used = (size_t)ns * (size_t)seq_len;
    if (c) c->tokens = malloc(used * sizeof *c->tokens);
    if (!c || !c->tokens) {
        free(c);
        free(ids);
        return qp_fail(err, QP_ENOMEM, "out of memory for calibration windows");
    }
    memcpy(c->tokens, ids, used * sizeof *ids);
    // Each window starts with BOS when the vocabulary adds one (as evaluation chunks do).
    if (hx_tok_bos_added(tok) >= 0)
        for (int i = 0; i < ns; i++) c->tokens[(size_t)i * seq_len] = hx_tok_bos_added(tok);
    // The bytes covered: the pieces of the original stream (after BOS, whose following piece
    // drops the SPM prefix space, so the count is in text bytes).
    size_t bytes = 0;
    char piece[256];
    for (size_t i = 1; i < used; i++) bytes += hx_tok_piece(tok, ids[i - 1], ids[i], piece, sizeof piece);
    free(ids);
    c->n_seqs = ns;
    c->seq_len = seq_len;
    c->text_bytes = QP_MIN(bytes, len);
    c->n_threads = 1;
    *out = c;
    return 0;
}

void hx_calib_destroy(struct hx_calib *c) {
    if (!c) return;
    free(c->tokens);
    free(c);
}

int hx_calib_prepare(const struct hx_calib_setup *o, const struct hx_tok *tok, int model_ctx, const char *eval_path,
                     const char *eval_text, size_t eval_len, struct hx_calib **out, int64_t *overlap_bytes,
                     char *err) {
    *out = NULL;
    *overlap_bytes = 0;
    char *text = NULL, why[QP_ERRLEN];
    size_t len = 0;
    int rc = hx_read_text(o->path, &text, &len, err);
    if (rc) return rc;
    struct hx_calib *cal = NULL;
    if ((rc = hx_calib_create(tok, text, len, o->n_seqs, QP_MIN(o->seq_len, model_ctx), &cal, why))) {
        free(text);
        return qp_fail(err, rc, "cannot calibrate on '%s': %s", o->path, why);
    }
    cal->n_threads = o->n_threads;
    rc = hx_calib_overlap(text, cal->text_bytes, eval_text, eval_len, overlap_bytes);
    free(text);
    if (rc < 0) rc = qp_fail(err, rc, "out of memory comparing '%s' with '%s'", o->path, eval_path);
    else if (rc > 0 && !o->allow_overlap)
        rc = qp_fail(err, QP_EINVAL,
                     "calibration text '%s' and evaluation text '%s' share %lld bytes in runs of %d bytes or more; "
                     "calibrate on a disjoint text%s", o->path, eval_path, (long long)*overlap_bytes,
                     HX_OVERLAP_MIN_RUN, o->can_allow ? " (or allow the overlap to record it)" : "");
    else if (rc > 0) {
        fprintf(stderr, "qprobe: WARNING: calibration text '%s' overlaps the evaluation text '%s' by %lld bytes; "
                        "the overlap is recorded with the run\n", o->path, eval_path, (long long)*overlap_bytes);
        rc = 0;
    }
    if (rc) {
        hx_calib_destroy(cal);
        return rc;
    }
    *out = cal;
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Overlap (rule in calib.h)

#define HX_SHINGLE_MUL 0x100000001b3ull // odd multiplier of the rolling polynomial hash

static uint64_t mix64(uint64_t h) { // a bijective finalizer, so that the bitmap index is well spread
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

// The polynomial hash of the 64 bytes ending at s[i], from h, that of the 64 ending at s[i-1]
// (top = HX_SHINGLE_MUL^63; while i < 64 it hashes the prefix).
static uint64_t roll(uint64_t h, uint64_t top, const unsigned char *s, size_t i) {
    if (i >= HX_OVERLAP_SHINGLE) h -= top * s[i - HX_OVERLAP_SHINGLE];
    return h * HX_SHINGLE_MUL + s[i];
}

int hx_calib_overlap(const char *calib_text, size_t n, const char *eval_text, size_t m,
                     int64_t *overlap_bytes) {
    *overlap_bytes = 0;
    if (n < HX_OVERLAP_SHINGLE || m < HX_OVERLAP_SHINGLE) return 0;
    const unsigned char *cs = (const unsigned char *)calib_text, *es = (const unsigned char *)eval_text;
    int log_bits = 16;
    while (log_bits < 60 && ((uint64_t)1 << log_bits) < 8 * (uint64_t)m) log_bits++;
    uint8_t *bits = calloc((size_t)1 << (log_bits - 3), 1);
    if (!bits) return QP_ENOMEM;
    int shift = 64 - log_bits;
    uint64_t top = 1, h = 0;
    for (int k = 0; k < HX_OVERLAP_SHINGLE - 1; k++) top *= HX_SHINGLE_MUL;
    for (size_t i = 0; i < m; i++) {
        h = roll(h, top, es, i);
        if (i + 1 < HX_OVERLAP_SHINGLE) continue;
        uint64_t b = mix64(h) >> shift;
        bits[b >> 3] |= (uint8_t)(1u << (b & 7));
    }
    int64_t run = 0, total = 0; // run: consecutive calibration shingles found so far
    h = 0;
    for (size_t i = 0; i <= n; i++) {
        int hit = 0;
        if (i < n) {
            h = roll(h, top, cs, i);
            if (i + 1 < HX_OVERLAP_SHINGLE) continue;
            uint64_t b = mix64(h) >> shift;
            hit = (bits[b >> 3] >> (b & 7)) & 1;
        }
        if (hit) {
            run++;
        } else { // a run of r shingles covers r + 63 bytes
            if (run && run + HX_OVERLAP_SHINGLE - 1 >= HX_OVERLAP_MIN_RUN) total += run + HX_OVERLAP_SHINGLE - 1;
            run = 0;
        }
    }
    free(bits);
    *overlap_bytes = total;
    return total > 0;
}

// ---------------------------------------------------------------------------------------------
// Statistics

// Windows run in parallel, one engine state per thread ("lane", single-threaded inside), each
// window's statistics kept apart in its lane and merged into the totals in window order after
// every batch: sums and maxima directly, Σ x xᵀ by dsyrk on the window's captured rows (only
// single-layer collections ask for it, so a lane holds one layer's rows). The result does not
// depend on the thread count (up to OpenBLAS's own dsyrk rounding).
struct hx_lane {
    struct kn_state *s;
    float *x;                   // a layer pass: this window's residual stream, (seq_len, dim)
    struct hx_calib_stats part; // this window's sums and maxima (no gram), same layout as the totals
    float **rows;               // per site with gram: the window's rows (seq_len, width), else NULL
    float *normed;              // (seq_len, dim) the classifier's input
    const struct hx_collect_ctx *cc;
};

struct hx_collect_ctx {
    struct hx_calib_stats *st;
    int offset;     // a layer pass: the model's layer that the view's layer 0 is (else 0)
    int capture;    // a layer pass: the view's output replaces the lane's x
    int layer;      // the layer collected, or -1 for all
    int classifier; // collect the classifier's input at the last block's output
    int last_layer;
    const float *out_norm;
    float eps;
    const struct kn_ops *ops;
};

static int n_sites(const struct hx_calib_stats *st) { return st->n_layers * HX_CS_COUNT + 1; }

static void site_alloc(struct hx_site_stats *s, int width, int want_gram, int *fail) {
    if (s->width) return; // already there (collected again: keeps accumulating)
    s->width = width;
    s->mean_abs = calloc((size_t)width, sizeof(double));
    s->mean_sq = calloc((size_t)width, sizeof(double));
    s->max_abs = calloc((size_t)width, sizeof(float));
    if (want_gram) s->gram = qp_calloc_array((size_t)width * (size_t)width, sizeof(double));
    if (!s->mean_abs || !s->mean_sq || !s->max_abs || (want_gram && !s->gram)) *fail = 1;
}

// Per-channel sums and maxima of n rows x into s (in row order).
static void site_add(struct hx_site_stats *s, const float *x, int n) {
    int w = s->width;
    for (int r = 0; r < n; r++) {
        const float *xr = x + (size_t)r * w;
        for (int k = 0; k < w; k++) {
            double v = xr[k];
            s->mean_abs[k] += fabs(v);
            s->mean_sq[k] += v * v;
            float a = fabsf(xr[k]);
            if (a > s->max_abs[k]) s->max_abs[k] = a;
        }
    }
    s->n += n;
}

static void lane_site(struct hx_lane *ln, int idx, const float *x, int n, int pos0) {
    struct hx_site_stats *p = &ln->part.site[idx];
    if (!p->width) return;
    site_add(p, x, n);
    if (ln->rows[idx]) memcpy(ln->rows[idx] + (size_t)pos0 * p->width, x, (size_t)n * p->width * sizeof(float));
}

static void collect_probe(void *ctx, enum kn_site site, int layer, const float *x, int n, int width, int pos0) {
    struct hx_lane *ln = ctx;
    const struct hx_collect_ctx *c = ln->cc;
    layer += c->offset;
    if (c->capture && site == KN_SITE_RESID_OUT) memcpy(ln->x + (size_t)pos0 * width, x, (size_t)n * width * sizeof(float));
    if (c->classifier && site == KN_SITE_RESID_OUT && layer == c->last_layer) {
        for (int r = 0; r < n; r++)
            c->ops->rmsnorm(ln->normed + (size_t)(pos0 + r) * width, x + (size_t)r * width, c->out_norm, width, c->eps);
        lane_site(ln, n_sites(c->st) - 1, ln->normed + (size_t)pos0 * width, n, pos0);
        return;
    }
    if (c->layer >= 0 && layer != c->layer) return;
    int s = site == KN_SITE_ATTN_NORM ? HX_CS_ATTN_IN
          : site == KN_SITE_ATTN_MIX  ? HX_CS_ATTN_MIX
          : site == KN_SITE_FFN_NORM  ? HX_CS_FFN_IN
          : site == KN_SITE_FFN_ACT   ? HX_CS_FFN_ACT
                                      : -1;
    if (s < 0) return;
    QP_ASSERT(!ln->part.site[layer * HX_CS_COUNT + s].width || ln->part.site[layer * HX_CS_COUNT + s].width == width);
    lane_site(ln, layer * HX_CS_COUNT + s, x, n, pos0);
}

// A layer pass: the window's residual stream as the block input of the view's only layer.
static void collect_inject(void *ctx, int layer, float *x, int n, int width, int pos0) {
    (void)layer;
    struct hx_lane *ln = ctx;
    memcpy(x, ln->x + (size_t)pos0 * width, (size_t)n * width * sizeof(float));
}

static void lane_free(struct hx_lane *ln) {
    kn_state_destroy(ln->s);
    for (int i = 0; ln->part.site && ln->rows && i < n_sites(&ln->part); i++) qp_free(ln->rows[i]);
    free(ln->rows);
    hx_calib_stats_free(&ln->part);
    qp_free(ln->normed);
}

static int lane_init(struct hx_lane *ln, const struct kn_engine *e, const struct hx_calib *cal,
                     const struct hx_collect_ctx *cc, char *err) {
    memset(ln, 0, sizeof *ln);
    ln->cc = cc;
    const struct hx_calib_stats *st = cc->st;
    int n = n_sites(st), fail = 0;
    ln->part.n_layers = st->n_layers;
    ln->part.site = calloc((size_t)n, sizeof *ln->part.site);
    ln->rows = calloc((size_t)n, sizeof *ln->rows);
    ln->normed = qp_alloc_array((size_t)cal->seq_len * (size_t)kn_engine_config(e)->dim, sizeof(float));
    if (!ln->part.site || !ln->rows || !ln->normed) return qp_fail(err, QP_ENOMEM, "out of memory");
    for (int i = 0; i < n && !fail; i++) {
        const struct hx_site_stats *t = &st->site[i];
        if (!t->width) continue;
        site_alloc(&ln->part.site[i], t->width, 0, &fail);
        if (t->gram && !(ln->rows[i] = qp_alloc_array((size_t)cal->seq_len * (size_t)t->width, sizeof(float))))
            fail = 1;
    }
    if (fail) return qp_fail(err, QP_ENOMEM, "out of memory for calibration statistics");
    return kn_state_create(e, cal->seq_len, cal->seq_len, 1, &ln->s, err);
}

// Adds a lane's window into the totals and clears the lane. buf: (seq_len, max width) fp64.
static void lane_merge(struct hx_lane *ln, struct hx_calib_stats *st, double *buf) {
    for (int i = 0; i < n_sites(st); i++) {
        struct hx_site_stats *t = &st->site[i], *p = &ln->part.site[i];
        if (!t->width || !p->width) continue;
        int w = t->width;
        for (int k = 0; k < w; k++) {
            t->mean_abs[k] += p->mean_abs[k];
            t->mean_sq[k] += p->mean_sq[k];
            t->max_abs[k] = fmaxf(t->max_abs[k], p->max_abs[k]);
        }
        if (t->gram && ln->rows[i] && p->n > 0) { // upper triangle of Σ x xᵀ += Bᵀ B (mirrored by finish)
            for (size_t k = 0; k < (size_t)p->n * w; k++) buf[k] = ln->rows[i][k];
            cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, w, (int)p->n, 1.0, buf, w, 1.0, t->gram, w);
        }
        t->n += p->n;
        memset(p->mean_abs, 0, (size_t)w * sizeof(double));
        memset(p->mean_sq, 0, (size_t)w * sizeof(double));
        memset(p->max_abs, 0, (size_t)w * sizeof(float));
        p->n = 0;
    }
}

// A pass over the calibration windows through w. view (may be NULL): w is a one-layer view of
// the model's layer view->layer, fed each window's residual stream view->x (NULL: the embeddings,
// for layer 0), and with view->capture its output replaces view->x. The rest as hx_calib_collect.
struct hx_view {
    int layer, capture;
    float *x; // (n_seqs, seq_len, dim)
};

// Every window through the engine, one lane per thread; each lane's sums merged in window order.
static void collect_windows(const struct hx_calib *cal, struct hx_lane *lanes, int n_lanes, const struct hx_view *view,
                            struct hx_calib_stats *st, double *buf, int dim) {
    // The lanes are the parallelism of the forward passes: OpenBLAS's own threads would only
    // spin beside them, so it runs on one thread there; the merges after them (dsyrk: 0.3 s a
    // window at width 5632) get every thread back. OpenBLAS splits dsyrk's output among its
    // threads, each element's sum in the same order: the same bits with any count (checked for
    // widths 2048 and 5632).
    int blas_threads = openblas_get_num_threads();
    for (int i0 = 0; i0 < cal->n_seqs; i0 += n_lanes) {
        openblas_set_num_threads(1);
        int nb = QP_MIN(n_lanes, cal->n_seqs - i0);
#pragma omp parallel for num_threads(nb) schedule(static, 1) if (nb > 1)
        for (int t = 0; t < nb; t++) {
            struct hx_lane *ln = &lanes[t];
            ln->x = view && view->x ? view->x + (size_t)(i0 + t) * cal->seq_len * dim : NULL;
            struct kn_probe probe = {collect_probe, ln, view && view->x && view->layer > 0 ? collect_inject : NULL};
            kn_state_reset(ln->s);
            kn_forward(ln->s, cal->tokens + (size_t)(i0 + t) * cal->seq_len, cal->seq_len, NULL, cal->seq_len, &probe);
        }
        openblas_set_num_threads(blas_threads);
        for (int t = 0; t < nb; t++) lane_merge(&lanes[t], st, buf);
    }
}

static int collect_run(const struct kn_weights *w, int n_layers_full, const struct hx_calib *cal, int act_q8,
                       int layer, int classifier, int want_gram, const struct hx_view *view,
                       struct hx_calib_stats *st, char *err) {
    const struct kn_config *cfg = &w->cfg;
    int off = view ? view->layer : 0, fail = 0;
    QP_ASSERT(off + cfg->n_layers <= n_layers_full && layer <= n_layers_full); // layer == n_layers: none
    QP_ASSERT(!classifier || off + cfg->n_layers == n_layers_full);
    if (!st->site) {
        st->n_layers = n_layers_full;
        st->site = calloc((size_t)n_layers_full * HX_CS_COUNT + 1, sizeof *st->site);
        if (!st->site) return qp_fail(err, QP_ENOMEM, "out of memory for calibration statistics");
    }
    for (int l = off; l < off + cfg->n_layers; l++) {
        if (layer >= 0 && l != layer) continue;
        for (int s = 0; s < HX_CS_COUNT; s++)
            site_alloc(hx_calib_site(st, l, s),
                       s == HX_CS_FFN_ACT ? cfg->hidden_dim : s == HX_CS_ATTN_MIX ? kn_q_dim(cfg) : cfg->dim, want_gram,
                       &fail);
    }
    if (classifier) site_alloc(hx_calib_site_output(st), cfg->dim, want_gram, &fail);

    int n_lanes = QP_MAX(1, QP_MIN(cal->n_threads, cal->n_seqs));
    struct hx_lane *lanes = calloc((size_t)n_lanes, sizeof *lanes);
    struct kn_engine *e = NULL;
    const float *onorm = NULL;
    float *onorm_owned = NULL;
    double *buf = qp_alloc_array((size_t)cal->seq_len * (size_t)QP_MAX(QP_MAX(cfg->dim, cfg->hidden_dim), kn_q_dim(cfg)),
                                 sizeof(double));
    struct hx_collect_ctx cc = {.st = st, .offset = off, .capture = view && view->capture, .layer = layer,
                                .classifier = classifier, .last_layer = off + cfg->n_layers - 1, .eps = cfg->norm_eps};
    int rc = 0;
    if (fail || !lanes || !buf) rc = qp_fail(err, QP_ENOMEM, "out of memory for calibration statistics");
    if (!rc && classifier && hx_tensor_f32(&w->out_norm, &onorm, &onorm_owned))
        rc = qp_fail(err, QP_ENOTSUP, "cannot read the final norm");
    cc.out_norm = onorm;
    struct kn_engine_opts eo = {.act_q8 = act_q8};
    if (!rc) rc = kn_engine_create_opts(w, &eo, &e, err);
    if (!rc) cc.ops = kn_engine_ops(e);
    for (int t = 0; t < n_lanes && !rc; t++) rc = lane_init(&lanes[t], e, cal, &cc, err);
    if (!rc) collect_windows(cal, lanes, n_lanes, view, st, buf, cfg->dim);
    for (int t = 0; lanes && t < n_lanes; t++) lane_free(&lanes[t]);
    free(lanes);
    kn_engine_destroy(e);
    qp_free(buf);
    qp_free(onorm_owned);
    if (rc) hx_calib_stats_free(st);
    return rc;
}

int hx_calib_collect(const struct kn_weights *w, int n_layers_full, const struct hx_calib *cal, int act_q8,
                     int layer, int classifier, int want_gram, struct hx_calib_stats *st, char *err) {
    return collect_run(w, n_layers_full, cal, act_q8, layer, classifier, want_gram, NULL, st, err);
}

// A one-layer view of w's layer l, with Gemma 2's alternating window as layer l has it.
static void layer_view(const struct kn_weights *w, int l, struct kn_weights *v) {
    *v = *w;
    v->cfg.n_layers = 1;
    v->layers = &w->layers[l];
    if (v->cfg.swa_window > 0 && v->cfg.swa_every > 1) {
        if (kn_layer_swa(&w->cfg, l)) v->cfg.swa_every = 1;
        else v->cfg.swa_window = 0;
    }
}

void hx_calib_stats_finish(struct hx_calib_stats *st) {
    for (int i = 0; st->site && i < st->n_layers * HX_CS_COUNT + 1; i++) {
        struct hx_site_stats *s = &st->site[i];
        if (!s->width || s->finished) continue;
        int w = s->width;
        double inv = s->n ? 1.0 / (double)s->n : 0;
        for (int k = 0; k < w; k++) s->mean_abs[k] *= inv, s->mean_sq[k] *= inv;
        if (s->gram)
            for (int a = 0; a < w; a++)
                for (int b = a; b < w; b++) {
                    double v = s->gram[(size_t)a * w + b] * inv;
                    s->gram[(size_t)a * w + b] = s->gram[(size_t)b * w + a] = v;
                }
        s->finished = 1;
    }
}

void hx_calib_stats_free(struct hx_calib_stats *st) {
    for (int i = 0; st->site && i < st->n_layers * HX_CS_COUNT + 1; i++) {
        struct hx_site_stats *s = &st->site[i];
        qp_free(s->gram);
        free(s->mean_abs);
        free(s->mean_sq);
        free(s->max_abs);
    }
    free(st->site);
    memset(st, 0, sizeof *st);
}

// ---------------------------------------------------------------------------------------------
// The driver: state and helpers

// The methods this driver handles (w8a8 included: it runs here when the variant needs
// calibration for another reason, e.g. act=tensor or ;imatrix in a rule).
static int is_calibrated(enum qz_method m) { return m == QZ_GPTQ || m == QZ_AWQ || m == QZ_SMOOTHQUANT; }

// The engine's linear inputs are the statistics' sites, in the same order.
_Static_assert((int)HX_CS_ATTN_IN == (int)KN_LIN_IN_ATTN && (int)HX_CS_ATTN_MIX == (int)KN_LIN_IN_ATTN_MIX &&
                   (int)HX_CS_FFN_IN == (int)KN_LIN_IN_FFN && (int)HX_CS_FFN_ACT == (int)KN_LIN_IN_FFN_ACT &&
                   (int)HX_CS_COUNT == (int)KN_LIN_IN_COUNT,
               "calibration sites and engine linear inputs differ");

struct cq {
    const struct kn_weights *src;
    const struct qz_variant *v;
    const struct hx_calib *cal;
    struct hx_quant_model *m;
    enum qz_method family; // QZ_GPTQ, QZ_AWQ, QZ_SMOOTHQUANT, or QZ_F32 (only ;imatrix)
    struct hx_calib_report rep; // the per-module records (moved to cal->report at the end)
    char *err;
    // GPTQ: the factor of the Hessian of input statistics `hs`, shared by the tensors that read
    // that input (q/k/v, gate/up); dropped at the end of every layer (cq_gptq_drop), since a
    // later layer's statistics may reuse the same addresses.
    const struct hx_site_stats *hs;
    struct qz_gptq_factor *factor;
};

static void cq_gptq_drop(struct cq *c) {
    qz_gptq_factor_destroy(c->factor);
    c->factor = NULL, c->hs = NULL;
}

static void cq_module(struct cq *c, const char *name, enum qz_method method, double loss, double aux, double damp) {
    struct hx_calib_report *m = &c->rep;
    struct hx_calib_module *nb = realloc(m->modules, (size_t)(m->n_modules + 1) * sizeof *nb);
    if (!nb) return; // the record is informative only
    m->modules = nb;
    struct hx_calib_module *r = &m->modules[m->n_modules++];
    snprintf(r->name, sizeof r->name, "%s", name);
    r->method = method;
    r->loss = loss;
    r->aux = aux;
    r->damp = damp;
}

// The round-to-nearest base a calibrated base falls back to where no statistics exist (the
// token embedding): same grid, or the same llama.cpp type; smoothquant keeps fp32.
static struct qz_base datafree_base(const struct qz_base *b) {
    if (b->method == QZ_GPTQ && b->ggml_type >= 0)
        return (struct qz_base){.method = QZ_GGML, .ggml_type = b->ggml_type};
    if (b->method == QZ_GPTQ || b->method == QZ_AWQ)
        return (struct qz_base){.method = QZ_RTN, .bits = b->bits, .gran = QZ_GROUP, .group = b->group,
                                .sym = b->sym, .ggml_type = -1};
    if (b->method == QZ_SMOOTHQUANT) return (struct qz_base){.method = QZ_F32, .bits = 32, .ggml_type = -1};
    return *b;
}

// A writable fp32 copy of the rows *x (n floats) in *scr (scratch owned by the caller).
static float *cq_writable(const float **x, float **scr, size_t n) {
    if (!*scr) {
        *scr = qp_alloc_array(n, sizeof(float));
        if (!*scr) return NULL;
        memcpy(*scr, *x, n * sizeof(float));
        *x = *scr;
    }
    return *scr;
}

// A new owned fp32 copy of a 1-D tensor divided by s (a norm, or Qwen2's v bias, with 1/s folded in).
static int cq_fold_norm(struct cq *c, const struct kn_tensor *src, const float *s, struct kn_tensor *dst) {
    const float *v;
    float *owned;
    if (hx_tensor_f32(src, &v, &owned)) return qp_fail(c->err, QP_ENOTSUP, "cannot read a norm vector");
    int64_t n = src->ne0;
    float *out = qp_alloc_array((size_t)n, sizeof(float));
    if (out)
        for (int64_t j = 0; j < n; j++) out[j] = v[j] / s[j];
    qp_free(owned);
    if (qp_owned_add(&c->m->owned, out)) return qp_fail(c->err, QP_ENOMEM, "out of memory");
    *dst = (struct kn_tensor){KN_F32, n, 1, out};
    return 0;
}

// ---------------------------------------------------------------------------------------------
// One tensor

static int cq_gptq(struct cq *c, const char *name, const struct qz_base *b, const float *x, int64_t rows,
                   int64_t cols, struct hx_site_stats *st, struct kn_tensor *dst);

// Quantizes one 2-D weight under b into *dst. x: its fp32 rows (rows × cols), possibly already
// scaled (AWQ's non-AWQ members, SmoothQuant); *scr: the scratch buffer holding x, or NULL when
// x is the source's own data (an fp32 result then points into the source; a scratch one is
// taken over and *scr set to NULL). st: the statistics of its input, or NULL.
static int cq_tensor(struct cq *c, const char *name, const struct qz_base *b, const float *x, float **scr,
                     int64_t rows, int64_t cols, struct hx_site_stats *st, struct kn_tensor *dst) {
    c->m->n_weights += rows * cols;
    struct qz_base eff = *b;
    if (!st && is_calibrated(b->method)) eff = datafree_base(b);
    if (eff.method == QZ_GPTQ) return cq_gptq(c, name, &eff, x, rows, cols, st, dst);
    if (eff.method == QZ_AWQ) { // done per group before this (cq_awq_*); without statistics it is RTN
        char spec[256];
        qz_base_print(b, spec, sizeof spec);
        return qp_fail(c->err, QP_ENOTSUP, "'%s' cannot quantize %s here", spec, name);
    }
    const double *mean_sq = c->v->imatrix && st ? st->mean_sq : NULL; // llama.cpp types only
    int rc = hx_quant_model_tensor(c->m, &eff, name, x, scr, rows, cols, mean_sq, dst, c->err);
    if (!rc && eff.method == QZ_SMOOTHQUANT && eff.smooth) cq_module(c, name, QZ_SMOOTHQUANT, 0, eff.alpha, 0);
    return rc;
}

// H = 2·C of st, in place (doubling is exact: the bits of a copy, without cols² more doubles),
// and its factor for g, made unless the last tensor's fits (the same input).
static int cq_gptq_factor(struct cq *c, const struct qz_base *g, int64_t cols, struct hx_site_stats *st, char *gerr) {
    if (c->hs == st && c->factor && qz_gptq_factor_fits(c->factor, g, cols)) return 0;
    cq_gptq_drop(c);
    if (!st->gram_is_h) {
        for (size_t k = 0, cc = (size_t)(cols * cols); k < cc; k++) st->gram[k] *= 2.0; // H = (2/N) Σ x xᵀ
        st->gram_is_h = 1;
    }
    int rc = qz_gptq_factor_create(g, st->gram, cols, &c->factor, gerr);
    if (rc) cq_gptq_drop(c);
    else c->hs = st;
    return rc;
}

// GPTQ on one tensor with H = 2·C of its input (st); a llama.cpp target type falls back as the
// data-free types do (f16/bf16 then packed without GPTQ). An integer-grid result is kept as Q8_0
// blocks when that is exact (hx_quant_model_keep_f32).
static int cq_gptq(struct cq *c, const char *name, const struct qz_base *b, const float *x, int64_t rows,
                   int64_t cols, struct hx_site_stats *st, struct kn_tensor *dst) {
    struct qz_base g = *b;
    int type = -1;
    if (g.ggml_type >= 0) {
        type = qz_fallback_type(g.ggml_type, cols);
        if (type == KN_F16 || type == KN_BF16)
            return hx_quant_model_pack(c->m, type, x, rows, cols, NULL, name, dst, c->err);
        g.ggml_type = type;
    }
    int64_t G = QP_MIN(g.group, cols);
    float *out = qp_alloc_array((size_t)(rows * cols), sizeof(float));
    int want = type < 0 && hx_quant_model_wants_grids(c->m);
    struct qz_grid *grids = want ? qp_alloc_array((size_t)(rows * ((cols + G - 1) / G)), sizeof *grids) : NULL;
    if (!out || (want && !grids)) {
        qp_free(out);
        qp_free(grids);
        return qp_fail(c->err, QP_ENOMEM, "out of memory quantizing %s", name);
    }
    struct qz_gptq_info info;
    char gerr[QP_ERRLEN];
    int rc = cq_gptq_factor(c, &g, cols, st, gerr);
    if (!rc) rc = qz_gptq_quantize_f(&g, x, rows, cols, st->gram, c->factor, out, grids, &info, gerr);
    if (!rc && hx_quant_model_keep_f32(c->m, out, want && info.grids_written ? grids : NULL, G, 0, rows, cols, dst))
        rc = QP_ENOMEM, snprintf(gerr, sizeof gerr, "out of memory"), out = NULL;
    qp_free(grids);
    if (rc) {
        qp_free(out);
        return qp_fail(c->err, rc, "cannot quantize %s: %s", name, gerr);
    }
    c->m->bytes += type >= 0 ? (uint64_t)kn_row_bytes(type, cols) * (uint64_t)rows
                             : (uint64_t)((qz_tensor_bits(&g, rows, cols) + 7) / 8);
    cq_module(c, name, QZ_GPTQ, info.loss, info.obs_loss, info.damp);
    return 0;
}

// ---------------------------------------------------------------------------------------------
// AWQ and SmoothQuant on the groups of one layer

// The 7 linears of a layer, in the order of hx_weight_refs.
enum { T_Q, T_K, T_V, T_O, T_GATE, T_UP, T_DOWN, T_N };

struct cq_layer {
    int l;
    char name[T_N][64];
    const struct qz_base *base[T_N];
    const float *x[T_N];   // current fp32 rows
    float *scr[T_N];       // scratch owning x, or NULL (x is the source's data)
    int64_t rows[T_N], cols[T_N];
    int done[T_N];
    struct kn_tensor *dst[T_N];
};

// AWQ for the members idx[0..n) sharing input stats s; 1/s is returned in svec (cols floats).
// AWQ members are quantized and done; the others become their scaled fp32 rows.
static int cq_awq_group(struct cq *c, struct cq_layer *L, const int *idx, const int *clip, int n,
                        struct hx_site_stats *s, const float *xmean, float *svec) {
    int any = 0;
    for (int k = 0; k < n; k++) any |= L->base[idx[k]]->method == QZ_AWQ;
    if (!any) return 0;
    int64_t cols = L->cols[idx[0]];
    struct qz_awq_linear lin[4];
    struct qz_base grids[4];
    int rc = 0;
    for (int k = 0; k < n; k++) {
        int t = idx[k];
        grids[k] = *L->base[t];
        lin[k] = (struct qz_awq_linear){
            .w = L->x[t], .rows = L->rows[t], .b = grids[k].method == QZ_AWQ ? &grids[k] : NULL, .clip = clip[k],
            .out = qp_alloc_array((size_t)(L->rows[t] * cols), sizeof(float)),
        };
        if (!lin[k].out) rc = qp_fail(c->err, QP_ENOMEM, "out of memory");
    }
    struct qz_awq_info info;
    char aerr[QP_ERRLEN];
    if (!rc && (rc = qz_awq_quantize(s->gram, xmean, cols, lin, n, svec, &info, aerr)))
        qp_fail(c->err, rc, "cannot quantize %s: %s", L->name[idx[0]], aerr);
    for (int k = 0; k < n; k++) {
        int t = idx[k];
        if (rc) {
            qp_free(lin[k].out);
            continue;
        }
        if (lin[k].b) {
            c->m->n_weights += L->rows[t] * cols;
            if ((rc = qp_owned_add(&c->m->owned, lin[k].out))) {
                qp_fail(c->err, QP_ENOMEM, "out of memory");
                continue;
            }
            *L->dst[t] = (struct kn_tensor){KN_F32, cols, L->rows[t], lin[k].out};
            c->m->bytes += (uint64_t)((qz_tensor_bits(lin[k].b, L->rows[t], cols) + 7) / 8);
            L->done[t] = 1;
            cq_module(c, L->name[t], QZ_AWQ, lin[k].loss, info.alpha, 0);
        } else { // scaled only: its own quantizer runs on W·diag(s) later
            qp_free(L->scr[t]);
            L->scr[t] = lin[k].out;
            L->x[t] = lin[k].out;
        }
    }
    return rc;
}

static int cq_awq_layer(struct cq *c, struct cq_layer *L, struct hx_calib_stats *st) {
    const struct kn_config *cfg = &c->src->cfg;
    int dim = cfg->dim, hid = cfg->hidden_dim, hs = cfg->head_size, grp = cfg->n_heads / cfg->n_kv_heads;
    int kv_dim = cfg->n_kv_heads * hs, wmax = QP_MAX(QP_MAX(dim, hid), kn_q_dim(cfg));
    const struct kn_layer_weights *sl = &c->src->layers[L->l];
    struct kn_layer_weights *dl = &c->m->w.layers[L->l];
    float *sv = qp_alloc_array((size_t)wmax, sizeof(float));
    float *xm = qp_alloc_array((size_t)wmax, sizeof(float));
    int rc = sv && xm ? 0 : qp_fail(c->err, QP_ENOMEM, "out of memory");
    // wo: x̄ shared by the query heads of one KV head (so that 1/s folds into the rows of wv).
    if (!rc && L->base[T_O]->method == QZ_AWQ) {
        struct hx_site_stats *s = hx_calib_site(st, L->l, HX_CS_ATTN_MIX);
        for (int kvh = 0; kvh < cfg->n_kv_heads; kvh++)
            for (int d = 0; d < hs; d++) {
                double sum = 0;
                for (int h = kvh * grp; h < (kvh + 1) * grp; h++) sum += s->mean_abs[h * hs + d];
                for (int h = kvh * grp; h < (kvh + 1) * grp; h++) xm[h * hs + d] = (float)(sum / grp);
            }
        int idx = T_O, clip = 1;
        rc = cq_awq_group(c, L, &idx, &clip, 1, s, xm, sv);
        float *wv = rc ? NULL : cq_writable(&L->x[T_V], &L->scr[T_V], (size_t)(kv_dim * dim));
        if (!rc && !wv) rc = qp_fail(c->err, QP_ENOMEM, "out of memory");
        for (int r = 0; !rc && r < kv_dim; r++) {
            xm[r] = sv[(r / hs) * grp * hs + r % hs]; // v row (kvh, d) feeds mix channel (kvh·grp, d)
            for (int j = 0; j < dim; j++) wv[(size_t)r * dim + j] /= xm[r];
        }
        // Qwen2's v bias is part of the same rows: 1/s goes into it too (it stays fp32).
        if (!rc && cfg->has_qkv_bias) rc = cq_fold_norm(c, &sl->bv, xm, &dl->bv);
    }
    // w_down: 1/s into the rows of w_up (the input of w_down is silu(gate) · up).
    if (!rc && L->base[T_DOWN]->method == QZ_AWQ) {
        struct hx_site_stats *s = hx_calib_site(st, L->l, HX_CS_FFN_ACT);
        for (int j = 0; j < hid; j++) xm[j] = (float)s->mean_abs[j];
        int idx = T_DOWN, clip = 1;
        rc = cq_awq_group(c, L, &idx, &clip, 1, s, xm, sv);
        float *wu = rc ? NULL : cq_writable(&L->x[T_UP], &L->scr[T_UP], (size_t)hid * dim);
        if (!rc && !wu) rc = qp_fail(c->err, QP_ENOMEM, "out of memory");
        for (int r = 0; !rc && r < hid; r++)
            for (int j = 0; j < dim; j++) wu[(size_t)r * dim + j] /= sv[r];
    }
    // q/k/v after attn_norm (no clipping for q and k), gate/up after ffn_norm.
    static const int qkv[] = {T_Q, T_K, T_V}, qkv_clip[] = {0, 0, 1};
    static const int gu[] = {T_GATE, T_UP}, gu_clip[] = {1, 1};
    struct {
        const int *idx, *clip;
        int n, site;
        const struct kn_tensor *norm;
        struct kn_tensor *dnorm;
    } groups[] = {
        {qkv, qkv_clip, 3, HX_CS_ATTN_IN, &sl->attn_norm, &dl->attn_norm},
        {gu, gu_clip, 2, HX_CS_FFN_IN, &sl->ffn_norm, &dl->ffn_norm},
    };
    for (size_t g = 0; g < QP_ARRAY_LEN(groups) && !rc; g++) {
        int any = 0;
        for (int k = 0; k < groups[g].n; k++) any |= L->base[groups[g].idx[k]]->method == QZ_AWQ;
        if (!any) continue;
        struct hx_site_stats *s = hx_calib_site(st, L->l, groups[g].site);
        for (int j = 0; j < dim; j++) xm[j] = (float)s->mean_abs[j];
        rc = cq_awq_group(c, L, groups[g].idx, groups[g].clip, groups[g].n, s, xm, sv);
        if (!rc) rc = cq_fold_norm(c, groups[g].norm, sv, groups[g].dnorm);
    }
    qp_free(sv);
    qp_free(xm);
    return rc;
}

// SmoothQuant's fold on layer L->l; smax[0], smax[1]: max_j a_j / s_j of the two smoothed inputs
// (q/k/v's, gate/up's), their largest absolute value after the fold.
static int cq_sq_layer(struct cq *c, struct cq_layer *L, struct hx_calib_stats *st, float smax[2]) {
    const struct kn_config *cfg = &c->src->cfg;
    int dim = cfg->dim;
    const struct kn_layer_weights *sl = &c->src->layers[L->l];
    struct kn_layer_weights *dl = &c->m->w.layers[L->l];
    float *sv = qp_alloc_array((size_t)dim, sizeof(float));
    int rc = sv ? 0 : qp_fail(c->err, QP_ENOMEM, "out of memory");
    static const int qkv[] = {T_Q, T_K, T_V}, gu[] = {T_GATE, T_UP};
    struct {
        const int *idx;
        int n, site;
        const struct kn_tensor *norm;
        struct kn_tensor *dnorm;
    } groups[] = {
        {qkv, 3, HX_CS_ATTN_IN, &sl->attn_norm, &dl->attn_norm},
        {gu, 2, HX_CS_FFN_IN, &sl->ffn_norm, &dl->ffn_norm},
    };
    for (size_t g = 0; g < QP_ARRAY_LEN(groups) && !rc; g++) {
        const float *ws[3];
        int64_t rows[3];
        for (int k = 0; k < groups[g].n; k++) ws[k] = L->x[groups[g].idx[k]], rows[k] = L->rows[groups[g].idx[k]];
        const float *amax = hx_calib_site(st, L->l, groups[g].site)->max_abs;
        qz_smooth_scales(amax, dim, ws, rows, groups[g].n, c->v->base.alpha, sv);
        smax[g] = 0;
        for (int j = 0; j < dim; j++) smax[g] = fmaxf(smax[g], amax[j] / sv[j]);
        for (int k = 0; k < groups[g].n && !rc; k++) {
            int t = groups[g].idx[k];
            float *w = cq_writable(&L->x[t], &L->scr[t], (size_t)(L->rows[t] * dim));
            if (!w) rc = qp_fail(c->err, QP_ENOMEM, "out of memory");
            else qz_smooth_fold(NULL, w, L->rows[t], dim, sv);
        }
        if (!rc) rc = cq_fold_norm(c, groups[g].norm, sv, groups[g].dnorm);
    }
    qp_free(sv);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// The driver

static int cq_layer_run(struct cq *c, int l, struct hx_calib_stats *st) {
    static const char *what[T_N] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};
    static const int site_of[T_N] = {HX_CS_ATTN_IN, HX_CS_ATTN_IN, HX_CS_ATTN_IN, HX_CS_ATTN_MIX,
                                     HX_CS_FFN_IN,  HX_CS_FFN_IN,  HX_CS_FFN_ACT};
    const struct kn_layer_weights *sl = &c->src->layers[l];
    struct kn_layer_weights *dl = &c->m->w.layers[l];
    const struct kn_tensor *src[T_N] = {&sl->wq, &sl->wk, &sl->wv, &sl->wo, &sl->w_gate, &sl->w_up, &sl->w_down};
    struct kn_tensor *dst[T_N] = {&dl->wq, &dl->wk, &dl->wv, &dl->wo, &dl->w_gate, &dl->w_up, &dl->w_down};
    struct cq_layer L;
    memset(&L, 0, sizeof L);
    L.l = l;
    int rc = 0;
    for (int t = 0; t < T_N && !rc; t++) {
        hx_tensor_name(L.name[t], sizeof L.name[t], l, what[t]);
        L.base[t] = qz_variant_for_tensor(c->v, L.name[t], qz_tensor_class_of(L.name[t]));
        L.rows[t] = src[t]->ne1;
        L.cols[t] = src[t]->ne0;
        L.dst[t] = dst[t];
        if (hx_tensor_f32(src[t], &L.x[t], &L.scr[t]))
            rc = qp_fail(c->err, QP_ENOTSUP, "cannot read %s (type %s)", L.name[t], kn_type_info(src[t]->type)->name);
    }
    if (!rc && c->family == QZ_AWQ) rc = cq_awq_layer(c, &L, st);
    float smax[2] = {0, 0};
    if (!rc && c->family == QZ_SMOOTHQUANT && c->v->base.smooth) rc = cq_sq_layer(c, &L, st, smax);
    if (!rc && c->m->act_scales) { // static int8 scales: max|x| of each linear input / 127
        float *sc = c->m->act_scales + (size_t)l * KN_LIN_IN_COUNT;
        for (int i = 0; i < HX_CS_COUNT; i++) {
            const struct hx_site_stats *s = hx_calib_site(st, l, i);
            float m = 0;
            for (int j = 0; j < s->width; j++) m = fmaxf(m, s->max_abs[j]);
            if (c->v->base.smooth && i == HX_CS_ATTN_IN) m = smax[0];
            if (c->v->base.smooth && i == HX_CS_FFN_IN) m = smax[1];
            sc[i] = m / 127.0f;
        }
    }
    for (int t = 0; t < T_N && !rc; t++) {
        struct hx_site_stats *s = st->site ? hx_calib_site(st, l, site_of[t]) : NULL;
        if (!L.done[t])
            rc = cq_tensor(c, L.name[t], L.base[t], L.x[t], &L.scr[t], L.rows[t], L.cols[t],
                           s && s->width ? s : NULL, dst[t]);
    }
    for (int t = 0; t < T_N; t++) qp_free(L.scr[t]);
    return rc;
}

// The classifier: GPTQ / imatrix from its input statistics, AWQ with 1/s folded into the final
// norm, or data-free.
static int cq_output(struct cq *c, struct hx_site_stats *st) {
    if (c->src->embd_only) { // no classifier of its own: the quantized embedding serves (llama.cpp)
        c->m->w.output = c->m->w.tok_embd;
        return 0;
    }
    const char *name = "output.weight";
    const struct qz_base *b = qz_variant_for_tensor(c->v, name, QZ_TC_OUTPUT);
    const struct kn_tensor *t = &c->src->output;
    if (b->method == QZ_SMOOTHQUANT) st = NULL; // W8A8 keeps the classifier in float
    const float *x;
    float *scr;
    if (hx_tensor_f32(t, &x, &scr)) return qp_fail(c->err, QP_ENOTSUP, "cannot read %s", name);
    int rc;
    if (b->method == QZ_AWQ && st) {
        struct cq_layer L;
        memset(&L, 0, sizeof L);
        snprintf(L.name[0], sizeof L.name[0], "%s", name);
        L.base[0] = b, L.x[0] = x, L.scr[0] = scr, L.rows[0] = t->ne1, L.cols[0] = t->ne0, L.dst[0] = &c->m->w.output;
        float *sv = qp_alloc_array((size_t)t->ne0, sizeof(float)), *xm = qp_alloc_array((size_t)t->ne0, sizeof(float));
        rc = sv && xm ? 0 : qp_fail(c->err, QP_ENOMEM, "out of memory");
        for (int64_t j = 0; !rc && j < t->ne0; j++) xm[j] = (float)st->mean_abs[j];
        int idx = 0, clip = 1;
        if (!rc) rc = cq_awq_group(c, &L, &idx, &clip, 1, st, xm, sv);
        if (!rc) rc = cq_fold_norm(c, &c->src->out_norm, sv, &c->m->w.out_norm);
        qp_free(sv);
        qp_free(xm);
        qp_free(L.scr[0]);
        return rc;
    }
    rc = cq_tensor(c, name, b, x, &scr, t->ne1, t->ne0, st, &c->m->w.output);
    qp_free(scr);
    return rc;
}

static int cq_embed(struct cq *c) {
    const char *name = "token_embd.weight";
    const struct qz_base *b = qz_variant_for_tensor(c->v, name, QZ_TC_EMBED);
    const struct kn_tensor *t = &c->src->tok_embd;
    const float *x;
    float *scr;
    if (hx_tensor_f32(t, &x, &scr)) return qp_fail(c->err, QP_ENOTSUP, "cannot read %s", name);
    int rc = cq_tensor(c, name, b, x, &scr, t->ne1, t->ne0, NULL, &c->m->w.tok_embd);
    qp_free(scr);
    return rc;
}

// The one calibrated method of v (QZ_F32 when only ;imatrix), or QP_ENOTSUP.
static int cq_family(const struct qz_variant *v, enum qz_method *fam, char *err) {
    *fam = is_calibrated(v->base.method) ? v->base.method : QZ_F32;
    for (int i = 0; i < v->n_rules; i++) {
        enum qz_method m = v->rules[i].base.method;
        if (m == QZ_SMOOTHQUANT)
            return qp_fail(err, QP_ENOTSUP, "smoothquant and w8a8 apply to the whole model, not in a name~ rule");
        if (!is_calibrated(m)) continue;
        if (*fam != QZ_F32 && *fam != m)
            return qp_fail(err, QP_ENOTSUP, "one calibrated method per spec (gptq, awq or smoothquant)");
        *fam = m;
    }
    return 0;
}

void hx_calib_report_clear(struct hx_calib_report *r) {
    free(r->modules);
    memset(r, 0, sizeof *r);
}

// The model's layers, the static activation scales when the variant runs with them, and the
// token embedding (which has no input statistics).
static int cq_begin(struct cq *c) {
    int rc = hx_quant_model_begin(c->src, c->v, &c->m, c->err);
    if (rc) return rc;
    if (c->m->act_int8 == KN_ACT_INT8_TENSOR &&
        qp_owned_add(&c->m->owned, c->m->act_scales = qp_calloc_array((size_t)c->src->cfg.n_layers * KN_LIN_IN_COUNT,
                                                                      sizeof(float))))
        return qp_fail(c->err, QP_ENOMEM, "out of memory");
    return cq_embed(c);
}

// The layers in order, then the classifier. gptq and awq collect each layer's statistics from
// the model quantized so far (sequential): the windows' residual streams entering layer l are
// kept (n_seqs x seq_len x dim floats), layer l's statistics come from one pass of the source
// layer over them, and the quantized layer then carries them to layer l + 1 (its last pass also
// collects the classifier's input): two one-layer passes per layer, the same bits as running
// layers 0..l each time (which cost L(L+1)/2 layer passes). The others take every site from one
// pass over the source model.
// After layer l of L: QP_EINTR when the caller's stop flag is up, else 0 (progress reported).
static int cq_layer_done(struct cq *c, struct hx_progress *prog, int l, int L) {
    if (c->cal->progress_label) hx_progress_cb(prog, l + 1, L, 0);
    if (c->cal->stop && *c->cal->stop) return qp_fail(c->err, QP_EINTR, "interrupted after layer %d of %d", l + 1, L);
    return 0;
}

// The source pages of layer l's matrices, read for the last time (its quantized layer carries the
// windows on): dropped, so that a sequential pass holds about one source layer, not the source
// model, beside the variant (a matrix the variant keeps as the source's reads its pages again).
static void cq_release_layer(const struct kn_weights *src, int l) {
    const struct kn_layer_weights *lw = &src->layers[l];
    const struct kn_tensor *t[] = {&lw->wq, &lw->wk, &lw->wv, &lw->wo, &lw->w_gate, &lw->w_down, &lw->w_up};
    for (size_t i = 0; i < QP_ARRAY_LEN(t); i++)
        if (t[i]->data) hx_release_source(t[i]->data, kn_row_bytes(t[i]->type, t[i]->ne0) * (size_t)t[i]->ne1);
}

static int cq_sequential(struct cq *c, int act_q8, struct hx_calib_stats *st, struct hx_progress *prog) {
    int L = c->src->cfg.n_layers, rc = 0;
    size_t n = (size_t)c->cal->n_seqs * c->cal->seq_len * c->src->cfg.dim;
    struct hx_view view = {.x = qp_alloc_array(n, sizeof(float))};
    if (!view.x) return qp_fail(c->err, QP_ENOMEM, "out of memory for %zu MiB of calibration activations", n >> 18);
    for (int l = 0; l < L && !rc; l++) {
        struct kn_weights v;
        view.layer = l;
        view.capture = 0;
        layer_view(&c->m->w, l, &v); // layer l still the source's
        rc = collect_run(&v, L, c->cal, act_q8, l, 0, 1, &view, st, c->err);
        hx_calib_stats_finish(st);
        if (!rc) rc = cq_layer_run(c, l, st);
        cq_gptq_drop(c);
        hx_calib_stats_free(st);
        view.capture = 1;
        layer_view(&c->m->w, l, &v); // now quantized: carry the windows on
        if (!rc) rc = collect_run(&v, L, c->cal, act_q8, L, l == L - 1, 1, &view, st, c->err);
        if (!rc && l == L - 1) hx_calib_stats_finish(st);
        else hx_calib_stats_free(st);
        cq_release_layer(c->src, l);
        if (!rc) rc = cq_layer_done(c, prog, l, L);
    }
    qp_free(view.x);
    return rc;
}

static int cq_run(struct cq *c) {
    int L = c->src->cfg.n_layers, act_q8 = c->m->act_q8, rc = 0;
    struct hx_calib_stats st = {0};
    struct hx_progress prog;
    if (c->cal->progress_label) {
        hx_progress_init(&prog, c->cal->progress_label);
        prog.unit = "layers";
    }
    if (c->family == QZ_GPTQ || c->family == QZ_AWQ) {
        rc = cq_sequential(c, act_q8, &st, &prog);
    } else { // one pass over the source model, every site
        rc = hx_calib_collect(c->src, L, c->cal, act_q8, -1, 1, 0, &st, c->err);
        hx_calib_stats_finish(&st);
        for (int l = 0; l < L && !rc; l++) {
            rc = cq_layer_run(c, l, &st);
            cq_gptq_drop(c);
            cq_release_layer(c->src, l);
            if (!rc) rc = cq_layer_done(c, &prog, l, L);
        }
    }
    if (c->cal->progress_label) hx_progress_end(&prog);
    if (!rc) rc = cq_output(c, st.site && hx_calib_site_output(&st)->width ? hx_calib_site_output(&st) : NULL);
    hx_calib_stats_free(&st);
    return rc;
}

int hx_calib_quantize(const struct kn_weights *src, const struct qz_variant *v, const struct hx_calib *cal,
                      struct hx_quant_model **out, char *err) {
    double t0 = qp_now();
    *out = NULL;
    struct cq c = {.src = src, .v = v, .cal = cal, .err = err};
    int rc = cq_family(v, &c.family, err);
    if (!rc) rc = cq_begin(&c);
    if (!rc) rc = cq_run(&c);
    cq_gptq_drop(&c); // (an error inside a layer leaves its factor)
    c.rep.seconds = qp_now() - t0;
    if (!rc && cal->report) { // the records go to the caller
        hx_calib_report_clear(cal->report);
        *cal->report = c.rep;
        memset(&c.rep, 0, sizeof c.rep);
    }
    hx_calib_report_clear(&c.rep);
    if (rc) {
        hx_quant_model_destroy(c.m);
        return rc;
    }
    hx_quant_model_end(c.m);
    *out = c.m;
    return 0;
}
