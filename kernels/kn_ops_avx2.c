// kn_ops_avx2.c — AVX2+FMA kernels, bit-identical to kn_ops_ref.c (see kn_ops.h for the
// operation orders they reproduce). Compiled with -mavx2 -mfma -mf16c only; called only when
// the CPU has them. Depends on intrinsics and libc only.
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kn_ops.h"

// ---------------------------------------------------------------------------------------------
// exp, lane-wise identical to kn_expf_ref.

static inline __m256 kn_exp8(__m256 x) {
    const __m256 lo = _mm256_set1_ps(-87.0f);
    __m256 tiny = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_min_ps(x, _mm256_set1_ps(88.0f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fmadd_ps(n, _mm256_set1_ps(-0.693359375f), x);
    r = _mm256_fmadd_ps(n, _mm256_set1_ps(2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    __m256 r2 = _mm256_mul_ps(r, r);
    __m256 y = _mm256_fmadd_ps(p, r2, r);
    y = _mm256_add_ps(y, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    y = _mm256_mul_ps(y, _mm256_castsi256_ps(e));
    return _mm256_andnot_ps(tiny, y);
}

static inline float kn_expf_lane(float x) {
    float t[8] = {x};
    _mm256_storeu_ps(t, kn_exp8(_mm256_loadu_ps(t)));
    return t[0];
}

// Loads up to 8 floats, the rest +0.0f.
static inline __m256 kn_load_part(const float *p, int n) {
    if (n >= 8) return _mm256_loadu_ps(p);
    float tmp[8] = {0};
    memcpy(tmp, p, (size_t)n * sizeof(float));
    return _mm256_loadu_ps(tmp);
}

static inline void kn_store_part(float *p, __m256 v, int n) {
    if (n >= 8) {
        _mm256_storeu_ps(p, v);
        return;
    }
    float tmp[8];
    _mm256_storeu_ps(tmp, v);
    memcpy(p, tmp, (size_t)n * sizeof(float));
}

// The fixed tree over 16 lanes held as a (lanes 0..7) and b (lanes 8..15).
static inline float kn_tree16(__m256 a, __m256 b) {
    __m256 s8 = _mm256_add_ps(a, b);                                                  // 16 → 8
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1)); // 8 → 4
    __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));                                // 4 → 2
    __m128 s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));                            // 2 → 1
    return _mm_cvtss_f32(s1);
}

// ---------------------------------------------------------------------------------------------
// GEMM: 6 rows x 16 columns (one panel) per micro-kernel call; each lane is one output's fma
// chain over k, as in the reference.

#define KN_MR 6

static void kn_gemm_tile6(const float *x, size_t ldx, const float *panel, int n_in, float *y,
                          size_t ldy, int ncols) {
    __m256 a00 = _mm256_setzero_ps(), a01 = _mm256_setzero_ps();
    __m256 a10 = _mm256_setzero_ps(), a11 = _mm256_setzero_ps();
    __m256 a20 = _mm256_setzero_ps(), a21 = _mm256_setzero_ps();
    __m256 a30 = _mm256_setzero_ps(), a31 = _mm256_setzero_ps();
    __m256 a40 = _mm256_setzero_ps(), a41 = _mm256_setzero_ps();
    __m256 a50 = _mm256_setzero_ps(), a51 = _mm256_setzero_ps();
    const float *x0 = x, *x1 = x + ldx, *x2 = x + 2 * ldx, *x3 = x + 3 * ldx, *x4 = x + 4 * ldx,
                *x5 = x + 5 * ldx;
    for (int k = 0; k < n_in; k++) {
        __m256 w0 = _mm256_load_ps(panel + (size_t)k * KN_NR);
        __m256 w1 = _mm256_load_ps(panel + (size_t)k * KN_NR + 8);
        __m256 b;
        b = _mm256_broadcast_ss(x0 + k);
        a00 = _mm256_fmadd_ps(b, w0, a00);
        a01 = _mm256_fmadd_ps(b, w1, a01);
        b = _mm256_broadcast_ss(x1 + k);
        a10 = _mm256_fmadd_ps(b, w0, a10);
        a11 = _mm256_fmadd_ps(b, w1, a11);
        b = _mm256_broadcast_ss(x2 + k);
        a20 = _mm256_fmadd_ps(b, w0, a20);
        a21 = _mm256_fmadd_ps(b, w1, a21);
        b = _mm256_broadcast_ss(x3 + k);
        a30 = _mm256_fmadd_ps(b, w0, a30);
        a31 = _mm256_fmadd_ps(b, w1, a31);
        b = _mm256_broadcast_ss(x4 + k);
        a40 = _mm256_fmadd_ps(b, w0, a40);
        a41 = _mm256_fmadd_ps(b, w1, a41);
        b = _mm256_broadcast_ss(x5 + k);
        a50 = _mm256_fmadd_ps(b, w0, a50);
        a51 = _mm256_fmadd_ps(b, w1, a51);
    }
    __m256 acc[KN_MR][2] = {{a00, a01}, {a10, a11}, {a20, a21}, {a30, a31}, {a40, a41}, {a50, a51}};
    for (int r = 0; r < KN_MR; r++) {
        kn_store_part(y + r * ldy, acc[r][0], ncols);
        if (ncols > 8) kn_store_part(y + r * ldy + 8, acc[r][1], ncols - 8);
    }
}

