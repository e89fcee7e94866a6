// test_qz_mix.c — the mixes' per-tensor types and the fallback against llama.cpp's own files:
// golden/ppl/stories260K-Q4_K_M.gguf was written by llama-quantize Q4_K_M itself, and the
// "*_ffndownF16" files document the f16 last resort (see golden/ppl/README.md).
#include "hx_gguf.h"
#include "kn_types.h"
#include "qp.h"
#include "qp_test.h"
#include "qz_mix.h"

static struct hx_gguf *open_golden(const char *rel) {
    char err[QP_ERRLEN];
    struct hx_gguf *g;
    QP_CHECK_MSG(hx_gguf_open(qpt_fixture(rel), &g, err) == 0, "%s", err);
    return g;
}

QP_TEST(q4_k_m_should_pick_llama_quantize_types_for_every_stories260k_tensor) {
    struct hx_gguf *g = open_golden("golden/ppl/stories260K-Q4_K_M.gguf");
    int checked = 0;
    for (int64_t i = 0; i < hx_gguf_n_tensors(g); i++) {
        const struct hx_gguf_tensor *t = hx_gguf_tensor(g, i);
        if (t->n_dims != 2) continue;
        // stories260K's GGUF has an output.weight (a copy of the embedding)
        int want = qz_fallback_type(qz_mix_type(QZ_MIX_Q4_K_M, t->name, 5, 1), t->ne[0]);
        QP_CHECK_MSG(want == t->type, "%s: picked %s, llama-quantize wrote %s", t->name,
                     kn_type_info(want)->name, kn_type_info(t->type)->name);
        checked++;
    }
    QP_CHECK_INT_EQ(checked, 2 + 5 * 7);
    hx_gguf_close(g);
}

QP_TEST(q4_0_rules_file_should_equal_pure_q4_0_with_output_at_q6_k_and_fallback) {
    struct hx_gguf *g = open_golden("golden/ppl/stories260K-Q4_0_rules_ffndownF16.gguf");
    for (int64_t i = 0; i < hx_gguf_n_tensors(g); i++) {
        const struct hx_gguf_tensor *t = hx_gguf_tensor(g, i);
        if (t->n_dims != 2) continue;
        int want = strcmp(t->name, "output.weight") == 0 ? KN_Q6_K : KN_Q4_0;
        want = qz_fallback_type(want, t->ne[0]);
        QP_CHECK_MSG(want == t->type, "%s: %s vs %s", t->name, kn_type_info(want)->name, kn_type_info(t->type)->name);
    }
    hx_gguf_close(g);
}

QP_TEST(fallback_should_follow_llama_cpp_chain_then_f16) {
    QP_CHECK_INT_EQ(qz_fallback_type(KN_Q4_K, 256), KN_Q4_K);
    QP_CHECK_INT_EQ(qz_fallback_type(KN_Q4_K, 64), KN_Q5_0);
    QP_CHECK_INT_EQ(qz_fallback_type(KN_Q5_K, 96), KN_Q5_1);
    QP_CHECK_INT_EQ(qz_fallback_type(KN_Q6_K, 64), KN_Q8_0);
    QP_CHECK_INT_EQ(qz_fallback_type(KN_Q3_K, 64), KN_IQ4_NL);
    QP_CHECK_INT_EQ(qz_fallback_type(KN_Q2_K, 32), KN_IQ4_NL);
    QP_CHECK_INT_EQ(qz_fallback_type(KN_Q6_K, 172), KN_F16);
    QP_CHECK_INT_EQ(qz_fallback_type(KN_Q4_0, 172), KN_F16);
    QP_CHECK_INT_EQ(qz_fallback_type(KN_Q8_0, 4096), KN_Q8_0);
}

QP_TEST(mixes_should_follow_use_more_bits_over_32_layers) {
    // use_more_bits(i, 32): i < 4, i >= 28, or (i - 4) % 3 == 2
    char name[64];
    int more = 0;
    for (int i = 0; i < 32; i++) {
        snprintf(name, sizeof name, "blk.%d.ffn_down.weight", i);
        int t = qz_mix_type(QZ_MIX_Q4_K_M, name, 32, 1);
        int want_more = i < 4 || i >= 28 || (i - 4) % 3 == 2;
        QP_CHECK_INT_EQ(t, want_more ? KN_Q6_K : KN_Q4_K);
        more += want_more;
        snprintf(name, sizeof name, "blk.%d.attn_v.weight", i);
        QP_CHECK_INT_EQ(qz_mix_type(QZ_MIX_Q3_K_M, name, 32, 1), i < 2 ? KN_Q5_K : KN_Q4_K);
        snprintf(name, sizeof name, "blk.%d.ffn_down.weight", i);
        QP_CHECK_INT_EQ(qz_mix_type(QZ_MIX_Q3_K_M, name, 32, 1), i < 2 ? KN_Q5_K : KN_Q4_K);
        snprintf(name, sizeof name, "blk.%d.attn_output.weight", i);
        QP_CHECK_INT_EQ(qz_mix_type(QZ_MIX_Q3_K_M, name, 32, 1), KN_Q4_K);
        QP_CHECK_INT_EQ(qz_mix_type(QZ_MIX_Q5_K_M, name, 32, 1), KN_Q5_K);
    }
    QP_CHECK_INT_EQ(more, 4 + 4 + 8);
    QP_CHECK_INT_EQ(qz_mix_type(QZ_MIX_Q5_K_M, "output.weight", 32, 1), KN_Q6_K);
    QP_CHECK_INT_EQ(qz_mix_type(QZ_MIX_Q5_K_M, "token_embd.weight", 32, 1), KN_Q5_K);
    QP_CHECK_INT_EQ(qz_mix_type(QZ_MIX_Q5_K_M, "token_embd.weight", 32, 0), KN_Q6_K);
}
