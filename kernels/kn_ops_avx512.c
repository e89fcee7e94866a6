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
// GEMM on packed activations (kn_ops.h pack_x / gemm_xp): KN_XMR rows x up to KN_XNV panels (16
// columns each) per micro-kernel, k in blocks of KN_KC. Each lane is still one output's fma chain
// over k from 0.0f: between k blocks the chain's value waits in y and is loaded back, which
// changes no bit. Packed rows come from one contiguous stream (no cache-set conflicts between
// rows that are a power of two apart), a k block of the column group's panels stays in L1/L2 for
// all row blocks, and the 24 accumulators keep both FMA pipes busy.

#ifndef KN_XMR
#define KN_XMR 6
#endif
#ifndef KN_XNV
#define KN_XNV 4
#endif
#ifndef KN_KC
#define KN_KC 512
#endif

// Rows r0 .. r0 + mr - 1 (mr <= KN_XMR) times nv panels (w, ps floats apart), k in [k0, k0 + kc):
// y (mr rows of ldy; the last panel's columns masked by mlast) += on top of its value when
// k0 > 0, else from 0.
__attribute__((always_inline)) static inline void kn_xp_micro(int nv, const float *xb, const float *w,
                                                               size_t ps, int kc, int k0, float *y,
                                                               size_t ldy, int mr, __mmask16 mlast) {
    __m512 acc[KN_XMR][KN_XNV];
#pragma GCC unroll 16
    for (int r = 0; r < KN_XMR; r++)
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++)
            acc[r][v] = k0 == 0 || r >= mr ? _mm512_setzero_ps()
                                           : _mm512_maskz_loadu_ps(v == nv - 1 ? mlast : 0xffff,
                                                                   y + (size_t)r * ldy + 16 * v);
    for (int k = 0; k < kc; k++) {
        __m512 wv[KN_XNV];
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) wv[v] = _mm512_load_ps(w + (size_t)v * ps + (size_t)k * KN_NR);
#pragma GCC unroll 16
        for (int r = 0; r < KN_XMR; r++) {
            const __m512 b = _mm512_set1_ps(xb[(size_t)k * KN_XMR + r]);
#pragma GCC unroll 4
            for (int v = 0; v < nv; v++) acc[r][v] = _mm512_fmadd_ps(b, wv[v], acc[r][v]);
        }
    }
#pragma GCC unroll 16
    for (int r = 0; r < mr; r++)
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++)
            _mm512_mask_storeu_ps(y + (size_t)r * ldy + 16 * v, v == nv - 1 ? mlast : 0xffff, acc[r][v]);
}

static void kn_pack_x_avx512(const float *x, size_t ldx, int n_rows, int n_in, float *xp) {
    kn_pack_x(KN_XMR, x, ldx, n_rows, n_in, xp);
}

