// qz_spec.h — quantization variant specs: the short strings that name a configuration, parsed
// into structs and printed back canonically. Specs are data: the canonical string is what the
// store keeps, so parse → print → parse is the identity on canonical strings.
//
// Depends on kernels/ headers only (qp.h, kn_types.h) and POSIX <regex.h>; never on harness/.
//
// Grammar
//
//   VARIANT := BASE (';' CLAUSE)*
//   CLAUSE  := 'keep=' CLASS (',' CLASS)*    tensors kept f32. CLASS: embed output attn_q attn_k
//                                            attn_v attn_output ffn_gate ffn_up ffn_down norm
//            | 'act=' ('f32' | 'q8')         activation axis; default f32
//            | 'imatrix'                     llama.cpp types quantize with importance weights: the
//                                            calibration data's mean x² per input column (as
//                                            llama-imatrix collects it); needs a llama.cpp type in
//                                            the base or a rule, and calibration data to run
//            | 'name~' REGEX '=' BASE        per-tensor override. REGEX: POSIX extended regex
//                                            (REG_EXTENDED|REG_NOSUB), unanchored, matched
//                                            against GGUF names ("blk.3.ffn_down.weight"); it may
//                                            not contain ';' or '='. First matching rule wins.
//   BASE    := 'f32' | 'f16' | 'bf16'
//            | 'rtn:bits=B:' GRAN ':' ('sym'|'asym') [':clip=mse']    B = 2..8
//                 GRAN := 'tensor' | 'channel' | 'group=G'            G >= 1; partial last group ok
//            | ('nf4' | 'fp4') [':group=G'] [':dq']                   default G = 64
//            | GGML      q8_0 q4_0 q4_1 q5_0 q5_1 q2_k q3_k q4_k q5_k q6_k iq4_nl
//            | MIX       q3_k_m q4_k_m q5_k_m   (llama.cpp's per-tensor mixes; not inside rules)
//            | 'gptq:bits=B:group=G' [':asym'] [':actorder'] [':static'] [':damp=X']
//            | 'gptq:' GGML [':actorder'] [':static'] [':damp=X']    damp: 0 < X <= 1, default 0.01
//            | 'awq:bits=B:group=G' [':asym']
//            | 'smoothquant' [':alpha=X'] [':act=' A8]                0 <= X <= 1, default 0.5
//            | 'w8a8' [':act=' A8]             W8A8 without smoothing
//            | 'qat:bits=B:group=G' [':asym'] QATOPT*   quantization-aware training (qz_qat.h)
//            | 'qat:' QTYPE QATOPT*           QTYPE: q4_0 q4_1 q5_0 q5_1 q8_0
//                 QATOPT := ':steps=N' | ':lr=X' | ':init=' ('rtn'|'gptq') | ':seed=S' | ':ce=X'
//                 A8 := 'token' | 'tensor'     int8 activations: per token, dynamic (default), or
//                                              per tensor, static (scales from calibration data)
//
// Parsing is lenient where it costs nothing: the ':'-separated options of a BASE may come in any
// order, GGML names are case-insensitive (q4_K), clauses may come in any order and keep= clauses
// merge. Printing is canonical:
//   - BASE options in the order of the grammar above;
//   - nf4/fp4 always print their group (nf4 → nf4:group=64), smoothquant always prints alpha
//     (smoothquant → smoothquant:alpha=0.5), gptq prints damp only when it is not 0.01,
//     smoothquant and w8a8 print act only when tensor (w8a8:act=token → w8a8);
//   - real numbers in the shortest form that reads back to the same double (%.{1..17}g);
//   - clauses in the order keep, act, imatrix, rules; keep lists classes in the order listed above
//     without duplicates; act printed only when q8; rules in their given order, regex text verbatim.
// Example: "q4_k;name~ffn_down=q6_k;keep=output,embed" prints "q4_k;keep=embed,output;name~ffn_down=q6_k".
#ifndef QZ_SPEC_H
#define QZ_SPEC_H

