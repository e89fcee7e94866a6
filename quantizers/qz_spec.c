// qz_spec.c — parsing and canonical printing of quantization variant specs (see qz_spec.h for
// the grammar and the canonical form).
//
// Depends on kernels/ headers (qp.h, kn_types.h), libc and POSIX regex only; never on harness/.
#include "qz_spec.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "kn_types.h"
#include "qp.h"
#include "qz_qat.h"

// ---------------------------------------------------------------------------------------------
// Tables.

static const char *const tc_names[QZ_TC_COUNT] = {
    [QZ_TC_EMBED] = "embed",       [QZ_TC_OUTPUT] = "output",   [QZ_TC_ATTN_Q] = "attn_q",
    [QZ_TC_ATTN_K] = "attn_k",     [QZ_TC_ATTN_V] = "attn_v",   [QZ_TC_ATTN_OUTPUT] = "attn_output",
    [QZ_TC_FFN_GATE] = "ffn_gate", [QZ_TC_FFN_UP] = "ffn_up",   [QZ_TC_FFN_DOWN] = "ffn_down",
    [QZ_TC_NORM] = "norm",
};

// The llama.cpp types a spec may name, spelled as specs spell them (lowercase).
static const struct {
    const char *name;
    int type;
} ggml_names[] = {
    {"q8_0", KN_Q8_0}, {"q4_0", KN_Q4_0}, {"q4_1", KN_Q4_1}, {"q5_0", KN_Q5_0},
    {"q5_1", KN_Q5_1}, {"q2_k", KN_Q2_K}, {"q3_k", KN_Q3_K}, {"q4_k", KN_Q4_K},
    {"q5_k", KN_Q5_K}, {"q6_k", KN_Q6_K}, {"iq4_nl", KN_IQ4_NL},
};

static const struct {
    const char *name;
    enum qz_mix mix;
    int base_type;
} mix_names[] = {
    {"q3_k_m", QZ_MIX_Q3_K_M, KN_Q3_K},
    {"q4_k_m", QZ_MIX_Q4_K_M, KN_Q4_K},
    {"q5_k_m", QZ_MIX_Q5_K_M, KN_Q5_K},
};

#define GPTQ_DEFAULT_DAMP 0.01
#define SQ_DEFAULT_ALPHA 0.5
#define NFP4_DEFAULT_GROUP 64

// Kept short: the whole message must fit in QP_ERRLEN (prefix ≤ 56, reason < WHY_LEN, this).
static const char valid_forms[] =
    "valid forms: f32 | f16 | bf16 | rtn:bits=2..8:{tensor|channel|group=G}:{sym|asym}[:clip=mse]"
    " | {nf4|fp4}[:group=G][:dq] | q8_0|q{4,5}_{0,1}|q{2..6}_k|iq4_nl|q{3,4,5}_k_m"
    " | gptq:{bits=B:group=G[:asym]|TYPE}[:actorder][:static][:damp=X] | awq:bits=B:group=G[:asym]"
    " | {smoothquant[:alpha=X]|w8a8}[:act=token|tensor]; clauses ;keep=CLASS,.. ;act=f32|q8 ;imatrix"
    " ;name~REGEX=BASE";

// ---------------------------------------------------------------------------------------------
// Helpers: quoting for messages, a bounded string builder, number parsing and printing.

// Copies s into dst (dst_cap bytes) for quoting in a one-line message: control characters become
// '?', and text beyond max characters is cut and marked with "...".
static void quote(char *dst, size_t dst_cap, const char *s, size_t max) {
    size_t n = 0;
    for (; s[n] && n < max && n + 4 < dst_cap; n++) dst[n] = iscntrl((unsigned char)s[n]) ? '?' : s[n];
    if (s[n] && n + 4 <= dst_cap) memcpy(dst + n, "...", 3), n += 3;
    dst[n] = 0;
}

// The reason part of a message, with its NUL. The longest reason is keep='s (87 characters with a
// quote cut at 12); a rule's reason nests another and is cut at this length.
#define WHY_LEN 88
#define QUOTE_PART 28 // characters of a bad part quoted in the reason
#define QUOTE_SPEC 32 // characters of the spec quoted in the message

static int why(char *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int why(char *w, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w, WHY_LEN, fmt, ap);
    va_end(ap);
    return QP_EINVAL;
}

// A bounded builder: len counts every character asked for, so overflow is detected at the end.
struct sb {
    char *buf;
    size_t cap, len;
};

static void sb_add(struct sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_add(struct sb *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    size_t room = b->len < b->cap ? b->cap - b->len : 0;
    int n = vsnprintf(room ? b->buf + b->len : NULL, room, fmt, ap);
    va_end(ap);
    if (n > 0) b->len += (size_t)n;
}

static int sb_finish(struct sb *b) {
    if (b->cap > 0 && b->len >= b->cap) b->buf[b->cap - 1] = 0;
    if (b->len >= b->cap || b->len > (size_t)INT32_MAX) return QP_ERANGE;
    return (int)b->len;
}

// Shortest %g form that reads back as the same double (so that print(parse(s)) is canonical).
static void fmt_real(char *out, size_t cap, double x) {
    for (int p = 1; p <= 17; p++) {
        snprintf(out, cap, "%.*g", p, x);
        if (strtod(out, NULL) == x) return;
    }
}

// A decimal integer: digits only, at most 10 of them.
static int parse_int(const char *s, int64_t *out) {
    size_t n = strlen(s);
    if (n == 0 || n > 10) return -1;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i])) return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