static void kn_gemm_tile1(const float *x, const float *panel, int n_in, float *y, int ncols) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    for (int k = 0; k < n_in; k++) {
        __m256 b = _mm256_broadcast_ss(x + k);
        a0 = _mm256_fmadd_ps(b, _mm256_load_ps(panel + (size_t)k * KN_NR), a0);
        a1 = _mm256_fmadd_ps(b, _mm256_load_ps(panel + (size_t)k * KN_NR + 8), a1);
    }
    kn_store_part(y, a0, ncols);
    if (ncols > 8) kn_store_part(y + 8, a1, ncols - 8);
}

static void kn_gemm_f32_avx2(const float *x, size_t ldx, int n_rows, const float *wp, int n_in,
                             int col0, int col1, float *y, size_t ldy) {
    for (int c = col0; c < col1; c += KN_NR) {
        const float *panel = wp + (size_t)(c / KN_NR) * n_in * KN_NR;
        int ncols = col1 - c < KN_NR ? col1 - c : KN_NR;
        int r = 0;
        for (; r + KN_MR <= n_rows; r += KN_MR)
            kn_gemm_tile6(x + (size_t)r * ldx, ldx, panel, n_in, y + (size_t)r * ldy + c, ldy, ncols);
        for (; r < n_rows; r++)
            kn_gemm_tile1(x + (size_t)r * ldx, panel, n_in, y + (size_t)r * ldy + c, ncols);
    }
}

// GEMM on packed activations (kn_ops.h pack_x / gemm_xp): 6 rows x 16 columns per micro-kernel
// as above, the rows read from one contiguous stream, k in blocks of KN_KC2 (a chain's value
// waits in y between blocks, which changes no bit) so that a block of the panel stays in L1.

#define KN_KC2 512

static void kn_xp_tile6(const float *xb, const float *panel, int kc, int k0, float *y, size_t ldy, int mr,
                        int ncols) {
    __m256 a[KN_MR][2];
#pragma GCC unroll 6
    for (int r = 0; r < KN_MR; r++) {
        a[r][0] = k0 == 0 || r >= mr ? _mm256_setzero_ps() : kn_load_part(y + r * ldy, ncols);
        a[r][1] = k0 == 0 || r >= mr || ncols <= 8 ? _mm256_setzero_ps() : kn_load_part(y + r * ldy + 8, ncols - 8);
    }
    for (int k = 0; k < kc; k++) {
        const __m256 w0 = _mm256_load_ps(panel + (size_t)k * KN_NR), w1 = _mm256_load_ps(panel + (size_t)k * KN_NR + 8);
#pragma GCC unroll 6
        for (int r = 0; r < KN_MR; r++) {
            const __m256 b = _mm256_broadcast_ss(xb + (size_t)k * KN_MR + r);
            a[r][0] = _mm256_fmadd_ps(b, w0, a[r][0]);
            a[r][1] = _mm256_fmadd_ps(b, w1, a[r][1]);
        }
    }
#pragma GCC unroll 6
    for (int r = 0; r < mr; r++) {
        kn_store_part(y + r * ldy, a[r][0], ncols);
        if (ncols > 8) kn_store_part(y + r * ldy + 8, a[r][1], ncols - 8);
    }
}

