// test_ptq.c — calibrated post-training quantization: GPTQ's algebra on synthetic layers (the
// inverse-Hessian factor, the reported loss against the output error computed directly, the
// win over round-to-nearest, dead inputs, damping raised), AWQ's search, SmoothQuant's fold,
// the calibration/evaluation overlap rule, and the methods end to end on stories260K against
// round-to-nearest with the same bits and group (held-out perplexity and KLD, calibration on
// the first part of tinystories_val.txt, evaluation on a later part); GPTQ's blocked Cholesky
// against the textbook loop bit for bit, one factor shared by the tensors of one input, the
// grids out; SmoothQuant against plain W8A8 with per-token and static per-tensor int8
// activations, the engine's int8 activation modes against hand computations, the static scales
// the driver derives; `qprobe ppl --calib`.
#include <math.h>
#include <omp.h>
#include <stdint.h>

#include "hx_calib.h"
#include "kn_blocks.h"
#include "kn_engine.h"
#include "hx_lockstep.h"
#include "hx_model.h"
#include "qp.h"
#include "qp_test.h"
#include "qz_awq.h"
#include "qz_ggml.h"
#include "qz_gptq.h"
#include "qz_rtn.h"
#include "qz_smooth.h"
#include "qz_spec.h"
#include "hx_tokenizer.h"
#include "hx_variant.h"

#define MODEL "models/llama2c/stories260K.bin"
#define TOK "models/llama2c/tok512.bin"
#define TEXT "data/tinystories/tinystories_val.txt"

// The split of tinystories_val.txt (794375 bytes): calibration from its first CALIB_BYTES,
// evaluation from EVAL_FROM on (no shared run of 256 bytes: checked by a case below).
#define CALIB_BYTES 300000
#define EVAL_FROM 400000

// ---------------------------------------------------------------------------------------------
// Synthetic layers

// A small deterministic generator (xorshift64*), uniform in [-1, 1) and roughly normal.
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static double urand(void) {
    rng_state ^= rng_state >> 12, rng_state ^= rng_state << 25, rng_state ^= rng_state >> 27;
    return (double)((rng_state * 0x2545f4914f6cdd1dull) >> 11) / (double)(1ull << 53) * 2.0 - 1.0;
}
static double nrand(void) { return (urand() + urand() + urand() + urand()) * 0.8660254; }
static void rng_seed(uint64_t s) { rng_state = s * 0x9e3779b97f4a7c15ull + 1; }

// X (n × cols): correlated channels (a shared low-rank part plus noise), a few channels 10x
// larger than the rest (the "salient" inputs of AWQ's paper), and optionally dead channels.
static float *make_x(int64_t n, int64_t cols, int dead_every) {
    float *x = malloc((size_t)(n * cols) * sizeof *x);
    for (int64_t t = 0; t < n; t++) {
        double f[3] = {nrand(), nrand(), nrand()};
        for (int64_t j = 0; j < cols; j++) {
            double v = 0.7 * nrand() + 0.5 * f[j % 3] + 0.3 * f[(j * 7) % 3] * (j % 5 == 0);
            if (j % 17 == 3) v *= 10;
            if (dead_every && j % dead_every == dead_every - 1) v = 0;
            x[t * cols + j] = (float)v;
        }
    }
    return x;
}

static float *make_w(int64_t rows, int64_t cols) {
    float *w = malloc((size_t)(rows * cols) * sizeof *w);
    for (int64_t k = 0; k < rows * cols; k++) w[k] = (float)(0.05 * nrand());
    return w;
}

// H = (2/N) Σ x xᵀ in fp64.
static double *make_h(const float *x, int64_t n, int64_t cols) {
    double *h = calloc((size_t)(cols * cols), sizeof *h);
    for (int64_t t = 0; t < n; t++)
        for (int64_t a = 0; a < cols; a++)
            for (int64_t b = 0; b < cols; b++) h[a * cols + b] += (double)x[t * cols + a] * x[t * cols + b];
    for (int64_t k = 0; k < cols * cols; k++) h[k] *= 2.0 / (double)n;
    return h;
}

// (1/N) Σ_t ‖(W − Q) x_t‖², computed directly from the tokens.
static double output_err(const float *w, const float *q, const float *x, int64_t rows, int64_t cols, int64_t n) {
    double e = 0;
    for (int64_t t = 0; t < n; t++)
        for (int64_t r = 0; r < rows; r++) {
            double d = 0;
            for (int64_t j = 0; j < cols; j++) d += ((double)w[r * cols + j] - q[r * cols + j]) * x[t * cols + j];
            e += d * d;
        }
    return e / (double)n;
}

// ½ Σ_r Δ_r (H + λI) Δ_rᵀ with Δ = w (dead columns zeroed) − q: what obs_loss sums.
static double damped_quad(const float *w, const float *q, const double *h, int64_t rows, int64_t cols, double frac) {
    double mean = 0;
    for (int64_t j = 0; j < cols; j++) mean += h[j * cols + j] == 0 ? 1 : h[j * cols + j];
    double lam = frac * mean / (double)cols, e = 0;
    double *d = malloc((size_t)cols * sizeof *d);
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t j = 0; j < cols; j++) d[j] = (h[j * cols + j] == 0 ? 0.0 : (double)w[r * cols + j]) - q[r * cols + j];
        for (int64_t a = 0; a < cols; a++) {
            double t = 0;
            for (int64_t b = 0; b < cols; b++) t += (h[a * cols + b] + (a == b ? (h[a * cols + a] == 0 ? 1 : 0) + lam : 0)) * d[b];
            e += d[a] * t;
        }
    }
    free(d);
    return e / 2;
}

static struct qz_base parse_base(const char *s) {
    struct qz_base b;
    char err[QP_ERRLEN];
    QP_CHECK_MSG(qz_base_parse(s, &b, err) == 0, "%s", err);
    return b;
}

// Round to nearest on the same target: the RTN grid of a gptq base, or llama.cpp's own blocks.
static void rtn_same_target(const struct qz_base *g, const float *w, float *q, int64_t rows, int64_t cols) {
    if (g->ggml_type >= 0) {
        size_t rb = kn_row_bytes(g->ggml_type, cols);
        uint8_t *buf = malloc(rb);
        for (int64_t r = 0; r < rows; r++) {
            QP_CHECK(qz_quantize_row(g->ggml_type, w + r * cols, buf, cols, NULL) == 0);
            kn_dequantize_row(g->ggml_type, buf, q + r * cols, cols);
        }
        free(buf);
        return;
    }
    struct qz_base b = {.method = QZ_RTN, .bits = g->bits, .gran = QZ_GROUP, .group = g->group, .sym = g->sym,
                        .ggml_type = -1};
    QP_CHECK(qz_fake_quant(&b, w, q, rows, cols, NULL) == 0);
}

// Relative agreement of the loss GPTQ reports with the output error computed from the tokens:
// both are fp64 sums of the same ~1e5 products in different orders.
#define LOSS_REL_TOL 1e-9
// obs_loss accumulates the sweep's increments in fp64 through a triangular solve and the lazy
// updates, against the damped quadratic evaluated directly: agreement to rounding of O(cols³).
#define OBS_REL_TOL 1e-6

QP_TEST(gptq_inverse_factor_should_be_the_upper_cholesky_factor_of_the_inverse) {
    rng_seed(1);
    int64_t n = 37, N = 200;
    float *x = make_x(N, n, 0);
    double *h = make_h(x, N, n), *u = malloc((size_t)(n * n) * sizeof *u);
    double damp = 0.01;
    QP_CHECK(qz_gptq_inverse_factor(h, n, damp, u) == 0);
    // U upper with a positive diagonal, and Uᵀ U (H + damp I) = I.
    for (int64_t i = 0; i < n; i++) {
        QP_CHECK(u[i * n + i] > 0);
        for (int64_t j = 0; j < i; j++) QP_CHECK(u[i * n + j] == 0);
    }
    double worst = 0;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) {
            double p = 0; // (Uᵀ U H)[i][j] = Σ_k Σ_m U[k][i] U[k][m] H'[m][j]
            for (int64_t k = 0; k < n; k++) {
                double t = 0;
                for (int64_t m = 0; m < n; m++) t += u[k * n + m] * (h[m * n + j] + (m == j ? damp : 0));
                p += u[k * n + i] * t;
            }
            worst = fmax(worst, fabs(p - (i == j)));
        }
    QP_CHECK_MSG(worst < 1e-9, "max |UᵀU H - I| = %g", worst);
    // Not positive definite: refused.
    for (int64_t i = 0; i < n * n; i++) h[i] = -h[i];
    QP_CHECK(qz_gptq_inverse_factor(h, n, damp, u) == -1);
    free(x), free(h), free(u);
}

