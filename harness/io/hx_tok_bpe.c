// hx_tok_bpe.c — byte-level BPE (GPT-2 scheme) for vocabularies of kind HX_TOK_BPE: the
// byte-to-code-point map, the merge-rank table, encoding of one text fragment, decoding of one
// token, and the GGUF "gpt2" loader (see hx_tokenizer.h).
//
// Encoding a fragment: the pre-tokenizer (hx_tok_pre.c) cuts it into pre-tokens; each
// pre-token's bytes become symbols (ByteLevel: the token of each byte's stand-in code point;
// character mode: each UTF-8 character's token, else <0xNN> byte tokens or unk); then the
// adjacent pair with the lowest merge rank is merged, leftmost first on equal ranks, until no
// pair has a merge: llama.cpp's llm_tokenizer_bpe_session and Hugging Face's BPE::merge_word.
// Symbols carry token ids and merges are looked up by (left id, right id) in an open-addressing
// table, so no strings are built; a binary heap with lazy invalidation keeps a pre-token of n
// symbols at O(n log n). Pre-tokens repeat (" the"), so their ids are cached for the length of
// one hx_tok_encode call (the cache is the call's own: encoding stays thread-safe).
// Depends on kernels/qp*.h, hx_gguf.h, hx_tok_pre.h and the tokenizer's inside.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hx_gguf.h"
#include "hx_tok_impl.h"
#include "hx_tok_pre.h"
#include "qp.h"
#include "qp_utf8.h"

// ---------------------------------------------------------------------------------------------
// The GPT-2 byte map

// Bytes that stand for themselves: '!'..'~', '¡'..'¬', '®'..'ÿ'. The other 68 bytes, in
// increasing order, take the code points 256, 257, ... (GPT-2's bytes_to_unicode): 0x00..0x20
// become 256..288, 0x7f..0xa0 become 289..322 and 0xad becomes 323. Decoding maps every
// stand-in of every token, so both directions are closed forms rather than searches.
#define BPE_LOW_END 0x20 // 0x00..0x20: the first 33 stand-ins
#define BPE_MID_LO 0x7f  // 0x7f..0xa0: the next 34
#define BPE_MID_HI 0xa0
#define BPE_SOFT_HYPHEN 0xad // the last one
#define BPE_N_LOW (BPE_LOW_END + 1)
#define BPE_N_MID (BPE_MID_HI - BPE_MID_LO + 1)

static int byte_is_printable(unsigned b) {
    return (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae);
}

static uint32_t byte_code_point(unsigned b) {
    if (byte_is_printable(b)) return b;
    if (b <= BPE_LOW_END) return 256 + b;
    if (b <= BPE_MID_HI) return 256 + BPE_N_LOW + (b - BPE_MID_LO);
    return 256 + BPE_N_LOW + BPE_N_MID; // BPE_SOFT_HYPHEN
}

size_t hx_bpe_byte_char(unsigned b, char *out) { return qp_utf8_put(byte_code_point(b & 0xff), out); }

int hx_bpe_char_byte(const char *s, size_t len, size_t *used) {
    uint32_t cp;
    size_t n = qp_utf8_seq((const unsigned char *)s, len, &cp);
    *used = n ? n : 1;
    if (!n) return -1;
    if (cp < 256) return byte_is_printable(cp) ? (int)cp : -1;
    uint32_t k = cp - 256; // the k-th non-printable byte
    if (k < BPE_N_LOW) return (int)k;
    if (k < BPE_N_LOW + BPE_N_MID) return (int)(BPE_MID_LO + k - BPE_N_LOW);
    return k == BPE_N_LOW + BPE_N_MID ? BPE_SOFT_HYPHEN : -1;
}

// ---------------------------------------------------------------------------------------------
// The merge table

static uint64_t merge_hash(uint64_t key) {
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdull;
    key ^= key >> 33;
    return key;
}

