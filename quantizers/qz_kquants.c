// qz_kquants.c — llama.cpp's k-quant quantizers, re-derived from ggml-quants.c (the version
// llama.cpp b4747 ships) and checked byte for byte against llama-quantize output
// (tests/test_qz_kquants.c, fixtures golden/quant/).
//
// Reproducing the bytes needs the float arithmetic of ggml's scalar reference to the last bit:
//  - every expression is evaluated as ggml writes it, left to right in fp32 (e.g. w*x*l is
//    (w*x)*l), with no fused multiply-add (the Makefile passes -ffp-contract=off; llama.cpp
//    builds ggml-quants.c for baseline x86-64, which has no FMA);
//  - rounding is ggml's nearest_int: add 1.5*2^23 and read the low mantissa bits, which rounds
//    half to even for |v| < 2^22 (and yields deterministic garbage, not UB, beyond that);
//  - d and dmin are rounded to fp16 (nearest even) before the final requantization pass, which
//    uses the rounded values; sub-blocks whose rounded scale is 0 keep the quants of the first
//    pass (they dequantize to 0 or to -min anyway, but the bytes must match);
//  - the search constants: make_qkx2_quants (Q2_K: rmin -0.5, rdelta 0.1, 15 steps, mean
//    absolute error weighted by |x|; Q4_K: -1.0, 0.1, 20 steps; Q5_K: -0.5, 0.1, 15 steps; both
//    squared error weighted by rms(sub-block) + |x|), make_q3_quants (Q3_K, 5 refinement
//    rounds), make_qx_quants (Q6_K: steps nmax + 0.1*is for is = -9..9, weights x^2).
// With an importance matrix the *_impl variants run instead: make_qkx3_quants (-0.9, 0.05,
// 36 steps) and make_qp_quants for the 6-bit / 4-bit scales, make_qx_quants with weights.
// make_qkx2_quants, most of the time of Q2_K/Q4_K/Q5_K, has an AVX2 version with the same bytes
// (qz_kquants_avx2.c), used when the engine's kernel choice (kn_ops_best) is not the reference.
// Depends on kernels/ only (qp.h, kn_types.h, kn_blocks_k.h, kn_ops.h) and libc.
#include <math.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "kn_blocks_k.h"
#include "kn_ops.h"
#include "kn_qdot.h"
#include "kn_types.h"
#include "qp.h"
#include "qz_kquants.h"
#include "qz_kquants_simd.h"
#include "qz_search.h"

#define QZ_QK_K KN_QK_K
#define QZ_GROUP_MAX_EPS 1e-15f // ggml's GROUP_MAX_EPS: a group below this is "all zero"

// ---------------------------------------------------------------------------------------------
// Rounding and scale search helpers (ggml-quants.c's, same arithmetic)

// Q3_K's sub-block fit (ggml's make_q3_quants with do_rmse): start from -nmax/max, then up to
// 5 rounds of coordinate descent on the x^2-weighted error. L in 0..2*nmax-1.
static float qz_make_q3_quants(int n, int nmax, const float *x, int8_t *L) {
    float max = qz_signed_absmax(x, n);
    if (fabsf(max) < QZ_GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    float iscale = (float)-nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = qz_clampi(qp_nearest_int(iscale * x[i]), -nmax, nmax - 1);
        L[i] = (int8_t)l;
        float w = x[i] * x[i];
        sumlx += w * x[i] * (float)l;
        suml2 += w * (float)l * (float)l;
    }
    for (int itry = 0; itry < 5; itry++) {
        int n_changed = 0;
        for (int i = 0; i < n; i++) {
            float w = x[i] * x[i];
            float slx = sumlx - w * x[i] * (float)L[i];
            if (slx > 0) {
                float sl2 = suml2 - w * (float)L[i] * (float)L[i];
                int new_l = qz_clampi(qp_nearest_int(x[i] * sl2 / slx), -nmax, nmax - 1);
                if (new_l != L[i]) {
                    slx += w * x[i] * (float)new_l;
                    sl2 += w * (float)new_l * (float)new_l;
                    if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = (int8_t)new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed++;
                    }
                }
            }
        }
        if (!n_changed) break;
    }
    for (int i = 0; i < n; i++) L[i] = (int8_t)(L[i] + nmax);
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

