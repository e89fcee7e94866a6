// kn_vecdot_k.c — reference dot products of a k-quant weight row (Q2_K..Q6_K) with a Q8_K
// activation row, computing exactly what ggml's generic (non-SIMD) ggml_vec_dot_q*_K_q8_K
// compute. They are the specification for any SIMD k-quant kernel here.
//
// Accumulation order (integer sums are exact, so only the float steps matter; every float
// operation is a separately rounded fp32 multiply or add, no fused multiply-add):
//  - Q2_K: per super-block i, isum = sum_j (sc_j & 15) * sum_l q8*q2 and
//    summs = sum_j bsums_j * (sc_j >> 4) (int32); then
//    sumf += (d8*d)*(float)isum - (d8*dmin)*(float)summs, i in order, sumf starting at 0.
//  - Q3_K, Q4_K, Q5_K, Q6_K: ggml's "aux8/aux16/aux32" scheme: 8 int32 lanes, lane l holding
//    sum over the super-block's weights k with k % 8 == l of scale(k) * q8[k] * q[k] (q signed:
//    Q3_K q-4, Q6_K q-32; Q4_K/Q5_K the unsigned q). Per super-block, float lane sums
//    sums[l] += (d*d8)*(float)aux32[l]. Q4_K and Q5_K also subtract the mins term
//    per super-block from sumf: sumf -= (dmin*d8)*(float)sum_j bsums_j*m_{j/2}.
//    At the end sumf += sums[0] + ... in lane order 0..7 (one add at a time).
// Depends on libc and kernels/qp.h only.
#include <stdint.h>

#include "kn_blocks_k.h"
#include "qp.h"

// ---------------------------------------------------------------------------------------------
// Helpers (Q4_K/Q5_K scales and mins: kn_k4_scale_min, kn_blocks_k.h)

static int kn_vd_q3_scale(int j, const uint8_t *b) {
    int lo = j < 8 ? (b[j] & 0xF) : (b[j - 8] >> 4);
    int hi = (b[8 + j % 4] >> (2 * (j / 4))) & 3;
    return (lo | (hi << 4)) - 32;
}

// Adds scale[k/group] * q8[k] * a[k] into lane k % 8 of aux32 (exact int32 arithmetic: the
// largest term is 127 * 127 * 32 and a lane gets 32 of them).
static void kn_vd_lanes(const int8_t *a, const int8_t *q8, const int *scale, int group,
                        int32_t aux32[8]) {
    for (int k = 0; k < KN_QK_K; k++) aux32[k % 8] += scale[k / group] * (q8[k] * a[k]);
}

// ---------------------------------------------------------------------------------------------

static float kn_vd_q2_K(const struct kn_block_q2_K *x, const struct kn_block_q8_K *y, int64_t nb) {
    float sumf = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *sc = x[i].scales;
        int summs = 0;
        for (int j = 0; j < 16; j++) summs += y[i].bsums[j] * (sc[j] >> 4);
        const float dall = y[i].d * qp_fp16_to_fp32(x[i].d);
        const float dmin = y[i].d * qp_fp16_to_fp32(x[i].dmin);
        int isum = 0;
        for (int k = 0; k < KN_QK_K; k++) {
            // weight k: byte 32*(k/128) + k%32 of qs, bits 2*((k/32)%4)
            const int q = (x[i].qs[32 * (k / 128) + k % 32] >> (2 * ((k / 32) % 4))) & 3;
            isum += (sc[k / 16] & 0xF) * (y[i].qs[k] * q);
        }
        sumf += dall * (float)isum - dmin * (float)summs;
    }
    return sumf;
}

static float kn_vd_q3_K(const struct kn_block_q3_K *x, const struct kn_block_q8_K *y, int64_t nb) {
    float sums[8] = {0};
    int8_t a[KN_QK_K];
    int scale[16];
    for (int64_t i = 0; i < nb; i++) {
        for (int k = 0; k < KN_QK_K; k++) {
            const int lo = (x[i].qs[32 * (k / 128) + k % 32] >> (2 * ((k / 32) % 4))) & 3;
            const int hi = (x[i].hmask[k % 32] >> (k / 32)) & 1;
            a[k] = (int8_t)(lo - (hi ? 0 : 4));
        }
        for (int j = 0; j < 16; j++) scale[j] = kn_vd_q3_scale(j, x[i].scales);
        int32_t aux32[8] = {0};
        kn_vd_lanes(a, y[i].qs, scale, 16, aux32);
        const float d = qp_fp16_to_fp32(x[i].d) * y[i].d;
        for (int l = 0; l < 8; l++) sums[l] += d * (float)aux32[l];
    }
    float sumf = 0.0f;
    for (int l = 0; l < 8; l++) sumf += sums[l];
    return sumf;
}

