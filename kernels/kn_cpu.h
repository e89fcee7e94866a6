// kn_cpu.h — what this CPU and its OS can run: the one place that asks cpuid (and xgetbv for
// the OS's register state), and the CPU's model name. Kernel tables, the act=q8 tables and the
// OpenBLAS core check all ask here. Depends on libc and compiler builtins only.
#ifndef KN_CPU_H
#define KN_CPU_H

struct kn_cpu {
    int avx2, fma, f16c;       // with the OS saving ymm state
    int avx512;                // AVX-512 F, BW, VL and DQ, with the OS saving zmm state
    int avx512_vnni;           // vpdpbusd on zmm (AVX512-VNNI), needs avx512
    int avx512_bf16;           // vdpbf16ps (AVX512-BF16), needs avx512
    int avx_vnni;              // vpdpbusd on ymm with a VEX encoding (AVX-VNNI), needs avx2
    char model[49];            // the brand string ("AMD EPYC ..."), "" when cpuid has none
};

// Probed once (thread-safe: every caller computes the same values); static storage.
const struct kn_cpu *kn_cpu(void);

// 1 if this CPU runs the kernel level isa: "ref" (always), "avx2" (AVX2, FMA, F16C),
// "avx512" (AVX-512 F/BW/VL/DQ plus AVX2, FMA, F16C); 0 for others and unknown names.
int kn_cpu_has(const char *isa);

// The feature flags as one line ("avx2 fma f16c avx512 avx512_vnni ..."), for logs and the store.
// buf of at least 128 bytes; returns buf.
char *kn_cpu_flags(char *buf, unsigned size);

#endif