// Asymmetric fit x ~ scale*L - the_min, L in 0..nmax (ggml's make_qkx2_quants): start from the
// min/max grid, then try iscale = (rmin + rdelta*is + nmax)/(max - min) for is = 0..nstep,
// solving the weighted least squares for scale and min each time and keeping the lowest error
// (absolute if use_mad, else squared). The search grid uses the best min found so far.
// Laux (n) is scratch. The reference for qz_kquants_avx2.c (declared in qz_kquants_simd.h).
float qz_make_qkx2_quants_ref(int n, int nmax, const float *x, const float *weights, uint8_t *L,
                              float *the_min, uint8_t *Laux, float rmin, float rdelta, int nstep,
                              bool use_mad) {
    return qz_make_qkx_quants(n, nmax, x, weights, L, the_min, Laux, rmin, rdelta, nstep, use_mad, false);
}

// The AVX2 search gives the reference's bytes; it runs when the engine's kernel table is an AVX2
// or AVX-512 one (the CPU has AVX2 and FMA, and the program did not force "ref" with
// QPROBE_ISA=ref). Decided once per process; rows quantize on several threads, hence the atomic
// (every thread that races on the first call decides alike).
static bool qz_qkx2_use_avx2(void) {
    static _Atomic int use = -1; // -1: not decided yet
    int u = atomic_load_explicit(&use, memory_order_relaxed);
    if (u < 0) {
        u = strcmp(kn_ops_best()->name, "ref") != 0;
        atomic_store_explicit(&use, u, memory_order_relaxed);
    }
    return u;
}

static float qz_make_qkx2_quants(int n, int nmax, const float *x, const float *weights,
                                 uint8_t *L, float *the_min, uint8_t *Laux, float rmin,
                                 float rdelta, int nstep, bool use_mad) {
    return (qz_qkx2_use_avx2() ? qz_make_qkx2_quants_avx2 : qz_make_qkx2_quants_ref)(
        n, nmax, x, weights, L, the_min, Laux, rmin, rdelta, nstep, use_mad);
}

