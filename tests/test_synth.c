// test_synth.c — synthetic models (harness/io/hx_synth.c, `qprobe synth`) and the streaming GGUF
// writer they use (hx_gguf_stream_* in harness/io/hx_gguf_model.c): determinism, the model loading
// with its shape and the real vocabulary, the planted outliers, the weight statistics, the
// metadata llama.cpp reads (against llama.cpp's own stories260K conversion), clean failures,
// and perplexity end to end.
#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hx_gguf.h"
#include "hx_gguf_model.h"
#include "kn_types.h"
#include "hx_model.h"
#include "qp.h"
#include "qp_test.h"
#include "hx_synth.h"
#include "hx_tokenizer.h"

#define VOCAB_GGUF "models/gguf/ggml-vocab-llama-spm.gguf"
#define STORIES_F32 "golden/ppl/stories260K-F32.gguf"

// ---------------------------------------------------------------------------------------------
// Helpers

static char *tmp_path(const char *name) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s/%s", qpt_tmpdir(), name);
    char *p = strdup(buf);
    QP_CHECK(p != NULL);
    return p;
}

// Writes test-tiny through the API; returns the path (caller frees).
static char *synth_tiny(const char *name, uint64_t seed, int type, int layers, int threads) {
    char *path = tmp_path(name);
    struct hx_synth_opts o = {
        .shape = hx_synth_shape_find("test-tiny"), .seed = seed, .type = type,
        .n_layers = layers, .vocab = qpt_fixture(VOCAB_GGUF), .n_threads = threads};
    QP_CHECK(o.shape != NULL);
    char err[QP_ERRLEN] = "";
    struct hx_synth_info info;
    int rc = hx_synth_write(&o, path, &info, err);
    QP_CHECK_MSG(rc == 0, "synth '%s' failed (%d): %s", path, rc, err);
    return path;
}

static struct hx_gguf *open_ok(const char *path) {
    char err[QP_ERRLEN] = "";
    struct hx_gguf *g = NULL;
    QP_CHECK_MSG(hx_gguf_open(path, &g, err) == 0, "%s", err);
    return g;
}

static int files_equal(const char *a, const char *b) {
    size_t na, nb;
    char *pa = qpt_read_file(a, &na), *pb = qpt_read_file(b, &nb);
    QP_CHECK(pa && pb);
    int eq = na == nb && memcmp(pa, pb, na) == 0;
    free(pa);
    free(pb);
    return eq;
}

static float elem(const struct hx_gguf_tensor *t, int64_t i) {
    if (t->type == KN_F32) return ((const float *)t->data)[i];
    QP_CHECK(t->type == KN_F16);
    return qp_fp16_to_fp32(((const uint16_t *)t->data)[i]);
}

// Mean, standard deviation and excess kurtosis of a tensor's elements.
static void moments(const struct hx_gguf_tensor *t, double *mean, double *sd, double *exkurt) {
    int64_t n = t->ne[0] * t->ne[1];
    double s = 0, s2 = 0, s4 = 0;
    for (int64_t i = 0; i < n; i++) s += elem(t, i);
    double m = s / (double)n;
    for (int64_t i = 0; i < n; i++) {
        double d = elem(t, i) - m;
        s2 += d * d;
        s4 += d * d * d * d;
    }
    double var = s2 / (double)n;
    *mean = m;
    *sd = sqrt(var);
    *exkurt = s4 / (double)n / (var * var) - 3.0;
}

// The k input channels (columns) with the largest absolute maximum, ascending.
static void top_columns(const struct hx_gguf_tensor *t, int k, int *out) {
    int64_t ne0 = t->ne[0], ne1 = t->ne[1];
    double *amax = calloc((size_t)ne0, sizeof *amax);
    QP_CHECK(amax != NULL);
    for (int64_t r = 0; r < ne1; r++)
        for (int64_t c = 0; c < ne0; c++) amax[c] = fmax(amax[c], fabs(elem(t, r * ne0 + c)));
    for (int j = 0; j < k; j++) {
        int64_t best = 0;
        for (int64_t c = 1; c < ne0; c++)
            if (amax[c] > amax[best]) best = c;
        out[j] = (int)best;
        amax[best] = -1;
    }
    for (int a = 1; a < k; a++) // insertion sort
        for (int b = a; b > 0 && out[b - 1] > out[b]; b--) {
            int x = out[b];
            out[b] = out[b - 1];
            out[b - 1] = x;
        }
    free(amax);
}

// Stderr of a qprobe command line: must exit 2 with one line "qprobe synth: ..." naming needle.
static void expect_usage_error(const char *args, const char *needle) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "'%s' synth %s 2>&1 >/dev/null", qpt_qprobe(), args);
    char *out = NULL;
    int rc = qpt_run(cmd, &out);
    QP_CHECK_MSG(rc == 2, "'%s' exited %d, expected 2: %s", args, rc, out ? out : "");
    QP_CHECK_MSG(out && strncmp(out, "qprobe synth: ", 14) == 0, "message style: %s", out);
    size_t len = strlen(out);
    QP_CHECK_MSG(len > 0 && out[len - 1] == '\n' && strchr(out, '\n') == out + len - 1,
                 "not one line: %s", out);
    QP_CHECK_MSG(strstr(out, needle) != NULL, "'%s' not in: %s", needle, out);
    free(out);
}

// Number of entries of dir whose name contains part.
static int count_entries(const char *dir, const char *part) {
    DIR *d = opendir(dir);
    QP_CHECK(d != NULL);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) n += strstr(e->d_name, part) != NULL;
    closedir(d);
    return n;
}

