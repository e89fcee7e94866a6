// test_gguf.c — the GGUF reader and writer (harness/io/hx_gguf.c) and the GGUF model loader/writer
// (harness/io/hx_gguf_model.c): real files written by llama.cpp and gguf-py, writer round trips of
// every value type and of aligned tensors, one case per kind of malformed file (built here
// byte by byte, each expecting its error code and a message naming the file), and the
// llama.cpp-compatible model round trip on stories260K.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hx_gguf.h"
#include "hx_gguf_model.h"
#include "kn_blocks.h"
#include "hx_model.h"
#include "hx_model_load.h"
#include "hx_tokenizer.h"
#include "kn_types.h"
#include "qp.h"
#include "qp_test.h"

#define STORIES_F32 "golden/ppl/stories260K-F32.gguf"
#define STORIES_F16 "golden/ppl/stories260K-F16.gguf"
#define STORIES_BIN "models/llama2c/stories260K.bin"
#define VOCAB_GGUF "models/gguf/ggml-vocab-llama-spm.gguf"
#define SYNTH_Q4K "golden/quant/synth256-Q4_K.gguf"

// ---------------------------------------------------------------------------------------------
// Helpers

static char *dup_str(const char *s) {
    char *d = strdup(s);
    QP_CHECK(d != NULL);
    return d;
}

static char *tmp_path(const char *name) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s/%s", qpt_tmpdir(), name);
    return dup_str(buf);
}

static struct hx_gguf *open_ok(const char *path) {
    char err[QP_ERRLEN] = "";
    struct hx_gguf *g = NULL;
    int rc = hx_gguf_open(path, &g, err);
    QP_CHECK_MSG(rc == 0, "open '%s' failed (%d): %s", path, rc, err);
    QP_CHECK(g != NULL);
    return g;
}

static int64_t get_int(const struct hx_gguf *g, const char *key) {
    int64_t v = -1;
    QP_CHECK_MSG(hx_gguf_get_int(g, key, &v) == 0, "no integer key '%s'", key);
    return v;
}

static int str_is(const char *s, uint64_t len, const char *want) {
    return len == strlen(want) && memcmp(s, want, len) == 0;
}

static int64_t arr_i32(const struct hx_gguf_value *v, uint64_t i) {
    int32_t x;
    memcpy(&x, v->v.arr.data + 4 * i, 4);
    return x;
}

static float arr_f32(const struct hx_gguf_value *v, uint64_t i) {
    float x;
    memcpy(&x, v->v.arr.data + 4 * i, 4);
    return x;
}

// A little-endian byte builder for hand-made (malformed) files.
struct bb {
    uint8_t p[8192];
    size_t n;
};

static void bb_raw(struct bb *b, const void *s, size_t n) {
    QP_CHECK(b->n + n <= sizeof b->p);
    memcpy(b->p + b->n, s, n);
    b->n += n;
}

static void bb_u32(struct bb *b, uint32_t v) {
    uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    bb_raw(b, x, 4);
}

static void bb_u64(struct bb *b, uint64_t v) {
    bb_u32(b, (uint32_t)v);
    bb_u32(b, (uint32_t)(v >> 32));
}

static void bb_str(struct bb *b, const char *s) {
    bb_u64(b, strlen(s));
    bb_raw(b, s, strlen(s));
}

static void bb_header(struct bb *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    bb_raw(b, "GGUF", 4);
    bb_u32(b, version);
    bb_u64(b, n_tensors);
    bb_u64(b, n_kv);
}

static void bb_kv_u32(struct bb *b, const char *key, uint32_t v) {
    bb_str(b, key);
    bb_u32(b, HX_GGUF_UINT32);
    bb_u32(b, v);
}

// A tensor info with explicit dims.
static void bb_tensor(struct bb *b, const char *name, uint32_t n_dims, const uint64_t *ne,
                      uint32_t type, uint64_t offset) {
    bb_str(b, name);
    bb_u32(b, n_dims);
    for (uint32_t d = 0; d < n_dims; d++) bb_u64(b, ne[d]);
    bb_u32(b, type);
    bb_u64(b, offset);
}

// Pads to the default alignment (32) and appends n data bytes.
static void bb_data(struct bb *b, size_t n) {
    while (b->n % 32) bb_raw(b, "", 1);
    for (size_t i = 0; i < n; i++) bb_raw(b, "\x5a", 1);
}

static char *write_bytes(const char *name, const void *p, size_t n) {
    char *path = tmp_path(name);
    FILE *f = fopen(path, "wb");
    QP_CHECK(f != NULL);
    QP_CHECK(n == 0 || fwrite(p, 1, n, f) == n);
    QP_CHECK(fclose(f) == 0);
    return path;
}

// Opens the file, expecting failure with code and a message naming the file.
static void expect_fail_path(const char *path, int code, const char *needle) {
    char err[QP_ERRLEN] = "";
    struct hx_gguf *g = (struct hx_gguf *)&err; // must be reset to NULL
    int rc = hx_gguf_open(path, &g, err);
    QP_CHECK_MSG(rc == code, "'%s': expected %d (%s), got %d: %s", path, code,
                 qp_strerror(code), rc, err);
    QP_CHECK(g == NULL);
    QP_CHECK_MSG(strstr(err, path) != NULL, "message does not name the file: %s", err);
    QP_CHECK_MSG(strncmp(err, "cannot read '", 13) == 0, "message style: %s", err);
    QP_CHECK_MSG(strchr(err, '\n') == NULL, "message is not one line: %s", err);
    if (needle) QP_CHECK_MSG(strstr(err, needle) != NULL, "'%s' not in message: %s", needle, err);
}

static void expect_fail(const struct bb *b, int code, const char *needle) {
    char *path = write_bytes("bad.gguf", b->p, b->n);
    expect_fail_path(path, code, needle);
    free(path);
}

// A valid one-tensor file: the F32 vector (1, 2, 3, 4) called "t".
static void bb_valid_one_tensor(struct bb *b, uint32_t n_dims, const uint64_t *ne, uint32_t type,
                                uint64_t offset, size_t data_bytes) {
    bb_header(b, 3, 1, 1);
    bb_kv_u32(b, "general.x", 7);
    bb_tensor(b, "t", n_dims, ne, type, offset);
    bb_data(b, data_bytes);
}

// Reads a whole fixture.
static uint8_t *read_all(const char *path, size_t *len) {
    uint8_t *p = (uint8_t *)qpt_read_file(path, len);
    QP_CHECK_MSG(p != NULL, "cannot read '%s'", path);
    return p;
}

// ---------------------------------------------------------------------------------------------
// Reading real files

QP_TEST(vocab_gguf_should_read_header_and_scalar_keys) {
    struct hx_gguf *g = open_ok(qpt_fixture(VOCAB_GGUF));
    QP_CHECK_INT_EQ(hx_gguf_version(g), 3);
    QP_CHECK_INT_EQ(hx_gguf_n_kv(g), 22);
    QP_CHECK_INT_EQ(hx_gguf_n_tensors(g), 0);
    QP_CHECK_INT_EQ(hx_gguf_alignment(g), 32);
    QP_CHECK_STR_EQ(hx_gguf_kv(g, 0)->key, "general.architecture");
    QP_CHECK_STR_EQ(hx_gguf_kv(g, 21)->key, "tokenizer.ggml.add_eos_token");
    QP_CHECK(hx_gguf_kv(g, 22) == NULL && hx_gguf_kv(g, -1) == NULL);
    QP_CHECK(hx_gguf_tensor(g, 0) == NULL);

    QP_CHECK_INT_EQ(get_int(g, "llama.block_count"), 32);
    QP_CHECK_INT_EQ(get_int(g, "llama.embedding_length"), 4096);
    QP_CHECK_INT_EQ(get_int(g, "llama.feed_forward_length"), 11008);
    QP_CHECK_INT_EQ(get_int(g, "llama.attention.head_count_kv"), 32);
    QP_CHECK_INT_EQ(get_int(g, "llama.rope.dimension_count"), 128);
    QP_CHECK_INT_EQ(get_int(g, "general.file_type"), 1);
    QP_CHECK_INT_EQ(get_int(g, "tokenizer.ggml.bos_token_id"), 1);
    QP_CHECK_INT_EQ(get_int(g, "tokenizer.ggml.eos_token_id"), 2);
    QP_CHECK_INT_EQ(get_int(g, "tokenizer.ggml.unknown_token_id"), 0);
    QP_CHECK_INT_EQ(hx_gguf_find(g, "llama.block_count")->val.type, HX_GGUF_UINT32);

    double eps = 0;
    QP_CHECK(hx_gguf_get_float(g, "llama.attention.layer_norm_rms_epsilon", &eps) == 0);
    QP_CHECK(eps == (double)1e-5f);
    bool b = false;
    QP_CHECK(hx_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &b) == 0 && b);
    QP_CHECK(hx_gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &b) == 0 && !b);
    const char *s;
    size_t len;
    QP_CHECK(hx_gguf_get_str(g, "general.architecture", &s, &len) == 0 && str_is(s, len, "llama"));
    QP_CHECK(hx_gguf_get_str(g, "tokenizer.ggml.pre", &s, &len) == 0 && str_is(s, len, "default"));

    // Absent keys and types that do not convert.
    int64_t i64;
    QP_CHECK_INT_EQ(hx_gguf_get_int(g, "no.such.key", &i64), QP_ENOENT);
    QP_CHECK_INT_EQ(hx_gguf_get_int(g, "general.architecture", &i64), QP_EFORMAT);
    QP_CHECK_INT_EQ(hx_gguf_get_float(g, "llama.block_count", &eps), QP_EFORMAT);
    QP_CHECK_INT_EQ(hx_gguf_get_bool(g, "llama.block_count", &b), QP_EFORMAT);
    QP_CHECK_INT_EQ(hx_gguf_get_str(g, "tokenizer.ggml.tokens", &s, &len), QP_EFORMAT);
    QP_CHECK(hx_gguf_find(g, "no.such.key") == NULL);
    QP_CHECK(hx_gguf_find_tensor(g, "token_embd.weight") == NULL);
    hx_gguf_close(g);
}

