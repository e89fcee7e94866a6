// qz_rtn.c — RTN, NF4 and FP4 fake quantization, f16/bf16 casts, and bits-per-weight from the
// layout. The numerics are specified in qz_rtn.h; this file is their plain scalar reference.
//
// Depends on kernels/ headers (qp.h, kn_types.h) and qz_spec.h only; never on harness/.
#include "qz_rtn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kn_blocks.h"
#include "kn_types.h"
#include "qp.h"

// ---------------------------------------------------------------------------------------------
// Code tables.

// NF4: bitsandbytes' NormalFloat4 values (QLoRA, Dettmers et al. 2023, appendix E; bitsandbytes
// functional.py get_4bit_type("nf4") and csrc dDequantizeNF4). Sorted, code i = index i; an
// exact zero at code 7, 7 negative and 8 positive values, normalised to [-1, 1].
const float qz_nf4_table[16] = {
    -1.0f,
    -0.6961928009986877f,
    -0.5250730514526367f,
    -0.39491748809814453f,
    -0.28444138169288635f,
    -0.18477343022823334f,
    -0.09105003625154495f,
    0.0f,
    0.07958029955625534f,
    0.16093020141124725f,
    0.24611230194568634f,
    0.33791524171829224f,
    0.44070982933044434f,
    0.5626170039176941f,
    0.7229568362236023f,
    1.0f,
};

// FP4: bitsandbytes' 4-bit float (csrc dDequantizeFP4Tree): bit 3 is the sign, bits 0..2 a
// magnitude code. The magnitudes are an e2m1 format with a subnormal, {0, 0.0625, 2, 3, 4, 6, 8,
// 12} divided by 12: code 0 → 0, 1 → 0.0052083, 2 → 2/3, 3 → 1, 4 → 1/3, 5 → 1/2, 6 → 1/6,
// 7 → 1/4. Code 8 is a negative zero.
const float qz_fp4_table[16] = {
    0.0f,  5.208333333e-03f,  0.66666667f,  1.0f,  0.33333333f,  0.5f,  0.16666667f,  0.25f,
    -0.0f, -5.208333333e-03f, -0.66666667f, -1.0f, -0.33333333f, -0.5f, -0.16666667f, -0.25f,
};

// The 8 FP4 magnitude codes in increasing magnitude. The thresholds between neighbours are their
// midpoints, the same numbers as bitsandbytes' dQuantizeFP4 decision tree compares with.
static const int fp4_mag_codes[8] = {0, 1, 6, 7, 4, 5, 2, 3};

// ---------------------------------------------------------------------------------------------
// Helpers.

static float fp16_round(float x) { return qp_fp16_to_fp32(qp_fp32_to_fp16(x)); }

#define FP16_MAX 65504.0f

struct acc {
    double sse;
    int64_t n_zeroed, n_clipped;
    uint64_t used[4]; // bit per code index 0..255
};

static void acc_add(struct acc *a, float x, float y, int code_index, int clipped) {
    double d = (double)y - (double)x;
    a->sse += d * d;
    a->n_zeroed += x != 0.0f && y == 0.0f;
    a->n_clipped += clipped;
    if (code_index >= 0) a->used[code_index >> 6] |= 1ull << (code_index & 63);
}

static int count_codes(const struct acc *a) {
    int n = 0;
    for (int i = 0; i < 4; i++) n += __builtin_popcountll(a->used[i]);
    return n;
}

