// kn_block.h — the element-wise and attention math of the block variants beyond Llama's
// (kn_model.h): tanh, GELU (tanh) gating, soft-capping, and causal attention with capped scores.
//
// Plain C, compiled once for the baseline ISA and used by every kernel table, so the results are
// the same bits on every ISA and thread count (the engine splits rows, never a reduction).
// Sums follow kn_ops.h's 16-lane order; exp is kn_expf_ref. Depends on libc and kn_ops.h only.
#ifndef KN_BLOCK_H
#define KN_BLOCK_H

#include <stddef.h>

// tanh in float: Cephes' odd polynomial below |x| = 0.625 (relative error ~1e-7), above it
// 1 - 2 / (exp(2|x|) + 1) with kn_expf_ref (absolute error below 2e-7), ±1 beyond |x| = 9.
float kn_tanhf(float x);

// h[i] = gelu(g[i]) * u[i] with gelu(x) = 0.5 x (1 + tanh(sqrt(2/pi) x (1 + 0.044715 x^2)))
// (PyTorch's approximate="tanh", Gemma's "gelu_pytorch_tanh"). h may equal g.
void kn_gelu_gate(float *h, const float *g, const float *u, int n);

// x[i] = cap * tanh(x[i] * (1 / cap)), as llama.cpp soft-caps (scale, tanh, scale). cap > 0.
void kn_softcap(float *x, int n, float cap);

// One query of causal attention whose scores are soft-capped (Gemma 2): q is already scaled,
//   s_j = cap * tanh((sum_d q[d] * kt[d*kt_stride + j]) / cap), p = softmax(s),
//   out[d] = sum_j p_j * v[j*head_size + d],
// over keys j in [0, n_keys) (the caller offsets kt and v for a sliding window). The dot products
// are FMA chains over d from 0.0f as kn_ops.h's; the softmax sum is the 16-lane tree.
// scratch: n_keys floats. _ref: baseline ISA; _avx2: built with FMA instructions, the same bits,
// only for CPUs with AVX2 and FMA.
void kn_attend_capped_ref(float *out, const float *q, const float *kt, size_t kt_stride, const float *v,
                          int head_size, int n_keys, float cap, float *scratch);
void kn_attend_capped_avx2(float *out, const float *q, const float *kt, size_t kt_stride, const float *v,
                           int head_size, int n_keys, float cap, float *scratch);

#endif
