// qz_gptq.c — GPTQ on one linear layer (qz_gptq.h): the Cholesky machinery, the per-weight
// target grids (RTN groups or llama.cpp blocks), the column sweep with lazy batch updates, and
// the loss.
//
// Depends on kernels/ headers, quantizers/ and OpenBLAS's cblas; never on harness/.
#include "qz_gptq.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "kn_blocks.h"
#include "kn_blocks_k.h"
#include "kn_types.h"
#include "qp.h"
#include "qz_ggml.h"
#include "qz_kquants.h"
#include "qz_rtn.h"

// ---------------------------------------------------------------------------------------------
// Cholesky (fp64, row-major, our own: no LAPACK in this build)

// Lower Cholesky factor of a (n × n) in place: the lower triangle becomes L (a = L Lᵀ), the
// strict upper triangle is used as scratch and left zero. -1 when a pivot is not positive and
// finite.
//
// Left-looking, column j at a time: L[i][j] = (a[i][j] - Σ_{k<j} L[i][k] L[j][k]) / L[j][j], each
// sum in k order from 0 (the plain dot product's order, so the bits do not depend on threads or
// blocking). One dot product alone is a chain of dependent subtractions, latency-bound; instead a
// block of CHOL_ROWS rows i advances together, one independent chain per row, reading L[i][k]
// for consecutive i from a transposed copy kept in the upper triangle (row k, columns i > k),
// where they are contiguous and go through SIMD lanes. Same operations in the same order per
// element: the same factor, 2-2.5x faster (n = 2048, 2 threads; GPTQ factors n = 5632 for
// TinyLlama's ffn_down).
#define CHOL_ROWS 64

static void chol_column_block(double *a, int64_t n, int64_t j, int64_t i0, int64_t m) {
    const double *aj = a + j * n;
    double t[CHOL_ROWS];
    for (int64_t r = 0; r < m; r++) t[r] = a[(i0 + r) * n + j];
    for (int64_t k = 0; k < j; k++) {
        const double *lk = a + k * n + i0, ljk = aj[k]; // L[i0 ..][k], transposed
#if !defined(__clang__) // (clang at -O1, the fuzz build, cannot honour it and -Werror stops the build)
#pragma omp simd // lanes are rows: element-wise, each row's chain keeps its order
#endif
        for (int64_t r = 0; r < m; r++) t[r] -= lk[r] * ljk;
    }
    for (int64_t r = 0; r < m; r++) {
        double v = t[r] / aj[j];
        a[(i0 + r) * n + j] = v;
        a[j * n + i0 + r] = v; // its transposed copy for the columns after j
    }
}

