// kn_ops_avx512.c — AVX-512 (F/BW/VL/DQ) kernels, bit-identical to kn_ops_ref.c (see kn_ops.h
// for the operation orders they reproduce). Compiled with the AVX-512 flags only; called only
// when the CPU and OS support them. Depends on intrinsics and libc only.
#include <immintrin.h>
#include <math.h>

#include "kn_ops.h"

static inline __mmask16 kn_mask(int n) { return n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1); }

// exp, lane-wise identical to kn_expf_ref.
static inline __m512 kn_exp16(__m512 x) {
    __mmask16 tiny = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.0f), _CMP_LT_OQ);
    x = _mm512_min_ps(x, _mm512_set1_ps(88.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fmadd_ps(n, _mm512_set1_ps(-0.693359375f), x);
    r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    __m512 r2 = _mm512_mul_ps(r, r);
    __m512 y = _mm512_fmadd_ps(p, r2, r);
    y = _mm512_add_ps(y, _mm512_set1_ps(1.0f));
    __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    y = _mm512_mul_ps(y, _mm512_castsi512_ps(e));
    return _mm512_mask_mov_ps(y, tiny, _mm512_setzero_ps());
}

static inline float kn_tree16(__m512 v) {
    __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    __m128 s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));
    return _mm_cvtss_f32(s1);
}

// ---------------------------------------------------------------------------------------------
// GEMM: 14 rows x 16 columns per micro-kernel call, one fma chain per lane.

#define KN_MR 14

static void kn_gemm_tile(const float *x, size_t ldx, int mr, const float *panel, int n_in,
                         float *y, size_t ldy, __mmask16 m) {
    __m512 acc[KN_MR];
    for (int r = 0; r < KN_MR; r++) acc[r] = _mm512_setzero_ps();
    if (mr == KN_MR) {
        for (int k = 0; k < n_in; k++) {
            __m512 w = _mm512_load_ps(panel + (size_t)k * KN_NR);
            for (int r = 0; r < KN_MR; r++)
                acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(x[(size_t)r * ldx + k]), w, acc[r]);
        }
    } else {
        for (int k = 0; k < n_in; k++) {
            __m512 w = _mm512_load_ps(panel + (size_t)k * KN_NR);
            for (int r = 0; r < mr; r++)
                acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(x[(size_t)r * ldx + k]), w, acc[r]);
        }
    }
    for (int r = 0; r < mr; r++) _mm512_mask_storeu_ps(y + (size_t)r * ldy, m, acc[r]);
}

static void kn_gemm_f32_avx512(const float *x, size_t ldx, int n_rows, const float *wp, int n_in,
                               int col0, int col1, float *y, size_t ldy) {
    for (int c = col0; c < col1; c += KN_NR) {
        const float *panel = wp + (size_t)(c / KN_NR) * n_in * KN_NR;
        __mmask16 m = kn_mask(col1 - c);
        for (int r = 0; r < n_rows; r += KN_MR) {
            int mr = n_rows - r < KN_MR ? n_rows - r : KN_MR;
            kn_gemm_tile(x + (size_t)r * ldx, ldx, mr, panel, n_in, y + (size_t)r * ldy + c, ldy, m);
        }
    }
}

// ---------------------------------------------------------------------------------------------

static void kn_rmsnorm_avx512(float *out, const float *x, const float *w, int n, float eps) {
    __m512 a = _mm512_setzero_ps();
    for (int i = 0; i < n; i += 16) {
        __m512 v = _mm512_maskz_loadu_ps(kn_mask(n - i), x + i);
        a = _mm512_fmadd_ps(v, v, a);
    }
    float ss = kn_tree16(a);
    ss = ss / (float)n + eps;
    float s = 1.0f / sqrtf(ss);
    __m512 vs = _mm512_set1_ps(s);
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = kn_mask(n - i);
        __m512 r = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, w + i),
                                 _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), vs));
        _mm512_mask_storeu_ps(out + i, m, r);
    }
}

