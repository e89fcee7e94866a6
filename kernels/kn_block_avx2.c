// kn_block_avx2.c — kn_attend_capped compiled with AVX2/FMA (kn_block.h): the same source as the
// baseline one (kn_block_attn.h), whose fmaf calls become FMA instructions here and whose key
// loops the compiler may vectorize; every output keeps its operation order, so the bits are the
// baseline's. Used only where the CPU has AVX2 and FMA (the avx2 and avx512 kernel tables).
// Depends on libc, kn_ops.h and kn_block.h.
#include <math.h>

#include "kn_block.h"
#include "kn_ops.h"

#define KN_ATTEND_CAPPED kn_attend_capped_avx2
#define KN_TREE16_NAME kn_tree16_capped_avx2
#include "kn_block_attn.h"