QP_TEST(gptq_loss_should_equal_the_output_error_and_beat_rtn_on_a_synthetic_layer) {
    rng_seed(2);
    static const char *specs[] = {
        "gptq:bits=4:group=32:asym",
        "gptq:bits=3:group=32:asym:actorder",
        "gptq:bits=4:group=32:asym:actorder:static",
        "gptq:bits=3:group=48",
        "gptq:bits=2:group=1000:asym:damp=0.1", // one group per row (cols < group), not a block multiple
        "gptq:q4_0",
        "gptq:q4_1:actorder",
        "gptq:iq4_nl",
    };
    int64_t rows = 24, cols = 160, N = 600;
    float *x = make_x(N, cols, 0), *w = make_w(rows, cols);
    double *h = make_h(x, N, cols);
    float *q = malloc((size_t)(rows * cols) * sizeof *q), *r = malloc((size_t)(rows * cols) * sizeof *r);
    char err[QP_ERRLEN];
    for (size_t i = 0; i < QP_ARRAY_LEN(specs); i++) {
        struct qz_base b = parse_base(specs[i]);
        struct qz_gptq_info info;
        QP_CHECK_MSG(qz_gptq_quantize(&b, w, rows, cols, h, q, &info, err) == 0, "%s: %s", specs[i], err);
        double direct = output_err(w, q, x, rows, cols, N);
        rtn_same_target(&b, w, r, rows, cols);
        double rtn = output_err(w, r, x, rows, cols, N);
        double quad = damped_quad(w, q, h, rows, cols, info.damp);
        fprintf(stderr, "%-40s loss %.6g direct %.6g obs %.6g damped %.6g rtn %.6g (%.1f%%)\n", specs[i], info.loss,
                direct, info.obs_loss, quad, rtn, 100 * direct / rtn);
        QP_CHECK_MSG(fabs(info.loss - direct) <= LOSS_REL_TOL * direct, "%s: loss %.12g vs %.12g", specs[i], info.loss,
                     direct);
        QP_CHECK_MSG(fabs(info.obs_loss - quad) <= OBS_REL_TOL * quad, "%s: obs %.12g vs %.12g", specs[i],
                     info.obs_loss, quad);
        QP_CHECK_MSG(direct < rtn, "%s: GPTQ %.6g not below RTN %.6g", specs[i], direct, rtn);
        QP_CHECK(info.n_raises == 0 && info.n_dead == 0);
    }
    free(x), free(w), free(h), free(q), free(r);
}

// Greatest common divisor of two non-negative reals, to within tol.
static double fgcd(double a, double b, double tol) {
    if (a < b) {
        double t = a;
        a = b, b = t;
    }
    while (b > tol) {
        double t = fmod(a, b);
        if (t > b - tol) t = 0;
        a = b, b = t;
    }
    return a;
}

// With a llama.cpp target every output block must lie on one grid of that type: q4_0 blocks hold
// at most 16 distinct values, evenly spaced (A·k + B).
QP_TEST(gptq_on_a_llamacpp_type_should_stay_on_each_block_grid) {
    rng_seed(3);
    int64_t rows = 8, cols = 256, N = 400;
    float *x = make_x(N, cols, 0), *w = make_w(rows, cols), *q = malloc((size_t)(rows * cols) * sizeof *q);
    double *h = make_h(x, N, cols);
    char err[QP_ERRLEN];
    static const char *specs[] = {"gptq:q4_0", "gptq:q4_k", "gptq:q6_k:actorder"};
    for (size_t s = 0; s < QP_ARRAY_LEN(specs); s++) {
        struct qz_base b = parse_base(specs[s]);
        QP_CHECK_MSG(qz_gptq_quantize(&b, w, rows, cols, h, q, NULL, err) == 0, "%s", err);
        int sub = b.ggml_type == KN_Q4_0 || b.ggml_type == KN_Q4_K ? 32 : 16; // weights sharing one scale
        int levels = b.ggml_type == KN_Q6_K ? 64 : 16;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c0 = 0; c0 < cols; c0 += sub) {
                float v[64];
                int nv = 0;
                for (int64_t k = 0; k < sub; k++) {
                    float y = q[r * cols + c0 + k];
                    int seen = 0;
                    for (int m = 0; m < nv; m++) seen |= v[m] == y;
                    if (!seen) {
                        QP_CHECK_MSG(nv < levels, "%s: row %lld block %lld has more than %d values", specs[s],
                                     (long long)r, (long long)c0, levels);
                        v[nv++] = y;
                    }
                }
                // on one grid of `levels` points: the differences have a common unit u (float gcd),
                // and the values span at most levels - 1 units
                float lo = INFINITY, hi = -INFINITY;
                for (int m = 0; m < nv; m++) lo = fminf(lo, v[m]), hi = fmaxf(hi, v[m]);
                if (nv < 2) continue;
                double tol = 1e-4 * (hi - lo), u = 0;
                for (int m = 0; m < nv; m++) u = fgcd(u, v[m] - lo, tol);
                QP_CHECK_MSG(u * (levels - 1) >= (hi - lo) - tol, "%s: row %lld block %lld: %d values over %g, unit %g",
                             specs[s], (long long)r, (long long)c0, nv, hi - lo, u);
            }
    }
    // and a row length that is not a whole number of blocks is refused
    struct qz_base b = parse_base("gptq:q4_k");
    QP_CHECK_INT_EQ(qz_gptq_quantize(&b, w, rows, 160, h, q, NULL, err), QP_EINVAL);
    free(x), free(w), free(q), free(h);
}

QP_TEST(gptq_should_handle_dead_inputs_and_raise_damping_when_needed) {
    rng_seed(4);
    int64_t rows = 12, cols = 64, N = 300;
    float *x = make_x(N, cols, 8), *w = make_w(rows, cols), *q = malloc((size_t)(rows * cols) * sizeof *q);
    double *h = make_h(x, N, cols);
    char err[QP_ERRLEN];
    struct qz_base b = parse_base("gptq:bits=4:group=16:asym:actorder");
    struct qz_gptq_info info;
    QP_CHECK_MSG(qz_gptq_quantize(&b, w, rows, cols, h, q, &info, err) == 0, "%s", err);
    QP_CHECK_INT_EQ(info.n_dead, cols / 8);
    for (int64_t k = 0; k < rows * cols; k++) QP_CHECK(isfinite(q[k]));
    QP_CHECK_NEAR(info.loss, output_err(w, q, x, rows, cols, N), LOSS_REL_TOL);
    // An indefinite H: the identity with one 2x2 block [[1, 1.05], [1.05, 1]] (eigenvalue -0.05).
    // damp 0.01 cannot fix it, 0.1 can: one raise.
    memset(h, 0, (size_t)(cols * cols) * sizeof *h);
    for (int64_t i = 0; i < cols; i++) h[i * cols + i] = 1;
    h[0 * cols + 1] = h[1 * cols + 0] = 1.05;
    b = parse_base("gptq:bits=4:group=16");
    QP_CHECK_MSG(qz_gptq_quantize(&b, w, rows, cols, h, q, &info, err) == 0, "%s", err);
    QP_CHECK_INT_EQ(info.n_raises, 1);
    QP_CHECK_NEAR(info.damp, 0.1, 1e-12);
    // Negative definite: no damping helps; an error, not a crash.
    for (int64_t i = 0; i < cols; i++) h[i * cols + i] = -1;
    QP_CHECK_INT_EQ(qz_gptq_quantize(&b, w, rows, cols, h, q, &info, err), QP_ERANGE);
    QP_CHECK(strstr(err, "not positive definite"));
    free(x), free(w), free(q), free(h);
}

// The textbook lower Cholesky triple loop: L[i][j] = (a[i][j] − Σ_{k<j} L[i][k]·L[j][k]) / L[j][j],
// the sum subtracted term by term in k order (the build has -ffp-contract=off: no fma). -1 when
// a pivot is not positive and finite. l: n × n, upper triangle zero.
static int chol_textbook(const double *a, double *l, int64_t n) {
    memset(l, 0, (size_t)(n * n) * sizeof *l);
    for (int64_t j = 0; j < n; j++) {
        double s = a[j * n + j];
        for (int64_t k = 0; k < j; k++) s -= l[j * n + k] * l[j * n + k];
        if (!(s > 0) || !isfinite(s)) return -1;
        l[j * n + j] = sqrt(s);
        for (int64_t i = j + 1; i < n; i++) {
            double t = a[i * n + j];
            for (int64_t k = 0; k < j; k++) t -= l[i * n + k] * l[j * n + k];
            l[i * n + j] = t / l[j * n + j];
        }
    }
    return 0;
}

// A random symmetric positive definite n × n matrix: symmetric noise in [-1, 1) plus a diagonal
// large enough (n/2 + 1) with the upper triangle left as noise (the factorization ignores it).
static double *random_spd(int64_t n) {
    double *a = malloc((size_t)(n * n) * sizeof *a);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j <= i; j++) a[i * n + j] = a[j * n + i] = urand();
    for (int64_t i = 0; i < n; i++) a[i * n + i] = fabs(a[i * n + i]) + 0.5 * (double)n + 1;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = i + 1; j < n; j++) a[i * n + j] = urand();
    return a;
}

// Factors a copy of a with qz_gptq_cholesky (simd 0 / 1) and compares with l bit for bit.
static void check_chol_bits(const double *a, const double *l, int64_t n, int simd, const char *what) {
    double *c = malloc((size_t)(n * n) * sizeof *c);
    memcpy(c, a, (size_t)(n * n) * sizeof *c);
    QP_CHECK_MSG(qz_gptq_cholesky(c, n, simd) == 0, "%s n=%lld simd=%d: refused", what, (long long)n, simd);
    int64_t bad = 0;
    for (int64_t k = 0; k < n * n; k++) bad += memcmp(&c[k], &l[k], sizeof *c) != 0;
    QP_CHECK_MSG(bad == 0, "%s n=%lld simd=%d: %lld elements differ from the textbook loop", what, (long long)n, simd,
                 (long long)bad);
    free(c);
}

