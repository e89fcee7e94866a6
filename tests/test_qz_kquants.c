// test_qz_kquants.c — the k-quants (quantizers/qz_kquants.c, kernels/kn_dequant_k.c,
// kernels/kn_vecdot_k.c) against llama.cpp's own output in golden/quant/:
//  - quantizing every 2-D tensor of synth256-F32.gguf gives the bytes of synth256-<T>.gguf
//    (llama-quantize --pure, no imatrix), edge-case rows included;
//  - dequantizing those files gives llama.cpp's float32 bit for bit;
//  - the Q8_K activation quantizer and the reference dot products agree with a float
//    reference within a stated tolerance;
//  - the imatrix path lowers the imatrix-weighted error;
//  - the AVX2 scale/min search (quantizers/qz_kquants_avx2.c) gives the scalar reference's
//    scale, min and quants on every kind of block, and whole tensors quantize to the same bytes
//    with QPROBE_ISA=ref and without (the golden cases above run whichever path the CPU gets).
#include <ctype.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hx_gguf.h"
#include "kn_blocks_k.h"
#include "kn_ops.h"
#include "kn_types.h"
#include "qp.h"
#include "qp_test.h"
#include "qz_kquants.h"
#include "qz_kquants_simd.h"

#define SYNTH_F32 "golden/quant/synth256-F32.gguf"
#define EDGE_TENSOR "blk.1.attn_k.weight"

static const int k_types[] = {KN_Q2_K, KN_Q3_K, KN_Q4_K, KN_Q5_K, KN_Q6_K};

// ---------------------------------------------------------------------------------------------
// Helpers

static uint64_t rng_state = 0x2545f4914f6cdd1dull;
static float frand(void) { // uniform in [-1, 1)
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 40) * (1.0 / 8388608.0)) - 1.0f;
}

// "Q4_K" for KN_Q4_K: the spelling of the fixture file names.
static const char *upper_name(int type) {
    static char buf[16];
    const char *s = kn_type_info(type)->name;
    size_t i = 0;
    for (; s[i] && i + 1 < sizeof buf; i++) buf[i] = (char)toupper((unsigned char)s[i]);
    buf[i] = 0;
    return buf;
}

static struct hx_gguf *open_fixture(const char *rel) {
    char err[QP_ERRLEN];
    struct hx_gguf *g = NULL;
    int rc = hx_gguf_open(qpt_fixture(rel), &g, err);
    QP_CHECK_MSG(rc == 0, "%s", err);
    return g;
}

static struct hx_gguf *open_golden(int type) {
    char rel[128];
    snprintf(rel, sizeof rel, "golden/quant/synth256-%s.gguf", upper_name(type));
    return open_fixture(rel);
}

static const struct hx_gguf_tensor *need_tensor(const struct hx_gguf *g, const char *name, int type) {
    const struct hx_gguf_tensor *t = hx_gguf_find_tensor(g, name);
    QP_CHECK_MSG(t != NULL, "tensor '%s' missing from '%s'", name, hx_gguf_path(g));
    QP_CHECK_MSG(t->type == type, "tensor '%s' in '%s' has type %d, want %d", name,
                 hx_gguf_path(g), t->type, type);
    return t;
}

// Names the block field holding byte `off` of a block of `type`, e.g. "scales[5]".
struct field { const char *name; size_t off, size; };
#define FIELD(T, f) {#f, offsetof(struct T, f), sizeof(((struct T *)0)->f)}
static const struct field fields_q2[] = {FIELD(kn_block_q2_K, scales), FIELD(kn_block_q2_K, qs),
                                         FIELD(kn_block_q2_K, d), FIELD(kn_block_q2_K, dmin)};
static const struct field fields_q3[] = {FIELD(kn_block_q3_K, hmask), FIELD(kn_block_q3_K, qs),
                                         FIELD(kn_block_q3_K, scales), FIELD(kn_block_q3_K, d)};
static const struct field fields_q4[] = {FIELD(kn_block_q4_K, d), FIELD(kn_block_q4_K, dmin),
                                         FIELD(kn_block_q4_K, scales), FIELD(kn_block_q4_K, qs)};
static const struct field fields_q5[] = {FIELD(kn_block_q5_K, d), FIELD(kn_block_q5_K, dmin),
                                         FIELD(kn_block_q5_K, scales), FIELD(kn_block_q5_K, qh),
                                         FIELD(kn_block_q5_K, qs)};
