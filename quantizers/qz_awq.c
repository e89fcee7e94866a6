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

int qz_awq_quantize(const double *gram, const float *xmean, int64_t n_in, struct qz_awq_linear *lin,
                    int n_lin, float *s, struct qz_awq_info *info, char *err) {
    double t0 = qp_now();
    if (n_in < 1) return qp_fail(err, QP_EINVAL, "awq: no inputs");
    for (int64_t j = 0; j < n_in; j++)
        if (!isfinite(xmean[j]) || xmean[j] < 0) return qp_fail(err, QP_EINVAL, "awq: bad activation mean");
    for (int64_t k = 0; k < n_in * n_in; k++)
        if (!isfinite(gram[k])) return qp_fail(err, QP_EINVAL, "awq: the input covariance holds NaN or inf");
    int64_t max_rows = 0, total_rows = 0;
    for (int i = 0; i < n_lin; i++) {
        if (lin[i].b && !is_group_grid(lin[i].b)) return qp_fail(err, QP_EINVAL, "awq: member %d has no group grid", i);
        for (int64_t k = 0; k < lin[i].rows * n_in; k++)
            if (!isfinite(lin[i].w[k])) return qp_fail(err, QP_EINVAL, "awq: member %d holds NaN or inf", i);
        max_rows = QP_MAX(max_rows, lin[i].rows);
        if (lin[i].b) total_rows += lin[i].rows;
    }
    int n_thr = omp_get_max_threads();
    size_t big = (size_t)(max_rows * n_in);
    double *delta = qp_alloc_array(big ? big : 1, sizeof(double));
    double *m = qp_alloc_array(big ? big : 1, sizeof(double));
    float *ws = qp_alloc_array((size_t)n_thr * (size_t)(2 * n_in), sizeof(float));
    float *cand = qp_alloc_array((size_t)n_in, sizeof(float));
    double *dscr = qp_alloc_array((size_t)n_thr * (size_t)n_in, sizeof(double)); // clip search
    if (!delta || !m || !ws || !cand || !dscr) {
        qp_free(delta), qp_free(m), qp_free(ws), qp_free(cand), qp_free(dscr);
        return qp_fail(err, QP_ENOMEM, "awq: out of memory");
    }

    // Scale search.
    double best = INFINITY, best_alpha = 0, plain = 0;
    for (int64_t j = 0; j < n_in; j++) s[j] = 1.0f;
    for (int a = 0; a < QZ_AWQ_N_ALPHA && total_rows > 0; a++) {
        double alpha = a / (double)QZ_AWQ_N_ALPHA;
        qz_awq_scales(xmean, n_in, alpha, cand);
        double loss = 0;
        for (int i = 0; i < n_lin; i++)
            if (lin[i].b) loss += member_loss(&lin[i], gram, cand, n_in, NULL, 0, ws, NULL, delta, m);
        loss /= (double)total_rows;
        if (a == 0) plain = loss;
        if (loss < best) {
            best = loss, best_alpha = alpha;
            memcpy(s, cand, (size_t)n_in * sizeof *s);
        }
    }

    // Clipping search per (row, group), then the final quantization.
    double final_loss = 0;
    int rc = 0;
    for (int i = 0; i < n_lin && !rc; i++) {
        struct qz_awq_linear *l = &lin[i];
        if (!l->b) {
            for (int64_t r = 0; r < l->rows; r++)
                for (int64_t j = 0; j < n_in; j++) l->out[r * n_in + j] = l->w[r * n_in + j] * s[j];
            l->loss = 0;
            continue;
        }
        int64_t G = l->b->group, n_groups = (n_in + G - 1) / G;
        float *p = NULL;
        if (l->clip) {
            p = qp_alloc_array((size_t)(l->rows * n_groups), sizeof(float));
            if (!p) {
                rc = qp_fail(err, QP_ENOMEM, "awq: out of memory");
                break;
            }
#pragma omp parallel for schedule(static) if (l->rows * n_in > (1 << 12))
            for (int64_t r = 0; r < l->rows; r++) {
                float *w_s = ws + (size_t)omp_get_thread_num() * (size_t)(2 * n_in);
                double *d = dscr + (size_t)omp_get_thread_num() * (size_t)n_in;
                const float *wr = l->w + r * n_in;
                for (int64_t j = 0; j < n_in; j++) w_s[j] = wr[j] * s[j];
                for (int64_t g0 = 0, g = 0; g0 < n_in; g0 += G, g++) {
                    int64_t n = QP_MIN(G, n_in - g0);
                    double best_e = INFINITY;
                    float best_p = 1.0f;
                    for (int c = 0; c < QZ_AWQ_N_CLIP; c++) {
                        struct qz_grid gr;
                        qz_grid_fit(l->b, w_s + g0, n, clip_ratio(c), &gr);
                        for (int64_t k = 0; k < n; k++)
                            d[k] = (double)qz_grid_value(&gr, qz_grid_code(&gr, w_s[g0 + k])) / (double)s[g0 + k] -
                                   (double)wr[g0 + k];
                        double e = 0;
                        for (int64_t k = 0; k < n; k++) {
                            const double *cr = gram + (g0 + k) * n_in + g0;
                            double t = 0;
                            for (int64_t k2 = 0; k2 < n; k2++) t += cr[k2] * d[k2];
                            e += d[k] * t;
                        }
                        if (e < best_e) best_e = e, best_p = clip_ratio(c);
                    }
                    p[r * n_groups + g] = best_p;
                }
            }
        }
        double e = member_loss(l, gram, s, n_in, p, n_groups, ws, l->out, delta, m);
        l->loss = e / (double)l->rows;
        final_loss += e;
        qp_free(p);
    }
    qp_free(delta), qp_free(m), qp_free(ws), qp_free(cand), qp_free(dscr);
    if (rc) return rc;
    if (info) {
        *info = (struct qz_awq_info){
            .alpha = best_alpha,
            .loss_plain = plain,
            .loss_scale = total_rows ? best : 0,
            .loss = total_rows ? final_loss / (double)total_rows : 0,
            .seconds = qp_now() - t0,
        };
    }
    return 0;
}
