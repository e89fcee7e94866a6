// test_qz_spec.c — the variant spec grammar (quantizers/qz_spec.h): canonical strings round-trip
// exactly through parse and print, lenient inputs print canonically, bad specs fail with one
// line that quotes them and lists the valid forms, and rules pick the base per tensor.
#include <string.h>

#include "kn_types.h"
#include "qp.h"
#include "qp_test.h"
#include "qz_spec.h"

// Every BASE form and every clause, in canonical spelling.
static const char *const canonical[] = {
    "f32",
    "f16",
    "bf16",
    "rtn:bits=2:tensor:sym",
    "rtn:bits=3:channel:asym",
    "rtn:bits=4:group=32:sym",
    "rtn:bits=4:group=32:asym",
    "rtn:bits=8:group=1:sym",
    "rtn:bits=5:group=100:asym:clip=mse",
    "rtn:bits=6:channel:sym:clip=mse",
    "rtn:bits=7:tensor:asym:clip=mse",
    "nf4:group=64",
    "nf4:group=64:dq",
    "nf4:group=128:dq",
    "fp4:group=64",
    "fp4:group=32:dq",
    "q8_0",
    "q4_0",
    "q4_1",
    "q5_0",
    "q5_1",
    "q2_k",
    "q3_k",
    "q4_k",
    "q5_k",
    "q6_k",
    "iq4_nl",
    "q3_k_m",
    "q4_k_m",
    "q5_k_m",
    "gptq:bits=4:group=128",
    "gptq:bits=4:group=32:actorder",
    "gptq:bits=3:group=64:asym:actorder:static:damp=0.1",
    "gptq:bits=2:group=16:damp=0.005",
    "gptq:q4_k",
    "gptq:q4_0:actorder:damp=0.05",
    "awq:bits=4:group=128",
    "awq:bits=3:group=32:asym",
    "smoothquant:alpha=0.5",
    "smoothquant:alpha=0.85",
    "smoothquant:alpha=0.5:act=tensor",
    "w8a8",
    "w8a8:act=tensor",
    "w8a8:act=tensor;keep=attn_v;act=q8",
    "q4_k;keep=embed,output",
    "q4_0;act=q8",
    "q4_k_m;keep=output;act=q8;name~ffn_down=q6_k",
    "rtn:bits=4:group=32:asym;name~^blk\\.(0|1)\\.attn_v\\.weight$=q8_0;name~ffn_(up|gate)=nf4:group=64:dq",
    "f16;keep=embed,output,attn_q,attn_k,attn_v,attn_output,ffn_gate,ffn_up,ffn_down,norm",
    "nf4:group=64:dq;name~.*=f32",
    "gptq:bits=4:group=128:actorder;keep=output;name~blk\\.[0-9]+\\.ffn_down=gptq:q6_k",
    "q4_k;imatrix",
    "q4_k_m;keep=output;act=q8;imatrix;name~ffn_down=q6_k",
    "rtn:bits=4:group=32:asym;imatrix;name~ffn_down=iq4_nl",
};

QP_TEST(canonical_specs_should_round_trip_exactly) {
    char err[QP_ERRLEN], buf[QZ_SPEC_MAX + 1];
    for (size_t i = 0; i < QP_ARRAY_LEN(canonical); i++) {
        struct qz_variant *v;
        int rc = qz_variant_parse(canonical[i], &v, err);
        QP_CHECK_MSG(rc == 0, "'%s': %s", canonical[i], err);
        int n = qz_variant_print(v, buf, sizeof buf);
        QP_CHECK_INT_EQ(n, (long long)strlen(canonical[i]));
        QP_CHECK_STR_EQ(buf, canonical[i]);
        qz_variant_destroy(v);
    }
    QP_CHECK(QP_ARRAY_LEN(canonical) >= 40);
}

