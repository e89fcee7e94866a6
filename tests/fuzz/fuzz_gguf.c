// fuzz_gguf.c — fuzz target for the GGUF reader (harness/gguf.[ch]) and the GGUF model loader.
//
// The input is a whole file. It is written to a scratch file (the reader maps a path), opened
// with hx_gguf_open, and on success every key/value (nested arrays included) and tensor info is
// walked and checked against the file: values and tensor data lie inside it, offsets are
// aligned, sizes match the type table, lookups find what iteration finds. A tokenizer in the
// file is loaded and used. Every accepted file is then copied with the writer and read back,
// which must give the same keys, values and tensors. Finally the file is opened as a model
// (hx_model_open), so that the model-level checks run, and an accepted model is checked with
// fuzz_check_model. Errors must come back as a QP_E* code with a message naming the file.
//
// Depends on harness/io/hx_gguf.h, harness/io/hx_model.h, harness/io/hx_tokenizer.h, kernels/ and fuzz.h.
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "hx_gguf.h"
#include "kn_types.h"
#include "hx_model.h"
#include "qp.h"
#include "hx_tokenizer.h"

#define FG_MAX_DEPTH 9 // the reader accepts arrays nested 8 deep (a key's value is depth 1)

// ---------------------------------------------------------------------------------------------
// Walking what the reader returns

