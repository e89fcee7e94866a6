// test_qat.c — quantization-aware training: the backward pass of the Llama block against central
// finite differences in fp64 (every parameter of a tiny GQA model, tied and untied), the fp32
// training path against the fp64 one and against the engine's logits, determinism over thread
// counts, the fake-quantizer's straight-through and LSQ gradients, the spec, and QAT end to end
// on stories260K against RTN, GPTQ and AWQ.
#include <math.h>
#include <stdint.h>

#include "kn_engine.h"
#include "kn_train.h"
#include "hx_model.h"
#include "qp.h"
#include "qp_test.h"

#define MODEL "models/llama2c/stories260K.bin"
#define TOK "models/llama2c/tok512.bin"

// ---------------------------------------------------------------------------------------------
// A tiny model

static uint64_t rng_state;
static double rng_uniform(void) { // xorshift64*, in [-1, 1)
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 2685821657736338717ull) >> 11) / 9007199254740992.0 * 2.0 - 1.0;
}

// 2 layers, dim 16, 4 query heads over 2 KV heads (head size 4), hidden 24, vocab 11.
static struct kn_config tiny_config(void) {
    struct kn_config c = {.dim = 16, .hidden_dim = 24, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2,
                          .vocab_size = 11, .seq_len = 8, .head_size = 4, .norm_eps = 1e-5f,
                          .rope_theta = 10000.0f};
    return c;
}

// Random parameters: matrices ~ U(-0.5, 0.5), norms 1 + U(-0.3, 0.3).
static void tiny_params(const struct kn_train_layout *L, double *p, uint64_t seed) {
    rng_state = seed;
    for (size_t i = 0; i < L->n_floats; i++) p[i] = 0;
    for (int i = 0; i < L->n_tensors; i++) {
        const struct kn_tparam *t = &L->t[i];
        int norm = t->rows == 1;
        for (int64_t k = 0; k < t->rows * t->cols; k++)
            p[t->off + k] = norm ? 1.0 + 0.3 * rng_uniform() : 0.5 * rng_uniform();
    }
}

static const int tiny_tokens[6] = {1, 4, 7, 4, 10, 0};
static const int tiny_targets[6] = {4, 7, 4, 10, 0, 3};

// The loss the gradient check differentiates: KL against fixed teacher logits plus 0.5 CE.
static double tiny_loss(struct kn_train64 *t, const double *p, const double *teacher, double *dlogits, double *rows) {
    const double *z = kn_train64_forward(t, p, tiny_tokens, 6);
    double kl, ce;
    kn_train64_loss(z, teacher, tiny_targets, 6, 11, 0.5, 1.0, 1, dlogits, rows, &kl, &ce);
    return kl + 0.5 * ce;
}

static void gradient_check(int tied) {
    struct kn_config c = tiny_config();
    struct kn_train_layout L;
    char err[QP_ERRLEN];
    QP_CHECK_MSG(kn_train_layout_init(&L, &c, tied, err) == 0, "%s", err);
    struct kn_train64 *t;
    QP_CHECK_MSG(kn_train64_create(&L, 6, 1, &t, err) == 0, "%s", err);
    double *p = calloc(L.n_floats, sizeof(double)), *g = calloc(L.n_floats, sizeof(double));
    double teacher[6 * 11], dlogits[6 * 11], rows[12];
    tiny_params(&L, p, 42 + tied);
    for (int i = 0; i < 6 * 11; i++) teacher[i] = 2.0 * rng_uniform();
    tiny_loss(t, p, teacher, dlogits, rows);
    kn_train64_backward(t, p, dlogits, g);
    // Central differences, the fourth-order stencil (8(f(x+h) − f(x−h)) − (f(x+2h) − f(x−2h))) / 12h
    // with h = 1e-4: truncation ~ h⁴ f⁽⁵⁾ ~ 1e-16, rounding ~ 1e-16 · |L| / h ~ 1e-12. (The
    // two-point stencil's h² truncation, ~ 1e-10 at h = 1e-5, is too close to the 1e-4 bound
    // for gradients near 1e-6.) Gradients below 1e-6 are compared absolutely, at 1e-10.
    const double h = 1e-4;
    double worst = 0;
    int n_checked = 0;
    for (int i = 0; i < L.n_tensors; i++) {
        const struct kn_tparam *tp = &L.t[i];
        for (int64_t k = 0; k < tp->rows * tp->cols; k++) {
            size_t e = tp->off + (size_t)k;
            double keep = p[e];
            double f[4];
            const double at[4] = {keep + h, keep - h, keep + 2 * h, keep - 2 * h};
            for (int j = 0; j < 4; j++) {
                p[e] = at[j];
                f[j] = tiny_loss(t, p, teacher, dlogits, rows);
            }
            p[e] = keep;
            double fd = (8 * (f[0] - f[1]) - (f[2] - f[3])) / (12 * h), an = g[e];
            double rel = fabs(an - fd) / fmax(fmax(fabs(an), fabs(fd)), 1e-6);
            char name[64];
            kn_train_tensor_name(&L, i, name, sizeof name);
            QP_CHECK_MSG(rel <= 1e-4, "%s[%lld]: analytic %.12g, finite differences %.12g (rel %.3g)", name,
                         (long long)k, an, fd, rel);
            if (rel > worst) worst = rel;
            n_checked++;
        }
    }
    QP_CHECK(n_checked == (int)(11 * 16 * (tied ? 1 : 2) + 16 + 2 * (16 + 256 + 128 + 128 + 256 + 16 + 3 * 384)));
    printf("  %d parameters, worst relative error %.3g\n", n_checked, worst);
    free(p);
    free(g);
    kn_train64_destroy(t);
    kn_train_layout_deinit(&L);
}

