// kn_qdot.c — activation quantizers and the per-type dot-product table for act=q8 (kn_qdot.h).
//
// The activation quantizers follow what llama.cpp's CPU backend runs on x86 (ggml-cpu at commit
// c392e50), which is what its perplexity figures come from:
//  - q8_0 / q8_1 (its AVX/AVX2 quantize_row_q8_0/_q8_1): d = amax/127 stored as fp16, values
//    multiplied by 127/amax (0 when amax is 0) and rounded to nearest, ties to even; q8_1 also
//    stores s = d * sum(q) as fp16;
//  - q8_K (x86 uses the reference quantize_row_q8_K_ref): iscale = -127/m where m is the value of
//    largest magnitude (first on ties), q = min(127, round_even(iscale*x)), d = 1/iscale as
//    fp32, and 16 partial sums of 16 values each.
// Byte layouts are ggml's (kn_blocks.h, kn_blocks_k.h). These and the dot products of
// kn_vecdot.c / kn_vecdot_k.c are the reference ("ref") kernels; kn_qdot_avx2.c has the AVX2
// ones, and the tables at the end pick between them. Depends on kernels/ only.
#include "kn_qdot.h"

#include <math.h>
#include <string.h>

#include "kn_blocks.h"
#include "kn_blocks_k.h"
#include "kn_cpu.h"
#include "kn_ops.h"
#include "kn_types.h"
#include "qp.h"

_Static_assert(offsetof(struct kn_block_q4_0, d) == 0 && offsetof(struct kn_block_q8_0, d) == 0, "d first");

// ---------------------------------------------------------------------------------------------
// Reference activation quantizers

static void kn_quant_q8_0_ref(const float *x, void *y, int64_t n) {
    uint8_t *out = y;
    for (int64_t b = 0; b < n / 32; b++, out += KN_BYTES(q8_0), x += 32) {
        float amax = 0.0f;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.0f, id = amax != 0.0f ? 127.0f / amax : 0.0f;
        uint16_t dh = qp_fp32_to_fp16(d);
        memcpy(out + KN_OFF(q8_0, d), &dh, 2);
        for (int j = 0; j < 32; j++) out[KN_OFF(q8_0, qs) + j] = (uint8_t)(int8_t)qp_nearest_int(x[j] * id);
    }
}

static void kn_quant_q8_1_ref(const float *x, void *y, int64_t n) {
    uint8_t *out = y;
    for (int64_t b = 0; b < n / 32; b++, out += KN_BYTES(q8_1), x += 32) {
        float amax = 0.0f;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.0f, id = amax != 0.0f ? 127.0f / amax : 0.0f;
        int sum = 0;
        for (int j = 0; j < 32; j++) {
            int q = qp_nearest_int(x[j] * id);
            out[KN_OFF(q8_1, qs) + j] = (uint8_t)(int8_t)q;
            sum += q;
        }
        uint16_t dh = qp_fp32_to_fp16(d), sh = qp_fp32_to_fp16(d * (float)sum);
        memcpy(out + KN_OFF(q8_1, d), &dh, 2);
        memcpy(out + KN_OFF(q8_1, s), &sh, 2);
    }
}

void kn_quant_q8_K_ref(const float *x, void *y, int64_t n) {
    uint8_t *out = y;
    for (int64_t b = 0; b < n / 256; b++, out += KN_BYTES(q8_K), x += 256) {
        float amax = 0.0f, m = 0.0f;
        for (int j = 0; j < 256; j++)
            if (fabsf(x[j]) > amax) {
                amax = fabsf(x[j]);
                m = x[j];
            }
        int8_t *qs = (int8_t *)(out + KN_OFF(q8_K, qs));
        int16_t bsums[16];
        float d = 0.0f;
        if (amax == 0.0f) {
            memset(qs, 0, 256);
            memset(bsums, 0, sizeof bsums);
        } else {
            float iscale = -127.0f / m;
            for (int j = 0; j < 256; j++) {
                int v = qp_nearest_int(iscale * x[j]);
                qs[j] = (int8_t)(v < 127 ? v : 127);
            }
            for (int g = 0; g < 16; g++) {
                int s = 0;
                for (int j = 0; j < 16; j++) s += qs[16 * g + j];
                bsums[g] = (int16_t)s;
            }
            d = 1.0f / iscale;
        }
        memcpy(out + KN_OFF(q8_K, d), &d, 4);
        memcpy(out + KN_OFF(q8_K, bsums), bsums, sizeof bsums);
    }
}

// ---------------------------------------------------------------------------------------------
// Reference dot products (kn_vecdot.c, kn_vecdot_k.c) under the struct's signature

