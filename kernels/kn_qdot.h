// kn_qdot.h — what the engine needs to run a packed weight type with quantized activations, as
// llama.cpp's CPU backend does (act=q8): the activation type the weight type pairs with
// (q8_0 for q4_0/q5_0/q8_0/iq4_nl, q8_1 for q4_1/q5_1, q8_K for the k-quants), the activation
// quantizer, and the dot product of a weight row with an activation row (one, or a tile).
//
// Kernels come per ISA: the scalar references ("ref": kn_qdot.c, kn_vecdot.c, kn_vecdot_k.c)
// define the results, and the AVX2 versions (kn_qdot_avx2.c) return the same bits for every
// input, and on CPUs with AVX512-VNNI the tiles of kn_qdot_avx512.c ("avx512") do too.
// Depends on kernels/ only. Kernels never allocate.
#ifndef KN_QDOT_H
#define KN_QDOT_H

#include <stddef.h>
#include <stdint.h>

#include "kn_types.h"

struct kn_qtype {
    enum kn_type wtype;    // weight type
    enum kn_type act_type; // activation type (KN_Q8_0, KN_Q8_1, KN_Q8_K)
    // y (kn_row_bytes(act_type, n) bytes) := x (n floats) quantized; n a multiple of the block
    void (*quantize_act)(const float *x, void *y, int64_t n);
    // dot product of one weight row and one quantized activation row of n elements
    float (*dot)(const void *w, const void *act, int64_t n);
    // A tile of dot products, each bit for bit dot()'s: for j in [0, n_rows), r in [0, n_act),
    //   out[r * out_stride + j] = dot(w + j * w_stride bytes, act + r * act_stride bytes, n).
    // The SIMD versions unpack a few weight rows once and reuse them for many activation rows.
    void (*dot_tile)(const void *w, size_t w_stride, int n_rows, const void *act, size_t act_stride,
                     int n_act, int64_t n, float *out, size_t out_stride);
    const char *isa; // the kernels' ISA: "ref" or "avx2"
    // Optional (NULL where this ISA has none): the weights laid out once, at load, in groups of
    // 16 rows made for this ISA's tiles (x16_bytes(n) bytes per group of rows of n values, a
    // multiple of 64, the stored size rounded up; x16_pack writes ceil(n_rows / 16) groups at
    // dst, 64-byte aligned), and the dot products on that layout: for j in [0, n_rows) (group
    // j / 16, row j % 16), r in [0, n_act):
    //   out[r * out_stride + j] = dot(weight row j, act + r * act_stride bytes, n), bit for bit.
    // With one activation row (decoding) nothing is unpacked into rows or transposed.
    size_t (*x16_bytes)(int64_t n);
    void (*x16_pack)(const void *w, size_t w_stride, int n_rows, int64_t n, void *dst);
    void (*x16_dot)(const void *wx, int n_rows, const void *act, size_t act_stride, int n_act, int64_t n,
                    float *out, size_t out_stride);
};

// The Q4_0 x16 layout (plain C, kn_qdot.c; the AVX512-VNNI tiles read it): per group of 16 rows
// and n / 32 blocks, first block b's nibbles at b * 256: four 64-byte vectors, vector t holding
// bytes 4t..4t+3 of row j's qs in bytes 4j..4j+3; then block b's 16 scales d (fp16, row j at
// 2j) at (n / 32) * 256 + b * 32; zero padding to a multiple of 64 bytes. Rows past n_rows in the
// last group are zero.
size_t kn_q4_0x16_bytes(int64_t n);
void kn_q4_0x16_pack(const void *w, size_t w_stride, int n_rows, int64_t n, void *dst);
// The Q8_0 x16 layout, likewise: block b's weights at b * 512, eight 64-byte vectors, vector g
// holding values 4g..4g+3 of row j as unsigned bytes u = w + 128 (w XOR 0x80) in bytes 4j..4j+3;
// then the scales at (n / 32) * 512 + b * 32.
size_t kn_q8_0x16_bytes(int64_t n);
void kn_q8_0x16_pack(const void *w, size_t w_stride, int n_rows, int64_t n, void *dst);

// The entry for wtype whose kernels use the best ISA at or below isa ("ref", "avx2", "avx512",
// the names of kn_ops.h) that this CPU runs: "avx2" and "avx512" give the AVX2 kernels when the
// CPU has AVX2, FMA and F16C, else the reference. NULL when wtype has no quantized-activation
// path or isa is not one of those names. Static storage: never freed.
const struct kn_qtype *kn_qtype_for_isa(enum kn_type wtype, const char *isa);

// The best entry for this CPU, with kn_ops_best's choice as the ceiling, so that forcing "ref"
// (QPROBE_ISA=ref) gives the reference kernels here too. NULL when wtype has no
// quantized-activation path.
const struct kn_qtype *kn_qtype_for(enum kn_type wtype);

// The reference q8_K activation quantizer (llama.cpp's quantize_row_q8_K_ref), also the
// quantizers' (qz_quantize_act_q8_K): x (n floats, n a multiple of 256) into n / 256 blocks at y.
void kn_quant_q8_K_ref(const float *x, void *y, int64_t n);

