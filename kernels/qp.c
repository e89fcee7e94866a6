// qp.c — the shared basics (see qp.h). libc only.
#include "qp.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#ifndef QP_VERSION
#define QP_VERSION "0.1.0"
#endif
const char qp_version[] = QP_VERSION;

const char *qp_strerror(int code) {
    switch (code) {
    case QP_OK: return "ok";
    case QP_EIO: return "i/o error";
    case QP_EFORMAT: return "bad format";
    case QP_ERANGE: return "out of range";
    case QP_ENOMEM: return "out of memory";
    case QP_EINVAL: return "invalid argument";
    case QP_ENOTSUP: return "not supported";
    case QP_ENOENT: return "not found";
    case QP_EINTR: return "interrupted";
    case QP_EWRITE: return "write failed";
    case QP_ENUMERIC: return "numeric failure";
    default: return "unknown error";
    }
}

int qp_fail(char *err, int code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, QP_ERRLEN, fmt, ap);
        va_end(ap);
        // Messages are one line: control characters from quoted input (a path or a key holding
        // a newline) become spaces.
        for (char *c = err; *c; c++)
            if ((unsigned char)*c < 0x20 || *c == 0x7f) *c = ' ';
    }
    return code;
}

void qp_assert_fail(const char *file, int line, const char *cond) {
    fprintf(stderr, "qprobe: internal error at %s:%d: assertion '%s' failed\n", file, line, cond);
    fflush(stderr);
    abort();
}

// ---------------------------------------------------------------------------------------------

void *qp_alloc(size_t bytes) {
    if (bytes == 0) bytes = QP_ALIGN;
    size_t rounded = (bytes + QP_ALIGN - 1) & ~(size_t)(QP_ALIGN - 1);
    if (rounded < bytes) return NULL;
    return aligned_alloc(QP_ALIGN, rounded);
}

void *qp_alloc_array(size_t count, size_t size) {
    size_t bytes;
    if (qp_mul_overflow(count, size, &bytes)) return NULL;
    return qp_alloc(bytes);
}

void *qp_calloc_array(size_t count, size_t size) {
    size_t bytes;
    if (qp_mul_overflow(count, size, &bytes)) return NULL;
    void *p = qp_alloc(bytes);
    if (p) memset(p, 0, bytes);
    return p;
}

void qp_free(void *p) { free(p); }

int qp_owned_add(struct qp_owned *o, void *buf) {
    if (!buf) return QP_ENOMEM;
    if (o->n == o->cap) {
        int cap = o->cap ? 2 * o->cap : 16;
        void **nb = realloc(o->bufs, (size_t)cap * sizeof *nb);
        if (!nb) {
            qp_free(buf);
            return QP_ENOMEM;
        }
        o->bufs = nb;
        o->cap = cap;
    }
    o->bufs[o->n++] = buf;
    return 0;
}

int qp_owned_has(const struct qp_owned *o, const void *p) {
    for (int i = 0; i < o->n; i++)
        if (o->bufs[i] == p) return 1;
    return 0;
}

void qp_owned_free(struct qp_owned *o) {
    for (int i = 0; i < o->n; i++) qp_free(o->bufs[i]);
    free(o->bufs);
    memset(o, 0, sizeof *o);
}

// ---------------------------------------------------------------------------------------------
// fp16: IEEE binary16. The conversions below are written for exactness, not speed; bulk
// conversions in the engine use F16C where the CPU has it, which gives identical bits.

float qp_fp16_to_fp32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { // subnormal: normalise
            int e = -1;
            do {
                man <<= 1;
                e++;
            } while (!(man & 0x400));
            man &= 0x3ff;
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | (man << 13);
        }
    } else if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t qp_fp32_to_fp16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u) { // inf or nan
        return (uint16_t)(sign | 0x7c00 | (absx > 0x7f800000u ? 0x200 | ((absx >> 13) & 0x3ff) : 0));
    }
    if (absx >= 0x477ff000u) return sign | 0x7c00; // rounds to >= 65520: overflow to inf
    if (absx < 0x38800000u) {                       // result is subnormal or zero
        if (absx < 0x33000000u) return sign;         // below half the smallest subnormal
        uint32_t e = absx >> 23;
        uint32_t man = (absx & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - e; // 14..24 (value = man * 2^(e-150), unit 2^-24)
        uint32_t q = man >> shift;
        uint32_t rem = man & ((1u << shift) - 1);
        uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1))) q++;
        return (uint16_t)(sign | q);
    }
    uint32_t e = (absx >> 23) - 127 + 15;
    uint32_t man = absx & 0x7fffff;
    uint32_t q = (e << 10) | (man >> 13);
    uint32_t rem = man & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (q & 1))) q++; // may carry into the exponent: fine
    return (uint16_t)(sign | q);
}

float qp_bf16_to_fp32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t qp_fp32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 64); // quiet nan
    return (uint16_t)((x + (0x7fff + ((x >> 16) & 1))) >> 16);
}

double qp_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double qp_peak_rss_mib(void) {
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) == 0 ? (double)ru.ru_maxrss / 1024 : 0; // KiB on Linux
}

int qp_cpu_count(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (n > 256 ? 256 : (int)n);
}

// ---------------------------------------------------------------------------------------------
// Seeded hashing

uint64_t qp_hash_bytes(const void *data, size_t n, uint64_t seed) {
    const uint8_t *s = data;
    uint64_t h = 1469598103934665603ull ^ seed;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 1099511628211ull;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

uint64_t qp_hash_seed(const void *salt) {
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != (ssize_t)sizeof seed) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        seed = (uint64_t)(uintptr_t)salt ^ (uint64_t)ts.tv_nsec << 20 ^ (uint64_t)getpid();
    }
    return seed;
}