QP_TEST(lenient_specs_should_print_canonically) {
    static const char *const pairs[][2] = {
        {"nf4", "nf4:group=64"},
        {"fp4:dq", "fp4:group=64:dq"},
        {"nf4:dq:group=32", "nf4:group=32:dq"},
        {"rtn:sym:group=32:bits=4", "rtn:bits=4:group=32:sym"},
        {"rtn:bits=4:group=32:clip=mse:asym", "rtn:bits=4:group=32:asym:clip=mse"},
        {"rtn:bits=4:group=0032:sym", "rtn:bits=4:group=32:sym"},
        {"Q4_K", "q4_k"},
        {"Q4_K_M", "q4_k_m"},
        {"smoothquant", "smoothquant:alpha=0.5"},
        {"smoothquant:alpha=0.50", "smoothquant:alpha=0.5"},
        {"smoothquant:alpha=1", "smoothquant:alpha=1"},
        {"smoothquant:act=token", "smoothquant:alpha=0.5"},
        {"smoothquant:act=tensor:alpha=0.70", "smoothquant:alpha=0.7:act=tensor"},
        {"w8a8:act=token", "w8a8"},
        {"gptq:bits=4:group=128:damp=0.01", "gptq:bits=4:group=128"},
        {"gptq:actorder:bits=4:group=128:damp=.1", "gptq:bits=4:group=128:actorder:damp=0.1"},
        {"gptq:damp=1e-2:Q4_K", "gptq:q4_k"},
        {"awq:asym:group=64:bits=4", "awq:bits=4:group=64:asym"},
        {"q4_0;act=f32", "q4_0"},
        {"q4_0;keep=output;keep=embed,output", "q4_0;keep=embed,output"},
        {"q4_0;keep=norm,embed,norm", "q4_0;keep=embed,norm"},
        {"q4_0;name~x=q8_0;act=q8;keep=norm", "q4_0;keep=norm;act=q8;name~x=q8_0"},
        {"q4_k;name~ffn_down=q6_k;keep=output,embed", "q4_k;keep=embed,output;name~ffn_down=q6_k"},
        {"f32;name~a=nf4;name~b=rtn:asym:bits=3:tensor", "f32;name~a=nf4:group=64;name~b=rtn:bits=3:tensor:asym"},
        {"q4_0;imatrix;act=q8;keep=embed", "q4_0;keep=embed;act=q8;imatrix"},
        {"Q4_K_M;name~ffn_down=q6_k;imatrix", "q4_k_m;imatrix;name~ffn_down=q6_k"},
    };
    char err[QP_ERRLEN], buf[QZ_SPEC_MAX + 1], again[QZ_SPEC_MAX + 1];
    for (size_t i = 0; i < QP_ARRAY_LEN(pairs); i++) {
        struct qz_variant *v, *w;
        QP_CHECK_MSG(qz_variant_parse(pairs[i][0], &v, err) == 0, "'%s': %s", pairs[i][0], err);
        QP_CHECK(qz_variant_print(v, buf, sizeof buf) > 0);
        QP_CHECK_STR_EQ(buf, pairs[i][1]);
        // and the canonical form is a fixed point
        QP_CHECK_MSG(qz_variant_parse(buf, &w, err) == 0, "'%s': %s", buf, err);
        QP_CHECK(qz_variant_print(w, again, sizeof again) > 0);
        QP_CHECK_STR_EQ(again, buf);
        qz_variant_destroy(v);
        qz_variant_destroy(w);
    }
}