// Quantizes non-negative x (the sub-block scales or mins) to L in 0..nmax with one scale,
// minimizing the quant_weights-weighted squared error (ggml's make_qp_quants): best of
// nmax + 0.1*is for is = -4..4, then up to 5 rounds of coordinate descent.
static float qz_make_qp_quants(int n, int nmax, const float *x, uint8_t *L,
                               const float *quant_weights) {
    float max = 0;
    for (int i = 0; i < n; i++) max = max > x[i] ? max : x[i];
    if (max < QZ_GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    float iscale = (float)nmax / max;
    for (int i = 0; i < n; i++) L[i] = (uint8_t)qp_nearest_int(iscale * x[i]);
    float scale = 1 / iscale;
    float best_mse = 0;
    for (int i = 0; i < n; i++) {
        float diff = x[i] - scale * (float)L[i];
        best_mse += quant_weights[i] * diff * diff;
    }
    for (int is = -4; is <= 4; is++) {
        if (is == 0) continue;
        float iscale_is = (0.1f * (float)is + (float)nmax) / max;
        float scale_is = 1 / iscale_is;
        float mse = 0;
        for (int i = 0; i < n; i++) {
            int l = qp_nearest_int(iscale_is * x[i]);
            if (l > nmax) l = nmax;
            float diff = x[i] - scale_is * (float)l;
            mse += quant_weights[i] * diff * diff;
        }
        if (mse < best_mse) {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = qp_nearest_int(iscale * x[i]);
        if (l > nmax) l = nmax;
        L[i] = (uint8_t)l;
        float w = quant_weights[i];
        sumlx += w * x[i] * (float)l;
        suml2 += w * (float)l * (float)l;
    }
    for (int itry = 0; itry < 5; itry++) {
        int n_changed = 0;
        for (int i = 0; i < n; i++) {
            float w = quant_weights[i];
            float slx = sumlx - w * x[i] * (float)L[i];
            float sl2 = suml2 - w * (float)L[i] * (float)L[i];
            if (slx > 0 && sl2 > 0) {
                int new_l = qp_nearest_int(x[i] * sl2 / slx);
                if (new_l > nmax) new_l = nmax;
                if (new_l != L[i]) {
                    slx += w * x[i] * (float)new_l;
                    sl2 += w * (float)new_l * (float)new_l;
                    if (slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = (uint8_t)new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed++;
                    }
                }
            }
        }
        if (!n_changed) break;
    }
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

// ---------------------------------------------------------------------------------------------
// Packing shared by the reference and imatrix paths

// Q4_K/Q5_K: 8 6-bit scales and mins into 12 bytes (inverse of the unpacking in kn_blocks_k.h).
static void qz_pack_scale_min_k4(uint8_t b[12], const uint8_t *ls, const uint8_t *lm) {
    for (int j = 0; j < 8; j++) {
        if (j < 4) {
            b[j] = ls[j];
            b[j + 4] = lm[j];
        } else {
            b[j + 4] = (uint8_t)((ls[j] & 0xF) | ((lm[j] & 0xF) << 4));
            b[j - 4] |= (uint8_t)((ls[j] >> 4) << 6);
            b[j] |= (uint8_t)((lm[j] >> 4) << 6);
        }
    }
}

// Q3_K: 16 6-bit scales (0..63, value - 32) into 12 bytes.
static void qz_pack_scales_q3(uint8_t b[12], const int *l6) {
    memset(b, 0, 12);
    for (int j = 0; j < 16; j++) {
        int l = l6[j];
        if (j < 8) b[j] = (uint8_t)(l & 0xF);
        else b[j - 8] |= (uint8_t)((l & 0xF) << 4);
        l >>= 4;
        b[j % 4 + 8] |= (uint8_t)(l << (2 * (j / 4)));
    }
}

static int qz_unpack_scale_q3(int j, const uint8_t *b) {
    int lo = j < 8 ? (b[j] & 0xF) : (b[j - 8] >> 4);
    int hi = (b[8 + j % 4] >> (2 * (j / 4))) & 3;
    return (lo | (hi << 4)) - 32;
}

// 2-bit quants L (256, values 0..3) into 64 bytes: byte 32h + l holds L[128h + l + 32s] at 2s.
static void qz_pack_2bit(uint8_t *qs, const uint8_t *L) {
    for (int j = 0; j < QZ_QK_K; j += 128)
        for (int l = 0; l < 32; l++)
            qs[j / 4 + l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) |
                                      (L[j + l + 96] << 6));
}

// Q4_K/Q5_K final pass: requantize with the fp16-rounded d, dmin and the 6-bit scales/mins.
static void qz_requant_k4(const float *x, uint16_t d16, uint16_t dmin16, const uint8_t *scales,
                          int nmax, uint8_t *L) {
    for (int j = 0; j < QZ_QK_K / 32; j++) {
        uint8_t sc, m;
        kn_k4_scale_min(j, scales, &sc, &m);
        const float d = qp_fp16_to_fp32(d16) * sc;
        if (!d) continue;
        const float dm = qp_fp16_to_fp32(dmin16) * m;
        for (int ii = 0; ii < 32; ii++) {
            int l = qp_nearest_int((x[32 * j + ii] + dm) / d);
            L[32 * j + ii] = (uint8_t)qz_clampi(l, 0, nmax);
        }
    }
}

// Q2_K final pass and packing.
static void qz_finish_q2_K(const float *x, struct kn_block_q2_K *y, uint8_t *L) {
    for (int j = 0; j < QZ_QK_K / 16; j++) {
        const float d = qp_fp16_to_fp32(y->d) * (y->scales[j] & 0xF);
        if (!d) continue;
        const float dm = qp_fp16_to_fp32(y->dmin) * (y->scales[j] >> 4);
        for (int ii = 0; ii < 16; ii++) {
            int l = qp_nearest_int((x[16 * j + ii] + dm) / d);
            L[16 * j + ii] = (uint8_t)qz_clampi(l, 0, 3);
        }
    }
    qz_pack_2bit(y->qs, L);
}

// Q3_K final pass (quants from the fp16 d and 6-bit scales) and packing; L holds the first
// pass's quants (0..7) and is overwritten.
static void qz_finish_q3_K(const float *x, struct kn_block_q3_K *y, int8_t *L) {
    for (int j = 0; j < QZ_QK_K / 16; j++) {
        const float d = qp_fp16_to_fp32(y->d) * qz_unpack_scale_q3(j, y->scales);
        if (!d) continue;
        for (int ii = 0; ii < 16; ii++) {
            int l = qz_clampi(qp_nearest_int(x[16 * j + ii] / d), -4, 3);
            L[16 * j + ii] = (int8_t)(l + 4);
        }
    }
    memset(y->hmask, 0, sizeof y->hmask);
    uint8_t L2[QZ_QK_K];
    for (int j = 0; j < QZ_QK_K; j++) {
        int v = L[j];
        if (v > 3) {
            y->hmask[j % 32] |= (uint8_t)(1u << (j / 32));
            v -= 4;
        }
        L2[j] = (uint8_t)v;
    }
    qz_pack_2bit(y->qs, L2);
}

// Q5_K packing: low 4 bits into qs (as Q4_K), the 16s bit of weight 32s + l at bit s of qh[l].
static void qz_pack_q5(struct kn_block_q5_K *y, const uint8_t *L) {
    memset(y->qh, 0, sizeof y->qh);
    uint8_t *ql = y->qs;
    uint8_t m1 = 1, m2 = 2;
    for (int n = 0; n < QZ_QK_K; n += 64) {
        for (int j = 0; j < 32; j++) {
            int l1 = L[n + j], l2 = L[n + j + 32];
            if (l1 > 15) {
                l1 -= 16;
                y->qh[j] |= m1;
            }
            if (l2 > 15) {
                l2 -= 16;
                y->qh[j] |= m2;
            }
            ql[j] = (uint8_t)(l1 | (l2 << 4));
        }
        m1 = (uint8_t)(m1 << 2);
        m2 = (uint8_t)(m2 << 2);
        ql += 32;
    }
}

static void qz_pack_q4(struct kn_block_q4_K *y, const uint8_t *L) {
    uint8_t *q = y->qs;
    for (int j = 0; j < QZ_QK_K; j += 64) {
        for (int l = 0; l < 32; l++) q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
        q += 32;
    }
}

// Q6_K final pass from the fp16 d and int8 scales, and packing (layout in kn_blocks_k.h).
static void qz_finish_q6_K(const float *x, struct kn_block_q6_K *y, int8_t *L) {
    for (int j = 0; j < QZ_QK_K / 16; j++) {
        const float d = qp_fp16_to_fp32(y->d) * y->scales[j];
        if (!d) continue;
        for (int ii = 0; ii < 16; ii++) {
            int l = qz_clampi(qp_nearest_int(x[16 * j + ii] / d), -32, 31);
            L[16 * j + ii] = (int8_t)(l + 32);
        }
    }
    uint8_t *ql = y->ql, *qh = y->qh;
    for (int j = 0; j < QZ_QK_K; j += 128) {
        for (int l = 0; l < 32; l++) {
            const int q1 = L[j + l], q2 = L[j + l + 32], q3 = L[j + l + 64], q4 = L[j + l + 96];
            ql[l] = (uint8_t)((q1 & 0xF) | ((q3 & 0xF) << 4));
            ql[l + 32] = (uint8_t)((q2 & 0xF) | ((q4 & 0xF) << 4));
            qh[l] = (uint8_t)((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6));
        }
        ql += 64;
        qh += 32;
    }
}

// ---------------------------------------------------------------------------------------------
// Q2_K

static void qz_q2_K_ref(const float *x, struct kn_block_q2_K *y) {
    uint8_t L[QZ_QK_K], Laux[16];
    float weights[16], mins[16], scales[16];
    const float q4scale = 15.f;
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 16; j++) {
        for (int l = 0; l < 16; l++) weights[l] = fabsf(x[16 * j + l]);
        scales[j] = qz_make_qkx2_quants(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux,
                                        -0.5f, 0.1f, 15, true);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    if (max_scale > 0) {
        float iscale = q4scale / max_scale;
        for (int j = 0; j < 16; j++) y->scales[j] = (uint8_t)qp_nearest_int(iscale * scales[j]);
        y->d = qp_fp32_to_fp16(max_scale / q4scale);
    } else {
        memset(y->scales, 0, sizeof y->scales);
        y->d = qp_fp32_to_fp16(0.f);
    }
    if (max_min > 0) {
        float iscale = q4scale / max_min;
        for (int j = 0; j < 16; j++)
            y->scales[j] |= (uint8_t)((unsigned)qp_nearest_int(iscale * mins[j]) << 4);
        y->dmin = qp_fp32_to_fp16(max_min / q4scale);
    } else {
        y->dmin = qp_fp32_to_fp16(0.f);
    }
    qz_finish_q2_K(x, y, L);
}

static void qz_q2_K_imatrix(const float *x, struct kn_block_q2_K *y, const float *qw) {
    uint8_t L[QZ_QK_K], Laux[16], Ls[16], Lm[16];
    float mins[16], scales[16], sw[16], weight[16];
    float sumx2 = 0;
    for (int j = 0; j < QZ_QK_K; j++) sumx2 += x[j] * x[j];
    float sigma2 = sumx2 / QZ_QK_K;
    for (int j = 0; j < 16; j++) {
        sw[j] = 0;
        for (int l = 0; l < 16; l++) weight[l] = qw[16 * j + l] * sqrtf(sigma2 + x[16 * j + l] * x[16 * j + l]);
        for (int l = 0; l < 16; l++) sw[j] += weight[l];
        scales[j] = qz_make_qkx3_quants(16, 3, x + 16 * j, weight, L + 16 * j, &mins[j], Laux,
                                        -0.9f, 0.05f, 36);
    }
    float dm = qz_make_qp_quants(16, 15, scales, Ls, sw);
    float mm = qz_make_qp_quants(16, 15, mins, Lm, sw);
    y->d = qp_fp32_to_fp16(dm);
    y->dmin = qp_fp32_to_fp16(mm);
    for (int j = 0; j < 16; j++) y->scales[j] = (uint8_t)(Ls[j] | (Lm[j] << 4));
    qz_finish_q2_K(x, y, L);
}

// ---------------------------------------------------------------------------------------------
// Q3_K

static void qz_q3_K_ref(const float *x, struct kn_block_q3_K *y) {
    int8_t L[QZ_QK_K];
    float scales[16];
    float max_scale = 0, amax = 0;
    for (int j = 0; j < 16; j++) {
        scales[j] = qz_make_q3_quants(16, 4, x + 16 * j, L + 16 * j);
        float scale = fabsf(scales[j]);
        if (scale > amax) {
            amax = scale;
            max_scale = scales[j];
        }
    }
    if (max_scale != 0) {
        float iscale = -32.f / max_scale;
        int l6[16];
        for (int j = 0; j < 16; j++) {
            // ggml stores the rounded value in an int8_t before clamping
            int8_t l = (int8_t)qp_nearest_int(iscale * scales[j]);
            l6[j] = qz_clampi(l, -32, 31) + 32;
        }
        qz_pack_scales_q3(y->scales, l6);
        y->d = qp_fp32_to_fp16(1 / iscale);
    } else {
        memset(y->scales, 0, sizeof y->scales);
        y->d = qp_fp32_to_fp16(0.f);
    }
    qz_finish_q3_K(x, y, L);
}

static void qz_q3_K_imatrix(const float *x, struct kn_block_q3_K *y, const float *qw) {
    int8_t L[QZ_QK_K], Ls[16];
    float scales[16], weight[16], sw[16];
    float sumx2 = 0;
    for (int j = 0; j < QZ_QK_K; j++) sumx2 += x[j] * x[j];
    float sigma2 = 2 * sumx2 / QZ_QK_K;
    for (int j = 0; j < 16; j++) {
        for (int l = 0; l < 16; l++) weight[l] = qw[16 * j + l] * sqrtf(sigma2 + x[16 * j + l] * x[16 * j + l]);
        float sumw = 0;
        for (int l = 0; l < 16; l++) sumw += weight[l];
        sw[j] = sumw;
        scales[j] = qz_make_qx_quants(16, 4, x + 16 * j, L + 16 * j, weight);
    }
    float d_block = qz_make_qx_quants(16, 32, scales, Ls, sw);
    int l6[16];
    for (int j = 0; j < 16; j++) l6[j] = Ls[j];
    qz_pack_scales_q3(y->scales, l6);
    y->d = qp_fp32_to_fp16(d_block);
    qz_finish_q3_K(x, y, L);
}

// ---------------------------------------------------------------------------------------------
// Q4_K and Q5_K (nmax 15 and 31; the reference search constants differ, see the top)

static void qz_q45_K_ref(const float *x, int nmax, float rmin, int nstep, uint16_t *d16,
                         uint16_t *dmin16, uint8_t scales12[12], uint8_t *L) {
    uint8_t Laux[32];
    float weights[32], mins[8], scales[8];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; j++) {
        float sum_x2 = 0;
        for (int l = 0; l < 32; l++) sum_x2 += x[32 * j + l] * x[32 * j + l];
        float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; l++) weights[l] = av_x + fabsf(x[32 * j + l]);
        scales[j] = qz_make_qkx2_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux,
                                        rmin, 0.1f, nstep, false);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    uint8_t ls[8], lm[8];
    for (int j = 0; j < 8; j++) {
        // ggml converts to uint8_t first, then clamps to 63
        uint8_t s = (uint8_t)qp_nearest_int(inv_scale * scales[j]);
        uint8_t m = (uint8_t)qp_nearest_int(inv_min * mins[j]);
        ls[j] = s < 63 ? s : 63;
        lm[j] = m < 63 ? m : 63;
    }
    qz_pack_scale_min_k4(scales12, ls, lm);
    *d16 = qp_fp32_to_fp16(max_scale / 63.f);
    *dmin16 = qp_fp32_to_fp16(max_min / 63.f);
    qz_requant_k4(x, *d16, *dmin16, scales12, nmax, L);
}

