// qz_rtn.h — data-free fake quantization of one 2-D weight tensor: round-to-nearest on a
// uniform integer grid (RTN), bitsandbytes' NF4 and FP4 (with optional double quantization of
// the block scales), and the f16 / bf16 casts. "Fake" means quantize then dequantize: the output
// is f32 holding exactly the values the packed format would reproduce. Also the storage cost
// (bits per weight) of every spec kind, counted from its layout.
//
// Depends on kernels/ headers (qp.h, kn_types.h) and qz_spec.h only; never on harness/.
//
// Tensor layout: rows × cols, row-major, cols contiguous (the input dimension; ne0 in GGUF
// terms). A "channel" is one output row. Groups of G run along a row; when G does not divide
// cols the last group of each row is shorter (cols % G elements), and it gets its own scale.
//
// Numerics (all choices stated here so that results can be reproduced):
//
// RTN, B bits, per group (or per row, or per tensor), scales stored as fp16:
//   sym:  qmax = 2^(B-1) - 1, scale = fp16(absmax / qmax), q = clamp(round(x / scale), -qmax,
//         qmax), x' = q * scale. The extra negative code -2^(B-1) is NOT used: the grid is
//         odd-symmetric (x → -x maps to x' → -x') and 0 is a grid point.
//   asym: the range is widened to include 0 (lo = min(min, 0), hi = max(max, 0)) so that 0 is
//         representable; scale = fp16((hi - lo) / (2^B - 1)), integer zero-point
//         z = clamp(round(-lo / scale), 0, 2^B - 1), q = clamp(round(x / scale) + z, 0, 2^B - 1),
//         x' = (q - z) * scale. Stored: fp16 scale + a B-bit zero-point per group (as GPTQ/AWQ
//         checkpoints store qzeros).
//   Codes are computed with the stored (fp16-rounded) scale, so x' is exactly what the packed
//   format dequantizes to. Rounding is half away from zero (C's roundf, as ggml's q8_0 reference
//   rounds), which keeps the symmetric grid odd-symmetric. A scale that underflows fp16 to 0 quantizes the group to 0; one
//   above fp16's largest finite value is clamped to it (the extremes then clip).
//   clip=mse: for each group, the range is shrunk by p = 1 - 0.8 i / 99, i = 0..99 (1.0 down to
//   0.2; sym: absmax·p, asym: lo·p and hi·p), each candidate quantizes the group, and the one
//   with the least squared error (first on ties, so p = 1 wins ties) is kept. Since p = 1 is
//   the unclipped quantizer, clip=mse never has a larger error than no clipping.
//
// NF4 / FP4 (bitsandbytes' 4-bit types, QLoRA): per block of G (default 64) along a row, absmax
//   = max |x| stored as fp32; code = the table value nearest to x·(1/absmax) (a value exactly on a
//   midpoint goes to the lower value (NF4) or the smaller magnitude (FP4), as bitsandbytes'
//   decision trees compare with '>'), x' = table[code]·absmax. FP4 sends x < 0 to the negative
//   half even when it rounds to zero (code 8, -0), as bitsandbytes does.
//   The tables are reproduced in qz_rtn.c with their source. bitsandbytes blocks the flattened
//   tensor; here blocks do not cross rows, which is the same when G divides cols.
//   dq (double quantization, QLoRA §2): the fp32 absmax values of the whole tensor (in row-major
//   block order) have their mean subtracted; the residuals are quantized in blocks of 256 with
//   bitsandbytes' signed dynamic 8-bit map (create_dynamic_map: 7 decades of linearly spaced
//   midpoints, 127 positive, 127 negative, 0 and 1), each block with its own fp32 absmax; the
//   mean is stored as fp32. As in bitsandbytes, the 4-bit codes are chosen with the exact
//   absmax and dequantized with the double-quantized one.
//
// f16 / bf16: round to nearest even, bit-exact with ggml (qp_fp32_to_fp16 / qp_fp32_to_bf16).
//
// Bits per weight (qz_bits_per_weight, also reported in qz_stats), for n = rows·cols weights and
// nb = rows·ceil(cols / G) groups:
//   f32 32, f16/bf16 16
//   rtn sym   B + 16·ng / n       ng = 1 (tensor), rows (channel), nb (group)
//   rtn asym  B + (16 + B)·ng / n
//   nf4/fp4   4 + 32·nb / n
//        :dq  4 + (8·nb + 32·ceil(nb / 256) + 32) / n
//             e.g. nf4:group=64:dq on a 4096×4096 tensor: 4 + 0.125 + 0.00195 + 2e-7 ≈ 4.127
//   GGML      kn_row_bytes per row ·8 / cols; when the block does not divide cols the row is
//             counted as padded to whole blocks (ceil(cols / block) blocks), since llama.cpp
//             cannot store a partial block
//   mixes     their base type (q4_k_m → q4_k); the per-tensor type of a mix is llama.cpp's
//             rule, applied by the ggml quantizer, not known from the spec alone
//   gptq      as rtn:group=G (fp16 scale, B-bit zero-point when asym), plus a 32-bit group
//             index per column when actorder is on without static (GPTQ's g_idx); gptq:TYPE as
//             TYPE
//   awq       as rtn:group=G
//   smoothquant  8 + 16 / cols (int8 weights, an fp16 scale per output channel; the smoothing
//             factors fold into the previous operation and cost nothing)
#ifndef QZ_RTN_H
#define QZ_RTN_H

#include <stdint.h>

#include "qz_spec.h"

