// sha256.h — SHA-256 (FIPS 180-4), for the model, tokenizer and text hashes recorded with every
// run. Streaming: init, update any number of times, final. Depends on libc only.
#ifndef HX_SHA256_H
#define HX_SHA256_H

#include <stddef.h>
#include <stdint.h>

struct qp_sha256 {
    uint32_t h[8];
    uint64_t n_bytes;    // message length so far
    uint8_t block[64];   // pending partial block
    size_t fill;         // bytes in block
};

void qp_sha256_init(struct qp_sha256 *s);
void qp_sha256_update(struct qp_sha256 *s, const void *data, size_t n);
// Writes the digest as 64 lowercase hex digits and a NUL into hex (65 bytes).
void qp_sha256_final(struct qp_sha256 *s, char hex[65]);

// The digest of a buffer / of a whole file (0, or QP_EIO with err naming the file).
void qp_sha256_hex(const void *data, size_t n, char hex[65]);
int qp_sha256_file(const char *path, char hex[65], char *err);

#endif
