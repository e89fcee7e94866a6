// kn_qdot_avx2.c — AVX2 versions of the act=q8 kernels (kn_qdot.h): the three activation
// quantizers (q8_0, q8_1, q8_K), and for each of the eleven weight types the dot product of a
// packed weight row with a quantized activation row and its tile form (many weight rows times
// many activation rows). Each is bit-identical to its scalar reference (kn_qdot.c,
// kn_vecdot.c, kn_vecdot_k.c) for every input.
//
// How they stay identical: the integer part of a block (sums of int8 x int8 products, with the
// reference's per-block scales where it applies them as integers) is exact in any order, so it
// is computed with SIMD integer instructions; the float part then performs the reference's
// multiplications and additions in the reference's order (-ffp-contract=off, no FMA):
//  - legacy types, one row: the terms of 8 blocks are formed at once in 8 float lanes (each
//    lane one block's own expression), then added to the single accumulator in block order;
//  - legacy types, tiles: 8 weight rows at once, lane j being row j's accumulator, which gets
//    the same terms in the same order as the one-row kernel gives its single accumulator (Q8_0:
//    a horizontal sum per block; the others: weights transposed so that nothing is summed
//    across lanes, see "The transposed tile");
//  - k-quants: the reference's 8 float lanes (ggml's sums[8]) are one __m256, lane l holding
//    exactly the weights k with k % 8 == l (see "Lane sums" below).
// _mm256_maddubs_epi16 saturates its int16 pair sums; every use below states why it cannot.
// fp16 scales are read with F16C, which equals qp_fp16_to_fp32 except that it quiets signalling
// NaNs: a NaN scale gives a NaN result on both paths, with possibly different payload bits.
//
// Compiled with -mavx2 -mfma -mf16c (Makefile), called only when the CPU has all three
// (kn_qtype_for_isa). Pointers need no alignment: every access is a loadu or a memcpy.
// Depends on intrinsics, libc, kernels/kn_qdot.h, kn_blocks.h and kn_avx2.h only. Never allocates.
#include <immintrin.h>
#include <string.h>

#include "kn_avx2.h"
#include "kn_blocks.h"
#include "kn_blocks_k.h"
#include "kn_qdot.h"

// ---------------------------------------------------------------------------------------------
// Loads and reductions

// Sum of the 8 int32 lanes (exact: integer).
static inline int kn_hsum_i32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

// Lane i of the result = the sum of the 8 int32 lanes of v[i].
static inline __m256i kn_hsum_8x8(const __m256i v[8]) {
    __m256i a = _mm256_hadd_epi32(v[0], v[1]), b = _mm256_hadd_epi32(v[2], v[3]);
    __m256i c = _mm256_hadd_epi32(v[4], v[5]), d = _mm256_hadd_epi32(v[6], v[7]);
    __m256i ab = _mm256_hadd_epi32(a, b); // v0..v3: sums of lanes 0-3 | sums of lanes 4-7
    __m256i cd = _mm256_hadd_epi32(c, d); // v4..v7: likewise
    return _mm256_add_epi32(_mm256_permute2x128_si256(ab, cd, 0x20),
                            _mm256_permute2x128_si256(ab, cd, 0x31));
}

// s + t[0] + t[1] + ... + t[7], one add at a time, in lane order.
static inline float kn_add_lanes(float s, __m256 t) {
    float v[8];
    _mm256_storeu_ps(v, t);
    for (int l = 0; l < 8; l++) s += v[l];
    return s;
}

// Pairwise int8 products summed into 16 int16 lanes, then into 8 int32 lanes: x * y for x in
// [-127, 127] and any int8 y. maddubs takes |y| (<= 128 as unsigned) times sign(y) * x (fits
// int8 since x != -128): a pair is at most 2 * 128 * 127 = 32512 < 32767, so nothing saturates.
static inline __m256i kn_mul_sx(__m256i x, __m256i y) {
    return _mm256_maddubs_epi16(_mm256_abs_epi8(y), _mm256_sign_epi8(x, y));
}

// kn_mul_sx before widening: 16 int16 pair sums.
static inline __m256i kn_mul_sx_u16(__m256i x, __m256i y) {
    return _mm256_maddubs_epi16(_mm256_abs_epi8(y), _mm256_sign_epi8(x, y));
}

static inline __m256i kn_widen(__m256i p16) { return _mm256_madd_epi16(p16, _mm256_set1_epi16(1)); }

// ---------------------------------------------------------------------------------------------
// Activation quantizers (references: kn_qdot.c). The reference's rounding qp_nearest_int(f) is
// (bits(f + 1.5 * 2^23) & 0x7fffff) - 0x400000, done here lane-wise with the same float add, and
// its (int8_t) casts keep the low 8 bits (not a saturation).

static inline __m256i kn_nearest(__m256 f) {
    __m256i i = _mm256_castps_si256(_mm256_add_ps(f, _mm256_set1_ps(12582912.0f)));
    return _mm256_sub_epi32(_mm256_and_si256(i, _mm256_set1_epi32(0x007fffff)),
                            _mm256_set1_epi32(0x00400000));
}

// The low bytes of 32 int32 (a: values 0-7, b: 8-15, ...) in order.
static inline __m256i kn_low_bytes(__m256i a, __m256i b, __m256i c, __m256i d) {
    const __m256i m = _mm256_set1_epi32(0xff);
    __m256i ab = _mm256_packus_epi32(_mm256_and_si256(a, m), _mm256_and_si256(b, m));
    __m256i cd = _mm256_packus_epi32(_mm256_and_si256(c, m), _mm256_and_si256(d, m));
    __m256i v = _mm256_packus_epi16(ab, cd); // dwords a0 b0 c0 d0 a1 b1 c1 d1
    return _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

static inline __m256 kn_abs(__m256 v) {
    return _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)));
}

// Largest lane of m (no NaNs in m).
static inline float kn_hmax(__m256 m) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// max |x[j]| over 32 values as the reference's amax = fmaxf(amax, fabsf(x[j])) from 0: max_ps
// returns its second operand when the first is NaN, so NaNs are skipped as fmaxf skips them.
static inline float kn_amax32(const __m256 v[4]) {
    __m256 m = _mm256_setzero_ps();
    for (int k = 0; k < 4; k++) m = _mm256_max_ps(kn_abs(v[k]), m);
    return kn_hmax(m);
}

// Quantizes the 32 values v with id; returns the 32 int32 rounded values in q and their bytes.
static inline __m256i kn_q8_block(const __m256 v[4], float id, __m256i q[4]) {
    const __m256 s = _mm256_set1_ps(id);
    for (int k = 0; k < 4; k++) q[k] = kn_nearest(_mm256_mul_ps(v[k], s));
    return kn_low_bytes(q[0], q[1], q[2], q[3]);
}