static void kn_pack_x_avx2(const float *x, size_t ldx, int n_rows, int n_in, float *xp) {
    kn_pack_x(KN_MR, x, ldx, n_rows, n_in, xp);
}

// Loops as kn_ops_avx512.c's: k blocks, row blocks (6 x KN_KC2 packed rows stay in L1), panels.
static void kn_gemm_xp_avx2(const float *xp, int n_rows, const float *wp, int n_in, int ncols, float *y,
                            size_t ldy) {
    for (int k0 = 0; k0 < n_in; k0 += KN_KC2) {
        const int kc = n_in - k0 < KN_KC2 ? n_in - k0 : KN_KC2;
        for (int r0 = 0; r0 < n_rows; r0 += KN_MR) {
            const float *xb = xp + (size_t)(r0 / KN_MR) * n_in * KN_MR + (size_t)k0 * KN_MR;
            const int mr = n_rows - r0 < KN_MR ? n_rows - r0 : KN_MR;
            for (int c = 0; c < ncols; c += KN_NR)
                kn_xp_tile6(xb, wp + (size_t)(c / KN_NR) * n_in * KN_NR + (size_t)k0 * KN_NR, kc, k0,
                            y + (size_t)r0 * ldy + c, ldy, mr, ncols - c < KN_NR ? ncols - c : KN_NR);
        }
    }
}

// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// Decoding on fp16 panels (kn_ops.h gemv_f16): mr rows x nv panels (two ymm each) over the whole
// of k, each lane one output's fma chain from 0.0f; weights converted by F16C as they are loaded.
// One row keeps 4 panels (8 chains) in flight, two rows 2 panels, more rows one.

__attribute__((always_inline)) static inline void kn_gv_micro2(int mr, int nv, const float *x, size_t ldx,
                                                                const uint16_t *w, size_t ps, int n_in, float *y,
                                                                size_t ldy, int nlast) {
    __m256 acc[KN_GEMV_ROWS][4][2];
#pragma GCC unroll 4
    for (int r = 0; r < mr; r++)
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) acc[r][v][0] = acc[r][v][1] = _mm256_setzero_ps();
    for (int k = 0; k < n_in; k++) {
        __m256 wv[4][2];
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) {
            const uint16_t *wk = w + (size_t)v * ps + (size_t)k * KN_NR;
            wv[v][0] = _mm256_cvtph_ps(_mm_load_si128((const __m128i *)wk));
            wv[v][1] = _mm256_cvtph_ps(_mm_load_si128((const __m128i *)(wk + 8)));
        }
#pragma GCC unroll 4
        for (int r = 0; r < mr; r++) {
            const __m256 b = _mm256_broadcast_ss(x + (size_t)r * ldx + k);
#pragma GCC unroll 4
            for (int v = 0; v < nv; v++) {
                acc[r][v][0] = _mm256_fmadd_ps(b, wv[v][0], acc[r][v][0]);
                acc[r][v][1] = _mm256_fmadd_ps(b, wv[v][1], acc[r][v][1]);
            }
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < mr; r++)
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) {
            float *yo = y + (size_t)r * ldy + 16 * v;
            const int n = v == nv - 1 ? nlast : 16;
            kn_store_part(yo, acc[r][v][0], n);
            if (n > 8) kn_store_part(yo + 8, acc[r][v][1], n - 8);
        }
}