// ---------------------------------------------------------------------------------------------
// The AVX2 kernels (kn_qdot_avx2.c), reached through the tables above; call them directly only
// on a CPU with AVX2, FMA and F16C. Signatures as the struct's members; no alignment needed.

void kn_quant_q8_0_avx2(const float *x, void *y, int64_t n);
void kn_quant_q8_1_avx2(const float *x, void *y, int64_t n);
void kn_quant_q8_K_avx2(const float *x, void *y, int64_t n);
float kn_dot_q4_0_q8_0_avx2(const void *w, const void *act, int64_t n);
float kn_dot_q4_1_q8_1_avx2(const void *w, const void *act, int64_t n);
float kn_dot_q5_0_q8_0_avx2(const void *w, const void *act, int64_t n);
float kn_dot_q5_1_q8_1_avx2(const void *w, const void *act, int64_t n);
float kn_dot_q8_0_q8_0_avx2(const void *w, const void *act, int64_t n);
float kn_dot_iq4_nl_q8_0_avx2(const void *w, const void *act, int64_t n);
float kn_dot_q2_K_q8_K_avx2(const void *w, const void *act, int64_t n);
float kn_dot_q3_K_q8_K_avx2(const void *w, const void *act, int64_t n);
float kn_dot_q4_K_q8_K_avx2(const void *w, const void *act, int64_t n);
float kn_dot_q5_K_q8_K_avx2(const void *w, const void *act, int64_t n);
float kn_dot_q6_K_q8_K_avx2(const void *w, const void *act, int64_t n);
void kn_dot_tile_q4_0_q8_0_avx2(const void *w, size_t w_stride, int n_rows, const void *act,
                                size_t act_stride, int n_act, int64_t n, float *out, size_t out_stride);
void kn_dot_tile_q4_1_q8_1_avx2(const void *w, size_t w_stride, int n_rows, const void *act,
                                size_t act_stride, int n_act, int64_t n, float *out, size_t out_stride);
void kn_dot_tile_q5_0_q8_0_avx2(const void *w, size_t w_stride, int n_rows, const void *act,
                                size_t act_stride, int n_act, int64_t n, float *out, size_t out_stride);
void kn_dot_tile_q5_1_q8_1_avx2(const void *w, size_t w_stride, int n_rows, const void *act,
                                size_t act_stride, int n_act, int64_t n, float *out, size_t out_stride);
void kn_dot_tile_q8_0_q8_0_avx2(const void *w, size_t w_stride, int n_rows, const void *act,
                                size_t act_stride, int n_act, int64_t n, float *out, size_t out_stride);
void kn_dot_tile_iq4_nl_q8_0_avx2(const void *w, size_t w_stride, int n_rows, const void *act,
                                  size_t act_stride, int n_act, int64_t n, float *out, size_t out_stride);
void kn_dot_tile_q2_K_q8_K_avx2(const void *w, size_t w_stride, int n_rows, const void *act,
                                size_t act_stride, int n_act, int64_t n, float *out, size_t out_stride);
void kn_dot_tile_q3_K_q8_K_avx2(const void *w, size_t w_stride, int n_rows, const void *act,
                                size_t act_stride, int n_act, int64_t n, float *out, size_t out_stride);
void kn_dot_tile_q4_K_q8_K_avx2(const void *w, size_t w_stride, int n_rows, const void *act,
                                size_t act_stride, int n_act, int64_t n, float *out, size_t out_stride);
void kn_dot_tile_q5_K_q8_K_avx2(const void *w, size_t w_stride, int n_rows, const void *act,
                                size_t act_stride, int n_act, int64_t n, float *out, size_t out_stride);
void kn_dot_tile_q6_K_q8_K_avx2(const void *w, size_t w_stride, int n_rows, const void *act,
                                size_t act_stride, int n_act, int64_t n, float *out, size_t out_stride);


// The AVX512-VNNI tiles (kn_qdot_avx512.c): call only on a CPU with AVX-512 F/BW/VL/DQ and VNNI.
#define KN_TILE512(w, a)                                                                       \
    void kn_dot_tile_##w##_##a##_avx512(const void *w_, size_t w_stride, int n_rows, const void *act, \
                                        size_t act_stride, int n_act, int64_t n, float *out, size_t out_stride);
KN_TILE512(q4_0, q8_0)
KN_TILE512(q4_1, q8_1)
KN_TILE512(q5_0, q8_0)
KN_TILE512(q5_1, q8_1)
KN_TILE512(q8_0, q8_0)
KN_TILE512(iq4_nl, q8_0)
KN_TILE512(q2_K, q8_K)
KN_TILE512(q3_K, q8_K)
KN_TILE512(q4_K, q8_K)
KN_TILE512(q5_K, q8_K)
KN_TILE512(q6_K, q8_K)
#undef KN_TILE512
void kn_dot_x16_q4_0_q8_0_avx512(const void *wx, int n_rows, const void *act, size_t act_stride, int n_act,
                                 int64_t n, float *out, size_t out_stride);
void kn_dot_x16_q8_0_q8_0_avx512(const void *wx, int n_rows, const void *act, size_t act_stride, int n_act,
                                 int64_t n, float *out, size_t out_stride);

#endif
