// test_met_layer.c — hidden-state error accumulators (metrics/met_layer.h): relative Frobenius
// error, flattened cosine and mean per-row cosine against a long-double two-pass computation
// and hand-checked cases; chunking and merging; degenerate (zero, empty) tensors with defined
// values and never NaN; bit-identical results for a fixed partition over threads.
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "met_layer.h"
#include "qp.h"
#include "qp_test.h"

// The module sums in double, the test in long double (80-bit): for a few thousand O(1) terms
// they agree to ~1e-14.
#define TOL 1e-12

static struct qpt_rng rng = {0xd1b54a32d192ed03ull};
static double gauss(void) { return qpt_gauss(&rng); }

// ref ~ N(0, 1) with one large channel, var = ref + noise*N(0, 1); both (rows, width).
static void make_pair(int rows, int width, double noise, float **ref, float **var) {
    *ref = malloc((size_t)rows * width * sizeof(float) + 1);
    *var = malloc((size_t)rows * width * sizeof(float) + 1);
    for (int i = 0; i < rows * width; i++) {
        double x = gauss() * (i % width == 3 ? 20.0 : 1.0);
        (*ref)[i] = (float)x;
        (*var)[i] = (float)(x + noise * gauss());
    }
}

struct direct {
    double rel_err, cos, row_cos_mean;
};

// Independent computation: long double, norms first, then the ratios.
static struct direct direct_err(const float *r, const float *v, int rows, int width) {
    long double nr = 0, nv = 0, nd = 0, dot = 0, rowsum = 0;
    for (int i = 0; i < rows; i++) {
        long double a = 0, b = 0, c = 0;
        for (int j = 0; j < width; j++) {
            long double x = r[i * width + j], y = v[i * width + j];
            a += x * x, b += y * y, c += x * y;
            nd += (y - x) * (y - x);
        }
        nr += a, nv += b, dot += c;
        rowsum += c / (sqrtl(a) * sqrtl(b));
    }
    struct direct d = {(double)sqrtl(nd / nr), (double)(dot / (sqrtl(nr) * sqrtl(nv))),
                       (double)(rowsum / rows)};
    return d;
}

static struct met_err_result run(const float *r, const float *v, int rows, int width) {
    struct met_err e;
    met_err_init(&e);
    met_err_add(&e, r, v, rows, width);
    struct met_err_result o;
    met_err_finish(&e, &o);
    return o;
}

static void check_no_nan(const struct met_err_result *o) {
    QP_CHECK(!isnan(o->rel_err) && !isnan(o->cos) && !isnan(o->row_cos_mean));
}

// ---------------------------------------------------------------------------------------------

QP_TEST(errors_should_match_direct_computation_on_random_tensors) {
    const int rows = 37, width = 129;
    float *r, *v;
    make_pair(rows, width, 0.1, &r, &v);
    struct met_err_result o = run(r, v, rows, width);
    struct direct d = direct_err(r, v, rows, width);
    QP_CHECK_NEAR(o.rel_err, d.rel_err, TOL);
    QP_CHECK_NEAR(o.cos, d.cos, TOL);
    QP_CHECK_NEAR(o.row_cos_mean, d.row_cos_mean, TOL);
    QP_CHECK_INT_EQ(o.rows, rows);
    QP_CHECK_INT_EQ(o.n, rows * width);
    // sanity of the scale: noise 0.1 against a norm dominated by the x20 channel
    QP_CHECK(o.rel_err > 0.005 && o.rel_err < 0.1 && o.cos > 0.99 && o.row_cos_mean < o.cos);
    free(r);
    free(v);
}

