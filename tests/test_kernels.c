// test_kernels.c — every kernel of every ISA this CPU has against the scalar reference, on odd
// shapes and misaligned pointers. Tolerance: none. The SIMD kernels are defined to perform the
// reference's operations in the reference's order (kn_ops.h), so any difference is a bug.
// ISAs the CPU lacks are reported as skipped.
#include <math.h>
#include <stdint.h>

#include "hx_cli.h"
#include "kn_blocks.h"
#include "kn_cpu.h"
#include "kn_ops.h"
#include "kn_types.h"
#include "qp.h"
#include "qp_test.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static float frand(void) { // uniform in [-1, 1)
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 40) * (1.0 / 8388608.0)) - 1.0f;
}

static const struct kn_ops *need(const char *isa) {
    const struct kn_ops *o = kn_ops_for(isa);
    if (!o) QP_SKIP("this CPU has no %s", isa);
    return o;
}

static int same_bits(const float *a, const float *b, size_t n, size_t *where) {
    for (size_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], 4) != 0) {
            *where = i;
            return 0;
        }
    return 1;
}

// Packs W (n_out, n_in) into panels as kn_ops.h defines.
static float *pack(const float *w, int n_out, int n_in) {
    int np = (n_out + KN_NR - 1) / KN_NR;
    float *p = qp_calloc_array((size_t)np * n_in * KN_NR, sizeof(float));
    for (int j = 0; j < n_out; j++)
        for (int k = 0; k < n_in; k++) p[((size_t)(j / KN_NR) * n_in + k) * KN_NR + j % KN_NR] = w[(size_t)j * n_in + k];
    return p;
}

static void check_gemm(const struct kn_ops *o) {
    static const int rows[] = {1, 2, 5, 6, 7, 13, 14, 15, 29};
    static const int ins[] = {1, 3, 8, 17, 64, 67};
    static const int outs[] = {1, 5, 16, 17, 33, 48};
    for (size_t a = 0; a < QP_ARRAY_LEN(rows); a++)
        for (size_t b = 0; b < QP_ARRAY_LEN(ins); b++)
            for (size_t c = 0; c < QP_ARRAY_LEN(outs); c++) {
                int n = rows[a], k = ins[b], m = outs[c];
                size_t ldx = (size_t)k + 3, ldy = (size_t)m + 5;
                float *xbuf = malloc((ldx * n + 1) * sizeof(float)), *x = xbuf + 1; // misaligned
                float *w = malloc((size_t)m * k * sizeof(float));
                float *y0 = calloc(ldy * n, sizeof(float)), *y1 = calloc(ldy * n, sizeof(float));
                for (size_t i = 0; i < ldx * n; i++) x[i] = frand();
                for (size_t i = 0; i < (size_t)m * k; i++) w[i] = frand();
                float *wp = pack(w, m, k);
                kn_ops_ref.gemm_f32(x, ldx, n, wp, k, 0, m, y0, ldy);
                o->gemm_f32(x, ldx, n, wp, k, 0, m, y1, ldy);
                size_t at;
                QP_CHECK_MSG(same_bits(y0, y1, ldy * n, &at),
                             "%s gemm rows %d in %d out %d differs at %zu: %.9g vs %.9g", o->name, n,
                             k, m, at, y0[at], y1[at]);
                // A column range that starts at a later panel must match too.
                if (m > KN_NR) {
                    memset(y1, 0, ldy * n * sizeof(float));
                    o->gemm_f32(x, ldx, n, wp, k, KN_NR, m, y1, ldy);
                    for (int r = 0; r < n; r++)
                        for (int j = KN_NR; j < m; j++)
                            QP_CHECK(memcmp(&y0[r * ldy + j], &y1[r * ldy + j], 4) == 0);
                }
                // The reference itself against a plain double-precision product (sanity).
                for (int r = 0; r < n; r++)
                    for (int j = 0; j < m; j++) {
                        double s = 0;
                        for (int q = 0; q < k; q++) s += (double)x[r * ldx + q] * w[(size_t)j * k + q];
                        QP_CHECK_NEAR(y0[r * ldy + j], s, 1e-5 * k);
                    }
                free(xbuf), free(w), free(y0), free(y1), qp_free(wp);
            }
}

