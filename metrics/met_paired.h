// met_paired.h — paired statistics between two correctness vectors over the same items (a
// reference model and a variant): flips each way, McNemar's exact test, and a paired bootstrap
// interval for the accuracy difference. docs/TASKS.md, "Statistics", states the formulas.
//
//  - McNemar exact two-sided p: with b = flips correct→wrong and c = wrong→correct, under H0
//    each discordant pair is a fair coin, so p = min(1, 2 P(X <= min(b, c))), X ~ Bin(b + c, 1/2);
//    p = 1 when b + c = 0. The tail is summed in log space from its largest term down, so it
//    neither overflows nor underflows for any n.
//  - Paired bootstrap: B resamples of n item indices drawn with replacement (splitmix64 from a
//    fixed seed, so results are reproducible), Δacc = acc_var - acc_ref of each resample, and
//    the percentile interval: the (1-level)/2 and (1+level)/2 quantiles of the B values with
//    linear interpolation between order statistics (numpy's default).
// Depends on kernels/qp.h only.
#ifndef MET_PAIRED_H
#define MET_PAIRED_H

#include <stdint.h>

#define MET_PAIRED_BOOT 10000                  // default resamples
#define MET_PAIRED_LEVEL 0.95                  // default interval level
#define MET_PAIRED_SEED 0x7170726f62650001ULL  // default seed ("qprobe" + 1)

struct met_paired_opts {
    int n_boot;    // resamples (0 = MET_PAIRED_BOOT)
    double level;  // in (0, 1) (0 = MET_PAIRED_LEVEL)
    uint64_t seed; // (0 = MET_PAIRED_SEED)
};

struct met_paired {
    int64_t n;
    int64_t both_correct, both_wrong;
    int64_t flips_cw;      // correct under the reference, wrong under the variant
    int64_t flips_wc;      // wrong under the reference, correct under the variant
    double acc_ref, acc_var;
    double delta;          // acc_var - acc_ref
    double mcnemar_p;      // exact, two-sided
    double ci_lo, ci_hi;   // bootstrap percentile interval of delta
    double level;
    int n_boot;
    uint64_t seed;
};

// Compares ref[i] and var[i] (0 = wrong, nonzero = correct) for i < n. o may be NULL
// (defaults). 0, or QP_EINVAL (n < 1, bad level or n_boot), QP_ENOMEM; message in err.
int met_paired_compare(const unsigned char *ref, const unsigned char *var, int64_t n,
                       const struct met_paired_opts *o, struct met_paired *out, char *err);

// McNemar's exact two-sided p-value for b and c discordant pairs (b, c >= 0).
double met_mcnemar_exact_p(int64_t b, int64_t c);

// log P(X <= k) for X ~ Bin(n, 1/2), 0 <= k <= n (k > n gives 0, k < 0 gives -inf).
double met_log_binom_half_cdf(int64_t k, int64_t n);

// The percentile interval alone (same conventions as met_paired_compare).
int met_paired_bootstrap(const unsigned char *ref, const unsigned char *var, int64_t n, int n_boot,
                         double level, uint64_t seed, double *lo, double *hi, char *err);

#endif