static const struct field fields_q6[] = {FIELD(kn_block_q6_K, ql), FIELD(kn_block_q6_K, qh),
                                         FIELD(kn_block_q6_K, scales), FIELD(kn_block_q6_K, d)};

static void field_name(int type, size_t off, char *out, size_t cap) {
    const struct field *f = NULL;
    size_t nf = 0;
    switch (type) {
    case KN_Q2_K: f = fields_q2; nf = QP_ARRAY_LEN(fields_q2); break;
    case KN_Q3_K: f = fields_q3; nf = QP_ARRAY_LEN(fields_q3); break;
    case KN_Q4_K: f = fields_q4; nf = QP_ARRAY_LEN(fields_q4); break;
    case KN_Q5_K: f = fields_q5; nf = QP_ARRAY_LEN(fields_q5); break;
    case KN_Q6_K: f = fields_q6; nf = QP_ARRAY_LEN(fields_q6); break;
    }
    for (size_t i = 0; i < nf; i++)
        if (off >= f[i].off && off < f[i].off + f[i].size) {
            if (f[i].size == 2 && (!strcmp(f[i].name, "d") || !strcmp(f[i].name, "dmin")))
                snprintf(out, cap, "%s (fp16, byte %zu)", f[i].name, off - f[i].off);
            else snprintf(out, cap, "%s[%zu]", f[i].name, off - f[i].off);
            return;
        }
    snprintf(out, cap, "byte %zu", off);
}

// Quantizes rows [r0, r1) of F32 tensor src as `type` and compares them with golden tensor
// dst; on a mismatch fails naming the tensor, row, super-block, field and both byte values,
// plus how many of the rows differ.
static void check_rows(int type, const struct hx_gguf_tensor *src, const struct hx_gguf_tensor *dst,
                       int64_t r0, int64_t r1) {
    const int64_t n = src->ne[0];
    const size_t rb = kn_row_bytes(type, n);
    const size_t bb = kn_type_info(type)->block_bytes;
    QP_CHECK(rb > 0);
    QP_CHECK_INT_EQ(dst->nbytes, rb * (size_t)src->ne[1]);
    uint8_t *q = malloc(rb);
    QP_CHECK(q != NULL);
    int64_t bad_rows = 0, first_row = -1;
    size_t first_byte = 0;
    uint8_t got = 0, want = 0;
    for (int64_t r = r0; r < r1; r++) {
        const float *x = (const float *)src->data + r * n;
        const uint8_t *g = (const uint8_t *)dst->data + (size_t)r * rb;
        QP_CHECK_INT_EQ(qz_quantize_row_k(type, x, q, n, NULL), 0);
        if (memcmp(q, g, rb) == 0) continue;
        if (bad_rows++ == 0) {
            first_row = r;
            for (first_byte = 0; q[first_byte] == g[first_byte]; first_byte++) {}
            got = q[first_byte];
            want = g[first_byte];
        }
    }
    free(q);
    if (bad_rows) {
        char fname[64];
        field_name(type, first_byte % bb, fname, sizeof fname);
        qpt_fail(__FILE__, __LINE__,
                 "%s '%s': %lld of rows %lld..%lld differ; first: row %lld super-block %zu "
                 "field %s: got 0x%02x, llama.cpp 0x%02x",
                 kn_type_info(type)->name, src->name, (long long)bad_rows, (long long)r0,
                 (long long)(r1 - 1), (long long)first_row, first_byte / bb, fname, got, want);
    }
}

// Every 2-D tensor of the F32 source against the golden file of `type`.
static void check_golden_file(int type) {
    struct hx_gguf *f32 = open_fixture(SYNTH_F32);
    struct hx_gguf *gold = open_golden(type);
    int checked = 0;
    for (int64_t i = 0; i < hx_gguf_n_tensors(f32); i++) {
        const struct hx_gguf_tensor *t = hx_gguf_tensor(f32, i);
        if (t->n_dims != 2) continue;
        QP_CHECK_INT_EQ(t->type, KN_F32);
        const struct hx_gguf_tensor *g = need_tensor(gold, t->name, type);
        QP_CHECK(g->ne[0] == t->ne[0] && g->ne[1] == t->ne[1]);
        check_rows(type, t, g, 0, t->ne[1]);
        checked++;
    }
    QP_CHECK_INT_EQ(checked, 16);
    hx_gguf_close(gold);
    hx_gguf_close(f32);
}