// kn_dot_<w>_<a>_ref and kn_dot_tile_<w>_<a>_ref (one dot per output) for weight type wt; fn
// is kn_vec_dot_ref or kn_vec_dot_k_ref.
#define KN_DOT(w, a, wt, fn)                                                                   \
    static float kn_dot_##w##_##a##_ref(const void *x, const void *y, int64_t n) {             \
        return fn(wt, x, y, n);                                                                \
    }                                                                                          \
    static void kn_dot_tile_##w##_##a##_ref(const void *x, size_t x_stride, int n_rows,        \
                                            const void *y, size_t y_stride, int n_act,         \
                                            int64_t n, float *out, size_t out_stride) {        \
        for (int r = 0; r < n_act; r++)                                                        \
            for (int j = 0; j < n_rows; j++)                                                   \
                out[(size_t)r * out_stride + j] = fn(wt, (const uint8_t *)x + (size_t)j * x_stride, \
                                                     (const uint8_t *)y + (size_t)r * y_stride, n); \
    }
KN_DOT(q4_0, q8_0, KN_Q4_0, kn_vec_dot_ref)
KN_DOT(q4_1, q8_1, KN_Q4_1, kn_vec_dot_ref)
KN_DOT(q5_0, q8_0, KN_Q5_0, kn_vec_dot_ref)
KN_DOT(q5_1, q8_1, KN_Q5_1, kn_vec_dot_ref)
KN_DOT(q8_0, q8_0, KN_Q8_0, kn_vec_dot_ref)
KN_DOT(iq4_nl, q8_0, KN_IQ4_NL, kn_vec_dot_ref)
KN_DOT(q2_K, q8_K, KN_Q2_K, kn_vec_dot_k_ref)
KN_DOT(q3_K, q8_K, KN_Q3_K, kn_vec_dot_k_ref)
KN_DOT(q4_K, q8_K, KN_Q4_K, kn_vec_dot_k_ref)
KN_DOT(q5_K, q8_K, KN_Q5_K, kn_vec_dot_k_ref)
KN_DOT(q6_K, q8_K, KN_Q6_K, kn_vec_dot_k_ref)

// ---------------------------------------------------------------------------------------------
// The x16 layouts (kn_qdot.h): bytes moved, nothing computed.

size_t kn_q4_0x16_bytes(int64_t n) { return ((size_t)(n / 32) * 16 * KN_BYTES(q4_0) + 63) & ~(size_t)63; }
size_t kn_q8_0x16_bytes(int64_t n) { return ((size_t)(n / 32) * 16 * KN_BYTES(q8_0) + 63) & ~(size_t)63; }

// Both layouts: q8 = 0 for Q4_0 (4 bytes of nibbles per row and vector, 4 vectors per block),
// 1 for Q8_0 (4 values per row and vector as w XOR 0x80, 8 vectors).
static void kn_x16_pack(int q8, const void *w, size_t w_stride, int n_rows, int64_t n, void *dst) {
    const int64_t nb = n / 32;
    const size_t gb = q8 ? kn_q8_0x16_bytes(n) : kn_q4_0x16_bytes(n), xs = q8 ? KN_BYTES(q8_0) : KN_BYTES(q4_0);
    const int nq = q8 ? 32 : 16, qb = 4 * nq * 4, qs = q8 ? KN_OFF(q8_0, qs) : KN_OFF(q4_0, qs);
    const uint8_t flip = q8 ? 0x80 : 0;
    for (int g = 0; g * 16 < n_rows; g++) {
        uint8_t *q = (uint8_t *)dst + (size_t)g * gb, *d = q + nb * qb;
        memset(q, 0, gb);
        for (int j = 0; j < 16 && g * 16 + j < n_rows; j++) {
            const uint8_t *row = (const uint8_t *)w + (size_t)(g * 16 + j) * w_stride;
            for (int64_t b = 0; b < nb; b++) {
                const uint8_t *blk = row + b * xs; // d first in both block types
                for (int v = 0; v < nq; v++) q[b * qb + 64 * (v / 4) + 4 * j + v % 4] = blk[qs + v] ^ flip;
                memcpy(d + b * 32 + 2 * j, blk, 2);
            }
        }
    }
}

void kn_q4_0x16_pack(const void *w, size_t w_stride, int n_rows, int64_t n, void *dst) {
    kn_x16_pack(0, w, w_stride, n_rows, n, dst);
}

void kn_q8_0x16_pack(const void *w, size_t w_stride, int n_rows, int64_t n, void *dst) {
    kn_x16_pack(1, w, w_stride, n_rows, n, dst);
}

// ---------------------------------------------------------------------------------------------
// Tables, one per ISA, in the same order

