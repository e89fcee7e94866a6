// kn_avx2.h — small AVX2 helpers shared by the AVX2 and AVX-512 kernel files (kn_pack_avx2.c,
// kn_qdot_avx2.c, kn_qdot_avx512.c). Include only from files compiled with -mavx2 -mf16c.
// Depends on intrinsics and libc only.
#ifndef KN_AVX2_H
#define KN_AVX2_H

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

static inline uint16_t kn_ld16(const uint8_t *p) {
    uint16_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline float kn_ldf(const uint8_t *p) {
    float v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline float kn_h2f(const uint8_t *p) { return _cvtsh_ss(kn_ld16(p)); }

static inline __m128i kn_lu128(const uint8_t *p) { return _mm_loadu_si128((const __m128i *)p); }
static inline __m256i kn_lu256(const uint8_t *p) { return _mm256_loadu_si256((const __m256i *)p); }

// The 16 nibble bytes at qs as 32 bytes in value order: low nibbles (values 0-15), then high
// nibbles (values 16-31), each in [0, 15].
static inline __m256i kn_nibbles(const uint8_t *qs) {
    __m128i b = kn_lu128(qs);
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(b, 4), b), _mm256_set1_epi8(0x0f));
}

// Byte j = 0x10 when bit j of the little-endian uint32 at qh is set, else 0 (Q5 fifth bits).
static inline __m256i kn_fifth_bits(const uint8_t *qh) {
    uint32_t h;
    memcpy(&h, qh, 4);
    const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                            2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)h), spread);
    v = _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x10));
}


// An 8 x 8 transpose of 32-bit elements, in place: r[i] lane j := old r[j] lane i.
static inline void kn_transpose8(__m256 r[8]) {
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
    r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
    r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
    r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
    r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

// The same for integer vectors (the shuffles move bits only).
static inline void kn_transpose8_si(__m256i v[8]) {
    __m256 r[8];
    for (int i = 0; i < 8; i++) r[i] = _mm256_castsi256_ps(v[i]);
    kn_transpose8(r);
    for (int i = 0; i < 8; i++) v[i] = _mm256_castps_si256(r[i]);
}

#endif
