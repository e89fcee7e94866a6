// fuzz_refcache.c — fuzz target for the reference cache file (harness/run/hx_refcache.c,
// hx_refcache_open and the readers): the memory-mapped file beside the study database whose
// identity is checked by its header and a SHA-256 of its body.
//
// Once per process two genuine caches of stories260K are built with qprobe's own reference pass
// (hx_refcache_build, ctx 4 — the smallest window, to keep the files and their hashing small —
// LLAMACPP protocol): A with 2 chunks and no per-layer data, B with 1 chunk and one layer chunk.
// The input is
//   byte 0: bit 0 cache A or B; bit 1 "re-hash": after the edits the body's SHA-256 is written
//           into the header (when the file has the genuine size: any other is refused before
//           hashing), so that mutated bodies reach the readers; bit 2 "raw": the rest of
//           the input is the whole file (a foreign file), else it edits the genuine one:
//   bytes 1-3: the file's new size (little endian; 0xffffff keeps it, else modulo size + 4097,
//           zero-padded), then 4-byte edits: a 3-byte offset (modulo the size) and a byte XORed in.
// The file goes where the cache of the identity must be (its KEY.qpref) and is opened.
//
// Properties: a refusal is QP_EFORMAT with one line naming the file; acceptance happens exactly
// when the file has the genuine size, magic, version, byte order, size field and identity text,
// its body's SHA-256 is the one in the header, and the timing fields are in range (seconds
// finite and >= 0, tokens run in [0, chunks * ctx]) — judged here from the header's layout; an
// accepted file without re-hashing has the genuine body byte for byte; the shape is the
// genuine one; every region the readers hand out (records, codes, block inputs, sites, logits)
// lies inside the file and is read through, and every token record goes through
// met_dist_token_cached as a variant's evaluation does.
//
// Depends on harness/run/hx_refcache.h, harness/io/hx_model.h, kernels/, metrics/met_dist.h,
// kernels/qp_sha256.h and fuzz.h.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "hx_model.h"
#include "hx_refcache.h"
#include "kn_engine.h"
#include "met_dist.h"
#include "qp.h"
#include "qp_sha256.h"

#define FR_CTX 4
#define FR_TOKENS 40
#define FR_PAGE 4096
// The header's layout (hx_refcache.c's struct hx_rc_header), written out here so that the
// acceptance rule is judged independently of the reader's own struct.
#define FR_OFF_FILE_BYTES 16
#define FR_OFF_SECONDS 24
#define FR_OFF_TOKENS 32
#define FR_OFF_SHA 40
#define FR_OFF_IDENTITY 112
#define FR_ID_MAX 3072

struct fr_cache {
    struct hx_refcache_id id;
    struct hx_refcache_shape shape;
    char path[FUZZ_PATH_MAX]; // where the file goes
    unsigned char *bytes;     // the genuine file
    size_t size;
};

static struct fr_cache fr_c[2];
static struct kn_config fr_cfg;
static int fr_tokens[FR_TOKENS];
static int fr_ready;

// Reads a whole file into a malloc'd buffer (aborts on failure: the genuine cache must be there).
static unsigned char *fr_slurp(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f || fseek(f, 0, SEEK_END)) fuzz_fail(__FILE__, __LINE__, "cannot read '%s'", path);
    long n = ftell(f);
    unsigned char *b = malloc((size_t)n + 1);
    if (n <= 0 || !b || fseek(f, 0, SEEK_SET) || fread(b, 1, (size_t)n, f) != (size_t)n)
        fuzz_fail(__FILE__, __LINE__, "cannot read '%s'", path);
    fclose(f);
    *size = (size_t)n;
    return b;
}

// Builds cache k with engine e into the scratch directory and keeps its bytes.
static int fr_build(struct fr_cache *c, const struct kn_engine *e, char *err) {
    char dir[FUZZ_PATH_MAX];
    fuzz_path("scratch", dir);
    *strrchr(dir, '/') = 0;
    struct hx_refcache_build b = {.ref = e, .tokens = fr_tokens, .n_tokens = FR_TOKENS, .n_threads = 1, .quiet = 1};
    struct hx_refcache *rc = NULL;
    int r = hx_refcache_build(dir, &c->id, &b, &rc, err);
    if (r) return r;
    c->shape = *hx_refcache_shape(rc);
    const char *p = hx_refcache_path(rc), *name = strrchr(p, '/') + 1;
    char lock_name[80], lock[FUZZ_PATH_MAX];
    fuzz_path(name, c->path); // registered for removal, with the lock beside it
    snprintf(lock_name, sizeof lock_name, "%s.lock", name);
    fuzz_path(lock_name, lock);
    hx_refcache_close(rc);
    c->bytes = fr_slurp(c->path, &c->size);
    return 0;
}

