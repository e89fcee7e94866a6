// qz_codes.h — the integer codes a weight format assigns, group by group: quantizes a row-major
// fp32 tensor under one base format with the real quantizers (qz_rtn, qz_ggml, qz_kquants), reads
// the codes back from the grids and blocks they produce, and hands each group to a callback with
// its source values, codes, dequantized values and grid range. This is the input of the
// grid-collapse statistics (metrics/met_grid.h).
//
// Depends on kernels/ headers (qp.h, kn_types.h, kn_blocks.h, kn_blocks_k.h) and the quantizers
// named above; never on metrics/ or harness/.
//
// Groups and codes per format (n_codes in brackets):
//   rtn:bits=B   a group is the tensor, a row (channel) or G values along a row (group=G, partial
//                last group). code = q - qmin of qz_rtn's grid: sym q in -(2^(B-1)-1)..2^(B-1)-1
//                [2^B - 1], asym q in 0..2^B-1 [2^B]. clip=mse: the grid the clip search picks.
//   nf4, fp4     G values along a row [16]; code = the 4-bit table index; :dq uses the
//                double-quantized absmax, as qz_fake_quant does.
//   q8_0         block of 32 [255]: code = q + 127 for the stored int8 q in -127..127 (llama.cpp's
//                reference quantizer never writes -128).
//   q4_0 q4_1    block of 32 [16]: the stored nibble.   iq4_nl: block of 32 [16]: the nibble (an
//   q5_0 q5_1    block of 32 [32]: nibble | fifth bit << 4.          index into kn_iq4nl_values)
//   q2_k q3_k    sub-block of 16 [4], [8]: the stored unsigned quant (q3_k: low 2 bits | hmask
//                bit << 2, value d·s·(code - 4))
//   q4_k q5_k    sub-block of 32 [16], [32]
//   q6_k         sub-block of 16 [64]: low 4 bits | high 2 bits << 4 (value d·s·(code - 32))
// The llama.cpp types quantize whole rows without an importance matrix (what llama-quantize
// writes without --imatrix); cols must be a multiple of the block (32, or 256 for k-quants).
// Dequantized values are computed from the decoded codes and scales with the same float
// operations as kernels' kn_dequantize_row, so they are bit-identical to it (tests check this);
// for rtn/nf4/fp4 they are bit-identical to qz_fake_quant's output.
// lo and hi are the smallest and largest value the group's grid can represent: the minimum and
// maximum, over all n_codes codes, of the dequantized value of that code in that group.
#ifndef QZ_CODES_H
#define QZ_CODES_H

#include <stdint.h>

#include "qz_spec.h"

// One group, as the walk hands it to the callback. The arrays are valid during the call only.
struct qz_group {
    int64_t row;         // the group's first value is w[row * cols + col] (rtn:tensor: 0, 0)
    int64_t col;
    int64_t n;           // values in the group
    const float *x;      // (n) source values (points into the caller's tensor)
    const uint8_t *codes;// (n) codes, 0 .. n_codes - 1
    const float *dq;     // (n) dequantized values
    float lo, hi;        // grid range (see above)
    int n_codes;         // codes of the format
};

// Called once per group, in row-major order (rows in order, groups along a row in order).
// Return 0 to go on; anything else stops the walk and qz_codes_walk returns it (use a negative
// QP_E* code).
typedef int (*qz_group_fn)(void *ctx, const struct qz_group *g);

// n_codes of base b (see the table above), or QP_ENOTSUP for methods without integer codes of
// at most 8 bits here (f32, f16, bf16, llama.cpp mixes, gptq, awq, smoothquant).
int qz_codes_n(const struct qz_base *b);

// Quantizes w (rows × cols, row-major, caller-owned, not modified) under b and calls fn(ctx, g)
// for every group. Allocates its scratch (one group's codes and values, or one row's blocks) and
// frees it before returning. Returns 0; QP_ENOTSUP (method without codes; a mix must be resolved
// to its per-tensor type first); QP_EINVAL (a weight is NaN or infinite; cols not a multiple of
// the llama.cpp block); QP_ENOMEM; or the callback's nonzero return value. err (QP_ERRLEN bytes,
// may be NULL) gets a one-line message for the errors of the walk itself.
int qz_codes_walk(const struct qz_base *b, const float *w, int64_t rows, int64_t cols,
                  qz_group_fn fn, void *ctx, char *err);

#endif
