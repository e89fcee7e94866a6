// qz_qat.c — the `qat:` spec and the learnable fake-quantization grid of QAT (qz_qat.h): parse
// and print, initialisation from RTN or llama.cpp's quantizer, the forward (fake quantization),
// the straight-through and LSQ gradients, fp16 rounding and block packing.
//
// Depends on kernels/ (qp.h, kn_types.h, kn_blocks.h), quantizers/ (qz_spec.h, qz_rtn.h,
// qz_ggml.h) and libc; never on harness/.
#include "qz_qat.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "kn_blocks.h"
#include "kn_types.h"
#include "qp.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#include "qz_ggml.h"
#include "qz_rtn.h"

// ---------------------------------------------------------------------------------------------
// Spec

static const struct {
    const char *name;
    int type, z, qmin, qmax, has_min;
} qat_types[] = {
    {"q4_0", KN_Q4_0, 8, 0, 15, 0},  {"q4_1", KN_Q4_1, 0, 0, 15, 1},   {"q5_0", KN_Q5_0, 16, 0, 31, 0},
    {"q5_1", KN_Q5_1, 0, 0, 31, 1},  {"q8_0", KN_Q8_0, 0, -128, 127, 0},
};

static int qat_type_index(int type) {
    for (size_t i = 0; i < QP_ARRAY_LEN(qat_types); i++)
        if (qat_types[i].type == type) return (int)i;
    return -1;
}

static int qat_why(char *why, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int qat_why(char *why, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, cap, fmt, ap);
    va_end(ap);
    return QP_EINVAL;
}

// One option "key=value" or flag into b; seen collects the keys given.
static int qat_opt(const char *t, struct qz_base *b, unsigned *seen, char *why, size_t cap) {
    static const char *const keys[] = {"bits", "group", "asym", "steps", "lr", "init", "seed", "ce", "type"};
    const char *eq = strchr(t, '=');
    size_t klen = eq ? (size_t)(eq - t) : strlen(t);
    const char *val = eq ? eq + 1 : "";
    int k = -1;
    for (size_t i = 0; i < QP_ARRAY_LEN(keys) - 1; i++)
        if (klen == strlen(keys[i]) && strncmp(t, keys[i], klen) == 0) k = (int)i;
    int ti = -1;
    if (k < 0 && !eq) {
        for (size_t i = 0; i < QP_ARRAY_LEN(qat_types); i++)
            if (strcasecmp(t, qat_types[i].name) == 0) ti = (int)i, k = 8;
        static const char *const untrained[] = {"q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "iq4_nl",
                                                "q3_k_m", "q4_k_m", "q5_k_m"};
        int other = 0;
        for (size_t i = 0; i < QP_ARRAY_LEN(untrained); i++) other |= strcasecmp(t, untrained[i]) == 0;
        if (ti < 0 && other)
            return qat_why(why, cap, "qat:%.16s: only q4_0 q4_1 q5_0 q5_1 q8_0 or bits=B:group=G", t);
    }
    if (k < 0) return qat_why(why, cap, "unknown option '%.28s' of qat", t);
    if (*seen & (1u << k)) return qat_why(why, cap, "qat option '%s' given twice", keys[k]);
    *seen |= 1u << k;
    if ((k == 2 || k == 8) != !eq) return qat_why(why, cap, "qat option '%.28s': %s", t, eq ? "takes no value" : "needs a value");
    int64_t iv = 0;
    double rv = 0;
    switch (k) {
    case 0:
        if (qz_spec_parse_int(val, &iv) || iv < 2 || iv > 8) return qat_why(why, cap, "qat: 'bits=%.12s': bits must be 2..8", val);
        b->bits = (int)iv;
        break;
    case 1:
        if (qz_spec_parse_int(val, &iv) || iv < 1 || iv > QZ_MAX_GROUP)
            return qat_why(why, cap, "qat: 'group=%.12s': group must be an integer 1..%d", val, QZ_MAX_GROUP);
        b->group = iv;
        break;
    case 2: b->sym = false; break;
    case 3:
        if (qz_spec_parse_int(val, &iv) || iv < 1 || iv > QZ_QAT_MAX_STEPS)
            return qat_why(why, cap, "qat: 'steps=%.12s': steps must be an integer 1..%d", val, QZ_QAT_MAX_STEPS);
        b->qat.steps = iv;
        break;
    case 4:
        if (qz_spec_parse_real(val, &rv) || !(rv > 0) || rv > 1)
            return qat_why(why, cap, "qat: 'lr=%.12s': lr must be a number > 0 (at most 1)", val);
        b->qat.lr = rv;
        break;
    case 5:
        if (strcmp(val, "rtn") == 0) b->qat.init = QZ_QAT_INIT_RTN;
        else if (strcmp(val, "gptq") == 0) b->qat.init = QZ_QAT_INIT_GPTQ;
        else return qat_why(why, cap, "qat: 'init=%.12s': init must be rtn or gptq", val);
        break;
    case 6:
        if (qz_spec_parse_int(val, &iv)) return qat_why(why, cap, "qat: 'seed=%.12s': seed must be an integer 0..9999999999", val);
        b->qat.seed = iv;
        break;
    case 7:
        if (qz_spec_parse_real(val, &rv) || !(rv >= 0) || rv > 100)
            return qat_why(why, cap, "qat: 'ce=%.12s': ce must be a number in [0, 100]", val);
        b->qat.ce = rv;
        break;
    default: b->ggml_type = qat_types[ti].type; break;
    }
    return 0;
}

