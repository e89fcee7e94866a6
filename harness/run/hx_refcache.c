// hx_refcache.c — the reference cache: its layout, identity, the reference pass that writes it,
// and opening it for reading (hx_refcache.h).
#include "hx_refcache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "met_ppl.h"
#include "qp.h"
#include "qp_sha256.h"

#define HX_RC_PAGE 4096
#define HX_RC_MAGIC "QPREFC\n"
#define HX_RC_BYTE_ORDER 0x01020304u
#define HX_RC_ID_MAX 3072

_Static_assert(sizeof(struct met_dist_ref) == 32, "the cache's token record is 32 bytes");

// The file's first page.
struct hx_rc_header {
    char magic[8];
    uint32_t version, byte_order;
    int64_t file_bytes;
    double seconds;           // the reference pass
    int64_t tokens_processed; // tokens it ran
    char body_sha256[72];     // of bytes [HX_RC_PAGE, file_bytes), hex
    char identity[HX_RC_ID_MAX];
};
_Static_assert(sizeof(struct hx_rc_header) <= HX_RC_PAGE, "the header fits its page");

// Where everything is, from the shape.
struct hx_rc_layout {
    int64_t chunk_bytes;       // one chunk's records and codes, page-aligned
    int64_t layer_bytes;       // one layer chunk's block, page-aligned
    int64_t block_in_bytes;    // (n_layers, ctx, dim) floats
    int64_t site_off[KN_SITE_COUNT]; // floats from a layer's first site to site s, per compare row
    int64_t site_floats;       // the stored sites of one layer, per compare row
    int64_t logits_off;        // from the layer block's start
    int64_t layers_off;        // the first layer block
    int64_t file_bytes;
};

struct hx_refcache {
    struct hx_refcache_shape sh;
    struct hx_rc_layout lay;
    char path[4200];
    const unsigned char *base; // the whole file, mapped read-only
    size_t map_bytes;
    double seconds;
    int64_t tokens_processed;
    enum hx_protocol protocol; // the chunks' scored counts
    size_t n_tokens;
    int built;                 // this process ran the reference pass
};

// ---------------------------------------------------------------------------------------------
// Shape, layout, identity

static int64_t hx_rc_round(int64_t n) { return (n + HX_RC_PAGE - 1) / HX_RC_PAGE * HX_RC_PAGE; }

// Floats of every site but BLOCK_IN (and LOGITS) of one layer at one position.
static int64_t hx_rc_site_row(const struct kn_config *c) {
    int64_t n = 0;
    for (int s = KN_SITE_BLOCK_IN + 1; s < KN_SITE_LOGITS; s++)
        if (kn_site_used(c, (enum kn_site)s)) n += kn_site_width(c, (enum kn_site)s);
    return n;
}

// stride 1 when a whole chunk fits HX_REFCACHE_FULL_MIB, else the smallest power of two that
// brings the compared sites and logits of one chunk under HX_REFCACHE_CMP_MIB.
static int hx_rc_stride(const struct kn_config *c, int ctx) {
    int64_t row = (int64_t)c->n_layers * hx_rc_site_row(c) + c->vocab_size;
    int64_t full = ((int64_t)c->n_layers * c->dim + row) * ctx * 4;
    if (full <= (int64_t)HX_REFCACHE_FULL_MIB << 20) return 1;
    int stride = 2;
    while (stride < ctx && row * 4 * (ctx / stride) > (int64_t)HX_REFCACHE_CMP_MIB << 20) stride *= 2;
    return stride;
}

