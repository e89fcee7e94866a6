// qz_codes.c — codes per group for every weight format (qz_codes.h): RTN/NF4/FP4 through the
// grid and code functions qz_fake_quant itself uses, llama.cpp types by quantizing each row with
// qz_quantize_row / qz_quantize_row_k and decoding the blocks.
//
// Block decoding follows the layouts documented in kernels/kn_blocks.h and kn_blocks_k.h. Each
// format's value of a code is one expression (code_value below), written with the same float
// operations in the same order as kernels/kn_dequant*.c, and used both for the dequantized
// values and for the grid range, so the two always agree.
//
// Depends on kernels/ headers (qp.h, kn_types.h, kn_blocks.h, kn_blocks_k.h), qz_rtn.h,
// qz_ggml.h and qz_kquants.h; never on metrics/ or harness/.
#include "qz_codes.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "kn_blocks.h"
#include "kn_blocks_k.h"
#include "kn_types.h"
#include "qp.h"
#include "qz_ggml.h"
#include "qz_kquants.h"
#include "qz_rtn.h"

// ---------------------------------------------------------------------------------------------
// The value of a code in one llama.cpp group.

enum val_kind {
    VAL_OFFSET, // (float)(code - off) * d              q8_0 (off 127), q4_0 (8), q5_0 (16)
    VAL_AFFINE, // (float)code * d + m                   q4_1, q5_1
    VAL_IQ4NL,  // d * (float)kn_iq4nl_values[code]      iq4_nl
    VAL_KMIN,   // d * (float)code - m                   q2_k, q4_k, q5_k (d, m: sub-block's)
    VAL_KOFF,   // d * (float)(code - off)               q3_k (off 4), q6_k (off 32)
};

struct group_val {
    enum val_kind kind;
    int off;
    float d, m;
};

static float code_value(const struct group_val *v, int code) {
    switch (v->kind) {
    case VAL_OFFSET: return (float)(code - v->off) * v->d;
    case VAL_AFFINE: return (float)code * v->d + v->m;
    case VAL_IQ4NL: return v->d * (float)kn_iq4nl_values[code];
    case VAL_KMIN: return v->d * (float)code - v->m;
    case VAL_KOFF: return v->d * (float)(code - v->off);
    }
    QP_ASSERT(!"bad val_kind");
}

// ---------------------------------------------------------------------------------------------
// Per-type facts.

struct ggml_fmt {
    int type;
    int n_codes;
    int group;  // values per group (a legacy block, or a k-quant sub-block)
};

static const struct ggml_fmt ggml_fmts[] = {
    {KN_Q8_0, 255, 32}, {KN_Q4_0, 16, 32}, {KN_Q4_1, 16, 32}, {KN_Q5_0, 32, 32},
    {KN_Q5_1, 32, 32},  {KN_IQ4_NL, 16, 32}, {KN_Q2_K, 4, 16}, {KN_Q3_K, 8, 16},
    {KN_Q4_K, 16, 32},  {KN_Q5_K, 32, 32}, {KN_Q6_K, 64, 16},
};

static const struct ggml_fmt *ggml_fmt_of(int type) {
    for (size_t i = 0; i < QP_ARRAY_LEN(ggml_fmts); i++)
        if (ggml_fmts[i].type == type) return &ggml_fmts[i];
    return NULL;
}

static int is_k_type(int type) { return type >= KN_Q2_K && type <= KN_Q6_K; }

int qz_codes_n(const struct qz_base *b) {
    switch (b->method) {
    case QZ_RTN: return b->sym ? (1 << b->bits) - 1 : 1 << b->bits;
    case QZ_NF4:
    case QZ_FP4: return 16;
    case QZ_GGML: {
        const struct ggml_fmt *f = ggml_fmt_of(b->ggml_type);
        return f ? f->n_codes : QP_ENOTSUP;
    }
    default: return QP_ENOTSUP;
    }
}

// ---------------------------------------------------------------------------------------------
// Block decoding: codes[0..block) and one group_val per group of the block.

