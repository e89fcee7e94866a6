// qz_search.c — the scale searches llama.cpp's quantizers share (ggml-quants.c's
// make_qx_quants and make_qkx3_quants, same arithmetic in the same order), used by the legacy
// formats' and the k-quants' importance-weighted paths (qz_ggml.c, qz_kquants.c).
// Depends on kernels/qp.h and libc only.
#include "qz_search.h"

#include <math.h>
#include <string.h>

#define QZ_GROUP_MAX_EPS 1e-15f // ggml's GROUP_MAX_EPS: a group below this is "all zero"

// Symmetric quants L[i] in 0..2*nmax-1 (value L - nmax) for n values; returns the scale.
// ggml's make_qx_quants with rmse_type 1: weights qw[i], or x[i]^2 when qw is NULL; tries
// iscale = -(nmax + 0.1*is)/max for is = -9..9 and keeps the best weighted least-squares fit.
float qz_make_qx_quants(int n, int nmax, const float *x, int8_t *L, const float *qw) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++) {
        float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < QZ_GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    float iscale = (float)-nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = qz_clampi(qp_nearest_int(iscale * x[i]), -nmax, nmax - 1);
        L[i] = (int8_t)(l + nmax);
        float w = qw ? qw[i] : x[i] * x[i];
        sumlx += w * x[i] * (float)l;
        suml2 += w * (float)l * (float)l;
    }
    float scale = suml2 != 0 ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0) continue;
        iscale = -((float)nmax + 0.1f * (float)is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; i++) {
            int l = qz_clampi(qp_nearest_int(iscale * x[i]), -nmax, nmax - 1);
            float w = qw ? qw[i] : x[i] * x[i];
            sumlx += w * x[i] * (float)l;
            suml2 += w * (float)l * (float)l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++) {
                int l = qz_clampi(qp_nearest_int(iscale * x[i]), -nmax, nmax - 1);
                L[i] = (int8_t)(l + nmax);
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

// The imatrix variant (ggml's make_qkx3_quants, weights given): as qkx2, but grid values are
// clamped before rounding (v <= 0 gives 0), so an extreme min cannot overflow the rounding.
float qz_make_qkx3_quants(int n, int nmax, const float *x, const float *weights,
                                 uint8_t *L, float *the_min, uint8_t *Laux, float rmin,
                                 float rdelta, int nstep) {
    float min = x[0], max = x[0];
    float sum_w = weights[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        float w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if (min > 0) min = 0;
    if (max <= min) {
        memset(L, 0, (size_t)n);
        *the_min = -min;
        return 0.f;
    }
    float iscale = (float)nmax / (max - min);
    float scale = 1 / iscale;
    float best_mse = 0;
    for (int i = 0; i < n; i++) {
        int l = qp_nearest_int(iscale * (x[i] - min));
        L[i] = (uint8_t)qz_clampi(l, 0, nmax);
        float diff = scale * (float)L[i] + min - x[i];
        best_mse += weights[i] * (diff * diff);
    }
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * (float)is + (float)nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            const float v = iscale * (x[i] - min);
            const int l = v > 0 ? qp_nearest_int(v < (float)nmax ? v : (float)nmax) : 0;
            Laux[i] = (uint8_t)l;
            float w = weights[i];
            sum_l += w * (float)l;
            sum_l2 += w * (float)l * (float)l;
            sum_xl += w * (float)l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float mse = 0;
            for (int i = 0; i < n; i++) {
                float diff = this_scale * (float)Laux[i] + this_min - x[i];
                mse += weights[i] * (diff * diff);
            }
            if (mse < best_mse) {
                memcpy(L, Laux, (size_t)n);
                best_mse = mse;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

