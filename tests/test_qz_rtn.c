// test_qz_rtn.c — RTN / NF4 / FP4 fake quantization and bits per weight (quantizers/qz_rtn.h):
// grid properties checked exactly (zero kept, odd symmetry, every output on its group's grid,
// a hand-computed example), error orderings on synthetic Gaussian weights and on the fixture
// model's real weights (RMSE falls with bits; NF4 beats INT4 absmax at the same block; clip=mse
// never worse; dq close to non-dq), and the storage formulas.
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kn_blocks.h"
#include "kn_cpu.h"
#include "kn_ops.h"
#include "kn_types.h"
#include "hx_model.h"
#include "qp.h"
#include "qp_test.h"
#include "qz_rtn.h"
#include "qz_spec.h"

static uint64_t rng = 0x2545f4914f6cdd1dull;
static double urand(void) { // (0, 1)
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return ((rng >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}
static float gauss(void) { return (float)(sqrt(-2.0 * log(urand())) * cos(2.0 * M_PI * urand())); }

static float *gaussian(int64_t n, float sigma) {
    float *x = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) x[i] = sigma * gauss();
    return x;
}

static struct qz_base base(const char *spec) {
    char err[QP_ERRLEN];
    struct qz_base b;
    if (qz_base_parse(spec, &b, err) != 0) qpt_fail(__FILE__, __LINE__, "%s", err);
    return b;
}

// Fake-quantizes x under spec, returns the RMSE; y (may be NULL) receives the output.
static double rmse_of(const char *spec, const float *x, int64_t rows, int64_t cols, float *y, struct qz_stats *st) {
    struct qz_base b = base(spec);
    float *out = y ? y : malloc((size_t)(rows * cols) * sizeof(float));
    struct qz_stats s;
    QP_CHECK_INT_EQ(qz_fake_quant(&b, x, out, rows, cols, &s), 0);
    double sse = 0;
    for (int64_t i = 0; i < rows * cols; i++) sse += ((double)out[i] - x[i]) * ((double)out[i] - x[i]);
    QP_CHECK_NEAR(s.sse, sse, 1e-9); // the stats agree with a recount
    if (st) *st = s;
    if (!y) free(out);
    return sqrt(sse / (double)(rows * cols));
}

// ---------------------------------------------------------------------------------------------
// The fixture model: every 2-D weight matrix, as f32.

struct mats {
    struct hx_model *m;
    const float *x[64];
    int64_t rows[64], cols[64];
    int n;
};

static void load_fixture(struct mats *t) {
    const char *path = qpt_fixture("models/llama2c/stories260K.bin");
    char err[QP_ERRLEN];
    memset(t, 0, sizeof *t);
    QP_CHECK_MSG(hx_model_open(path, NULL, &t->m, err) == 0, "%s", err);
    const struct kn_weights *w = &t->m->w;
    for (int l = 0; l < w->cfg.n_layers; l++) {
        const struct kn_layer_weights *L = &w->layers[l];
        const struct kn_tensor *ts[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_down, &L->w_up};
        for (size_t i = 0; i < QP_ARRAY_LEN(ts) && t->n < 63; i++) {
            QP_CHECK(ts[i]->type == KN_F32);
            t->x[t->n] = ts[i]->data, t->rows[t->n] = ts[i]->ne1, t->cols[t->n] = ts[i]->ne0;
            t->n++;
        }
    }
    t->x[t->n] = w->tok_embd.data, t->rows[t->n] = w->tok_embd.ne1, t->cols[t->n] = w->tok_embd.ne0;
    t->n++;
}

// RMSE over all the fixture's matrices together.
static double fixture_rmse(const struct mats *t, const char *spec) {
    double sse = 0, n = 0;
    for (int i = 0; i < t->n; i++) {
        struct qz_stats st;
        rmse_of(spec, t->x[i], t->rows[i], t->cols[i], NULL, &st);
        sse += st.sse, n += (double)st.n;
    }
    return sqrt(sse / n);
}

// ---------------------------------------------------------------------------------------------
// Grid properties.

static const char *const grid_specs[] = {
    "rtn:bits=2:group=32:sym",  "rtn:bits=3:group=32:sym",   "rtn:bits=4:group=32:sym",
    "rtn:bits=8:group=32:sym",  "rtn:bits=4:channel:sym",    "rtn:bits=5:tensor:sym",
    "rtn:bits=4:group=7:sym:clip=mse", "rtn:bits=2:group=32:asym", "rtn:bits=4:group=32:asym",
    "rtn:bits=8:channel:asym", "rtn:bits=3:tensor:asym",     "rtn:bits=4:group=13:asym:clip=mse",
};

QP_TEST(sym_should_keep_zero_and_be_odd_symmetric) {
    int64_t rows = 9, cols = 100;
    float *x = gaussian(rows * cols, 0.05f), *nx = malloc(rows * cols * sizeof(float));
    float *y = malloc(rows * cols * sizeof(float)), *ny = malloc(rows * cols * sizeof(float));
    for (int64_t i = 0; i < rows * cols; i += 7) x[i] = 0.0f; // exact zeros
    for (int64_t i = 0; i < rows * cols; i++) nx[i] = -x[i];
    for (size_t s = 0; s < QP_ARRAY_LEN(grid_specs); s++) {
        struct qz_base b = base(grid_specs[s]);
        if (!b.sym) continue;
        QP_CHECK(qz_fake_quant(&b, x, y, rows, cols, NULL) == 0);
        QP_CHECK(qz_fake_quant(&b, nx, ny, rows, cols, NULL) == 0);
        for (int64_t i = 0; i < rows * cols; i++) {
            if (x[i] == 0.0f) QP_CHECK_MSG(y[i] == 0.0f, "%s: 0 became %g", grid_specs[s], y[i]);
            QP_CHECK_MSG(ny[i] == -y[i], "%s: q(-x) != -q(x) at %lld", grid_specs[s], (long long)i);
        }
    }
    // and asymmetric grids keep zero too (the range always holds 0)
    for (size_t s = 0; s < QP_ARRAY_LEN(grid_specs); s++) {
        struct qz_base b = base(grid_specs[s]);
        QP_CHECK(qz_fake_quant(&b, x, y, rows, cols, NULL) == 0);
        for (int64_t i = 0; i < rows * cols; i += 7) QP_CHECK_MSG(y[i] == 0.0f, "%s", grid_specs[s]);
    }
    free(x), free(nx), free(y), free(ny);
}

QP_TEST(asym_should_reproduce_min_max_range_constants) {
    // A ramp from -2 to 5.5 in steps of 0.5: 16 values, exactly the 4-bit asym grid.
    float x[16], y[16];
    for (int i = 0; i < 16; i++) x[i] = -2.0f + 0.5f * (float)((i * 7) % 16); // shuffled
    struct qz_base b = base("rtn:bits=4:tensor:asym");
    struct qz_grid g;
    qz_grid_fit(&b, x, 16, 1.0f, &g);
    QP_CHECK(g.scale == 0.5f);    // (max - min) / (2^4 - 1) = 7.5 / 15
    QP_CHECK_INT_EQ(g.zero, 4);   // -min / scale
    QP_CHECK_INT_EQ(g.qmin, 0);
    QP_CHECK_INT_EQ(g.qmax, 15);
    struct qz_stats st;
    QP_CHECK(qz_fake_quant(&b, x, y, 1, 16, &st) == 0);
    for (int i = 0; i < 16; i++) QP_CHECK_MSG(y[i] == x[i], "%g became %g", x[i], y[i]);
    QP_CHECK_INT_EQ(st.n_codes, 16);
    QP_CHECK(st.sse == 0.0);
    // Positive-only data: the range is widened to hold 0, so zero = 0 and min is lo = 0.
    float p[4] = {1.0f, 2.0f, 3.0f, 1.5f};
    struct qz_base b2 = base("rtn:bits=2:tensor:asym");
    qz_grid_fit(&b2, p, 4, 1.0f, &g);
    QP_CHECK(g.scale == 1.0f && g.zero == 0);
    // Negative-only data: zero = qmax.
    float m[3] = {-3.0f, -1.0f, -2.0f};
    qz_grid_fit(&b2, m, 3, 1.0f, &g);
    QP_CHECK(g.scale == 1.0f && g.zero == 3);
    QP_CHECK(qz_grid_value(&g, 0) == -3.0f && qz_grid_value(&g, 3) == 0.0f);
}

QP_TEST(hand_computed_example_should_match_exactly) {
    // 2 rows × 6 cols, 3-bit symmetric, group 4: each row has a group of 4 and a partial one of 2.
    const float x[12] = {1.0f, -0.3f, 0.55f, 3.0f, 0.5f, -0.2f,   //
                         -1.5f, 0.75f, 0.0f, 0.25f, 7.0f, -7.0f};
    float y[12];
    struct qz_base b = base("rtn:bits=3:group=4:sym");
    struct qz_stats st;
    QP_CHECK(qz_fake_quant(&b, x, y, 2, 6, &st) == 0);
    // row 0, group 0: absmax 3, qmax 3 → scale 1: codes 1, -0 (-0.3), 1 (0.55 rounds up), 3
    // row 0, group 1: absmax 0.5 → scale fp16(0.5/3) = 0.1666259765625 (1365 · 2^-13):
    //   0.5 / s = 3.00073 → 3 → 0.4998779296875;  -0.2 / s = -1.2003 → -1 → -0.1666259765625
    // row 1, group 0: absmax 1.5 → scale 0.5: -3, 1.5 → 2 (half away from zero), 0, 0.5 → 1 → 0.5
    // row 1, group 1: absmax 7 → scale fp16(7/3) = 2.333984375: 7 / s = 2.99916 → 3 → 7.001953125
    const float want[12] = {1.0f, 0.0f, 1.0f, 3.0f, 0.4998779296875f, -0.1666259765625f,
                            -1.5f, 1.0f, 0.0f, 0.5f, 7.001953125f, -7.001953125f};
    for (int i = 0; i < 12; i++) QP_CHECK_MSG(y[i] == want[i], "at %d: %.9g, want %.9g", i, y[i], want[i]);
    // 12 codes of 3 bits + 4 fp16 scales
    QP_CHECK_INT_EQ(st.bits, 12 * 3 + 4 * 16);
    QP_CHECK_INT_EQ(st.bytes, 13); // 100 bits
    QP_CHECK_INT_EQ(st.n_zeroed, 1); // -0.3
    QP_CHECK_INT_EQ(st.n_clipped, 0);

    // 2-bit asymmetric, one group: [-1, 0.2, 1.4, 2]: scale (2 - -1)/3 = 1, zero 1 → -1, 0, 1, 2
    const float a[4] = {-1.0f, 0.2f, 1.4f, 2.0f}, aw[4] = {-1.0f, 0.0f, 1.0f, 2.0f};
    struct qz_base ba = base("rtn:bits=2:tensor:asym");
    QP_CHECK(qz_fake_quant(&ba, a, y, 1, 4, &st) == 0);
    for (int i = 0; i < 4; i++) QP_CHECK_MSG(y[i] == aw[i], "at %d: %g", i, y[i]);
    QP_CHECK_INT_EQ(st.bits, 4 * 2 + 16 + 2); // codes + fp16 scale + 2-bit zero-point
    QP_CHECK_INT_EQ(st.n_codes, 4);

    // NF4, one block of 4: absmax 2; x / absmax = 0.5, -0.1, 1, 0.03 → nearest table values
    const float n4[4] = {1.0f, -0.2f, 2.0f, 0.06f};
    struct qz_base bn = base("nf4:group=4");
    QP_CHECK(qz_fake_quant(&bn, n4, y, 1, 4, &st) == 0);
    QP_CHECK(y[0] == qz_nf4_table[12] * 2.0f); // 0.5 → 0.4407 (the midpoint to 0.5626 is 0.5017)
    QP_CHECK(y[1] == qz_nf4_table[6] * 2.0f);  // -0.1 → -0.0911
    QP_CHECK(y[2] == 2.0f);
    QP_CHECK(y[3] == 0.0f);                    // 0.03 < 0.0398 (midpoint of 0 and 0.0796)
    QP_CHECK_INT_EQ(st.bits, 4 * 4 + 32);
}

QP_TEST(partial_last_group_should_get_its_own_grid) {
    int64_t rows = 3, cols = 100, gs = 32;
    float *x = gaussian(rows * cols, 1.0f), y[300];
    for (int64_t r = 0; r < rows; r++) x[r * cols + 97] = 40.0f; // an outlier in the last group only
    for (size_t s = 0; s < QP_ARRAY_LEN(grid_specs); s++) {
        char spec[64];
        snprintf(spec, sizeof spec, "rtn:bits=4:group=%lld:%s", (long long)gs, s % 2 ? "asym" : "sym");
        struct qz_base b = base(spec);
        struct qz_stats st;
        QP_CHECK(qz_fake_quant(&b, x, y, rows, cols, &st) == 0);
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < cols; c += gs) {
                int64_t n = QP_MIN(gs, cols - c);
                struct qz_grid g;
                qz_grid_fit(&b, x + r * cols + c, n, 1.0f, &g);
                for (int64_t k = 0; k < n; k++) {
                    float want = qz_grid_value(&g, qz_grid_code(&g, x[r * cols + c + k]));
                    QP_CHECK(y[r * cols + c + k] == want);
                }
            }
        // the outlier widened only the last group: the first groups keep a fine grid
        QP_CHECK(fabsf(y[5] - x[5]) < 0.5f);
        QP_CHECK_INT_EQ(st.bits, rows * cols * 4 + rows * 4 * (16 + (b.sym ? 0 : 4)));
    }
    // nf4 likewise: 4 blocks per row, the last of 4 values
    struct qz_base b = base("nf4:group=32");
    struct qz_stats st;
    QP_CHECK(qz_fake_quant(&b, x, y, rows, cols, &st) == 0);
    QP_CHECK(y[97] == 40.0f);                 // its block's absmax
    QP_CHECK(fabsf(y[5] - x[5]) < 0.5f);
    QP_CHECK_INT_EQ(st.bits, rows * cols * 4 + rows * 4 * 32);
    free(x);
}

