// qz_kquants_avx2.c — AVX2 version of ggml's make_qkx2_quants (qz_make_qkx2_quants_ref in
// qz_kquants.c), the scale/min search that takes most of the time of Q2_K, Q4_K and Q5_K
// quantization. Its scale, min and L are the reference's, bit for bit.
//
// The reference tries the candidates is = 0..nstep one after the other. Each is a pass over the
// sub-block that rounds x onto the candidate's grid and sums the least-squares terms, a solve,
// and a pass that sums the error; every sum is fp32 in index order. Here the 8 lanes of a vector
// are 8 consecutive candidates: lane k runs candidate is0 + k's own sums over i = 0..n-1 in that
// order, with the reference's operations (multiply, add, subtract and divide as separate
// instructions, no FMA; ggml's nearest_int as the same float add of 1.5*2^23 and integer mask),
// so each lane holds the bits the reference computes for its candidate. The lanes are then read
// in candidate order with the reference's rule (skip unless D > 0, take if the error is lower).
// Each sum is a chain of dependent adds either way, so a batch of 8 costs about what one
// candidate costs in the reference.
//
// The catch: a candidate's grid is built on the min of the best candidate so far. A batch is
// fitted on the min current when it starts; when a taken lane changes min (any bit, so -0.0 vs
// +0.0 counts too), the lanes after it used a stale grid and are dropped, and the next batch
// starts at the candidate after the taken one. Measured on TinyLlama-1.1B (32 rows of every
// weight matrix, 0.4 to 0.8 million searches per type), every taken candidate moved min, and:
//   Q4_K: 21 candidates, 2.6 taken per search, 2.55 restarts, 5.0 batches (3 without restarts);
//   Q5_K: 16 candidates, 2.5 taken, 2.46 restarts, 4.2 batches (2 without);
//   Q2_K: 16 candidates, 1.2 taken, 1.20 restarts, 3.05 batches (2 without).
// (Re-checking the dropped lanes' quants under the new min would save about a sixth of the
// batches, in a simulation, for about as much work in the extra passes it needs.)
//
// Blocks holding a NaN or an infinity (in x or in the weights) go to the reference: the lanes
// would agree on every comparison, but which NaN payload survives an operation on two NaNs
// depends on operand order, which the compiler picks, and first-pass L bytes can carry it.
// The model loader rejects such weights anyway (harness/io/hx_model.c). Huge or subnormal finite
// values need no care: their overflows give infinities and the default NaN, and the integer
// half of nearest_int reproduces the reference's out-of-range results, all the same bits.
//
// Compiled with -mavx2 -mfma -mf16c (the Makefile's ISA_AVX2; no FMA is used, and
// -ffp-contract=off keeps the compiler from fusing) and called only when the CPU has AVX2
// (qz_kquants.c). Depends on intrinsics, libc, kernels/qp.h, qz_search.h and
// qz_kquants_simd.h. Never allocates.
#include <immintrin.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "qp.h"
#include "qz_kquants_simd.h"
#include "qz_search.h"

#define QZ_LANES 8
#define QZ_MAX_N 32 // the longest sub-block (Q4_K, Q5_K; Q2_K has 16)

// One search: the inputs and what the first pass over x gives.
struct qz_qkx2 {
    int n, nmax;
    const float *x, *w; // (n) values and their weights
    float rmin, rdelta;
    bool use_mad;
    float max, sum_w, sum_x;
};

// One batch of candidates, lane k = candidate is0 + k.
struct qz_lanes {
    _Alignas(32) float l[QZ_MAX_N][QZ_LANES]; // (n, lanes) quants 0..nmax, as (exact) floats
    _Alignas(32) float D[QZ_LANES];           // least-squares determinant
    _Alignas(32) float scale[QZ_LANES], min[QZ_LANES], err[QZ_LANES];
};

// ---------------------------------------------------------------------------------------------
// Helpers

// v - v is 0 for a finite v and NaN for an infinity or a NaN; n a multiple of 8.
static bool qz_all_finite(const float *x, const float *w, int n) {
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < n; i += QZ_LANES) {
        const __m256 a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(w + i);
        acc = _mm256_add_ps(acc, _mm256_add_ps(_mm256_sub_ps(a, a), _mm256_sub_ps(b, b)));
    }
    return _mm256_movemask_ps(_mm256_cmp_ps(acc, acc, _CMP_UNORD_Q)) == 0;
}