static void kn_gemv_f16_avx2(const float *x, size_t ldx, int n_rows, const uint16_t *wp16, int n_in, int ncols,
                             float *y, size_t ldy) {
    const size_t ps = (size_t)n_in * KN_NR;
    const int np = (ncols + KN_NR - 1) / KN_NR, step = n_rows == 1 ? 4 : n_rows == 2 ? 2 : 1;
    for (int p = 0; p < np;) {
        const int nv = np - p >= step ? step : 1;
        const int nlast = ncols - 16 * (p + nv - 1) < 16 ? ncols - 16 * (p + nv - 1) : 16;
        const uint16_t *w = wp16 + (size_t)p * ps;
        float *yp = y + (size_t)p * KN_NR;
        switch (n_rows * 16 + nv) {
        case 16 + 4: kn_gv_micro2(1, 4, x, ldx, w, ps, n_in, yp, ldy, nlast); break;
        case 32 + 2: kn_gv_micro2(2, 2, x, ldx, w, ps, n_in, yp, ldy, nlast); break;
        case 16 + 1: kn_gv_micro2(1, 1, x, ldx, w, ps, n_in, yp, ldy, nlast); break;
        case 32 + 1: kn_gv_micro2(2, 1, x, ldx, w, ps, n_in, yp, ldy, nlast); break;
        case 48 + 1: kn_gv_micro2(3, 1, x, ldx, w, ps, n_in, yp, ldy, nlast); break;
        default: kn_gv_micro2(4, 1, x, ldx, w, ps, n_in, yp, ldy, nlast); break;
        }
        p += nv;
    }
}

static void kn_f16_to_f32_avx2(const uint16_t *h, size_t n, float *out) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + i))));
    for (; i < n; i++) out[i] = _cvtsh_ss(h[i]);
}

static void kn_rmsnorm_avx2(float *out, const float *x, const float *w, int n, float eps) {
    __m256 a = _mm256_setzero_ps(), b = _mm256_setzero_ps();
    for (int i = 0; i < n; i += 16) {
        __m256 va = kn_load_part(x + i, n - i);
        __m256 vb = i + 8 < n ? kn_load_part(x + i + 8, n - i - 8) : _mm256_setzero_ps();
        a = _mm256_fmadd_ps(va, va, a);
        b = _mm256_fmadd_ps(vb, vb, b);
    }
    float ss = kn_tree16(a, b);
    ss = ss / (float)n + eps;
    float s = 1.0f / sqrtf(ss);
    __m256 vs = _mm256_set1_ps(s);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_loadu_ps(w + i),
                                                _mm256_mul_ps(_mm256_loadu_ps(x + i), vs)));
    for (; i < n; i++) out[i] = w[i] * (x[i] * s);
}

// s[0..nk) := softmax(s) as the reference computes it: max, exp(s - max), the 16-lane sum
// (a partial last block padded with +0.0f), division by the sum.
static void kn_softmax_row(float *s, int nk) {
    __m256 vmax = _mm256_set1_ps(-INFINITY);
    int j = 0;
    for (; j + 8 <= nk; j += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(s + j));
    float mx;
    {
        float t[8];
        _mm256_storeu_ps(t, vmax);
        mx = t[0];
        for (int l = 1; l < 8; l++)
            if (t[l] > mx) mx = t[l];
    }
    for (; j < nk; j++)
        if (s[j] > mx) mx = s[j];
    __m256 vm = _mm256_set1_ps(mx);
    __m256 sa = _mm256_setzero_ps(), sb = _mm256_setzero_ps();
    for (j = 0; j + 16 <= nk; j += 16) {
        __m256 ea = kn_exp8(_mm256_sub_ps(_mm256_loadu_ps(s + j), vm));
        __m256 eb = kn_exp8(_mm256_sub_ps(_mm256_loadu_ps(s + j + 8), vm));
        _mm256_storeu_ps(s + j, ea);
        _mm256_storeu_ps(s + j + 8, eb);
        sa = _mm256_add_ps(sa, ea);
        sb = _mm256_add_ps(sb, eb);
    }
    if (j < nk) { // the partial block: padding lanes contribute +0.0f
        float t[16] = {0};
        for (int l = 0; l < nk - j; l++) t[l] = kn_expf_lane(s[j + l] - mx);
        for (int l = 0; l < nk - j; l++) s[j + l] = t[l];
        sa = _mm256_add_ps(sa, _mm256_loadu_ps(t));
        sb = _mm256_add_ps(sb, _mm256_loadu_ps(t + 8));
    }
    float sum = kn_tree16(sa, sb);
    __m256 vsum = _mm256_set1_ps(sum);
    for (j = 0; j + 8 <= nk; j += 8) _mm256_storeu_ps(s + j, _mm256_div_ps(_mm256_loadu_ps(s + j), vsum));
    for (; j < nk; j++) s[j] = s[j] / sum;
}

