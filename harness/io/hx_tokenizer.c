// tokenizer.c — SentencePiece-style BPE tokenizer with llama.cpp's SPM semantics, loaded from a
// llama2.c tokenizer.bin or from a GGUF's tokenizer.ggml.* keys (see tokenizer.h).
//
// Encoding works on one byte buffer (optional space + text). Symbols start as UTF-8 characters;
// a max-heap of candidate pairs (score, then leftmost) drives the merges and stale entries are
// dropped when popped (lazy invalidation), so a text of n bytes costs O(n log n). The text is
// first cut where no entry can span the boundary (exact, see segment_end) so that each heap
// stays small. Lookups of strings go through an open-addressing hash table, never a scan of
// the vocabulary.
// Must not depend on anything but libc, kernels/qp.h and the GGUF reader API (harness/io/hx_gguf.h):
// no model, engine or database code.
#include "hx_tokenizer.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "hx_gguf.h"
#include "qp.h"

// ---------------------------------------------------------------------------------------------
// Types

// A hash slot: the id of a token (-1 when empty) and the top 32 bits of its string's hash, which
// settle most failed lookups without touching the strings.
struct slot {
    uint32_t tag;
    int32_t id;
};

struct hx_tok {
    int n_vocab;
    int bos, eos, unk;
    size_t max_len;     // longest token string, bytes; longer candidates are never looked up
    char *strs;         // all token strings back to back, each followed by a NUL
    size_t *off;        // (n_vocab + 1) offsets into strs; string i is [off[i], off[i+1] - 1)
    float *scores;      // (n_vocab)
    int *types;         // (n_vocab) enum hx_tok_type
    struct slot *table; // (table_cap) open-addressing hash slots
    size_t table_cap;   // a power of two, at least twice n_vocab
    int byte_id[256];   // the token each byte falls back to (<0xNN>, else the 1-byte string, else unk)
    // Bit (a << 8 | b) set when bytes a, b are adjacent in some entry: a boundary between two
    // characters whose bytes do not join can never be merged across.
    uint8_t join[256 * 256 / 8];
    uint64_t seed; // of qp_hash_bytes, random per tokenizer (see qp.h)
};

// One symbol of the text being encoded: bytes [start, start + n) of the buffer. n == 0 once it
// has been merged into its left neighbour. prev/next link the live symbols (-1 at the ends).
struct sym {
    uint32_t start, n;
    int32_t prev, next;
};

// A candidate merge of symbols left and right (left's next when it was pushed), whose joined
// text of size bytes is a vocabulary entry with the given score.
struct pair {
    float score;
    int32_t left, right;
    uint32_t size;
};

// ---------------------------------------------------------------------------------------------
// Helpers: hashing and lookup


static const char *tok_text(const struct hx_tok *t, int id, size_t *len) {
    *len = t->off[id + 1] - t->off[id] - 1;
    return t->strs + t->off[id];
}

// The id of the token whose text is exactly s[0..len), or -1.
static int tok_lookup(const struct hx_tok *t, const char *s, size_t len) {
    if (len > t->max_len) return -1;
    size_t mask = t->table_cap - 1;
    uint64_t h = qp_hash_bytes(s, len, t->seed);
    uint32_t tag = (uint32_t)(h >> 32);
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        int32_t id = t->table[i].id;
        if (id < 0) return -1;
        if (t->table[i].tag != tag) continue;
        size_t l;
        const char *p = tok_text(t, id, &l);
        if (l == len && memcmp(p, s, len) == 0) return id;
    }
}

