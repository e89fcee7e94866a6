// test_qdot.c — the act=q8 kernels of every ISA this CPU has (kernels/kn_qdot.h) against the
// scalar references: each weight type's dot product and dot-product tile, each activation
// quantizer, and the table / QPROBE_ISA dispatch.
//
// Tolerance: none. The SIMD kernels are defined to return the reference's bits for every input
// (exact integer parts, the reference's float operations in its order), so results are compared
// with memcmp. Inputs: weights from the real quantizers (quantizers/qz_ggml.h, qz_kquants.h) and
// raw random block bytes with sane fp16 scales; activations from the reference quantizer over
// values with zeros, huge and tiny magnitudes, and raw random bytes (int8 -128 included);
// lengths of 0 to 17 blocks of 32 (whole groups of 8 blocks and remainders) or 1, 3, 7 blocks
// of 256. The references read aligned copies; the kernels under test read the same bytes one
// byte past a 64-byte boundary. ISAs the CPU lacks are reported as skipped.
#include <stdint.h>
#include <stdlib.h>

#include "kn_ops.h"
#include "kn_qdot.h"
#include "kn_types.h"
#include "qp.h"
#include "qp_test.h"
#include "qz_ggml.h"
#include "qz_kquants.h"

// ---------------------------------------------------------------------------------------------
// Helpers

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnext(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}
static float frand(void) { return (float)((rnext() >> 40) * (1.0 / 8388608.0)) - 1.0f; } // [-1, 1)
static int irand(int n) { return (int)(rnext() % (uint64_t)n); }

// The kernels of isa for wtype; skips the case when this CPU runs another ISA's instead.
static const struct kn_qtype *need(int wtype, const char *isa) {
    const struct kn_qtype *q = kn_qtype_for_isa(wtype, isa);
    QP_CHECK(q != NULL);
    if (strcmp(q->isa, isa) != 0) QP_SKIP("this CPU cannot run the %s act=q8 kernels", isa);
    return q;
}

// n floats of activations: per 32-value stretch one magnitude class (zeros, ordinary, tiny,
// subnormal, huge, mixed with exact zeros, or a single spike), so that blocks of every kind meet.
static void fill_act(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i += 32) {
        int kind = irand(7);
        for (int j = 0; j < 32; j++) {
            float v = frand();
            switch (kind) {
            case 0: v = 0.0f; break;
            case 1: v *= 4.0f; break;
            case 2: v *= 1e-30f; break;
            case 3: v *= 1e-40f; break; // subnormal floats
            case 4: v *= 1e30f; break;
            case 5: v = irand(3) == 0 ? 0.0f : v; break;
            default: v = j == 7 ? 100.0f * v : 1e-3f * v; break;
            }
            x[i + j] = v;
        }
    }
}

// A random fp16 scale of ordinary magnitude (2^-14 .. 2^4), either sign.
static uint16_t sane_fp16(void) {
    float v = frand();
    if (v == 0.0f) v = 0.5f;
    return qp_fp32_to_fp16(ldexpf(v, irand(19) - 14));
}

static void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }

// Byte offsets of the fp16 fields (d, and dmin/m where the type has one) of a weight block.
static void fp16_fields(int wtype, int *a, int *b) {
    *a = 0, *b = -1;
    switch (wtype) {
    case KN_Q4_1: case KN_Q5_1: case KN_Q4_K: case KN_Q5_K: *b = 2; break;
    case KN_Q2_K: *a = 80, *b = 82; break;
    case KN_Q3_K: *a = 108; break;
    case KN_Q6_K: *a = 208; break;
    default: break;
    }
}

