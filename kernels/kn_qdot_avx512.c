// kn_qdot_avx512.c — act=q8 tiles with AVX512-VNNI (vpdpbusd, vpdpwssd on zmm): many weight rows
// times many quantized activation rows, each output bit for bit its scalar reference
// (kn_vecdot.c, kn_vecdot_k.c), as the AVX2 tiles of kn_qdot_avx2.c are.
//
// Layout: 16 weight rows, one per 32-bit lane. A block's (or super-block's) weights are unpacked
// once per chunk and transposed so that a lane holds 4 bytes (or 2 int16) of its own row; the
// activation's matching 4 bytes (2 int16) are broadcast to every lane. So no sum ever crosses
// lanes, and a lane's integer sum is exactly the reference's (integer sums are exact in any
// order); the float step then performs the reference's operations in its order, lane by lane.
//  - Legacy 32-value blocks: vpdpbusd takes unsigned bytes on one side and signed bytes on the
//    other. The weights become unsigned u = w + c (Q4_0: the stored nibble, c = 8; Q5_0: the
//    5-bit value, c = 16; Q8_0 and IQ4_NL: w + 128, c = 128; Q4_1 and Q5_1 store unsigned
//    values, c = 0) and the activations stay signed; then sum(w * y) = sum(u * y) - c * sum(y),
//    with sum(y) of the activation block formed once per activation row and chunk. vpdpbusd
//    adds into int32 without saturating: a block's sum is at most 32 * 255 * 128 in magnitude.
//  - K-quants (see "K-quants" below): weights times their sub-block scale as int16, activations
//    as int16, vpdpwssd, and the reference's 8 lane classes (weight k in class k % 8) kept apart.
// fp16 scales are converted with F16C (as kn_qdot_avx2.c: equal to qp_fp16_to_fp32 but for the
// payload of signalling NaNs). Compiled with the AVX-512 flags (F/BW/VL/DQ/VNNI); reached through
// kn_qtype_for_isa only on a CPU with them. Depends on intrinsics, libc, kn_avx2.h, kn_blocks.h,
// kn_blocks_k.h and kn_qdot.h. Never allocates.
#include <immintrin.h>
#include <string.h>

#include "kn_avx2.h"
#include "kn_blocks.h"
#include "kn_blocks_k.h"
#include "kn_qdot.h"
#include "qp.h"

// ---------------------------------------------------------------------------------------------
// Shared pieces

#define KN_VR 16 // weight rows per tile pass (the 16 lanes)
#define KN_VA 64 // activation rows per pass (their accumulators wait in memory between chunks)

// The fp16 at p[j] + off for the 16 rows, as 16 floats.
static inline __m512 kn_h2f16_at(const uint8_t *const p[KN_VR], size_t off) {
    uint16_t h[KN_VR];
    for (int j = 0; j < KN_VR; j++) h[j] = kn_ld16(p[j] + off);
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)h));
}

static inline __m512 kn_h2f1_512(const uint8_t *p) { return _mm512_set1_ps(kn_h2f(p)); }

// 16 rows of 8 dwords (lo: rows 0-7, hi: rows 8-15) into 8 vectors, vector g holding dword g of
// row j in lane j.
static inline void kn_transpose16x8(__m256i lo[8], __m256i hi[8], __m512i out[8]) {
    kn_transpose8_si(lo);
    kn_transpose8_si(hi);
    for (int g = 0; g < 8; g++) out[g] = _mm512_inserti64x4(_mm512_castsi256_si512(lo[g]), hi[g], 1);
}

// Stores the first m lanes of acc at o.
static inline void kn_store16(float *o, __m512 acc, int m) {
    _mm512_mask_storeu_ps(o, m >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << m) - 1), acc);
}

