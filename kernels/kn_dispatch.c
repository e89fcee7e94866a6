// kn_dispatch.c — picks the kernel table: the reference, replaced by the best ISA the CPU and
// OS support, or the one QPROBE_ISA names. libc and compiler builtins only.
#include <stdlib.h>
#include <string.h>

#include "kn_ops.h"
#include "qp.h"

static int kn_cpu_has(const char *isa) {
    __builtin_cpu_init();
    if (strcmp(isa, "ref") == 0) return 1;
    if (strcmp(isa, "avx2") == 0)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (strcmp(isa, "avx512") == 0)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("fma");
    return 0;
}

const struct kn_ops *kn_ops_for(const char *isa) {
    if (!kn_cpu_has(isa)) return NULL;
    if (strcmp(isa, "ref") == 0) return &kn_ops_ref;
    if (strcmp(isa, "avx2") == 0) return &kn_ops_avx2;
    if (strcmp(isa, "avx512") == 0) return &kn_ops_avx512;
    return NULL;
}

const struct kn_ops *kn_ops_best(char *err) {
    const char *forced = getenv("QPROBE_ISA");
    if (forced && *forced) {
        if (strcmp(forced, "ref") && strcmp(forced, "avx2") && strcmp(forced, "avx512")) {
            qp_fail(err, QP_EINVAL, "QPROBE_ISA='%s' is not one of ref, avx2, avx512", forced);
            return NULL;
        }
        const struct kn_ops *o = kn_ops_for(forced);
        if (!o) qp_fail(err, QP_ENOTSUP, "QPROBE_ISA='%s': this CPU does not support it", forced);
        return o;
    }
    const struct kn_ops *o = kn_ops_for("avx512");
    if (!o) o = kn_ops_for("avx2");
    if (!o) o = &kn_ops_ref;
    return o;
}
