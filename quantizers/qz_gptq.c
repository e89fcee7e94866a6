// qz_gptq.c — GPTQ on one linear layer (qz_gptq.h): the Cholesky machinery, the per-weight
// target grids (RTN groups or llama.cpp blocks), the column sweep with lazy batch updates, and
// the loss.
//
// Depends on kernels/ headers, quantizers/ and OpenBLAS's cblas; never on harness/.
#include "qz_gptq.h"

#include <cblas.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <math.h>
#include <omp.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "kn_blocks.h"
#include "kn_blocks_k.h"
#include "kn_cpu.h"
#include "kn_types.h"
#include "qp.h"
#include "qz_ggml.h"
#include "qz_kquants.h"
#include "qz_rtn.h"

// ---------------------------------------------------------------------------------------------
// Cholesky (fp64, row-major, our own: no LAPACK in this build)
//
// Lower Cholesky factor of a (n × n) in place: the lower triangle becomes L (a = L Lᵀ), the
// strict upper triangle is used as scratch and left zero. Every element is
//     L[i][j] = (a[i][j] − Σ_{k<j} L[i][k]·L[j][k]) / L[j][j]     (i > j)
//     L[j][j] = sqrt(a[j][j] − Σ_{k<j} L[j][k]·L[j][k])
// with the sum subtracted term by term in k order from 0, each product rounded and then
// subtracted (never a fused multiply-add: the build has -ffp-contract=off and the SIMD kernels
// below use mul then sub). That is the textbook triple loop's order; the bits depend neither on
// the blocking below nor on the thread count, and equal the column-at-a-time code this replaced.
//
// Blocking (panels of CHOL_NB columns): for the panel [p0, p1), first every element (i, j) with
// i >= p0 and j in the panel gets the terms k < p0 (the panel update, a matrix product whose
// elements each keep their own sequential chain: SIMD lanes and threads run over elements,
// never over k), in k-blocks of CHOL_KB so that the packed panel rows stay in L2; then the panel
// is finished column by column with the terms p0 <= k < j: its diagonal block serially, the rows
// below it in tiles of CHOL_FR rows. A column-at-a-time factorization streams the whole
// computed part of L once per column (~n³/6 loads, 240 GB at n = 5632); here once per panel.
#define CHOL_NB 64  // panel width
#define CHOL_KB 256 // k-block of the panel update: the packed block is 256 × 64 doubles (128 KiB)
#define CHOL_R 4    // rows of a register tile of the update (4 rows × 32 columns: 16 zmm chains)
#define CHOL_FR 16  // rows of a tile of the panel finish

// Panel update, portable: rows i0 .. i0+m, t[i][p0+jj] −= a[i][k0+kk] · P[kk][jj] for kk in
// order; P (kc × CHOL_NB) holds L[p0+jj][k0+kk].
static void chol_update_ref(double *a, int64_t n, int64_t i0, int m, int64_t p0, int nb, int64_t k0, int kc,
                            const double *P) {
    for (int r = 0; r < m; r++) {
        double *ar = a + (i0 + r) * n, t[CHOL_NB];
        for (int jj = 0; jj < nb; jj++) t[jj] = ar[p0 + jj];
        for (int kk = 0; kk < kc; kk++) {
            const double l = ar[k0 + kk], *pk = P + kk * CHOL_NB;
#if !defined(__clang__) // (clang at -O1, the fuzz build, cannot honour it and -Werror stops the build)
#pragma omp simd // lanes are elements: each keeps its own chain in kk order
#endif
            for (int jj = 0; jj < nb; jj++) t[jj] -= l * pk[jj];
        }
        for (int jj = 0; jj < nb; jj++) ar[p0 + jj] = t[jj];
    }
}

