// gguf.c — GGUF v2/v3 reader and writer (see gguf.h).
//
// Reader: the file is mapped read-only, then parsed front to back with a cursor that checks
// every read against the bytes left, so no length, count or offset from the file is trusted
// before it is compared with the file size (all arithmetic overflow-checked). Counts are
// compared with the bytes left *before* anything is allocated for them, so a forged count
// fails at once instead of asking for terabytes.
//
// Error codes of hx_gguf_open (the message always names the file):
//   QP_ENOENT   the file does not exist
//   QP_EIO      cannot open, stat or map the file, or it is not a regular file
//   QP_EFORMAT  not GGUF, truncated, anything running past the end of the file (strings,
//               arrays, counts, tensor data), unknown value type, bad general.alignment,
//               duplicate key or tensor name, negative dimension, misaligned tensor offset,
//               row length not a multiple of the type's block size
//   QP_ENOTSUP  GGUF version other than 2 and 3 (v1 used 32-bit lengths), unknown ggml type
//   QP_ERANGE   n_dims outside 1..4, element count or byte size overflowing int64/size_t,
//               arrays nested deeper than HX_GGUF_MAX_DEPTH
//   QP_ENOMEM   allocation failed
//
// Writer: key/values are serialized into byte buffers as they are set (so replacing a key is
// replacing its buffer); tensors are borrowed until write, which lays out the data section with
// each tensor at a multiple of the alignment, as ggml and gguf-py do, and renames a temporary
// file into place.
//
// Depends on kernels/qp.h and kernels/kn_types.h and libc/POSIX only; no other qprobe layer.
#include "hx_gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kn_types.h"
#include "qp.h"

// Deepest array nesting accepted (an array of arrays is depth 2). Real files use 1.
#define HX_GGUF_MAX_DEPTH 8
#define HX_GGUF_DEFAULT_ALIGNMENT 32
#define HX_GGUF_MAGIC "GGUF"

// Smallest encodings, used to reject counts before allocating for them.
#define MIN_KV_BYTES 13     // key length u64 + value type u32 + 1-byte value
#define MIN_TENSOR_BYTES 32 // name length u64 + n_dims u32 + one ne u64 + type u32 + offset u64

// ---------------------------------------------------------------------------------------------
// Types

struct hx_gguf {
    char *path;
    const uint8_t *map; // the whole file, read-only; NULL when the file is empty
    size_t size;
    uint32_t version;
    size_t alignment;
    size_t data_offset; // start of the data section (file offset)
    int64_t n_kv;
    struct hx_gguf_kv *kvs;
    int64_t n_tensors;
    struct hx_gguf_tensor *tensors;
    // Open-addressing hash tables of indices + 1 (0 = empty); capacity a power of two.
    uint32_t *kv_index, *tensor_index;
    size_t kv_cap, tensor_cap;
    uint64_t seed; // of qp_hash_bytes, random per reader (see qp.h)
};

// Parsing cursor over the mapping.
struct rd {
    const uint8_t *p;
    size_t size, pos;
    const char *path;
    char *err;
    char what[160]; // what is being read, for messages: "key 3 ('general.name')"
};

// ---------------------------------------------------------------------------------------------
// Helpers: little-endian decoding, hashing

static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p) { return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32; }

