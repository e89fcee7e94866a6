// met_outlier.c — weight and activation outlier statistics (met_outlier.h): fixed log10 bins,
// mergeable moments, outlier channels. Plain scalar code; the order of every fp64 sum is the
// one the header states.
//
// Depends on kernels/qp.h and libc only.
#include "met_outlier.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "qp.h"

// ---------------------------------------------------------------------------------------------
// Histogram edges: 10^(-8 + i/4), i = 0..40, as correctly rounded double literals (computed once
// in decimal arithmetic with 50 digits), so that no libm's pow or log10 decides a bin.

static const double hist_edges[MET_HIST_N_MAIN + 1] = {
    1e-08,  1.7782794100389228e-08, 3.162277660168379e-08,  5.6234132519034905e-08,
    1e-07,  1.7782794100389227e-07, 3.162277660168379e-07,  5.62341325190349e-07,
    1e-06,  1.778279410038923e-06,  3.162277660168379e-06,  5.623413251903491e-06,
    1e-05,  1.778279410038923e-05,  3.1622776601683795e-05, 5.623413251903491e-05,
    0.0001, 0.00017782794100389227, 0.00031622776601683794, 0.0005623413251903491,
    0.001,  0.0017782794100389228,  0.0031622776601683794,  0.005623413251903491,
    0.01,   0.01778279410038923,    0.03162277660168379,    0.05623413251903491,
    0.1,    0.1778279410038923,     0.31622776601683794,    0.5623413251903491,
    1.0,    1.7782794100389228,     3.1622776601683795,     5.623413251903491,
    10.0,   17.78279410038923,      31.622776601683793,     56.23413251903491,
    100.0,
};

_Static_assert(MET_HIST_N_MAIN == 40, "the edge table holds 41 edges of a quarter decade");

double met_hist_edge(int i) {
    QP_ASSERT(i >= 0 && i <= MET_HIST_N_MAIN);
    return hist_edges[i];
}

int met_hist_bin(double a) {
    QP_ASSERT(!isnan(a));
    if (a < hist_edges[0]) return 0;
    if (a >= hist_edges[MET_HIST_N_MAIN]) return MET_HIST_N - 1;
    int lo = 0, hi = MET_HIST_N_MAIN; // edge[lo] <= a < edge[hi]
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (hist_edges[mid] <= a) lo = mid;
        else hi = mid;
    }
    return lo + 1;
}

// The same bins for many values: an IEEE float's biased exponent e puts |x| in the octave
// [2^(e-127), 2^(e-126)), and a quarter decade (0.83 octave) is narrower than an octave, so each
// octave holds at most two edges. bin = base[e] + (a >= e1[e]) + (a >= e2[e]), the same double
// comparisons as met_hist_bin, with two loads instead of a branchy binary search.
struct hist_lut {
    double e1[256], e2[256]; // edges inside the octave, +inf when absent
    uint8_t base[256];       // bin of the octave's lower end
};

static void hist_lut_init(struct hist_lut *t) {
    for (int e = 0; e < 256; e++) {
        t->e1[e] = t->e2[e] = INFINITY;
        if (e == 255) { // inf (NaN never reaches the histogram)
            t->base[e] = MET_HIST_N - 1;
            continue;
        }
        double lo = e == 0 ? 0.0 : ldexp(1.0, e - 127), hi = ldexp(1.0, e - 126);
        t->base[e] = (uint8_t)met_hist_bin(lo);
        int k = 0;
        for (int i = 0; i <= MET_HIST_N_MAIN; i++)
            if (hist_edges[i] > lo && hist_edges[i] < hi) {
                QP_ASSERT(k < 2);
                if (k++ == 0) t->e1[e] = hist_edges[i];
                else t->e2[e] = hist_edges[i];
            }
    }
}

// The bin of a = |x| (a >= 0, not NaN), equal to met_hist_bin(a).
static inline int hist_lut_bin(const struct hist_lut *t, float a) {
    uint32_t u;
    memcpy(&u, &a, sizeof u);
    int e = (int)(u >> 23);
    double d = a;
    return t->base[e] + (d >= t->e1[e]) + (d >= t->e2[e]);
}

// ---------------------------------------------------------------------------------------------
// Moments.

// Moments of the finite values of x[0..n): mean first, then the central powers. Returns the
// number of values skipped (NaN / inf).
static int64_t slice_moments(const float *x, int64_t n, struct met_moments *b) {
    double sum = 0;
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++)
        if (isfinite(x[i])) sum += x[i], k++;
    memset(b, 0, sizeof *b);
    if (k == 0) return n;
    double mean = sum / (double)k, m2 = 0, m3 = 0, m4 = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(x[i])) continue;
        double d = (double)x[i] - mean, d2 = d * d;
        m2 += d2;
        m3 += d2 * d;
        m4 += d2 * d2;
    }
    b->n = k, b->mean = mean, b->m2 = m2, b->m3 = m3, b->m4 = m4;
    return n - k;
}