// A weight row of n values: quantized from random floats by the real quantizer (kind 0),
// random bytes with sane scales (kind 1), or the same with every byte ANDed with 0x33 (kind 2:
// small nibbles and crumbs, so that the integer sums against kind 2 activations are large and
// their products with the scales inexact: a different float order then shows).
static void make_weights(int wtype, uint8_t *w, int64_t n, int kind) {
    const struct kn_type_info *ti = kn_type_info(wtype);
    if (n == 0) return; // the quantizers refuse empty rows
    if (kind == 0) { // the quantizers write aligned blocks: quantize, then copy to w
        float *x = malloc(sizeof(float) * (size_t)n);
        uint8_t *q = qp_alloc(kn_row_bytes(wtype, n));
        for (int64_t i = 0; i < n; i++) x[i] = frand() * (i % 64 < 32 ? 1.0f : 0.01f);
        int rc = ti->block_size == 256 ? qz_quantize_row_k(wtype, x, q, n, NULL)
                                       : qz_quantize_row(wtype, x, q, n, NULL);
        QP_CHECK_INT_EQ(rc, 0);
        memcpy(w, q, kn_row_bytes(wtype, n));
        free(x);
        qp_free(q);
        return;
    }
    int fa, fb;
    fp16_fields(wtype, &fa, &fb);
    for (int64_t b = 0; b < n / ti->block_size; b++) {
        uint8_t *blk = w + (size_t)b * ti->block_bytes;
        for (size_t i = 0; i < ti->block_bytes; i++)
            blk[i] = (uint8_t)(rnext() & (kind == 2 ? 0x33 : 0xff));
        put16(blk + fa, sane_fp16());
        if (fb >= 0) put16(blk + fb, sane_fp16());
    }
}

// An activation row of n values of act_type: the reference quantizer over fill_act's values
// (kind 0), random bytes with a sane scale (kind 1; Q8_K bsums random too), or the same with
// all quants in [64, 127] (kind 2).
static void make_act(const struct kn_qtype *ref, uint8_t *a, int64_t n, int kind) {
    if (kind == 0) {
        float *x = malloc(sizeof(float) * (size_t)(n ? n : 1));
        uint8_t *q = qp_alloc(kn_row_bytes(ref->act_type, n));
        fill_act(x, n);
        ref->quantize_act(x, q, n);
        memcpy(a, q, kn_row_bytes(ref->act_type, n));
        free(x);
        qp_free(q);
        return;
    }
    const struct kn_type_info *ti = kn_type_info(ref->act_type);
    for (int64_t b = 0; b < n / ti->block_size; b++) {
        uint8_t *blk = a + (size_t)b * ti->block_bytes;
        for (size_t i = 0; i < ti->block_bytes; i++)
            blk[i] = (uint8_t)(kind == 2 ? 64 + rnext() % 64 : rnext());
        if (ref->act_type == KN_Q8_K) {
            float d = ldexpf(frand(), -7 - irand(8));
            memcpy(blk, &d, 4);
        } else {
            put16(blk, sane_fp16());
            if (ref->act_type == KN_Q8_1) put16(blk + 2, sane_fp16());
        }
    }
}

// A 64-byte aligned buffer of bytes + 64 and the same bytes one past the boundary.
struct twin {
    uint8_t *al, *mis_buf, *mis;
};

static void twin_make(struct twin *t, const uint8_t *src, size_t bytes) {
    t->al = qp_alloc(bytes + 64);
    t->mis_buf = qp_alloc(bytes + 64);
    QP_CHECK(t->al && t->mis_buf);
    t->mis = t->mis_buf + 1;
    memcpy(t->al, src, bytes);
    memcpy(t->mis, src, bytes);
}

static void twin_free(struct twin *t) {
    qp_free(t->al);
    qp_free(t->mis_buf);
}

// ---------------------------------------------------------------------------------------------
// Dot products