// pack_x + gemm_xp (the engine's path) against the reference gemm_f32 (the definition): rows
// around the tables' block heights, n_in past the k block (512) so that chains resume from y,
// column counts around the column groups; x misaligned with a row stride.
static void check_gemm_xp(const struct kn_ops *o) {
    static const int rows[] = {1, 4, 5, 6, 7, 12, 13, 29};
    static const int ins[] = {1, 17, 67, 600, 1100};
    static const int outs[] = {1, 17, 48, 64, 70, 130};
    for (size_t a = 0; a < QP_ARRAY_LEN(rows); a++)
        for (size_t b = 0; b < QP_ARRAY_LEN(ins); b++)
            for (size_t c = 0; c < QP_ARRAY_LEN(outs); c++) {
                int n = rows[a], k = ins[b], m = outs[c];
                size_t ldx = (size_t)k + 3, ldy = (size_t)m + 5;
                float *xbuf = malloc((ldx * n + 1) * sizeof(float)), *x = xbuf + 1, *w = malloc((size_t)m * k * sizeof(float));
                float *y0 = calloc(ldy * n, sizeof(float)), *y1 = calloc(ldy * n, sizeof(float));
                float *xp = qp_alloc_array((size_t)(n + o->xmr) * k, sizeof(float));
                for (size_t i = 0; i < ldx * n; i++) x[i] = frand();
                for (size_t i = 0; i < (size_t)m * k; i++) w[i] = frand();
                float *wp = pack(w, m, k);
                kn_ops_ref.gemm_f32(x, ldx, n, wp, k, 0, m, y0, ldy);
                o->pack_x(x, ldx, n, k, xp);
                o->gemm_xp(xp, n, wp, k, m, y1, ldy);
                size_t at;
                QP_CHECK_MSG(same_bits(y0, y1, ldy * n, &at), "%s gemm_xp rows %d in %d out %d differs at %zu: %.9g vs %.9g",
                             o->name, n, k, m, at, y0[at], y1[at]);
                free(xbuf), free(w), free(y0), free(y1), qp_free(wp), qp_free(xp);
            }
}

QP_TEST(gemm_xp_ref_should_equal_reference_gemm_bitwise) { check_gemm_xp(&kn_ops_ref); }
QP_TEST(gemm_xp_avx2_should_equal_reference_bitwise) { check_gemm_xp(need("avx2")); }
QP_TEST(gemm_xp_avx512_should_equal_reference_bitwise) { check_gemm_xp(need("avx512")); }

QP_TEST(gemm_avx2_should_equal_reference_bitwise) { check_gemm(need("avx2")); }
QP_TEST(gemm_avx512_should_equal_reference_bitwise) { check_gemm(need("avx512")); }

// pack_f32 / pack_f16: the panels an engine streams must be exactly the ones prepacking builds
// (pack() above, the definition), for every row count up to KN_NR, tails of k, a row stride
// longer than the row, and fp16 rows holding every class of value (zeros, subnormals, normals).
static void check_pack(const struct kn_ops *o) {
    static const int ins[] = {1, 3, 8, 9, 16, 67, 172};
    for (size_t b = 0; b < QP_ARRAY_LEN(ins); b++)
        for (int nr = 1; nr <= KN_NR; nr++) {
            int k = ins[b];
            size_t ld = (size_t)k + 5;
            float *w = malloc(ld * nr * sizeof(float)), *dense = malloc((size_t)nr * k * sizeof(float));
            uint16_t *h = malloc(ld * nr * sizeof(uint16_t));
            for (size_t i = 0; i < ld * nr; i++) {
                w[i] = frand();
                h[i] = (uint16_t)(rng_state >> 20) & 0xFBFF; // any sign and mantissa; exponent < 31
            }
            float *got = qp_alloc_array((size_t)k * KN_NR, sizeof(float));
            for (int pass = 0; pass < 2; pass++) {
                for (int r = 0; r < nr; r++)
                    for (int q = 0; q < k; q++)
                        dense[(size_t)r * k + q] = pass ? qp_fp16_to_fp32(h[r * ld + q]) : w[r * ld + q];
                float *want = pack(dense, nr, k);
                memset(got, 0xFF, (size_t)k * KN_NR * sizeof(float)); // every byte must be written
                if (pass) o->pack_f16(h, ld, nr, k, got);
                else o->pack_f32(w, ld, nr, k, got);
                size_t at;
                QP_CHECK_MSG(same_bits(want, got, (size_t)k * KN_NR, &at), "%s pack_%s rows %d in %d differs at %zu",
                             o->name, pass ? "f16" : "f32", nr, k, at);
                qp_free(want);
            }
            free(w), free(dense), free(h), qp_free(got);
        }
}

