// kn_dispatch.c — picks the kernel table: the reference, replaced by the best ISA the CPU and
// OS support (kn_cpu.h), or the one the program forced with kn_ops_force (the CLI passes
// QPROBE_ISA). libc only.
#include <string.h>

#include "kn_cpu.h"
#include "kn_ops.h"
#include "qp.h"

static const char *const kn_isas[] = {"ref", "avx2", "avx512"};
static const struct kn_ops *kn_forced; // NULL: the best this CPU runs

const struct kn_ops *kn_ops_for(const char *isa) {
    if (!kn_cpu_has(isa)) return NULL;
    if (strcmp(isa, "ref") == 0) return &kn_ops_ref;
    if (strcmp(isa, "avx2") == 0) return &kn_ops_avx2;
    if (strcmp(isa, "avx512") == 0) return &kn_ops_avx512;
    return NULL;
}

int kn_ops_force(const char *isa, char *err) {
    if (!isa || !*isa) {
        kn_forced = NULL;
        return 0;
    }
    int known = 0;
    for (size_t i = 0; i < QP_ARRAY_LEN(kn_isas); i++) known |= strcmp(isa, kn_isas[i]) == 0;
    if (!known) return qp_fail(err, QP_EINVAL, "'%s' is not one of ref, avx2, avx512", isa);
    const struct kn_ops *o = kn_ops_for(isa);
    if (!o) return qp_fail(err, QP_ENOTSUP, "'%s': this CPU does not support it", isa);
    kn_forced = o;
    return 0;
}

const struct kn_ops *kn_ops_best(void) {
    if (kn_forced) return kn_forced;
    const struct kn_ops *o = kn_ops_for("avx512");
    if (!o) o = kn_ops_for("avx2");
    if (!o) o = &kn_ops_ref;
    return o;
}