QP_TEST(backward_should_match_finite_differences_for_every_parameter_untied) { gradient_check(0); }
QP_TEST(backward_should_match_finite_differences_for_every_parameter_tied) { gradient_check(1); }

// The fp32 path computes what the fp64 specification computes: logits and every gradient within
// fp32 rounding (relative 1e-3 of the largest gradient of the tensor: long fp32 sums).
QP_TEST(fp32_training_path_should_match_the_fp64_specification) {
    struct kn_config c = tiny_config();
    struct kn_train_layout L;
    char err[QP_ERRLEN];
    QP_CHECK_MSG(kn_train_layout_init(&L, &c, 0, err) == 0, "%s", err);
    struct kn_train64 *t64;
    struct kn_train *t32;
    QP_CHECK(kn_train64_create(&L, 6, 1, &t64, err) == 0 && kn_train_create(&L, 6, 1, &t32, err) == 0);
    size_t n = L.n_floats;
    double *p = calloc(n, sizeof(double)), *g = calloc(n, sizeof(double));
    float *pf = calloc(n, sizeof(float)), *gf = calloc(n, sizeof(float));
    double teacher[66], dl[66], rows[12];
    float teacherf[66], dlf[66];
    tiny_params(&L, p, 7);
    for (size_t i = 0; i < n; i++) p[i] = pf[i] = (float)p[i]; // both see the same fp32 values
    for (int i = 0; i < 66; i++) teacher[i] = teacherf[i] = (float)(2.0 * rng_uniform());
    const double *z = kn_train64_forward(t64, p, tiny_tokens, 6);
    const float *zf = kn_train_forward(t32, pf, tiny_tokens, 6);
    for (int i = 0; i < 66; i++) QP_CHECK_NEAR(zf[i], z[i], 1e-5);
    double kl, klf;
    kn_train64_loss(z, teacher, tiny_targets, 6, 11, 0.5, 1.0, 1, dl, rows, &kl, NULL);
    kn_train_loss(zf, teacherf, tiny_targets, 6, 11, 0.5, 1.0, 1, dlf, rows, &klf, NULL);
    QP_CHECK_NEAR(klf, kl, 1e-5);
    kn_train64_backward(t64, p, dl, g);
    kn_train_backward(t32, pf, dlf, gf);
    for (int i = 0; i < L.n_tensors; i++) {
        const struct kn_tparam *tp = &L.t[i];
        double gmax = 0;
        for (int64_t k = 0; k < tp->rows * tp->cols; k++) gmax = fmax(gmax, fabs(g[tp->off + k]));
        for (int64_t k = 0; k < tp->rows * tp->cols; k++)
            QP_CHECK_MSG(fabs(gf[tp->off + k] - g[tp->off + k]) <= 1e-3 * gmax, "tensor %d element %lld: %.9g vs %.9g",
                         i, (long long)k, gf[tp->off + k], g[tp->off + k]);
    }
    free(p), free(g), free(pf), free(gf);
    kn_train64_destroy(t64);
    kn_train_destroy(t32);
    kn_train_layout_deinit(&L);
}