// Fills the hash table and the join bitmap. With duplicate strings the last id wins, as in
// llama.cpp's token_to_id map.
static int tok_build_table(struct hx_tok *t) {
    size_t cap = 16;
    while (cap < 2 * (size_t)t->n_vocab) cap *= 2;
    t->table = malloc(cap * sizeof *t->table);
    if (!t->table) return QP_ENOMEM;
    memset(t->table, 0xff, cap * sizeof *t->table);
    t->table_cap = cap;
    t->max_len = 0;
    t->seed = qp_hash_seed(t);
    for (int id = 0; id < t->n_vocab; id++) {
        size_t len;
        const char *s = tok_text(t, id, &len);
        if (len > t->max_len) t->max_len = len;
        uint64_t h = qp_hash_bytes(s, len, t->seed);
        size_t i = h & (cap - 1);
        for (;; i = (i + 1) & (cap - 1)) {
            int32_t other = t->table[i].id;
            if (other < 0) break;
            size_t l;
            const char *p = tok_text(t, other, &l);
            if (l == len && memcmp(p, s, len) == 0) break;
        }
        t->table[i] = (struct slot){(uint32_t)(h >> 32), id};
        for (size_t k = 1; k < len; k++) {
            unsigned bit = (unsigned)(unsigned char)s[k - 1] << 8 | (unsigned char)s[k];
            t->join[bit >> 3] |= (uint8_t)(1u << (bit & 7));
        }
    }
    return 0;
}