int qz_qat_parse(char *const *opts, int n, bool in_rule, struct qz_base *b, char *why, size_t cap) {
    memset(b, 0, sizeof *b);
    b->method = QZ_QAT;
    b->ggml_type = -1;
    b->gran = QZ_GROUP;
    b->sym = true;
    b->qat.steps = QZ_QAT_DEFAULT_STEPS;
    b->qat.lr = QZ_QAT_DEFAULT_LR;
    b->qat.init = QZ_QAT_INIT_RTN;
    b->qat.seed = QZ_QAT_DEFAULT_SEED;
    if (in_rule) return qat_why(why, cap, "qat trains the whole model; it cannot be a name~ rule");
    unsigned seen = 0;
    for (int i = 0; i < n; i++) {
        if (!*opts[i]) return qat_why(why, cap, "empty option after 'qat'");
        int rc = qat_opt(opts[i], b, &seen, why, cap);
        if (rc) return rc;
    }
    const unsigned grid = 1u << 0 | 1u << 1 | 1u << 2;
    if (b->ggml_type >= 0) {
        if (seen & grid) return qat_why(why, cap, "qat:TYPE takes no bits=, group= or asym");
        int ti = qat_type_index(b->ggml_type);
        QP_ASSERT(ti >= 0);
        b->bits = 0;
        b->group = 32;
        b->sym = !qat_types[ti].has_min;
    } else if ((seen & 3u) != 3u) {
        return qat_why(why, cap, "qat needs bits=B:group=G or a type (qat:q4_0)");
    }
    return 0;
}

void qz_qat_print(const struct qz_base *b, char *buf, size_t cap) {
    char lr[32], ce[32];
    qz_spec_fmt_real(lr, sizeof lr, b->qat.lr);
    qz_spec_fmt_real(ce, sizeof ce, b->qat.ce);
    char grid[48];
    int ti = qat_type_index(b->ggml_type);
    if (ti >= 0) snprintf(grid, sizeof grid, "%s", qat_types[ti].name);
    else snprintf(grid, sizeof grid, "bits=%d:group=%lld%s", b->bits, (long long)b->group, b->sym ? "" : ":asym");
    snprintf(buf, cap, "qat:%s:steps=%lld:lr=%s:init=%s:seed=%lld:ce=%s", grid, (long long)b->qat.steps, lr,
             b->qat.init == QZ_QAT_INIT_GPTQ ? "gptq" : "rtn", (long long)b->qat.seed, ce);
}

