// test_packed.c — every llama.cpp format run packed against the same weights run as fake
// quantization (dequantized to fp32 tensors, then the fp32 engine):
//  - act=f32: the packed path must give the same logits bit for bit (it is defined as the
//    dequantized weights in fp32);
//  - act=q8: activations are quantized to 8 bits per block, which moves logits by about
//    |x| / 254 per element and leaves the ranking nearly intact: max |Δ logit| below
//    ACT_Q8_LOGIT_TOL and top-1 agreement at least ACT_Q8_TOP1_MIN on 256 positions.
#include "kn_blocks.h"
#include "kn_engine.h"
#include "hx_model.h"
#include "qp.h"
#include "qp_test.h"
#include "qz_spec.h"
#include "hx_variant.h"

// Measured 0.23-0.34 over these formats: 8-bit activations (relative error ~1/254 per element)
// compounded through 5 layers and the classifier, on logits spanning about ±15. Twice that.
#define ACT_Q8_LOGIT_TOL 0.55
#define ACT_Q8_TOP1_MIN 0.95

static float *dequant_copy(const struct kn_tensor *t, struct kn_tensor *out) {
    float *buf = malloc(sizeof(float) * t->ne0 * t->ne1);
    size_t rb = kn_row_bytes(t->type, t->ne0);
    for (int64_t r = 0; r < t->ne1; r++) kn_dequantize_row(t->type, (const uint8_t *)t->data + r * rb, buf + r * t->ne0, t->ne0);
    *out = (struct kn_tensor){KN_F32, t->ne0, t->ne1, buf};
    return buf;
}

static void logits_of(const struct kn_weights *w, int act_q8, const int *toks, int n, float *out) {
    char err[QP_ERRLEN];
    struct kn_engine *e;
    struct kn_state *s;
    struct kn_engine_opts o = {.act_q8 = act_q8};
    QP_CHECK_MSG(kn_engine_create_opts(w, &o, &e, err) == 0, "%s", err);
    QP_CHECK(kn_state_create(e, n, n, 1, &s, err) == 0);
    kn_forward(s, toks, n, out, 0, NULL);
    kn_state_destroy(s);
    kn_engine_destroy(e);
}

static void check_format(const char *spec) {
    char err[QP_ERRLEN];
    struct hx_model *m;
    QP_CHECK_MSG(hx_model_open(qpt_fixture("models/llama2c/stories260K.bin"), NULL, &m, err) == 0, "%s", err);
    struct qz_variant *v;
    QP_CHECK(qz_variant_parse(spec, &v, err) == 0);
    struct hx_quant_model *q;
    QP_CHECK_MSG(hx_quant_model_create(&m->w, v, &q, err) == 0, "%s", err);
    // The fake-quant twin: every tensor dequantized to fp32.
    struct kn_weights fake = q->w;
    struct kn_layer_weights *layers = malloc(sizeof *layers * fake.cfg.n_layers);
    memcpy(layers, q->w.layers, sizeof *layers * fake.cfg.n_layers);
    fake.layers = layers;
    void *bufs[64];
    int nb = 0;
    bufs[nb++] = dequant_copy(&q->w.tok_embd, &fake.tok_embd);
    bufs[nb++] = dequant_copy(&q->w.output, &fake.output);
    for (int l = 0; l < fake.cfg.n_layers; l++) {
        struct kn_tensor *t[] = {&layers[l].wq, &layers[l].wk, &layers[l].wv, &layers[l].wo,
                                 &layers[l].w_gate, &layers[l].w_up, &layers[l].w_down};
        for (int i = 0; i < 7; i++) {
            struct kn_tensor src = *t[i];
            bufs[nb++] = dequant_copy(&src, t[i]);
        }
    }
    int n = 256, V = fake.cfg.vocab_size, toks[256];
    for (int i = 0; i < n; i++) toks[i] = i == 0 ? 1 : (i * 97 + 13) % V;
    float *a = malloc(sizeof(float) * n * V), *b = malloc(sizeof(float) * n * V), *c = malloc(sizeof(float) * n * V);
    logits_of(&fake, 0, toks, n, a);
    logits_of(&q->w, 0, toks, n, b);
    QP_CHECK_MSG(memcmp(a, b, sizeof(float) * n * V) == 0, "%s: packed act=f32 differs from fake quantization", spec);
    logits_of(&q->w, 1, toks, n, c);
    double worst = 0;
    int agree = 0;
    for (int r = 0; r < n; r++) {
        int ia = 0, ic = 0;
        for (int j = 0; j < V; j++) {
            worst = fmax(worst, fabs((double)a[r * V + j] - c[r * V + j]));
            if (a[r * V + j] > a[r * V + ia]) ia = j;
            if (c[r * V + j] > c[r * V + ic]) ic = j;
        }
        agree += ia == ic;
    }
    fprintf(stderr, "%s: act=q8 vs fake quantization: max |dlogit| %.4f, top-1 agreement %.3f\n", spec, worst,
            (double)agree / n);
    QP_CHECK_MSG(worst < ACT_Q8_LOGIT_TOL, "%s: max |dlogit| %.4f", spec, worst);
    QP_CHECK_MSG(agree >= ACT_Q8_TOP1_MIN * n, "%s: top-1 agreement %d/%d", spec, agree, n);
    for (int i = 0; i < nb; i++) free(bufs[i]);
    free(a), free(b), free(c), free(layers);
    hx_quant_model_destroy(q);
    qz_variant_destroy(v);
    hx_model_close(m);
}

QP_TEST(q8_0_packed_should_agree_with_fake_quantization) { check_format("q8_0"); }
QP_TEST(q4_0_packed_should_agree_with_fake_quantization) { check_format("q4_0"); }
QP_TEST(q4_1_packed_should_agree_with_fake_quantization) { check_format("q4_1"); }
QP_TEST(q5_0_packed_should_agree_with_fake_quantization) { check_format("q5_0"); }
QP_TEST(q5_1_packed_should_agree_with_fake_quantization) { check_format("q5_1"); }
QP_TEST(iq4_nl_packed_should_agree_with_fake_quantization) { check_format("iq4_nl"); }
// stories260K's rows of 64 fit no 256-block: the k-quants fall back (q4_k → q5_0, q6_k → q8_0,
// q2_k/q3_k → iq4_nl), so their own kernels are exercised through a rule on a wider model in
// test_qz_kquants; here the mix path and its fallbacks are checked end to end.
QP_TEST(q4_k_m_packed_should_agree_with_fake_quantization) { check_format("q4_k_m"); }
QP_TEST(q2_k_packed_should_agree_with_fake_quantization) { check_format("q2_k"); }
