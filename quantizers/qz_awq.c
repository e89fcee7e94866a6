// qz_awq.c — AWQ scale and clipping search for one group of linears (qz_awq.h).
//
// Depends on kernels/ headers, quantizers/ and OpenBLAS's cblas; never on harness/.
#include "qz_awq.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "qp.h"
#include "qz_rtn.h"

// ---------------------------------------------------------------------------------------------
// Helpers

void qz_awq_scales(const float *xmean, int64_t n_in, double alpha, float *s) {
    double lo = INFINITY, hi = 0;
    for (int64_t j = 0; j < n_in; j++) {
        double v = fmax(pow((double)xmean[j], alpha), QZ_AWQ_MIN_SCALE);
        lo = fmin(lo, v), hi = fmax(hi, v);
        s[j] = (float)v;
    }
    double norm = sqrt(hi * lo);
    for (int64_t j = 0; j < n_in; j++) s[j] = (float)(s[j] / norm);
}

static float clip_ratio(int i) { return (float)(1.0 - 0.5 * i / (QZ_AWQ_N_CLIP - 1)); }

// One row of a member: y = Q(w ∘ s) with range factor p[g] per group (p = NULL: 1), written to
// y (scaled space); delta = y / s − w (original space). ws: scratch of n_in floats.
static void quant_row(const struct qz_base *b, const float *w, const float *s, int64_t n_in,
                      const float *p, float *ws, float *y, double *delta) {
    int64_t G = b->group;
    for (int64_t j = 0; j < n_in; j++) ws[j] = w[j] * s[j];
    for (int64_t g0 = 0, g = 0; g0 < n_in; g0 += G, g++) {
        int64_t n = QP_MIN(G, n_in - g0);
        struct qz_grid gr;
        qz_grid_fit(b, ws + g0, n, p ? p[g] : 1.0f, &gr);
        for (int64_t k = 0; k < n; k++) y[g0 + k] = qz_grid_value(&gr, qz_grid_code(&gr, ws[g0 + k]));
    }
    if (delta)
        for (int64_t j = 0; j < n_in; j++) delta[j] = (double)y[j] / (double)s[j] - (double)w[j];
}

// Σ_r Δ_r C Δ_rᵀ for Δ (rows × n) using m (rows × n) as scratch.
static double quad_sum(const double *delta, const double *c, int64_t rows, int64_t n, double *m) {
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)n, (int)n, 1.0, delta, (int)n, c,
                (int)n, 0.0, m, (int)n);
    double t = 0;
    for (int64_t k = 0; k < rows * n; k++) t += delta[k] * m[k];
    return t;
}

// Loss of one member under scales s (no clipping unless p is given per (row, group)): fills
// delta (rows × n_in) and, when y is not NULL, the quantized rows.
static double member_loss(const struct qz_awq_linear *l, const double *c, const float *s, int64_t n_in,
                          const float *p, int64_t n_groups, float *ws_all, float *y, double *delta,
                          double *m) {
#pragma omp parallel for schedule(static) if (l->rows * n_in > (1 << 14))
    for (int64_t r = 0; r < l->rows; r++) {
        float *ws = ws_all + (size_t)omp_get_thread_num() * (size_t)(2 * n_in);
        float *yr = y ? y + r * n_in : ws + n_in;
        quant_row(l->b, l->w + r * n_in, s, n_in, p ? p + r * n_groups : NULL, ws, yr, delta + r * n_in);
    }
    return quad_sum(delta, c, l->rows, n_in, m);
}

static int is_group_grid(const struct qz_base *b) {
    return (b->method == QZ_AWQ || b->method == QZ_RTN) && b->gran == QZ_GROUP && b->group >= 1 &&
           b->bits >= 2 && b->bits <= 8;
}

// ---------------------------------------------------------------------------------------------
// The search

// One search: the group's inputs and the work buffers.
struct aw {
    const double *gram;         // (n_in, n_in)
    const float *xmean;         // (n_in)
    int64_t n_in;
    struct qz_awq_linear *lin;
    int n_lin;
    int64_t max_rows, total_rows; // rows of the largest member; of the quantized members
    double *delta, *m;          // (max_rows, n_in) errors and scratch
    float *ws, *cand;           // (threads, 2 n_in) row scratch; (n_in) candidate scales
    double *dscr;               // (threads, n_in) clip search
};