QP_TEST(gptq_cholesky_should_equal_the_textbook_loop_bit_for_bit) {
    rng_seed(11);
    static const int64_t sizes[] = {1, 7, 64, 65, 130, 300, 1000}; // 65, 130, 300, 1000: partial last panel
    int threads = omp_get_max_threads();
    for (size_t s = 0; s < QP_ARRAY_LEN(sizes); s++) {
        int64_t n = sizes[s];
        double *a = random_spd(n), *l = malloc((size_t)(n * n) * sizeof *l);
        QP_CHECK(chol_textbook(a, l, n) == 0);
        check_chol_bits(a, l, n, 1, "random");
        check_chol_bits(a, l, n, 0, "random");
        if (n == 300) { // one thread: the same bits
            omp_set_num_threads(1);
            check_chol_bits(a, l, n, 1, "one thread");
            omp_set_num_threads(threads);
        }
        free(a), free(l);
    }
    // A Hessian-like matrix (a Gram of correlated channels, small damping): ill-conditioned.
    int64_t n = 200, N = 400;
    float *x = make_x(N, n, 0);
    double *h = make_h(x, N, n), *l = malloc((size_t)(n * n) * sizeof *l);
    for (int64_t i = 0; i < n; i++) h[i * n + i] += 1e-3;
    QP_CHECK(chol_textbook(h, l, n) == 0);
    check_chol_bits(h, l, n, 1, "gram");
    check_chol_bits(h, l, n, 0, "gram");
    // Not positive definite, in the first panel and in a later one: -1.
    for (int simd = 0; simd <= 1; simd++) {
        double *a = random_spd(n);
        a[150 * n + 150] = -1;
        QP_CHECK_INT_EQ(qz_gptq_cholesky(a, n, simd), -1);
        for (int64_t k = 0; k < n * n; k++) a[k] = -a[k];
        QP_CHECK_INT_EQ(qz_gptq_cholesky(a, n, simd), -1);
        free(a);
    }
    free(x), free(h), free(l);
}

static int same_bits_f(const float *a, const float *b, int64_t n) { return memcmp(a, b, (size_t)n * sizeof *a) == 0; }

// q, k, v (or gate, up) read one input: one factor serves them all, with the bits of separate
// calls — also when the factor's damping had to be raised — and a factor is refused where it
// does not fit.
QP_TEST(gptq_shared_factor_should_give_the_same_bits_as_separate_calls) {
    rng_seed(12);
    int64_t cols = 160, N = 500, rows[] = {24, 40, 8};
    float *x = make_x(N, cols, 16);
    double *h = make_h(x, N, cols);
    static const char *specs[] = {"gptq:bits=4:group=32:asym:actorder", "gptq:bits=3:group=16:actorder:static",
                                  "gptq:q4_0:actorder"};
    char err[QP_ERRLEN];
    for (int indefinite = 0; indefinite <= 1; indefinite++) {
        if (indefinite) h[3 * cols + 5] = h[5 * cols + 3] = 1.3 * sqrt(h[3 * cols + 3] * h[5 * cols + 5]);
        struct qz_base b0 = parse_base(specs[0]);
        struct qz_gptq_factor *f = NULL;
        QP_CHECK_MSG(qz_gptq_factor_create(&b0, h, cols, &f, err) == 0, "%s", err);
        for (size_t s = 0; s < QP_ARRAY_LEN(specs); s++) {
            struct qz_base b = parse_base(specs[s]);
            QP_CHECK(qz_gptq_factor_fits(f, &b, cols));
            float *w = make_w(rows[s], cols), *q1 = malloc((size_t)(rows[s] * cols) * sizeof *q1),
                  *q2 = malloc((size_t)(rows[s] * cols) * sizeof *q2);
            struct qz_gptq_info i1, i2;
            QP_CHECK_MSG(qz_gptq_quantize(&b, w, rows[s], cols, h, q1, &i1, err) == 0, "%s", err);
            QP_CHECK_MSG(qz_gptq_quantize_f(&b, w, rows[s], cols, h, f, q2, NULL, &i2, err) == 0, "%s", err);
            QP_CHECK_MSG(same_bits_f(q1, q2, rows[s] * cols), "%s: shared factor changed q", specs[s]);
            QP_CHECK(memcmp(&i1.loss, &i2.loss, sizeof i1.loss) == 0 && memcmp(&i1.obs_loss, &i2.obs_loss, 8) == 0);
            QP_CHECK(i1.damp == i2.damp && i1.n_raises == i2.n_raises && i1.n_dead == i2.n_dead);
            QP_CHECK_INT_EQ(i2.n_raises, indefinite ? 2 : 0);
            QP_CHECK_INT_EQ(i2.n_dead, cols / 16);
            free(w), free(q1), free(q2);
        }
        // other damp, no actorder, another width, another Hessian: refused
        float *w = make_w(4, cols), *q = malloc((size_t)(4 * cols) * sizeof *q);
        struct qz_base bd = parse_base("gptq:bits=4:group=32:actorder:damp=0.02"), bo = parse_base("gptq:bits=4:group=32");
        QP_CHECK(!qz_gptq_factor_fits(f, &bd, cols) && !qz_gptq_factor_fits(f, &bo, cols) &&
                 !qz_gptq_factor_fits(f, &b0, cols - 1));
        QP_CHECK_INT_EQ(qz_gptq_quantize_f(&bd, w, 4, cols, h, f, q, NULL, NULL, err), QP_EINVAL);
        h[7 * cols + 7] *= 2;
        QP_CHECK_INT_EQ(qz_gptq_quantize_f(&b0, w, 4, cols, h, f, q, NULL, NULL, err), QP_EINVAL);
        QP_CHECK(strstr(err, "another Hessian"));
        h[7 * cols + 7] /= 2;
        free(w), free(q);
        qz_gptq_factor_destroy(f);
    }
    free(x), free(h);
}

// Grids out: where the groups are in original column order, every output value is a point of
// its group's grid; elsewhere none are written and the info says so.
QP_TEST(gptq_grids_should_hold_every_value_of_their_group) {
    rng_seed(13);
    int64_t rows = 12, cols = 160, N = 500;
    float *x = make_x(N, cols, 20), *w = make_w(rows, cols), *q = malloc((size_t)(rows * cols) * sizeof *q);
    double *h = make_h(x, N, cols);
    char err[QP_ERRLEN];
    static const struct {
        const char *spec;
        int written;
    } cases[] = {{"gptq:bits=4:group=32:asym", 1},         {"gptq:bits=3:group=48:actorder:static", 1},
                 {"gptq:bits=2:group=1000", 1},            {"gptq:bits=8:group=7:asym", 1},
                 {"gptq:bits=4:group=32:asym:actorder", 0}, {"gptq:q4_0", 0}};
    for (size_t c = 0; c < QP_ARRAY_LEN(cases); c++) {
        struct qz_base b = parse_base(cases[c].spec);
        int64_t G = b.ggml_type >= 0 ? 32 : b.group, ng = (cols + G - 1) / G;
        struct qz_grid *grids = malloc((size_t)(rows * ng) * sizeof *grids);
        memset(grids, 0xa5, (size_t)(rows * ng) * sizeof *grids);
        struct qz_gptq_info info;
        QP_CHECK_MSG(qz_gptq_quantize_f(&b, w, rows, cols, h, NULL, q, grids, &info, err) == 0, "%s", err);
        QP_CHECK_MSG(info.grids_written == cases[c].written, "%s: grids_written %d", cases[c].spec, info.grids_written);
        if (!cases[c].written) {
            QP_CHECK(((const uint8_t *)grids)[0] == 0xa5); // left alone
            free(grids);
            continue;
        }
        int64_t off = 0;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = 0; j < cols; j++) {
                const struct qz_grid *g = &grids[r * ng + j / G];
                int on = 0;
                for (int k = g->qmin; k <= g->qmax && !on; k++) on = memcmp(&(float){qz_grid_value(g, k)}, &q[r * cols + j], 4) == 0;
                off += !on;
            }
        QP_CHECK_MSG(off == 0, "%s: %lld values off their group's grid", cases[c].spec, (long long)off);
        free(grids);
    }
    free(x), free(w), free(q), free(h);
}

// A large layer is quantized in row panels (qz_gptq.h): every value, grid and the sweep's loss as
// in one piece, the loss's last digits aside (dgemm). Panels of 512 rows: 1100 = 512 + 512 + 76.
QP_TEST(gptq_row_panels_should_give_the_values_of_the_whole_layer) {
    rng_seed(14);
    int64_t rows = 1100, cols = 256, N = 600;
    float *x = make_x(N, cols, 40), *w = make_w(rows, cols);
    float *q1 = malloc((size_t)(rows * cols) * sizeof *q1), *q2 = malloc((size_t)(rows * cols) * sizeof *q2);
    double *h = make_h(x, N, cols);
    char err[QP_ERRLEN];
    static const char *specs[] = {"gptq:bits=4:group=32:asym", "gptq:bits=3:group=64:actorder:static",
                                  "gptq:q4_k", "gptq:q4_0:actorder"};
    for (size_t s = 0; s < QP_ARRAY_LEN(specs); s++) {
        struct qz_base b = parse_base(specs[s]);
        int64_t ng = (cols + 63) / 32; // room for the smallest group here
        struct qz_grid *g1 = calloc((size_t)(rows * ng), sizeof *g1), *g2 = calloc((size_t)(rows * ng), sizeof *g2);
        struct qz_gptq_info i1, i2;
        qz_gptq_set_panel_bytes((int64_t)rows * cols * 8); // one piece
        QP_CHECK_MSG(qz_gptq_quantize_f(&b, w, rows, cols, h, NULL, q1, g1, &i1, err) == 0, "%s", err);
        qz_gptq_set_panel_bytes(600 << 10); // 512 rows of 256 doubles fit, 1024 do not
        QP_CHECK_MSG(qz_gptq_quantize_f(&b, w, rows, cols, h, NULL, q2, g2, &i2, err) == 0, "%s", err);
        qz_gptq_set_panel_bytes(0);
        QP_CHECK_MSG(same_bits_f(q1, q2, rows * cols), "%s: panels changed q", specs[s]);
        QP_CHECK_MSG(memcmp(g1, g2, (size_t)(rows * ng) * sizeof *g1) == 0, "%s: panels changed the grids", specs[s]);
        QP_CHECK_INT_EQ(i1.grids_written, i2.grids_written);
        QP_CHECK(memcmp(&i1.obs_loss, &i2.obs_loss, sizeof i1.obs_loss) == 0);
        QP_CHECK_MSG(fabs(i1.loss - i2.loss) <= 1e-12 * fabs(i1.loss) && i1.loss > 0, "%s: loss %.17g vs %.17g",
                     specs[s], i1.loss, i2.loss);
        free(g1), free(g2);
    }
    free(x), free(w), free(q1), free(q2), free(h);
}

