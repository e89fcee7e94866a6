// met_grid.c — grid collapse statistics and vector-space collapse (met_grid.h).
//
// Depends on kernels/ (qp.h, kn_ops.h) and libc only.
#include "met_grid.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kn_ops.h"
#include "qp.h"

// ---------------------------------------------------------------------------------------------
// Per-tensor code statistics.

int met_grid_init(struct met_grid *g, int n_codes) {
    memset(g, 0, sizeof *g);
    if (n_codes < 1 || n_codes > MET_GRID_MAX_CODES) return QP_EINVAL;
    g->n_codes = n_codes;
    return 0;
}

void met_grid_deinit(struct met_grid *g) {
    qp_free(g->slots);
    g->slots = NULL;
    g->slots_cap = 0;
}

// Distinct values of x[0..n) with an open-addressing set in slots[0..cap) (cap a power of two
// >= 2n): a slot holds 2^32 | the float's bits, 0 when empty; -0 is stored as +0, so that the
// two zeros count as one value as float equality has it. O(n), no sort.
static int64_t count_distinct(const float *x, int64_t n, uint64_t *slots, int64_t cap) {
    memset(slots, 0, (size_t)cap * sizeof *slots);
    int shift = 64 - __builtin_ctzll((unsigned long long)cap);
    uint64_t mask = (uint64_t)cap - 1;
    int64_t d = 0;
    for (int64_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], sizeof u);
        if ((u & 0x7fffffffu) == 0) u = 0;
        uint64_t key = (uint64_t)u | 1ull << 32;
        uint64_t h = ((uint64_t)u * 0x9e3779b97f4a7c15ull) >> shift; // cap >= 64: shift <= 58
        while (slots[h] && slots[h] != key) h = (h + 1) & mask;
        if (!slots[h]) slots[h] = key, d++;
    }
    return d;
}

int met_grid_add(struct met_grid *g, const float *x, const uint8_t *codes, const float *dq,
                 int64_t n, float lo, float hi, char *err) {
    QP_ASSERT(g->n_codes >= 1 && n >= 1);
    for (int64_t i = 0; i < n; i++)
        if (codes[i] >= g->n_codes)
            return qp_fail(err, QP_ERANGE, "code %d of value %lld is not below n_codes %d",
                           codes[i], (long long)i, g->n_codes);
    int64_t cap = 64;
    while (cap < 2 * n) cap *= 2;
    if (cap > g->slots_cap) {
        uint64_t *s = qp_alloc_array((size_t)cap, sizeof *s);
        if (!s) return qp_fail(err, QP_ENOMEM, "cannot allocate a set of %lld values", (long long)n);
        qp_free(g->slots);
        g->slots = s, g->slots_cap = cap;
    }
    int64_t din = count_distinct(x, n, g->slots, cap);

    uint64_t used[MET_GRID_MAX_CODES / 64] = {0};
    for (int64_t i = 0; i < n; i++) {
        int c = codes[i];
        used[c >> 6] |= 1ull << (c & 63);
        g->code_hist[c]++;
        g->zeroed += x[i] != 0.0f && dq[i] == 0.0f;
        g->clipped += x[i] < lo || x[i] > hi;
    }
    int dc = 0;
    for (size_t i = 0; i < QP_ARRAY_LEN(used); i++) dc += __builtin_popcountll(used[i]);

    g->distinct_inputs += din;
    g->distinct_codes += dc;
    g->collisions += din - dc;
    g->min_codes = g->groups == 0 ? dc : QP_MIN(g->min_codes, dc);
    g->groups++;
    g->weights += n;
    return 0;
}

double met_grid_mean_codes(const struct met_grid *g) {
    return g->groups ? (double)g->distinct_codes / (double)g->groups : 0.0;
}

double met_grid_entropy_bits(const struct met_grid *g) {
    if (g->weights == 0) return 0.0;
    double h = 0, n = (double)g->weights;
    for (int c = 0; c < g->n_codes; c++) {
        if (!g->code_hist[c]) continue;
        double p = (double)g->code_hist[c] / n;
        h -= p * log2(p);
    }
    return h;
}

double met_grid_max_bits(const struct met_grid *g) { return log2((double)g->n_codes); }

// ---------------------------------------------------------------------------------------------
// Exact duplicates: hash every row, sort by (hash, row), compare rows of equal hash bytewise.

struct hrow {
    uint64_t h;
    int64_t r;
};

static int cmp_hrow(const void *pa, const void *pb) {
    const struct hrow *a = pa, *b = pb;
    if (a->h != b->h) return a->h < b->h ? -1 : 1;
    return (a->r > b->r) - (a->r < b->r);
}