// Loops, outside in: k blocks; row blocks (a KN_XMR x KN_KC block of packed rows, 16 KB, stays
// in L1 for every column group); column groups of KN_XNV panels. So the packed rows stream from
// L2/L3 once per call, and a k block of all the call's panels (ncols x KN_KC floats: 256 KB for
// 128 columns) stays in L2.
static void kn_gemm_xp_avx512(const float *xp, int n_rows, const float *wp, int n_in, int ncols, float *y,
                              size_t ldy) {
    const size_t ps = (size_t)n_in * KN_NR;
    for (int k0 = 0; k0 < n_in; k0 += KN_KC) {
        const int kc = n_in - k0 < KN_KC ? n_in - k0 : KN_KC;
        for (int r0 = 0; r0 < n_rows; r0 += KN_XMR) {
            const int mr = n_rows - r0 < KN_XMR ? n_rows - r0 : KN_XMR;
            const float *xb = xp + (size_t)(r0 / KN_XMR) * n_in * KN_XMR + (size_t)k0 * KN_XMR;
            for (int c = 0; c < ncols; c += KN_XNV * KN_NR) {
                const int nc = ncols - c < KN_XNV * KN_NR ? ncols - c : KN_XNV * KN_NR, nv = (nc + 15) / 16;
                const __mmask16 ml = kn_mask(nc - 16 * (nv - 1));
                const float *wk = wp + (size_t)(c / KN_NR) * ps + (size_t)k0 * KN_NR;
                float *yb = y + (size_t)r0 * ldy + c;
                if (nv == KN_XNV) kn_xp_micro(KN_XNV, xb, wk, ps, kc, k0, yb, ldy, mr, ml);
#if KN_XNV > 3
                else if (nv == 3) kn_xp_micro(3, xb, wk, ps, kc, k0, yb, ldy, mr, ml);
#endif
#if KN_XNV > 2
                else if (nv == 2) kn_xp_micro(2, xb, wk, ps, kc, k0, yb, ldy, mr, ml);
#endif
                else kn_xp_micro(1, xb, wk, ps, kc, k0, yb, ldy, mr, ml);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding on fp16 panels (kn_ops.h gemv_f16): mr rows x nv panels over the whole of k, lane c of
// acc[r][v] output 16v + c's fma chain from 0.0f. With one row, 8 panels in flight give 8
// independent chains (the FMA latency times its throughput); the weights stream once from memory
// and are converted as they are loaded (vcvtph2ps is exact).

#define KN_GV_NV1 8 // panels in flight for one row
#define KN_GV_NV 4  // for 2 .. KN_GEMV_ROWS rows

__attribute__((always_inline)) static inline void kn_gv_micro(int mr, int nv, const float *x, size_t ldx,
                                                               const uint16_t *w, size_t ps, int n_in, float *y,
                                                               size_t ldy, __mmask16 mlast) {
    __m512 acc[KN_GEMV_ROWS][KN_GV_NV1];
#pragma GCC unroll 4
    for (int r = 0; r < mr; r++)
#pragma GCC unroll 8
        for (int v = 0; v < nv; v++) acc[r][v] = _mm512_setzero_ps();
    for (int k = 0; k < n_in; k++) {
        __m512 wv[KN_GV_NV1];
#pragma GCC unroll 8
        for (int v = 0; v < nv; v++)
            wv[v] = _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)(w + (size_t)v * ps + (size_t)k * KN_NR)));
#pragma GCC unroll 4
        for (int r = 0; r < mr; r++) {
            const __m512 b = _mm512_set1_ps(x[(size_t)r * ldx + k]);
#pragma GCC unroll 8
            for (int v = 0; v < nv; v++) acc[r][v] = _mm512_fmadd_ps(b, wv[v], acc[r][v]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < mr; r++)
#pragma GCC unroll 8
        for (int v = 0; v < nv; v++)
            _mm512_mask_storeu_ps(y + (size_t)r * ldy + 16 * v, v == nv - 1 ? mlast : 0xffff, acc[r][v]);
}

static void kn_gemv_f16_avx512(const float *x, size_t ldx, int n_rows, const uint16_t *wp16, int n_in, int ncols,
                               float *y, size_t ldy) {
    const size_t ps = (size_t)n_in * KN_NR;
    const int np = (ncols + KN_NR - 1) / KN_NR, step = n_rows == 1 ? KN_GV_NV1 : KN_GV_NV;
    for (int p = 0; p < np;) {
        // the last few panels of one row in fours and twos, of more rows one at a time
        const int nv = np - p >= step ? step : n_rows == 1 && np - p >= 4 ? 4 : n_rows == 1 && np - p >= 2 ? 2 : 1;
        const __mmask16 ml = kn_mask(ncols - 16 * (p + nv - 1));
        const uint16_t *w = wp16 + (size_t)p * ps;
        float *yp = y + (size_t)p * KN_NR;
        switch (n_rows * 16 + nv) {
        case 16 + KN_GV_NV1: kn_gv_micro(1, KN_GV_NV1, x, ldx, w, ps, n_in, yp, ldy, ml); break;
        case 32 + KN_GV_NV: kn_gv_micro(2, KN_GV_NV, x, ldx, w, ps, n_in, yp, ldy, ml); break;
        case 48 + KN_GV_NV: kn_gv_micro(3, KN_GV_NV, x, ldx, w, ps, n_in, yp, ldy, ml); break;
        case 64 + KN_GV_NV: kn_gv_micro(4, KN_GV_NV, x, ldx, w, ps, n_in, yp, ldy, ml); break;
        case 16 + 4: kn_gv_micro(1, 4, x, ldx, w, ps, n_in, yp, ldy, ml); break;
        case 16 + 2: kn_gv_micro(1, 2, x, ldx, w, ps, n_in, yp, ldy, ml); break;
        case 16 + 1: kn_gv_micro(1, 1, x, ldx, w, ps, n_in, yp, ldy, ml); break;
        case 32 + 1: kn_gv_micro(2, 1, x, ldx, w, ps, n_in, yp, ldy, ml); break;
        case 48 + 1: kn_gv_micro(3, 1, x, ldx, w, ps, n_in, yp, ldy, ml); break;
        default: kn_gv_micro(4, 1, x, ldx, w, ps, n_in, yp, ldy, ml); break;
        }
        p += nv;
    }
}

static void kn_f16_to_f32_avx512(const uint16_t *h, size_t n, float *out) {
    for (size_t i = 0; i < n; i += 16) {
        const __mmask16 m = kn_mask(n - i < 16 ? (int)(n - i) : 16);
        _mm512_mask_storeu_ps(out + i, m, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, h + i)));
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

// softmax of s[0..nk) in place, as kn_attend_avx512 computes it (max, exp(s - max), the 16-lane
// sum of the exps with masked lanes at +0.0f, division by the sum).
static void kn_softmax_avx512(float *s, int nk) {
    __m512 vmax = _mm512_set1_ps(-INFINITY);
    for (int j = 0; j < nk; j += 16) {
        __mmask16 m = kn_mask(nk - j);
        vmax = _mm512_mask_max_ps(vmax, m, vmax, _mm512_maskz_loadu_ps(m, s + j));
    }
    const __m512 vm = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));
    __m512 sum16 = _mm512_setzero_ps();
    for (int j = 0; j < nk; j += 16) {
        __mmask16 m = kn_mask(nk - j);
        __m512 e = _mm512_maskz_mov_ps(m, kn_exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, s + j), vm)));
        _mm512_mask_storeu_ps(s + j, m, e);
        sum16 = _mm512_add_ps(sum16, e);
    }
    const __m512 vsum = _mm512_set1_ps(kn_tree16(sum16));
    for (int j = 0; j < nk; j += 16) {
        __mmask16 m = kn_mask(nk - j);
        _mm512_mask_storeu_ps(s + j, m, _mm512_div_ps(_mm512_maskz_loadu_ps(m, s + j), vsum));
    }
}