static void kn_attend_avx512(float *out, const float *q, const float *kt, size_t kt_stride,
                             const float *v, int head_size, int n_keys, float *scratch) {
    float *s = scratch;
    __m512 vdiv = _mm512_set1_ps(sqrtf((float)head_size));
    __m512 vmax = _mm512_set1_ps(-INFINITY);
    for (int j = 0; j < n_keys; j += 16) {
        __mmask16 m = kn_mask(n_keys - j);
        __m512 acc = _mm512_setzero_ps();
        for (int d = 0; d < head_size; d++)
            acc = _mm512_fmadd_ps(_mm512_set1_ps(q[d]),
                                  _mm512_maskz_loadu_ps(m, kt + (size_t)d * kt_stride + j), acc);
        acc = _mm512_div_ps(acc, vdiv);
        _mm512_mask_storeu_ps(s + j, m, acc);
        vmax = _mm512_mask_max_ps(vmax, m, vmax, acc);
    }
    float mx = _mm512_reduce_max_ps(vmax);
    __m512 vm = _mm512_set1_ps(mx);
    __m512 sum16 = _mm512_setzero_ps();
    for (int j = 0; j < n_keys; j += 16) {
        __mmask16 m = kn_mask(n_keys - j);
        __m512 e = kn_exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, s + j), vm));
        e = _mm512_maskz_mov_ps(m, e);
        _mm512_mask_storeu_ps(s + j, m, e);
        sum16 = _mm512_add_ps(sum16, e);
    }
    __m512 vsum = _mm512_set1_ps(kn_tree16(sum16));
    for (int j = 0; j < n_keys; j += 16) {
        __mmask16 m = kn_mask(n_keys - j);
        _mm512_mask_storeu_ps(s + j, m, _mm512_div_ps(_mm512_maskz_loadu_ps(m, s + j), vsum));
    }
    for (int d = 0; d < head_size; d += 16) {
        __mmask16 m = kn_mask(head_size - d);
        __m512 acc = _mm512_setzero_ps();
        for (int j = 0; j < n_keys; j++)
            acc = _mm512_fmadd_ps(_mm512_set1_ps(s[j]),
                                  _mm512_maskz_loadu_ps(m, v + (size_t)j * head_size + d), acc);
        _mm512_mask_storeu_ps(out + d, m, acc);
    }
}

// One query at a time: each row is attend()'s computation.
static void kn_attend_rows_avx512(float *out, size_t out_stride, const float *q, size_t q_stride,
                                  int nq, const float *kt, size_t kt_stride, const float *v,
                                  int head_size, int n_keys0, float *scratch, size_t sstride) {
    (void)sstride;
    for (int i = 0; i < nq; i++)
        kn_attend_avx512(out + (size_t)i * out_stride, q + (size_t)i * q_stride, kt, kt_stride, v,
                         head_size, n_keys0 + i, scratch);
}

static void kn_swiglu_avx512(float *h, const float *g, const float *u, int n) {
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = kn_mask(n - i);
        __m512 vg = _mm512_maskz_loadu_ps(m, g + i);
        __m512 e = kn_exp16(_mm512_sub_ps(_mm512_setzero_ps(), vg));
        __m512 silu = _mm512_mul_ps(vg, _mm512_div_ps(one, _mm512_add_ps(one, e)));
        _mm512_mask_storeu_ps(h + i, m, _mm512_mul_ps(silu, _mm512_maskz_loadu_ps(m, u + i)));
    }
}

static double kn_logsumexp_avx512(const float *x, int n, float *max_out) {
    __m512 vmax = _mm512_set1_ps(-INFINITY);
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = kn_mask(n - i);
        vmax = _mm512_mask_max_ps(vmax, m, vmax, _mm512_maskz_loadu_ps(m, x + i));
    }
    float mx = _mm512_reduce_max_ps(vmax);
    __m512 vm = _mm512_set1_ps(mx);
    __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd(); // lanes 0..7, 8..15
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = kn_mask(n - i);
        __m512 e = _mm512_maskz_mov_ps(m, kn_exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), vm)));
        lo = _mm512_add_pd(lo, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
        hi = _mm512_add_pd(hi, _mm512_cvtps_pd(_mm512_extractf32x8_ps(e, 1)));
    }
    double acc[16];
    _mm512_storeu_pd(acc, lo);
    _mm512_storeu_pd(acc + 8, hi);
    for (int half = 8; half >= 1; half /= 2)
        for (int i = 0; i < half; i++) acc[i] = acc[i] + acc[i + half];
    if (max_out) *max_out = mx;
    return log(acc[0]) + (double)mx;
}

const struct kn_ops kn_ops_avx512 = {
    .name = "avx512",
    .gemm_f32 = kn_gemm_f32_avx512,
    .pack_f32 = kn_pack_f32_avx2,
    .pack_f16 = kn_pack_f16_avx2,
    .dequant_row = kn_dequant_row_avx2,
    .rmsnorm = kn_rmsnorm_avx512,
    .attend = kn_attend_avx512,
    .attend_rows = kn_attend_rows_avx512,
    .swiglu = kn_swiglu_avx512,
    .logsumexp = kn_logsumexp_avx512,
};
