// gguf.h — GGUF v2/v3 reader (mmap, fully validated) and writer.
//
// The reader maps the file read-only and checks every length, count, type and offset against
// the file size before anything is used: a corrupt file gives QP_EFORMAT/QP_ERANGE and a
// one-line message naming the file, never a crash. Tensor data stays in the mapping.
// The writer collects key/values and tensors, then writes the file atomically (temporary file
// in the same directory + rename), so a crash never leaves a half-written model.
// Depends on kernels/qp.h and kernels/kn_types.h; no other qprobe layer.
#ifndef HX_GGUF_H
#define HX_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum hx_gguf_type {
    HX_GGUF_UINT8 = 0,
    HX_GGUF_INT8 = 1,
    HX_GGUF_UINT16 = 2,
    HX_GGUF_INT16 = 3,
    HX_GGUF_UINT32 = 4,
    HX_GGUF_INT32 = 5,
    HX_GGUF_FLOAT32 = 6,
    HX_GGUF_BOOL = 7,
    HX_GGUF_STRING = 8,
    HX_GGUF_ARRAY = 9,
    HX_GGUF_UINT64 = 10,
    HX_GGUF_INT64 = 11,
    HX_GGUF_FLOAT64 = 12,
};

// A parsed metadata value. Strings point into the mapping (not NUL-terminated).
struct hx_gguf_value {
    enum hx_gguf_type type;
    union {
        uint64_t u;  // UINT8/16/32/64
        int64_t i;   // INT8/16/32/64
        double f;    // FLOAT32/64
        bool b;      // BOOL
        struct {
            const char *ptr;
            uint64_t len;
        } str;       // STRING
        struct {
            enum hx_gguf_type type;          // element type
            uint64_t n;                      // element count
            const uint8_t *data;             // raw little-endian elements (numeric/bool), in the map
            struct hx_gguf_value *items;     // parsed elements for STRING and ARRAY elements, else NULL
        } arr;       // ARRAY (nesting allowed)
    } v;
};

struct hx_gguf_kv {
    const char *key; // NUL-terminated copy
    struct hx_gguf_value val;
};

struct hx_gguf_tensor {
    const char *name;  // NUL-terminated copy
    int n_dims;        // 1..4
    int64_t ne[4];     // ne[0] contiguous; unused dims are 1
    int type;          // ggml type id (enum kn_type)
    uint64_t offset;   // relative to the data section
    size_t nbytes;     // from the type table
    const void *data;  // in the mapping
};

struct hx_gguf; // reader, opaque

// Opens and validates path. On success *out owns the mapping; close with hx_gguf_close.
// On failure *out is NULL and err holds "cannot read 'PATH': ...".
int hx_gguf_open(const char *path, struct hx_gguf **out, char *err);
void hx_gguf_close(struct hx_gguf *g);
// Lets the kernel drop the mapping's resident pages (they stay valid: the next read faults them
// back in from the file). For a process done with most of the file, e.g. after quantizing it.
void hx_gguf_release_pages(struct hx_gguf *g);
// The file's read-only mapping (NULL, 0 for an empty file).
void hx_gguf_mapping(const struct hx_gguf *g, const void **p, size_t *n);

uint32_t hx_gguf_version(const struct hx_gguf *g);
size_t hx_gguf_alignment(const struct hx_gguf *g);
int64_t hx_gguf_n_kv(const struct hx_gguf *g);
const struct hx_gguf_kv *hx_gguf_kv(const struct hx_gguf *g, int64_t i);
const struct hx_gguf_kv *hx_gguf_find(const struct hx_gguf *g, const char *key); // NULL if absent
int64_t hx_gguf_n_tensors(const struct hx_gguf *g);
const struct hx_gguf_tensor *hx_gguf_tensor(const struct hx_gguf *g, int64_t i);
const struct hx_gguf_tensor *hx_gguf_find_tensor(const struct hx_gguf *g, const char *name);
const char *hx_gguf_path(const struct hx_gguf *g);

// Typed getters: 0 on success, QP_ENOENT if absent, QP_EFORMAT if the type does not convert
// (any integer type converts to int64 when in range; FLOAT32/64 to double).
int hx_gguf_get_int(const struct hx_gguf *g, const char *key, int64_t *out);
int hx_gguf_get_float(const struct hx_gguf *g, const char *key, double *out);
int hx_gguf_get_bool(const struct hx_gguf *g, const char *key, bool *out);
int hx_gguf_get_str(const struct hx_gguf *g, const char *key, const char **s, size_t *len);

// ---------------------------------------------------------------------------------------------
// Writer. Keys are written in insertion order; setting an existing key replaces its value in
// place. Data pointers passed to add_tensor are borrowed until write returns.

struct hx_gguf_writer;

int hx_gguf_writer_create(struct hx_gguf_writer **out);
void hx_gguf_writer_destroy(struct hx_gguf_writer *w);

int hx_gguf_writer_set_u32(struct hx_gguf_writer *w, const char *key, uint32_t v);
int hx_gguf_writer_set_i32(struct hx_gguf_writer *w, const char *key, int32_t v);
int hx_gguf_writer_set_u64(struct hx_gguf_writer *w, const char *key, uint64_t v);
int hx_gguf_writer_set_f32(struct hx_gguf_writer *w, const char *key, float v);
int hx_gguf_writer_set_bool(struct hx_gguf_writer *w, const char *key, bool v);
int hx_gguf_writer_set_str(struct hx_gguf_writer *w, const char *key, const char *s);
// Arrays of a numeric/bool type: n elements of the type's size, copied.
int hx_gguf_writer_set_arr(struct hx_gguf_writer *w, const char *key, enum hx_gguf_type type,
                           const void *data, uint64_t n);
// Arrays of strings: n strings with explicit lengths, copied.
int hx_gguf_writer_set_arr_str(struct hx_gguf_writer *w, const char *key, const char *const *strs,
                               const size_t *lens, uint64_t n);
// Copies a value from a reader (any type, including nested arrays).
int hx_gguf_writer_set_value(struct hx_gguf_writer *w, const char *key,
                             const struct hx_gguf_value *v);

// ne[0] is the contiguous dimension. nbytes must equal the type table's size.
int hx_gguf_writer_add_tensor(struct hx_gguf_writer *w, const char *name, int type, int n_dims,
                              const int64_t *ne, const void *data, size_t nbytes);

// Writes GGUF v3 with general.alignment (default 32) to path atomically.
int hx_gguf_writer_write(struct hx_gguf_writer *w, const char *path, char *err);

// Bytes of one scalar of a value type; 0 for STRING, ARRAY and unknown types.
size_t hx_gguf_scalar_size(uint32_t type);

#endif
