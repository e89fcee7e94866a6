// gguf_model.h — a Llama model as GGUF: hx_gguf_model_load (declared in model.h) reads one into
// kn_weights; hx_gguf_model_write writes kn_weights (and a tokenizer) as a GGUF that llama.cpp
// loads, laid out as llama.cpp's llama2.c converter lays it out.
// Depends on kernels/ (qp.h, kn_model.h), harness/gguf.h and harness/tokenizer.h.
#ifndef HX_GGUF_MODEL_H
#define HX_GGUF_MODEL_H

#include "kn_model.h"

struct hx_tok;

// Writes w (tensors F32, F16 or BF16) to path as GGUF v3, atomically. type is KN_F32 or
// KN_F16: the type of every 2-D matrix (norm vectors stay F32, as llama.cpp keeps them).
// tok may be NULL (no tokenizer keys). When w->tied, no output.weight is written.
// Returns 0, QP_EINVAL (bad type, inconsistent weights or vocabulary), QP_ENOTSUP (a source
// tensor of a quantized type), QP_ENOMEM or QP_EIO, with err "cannot write 'PATH': ...".
// Nothing of w or tok is modified or kept.
int hx_gguf_model_write(const struct kn_weights *w, const struct hx_tok *tok, const char *path,
                        int type, char *err);

// Writes w with every tensor in the type it has (a quantized variant: llama.cpp block types,
// f16, f32; norms must be f32), plus general.quantization_version = 2 and the given
// general.file_type (llama.cpp's llama_ftype number). Same errors as above.
int hx_gguf_model_write_as_is(const struct kn_weights *w, const struct hx_tok *tok,
                              const char *path, int file_type, char *err);

#endif
