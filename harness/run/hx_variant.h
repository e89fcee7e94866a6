// hx_variant.h — a model quantized under one variant spec: every 2-D weight replaced by what the
// spec says for it (qz_variant_for_tensor): fp32 kept, fake-quantized fp32 (f16, bf16, rtn,
// nf4, fp4), or packed llama.cpp blocks (q8_0 … q6_k, iq4_nl, and the mixes' per-tensor types,
// with the block fallback of qz_mix.h). Norm vectors stay fp32, as llama.cpp keeps them.
//
// The embedding and the classifier are quantized as two tensors even when the source ties them
// (so the mixes treat the model as one with an output.weight, as llama.cpp's conversion of a
// tied llama2.c model has).
//
// The data-free driver lives here; variants that need calibration data go to hx_calib.c's
// driver. Both fill the one result, struct hx_quant_model (hx_qmodel.h).
// Depends on kernels/, quantizers/, harness/io/hx_model.h, harness/run/hx_calib.h and
// harness/run/hx_qmodel.h.
#ifndef HX_VARIANT_H
#define HX_VARIANT_H

#include "hx_qmodel.h"

struct hx_calib;
struct qz_variant;

// Quantizes src (any readable types) under v. src must outlive the result. 0, or QP_ENOTSUP
// (a method that needs calibration, a type qprobe cannot write) / QP_ENOMEM, with err.
// Plain w8a8 (act=token) needs no calibration and is done here: every block linear W8
// (qz_w8_channel), embedding and classifier fp32 unless a name~ rule says otherwise, act_int8 =
// KN_ACT_INT8_TOKEN; a smoothquant or w8a8 base in a name~ rule gives QP_ENOTSUP.
int hx_quant_model_create(const struct kn_weights *src, const struct qz_variant *v,
                          struct hx_quant_model **out, char *err);

// The same with calibration data (harness/run/hx_calib.h): gptq, awq and smoothquant bases and
// rules, and llama.cpp types with ';imatrix', are quantized by hx_calib_quantize; any other
// variant goes to hx_quant_model_create (cal may then be NULL). A variant that needs calibration
// with cal == NULL gives QP_EINVAL. smoothquant and w8a8 variants run with the engine options
// act_int8 and act_scales the result carries. src must outlive the result. 0 or QP_E* with err.
int hx_quant_model_create_calib(const struct kn_weights *src, const struct qz_variant *v,
                                const struct hx_calib *cal, struct hx_quant_model **out, char *err);

// Which variants are the same model: SHA-256 (hex) over every 2-D weight of w in hx_weight_refs
// order (its type, shape and bytes as the engine reads them) and the activation quantization the
// engine runs it with (act_q8, act_int8 and, for KN_ACT_INT8_TENSOR, the act_scales). Two
// variants with equal digests compute the same numbers: the report draws them once.
void hx_weights_digest(const struct kn_weights *w, int act_q8, int act_int8, const float *act_scales,
                       char hex[65]);

#endif