static inline __m512i kn_bcast4_512(const uint8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

// ---------------------------------------------------------------------------------------------
// Legacy 32-value blocks

enum { KN_L_Q4_0, KN_L_Q4_1, KN_L_Q5_0, KN_L_Q5_1, KN_L_Q8_0, KN_L_IQ4_NL };

static const int kn_v_xbytes[] = {KN_BYTES(q4_0), KN_BYTES(q4_1), KN_BYTES(q5_0),
                                  KN_BYTES(q5_1), KN_BYTES(q8_0), KN_BYTES(iq4_nl)};
static const int kn_v_bias[] = {8, 0, 16, 0, 128, 128}; // c: u = w + c

#define KN_VB 8 // blocks per chunk

// A block's 32 weights as unsigned bytes u = w + c, in value order.
__attribute__((always_inline)) static inline __m256i kn_v_wbytes(int t, const uint8_t *xb) {
    switch (t) {
    case KN_L_Q4_0: return kn_nibbles(xb + KN_OFF(q4_0, qs));
    case KN_L_Q4_1: return kn_nibbles(xb + KN_OFF(q4_1, qs));
    case KN_L_Q5_0: return _mm256_or_si256(kn_nibbles(xb + KN_OFF(q5_0, qs)), kn_fifth_bits(xb + KN_OFF(q5_0, qh)));
    case KN_L_Q5_1: return _mm256_or_si256(kn_nibbles(xb + KN_OFF(q5_1, qs)), kn_fifth_bits(xb + KN_OFF(q5_1, qh)));
    case KN_L_Q8_0: return _mm256_xor_si256(kn_lu256(xb + KN_OFF(q8_0, qs)), _mm256_set1_epi8(-128));
    default: { // IQ4_NL: grid value + 128 (the grid is in [-127, 113])
        const __m256i grid = _mm256_xor_si256(
            _mm256_broadcastsi128_si256(kn_lu128((const uint8_t *)kn_iq4nl_values)), _mm256_set1_epi8(-128));
        return _mm256_shuffle_epi8(grid, kn_nibbles(xb + KN_OFF(iq4_nl, qs)));
    }
    }
}

// The reference's per-block float term (kn_vecdot.c), lane-wise: fs = (float)sumi; dx, mx the
// weight blocks' d and m; dy, sy the activation block's d and s.
__attribute__((always_inline)) static inline __m512 kn_v_term(int t, __m512 fs, __m512 dx, __m512 mx, __m512 dy,
                                                               __m512 sy) {
    switch (t) {
    case KN_L_Q4_0: return _mm512_mul_ps(_mm512_mul_ps(fs, dx), dy); // (float)sumi * d_x * d_y
    case KN_L_Q4_1:
    case KN_L_Q5_1: // (d_x * d_y) * (float)sumi + m_x * s_y
        return _mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(dx, dy), fs), _mm512_mul_ps(mx, sy));
    case KN_L_Q5_0: return _mm512_mul_ps(_mm512_mul_ps(dx, dy), fs); // (d_x * d_y) * (float)sumi
    case KN_L_Q8_0: return _mm512_mul_ps(fs, _mm512_mul_ps(dx, dy)); // (float)sumi * (d_x * d_y)
    default: return _mm512_mul_ps(_mm512_mul_ps(dy, dx), fs);       // (d_y * d_x) * (float)sumi
    }
}

