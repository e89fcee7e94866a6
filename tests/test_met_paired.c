// test_met_paired.c — paired statistics (metrics/met_paired.h): flip counts, McNemar's exact
// p-value against hand values and a direct binomial sum, its log-space stability for large n,
// and the paired bootstrap interval (degenerate, clearly positive, reproducible, and close to
// the normal-theory interval for large n).
#include <stdint.h>

#include "met_paired.h"
#include "qp.h"
#include "qp_test.h"

// Tolerance of the exact p-value against the direct sum: both are double computations of the
// same quantity, the log-space path loses a few ulps in lgamma.
#define P_REL_TOL 1e-11

// Direct two-sided exact p: binomial coefficients by Pascal's rule (exact in double up to
// n = 60), summed in plain arithmetic.
static double direct_p(int b, int c) {
    int n = b + c, k = b < c ? b : c;
    if (n == 0) return 1.0;
    double row[64] = {1};
    for (int i = 1; i <= n; i++)
        for (int j = i; j >= 1; j--) row[j] += row[j - 1];
    double s = 0;
    for (int i = 0; i <= k; i++) s += row[i];
    double p = 2 * s / ldexp(1.0, n);
    return p < 1 ? p : 1;
}

QP_TEST(mcnemar_p_should_equal_hand_values) {
    QP_CHECK_NEAR(met_mcnemar_exact_p(1, 9), 22.0 / 1024.0, 1e-15); // 2 (1 + 10) / 2^10
    QP_CHECK_NEAR(met_mcnemar_exact_p(0, 6), 2.0 / 64.0, 1e-15);
    QP_CHECK_NEAR(met_mcnemar_exact_p(6, 0), 2.0 / 64.0, 1e-15);
    QP_CHECK_NEAR(met_mcnemar_exact_p(2, 8), 2.0 * 56.0 / 1024.0, 1e-15); // 1 + 10 + 45 = 56
    QP_CHECK(met_mcnemar_exact_p(0, 0) == 1.0);
    QP_CHECK(met_mcnemar_exact_p(5, 5) == 1.0);
    QP_CHECK(met_mcnemar_exact_p(4, 5) == 1.0);
}

QP_TEST(mcnemar_p_should_equal_direct_binomial_sum_on_small_cases) {
    for (int b = 0; b <= 30; b++)
        for (int c = 0; c <= 30; c++) {
            double got = met_mcnemar_exact_p(b, c), want = direct_p(b, c);
            QP_CHECK_MSG(fabs(got - want) <= P_REL_TOL * want, "b=%d c=%d: %.17g vs %.17g", b, c, got, want);
        }
}

QP_TEST(mcnemar_p_should_stay_accurate_for_large_n) {
    // Far beyond double range for the binomial coefficients themselves: 2^-2000 underflows, its
    // logarithm does not.
    QP_CHECK_NEAR(met_log_binom_half_cdf(0, 2000), -2000 * log(2.0), 1e-12);
    double p = met_mcnemar_exact_p(0, 2000);
    QP_CHECK(p >= 0 && p < 1e-300);
    QP_CHECK(met_mcnemar_exact_p(1000000, 1000000) == 1.0);
    // b = 5000, c = 5400: close to the normal approximation with continuity correction,
    // z = (400 - 1) / sqrt(10400); the exact tail is within a few percent of it at this n.
    double z = 399.0 / sqrt(10400.0), approx = erfc(z / sqrt(2.0));
    double exact = met_mcnemar_exact_p(5000, 5400);
    QP_CHECK_MSG(fabs(exact / approx - 1) < 0.05, "exact %.6g, normal %.6g", exact, approx);
    // The complement branch (k > n/2) agrees with 1 - lower tail.
    double lo = exp(met_log_binom_half_cdf(40, 100)), hi = exp(met_log_binom_half_cdf(59, 100));
    QP_CHECK_NEAR(hi, 1 - lo, 1e-12); // P(X <= 59) = 1 - P(X >= 60) = 1 - P(X <= 40)
}

QP_TEST(paired_compare_should_count_flips_each_way) {
    const unsigned char ref[] = {1, 1, 0, 0, 1, 0, 1, 1, 0, 1};
    const unsigned char var[] = {1, 0, 1, 0, 0, 0, 1, 0, 1, 1};
    struct met_paired r;
    char err[QP_ERRLEN];
    QP_CHECK_MSG(met_paired_compare(ref, var, 10, NULL, &r, err) == 0, "%s", err);
    QP_CHECK_INT_EQ(r.n, 10);
    QP_CHECK_INT_EQ(r.both_correct, 3);
    QP_CHECK_INT_EQ(r.both_wrong, 2);
    QP_CHECK_INT_EQ(r.flips_cw, 3);
    QP_CHECK_INT_EQ(r.flips_wc, 2);
    QP_CHECK_NEAR(r.acc_ref, 0.6, 1e-15);
    QP_CHECK_NEAR(r.acc_var, 0.5, 1e-15);
    QP_CHECK_NEAR(r.delta, -0.1, 1e-15);
    QP_CHECK(r.mcnemar_p == 1.0); // 2 (1 + 5 + 10) / 32 > 1
    QP_CHECK_INT_EQ(r.n_boot, MET_PAIRED_BOOT);
    QP_CHECK_NEAR(r.level, 0.95, 0);
    QP_CHECK(r.ci_lo <= r.delta && r.delta <= r.ci_hi);
}

