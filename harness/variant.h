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

struct qz_variant;

struct hx_quant_model {
    struct kn_weights w;  // the quantized model; tensors point into src or into owned buffers
    uint64_t bytes;       // storage of all 2-D weights as quantized (scales etc. included)
    int64_t n_weights;    // their element count
    double bits_per_weight;
    int act_q8;           // the variant asks for act=q8
    void **owned;
    int n_owned, cap_owned;
};

// Quantizes src (any readable types) under v. src must outlive the result. 0, or QP_ENOTSUP
// (a method that needs calibration, a type qprobe cannot write) / QP_ENOMEM, with err.
int hx_quant_model_create(const struct kn_weights *src, const struct qz_variant *v,
                          struct hx_quant_model **out, char *err);
void hx_quant_model_destroy(struct hx_quant_model *q);

// The GGUF name of each 2-D weight, for rules and reports: "token_embd.weight", "output.weight",
// "blk.L.attn_q.weight", ... (buf of at least 64 bytes).
void hx_tensor_name(char *buf, size_t cap, int layer, const char *what);

// llama.cpp's general.file_type (llama_ftype) for a llama.cpp-format base; 0 otherwise.
struct qz_base;
int hx_llama_ftype(const struct qz_base *b);

#endif