// Minus c times the sum of the 32 signed activation bytes at qs, in every lane (exact integers).
static inline __m512i kn_v_corr(int c, const uint8_t *qs) {
    if (!c) return _mm512_setzero_si512();
    // sad of (y + 128) against 0 sums the unsigned bytes; sum(y) = that - 32 * 128
    const __m256i s = _mm256_sad_epu8(_mm256_xor_si256(kn_lu256(qs), _mm256_set1_epi8(-128)), _mm256_setzero_si256());
    const __m128i h = _mm_add_epi64(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    const int sum = (int)(_mm_cvtsi128_si64(h) + _mm_extract_epi64(h, 1)) - 32 * 128;
    return _mm512_set1_epi32(-c * sum);
}

// The activation side of a chunk: na <= KN_VA activation rows times kb unpacked blocks (wt[k][g]:
// values 4g..4g+3 of block b0 + k, row j in lane j; dx, mx: the blocks' d and m), added into acc.
__attribute__((always_inline)) static inline void kn_v_apply(int t, __m512i wt[KN_VB][8], const __m512 dx[KN_VB],
                                                              const __m512 mx[KN_VB], int kb, const uint8_t *act,
                                                              size_t act_stride, int na, int64_t b0, __m512 acc[KN_VA]) {
    const int q81 = t == KN_L_Q4_1 || t == KN_L_Q5_1, c = kn_v_bias[t];
    const int ys = q81 ? KN_BYTES(q8_1) : KN_BYTES(q8_0), yq = q81 ? KN_OFF(q8_1, qs) : KN_OFF(q8_0, qs);
    // two activation rows at a time share every weight load; an odd last row is paired with
    // itself and stored once
    for (int r = 0; r < na; r += 2) {
        const int r1 = r + 1 < na ? r + 1 : r;
        const uint8_t *y0 = act + (size_t)r * act_stride + b0 * ys, *y1 = act + (size_t)r1 * act_stride + b0 * ys;
        __m512 s0 = acc[r], s1 = acc[r1];
        for (int k = 0; k < kb; k++) {
            const uint8_t *yb0 = y0 + k * ys, *yb1 = y1 + k * ys;
            __m512i i0 = kn_v_corr(c, yb0 + yq), i1 = kn_v_corr(c, yb1 + yq);
#pragma GCC unroll 8
            for (int g = 0; g < 8; g++) {
                i0 = _mm512_dpbusd_epi32(i0, wt[k][g], kn_bcast4_512(yb0 + yq + 4 * g));
                i1 = _mm512_dpbusd_epi32(i1, wt[k][g], kn_bcast4_512(yb1 + yq + 4 * g));
            }
            const __m512 sy0 = q81 ? kn_h2f1_512(yb0 + KN_OFF(q8_1, s)) : _mm512_setzero_ps();
            const __m512 sy1 = q81 ? kn_h2f1_512(yb1 + KN_OFF(q8_1, s)) : _mm512_setzero_ps();
            s0 = _mm512_add_ps(s0, kn_v_term(t, _mm512_cvtepi32_ps(i0), dx[k], mx[k], kn_h2f1_512(yb0), sy0));
            s1 = _mm512_add_ps(s1, kn_v_term(t, _mm512_cvtepi32_ps(i1), dx[k], mx[k], kn_h2f1_512(yb1), sy1));
        }
        acc[r] = s0;
        acc[r1] = s1; // r1 == r: s1 equals s0 (the same operations)
    }
}

// 16 weight rows (rows past m repeat row m - 1 and are not stored) times na <= KN_VA activation
// rows; blocks in chunks of KN_VB, unpacked once per chunk for all na rows.
__attribute__((always_inline)) static inline void kn_v_rows(int t, const uint8_t *w, size_t w_stride, int m,
                                                             const uint8_t *act, size_t act_stride, int na, int64_t nb,
                                                             float *out, size_t out_stride) {
    const int xs = kn_v_xbytes[t], q81 = t == KN_L_Q4_1 || t == KN_L_Q5_1;
    __m512i wt[KN_VB][8];
    __m512 dx[KN_VB], mx[KN_VB], acc[KN_VA];
    const uint8_t *xr[KN_VR];
    for (int j = 0; j < KN_VR; j++) xr[j] = w + (size_t)(j < m ? j : m - 1) * w_stride;
    for (int r = 0; r < na; r++) acc[r] = _mm512_setzero_ps();
    for (int64_t b0 = 0; b0 < nb; b0 += KN_VB) {
        const int kb = nb - b0 < KN_VB ? (int)(nb - b0) : KN_VB;
        for (int k = 0; k < kb; k++) {
            const uint8_t *xb[KN_VR];
            __m256i lo[8], hi[8];
            for (int j = 0; j < KN_VR; j++) xb[j] = xr[j] + (b0 + k) * xs;
#pragma GCC unroll 8
            for (int j = 0; j < 8; j++) {
                lo[j] = kn_v_wbytes(t, xb[j]);
                hi[j] = kn_v_wbytes(t, xb[8 + j]);
            }
            kn_transpose16x8(lo, hi, wt[k]); // vector g: values 4g..4g+3, row j in lane j
            dx[k] = kn_h2f16_at(xb, 0);
            mx[k] = q81 ? kn_h2f16_at(xb, 2) : _mm512_setzero_ps();
        }
        kn_v_apply(t, wt, dx, mx, kb, act, act_stride, na, b0, acc);
    }
    for (int r = 0; r < na; r++) kn_store16(out + (size_t)r * out_stride, acc[r], m);
}

// ---------------------------------------------------------------------------------------------
// Q4_0 and Q8_0 on their x16 layouts (kn_qdot.h, kn_q4_0x16_pack / kn_q8_0x16_pack): the lanes
// are rows already, so nothing is transposed at run time. Q4_0: a group's block is four 64-byte
// vectors, vector t holding bytes 4t..4t+3 of row j's nibbles in lane j: the low nibbles are
// values 4t..4t+3, the high ones values 16 + 4t.. (vector g = t + 4 of kn_v_apply's order).
// Q8_0: eight vectors, vector g holding values 4g..4g+3 of row j as u = w + 128. Then the
// block's 16 scales. One activation row (decoding) runs KN_XG groups at once, sharing the
// activation block's broadcasts and its -c * sum(y); more rows go through kn_v_apply per group.

#define KN_XG 4 // groups in flight for one activation row: 8 independent dpbusd chains, 4 fp chains

static inline int kn_x16_qbytes(int t) { return t == KN_L_Q4_0 ? 256 : 512; } // weight bytes per block

__attribute__((always_inline)) static inline void kn_x16_unpack(int t, const uint8_t *q, __m512i wt[8]) {
    const __m512i m4 = _mm512_set1_epi8(0x0f);
#pragma GCC unroll 8
    for (int g = 0; g < 8; g++) {
        if (t == KN_L_Q8_0) {
            wt[g] = _mm512_load_si512((const void *)(q + 64 * g));
        } else if (g < 4) {
            const __m512i v = _mm512_load_si512((const void *)(q + 64 * g));
            wt[g] = _mm512_and_si512(v, m4);
            wt[4 + g] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
        }
    }
}

// ng <= KN_XG groups (gb bytes apart, nb blocks each) times one activation row: out[16 g + j] for
// the first m rows of the last group, all 16 of the others.
__attribute__((always_inline)) static inline void kn_x16_gemv(int t, int ng, const uint8_t *wx, size_t gb, int m,
                                                               const uint8_t *act, int64_t nb, float *out) {
    const int qb = kn_x16_qbytes(t);
    __m512 s[KN_XG];
#pragma GCC unroll 4
    for (int g = 0; g < ng; g++) s[g] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *yb = act + b * KN_BYTES(q8_0), *yq = yb + KN_OFF(q8_0, qs);
        const __m512i corr = kn_v_corr(kn_v_bias[t], yq);
        const __m512 dy = kn_h2f1_512(yb), zero = _mm512_setzero_ps();
        __m512i y[8];
#pragma GCC unroll 8
        for (int v = 0; v < 8; v++) y[v] = kn_bcast4_512(yq + 4 * v);
#pragma GCC unroll 4
        for (int g = 0; g < ng; g++) {
            __m512i wt[8];
            kn_x16_unpack(t, wx + g * gb + b * qb, wt);
            __m512i i0 = corr, i1 = _mm512_setzero_si512(); // two chains: integer sums in any order
#pragma GCC unroll 4
            for (int v = 0; v < 4; v++) {
                i0 = _mm512_dpbusd_epi32(i0, wt[v], y[v]);
                i1 = _mm512_dpbusd_epi32(i1, wt[4 + v], y[4 + v]);
            }
            const __m512 dx = _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)(wx + g * gb + nb * qb + b * 32)));
            s[g] = _mm512_add_ps(s[g], kn_v_term(t, _mm512_cvtepi32_ps(_mm512_add_epi32(i0, i1)), dx, zero, dy, zero));
        }
    }