int hx_refcache_shape_of(const struct hx_refcache_id *id, const struct kn_config *c, struct hx_refcache_shape *s,
                         char *err) {
    memset(s, 0, sizeof *s);
    if (id->n_chunks < 1 || id->ctx < 4) return qp_fail(err, QP_EINVAL, "no window to cache");
    s->vocab = c->vocab_size;
    s->n_layers = c->n_layers;
    s->dim = c->dim;
    s->ctx = id->ctx;
    s->n_chunks = id->n_chunks;
    s->per_chunk = id->protocol == HX_PROTO_LLAMACPP ? id->ctx - 1 - id->ctx / 2 : id->ctx - 1;
    s->layer_chunks = QP_MIN(QP_MAX(id->layer_chunks, 0), id->n_chunks);
    s->stride = hx_rc_stride(c, id->ctx);
    s->n_cmp = id->ctx / s->stride;
    int first = hx_chunk_of(id->protocol, id->n_tokens, id->ctx, 0).first;
    while (s->cmp_logit0 < s->n_cmp && (s->cmp_logit0 + 1) * s->stride - 1 < first) s->cmp_logit0++;
    s->n_cmp_logits = s->n_cmp - s->cmp_logit0;
    for (int k = 0; k < KN_SITE_LOGITS; k++)
        s->width[k] = kn_site_used(c, (enum kn_site)k) ? kn_site_width(c, (enum kn_site)k) : 0;
    return 0;
}

static void hx_rc_layout_of(const struct hx_refcache_shape *s, struct hx_rc_layout *l) {
    memset(l, 0, sizeof *l);
    l->chunk_bytes = hx_rc_round((int64_t)s->per_chunk * (int64_t)(sizeof(struct met_dist_ref) + 2 * (size_t)s->vocab));
    l->block_in_bytes = (int64_t)s->n_layers * s->ctx * s->dim * 4;
    for (int k = KN_SITE_BLOCK_IN + 1; k < KN_SITE_LOGITS; k++) {
        l->site_off[k] = l->site_floats;
        l->site_floats += s->width[k];
    }
    int64_t sites = (int64_t)s->n_layers * l->site_floats * s->n_cmp * 4;
    l->logits_off = l->block_in_bytes + sites;
    l->layer_bytes = hx_rc_round(l->logits_off + (int64_t)s->n_cmp_logits * s->vocab * 4);
    l->layers_off = HX_RC_PAGE + (int64_t)s->n_chunks * l->chunk_bytes;
    l->file_bytes = l->layers_off + (int64_t)s->layer_chunks * l->layer_bytes;
}

int64_t hx_refcache_size_of(const struct hx_refcache_shape *s) {
    struct hx_rc_layout l;
    hx_rc_layout_of(s, &l);
    return l.file_bytes;
}

// Everything the reference pass depends on, one field a line (its SHA-256 names the file).
static void hx_rc_identity(const struct hx_refcache_id *id, const struct kn_config *c,
                           const struct hx_refcache_shape *s, char *buf, size_t cap) {
    snprintf(buf, cap,
             "qprobe-refcache %d\nmodel=%s\ntokenizer=%s\ntext=%s\ntokens=%zu\nprotocol=%s\nctx=%d\nbos=%d\n"
             "chunks=%d\nlayer_chunks=%d\nstride=%d\ngemm=%s\nshape=%s %d %d %d %d %d %d %d\nqprobe=%s %s\n",
             HX_REFCACHE_VERSION, id->model_sha256, id->tokenizer_sha256, id->text_sha256, id->n_tokens,
             hx_protocol_name(id->protocol), id->ctx, id->bos, id->n_chunks, s->layer_chunks, s->stride, id->gemm,
             kn_arch_name(c->arch), c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->vocab_size,
             c->seq_len, qp_version, QP_COMMIT);
}

void hx_refcache_dir_for(const char *db_path, char *buf, size_t cap) { snprintf(buf, cap, "%s.refcache", db_path); }

// The file's path for identity text idt: DIR/KEY.qpref, KEY the first 32 hex digits of its hash.
static void hx_rc_path(const char *dir, const char *idt, char *path, size_t cap) {
    char hex[65];
    qp_sha256_hex(idt, strlen(idt), hex);
    hex[32] = 0;
    snprintf(path, cap, "%s/%s.qpref", dir, hex);
}

// ---------------------------------------------------------------------------------------------
// Opening

