// kn_dequant_avx2.c — row dequantization with AVX2 (kn_ops.h dequant_row) for the types whose
// rows the streaming engine converts most: Q8_0, Q4_0 and Q4_K; every other type goes to the
// reference, kn_dequantize_row. Each value is the reference's own expression (one product, and
// for Q4_K a difference, in fp32), so the rows are the reference's bit for bit; scales are read
// with F16C, which equals qp_fp16_to_fp32 except that a signalling NaN comes out quiet (a NaN
// either way). Compiled with -mavx2 -mfma -mf16c; used by the AVX2 and AVX-512 tables.
// Depends on intrinsics, kn_blocks.h and kn_blocks_k.h.
#include <immintrin.h>
#include <string.h>

#include "kn_blocks.h"
#include "kn_blocks_k.h"
#include "kn_ops.h"

static inline float kn_scale(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

// 8 bytes (signed or unsigned) at p as 8 floats.
static inline __m256 kn_i8x8(const uint8_t *p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}

// Q8_0 (d, 32 int8): y = (float)q * d.
static void kn_deq_q8_0(const uint8_t *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, b += KN_BYTES(q8_0), y += 32) {
        const __m256 d = _mm256_set1_ps(kn_scale(b));
        for (int k = 0; k < 4; k++) _mm256_storeu_ps(y + 8 * k, _mm256_mul_ps(kn_i8x8(b + KN_OFF(q8_0, qs) + 8 * k), d));
    }
}

// Q4_0 (d, 16 bytes of nibbles): value j from the low nibble of qs[j], value j + 16
// from its high nibble; y = (float)(nibble - 8) * d.
static void kn_deq_q4_0(const uint8_t *b, float *y, int64_t nb) {
    const __m128i m4 = _mm_set1_epi8(0x0f), eight = _mm_set1_epi8(8);
    for (int64_t i = 0; i < nb; i++, b += KN_BYTES(q4_0), y += 32) {
        const __m256 d = _mm256_set1_ps(kn_scale(b));
        const __m128i qs = _mm_loadu_si128((const __m128i *)(b + KN_OFF(q4_0, qs)));
        uint8_t v[32];
        _mm_storeu_si128((__m128i *)v, _mm_sub_epi8(_mm_and_si128(qs, m4), eight));
        _mm_storeu_si128((__m128i *)(v + 16), _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(qs, 4), m4), eight));
        for (int k = 0; k < 4; k++) _mm256_storeu_ps(y + 8 * k, _mm256_mul_ps(kn_i8x8(v + 8 * k), d));
    }
}

// Q4_K: sub-block j of 32 weights has y = (d * sc_j) * q - dmin * m_j, the products
// d * sc_j and dmin * m_j rounded to fp32 first, as in the reference.
static void kn_deq_q4_K(const uint8_t *b, float *y, int64_t nb) {
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    for (int64_t i = 0; i < nb; i++, b += KN_BYTES(q4_K)) {
        const float d = kn_scale(b + KN_OFF(q4_K, d)), dmin = kn_scale(b + KN_OFF(q4_K, dmin));
        const uint8_t *sc = b + KN_OFF(q4_K, scales), *q = b + KN_OFF(q4_K, qs);
        for (int j = 0; j < 8; j += 2, q += 32) { // 64 weights: low nibbles of q[0..31], then high
            for (int h = 0; h < 2; h++, y += 32) {
                uint8_t scale, min;
                kn_k4_scale_min(j + h, sc, &scale, &min);
                const __m256 d1 = _mm256_set1_ps(d * scale), m1 = _mm256_set1_ps(dmin * min);
                __m256i v = _mm256_loadu_si256((const __m256i *)q);
                v = _mm256_and_si256(h ? _mm256_srli_epi16(v, 4) : v, m4);
                uint8_t u[32];
                _mm256_storeu_si256((__m256i *)u, v);
                for (int k = 0; k < 4; k++)
                    _mm256_storeu_ps(y + 8 * k, _mm256_sub_ps(_mm256_mul_ps(d1, kn_i8x8(u + 8 * k)), m1));
            }
        }
    }
}

void kn_dequant_row_avx2(enum kn_type type, const void *src, float *dst, int64_t n) {
    switch (type) {
    case KN_Q8_0: kn_deq_q8_0(src, dst, n / 32); return;
    case KN_Q4_0: kn_deq_q4_0(src, dst, n / 32); return;
    case KN_Q4_K: kn_deq_q4_K(src, dst, n / KN_QK_K); return;
    default: kn_dequantize_row(type, src, dst, n);
    }
}
