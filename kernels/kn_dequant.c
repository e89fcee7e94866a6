// kn_dequant.c — scalar dequantization of the legacy block formats (see kn_blocks.h), bit-exact
// with ggml's dequantize_row_<t>: each value is one int-to-float conversion times the fp16 scale
// (plus the fp16 minimum for the *_1 types: a separate multiply and add, never fused — the build
// uses -ffp-contract=off). F32/F16/BF16 rows are copied or converted value by value.
// The K types are delegated to kn_dequantize_row_k (kernels/kn_blocks_k.h) when that header is in
// the tree.
// Depends on libc, kernels/qp.h and kernels/kn_types.h only.
#include <string.h>

#include "kn_blocks.h"
#include "kn_types.h"
#include "qp.h"

#if defined(__has_include)
#if __has_include("kn_blocks_k.h")
#include "kn_blocks_k.h"
#define KN_HAVE_BLOCKS_K 1
#endif
#endif
#ifndef KN_HAVE_BLOCKS_K
#define KN_HAVE_BLOCKS_K 0
#endif

const int8_t kn_iq4nl_values[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                    1,    13,   25,  38,  53,  69,  89,  113};

// ---------------------------------------------------------------------------------------------
// Per-type rows. src points at packed blocks; they are read through the struct types, which
// have alignment 2 at most, so src needs no alignment beyond that of a GGUF tensor (32) or a
// malloc'd buffer. Values j and j+16 of a block come from the low and high nibble of qs[j].

static void deq_q4_0(const struct kn_block_q4_0 *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += 32) {
        const float d = qp_fp16_to_fp32(b[i].d);
        for (int j = 0; j < 16; j++) {
            const int v0 = (b[i].qs[j] & 0x0f) - 8;
            const int v1 = (b[i].qs[j] >> 4) - 8;
            y[j] = (float)v0 * d;
            y[j + 16] = (float)v1 * d;
        }
    }
}

static void deq_q4_1(const struct kn_block_q4_1 *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += 32) {
        const float d = qp_fp16_to_fp32(b[i].d);
        const float m = qp_fp16_to_fp32(b[i].m);
        for (int j = 0; j < 16; j++) {
            const int v0 = b[i].qs[j] & 0x0f;
            const int v1 = b[i].qs[j] >> 4;
            y[j] = (float)v0 * d + m;
            y[j + 16] = (float)v1 * d + m;
        }
    }
}

static uint32_t load_qh(const uint8_t qh[4]) {
    return (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24;
}

static void deq_q5_0(const struct kn_block_q5_0 *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += 32) {
        const float d = qp_fp16_to_fp32(b[i].d);
        const uint32_t qh = load_qh(b[i].qh);
        for (int j = 0; j < 16; j++) {
            const int h0 = (int)((qh >> j) & 1) << 4;
            const int h1 = (int)((qh >> (j + 16)) & 1) << 4;
            const int v0 = ((b[i].qs[j] & 0x0f) | h0) - 16;
            const int v1 = ((b[i].qs[j] >> 4) | h1) - 16;
            y[j] = (float)v0 * d;
            y[j + 16] = (float)v1 * d;
        }
    }
}

static void deq_q5_1(const struct kn_block_q5_1 *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += 32) {
        const float d = qp_fp16_to_fp32(b[i].d);
        const float m = qp_fp16_to_fp32(b[i].m);
        const uint32_t qh = load_qh(b[i].qh);
        for (int j = 0; j < 16; j++) {
            const int h0 = (int)((qh >> j) & 1) << 4;
            const int h1 = (int)((qh >> (j + 16)) & 1) << 4;
            const int v0 = (b[i].qs[j] & 0x0f) | h0;
            const int v1 = (b[i].qs[j] >> 4) | h1;
            y[j] = (float)v0 * d + m;
            y[j + 16] = (float)v1 * d + m;
        }
    }
}

static void deq_q8_0(const struct kn_block_q8_0 *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += 32) {
        const float d = qp_fp16_to_fp32(b[i].d);
        for (int j = 0; j < 32; j++) y[j] = (float)b[i].qs[j] * d;
    }
}

static void deq_q8_1(const struct kn_block_q8_1 *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += 32) {
        const float d = qp_fp16_to_fp32(b[i].d);
        for (int j = 0; j < 32; j++) y[j] = (float)b[i].qs[j] * d;
    }
}

static void deq_iq4_nl(const struct kn_block_iq4_nl *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += 32) {
        const float d = qp_fp16_to_fp32(b[i].d);
        for (int j = 0; j < 16; j++) {
            y[j] = d * (float)kn_iq4nl_values[b[i].qs[j] & 0x0f];
            y[j + 16] = d * (float)kn_iq4nl_values[b[i].qs[j] >> 4];
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Public

int kn_type_has_dequant(enum kn_type type) {
    switch (type) {
    case KN_F32:
    case KN_F16:
    case KN_BF16:
    case KN_Q4_0:
    case KN_Q4_1:
    case KN_Q5_0:
    case KN_Q5_1:
    case KN_Q8_0:
    case KN_Q8_1:
    case KN_IQ4_NL:
        return 1;
    case KN_Q2_K:
    case KN_Q3_K:
    case KN_Q4_K:
    case KN_Q5_K:
    case KN_Q6_K:
        return KN_HAVE_BLOCKS_K;
    default:
        return 0;
    }
}

void kn_dequantize_row(enum kn_type type, const void *src, float *dst, int64_t n) {
    QP_ASSERT(kn_type_has_dequant(type));
    const struct kn_type_info *ti = kn_type_info(type);
    QP_ASSERT(ti && n >= 0 && n % ti->block_size == 0);
    const int64_t nb = n / ti->block_size;
    switch (type) {
    case KN_F32:
        memcpy(dst, src, (size_t)n * sizeof(float));
        return;
    case KN_F16: {
        const uint8_t *p = src;
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = qp_fp16_to_fp32(h);
        }
        return;
    }
    case KN_BF16: {
        const uint8_t *p = src;
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = qp_bf16_to_fp32(h);
        }
        return;
    }
    case KN_Q4_0: deq_q4_0(src, dst, nb); return;
    case KN_Q4_1: deq_q4_1(src, dst, nb); return;
    case KN_Q5_0: deq_q5_0(src, dst, nb); return;
    case KN_Q5_1: deq_q5_1(src, dst, nb); return;
    case KN_Q8_0: deq_q8_0(src, dst, nb); return;
    case KN_Q8_1: deq_q8_1(src, dst, nb); return;
    case KN_IQ4_NL: deq_iq4_nl(src, dst, nb); return;
    default:
#if KN_HAVE_BLOCKS_K
        kn_dequantize_row_k(type, src, dst, n);
        return;
#else
        QP_ASSERT(!"unreachable: type checked by kn_type_has_dequant");
#endif
    }
}