QP_TEST(every_output_should_lie_on_its_group_grid) {
    int64_t rows = 16, cols = 96;
    float *x = gaussian(rows * cols, 0.02f), *y = malloc(rows * cols * sizeof(float));
    for (int64_t i = 0; i < rows * cols; i += 37) x[i] *= 25.0f; // outliers, so that clip matters
    for (size_t s = 0; s < QP_ARRAY_LEN(grid_specs); s++) {
        struct qz_base b = base(grid_specs[s]);
        QP_CHECK(qz_fake_quant(&b, x, y, rows, cols, NULL) == 0);
        int64_t gs = b.gran == QZ_TENSOR ? rows * cols : b.gran == QZ_CHANNEL ? cols : b.group;
        int64_t per_row = b.gran == QZ_TENSOR ? 1 : (cols + gs - 1) / gs;
        int64_t n_rows = b.gran == QZ_TENSOR ? 1 : rows, stride = b.gran == QZ_TENSOR ? 0 : cols;
        for (int64_t r = 0; r < n_rows; r++)
            for (int64_t j = 0; j < per_row; j++) {
                int64_t off = r * stride + j * gs, n = QP_MIN(gs, (b.gran == QZ_TENSOR ? rows * cols : cols) - j * gs);
                // The grid: without clipping it is the fitted one; with clip=mse some shrunk one.
                // Either way the outputs are (q - z) * s for integers q in range: find s from the
                // candidate shrink factors and check every value is on that grid.
                int found = 0;
                for (int i = 0; i < 100 && !found; i++) {
                    float p = (float)(1.0 - 0.8 * i / 99);
                    if (!b.clip_mse && i > 0) break;
                    struct qz_grid g;
                    qz_grid_fit(&b, x + off, n, p, &g);
                    int ok = 1;
                    for (int64_t k = 0; k < n && ok; k++) {
                        float v = y[off + k];
                        float qf = g.scale > 0 ? v / g.scale + (float)g.zero : (float)g.zero;
                        int q = (int)lrintf(qf);
                        ok = q >= g.qmin && q <= g.qmax && qz_grid_value(&g, q) == v;
                    }
                    found = ok;
                }
                QP_CHECK_MSG(found, "%s: group %lld/%lld is off grid", grid_specs[s], (long long)r, (long long)j);
            }
    }
    // NF4 / FP4: every output is a table value times its block's absmax
    for (int t = 0; t < 2; t++) {
        struct qz_base b = base(t ? "fp4:group=64" : "nf4:group=64");
        const float *tab = t ? qz_fp4_table : qz_nf4_table;
        QP_CHECK(qz_fake_quant(&b, x, y, rows, cols, NULL) == 0);
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < cols; c += 64) {
                int64_t n = QP_MIN(64, cols - c);
                float amax = 0;
                for (int64_t k = 0; k < n; k++) amax = fmaxf(amax, fabsf(x[r * cols + c + k]));
                for (int64_t k = 0; k < n; k++) {
                    int ok = 0;
                    for (int q = 0; q < 16; q++) ok |= tab[q] * amax == y[r * cols + c + k];
                    QP_CHECK(ok);
                }
            }
    }
    free(x), free(y);
}

