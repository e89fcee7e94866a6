// met_layer.h — error of a variant tensor against a reference tensor of the same shape (hidden
// states, layer outputs), accumulated in fp64 over chunks of rows: relative Frobenius error,
// cosine of the flattened tensors and mean per-row cosine.
//
// Degenerate cases are defined, never NaN: a zero vector against a zero vector has cosine 1,
// a zero vector against a non-zero one cosine 0; the relative error is 0 when both tensors are
// zero and +inf when only the reference is.
//
// Pure statistics on caller-owned structs; no allocation. Depends on kernels/qp.h only.
#ifndef MET_LAYER_H
#define MET_LAYER_H

#include <stdint.h>

// Caller-owned accumulator: initialize with met_err_init (or zero it), feed with met_err_add.
// Every row's sums are formed first and then added in row order, so the result does not depend
// on how the rows are split into chunks; merging partials reassociates the sums (results agree
// to rounding, and are deterministic for a fixed partition).
struct met_err {
    double sse;     // sum of (v - r)^2, summed directly (no cancellation)
    double rr;      // sum of r^2
    double vv;      // sum of v^2
    double rv;      // sum of r*v
    double row_cos; // sum over rows of the per-row cosine
    int64_t rows;   // rows seen
    int64_t n;      // elements seen
};

struct met_err_result {
    double rel_err;      // ||v - r|| / ||r|| (Frobenius)
    double cos;          // <r, v> / (||r|| ||v||) of the flattened tensors, clamped to [-1, 1]
    double row_cos_mean; // mean over rows of the per-row cosine (1 when no rows were seen)
    int64_t rows, n;
};

void met_err_init(struct met_err *e);

// Adds rows of ref and var, each (rows, width) row-major contiguous floats. rows, width >= 0
// (asserted). Rows of width 0 count as zero vectors (cosine 1).
void met_err_add(struct met_err *e, const float *ref, const float *var, int rows, int width);

// dst += src (partials of disjoint row sets, e.g. one per thread).
void met_err_merge(struct met_err *dst, const struct met_err *src);

void met_err_finish(const struct met_err *e, struct met_err_result *out);

#endif
