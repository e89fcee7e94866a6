// met_quantile.c — sorting and llama.cpp-style percentiles (met_quantile.h).
#include "met_quantile.h"

#include <math.h>
#include <stdlib.h>

// ---------------------------------------------------------------------------------------------
// Sorting

// Total order on doubles: numeric order, -0.0 before +0.0, every NaN after every number (NaNs
// compare equal among themselves). Equal elements are then bit-identical apart from NaN
// payloads, so qsort's instability cannot change the sorted bits.
static int cmp_f64(const void *pa, const void *pb) {
    double a = *(const double *)pa, b = *(const double *)pb;
    int na = isnan(a) != 0, nb = isnan(b) != 0;
    if (na || nb) return na - nb;
    if (a < b) return -1;
    if (a > b) return 1;
    return (signbit(b) != 0) - (signbit(a) != 0);
}

void met_sort_f64(double *v, size_t n) {
    if (n > 1) qsort(v, n, sizeof *v, cmp_f64);
}

// ---------------------------------------------------------------------------------------------
// Percentiles

double met_quantile_sorted(const double *v, size_t n, double f) {
    if (n == 0) return NAN;
    if (f <= 0) return v[0];
    if (f >= 1) return v[n - 1];
    double p = f * (double)(n - 1);
    size_t i = (size_t)p; // p >= 0: truncation is floor
    double w = p - (double)i;
    size_t j = i + 1 < n ? i + 1 : n - 1;
    return (1 - w) * v[i] + w * v[j];
}

double met_median_sorted(const double *v, size_t n) {
    if (n == 0) return NAN;
    if (n % 2) return v[n / 2];
    return 0.5 * (v[n / 2 - 1] + v[n / 2]);
}