#if defined(__x86_64__)
// The same with AVX-512: a tile of CHOL_R rows × 32 columns in 16 zmm accumulators, per kk one
// broadcast of L[i][k] per row and 4 loads of the packed row; _mm512_mul_pd then _mm512_sub_pd
// (the same two roundings as the portable code). Rows past m repeat row 0 and are not stored;
// columns past nb are masked (P is zero-padded there).
__attribute__((target("avx512f"))) static void chol_update_avx512(double *a, int64_t n, int64_t i0, int m,
                                                                   int64_t p0, int nb, int64_t k0, int kc,
                                                                   const double *P) {
    const double *ar[CHOL_R];
    for (int r = 0; r < CHOL_R; r++) ar[r] = a + (i0 + (r < m ? r : 0)) * n;
    for (int c = 0; c < nb; c += 32) {
        __mmask8 mk[4];
        for (int v = 0; v < 4; v++) {
            int rem = nb - c - 8 * v;
            mk[v] = (__mmask8)(rem >= 8 ? 0xff : rem > 0 ? (1u << rem) - 1 : 0);
        }
        __m512d acc[CHOL_R][4];
        for (int r = 0; r < CHOL_R; r++)
            for (int v = 0; v < 4; v++) acc[r][v] = _mm512_maskz_loadu_pd(mk[v], ar[r] + p0 + c + 8 * v);
        for (int kk = 0; kk < kc; kk++) {
            const double *pk = P + kk * CHOL_NB + c;
            __m512d p[4] = {_mm512_loadu_pd(pk), _mm512_loadu_pd(pk + 8), _mm512_loadu_pd(pk + 16),
                            _mm512_loadu_pd(pk + 24)};
            for (int r = 0; r < CHOL_R; r++) {
                __m512d l = _mm512_set1_pd(ar[r][k0 + kk]);
                for (int v = 0; v < 4; v++) acc[r][v] = _mm512_sub_pd(acc[r][v], _mm512_mul_pd(l, p[v]));
            }
        }
        for (int r = 0; r < m; r++)
            for (int v = 0; v < 4; v++) _mm512_mask_storeu_pd((double *)ar[r] + p0 + c + 8 * v, mk[v], acc[r][v]);
    }
}
#endif

// The panel update of rows p0 .. n over k-blocks in order (threads split the row tiles).
// P: CHOL_KB × CHOL_NB scratch.
static void chol_panel_update(double *a, int64_t n, int64_t p0, int nb, double *P, int simd) {
    for (int64_t k0 = 0; k0 < p0; k0 += CHOL_KB) {
        int kc = (int)QP_MIN(CHOL_KB, p0 - k0);
        for (int jj = 0; jj < CHOL_NB; jj++)
            for (int kk = 0; kk < kc; kk++) P[kk * CHOL_NB + jj] = jj < nb ? a[(p0 + jj) * n + k0 + kk] : 0.0;
        int64_t tiles = (n - p0 + CHOL_R - 1) / CHOL_R;
#pragma omp parallel for schedule(static) if ((n - p0) * kc * nb > (1 << 17))
        for (int64_t t = 0; t < tiles; t++) {
            int64_t i0 = p0 + t * CHOL_R;
            int m = (int)QP_MIN(CHOL_R, n - i0);
#if defined(__x86_64__)
            if (simd) {
                chol_update_avx512(a, n, i0, m, p0, nb, k0, kc, P);
                continue;
            }
#endif
            chol_update_ref(a, n, i0, m, p0, nb, k0, kc, P);
        }
    }
    (void)simd;
}

// The panel's diagonal block (rows and columns p0 .. p0+nb), serially. -1 when a pivot is not
// positive and finite.
static int chol_panel_diag(double *a, int64_t n, int64_t p0, int nb) {
    for (int64_t j = p0; j < p0 + nb; j++) {
        double *aj = a + j * n, s = aj[j];
        for (int64_t k = p0; k < j; k++) s -= aj[k] * aj[k];
        if (!(s > 0) || !isfinite(s)) return -1;
        aj[j] = sqrt(s);
        for (int64_t i = j + 1; i < p0 + nb; i++) {
            double *ai = a + i * n, t = ai[j];
            for (int64_t k = p0; k < j; k++) t -= ai[k] * aj[k];
            ai[j] = t / aj[j];
        }
    }
    return 0;
}

// The panel's columns for rows i0 .. i0+m (all below the diagonal block), transposed into x so
// that the rows are the SIMD lanes: each row solves against the panel's diagonal block.
static void chol_panel_rows(double *a, int64_t n, int64_t i0, int m, int64_t p0, int nb) {
    double x[CHOL_NB][CHOL_FR];
    for (int jj = 0; jj < nb; jj++)
        for (int r = 0; r < CHOL_FR; r++) x[jj][r] = r < m ? a[(i0 + r) * n + p0 + jj] : 0.0;
    for (int jj = 0; jj < nb; jj++) {
        const double *lj = a + (p0 + jj) * n + p0; // L[p0+jj][p0 ..]
        for (int kk = 0; kk < jj; kk++) {
            const double l = lj[kk];
#if !defined(__clang__)
#pragma omp simd
#endif
            for (int r = 0; r < CHOL_FR; r++) x[jj][r] -= x[kk][r] * l;
        }
        for (int r = 0; r < CHOL_FR; r++) x[jj][r] = x[jj][r] / lj[jj];
    }
    for (int r = 0; r < m; r++)
        for (int jj = 0; jj < nb; jj++) a[(i0 + r) * n + p0 + jj] = x[jj][r];
}