static void aw_free(struct aw *w) {
    qp_free(w->delta), qp_free(w->m), qp_free(w->ws), qp_free(w->cand), qp_free(w->dscr);
}

// Finite inputs, members with a group grid; the row counts.
static int aw_check(struct aw *w, char *err) {
    int64_t n_in = w->n_in;
    if (n_in < 1) return qp_fail(err, QP_EINVAL, "awq: no inputs");
    for (int64_t j = 0; j < n_in; j++)
        if (!isfinite(w->xmean[j]) || w->xmean[j] < 0) return qp_fail(err, QP_EINVAL, "awq: bad activation mean");
    for (int64_t k = 0; k < n_in * n_in; k++)
        if (!isfinite(w->gram[k])) return qp_fail(err, QP_EINVAL, "awq: the input covariance holds NaN or inf");
    for (int i = 0; i < w->n_lin; i++) {
        const struct qz_awq_linear *l = &w->lin[i];
        if (l->b && !is_group_grid(l->b)) return qp_fail(err, QP_EINVAL, "awq: member %d has no group grid", i);
        for (int64_t k = 0; k < l->rows * n_in; k++)
            if (!isfinite(l->w[k])) return qp_fail(err, QP_EINVAL, "awq: member %d holds NaN or inf", i);
        w->max_rows = QP_MAX(w->max_rows, l->rows);
        if (l->b) w->total_rows += l->rows;
    }
    return 0;
}

static int aw_alloc(struct aw *w, char *err) {
    int n_thr = omp_get_max_threads();
    size_t big = (size_t)(w->max_rows * w->n_in);
    w->delta = qp_alloc_array(big ? big : 1, sizeof(double));
    w->m = qp_alloc_array(big ? big : 1, sizeof(double));
    w->ws = qp_alloc_array((size_t)n_thr * (size_t)(2 * w->n_in), sizeof(float));
    w->cand = qp_alloc_array((size_t)w->n_in, sizeof(float));
    w->dscr = qp_alloc_array((size_t)n_thr * (size_t)w->n_in, sizeof(double));
    if (!w->delta || !w->m || !w->ws || !w->cand || !w->dscr) return qp_fail(err, QP_ENOMEM, "awq: out of memory");
    return 0;
}

// Scale search over α = 0, 1/N, ...: the scales with the least loss of the quantized members
// into s; the loss without scaling (α = 0) and the best, per row.
static void aw_scales(struct aw *w, float *s, double *best, double *best_alpha, double *plain) {
    *best = INFINITY, *best_alpha = 0, *plain = 0;
    for (int64_t j = 0; j < w->n_in; j++) s[j] = 1.0f;
    for (int a = 0; a < QZ_AWQ_N_ALPHA && w->total_rows > 0; a++) {
        double alpha = a / (double)QZ_AWQ_N_ALPHA;
        qz_awq_scales(w->xmean, w->n_in, alpha, w->cand);
        double loss = 0;
        for (int i = 0; i < w->n_lin; i++)
            if (w->lin[i].b) loss += member_loss(&w->lin[i], w->gram, w->cand, w->n_in, NULL, 0, w->ws, NULL, w->delta, w->m);
        loss /= (double)w->total_rows;
        if (a == 0) *plain = loss;
        if (loss < *best) {
            *best = loss, *best_alpha = alpha;
            memcpy(s, w->cand, (size_t)w->n_in * sizeof *s);
        }
    }
}

