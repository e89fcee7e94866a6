// kn_types.c — the type table (see kn_types.h). Sizes follow ggml's block structs.
#include "kn_types.h"

static const struct kn_type_info kn_types[KN_TYPE_COUNT] = {
    [KN_F32] = {"f32", 1, 4},
    [KN_F16] = {"f16", 1, 2},
    [KN_Q4_0] = {"q4_0", 32, 2 + 16},
    [KN_Q4_1] = {"q4_1", 32, 2 + 2 + 16},
    [KN_Q5_0] = {"q5_0", 32, 2 + 4 + 16},
    [KN_Q5_1] = {"q5_1", 32, 2 + 2 + 4 + 16},
    [KN_Q8_0] = {"q8_0", 32, 2 + 32},
    [KN_Q8_1] = {"q8_1", 32, 2 + 2 + 32},
    [KN_Q2_K] = {"q2_K", 256, 16 + 64 + 2 + 2},
    [KN_Q3_K] = {"q3_K", 256, 32 + 64 + 12 + 2},
    [KN_Q4_K] = {"q4_K", 256, 2 + 2 + 12 + 128},
    [KN_Q5_K] = {"q5_K", 256, 2 + 2 + 12 + 32 + 128},
    [KN_Q6_K] = {"q6_K", 256, 128 + 64 + 16 + 2},
    [KN_Q8_K] = {"q8_K", 256, 4 + 256 + 32},
    [KN_IQ2_XXS] = {"iq2_xxs", 256, 2 + 64},
    [KN_IQ2_XS] = {"iq2_xs", 256, 2 + 64 + 8},
    [KN_IQ3_XXS] = {"iq3_xxs", 256, 2 + 96},
    [KN_IQ1_S] = {"iq1_s", 256, 2 + 32 + 16},
    [KN_IQ4_NL] = {"iq4_nl", 32, 2 + 16},
    [KN_IQ3_S] = {"iq3_s", 256, 2 + 64 + 8 + 32 + 4},
    [KN_IQ2_S] = {"iq2_s", 256, 2 + 64 + 8 + 8},
    [KN_IQ4_XS] = {"iq4_xs", 256, 2 + 2 + 4 + 128},
    [KN_I8] = {"i8", 1, 1},
    [KN_I16] = {"i16", 1, 2},
    [KN_I32] = {"i32", 1, 4},
    [KN_I64] = {"i64", 1, 8},
    [KN_F64] = {"f64", 1, 8},
    [KN_IQ1_M] = {"iq1_m", 256, 32 + 16 + 8},
    [KN_BF16] = {"bf16", 1, 2},
    [KN_TQ1_0] = {"tq1_0", 256, 48 + 4 + 2},
    [KN_TQ2_0] = {"tq2_0", 256, 64 + 2},
};

const struct kn_type_info *kn_type_info(int type) {
    if (type < 0 || type >= KN_TYPE_COUNT || kn_types[type].block_size == 0) return 0;
    return &kn_types[type];
}

size_t kn_row_bytes(enum kn_type type, int64_t n) {
    const struct kn_type_info *t = kn_type_info(type);
    if (!t || n < 0 || n % t->block_size != 0) return 0;
    return (size_t)(n / t->block_size) * t->block_bytes;
}
