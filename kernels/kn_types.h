// kn_types.h — the tensor element types qprobe knows, numbered as ggml numbers them (GGUF stores
// these ids), with each type's block size (elements per block) and block bytes.
//
// Only the sizes live here; the block layouts and their math come with the quantizer kernels.
// Depends on nothing.
#ifndef KN_TYPES_H
#define KN_TYPES_H

#include <stddef.h>
#include <stdint.h>

enum kn_type {
    KN_F32 = 0,
    KN_F16 = 1,
    KN_Q4_0 = 2,
    KN_Q4_1 = 3,
    KN_Q5_0 = 6,
    KN_Q5_1 = 7,
    KN_Q8_0 = 8,
    KN_Q8_1 = 9,
    KN_Q2_K = 10,
    KN_Q3_K = 11,
    KN_Q4_K = 12,
    KN_Q5_K = 13,
    KN_Q6_K = 14,
    KN_Q8_K = 15,
    KN_IQ2_XXS = 16,
    KN_IQ2_XS = 17,
    KN_IQ3_XXS = 18,
    KN_IQ1_S = 19,
    KN_IQ4_NL = 20,
    KN_IQ3_S = 21,
    KN_IQ2_S = 22,
    KN_IQ4_XS = 23,
    KN_I8 = 24,
    KN_I16 = 25,
    KN_I32 = 26,
    KN_I64 = 27,
    KN_F64 = 28,
    KN_IQ1_M = 29,
    KN_BF16 = 30,
    KN_TQ1_0 = 34,
    KN_TQ2_0 = 35,
    KN_TYPE_COUNT = 39,
};

struct kn_type_info {
    const char *name;   // ggml's name, lowercase: "f32", "q4_0", "q4_K", ...
    int block_size;     // elements per block (1 for plain types); 0 = unknown id
    size_t block_bytes; // bytes per block
};

// NULL for ids that are not (or no longer) types. Takes an int: it also checks raw ids read from
// files.
const struct kn_type_info *kn_type_info(int type);

// Bytes of a row of n elements; 0 when n is not a multiple of the block size or type unknown.
size_t kn_row_bytes(enum kn_type type, int64_t n);

#endif
