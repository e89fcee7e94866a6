// qz_gptq.h — GPTQ (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for
// Generative Pre-trained Transformers") on one linear layer: given its weights W and the Hessian
// of the layer-wise output error, quantize W column by column, each column's rounding error
// compensated on the columns not yet quantized through the inverse Hessian.
//
// Depends on kernels/ headers (qp.h, kn_types.h, kn_blocks*.h, kn_cpu.h), quantizers/ (qz_spec.h,
// qz_rtn.h, qz_ggml.h, qz_kquants.h), OpenBLAS's cblas (dgemm, dtrsm) and libc; never on harness/.
// The Cholesky factorization is our own (double precision, panel-blocked, AVX-512 when the CPU
// has it, bit-identical to the textbook loop): this build's OpenBLAS ships no lapacke.h.
// Tensors that read the same input share one factorization (struct qz_gptq_factor below).
//
// The algorithm as implemented (AutoGPTQ's fasterquant is the reference implementation; the
// differences are listed at the end):
//   H = (2/N) sum_t x_t x_tᵀ (cols × cols, fp64), from the caller.
//   1. Dead inputs: H_ii = 0 → H_ii = 1 and column i of W zeroed (that input is always 0, so
//      the column's value is irrelevant; zeroing it keeps the compensation away from it).
//   2. Act-order (actorder): columns are processed by decreasing H_ii (ties: lower index first,
//      a stable sort); otherwise in order.
//   3. Damping: λ = damp · mean(diag H) added to the diagonal. When the Cholesky factorization
//      fails (H not numerically positive definite), damp is multiplied by 10 and the
//      factorization retried, at most QZ_GPTQ_MAX_RAISES times; then QP_ERANGE.
//   4. U = the upper Cholesky factor of H⁻¹ (H⁻¹ = UᵀU), computed without forming H⁻¹: with J the
//      order-reversing permutation, J H J = L Lᵀ (lower Cholesky) gives H = R Rᵀ with
//      R = J L J upper triangular, and U = R⁻¹ (a triangular solve). Cholesky factors are unique,
//      so this is the same U that AutoGPTQ's cholesky → cholesky_inverse → cholesky(upper)
//      computes, with fewer operations and one fewer rounding step.
//   5. Column sweep in blocks of QZ_GPTQ_BLOCK (128; rounded up to a multiple of the group size
//      so that a dynamic group never straddles two blocks): for column i, q = quant(w_i),
//      err = (w_i − q) / U_ii, and the remaining columns j of the block get w_j −= err · U_ij at
//      once; the columns after the block get the whole block's errors in one matrix product
//      (the lazy batch update, a dgemm). The result is exact arithmetic's, up to rounding.
//   Target grids:
//   - bits=B:group=G[:asym]: qprobe's RTN grid (qz_rtn.h: fp16 scale, integer zero-point, range
//     widened to hold 0), fitted with qz_grid_fit (p = 1) and applied with qz_grid_code /
//     qz_grid_value. Dynamic groups (default): a group's grid is fitted, for each row, to the
//     error-compensated values of its G columns when the sweep reaches the group's first column
//     (with act-order the groups are G consecutive columns in the permuted order, GPTQ's g_idx).
//     Static groups (static): every group's grid is fitted to the original W (after dead-column
//     zeroing, before any permutation or compensation) over G consecutive original columns.
//   - a llama.cpp type (q4_0 … q6_k, iq4_nl), an approximation stated here: when the sweep
//     reaches the first column of a block (32 or 256 weights of a row), llama.cpp's own
//     quantizer (qz_ggml.h / qz_kquants.h, without imatrix) packs the block's error-compensated
//     values; that fixes the block's scales and mins (d, dmin, sub-block scales). The codes are
//     then chosen one column at a time, each the nearest point of that block's fixed grid, with
//     GPTQ's compensation between columns. The grid of each weight is read back from the packed
//     block by dequantizing it with all codes 0 and all codes 1 (every type here is affine in
//     its code, w = A·k + B, except iq4_nl, whose 16 levels d·kvalues[k] are read the same way).
//     So the block parameters see the compensation of earlier blocks but not of the block's own
//     columns, and the codes are nearest-on-grid rather than llama.cpp's search. With act-order
//     a block's columns are not consecutive in the sweep: every block's parameters are then
//     fixed from the original W first (static), whatever :static says. The output holds the
//     dequantized values, which lie on the block grids up to float rounding of A·k + B; it is
//     not repacked into blocks.
//
// Loss reported (struct qz_gptq_info):
//   loss     = ½ tr((W − Q) H (W − Q)ᵀ) with the caller's undamped H and the caller's original W:
//              with H = (2/N) Σ x xᵀ this is (1/N) Σ_t ‖(W − Q) x_t‖², the squared output error
//              per calibration token, summed over the output rows (computed after the sweep,
//              with a dgemm, in fp64).
//   obs_loss = Σ over weights of (w − q)² / (2 U_ii²) accumulated during the sweep, the number
//              AutoGPTQ sums as "Losses": the same quadratic for the damped H and the dead-zeroed
//              W (the optimal-brain-surgeon increments add up to it exactly, up to rounding).
//
// Differences from AutoGPTQ (fasterquant), all deliberate:
//   - dynamic groups are fitted to the fully compensated values of the group (AutoGPTQ fits
//     them to W[:, i:i+G], whose columns inside the current block lack the block's own updates);
//   - damping is raised automatically when the factorization fails (AutoGPTQ raises an error);
//   - fp64 throughout (AutoGPTQ: fp32), our RTN grid (fp16 scales), and a stable act-order sort.
#ifndef QZ_GPTQ_H
#define QZ_GPTQ_H