// The training forward is the engine's forward: on stories260K, 96 tokens, logits within 5e-6 of
// the largest |logit| of the engine's (measured 1.4e-5 absolute at |logit| up to ~14, i.e. about
// 1e-6 relative: the engine sums in 16-lane fp32 trees and uses its own exp polynomial, the
// training path sums in fp64 and uses expf; six layers of such differences).
QP_TEST(training_forward_should_give_the_engine_logits_on_stories260K) {
    const char *path = qpt_fixture(MODEL), *tok = qpt_fixture(TOK);
    char err[QP_ERRLEN];
    struct hx_model *m;
    QP_CHECK_MSG(hx_model_open(path, tok, &m, err) == 0, "%s", err);
    struct kn_train_layout L;
    QP_CHECK_MSG(kn_train_layout_init(&L, &m->w.cfg, m->w.tied, err) == 0, "%s", err);
    float *p = qp_alloc_array(L.n_floats, sizeof(float));
    QP_CHECK_MSG(kn_train_params_from(&L, &m->w, p, err) == 0, "%s", err);
    struct kn_layer_weights layers[8];
    struct kn_weights view;
    kn_train_weights_view(&L, p, layers, &view);
    struct kn_engine *e;
    struct kn_state *s;
    QP_CHECK_MSG(kn_engine_create(&view, NULL, &e, err) == 0, "%s", err);
    QP_CHECK(kn_state_create(e, 96, 96, 2, &s, err) == 0);
    int tokens[96];
    for (int i = 0; i < 96; i++) tokens[i] = i == 0 ? 1 : (i * 37 + 11) % 512;
    float *ze = qp_alloc_array(96 * 512, sizeof(float));
    kn_forward(s, tokens, 96, ze, 0, NULL);
    struct kn_train *t;
    QP_CHECK(kn_train_create(&L, 96, 2, &t, err) == 0);
    const float *zt = kn_train_forward(t, p, tokens, 96);
    double worst = 0, zmax = 0;
    for (int i = 0; i < 96 * 512; i++) worst = fmax(worst, fabs(zt[i] - ze[i])), zmax = fmax(zmax, fabs(ze[i]));
    printf("  max |logit difference| %.3g, max |logit| %.3g\n", worst, zmax);
    QP_CHECK_MSG(worst <= 5e-6 * zmax, "max |training logit - engine logit| = %.3g (max |logit| %.3g)", worst, zmax);
    kn_train_destroy(t);
    kn_state_destroy(s);
    kn_engine_destroy(e);
    qp_free(ze);
    qp_free(p);
    kn_train_layout_deinit(&L);
    hx_model_close(m);
}

// Forward, loss and backward give the same bits with 1 and 2 threads (stories260K, 128 tokens:
// enough rows and columns that every product is split into several chunks).
QP_TEST(backward_should_give_the_same_bits_for_1_and_2_threads) {
    const char *path = qpt_fixture(MODEL), *tok = qpt_fixture(TOK);
    char err[QP_ERRLEN];
    struct hx_model *m;
    QP_CHECK_MSG(hx_model_open(path, tok, &m, err) == 0, "%s", err);
    struct kn_train_layout L;
    QP_CHECK(kn_train_layout_init(&L, &m->w.cfg, 0, err) == 0); // untied: the output's own path too
    float *p = qp_alloc_array(L.n_floats, sizeof(float));
    QP_CHECK_MSG(kn_train_params_from(&L, &m->w, p, err) == 0, "%s", err);
    int tokens[128], targets[128];
    for (int i = 0; i < 128; i++) tokens[i] = i == 0 ? 1 : (i * 53 + 5) % 512;
    for (int i = 0; i < 128; i++) targets[i] = i + 1 < 128 ? tokens[i + 1] : -1;
    float *grads[2], *teacher = qp_alloc_array(128 * 512, sizeof(float)), *dl = qp_alloc_array(128 * 512, sizeof(float));
    double rows[256], loss[2];
    for (int i = 0; i < 128 * 512; i++) teacher[i] = (float)((i * 7919) % 1000) / 200.0f;
    for (int nt = 1; nt <= 2; nt++) {
        struct kn_train *t;
        QP_CHECK(kn_train_create(&L, 128, nt, &t, err) == 0);
        grads[nt - 1] = qp_calloc_array(L.n_floats, sizeof(float));
        const float *z = kn_train_forward(t, p, tokens, 128);
        kn_train_loss(z, teacher, targets, 128, 512, 0.3, 1.0 / 128, nt, dl, rows, &loss[nt - 1], NULL);
        kn_train_backward(t, p, dl, grads[nt - 1]);
        kn_train_destroy(t);
    }
    QP_CHECK(loss[0] == loss[1]);
    QP_CHECK(memcmp(grads[0], grads[1], L.n_floats * sizeof(float)) == 0);
    qp_free(grads[0]), qp_free(grads[1]), qp_free(teacher), qp_free(dl), qp_free(p);
    kn_train_layout_deinit(&L);
    hx_model_close(m);
}
