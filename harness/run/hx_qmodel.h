// hx_qmodel.h — a quantized model (struct hx_quant_model) and the tensor-level steps both of its
// builders share: the data-free driver (hx_variant.c) and the calibrated one (hx_calib.c). The
// dependencies point one way: hx_variant.c → hx_calib.c → this module; this module knows
// neither driver.
//
// Here: what a variant spec resolves to for one tensor (hx_tensor_base, hx_ggml_type_for), a
// tensor read as fp32 rows (hx_tensor_f32), rows packed into llama.cpp blocks (hx_pack_rows),
// one tensor quantized under a data-free base (hx_quant_model_tensor), and the engine options a
// quantized model runs with (hx_quant_model_engine_opts).
// Depends on kernels/ and quantizers/.
#ifndef HX_QMODEL_H
#define HX_QMODEL_H

#include <stdint.h>

#include "kn_model.h"
#include "kn_types.h"
#include "qp.h"

struct kn_engine_opts;
struct qz_base;
struct qz_variant;

struct hx_quant_model {
    struct kn_weights w;  // the quantized model; tensors point into the source or into owned
    uint64_t bytes;       // storage of all 2-D weights as quantized (scales etc. included)
    int64_t n_weights;    // their element count
    double bits_per_weight;
    int act_q8;           // the variant asks for act=q8
    int act_int8;         // the engine's act_int8 option the variant runs with (W8A8), else 0
    float *act_scales;    // act_int8 == KN_ACT_INT8_TENSOR: the engine's act_scales (static
                          // int8 scales, (n_layers, KN_LIN_IN_COUNT)), one of owned; else NULL
    struct qp_owned owned; // buffers w points into (qp_alloc), freed with the model
};

// A new quantized model that starts as src: w a copy of *src with its own layers array (every
// tensor still the source's), act_q8 and act_int8 as v asks. 0 or QP_ENOMEM with err, *out NULL.
int hx_quant_model_begin(const struct kn_weights *src, const struct qz_variant *v,
                         struct hx_quant_model **out, char *err);
// The last step of a builder: w.tied (the classifier is the embedding) and bits_per_weight.
void hx_quant_model_end(struct hx_quant_model *q);
void hx_quant_model_destroy(struct hx_quant_model *q); // NULL is fine

// The engine options q runs with: act_q8, act_int8 and W8A8's static act_scales; the other
// fields of *eo are left as they are.
void hx_quant_model_engine_opts(const struct hx_quant_model *q, struct kn_engine_opts *eo);

// Quantizes one 2-D weight's fp32 rows x (rows × cols) under b into *dst (a copy of the tensor
// struct; its data points into q->owned or at x): f32 (x itself), f16, bf16, rtn, nf4, fp4, a
// llama.cpp type or mix (resolved for `name` and the row length, with importance weights
// mean_sq (cols values, or NULL) unless the type is f16/bf16), or plain per-channel W8
// (smoothquant/w8a8 weights). *scr: the buffer holding x when the caller owns it (taken over, and
// set to NULL, when the result is x), else NULL. Adds the storage to q->bytes, not to
// q->n_weights. 0, QP_ENOTSUP (a calibrated base: gptq, awq), QP_ENOMEM or the quantizer's code,
// with err naming the tensor.
int hx_quant_model_tensor(struct hx_quant_model *q, const struct qz_base *b, const char *name, const float *x,
                          float **scr, int64_t rows, int64_t cols, const double *mean_sq, struct kn_tensor *dst,
                          char *err);

// Keeps the fake-quantized v (rows × cols, from qp_alloc; taken over, freed on failure) as
// *dst: as Q8_0 blocks when that is exact (qz_grid_q8_0_exact with grids, group_cols,
// tensor_grid; grids NULL: never) and the variant runs with fp32 activations (the engine then
// dequantizes the blocks to the same floats: the same bits in 8.5 bits a weight), else as F32.
// 0 or QP_ENOMEM.
struct qz_grid;
// 1 when q's variant runs with fp32 activations, where a fake-quantized tensor's grids let it be
// kept as exact Q8_0 (hx_quant_model_keep_f32); builders skip the grids otherwise.
int hx_quant_model_wants_grids(const struct hx_quant_model *q);
int hx_quant_model_keep_f32(struct hx_quant_model *q, float *v, const struct qz_grid *grids, int64_t group_cols,
                            int tensor_grid, int64_t rows, int64_t cols, struct kn_tensor *dst);

// Packs x (rows × cols) as type into a new owned buffer of q (imatrix: NULL or cols values),
// adds its bytes to q->bytes and points *dst at it. 0, QP_ENOMEM or the quantizer's code.
int hx_quant_model_pack(struct hx_quant_model *q, enum kn_type type, const float *x, int64_t rows, int64_t cols,
                        const float *imatrix, const char *name, struct kn_tensor *dst, char *err);

// ---------------------------------------------------------------------------------------------
// What a variant means for one tensor

// 1 when v needs calibration data: a gptq, awq or smoothquant base or rule, a w8a8:act=tensor
// base (its static activation scales), or ';imatrix'. Plain w8a8 (act=token) needs none.
int hx_variant_needs_calib(const struct qz_variant *v);
// The engine's act_int8 option v runs with (kn_engine.h): KN_ACT_INT8_TOKEN for smoothquant and
// w8a8 with act=token, KN_ACT_INT8_TENSOR with act=tensor (the quantized model then carries the
// static scales in act_scales), else KN_ACT_INT8_OFF.
int hx_variant_act_int8(const struct qz_variant *v);

// The base format tensor `name` (cols per row) gets under v: rules and keep= applied, a
// llama.cpp mix resolved to its per-tensor type, and the block fallback for rows the block does
// not divide (QZ_GGML with the final type, or QZ_F16 when the fallback is f16). Plain data.
void hx_tensor_base(const struct qz_variant *v, const char *name, const struct kn_weights *w, int64_t cols,
                    struct qz_base *out);

// The llama.cpp type a QZ_GGML or QZ_GGML_MIX base gives tensor `name` (rows of cols values):
// the mix's per-tensor type, then the block fallback (qz_mix.h). w: the model (its layer count;
// whether it stores a classifier; Phi-3's fused tensors, whose parts get the fused tensor's type).
enum kn_type hx_ggml_type_for(const struct qz_base *b, const char *name, const struct kn_weights *w, int64_t cols);

// Packs rows × cols fp32 values x as `type` (f16, bf16 or a llama.cpp block type; imatrix NULL or
// cols importances) into out (rows × kn_row_bytes(type, cols) bytes, caller-owned). 0 or the
// quantizer's QP_E* code.
int hx_pack_rows(enum kn_type type, const float *x, int64_t rows, int64_t cols, const float *imatrix, void *out);

// t as fp32 rows (ne1 rows of ne0): t's own data when it is F32 (*owned = NULL), else a
// dequantized copy in *owned, which the caller frees with qp_free. 0, QP_ENOTSUP or QP_ENOMEM.
int hx_tensor_f32(const struct kn_tensor *t, const float **rows, float **owned);
// The same into a caller's scratch *buf of *cap floats, grown (qp_alloc; the caller frees it) when
// the tensor does not fit: a loop over many tensors then zeroes fresh pages once, not per tensor.
// *rows is t's own data when F32. 0, QP_ENOTSUP or QP_ENOMEM.
int hx_tensor_f32_buf(const struct kn_tensor *t, const float **rows, float **buf, size_t *cap);

// llama.cpp's general.file_type (llama_ftype) for a llama.cpp-format base; 0 otherwise.
int hx_llama_ftype(const struct qz_base *b);

#endif