QP_TEST(errors_should_match_hand_values) {
    // r = (3, 4), v = (4, 3): |v - r|^2 = 2, |r|^2 = 25, <r, v> = 24.
    const float r[2] = {3, 4}, v[2] = {4, 3};
    struct met_err_result o = run(r, v, 1, 2);
    QP_CHECK_NEAR(o.rel_err, sqrt(2.0 / 25.0), 1e-15);
    QP_CHECK_NEAR(o.cos, 24.0 / 25.0, 1e-15);
    QP_CHECK_NEAR(o.row_cos_mean, 24.0 / 25.0, 1e-15);
    // Two rows (1, 0) and (0, 1) against (1, 0) and (1, 1): per-row cosines 1 and 1/sqrt(2);
    // flattened <r, v> = 2, |r|^2 = 2, |v|^2 = 3, |v - r|^2 = 1.
    const float r2[4] = {1, 0, 0, 1}, v2[4] = {1, 0, 1, 1};
    o = run(r2, v2, 2, 2);
    QP_CHECK_NEAR(o.row_cos_mean, (1 + 1 / sqrt(2.0)) / 2, 1e-15);
    QP_CHECK_NEAR(o.cos, 2 / sqrt(6.0), 1e-15);
    QP_CHECK_NEAR(o.rel_err, sqrt(0.5), 1e-15);
}

QP_TEST(scaled_and_negated_copies_should_give_exact_relations) {
    const int rows = 9, width = 33;
    float *r, *v;
    make_pair(rows, width, 0.0, &r, &v);
    for (int i = 0; i < rows * width; i++) v[i] = 2 * r[i]; // exact in float
    struct met_err_result o = run(r, v, rows, width);
    QP_CHECK_NEAR(o.rel_err, 1.0, 1e-15);
    QP_CHECK(o.cos <= 1.0);
    QP_CHECK_NEAR(o.cos, 1.0, 1e-15);
    QP_CHECK_NEAR(o.row_cos_mean, 1.0, 1e-15);
    for (int i = 0; i < rows * width; i++) v[i] = -r[i];
    o = run(r, v, rows, width);
    QP_CHECK_NEAR(o.rel_err, 2.0, 1e-15);
    QP_CHECK(o.cos >= -1.0);
    QP_CHECK_NEAR(o.cos, -1.0, 1e-15);
    QP_CHECK_NEAR(o.row_cos_mean, -1.0, 1e-15);
    o = run(r, r, rows, width);
    QP_CHECK(o.rel_err == 0 && o.cos == 1.0 && o.row_cos_mean == 1.0);
    free(r);
    free(v);
}

QP_TEST(chunking_should_not_change_the_bits) {
    const int rows = 50, width = 77;
    float *r, *v;
    make_pair(rows, width, 0.3, &r, &v);
    struct met_err a, b;
    met_err_init(&a);
    met_err_add(&a, r, v, rows, width);
    met_err_init(&b);
    int done = 0, sizes[] = {1, 5, 0, 13, 2};
    for (size_t k = 0; k < QP_ARRAY_LEN(sizes); k++) {
        met_err_add(&b, r + (size_t)done * width, v + (size_t)done * width, sizes[k], width);
        done += sizes[k];
    }
    met_err_add(&b, r + (size_t)done * width, v + (size_t)done * width, rows - done, width);
    QP_CHECK(memcmp(&a, &b, sizeof a) == 0);
    struct met_err z = {0}; // zero-initialized equals met_err_init
    met_err_add(&z, r, v, rows, width);
    QP_CHECK(memcmp(&a, &z, sizeof a) == 0);
    free(r);
    free(v);
}

QP_TEST(merge_should_agree_with_a_single_pass) {
    const int rows = 64, width = 40;
    float *r, *v;
    make_pair(rows, width, 0.2, &r, &v);
    struct met_err all, p1, p2, empty;
    met_err_init(&all);
    met_err_add(&all, r, v, rows, width);
    met_err_init(&p1);
    met_err_init(&p2);
    met_err_add(&p1, r, v, 23, width);
    met_err_add(&p2, r + 23 * width, v + 23 * width, rows - 23, width);
    met_err_merge(&p1, &p2);
    struct met_err_result oa, om;
    met_err_finish(&all, &oa);
    met_err_finish(&p1, &om);
    QP_CHECK_INT_EQ(om.rows, rows);
    QP_CHECK_INT_EQ(om.n, rows * width);
    QP_CHECK_NEAR(om.rel_err, oa.rel_err, 1e-14);
    QP_CHECK_NEAR(om.cos, oa.cos, 1e-14);
    QP_CHECK_NEAR(om.row_cos_mean, oa.row_cos_mean, 1e-14);
    // merging an empty accumulator changes nothing, bit for bit
    struct met_err before = all;
    met_err_init(&empty);
    met_err_merge(&all, &empty);
    QP_CHECK(memcmp(&before, &all, sizeof all) == 0);
    free(r);
    free(v);
}