void kn_quant_q8_0_avx2(const float *x, void *vy, int64_t n) {
    uint8_t *y = vy;
    for (int64_t b = 0; b < n / 32; b++, y += KN_BYTES(q8_0), x += 32) {
        __m256 v[4];
        for (int k = 0; k < 4; k++) v[k] = _mm256_loadu_ps(x + 8 * k);
        const float amax = kn_amax32(v);
        const float d = amax / 127.0f, id = amax != 0.0f ? 127.0f / amax : 0.0f;
        const uint16_t dh = _cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
        memcpy(y + KN_OFF(q8_0, d), &dh, 2);
        __m256i q[4];
        _mm256_storeu_si256((__m256i *)(y + KN_OFF(q8_0, qs)), kn_q8_block(v, id, q));
    }
}

void kn_quant_q8_1_avx2(const float *x, void *vy, int64_t n) {
    uint8_t *y = vy;
    for (int64_t b = 0; b < n / 32; b++, y += KN_BYTES(q8_1), x += 32) {
        __m256 v[4];
        for (int k = 0; k < 4; k++) v[k] = _mm256_loadu_ps(x + 8 * k);
        const float amax = kn_amax32(v);
        const float d = amax / 127.0f, id = amax != 0.0f ? 127.0f / amax : 0.0f;
        __m256i q[4];
        _mm256_storeu_si256((__m256i *)(y + KN_OFF(q8_1, qs)), kn_q8_block(v, id, q));
        // The reference sums the rounded ints (before the int8 cast).
        const int sum = kn_hsum_i32(_mm256_add_epi32(_mm256_add_epi32(q[0], q[1]),
                                                     _mm256_add_epi32(q[2], q[3])));
        const uint16_t dh = _cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
        const uint16_t sh = _cvtss_sh(d * (float)sum, _MM_FROUND_TO_NEAREST_INT);
        memcpy(y + KN_OFF(q8_1, d), &dh, 2);
        memcpy(y + KN_OFF(q8_1, s), &sh, 2);
    }
}

// bsums of one Q8_K block from its 256 stored quants qs: 16 sums of 16 int8 (exact: integers).
static inline void kn_bsums(const uint8_t *qs, uint8_t *out) {
    const __m256i ones8 = _mm256_set1_epi8(1);
    __m256i r[8]; // r[c]: 4 sums of 4 values of group 2c (low half), of group 2c+1 (high half)
    for (int c = 0; c < 8; c++)
        r[c] = kn_widen(_mm256_maddubs_epi16(ones8, kn_lu256(qs + 32 * c))); // |pair| <= 256
    __m256i g0 = _mm256_hadd_epi32(_mm256_hadd_epi32(r[0], r[1]), _mm256_hadd_epi32(r[2], r[3]));
    __m256i g1 = _mm256_hadd_epi32(_mm256_hadd_epi32(r[4], r[5]), _mm256_hadd_epi32(r[6], r[7]));
    // g0: groups 0 2 4 6 | 1 3 5 7; g1: 8 10 12 14 | 9 11 13 15. |sum| <= 2048 fits int16.
    __m256i p = _mm256_packs_epi32(g0, g1); // evens | odds
    __m128i ev = _mm256_castsi256_si128(p), od = _mm256_extracti128_si256(p, 1);
    _mm_storeu_si128((__m128i *)out, _mm_unpacklo_epi16(ev, od));
    _mm_storeu_si128((__m128i *)(out + 16), _mm_unpackhi_epi16(ev, od));
}

void kn_quant_q8_K_avx2(const float *x, void *vy, int64_t n) {
    uint8_t *y = vy;
    for (int64_t b = 0; b < n / 256; b++, y += KN_BYTES(q8_K), x += 256) {
        // amax as the reference's strict "fabsf(x[j]) > amax" scan from 0 (NaNs skipped), and m
        // the first value reaching it.
        __m256 mx = _mm256_setzero_ps();
        for (int k = 0; k < 32; k++) mx = _mm256_max_ps(kn_abs(_mm256_loadu_ps(x + 8 * k)), mx);
        const float amax = kn_hmax(mx);
        float d = 0.0f;
        if (amax == 0.0f) {
            memset(y + KN_OFF(q8_K, qs), 0, KN_BYTES(q8_K) - KN_OFF(q8_K, qs));
        } else {
            const __m256 am = _mm256_set1_ps(amax);
            float m = 0.0f;
            for (int k = 0; k < 32; k++) {
                int mask = _mm256_movemask_ps(
                    _mm256_cmp_ps(kn_abs(_mm256_loadu_ps(x + 8 * k)), am, _CMP_EQ_OQ));
                if (mask) {
                    memcpy(&m, x + 8 * k + __builtin_ctz((unsigned)mask), sizeof m);
                    break;
                }
            }
            const float iscale = -127.0f / m;
            const __m256 is = _mm256_set1_ps(iscale);
            const __m256i cap = _mm256_set1_epi32(127);
            for (int c = 0; c < 8; c++) {
                __m256i q[4];
                for (int k = 0; k < 4; k++)
                    q[k] = _mm256_min_epi32(
                        kn_nearest(_mm256_mul_ps(is, _mm256_loadu_ps(x + 32 * c + 8 * k))), cap);
                _mm256_storeu_si256((__m256i *)(y + KN_OFF(q8_K, qs) + 32 * c), kn_low_bytes(q[0], q[1], q[2], q[3]));
            }
            kn_bsums(y + KN_OFF(q8_K, qs), y + KN_OFF(q8_K, bsums));
            d = 1.0f / iscale;
        }
        memcpy(y + KN_OFF(q8_K, d), &d, 4);
    }
}

// ---------------------------------------------------------------------------------------------
// Legacy 32-value blocks (references: kn_vecdot.c). One generic core, specialised per type at
// compile time (always_inline with a constant type): a block's integer dot product comes back as
// 8 int32 partial sums, and the float step is the reference's expression for that type.

enum { KN_L_Q4_0, KN_L_Q4_1, KN_L_Q5_0, KN_L_Q5_1, KN_L_Q8_0, KN_L_IQ4_NL };

static const int kn_l_xbytes[] = {KN_BYTES(q4_0), KN_BYTES(q4_1), KN_BYTES(q5_0), // weight block bytes
                                  KN_BYTES(q5_1), KN_BYTES(q8_0), KN_BYTES(iq4_nl)};
