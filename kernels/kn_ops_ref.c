// kn_ops_ref.c — the scalar reference kernels: the specification every SIMD path must match bit
// for bit (see kn_ops.h for the operation orders). Plain C; fmaf only where a kernel's
// definition says "fused". Depends on libc only.
#include <math.h>
#include <string.h>

#include "kn_blocks.h"
#include "kn_ops.h"
#include "qp.h"

// ---------------------------------------------------------------------------------------------
// exp: x = n*ln2 + r with n = round(x*log2(e)) (ties to even), |r| <= ln2/2, ln2 split in two
// parts so that n*ln2 is exact enough; exp(r) by a degree-7 polynomial (Cephes' coefficients,
// Horner with fused multiply-adds); then scaled by 2^n built in the exponent bits.
// Inputs below -87 give 0 (softmax terms that small do not matter); above 88 are clamped.

#define KN_EXP_LO -87.0f
#define KN_EXP_HI 88.0f
#define KN_LOG2E 1.44269504088896341f
#define KN_LN2_HI 0.693359375f
#define KN_LN2_LO -2.12194440e-4f
#define KN_P0 1.9875691500e-4f
#define KN_P1 1.3981999507e-3f
#define KN_P2 8.3334519073e-3f
#define KN_P3 4.1665795894e-2f
#define KN_P4 1.6666665459e-1f
#define KN_P5 5.0000001201e-1f

float kn_expf_ref(float x) {
    if (x < KN_EXP_LO) return 0.0f;
    if (x > KN_EXP_HI) x = KN_EXP_HI;
    float n = nearbyintf(x * KN_LOG2E);
    float r = fmaf(n, -KN_LN2_HI, x);
    r = fmaf(n, -KN_LN2_LO, r);
    float p = KN_P0;
    p = fmaf(p, r, KN_P1);
    p = fmaf(p, r, KN_P2);
    p = fmaf(p, r, KN_P3);
    p = fmaf(p, r, KN_P4);
    p = fmaf(p, r, KN_P5);
    float r2 = r * r;
    float y = fmaf(p, r2, r);
    y = y + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, 4);
    return y * scale;
}

// ---------------------------------------------------------------------------------------------
// The canonical 16-lane sum (see kn_ops.h).

static float kn_tree16(float *acc) {
    for (int half = 8; half >= 1; half /= 2)
        for (int i = 0; i < half; i++) acc[i] = acc[i] + acc[i + half];
    return acc[0];
}

static double kn_tree16d(double *acc) {
    for (int half = 8; half >= 1; half /= 2)
        for (int i = 0; i < half; i++) acc[i] = acc[i] + acc[i + half];
    return acc[0];
}

// ---------------------------------------------------------------------------------------------

static void kn_gemm_f32_ref(const float *x, size_t ldx, int n_rows, const float *wp, int n_in,
                            int col0, int col1, float *y, size_t ldy) {
    for (int r = 0; r < n_rows; r++) {
        const float *xr = x + (size_t)r * ldx;
        for (int j = col0; j < col1; j++) {
            const float *w = wp + (size_t)(j / KN_NR) * n_in * KN_NR + j % KN_NR;
            float acc = 0.0f;
            for (int k = 0; k < n_in; k++) acc = fmaf(xr[k], w[(size_t)k * KN_NR], acc);
            y[(size_t)r * ldy + j] = acc;
        }
    }
}

void kn_pack_x(int mr, const float *x, size_t ldx, int n_rows, int n_in, float *xp) {
    for (int r0 = 0; r0 < n_rows; r0 += mr, xp += (size_t)n_in * mr) {
        const int m = n_rows - r0 < mr ? n_rows - r0 : mr;
        for (int r = 0; r < mr; r++) {
            const float *xr = x + (size_t)(r0 + r) * ldx;
            if (r < m)
                for (int k = 0; k < n_in; k++) xp[(size_t)k * mr + r] = xr[k];
            else
                for (int k = 0; k < n_in; k++) xp[(size_t)k * mr + r] = 0.0f;
        }
    }
}

#define KN_REF_XMR 4

