// qz_kquants_simd.h — private to qz_kquants.c, qz_kquants_avx2.c and their test: the scalar
// reference of ggml's make_qkx2_quants (the scale/min search of Q2_K, Q4_K and Q5_K) and its
// AVX2 version, which gives the same bytes bit for bit. Callers go through qz_kquants.h.
// Depends on nothing but <stdbool.h> and <stdint.h>.
#ifndef QZ_KQUANTS_SIMD_H
#define QZ_KQUANTS_SIMD_H

#include <stdbool.h>
#include <stdint.h>

// Fits x (n <= 32 values) as scale*L - *the_min with L in 0..nmax under weights (n), trying
// iscale = (rmin + rdelta*is + nmax)/(max - min) for is = 0..nstep; returns the scale and writes
// L (n) and *the_min. Laux (n) is scratch. Absolute error if use_mad, else squared.
// The reference (qz_kquants.c) defines the result; the AVX2 version needs a CPU with AVX2.
float qz_make_qkx2_quants_ref(int n, int nmax, const float *x, const float *weights, uint8_t *L,
                              float *the_min, uint8_t *Laux, float rmin, float rdelta, int nstep,
                              bool use_mad);
float qz_make_qkx2_quants_avx2(int n, int nmax, const float *x, const float *weights, uint8_t *L,
                               float *the_min, uint8_t *Laux, float rmin, float rdelta, int nstep,
                               bool use_mad);

#endif