#pragma GCC unroll 4
    for (int g = 0; g < ng; g++) kn_store16(out + 16 * g, s[g], g == ng - 1 ? m : 16);
}

// One group (m <= 16 rows) times na <= KN_VA activation rows, chunks of KN_VB blocks.
__attribute__((always_inline)) static inline void kn_x16_rows(int t, const uint8_t *wx, int m, const uint8_t *act,
                                                               size_t act_stride, int na, int64_t nb, float *out,
                                                               size_t out_stride) {
    const int qb = kn_x16_qbytes(t);
    __m512i wt[KN_VB][8];
    __m512 dx[KN_VB], mx[KN_VB], acc[KN_VA];
    for (int r = 0; r < na; r++) acc[r] = _mm512_setzero_ps();
    for (int k = 0; k < KN_VB; k++) mx[k] = _mm512_setzero_ps();
    for (int64_t b0 = 0; b0 < nb; b0 += KN_VB) {
        const int kb = nb - b0 < KN_VB ? (int)(nb - b0) : KN_VB;
        for (int k = 0; k < kb; k++) {
            kn_x16_unpack(t, wx + (b0 + k) * qb, wt[k]);
            dx[k] = _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)(wx + nb * qb + (b0 + k) * 32)));
        }
        kn_v_apply(t, wt, dx, mx, kb, act, act_stride, na, b0, acc);
    }
    for (int r = 0; r < na; r++) kn_store16(out + (size_t)r * out_stride, acc[r], m);
}

__attribute__((always_inline)) static inline void kn_x16_dot(int t, const uint8_t *wx, size_t gb, int n_rows,
                                                              const uint8_t *act, size_t act_stride, int n_act,
                                                              int64_t nb, float *out, size_t out_stride) {
    const int ng = (n_rows + KN_VR - 1) / KN_VR;
    if (n_act == 1) {
        int g = 0;
        for (; g + KN_XG <= ng; g += KN_XG)
            kn_x16_gemv(t, KN_XG, wx + g * gb, gb, QP_MIN(16, n_rows - 16 * (g + KN_XG - 1)), act, nb, out + 16 * g);
        for (; g < ng; g++) kn_x16_gemv(t, 1, wx + g * gb, gb, QP_MIN(16, n_rows - 16 * g), act, nb, out + 16 * g);
        return;
    }
    for (int a0 = 0; a0 < n_act; a0 += KN_VA) {
        const int na = n_act - a0 < KN_VA ? n_act - a0 : KN_VA;
        for (int g = 0; g < ng; g++)
            kn_x16_rows(t, wx + g * gb, QP_MIN(16, n_rows - 16 * g), act + (size_t)a0 * act_stride, act_stride, na, nb,
                        out + (size_t)a0 * out_stride + 16 * g, out_stride);
    }
}

void kn_dot_x16_q4_0_q8_0_avx512(const void *wx, int n_rows, const void *act, size_t act_stride, int n_act,
                                 int64_t n, float *out, size_t out_stride) {
    kn_x16_dot(KN_L_Q4_0, wx, kn_q4_0x16_bytes(n), n_rows, act, act_stride, n_act, n / 32, out, out_stride);
}

void kn_dot_x16_q8_0_q8_0_avx512(const void *wx, int n_rows, const void *act, size_t act_stride, int n_act,
                                 int64_t n, float *out, size_t out_stride) {
    kn_x16_dot(KN_L_Q8_0, wx, kn_q8_0x16_bytes(n), n_rows, act, act_stride, n_act, n / 32, out, out_stride);
}

