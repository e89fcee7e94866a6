// kn_blocks.h — llama.cpp's legacy 32-value block formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1,
// IQ4_NL) in ggml's exact byte layout, their scalar dequantization, and the scalar reference dot
// products of a weight row against an activation row as ggml's generic CPU code computes them.
//
// Layouts follow ggml-common.h field for field; fp16 values are stored as their raw uint16_t bits
// (little-endian, as GGUF stores them) and converted with qp_fp16_to_fp32. Every struct has a
// static assert on its size, equal to its entry in the kn_types.c table.
// Depends on libc and kernels/qp.h only; no other qprobe layer. Kernels never allocate.
#ifndef KN_BLOCKS_H
#define KN_BLOCKS_H

#include <stddef.h>
#include <stdint.h>

#include "kn_types.h"

#define KN_QK4_0 32
#define KN_QK4_1 32
#define KN_QK5_0 32
#define KN_QK5_1 32
#define KN_QK8_0 32
#define KN_QK8_1 32
#define KN_QK4_NL 32

// ---------------------------------------------------------------------------------------------
// Block layouts. Within a block of 32 values, a nibble byte qs[j] holds value j in its low nibble
// and value j+16 in its high nibble (not j and j+1). Q5's fifth bits: bit j of the little-endian
// uint32 qh is the high bit of value j (j = 0..31).

// value = d * (q - 8), q in 0..15
struct kn_block_q4_0 {
    uint16_t d;      // fp16 scale
    uint8_t qs[16];  // nibbles
};
_Static_assert(sizeof(struct kn_block_q4_0) == 18, "q4_0 block is 18 bytes");

// value = d * q + m, q in 0..15
struct kn_block_q4_1 {
    uint16_t d;      // fp16 scale
    uint16_t m;      // fp16 minimum (offset)
    uint8_t qs[16];  // nibbles
};
_Static_assert(sizeof(struct kn_block_q4_1) == 20, "q4_1 block is 20 bytes");

// value = d * (q - 16), q in 0..31
struct kn_block_q5_0 {
    uint16_t d;      // fp16 scale
    uint8_t qh[4];   // fifth bits, little-endian uint32 (unaligned: read with memcpy)
    uint8_t qs[16];  // low nibbles
};
_Static_assert(sizeof(struct kn_block_q5_0) == 22, "q5_0 block is 22 bytes");

// value = d * q + m, q in 0..31
struct kn_block_q5_1 {
    uint16_t d;      // fp16 scale
    uint16_t m;      // fp16 minimum
    uint8_t qh[4];   // fifth bits, little-endian uint32
    uint8_t qs[16];  // low nibbles
};
_Static_assert(sizeof(struct kn_block_q5_1) == 24, "q5_1 block is 24 bytes");

// value = d * q, q in -127..127 (weights and the activations of the *_0 dot products)
struct kn_block_q8_0 {
    uint16_t d;      // fp16 scale
    int8_t qs[32];
};
_Static_assert(sizeof(struct kn_block_q8_0) == 34, "q8_0 block is 34 bytes");

// Activation type of the *_1 dot products: value = d * q, plus s = d * sum(q) rounded to fp16,
// which carries the weight minimum's contribution.
struct kn_block_q8_1 {
    uint16_t d;      // fp16 scale
    uint16_t s;      // fp16 of d * sum(qs)
    int8_t qs[32];
};
_Static_assert(sizeof(struct kn_block_q8_1) == 36, "q8_1 block is 36 bytes");

// value = d * kn_iq4nl_values[q], q in 0..15 (a fixed non-linear 16-level grid)
struct kn_block_iq4_nl {
    uint16_t d;      // fp16 scale
    uint8_t qs[16];  // nibbles (indices into kn_iq4nl_values)
};
_Static_assert(sizeof(struct kn_block_iq4_nl) == 18, "iq4_nl block is 18 bytes");

// Byte offset and size of a block field, for SIMD code that walks blocks as bytes.
#define KN_OFF(type, field) offsetof(struct kn_block_##type, field)
#define KN_BYTES(type) sizeof(struct kn_block_##type)

// IQ4_NL's 16 levels, ascending (ggml's kvalues_iq4nl).
extern const int8_t kn_iq4nl_values[16];

// ---------------------------------------------------------------------------------------------
// Dequantization, bit-exact with ggml's to_float (and ggml_fp16/bf16_to_fp32_row for F16/BF16).

// 1 if kn_dequantize_row supports type in this build: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1,
// Q8_0, IQ4_NL, Q8_1 (d * q; ggml itself has no to_float for it), and Q2_K..Q6_K when
// kernels/kn_blocks_k.h is part of the build.
int kn_type_has_dequant(enum kn_type type);

// Dequantizes n values of a row of `type` from src (packed blocks, 2-byte aligned) into dst
// (n floats). n must be a multiple of the type's block size and the type supported
// (kn_type_has_dequant): both are programmer errors and assert.
void kn_dequantize_row(enum kn_type type, const void *src, float *dst, int64_t n);

// ---------------------------------------------------------------------------------------------
// Reference dot products, as ggml's generic (non-SIMD) ggml_vec_dot_<w>_<a>:
//   per block, integer sums of q_w * q_a (two half-block partial sums added as ints), then float
//   accumulation over blocks in block order, starting from 0.0f:
//     Q4_0 x Q8_0:   sumf += (float)sumi * d_w * d_a           (left to right)
//     Q4_1 x Q8_1:   sumf += (d_w * d_a) * (float)sumi + m_w * s_a
//     Q5_0 x Q8_0:   sumf += (d_w * d_a) * (float)sumi
//     Q5_1 x Q8_1:   sumf += (d_w * d_a) * (float)sumi + m_w * s_a
//     Q8_0 x Q8_0:   sumf += (float)sumi * (d_w * d_a)
//     IQ4_NL x Q8_0: sumf += (d_a * d_w) * (float)(sumi1 + sumi2)
//   ("sumf += a + b" adds a + b first, then adds that to sumf, as C evaluates it.)
// Because Q8_1's s is rounded to fp16, the *_1 products differ from the dot of the dequantized
// rows by up to |m_w * s_a| * 2^-11 per block: that is ggml's numerics, kept on purpose.

// The activation type a weight type is dotted with (KN_Q8_0 or KN_Q8_1), or -1 if wtype has
// no reference dot product here.
int kn_vec_dot_act_type(enum kn_type wtype);

// Dot product of one weight row w (n values of wtype) with one activation row act (n values of
// kn_vec_dot_act_type(wtype)). n a multiple of 32; an unsupported wtype asserts.
float kn_vec_dot_ref(enum kn_type wtype, const void *w, const void *act, int64_t n);

#endif