// gemv_f16 (decoding on fp16 panels) against gemm_f32, the definition, on the converted weights:
// 1 to KN_GEMV_ROWS rows, column counts that take every panel grouping (8, 4, 2, 1 panels in
// flight and a partial last panel), x misaligned with a row stride; fp16 weights of every class
// (zeros, subnormals, normals). kn_f16_panels_pack and f16_to_f32 are checked on the way: the
// packed fp16 panels converted must be pack()'s fp32 panels of the same weights.
static void check_gemv_f16(const struct kn_ops *o) {
    static const int ins[] = {1, 17, 67, 600};
    static const int outs[] = {1, 5, 16, 17, 48, 70, 130, 255, 272};
    for (int n = 1; n <= KN_GEMV_ROWS; n++)
        for (size_t b = 0; b < QP_ARRAY_LEN(ins); b++)
            for (size_t c = 0; c < QP_ARRAY_LEN(outs); c++) {
                const int k = ins[b], m = outs[c], np = (m + KN_NR - 1) / KN_NR;
                const size_t ldx = (size_t)k + 3, ldy = (size_t)m + 5, ld = (size_t)k + 2;
                float *xbuf = malloc((ldx * n + 1) * sizeof(float)), *x = xbuf + 1, *w = malloc((size_t)m * k * sizeof(float));
                uint16_t *h = malloc(ld * m * sizeof(uint16_t));
                float *y0 = calloc(ldy * n, sizeof(float)), *y1 = calloc(ldy * n, sizeof(float));
                for (size_t i = 0; i < ldx * n; i++) x[i] = frand();
                for (int j = 0; j < m; j++)
                    for (int q = 0; q < k; q++) {
                        h[j * ld + q] = (uint16_t)(rng_state >> 20) & 0xFBFF; // any sign and mantissa; exponent < 31
                        frand();
                        w[(size_t)j * k + q] = qp_fp16_to_fp32(h[j * ld + q]);
                    }
                float *wp = pack(w, m, k), *conv = qp_alloc_array((size_t)np * k * KN_NR, sizeof(float));
                uint16_t *wp16 = qp_alloc_array((size_t)np * k * KN_NR, sizeof(uint16_t));
                kn_f16_panels_pack(h, ld, m, k, wp16);
                o->f16_to_f32(wp16, (size_t)np * k * KN_NR, conv);
                size_t at;
                QP_CHECK_MSG(same_bits(wp, conv, (size_t)np * k * KN_NR, &at), "%s fp16 panels, out %d in %d differ at %zu",
                             o->name, m, k, at);
                kn_ops_ref.gemm_f32(x, ldx, n, wp, k, 0, m, y0, ldy);
                o->gemv_f16(x, ldx, n, wp16, k, m, y1, ldy);
                QP_CHECK_MSG(same_bits(y0, y1, ldy * n, &at), "%s gemv_f16 rows %d in %d out %d differs at %zu: %.9g vs %.9g",
                             o->name, n, k, m, at, y0[at], y1[at]);
                free(xbuf), free(w), free(h), free(y0), free(y1), qp_free(wp), qp_free(conv), qp_free(wp16);
            }
}

QP_TEST(gemv_f16_ref_should_equal_reference_gemm_bitwise) { check_gemv_f16(&kn_ops_ref); }
QP_TEST(gemv_f16_avx2_should_equal_reference_gemm_bitwise) { check_gemv_f16(need("avx2")); }
QP_TEST(gemv_f16_avx512_should_equal_reference_gemm_bitwise) { check_gemv_f16(need("avx512")); }