int hx_bpe_merges_init(struct hx_tok *t, size_t n_merges) {
    size_t cap = 16;
    while (cap < 2 * n_merges) cap *= 2;
    t->merges = malloc(cap * sizeof *t->merges);
    if (!t->merges) return QP_ENOMEM;
    memset(t->merges, 0xff, cap * sizeof *t->merges);
    t->merge_cap = cap;
    t->n_merges = 0;
    return 0;
}

void hx_bpe_merge_add(struct hx_tok *t, int left, int right, int rank, int id) {
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    size_t mask = t->merge_cap - 1;
    for (size_t i = merge_hash(key) & mask;; i = (i + 1) & mask) {
        if (t->merges[i].key == key) return; // llama.cpp's bpe_ranks.emplace keeps the first
        if (t->merges[i].key == UINT64_MAX) {
            t->merges[i] = (struct hx_merge_slot){key, rank, id};
            t->n_merges++;
            return;
        }
    }
}

static const struct hx_merge_slot *merge_find(const struct hx_tok *t, int left, int right) {
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    size_t mask = t->merge_cap - 1;
    for (size_t i = merge_hash(key) & mask;; i = (i + 1) & mask) {
        if (t->merges[i].key == key) return &t->merges[i];
        if (t->merges[i].key == UINT64_MAX) return NULL;
    }
}

void hx_bpe_finish(struct hx_tok *t) {
    for (int b = 0; b < 256; b++) {
        char s[8];
        size_t n;
        if (t->bpe_mode == HX_BPE_BYTELEVEL) {
            n = hx_bpe_byte_char((unsigned)b, s);
        } else {
            n = (size_t)snprintf(s, sizeof s, "<0x%02X>", b);
        }
        t->byte_id[b] = hx_tok__lookup(t, s, n);
    }
}

void hx_bpe_free(struct hx_tok *t) {
    free(t->merges);
    t->merges = NULL;
    hx_pre_destroy(t->pre);
    t->pre = NULL;
}

// ---------------------------------------------------------------------------------------------
// Merging one pre-token

// A symbol: its token id (-1: a byte or character with no token, dropped from the output as
// llama.cpp drops it), its live neighbours (-1 at the ends).
struct bsym {
    int32_t id, prev, next;
};

// A candidate merge: symbols left and right with the ids they had when it was pushed.
struct bpair {
    int32_t rank, left, right, lid, rid, id;
};

static int bpair_before(const struct bpair *a, const struct bpair *b) {
    if (a->rank != b->rank) return a->rank < b->rank;
    return a->left < b->left;
}

static void bheap_push(struct bpair *h, size_t *n, struct bpair p) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!bpair_before(&p, &h[parent])) break;
        h[i] = h[parent];
        i = parent;
    }
    h[i] = p;
}