// ---------------------------------------------------------------------------------------------
// Determinism

QP_TEST(same_seed_should_give_same_bytes_for_any_thread_count) {
    char *a = synth_tiny("a.gguf", 7, KN_F32, 0, 1);
    char *b = synth_tiny("b.gguf", 7, KN_F32, 0, 2);
    char *c = synth_tiny("c.gguf", 7, KN_F32, 0, 3);
    QP_CHECK(files_equal(a, b));
    QP_CHECK(files_equal(a, c));
    char *h1 = synth_tiny("h1.gguf", 7, KN_F16, 0, 1);
    char *h2 = synth_tiny("h2.gguf", 7, KN_F16, 0, 2);
    QP_CHECK(files_equal(h1, h2));
    free(a);
    free(b);
    free(c);
    free(h1);
    free(h2);
}

QP_TEST(different_seeds_should_give_different_weights) {
    char *a = synth_tiny("a.gguf", 7, KN_F32, 0, 2);
    char *b = synth_tiny("b.gguf", 8, KN_F32, 0, 2);
    QP_CHECK(!files_equal(a, b));
    struct hx_gguf *ga = open_ok(a), *gb = open_ok(b);
    // Every tensor differs, not just a few bytes.
    for (int64_t i = 0; i < hx_gguf_n_tensors(ga); i++) {
        const struct hx_gguf_tensor *ta = hx_gguf_tensor(ga, i), *tb = hx_gguf_tensor(gb, i);
        QP_CHECK_STR_EQ(ta->name, tb->name);
        QP_CHECK_MSG(memcmp(ta->data, tb->data, ta->nbytes) != 0, "tensor '%s' equal", ta->name);
    }
    hx_gguf_close(ga);
    hx_gguf_close(gb);
    free(a);
    free(b);
}

QP_TEST(layer_override_should_keep_the_shared_layers_identical) {
    char *two = synth_tiny("two.gguf", 3, KN_F32, 0, 2);
    char *one = synth_tiny("one.gguf", 3, KN_F32, 1, 2);
    struct hx_gguf *g2 = open_ok(two), *g1 = open_ok(one);
    int64_t blocks;
    QP_CHECK(hx_gguf_get_int(g1, "llama.block_count", &blocks) == 0 && blocks == 1);
    QP_CHECK_INT_EQ(hx_gguf_n_tensors(g1), 3 + 9);
    for (int64_t i = 0; i < hx_gguf_n_tensors(g1); i++) {
        const struct hx_gguf_tensor *t1 = hx_gguf_tensor(g1, i);
        const struct hx_gguf_tensor *t2 = hx_gguf_find_tensor(g2, t1->name);
        QP_CHECK_MSG(t2 != NULL && t2->nbytes == t1->nbytes &&
                         memcmp(t1->data, t2->data, t1->nbytes) == 0,
                     "tensor '%s' differs", t1->name);
    }
    QP_CHECK(hx_gguf_find_tensor(g1, "blk.1.attn_q.weight") == NULL);
    hx_gguf_close(g1);
    hx_gguf_close(g2);
    free(one);
    free(two);
}

// ---------------------------------------------------------------------------------------------
// The model

QP_TEST(test_tiny_should_load_with_its_shape_and_the_32000_token_vocab) {
    const int types[2] = {KN_F32, KN_F16};
    for (int ti = 0; ti < 2; ti++) {
        char *path = synth_tiny("m.gguf", 11, types[ti], 0, 2);
        struct hx_model *m;
        char err[QP_ERRLEN] = "";
        QP_CHECK_MSG(hx_model_open(path, NULL, &m, err) == 0, "%s", err);
        const struct kn_config *c = &m->w.cfg;
        QP_CHECK_INT_EQ(c->dim, 64);
        QP_CHECK_INT_EQ(c->hidden_dim, 172);
        QP_CHECK_INT_EQ(c->n_layers, 2);
        QP_CHECK_INT_EQ(c->n_heads, 4);
        QP_CHECK_INT_EQ(c->n_kv_heads, 2);
        QP_CHECK_INT_EQ(c->head_size, 16);
        QP_CHECK_INT_EQ(c->seq_len, 512);
        QP_CHECK_INT_EQ(c->vocab_size, 32000);
        QP_CHECK(c->norm_eps == 1e-5f && c->rope_theta == 10000.0f);
        QP_CHECK_INT_EQ(m->w.tied, 0); // a separate classifier, as TinyLlama and Llama 2 have
        QP_CHECK_INT_EQ(m->w.tok_embd.type, types[ti]);
        QP_CHECK_INT_EQ(m->w.layers[1].w_down.type, types[ti]);
        QP_CHECK_INT_EQ(m->w.layers[1].ffn_norm.type, KN_F32);
        QP_CHECK_INT_EQ(m->w.out_norm.type, KN_F32);
        QP_CHECK(m->tok != NULL);
        QP_CHECK_INT_EQ(hx_tok_n_vocab(m->tok), 32000);
        QP_CHECK_INT_EQ(hx_tok_bos(m->tok), 1);
        QP_CHECK_INT_EQ(hx_tok_eos(m->tok), 2);
        // The real vocabulary tokenizes real text into real pieces.
        int *ids = NULL;
        size_t n = 0;
        const char *text = "Once upon a time";
        QP_CHECK(hx_tok_encode(m->tok, text, strlen(text), HX_TOK_ADD_BOS | HX_TOK_SPACE_PREFIX,
                               &ids, &n) == 0);
        QP_CHECK_INT_EQ(n, 5); // <s> ▁Once ▁upon ▁a ▁time
        size_t len;
        const char *s = hx_tok_str(m->tok, ids[1], &len);
        QP_CHECK(len == 5 && memcmp(s, " Once", 5) == 0);
        free(ids);
        hx_model_close(m);
        free(path);
    }
}

