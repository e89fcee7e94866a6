// test_met_grid.c — grid collapse and vector-space collapse (metrics/met_grid.h):
//  - hand-made groups with known answers: collisions, zeroed and clipped weights, distinct codes
//    per group, the code histogram and its entropy worked out by hand;
//  - entropy bounds (uniform codes give log2(n_codes)); a code out of range is rejected;
//  - hand-made rows that become identical / nearly identical after "quantization";
//  - the probabilistic (LSH) near-duplicate search finds exactly what the exhaustive one finds on
//    a random matrix with planted near pairs, exact pairs and pairs just below the threshold.
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kn_ops.h"
#include "met_grid.h"
#include "qp.h"
#include "qp_test.h"

static struct qpt_rng rng = {0xd1b54a32d192ed03ull};
static double gauss(void) { return qpt_gauss(&rng); }

// ---------------------------------------------------------------------------------------------
// Grid statistics

// A 2-bit grid with levels {-0.5, 0, 0.5, 1.0} for codes 0..3: lo = -0.5, hi = 1.0.
static const float LEVEL[4] = {-0.5f, 0.0f, 0.5f, 1.0f};

QP_TEST(grid_should_count_collisions_zeroed_clipped_and_entropy_of_hand_made_groups) {
    struct met_grid g;
    QP_CHECK_INT_EQ(met_grid_init(&g, 4), 0);
    // Group 1: 8 values. Three distinct inputs (-0.1, 0.02, 0.05) share code 1 and become 0;
    // 0.3 (twice) and 0.6 share code 2; -0.9 and 1.2 lie outside [-0.5, 1.0].
    const float x1[8] = {-0.9f, -0.1f, 0.02f, 0.05f, 0.3f, 0.3f, 0.6f, 1.2f};
    const uint8_t c1[8] = {0, 1, 1, 1, 2, 2, 2, 3};
    float d1[8];
    for (int i = 0; i < 8; i++) d1[i] = LEVEL[c1[i]];
    QP_CHECK_INT_EQ(met_grid_add(&g, x1, c1, d1, 8, -0.5f, 1.0f, NULL), 0);
    // distinct inputs 7 (0.3 twice), distinct codes 4: collisions 7 - 4 = 3
    QP_CHECK_INT_EQ(g.distinct_inputs, 7);
    QP_CHECK_INT_EQ(g.distinct_codes, 4);
    QP_CHECK_INT_EQ(g.collisions, 3);
    QP_CHECK_INT_EQ(g.zeroed, 3);
    QP_CHECK_INT_EQ(g.clipped, 2);
    // codes used 1, 3, 3, 1 of 8: H = 2·(1/8)·log2(8) + 2·(3/8)·log2(8/3) = 0.75 + 0.75·log2(8/3)
    QP_CHECK_NEAR(met_grid_entropy_bits(&g), 0.75 + 0.75 * log2(8.0 / 3.0), 1e-15);
    QP_CHECK_NEAR(met_grid_entropy_bits(&g), 1.8112781244591327, 1e-15);

    // Group 2: four zeros of both signs: one distinct input, one code, nothing zeroed (x == 0).
    const float x2[4] = {0.0f, -0.0f, 0.0f, 0.0f};
    const uint8_t c2[4] = {1, 1, 1, 1};
    const float d2[4] = {0, 0, 0, 0};
    QP_CHECK_INT_EQ(met_grid_add(&g, x2, c2, d2, 4, -0.5f, 1.0f, NULL), 0);
    QP_CHECK_INT_EQ(g.groups, 2);
    QP_CHECK_INT_EQ(g.weights, 12);
    QP_CHECK_INT_EQ(g.distinct_inputs, 8);
    QP_CHECK_INT_EQ(g.distinct_codes, 5);
    QP_CHECK_INT_EQ(g.collisions, 3);
    QP_CHECK_INT_EQ(g.min_codes, 1);
    QP_CHECK_NEAR(met_grid_mean_codes(&g), 2.5, 0);
    QP_CHECK_INT_EQ(g.zeroed, 3);
    QP_CHECK_INT_EQ(g.code_hist[0], 1);
    QP_CHECK_INT_EQ(g.code_hist[1], 7);
    QP_CHECK_INT_EQ(g.code_hist[2], 3);
    QP_CHECK_INT_EQ(g.code_hist[3], 1);
    // p = 1/12, 7/12, 3/12, 1/12
    double h = 2.0 * (1.0 / 12) * log2(12.0) + (7.0 / 12) * log2(12.0 / 7) + (3.0 / 12) * log2(4.0);
    QP_CHECK_NEAR(met_grid_entropy_bits(&g), h, 1e-15);
    QP_CHECK_NEAR(met_grid_max_bits(&g), 2.0, 0);
    met_grid_deinit(&g);
}

