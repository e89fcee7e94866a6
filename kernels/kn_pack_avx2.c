// kn_pack_avx2.c — panel packing (kn_ops.h pack_f32 / pack_f16) with AVX2 and F16C: eight rows
// at a time, eight k at a time, an 8 x 8 transpose in registers. Pure data movement and exact
// fp16 -> fp32 conversion, so the panels are the reference's bit for bit. Compiled with
// -mavx2 -mfma -mf16c; used by the AVX2 and AVX-512 tables. Depends on intrinsics and kn_avx2.h.
#include <immintrin.h>
#include <string.h>

#include "kn_avx2.h"
#include "kn_ops.h"
#include "qp.h"

// Columns g*8 .. g*8+7 of the panel for k in [0, n8), n8 a multiple of 8; rows past n_rows zero.
#define KN_PACK_BODY(LOAD)                                                                          \
    for (int g = 0; g < KN_NR / 8; g++) {                                                       \
        int nr = n_rows - g * 8;                                                                \
        if (nr <= 0) {                                                                          \
            for (int k = 0; k < n8; k++) _mm256_store_ps(panel + (size_t)k * KN_NR + g * 8, _mm256_setzero_ps()); \
            continue;                                                                           \
        }                                                                                       \
        for (int k = 0; k < n8; k += 8) {                                                       \
            __m256 r[8];                                                                        \
            for (int i = 0; i < 8; i++) r[i] = i < nr ? LOAD(g * 8 + i, k) : _mm256_setzero_ps(); \
            kn_transpose8(r);                                                                   \
            for (int i = 0; i < 8; i++) _mm256_store_ps(panel + (size_t)(k + i) * KN_NR + g * 8, r[i]); \
        }                                                                                       \
    }

void kn_pack_f32_avx2(const float *rows, size_t ld, int n_rows, int n_in, float *panel) {
    int n8 = n_in & ~7;
#define KN_LOAD_F32(row, k) _mm256_loadu_ps(rows + (size_t)(row) * ld + (k))
    KN_PACK_BODY(KN_LOAD_F32)
#undef KN_LOAD_F32
    for (int k = n8; k < n_in; k++)
        for (int c = 0; c < KN_NR; c++) panel[(size_t)k * KN_NR + c] = c < n_rows ? rows[c * ld + k] : 0.0f;
}

void kn_pack_f16_avx2(const uint16_t *rows, size_t ld, int n_rows, int n_in, float *panel) {
    int n8 = n_in & ~7;
#define KN_LOAD_F16(row, k) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(rows + (size_t)(row) * ld + (k))))
    KN_PACK_BODY(KN_LOAD_F16)
#undef KN_LOAD_F16
    for (int k = n8; k < n_in; k++)
        for (int c = 0; c < KN_NR; c++)
            panel[(size_t)k * KN_NR + c] = c < n_rows ? qp_fp16_to_fp32(rows[c * ld + k]) : 0.0f;
}
