// kn_cpu.c — the CPU feature probe (kn_cpu.h): cpuid leaves 1, 7.0, 7.1 and the brand string,
// xgetbv for the register state the OS saves (AVX needs XCR0 bits 1-2, AVX-512 bits 5-7 too).
// libc and <cpuid.h> only.
#include "kn_cpu.h"

#include <cpuid.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

static unsigned long long kn_xcr0(void) {
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (unsigned long long)hi << 32 | lo;
}

static void kn_cpu_probe(struct kn_cpu *c) {
    unsigned a, b, cx, d;
    memset(c, 0, sizeof *c);
    if (!__get_cpuid(1, &a, &b, &cx, &d)) return;
    int osxsave = (cx & bit_OSXSAVE) != 0, avx = (cx & bit_AVX) != 0;
    int fma = (cx & bit_FMA) != 0, f16c = (cx & bit_F16C) != 0;
    unsigned long long xcr0 = osxsave ? kn_xcr0() : 0;
    int ymm_os = avx && (xcr0 & 0x6) == 0x6, zmm_os = ymm_os && (xcr0 & 0xe0) == 0xe0;
    unsigned max = __get_cpuid_max(0, NULL);
    unsigned b7 = 0, c7 = 0, a71 = 0;
    if (max >= 7) {
        __cpuid_count(7, 0, a, b7, c7, d);
        __cpuid_count(7, 1, a71, b, cx, d);
    }
    c->fma = ymm_os && fma;
    c->f16c = ymm_os && f16c;
    c->avx2 = ymm_os && (b7 & bit_AVX2) && fma && f16c;
    c->avx512 = c->avx2 && zmm_os && (b7 & bit_AVX512F) && (b7 & bit_AVX512BW) && (b7 & bit_AVX512VL) &&
                (b7 & bit_AVX512DQ);
    c->avx512_vnni = c->avx512 && (c7 & (1u << 11));
    c->avx512_bf16 = c->avx512 && (a71 & (1u << 5));
    c->avx_vnni = c->avx2 && (a71 & (1u << 4));
    if ((unsigned)__get_cpuid_max(0x80000000u, NULL) >= 0x80000004u) { // clang: int, gcc: unsigned
        unsigned r[12];
        for (unsigned i = 0; i < 3; i++) __get_cpuid(0x80000002u + i, &r[4 * i], &r[4 * i + 1], &r[4 * i + 2], &r[4 * i + 3]);
        memcpy(c->model, r, 48);
        c->model[48] = 0;
        // trim the padding spaces some CPUs put around the name
        char *s = c->model;
        while (*s == ' ') s++;
        memmove(c->model, s, strlen(s) + 1);
        for (size_t n = strlen(c->model); n > 0 && c->model[n - 1] == ' '; n--) c->model[n - 1] = 0;
    }
}

static struct kn_cpu kn_cpu_found;
static void kn_cpu_once(void) { kn_cpu_probe(&kn_cpu_found); }

const struct kn_cpu *kn_cpu(void) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, kn_cpu_once);
    return &kn_cpu_found;
}

int kn_cpu_has(const char *isa) {
    const struct kn_cpu *c = kn_cpu();
    if (strcmp(isa, "ref") == 0) return 1;
    if (strcmp(isa, "avx2") == 0) return c->avx2;
    if (strcmp(isa, "avx512") == 0) return c->avx512;
    return 0;
}

char *kn_cpu_flags(char *buf, unsigned size) {
    const struct kn_cpu *c = kn_cpu();
    snprintf(buf, size, "%s%s%s%s%s", c->avx2 ? "avx2 fma f16c" : "none", c->avx_vnni ? " avx_vnni" : "",
             c->avx512 ? " avx512f/bw/vl/dq" : "", c->avx512_vnni ? " avx512_vnni" : "",
             c->avx512_bf16 ? " avx512_bf16" : "");
    return buf;
}