#include <regex.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum qz_method {
    QZ_F32,
    QZ_F16,
    QZ_BF16,
    QZ_RTN,         // round to nearest on a uniform integer grid (qz_rtn.h)
    QZ_NF4,         // bitsandbytes NormalFloat4, absmax blocks (qz_rtn.h)
    QZ_FP4,         // bitsandbytes FP4 (e2m1-like), absmax blocks (qz_rtn.h)
    QZ_GGML,        // one llama.cpp type for the tensor (ggml_type)
    QZ_GGML_MIX,    // a llama.cpp mix (mix); ggml_type holds its base type
    QZ_GPTQ,        // calibrated, implemented elsewhere
    QZ_AWQ,         // calibrated, implemented elsewhere
    QZ_SMOOTHQUANT, // W8A8 (int8 weights and activations): smoothquant (smooth) or plain w8a8;
                    // implemented elsewhere
    QZ_QAT,         // quantization-aware training (quantizers/qz_qat.h, harness/run/hx_qat.h)
};

// W8A8's activation scales: per token (dynamic: each row's own absmax) or per tensor (static:
// one scale per linear input, from calibration data).
enum qz_a8 { QZ_A8_TOKEN, QZ_A8_TENSOR };

enum qz_gran { QZ_TENSOR, QZ_CHANNEL, QZ_GROUP };

enum qz_mix { QZ_MIX_NONE, QZ_MIX_Q3_K_M, QZ_MIX_Q4_K_M, QZ_MIX_Q5_K_M };

enum qz_act { QZ_ACT_F32, QZ_ACT_Q8 };

// Tensor classes, the names keep= uses. QZ_TC_OTHER is never kept by keep=.
enum qz_tensor_class {
    QZ_TC_EMBED,       // token_embd.weight
    QZ_TC_OUTPUT,      // output.weight
    QZ_TC_ATTN_Q,      // blk.N.attn_q.weight
    QZ_TC_ATTN_K,
    QZ_TC_ATTN_V,
    QZ_TC_ATTN_OUTPUT,
    QZ_TC_FFN_GATE,
    QZ_TC_FFN_UP,
    QZ_TC_FFN_DOWN,
    QZ_TC_NORM,        // attn_norm, ffn_norm, output_norm (1-D)
    QZ_TC_OTHER,
    QZ_TC_COUNT = QZ_TC_OTHER,
};

#define QZ_MAX_GROUP (1 << 30) // largest G accepted, so that group arithmetic never overflows
#define QZ_SPEC_MAX 4096       // longest spec accepted by qz_variant_parse (bytes, without NUL)

// One quantization method with its options. Plain data: copy freely, nothing to free.
struct qz_base {
    enum qz_method method;
    int bits;           // RTN/GPTQ/AWQ: 2..8; NF4/FP4: 4; SMOOTHQUANT: 8; F32/F16/BF16: 32/16/16;
                        // GGML, GGML_MIX and GPTQ on a ggml type: 0 (the type says)
    enum qz_gran gran;  // RTN: as given; NF4/FP4/GPTQ/AWQ: QZ_GROUP; others QZ_TENSOR (unused)
    int64_t group;      // elements per group when gran == QZ_GROUP, else 0
    bool sym;           // RTN/GPTQ/AWQ: symmetric grid (GPTQ/AWQ default sym unless :asym)
    bool clip_mse;      // RTN: search a clipping range per group
    bool dq;            // NF4/FP4: double-quantize the per-block absmax values
    int ggml_type;      // enum kn_type for GGML; a mix's base type; GPTQ on a ggml type; else -1
    enum qz_mix mix;    // GGML_MIX only
    bool actorder;      // GPTQ: process columns by decreasing Hessian diagonal
    bool static_groups; // GPTQ: group parameters fixed before act-order permutation
    double damp;        // GPTQ: dampening fraction of the mean Hessian diagonal (default 0.01)
    double alpha;       // SMOOTHQUANT: migration strength (default 0.5); 0 when !smooth
    bool smooth;        // SMOOTHQUANT: SmoothQuant's smoothing ('smoothquant'), or none ('w8a8')
    enum qz_a8 a8;      // SMOOTHQUANT: activation scales (default QZ_A8_TOKEN)
    struct qz_qat_opts {  // QAT only (qz_qat.h); zero otherwise
        int64_t steps;    // optimizer steps, >= 1
        double lr;        // peak learning rate, > 0
        int init;         // enum qz_qat_init: QZ_QAT_INIT_RTN, QZ_QAT_INIT_GPTQ
        int64_t seed;     // order of the training windows
        double ce;        // weight of next-token cross-entropy next to the KL, >= 0
    } qat;
};