QP_TEST(planted_outlier_channels_should_have_the_largest_column_absmax) {
    const uint64_t seeds[3] = {0, 42, 0xdeadbeefcafeull};
    for (int si = 0; si < 3; si++) {
        char *path = synth_tiny("o.gguf", seeds[si], si == 2 ? KN_F16 : KN_F32, 0, 2);
        struct hx_gguf *g = open_ok(path);
        int want[HX_SYNTH_N_OUTLIERS];
        hx_synth_outliers(seeds[si], 64, want);
        // Recorded in the metadata.
        const struct hx_gguf_kv *kv = hx_gguf_find(g, "qprobe.synth.outlier_channels");
        QP_CHECK(kv && kv->val.type == HX_GGUF_ARRAY && kv->val.v.arr.type == HX_GGUF_INT32);
        QP_CHECK_INT_EQ(kv->val.v.arr.n, HX_SYNTH_N_OUTLIERS);
        for (int k = 0; k < HX_SYNTH_N_OUTLIERS; k++) {
            int32_t x;
            memcpy(&x, kv->val.v.arr.data + 4 * k, 4);
            QP_CHECK_INT_EQ(x, want[k]);
            QP_CHECK(want[k] >= 0 && want[k] < 64 && (k == 0 || want[k] > want[k - 1]));
        }
        for (int l = 0; l < 2; l++) {
            static const char *planted[] = {"attn_q", "attn_k", "attn_v", "ffn_gate", "ffn_up"};
            for (size_t i = 0; i < QP_ARRAY_LEN(planted); i++) {
                char name[64];
                snprintf(name, sizeof name, "blk.%d.%s.weight", l, planted[i]);
                const struct hx_gguf_tensor *t = hx_gguf_find_tensor(g, name);
                QP_CHECK(t != NULL);
                int top[HX_SYNTH_N_OUTLIERS];
                top_columns(t, HX_SYNTH_N_OUTLIERS, top);
                QP_CHECK_MSG(memcmp(top, want, sizeof top) == 0,
                             "seed %llu %s: top columns %d %d %d %d, planted %d %d %d %d",
                             (unsigned long long)seeds[si], name, top[0], top[1], top[2], top[3],
                             want[0], want[1], want[2], want[3]);
            }
            // attn_output is not planted: its top columns are not the planted ones.
            char name[64];
            snprintf(name, sizeof name, "blk.%d.attn_output.weight", l);
            int top[HX_SYNTH_N_OUTLIERS];
            top_columns(hx_gguf_find_tensor(g, name), HX_SYNTH_N_OUTLIERS, top);
            QP_CHECK(memcmp(top, want, sizeof top) != 0);
        }
        hx_gguf_close(g);
        free(path);
    }
}

QP_TEST(weights_should_be_heavy_tailed_and_scaled_by_fan_in) {
    char *path = synth_tiny("w.gguf", 5, KN_F32, 0, 2);
    struct hx_gguf *g = open_ok(path);
    double m, sd, k;
    // The classifier: 2M Student-t (ν = 5) draws, std 1/sqrt(64); a normal would have excess
    // kurtosis ≈ 0, t5 has 6 (its sample value converges slowly, hence the wide band).
    moments(hx_gguf_find_tensor(g, "output.weight"), &m, &sd, &k);
    QP_CHECK_NEAR(sd, 1.0 / 8.0, 0.01);
    QP_CHECK(fabs(m) < 1e-3);
    QP_CHECK_MSG(k > 3.5 && k < 12.0, "output.weight excess kurtosis %g", k);
    // ffn_down: fan_in 172, no outliers.
    moments(hx_gguf_find_tensor(g, "blk.1.ffn_down.weight"), &m, &sd, &k);
    QP_CHECK_NEAR(sd, 1.0 / sqrt(172.0), 0.05 / sqrt(172.0));
    QP_CHECK_MSG(k > 1.0, "ffn_down excess kurtosis %g", k);
    // The embedding is normal with std 0.02.
    moments(hx_gguf_find_tensor(g, "token_embd.weight"), &m, &sd, &k);
    QP_CHECK_NEAR(sd, 0.02, 0.0005);
    QP_CHECK_MSG(fabs(k) < 0.05, "token_embd excess kurtosis %g", k);
    // Norms: about 1, a little noise.
    const struct hx_gguf_tensor *n = hx_gguf_find_tensor(g, "blk.0.attn_norm.weight");
    QP_CHECK_INT_EQ(n->n_dims, 1);
    moments(n, &m, &sd, &k);
    QP_CHECK_NEAR(m, 1.0, 0.01);
    QP_CHECK(sd > 0.005 && sd < 0.05);
    hx_gguf_close(g);
    free(path);
}

// ---------------------------------------------------------------------------------------------
// Metadata: what llama.cpp reads