QP_TEST(clip_mse_should_never_be_worse_than_no_clipping) {
    int64_t rows = 64, cols = 128;
    float *x = gaussian(rows * cols, 0.02f);
    for (int64_t i = 0; i < rows * cols; i += 53) x[i] *= 20.0f; // heavy tail
    static const char *const pairs[][2] = {
        {"rtn:bits=2:group=32:sym", "rtn:bits=2:group=32:sym:clip=mse"},
        {"rtn:bits=3:group=32:asym", "rtn:bits=3:group=32:asym:clip=mse"},
        {"rtn:bits=4:group=128:sym", "rtn:bits=4:group=128:sym:clip=mse"},
        {"rtn:bits=4:channel:asym", "rtn:bits=4:channel:asym:clip=mse"},
        {"rtn:bits=8:group=16:sym", "rtn:bits=8:group=16:sym:clip=mse"},
        {"rtn:bits=3:tensor:sym", "rtn:bits=3:tensor:sym:clip=mse"},
    };
    for (size_t i = 0; i < QP_ARRAY_LEN(pairs); i++) {
        struct qz_stats s0, s1;
        // per row, so that the comparison holds group by group, not just in total
        for (int64_t r = 0; r < rows; r++) {
            rmse_of(pairs[i][0], x + r * cols, 1, cols, NULL, &s0);
            rmse_of(pairs[i][1], x + r * cols, 1, cols, NULL, &s1);
            QP_CHECK_MSG(s1.sse <= s0.sse, "%s row %lld: %g > %g", pairs[i][1], (long long)r, s1.sse, s0.sse);
        }
        double e0 = rmse_of(pairs[i][0], x, rows, cols, NULL, &s0);
        double e1 = rmse_of(pairs[i][1], x, rows, cols, NULL, &s1);
        printf("%-36s rmse %.6g   clip=mse %.6g  clipped %lld\n", pairs[i][0], e0, e1, (long long)s1.n_clipped);
        QP_CHECK(e1 <= e0);
        QP_CHECK_INT_EQ(s0.n_clipped, 0);
    }
    // on heavy-tailed data at 2 bits it does help (about 10% here), and it clips something
    struct qz_stats s0, s1;
    double e0 = rmse_of("rtn:bits=2:group=32:sym", x, rows, cols, NULL, &s0);
    double e1 = rmse_of("rtn:bits=2:group=32:sym:clip=mse", x, rows, cols, NULL, &s1);
    QP_CHECK(e1 < 0.95 * e0);
    QP_CHECK(s1.n_clipped > 0);
    free(x);
}