// SHA-256 of fd's bytes [from, to), read (not mapped: the page cache holds them, not the process).
static int hx_rc_hash(int fd, int64_t from, int64_t to, char hex[65]) {
    enum { BLK = 1 << 22 };
    unsigned char *buf = malloc(BLK);
    if (!buf) return QP_ENOMEM;
    struct qp_sha256 h;
    qp_sha256_init(&h);
    int rc = 0;
    for (int64_t off = from; off < to && !rc;) {
        ssize_t n = pread(fd, buf, (size_t)QP_MIN((int64_t)BLK, to - off), off);
        if (n <= 0) rc = QP_EIO;
        else qp_sha256_update(&h, buf, (size_t)n), off += n;
    }
    free(buf);
    qp_sha256_final(&h, hex);
    return rc;
}

// The header of an open file checked against the identity text and layout; 0 or QP_EFORMAT.
// The timing fields lie outside the body's checksum, so they are range-checked (the run's
// reference row reports them): seconds finite and >= 0, tokens run in [0, max_tokens].
static int hx_rc_check(int fd, const char *path, const char *idt, const struct hx_rc_layout *lay,
                       int64_t max_tokens, struct hx_rc_header *h, char *err) {
    struct stat sb;
    if (fstat(fd, &sb)) return qp_fail(err, QP_EIO, "cannot read reference cache '%s': %s", path, strerror(errno));
    memset(h, 0, sizeof *h);
    ssize_t n = pread(fd, h, sizeof *h, 0);
    if (n < (ssize_t)sizeof *h)
        return qp_fail(err, QP_EFORMAT, "reference cache '%s' is truncated (%lld bytes, not a whole header)", path,
                       (long long)sb.st_size);
    if (memcmp(h->magic, HX_RC_MAGIC, 8) || h->version != HX_REFCACHE_VERSION || h->byte_order != HX_RC_BYTE_ORDER)
        return qp_fail(err, QP_EFORMAT, "'%s' is not a reference cache of this qprobe (format %d)", path,
                       HX_REFCACHE_VERSION);
    h->identity[HX_RC_ID_MAX - 1] = 0;
    if (strcmp(h->identity, idt))
        return qp_fail(err, QP_EFORMAT, "reference cache '%s' was made for another model, text, protocol or build",
                       path);
    if (h->file_bytes != lay->file_bytes || sb.st_size != lay->file_bytes)
        return qp_fail(err, QP_EFORMAT, "reference cache '%s' is truncated (%lld of %lld bytes)", path,
                       (long long)sb.st_size, (long long)lay->file_bytes);
    if (!isfinite(h->seconds) || h->seconds < 0 || h->tokens_processed < 0 || h->tokens_processed > max_tokens)
        return qp_fail(err, QP_EFORMAT, "reference cache '%s' is corrupt (its header's timing is out of range)", path);
    char hex[65];
    if (hx_rc_hash(fd, HX_RC_PAGE, lay->file_bytes, hex))
        return qp_fail(err, QP_EIO, "cannot read reference cache '%s'", path);
    h->body_sha256[64] = 0;
    if (strcmp(hex, h->body_sha256))
        return qp_fail(err, QP_EFORMAT, "reference cache '%s' is corrupt (its checksum does not match)", path);
    return 0;
}