QP_TEST(vocab_gguf_should_read_token_arrays) {
    struct hx_gguf *g = open_ok(qpt_fixture(VOCAB_GGUF));
    const struct hx_gguf_kv *tok = hx_gguf_find(g, "tokenizer.ggml.tokens");
    const struct hx_gguf_kv *sc = hx_gguf_find(g, "tokenizer.ggml.scores");
    const struct hx_gguf_kv *ty = hx_gguf_find(g, "tokenizer.ggml.token_type");
    QP_CHECK(tok && sc && ty);
    QP_CHECK_INT_EQ(tok->val.type, HX_GGUF_ARRAY);
    QP_CHECK_INT_EQ(tok->val.v.arr.type, HX_GGUF_STRING);
    QP_CHECK_INT_EQ(tok->val.v.arr.n, 32000);
    QP_CHECK(tok->val.v.arr.items != NULL);
    QP_CHECK_INT_EQ(sc->val.v.arr.type, HX_GGUF_FLOAT32);
    QP_CHECK_INT_EQ(sc->val.v.arr.n, 32000);
    QP_CHECK(sc->val.v.arr.items == NULL && sc->val.v.arr.data != NULL);
    QP_CHECK_INT_EQ(ty->val.v.arr.type, HX_GGUF_INT32);
    QP_CHECK_INT_EQ(ty->val.v.arr.n, 32000);

    const struct hx_gguf_value *items = tok->val.v.arr.items;
    QP_CHECK(str_is(items[0].v.str.ptr, items[0].v.str.len, "<unk>"));
    QP_CHECK(str_is(items[1].v.str.ptr, items[1].v.str.len, "<s>"));
    QP_CHECK(str_is(items[2].v.str.ptr, items[2].v.str.len, "</s>"));
    QP_CHECK(str_is(items[3].v.str.ptr, items[3].v.str.len, "<0x00>"));
    QP_CHECK_INT_EQ(items[5].type, HX_GGUF_STRING);
    QP_CHECK_INT_EQ(arr_i32(&ty->val, 0), 2); // unknown
    QP_CHECK_INT_EQ(arr_i32(&ty->val, 1), 3); // control
    QP_CHECK_INT_EQ(arr_i32(&ty->val, 3), 6); // byte
    QP_CHECK_INT_EQ(arr_i32(&ty->val, 300), 1); // normal

    // Strings and scores equal llama2.c's tokenizer.bin (spaces stored there for "▁").
    const char *tb = "models/llama2c/tokenizer.bin";
    size_t n;
    uint8_t *d = read_all(qpt_fixture(tb), &n);
    size_t pos = 4;
    for (int i = 0; i < 32000; i++) {
        float score;
        int32_t len;
        QP_CHECK(pos + 8 <= n);
        memcpy(&score, d + pos, 4);
        memcpy(&len, d + pos + 4, 4);
        pos += 8;
        QP_CHECK(len >= 0 && pos + (size_t)len <= n);
        QP_CHECK_MSG(arr_f32(&sc->val, (uint64_t)i) == score, "score of token %d", i);
        if (i >= 3) {
            char want[256];
            size_t wl = 0;
            for (int k = 0; k < len && wl + 3 < sizeof want; k++) {
                if (d[pos + k] == ' ') {
                    memcpy(want + wl, "\xe2\x96\x81", 3);
                    wl += 3;
                } else {
                    want[wl++] = (char)d[pos + k];
                }
            }
            QP_CHECK_MSG(items[i].v.str.len == wl && memcmp(items[i].v.str.ptr, want, wl) == 0,
                         "token %d differs", i);
        }
        pos += (size_t)len;
    }
    free(d);
    hx_gguf_close(g);
}

QP_TEST(stories_gguf_should_list_tensor_infos) {
    struct hx_gguf *g = open_ok(qpt_fixture(STORIES_F32));
    QP_CHECK_INT_EQ(hx_gguf_version(g), 3);
    QP_CHECK_INT_EQ(hx_gguf_n_kv(g), 19);
    QP_CHECK_INT_EQ(hx_gguf_n_tensors(g), 48);
    QP_CHECK_INT_EQ(get_int(g, "llama.context_length"), 512);
    QP_CHECK_INT_EQ(get_int(g, "tokenizer.ggml.padding_token_id"), 4294967295LL);
    static const char *first[] = {"token_embd.weight",        "output_norm.weight",
                                  "output.weight",            "blk.0.attn_q.weight",
                                  "blk.0.attn_k.weight",      "blk.0.attn_v.weight",
                                  "blk.0.attn_output.weight", "blk.0.attn_norm.weight",
                                  "blk.0.ffn_gate.weight",    "blk.0.ffn_down.weight",
                                  "blk.0.ffn_up.weight",      "blk.0.ffn_norm.weight"};
    for (size_t i = 0; i < QP_ARRAY_LEN(first); i++)
        QP_CHECK_STR_EQ(hx_gguf_tensor(g, (int64_t)i)->name, first[i]);
    const struct hx_gguf_tensor *t = hx_gguf_find_tensor(g, "blk.4.ffn_down.weight");
    QP_CHECK(t != NULL);
    QP_CHECK_INT_EQ(t->n_dims, 2);
    QP_CHECK_INT_EQ(t->ne[0], 172);
    QP_CHECK_INT_EQ(t->ne[1], 64);
    QP_CHECK_INT_EQ(t->ne[2], 1);
    QP_CHECK_INT_EQ(t->type, KN_F32);
    QP_CHECK_INT_EQ(t->nbytes, 172 * 64 * 4);
    t = hx_gguf_find_tensor(g, "output_norm.weight");
    QP_CHECK_INT_EQ(t->n_dims, 1);
    QP_CHECK_INT_EQ(t->ne[0], 64);
    QP_CHECK_INT_EQ(t->ne[1], 1);
    QP_CHECK_INT_EQ(t->nbytes, 256);
    // Offsets as in manifest.json: data section at 14176, output_norm at +131072.
    const struct hx_gguf_tensor *t0 = hx_gguf_tensor(g, 0);
    QP_CHECK_INT_EQ(t->offset, 131072);
    QP_CHECK_INT_EQ((const uint8_t *)t->data - (const uint8_t *)t0->data, 131072);
    size_t total = 0;
    for (int64_t i = 0; i < hx_gguf_n_tensors(g); i++) total += hx_gguf_tensor(g, i)->nbytes;
    QP_CHECK_INT_EQ(total, 1185376 - 14176);
    hx_gguf_close(g);
}

// The llama2.c checkpoint and llama.cpp's conversion of it hold identical bytes for every
// tensor: no Q/K row permutation between the two layouts.
QP_TEST(stories_gguf_tensors_should_equal_llama2c_checkpoint) {
    size_t n;
    uint8_t *bin = read_all(qpt_fixture(STORIES_BIN), &n);
    struct hx_gguf *g = open_ok(qpt_fixture(STORIES_F32));
    int32_t h[7];
    memcpy(h, bin, sizeof h);
    const size_t dim = (size_t)h[0], hid = (size_t)h[1], L = (size_t)h[2];
    const size_t kv = (size_t)h[4] * (dim / (size_t)h[3]), V = (size_t)h[5];
    const uint8_t *p = bin + 28;
    struct {
        const char *name;
        size_t per_layer; // floats
    } order[] = {{"attn_norm", dim},     {"attn_q", dim * dim},     {"attn_k", kv * dim},
                 {"attn_v", kv * dim},   {"attn_output", dim * dim}, {"ffn_norm", dim},
                 {"ffn_gate", hid * dim}, {"ffn_down", dim * hid},  {"ffn_up", hid * dim}};
    QP_CHECK(memcmp(hx_gguf_find_tensor(g, "token_embd.weight")->data, p, V * dim * 4) == 0);
    QP_CHECK(memcmp(hx_gguf_find_tensor(g, "output.weight")->data, p, V * dim * 4) == 0);
    p += V * dim * 4;
    for (size_t k = 0; k < QP_ARRAY_LEN(order); k++) {
        for (size_t l = 0; l < L; l++) {
            char name[64];
            snprintf(name, sizeof name, "blk.%zu.%s.weight", l, order[k].name);
            const struct hx_gguf_tensor *t = hx_gguf_find_tensor(g, name);
            QP_CHECK(t && t->nbytes == order[k].per_layer * 4);
            QP_CHECK_MSG(memcmp(t->data, p, t->nbytes) == 0, "%s differs", name);
            p += t->nbytes;
        }
    }
    QP_CHECK(memcmp(hx_gguf_find_tensor(g, "output_norm.weight")->data, p, dim * 4) == 0);
    hx_gguf_close(g);
    free(bin);
}

