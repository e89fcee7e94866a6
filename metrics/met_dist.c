// met_dist.c — lockstep distribution statistics with llama.cpp --kl-divergence semantics
// (met_dist.h).
#include "met_dist.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "met_ppl.h"
#include "met_quantile.h"
#include "qp.h"

// ---------------------------------------------------------------------------------------------
// Types

struct met_dist {
    struct met_nll ref, var; // sum and sum of squares of nll_ref / nll_var, and the count
    double sum_rv;           // sum of nll_ref * nll_var
    double sum_kld, sum_kld2;
    double sum_dp, sum_dp2, sum_dp4;
    int64_t n_same_top;
    int64_t n, cap;
    double *kld; // (cap) per-token KLD in push order until finish sorts it
    double *dp;  // (cap) per-token Δp, likewise
};

const double met_pct_fraction[MET_PCT_N] = {
    [MET_PCT_MIN] = 0.0,    [MET_PCT_0_1] = 0.001, [MET_PCT_1] = 0.01,     [MET_PCT_5] = 0.05,
    [MET_PCT_10] = 0.10,    [MET_PCT_25] = 0.25,   [MET_PCT_MEDIAN] = 0.5, [MET_PCT_75] = 0.75,
    [MET_PCT_90] = 0.90,    [MET_PCT_95] = 0.95,   [MET_PCT_99] = 0.99,    [MET_PCT_99_9] = 0.999,
    [MET_PCT_MAX] = 1.0,
};

const char *const met_pct_name[MET_PCT_N] = {
    [MET_PCT_MIN] = "min", [MET_PCT_0_1] = "p0.1",      [MET_PCT_1] = "p1",    [MET_PCT_5] = "p5",
    [MET_PCT_10] = "p10",  [MET_PCT_25] = "p25",        [MET_PCT_MEDIAN] = "median",
    [MET_PCT_75] = "p75",  [MET_PCT_90] = "p90",        [MET_PCT_95] = "p95",  [MET_PCT_99] = "p99",
    [MET_PCT_99_9] = "p99.9", [MET_PCT_MAX] = "max",
};

// ---------------------------------------------------------------------------------------------
// Per-token statistics

void met_dist_token(const float *ref, const float *var, int vocab, int token,
                    struct met_dist_tok *out) {
    QP_ASSERT(vocab > 0 && token >= 0 && token < vocab);

    // Pass 1: maxima and argmaxes; strict '>' keeps the lowest index on ties (as llama.cpp).
    float mr = ref[0], mv = var[0];
    int ir = 0, iv = 0;
    for (int i = 1; i < vocab; i++) {
        if (ref[i] > mr) mr = ref[i], ir = i;
        if (var[i] > mv) mv = var[i], iv = i;
    }

    // Pass 2, in double: S_r = sum exp(xr), S_v = sum exp(xv), T = sum exp(xr)*(xr - xv), with
    // x = l - max. Then log p_i = x_i - log S and
    //   KLD = sum p_r (log p_r - log p_v) = T/S_r + (log S_v - log S_r)    (sum p_r = 1),
    // one pass without storing probabilities. Bit-identical rows give T = 0 and equal sums, so
    // KLD = 0 exactly. exp(xr) = 0 (xr = -inf) is skipped: 0*log 0 counts as 0.
    double sr = 0, sv = 0, t = 0;
    for (int i = 0; i < vocab; i++) {
        double xr = (double)ref[i] - (double)mr, xv = (double)var[i] - (double)mv;
        double er = exp(xr);
        sr += er;
        sv += exp(xv);
        if (er > 0) t += er * (xr - xv);
    }
    double lsr = log(sr), lsv = log(sv);
    double lp_ref = ((double)ref[token] - (double)mr) - lsr;
    double lp_var = ((double)var[token] - (double)mv) - lsv;

    out->nll_ref = -lp_ref;
    out->nll_var = -lp_var;
    out->kld = t / sr + (lsv - lsr);
    out->dp = exp(lp_var) - exp(lp_ref);
    out->top_ref = ir;
    out->top_var = iv;
    out->same_top = ir == iv;
}