QP_TEST(grid_should_count_distinct_inputs_in_large_groups) {
    // 1000 values drawn from 37 distinct ones (a larger hash set), mapped to 5 codes.
    enum { N = 1000 };
    float *x = malloc(N * sizeof(float)), *d = malloc(N * sizeof(float));
    uint8_t *c = malloc(N);
    for (int i = 0; i < N; i++) {
        int v = (i * 7919) % 37;
        x[i] = (float)v * 0.25f - 4.0f;
        c[i] = (uint8_t)(v % 5);
        d[i] = (float)c[i];
    }
    struct met_grid g;
    QP_CHECK_INT_EQ(met_grid_init(&g, 5), 0);
    QP_CHECK_INT_EQ(met_grid_add(&g, x, c, d, N, -10.0f, 10.0f, NULL), 0);
    QP_CHECK_INT_EQ(g.distinct_inputs, 37);
    QP_CHECK_INT_EQ(g.distinct_codes, 5);
    QP_CHECK_INT_EQ(g.collisions, 32);
    QP_CHECK_INT_EQ(g.clipped, 0);
    // 300 distinct values then the same 300 negated zeros and repeats: 301 distinct (the zeros
    // of both signs are one value); a direct O(n^2) count agrees.
    for (int i = 0; i < N; i++) x[i] = i < 300 ? (float)i * 1e-3f : i < 600 ? -0.0f : x[i % 300];
    int64_t direct = 0;
    for (int i = 0; i < N; i++) {
        int dup = 0;
        for (int j = 0; j < i && !dup; j++) dup = x[j] == x[i];
        direct += !dup;
    }
    QP_CHECK_INT_EQ(direct, 300);
    int64_t before = g.distinct_inputs;
    QP_CHECK_INT_EQ(met_grid_add(&g, x, c, d, N, -10.0f, 10.0f, NULL), 0);
    QP_CHECK_INT_EQ(g.distinct_inputs - before, direct);
    met_grid_deinit(&g);
    free(x), free(d), free(c);
}

QP_TEST(grid_entropy_should_reach_max_bits_only_for_uniform_code_use) {
    struct met_grid g;
    QP_CHECK_INT_EQ(met_grid_init(&g, 16), 0);
    float x[16], d[16];
    uint8_t c[16];
    for (int i = 0; i < 16; i++) x[i] = (float)i, d[i] = (float)i, c[i] = (uint8_t)i;
    QP_CHECK_INT_EQ(met_grid_add(&g, x, c, d, 16, 0.0f, 15.0f, NULL), 0);
    QP_CHECK_NEAR(met_grid_entropy_bits(&g), 4.0, 1e-15);
    QP_CHECK_NEAR(met_grid_max_bits(&g), 4.0, 0);
    QP_CHECK_INT_EQ(g.collisions, 0);
    c[0] = 1; // one code used twice, one not at all: fewer effective bits
    QP_CHECK_INT_EQ(met_grid_add(&g, x, c, d, 16, 0.0f, 15.0f, NULL), 0);
    QP_CHECK(met_grid_entropy_bits(&g) < 4.0);
    QP_CHECK_INT_EQ(g.collisions, 1);
    QP_CHECK_INT_EQ(g.min_codes, 15);
    met_grid_deinit(&g);
}