QP_TEST(awq_should_lower_the_output_error_of_rtn_on_salient_channels) {
    rng_seed(5);
    int64_t n_in = 96, N = 800;
    float *x = make_x(N, n_in, 0);
    double *h = make_h(x, N, n_in);
    for (int64_t k = 0; k < n_in * n_in; k++) h[k] /= 2; // C = (1/N) Σ x xᵀ
    float *xmean = calloc((size_t)n_in, sizeof *xmean);
    for (int64_t t = 0; t < N; t++)
        for (int64_t j = 0; j < n_in; j++) xmean[j] += fabsf(x[t * n_in + j]) / (float)N;
    int64_t rows[2] = {40, 24};
    float *w[2] = {make_w(rows[0], n_in), make_w(rows[1], n_in)};
    float *out[2] = {malloc((size_t)(rows[0] * n_in) * sizeof(float)), malloc((size_t)(rows[1] * n_in) * sizeof(float))};
    struct qz_base b = parse_base("awq:bits=3:group=32:asym");
    struct qz_awq_linear lin[2] = {{w[0], rows[0], &b, 0, out[0], 0}, {w[1], rows[1], &b, 1, out[1], 0}};
    float *s = malloc((size_t)n_in * sizeof *s);
    struct qz_awq_info info;
    char err[QP_ERRLEN];
    QP_CHECK_MSG(qz_awq_quantize(h, xmean, n_in, lin, 2, s, &info, err) == 0, "%s", err);
    fprintf(stderr, "awq: alpha %.2f, loss plain %.6g, scaled %.6g, clipped %.6g\n", info.alpha, info.loss_plain,
            info.loss_scale, info.loss);
    QP_CHECK(info.alpha > 0);
    QP_CHECK(info.loss_scale < info.loss_plain);
    QP_CHECK(info.loss <= info.loss_scale * (1 + 1e-12));
    // The reported loss is the output MSE computed from the tokens, with the effective weights
    // Q(W·diag(s))·diag(1/s).
    double total = 0;
    for (int i = 0; i < 2; i++) {
        float *eff = malloc((size_t)(rows[i] * n_in) * sizeof *eff);
        for (int64_t r = 0; r < rows[i]; r++)
            for (int64_t j = 0; j < n_in; j++) eff[r * n_in + j] = (float)((double)out[i][r * n_in + j] / s[j]);
        double e = output_err(w[i], eff, x, rows[i], n_in, N) / (double)rows[i];
        QP_CHECK_NEAR(lin[i].loss, e, 1e-5); // eff is rounded to float here
        total += e * (double)rows[i];
        free(eff);
    }
    QP_CHECK_NEAR(info.loss, total / (double)(rows[0] + rows[1]), 1e-5);
    // α = 0 is plain RTN on the same grid: the same numbers as qz_fake_quant.
    float *r0 = malloc((size_t)(rows[0] * n_in) * sizeof *r0);
    struct qz_base rb = parse_base("rtn:bits=3:group=32:asym");
    qz_fake_quant(&rb, w[0], r0, rows[0], n_in, NULL);
    QP_CHECK(output_err(w[0], r0, x, rows[0], n_in, N) / (double)rows[0] > lin[0].loss);
    free(r0);
    free(x), free(h), free(xmean), free(w[0]), free(w[1]), free(out[0]), free(out[1]), free(s);
}

QP_TEST(smoothing_should_fold_without_changing_the_product) {
    rng_seed(6);
    int64_t n_in = 32, rows = 10, N = 50;
    float *x = make_x(N, n_in, 0), *w = make_w(rows, n_in), *ws = malloc((size_t)(rows * n_in) * sizeof *ws);
    float amax[32] = {0}, norm[32], s[32];
    for (int64_t t = 0; t < N; t++)
        for (int64_t j = 0; j < n_in; j++) amax[j] = fmaxf(amax[j], fabsf(x[t * n_in + j]));
    for (int64_t j = 0; j < n_in; j++) norm[j] = 1.0f;
    memcpy(ws, w, (size_t)(rows * n_in) * sizeof *ws);
    const float *wl[1] = {w};
    qz_smooth_scales(amax, n_in, wl, &rows, 1, 0.5, s);
    qz_smooth_fold(norm, ws, rows, n_in, s);
    // the outlier channels (10x) get the largest factors, and x·diag(norm) · (W·diag(s))ᵀ = x Wᵀ
    QP_CHECK(s[3] > s[4] && s[20] > s[21]);
    for (int64_t t = 0; t < N; t++)
        for (int64_t r = 0; r < rows; r++) {
            double a = 0, b = 0;
            for (int64_t j = 0; j < n_in; j++) {
                a += (double)x[t * n_in + j] * w[r * n_in + j];
                b += (double)(x[t * n_in + j] * norm[j]) * ws[r * n_in + j];
            }
            QP_CHECK_NEAR(b, a, 1e-5);
        }
    // after smoothing, max|x_j / s_j| and max|W_rj · s_j| meet at α = 0.5: both sqrt(a_j · w_j)
    for (int64_t j = 0; j < n_in; j++) {
        double wm = 0, wsm = 0;
        for (int64_t r = 0; r < rows; r++) wm = fmax(wm, fabs(w[r * n_in + j])), wsm = fmax(wsm, fabs(ws[r * n_in + j]));
        QP_CHECK_NEAR(amax[j] / s[j], wsm, 1e-5);
        QP_CHECK_NEAR(wsm, sqrt(amax[j] * wm), 1e-5);
    }
    free(x), free(w), free(ws);
}

// ---------------------------------------------------------------------------------------------
// Overlap

QP_TEST(overlap_should_catch_shared_runs_and_ignore_common_phrases) {
    size_t len;
    char *all = qpt_read_file(qpt_fixture(TEXT), &len);
    QP_CHECK(all && len > EVAL_FROM + 100000);
    int64_t ov;
    // The split the end-to-end cases use: only short common phrases in common.
    QP_CHECK_INT_EQ(hx_calib_overlap(all, CALIB_BYTES, all + EVAL_FROM, len - EVAL_FROM, &ov), 0);
    QP_CHECK_INT_EQ(ov, 0);
    // The same text: everything overlaps.
    QP_CHECK_INT_EQ(hx_calib_overlap(all, 100000, all, 100000, &ov), 1);
    QP_CHECK_INT_EQ(ov, 100000);
    // Calibration text that contains a copy of 300 bytes of the evaluation text: that run.
    char *cal = malloc(50000);
    memcpy(cal, all, 50000);
    memcpy(cal + 20000, all + EVAL_FROM + 5000, 300);
    QP_CHECK_INT_EQ(hx_calib_overlap(cal, 50000, all + EVAL_FROM, 100000, &ov), 1);
    QP_CHECK_MSG(ov >= 300 && ov < 400, "overlap %lld", (long long)ov);
    // 200 bytes: below the run length that counts (a quoted sentence, not a copied text).
    memcpy(cal, all, 50000);
    memcpy(cal + 20000, all + EVAL_FROM + 5000, 200);
    QP_CHECK_INT_EQ(hx_calib_overlap(cal, 50000, all + EVAL_FROM, 100000, &ov), 0);
    // Overlapping byte ranges of one file.
    QP_CHECK_INT_EQ(hx_calib_overlap(all, 300000, all + 250000, 200000, &ov), 1);
    QP_CHECK_MSG(ov >= 50000 && ov < 50100, "overlap %lld", (long long)ov);
    free(cal);
    free(all);
}

// ---------------------------------------------------------------------------------------------
// End to end on stories260K

struct e2e {
    struct hx_model *m;
    struct kn_engine *ref;
    int *eval;
    size_t n_eval;
    struct hx_calib *cal;
    char *text;
};

#define E2E_CALIB_SEQS 48
#define E2E_CALIB_LEN 256
#define E2E_CTX 256
#define E2E_CHUNKS 60

// The fixture model with its tokenizer (checked); close with hx_model_close.
static struct hx_model *open_fixture_model(void) {
    char path[4096], tok[4096], err[QP_ERRLEN];
    snprintf(path, sizeof path, "%s", qpt_fixture(MODEL));
    snprintf(tok, sizeof tok, "%s", qpt_fixture(TOK));
    struct hx_model *m;
    QP_CHECK_MSG(hx_model_open(path, tok, &m, err) == 0, "%s", err);
    return m;
}

static void e2e_open(struct e2e *E) {
    memset(E, 0, sizeof *E);
    char err[QP_ERRLEN];
    E->m = open_fixture_model();
    size_t len;
    E->text = qpt_read_file(qpt_fixture(TEXT), &len);
    QP_CHECK(E->text && len > EVAL_FROM);
    QP_CHECK(hx_tok_encode(E->m->tok, E->text + EVAL_FROM, len - EVAL_FROM, HX_TOK_ADD_BOS | HX_TOK_SPACE_PREFIX,
                           &E->eval, &E->n_eval) == 0);
    QP_CHECK_MSG(hx_calib_create(E->m->tok, E->text, CALIB_BYTES, E2E_CALIB_SEQS, E2E_CALIB_LEN, &E->cal, err) == 0,
                 "%s", err);
    E->cal->n_threads = 2;
    QP_CHECK_MSG(kn_engine_create(&E->m->w, NULL, &E->ref, err) == 0, "%s", err);
}