// ---------------------------------------------------------------------------------------------
// K-quants (references: kn_vecdot_k.c)
//
// Q3_K..Q6_K accumulate per super-block aux32[l] = sum over weights k with k % 8 == l of
// scale(k) * q8[k] * q(k) (q signed for Q3_K and Q6_K), then sums[l] += d * (float)aux32[l].
// Here each weight becomes w'(k) = scale(k) * q(k) as an int16 (|w'| <= 32 * 127 = 4064: Q6_K),
// and weights k, k + 8 (k % 16 < 8: the same class l = k % 8, the same sub-block of 16 or 32)
// share a dword, as do the activations: dword (i, l), i = 0..15, holds (w'(16i + l),
// w'(16i + l + 8)). vpdpwssd adds both products of a dword into int32, so class l's 16 dwords
// give aux32[l] exactly (a class sums 32 products of at most 4064 * 127). Q2_K's reference sums
// every product in one int (isum): the sum of the 8 class sums. The mins terms (Q2_K's summs,
// Q4_K/Q5_K's sumi = sum_j bsums[j] * min(j)) pair mins with the activation's bsums the same way.
// A super-block's weights for 16 rows are unpacked once and transposed (lane j: row j), then
// used for every activation row of the pass.

enum { KN_K_Q2, KN_K_Q3, KN_K_Q4, KN_K_Q5, KN_K_Q6 };

// 16 rows of 16 dwords into 16 vectors: out[c] lane j = r[j] lane c.
static inline void kn_transpose16(const __m512i r[16], __m512i out[16]) {
    __m512i t[16], u[16];
    for (int p = 0; p < 8; p++) {
        t[2 * p] = _mm512_unpacklo_epi32(r[2 * p], r[2 * p + 1]);
        t[2 * p + 1] = _mm512_unpackhi_epi32(r[2 * p], r[2 * p + 1]);
    }
    for (int q = 0; q < 4; q++) { // rows 4q..4q+3: u[4q + m] holds column 4L + m in lane L
        u[4 * q + 0] = _mm512_unpacklo_epi64(t[4 * q], t[4 * q + 2]);
        u[4 * q + 1] = _mm512_unpackhi_epi64(t[4 * q], t[4 * q + 2]);
        u[4 * q + 2] = _mm512_unpacklo_epi64(t[4 * q + 1], t[4 * q + 3]);
        u[4 * q + 3] = _mm512_unpackhi_epi64(t[4 * q + 1], t[4 * q + 3]);
    }
    for (int m = 0; m < 4; m++) {
        const __m512i v = _mm512_shuffle_i32x4(u[m], u[4 + m], 0x88), w = _mm512_shuffle_i32x4(u[m], u[4 + m], 0xdd);
        const __m512i v2 = _mm512_shuffle_i32x4(u[8 + m], u[12 + m], 0x88), w2 = _mm512_shuffle_i32x4(u[8 + m], u[12 + m], 0xdd);
        out[m] = _mm512_shuffle_i32x4(v, v2, 0x88);
        out[8 + m] = _mm512_shuffle_i32x4(v, v2, 0xdd);
        out[4 + m] = _mm512_shuffle_i32x4(w, w2, 0x88);
        out[12 + m] = _mm512_shuffle_i32x4(w, w2, 0xdd);
    }
}

// 32 int8 values of chunk c (weights 32c..32c+31) times their scales (sc[i]: group i of 16) as
// int16, stored in dword order (i, l) at out + 16 * c: group i = 2c, 2c + 1.
static inline void kn_k_pairs(__m256i q, const int16_t sc[16], int c, int32_t *out) {
    for (int h = 0; h < 2; h++) {
        const int i = 2 * c + h;
        const __m256i v = _mm256_mullo_epi16(_mm256_cvtepi8_epi16(h ? _mm256_extracti128_si256(q, 1) : _mm256_castsi256_si128(q)),
                                             _mm256_set1_epi16(sc[i]));
        const __m128i a = _mm256_castsi256_si128(v), b = _mm256_extracti128_si256(v, 1);
        _mm_storeu_si128((__m128i *)(out + 8 * i), _mm_unpacklo_epi16(a, b));
        _mm_storeu_si128((__m128i *)(out + 8 * i + 4), _mm_unpackhi_epi16(a, b));
    }
}

