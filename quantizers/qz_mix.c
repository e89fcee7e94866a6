// qz_mix.c — llama.cpp's per-tensor type choice for the k-quant mixes, and the fallback for
// rows that do not fit a block (qz_mix.h). Depends on kernels/kn_types.h only.
#include "qz_mix.h"

#include <stdio.h>
#include <string.h>

#include "kn_types.h"

static int qz_use_more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

static int qz_mix_base(enum qz_mix mix) {
    switch (mix) {
    case QZ_MIX_Q3_K_M: return KN_Q3_K;
    case QZ_MIX_Q4_K_M: return KN_Q4_K;
    case QZ_MIX_Q5_K_M: return KN_Q5_K;
    default: return -1;
    }
}

int qz_mix_type(enum qz_mix mix, const char *name, int n_layers, int has_output) {
    int base = qz_mix_base(mix);
    if (base < 0) return -1;
    int layer = -1;
    sscanf(name, "blk.%d.", &layer);
    if (strcmp(name, "output.weight") == 0 || (!has_output && strcmp(name, "token_embd.weight") == 0))
        return KN_Q6_K; // the "row does not fit a k-block → q8_0" case is the fallback below
    if (layer < 0) return base;
    if (strstr(name, "attn_v.weight")) {
        if (mix == QZ_MIX_Q3_K_M) return layer < 2 ? KN_Q5_K : KN_Q4_K;
        return qz_use_more_bits(layer, n_layers) ? KN_Q6_K : base;
    }
    if (strstr(name, "ffn_down")) {
        if (mix == QZ_MIX_Q3_K_M) return layer < n_layers / 16 ? KN_Q5_K : KN_Q4_K;
        return qz_use_more_bits(layer, n_layers) ? KN_Q6_K : base;
    }
    if (strstr(name, "attn_output.weight") && mix == QZ_MIX_Q3_K_M) return KN_Q4_K;
    if (strstr(name, "attn_qkv.weight")) // Phi-3's fused q/k/v
        return mix == QZ_MIX_Q3_K_M ? KN_Q4_K : mix == QZ_MIX_Q4_K_M ? KN_Q5_K : KN_Q6_K;
    return base;
}

int qz_fallback_type(int type, int64_t ne0) {
    const struct kn_type_info *t = kn_type_info(type);
    if (!t || ne0 % t->block_size == 0) return type;
    int next;
    switch (type) {
    case KN_Q2_K:
    case KN_Q3_K: next = KN_IQ4_NL; break;
    case KN_Q4_K: next = KN_Q5_0; break;
    case KN_Q5_K: next = KN_Q5_1; break;
    case KN_Q6_K: next = KN_Q8_0; break;
    default: return KN_F16;
    }
    return ne0 % kn_type_info(next)->block_size == 0 ? next : KN_F16;
}
