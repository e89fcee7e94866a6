// met_ppl.h — perplexity from per-token negative log-likelihoods: running fp64 sums in a fixed
// order, and the summary llama.cpp's perplexity tool prints (PPL = exp(mean NLL), with
// uncertainty PPL * sqrt((mean(nll^2) - mean(nll)^2) / (N - 1))).
// Depends on kernels/ only.
#ifndef MET_PPL_H
#define MET_PPL_H

#include <stdint.h>

struct met_nll {
    double sum;  // sum of nll
    double sum2; // sum of nll^2
    int64_t n;
};

static inline void met_nll_add(struct met_nll *s, double nll) {
    s->sum += nll;
    s->sum2 += nll * nll;
    s->n++;
}

double met_nll_mean(const struct met_nll *s);
double met_ppl(const struct met_nll *s);        // exp(mean)
double met_ppl_stderr(const struct met_nll *s); // as llama.cpp prints it; 0 when n < 2

// NLL of token `target` under logits (n_vocab floats): logsumexp(logits) - logits[target],
// through the engine's kernel table (fp64 sum of float exps).
struct kn_ops;
double met_token_nll(const struct kn_ops *ops, const float *logits, int n_vocab, int target);

#endif