void met_moments_merge(struct met_moments *a, const struct met_moments *b) {
    if (b->n == 0) return;
    if (a->n == 0) {
        *a = *b;
        return;
    }
    double na = (double)a->n, nb = (double)b->n, n = na + nb;
    double d = b->mean - a->mean, d2 = d * d;
    double m2 = a->m2 + b->m2 + d2 * na * nb / n;
    double m3 = a->m3 + b->m3 + d2 * d * na * nb * (na - nb) / (n * n) +
                3.0 * d * (na * b->m2 - nb * a->m2) / n;
    double m4 = a->m4 + b->m4 + d2 * d2 * na * nb * (na * na - na * nb + nb * nb) / (n * n * n) +
                6.0 * d2 * (na * na * b->m2 + nb * nb * a->m2) / (n * n) +
                4.0 * d * (na * b->m3 - nb * a->m3) / n;
    a->mean += d * nb / n;
    a->m2 = m2, a->m3 = m3, a->m4 = m4;
    a->n += b->n;
}

void met_moments_add(struct met_moments *m, const float *x, int64_t n) {
    struct met_moments b;
    slice_moments(x, n, &b);
    met_moments_merge(m, &b);
}

double met_moments_sd(const struct met_moments *m) {
    return m->n > 0 ? sqrt(m->m2 / (double)m->n) : 0.0;
}

double met_moments_kurtosis(const struct met_moments *m) {
    if (m->n == 0 || !(m->m2 > 0)) return NAN;
    return (double)m->n * m->m4 / (m->m2 * m->m2);
}

// ---------------------------------------------------------------------------------------------
// Medians and rankings.

struct ranked {
    float v;
    int64_t i;
};

// Descending value, then ascending index.
static int cmp_ranked(const void *pa, const void *pb) {
    const struct ranked *a = pa, *b = pb;
    if (a->v != b->v) return a->v > b->v ? -1 : 1;
    return (a->i > b->i) - (a->i < b->i);
}

static int cmp_float_asc(const void *pa, const void *pb) {
    float a = *(const float *)pa, b = *(const float *)pb;
    return (a > b) - (a < b);
}

// Median of v[0..n) (n >= 1, no NaN); mean of the two middle values when n is even.
static int median_of(const float *v, int64_t n, double *out) {
    float *s = qp_alloc_array((size_t)n, sizeof(float));
    if (!s) return QP_ENOMEM;
    memcpy(s, v, (size_t)n * sizeof(float));
    qsort(s, (size_t)n, sizeof(float), cmp_float_asc);
    *out = n % 2 ? (double)s[n / 2] : 0.5 * ((double)s[n / 2 - 1] + (double)s[n / 2]);
    qp_free(s);
    return 0;
}

int met_outlier_channels(const float *absmax, int64_t n, double k, int64_t *idx, int64_t *n_out,
                         double *median, char *err) {
    QP_ASSERT(n >= 0 && n_out);
    *n_out = 0;
    if (median) *median = 0;
    if (!(k >= 0)) return qp_fail(err, QP_EINVAL, "outlier factor %g must be >= 0", k);
    for (int64_t i = 0; i < n; i++)
        if (isnan(absmax[i])) return qp_fail(err, QP_EINVAL, "channel %lld has a NaN absmax", (long long)i);
    if (n == 0) return 0;
    double med;
    int rc = median_of(absmax, n, &med);
    if (rc) return qp_fail(err, rc, "cannot allocate %lld floats for a median", (long long)n);
    if (median) *median = med;
    double thr = k * med;
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++) m += (double)absmax[i] > thr;
    if (m == 0) return 0;
    struct ranked *r = qp_alloc_array((size_t)m, sizeof *r);
    if (!r) return qp_fail(err, QP_ENOMEM, "cannot allocate %lld channel ranks", (long long)m);
    m = 0;
    for (int64_t i = 0; i < n; i++)
        if ((double)absmax[i] > thr) r[m].v = absmax[i], r[m].i = i, m++;
    qsort(r, (size_t)m, sizeof *r, cmp_ranked);
    for (int64_t i = 0; i < m; i++) idx[i] = r[i].i;
    *n_out = m;
    qp_free(r);
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Weights.