static void qz_q45_K_imatrix(const float *x, int nmax, const float *qw, uint16_t *d16,
                             uint16_t *dmin16, uint8_t scales12[12], uint8_t *L) {
    uint8_t Laux[32], Ls[8], Lm[8];
    float weights[32], sw[8], mins[8], scales[8];
    float sum_x2 = 0;
    for (int l = 0; l < QZ_QK_K; l++) sum_x2 += x[l] * x[l];
    float sigma2 = 2 * sum_x2 / QZ_QK_K;
    for (int j = 0; j < 8; j++) {
        for (int l = 0; l < 32; l++) weights[l] = qw[32 * j + l] * sqrtf(sigma2 + x[32 * j + l] * x[32 * j + l]);
        float sumw = 0;
        for (int l = 0; l < 32; l++) sumw += weights[l];
        sw[j] = sumw;
        scales[j] = qz_make_qkx3_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux,
                                        -0.9f, 0.05f, 36);
    }
    float d_block = qz_make_qp_quants(8, 63, scales, Ls, sw);
    float m_block = qz_make_qp_quants(8, 63, mins, Lm, sw);
    for (int j = 0; j < 8; j++) {
        if (Ls[j] > 63) Ls[j] = 63;
        if (Lm[j] > 63) Lm[j] = 63;
    }
    qz_pack_scale_min_k4(scales12, Ls, Lm);
    *d16 = qp_fp32_to_fp16(d_block);
    *dmin16 = qp_fp32_to_fp16(m_block);
    qz_requant_k4(x, *d16, *dmin16, scales12, nmax, L);
}