// ---------------------------------------------------------------------------------------------
// Error orderings.

static void check_falls_with_bits(const char *what, double (*err_of)(const char *spec, void *ctx), void *ctx) {
    static const char *const kinds[] = {"group=64:sym", "group=64:asym", "channel:sym", "group=32:asym:clip=mse"};
    for (size_t k = 0; k < QP_ARRAY_LEN(kinds); k++) {
        double prev = INFINITY;
        printf("%s rtn:*:%s rmse by bits:", what, kinds[k]);
        for (int bits = 2; bits <= 8; bits++) {
            char spec[64];
            snprintf(spec, sizeof spec, "rtn:bits=%d:%s", bits, kinds[k]);
            double e = err_of(spec, ctx);
            printf(" %d:%.4g", bits, e);
            QP_CHECK_MSG(e < prev, "%s: rmse %g at %d bits is not below %g", spec, e, bits, prev);
            // roughly halves per bit (the grid step halves); at least a third less each time
            if (bits > 2) QP_CHECK_MSG(e < 0.67 * prev, "%s: %g vs %g", spec, e, prev);
            prev = e;
        }
        printf("\n");
    }
}

struct gauss_ctx {
    float *x;
    int64_t rows, cols;
};

static double gauss_err(const char *spec, void *ctx) {
    struct gauss_ctx *g = ctx;
    return rmse_of(spec, g->x, g->rows, g->cols, NULL, NULL);
}