QP_TEST(synth256_q4k_should_give_types_and_sizes) {
    struct hx_gguf *g = open_ok(qpt_fixture(SYNTH_Q4K));
    QP_CHECK_INT_EQ(hx_gguf_n_tensors(g), 21);
    QP_CHECK_INT_EQ(hx_gguf_n_kv(g), 21);
    QP_CHECK_INT_EQ(get_int(g, "general.file_type"), 15);
    QP_CHECK_INT_EQ(get_int(g, "general.quantization_version"), 2);
    QP_CHECK_STR_EQ(hx_gguf_tensor(g, 0)->name, "output.weight");
    QP_CHECK_STR_EQ(hx_gguf_tensor(g, 2)->name, "token_embd.weight");
    QP_CHECK_STR_EQ(hx_gguf_tensor(g, 3)->name, "blk.0.attn_k.weight");
    const struct kn_type_info *q4k = kn_type_info(KN_Q4_K);
    for (int64_t i = 0; i < hx_gguf_n_tensors(g); i++) {
        const struct hx_gguf_tensor *t = hx_gguf_tensor(g, i);
        int norm = strstr(t->name, "norm") != NULL;
        QP_CHECK_INT_EQ(t->type, norm ? KN_F32 : KN_Q4_K);
        QP_CHECK_INT_EQ(t->n_dims, norm ? 1 : 2);
        size_t want = norm ? 4 * (size_t)t->ne[0]
                           : (size_t)(t->ne[0] / q4k->block_size) * q4k->block_bytes *
                                 (size_t)t->ne[1];
        QP_CHECK_INT_EQ(t->nbytes, want);
        QP_CHECK_INT_EQ(t->offset % 32, 0);
    }
    const struct hx_gguf_tensor *t = hx_gguf_find_tensor(g, "blk.1.ffn_down.weight");
    QP_CHECK_INT_EQ(t->ne[0], 768);
    QP_CHECK_INT_EQ(t->ne[1], 256);
    QP_CHECK_INT_EQ(t->nbytes, 110592);
    QP_CHECK_INT_EQ(t->offset, 704512);
    t = hx_gguf_find_tensor(g, "output.weight");
    QP_CHECK_INT_EQ(t->ne[0], 256);
    QP_CHECK_INT_EQ(t->ne[1], 512);
    QP_CHECK_INT_EQ(t->nbytes, 73728);
    hx_gguf_close(g);
}

// ---------------------------------------------------------------------------------------------
// Writer round trips

QP_TEST(writer_should_round_trip_every_value_type) {
    struct hx_gguf_writer *w;
    QP_CHECK(hx_gguf_writer_create(&w) == 0);
    QP_CHECK(hx_gguf_writer_set_u32(w, "k.u32", 4000000000u) == 0);
    QP_CHECK(hx_gguf_writer_set_i32(w, "k.i32", -123456) == 0);
    QP_CHECK(hx_gguf_writer_set_u64(w, "k.u64", 0xfedcba9876543210ull) == 0);
    QP_CHECK(hx_gguf_writer_set_f32(w, "k.f32", 0.1f) == 0);
    QP_CHECK(hx_gguf_writer_set_bool(w, "k.bool", true) == 0);
    QP_CHECK(hx_gguf_writer_set_str(w, "k.str", "h\xc3\xa9llo \xe2\x96\x81") == 0);
    QP_CHECK(hx_gguf_writer_set_str(w, "k.empty", "") == 0);
    // Scalar types without a setter of their own, through set_value.
    struct hx_gguf_value v;
    v = (struct hx_gguf_value){.type = HX_GGUF_UINT8, .v.u = 250};
    QP_CHECK(hx_gguf_writer_set_value(w, "k.u8", &v) == 0);
    v = (struct hx_gguf_value){.type = HX_GGUF_INT8, .v.i = -100};
    QP_CHECK(hx_gguf_writer_set_value(w, "k.i8", &v) == 0);
    v = (struct hx_gguf_value){.type = HX_GGUF_UINT16, .v.u = 65000};
    QP_CHECK(hx_gguf_writer_set_value(w, "k.u16", &v) == 0);
    v = (struct hx_gguf_value){.type = HX_GGUF_INT16, .v.i = -32000};
    QP_CHECK(hx_gguf_writer_set_value(w, "k.i16", &v) == 0);
    v = (struct hx_gguf_value){.type = HX_GGUF_INT64, .v.i = INT64_MIN + 5};
    QP_CHECK(hx_gguf_writer_set_value(w, "k.i64", &v) == 0);
    v = (struct hx_gguf_value){.type = HX_GGUF_FLOAT64, .v.f = -1.0 / 3.0};
    QP_CHECK(hx_gguf_writer_set_value(w, "k.f64", &v) == 0);
    v = (struct hx_gguf_value){.type = HX_GGUF_BOOL, .v.b = false};
    QP_CHECK(hx_gguf_writer_set_value(w, "k.bool2", &v) == 0);

    // Numeric arrays of every type.
    uint8_t u8[3] = {1, 2, 255};
    int8_t i8[3] = {-1, 0, 127};
    uint16_t u16[2] = {7, 65535};
    int16_t i16[2] = {-7, 300};
    uint32_t u32[2] = {1, 0xffffffffu};
    int32_t i32[4] = {-1, 2, -3, 2147483647};
    uint64_t u64[2] = {1, UINT64_MAX};
    int64_t i64[2] = {INT64_MIN, 9};
    float f32[3] = {0.5f, -2.25f, 1e-30f};
    double f64[2] = {3.141592653589793, -0.0};
    uint8_t bools[3] = {1, 0, 1};
    QP_CHECK(hx_gguf_writer_set_arr(w, "a.u8", HX_GGUF_UINT8, u8, 3) == 0);
    QP_CHECK(hx_gguf_writer_set_arr(w, "a.i8", HX_GGUF_INT8, i8, 3) == 0);
    QP_CHECK(hx_gguf_writer_set_arr(w, "a.u16", HX_GGUF_UINT16, u16, 2) == 0);
    QP_CHECK(hx_gguf_writer_set_arr(w, "a.i16", HX_GGUF_INT16, i16, 2) == 0);
    QP_CHECK(hx_gguf_writer_set_arr(w, "a.u32", HX_GGUF_UINT32, u32, 2) == 0);
    QP_CHECK(hx_gguf_writer_set_arr(w, "a.i32", HX_GGUF_INT32, i32, 4) == 0);
    QP_CHECK(hx_gguf_writer_set_arr(w, "a.u64", HX_GGUF_UINT64, u64, 2) == 0);
    QP_CHECK(hx_gguf_writer_set_arr(w, "a.i64", HX_GGUF_INT64, i64, 2) == 0);
    QP_CHECK(hx_gguf_writer_set_arr(w, "a.f32", HX_GGUF_FLOAT32, f32, 3) == 0);
    QP_CHECK(hx_gguf_writer_set_arr(w, "a.f64", HX_GGUF_FLOAT64, f64, 2) == 0);
    QP_CHECK(hx_gguf_writer_set_arr(w, "a.bool", HX_GGUF_BOOL, bools, 3) == 0);
    QP_CHECK(hx_gguf_writer_set_arr(w, "a.empty", HX_GGUF_INT32, NULL, 0) == 0);
    QP_CHECK(hx_gguf_writer_set_arr(w, "a.bad", HX_GGUF_STRING, u8, 1) == QP_EINVAL);
    const char *strs[3] = {"one", "", "thr\0ee"};
    size_t lens[3] = {3, 0, 6};
    QP_CHECK(hx_gguf_writer_set_arr_str(w, "a.str", strs, lens, 3) == 0);

    // An array of arrays: [[1, 2, 3], [], [["x", "yz"]]] — i32, empty i32, array of strings.
    struct hx_gguf_value sv[2] = {
        {.type = HX_GGUF_STRING, .v.str = {"x", 1}},
        {.type = HX_GGUF_STRING, .v.str = {"yz", 2}},
    };
    struct hx_gguf_value inner_s = {.type = HX_GGUF_ARRAY,
                                    .v.arr = {HX_GGUF_STRING, 2, NULL, sv}};
    int32_t nums[3] = {1, 2, 3};
    struct hx_gguf_value outer_items[3] = {
        {.type = HX_GGUF_ARRAY, .v.arr = {HX_GGUF_INT32, 3, (const uint8_t *)nums, NULL}},
        {.type = HX_GGUF_ARRAY, .v.arr = {HX_GGUF_INT32, 0, NULL, NULL}},
        {.type = HX_GGUF_ARRAY, .v.arr = {HX_GGUF_ARRAY, 1, NULL, &inner_s}},
    };
    struct hx_gguf_value nested = {.type = HX_GGUF_ARRAY,
                                   .v.arr = {HX_GGUF_ARRAY, 3, NULL, outer_items}};
    QP_CHECK(hx_gguf_writer_set_value(w, "a.nested", &nested) == 0);
    // Replacing a key keeps its position.
    QP_CHECK(hx_gguf_writer_set_u32(w, "k.i32", 99) == 0);

    char *path = tmp_path("values.gguf");
    char err[QP_ERRLEN] = "";
    QP_CHECK_MSG(hx_gguf_writer_write(w, path, err) == 0, "%s", err);
    hx_gguf_writer_destroy(w);

    struct hx_gguf *g = open_ok(path);
    QP_CHECK_INT_EQ(hx_gguf_version(g), 3);
    QP_CHECK_INT_EQ(hx_gguf_n_kv(g), 28);
    QP_CHECK_INT_EQ(hx_gguf_n_tensors(g), 0);
    QP_CHECK_STR_EQ(hx_gguf_kv(g, 0)->key, "k.u32");
    QP_CHECK_STR_EQ(hx_gguf_kv(g, 1)->key, "k.i32");
    QP_CHECK_INT_EQ(hx_gguf_kv(g, 1)->val.type, HX_GGUF_UINT32);
    QP_CHECK_INT_EQ(get_int(g, "k.i32"), 99);
    QP_CHECK_INT_EQ(get_int(g, "k.u32"), 4000000000LL);
    QP_CHECK(hx_gguf_find(g, "k.u64")->val.v.u == 0xfedcba9876543210ull);
    int64_t tmp;
    QP_CHECK_INT_EQ(hx_gguf_get_int(g, "k.u64", &tmp), QP_EFORMAT); // beyond int64
    QP_CHECK_INT_EQ(get_int(g, "k.u8"), 250);
    QP_CHECK_INT_EQ(get_int(g, "k.i8"), -100);
    QP_CHECK_INT_EQ(get_int(g, "k.u16"), 65000);
    QP_CHECK_INT_EQ(get_int(g, "k.i16"), -32000);
    QP_CHECK_INT_EQ(get_int(g, "k.i64"), INT64_MIN + 5);
    QP_CHECK_INT_EQ(hx_gguf_find(g, "k.i16")->val.type, HX_GGUF_INT16);
    double d;
    QP_CHECK(hx_gguf_get_float(g, "k.f32", &d) == 0 && d == (double)0.1f);
    QP_CHECK(hx_gguf_get_float(g, "k.f64", &d) == 0 && d == -1.0 / 3.0);
    bool b;
    QP_CHECK(hx_gguf_get_bool(g, "k.bool", &b) == 0 && b);
    QP_CHECK(hx_gguf_get_bool(g, "k.bool2", &b) == 0 && !b);
    const char *s;
    size_t len;
    QP_CHECK(hx_gguf_get_str(g, "k.str", &s, &len) == 0 &&
             str_is(s, len, "h\xc3\xa9llo \xe2\x96\x81"));
    QP_CHECK(hx_gguf_get_str(g, "k.empty", &s, &len) == 0 && len == 0);

    struct {
        const char *key;
        enum hx_gguf_type type;
        const void *data;
        size_t n, size;
    } arrs[] = {{"a.u8", HX_GGUF_UINT8, u8, 3, 1},       {"a.i8", HX_GGUF_INT8, i8, 3, 1},
                {"a.u16", HX_GGUF_UINT16, u16, 2, 2},    {"a.i16", HX_GGUF_INT16, i16, 2, 2},
                {"a.u32", HX_GGUF_UINT32, u32, 2, 4},    {"a.i32", HX_GGUF_INT32, i32, 4, 4},
                {"a.u64", HX_GGUF_UINT64, u64, 2, 8},    {"a.i64", HX_GGUF_INT64, i64, 2, 8},
                {"a.f32", HX_GGUF_FLOAT32, f32, 3, 4},   {"a.f64", HX_GGUF_FLOAT64, f64, 2, 8},
                {"a.bool", HX_GGUF_BOOL, bools, 3, 1},   {"a.empty", HX_GGUF_INT32, NULL, 0, 4}};
    for (size_t i = 0; i < QP_ARRAY_LEN(arrs); i++) {
        const struct hx_gguf_kv *kv = hx_gguf_find(g, arrs[i].key);
        QP_CHECK_MSG(kv != NULL, "%s missing", arrs[i].key);
        QP_CHECK_INT_EQ(kv->val.type, HX_GGUF_ARRAY);
        QP_CHECK_INT_EQ(kv->val.v.arr.type, arrs[i].type);
        QP_CHECK_INT_EQ(kv->val.v.arr.n, arrs[i].n);
        QP_CHECK(arrs[i].n == 0 ||
                 memcmp(kv->val.v.arr.data, arrs[i].data, arrs[i].n * arrs[i].size) == 0);
    }
    QP_CHECK(hx_gguf_find(g, "a.bad") == NULL);
    const struct hx_gguf_kv *kv = hx_gguf_find(g, "a.str");
    QP_CHECK_INT_EQ(kv->val.v.arr.n, 3);
    for (int i = 0; i < 3; i++) {
        const struct hx_gguf_value *it = &kv->val.v.arr.items[i];
        QP_CHECK(it->type == HX_GGUF_STRING && it->v.str.len == lens[i] &&
                 memcmp(it->v.str.ptr, strs[i], lens[i]) == 0);
    }
    kv = hx_gguf_find(g, "a.nested");
    QP_CHECK(kv->val.v.arr.type == HX_GGUF_ARRAY && kv->val.v.arr.n == 3);
    const struct hx_gguf_value *o = kv->val.v.arr.items;
    QP_CHECK(o[0].type == HX_GGUF_ARRAY && o[0].v.arr.type == HX_GGUF_INT32 &&
             o[0].v.arr.n == 3);
    QP_CHECK_INT_EQ(arr_i32(&o[0], 2), 3);
    QP_CHECK(o[1].v.arr.type == HX_GGUF_INT32 && o[1].v.arr.n == 0);
    QP_CHECK(o[2].v.arr.type == HX_GGUF_ARRAY && o[2].v.arr.n == 1);
    const struct hx_gguf_value *in = &o[2].v.arr.items[0];
    QP_CHECK(in->v.arr.type == HX_GGUF_STRING && in->v.arr.n == 2);
    QP_CHECK(str_is(in->v.arr.items[1].v.str.ptr, in->v.arr.items[1].v.str.len, "yz"));

    // Copying every value back out through set_value reproduces the file byte for byte.
    QP_CHECK(hx_gguf_writer_create(&w) == 0);
    for (int64_t i = 0; i < hx_gguf_n_kv(g); i++)
        QP_CHECK(hx_gguf_writer_set_value(w, hx_gguf_kv(g, i)->key, &hx_gguf_kv(g, i)->val) == 0);
    char *path2 = tmp_path("values2.gguf");
    QP_CHECK_MSG(hx_gguf_writer_write(w, path2, err) == 0, "%s", err);
    hx_gguf_writer_destroy(w);
    size_t n1, n2;
    char *f1 = qpt_read_file(path, &n1), *f2 = qpt_read_file(path2, &n2);
    QP_CHECK(f1 && f2 && n1 == n2 && memcmp(f1, f2, n1) == 0);
    free(f1);
    free(f2);
    hx_gguf_close(g);
    free(path);
    free(path2);
}

