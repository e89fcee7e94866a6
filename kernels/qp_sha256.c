// sha256.c — SHA-256 as FIPS 180-4 specifies it (sha256.h): 64-byte blocks, big-endian words,
// 64 rounds with the constants of the first 64 primes' cube roots.
#include "qp_sha256.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "qp.h"

static const uint32_t qp_sha256_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static inline uint32_t hx_rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

static void qp_sha256_block(uint32_t h[8], const uint8_t *p) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 |
               (uint32_t)p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = hx_rotr(w[i - 15], 7) ^ hx_rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = hx_rotr(w[i - 2], 17) ^ hx_rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = k + (hx_rotr(e, 6) ^ hx_rotr(e, 11) ^ hx_rotr(e, 25)) + ((e & f) ^ (~e & g)) +
                      qp_sha256_k[i] + w[i];
        uint32_t t2 = (hx_rotr(a, 2) ^ hx_rotr(a, 13) ^ hx_rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        k = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += k;
}

void qp_sha256_init(struct qp_sha256 *s) {
    static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, h0, sizeof h0);
    s->n_bytes = 0;
    s->fill = 0;
}

void qp_sha256_update(struct qp_sha256 *s, const void *data, size_t n) {
    const uint8_t *p = data;
    s->n_bytes += n;
    if (s->fill) {
        size_t take = QP_MIN(n, 64 - s->fill);
        memcpy(s->block + s->fill, p, take);
        s->fill += take, p += take, n -= take;
        if (s->fill < 64) return;
        qp_sha256_block(s->h, s->block);
        s->fill = 0;
    }
    for (; n >= 64; p += 64, n -= 64) qp_sha256_block(s->h, p);
    memcpy(s->block, p, n);
    s->fill = n;
}

void qp_sha256_final(struct qp_sha256 *s, char hex[65]) {
    uint64_t bits = s->n_bytes * 8;
    uint8_t pad[72] = {0x80};
    size_t pad_len = (s->fill < 56 ? 56 : 120) - s->fill;
    for (int i = 0; i < 8; i++) pad[pad_len + i] = (uint8_t)(bits >> (56 - 8 * i));
    qp_sha256_update(s, pad, pad_len + 8);
    for (int i = 0; i < 8; i++) snprintf(hex + 8 * i, 9, "%08x", s->h[i]);
}

void qp_sha256_hex(const void *data, size_t n, char hex[65]) {
    struct qp_sha256 s;
    qp_sha256_init(&s);
    qp_sha256_update(&s, data, n);
    qp_sha256_final(&s, hex);
}

int qp_sha256_file(const char *path, char hex[65], char *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return qp_fail(err, QP_EIO, "cannot read '%s': %s", path, strerror(errno));
    struct qp_sha256 s;
    qp_sha256_init(&s);
    static _Thread_local uint8_t buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) qp_sha256_update(&s, buf, n);
    int bad = ferror(f);
    fclose(f);
    if (bad) return qp_fail(err, QP_EIO, "cannot read '%s': read error", path);
    qp_sha256_final(&s, hex);
    return 0;
}