static uint32_t load_u32le(const uint8_t b[4]) {
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

// Value j of a 32-value block: the low nibble of qs[j] for j < 16, the high nibble of qs[j-16].
static int nibble32(const uint8_t qs[16], int j) { return j < 16 ? qs[j] & 15 : qs[j - 16] >> 4; }

// Q3_K: signed scale of sub-block j (0..15).
static int q3_scale(int j, const uint8_t *s) {
    int lo = j < 8 ? s[j] & 15 : s[j - 8] >> 4;
    int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    return (lo | hi << 4) - 32;
}

// Q2_K/Q3_K low 2 bits of weight k (0..255): byte 32h + l, bits 2s, k = 128h + 32s + l.
static int k_low2(const uint8_t *qs, int k) {
    int h = k / 128, s = (k % 128) / 32, l = k % 32;
    return (qs[32 * h + l] >> (2 * s)) & 3;
}

// Q4_K/Q5_K low nibble of weight k: byte 32h + l holds 64h + l (low) and 64h + 32 + l (high).
static int k_nib4(const uint8_t *qs, int k) {
    int h = k / 64, l = k % 32;
    return (k % 64) < 32 ? qs[32 * h + l] & 15 : qs[32 * h + l] >> 4;
}

// The legacy 32-blocks and IQ4_NL: one group per block. 1 when type is one of them.
static int decode_block32(int type, const void *blk, uint8_t *codes, struct group_val *gv) {
    switch (type) {
    case KN_Q8_0: {
        const struct kn_block_q8_0 *b = blk;
        for (int j = 0; j < 32; j++) {
            QP_ASSERT(b->qs[j] >= -127); // the reference quantizer never writes -128
            codes[j] = (uint8_t)(b->qs[j] + 127);
        }
        gv[0] = (struct group_val){VAL_OFFSET, 127, qp_fp16_to_fp32(b->d), 0};
        return 1;
    }
    case KN_Q4_0: {
        const struct kn_block_q4_0 *b = blk;
        for (int j = 0; j < 32; j++) codes[j] = (uint8_t)nibble32(b->qs, j);
        gv[0] = (struct group_val){VAL_OFFSET, 8, qp_fp16_to_fp32(b->d), 0};
        return 1;
    }
    case KN_Q4_1: {
        const struct kn_block_q4_1 *b = blk;
        for (int j = 0; j < 32; j++) codes[j] = (uint8_t)nibble32(b->qs, j);
        gv[0] = (struct group_val){VAL_AFFINE, 0, qp_fp16_to_fp32(b->d), qp_fp16_to_fp32(b->m)};
        return 1;
    }
    case KN_Q5_0: {
        const struct kn_block_q5_0 *b = blk;
        uint32_t qh = load_u32le(b->qh);
        for (int j = 0; j < 32; j++) codes[j] = (uint8_t)(nibble32(b->qs, j) | ((qh >> j) & 1) << 4);
        gv[0] = (struct group_val){VAL_OFFSET, 16, qp_fp16_to_fp32(b->d), 0};
        return 1;
    }
    case KN_Q5_1: {
        const struct kn_block_q5_1 *b = blk;
        uint32_t qh = load_u32le(b->qh);
        for (int j = 0; j < 32; j++) codes[j] = (uint8_t)(nibble32(b->qs, j) | ((qh >> j) & 1) << 4);
        gv[0] = (struct group_val){VAL_AFFINE, 0, qp_fp16_to_fp32(b->d), qp_fp16_to_fp32(b->m)};
        return 1;
    }
    case KN_IQ4_NL: {
        const struct kn_block_iq4_nl *b = blk;
        for (int j = 0; j < 32; j++) codes[j] = (uint8_t)nibble32(b->qs, j);
        gv[0] = (struct group_val){VAL_IQ4NL, 0, qp_fp16_to_fp32(b->d), 0};
        return 1;
    }
    default: return 0;
    }
}

// The 8 groups of a Q4_K / Q5_K super-block: 6-bit scales and mins packed in scales.
static void k4_groups(const uint8_t *scales, float d, float dmin, struct group_val *gv) {
    for (int j = 0; j < 8; j++) {
        uint8_t sc, m;
        kn_k4_scale_min(j, scales, &sc, &m);
        gv[j] = (struct group_val){VAL_KMIN, 0, d * (float)sc, dmin * (float)m};
    }
}

// The k-quant super-blocks of KN_QK_K weights, 8 or 16 groups. 1 when type is one of them.
static int decode_block_k(int type, const void *blk, uint8_t *codes, struct group_val *gv) {
    switch (type) {
    case KN_Q2_K: {
        const struct kn_block_q2_K *b = blk;
        float d = qp_fp16_to_fp32(b->d), dmin = qp_fp16_to_fp32(b->dmin);
        for (int k = 0; k < KN_QK_K; k++) codes[k] = (uint8_t)k_low2(b->qs, k);
        for (int j = 0; j < 16; j++)
            gv[j] = (struct group_val){VAL_KMIN, 0, d * (float)(b->scales[j] & 15),
                                       dmin * (float)(b->scales[j] >> 4)};
        return 1;
    }
    case KN_Q3_K: {
        const struct kn_block_q3_K *b = blk;
        float d = qp_fp16_to_fp32(b->d);
        for (int k = 0; k < KN_QK_K; k++) {
            int hbit = (b->hmask[k % 32] >> (k / 32)) & 1;
            codes[k] = (uint8_t)(k_low2(b->qs, k) | hbit << 2);
        }
        for (int j = 0; j < 16; j++)
            gv[j] = (struct group_val){VAL_KOFF, 4, d * (float)q3_scale(j, b->scales), 0};
        return 1;
    }
    case KN_Q4_K: {
        const struct kn_block_q4_K *b = blk;
        float d = qp_fp16_to_fp32(b->d), dmin = qp_fp16_to_fp32(b->dmin);
        for (int k = 0; k < KN_QK_K; k++) codes[k] = (uint8_t)k_nib4(b->qs, k);
        k4_groups(b->scales, d, dmin, gv);
        return 1;
    }
    case KN_Q5_K: {
        const struct kn_block_q5_K *b = blk;
        float d = qp_fp16_to_fp32(b->d), dmin = qp_fp16_to_fp32(b->dmin);
        for (int k = 0; k < KN_QK_K; k++) {
            int hbit = (b->qh[k % 32] >> (k / 32)) & 1;
            codes[k] = (uint8_t)(k_nib4(b->qs, k) | hbit << 4);
        }
        k4_groups(b->scales, d, dmin, gv);
        return 1;
    }
    case KN_Q6_K: {
        const struct kn_block_q6_K *b = blk;
        float d = qp_fp16_to_fp32(b->d);
        for (int k = 0; k < KN_QK_K; k++) {
            // ql: byte 64h + 32(s&1) + l, low nibble for s < 2, high for s >= 2;
            // qh: bits 2s of byte 32h + l; k = 128h + 32s + l.
            int h = k / 128, s = (k % 128) / 32, l = k % 32;
            int ql = b->ql[64 * h + 32 * (s & 1) + l];
            int lo4 = s < 2 ? ql & 15 : ql >> 4;
            int hi2 = (b->qh[32 * h + l] >> (2 * s)) & 3;
            codes[k] = (uint8_t)(lo4 | hi2 << 4);
        }
        for (int j = 0; j < 16; j++)
            gv[j] = (struct group_val){VAL_KOFF, 32, d * (float)b->scales[j], 0};
        return 1;
    }
    default: return 0;
    }
}

static void decode_block(int type, const void *blk, uint8_t *codes, struct group_val *gv) {
    if (decode_block32(type, blk, codes, gv) || decode_block_k(type, blk, codes, gv)) return;
    QP_ASSERT(!"decode_block: type without codes");
}

// ---------------------------------------------------------------------------------------------
// Walks.

struct walk {
    qz_group_fn fn;
    void *ctx;
    int n_codes;
    uint8_t *codes; // scratch: one group's codes
    float *dq;      // scratch: one group's values
};

static int emit(struct walk *wk, int64_t row, int64_t col, int64_t n, const float *x, float lo,
                float hi) {
    struct qz_group g = {.row = row, .col = col, .n = n, .x = x, .codes = wk->codes, .dq = wk->dq,
                         .lo = lo, .hi = hi, .n_codes = wk->n_codes};
    return wk->fn(wk->ctx, &g);
}

// One RTN group at x[0..n), with the grid qz_fake_quant fits to it.
static int rtn_group(const struct qz_base *b, struct walk *wk, const float *x, int64_t n,
                     int64_t row, int64_t col) {
    struct qz_grid g;
    qz_rtn_group_grid(b, x, n, &g);
    for (int64_t k = 0; k < n; k++) {
        int q = qz_grid_code(&g, x[k]);
        wk->codes[k] = (uint8_t)(q - g.qmin);
        wk->dq[k] = qz_grid_value(&g, q);
    }
    float a = qz_grid_value(&g, g.qmin), c = qz_grid_value(&g, g.qmax);
    return emit(wk, row, col, n, x, fminf(a, c), fmaxf(a, c));
}

static int walk_rtn(const struct qz_base *b, const float *w, int64_t rows, int64_t cols,
                    struct walk *wk) {
    if (b->gran == QZ_TENSOR) return rows * cols > 0 ? rtn_group(b, wk, w, rows * cols, 0, 0) : 0;
    int64_t gs = b->gran == QZ_CHANNEL ? cols : b->group;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c += gs) {
            int rc = rtn_group(b, wk, w + r * cols + c, QP_MIN(gs, cols - c), r, c);
            if (rc) return rc;
        }
    return 0;
}