static int chol_lower(double *a, int64_t n) {
    for (int64_t j = 0; j < n; j++) {
        double *aj = a + j * n;
        double s = aj[j];
        for (int64_t k = 0; k < j; k++) s -= aj[k] * aj[k];
        if (!(s > 0) || !isfinite(s)) return -1;
        aj[j] = sqrt(s);
        int64_t n_blocks = (n - j - 1 + CHOL_ROWS - 1) / CHOL_ROWS;
#pragma omp parallel for schedule(static) if ((n - j) * j > (1 << 16))
        for (int64_t b = 0; b < n_blocks; b++) {
            int64_t i0 = j + 1 + b * CHOL_ROWS;
            chol_column_block(a, n, j, i0, QP_MIN(CHOL_ROWS, n - i0));
        }
    }
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
    if (chol_lower(work, n)) return -1;
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
// The sweep

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

// One GPTQ run: the inputs, the derived sizes and every work buffer.
struct gq {
    const struct qz_base *b;
    const float *w;              // (rows, cols) the caller's weights
    const double *h;             // (cols, cols) the caller's Hessian
    float *q;                    // (rows, cols) the result
    int64_t rows, cols;
    const struct gg_desc *gd;    // llama.cpp target type, or NULL for the integer grid
    int64_t G, blk, n_groups;    // weights per group, columns per lazy block, groups per row
    int stat;                    // static groups (fixed before the sweep)
    uint8_t *dead;               // (cols) input never active: H[i][i] == 0
    int64_t *perm;               // (cols) processing order → original column
    struct diag_ix *dx;          // (cols)
    double *U, *work;            // (cols, cols) upper Cholesky factor of H⁻¹, scratch
    double *W, *E;               // (rows, cols) working weights; (rows, blk) errors of a block
    double *obs_row;             // (rows) OBS loss per row
    float *scratch;              // (threads, G) one group's values per thread
    struct qz_grid *grids;       // static integer grids, (rows, n_groups), or per-row scratch
    float *ga, *gb;              // llama.cpp targets: each weight's grid a·k + b, (rows, cols)
    double mean_diag, damp;
    int raises;
    int64_t n_dead;
};

static void gq_free(struct gq *g) {
    free(g->dead);
    free(g->perm);
    free(g->dx);
    qp_free(g->U);
    qp_free(g->work);
    qp_free(g->W);
    qp_free(g->E);
    free(g->obs_row);
    qp_free(g->scratch);
    qp_free(g->grids);
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

// Group and block sizes, and the buffers.
static int gq_alloc(struct gq *g, char *err) {
    int64_t rows = g->rows, cols = g->cols;
    g->G = g->gd ? g->gd->bs : QP_MIN(g->b->group, cols); // weights per group (the last may be shorter)
    g->stat = g->b->static_groups || (g->gd && g->b->actorder);
    g->blk = QZ_GPTQ_BLOCK;
    if (!g->stat) g->blk = g->G >= QZ_GPTQ_BLOCK ? g->G : g->G * ((QZ_GPTQ_BLOCK + g->G - 1) / g->G);
    g->blk = QP_MIN(g->blk, cols);
    g->n_groups = (cols + g->G - 1) / g->G;
    size_t cc = (size_t)(cols * cols), rc_ = (size_t)(rows * cols);
    g->dead = calloc((size_t)cols, 1);
    g->perm = malloc((size_t)cols * sizeof *g->perm);
    g->dx = malloc((size_t)cols * sizeof *g->dx);
    g->U = qp_alloc_array(cc, sizeof(double));
    g->work = qp_alloc_array(cc, sizeof(double));
    g->W = qp_alloc_array(rc_, sizeof(double));
    g->E = qp_alloc_array((size_t)(rows * g->blk), sizeof(double));
    g->obs_row = calloc((size_t)rows, sizeof(double));
    g->scratch = qp_alloc_array((size_t)omp_get_max_threads() * (size_t)g->G, sizeof(float));
    if (!g->gd) g->grids = qp_alloc_array((size_t)(rows * (g->stat ? g->n_groups : 1)), sizeof *g->grids);
    else g->ga = qp_alloc_array(rc_, sizeof(float)), g->gb = qp_alloc_array(rc_, sizeof(float));
    if (!g->dead || !g->perm || !g->dx || !g->U || !g->work || !g->W || !g->E || !g->obs_row || !g->scratch ||
        (!g->gd && !g->grids) || (g->gd && (!g->ga || !g->gb)))
        return qp_fail(err, QP_ENOMEM, "gptq: out of memory for a %lld x %lld layer", (long long)rows, (long long)cols);
    return 0;
}

// Dead inputs, the processing order, and the working weights W[r][i] = w[r][perm[i]].
static void gq_order(struct gq *g) {
    int64_t rows = g->rows, cols = g->cols;
    g->mean_diag = 0;
    for (int64_t i = 0; i < cols; i++) {
        double d = g->h[i * cols + i];
        if (d == 0) g->dead[i] = 1, g->n_dead++, d = 1;
        g->dx[i] = (struct diag_ix){d, i};
        g->mean_diag += d;
    }
    g->mean_diag /= (double)cols;
    if (g->b->actorder) qsort(g->dx, (size_t)cols, sizeof *g->dx, by_diag_desc);
    for (int64_t i = 0; i < cols; i++) g->perm[i] = g->dx[i].i;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t i = 0; i < cols; i++)
            g->W[r * cols + i] = g->dead[g->perm[i]] ? 0.0 : (double)g->w[r * cols + g->perm[i]];
}

// Static grids, from the original (dead-zeroed) weights in original column order.
static int gq_static_grids(struct gq *g, char *err) {
    int64_t cols = g->cols, G = g->G;
    float *x = g->scratch;
    for (int64_t r = 0; r < g->rows; r++)
        for (int64_t g0 = 0; g0 < cols; g0 += G) {
            int64_t n = QP_MIN(G, cols - g0);
            for (int64_t k = 0; k < n; k++) x[k] = g->dead[g0 + k] ? 0.0f : g->w[r * cols + g0 + k];
            if (!g->gd) qz_grid_fit(g->b, x, n, 1.0f, &g->grids[r * g->n_groups + g0 / G]);
            else if (gg_block_grid(g->gd, x, g->ga + r * cols + g0, g->gb + r * cols + g0))
                return qp_fail(err, QP_EINVAL, "gptq: cannot quantize a block of row %lld", (long long)r);
        }
    return 0;
}

// Damping, raised (×10) until H + λI factors.
static int gq_factor(struct gq *g, char *err) {
    g->damp = g->b->damp;
    while (inverse_factor(g->h, g->perm, g->dead, g->cols, g->damp * g->mean_diag, g->U, g->work)) {
        if (++g->raises > QZ_GPTQ_MAX_RAISES)
            return qp_fail(err, QP_ERANGE, "gptq: the Hessian is not positive definite even with damp=%g", g->damp);
        g->damp *= 10;
    }
    return 0;
}

// Row r over the columns i1..i2 of one block: each weight quantized in order, its error spread
// over the block's later columns (the rest waits for the lazy batch update). x: G floats of this
// thread. 1 when llama.cpp's quantizer refused a block.
static int gq_row(struct gq *g, int64_t r, int64_t i1, int64_t i2, float *x) {
    int64_t cols = g->cols, G = g->G;
    double *wr = g->W + r * cols, *er = g->E + r * g->blk, obs = 0;
    struct qz_grid grid = {0};
    int bad = 0;
    for (int64_t i = i1; i < i2; i++) {
        if (!g->stat && (i % G) == 0) { // a dynamic group starts: fit it to the current values
            int64_t n = QP_MIN(G, cols - i);
            for (int64_t k = 0; k < n; k++) x[k] = (float)wr[i + k];
            if (g->gd) bad |= gg_block_grid(g->gd, x, g->ga + r * cols + i, g->gb + r * cols + i) != 0;
            else qz_grid_fit(g->b, x, n, 1.0f, &grid);
        }
        double wv = wr[i];
        float qv;
        if (g->gd) {
            size_t at = (size_t)(r * cols) + (size_t)(g->stat ? g->perm[i] : i);
            qv = gg_value(g->gd, g->ga[at], g->gb[at], wv);
        } else {
            const struct qz_grid *gg = g->stat ? &g->grids[r * g->n_groups + g->perm[i] / G] : &grid;
            qv = qz_grid_value(gg, qz_grid_code(gg, (float)wv));
        }
        const double *ui = g->U + i * cols;
        double e = (wv - qv) / ui[i];
        obs += e * e / 2;
        g->q[r * cols + g->perm[i]] = qv;
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
                        g->E, (int)g->blk, g->U + i1 * cols + i2, (int)cols, 1.0, g->W + i2, (int)cols);
    }
    return 0;
}