static struct bpair bheap_pop(struct bpair *h, size_t *n) {
    struct bpair top = h[0], last = h[--*n];
    size_t i = 0, cnt = *n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= cnt) break;
        if (c + 1 < cnt && bpair_before(&h[c + 1], &h[c])) c++;
        if (!bpair_before(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    if (cnt > 0) h[i] = last;
    return top;
}

static void try_merge(const struct hx_tok *t, const struct bsym *s, int32_t l, int32_t r, struct bpair *heap,
                      size_t *n_heap) {
    if (l < 0 || r < 0 || s[l].id < 0 || s[r].id < 0) return;
    const struct hx_merge_slot *m = merge_find(t, s[l].id, s[r].id);
    if (m) bheap_push(heap, n_heap, (struct bpair){m->rank, l, r, s[l].id, s[r].id, m->id});
}

// The call's working memory: symbols, heap, the mapped word, and the cache.
struct cache_slot {
    uint64_t hash;
    uint32_t word_off, word_len; // into words
    uint32_t ids_off, n_ids;     // into ids
};

struct hx_bpe_cache {
    struct hx_pre_scratch *pre;
    struct bsym *syms;
    struct bpair *heap;
    size_t sym_cap, heap_cap;
    char *buf; // the fragment after Metaspace/prefix rewriting
    size_t buf_cap;
    char *mapped; // a pre-token in its byte-level spelling (ignore_merges)
    size_t mapped_cap;
    struct cache_slot *slots; // open addressing, power of two; hash 0 = empty
    size_t n_slots, used;
    char *words;
    size_t words_len, words_cap;
    int *ids;
    size_t ids_len, ids_cap;
    uint64_t seed;
};

struct hx_bpe_cache *hx_bpe_cache_create(void) {
    struct hx_bpe_cache *c = calloc(1, sizeof *c);
    if (c) c->seed = 0x9e3779b97f4a7c15ull;
    return c;
}

void hx_bpe_cache_destroy(struct hx_bpe_cache *c) {
    if (!c) return;
    hx_pre_scratch_destroy(c->pre);
    free(c->syms);
    free(c->heap);
    free(c->buf);
    free(c->mapped);
    free(c->slots);
    free(c->words);
    free(c->ids);
    free(c);
}

static int grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 0;
    size_t n = *cap ? *cap : 64;
    while (n < need) n *= 2;
    void *q = realloc(*p, n * elem);
    if (!q) return QP_ENOMEM;
    *p = q;
    *cap = n;
    return 0;
}

// Initial symbols of a pre-token in character mode: each UTF-8 character's token, else its
// bytes' <0xNN> tokens (byte_fallback, when all exist), else unk (fused when fuse_unk).
static size_t chars_symbols(const struct hx_tok *t, const char *w, size_t len, struct bsym *s) {
    size_t n = 0;
    for (size_t pos = 0; pos < len;) {
        size_t cl = qp_utf8_seq((const unsigned char *)w + pos, len - pos, NULL);
        if (!cl) cl = 1;
        int id = hx_tok__lookup(t, w + pos, cl);
        if (id >= 0) {
            s[n++].id = id;
        } else {
            int all = t->byte_fallback;
            for (size_t k = 0; k < cl && all; k++) all = t->byte_id[(unsigned char)w[pos + k]] >= 0;
            if (all) {
                for (size_t k = 0; k < cl; k++) s[n++].id = t->byte_id[(unsigned char)w[pos + k]];
            } else if (!(t->fuse_unk && n > 0 && s[n - 1].id == t->unk && t->unk >= 0)) {
                s[n++].id = t->unk;
            }
        }
        pos += cl;
    }
    return n;
}

// The byte-level spelling of w into c->mapped; its length.
static int map_word(struct hx_bpe_cache *c, const char *w, size_t len, size_t *out_len) {
    if (grow((void **)&c->mapped, &c->mapped_cap, 2 * len + 1, 1)) return QP_ENOMEM;
    size_t m = 0;
    for (size_t i = 0; i < len; i++) m += hx_bpe_byte_char((unsigned char)w[i], c->mapped + m);
    *out_len = m;
    return 0;
}