struct qz_base qz_qat_ptq_base(const struct qz_base *b) {
    struct qz_base r = {.method = QZ_RTN, .bits = b->bits, .gran = QZ_GROUP, .group = b->group, .sym = b->sym,
                        .ggml_type = -1};
    if (b->ggml_type >= 0) r = (struct qz_base){.method = QZ_GGML, .ggml_type = b->ggml_type};
    return r;
}

int qz_qat_fits(const struct qz_base *b, int64_t cols) { return b->ggml_type < 0 || cols % 32 == 0; }

// ---------------------------------------------------------------------------------------------
// The grid

void qz_qat_grid_deinit(struct qz_qat_grid *g) {
    qp_free(g->scale);
    qp_free(g->zero);
    qp_free(g->min);
    memset(g, 0, sizeof *g);
}

// RTN: the grid qz_rtn_group_grid fits to each group.
static void qat_init_rtn(struct qz_qat_grid *g, const struct qz_base *b, const float *w) {
    struct qz_base rb = qz_qat_ptq_base(b);
    for (int64_t r = 0; r < g->rows; r++)
        for (int64_t j = 0; j < g->gpr; j++) {
            int64_t c0 = j * g->group, n = QP_MIN(g->group, g->cols - c0);
            struct qz_grid q;
            qz_rtn_group_grid(&rb, w + r * g->cols + c0, n, &q);
            g->scale[r * g->gpr + j] = q.scale;
            g->zero[r * g->gpr + j] = (float)q.zero;
            g->qmin = q.qmin, g->qmax = q.qmax;
        }
}

// llama.cpp types: each row quantized by llama.cpp's quantizer, its blocks' d (and m) read back.
static int qat_init_ggml(struct qz_qat_grid *g, const float *w) {
    size_t rb = kn_row_bytes(g->type, g->cols);
    uint8_t *row = qp_alloc(rb);
    if (!row) return QP_ENOMEM;
    int ti = qat_type_index(g->type);
    size_t bb = kn_row_bytes(g->type, 32);
    for (int64_t r = 0; r < g->rows; r++) {
        int rc = qz_quantize_row(g->type, w + r * g->cols, row, g->cols, NULL);
        QP_ASSERT(rc == 0); // type and length were checked by the caller (qz_qat_fits)
        for (int64_t j = 0; j < g->gpr; j++) {
            const uint8_t *blk = row + (size_t)j * bb;
            uint16_t d, m = 0;
            memcpy(&d, blk, 2); // every legacy block starts with its fp16 d, then m for the _1 types
            if (qat_types[ti].has_min) memcpy(&m, blk + 2, 2);
            g->scale[r * g->gpr + j] = qp_fp16_to_fp32(d);
            g->zero[r * g->gpr + j] = (float)qat_types[ti].z;
            if (g->min) g->min[r * g->gpr + j] = qp_fp16_to_fp32(m);
        }
    }
    qp_free(row);
    return 0;
}