static double fixture_err(const char *spec, void *ctx) { return fixture_rmse(ctx, spec); }

QP_TEST(rmse_should_fall_as_bits_rise_on_gaussian_weights) {
    struct gauss_ctx g = {gaussian(128 * 256, 0.02f), 128, 256};
    check_falls_with_bits("gaussian", gauss_err, &g);
    free(g.x);
}

QP_TEST(rmse_should_fall_as_bits_rise_on_fixture_weights) {
    struct mats t;
    load_fixture(&t);
    check_falls_with_bits("stories260K", fixture_err, &t);
    hx_model_close(t.m);
}

QP_TEST(nf4_should_beat_int4_absmax_on_normal_weights) {
    struct gauss_ctx g = {gaussian(256 * 512, 0.02f), 256, 512};
    double nf4 = gauss_err("nf4:group=64", &g), int4 = gauss_err("rtn:bits=4:group=64:sym", &g);
    double fp4 = gauss_err("fp4:group=64", &g);
    printf("gaussian     rmse nf4 %.6g  int4 sym %.6g  fp4 %.6g  (nf4/int4 %.3f)\n", nf4, int4, fp4, nf4 / int4);
    QP_CHECK(nf4 < int4);
    free(g.x);

    struct mats t;
    load_fixture(&t);
    nf4 = fixture_rmse(&t, "nf4:group=64");
    int4 = fixture_rmse(&t, "rtn:bits=4:group=64:sym");
    fp4 = fixture_rmse(&t, "fp4:group=64");
    printf("stories260K  rmse nf4 %.6g  int4 sym %.6g  fp4 %.6g  (nf4/int4 %.3f)\n", nf4, int4, fp4, nf4 / int4);
    QP_CHECK(nf4 < int4);
    hx_model_close(t.m);
}