static void check_dot(int wtype, const char *isa) {
    const struct kn_qtype *ref = kn_qtype_for_isa(wtype, "ref"), *q = need(wtype, isa);
    QP_CHECK(ref && ref->act_type == q->act_type);
    const int bs = kn_type_info(wtype)->block_size;
    static const int legacy_blocks[] = {0, 1, 2, 3, 7, 8, 9, 16, 17};
    static const int k_blocks[] = {1, 3, 7};
    const int *nbs = bs == 256 ? k_blocks : legacy_blocks;
    const size_t n_nbs = bs == 256 ? QP_ARRAY_LEN(k_blocks) : QP_ARRAY_LEN(legacy_blocks);
    static const char *kinds[] = {"quantized", "random bytes", "large-sum bytes"};
    int compared = 0, nonzero = 0;
    for (size_t li = 0; li < n_nbs; li++) {
        const int64_t n = (int64_t)nbs[li] * bs;
        const size_t wb = kn_row_bytes(wtype, n), ab = kn_row_bytes(q->act_type, n);
        uint8_t *w = malloc(wb + 1), *a = malloc(ab + 1);
        for (int rep = 0; rep < 72; rep++) {
            const int wk = rep % 3, ak = (rep / 3) % 3;
            make_weights(wtype, w, n, wk);
            make_act(ref, a, n, ak);
            struct twin tw, ta;
            twin_make(&tw, w, wb);
            twin_make(&ta, a, ab);
            const float r = ref->dot(tw.al, ta.al, n);
            const float s = q->dot(tw.mis, ta.mis, n);
            QP_CHECK_MSG(memcmp(&r, &s, sizeof r) == 0,
                         "%s %s dot, %d blocks, weights %s, activations %s: %.9g (ref) vs %.9g",
                         kn_type_info(wtype)->name, isa, nbs[li], kinds[wk], kinds[ak], r, s);
            // Aligned pointers give the same bits too.
            const float s2 = q->dot(tw.al, ta.al, n);
            QP_CHECK(memcmp(&r, &s2, sizeof r) == 0);
            compared++;
            nonzero += r != 0.0f;
            twin_free(&tw);
            twin_free(&ta);
        }
        free(w);
        free(a);
    }
    QP_CHECK(compared > 0 && nonzero > compared / 2); // the cases are not trivially zero
}

QP_TEST(dot_q4_0_avx2_should_equal_reference_bit_for_bit) { check_dot(KN_Q4_0, "avx2"); }
QP_TEST(dot_q4_1_avx2_should_equal_reference_bit_for_bit) { check_dot(KN_Q4_1, "avx2"); }
QP_TEST(dot_q5_0_avx2_should_equal_reference_bit_for_bit) { check_dot(KN_Q5_0, "avx2"); }
QP_TEST(dot_q5_1_avx2_should_equal_reference_bit_for_bit) { check_dot(KN_Q5_1, "avx2"); }
QP_TEST(dot_q8_0_avx2_should_equal_reference_bit_for_bit) { check_dot(KN_Q8_0, "avx2"); }
QP_TEST(dot_iq4_nl_avx2_should_equal_reference_bit_for_bit) { check_dot(KN_IQ4_NL, "avx2"); }
QP_TEST(dot_q2_K_avx2_should_equal_reference_bit_for_bit) { check_dot(KN_Q2_K, "avx2"); }
QP_TEST(dot_q3_K_avx2_should_equal_reference_bit_for_bit) { check_dot(KN_Q3_K, "avx2"); }
QP_TEST(dot_q4_K_avx2_should_equal_reference_bit_for_bit) { check_dot(KN_Q4_K, "avx2"); }
QP_TEST(dot_q5_K_avx2_should_equal_reference_bit_for_bit) { check_dot(KN_Q5_K, "avx2"); }
QP_TEST(dot_q6_K_avx2_should_equal_reference_bit_for_bit) { check_dot(KN_Q6_K, "avx2"); }