static const int kn_l_ybytes[] = {KN_BYTES(q8_0), KN_BYTES(q8_1), KN_BYTES(q8_0), // activation block bytes
                                  KN_BYTES(q8_1), KN_BYTES(q8_0), KN_BYTES(q8_0)};
// Every weight block starts with its fp16 d, and the *_1 types then with m; q8_0 and q8_1
// activation blocks with d, and q8_1 then with s.
_Static_assert(KN_OFF(q4_0, d) == 0 && KN_OFF(q4_1, d) == 0 && KN_OFF(q4_1, m) == 2 && KN_OFF(q5_0, d) == 0 &&
               KN_OFF(q5_1, m) == 2 && KN_OFF(q8_0, d) == 0 && KN_OFF(iq4_nl, d) == 0 && KN_OFF(q8_1, s) == 2,
               "block headers");

// An activation block as the weight side needs it: its 32 quants, their absolute values, and
// (Q8_0 weights) both halves widened to int16.
struct kn_yblk {
    __m256i q, aq, lo16, hi16;
};

__attribute__((always_inline)) static inline struct kn_yblk kn_yprep(int t, const uint8_t *yb) {
    struct kn_yblk v;
    const uint8_t *qs = yb + (kn_l_ybytes[t] == KN_BYTES(q8_1) ? KN_OFF(q8_1, qs) : KN_OFF(q8_0, qs));
    if (t == KN_L_Q8_0) {
        v.lo16 = _mm256_cvtepi8_epi16(kn_lu128(qs));
        v.hi16 = _mm256_cvtepi8_epi16(kn_lu128(qs + 16));
        v.q = v.aq = _mm256_setzero_si256();
    } else {
        v.q = kn_lu256(qs);
        v.aq = _mm256_abs_epi8(v.q);
        v.lo16 = v.hi16 = _mm256_setzero_si256();
    }
    return v;
}

// A weight block's quants as the multiply needs them: int8 values (w) or, for Q8_0, both
// halves widened to int16 (w, w2).
struct kn_wblk {
    __m256i w, w2;
};

__attribute__((always_inline)) static inline struct kn_wblk kn_wprep(int t, const uint8_t *xb) {
    struct kn_wblk v;
    v.w2 = _mm256_setzero_si256();
    switch (t) {
    case KN_L_Q4_0: v.w = _mm256_sub_epi8(kn_nibbles(xb + KN_OFF(q4_0, qs)), _mm256_set1_epi8(8)); break;
    case KN_L_Q4_1: v.w = kn_nibbles(xb + KN_OFF(q4_1, qs)); break;
    case KN_L_Q5_0:
        v.w = _mm256_sub_epi8(_mm256_or_si256(kn_nibbles(xb + KN_OFF(q5_0, qs)), kn_fifth_bits(xb + KN_OFF(q5_0, qh))),
                              _mm256_set1_epi8(16));
        break;
    case KN_L_Q5_1: v.w = _mm256_or_si256(kn_nibbles(xb + KN_OFF(q5_1, qs)), kn_fifth_bits(xb + KN_OFF(q5_1, qh))); break;
    case KN_L_Q8_0:
        v.w = _mm256_cvtepi8_epi16(kn_lu128(xb + KN_OFF(q8_0, qs)));
        v.w2 = _mm256_cvtepi8_epi16(kn_lu128(xb + KN_OFF(q8_0, qs) + 16));
        break;
    default: { // KN_L_IQ4_NL
        const __m256i grid = _mm256_broadcastsi128_si256(kn_lu128((const uint8_t *)kn_iq4nl_values));
        v.w = _mm256_shuffle_epi8(grid, kn_nibbles(xb + KN_OFF(iq4_nl, qs)));
        break;
    }
    }
    return v;
}

// Integer dot product of a weight block with an activation block, as 8 int32 partial sums.
// Saturation:
//  - Q4_0 (q - 8 in [-8, 7]), Q5_0 (q - 16 in [-16, 15]), IQ4_NL (grid values in [-127, 113]):
//    maddubs(|y|, sign(w, y)) as kn_mul_sx, exact for every int8 y;
//  - Q4_1 (q in [0, 15]), Q5_1 (q in [0, 31]) unsigned times y: a pair is at most
//    2 * 31 * 128 = 7936;
//  - Q8_0: both sides may be any int8 (-128 * -128 pairs would saturate maddubs), so it widens
//    to int16 and uses madd, exact for all inputs.
__attribute__((always_inline)) static inline __m256i kn_mul(int t, const struct kn_wblk *x,
                                                             const struct kn_yblk *y) {
    switch (t) {
    case KN_L_Q4_1:
    case KN_L_Q5_1: return kn_widen(_mm256_maddubs_epi16(x->w, y->q));
    case KN_L_Q8_0:
        return _mm256_add_epi32(_mm256_madd_epi16(x->w, y->lo16), _mm256_madd_epi16(x->w2, y->hi16));
    default: return kn_widen(_mm256_maddubs_epi16(y->aq, _mm256_sign_epi8(x->w, y->q)));
    }
}

__attribute__((always_inline)) static inline __m256i kn_blk(int t, const uint8_t *xb,
                                                             const struct kn_yblk *y) {
    const struct kn_wblk x = kn_wprep(t, xb);
    return kn_mul(t, &x, y);
}

// The reference's per-block float term, lane-wise: fs = (float)sumi; dx, mx the weight block's
// d and m; dy, sy the activation block's d and s (fp16 values as floats).
__attribute__((always_inline)) static inline __m256 kn_term(int t, __m256 fs, __m256 dx, __m256 mx,
                                                             __m256 dy, __m256 sy) {
    switch (t) {
    case KN_L_Q4_0: return _mm256_mul_ps(_mm256_mul_ps(fs, dx), dy); // (float)sumi * d_x * d_y
    case KN_L_Q4_1:
    case KN_L_Q5_1: // (d_x * d_y) * (float)sumi + m_x * s_y
        return _mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(dx, dy), fs), _mm256_mul_ps(mx, sy));
    case KN_L_Q5_0: return _mm256_mul_ps(_mm256_mul_ps(dx, dy), fs); // (d_x * d_y) * (float)sumi
    case KN_L_Q8_0: return _mm256_mul_ps(fs, _mm256_mul_ps(dx, dy)); // (float)sumi * (d_x * d_y)
    default: return _mm256_mul_ps(_mm256_mul_ps(dy, dx), fs);       // (d_y * d_x) * (float)sumi
    }
}

