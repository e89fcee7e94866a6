// met_gen.h — comparing two free-running continuations of one prompt (the reference's and a
// variant's) and describing each (docs/GENERATION.md): where they split, how much of them agrees,
// whether a continuation ends in a loop, how varied it is, and the summary over many prompts.
//
// A continuation is the list of generated token ids, the stop token (EOS) included when the model
// produced one; `stopped` says so. Definitions, each computed exactly as written here:
//  - first divergence: the first position i where the two lists differ (a position that one list
//    has and the other does not counts as differing); the two are *identical* when they have the
//    same length and no such position exists. The matched prefix in tokens is the same number.
//  - agreement in the first K: the share of positions i < K where both lists have a token and the
//    tokens are equal, or neither list has one (both stopped earlier).
//  - loop: the continuation (stop token excluded) ends in a cycle: for some period p (1 <= p <=
//    MET_GEN_LOOP_MAX_PERIOD) its last m tokens satisfy t[i] == t[i - p], with m >= 3 p
//    (MET_GEN_LOOP_MIN_REPEATS periods) and m >= MET_GEN_LOOP_MIN_TOKENS. Of all periods the one
//    whose cycle starts earliest wins (ties: the shortest period); the cycle's start is reported.
//    This is "repeated n-grams" made strict: the same p-gram back to back to the end.
//  - distinct-n (Li et al. 2016, "A diversity-promoting objective"): distinct n-grams / n-grams of
//    the continuation (stop token excluded); NaN when it has fewer than n tokens.
// Summaries: the median first divergence counts an identical pair as L (the generation length),
// with met_median_sorted's rule; the reference NLL of the variant's text is pooled over tokens
// (sum of per-prompt means times tokens, over the sum of tokens), not a mean of means.
//
// Pure functions on caller-owned arrays. Depends on kernels/qp.h and metrics/met_quantile.h.
#ifndef MET_GEN_H
#define MET_GEN_H

#include <stddef.h>

#define MET_GEN_LOOP_MAX_PERIOD 32
#define MET_GEN_LOOP_MIN_REPEATS 3
#define MET_GEN_LOOP_MIN_TOKENS 8

// The first differing position of a[0..na) and b[0..nb) (see above); -1 when identical.
int met_gen_first_divergence(const int *a, int na, const int *b, int nb);

// Agreement in the first k positions (k >= 1), in [0, 1].
double met_gen_agreement(const int *a, int na, const int *b, int nb, int k);

// 1 when t[0..n) ends in a loop (see above), with its start and period; 0 (start = period = -1)
// otherwise.
int met_gen_loop(const int *t, int n, int *start, int *period);

// Distinct ng-grams / ng-grams of t[0..n) (ng >= 1); NaN when n < ng. O(n^2 ng): meant for
// continuations of up to a few thousand tokens.
double met_gen_distinct(const int *t, int n, int ng);

// The length in bytes of the longest common prefix of the strings a and b, shortened so that it
// does not end inside a UTF-8 sequence (the prefix is shown as text).
size_t met_gen_common_bytes(const char *a, const char *b);

// One continuation described on its own.
struct met_gen_cont {
    int n_tokens;           // stop token included
    int eos_pos;            // position of the stop token, -1 when the model did not stop
    int loop_start, loop_period; // -1 when no loop
    double distinct1, distinct2;
};
// t[0..n) with stopped = 1 when t[n - 1] is the stop token.
void met_gen_describe(const int *t, int n, int stopped, struct met_gen_cont *out);

// One prompt: the reference's continuation against the variant's.
struct met_gen_pair {
    struct met_gen_cont ref, var;
    int first_div;      // -1: identical
    double agree_k;     // agreement in the first K
    double ref_nll_var; // mean reference NLL per token of the variant's continuation (NaN: not scored)
    double ref_nll_ref; // the same of the reference's own continuation (NaN: not known)
};
void met_gen_compare(const int *ref, int n_ref, int ref_stopped, const int *var, int n_var, int var_stopped, int k,
                     struct met_gen_pair *out);

struct met_gen_summary {
    int n;                   // prompts
    double median_first_div; // identical pairs count as L
    double identical_share;
    double agree_k;          // mean over prompts
    double loop_rate_ref, loop_rate_var;
    double distinct2_ref, distinct2_var; // means over prompts with a value
    double eos_rate_ref, eos_rate_var;
    double ref_nll_var, ref_nll_ref;     // pooled over tokens; NaN when no prompt has a value
};
// Summarizes p[0..n) (n >= 1) for generation length L. scratch: room for n doubles.
void met_gen_summarize(const struct met_gen_pair *p, int n, int L, double *scratch, struct met_gen_summary *out);

#endif
