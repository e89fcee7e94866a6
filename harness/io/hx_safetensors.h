// safetensors.h — Hugging Face safetensors (+ config.json) reading and writing for
// LlamaForCausalLM checkpoints.
//
// Reading fills a kn_weights (hx_safetensors_load, declared in hx_model_load.h). Q and K projection rows are
// permuted from Hugging Face's rotate-half order into the interleaved-pairs order the engine and
// GGUF use; writing applies the inverse permutation. config.json is parsed with cJSON.
// Depends on kernels/, harness/io/hx_model.h.
#ifndef HX_SAFETENSORS_H
#define HX_SAFETENSORS_H

#include "kn_model.h"

// Writes dir/model.safetensors and dir/config.json for w (F32 tensors written as `type`:
// KN_F32, KN_F16 or KN_BF16). Files are written atomically. 0 or a QP_E* code with err.
int hx_safetensors_write(const struct kn_weights *w, const char *dir, enum kn_type type, char *err);

// Row permutation between the two RoPE layouts for one projection of n_head heads of
// head_size rows each (rows of n_in floats). to_hf != 0: interleaved → rotate-half.
void hx_permute_qk(float *dst, const float *src, int n_head, int head_size, int n_in, int to_hf);

#endif