// ---------------------------------------------------------------------------------------------
// Layout

QP_TEST(k_blocks_should_have_the_type_table_sizes) {
    QP_CHECK_INT_EQ(sizeof(struct kn_block_q2_K), kn_type_info(KN_Q2_K)->block_bytes);
    QP_CHECK_INT_EQ(sizeof(struct kn_block_q3_K), kn_type_info(KN_Q3_K)->block_bytes);
    QP_CHECK_INT_EQ(sizeof(struct kn_block_q4_K), kn_type_info(KN_Q4_K)->block_bytes);
    QP_CHECK_INT_EQ(sizeof(struct kn_block_q5_K), kn_type_info(KN_Q5_K)->block_bytes);
    QP_CHECK_INT_EQ(sizeof(struct kn_block_q6_K), kn_type_info(KN_Q6_K)->block_bytes);
    QP_CHECK_INT_EQ(sizeof(struct kn_block_q8_K), kn_type_info(KN_Q8_K)->block_bytes);
    for (size_t i = 0; i < QP_ARRAY_LEN(k_types); i++)
        QP_CHECK_INT_EQ(kn_type_info(k_types[i])->block_size, KN_QK_K);
}

QP_TEST(quantize_row_k_should_reject_other_types_and_bad_lengths) {
    float x[512] = {0};
    static uint8_t y[2 * sizeof(struct kn_block_q8_K)];
    QP_CHECK_INT_EQ(qz_quantize_row_k(KN_Q4_0, x, y, 256, NULL), QP_ENOTSUP);
    QP_CHECK_INT_EQ(qz_quantize_row_k(KN_Q8_K, x, y, 256, NULL), QP_ENOTSUP);
    QP_CHECK_INT_EQ(qz_quantize_row_k(KN_F32, x, y, 256, NULL), QP_ENOTSUP);
    QP_CHECK_INT_EQ(qz_quantize_row_k(-1, x, y, 256, NULL), QP_ENOTSUP);
    for (size_t i = 0; i < QP_ARRAY_LEN(k_types); i++) {
        QP_CHECK_INT_EQ(qz_quantize_row_k(k_types[i], x, y, 100, NULL), QP_EINVAL);
        QP_CHECK_INT_EQ(qz_quantize_row_k(k_types[i], x, y, 257, NULL), QP_EINVAL);
        QP_CHECK_INT_EQ(qz_quantize_row_k(k_types[i], x, y, -256, NULL), QP_EINVAL);
        QP_CHECK_INT_EQ(qz_quantize_row_k(k_types[i], x, y, 512, NULL), 0);
        QP_CHECK_INT_EQ(qz_quantize_row_k(k_types[i], x, y, 0, NULL), 0);
    }
    QP_CHECK_INT_EQ(qz_quantize_act_q8_K(x, y, 300), QP_EINVAL);
    QP_CHECK_INT_EQ(qz_quantize_act_q8_K(x, y, 512), 0);
}

// ---------------------------------------------------------------------------------------------
// Byte-exact quantization against llama-quantize

QP_TEST(quantize_q2_K_should_match_llama_quantize_bytes) { check_golden_file(KN_Q2_K); }
QP_TEST(quantize_q3_K_should_match_llama_quantize_bytes) { check_golden_file(KN_Q3_K); }
QP_TEST(quantize_q4_K_should_match_llama_quantize_bytes) { check_golden_file(KN_Q4_K); }
QP_TEST(quantize_q5_K_should_match_llama_quantize_bytes) { check_golden_file(KN_Q5_K); }
QP_TEST(quantize_q6_K_should_match_llama_quantize_bytes) { check_golden_file(KN_Q6_K); }