QP_TEST(code_tables_should_be_bitsandbytes_values) {
    // bitsandbytes functional.py get_4bit_type("nf4") / csrc dDequantizeNF4 (QLoRA appendix E)
    static const float nf4[16] = {
        -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
        -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
        0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
        0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f};
    QP_CHECK(memcmp(nf4, qz_nf4_table, sizeof nf4) == 0);
    for (int i = 0; i < 15; i++) QP_CHECK(qz_nf4_table[i] < qz_nf4_table[i + 1]);
    // bitsandbytes csrc dDequantizeFP4Tree: sign bit 3; magnitudes are {0, 0.0625, 2, 3, 4, 6,
    // 8, 12} / 12 for codes {0, 1, 6, 7, 4, 5, 2, 3}
    static const int code[8] = {0, 1, 6, 7, 4, 5, 2, 3};
    static const float mag12[8] = {0, 0.0625f, 2, 3, 4, 6, 8, 12};
    for (int i = 0; i < 8; i++) {
        QP_CHECK_NEAR(qz_fp4_table[code[i]], mag12[i] / 12.0f, 1e-7);
        QP_CHECK(qz_fp4_table[code[i] | 8] == -qz_fp4_table[code[i]]);
    }
    QP_CHECK(qz_fp4_table[6] == 0.16666667f && qz_fp4_table[1] == 5.208333333e-03f);
    // NF4 uses all 16 codes on Gaussian data; FP4 distinguishes -0 and +0 as bitsandbytes does
    float *x = gaussian(64 * 64, 1.0f), *y = malloc(64 * 64 * sizeof(float));
    struct qz_stats st;
    rmse_of("nf4:group=64", x, 64, 64, y, &st);
    QP_CHECK_INT_EQ(st.n_codes, 16);
    QP_CHECK_INT_EQ(st.n_clipped, 0);
    free(x), free(y);
}

// ---------------------------------------------------------------------------------------------
// Double quantization and bits per weight.

QP_TEST(dq_should_cost_about_4_127_bits_and_little_error) {
    // nf4:group=64 = 4 + 32/64 = 4.5 exactly; with dq 4 + (8·nb + 32·ceil(nb/256) + 32) / n,
    // nb = n/64: 4 + 8/64 + 32/(64·256) + 32/n = 4.126953125 + 32/n.
    struct qz_base b = base("nf4:group=64"), bd = base("nf4:group=64:dq");
    QP_CHECK(qz_bits_per_weight(&b, 4096, 4096) == 4.5);
    double n = 4096.0 * 4096.0;
    QP_CHECK(qz_bits_per_weight(&bd, 4096, 4096) == 4.0 + (8.0 * (n / 64) + 32.0 * (n / 64 / 256) + 32.0) / n);
    QP_CHECK_NEAR(qz_bits_per_weight(&bd, 4096, 4096), 4.127, 5e-4);
    QP_CHECK(qz_bits_per_weight(&bd, 4096, 4096) > 4.126953125);

    struct gauss_ctx g = {gaussian(256 * 512, 0.02f), 256, 512};
    struct qz_stats s0, s1;
    double e0 = rmse_of("nf4:group=64", g.x, g.rows, g.cols, NULL, &s0);
    double e1 = rmse_of("nf4:group=64:dq", g.x, g.rows, g.cols, NULL, &s1);
    double f0 = rmse_of("fp4:group=64", g.x, g.rows, g.cols, NULL, NULL);
    double f1 = rmse_of("fp4:group=64:dq", g.x, g.rows, g.cols, NULL, NULL);
    printf("gaussian     nf4 %.6g dq %.6g (%.4f)  fp4 %.6g dq %.6g   bpw %.6g → %.6g\n", e0, e1, e1 / e0, f0, f1,
           s0.bpw, s1.bpw);
    QP_CHECK(s0.bpw == 4.5);
    QP_CHECK_NEAR(s1.bpw, 4.0 + 8.0 / 64 + 32.0 / (64 * 256) + 32.0 / (256 * 512), 1e-12); // 2048 blocks → 8 dq blocks
    QP_CHECK(e1 < 1.01 * e0 && f1 < 1.01 * f0);
    free(g.x);

    struct mats t;
    load_fixture(&t);
    e0 = fixture_rmse(&t, "nf4:group=64");
    e1 = fixture_rmse(&t, "nf4:group=64:dq");
    printf("stories260K  nf4 %.6g dq %.6g (%.4f)\n", e0, e1, e1 / e0);
    QP_CHECK(e1 < 1.01 * e0);
    hx_model_close(t.m);
}