// dot_tile: n_rows weight rows (1 to 17: whole groups of 8 and remainders) times n_act
// activation rows (1, 3, and more than the kernels keep at once), all at strides that are
// multiples of nothing, read from misaligned buffers; each output must be the reference dot
// product of its weight row and activation row, bit for bit, and nothing else may be written.
static void check_dot_tile(int wtype, const char *isa) {
    const struct kn_qtype *ref = kn_qtype_for_isa(wtype, "ref"), *q = need(wtype, isa);
    const int bs = kn_type_info(wtype)->block_size;
    static const int legacy_blocks[] = {1, 2, 3, 9, 17};
    static const int k_blocks[] = {1, 2};
    static const int acts[] = {1, 3, 67};
    const int *nbs = bs == 256 ? k_blocks : legacy_blocks;
    const size_t n_nbs = bs == 256 ? QP_ARRAY_LEN(k_blocks) : QP_ARRAY_LEN(legacy_blocks);
    for (size_t li = 0; li < n_nbs; li++)
        for (size_t ai = 0; ai < QP_ARRAY_LEN(acts); ai++)
            for (int n_rows = 1; n_rows <= 17; n_rows += (bs == 256 ? 4 : 1)) {
                const int n_act = acts[ai];
                const int64_t n = (int64_t)nbs[li] * bs;
                const size_t ws = kn_row_bytes(wtype, n) + 3, as = kn_row_bytes(q->act_type, n) + 5;
                const size_t os = (size_t)n_rows + 2;
                uint8_t *w = calloc((size_t)n_rows, ws), *a = calloc((size_t)n_act, as);
                for (int j = 0; j < n_rows; j++) make_weights(wtype, w + (size_t)j * ws, n, (j + n_rows) % 3);
                for (int r = 0; r < n_act; r++) make_act(ref, a + (size_t)r * as, n, (r + n_rows) % 3);
                struct twin tw, ta;
                twin_make(&tw, w, (size_t)n_rows * ws);
                twin_make(&ta, a, (size_t)n_act * as);
                float *out = malloc(sizeof(float) * os * (size_t)n_act);
                for (size_t i = 0; i < os * (size_t)n_act; i++) out[i] = 12345.0f;
                q->dot_tile(tw.mis, ws, n_rows, ta.mis, as, n_act, n, out, os);
                // The reference reads its blocks as structs: aligned copies, rows 64 bytes apart.
                const size_t wa = (ws + 63) / 64 * 64, aa = (as + 63) / 64 * 64;
                uint8_t *wal = qp_alloc((size_t)n_rows * wa), *aal = qp_alloc((size_t)n_act * aa);
                for (int j = 0; j < n_rows; j++) memcpy(wal + (size_t)j * wa, w + (size_t)j * ws, ws);
                for (int r = 0; r < n_act; r++) memcpy(aal + (size_t)r * aa, a + (size_t)r * as, as);
                for (int r = 0; r < n_act; r++) {
                    for (int j = 0; j < n_rows; j++) {
                        const float e = ref->dot(wal + (size_t)j * wa, aal + (size_t)r * aa, n);
                        const float g = out[(size_t)r * os + (size_t)j];
                        QP_CHECK_MSG(memcmp(&e, &g, sizeof e) == 0,
                                     "%s %s dot_tile, %d blocks, %d x %d, row %d act %d: %.9g (ref) vs %.9g",
                                     kn_type_info(wtype)->name, isa, nbs[li], n_rows, n_act, j, r, e, g);
                    }
                    QP_CHECK(out[(size_t)r * os + n_rows] == 12345.0f && out[(size_t)r * os + n_rows + 1] == 12345.0f);
                }
                // The reference tile is its dot product too.
                ref->dot_tile(wal, wa, n_rows, aal, aa, n_act, n, out, os);
                const float e = ref->dot(wal + (size_t)(n_rows - 1) * wa, aal + (size_t)(n_act - 1) * aa, n);
                QP_CHECK(memcmp(&e, &out[(size_t)(n_act - 1) * os + (size_t)(n_rows - 1)], sizeof e) == 0);
                qp_free(wal);
                qp_free(aal);
                twin_free(&tw);
                twin_free(&ta);
                free(w), free(a), free(out);
            }
}