int hx_refcache_open(const char *dir, const struct hx_refcache_id *id, const struct kn_config *c,
                     struct hx_refcache **out, char *err) {
    *out = NULL;
    struct hx_refcache *rc = calloc(1, sizeof *rc);
    char *idt = malloc(HX_RC_ID_MAX);
    if (!rc || !idt) {
        free(rc), free(idt);
        return qp_fail(err, QP_ENOMEM, "out of memory");
    }
    int r = hx_refcache_shape_of(id, c, &rc->sh, err);
    rc->protocol = id->protocol;
    rc->n_tokens = id->n_tokens;
    hx_rc_layout_of(&rc->sh, &rc->lay);
    hx_rc_identity(id, c, &rc->sh, idt, HX_RC_ID_MAX);
    hx_rc_path(dir, idt, rc->path, sizeof rc->path);
    int fd = r ? -1 : open(rc->path, O_RDONLY | O_CLOEXEC);
    if (!r && fd < 0) r = errno == ENOENT ? 1 : qp_fail(err, QP_EIO, "cannot open '%s': %s", rc->path, strerror(errno));
    struct hx_rc_header h;
    if (fd >= 0 && !(r = hx_rc_check(fd, rc->path, idt, &rc->lay, (int64_t)id->n_chunks * id->ctx, &h, err))) {
        void *m = mmap(NULL, (size_t)rc->lay.file_bytes, PROT_READ, MAP_SHARED, fd, 0);
        if (m == MAP_FAILED) r = qp_fail(err, QP_EIO, "cannot map '%s': %s", rc->path, strerror(errno));
        else rc->base = m, rc->map_bytes = (size_t)rc->lay.file_bytes;
        rc->seconds = h.seconds;
        rc->tokens_processed = h.tokens_processed;
    }
    if (fd >= 0) close(fd);
    free(idt);
    if (r) {
        hx_refcache_close(rc);
        return r == 1 ? 0 : r; // 1: no file
    }
    *out = rc;
    return 1;
}

void hx_refcache_close(struct hx_refcache *rc) {
    if (!rc) return;
    if (rc->base) munmap((void *)rc->base, rc->map_bytes);
    free(rc);
}

// ---------------------------------------------------------------------------------------------
// Reading

const struct hx_refcache_shape *hx_refcache_shape(const struct hx_refcache *rc) { return &rc->sh; }
const char *hx_refcache_path(const struct hx_refcache *rc) { return rc->path; }
double hx_refcache_seconds(const struct hx_refcache *rc) { return rc->seconds; }
int64_t hx_refcache_tokens_processed(const struct hx_refcache *rc) { return rc->tokens_processed; }
int64_t hx_refcache_bytes(const struct hx_refcache *rc) { return rc->lay.file_bytes; }
int hx_refcache_built(const struct hx_refcache *rc) { return rc->built; }

static int64_t hx_rc_chunk_off(const struct hx_rc_layout *l, int c) { return HX_RC_PAGE + (int64_t)c * l->chunk_bytes; }
static int64_t hx_rc_layer_off(const struct hx_rc_layout *l, int c) { return l->layers_off + (int64_t)c * l->layer_bytes; }
static int64_t hx_rc_block_in_off(const struct hx_refcache_shape *s, const struct hx_rc_layout *l, int c, int layer) {
    return hx_rc_layer_off(l, c) + (int64_t)layer * s->ctx * s->dim * 4;
}
static int64_t hx_rc_site_off(const struct hx_refcache_shape *s, const struct hx_rc_layout *l, int c, int layer,
                              enum kn_site site) {
    return hx_rc_layer_off(l, c) + l->block_in_bytes + ((int64_t)layer * l->site_floats + l->site_off[site]) * s->n_cmp * 4;
}

int hx_refcache_chunk(const struct hx_refcache *rc, int c, const struct met_dist_ref **recs, const uint16_t **codes) {
    QP_ASSERT(c >= 0 && c < rc->sh.n_chunks);
    const unsigned char *p = rc->base + hx_rc_chunk_off(&rc->lay, c);
    *recs = (const struct met_dist_ref *)p;
    *codes = (const uint16_t *)(p + (size_t)rc->sh.per_chunk * sizeof(struct met_dist_ref));
    struct hx_chunk ch = hx_chunk_of(rc->protocol, rc->n_tokens, rc->sh.ctx, c);
    return ch.last - ch.first + 1;
}

const float *hx_refcache_block_in(const struct hx_refcache *rc, int c, int layer) {
    QP_ASSERT(c >= 0 && c < rc->sh.layer_chunks && layer >= 0 && layer < rc->sh.n_layers);
    return (const float *)(rc->base + hx_rc_block_in_off(&rc->sh, &rc->lay, c, layer));
}

