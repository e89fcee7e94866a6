// kn_blocks_k.h — llama.cpp's k-quant block layouts (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K: super-blocks
// of 256 weights) and the Q8_K activation block, byte for byte as ggml-common.h lays them out,
// plus the scalar dequantization (kn_dequant_k.c) and the reference dot products with a Q8_K
// activation row (kn_vecdot_k.c).
//
// All multi-byte fields are little-endian as stored in GGUF; "fp16" fields are IEEE binary16
// bit patterns (convert with qp_fp16_to_fp32). Sub-block scales are 4- or 6-bit integers
// multiplied by the super-block's fp16 d (and dmin for the types with a minimum).
// Depends on libc only (and kernels/kn_types.h for the type ids).
#ifndef KN_BLOCKS_K_H
#define KN_BLOCKS_K_H

#include <stdint.h>

#include "kn_types.h"

#define KN_QK_K 256 // weights per super-block

// Q2_K: 16 sub-blocks of 16; w = d*(sc&15)*q - dmin*(sc>>4), q in 0..3. 2.625 bits/weight.
struct kn_block_q2_K {
    uint8_t scales[KN_QK_K / 16]; // (16): low nibble scale, high nibble min, of sub-block j
    uint8_t qs[KN_QK_K / 4];      // (64): 2-bit quants; byte 32*h + l holds weights
                                  //   128*h + l + 32*s at bits 2s..2s+1, s = 0..3
    uint16_t d;                   // fp16 super-block scale of the scales
    uint16_t dmin;                // fp16 super-block scale of the mins
};

// Q3_K: 16 sub-blocks of 16; w = d*(s-32)*(q-4), q in 0..7 (2 low bits in qs, 1 high bit in
// hmask), s a 6-bit scale. 3.4375 bits/weight.
struct kn_block_q3_K {
    uint8_t hmask[KN_QK_K / 8];   // (32): high bit of weight k is bit k/32 of hmask[k%32]
    uint8_t qs[KN_QK_K / 4];      // (64): low 2 bits, laid out as Q2_K's qs
    uint8_t scales[12];           // 16 6-bit scales: low nibbles in bytes 0..7 (j<8 low nibble
                                  //   of byte j, j>=8 high nibble of byte j-8), high 2 bits of
                                  //   scale j at bits 2*(j/4) of byte 8 + j%4
    uint16_t d;                   // fp16 super-block scale
};

// Q4_K: 8 sub-blocks of 32; w = d*sc*q - dmin*m, q in 0..15, sc and m 6-bit. 4.5 bits/weight.
struct kn_block_q4_K {
    uint16_t d;                   // fp16 super-block scale of the scales
    uint16_t dmin;                // fp16 super-block scale of the mins
    uint8_t scales[12];           // 8 6-bit scales and 8 6-bit mins (see get_scale_min in
                                  //   kn_dequant_k.c): j<4: sc=b[j]&63, m=b[j+4]&63; j>=4:
                                  //   sc=(b[j+4]&15)|(b[j-4]>>6)<<4, m=(b[j+4]>>4)|(b[j]>>6)<<4
    uint8_t qs[KN_QK_K / 2];      // (128): byte 32*h + l holds weight 64*h + l (low nibble)
                                  //   and 64*h + 32 + l (high nibble)
};

// Q5_K: as Q4_K plus a fifth bit per weight. 5.5 bits/weight.
struct kn_block_q5_K {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[12];           // as Q4_K
    uint8_t qh[KN_QK_K / 8];      // (32): the high bit (value 16) of weight 32*s + l
                                  //   is bit s of qh[l]
    uint8_t qs[KN_QK_K / 2];      // (128): low 4 bits, laid out as Q4_K's qs
};

// Q6_K: 16 sub-blocks of 16; w = d*sc*(q-32), q in 0..63, sc a signed 8-bit scale.
// 6.5625 bits/weight.
struct kn_block_q6_K {
    uint8_t ql[KN_QK_K / 2];      // (128): low 4 bits; for half h (128 weights), byte 64*h + l
                                  //   holds weights 128h+l (low) and 128h+64+l (high nibble),
                                  //   byte 64*h + 32 + l holds 128h+32+l and 128h+96+l
    uint8_t qh[KN_QK_K / 4];      // (64): high 2 bits; byte 32*h + l holds those of weights
                                  //   128h + l + 32*s at bits 2s..2s+1
    int8_t scales[KN_QK_K / 16];  // (16): signed scale of sub-block j
    uint16_t d;                   // fp16 super-block scale
};

// Q8_K: the activation type of the k-quant dot products; w = d*q.
struct kn_block_q8_K {
    float d;                      // fp32 scale
    int8_t qs[KN_QK_K];           // (256) quants, in -127..127
    int16_t bsums[KN_QK_K / 16];  // (16) sum of qs over each group of 16
};

// The sizes in kernels/kn_types.c's table (checked against it at run time by the tests).
_Static_assert(sizeof(struct kn_block_q2_K) == 16 + 64 + 2 + 2, "q2_K block size");
_Static_assert(sizeof(struct kn_block_q3_K) == 32 + 64 + 12 + 2, "q3_K block size");
_Static_assert(sizeof(struct kn_block_q4_K) == 2 + 2 + 12 + 128, "q4_K block size");
_Static_assert(sizeof(struct kn_block_q5_K) == 2 + 2 + 12 + 32 + 128, "q5_K block size");
_Static_assert(sizeof(struct kn_block_q6_K) == 128 + 64 + 16 + 2, "q6_K block size");
_Static_assert(sizeof(struct kn_block_q8_K) == 4 + 256 + 32, "q8_K block size");

// Q4_K/Q5_K: the 6-bit scale and min of sub-block j (0..7) from the 12 packed scale bytes b.
static inline void kn_k4_scale_min(int j, const uint8_t *b, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = b[j] & 63;
        *m = b[j + 4] & 63;
    } else {
        *sc = (uint8_t)((b[j + 4] & 0xF) | ((b[j - 4] >> 6) << 4));
        *m = (uint8_t)((b[j + 4] >> 4) | ((b[j] >> 6) << 4));
    }
}

// Dequantizes n weights (n a multiple of 256) of type KN_Q2_K..KN_Q6_K or KN_Q8_K from src
// into dst (n floats, caller-owned), bit-exact with llama.cpp's dequantize_row_q*_K.
// Other types or n % 256 != 0 are programmer errors (assert).
void kn_dequantize_row_k(enum kn_type type, const void *src, float *dst, int64_t n);

// Dot product of a weight row of wtype (KN_Q2_K..KN_Q6_K) with a Q8_K activation row, both of
// n elements (n a multiple of 256), computed exactly as ggml's generic (non-SIMD)
// ggml_vec_dot_q*_K_q8_K does, same integer and float accumulation order (see kn_vecdot_k.c).
float kn_vec_dot_k_ref(enum kn_type wtype, const void *w, const void *act_q8k, int64_t n);

#endif
