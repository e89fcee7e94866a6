// test_qz_codes.c — the codes per group of every weight format (quantizers/qz_codes.h):
//  - llama.cpp types: the walk's dequantized values equal kn_dequantize_row of the real
//    quantizer's blocks byte for byte (random heavy-tailed rows and edge-case rows), and equal
//    llama.cpp's own dequantization of the synth256 edge-case tensor; groups tile the tensor in
//    order with the documented sizes; codes are in range; within a group one code is one value,
//    inside [lo, hi];
//  - rtn / nf4 / fp4: the walk's values equal qz_fake_quant's output bit for bit (sym, asym,
//    tensor / channel / partial groups, clip=mse, dq), codes used and zeroed counts agree with
//    qz_stats, nf4/fp4 values are table[code] x the block's stored absmax;
//  - unsupported formats and bad input are refused; the callback can stop the walk;
//  - feeding the groups to met_grid: fewer bits collapse more (collisions up, entropy down).
#include <ctype.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hx_gguf.h"
#include "kn_blocks.h"
#include "kn_blocks_k.h"
#include "kn_types.h"
#include "met_grid.h"
#include "qp.h"
#include "qp_test.h"
#include "qz_codes.h"
#include "qz_ggml.h"
#include "qz_kquants.h"
#include "qz_rtn.h"
#include "qz_spec.h"

static struct qpt_rng rng = {0x6a09e667f3bcc909ull};
static double gauss(void) { return qpt_gauss(&rng); }

static struct qz_base base(const char *spec) {
    char err[QP_ERRLEN];
    struct qz_base b;
    if (qz_base_parse(spec, &b, err) != 0) qpt_fail(__FILE__, __LINE__, "%s", err);
    return b;
}

// Heavy-tailed rows (Gaussian with every 41st value x12), then edge-case rows like the synth256
// fixture's: a zero block, a 1e-6 row (fp16 scales underflow), a constant row, a single spike,
// alternating signs.
static float *test_matrix(int64_t rows, int64_t cols) {
    float *w = malloc((size_t)(rows * cols) * sizeof(float));
    for (int64_t i = 0; i < rows * cols; i++) w[i] = (float)(0.02 * gauss()) * (i % 41 == 7 ? 12.0f : 1.0f);
    if (rows >= 8) {
        for (int64_t c = 0; c < 32 && c < cols; c++) w[2 * cols + c] = 0.0f;
        for (int64_t c = 0; c < cols; c++) w[3 * cols + c] *= 1e-6f;
        for (int64_t c = 0; c < cols; c++) w[4 * cols + c] = 0.01f;
        for (int64_t c = 0; c < cols; c++) w[5 * cols + c] = c == 100 ? 1.0f : 0.0f;
        for (int64_t c = 0; c < cols; c++) w[6 * cols + c] = c % 2 ? -0.05f : 0.05f;
    }
    return w;
}

// The walk reassembled into whole-tensor arrays, with the checks every walk must pass.
struct collect {
    int64_t rows, cols;
    const float *w;
    float *dq;        // (rows × cols)
    uint8_t *codes;   // (rows × cols)
    int64_t next;     // flat index the next group must start at
    int64_t groups;
    int64_t want_n;   // the group size every full group must have (0: do not check)
    int n_codes;
    uint64_t used[4]; // codes used anywhere
};

static int collect_group(void *ctx, const struct qz_group *g) {
    struct collect *c = ctx;
    int64_t at = g->row * c->cols + g->col;
    QP_CHECK_MSG(at == c->next, "group at %lld, expected %lld", (long long)at, (long long)c->next);
    QP_CHECK(g->x == c->w + at);
    QP_CHECK(g->n >= 1 && at + g->n <= c->rows * c->cols);
    QP_CHECK_INT_EQ(g->n_codes, c->n_codes);
    if (c->want_n) QP_CHECK(g->n == c->want_n || (g->col + g->n == c->cols && g->n < c->want_n));
    QP_CHECK(g->lo <= g->hi);
    float val_of[256];
    uint8_t seen[256] = {0};
    for (int64_t k = 0; k < g->n; k++) {
        int code = g->codes[k];
        QP_CHECK_MSG(code < g->n_codes, "code %d >= %d", code, g->n_codes);
        QP_CHECK(g->dq[k] >= g->lo && g->dq[k] <= g->hi);
        if (seen[code]) QP_CHECK(memcmp(&val_of[code], &g->dq[k], sizeof(float)) == 0);
        seen[code] = 1, val_of[code] = g->dq[k];
        c->used[code >> 6] |= 1ull << (code & 63);
    }
    memcpy(c->dq + at, g->dq, (size_t)g->n * sizeof(float));
    memcpy(c->codes + at, g->codes, (size_t)g->n);
    c->next = at + g->n;
    c->groups++;
    return 0;
}

