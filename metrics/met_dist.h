// met_dist.h — lockstep distribution statistics of a variant model against a reference model,
// with the semantics of llama.cpp's `perplexity --kl-divergence`: per scored token, both logit
// rows give NLLs, KLD(ref‖var), Δp and top-1 agreement; over all tokens, PPL of each model, the
// paired ln(PPL ratio), KLD and Δp means and percentiles, RMS Δp and "same top p", each with
// llama.cpp's uncertainty.
//
// Differences from llama.cpp, all on purpose: the reference distribution is the exact fp64
// log-softmax of the reference logits over the whole vocabulary (llama.cpp reads it back from a
// uint16-quantized file and drops entries below -16 nats, which is also why its per-token KLD
// can go slightly negative); every per-token value is computed and stored in double (llama.cpp:
// float); and degenerate uncertainties that llama.cpp would print as nan are defined (see
// struct met_dist_summary).
//
// Pure statistics: no I/O, no engine, no threads. Depends on kernels/qp.h and metrics/met_ppl.h.
#ifndef MET_DIST_H
#define MET_DIST_H

#include <stdint.h>

// ---------------------------------------------------------------------------------------------
// One scored token

struct met_dist_tok {
    double nll_ref;  // -log p_ref(token), nats
    double nll_var;  // -log p_var(token)
    double kld;      // sum_i p_ref(i) * (log p_ref(i) - log p_var(i)), nats
    double dp;       // p_var(token) - p_ref(token)
    int32_t top_ref; // argmax of the reference logits (lowest index on ties)
    int32_t top_var; // argmax of the variant logits (lowest index on ties)
    int32_t same_top; // top_ref == top_var
};

// Computes every per-token statistic from the two logit rows ref and var (vocab floats each)
// and the correct next token, in fp64 over the whole vocabulary: x_i = l_i - max(l),
// log p_i = x_i - log(sum_j exp(x_j)). KLD is exactly 0 when ref and var are bit-identical.
// Vocabulary entries with p_ref = 0 (logit -inf) contribute nothing to the KLD; p_var = 0 where
// p_ref > 0 makes it +inf. NaN or +inf logits give NaN results.
// Pure and reentrant: may run on many threads at once. vocab > 0 and 0 <= token < vocab are
// asserted (programmer errors).
void met_dist_token(const float *ref, const float *var, int vocab, int token,
                    struct met_dist_tok *out);

// ---------------------------------------------------------------------------------------------
// The reference's distribution kept in 16 bits (the reference cache, harness/run/hx_refcache.h)
//
// A variant can then be compared with a reference that is no longer in memory. Per scored token
// the reference row is kept as
//  - exactly (fp64 / int): nll_ref, its argmax, and x_min = min_i (l_i - max l) (<= 0);
//  - per vocabulary entry a code q_i in 0..65535 with x_i = l_i - max l rounded to the grid
//    x_min + q * h, h = -x_min / 65535 (round to nearest): |x^_i - x_i| <= eps = h / 2.
// The variant's row is never rounded. KLD is computed *consistently* from the codes:
// p^_i = exp(x^_i) / sum_j exp(x^_j), KLD^ = sum_i p^_i (log p^_i - log p_var(i)). Then, exactly,
//   KLD^ - KLD = KL(p^ || p) + sum_i (p^_i - p_i)(d_i - KLD),   d_i = log p_i - log p_var(i),
// and since p^_i / p_i = exp(e_i - c) with |e_i - c| <= 2 eps,
//   |KLD^ - KLD| <= (e^{2 eps} - 1) * sum_i p_i |d_i - KLD| + (e^{2 eps} - 1)^2
// (plus the rounding of the fp64 sums, both ways about vocab * 1e-16 * |x|). The first term is
// small for a good variant (its log ratios d_i are nearly constant); met_dist_cached_bound
// evaluates the bound from both exact rows (the tests' oracle). nll_ref, nll_var, Δp and top-1
// come out bit-identical to met_dist_token's.
// A row with a non-finite logit or max is flagged (MET_DIST_REF_NONFINITE): its KLD is NaN, as
// met_dist_token gives it.

#define MET_DIST_CODE_MAX 65535
#define MET_DIST_REF_NONFINITE 1

struct met_dist_ref {
    double nll_ref;  // -log p_ref(token), exactly as met_dist_token computes it
    double x_min;    // min_i (l_i - max l), <= 0; the codes' grid
    double nll_ppl;  // met_token_nll's value (the reference's own perplexity, metrics/met_ppl.h)
    int32_t top_ref; // argmax (lowest index on ties)
    int32_t flags;   // MET_DIST_REF_*
};

// Encodes the reference row ref (vocab floats) for the correct next token: *out and codes
// (vocab values). nll_ppl is left to the caller. Pure and reentrant.
void met_dist_ref_encode(const float *ref, int vocab, int token, struct met_dist_ref *out, uint16_t *codes);

// Every per-token statistic of the variant row var against the encoded reference (r, codes).
void met_dist_token_cached(const struct met_dist_ref *r, const uint16_t *codes, const float *var, int vocab,
                           int token, struct met_dist_tok *out);