int qz_qat_grid_init(struct qz_qat_grid *g, const struct qz_base *b, const float *w, int64_t rows, int64_t cols) {
    QP_ASSERT(b->method == QZ_QAT && qz_qat_fits(b, cols) && rows >= 1 && cols >= 1);
    memset(g, 0, sizeof *g);
    for (int64_t i = 0; i < rows * cols; i++)
        if (!isfinite(w[i])) return QP_EINVAL;
    g->rows = rows, g->cols = cols, g->type = b->ggml_type;
    g->group = b->ggml_type >= 0 ? 32 : b->group;
    g->gpr = (cols + g->group - 1) / g->group;
    int64_t ng = rows * g->gpr;
    int ti = qat_type_index(g->type);
    g->scale = qp_alloc_array((size_t)ng, sizeof(float));
    g->zero = qp_alloc_array((size_t)ng, sizeof(float));
    if (ti >= 0 && qat_types[ti].has_min) g->min = qp_calloc_array((size_t)ng, sizeof(float));
    if (!g->scale || !g->zero || (ti >= 0 && qat_types[ti].has_min && !g->min)) return QP_ENOMEM;
    if (ti < 0) {
        qat_init_rtn(g, b, w);
        return 0;
    }
    g->qmin = qat_types[ti].qmin, g->qmax = qat_types[ti].qmax;
    return qat_init_ggml(g, w);
}

// roundf(v) without the libm call (the training calls it for every weight of the model on every
// step): integers (|v| >= 2^23), infinities and NaN are their own rounding; below, the integer
// conversion truncates exactly, v − t is exact, and the sign of v is kept (roundf(−0.3) = −0).
// Checked against roundf for all 2^32 floats (NaN: any NaN).
static inline float qat_round(float v) {
    if (!(fabsf(v) < 8388608.0f)) return v;
    float t = (float)(int32_t)v, f = v - t;
    return copysignf(t + (f >= 0.5f ? 1.0f : 0.0f) - (f <= -0.5f ? 1.0f : 0.0f), v);
}

// The unclamped code of w in a group (as a float: no int overflow), and its clamped value.
static inline float qat_raw(float w, float s, float z, float m) { return s != 0 ? qat_round((w - m) / s) + z : z; }

// The fake quantization of one group's n weights x into y without a libm call: the value
// qat_raw and the clamp give, fminf(fmaxf(roundf((x − m)/s) + z, lo), hi), bit for bit.
// (x − m)/s is first held inside [lo − z − 1, hi − z + 1] — integers outside the code range, so
// the clamp's result cannot change; a NaN goes to the bottom, where fmaxf sends it — and rounded
// half away from zero through the integer conversion, exact there (v − trunc(v) is exact for
// |v| < 2^23). A zero code is +0 either way (−0 + z and +0 + z are both +0 for z = +0).
// Four weights at a time with SSE2 (x86-64's baseline; maxps/minps are exactly the comparisons
// `a > b ? a : b` / `a < b ? a : b` below, and every other operation is the same IEEE one),
// the rest one by one. Measured 20.5 → 1.3 ns per weight (one core, 3 bits, group 32) against
// the roundf/fminf/fmaxf loop: training computes every tensor's values twice per window.
static void qat_fake_group(const float *x, float *y, int64_t n, float s, float z, float m, float lo, float hi) {
    if (s == 0) { // qat_raw's z, clamped
        float q = z > lo ? z : lo;
        q = q < hi ? q : hi;
        for (int64_t k = 0; k < n; k++) y[k] = (q - z) * s;
        return;
    }
    float blo = lo - z - 1.0f, bhi = hi - z + 1.0f;
    int64_t k = 0;
#if defined(__SSE2__)
    const __m128 vs = _mm_set1_ps(s), vm = _mm_set1_ps(m), vz = _mm_set1_ps(z), vblo = _mm_set1_ps(blo);
    const __m128 vbhi = _mm_set1_ps(bhi), vlo = _mm_set1_ps(lo), vhi = _mm_set1_ps(hi), one = _mm_set1_ps(1.0f);
    const __m128 half = _mm_set1_ps(0.5f), mhalf = _mm_set1_ps(-0.5f);
    for (; k + 4 <= n; k += 4) {
        __m128 v = _mm_div_ps(_mm_sub_ps(_mm_loadu_ps(x + k), vm), vs);
        v = _mm_min_ps(_mm_max_ps(v, vblo), vbhi);
        __m128 t = _mm_cvtepi32_ps(_mm_cvttps_epi32(v)), f = _mm_sub_ps(v, t);
        __m128 up = _mm_and_ps(_mm_cmpge_ps(f, half), one), dn = _mm_and_ps(_mm_cmple_ps(f, mhalf), one);
        __m128 q = _mm_add_ps(_mm_sub_ps(_mm_add_ps(t, up), dn), vz);
        q = _mm_min_ps(_mm_max_ps(q, vlo), vhi);
        _mm_storeu_ps(y + k, _mm_mul_ps(_mm_sub_ps(q, vz), vs));
    }
#endif
    for (; k < n; k++) {
        float v = (x[k] - m) / s;
        v = v > blo ? v : blo; // a NaN fails the comparison: blo
        v = v < bhi ? v : bhi;
        float t = (float)(int32_t)v, f = v - t;
        float q = t + (f >= 0.5f ? 1.0f : 0.0f) - (f <= -0.5f ? 1.0f : 0.0f) + z;
        q = q > lo ? q : lo;
        q = q < hi ? q : hi;
        y[k] = (q - z) * s;
    }
}