QP_TEST(grid_should_reject_codes_out_of_range_and_bad_n_codes) {
    struct met_grid g;
    QP_CHECK_INT_EQ(met_grid_init(&g, 0), QP_EINVAL);
    QP_CHECK_INT_EQ(met_grid_init(&g, 257), QP_EINVAL);
    QP_CHECK_INT_EQ(met_grid_init(&g, 4), 0);
    const float x[2] = {1, 2};
    const uint8_t c[2] = {0, 4};
    char err[QP_ERRLEN] = "";
    QP_CHECK_INT_EQ(met_grid_add(&g, x, c, x, 2, 0, 2, err), QP_ERANGE);
    QP_CHECK(strstr(err, "code 4") != NULL);
    QP_CHECK_INT_EQ(g.groups, 0); // nothing added
    QP_CHECK_INT_EQ(g.weights, 0);
    met_grid_deinit(&g);
    met_grid_deinit(&g); // twice is safe
}

// ---------------------------------------------------------------------------------------------
// Vector collapse on hand-made rows

#define HC 64 // columns of the hand-made matrices

// Eight rows: 0/1 near before (cos ≈ 1 - 1e-7), identical after; 2/3 parallel before and after;
// 4/5 unrelated before, near after; 6/7 small orthogonal rows that become all-zero after.
static void hand_rows(float *before, float *after) {
    for (int r = 0; r < 8; r++)
        for (int k = 0; k < HC; k++) before[r * HC + k] = (float)gauss();
    memcpy(before + 1 * HC, before, HC * sizeof(float));
    before[1 * HC + 7] += 0.003f;
    for (int k = 0; k < HC; k++) before[3 * HC + k] = 2.0f * before[2 * HC + k];
    for (int k = 0; k < HC; k++) {
        before[6 * HC + k] = k == 3 ? 1e-6f : 0.0f;
        before[7 * HC + k] = k == 9 ? 1e-6f : 0.0f;
    }
    memcpy(after, before, 8 * HC * sizeof(float));
    memcpy(after + 1 * HC, after, HC * sizeof(float)); // 1 := 0 bitwise
    for (int k = 0; k < HC; k++) after[5 * HC + k] = after[4 * HC + k] * (k == 0 ? 1.001f : 1.0f);
    memset(after + 6 * HC, 0, 2 * HC * sizeof(float));
}

