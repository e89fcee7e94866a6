// bench_gptq.c — GPTQ at the TinyLlama-1.1B shape (dim 2048, ffn 5632), old against new in one
// run: the Cholesky factorization at n = 2048 and 5632, and qz_gptq_quantize on a 2048 × 5632
// (ffn_down) and a 5632 × 2048 (ffn_gate/up) tensor with a random positive definite H, in ABBA
// order (old, new, new, old) so that drifting load hits both alike; it also checks that old and
// new give the same bits. "old" is quantizers/qz_gptq.c of another commit, which
// scripts/bench-gptq.sh compiles into this program under the prefix old_ (see there). Not a unit
// test: minutes of run time. Usage: bench_gptq [SPEC] (default gptq:bits=4:group=128).
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qp.h"
#include "qz_gptq.h"
#include "qz_spec.h"

int old_chol_lower(double *a, int64_t n); // the old file's static chol_lower, exported by the script
int old_qz_gptq_quantize(const struct qz_base *b, const float *w, int64_t rows, int64_t cols, const double *h,
                         float *q, struct qz_gptq_info *info, char *err);

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static double urand(void) {
    rng ^= rng >> 12, rng ^= rng << 25, rng ^= rng >> 27;
    return (double)((rng * 0x2545f4914f6cdd1dull) >> 11) / (double)(1ull << 53) * 2.0 - 1.0;
}

// H = (2/N) XᵀX + 1e-3·I for X (N × n) with correlated columns: positive definite, GPTQ-like.
static double *make_h(int64_t n, int64_t N) {
    double *x = malloc((size_t)(N * n) * sizeof *x), *h = malloc((size_t)(n * n) * sizeof *h);
    for (int64_t t = 0; t < N; t++) {
        double f = urand();
        for (int64_t j = 0; j < n; j++) x[t * n + j] = urand() + 0.5 * f * (j % 3 == 0) + (j % 97 == 5 ? 5 * urand() : 0);
    }
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)n, (int)n, (int)N, 2.0 / (double)N, x, (int)n, x, (int)n,
                0.0, h, (int)n);
    for (int64_t i = 0; i < n; i++) h[i * n + i] += 1e-3;
    free(x);
    return h;
}

static void bench_chol(int64_t n) {
    double *h = make_h(n, 2 * n), *a = malloc((size_t)(n * n) * sizeof *a), *ref = malloc((size_t)(n * n) * sizeof *ref);
    double t[2] = {0, 0};
    for (int rep = 0; rep < 4; rep++) {
        int is_new = rep == 1 || rep == 2;
        memcpy(a, h, (size_t)(n * n) * sizeof *a);
        double t0 = qp_now();
        int rc = is_new ? qz_gptq_cholesky(a, n, 1) : old_chol_lower(a, n);
        t[is_new] += qp_now() - t0;
        if (rc) printf("cholesky n=%lld: refused (%d)\n", (long long)n, rc);
        if (rep == 0) memcpy(ref, a, (size_t)(n * n) * sizeof *a);
        else if (memcmp(ref, a, (size_t)(n * n) * sizeof *a)) printf("cholesky n=%lld: BITS DIFFER\n", (long long)n);
    }
    printf("cholesky n=%-5lld old %7.3f s  new %7.3f s  (%.1fx), bits identical unless said\n", (long long)n,
           t[0] / 2, t[1] / 2, t[0] / t[1]);
    free(h), free(a), free(ref);
}

static void bench_tensor(const struct qz_base *b, int64_t rows, int64_t cols, const double *h) {
    float *w = malloc((size_t)(rows * cols) * sizeof *w), *q[2];
    for (int i = 0; i < 2; i++) q[i] = malloc((size_t)(rows * cols) * sizeof *q[i]);
    for (int64_t k = 0; k < rows * cols; k++) w[k] = (float)(0.02 * urand());
    char err[QP_ERRLEN];
    double t[2] = {0, 0}, loss[2] = {0, 0};
    for (int rep = 0; rep < 4; rep++) {
        int is_new = rep == 1 || rep == 2;
        struct qz_gptq_info info;
        double t0 = qp_now();
        int rc = is_new ? qz_gptq_quantize(b, w, rows, cols, h, q[1], &info, err)
                        : old_qz_gptq_quantize(b, w, rows, cols, h, q[0], &info, err);
        t[is_new] += qp_now() - t0;
        if (rc) printf("%lld x %lld: %s\n", (long long)rows, (long long)cols, err);
        loss[is_new] = info.loss;
    }
    // with a factor made once, as q/k/v or gate/up share one: the per-tensor cost after the first
    struct qz_gptq_factor *f = NULL;
    double t0 = qp_now();
    if (qz_gptq_factor_create(b, h, cols, &f, err)) printf("factor: %s\n", err);
    double tf = qp_now() - t0;
    t0 = qp_now();
    if (f && qz_gptq_quantize_f(b, w, rows, cols, h, f, q[1], NULL, NULL, err)) printf("shared: %s\n", err);
    double ts = qp_now() - t0;
    qz_gptq_factor_destroy(f);
    int same = !memcmp(q[0], q[1], (size_t)(rows * cols) * sizeof *w) && !memcmp(&loss[0], &loss[1], sizeof *loss);
    printf("quantize %5lld x %-5lld old %7.3f s  new %7.3f s  (%.2fx); factor alone %.3f s, a tensor sharing it "
           "%.3f s; q and loss %s\n", (long long)rows, (long long)cols, t[0] / 2, t[1] / 2, t[0] / t[1], tf, ts,
           same ? "bit-identical" : "DIFFER");
    free(w), free(q[0]), free(q[1]);
}

int main(int argc, char **argv) {
    const char *spec = argc > 1 ? argv[1] : "gptq:bits=4:group=128";
    struct qz_base b;
    char err[QP_ERRLEN];
    if (qz_base_parse(spec, &b, err) || b.method != QZ_GPTQ) {
        fprintf(stderr, "bench_gptq: bad spec '%s': %s\n", spec, err);
        return 2;
    }
    bench_chol(2048);
    bench_chol(5632);
    printf("spec %s\n", spec);
    double *h = make_h(5632, 8192);
    bench_tensor(&b, 2048, 5632, h);
    free(h);
    h = make_h(2048, 8192);
    bench_tensor(&b, 5632, 2048, h);
    free(h);
    return 0;
}
