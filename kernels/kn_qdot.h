// kn_qdot.h — what the engine needs to run a packed weight type with quantized activations, as
// llama.cpp's CPU backend does (act=q8): the activation type the weight type pairs with
// (q8_0 for q4_0/q5_0/q8_0/iq4_nl, q8_1 for q4_1/q5_1, q8_K for the k-quants), the activation
// quantizer, and the row dot product. Depends on kernels/ only.
#ifndef KN_QDOT_H
#define KN_QDOT_H

#include <stddef.h>
#include <stdint.h>

struct kn_qtype {
    int wtype;    // weight type (enum kn_type)
    int act_type; // activation type (KN_Q8_0, KN_Q8_1, KN_Q8_K)
    // y (kn_row_bytes(act_type, n) bytes) := x (n floats) quantized; n a multiple of the block
    void (*quantize_act)(const float *x, void *y, int64_t n);
    // dot product of one weight row and one quantized activation row of n elements
    float (*dot)(const void *w, const void *act, int64_t n);
};

// NULL when wtype has no quantized-activation path.
const struct kn_qtype *kn_qtype_for(int wtype);

#endif