// Merges pre-token w[0..len) and appends its ids to out.
static int bpe_word(const struct hx_tok *t, struct hx_bpe_cache *c, const char *w, size_t len, int *out,
                    size_t *n_out) {
    if (t->ignore_merges) {
        size_t ml = len;
        const char *key = w;
        if (t->bpe_mode == HX_BPE_BYTELEVEL) {
            if (map_word(c, w, len, &ml)) return QP_ENOMEM;
            key = c->mapped;
        }
        int id = hx_tok__lookup(t, key, ml);
        if (id >= 0) {
            out[(*n_out)++] = id;
            return 0;
        }
    }
    // Symbols never outnumber the bytes (a character's byte fallback gives one per byte); the
    // heap holds the n - 1 initial pairs and two more per merge.
    if (grow((void **)&c->syms, &c->sym_cap, len + 1, sizeof *c->syms) ||
        grow((void **)&c->heap, &c->heap_cap, 3 * len + 1, sizeof *c->heap))
        return QP_ENOMEM;
    struct bpair *heap = c->heap;
    struct bsym *s = c->syms;
    size_t n;
    if (t->bpe_mode == HX_BPE_BYTELEVEL) {
        for (n = 0; n < len; n++) s[n].id = t->byte_id[(unsigned char)w[n]];
    } else {
        n = chars_symbols(t, w, len, s);
    }
    for (size_t i = 0; i < n; i++) {
        s[i].prev = (int32_t)i - 1;
        s[i].next = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    size_t n_heap = 0;
    for (size_t i = 1; i < n; i++) try_merge(t, s, (int32_t)i - 1, (int32_t)i, heap, &n_heap);
    while (n_heap > 0) {
        struct bpair p = bheap_pop(heap, &n_heap);
        struct bsym *l = &s[p.left], *r = &s[p.right];
        // Stale: either side was merged away or into something else since the push.
        if (l->id != p.lid || r->id != p.rid || l->next != p.right) continue;
        l->id = p.id;
        r->id = -2; // merged away: never equal to a pushed id
        l->next = r->next;
        if (r->next >= 0) s[r->next].prev = p.left;
        try_merge(t, s, l->prev, p.left, heap, &n_heap);
        try_merge(t, s, p.left, l->next, heap, &n_heap);
    }
    for (int32_t i = n ? 0 : -1; i >= 0; i = s[i].next)
        if (s[i].id >= 0) out[(*n_out)++] = s[i].id;
    return 0;
}

// ---------------------------------------------------------------------------------------------
// The per-call cache of pre-token -> ids

#define CACHE_MAX_WORD 64         // longer pre-tokens are rare and not worth keeping
#define CACHE_MAX_SLOTS (1u << 18) // then the cache starts over

static struct cache_slot *cache_find(struct hx_bpe_cache *c, const char *w, size_t len, uint64_t h) {
    if (!c->n_slots) return NULL;
    size_t mask = c->n_slots - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        struct cache_slot *s = &c->slots[i];
        if (s->hash == 0) return s;
        if (s->hash == h && s->word_len == len && memcmp(c->words + s->word_off, w, len) == 0) return s;
    }
}

static void cache_clear(struct hx_bpe_cache *c) {
    if (c->slots) memset(c->slots, 0, c->n_slots * sizeof *c->slots);
    c->used = c->words_len = c->ids_len = 0;
}

// Rehashes into twice the slots, or starts over at the size limit.
static int cache_grow(struct hx_bpe_cache *c) {
    if (c->n_slots >= CACHE_MAX_SLOTS) {
        cache_clear(c);
        return 0;
    }
    size_t n = c->n_slots ? 2 * c->n_slots : 1024;
    struct cache_slot *slots = calloc(n, sizeof *slots);
    if (!slots) return QP_ENOMEM;
    for (size_t i = 0; i < c->n_slots; i++) {
        if (!c->slots[i].hash) continue;
        size_t j = c->slots[i].hash & (n - 1);
        while (slots[j].hash) j = (j + 1) & (n - 1);
        slots[j] = c->slots[i];
    }
    free(c->slots);
    c->slots = slots;
    c->n_slots = n;
    return 0;
}

