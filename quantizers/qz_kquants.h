// qz_kquants.h — llama.cpp's k-quant quantizers (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) and its Q8_K
// activation quantizer, filling the block layouts of kernels/kn_blocks_k.h.
//
// Without an importance matrix the output is byte-identical to llama.cpp's
// quantize_row_q*_K_ref (what llama-quantize writes when no imatrix is given); with one it is
// the quant_weights path of quantize_q*_K (quantize_row_q*_K_impl).
// Depends on kernels/ only (qp.h, kn_types.h, kn_blocks_k.h).
#ifndef QZ_KQUANTS_H
#define QZ_KQUANTS_H

#include <stdint.h>

// Quantizes one row x (n floats, n a multiple of 256) into y (kn_row_bytes(type, n) bytes,
// caller-owned) as type KN_Q2_K..KN_Q6_K. imatrix is NULL or n per-column importances (the
// row's slice of a llama.cpp imatrix: mean squared activation of each input channel); with it
// the error is weighted by imatrix[j] * sqrt(sigma2 + x[j]^2) as llama.cpp does (Q6_K: by
// imatrix[j] alone, as llama.cpp does). Nothing is allocated.
// Returns 0, QP_ENOTSUP for any other type, QP_EINVAL if n < 0 or n % 256 != 0.
int qz_quantize_row_k(int type, const float *x, void *y, int64_t n, const float *imatrix);

// Quantizes an activation row x (n floats, n a multiple of 256) into n/256 struct kn_block_q8_K
// at y (caller-owned), byte-identical to llama.cpp's quantize_row_q8_K_ref; all-zero blocks get
// d = 0 and zero quants and bsums (ggml leaves their bsums unwritten).
// Returns 0 or QP_EINVAL if n < 0 or n % 256 != 0.
int qz_quantize_act_q8_K(const float *x, void *y, int64_t n);

#endif