// The fp16 at p[k] + off for k = 0..7, as 8 floats.
static inline __m256 kn_h2f8_at(const uint8_t *const p[8], int off) {
    return _mm256_cvtph_ps(_mm_setr_epi16((short)kn_ld16(p[0] + off), (short)kn_ld16(p[1] + off),
                                          (short)kn_ld16(p[2] + off), (short)kn_ld16(p[3] + off),
                                          (short)kn_ld16(p[4] + off), (short)kn_ld16(p[5] + off),
                                          (short)kn_ld16(p[6] + off), (short)kn_ld16(p[7] + off)));
}

static inline __m256 kn_h2f1(const uint8_t *p) { return _mm256_set1_ps(kn_h2f(p)); }

// One weight row (nb blocks at x) with one activation row: whole groups of 8 blocks form their 8
// terms at once (lane b = block i + b) and add them to sumf in block order, one at a time; the
// remaining blocks go one by one through the same term expression.
__attribute__((always_inline)) static inline float kn_dot_lg(int t, const uint8_t *x, const uint8_t *y,
                                                              int64_t nb) {
    const int xs = kn_l_xbytes[t], ys = kn_l_ybytes[t], x1 = ys == KN_BYTES(q8_1);
    float sumf = 0.0f;
    int64_t i = 0;
    for (; i + 8 <= nb; i += 8) {
        __m256i p[8];
        const uint8_t *xb[8], *yb[8];
        for (int b = 0; b < 8; b++) {
            xb[b] = x + (i + b) * xs;
            yb[b] = y + (i + b) * ys;
            const struct kn_yblk yv = kn_yprep(t, yb[b]);
            p[b] = kn_blk(t, xb[b], &yv);
        }
        const __m256 fs = _mm256_cvtepi32_ps(kn_hsum_8x8(p));
        const __m256 mx = x1 ? kn_h2f8_at(xb, 2) : _mm256_setzero_ps();
        const __m256 sy = x1 ? kn_h2f8_at(yb, 2) : _mm256_setzero_ps();
        sumf = kn_add_lanes(sumf, kn_term(t, fs, kn_h2f8_at(xb, 0), mx, kn_h2f8_at(yb, 0), sy));
    }
    for (; i < nb; i++) {
        const uint8_t *xb = x + i * xs, *yb = y + i * ys;
        const struct kn_yblk yv = kn_yprep(t, yb);
        const float fs = (float)kn_hsum_i32(kn_blk(t, xb, &yv));
        const __m256 mx = x1 ? kn_h2f1(xb + 2) : _mm256_setzero_ps();
        const __m256 sy = x1 ? kn_h2f1(yb + 2) : _mm256_setzero_ps();
        sumf += _mm256_cvtss_f32(kn_term(t, _mm256_set1_ps(fs), kn_h2f1(xb), mx, kn_h2f1(yb), sy));
    }
    return sumf;
}

// The Q8_0 tile: n_rows weight rows (w_stride bytes apart) times n_act activation rows (act_stride
// apart). Weight rows go 8 at a time, one per lane; lane j of an activation row's accumulator is
// that output's sumf, to which block terms are added in block order, exactly as kn_dot_lg adds
// them (from 0.0f, one term per block, the same term expression). A last group of fewer than 8
// weight rows repeats its last row in the spare lanes and keeps only the real ones. Blocks go in
// chunks of KN_TB: a chunk's weights are unpacked and its scales converted once, then used for
// up to KN_TA activation rows, whose accumulators wait in acc[] between chunks.
#define KN_TB 8
#define KN_TA 64

__attribute__((always_inline)) static inline void kn_tile_lg(int t, const uint8_t *w, size_t w_stride,
                                                              int n_rows, const uint8_t *act,
                                                              size_t act_stride, int n_act, int64_t nb,
                                                              float *out, size_t out_stride) {
    const int xs = kn_l_xbytes[t], ys = kn_l_ybytes[t], x1 = ys == KN_BYTES(q8_1);
    struct kn_wblk wv[KN_TB][8];
    __m256 dx[KN_TB], mx[KN_TB], acc[KN_TA];
    for (int a0 = 0; a0 < n_act; a0 += KN_TA) {
        const int na = n_act - a0 < KN_TA ? n_act - a0 : KN_TA;
        for (int j0 = 0; j0 < n_rows; j0 += 8) {
            const int m = n_rows - j0 < 8 ? n_rows - j0 : 8;
            const uint8_t *xr[8];
            for (int j = 0; j < 8; j++) xr[j] = w + (size_t)(j0 + (j < m ? j : m - 1)) * w_stride;
            for (int r = 0; r < na; r++) acc[r] = _mm256_setzero_ps();
            for (int64_t b0 = 0; b0 < nb; b0 += KN_TB) {
                const int kb = nb - b0 < KN_TB ? (int)(nb - b0) : KN_TB;
                for (int k = 0; k < kb; k++) {
                    const uint8_t *xb[8];
#pragma GCC unroll 8
                    for (int j = 0; j < 8; j++) {
                        xb[j] = xr[j] + (b0 + k) * xs;
                        wv[k][j] = kn_wprep(t, xb[j]);
                    }
                    dx[k] = kn_h2f8_at(xb, 0);
                    mx[k] = x1 ? kn_h2f8_at(xb, 2) : _mm256_setzero_ps();
                }
                for (int r = 0; r < na; r++) {
                    const uint8_t *yr = act + (size_t)(a0 + r) * act_stride + b0 * ys;
                    __m256 sumf = acc[r];
                    for (int k = 0; k < kb; k++) {
                        const uint8_t *yb = yr + k * ys;
                        const struct kn_yblk yv = kn_yprep(t, yb);
                        __m256i p[8];
#pragma GCC unroll 8
                        for (int j = 0; j < 8; j++) p[j] = kn_mul(t, &wv[k][j], &yv);
                        const __m256 fs = _mm256_cvtepi32_ps(kn_hsum_8x8(p));
                        const __m256 sy = x1 ? kn_h2f1(yb + 2) : _mm256_setzero_ps();
                        sumf = _mm256_add_ps(sumf, kn_term(t, fs, dx[k], mx[k], kn_h2f1(yb), sy));
                    }
                    acc[r] = sumf;
                }
            }
            for (int r = 0; r < na; r++) {
                float *o = out + (size_t)(a0 + r) * out_stride + j0;
                if (m == 8) {
                    _mm256_storeu_ps(o, acc[r]);
                } else {
                    float v[8];
                    _mm256_storeu_ps(v, acc[r]);
                    memcpy(o, v, sizeof(float) * (size_t)m);
                }
            }
        }
    }
}