static int all_finite(const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// ---------------------------------------------------------------------------------------------
// RTN grid.

void qz_grid_fit(const struct qz_base *b, const float *x, int64_t n, float p, struct qz_grid *g) {
    QP_ASSERT(b->bits >= 2 && b->bits <= 8);
    if (b->sym) {
        float amax = 0;
        for (int64_t i = 0; i < n; i++) amax = fmaxf(amax, fabsf(x[i]));
        int qmax = (1 << (b->bits - 1)) - 1;
        g->qmin = -qmax;
        g->qmax = qmax;
        g->zero = 0;
        g->scale = fminf(fp16_round(amax * p / (float)qmax), FP16_MAX);
    } else {
        float lo = 0, hi = 0; // the range always holds 0, so that 0 is a grid point
        for (int64_t i = 0; i < n; i++) lo = fminf(lo, x[i]), hi = fmaxf(hi, x[i]);
        lo *= p, hi *= p;
        int qmax = (1 << b->bits) - 1;
        g->qmin = 0;
        g->qmax = qmax;
        g->scale = fminf(fp16_round((hi - lo) / (float)qmax), FP16_MAX);
        float z = g->scale > 0 ? roundf(-lo / g->scale) : 0;
        g->zero = z < 0 ? 0 : z > (float)qmax ? qmax : (int)z;
    }
}

// The unclamped code of x as a float (may lie outside [qmin, qmax]; no int overflow).
static float grid_code_raw(const struct qz_grid *g, float x) {
    if (g->scale == 0) return (float)g->zero;
    return roundf(x / g->scale) + (float)g->zero;
}

static int grid_clamp(const struct qz_grid *g, float r) {
    return r < (float)g->qmin ? g->qmin : r > (float)g->qmax ? g->qmax : (int)r;
}

int qz_grid_code(const struct qz_grid *g, float x) { return grid_clamp(g, grid_code_raw(g, x)); }

#define CLIP_STEPS 100
#define CLIP_LOWEST 0.2

void qz_rtn_group_grid(const struct qz_base *b, const float *x, int64_t n, struct qz_grid *g) {
    float best_p = 1.0f;
    if (b->clip_mse) {
        double best = INFINITY;
        for (int i = 0; i < CLIP_STEPS; i++) {
            float p = (float)(1.0 - (1.0 - CLIP_LOWEST) * i / (CLIP_STEPS - 1));
            qz_grid_fit(b, x, n, p, g);
            double e = 0;
            for (int64_t k = 0; k < n && e < best; k++) {
                double d = (double)qz_grid_value(g, qz_grid_code(g, x[k])) - x[k];
                e += d * d;
            }
            if (e < best) best = e, best_p = p;
        }
    }
    qz_grid_fit(b, x, n, best_p, g);
}

// One RTN group: x[0..n) → y[0..n) (y may equal x); its grid into *out when out is not NULL.
static void rtn_group(const struct qz_base *b, const float *x, float *y, int64_t n, struct acc *a,
                      struct qz_grid *out) {
    struct qz_grid g;
    qz_rtn_group_grid(b, x, n, &g);
    if (out) *out = g;
    for (int64_t k = 0; k < n; k++) {
        float xk = x[k], r = grid_code_raw(&g, xk);
        int q = grid_clamp(&g, r);
        y[k] = qz_grid_value(&g, q);
        acc_add(a, xk, y[k], q - g.qmin, r < (float)g.qmin || r > (float)g.qmax);
    }
}

static void rtn_tensor(const struct qz_base *b, const float *src, float *dst, int64_t rows,
                       int64_t cols, struct acc *a, struct qz_grid *grids) {
    if (b->gran == QZ_TENSOR) {
        rtn_group(b, src, dst, rows * cols, a, grids);
        return;
    }
    int64_t gs = b->gran == QZ_CHANNEL ? cols : b->group;
    QP_ASSERT(gs >= 1);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c += gs) {
            int64_t off = r * cols + c;
            rtn_group(b, src + off, dst + off, QP_MIN(gs, cols - c), a, grids ? grids++ : NULL);
        }
}

int64_t qz_rtn_group_cols(const struct qz_base *b, int64_t cols) {
    return b->gran == QZ_TENSOR || b->gran == QZ_CHANNEL ? cols : QP_MIN(b->group, cols);
}

int64_t qz_rtn_n_grids(const struct qz_base *b, int64_t rows, int64_t cols) {
    if (b->gran == QZ_TENSOR) return 1;
    return rows * ceil_div(cols, qz_rtn_group_cols(b, cols));
}

