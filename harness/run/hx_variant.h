// variant.h — a model quantized under one variant spec: every 2-D weight replaced by what the
// spec says for it (qz_variant_for_tensor): fp32 kept, fake-quantized fp32 (f16, bf16, rtn,
// nf4, fp4), or packed llama.cpp blocks (q8_0 … q6_k, iq4_nl, and the mixes' per-tensor types,
// with the block fallback of qz_mix.h). Norm vectors stay fp32, as llama.cpp keeps them.
//
// The embedding and the classifier are quantized as two tensors even when the source ties them
// (so the mixes treat the model as one with an output.weight, as llama.cpp's conversion of a
// tied llama2.c model has).
// Depends on kernels/ and quantizers/.
#ifndef HX_VARIANT_H
#define HX_VARIANT_H

#include <stdint.h>

#include "kn_model.h"
#include "hx_model.h" // hx_tensor_name, hx_weight_refs

struct qz_variant;

struct hx_quant_model {
    struct kn_weights w;  // the quantized model; tensors point into src or into owned buffers
    uint64_t bytes;       // storage of all 2-D weights as quantized (scales etc. included)
    int64_t n_weights;    // their element count
    double bits_per_weight;
    int act_q8;           // the variant asks for act=q8
    int act_int8;         // the engine's act_int8 option the variant runs with (W8A8), else 0
    float *act_scales;    // act_int8 == KN_ACT_INT8_TENSOR: the engine's act_scales (static
                          // int8 scales, (n_layers, KN_LIN_IN_COUNT)), one of owned; else NULL
    void **owned;
    int n_owned, cap_owned;
};

// Quantizes src (any readable types) under v. src must outlive the result. 0, or QP_ENOTSUP
// (a method that needs calibration, a type qprobe cannot write) / QP_ENOMEM, with err.
// Plain w8a8 (act=token) needs no calibration and is done here: every block linear W8
// (qz_w8_channel), embedding and classifier fp32 unless a name~ rule says otherwise, act_int8 =
// KN_ACT_INT8_TOKEN; a smoothquant or w8a8 base in a name~ rule gives QP_ENOTSUP.
int hx_quant_model_create(const struct kn_weights *src, const struct qz_variant *v,
                          struct hx_quant_model **out, char *err);
void hx_quant_model_destroy(struct hx_quant_model *q);

// The same with calibration data (harness/run/hx_calib.h): gptq, awq and smoothquant bases and rules,
// and llama.cpp types with ';imatrix', are quantized by hx_calib_quantize; any other variant
// goes to hx_quant_model_create (cal may then be NULL). A variant that needs calibration with
// cal == NULL gives QP_EINVAL. smoothquant and w8a8 variants run with the engine options
// act_int8 and act_scales the result carries. src must outlive the result. 0 or QP_E* with err.
struct hx_calib;
int hx_quant_model_create_calib(const struct kn_weights *src, const struct qz_variant *v,
                                const struct hx_calib *cal, struct hx_quant_model **out, char *err);



// The base format tensor `name` (cols per row) gets under v: rules and keep= applied, a
// llama.cpp mix resolved to its per-tensor type, and the block fallback for rows the block does
// not divide (QZ_GGML with the final type, or QZ_F16 when the fallback is f16). Plain data.
struct qz_base;
struct kn_weights;
void hx_tensor_base(const struct qz_variant *v, const char *name, const struct kn_weights *w, int64_t cols,
                    struct qz_base *out);

// The llama.cpp type a QZ_GGML or QZ_GGML_MIX base gives tensor `name` (rows of cols values):
// the mix's per-tensor type, then the block fallback (qz_mix.h).
// w: the model (its layer count; whether it stores a classifier; Phi-3's fused tensors, whose
// parts get the fused tensor's type).
int hx_ggml_type_for(const struct qz_base *b, const char *name, const struct kn_weights *w, int64_t cols);

// Packs rows × cols fp32 values x as `type` (f16, bf16 or a llama.cpp block type; imatrix NULL or
// cols importances) into out (rows × kn_row_bytes(type, cols) bytes, caller-owned). 0 or the
// quantizer's QP_E* code.
int hx_pack_rows(int type, const float *x, int64_t rows, int64_t cols, const float *imatrix, void *out);

// t as fp32 rows (ne1 rows of ne0): t's own data when it is F32 (*owned = NULL), else a
// dequantized copy in *owned, which the caller frees with qp_free. 0, QP_ENOTSUP or QP_ENOMEM.
int hx_tensor_f32(const struct kn_tensor *t, const float **rows, float **owned);

// llama.cpp's general.file_type (llama_ftype) for a llama.cpp-format base; 0 otherwise.
struct qz_base;
int hx_llama_ftype(const struct qz_base *b);

#endif