// The transposed tile, for every legacy type but Q8_0 (whose weights may be -128): no horizontal
// sums. A chunk's 8 weight rows are unpacked once and transposed so that vector g of block k
// holds values 4g..4g+3 of row j in its int32 lane j; an activation row's values 4g..4g+3 are
// broadcast to every lane, and maddubs then adds, lane by lane, products of one weight row
// only. A lane's int16 pair sums are added over kn_tr_run(t) vectors before widening to int32
// (the bounds below), so every block's integer sum is exact, and the float step is
// kn_tile_lg's, term for term. maddubs takes one unsigned and one signed side:
//  - Q4_1 (q in [0, 15]) and Q5_1 (q in [0, 31]): the stored q, unsigned, times y;
//  - Q4_0 (w in [-8, 7]) and Q5_0 (w in [-16, 15]): u = y + 128 (unsigned, from a copy of the
//    activation chunk) times w; sum(w * y) = sum(w * u) - 128 * sum(w), and 128 * sum(w) is
//    formed per weight row and block when the chunk is unpacked;
//  - IQ4_NL grid values (in [-127, 113]): maddubs(|y|, sign(w, y)) = w * y (|y| <= 128 as
//    unsigned; sign(w, y) fits int8 as w != -128).
// A maddubs pair is at most 2 * 128 * 15 = 3840 (Q4_1: 8 add up to 30720), 2 * 255 * 8 = 4080
// (Q4_0: 8 add up to 32640), 2 * 128 * 31 = 7936 (Q5_1: 4 add up to 31744), 2 * 255 * 16 = 8160
// (Q5_0: 4 add up to 32640), 2 * 128 * 127 = 32512 (IQ4_NL: 1), all below 32767.
__attribute__((always_inline)) static inline int kn_tr_run(int t) {
    return t == KN_L_Q4_0 || t == KN_L_Q4_1 ? 8 : t == KN_L_IQ4_NL ? 1 : 4;
}

static inline __m256i kn_bcast4(const uint8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

// 8 * ng weight rows (ng = 1 or 2; rows past m repeat row m - 1 and are not stored) times na
// (<= KN_TA) activation rows: a block's activation side (its broadcasts and scales) is loaded
// once for all 8 * ng rows.
__attribute__((always_inline)) static inline void kn_tr_rows(int t, int ng, const uint8_t *w, size_t w_stride,
                                                              int m, const uint8_t *act, size_t act_stride,
                                                              int na, int64_t nb, float *out, size_t out_stride) {
    const int xs = kn_l_xbytes[t], ys = kn_l_ybytes[t], x1 = ys == KN_BYTES(q8_1), run = kn_tr_run(t);
    const int biased = t == KN_L_Q4_0 || t == KN_L_Q5_0, sgn = t == KN_L_IQ4_NL; // biased: u = y + 128
    const int yq = x1 ? KN_OFF(q8_1, qs) : KN_OFF(q8_0, qs); // the quants' offset in an activation block
    __m256i wt[KN_TB][2][8], cw[KN_TB][2];
    _Alignas(32) uint8_t yo[KN_TA][KN_TB][32];
    __m256 dx[KN_TB][2], mx[KN_TB][2], acc[KN_TA][2];
    const uint8_t *xr[16];
    for (int j = 0; j < 8 * ng; j++) xr[j] = w + (size_t)(j < m ? j : m - 1) * w_stride;
    for (int r = 0; r < na; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (int64_t b0 = 0; b0 < nb; b0 += KN_TB) {
        const int kb = nb - b0 < KN_TB ? (int)(nb - b0) : KN_TB;
        for (int k = 0; k < kb; k++)
            for (int h = 0; h < ng; h++) {
                const uint8_t *xb[8];
#pragma GCC unroll 8
                for (int j = 0; j < 8; j++) {
                    xb[j] = xr[8 * h + j] + (b0 + k) * xs;
                    wt[k][h][j] = kn_wprep(t, xb[j]).w;
                }
                kn_transpose8_si(wt[k][h]); // vector g: values 4g..4g+3, row j in lane j
                if (biased) { // lane j: 128 * (the sum of row j's 32 values)
                    const __m256i one = _mm256_set1_epi8(1);
                    __m256i s16 = _mm256_maddubs_epi16(one, wt[k][h][0]);
                    for (int g = 1; g < 8; g++) s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(one, wt[k][h][g]));
                    cw[k][h] = _mm256_madd_epi16(s16, _mm256_set1_epi16(128));
                }
                dx[k][h] = kn_h2f8_at(xb, 0);
                mx[k][h] = x1 ? kn_h2f8_at(xb, 2) : _mm256_setzero_ps();
            }
        if (biased) // the chunk's activation quants + 128, as unsigned bytes
            for (int r = 0; r < na; r++)
                for (int k = 0; k < kb; k++) {
                    const uint8_t *qs = act + (size_t)r * act_stride + (b0 + k) * ys + yq;
                    _mm256_store_si256((__m256i *)yo[r][k], _mm256_xor_si256(kn_lu256(qs), _mm256_set1_epi8(-128)));
                }
        for (int r = 0; r < na; r++) {
            const uint8_t *yr = act + (size_t)r * act_stride + b0 * ys;
            __m256 sumf[2] = {acc[r][0], acc[r][1]};
            for (int k = 0; k < kb; k++) {
                const uint8_t *yb = yr + k * ys, *qs = biased ? yo[r][k] : yb + yq;
                const __m256 dy = kn_h2f1(yb), sy = x1 ? kn_h2f1(yb + 2) : _mm256_setzero_ps();
                __m256i sumi[2], s16[2];
#pragma GCC unroll 8
                for (int g = 0; g < 8; g++) {
                    const __m256i y = kn_bcast4(qs + 4 * g);
#pragma GCC unroll 2
                    for (int h = 0; h < ng; h++) {
                        const __m256i x = wt[k][h][g];
                        const __m256i p = sgn      ? kn_mul_sx_u16(x, y)
                                          : biased ? _mm256_maddubs_epi16(y, x)
                                                   : _mm256_maddubs_epi16(x, y);
                        s16[h] = g % run == 0 ? p : _mm256_add_epi16(s16[h], p);
                        if (g % run == run - 1) { // a run ends: widen it into the block's sum
                            __m256i s32 = kn_widen(s16[h]);
                            if (g == run - 1 && biased) s32 = _mm256_sub_epi32(s32, cw[k][h]);
                            sumi[h] = g == run - 1 ? s32 : _mm256_add_epi32(sumi[h], s32);
                        }
                    }
                }
#pragma GCC unroll 2
                for (int h = 0; h < ng; h++) {
                    const __m256 fs = _mm256_cvtepi32_ps(sumi[h]);
                    sumf[h] = _mm256_add_ps(sumf[h], kn_term(t, fs, dx[k][h], mx[k][h], dy, sy));
                }
            }
            for (int h = 0; h < ng; h++) acc[r][h] = sumf[h];
        }
    }
    for (int r = 0; r < na; r++)
        for (int h = 0; h < ng && 8 * h < m; h++) {
            float *op = out + (size_t)r * out_stride + 8 * h;
            const int mh = m - 8 * h < 8 ? m - 8 * h : 8;
            if (mh == 8) {
                _mm256_storeu_ps(op, acc[r][h]);
            } else {
                float v[8];
                _mm256_storeu_ps(v, acc[r][h]);
                memcpy(op, v, sizeof(float) * (size_t)mh);
            }
        }
}

__attribute__((always_inline)) static inline void kn_tile_tr(int t, const uint8_t *w, size_t w_stride,
                                                              int n_rows, const uint8_t *act,
                                                              size_t act_stride, int n_act, int64_t nb,
                                                              float *out, size_t out_stride) {
    for (int a0 = 0; a0 < n_act; a0 += KN_TA) {
        const int na = n_act - a0 < KN_TA ? n_act - a0 : KN_TA;
        const uint8_t *ya = act + (size_t)a0 * act_stride;
        float *oa = out + (size_t)a0 * out_stride;
        for (int j0 = 0; j0 < n_rows;) {
            const int left = n_rows - j0;
            if (left > 8) {
                kn_tr_rows(t, 2, w + (size_t)j0 * w_stride, w_stride, left < 16 ? left : 16, ya, act_stride, na,
                           nb, oa + j0, out_stride);
                j0 += 16;
            } else {
                kn_tr_rows(t, 1, w + (size_t)j0 * w_stride, w_stride, left, ya, act_stride, na, nb, oa + j0,
                           out_stride);
                j0 += 8;
            }
        }
    }
}

#define KN_LEGACY(wt, at, T, tile)                                                             \
    float kn_dot_##wt##_##at##_avx2(const void *w, const void *act, int64_t n) {               \
        return kn_dot_lg(T, w, act, n / 32);                                                   \
    }                                                                                          \
    void kn_dot_tile_##wt##_##at##_avx2(const void *w, size_t w_stride, int n_rows,            \
                                        const void *act, size_t act_stride, int n_act,         \
                                        int64_t n, float *out, size_t out_stride) {            \
        tile(T, w, w_stride, n_rows, act, act_stride, n_act, n / 32, out, out_stride);         \
    }

