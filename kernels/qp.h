// qp.h — the shared basics every layer of qprobe uses: error codes, always-on asserts,
// aligned allocation, and the scalar fp16/bf16 conversions that match ggml's.
//
// It lives in the bottom layer (kernels/) so that every folder may include it; it depends on
// libc only.
#ifndef QP_H
#define QP_H

#include <stddef.h>
#include <stdint.h>

// ---------------------------------------------------------------------------------------------
// Error codes. Fallible functions return 0 or one of these (negative). The detailed message
// goes into a caller-owned buffer of QP_ERRLEN bytes (the "err" out-parameter), written in
// git's style: lowercase, says what failed, quotes the subject.

enum {
    QP_OK = 0,
    QP_EIO = -1,      // cannot open, read or map a file, or create an output (bad path)
    QP_EFORMAT = -2,  // the file or text is not what it claims to be
    QP_ERANGE = -3,   // a size, dimension or offset is out of the supported range
    QP_ENOMEM = -4,   // allocation failed
    QP_EINVAL = -5,   // bad argument or option value given by the user
    QP_ENOTSUP = -6,  // valid input that this build does not support
    QP_ENOENT = -7,   // a named key, tensor or file is missing
    QP_EINTR = -8,    // interrupted by a signal (Ctrl-C) before finishing
    QP_EWRITE = -9,   // an I/O failure while running: writing an output or the study database
                      // failed midway (disk full, file too large, device error)
    QP_ENUMERIC = -10, // a computation produced NaN or infinity (training diverged): a runtime failure
};

#define QP_ERRLEN 512

const char *qp_strerror(int code);

// Formats a message into err (QP_ERRLEN bytes) and returns code, so that callers can write
// `return qp_fail(err, QP_EFORMAT, "cannot read '%s': ...", path);`. err may be NULL. The message
// is kept on one line: control characters in it become spaces.
int qp_fail(char *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

// ---------------------------------------------------------------------------------------------
// Always-on assert for programmer errors (impossible shapes, bad enums). Bad input never
// asserts: it gets an error code and a message.

#define QP_ASSERT(cond)                                                                        \
    do {                                                                                       \
        if (!(cond)) qp_assert_fail(__FILE__, __LINE__, #cond);                                \
    } while (0)

_Noreturn void qp_assert_fail(const char *file, int line, const char *cond);

#define QP_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define QP_MIN(a, b) ((a) < (b) ? (a) : (b))
#define QP_MAX(a, b) ((a) > (b) ? (a) : (b))

// ---------------------------------------------------------------------------------------------
// Memory. SIMD buffers are 64-byte aligned. qp_alloc returns NULL on failure (never aborts);
// free with qp_free. Sizes are checked for overflow by qp_alloc_array.

#define QP_ALIGN 64
void *qp_alloc(size_t bytes);
void *qp_alloc_array(size_t count, size_t size);  // NULL on overflow or failure
void *qp_calloc_array(size_t count, size_t size); // zeroed
void qp_free(void *p);

// A list of owned buffers (each from qp_alloc*), freed together: what a model, a quantized
// model or any other result made of many allocations keeps so that one call releases it all.
// Zero-initialise it ({0}); not thread-safe.
struct qp_owned {
    void **bufs; // n buffers, cap slots (malloc'd)
    int n, cap;
};
// Takes buf over. 0, or QP_ENOMEM when buf is NULL or the list cannot grow (buf is then freed),
// so that `if (qp_owned_add(&o, qp_alloc(n))) return QP_ENOMEM;` leaks nothing.
int qp_owned_add(struct qp_owned *o, void *buf);
// Whether p is one of the buffers (its start).
int qp_owned_has(const struct qp_owned *o, const void *p);
// Frees every buffer and the list; o is left empty and reusable.
void qp_owned_free(struct qp_owned *o);

// count * size without overflow: 0 and *out set on success, -1 on overflow.
static inline int qp_mul_overflow(size_t a, size_t b, size_t *out) {
    return __builtin_mul_overflow(a, b, out) ? -1 : 0;
}

// ---------------------------------------------------------------------------------------------
// fp16 / bf16 scalar conversions, bit-exact with ggml's reference conversions:
// fp32→fp16 rounds to nearest even (as F16C's _cvtss_sh with rounding mode 0 does);
// fp32→bf16 rounds to nearest even and keeps NaNs quiet (ggml_compute_fp32_to_bf16).

float qp_fp16_to_fp32(uint16_t h);
uint16_t qp_fp32_to_fp16(float f);
float qp_bf16_to_fp32(uint16_t h);
uint16_t qp_fp32_to_bf16(float f);

// Round to nearest, ties to even, for |f| <= 2^22 (ggml's nearest_int): adding 1.5 * 2^23 leaves
// the rounded integer in the low mantissa bits. Used wherever llama.cpp's rounding is reproduced.
static inline int qp_nearest_int(float f) {
    float v = f + 12582912.0f;
    int32_t i;
    __builtin_memcpy(&i, &v, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

// ---------------------------------------------------------------------------------------------
// Time and version.

double qp_now(void); // monotonic seconds
// The process's peak resident set so far, in MiB (getrusage's ru_maxrss: file pages included).
double qp_peak_rss_mib(void);
// Online CPUs (1..256): the default thread count.
int qp_cpu_count(void);
extern const char qp_version[];

// A seeded string hash for hash tables filled from files: 64-bit FNV-1a from a random start,
// then a final mix so the table index depends on every bit. Plain FNV's low bits depend only on
// the low bits of its state, so a forged file could put every key into one bucket and turn a
// load into a quadratic crawl (65,536 such GGUF keys took 33 s); with an unknown seed it cannot
// aim. qp_hash_seed gives the seed: random bytes from the kernel, else what varies between runs
// (salt: any address of the caller's).
uint64_t qp_hash_bytes(const void *data, size_t n, uint64_t seed);
uint64_t qp_hash_seed(const void *salt);

#endif