size_t hx_gguf_scalar_size(uint32_t type) {
    switch (type) {
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

static int type_known(uint32_t type) { return type <= HX_GGUF_FLOAT64; }

static int is_pow2(uint64_t x) { return x != 0 && (x & (x - 1)) == 0; }

// Finds name in a table; returns the index or -1. names(i) gives the i-th name.
static int64_t table_find(const uint32_t *tab, size_t cap, const char *name,
                          const char *(*names)(const void *, uint32_t), const void *ctx) {
    if (!tab) return -1;
    size_t len = strlen(name);
    uint64_t seed = ((const struct hx_gguf *)ctx)->seed;
    for (size_t i = qp_hash_bytes(name, len, seed) & (cap - 1);; i = (i + 1) & (cap - 1)) {
        if (tab[i] == 0) return -1;
        if (strcmp(names(ctx, tab[i] - 1), name) == 0) return tab[i] - 1;
    }
}

// Inserts index idx under name; returns 1 if the name was already present (not inserted).
static int table_insert(uint32_t *tab, size_t cap, const char *name, uint32_t idx,
                        const char *(*names)(const void *, uint32_t), const void *ctx) {
    size_t len = strlen(name);
    uint64_t seed = ((const struct hx_gguf *)ctx)->seed;
    for (size_t i = qp_hash_bytes(name, len, seed) & (cap - 1);; i = (i + 1) & (cap - 1)) {
        if (tab[i] == 0) {
            tab[i] = idx + 1;
            return 0;
        }
        if (strcmp(names(ctx, tab[i] - 1), name) == 0) return 1;
    }
}

static const char *kv_name(const void *ctx, uint32_t i) {
    return ((const struct hx_gguf *)ctx)->kvs[i].key;
}

static const char *tensor_name(const void *ctx, uint32_t i) {
    return ((const struct hx_gguf *)ctx)->tensors[i].name;
}

// A table with room for n entries at load factor <= 1/2.
static uint32_t *table_create(int64_t n, size_t *cap) {
    size_t c = 16;
    while (c < (size_t)n * 2) c *= 2;
    *cap = c;
    return calloc(c, sizeof(uint32_t));
}

// ---------------------------------------------------------------------------------------------
// Reader: cursor

static int rd_truncated(struct rd *r, uint64_t need) {
    return qp_fail(r->err, QP_EFORMAT,
                   "cannot read '%s': truncated: %s needs %llu bytes at offset %zu, "
                   "file has %zu",
                   r->path, r->what, (unsigned long long)need, r->pos, r->size);
}

static int rd_need(struct rd *r, uint64_t n) {
    if (n > r->size - r->pos) return rd_truncated(r, n);
    return 0;
}

static int rd_u32(struct rd *r, uint32_t *out) {
    int rc = rd_need(r, 4);
    if (rc) return rc;
    *out = le32(r->p + r->pos);
    r->pos += 4;
    return 0;
}

static int rd_u64(struct rd *r, uint64_t *out) {
    int rc = rd_need(r, 8);
    if (rc) return rc;
    *out = le64(r->p + r->pos);
    r->pos += 8;
    return 0;
}

// A GGUF string (u64 length + bytes): *s points into the map.
static int rd_str(struct rd *r, const char **s, uint64_t *len) {
    int rc = rd_u64(r, len);
    if (rc) return rc;
    if (*len > r->size - r->pos) {
        return qp_fail(r->err, QP_EFORMAT,
                       "cannot read '%s': %s: string of %llu bytes at offset %zu extends past "
                       "end of file (%zu bytes)",
                       r->path, r->what, (unsigned long long)*len, r->pos - 8, r->size);
    }
    *s = (const char *)r->p + r->pos;
    r->pos += (size_t)*len;
    return 0;
}

// A NUL-terminated heap copy of a GGUF string.
static int rd_str_copy(struct rd *r, char **out) {
    const char *s = NULL;
    uint64_t len = 0;
    int rc = rd_str(r, &s, &len);
    if (rc) return rc;
    char *c = malloc((size_t)len + 1);
    if (!c) return qp_fail(r->err, QP_ENOMEM, "cannot read '%s': out of memory", r->path);
    memcpy(c, s, (size_t)len);
    c[len] = 0;
    *out = c;
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Reader: values

static void value_free(struct hx_gguf_value *v) {
    if (v->type != HX_GGUF_ARRAY || !v->v.arr.items) return;
    for (uint64_t i = 0; i < v->v.arr.n; i++) value_free(&v->v.arr.items[i]);
    free(v->v.arr.items);
    v->v.arr.items = NULL;
}

static void scalar_decode(uint32_t type, const uint8_t *p, struct hx_gguf_value *v) {
    v->type = (enum hx_gguf_type)type;
    switch (type) {
    case HX_GGUF_UINT8: v->v.u = p[0]; break;
    case HX_GGUF_INT8: v->v.i = (int8_t)p[0]; break;
    case HX_GGUF_UINT16: v->v.u = (uint16_t)(p[0] | p[1] << 8); break;
    case HX_GGUF_INT16: v->v.i = (int16_t)(uint16_t)(p[0] | p[1] << 8); break;
    case HX_GGUF_UINT32: v->v.u = le32(p); break;
    case HX_GGUF_INT32: v->v.i = (int32_t)le32(p); break;
    case HX_GGUF_UINT64: v->v.u = le64(p); break;
    case HX_GGUF_INT64: v->v.i = (int64_t)le64(p); break;
    case HX_GGUF_BOOL: v->v.b = p[0] != 0; break;
    case HX_GGUF_FLOAT32: {
        uint32_t b = le32(p);
        float f;
        memcpy(&f, &b, 4);
        v->v.f = f;
        break;
    }
    case HX_GGUF_FLOAT64: {
        uint64_t b = le64(p);
        memcpy(&v->v.f, &b, 8);
        break;
    }
    default: QP_ASSERT(0);
    }
}

static int parse_value(struct rd *r, uint32_t type, struct hx_gguf_value *v, int depth);

static int parse_array(struct rd *r, struct hx_gguf_value *v, int depth) {
    v->type = HX_GGUF_ARRAY;
    v->v.arr.items = NULL;
    v->v.arr.data = NULL;
    v->v.arr.n = 0;
    if (depth > HX_GGUF_MAX_DEPTH) {
        return qp_fail(r->err, QP_ERANGE,
                       "cannot read '%s': %s: arrays nested deeper than %d levels", r->path,
                       r->what, HX_GGUF_MAX_DEPTH);
    }
    uint32_t et;
    uint64_t n;
    int rc = rd_u32(r, &et);
    if (!rc) rc = rd_u64(r, &n);
    if (rc) return rc;
    if (!type_known(et)) {
        return qp_fail(r->err, QP_EFORMAT, "cannot read '%s': %s: unknown array element type %u",
                       r->path, r->what, et);
    }
    v->v.arr.type = (enum hx_gguf_type)et;
    // Smallest element: its scalar size, a string's u64 length, an array's type + count.
    size_t min = et == HX_GGUF_STRING ? 8 : et == HX_GGUF_ARRAY ? 12 : hx_gguf_scalar_size(et);
    size_t left = r->size - r->pos;
    if (n > left / min) {
        return qp_fail(r->err, QP_EFORMAT,
                       "cannot read '%s': %s: array of %llu elements at offset %zu extends past "
                       "end of file (%zu bytes left)",
                       r->path, r->what, (unsigned long long)n, r->pos - 12, left);
    }
    v->v.arr.n = n;
    if (et != HX_GGUF_STRING && et != HX_GGUF_ARRAY) {
        v->v.arr.data = r->p + r->pos;
        r->pos += (size_t)n * min;
        return 0;
    }
    v->v.arr.data = r->p + r->pos;
    if (n == 0) return 0;
    v->v.arr.items = calloc((size_t)n, sizeof(struct hx_gguf_value));
    if (!v->v.arr.items) {
        v->v.arr.n = 0;
        return qp_fail(r->err, QP_ENOMEM, "cannot read '%s': out of memory", r->path);
    }
    for (uint64_t i = 0; i < n; i++) {
        v->v.arr.items[i].type = (enum hx_gguf_type)et;
        rc = parse_value(r, et, &v->v.arr.items[i], depth + 1);
        if (rc) {
            // items past i are zeroed: STRING (no allocations) or ARRAY with items == NULL.
            return rc;
        }
    }
    return 0;
}

static int parse_value(struct rd *r, uint32_t type, struct hx_gguf_value *v, int depth) {
    if (type == HX_GGUF_ARRAY) return parse_array(r, v, depth);
    if (type == HX_GGUF_STRING) {
        v->type = HX_GGUF_STRING;
        return rd_str(r, &v->v.str.ptr, &v->v.str.len);
    }
    size_t sz = hx_gguf_scalar_size(type);
    if (sz == 0) {
        return qp_fail(r->err, QP_EFORMAT, "cannot read '%s': %s: unknown value type %u",
                       r->path, r->what, type);
    }
    int rc = rd_need(r, sz);
    if (rc) return rc;
    scalar_decode(type, r->p + r->pos, v);
    r->pos += sz;
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Reader: header, key/values, tensor infos

static int parse_kvs(struct hx_gguf *g, struct rd *r, uint64_t n_kv) {
    if (n_kv > (r->size - r->pos) / MIN_KV_BYTES || n_kv >= UINT32_MAX / 2) {
        return qp_fail(r->err, QP_EFORMAT,
                       "cannot read '%s': key/value count %llu is more than the file can hold",
                       r->path, (unsigned long long)n_kv);
    }
    g->kvs = calloc(n_kv ? (size_t)n_kv : 1, sizeof(struct hx_gguf_kv));
    g->kv_index = table_create((int64_t)n_kv, &g->kv_cap);
    if (!g->kvs || !g->kv_index)
        return qp_fail(r->err, QP_ENOMEM, "cannot read '%s': out of memory", r->path);
    for (uint64_t i = 0; i < n_kv; i++) {
        struct hx_gguf_kv *kv = &g->kvs[i];
        snprintf(r->what, sizeof r->what, "key %llu", (unsigned long long)i);
        char *key;
        int rc = rd_str_copy(r, &key);
        if (rc) return rc;
        kv->key = key;
        g->n_kv = (int64_t)i + 1; // from here on freed by hx_gguf_close
        if (table_insert(g->kv_index, g->kv_cap, key, (uint32_t)i, kv_name, g)) {
            return qp_fail(r->err, QP_EFORMAT, "cannot read '%s': duplicate key '%.100s'",
                           r->path, key);
        }
        snprintf(r->what, sizeof r->what, "key %llu ('%.100s')", (unsigned long long)i, key);
        uint32_t type;
        rc = rd_u32(r, &type);
        if (rc) return rc;
        if (!type_known(type)) {
            return qp_fail(r->err, QP_EFORMAT,
                           "cannot read '%s': key '%.100s' has unknown value type %u", r->path,
                           key, type);
        }
        kv->val.type = (enum hx_gguf_type)type;
        rc = parse_value(r, type, &kv->val, 1);
        if (rc) return rc;
    }
    return 0;
}

// The file offset a tensor's data must start at a multiple of, to be read in place: the lowest
// set bit of its block size (2 for 18-byte q4_0 blocks, 4 for F32), at most 8. The reader
// refuses a tensor placed otherwise and the writer never places one so.
static size_t data_alignment(const struct kn_type_info *ti) {
    size_t need = ti->block_bytes & (~ti->block_bytes + 1);
    return need > 8 ? 8 : need ? need : 1;
}

static int read_alignment(struct hx_gguf *g, char *err) {
    g->alignment = HX_GGUF_DEFAULT_ALIGNMENT;
    const struct hx_gguf_kv *kv = hx_gguf_find(g, "general.alignment");
    if (!kv) return 0;
    if (kv->val.type != HX_GGUF_UINT32) {
        return qp_fail(err, QP_EFORMAT,
                       "cannot read '%s': general.alignment has value type %d, expected uint32",
                       g->path, (int)kv->val.type);
    }
    if (!is_pow2(kv->val.v.u)) {
        return qp_fail(err, QP_EFORMAT,
                       "cannot read '%s': general.alignment %llu is not a power of two",
                       g->path, (unsigned long long)kv->val.v.u);
    }
    g->alignment = (size_t)kv->val.v.u;
    return 0;
}

static int parse_tensor_info(struct hx_gguf *g, struct rd *r, uint64_t i) {
    struct hx_gguf_tensor *t = &g->tensors[i];
    snprintf(r->what, sizeof r->what, "tensor info %llu", (unsigned long long)i);
    char *name;
    int rc = rd_str_copy(r, &name);
    if (rc) return rc;
    t->name = name;
    g->n_tensors = (int64_t)i + 1;
    if (table_insert(g->tensor_index, g->tensor_cap, name, (uint32_t)i, tensor_name, g)) {
        return qp_fail(r->err, QP_EFORMAT, "cannot read '%s': duplicate tensor name '%.100s'",
                       r->path, name);
    }
    snprintf(r->what, sizeof r->what, "tensor info %llu ('%.100s')", (unsigned long long)i,
             name);
    uint32_t n_dims;
    if ((rc = rd_u32(r, &n_dims))) return rc;
    if (n_dims < 1 || n_dims > 4) {
        return qp_fail(r->err, QP_ERANGE,
                       "cannot read '%s': tensor '%.100s' has %u dimensions (1 to 4 supported)",
                       r->path, name, n_dims);
    }
    t->n_dims = (int)n_dims;
    int64_t nel = 1;
    for (int d = 0; d < 4; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        uint64_t ne;
        if ((rc = rd_u64(r, &ne))) return rc;
        if (ne > (uint64_t)INT64_MAX) {
            return qp_fail(r->err, QP_EFORMAT,
                           "cannot read '%s': tensor '%.100s' has negative dimension %lld",
                           r->path, name, (long long)(int64_t)ne);
        }
        t->ne[d] = (int64_t)ne;
        if (__builtin_mul_overflow(nel, t->ne[d], &nel)) {
            return qp_fail(r->err, QP_ERANGE,
                           "cannot read '%s': tensor '%.100s': element count overflows int64",
                           r->path, name);
        }
    }
    uint32_t type;
    uint64_t off;
    if ((rc = rd_u32(r, &type)) || (rc = rd_u64(r, &off))) return rc;
    const struct kn_type_info *ti = kn_type_info((int)(type > 1000000 ? 1000000 : type));
    if (!ti) {
        return qp_fail(r->err, QP_ENOTSUP,
                       "cannot read '%s': tensor '%.100s' has unknown ggml type %u", r->path,
                       name, type);
    }
    t->type = (int)type;
    t->offset = off;
    if (t->ne[0] % ti->block_size != 0) {
        return qp_fail(r->err, QP_EFORMAT,
                       "cannot read '%s': tensor '%.100s' has rows of %lld elements, not a "
                       "multiple of the %s block size %d",
                       r->path, name, (long long)t->ne[0], ti->name, ti->block_size);
    }
    // bytes = row bytes * rows (rows may wrap only when ne0 == 0, and then bytes are 0).
    uint64_t rows = (uint64_t)t->ne[1] * (uint64_t)t->ne[2] * (uint64_t)t->ne[3];
    uint64_t nb;
    if (__builtin_mul_overflow((uint64_t)(t->ne[0] / ti->block_size), ti->block_bytes, &nb) ||
        __builtin_mul_overflow(nb, rows, &nb) || nb > SIZE_MAX) {
        return qp_fail(r->err, QP_ERANGE,
                       "cannot read '%s': tensor '%.100s': byte size overflows", r->path, name);
    }
    t->nbytes = (size_t)nb;
    return 0;
}

static int parse_tensors(struct hx_gguf *g, struct rd *r, uint64_t n) {
    if (n > (r->size - r->pos) / MIN_TENSOR_BYTES || n >= UINT32_MAX / 2) {
        return qp_fail(r->err, QP_EFORMAT,
                       "cannot read '%s': tensor count %llu is more than the file can hold",
                       r->path, (unsigned long long)n);
    }
    g->tensors = calloc(n ? (size_t)n : 1, sizeof(struct hx_gguf_tensor));
    g->tensor_index = table_create((int64_t)n, &g->tensor_cap);
    if (!g->tensors || !g->tensor_index)
        return qp_fail(r->err, QP_ENOMEM, "cannot read '%s': out of memory", r->path);
    for (uint64_t i = 0; i < n; i++) {
        int rc = parse_tensor_info(g, r, i);
        if (rc) return rc;
    }
    // The data section starts at the next multiple of the alignment.
    size_t a = g->alignment;
    size_t pad = (a - r->pos % a) % a;
    if (r->pos > SIZE_MAX - pad) {
        return qp_fail(r->err, QP_ERANGE, "cannot read '%s': data offset overflows", r->path);
    }
    g->data_offset = r->pos + pad;
    for (uint64_t i = 0; i < n; i++) {
        struct hx_gguf_tensor *t = &g->tensors[i];
        if (t->offset % a != 0) {
            return qp_fail(r->err, QP_EFORMAT,
                           "cannot read '%s': tensor '%.100s' has offset %llu, not a multiple "
                           "of the alignment %zu",
                           r->path, t->name, (unsigned long long)t->offset, a);
        }
        uint64_t end;
        if (__builtin_add_overflow((uint64_t)g->data_offset, t->offset, &end) ||
            __builtin_add_overflow(end, (uint64_t)t->nbytes, &end) || end > r->size) {
            return qp_fail(r->err, QP_EFORMAT,
                           "cannot read '%s': tensor '%.100s' (%zu bytes at data offset %llu) "
                           "extends past end of file",
                           r->path, t->name, t->nbytes, (unsigned long long)t->offset);
        }
        // The mapping starts on a page, so the file offset decides how the data is aligned. Its
        // elements (or the fp16 fields of its blocks) are read in place: a general.alignment of 1
        // or 2 could put an F32 tensor at an odd address (a misaligned load; fuzz_gguf found
        // it). ggml and gguf-py align to 32, so their files never need it; such files are refused.
        const struct kn_type_info *ti = kn_type_info(t->type);
        size_t need = data_alignment(ti);
        if ((g->data_offset + t->offset) % need != 0) {
            return qp_fail(r->err, QP_EFORMAT,
                           "cannot read '%s': tensor '%.100s' starts at file offset %llu, not "
                           "aligned to the %zu bytes of its %s elements (general.alignment %zu)",
                           r->path, t->name, (unsigned long long)(g->data_offset + t->offset), need,
                           ti->name, a);
        }
        t->data = r->p + g->data_offset + t->offset;
    }
    return 0;
}

static int parse(struct hx_gguf *g, char *err) {
    struct rd r = {.p = g->map, .size = g->size, .path = g->path, .err = err};
    snprintf(r.what, sizeof r.what, "the header");
    int rc = rd_need(&r, 4);
    if (rc) return rc;
    if (memcmp(r.p, HX_GGUF_MAGIC, 4) != 0) {
        return qp_fail(err, QP_EFORMAT, "cannot read '%s': not a GGUF file (bad magic)",
                       g->path);
    }
    r.pos = 4;
    uint64_t n_tensors, n_kv;
    if ((rc = rd_u32(&r, &g->version))) return rc;
    if (g->version != 2 && g->version != 3) {
        const char *hint = (g->version & 0xffff) == 0 ? " (a big-endian file?)" : "";
        return qp_fail(err, QP_ENOTSUP,
                       "cannot read '%s': unsupported GGUF version %u%s (2 and 3 are supported)",
                       g->path, g->version, hint);
    }
    if ((rc = rd_u64(&r, &n_tensors)) || (rc = rd_u64(&r, &n_kv))) return rc;
    if ((rc = parse_kvs(g, &r, n_kv))) return rc;
    if ((rc = read_alignment(g, err))) return rc;
    return parse_tensors(g, &r, n_tensors);
}

// ---------------------------------------------------------------------------------------------
// Reader: public

int hx_gguf_open(const char *path, struct hx_gguf **out, char *err) {
    *out = NULL;
    struct hx_gguf *g = calloc(1, sizeof *g);
    if (!g || !(g->path = strdup(path))) {
        free(g);
        return qp_fail(err, QP_ENOMEM, "cannot read '%s': out of memory", path);
    }
    g->seed = qp_hash_seed(g);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        hx_gguf_close(g);
        return qp_fail(err, e == ENOENT ? QP_ENOENT : QP_EIO, "cannot read '%s': %s", path,
                       strerror(e));
    }
    struct stat st;
    int stat_ok = fstat(fd, &st) == 0;
    if (!stat_ok || !S_ISREG(st.st_mode)) {
        const char *why = stat_ok ? "not a regular file" : strerror(errno);
        int rc = qp_fail(err, QP_EIO, "cannot read '%s': %s", path, why);
        close(fd);
        hx_gguf_close(g);
        return rc;
    }
    g->size = (size_t)st.st_size;
    if (g->size > 0) {
        void *p = mmap(NULL, g->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            close(fd);
            hx_gguf_close(g);
            return qp_fail(err, QP_EIO, "cannot read '%s': cannot map: %s", path, strerror(e));
        }
        g->map = p;
    }
    close(fd);
    int rc = parse(g, err);
    if (rc) {
        hx_gguf_close(g);
        return rc;
    }
    *out = g;
    return 0;
}

void hx_gguf_release_pages(struct hx_gguf *g) {
    // A read-only private mapping that was never written has no private pages to lose.
    if (g && g->map) madvise((void *)g->map, g->size, MADV_DONTNEED);
}

void hx_gguf_mapping(const struct hx_gguf *g, const void **p, size_t *n) {
    *p = g->map;
    *n = g->map ? g->size : 0;
}

void hx_gguf_close(struct hx_gguf *g) {
    if (!g) return;
    for (int64_t i = 0; i < g->n_kv; i++) {
        free((char *)g->kvs[i].key);
        value_free(&g->kvs[i].val);
    }
    for (int64_t i = 0; i < g->n_tensors; i++) free((char *)g->tensors[i].name);
    free(g->kvs);
    free(g->tensors);
    free(g->kv_index);
    free(g->tensor_index);
    if (g->map) munmap((void *)g->map, g->size);
    free(g->path);
    free(g);
}

uint32_t hx_gguf_version(const struct hx_gguf *g) { return g->version; }
size_t hx_gguf_alignment(const struct hx_gguf *g) { return g->alignment; }
int64_t hx_gguf_n_kv(const struct hx_gguf *g) { return g->n_kv; }
int64_t hx_gguf_n_tensors(const struct hx_gguf *g) { return g->n_tensors; }
const char *hx_gguf_path(const struct hx_gguf *g) { return g->path; }

const struct hx_gguf_kv *hx_gguf_kv(const struct hx_gguf *g, int64_t i) {
    return i >= 0 && i < g->n_kv ? &g->kvs[i] : NULL;
}

const struct hx_gguf_tensor *hx_gguf_tensor(const struct hx_gguf *g, int64_t i) {
    return i >= 0 && i < g->n_tensors ? &g->tensors[i] : NULL;
}

const struct hx_gguf_kv *hx_gguf_find(const struct hx_gguf *g, const char *key) {
    int64_t i = table_find(g->kv_index, g->kv_cap, key, kv_name, g);
    return i < 0 ? NULL : &g->kvs[i];
}

const struct hx_gguf_tensor *hx_gguf_find_tensor(const struct hx_gguf *g, const char *name) {
    int64_t i = table_find(g->tensor_index, g->tensor_cap, name, tensor_name, g);
    return i < 0 ? NULL : &g->tensors[i];
}

int hx_gguf_get_int(const struct hx_gguf *g, const char *key, int64_t *out) {
    const struct hx_gguf_kv *kv = hx_gguf_find(g, key);
    if (!kv) return QP_ENOENT;
    switch (kv->val.type) {
    case HX_GGUF_UINT8:
    case HX_GGUF_UINT16:
    case HX_GGUF_UINT32:
    case HX_GGUF_UINT64:
        if (kv->val.v.u > (uint64_t)INT64_MAX) return QP_EFORMAT;
        *out = (int64_t)kv->val.v.u;
        return 0;
    case HX_GGUF_INT8:
    case HX_GGUF_INT16:
    case HX_GGUF_INT32:
    case HX_GGUF_INT64: *out = kv->val.v.i; return 0;
    default: return QP_EFORMAT;
    }
}

int hx_gguf_get_float(const struct hx_gguf *g, const char *key, double *out) {
    const struct hx_gguf_kv *kv = hx_gguf_find(g, key);
    if (!kv) return QP_ENOENT;
    if (kv->val.type != HX_GGUF_FLOAT32 && kv->val.type != HX_GGUF_FLOAT64) return QP_EFORMAT;
    *out = kv->val.v.f;
    return 0;
}

int hx_gguf_get_bool(const struct hx_gguf *g, const char *key, bool *out) {
    const struct hx_gguf_kv *kv = hx_gguf_find(g, key);
    if (!kv) return QP_ENOENT;
    if (kv->val.type != HX_GGUF_BOOL) return QP_EFORMAT;
    *out = kv->val.v.b;
    return 0;
}

int hx_gguf_get_str(const struct hx_gguf *g, const char *key, const char **s, size_t *len) {
    const struct hx_gguf_kv *kv = hx_gguf_find(g, key);
    if (!kv) return QP_ENOENT;
    if (kv->val.type != HX_GGUF_STRING) return QP_EFORMAT;
    *s = kv->val.v.str.ptr;
    *len = (size_t)kv->val.v.str.len;
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Writer: types and byte buffers

struct buf {
    uint8_t *p;
    size_t n, cap;
    int oom; // set when a growth failed; later appends are dropped
};

struct wkv {
    char *key;
    struct buf val; // u32 value type + encoded value
};

struct wtensor {
    char *name;
    int type, n_dims;
    int64_t ne[4];
    const void *data; // borrowed
    size_t nbytes;
    uint64_t offset;  // in the data section, set by writer_layout
    size_t header_at; // where the header holds that offset
};

struct hx_gguf_writer {
    struct wkv *kvs;
    size_t n_kv, cap_kv;
    struct wtensor *tensors;
    size_t n_tensors, cap_tensors;
};

static void buf_put(struct buf *b, const void *src, size_t n) {
    if (b->oom || n == 0) return;
    if (n > b->cap - b->n) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap - b->n < n) {
            if (cap > SIZE_MAX / 2) {
                b->oom = 1;
                return;
            }
            cap *= 2;
        }
        uint8_t *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}

static void buf_u32(struct buf *b, uint32_t v) {
    uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    buf_put(b, x, 4);
}

static void buf_u64(struct buf *b, uint64_t v) {
    buf_u32(b, (uint32_t)v);
    buf_u32(b, (uint32_t)(v >> 32));
}

static void buf_str(struct buf *b, const char *s, size_t len) {
    buf_u64(b, len);
    buf_put(b, s, len);
}

// Scalars are appended from host memory; the encoding is little-endian, as is every host
// qprobe runs on (x86-64).
static void buf_scalar(struct buf *b, const void *v, size_t size) { buf_put(b, v, size); }

// Replaces or appends key's value. Takes ownership of val (freed on failure too).
static int writer_put(struct hx_gguf_writer *w, const char *key, struct buf *val) {
    if (val->oom) {
        free(val->p);
        return QP_ENOMEM;
    }
    for (size_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kvs[i].key, key) == 0) {
            free(w->kvs[i].val.p);
            w->kvs[i].val = *val;
            return 0;
        }
    }
    if (w->n_kv == w->cap_kv) {
        size_t cap = w->cap_kv ? w->cap_kv * 2 : 32;
        struct wkv *k = realloc(w->kvs, cap * sizeof *k);
        if (!k) {
            free(val->p);
            return QP_ENOMEM;
        }
        w->kvs = k;
        w->cap_kv = cap;
    }
    char *kc = strdup(key);
    if (!kc) {
        free(val->p);
        return QP_ENOMEM;
    }
    w->kvs[w->n_kv].key = kc;
    w->kvs[w->n_kv].val = *val;
    w->n_kv++;
    return 0;
}

static int set_scalar(struct hx_gguf_writer *w, const char *key, uint32_t type, const void *v,
                      size_t size) {
    struct buf b = {0};
    buf_u32(&b, type);
    buf_scalar(&b, v, size);
    return writer_put(w, key, &b);
}

// Encodes v (of type type) without its type tag. 0 or QP_EINVAL on a malformed value.
static int encode_value(struct buf *b, enum hx_gguf_type type, const struct hx_gguf_value *v,
                        int depth) {
    if (depth > HX_GGUF_MAX_DEPTH) return QP_EINVAL;
    switch (type) {
    case HX_GGUF_UINT8: {
        uint8_t x = (uint8_t)v->v.u;
        buf_put(b, &x, 1);
        return 0;
    }
    case HX_GGUF_INT8: {
        int8_t x = (int8_t)v->v.i;
        buf_put(b, &x, 1);
        return 0;
    }
    case HX_GGUF_UINT16: {
        uint16_t x = (uint16_t)v->v.u;
        buf_scalar(b, &x, 2);
        return 0;
    }
    case HX_GGUF_INT16: {
        int16_t x = (int16_t)v->v.i;
        buf_scalar(b, &x, 2);
        return 0;
    }
    case HX_GGUF_UINT32: buf_u32(b, (uint32_t)v->v.u); return 0;
    case HX_GGUF_INT32: buf_u32(b, (uint32_t)(int32_t)v->v.i); return 0;
    case HX_GGUF_UINT64: buf_u64(b, v->v.u); return 0;
    case HX_GGUF_INT64: buf_u64(b, (uint64_t)v->v.i); return 0;
    case HX_GGUF_FLOAT32: {
        float x = (float)v->v.f;
        buf_scalar(b, &x, 4);
        return 0;
    }
    case HX_GGUF_FLOAT64: buf_scalar(b, &v->v.f, 8); return 0;
    case HX_GGUF_BOOL: {
        uint8_t x = v->v.b ? 1 : 0;
        buf_put(b, &x, 1);
        return 0;
    }
    case HX_GGUF_STRING: buf_str(b, v->v.str.ptr, (size_t)v->v.str.len); return 0;
    case HX_GGUF_ARRAY: {
        enum hx_gguf_type et = v->v.arr.type;
        uint64_t n = v->v.arr.n;
        if (!type_known((uint32_t)et)) return QP_EINVAL;
        buf_u32(b, (uint32_t)et);
        buf_u64(b, n);
        if (et == HX_GGUF_STRING || et == HX_GGUF_ARRAY) {
            if (n > 0 && !v->v.arr.items) return QP_EINVAL;
            for (uint64_t i = 0; i < n; i++) {
                int rc = encode_value(b, et, &v->v.arr.items[i], depth + 1);
                if (rc) return rc;
            }
            return 0;
        }
        size_t bytes;
        if (n > SIZE_MAX || qp_mul_overflow((size_t)n, hx_gguf_scalar_size(et), &bytes)) return QP_EINVAL;
        if (bytes > 0 && !v->v.arr.data) return QP_EINVAL;
        buf_put(b, v->v.arr.data, bytes);
        return 0;
    }
    }
    return QP_EINVAL;
}

// ---------------------------------------------------------------------------------------------
// Writer: public setters

int hx_gguf_writer_create(struct hx_gguf_writer **out) {
    *out = calloc(1, sizeof **out);
    return *out ? 0 : QP_ENOMEM;
}

void hx_gguf_writer_destroy(struct hx_gguf_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kvs[i].key);
        free(w->kvs[i].val.p);
    }
    for (size_t i = 0; i < w->n_tensors; i++) free(w->tensors[i].name);
    free(w->kvs);
    free(w->tensors);
    free(w);
}