#include <stdint.h>

#include "qz_spec.h"

#define QZ_GPTQ_BLOCK 128
#define QZ_GPTQ_MAX_RAISES 6

struct qz_grid; // qz_rtn.h

struct qz_gptq_info {
    double loss;       // ½ tr((W−Q) H (W−Q)ᵀ), undamped H (see above)
    double obs_loss;   // the sweep's Σ (w−q)² / (2 U_ii²), damped H
    double damp;       // damping fraction finally used (b->damp · 10^n_raises), from the factor
    int n_raises;      // times damping was raised (when the factor was made)
    int64_t n_dead;    // inputs with H_ii = 0
    int type;          // the llama.cpp type targeted, or -1 for an RTN grid
    int grids_written; // 1 when the grids array was filled (see qz_gptq_quantize_f)
    double seconds;
};

// What GPTQ derives from H alone: the dead inputs, the processing order, the damping finally
// used (with its raises) and U, the upper Cholesky factor of the damped, permuted H⁻¹ (steps 1-4
// above). It depends on H, b->damp and b->actorder only — not on the weights, the bits, the
// group, the target type or static_groups — so the tensors that read the same input (q, k, v;
// gate, up) share one: the results are bit-identical to separate qz_gptq_quantize calls.
// Memory: cols² doubles (U) plus 3·cols words, held until destroyed; making it needs another
// cols² doubles of scratch (freed before it returns). Thread use as in qz_gptq_quantize; the
// factorization itself is bit-identical for any thread count and with or without AVX-512.
struct qz_gptq_factor;

// Makes the factor of h (cols × cols, symmetric, row-major, not modified) for b (QZ_GPTQ).
// Returns 0 with *out set; QP_EINVAL for a bad width or a non-finite entry; QP_ERANGE when H
// stays indefinite after QZ_GPTQ_MAX_RAISES raises of damp; QP_ENOMEM.
int qz_gptq_factor_create(const struct qz_base *b, const double *h, int64_t cols, struct qz_gptq_factor **out,
                          char *err);
// 1 when f was made for b's damp and actorder and this width (the Hessian itself is the caller's
// to match; qz_gptq_quantize_f compares its diagonal).
int qz_gptq_factor_fits(const struct qz_gptq_factor *f, const struct qz_base *b, int64_t cols);
void qz_gptq_factor_destroy(struct qz_gptq_factor *f); // NULL is a no-op

