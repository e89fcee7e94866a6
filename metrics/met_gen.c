// met_gen.c — comparing free-running continuations (met_gen.h).
#include "met_gen.h"

#include <math.h>
#include <string.h>

#include "met_quantile.h"
#include "qp.h"

// ---------------------------------------------------------------------------------------------
// Two continuations

int met_gen_first_divergence(const int *a, int na, const int *b, int nb) {
    int m = QP_MIN(na, nb), i = 0;
    while (i < m && a[i] == b[i]) i++;
    if (i == m && na == nb) return -1;
    return i;
}

double met_gen_agreement(const int *a, int na, const int *b, int nb, int k) {
    QP_ASSERT(k >= 1);
    int same = 0;
    for (int i = 0; i < k; i++) {
        if (i < na && i < nb) same += a[i] == b[i];
        else same += i >= na && i >= nb; // both stopped before i
    }
    return (double)same / k;
}

size_t met_gen_common_bytes(const char *a, const char *b) {
    size_t i = 0;
    while (a[i] && a[i] == b[i]) i++;
    // Back off to a character boundary: a continuation byte (10xxxxxx) at i belongs to a
    // character that started before i and is cut.
    if (a[i] || b[i])
        while (i > 0 && ((unsigned char)a[i] & 0xC0) == 0x80) i--;
    return i;
}

// ---------------------------------------------------------------------------------------------
// One continuation

int met_gen_loop(const int *t, int n, int *start, int *period) {
    *start = *period = -1;
    for (int p = 1; p <= MET_GEN_LOOP_MAX_PERIOD && MET_GEN_LOOP_MIN_REPEATS * p <= n; p++) {
        int k = 0; // trailing positions i >= p with t[i] == t[i - p]
        while (k < n - p && t[n - 1 - k] == t[n - 1 - k - p]) k++;
        int m = k + p; // the cycle: its first period and the k positions that repeat it
        if (m < MET_GEN_LOOP_MIN_REPEATS * p || m < MET_GEN_LOOP_MIN_TOKENS) continue;
        if (*start < 0 || n - m < *start) { // strictly earlier: ties keep the shorter period
            *start = n - m;
            *period = p;
        }
    }
    return *start >= 0;
}

double met_gen_distinct(const int *t, int n, int ng) {
    QP_ASSERT(ng >= 1);
    if (n < ng) return NAN;
    int total = n - ng + 1, distinct = 0;
    for (int i = 0; i < total; i++) {
        int seen = 0;
        for (int j = 0; j < i && !seen; j++) seen = memcmp(t + i, t + j, (size_t)ng * sizeof *t) == 0;
        distinct += !seen;
    }
    return (double)distinct / total;
}

void met_gen_describe(const int *t, int n, int stopped, struct met_gen_cont *out) {
    int body = stopped && n > 0 ? n - 1 : n; // the text the model wrote, without its stop token
    out->n_tokens = n;
    out->eos_pos = stopped && n > 0 ? n - 1 : -1;
    met_gen_loop(t, body, &out->loop_start, &out->loop_period);
    out->distinct1 = met_gen_distinct(t, body, 1);
    out->distinct2 = met_gen_distinct(t, body, 2);
}

void met_gen_compare(const int *ref, int n_ref, int ref_stopped, const int *var, int n_var, int var_stopped, int k,
                     struct met_gen_pair *out) {
    met_gen_describe(ref, n_ref, ref_stopped, &out->ref);
    met_gen_describe(var, n_var, var_stopped, &out->var);
    out->first_div = met_gen_first_divergence(ref, n_ref, var, n_var);
    out->agree_k = met_gen_agreement(ref, n_ref, var, n_var, k);
    out->ref_nll_var = out->ref_nll_ref = NAN;
}

// ---------------------------------------------------------------------------------------------
// Many prompts

// Mean of the finite values x(i), NaN when none.
#define MET_GEN_MEAN(expr, out)                                                                 \
    do {                                                                                        \
        double s_ = 0;                                                                          \
        int c_ = 0;                                                                             \
        for (int i = 0; i < n; i++) {                                                           \
            double x_ = (expr);                                                                 \
            if (isfinite(x_)) s_ += x_, c_++;                                                   \
        }                                                                                       \
        (out) = c_ ? s_ / c_ : NAN;                                                             \
    } while (0)

// Sum of per-prompt means times tokens over the sum of tokens, NaN when no prompt has a value.
static double met_gen_pooled(const struct met_gen_pair *p, int n, int var) {
    double s = 0;
    long long toks = 0;
    for (int i = 0; i < n; i++) {
        double x = var ? p[i].ref_nll_var : p[i].ref_nll_ref;
        int m = var ? p[i].var.n_tokens : p[i].ref.n_tokens;
        if (!isfinite(x) || m <= 0) continue;
        s += x * m;
        toks += m;
    }
    return toks ? s / (double)toks : NAN;
}

void met_gen_summarize(const struct met_gen_pair *p, int n, int L, double *scratch, struct met_gen_summary *out) {
    QP_ASSERT(n >= 1);
    memset(out, 0, sizeof *out);
    out->n = n;
    int identical = 0;
    for (int i = 0; i < n; i++) {
        identical += p[i].first_div < 0;
        scratch[i] = p[i].first_div < 0 ? (double)L : (double)p[i].first_div;
    }
    met_sort_f64(scratch, (size_t)n);
    out->median_first_div = met_median_sorted(scratch, (size_t)n);
    out->identical_share = (double)identical / n;
    MET_GEN_MEAN(p[i].agree_k, out->agree_k);
    MET_GEN_MEAN(p[i].ref.loop_start >= 0 ? 1.0 : 0.0, out->loop_rate_ref);
    MET_GEN_MEAN(p[i].var.loop_start >= 0 ? 1.0 : 0.0, out->loop_rate_var);
    MET_GEN_MEAN(p[i].ref.distinct2, out->distinct2_ref);
    MET_GEN_MEAN(p[i].var.distinct2, out->distinct2_var);
    MET_GEN_MEAN(p[i].ref.eos_pos >= 0 ? 1.0 : 0.0, out->eos_rate_ref);
    MET_GEN_MEAN(p[i].var.eos_pos >= 0 ? 1.0 : 0.0, out->eos_rate_var);
    out->ref_nll_var = met_gen_pooled(p, n, 1);
    out->ref_nll_ref = met_gen_pooled(p, n, 0);
}