int hx_gguf_writer_set_u32(struct hx_gguf_writer *w, const char *key, uint32_t v) {
    return set_scalar(w, key, HX_GGUF_UINT32, &v, 4);
}

int hx_gguf_writer_set_i32(struct hx_gguf_writer *w, const char *key, int32_t v) {
    return set_scalar(w, key, HX_GGUF_INT32, &v, 4);
}

int hx_gguf_writer_set_u64(struct hx_gguf_writer *w, const char *key, uint64_t v) {
    return set_scalar(w, key, HX_GGUF_UINT64, &v, 8);
}

int hx_gguf_writer_set_f32(struct hx_gguf_writer *w, const char *key, float v) {
    return set_scalar(w, key, HX_GGUF_FLOAT32, &v, 4);
}

int hx_gguf_writer_set_bool(struct hx_gguf_writer *w, const char *key, bool v) {
    uint8_t x = v ? 1 : 0;
    return set_scalar(w, key, HX_GGUF_BOOL, &x, 1);
}

int hx_gguf_writer_set_str(struct hx_gguf_writer *w, const char *key, const char *s) {
    struct buf b = {0};
    buf_u32(&b, HX_GGUF_STRING);
    buf_str(&b, s, strlen(s));
    return writer_put(w, key, &b);
}