// The planted edge rows of blk.1.attn_k one by one, so that a failure names the case.
QP_TEST(quantize_k_edge_rows_should_match_llama_quantize_bytes) {
    static const char *what[] = {"zero block", "1e-6 row", "constant row", "single spike",
                                 "alternating +-0.05"};
    struct hx_gguf *f32 = open_fixture(SYNTH_F32);
    const struct hx_gguf_tensor *src = need_tensor(f32, EDGE_TENSOR, KN_F32);
    for (size_t i = 0; i < QP_ARRAY_LEN(k_types); i++) {
        struct hx_gguf *gold = open_golden(k_types[i]);
        const struct hx_gguf_tensor *dst = need_tensor(gold, EDGE_TENSOR, k_types[i]);
        for (int r = 0; r < 5; r++) {
            fprintf(stderr, "%s row %d (%s)\n", kn_type_info(k_types[i])->name, r, what[r]);
            check_rows(k_types[i], src, dst, r, r + 1);
        }
        hx_gguf_close(gold);
    }
    hx_gguf_close(f32);
}

// ---------------------------------------------------------------------------------------------
// Dequantization against llama.cpp's float32

QP_TEST(dequantize_k_should_match_llama_cpp_bit_for_bit) {
    for (size_t i = 0; i < QP_ARRAY_LEN(k_types); i++) {
        const int type = k_types[i];
        struct hx_gguf *gold = open_golden(type);
        const struct hx_gguf_tensor *t = need_tensor(gold, EDGE_TENSOR, type);
        char rel[128];
        snprintf(rel, sizeof rel, "golden/quant/dequant/synth256-%s.%s.f32", upper_name(type), EDGE_TENSOR);
        size_t len = 0;
        float *want = (float *)qpt_read_file(qpt_fixture(rel), &len);
        QP_CHECK_MSG(want != NULL, "cannot read '%s'", rel);
        const int64_t n = t->ne[0], rows = t->ne[1];
        QP_CHECK_INT_EQ(len, (size_t)(n * rows) * sizeof(float));
        float *got = malloc(len);
        QP_CHECK(got != NULL);
        const size_t rb = kn_row_bytes(type, n);
        for (int64_t r = 0; r < rows; r++)
            kn_dequantize_row_k(type, (const uint8_t *)t->data + (size_t)r * rb, got + r * n, n);
        for (int64_t k = 0; k < n * rows; k++)
            QP_CHECK_MSG(memcmp(&got[k], &want[k], sizeof(float)) == 0,
                         "%s '%s' row %lld col %lld: got %.9g (0x%08x), llama.cpp %.9g",
                         kn_type_info(type)->name, EDGE_TENSOR, (long long)(k / n),
                         (long long)(k % n), got[k], *(const uint32_t *)&got[k], want[k]);
        // The 1e-6 row's fp16 scales round to 0 in every k-quant (README).
        for (int64_t k = n; k < 2 * n; k++) QP_CHECK(got[k] == 0.0f);
        free(got);
        free(want);
        hx_gguf_close(gold);
    }
}

// ---------------------------------------------------------------------------------------------
// Q8_K activations and the reference dot products

QP_TEST(quantize_act_q8_K_should_round_to_127_steps_with_block_sums) {
    float x[3 * KN_QK_K];
    for (int i = 0; i < 3 * KN_QK_K; i++) x[i] = frand() * 3.0f;
    x[17] = -7.5f;                                     // block 0: negative absmax
    for (int i = KN_QK_K; i < 2 * KN_QK_K; i++) x[i] = 0; // block 1: all zero
    struct kn_block_q8_K y[3];
    memset(y, 0x5a, sizeof y);
    QP_CHECK_INT_EQ(qz_quantize_act_q8_K(x, y, 3 * KN_QK_K), 0);
    // ggml's iscale is -127/max (max the signed absmax): the absmax maps to +-127 keeping its
    // sign, and d = 1/iscale = -max/127 is negative when max is positive.
    QP_CHECK_INT_EQ(y[0].qs[17], -127);
    QP_CHECK(y[0].d == 1 / (-127.f / -7.5f));
    QP_CHECK(y[0].d > 0);
    QP_CHECK(y[1].d == 0.0f);
    for (int b = 0; b < 3; b++) {
        for (int j = 0; j < 16; j++) {
            int s = 0;
            for (int l = 0; l < 16; l++) s += y[b].qs[16 * j + l];
            QP_CHECK_INT_EQ(y[b].bsums[j], s);
        }
        for (int k = 0; k < KN_QK_K; k++) {
            QP_CHECK(y[b].qs[k] >= -127 && y[b].qs[k] <= 127);
            // Each value is within half a step of the original.
            const float xv = x[b * KN_QK_K + k];
            QP_CHECK(fabsf(y[b].d * y[b].qs[k] - xv) <= 0.5f * fabsf(y[b].d) * 1.0001f + 1e-7f);
        }
    }
    float back[3 * KN_QK_K];
    kn_dequantize_row_k(KN_Q8_K, y, back, 3 * KN_QK_K);
    QP_CHECK(back[17] == y[0].d * -127);
}