int fuzz_refcache_init(const char *root, char *err) {
    char model[FUZZ_PATH_MAX], tok[FUZZ_PATH_MAX];
    snprintf(model, sizeof model, "%.4000s/models/llama2c/stories260K.bin", root);
    snprintf(tok, sizeof tok, "%.4000s/models/llama2c/tok512.bin", root);
    struct hx_model *m = NULL;
    struct kn_engine *e = NULL;
    int r = hx_model_open(model, tok, &m, err);
    if (!r) r = kn_engine_create(&m->w, NULL, &e, err);
    fr_tokens[0] = 1; // BOS, then a fixed walk over the vocabulary
    for (int i = 1; i < FR_TOKENS; i++) fr_tokens[i] = 3 + i * 37 % 509;
    for (int k = 0; k < 2 && !r; k++) {
        fr_c[k].id = (struct hx_refcache_id){.model_sha256 = "fuzz-model", .tokenizer_sha256 = "fuzz-tok",
                                             .text_sha256 = "fuzz-text", .gemm = "own", .protocol = HX_PROTO_LLAMACPP,
                                             .ctx = FR_CTX, .bos = 1, .n_chunks = k ? 1 : 2, .layer_chunks = k,
                                             .n_tokens = FR_TOKENS};
        r = fr_build(&fr_c[k], e, err);
    }
    if (!r) fr_cfg = *kn_engine_config(e);
    kn_engine_destroy(e);
    hx_model_close(m);
    fr_ready = !r;
    return r;
}

// The file the input describes (malloc'd; *size).
static unsigned char *fr_file(const struct fr_cache *c, const uint8_t *data, size_t size, size_t *out_size) {
    if (data[0] & 4) {
        unsigned char *f = malloc(size);
        if (!f) fuzz_fail(__FILE__, __LINE__, "out of memory");
        memcpy(f, data + 1, size - 1);
        *out_size = size - 1;
        return f;
    }
    uint32_t v = 0xffffff;
    if (size >= 4) v = data[1] | (uint32_t)data[2] << 8 | (uint32_t)data[3] << 16;
    size_t n = v == 0xffffff ? c->size : v % (c->size + 4097);
    unsigned char *f = calloc(n + 1, 1);
    if (!f) fuzz_fail(__FILE__, __LINE__, "out of memory");
    memcpy(f, c->bytes, QP_MIN(n, c->size));
    for (size_t i = 4; n > 0 && i + 4 <= size; i += 4) {
        uint32_t off = data[i] | (uint32_t)data[i + 1] << 8 | (uint32_t)data[i + 2] << 16;
        f[off % n] ^= data[i + 3];
    }
    *out_size = n;
    return f;
}

static int64_t fr_i64(const unsigned char *f, size_t off) {
    int64_t v;
    memcpy(&v, f + off, sizeof v);
    return v;
}

// Whether the reader must accept file f[0..n) for cache c, from the header's layout. rehashed:
// the target has just written the body's SHA-256 into the header (not computed again).
static int fr_acceptable(const struct fr_cache *c, const unsigned char *f, size_t n, int rehashed) {
    const unsigned char *g = c->bytes;
    if (n != c->size || memcmp(f, g, FR_OFF_FILE_BYTES) || fr_i64(f, FR_OFF_FILE_BYTES) != fr_i64(g, FR_OFF_FILE_BYTES))
        return 0;
    if (strncmp((const char *)f + FR_OFF_IDENTITY, (const char *)g + FR_OFF_IDENTITY, FR_ID_MAX - 1)) return 0;
    char hex[65];
    if (!rehashed) qp_sha256_hex(f + FR_PAGE, n - FR_PAGE, hex);
    if (!rehashed && memcmp(f + FR_OFF_SHA, hex, 64)) return 0;
    double s;
    memcpy(&s, f + FR_OFF_SECONDS, sizeof s);
    int64_t t = fr_i64(f, FR_OFF_TOKENS);
    return isfinite(s) && s >= 0 && t >= 0 && t <= (int64_t)c->id.n_chunks * c->id.ctx;
}