// Each bad spec with a fragment its message must hold (the reason, quoting the bad part).
static const char *const bad[][2] = {
    {"", "empty spec"},
    {"rtn:bits=9:group=32:sym", "'bits=9': bits must be 2..8"},
    {"rtn:bits=1:channel:sym", "'bits=1': bits must be 2..8"},
    {"rtn:bits=4:sym", "rtn needs a granularity"},
    {"rtn:bits=4:group=32", "rtn needs sym or asym"},
    {"rtn:group=32:sym", "rtn needs bits=B"},
    {"rtn:bits=4:group=0:sym", "'group=0': group must be"},
    {"rtn:bits=4:group=3a:sym", "'group=3a': group must be"},
    {"rtn:bits=4:group=32:sym:asym", "one of sym or asym"},
    {"rtn:bits=4:channel:group=32:sym", "one granularity"},
    {"rtn:bits=4:group=32:sym:clip=max", "'clip=max': clip must be mse"},
    {"rtn:bits=4:group=32:sym:dq", "'dq' is not an option of rtn"},
    {"rtn:bits=4:group=32:sym:sym", "'sym' given twice"},
    {"rtn:bits=4::group=32:sym", "empty option"},
    {"nf4:group=64:sym", "'sym' is not an option of nf4"},
    {"nf4:group=-1", "'group=-1': group must be"},
    {"q4_0:group=32", "q4_0 takes no options"},
    {"q7_0", "unknown method 'q7_0'"},
    {"int4", "unknown method 'int4'"},
    {"f32;keep=embeddings", "keep: 'embeddings' is not embed|output|attn_"},
    {"f32;keep=", "keep= needs class names"},
    {"f32;act=q4", "'act=q4': act must be f32 or q8"},
    {"f32;act=q8;act=f32", "act= given twice"},
    {"f32;frobnicate", "unknown clause 'frobnicate'"},
    {"f32;", "empty clause"},
    {"f32;name~=q4_0", "empty regex"},
    {"f32;name~ffn_down", "needs '=BASE'"},
    {"f32;name~ffn_(down=q4_0", "bad regex 'ffn_(down'"},
    {"f32;name~ffn=q4_k_m", "whole-model mix"},
    {"f32;name~ffn=rtn:bits=4", "rule 'name~ffn=rtn:bits=4': rtn needs a granularity"},
    {"gptq:bits=4", "gptq needs bits=B:group=G"},
    {"gptq:q4_k:asym", "'asym' is not an option of gptq:TYPE"},
    {"gptq:bits=4:group=128:damp=0", "'damp=0': damp must be"},
    {"gptq:bits=4:group=128:damp=nan", "'damp=nan': damp must be"},
    {"awq:bits=4:group=128:actorder", "'actorder' is not an option of awq"},
    {"smoothquant:alpha=1.5", "'alpha=1.5': alpha must be"},
    {"smoothquant:act=channel", "'act=channel': act must be token or tensor"},
    {"smoothquant:act", "option 'act' needs a value"},
    {"w8a8:alpha=0.5", "'alpha=0.5' is not an option of w8a8"},
    {"w8a8:act=tensor:act=token", "option 'act=token' given twice"},
    {"w8a8;act=tensor", "'act=tensor': act must be f32 or q8"},
    {"rtn:bits=8:channel:sym:act=token", "'act=token' is not an option of rtn"},
    {"rtn:bits=4:group=32:sym\n", "unknown option 'sym?'"},
    {"f32:x", "f32 takes no options"},
    {"q4_k;imatrix;imatrix", "imatrix given twice"},
    {"q4_k;imatrix=1", "unknown clause 'imatrix=1'"},
    {"rtn:bits=4:group=32:asym;imatrix", "imatrix needs a llama.cpp type"},
    {"gptq:q4_k;imatrix", "imatrix needs a llama.cpp type"},
    {"f32;imatrix;name~ffn=gptq:q4_0", "imatrix needs a llama.cpp type"},
};

QP_TEST(bad_specs_should_fail_with_one_line_quoting_them) {
    char err[QP_ERRLEN];
    for (size_t i = 0; i < QP_ARRAY_LEN(bad); i++) {
        const char *s = bad[i][0];
        struct qz_variant *v = (struct qz_variant *)1;
        memset(err, 0, sizeof err);
        int rc = qz_variant_parse(s, &v, err);
        QP_CHECK_MSG(rc == QP_EINVAL, "'%s' gave %d", s, rc);
        QP_CHECK(v == NULL);
        QP_CHECK_MSG(strncmp(err, "bad spec '", 10) == 0, "'%s': %s", s, err);
        QP_CHECK_MSG(!strchr(err, '\n'), "'%s': message is not one line: %s", s, err);
        QP_CHECK_MSG(strlen(err) < QP_ERRLEN - 1, "'%s': message truncated", s);
        QP_CHECK_MSG(strstr(err, bad[i][1]), "'%s': expected '%s' in: %s", s, bad[i][1], err);
        QP_CHECK_MSG(strstr(err, "; valid forms: f32 | f16 | bf16 | rtn:bits=2..8:"), "%s", err);
        QP_CHECK_MSG(strstr(err, "name~REGEX=BASE"), "%s", err); // the list is complete
        if (!strchr(s, '\n')) {
            char quoted[128];
            snprintf(quoted, sizeof quoted, "bad spec '%s': ", s);
            QP_CHECK_MSG(strncmp(err, quoted, strlen(quoted)) == 0, "%s", err);
        }
    }
    QP_CHECK(QP_ARRAY_LEN(bad) >= 20);
    // the example message from the design, verbatim at its start
    struct qz_variant *v;
    qz_variant_parse("rtn:bits=9:group=32:sym", &v, err);
    const char *want = "bad spec 'rtn:bits=9:group=32:sym': 'bits=9': bits must be 2..8; valid forms: ";
    QP_CHECK_MSG(strncmp(err, want, strlen(want)) == 0, "%s", err);
}