const float *hx_refcache_site(const struct hx_refcache *rc, int c, int layer, enum kn_site s) {
    QP_ASSERT(c >= 0 && c < rc->sh.layer_chunks && s > KN_SITE_BLOCK_IN && s < KN_SITE_LOGITS && rc->sh.width[s]);
    return (const float *)(rc->base + hx_rc_site_off(&rc->sh, &rc->lay, c, layer, s));
}

const float *hx_refcache_logits(const struct hx_refcache *rc, int c) {
    QP_ASSERT(c >= 0 && c < rc->sh.layer_chunks);
    return (const float *)(rc->base + hx_rc_layer_off(&rc->lay, c) + rc->lay.logits_off);
}

void hx_refcache_release(const struct hx_refcache *rc, int c) {
    madvise((void *)(rc->base + hx_rc_chunk_off(&rc->lay, c)), (size_t)rc->lay.chunk_bytes, MADV_DONTNEED);
    if (c < rc->sh.layer_chunks)
        madvise((void *)(rc->base + hx_rc_layer_off(&rc->lay, c)), (size_t)rc->lay.layer_bytes, MADV_DONTNEED);
}

// ---------------------------------------------------------------------------------------------
// Writing: the reference pass

// The writer's state: the file, and the layer chunk whose activations the probe is capturing.
struct hx_rcw {
    const struct hx_refcache_shape *sh;
    const struct hx_rc_layout *lay;
    const struct hx_refcache_build *b;
    const struct hx_refcache_id *id;
    int fd, chunk;
    int io_errno; // the first failed write's errno (0: none)
};

static void hx_rcw_write(struct hx_rcw *w, const void *p, size_t n, int64_t off) {
    const char *s = p;
    while (n > 0) {
        ssize_t k = pwrite(w->fd, s, n, off);
        if (k <= 0) {
#pragma omp critical(hx_rcw_error)
            if (!w->io_errno) w->io_errno = k < 0 ? errno : EIO;
            return;
        }
        s += k, n -= (size_t)k, off += k;
    }
}

// The capture probe of a layer chunk: every block input; the other sites at compare positions.
static void hx_rcw_probe(void *p, enum kn_site site, int layer, const float *x, int n, int width, int pos0) {
    struct hx_rcw *w = p;
    const struct hx_refcache_shape *s = w->sh;
    if (site == KN_SITE_LOGITS) return; // from the logit rows, after the pass
    if (site == KN_SITE_BLOCK_IN) {
        hx_rcw_write(w, x, (size_t)n * width * 4, hx_rc_block_in_off(s, w->lay, w->chunk, layer) + (int64_t)pos0 * width * 4);
        return;
    }
    int64_t off = hx_rc_site_off(s, w->lay, w->chunk, layer, site);
    if (s->stride == 1) {
        hx_rcw_write(w, x, (size_t)n * width * 4, off + (int64_t)pos0 * width * 4);
        return;
    }
    for (int i = 0; i < n; i++) {
        int pos = pos0 + i;
        if ((pos + 1) % s->stride == 0 && (pos + 1) / s->stride <= s->n_cmp)
            hx_rcw_write(w, x + (size_t)i * width, (size_t)width * 4, off + (int64_t)((pos + 1) / s->stride - 1) * width * 4);
    }
}

// One thread's buffers for a chunk.
struct hx_rcw_lane {
    struct kn_state *st;
    float *logits;            // (ctx, vocab): rows first..len-1
    int *buf;                 // (ctx)
    struct met_dist_ref *recs; // (per_chunk)
    uint16_t *codes;          // (per_chunk, vocab)
};

static void hx_rcw_lane_free(struct hx_rcw_lane *ln) {
    kn_state_destroy(ln->st);
    qp_free(ln->logits);
    free(ln->buf);
    free(ln->recs);
    qp_free(ln->codes);
}

