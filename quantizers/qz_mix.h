// qz_mix.h — which llama.cpp block type each tensor gets: the k-quant mixes (q3_k_m, q4_k_m,
// q5_k_m) as llama.cpp's llama-quantize chooses per tensor, and the fallback for rows whose
// length is not a multiple of the type's block.
//
// The mixes reproduce llama-quantize's rules (commit c392e50) for the llama architecture
// without experts; tensors are visited in numeric layer order there, so "layer i" below is the
// block index. use_more_bits(i, n) = i < n/8 || i >= 7n/8 || (i - n/8) % 3 == 2.
//   output.weight (and token_embd when there is no output):  q8_0 if the row does not fit a
//                                                             k-block, else q6_k
//   attn_v:    q3_k_m: q5_k for the first two layers, else q4_k;
//              q4_k_m / q5_k_m: q6_k where use_more_bits, else the mix's base type
//   ffn_down:  q3_k_m: q5_k for i < n/16, else q4_k; q4_k_m / q5_k_m: q6_k where use_more_bits
//   attn_output: q3_k_m: q4_k
//   attn_qkv (Phi-3's fused q/k/v): q3_k_m: q4_k, q4_k_m: q5_k, q5_k_m: q6_k
//   everything else: the base type (q3_k, q4_k, q5_k)
// (llama.cpp's other per-architecture rules concern Falcon, experts and the 70B attn_v, none of
// which qprobe loads.)
// Fallback (qz_fallback_type): a type whose block does not divide the row goes, as llama.cpp's
// chain goes, q2_k/q3_k → iq4_nl, q4_k → q5_0, q5_k → q5_1, q6_k → q8_0; when that does not
// fit either, or for the legacy 32-blocks (which llama.cpp refuses), f16 — the choice the
// golden stories260K "*_ffndownF16" files document. Depends on kernels/kn_types.h and
// quantizers/qz_spec.h.
#ifndef QZ_MIX_H
#define QZ_MIX_H

#include <stdint.h>

#include "qz_spec.h" // enum qz_mix

// The block type (enum kn_type) the mix picks for a 2-D tensor called name (GGUF naming,
// "blk.3.attn_v.weight"), before the fallback. has_output: the model has its own output.weight.
int qz_mix_type(enum qz_mix mix, const char *name, int n_layers, int has_output);

// type if its block divides ne0, else the fallback described above.
int qz_fallback_type(int type, int64_t ne0);

#endif