// 0, -1 when a is not numerically positive definite, or QP_ENOMEM. simd: use the AVX-512
// kernel when the CPU has it (0: the portable code; the same bits either way).
static int chol_lower(double *a, int64_t n, int simd) {
    double *P = qp_alloc_array((size_t)CHOL_KB * CHOL_NB, sizeof *P);
    if (!P) return QP_ENOMEM;
    simd = simd && kn_cpu_has("avx512");
    int rc = 0;
    for (int64_t p0 = 0; p0 < n && !rc; p0 += CHOL_NB) {
        int nb = (int)QP_MIN(CHOL_NB, n - p0);
        chol_panel_update(a, n, p0, nb, P, simd);
        if ((rc = chol_panel_diag(a, n, p0, nb))) break;
        int64_t below = n - p0 - nb, tiles = (below + CHOL_FR - 1) / CHOL_FR;
#pragma omp parallel for schedule(static) if (below * nb * nb > (1 << 17))
        for (int64_t t = 0; t < tiles; t++) {
            int64_t i0 = p0 + nb + t * CHOL_FR;
            chol_panel_rows(a, n, i0, (int)QP_MIN(CHOL_FR, n - i0), p0, nb);
        }
    }
    qp_free(P);
    if (rc) return rc;
    for (int64_t i = 0; i < n; i++) memset(a + i * n + i + 1, 0, (size_t)(n - i - 1) * sizeof *a);
    return 0;
}

// u = upper Cholesky factor of (H' + lambda I)⁻¹, where H'[i][j] = h[p[i]][p[j]] (p = NULL:
// identity) with the diagonal entries of dead inputs read as 1 (dead = NULL: none). u and work
// are n × n. See qz_gptq.h, step 4: factor J H' J = L Lᵀ; R = J L J is L turned by 180 degrees
// (element (i, j) ↔ (n-1-i, n-1-j), i.e. the flat array reversed), upper triangular, with
// H' = R Rᵀ; then u = R⁻¹ by a triangular solve against the identity.
static int inverse_factor(const double *h, const int64_t *p, const uint8_t *dead, int64_t n,
                          double lambda, double *u, double *work) {
    for (int64_t i = 0; i < n; i++) {
        int64_t pi = p ? p[n - 1 - i] : n - 1 - i;
        for (int64_t j = 0; j < n; j++) {
            double v = 0;
            if (j <= i) {
                int64_t pj = p ? p[n - 1 - j] : n - 1 - j;
                v = h[pi * n + pj];
                if (i == j) v = (dead && dead[pi] ? 1.0 : v) + lambda;
            }
            work[i * n + j] = v;
        }
    }
    int rc = chol_lower(work, n, 1);
    if (rc) return rc;
    for (int64_t k = 0, m = n * n; k < m / 2; k++) {
        double t = work[k];
        work[k] = work[m - 1 - k];
        work[m - 1 - k] = t;
    }
    memset(u, 0, (size_t)(n * n) * sizeof *u);
    for (int64_t i = 0; i < n; i++) u[i * n + i] = 1.0;
    cblas_dtrsm(CblasRowMajor, CblasLeft, CblasUpper, CblasNoTrans, CblasNonUnit, (int)n, (int)n, 1.0,
                work, (int)n, u, (int)n);
    return 0;
}

int qz_gptq_inverse_factor(const double *a, int64_t n, double damp, double *u) {
    double *work = qp_alloc_array((size_t)(n * n), sizeof *work);
    if (!work) return QP_ENOMEM;
    int rc = inverse_factor(a, NULL, NULL, n, damp, u, work);
    qp_free(work);
    return rc;
}

int qz_gptq_cholesky(double *a, int64_t n, int simd) { return chol_lower(a, n, simd); }

// ---------------------------------------------------------------------------------------------
// llama.cpp block grids. Every type here dequantizes as w = A·k + B in its code k (k = kmin ..
// kmax, A and B per weight, set by the block's scales), except IQ4_NL (w = d·kvalues[k]). A
// block's grids are read back from the block packed by llama.cpp's quantizer: with every quant
// bit cleared the block dequantizes to B (k = 0); with the low-bits bytes set to `one` (code 1 in
// every field) and the high-bits bytes cleared, to A + B.

struct gg_desc {
    int type, bs, kmin, kmax;
    size_t off1, len1; // low bits of every code
    uint8_t one;       // byte pattern giving code 1 in every field of off1
    size_t off2, len2; // high bits (len2 = 0: none)
};