QP_TEST(writer_should_copy_a_real_file_byte_for_byte) {
    // The vocab file has no tensors: copying its KVs in order reproduces it exactly.
    const char *src = qpt_fixture(VOCAB_GGUF);
    struct hx_gguf *g = open_ok(src);
    struct hx_gguf_writer *w;
    QP_CHECK(hx_gguf_writer_create(&w) == 0);
    for (int64_t i = 0; i < hx_gguf_n_kv(g); i++)
        QP_CHECK(hx_gguf_writer_set_value(w, hx_gguf_kv(g, i)->key, &hx_gguf_kv(g, i)->val) == 0);
    char *path = tmp_path("vocab-copy.gguf");
    char err[QP_ERRLEN] = "";
    QP_CHECK_MSG(hx_gguf_writer_write(w, path, err) == 0, "%s", err);
    hx_gguf_writer_destroy(w);
    size_t n1, n2;
    char *f1 = qpt_read_file(src, &n1), *f2 = qpt_read_file(path, &n2);
    QP_CHECK(f1 && f2);
    // The original ends at its last KV; the writer pads to the alignment like ggml does.
    QP_CHECK(n2 >= n1 && n2 - n1 < 32 && memcmp(f1, f2, n1) == 0);
    free(f1);
    free(f2);
    hx_gguf_close(g);

    // A file with tensors: stories260K F32, KVs and tensors copied in order.
    src = qpt_fixture(STORIES_F32);
    g = open_ok(src);
    QP_CHECK(hx_gguf_writer_create(&w) == 0);
    for (int64_t i = 0; i < hx_gguf_n_kv(g); i++)
        QP_CHECK(hx_gguf_writer_set_value(w, hx_gguf_kv(g, i)->key, &hx_gguf_kv(g, i)->val) == 0);
    for (int64_t i = 0; i < hx_gguf_n_tensors(g); i++) {
        const struct hx_gguf_tensor *t = hx_gguf_tensor(g, i);
        QP_CHECK(hx_gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data,
                                           t->nbytes) == 0);
    }
    QP_CHECK_MSG(hx_gguf_writer_write(w, path, err) == 0, "%s", err);
    hx_gguf_writer_destroy(w);
    f1 = qpt_read_file(src, &n1);
    f2 = qpt_read_file(path, &n2);
    QP_CHECK(f1 && f2 && n1 == n2 && memcmp(f1, f2, n1) == 0);
    free(f1);
    free(f2);
    hx_gguf_close(g);
    free(path);
}