// Four queries at once (as kn_ops_avx2.c's kn_attend4): independent fma chains interleaved to
// hide the FMA latency, each key and value load serving four queries; lane by lane the
// operations of the one-query kernel. Query i sees nk0 + i keys.
static void kn_attend4_avx512(float *out, size_t out_stride, const float *q, size_t q_stride,
                              const float *kt, size_t kt_stride, const float *v, int head_size, int nk0,
                              float *scratch, size_t sstride) {
    const __m512 vdiv = _mm512_set1_ps(sqrtf((float)head_size));
    const int nk_max = nk0 + 3;
    for (int j = 0; j < nk_max; j += 16) {
        const __mmask16 m = kn_mask(nk_max - j);
        __m512 a[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
        for (int d = 0; d < head_size; d++) {
            const __m512 k = _mm512_maskz_loadu_ps(m, kt + (size_t)d * kt_stride + j);
#pragma GCC unroll 4
            for (int i = 0; i < 4; i++) a[i] = _mm512_fmadd_ps(_mm512_set1_ps(q[i * q_stride + d]), k, a[i]);
        }
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) _mm512_mask_storeu_ps(scratch + i * sstride + j, m, _mm512_div_ps(a[i], vdiv));
    }
    for (int i = 0; i < 4; i++) kn_softmax_avx512(scratch + i * sstride, nk0 + i);
    const float *s0 = scratch, *s1 = scratch + sstride, *s2 = scratch + 2 * sstride, *s3 = scratch + 3 * sstride;
    for (int d = 0; d < head_size; d += 16) {
        const __mmask16 m = kn_mask(head_size - d);
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
        int j = 0;
        for (; j < nk0; j++) {
            const __m512 vv = _mm512_maskz_loadu_ps(m, v + (size_t)j * head_size + d);
            a0 = _mm512_fmadd_ps(_mm512_set1_ps(s0[j]), vv, a0);
            a1 = _mm512_fmadd_ps(_mm512_set1_ps(s1[j]), vv, a1);
            a2 = _mm512_fmadd_ps(_mm512_set1_ps(s2[j]), vv, a2);
            a3 = _mm512_fmadd_ps(_mm512_set1_ps(s3[j]), vv, a3);
        }
        // The later queries see one, two, three more keys.
        __m512 vv = _mm512_maskz_loadu_ps(m, v + (size_t)j * head_size + d);
        a1 = _mm512_fmadd_ps(_mm512_set1_ps(s1[j]), vv, a1);
        a2 = _mm512_fmadd_ps(_mm512_set1_ps(s2[j]), vv, a2);
        a3 = _mm512_fmadd_ps(_mm512_set1_ps(s3[j]), vv, a3);
        j++;
        vv = _mm512_maskz_loadu_ps(m, v + (size_t)j * head_size + d);
        a2 = _mm512_fmadd_ps(_mm512_set1_ps(s2[j]), vv, a2);
        a3 = _mm512_fmadd_ps(_mm512_set1_ps(s3[j]), vv, a3);
        j++;
        vv = _mm512_maskz_loadu_ps(m, v + (size_t)j * head_size + d);
        a3 = _mm512_fmadd_ps(_mm512_set1_ps(s3[j]), vv, a3);
        _mm512_mask_storeu_ps(out + d, m, a0);
        _mm512_mask_storeu_ps(out + out_stride + d, m, a1);
        _mm512_mask_storeu_ps(out + 2 * out_stride + d, m, a2);
        _mm512_mask_storeu_ps(out + 3 * out_stride + d, m, a3);
    }
}

