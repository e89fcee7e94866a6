// qz_ggml.h — llama.cpp's reference quantizers for the legacy block formats (Q8_0, Q4_0, Q4_1,
// Q5_0, Q5_1, IQ4_NL) and for the Q8_0/Q8_1 activations of its dot products, byte for byte as
// llama.cpp commit c392e50 (Feb 2025) writes them. The block layouts are in kernels/kn_blocks.h.
// Depends on kernels/ (qp.h, kn_types.h, kn_blocks.h) and libc only. Nothing here allocates.
#ifndef QZ_GGML_H
#define QZ_GGML_H

#include <stdint.h>

// Quantizes one row of n floats x into y (kn_row_bytes(type, n) bytes, caller-owned).
//
// imatrix == NULL: exactly what llama-quantize writes without an importance matrix:
//   quantize_row_<t>_ref for Q8_0, Q4_0, Q4_1, Q5_0, Q5_1; for IQ4_NL, quantize_row_iq4_nl_impl
//   one 32-value block at a time with ntry = 7 and weights x^2.
// imatrix != NULL (n per-column importances, >= 0): what llama.cpp's quantize_<t>() does with
//   quant_weights: per-value weights w_j = imatrix[j] * sqrt(sigma2 + x_j^2) (sigma2 = mean x^2
//   over the row, over the 32-value block times 2 for IQ4_NL), then the weighted searches
//   (make_qx_quants for Q4_0/Q5_0, make_qkx3_quants for Q4_1/Q5_1, the IQ4_NL scale search).
//   Q8_0 ignores the imatrix, as llama.cpp does.
// Returns 0; QP_ENOTSUP for any other type; QP_EINVAL if n is not a positive multiple of 32.
int qz_quantize_row(int type, const float *x, void *y, int64_t n, const float *imatrix);

// Quantizes one activation row of n floats x into y for the reference dot products
// (kn_vec_dot_ref): type KN_Q8_0 or KN_Q8_1, as quantize_row_q8_0_ref / quantize_row_q8_1_ref
// (Q8_1 also stores s = fp16(d * sum(q))). Returns 0, QP_ENOTSUP or QP_EINVAL as above.
int qz_quantize_act_row(int type, const float *x, void *y, int64_t n);

// The IQ4_NL level of id·x[j] for the 32 values x[0..32) of a block into L: the level nearest to
// it, a tie going to the upper one, below the lowest 0, above the highest (or NaN) 15 — the
// pre-2025 binary search of ggml's best_index_int8, whose ties and float comparisons it keeps.
// Computed without branches (the count of levels 1..15 at or below the value, then the same
// comparison of the two distances in the same float arithmetic), so that the compiler takes a
// block's values together: the search's four unpredictable branches per value were most of
// IQ4_NL's quantization time. Exposed for tests (against the search itself).
void qz_iq4_nl_levels(float id, const float *x, uint8_t *L);

#endif