// If s[0..len) is exactly "<0xHH>" (hex digits in either case), the byte; else -1.
static int parse_byte_token(const char *s, size_t len) {
    if (len != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int v = 0;
    for (int k = 3; k < 5; k++) {
        char c = s[k];
        int d;
        if (c >= '0' && c <= '9') d = c - '0';
        else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
        else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else return -1;
        v = v * 16 + d;
    }
    return v;
}

// Byte fallback as llama.cpp's byte_to_token for SPM: "<0xNN>" (upper-case hex), else the
// one-byte string, else (where llama.cpp would throw) the unknown token.
static void tok_build_bytes(struct hx_tok *t) {
    for (int b = 0; b < 256; b++) {
        char buf[8];
        snprintf(buf, sizeof buf, "<0x%02X>", b);
        int id = tok_lookup(t, buf, 6);
        if (id < 0) {
            char c = (char)b;
            id = tok_lookup(t, &c, 1);
        }
        t->byte_id[b] = id >= 0 ? id : t->unk;
    }
}

// Allocates a tokenizer for n tokens whose strings take str_bytes bytes in total (without NULs).
static struct hx_tok *tok_alloc(int n, size_t str_bytes) {
    struct hx_tok *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->n_vocab = n;
    t->strs = malloc(str_bytes + (size_t)n + 1);
    t->off = malloc(((size_t)n + 1) * sizeof *t->off);
    t->scores = malloc((size_t)n * sizeof *t->scores);
    t->types = malloc((size_t)n * sizeof *t->types);
    if (!t->strs || !t->off || !t->scores || !t->types) {
        hx_tok_destroy(t);
        return NULL;
    }
    t->off[0] = 0;
    return t;
}

// Appends the next token's string (ids in order), turning GGUF's "▁" (U+2581) into ' ' when
// asked. Returns the stored length.
static size_t tok_push_str(struct hx_tok *t, int id, const char *s, size_t len, int unescape) {
    char *dst = t->strs + t->off[id];
    size_t w = 0;
    for (size_t i = 0; i < len; i++) {
        if (unescape && i + 2 < len && (unsigned char)s[i] == 0xe2 &&
            (unsigned char)s[i + 1] == 0x96 && (unsigned char)s[i + 2] == 0x81) {
            dst[w++] = ' ';
            i += 2;
        } else {
            dst[w++] = s[i];
        }
    }
    dst[w] = '\0';
    t->off[id + 1] = t->off[id] + w + 1;
    return w;
}

// Hash table, byte fallback and id checks once every string, score and type is in place.
static int tok_finish(struct hx_tok *t, const char *path, char *err) {
    if (tok_build_table(t) != 0) return qp_fail(err, QP_ENOMEM, "cannot read '%s': out of memory", path);
    const struct {
        const char *what;
        int id;
    } ids[] = {{"bos", t->bos}, {"eos", t->eos}, {"unknown", t->unk}};
    for (size_t i = 0; i < QP_ARRAY_LEN(ids); i++)
        if (ids[i].id < 0 || ids[i].id >= t->n_vocab)
            return qp_fail(err, QP_ERANGE, "cannot read '%s': %s token id %d is outside the vocabulary of %d",
                           path, ids[i].what, ids[i].id, t->n_vocab);
    tok_build_bytes(t);
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Loading: llama2.c tokenizer.bin

static int read_whole_file(const char *path, unsigned char **data, size_t *size, char *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return qp_fail(err, QP_EIO, "cannot read '%s': %s", path, strerror(errno));
    unsigned char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            size_t ncap = cap ? cap * 2 : 65536;
            unsigned char *nb = realloc(buf, ncap);
            if (!nb) {
                free(buf);
                fclose(f);
                return qp_fail(err, QP_ENOMEM, "cannot read '%s': out of memory", path);
            }
            buf = nb;
            cap = ncap;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return qp_fail(err, QP_EIO, "cannot read '%s': read error", path);
    }
    *data = buf;
    *size = len;
    return 0;
}

static int32_t rd_i32(const unsigned char *p) {
    uint32_t v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    int32_t r;
    memcpy(&r, &v, sizeof r);
    return r;
}

static float rd_f32(const unsigned char *p) {
    uint32_t v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    float r;
    memcpy(&r, &v, sizeof r);
    return r;
}

// About 100 lines: the file's records are read in order, each checked where it is read, with
// one cleanup path; left whole while the tokenizer work of issue 25 reshapes this file.
int hx_tok_load_llama2c(const char *path, int vocab_size, struct hx_tok **out, char *err) {
    *out = NULL;
    if (vocab_size <= 0)
        return qp_fail(err, QP_ERANGE, "cannot read '%s': vocabulary size %d is not positive", path,
                       vocab_size);
    unsigned char *d = NULL;
    size_t size = 0;
    int rc = read_whole_file(path, &d, &size, err);
    if (rc) return rc;
    if (size < 4) {
        free(d);
        return qp_fail(err, QP_EFORMAT, "cannot read '%s': file too short for a tokenizer header (%zu bytes)",
                       path, size);
    }
    int32_t max_token_length = rd_i32(d);
    if (max_token_length < 0) {
        free(d);
        return qp_fail(err, QP_EFORMAT, "cannot read '%s': negative max_token_length %d", path,
                       (int)max_token_length);
    }
    // Only a hint (the longest token is measured below), but one longer than the whole file
    // means a corrupt header; llama2.c's run.c would size a buffer from it.
    if ((size_t)max_token_length > size - 4) {
        free(d);
        return qp_fail(err, QP_EFORMAT, "cannot read '%s': max_token_length %d is longer than the file (%zu bytes)",
                       path, (int)max_token_length, size);
    }
    // Each record takes at least 8 bytes: reject an impossible count before allocating.
    if ((size_t)vocab_size > (size - 4) / 8) {
        free(d);
        return qp_fail(err, QP_EFORMAT, "cannot read '%s': file too short for %d tokens (%zu bytes)", path,
                       vocab_size, size);
    }
    // First pass: validate every record and total the string bytes.
    size_t pos = 4, str_bytes = 0;
    for (int i = 0; i < vocab_size; i++) {
        if (size - pos < 8) {
            free(d);
            return qp_fail(err, QP_EFORMAT, "cannot read '%s': token %d of %d extends past end of file", path, i,
                           vocab_size);
        }
        int32_t len = rd_i32(d + pos + 4);
        pos += 8;
        if (len < 0) {
            free(d);
            return qp_fail(err, QP_EFORMAT, "cannot read '%s': token %d has negative length %d", path, i, (int)len);
        }
        if ((size_t)len > size - pos) {
            free(d);
            return qp_fail(err, QP_EFORMAT, "cannot read '%s': token %d (length %d) extends past end of file",
                           path, i, (int)len);
        }
        pos += (size_t)len;
        str_bytes += (size_t)len + 8; // room for renaming ids 0..2 below
    }
    struct hx_tok *t = tok_alloc(vocab_size, str_bytes);
    if (!t) {
        free(d);
        return qp_fail(err, QP_ENOMEM, "cannot read '%s': out of memory", path);
    }
    pos = 4;
    for (int i = 0; i < vocab_size; i++) {
        float score = rd_f32(d + pos);
        int32_t len = rd_i32(d + pos + 4);
        const char *s = (const char *)d + pos + 8;
        pos += 8 + (size_t)len;
        // As llama.cpp's llama2.c converter: ids 0..2 become <unk>, <s>, </s> (llama2.c stores
        // "\n<s>\n" and "\n</s>\n"), so both sources hold the same vocabulary.
        int type;
        if (i == 0) {
            s = "<unk>";
            len = 5;
            type = HX_TOK_UNKNOWN;
        } else if (i == 1 || i == 2) {
            s = i == 1 ? "<s>" : "</s>";
            len = (int32_t)strlen(s);
            type = HX_TOK_CONTROL;
        } else {
            type = parse_byte_token(s, (size_t)len) >= 0 ? HX_TOK_BYTE : HX_TOK_NORMAL;
        }
        tok_push_str(t, i, s, (size_t)len, 0);
        t->scores[i] = score;
        t->types[i] = type;
    }
    free(d);
    t->unk = 0;
    t->bos = vocab_size > 1 ? 1 : 0;
    t->eos = vocab_size > 2 ? 2 : 0;
    if (vocab_size < 3) {
        hx_tok_destroy(t);
        return qp_fail(err, QP_ERANGE, "cannot read '%s': vocabulary of %d tokens has no room for unk, bos and eos",
                       path, vocab_size);
    }
    rc = tok_finish(t, path, err);
    if (rc) {
        hx_tok_destroy(t);
        return rc;
    }
    *out = t;
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Loading: GGUF tokenizer.ggml.*

// A required or optional array of the given element type. Returns 0, QP_ENOENT (absent) or
// QP_EFORMAT (with a message).
static int gguf_array(const struct hx_gguf *g, const char *key, enum hx_gguf_type elem,
                      const struct hx_gguf_value **arr, char *err) {
    const struct hx_gguf_kv *kv = hx_gguf_find(g, key);
    if (!kv) return QP_ENOENT;
    const struct hx_gguf_value *v = &kv->val;
    if (v->type != HX_GGUF_ARRAY || v->v.arr.type != elem ||
        (elem == HX_GGUF_STRING && v->v.arr.n > 0 && !v->v.arr.items) ||
        (elem != HX_GGUF_STRING && v->v.arr.n > 0 && !v->v.arr.data))
        return qp_fail(err, QP_EFORMAT, "cannot read '%s': key '%s' has the wrong type (want an array of %s)",
                       hx_gguf_path(g), key,
                       elem == HX_GGUF_STRING ? "strings" : elem == HX_GGUF_FLOAT32 ? "float32" : "int32");
    *arr = v;
    return 0;
}

static int gguf_token_id(const struct hx_gguf *g, const char *key, int def, int *out, char *err) {
    int64_t v;
    int rc = hx_gguf_get_int(g, key, &v);
    if (rc == QP_ENOENT) {
        *out = def;
        return 0;
    }
    if (rc) return qp_fail(err, QP_EFORMAT, "cannot read '%s': key '%s' is not an integer", hx_gguf_path(g), key);
    if (v < 0 || v > INT32_MAX)
        return qp_fail(err, QP_ERANGE, "cannot read '%s': key '%s' = %lld is not a token id", hx_gguf_path(g), key,
                       (long long)v);
    *out = (int)v;
    return 0;
}

int hx_tok_from_gguf(const struct hx_gguf *g, struct hx_tok **out, char *err) {
    *out = NULL;
    const char *path = hx_gguf_path(g);
    const char *model;
    size_t model_len;
    int rc = hx_gguf_get_str(g, "tokenizer.ggml.model", &model, &model_len);
    if (rc == QP_ENOENT) return qp_fail(err, QP_ENOENT, "cannot read '%s': no key 'tokenizer.ggml.model'", path);
    if (rc) return qp_fail(err, QP_EFORMAT, "cannot read '%s': key 'tokenizer.ggml.model' is not a string", path);
    if (model_len != 5 || memcmp(model, "llama", 5) != 0)
        return qp_fail(err, QP_ENOTSUP, "cannot read '%s': tokenizer model '%.*s' is not supported (only 'llama')",
                       path, (int)QP_MIN(model_len, (size_t)100), model);

    const struct hx_gguf_value *tokens = NULL, *scores = NULL, *types = NULL;
    rc = gguf_array(g, "tokenizer.ggml.tokens", HX_GGUF_STRING, &tokens, err);
    if (rc == QP_ENOENT) return qp_fail(err, QP_ENOENT, "cannot read '%s': no key 'tokenizer.ggml.tokens'", path);
    if (rc) return rc;
    rc = gguf_array(g, "tokenizer.ggml.scores", HX_GGUF_FLOAT32, &scores, err);
    if (rc && rc != QP_ENOENT) return rc;
    rc = gguf_array(g, "tokenizer.ggml.token_type", HX_GGUF_INT32, &types, err);
    if (rc && rc != QP_ENOENT) return rc;

    uint64_t n = tokens->v.arr.n;
    if (n < 1 || n > INT32_MAX / 2)
        return qp_fail(err, QP_ERANGE, "cannot read '%s': vocabulary size %llu out of range", path,
                       (unsigned long long)n);
    if (scores && scores->v.arr.n != n)
        return qp_fail(err, QP_EFORMAT, "cannot read '%s': %llu scores for %llu tokens", path,
                       (unsigned long long)scores->v.arr.n, (unsigned long long)n);
    if (types && types->v.arr.n != n)
        return qp_fail(err, QP_EFORMAT, "cannot read '%s': %llu token types for %llu tokens", path,
                       (unsigned long long)types->v.arr.n, (unsigned long long)n);
    size_t str_bytes = 0;
    for (uint64_t i = 0; i < n; i++) {
        const struct hx_gguf_value *s = &tokens->v.arr.items[i];
        if (s->type != HX_GGUF_STRING || (s->v.str.len > 0 && !s->v.str.ptr))
            return qp_fail(err, QP_EFORMAT, "cannot read '%s': token %llu is not a string", path,
                           (unsigned long long)i);
        if (s->v.str.len > SIZE_MAX / 4 - str_bytes)
            return qp_fail(err, QP_ERANGE, "cannot read '%s': token strings too large", path);
        str_bytes += s->v.str.len;
    }
    struct hx_tok *t = tok_alloc((int)n, str_bytes);
    if (!t) return qp_fail(err, QP_ENOMEM, "cannot read '%s': out of memory", path);
    for (int i = 0; i < (int)n; i++) {
        const struct hx_gguf_value *s = &tokens->v.arr.items[i];
        tok_push_str(t, i, s->v.str.ptr, (size_t)s->v.str.len, 1);
        t->scores[i] = scores ? rd_f32(scores->v.arr.data + 4 * (size_t)i) : 0.0f;
        t->types[i] = types ? (int)rd_i32(types->v.arr.data + 4 * (size_t)i) : HX_TOK_NORMAL;
    }
    if ((rc = gguf_token_id(g, "tokenizer.ggml.bos_token_id", 1, &t->bos, err)) ||
        (rc = gguf_token_id(g, "tokenizer.ggml.eos_token_id", 2, &t->eos, err)) ||
        (rc = gguf_token_id(g, "tokenizer.ggml.unknown_token_id", 0, &t->unk, err)) ||
        (rc = tok_finish(t, path, err))) {
        hx_tok_destroy(t);
        return rc;
    }
    *out = t;
    return 0;
}

void hx_tok_destroy(struct hx_tok *t) {
    if (!t) return;
    free(t->strs);
    free(t->off);
    free(t->scores);
    free(t->types);
    free(t->table);
    free(t);
}

// ---------------------------------------------------------------------------------------------
// Accessors

int hx_tok_n_vocab(const struct hx_tok *t) { return t->n_vocab; }
int hx_tok_bos(const struct hx_tok *t) { return t->bos; }
int hx_tok_eos(const struct hx_tok *t) { return t->eos; }
int hx_tok_unk(const struct hx_tok *t) { return t->unk; }

const char *hx_tok_str(const struct hx_tok *t, int id, size_t *len) {
    QP_ASSERT(id >= 0 && id < t->n_vocab);
    size_t l;
    const char *s = tok_text(t, id, &l);
    if (len) *len = l;
    return s;
}

float hx_tok_score(const struct hx_tok *t, int id) {
    QP_ASSERT(id >= 0 && id < t->n_vocab);
    return t->scores[id];
}

int hx_tok_type(const struct hx_tok *t, int id) {
    QP_ASSERT(id >= 0 && id < t->n_vocab);
    return t->types[id];
}

// ---------------------------------------------------------------------------------------------
// Encoding

// The byte length of the UTF-8 character starting with lead byte c, from its top four bits as
// llama.cpp's unicode_len_utf8: continuation or malformed lead bytes count as one byte.
static size_t utf8_len(unsigned char c) {
    static const unsigned char lens[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return lens[c >> 4];
}

// Max-heap order: higher score first; on equal scores the leftmost pair.
static int pair_before(const struct pair *a, const struct pair *b) {
    if (a->score != b->score) return a->score > b->score;
    return a->left < b->left;
}

static void heap_push(struct pair *h, size_t *n, struct pair p) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!pair_before(&p, &h[parent])) break;
        h[i] = h[parent];
        i = parent;
    }
    h[i] = p;
}