#define GG_FIELD(T, f) offsetof(struct T, f), sizeof(((struct T *)0)->f)
static const struct gg_desc gg_descs[] = {
    {KN_Q4_0, 32, 0, 15, GG_FIELD(kn_block_q4_0, qs), 0x11, 0, 0},
    {KN_Q4_1, 32, 0, 15, GG_FIELD(kn_block_q4_1, qs), 0x11, 0, 0},
    {KN_Q5_0, 32, 0, 31, GG_FIELD(kn_block_q5_0, qs), 0x11, GG_FIELD(kn_block_q5_0, qh)},
    {KN_Q5_1, 32, 0, 31, GG_FIELD(kn_block_q5_1, qs), 0x11, GG_FIELD(kn_block_q5_1, qh)},
    {KN_Q8_0, 32, -128, 127, GG_FIELD(kn_block_q8_0, qs), 0x01, 0, 0},
    {KN_IQ4_NL, 32, 0, 15, GG_FIELD(kn_block_iq4_nl, qs), 0x11, 0, 0},
    {KN_Q2_K, KN_QK_K, 0, 3, GG_FIELD(kn_block_q2_K, qs), 0x55, 0, 0},
    {KN_Q3_K, KN_QK_K, 0, 7, GG_FIELD(kn_block_q3_K, qs), 0x55, GG_FIELD(kn_block_q3_K, hmask)},
    {KN_Q4_K, KN_QK_K, 0, 15, GG_FIELD(kn_block_q4_K, qs), 0x11, 0, 0},
    {KN_Q5_K, KN_QK_K, 0, 31, GG_FIELD(kn_block_q5_K, qs), 0x11, GG_FIELD(kn_block_q5_K, qh)},
    {KN_Q6_K, KN_QK_K, 0, 63, GG_FIELD(kn_block_q6_K, ql), 0x11, GG_FIELD(kn_block_q6_K, qh)},
};
#undef GG_FIELD

// Room for any block above (q6_K, the largest, is 210 bytes).
#define GG_MAX_BLOCK_BYTES 256
_Static_assert(sizeof(struct kn_block_q6_K) <= GG_MAX_BLOCK_BYTES && sizeof(struct kn_block_q5_K) <= GG_MAX_BLOCK_BYTES,
               "a block does not fit GG_MAX_BLOCK_BYTES");

static const struct gg_desc *gg_lookup(int type) {
    for (size_t i = 0; i < QP_ARRAY_LEN(gg_descs); i++)
        if (gg_descs[i].type == type) return &gg_descs[i];
    return NULL;
}

static int gg_is_kquant(int type) { return type >= KN_Q2_K && type <= KN_Q6_K; }

// Packs x (one block, g->bs values) with llama.cpp's quantizer and reads back each weight's grid:
// a[k], b[k] (IQ4_NL: a[k] = d, b[k] = 0).
static int gg_block_grid(const struct gg_desc *g, const float *x, float *a, float *b) {
    _Alignas(16) uint8_t blk[GG_MAX_BLOCK_BYTES], probe[GG_MAX_BLOCK_BYTES];
    float v1[KN_QK_K];
    size_t nb = kn_type_info(g->type)->block_bytes;
    int rc = gg_is_kquant(g->type) ? qz_quantize_row_k(g->type, x, blk, g->bs, NULL)
                                   : qz_quantize_row(g->type, x, blk, g->bs, NULL);
    if (rc) return rc;
    memcpy(probe, blk, nb);
    memset(probe + g->off1, 0, g->len1);
    if (g->len2) memset(probe + g->off2, 0, g->len2);
    kn_dequantize_row(g->type, probe, b, g->bs);
    if (g->type == KN_IQ4_NL) { // b = d * kvalues[0], exact (fp16 d times a 7-bit integer)
        for (int k = 0; k < g->bs; k++) {
            a[k] = b[k] / (float)kn_iq4nl_values[0];
            b[k] = 0;
        }
        return 0;
    }
    memset(probe + g->off1, g->one, g->len1);
    kn_dequantize_row(g->type, probe, v1, g->bs);
    for (int k = 0; k < g->bs; k++) a[k] = v1[k] - b[k];
    return 0;
}

// The grid point of (a, b) nearest to w.
static float gg_value(const struct gg_desc *g, float a, float b, double w) {
    if (g->type == KN_IQ4_NL) {
        float best = a * (float)kn_iq4nl_values[0];
        for (int k = 1; k < 16; k++) {
            float v = a * (float)kn_iq4nl_values[k];
            if (fabs(v - w) < fabs(best - w)) best = v;
        }
        return best;
    }
    if (a == 0) return b;
    double k = round((w - b) / a);
    k = k < g->kmin ? g->kmin : k > g->kmax ? g->kmax : k;
    return b + a * (float)k;
}

// ---------------------------------------------------------------------------------------------
// The factor: what is derived from H alone (with damp and actorder)

struct diag_ix {
    double d;
    int64_t i;
};

static int by_diag_desc(const void *pa, const void *pb) {
    const struct diag_ix *a = pa, *b = pb;
    if (a->d != b->d) return a->d > b->d ? -1 : 1;
    return a->i < b->i ? -1 : a->i > b->i;
}