// One super-block of one weight row: w' in dword order (128 dwords) and the mins as int16 pairs
// matching the bsums pairs (mn[p] = (min of bsums 2p, min of bsums 2p + 1); Q2_K, Q4_K, Q5_K).
__attribute__((always_inline)) static inline void kn_k_unpack(int t, const uint8_t *x, int32_t wq[128], int32_t mn[8]) {
    int16_t sc[16], mins[16];
    __m256i q[8];
    const __m256i m3 = _mm256_set1_epi8(3), m4 = _mm256_set1_epi8(0x0f), one = _mm256_set1_epi8(1);
    switch (t) {
    case KN_K_Q2: {
        const uint8_t *s = x + KN_OFF(q2_K, scales);
        for (int j = 0; j < 16; j++) sc[j] = s[j] & 15, mins[j] = s[j] >> 4;
        for (int h = 0; h < 2; h++) {
            const __m256i qv = kn_lu256(x + KN_OFF(q2_K, qs) + 32 * h);
            for (int s2 = 0; s2 < 4; s2++) q[4 * h + s2] = _mm256_and_si256(_mm256_srli_epi16(qv, 2 * s2), m3);
        }
        break;
    }
    case KN_K_Q3: {
        const uint8_t *b = x + KN_OFF(q3_K, scales);
        for (int j = 0; j < 16; j++) {
            const int lo = j < 8 ? (b[j] & 0xF) : (b[j - 8] >> 4), hi = (b[8 + j % 4] >> (2 * (j / 4))) & 3;
            sc[j] = (int16_t)((lo | (hi << 4)) - 32);
        }
        __m256i hm = kn_lu256(x + KN_OFF(q3_K, hmask)); // bit c of byte l: high bit of weight 32c + l
        for (int h = 0; h < 2; h++) {
            const __m256i qv = kn_lu256(x + KN_OFF(q3_K, qs) + 32 * h);
            for (int s2 = 0; s2 < 4; s2++) {
                __m256i v = _mm256_and_si256(_mm256_srli_epi16(qv, 2 * s2), m3);
                v = _mm256_or_si256(v, _mm256_slli_epi16(_mm256_and_si256(hm, one), 2));
                hm = _mm256_srli_epi16(hm, 1);
                q[4 * h + s2] = _mm256_sub_epi8(v, _mm256_set1_epi8(4));
            }
        }
        break;
    }
    case KN_K_Q4:
    case KN_K_Q5: {
        for (int j = 0; j < 8; j++) {
            uint8_t a, m;
            kn_k4_scale_min(j, x + KN_OFF(q4_K, scales), &a, &m);
            sc[2 * j] = sc[2 * j + 1] = a;
            mins[2 * j] = mins[2 * j + 1] = m;
        }
        const uint8_t *qs = x + (t == KN_K_Q5 ? KN_OFF(q5_K, qs) : KN_OFF(q4_K, qs));
        const __m256i hm = t == KN_K_Q5 ? kn_lu256(x + KN_OFF(q5_K, qh)) : _mm256_setzero_si256();
        for (int h = 0; h < 4; h++) { // qs[32h + l]: weight 64h + l (low), 64h + 32 + l (high)
            const __m256i qv = kn_lu256(qs + 32 * h);
            __m256i a = _mm256_and_si256(qv, m4), b = _mm256_and_si256(_mm256_srli_epi16(qv, 4), m4);
            if (t == KN_K_Q5) {
                a = _mm256_or_si256(a, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hm, 2 * h), one), 4));
                b = _mm256_or_si256(b, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hm, 2 * h + 1), one), 4));
            }
            q[2 * h] = a;
            q[2 * h + 1] = b;
        }
        break;
    }
    default: { // KN_K_Q6
        const int8_t *s = (const int8_t *)(x + KN_OFF(q6_K, scales));
        for (int j = 0; j < 16; j++) sc[j] = s[j];
        const __m256i m2 = _mm256_set1_epi8(0x30), off = _mm256_set1_epi8(32);
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = x + KN_OFF(q6_K, ql) + 64 * h;
            const __m256i l0 = kn_lu256(ql), l1 = kn_lu256(ql + 32), qh = kn_lu256(x + KN_OFF(q6_K, qh) + 32 * h);
            q[4 * h + 0] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 4), m2));
            q[4 * h + 1] = _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 2), m2));
            q[4 * h + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(qh, m2));
            q[4 * h + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                           _mm256_and_si256(_mm256_srli_epi16(qh, 2), m2));
            for (int s2 = 0; s2 < 4; s2++) q[4 * h + s2] = _mm256_sub_epi8(q[4 * h + s2], off);
        }
        break;
    }
    }
    for (int c = 0; c < 8; c++) kn_k_pairs(q[c], sc, c, wq);
    if (t == KN_K_Q2 || t == KN_K_Q4 || t == KN_K_Q5)
        for (int p = 0; p < 8; p++) mn[p] = (int32_t)((uint32_t)(uint16_t)mins[2 * p] | (uint32_t)(uint16_t)mins[2 * p + 1] << 16);
}