static uint32_t qz_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

// qp_nearest_int lane-wise, clamped to 0..nmax as the reference clamps.
static inline __m256i qz_nearest_clamp(__m256 f, __m256i nmax) {
    __m256i v = _mm256_castps_si256(_mm256_add_ps(f, _mm256_set1_ps(12582912.0f)));
    v = _mm256_sub_epi32(_mm256_and_si256(v, _mm256_set1_epi32(0x007fffff)),
                         _mm256_set1_epi32(0x00400000));
    return _mm256_min_epi32(_mm256_max_epi32(v, _mm256_setzero_si256()), nmax);
}

// ---------------------------------------------------------------------------------------------
// The search

// The reference's first pass: min (<= 0), max, sum_w, sum_x; true when max == min, having then
// written the reference's result for that case into L and *the_min.
static bool qz_qkx2_range(struct qz_qkx2 *p, float *min_out, uint8_t *L, float *the_min) {
    const float *x = p->x, *w = p->w;
    float min = x[0], max = x[0];
    float sum_w = w[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < p->n; i++) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0) min = 0;
    p->max = max;
    p->sum_w = sum_w;
    p->sum_x = sum_x;
    *min_out = min;
    if (max != min) return false;
    memset(L, 0, (size_t)p->n);
    *the_min = -min;
    return true;
}

// The reference's starting point, the min/max grid: writes L and returns its error.
static float qz_qkx2_start(const struct qz_qkx2 *p, float min, float *scale, uint8_t *L) {
    const float iscale = (float)p->nmax / (p->max - min);
    const float s = 1 / iscale;
    float err = 0;
    for (int i = 0; i < p->n; i++) {
        int l = qp_nearest_int(iscale * (p->x[i] - min));
        L[i] = (uint8_t)qz_clampi(l, 0, p->nmax);
        float diff = s * (float)L[i] + min - p->x[i];
        diff = p->use_mad ? fabsf(diff) : diff * diff;
        err += p->w[i] * diff;
    }
    *scale = s;
    return err;
}

