// fuzz_spec.c — fuzz target for the quantization spec grammar (quantizers/qz_spec.[ch]).
//
// The input, up to its first NUL byte, is a spec. qz_variant_parse and qz_base_parse must
// either refuse it with QP_EINVAL and a one-line message, or accept it; then the canonical
// string p = print(parse(x)) must parse again, print(parse(p)) must equal p, and the two
// parsed variants must hold the same fields (the round trip qz_spec.h promises). An accepted
// variant is also asked for the base of a few tensor names (running its regexes) and printed
// into too-small buffers, which must give QP_ERANGE and a NUL-terminated prefix.
//
// Depends on quantizers/qz_spec.h, kernels/qp.h and fuzz.h.
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "qp.h"
#include "qz_spec.h"

// Room for any canonical form of an accepted spec (at most QZ_SPEC_MAX bytes of input; the
// longest expansion per input byte is far below 16).
#define FQ_PRINT_CAP (16 * QZ_SPEC_MAX)

static bool fq_same_base(const struct qz_base *a, const struct qz_base *b) {
    return a->method == b->method && a->bits == b->bits && a->gran == b->gran &&
           a->group == b->group && a->sym == b->sym && a->clip_mse == b->clip_mse &&
           a->dq == b->dq && a->ggml_type == b->ggml_type && a->mix == b->mix &&
           a->actorder == b->actorder && a->static_groups == b->static_groups &&
           a->damp == b->damp && a->alpha == b->alpha && a->smooth == b->smooth && a->a8 == b->a8;
}

static void fq_check_refusal(int rc, const char *err) {
    FUZZ_CHECK(rc == QP_EINVAL || rc == QP_ENOMEM, "refused with code %d", rc);
    FUZZ_CHECK(err[0] != 0 && strchr(err, '\n') == NULL, "bad message '%s'", err);
}

// Printing into every buffer shorter than the canonical length n gives QP_ERANGE and the
// NUL-terminated prefix of canon; exactly n + 1 bytes give n.
static void fq_check_short_prints(const struct qz_variant *v, const char *canon, int n) {
    char small[40];
    size_t caps[] = {0, 1, 2, 7, sizeof small};
    for (size_t i = 0; i < QP_ARRAY_LEN(caps); i++) {
        size_t cap = caps[i];
        memset(small, 'x', sizeof small);
        int rc = qz_variant_print(v, small, cap);
        if ((size_t)n < cap) {
            FUZZ_CHECK(rc == n && strcmp(small, canon) == 0, "print into %zu bytes: %d", cap, rc);
        } else {
            FUZZ_CHECK(rc == QP_ERANGE, "print of %d bytes into %zu: %d", n, cap, rc);
            if (cap > 0)
                FUZZ_CHECK(small[cap - 1] == 0 && strncmp(small, canon, cap - 1) == 0,
                           "truncated print into %zu bytes is not a prefix", cap);
        }
        if (cap == 0) FUZZ_CHECK(small[0] == 'x', "print into 0 bytes wrote");
    }
}

static void fq_variant(const char *s) {
    struct qz_variant *v = NULL;
    char err[QP_ERRLEN] = "";
    int rc = qz_variant_parse(s, &v, err);
    if (rc != 0) {
        FUZZ_CHECK(v == NULL, "failed parse left a variant");
        fq_check_refusal(rc, err);
        return;
    }
    FUZZ_CHECK(v != NULL, "success without a variant");
    char *p1 = malloc(FQ_PRINT_CAP), *p2 = malloc(FQ_PRINT_CAP);
    FUZZ_CHECK(p1 && p2, "out of memory");
    int n1 = qz_variant_print(v, p1, FQ_PRINT_CAP);
    FUZZ_CHECK(n1 > 0 && (size_t)n1 == strlen(p1), "print of '%s' gave %d", s, n1);
    fq_check_short_prints(v, p1, n1);

    struct qz_variant *v2 = NULL;
    rc = qz_variant_parse(p1, &v2, err);
    FUZZ_CHECK(rc == 0, "canonical form '%s' of '%s' does not parse: %s", p1, s, err);
    int n2 = qz_variant_print(v2, p2, FQ_PRINT_CAP);
    FUZZ_CHECK(n2 == n1 && strcmp(p1, p2) == 0, "round trip: '%s' -> '%s' -> '%s'", s, p1, p2);
    FUZZ_CHECK(fq_same_base(&v->base, &v2->base) && v->keep == v2->keep && v->act == v2->act &&
               v->n_rules == v2->n_rules, "fields of '%s' and '%s' differ", s, p1);
    for (int i = 0; i < v->n_rules; i++)
        FUZZ_CHECK(strcmp(v->rules[i].src, v2->rules[i].src) == 0 &&
                   fq_same_base(&v->rules[i].base, &v2->rules[i].base),
                   "rule %d of '%s' and '%s' differ", i, s, p1);

    static const char *const names[] = {"token_embd.weight", "output.weight",
                                        "blk.0.attn_q.weight", "blk.17.ffn_down.weight",
                                        "output_norm.weight", "blk.x.attn_k.weight"};
    for (size_t i = 0; i < QP_ARRAY_LEN(names); i++) {
        int tc = qz_tensor_class_of(names[i]);
        FUZZ_CHECK(tc >= 0 && tc <= QZ_TC_OTHER, "class %d", tc);
        const struct qz_base *b = qz_variant_for_tensor(v, names[i], tc);
        FUZZ_CHECK(b != NULL, "no base for '%s'", names[i]);
        char buf[256];
        FUZZ_CHECK(qz_base_print(b, buf, sizeof buf) > 0, "base of '%s' does not print", names[i]);
    }
    free(p1);
    free(p2);
    qz_variant_destroy(v);
    qz_variant_destroy(v2);
}

static void fq_base(const char *s) {
    struct qz_base b, b2;
    char err[QP_ERRLEN] = "";
    int rc = qz_base_parse(s, &b, err);
    if (rc != 0) {
        fq_check_refusal(rc, err);
        return;
    }
    char p1[512], p2[512];
    int n1 = qz_base_print(&b, p1, sizeof p1);
    FUZZ_CHECK(n1 > 0, "base '%s' does not print: %d", s, n1);
    rc = qz_base_parse(p1, &b2, err);
    FUZZ_CHECK(rc == 0, "canonical base '%s' of '%s' does not parse: %s", p1, s, err);
    int n2 = qz_base_print(&b2, p2, sizeof p2);
    FUZZ_CHECK(n2 == n1 && strcmp(p1, p2) == 0 && fq_same_base(&b, &b2),
               "base round trip: '%s' -> '%s' -> '%s'", s, p1, p2);
}

int fuzz_spec(const uint8_t *data, size_t size) {
    char *s = malloc(size + 1);
    FUZZ_CHECK(s != NULL, "out of memory");
    memcpy(s, data, size);
    s[size] = 0;
    fq_variant(s);
    fq_base(s);
    free(s);
    return 0;
}

#ifdef QP_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_spec(data, size); }
#endif