// What one fake quantization did. All counts are over the whole tensor.
struct qz_stats {
    int64_t n;          // weights
    int64_t bits;       // packed size: codes + scales / zero-points / absmax + dq overhead
    int64_t bytes;      // ceil(bits / 8)
    double bpw;         // bits / n
    double sse;         // sum of (x' - x)^2, accumulated in double
    int64_t n_zeroed;   // nonzero inputs that came out as 0
    int64_t n_clipped;  // inputs outside their group's representable range (code clamped)
    int n_codes;        // distinct codes used, of 2^bits (RTN sym: of 2^bits - 1; FP4 counts
                        // -0 and +0 apart); 0 for f32/f16/bf16
};

// Fake-quantizes src (rows × cols, row-major) into dst under b. dst may equal src. st may be
// NULL. Methods: F32 (copy), F16, BF16, RTN, NF4, FP4. Returns 0; QP_ENOTSUP for other methods
// (llama.cpp types and calibrated methods live in their own modules); QP_EINVAL when a weight
// is NaN or infinite (RTN/NF4/FP4) — dst is then unspecified; QP_ENOMEM (dq scratch).
// Allocates only for dq (two floats per block), freed before returning.
int qz_fake_quant(const struct qz_base *b, const float *src, float *dst, int64_t rows, int64_t cols,
                  struct qz_stats *st);

// Bits per weight of a rows × cols tensor stored under b, from the layout (see above).
double qz_bits_per_weight(const struct qz_base *b, int64_t rows, int64_t cols);

// Total packed bits of a rows × cols tensor under b (what qz_stats.bits reports).
int64_t qz_tensor_bits(const struct qz_base *b, int64_t rows, int64_t cols);

// The 16 values of bitsandbytes' NF4 and FP4 codes, indexed by code (4-bit nibble value).
extern const float qz_nf4_table[16];
extern const float qz_fp4_table[16];

// One RTN grid, as fitted to a group; exposed so that calibrated methods (GPTQ, AWQ) quantize
// on exactly the same grid. Dequantized value of code q: (q - zero) * scale.
struct qz_grid {
    float scale; // fp16-representable, >= 0 (0: the group quantizes to 0)
    int zero;    // 0 when symmetric
    int qmin, qmax;
};

// Fits b's grid (RTN, or GPTQ/AWQ bits/sym) to x[0..n) with the range shrunk by p (1 = no clip).
void qz_grid_fit(const struct qz_base *b, const float *x, int64_t n, float p, struct qz_grid *g);
// The code of x on grid g (clamped to [qmin, qmax]).
int qz_grid_code(const struct qz_grid *g, float x);
static inline float qz_grid_value(const struct qz_grid *g, int q) {
    return (float)(q - g->zero) * g->scale;
}

// The grid RTN quantizes one group x[0..n) on (what qz_fake_quant uses): qz_grid_fit with p = 1,
// or, with b->clip_mse, with the p of least squared error found by the clip search above.
// Exposed so that diagnostics (quantizers/qz_codes.h) read back the exact codes.
void qz_rtn_group_grid(const struct qz_base *b, const float *x, int64_t n, struct qz_grid *g);

// RTN's grids, for an exact packed copy (below): qz_fake_quant, and with b->method == QZ_RTN
// each group's grid into grids (qz_rtn_n_grids of them: one per tensor, or per row and group
// in row-major order; NULL: none). Other methods write no grid.
int qz_fake_quant_grids(const struct qz_base *b, const float *src, float *dst, int64_t rows, int64_t cols,
                        struct qz_stats *st, struct qz_grid *grids);
int64_t qz_rtn_group_cols(const struct qz_base *b, int64_t cols); // weights of a group along a row
int64_t qz_rtn_n_grids(const struct qz_base *b, int64_t rows, int64_t cols);

// v (rows × cols) as Q8_0 blocks (rows · cols / 32 of them, row-major) when that is exact: every
// value on its group's grid (grids as qz_fake_quant_grids writes them: grids[r · ceil(cols /
// group_cols) + c / group_cols], or grids[0] for every weight when tensor_grid), cols a multiple
// of 32, groups that do not split a block, codes q − zero in [−128, 127]. Q8_0 dequantizes to
// the same floats (the engine then runs it as it runs v, bit for bit) in 8.5 bits a weight
// instead of 32. 0 written; 1 not exact (out partly written, unused).
struct kn_block_q8_0;
int qz_grid_q8_0_exact(const float *v, int64_t rows, int64_t cols, const struct qz_grid *grids, int64_t group_cols,
                       int tensor_grid, struct kn_block_q8_0 *out);

// The 4-bit NF4 / FP4 code of v = x / absmax (v in [-1, 1]), exactly as qz_fake_quant picks it
// (ties as described above). Dequantized value: qz_nf4_table[code] or qz_fp4_table[code] times
// the block's stored absmax.
int qz_nf4_code(float v);
int qz_fp4_code(float v);

// The largest |x[k]| of x[0..n) (0 for n = 0; NaN is passed over, as fmaxf does): a block's
// absmax as NF4/FP4 scale by it.
float qz_block_absmax(const float *x, int64_t n);

// dq: the stored (double-quantized) absmax values of the blocks of group values of w (rows, cols)
// — ceil(cols / group) per row, in row-major block order — as qz_fake_quant computes them with
// :dq. Returns an array from qp_alloc (free with qp_free; at least one element), NULL when out of
// memory.
float *qz_nfp4_dq_absmax(const float *w, int64_t rows, int64_t cols, int64_t group);

#endif