// kn_vec_dot_k_ref accumulates in fp32 (per super-block scale products, 8 lane sums, one sum
// per row; see kn_vecdot_k.c), the reference here in double over the dequantized values, which
// are themselves fp32 roundings of d*sc*q - dmin*m and d8*q. Each rounding is at most 2^-24
// relative to the magnitudes involved; with 3 super-blocks a result sees about 20 of them,
// i.e. 1.2e-6 of the magnitude scale S = sum_i |a_i| * (|w_i| + max|w| of its super-block)
// (the second term bounds the mins that Q2_K/Q4_K/Q5_K subtract). The worst case times ~3.
// (Observed: below 3e-8 * S.)
#define KQ_DOT_RTOL 4e-6

QP_TEST(vec_dot_k_should_match_float_reference_within_tolerance) {
    struct hx_gguf *f32 = open_fixture(SYNTH_F32);
    const struct hx_gguf_tensor *w = need_tensor(f32, "blk.0.ffn_down.weight", KN_F32);
    const struct hx_gguf_tensor *a = need_tensor(f32, "blk.1.ffn_down.weight", KN_F32);
    const int64_t n = w->ne[0]; // 768: three super-blocks
    QP_CHECK_INT_EQ(n, 3 * KN_QK_K);
    float *act = malloc((size_t)n * sizeof(float)), *deqw = malloc((size_t)n * sizeof(float));
    float *deqa = malloc((size_t)n * sizeof(float));
    struct kn_block_q8_K *aq = malloc((size_t)(n / KN_QK_K) * sizeof *aq);
    uint8_t *wq = malloc(kn_row_bytes(KN_Q6_K, n));
    QP_CHECK(act && deqw && deqa && aq && wq);
    int checked = 0;
    for (size_t ti = 0; ti < QP_ARRAY_LEN(k_types); ti++) {
        const int type = k_types[ti];
        for (int r = 0; r < 24; r++) {
            const float *x = (const float *)w->data + r * n;
            // activations: a real row (with outlier channels), random values, and a zero block
            for (int64_t k = 0; k < n; k++) {
                const float real = ((const float *)a->data)[(r % 4) * n + k] * 50.0f;
                act[k] = r % 3 == 0 ? real : frand() * (r % 3 == 1 ? 1.0f : 100.0f);
            }
            if (r == 5)
                for (int64_t k = KN_QK_K; k < 2 * KN_QK_K; k++) act[k] = 0;
            QP_CHECK_INT_EQ(qz_quantize_row_k(type, x, wq, n, NULL), 0);
            QP_CHECK_INT_EQ(qz_quantize_act_q8_K(act, aq, n), 0);
            kn_dequantize_row_k(type, wq, deqw, n);
            kn_dequantize_row_k(KN_Q8_K, aq, deqa, n);
            double ref = 0, scale = 0;
            for (int64_t b = 0; b < n; b += KN_QK_K) {
                double wmax = 0;
                for (int k = 0; k < KN_QK_K; k++) wmax = fmax(wmax, fabs(deqw[b + k]));
                for (int k = 0; k < KN_QK_K; k++) {
                    ref += (double)deqw[b + k] * deqa[b + k];
                    scale += fabs(deqa[b + k]) * (fabs(deqw[b + k]) + wmax);
                }
            }
            const float got = kn_vec_dot_k_ref(type, wq, aq, n);
            QP_CHECK_MSG(fabs(got - ref) <= KQ_DOT_RTOL * scale,
                         "%s row %d: dot %.9g, float reference %.9g, |diff| %.3g > %.3g",
                         kn_type_info(type)->name, r, got, ref, fabs(got - ref), KQ_DOT_RTOL * scale);
            checked++;
        }
    }
    QP_CHECK_INT_EQ(checked, 5 * 24);
    free(act);
    free(deqw);
    free(deqa);
    free(aq);
    free(wq);
    hx_gguf_close(f32);
}

// ---------------------------------------------------------------------------------------------
// imatrix