static int all_finite_f(const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

static int all_finite_d(const double *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

struct qz_gptq_factor {
    int64_t cols;
    double damp_asked; // b->damp it was made for
    int actorder;      // b->actorder it was made for
    double damp;       // damping fraction finally used (damp_asked · 10^raises)
    int raises;
    int64_t n_dead;
    double mean_diag;  // mean of H's diagonal, dead entries read as 1
    uint8_t *dead;     // (cols) input never active: H[i][i] == 0
    int64_t *perm;     // (cols) processing order → original column
    double *diag;      // (cols) H's diagonal: a factor is refused with another H
    double *U;         // (cols, cols) upper Cholesky factor of the damped, permuted H⁻¹
};

void qz_gptq_factor_destroy(struct qz_gptq_factor *f) {
    if (!f) return;
    free(f->dead);
    free(f->perm);
    free(f->diag);
    qp_free(f->U);
    free(f);
}

// Dead inputs, mean diagonal and the processing order (steps 1 and 2 of qz_gptq.h).
static int factor_order(struct qz_gptq_factor *f, const double *h) {
    int64_t cols = f->cols;
    struct diag_ix *dx = malloc((size_t)cols * sizeof *dx);
    if (!dx) return QP_ENOMEM;
    f->mean_diag = 0;
    for (int64_t i = 0; i < cols; i++) {
        double d = f->diag[i] = h[i * cols + i];
        if (d == 0) f->dead[i] = 1, f->n_dead++, d = 1;
        dx[i] = (struct diag_ix){d, i};
        f->mean_diag += d;
    }
    f->mean_diag /= (double)cols;
    if (f->actorder) qsort(dx, (size_t)cols, sizeof *dx, by_diag_desc);
    for (int64_t i = 0; i < cols; i++) f->perm[i] = dx[i].i;
    free(dx);
    return 0;
}

int qz_gptq_factor_create(const struct qz_base *b, const double *h, int64_t cols, struct qz_gptq_factor **out,
                          char *err) {
    QP_ASSERT(b->method == QZ_GPTQ);
    *out = NULL;
    if (cols < 1 || cols > (1 << 20))
        return qp_fail(err, QP_EINVAL, "gptq: %lld inputs out of range", (long long)cols);
    if (!all_finite_d(h, cols * cols)) return qp_fail(err, QP_EINVAL, "gptq: the Hessian holds NaN or inf");
    struct qz_gptq_factor *f = calloc(1, sizeof *f);
    double *work = NULL;
    int rc = QP_ENOMEM;
    if (!f) goto done;
    *f = (struct qz_gptq_factor){.cols = cols, .damp_asked = b->damp, .actorder = b->actorder, .damp = b->damp};
    f->dead = calloc((size_t)cols, 1);
    f->perm = malloc((size_t)cols * sizeof *f->perm);
    f->diag = malloc((size_t)cols * sizeof *f->diag);
    f->U = qp_alloc_array((size_t)(cols * cols), sizeof *f->U);
    work = qp_alloc_array((size_t)(cols * cols), sizeof *work);
    if (!f->dead || !f->perm || !f->diag || !f->U || !work || factor_order(f, h)) goto done;
    // damping, raised (×10) until H + λI factors
    while ((rc = inverse_factor(h, f->perm, f->dead, cols, f->damp * f->mean_diag, f->U, work)) == -1) {
        if (++f->raises > QZ_GPTQ_MAX_RAISES) {
            rc = qp_fail(err, QP_ERANGE, "gptq: the Hessian is not positive definite even with damp=%g", f->damp);
            goto done;
        }
        f->damp *= 10;
    }
done:
    qp_free(work);
    if (rc == QP_ENOMEM)
        qp_fail(err, QP_ENOMEM, "gptq: out of memory for the factor of a %lld x %lld Hessian", (long long)cols,
                (long long)cols);
    if (rc) qz_gptq_factor_destroy(f);
    else *out = f;
    return rc;
}

int qz_gptq_factor_fits(const struct qz_gptq_factor *f, const struct qz_base *b, int64_t cols) {
    return f && f->cols == cols && f->damp_asked == b->damp && f->actorder == (int)b->actorder;
}

// ---------------------------------------------------------------------------------------------
// The sweep

// One GPTQ run: the inputs, the derived sizes and every work buffer.
struct gq {
    const struct qz_base *b;
    const float *w;                  // (rows, cols) the caller's weights
    const double *h;                 // (cols, cols) the caller's Hessian
    const struct qz_gptq_factor *f;  // perm, dead, U
    float *q;                        // (rows, cols) the result
    struct qz_grid *grids_out;       // (rows, n_groups) the caller's, or NULL when not wanted/possible
    int64_t rows, cols;
    const struct gg_desc *gd;        // llama.cpp target type, or NULL for the integer grid
    int64_t G, blk, n_groups;        // weights per group, columns per lazy block, groups per row
    int stat;                        // static groups (fixed before the sweep)
    double *W, *E;                   // (rows, cols) working weights; (rows, blk) errors of a block
    double *obs_row;                 // (rows) OBS loss per row
    float *scratch;                  // (threads, G) one group's values per thread
    struct qz_grid *grids;           // static integer grids, (rows, n_groups)
    float *ga, *gb;                  // llama.cpp targets: each weight's grid a·k + b, (rows, cols)
};

static void gq_free(struct gq *g) {
    qp_free(g->W);
    qp_free(g->E);
    free(g->obs_row);
    qp_free(g->scratch);
    if (g->grids != g->grids_out) qp_free(g->grids);
    qp_free(g->ga);
    qp_free(g->gb);
}

// The shapes, options and values are usable; the llama.cpp target's description in g->gd.
static int gq_check(struct gq *g, char *err) {
    const struct qz_base *b = g->b;
    if (g->rows < 1 || g->cols < 1 || g->cols > (1 << 20) || g->rows > (1 << 24))
        return qp_fail(err, QP_EINVAL, "gptq: shape %lld x %lld out of range", (long long)g->rows, (long long)g->cols);
    if (b->ggml_type >= 0) {
        if (!(g->gd = gg_lookup(b->ggml_type)))
            return qp_fail(err, QP_ENOTSUP, "gptq: cannot target type %d", b->ggml_type);
        if (g->cols % g->gd->bs)
            return qp_fail(err, QP_EINVAL, "gptq: rows of %lld weights do not split into %s blocks of %d",
                           (long long)g->cols, kn_type_info(g->gd->type)->name, g->gd->bs);
    } else if (b->bits < 2 || b->bits > 8 || b->group < 1) {
        return qp_fail(err, QP_EINVAL, "gptq: bits %d / group %lld out of range", b->bits, (long long)b->group);
    }
    if (!all_finite_f(g->w, g->rows * g->cols)) return qp_fail(err, QP_EINVAL, "gptq: the weights hold NaN or inf");
    if (!all_finite_d(g->h, g->cols * g->cols)) return qp_fail(err, QP_EINVAL, "gptq: the Hessian holds NaN or inf");
    return 0;
}

// Group and block sizes, and the buffers (see qz_gptq.h for their sum).
static int gq_alloc(struct gq *g, char *err) {
    int64_t rows = g->rows, cols = g->cols;
    g->G = g->gd ? g->gd->bs : QP_MIN(g->b->group, cols); // weights per group (the last may be shorter)
    g->stat = g->b->static_groups || (g->gd && g->b->actorder);
    g->blk = QZ_GPTQ_BLOCK;
    if (!g->stat) g->blk = g->G >= QZ_GPTQ_BLOCK ? g->G : g->G * ((QZ_GPTQ_BLOCK + g->G - 1) / g->G);
    g->blk = QP_MIN(g->blk, cols);
    g->n_groups = (cols + g->G - 1) / g->G;
    size_t rc_ = (size_t)(rows * cols);
    g->W = qp_alloc_array(rc_, sizeof(double));
    g->E = qp_alloc_array((size_t)(rows * g->blk), sizeof(double));
    g->obs_row = calloc((size_t)rows, sizeof(double));
    g->scratch = qp_alloc_array((size_t)omp_get_max_threads() * (size_t)g->G, sizeof(float));
    if (!g->gd && g->stat) // static grids go straight to the caller's array when there is one
        g->grids = g->grids_out ? g->grids_out : qp_alloc_array((size_t)(rows * g->n_groups), sizeof *g->grids);
    if (g->gd) g->ga = qp_alloc_array(rc_, sizeof(float)), g->gb = qp_alloc_array(rc_, sizeof(float));
    if (!g->W || !g->E || !g->obs_row || !g->scratch || (!g->gd && g->stat && !g->grids) ||
        (g->gd && (!g->ga || !g->gb)))
        return qp_fail(err, QP_ENOMEM, "gptq: out of memory for a %lld x %lld layer", (long long)rows, (long long)cols);
    return 0;
}

// The working weights W[r][i] = w[r][perm[i]], dead columns zeroed.
static void gq_load(struct gq *g) {
    const int64_t *perm = g->f->perm;
    const uint8_t *dead = g->f->dead;
    for (int64_t r = 0; r < g->rows; r++)
        for (int64_t i = 0; i < g->cols; i++)
            g->W[r * g->cols + i] = dead[perm[i]] ? 0.0 : (double)g->w[r * g->cols + perm[i]];
}

// Static grids, from the original (dead-zeroed) weights in original column order.
static int gq_static_grids(struct gq *g, char *err) {
    int64_t cols = g->cols, G = g->G;
    float *x = g->scratch;
    for (int64_t r = 0; r < g->rows; r++)
        for (int64_t g0 = 0; g0 < cols; g0 += G) {
            int64_t n = QP_MIN(G, cols - g0);
            for (int64_t k = 0; k < n; k++) x[k] = g->f->dead[g0 + k] ? 0.0f : g->w[r * cols + g0 + k];
            if (!g->gd) qz_grid_fit(g->b, x, n, 1.0f, &g->grids[r * g->n_groups + g0 / G]);
            else if (gg_block_grid(g->gd, x, g->ga + r * cols + g0, g->gb + r * cols + g0))
                return qp_fail(err, QP_EINVAL, "gptq: cannot quantize a block of row %lld", (long long)r);
        }
    return 0;
}

// Row r over the columns i1..i2 of one block: each weight quantized in order, its error spread
// over the block's later columns (the rest waits for the lazy batch update). x: G floats of this
// thread. 1 when llama.cpp's quantizer refused a block.
static int gq_row(struct gq *g, int64_t r, int64_t i1, int64_t i2, float *x) {
    int64_t cols = g->cols, G = g->G;
    const int64_t *perm = g->f->perm;
    double *wr = g->W + r * cols, *er = g->E + r * g->blk, obs = 0;
    struct qz_grid grid = {0};
    int bad = 0;
    for (int64_t i = i1; i < i2; i++) {
        if (!g->stat && (i % G) == 0) { // a dynamic group starts: fit it to the current values
            int64_t n = QP_MIN(G, cols - i);
            for (int64_t k = 0; k < n; k++) x[k] = (float)wr[i + k];
            if (g->gd) bad |= gg_block_grid(g->gd, x, g->ga + r * cols + i, g->gb + r * cols + i) != 0;
            else qz_grid_fit(g->b, x, n, 1.0f, &grid);
            if (g->grids_out && !g->gd) g->grids_out[r * g->n_groups + i / G] = grid; // original order here
        }
        double wv = wr[i];
        float qv;
        if (g->gd) {
            size_t at = (size_t)(r * cols) + (size_t)(g->stat ? perm[i] : i);
            qv = gg_value(g->gd, g->ga[at], g->gb[at], wv);
        } else {
            const struct qz_grid *gg = g->stat ? &g->grids[r * g->n_groups + perm[i] / G] : &grid;
            qv = qz_grid_value(gg, qz_grid_code(gg, (float)wv));
        }
        const double *ui = g->f->U + i * cols;
        double e = (wv - qv) / ui[i];
        obs += e * e / 2;
        g->q[r * cols + perm[i]] = qv;
        er[i - i1] = e;
        for (int64_t j = i + 1; j < i2; j++) wr[j] -= e * ui[j];
    }
    g->obs_row[r] += obs;
    return bad;
}

// The sweep. Rows are independent within a block (grids are per row), so they run in parallel;
// each row's arithmetic is the same whatever the thread count.
static int gq_sweep(struct gq *g, char *err) {
    int64_t rows = g->rows, cols = g->cols;
    for (int64_t i1 = 0; i1 < cols; i1 += g->blk) {
        int64_t i2 = QP_MIN(i1 + g->blk, cols), cnt = i2 - i1;
        int bad = 0;
#pragma omp parallel for schedule(static) reduction(| : bad) if (rows * cnt * cnt > (1 << 15))
        for (int64_t r = 0; r < rows; r++)
            bad |= gq_row(g, r, i1, i2, g->scratch + (size_t)omp_get_thread_num() * (size_t)g->G);
        if (bad) return qp_fail(err, QP_EINVAL, "gptq: llama.cpp's quantizer refused a block");
        if (i2 < cols) // lazy batch update: W[:, i2:] -= E · U[i1:i2, i2:]
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)(cols - i2), (int)cnt, -1.0,
                        g->E, (int)g->blk, g->f->U + i1 * cols + i2, (int)cols, 1.0, g->W + i2, (int)cols);
    }
    return 0;
}