QP_TEST(zero_tensors_should_give_defined_values_not_nan) {
    const float z[6] = {0}, x[6] = {1, -2, 3, 0.5f, 0, 4};
    struct met_err_result o;

    o = run(z, z, 2, 3); // both zero
    QP_CHECK(o.rel_err == 0 && o.cos == 1 && o.row_cos_mean == 1);

    o = run(z, x, 2, 3); // reference zero, variant not: relative error unbounded
    QP_CHECK(isinf(o.rel_err) && o.rel_err > 0 && o.cos == 0 && o.row_cos_mean == 0);

    o = run(x, z, 2, 3); // variant zero: the whole reference is the error
    QP_CHECK(o.rel_err == 1 && o.cos == 0 && o.row_cos_mean == 0);

    // Mixed rows: row 0 zero in both (cosine 1), row 1 zero only in the reference (0), row 2
    // identical (1).
    const float r3[6] = {0, 0, 0, 0, 1, 2}, v3[6] = {0, 0, 5, 0, 1, 2};
    o = run(r3, v3, 3, 2);
    QP_CHECK_NEAR(o.row_cos_mean, 2.0 / 3.0, 1e-15);
    QP_CHECK_NEAR(o.rel_err, sqrt(25.0 / 5.0), 1e-15);
    QP_CHECK_NEAR(o.cos, 5.0 / sqrt(5.0 * 30.0), 1e-15);

    o = run(x, x, 3, 0); // rows of width 0 are zero vectors
    QP_CHECK(o.rows == 3 && o.n == 0 && o.rel_err == 0 && o.cos == 1 && o.row_cos_mean == 1);

    o = run(x, x, 0, 3); // nothing at all
    QP_CHECK(o.rows == 0 && o.rel_err == 0 && o.cos == 1 && o.row_cos_mean == 1);
    check_no_nan(&o);

    // Tiny values (float subnormals) still give finite, sensible cosines.
    const float t1[2] = {1e-40f, 0}, t2[2] = {1e-40f, 1e-40f};
    o = run(t1, t2, 1, 2);
    check_no_nan(&o);
    QP_CHECK_NEAR(o.cos, 1 / sqrt(2.0), 1e-6);
}

QP_TEST(partials_over_threads_should_be_bitwise_reproducible) {
    const int rows = 256, width = 96, blocks = 8, per = rows / blocks;
    float *r, *v;
    make_pair(rows, width, 0.05, &r, &v);
    struct met_err part[8], serial[8];
    for (int b = 0; b < blocks; b++) {
        met_err_init(&serial[b]);
        met_err_add(&serial[b], r + (size_t)b * per * width, v + (size_t)b * per * width, per, width);
    }
#pragma omp parallel for num_threads(3) schedule(dynamic, 1)
    for (int b = blocks - 1; b >= 0; b--) {
        met_err_init(&part[b]);
        met_err_add(&part[b], r + (size_t)b * per * width, v + (size_t)b * per * width, per, width);
    }
    struct met_err ta, tb;
    met_err_init(&ta);
    met_err_init(&tb);
    for (int b = 0; b < blocks; b++) met_err_merge(&ta, &serial[b]), met_err_merge(&tb, &part[b]);
    QP_CHECK(memcmp(&ta, &tb, sizeof ta) == 0);
    struct met_err_result o;
    met_err_finish(&tb, &o);
    struct direct d = direct_err(r, v, rows, width);
    QP_CHECK_NEAR(o.rel_err, d.rel_err, TOL);
    QP_CHECK_NEAR(o.cos, d.cos, TOL);
    QP_CHECK_NEAR(o.row_cos_mean, d.row_cos_mean, TOL);
    free(r);
    free(v);
}