// Ids of pre-token w, from the cache or merged (and then remembered).
static int word_ids(const struct hx_tok *t, struct hx_bpe_cache *c, const char *w, size_t len, int *out,
                    size_t *n_out) {
    if (len > CACHE_MAX_WORD) return bpe_word(t, c, w, len, out, n_out);
    uint64_t h = qp_hash_bytes(w, len, c->seed) | 1;
    struct cache_slot *s = cache_find(c, w, len, h);
    if (s && s->hash) {
        if (s->n_ids) memcpy(out + *n_out, c->ids + s->ids_off, s->n_ids * sizeof *out);
        *n_out += s->n_ids;
        return 0;
    }
    size_t before = *n_out;
    int rc = bpe_word(t, c, w, len, out, n_out);
    if (rc) return rc;
    if (2 * (c->used + 1) > c->n_slots) {
        if (cache_grow(c)) return 0; // no room to remember: still correct
        s = cache_find(c, w, len, h);
    }
    size_t k = *n_out - before;
    if (grow((void **)&c->words, &c->words_cap, c->words_len + len, 1) ||
        grow((void **)&c->ids, &c->ids_cap, c->ids_len + k, sizeof *c->ids))
        return 0;
    memcpy(c->words + c->words_len, w, len);
    if (k) memcpy(c->ids + c->ids_len, out + before, k * sizeof *out); // k == 0: no token had the bytes
    *s = (struct cache_slot){h, (uint32_t)c->words_len, (uint32_t)len, (uint32_t)c->ids_len, (uint32_t)k};
    c->words_len += len;
    c->ids_len += k;
    c->used++;
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Encoding a fragment

// The fragment as the model sees it: Metaspace's "▁" for ' ' and its prefix, or ByteLevel's
// add_prefix_space. Returns the text to split (c->buf or the fragment itself).
static const char *rewrite_fragment(const struct hx_tok *t, struct hx_bpe_cache *c, const char *text,
                                    size_t len, int first, size_t *out_len) {
    int meta_prefix = t->meta == HX_META_ALWAYS || (t->meta == HX_META_FIRST && first);
    int byte_prefix = t->prefix_space && len > 0 && text[0] != ' ';
    if (!meta_prefix && !t->meta_replace && !byte_prefix) {
        *out_len = len;
        return text;
    }
    if (grow((void **)&c->buf, &c->buf_cap, 3 * len + 4, 1)) return NULL;
    size_t w = 0;
    if (byte_prefix) c->buf[w++] = ' ';
    // Metaspace prepends only to a text that does not already start with "▁" (after the
    // spaces became "▁"); the Prepend normalizer of older files prepends always.
    int starts = len > 0 && (text[0] == ' ' || (len >= 3 && memcmp(text, "\xe2\x96\x81", 3) == 0));
    if (meta_prefix && !(t->meta_if_missing && starts)) {
        memcpy(c->buf + w, "\xe2\x96\x81", 3);
        w += 3;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ' && t->meta_replace) {
            memcpy(c->buf + w, "\xe2\x96\x81", 3);
            w += 3;
        } else {
            c->buf[w++] = text[i];
        }
    }
    *out_len = w;
    return c->buf;
}

// Metaspace split: every "▁" starts a new pre-token (Hugging Face's MergedWithNext).
static int split_at_meta(const struct hx_tok *t, struct hx_bpe_cache *c, const char *s, size_t len, int *out,
                      size_t *n_out) {
    size_t start = 0;
    for (size_t i = 1; i + 3 <= len; i++) {
        if (memcmp(s + i, "\xe2\x96\x81", 3) != 0) continue;
        int rc = word_ids(t, c, s + start, i - start, out, n_out);
        if (rc) return rc;
        start = i;
    }
    return len > start ? word_ids(t, c, s + start, len - start, out, n_out) : 0;
}