// Scores of one query for keys [0, nk): fma chains over d, then divided by sqrt(head_size).
static void kn_scores1(float *s, const float *q, const float *kt, size_t kt_stride, int head_size,
                       int nk) {
    __m256 vdiv = _mm256_set1_ps(sqrtf((float)head_size));
    for (int j = 0; j < nk; j += 8) {
        int rem = nk - j;
        __m256 acc = _mm256_setzero_ps();
        for (int d = 0; d < head_size; d++)
            acc = _mm256_fmadd_ps(_mm256_broadcast_ss(q + d), kn_load_part(kt + (size_t)d * kt_stride + j, rem), acc);
        kn_store_part(s + j, _mm256_div_ps(acc, vdiv), rem);
    }
}

// out[d] = sum_{j < nk} p_j v[j][d], one fma chain per d, vectorised over d.
static void kn_mix1(float *out, const float *p, const float *v, int head_size, int nk) {
    for (int d = 0; d < head_size; d += 8) {
        int nd = head_size - d;
        __m256 acc = _mm256_setzero_ps();
        for (int j = 0; j < nk; j++)
            acc = _mm256_fmadd_ps(_mm256_broadcast_ss(p + j), kn_load_part(v + (size_t)j * head_size + d, nd), acc);
        kn_store_part(out + d, acc, nd);
    }
}

static void kn_attend_avx2(float *out, const float *q, const float *kt, size_t kt_stride,
                           const float *v, int head_size, int n_keys, float *scratch) {
    kn_scores1(scratch, q, kt, kt_stride, head_size, n_keys);
    kn_softmax_row(scratch, n_keys);
    kn_mix1(out, scratch, v, head_size, n_keys);
}