static void qz_q4_K(const float *x, struct kn_block_q4_K *y, const float *qw) {
    uint8_t L[QZ_QK_K];
    memset(y->scales, 0, sizeof y->scales);
    if (qw) qz_q45_K_imatrix(x, 15, qw, &y->d, &y->dmin, y->scales, L);
    else qz_q45_K_ref(x, 15, -1.f, 20, &y->d, &y->dmin, y->scales, L);
    qz_pack_q4(y, L);
}

static void qz_q5_K(const float *x, struct kn_block_q5_K *y, const float *qw) {
    uint8_t L[QZ_QK_K];
    memset(y->scales, 0, sizeof y->scales);
    if (qw) qz_q45_K_imatrix(x, 31, qw, &y->d, &y->dmin, y->scales, L);
    else qz_q45_K_ref(x, 31, -0.5f, 15, &y->d, &y->dmin, y->scales, L);
    qz_pack_q5(y, L);
}

// ---------------------------------------------------------------------------------------------
// Q6_K (the imatrix path weights by the imatrix alone, as llama.cpp does)

static void qz_q6_K(const float *x, struct kn_block_q6_K *y, const float *qw) {
    int8_t L[QZ_QK_K];
    float scales[16];
    float max_scale = 0, max_abs_scale = 0;
    for (int ib = 0; ib < 16; ib++) {
        const float scale = qz_make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib, qw ? qw + 16 * ib : NULL);
        scales[ib] = scale;
        const float abs_scale = fabsf(scale);
        if (abs_scale > max_abs_scale) {
            max_abs_scale = abs_scale;
            max_scale = scale;
        }
    }
    if (max_abs_scale < QZ_GROUP_MAX_EPS) {
        memset(y, 0, sizeof *y);
        y->d = qp_fp32_to_fp16(0.f);
        return;
    }
    float iscale = -128.f / max_scale;
    y->d = qp_fp32_to_fp16(1 / iscale);
    for (int ib = 0; ib < 16; ib++) {
        int v = qp_nearest_int(iscale * scales[ib]);
        y->scales[ib] = (int8_t)(v < 127 ? v : 127);
    }
    qz_finish_q6_K(x, y, L);
}