QP_TEST(dot_tile_q4_0_avx2_should_equal_reference_bit_for_bit) { check_dot_tile(KN_Q4_0, "avx2"); }
QP_TEST(dot_tile_q4_1_avx2_should_equal_reference_bit_for_bit) { check_dot_tile(KN_Q4_1, "avx2"); }
QP_TEST(dot_tile_q5_0_avx2_should_equal_reference_bit_for_bit) { check_dot_tile(KN_Q5_0, "avx2"); }
QP_TEST(dot_tile_q5_1_avx2_should_equal_reference_bit_for_bit) { check_dot_tile(KN_Q5_1, "avx2"); }
QP_TEST(dot_tile_q8_0_avx2_should_equal_reference_bit_for_bit) { check_dot_tile(KN_Q8_0, "avx2"); }
QP_TEST(dot_tile_iq4_nl_avx2_should_equal_reference_bit_for_bit) { check_dot_tile(KN_IQ4_NL, "avx2"); }
QP_TEST(dot_tile_k_quants_avx2_should_equal_reference_bit_for_bit) {
    static const int types[] = {KN_Q2_K, KN_Q3_K, KN_Q4_K, KN_Q5_K, KN_Q6_K};
    for (size_t i = 0; i < QP_ARRAY_LEN(types); i++) check_dot_tile(types[i], "avx2");
}

// The AVX512-VNNI tiles (kn_qdot_avx512.c): skipped where the CPU lacks AVX512-VNNI.
QP_TEST(dot_tile_legacy_avx512_should_equal_reference_bit_for_bit) {
    static const int types[] = {KN_Q4_0, KN_Q4_1, KN_Q5_0, KN_Q5_1, KN_Q8_0, KN_IQ4_NL};
    for (size_t i = 0; i < QP_ARRAY_LEN(types); i++) check_dot_tile(types[i], "avx512");
}
QP_TEST(dot_tile_k_quants_avx512_should_equal_reference_bit_for_bit) {
    static const int types[] = {KN_Q2_K, KN_Q3_K, KN_Q4_K, KN_Q5_K, KN_Q6_K};
    for (size_t i = 0; i < QP_ARRAY_LEN(types); i++) check_dot_tile(types[i], "avx512");
}

// x16_dot on the x16 layout (kn_qdot.h), for the entries that have one: weight rows across group
// boundaries and into a short last group (1 .. 70 rows: 1 to 5 groups, so the one-row path runs
// both its KN_XG-group and single-group loops), one activation row (decoding) and several
// (prefill tiles: 2, 3, 67), blocks across the tiles' chunks of 8. Every output the reference
// dot product, bit for bit, and nothing past n_rows written.
static void check_x16(int wtype, const char *isa) {
    const struct kn_qtype *ref = kn_qtype_for_isa(wtype, "ref"), *q = need(wtype, isa);
    if (!q->x16_pack) QP_SKIP("%s %s has no x16 layout", kn_type_info(wtype)->name, isa);
    static const int blocks[] = {1, 2, 9, 17}, acts[] = {1, 2, 3, 67}, rows[] = {1, 5, 16, 17, 33, 64, 70};
    for (size_t li = 0; li < QP_ARRAY_LEN(blocks); li++)
        for (size_t ri = 0; ri < QP_ARRAY_LEN(rows); ri++)
            for (size_t ai = 0; ai < QP_ARRAY_LEN(acts); ai++) {
                const int n_rows = rows[ri], n_act = acts[ai];
                const int64_t n = (int64_t)blocks[li] * 32;
                const size_t ws = kn_row_bytes(wtype, n), as = kn_row_bytes(q->act_type, n) + 5;
                const size_t wa = (ws + 63) / 64 * 64, aa = (as + 63) / 64 * 64, os = (size_t)n_rows + 2;
                uint8_t *wal = qp_alloc((size_t)n_rows * wa), *aal = qp_alloc((size_t)n_act * aa);
                uint8_t *a = calloc((size_t)n_act, as);
                for (int j = 0; j < n_rows; j++) make_weights(wtype, wal + (size_t)j * wa, n, (j + n_rows) % 3);
                for (int r = 0; r < n_act; r++) make_act(ref, a + (size_t)r * as, n, (r + n_rows + (int)li) % 3);
                for (int r = 0; r < n_act; r++) memcpy(aal + (size_t)r * aa, a + (size_t)r * as, as);
                struct twin ta;
                twin_make(&ta, a, (size_t)n_act * as);
                const size_t gb = q->x16_bytes(n);
                QP_CHECK(gb % 64 == 0 && gb >= 16 * ws);
                uint8_t *wx = qp_alloc((size_t)(n_rows + 15) / 16 * gb);
                q->x16_pack(wal, wa, n_rows, n, wx);
                float *out = malloc(sizeof(float) * os * (size_t)n_act);
                for (size_t i = 0; i < os * (size_t)n_act; i++) out[i] = 12345.0f;
                q->x16_dot(wx, n_rows, ta.mis, as, n_act, n, out, os);
                for (int r = 0; r < n_act; r++) {
                    for (int j = 0; j < n_rows; j++) {
                        const float e = ref->dot(wal + (size_t)j * wa, aal + (size_t)r * aa, n);
                        const float g = out[(size_t)r * os + (size_t)j];
                        QP_CHECK_MSG(memcmp(&e, &g, sizeof e) == 0,
                                     "%s %s x16_dot, %d blocks, %d x %d, row %d act %d: %.9g (ref) vs %.9g",
                                     kn_type_info(wtype)->name, isa, blocks[li], n_rows, n_act, j, r, e, g);
                    }
                    QP_CHECK(out[(size_t)r * os + n_rows] == 12345.0f && out[(size_t)r * os + n_rows + 1] == 12345.0f);
                }
                qp_free(wal), qp_free(aal), qp_free(wx), free(a), free(out);
                twin_free(&ta);
            }
}