// An activation super-block's quants in dword order (i, l) as int16 pairs (128 dwords).
static inline void kn_k_ypairs(const uint8_t *qs, int32_t out[128]) {
    const __m512i order = _mm512_set4_epi32(0x0f070e06, 0x0d050c04, 0x0b030a02, 0x09010800); // 0 8 1 9 .. 7 15
    for (int c = 0; c < 4; c++) { // 64 bytes: groups 4c..4c+3, each reordered within its 16 bytes
        const __m512i v = _mm512_shuffle_epi8(_mm512_loadu_si512((const void *)(qs + 64 * c)), order);
        _mm512_storeu_si512((void *)(out + 32 * c), _mm512_cvtepi8_epi16(_mm512_castsi512_si256(v)));
        _mm512_storeu_si512((void *)(out + 32 * c + 16), _mm512_cvtepi8_epi16(_mm512_extracti64x4_epi64(v, 1)));
    }
}

// 16 weight rows (rows past m repeat row m - 1, not stored) times na <= KN_VA activation rows of
// nb super-blocks. acc: per activation row 9 vectors (the 8 class sums, then sumf).
__attribute__((always_inline)) static inline void kn_k_rows(int t, const uint8_t *w, size_t w_stride, int m,
                                                             const uint8_t *act, size_t act_stride, int na, int64_t nb,
                                                             float *out, size_t out_stride) {
    static const size_t xbytes[] = {KN_BYTES(q2_K), KN_BYTES(q3_K), KN_BYTES(q4_K), KN_BYTES(q5_K), KN_BYTES(q6_K)};
    static const size_t doff[] = {KN_OFF(q2_K, d), KN_OFF(q3_K, d), KN_OFF(q4_K, d), KN_OFF(q5_K, d), KN_OFF(q6_K, d)};
    const size_t xs = xbytes[t];
    const int has_min = t == KN_K_Q2 || t == KN_K_Q4 || t == KN_K_Q5;
    const size_t dminoff = t == KN_K_Q2 ? KN_OFF(q2_K, dmin) : KN_OFF(q4_K, dmin);
    _Alignas(64) int32_t rowq[KN_VR][128], rowm[KN_VR][16], yq[2][128];
    __m512i wt[128], wm[8];
    __m512 acc[KN_VA][9];
    const uint8_t *xr[KN_VR];
    for (int j = 0; j < KN_VR; j++) xr[j] = w + (size_t)(j < m ? j : m - 1) * w_stride;
    for (int r = 0; r < na; r++)
        for (int l = 0; l < 9; l++) acc[r][l] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *xb[KN_VR];
        for (int j = 0; j < KN_VR; j++) {
            xb[j] = xr[j] + (size_t)b * xs;
            kn_k_unpack(t, xb[j], rowq[j], rowm[j]);
        }
        for (int blk = 0; blk < 8; blk++) { // dwords 16 blk .. 16 blk + 15 of the 16 rows
            __m512i r16[16];
            for (int j = 0; j < KN_VR; j++) r16[j] = _mm512_load_si512((const void *)(rowq[j] + 16 * blk));
            kn_transpose16(r16, wt + 16 * blk);
        }
        if (has_min) {
            __m512i r16[16], o16[16];
            for (int j = 0; j < KN_VR; j++) r16[j] = _mm512_load_si512((const void *)rowm[j]); // lanes 8-15 unused
            kn_transpose16(r16, o16);
            for (int p = 0; p < 8; p++) wm[p] = o16[p];
        }
        const __m512 dx = kn_h2f16_at(xb, doff[t]), dmx = has_min ? kn_h2f16_at(xb, dminoff) : _mm512_setzero_ps();
        // two activation rows at a time share every weight load; an odd last row is paired with
        // itself (the same operations, stored once)
        for (int r = 0; r < na; r += 2) {
            const int r1 = r + 1 < na ? r + 1 : r;
            const uint8_t *yb[2] = {act + (size_t)r * act_stride + (size_t)b * KN_BYTES(q8_K),
                                    act + (size_t)r1 * act_stride + (size_t)b * KN_BYTES(q8_K)};
            kn_k_ypairs(yb[0] + KN_OFF(q8_K, qs), yq[0]);
            kn_k_ypairs(yb[1] + KN_OFF(q8_K, qs), yq[1]);
            __m512i aux[2][8];
#pragma GCC unroll 8
            for (int l = 0; l < 8; l++) {
                __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
#pragma GCC unroll 16
                for (int i = 0; i < 16; i++) {
                    const __m512i wv = wt[8 * i + l];
                    s0 = _mm512_dpwssd_epi32(s0, wv, _mm512_set1_epi32(yq[0][8 * i + l]));
                    s1 = _mm512_dpwssd_epi32(s1, wv, _mm512_set1_epi32(yq[1][8 * i + l]));
                }
                aux[0][l] = s0;
                aux[1][l] = s1;
            }
            for (int h = 0; h < 2; h++) {
                __m512 *a = acc[h ? r1 : r];
                __m512i mi = _mm512_setzero_si512();
                if (has_min)
                    for (int p = 0; p < 8; p++)
                        mi = _mm512_dpwssd_epi32(mi, wm[p], kn_bcast4_512(yb[h] + KN_OFF(q8_K, bsums) + 4 * p));
                const __m512 vd8 = _mm512_set1_ps(kn_ldf(yb[h] + KN_OFF(q8_K, d)));
                if (t == KN_K_Q2) { // sumf += dall * (float)isum - dmin * (float)summs, dall = d8 * d
                    __m512i isum = aux[h][0];
                    for (int l = 1; l < 8; l++) isum = _mm512_add_epi32(isum, aux[h][l]);
                    const __m512 u = _mm512_mul_ps(_mm512_mul_ps(vd8, dx), _mm512_cvtepi32_ps(isum));
                    const __m512 c = _mm512_mul_ps(_mm512_mul_ps(vd8, dmx), _mm512_cvtepi32_ps(mi));
                    a[8] = _mm512_add_ps(a[8], _mm512_sub_ps(u, c));
                } else { // sums[l] += (d * d8) * (float)aux32[l]; Q4_K/Q5_K: sumf -= (dmin * d8) * (float)sumi
                    const __m512 d = _mm512_mul_ps(dx, vd8);
                    for (int l = 0; l < 8; l++) a[l] = _mm512_add_ps(a[l], _mm512_mul_ps(d, _mm512_cvtepi32_ps(aux[h][l])));
                    if (has_min) a[8] = _mm512_sub_ps(a[8], _mm512_mul_ps(_mm512_mul_ps(dmx, vd8), _mm512_cvtepi32_ps(mi)));
                }
                if (r1 == r) break;
            }
        }
    }
    for (int r = 0; r < na; r++) {
        __m512 sumf = acc[r][8]; // Q3_K/Q6_K: 0.0f; then += sums[0] .. sums[7] in order
        if (t != KN_K_Q2)
            for (int l = 0; l < 8; l++) sumf = _mm512_add_ps(sumf, acc[r][l]);
        kn_store16(out + (size_t)r * out_stride, sumf, m);
    }
}