QP_TEST(writer_should_honour_alignment_for_tensors) {
    struct hx_gguf_writer *w;
    QP_CHECK(hx_gguf_writer_create(&w) == 0);
    QP_CHECK(hx_gguf_writer_set_str(w, "general.name", "aligned") == 0);
    QP_CHECK(hx_gguf_writer_set_u32(w, "general.alignment", 64) == 0);
    float a[3] = {1, 2, 3};
    uint16_t h[5] = {0x3c00, 0x4000, 0x4200, 0x4400, 0x4500};
    uint8_t q8[2 * sizeof(struct kn_block_q8_0)];
    for (size_t i = 0; i < sizeof q8; i++) q8[i] = (uint8_t)(i * 7);
    float cube[2 * 3 * 4];
    for (int i = 0; i < 24; i++) cube[i] = (float)i;
    int64_t ne_a[1] = {3}, ne_h[2] = {5, 1}, ne_q[2] = {32, 2}, ne_c[3] = {2, 3, 4};
    QP_CHECK(hx_gguf_writer_add_tensor(w, "a", KN_F32, 1, ne_a, a, sizeof a) == 0);
    QP_CHECK(hx_gguf_writer_add_tensor(w, "h", KN_F16, 2, ne_h, h, sizeof h) == 0);
    QP_CHECK(hx_gguf_writer_add_tensor(w, "q", KN_Q8_0, 2, ne_q, q8, sizeof q8) == 0);
    QP_CHECK(hx_gguf_writer_add_tensor(w, "cube", KN_F32, 3, ne_c, cube, sizeof cube) == 0);
    // Rejected: wrong byte count, duplicate name, unknown type, bad rank, partial block.
    QP_CHECK_INT_EQ(hx_gguf_writer_add_tensor(w, "x", KN_F32, 1, ne_a, a, 8), QP_EINVAL);
    QP_CHECK_INT_EQ(hx_gguf_writer_add_tensor(w, "a", KN_F32, 1, ne_a, a, sizeof a), QP_EINVAL);
    QP_CHECK_INT_EQ(hx_gguf_writer_add_tensor(w, "y", 4, 1, ne_a, a, sizeof a), QP_EINVAL);
    QP_CHECK_INT_EQ(hx_gguf_writer_add_tensor(w, "y", KN_F32, 5, ne_c, a, sizeof a), QP_EINVAL);
    QP_CHECK_INT_EQ(hx_gguf_writer_add_tensor(w, "y", KN_Q8_0, 1, ne_a, q8, sizeof(struct kn_block_q8_0)), QP_EINVAL);
    char *path = tmp_path("aligned.gguf");
    char err[QP_ERRLEN] = "";
    QP_CHECK_MSG(hx_gguf_writer_write(w, path, err) == 0, "%s", err);
    hx_gguf_writer_destroy(w);

    struct hx_gguf *g = open_ok(path);
    QP_CHECK_INT_EQ(hx_gguf_alignment(g), 64);
    QP_CHECK_INT_EQ(hx_gguf_n_tensors(g), 4);
    size_t size;
    char *raw = qpt_read_file(path, &size);
    QP_CHECK(raw != NULL);
    for (int64_t i = 0; i < 4; i++) {
        const struct hx_gguf_tensor *t = hx_gguf_tensor(g, i);
        QP_CHECK_INT_EQ(t->offset % 64, 0);
        QP_CHECK_INT_EQ(((const char *)t->data - (const char *)hx_gguf_tensor(g, 0)->data) % 64,
                        0);
    }
    QP_CHECK_INT_EQ(size % 64, 0);
    const struct hx_gguf_tensor *t = hx_gguf_find_tensor(g, "a");
    QP_CHECK(t->n_dims == 1 && t->ne[0] == 3 && t->nbytes == 12 && !memcmp(t->data, a, 12));
    t = hx_gguf_find_tensor(g, "h");
    QP_CHECK(t->type == KN_F16 && t->n_dims == 2 && t->ne[0] == 5 && !memcmp(t->data, h, 10));
    QP_CHECK_INT_EQ(t->offset, 64);
    t = hx_gguf_find_tensor(g, "q");
    QP_CHECK(t->type == KN_Q8_0 && t->ne[1] == 2 && t->nbytes == 68 && !memcmp(t->data, q8, 68));
    QP_CHECK_INT_EQ(t->offset, 128);
    t = hx_gguf_find_tensor(g, "cube");
    QP_CHECK(t->n_dims == 3 && t->ne[2] == 4 && t->ne[3] == 1 && t->nbytes == sizeof cube);
    QP_CHECK(!memcmp(t->data, cube, sizeof cube));
    QP_CHECK_INT_EQ(t->offset, 256);
    free(raw);
    hx_gguf_close(g);

    // A non-power-of-two alignment is refused at write time, and no file is left behind.
    QP_CHECK(hx_gguf_writer_create(&w) == 0);
    QP_CHECK(hx_gguf_writer_set_u32(w, "general.alignment", 48) == 0);
    char *bad = tmp_path("bad-align.gguf");
    QP_CHECK_INT_EQ(hx_gguf_writer_write(w, bad, err), QP_EINVAL);
    QP_CHECK(strstr(err, bad) != NULL);
    hx_gguf_writer_destroy(w);
    FILE *f = fopen(bad, "rb");
    QP_CHECK(f == NULL);
    free(bad);
    free(path);
}

// general.alignment 1, 2 or 4 lets a tensor start where its elements cannot be read in place, and
// the reader refuses such files. The writer's own copies must read back (fuzz_gguf found a q4_K
// tensor placed at file offset 570 with alignment 2): it moves a tensor on by the alignment until
// its file offset suits its type, and no further.
QP_TEST(writer_with_an_alignment_below_8_should_place_tensors_where_the_reader_reads_them) {
    static const int types[] = {KN_I8, KN_F16, KN_Q4_K, KN_Q4_0, KN_F32, KN_Q4_K};
    static const size_t need[] = {1, 2, 8, 2, 4, 8};
    static const int64_t cols[] = {3, 3, 256, 32, 3, 256};
    uint8_t data[6][256];
    for (size_t i = 0; i < sizeof data; i++) ((uint8_t *)data)[i] = (uint8_t)(i * 13 + 5);
    for (uint32_t align = 1; align <= 4; align *= 2) {
        struct hx_gguf_writer *w;
        QP_CHECK(hx_gguf_writer_create(&w) == 0);
        QP_CHECK(hx_gguf_writer_set_u32(w, "general.alignment", align) == 0);
        QP_CHECK(hx_gguf_writer_set_str(w, "general.name", "odd") == 0); // an odd header length
        for (int i = 0; i < 6; i++) {
            char name[16];
            snprintf(name, sizeof name, "t%d", i);
            int64_t ne[1] = {cols[i]};
            QP_CHECK(hx_gguf_writer_add_tensor(w, name, types[i], 1, ne, data[i], kn_row_bytes(types[i], cols[i])) == 0);
        }
        char *path = tmp_path("low-align.gguf");
        char err[QP_ERRLEN] = "";
        QP_CHECK_MSG(hx_gguf_writer_write(w, path, err) == 0, "%s", err);
        hx_gguf_writer_destroy(w);
        struct hx_gguf *g = NULL;
        QP_CHECK_MSG(hx_gguf_open(path, &g, err) == 0, "alignment %u: the copy does not read back: %s", align, err);
        uint64_t end = 0;
        for (int i = 0; i < 6; i++) {
            const struct hx_gguf_tensor *t = hx_gguf_tensor(g, i);
            QP_CHECK(!memcmp(t->data, data[i], t->nbytes));
            QP_CHECK_INT_EQ(t->offset % align, 0);
            QP_CHECK_MSG(((uintptr_t)t->data) % need[i] == 0, "alignment %u: tensor %d at an address not a multiple of %zu",
                         align, i, need[i]);
            // No further than the first place that suits: less than need past the plain one.
            uint64_t plain = end + (align - end % align) % align;
            QP_CHECK_MSG(t->offset >= plain && t->offset - plain < need[i], "alignment %u: tensor %d at %llu, plain %llu",
                         align, i, (unsigned long long)t->offset, (unsigned long long)plain);
            end = t->offset + t->nbytes;
        }
        hx_gguf_close(g);
        free(path);
    }
}

QP_TEST(writer_should_fail_cleanly_on_unwritable_path) {
    struct hx_gguf_writer *w;
    QP_CHECK(hx_gguf_writer_create(&w) == 0);
    QP_CHECK(hx_gguf_writer_set_u32(w, "x", 1) == 0);
    char *path = tmp_path("no/such/dir/out.gguf");
    char err[QP_ERRLEN] = "";
    QP_CHECK_INT_EQ(hx_gguf_writer_write(w, path, err), QP_EIO);
    QP_CHECK(strstr(err, path) != NULL && strncmp(err, "cannot write '", 14) == 0);
    hx_gguf_writer_destroy(w);
    free(path);
}

// ---------------------------------------------------------------------------------------------
// Malformed files

QP_TEST(open_should_fail_on_missing_file) {
    char *path = tmp_path("does-not-exist.gguf");
    expect_fail_path(path, QP_ENOENT, NULL);
    free(path);
}

QP_TEST(open_should_fail_on_empty_file) {
    struct bb b = {.n = 0};
    expect_fail(&b, QP_EFORMAT, "truncated");
}