QP_TEST(long_spec_should_be_cut_in_the_message) {
    char err[QP_ERRLEN];
    size_t n = QZ_SPEC_MAX + 10;
    char *s = malloc(n + 1);
    memset(s, 'a', n);
    s[n] = 0;
    struct qz_variant *v;
    QP_CHECK_INT_EQ(qz_variant_parse(s, &v, err), QP_EINVAL);
    QP_CHECK(strstr(err, "...'"));
    QP_CHECK(strstr(err, "longer than"));
    QP_CHECK(strlen(err) < QP_ERRLEN - 1);
    // a long but valid regex is fine, and a long bad one is quoted cut
    memcpy(s, "f32;name~", 9);
    strcpy(s + 400, "(=q4_0");
    QP_CHECK_INT_EQ(qz_variant_parse(s, &v, err), QP_EINVAL);
    QP_CHECK_MSG(strstr(err, "...") && strstr(err, "valid forms") && strlen(err) < QP_ERRLEN - 1, "%s", err);
    free(s);
}

QP_TEST(fields_should_hold_the_parsed_options) {
    char err[QP_ERRLEN];
    struct qz_base b;
    QP_CHECK(qz_base_parse("rtn:bits=3:group=100:asym:clip=mse", &b, err) == 0);
    QP_CHECK(b.method == QZ_RTN && b.bits == 3 && b.gran == QZ_GROUP && b.group == 100 && !b.sym && b.clip_mse);
    QP_CHECK(qz_base_parse("rtn:bits=8:channel:sym", &b, err) == 0);
    QP_CHECK(b.gran == QZ_CHANNEL && b.sym && !b.clip_mse && b.group == 0);
    QP_CHECK(qz_base_parse("nf4", &b, err) == 0);
    QP_CHECK(b.method == QZ_NF4 && b.bits == 4 && b.group == 64 && !b.dq);
    QP_CHECK(qz_base_parse("fp4:group=16:dq", &b, err) == 0);
    QP_CHECK(b.method == QZ_FP4 && b.group == 16 && b.dq);
    QP_CHECK(qz_base_parse("q4_k", &b, err) == 0);
    QP_CHECK(b.method == QZ_GGML && b.ggml_type == KN_Q4_K);
    QP_CHECK(qz_base_parse("iq4_nl", &b, err) == 0);
    QP_CHECK(b.method == QZ_GGML && b.ggml_type == KN_IQ4_NL);
    QP_CHECK(qz_base_parse("q5_k_m", &b, err) == 0);
    QP_CHECK(b.method == QZ_GGML_MIX && b.mix == QZ_MIX_Q5_K_M && b.ggml_type == KN_Q5_K);
    QP_CHECK(qz_base_parse("gptq:bits=3:group=64:asym:actorder:static:damp=0.1", &b, err) == 0);
    QP_CHECK(b.method == QZ_GPTQ && b.bits == 3 && b.group == 64 && !b.sym && b.actorder &&
             b.static_groups && b.damp == 0.1 && b.ggml_type == -1);
    QP_CHECK(qz_base_parse("gptq:bits=4:group=128", &b, err) == 0);
    QP_CHECK(b.sym && !b.actorder && b.damp == 0.01);
    QP_CHECK(qz_base_parse("gptq:q6_k", &b, err) == 0);
    QP_CHECK(b.method == QZ_GPTQ && b.ggml_type == KN_Q6_K && b.bits == 0);
    QP_CHECK(qz_base_parse("awq:bits=4:group=128:asym", &b, err) == 0);
    QP_CHECK(b.method == QZ_AWQ && !b.sym && b.group == 128);
    QP_CHECK(qz_base_parse("smoothquant:alpha=0.75", &b, err) == 0);
    QP_CHECK(b.method == QZ_SMOOTHQUANT && b.alpha == 0.75 && b.bits == 8);
    QP_CHECK(b.smooth && b.a8 == QZ_A8_TOKEN);
    QP_CHECK(qz_base_parse("smoothquant:act=tensor", &b, err) == 0);
    QP_CHECK(b.method == QZ_SMOOTHQUANT && b.smooth && b.alpha == 0.5 && b.a8 == QZ_A8_TENSOR);
    QP_CHECK(qz_base_parse("w8a8", &b, err) == 0);
    QP_CHECK(b.method == QZ_SMOOTHQUANT && !b.smooth && b.bits == 8 && b.sym && b.a8 == QZ_A8_TOKEN);
    QP_CHECK(qz_base_parse("w8a8:act=tensor", &b, err) == 0);
    QP_CHECK(!b.smooth && b.a8 == QZ_A8_TENSOR && b.alpha == 0);
    QP_CHECK(qz_base_parse("f16", &b, err) == 0);
    QP_CHECK(b.method == QZ_F16 && b.bits == 16);
    // a base alone takes no clauses
    QP_CHECK_INT_EQ(qz_base_parse("q4_0;act=q8", &b, err), QP_EINVAL);
    QP_CHECK(strstr(err, "bad spec 'q4_0;act=q8'"));
    struct qz_variant *v;
    QP_CHECK(qz_variant_parse("q4_0;act=q8;keep=output,norm", &v, err) == 0);
    QP_CHECK(v->act == QZ_ACT_Q8);
    QP_CHECK(v->keep == ((1u << QZ_TC_OUTPUT) | (1u << QZ_TC_NORM)));
    QP_CHECK(v->n_rules == 0);
    QP_CHECK(!v->imatrix);
    qz_variant_destroy(v);
    QP_CHECK(qz_variant_parse("f32;name~ffn_down=q4_k;imatrix", &v, err) == 0);
    QP_CHECK(v->imatrix && v->n_rules == 1);
    qz_variant_destroy(v);
    qz_variant_destroy(NULL);
}