#define KN_ENTRY(wt, at, w, a, q, isa)                                                         \
    {wt, at, kn_quant_##q##_##isa, kn_dot_##w##_##a##_##isa, kn_dot_tile_##w##_##a##_##isa, #isa, NULL, NULL, NULL}
#define KN_ENTRIES(isa)                                                                        \
    KN_ENTRY(KN_Q4_0, KN_Q8_0, q4_0, q8_0, q8_0, isa),                                         \
    KN_ENTRY(KN_Q4_1, KN_Q8_1, q4_1, q8_1, q8_1, isa),                                         \
    KN_ENTRY(KN_Q5_0, KN_Q8_0, q5_0, q8_0, q8_0, isa),                                         \
    KN_ENTRY(KN_Q5_1, KN_Q8_1, q5_1, q8_1, q8_1, isa),                                         \
    KN_ENTRY(KN_Q8_0, KN_Q8_0, q8_0, q8_0, q8_0, isa),                                         \
    KN_ENTRY(KN_IQ4_NL, KN_Q8_0, iq4_nl, q8_0, q8_0, isa),                                     \
    KN_ENTRY(KN_Q2_K, KN_Q8_K, q2_K, q8_K, q8_K, isa),                                         \
    KN_ENTRY(KN_Q3_K, KN_Q8_K, q3_K, q8_K, q8_K, isa),                                         \
    KN_ENTRY(KN_Q4_K, KN_Q8_K, q4_K, q8_K, q8_K, isa),                                         \
    KN_ENTRY(KN_Q5_K, KN_Q8_K, q5_K, q8_K, q8_K, isa),                                         \
    KN_ENTRY(KN_Q6_K, KN_Q8_K, q6_K, q8_K, q8_K, isa)

static const struct kn_qtype kn_qtypes_ref[] = {KN_ENTRIES(ref)};
static const struct kn_qtype kn_qtypes_avx2[] = {KN_ENTRIES(avx2)};
_Static_assert(QP_ARRAY_LEN(kn_qtypes_ref) == QP_ARRAY_LEN(kn_qtypes_avx2), "one entry per ISA");

// AVX512-VNNI: the tiles of kn_qdot_avx512.c; quantizers and one-row dot products stay AVX2's
// (they are memory- or latency-bound, and give the same bits).
#define KN_ENTRY512(wt, at, w, a, q)                                                           \
    {wt, at, kn_quant_##q##_avx2, kn_dot_##w##_##a##_avx2, kn_dot_tile_##w##_##a##_avx512, "avx512", NULL, NULL, NULL}
static const struct kn_qtype kn_qtypes_avx512[] = {
    {KN_Q4_0, KN_Q8_0, kn_quant_q8_0_avx2, kn_dot_q4_0_q8_0_avx2, kn_dot_tile_q4_0_q8_0_avx512, "avx512",
     kn_q4_0x16_bytes, kn_q4_0x16_pack, kn_dot_x16_q4_0_q8_0_avx512},
       KN_ENTRY512(KN_Q4_1, KN_Q8_1, q4_1, q8_1, q8_1),
    KN_ENTRY512(KN_Q5_0, KN_Q8_0, q5_0, q8_0, q8_0),     KN_ENTRY512(KN_Q5_1, KN_Q8_1, q5_1, q8_1, q8_1),
    {KN_Q8_0, KN_Q8_0, kn_quant_q8_0_avx2, kn_dot_q8_0_q8_0_avx2, kn_dot_tile_q8_0_q8_0_avx512, "avx512",
     kn_q8_0x16_bytes, kn_q8_0x16_pack, kn_dot_x16_q8_0_q8_0_avx512},
       KN_ENTRY512(KN_IQ4_NL, KN_Q8_0, iq4_nl, q8_0, q8_0),
    KN_ENTRY512(KN_Q2_K, KN_Q8_K, q2_K, q8_K, q8_K),     KN_ENTRY512(KN_Q3_K, KN_Q8_K, q3_K, q8_K, q8_K),
    KN_ENTRY512(KN_Q4_K, KN_Q8_K, q4_K, q8_K, q8_K),     KN_ENTRY512(KN_Q5_K, KN_Q8_K, q5_K, q8_K, q8_K),
    KN_ENTRY512(KN_Q6_K, KN_Q8_K, q6_K, q8_K, q8_K),
};
_Static_assert(QP_ARRAY_LEN(kn_qtypes_ref) == QP_ARRAY_LEN(kn_qtypes_avx512), "one entry per ISA");

const struct kn_qtype *kn_qtype_for_isa(enum kn_type wtype, const char *isa) {
    const struct kn_qtype *table;
    if (strcmp(isa, "ref") == 0)
        table = kn_qtypes_ref;
    else if (strcmp(isa, "avx512") == 0 && kn_cpu()->avx512_vnni)
        table = kn_qtypes_avx512;
    else if (strcmp(isa, "avx2") == 0 || strcmp(isa, "avx512") == 0)
        table = kn_cpu()->avx2 ? kn_qtypes_avx2 : kn_qtypes_ref;
    else
        return NULL;
    for (size_t i = 0; i < QP_ARRAY_LEN(kn_qtypes_ref); i++)
        if (table[i].wtype == wtype) return &table[i];
    return NULL;
}

const struct kn_qtype *kn_qtype_for(enum kn_type wtype) {
    return kn_qtype_for_isa(wtype, kn_ops_best()->name);
}