// A complete small file with strings, arrays and two tensors (written by the writer). Returns
// its bytes; *data_start and *data_end: file offsets of the first tensor's data and of the end
// of the last tensor's data (the trailing padding after it is not needed to read the file).
static uint8_t *small_gguf(size_t *n, size_t *data_start, size_t *data_end) {
    struct hx_gguf_writer *w;
    QP_CHECK(hx_gguf_writer_create(&w) == 0);
    QP_CHECK(hx_gguf_writer_set_str(w, "general.architecture", "llama") == 0);
    const char *strs[2] = {"ab", "\xe2\x96\x81" "c"};
    size_t lens[2] = {2, 4};
    QP_CHECK(hx_gguf_writer_set_arr_str(w, "tokens", strs, lens, 2) == 0);
    float sc[2] = {0.5f, 1.5f};
    QP_CHECK(hx_gguf_writer_set_arr(w, "scores", HX_GGUF_FLOAT32, sc, 2) == 0);
    QP_CHECK(hx_gguf_writer_set_u32(w, "count", 5) == 0);
    float d1[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    float d2[6] = {9, 10, 11, 12, 13, 14};
    int64_t ne1[2] = {4, 2}, ne2[2] = {3, 2};
    QP_CHECK(hx_gguf_writer_add_tensor(w, "t1", KN_F32, 2, ne1, d1, sizeof d1) == 0);
    QP_CHECK(hx_gguf_writer_add_tensor(w, "t2", KN_F32, 2, ne2, d2, sizeof d2) == 0);
    char *full = tmp_path("full.gguf");
    char err[QP_ERRLEN] = "";
    QP_CHECK_MSG(hx_gguf_writer_write(w, full, err) == 0, "%s", err);
    hx_gguf_writer_destroy(w);
    uint8_t *p = read_all(full, n);
    struct hx_gguf *g = open_ok(full);
    const struct hx_gguf_tensor *t1 = hx_gguf_find_tensor(g, "t1");
    const struct hx_gguf_tensor *t2 = hx_gguf_find_tensor(g, "t2");
    QP_CHECK(t1 == hx_gguf_tensor(g, 0) && t1->offset == 0 && t2->offset == 32);
    // t1->data points into the reader's own mapping; locate the data in our copy instead.
    *data_start = 0;
    for (size_t i = 0; i + sizeof d1 <= *n; i++)
        if (memcmp(p + i, d1, sizeof d1) == 0) *data_start = i;
    QP_CHECK(*data_start > 0 && *data_start % 32 == 0);
    *data_end = *data_start + 32 + sizeof d2;
    QP_CHECK(*data_end < *n); // there is trailing padding
    hx_gguf_close(g);
    free(full);
    return p;
}

QP_TEST(truncated_file_should_fail_at_every_cut_point) {
    size_t n, start, end;
    uint8_t *p = small_gguf(&n, &start, &end);
    char *cut = tmp_path("cut.gguf");
    for (size_t len = 0; len < end; len++) {
        FILE *f = fopen(cut, "wb");
        QP_CHECK(f != NULL);
        QP_CHECK(len == 0 || fwrite(p, 1, len, f) == len);
        fclose(f);
        char msg[QP_ERRLEN] = "";
        struct hx_gguf *gc = NULL;
        int rc = hx_gguf_open(cut, &gc, msg);
        QP_CHECK_MSG(rc == QP_EFORMAT, "cut at %zu of %zu: got %d: %s", len, n, rc, msg);
        QP_CHECK(gc == NULL);
        QP_CHECK_MSG(strstr(msg, cut) != NULL, "cut at %zu: %s", len, msg);
    }
    // Cut inside the trailing padding only: still a complete file.
    FILE *f = fopen(cut, "wb");
    QP_CHECK(f != NULL && fwrite(p, 1, end, f) == end);
    fclose(f);
    struct hx_gguf *g = open_ok(cut);
    hx_gguf_close(g);
    free(cut);
    free(p);
}

// Every byte before the data section replaced by several values: each variant either opens
// (and then every string and tensor byte it points at is readable: ASan checks) or fails with
// a message naming the file. Never a crash.
QP_TEST(corrupted_header_bytes_should_never_crash) {
    size_t n, start, end;
    uint8_t *p = small_gguf(&n, &start, &end);
    uint8_t *q = malloc(n);
    QP_CHECK(q != NULL);
    char *bad = tmp_path("corrupt.gguf");
    int opened = 0, failed = 0;
    for (size_t pos = 0; pos < start; pos++) {
        const uint8_t vals[5] = {0x00, 0xff, 0x80, (uint8_t)(p[pos] + 1), (uint8_t)(p[pos] ^ 0x40)};
        for (int k = 0; k < 5; k++) {
            memcpy(q, p, n);
            q[pos] = vals[k];
            FILE *f = fopen(bad, "wb");
            QP_CHECK(f != NULL && fwrite(q, 1, n, f) == n);
            fclose(f);
            char msg[QP_ERRLEN] = "";
            struct hx_gguf *g = NULL;
            int rc = hx_gguf_open(bad, &g, msg);
            if (rc) {
                QP_CHECK_MSG(rc < 0 && g == NULL && strstr(msg, bad), "pos %zu: %d %s", pos, rc,
                             msg);
                failed++;
                continue;
            }
            opened++;
            unsigned sum = 0;
            for (int64_t i = 0; i < hx_gguf_n_kv(g); i++) {
                const struct hx_gguf_kv *kv = hx_gguf_kv(g, i);
                sum += (unsigned)strlen(kv->key);
                if (kv->val.type == HX_GGUF_STRING)
                    for (uint64_t c = 0; c < kv->val.v.str.len; c++)
                        sum += (uint8_t)kv->val.v.str.ptr[c];
            }
            for (int64_t i = 0; i < hx_gguf_n_tensors(g); i++) {
                const struct hx_gguf_tensor *t = hx_gguf_tensor(g, i);
                for (size_t c = 0; c < t->nbytes; c++) sum += ((const uint8_t *)t->data)[c];
            }
            (void)sum;
            hx_gguf_close(g);
        }
    }
    QP_CHECK(opened > 0 && failed > 0);
    free(bad);
    free(q);
    free(p);
}

QP_TEST(wrong_magic_should_fail) {
    struct bb b = {.n = 0};
    bb_raw(&b, "GGML", 4);
    bb_u32(&b, 3);
    bb_u64(&b, 0);
    bb_u64(&b, 0);
    expect_fail(&b, QP_EFORMAT, "not a GGUF file");
}

QP_TEST(version_1_should_be_unsupported) {
    struct bb b = {.n = 0};
    bb_header(&b, 1, 0, 0);
    expect_fail(&b, QP_ENOTSUP, "version 1");
}

QP_TEST(future_and_big_endian_versions_should_be_unsupported) {
    struct bb b = {.n = 0};
    bb_header(&b, 4, 0, 0);
    expect_fail(&b, QP_ENOTSUP, "version 4");
    b.n = 0;
    bb_header(&b, 0x03000000u, 0, 0);
    expect_fail(&b, QP_ENOTSUP, "big-endian");
}

QP_TEST(version_2_should_be_accepted) {
    struct bb b = {.n = 0};
    bb_header(&b, 2, 0, 1);
    bb_kv_u32(&b, "general.x", 7);
    char *path = write_bytes("v2.gguf", b.p, b.n);
    struct hx_gguf *g = open_ok(path);
    QP_CHECK_INT_EQ(hx_gguf_version(g), 2);
    QP_CHECK_INT_EQ(get_int(g, "general.x"), 7);
    hx_gguf_close(g);
    free(path);
}

QP_TEST(unknown_value_type_should_fail) {
    struct bb b = {.n = 0};
    bb_header(&b, 3, 0, 1);
    bb_str(&b, "general.odd");
    bb_u32(&b, 13);
    bb_u32(&b, 0);
    expect_fail(&b, QP_EFORMAT, "unknown value type 13");
}

QP_TEST(unknown_array_element_type_should_fail) {
    struct bb b = {.n = 0};
    bb_header(&b, 3, 0, 1);
    bb_str(&b, "general.odd");
    bb_u32(&b, HX_GGUF_ARRAY);
    bb_u32(&b, 99);
    bb_u64(&b, 1);
    bb_u32(&b, 0);
    expect_fail(&b, QP_EFORMAT, "unknown array element type 99");
}

QP_TEST(string_length_past_eof_should_fail) {
    struct bb b = {.n = 0};
    bb_header(&b, 3, 0, 1);
    bb_str(&b, "general.name");
    bb_u32(&b, HX_GGUF_STRING);
    bb_u64(&b, 1000);
    bb_raw(&b, "short", 5);
    expect_fail(&b, QP_EFORMAT, "past end of file");
    // The key itself too, with a length that would wrap a careless pos + len.
    b.n = 0;
    bb_header(&b, 3, 0, 1);
    bb_u64(&b, UINT64_MAX - 3);
    bb_raw(&b, "abcdefghijkl", 12);
    expect_fail(&b, QP_EFORMAT, "past end of file");
}

QP_TEST(absurd_array_length_should_fail_before_allocating) {
    uint32_t types[] = {HX_GGUF_UINT8, HX_GGUF_FLOAT64, HX_GGUF_STRING, HX_GGUF_ARRAY};
    for (size_t i = 0; i < QP_ARRAY_LEN(types); i++) {
        struct bb b = {.n = 0};
        bb_header(&b, 3, 0, 1);
        bb_str(&b, "tokenizer.ggml.tokens");
        bb_u32(&b, HX_GGUF_ARRAY);
        bb_u32(&b, types[i]);
        bb_u64(&b, 1ull << 62);
        bb_raw(&b, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 16);
        expect_fail(&b, QP_EFORMAT, "4611686018427387904 elements");
    }
}

QP_TEST(deeply_nested_arrays_should_fail) {
    struct bb b = {.n = 0};
    bb_header(&b, 3, 0, 1);
    bb_str(&b, "deep");
    bb_u32(&b, HX_GGUF_ARRAY);
    for (int d = 0; d < 20; d++) {
        bb_u32(&b, HX_GGUF_ARRAY);
        bb_u64(&b, 1);
    }
    bb_u32(&b, HX_GGUF_UINT8);
    bb_u64(&b, 0);
    expect_fail(&b, QP_ERANGE, "nested");
}

QP_TEST(huge_tensor_count_should_fail) {
    struct bb b = {.n = 0};
    bb_header(&b, 3, 1ull << 60, 0);
    bb_raw(&b, "0123456789abcdef0123456789abcdef", 32);
    expect_fail(&b, QP_EFORMAT, "tensor count");
}

QP_TEST(huge_kv_count_should_fail) {
    struct bb b = {.n = 0};
    bb_header(&b, 3, 0, UINT64_MAX);
    bb_raw(&b, "0123456789abcdef0123456789abcdef", 32);
    expect_fail(&b, QP_EFORMAT, "key/value count");
}

QP_TEST(n_dims_above_4_should_fail) {
    struct bb b = {.n = 0};
    uint64_t ne[5] = {1, 1, 1, 1, 1};
    bb_valid_one_tensor(&b, 5, ne, KN_F32, 0, 64);
    expect_fail(&b, QP_ERANGE, "5 dimensions");
}

QP_TEST(n_dims_0_should_fail) {
    struct bb b = {.n = 0};
    bb_valid_one_tensor(&b, 0, NULL, KN_F32, 0, 64);
    expect_fail(&b, QP_ERANGE, "0 dimensions");
}

QP_TEST(ne_product_overflow_should_fail) {
    struct bb b = {.n = 0};
    uint64_t ne[3] = {1ull << 32, 1ull << 20, 1ull << 12};
    bb_valid_one_tensor(&b, 3, ne, KN_F32, 0, 64);
    expect_fail(&b, QP_ERANGE, "overflow");
    // Within int64 elements but not within bytes (f32: 4 bytes each).
    b.n = 0;
    uint64_t ne2[2] = {1ull << 31, 1ull << 31};
    bb_valid_one_tensor(&b, 2, ne2, KN_F32, 0, 64);
    expect_fail(&b, QP_ERANGE, "overflow");
}

QP_TEST(negative_ne_should_fail) {
    struct bb b = {.n = 0};
    uint64_t ne[2] = {4, (uint64_t)-4};
    bb_valid_one_tensor(&b, 2, ne, KN_F32, 0, 64);
    expect_fail(&b, QP_EFORMAT, "negative");
}

QP_TEST(unknown_ggml_type_should_fail) {
    uint32_t bad[] = {4, 5, 31, 39, 1000, 0xffffffffu};
    for (size_t i = 0; i < QP_ARRAY_LEN(bad); i++) {
        struct bb b = {.n = 0};
        uint64_t ne[1] = {32};
        bb_valid_one_tensor(&b, 1, ne, bad[i], 0, 128);
        expect_fail(&b, QP_ENOTSUP, "unknown ggml type");
    }
}

QP_TEST(row_not_multiple_of_block_should_fail) {
    struct bb b = {.n = 0};
    uint64_t ne[2] = {33, 2};
    bb_valid_one_tensor(&b, 2, ne, KN_Q4_0, 0, 128);
    expect_fail(&b, QP_EFORMAT, "block size 32");
}

QP_TEST(tensor_data_past_eof_should_fail) {
    struct bb b = {.n = 0};
    uint64_t ne[2] = {4, 4};
    bb_valid_one_tensor(&b, 2, ne, KN_F32, 0, 63); // needs 64
    expect_fail(&b, QP_EFORMAT, "extends past end of file");
    // An offset so large that data_offset + offset wraps.
    b.n = 0;
    bb_valid_one_tensor(&b, 2, ne, KN_F32, UINT64_MAX - 31, 64);
    expect_fail(&b, QP_EFORMAT, "extends past end of file");
}

QP_TEST(misaligned_tensor_offset_should_fail) {
    struct bb b = {.n = 0};
    uint64_t ne[1] = {4};
    bb_valid_one_tensor(&b, 1, ne, KN_F32, 4, 64);
    expect_fail(&b, QP_EFORMAT, "not a multiple of the alignment 32");
}

QP_TEST(bad_alignment_value_should_fail) {
    uint32_t bad[] = {0, 3, 48};
    for (size_t i = 0; i < QP_ARRAY_LEN(bad); i++) {
        struct bb b = {.n = 0};
        bb_header(&b, 3, 0, 1);
        bb_kv_u32(&b, "general.alignment", bad[i]);
        expect_fail(&b, QP_EFORMAT, "power of two");
    }
    struct bb b = {.n = 0};
    bb_header(&b, 3, 0, 1);
    bb_str(&b, "general.alignment");
    bb_u32(&b, HX_GGUF_UINT64);
    bb_u64(&b, 64);
    expect_fail(&b, QP_EFORMAT, "expected uint32");
}

QP_TEST(duplicate_tensor_name_should_fail) {
    struct bb b = {.n = 0};
    uint64_t ne[1] = {8};
    bb_header(&b, 3, 2, 0);
    bb_tensor(&b, "blk.0.attn_q.weight", 1, ne, KN_F32, 0);
    bb_tensor(&b, "blk.0.attn_q.weight", 1, ne, KN_F32, 32);
    bb_data(&b, 64);
    expect_fail(&b, QP_EFORMAT, "duplicate tensor name 'blk.0.attn_q.weight'");
}

QP_TEST(duplicate_key_should_fail) {
    struct bb b = {.n = 0};
    bb_header(&b, 3, 0, 2);
    bb_kv_u32(&b, "llama.block_count", 1);
    bb_kv_u32(&b, "llama.block_count", 2);
    expect_fail(&b, QP_EFORMAT, "duplicate key 'llama.block_count'");
}

QP_TEST(valid_hand_made_file_should_open) {
    // The builder itself is right: the same shape as the malformed cases, but valid.
    struct bb b = {.n = 0};
    uint64_t ne[2] = {4, 4};
    bb_valid_one_tensor(&b, 2, ne, KN_F32, 0, 64);
    char *path = write_bytes("good.gguf", b.p, b.n);
    struct hx_gguf *g = open_ok(path);
    QP_CHECK_INT_EQ(hx_gguf_n_tensors(g), 1);
    QP_CHECK_INT_EQ(hx_gguf_tensor(g, 0)->nbytes, 64);
    QP_CHECK_INT_EQ(((const uint8_t *)hx_gguf_tensor(g, 0)->data)[63], 0x5a);
    hx_gguf_close(g);
    free(path);
}

// ---------------------------------------------------------------------------------------------
// Models

static struct hx_model *load_model(const char *path, int expect_rc, char *err) {
    struct hx_model *m = calloc(1, sizeof *m);
    QP_CHECK(m != NULL);
    m->path = dup_str(path);
    int rc = hx_gguf_model_load(m, path, err);
    QP_CHECK_MSG(rc == expect_rc, "load '%s': expected %d, got %d: %s", path, expect_rc, rc, err);
    if (rc) {
        hx_model_close(m);
        return NULL;
    }
    return m;
}

QP_TEST(model_load_should_read_stories260k) {
    char err[QP_ERRLEN] = "";
    struct hx_model *m = load_model(qpt_fixture(STORIES_F32), 0, err);
    const struct kn_config *c = &m->w.cfg;
    QP_CHECK_INT_EQ(m->format, HX_FMT_GGUF);
    QP_CHECK(m->gguf != NULL);
    QP_CHECK_INT_EQ(c->dim, 64);
    QP_CHECK_INT_EQ(c->hidden_dim, 172);
    QP_CHECK_INT_EQ(c->n_layers, 5);
    QP_CHECK_INT_EQ(c->n_heads, 8);
    QP_CHECK_INT_EQ(c->n_kv_heads, 4);
    QP_CHECK_INT_EQ(c->vocab_size, 512);
    QP_CHECK_INT_EQ(c->seq_len, 512);
    QP_CHECK_INT_EQ(c->head_size, 8);
    QP_CHECK(c->norm_eps == 1e-5f);
    QP_CHECK(c->rope_theta == 10000.0f);
    // output.weight is the converter's copy of the embedding: recognised as tied.
    QP_CHECK_INT_EQ(m->w.tied, 1);
    QP_CHECK(m->w.output.data == m->w.tok_embd.data);
    QP_CHECK(m->w.tok_embd.type == KN_F32 && m->w.tok_embd.ne0 == 64 && m->w.tok_embd.ne1 == 512);
    const struct kn_layer_weights *L = &m->w.layers[4];
    QP_CHECK(L->wk.ne0 == 64 && L->wk.ne1 == 32);
    QP_CHECK(L->w_down.ne0 == 172 && L->w_down.ne1 == 64);
    QP_CHECK(L->attn_norm.ne0 == 64 && L->attn_norm.ne1 == 1);
    QP_CHECK(L->wq.data == hx_gguf_find_tensor(m->gguf, "blk.4.attn_q.weight")->data);
    QP_CHECK(m->w.out_norm.data == hx_gguf_find_tensor(m->gguf, "output_norm.weight")->data);
    QP_CHECK(m->tok != NULL);
    QP_CHECK_INT_EQ(hx_tok_n_vocab(m->tok), 512);
    QP_CHECK_INT_EQ(hx_tok_bos(m->tok), 1);
    QP_CHECK_INT_EQ(hx_tok_eos(m->tok), 2);
    hx_model_close(m);
}

QP_TEST(model_load_should_keep_quantized_types) {
    char err[QP_ERRLEN] = "";
    struct hx_model *m = load_model(qpt_fixture(SYNTH_Q4K), 0, err);
    QP_CHECK_INT_EQ(m->w.cfg.dim, 256);
    QP_CHECK_INT_EQ(m->w.cfg.hidden_dim, 768);
    QP_CHECK_INT_EQ(m->w.cfg.n_kv_heads, 2);
    QP_CHECK_INT_EQ(m->w.cfg.seq_len, 256);
    QP_CHECK_INT_EQ(m->w.tied, 0);
    QP_CHECK_INT_EQ(m->w.output.type, KN_Q4_K);
    QP_CHECK_INT_EQ(m->w.layers[1].w_down.type, KN_Q4_K);
    QP_CHECK_INT_EQ(m->w.layers[1].ffn_norm.type, KN_F32);
    hx_model_close(m);
}

QP_TEST(model_load_should_reject_vocab_only_file) {
    char err[QP_ERRLEN] = "";
    const char *path = qpt_fixture(VOCAB_GGUF);
    load_model(path, QP_ENOENT, err);
    QP_CHECK_MSG(strstr(err, "token_embd.weight") && strstr(err, path), "%s", err);
}

// Writes a copy of stories260K-F32 with some KVs replaced and one tensor dropped.
static char *stories_variant(const char *name, const char *arch, const char *drop) {
    struct hx_gguf *g = open_ok(qpt_fixture(STORIES_F32));
    struct hx_gguf_writer *w;
    QP_CHECK(hx_gguf_writer_create(&w) == 0);
    for (int64_t i = 0; i < hx_gguf_n_kv(g); i++)
        QP_CHECK(hx_gguf_writer_set_value(w, hx_gguf_kv(g, i)->key, &hx_gguf_kv(g, i)->val) == 0);
    if (arch) QP_CHECK(hx_gguf_writer_set_str(w, "general.architecture", arch) == 0);
    for (int64_t i = 0; i < hx_gguf_n_tensors(g); i++) {
        const struct hx_gguf_tensor *t = hx_gguf_tensor(g, i);
        if (drop && strcmp(t->name, drop) == 0) continue;
        QP_CHECK(hx_gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data,
                                           t->nbytes) == 0);
    }
    char *path = tmp_path(name);
    char err[QP_ERRLEN] = "";
    QP_CHECK_MSG(hx_gguf_writer_write(w, path, err) == 0, "%s", err);
    hx_gguf_writer_destroy(w);
    hx_gguf_close(g);
    return path;
}