// NF4/FP4 blocks of G along each row; amq (dq only) holds the stored absmax of every block.
static int walk_nfp4(const struct qz_base *b, const float *w, int64_t rows, int64_t cols,
                     const float *amq, struct walk *wk) {
    const float *table = b->method == QZ_NF4 ? qz_nf4_table : qz_fp4_table;
    int (*code_of)(float) = b->method == QZ_NF4 ? qz_nf4_code : qz_fp4_code;
    int64_t gs = b->group, per_row = (cols + gs - 1) / gs;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < per_row; j++) {
            const float *x = w + r * cols + j * gs;
            int64_t n = QP_MIN(gs, cols - j * gs);
            float amax = qz_block_absmax(x, n);
            float scale = amq ? amq[r * per_row + j] : amax; // as qz_fake_quant: codes from the
            float inv = amax > 0 ? 1.0f / amax : 0.0f;        // exact absmax, values from the stored
            for (int64_t k = 0; k < n; k++) {
                int c = code_of(x[k] * inv);
                wk->codes[k] = (uint8_t)c;
                wk->dq[k] = table[c] * scale;
            }
            float lo = INFINITY, hi = -INFINITY;
            for (int c = 0; c < 16; c++) {
                float v = table[c] * scale;
                lo = fminf(lo, v), hi = fmaxf(hi, v);
            }
            int rc = emit(wk, r, j * gs, n, x, lo, hi);
            if (rc) return rc;
        }
    return 0;
}