void qz_qat_fake_rows(const struct qz_qat_grid *g, const float *w, int64_t r0, int64_t r1, float *out) {
    float lo = (float)g->qmin, hi = (float)g->qmax;
    for (int64_t r = r0; r < r1; r++)
        for (int64_t j = 0; j < g->gpr; j++) {
            int64_t gi = r * g->gpr + j, c0 = j * g->group, n = QP_MIN(g->group, g->cols - c0);
            float s = g->scale[gi], z = g->zero[gi], m = g->min ? g->min[gi] : 0.0f;
            float *y = out + (r - r0) * g->cols + c0;
            qat_fake_group(w + r * g->cols + c0, y, n, s, z, m, lo, hi);
            if (g->min) // w' = (q − z)·s + m
                for (int64_t k = 0; k < n; k++) y[k] = y[k] + m;
        }
}

void qz_qat_fake(const struct qz_qat_grid *g, const float *w, float *out, int64_t r0, int64_t r1) {
    if (r1 > r0) qz_qat_fake_rows(g, w, r0, r1, out + r0 * g->cols);
}

void qz_qat_grad(const struct qz_qat_grid *g, const float *w, const float *dout, float *dw, float *dscale,
                 float *dmin, int64_t r0, int64_t r1) {
    float lo = (float)g->qmin, hi = (float)g->qmax;
    for (int64_t r = r0; r < r1; r++)
        for (int64_t j = 0; j < g->gpr; j++) {
            int64_t gi = r * g->gpr + j, c0 = j * g->group, n = QP_MIN(g->group, g->cols - c0), off = r * g->cols + c0;
            float s = g->scale[gi], z = g->zero[gi], m = g->min ? g->min[gi] : 0.0f;
            double ds = 0, dm = 0;
            for (int64_t k = 0; k < n; k++) {
                float x = w[off + k], raw = qat_raw(x, s, z, m), q = fminf(fmaxf(raw, lo), hi), gy = dout[off + k];
                if (raw < lo || raw > hi) { // clamped: w' = (q − z)·s + m
                    dw[off + k] = 0;
                    ds += (double)gy * (q - z);
                    dm += gy;
                } else { // STE through the rounding
                    dw[off + k] = gy;
                    if (s != 0) ds += (double)gy * ((double)(q - z) - ((double)x - m) / s);
                }
            }
            if (dscale) dscale[gi] = (float)ds;
            if (dmin && g->min) dmin[gi] = (float)dm;
        }
}

void qz_qat_project(struct qz_qat_grid *g) {
    if (g->type >= 0) return; // llama.cpp's d may have either sign (q4_0: d = max / −8)
    for (int64_t i = 0; i < qz_qat_n_groups(g); i++)
        if (!(g->scale[i] > 0)) g->scale[i] = QZ_QAT_MIN_SCALE;
}