// Quantizes w (rows × cols, row-major, cols = inputs) into q (rows × cols, caller-owned; may not
// alias w) under b, a QZ_GPTQ base: bits/group/sym (RTN grid) or ggml_type (one of q4_0 q4_1
// q5_0 q5_1 q8_0 iq4_nl q2_k … q6_k, whose block size must divide cols), with actorder,
// static_groups and damp. h is the (cols × cols) symmetric Hessian, row-major, not modified.
// f: a factor of this h made for b (qz_gptq_factor_fits), or NULL to make one here (and free it).
// grids (optional): for the integer grid (no llama.cpp type) with groups in original column
// order (static groups, or no actorder), each (row, group)'s grid is written to
// grids[row · ceil(cols / group) + group index] (qz_rtn.h: q = qz_grid_value(grid, code) for
// every weight of the group, exactly) and info->grids_written is 1; otherwise (a llama.cpp type,
// or dynamic groups under actorder, which are groups of permuted columns) grids is left alone
// and grids_written is 0. info may be NULL.
// Rows are independent, so a layer of more than 64 MiB of fp64 (e.g. a 32000 × 2048 classifier)
// is quantized in row panels of P rows (a multiple of 512, P · cols doubles ≈ 64 MiB); below,
// P = rows. Memory (scratch, freed before it returns): 2·P·cols doubles (W, then W − Q, and the
// loss's product with H), P·blk doubles (blk = QZ_GPTQ_BLOCK rounded up to a multiple of the
// group), P·ceil(cols/group) grids for static groups when grids is NULL, plus 2·P·cols floats
// for a llama.cpp target; with f NULL, the factor's too (2·cols² doubles at its peak).
// Uses OpenMP threads over rows and OpenBLAS's threads; the result does not depend on their
// number except through OpenBLAS's dgemm rounding (nor, on the shapes checked, on the panels).
// Returns 0; QP_EINVAL (with err) for a bad shape, a non-finite weight or Hessian entry, a block
// size that does not divide cols, or a factor that does not fit (options, width, or a diagonal
// other than h's); QP_ENOTSUP for a type it cannot target; QP_ERANGE when H stays indefinite
// after QZ_GPTQ_MAX_RAISES raises; QP_ENOMEM.
int qz_gptq_quantize_f(const struct qz_base *b, const float *w, int64_t rows, int64_t cols, const double *h,
                       const struct qz_gptq_factor *f, float *q, struct qz_grid *grids, struct qz_gptq_info *info,
                       char *err);

// The panel size in bytes of fp64 (default 64 MiB; 0 restores it). For tests and benchmarks.
void qz_gptq_set_panel_bytes(int64_t bytes);

// qz_gptq_quantize_f without a shared factor or grids.
int qz_gptq_quantize(const struct qz_base *b, const float *w, int64_t rows, int64_t cols,
                     const double *h, float *q, struct qz_gptq_info *info, char *err);

// The upper Cholesky factor U of (a + damp·I)⁻¹ (n × n, row-major; the lower triangle of u is
// set to 0), as step 4 above computes it. a is not modified. Returns 0, -1 when a + damp·I is
// not numerically positive definite, or QP_ENOMEM (n² doubles of scratch). Exposed for tests.
int qz_gptq_inverse_factor(const double *a, int64_t n, double damp, double *u);

// The lower Cholesky factor of a (n × n, row-major) in place, as step 4 uses it: the lower
// triangle becomes L, the strict upper triangle (ignored on input) 0. Every element is computed
// as the textbook loop does — L[i][j] = (a[i][j] − Σ_{k<j} L[i][k]·L[j][k]) / L[j][j], the sum
// subtracted term by term in k order, no fused multiply-add — in panels of 64 columns (AVX-512
// when simd is 1 and the CPU has it): the same bits for any thread count, simd 0 or 1.
// Returns 0, -1 when a is not numerically positive definite (a is then partly overwritten), or
// QP_ENOMEM. Exposed for tests and benchmarks.
int qz_gptq_cholesky(double *a, int64_t n, int simd);

#endif