QP_TEST(model_load_should_reject_other_architectures) {
    char *path = stories_variant("gpt2.gguf", "gpt2", NULL);
    char err[QP_ERRLEN] = "";
    load_model(path, QP_ENOTSUP, err);
    QP_CHECK_MSG(strstr(err, "'gpt2'") && strstr(err, path), "%s", err);
    free(path);
}

QP_TEST(model_load_should_name_a_missing_tensor) {
    char *path = stories_variant("missing.gguf", NULL, "blk.3.ffn_up.weight");
    char err[QP_ERRLEN] = "";
    load_model(path, QP_ENOENT, err);
    QP_CHECK_MSG(strstr(err, "blk.3.ffn_up.weight") && strstr(err, path), "%s", err);
    QP_CHECK(strncmp(err, "cannot read '", 13) == 0);
    free(path);
    // Without output.weight the model is tied and loads.
    path = stories_variant("tied.gguf", NULL, "output.weight");
    struct hx_model *m = load_model(path, 0, err);
    QP_CHECK_INT_EQ(m->w.tied, 1);
    QP_CHECK(m->w.output.data == m->w.tok_embd.data);
    hx_model_close(m);
    free(path);
}

// Compares two models' key sets with the expected differences allowed.
static void check_same_value(const struct hx_gguf *a, const struct hx_gguf *b, const char *key) {
    const struct hx_gguf_kv *x = hx_gguf_find(a, key), *y = hx_gguf_find(b, key);
    QP_CHECK_MSG(x && y, "key '%s' missing", key);
    QP_CHECK_MSG(x->val.type == y->val.type, "key '%s': type %d vs %d", key, x->val.type,
                 y->val.type);
    if (x->val.type == HX_GGUF_STRING) {
        QP_CHECK(x->val.v.str.len == y->val.v.str.len &&
                 memcmp(x->val.v.str.ptr, y->val.v.str.ptr, x->val.v.str.len) == 0);
    } else if (x->val.type == HX_GGUF_ARRAY) {
        QP_CHECK(x->val.v.arr.type == y->val.v.arr.type && x->val.v.arr.n == y->val.v.arr.n);
        for (uint64_t i = 0; i < x->val.v.arr.n; i++) {
            if (x->val.v.arr.type == HX_GGUF_STRING) {
                const struct hx_gguf_value *s = &x->val.v.arr.items[i], *t = &y->val.v.arr.items[i];
                QP_CHECK_MSG(s->v.str.len == t->v.str.len &&
                                 memcmp(s->v.str.ptr, t->v.str.ptr, s->v.str.len) == 0,
                             "key '%s': element %llu differs", key, (unsigned long long)i);
            }
        }
        if (x->val.v.arr.type != HX_GGUF_STRING)
            QP_CHECK_MSG(memcmp(x->val.v.arr.data, y->val.v.arr.data, 4 * x->val.v.arr.n) == 0,
                         "key '%s' differs", key);
    } else {
        QP_CHECK_MSG(memcmp(&x->val.v, &y->val.v, sizeof x->val.v.u) == 0, "key '%s' differs",
                     key);
    }
}

