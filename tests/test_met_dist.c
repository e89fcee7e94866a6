// test_met_dist.c — lockstep distribution statistics (metrics/met_dist.h) and the percentile
// helper (metrics/met_quantile.h): per-token NLL/KLD/Δp/top-1 against an explicit softmax
// written differently from the module (no max subtraction, probabilities first, per-term
// KLD); every summary statistic against a direct two-pass computation on synthetic logits;
// percentiles and the paired ln-ratio uncertainty on hand-checked series; degenerate cases
// (identical models, ties, masked logits, few or no tokens); and bit-identical results however
// the per-token work is spread over threads.
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "met_dist.h"
#include "met_ppl.h"
#include "met_quantile.h"
#include "qp.h"
#include "qp_test.h"

// Tolerances (QP_CHECK_NEAR: absolute below 1, relative above).
// Per-token values: the module subtracts the max and forms KLD as T/S + log-ratio, the test
// sums p*log(p/q) term by term; both are fp64 on O(1) quantities, so they agree to ~1e-15.
#define TOL_TOKEN 1e-12
// Summary values: one-pass sums (module) vs two-pass (test) over a few hundred O(1) values.
#define TOL_SUM 1e-10

static struct qpt_rng rng = {0x9e3779b97f4a7c15ull};
static double urand(void) { return qpt_urand(&rng); } // (0, 1)
static double gauss(void) { return qpt_gauss(&rng); }

// ---------------------------------------------------------------------------------------------
// Independent reference computations

struct direct_tok {
    double nll_ref, nll_var, kld, dp;
    int top_ref, top_var;
};

// Explicit softmax without max subtraction (the synthetic logits are small), then the textbook
// sums. Argmax by scanning from the end with >=, which also lands on the lowest index.
static void direct_token(const float *ref, const float *var, int vocab, int tok, struct direct_tok *o) {
    double *p = malloc((size_t)vocab * sizeof *p), *q = malloc((size_t)vocab * sizeof *q);
    double zp = 0, zq = 0;
    for (int i = 0; i < vocab; i++) zp += exp((double)ref[i]), zq += exp((double)var[i]);
    for (int i = 0; i < vocab; i++) p[i] = exp((double)ref[i]) / zp, q[i] = exp((double)var[i]) / zq;
    double kld = 0;
    for (int i = 0; i < vocab; i++)
        if (p[i] > 0) kld += p[i] * log(p[i] / q[i]);
    int tr = vocab - 1, tv = vocab - 1;
    for (int i = vocab - 1; i >= 0; i--) {
        if (ref[i] >= ref[tr]) tr = i;
        if (var[i] >= var[tv]) tv = i;
    }
    o->nll_ref = -log(p[tok]);
    o->nll_var = -log(q[tok]);
    o->kld = kld;
    o->dp = q[tok] - p[tok];
    o->top_ref = tr, o->top_var = tv;
    free(p);
    free(q);
}

// Two-pass mean and llama.cpp's standard error of the mean (0 when n <= 10).
static void two_pass(const double *x, int n, double *mean, double *sem) {
    double m = 0;
    for (int i = 0; i < n; i++) m += x[i];
    m /= n;
    double v = 0;
    for (int i = 0; i < n; i++) v += (x[i] - m) * (x[i] - m);
    v /= n; // population variance, as llama.cpp's mean(x²) - mean(x)²
    *mean = m;
    *sem = n > 10 ? sqrt(v / (n - 1)) : 0.0;
}

static double two_pass_cov(const double *a, const double *b, int n) {
    double ma = 0, mb = 0;
    for (int i = 0; i < n; i++) ma += a[i], mb += b[i];
    ma /= n, mb /= n;
    double c = 0;
    for (int i = 0; i < n; i++) c += (a[i] - ma) * (b[i] - mb);
    return c / n;
}