static int hx_rcw_lane_init(struct hx_rcw_lane *ln, const struct hx_rcw *w, int inner, char *err) {
    const struct hx_refcache_shape *s = w->sh;
    memset(ln, 0, sizeof *ln);
    int rc = kn_state_create(w->b->ref, s->ctx, s->ctx, inner, &ln->st, err);
    if (rc) return rc;
    ln->logits = qp_alloc_array((size_t)s->ctx * s->vocab, sizeof(float));
    ln->buf = malloc((size_t)s->ctx * sizeof(int));
    ln->recs = calloc((size_t)s->per_chunk, sizeof *ln->recs);
    ln->codes = qp_alloc_array((size_t)s->per_chunk * s->vocab, sizeof(uint16_t));
    if (!ln->logits || !ln->buf || !ln->recs || !ln->codes) return qp_fail(err, QP_ENOMEM, "out of memory for logits");
    return 0;
}

// Chunk ci through the reference: its scored tokens encoded and written; for a layer chunk
// (probe set) its activations by the probe and its logits at the compare positions. Returns the
// tokens run.
static int hx_rcw_chunk(struct hx_rcw *w, struct hx_rcw_lane *ln, int ci, const struct kn_probe *probe, int layers) {
    const struct hx_refcache_shape *s = w->sh;
    const struct kn_ops *ops = kn_engine_ops(w->b->ref);
    struct hx_chunk ch = hx_chunk_of(w->id->protocol, w->b->n_tokens, s->ctx, ci);
    memcpy(ln->buf, w->b->tokens + ch.start, (size_t)ch.len * sizeof(int));
    if (w->id->protocol == HX_PROTO_LLAMACPP && w->id->bos >= 0) ln->buf[0] = w->id->bos;
    kn_state_reset(ln->st);
    kn_forward(ln->st, ln->buf, ch.len, ln->logits, ch.first, probe);
    int k = 0, V = s->vocab;
    for (int j = ch.first; j <= ch.last; j++, k++) {
        const float *row = ln->logits + (size_t)(j - ch.first) * V;
        int target = w->b->tokens[ch.start + j + 1];
        met_dist_ref_encode(row, V, target, &ln->recs[k], ln->codes + (size_t)k * V);
        ln->recs[k].nll_ppl = met_token_nll(ops, row, V, target);
    }
    int64_t off = hx_rc_chunk_off(w->lay, ci);
    hx_rcw_write(w, ln->recs, (size_t)k * sizeof *ln->recs, off);
    hx_rcw_write(w, ln->codes, (size_t)k * V * 2, off + (int64_t)s->per_chunk * (int64_t)sizeof *ln->recs);
    for (int c = s->cmp_logit0; layers && c < s->n_cmp; c++) {
        int pos = (c + 1) * s->stride - 1;
        if (pos >= ch.len) break;
        hx_rcw_write(w, ln->logits + (size_t)(pos - ch.first) * V, (size_t)V * 4,
                     hx_rc_layer_off(w->lay, ci) + w->lay->logits_off + (int64_t)(c - s->cmp_logit0) * V * 4);
    }
    return ch.len;
}

// The probe of the chunks run one at a time: the capture (layer chunks) and the caller's extra.
static void hx_rcw_both(void *p, enum kn_site site, int layer, const float *x, int n, int width, int pos0) {
    struct hx_rcw *w = p;
    if (w->chunk < w->sh->layer_chunks) hx_rcw_probe(w, site, layer, x, n, width, pos0);
    if (w->chunk < w->b->extra_chunks) w->b->extra->fn(w->b->extra->ctx, site, layer, x, n, width, pos0);
}

// The chunks run one at a time (threads inside the forward pass): the layer chunks and those of
// the extra probe.
static int hx_rcw_seq(const struct hx_rcw *w) {
    return QP_MIN(QP_MAX(w->sh->layer_chunks, w->b->extra ? w->b->extra_chunks : 0), w->sh->n_chunks);
}