// dequant_row: kn_dequantize_row's floats for every packed type (the SIMD ones and those that
// fall back), 1 to 9 blocks of random bytes, so scales take every fp16 class; equal bits, or
// NaN on both sides (F16C quiets a signalling NaN scale).
static void check_dequant(const struct kn_ops *o) {
    static const int types[] = {KN_Q8_0, KN_Q4_0, KN_Q4_1, KN_Q5_0, KN_Q5_1, KN_IQ4_NL,
                                KN_Q2_K, KN_Q3_K, KN_Q4_K, KN_Q5_K, KN_Q6_K};
    for (size_t t = 0; t < QP_ARRAY_LEN(types); t++)
        for (int nb = 1; nb <= 9; nb += 4)
            for (int rep = 0; rep < 20; rep++) {
                const int64_t n = (int64_t)nb * kn_type_info(types[t])->block_size;
                const size_t bytes = kn_row_bytes(types[t], n);
                uint8_t *src = qp_alloc(bytes + 64);
                for (size_t i = 0; i < bytes; i++) src[i] = (uint8_t)(frand() * 128 + 128);
                float *want = malloc((size_t)n * sizeof(float)), *got = malloc((size_t)n * sizeof(float));
                kn_dequantize_row(types[t], src + 2, want, n); // src + 2: only 2-byte aligned
                o->dequant_row(types[t], src + 2, got, n);
                int64_t bad = -1;
                for (int64_t i = 0; i < n && bad < 0; i++)
                    if (memcmp(&want[i], &got[i], 4) != 0 && !(isnan(want[i]) && isnan(got[i]))) bad = i;
                QP_CHECK_MSG(bad < 0, "%s dequant_row %s, %d blocks: value %lld is %.9g, not %.9g", o->name,
                             kn_type_info(types[t])->name, nb, (long long)bad, bad < 0 ? 0 : got[bad],
                             bad < 0 ? 0 : want[bad]);
                qp_free(src), free(want), free(got);
            }
}

QP_TEST(dequant_avx2_should_equal_reference_bitwise) { check_dequant(need("avx2")); }
QP_TEST(dequant_avx512_should_equal_reference_bitwise) { check_dequant(need("avx512")); }

QP_TEST(pack_ref_should_build_the_prepacked_panels) { check_pack(&kn_ops_ref); }
QP_TEST(pack_avx2_should_build_the_prepacked_panels) { check_pack(need("avx2")); }
QP_TEST(pack_avx512_should_build_the_prepacked_panels) { check_pack(need("avx512")); }

static void check_rmsnorm(const struct kn_ops *o) {
    for (int n = 1; n <= 70; n++) {
        float *x = malloc((n + 1) * sizeof(float)), *w = malloc(n * sizeof(float));
        float *a = malloc(n * sizeof(float)), *b = malloc((n + 1) * sizeof(float));
        for (int i = 0; i < n + 1; i++) x[i] = 3 * frand();
        for (int i = 0; i < n; i++) w[i] = frand();
        kn_ops_ref.rmsnorm(a, x + 1, w, n, 1e-5f);
        o->rmsnorm(b + 1, x + 1, w, n, 1e-5f);
        size_t at;
        QP_CHECK_MSG(same_bits(a, b + 1, n, &at), "%s rmsnorm n=%d differs at %zu", o->name, n, at);
        double ss = 0;
        for (int i = 0; i < n; i++) ss += (double)x[i + 1] * x[i + 1];
        double s = 1 / sqrt(ss / n + 1e-5);
        for (int i = 0; i < n; i++) QP_CHECK_NEAR(a[i], w[i] * x[i + 1] * s, 1e-5);
        // in place
        memcpy(b, x + 1, n * sizeof(float));
        o->rmsnorm(b, b, w, n, 1e-5f);
        QP_CHECK(same_bits(a, b, n, &at));
        free(x), free(w), free(a), free(b);
    }
}

QP_TEST(rmsnorm_avx2_should_equal_reference_bitwise) { check_rmsnorm(need("avx2")); }
QP_TEST(rmsnorm_avx512_should_equal_reference_bitwise) { check_rmsnorm(need("avx512")); }