QP_TEST(bits_per_weight_should_follow_the_layout_for_every_kind) {
    static const struct {
        const char *spec;
        int64_t rows, cols;
        double bpw;
    } cases[] = {
        {"f32", 8, 64, 32},
        {"f16", 8, 64, 16},
        {"bf16", 8, 64, 16},
        {"rtn:bits=4:group=128:sym", 64, 4096, 4.125},
        {"rtn:bits=4:group=128:asym", 64, 4096, 4.15625},   // + (16 + 4) / 128
        {"rtn:bits=3:channel:sym", 64, 4096, 3 + 16.0 / 4096},
        {"rtn:bits=8:tensor:asym", 64, 4096, 8 + 24.0 / (64 * 4096)},
        {"rtn:bits=4:group=32:sym", 2, 100, 4 + 4 * 16.0 / 100}, // 4 groups per row (32, 32, 32, 4)
        {"nf4:group=64", 64, 4096, 4.5},
        {"fp4:group=32", 64, 4096, 5.0},
        {"q8_0", 64, 4096, 8.5},
        {"q4_0", 64, 4096, 4.5},
        {"q4_1", 64, 4096, 5.0},
        {"q5_0", 64, 4096, 5.5},
        {"q5_1", 64, 4096, 6.0},
        {"q2_k", 64, 4096, 2.625},
        {"q3_k", 64, 4096, 3.4375},
        {"q4_k", 64, 4096, 4.5},
        {"q5_k", 64, 4096, 5.5},
        {"q6_k", 64, 4096, 6.5625},
        {"iq4_nl", 64, 4096, 4.5},
        {"q4_k_m", 64, 4096, 4.5},                            // the mix's base type
        {"q4_0", 2, 100, 4 * 18 * 8 / 100.0},                 // 100 cols: 4 blocks, the last padded
        {"gptq:bits=4:group=128", 64, 4096, 4.125},
        {"gptq:bits=4:group=128:asym:actorder", 64, 4096, 4.15625 + 32.0 / 64}, // g_idx per column
        {"gptq:bits=4:group=128:asym:actorder:static", 64, 4096, 4.15625},
        {"gptq:q6_k", 64, 4096, 6.5625},
        {"awq:bits=4:group=128:asym", 64, 4096, 4.15625},
        {"smoothquant", 64, 4096, 8 + 16.0 / 4096},
    };
    for (size_t i = 0; i < QP_ARRAY_LEN(cases); i++) {
        struct qz_base b = base(cases[i].spec);
        double got = qz_bits_per_weight(&b, cases[i].rows, cases[i].cols);
        QP_CHECK_MSG(fabs(got - cases[i].bpw) < 1e-12, "%s: %.9g, want %.9g", cases[i].spec, got, cases[i].bpw);
    }
}

// ---------------------------------------------------------------------------------------------
// Casts, in place, bad input.

QP_TEST(f16_bf16_should_round_as_ggml_does) {
    float x[6] = {1.0f, 1.0f + 1.0f / 2048, 1.0f + 3.0f / 2048, 70000.0f, 1e-9f, -3.14159f}, y[6];
    struct qz_base b = base("f16");
    struct qz_stats st;
    QP_CHECK(qz_fake_quant(&b, x, y, 2, 3, &st) == 0);
    for (int i = 0; i < 6; i++) QP_CHECK(memcmp(&y[i], &(float){qp_fp16_to_fp32(qp_fp32_to_fp16(x[i]))}, 4) == 0);
    QP_CHECK(y[1] == 1.0f);            // halfway: to even
    QP_CHECK(y[2] == 1.0f + 2.0f / 1024);
    QP_CHECK(isinf(y[3]));
    QP_CHECK_INT_EQ(st.n_clipped, 1);  // 70000 overflowed
    QP_CHECK_INT_EQ(st.n_zeroed, 1);   // 1e-9 underflowed
    QP_CHECK(st.bits == 6 * 16 && st.n_codes == 0);
    b = base("bf16");
    QP_CHECK(qz_fake_quant(&b, x, x, 2, 3, &st) == 0); // in place
    QP_CHECK(x[0] == 1.0f && x[3] == 70144.0f && x[5] == -3.140625f);
}

QP_TEST(in_place_should_equal_out_of_place) {
    static const char *const specs[] = {"rtn:bits=3:group=20:asym:clip=mse", "rtn:bits=4:tensor:sym",
                                        "nf4:group=64:dq", "fp4:group=10:dq", "nf4:group=64", "bf16"};
    int64_t rows = 40, cols = 70;
    float *x = gaussian(rows * cols, 0.1f), *y = malloc(rows * cols * 4), *z = malloc(rows * cols * 4);
    for (size_t s = 0; s < QP_ARRAY_LEN(specs); s++) {
        struct qz_base b = base(specs[s]);
        struct qz_stats s1, s2;
        QP_CHECK(qz_fake_quant(&b, x, y, rows, cols, &s1) == 0);
        memcpy(z, x, rows * cols * 4);
        QP_CHECK(qz_fake_quant(&b, z, z, rows, cols, &s2) == 0);
        QP_CHECK_MSG(memcmp(y, z, rows * cols * 4) == 0, "%s", specs[s]);
        QP_CHECK(s1.sse == s2.sse && s1.bits == s2.bits && s1.n_codes == s2.n_codes);
    }
    free(x), free(y), free(z);
}