// Loss: ½ Σ_r Δ_r H Δ_rᵀ with Δ = w − q (the caller's weights and H), in fp64; W is reused for Δ.
// This panel's terms are added to *loss and *obs_loss in row order (the caller halves the sum).
// H Δᵀ is one product per panel: OpenBLAS's dgemm may round an element differently depending
// on where the rows are cut (seen on stories260K's ffn_up, 172 rows in panels of 128: the last
// digit), hence panels only for large layers, of at least GQ_PANEL_MIN rows (see gq_panel_rows).
static int gq_loss(struct gq *g, double *loss, double *obs_loss, char *err) {
    int64_t rows = g->rows, cols = g->cols;
    size_t rc_ = (size_t)(rows * cols);
    for (int64_t r = 0; r < rows; r++) *obs_loss += g->obs_row[r];
    for (size_t k = 0; k < rc_; k++) g->W[k] = (double)g->w[k] - (double)g->q[k];
    double *M = qp_alloc_array(rc_, sizeof(double));
    if (!M) return qp_fail(err, QP_ENOMEM, "gptq: out of memory for the loss");
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)cols, (int)cols, 1.0, g->W, (int)cols,
                g->h, (int)cols, 0.0, M, (int)cols);
    for (size_t k = 0; k < rc_; k++) *loss += g->W[k] * M[k];
    qp_free(M);
    return 0;
}