QP_TEST(x16_dot_q4_0_avx512_should_equal_reference_bit_for_bit) { check_x16(KN_Q4_0, "avx512"); }
QP_TEST(x16_dot_q8_0_avx512_should_equal_reference_bit_for_bit) { check_x16(KN_Q8_0, "avx512"); }

// Extreme integer parts: every weight and activation quant at its most negative / largest value
// (where maddubs could saturate if misused), for each type.
static void check_dot_extremes(int wtype, const char *isa) {
    const struct kn_qtype *ref = kn_qtype_for_isa(wtype, "ref"), *q = need(wtype, isa);
    const struct kn_type_info *ti = kn_type_info(wtype);
    const int64_t n = 2 * (int64_t)ti->block_size + (ti->block_size == 32 ? 8 * 32 : 0);
    const size_t wb = kn_row_bytes(wtype, n), ab = kn_row_bytes(q->act_type, n);
    uint8_t *w = malloc(wb), *a = malloc(ab);
    static const uint8_t wfill[] = {0x00, 0xff, 0x80, 0x7f, 0x88, 0x77};
    static const uint8_t afill[] = {0x80, 0x7f, 0x81, 0x00};
    int fa, fb;
    fp16_fields(wtype, &fa, &fb);
    const struct kn_type_info *ai = kn_type_info(q->act_type);
    for (size_t i = 0; i < QP_ARRAY_LEN(wfill); i++)
        for (size_t k = 0; k < QP_ARRAY_LEN(afill); k++) {
            memset(w, wfill[i], wb);
            memset(a, afill[k], ab);
            for (int64_t b = 0; b < n / ti->block_size; b++) {
                put16(w + b * ti->block_bytes + fa, qp_fp32_to_fp16(0.25f));
                if (fb >= 0) put16(w + b * ti->block_bytes + fb, qp_fp32_to_fp16(-0.125f));
            }
            for (int64_t b = 0; b < n / ai->block_size; b++) {
                uint8_t *blk = a + b * ai->block_bytes;
                if (q->act_type == KN_Q8_K) {
                    float d = 0.01f;
                    memcpy(blk, &d, 4);
                } else {
                    put16(blk, qp_fp32_to_fp16(0.01f));
                    if (q->act_type == KN_Q8_1) put16(blk + 2, qp_fp32_to_fp16(3.0f));
                }
            }
            struct twin tw, ta;
            twin_make(&tw, w, wb);
            twin_make(&ta, a, ab);
            const float r = ref->dot(tw.al, ta.al, n), s = q->dot(tw.mis, ta.mis, n);
            QP_CHECK_MSG(memcmp(&r, &s, sizeof r) == 0, "%s %s weights 0x%02x activations 0x%02x: %.9g vs %.9g",
                         ti->name, isa, wfill[i], afill[k], r, s);
            // The tile too: 17 copies of the row (groups of 16, 8 and 1 rows) times 2 copies of
            // the activation row.
            enum { ROWS = 17, ACTS = 2 };
            uint8_t *wr = malloc(wb * ROWS), *ar = malloc(ab * ACTS);
            float out[ACTS * ROWS];
            for (int j = 0; j < ROWS; j++) memcpy(wr + j * wb, w, wb);
            for (int j = 0; j < ACTS; j++) memcpy(ar + j * ab, a, ab);
            q->dot_tile(wr, wb, ROWS, ar, ab, ACTS, n, out, ROWS);
            for (int j = 0; j < ACTS * ROWS; j++)
                QP_CHECK_MSG(memcmp(&r, &out[j], sizeof r) == 0,
                             "%s %s tile, weights 0x%02x activations 0x%02x, output %d: %.9g vs %.9g", ti->name,
                             isa, wfill[i], afill[k], j, r, out[j]);
            free(wr);
            free(ar);
            twin_free(&tw);
            twin_free(&ta);
        }
    free(w);
    free(a);
}