// Loss: ½ Σ_r Δ_r H Δ_rᵀ with Δ = w − q (the caller's weights and H), in fp64; W is reused for Δ.
static int gq_loss(struct gq *g, double *loss, double *obs_loss, char *err) {
    int64_t rows = g->rows, cols = g->cols;
    size_t rc_ = (size_t)(rows * cols);
    *obs_loss = *loss = 0;
    for (int64_t r = 0; r < rows; r++) *obs_loss += g->obs_row[r];
    for (size_t k = 0; k < rc_; k++) g->W[k] = (double)g->w[k] - (double)g->q[k];
    double *M = qp_alloc_array(rc_, sizeof(double));
    if (!M) return qp_fail(err, QP_ENOMEM, "gptq: out of memory for the loss");
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)cols, (int)cols, 1.0, g->W, (int)cols,
                g->h, (int)cols, 0.0, M, (int)cols);
    for (size_t k = 0; k < rc_; k++) *loss += g->W[k] * M[k];
    qp_free(M);
    *loss /= 2;
    return 0;
}

int qz_gptq_quantize(const struct qz_base *b, const float *w, int64_t rows, int64_t cols,
                     const double *h, float *q, struct qz_gptq_info *info, char *err) {
    double t0 = qp_now(), loss = 0, obs_loss = 0;
    QP_ASSERT(b->method == QZ_GPTQ);
    struct gq g = {.b = b, .w = w, .h = h, .q = q, .rows = rows, .cols = cols};
    int rc = gq_check(&g, err);
    if (rc) return rc;
    rc = gq_alloc(&g, err);
    if (!rc) gq_order(&g);
    if (!rc && g.stat) rc = gq_static_grids(&g, err);
    if (!rc) rc = gq_factor(&g, err);
    if (!rc) rc = gq_sweep(&g, err);
    if (!rc) rc = gq_loss(&g, &loss, &obs_loss, err);
    if (!rc && info)
        *info = (struct qz_gptq_info){.loss = loss, .obs_loss = obs_loss, .damp = g.damp, .n_raises = g.raises,
                                      .n_dead = g.n_dead, .type = g.gd ? g.gd->type : -1, .seconds = qp_now() - t0};
    gq_free(&g);
    return rc;
}