// Encoded equality of two values (arrays element by element).
static int value_equal(const struct hx_gguf_value *a, const struct hx_gguf_value *b) {
    if (a->type != b->type) return 0;
    switch (a->type) {
    case HX_GGUF_STRING:
        return a->v.str.len == b->v.str.len &&
               memcmp(a->v.str.ptr, b->v.str.ptr, a->v.str.len) == 0;
    case HX_GGUF_FLOAT32:
    case HX_GGUF_FLOAT64: return a->v.f == b->v.f;
    case HX_GGUF_BOOL: return a->v.b == b->v.b;
    case HX_GGUF_ARRAY:
        if (a->v.arr.type != b->v.arr.type || a->v.arr.n != b->v.arr.n) return 0;
        if (a->v.arr.items) {
            for (uint64_t i = 0; i < a->v.arr.n; i++)
                if (!value_equal(&a->v.arr.items[i], &b->v.arr.items[i])) return 0;
            return 1;
        }
        return memcmp(a->v.arr.data, b->v.arr.data, (size_t)a->v.arr.n * 4) == 0; // f32/i32 here
    case HX_GGUF_INT8:
    case HX_GGUF_INT16:
    case HX_GGUF_INT32:
    case HX_GGUF_INT64: return a->v.i == b->v.i;
    default: return a->v.u == b->v.u;
    }
}

QP_TEST(metadata_should_hold_the_llama_and_tokenizer_keys_llama_cpp_writes) {
    char *path = synth_tiny("k.gguf", 1, KN_F16, 0, 2);
    struct hx_gguf *g = open_ok(path);
    struct hx_gguf *ref = open_ok(qpt_fixture(STORIES_F32));
    struct hx_gguf *voc = open_ok(qpt_fixture(VOCAB_GGUF));

    // Every llama.* and tokenizer.* key of llama.cpp's own conversion, with the same value
    // type. Token ids of 0xFFFFFFFF there mean "no such token" (llama.cpp warns and ignores
    // them); the Hugging Face converter and this vocabulary leave them out.
    int checked = 0;
    for (int64_t i = 0; i < hx_gguf_n_kv(ref); i++) {
        const struct hx_gguf_kv *kv = hx_gguf_kv(ref, i);
        if (strncmp(kv->key, "llama.", 6) != 0 && strncmp(kv->key, "tokenizer.", 10) != 0)
            continue;
        if (kv->val.type == HX_GGUF_UINT32 && kv->val.v.u == UINT32_MAX) continue;
        const struct hx_gguf_kv *mine = hx_gguf_find(g, kv->key);
        QP_CHECK_MSG(mine != NULL, "key '%s' missing", kv->key);
        QP_CHECK_MSG(mine->val.type == kv->val.type, "key '%s' has type %d, llama.cpp %d",
                     kv->key, mine->val.type, kv->val.type);
        if (kv->val.type == HX_GGUF_ARRAY)
            QP_CHECK_MSG(mine->val.v.arr.type == kv->val.v.arr.type, "key '%s' element type",
                         kv->key);
        checked++;
    }
    QP_CHECK_INT_EQ(checked, 15);
    // The vocabulary's tokenizer keys, copied value for value.
    for (int64_t i = 0; i < hx_gguf_n_kv(voc); i++) {
        const struct hx_gguf_kv *kv = hx_gguf_kv(voc, i);
        if (strncmp(kv->key, "tokenizer.", 10) != 0) continue;
        const struct hx_gguf_kv *mine = hx_gguf_find(g, kv->key);
        QP_CHECK_MSG(mine && value_equal(&mine->val, &kv->val), "key '%s' differs", kv->key);
    }
    // The general keys and the hyperparameters.
    const char *s;
    size_t len;
    QP_CHECK(hx_gguf_get_str(g, "general.architecture", &s, &len) == 0 && len == 5 &&
             memcmp(s, "llama", 5) == 0);
    QP_CHECK(hx_gguf_get_str(g, "general.name", &s, &len) == 0 && len > 0);
    int64_t v;
    QP_CHECK(hx_gguf_get_int(g, "general.file_type", &v) == 0 && v == 1); // mostly f16
    QP_CHECK(hx_gguf_get_int(g, "llama.vocab_size", &v) == 0 && v == 32000);
    QP_CHECK(hx_gguf_get_int(g, "llama.rope.dimension_count", &v) == 0 && v == 16);
    QP_CHECK(hx_gguf_get_int(g, "llama.context_length", &v) == 0 && v == 512);
    double f;
    QP_CHECK(hx_gguf_get_float(g, "llama.rope.freq_base", &f) == 0 && f == 10000.0);
    QP_CHECK(hx_gguf_get_int(g, "qprobe.synth.seed", &v) == 0 && v == 1);
    QP_CHECK(hx_gguf_get_str(g, "qprobe.synth.shape", &s, &len) == 0 && len == 9 &&
             memcmp(s, "test-tiny", 9) == 0);

    // Tensors: llama.cpp's names; test-tiny's layers have stories260K's shapes (dim 64,
    // ffn 172, kv width 32), so every tensor of its first two layers matches exactly.
    QP_CHECK_INT_EQ(hx_gguf_n_tensors(g), 3 + 9 * 2);
    int matched = 0;
    for (int64_t i = 0; i < hx_gguf_n_tensors(ref); i++) {
        const struct hx_gguf_tensor *rt = hx_gguf_tensor(ref, i);
        int layer = -1;
        if (sscanf(rt->name, "blk.%d.", &layer) == 1 && layer >= 2) continue;
        const struct hx_gguf_tensor *t = hx_gguf_find_tensor(g, rt->name);
        QP_CHECK_MSG(t != NULL, "tensor '%s' missing", rt->name);
        QP_CHECK_INT_EQ(t->n_dims, rt->n_dims);
        QP_CHECK_INT_EQ(t->ne[0], rt->ne[0]);
        if (layer >= 0) QP_CHECK_INT_EQ(t->ne[1], rt->ne[1]);
        else if (t->n_dims == 2) QP_CHECK_INT_EQ(t->ne[1], 32000);
        QP_CHECK_INT_EQ(t->type, t->n_dims == 1 ? KN_F32 : KN_F16);
        matched++;
    }
    QP_CHECK_INT_EQ(matched, 21);
    hx_gguf_close(voc);
    hx_gguf_close(ref);
    hx_gguf_close(g);
    free(path);
}

