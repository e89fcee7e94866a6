// kn_vecdot.c — reference (scalar) dot products of a quantized weight row with a Q8_0/Q8_1
// activation row, computed as ggml's generic CPU ggml_vec_dot_<w>_<a> computes them: exact
// integer sums per block, then one float accumulator over the blocks in order. The expressions
// below keep ggml's operand order (see kn_blocks.h), so the result is bit-identical to ggml's
// generic path; SIMD paths (ggml's or ours) may differ in the last bits.
// Depends on libc, kernels/qp.h and kernels/kn_types.h only.
#include "kn_blocks.h"
#include "kn_types.h"
#include "qp.h"

static uint32_t load_qh(const uint8_t qh[4]) {
    return (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24;
}

// ---------------------------------------------------------------------------------------------
// One function per weight type; nb = number of 32-value blocks.

static float dot_q4_0_q8_0(const struct kn_block_q4_0 *x, const struct kn_block_q8_0 *y,
                           int64_t nb) {
    float sumf = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        int sumi0 = 0, sumi1 = 0;
        for (int j = 0; j < 16; j++) {
            const int v0 = (x[i].qs[j] & 0x0f) - 8;
            const int v1 = (x[i].qs[j] >> 4) - 8;
            sumi0 += v0 * y[i].qs[j];
            sumi1 += v1 * y[i].qs[j + 16];
        }
        const int sumi = sumi0 + sumi1;
        sumf += (float)sumi * qp_fp16_to_fp32(x[i].d) * qp_fp16_to_fp32(y[i].d);
    }
    return sumf;
}

static float dot_q4_1_q8_1(const struct kn_block_q4_1 *x, const struct kn_block_q8_1 *y,
                           int64_t nb) {
    float sumf = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        int sumi0 = 0, sumi1 = 0;
        for (int j = 0; j < 16; j++) {
            const int v0 = x[i].qs[j] & 0x0f;
            const int v1 = x[i].qs[j] >> 4;
            sumi0 += v0 * y[i].qs[j];
            sumi1 += v1 * y[i].qs[j + 16];
        }
        const int sumi = sumi0 + sumi1;
        const float dd = qp_fp16_to_fp32(x[i].d) * qp_fp16_to_fp32(y[i].d);
        const float ms = qp_fp16_to_fp32(x[i].m) * qp_fp16_to_fp32(y[i].s);
        sumf += dd * (float)sumi + ms;
    }
    return sumf;
}

static float dot_q5_0_q8_0(const struct kn_block_q5_0 *x, const struct kn_block_q8_0 *y,
                           int64_t nb) {
    float sumf = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        const uint32_t qh = load_qh(x[i].qh);
        int sumi0 = 0, sumi1 = 0;
        for (int j = 0; j < 16; j++) {
            const int h0 = (int)((qh >> j) & 1) << 4;
            const int h1 = (int)((qh >> (j + 16)) & 1) << 4;
            const int v0 = ((x[i].qs[j] & 0x0f) | h0) - 16;
            const int v1 = ((x[i].qs[j] >> 4) | h1) - 16;
            sumi0 += v0 * y[i].qs[j];
            sumi1 += v1 * y[i].qs[j + 16];
        }
        const int sumi = sumi0 + sumi1;
        sumf += (qp_fp16_to_fp32(x[i].d) * qp_fp16_to_fp32(y[i].d)) * (float)sumi;
    }
    return sumf;
}

static float dot_q5_1_q8_1(const struct kn_block_q5_1 *x, const struct kn_block_q8_1 *y,
                           int64_t nb) {
    float sumf = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        const uint32_t qh = load_qh(x[i].qh);
        int sumi0 = 0, sumi1 = 0;
        for (int j = 0; j < 16; j++) {
            const int h0 = (int)((qh >> j) & 1) << 4;
            const int h1 = (int)((qh >> (j + 16)) & 1) << 4;
            const int v0 = (x[i].qs[j] & 0x0f) | h0;
            const int v1 = (x[i].qs[j] >> 4) | h1;
            sumi0 += v0 * y[i].qs[j];
            sumi1 += v1 * y[i].qs[j + 16];
        }
        const int sumi = sumi0 + sumi1;
        const float dd = qp_fp16_to_fp32(x[i].d) * qp_fp16_to_fp32(y[i].d);
        const float ms = qp_fp16_to_fp32(x[i].m) * qp_fp16_to_fp32(y[i].s);
        sumf += dd * (float)sumi + ms;
    }
    return sumf;
}

static float dot_q8_0_q8_0(const struct kn_block_q8_0 *x, const struct kn_block_q8_0 *y,
                           int64_t nb) {
    float sumf = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        int sumi = 0;
        for (int j = 0; j < 32; j++) sumi += x[i].qs[j] * y[i].qs[j];
        sumf += (float)sumi * (qp_fp16_to_fp32(x[i].d) * qp_fp16_to_fp32(y[i].d));
    }
    return sumf;
}

static float dot_iq4_nl_q8_0(const struct kn_block_iq4_nl *x, const struct kn_block_q8_0 *y,
                             int64_t nb) {
    float sumf = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        const float d = qp_fp16_to_fp32(y[i].d) * qp_fp16_to_fp32(x[i].d);
        int sumi1 = 0, sumi2 = 0;
        for (int j = 0; j < 16; j++) {
            sumi1 += y[i].qs[j] * kn_iq4nl_values[x[i].qs[j] & 0x0f];
            sumi2 += y[i].qs[j + 16] * kn_iq4nl_values[x[i].qs[j] >> 4];
        }
        sumf += d * (float)(sumi1 + sumi2);
    }
    return sumf;
}

// ---------------------------------------------------------------------------------------------
// Public

int kn_vec_dot_act_type(enum kn_type wtype) {
    switch (wtype) {
    case KN_Q4_0:
    case KN_Q5_0:
    case KN_Q8_0:
    case KN_IQ4_NL:
        return KN_Q8_0;
    case KN_Q4_1:
    case KN_Q5_1:
        return KN_Q8_1;
    default:
        return -1;
    }
}

float kn_vec_dot_ref(enum kn_type wtype, const void *w, const void *act, int64_t n) {
    QP_ASSERT(n >= 0 && n % 32 == 0);
    const int64_t nb = n / 32;
    switch (wtype) {
    case KN_Q4_0: return dot_q4_0_q8_0(w, act, nb);
    case KN_Q4_1: return dot_q4_1_q8_1(w, act, nb);
    case KN_Q5_0: return dot_q5_0_q8_0(w, act, nb);
    case KN_Q5_1: return dot_q5_1_q8_1(w, act, nb);
    case KN_Q8_0: return dot_q8_0_q8_0(w, act, nb);
    case KN_IQ4_NL: return dot_iq4_nl_q8_0(w, act, nb);
    default: QP_ASSERT(!"kn_vec_dot_ref: weight type without a reference dot product");
    }
    return 0.0f;
}