static void kn_pack_x_ref(const float *x, size_t ldx, int n_rows, int n_in, float *xp) {
    kn_pack_x(KN_REF_XMR, x, ldx, n_rows, n_in, xp);
}

static void kn_gemm_xp_ref(const float *xp, int n_rows, const float *wp, int n_in, int ncols, float *y,
                           size_t ldy) {
    for (int r = 0; r < n_rows; r++) {
        const float *xb = xp + (size_t)(r / KN_REF_XMR) * n_in * KN_REF_XMR + r % KN_REF_XMR;
        for (int j = 0; j < ncols; j++) {
            const float *w = wp + (size_t)(j / KN_NR) * n_in * KN_NR + j % KN_NR;
            float acc = 0.0f;
            for (int k = 0; k < n_in; k++) acc = fmaf(xb[(size_t)k * KN_REF_XMR], w[(size_t)k * KN_NR], acc);
            y[(size_t)r * ldy + j] = acc;
        }
    }
}

static void kn_pack_f32_ref(const float *rows, size_t ld, int n_rows, int n_in, float *panel) {
    for (int k = 0; k < n_in; k++)
        for (int c = 0; c < KN_NR; c++) panel[(size_t)k * KN_NR + c] = c < n_rows ? rows[c * ld + k] : 0.0f;
}

static void kn_pack_f16_ref(const uint16_t *rows, size_t ld, int n_rows, int n_in, float *panel) {
    for (int k = 0; k < n_in; k++)
        for (int c = 0; c < KN_NR; c++)
            panel[(size_t)k * KN_NR + c] = c < n_rows ? qp_fp16_to_fp32(rows[c * ld + k]) : 0.0f;
}

// The definition on fp16 panels: gemm_f32's chain, each weight converted first.
static void kn_gemv_f16_ref(const float *x, size_t ldx, int n_rows, const uint16_t *wp16, int n_in, int ncols,
                            float *y, size_t ldy) {
    for (int r = 0; r < n_rows; r++)
        for (int j = 0; j < ncols; j++) {
            const uint16_t *w = wp16 + (size_t)(j / KN_NR) * n_in * KN_NR + j % KN_NR;
            float acc = 0.0f;
            for (int k = 0; k < n_in; k++) acc = fmaf(x[(size_t)r * ldx + k], qp_fp16_to_fp32(w[(size_t)k * KN_NR]), acc);
            y[(size_t)r * ldy + j] = acc;
        }
}

static void kn_f16_to_f32_ref(const uint16_t *h, size_t n, float *out) {
    for (size_t i = 0; i < n; i++) out[i] = qp_fp16_to_fp32(h[i]);
}

// Blocks of 64 k so that the 16 source rows' pieces and the panel's piece (2 KB) stay in L1.
void kn_f16_panels_pack(const uint16_t *rows, size_t ld, int n_rows, int n_in, uint16_t *wp16) {
    enum { KB = 64 };
    for (int p = 0; p * KN_NR < n_rows; p++) {
        uint16_t *panel = wp16 + (size_t)p * n_in * KN_NR;
        const int nc = n_rows - p * KN_NR < KN_NR ? n_rows - p * KN_NR : KN_NR;
        for (int k0 = 0; k0 < n_in; k0 += KB) {
            const int kb = n_in - k0 < KB ? n_in - k0 : KB;
            for (int c = 0; c < KN_NR; c++) {
                const uint16_t *src = rows + (size_t)(p * KN_NR + c) * ld + k0;
                uint16_t *dst = panel + (size_t)k0 * KN_NR + c;
                for (int k = 0; k < kb; k++) dst[(size_t)k * KN_NR] = c < nc ? src[k] : 0;
            }
        }
    }
}

static void kn_rmsnorm_ref(float *out, const float *x, const float *w, int n, float eps) {
    float acc[16] = {0};
    for (int i = 0; i < n; i += 16)
        for (int l = 0; l < 16; l++) {
            float v = i + l < n ? x[i + l] : 0.0f;
            acc[l] = fmaf(v, v, acc[l]);
        }
    float ss = kn_tree16(acc);
    ss = ss / (float)n + eps;
    float s = 1.0f / sqrtf(ss);
    for (int i = 0; i < n; i++) out[i] = w[i] * (x[i] * s);
}