// ---------------------------------------------------------------------------------------------
// The reference in 16 bits (met_dist.h)

void met_dist_ref_encode(const float *ref, int vocab, int token, struct met_dist_ref *out, uint16_t *codes) {
    QP_ASSERT(vocab > 0 && token >= 0 && token < vocab);
    float mr = ref[0];
    int ir = 0, finite = 1;
    for (int i = 1; i < vocab; i++)
        if (ref[i] > mr) mr = ref[i], ir = i;
    // The same sum, in the same order, as met_dist_token's S_r: nll_ref comes out bit-identical.
    double sr = 0, xmin = 0;
    for (int i = 0; i < vocab; i++) {
        double xr = (double)ref[i] - (double)mr;
        finite &= isfinite(xr) != 0;
        sr += exp(xr);
        if (xr < xmin) xmin = xr;
    }
    out->nll_ref = -(((double)ref[token] - (double)mr) - log(sr));
    out->top_ref = ir;
    out->x_min = finite ? xmin : 0.0;
    out->flags = finite ? 0 : MET_DIST_REF_NONFINITE;
    out->nll_ppl = NAN;
    double inv = finite && xmin < 0 ? MET_DIST_CODE_MAX / -xmin : 0.0;
    for (int i = 0; i < vocab; i++) {
        double q = finite && inv > 0 ? floor(((double)ref[i] - (double)mr - xmin) * inv + 0.5) : MET_DIST_CODE_MAX;
        codes[i] = (uint16_t)(q < 0 ? 0 : q > MET_DIST_CODE_MAX ? MET_DIST_CODE_MAX : q);
    }
}

// The grid value of code q: x_min + q * h.
static inline double ref_x(double xmin, double h, uint16_t q) { return xmin + (double)q * h; }

void met_dist_token_cached(const struct met_dist_ref *r, const uint16_t *codes, const float *var, int vocab,
                           int token, struct met_dist_tok *out) {
    QP_ASSERT(vocab > 0 && token >= 0 && token < vocab);
    float mv = var[0];
    int iv = 0;
    for (int i = 1; i < vocab; i++)
        if (var[i] > mv) mv = var[i], iv = i;
    // As met_dist_token, with x_r from the codes: S_v is summed exactly as there, so nll_var
    // and Δp are bit-identical; T and S_r^ use the grid values (p^ and log p^ from the same x^).
    double h = r->x_min / -(double)MET_DIST_CODE_MAX, sr = 0, sv = 0, t = 0;
    for (int i = 0; i < vocab; i++) {
        double xr = ref_x(r->x_min, h, codes[i]), xv = (double)var[i] - (double)mv;
        double er = exp(xr);
        sr += er;
        sv += exp(xv);
        if (er > 0) t += er * (xr - xv);
    }
    double lsv = log(sv), lp_var = ((double)var[token] - (double)mv) - lsv;
    out->nll_ref = r->nll_ref;
    out->nll_var = -lp_var;
    out->kld = r->flags & MET_DIST_REF_NONFINITE ? NAN : t / sr + (lsv - log(sr));
    out->dp = exp(lp_var) - exp(-r->nll_ref);
    out->top_ref = r->top_ref;
    out->top_var = iv;
    out->same_top = r->top_ref == iv;
}

double met_dist_cached_bound(const float *ref, const float *var, int vocab) {
    struct met_dist_tok t;
    met_dist_token(ref, var, vocab, 0, &t);
    float mr = ref[0], mv = var[0];
    for (int i = 1; i < vocab; i++) {
        if (ref[i] > mr) mr = ref[i];
        if (var[i] > mv) mv = var[i];
    }
    double sr = 0, sv = 0, xmin = 0, xmax = 0;
    for (int i = 0; i < vocab; i++) {
        double xr = (double)ref[i] - mr, xv = (double)var[i] - mv;
        sr += exp(xr);
        sv += exp(xv);
        xmin = fmin(xmin, xr);
        xmax = fmax(xmax, -xv);
    }
    double lsr = log(sr), lsv = log(sv), m = 0;
    for (int i = 0; i < vocab; i++) {
        double lp = (double)ref[i] - mr - lsr, lq = (double)var[i] - mv - lsv;
        m += exp(lp) * fabs(lp - lq - t.kld);
    }
    double g = expm1(2.0 * (-xmin / (2.0 * MET_DIST_CODE_MAX)));
    return g * m + g * g + vocab * ldexp(1.0, -50) * (1.0 + fmax(-xmin, xmax));
}

