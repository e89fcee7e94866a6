// test_qz_ggml.c — llama.cpp's legacy block formats (quantizers/qz_ggml.c, kernels/kn_dequant.c,
// kernels/kn_vecdot.c) against llama.cpp's own output on the synth256 fixture
// (golden/quant/README.md): quantized bytes identical to llama-quantize's for every 2-D tensor,
// dequantized floats identical to llama.cpp's to_float (bit for bit on the edge-case tensor, and
// by sha256 over every tensor against manifest.json), the reference dot products against the
// float dot of the dequantized rows, and the imatrix path's error behaviour.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hx_gguf.h"
#include "kn_blocks.h"
#include "kn_types.h"
#include "qp.h"
#include "qp_test.h"
#include "qp_sha256.h"
#include "qz_ggml.h"

#define SYNTH_F32 "golden/quant/synth256-F32.gguf"
#define MANIFEST "golden/quant/manifest.json"
#define EDGE_TENSOR "blk.1.attn_k.weight"

// ---------------------------------------------------------------------------------------------
// Helpers

static struct hx_gguf *open_ok(const char *path) {
    char err[QP_ERRLEN] = "";
    struct hx_gguf *g = NULL;
    int rc = hx_gguf_open(path, &g, err);
    QP_CHECK_MSG(rc == 0, "open '%s' failed (%d): %s", path, rc, err);
    return g;
}

static struct hx_gguf *open_golden(const char *tname) {
    char rel[256];
    snprintf(rel, sizeof rel, "golden/quant/synth256-%s.gguf", tname);
    return open_ok(qpt_fixture(rel));
}

static uint64_t rng_state = 0x243f6a8885a308d3ull;
static double urand(void) { // uniform in [0, 1)
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) * (1.0 / 9007199254740992.0);
}

// Heavy-tailed values (a ratio of uniforms), a few channels scaled up: like LLM weights and
// activations, so that blocks have outliers.
static void fill_heavy(float *x, int64_t n, float scale) {
    for (int64_t i = 0; i < n; i++) {
        double u = urand() - 0.5, v = urand() * 0.9 + 0.1;
        x[i] = (float)(scale * u / v);
        if (i % 97 == 13) x[i] *= 20.0f;
    }
}