// Every region the readers hand out lies in [base, base + n) and is read; every token record is
// evaluated against a fixed variant row.
static void fr_check_regions(const struct hx_refcache *rc, const struct fr_cache *c, size_t n) {
    const struct hx_refcache_shape *s = hx_refcache_shape(rc);
    const struct met_dist_ref *recs;
    const uint16_t *codes;
    hx_refcache_chunk(rc, 0, &recs, &codes);
    const unsigned char *base = (const unsigned char *)recs - FR_PAGE, *end = base + n;
#define FR_INSIDE(p, bytes)                                                                                       \
    FUZZ_CHECK((const unsigned char *)(p) >= base + FR_PAGE && (const unsigned char *)(p) + (bytes) <= end,     \
               "region %s of %zu bytes outside the file", #p, (size_t)(bytes))
    float var[512];
    FUZZ_CHECK(s->vocab <= 512, "vocabulary %d", s->vocab);
    for (int v = 0; v < s->vocab; v++) var[v] = (float)(v % 7) - 3.0f;
    for (int ch = 0; ch < s->n_chunks; ch++) {
        int cnt = hx_refcache_chunk(rc, ch, &recs, &codes);
        FUZZ_CHECK(cnt >= 1 && cnt <= s->per_chunk, "chunk %d: %d tokens of at most %d", ch, cnt, s->per_chunk);
        FR_INSIDE(recs, (size_t)s->per_chunk * sizeof *recs);
        FR_INSIDE(codes, (size_t)s->per_chunk * s->vocab * 2);
        fuzz_touch(recs, (size_t)s->per_chunk * sizeof *recs);
        fuzz_touch(codes, (size_t)s->per_chunk * s->vocab * 2);
        for (int k = 0; k < cnt; k++) {
            struct met_dist_tok out;
            met_dist_token_cached(&recs[k], codes + (size_t)k * s->vocab, var, s->vocab, k % s->vocab, &out);
        }
    }
    for (int ch = 0; ch < s->layer_chunks; ch++) {
        for (int l = 0; l < s->n_layers; l++) {
            const float *bi = hx_refcache_block_in(rc, ch, l);
            FR_INSIDE(bi, (size_t)s->ctx * s->dim * 4);
            fuzz_touch(bi, (size_t)s->ctx * s->dim * 4);
            for (int site = KN_SITE_BLOCK_IN + 1; site < KN_SITE_LOGITS; site++) {
                if (!s->width[site]) continue;
                const float *x = hx_refcache_site(rc, ch, l, (enum kn_site)site);
                FR_INSIDE(x, (size_t)s->n_cmp * s->width[site] * 4);
                fuzz_touch(x, (size_t)s->n_cmp * s->width[site] * 4);
            }
        }
        const float *lg = hx_refcache_logits(rc, ch);
        FR_INSIDE(lg, (size_t)s->n_cmp_logits * s->vocab * 4);
        fuzz_touch(lg, (size_t)s->n_cmp_logits * s->vocab * 4);
    }
#undef FR_INSIDE
    (void)c;
}

int fuzz_refcache(const uint8_t *data, size_t size) {
    if (!fr_ready) {
        char err[QP_ERRLEN] = "";
        const char *root = getenv("QP_FIXTURES");
        if (fuzz_refcache_init(root && *root ? root : "../shared/fixtures", err))
            fuzz_fail(__FILE__, __LINE__, "cannot build the reference caches (set QP_FIXTURES): %s", err);
    }
    if (size == 0) return 0;
    const struct fr_cache *c = &fr_c[data[0] & 1];
    size_t n;
    unsigned char *f = fr_file(c, data, size, &n);
    int rehashed = (data[0] & 2) && n == c->size; // any other size is refused before hashing
    if (rehashed) {
        char hex[65];
        qp_sha256_hex(f + QP_MIN(n, (size_t)FR_PAGE), n - QP_MIN(n, (size_t)FR_PAGE), hex);
        memcpy(f + FR_OFF_SHA, hex, 64);
    }
    char path[FUZZ_PATH_MAX], err[QP_ERRLEN] = "", dir[FUZZ_PATH_MAX];
    fuzz_write(strrchr(c->path, '/') + 1, f, n, path);
    snprintf(dir, sizeof dir, "%s", path);
    *strrchr(dir, '/') = 0;
    struct hx_refcache *rc = NULL;
    int r = hx_refcache_open(dir, &c->id, &fr_cfg, &rc, err);
    int want = fr_acceptable(c, f, n, rehashed);
    if (r != 1) {
        FUZZ_CHECK(rc == NULL, "refused, but a cache came back");
        FUZZ_CHECK(r == QP_EFORMAT, "code %d: %s", r, err);
        FUZZ_CHECK(err[0] && !strchr(err, '\n') && strstr(err, path), "bad message '%s'", err);
        FUZZ_CHECK(!want, "refused a genuine cache: %s", err);
        free(f);
        return 0;
    }
    FUZZ_CHECK(want, "accepted a foreign, truncated or corrupt cache of %zu bytes", n);
    if (!(data[0] & 2))
        FUZZ_CHECK(memcmp(f + FR_PAGE, c->bytes + FR_PAGE, n - FR_PAGE) == 0, "accepted a body that is not the genuine one");
    FUZZ_CHECK(memcmp(hx_refcache_shape(rc), &c->shape, sizeof c->shape) == 0, "another shape");
    FUZZ_CHECK(hx_refcache_bytes(rc) == (int64_t)n, "%lld bytes for a file of %zu", (long long)hx_refcache_bytes(rc), n);
    double sec = hx_refcache_seconds(rc);
    int64_t tok = hx_refcache_tokens_processed(rc);
    FUZZ_CHECK(isfinite(sec) && sec >= 0, "seconds %g", sec);
    FUZZ_CHECK(tok >= 0 && tok <= (int64_t)c->id.n_chunks * c->id.ctx, "tokens run %lld", (long long)tok);
    fr_check_regions(rc, c, n);
    hx_refcache_close(rc);
    free(f);
    return 0;
}

#ifdef QP_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_refcache(data, size); }
#endif
