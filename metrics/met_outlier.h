// met_outlier.h — outlier statistics of weight tensors and of activations: moments (mean, σ,
// kurtosis), the share of values far from the mean, a histogram of log10|x| on fixed bins shared
// by every tensor, per-input-channel absmax and the input channels whose absmax stands out.
// These say *why* a quantized model loses quality: a few very large values stretch a group's
// quantization range and push the other values of the group onto few codes.
//
// Pure statistics on float arrays: depends on kernels/qp.h and libc only; never on quantizers/,
// harness/ or any file format.
//
// Conventions (stated so that reports can be reproduced):
//  - A weight matrix is row-major fp32, rows = output channels, cols = input channels (ne0 in
//    GGUF terms, contiguous). "Channel" below always means an input channel (a column).
//  - All sums are fp64, in a fixed order: rows in order, and within a row the values in order.
//    Moments are computed per row with two passes over the row (mean, then central powers) and
//    the rows are merged in order with the pairwise update of Chan et al. / Pébay (2008), so the
//    result depends only on the data and the row boundaries, and does not suffer the
//    cancellation of raw power sums when |mean| >> σ.
//  - σ is the population standard deviation (divided by n, not n - 1).
//  - Kurtosis is Pearson's: m4 / m2² with central moments mk = Σ (x - mean)^k / n; a normal
//    distribution has 3. Excess kurtosis is that minus 3 (normal 0; Student t with ν = 4 degrees
//    of freedom: infinite in theory, large in samples). Both are NaN when σ = 0.
#ifndef MET_OUTLIER_H
#define MET_OUTLIER_H

#include <stdint.h>

// ---------------------------------------------------------------------------------------------
// The fixed log10 histogram. Bin 0 is the underflow bin: |x| < 1e-8, including exact zeros.
// Bins 1..MET_HIST_N_MAIN hold 10^(MET_HIST_LO_EXP + (b-1)/MET_HIST_PER_DECADE) <= |x| <
// 10^(MET_HIST_LO_EXP + b/MET_HIST_PER_DECADE): 40 bins of a quarter decade, 1e-8 to 1e2.
// Bin MET_HIST_N - 1 is the overflow bin: |x| >= 1e2. Edges are compared as doubles against
// the correctly rounded doubles of those powers of ten (met_hist_edge), never through log10, so a
// value exactly on an edge always falls in the bin above it.

#define MET_HIST_LO_EXP (-8)    // log10 of the lowest edge
#define MET_HIST_HI_EXP 2       // log10 of the highest edge
#define MET_HIST_PER_DECADE 4   // bins per decade
#define MET_HIST_N_MAIN ((MET_HIST_HI_EXP - MET_HIST_LO_EXP) * MET_HIST_PER_DECADE) // 40
#define MET_HIST_N (MET_HIST_N_MAIN + 2) // + underflow (first) + overflow (last) = 42

// Edge i (0..MET_HIST_N_MAIN): 10^(MET_HIST_LO_EXP + i / MET_HIST_PER_DECADE). Bin b (1..40)
// spans [met_hist_edge(b-1), met_hist_edge(b)). Out-of-range i asserts.
double met_hist_edge(int i);

// The bin of a magnitude a >= 0 (a NaN asserts; +inf goes to the overflow bin).
int met_hist_bin(double a);

// ---------------------------------------------------------------------------------------------
// Moments, mergeable. Plain data.

struct met_moments {
    int64_t n;     // values
    double mean;
    double m2;     // Σ (x - mean)^2
    double m3;     // Σ (x - mean)^3
    double m4;     // Σ (x - mean)^4
};

// Adds the finite values among x[0..n) to m (two passes over x: mean, then central powers;
// NaN and inf are skipped). m starts zeroed.
void met_moments_add(struct met_moments *m, const float *x, int64_t n);
// a ← a ∪ b (Pébay's pairwise formulas). Merging is not associative in the last bits: merge in a
// fixed order for reproducible output.
void met_moments_merge(struct met_moments *a, const struct met_moments *b);
double met_moments_sd(const struct met_moments *m);       // sqrt(m2 / n); 0 when n = 0
double met_moments_kurtosis(const struct met_moments *m); // Pearson n·m4/m2²; NaN if m2 = 0

// ---------------------------------------------------------------------------------------------
// Outlier channels.

#define MET_OUTLIER_K 5.0 // default factor: a channel is an outlier when absmax > K × median