// ---------------------------------------------------------------------------------------------
// Accumulator

int met_dist_create(int64_t n_hint, struct met_dist **out) {
    *out = NULL;
    struct met_dist *d = calloc(1, sizeof *d);
    if (!d) return QP_ENOMEM;
    d->cap = n_hint > 0 ? n_hint : 1024;
    if ((uint64_t)d->cap <= SIZE_MAX / sizeof(double)) {
        d->kld = malloc((size_t)d->cap * sizeof *d->kld);
        d->dp = malloc((size_t)d->cap * sizeof *d->dp);
    }
    if (!d->kld || !d->dp) {
        met_dist_destroy(d);
        return QP_ENOMEM;
    }
    *out = d;
    return 0;
}

void met_dist_destroy(struct met_dist *d) {
    if (!d) return;
    free(d->kld);
    free(d->dp);
    free(d);
}

int64_t met_dist_count(const struct met_dist *d) { return d->n; }

static int grow(struct met_dist *d) {
    int64_t cap = d->cap * 2;
    if ((uint64_t)cap > SIZE_MAX / sizeof(double)) return QP_ENOMEM;
    double *k = realloc(d->kld, (size_t)cap * sizeof *k);
    if (!k) return QP_ENOMEM;
    d->kld = k; // kept even if the next realloc fails: it is only larger
    double *p = realloc(d->dp, (size_t)cap * sizeof *p);
    if (!p) return QP_ENOMEM;
    d->dp = p;
    d->cap = cap;
    return 0;
}