// sum over rows and columns of imatrix[j] * (x - deq(q(x)))^2 for one tensor and type.
static double weighted_error(int type, const struct hx_gguf_tensor *t, const float *imatrix,
                             const float *use_imatrix) {
    const int64_t n = t->ne[0];
    uint8_t *q = malloc(kn_row_bytes(type, n));
    float *deq = malloc((size_t)n * sizeof(float));
    QP_CHECK(q && deq);
    double err = 0;
    for (int64_t r = 0; r < t->ne[1]; r++) {
        const float *x = (const float *)t->data + r * n;
        QP_CHECK_INT_EQ(qz_quantize_row_k(type, x, q, n, use_imatrix), 0);
        kn_dequantize_row_k(type, q, deq, n);
        for (int64_t j = 0; j < n; j++) {
            const double e = (double)x[j] - deq[j];
            err += imatrix[j] * e * e;
        }
    }
    free(q);
    free(deq);
    return err;
}

QP_TEST(imatrix_should_lower_the_imatrix_weighted_error) {
    struct hx_gguf *f32 = open_fixture(SYNTH_F32);
    static const char *names[] = {"blk.0.attn_q.weight", "blk.1.ffn_down.weight"};
    for (size_t ni = 0; ni < QP_ARRAY_LEN(names); ni++) {
        const struct hx_gguf_tensor *t = need_tensor(f32, names[ni], KN_F32);
        const int64_t n = t->ne[0];
        float *im = malloc((size_t)n * sizeof(float));
        QP_CHECK(im != NULL);
        // Importances spread over e^-3..e^3 (a factor of 400), a few channels 100x hotter: the
        // shape real imatrices have (mean squared activations with outlier channels).
        for (int64_t j = 0; j < n; j++) im[j] = expf(3.0f * frand()) * (j % 37 == 5 ? 100.0f : 1.0f);
        for (size_t ti = 0; ti < QP_ARRAY_LEN(k_types); ti++) {
            const int type = k_types[ti];
            const double plain = weighted_error(type, t, im, NULL);
            const double weighted = weighted_error(type, t, im, im);
            fprintf(stderr, "%s %s: weighted error %.6g without imatrix, %.6g with (%.1f%%)\n",
                    kn_type_info(type)->name, names[ni], plain, weighted, 100.0 * weighted / plain);
            QP_CHECK_MSG(weighted < plain, "%s '%s': imatrix error %.9g not below %.9g",
                         kn_type_info(type)->name, names[ni], weighted, plain);
        }
        free(im);
    }
    hx_gguf_close(f32);
}

// ---------------------------------------------------------------------------------------------
// The AVX2 scale/min search against the scalar reference

static void need_avx2(void) {
    if (!kn_ops_for("avx2")) QP_SKIP("this CPU has no avx2");
}

static int irand(int n) { return (int)(0.5f * (frand() + 1.0f) * (float)n) % n; } // 0..n-1

static float gauss(void) { // Box-Muller; 1 - u keeps the log finite
    const float u = 0.5f * (frand() + 1.0f), v = 0.5f * (frand() + 1.0f);
    return sqrtf(-2.0f * logf(1.0f - u)) * cosf(6.2831853f * v);
}

// Student's t with 3 degrees of freedom: the heavy tails of real weight rows.
static float student_t3(void) {
    const float a = gauss(), b = gauss(), c = gauss();
    return gauss() / sqrtf((a * a + b * b + c * c) / 3.0f + 1e-12f);
}

enum block_kind {
    BK_HEAVY, BK_OUTLIERS, BK_EQUAL, BK_TINY, BK_SPARSE, BK_NEGATIVE, BK_POSITIVE, BK_GRID,
    BK_HUGE, BK_UNIFORM, BK_SIGNED_ZEROS, BK_NONFINITE, BK_COUNT
};