static void e2e_close(struct e2e *E) {
    kn_engine_destroy(E->ref);
    hx_calib_destroy(E->cal);
    free(E->eval);
    free(E->text);
    hx_model_close(E->m);
}

struct score {
    double kld, ppl;
};

// Mean KLD against fp32 and the variant's perplexity on tokens[0..n), llama.cpp's protocol.
static struct score e2e_score(struct e2e *E, const struct kn_weights *w, int act_int8, const float *act_scales,
                              const int *toks, size_t n, int chunks) {
    char err[QP_ERRLEN];
    struct kn_engine *e;
    struct kn_engine_opts eo = {.act_int8 = act_int8, .act_scales = act_scales};
    QP_CHECK_MSG(kn_engine_create_opts(w, &eo, &e, err) == 0, "%s", err);
    struct hx_lockstep_opts lo = {.protocol = HX_PROTO_LLAMACPP, .ctx = E2E_CTX, .n_threads = 2,
                                  .bos = hx_tok_bos(E->m->tok), .max_chunks = chunks};
    struct hx_lockstep_result res;
    QP_CHECK_MSG(hx_lockstep_run(E->ref, e, toks, n, &lo, &res, err) == 0, "%s", err);
    struct met_dist_summary s;
    met_dist_finish(res.dist, &s);
    hx_lockstep_result_free(&res);
    kn_engine_destroy(e);
    return (struct score){s.kld_mean, s.ppl_var};
}

static struct score e2e_variant(struct e2e *E, const char *spec, double *seconds) {
    char err[QP_ERRLEN];
    struct qz_variant *v;
    QP_CHECK_MSG(qz_variant_parse(spec, &v, err) == 0, "%s", err);
    struct hx_quant_model *q;
    double t0 = qp_now();
    QP_CHECK_MSG(hx_quant_model_create_calib(&E->m->w, v, E->cal, &q, err) == 0, "%s: %s", spec, err);
    if (seconds) *seconds = qp_now() - t0;
    struct score s = e2e_score(E, &q->w, q->act_int8, q->act_scales, E->eval, E->n_eval, E2E_CHUNKS);
    hx_quant_model_destroy(q);
    qz_variant_destroy(v);
    return s;
}

QP_TEST(gptq_and_awq_should_beat_rtn_on_held_out_text_at_4_and_3_bits) {
    struct e2e E;
    e2e_open(&E);
    struct score fp = e2e_score(&E, &E.m->w, 0, NULL, E.eval, E.n_eval, E2E_CHUNKS);
    fprintf(stderr, "fp32: PPL %.4f\n", fp.ppl);
    for (int bits = 4; bits >= 3; bits--) {
        char rtn[64], gptq[64], awq[64];
        snprintf(rtn, sizeof rtn, "rtn:bits=%d:group=32:asym", bits);
        snprintf(gptq, sizeof gptq, "gptq:bits=%d:group=32:asym", bits);
        snprintf(awq, sizeof awq, "awq:bits=%d:group=32:asym", bits);
        double tg, ta;
        struct score r = e2e_variant(&E, rtn, NULL), g = e2e_variant(&E, gptq, &tg), a = e2e_variant(&E, awq, &ta);
        fprintf(stderr, "%d bits: rtn KLD %.5f PPL %.4f | gptq KLD %.5f PPL %.4f (%.1f s) | awq KLD %.5f PPL %.4f (%.1f s)\n",
                bits, r.kld, r.ppl, g.kld, g.ppl, tg, a.kld, a.ppl, ta);
        QP_CHECK_MSG(g.kld < r.kld && g.ppl < r.ppl, "%d bits: gptq %.5f / %.4f vs rtn %.5f / %.4f", bits, g.kld, g.ppl,
                     r.kld, r.ppl);
        QP_CHECK_MSG(a.kld < r.kld && a.ppl < r.ppl, "%d bits: awq %.5f / %.4f vs rtn %.5f / %.4f", bits, a.kld, a.ppl,
                     r.kld, r.ppl);
    }
    e2e_close(&E);
}

// The largest over the median of the channels' max|x| at the inputs of q/k/v and gate/up: how
// much a per-token int8 scale is stretched by outlier channels.
static double outlier_ratio(struct e2e *E, const struct kn_weights *w) {
    char err[QP_ERRLEN];
    struct hx_calib_stats st = {0};
    QP_CHECK_MSG(hx_calib_collect(w, w->cfg.n_layers, E->cal, 0, -1, 0, 0, &st, err) == 0, "%s", err);
    double worst = 0;
    for (int l = 0; l < w->cfg.n_layers; l++)
        for (int site = HX_CS_ATTN_IN; site <= HX_CS_FFN_IN; site += HX_CS_FFN_IN - HX_CS_ATTN_IN) {
            struct hx_site_stats *s = hx_calib_site(&st, l, site);
            float v[1024];
            memcpy(v, s->max_abs, (size_t)s->width * sizeof(float));
            float mx = 0;
            for (int j = 0; j < s->width; j++) mx = fmaxf(mx, v[j]);
            // median by counting
            float med = 0;
            for (int j = 0; j < s->width; j++) {
                int below = 0;
                for (int k = 0; k < s->width; k++) below += v[k] < v[j];
                if (below == s->width / 2) med = v[j];
            }
            worst = fmax(worst, mx / med);
        }
    hx_calib_stats_free(&st);
    return worst;
}

static struct score w8a8_score(struct e2e *E, const struct kn_weights *w, const char *spec, const int *toks,
                               size_t n, int chunks) {
    char err[QP_ERRLEN];
    struct qz_variant *v;
    QP_CHECK_MSG(qz_variant_parse(spec, &v, err) == 0, "%s", err);
    struct hx_quant_model *q;
    QP_CHECK_MSG(hx_quant_model_create_calib(w, v, E->cal, &q, err) == 0, "%s: %s", spec, err);
    QP_CHECK(q->act_int8 == (strstr(spec, "act=tensor") ? KN_ACT_INT8_TENSOR : KN_ACT_INT8_TOKEN));
    struct score s = e2e_score(E, &q->w, q->act_int8, q->act_scales, toks, n, chunks);
    hx_quant_model_destroy(q);
    qz_variant_destroy(v);
    return s;
}

// α chosen on the calibration text (its first 100 kB, 20 windows) from {0.3, 0.5, 0.7, 0.85},
// then held-out KLD of smoothquant at that α and of unsmoothed W8A8 (the w8a8 spec: int8 weights
// per output channel, int8 activations, embedding and classifier fp32, exactly as smoothquant
// quantizes, without the smoothing), both against E->ref. act: "" (per-token activation scales)
// or ":act=tensor" (static per-tensor scales from the calibration windows).
static void sq_compare(struct e2e *E, const struct kn_weights *w, const char *act, struct score *sq,
                       struct score *plain, double *alpha) {
    int *ct;
    size_t nct;
    QP_CHECK(hx_tok_encode(E->m->tok, E->text, 100000, HX_TOK_ADD_BOS | HX_TOK_SPACE_PREFIX, &ct, &nct) == 0);
    static const double alphas[] = {0.3, 0.5, 0.7, 0.85};
    double best = INFINITY;
    char spec[64], w8a8[64];
    snprintf(w8a8, sizeof w8a8, "w8a8%s", act);
    for (size_t i = 0; i < QP_ARRAY_LEN(alphas); i++) {
        snprintf(spec, sizeof spec, "smoothquant:alpha=%g%s", alphas[i], act);
        struct score s = w8a8_score(E, w, spec, ct, nct, 20);
        fprintf(stderr, "  calibration text: %s KLD %.9f\n", spec, s.kld);
        if (s.kld < best) best = s.kld, *alpha = alphas[i];
    }
    fprintf(stderr, "  calibration text: %s KLD %.9f\n", w8a8, w8a8_score(E, w, w8a8, ct, nct, 20).kld);
    snprintf(spec, sizeof spec, "smoothquant:alpha=%g%s", *alpha, act);
    *sq = w8a8_score(E, w, spec, E->eval, E->n_eval, E2E_CHUNKS);
    *plain = w8a8_score(E, w, w8a8, E->eval, E->n_eval, E2E_CHUNKS);
    free(ct);
}

// The evidence 2, with per-token (act=token) and static per-tensor (act=tensor) int8
// activations: smoothquant at an α chosen on the calibration text against the w8a8 spec. Asserted
// on the planted-outlier case below, not on stories260K itself, where the effect is not there
// (held out, 2026-11: act=token 0.001461 vs 0.001514, act=tensor 0.015883 vs 0.015408 — smoothing
// even loses slightly with static scales).
static const char *const sq_acts[] = {"", ":act=tensor"};