static int walk_ggml(int type, const float *w, int64_t rows, int64_t cols, struct walk *wk,
                     void *rowbuf) {
    const struct ggml_fmt *f = ggml_fmt_of(type);
    const struct kn_type_info *ti = kn_type_info(type);
    QP_ASSERT(f && ti);
    int bs = ti->block_size, gpb = bs / f->group; // groups per block
    struct group_val gv[KN_QK_K / 16];
    uint8_t codes[KN_QK_K];
    for (int64_t r = 0; r < rows; r++) {
        const float *x = w + r * cols;
        int rc = is_k_type(type) ? qz_quantize_row_k(type, x, rowbuf, cols, NULL)
                                 : qz_quantize_row(type, x, rowbuf, cols, NULL);
        QP_ASSERT(rc == 0); // type and length were checked by the caller
        for (int64_t blk = 0; blk < cols / bs; blk++) {
            decode_block(type, (const uint8_t *)rowbuf + blk * (int64_t)ti->block_bytes, codes, gv);
            for (int g = 0; g < gpb; g++) {
                const struct group_val *v = &gv[g];
                for (int k = 0; k < f->group; k++) {
                    int c = codes[g * f->group + k];
                    wk->codes[k] = (uint8_t)c;
                    wk->dq[k] = code_value(v, c);
                }
                float lo = INFINITY, hi = -INFINITY;
                for (int c = 0; c < f->n_codes; c++) {
                    float val = code_value(v, c);
                    lo = fminf(lo, val), hi = fmaxf(hi, val);
                }
                int64_t col = blk * bs + (int64_t)g * f->group;
                if ((rc = emit(wk, r, col, f->group, x + col, lo, hi))) return rc;
            }
        }
    }
    return 0;
}