int hx_gguf_writer_set_arr(struct hx_gguf_writer *w, const char *key, enum hx_gguf_type type,
                           const void *data, uint64_t n) {
    size_t sz = hx_gguf_scalar_size((uint32_t)type), bytes;
    if (sz == 0 || n > SIZE_MAX || qp_mul_overflow((size_t)n, sz, &bytes)) return QP_EINVAL;
    if (bytes > 0 && !data) return QP_EINVAL;
    struct buf b = {0};
    buf_u32(&b, HX_GGUF_ARRAY);
    buf_u32(&b, (uint32_t)type);
    buf_u64(&b, n);
    buf_put(&b, data, bytes);
    return writer_put(w, key, &b);
}

int hx_gguf_writer_set_arr_str(struct hx_gguf_writer *w, const char *key, const char *const *strs,
                               const size_t *lens, uint64_t n) {
    struct buf b = {0};
    buf_u32(&b, HX_GGUF_ARRAY);
    buf_u32(&b, HX_GGUF_STRING);
    buf_u64(&b, n);
    for (uint64_t i = 0; i < n; i++) buf_str(&b, strs[i], lens[i]);
    return writer_put(w, key, &b);
}

int hx_gguf_writer_set_value(struct hx_gguf_writer *w, const char *key,
                             const struct hx_gguf_value *v) {
    if (!type_known((uint32_t)v->type)) return QP_EINVAL;
    struct buf b = {0};
    buf_u32(&b, (uint32_t)v->type);
    int rc = encode_value(&b, v->type, v, 1);
    if (rc) {
        free(b.p);
        return rc;
    }
    return writer_put(w, key, &b);
}