// Fills x (n) with one block of a kind, at a random scale from 1e-3 to 1e2. BK_GRID puts values
// on a coarse grid, so that many products land on rounding ties; BK_TINY goes down to
// subnormals, where max - min is so small that iscale overflows; BK_HUGE overflows max - min;
// BK_SIGNED_ZEROS mixes -0.0 and +0.0 (the sign of a zero min reaches the result).
static void fill_block(int kind, int n, float *x) {
    const float scale = powf(10.0f, 5.0f * frand() - 3.0f);
    for (int i = 0; i < n; i++) x[i] = scale * student_t3();
    switch (kind) {
    case BK_OUTLIERS:
        x[irand(n)] *= 30.0f;
        x[0] *= frand() < 0 ? 10.0f : 1.0f;
        break;
    case BK_EQUAL:
        for (int i = 1; i < n; i++) x[i] = x[0];
        break;
    case BK_TINY:
        for (int i = 0; i < n; i++) x[i] *= frand() < 0 ? 1e-30f : 1e-41f;
        break;
    case BK_SPARSE:
        for (int i = 0; i < n; i++) x[i] = frand() < 0.6f ? 0.0f : x[i];
        break;
    case BK_NEGATIVE:
        for (int i = 0; i < n; i++) x[i] = -fabsf(x[i]) - (frand() < 0 ? scale : 0.0f);
        break;
    case BK_POSITIVE:
        for (int i = 0; i < n; i++) x[i] = fabsf(x[i]) + (frand() < 0 ? scale : 0.0f);
        break;
    case BK_GRID:
        for (int i = 0; i < n; i++) x[i] = 0.25f * (float)(int)(8.0f * frand());
        break;
    case BK_HUGE:
        for (int i = 0; i < n; i++) x[i] = 3e38f * frand();
        break;
    case BK_UNIFORM:
        for (int i = 0; i < n; i++) x[i] = scale * frand();
        break;
    case BK_SIGNED_ZEROS:
        for (int i = 0; i < n; i++)
            x[i] = frand() < 0.3f ? (frand() < 0 ? -0.0f : 0.0f) : fabsf(x[i]);
        break;
    case BK_NONFINITE: { // one, two or all three of NaN, +inf, -inf; a NaN's sign varies
        static const float bad[] = {NAN, INFINITY, -INFINITY};
        const int first = irand(3), count = 1 + irand(3);
        for (int j = 0; j < count; j++) x[irand(n)] = bad[(first + j) % 3];
        if (frand() < 0) x[irand(n)] = -NAN;
        break;
    }
    default: break;
    }
}

// The weights the callers pass (Q2_K: |x|; Q4_K/Q5_K: rms + |x|), or a quarter of the time
// random ones with zeros.
static void fill_weights(const float *x, int n, bool use_mad, float *w) {
    if (frand() < -0.5f) {
        for (int i = 0; i < n; i++) w[i] = frand() < -0.6f ? 0.0f : 1.0f + frand();
        return;
    }
    float sum_x2 = 0;
    for (int i = 0; i < n; i++) sum_x2 += x[i] * x[i];
    const float av_x = sqrtf(sum_x2 / (float)n);
    for (int i = 0; i < n; i++) w[i] = use_mad ? fabsf(x[i]) : av_x + fabsf(x[i]);
}

// llama.cpp's three searches (nmax, rmin, nstep; rdelta is 0.1 in all), each tried here with
// both block lengths and both error measures.
struct qkx2_consts {
    const char *name;
    int nmax;
    float rmin;
    int nstep;
};
static const struct qkx2_consts qkx2_searches[] = {
    {"q2_K", 3, -0.5f, 15}, {"q4_K", 15, -1.0f, 20}, {"q5_K", 31, -0.5f, 15}};
#define QKX2_BLOCKS_PER_SETTING 9000 // x 12 settings: 108,000 blocks, about 1 s

// One block of a kind through both searches; fails naming the setting and the difference.
static void check_qkx2_block(const struct qkx2_consts *k, int n, bool use_mad, int b, int kind) {
    float x[32], w[32];
    fill_block(kind, n, x);
    fill_weights(x, n, use_mad, w);
    if (kind == BK_NONFINITE && b % 3 == 0) w[irand(n)] = NAN; // in the weights too
    uint8_t L1[32], L2[32], aux[32];
    memset(L1, 0xA5, sizeof L1);
    memset(L2, 0xA5, sizeof L2);
    float m1 = 1, m2 = 1;
    const float s1 =
        qz_make_qkx2_quants_ref(n, k->nmax, x, w, L1, &m1, aux, k->rmin, 0.1f, k->nstep, use_mad);
    const float s2 =
        qz_make_qkx2_quants_avx2(n, k->nmax, x, w, L2, &m2, aux, k->rmin, 0.1f, k->nstep, use_mad);
    int at = 0;
    while (at < n && L1[at] == L2[at]) at++;
    QP_CHECK_MSG(memcmp(&s1, &s2, 4) == 0 && memcmp(&m1, &m2, 4) == 0 && at == n,
                 "%s n=%d use_mad=%d block %d (kind %d): scale %a vs %a, min %a vs %a, "
                 "first differing quant %d",
                 k->name, n, use_mad, b, kind, s1, s2, m1, m2, at < n ? at : -1);
}