static void collect_walk(const struct qz_base *b, const float *w, int64_t rows, int64_t cols,
                         int64_t want_n, struct collect *c) {
    memset(c, 0, sizeof *c);
    c->rows = rows, c->cols = cols, c->w = w, c->want_n = want_n;
    c->dq = malloc((size_t)(rows * cols) * sizeof(float));
    c->codes = malloc((size_t)(rows * cols));
    c->n_codes = qz_codes_n(b);
    QP_CHECK(c->n_codes >= 1 && c->n_codes <= 256);
    char err[QP_ERRLEN] = "";
    int rc = qz_codes_walk(b, w, rows, cols, collect_group, c, err);
    QP_CHECK_MSG(rc == 0, "walk failed (%d): %s", rc, err);
    QP_CHECK_INT_EQ(c->next, rows * cols); // the groups tile the tensor
}

static int count_used(const struct collect *c) {
    int n = 0;
    for (int i = 0; i < 4; i++) n += __builtin_popcountll(c->used[i]);
    return n;
}

// ---------------------------------------------------------------------------------------------
// llama.cpp types

static const struct {
    const char *spec;
    int type, n_codes, group;
} ggml_cases[] = {
    {"q8_0", KN_Q8_0, 255, 32}, {"q4_0", KN_Q4_0, 16, 32}, {"q4_1", KN_Q4_1, 16, 32},
    {"q5_0", KN_Q5_0, 32, 32},  {"q5_1", KN_Q5_1, 32, 32}, {"iq4_nl", KN_IQ4_NL, 16, 32},
    {"q2_k", KN_Q2_K, 4, 16},   {"q3_k", KN_Q3_K, 8, 16},  {"q4_k", KN_Q4_K, 16, 32},
    {"q5_k", KN_Q5_K, 32, 32},  {"q6_k", KN_Q6_K, 64, 16},
};

static int is_k(int type) { return type >= KN_Q2_K && type <= KN_Q6_K; }

QP_TEST(ggml_walk_values_should_equal_kn_dequantize_row_bytes_for_every_type) {
    const int64_t rows = 12, cols = 512;
    float *w = test_matrix(rows, cols);
    float *ref = malloc((size_t)cols * sizeof(float));
    for (size_t t = 0; t < QP_ARRAY_LEN(ggml_cases); t++) {
        struct qz_base b = base(ggml_cases[t].spec);
        QP_CHECK_INT_EQ(b.ggml_type, ggml_cases[t].type);
        QP_CHECK_INT_EQ(qz_codes_n(&b), ggml_cases[t].n_codes);
        struct collect c;
        collect_walk(&b, w, rows, cols, ggml_cases[t].group, &c);
        QP_CHECK_INT_EQ(c.groups, rows * cols / ggml_cases[t].group);
        void *blocks = malloc(kn_row_bytes(b.ggml_type, cols));
        for (int64_t r = 0; r < rows; r++) {
            const float *x = w + r * cols;
            int rc = is_k(b.ggml_type) ? qz_quantize_row_k(b.ggml_type, x, blocks, cols, NULL)
                                       : qz_quantize_row(b.ggml_type, x, blocks, cols, NULL);
            QP_CHECK_INT_EQ(rc, 0);
            kn_dequantize_row(b.ggml_type, blocks, ref, cols);
            QP_CHECK_MSG(memcmp(ref, c.dq + r * cols, (size_t)cols * sizeof(float)) == 0,
                         "%s row %lld: walk values differ from kn_dequantize_row",
                         ggml_cases[t].spec, (long long)r);
        }
        printf("  %-6s %3d of %3d codes used\n", ggml_cases[t].spec, count_used(&c), c.n_codes);
        free(blocks), free(c.dq), free(c.codes);
    }
    free(w), free(ref);
}