// manifest.json's llama_dequant_f32_sha256 of tensor `name` in file synth256-<T>.gguf, found by
// plain text search (the manifest lists each file's tensors in order, name first). Writes
// 64 hex digits + NUL into out; 0 if found.
static int manifest_sha(const char *manifest, const char *tname, const char *name, char out[65]) {
    char key[256];
    snprintf(key, sizeof key, "\"synth256-%s.gguf\": {", tname);
    const char *p = strstr(manifest, key);
    if (!p) return -1;
    snprintf(key, sizeof key, "\"name\": \"%s\"", name);
    p = strstr(p, key);
    if (!p) return -1;
    const char *next = strstr(p + 1, "\"name\": ");
    const char *k = strstr(p, "\"llama_dequant_f32_sha256\": \"");
    if (!k || (next && k > next)) return -1;
    k += strlen("\"llama_dequant_f32_sha256\": \"");
    if (strlen(k) < 64) return -1;
    memcpy(out, k, 64);
    out[64] = 0;
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Layouts and arguments

QP_TEST(block_structs_should_match_type_table) {
    static const struct {
        int type;
        size_t size;
    } t[] = {
        {KN_Q4_0, sizeof(struct kn_block_q4_0)}, {KN_Q4_1, sizeof(struct kn_block_q4_1)},
        {KN_Q5_0, sizeof(struct kn_block_q5_0)}, {KN_Q5_1, sizeof(struct kn_block_q5_1)},
        {KN_Q8_0, sizeof(struct kn_block_q8_0)}, {KN_Q8_1, sizeof(struct kn_block_q8_1)},
        {KN_IQ4_NL, sizeof(struct kn_block_iq4_nl)},
    };
    for (size_t i = 0; i < QP_ARRAY_LEN(t); i++) {
        const struct kn_type_info *ti = kn_type_info(t[i].type);
        QP_CHECK(ti != NULL);
        QP_CHECK_INT_EQ(ti->block_size, 32);
        QP_CHECK_MSG(ti->block_bytes == t[i].size, "%s: table %zu bytes, struct %zu", ti->name,
                     ti->block_bytes, t[i].size);
    }
}

QP_TEST(quantize_row_should_reject_bad_type_and_length) {
    float x[64] = {0};
    uint8_t y[256];
    QP_CHECK_INT_EQ(qz_quantize_row(KN_Q4_K, x, y, 64, NULL), QP_ENOTSUP);
    QP_CHECK_INT_EQ(qz_quantize_row(KN_F16, x, y, 64, NULL), QP_ENOTSUP);
    QP_CHECK_INT_EQ(qz_quantize_row(KN_Q8_1, x, y, 64, NULL), QP_ENOTSUP);
    QP_CHECK_INT_EQ(qz_quantize_row(KN_Q4_0, x, y, 48, NULL), QP_EINVAL);
    QP_CHECK_INT_EQ(qz_quantize_row(KN_Q4_0, x, y, 0, NULL), QP_EINVAL);
    QP_CHECK_INT_EQ(qz_quantize_act_row(KN_Q4_0, x, y, 64), QP_ENOTSUP);
    QP_CHECK_INT_EQ(qz_quantize_act_row(KN_Q8_1, x, y, 33), QP_EINVAL);
    QP_CHECK_INT_EQ(qz_quantize_row(KN_IQ4_NL, x, y, 64, NULL), 0);
}

// ---------------------------------------------------------------------------------------------
// 1. Quantized bytes identical to llama-quantize's, every 2-D tensor, row by row.

static void check_quantize_golden(int type, const char *tname) {
    struct hx_gguf *src = open_ok(qpt_fixture(SYNTH_F32));
    struct hx_gguf *gold = open_golden(tname);
    const struct kn_type_info *ti = kn_type_info(type);
    int n_checked = 0;
    for (int64_t t = 0; t < hx_gguf_n_tensors(src); t++) {
        const struct hx_gguf_tensor *ts = hx_gguf_tensor(src, t);
        if (ts->n_dims != 2) continue;
        QP_CHECK_INT_EQ(ts->type, KN_F32);
        const struct hx_gguf_tensor *tg = hx_gguf_find_tensor(gold, ts->name);
        QP_CHECK_MSG(tg != NULL, "'%s' missing from synth256-%s.gguf", ts->name, tname);
        QP_CHECK_MSG(tg->type == type, "'%s' has type %d, want %d", ts->name, tg->type, type);
        const int64_t ncol = ts->ne[0], nrow = ts->ne[1];
        const size_t rb = kn_row_bytes(type, ncol);
        QP_CHECK(tg->nbytes == rb * (size_t)nrow);
        uint8_t *row = malloc(rb);
        QP_CHECK(row != NULL);
        for (int64_t r = 0; r < nrow; r++) {
            const float *x = (const float *)ts->data + r * ncol;
            QP_CHECK_INT_EQ(qz_quantize_row(type, x, row, ncol, NULL), 0);
            const uint8_t *want = (const uint8_t *)tg->data + (size_t)r * rb;
            if (memcmp(row, want, rb) == 0) continue;
            size_t at = 0;
            while (row[at] == want[at]) at++;
            size_t blk = at / ti->block_bytes, off = blk * ti->block_bytes;
            char got_hex[128] = "", want_hex[128] = "";
            for (size_t i = 0; i < ti->block_bytes && i < 40; i++) {
                snprintf(got_hex + 2 * i, 3, "%02x", row[off + i]);
                snprintf(want_hex + 2 * i, 3, "%02x", want[off + i]);
            }
            qpt_fail(__FILE__, __LINE__,
                     "%s '%s' row %lld block %zu (byte %zu of the block) differs:\n"
                     "  got  %s\n  want %s\n  x[0..3] = %.9g %.9g %.9g %.9g",
                     tname, ts->name, (long long)r, blk, at - off, got_hex, want_hex,
                     x[blk * 32], x[blk * 32 + 1], x[blk * 32 + 2], x[blk * 32 + 3]);
        }
        free(row);
        n_checked++;
    }
    QP_CHECK_INT_EQ(n_checked, 16);
    hx_gguf_close(gold);
    hx_gguf_close(src);
}

QP_TEST(quantize_q8_0_should_match_llama_quantize_bytes) { check_quantize_golden(KN_Q8_0, "Q8_0"); }
QP_TEST(quantize_q4_0_should_match_llama_quantize_bytes) { check_quantize_golden(KN_Q4_0, "Q4_0"); }
QP_TEST(quantize_q4_1_should_match_llama_quantize_bytes) { check_quantize_golden(KN_Q4_1, "Q4_1"); }
QP_TEST(quantize_q5_0_should_match_llama_quantize_bytes) { check_quantize_golden(KN_Q5_0, "Q5_0"); }
QP_TEST(quantize_q5_1_should_match_llama_quantize_bytes) { check_quantize_golden(KN_Q5_1, "Q5_1"); }
QP_TEST(quantize_iq4_nl_should_match_llama_quantize_bytes) { check_quantize_golden(KN_IQ4_NL, "IQ4_NL"); }

// ---------------------------------------------------------------------------------------------
// 2. Dequantization identical to llama.cpp's: the edge tensor bit for bit against dequant/*.f32,
// and every quantized tensor by sha256 against manifest.json.

static void check_dequant_golden(int type, const char *tname) {
    if (!kn_type_has_dequant(type)) QP_SKIP("no dequantization for %s in this build", tname);
    struct hx_gguf *gold = open_golden(tname);
    size_t mlen = 0;
    char *manifest = qpt_read_file(qpt_fixture(MANIFEST), &mlen);
    QP_CHECK(manifest != NULL);
    char rel[256];
    snprintf(rel, sizeof rel, "golden/quant/dequant/synth256-%s." EDGE_TENSOR ".f32", tname);
    size_t elen = 0;
    char *edge = qpt_read_file(qpt_fixture(rel), &elen);
    QP_CHECK(edge != NULL);

    int n_checked = 0;
    for (int64_t t = 0; t < hx_gguf_n_tensors(gold); t++) {
        const struct hx_gguf_tensor *tg = hx_gguf_tensor(gold, t);
        if (tg->type != type) continue; // the F32 norms
        const int64_t ncol = tg->ne[0], nrow = tg->ne[1];
        const size_t rb = kn_row_bytes(type, ncol);
        float *out = malloc((size_t)(ncol * nrow) * sizeof(float));
        QP_CHECK(out != NULL);
        for (int64_t r = 0; r < nrow; r++)
            kn_dequantize_row(type, (const uint8_t *)tg->data + (size_t)r * rb, out + r * ncol, ncol);

        if (strcmp(tg->name, EDGE_TENSOR) == 0) {
            QP_CHECK_INT_EQ(elen, (size_t)(ncol * nrow) * sizeof(float));
            const float *want = (const float *)edge;
            for (int64_t i = 0; i < ncol * nrow; i++)
                QP_CHECK_MSG(memcmp(&out[i], &want[i], 4) == 0,
                             "%s %s: row %lld col %lld: got %.9g, llama.cpp %.9g", tname, tg->name,
                             (long long)(i / ncol), (long long)(i % ncol), out[i], want[i]);
        }
        char want_sha[65], got_sha[65];
        QP_CHECK_MSG(manifest_sha(manifest, tname, tg->name, want_sha) == 0,
                     "no llama_dequant_f32_sha256 for %s %s in manifest.json", tname, tg->name);
        qp_sha256_hex(out, (size_t)(ncol * nrow) * sizeof(float), got_sha); // little-endian host
        QP_CHECK_MSG(strcmp(got_sha, want_sha) == 0, "%s %s: dequant sha256 %s, llama.cpp %s",
                     tname, tg->name, got_sha, want_sha);
        free(out);
        n_checked++;
    }
    QP_CHECK_INT_EQ(n_checked, 16);
    free(edge);
    free(manifest);
    hx_gguf_close(gold);
}

QP_TEST(dequant_q8_0_should_match_llama_cpp_bits) { check_dequant_golden(KN_Q8_0, "Q8_0"); }
QP_TEST(dequant_q4_0_should_match_llama_cpp_bits) { check_dequant_golden(KN_Q4_0, "Q4_0"); }
QP_TEST(dequant_q4_1_should_match_llama_cpp_bits) { check_dequant_golden(KN_Q4_1, "Q4_1"); }
QP_TEST(dequant_q5_0_should_match_llama_cpp_bits) { check_dequant_golden(KN_Q5_0, "Q5_0"); }
QP_TEST(dequant_q5_1_should_match_llama_cpp_bits) { check_dequant_golden(KN_Q5_1, "Q5_1"); }
QP_TEST(dequant_iq4_nl_should_match_llama_cpp_bits) { check_dequant_golden(KN_IQ4_NL, "IQ4_NL"); }
QP_TEST(dequant_f16_should_match_llama_cpp_bits) { check_dequant_golden(KN_F16, "F16"); }
QP_TEST(dequant_bf16_should_match_llama_cpp_bits) { check_dequant_golden(KN_BF16, "BF16"); }
QP_TEST(dequant_q2_k_should_match_llama_cpp_bits) { check_dequant_golden(KN_Q2_K, "Q2_K"); }
QP_TEST(dequant_q3_k_should_match_llama_cpp_bits) { check_dequant_golden(KN_Q3_K, "Q3_K"); }
QP_TEST(dequant_q4_k_should_match_llama_cpp_bits) { check_dequant_golden(KN_Q4_K, "Q4_K"); }
QP_TEST(dequant_q5_k_should_match_llama_cpp_bits) { check_dequant_golden(KN_Q5_K, "Q5_K"); }
QP_TEST(dequant_q6_k_should_match_llama_cpp_bits) { check_dequant_golden(KN_Q6_K, "Q6_K"); }

// ---------------------------------------------------------------------------------------------
// 3. Activation quantization and the reference dot products.

#define DOT_N 4096 // 128 blocks
// kn_vec_dot_ref sums exact integer block dots, scales each (<= 3 roundings) and accumulates 128
// block terms in float: worst case (128 + 3) * 2^-24 ~ 7.8e-6 of the sum of |terms|.
#define DOT_ACCUM_REL_TOL 1e-5
// Q8_1's s = fp16(d * sum(q)) is off from d * sum(q) by at most half an fp16 ulp (2^-11
// relative) plus the fp32 product's rounding; times |m_w| it is ggml's intended deviation from
// the dot of the dequantized rows (dequantized Q8_1 values are d * q, without s).
#define Q8_1_S_REL_TOL (1.0 / 2048.0 + 1.0 / 16777216.0)
#define FP16_MIN_SUBNORMAL (1.0 / 16777216.0)

QP_TEST(act_quantization_should_match_reference_formulas) {
    float x[DOT_N];
    fill_heavy(x, DOT_N, 1.0f);
    for (int j = 32; j < 64; j++) x[j] = 0.0f; // an all-zero block: d = 0, q = 0
    x[64] = -100.0f; // the block's largest magnitude is negative: q = -127 there
    static struct kn_block_q8_0 a0[DOT_N / 32], w0[DOT_N / 32];
    static struct kn_block_q8_1 a1[DOT_N / 32];
    QP_CHECK_INT_EQ(qz_quantize_act_row(KN_Q8_0, x, a0, DOT_N), 0);
    QP_CHECK_INT_EQ(qz_quantize_act_row(KN_Q8_1, x, a1, DOT_N), 0);
    QP_CHECK_INT_EQ(qz_quantize_row(KN_Q8_0, x, w0, DOT_N, NULL), 0);
    QP_CHECK(memcmp(a0, w0, sizeof a0) == 0); // one reference routine for weights and activations
    QP_CHECK_INT_EQ(a0[1].d, 0);
    for (int j = 0; j < 32; j++) QP_CHECK_INT_EQ(a0[1].qs[j], 0);
    QP_CHECK_INT_EQ(a0[2].qs[0], -127);
    for (int b = 0; b < DOT_N / 32; b++) {
        float amax = 0.0f;
        for (int j = 0; j < 32; j++) amax = QP_MAX(amax, fabsf(x[32 * b + j]));
        const float d = amax / 127.0f;
        QP_CHECK_INT_EQ(a0[b].d, qp_fp32_to_fp16(d));
        QP_CHECK_INT_EQ(a1[b].d, a0[b].d);
        QP_CHECK(memcmp(a1[b].qs, a0[b].qs, 32) == 0);
        int sum = 0;
        for (int j = 0; j < 32; j++) {
            const float id = d != 0.0f ? 1.0f / d : 0.0f;
            QP_CHECK_INT_EQ(a0[b].qs[j], (int)roundf(x[32 * b + j] * id));
            sum += a1[b].qs[j];
        }
        QP_CHECK_INT_EQ(a1[b].s, qp_fp32_to_fp16((float)sum * d));
    }
}

static void check_vec_dot(int wtype) {
    const int atype = kn_vec_dot_act_type(wtype);
    QP_CHECK(atype == KN_Q8_0 || atype == KN_Q8_1);
    static float w[DOT_N], a[DOT_N], wd[DOT_N], ad[DOT_N];
    static uint8_t wq[DOT_N / 32 * sizeof(struct kn_block_q8_1)], aq[DOT_N / 32 * sizeof(struct kn_block_q8_1)];
    for (int trial = 0; trial < 8; trial++) {
        fill_heavy(w, DOT_N, 0.02f);
        fill_heavy(a, DOT_N, 1.0f);
        if (trial & 1) // an offset, so that the *_1 minimum and s matter
            for (int i = 0; i < DOT_N; i++) a[i] += 0.5f, w[i] += 0.01f;
        QP_CHECK_INT_EQ(qz_quantize_row(wtype, w, wq, DOT_N, NULL), 0);
        QP_CHECK_INT_EQ(qz_quantize_act_row(atype, a, aq, DOT_N), 0);
        kn_dequantize_row(wtype, wq, wd, DOT_N);
        kn_dequantize_row(atype, aq, ad, DOT_N);
        double ref = 0.0, mag = 0.0, s_tol = 0.0;
        for (int i = 0; i < DOT_N; i++) {
            ref += (double)wd[i] * ad[i];
            mag += fabs((double)wd[i] * ad[i]);
        }
        if (atype == KN_Q8_1) {
            const size_t bb = kn_type_info(wtype)->block_bytes;
            for (int b = 0; b < DOT_N / 32; b++) {
                uint16_t mh; // m follows d in both Q4_1 and Q5_1
                memcpy(&mh, wq + (size_t)b * bb + 2, 2);
                double dsum = 0.0;
                for (int j = 0; j < 32; j++) dsum += ad[32 * b + j];
                const double m = fabs((double)qp_fp16_to_fp32(mh));
                s_tol += m * (fabs(dsum) * Q8_1_S_REL_TOL + FP16_MIN_SUBNORMAL);
                mag += m * fabs(dsum);
            }
        }
        const double got = kn_vec_dot_ref(wtype, wq, aq, DOT_N);
        const double tol = DOT_ACCUM_REL_TOL * mag + s_tol;
        QP_CHECK_MSG(fabs(got - ref) <= tol, "%s trial %d: dot %.9g, float reference %.9g, tol %.3g",
                     kn_type_info(wtype)->name, trial, got, ref, tol);
    }
}

QP_TEST(vec_dot_q4_0_q8_0_should_match_dot_of_dequantized_rows) { check_vec_dot(KN_Q4_0); }
QP_TEST(vec_dot_q4_1_q8_1_should_match_dot_of_dequantized_rows) { check_vec_dot(KN_Q4_1); }
QP_TEST(vec_dot_q5_0_q8_0_should_match_dot_of_dequantized_rows) { check_vec_dot(KN_Q5_0); }
QP_TEST(vec_dot_q5_1_q8_1_should_match_dot_of_dequantized_rows) { check_vec_dot(KN_Q5_1); }
QP_TEST(vec_dot_q8_0_q8_0_should_match_dot_of_dequantized_rows) { check_vec_dot(KN_Q8_0); }
QP_TEST(vec_dot_iq4_nl_q8_0_should_match_dot_of_dequantized_rows) { check_vec_dot(KN_IQ4_NL); }

QP_TEST(vec_dot_should_be_exact_on_small_integers) {
    // Weights and activations that every format represents exactly: the dot is an integer.
    static float w[64], a[64];
    for (int i = 0; i < 64; i++) {
        w[i] = (float)((i * 7) % 15 - 8);     // -8..6, block max -8 maps to q = -8 (d = 1)
        a[i] = (float)((i * 5) % 255 - 127);  // -127..127
    }
    w[0] = -8.0f, w[32] = -8.0f, a[0] = -127.0f, a[32] = 127.0f;
    double exact = 0.0;
    for (int i = 0; i < 64; i++) exact += (double)w[i] * a[i];
    uint8_t wq[64 / 32 * sizeof(struct kn_block_q8_1)], aq[64 / 32 * sizeof(struct kn_block_q8_1)];
    QP_CHECK_INT_EQ(qz_quantize_row(KN_Q4_0, w, wq, 64, NULL), 0);
    QP_CHECK_INT_EQ(qz_quantize_act_row(KN_Q8_0, a, aq, 64), 0);
    QP_CHECK(kn_vec_dot_ref(KN_Q4_0, wq, aq, 64) == (float)exact);
    QP_CHECK_INT_EQ(qz_quantize_row(KN_Q8_0, a, wq, 64, NULL), 0);
    double aa = 0.0;
    for (int i = 0; i < 64; i++) aa += (double)a[i] * a[i];
    QP_CHECK(kn_vec_dot_ref(KN_Q8_0, wq, aq, 64) == (float)aa);
}

// ---------------------------------------------------------------------------------------------
// 4. The imatrix path.

// Flat imatrix: no worse than this factor times the no-imatrix RMSE. The weighted searches
// optimise a weighted error (weights sqrt(sigma2 + x^2)), not the plain RMSE, so they may lose
// a little on it; 1.2 is the bound the task sets.
#define IMATRIX_FLAT_RMSE_RATIO 1.2

struct qerr {
    double sse, wsse; // sum of squared errors, imatrix-weighted sum
    int64_t n;
};

static void quant_error(int type, const struct hx_gguf_tensor *ts, const float *imatrix,
                        const float *weigh, struct qerr *e) {
    const int64_t ncol = ts->ne[0], nrow = ts->ne[1];
    uint8_t *q = malloc(kn_row_bytes(type, ncol));
    float *deq = malloc((size_t)ncol * sizeof(float));
    QP_CHECK(q && deq);
    memset(e, 0, sizeof *e);
    for (int64_t r = 0; r < nrow; r++) {
        const float *x = (const float *)ts->data + r * ncol;
        QP_CHECK_INT_EQ(qz_quantize_row(type, x, q, ncol, imatrix), 0);
        kn_dequantize_row(type, q, deq, ncol);
        for (int64_t j = 0; j < ncol; j++) {
            const double d = (double)deq[j] - x[j];
            QP_CHECK(deq[j] == deq[j]); // no NaN
            e->sse += d * d;
            e->wsse += weigh[j] * d * d;
        }
        e->n += ncol;
    }
    free(deq);
    free(q);
}

static void check_imatrix(int type) {
    struct hx_gguf *src = open_ok(qpt_fixture(SYNTH_F32));
    static const char *names[] = {"blk.0.attn_q.weight", "blk.0.ffn_gate.weight",
                                  "blk.1.attn_k.weight", "blk.1.ffn_down.weight"};
    for (size_t t = 0; t < QP_ARRAY_LEN(names); t++) {
        const struct hx_gguf_tensor *ts = hx_gguf_find_tensor(src, names[t]);
        QP_CHECK(ts != NULL && ts->type == KN_F32);
        const int64_t ncol = ts->ne[0];
        float *flat = malloc((size_t)ncol * sizeof(float));
        float *imat = malloc((size_t)ncol * sizeof(float));
        QP_CHECK(flat && imat);
        // A non-flat importance, as activations give: log-normal spread plus a few channels
        // 50x more important than the rest.
        for (int64_t j = 0; j < ncol; j++) {
            flat[j] = 1.0f;
            imat[j] = (float)exp(2.0 * (urand() - 0.5) * 2.0);
            if (j % 41 == 5) imat[j] *= 50.0f;
        }
        struct qerr none, eflat, enone_w, ew;
        quant_error(type, ts, NULL, flat, &none);
        quant_error(type, ts, flat, flat, &eflat);
        quant_error(type, ts, NULL, imat, &enone_w);
        quant_error(type, ts, imat, imat, &ew);
        const double rmse_none = sqrt(none.sse / (double)none.n);
        const double rmse_flat = sqrt(eflat.sse / (double)eflat.n);
        QP_CHECK_MSG(rmse_flat <= IMATRIX_FLAT_RMSE_RATIO * rmse_none,
                     "%s %s: flat-imatrix RMSE %.6g vs %.6g without", kn_type_info(type)->name,
                     names[t], rmse_flat, rmse_none);
        QP_CHECK_MSG(ew.wsse < enone_w.wsse,
                     "%s %s: imatrix-weighted error %.6g with the imatrix, %.6g without",
                     kn_type_info(type)->name, names[t], ew.wsse, enone_w.wsse);
        printf("%s %-22s rmse none %.6g flat %.6g | weighted err none %.6g imatrix %.6g\n",
               kn_type_info(type)->name, names[t], rmse_none, rmse_flat, enone_w.wsse, ew.wsse);
        free(imat);
        free(flat);
    }
    hx_gguf_close(src);
}

QP_TEST(imatrix_q4_0_should_lower_weighted_error) { check_imatrix(KN_Q4_0); }
QP_TEST(imatrix_q4_1_should_lower_weighted_error) { check_imatrix(KN_Q4_1); }
QP_TEST(imatrix_q5_0_should_lower_weighted_error) { check_imatrix(KN_Q5_0); }
QP_TEST(imatrix_q5_1_should_lower_weighted_error) { check_imatrix(KN_Q5_1); }
QP_TEST(imatrix_iq4_nl_should_lower_weighted_error) { check_imatrix(KN_IQ4_NL); }

QP_TEST(imatrix_should_be_ignored_by_q8_0) {
    float x[256], imat[256];
    fill_heavy(x, 256, 0.02f);
    for (int j = 0; j < 256; j++) imat[j] = (float)(urand() * 10.0);
    uint8_t a[8 * sizeof(struct kn_block_q8_0)], b[8 * sizeof(struct kn_block_q8_0)];
    QP_CHECK_INT_EQ(qz_quantize_row(KN_Q8_0, x, a, 256, NULL), 0);
    QP_CHECK_INT_EQ(qz_quantize_row(KN_Q8_0, x, b, 256, imat), 0);
    QP_CHECK(memcmp(a, b, sizeof a) == 0);
}

QP_TEST(imatrix_path_should_handle_zero_and_tiny_blocks) {
    // Zero blocks, a block of 1e-30s and a constant block through every weighted search: finite
    // output, and zeros dequantize to zeros.
    float x[128], imat[128], deq[128];
    for (int j = 0; j < 128; j++) imat[j] = 1.0f + (float)j;
    for (int j = 0; j < 32; j++) x[j] = 0.0f;
    for (int j = 32; j < 64; j++) x[j] = 1e-30f;
    for (int j = 64; j < 96; j++) x[j] = 0.25f;
    for (int j = 96; j < 128; j++) x[j] = (float)(j - 112) * 0.01f;
    static const int types[] = {KN_Q4_0, KN_Q4_1, KN_Q5_0, KN_Q5_1, KN_IQ4_NL};
    for (size_t t = 0; t < QP_ARRAY_LEN(types); t++) {
        uint8_t q[4 * 24];
        QP_CHECK_INT_EQ(qz_quantize_row(types[t], x, q, 128, imat), 0);
        kn_dequantize_row(types[t], q, deq, 128);
        for (int j = 0; j < 128; j++) QP_CHECK(isfinite(deq[j]));
        for (int j = 0; j < 32; j++) QP_CHECK_MSG(deq[j] == 0.0f, "%s: zero block gives %g",
                                                  kn_type_info(types[t])->name, deq[j]);
        for (int j = 64; j < 96; j++) QP_CHECK_NEAR(deq[j], 0.25f, 0.02);
    }
}

// The search qz_iq4_nl_levels replaces: ggml's best_index_int8 before 2025 (binary search for
// the bracketing levels, the tie to the upper one).
static int iq4_search(float x) {
    const int8_t *val = kn_iq4nl_values;
    if (x <= val[0]) return 0;
    if (x >= val[15]) return 15;
    int lo = 0, hi = 15;
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (x < val[mid]) hi = mid;
        else lo = mid;
    }
    return x - val[hi - 1] < val[hi] - x ? hi - 1 : hi;
}