int hx_gguf_writer_add_tensor(struct hx_gguf_writer *w, const char *name, int type, int n_dims,
                              const int64_t *ne, const void *data, size_t nbytes) {
    const struct kn_type_info *ti = kn_type_info(type);
    if (!ti || n_dims < 1 || n_dims > 4) return QP_EINVAL;
    int64_t nel = 1;
    struct wtensor t = {.type = type, .n_dims = n_dims, .data = data, .nbytes = nbytes};
    for (int d = 0; d < 4; d++) t.ne[d] = 1;
    for (int d = 0; d < n_dims; d++) {
        if (ne[d] < 0 || __builtin_mul_overflow(nel, ne[d], &nel)) return QP_EINVAL;
        t.ne[d] = ne[d];
    }
    size_t row = kn_row_bytes(type, t.ne[0]), want;
    uint64_t rows;
    if ((row == 0 && t.ne[0] != 0) ||
        __builtin_mul_overflow((uint64_t)t.ne[1], (uint64_t)t.ne[2], &rows) ||
        __builtin_mul_overflow(rows, (uint64_t)t.ne[3], &rows) || rows > SIZE_MAX ||
        qp_mul_overflow(row, (size_t)rows, &want) || want != nbytes)
        return QP_EINVAL;
    if (nbytes > 0 && !data) return QP_EINVAL;
    for (size_t i = 0; i < w->n_tensors; i++)
        if (strcmp(w->tensors[i].name, name) == 0) return QP_EINVAL;
    if (w->n_tensors == w->cap_tensors) {
        size_t cap = w->cap_tensors ? w->cap_tensors * 2 : 64;
        struct wtensor *p = realloc(w->tensors, cap * sizeof *p);
        if (!p) return QP_ENOMEM;
        w->tensors = p;
        w->cap_tensors = cap;
    }
    if (!(t.name = strdup(name))) return QP_ENOMEM;
    w->tensors[w->n_tensors++] = t;
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Writer: output

static int write_all(FILE *f, const void *p, size_t n) {
    return n == 0 || fwrite(p, 1, n, f) == n ? 0 : -1;
}

static int write_zeros(FILE *f, size_t n) {
    static const uint8_t zeros[256];
    while (n > 0) {
        size_t k = QP_MIN(n, sizeof zeros);
        if (write_all(f, zeros, k)) return -1;
        n -= k;
    }
    return 0;
}

// The alignment to use: general.alignment when set (must be a power-of-two uint32), else 32.
static int writer_alignment(const struct hx_gguf_writer *w, size_t *out) {
    *out = HX_GGUF_DEFAULT_ALIGNMENT;
    for (size_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kvs[i].key, "general.alignment") != 0) continue;
        const struct buf *b = &w->kvs[i].val;
        if (b->n != 8 || le32(b->p) != HX_GGUF_UINT32 || !is_pow2(le32(b->p + 4)))
            return QP_EINVAL;
        *out = le32(b->p + 4);
    }
    return 0;
}