// A plain decimal real (digits, '.', exponent); no sign, no hex, inf or nan.
static int parse_real(const char *s, double *out) {
    if (!*s || !(isdigit((unsigned char)s[0]) || s[0] == '.')) return -1;
    for (const char *p = s; *p; p++)
        if (!isdigit((unsigned char)*p) && !strchr(".eE+-", *p)) return -1;
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (*end || errno || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

static int ggml_lookup(const char *s) {
    for (size_t i = 0; i < QP_ARRAY_LEN(ggml_names); i++)
        if (strcasecmp(s, ggml_names[i].name) == 0) return ggml_names[i].type;
    return -1;
}

static const char *ggml_name(int type) {
    for (size_t i = 0; i < QP_ARRAY_LEN(ggml_names); i++)
        if (ggml_names[i].type == type) return ggml_names[i].name;
    return NULL;
}

// ---------------------------------------------------------------------------------------------
// BASE parsing. The text is split on ':' into the method and its options; each option is
// recognised on its own (any order), then the method checks which it allows and requires.

enum opt {
    OPT_BITS, OPT_TENSOR, OPT_CHANNEL, OPT_GROUP, OPT_SYM, OPT_ASYM, OPT_CLIP, OPT_DQ,
    OPT_ACTORDER, OPT_STATIC, OPT_DAMP, OPT_ALPHA, OPT_ACT, OPT_TYPE, OPT_COUNT
};

#define BIT(o) (1u << (o))
#define MAX_OPTS 16

struct opts {
    unsigned seen;
    const char *text[OPT_COUNT]; // each option as written, for messages
    int64_t bits, group;
    double damp, alpha;
    enum qz_a8 a8;
    int type;
};

// The option keys, as written.
static const char *const opt_keys[OPT_COUNT] = {
    [OPT_BITS] = "bits",         [OPT_TENSOR] = "tensor", [OPT_CHANNEL] = "channel", [OPT_GROUP] = "group",
    [OPT_SYM] = "sym",           [OPT_ASYM] = "asym",     [OPT_CLIP] = "clip",       [OPT_DQ] = "dq",
    [OPT_ACTORDER] = "actorder", [OPT_STATIC] = "static", [OPT_DAMP] = "damp",       [OPT_ALPHA] = "alpha",
    [OPT_ACT] = "act",
};
#define OPT_VALUED (BIT(OPT_BITS) | BIT(OPT_GROUP) | BIT(OPT_CLIP) | BIT(OPT_DAMP) | BIT(OPT_ALPHA) | BIT(OPT_ACT))

// The value of option k (checked against its range) into o. 0 or QP_EINVAL with the reason in w.
static int parse_opt_value(enum opt k, const char *val, const char *q, struct opts *o, char *w) {
    switch (k) {
    case OPT_BITS:
        if (parse_int(val, &o->bits) || o->bits < 2 || o->bits > 8) return why(w, "'%s': bits must be 2..8", q);
        return 0;
    case OPT_GROUP:
        if (parse_int(val, &o->group) || o->group < 1 || o->group > QZ_MAX_GROUP)
            return why(w, "'%s': group must be an integer 1..%d", q, QZ_MAX_GROUP);
        return 0;
    case OPT_CLIP: return strcmp(val, "mse") == 0 ? 0 : why(w, "'%s': clip must be mse", q);
    case OPT_DAMP:
        if (parse_real(val, &o->damp) || !(o->damp > 0 && o->damp <= 1))
            return why(w, "'%s': damp must be a number in (0, 1]", q);
        return 0;
    case OPT_ALPHA:
        if (parse_real(val, &o->alpha) || !(o->alpha >= 0 && o->alpha <= 1))
            return why(w, "'%s': alpha must be a number in [0, 1]", q);
        return 0;
    case OPT_ACT:
        if (strcmp(val, "token") == 0) o->a8 = QZ_A8_TOKEN;
        else if (strcmp(val, "tensor") == 0) o->a8 = QZ_A8_TENSOR;
        else return why(w, "'%s': act must be token or tensor", q);
        return 0;
    default: return 0;
    }
}

// Parses one option token into o; takes_type: a bare llama.cpp type name is an option (gptq:TYPE).
// 0 or QP_EINVAL with the reason in w.
static int parse_opt(const char *method, bool takes_type, const char *t, struct opts *o, char *w) {
    char q[QUOTE_PART + 8];
    quote(q, sizeof q, t, QUOTE_PART);
    if (!*t) return why(w, "empty option after '%s'", method);
    const char *eq = strchr(t, '=');
    size_t klen = eq ? (size_t)(eq - t) : strlen(t);
    const char *val = eq ? eq + 1 : NULL;
    int k = OPT_COUNT;
    for (int i = 0; i < OPT_TYPE && k == OPT_COUNT; i++)
        if (klen == strlen(opt_keys[i]) && strncmp(t, opt_keys[i], klen) == 0) k = i;
    if (k == OPT_COUNT && !eq && takes_type && ggml_lookup(t) >= 0) k = OPT_TYPE;
    if (k == OPT_COUNT) return why(w, "unknown option '%s' of %s", q, method);
    if (o->seen & BIT(k)) return why(w, "option '%s' given twice", q);
    bool wants_value = (OPT_VALUED & BIT(k)) != 0;
    if (wants_value && !val) return why(w, "option '%s' needs a value ('%s=...')", q, q);
    if (!wants_value && val) return why(w, "option '%s' takes no value", q);
    if (k == OPT_TYPE) o->type = ggml_lookup(t);
    else if (wants_value) {
        int rc = parse_opt_value((enum opt)k, val, q, o, w);
        if (rc) return rc;
    }
    o->seen |= BIT(k);
    o->text[k] = t;
    return 0;
}

// Fails when an option outside `allowed` was given.
static int check_allowed(const char *method, const struct opts *o, unsigned allowed, char *w) {
    for (int k = 0; k < OPT_COUNT; k++)
        if ((o->seen & BIT(k)) && !(allowed & BIT(k))) {
            char q[QUOTE_PART + 8];
            quote(q, sizeof q, o->text[k], QUOTE_PART);
            return why(w, "'%s' is not an option of %s", q, method);
        }
    return 0;
}

// Exactly one of the options in `set` given: 0, else the reason in w.
static int check_one_of(const struct opts *o, unsigned set, const char *none, const char *many, char *w) {
    unsigned got = o->seen & set;
    if (!got) return why(w, "%s", none);
    if (got & (got - 1)) return why(w, "%s", many);
    return 0;
}

// ---------------------------------------------------------------------------------------------
// The method table: each method's name, the options it allows, and what it makes of them (its
// requirements checked, its fields set on a base that qz_base_init prepared).

struct method_desc {
    const char *name;
    enum qz_method method;
    unsigned allowed; // BIT(OPT_*)
    int (*finish)(const struct method_desc *m, const struct opts *o, struct qz_base *b, char *w);
    bool smooth;      // SMOOTHQUANT: smoothquant (true) or w8a8
};

#define GRAN_OPTS (BIT(OPT_TENSOR) | BIT(OPT_CHANNEL) | BIT(OPT_GROUP))
#define GPTQ_FLAGS (BIT(OPT_ACTORDER) | BIT(OPT_STATIC) | BIT(OPT_DAMP))

static int finish_plain(const struct method_desc *m, const struct opts *o, struct qz_base *b, char *w) {
    (void)m, (void)o, (void)b, (void)w;
    return 0;
}

static int finish_rtn(const struct method_desc *m, const struct opts *o, struct qz_base *b, char *w) {
    (void)m;
    int rc = 0;
    if (!(o->seen & BIT(OPT_BITS))) return why(w, "rtn needs bits=B");
    if ((rc = check_one_of(o, GRAN_OPTS, "rtn needs a granularity: tensor, channel or group=G",
                           "rtn takes one granularity: tensor, channel or group=G", w)))
        return rc;
    if ((rc = check_one_of(o, BIT(OPT_SYM) | BIT(OPT_ASYM), "rtn needs sym or asym", "rtn takes one of sym or asym", w)))
        return rc;
    unsigned gs = o->seen & GRAN_OPTS;
    b->bits = (int)o->bits;
    b->gran = gs == BIT(OPT_TENSOR) ? QZ_TENSOR : gs == BIT(OPT_CHANNEL) ? QZ_CHANNEL : QZ_GROUP;
    b->group = b->gran == QZ_GROUP ? o->group : 0;
    b->sym = o->seen & BIT(OPT_SYM);
    b->clip_mse = o->seen & BIT(OPT_CLIP);
    return 0;
}

static int finish_nfp4(const struct method_desc *m, const struct opts *o, struct qz_base *b, char *w) {
    (void)m, (void)w;
    if (o->seen & BIT(OPT_GROUP)) b->group = o->group;
    b->dq = o->seen & BIT(OPT_DQ);
    return 0;
}

// gptq and awq on an integer grid: bits=B:group=G, symmetric unless :asym.
static int finish_grid(const struct method_desc *m, const struct opts *o, struct qz_base *b, char *w) {
    if ((o->seen & (BIT(OPT_BITS) | BIT(OPT_GROUP))) != (BIT(OPT_BITS) | BIT(OPT_GROUP)))
        return m->method == QZ_GPTQ ? why(w, "gptq needs bits=B:group=G or a llama.cpp type (gptq:q4_k)")
                                    : why(w, "%s needs bits=B:group=G", m->name);
    b->bits = (int)o->bits;
    b->group = o->group;
    b->sym = !(o->seen & BIT(OPT_ASYM));
    return 0;
}

static int finish_gptq(const struct method_desc *m, const struct opts *o, struct qz_base *b, char *w) {
    int rc;
    if (o->seen & BIT(OPT_TYPE)) { // gptq:TYPE: the llama.cpp type's own grid
        if ((rc = check_allowed("gptq:TYPE", o, BIT(OPT_TYPE) | GPTQ_FLAGS, w))) return rc;
        b->ggml_type = o->type;
        b->gran = QZ_TENSOR;
        b->sym = false;
    } else {
        if ((rc = check_allowed(m->name, o, BIT(OPT_BITS) | BIT(OPT_GROUP) | BIT(OPT_ASYM) | GPTQ_FLAGS, w)))
            return rc;
        if ((rc = finish_grid(m, o, b, w))) return rc;
    }
    b->actorder = o->seen & BIT(OPT_ACTORDER);
    b->static_groups = o->seen & BIT(OPT_STATIC);
    b->damp = o->damp;
    return 0;
}

static int finish_w8a8(const struct method_desc *m, const struct opts *o, struct qz_base *b, char *w) {
    (void)w;
    b->smooth = m->smooth;
    b->alpha = m->smooth ? o->alpha : 0;
    b->a8 = o->a8;
    return 0;
}

static const struct method_desc methods[] = {
    {"f32", QZ_F32, 0, finish_plain, false},
    {"f16", QZ_F16, 0, finish_plain, false},
    {"bf16", QZ_BF16, 0, finish_plain, false},
    {"rtn", QZ_RTN, BIT(OPT_BITS) | GRAN_OPTS | BIT(OPT_SYM) | BIT(OPT_ASYM) | BIT(OPT_CLIP), finish_rtn, false},
    {"nf4", QZ_NF4, BIT(OPT_GROUP) | BIT(OPT_DQ), finish_nfp4, false},
    {"fp4", QZ_FP4, BIT(OPT_GROUP) | BIT(OPT_DQ), finish_nfp4, false},
    {"gptq", QZ_GPTQ, BIT(OPT_TYPE) | BIT(OPT_BITS) | BIT(OPT_GROUP) | BIT(OPT_ASYM) | GPTQ_FLAGS, finish_gptq, false},
    {"awq", QZ_AWQ, BIT(OPT_BITS) | BIT(OPT_GROUP) | BIT(OPT_ASYM), finish_grid, false},
    {"smoothquant", QZ_SMOOTHQUANT, BIT(OPT_ALPHA) | BIT(OPT_ACT), finish_w8a8, true},
    {"w8a8", QZ_SMOOTHQUANT, BIT(OPT_ACT), finish_w8a8, false},
};

void qz_base_init(struct qz_base *b, enum qz_method m) {
    memset(b, 0, sizeof *b);
    b->method = m;
    b->ggml_type = -1;
    b->gran = QZ_TENSOR;
    switch (m) {
    case QZ_F32: b->bits = 32; break;
    case QZ_F16:
    case QZ_BF16: b->bits = 16; break;
    case QZ_NF4:
    case QZ_FP4:
        b->bits = 4;
        b->gran = QZ_GROUP;
        b->group = NFP4_DEFAULT_GROUP;
        b->sym = true;
        break;
    case QZ_GPTQ:
        b->gran = QZ_GROUP;
        b->sym = true;
        b->damp = GPTQ_DEFAULT_DAMP;
        break;
    case QZ_AWQ:
        b->gran = QZ_GROUP;
        b->sym = true;
        break;
    case QZ_SMOOTHQUANT:
        b->bits = 8;
        b->sym = true;
        b->smooth = true;
        b->alpha = SQ_DEFAULT_ALPHA;
        break;
    default: break;
    }
}

const char *qz_method_name(enum qz_method m) {
    if (m == QZ_GGML) return "ggml";
    if (m == QZ_GGML_MIX) return "mix";
    for (size_t i = 0; i < QP_ARRAY_LEN(methods); i++)
        if (methods[i].method == m) return methods[i].name;
    return NULL;
}

// Splits s on ':' in place into tok[0..*nt): the method and its options.
static int split_opts(char *s, char **tok, int *nt, char *w) {
    *nt = 0;
    for (char *p = s;;) {
        if (*nt == MAX_OPTS + 1) return why(w, "too many ':' options (at most %d)", MAX_OPTS);
        tok[(*nt)++] = p;
        char *c = strchr(p, ':');
        if (!c) return 0;
        *c = 0;
        p = c + 1;
    }
}

// A llama.cpp type or mix named m (no options allowed): 1 when it is one (b set or the reason in
// *rc), 0 when m names neither.
static int parse_ggml_name(const char *m, int nt, bool in_rule, struct qz_base *b, int *rc, char *w) {
    int type = ggml_lookup(m);
    if (type >= 0) {
        *rc = nt > 1 ? why(w, "%s takes no options", ggml_name(type)) : 0;
        b->method = QZ_GGML;
        b->ggml_type = type;
        return 1;
    }
    for (size_t i = 0; i < QP_ARRAY_LEN(mix_names); i++)
        if (strcasecmp(m, mix_names[i].name) == 0) {
            if (nt > 1) *rc = why(w, "%s takes no options", mix_names[i].name);
            else if (in_rule) *rc = why(w, "'%s' is a whole-model mix; a name~ rule needs one type", mix_names[i].name);
            else *rc = 0;
            b->method = QZ_GGML_MIX;
            b->mix = mix_names[i].mix;
            b->ggml_type = mix_names[i].base_type;
            return 1;
        }
    return 0;
}

// Parses a BASE held in s (modified: split in place). in_rule forbids mixes.
static int parse_base(char *s, bool in_rule, struct qz_base *b, char *w) {
    qz_base_init(b, QZ_F32);
    b->bits = 0;
    char *tok[MAX_OPTS + 1];
    int nt, rc = split_opts(s, tok, &nt, w);
    if (rc) return rc;
    const char *m = tok[0];
    if (!*m) return why(w, "missing method");
    if (parse_ggml_name(m, nt, in_rule, b, &rc, w)) return rc;
    if (strcmp(m, "qat") == 0) return qz_qat_parse(tok + 1, nt - 1, in_rule, b, w, WHY_LEN); // qz_qat.c
    const struct method_desc *md = NULL;
    for (size_t i = 0; i < QP_ARRAY_LEN(methods) && !md; i++)
        if (strcmp(m, methods[i].name) == 0) md = &methods[i];
    if (!md) {
        char qm[QUOTE_PART + 8];
        quote(qm, sizeof qm, m, QUOTE_PART);
        return why(w, "unknown method '%s'", qm);
    }
    if (!md->allowed && nt > 1) return why(w, "%s takes no options", m);
    struct opts o = {.damp = GPTQ_DEFAULT_DAMP, .alpha = SQ_DEFAULT_ALPHA, .type = -1};
    for (int i = 1; i < nt; i++)
        if ((rc = parse_opt(md->name, (md->allowed & BIT(OPT_TYPE)) != 0, tok[i], &o, w))) return rc;
    if (md->method != QZ_GPTQ && (rc = check_allowed(md->name, &o, md->allowed, w))) return rc;
    qz_base_init(b, md->method);
    return md->finish(md, &o, b, w);
}

// The full one-line message for a failed parse of spec; it always fits in QP_ERRLEN.
_Static_assert(sizeof "bad spec '': ; " - 1 + QUOTE_SPEC + 3 + WHY_LEN - 1 + sizeof valid_forms <= QP_ERRLEN,
               "a spec error message may not fit in QP_ERRLEN");
static int spec_fail(char *err, const char *spec, const char *w) {
    char q[QUOTE_SPEC + 8];
    quote(q, sizeof q, spec, QUOTE_SPEC);
    return qp_fail(err, QP_EINVAL, "bad spec '%s': %s; %s", q, w, valid_forms);
}

int qz_base_parse(const char *s, struct qz_base *out, char *err) {
    char w[WHY_LEN] = "";
    size_t n = strlen(s);
    if (n > QZ_SPEC_MAX) {
        why(w, "longer than %d bytes", QZ_SPEC_MAX);
        return spec_fail(err, s, w);
    }
    char *copy = malloc(n + 1);
    if (!copy) return qp_fail(err, QP_ENOMEM, "out of memory parsing a spec");
    memcpy(copy, s, n + 1);
    struct qz_base b;
    int rc = strchr(s, ';') ? why(w, "a base has no ';' clauses") : parse_base(copy, false, &b, w);
    free(copy);
    if (rc) return spec_fail(err, s, w);
    *out = b;
    return 0;
}

// ---------------------------------------------------------------------------------------------
// VARIANT parsing.

// name~ regexes go to glibc's regcomp/regexec, which must not be handed patterns that make them
// run for seconds or crash. Refused here:
//   - back-references "\1".."\9" (undefined in POSIX EREs; glibc's matcher recurses without
//     bound on some, e.g. "(|)(\1\1)*" overflows the stack);
//   - repetition operators in a row ("a+*", "a{2}+"; undefined in POSIX EREs);
//   - more than RE_MAX_NESTED copying repetitions ('+', {n,m} with a bound above 1) nested in
//     one another, and more than RE_MAX_COPIES nodes made by copying in all: glibc copies the
//     operand of these, and the epsilon closures of copies (of copies) of expressions that
//     match the empty string grow exponentially ("((((((((((a*)+)+)+)+)+)+)+)+)+)+" takes
//     seconds, two more levels a minute; "((a*)+){300}" over a second). Sizes are estimated:
//     each character, bracket expression or escape counts 1, a group its contents plus 1,
//     alternatives add, '*' and '?' add 1; '+' copies its operand once, {n,m} max(n, m) times.
// Real rules ("blk\.[0-9]+\.ffn_down", "blk\.(1[0-9]|2[0-3])\.attn_v") are far from these.
#define RE_MAX_COPIES 256
#define RE_MAX_NESTED 2
#define RE_MAX_DEPTH 64 // nested groups

// The end of the bracket expression that starts at re[i] == '[' (index of its ']'), or -1 when
// it is not terminated (regcomp then reports it).
static long bracket_end(const char *re, long i) {
    long j = i + 1;
    if (re[j] == '^') j++;
    if (re[j] == ']') j++; // a leading ']' is literal
    for (; re[j]; j++) {
        if (re[j] == ']') return j;
        if (re[j] == '[' && (re[j + 1] == ':' || re[j + 1] == '=' || re[j + 1] == '.')) {
            char close = re[j + 1];
            const char *e = re + j + 2;
            while (*e && !(e[0] == close && e[1] == ']')) e++;
            if (!*e) return -1;
            j = (long)(e - re) + 1; // at the construct's ']'
        }
    }
    return -1;
}

// A decimal count at re[*j] (advanced past it), clamped so that products cannot overflow.
static uint64_t interval_count(const char *re, long *j) {
    uint64_t n = 0;
    for (; isdigit((unsigned char)re[*j]); (*j)++)
        n = QP_MIN(n * 10 + (uint64_t)(re[*j] - '0'), 1u << 20);
    return n;
}

// The bookkeeping of check_regex's one pass, per open group (index = depth): size of the
// alternatives so far and of the current branch; the size and the copying-repetition nesting of
// the last atom; the deepest nesting inside the group.
struct re_scan {
    uint64_t alts[RE_MAX_DEPTH + 1], cur[RE_MAX_DEPTH + 1], last[RE_MAX_DEPTH + 1];
    int nest[RE_MAX_DEPTH + 1], group_nest[RE_MAX_DEPTH + 1];
    uint64_t copies; // nodes made by copying, in the whole regex
    int d;           // the depth: open groups
    int after_rep;   // the previous token was a repetition operator
};

// An atom of one node (a character, an escape, a bracket expression) ends the current branch.
static void re_atom(struct re_scan *r) {
    r->last[r->d] = 1, r->nest[r->d] = 0;
    r->cur[r->d] += 1;
}

// The repetition at re[i] ('*', '?', '+' or an interval): 1 adds one node, > 1 copies the last
// atom that many times, 0 when re[i] is none (then re[i] is an atom or a group token). *i moves
// to an interval's '}'; a '{' that is no interval counts as an atom (*atom = 1).
static uint64_t re_repetition(const char *re, long *i, int *atom) {
    char c = re[*i];
    *atom = 0;
    if (c == '*' || c == '?') return 1;
    if (c == '+') return 2;
    if (c != '{' || !(isdigit((unsigned char)re[*i + 1]) || re[*i + 1] == ',')) return 0;
    // {n}, {n,}, {n,m} or glibc's {,m} (n = 0); anything else is left to regcomp.
    long j = *i + 1;
    uint64_t n = interval_count(re, &j), m = n;
    if (re[j] == ',') {
        j++;
        // {n,} is n copies and a star
        m = isdigit((unsigned char)re[j]) ? interval_count(re, &j) : n + 1;
    }
    if (re[j] != '}') {
        *atom = 1;
        return 0;
    }
    *i = j;
    uint64_t top = QP_MAX(n, m);
    return top <= 1 ? 1 : top + 1; // {0}, {1}, {0,1}, {1,1}: no copies
}

// Applies a repetition (mult from re_repetition) to the last atom. 0, or the rule it breaks.
static int re_repeat(struct re_scan *r, uint64_t mult, const char *q, char *w) {
    int d = r->d;
    if (r->after_rep) return why(w, "regex '%s' has repetition operators in a row", q);
    r->after_rep = 1;
    if (mult == 1) {
        r->cur[d] += 1;
        return 0;
    }
    // The operand is copied: the branch grows by (mult - 1) times it. last[d] <= RE_MAX_COPIES +
    // (regex length) and mult <= 2^20 + 1: no overflow.
    r->copies += r->last[d] * (mult - 1);
    if (r->copies > RE_MAX_COPIES)
        return why(w, "regex '%s' repeats too much (over %d copied nodes)", q, RE_MAX_COPIES);
    r->cur[d] += r->last[d] * (mult - 1);
    r->last[d] *= mult;
    if (++r->nest[d] > RE_MAX_NESTED) return why(w, "regex '%s' nests more than %d repetitions", q, RE_MAX_NESTED);
    return 0;
}

// The token at re[*i] that is not a repetition: an escape, a bracket expression, a group's
// start or end, an alternation, or a plain character. 0, 1 to stop the scan (an unterminated
// bracket, left to regcomp), or the rule it breaks.
static int re_token(struct re_scan *r, const char *re, long *i, const char *q, char *w) {
    char c = re[*i];
    int d = r->d;
    if (c == '\\') {
        if (re[*i + 1] >= '1' && re[*i + 1] <= '9')
            return why(w, "regex '%s' has a back-reference (\\%c)", q, re[*i + 1]);
        if (re[*i + 1]) (*i)++;
        re_atom(r);
    } else if (c == '[') {
        long e = bracket_end(re, *i);
        if (e < 0) return 1; // unterminated: regcomp refuses it
        *i = e;
        re_atom(r);
    } else if (c == '(') {
        if (d == RE_MAX_DEPTH) return why(w, "regex '%s' nests groups deeper than %d", q, RE_MAX_DEPTH);
        d = ++r->d;
        r->alts[d] = r->cur[d] = r->last[d] = 0;
        r->nest[d] = r->group_nest[d] = 0;
    } else if (c == ')' && d > 0) {
        uint64_t g = r->alts[d] + r->cur[d] + 1;
        int gn = r->group_nest[d];
        d = --r->d;
        r->last[d] = g, r->nest[d] = gn;
        r->cur[d] += g;
    } else if (c == '|') {
        r->alts[d] += r->cur[d];
        r->cur[d] = r->last[d] = 0;
        r->nest[d] = 0;
    } else {
        re_atom(r);
    }
    return 0;
}

// One pass over the regex, token by token, sizing each branch as regcomp would build it.
static int check_regex(const char *re, char *w) {
    char q[QUOTE_PART + 8];
    quote(q, sizeof q, re, QUOTE_PART);
    struct re_scan r;
    memset(&r, 0, sizeof r);
    for (long i = 0; re[i]; i++) {
        int atom, rc;
        uint64_t mult = re_repetition(re, &i, &atom);
        if (atom) re_atom(&r);
        if (mult) {
            if ((rc = re_repeat(&r, mult, q, w))) return rc;
        } else {
            r.after_rep = 0;
            if (!atom && (rc = re_token(&r, re, &i, q, w))) return rc > 0 ? 0 : rc;
        }
        r.group_nest[r.d] = QP_MAX(r.group_nest[r.d], r.nest[r.d]);
    }
    return 0;
}

static size_t variant_print_len(const struct qz_variant *v);

// Whether any base of v (the variant's or a rule's) is a llama.cpp type or mix (what ;imatrix
// applies to).
static bool has_ggml_type(const struct qz_variant *v) {
    bool any = v->base.method == QZ_GGML || v->base.method == QZ_GGML_MIX;
    for (int i = 0; i < v->n_rules; i++) any |= v->rules[i].base.method == QZ_GGML;
    return any;
}

static int parse_keep(char *list, unsigned *keep, char *w) {
    if (!*list) return why(w, "keep= needs class names");
    for (char *p = list;;) {
        char *c = strchr(p, ',');
        if (c) *c = 0;
        int k = -1;
        for (int i = 0; i < QZ_TC_COUNT; i++)
            if (strcmp(p, tc_names[i]) == 0) k = i;
        if (k < 0) {
            char q[24];
            quote(q, sizeof q, p, 12);
            return why(w, "keep: '%s' is not embed|output|attn_{q,k,v,output}|ffn_{gate,up,down}|norm", q);
        }
        *keep |= 1u << k;
        if (!c) return 0;
        p = c + 1;
    }
}

// A name~REGEX=BASE clause (cl points after "name~", modified in place) into v's next rule. 0,
// QP_EINVAL with the reason in w (q: the clause quoted), or QP_ENOMEM.
static int parse_rule(char *re, const char *q, struct qz_variant *v, char *w) {
    char *eq = strchr(re, '=');
    if (!eq) return why(w, "rule '%s' needs '=BASE' after the regex", q);
    *eq = 0;
    if (!*re) return why(w, "rule '%s' has an empty regex", q);
    struct qz_rule *r = &v->rules[v->n_rules];
    int rc = parse_base(eq + 1, true, &r->base, w);
    if (rc) {
        char inner[WHY_LEN];
        memcpy(inner, w, WHY_LEN);
        return why(w, "rule '%s': %s", q, inner);
    }
    if ((rc = check_regex(re, w))) return rc;
    int rrc = regcomp(&r->re, re, REG_EXTENDED | REG_NOSUB);
    if (rrc) {
        char msg[64], qr[QUOTE_PART + 8];
        regerror(rrc, &r->re, msg, sizeof msg);
        quote(qr, sizeof qr, re, QUOTE_PART);
        return why(w, "bad regex '%s' in name~: %s", qr, msg);
    }
    r->src = strdup(re);
    v->n_rules++; // counted even without src, so that destroy frees the compiled regex
    return r->src ? 0 : QP_ENOMEM;
}

// One ';' clause (modified in place) into v. 0, QP_EINVAL with the reason in w, or QP_ENOMEM.
static int parse_clause(char *cl, struct qz_variant *v, bool *act_seen, char *w) {
    char q[QUOTE_PART + 8];
    quote(q, sizeof q, cl, QUOTE_PART);
    if (!*cl) return why(w, "empty clause (stray ';')");
    if (strncmp(cl, "keep=", 5) == 0) return parse_keep(cl + 5, &v->keep, w);
    if (strncmp(cl, "act=", 4) == 0) {
        if (*act_seen) return why(w, "act= given twice");
        *act_seen = true;
        if (strcmp(cl + 4, "f32") == 0) v->act = QZ_ACT_F32;
        else if (strcmp(cl + 4, "q8") == 0) v->act = QZ_ACT_Q8;
        else return why(w, "'%s': act must be f32 or q8", q);
        return 0;
    }
    if (strcmp(cl, "imatrix") == 0) {
        if (v->imatrix) return why(w, "imatrix given twice");
        v->imatrix = true;
        return 0;
    }
    if (strncmp(cl, "name~", 5) == 0) return parse_rule(cl + 5, q, v, w);
    return why(w, "unknown clause '%s' (keep=, act=, imatrix, name~)", q);
}

// A new variant with room for one rule per ';' of s; NULL when out of memory.
static struct qz_variant *variant_alloc(const char *s) {
    struct qz_variant *v = calloc(1, sizeof *v);
    int n_clauses = 0;
    for (const char *c = s; *c; c++) n_clauses += *c == ';';
    if (v && n_clauses && !(v->rules = calloc((size_t)n_clauses, sizeof *v->rules))) {
        free(v);
        return NULL;
    }
    return v;
}

int qz_variant_parse(const char *s, struct qz_variant **out, char *err) {
    *out = NULL;
    char w[WHY_LEN] = "";
    size_t n = strlen(s);
    if (n == 0) return spec_fail(err, s, "empty spec");
    if (n > QZ_SPEC_MAX) {
        why(w, "longer than %d bytes", QZ_SPEC_MAX);
        return spec_fail(err, s, w);
    }
    char *copy = malloc(n + 1);
    struct qz_variant *v = variant_alloc(s);
    if (!copy || !v) {
        free(copy), qz_variant_destroy(v);
        return qp_fail(err, QP_ENOMEM, "out of memory parsing a spec");
    }
    memcpy(copy, s, n + 1);
    bool act_seen = false;
    char *next = strchr(copy, ';');
    if (next) *next++ = 0;
    int rc = parse_base(copy, false, &v->base, w);
    while (!rc && next) {
        char *cl = next;
        if ((next = strchr(cl, ';'))) *next++ = 0;
        rc = parse_clause(cl, v, &act_seen, w);
    }
    free(copy);
    if (rc == QP_ENOMEM) {
        qz_variant_destroy(v);
        return qp_fail(err, QP_ENOMEM, "out of memory parsing a spec");
    }
    if (!rc && v->imatrix && !has_ggml_type(v))
        rc = why(w, "imatrix needs a llama.cpp type (q4_k, q4_k_m, ...) in the base or a rule");
    // The canonical form must be a spec this parser accepts too (parse -> print -> parse):
    // what printing adds (nf4's group, smoothquant's alpha) can make it longer than the input.
    if (!rc && variant_print_len(v) > QZ_SPEC_MAX) rc = why(w, "canonical form longer than %d bytes", QZ_SPEC_MAX);
    if (rc) {
        qz_variant_destroy(v);
        return spec_fail(err, s, w);
    }
    *out = v;
    return 0;
}

void qz_variant_destroy(struct qz_variant *v) {
    if (!v) return;
    for (int i = 0; i < v->n_rules; i++) {
        regfree(&v->rules[i].re);
        free(v->rules[i].src);
    }
    free(v->rules);
    free(v);
}

// ---------------------------------------------------------------------------------------------
// Printing.

static void print_base(struct sb *o, const struct qz_base *b) {
    char num[40];
    switch (b->method) {
    case QZ_F32: sb_add(o, "f32"); break;
    case QZ_F16: sb_add(o, "f16"); break;
    case QZ_BF16: sb_add(o, "bf16"); break;
    case QZ_RTN:
        sb_add(o, "rtn:bits=%d:", b->bits);
        if (b->gran == QZ_TENSOR) sb_add(o, "tensor");
        else if (b->gran == QZ_CHANNEL) sb_add(o, "channel");
        else sb_add(o, "group=%lld", (long long)b->group);
        sb_add(o, ":%s%s", b->sym ? "sym" : "asym", b->clip_mse ? ":clip=mse" : "");
        break;
    case QZ_NF4:
    case QZ_FP4:
        sb_add(o, "%s:group=%lld%s", b->method == QZ_NF4 ? "nf4" : "fp4", (long long)b->group,
               b->dq ? ":dq" : "");
        break;
    case QZ_GGML: {
        const char *n = ggml_name(b->ggml_type);
        QP_ASSERT(n);
        sb_add(o, "%s", n);
        break;
    }
    case QZ_GGML_MIX: {
        const char *n = NULL;
        for (size_t i = 0; i < QP_ARRAY_LEN(mix_names); i++)
            if (mix_names[i].mix == b->mix) n = mix_names[i].name;
        QP_ASSERT(n);
        sb_add(o, "%s", n);
        break;
    }
    case QZ_GPTQ:
        if (b->ggml_type >= 0) {
            const char *n = ggml_name(b->ggml_type);
            QP_ASSERT(n);
            sb_add(o, "gptq:%s", n);
        } else {
            sb_add(o, "gptq:bits=%d:group=%lld%s", b->bits, (long long)b->group, b->sym ? "" : ":asym");
        }
        if (b->actorder) sb_add(o, ":actorder");
        if (b->static_groups) sb_add(o, ":static");
        if (b->damp != GPTQ_DEFAULT_DAMP) {
            fmt_real(num, sizeof num, b->damp);
            sb_add(o, ":damp=%s", num);
        }
        break;
    case QZ_AWQ:
        sb_add(o, "awq:bits=%d:group=%lld%s", b->bits, (long long)b->group, b->sym ? "" : ":asym");
        break;
    case QZ_SMOOTHQUANT:
        if (b->smooth) {
            fmt_real(num, sizeof num, b->alpha);
            sb_add(o, "smoothquant:alpha=%s", num);
        } else {
            sb_add(o, "w8a8");
        }
        if (b->a8 == QZ_A8_TENSOR) sb_add(o, ":act=tensor");
        break;
    case QZ_QAT: {
        char t[QZ_QAT_PRINT_MAX];
        qz_qat_print(b, t, sizeof t);
        sb_add(o, "%s", t);
        break;
    }
    default: QP_ASSERT(!"bad qz_method");
    }
}

int qz_base_print(const struct qz_base *b, char *buf, size_t cap) {
    struct sb o = {buf, cap, 0};
    if (cap) buf[0] = 0;
    print_base(&o, b);
    return sb_finish(&o);
}

static void print_variant(struct sb *o, const struct qz_variant *v) {
    print_base(o, &v->base);
    if (v->keep) {
        const char *sep = ";keep=";
        for (int i = 0; i < QZ_TC_COUNT; i++)
            if (v->keep & (1u << i)) {
                sb_add(o, "%s%s", sep, tc_names[i]);
                sep = ",";
            }
    }
    if (v->act == QZ_ACT_Q8) sb_add(o, ";act=q8");
    if (v->imatrix) sb_add(o, ";imatrix");
    for (int i = 0; i < v->n_rules; i++) {
        sb_add(o, ";name~%s=", v->rules[i].src);
        print_base(o, &v->rules[i].base);
    }
}

int qz_variant_print(const struct qz_variant *v, char *buf, size_t cap) {
    struct sb o = {buf, cap, 0};
    if (cap) buf[0] = 0;
    print_variant(&o, v);
    return sb_finish(&o);
}

// The length of the canonical form (nothing written).
static size_t variant_print_len(const struct qz_variant *v) {
    struct sb o = {NULL, 0, 0};
    print_variant(&o, v);
    return o.len;
}

// ---------------------------------------------------------------------------------------------
// Per-tensor selection.

static const struct qz_base f32_base = {.method = QZ_F32, .bits = 32, .ggml_type = -1};

const struct qz_base *qz_variant_for_tensor(const struct qz_variant *v, const char *gguf_name,
                                            int tensor_class) {
    if (gguf_name)
        for (int i = 0; i < v->n_rules; i++)
            if (regexec(&v->rules[i].re, gguf_name, 0, NULL, 0) == 0) return &v->rules[i].base;
    if (tensor_class >= 0 && tensor_class < QZ_TC_COUNT && (v->keep & (1u << tensor_class)))
        return &f32_base;
    return &v->base;
}

int qz_tensor_class_of(const char *name) {
    const char *p = name;
    if (strncmp(p, "blk.", 4) == 0) {
        p += 4;
        if (!isdigit((unsigned char)*p)) return QZ_TC_OTHER;
        while (isdigit((unsigned char)*p)) p++;
        if (*p++ != '.') return QZ_TC_OTHER;
    }
    size_t n = strcspn(p, ".");
    if (p[n] && strcmp(p + n, ".weight") != 0) return QZ_TC_OTHER;
    static const struct {
        const char *stem;
        int tc;
        bool in_block;
    } stems[] = {
        {"token_embd", QZ_TC_EMBED, false}, {"output", QZ_TC_OUTPUT, false},
        {"output_norm", QZ_TC_NORM, false}, {"attn_q", QZ_TC_ATTN_Q, true},
        {"attn_k", QZ_TC_ATTN_K, true},     {"attn_v", QZ_TC_ATTN_V, true},
        {"attn_output", QZ_TC_ATTN_OUTPUT, true}, {"ffn_gate", QZ_TC_FFN_GATE, true},
        {"ffn_up", QZ_TC_FFN_UP, true},     {"ffn_down", QZ_TC_FFN_DOWN, true},
        {"attn_norm", QZ_TC_NORM, true},    {"ffn_norm", QZ_TC_NORM, true},
    };
    bool in_block = p != name;
    for (size_t i = 0; i < QP_ARRAY_LEN(stems); i++)
        if (stems[i].in_block == in_block && strlen(stems[i].stem) == n &&
            strncmp(p, stems[i].stem, n) == 0)
            return stems[i].tc;
    return QZ_TC_OTHER;
}

const char *qz_tensor_class_name(int tc) {
    return tc >= 0 && tc < QZ_TC_COUNT ? tc_names[tc] : NULL;
}

int qz_spec_parse_int(const char *s, int64_t *out) { return parse_int(s, out); }
int qz_spec_parse_real(const char *s, double *out) { return parse_real(s, out); }
void qz_spec_fmt_real(char *out, size_t cap, double x) { fmt_real(out, cap, x); }