// 64-bit FNV-1a over the row's 32-bit words, finished with a splitmix64 mix. Only a bucket key:
// equal hashes are confirmed with memcmp.
static uint64_t row_hash(const float *x, int64_t cols) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (int64_t k = 0; k < cols; k++) {
        uint32_t w;
        memcpy(&w, x + k, sizeof w);
        h = (h ^ w) * 0x100000001b3ull;
    }
    h ^= h >> 30, h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 27, h *= 0x94d049bb133111ebull;
    return h ^ (h >> 31);
}

// rep[i]: the lowest-indexed row bitwise equal to row i (i itself when none is lower);
// exact[i]: 1 when the class of row i has two rows or more.
static int exact_classes(const float *x, int64_t rows, int64_t cols, int64_t *rep, uint8_t *exact) {
    struct hrow *hr = qp_alloc_array((size_t)rows, sizeof *hr);
    if (!hr) return QP_ENOMEM;
    for (int64_t i = 0; i < rows; i++) hr[i].h = row_hash(x + i * cols, cols), hr[i].r = i;
    qsort(hr, (size_t)rows, sizeof *hr, cmp_hrow);
    size_t bytes = (size_t)cols * sizeof(float);
    for (int64_t i = 0; i < rows; i++) rep[i] = i, exact[i] = 0;
    for (int64_t s = 0; s < rows;) {
        int64_t e = s + 1;
        while (e < rows && hr[e].h == hr[s].h) e++;
        // Within a run rows come in index order, so the first match found is the lowest index.
        for (int64_t a = s + 1; a < e; a++) {
            int64_t ra = hr[a].r;
            for (int64_t b = s; b < a; b++) {
                int64_t rb = hr[b].r;
                if (rep[rb] != rb) continue; // compare with class heads only
                if (memcmp(x + ra * cols, x + rb * cols, bytes) == 0) {
                    rep[ra] = rb;
                    exact[ra] = exact[rb] = 1;
                    break;
                }
            }
        }
        s = e;
    }
    qp_free(hr);
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Near duplicates.

static double dot_f64(const float *a, const float *b, int64_t n) {
    double s = 0;
    for (int64_t k = 0; k < n; k++) s += (double)a[k] * (double)b[k];
    return s;
}

struct near_ctx {
    const float *x;
    int64_t cols;
    const double *norm; // (rows) fp64 Euclidean norms
    uint8_t *near;      // (rows) flags being filled
    int64_t pairs;      // cosines computed
};

// Checks the pair (i, j) unless both already have a near-duplicate.
static void near_check(struct near_ctx *c, int64_t i, int64_t j) {
    if (c->near[i] && c->near[j]) return;
    c->pairs++;
    double cs = dot_f64(c->x + i * c->cols, c->x + j * c->cols, c->cols) / (c->norm[i] * c->norm[j]);
    if (cs >= MET_NEAR_DUP_COS) c->near[i] = c->near[j] = 1;
}

// splitmix64: the fixed-seed generator of the hyperplanes.
static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double unit_open(uint64_t *s) { // uniform in (0, 1)
    return ((double)(splitmix64(s) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

#define N_PLANES (MET_LSH_TABLES * MET_LSH_BITS)
_Static_assert(N_PLANES % KN_NR == 0, "hyperplanes fill whole GEMM panels (and 8-lane sums)");
_Static_assert(MET_LSH_BITS <= 16, "keys are 16-bit");

struct keyrow {
    uint16_t key;
    int64_t r; // index into live[] (ascending with the row index)
};

static int cmp_keyrow(const void *pa, const void *pb) {
    const struct keyrow *a = pa, *b = pb;
    if (a->key != b->key) return a->key < b->key ? -1 : 1;
    return (a->r > b->r) - (a->r < b->r);
}

#define PROJ_CHUNK 256 // rows per GEMM call

// Prefilter of a candidate pair on the projections of the unit rows, before the exact cosine.
// For unit rows u, v with cos >= c, w = u - v has |w|^2 = 2 - 2 cos <= 2(1 - c); the projection
// Pw (P: N_PLANES Gaussian rows) has |Pw|^2 = |w|^2 · X with X ~ chi-square(N_PLANES). The pair
// is rejected when |Pw|^2 > 4 · N_PLANES · 2(1 - c), which a near pair does only when X > 4·96;
// by the Chernoff bound P(X >= 4k) <= (4 e^-3)^(k/2) = 1e-34 for k = 96: never in practice. It
// replaces most cols-long fp64 dot products by 96-long fp32 ones.
#define PREFILTER_FACTOR 4.0

// Sign-random-projection candidates over the rows listed in live[0..n_live).
static int near_lsh(const struct kn_ops *ops, struct near_ctx *c, const int64_t *live,
                    int64_t n_live) {
    int64_t cols = c->cols;
    // Hyperplanes packed as kn_ops panels: wp[(p*cols + k)*KN_NR + j] = plane[p*KN_NR + j][k].
    float *wp = qp_alloc_array((size_t)N_PLANES * (size_t)cols, sizeof(float));
    float *y = qp_alloc_array((size_t)n_live * N_PLANES + 1, sizeof(float)); // (n_live, N_PLANES)
    float *xs = qp_alloc_array((size_t)PROJ_CHUNK * (size_t)cols, sizeof(float));
    uint16_t *keys = qp_alloc_array((size_t)n_live * MET_LSH_TABLES + 1, sizeof(uint16_t));
    struct keyrow *kr = qp_alloc_array((size_t)n_live + 1, sizeof *kr);
    int rc = QP_ENOMEM;
    if (!wp || !y || !xs || !keys || !kr) goto done;

    uint64_t seed = MET_LSH_SEED;
    for (int p = 0; p < N_PLANES; p++)
        for (int64_t k = 0; k < cols; k += 2) { // Box-Muller: two normals per draw
            double u1 = unit_open(&seed), u2 = unit_open(&seed);
            double rad = sqrt(-2.0 * log(u1)), ang = 2.0 * M_PI * u2;
            size_t base = (size_t)(p / KN_NR) * (size_t)cols * KN_NR + (size_t)(p % KN_NR);
            wp[base + (size_t)k * KN_NR] = (float)(rad * cos(ang));
            if (k + 1 < cols) wp[base + (size_t)(k + 1) * KN_NR] = (float)(rad * sin(ang));
        }

    for (int64_t s = 0; s < n_live; s += PROJ_CHUNK) {
        int nr = (int)QP_MIN((int64_t)PROJ_CHUNK, n_live - s);
        for (int r = 0; r < nr; r++) // gather the live rows of this chunk
            memcpy(xs + (size_t)r * cols, c->x + live[s + r] * cols, (size_t)cols * sizeof(float));
        float *ys = y + (size_t)s * N_PLANES;
        ops->gemm_f32(xs, (size_t)cols, nr, wp, (int)cols, 0, N_PLANES, ys, N_PLANES);
        for (int r = 0; r < nr; r++) {
            float *yr = ys + (size_t)r * N_PLANES;
            float inv = (float)(1.0 / c->norm[live[s + r]]); // projections of the unit row
            for (int p = 0; p < N_PLANES; p++) yr[p] *= inv;
            for (int t = 0; t < MET_LSH_TABLES; t++) {
                unsigned key = 0;
                for (int b = 0; b < MET_LSH_BITS; b++)
                    key |= (unsigned)(yr[t * MET_LSH_BITS + b] > 0.0f) << b;
                keys[(size_t)(s + r) * MET_LSH_TABLES + t] = (uint16_t)key;
            }
        }
    }

    const float lim = (float)(PREFILTER_FACTOR * N_PLANES * 2.0 * (1.0 - MET_NEAR_DUP_COS));
    for (int t = 0; t < MET_LSH_TABLES; t++) {
        for (int64_t i = 0; i < n_live; i++)
            kr[i].key = keys[(size_t)i * MET_LSH_TABLES + t], kr[i].r = i;
        qsort(kr, (size_t)n_live, sizeof *kr, cmp_keyrow);
        for (int64_t s = 0; s < n_live;) {
            int64_t e = s + 1;
            while (e < n_live && kr[e].key == kr[s].key) e++;
            for (int64_t a = s; a < e; a++) {
                int64_t ia = kr[a].r;
                const float *ya = y + (size_t)ia * N_PLANES;
                for (int64_t b = a + 1; b < e; b++) {
                    int64_t ib = kr[b].r;
                    if (c->near[live[ia]] && c->near[live[ib]]) continue;
                    const float *yb = y + (size_t)ib * N_PLANES;
                    float acc[8] = {0}; // 8 independent lanes: vectorizable without reordering
                    for (int p = 0; p < N_PLANES; p += 8)
                        for (int l = 0; l < 8; l++) {
                            float d = ya[p + l] - yb[p + l];
                            acc[l] += d * d;
                        }
                    float d2 = ((acc[0] + acc[1]) + (acc[2] + acc[3])) +
                               ((acc[4] + acc[5]) + (acc[6] + acc[7]));
                    if (d2 <= lim) near_check(c, live[ia], live[ib]);
                }
            }
            s = e;
        }
    }
    rc = 0;
done:
    qp_free(wp), qp_free(y), qp_free(xs), qp_free(keys), qp_free(kr);
    return rc;
}

int met_dup_flags(const struct kn_ops *ops, const float *x, int64_t rows, int64_t cols,
                  enum met_near_mode mode, uint8_t *exact, uint8_t *near, int64_t *pairs,
                  char *err) {
    QP_ASSERT(rows >= 0 && cols >= 0);
    if (pairs) *pairs = 0;
    if (cols > INT_MAX || rows > INT64_MAX / (cols ? cols : 1))
        return qp_fail(err, QP_ERANGE, "matrix of %lld x %lld is too large", (long long)rows,
                       (long long)cols);
    if (!ops) ops = &kn_ops_ref;
    int64_t *rep = qp_alloc_array((size_t)rows + 1, sizeof(int64_t));
    int64_t *live = qp_alloc_array((size_t)rows + 1, sizeof(int64_t));
    double *norm = qp_alloc_array((size_t)rows + 1, sizeof(double));
    uint8_t *ex = qp_alloc_array((size_t)rows + 1, 1), *nr = qp_alloc_array((size_t)rows + 1, 1);
    int rc = QP_ENOMEM;
    if (!rep || !live || !norm || !ex || !nr) goto done;
    if ((rc = exact_classes(x, rows, cols, rep, ex))) goto done;

    // Rows taking part in the pair search: class heads with a direction.
    int64_t n_live = 0;
    for (int64_t i = 0; i < rows; i++) {
        nr[i] = ex[i];
        norm[i] = sqrt(dot_f64(x + i * cols, x + i * cols, cols));
        if (rep[i] == i && norm[i] > 0) live[n_live++] = i;
    }
    struct near_ctx c = {.x = x, .cols = cols, .norm = norm, .near = nr};
    int exhaustive = mode == MET_NEAR_EXHAUSTIVE ||
                     (mode == MET_NEAR_AUTO && rows <= MET_NEAR_EXHAUSTIVE_ROWS);
    if (exhaustive) {
        for (int64_t a = 0; a < n_live; a++)
            for (int64_t b = a + 1; b < n_live; b++) near_check(&c, live[a], live[b]);
    } else if ((rc = near_lsh(ops, &c, live, n_live))) {
        goto done;
    }
    if (exact) memcpy(exact, ex, (size_t)rows);
    if (near) memcpy(near, nr, (size_t)rows);
    if (pairs) *pairs = c.pairs;
    rc = 0;
done:
    qp_free(rep), qp_free(live), qp_free(norm), qp_free(ex), qp_free(nr);
    if (rc == QP_ENOMEM)
        qp_fail(err, rc, "cannot allocate the duplicate search of %lld rows", (long long)rows);
    return rc;
}

int met_vec_collapse(const struct kn_ops *ops, const float *before, const float *after,
                     int64_t rows, int64_t cols, enum met_near_mode mode,
                     struct met_vec_collapse *out, char *err) {
    memset(out, 0, sizeof *out);
    out->rows = rows, out->cols = cols;
    out->exhaustive = mode == MET_NEAR_EXHAUSTIVE ||
                      (mode == MET_NEAR_AUTO && rows <= MET_NEAR_EXHAUSTIVE_ROWS);
    uint8_t *f = qp_alloc_array((size_t)rows + 1, 4); // exact, near before; exact, near after
    if (!f) return qp_fail(err, QP_ENOMEM, "cannot allocate flags for %lld rows", (long long)rows);
    uint8_t *eb = f, *nb = f + rows, *ea = f + 2 * rows, *na = f + 3 * rows;
    int64_t p0 = 0, p1 = 0;
    int rc = met_dup_flags(ops, before, rows, cols, mode, eb, nb, &p0, err);
    if (!rc) rc = met_dup_flags(ops, after, rows, cols, mode, ea, na, &p1, err);
    if (!rc) {
        for (int64_t i = 0; i < rows; i++) {
            out->exact_before += eb[i], out->exact_after += ea[i];
            out->exact_new += ea[i] && !eb[i];
            out->near_before += nb[i], out->near_after += na[i];
            out->near_new += na[i] && !nb[i];
        }
        out->pairs_checked = p0 + p1;
    }
    qp_free(f);
    return rc;
}