// The header and tensor infos into h, each tensor's offset field left zero at its header_at (the
// layout depends on the header's length; hx_gguf_writer_write fills them in); h->oom on failure.
static void writer_header(struct hx_gguf_writer *w, struct buf *h) {
    buf_put(h, HX_GGUF_MAGIC, 4);
    buf_u32(h, 3);
    buf_u64(h, w->n_tensors);
    buf_u64(h, w->n_kv);
    for (size_t i = 0; i < w->n_kv; i++) {
        buf_str(h, w->kvs[i].key, strlen(w->kvs[i].key));
        buf_put(h, w->kvs[i].val.p, w->kvs[i].val.n);
    }
    for (size_t i = 0; i < w->n_tensors; i++) {
        struct wtensor *t = &w->tensors[i];
        buf_str(h, t->name, strlen(t->name));
        buf_u32(h, (uint32_t)t->n_dims);
        for (int d = 0; d < t->n_dims; d++) buf_u64(h, (uint64_t)t->ne[d]);
        buf_u32(h, (uint32_t)t->type);
        t->header_at = h->n;
        buf_u64(h, 0);
    }
}

static uint64_t pad_to(uint64_t n, size_t align) { return (align - n % align) % align; }

// Places the tensors in the data section, which starts at file offset data_start (a multiple of
// align): each at the next multiple of align after the one before, as ggml and gguf-py do, moved
// on by align while its file offset does not suit its type (data_alignment; only a
// general.alignment below 8 can need that, and then the copy still reads back).
static void writer_layout(struct hx_gguf_writer *w, size_t align, uint64_t data_start) {
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_tensors; i++) {
        struct wtensor *t = &w->tensors[i];
        size_t need = data_alignment(kn_type_info(t->type));
        while ((data_start + off) % need != 0) off += align;
        t->offset = off;
        off += t->nbytes + pad_to(t->nbytes, align);
    }
}