// One per-tensor override rule.
struct qz_rule {
    regex_t re;          // compiled REG_EXTENDED | REG_NOSUB
    char *src;           // the regex text as written (owned)
    struct qz_base base;
};

// A parsed variant. Created by qz_variant_parse, freed by qz_variant_destroy; callers read the
// fields but do not modify them.
struct qz_variant {
    struct qz_base base;
    unsigned keep;           // bit (1u << enum qz_tensor_class) set: that class stays f32
    enum qz_act act;
    struct qz_rule *rules;   // n_rules entries, in order
    int n_rules;
    bool imatrix;            // the ';imatrix' clause
};

// A base of method m with the grammar's defaults (nf4/fp4 group 64, gptq damp 0.01 and
// symmetric, smoothquant alpha 0.5; ggml_type -1), for building specs as data: set the fields
// that differ, then qz_base_print. Options the method requires (rtn's bits and granularity, the
// grid of gptq and awq) are the caller's to set; qz_base_parse of the printed text checks them.
void qz_base_init(struct qz_base *b, enum qz_method m);

// The method's name as specs write it ("rtn", "gptq", "smoothquant"; "ggml" and "mix" for the
// llama.cpp types), NULL for an unknown value.
const char *qz_method_name(enum qz_method m);

// Parses one BASE (no clauses) into *out. 0, or QP_EINVAL with a one-line message in err
// (QP_ERRLEN bytes, may be NULL). Nothing to free.
int qz_base_parse(const char *s, struct qz_base *out, char *err);

// Parses a VARIANT. On success returns 0 and *out is a new variant (free with
// qz_variant_destroy). On failure returns QP_EINVAL (or QP_ENOMEM), *out = NULL, and err
// (QP_ERRLEN bytes, may be NULL) holds one line: "bad spec 'SPEC': WHAT; valid forms: ...".
int qz_variant_parse(const char *s, struct qz_variant **out, char *err);

// Frees a variant and its rules. NULL is fine.
void qz_variant_destroy(struct qz_variant *v);

// Print the canonical string into buf (cap bytes, always NUL-terminated when cap > 0). Return
// its length, or QP_ERANGE when it does not fit (buf then holds a truncated prefix).
int qz_base_print(const struct qz_base *b, char *buf, size_t cap);
int qz_variant_print(const struct qz_variant *v, char *buf, size_t cap);

// The base that applies to one tensor: the first rule whose regex matches gguf_name (rules are
// skipped when gguf_name is NULL), else f32 when tensor_class is in keep, else v->base. Returns
// a pointer into v, or to a static f32 base; valid while v lives.
const struct qz_base *qz_variant_for_tensor(const struct qz_variant *v, const char *gguf_name,
                                            int tensor_class);

// The class of a GGUF tensor name (see enum qz_tensor_class), QZ_TC_OTHER when none fits.
int qz_tensor_class_of(const char *gguf_name);

// The spec's number syntax, for the methods parsed outside this file (qz_qat.c): a decimal
// integer of at most 10 digits; a plain decimal real (no sign, hex, inf or nan); 0 or -1. And a
// real printed in the shortest form that reads back to the same double (%.{1..17}g).
int qz_spec_parse_int(const char *s, int64_t *out);
int qz_spec_parse_real(const char *s, double *out);
void qz_spec_fmt_real(char *out, size_t cap, double x);

// The keep= name of a class ("attn_q"), NULL for QZ_TC_OTHER or out of range.
const char *qz_tensor_class_name(int tensor_class);

#endif