// The clipping ratio of one group (g0, n values) of row wr under scales s: the one of
// QZ_AWQ_N_CLIP ratios with the least output error Δ C Δᵀ over the group. w_s: the scaled row;
// d: n doubles of scratch.
static float aw_group_clip(const struct aw *w, const struct qz_base *b, const float *wr, const float *w_s,
                           const float *s, int64_t g0, int64_t n, double *d) {
    double best_e = INFINITY;
    float best_p = 1.0f;
    for (int c = 0; c < QZ_AWQ_N_CLIP; c++) {
        struct qz_grid gr;
        qz_grid_fit(b, w_s + g0, n, clip_ratio(c), &gr);
        for (int64_t k = 0; k < n; k++)
            d[k] = (double)qz_grid_value(&gr, qz_grid_code(&gr, w_s[g0 + k])) / (double)s[g0 + k] - (double)wr[g0 + k];
        double e = 0;
        for (int64_t k = 0; k < n; k++) {
            const double *cr = w->gram + (g0 + k) * w->n_in + g0;
            double t = 0;
            for (int64_t k2 = 0; k2 < n; k2++) t += cr[k2] * d[k2];
            e += d[k] * t;
        }
        if (e < best_e) best_e = e, best_p = clip_ratio(c);
    }
    return best_p;
}

// Clipping search per (row, group) of member l into p (rows × n_groups).
static void aw_clip(const struct aw *w, const struct qz_awq_linear *l, const float *s, int64_t n_groups, float *p) {
    int64_t n_in = w->n_in, G = l->b->group;
#pragma omp parallel for schedule(static) if (l->rows * n_in > (1 << 12))
    for (int64_t r = 0; r < l->rows; r++) {
        float *w_s = w->ws + (size_t)omp_get_thread_num() * (size_t)(2 * n_in);
        double *d = w->dscr + (size_t)omp_get_thread_num() * (size_t)n_in;
        const float *wr = l->w + r * n_in;
        for (int64_t j = 0; j < n_in; j++) w_s[j] = wr[j] * s[j];
        for (int64_t g0 = 0, g = 0; g0 < n_in; g0 += G, g++)
            p[r * n_groups + g] = aw_group_clip(w, l->b, wr, w_s, s, g0, QP_MIN(G, n_in - g0), d);
    }
}

// Member l's output under s: scaled only (no base), or clipped as searched and quantized; its
// loss Δ C Δᵀ added to *total.
static int aw_member(struct aw *w, struct qz_awq_linear *l, const float *s, double *total, char *err) {
    int64_t n_in = w->n_in;
    if (!l->b) {
        for (int64_t r = 0; r < l->rows; r++)
            for (int64_t j = 0; j < n_in; j++) l->out[r * n_in + j] = l->w[r * n_in + j] * s[j];
        l->loss = 0;
        return 0;
    }
    int64_t n_groups = (n_in + l->b->group - 1) / l->b->group;
    float *p = NULL;
    if (l->clip) {
        if (!(p = qp_alloc_array((size_t)(l->rows * n_groups), sizeof(float))))
            return qp_fail(err, QP_ENOMEM, "awq: out of memory");
        aw_clip(w, l, s, n_groups, p);
    }
    double e = member_loss(l, w->gram, s, n_in, p, n_groups, w->ws, l->out, w->delta, w->m);
    l->loss = e / (double)l->rows;
    *total += e;
    qp_free(p);
    return 0;
}

int qz_awq_quantize(const double *gram, const float *xmean, int64_t n_in, struct qz_awq_linear *lin,
                    int n_lin, float *s, struct qz_awq_info *info, char *err) {
    double t0 = qp_now(), best, best_alpha, plain, final_loss = 0;
    struct aw w = {.gram = gram, .xmean = xmean, .n_in = n_in, .lin = lin, .n_lin = n_lin};
    int rc = aw_check(&w, err);
    if (!rc) rc = aw_alloc(&w, err);
    if (!rc) aw_scales(&w, s, &best, &best_alpha, &plain);
    for (int i = 0; i < n_lin && !rc; i++) rc = aw_member(&w, &lin[i], s, &final_loss, err);
    aw_free(&w);
    if (rc) return rc;
    if (info) {
        *info = (struct qz_awq_info){
            .alpha = best_alpha,
            .loss_plain = plain,
            .loss_scale = w.total_rows ? best : 0,
            .loss = w.total_rows ? final_loss / (double)w.total_rows : 0,
            .seconds = qp_now() - t0,
        };
    }
    return 0;
}