QP_TEST(rules_should_select_per_tensor_first_match_wins) {
    char err[QP_ERRLEN];
    struct qz_variant *v;
    const char *spec = "q4_0;keep=output,embed,norm;name~blk\\.[0-3]\\.ffn_down=q6_k;"
                       "name~ffn_down=q5_k;name~^output\\.weight$=q8_0";
    QP_CHECK_MSG(qz_variant_parse(spec, &v, err) == 0, "%s", err);
    QP_CHECK_INT_EQ(v->n_rules, 3);
    static const struct {
        const char *name;
        int method, type;
    } want[] = {
        {"blk.2.ffn_down.weight", QZ_GGML, KN_Q6_K},  // first rule
        {"blk.12.ffn_down.weight", QZ_GGML, KN_Q5_K}, // second: "blk.12" is not blk.[0-3].
        {"blk.7.ffn_down.weight", QZ_GGML, KN_Q5_K},
        {"output.weight", QZ_GGML, KN_Q8_0},          // a rule beats keep=
        {"token_embd.weight", QZ_F32, -1},            // keep=embed
        {"output_norm.weight", QZ_F32, -1},           // keep=norm
        {"blk.0.attn_norm.weight", QZ_F32, -1},
        {"blk.0.attn_q.weight", QZ_GGML, KN_Q4_0},    // the base
        {"blk.5.ffn_up.weight", QZ_GGML, KN_Q4_0},
    };
    for (size_t i = 0; i < QP_ARRAY_LEN(want); i++) {
        const struct qz_base *b = qz_variant_for_tensor(v, want[i].name, qz_tensor_class_of(want[i].name));
        QP_CHECK_MSG(b->method == (enum qz_method)want[i].method, "%s: method %d", want[i].name, b->method);
        if (want[i].type >= 0) QP_CHECK_MSG(b->ggml_type == want[i].type, "%s: type %d", want[i].name, b->ggml_type);
    }
    // without a name only keep= and the base apply
    QP_CHECK(qz_variant_for_tensor(v, NULL, QZ_TC_OUTPUT)->method == QZ_F32);
    QP_CHECK(qz_variant_for_tensor(v, NULL, QZ_TC_FFN_DOWN)->ggml_type == KN_Q4_0);
    QP_CHECK(qz_variant_for_tensor(v, NULL, QZ_TC_OTHER)->ggml_type == KN_Q4_0);
    qz_variant_destroy(v);
    // rule bases carry their own options
    QP_CHECK(qz_variant_parse("f16;name~attn_v=rtn:bits=3:group=17:asym", &v, err) == 0);
    const struct qz_base *b = qz_variant_for_tensor(v, "blk.0.attn_v.weight", QZ_TC_ATTN_V);
    QP_CHECK(b->method == QZ_RTN && b->bits == 3 && b->group == 17 && !b->sym);
    QP_CHECK(qz_variant_for_tensor(v, "blk.0.attn_k.weight", QZ_TC_ATTN_K)->method == QZ_F16);
    qz_variant_destroy(v);
}