// "Q4_K" for KN_Q4_K: the spelling of the fixture file names.
static const char *upper_name(int type) {
    static char buf[16];
    const char *s = kn_type_info(type)->name;
    size_t i = 0;
    for (; s[i] && i + 1 < sizeof buf; i++) buf[i] = (char)toupper((unsigned char)s[i]);
    buf[i] = 0;
    return buf;
}

QP_TEST(ggml_walk_values_should_equal_llama_cpp_dequant_of_synth256_edge_tensor) {
    char err[QP_ERRLEN];
    struct hx_gguf *g = NULL;
    QP_CHECK_MSG(hx_gguf_open(qpt_fixture("golden/quant/synth256-F32.gguf"), &g, err) == 0, "%s", err);
    const struct hx_gguf_tensor *t = hx_gguf_find_tensor(g, "blk.1.attn_k.weight");
    QP_CHECK(t && t->type == KN_F32 && t->ne[0] == 256 && t->ne[1] == 128);
    for (size_t i = 0; i < QP_ARRAY_LEN(ggml_cases); i++) {
        char rel[160];
        snprintf(rel, sizeof rel, "golden/quant/dequant/synth256-%s.blk.1.attn_k.weight.f32",
                 upper_name(ggml_cases[i].type));
        size_t len = 0;
        float *want = (float *)qpt_read_file(qpt_fixture(rel), &len);
        QP_CHECK(want && len == 128 * 256 * sizeof(float));
        struct qz_base b = base(ggml_cases[i].spec);
        struct collect c;
        collect_walk(&b, t->data, 128, 256, ggml_cases[i].group, &c);
        QP_CHECK_MSG(memcmp(c.dq, want, len) == 0, "%s differs from llama.cpp", ggml_cases[i].spec);
        free(want), free(c.dq), free(c.codes);
    }
    hx_gguf_close(g);
}

QP_TEST(ggml_codes_should_be_the_stored_quants) {
    // Hand-checkable: one q4_0 block of 32 values -8d..7d, and one q8_0 block of -127..127.
    float x[32];
    for (int j = 0; j < 32; j++) x[j] = (float)(j % 16 - 8) * 0.5f; // max |x| = 4 at -8: d = 0.5
    struct collect c;
    struct qz_base b = base("q4_0");
    collect_walk(&b, x, 1, 32, 32, &c);
    for (int j = 0; j < 32; j++) {
        QP_CHECK_INT_EQ(c.codes[j], j % 16);
        QP_CHECK(c.dq[j] == x[j]);
    }
    free(c.dq), free(c.codes);
    for (int j = 0; j < 32; j++) x[j] = (float)(j * 8 - 127); // -127, -119, ..., 121
    b = base("q8_0");
    collect_walk(&b, x, 1, 32, 32, &c);
    for (int j = 0; j < 32; j++) QP_CHECK_INT_EQ(c.codes[j], j * 8); // q + 127
    free(c.dq), free(c.codes);
}

// ---------------------------------------------------------------------------------------------
// RTN, NF4, FP4

QP_TEST(rtn_nf4_fp4_walk_values_should_reproduce_fake_quant_output) {
    const char *specs[] = {
        "rtn:bits=4:group=32:sym",        "rtn:bits=3:group=50:asym", // partial last group
        "rtn:bits=8:channel:sym",         "rtn:bits=2:tensor:asym",
        "rtn:bits=5:tensor:sym",          "rtn:bits=6:channel:asym",
        "rtn:bits=4:group=16:sym:clip=mse", "rtn:bits=3:group=7:asym:clip=mse",
        "rtn:bits=2:group=64:sym",        "rtn:bits=7:group=128:asym",
        "nf4:group=64",                   "fp4:group=32",
        "nf4:group=50:dq",                "fp4:group=16:dq",
    };
    const int64_t rows = 40, cols = 230; // 230 = 4·50 + 30, = 7·32 + 6
    float *w = test_matrix(rows, cols);
    float *fq = malloc((size_t)(rows * cols) * sizeof(float));
    for (size_t s = 0; s < QP_ARRAY_LEN(specs); s++) {
        struct qz_base b = base(specs[s]);
        struct qz_stats st;
        QP_CHECK_INT_EQ(qz_fake_quant(&b, w, fq, rows, cols, &st), 0);
        int64_t gsz = b.gran == QZ_GROUP ? b.group : b.gran == QZ_CHANNEL ? cols : rows * cols;
        struct collect c;
        collect_walk(&b, w, rows, cols, gsz, &c);
        QP_CHECK_MSG(memcmp(fq, c.dq, (size_t)(rows * cols) * sizeof(float)) == 0,
                     "%s: walk values differ from qz_fake_quant", specs[s]);
        QP_CHECK_INT_EQ(c.n_codes, b.method == QZ_RTN ? (b.sym ? (1 << b.bits) - 1 : 1 << b.bits) : 16);
        QP_CHECK_MSG(count_used(&c) == st.n_codes, "%s: %d codes used, qz_stats says %d",
                     specs[s], count_used(&c), st.n_codes);
        int64_t zeroed = 0;
        for (int64_t i = 0; i < rows * cols; i++) zeroed += w[i] != 0.0f && c.dq[i] == 0.0f;
        QP_CHECK_INT_EQ(zeroed, st.n_zeroed);
        free(c.dq), free(c.codes);
    }
    free(w), free(fq);
}