// A Q8_0 block holds d·q, d fp16 and q an int8; a grid value is (q − zero)·scale with scale
// fp16-representable and |q − zero| < 2^9, a product exact in fp32. So a block whose weights
// share one grid (groups of a multiple of 32 along the row) is exactly a Q8_0 block with
// d = scale and q − zero in [−128, 127]: the two dequantize to the same floats. Every weight is
// checked (a value off its grid, a wider code, a scale fp16 cannot hold: not exact).
int qz_grid_q8_0_exact(const float *v, int64_t rows, int64_t cols, const struct qz_grid *grids, int64_t group_cols,
                       int tensor_grid, struct kn_block_q8_0 *out) {
    if (cols % 32 || (!tensor_grid && group_cols % 32 && group_cols != cols)) return 1;
    const int64_t gpr = tensor_grid ? 1 : ceil_div(cols, group_cols);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c += 32) {
            const struct qz_grid *g = tensor_grid ? grids : &grids[r * gpr + c / group_cols];
            const float d = g->scale, *x = v + r * cols + c;
            uint16_t h = qp_fp32_to_fp16(d);
            if (qp_fp16_to_fp32(h) != d) return 1;
            struct kn_block_q8_0 *blk = &out[(r * cols + c) / 32];
            blk->d = h;
            for (int k = 0; k < 32; k++) {
                // The code: exact when x[k] is on the grid; with d = 0, -1 makes the -0 that
                // (q − zero)·0 gives for a negative q − zero.
                float m = d > 0 ? x[k] / d : signbit(x[k]) ? -1.0f : 0.0f, y;
                if (!(m >= -128.0f && m <= 127.0f) || m != truncf(m)) return 1;
                blk->qs[k] = (int8_t)m;
                y = (float)blk->qs[k] * d; // what dequantization gives, bit for bit
                if (memcmp(&y, &x[k], sizeof y)) return 1;
            }
        }
    return 0;
}

// ---------------------------------------------------------------------------------------------
// NF4 / FP4.

// The 4-bit code of v = x / absmax (in [-1, 1]): the count of midpoints strictly below v, so a
// value exactly on a midpoint takes the lower code (NF4) or smaller magnitude (FP4), as
// bitsandbytes' '>' comparisons do.
static int nf4_code(float v) {
    int c = 0;
    for (int i = 0; i < 15; i++) c += v > 0.5f * (qz_nf4_table[i] + qz_nf4_table[i + 1]);
    return c;
}

static int fp4_code(float v) {
    int sign = v < 0 ? 8 : 0;
    float m = fabsf(v);
    int k = 0;
    for (int i = 0; i < 7; i++)
        k += m > 0.5f * (qz_fp4_table[fp4_mag_codes[i]] + qz_fp4_table[fp4_mag_codes[i + 1]]);
    return fp4_mag_codes[k] | sign;
}

// bitsandbytes' signed dynamic 8-bit map (functional.create_dynamic_map(signed=True,
// max_exponent_bits=7, total_bits=8)): for decade i = 0..6, the midpoints of 2^i + 1 points
// spaced evenly on [0.1, 1], times 10^(i-6), with both signs; plus 0 and 1; sorted (256 values).
// Computed in double and rounded to float, so a value may differ from bitsandbytes' float32
// construction in the last place.
static void dynamic_map(float map[256]) {
    double v[256];
    int n = 0;
    for (int i = 0; i < 7; i++) {
        int pts = (1 << i) + 1;
        double dec = pow(10.0, i - 6);
        for (int k = 0; k + 1 < pts; k++) {
            double lo = 0.1 + 0.9 * k / (pts - 1), hi = 0.1 + 0.9 * (k + 1) / (pts - 1);
            double mid = 0.5 * (lo + hi);
            v[n++] = dec * mid;
            v[n++] = -dec * mid;
        }
    }
    v[n++] = 0.0;
    v[n++] = 1.0;
    QP_ASSERT(n == 256);
    for (int i = 1; i < n; i++) // insertion sort: 256 values, once per dq tensor
        for (int j = i; j > 0 && v[j - 1] > v[j]; j--) {
            double t = v[j];
            v[j] = v[j - 1], v[j - 1] = t;
        }
    for (int i = 0; i < n; i++) map[i] = (float)v[i];
}

// Nearest map entry to v (map sorted); ties to the larger.
static int map_nearest(const float map[256], float v) {
    int lo = 0, hi = 255;
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (map[mid] <= v) lo = mid;
        else hi = mid;
    }
    if (v <= map[lo]) return lo;
    return v - map[lo] < map[hi] - v ? lo : hi;
}

