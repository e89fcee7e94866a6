// hx_qat.h — quantization-aware training of a whole model (the `qat:` spec, quantizers/qz_qat.h),
// distilled from the unquantized model on the calibration windows, and packed as a variant like
// any other (struct hx_quant_model), so that every diagnostic, task, gate rule and report works
// on it unchanged.
//
// The loop, step by step:
//   1. Student: the source model's parameters, untied (the embedding and the classifier are two
//      tensors, as every variant stores them) unless the source stores no classifier of its own
//      (embd_only: the trained embedding serves, as in every variant of such a model), as fp32
//      latent weights — biases (Qwen2) and norms (post-norms too) included; with init=gptq, the
//      parameters of the GPTQ variant with the same grid (hx_calib_quantize) instead.
//      Every 2-D weight the variant quantizes gets a learnable grid (qz_qat_grid: per-group scales,
//      fitted by RTN or llama.cpp's quantizer); rows a llama.cpp type cannot hold (blocks of 32)
//      fall back to f16 as llama.cpp does, and those and keep= tensors train unquantized. The
//      RMSNorm weights train too (fp32, as every variant keeps them).
//   2. Each step takes HX_QAT_BATCH calibration windows (hx_calib: the same windows, overlap
//      refusal and BOS handling as GPTQ/AWQ), in an order drawn from the spec's seed (a fresh
//      permutation per pass over the windows). Per window: the teacher's logits come from the
//      engine on the unquantized model (computed on the fly, never stored beyond the window);
//      the student runs kernels/kn_train.h's forward on its fake-quantized weights (computed per
//      tensor when a product needs them, kn_train_wsrc); the loss is
//      the mean over tokens of KL(teacher ‖ student) plus ce × next-token cross-entropy.
//   3. Gradients: kn_train_backward gives dL/dw'; qz_qat_grad turns them into the latent weights'
//      straight-through gradients and the scales' (and minima's) LSQ gradients.
//   4. Global gradient-norm clipping at HX_QAT_CLIP over every trained value, then AdamW
//      (β = 0.9, 0.999, ε = 1e-8, no weight decay: decay would pull the latent weights off their
//      grid points) with the learning rate lr·t/W for the first W = max(1, steps/20) steps and
//      then a cosine from lr down to lr/10 at the last step; the scales have their own AdamW
//      state and the same schedule.
//   5. A loss that is not finite stops the run: QP_ENUMERIC, "training diverged at step N",
//      nothing returned. The caller's stop flag (hx_calib.stop, Ctrl-C) is polled every step:
//      QP_EINTR, nothing returned.
//   6. Finally scales round to fp16 and every quantized tensor is written as its format stores it:
//      RTN grids as their fake-quantized fp32 values (as rtn: variants run), llama.cpp types as
//      packed blocks (so `convert` writes them and act=q8 runs them on their blocks).
// Deterministic: the same spec, seed and calibration windows give the same bits for any thread
// count (kn_train.h's fixed reduction order; the teacher is the engine, itself thread-count
// independent; the grid updates are per group). It does depend on OpenBLAS's kernels: another
// OPENBLAS_CORETYPE rounds the products differently, and training amplifies that (docs/QAT.md).
//
// Memory: four fp32 copies of the parameters (latent, gradient, two AdamW moments; the
// fake-quantized weights are never stored for the whole model, only the largest tensor's at a
// time), the grids (per group: scale, zero-point, their gradient and two moments), one window's
// activations (kn_train.h) and the teacher engine (reading the source's weights as stored). The
// gradient and optimizer state are freed before the result is packed, and allocated only after
// an init=gptq variant is done with, so neither adds to the peak.
//
// Depends on kernels/, quantizers/, harness/run/hx_calib.h and hx_variant.h.
#ifndef HX_QAT_H
#define HX_QAT_H

#include <stdint.h>

#include "kn_model.h"

struct hx_calib;
struct hx_quant_model;
struct qz_variant;

#define HX_QAT_BATCH 4     // calibration windows per optimizer step
#define HX_QAT_CLIP 1.0    // global gradient-norm clip

// What one training run did (for --json, the store and the report).
struct hx_qat_info {
    int64_t steps, tokens;    // optimizer steps taken, training tokens seen (windows · length)
    double seconds;           // wall time of the training loop (initialisation excluded)
    double init_seconds;      // building the student (GPTQ included with init=gptq)
    double loss_first, loss_last; // mean per-token loss of the first step and of the last tenth
    int64_t n_clipped;        // latent weights outside their grid at the end (zero STE gradient)
};

// Trains src under v (base method QZ_QAT) on cal and returns the packed variant in *out (free with
// hx_quant_model_destroy). info may be NULL. n_threads: OpenMP threads (cal->n_threads when 0).
// Every family of kernels/kn_model.h trains (kn_train.h). 0, or with err: QP_EINVAL (a variant QAT
// does not take: name~ rules, ;imatrix), QP_ENUMERIC
// (the loss became NaN or infinite: "training diverged at step N"), QP_EINTR (stopped), QP_ENOMEM.
int hx_qat_model_create(const struct kn_weights *src, const struct qz_variant *v, const struct hx_calib *cal,
                        struct hx_quant_model **out, struct hx_qat_info *info, char *err);

#endif