// ---------------------------------------------------------------------------------------------
// The streaming writer

QP_TEST(stream_should_copy_a_real_file_byte_for_byte_from_pieces) {
    const char *src = qpt_fixture(STORIES_F32);
    struct hx_gguf *g = open_ok(src);
    int64_t nt = hx_gguf_n_tensors(g), nkv = hx_gguf_n_kv(g);
    struct hx_gguf_kv *kvs = calloc((size_t)nkv, sizeof *kvs);
    struct hx_gguf_stream_tensor *ts = calloc((size_t)nt, sizeof *ts);
    QP_CHECK(kvs && ts);
    for (int64_t i = 0; i < nkv; i++) kvs[i] = *hx_gguf_kv(g, i);
    for (int64_t i = 0; i < nt; i++) {
        const struct hx_gguf_tensor *t = hx_gguf_tensor(g, i);
        ts[i] = (struct hx_gguf_stream_tensor){.name = t->name, .type = t->type,
                                               .n_dims = t->n_dims};
        memcpy(ts[i].ne, t->ne, sizeof t->ne);
    }
    char *path = tmp_path("copy.gguf");
    char err[QP_ERRLEN] = "";
    struct hx_gguf_stream *st;
    QP_CHECK_MSG(hx_gguf_stream_open(path, kvs, nkv, ts, nt, &st, err) == 0, "%s", err);
    // The data in pieces of 1000 bytes, which end inside tensors and span several.
    uint64_t total = 0;
    for (int64_t i = 0; i < nt; i++) total += hx_gguf_tensor(g, i)->nbytes;
    QP_CHECK_INT_EQ(hx_gguf_stream_data_bytes(st), total);
    uint8_t *data = malloc(total);
    QP_CHECK(data != NULL);
    uint64_t at = 0;
    for (int64_t i = 0; i < nt; i++) {
        const struct hx_gguf_tensor *t = hx_gguf_tensor(g, i);
        memcpy(data + at, t->data, t->nbytes);
        at += t->nbytes;
    }
    for (uint64_t off = 0; off < total; off += 1000) {
        size_t n = (size_t)QP_MIN((uint64_t)1000, total - off);
        QP_CHECK_MSG(hx_gguf_stream_write(st, data + off, n, err) == 0, "%s", err);
    }
    QP_CHECK_INT_EQ(count_entries(qpt_tmpdir(), ".tmp."), 1); // not in place until finished
    QP_CHECK_MSG(hx_gguf_stream_finish(st, err) == 0, "%s", err);
    QP_CHECK(files_equal(src, path));
    QP_CHECK_INT_EQ(count_entries(qpt_tmpdir(), ".tmp."), 0);
    free(data);
    free(kvs);
    free(ts);
    free(path);
    hx_gguf_close(g);
}

QP_TEST(stream_should_refuse_missing_or_extra_data_and_leave_no_file) {
    struct hx_gguf_kv kv = {.key = "general.architecture", .val.type = HX_GGUF_STRING};
    kv.val.v.str.ptr = "llama";
    kv.val.v.str.len = 5;
    struct hx_gguf_stream_tensor t = {.name = "t", .type = KN_F32, .n_dims = 1, .ne = {3, 1, 1, 1}};
    char *path = tmp_path("s.gguf");
    char err[QP_ERRLEN] = "";
    float x[4] = {1, 2, 3, 4};
    struct hx_gguf_stream *st;

    // Too few bytes: finish fails, names the tensor, removes the temporary file.
    QP_CHECK(hx_gguf_stream_open(path, &kv, 1, &t, 1, &st, err) == 0);
    QP_CHECK(hx_gguf_stream_write(st, x, 8, err) == 0);
    QP_CHECK_INT_EQ(hx_gguf_stream_finish(st, err), QP_EINVAL);
    QP_CHECK_MSG(strstr(err, "'t'") && strstr(err, path), "%s", err);
    QP_CHECK(qpt_read_file(path, NULL) == NULL);
    QP_CHECK_INT_EQ(count_entries(qpt_tmpdir(), ".tmp."), 0);

    // Too many bytes: the write fails; abort removes the temporary file.
    QP_CHECK(hx_gguf_stream_open(path, &kv, 1, &t, 1, &st, err) == 0);
    QP_CHECK_INT_EQ(hx_gguf_stream_write(st, x, 16, err), QP_EINVAL);
    hx_gguf_stream_abort(st);
    QP_CHECK(qpt_read_file(path, NULL) == NULL);
    QP_CHECK_INT_EQ(count_entries(qpt_tmpdir(), ".tmp."), 0);

    // Bad shapes and duplicate names are refused before any file exists.
    struct hx_gguf_stream_tensor bad[2] = {t, t};
    st = (struct hx_gguf_stream *)&err; // must be reset to NULL
    QP_CHECK_INT_EQ(hx_gguf_stream_open(path, &kv, 1, bad, 2, &st, err), QP_EINVAL);
    QP_CHECK(st == NULL && strstr(err, "duplicate"));
    bad[1].name = "u";
    bad[1].ne[0] = 0;
    QP_CHECK_INT_EQ(hx_gguf_stream_open(path, &kv, 1, bad, 2, &st, err), QP_EINVAL);
    bad[1].ne[0] = 3;
    bad[1].type = 12345;
    QP_CHECK_INT_EQ(hx_gguf_stream_open(path, &kv, 1, bad, 2, &st, err), QP_EINVAL);
    QP_CHECK_INT_EQ(count_entries(qpt_tmpdir(), ".tmp."), 0);

    // An unwritable place.
    char *nodir = tmp_path("no/such/dir/s.gguf");
    QP_CHECK_INT_EQ(hx_gguf_stream_open(nodir, &kv, 1, &t, 1, &st, err), QP_EIO);
    QP_CHECK(st == NULL && strncmp(err, "cannot write '", 14) == 0 && strstr(err, nodir));
    free(nodir);
    free(path);
}