static void kn_attend_rows_avx512(float *out, size_t out_stride, const float *q, size_t q_stride,
                                  int nq, const float *kt, size_t kt_stride, const float *v,
                                  int head_size, int n_keys0, float *scratch, size_t sstride) {
    int i = 0;
    for (; i + 4 <= nq; i += 4)
        kn_attend4_avx512(out + (size_t)i * out_stride, out_stride, q + (size_t)i * q_stride, q_stride, kt,
                          kt_stride, v, head_size, n_keys0 + i, scratch, sstride);
    for (; i < nq; i++)
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

static double kn_fma_loop_avx512(long n) {
    __m512 acc[12];
    const __m512 m = _mm512_set1_ps(0.999f), c = _mm512_set1_ps(1e-6f);
#pragma GCC unroll 12
    for (int k = 0; k < 12; k++) acc[k] = _mm512_set1_ps((float)k);
    for (long i = 0; i < n; i++)
#pragma GCC unroll 12
        for (int k = 0; k < 12; k++) acc[k] = _mm512_fmadd_ps(acc[k], m, c);
    float out[16];
    for (int k = 1; k < 12; k++) acc[0] = _mm512_fmadd_ps(acc[0], m, acc[k]);
    _mm512_storeu_ps(out, acc[0]);
    volatile float sink = out[0];
    (void)sink;
    return 2.0 * 12 * 16 * (double)n;
}

const struct kn_ops kn_ops_avx512 = {
    .name = "avx512",
    .gemm_f32 = kn_gemm_f32_avx512,
    .xmr = KN_XMR,
    .pack_x = kn_pack_x_avx512,
    .gemm_xp = kn_gemm_xp_avx512,
    .fma_loop = kn_fma_loop_avx512,
    .pack_f32 = kn_pack_f32_avx2,
    .pack_f16 = kn_pack_f16_avx2,
    .gemv_f16 = kn_gemv_f16_avx512,
    .f16_to_f32 = kn_f16_to_f32_avx512,
    .dequant_row = kn_dequant_row_avx2,
    .rmsnorm = kn_rmsnorm_avx512,
    .attend = kn_attend_avx512,
    .attend_rows = kn_attend_rows_avx512,
    .swiglu = kn_swiglu_avx512,
    .logsumexp = kn_logsumexp_avx512,
};