static struct pair heap_pop(struct pair *h, size_t *n) {
    struct pair top = h[0];
    struct pair last = h[--*n];
    size_t i = 0, cnt = *n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= cnt) break;
        if (c + 1 < cnt && pair_before(&h[c + 1], &h[c])) c++;
        if (!pair_before(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    if (cnt > 0) h[i] = last;
    return top;
}

// Pushes the pair (left, right) if their joined text is a vocabulary entry.
static void try_pair(const struct hx_tok *t, const char *buf, const struct sym *syms, int32_t left,
                     int32_t right, struct pair *heap, size_t *n_heap) {
    if (left < 0 || right < 0) return;
    uint32_t size = syms[left].n + syms[right].n;
    int id = tok_lookup(t, buf + syms[left].start, size);
    if (id < 0) return;
    heap_push(heap, n_heap, (struct pair){t->scores[id], left, right, size});
}

// Runs the merges over one segment buf[0..len) (len > 0) and appends its tokens to out.
// syms has room for len symbols, heap for 3 * len pairs.
static void encode_segment(const struct hx_tok *t, const char *buf, size_t len, struct sym *syms,
                           struct pair *heap, int *out, size_t *n_out) {
    // Split into UTF-8 characters.
    int32_t n_sym = 0;
    for (size_t pos = 0; pos < len;) {
        size_t cl = QP_MIN(utf8_len((unsigned char)buf[pos]), len - pos);
        syms[n_sym] = (struct sym){(uint32_t)pos, (uint32_t)cl, n_sym - 1, -1};
        if (n_sym > 0) syms[n_sym - 1].next = n_sym;
        n_sym++;
        pos += cl;
    }

    size_t n_heap = 0;
    for (int32_t i = 1; i < n_sym; i++) try_pair(t, buf, syms, i - 1, i, heap, &n_heap);

    while (n_heap > 0) {
        struct pair p = heap_pop(heap, &n_heap);
        struct sym *l = &syms[p.left], *r = &syms[p.right];
        // Stale: one side was merged away, or grew (sizes only grow, so the sum tells).
        if (l->n == 0 || r->n == 0 || l->n + r->n != p.size) continue;
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) syms[r->next].prev = p.left;
        try_pair(t, buf, syms, l->prev, p.left, heap, &n_heap);
        try_pair(t, buf, syms, p.left, l->next, heap, &n_heap);
    }

    // Every merged symbol is an entry; a single character that is not falls back to bytes
    // (llama.cpp's resegment finds no merge to undo for it).
    for (int32_t i = 0; i >= 0; i = syms[i].next) {
        const struct sym *s = &syms[i];
        int id = tok_lookup(t, buf + s->start, s->n);
        if (id >= 0) {
            out[(*n_out)++] = id;
        } else {
            for (uint32_t k = 0; k < s->n; k++) out[(*n_out)++] = t->byte_id[(unsigned char)buf[s->start + k]];
        }
    }
}