// Writes header h and the tensors' data at their offsets (zeros between, and after the last to a
// multiple of align) into the temporary file tmp (opened on fd), then renames it to path; the
// temporary file is removed on any failure.
static int writer_file(const struct hx_gguf_writer *w, const struct buf *h, size_t align, int fd, const char *tmp,
                       const char *path, char *err) {
    fchmod(fd, 0644);
    FILE *f = fdopen(fd, "wb");
    int bad = f == NULL;
    if (!f) close(fd);
    uint64_t data_start = h->n + pad_to(h->n, align), pos = data_start;
    if (!bad) bad = write_all(f, h->p, h->n) || write_zeros(f, data_start - h->n);
    for (size_t i = 0; !bad && i < w->n_tensors; i++) {
        const struct wtensor *t = &w->tensors[i];
        uint64_t at = data_start + t->offset;
        bad = write_zeros(f, at - pos) || write_all(f, t->data, t->nbytes) ||
              write_zeros(f, pad_to(t->nbytes, align));
        pos = at + t->nbytes + pad_to(t->nbytes, align);
    }
    int e = errno;
    if (f) {
        if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
            if (!bad) e = errno;
            bad = 1;
        }
        if (fclose(f) != 0 && !bad) {
            e = errno;
            bad = 1;
        }
    }
    if (!bad && rename(tmp, path) != 0) {
        e = errno;
        bad = 1;
    }
    if (bad) unlink(tmp);
    if (bad) return qp_fail(err, QP_EWRITE, "cannot write '%s': %s", path, strerror(e));
    return 0;
}