int hx_bpe_encode_fragment(const struct hx_tok *t, struct hx_bpe_cache *c, const char *text,
                           size_t len, int first, int *out, size_t *n_out) {
    size_t blen;
    const char *buf = rewrite_fragment(t, c, text, len, first, &blen);
    if (!buf) return QP_ENOMEM;
    if (t->meta_replace && t->meta_split) return split_at_meta(t, c, buf, blen, out, n_out);
    if (!t->pre) return word_ids(t, c, buf, blen, out, n_out);
    if (!c->pre && !(c->pre = hx_pre_scratch_create(t->pre))) return QP_ENOMEM;
    const struct hx_span *sp;
    size_t n_sp;
    char err[QP_ERRLEN];
    int rc = hx_pre_split(t->pre, c->pre, buf, blen, &sp, &n_sp, err);
    for (size_t i = 0; i < n_sp && !rc; i++) rc = word_ids(t, c, buf + sp[i].start, sp[i].len, out, n_out);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// Decoding one token

size_t hx_bpe_token_bytes(const struct hx_tok *t, int id, char *out, size_t cap) {
    const char *s = t->strs + t->off[id];
    size_t len = t->off[id + 1] - t->off[id] - 1, w = 0;
    if (t->bpe_mode == HX_BPE_CHARS) { // "▁" back to ' '
        for (size_t i = 0; i < len; i++) {
            char ch = s[i];
            if (i + 3 <= len && memcmp(s + i, "\xe2\x96\x81", 3) == 0) ch = ' ', i += 2;
            if (w < cap) out[w] = ch;
            w++;
        }
        return w;
    }
    for (size_t i = 0; i < len;) {
        size_t used;
        int b = hx_bpe_char_byte(s + i, len - i, &used);
        if (b >= 0) {
            if (w < cap) out[w] = (char)b;
            w++;
        } else { // not a stand-in: the code point as it is
            for (size_t k = 0; k < used; k++, w++)
                if (w < cap) out[w] = s[i + k];
        }
        i += used;
    }
    return w;
}

// ---------------------------------------------------------------------------------------------
// Loading: GGUF tokenizer.ggml.* of model "gpt2"

int hx_bpe_add_merge(struct hx_tok *t, const char *l, size_t ll, const char *r, size_t rl, int rank,
                     char *scratch, const char *path, char *err) {
    int left = hx_tok__lookup(t, l, ll), right = hx_tok__lookup(t, r, rl);
    if (left < 0 || right < 0)
        return qp_fail(err, QP_EFORMAT, "cannot read '%s': merge %d '%.*s %.*s' names '%.*s', which is not a token",
                       path, rank, (int)QP_MIN(ll, (size_t)60), l, (int)QP_MIN(rl, (size_t)60), r,
                       (int)QP_MIN(left < 0 ? ll : rl, (size_t)60), left < 0 ? l : r);
    memcpy(scratch, l, ll);
    memcpy(scratch + ll, r, rl);
    int id = hx_tok__lookup(t, scratch, ll + rl);
    if (id < 0)
        return qp_fail(err, QP_EFORMAT, "cannot read '%s': merge %d '%.*s %.*s' makes '%.*s%.*s', which is not a token",
                       path, rank, (int)QP_MIN(ll, (size_t)60), l, (int)QP_MIN(rl, (size_t)60), r,
                       (int)QP_MIN(ll, (size_t)60), l, (int)QP_MIN(rl, (size_t)60), r);
    hx_bpe_merge_add(t, left, right, rank, id);
    return 0;
}

// tokenizer.ggml.merges: "left right", split at the first space after the first byte (llama.cpp).
static int gguf_merges(const struct hx_gguf *g, struct hx_tok *t, char *err) {
    const char *path = hx_gguf_path(g);
    const struct hx_gguf_kv *kv = hx_gguf_find(g, "tokenizer.ggml.merges");
    if (!kv) return qp_fail(err, QP_ENOENT, "cannot read '%s': no key 'tokenizer.ggml.merges' (a gpt2 vocabulary needs its merges)", path);
    const struct hx_gguf_value *v = &kv->val;
    if (v->type != HX_GGUF_ARRAY || v->v.arr.type != HX_GGUF_STRING || (v->v.arr.n > 0 && !v->v.arr.items))
        return qp_fail(err, QP_EFORMAT, "cannot read '%s': key 'tokenizer.ggml.merges' is not an array of strings", path);
    if (v->v.arr.n > INT32_MAX / 2)
        return qp_fail(err, QP_ERANGE, "cannot read '%s': %llu merges", path, (unsigned long long)v->v.arr.n);
    if (hx_bpe_merges_init(t, (size_t)v->v.arr.n)) return qp_fail(err, QP_ENOMEM, "cannot read '%s': out of memory", path);
    char *scratch = malloc(2 * t->max_len + 2);
    if (!scratch) return qp_fail(err, QP_ENOMEM, "cannot read '%s': out of memory", path);
    int rc = 0;
    for (uint64_t i = 0; i < v->v.arr.n && !rc; i++) {
        const struct hx_gguf_value *s = &v->v.arr.items[i];
        const char *p = s->v.str.ptr;
        size_t len = (size_t)s->v.str.len;
        const char *sp = len > 1 ? memchr(p + 1, ' ', len - 1) : NULL;
        if (s->type != HX_GGUF_STRING || !sp) {
            rc = qp_fail(err, QP_EFORMAT, "cannot read '%s': merge %llu '%.*s' is not two tokens separated by a space",
                         path, (unsigned long long)i, (int)QP_MIN(len, (size_t)60), p ? p : "");
            break;
        }
        size_t ll = (size_t)(sp - p);
        if (ll > t->max_len || len - ll - 1 > t->max_len) {
            rc = qp_fail(err, QP_EFORMAT, "cannot read '%s': merge %llu '%.*s' names a string longer than any token",
                         path, (unsigned long long)i, (int)QP_MIN(len, (size_t)60), p);
            break;
        }
        rc = hx_bpe_add_merge(t, p, ll, sp + 1, len - ll - 1, (int)i, scratch, path, err);
    }
    free(scratch);
    return rc;
}

int hx_bpe_from_gguf(const struct hx_gguf *g, struct hx_tok **out, char *err) {
    *out = NULL;
    const char *path = hx_gguf_path(g);
    struct hx_tok *t = NULL;
    int rc = hx_tok__gguf_tokens(g, 0, &t, err);
    if (rc) return rc;
    t->kind = HX_TOK_BPE;
    t->bpe_mode = HX_BPE_BYTELEVEL;
    const char *pre = "default";
    size_t pre_len = 7;
    rc = hx_gguf_get_str(g, "tokenizer.ggml.pre", &pre, &pre_len);
    if (rc == QP_ENOENT) {
        pre = "default"; // llama.cpp warns and uses its default expressions
        pre_len = 7;
        rc = 0;
    } else if (rc) {
        rc = qp_fail(err, QP_EFORMAT, "cannot read '%s': key 'tokenizer.ggml.pre' is not a string", path);
    }
    if (!rc && pre_len >= sizeof t->pre_name)
        rc = qp_fail(err, QP_ENOTSUP, "cannot read '%s': pre-tokenizer '%.60s...' is not known (known: %s)", path, pre,
                     hx_pre_known_names());
    if (!rc) {
        memcpy(t->pre_name, pre, pre_len);
        t->pre_name[pre_len] = '\0';
        char msg[QP_ERRLEN];
        rc = hx_pre_create_named(t->pre_name, &t->pre, &t->ignore_merges, &t->add_bos, msg);
        if (rc) rc = qp_fail(err, rc, "cannot read '%s': %s", path, msg);
    }
    if (!rc) rc = hx_tok__gguf_id(g, "tokenizer.ggml.bos_token_id", -1, &t->bos, err);
    if (!rc) rc = hx_tok__gguf_id(g, "tokenizer.ggml.eos_token_id", -1, &t->eos, err);
    if (!rc) rc = hx_tok__gguf_id(g, "tokenizer.ggml.unknown_token_id", -1, &t->unk, err);
    if (!rc) rc = hx_tok__gguf_bool(g, "tokenizer.ggml.add_bos_token", &t->add_bos, err);
    if (!rc) rc = hx_tok__finish(t, path, 0, err);
    if (!rc) rc = gguf_merges(g, t, err);
    if (rc) {
        hx_tok_destroy(t);
        return rc;
    }
    hx_bpe_finish(t);
    snprintf(t->describe, sizeof t->describe, "bpe (gguf gpt2, pre '%s', %d tokens, %zu merges)", t->pre_name,
             t->n_vocab, t->n_merges);
    *out = t;
    return 0;
}