KN_LEGACY(q4_0, q8_0, KN_L_Q4_0, kn_tile_tr)
KN_LEGACY(q4_1, q8_1, KN_L_Q4_1, kn_tile_tr)
KN_LEGACY(q5_0, q8_0, KN_L_Q5_0, kn_tile_tr)
KN_LEGACY(q5_1, q8_1, KN_L_Q5_1, kn_tile_tr)
KN_LEGACY(q8_0, q8_0, KN_L_Q8_0, kn_tile_lg)
KN_LEGACY(iq4_nl, q8_0, KN_L_IQ4_NL, kn_tile_tr)

// ---------------------------------------------------------------------------------------------
// K-quants (references: kn_vecdot_k.c). Blocks are walked as bytes, fields at their offsetof.
#define KN_Y8K_D KN_OFF(q8_K, d)
#define KN_Y8K_QS KN_OFF(q8_K, qs)
#define KN_Y8K_BSUMS KN_OFF(q8_K, bsums)
//
// Lane sums. Q3_K..Q6_K accumulate, per super-block, aux32[l] = sum over weights k with
// k % 8 == l of scale(k) * q8[k] * q[k]. To keep every weight in its lane, each 32-weight chunk
// (weights and activations alike) is reordered within its 16-byte halves to 0 8 1 9 ... 7 15,
// so that maddubs adds weights k and k + 8 (same lane): int16 lane i of a half is lane i's
// share of that 16-weight half. Two chunks A, B are then interleaved per int16 and multiplied by
// their scales with madd: int32 lane m of unpacklo(A, B) is lane m (of unpackhi: lane 4 + m),
// once for the chunks' first halves (low 128 bits) and once for their second halves.

static inline __m256i kn_pairs(__m256i v) {
    const __m256i order = _mm256_setr_epi8(0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15,
                                           0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15);
    return _mm256_shuffle_epi8(v, order);
}

// Adds chunks A and B (int16 lane shares pa, pb) times their scales into the lane sums lo
// (lanes 0-3) and hi (lanes 4-7). sc: int16 pairs (scale of A, scale of B), the scales of the
// chunks' first halves in the low 128 bits and of their second halves in the high 128 bits.
static inline void kn_lanes_add(__m256i pa, __m256i pb, __m256i sc, __m256i *lo, __m256i *hi) {
    *lo = _mm256_add_epi32(*lo, _mm256_madd_epi16(_mm256_unpacklo_epi16(pa, pb), sc));
    *hi = _mm256_add_epi32(*hi, _mm256_madd_epi16(_mm256_unpackhi_epi16(pa, pb), sc));
}

// aux32[0..7] from the lane sums.
static inline __m256i kn_lanes_total(__m256i lo, __m256i hi) {
    return _mm256_add_epi32(_mm256_permute2x128_si256(lo, hi, 0x20),
                            _mm256_permute2x128_si256(lo, hi, 0x31));
}

// For 16 int16 scales s0..s15 of 16-weight sub-blocks (chunk c = sub-blocks 2c, 2c+1), the
// scale vectors of chunk pairs (0,1) (2,3) (4,5) (6,7) in kn_lanes_add's layout.
static inline void kn_scales16(__m256i s, __m256i out[4]) {
    // within each 128-bit half, s0 s2 s1 s3 s4 s6 s5 s7: dword 2p = (s[4p], s[4p+2]) are the
    // first-half scales of chunks 2p, 2p+1, dword 2p+1 = (s[4p+1], s[4p+3]) their second halves
    const __m256i order = _mm256_setr_epi8(0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15,
                                           0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15);
    s = _mm256_shuffle_epi8(s, order);
    for (int p = 0; p < 4; p++)
        out[p] = _mm256_permutevar8x32_epi32(
            s, _mm256_setr_epi32(2 * p, 2 * p, 2 * p, 2 * p, 2 * p + 1, 2 * p + 1, 2 * p + 1, 2 * p + 1));
}