QP_TEST(tensor_classes_should_follow_gguf_names) {
    static const struct {
        const char *name;
        int tc;
    } cases[] = {
        {"token_embd.weight", QZ_TC_EMBED},         {"output.weight", QZ_TC_OUTPUT},
        {"output_norm.weight", QZ_TC_NORM},         {"blk.0.attn_q.weight", QZ_TC_ATTN_Q},
        {"blk.11.attn_k.weight", QZ_TC_ATTN_K},     {"blk.3.attn_v.weight", QZ_TC_ATTN_V},
        {"blk.3.attn_output.weight", QZ_TC_ATTN_OUTPUT}, {"blk.3.ffn_gate.weight", QZ_TC_FFN_GATE},
        {"blk.3.ffn_up.weight", QZ_TC_FFN_UP},      {"blk.3.ffn_down.weight", QZ_TC_FFN_DOWN},
        {"blk.3.attn_norm.weight", QZ_TC_NORM},     {"blk.3.ffn_norm.weight", QZ_TC_NORM},
        {"blk.3.attn_q", QZ_TC_ATTN_Q},             {"rope_freqs.weight", QZ_TC_OTHER},
        {"blk.x.attn_q.weight", QZ_TC_OTHER},       {"blk.3.token_embd.weight", QZ_TC_OTHER},
        {"attn_q.weight", QZ_TC_OTHER},             {"blk.3.attn_q.bias", QZ_TC_OTHER},
        {"", QZ_TC_OTHER},
    };
    for (size_t i = 0; i < QP_ARRAY_LEN(cases); i++)
        QP_CHECK_MSG(qz_tensor_class_of(cases[i].name) == cases[i].tc, "%s", cases[i].name);
    QP_CHECK_STR_EQ(qz_tensor_class_name(QZ_TC_ATTN_OUTPUT), "attn_output");
    QP_CHECK(qz_tensor_class_name(QZ_TC_OTHER) == NULL);
}

QP_TEST(print_should_report_a_short_buffer) {
    char err[QP_ERRLEN], buf[8];
    struct qz_variant *v;
    QP_CHECK(qz_variant_parse("rtn:bits=4:group=32:sym", &v, err) == 0);
    QP_CHECK_INT_EQ(qz_variant_print(v, buf, sizeof buf), QP_ERANGE);
    QP_CHECK_STR_EQ(buf, "rtn:bit"); // truncated, NUL-terminated
    char exact[24];
    QP_CHECK_INT_EQ(qz_variant_print(v, exact, sizeof exact), 23);
    QP_CHECK_INT_EQ(qz_variant_print(v, exact, 23), QP_ERANGE);
    QP_CHECK_INT_EQ(qz_base_print(&v->base, NULL, 0), QP_ERANGE);
    qz_variant_destroy(v);
}
