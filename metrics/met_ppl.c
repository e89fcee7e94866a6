// met_ppl.c — perplexity statistics (met_ppl.h).
#include "met_ppl.h"

#include <math.h>

#include "kn_ops.h"

double met_nll_mean(const struct met_nll *s) { return s->n ? s->sum / (double)s->n : NAN; }

double met_ppl(const struct met_nll *s) { return exp(met_nll_mean(s)); }

double met_ppl_stderr(const struct met_nll *s) {
    if (s->n < 2) return 0.0;
    double mean = s->sum / (double)s->n, mean2 = s->sum2 / (double)s->n;
    double var = (mean2 - mean * mean) / (double)(s->n - 1);
    return met_ppl(s) * sqrt(var > 0 ? var : 0);
}

double met_token_nll(const struct kn_ops *ops, const float *logits, int n_vocab, int target) {
    return ops->logsumexp(logits, n_vocab, 0) - (double)logits[target];
}