int hx_gguf_writer_write(struct hx_gguf_writer *w, const char *path, char *err) {
    size_t align;
    if (writer_alignment(w, &align)) {
        return qp_fail(err, QP_EINVAL,
                       "cannot write '%s': general.alignment must be a power-of-two uint32",
                       path);
    }
    struct buf h = {0};
    writer_header(w, &h);
    writer_layout(w, align, h.n + pad_to(h.n, align));
    size_t end = h.n; // the offsets into the fields left for them (no growth: they lie inside)
    for (size_t i = 0; i < w->n_tensors && !h.oom; i++) {
        h.n = w->tensors[i].header_at;
        buf_u64(&h, w->tensors[i].offset);
    }
    h.n = end;
    if (h.oom) {
        free(h.p);
        return qp_fail(err, QP_ENOMEM, "cannot write '%s': out of memory", path);
    }
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 16);
    if (!tmp) {
        free(h.p);
        return qp_fail(err, QP_ENOMEM, "cannot write '%s': out of memory", path);
    }
    snprintf(tmp, plen + 16, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(tmp), rc;
    if (fd < 0) rc = qp_fail(err, QP_EIO, "cannot write '%s': %s", path, strerror(errno));
    else rc = writer_file(w, &h, align, fd, tmp, path, err);
    free(h.p);
    free(tmp);
    return rc;
}
