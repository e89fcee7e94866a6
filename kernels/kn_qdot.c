// kn_qdot.c — activation quantizers and the per-type dot-product table for act=q8 (kn_qdot.h).
//
// The activation quantizers follow what llama.cpp's CPU backend runs on x86 (ggml-cpu at commit
// c392e50), which is what its perplexity figures come from:
//  - q8_0 / q8_1 (its AVX/AVX2 quantize_row_q8_0/_q8_1): d = amax/127 stored as fp16, values
//    multiplied by 127/amax (0 when amax is 0) and rounded to nearest, ties to even; q8_1 also
//    stores s = d * sum(q) as fp16;
//  - q8_K (x86 uses the reference quantize_row_q8_K_ref): iscale = -127/m where m is the value of
//    largest magnitude (first on ties), q = min(127, round_even(iscale*x)), d = 1/iscale as
//    fp32, and 16 partial sums of 16 values each.
// Byte layouts are ggml's (kn_blocks.h, kn_blocks_k.h). Depends on kernels/ only.
#include "kn_qdot.h"

#include <math.h>
#include <string.h>

#include "kn_blocks.h"
#include "kn_blocks_k.h"
#include "kn_types.h"
#include "qp.h"

static void kn_quant_q8_0(const float *x, void *y, int64_t n) {
    uint8_t *out = y;
    for (int64_t b = 0; b < n / 32; b++, out += 34, x += 32) {
        float amax = 0.0f;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.0f, id = amax != 0.0f ? 127.0f / amax : 0.0f;
        uint16_t dh = qp_fp32_to_fp16(d);
        memcpy(out, &dh, 2);
        for (int j = 0; j < 32; j++) out[2 + j] = (uint8_t)(int8_t)qp_nearest_int(x[j] * id);
    }
}

static void kn_quant_q8_1(const float *x, void *y, int64_t n) {
    uint8_t *out = y;
    for (int64_t b = 0; b < n / 32; b++, out += 36, x += 32) {
        float amax = 0.0f;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.0f, id = amax != 0.0f ? 127.0f / amax : 0.0f;
        int sum = 0;
        for (int j = 0; j < 32; j++) {
            int q = qp_nearest_int(x[j] * id);
            out[4 + j] = (uint8_t)(int8_t)q;
            sum += q;
        }
        uint16_t dh = qp_fp32_to_fp16(d), sh = qp_fp32_to_fp16(d * (float)sum);
        memcpy(out, &dh, 2);
        memcpy(out + 2, &sh, 2);
    }
}

static void kn_quant_q8_K(const float *x, void *y, int64_t n) {
    uint8_t *out = y;
    for (int64_t b = 0; b < n / 256; b++, out += 292, x += 256) {
        float amax = 0.0f, m = 0.0f;
        for (int j = 0; j < 256; j++)
            if (fabsf(x[j]) > amax) {
                amax = fabsf(x[j]);
                m = x[j];
            }
        int8_t *qs = (int8_t *)(out + 4);
        int16_t bsums[16];
        float d = 0.0f;
        if (amax == 0.0f) {
            memset(qs, 0, 256);
            memset(bsums, 0, sizeof bsums);
        } else {
            float iscale = -127.0f / m;
            for (int j = 0; j < 256; j++) {
                int v = qp_nearest_int(iscale * x[j]);
                qs[j] = (int8_t)(v < 127 ? v : 127);
            }
            for (int g = 0; g < 16; g++) {
                int s = 0;
                for (int j = 0; j < 16; j++) s += qs[16 * g + j];
                bsums[g] = (int16_t)s;
            }
            d = 1.0f / iscale;
        }
        memcpy(out, &d, 4);
        memcpy(out + 260, bsums, sizeof bsums);
    }
}

#define KN_DOT(name, wt)                                                                       \
    static float name(const void *w, const void *a, int64_t n) { return kn_vec_dot_ref(wt, w, a, n); }
#define KN_DOT_K(name, wt)                                                                     \
    static float name(const void *w, const void *a, int64_t n) { return kn_vec_dot_k_ref(wt, w, a, n); }
KN_DOT(kn_dot_q4_0, KN_Q4_0)
KN_DOT(kn_dot_q4_1, KN_Q4_1)
KN_DOT(kn_dot_q5_0, KN_Q5_0)
KN_DOT(kn_dot_q5_1, KN_Q5_1)
KN_DOT(kn_dot_q8_0, KN_Q8_0)
KN_DOT(kn_dot_iq4_nl, KN_IQ4_NL)
KN_DOT_K(kn_dot_q2_k, KN_Q2_K)
KN_DOT_K(kn_dot_q3_k, KN_Q3_K)
KN_DOT_K(kn_dot_q4_k, KN_Q4_K)
KN_DOT_K(kn_dot_q5_k, KN_Q5_K)
KN_DOT_K(kn_dot_q6_k, KN_Q6_K)

static const struct kn_qtype kn_qtypes[] = {
    {KN_Q4_0, KN_Q8_0, kn_quant_q8_0, kn_dot_q4_0},
    {KN_Q4_1, KN_Q8_1, kn_quant_q8_1, kn_dot_q4_1},
    {KN_Q5_0, KN_Q8_0, kn_quant_q8_0, kn_dot_q5_0},
    {KN_Q5_1, KN_Q8_1, kn_quant_q8_1, kn_dot_q5_1},
    {KN_Q8_0, KN_Q8_0, kn_quant_q8_0, kn_dot_q8_0},
    {KN_IQ4_NL, KN_Q8_0, kn_quant_q8_0, kn_dot_iq4_nl},
    {KN_Q2_K, KN_Q8_K, kn_quant_q8_K, kn_dot_q2_k},
    {KN_Q3_K, KN_Q8_K, kn_quant_q8_K, kn_dot_q3_k},
    {KN_Q4_K, KN_Q8_K, kn_quant_q8_K, kn_dot_q4_k},
    {KN_Q5_K, KN_Q8_K, kn_quant_q8_K, kn_dot_q5_k},
    {KN_Q6_K, KN_Q8_K, kn_quant_q8_K, kn_dot_q6_k},
};

const struct kn_qtype *kn_qtype_for(int wtype) {
    for (size_t i = 0; i < QP_ARRAY_LEN(kn_qtypes); i++)
        if (kn_qtypes[i].wtype == wtype) return &kn_qtypes[i];
    return NULL;
}