// iscale of candidates is0 .. is0+7 on the grid of min: (rmin + rdelta*is + nmax)/(max - min).
static __m256 qz_qkx2_iscales(const struct qz_qkx2 *p, float min, int is0) {
    const __m256 is = _mm256_cvtepi32_ps(
        _mm256_add_epi32(_mm256_set1_epi32(is0), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
    const __m256 step = _mm256_mul_ps(_mm256_set1_ps(p->rdelta), is);
    const __m256 num = _mm256_add_ps(_mm256_add_ps(_mm256_set1_ps(p->rmin), step),
                                     _mm256_set1_ps((float)p->nmax));
    return _mm256_div_ps(num, _mm256_set1_ps(p->max - min));
}

// Fits candidates is0 .. is0+7 on the grid of min into o (lanes past nstep are computed too and
// ignored by the caller). Each lane performs the reference's loop body for its candidate.
static void qz_qkx2_batch(const struct qz_qkx2 *p, float min, int is0, struct qz_lanes *o) {
    const __m256 iscale = qz_qkx2_iscales(p, min, is0);
    const __m256i nmax = _mm256_set1_epi32(p->nmax);
    const __m256 vmin = _mm256_set1_ps(min);
    __m256 sum_l = _mm256_setzero_ps(), sum_l2 = _mm256_setzero_ps(), sum_xl = _mm256_setzero_ps();
    for (int i = 0; i < p->n; i++) {
        const __m256 x = _mm256_set1_ps(p->x[i]);
        const __m256i l = qz_nearest_clamp(_mm256_mul_ps(iscale, _mm256_sub_ps(x, vmin)), nmax);
        const __m256 lf = _mm256_cvtepi32_ps(l);
        _mm256_store_ps(o->l[i], lf);
        const __m256 wl = _mm256_mul_ps(_mm256_set1_ps(p->w[i]), lf);
        sum_l = _mm256_add_ps(sum_l, wl);
        sum_l2 = _mm256_add_ps(sum_l2, _mm256_mul_ps(wl, lf));
        sum_xl = _mm256_add_ps(sum_xl, _mm256_mul_ps(wl, x));
    }
    const __m256 sw = _mm256_set1_ps(p->sum_w), sx = _mm256_set1_ps(p->sum_x);
    const __m256 D = _mm256_sub_ps(_mm256_mul_ps(sw, sum_l2), _mm256_mul_ps(sum_l, sum_l));
    __m256 scale =
        _mm256_div_ps(_mm256_sub_ps(_mm256_mul_ps(sw, sum_xl), _mm256_mul_ps(sx, sum_l)), D);
    __m256 this_min =
        _mm256_div_ps(_mm256_sub_ps(_mm256_mul_ps(sum_l2, sx), _mm256_mul_ps(sum_l, sum_xl)), D);
    // the reference's `if (this_min > 0) { this_min = 0; this_scale = sum_xl / sum_l2; }`
    const __m256 pos = _mm256_cmp_ps(this_min, _mm256_setzero_ps(), _CMP_GT_OQ);
    this_min = _mm256_blendv_ps(this_min, _mm256_setzero_ps(), pos);
    scale = _mm256_blendv_ps(scale, _mm256_div_ps(sum_xl, sum_l2), pos);
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 err = _mm256_setzero_ps();
    for (int i = 0; i < p->n; i++) {
        const __m256 lf = _mm256_load_ps(o->l[i]);
        __m256 diff = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(scale, lf), this_min),
                                    _mm256_set1_ps(p->x[i]));
        diff = p->use_mad ? _mm256_and_ps(diff, abs_mask) : _mm256_mul_ps(diff, diff);
        err = _mm256_add_ps(err, _mm256_mul_ps(_mm256_set1_ps(p->w[i]), diff));
    }
    _mm256_store_ps(o->D, D);
    _mm256_store_ps(o->scale, scale);
    _mm256_store_ps(o->min, this_min);
    _mm256_store_ps(o->err, err);
}

// Reads lanes 0..cnt-1 of a batch in candidate order with the reference's rule, updating L,
// *best_error, *scale and *min. Returns how many lanes it consumed: cnt, or k + 1 when taking
// lane k moved min (the later lanes were fitted on the old grid).
static int qz_qkx2_scan(const struct qz_lanes *o, int cnt, int n, uint8_t *L, float *best_error,
                        float *scale, float *min) {
    for (int k = 0; k < cnt; k++) {
        if (!(o->D[k] > 0) || !(o->err[k] < *best_error)) continue;
        for (int i = 0; i < n; i++) L[i] = (uint8_t)o->l[i][k];
        *best_error = o->err[k];
        *scale = o->scale[k];
        const bool moved = qz_bits(o->min[k]) != qz_bits(*min);
        *min = o->min[k];
        if (moved) return k + 1;
    }
    return cnt;
}

float qz_make_qkx2_quants_avx2(int n, int nmax, const float *x, const float *weights, uint8_t *L,
                               float *the_min, uint8_t *Laux, float rmin, float rdelta, int nstep,
                               bool use_mad) {
    QP_ASSERT(n > 0 && n <= QZ_MAX_N && n % QZ_LANES == 0);
    if (!qz_all_finite(x, weights, n))
        return qz_make_qkx2_quants_ref(n, nmax, x, weights, L, the_min, Laux, rmin, rdelta, nstep,
                                       use_mad);
    struct qz_qkx2 p = {.n = n, .nmax = nmax, .x = x, .w = weights, .rmin = rmin,
                        .rdelta = rdelta, .use_mad = use_mad};
    float min, scale;
    if (qz_qkx2_range(&p, &min, L, the_min)) return 0.f;
    float best_error = qz_qkx2_start(&p, min, &scale, L);
    struct qz_lanes o;
    for (int is = 0; is <= nstep;) {
        const int cnt = nstep + 1 - is < QZ_LANES ? nstep + 1 - is : QZ_LANES;
        qz_qkx2_batch(&p, min, is, &o);
        is += qz_qkx2_scan(&o, cnt, n, L, &best_error, &scale, &min);
    }
    *the_min = -min;
    return scale;
}