QP_TEST(smoothquant_w8a8_should_beat_unsmoothed_w8a8) {
    struct e2e E;
    e2e_open(&E);
    struct score sq, plain;
    double alpha = 0;
    // stories260K itself: its activations have no strong outlier channels, and W8A8 is nearly
    // lossless; the figures are reported, not asserted (the gain, if any, is within noise).
    fprintf(stderr, "stories260K: max/median channel max|x| = %.1f\n", outlier_ratio(&E, &E.m->w));
    for (size_t a = 0; a < QP_ARRAY_LEN(sq_acts); a++) {
        sq_compare(&E, &E.m->w, sq_acts[a], &sq, &plain, &alpha);
        fprintf(stderr, "stories260K held out: smoothquant:alpha=%g%s KLD %.6f PPL %.4f | w8a8%s KLD %.6f PPL %.4f\n",
                alpha, sq_acts[a], sq.kld, sq.ppl, sq_acts[a], plain.kld, plain.ppl);
    }

    // Planted outliers: in every block, channels 5, 21 and 42 of attn_norm and ffn_norm times
    // 30, the matching columns of wq/wk/wv and w_gate/w_up divided by 30. The fp32 model computes
    // the same function (up to rounding; it is the reference below), but its activations now
    // have the outlier channels SmoothQuant is for.
    const struct kn_config *c = &E.m->w.cfg;
    struct kn_weights pw = E.m->w;
    pw.layers = calloc((size_t)c->n_layers, sizeof *pw.layers);
    void *owned[64];
    int n_owned = 0;
    static const int chans[] = {5, 21, 42};
    const float k = 30.0f;
    for (int l = 0; l < c->n_layers; l++) {
        pw.layers[l] = E.m->w.layers[l];
        struct kn_tensor *norms[2] = {&pw.layers[l].attn_norm, &pw.layers[l].ffn_norm};
        struct kn_tensor *lin[2][3] = {{&pw.layers[l].wq, &pw.layers[l].wk, &pw.layers[l].wv},
                                       {&pw.layers[l].w_gate, &pw.layers[l].w_up, NULL}};
        for (int g = 0; g < 2; g++) {
            QP_CHECK(norms[g]->type == KN_F32);
            float *nv = malloc((size_t)c->dim * sizeof *nv);
            memcpy(nv, norms[g]->data, (size_t)c->dim * sizeof *nv);
            for (size_t i = 0; i < QP_ARRAY_LEN(chans); i++) nv[chans[i]] *= k;
            norms[g]->data = owned[n_owned++] = nv;
            for (int t = 0; t < 3 && lin[g][t]; t++) {
                size_t n = (size_t)(lin[g][t]->ne0 * lin[g][t]->ne1);
                float *wv = malloc(n * sizeof *wv);
                memcpy(wv, lin[g][t]->data, n * sizeof *wv);
                for (int64_t r = 0; r < lin[g][t]->ne1; r++)
                    for (size_t i = 0; i < QP_ARRAY_LEN(chans); i++) wv[r * c->dim + chans[i]] /= k;
                lin[g][t]->data = owned[n_owned++] = wv;
            }
        }
    }
    char err[QP_ERRLEN];
    kn_engine_destroy(E.ref);
    QP_CHECK_MSG(kn_engine_create(&pw, NULL, &E.ref, err) == 0, "%s", err);
    double ratio = outlier_ratio(&E, &pw);
    fprintf(stderr, "planted outliers: max/median channel max|x| = %.1f\n", ratio);
    QP_CHECK(ratio > 20);
    for (size_t a = 0; a < QP_ARRAY_LEN(sq_acts); a++) {
        sq_compare(&E, &pw, sq_acts[a], &sq, &plain, &alpha);
        fprintf(stderr, "planted outliers held out: smoothquant:alpha=%g%s KLD %.6f PPL %.4f | w8a8%s KLD %.6f PPL %.4f\n",
                alpha, sq_acts[a], sq.kld, sq.ppl, sq_acts[a], plain.kld, plain.ppl);
        QP_CHECK_MSG(sq.kld < plain.kld, "smoothquant%s %.6f vs w8a8%s %.6f", sq_acts[a], sq.kld, sq_acts[a], plain.kld);
    }
    for (int i = 0; i < n_owned; i++) free(owned[i]);
    free(pw.layers);
    e2e_close(&E);
}

QP_TEST(imatrix_should_lower_the_kld_of_llamacpp_types) {
    struct e2e E;
    e2e_open(&E);
    static const char *pairs[][2] = {{"q4_0", "q4_0;imatrix"}, {"q4_k_m", "q4_k_m;imatrix"}};
    for (size_t i = 0; i < QP_ARRAY_LEN(pairs); i++) {
        struct score a = e2e_variant(&E, pairs[i][0], NULL), b = e2e_variant(&E, pairs[i][1], NULL);
        fprintf(stderr, "%s KLD %.5f PPL %.4f | %s KLD %.5f PPL %.4f\n", pairs[i][0], a.kld, a.ppl, pairs[i][1], b.kld,
                b.ppl);
        QP_CHECK_MSG(b.kld < a.kld, "%s: %.5f vs %.5f", pairs[i][1], b.kld, a.kld);
    }
    e2e_close(&E);
}

// ---------------------------------------------------------------------------------------------
// qprobe ppl --calib


QP_TEST(ppl_should_take_calib_and_refuse_missing_or_overlapping_calibration) {
    char cal[4200], ev[4200], base[8400], cmd[16384], *out = NULL;
    snprintf(cal, sizeof cal, "%s", qpt_text_part("calib.txt", 0, CALIB_BYTES));
    snprintf(ev, sizeof ev, "%s", qpt_text_part("eval.txt", EVAL_FROM, 60000));
    snprintf(base, sizeof base, "'%s' ppl -m '%s' -z '%s' --text '%s' -t 2 --chunks 4", qpt_qprobe(), qpt_fixture(MODEL),
             qpt_fixture(TOK), ev);
    // A calibrated spec without --calib: one line, exit 2.
    snprintf(cmd, sizeof cmd, "%s -q 'gptq:bits=4:group=32:asym' 2>&1", base);
    QP_CHECK_INT_EQ(qpt_run(cmd, &out), 2);
    QP_CHECK_MSG(out && strstr(out, "needs calibration data") && strchr(out, '\n') == out + strlen(out) - 1, "%s", out);
    free(out);
    // The evaluation text as calibration text: refused.
    snprintf(cmd, sizeof cmd, "%s -q 'awq:bits=4:group=32:asym' --calib '%s' 2>&1", base, ev);
    QP_CHECK_INT_EQ(qpt_run(cmd, &out), 2);
    QP_CHECK_MSG(out && strstr(out, "share") && strstr(out, "disjoint"), "%s", out);
    free(out);
    // Disjoint texts: runs, reports the calibration in --json.
    snprintf(cmd, sizeof cmd, "%s -q 'gptq:bits=4:group=32:asym' --calib '%s' --calib-seqs 8 --calib-len 128 --json",
             base, cal);
    QP_CHECK_INT_EQ(qpt_run(cmd, &out), 0);
    QP_CHECK_INT_EQ(qpt_json_num(out, "calib_seqs"), 8);
    QP_CHECK_INT_EQ(qpt_json_num(out, "calib_len"), 128);
    QP_CHECK_INT_EQ(qpt_json_num(out, "calib_overlap_bytes"), 0);
    double ppl = qpt_json_num(out, "ppl");
    QP_CHECK(ppl > 1 && ppl < 20);
    free(out);
    // smoothquant runs with int8 activations.
    snprintf(cmd, sizeof cmd, "%s -q smoothquant --calib '%s' --calib-seqs 4 --calib-len 64 --json", base, cal);
    QP_CHECK_INT_EQ(qpt_run(cmd, &out), 0);
    QP_CHECK(strstr(out, "\"act_int8\":true"));
    free(out);
    // w8a8 with per-token scales needs no calibration; with static per-tensor scales it does.
    snprintf(cmd, sizeof cmd, "%s -q w8a8 --json 2>&1", base);
    QP_CHECK_INT_EQ(qpt_run(cmd, &out), 0);
    QP_CHECK_MSG(strstr(out, "\"act_int8\":true") && !strstr(out, "warning"), "%s", out);
    free(out);
    snprintf(cmd, sizeof cmd, "%s -q w8a8:act=tensor 2>&1", base);
    QP_CHECK_INT_EQ(qpt_run(cmd, &out), 2);
    QP_CHECK_MSG(out && strstr(out, "needs calibration data"), "%s", out);
    free(out);
    snprintf(cmd, sizeof cmd, "%s -q w8a8:act=tensor --calib '%s' --calib-seqs 4 --calib-len 64", base, cal);
    QP_CHECK_INT_EQ(qpt_run(cmd, &out), 0);
    QP_CHECK_MSG(strstr(out, "int8 per tensor"), "%s", out);
    free(out);
}

// Windows run in parallel lanes and are merged in window order: the quantized model must be the
// same bits with 1 and 2 threads.
QP_TEST(calibrated_quantization_should_not_depend_on_the_thread_count) {
    char err[QP_ERRLEN];
    struct hx_model *m = open_fixture_model();
    size_t len;
    char *text = qpt_read_file(qpt_fixture(TEXT), &len);
    struct hx_calib *cal;
    QP_CHECK(hx_calib_create(m->tok, text, CALIB_BYTES, 7, 96, &cal, err) == 0);
    QP_CHECK_INT_EQ(cal->n_seqs, 7);
    static const char *specs[] = {"gptq:bits=3:group=32:asym:actorder", "awq:bits=3:group=32"};
    for (size_t i = 0; i < QP_ARRAY_LEN(specs); i++) {
        struct qz_variant *v;
        QP_CHECK(qz_variant_parse(specs[i], &v, err) == 0);
        struct hx_quant_model *q[2];
        for (int t = 0; t < 2; t++) {
            cal->n_threads = t + 1;
            QP_CHECK_MSG(hx_quant_model_create_calib(&m->w, v, cal, &q[t], err) == 0, "%s", err);
        }
        struct hx_weight_ref a[HX_N_WEIGHTS(8)], b[HX_N_WEIGHTS(8)];
        QP_CHECK(m->w.cfg.n_layers <= 8);
        hx_weight_refs(&q[0]->w, a);
        hx_weight_refs(&q[1]->w, b);
        for (int k = 0; k < HX_N_WEIGHTS(m->w.cfg.n_layers); k++) {
            QP_CHECK(a[k].t->type == b[k].t->type);
            size_t bytes = kn_row_bytes(a[k].t->type, a[k].t->ne0) * (size_t)a[k].t->ne1;
            QP_CHECK_MSG(memcmp(a[k].t->data, b[k].t->data, bytes) == 0, "%s: %s differs", specs[i], a[k].name);
        }
        for (int l = 0; l < m->w.cfg.n_layers; l++)
            QP_CHECK(memcmp(q[0]->w.layers[l].attn_norm.data, q[1]->w.layers[l].attn_norm.data,
                            (size_t)m->w.cfg.dim * sizeof(float)) == 0);
        hx_quant_model_destroy(q[0]);
        hx_quant_model_destroy(q[1]);
        qz_variant_destroy(v);
    }
    hx_calib_destroy(cal);
    free(text);
    hx_model_close(m);
}