QP_TEST(vec_collapse_should_count_rows_made_identical_and_near_identical) {
    float before[8 * HC], after[8 * HC];
    hand_rows(before, after);
    // Row 4 vs row 5 after: one coordinate scaled by 1.001, cos > 1 - 1e-6: near, not exact.
    enum met_near_mode modes[] = {MET_NEAR_EXHAUSTIVE, MET_NEAR_LSH, MET_NEAR_AUTO};
    for (size_t m = 0; m < QP_ARRAY_LEN(modes); m++) {
        struct met_vec_collapse vc;
        char err[QP_ERRLEN];
        QP_CHECK_INT_EQ(met_vec_collapse(NULL, before, after, 8, HC, modes[m], &vc, err), 0);
        QP_CHECK_INT_EQ(vc.exact_before, 0);
        QP_CHECK_INT_EQ(vc.exact_after, 4); // 0, 1, 6, 7
        QP_CHECK_INT_EQ(vc.exact_new, 4);
        QP_CHECK_INT_EQ(vc.near_before, 4); // 0, 1, 2, 3
        QP_CHECK_INT_EQ(vc.near_after, 8);
        QP_CHECK_INT_EQ(vc.near_new, 4);    // 4, 5, 6, 7
        QP_CHECK_INT_EQ(vc.exhaustive, modes[m] != MET_NEAR_LSH);
    }
    uint8_t ex[8], nr[8];
    QP_CHECK_INT_EQ(met_dup_flags(NULL, after, 8, HC, MET_NEAR_EXHAUSTIVE, ex, nr, NULL, NULL), 0);
    const uint8_t want_ex[8] = {1, 1, 0, 0, 0, 0, 1, 1}, want_nr[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    QP_CHECK(memcmp(ex, want_ex, 8) == 0);
    QP_CHECK(memcmp(nr, want_nr, 8) == 0);
    QP_CHECK_INT_EQ(met_dup_flags(NULL, before, 8, HC, MET_NEAR_EXHAUSTIVE, ex, nr, NULL, NULL), 0);
    const uint8_t want_nb[8] = {1, 1, 1, 1, 0, 0, 0, 0};
    QP_CHECK(memcmp(nr, want_nb, 8) == 0);
}

QP_TEST(near_duplicate_threshold_should_be_cosine_0_9999) {
    // Two rows at a chosen angle: cos = cos(θ) for rows (1, 0, ...) and (cos θ, sin θ, ...).
    float x[2 * HC] = {0};
    double below = acos(MET_NEAR_DUP_COS) * 1.01, above = acos(MET_NEAR_DUP_COS) * 0.99;
    uint8_t nr[2];
    x[0] = 1.0f;
    x[HC] = (float)cos(below), x[HC + 1] = (float)sin(below);
    QP_CHECK_INT_EQ(met_dup_flags(NULL, x, 2, HC, MET_NEAR_EXHAUSTIVE, NULL, nr, NULL, NULL), 0);
    QP_CHECK(nr[0] == 0 && nr[1] == 0);
    x[HC] = (float)cos(above), x[HC + 1] = (float)sin(above);
    QP_CHECK_INT_EQ(met_dup_flags(NULL, x, 2, HC, MET_NEAR_EXHAUSTIVE, NULL, nr, NULL, NULL), 0);
    QP_CHECK(nr[0] == 1 && nr[1] == 1);
}

// ---------------------------------------------------------------------------------------------
// LSH against the exhaustive search

QP_TEST(lsh_near_duplicates_should_equal_exhaustive_on_planted_random_matrix) {
    enum { ROWS = 3000, COLS = 64, NEAR = 40, EXACT = 10, FAR = 30 };
    float *x = malloc((size_t)ROWS * COLS * sizeof(float));
    for (int64_t i = 0; i < (int64_t)ROWS * COLS; i++) x[i] = (float)gauss();
    // Rows 0..NEAR-1 get a near copy at rows 1000+i (noise 0.003: cos ≈ 1 - 4.5e-6);
    // rows NEAR..NEAR+EXACT-1 an exact copy at 1000+i; the next FAR rows a copy with noise 0.03
    // (cos ≈ 1 - 4.5e-4: below the threshold).
    for (int i = 0; i < NEAR + EXACT + FAR; i++) {
        float noise = i < NEAR ? 0.003f : i < NEAR + EXACT ? 0.0f : 0.03f;
        for (int k = 0; k < COLS; k++)
            x[(1000 + i) * COLS + k] = x[i * COLS + k] + (noise ? noise * (float)gauss() : 0.0f);
    }
    uint8_t *e0 = malloc(ROWS), *n0 = malloc(ROWS), *e1 = malloc(ROWS), *n1 = malloc(ROWS);
    int64_t p0, p1;
    const struct kn_ops *ops = kn_ops_best();
    QP_CHECK(ops != NULL);
    QP_CHECK_INT_EQ(met_dup_flags(ops, x, ROWS, COLS, MET_NEAR_EXHAUSTIVE, e0, n0, &p0, NULL), 0);
    QP_CHECK_INT_EQ(met_dup_flags(ops, x, ROWS, COLS, MET_NEAR_LSH, e1, n1, &p1, NULL), 0);
    int64_t ne = 0, nn = 0;
    for (int i = 0; i < ROWS; i++) ne += e0[i], nn += n0[i];
    QP_CHECK_INT_EQ(ne, 2 * EXACT);
    QP_CHECK_INT_EQ(nn, 2 * (NEAR + EXACT));
    QP_CHECK(memcmp(e0, e1, ROWS) == 0);
    QP_CHECK(memcmp(n0, n1, ROWS) == 0);
    printf("  exhaustive: %lld cosines; LSH: %lld cosines\n", (long long)p0, (long long)p1);
    QP_CHECK(p1 < p0 / 10); // the candidates are a small fraction of all pairs
    // The reference kernel table gives the same keys, hence the same cosines.
    int64_t p2;
    QP_CHECK_INT_EQ(met_dup_flags(&kn_ops_ref, x, ROWS, COLS, MET_NEAR_LSH, NULL, n1, &p2, NULL), 0);
    QP_CHECK_INT_EQ(p2, p1);
    QP_CHECK(memcmp(n0, n1, ROWS) == 0);
    free(x), free(e0), free(n0), free(e1), free(n1);
}