static void check_attend(const struct kn_ops *o) {
    static const int hss[] = {2, 6, 8, 16, 24, 64};
    for (size_t h = 0; h < QP_ARRAY_LEN(hss); h++)
        for (int nk = 1; nk <= 75; nk += (nk < 20 ? 1 : 7)) {
            int hs = hss[h];
            size_t stride = (size_t)nk + 3;
            float *q = malloc(hs * sizeof(float)), *kt = malloc(hs * stride * sizeof(float));
            float *v = malloc((size_t)nk * hs * sizeof(float));
            float *a = malloc(hs * sizeof(float)), *b = malloc(hs * sizeof(float));
            float *s0 = qp_alloc(((nk + 15) / 16 * 16) * sizeof(float));
            float *s1 = qp_alloc(((nk + 15) / 16 * 16) * sizeof(float));
            for (int i = 0; i < hs; i++) q[i] = 2 * frand();
            for (size_t i = 0; i < hs * stride; i++) kt[i] = 2 * frand();
            for (int i = 0; i < nk * hs; i++) v[i] = frand();
            kn_ops_ref.attend(a, q, kt, stride, v, hs, nk, s0);
            o->attend(b, q, kt, stride, v, hs, nk, s1);
            size_t at;
            QP_CHECK_MSG(same_bits(a, b, hs, &at), "%s attend hs=%d keys=%d differs at %zu: %.9g vs %.9g",
                         o->name, hs, nk, at, a[at], b[at]);
            // against a double-precision softmax
            double *p = malloc(nk * sizeof(double)), mx = -1e300, sum = 0;
            for (int j = 0; j < nk; j++) {
                double d = 0;
                for (int i = 0; i < hs; i++) d += (double)q[i] * kt[i * stride + j];
                p[j] = d / sqrt((double)hs);
                if (p[j] > mx) mx = p[j];
            }
            for (int j = 0; j < nk; j++) sum += (p[j] = exp(p[j] - mx));
            for (int i = 0; i < hs; i++) {
                double r = 0;
                for (int j = 0; j < nk; j++) r += p[j] / sum * v[j * hs + i];
                QP_CHECK_NEAR(a[i], r, 1e-5);
            }
            free(q), free(kt), free(v), free(a), free(b), free(p), qp_free(s0), qp_free(s1);
        }
}

QP_TEST(attend_avx2_should_equal_reference_bitwise) { check_attend(need("avx2")); }
QP_TEST(attend_avx512_should_equal_reference_bitwise) { check_attend(need("avx512")); }

static void check_swiglu_lse(const struct kn_ops *o) {
    for (int n = 1; n <= 90; n++) {
        float *g = malloc((n + 1) * sizeof(float)), *u = malloc(n * sizeof(float));
        float *a = malloc(n * sizeof(float)), *b = malloc((n + 1) * sizeof(float));
        for (int i = 0; i <= n; i++) g[i] = 12 * frand();
        for (int i = 0; i < n; i++) u[i] = frand();
        kn_ops_ref.swiglu(a, g + 1, u, n);
        o->swiglu(b + 1, g + 1, u, n);
        size_t at;
        QP_CHECK_MSG(same_bits(a, b + 1, n, &at), "%s swiglu n=%d differs at %zu", o->name, n, at);
        for (int i = 0; i < n; i++) {
            double x = g[i + 1];
            QP_CHECK_NEAR(a[i], x / (1 + exp(-x)) * u[i], 1e-6);
        }
        for (int i = 0; i <= n; i++) g[i] *= 4; // logits in [-48, 48]
        float m0, m1;
        double l0 = kn_ops_ref.logsumexp(g + 1, n, &m0);
        double l1 = o->logsumexp(g + 1, n, &m1);
        QP_CHECK_MSG(memcmp(&l0, &l1, 8) == 0 && m0 == m1, "%s logsumexp n=%d: %.17g vs %.17g",
                     o->name, n, l0, l1);
        double mx = -1e300, s = 0;
        for (int i = 1; i <= n; i++) mx = g[i] > mx ? g[i] : mx;
        for (int i = 1; i <= n; i++) s += exp((double)g[i] - mx);
        QP_CHECK_NEAR(l0, log(s) + mx, 1e-6);
        free(g), free(u), free(a), free(b);
    }
}

QP_TEST(swiglu_and_logsumexp_avx2_should_equal_reference_bitwise) { check_swiglu_lse(need("avx2")); }
QP_TEST(swiglu_and_logsumexp_avx512_should_equal_reference_bitwise) { check_swiglu_lse(need("avx512")); }

QP_TEST(expf_ref_should_be_within_two_ulp_of_libm) {
    double worst = 0;
    for (float x = -87.0f; x <= 88.0f; x += 0.0137f) {
        double want = exp((double)x), got = kn_expf_ref(x);
        double rel = fabs(got - want) / want;
        if (rel > worst) worst = rel;
    }
    QP_CHECK_MSG(worst < 2.4e-7, "worst relative error %.3g", worst); // 2 ulp of float
    QP_CHECK(kn_expf_ref(0.0f) == 1.0f);
    QP_CHECK(kn_expf_ref(-100.0f) == 0.0f);
}