// ---------------------------------------------------------------------------------------------
// The engine's act_int8 option

struct cap {
    float mix[16 * 64], out[16 * 64], last[16 * 64];
    int last_layer;
};

static void cap_probe(void *ctx, enum kn_site site, int layer, const float *x, int n, int width, int pos0) {
    struct cap *c = ctx;
    (void)pos0;
    if (n > 16 || width > 64) return;
    if (layer == c->last_layer && site == KN_SITE_RESID_OUT) memcpy(c->last, x, (size_t)(n * width) * sizeof(float));
    if (layer != 0) return;
    if (site == KN_SITE_ATTN_MIX) memcpy(c->mix, x, (size_t)(n * width) * sizeof(float));
    if (site == KN_SITE_ATTN_OUT) memcpy(c->out, x, (size_t)(n * width) * sizeof(float));
}

// With act_int8 the output of wo is wo · q8(mix), q8 the per-token int8 fake quantization the
// option states (scale = max|x| / 127, rint(x / scale) · scale); without it wo · mix. The
// classifier's input is not quantized: logits = output · rmsnorm(last block's output).
QP_TEST(act_int8_should_quantize_each_input_row_of_the_block_linears_to_int8) {
    char err[QP_ERRLEN];
    struct hx_model *m = open_fixture_model();
    const struct kn_config *c = &m->w.cfg;
    QP_CHECK(c->dim == 64);
    int toks[16];
    for (int i = 0; i < 16; i++) toks[i] = i ? 100 + 13 * i : 1;
    const float *wo = m->w.layers[0].wo.data;
    double worst_q = 0, worst_f = 0, scale_y = 0;
    for (int on = 0; on < 2; on++) {
        struct kn_engine *e;
        struct kn_state *s;
        struct kn_engine_opts eo = {.act_int8 = on};
        QP_CHECK(kn_engine_create_opts(&m->w, &eo, &e, err) == 0);
        QP_CHECK(kn_state_create(e, 16, 16, 1, &s, err) == 0);
        static struct cap cp;
        memset(&cp, 0, sizeof cp);
        cp.last_layer = c->n_layers - 1;
        struct kn_probe pr = {cap_probe, &cp, NULL};
        float *logits = malloc((size_t)16 * c->vocab_size * sizeof *logits);
        kn_forward(s, toks, 16, logits, 0, &pr);
        const float *onorm = m->w.out_norm.data, *emb = m->w.output.data;
        double off_q8 = 0; // how far int8 classifier inputs would move the logits
        for (int r = 0; r < 16; r++) { // the classifier in plain float arithmetic, as the engine's
            const float *x = cp.last + r * 64;
            float ss = 0, xn[64], amax = 0;
            for (int k = 0; k < 64; k++) ss += x[k] * x[k];
            ss = 1.0f / sqrtf(ss / 64 + c->norm_eps);
            for (int k = 0; k < 64; k++) xn[k] = onorm[k] * (ss * x[k]), amax = fmaxf(amax, fabsf(xn[k]));
            for (int v = 0; v < c->vocab_size; v += 37) {
                double l = 0, lq = 0;
                for (int k = 0; k < 64; k++) {
                    l += (double)emb[(size_t)v * 64 + k] * xn[k];
                    lq += (double)emb[(size_t)v * 64 + k] * (rintf(xn[k] / (amax / 127.0f)) * (amax / 127.0f));
                }
                QP_CHECK_NEAR(logits[(size_t)r * c->vocab_size + v], l, 1e-4);
                off_q8 = fmax(off_q8, fabs(lq - l) / fmax(1, fabs(l)));
            }
        }
        QP_CHECK(off_q8 > 1e-3); // the check above would see a quantized classifier input
        free(logits);
        for (int r = 0; r < 16; r++) {
            const float *x = cp.mix + r * 64;
            float q[64], amax = 0;
            for (int k = 0; k < 64; k++) amax = fmaxf(amax, fabsf(x[k]));
            for (int k = 0; k < 64; k++) q[k] = rintf(x[k] / (amax / 127.0f)) * (amax / 127.0f);
            for (int j = 0; j < 64; j++) {
                double yq = 0, yf = 0;
                for (int k = 0; k < 64; k++) yq += (double)wo[j * 64 + k] * q[k], yf += (double)wo[j * 64 + k] * x[k];
                double y = cp.out[r * 64 + j];
                scale_y = fmax(scale_y, fabs(y));
                if (on) worst_q = fmax(worst_q, fabs(y - yq)), worst_f = fmax(worst_f, fabs(y - yf));
                else QP_CHECK_NEAR(y, yf, 1e-5);
            }
        }
        kn_state_destroy(s);
        kn_engine_destroy(e);
    }
    fprintf(stderr, "act_int8: max |y - wo q8(x)| = %.3g, max |y - wo x| = %.3g (max |y| %.3g)\n", worst_q, worst_f,
            scale_y);
    QP_CHECK(worst_q < 1e-5 * fmax(1, scale_y)); // float accumulation order only
    QP_CHECK(worst_f > 100 * worst_q);          // and the quantization is really there
    hx_model_close(m);
}

struct cap2 {
    float mix[16 * 64], out[16 * 64], mlp[16 * 64];
};

static void cap2_probe(void *ctx, enum kn_site site, int layer, const float *x, int n, int width, int pos0) {
    struct cap2 *c = ctx;
    (void)pos0;
    if (n > 16 || width > 64) return;
    if (layer == 0 && site == KN_SITE_ATTN_MIX) memcpy(c->mix, x, (size_t)(n * width) * sizeof(float));
    if (layer == 0 && site == KN_SITE_ATTN_OUT) memcpy(c->out, x, (size_t)(n * width) * sizeof(float));
    if (layer == 1 && site == KN_SITE_MLP_OUT) memcpy(c->mlp, x, (size_t)(n * width) * sizeof(float));
}

// act_int8 = KN_ACT_INT8_TENSOR: the input of wo in layer 0 gets the static scale S given in the
// table, by hand x' = clamp(rint(x / S), -127, 127) · S; S is set at half of the per-tensor
// absmax / 127 seen in an fp32 pass, so that the largest values saturate. A zero scale (layer 1's
// w_down input) makes that linear's input 0, so the block's MLP output is exactly 0. Bad tables
// are refused.
QP_TEST(act_int8_tensor_should_quantize_with_the_static_scale_and_saturate) {
    char err[QP_ERRLEN];
    struct hx_model *m = open_fixture_model();
    const struct kn_config *c = &m->w.cfg;
    QP_CHECK(c->dim == 64 && c->n_layers >= 2);
    int toks[16];
    for (int i = 0; i < 16; i++) toks[i] = i ? 100 + 13 * i : 1;
    static struct cap2 cp;
    struct kn_probe pr = {cap2_probe, &cp, NULL};
    struct kn_engine *e;
    struct kn_state *s;
    // fp32 pass: the mix's absmax
    QP_CHECK(kn_engine_create(&m->w, NULL, &e, err) == 0);
    QP_CHECK(kn_state_create(e, 16, 16, 1, &s, err) == 0);
    kn_forward(s, toks, 16, NULL, 16, &pr);
    float amax = 0;
    for (int k = 0; k < 16 * 64; k++) amax = fmaxf(amax, fabsf(cp.mix[k]));
    kn_state_destroy(s);
    kn_engine_destroy(e);

    int n_sc = c->n_layers * KN_LIN_IN_COUNT;
    float *sc = malloc((size_t)n_sc * sizeof *sc);
    for (int i = 0; i < n_sc; i++) sc[i] = 0.05f;
    const float S = 0.5f * amax / 127.0f;
    sc[0 * KN_LIN_IN_COUNT + KN_LIN_IN_ATTN_MIX] = S;
    sc[1 * KN_LIN_IN_COUNT + KN_LIN_IN_FFN_ACT] = 0;
    struct kn_engine_opts eo = {.act_int8 = KN_ACT_INT8_TENSOR, .act_scales = sc};
    QP_CHECK_MSG(kn_engine_create_opts(&m->w, &eo, &e, err) == 0, "%s", err);
    QP_CHECK(kn_state_create(e, 16, 16, 1, &s, err) == 0);
    memset(&cp, 0, sizeof cp);
    kn_forward(s, toks, 16, NULL, 16, &pr);
    const float *wo = m->w.layers[0].wo.data;
    int saturated = 0, inside = 0;
    double worst = 0, scale_y = 0;
    for (int r = 0; r < 16; r++) {
        float q[64];
        for (int k = 0; k < 64; k++) {
            float v = rintf(cp.mix[r * 64 + k] / S);
            saturated += fabsf(v) > 127, inside += v != 0 && fabsf(v) < 127;
            q[k] = fminf(fmaxf(v, -127.0f), 127.0f) * S;
        }
        for (int j = 0; j < 64; j++) {
            double y = 0;
            for (int k = 0; k < 64; k++) y += (double)wo[j * 64 + k] * q[k];
            worst = fmax(worst, fabs(cp.out[r * 64 + j] - y));
            scale_y = fmax(scale_y, fabs(y));
        }
    }
    fprintf(stderr, "act_int8 tensor: %d saturated, %d inside; max |y - wo q(x)| = %.3g (max |y| %.3g)\n", saturated,
            inside, worst, scale_y);
    QP_CHECK(saturated > 0 && inside > 100);
    QP_CHECK(worst < 1e-5 * fmax(1, scale_y)); // float accumulation order only
    for (int k = 0; k < 16 * 64; k++) QP_CHECK(cp.mlp[k] == 0.0f);
    kn_state_destroy(s);
    kn_engine_destroy(e);

    // without a table, with a negative or non-finite scale, or an unknown mode: refused
    eo.act_scales = NULL;
    QP_CHECK_INT_EQ(kn_engine_create_opts(&m->w, &eo, &e, err), QP_EINVAL);
    QP_CHECK_MSG(strstr(err, "scale"), "%s", err);
    eo.act_scales = sc;
    sc[n_sc - 1] = -1;
    QP_CHECK_INT_EQ(kn_engine_create_opts(&m->w, &eo, &e, err), QP_EINVAL);
    sc[n_sc - 1] = NAN;
    QP_CHECK_INT_EQ(kn_engine_create_opts(&m->w, &eo, &e, err), QP_EINVAL);
    eo.act_int8 = 3;
    QP_CHECK_INT_EQ(kn_engine_create_opts(&m->w, &eo, &e, err), QP_EINVAL);
    free(sc);
    hx_model_close(m);
}

