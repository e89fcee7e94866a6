// qz_search.h — rounding and scale searches shared by llama.cpp's block quantizers
// (qz_ggml.c, qz_kquants.c), reproducing ggml-quants.c's helpers bit for bit.
// Depends on kernels/qp.h and libc only.
#ifndef QZ_SEARCH_H
#define QZ_SEARCH_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "qp.h" // qp_nearest_int

static inline int qz_clampi(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

// The value of largest magnitude among x[0..n), with its sign; the first one wins ties, NaN is
// passed over, 0 when none is above 0 in magnitude.
static inline float qz_signed_absmax(const float *x, int n) {
    float amax = 0.0f, max = 0.0f;
    for (int i = 0; i < n; i++) {
        float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    return max;
}


// Symmetric levels: L[i] in 0..2*nmax-1 (value L - nmax) for n values; returns the scale.
// ggml's make_qx_quants with rmse_type 1: weights qw[i], or x[i]^2 when qw is NULL; tries
// iscale = -(nmax + 0.1*is)/max for is = -9..9 and keeps the best weighted least-squares fit.
float qz_make_qx_quants(int n, int nmax, const float *x, int8_t *L, const float *qw);

// Asymmetric levels 0..nmax with a minimum <= 0 and weights, the search ggml's make_qkx2_quants
// and make_qkx3_quants share: starts from the min/max fit, then tries iscale = (rmin + rdelta*is +
// nmax)/(max - min) for is = 0..nstep, solving the weighted least squares for scale and min each
// time and keeping the lowest weighted error (absolute if use_mad, else squared). clamp_first:
// grid values are clamped before rounding (qkx3: an extreme min cannot overflow the rounding),
// else rounded then clamped (qkx2). *the_min gets -min (>= 0); Laux is n bytes of scratch.
// Returns the scale.
float qz_make_qkx_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L, float *the_min,
                         uint8_t *Laux, float rmin, float rdelta, int nstep, bool use_mad, bool clamp_first);

// Asymmetric levels 0..nmax with a minimum <= 0 and weights (ggml's make_qkx3_quants): starts from
// the min/max fit, then tries iscale = (rmin + rdelta*is + nmax)/(max - min) for is = 0..nstep,
// keeping the lowest weighted squared error; values are clamped before rounding. *the_min gets
// -min (>= 0); Laux is n bytes of scratch. Returns the scale.
float qz_make_qkx3_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L,
                          float *the_min, uint8_t *Laux, float rmin, float rdelta, int nstep);

#endif