// Passes of KN_VA activation rows times groups of KN_VR weight rows; kq: a k-quant type (t from
// the KN_K_ enum, nb super-blocks), else a legacy one (KN_L_, nb blocks of 32).
__attribute__((always_inline)) static inline void kn_v_tile(int kq, int t, const uint8_t *w, size_t w_stride,
                                                             int n_rows, const uint8_t *act, size_t act_stride,
                                                             int n_act, int64_t nb, float *out, size_t out_stride) {
    for (int a0 = 0; a0 < n_act; a0 += KN_VA) {
        const int na = n_act - a0 < KN_VA ? n_act - a0 : KN_VA;
        for (int j0 = 0; j0 < n_rows; j0 += KN_VR) {
            const int m = n_rows - j0 < KN_VR ? n_rows - j0 : KN_VR;
            const uint8_t *wj = w + (size_t)j0 * w_stride, *aa = act + (size_t)a0 * act_stride;
            float *o = out + (size_t)a0 * out_stride + j0;
            if (kq) kn_k_rows(t, wj, w_stride, m, aa, act_stride, na, nb, o, out_stride);
            else kn_v_rows(t, wj, w_stride, m, aa, act_stride, na, nb, o, out_stride);
        }
    }
}

#define KN_V_KQUANT(wt, T)                                                                     \
    void kn_dot_tile_##wt##_q8_K_avx512(const void *w, size_t w_stride, int n_rows,            \
                                        const void *act, size_t act_stride, int n_act,         \
                                        int64_t n, float *out, size_t out_stride) {            \
        kn_v_tile(1, T, w, w_stride, n_rows, act, act_stride, n_act, n / KN_QK_K, out, out_stride); \
    }

KN_V_KQUANT(q2_K, KN_K_Q2)
KN_V_KQUANT(q3_K, KN_K_Q3)
KN_V_KQUANT(q4_K, KN_K_Q4)
KN_V_KQUANT(q5_K, KN_K_Q5)
KN_V_KQUANT(q6_K, KN_K_Q6)

#define KN_V_LEGACY(wt, at, T)                                                                 \
    void kn_dot_tile_##wt##_##at##_avx512(const void *w, size_t w_stride, int n_rows,          \
                                          const void *act, size_t act_stride, int n_act,       \
                                          int64_t n, float *out, size_t out_stride) {          \
        kn_v_tile(0, T, w, w_stride, n_rows, act, act_stride, n_act, n / 32, out, out_stride); \
    }

KN_V_LEGACY(q4_0, q8_0, KN_L_Q4_0)
KN_V_LEGACY(q4_1, q8_1, KN_L_Q4_1)
KN_V_LEGACY(q5_0, q8_0, KN_L_Q5_0)
KN_V_LEGACY(q5_1, q8_1, KN_L_Q5_1)
KN_V_LEGACY(q8_0, q8_0, KN_L_Q8_0)
KN_V_LEGACY(iq4_nl, q8_0, KN_L_IQ4_NL)