// w8a8:act=tensor's static scales are each linear input's calibration absmax / 127, and
// smoothquant's, for its smoothed inputs, max_j a_j / s_j / 127 with s from qz_smooth_scales (a_j:
// channel absmax, s_j: the smoothing factor). Plain w8a8 needs no calibration: hx_quant_model_create
// gives per-channel int8 weights (the same as qz_w8_channel), fp32 embedding and classifier and
// per-token int8 activations; in a name~ rule it is refused.
QP_TEST(w8a8_static_scales_should_be_the_calibration_absmax_over_127) {
    char err[QP_ERRLEN];
    struct hx_model *m = open_fixture_model();
    const struct kn_config *c = &m->w.cfg;
    size_t len;
    char *text = qpt_read_file(qpt_fixture(TEXT), &len);
    struct hx_calib *cal;
    QP_CHECK(hx_calib_create(m->tok, text, CALIB_BYTES, 6, 128, &cal, err) == 0);
    struct hx_calib_stats st = {0};
    QP_CHECK_MSG(hx_calib_collect(&m->w, c->n_layers, cal, 0, -1, 0, 0, &st, err) == 0, "%s", err);

    struct qz_variant *v;
    struct hx_quant_model *q;
    QP_CHECK(qz_variant_parse("w8a8:act=tensor", &v, err) == 0);
    QP_CHECK(hx_variant_needs_calib(v) && hx_variant_act_int8(v) == KN_ACT_INT8_TENSOR);
    QP_CHECK_INT_EQ(hx_quant_model_create_calib(&m->w, v, NULL, &q, err), QP_EINVAL);
    QP_CHECK_MSG(hx_quant_model_create_calib(&m->w, v, cal, &q, err) == 0, "%s", err);
    QP_CHECK(q->act_int8 == KN_ACT_INT8_TENSOR && q->act_scales);
    for (int l = 0; l < c->n_layers; l++)
        for (int i = 0; i < HX_CS_COUNT; i++) {
            const struct hx_site_stats *ss = hx_calib_site(&st, l, i);
            float mx = 0;
            for (int j = 0; j < ss->width; j++) mx = fmaxf(mx, ss->max_abs[j]);
            QP_CHECK_MSG(q->act_scales[l * KN_LIN_IN_COUNT + i] == mx / 127.0f, "layer %d site %d: %g vs %g", l, i,
                         q->act_scales[l * KN_LIN_IN_COUNT + i], mx / 127.0f);
        }
    hx_quant_model_destroy(q);
    qz_variant_destroy(v);

    QP_CHECK(qz_variant_parse("smoothquant:alpha=0.7:act=tensor", &v, err) == 0);
    QP_CHECK_MSG(hx_quant_model_create_calib(&m->w, v, cal, &q, err) == 0, "%s", err);
    for (int l = 0; l < c->n_layers; l++) {
        const struct kn_layer_weights *lw = &m->w.layers[l];
        const float *ws[2][3] = {{lw->wq.data, lw->wk.data, lw->wv.data}, {lw->w_gate.data, lw->w_up.data, NULL}};
        int64_t rows[2][3] = {{lw->wq.ne1, lw->wk.ne1, lw->wv.ne1}, {lw->w_gate.ne1, lw->w_up.ne1, 0}};
        int site[2] = {HX_CS_ATTN_IN, HX_CS_FFN_IN};
        for (int g = 0; g < 2; g++) {
            const float *a = hx_calib_site(&st, l, site[g])->max_abs;
            float sv[64], mx = 0;
            qz_smooth_scales(a, c->dim, ws[g], rows[g], g ? 2 : 3, 0.7, sv);
            for (int j = 0; j < c->dim; j++) mx = fmaxf(mx, a[j] / sv[j]);
            QP_CHECK_MSG(q->act_scales[l * KN_LIN_IN_COUNT + site[g]] == mx / 127.0f, "layer %d site %d", l, site[g]);
        }
    }
    hx_quant_model_destroy(q);
    qz_variant_destroy(v);

    QP_CHECK(qz_variant_parse("w8a8", &v, err) == 0);
    QP_CHECK(!hx_variant_needs_calib(v) && hx_variant_act_int8(v) == KN_ACT_INT8_TOKEN);
    QP_CHECK_MSG(hx_quant_model_create(&m->w, v, &q, err) == 0, "%s", err);
    QP_CHECK(q->act_int8 == KN_ACT_INT8_TOKEN && !q->act_scales);
    QP_CHECK(q->w.tok_embd.type == KN_F32 && q->w.output.type == KN_F32);
    QP_CHECK(memcmp(q->w.tok_embd.data, m->w.tok_embd.data, (size_t)(c->vocab_size * c->dim) * sizeof(float)) == 0);
    const struct kn_tensor *wd = &m->w.layers[2].w_down;
    float *w8 = malloc((size_t)(wd->ne0 * wd->ne1) * sizeof *w8);
    QP_CHECK(qz_w8_channel(wd->data, w8, wd->ne1, wd->ne0, NULL) == 0);
    QP_CHECK(memcmp(q->w.layers[2].w_down.data, w8, (size_t)(wd->ne0 * wd->ne1) * sizeof *w8) == 0);
    QP_CHECK(memcmp(q->w.layers[2].w_down.data, wd->data, (size_t)(wd->ne0 * wd->ne1) * sizeof *w8) != 0);
    free(w8);
    hx_quant_model_destroy(q);
    qz_variant_destroy(v);
    QP_CHECK(qz_variant_parse("q8_0;name~ffn_down=w8a8", &v, err) == 0);
    QP_CHECK_INT_EQ(hx_quant_model_create(&m->w, v, &q, err), QP_ENOTSUP);
    QP_CHECK_MSG(strstr(err, "whole model"), "%s", err);
    qz_variant_destroy(v);

    hx_calib_stats_free(&st);
    hx_calib_destroy(cal);
    free(text);
    hx_model_close(m);
}

// The caller's stop flag (Ctrl-C) is polled after every layer of a calibrated quantization: a
// raised flag stops GPTQ, AWQ and SmoothQuant after their first layer with QP_EINTR and nothing
// returned (a 7B GPTQ runs for many minutes; waiting for its end was the old behaviour).
QP_TEST(calibrated_quantization_should_stop_after_a_layer_when_asked) {
    char err[QP_ERRLEN];
    struct hx_model *m = open_fixture_model();
    size_t len;
    char *text = qpt_read_file(qpt_fixture(TEXT), &len);
    struct hx_calib *cal;
    QP_CHECK(hx_calib_create(m->tok, text, CALIB_BYTES, 4, 64, &cal, err) == 0);
    static const char *const specs[] = {"gptq:bits=4:group=32", "awq:bits=4:group=32", "smoothquant:alpha=0.5"};
    volatile int stop = 1;
    cal->stop = &stop;
    for (size_t i = 0; i < QP_ARRAY_LEN(specs); i++) {
        struct qz_variant *v;
        struct hx_quant_model *q = NULL;
        QP_CHECK_MSG(qz_variant_parse(specs[i], &v, err) == 0, "%s: %s", specs[i], err);
        QP_CHECK_INT_EQ(hx_quant_model_create_calib(&m->w, v, cal, &q, err), QP_EINTR);
        QP_CHECK_MSG(q == NULL && strstr(err, "interrupted after layer 1 of "), "%s: %s", specs[i], err);
        qz_variant_destroy(v);
    }
    stop = 0; // lowered again: the same calibration quantizes to the end
    struct qz_variant *v;
    struct hx_quant_model *q = NULL;
    QP_CHECK(qz_variant_parse(specs[0], &v, err) == 0);
    QP_CHECK_MSG(hx_quant_model_create_calib(&m->w, v, cal, &q, err) == 0 && q, "%s", err);
    hx_quant_model_destroy(q);
    qz_variant_destroy(v);
    hx_calib_destroy(cal);
    free(text);
    hx_model_close(m);
}