int qz_codes_walk(const struct qz_base *b, const float *w, int64_t rows, int64_t cols,
                  qz_group_fn fn, void *ctx, char *err) {
    QP_ASSERT(rows >= 0 && cols >= 0 && fn);
    char name[64];
    if (qz_base_print(b, name, sizeof name) < 0) snprintf(name, sizeof name, "?");
    int n_codes = qz_codes_n(b);
    if (n_codes < 0)
        return qp_fail(err, QP_ENOTSUP, "format '%s' has no integer codes to walk%s", name,
                       b->method == QZ_GGML_MIX ? " (resolve the mix to its per-tensor type)" : "");
    if (rows == 0 || cols == 0) return 0; // no groups
    for (int64_t i = 0; i < rows * cols; i++)
        if (!isfinite(w[i]))
            return qp_fail(err, QP_EINVAL, "weight at row %lld, column %lld is not finite",
                           (long long)(i / cols), (long long)(i % cols));

    struct walk wk = {.fn = fn, .ctx = ctx, .n_codes = n_codes};
    int64_t cap; // the largest group
    void *rowbuf = NULL;
    float *amq = NULL;
    if (b->method == QZ_GGML) {
        const struct kn_type_info *ti = kn_type_info(b->ggml_type);
        if (cols % ti->block_size)
            return qp_fail(err, QP_EINVAL, "'%s' needs rows of a multiple of %d values, not %lld",
                           name, ti->block_size, (long long)cols);
        cap = KN_QK_K;
        rowbuf = qp_alloc(kn_row_bytes(b->ggml_type, cols) + 1);
    } else if (b->method == QZ_RTN) {
        cap = b->gran == QZ_TENSOR ? rows * cols : b->gran == QZ_CHANNEL ? cols : QP_MIN(b->group, cols);
    } else {
        cap = QP_MIN(b->group, cols);
        if (b->dq && rows * cols > 0 && !(amq = qz_nfp4_dq_absmax(w, rows, cols, b->group)))
            return qp_fail(err, QP_ENOMEM, "cannot allocate the dq absmax of '%s'", name);
    }
    wk.codes = qp_alloc((size_t)cap + 1);
    wk.dq = qp_alloc_array((size_t)cap + 1, sizeof(float));
    int rc;
    if (!wk.codes || !wk.dq || (b->method == QZ_GGML && !rowbuf)) {
        rc = qp_fail(err, QP_ENOMEM, "cannot allocate the scratch of a %lld-value group",
                     (long long)cap);
    } else if (b->method == QZ_GGML) {
        rc = walk_ggml(b->ggml_type, w, rows, cols, &wk, rowbuf);
    } else if (b->method == QZ_RTN) {
        rc = walk_rtn(b, w, rows, cols, &wk);
    } else {
        rc = walk_nfp4(b, w, rows, cols, amq, &wk);
    }
    qp_free(wk.codes), qp_free(wk.dq), qp_free(rowbuf), qp_free(amq);
    return rc;
}