QP_TEST(bad_input_should_be_refused_not_asserted) {
    float x[4] = {1.0f, NAN, 0.5f, 0.0f}, y[4];
    struct qz_base b = base("rtn:bits=4:tensor:sym");
    QP_CHECK_INT_EQ(qz_fake_quant(&b, x, y, 1, 4, NULL), QP_EINVAL);
    b = base("nf4:group=64");
    x[1] = INFINITY;
    QP_CHECK_INT_EQ(qz_fake_quant(&b, x, y, 1, 4, NULL), QP_EINVAL);
    b = base("q4_0");
    QP_CHECK_INT_EQ(qz_fake_quant(&b, x, y, 1, 4, NULL), QP_ENOTSUP);
    b = base("gptq:bits=4:group=128");
    QP_CHECK_INT_EQ(qz_fake_quant(&b, x, y, 1, 4, NULL), QP_ENOTSUP);
    // all-zero groups and empty tensors are fine
    float zero[8] = {0}, out[8];
    static const char *const specs[] = {"rtn:bits=4:group=4:asym:clip=mse", "rtn:bits=2:channel:sym", "nf4:group=4:dq", "fp4"};
    for (size_t s = 0; s < QP_ARRAY_LEN(specs); s++) {
        b = base(specs[s]);
        QP_CHECK(qz_fake_quant(&b, zero, out, 2, 4, NULL) == 0);
        for (int i = 0; i < 8; i++) QP_CHECK(out[i] == 0.0f);
        QP_CHECK(qz_fake_quant(&b, zero, out, 0, 4, NULL) == 0);
    }
    // tiny weights whose fp16 scale underflows quantize to zero, counted
    float tiny[4] = {1e-12f, -2e-12f, 3e-12f, 0}, t2[4];
    struct qz_stats st;
    b = base("rtn:bits=8:tensor:sym");
    QP_CHECK(qz_fake_quant(&b, tiny, t2, 1, 4, &st) == 0);
    QP_CHECK(t2[0] == 0.0f && st.n_zeroed == 3);
}

// RTN results kept as Q8_0 blocks (qz_grid_q8_0_exact): where every 32-block lies on one grid and
// its codes fit int8, the blocks dequantize (the engine's own kn_dequantize_row and its AVX2
// version) to the fake-quantized floats bit for bit; where they cannot, the packer says so.
static int q8_0_roundtrip(const char *spec, const float *x, int64_t rows, int64_t cols) {
    struct qz_base b = base(spec);
    float *y = malloc((size_t)(rows * cols) * sizeof *y), *z = malloc((size_t)cols * sizeof *z);
    struct qz_grid *g = malloc((size_t)qz_rtn_n_grids(&b, rows, cols) * sizeof *g);
    struct kn_block_q8_0 *blk = malloc((size_t)(rows * cols / 32 + 1) * sizeof *blk);
    QP_CHECK(qz_fake_quant_grids(&b, x, y, rows, cols, NULL, g) == 0);
    int rc = qz_grid_q8_0_exact(y, rows, cols, g, qz_rtn_group_cols(&b, cols), b.gran == QZ_TENSOR, blk);
    for (int64_t r = 0; rc == 0 && r < rows; r++) {
        kn_dequantize_row(KN_Q8_0, blk + r * cols / 32, z, cols);
        QP_CHECK_MSG(memcmp(z, y + r * cols, (size_t)cols * sizeof *z) == 0, "%s: row %lld differs", spec, (long long)r);
        if (kn_cpu_has("avx2")) {
            kn_dequant_row_avx2(KN_Q8_0, blk + r * cols / 32, z, cols);
            QP_CHECK_MSG(memcmp(z, y + r * cols, (size_t)cols * sizeof *z) == 0, "%s: row %lld differs (avx2)", spec,
                         (long long)r);
        }
    }
    free(y), free(z), free(g), free(blk);
    return rc;
}

QP_TEST(rtn_on_32_aligned_grids_should_pack_as_q8_0_bit_for_bit) {
    int64_t rows = 24, cols = 160;
    float *x = gaussian(rows * cols, 0.05f);
    x[7] = 0.0f, x[8] = -0.0f, x[3 * cols + 5] = 1.5f; // zeros and an outlier
    for (int64_t k = 0; k < cols; k++) x[5 * cols + k] = 0.0f; // a row of zeros: scale 0
    for (int64_t k = 64; k < 96; k++) x[6 * cols + k] = -0.0f;
    static const char *const ok[] = {"rtn:bits=4:group=32:sym", "rtn:bits=3:group=32:asym:clip=mse",
                                     "rtn:bits=4:group=64:asym", /* 160 = 2·64 + 32: a partial last group */
                                     "rtn:bits=8:channel:sym", "rtn:bits=2:tensor:sym", "rtn:bits=7:group=96:asym"};
    for (size_t i = 0; i < QP_ARRAY_LEN(ok); i++) QP_CHECK_MSG(q8_0_roundtrip(ok[i], x, rows, cols) == 0, "%s", ok[i]);
    // Groups that split a block, codes beyond int8, rows that are not whole blocks: refused.
    QP_CHECK(q8_0_roundtrip("rtn:bits=4:group=16:sym", x, rows, cols) == 1);
    QP_CHECK(q8_0_roundtrip("rtn:bits=8:group=32:asym", x, rows, cols) == 1);
    QP_CHECK(q8_0_roundtrip("rtn:bits=4:group=32:sym", x, rows * cols / 100, 100) == 1);
    free(x);
}