QP_TEST(model_write_should_reproduce_llama_cpp_f32_layout) {
    const char *src = qpt_fixture(STORIES_F32);
    char err[QP_ERRLEN] = "";
    struct hx_model *m = load_model(src, 0, err);
    char *path = tmp_path("stories-out.gguf");
    QP_CHECK_MSG(hx_gguf_model_write(&m->w, m->tok, path, KN_F32, err) == 0, "%s", err);
    struct hx_gguf *a = m->gguf, *b = open_ok(path);
    // Every key of llama.cpp's conversion except the two unset special ids (0xffffffff, which
    // llama.cpp only warns about), in the same order, plus general.file_type.
    static const char *keys[] = {
        "tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type",
        "tokenizer.ggml.model", "general.architecture", "general.name", "general.file_type",
        "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id", "llama.context_length", "llama.embedding_length",
        "llama.feed_forward_length", "llama.attention.head_count",
        "llama.attention.head_count_kv", "llama.block_count", "llama.rope.dimension_count",
        "llama.attention.layer_norm_rms_epsilon"};
    QP_CHECK_INT_EQ(hx_gguf_n_kv(b), QP_ARRAY_LEN(keys));
    for (size_t i = 0; i < QP_ARRAY_LEN(keys); i++) {
        QP_CHECK_STR_EQ(hx_gguf_kv(b, (int64_t)i)->key, keys[i]);
        if (strcmp(keys[i], "general.name") != 0 && strcmp(keys[i], "general.file_type") != 0)
            check_same_value(a, b, keys[i]);
    }
    const char *s;
    size_t len;
    QP_CHECK(hx_gguf_get_str(b, "general.name", &s, &len) == 0 && str_is(s, len, "stories-out"));
    QP_CHECK_INT_EQ(get_int(b, "general.file_type"), 0);
    QP_CHECK(hx_gguf_find(b, "llama.rope.freq_base") == NULL);
    // Tensors in the converter's order and bytes, without the tied output.weight.
    QP_CHECK_INT_EQ(hx_gguf_n_tensors(b), hx_gguf_n_tensors(a) - 1);
    for (int64_t i = 0, j = 0; i < hx_gguf_n_tensors(a); i++) {
        const struct hx_gguf_tensor *x = hx_gguf_tensor(a, i);
        if (strcmp(x->name, "output.weight") == 0) continue;
        const struct hx_gguf_tensor *y = hx_gguf_tensor(b, j++);
        QP_CHECK_STR_EQ(y->name, x->name);
        QP_CHECK(y->type == x->type && y->n_dims == x->n_dims && y->ne[0] == x->ne[0] &&
                 y->ne[1] == x->ne[1] && y->nbytes == x->nbytes);
        QP_CHECK_MSG(memcmp(x->data, y->data, x->nbytes) == 0, "%s differs", x->name);
    }
    hx_gguf_close(b);
    // And it loads back as the same model.
    struct hx_model *m2 = load_model(path, 0, err);
    QP_CHECK(memcmp(&m2->w.cfg, &m->w.cfg, sizeof m->w.cfg) == 0);
    QP_CHECK_INT_EQ(m2->w.tied, 1);
    hx_model_close(m2);
    hx_model_close(m);
    free(path);
}

QP_TEST(model_write_f16_should_match_llama_quantize) {
    char err[QP_ERRLEN] = "";
    struct hx_model *m = load_model(qpt_fixture(STORIES_F32), 0, err);
    struct hx_gguf *ref = open_ok(qpt_fixture(STORIES_F16));
    char *path = tmp_path("stories-f16.gguf");
    QP_CHECK_MSG(hx_gguf_model_write(&m->w, m->tok, path, KN_F16, err) == 0, "%s", err);
    struct hx_gguf *b = open_ok(path);
    QP_CHECK_INT_EQ(get_int(b, "general.file_type"), 1);
    for (int64_t i = 0; i < hx_gguf_n_tensors(b); i++) {
        const struct hx_gguf_tensor *y = hx_gguf_tensor(b, i);
        const struct hx_gguf_tensor *x = hx_gguf_find_tensor(ref, y->name);
        QP_CHECK_MSG(x != NULL, "%s not in llama.cpp's F16 file", y->name);
        QP_CHECK_INT_EQ(y->type, strstr(y->name, "norm") ? KN_F32 : KN_F16);
        QP_CHECK_MSG(x->type == y->type && x->nbytes == y->nbytes &&
                         memcmp(x->data, y->data, x->nbytes) == 0,
                     "%s differs from llama-quantize's F16", y->name);
    }
    hx_gguf_close(b);
    // F16 in, F32 out: exact widening.
    struct hx_model *m16 = load_model(path, 0, err);
    char *path32 = tmp_path("stories-f32-again.gguf");
    QP_CHECK_MSG(hx_gguf_model_write(&m16->w, NULL, path32, KN_F32, err) == 0, "%s", err);
    b = open_ok(path32);
    QP_CHECK(hx_gguf_find(b, "tokenizer.ggml.model") == NULL);
    const struct hx_gguf_tensor *y = hx_gguf_find_tensor(b, "blk.2.ffn_down.weight");
    const struct hx_gguf_tensor *x = hx_gguf_find_tensor(ref, "blk.2.ffn_down.weight");
    QP_CHECK(y->type == KN_F32);
    for (size_t i = 0; i < (size_t)(y->ne[0] * y->ne[1]); i++)
        QP_CHECK(((const float *)y->data)[i] == qp_fp16_to_fp32(((const uint16_t *)x->data)[i]));
    hx_gguf_close(b);
    hx_model_close(m16);
    hx_gguf_close(ref);
    hx_model_close(m);
    free(path);
    free(path32);
}

QP_TEST(model_write_with_llama2c_tokenizer_should_match_converter_tokens) {
    char err[QP_ERRLEN] = "";
    struct hx_model *m = load_model(qpt_fixture(STORIES_F32), 0, err);
    struct hx_tok *tok = NULL;
    int rc = hx_tok_load_llama2c(qpt_fixture("models/llama2c/tok512.bin"), 512, &tok, err);
    QP_CHECK_MSG(rc == 0, "%s", err);
    char *path = tmp_path("from-tok512.gguf");
    QP_CHECK_MSG(hx_gguf_model_write(&m->w, tok, path, KN_F32, err) == 0, "%s", err);
    struct hx_gguf *b = open_ok(path);
    check_same_value(m->gguf, b, "tokenizer.ggml.tokens");
    check_same_value(m->gguf, b, "tokenizer.ggml.scores");
    check_same_value(m->gguf, b, "tokenizer.ggml.token_type");
    hx_gguf_close(b);
    hx_tok_destroy(tok);
    hx_model_close(m);
    free(path);
}

QP_TEST(model_write_should_reject_quantized_and_bad_requests) {
    char err[QP_ERRLEN] = "";
    struct hx_model *m = load_model(qpt_fixture(SYNTH_Q4K), 0, err);
    char *path = tmp_path("q.gguf");
    QP_CHECK_INT_EQ(hx_gguf_model_write(&m->w, m->tok, path, KN_F32, err), QP_ENOTSUP);
    QP_CHECK_MSG(strstr(err, path) && strstr(err, "q4_K"), "%s", err);
    QP_CHECK_INT_EQ(hx_gguf_model_write(&m->w, m->tok, path, KN_Q8_0, err), QP_EINVAL);
    FILE *f = fopen(path, "rb");
    QP_CHECK(f == NULL);
    hx_model_close(m);
    // A tokenizer whose size is not the model's.
    m = load_model(qpt_fixture(STORIES_F32), 0, err);
    struct hx_gguf *v = open_ok(qpt_fixture(VOCAB_GGUF));
    struct hx_tok *big = NULL;
    QP_CHECK(hx_tok_from_gguf(v, &big, err) == 0);
    QP_CHECK_INT_EQ(hx_gguf_model_write(&m->w, big, path, KN_F32, err), QP_EINVAL);
    hx_tok_destroy(big);
    hx_gguf_close(v);
    hx_model_close(m);
    free(path);
}
