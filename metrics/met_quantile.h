// met_quantile.h — sorting and percentiles of a series of per-token values, with exactly the
// rule llama.cpp's perplexity tool uses for its KLD and Δp statistics:
//  - percentile(f) on n ascending values: f <= 0 gives the first value, f >= 1 the last;
//    otherwise p = f*(n-1), i = floor(p), w = p - i, result (1-w)*v[i] + w*v[min(i+1, n-1)]
//    (linear interpolation between order statistics, "type 7");
//  - the median is not percentile(0.5) but the middle value for odd n and the mean of the two
//    middle values for even n (the same number up to the last bit).
// llama.cpp stores the values as float and interpolates in float with float fractions (0.999f);
// here everything is double, so results can differ from its log in the last float bits only.
//
// Pure functions on caller-owned arrays; no allocation. Depends on kernels/qp.h only.
#ifndef MET_QUANTILE_H
#define MET_QUANTILE_H

#include <stddef.h>

// Sorts v[0..n) ascending in place under a total order: -0.0 before +0.0, NaNs last, so the
// sorted bits do not depend on the input order.
void met_sort_f64(double *v, size_t n);

// llama.cpp's percentile of the sorted v[0..n) at fraction f (see above). NaN when n == 0.
double met_quantile_sorted(const double *v, size_t n, double f);

// llama.cpp's median of the sorted v[0..n): v[n/2] for odd n, 0.5*(v[n/2-1] + v[n/2]) for even
// n. NaN when n == 0.
double met_median_sorted(const double *v, size_t n);

#endif
