// met_paired.c — flips, McNemar's exact test and the paired bootstrap (met_paired.h).
// Depends on kernels/qp.h only.
#include "met_paired.h"

#include <math.h>
#include <stdlib.h>

#include "qp.h"

// ---------------------------------------------------------------------------------------------
// Helpers

// splitmix64 (Steele, Lea, Flood 2014).
static uint64_t met_rng(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

// A uniform index in [0, n): the high 64 bits of rng * n (Lemire's multiply-shift; the bias is
// below n / 2^64, far under anything a bootstrap can see).
static int64_t met_index(uint64_t *s, int64_t n) {
    return (int64_t)(((unsigned __int128)met_rng(s) * (uint64_t)n) >> 64);
}

static int met_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// The q-quantile of sorted x[0..n) with linear interpolation (numpy's default, "type 7").
static double met_quantile(const double *x, int n, double q) {
    double h = (n - 1) * q;
    int lo = (int)floor(h);
    if (lo < 0) return x[0];
    if (lo >= n - 1) return x[n - 1];
    return x[lo] + (h - lo) * (x[lo + 1] - x[lo]);
}

// ---------------------------------------------------------------------------------------------
// McNemar

double met_log_binom_half_cdf(int64_t k, int64_t n) {
    if (k < 0) return -INFINITY;
    if (k >= n) return 0.0;
    // Sum the terms C(n, i) / 2^n for i = k down to 0 relative to the i = k term. When k <= n/2
    // the terms shrink going down (ratio i / (n - i + 1) < 1), so the sum starts at its largest
    // term; for k > n/2 use the complement's symmetry P(X <= k) = 1 - P(X <= n - k - 1).
    if (2 * k > n) return log1p(-exp(met_log_binom_half_cdf(n - k - 1, n)));
    double lt = lgamma((double)n + 1) - lgamma((double)k + 1) - lgamma((double)(n - k) + 1) - (double)n * log(2.0);
    double s = 1.0, r = 1.0;
    for (int64_t i = k; i >= 1; i--) {
        r *= (double)i / (double)(n - i + 1);
        s += r;
        if (r < s * 1e-18) break; // the rest cannot change s in double precision
    }
    return lt + log(s);
}

double met_mcnemar_exact_p(int64_t b, int64_t c) {
    int64_t n = b + c;
    // |b - c| <= 1: the lower tail holds at least half the mass, p = 1 exactly (not 1 - ulp).
    if (n <= 0 || 2 * (b < c ? b : c) + 1 >= n) return 1.0;
    double p = 2.0 * exp(met_log_binom_half_cdf(b < c ? b : c, n));
    return p < 1.0 ? p : 1.0;
}

// ---------------------------------------------------------------------------------------------
// Bootstrap

int met_paired_bootstrap(const unsigned char *ref, const unsigned char *var, int64_t n, int n_boot,
                         double level, uint64_t seed, double *lo, double *hi, char *err) {
    *lo = *hi = 0;
    if (n < 1) return qp_fail(err, QP_EINVAL, "no items to compare");
    if (n_boot < 1 || n_boot > 100000000) return qp_fail(err, QP_EINVAL, "bootstrap resamples %d out of range", n_boot);
    if (!(level > 0 && level < 1)) return qp_fail(err, QP_EINVAL, "interval level %g is not in (0, 1)", level);
    signed char *d = malloc((size_t)n);
    double *delta = malloc((size_t)n_boot * sizeof *delta);
    if (!d || !delta) {
        free(d), free(delta);
        return qp_fail(err, QP_ENOMEM, "out of memory");
    }
    int64_t discordant = 0;
    for (int64_t i = 0; i < n; i++) {
        d[i] = (signed char)((var[i] != 0) - (ref[i] != 0));
        discordant += d[i] != 0;
    }
    uint64_t s = seed;
    for (int b = 0; b < n_boot; b++) {
        if (!discordant) { // every resample's difference is 0
            delta[b] = 0;
            continue;
        }
        int64_t sum = 0;
        for (int64_t k = 0; k < n; k++) sum += d[met_index(&s, n)];
        delta[b] = (double)sum / (double)n;
    }
    qsort(delta, (size_t)n_boot, sizeof *delta, met_cmp_double);
    *lo = met_quantile(delta, n_boot, (1.0 - level) / 2);
    *hi = met_quantile(delta, n_boot, (1.0 + level) / 2);
    free(d);
    free(delta);
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Everything

int met_paired_compare(const unsigned char *ref, const unsigned char *var, int64_t n,
                       const struct met_paired_opts *o, struct met_paired *out, char *err) {
    struct met_paired r = {0};
    r.n_boot = o && o->n_boot ? o->n_boot : MET_PAIRED_BOOT;
    r.level = o && o->level != 0 ? o->level : MET_PAIRED_LEVEL;
    r.seed = o && o->seed ? o->seed : MET_PAIRED_SEED;
    *out = r;
    if (n < 1) return qp_fail(err, QP_EINVAL, "no items to compare");
    r.n = n;
    for (int64_t i = 0; i < n; i++) {
        int a = ref[i] != 0, b = var[i] != 0;
        if (a && b) r.both_correct++;
        else if (!a && !b) r.both_wrong++;
        else if (a) r.flips_cw++;
        else r.flips_wc++;
    }
    r.acc_ref = (double)(r.both_correct + r.flips_cw) / (double)n;
    r.acc_var = (double)(r.both_correct + r.flips_wc) / (double)n;
    r.delta = (double)(r.flips_wc - r.flips_cw) / (double)n;
    r.mcnemar_p = met_mcnemar_exact_p(r.flips_cw, r.flips_wc);
    int rc = met_paired_bootstrap(ref, var, n, r.n_boot, r.level, r.seed, &r.ci_lo, &r.ci_hi, err);
    if (rc) return rc;
    *out = r;
    return 0;
}