QP_TEST(qkx2_avx2_should_give_the_reference_scale_min_and_quants) {
    need_avx2();
    int checked = 0;
    for (size_t c = 0; c < QP_ARRAY_LEN(qkx2_searches); c++)
        for (int n = 16; n <= 32; n += 16)
            for (int use_mad = 0; use_mad <= 1; use_mad++)
                for (int b = 0; b < QKX2_BLOCKS_PER_SETTING; b++, checked++)
                    check_qkx2_block(&qkx2_searches[c], n, use_mad, b, b % BK_COUNT);
    QP_CHECK_INT_EQ(checked, 12 * QKX2_BLOCKS_PER_SETTING);
}

// Quantizes the rows of x (rows, cols) as type into out (kn_row_bytes(type, cols) * rows bytes
// of shared memory) in a child process whose kernel level is forced to isa (NULL: the best), as
// the CLI does for QPROBE_ISA: the search path is picked once per process, so each path gets a
// fresh one.
static void quantize_in_child(int type, const float *x, int64_t rows, int64_t cols,
                              const char *isa, uint8_t *out) {
    pid_t pid = fork();
    QP_CHECK(pid >= 0);
    if (pid == 0) {
        char err[QP_ERRLEN];
        if (kn_ops_force(isa, err)) _exit(1); // what the CLI does with QPROBE_ISA
        const int want_ref = isa && strcmp(isa, "ref") == 0;
        if ((strcmp(kn_ops_best()->name, "ref") == 0) != want_ref) _exit(1);
        const size_t rb = kn_row_bytes(type, cols);
        for (int64_t r = 0; r < rows; r++)
            if (qz_quantize_row_k(type, x + r * cols, out + (size_t)r * rb, cols, NULL)) _exit(1);
        _exit(0);
    }
    int st;
    QP_CHECK(waitpid(pid, &st, 0) == pid);
    QP_CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                 "child quantizing with QPROBE_ISA=%s failed", isa ? isa : "(unset)");
}

QP_TEST(quantize_k_should_give_the_same_tensor_bytes_with_and_without_isa_ref) {
    need_avx2();
    enum { ROWS = 256, COLS = 4096 };
    float *x = malloc((size_t)ROWS * COLS * sizeof(float));
    QP_CHECK(x != NULL);
    for (int r = 0; r < ROWS; r++) // heavy-tailed rows, every 16th one sparse
        for (int j = 0; j < COLS; j += 32)
            fill_block(r % 16 == 15 ? BK_SPARSE : BK_HEAVY, 32, x + (size_t)r * COLS + j);
    for (int j = 0; j < COLS; j++) x[3 * COLS + j] = 0.0f;   // a zero row
    for (int j = 0; j < COLS; j++) x[5 * COLS + j] = 0.125f; // a constant row
    for (int r = 7; r < ROWS; r += 16) x[(size_t)r * COLS + r] *= 50.0f; // outliers
    static const int types[] = {KN_Q2_K, KN_Q4_K, KN_Q5_K};
    for (size_t t = 0; t < QP_ARRAY_LEN(types); t++) {
        const size_t rb = kn_row_bytes(types[t], COLS), bytes = rb * ROWS;
        uint8_t *ref = mmap(NULL, 2 * bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                            -1, 0);
        QP_CHECK(ref != MAP_FAILED);
        uint8_t *fast = ref + bytes;
        quantize_in_child(types[t], x, ROWS, COLS, "ref", ref);
        quantize_in_child(types[t], x, ROWS, COLS, NULL, fast);
        size_t at = 0;
        while (at < bytes && ref[at] == fast[at]) at++;
        QP_CHECK_MSG(at == bytes, "%s: QPROBE_ISA=ref and the default differ first in row %zu, "
                     "byte %zu", kn_type_info(types[t])->name, at / rb, at % rb);
        munmap(ref, 2 * bytes);
    }
    free(x);
}
