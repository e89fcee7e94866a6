// hx_refcache.h — the reference cache: what every variant needs of the reference model, computed
// once per run by one reference pass and kept in a file beside the study database
// (STUDY.sqlite.refcache/KEY.qpref), memory-mapped when read, so that each variant is evaluated
// alone, without the reference model in memory (hx_refeval.h; docs/SWEEP.md, "The reference
// cache").
//
// Contents:
//  - per scored token of every chunk, the reference's distribution in 16 bits and its exact NLL
//    and argmax (struct met_dist_ref and vocab codes, metrics/met_dist.h, which states the exact
//    error bound of the KLD computed from them);
//  - for the first layer_chunks chunks (per-layer error), in fp32: the block input of every layer
//    at every position (what the local error injects), and every other probe site and the logits
//    at the *compare positions* (k + 1) * stride - 1. stride is 1 (every position) when one
//    chunk's full capture fits HX_REFCACHE_FULL_MIB, else the smallest power of two that brings
//    the compared sites under HX_REFCACHE_CMP_MIB (TinyLlama-1.1B at ctx 512: 8, i.e. 64
//    positions; a 7B Llama: 32). fp16 would not do: its 2^-11 relative rounding is as large as
//    q8_0's local errors.
//
// Layout (native byte order, recorded and checked): a 4096-byte header (magic, format version,
// the identity text, the shape, the offsets, the build time, the SHA-256 of everything after the
// header), then one page-aligned block per chunk (its records, then its codes, (count, vocab)),
// then one page-aligned block per layer chunk (block inputs (n_layers, ctx, dim); sites
// (n_layers, site, n_cmp, width); logits (n_cmp_logits, vocab)).
//
// Identity: the key (the file's name) is the SHA-256 of a text naming everything the reference
// pass depends on: the model, tokenizer and text hashes, protocol, ctx, BOS, chunks, tokens,
// layer chunks and stride, the GEMM backend, the model's shape, the qprobe version and commit,
// and the format version. Not the run's label or calibration text: runs that differ only there
// share one cache. Opening checks the header's identity text against the expected one, the file
// size and the body's SHA-256; a foreign, truncated or corrupt file is reported in one line and
// never used.
//
// Crash safety and concurrency: a cache is built into KEY.qpref.tmp.PID and renamed into place
// after fsync, under an exclusive flock on KEY.lock; a kill -9 leaves at most a .tmp file (never
// opened; removed by the next builder) and no lock (the kernel drops it). A second process that
// wants the same cache waits on the lock and then opens the file the first one renamed.
// Depends on kernels/, metrics/ and harness/run/hx_eval.h.
#ifndef HX_REFCACHE_H
#define HX_REFCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "hx_eval.h"
#include "kn_engine.h"
#include "met_dist.h"

#define HX_REFCACHE_VERSION 1
#define HX_REFCACHE_FULL_MIB 256 // every position of a layer chunk stored up to this size
#define HX_REFCACHE_CMP_MIB 128  // else the compared sites of one chunk stay under this

struct hx_refcache;

// What the reference pass depends on (besides the model's shape).
struct hx_refcache_id {
    const char *model_sha256, *tokenizer_sha256, *text_sha256;
    const char *gemm; // the GEMM backend: the own kernels and OpenBLAS differ in the last bits
    enum hx_protocol protocol;
    int ctx, bos, n_chunks; // n_chunks as the run uses them (max_chunks applied)
    int layer_chunks;       // chunks with per-layer data (capped at n_chunks)
    size_t n_tokens;        // the tokenized text
};

// The shape of a cache, from its identity and the model.
struct hx_refcache_shape {
    int vocab, n_layers, dim, ctx, n_chunks, per_chunk, layer_chunks;
    int stride, n_cmp;              // compare positions (k + 1) * stride - 1, k < n_cmp
    int n_cmp_logits, cmp_logit0;   // compare positions k >= cmp_logit0 have logits (>= ctx/2 or 0)
    int width[KN_SITE_COUNT];       // stored sites' widths (0: not stored; BLOCK_IN: every position)
};