static void kn_attend_ref(float *out, const float *q, const float *kt, size_t kt_stride,
                          const float *v, int head_size, int n_keys, float *scratch) {
    float *s = scratch;
    float div = sqrtf((float)head_size);
    float mx = -INFINITY;
    for (int j = 0; j < n_keys; j++) {
        float acc = 0.0f;
        for (int d = 0; d < head_size; d++) acc = fmaf(q[d], kt[(size_t)d * kt_stride + j], acc);
        s[j] = acc / div;
        if (s[j] > mx) mx = s[j];
    }
    float acc16[16] = {0};
    for (int j = 0; j < n_keys; j += 16)
        for (int l = 0; l < 16; l++) {
            float e = 0.0f;
            if (j + l < n_keys) e = s[j + l] = kn_expf_ref(s[j + l] - mx);
            acc16[l] = acc16[l] + e;
        }
    float sum = kn_tree16(acc16);
    for (int j = 0; j < n_keys; j++) s[j] = s[j] / sum;
    for (int d = 0; d < head_size; d++) {
        float acc = 0.0f;
        for (int j = 0; j < n_keys; j++) acc = fmaf(s[j], v[(size_t)j * head_size + d], acc);
        out[d] = acc;
    }
}

static void kn_attend_rows_ref(float *out, size_t out_stride, const float *q, size_t q_stride,
                               int nq, const float *kt, size_t kt_stride, const float *v,
                               int head_size, int n_keys0, float *scratch, size_t sstride) {
    (void)sstride;
    for (int i = 0; i < nq; i++)
        kn_attend_ref(out + (size_t)i * out_stride, q + (size_t)i * q_stride, kt, kt_stride, v,
                      head_size, n_keys0 + i, scratch);
}

static void kn_swiglu_ref(float *h, const float *g, const float *u, int n) {
    for (int i = 0; i < n; i++) {
        float e = kn_expf_ref(-g[i]);
        float silu = g[i] * (1.0f / (1.0f + e));
        h[i] = silu * u[i];
    }
}

static double kn_logsumexp_ref(const float *x, int n, float *max_out) {
    float mx = -INFINITY;
    for (int i = 0; i < n; i++)
        if (x[i] > mx) mx = x[i];
    double acc[16] = {0};
    for (int i = 0; i < n; i += 16)
        for (int l = 0; l < 16; l++) {
            double e = i + l < n ? (double)kn_expf_ref(x[i + l] - mx) : 0.0;
            acc[l] = acc[l] + e;
        }
    if (max_out) *max_out = mx;
    return log(kn_tree16d(acc)) + (double)mx;
}

static double kn_fma_loop_ref(long n) {
    float acc[12] = {0};
    for (long i = 0; i < n; i++)
        for (int c = 0; c < 12; c++) acc[c] = fmaf(acc[c], 0.999f, 1e-6f);
    volatile float sink = acc[0] + acc[11];
    (void)sink;
    return 2.0 * 12 * (double)n;
}

const struct kn_ops kn_ops_ref = {
    .name = "ref",
    .gemm_f32 = kn_gemm_f32_ref,
    .xmr = KN_REF_XMR,
    .pack_x = kn_pack_x_ref,
    .gemm_xp = kn_gemm_xp_ref,
    .fma_loop = kn_fma_loop_ref,
    .pack_f32 = kn_pack_f32_ref,
    .pack_f16 = kn_pack_f16_ref,
    .gemv_f16 = kn_gemv_f16_ref,
    .f16_to_f32 = kn_f16_to_f32_ref,
    .dequant_row = kn_dequantize_row,
    .rmsnorm = kn_rmsnorm_ref,
    .attend = kn_attend_ref,
    .attend_rows = kn_attend_rows_ref,
    .swiglu = kn_swiglu_ref,
    .logsumexp = kn_logsumexp_ref,
};
