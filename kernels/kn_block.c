// kn_block.c — tanh, GELU gating, soft-capping and capped attention for the block variants
// (kn_block.h). Plain C; fmaf only where the operation is defined as fused (dot products).
// Depends on libc, kn_ops.h (kn_expf_ref) and kn_block.h.
#include "kn_block.h"

#include <math.h>

#include "kn_ops.h"

// ---------------------------------------------------------------------------------------------
// tanh

// Cephes tanhf: for |x| < 0.625, tanh x = x + x^3 P(x^2).
#define KN_TANH_P0 -5.70498872745e-3f
#define KN_TANH_P1 2.06390887954e-2f
#define KN_TANH_P2 -5.37397155531e-2f
#define KN_TANH_P3 1.33314422036e-1f
#define KN_TANH_P4 -3.33332819422e-1f

float kn_tanhf(float x) {
    float a = fabsf(x);
    if (!(a < 9.0f)) return isnan(x) ? x : copysignf(1.0f, x); // |tanh| rounds to 1 beyond 9
    if (a < 0.625f) {
        float z = x * x;
        float p = KN_TANH_P0;
        p = fmaf(p, z, KN_TANH_P1);
        p = fmaf(p, z, KN_TANH_P2);
        p = fmaf(p, z, KN_TANH_P3);
        p = fmaf(p, z, KN_TANH_P4);
        return fmaf(p * z, x, x);
    }
    float t = 1.0f - 2.0f / (kn_expf_ref(2.0f * a) + 1.0f);
    return copysignf(t, x);
}

// ---------------------------------------------------------------------------------------------
// Element-wise

#define KN_SQRT_2_OVER_PI 0.79788456080286535588f
#define KN_GELU_A 0.044715f

void kn_gelu_gate(float *h, const float *g, const float *u, int n) {
    for (int i = 0; i < n; i++) {
        float x = g[i];
        float gelu = 0.5f * x * (1.0f + kn_tanhf(KN_SQRT_2_OVER_PI * x * (1.0f + KN_GELU_A * x * x)));
        h[i] = gelu * u[i];
    }
}

void kn_softcap(float *x, int n, float cap) {
    float inv = 1.0f / cap;
    for (int i = 0; i < n; i++) x[i] = kn_tanhf(x[i] * inv) * cap;
}

// ---------------------------------------------------------------------------------------------
// Attention with capped scores: the one definition in kn_block_attn.h, compiled here for the
// baseline ISA (fmaf from libm) and in kn_block_avx2.c with FMA instructions. fmaf is correctly
// rounded either way, and the loops keep their order, so both give the same bits.

#define KN_ATTEND_CAPPED kn_attend_capped_ref
#define KN_TREE16_NAME kn_tree16_capped
#include "kn_block_attn.h"