// Row panels. Rows are independent in GPTQ (each has its own grids and errors; only U and H are
// shared), so a large layer is quantized as a sequence of smaller ones: the sweep and the loss
// then hold 2 · panel · cols doubles instead of 2 · rows · cols (1 GiB for a 32000 × 2048
// classifier, 128 MiB in panels). The cut changes nothing but the M of the two dgemm calls;
// on the shapes checked (M ≥ 512: a classifier's 32000 × 2048, TinyLlama's and Llama-2-7B's
// FFN) OpenBLAS rounds every element the same either way, and the tests check a cut layer
// against the uncut one. Layers of at most gq_panel_bytes of fp64 are one panel.
#define GQ_PANEL_MIN 512
static int64_t gq_panel_bytes = (int64_t)64 << 20;

void qz_gptq_set_panel_bytes(int64_t bytes) { gq_panel_bytes = bytes > 0 ? bytes : (int64_t)64 << 20; }

static int64_t gq_panel_rows(int64_t rows, int64_t cols) {
    if (rows * cols * (int64_t)sizeof(double) <= gq_panel_bytes) return rows;
    int64_t p = gq_panel_bytes / (cols * (int64_t)sizeof(double)) / GQ_PANEL_MIN * GQ_PANEL_MIN;
    return QP_MIN(QP_MAX(p, GQ_PANEL_MIN), rows);
}

