// qz_awq.h — AWQ (Lin et al. 2023, "AWQ: Activation-aware Weight Quantization") for one group
// of linears that share an input x: a per-input-channel scale s is searched so that quantizing
// W·diag(s) (with the previous operation's output divided by s, which leaves the fp32 model
// unchanged) loses the least output accuracy; then a clipping ratio is searched per weight group.
//
// Depends on kernels/ headers (qp.h), quantizers/ (qz_spec.h, qz_rtn.h) and OpenBLAS's cblas;
// never on harness/. The caller folds 1/s into the operation before the group (the RMSNorm
// weight for q/k/v and gate/up, the rows of w_up for w_down, the rows of wv for wo).
//
// The algorithm as implemented (llm-awq's auto_scale / auto_clip are the reference):
//   x̄_j = mean over calibration tokens of |x_j| (given by the caller);
//   for α = 0, 0.05, …, 0.95 (QZ_AWQ_N_ALPHA values):
//       s_j = max(x̄_j^α, 1e-4), then s = s / sqrt(max(s) · min(s));
//       each member's W·diag(s) is quantized on its grid (qprobe's RTN grid, qz_rtn.h, groups of
//       G along the input), giving effective weights Ŵ = Q(W·diag(s))·diag(1/s);
//       loss(α) = Σ_members Σ_rows (Ŵ_r − W_r) C (Ŵ_r − W_r)ᵀ / Σ_members rows, with
//       C = (1/N) Σ_t x_t x_tᵀ: exactly the mean squared error of the members' outputs over the
//       N calibration tokens (mean over tokens and output channels);
//   the α of least loss is kept (the first on ties, so α = 0 — plain RTN — wins ties).
//   Clipping (members with clip set; the caller sets it for every linear except q and k, as
//   llm-awq does): for each output row and each weight group g, the grid is fitted to the group of
//   W·diag(s) with its range shrunk by p = 1 − 0.5·i/19, i = 0..19 (QZ_AWQ_N_CLIP ratios from 1.0
//   to 0.5, qz_grid_fit's p), and the p with the least error of that group's partial output,
//   δ_g C_gg δ_gᵀ (δ_g = the group's slice of Ŵ_r − W_r, C_gg the group's block of C), is kept
//   (first on ties: p = 1).
//
// Differences from llm-awq, all deliberate:
//   - the loss is the MSE of the group's own linear outputs, computed exactly from C over every
//     calibration token (llm-awq runs a sample of tokens through the module that contains the
//     group — the whole attention or MLP block for q/k/v and gate/up — and measures its output);
//   - the grid is qprobe's RTN grid (fp16 scale, range widened to hold 0) rather than llm-awq's
//     pseudo_quantize_tensor, and clipping shrinks that grid's range by p (llm-awq clamps to
//     ±p·max|w| and shrinks 1.0 → 0.55 in 10 steps; the task asks for 1.0 → 0.5 in 20);
//   - members may be excluded from the loss (b = NULL): they are only scaled.
#ifndef QZ_AWQ_H
#define QZ_AWQ_H

#include <stdint.h>

#include "qz_spec.h"

#define QZ_AWQ_N_ALPHA 20
#define QZ_AWQ_N_CLIP 20
#define QZ_AWQ_MIN_SCALE 1e-4

// One linear of the group.
struct qz_awq_linear {
    const float *w;          // (rows, n_in) weights, row-major
    int64_t rows;
    const struct qz_base *b; // its grid (method QZ_AWQ or QZ_RTN with gran QZ_GROUP: bits, group,
                             // sym are read), or NULL: scaled but not quantized, not in the loss
    int clip;                // search a clipping ratio per (row, group)
    float *out;              // (rows, n_in) caller-owned: Q(W·diag(s)) with the chosen clipping,
                             // or W·diag(s) when b is NULL
    double loss;             // out: this member's output MSE (mean over tokens and its rows)
};

struct qz_awq_info {
    double alpha;      // the α kept
    double loss_plain; // group loss at α = 0 without clipping (plain RTN on the same grid)
    double loss_scale; // at the kept α, without clipping
    double loss;       // of the result (kept α and clipping)
    double seconds;
};

// Searches s (n_in floats, caller-owned) for the members lin[0..n_lin) given gram = C
// ((n_in × n_in) fp64, symmetric) and xmean = x̄ (n_in), and fills every member's out. info may
// be NULL. Scratch: 2 · max(rows) · n_in doubles plus C's diagonal blocks, freed on return.
// Returns 0; QP_EINVAL with err for a non-finite input, a member with b set that is not a group
// grid, or n_in < 1; QP_ENOMEM.
int qz_awq_quantize(const double *gram, const float *xmean, int64_t n_in, struct qz_awq_linear *lin,
                    int n_lin, float *s, struct qz_awq_info *info, char *err);

// The scales of one α (as above): s_j = max(xmean_j^alpha, QZ_AWQ_MIN_SCALE), normalised by
// sqrt(max · min).
void qz_awq_scales(const float *xmean, int64_t n_in, double alpha, float *s);

#endif