// Q2_K. The reference sums everything in int:
// isum = sum_k (sc[k/16] & 15) * q8[k] * q[k], summs = sum_j bsums[j] * (sc[j] >> 4); any order.
float kn_dot_q2_K_q8_K_avx2(const void *w, const void *act, int64_t n) {
    const uint8_t *x = w, *y = act;
    const int64_t nb = n / 256;
    float sumf = 0.0f;
    // scale pick for chunk c: int16 lanes of the low half = byte 2c, of the high half = 2c + 1
    const __m256i pick = _mm256_setr_epi8(0, -128, 0, -128, 0, -128, 0, -128, 0, -128, 0, -128, 0, -128, 0, -128,
                                          1, -128, 1, -128, 1, -128, 1, -128, 1, -128, 1, -128, 1, -128, 1, -128);
    for (int64_t i = 0; i < nb; i++, x += KN_BYTES(q2_K), y += KN_BYTES(q8_K)) {
        const __m128i sc = kn_lu128(x + KN_OFF(q2_K, scales));
        const __m256i lo4 = _mm256_broadcastsi128_si256(_mm_and_si128(sc, _mm_set1_epi8(0x0f)));
        const __m256i hi4 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sc, 4), _mm_set1_epi8(0x0f)));
        const int summs = kn_hsum_i32(_mm256_madd_epi16(kn_lu256(y + KN_Y8K_BSUMS), hi4));
        __m256i acc = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            const __m256i qv = kn_lu256(x + KN_OFF(q2_K, qs) + 32 * h);
            for (int s = 0; s < 4; s++) {
                const int c = 4 * h + s; // weights 32c..32c+31: bits 2s of qs[32h + l]
                const __m256i q = _mm256_and_si256(_mm256_srli_epi16(qv, 2 * s), _mm256_set1_epi8(3));
                // q in [0, 3]: a maddubs pair is at most 2 * 3 * 128 = 768
                const __m256i p = _mm256_maddubs_epi16(q, kn_lu256(y + KN_Y8K_QS + 32 * c));
                const __m256i scv = _mm256_shuffle_epi8(lo4, _mm256_add_epi8(pick, _mm256_set1_epi8((char)(2 * c))));
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, scv));
            }
        }
        const int isum = kn_hsum_i32(acc);
        const float d8 = kn_ldf(y + KN_Y8K_D);
        const float dall = d8 * kn_h2f(x + KN_OFF(q2_K, d));
        const float dmin = d8 * kn_h2f(x + KN_OFF(q2_K, dmin));
        sumf += dall * (float)isum - dmin * (float)summs;
    }
    return sumf;
}

// Q3_K: q = lo2 | hi << 2, minus 4, in [-4, 3].
float kn_dot_q3_K_q8_K_avx2(const void *w, const void *act, int64_t n) {
    const uint8_t *x = w, *y = act;
    const int64_t nb = n / 256;
    __m256 sums = _mm256_setzero_ps();
    const __m256i m3 = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1), four = _mm256_set1_epi8(4);
    for (int64_t i = 0; i < nb; i++, x += KN_BYTES(q3_K), y += KN_BYTES(q8_K)) {
        // 16 6-bit scales: low nibbles in bytes 0-7, high 2 bits in bytes 8-11 (kn_blocks_k.h)
        uint32_t u[3], s4[4];
        memcpy(u, x + KN_OFF(q3_K, scales), 12);
        s4[0] = (u[0] & 0x0f0f0f0f) | ((u[2] & 0x03030303) << 4);
        s4[1] = (u[1] & 0x0f0f0f0f) | (((u[2] >> 2) & 0x03030303) << 4);
        s4[2] = ((u[0] >> 4) & 0x0f0f0f0f) | (((u[2] >> 4) & 0x03030303) << 4);
        s4[3] = ((u[1] >> 4) & 0x0f0f0f0f) | (((u[2] >> 6) & 0x03030303) << 4);
        __m256i scv[4];
        kn_scales16(_mm256_sub_epi16(_mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)s4)),
                                     _mm256_set1_epi16(32)),
                    scv);
        __m256i hm = kn_pairs(kn_lu256(x + KN_OFF(q3_K, hmask))); // bit c of byte l: high bit of weight 32c + l
        __m256i lo = _mm256_setzero_si256(), hi = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            const __m256i qv = kn_pairs(kn_lu256(x + KN_OFF(q3_K, qs) + 32 * h));
            __m256i p[4];
            for (int s = 0; s < 4; s++) { // chunk 4h + s
                __m256i q = _mm256_and_si256(_mm256_srli_epi16(qv, 2 * s), m3);
                q = _mm256_or_si256(q, _mm256_slli_epi16(_mm256_and_si256(hm, one), 2));
                hm = _mm256_srli_epi16(hm, 1);
                // q - 4 in [-4, 3]: kn_mul_sx applies
                p[s] = kn_mul_sx(_mm256_sub_epi8(q, four), kn_pairs(kn_lu256(y + KN_Y8K_QS + 32 * (4 * h + s))));
            }
            kn_lanes_add(p[0], p[1], scv[2 * h], &lo, &hi);
            kn_lanes_add(p[2], p[3], scv[2 * h + 1], &lo, &hi);
        }
        const float d = kn_h2f(x + KN_OFF(q3_K, d)) * kn_ldf(y + KN_Y8K_D);
        sums = _mm256_add_ps(sums, _mm256_mul_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(kn_lanes_total(lo, hi))));
    }
    return kn_add_lanes(0.0f, sums);
}

// Q4_K/Q5_K scales (12 bytes at b): scale pair vectors for chunk pairs (2h, 2h+1), h = 0..3, and
// the mins term sum_j bsums[j] * m[j/2] (int, exact).
static inline int kn_q45_scales(const uint8_t *b, const uint8_t *bsums, __m256i scv[4]) {
    uint32_t u[3], sc[2], mn[2];
    memcpy(u, b, 12);
    sc[0] = u[0] & 0x3f3f3f3f;
    sc[1] = (u[2] & 0x0f0f0f0f) | (((u[0] >> 6) & 0x03030303) << 4);
    mn[0] = u[1] & 0x3f3f3f3f;
    mn[1] = ((u[2] >> 4) & 0x0f0f0f0f) | (((u[1] >> 6) & 0x03030303) << 4);
    // the 8 scales (6-bit) as int16: dword h = (scale 2h, scale 2h + 1)
    const __m256i s16 = _mm256_castsi128_si256(_mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)sc)));
    for (int h = 0; h < 4; h++) scv[h] = _mm256_permutevar8x32_epi32(s16, _mm256_set1_epi32(h));
    const __m128i dup = _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    const __m256i m16 = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(_mm_loadl_epi64((const __m128i *)mn), dup));
    return kn_hsum_i32(_mm256_madd_epi16(kn_lu256(bsums), m16));
}