// nf4/fp4 values are table[code] × the block's stored absmax, whose magnitude is hi (both tables
// span [-1, 1]). With :dq the stored absmax of a block whose absmax is far below the tensor's
// mean can come out negative (its double-quantization error exceeds it), so either sign is
// accepted, the same for the whole group; ctx counts such groups.
struct table_ctx {
    const float *table;
    int negative;
};

static int check_table_group(void *ctx, const struct qz_group *g) {
    struct table_ctx *t = ctx;
    int pos = 1, neg = 1;
    for (int64_t k = 0; k < g->n; k++) {
        pos &= g->dq[k] == t->table[g->codes[k]] * g->hi;
        neg &= g->dq[k] == t->table[g->codes[k]] * -g->hi;
    }
    QP_CHECK_MSG(pos || neg, "row %lld col %lld: values are not table x absmax", (long long)g->row,
                 (long long)g->col);
    t->negative += !pos;
    return 0;
}

QP_TEST(nf4_fp4_values_should_be_table_entry_times_block_absmax) {
    const int64_t rows = 9, cols = 128;
    float *w = test_matrix(rows, cols);
    const char *specs[] = {"nf4:group=64", "fp4:group=32", "nf4:group=64:dq"};
    for (size_t s = 0; s < QP_ARRAY_LEN(specs); s++) {
        struct qz_base b = base(specs[s]);
        struct table_ctx t = {b.method == QZ_NF4 ? qz_nf4_table : qz_fp4_table, 0};
        QP_CHECK_INT_EQ(qz_codes_walk(&b, w, rows, cols, check_table_group, &t, NULL), 0);
        if (!b.dq) QP_CHECK_INT_EQ(t.negative, 0);
        printf("  %-16s groups with a negative stored absmax: %d\n", specs[s], t.negative);
    }
    free(w);
}

QP_TEST(rtn_codes_should_be_offsets_from_the_lowest_grid_code) {
    // rtn 3-bit sym on one group {-3, -1, 0, 2, 3}: scale = fp16(3/3) = 1, q = x, code = q + 3.
    const float x[5] = {-3, -1, 0, 2, 3};
    struct qz_base b = base("rtn:bits=3:group=5:sym");
    struct collect c;
    collect_walk(&b, x, 1, 5, 5, &c);
    const uint8_t want[5] = {0, 2, 3, 5, 6};
    QP_CHECK(memcmp(c.codes, want, 5) == 0);
    for (int i = 0; i < 5; i++) QP_CHECK(c.dq[i] == x[i]);
    free(c.dq), free(c.codes);
}

// ---------------------------------------------------------------------------------------------
// Refusals and control

static int stop_after_one(void *ctx, const struct qz_group *g) {
    (void)g;
    int *calls = ctx;
    return ++*calls == 1 ? -99 : 0;
}

static int count_groups(void *ctx, const struct qz_group *g) {
    (void)g;
    ++*(int *)ctx;
    return 0;
}

