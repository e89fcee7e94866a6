// qz_ggml.c — llama.cpp's reference quantizers for the legacy 32-value block formats and the
// Q8_0/Q8_1 activations (see qz_ggml.h), written to reproduce llama.cpp c392e50 byte for byte.
//
// Bit-exactness rests on doing the same float operations in the same order as ggml-quants.c:
//  - scales are computed in fp32 and rounded to fp16 once (qp_fp32_to_fp16, nearest-even);
//    the quants are chosen with the unrounded fp32 scale, as ggml does;
//  - three rounding conventions, each where ggml uses it: truncation of x*id + 8.5 / 16.5 / 0.5
//    (Q4/Q5 reference), roundf (half away from zero: Q8_0/Q8_1), and nearest_int (the
//    1.5*2^23 trick, half to even: the weighted searches);
//  - Q4_0/Q5_0 take the scale from the value of largest magnitude with its sign (the first one
//    on ties), so that value maps exactly to level -8 / -16.
// The build has -ffp-contract=off, so no multiply-add is fused behind our back.
// Depends on kernels/ (qp.h, kn_types.h, kn_blocks.h) and libc.
#include <float.h>
#include <limits.h>
#include <math.h>
#include <string.h>

#include "kn_blocks.h"
#include "kn_types.h"
#include "qp.h"
#include "qz_ggml.h"
#include "qz_search.h"

#define QK 32
// Below this block max-abs a block counts as all zero in the weighted searches (GROUP_MAX_EPS).
#define QZ_GROUP_MAX_EPS 1e-15f

// ---------------------------------------------------------------------------------------------
// Helpers

// ggml's reference conversions of a float to a small integer: C truncation toward zero.
static int trunc_int(float f) { return (int)f; }

static void put_qh(uint8_t qh[4], uint32_t v) {
    qh[0] = (uint8_t)v;
    qh[1] = (uint8_t)(v >> 8);
    qh[2] = (uint8_t)(v >> 16);
    qh[3] = (uint8_t)(v >> 24);
}

// Packs 32 levels L (0..15 or 0..31) into nibbles (value j low, j+16 high) and fifth bits.
static void pack_nibbles(const uint8_t *L, uint8_t qs[16]) {
    for (int j = 0; j < 16; j++) qs[j] = (uint8_t)((L[j] & 0x0f) | (L[j + 16] & 0x0f) << 4);
}

static uint32_t high_bits(const uint8_t *L) {
    uint32_t qh = 0;
    for (int j = 0; j < QK; j++) qh |= (uint32_t)((L[j] >> 4) & 1) << j;
    return qh;
}


static void iq4_levels(const int8_t *val, float id, const float *x, uint8_t *L) {
    float vf[17];
    for (int k = 0; k < 16; k++) vf[k] = (float)val[k];
    vf[16] = INFINITY; // (the level after 15: v - vf[15] < inf, so 15 stays)
    for (int j = 0; j < QK; j++) {
        const float v = id * x[j];
        int lo = 0;
        for (int k = 1; k < 16; k++) lo += v >= vf[k];
        int r = lo + !(v - vf[lo] < vf[lo + 1] - v);
        L[j] = (uint8_t)(v != v || r > 15 ? 15 : r);
    }
}

void qz_iq4_nl_levels(float id, const float *x, uint8_t *L) { iq4_levels(kn_iq4nl_values, id, x, L); }

// ---------------------------------------------------------------------------------------------
// Reference (no imatrix) block quantizers: quantize_row_<t>_ref for one block.

// Q4_0 / Q5_0: levels 0..2*half-1 around half, d = max / -half (the signed absmax maps to the
// lowest level). Returns d.
static float ref_sym(const float *x, int half, uint8_t *L) {
    const float max = qz_signed_absmax(x, QK);
    const float d = max / -(float)half;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < QK; j++) L[j] = (uint8_t)QP_MIN(2 * half - 1, trunc_int(x[j] * id + ((float)half + 0.5f)));
    return d;
}

// Q4_1 / Q5_1: levels 0..nmax from the block's min, d = (max - min) / nmax, each level at most
// top (ggml clamps Q4_1's, not Q5_1's: INT_MAX). Returns d; *min_out gets the min.
static float ref_asym(const float *x, int nmax, int top, uint8_t *L, float *min_out) {
    float min = FLT_MAX, max = -FLT_MAX;
    for (int j = 0; j < QK; j++) {
        if (x[j] < min) min = x[j];
        if (x[j] > max) max = x[j];
    }
    const float d = (max - min) / (float)nmax;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < QK; j++) L[j] = (uint8_t)QP_MIN(top, trunc_int((x[j] - min) * id + 0.5f));
    *min_out = min;
    return d;
}

static void ref_q4_0(const float *x, struct kn_block_q4_0 *y) {
    uint8_t L[QK];
    y->d = qp_fp32_to_fp16(ref_sym(x, 8, L));
    pack_nibbles(L, y->qs);
}