// The channels i of absmax[0..n) (per-channel absmax values, e.g. from met_weight_stats) with
// absmax[i] > k × median, sorted by absmax descending, ties by lower index first. The median of
// an even count is the mean of the two middle values. With a median of 0 every nonzero channel
// is an outlier. idx (n entries, caller-owned) receives the indices, *n_out their count,
// *median (may be NULL) the median. Returns 0, QP_EINVAL (k < 0, or a NaN absmax: message in
// err, QP_ERRLEN bytes, may be NULL) or QP_ENOMEM (sorting scratch, freed before returning).
int met_outlier_channels(const float *absmax, int64_t n, double k, int64_t *idx, int64_t *n_out,
                         double *median, char *err);

// ---------------------------------------------------------------------------------------------
// Weight tensor statistics.

struct met_wstats {
    int64_t rows, cols, n;    // n = rows × cols
    double mean;
    double sd;                // population σ
    double kurtosis;          // Pearson (normal = 3); NaN when σ = 0
    double excess_kurtosis;   // kurtosis - 3
    double absmax;            // max |w|
    double absmax_over_sd;    // max|w| / σ; NaN when σ = 0
    int64_t n_beyond_3sd;     // count of |w - mean| > 3σ (0 when σ = 0)
    int64_t n_beyond_6sd;     // count of |w - mean| > 6σ
    double frac_beyond_3sd;   // n_beyond_3sd / n (a normal tensor: 0.0027)
    double frac_beyond_6sd;   // n_beyond_6sd / n (a normal tensor: 2e-9)
    int64_t hist[MET_HIST_N]; // log10|w| histogram on the fixed bins above
};

// Statistics of the row-major matrix w (rows × cols). chan_absmax: NULL, or cols floats
// (caller-owned) that receive max over rows of |w[r][c]| for each input channel c. Two passes
// over w: moments, absmax, histogram; then the counts beyond 3σ and 6σ. Nothing is allocated.
// Returns 0, or QP_EINVAL when a weight is NaN or infinite (err, QP_ERRLEN bytes, may be NULL,
// names its row and column; *st is then unspecified).
int met_weight_stats(const float *w, int64_t rows, int64_t cols, struct met_wstats *st,
                     float *chan_absmax, char *err);

// ---------------------------------------------------------------------------------------------
// Activation statistics at one probe site, streamed over the evaluation text: rows of `width`
// floats (one row per token) are added any number of times; accumulators of several threads or
// chunks can be merged. Non-finite values are counted apart and left out of every statistic, so
// that a broken quantized model still gets a report.

#define MET_ACT_TOP 16 // channels listed by met_act_finish

// Caller-owned accumulator: met_act_init, met_act_add / met_act_merge, met_act_finish,
// met_act_deinit. Fields are read-only for callers.
struct met_act {
    int64_t width;           // channels per row
    int64_t rows;            // rows added
    int64_t n_nonfinite;     // NaN / inf values skipped
    float *chan_absmax;      // (width) max |x| per channel over all rows; owned
    struct met_moments mom;  // global moments over every finite value of every channel
};

// 0, QP_EINVAL (width < 1) or QP_ENOMEM. On failure *a is zeroed (deinit is still safe).
int met_act_init(struct met_act *a, int64_t width);
// Frees chan_absmax. Safe on a zeroed struct.
void met_act_deinit(struct met_act *a);
// Adds x (rows × width, row-major). Moments are taken per row and merged in row order.
void met_act_add(struct met_act *a, const float *x, int64_t rows);
// dst ← dst ∪ src. Returns 0, or QP_EINVAL when the widths differ (nothing changes).
int met_act_merge(struct met_act *dst, const struct met_act *src);

struct met_act_summary {
    int64_t width, rows, n, n_nonfinite;
    double mean, sd, kurtosis, excess_kurtosis; // global, as for weights (NaN when σ = 0)
    double absmax;                              // max over channels
    double median_chan_absmax;                  // median of the per-channel absmax
    int64_t chan_hist[MET_HIST_N];              // histogram of the per-channel absmax values
    int64_t n_outlier_chans;                    // channels with absmax > MET_OUTLIER_K × median
    int n_top;                                  // min(MET_ACT_TOP, width)
    int64_t top_chan[MET_ACT_TOP];              // channels by absmax, descending (ties: index)
    float top_absmax[MET_ACT_TOP];
    double top_ratio[MET_ACT_TOP];              // absmax / median; median 0: inf, or 0 when
                                                //   the absmax is 0 too
};

// Summarises a into *out (plain data, nothing to free). Returns 0, or QP_ENOMEM (median and
// ranking scratch, freed before returning) with a message in err (QP_ERRLEN bytes, may be NULL).
int met_act_finish(const struct met_act *a, struct met_act_summary *out, char *err);

#endif
