// kn_ops.h — the compute kernels of the engine, as a table of function pointers: a scalar
// reference first, overwritten by the best ISA the CPU and OS support (kn_ops_best), or the one
// the program forces (kn_ops_force: the CLI passes QPROBE_ISA=ref|avx2|avx512).
//
// Every kernel is defined by its reference in kn_ops_ref.c, and the SIMD versions perform the
// *same* floating-point operations in the same order, so all paths give bit-identical results:
//  - dot products are fused multiply-add chains over k from 0.0f, one chain per output;
//  - sums of n values use 16 lanes (lane l takes elements l, l+16, ...; a partial last block is
//    padded with +0.0f), then the fixed tree 16→8→4→2→1 (lane i += lane i+half);
//  - exp is qprobe's own polynomial (kn_expf_ref), evaluated identically in every lane.
// Tests compare each ISA against the reference bit for bit (tolerance 0).
//
// Kernels never allocate: callers pass outputs and scratch. Depends on libc and intrinsics only.
#ifndef KN_OPS_H
#define KN_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "kn_types.h"

// Weights of a linear layer are packed into panels of KN_NR output columns: panel p holds
// columns p*KN_NR .. p*KN_NR+KN_NR-1, stored k-major: wp[(p*n_in + k)*KN_NR + c] = W[p*KN_NR+c][k]
// (zero where the column is past n_out). 64-byte aligned.
#define KN_NR 16
// Decoding reads fp16 weights from fp16 panels: the same layout holding fp16 bit patterns,
// wp16[(p*n_in + k)*KN_NR + c] (kn_f16_panels_pack builds them once), and gemv_f16 takes at most
// KN_GEMV_ROWS input rows per call.
#define KN_GEMV_ROWS 4

struct kn_ops {
    const char *name; // "ref", "avx2", "avx512"

    // y[r*ldy + j] = sum_k x[r*ldx + k] * W[j][k] for rows r in [0, n_rows) and columns
    // j in [col0, col1), col0 a multiple of KN_NR. wp: all panels of W (see above).
    void (*gemm_f32)(const float *x, size_t ldx, int n_rows, const float *wp, int n_in, int col0,
                     int col1, float *y, size_t ldy);

    // The same product on activations packed once per product (the engine's path): pack_x
    // writes x (n_rows, n_in; row r at x + r * ldx) in blocks of xmr rows, k-major inside a
    // block: xp[(b * n_in + k) * xmr + i] = x[(b * xmr + i) * ldx + k], rows past n_rows zero
    // (ceil(n_rows / xmr) * xmr * n_in floats, 64-byte aligned). gemm_xp then computes
    // y[r * ldy + j] for r in [0, n_rows), j in [0, ncols) from the ceil(ncols / KN_NR)
    // consecutive panels at wp, each output the same fma chain as gemm_f32's.
    int xmr;
    void (*pack_x)(const float *x, size_t ldx, int n_rows, int n_in, float *xp);
    void (*gemm_xp)(const float *xp, int n_rows, const float *wp, int n_in, int ncols, float *y, size_t ldy);

    // The machine's FMA peak for this table's widest vectors: n rounds of 12 independent fma
    // chains in registers; returns the flops done (2 per lane per fma). For gemm-peak.
    double (*fma_loop)(long n);

    // One panel from weight rows as stored, for engines that build panels as they go instead of
    // holding them: panel (n_in, KN_NR) k-major := rows 0..n_rows-1 (n_rows <= KN_NR; row r
    // starts ld elements after row r-1), columns n_rows..KN_NR-1 zero. Exact conversions
    // (fp16 -> fp32 is exact), so every ISA writes the same bits. panel 32-byte aligned.
    void (*pack_f32)(const float *rows, size_t ld, int n_rows, int n_in, float *panel);
    void (*pack_f16)(const uint16_t *rows, size_t ld, int n_rows, int n_in, float *panel);
    // The product on fp16 panels (above) for n_rows <= KN_GEMV_ROWS input rows (row r at
    // x + r * ldx), as decoding needs it: y[r * ldy + j] for j in [0, ncols) from the
    // ceil(ncols / KN_NR) panels at wp16 (64-byte aligned). Each output is gemm_f32's fma chain
    // over k from 0.0f on the converted weights (fp16 -> fp32 is exact): the same bits. The
    // weights stream from memory once per call, converted in registers.
    void (*gemv_f16)(const float *x, size_t ldx, int n_rows, const uint16_t *wp16, int n_in, int ncols, float *y,
                     size_t ldy);
    // out[i] = fp16 h[i] as fp32 for i in [0, n) (exact): fp16 panels into the fp32 panels gemm_xp
    // reads, for batches.
    void (*f16_to_f32)(const uint16_t *h, size_t n, float *out);
    // kn_dequantize_row (kn_blocks.h) for a row of n values of a packed type, bit for bit.
    void (*dequant_row)(enum kn_type type, const void *src, float *dst, int64_t n);

