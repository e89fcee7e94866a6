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
    float max = qz_signed_absmax(x, n);
    if (fabsf(max) < QZ_GROUP_MAX_EPS) {
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

// Weighted sums of x over its levels L (n of them, in index order), for the least-squares fit.
static void qkx_sums(int n, const float *x, const float *weights, const uint8_t *L, float *sum_l, float *sum_l2,
                     float *sum_xl) {
    float sl = 0, sl2 = 0, sxl = 0;
    for (int i = 0; i < n; i++) {
        float w = weights[i], l = (float)L[i];
        sl += w * l;
        sl2 += w * l * l;
        sxl += w * l * x[i];
    }
    *sum_l = sl, *sum_l2 = sl2, *sum_xl = sxl;
}

// The weighted error of x ~ scale*L + min: absolute if use_mad, else squared.
static float qkx_error(int n, const float *x, const float *weights, const uint8_t *L, float scale, float min,
                       bool use_mad) {
    float e = 0;
    for (int i = 0; i < n; i++) {
        float diff = scale * (float)L[i] + min - x[i];
        diff = use_mad ? fabsf(diff) : diff * diff;
        e += weights[i] * diff;
    }
    return e;
}

float qz_make_qkx_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L, float *the_min,
                         uint8_t *Laux, float rmin, float rdelta, int nstep, bool use_mad, bool clamp_first) {
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
    if (max == min) { // (max >= min here: min was lowered to 0 at most)
        memset(L, 0, (size_t)n);
        *the_min = -min;
        return 0.f;
    }
    float iscale = (float)nmax / (max - min);
    float scale = 1 / iscale;
    for (int i = 0; i < n; i++) L[i] = (uint8_t)qz_clampi(qp_nearest_int(iscale * (x[i] - min)), 0, nmax);
    float best_error = qkx_error(n, x, weights, L, scale, min, use_mad);
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * (float)is + (float)nmax) / (max - min);
        for (int i = 0; i < n; i++) {
            const float v = iscale * (x[i] - min);
            Laux[i] = (uint8_t)(clamp_first ? (v > 0 ? qp_nearest_int(v < (float)nmax ? v : (float)nmax) : 0)
                                            : qz_clampi(qp_nearest_int(v), 0, nmax));
        }
        float sum_l, sum_l2, sum_xl;
        qkx_sums(n, x, weights, Laux, &sum_l, &sum_l2, &sum_xl);
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (!(D > 0)) continue;
        float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
        float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
        if (this_min > 0) {
            this_min = 0;
            this_scale = sum_xl / sum_l2;
        }
        float cur_error = qkx_error(n, x, weights, Laux, this_scale, this_min, use_mad);
        if (cur_error < best_error) {
            memcpy(L, Laux, (size_t)n);
            best_error = cur_error;
            scale = this_scale;
            min = this_min;
        }
    }
    *the_min = -min;
    return scale;
}

float qz_make_qkx3_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L, float *the_min,
                          uint8_t *Laux, float rmin, float rdelta, int nstep) {
    return qz_make_qkx_quants(n, nmax, x, weights, L, the_min, Laux, rmin, rdelta, nstep, false, true);
}
