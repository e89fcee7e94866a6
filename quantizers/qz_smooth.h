// qz_smooth.h — SmoothQuant (Xiao et al. 2023, "SmoothQuant: Accurate and Efficient Post-Training
// Quantization for Large Language Models"): per-input-channel smoothing factors that move the
// activations' outliers into the weights, and the W8 half of W8A8.
//
// Depends on kernels/qp.h, quantizers/qz_spec.h and qz_rtn.h; never on harness/. The A8 half
// (int8 activations per token, or per tensor with static scales from calibration) is the
// engine's act_int8 option (kernels/kn_engine.h). The unsmoothed W8A8 spec (w8a8) uses the same
// W8 quantizer without the smoothing.
//
// As implemented (the smoothquant repository's smooth_ln_fcs is the reference):
//   for the linears fed by one RMSNorm (q/k/v after attn_norm; gate/up after ffn_norm):
//     a_j = max over calibration tokens of |x_j| (the norm's output), clamped below at 1e-5;
//     w_j = max over the rows of all those linears of |W_rj|, clamped below at 1e-5;
//     s_j = max(a_j^α / w_j^(1−α), 1e-5);
//   the caller divides the norm weight by s and multiplies the columns of each linear by s
//   (qz_smooth_fold), which leaves the fp32 model unchanged up to rounding.
//   W8: every linear of the blocks (smoothed or not: wo and w_down are not smoothed, as in the
//   reference, which smooths only norm-fed linears) is quantized per output channel, symmetric,
//   absmax: rtn:bits=8:channel:sym (scale = fp16(absmax / 127), codes −127..127, qz_rtn.h).
//   The token embedding and the classifier stay fp32, as the reference keeps them fp16.
#ifndef QZ_SMOOTH_H
#define QZ_SMOOTH_H

#include <stdint.h>

#include "qz_rtn.h"

#define QZ_SMOOTH_MIN 1e-5

// Smoothing factors s (n_in floats, caller-owned) from the activations' per-channel max |x|
// (act_absmax, n_in) and the n_w linears w[k] (rows[k] × n_in, row-major) that share the input.
void qz_smooth_scales(const float *act_absmax, int64_t n_in, const float *const *w, const int64_t *rows,
                      int n_w, double alpha, float *s);

// Folds s: norm[j] /= s[j] (norm may be NULL), and every row of w (rows × n_in) times s.
void qz_smooth_fold(float *norm, float *w, int64_t rows, int64_t n_in, const float *s);

// The W8 weight quantizer: rtn:bits=8:channel:sym of src (rows × cols) into dst (may equal
// src). st may be NULL. Returns qz_fake_quant's code (0, or QP_EINVAL for non-finite weights).
int qz_w8_channel(const float *src, float *dst, int64_t rows, int64_t cols, struct qz_stats *st);

#endif