static size_t fg_scalar_size(enum hx_gguf_type t) {
    switch (t) {
    case HX_GGUF_UINT8:
    case HX_GGUF_INT8:
    case HX_GGUF_BOOL: return 1;
    case HX_GGUF_UINT16:
    case HX_GGUF_INT16: return 2;
    case HX_GGUF_UINT32:
    case HX_GGUF_INT32:
    case HX_GGUF_FLOAT32: return 4;
    case HX_GGUF_UINT64:
    case HX_GGUF_INT64:
    case HX_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

// Reads every byte a value refers to; returns the number of values visited.
static uint64_t fg_walk_value(const struct hx_gguf_value *v, int depth, size_t file_size) {
    FUZZ_CHECK(depth <= FG_MAX_DEPTH, "value nested %d deep", depth);
    FUZZ_CHECK((unsigned)v->type <= HX_GGUF_FLOAT64, "value type %d", (int)v->type);
    if (v->type == HX_GGUF_STRING) {
        FUZZ_CHECK(v->v.str.len <= file_size, "string of %llu bytes in a %zu-byte file",
                   (unsigned long long)v->v.str.len, file_size);
        FUZZ_CHECK(v->v.str.len == 0 || v->v.str.ptr != NULL, "string without bytes");
        fuzz_touch(v->v.str.ptr, (size_t)v->v.str.len);
        return 1;
    }
    if (v->type != HX_GGUF_ARRAY) return 1;
    enum hx_gguf_type et = v->v.arr.type;
    uint64_t n = v->v.arr.n, visited = 1;
    FUZZ_CHECK((unsigned)et <= HX_GGUF_FLOAT64, "array element type %d", (int)et);
    if (et == HX_GGUF_STRING || et == HX_GGUF_ARRAY) {
        FUZZ_CHECK(n == 0 || v->v.arr.items != NULL, "array of %llu without items",
                   (unsigned long long)n);
        for (uint64_t i = 0; i < n; i++) {
            FUZZ_CHECK(v->v.arr.items[i].type == et, "item %llu has type %d, array says %d",
                       (unsigned long long)i, (int)v->v.arr.items[i].type, (int)et);
            visited += fg_walk_value(&v->v.arr.items[i], depth + 1, file_size);
        }
        return visited;
    }
    size_t es = fg_scalar_size(et);
    FUZZ_CHECK(es > 0 && n <= file_size / es, "array of %llu elements of %zu bytes in a %zu-byte "
               "file", (unsigned long long)n, es, file_size);
    FUZZ_CHECK(n == 0 || v->v.arr.data != NULL, "array of %llu without data",
               (unsigned long long)n);
    fuzz_touch(v->v.arr.data, (size_t)n * es);
    return visited + n;
}

// The byte size the type table gives a tensor of this shape (0 when ne0 is 0).
static size_t fg_tensor_bytes(const struct hx_gguf_tensor *t) {
    size_t row = kn_row_bytes(t->type, t->ne[0]);
    uint64_t bytes = row;
    for (int d = 1; d < 4 && bytes > 0; d++)
        FUZZ_CHECK(!__builtin_mul_overflow(bytes, (uint64_t)t->ne[d], &bytes),
                   "tensor '%s': size overflows", t->name);
    FUZZ_CHECK(bytes <= SIZE_MAX, "tensor '%s': size overflows", t->name);
    return (size_t)bytes;
}

static void fg_walk(const struct hx_gguf *g, size_t file_size) {
    uint32_t version = hx_gguf_version(g);
    FUZZ_CHECK(version == 2 || version == 3, "version %u accepted", version);
    size_t align = hx_gguf_alignment(g);
    FUZZ_CHECK(align > 0 && (align & (align - 1)) == 0, "alignment %zu", align);
    int64_t n_kv = hx_gguf_n_kv(g), n_t = hx_gguf_n_tensors(g);
    FUZZ_CHECK(n_kv >= 0 && n_t >= 0, "counts %lld, %lld", (long long)n_kv, (long long)n_t);
    FUZZ_CHECK(hx_gguf_kv(g, -1) == NULL && hx_gguf_kv(g, n_kv) == NULL, "kv index out of range");
    FUZZ_CHECK(hx_gguf_tensor(g, n_t) == NULL, "tensor index out of range");
    for (int64_t i = 0; i < n_kv; i++) {
        const struct hx_gguf_kv *kv = hx_gguf_kv(g, i);
        FUZZ_CHECK(kv && kv->key, "kv %lld missing", (long long)i);
        FUZZ_CHECK(hx_gguf_find(g, kv->key) == kv, "find('%s') is not kv %lld", kv->key,
                   (long long)i);
        fg_walk_value(&kv->val, 1, file_size);
        // The typed getters agree with the stored type.
        int64_t iv;
        double fv;
        bool bv;
        const char *sv;
        size_t sl;
        int rc = hx_gguf_get_int(g, kv->key, &iv);
        bool is_int = kv->val.type <= HX_GGUF_INT32 || kv->val.type == HX_GGUF_UINT64 ||
                      kv->val.type == HX_GGUF_INT64;
        FUZZ_CHECK(rc == 0 || rc == QP_EFORMAT, "get_int: %d", rc);
        FUZZ_CHECK(rc != 0 || is_int, "get_int accepted type %d", (int)kv->val.type);
        FUZZ_CHECK(rc == 0 || !is_int ||
                       (kv->val.type == HX_GGUF_UINT64 && kv->val.v.u > (uint64_t)INT64_MAX),
                   "get_int refused an integer of type %d", (int)kv->val.type);
        rc = hx_gguf_get_float(g, kv->key, &fv);
        bool is_float = kv->val.type == HX_GGUF_FLOAT32 || kv->val.type == HX_GGUF_FLOAT64;
        FUZZ_CHECK((rc == 0) == is_float, "get_float: %d for type %d", rc, (int)kv->val.type);
        rc = hx_gguf_get_bool(g, kv->key, &bv);
        FUZZ_CHECK((rc == 0) == (kv->val.type == HX_GGUF_BOOL), "get_bool: %d", rc);
        rc = hx_gguf_get_str(g, kv->key, &sv, &sl);
        FUZZ_CHECK((rc == 0) == (kv->val.type == HX_GGUF_STRING), "get_str: %d", rc);
    }
    for (int64_t i = 0; i < n_t; i++) {
        const struct hx_gguf_tensor *t = hx_gguf_tensor(g, i);
        FUZZ_CHECK(t && t->name, "tensor %lld missing", (long long)i);
        FUZZ_CHECK(hx_gguf_find_tensor(g, t->name) == t, "find_tensor('%s') is not tensor %lld",
                   t->name, (long long)i);
        FUZZ_CHECK(t->n_dims >= 1 && t->n_dims <= 4, "tensor '%s': %d dims", t->name, t->n_dims);
        for (int d = 0; d < 4; d++)
            FUZZ_CHECK(t->ne[d] >= 0 && (d < t->n_dims || t->ne[d] == 1), "tensor '%s': ne[%d] = "
                       "%lld", t->name, d, (long long)t->ne[d]);
        FUZZ_CHECK(kn_type_info(t->type) != NULL, "tensor '%s': type %d", t->name, t->type);
        FUZZ_CHECK(t->nbytes == fg_tensor_bytes(t), "tensor '%s': %zu bytes, type table says %zu",
                   t->name, t->nbytes, fg_tensor_bytes(t));
        FUZZ_CHECK(t->offset % align == 0, "tensor '%s': offset %llu", t->name,
                   (unsigned long long)t->offset);
        FUZZ_CHECK(t->offset <= file_size && t->nbytes <= file_size - t->offset,
                   "tensor '%s': %zu bytes at data offset %llu in a %zu-byte file", t->name,
                   t->nbytes, (unsigned long long)t->offset, file_size);
        FUZZ_CHECK(t->data != NULL, "tensor '%s' has no data", t->name);
        fuzz_touch(t->data, t->nbytes);
    }
}

// ---------------------------------------------------------------------------------------------
// Writer round trip

static bool fg_same_value(const struct hx_gguf_value *a, const struct hx_gguf_value *b) {
    if (a->type != b->type) return false;
    switch (a->type) {
    case HX_GGUF_STRING:
        return a->v.str.len == b->v.str.len &&
               (a->v.str.len == 0 || memcmp(a->v.str.ptr, b->v.str.ptr, (size_t)a->v.str.len) == 0);
    case HX_GGUF_ARRAY: {
        enum hx_gguf_type et = a->v.arr.type;
        if (et != b->v.arr.type || a->v.arr.n != b->v.arr.n) return false;
        uint64_t n = a->v.arr.n;
        if (et == HX_GGUF_STRING || et == HX_GGUF_ARRAY) {
            for (uint64_t i = 0; i < n; i++)
                if (!fg_same_value(&a->v.arr.items[i], &b->v.arr.items[i])) return false;
            return true;
        }
        return n == 0 || memcmp(a->v.arr.data, b->v.arr.data, (size_t)n * fg_scalar_size(et)) == 0;
    }
    case HX_GGUF_FLOAT32:
    case HX_GGUF_FLOAT64: // NaN payloads may be quieted by float <-> double conversions
        return a->v.f == b->v.f || (isnan(a->v.f) && isnan(b->v.f));
    case HX_GGUF_BOOL: return a->v.b == b->v.b;
    case HX_GGUF_INT8:
    case HX_GGUF_INT16:
    case HX_GGUF_INT32:
    case HX_GGUF_INT64: return a->v.i == b->v.i;
    default: return a->v.u == b->v.u;
    }
}

// Copies g with the writer into a scratch file and checks that it reads back the same.
static void fg_round_trip(const struct hx_gguf *g) {
    struct hx_gguf_writer *w = NULL;
    FUZZ_CHECK(hx_gguf_writer_create(&w) == 0, "writer_create");
    int64_t n_kv = hx_gguf_n_kv(g), n_t = hx_gguf_n_tensors(g);
    for (int64_t i = 0; i < n_kv; i++) {
        const struct hx_gguf_kv *kv = hx_gguf_kv(g, i);
        int rc = hx_gguf_writer_set_value(w, kv->key, &kv->val);
        FUZZ_CHECK(rc == 0, "writer_set_value('%s'): %d", kv->key, rc);
    }
    for (int64_t i = 0; i < n_t; i++) {
        const struct hx_gguf_tensor *t = hx_gguf_tensor(g, i);
        int rc = hx_gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data,
                                           t->nbytes);
        FUZZ_CHECK(rc == 0, "writer_add_tensor('%s'): %d", t->name, rc);
    }
    char path[FUZZ_PATH_MAX], err[QP_ERRLEN];
    fuzz_path("copy.gguf", path);
    int rc = hx_gguf_writer_write(w, path, err);
    hx_gguf_writer_destroy(w);
    FUZZ_CHECK(rc == 0, "writing a copy: %s", err);
    struct hx_gguf *c = NULL;
    rc = hx_gguf_open(path, &c, err);
    FUZZ_CHECK(rc == 0, "the writer's copy does not read back: %s", err);
    FUZZ_CHECK(hx_gguf_n_kv(c) == n_kv && hx_gguf_n_tensors(c) == n_t, "copy has %lld keys and "
               "%lld tensors, original %lld and %lld", (long long)hx_gguf_n_kv(c),
               (long long)hx_gguf_n_tensors(c), (long long)n_kv, (long long)n_t);
    FUZZ_CHECK(hx_gguf_alignment(c) == hx_gguf_alignment(g), "alignment changed");
    for (int64_t i = 0; i < n_kv; i++) {
        const struct hx_gguf_kv *a = hx_gguf_kv(g, i), *b = hx_gguf_kv(c, i);
        FUZZ_CHECK(strcmp(a->key, b->key) == 0, "key %lld: '%s' became '%s'", (long long)i,
                   a->key, b->key);
        FUZZ_CHECK(fg_same_value(&a->val, &b->val), "value of '%s' changed", a->key);
    }
    for (int64_t i = 0; i < n_t; i++) {
        const struct hx_gguf_tensor *a = hx_gguf_tensor(g, i), *b = hx_gguf_tensor(c, i);
        FUZZ_CHECK(strcmp(a->name, b->name) == 0 && a->type == b->type && a->n_dims == b->n_dims &&
                   memcmp(a->ne, b->ne, sizeof a->ne) == 0 && a->nbytes == b->nbytes,
                   "tensor '%s' changed", a->name);
        FUZZ_CHECK(a->nbytes == 0 || memcmp(a->data, b->data, a->nbytes) == 0,
                   "data of tensor '%s' changed", a->name);
    }
    hx_gguf_close(c);
}

// ---------------------------------------------------------------------------------------------
// Target

static void fg_check_error(int rc, const char *err, const char *path) {
    FUZZ_CHECK(rc < 0 && rc >= QP_EINTR, "unknown error code %d", rc);
    FUZZ_CHECK(strstr(err, path) != NULL, "message does not name the file: %s", err);
}

int fuzz_gguf(const uint8_t *data, size_t size) {
    char path[FUZZ_PATH_MAX], err[QP_ERRLEN];
    fuzz_write("in.gguf", data, size, path);

    struct hx_gguf *g = NULL;
    err[0] = 0;
    int rc = hx_gguf_open(path, &g, err);
    if (rc == 0) {
        FUZZ_CHECK(g != NULL, "success without a reader");
        FUZZ_CHECK(size >= 24, "a %zu-byte file accepted", size);
        fg_walk(g, size);
        if (hx_gguf_find(g, "tokenizer.ggml.model")) {
            struct hx_tok *t = NULL;
            err[0] = 0;
            rc = hx_tok_from_gguf(g, &t, err);
            if (rc == 0) {
                fuzz_check_tok(t, data, size < 256 ? size : 256);
                hx_tok_destroy(t);
            } else {
                FUZZ_CHECK(t == NULL, "failed tokenizer load left a tokenizer");
                fg_check_error(rc, err, path);
            }
        }
        fg_round_trip(g);
        hx_gguf_close(g);
    } else {
        FUZZ_CHECK(g == NULL, "failed open left a reader");
        fg_check_error(rc, err, path);
    }

    struct hx_model *m = NULL;
    err[0] = 0;
    rc = hx_model_open(path, NULL, &m, err);
    if (rc == 0) {
        FUZZ_CHECK(m != NULL && m->format == HX_FMT_GGUF, "model format %d",
                   m ? (int)m->format : -1);
        fuzz_check_model(m, size);
        hx_model_close(m);
    } else {
        FUZZ_CHECK(m == NULL, "failed model open left a model");
        fg_check_error(rc, err, path);
    }
    return 0;
}

#ifdef QP_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_gguf(data, size); }
#endif