// Four queries at once: their fma chains are independent, so interleaving them hides the FMA
// latency that bounds the one-query kernel, and each key and value load serves four queries.
// Lane by lane the operations are those of the one-query kernel.
static void kn_attend4(float *out, size_t out_stride, const float *q, size_t q_stride,
                       const float *kt, size_t kt_stride, const float *v, int head_size, int nk0,
                       float *scratch, size_t sstride) {
    const float *q0 = q, *q1 = q + q_stride, *q2 = q + 2 * q_stride, *q3 = q + 3 * q_stride;
    float *s0 = scratch, *s1 = scratch + sstride, *s2 = scratch + 2 * sstride, *s3 = scratch + 3 * sstride;
    int nk_max = nk0 + 3;
    __m256 vdiv = _mm256_set1_ps(sqrtf((float)head_size));
    for (int j = 0; j < nk_max; j += 8) {
        int rem = nk_max - j;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(),
               a3 = _mm256_setzero_ps();
        for (int d = 0; d < head_size; d++) {
            __m256 k = kn_load_part(kt + (size_t)d * kt_stride + j, rem);
            a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(q0 + d), k, a0);
            a1 = _mm256_fmadd_ps(_mm256_broadcast_ss(q1 + d), k, a1);
            a2 = _mm256_fmadd_ps(_mm256_broadcast_ss(q2 + d), k, a2);
            a3 = _mm256_fmadd_ps(_mm256_broadcast_ss(q3 + d), k, a3);
        }
        kn_store_part(s0 + j, _mm256_div_ps(a0, vdiv), rem);
        kn_store_part(s1 + j, _mm256_div_ps(a1, vdiv), rem);
        kn_store_part(s2 + j, _mm256_div_ps(a2, vdiv), rem);
        kn_store_part(s3 + j, _mm256_div_ps(a3, vdiv), rem);
    }
    kn_softmax_row(s0, nk0);
    kn_softmax_row(s1, nk0 + 1);
    kn_softmax_row(s2, nk0 + 2);
    kn_softmax_row(s3, nk0 + 3);
    for (int d = 0; d < head_size; d += 8) {
        int nd = head_size - d;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(),
               a3 = _mm256_setzero_ps();
        int j = 0;
        for (; j < nk0; j++) {
            __m256 vv = kn_load_part(v + (size_t)j * head_size + d, nd);
            a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(s0 + j), vv, a0);
            a1 = _mm256_fmadd_ps(_mm256_broadcast_ss(s1 + j), vv, a1);
            a2 = _mm256_fmadd_ps(_mm256_broadcast_ss(s2 + j), vv, a2);
            a3 = _mm256_fmadd_ps(_mm256_broadcast_ss(s3 + j), vv, a3);
        }
        // The later queries see one, two, three more keys.
        __m256 vv = kn_load_part(v + (size_t)j * head_size + d, nd);
        a1 = _mm256_fmadd_ps(_mm256_broadcast_ss(s1 + j), vv, a1);
        a2 = _mm256_fmadd_ps(_mm256_broadcast_ss(s2 + j), vv, a2);
        a3 = _mm256_fmadd_ps(_mm256_broadcast_ss(s3 + j), vv, a3);
        j++;
        vv = kn_load_part(v + (size_t)j * head_size + d, nd);
        a2 = _mm256_fmadd_ps(_mm256_broadcast_ss(s2 + j), vv, a2);
        a3 = _mm256_fmadd_ps(_mm256_broadcast_ss(s3 + j), vv, a3);
        j++;
        vv = kn_load_part(v + (size_t)j * head_size + d, nd);
        a3 = _mm256_fmadd_ps(_mm256_broadcast_ss(s3 + j), vv, a3);
        kn_store_part(out + d, a0, nd);
        kn_store_part(out + out_stride + d, a1, nd);
        kn_store_part(out + 2 * out_stride + d, a2, nd);
        kn_store_part(out + 3 * out_stride + d, a3, nd);
    }
}

static void kn_attend_rows_avx2(float *out, size_t out_stride, const float *q, size_t q_stride,
                                int nq, const float *kt, size_t kt_stride, const float *v,
                                int head_size, int n_keys0, float *scratch, size_t sstride) {
    int i = 0;
    for (; i + 4 <= nq; i += 4)
        kn_attend4(out + (size_t)i * out_stride, out_stride, q + (size_t)i * q_stride, q_stride, kt,
                   kt_stride, v, head_size, n_keys0 + i, scratch, sstride);
    for (; i < nq; i++)
        kn_attend_avx2(out + (size_t)i * out_stride, q + (size_t)i * q_stride, kt, kt_stride, v,
                       head_size, n_keys0 + i, scratch);
}

static void kn_swiglu_avx2(float *h, const float *g, const float *u, int n) {
    const __m256 one = _mm256_set1_ps(1.0f);
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int i = 0; i < n; i += 8) {
        int rem = n - i;
        __m256 vg = kn_load_part(g + i, rem);
        __m256 e = kn_exp8(_mm256_xor_ps(vg, sign));
        __m256 silu = _mm256_mul_ps(vg, _mm256_div_ps(one, _mm256_add_ps(one, e)));
        kn_store_part(h + i, _mm256_mul_ps(silu, kn_load_part(u + i, rem)), rem);
    }
}