    // out[i] = w[i] * (x[i] * (1 / sqrtf(sum(x^2)/n + eps))). out may equal x.
    void (*rmsnorm)(float *out, const float *x, const float *w, int n, float eps);

    // One query of causal attention over n_keys keys of one head:
    //   s_j = (sum_d q[d]*kt[d*kt_stride + j]) / sqrtf(head_size), p = softmax(s),
    //   out[d] = sum_j p_j * v[j*head_size + d].
    // kt: keys transposed (head_size rows of kt_stride); v: (n_keys, head_size);
    // scratch: n_keys floats (rounded up to 16), 64-byte aligned.
    void (*attend)(float *out, const float *q, const float *kt, size_t kt_stride, const float *v,
                   int head_size, int n_keys, float *scratch);

    // Causal attention for nq consecutive queries of one head: query i (row q + i*q_stride)
    // sees keys 0 .. n_keys0 + i - 1 and writes out + i*out_stride; each row's result is exactly
    // attend()'s. scratch: nq rows of sstride floats, sstride >= n_keys0 + nq - 1 rounded up to
    // 16, 64-byte aligned.
    void (*attend_rows)(float *out, size_t out_stride, const float *q, size_t q_stride, int nq,
                        const float *kt, size_t kt_stride, const float *v, int head_size,
                        int n_keys0, float *scratch, size_t sstride);

    // h[i] = (g[i] * (1 / (1 + exp(-g[i])))) * u[i]  (SwiGLU). h may equal g.
    void (*swiglu)(float *h, const float *g, const float *u, int n);

    // Returns log(sum_i exp(x[i] - m)) + m with m = max x, the sum of float exps taken in double
    // (16 double lanes, tree as above). *max_out = m when non-NULL.
    double (*logsumexp)(const float *x, int n, float *max_out);
};

extern const struct kn_ops kn_ops_ref;
extern const struct kn_ops kn_ops_avx2;   // only if compiled in; check kn_ops_for
extern const struct kn_ops kn_ops_avx512;

// pack_x for blocks of mr rows (kn_ops_ref.c), shared by every table.
void kn_pack_x(int mr, const float *x, size_t ldx, int n_rows, int n_in, float *xp);
// The AVX2 panel packers (kn_pack_avx2.c), shared by the AVX2 and AVX-512 tables.
void kn_pack_f32_avx2(const float *rows, size_t ld, int n_rows, int n_in, float *panel);
void kn_pack_f16_avx2(const uint16_t *rows, size_t ld, int n_rows, int n_in, float *panel);
// fp16 panels (above) of output columns [0, n_rows) from rows stored as fp16 (row r at rows + r * ld
// elements): ceil(n_rows / KN_NR) * KN_NR * n_in values at wp16, zero past n_rows. Moves bits only.
void kn_f16_panels_pack(const uint16_t *rows, size_t ld, int n_rows, int n_in, uint16_t *wp16);
// AVX2 row dequantization (kn_dequant_avx2.c): Q8_0, Q4_0 and Q4_K, others by the reference.
void kn_dequant_row_avx2(enum kn_type type, const void *src, float *dst, int64_t n);

// The table for an ISA name if this CPU and OS can run it, else NULL.
const struct kn_ops *kn_ops_for(const char *isa);
// Forces the table of kernel level isa ("ref", "avx2", "avx512") for every later kn_ops_best,
// or (NULL or "") goes back to the best. Call before any engine is made, from one thread.
// QP_EINVAL (unknown name) or QP_ENOTSUP (the CPU lacks it), with a message in err.
int kn_ops_force(const char *isa, char *err);
// The forced table, else the best for this CPU.
const struct kn_ops *kn_ops_best(void);

// The reference exp, exposed for tests: |rel err| < 2e-7 on [-87, 88]; 0 below -87.
float kn_expf_ref(float x);

#endif
