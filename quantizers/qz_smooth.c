// qz_smooth.c — SmoothQuant smoothing factors and the W8 weight quantizer (qz_smooth.h).
//
// Depends on kernels/qp.h and quantizers/ only; never on harness/.
#include "qz_smooth.h"

#include <math.h>

#include "qp.h"

static const struct qz_base w8_base = {
    .method = QZ_RTN, .bits = 8, .gran = QZ_CHANNEL, .group = 0, .sym = true, .ggml_type = -1,
};

void qz_smooth_scales(const float *act_absmax, int64_t n_in, const float *const *w, const int64_t *rows,
                      int n_w, double alpha, float *s) {
    for (int64_t j = 0; j < n_in; j++) {
        double wmax = 0;
        for (int k = 0; k < n_w; k++)
            for (int64_t r = 0; r < rows[k]; r++) wmax = fmax(wmax, fabs((double)w[k][r * n_in + j]));
        double a = fmax((double)act_absmax[j], QZ_SMOOTH_MIN);
        wmax = fmax(wmax, QZ_SMOOTH_MIN);
        s[j] = (float)fmax(pow(a, alpha) / pow(wmax, 1.0 - alpha), QZ_SMOOTH_MIN);
    }
}

void qz_smooth_fold(float *norm, float *w, int64_t rows, int64_t n_in, const float *s) {
    if (norm)
        for (int64_t j = 0; j < n_in; j++) norm[j] /= s[j];
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < n_in; j++) w[r * n_in + j] *= s[j];
}

int qz_w8_channel(const float *src, float *dst, int64_t rows, int64_t cols, struct qz_stats *st) {
    return qz_fake_quant(&w8_base, src, dst, rows, cols, st);
}