// Percentile by "rank h = f(n-1), step from the lower neighbour" on an insertion-sorted copy.
static void insertion_sort(double *v, int n) {
    for (int i = 1; i < n; i++) {
        double x = v[i];
        int j = i - 1;
        while (j >= 0 && v[j] > x) v[j + 1] = v[j], j--;
        v[j + 1] = x;
    }
}
static double direct_pct(const double *sorted, int n, double f) {
    double h = f * (n - 1);
    int lo = (int)floor(h), hi = (int)ceil(h);
    if (hi > n - 1) hi = n - 1;
    return sorted[lo] + (h - lo) * (sorted[hi] - sorted[lo]);
}
static double direct_median(const double *sorted, int n) {
    return n % 2 ? sorted[(n - 1) / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
}

// ---------------------------------------------------------------------------------------------
// Synthetic lockstep logits: ref ~ N(0, 2²), var = ref + N(0, noise²); every 10th row is an
// exact copy (KLD 0), most others with t % 7 == 3 have a forced tie for the variant's maximum.

struct synth {
    int n, vocab;
    float *ref, *var; // (n, vocab)
    int *tok;         // (n)
};

static struct synth make_synth(int n, int vocab, double noise) {
    struct synth s = {n, vocab, malloc((size_t)n * vocab * sizeof(float)),
                      malloc((size_t)n * vocab * sizeof(float)), malloc((size_t)n * sizeof(int))};
    for (int t = 0; t < n; t++) {
        float *r = s.ref + (size_t)t * vocab, *v = s.var + (size_t)t * vocab;
        for (int i = 0; i < vocab; i++) {
            r[i] = (float)(2.0 * gauss());
            v[i] = t % 10 == 0 ? r[i] : (float)(r[i] + noise * gauss());
        }
        if (t % 7 == 3 && t % 10 != 0) { // tie in the variant's maximum, at indices 5 and 9
            float m = v[0];
            for (int i = 1; i < vocab; i++) m = v[i] > m ? v[i] : m;
            v[5] = v[9] = m + 1.0f;
        }
        s.tok[t] = (int)(urand() * vocab); // the correct token: any
    }
    return s;
}

static void free_synth(struct synth *s) {
    free(s->ref);
    free(s->var);
    free(s->tok);
}

static struct met_dist *new_dist(int64_t hint) {
    struct met_dist *d;
    QP_CHECK_INT_EQ(met_dist_create(hint, &d), 0);
    QP_CHECK(d != NULL);
    return d;
}

static void push_all(struct met_dist *d, const struct met_dist_tok *t, int n) {
    for (int i = 0; i < n; i++) QP_CHECK_INT_EQ(met_dist_push(d, &t[i]), 0);
}

static struct met_dist_tok tok_nll(double nll_ref, double nll_var) {
    struct met_dist_tok t = {nll_ref, nll_var, 0, 0, 0, 0, 1};
    return t;
}

// ---------------------------------------------------------------------------------------------
// Percentile helper

QP_TEST(quantile_should_match_hand_values_on_five_values) {
    double v[5] = {3, 1, 4, 1, 5};
    met_sort_f64(v, 5); // 1 1 3 4 5
    QP_CHECK(v[0] == 1 && v[1] == 1 && v[2] == 3 && v[3] == 4 && v[4] == 5);
    QP_CHECK(met_quantile_sorted(v, 5, 0.0) == 1);
    QP_CHECK(met_quantile_sorted(v, 5, -0.5) == 1);
    QP_CHECK(met_quantile_sorted(v, 5, 1.0) == 5);
    QP_CHECK(met_quantile_sorted(v, 5, 1.5) == 5);
    QP_CHECK_NEAR(met_quantile_sorted(v, 5, 0.10), 1.0, 1e-15);  // p = 0.4: between 1 and 1
    QP_CHECK_NEAR(met_quantile_sorted(v, 5, 0.25), 1.0, 1e-15);  // p = 1.0: v[1]
    QP_CHECK_NEAR(met_quantile_sorted(v, 5, 0.30), 1.4, 1e-15);  // p = 1.2: 0.8*1 + 0.2*3
    QP_CHECK_NEAR(met_quantile_sorted(v, 5, 0.75), 4.0, 1e-15);  // p = 3.0: v[3]
    QP_CHECK_NEAR(met_quantile_sorted(v, 5, 0.90), 4.6, 1e-15);  // p = 3.6: 0.4*4 + 0.6*5
    QP_CHECK_NEAR(met_quantile_sorted(v, 5, 0.99), 4.96, 1e-15); // p = 3.96
    QP_CHECK_NEAR(met_quantile_sorted(v, 5, 0.999), 4.996, 1e-15);
    QP_CHECK(met_median_sorted(v, 5) == 3);
}

QP_TEST(median_should_average_the_two_middle_values_for_even_counts) {
    double v[4] = {8, 2, 6, 4};
    met_sort_f64(v, 4); // 2 4 6 8
    QP_CHECK(met_median_sorted(v, 4) == 5);
    QP_CHECK_NEAR(met_quantile_sorted(v, 4, 0.5), 5.0, 1e-15);  // p = 1.5
    QP_CHECK_NEAR(met_quantile_sorted(v, 4, 0.90), 7.4, 1e-15); // p = 2.7: 0.3*6 + 0.7*8
    QP_CHECK_NEAR(met_quantile_sorted(v, 4, 0.05), 2.3, 1e-15); // p = 0.15
    double one = 7;
    QP_CHECK(met_quantile_sorted(&one, 1, 0.3) == 7 && met_median_sorted(&one, 1) == 7);
    QP_CHECK(isnan(met_quantile_sorted(NULL, 0, 0.5)) && isnan(met_median_sorted(NULL, 0)));
}

QP_TEST(sort_should_put_negative_zero_first_and_nans_last) {
    double a[6] = {0.0, NAN, -1.0, -0.0, 2.0, 0.0};
    double b[6] = {-0.0, 0.0, 0.0, 2.0, NAN, -1.0};
    met_sort_f64(a, 6);
    met_sort_f64(b, 6);
    QP_CHECK(a[0] == -1.0 && signbit(a[1]) && a[1] == 0 && !signbit(a[2]) && !signbit(a[3]));
    QP_CHECK(a[4] == 2.0 && isnan(a[5]));
    QP_CHECK(memcmp(a, b, 5 * sizeof(double)) == 0 && isnan(b[5]));
}

// ---------------------------------------------------------------------------------------------
// Per-token statistics

QP_TEST(kld_should_equal_direct_sum_on_small_case) {
    // p_ref = (1/2, 1/4, 1/4) from logits (ln 2, 0, 0); p_var uniform (1/3 each).
    // KLD = 1/2 ln(3/2) + 2 * 1/4 ln(3/4) = 1/2 ln(9/8).
    float ref[3] = {(float)log(2.0), 0, 0}, var[3] = {0, 0, 0};
    struct met_dist_tok t;
    met_dist_token(ref, var, 3, 1, &t);
    double lr = (double)ref[0]; // ln 2 rounded to float: redo the hand sum with it
    double z = exp(lr) + 2, p0 = exp(lr) / z, p1 = 1 / z;
    double hand = p0 * log(p0 * 3) + 2 * p1 * log(p1 * 3);
    QP_CHECK_NEAR(hand, 0.5 * log(9.0 / 8.0), 1e-7); // the float rounding of ln 2 is tiny
    QP_CHECK_NEAR(t.kld, hand, 1e-15);
    QP_CHECK_NEAR(t.nll_ref, log(z), 1e-15);  // -log(1/z)
    QP_CHECK_NEAR(t.nll_var, log(3.0), 1e-15);
    QP_CHECK_NEAR(t.dp, 1.0 / 3 - 1 / z, 1e-15);
    QP_CHECK_INT_EQ(t.top_ref, 0);
    QP_CHECK_INT_EQ(t.top_var, 0); // three-way tie: lowest index
    QP_CHECK_INT_EQ(t.same_top, 1);
}

QP_TEST(token_stats_should_equal_explicit_softmax_on_random_logits) {
    struct synth s = make_synth(400, 50, 0.3);
    int n_tie = 0, n_zero = 0;
    for (int t = 0; t < s.n; t++) {
        const float *r = s.ref + (size_t)t * s.vocab, *v = s.var + (size_t)t * s.vocab;
        struct met_dist_tok m;
        struct direct_tok d;
        met_dist_token(r, v, s.vocab, s.tok[t], &m);
        direct_token(r, v, s.vocab, s.tok[t], &d);
        QP_CHECK_NEAR(m.nll_ref, d.nll_ref, TOL_TOKEN);
        QP_CHECK_NEAR(m.nll_var, d.nll_var, TOL_TOKEN);
        QP_CHECK_NEAR(m.kld, d.kld, TOL_TOKEN);
        QP_CHECK_NEAR(m.dp, d.dp, TOL_TOKEN);
        QP_CHECK_INT_EQ(m.top_ref, d.top_ref);
        QP_CHECK_INT_EQ(m.top_var, d.top_var);
        QP_CHECK_INT_EQ(m.same_top, d.top_ref == d.top_var);
        if (t % 7 == 3 && t % 10 != 0) {
            QP_CHECK_INT_EQ(m.top_var, 5);
            n_tie++;
        }
        if (t % 10 == 0) {
            QP_CHECK(m.kld == 0 && m.dp == 0 && m.nll_ref == m.nll_var && m.same_top);
            n_zero++;
        } else {
            QP_CHECK(m.kld > 0);
        }
    }
    QP_CHECK(n_tie > 40 && n_zero == 40);
    free_synth(&s);
}

QP_TEST(token_should_pick_lowest_index_on_ties) {
    float ref[8] = {0, 3, 1, 3, 3, 0, 0, 0}, var[8] = {0, 1, 2, 1, 2, 0, 2, 0};
    struct met_dist_tok t;
    met_dist_token(ref, var, 8, 0, &t);
    QP_CHECK_INT_EQ(t.top_ref, 1);
    QP_CHECK_INT_EQ(t.top_var, 2);
    QP_CHECK_INT_EQ(t.same_top, 0);
}

QP_TEST(token_should_handle_masked_logits) {
    // A reference entry at -inf has p = 0 and contributes nothing; the variant may have any
    // value there. The same mask on both sides leaves a finite KLD.
    float ref[4] = {1, -INFINITY, 0.5f, -1}, var[4] = {0.8f, 3, 0.5f, -1};
    float ref3[3] = {1, 0.5f, -1}, var3[3] = {0.8f, 0.5f, -1};
    struct met_dist_tok t, u;
    met_dist_token(ref, var, 4, 0, &t);
    QP_CHECK(isfinite(t.kld) && t.kld > 0);
    // Equivalent to the 3-entry case with the variant's extra mass at index 1 accounted in its
    // normalizer: KLD = sum p (log p - log q), q normalized over all 4 entries.
    double zq = exp(0.8) + exp(3.0) + exp(0.5) + exp(-1.0), zp = exp(1.0) + exp(0.5) + exp(-1.0);
    double hand = 0;
    const double lr[3] = {1, 0.5, -1}, lv[3] = {0.8, 0.5, -1};
    for (int i = 0; i < 3; i++) {
        double p = exp(lr[i]) / zp, q = exp((double)(float)lv[i]) / zq;
        hand += p * log(p / q);
    }
    QP_CHECK_NEAR(t.kld, hand, 1e-6); // (float)0.8 vs 0.8 in zq
    met_dist_token(ref3, var3, 3, 0, &u);
    QP_CHECK(u.kld < t.kld);
    // The variant gives zero probability to a token the reference likes: KLD = +inf.
    float var_m[4] = {-INFINITY, 3, 0.5f, -1};
    met_dist_token(ref, var_m, 4, 2, &t);
    QP_CHECK(isinf(t.kld) && t.kld > 0);
    QP_CHECK(isfinite(t.nll_var) && isfinite(t.dp));
}

// ---------------------------------------------------------------------------------------------
// Summary statistics

QP_TEST(summary_should_match_direct_computation_on_synthetic_logits) {
    const int n = 600;
    struct synth s = make_synth(n, 50, 0.3);
    struct met_dist *d = new_dist(0);
    double *nr = malloc(n * sizeof(double)), *nv = malloc(n * sizeof(double));
    double *kl = malloc(n * sizeof(double)), *dp = malloc(n * sizeof(double));
    double *dp2 = malloc(n * sizeof(double)), *diff = malloc(n * sizeof(double));
    int same = 0;
    for (int t = 0; t < n; t++) {
        const float *r = s.ref + (size_t)t * s.vocab, *v = s.var + (size_t)t * s.vocab;
        struct met_dist_tok m;
        met_dist_token(r, v, s.vocab, s.tok[t], &m);
        QP_CHECK_INT_EQ(met_dist_push(d, &m), 0);
        struct direct_tok o;
        direct_token(r, v, s.vocab, s.tok[t], &o);
        nr[t] = o.nll_ref, nv[t] = o.nll_var, kl[t] = o.kld, dp[t] = o.dp;
        dp2[t] = o.dp * o.dp, diff[t] = o.nll_var - o.nll_ref;
        same += o.top_ref == o.top_var;
    }
    QP_CHECK_INT_EQ(met_dist_count(d), n);
    struct met_dist_summary S;
    met_dist_finish(d, &S);
    QP_CHECK_INT_EQ(S.n, n);

    double mr, ur, mv, uv, md, ud, mk, uk, mp, up, m2, u2;
    two_pass(nr, n, &mr, &ur);
    two_pass(nv, n, &mv, &uv);
    two_pass(diff, n, &md, &ud); // the paired uncertainty, straight from the differences
    two_pass(kl, n, &mk, &uk);
    two_pass(dp, n, &mp, &up);
    two_pass(dp2, n, &m2, &u2);
    double cov = two_pass_cov(nv, nr, n) / (n - 1);

    QP_CHECK_NEAR(S.nll_ref, mr, TOL_SUM);
    QP_CHECK_NEAR(S.nll_ref_unc, ur, TOL_SUM);
    QP_CHECK_NEAR(S.nll_var, mv, TOL_SUM);
    QP_CHECK_NEAR(S.nll_var_unc, uv, TOL_SUM);
    QP_CHECK_NEAR(S.ppl_ref, exp(mr), TOL_SUM);
    QP_CHECK_NEAR(S.ppl_ref_unc, exp(mr) * ur, TOL_SUM);
    QP_CHECK_NEAR(S.ppl_var, exp(mv), TOL_SUM);
    QP_CHECK_NEAR(S.ppl_var_unc, exp(mv) * uv, TOL_SUM);
    QP_CHECK_NEAR(S.nll_cov, cov, TOL_SUM);
    QP_CHECK_NEAR(S.nll_cor, cov / (ur * uv), 1e-9);
    QP_CHECK(S.nll_cor > 0.5 && S.nll_cor < 1.0);
    QP_CHECK_NEAR(S.ln_ratio, md, TOL_SUM);
    QP_CHECK_NEAR(S.ln_ratio_unc, ud, 1e-9); // var(v - r) = var v + var r - 2 cov(v, r)
    QP_CHECK_NEAR(S.ppl_ratio, exp(md), TOL_SUM);
    QP_CHECK_NEAR(S.ppl_ratio_unc, exp(md) * ud, 1e-9);
    QP_CHECK_NEAR(S.ppl_diff, exp(mv) - exp(mr), TOL_SUM);
    double pdu = sqrt(exp(2 * mv) * uv * uv + exp(2 * mr) * ur * ur - 2 * exp(mv) * exp(mr) * cov);
    QP_CHECK_NEAR(S.ppl_diff_unc, pdu, 1e-9);

    QP_CHECK_NEAR(S.kld_mean, mk, TOL_SUM);
    QP_CHECK_NEAR(S.kld_unc, uk, TOL_SUM);
    QP_CHECK_NEAR(S.dp_mean, mp, TOL_SUM);
    QP_CHECK_NEAR(S.dp_unc, up, TOL_SUM);
    QP_CHECK_NEAR(S.dp_rms, sqrt(m2), TOL_SUM);
    QP_CHECK_NEAR(S.dp_rms_unc, u2 / (2 * sqrt(m2)), TOL_SUM);
    QP_CHECK_INT_EQ(S.n_same_top, same);
    QP_CHECK_NEAR(S.same_top, (double)same / n, 1e-15);
    QP_CHECK_NEAR(S.same_top_unc, sqrt((double)same / n * (n - same) / n / (n - 1)), 1e-15);

    insertion_sort(kl, n);
    insertion_sort(dp, n);
    for (int k = 0; k < MET_PCT_N; k++) {
        double f = met_pct_fraction[k];
        double ek = k == MET_PCT_MEDIAN ? direct_median(kl, n) : direct_pct(kl, n, f);
        double ed = k == MET_PCT_MEDIAN ? direct_median(dp, n) : direct_pct(dp, n, f);
        QP_CHECK_MSG(fabs(S.kld_pct[k] - ek) <= TOL_TOKEN, "kld %s: %.17g vs %.17g", met_pct_name[k], S.kld_pct[k], ek);
        QP_CHECK_MSG(fabs(S.dp_pct[k] - ed) <= TOL_TOKEN, "dp %s: %.17g vs %.17g", met_pct_name[k], S.dp_pct[k], ed);
    }
    QP_CHECK(S.kld_pct[MET_PCT_MIN] == 0); // the exact copies
    QP_CHECK(S.kld_pct[MET_PCT_MAX] == kl[n - 1] || fabs(S.kld_pct[MET_PCT_MAX] - kl[n - 1]) < TOL_TOKEN);
    for (int k = 1; k < MET_PCT_N; k++) QP_CHECK(S.kld_pct[k] >= S.kld_pct[k - 1] && S.dp_pct[k] >= S.dp_pct[k - 1]);
    QP_CHECK(S.dp_pct[MET_PCT_MIN] < 0 && S.dp_pct[MET_PCT_MAX] > 0);

    free(nr), free(nv), free(kl), free(dp), free(dp2), free(diff);
    met_dist_destroy(d);
    free_synth(&s);
}

QP_TEST(percentiles_should_follow_llama_rule_on_five_tokens) {
    // KLD series 3 1 4 1 5 and Δp series -2 0.5 1 -1 0 pushed as tokens.
    const double k[5] = {3, 1, 4, 1, 5}, p[5] = {-2, 0.5, 1, -1, 0};
    struct met_dist *d = new_dist(2); // small hint: exercises growth
    for (int i = 0; i < 5; i++) {
        struct met_dist_tok t = {1, 1, k[i], p[i], 0, 0, 1};
        QP_CHECK_INT_EQ(met_dist_push(d, &t), 0);
    }
    struct met_dist_summary S;
    met_dist_finish(d, &S);
    QP_CHECK(S.kld_pct[MET_PCT_MIN] == 1 && S.kld_pct[MET_PCT_MAX] == 5 && S.kld_pct[MET_PCT_MEDIAN] == 3);
    QP_CHECK_NEAR(S.kld_pct[MET_PCT_90], 4.6, 1e-15);
    QP_CHECK_NEAR(S.kld_pct[MET_PCT_99], 4.96, 1e-15);
    QP_CHECK_NEAR(S.kld_pct[MET_PCT_99_9], 4.996, 1e-15);
    QP_CHECK_NEAR(S.kld_pct[MET_PCT_10], 1.0, 1e-15);
    QP_CHECK_NEAR(S.kld_pct[MET_PCT_75], 4.0, 1e-15);
    // Δp sorted: -2 -1 0 0.5 1
    QP_CHECK(S.dp_pct[MET_PCT_MIN] == -2 && S.dp_pct[MET_PCT_MAX] == 1 && S.dp_pct[MET_PCT_MEDIAN] == 0);
    QP_CHECK_NEAR(S.dp_pct[MET_PCT_1], -1.96, 1e-15);  // p = 0.04
    QP_CHECK_NEAR(S.dp_pct[MET_PCT_5], -1.8, 1e-15);   // p = 0.2
    QP_CHECK_NEAR(S.dp_pct[MET_PCT_25], -1.0, 1e-15);  // p = 1.0
    QP_CHECK_NEAR(S.dp_pct[MET_PCT_75], 0.5, 1e-15);   // p = 3.0
    QP_CHECK_NEAR(S.dp_pct[MET_PCT_95], 0.9, 1e-15);   // p = 3.8: 0.2*0.5 + 0.8*1
    QP_CHECK_NEAR(S.dp_pct[MET_PCT_0_1], -1.996, 1e-15);
    // n = 5 <= 10: no uncertainties (llama.cpp's rule)
    QP_CHECK(S.kld_unc == 0 && S.dp_unc == 0 && S.dp_rms_unc == 0 && S.nll_ref_unc == 0);
    QP_CHECK_NEAR(S.kld_mean, 14.0 / 5, 1e-15);
    QP_CHECK_NEAR(S.dp_rms, sqrt((4 + 0.25 + 1 + 1) / 5), 1e-15);
    met_dist_destroy(d);
}

QP_TEST(ln_ratio_uncertainty_should_match_hand_computation) {
    // 12 tokens: nll_ref alternates 1, 2; nll_var = 1.5 * nll_ref (1.5, 3).
    // Means 1.5 and 2.25; population variances 1/4 and 9/16, covariance 3/8.
    // sem_ref = sqrt(0.25/11), sem_var = sqrt(0.5625/11), cov of means = 0.375/11,
    // ln ratio = 0.75 ± sqrt((0.25 + 0.5625 - 0.75)/11) = 0.25/sqrt(11); correlation 1.
    struct met_dist *d = new_dist(0);
    for (int i = 0; i < 12; i++) {
        struct met_dist_tok t = tok_nll(i % 2 ? 2.0 : 1.0, i % 2 ? 3.0 : 1.5);
        QP_CHECK_INT_EQ(met_dist_push(d, &t), 0);
    }
    struct met_dist_summary S;
    met_dist_finish(d, &S);
    double s11 = sqrt(11.0);
    QP_CHECK_NEAR(S.nll_ref, 1.5, 1e-15);
    QP_CHECK_NEAR(S.nll_var, 2.25, 1e-15);
    QP_CHECK_NEAR(S.nll_ref_unc, 0.5 / s11, 1e-15);
    QP_CHECK_NEAR(S.nll_var_unc, 0.75 / s11, 1e-15);
    QP_CHECK_NEAR(S.nll_cov, 0.375 / 11, 1e-15);
    QP_CHECK_NEAR(S.nll_cor, 1.0, 1e-14);
    QP_CHECK_NEAR(S.ln_ratio, 0.75, 1e-15);
    QP_CHECK_NEAR(S.ln_ratio_unc, 0.25 / s11, 1e-14);
    QP_CHECK_NEAR(S.ppl_ratio, exp(0.75), 1e-15);
    QP_CHECK_NEAR(S.ppl_ratio_unc, exp(0.75) * 0.25 / s11, 1e-14);
    QP_CHECK_NEAR(S.ppl_ref, exp(1.5), 1e-14);
    QP_CHECK_NEAR(S.ppl_ref_unc, exp(1.5) * 0.5 / s11, 1e-14);
    QP_CHECK_NEAR(S.ppl_var, exp(2.25), 1e-14);
    // PPL difference: sqrt(u_v² + u_r² - 2 PPL_v PPL_r cov) = |e^2.25*0.75 - e^1.5*0.5| / sqrt(11)
    QP_CHECK_NEAR(S.ppl_diff, exp(2.25) - exp(1.5), 1e-14);
    QP_CHECK_NEAR(S.ppl_diff_unc, (exp(2.25) * 0.75 - exp(1.5) * 0.5) / s11, 1e-13);
    // The same tokens with nll_var = 1 constant: no correlation, the ratio carries sem_ref.
    struct met_dist *e = new_dist(0);
    for (int i = 0; i < 12; i++) {
        struct met_dist_tok t = tok_nll(i % 2 ? 2.0 : 1.0, 1.0);
        QP_CHECK_INT_EQ(met_dist_push(e, &t), 0);
    }
    met_dist_finish(e, &S);
    QP_CHECK_NEAR(S.ln_ratio, -0.5, 1e-15);
    QP_CHECK_NEAR(S.ln_ratio_unc, 0.5 / s11, 1e-15);
    QP_CHECK(S.nll_var_unc == 0 && S.nll_cor == 0);
    met_dist_destroy(d);
    met_dist_destroy(e);
}

QP_TEST(uncertainties_should_vanish_for_ten_or_fewer_tokens) {
    // llama.cpp: no standard error for n <= 10, no covariance for n < 10. At n = 10 the
    // covariance exists while the errors are 0: the ratio's uncertainty must be 0, not nan.
    struct met_dist *d = new_dist(0);
    struct met_dist_summary S;
    for (int i = 0; i < 11; i++) {
        struct met_dist_tok t = {1.0 + i, 1.2 + i, 0.01 * i, 0.001 * (i - 5), 0, 0, i % 3 != 0};
        QP_CHECK_INT_EQ(met_dist_push(d, &t), 0);
        met_dist_finish(d, &S);
        QP_CHECK_INT_EQ(S.n, i + 1);
        if (i + 1 <= 10) {
            QP_CHECK(S.nll_ref_unc == 0 && S.nll_var_unc == 0 && S.ppl_ref_unc == 0 && S.ppl_var_unc == 0);
            QP_CHECK(S.kld_unc == 0 && S.dp_unc == 0 && S.dp_rms_unc == 0);
            QP_CHECK(S.ln_ratio_unc == 0 && S.ppl_ratio_unc == 0 && S.ppl_diff_unc == 0 && S.nll_cor == 0);
            QP_CHECK_MSG((S.nll_cov != 0) == (i + 1 >= 10), "n=%d cov=%g", i + 1, S.nll_cov);
        } else {
            QP_CHECK(S.nll_ref_unc > 0 && S.kld_unc > 0 && S.dp_rms_unc > 0 && S.ppl_var_unc > 0);
            QP_CHECK_NEAR(S.nll_cor, 1.0, 1e-12); // nll_var = nll_ref + 0.2
            QP_CHECK(S.ln_ratio_unc < 1e-7);        // a constant shift has no paired spread
        }
        QP_CHECK(!isnan(S.ln_ratio_unc) && !isnan(S.same_top_unc) && !isnan(S.dp_rms_unc));
    }
    QP_CHECK_NEAR(S.same_top, 7.0 / 11, 1e-15);
    QP_CHECK_NEAR(S.same_top_unc, sqrt(7.0 / 11 * 4.0 / 11 / 10), 1e-15);
    met_dist_destroy(d);

    struct met_dist *one = new_dist(0);
    struct met_dist_tok t = {2, 3, 0.5, 0.1, 1, 2, 0};
    QP_CHECK_INT_EQ(met_dist_push(one, &t), 0);
    met_dist_finish(one, &S);
    QP_CHECK(S.same_top == 0 && S.same_top_unc == 0 && S.kld_pct[MET_PCT_99] == 0.5);
    QP_CHECK_NEAR(S.ppl_ratio, exp(1.0), 1e-15);
    met_dist_destroy(one);
}

QP_TEST(identical_models_should_give_zero_divergence_and_no_nan) {
    struct synth s = make_synth(300, 40, 0.0); // then the variant rows are replaced by copies
    memcpy(s.var, s.ref, (size_t)s.n * s.vocab * sizeof(float));
    struct met_dist *d = new_dist(0);
    for (int t = 0; t < s.n; t++) {
        struct met_dist_tok m;
        met_dist_token(s.ref + (size_t)t * s.vocab, s.var + (size_t)t * s.vocab, s.vocab, s.tok[t], &m);
        QP_CHECK(m.kld == 0 && m.dp == 0 && m.nll_ref == m.nll_var && m.same_top == 1);
        QP_CHECK_INT_EQ(met_dist_push(d, &m), 0);
    }
    struct met_dist_summary S;
    met_dist_finish(d, &S);
    QP_CHECK(S.ln_ratio == 0 && S.ln_ratio_unc == 0 && S.ppl_ratio == 1 && S.ppl_ratio_unc == 0);
    QP_CHECK(S.ppl_diff == 0 && S.ppl_diff_unc == 0 && S.ppl_ref == S.ppl_var);
    QP_CHECK(S.kld_mean == 0 && S.kld_unc == 0 && S.dp_mean == 0 && S.dp_unc == 0);
    QP_CHECK(S.dp_rms == 0 && S.dp_rms_unc == 0);
    QP_CHECK(S.same_top == 1 && S.same_top_unc == 0 && S.n_same_top == s.n);
    QP_CHECK_NEAR(S.nll_cor, 1.0, 1e-12);
    for (int k = 0; k < MET_PCT_N; k++) QP_CHECK(S.kld_pct[k] == 0 && S.dp_pct[k] == 0);
    met_dist_destroy(d);
    free_synth(&s);
}

QP_TEST(empty_summary_should_be_nan_with_zero_count) {
    struct met_dist *d = new_dist(0);
    struct met_dist_summary S;
    met_dist_finish(d, &S);
    QP_CHECK_INT_EQ(S.n, 0);
    QP_CHECK_INT_EQ(S.n_same_top, 0);
    QP_CHECK(isnan(S.ppl_ref) && isnan(S.ln_ratio) && isnan(S.ln_ratio_unc) && isnan(S.kld_mean));
    QP_CHECK(isnan(S.same_top) && isnan(S.dp_rms) && isnan(S.nll_cor) && isnan(S.ppl_diff_unc));
    for (int k = 0; k < MET_PCT_N; k++) QP_CHECK(isnan(S.kld_pct[k]) && isnan(S.dp_pct[k]));
    met_dist_destroy(d);
    met_dist_destroy(NULL);
}

QP_TEST(ppl_should_agree_with_met_ppl) {
    struct synth s = make_synth(200, 32, 0.5);
    struct met_dist *d = new_dist(0);
    struct met_nll r = {0}, v = {0};
    for (int t = 0; t < s.n; t++) {
        struct met_dist_tok m;
        met_dist_token(s.ref + (size_t)t * s.vocab, s.var + (size_t)t * s.vocab, s.vocab, s.tok[t], &m);
        QP_CHECK_INT_EQ(met_dist_push(d, &m), 0);
        met_nll_add(&r, m.nll_ref);
        met_nll_add(&v, m.nll_var);
    }
    struct met_dist_summary S;
    met_dist_finish(d, &S);
    QP_CHECK(S.ppl_ref == met_ppl(&r) && S.ppl_ref_unc == met_ppl_stderr(&r));
    QP_CHECK(S.ppl_var == met_ppl(&v) && S.ppl_var_unc == met_ppl_stderr(&v));
    QP_CHECK(S.nll_ref == met_nll_mean(&r) && S.nll_var == met_nll_mean(&v));
    QP_CHECK_NEAR(S.ppl_ref_unc, S.ppl_ref * S.nll_ref_unc, 1e-14);
    met_dist_destroy(d);
    free_synth(&s);
}

// ---------------------------------------------------------------------------------------------
// Determinism

QP_TEST(results_should_be_bitwise_identical_whatever_the_threads) {
    const int n = 500;
    struct synth s = make_synth(n, 64, 0.4);
    struct met_dist_tok *serial = calloc(n, sizeof *serial), *par = calloc(n, sizeof *par);
    for (int t = 0; t < n; t++)
        met_dist_token(s.ref + (size_t)t * s.vocab, s.var + (size_t)t * s.vocab, s.vocab, s.tok[t], &serial[t]);
    int used = 1;
#pragma omp parallel for num_threads(4) schedule(dynamic, 1) reduction(max : used)
    for (int t = n - 1; t >= 0; t--) { // reversed and interleaved across threads
        met_dist_token(s.ref + (size_t)t * s.vocab, s.var + (size_t)t * s.vocab, s.vocab, s.tok[t], &par[t]);
        used = omp_get_num_threads() > used ? omp_get_num_threads() : used;
    }
    QP_CHECK(used >= 1);
    QP_CHECK(memcmp(serial, par, (size_t)n * sizeof *serial) == 0);

    struct met_dist *a = new_dist(1), *b = new_dist(100000);
    push_all(a, serial, n);
    push_all(b, par, n);
    struct met_dist_summary sa, sb, sa2;
    met_dist_finish(a, &sa);
    met_dist_finish(b, &sb);
    QP_CHECK(memcmp(&sa, &sb, sizeof sa) == 0);
    met_dist_finish(a, &sa2); // finishing again (series already sorted) changes nothing
    QP_CHECK(memcmp(&sa, &sa2, sizeof sa) == 0);

    // Finish midway, then keep pushing: same as pushing everything at once.
    struct met_dist *c = new_dist(0);
    push_all(c, serial, n / 3);
    met_dist_finish(c, &sa2);
    QP_CHECK_INT_EQ(sa2.n, n / 3);
    push_all(c, serial + n / 3, n - n / 3);
    met_dist_finish(c, &sa2);
    QP_CHECK(memcmp(&sa, &sa2, sizeof sa) == 0);

    met_dist_destroy(a), met_dist_destroy(b), met_dist_destroy(c);
    free(serial), free(par);
    free_synth(&s);
}