// Every chunk: the first ones one at a time (the capture and extra probes on), then the rest over
// the outer threads. Returns the tokens run.
static int64_t hx_rcw_run(struct hx_rcw *w, struct hx_rcw_lane *lanes, int outer, struct hx_rcw_lane *big) {
    const struct hx_refcache_build *b = w->b;
    const struct hx_refcache_shape *s = w->sh;
    int done = 0, seq = hx_rcw_seq(w);
    int64_t processed = 0;
    struct kn_probe probe = {hx_rcw_both, w, NULL};
    for (int ci = 0; ci < seq && !(b->stop && *b->stop); ci++) {
        w->chunk = ci;
        processed += hx_rcw_chunk(w, big, ci, &probe, ci < s->layer_chunks);
        if (b->progress) b->progress(b->progress_ctx, ++done, s->n_chunks, processed);
    }
#pragma omp parallel for num_threads(outer) schedule(dynamic, 1) if (outer > 1)
    for (int ci = seq; ci < s->n_chunks; ci++) {
        if (b->stop && *b->stop) continue;
        int n = hx_rcw_chunk(w, &lanes[omp_get_thread_num()], ci, NULL, 0);
#pragma omp critical(hx_rcw_progress)
        {
            processed += n;
            done++;
            if (b->progress && omp_get_thread_num() == 0) b->progress(b->progress_ctx, done, s->n_chunks, processed);
        }
    }
    return processed;
}

// The pass into the open file w->fd, then its header. 0 or a QP_E* code with err.
static int hx_rcw_fill(struct hx_rcw *w, const char *idt, const char *path, char *err) {
    const struct hx_refcache_build *b = w->b;
    const struct hx_refcache_shape *s = w->sh;
    int threads = QP_MAX(b->n_threads, 1), seq = hx_rcw_seq(w), rest = s->n_chunks - seq;
    int outer = rest >= threads ? threads : 1, rc = 0;
    struct hx_rcw_lane *lanes = calloc((size_t)outer + 1, sizeof *lanes), *big = NULL;
    if (!lanes) return qp_fail(err, QP_ENOMEM, "out of memory");
    for (int t = 0; t < outer && !rc; t++) rc = hx_rcw_lane_init(&lanes[t], w, outer == 1 ? threads : 1, err);
    big = outer == 1 ? &lanes[0] : &lanes[outer];
    if (!rc && outer > 1 && seq > 0) rc = hx_rcw_lane_init(big, w, threads, err);
    struct hx_rc_header h = {.magic = HX_RC_MAGIC, .version = HX_REFCACHE_VERSION, .byte_order = HX_RC_BYTE_ORDER,
                             .file_bytes = w->lay->file_bytes};
    if (!rc) {
        double t0 = qp_now();
        h.tokens_processed = hx_rcw_run(w, lanes, outer, big);
        h.seconds = qp_now() - t0;
        if (b->stop && *b->stop) rc = qp_fail(err, QP_EINTR, "interrupted");
        else if (w->io_errno) rc = qp_fail(err, QP_EWRITE, "cannot write '%s': %s", path, strerror(w->io_errno));
        if (b->progress) b->progress(b->progress_ctx, s->n_chunks, s->n_chunks, h.tokens_processed);
    }
    for (int t = 0; t <= outer; t++) hx_rcw_lane_free(&lanes[t]);
    free(lanes);
    snprintf(h.identity, sizeof h.identity, "%s", idt);
    if (!rc && hx_rc_hash(w->fd, HX_RC_PAGE, w->lay->file_bytes, h.body_sha256))
        rc = qp_fail(err, QP_EIO, "cannot read back '%s'", path);
    if (!rc) hx_rcw_write(w, &h, sizeof h, 0);
    if (!rc && (w->io_errno || fsync(w->fd)))
        rc = qp_fail(err, QP_EWRITE, "cannot write '%s': %s", path, strerror(w->io_errno ? w->io_errno : errno));
    return rc;
}

// ---------------------------------------------------------------------------------------------
// Building: the lock, the temporary file, the rename