QP_TEST(dot_avx2_should_equal_reference_on_extreme_quants) {
    static const int types[] = {KN_Q4_0, KN_Q4_1, KN_Q5_0, KN_Q5_1, KN_Q8_0, KN_IQ4_NL,
                                KN_Q2_K, KN_Q3_K, KN_Q4_K, KN_Q5_K, KN_Q6_K};
    for (size_t i = 0; i < QP_ARRAY_LEN(types); i++) check_dot_extremes(types[i], "avx2");
}

QP_TEST(dot_avx512_should_equal_reference_on_extreme_quants) {
    static const int types[] = {KN_Q4_0, KN_Q4_1, KN_Q5_0, KN_Q5_1, KN_Q8_0, KN_IQ4_NL,
                                KN_Q2_K, KN_Q3_K, KN_Q4_K, KN_Q5_K, KN_Q6_K};
    for (size_t i = 0; i < QP_ARRAY_LEN(types); i++) check_dot_extremes(types[i], "avx512");
}

// ---------------------------------------------------------------------------------------------
// Activation quantizers

// Compares the ISA's quantizer with the reference on rows of several lengths, the floats read
// from a misaligned copy, the output written one byte past a 64-byte boundary.
static void check_quant(int wtype, const char *isa, int special) {
    const struct kn_qtype *ref = kn_qtype_for_isa(wtype, "ref"), *q = need(wtype, isa);
    const int bs = kn_type_info(q->act_type)->block_size;
    static const int blocks[] = {0, 1, 2, 3, 5, 8};
    for (size_t li = 0; li < QP_ARRAY_LEN(blocks); li++)
        for (int rep = 0; rep < 6; rep++) {
            const int64_t n = (int64_t)blocks[li] * bs;
            const size_t ab = kn_row_bytes(q->act_type, n);
            float *x = qp_alloc(sizeof(float) * (size_t)n + 64);
            uint8_t *xm_buf = qp_alloc(sizeof(float) * (size_t)n + 64);
            uint8_t *y0 = qp_alloc(ab + 64), *y1_buf = qp_alloc(ab + 64), *y1 = y1_buf + 1;
            fill_act(x, n);
            if (special)
                for (int64_t i = 0; i < n; i++) {
                    int r = irand(16);
                    if (r == 0) x[i] = INFINITY;
                    else if (r == 1) x[i] = -INFINITY;
                    else if (r == 2) x[i] = NAN;
                    else if (r == 3) x[i] = -0.0f;
                    else if (r == 4) x[i] = x[(i + 5) % n]; // ties for the largest magnitude
                }
            memcpy(xm_buf + 1, x, sizeof(float) * (size_t)n);
            memset(y0, 0xa5, ab + 64);
            memset(y1_buf, 0x5a, ab + 64);
            ref->quantize_act(x, y0, n);
            q->quantize_act((const float *)(const void *)(xm_buf + 1), y1, n);
            for (size_t i = 0; i < ab; i++)
                QP_CHECK_MSG(y0[i] == y1[i], "%s %s quantizer, %d blocks, byte %zu: 0x%02x (ref) vs 0x%02x",
                             kn_type_info(q->act_type)->name, isa, blocks[li], i, y0[i], y1[i]);
            QP_CHECK(y1[ab] == 0x5a); // nothing written past the row
            qp_free(x);
            qp_free(xm_buf);
            qp_free(y0);
            qp_free(y1_buf);
        }
}