// The one CPU probe: every level implies the ones below it, and the tables follow it.
QP_TEST(cpu_probe_should_order_the_levels_and_agree_with_the_tables) {
    const struct kn_cpu *c = kn_cpu();
    QP_CHECK(kn_cpu_has("ref") && !kn_cpu_has("sse9"));
    QP_CHECK(!c->avx512 || c->avx2);
    QP_CHECK(!c->avx2 || (c->fma && c->f16c));
    QP_CHECK(!c->avx512_vnni || c->avx512);
    QP_CHECK(!c->avx512_bf16 || c->avx512);
    QP_CHECK(!c->avx_vnni || c->avx2);
    QP_CHECK_INT_EQ(kn_ops_for("avx2") != NULL, c->avx2);
    QP_CHECK_INT_EQ(kn_ops_for("avx512") != NULL, c->avx512);
    char flags[128];
    QP_CHECK(strlen(kn_cpu_flags(flags, sizeof flags)) > 0);
    QP_CHECK(strlen(c->model) < sizeof c->model);
}

QP_TEST(dispatch_should_honour_qprobe_isa) {
    char err[QP_ERRLEN];
    const char *best = kn_ops_best()->name;
    setenv("QPROBE_ISA", "ref", 1);
    QP_CHECK(hx_kernel_env(err) == 0); // the CLI passes the variable down with kn_ops_force
    QP_CHECK_STR_EQ(kn_ops_best()->name, "ref");
    setenv("QPROBE_ISA", "sse9", 1);
    QP_CHECK(hx_kernel_env(err) == QP_EINVAL);
    QP_CHECK(strstr(err, "QPROBE_ISA") != NULL && strstr(err, "sse9") != NULL);
    unsetenv("QPROBE_ISA");
    QP_CHECK(hx_kernel_env(err) == 0);
    QP_CHECK_STR_EQ(kn_ops_best()->name, best);
    QP_CHECK(kn_ops_force("avx9", err) == QP_EINVAL);
}

static void check_attend_rows(const struct kn_ops *o) {
    static const int hss[] = {2, 8, 16, 24, 64};
    for (size_t h = 0; h < QP_ARRAY_LEN(hss); h++)
        for (int nq = 1; nq <= 11; nq++)
            for (int nk0 = 1; nk0 <= 40; nk0 += 3) {
                int hs = hss[h], nk = nk0 + nq - 1;
                size_t stride = (size_t)nk + 5, sstride = ((size_t)nk + 15) / 16 * 16;
                size_t qs = (size_t)hs * 3 + 1, os = (size_t)hs * 2 + 3;
                float *q = malloc(qs * nq * sizeof(float)), *kt = malloc(hs * stride * sizeof(float));
                float *v = malloc((size_t)nk * hs * sizeof(float));
                float *a = calloc(os * nq, sizeof(float)), *b = calloc(os * nq, sizeof(float));
                float *sc = qp_alloc(sstride * nq * sizeof(float));
                for (size_t i = 0; i < qs * nq; i++) q[i] = 2 * frand();
                for (size_t i = 0; i < hs * stride; i++) kt[i] = 2 * frand();
                for (int i = 0; i < nk * hs; i++) v[i] = frand();
                for (int i = 0; i < nq; i++)
                    kn_ops_ref.attend(a + i * os, q + i * qs, kt, stride, v, hs, nk0 + i, sc);
                o->attend_rows(b, os, q, qs, nq, kt, stride, v, hs, nk0, sc, sstride);
                size_t at;
                QP_CHECK_MSG(same_bits(a, b, os * nq, &at), "%s attend_rows hs=%d nq=%d nk0=%d differs at %zu",
                             o->name, hs, nq, nk0, at);
                free(q), free(kt), free(v), free(a), free(b), qp_free(sc);
            }
}

QP_TEST(attend_rows_avx2_should_equal_one_query_reference_bitwise) { check_attend_rows(need("avx2")); }
QP_TEST(attend_rows_avx512_should_equal_one_query_reference_bitwise) { check_attend_rows(need("avx512")); }
QP_TEST(attend_rows_ref_should_equal_one_query_reference_bitwise) { check_attend_rows(&kn_ops_ref); }