#define DQ_BLOCK 256

// Double-quantizes am[0..nb) into amq (the absmax values the packed tensor reproduces).
static void double_quant(const float *am, float *amq, int64_t nb) {
    float map[256];
    dynamic_map(map);
    double sum = 0;
    for (int64_t i = 0; i < nb; i++) sum += am[i];
    float mean = nb ? (float)(sum / (double)nb) : 0.0f;
    for (int64_t s = 0; s < nb; s += DQ_BLOCK) {
        int64_t e = QP_MIN(s + DQ_BLOCK, nb);
        float amax2 = 0;
        for (int64_t i = s; i < e; i++) amax2 = fmaxf(amax2, fabsf(am[i] - mean));
        float inv = amax2 > 0 ? 1.0f / amax2 : 0.0f;
        for (int64_t i = s; i < e; i++) {
            int c = map_nearest(map, (am[i] - mean) * inv);
            amq[i] = map[c] * amax2 + mean;
        }
    }
}

static int nfp4_tensor(const struct qz_base *b, const float *src, float *dst, int64_t rows,
                       int64_t cols, struct acc *a) {
    int64_t gs = b->group;
    QP_ASSERT(gs >= 1);
    int64_t per_row = ceil_div(cols, gs), nb = rows * per_row;
    const float *table = b->method == QZ_NF4 ? qz_nf4_table : qz_fp4_table;
    int (*code_of)(float) = b->method == QZ_NF4 ? nf4_code : fp4_code;
    float *amq = NULL;
    if (b->dq && nb > 0 && !(amq = qz_nfp4_dq_absmax(src, rows, cols, gs))) return QP_ENOMEM;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < per_row; j++) {
            int64_t off = r * cols + j * gs, n = QP_MIN(gs, cols - j * gs);
            const float *x = src + off;
            float *y = dst + off;
            float amax = qz_block_absmax(x, n);
            float scale = b->dq ? amq[r * per_row + j] : amax; // the stored absmax
            float inv = amax > 0 ? 1.0f / amax : 0.0f;         // codes from the exact absmax
            for (int64_t k = 0; k < n; k++) {
                float xk = x[k];
                int c = code_of(xk * inv);
                y[k] = table[c] * scale;
                acc_add(a, xk, y[k], c, 0);
            }
        }
    qp_free(amq);
    return 0;
}

int qz_nf4_code(float v) { return nf4_code(v); }

int qz_fp4_code(float v) { return fp4_code(v); }

float qz_block_absmax(const float *x, int64_t n) {
    float m = 0;
    for (int64_t k = 0; k < n; k++) m = fmaxf(m, fabsf(x[k]));
    return m;
}

float *qz_nfp4_dq_absmax(const float *w, int64_t rows, int64_t cols, int64_t group) {
    int64_t per_row = ceil_div(cols, group), nb = rows * per_row;
    float *am = qp_alloc_array((size_t)nb + 1, sizeof(float));
    float *amq = qp_alloc_array((size_t)nb + 1, sizeof(float));
    if (!am || !amq) {
        qp_free(am), qp_free(amq);
        return NULL;
    }
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < per_row; j++) {
            am[r * per_row + j] = qz_block_absmax(w + r * cols + j * group, QP_MIN(group, cols - j * group));
        }
    double_quant(am, amq, nb);
    qp_free(am);
    return amq;
}

// ---------------------------------------------------------------------------------------------
// Public entry points.

int qz_fake_quant(const struct qz_base *b, const float *src, float *dst, int64_t rows, int64_t cols,
                  struct qz_stats *st) {
    return qz_fake_quant_grids(b, src, dst, rows, cols, st, NULL);
}