// Q4_K and Q5_K share everything after unpacking the quants: a (256) holds the unsigned quants
// of one super-block, b its 12 packed scale bytes.
static void kn_vd_q45_block(const int8_t *a, const uint8_t *b, uint16_t d16, uint16_t dmin16,
                            const struct kn_block_q8_K *y, float sums[8], float *sumf) {
    int scale[8], mins[8];
    for (int j = 0; j < 8; j++) {
        uint8_t sc, m;
        kn_k4_scale_min(j, b, &sc, &m);
        scale[j] = sc;
        mins[j] = m;
    }
    int sumi = 0;
    for (int j = 0; j < 16; j++) sumi += y->bsums[j] * mins[j / 2];
    int32_t aux32[8] = {0};
    kn_vd_lanes(a, y->qs, scale, 32, aux32);
    const float d = qp_fp16_to_fp32(d16) * y->d;
    for (int l = 0; l < 8; l++) sums[l] += d * (float)aux32[l];
    const float dmin = qp_fp16_to_fp32(dmin16) * y->d;
    *sumf -= dmin * (float)sumi;
}

// Weight k of a Q4_K/Q5_K qs: byte 32*(k/64) + k%32, low nibble when (k/32) is even.
static int kn_vd_nibble(const uint8_t *qs, int k) {
    const uint8_t byte = qs[32 * (k / 64) + k % 32];
    return ((k / 32) % 2) ? byte >> 4 : byte & 0xF;
}

static float kn_vd_q4_K(const struct kn_block_q4_K *x, const struct kn_block_q8_K *y, int64_t nb) {
    float sums[8] = {0}, sumf = 0.0f;
    int8_t a[KN_QK_K];
    for (int64_t i = 0; i < nb; i++) {
        for (int k = 0; k < KN_QK_K; k++) a[k] = (int8_t)kn_vd_nibble(x[i].qs, k);
        kn_vd_q45_block(a, x[i].scales, x[i].d, x[i].dmin, &y[i], sums, &sumf);
    }
    for (int l = 0; l < 8; l++) sumf += sums[l];
    return sumf;
}

static float kn_vd_q5_K(const struct kn_block_q5_K *x, const struct kn_block_q8_K *y, int64_t nb) {
    float sums[8] = {0}, sumf = 0.0f;
    int8_t a[KN_QK_K];
    for (int64_t i = 0; i < nb; i++) {
        for (int k = 0; k < KN_QK_K; k++) {
            const int hi = (x[i].qh[k % 32] >> (k / 32)) & 1;
            a[k] = (int8_t)(kn_vd_nibble(x[i].qs, k) + 16 * hi);
        }
        kn_vd_q45_block(a, x[i].scales, x[i].d, x[i].dmin, &y[i], sums, &sumf);
    }
    for (int l = 0; l < 8; l++) sumf += sums[l];
    return sumf;
}

static float kn_vd_q6_K(const struct kn_block_q6_K *x, const struct kn_block_q8_K *y, int64_t nb) {
    float sums[8] = {0};
    int8_t a[KN_QK_K];
    int scale[16];
    for (int64_t i = 0; i < nb; i++) {
        for (int k = 0; k < KN_QK_K; k++) {
            // half h = k/128, s = (k%128)/32, l = k%32: low nibble of ql[64h + 32*(s%2) + l]
            // (high nibble when s >= 2), high 2 bits at bits 2s of qh[32h + l]
            const int h = k / 128, s = (k % 128) / 32, l = k % 32;
            const uint8_t lo = x[i].ql[64 * h + 32 * (s % 2) + l];
            const int lo4 = s >= 2 ? lo >> 4 : lo & 0xF;
            const int hi2 = (x[i].qh[32 * h + l] >> (2 * s)) & 3;
            a[k] = (int8_t)((lo4 | (hi2 << 4)) - 32);
        }
        for (int j = 0; j < 16; j++) scale[j] = x[i].scales[j];
        int32_t aux32[8] = {0};
        kn_vd_lanes(a, y[i].qs, scale, 16, aux32);
        const float d = qp_fp16_to_fp32(x[i].d) * y[i].d;
        for (int l = 0; l < 8; l++) sums[l] += d * (float)aux32[l];
    }
    float sumf = 0.0f;
    for (int l = 0; l < 8; l++) sumf += sums[l];
    return sumf;
}

// ---------------------------------------------------------------------------------------------

float kn_vec_dot_k_ref(enum kn_type wtype, const void *w, const void *act_q8k, int64_t n) {
    QP_ASSERT(n >= 0 && n % KN_QK_K == 0);
    const int64_t nb = n / KN_QK_K;
    const struct kn_block_q8_K *y = act_q8k;
    switch (wtype) {
    case KN_Q2_K: return kn_vd_q2_K(w, y, nb);
    case KN_Q3_K: return kn_vd_q3_K(w, y, nb);
    case KN_Q4_K: return kn_vd_q4_K(w, y, nb);
    case KN_Q5_K: return kn_vd_q5_K(w, y, nb);
    case KN_Q6_K: return kn_vd_q6_K(w, y, nb);
    default: QP_ASSERT(!"kn_vec_dot_k_ref: not a k-quant weight type");
    }
    return 0.0f;
}