QP_TEST(bootstrap_should_give_zero_interval_for_equal_vectors) {
    unsigned char v[100];
    for (int i = 0; i < 100; i++) v[i] = (unsigned char)(i % 3 == 0);
    struct met_paired r;
    char err[QP_ERRLEN];
    QP_CHECK_MSG(met_paired_compare(v, v, 100, NULL, &r, err) == 0, "%s", err);
    QP_CHECK(r.ci_lo == 0.0 && r.ci_hi == 0.0);
    QP_CHECK(r.flips_cw == 0 && r.flips_wc == 0 && r.mcnemar_p == 1.0);
}

QP_TEST(bootstrap_interval_should_exclude_zero_when_the_variant_is_clearly_better) {
    // 200 items: both right on 100, the variant also right on 40 more (Δ = 0.2, standard error
    // sqrt(0.2 * 0.8 / 200) = 0.028): the 95 % interval is about [0.145, 0.255].
    unsigned char ref[200], var[200];
    for (int i = 0; i < 200; i++) {
        ref[i] = i < 100;
        var[i] = i < 140;
    }
    struct met_paired r;
    char err[QP_ERRLEN];
    QP_CHECK_MSG(met_paired_compare(ref, var, 200, NULL, &r, err) == 0, "%s", err);
    QP_CHECK_NEAR(r.delta, 0.2, 1e-15);
    QP_CHECK_MSG(r.ci_lo > 0.1 && r.ci_lo < 0.2 && r.ci_hi > 0.2 && r.ci_hi < 0.3, "[%g, %g]", r.ci_lo, r.ci_hi);
    QP_CHECK(r.mcnemar_p < 1e-10); // 2^-39
    QP_CHECK_NEAR(r.mcnemar_p, 2 * ldexp(1.0, -40), 1e-9);
}

QP_TEST(bootstrap_should_repeat_with_its_seed_and_move_with_another) {
    unsigned char ref[300], var[300];
    for (int i = 0; i < 300; i++) {
        ref[i] = (unsigned char)((i * 7) % 5 < 3);
        var[i] = (unsigned char)((i * 11) % 7 < 4);
    }
    double a0, a1, b0, b1;
    char err[QP_ERRLEN];
    QP_CHECK(met_paired_bootstrap(ref, var, 300, 2000, 0.95, 42, &a0, &a1, err) == 0);
    QP_CHECK(met_paired_bootstrap(ref, var, 300, 2000, 0.95, 42, &b0, &b1, err) == 0);
    QP_CHECK(a0 == b0 && a1 == b1);
    // Differences are multiples of 1/300, so two seeds may share an end by chance; among five
    // other seeds at least one interval moves.
    int moved = 0;
    for (uint64_t seed = 43; seed < 48; seed++) {
        QP_CHECK(met_paired_bootstrap(ref, var, 300, 2000, 0.95, seed, &b0, &b1, err) == 0);
        moved += b0 != a0 || b1 != a1;
    }
    QP_CHECK(moved > 0);
}

QP_TEST(bootstrap_interval_should_approach_the_normal_interval_for_large_n) {
    // 4000 items, 300 flips to right and 200 to wrong: Δ = 0.025, sd of the per-item difference
    // sqrt(500/4000 - 0.025^2), so the 95 % interval is Δ ± 1.96 sd / sqrt(n); the bootstrap's
    // percentile ends agree to within Monte Carlo noise (a few per cent of the half-width).
    enum { N = 4000 };
    static unsigned char ref[N], var[N];
    for (int i = 0; i < N; i++) {
        ref[i] = (unsigned char)(i < 300 ? 0 : i < 500 ? 1 : i % 2);
        var[i] = (unsigned char)(i < 300 ? 1 : i < 500 ? 0 : i % 2);
    }
    double lo, hi;
    char err[QP_ERRLEN];
    QP_CHECK(met_paired_bootstrap(ref, var, N, MET_PAIRED_BOOT, 0.95, MET_PAIRED_SEED, &lo, &hi, err) == 0);
    double d = 100.0 / N, sd = sqrt(500.0 / N - d * d), half = 1.96 * sd / sqrt((double)N);
    QP_CHECK_MSG(fabs(lo - (d - half)) < 0.1 * half && fabs(hi - (d + half)) < 0.1 * half,
                 "[%g, %g] vs [%g, %g]", lo, hi, d - half, d + half);
}

QP_TEST(paired_compare_should_reject_empty_input_and_bad_options) {
    unsigned char v[1] = {1};
    struct met_paired r;
    char err[QP_ERRLEN];
    QP_CHECK(met_paired_compare(v, v, 0, NULL, &r, err) == QP_EINVAL);
    struct met_paired_opts o = {.level = 1.5};
    QP_CHECK(met_paired_compare(v, v, 1, &o, &r, err) == QP_EINVAL);
    QP_CHECK(strstr(err, "level") != NULL);
    o = (struct met_paired_opts){.n_boot = -1};
    QP_CHECK(met_paired_compare(v, v, 1, &o, &r, err) == QP_EINVAL);
}