QP_TEST(quant_q8_0_avx2_should_equal_reference_bit_for_bit) { check_quant(KN_Q4_0, "avx2", 0); }
QP_TEST(quant_q8_1_avx2_should_equal_reference_bit_for_bit) { check_quant(KN_Q4_1, "avx2", 0); }
QP_TEST(quant_q8_K_avx2_should_equal_reference_bit_for_bit) { check_quant(KN_Q4_K, "avx2", 0); }
QP_TEST(quant_avx2_should_equal_reference_on_inf_nan_and_signed_zeros) {
    check_quant(KN_Q4_0, "avx2", 1);
    check_quant(KN_Q4_1, "avx2", 1);
    check_quant(KN_Q4_K, "avx2", 1);
}

// ---------------------------------------------------------------------------------------------
// Tables and dispatch

QP_TEST(qtype_tables_should_pair_every_type_with_the_same_activation_type) {
    static const enum kn_type types[] = {KN_Q4_0, KN_Q4_1, KN_Q5_0, KN_Q5_1, KN_Q8_0, KN_IQ4_NL,
                                KN_Q2_K, KN_Q3_K, KN_Q4_K, KN_Q5_K, KN_Q6_K};
    for (size_t i = 0; i < QP_ARRAY_LEN(types); i++) {
        const struct kn_qtype *r = kn_qtype_for_isa(types[i], "ref");
        const struct kn_qtype *v = kn_qtype_for_isa(types[i], "avx2");
        QP_CHECK(r && v && r->wtype == types[i] && v->wtype == types[i]);
        QP_CHECK_STR_EQ(r->isa, "ref");
        QP_CHECK_INT_EQ(r->act_type, v->act_type);
        QP_CHECK_INT_EQ(r->act_type, types[i] == KN_Q4_1 || types[i] == KN_Q5_1 ? KN_Q8_1
                                     : kn_type_info(types[i])->block_size == 256 ? KN_Q8_K
                                                                                 : KN_Q8_0);
    }
    QP_CHECK(kn_qtype_for_isa(KN_F32, "ref") == NULL);
    QP_CHECK(kn_qtype_for_isa(KN_Q4_0, "sse9") == NULL);
}

// Forces kernel level v (NULL: the best), as the CLI does for QPROBE_ISA, and returns
// kn_qtype_for(KN_Q4_0)'s ISA.
static const char *isa_with_env(const char *v) {
    char err[QP_ERRLEN];
    QP_CHECK_MSG(kn_ops_force(v, err) == 0, "%s", err);
    const struct kn_qtype *q = kn_qtype_for(KN_Q4_0);
    kn_ops_force(NULL, err);
    QP_CHECK(q != NULL);
    return q->isa;
}

QP_TEST(qtype_for_should_follow_qprobe_isa) {
    QP_CHECK_STR_EQ(isa_with_env("ref"), "ref");
    if (!kn_ops_for("avx2") || strcmp(kn_qtype_for_isa(KN_Q4_0, "avx2")->isa, "avx2") != 0)
        QP_SKIP("this CPU cannot run the avx2 act=q8 kernels");
    QP_CHECK_STR_EQ(isa_with_env(NULL), kn_qtype_for_isa(KN_Q4_0, kn_ops_best()->name)->isa);
    QP_CHECK_STR_EQ(isa_with_env("avx2"), "avx2");
}