// ---------------------------------------------------------------------------------------------
// The command

QP_TEST(synth_command_should_refuse_bad_arguments_with_exit_2) {
    char args[6000];
    const char *voc = qpt_fixture(VOCAB_GGUF);
    char *out = tmp_path("x.gguf");
    snprintf(args, sizeof args, "--shape no-such-shape -o '%s' --vocab '%s'", out, voc);
    expect_usage_error(args, "unknown shape 'no-such-shape'");
    static const char *seeds[] = {"-1", "abc", "18446744073709551616", "12x", "", "0x", " 5"};
    for (size_t i = 0; i < QP_ARRAY_LEN(seeds); i++) {
        snprintf(args, sizeof args, "--shape test-tiny --seed '%s' -o '%s' --vocab '%s'",
                 seeds[i], out, voc);
        expect_usage_error(args, "--seed");
    }
    snprintf(args, sizeof args, "--shape test-tiny -o '%s/no/such/dir/x.gguf' --vocab '%s'",
             qpt_tmpdir(), voc);
    expect_usage_error(args, "cannot write");
    snprintf(args, sizeof args, "--shape test-tiny -o '%s' --vocab '%s'", qpt_tmpdir(), voc);
    expect_usage_error(args, "is a directory");
    snprintf(args, sizeof args, "--shape test-tiny -o '%s' --type q4_0 --vocab '%s'", out, voc);
    expect_usage_error(args, "--type");
    snprintf(args, sizeof args, "--shape test-tiny -o '%s' --layers 0 --vocab '%s'", out, voc);
    expect_usage_error(args, "--layers");
    snprintf(args, sizeof args, "--shape test-tiny -o '%s' --vocab '%s'", out,
             qpt_fixture(STORIES_F32));
    expect_usage_error(args, "512 tokens");
    snprintf(args, sizeof args, "--shape test-tiny -o '%s' --vocab '%s/none.gguf'", out,
             qpt_tmpdir());
    expect_usage_error(args, "none.gguf");
    expect_usage_error("--shape test-tiny", "no output");
    expect_usage_error("-o x.gguf", "no shape");
    expect_usage_error("--bogus", "--bogus");
    QP_CHECK(qpt_read_file(out, NULL) == NULL);
    QP_CHECK_INT_EQ(count_entries(qpt_tmpdir(), ".tmp."), 0);
    free(out);
}

QP_TEST(synth_command_should_fail_cleanly_when_the_disk_is_full) {
    // A file-size limit makes write() fail with EFBIG (SIGXFSZ ignored) part-way through, as
    // a full disk does with ENOSPC: one-line error, exit 3 (a runtime failure; it was 2 before the
    // exit statuses of harness/cli/hx_exit.c), no output and no temporary file.
    char *out = tmp_path("full.gguf");
    char cmd[8192];
    snprintf(cmd, sizeof cmd,
             "trap '' XFSZ; ulimit -f 4096; '%s' synth --shape test-tiny -o '%s' --vocab '%s' "
             "2>&1 >/dev/null",
             qpt_qprobe(), out, qpt_fixture(VOCAB_GGUF));
    char *msg = NULL;
    int rc = qpt_run(cmd, &msg);
    QP_CHECK_MSG(rc == 3, "exit %d: %s", rc, msg ? msg : "");
    QP_CHECK_MSG(msg && strstr(msg, "cannot write '") && strchr(msg, '\n') == msg + strlen(msg) - 1,
                 "%s", msg);
    QP_CHECK(qpt_read_file(out, NULL) == NULL);
    QP_CHECK_INT_EQ(count_entries(qpt_tmpdir(), ".tmp."), 0);
    free(msg);
    free(out);
}