int qz_gptq_quantize_f(const struct qz_base *b, const float *w, int64_t rows, int64_t cols, const double *h,
                       const struct qz_gptq_factor *f, float *q, struct qz_grid *grids, struct qz_gptq_info *info,
                       char *err) {
    double t0 = qp_now(), loss = 0, obs_loss = 0;
    QP_ASSERT(b->method == QZ_GPTQ);
    struct gq g = {.b = b, .w = w, .h = h, .f = f, .q = q, .rows = rows, .cols = cols};
    struct qz_gptq_factor *own = NULL;
    int rc = gq_check(&g, err);
    if (rc) return rc;
    if (f && !qz_gptq_factor_fits(f, b, cols))
        return qp_fail(err, QP_EINVAL, "gptq: the factor was made for other options or another width");
    for (int64_t i = 0; f && i < cols; i++)
        if (memcmp(&f->diag[i], &h[i * cols + i], sizeof *h))
            return qp_fail(err, QP_EINVAL, "gptq: the factor was made from another Hessian");
    if (!f && (rc = qz_gptq_factor_create(b, h, cols, &own, err))) return rc;
    g.f = f ? f : own;
    int grids_ok = !g.gd && (b->static_groups || !b->actorder); // groups in original column order
    const int64_t panel = gq_panel_rows(rows, cols);
    g.grids_out = grids_ok ? grids : NULL;
    g.rows = panel; // the buffers are a panel's
    rc = gq_alloc(&g, err);
    for (int64_t r0 = 0; r0 < rows && !rc; r0 += panel) {
        g.rows = QP_MIN(panel, rows - r0);
        g.w = w + r0 * cols, g.q = q + r0 * cols;
        if (g.grids_out) { // the caller's grids of this panel's rows (static ones are written there directly)
            if (g.grids == g.grids_out) g.grids = grids + r0 * g.n_groups;
            g.grids_out = grids + r0 * g.n_groups;
        }
        memset(g.obs_row, 0, (size_t)g.rows * sizeof *g.obs_row);
        gq_load(&g);
        if (g.stat) rc = gq_static_grids(&g, err);
        if (!rc) rc = gq_sweep(&g, err);
        if (!rc) rc = gq_loss(&g, &loss, &obs_loss, err);
    }
    loss /= 2;
    if (!rc && info)
        *info = (struct qz_gptq_info){.loss = loss, .obs_loss = obs_loss, .damp = g.f->damp, .n_raises = g.f->raises,
                                      .n_dead = g.f->n_dead, .type = g.gd ? g.gd->type : -1,
                                      .grids_written = grids && grids_ok, .seconds = qp_now() - t0};
    gq_free(&g);
    qz_gptq_factor_destroy(own);
    return rc;
}

int qz_gptq_quantize(const struct qz_base *b, const float *w, int64_t rows, int64_t cols,
                     const double *h, float *q, struct qz_gptq_info *info, char *err) {
    return qz_gptq_quantize_f(b, w, rows, cols, h, NULL, q, NULL, info, err);
}