QP_TEST(iq4_nl_levels_should_equal_the_binary_search_for_every_value) {
    // Every level, every midpoint and its float neighbours, the extremes, infinities and NaN
    // (id 1), then a million random values at random scales.
    float x[32];
    uint8_t L[32];
    int n = 0, checked = 0;
    float special[200];
    for (int k = 0; k < 16; k++) {
        float v = kn_iq4nl_values[k], m = k < 15 ? 0.5f * (v + kn_iq4nl_values[k + 1]) : v + 7;
        float s[] = {v, nextafterf(v, -INFINITY), nextafterf(v, INFINITY), m, nextafterf(m, -INFINITY),
                     nextafterf(m, INFINITY)};
        for (size_t i = 0; i < QP_ARRAY_LEN(s); i++) special[n++] = s[i];
    }
    special[n++] = INFINITY, special[n++] = -INFINITY, special[n++] = NAN, special[n++] = 0.0f, special[n++] = -0.0f;
    special[n++] = 1e30f, special[n++] = -1e30f, special[n++] = -127.0f, special[n++] = 113.0f;
    for (int i0 = 0; i0 < n; i0 += 32) {
        int m = n - i0 < 32 ? n - i0 : 32;
        for (int j = 0; j < 32; j++) x[j] = special[i0 + (j % m)];
        qz_iq4_nl_levels(1.0f, x, L);
        for (int j = 0; j < m; j++, checked++)
            QP_CHECK_MSG(L[j] == iq4_search(x[j]), "value %.9g: level %d, the search %d", x[j], L[j], iq4_search(x[j]));
    }
    uint64_t r = 0x9e3779b97f4a7c15ull;
    for (int b = 0; b < 1 << 15; b++) {
        r ^= r << 13, r ^= r >> 7, r ^= r << 17;
        float id = (float)((r >> 40) % 1000 + 1) / 37.0f;
        for (int j = 0; j < 32; j++) {
            r ^= r << 13, r ^= r >> 7, r ^= r << 17;
            x[j] = ((float)(r >> 40) / (float)(1 << 24) - 0.5f) * 300.0f / id;
        }
        qz_iq4_nl_levels(id, x, L);
        for (int j = 0; j < 32; j++, checked++) QP_CHECK(L[j] == iq4_search(id * x[j]));
    }
    QP_CHECK(checked > 1000000);
}
