// qz_qat.h — the quantizer side of quantization-aware training (QAT): the `qat:` spec, and the
// learnable grid one weight tensor is fake-quantized on during training, with the straight-through
// estimator (STE) for the weights and LSQ-style gradients for the per-group scales (and the
// per-group minimum of q4_1/q5_1). The training loop is harness/run/hx_qat.h; the backward pass
// of the model is kernels/kn_train.h.
//
// Depends on kernels/ (qp.h, kn_types.h, kn_blocks.h), quantizers/ (qz_spec.h, qz_rtn.h,
// qz_ggml.h) and libc; never on harness/.
//
// Spec (qz_spec.h's grammar):
//   qat:bits=B:group=G[:asym]  qprobe's RTN grid (qz_rtn.h): B = 2..8, groups of G along a row
//                              (a partial last group of its own), symmetric by default
//   qat:TYPE                   a llama.cpp legacy block type: q4_0 q4_1 q5_0 q5_1 q8_0 (blocks of
//                              32; the k-quants' two-level scales and iq4_nl's table are not
//                              trained: refused by name)
//   options, any order:  steps=N (>= 1, default QZ_QAT_DEFAULT_STEPS), lr=X (> 0, default
//                        QZ_QAT_DEFAULT_LR), init=rtn|gptq (default rtn), seed=S (default 1),
//                        ce=X (>= 0, default 0: weight of next-token cross-entropy next to the KL)
//   Printed canonically with every option: qat:bits=3:group=32:asym:steps=300:lr=0.0005:init=rtn:seed=1:ce=0
//   A `qat:` base is whole-model: refused in a name~ rule.
//
// The grid of one group (g = a group of G consecutive weights of a row, or a 32-weight block):
//   q = clamp(round((w − m) / s) + z, qmin, qmax),   w' = (q − z) · s + m
// with round half away from zero (roundf, as qz_rtn); z an integer fixed at initialisation
// (RTN asym: the zero-point; q4_0: 8, q5_0: 16; else 0); s learnable; m learnable for q4_1 and
// q5_1 and 0 otherwise. (q − z)·s is evaluated as qz_grid_value and ggml's dequantizers do, so a
// group whose s (and m) are fp16-representable reproduces the packed format bit for bit.
// Initialisation: RTN grids from qz_rtn_group_grid (the scale rtn: uses); llama.cpp types from
// llama.cpp's own quantizer (qz_quantize_row, no imatrix): its block d (and m) read back.
//
// Gradients (g_w' = dL/dw' from the model's backward):
//   weights, STE: dL/dw = g_w' where the code is not clamped, 0 where it is ("clipped weights get
//     zero gradient");
//   scale, LSQ (Esser et al. 2020, eq. 3, without its 1/sqrt(N·qmax) gradient scale — Adam
//     normalises the gradient's magnitude anyway): dL/ds = Σ_g g_w' · ((q − z) − (w − m)/s)
//     inside the range, g_w' · (q − z) where clamped;
//   minimum: dL/dm = Σ_g g_w' over the clamped weights (inside, w' ≈ w does not depend on m).
//   Sums per group in fp64, in element order.
// After training, s and m are rounded to fp16 (stored formats keep them so) and the final values
// computed with them; an RTN scale is kept > 0 during training (a non-positive one is set to
// QZ_QAT_MIN_SCALE).
#ifndef QZ_QAT_H
#define QZ_QAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "qz_spec.h"

enum qz_qat_init { QZ_QAT_INIT_RTN, QZ_QAT_INIT_GPTQ };

#define QZ_QAT_DEFAULT_STEPS 300
#define QZ_QAT_DEFAULT_LR 0.0005
#define QZ_QAT_DEFAULT_SEED 1
#define QZ_QAT_MIN_SCALE 6e-8f // about fp16's smallest subnormal
#define QZ_QAT_PRINT_MAX 192   // the longest canonical qat: base, with its NUL
#define QZ_QAT_MAX_STEPS 100000000

// Parses the options of a `qat:` base (opts[0..n), split on ':' already) into b; in_rule refuses.
// 0, or QP_EINVAL with the reason (one line, naming the field) in why (why_cap bytes).
int qz_qat_parse(char *const *opts, int n, bool in_rule, struct qz_base *b, char *why, size_t why_cap);
// The canonical string of a QZ_QAT base into buf (cap >= QZ_QAT_PRINT_MAX is always enough).
void qz_qat_print(const struct qz_base *b, char *buf, size_t cap);
// The RTN base (QZ_RTN) with a QAT base's grid, for the tensors trained on an RTN grid; the
// llama.cpp base (QZ_GGML) for a qat:TYPE. Plain data.
struct qz_base qz_qat_ptq_base(const struct qz_base *b);
// 1 when rows of cols weights can be trained on b's grid (llama.cpp types: cols a multiple of 32).
int qz_qat_fits(const struct qz_base *b, int64_t cols);

// ---------------------------------------------------------------------------------------------
// One tensor's grid

struct qz_qat_grid {
    int64_t rows, cols, group, gpr; // gpr = groups per row = ceil(cols / group)
    int type;          // enum kn_type of a llama.cpp target, or -1 for the RTN grid
    int qmin, qmax;
    float *scale;      // s per group (rows · gpr), row-major
    float *zero;       // z per group (integers as floats)
    float *min;        // m per group for q4_1/q5_1, else NULL
};

// Fits the initial grid of b (a QZ_QAT base that qz_qat_fits) to w (rows × cols, row-major).
// 0, QP_EINVAL (a non-finite weight) or QP_ENOMEM; deinit with qz_qat_grid_deinit either way.
int qz_qat_grid_init(struct qz_qat_grid *g, const struct qz_base *b, const float *w, int64_t rows, int64_t cols);
void qz_qat_grid_deinit(struct qz_qat_grid *g);
// Groups in the tensor (rows · gpr): the length of scale, zero, min.
static inline int64_t qz_qat_n_groups(const struct qz_qat_grid *g) { return g->rows * g->gpr; }

// out = w' (rows × cols) for the latent weights w under the current grid. Rows [r0, r1).
void qz_qat_fake(const struct qz_qat_grid *g, const float *w, float *out, int64_t r0, int64_t r1);
// The same values of rows [r0, r1) of the whole tensor w, written compactly: row r at
// out + (r − r0) · cols (training computes them per tensor or per token row, kernels/kn_train.h).
void qz_qat_fake_rows(const struct qz_qat_grid *g, const float *w, int64_t r0, int64_t r1, float *out);
// The gradients above for rows [r0, r1): dw = STE gradient (overwritten), dscale and dmin (per
// group, may be NULL; dmin ignored without min) overwritten for those rows' groups.
void qz_qat_grad(const struct qz_qat_grid *g, const float *w, const float *dout, float *dw, float *dscale,
                 float *dmin, int64_t r0, int64_t r1);
// Keeps RTN scales > 0 (after an optimizer step).
void qz_qat_project(struct qz_qat_grid *g);
// Rounds scales and minima to fp16 (clamped to ±65504), what the stored format holds.
void qz_qat_round_fp16(struct qz_qat_grid *g);
// Packs w' of a llama.cpp grid (after qz_qat_round_fp16) as blocks of g->type into out
// (rows × kn_row_bytes(type, cols) bytes); dequantizing them gives qz_qat_fake's values bit for bit.
void qz_qat_pack(const struct qz_qat_grid *g, const float *w, void *out);
// Weights whose code is clamped (the STE's zero-gradient set), over the whole tensor.
int64_t qz_qat_count_clipped(const struct qz_qat_grid *g, const float *w);

#endif