static float qat_fp16(float x) {
    x = fminf(fmaxf(x, -65504.0f), 65504.0f);
    return qp_fp16_to_fp32(qp_fp32_to_fp16(x));
}

void qz_qat_round_fp16(struct qz_qat_grid *g) {
    for (int64_t i = 0; i < qz_qat_n_groups(g); i++) {
        g->scale[i] = qat_fp16(g->scale[i]);
        if (g->min) g->min[i] = qat_fp16(g->min[i]);
    }
}

int64_t qz_qat_count_clipped(const struct qz_qat_grid *g, const float *w) {
    int64_t n = 0;
    for (int64_t r = 0; r < g->rows; r++)
        for (int64_t j = 0; j < g->gpr; j++) {
            int64_t gi = r * g->gpr + j, c0 = j * g->group, e = QP_MIN(g->group, g->cols - c0);
            for (int64_t k = 0; k < e; k++) {
                float raw = qat_raw(w[r * g->cols + c0 + k], g->scale[gi], g->zero[gi], g->min ? g->min[gi] : 0.0f);
                n += raw < (float)g->qmin || raw > (float)g->qmax;
            }
        }
    return n;
}

// One block's codes into its bytes (ggml's layouts, kn_blocks.h).
static void qat_pack_block(int type, const int *c, float d, float m, uint8_t *dst) {
    uint16_t dh = qp_fp32_to_fp16(d), mh = qp_fp32_to_fp16(m);
    uint8_t nib[16];
    uint32_t qh = 0;
    for (int j = 0; j < 16; j++) nib[j] = (uint8_t)((c[j] & 15) | (c[j + 16] & 15) << 4);
    for (int j = 0; j < 32; j++) qh |= (uint32_t)((c[j] >> 4) & 1) << j;
    switch (type) {
    case KN_Q4_0: {
        struct kn_block_q4_0 b = {.d = dh};
        memcpy(b.qs, nib, 16);
        memcpy(dst, &b, sizeof b);
        break;
    }
    case KN_Q4_1: {
        struct kn_block_q4_1 b = {.d = dh, .m = mh};
        memcpy(b.qs, nib, 16);
        memcpy(dst, &b, sizeof b);
        break;
    }
    case KN_Q5_0: {
        struct kn_block_q5_0 b = {.d = dh};
        memcpy(b.qh, &qh, 4); // little-endian host (x86-64)
        memcpy(b.qs, nib, 16);
        memcpy(dst, &b, sizeof b);
        break;
    }
    case KN_Q5_1: {
        struct kn_block_q5_1 b = {.d = dh, .m = mh};
        memcpy(b.qh, &qh, 4);
        memcpy(b.qs, nib, 16);
        memcpy(dst, &b, sizeof b);
        break;
    }
    default: {
        QP_ASSERT(type == KN_Q8_0);
        struct kn_block_q8_0 b = {.d = dh};
        for (int j = 0; j < 32; j++) b.qs[j] = (int8_t)c[j];
        memcpy(dst, &b, sizeof b);
    }
    }
}

void qz_qat_pack(const struct qz_qat_grid *g, const float *w, void *out) {
    QP_ASSERT(g->type >= 0 && g->group == 32);
    size_t bb = kn_row_bytes(g->type, 32);
    uint8_t *dst = out;
    for (int64_t r = 0; r < g->rows; r++)
        for (int64_t j = 0; j < g->gpr; j++, dst += bb) {
            int64_t gi = r * g->gpr + j;
            float s = g->scale[gi], z = g->zero[gi], m = g->min ? g->min[gi] : 0.0f;
            int c[32];
            for (int k = 0; k < 32; k++)
                c[k] = (int)fminf(fmaxf(qat_raw(w[r * g->cols + j * 32 + k], s, z, m), (float)g->qmin), (float)g->qmax);
            qat_pack_block(g->type, c, s, m, dst);
        }
}