// The bound above for one token, from the exact rows (tests): eps of the encoding of ref, and
// (e^{2 eps} - 1) * sum p_i |d_i - KLD| + (e^{2 eps} - 1)^2 + vocab * 2^-50 * (1 + max|x|), the fp64 rounding.
double met_dist_cached_bound(const float *ref, const float *var, int vocab);

// ---------------------------------------------------------------------------------------------
// Percentile levels reported for the KLD and Δp series (llama.cpp prints all but p25/p75 for
// KLD, and all of them for Δp). MIN and MAX are the extreme values, MEDIAN llama.cpp's median,
// the others met_quantile_sorted() at met_pct_fraction[k].

enum met_pct {
    MET_PCT_MIN,
    MET_PCT_0_1,
    MET_PCT_1,
    MET_PCT_5,
    MET_PCT_10,
    MET_PCT_25,
    MET_PCT_MEDIAN,
    MET_PCT_75,
    MET_PCT_90,
    MET_PCT_95,
    MET_PCT_99,
    MET_PCT_99_9,
    MET_PCT_MAX,
    MET_PCT_N
};

extern const double met_pct_fraction[MET_PCT_N];  // 0, 0.001, 0.01, ..., 0.999, 1
extern const char *const met_pct_name[MET_PCT_N]; // "min", "p0.1", ..., "median", ..., "max"

// ---------------------------------------------------------------------------------------------
// Summary over all pushed tokens, field by field the lines llama.cpp prints (quoted). Shares and
// probabilities are fractions (llama.cpp prints them x100 as %). "unc" is llama.cpp's one-sigma
// uncertainty of a mean:
//   mean_unc(x) = sqrt((mean(x^2) - mean(x)^2) / (n-1)) when n > 10 and that variance is > 0,
//   else 0.
// With n == 0 every statistic is NaN.

struct met_dist_summary {
    int64_t n; // tokens

    // "Perplexity statistics"
    double nll_ref, nll_ref_unc; // mean NLL of the reference (nats) and its mean_unc
    double nll_var, nll_var_unc; // the same for the variant
    double ppl_ref, ppl_ref_unc; // "Mean PPL(base)": exp(nll_ref) ± ppl_ref * nll_ref_unc
    double ppl_var, ppl_var_unc; // "Mean PPL(Q)"
    // Covariance of the two mean NLLs, (mean(r*v) - mean(r)*mean(v)) / (n-1); 0 when n < 10.
    double nll_cov;
    // "Cor(ln(PPL(Q)), ln(PPL(base)))": nll_cov / (nll_var_unc * nll_ref_unc); 0 when either
    // uncertainty is 0 (llama.cpp: nan).
    double nll_cor;
    // "Mean ln(PPL(Q)/PPL(base))": nll_var - nll_ref
    //   ± sqrt(nll_var_unc^2 + nll_ref_unc^2 - 2 nll_cov), the radicand clamped at 0.
    double ln_ratio, ln_ratio_unc;
    // "Mean PPL(Q)/PPL(base)": exp(ln_ratio) ± ppl_ratio * ln_ratio_unc.
    double ppl_ratio, ppl_ratio_unc;
    // "Mean PPL(Q)-PPL(base)": ± sqrt(ppl_var_unc^2 + ppl_ref_unc^2
    //   - 2 ppl_var ppl_ref nll_cov), the radicand clamped at 0.
    double ppl_diff, ppl_diff_unc;

    // "KL divergence statistics": "Mean KLD" ± mean_unc, and the percentile levels.
    double kld_mean, kld_unc;
    double kld_pct[MET_PCT_N];

    // "Token probability statistics": "Mean Δp" ± mean_unc, the percentile levels,
    // "RMS Δp": sqrt(mean(Δp^2)) ± 0.5 / dp_rms * mean_unc(Δp^2) (0 when dp_rms is 0), and
    // "Same top p": n_same_top / n ± sqrt(p (1-p) / (n-1)) (0 when n < 2).
    double dp_mean, dp_unc;
    double dp_pct[MET_PCT_N];
    double dp_rms, dp_rms_unc;
    int64_t n_same_top;
    double same_top, same_top_unc;
};

// ---------------------------------------------------------------------------------------------
// Streaming accumulator. Running sums are taken in push order, so pushing the same tokens in the
// same order gives bit-identical summaries however the tokens were computed (compute
// met_dist_token in parallel, push serially). Memory: two doubles per token (the KLD and Δp
// series, for exact percentiles). Not thread-safe.

struct met_dist;

// Creates an empty accumulator with room for n_hint tokens (0: a default; it grows as needed).
// *out is freed with met_dist_destroy. Returns 0, or QP_ENOMEM with *out = NULL.
int met_dist_create(int64_t n_hint, struct met_dist **out);
void met_dist_destroy(struct met_dist *d); // NULL is a no-op

// Appends one token's statistics. Returns 0, or QP_ENOMEM (the accumulator is then unchanged).
int met_dist_push(struct met_dist *d, const struct met_dist_tok *t);

int64_t met_dist_count(const struct met_dist *d);

// Fills *out from everything pushed so far. Sorts the stored series in place (their order is not
// observable), so d is not const; pushing may continue afterwards and finish may be called again.
void met_dist_finish(struct met_dist *d, struct met_dist_summary *out);

#endif