QP_TEST(synth_command_should_list_its_shapes) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' synth --list-shapes", qpt_qprobe());
    char *out = NULL;
    QP_CHECK_INT_EQ(qpt_run(cmd, &out), 0);
    int n;
    const struct hx_synth_shape *s = hx_synth_shapes(&n);
    QP_CHECK_INT_EQ(n, 14); // 4 Llama 2 shapes, 6 of the newer families, 4 small test models (--arch)
    for (int i = 0; i < n; i++) QP_CHECK_MSG(strstr(out, s[i].name), "'%s' not listed", s[i].name);
    const struct hx_synth_shape *g2 = hx_synth_shape_find("gemma-2-2b"), *q5 = hx_synth_shape_find("qwen2.5-0.5b");
    QP_CHECK(g2 && g2->arch == KN_ARCH_GEMMA2 && g2->dim == 2304 && g2->head_size == 256 && g2->n_layers == 26 &&
             g2->vocab_size == 256000 && g2->tied);
    QP_CHECK(q5 && q5->arch == KN_ARCH_QWEN2 && q5->dim == 896 && q5->n_heads == 14 && q5->n_kv_heads == 2 &&
             q5->vocab_size == 151936);
    QP_CHECK(hx_synth_arch_shape("phi3") == hx_synth_shape_find("phi3-tiny") && !hx_synth_arch_shape("mpt"));
    const struct hx_synth_shape *tl = hx_synth_shape_find("tinyllama-1.1b");
    QP_CHECK(tl && tl->dim == 2048 && tl->hidden_dim == 5632 && tl->n_layers == 22 &&
             tl->n_heads == 32 && tl->n_kv_heads == 4 && tl->seq_len == 2048);
    const struct hx_synth_shape *l7 = hx_synth_shape_find("llama-7b-block");
    QP_CHECK(l7 && l7->dim == 4096 && l7->hidden_dim == 11008 && l7->n_layers == 2 &&
             l7->n_heads == 32 && l7->n_kv_heads == 32 && l7->seq_len == 4096);
    const struct hx_synth_shape *f7 = hx_synth_shape_find("llama-2-7b"); // the whole model (issue 18's 7B check)
    QP_CHECK(f7 && f7->dim == 4096 && f7->hidden_dim == 11008 && f7->n_layers == 32 && f7->n_kv_heads == 32);
    free(out);
    snprintf(cmd, sizeof cmd, "'%s' synth --help", qpt_qprobe());
    QP_CHECK_INT_EQ(qpt_run(cmd, &out), 0);
    QP_CHECK(strstr(out, "tinyllama-1.1b") && strstr(out, "--seed"));
    free(out);
}

QP_TEST(synth_model_should_run_ppl_and_generate_end_to_end) {
    char *model = tmp_path("e2e.gguf");
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "'%s' synth --shape test-tiny --seed 9 -o '%s' --vocab '%s' --json",
             qpt_qprobe(), model, qpt_fixture(VOCAB_GGUF));
    char *out = NULL;
    QP_CHECK_INT_EQ(qpt_run(cmd, &out), 0);
    QP_CHECK_INT_EQ((int)qpt_json_num(out, "layers"), 2);
    int want[HX_SYNTH_N_OUTLIERS];
    hx_synth_outliers(9, 64, want);
    char chans[128];
    snprintf(chans, sizeof chans, "\"outlier_channels\":[%d,%d,%d,%d]", want[0], want[1],
             want[2], want[3]);
    QP_CHECK_MSG(strstr(out, chans), "'%s' not in %s", chans, out);
    free(out);
    // The same bytes as the API writes.
    char *api = synth_tiny("api.gguf", 9, KN_F32, 0, 1);
    QP_CHECK(files_equal(model, api));
    free(api);

    snprintf(cmd, sizeof cmd, "'%s' ppl -m '%s' -f '%s' --chunks 1 --ctx 128 --json", qpt_qprobe(),
             model, qpt_text_prefix(4000));
    QP_CHECK_INT_EQ(qpt_run(cmd, &out), 0);
    double ppl = qpt_json_num(out, "ppl");
    // A random model: perplexity finite and of the order of the vocabulary.
    QP_CHECK_MSG(isfinite(ppl) && ppl > 100 && ppl < 1e6, "ppl %g", ppl);
    QP_CHECK_INT_EQ((int)qpt_json_num(out, "tokens_scored"), 63);
    free(out);
    snprintf(cmd, sizeof cmd, "'%s' generate -m '%s' -p 'Once upon a time' -n 24 2>/dev/null",
             qpt_qprobe(), model);
    QP_CHECK_INT_EQ(qpt_run(cmd, &out), 0);
    QP_CHECK(strncmp(out, "Once upon a time", 16) == 0);
    free(out);
    free(model);
}

QP_TEST(synth_command_should_stop_on_sigterm_and_leave_no_file) {
    // A 2.2 GB model, signalled as soon as its temporary file exists (long before it can be
    // complete): exit 130, no output, no temporary file. (Should the process end early, the
    // loop ends with it and its status fails the check.)
    char *out = tmp_path("big.gguf");
    char cmd[8192];
    snprintf(cmd, sizeof cmd,
             "'%s' synth --shape tinyllama-1.1b --type f16 -o '%s' --vocab '%s' 2>/dev/null & "
             "pid=$!; while kill -0 $pid 2>/dev/null && ! ls '%s' | grep -q '[.]tmp[.]'; do "
             "sleep 0.02; done; "
             "kill -TERM $pid; wait $pid; echo $?",
             qpt_qprobe(), out, qpt_fixture(VOCAB_GGUF), qpt_tmpdir());
    char *res = NULL;
    QP_CHECK_INT_EQ(qpt_run(cmd, &res), 0);
    QP_CHECK_MSG(res && atoi(res) == 130, "exit status %s", res ? res : "?");
    QP_CHECK(qpt_read_file(out, NULL) == NULL);
    QP_CHECK_INT_EQ(count_entries(qpt_tmpdir(), ".tmp."), 0);
    free(res);
    free(out);
}