// Q4_K and Q5_K (the same header: d, dmin, scales; Q5_K then qh; then qs).
_Static_assert(KN_OFF(q4_K, scales) == KN_OFF(q5_K, scales) && KN_OFF(q4_K, dmin) == KN_OFF(q5_K, dmin) &&
                   KN_OFF(q4_K, d) == KN_OFF(q5_K, d),
               "q4_K and q5_K headers");
// q in [0, 15] (Q4_K) or [0, 31] (Q5_K) unsigned: a maddubs pair is at most 2 * 31 * 128 = 7936.
__attribute__((always_inline)) static inline float kn_dot_q45(const uint8_t *x, const uint8_t *y, int64_t nb, int q5) {
    const size_t xbytes = q5 ? KN_BYTES(q5_K) : KN_BYTES(q4_K);
    const uint8_t *qs0 = x + (q5 ? KN_OFF(q5_K, qs) : KN_OFF(q4_K, qs));
    __m256 sums = _mm256_setzero_ps();
    float sumf = 0.0f;
    const __m256i m4 = _mm256_set1_epi8(0x0f), one = _mm256_set1_epi8(1);
    for (int64_t i = 0; i < nb; i++, x += xbytes, qs0 += xbytes, y += KN_BYTES(q8_K)) {
        __m256i scv[4];
        const int sumi = kn_q45_scales(x + KN_OFF(q4_K, scales), y + KN_Y8K_BSUMS, scv);
        __m256i hm = q5 ? kn_pairs(kn_lu256(x + KN_OFF(q5_K, qh))) : _mm256_setzero_si256(); // bit c: chunk c
        __m256i lo = _mm256_setzero_si256(), hi = _mm256_setzero_si256();
        for (int h = 0; h < 4; h++) { // qs[32h + l]: weight 64h + l (low), 64h + 32 + l (high)
            const __m256i qv = kn_pairs(kn_lu256(qs0 + 32 * h));
            __m256i a = _mm256_and_si256(qv, m4), b = _mm256_and_si256(_mm256_srli_epi16(qv, 4), m4);
            if (q5) {
                a = _mm256_or_si256(a, _mm256_slli_epi16(_mm256_and_si256(hm, one), 4));
                b = _mm256_or_si256(b, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hm, 1), one), 4));
                hm = _mm256_srli_epi16(hm, 2);
            }
            const __m256i pa = _mm256_maddubs_epi16(a, kn_pairs(kn_lu256(y + KN_Y8K_QS + 64 * h)));
            const __m256i pb = _mm256_maddubs_epi16(b, kn_pairs(kn_lu256(y + KN_Y8K_QS + 64 * h + 32)));
            kn_lanes_add(pa, pb, scv[h], &lo, &hi);
        }
        const float d8 = kn_ldf(y + KN_Y8K_D);
        const float d = kn_h2f(x + KN_OFF(q4_K, d)) * d8;
        sums = _mm256_add_ps(sums, _mm256_mul_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(kn_lanes_total(lo, hi))));
        const float dmin = kn_h2f(x + KN_OFF(q4_K, dmin)) * d8;
        sumf -= dmin * (float)sumi;
    }
    return kn_add_lanes(sumf, sums);
}

float kn_dot_q4_K_q8_K_avx2(const void *w, const void *act, int64_t n) {
    return kn_dot_q45(w, act, n / 256, 0);
}

float kn_dot_q5_K_q8_K_avx2(const void *w, const void *act, int64_t n) {
    return kn_dot_q45(w, act, n / 256, 1);
}

// Q6_K: q = lo4 | hi2 << 4, minus 32, in [-32, 31].
float kn_dot_q6_K_q8_K_avx2(const void *w, const void *act, int64_t n) {
    const uint8_t *x = w, *y = act;
    const int64_t nb = n / 256;
    __m256 sums = _mm256_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(0x0f), m2 = _mm256_set1_epi8(0x30), off = _mm256_set1_epi8(32);
    for (int64_t i = 0; i < nb; i++, x += KN_BYTES(q6_K), y += KN_BYTES(q8_K)) {
        __m256i scv[4];
        kn_scales16(_mm256_cvtepi8_epi16(kn_lu128(x + KN_OFF(q6_K, scales))), scv);
        __m256i lo = _mm256_setzero_si256(), hi = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            // chunk 4h + s: low 4 bits from ql[64h + 32(s % 2) + l] (high nibble when s >= 2),
            // high 2 bits at bits 2s of qh[32h + l]
            const uint8_t *ql = x + KN_OFF(q6_K, ql) + 64 * h;
            const __m256i l0 = kn_pairs(kn_lu256(ql)), l1 = kn_pairs(kn_lu256(ql + 32));
            const __m256i qh = kn_pairs(kn_lu256(x + KN_OFF(q6_K, qh) + 32 * h));
            __m256i q[4];
            q[0] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 4), m2));
            q[1] = _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 2), m2));
            q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(qh, m2));
            q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                   _mm256_and_si256(_mm256_srli_epi16(qh, 2), m2));
            __m256i p[4];
            for (int s = 0; s < 4; s++) // q - 32 in [-32, 31]: kn_mul_sx applies
                p[s] = kn_mul_sx(_mm256_sub_epi8(q[s], off), kn_pairs(kn_lu256(y + KN_Y8K_QS + 32 * (4 * h + s))));
            kn_lanes_add(p[0], p[1], scv[2 * h], &lo, &hi);
            kn_lanes_add(p[2], p[3], scv[2 * h + 1], &lo, &hi);
        }
        const float d = kn_h2f(x + KN_OFF(q6_K, d)) * kn_ldf(y + KN_Y8K_D);
        sums = _mm256_add_ps(sums, _mm256_mul_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(kn_lanes_total(lo, hi))));
    }
    return kn_add_lanes(0.0f, sums);
}

// K-quant rows are at least 256 values long, so a call per output costs little: their tiles
// simply loop.
#define KN_TILE_K(wt)                                                                          \
    void kn_dot_tile_##wt##_q8_K_avx2(const void *w, size_t w_stride, int n_rows,              \
                                      const void *act, size_t act_stride, int n_act, int64_t n, \
                                      float *out, size_t out_stride) {                         \
        for (int r = 0; r < n_act; r++)                                                        \
            for (int j = 0; j < n_rows; j++)                                                   \
                out[(size_t)r * out_stride + j] = kn_dot_##wt##_q8_K_avx2(                     \
                    (const uint8_t *)w + (size_t)j * w_stride,                                 \
                    (const uint8_t *)act + (size_t)r * act_stride, n);                         \
    }

KN_TILE_K(q2_K)
KN_TILE_K(q3_K)
KN_TILE_K(q4_K)
KN_TILE_K(q5_K)
KN_TILE_K(q6_K)