QP_TEST(walk_should_refuse_formats_without_codes_and_bad_input) {
    float w[64];
    for (int i = 0; i < 64; i++) w[i] = (float)i / 64.0f;
    char err[QP_ERRLEN] = "";
    int calls = 0;
    const char *nocodes[] = {"f32", "f16", "bf16", "q4_k_m", "gptq:bits=4:group=32",
                             "awq:bits=4:group=32", "smoothquant"};
    for (size_t i = 0; i < QP_ARRAY_LEN(nocodes); i++) {
        struct qz_base b = base(nocodes[i]);
        QP_CHECK_INT_EQ(qz_codes_n(&b), QP_ENOTSUP);
        QP_CHECK_INT_EQ(qz_codes_walk(&b, w, 1, 64, count_groups, &calls, err), QP_ENOTSUP);
    }
    QP_CHECK(strstr(err, "no integer codes") != NULL);
    struct qz_base b = base("q4_0");
    QP_CHECK_INT_EQ(qz_codes_walk(&b, w, 1, 48, count_groups, &calls, err), QP_EINVAL);
    QP_CHECK(strstr(err, "multiple of 32") != NULL);
    b = base("q4_k");
    QP_CHECK_INT_EQ(qz_codes_walk(&b, w, 2, 32, count_groups, &calls, err), QP_EINVAL);
    QP_CHECK_INT_EQ(calls, 0);
    w[37] = NAN;
    b = base("rtn:bits=4:group=8:sym");
    QP_CHECK_INT_EQ(qz_codes_walk(&b, w, 2, 32, count_groups, &calls, err), QP_EINVAL);
    QP_CHECK(strstr(err, "row 1, column 5") != NULL);
    QP_CHECK_INT_EQ(calls, 0);
    w[37] = 0.5f;
    QP_CHECK_INT_EQ(qz_codes_walk(&b, w, 2, 32, stop_after_one, &calls, err), -99);
    QP_CHECK_INT_EQ(calls, 1);
    calls = 0;
    QP_CHECK_INT_EQ(qz_codes_walk(&b, w, 0, 32, count_groups, &calls, err), 0);
    QP_CHECK_INT_EQ(calls, 0);
    QP_CHECK_INT_EQ(qz_codes_walk(&b, w, 2, 32, count_groups, &calls, err), 0);
    QP_CHECK_INT_EQ(calls, 8);
}

// ---------------------------------------------------------------------------------------------
// Into met_grid

static int grid_add(void *ctx, const struct qz_group *g) {
    return met_grid_add(ctx, g->x, g->codes, g->dq, g->n, g->lo, g->hi, NULL);
}

// Feeds one walk into a met_grid, prints the summary, checks the totals and bounds.
static void grid_of(const char *spec, const float *w, int64_t rows, int64_t cols, struct met_grid *g) {
    struct qz_base b = base(spec);
    QP_CHECK_INT_EQ(met_grid_init(g, qz_codes_n(&b)), 0);
    QP_CHECK_INT_EQ(qz_codes_walk(&b, w, rows, cols, grid_add, g, NULL), 0);
    printf("  %-22s collisions %6lld  zeroed %5lld  clipped %4lld  codes/group %6.2f (min %3d)  "
           "entropy %.3f of %.3f bits\n",
           spec, (long long)g->collisions, (long long)g->zeroed, (long long)g->clipped,
           met_grid_mean_codes(g), g->min_codes, met_grid_entropy_bits(g), met_grid_max_bits(g));
    QP_CHECK_INT_EQ(g->weights, rows * cols);
    QP_CHECK(met_grid_entropy_bits(g) <= met_grid_max_bits(g) + 1e-12);
    QP_CHECK_INT_EQ(g->collisions, g->distinct_inputs - g->distinct_codes);
}

QP_TEST(fewer_bits_should_collapse_more_in_met_grid) {
    const int64_t rows = 64, cols = 256;
    float *w = test_matrix(rows, cols);
    // One family, same groups: every bit less merges more inputs and carries less entropy.
    double prev_h = -1;
    int64_t prev_coll = INT64_MAX;
    for (int bits = 2; bits <= 8; bits++) {
        char spec[64];
        snprintf(spec, sizeof spec, "rtn:bits=%d:group=32:sym", bits);
        struct met_grid g;
        grid_of(spec, w, rows, cols, &g);
        double h = met_grid_entropy_bits(&g);
        QP_CHECK(h > prev_h);
        QP_CHECK(g.collisions < prev_coll);
        prev_h = h, prev_coll = g.collisions;
        met_grid_deinit(&g);
    }
    // The llama.cpp types: bounds only (their groups differ in size, so collisions do not order).
    for (size_t t = 0; t < QP_ARRAY_LEN(ggml_cases); t++) {
        struct met_grid g;
        grid_of(ggml_cases[t].spec, w, rows, cols, &g);
        met_grid_deinit(&g);
    }
    free(w);
}