static void ref_q4_1(const float *x, struct kn_block_q4_1 *y) {
    uint8_t L[QK];
    float min;
    y->d = qp_fp32_to_fp16(ref_asym(x, 15, 15, L, &min));
    y->m = qp_fp32_to_fp16(min);
    pack_nibbles(L, y->qs);
}

static void ref_q5_0(const float *x, struct kn_block_q5_0 *y) {
    uint8_t L[QK];
    y->d = qp_fp32_to_fp16(ref_sym(x, 16, L));
    pack_nibbles(L, y->qs);
    put_qh(y->qh, high_bits(L));
}

static void ref_q5_1(const float *x, struct kn_block_q5_1 *y) {
    uint8_t L[QK];
    float min;
    // No clamp here in ggml: (max - min) * id + 0.5 stays below 32.
    y->d = qp_fp32_to_fp16(ref_asym(x, 31, INT_MAX, L, &min));
    y->m = qp_fp32_to_fp16(min);
    pack_nibbles(L, y->qs);
    put_qh(y->qh, high_bits(L));
}

// Shared by Q8_0 weights and activations. Returns d (fp32) for Q8_1's s.
static float ref_q8(const float *x, uint16_t *dh, int8_t *qs) {
    float amax = 0.0f;
    for (int j = 0; j < QK; j++) amax = QP_MAX(amax, fabsf(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    *dh = qp_fp32_to_fp16(d);
    for (int j = 0; j < QK; j++) qs[j] = (int8_t)roundf(x[j] * id);
    return d;
}

static void ref_q8_1(const float *x, struct kn_block_q8_1 *y) {
    const float d = ref_q8(x, &y->d, y->qs);
    int sum = 0;
    for (int j = 0; j < QK; j++) sum += y->qs[j];
    y->s = qp_fp32_to_fp16((float)sum * d);
}


// ---------------------------------------------------------------------------------------------
// Weighted block quantizers (quantize_row_<t>_impl with quant_weights). w: 32 weights.

static void imp_q4_0(const float *x, const float *w, struct kn_block_q4_0 *y) {
    uint8_t L[QK];
    const float d = qz_make_qx_quants(QK, 8, x, (int8_t *)L, w);
    y->d = qp_fp32_to_fp16(d);
    pack_nibbles(L, y->qs);
}

static void imp_q5_0(const float *x, const float *w, struct kn_block_q5_0 *y) {
    uint8_t L[QK];
    const float d = qz_make_qx_quants(QK, 16, x, (int8_t *)L, w);
    y->d = qp_fp32_to_fp16(d);
    pack_nibbles(L, y->qs);
    put_qh(y->qh, high_bits(L));
}

// Q4_1 / Q5_1 with weights: levels 0..nmax from make_qkx3_quants' scale and min.
static void imp_asym(const float *x, const float *w, int nmax, uint8_t *L, uint16_t *d, uint16_t *m) {
    uint8_t Laux[QK];
    float min;
    *d = qp_fp32_to_fp16(qz_make_qkx3_quants(QK, nmax, x, w, L, &min, Laux, -0.9f, 0.05f, 36));
    *m = qp_fp32_to_fp16(-min);
}

static void imp_q4_1(const float *x, const float *w, struct kn_block_q4_1 *y) {
    uint8_t L[QK];
    imp_asym(x, w, 15, L, &y->d, &y->m);
    pack_nibbles(L, y->qs);
}

static void imp_q5_1(const float *x, const float *w, struct kn_block_q5_1 *y) {
    uint8_t L[QK];
    imp_asym(x, w, 31, L, &y->d, &y->m);
    pack_nibbles(L, y->qs);
    put_qh(y->qh, high_bits(L));
}

// IQ4_NL, one 32-value block: quantize_row_iq4_nl_impl(32, 32, ..., ntry) with super block ==
// block. qw: 32 importances or NULL (then the weights are x^2). Starts from d = -max/values[0]
// (the largest magnitude maps to level -127), then tries id = (itry + values[0])/max for
// itry = -ntry..ntry, keeping the best weighted least-squares scale; the final levels are
// re-picked with 1/scale.
static void iq4_nl_block(const float *x, const float *qw, int ntry, struct kn_block_iq4_nl *y) {
    const int8_t *values = kn_iq4nl_values;
    float weight[QK];
    uint8_t L[QK];
    float sigma2 = 0.0f;
    for (int j = 0; j < QK; j++) sigma2 += x[j] * x[j];
    sigma2 *= 2.0f / QK;
    for (int j = 0; j < QK; j++)
        weight[j] = qw ? qw[j] * sqrtf(sigma2 + x[j] * x[j]) : x[j] * x[j];

    const float max = qz_signed_absmax(x, QK);
    float scale = 0.0f;
    if (fabsf(max) >= QZ_GROUP_MAX_EPS) {
        float d = ntry > 0 ? -max / (float)values[0] : max / (float)values[0];
        float id = 1.0f / d;
        float sumqx = 0.0f, sumq2 = 0.0f;
        iq4_levels(values, id, x, L);
        for (int j = 0; j < QK; j++) {
            const float q = (float)values[L[j]];
            sumqx += weight[j] * q * x[j];
            sumq2 += weight[j] * q * q;
        }
        d = sumq2 > 0.0f ? sumqx / sumq2 : 0.0f;
        float best = d * sumqx;
        for (int itry = -ntry; itry <= ntry; itry++) {
            id = (float)(itry + values[0]) / max;
            sumqx = sumq2 = 0.0f;
            iq4_levels(values, id, x, L);
            for (int j = 0; j < QK; j++) {
                const float q = (float)values[L[j]];
                sumqx += weight[j] * q * x[j];
                sumq2 += weight[j] * q * q;
            }
            if (sumq2 > 0.0f && sumqx * sumqx > best * sumq2) {
                d = sumqx / sumq2;
                best = d * sumqx;
            }
        }
        scale = d;
    }
    y->d = qp_fp32_to_fp16(scale);
    // ggml re-picks the levels only when ntry > 0 (always, here); an all-zero block then gets
    // level 8 (value 1) everywhere with d = 0.
    const float id = scale != 0.0f ? 1.0f / scale : 0.0f;
    iq4_levels(values, id, x, L);
    pack_nibbles(L, y->qs);
}

// ---------------------------------------------------------------------------------------------
// Public

static int is_weight_type(int type) {
    return type == KN_Q8_0 || type == KN_Q4_0 || type == KN_Q4_1 || type == KN_Q5_0 ||
           type == KN_Q5_1 || type == KN_IQ4_NL;
}

int qz_quantize_row(int type, const float *x, void *y, int64_t n, const float *imatrix) {
    if (!is_weight_type(type)) return QP_ENOTSUP;
    if (n <= 0 || n % QK != 0) return QP_EINVAL;
    const int64_t nb = n / QK;

    if (type == KN_IQ4_NL) { // weights are per block; the imatrix enters block by block
        struct kn_block_iq4_nl *b = y;
        for (int64_t i = 0; i < nb; i++)
            iq4_nl_block(x + QK * i, imatrix ? imatrix + QK * i : NULL, 7, &b[i]);
        return 0;
    }
    if (!imatrix || type == KN_Q8_0) {
        for (int64_t i = 0; i < nb; i++) {
            const float *xb = x + QK * i;
            switch (type) {
            case KN_Q4_0: ref_q4_0(xb, (struct kn_block_q4_0 *)y + i); break;
            case KN_Q4_1: ref_q4_1(xb, (struct kn_block_q4_1 *)y + i); break;
            case KN_Q5_0: ref_q5_0(xb, (struct kn_block_q5_0 *)y + i); break;
            case KN_Q5_1: ref_q5_1(xb, (struct kn_block_q5_1 *)y + i); break;
            case KN_Q8_0: {
                struct kn_block_q8_0 *b = (struct kn_block_q8_0 *)y + i;
                ref_q8(xb, &b->d, b->qs);
                break;
            }
            }
        }
        return 0;
    }

    // imatrix: sigma2 is the mean square over the whole row.
    float sum_x2 = 0.0f;
    for (int64_t j = 0; j < n; j++) sum_x2 += x[j] * x[j];
    const float sigma2 = sum_x2 / (float)n;
    float w[QK];
    for (int64_t i = 0; i < nb; i++) {
        const float *xb = x + QK * i;
        const float *qw = imatrix + QK * i;
        for (int j = 0; j < QK; j++) w[j] = qw[j] * sqrtf(sigma2 + xb[j] * xb[j]);
        switch (type) {
        case KN_Q4_0: imp_q4_0(xb, w, (struct kn_block_q4_0 *)y + i); break;
        case KN_Q4_1: imp_q4_1(xb, w, (struct kn_block_q4_1 *)y + i); break;
        case KN_Q5_0: imp_q5_0(xb, w, (struct kn_block_q5_0 *)y + i); break;
        case KN_Q5_1: imp_q5_1(xb, w, (struct kn_block_q5_1 *)y + i); break;
        }
    }
    return 0;
}

int qz_quantize_act_row(int type, const float *x, void *y, int64_t n) {
    if (type != KN_Q8_0 && type != KN_Q8_1) return QP_ENOTSUP;
    if (n <= 0 || n % QK != 0) return QP_EINVAL;
    for (int64_t i = 0; i < n / QK; i++) {
        if (type == KN_Q8_0) {
            struct kn_block_q8_0 *b = (struct kn_block_q8_0 *)y + i;
            ref_q8(x + QK * i, &b->d, b->qs);
        } else {
            ref_q8_1(x + QK * i, (struct kn_block_q8_1 *)y + i);
        }
    }
    return 0;
}