// The real shapes of the byte-level BPE families carry their real vocabulary: a synthesized
// Qwen2.5-0.5B (Qwen3's tokenizer.json, 151643 + added tokens, padded to the 151936 embedding rows)
// tokenizes text -- special tokens, UTF-8, digits and runs of spaces included -- exactly as the
// tokenizer.json itself does, and the padded rows are "[PAD<id>]" tokens as llama.cpp's converter
// writes them. One layer keeps the model at 0.3 GB. (Llama-3.2-1B and the Llama-3-8B block take
// Llama 3's tokenizer.json through the same conversion: checked here by the shape table; their
// files, 0.65 GB and more with one layer, are too large for a unit test. docs/SYNTH.md has the
// manual comparison with llama-tokenize.)
QP_TEST(real_bpe_shapes_should_tokenize_with_their_familys_tokenizer_json) {
    static const struct {
        const char *shape, *tok;
        int rows;
    } s[] = {{"qwen2.5-0.5b", "models/tokenizers/qwen3/tokenizer.json", 151936}};
    static const char *const llama3[] = {"llama-3.2-1b", "llama-3-8b-block"};
    for (size_t i = 0; i < sizeof llama3 / sizeof llama3[0]; i++) {
        const struct hx_synth_shape *sh = hx_synth_shape_find(llama3[i]);
        QP_CHECK(sh && strcmp(sh->vocab, "models/tokenizers/llama3/tokenizer.json") == 0 && sh->vocab_size == 128256);
    }
    QP_CHECK(strcmp(hx_synth_shape_find("qwen2.5-1.5b")->vocab, s[0].tok) == 0);
    // A tokenizer.json larger than the shape's rows: one line naming both counts, exit 2, no file.
    char *small = tmp_path("small.gguf"), bad[9000], *msg = NULL;
    snprintf(bad, sizeof bad, "'%s' synth --shape test-tiny --vocab '%s' -o '%s' 2>&1 >/dev/null", qpt_qprobe(),
             qpt_fixture(s[0].tok), small);
    QP_CHECK_INT_EQ(qpt_run(bad, &msg), 2);
    QP_CHECK_MSG(msg && strstr(msg, "the tokenizer has 151669 tokens, the model 32000") && access(small, F_OK) != 0,
                 "%s", msg ? msg : "");
    free(msg);
    free(small);
    char text[4200];
    snprintf(text, sizeof text, "%s", qpt_text_prefix(3000));
    FILE *f = fopen(text, "ab");
    QP_CHECK(f != NULL);
    fputs("\nSpecial <|endoftext|> \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xc3\xbc" "ber caf\xc3\xa9 12345 \t   spaces\n", f);
    fclose(f);
    for (size_t i = 0; i < sizeof s / sizeof s[0]; i++) {
        const char *tok = qpt_fixture(s[i].tok);
        char *model = tmp_path("real.gguf"), cmd[16384], *by_model = NULL, *by_json = NULL;
        snprintf(cmd, sizeof cmd, "QPROBE_FIXTURES='%s' '%s' synth --shape %s --layers 1 --type f16 -t 2 -o '%s' >/dev/null 2>&1",
                 getenv("QP_FIXTURES") ? getenv("QP_FIXTURES") : "../shared/fixtures", qpt_qprobe(), s[i].shape, model);
        QP_CHECK_MSG(qpt_run(cmd, NULL) == 0, "%s", cmd);
        for (int special = 0; special < 2; special++) {
            const char *ps = special ? "--parse-special" : "";
            snprintf(cmd, sizeof cmd, "'%s' tokenize -m '%s' --text '%s' --ids %s", qpt_qprobe(), model, text, ps);
            QP_CHECK_INT_EQ(qpt_run(cmd, &by_model), 0);
            snprintf(cmd, sizeof cmd, "'%s' tokenize -z '%s' --text '%s' --ids %s", qpt_qprobe(), tok, text, ps);
            QP_CHECK_INT_EQ(qpt_run(cmd, &by_json), 0);
            QP_CHECK_MSG(strlen(by_model) > 500 && strcmp(by_model, by_json) == 0, "%s: the model's vocabulary "
                         "tokenizes otherwise than %s:\n%.300s\n%.300s", s[i].shape, tok, by_model, by_json);
            free(by_model);
            free(by_json);
        }
        // The vocabulary as stored: the model's rows, the padded ones "[PAD<id>]".
        char err[QP_ERRLEN];
        struct hx_gguf *g;
        QP_CHECK_MSG(hx_gguf_open(model, &g, err) == 0, "%s", err);
        const struct hx_gguf_kv *toks = hx_gguf_find(g, "tokenizer.ggml.tokens");
        const char *pre;
        size_t len;
        QP_CHECK(toks && toks->val.v.arr.n == (uint64_t)s[i].rows);
        QP_CHECK(hx_gguf_get_str(g, "tokenizer.ggml.model", &pre, &len) == 0 && len == 4 && !memcmp(pre, "gpt2", 4));
        const struct hx_gguf_value *last = &toks->val.v.arr.items[s[i].rows - 1];
        char want[32];
        snprintf(want, sizeof want, "[PAD%d]", s[i].rows - 1);
        QP_CHECK_MSG(last->v.str.len == strlen(want) && !memcmp(last->v.str.ptr, want, strlen(want)), "%.*s",
                     (int)last->v.str.len, last->v.str.ptr);
        hx_gguf_close(g);
        free(model);
    }
}