int qz_fake_quant_grids(const struct qz_base *b, const float *src, float *dst, int64_t rows, int64_t cols,
                        struct qz_stats *st, struct qz_grid *grids) {
    QP_ASSERT(rows >= 0 && cols >= 0);
    int64_t n = rows * cols;
    struct acc a = {0};
    int rc = 0, has_codes = 1;
    switch (b->method) {
    case QZ_F32:
    case QZ_F16:
    case QZ_BF16:
        has_codes = 0;
        for (int64_t i = 0; i < n; i++) {
            float x = src[i], y = x;
            if (b->method == QZ_F16) y = qp_fp16_to_fp32(qp_fp32_to_fp16(x));
            else if (b->method == QZ_BF16) y = qp_bf16_to_fp32(qp_fp32_to_bf16(x));
            dst[i] = y;
            acc_add(&a, x, y, -1, isfinite(x) && !isfinite(y));
        }
        break;
    case QZ_RTN:
        if (!all_finite(src, n)) return QP_EINVAL;
        rtn_tensor(b, src, dst, rows, cols, &a, grids);
        break;
    case QZ_NF4:
    case QZ_FP4:
        if (!all_finite(src, n)) return QP_EINVAL;
        rc = nfp4_tensor(b, src, dst, rows, cols, &a);
        break;
    default: return QP_ENOTSUP;
    }
    if (rc) return rc;
    if (st) {
        st->n = n;
        st->bits = qz_tensor_bits(b, rows, cols);
        st->bytes = (st->bits + 7) / 8;
        st->bpw = n ? (double)st->bits / (double)n : 0.0;
        st->sse = a.sse;
        st->n_zeroed = a.n_zeroed;
        st->n_clipped = a.n_clipped;
        st->n_codes = has_codes ? count_codes(&a) : 0;
    }
    return 0;
}

// Bits of a uniform-grid layout: B-bit codes, per group an fp16 scale and (asym) a B-bit zero.
static int64_t grid_bits(int bits, bool sym, int64_t n_groups, int64_t n) {
    return (int64_t)bits * n + n_groups * (16 + (sym ? 0 : bits));
}

static int64_t ggml_bits(int type, int64_t rows, int64_t cols) {
    const struct kn_type_info *t = kn_type_info(type);
    QP_ASSERT(t);
    return rows * ceil_div(cols, t->block_size) * (int64_t)t->block_bytes * 8;
}

int64_t qz_tensor_bits(const struct qz_base *b, int64_t rows, int64_t cols) {
    QP_ASSERT(rows >= 0 && cols >= 0);
    int64_t n = rows * cols;
    switch (b->method) {
    case QZ_F32: return 32 * n;
    case QZ_F16:
    case QZ_BF16: return 16 * n;
    case QZ_RTN: {
        int64_t ng = b->gran == QZ_TENSOR ? (n > 0) : b->gran == QZ_CHANNEL ? rows
                                                     : rows * ceil_div(cols, b->group);
        return grid_bits(b->bits, b->sym, ng, n);
    }
    case QZ_NF4:
    case QZ_FP4: {
        int64_t nb = rows * ceil_div(cols, b->group);
        if (!b->dq) return 4 * n + 32 * nb;
        return 4 * n + 8 * nb + 32 * ceil_div(nb, DQ_BLOCK) + (nb > 0 ? 32 : 0);
    }
    case QZ_GGML:
    case QZ_GGML_MIX: return ggml_bits(b->ggml_type, rows, cols);
    case QZ_GPTQ:
        if (b->ggml_type >= 0) return ggml_bits(b->ggml_type, rows, cols);
        return grid_bits(b->bits, b->sym, rows * ceil_div(cols, b->group), n) +
               (b->actorder && !b->static_groups ? 32 * cols : 0);
    case QZ_AWQ: return grid_bits(b->bits, b->sym, rows * ceil_div(cols, b->group), n);
    case QZ_QAT: // as rtn:group=G, or as its llama.cpp type
        if (b->ggml_type >= 0) return ggml_bits(b->ggml_type, rows, cols);
        return grid_bits(b->bits, b->sym, rows * ceil_div(cols, b->group), n);
    case QZ_SMOOTHQUANT: return 8 * n + 16 * rows;
    }
    QP_ASSERT(!"bad qz_method");
}

double qz_bits_per_weight(const struct qz_base *b, int64_t rows, int64_t cols) {
    int64_t n = rows * cols;
    return n > 0 ? (double)qz_tensor_bits(b, rows, cols) / (double)n : 0.0;
}