// Removes DIR/NAME.tmp.* left by killed builders (the caller holds the lock).
static void hx_rc_sweep_tmp(const char *dir, const char *path) {
    const char *name = strrchr(path, '/') + 1;
    char prefix[128];
    snprintf(prefix, sizeof prefix, "%s.tmp.", name);
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[4400];
    while ((e = readdir(d)))
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0) {
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            unlink(p);
        }
    closedir(d);
}

// Takes the exclusive lock of path (path.lock, kept): the fd, or -1 with err.
static int hx_rc_lock(const char *path, int quiet, char *err) {
    char lp[4300];
    snprintf(lp, sizeof lp, "%.4200s.lock", path);
    int fd = open(lp, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return qp_fail(err, QP_EIO, "cannot create '%s': %s", lp, strerror(errno)), -1;
    if (flock(fd, LOCK_EX | LOCK_NB)) {
        if (!quiet) fprintf(stderr, "qprobe: waiting for another process building the reference cache '%s'\n", path);
        if (flock(fd, LOCK_EX)) {
            qp_fail(err, QP_EIO, "cannot lock '%s': %s", lp, strerror(errno));
            close(fd);
            return -1;
        }
    }
    return fd;
}

// Writes the cache into path.tmp.PID and renames it into place. 0 or a QP_E* code with err.
static int hx_rc_write(const char *dir, const char *path, const char *idt, struct hx_rcw *w, char *err) {
    char tmp[4300];
    snprintf(tmp, sizeof tmp, "%.4200s.tmp.%ld", path, (long)getpid());
    w->fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w->fd < 0) return qp_fail(err, QP_EIO, "cannot create '%s': %s", tmp, strerror(errno));
    int rc = ftruncate(w->fd, w->lay->file_bytes) ? qp_fail(err, QP_EWRITE, "cannot write '%s': %s", tmp, strerror(errno))
                                                  : hx_rcw_fill(w, idt, tmp, err);
    close(w->fd);
    if (!rc && rename(tmp, path)) rc = qp_fail(err, QP_EWRITE, "cannot rename '%s': %s", tmp, strerror(errno));
    if (rc) unlink(tmp);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) fsync(dfd), close(dfd); // the rename itself on disk
    return rc;
}

int hx_refcache_build(const char *dir, const struct hx_refcache_id *id, const struct hx_refcache_build *b,
                      struct hx_refcache **out, char *err) {
    *out = NULL;
    const struct kn_config *c = kn_engine_config(b->ref);
    struct hx_refcache_shape sh;
    int rc = hx_refcache_shape_of(id, c, &sh, err);
    if (rc) return rc;
    if (mkdir(dir, 0755) && errno != EEXIST) return qp_fail(err, QP_EIO, "cannot create '%s': %s", dir, strerror(errno));
    struct hx_rc_layout lay;
    hx_rc_layout_of(&sh, &lay);
    char *idt = malloc(HX_RC_ID_MAX), path[4200];
    if (!idt) return qp_fail(err, QP_ENOMEM, "out of memory");
    hx_rc_identity(id, c, &sh, idt, HX_RC_ID_MAX);
    hx_rc_path(dir, idt, path, sizeof path);
    int lock = hx_rc_lock(path, b->quiet, err);
    if (lock < 0) {
        free(idt);
        return QP_EIO;
    }
    rc = hx_refcache_open(dir, id, c, out, err); // built by another process while we waited?
    if (rc <= 0) {
        if (rc < 0) unlink(path); // foreign, truncated or corrupt: replaced
        hx_rc_sweep_tmp(dir, path);
        struct hx_rcw w = {.sh = &sh, .lay = &lay, .b = b, .id = id, .fd = -1};
        rc = hx_rc_write(dir, path, idt, &w, err);
        if (!rc) rc = hx_refcache_open(dir, id, c, out, err);
        if (rc == 0 && !*out) rc = qp_fail(err, QP_EIO, "reference cache '%s' vanished after it was written", path);
        if (*out) (*out)->built = 1;
    }
    flock(lock, LOCK_UN);
    close(lock);
    free(idt);
    return rc < 0 ? rc : 0;
}