static double kn_logsumexp_avx2(const float *x, int n, float *max_out) {
    float mx = -INFINITY;
    {
        __m256 vmax = _mm256_set1_ps(-INFINITY);
        int i = 0;
        for (; i + 8 <= n; i += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(x + i));
        float t[8];
        _mm256_storeu_ps(t, vmax);
        for (int l = 0; l < 8; l++)
            if (t[l] > mx) mx = t[l];
        for (; i < n; i++)
            if (x[i] > mx) mx = x[i];
    }
    __m256 vm = _mm256_set1_ps(mx);
    // 16 double lanes: d0 = lanes 0..3, d1 = 4..7, d2 = 8..11, d3 = 12..15.
    __m256d d0 = _mm256_setzero_pd(), d1 = _mm256_setzero_pd(), d2 = _mm256_setzero_pd(),
            d3 = _mm256_setzero_pd();
    for (int i = 0; i < n; i += 16) {
        int rem = n - i;
        __m256 ea = kn_exp8(_mm256_sub_ps(kn_load_part(x + i, rem), vm));
        __m256 eb = rem > 8 ? kn_exp8(_mm256_sub_ps(kn_load_part(x + i + 8, rem - 8), vm))
                            : _mm256_setzero_ps();
        if (rem < 16) { // zero the padding lanes (exp of padding is not 0)
            float t[16];
            _mm256_storeu_ps(t, ea);
            _mm256_storeu_ps(t + 8, eb);
            for (int l = rem; l < 16; l++) t[l] = 0.0f;
            ea = _mm256_loadu_ps(t);
            eb = _mm256_loadu_ps(t + 8);
        }
        d0 = _mm256_add_pd(d0, _mm256_cvtps_pd(_mm256_castps256_ps128(ea)));
        d1 = _mm256_add_pd(d1, _mm256_cvtps_pd(_mm256_extractf128_ps(ea, 1)));
        d2 = _mm256_add_pd(d2, _mm256_cvtps_pd(_mm256_castps256_ps128(eb)));
        d3 = _mm256_add_pd(d3, _mm256_cvtps_pd(_mm256_extractf128_ps(eb, 1)));
    }
    double acc[16];
    _mm256_storeu_pd(acc, d0);
    _mm256_storeu_pd(acc + 4, d1);
    _mm256_storeu_pd(acc + 8, d2);
    _mm256_storeu_pd(acc + 12, d3);
    for (int half = 8; half >= 1; half /= 2)
        for (int i = 0; i < half; i++) acc[i] = acc[i] + acc[i + half];
    if (max_out) *max_out = mx;
    return log(acc[0]) + (double)mx;
}

static double kn_fma_loop_avx2(long n) {
    __m256 acc[12];
    const __m256 m = _mm256_set1_ps(0.999f), c = _mm256_set1_ps(1e-6f);
#pragma GCC unroll 12
    for (int k = 0; k < 12; k++) acc[k] = _mm256_set1_ps((float)k);
    for (long i = 0; i < n; i++)
#pragma GCC unroll 12
        for (int k = 0; k < 12; k++) acc[k] = _mm256_fmadd_ps(acc[k], m, c);
    float out[8];
    for (int k = 1; k < 12; k++) acc[0] = _mm256_fmadd_ps(acc[0], m, acc[k]);
    _mm256_storeu_ps(out, acc[0]);
    volatile float sink = out[0];
    (void)sink;
    return 2.0 * 12 * 8 * (double)n;
}

const struct kn_ops kn_ops_avx2 = {
    .name = "avx2",
    .gemm_f32 = kn_gemm_f32_avx2,
    .xmr = KN_MR,
    .pack_x = kn_pack_x_avx2,
    .gemm_xp = kn_gemm_xp_avx2,
    .fma_loop = kn_fma_loop_avx2,
    .pack_f32 = kn_pack_f32_avx2,
    .pack_f16 = kn_pack_f16_avx2,
    .gemv_f16 = kn_gemv_f16_avx2,
    .f16_to_f32 = kn_f16_to_f32_avx2,
    .dequant_row = kn_dequant_row_avx2,
    .rmsnorm = kn_rmsnorm_avx2,
    .attend = kn_attend_avx2,
    .attend_rows = kn_attend_rows_avx2,
    .swiglu = kn_swiglu_avx2,
    .logsumexp = kn_logsumexp_avx2,
};
