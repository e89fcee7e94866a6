// kn_dequant_k.c — scalar dequantization of the k-quant blocks (kn_blocks_k.h), bit-exact with
// llama.cpp's dequantize_row_q2_K..q6_K and dequantize_row_q8_K.
//
// Bit-exactness means the same float operations in the same order: every weight is computed as
// ggml writes it, e.g. Q2_K `(d*sc)*q - dmin*m` with the products d*sc and dmin*m rounded to
// float first, Q6_K `(d*sc)*q`. Integers convert to float exactly (they are small).
// Depends on libc and kernels/qp.h only.
#include <stdint.h>

#include "kn_blocks_k.h"
#include "qp.h"

// ---------------------------------------------------------------------------------------------
// Scale unpacking shared by the types

// Q3_K: signed scale (6-bit value minus 32) of sub-block j (0..15).
static int kn_q3_scale(int j, const uint8_t *b) {
    int lo = j < 8 ? (b[j] & 0xF) : (b[j - 8] >> 4);
    int hi = (b[8 + j % 4] >> (2 * (j / 4))) & 3;
    return (lo | (hi << 4)) - 32;
}

// ---------------------------------------------------------------------------------------------
// One function per type; each handles nb super-blocks.

static void kn_deq_q2_K(const struct kn_block_q2_K *x, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++) {
        const float d = qp_fp16_to_fp32(x[i].d);
        const float dmin = qp_fp16_to_fp32(x[i].dmin);
        const uint8_t *q = x[i].qs;
        int is = 0;
        for (int half = 0; half < 2; half++) {   // 128 weights, 32 bytes of qs each
            for (int shift = 0; shift < 8; shift += 2) {
                for (int part = 0; part < 2; part++) { // two sub-blocks of 16 per shift
                    const uint8_t sc = x[i].scales[is++];
                    const float dl = d * (sc & 0xF);
                    const float ml = dmin * (sc >> 4);
                    for (int l = 0; l < 16; l++)
                        *y++ = dl * ((q[16 * part + l] >> shift) & 3) - ml;
                }
            }
            q += 32;
        }
    }
}

static void kn_deq_q3_K(const struct kn_block_q3_K *x, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++) {
        const float d_all = qp_fp16_to_fp32(x[i].d);
        const uint8_t *q = x[i].qs;
        uint8_t m = 1; // hmask bit of the current group of 32 weights
        int is = 0;
        for (int half = 0; half < 2; half++) {
            for (int shift = 0; shift < 8; shift += 2) {
                for (int part = 0; part < 2; part++) {
                    const float dl = d_all * kn_q3_scale(is++, x[i].scales);
                    for (int l = 16 * part; l < 16 * part + 16; l++) {
                        int v = ((q[l] >> shift) & 3) - ((x[i].hmask[l] & m) ? 0 : 4);
                        *y++ = dl * v;
                    }
                }
                m = (uint8_t)(m << 1);
            }
            q += 32;
        }
    }
}

static void kn_deq_q4_K(const struct kn_block_q4_K *x, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++) {
        const float d = qp_fp16_to_fp32(x[i].d);
        const float dmin = qp_fp16_to_fp32(x[i].dmin);
        const uint8_t *q = x[i].qs;
        for (int j = 0; j < 8; j += 2) { // 64 weights per step: low nibbles, then high
            uint8_t sc, m;
            kn_k4_scale_min(j, x[i].scales, &sc, &m);
            const float d1 = d * sc, m1 = dmin * m;
            kn_k4_scale_min(j + 1, x[i].scales, &sc, &m);
            const float d2 = d * sc, m2 = dmin * m;
            for (int l = 0; l < 32; l++) *y++ = d1 * (q[l] & 0xF) - m1;
            for (int l = 0; l < 32; l++) *y++ = d2 * (q[l] >> 4) - m2;
            q += 32;
        }
    }
}

static void kn_deq_q5_K(const struct kn_block_q5_K *x, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++) {
        const float d = qp_fp16_to_fp32(x[i].d);
        const float dmin = qp_fp16_to_fp32(x[i].dmin);
        const uint8_t *ql = x[i].qs, *qh = x[i].qh;
        uint8_t u1 = 1, u2 = 2;
        for (int j = 0; j < 8; j += 2) {
            uint8_t sc, m;
            kn_k4_scale_min(j, x[i].scales, &sc, &m);
            const float d1 = d * sc, m1 = dmin * m;
            kn_k4_scale_min(j + 1, x[i].scales, &sc, &m);
            const float d2 = d * sc, m2 = dmin * m;
            for (int l = 0; l < 32; l++) *y++ = d1 * ((ql[l] & 0xF) + ((qh[l] & u1) ? 16 : 0)) - m1;
            for (int l = 0; l < 32; l++) *y++ = d2 * ((ql[l] >> 4) + ((qh[l] & u2) ? 16 : 0)) - m2;
            ql += 32;
            u1 = (uint8_t)(u1 << 2);
            u2 = (uint8_t)(u2 << 2);
        }
    }
}

static void kn_deq_q6_K(const struct kn_block_q6_K *x, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++) {
        const float d = qp_fp16_to_fp32(x[i].d);
        const uint8_t *ql = x[i].ql, *qh = x[i].qh;
        const int8_t *sc = x[i].scales;
        for (int half = 0; half < 2; half++) {
            for (int l = 0; l < 32; l++) {
                const int is = l / 16;
                const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l] = d * sc[is + 0] * q1;
                y[l + 32] = d * sc[is + 2] * q2;
                y[l + 64] = d * sc[is + 4] * q3;
                y[l + 96] = d * sc[is + 6] * q4;
            }
            y += 128;
            ql += 64;
            qh += 32;
            sc += 8;
        }
    }
}

static void kn_deq_q8_K(const struct kn_block_q8_K *x, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++)
        for (int j = 0; j < KN_QK_K; j++) *y++ = x[i].d * x[i].qs[j];
}

// ---------------------------------------------------------------------------------------------

void kn_dequantize_row_k(enum kn_type type, const void *src, float *dst, int64_t n) {
    QP_ASSERT(n >= 0 && n % KN_QK_K == 0);
    const int64_t nb = n / KN_QK_K;
    switch (type) {
    case KN_Q2_K: kn_deq_q2_K(src, dst, nb); break;
    case KN_Q3_K: kn_deq_q3_K(src, dst, nb); break;
    case KN_Q4_K: kn_deq_q4_K(src, dst, nb); break;
    case KN_Q5_K: kn_deq_q5_K(src, dst, nb); break;
    case KN_Q6_K: kn_deq_q6_K(src, dst, nb); break;
    case KN_Q8_K: kn_deq_q8_K(src, dst, nb); break;
    default: QP_ASSERT(!"kn_dequantize_row_k: not a k-quant type");
    }
}