// Opens the cache of id in dir (the directory need not exist). 1 and *out when it is there and
// whole; 0 when there is none; QP_EFORMAT with a one-line message naming the file when a file is
// there but foreign, truncated or corrupt; QP_EIO/QP_ENOMEM.
int hx_refcache_open(const char *dir, const struct hx_refcache_id *id, const struct kn_config *c,
                     struct hx_refcache **out, char *err);

// Builds the cache of id in dir with the reference engine ref (creating dir), under the lock; when
// another process finished it meanwhile, opens that one instead. progress as hx_progress_cb (may
// be NULL); stop (may be NULL) interrupts with QP_EINTR, leaving no file. quiet: no note on
// stderr when waiting for the lock. 0 and *out, or QP_EINTR, QP_EWRITE (disk full), QP_EIO,
// QP_ENOMEM with err.
struct hx_refcache_build {
    const struct kn_engine *ref;
    const int *tokens;
    size_t n_tokens;
    int n_threads, quiet;
    const volatile int *stop;
    void (*progress)(void *ctx, int done, int total, int64_t tokens_done);
    void *progress_ctx;
    // Optional: a probe the reference pass also runs on its first extra_chunks chunks, in chunk
    // order, one chunk at a time (the reference's activation statistics, on the way).
    const struct kn_probe *extra;
    int extra_chunks;
};
int hx_refcache_build(const char *dir, const struct hx_refcache_id *id, const struct hx_refcache_build *b,
                      struct hx_refcache **out, char *err);

void hx_refcache_close(struct hx_refcache *rc); // NULL is fine
// 1 when this process built it (hx_refcache_build ran the pass), 0 when it was opened.
int hx_refcache_built(const struct hx_refcache *rc);

const struct hx_refcache_shape *hx_refcache_shape(const struct hx_refcache *rc);
const char *hx_refcache_path(const struct hx_refcache *rc);
// The reference pass that built the cache: seconds and tokens run.
double hx_refcache_seconds(const struct hx_refcache *rc);
int64_t hx_refcache_tokens_processed(const struct hx_refcache *rc);
// The file's bytes (for plans and docs).
int64_t hx_refcache_bytes(const struct hx_refcache *rc);

// Chunk c's scored tokens: their count, records and codes ((count, vocab) values).
int hx_refcache_chunk(const struct hx_refcache *rc, int c, const struct met_dist_ref **recs, const uint16_t **codes);
// Layer chunk c (< layer_chunks): the block input of layer l, (ctx, dim); site s of layer l at
// the compare positions, (n_cmp, width[s]); the logits at compare positions k >= cmp_logit0,
// (n_cmp_logits, vocab).
const float *hx_refcache_block_in(const struct hx_refcache *rc, int c, int layer);
const float *hx_refcache_site(const struct hx_refcache *rc, int c, int layer, enum kn_site s);
const float *hx_refcache_logits(const struct hx_refcache *rc, int c);
// Drops chunk c's pages (and, for a layer chunk, its layer block) from the process: reading
// them again faults them back in from the page cache. Keeps a variant's resident memory at the
// chunks in flight.
void hx_refcache_release(const struct hx_refcache *rc, int c);

// The directory a study database's caches go to by default: "DB.refcache" (into buf).
void hx_refcache_dir_for(const char *db_path, char *buf, size_t cap);
// The bytes a cache of this shape takes (plans).
int64_t hx_refcache_size_of(const struct hx_refcache_shape *s);
// The shape id gives with model c. 0, or QP_EINVAL with err (no window fits).
int hx_refcache_shape_of(const struct hx_refcache_id *id, const struct kn_config *c, struct hx_refcache_shape *s,
                         char *err);

#endif