int met_weight_stats(const float *w, int64_t rows, int64_t cols, struct met_wstats *st,
                     float *chan_absmax, char *err) {
    QP_ASSERT(rows >= 0 && cols >= 0 && st);
    memset(st, 0, sizeof *st);
    st->rows = rows, st->cols = cols, st->n = rows * cols;
    if (chan_absmax)
        for (int64_t c = 0; c < cols; c++) chan_absmax[c] = 0.0f;

    struct hist_lut lut;
    hist_lut_init(&lut);
    // Pass 1, row by row: finiteness, absmax, histogram, per-row moments merged in order.
    struct met_moments mom = {0};
    float amax = 0.0f;
    for (int64_t r = 0; r < rows; r++) {
        const float *x = w + r * cols;
        for (int64_t c = 0; c < cols; c++) {
            float a = fabsf(x[c]);
            if (!isfinite(a))
                return qp_fail(err, QP_EINVAL, "weight at row %lld, column %lld is not finite",
                               (long long)r, (long long)c);
            if (a > amax) amax = a;
            if (chan_absmax && a > chan_absmax[c]) chan_absmax[c] = a;
            st->hist[hist_lut_bin(&lut, a)]++;
        }
        struct met_moments b;
        slice_moments(x, cols, &b);
        met_moments_merge(&mom, &b);
    }
    st->mean = mom.mean;
    st->sd = met_moments_sd(&mom);
    st->kurtosis = met_moments_kurtosis(&mom);
    st->excess_kurtosis = st->kurtosis - 3.0;
    st->absmax = amax;
    st->absmax_over_sd = st->sd > 0 ? amax / st->sd : NAN;

    // Pass 2: the counts beyond 3σ and 6σ from the final mean and σ.
    if (st->sd > 0) {
        double t3 = 3.0 * st->sd, t6 = 6.0 * st->sd;
        int64_t n3 = 0, n6 = 0;
        for (int64_t i = 0; i < st->n; i++) {
            double d = fabs((double)w[i] - st->mean);
            n3 += d > t3;
            n6 += d > t6;
        }
        st->n_beyond_3sd = n3, st->n_beyond_6sd = n6;
    }
    if (st->n > 0) {
        st->frac_beyond_3sd = (double)st->n_beyond_3sd / (double)st->n;
        st->frac_beyond_6sd = (double)st->n_beyond_6sd / (double)st->n;
    }
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Activations.

int met_act_init(struct met_act *a, int64_t width) {
    memset(a, 0, sizeof *a);
    if (width < 1) return QP_EINVAL;
    a->chan_absmax = qp_calloc_array((size_t)width, sizeof(float));
    if (!a->chan_absmax) return QP_ENOMEM;
    a->width = width;
    return 0;
}

void met_act_deinit(struct met_act *a) {
    qp_free(a->chan_absmax);
    memset(a, 0, sizeof *a);
}

void met_act_add(struct met_act *a, const float *x, int64_t rows) {
    QP_ASSERT(a->chan_absmax && rows >= 0);
    for (int64_t r = 0; r < rows; r++) {
        const float *row = x + r * a->width;
        for (int64_t c = 0; c < a->width; c++) {
            float v = fabsf(row[c]);
            if (isfinite(v) && v > a->chan_absmax[c]) a->chan_absmax[c] = v;
        }
        struct met_moments b;
        a->n_nonfinite += slice_moments(row, a->width, &b);
        met_moments_merge(&a->mom, &b);
    }
    a->rows += rows;
}

int met_act_merge(struct met_act *dst, const struct met_act *src) {
    if (dst->width != src->width) return QP_EINVAL;
    for (int64_t c = 0; c < dst->width; c++)
        if (src->chan_absmax[c] > dst->chan_absmax[c]) dst->chan_absmax[c] = src->chan_absmax[c];
    met_moments_merge(&dst->mom, &src->mom);
    dst->rows += src->rows;
    dst->n_nonfinite += src->n_nonfinite;
    return 0;
}

int met_act_finish(const struct met_act *a, struct met_act_summary *out, char *err) {
    QP_ASSERT(a->chan_absmax && a->width >= 1);
    memset(out, 0, sizeof *out);
    out->width = a->width;
    out->rows = a->rows;
    out->n = a->mom.n;
    out->n_nonfinite = a->n_nonfinite;
    out->mean = a->mom.mean;
    out->sd = met_moments_sd(&a->mom);
    out->kurtosis = met_moments_kurtosis(&a->mom);
    out->excess_kurtosis = out->kurtosis - 3.0;

    int64_t w = a->width;
    struct ranked *r = qp_alloc_array((size_t)w, sizeof *r);
    if (!r) return qp_fail(err, QP_ENOMEM, "cannot allocate %lld channel ranks", (long long)w);
    double med;
    if (median_of(a->chan_absmax, w, &med)) {
        qp_free(r);
        return qp_fail(err, QP_ENOMEM, "cannot allocate %lld floats for a median", (long long)w);
    }
    out->median_chan_absmax = med;
    for (int64_t c = 0; c < w; c++) {
        float v = a->chan_absmax[c];
        out->chan_hist[met_hist_bin(v)]++;
        out->n_outlier_chans += (double)v > MET_OUTLIER_K * med;
        if (v > out->absmax) out->absmax = v;
        r[c].v = v, r[c].i = c;
    }
    qsort(r, (size_t)w, sizeof *r, cmp_ranked);
    out->n_top = (int)QP_MIN(w, (int64_t)MET_ACT_TOP);
    for (int i = 0; i < out->n_top; i++) {
        out->top_chan[i] = r[i].i;
        out->top_absmax[i] = r[i].v;
        out->top_ratio[i] = med > 0 ? r[i].v / med : r[i].v > 0 ? INFINITY : 0.0;
    }
    qp_free(r);
    return 0;
}