// ---------------------------------------------------------------------------------------------
// Public entry points

int qz_quantize_row_k(int type, const float *x, void *y, int64_t n, const float *imatrix) {
    if (type != KN_Q2_K && type != KN_Q3_K && type != KN_Q4_K && type != KN_Q5_K && type != KN_Q6_K)
        return QP_ENOTSUP;
    if (n < 0 || n % QZ_QK_K != 0) return QP_EINVAL;
    QP_ASSERT(n == 0 || (x && y));
    const int64_t nb = n / QZ_QK_K;
    for (int64_t i = 0; i < nb; i++) {
        const float *xb = x + i * QZ_QK_K;
        const float *qw = imatrix ? imatrix + i * QZ_QK_K : NULL;
        switch (type) {
        case KN_Q2_K: {
            struct kn_block_q2_K *b = (struct kn_block_q2_K *)y + i;
            if (qw) qz_q2_K_imatrix(xb, b, qw);
            else qz_q2_K_ref(xb, b);
            break;
        }
        case KN_Q3_K: {
            struct kn_block_q3_K *b = (struct kn_block_q3_K *)y + i;
            if (qw) qz_q3_K_imatrix(xb, b, qw);
            else qz_q3_K_ref(xb, b);
            break;
        }
        case KN_Q4_K: qz_q4_K(xb, (struct kn_block_q4_K *)y + i, qw); break;
        case KN_Q5_K: qz_q5_K(xb, (struct kn_block_q5_K *)y + i, qw); break;
        default: qz_q6_K(xb, (struct kn_block_q6_K *)y + i, qw); break;
        }
    }
    return 0;
}

int qz_quantize_act_q8_K(const float *x, void *y, int64_t n) {
    if (n < 0 || n % QZ_QK_K != 0) return QP_EINVAL;
    QP_ASSERT(n == 0 || (x && y));
    kn_quant_q8_K_ref(x, y, n); // the one q8_K quantizer (kernels/kn_qdot.c)
    return 0;
}
