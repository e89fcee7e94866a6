// met_grid.h — grid collapse: how many distinct weights a quantizer merges into one code, how
// many it rounds to zero or clips, how evenly it uses its codes (code entropy = effective bits),
// and, for whole vectors (embedding or output rows), how many rows become identical or nearly
// identical to another row after quantization although they were not before.
//
// Pure statistics: the input is a sequence of quantization groups as quantizers/qz_codes.h walks
// them (source values, integer codes, dequantized values, the group's grid range), but nothing
// here depends on quantizers/. Depends on kernels/ (qp.h; kn_ops.h for the projection GEMM of the
// near-duplicate search) and libc only.
#ifndef MET_GRID_H
#define MET_GRID_H

#include <stdint.h>

struct kn_ops;

// ---------------------------------------------------------------------------------------------
// Per-tensor code statistics, accumulated group by group.

#define MET_GRID_MAX_CODES 256

// Caller-owned accumulator: met_grid_init, met_grid_add per group, read the fields and the
// functions below, met_grid_deinit. Fields are read-only for callers.
struct met_grid {
    int n_codes;                // codes of the format, 1..MET_GRID_MAX_CODES
    int64_t groups;             // groups added
    int64_t weights;            // values added
    int64_t distinct_inputs;    // Σ over groups of the distinct source values of the group
                                //   (exact float equality, so -0 and +0 are one value)
    int64_t distinct_codes;     // Σ over groups of the distinct codes the group uses
    int min_codes;              // fewest distinct codes used by one group (0 before any group)
    int64_t collisions;         // Σ over groups (distinct inputs - distinct codes): distinct
                                //   source values merged into a code already taken
    int64_t zeroed;             // x != 0 whose dequantized value is 0 (either sign)
    int64_t clipped;            // x < lo or x > hi of its group. Literal: a group's absmax
                                //   just above hi because its scale was rounded down to fp16
                                //   counts too, though it got the extreme code anyway
    int64_t code_hist[MET_GRID_MAX_CODES]; // uses of each code (entries >= n_codes stay 0)
    uint64_t *slots;            // (slots_cap) hash set of one group's values; owned
    int64_t slots_cap;
};

// 0, or QP_EINVAL when n_codes is not in 1..MET_GRID_MAX_CODES. Allocates nothing yet.
int met_grid_init(struct met_grid *g, int n_codes);
// Frees the hash set. Safe on a zeroed struct and twice.
void met_grid_deinit(struct met_grid *g);

// Adds one group of n >= 1 values: x (source), codes (0..n_codes-1), dq (dequantized values),
// and [lo, hi], the smallest and largest value the group's grid can represent (the dequantized
// values of its extreme codes). The arrays are the caller's and only read. Returns 0,
// QP_ERANGE when a code is >= n_codes (nothing is added; message in err, QP_ERRLEN bytes, may
// be NULL), or QP_ENOMEM (growing the hash set for a group larger than any before).
int met_grid_add(struct met_grid *g, const float *x, const uint8_t *codes, const float *dq,
                 int64_t n, float lo, float hi, char *err);

// distinct_codes / groups (0 when no group).
double met_grid_mean_codes(const struct met_grid *g);
// Entropy of code_hist in bits: -Σ p log2 p with p = uses / weights (0 when no weight). The
// effective bits per weight the codes carry; at most met_grid_max_bits.
double met_grid_entropy_bits(const struct met_grid *g);
// log2(n_codes): what the codes could carry if all were used equally.
double met_grid_max_bits(const struct met_grid *g);

// ---------------------------------------------------------------------------------------------
// Vector-space collapse of a matrix (rows × cols, row-major) before and after quantization.
//
// Row i has an exact duplicate when another row is bitwise identical to it (hashing, then
// memcmp). Row i has a near-duplicate when another row j is an exact duplicate of it, or both
// have a nonzero norm and cos(i, j) >= MET_NEAR_DUP_COS (computed in fp64; all-zero rows have no
// direction and are near only to their exact duplicates).
//
// The near-duplicate search is exhaustive (every pair of distinct rows) when rows <=
// MET_NEAR_EXHAUSTIVE_ROWS, and probabilistic above: sign random projections with a fixed seed
// (MET_LSH_TABLES tables of MET_LSH_BITS hyperplanes with N(0,1) entries), rows sharing a key in
// some table are candidates, and every candidate pair gets the exact fp64 cosine check, so there
// are no false positives. A pair at cosine c is separated by one hyperplane with probability
// θ/π, θ = acos(c); at the threshold (θ = 0.01414) it shares a 16-bit key with probability
// (1 - 0.0045)^16 = 0.930, and is missed by all 6 tables with probability 0.070^6 ≈ 1.2e-7
// (less for closer pairs). Rows in one bucket are compared pairwise: first on their 96
// projections (a pair whose projected distance is 4x what cosine >= MET_NEAR_DUP_COS allows is
// dropped; a chi-square tail bound puts the chance of dropping a true pair below 1e-30), then
// with the exact cosine. Cost: rows·cols·96 multiply-adds for the projections, 96 per candidate
// pair, cols per surviving pair. Rows that crowd into few buckets (a matrix whose rows share a
// strong common direction) make more candidate pairs: on 32000 x 4096 Gaussian rows this takes
// about 7 s on one core, and about 45 s when every row carries a common component giving a
// mean pairwise cosine of 0.9. Exact duplicates take part once (the lowest-indexed row of each
// class), and a pair whose two rows both already have a near-duplicate is skipped. Projections
// go through ops->gemm_f32, whose ISA paths are bit-identical, so keys and results do not
// depend on the CPU.

#define MET_NEAR_DUP_COS 0.9999
#define MET_NEAR_EXHAUSTIVE_ROWS 1024
#define MET_LSH_TABLES 6
#define MET_LSH_BITS 16
#define MET_LSH_SEED 0x5eed5eed0ddba11ull

enum met_near_mode {
    MET_NEAR_AUTO,       // exhaustive when rows <= MET_NEAR_EXHAUSTIVE_ROWS, else LSH
    MET_NEAR_EXHAUSTIVE, // every pair (quadratic: for tests and small matrices)
    MET_NEAR_LSH,        // random projections whatever the size (tests of the LSH path)
};

// Per-row flags of one matrix x (rows × cols). exact and near: rows bytes each (caller-owned;
// either may be NULL), set to 1 for rows with an exact / near duplicate, else 0. ops: the kernel
// table for the projections (NULL: kn_ops_ref). *pairs (may be NULL) receives the number of
// cosines computed. Returns 0, QP_ERANGE (cols > INT_MAX), or QP_ENOMEM (scratch, all freed
// before returning); err (QP_ERRLEN bytes, may be NULL) says which.
int met_dup_flags(const struct kn_ops *ops, const float *x, int64_t rows, int64_t cols,
                  enum met_near_mode mode, uint8_t *exact, uint8_t *near, int64_t *pairs,
                  char *err);

struct met_vec_collapse {
    int64_t rows, cols;
    int64_t exact_before, exact_after; // rows with an exact duplicate
    int64_t exact_new;                 // ... after quantization but not before
    int64_t near_before, near_after;   // rows with a near-duplicate
    int64_t near_new;                  // ... after but not before
    int exhaustive;                    // 1: every pair checked; 0: LSH candidates
    int64_t pairs_checked;             // cosines computed, both matrices
};

// Compares before and after (both rows × cols). Same returns as met_dup_flags.
int met_vec_collapse(const struct kn_ops *ops, const float *before, const float *after,
                     int64_t rows, int64_t cols, enum met_near_mode mode,
                     struct met_vec_collapse *out, char *err);

#endif