static int joins(const struct hx_tok *t, unsigned char a, unsigned char b) {
    unsigned bit = (unsigned)a << 8 | b;
    return t->join[bit >> 3] >> (bit & 7) & 1;
}

// The end of the segment that starts at pos: the first boundary between two characters whose
// boundary bytes are adjacent in no vocabulary entry (for Llama vocabularies, around every
// '\n'), or len. No merge can ever reach across such a boundary, so segments tokenize
// independently and the result is exactly that of one pass over the text; the heap just stays
// small and in cache.
static size_t segment_end(const struct hx_tok *t, const char *buf, size_t len, size_t pos) {
    for (;;) {
        size_t next = pos + QP_MIN(utf8_len((unsigned char)buf[pos]), len - pos);
        if (next == len || !joins(t, (unsigned char)buf[next - 1], (unsigned char)buf[next])) return next;
        pos = next;
    }
}

int hx_tok_encode(const struct hx_tok *t, const char *text, size_t len, unsigned flags, int **ids,
                  size_t *n) {
    *ids = NULL;
    *n = 0;
    int prefix = (flags & HX_TOK_SPACE_PREFIX) && len > 0;
    // Symbol and heap indices are 32-bit: texts of 2 GiB or more are refused.
    if (len >= INT32_MAX / 2) return QP_ENOMEM;
    int *out = malloc((len + 2) * sizeof *out); // BOS + at most one token per byte
    char *buf = malloc(len + 2);
    if (!out || !buf) {
        free(out);
        free(buf);
        return QP_ENOMEM;
    }
    size_t n_out = 0;
    if (flags & HX_TOK_ADD_BOS) out[n_out++] = t->bos;
    // llama.cpp escapes spaces as "▁" before tokenizing, so a "▁" already in the text is a
    // space too; here the vocabulary holds spaces, so the text's "▁" become spaces.
    size_t blen = 0;
    if (prefix) buf[blen++] = ' ';
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)text[i] == 0xe2 && len - i >= 3 && (unsigned char)text[i + 1] == 0x96 &&
            (unsigned char)text[i + 2] == 0x81) {
            buf[blen++] = ' ';
            i += 2;
        } else {
            buf[blen++] = text[i];
        }
    }

    size_t max_seg = 0;
    for (size_t pos = 0; pos < blen;) {
        size_t end = segment_end(t, buf, blen, pos);
        max_seg = QP_MAX(max_seg, end - pos);
        pos = end;
    }
    // A segment of m bytes has at most m symbols, m - 1 initial pairs and two more per merge.
    struct sym *syms = malloc((max_seg + 1) * sizeof *syms);
    struct pair *heap = malloc((3 * max_seg + 1) * sizeof *heap);
    if (!syms || !heap) {
        free(out);
        free(buf);
        free(syms);
        free(heap);
        return QP_ENOMEM;
    }
    for (size_t pos = 0; pos < blen;) {
        size_t end = segment_end(t, buf, blen, pos);
        encode_segment(t, buf + pos, end - pos, syms, heap, out, &n_out);
        pos = end;
    }
    free(buf);
    free(syms);
    free(heap);
    *ids = out;
    *n = n_out;
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Decoding

size_t hx_tok_piece(const struct hx_tok *t, int prev, int id, char *out, size_t cap) {
    if (id < 0 || id >= t->n_vocab || cap == 0) return 0;
    // Control tokens (BOS, EOS) print nothing, as llama.cpp's token_to_piece without special.
    if (t->types[id] == HX_TOK_CONTROL) return 0;
    size_t len;
    const char *s = tok_text(t, id, &len);
    int byte = parse_byte_token(s, len);
    if (byte >= 0) {
        out[0] = (char)byte;
        return 1;
    }
    if (prev == t->bos && len > 0 && s[0] == ' ') {
        s++;
        len--;
    }
    len = QP_MIN(len, cap);
    memcpy(out, s, len);
    return len;
}