int met_dist_push(struct met_dist *d, const struct met_dist_tok *t) {
    if (d->n == d->cap) {
        int rc = grow(d);
        if (rc) return rc;
    }
    met_nll_add(&d->ref, t->nll_ref);
    met_nll_add(&d->var, t->nll_var);
    d->sum_rv += t->nll_ref * t->nll_var;
    d->sum_kld += t->kld;
    d->sum_kld2 += t->kld * t->kld;
    double dp2 = t->dp * t->dp;
    d->sum_dp += t->dp;
    d->sum_dp2 += dp2;
    d->sum_dp4 += dp2 * dp2;
    d->n_same_top += t->same_top != 0;
    d->kld[d->n] = t->kld;
    d->dp[d->n] = t->dp;
    d->n++;
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Summary

// llama.cpp's mean_and_uncertainty(): mean, and sqrt(var/(n-1)) only when n > 10 and var > 0.
static void mean_unc(double sum, double sum2, int64_t n, double *mean, double *unc) {
    double f = sum / (double)n;
    double df = sum2 / (double)n - f * f;
    *mean = f;
    *unc = df > 0 && n > 10 ? sqrt(df / (double)(n - 1)) : 0.0;
}

// llama.cpp's covariance(): of the two means, 0 when n < 10.
static double cov_of_means(double suma, double sumb, double sumab, int64_t n) {
    if (n < 10) return 0.0;
    double c = sumab / (double)n - (suma / (double)n) * (sumb / (double)n);
    return c / (double)(n - 1);
}

static void percentiles(double *v, int64_t n, double *pct) {
    met_sort_f64(v, (size_t)n);
    for (int k = 0; k < MET_PCT_N; k++)
        pct[k] = k == MET_PCT_MEDIAN ? met_median_sorted(v, (size_t)n)
                                     : met_quantile_sorted(v, (size_t)n, met_pct_fraction[k]);
}

void met_dist_finish(struct met_dist *d, struct met_dist_summary *out) {
    memset(out, 0, sizeof *out);
    int64_t n = d->n;
    out->n = n;
    if (n == 0) { // no data: every statistic is undefined
        out->nll_ref = out->nll_ref_unc = out->nll_var = out->nll_var_unc = NAN;
        out->ppl_ref = out->ppl_ref_unc = out->ppl_var = out->ppl_var_unc = NAN;
        out->nll_cov = out->nll_cor = out->ln_ratio = out->ln_ratio_unc = NAN;
        out->ppl_ratio = out->ppl_ratio_unc = out->ppl_diff = out->ppl_diff_unc = NAN;
        out->kld_mean = out->kld_unc = out->dp_mean = out->dp_unc = NAN;
        out->dp_rms = out->dp_rms_unc = out->same_top = out->same_top_unc = NAN;
        for (int k = 0; k < MET_PCT_N; k++) out->kld_pct[k] = out->dp_pct[k] = NAN;
        return;
    }

    // Perplexity statistics. PPL and its uncertainty come from met_ppl.h (the same formula as
    // llama.cpp's), with llama.cpp's KLD-mode rule of no uncertainty for n <= 10.
    mean_unc(d->ref.sum, d->ref.sum2, n, &out->nll_ref, &out->nll_ref_unc);
    mean_unc(d->var.sum, d->var.sum2, n, &out->nll_var, &out->nll_var_unc);
    out->ppl_ref = met_ppl(&d->ref);
    out->ppl_var = met_ppl(&d->var);
    out->ppl_ref_unc = n > 10 ? met_ppl_stderr(&d->ref) : 0.0;
    out->ppl_var_unc = n > 10 ? met_ppl_stderr(&d->var) : 0.0;

    double cov = cov_of_means(d->var.sum, d->ref.sum, d->sum_rv, n);
    out->nll_cov = cov;
    out->nll_cor = out->nll_var_unc > 0 && out->nll_ref_unc > 0
                       ? cov / (out->nll_var_unc * out->nll_ref_unc)
                       : 0.0;

    // The paired uncertainty: var(a - b) = var(a) + var(b) - 2 cov(a, b). Rounding can push it
    // a hair below 0 for (nearly) identical series, where llama.cpp would print nan.
    double lr2 = out->nll_var_unc * out->nll_var_unc + out->nll_ref_unc * out->nll_ref_unc -
                 2.0 * cov;
    out->ln_ratio = out->nll_var - out->nll_ref;
    out->ln_ratio_unc = sqrt(lr2 > 0 ? lr2 : 0.0);
    out->ppl_ratio = exp(out->ln_ratio);
    out->ppl_ratio_unc = out->ppl_ratio * out->ln_ratio_unc;

    double pd2 = out->ppl_var_unc * out->ppl_var_unc + out->ppl_ref_unc * out->ppl_ref_unc -
                 2.0 * out->ppl_var * out->ppl_ref * cov;
    out->ppl_diff = out->ppl_var - out->ppl_ref;
    out->ppl_diff_unc = sqrt(pd2 > 0 ? pd2 : 0.0);

    // KL divergence statistics.
    mean_unc(d->sum_kld, d->sum_kld2, n, &out->kld_mean, &out->kld_unc);
    percentiles(d->kld, n, out->kld_pct);

    // Token probability statistics. RMS Δp: sqrt of the mean of Δp², with the uncertainty
    // propagated through d sqrt(x)/dx = 1/(2 sqrt(x)).
    mean_unc(d->sum_dp, d->sum_dp2, n, &out->dp_mean, &out->dp_unc);
    percentiles(d->dp, n, out->dp_pct);
    double mse, mse_unc;
    mean_unc(d->sum_dp2, d->sum_dp4, n, &mse, &mse_unc);
    out->dp_rms = sqrt(mse);
    out->dp_rms_unc = out->dp_rms > 0 ? 0.5 / out->dp_rms * mse_unc : 0.0;

    out->n_same_top = d->n_same_top;
    double p = (double)d->n_same_top / (double)n;
    out->same_top = p;
    out->same_top_unc = n > 1 ? sqrt(p * (1 - p) / (double)(n - 1)) : 0.0;
}
