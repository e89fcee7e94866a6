// hx_tokenizer.c — the common part of every tokenizer (see hx_tokenizer.h): the vocabulary
// (strings, types, an open-addressing hash of string -> id), special tokens matched before the
// algorithm, the encode/decode entry points that dispatch to SPM (hx_tok_spm.c) or BPE
// (hx_tok_bpe.c), the llama2.c tokenizer.bin and GGUF "llama" loaders, opening a tokenizer
// file of any kind, and writing a vocabulary back as GGUF keys.
//
// Must not depend on anything but libc, kernels/qp*.h, the GGUF reader API (hx_gguf.h) and the
// tokenizer's own files: no model, engine or database code.
#include "hx_tokenizer.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hx_gguf.h"
#include "hx_tok_impl.h"
#include "qp.h"

// ---------------------------------------------------------------------------------------------
// The vocabulary: storage and lookup

static const char *tok_text(const struct hx_tok *t, int id, size_t *len) {
    *len = t->off[id + 1] - t->off[id] - 1;
    return t->strs + t->off[id];
}

int hx_tok__lookup(const struct hx_tok *t, const char *s, size_t len) {
    if (len > t->max_len || len == 0) return -1;
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

struct hx_tok *hx_tok__alloc(int n, size_t str_bytes) {
    struct hx_tok *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->n_vocab = n;
    t->bos = t->eos = t->unk = -1;
    t->source = "";
    t->strs = malloc(str_bytes + (size_t)n + 1);
    t->off = malloc(((size_t)n + 1) * sizeof *t->off);
    t->scores = calloc((size_t)n, sizeof *t->scores);
    t->types = malloc((size_t)n * sizeof *t->types);
    t->attrs = calloc((size_t)n, 1);
    if (!t->strs || !t->off || !t->scores || !t->types || !t->attrs) {
        hx_tok_destroy(t);
        return NULL;
    }
    for (int i = 0; i < n; i++) t->types[i] = HX_TOK_NORMAL;
    t->off[0] = 0;
    return t;
}

void hx_tok__push(struct hx_tok *t, int id, const char *s, size_t len) {
    char *dst = t->strs + t->off[id];
    if (len) memcpy(dst, s, len);
    dst[len] = '\0';
    t->off[id + 1] = t->off[id] + len + 1;
}

// Fills the hash table. Two ids for one string: the last wins when dup_ok (llama.cpp's
// token_to_id map for tokenizer.bin), else QP_EFORMAT naming both. Empty strings stay out.
static int tok_build_table(struct hx_tok *t, const char *path, int dup_ok, char *err) {
    size_t cap = 16;
    while (cap < 2 * (size_t)t->n_vocab) cap *= 2;
    t->table = malloc(cap * sizeof *t->table);
    if (!t->table) return qp_fail(err, QP_ENOMEM, "cannot read '%s': out of memory", path);
    memset(t->table, 0xff, cap * sizeof *t->table);
    t->table_cap = cap;
    t->max_len = 0;
    t->seed = qp_hash_seed(t);
    for (int id = 0; id < t->n_vocab; id++) {
        size_t len;
        const char *s = tok_text(t, id, &len);
        if (len == 0) continue;
        if (len > t->max_len) t->max_len = len;
        uint64_t h = qp_hash_bytes(s, len, t->seed);
        size_t i = h & (cap - 1);
        for (;; i = (i + 1) & (cap - 1)) {
            int32_t other = t->table[i].id;
            if (other < 0) break;
            size_t l;
            const char *p = tok_text(t, other, &l);
            if (l == len && memcmp(p, s, len) == 0) {
                if (!dup_ok)
                    return qp_fail(err, QP_EFORMAT, "cannot read '%s': tokens %d and %d are the same string '%.60s'",
                                   path, (int)other, id, s);
                break;
            }
        }
        t->table[i] = (struct hx_tok_slot){(uint32_t)(h >> 32), id};
    }
    return 0;
}

static int is_special_type(int type) {
    return type == HX_TOK_CONTROL || type == HX_TOK_USER_DEFINED || type == HX_TOK_UNKNOWN;
}

// A special token and its string length, for sorting.
struct spec_key {
    size_t len;
    int id;
};

// llama.cpp's cache_special_tokens order: longer strings first (ties by id here; llama.cpp's
// std::sort leaves them unspecified).
static int special_cmp(const void *a, const void *b) {
    const struct spec_key *x = a, *y = b;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

// The special tokens, in matching order, and their index by first byte.
static int tok_build_special(struct hx_tok *t) {
    int n = 0;
    for (int id = 0; id < t->n_vocab; id++) {
        size_t len;
        tok_text(t, id, &len);
        n += is_special_type(t->types[id]) && len > 0;
    }
    free(t->special);
    free(t->by_byte);
    t->special = malloc(((size_t)n + 1) * sizeof *t->special);
    t->by_byte = malloc(((size_t)n + 1) * sizeof *t->by_byte);
    if (!t->special || !t->by_byte) return QP_ENOMEM;
    struct spec_key *keys = malloc(((size_t)n + 1) * sizeof *keys);
    if (!keys) return QP_ENOMEM;
    n = 0;
    for (int id = 0; id < t->n_vocab; id++) {
        size_t len;
        tok_text(t, id, &len);
        if (is_special_type(t->types[id]) && len > 0) keys[n++] = (struct spec_key){len, id};
    }
    qsort(keys, (size_t)n, sizeof *keys, special_cmp);
    for (int k = 0; k < n; k++) t->special[k] = keys[k].id;
    free(keys);
    t->n_special = n;
    memset(t->byte_off, 0, sizeof t->byte_off);
    for (int k = 0; k < n; k++) t->byte_off[(unsigned char)t->strs[t->off[t->special[k]]] + 1]++;
    for (int b = 0; b < 256; b++) t->byte_off[b + 1] += t->byte_off[b];
    int fill[256];
    memcpy(fill, t->byte_off, sizeof fill);
    for (int k = 0; k < n; k++) t->by_byte[fill[(unsigned char)t->strs[t->off[t->special[k]]]]++] = k;
    return 0;
}

int hx_tok__finish(struct hx_tok *t, const char *path, int dup_ok, char *err) {
    int rc = tok_build_table(t, path, dup_ok, err);
    if (rc) return rc;
    const struct {
        const char *what;
        int id;
    } ids[] = {{"bos", t->bos}, {"eos", t->eos}, {"unknown", t->unk}};
    for (size_t i = 0; i < QP_ARRAY_LEN(ids); i++)
        if (ids[i].id < -1 || ids[i].id >= t->n_vocab)
            return qp_fail(err, QP_ERANGE, "cannot read '%s': %s token id %d is outside the vocabulary of %d",
                           path, ids[i].what, ids[i].id, t->n_vocab);
    if (t->add_bos && t->bos < 0)
        return qp_fail(err, QP_EFORMAT, "cannot read '%s': the vocabulary adds a BOS token but names none", path);
    if (tok_build_special(t)) return qp_fail(err, QP_ENOMEM, "cannot read '%s': out of memory", path);
    return 0;
}

int hx_tok__byte_token(const char *s, size_t len) {
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

// SPM byte fallback as llama.cpp's byte_to_token: "<0xNN>" (upper-case hex), else the one-byte
// string, else (where llama.cpp would throw) the unknown token.
static void spm_build_bytes(struct hx_tok *t) {
    for (int b = 0; b < 256; b++) {
        char buf[8];
        snprintf(buf, sizeof buf, "<0x%02X>", b);
        int id = hx_tok__lookup(t, buf, 6);
        if (id < 0) {
            char c = (char)b;
            id = hx_tok__lookup(t, &c, 1);
        }
        t->byte_id[b] = id >= 0 ? id : t->unk;
    }
}

// The SPM parts once every string, score and type is in place.
static int spm_finish(struct hx_tok *t, const char *path, int dup_ok, const char *source, char *err) {
    t->kind = HX_TOK_SPM;
    int rc = hx_tok__finish(t, path, dup_ok, err);
    if (rc) return rc;
    spm_build_bytes(t);
    hx_spm_build_join(t);
    snprintf(t->describe, sizeof t->describe, "spm (%s, %d tokens)", source, t->n_vocab);
    return 0;
}

void hx_tok_destroy(struct hx_tok *t) {
    if (!t) return;
    hx_bpe_free(t);
    free(t->strs);
    free(t->off);
    free(t->scores);
    free(t->types);
    free(t->attrs);
    free(t->table);
    free(t->special);
    free(t->by_byte);
    free(t);
}

// ---------------------------------------------------------------------------------------------
// Loading: llama2.c tokenizer.bin

int hx_tok__read_file(const char *path, size_t limit, char **data, size_t *size, char *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return qp_fail(err, QP_EIO, "cannot read '%s': %s", path, strerror(errno));
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 1 >= cap) {
            size_t ncap = cap ? cap * 2 : 65536;
            char *nb = ncap > limit + 2 ? NULL : realloc(buf, ncap);
            if (!nb) {
                free(buf);
                fclose(f);
                return ncap > limit + 2 ? qp_fail(err, QP_ERANGE, "cannot read '%s': larger than %zu bytes", path, limit)
                                        : qp_fail(err, QP_ENOMEM, "cannot read '%s': out of memory", path);
            }
            buf = nb;
            cap = ncap;
        }
        size_t got = fread(buf + len, 1, cap - 1 - len, f);
        len += got;
        if (got == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return qp_fail(err, QP_EIO, "cannot read '%s': read error", path);
    }
    buf[len] = '\0';
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

// Validates every record of a tokenizer.bin and totals the string bytes.
static int llama2c_check(const char *path, const unsigned char *d, size_t size, int vocab_size,
                         size_t *str_bytes, char *err) {
    if (size < 4)
        return qp_fail(err, QP_EFORMAT, "cannot read '%s': file too short for a tokenizer header (%zu bytes)", path,
                       size);
    int32_t max_token_length = rd_i32(d);
    if (max_token_length < 0)
        return qp_fail(err, QP_EFORMAT, "cannot read '%s': negative max_token_length %d", path, (int)max_token_length);
    // Only a hint (the longest token is measured below), but one longer than the whole file
    // means a corrupt header; llama2.c's run.c would size a buffer from it.
    if ((size_t)max_token_length > size - 4)
        return qp_fail(err, QP_EFORMAT, "cannot read '%s': max_token_length %d is longer than the file (%zu bytes)",
                       path, (int)max_token_length, size);
    // Each record takes at least 8 bytes: reject an impossible count before allocating.
    if ((size_t)vocab_size > (size - 4) / 8)
        return qp_fail(err, QP_EFORMAT, "cannot read '%s': file too short for %d tokens (%zu bytes)", path, vocab_size,
                       size);
    size_t pos = 4;
    *str_bytes = 0;
    for (int i = 0; i < vocab_size; i++) {
        if (size - pos < 8)
            return qp_fail(err, QP_EFORMAT, "cannot read '%s': token %d of %d extends past end of file", path, i,
                           vocab_size);
        int32_t len = rd_i32(d + pos + 4);
        pos += 8;
        if (len < 0)
            return qp_fail(err, QP_EFORMAT, "cannot read '%s': token %d has negative length %d", path, i, (int)len);
        if ((size_t)len > size - pos)
            return qp_fail(err, QP_EFORMAT, "cannot read '%s': token %d (length %d) extends past end of file", path,
                           i, (int)len);
        pos += (size_t)len;
        *str_bytes += (size_t)len + 8; // room for renaming ids 0..2 below
    }
    return 0;
}

int hx_tok_load_llama2c(const char *path, int vocab_size, struct hx_tok **out, char *err) {
    *out = NULL;
    if (vocab_size <= 0)
        return qp_fail(err, QP_ERANGE, "cannot read '%s': vocabulary size %d is not positive", path, vocab_size);
    char *raw = NULL;
    size_t size = 0, str_bytes = 0;
    int rc = hx_tok__read_file(path, SIZE_MAX / 4, &raw, &size, err);
    if (rc) return rc;
    const unsigned char *d = (const unsigned char *)raw;
    if ((rc = llama2c_check(path, d, size, vocab_size, &str_bytes, err))) {
        free(raw);
        return rc;
    }
    if (vocab_size < 3) {
        free(raw);
        return qp_fail(err, QP_ERANGE, "cannot read '%s': vocabulary of %d tokens has no room for unk, bos and eos",
                       path, vocab_size);
    }
    struct hx_tok *t = hx_tok__alloc(vocab_size, str_bytes);
    if (!t) {
        free(raw);
        return qp_fail(err, QP_ENOMEM, "cannot read '%s': out of memory", path);
    }
    size_t pos = 4;
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
            type = hx_tok__byte_token(s, (size_t)len) >= 0 ? HX_TOK_BYTE : HX_TOK_NORMAL;
        }
        hx_tok__push(t, i, s, (size_t)len);
        t->scores[i] = score;
        t->types[i] = type;
    }
    free(raw);
    t->unk = 0;
    t->bos = 1;
    t->eos = 2;
    t->add_bos = 1;
    t->add_space_prefix = 1;
    t->source = "tokenizer.bin";
    if ((rc = spm_finish(t, path, 1, "llama2.c tokenizer.bin", err))) {
        hx_tok_destroy(t);
        return rc;
    }
    *out = t;
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Loading: GGUF tokenizer.ggml.* of model "llama"

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


int hx_tok__gguf_id(const struct hx_gguf *g, const char *key, int def, int *out, char *err) {
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


int hx_tok__gguf_bool(const struct hx_gguf *g, const char *key, int *out, char *err) {
    bool b;
    int rc = hx_gguf_get_bool(g, key, &b);
    if (rc == QP_ENOENT) return 0;
    if (rc) return qp_fail(err, QP_EFORMAT, "cannot read '%s': key '%s' is not a bool", hx_gguf_path(g), key);
    *out = b;
    return 0;
}

// tokenizer.ggml.tokens (+ scores, token_type) into a new tokenizer; "▁" becomes ' ' when
// unescape (SPM). Shared with the gpt2 loader.

int hx_tok__gguf_tokens(const struct hx_gguf *g, int unescape, struct hx_tok **out, char *err) {
    const char *path = hx_gguf_path(g);
    const struct hx_gguf_value *tokens = NULL, *scores = NULL, *types = NULL;
    int rc = gguf_array(g, "tokenizer.ggml.tokens", HX_GGUF_STRING, &tokens, err);
    if (rc == QP_ENOENT) return qp_fail(err, QP_ENOENT, "cannot read '%s': no key 'tokenizer.ggml.tokens'", path);
    if (rc) return rc;
    rc = gguf_array(g, "tokenizer.ggml.scores", HX_GGUF_FLOAT32, &scores, err);
    if (rc && rc != QP_ENOENT) return rc;
    rc = gguf_array(g, "tokenizer.ggml.token_type", HX_GGUF_INT32, &types, err);
    if (rc && rc != QP_ENOENT) return rc;

    uint64_t n = tokens->v.arr.n;
    if (n < 1 || n > INT32_MAX / 2)
        return qp_fail(err, QP_ERANGE, "cannot read '%s': vocabulary size %llu out of range", path, (unsigned long long)n);
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
            return qp_fail(err, QP_EFORMAT, "cannot read '%s': token %llu is not a string", path, (unsigned long long)i);
        if (s->v.str.len > SIZE_MAX / 4 - str_bytes)
            return qp_fail(err, QP_ERANGE, "cannot read '%s': token strings too large", path);
        str_bytes += s->v.str.len;
    }
    struct hx_tok *t = hx_tok__alloc((int)n, str_bytes);
    if (!t) return qp_fail(err, QP_ENOMEM, "cannot read '%s': out of memory", path);
    t->source = "gguf";
    for (int i = 0; i < (int)n; i++) {
        const struct hx_gguf_value *s = &tokens->v.arr.items[i];
        const char *p = s->v.str.ptr;
        size_t len = (size_t)s->v.str.len, w = 0;
        char *dst = t->strs + t->off[i];
        for (size_t k = 0; k < len; k++) {
            if (unescape && k + 2 < len && (unsigned char)p[k] == 0xe2 && (unsigned char)p[k + 1] == 0x96 &&
                (unsigned char)p[k + 2] == 0x81) {
                dst[w++] = ' ';
                k += 2;
            } else {
                dst[w++] = p[k];
            }
        }
        dst[w] = '\0';
        t->off[i + 1] = t->off[i] + w + 1;
        t->scores[i] = scores ? rd_f32(scores->v.arr.data + 4 * (size_t)i) : 0.0f;
        t->types[i] = types ? (int)rd_i32(types->v.arr.data + 4 * (size_t)i) : HX_TOK_NORMAL;
    }
    *out = t;
    return 0;
}

// llama.cpp sets RSTRIP on Phi-3's special tokens by general.name (its per-model attributes).
static void gguf_phi3_attrs(const struct hx_gguf *g, struct hx_tok *t) {
    const char *name;
    size_t len;
    if (hx_gguf_get_str(g, "general.name", &name, &len)) return;
    char low[128];
    size_t n = QP_MIN(len, sizeof low - 1);
    for (size_t i = 0; i < n; i++) low[i] = (char)(name[i] >= 'A' && name[i] <= 'Z' ? name[i] + 32 : name[i]);
    low[n] = '\0';
    if (!strstr(low, "phi-3") && !strstr(low, "phi3")) return;
    for (int k = 0; k < t->n_special; k++) t->attrs[t->special[k]] |= HX_ATTR_RSTRIP;
    static const char *const keep[] = {"<unk>", "<s>", "<|endoftext|>"};
    int id = hx_tok__lookup(t, "</s>", 4);
    if (id >= 0) t->attrs[id] |= HX_ATTR_RSTRIP;
    for (size_t i = 0; i < QP_ARRAY_LEN(keep); i++) {
        // SPM strings hold ' ' for "▁": none of these has one, so the lookup is direct.
        id = hx_tok__lookup(t, keep[i], strlen(keep[i]));
        if (id >= 0) t->attrs[id] &= (uint8_t)~HX_ATTR_RSTRIP;
    }
}

static int spm_from_gguf(const struct hx_gguf *g, struct hx_tok **out, char *err) {
    struct hx_tok *t = NULL;
    int rc = hx_tok__gguf_tokens(g, 1, &t, err);
    if (rc) return rc;
    t->add_bos = 1;
    t->add_space_prefix = 1;
    if ((rc = hx_tok__gguf_id(g, "tokenizer.ggml.bos_token_id", 1, &t->bos, err)) ||
        (rc = hx_tok__gguf_id(g, "tokenizer.ggml.eos_token_id", 2, &t->eos, err)) ||
        (rc = hx_tok__gguf_id(g, "tokenizer.ggml.unknown_token_id", 0, &t->unk, err)) ||
        (rc = hx_tok__gguf_bool(g, "tokenizer.ggml.add_bos_token", &t->add_bos, err)) ||
        (rc = hx_tok__gguf_bool(g, "tokenizer.ggml.add_space_prefix", &t->add_space_prefix, err)) ||
        (rc = spm_finish(t, hx_gguf_path(g), 0, "gguf llama", err))) {
        hx_tok_destroy(t);
        return rc;
    }
    gguf_phi3_attrs(g, t);
    *out = t;
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
    if (model_len == 5 && memcmp(model, "llama", 5) == 0) return spm_from_gguf(g, out, err);
    if (model_len == 4 && memcmp(model, "gpt2", 4) == 0) return hx_bpe_from_gguf(g, out, err);
    return qp_fail(err, QP_ENOTSUP, "cannot read '%s': tokenizer model '%.*s' is not supported (only 'llama' and 'gpt2')",
                   path, (int)QP_MIN(model_len, (size_t)100), model);
}

// ---------------------------------------------------------------------------------------------
// Opening any tokenizer file; fitting a model

// The record count of a tokenizer.bin read to its end: the file does not store it, but its
// records are self-delimiting, so a file that ends exactly after a record has that many.
static int llama2c_count(const char *path, int *n, char *err) {
    char *raw;
    size_t size, pos = 4;
    int rc = hx_tok__read_file(path, SIZE_MAX / 4, &raw, &size, err);
    if (rc) return rc;
    const unsigned char *d = (const unsigned char *)raw;
    int count = 0;
    while (size >= 4 && size - pos >= 8 && count < INT32_MAX / 2) {
        int32_t len = rd_i32(d + pos + 4);
        if (len < 0 || (size_t)len > size - pos - 8) break;
        pos += 8 + (size_t)len;
        count++;
    }
    free(raw);
    if (size < 4 || pos != size || count == 0)
        return qp_fail(err, QP_EFORMAT,
                       "cannot read '%s': not a GGUF, tokenizer.json or llama2.c tokenizer.bin (its records do not "
                       "end at the end of the file)",
                       path);
    *n = count;
    return 0;
}

int hx_tok_open(const char *path, int n_vocab, struct hx_tok **out, char *err) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return qp_fail(err, QP_EIO, "cannot read '%s': %s", path, strerror(errno));
    unsigned char head[64];
    size_t got = fread(head, 1, sizeof head, f);
    fclose(f);
    if (got >= 4 && memcmp(head, "GGUF", 4) == 0) {
        struct hx_gguf *g;
        int rc = hx_gguf_open(path, &g, err);
        if (rc) return rc;
        rc = hx_tok_from_gguf(g, out, err);
        hx_gguf_close(g);
        return rc;
    }
    size_t i = 0;
    while (i < got && (head[i] == ' ' || head[i] == '\t' || head[i] == '\n' || head[i] == '\r')) i++;
    if (i < got && head[i] == '{') return hx_tok_load_json(path, out, err);
    if (n_vocab <= 0) {
        int rc = llama2c_count(path, &n_vocab, err);
        if (rc) return rc;
    }
    return hx_tok_load_llama2c(path, n_vocab, out, err);
}

// Pads the vocabulary with unused "[PAD<id>]" tokens up to rows (tokenizer.json only).
static int tok_pad(struct hx_tok *t, int rows, const char *path, char *err) {
    size_t old_bytes = t->off[t->n_vocab], extra = 0;
    for (int id = t->n_vocab; id < rows; id++) extra += (size_t)snprintf(NULL, 0, "[PAD%d]", id) + 1;
    char *strs = realloc(t->strs, old_bytes + extra + 1);
    if (strs) t->strs = strs;
    size_t *off = strs ? realloc(t->off, ((size_t)rows + 1) * sizeof *off) : NULL;
    if (off) t->off = off;
    float *scores = off ? realloc(t->scores, (size_t)rows * sizeof *scores) : NULL;
    if (scores) t->scores = scores;
    int *types = scores ? realloc(t->types, (size_t)rows * sizeof *types) : NULL;
    if (types) t->types = types;
    uint8_t *attrs = types ? realloc(t->attrs, (size_t)rows) : NULL;
    if (attrs) t->attrs = attrs;
    if (!attrs) return qp_fail(err, QP_ENOMEM, "cannot read '%s': out of memory", path);
    for (int id = t->n_vocab; id < rows; id++) {
        char name[32];
        int len = snprintf(name, sizeof name, "[PAD%d]", id);
        hx_tok__push(t, id, name, (size_t)len);
        t->scores[id] = 0.0f;
        t->types[id] = HX_TOK_UNUSED;
        t->attrs[id] = 0;
    }
    t->n_vocab = rows;
    free(t->table);
    t->table = NULL;
    return tok_build_table(t, path, 1, err);
}

int hx_tok_fit_rows(struct hx_tok *t, int rows, const char *path, char *err) {
    if (t->n_vocab == rows) return 0;
    if (t->n_vocab < rows && strcmp(t->source, "tokenizer.json") == 0)
        return tok_pad(t, rows, path, err);
    return qp_fail(err, QP_EFORMAT, "cannot read '%s': the tokenizer has %d tokens, the model %d", path, t->n_vocab,
                   rows);
}

// ---------------------------------------------------------------------------------------------
// Accessors

enum hx_tok_kind hx_tok_kind(const struct hx_tok *t) { return t->kind; }
int hx_tok_n_vocab(const struct hx_tok *t) { return t->n_vocab; }
int hx_tok_bos(const struct hx_tok *t) { return t->bos; }
int hx_tok_eos(const struct hx_tok *t) { return t->eos; }
int hx_tok_unk(const struct hx_tok *t) { return t->unk; }
int hx_tok_adds_bos(const struct hx_tok *t) { return t->add_bos && t->bos >= 0; }
int hx_tok_bos_added(const struct hx_tok *t) { return hx_tok_adds_bos(t) ? t->bos : -1; }
const char *hx_tok_describe(const struct hx_tok *t) { return t->describe; }
const char *hx_tok_pre_name(const struct hx_tok *t) { return t->pre_name; }
const char *hx_tok_source(const struct hx_tok *t) { return t->source; }

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
// Special tokens: partitioning the text

// A piece of the partitioned text: a special token (id >= 0) or raw text (id == -1) at bytes
// [start, start + len), or dropped whitespace (id == -2, lstrip/rstrip).
struct frag {
    size_t start, len;
    int id;
};

// An occurrence of special token special[k] at byte pos.
struct occ {
    size_t pos;
    int k;
};

static int occ_cmp(const void *a, const void *b) {
    const struct occ *x = a, *y = b;
    if (x->k != y->k) return x->k < y->k ? -1 : 1;
    return (x->pos > y->pos) - (x->pos < y->pos);
}

static int frag_cmp(const void *a, const void *b) {
    const struct frag *x = a, *y = b;
    return (x->start > y->start) - (x->start < y->start);
}

static int special_active(const struct hx_tok *t, int id, unsigned flags) {
    return t->types[id] == HX_TOK_USER_DEFINED || (flags & HX_TOK_PARSE_SPECIAL);
}

static int is_space(unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

// Every occurrence of an active special token, in matching order (token priority, then
// position). *occ malloc'd.
static int find_occurrences(const struct hx_tok *t, const char *text, size_t len, unsigned flags,
                            struct occ **occ, size_t *n_occ) {
    size_t n = 0, cap = 0;
    struct occ *o = NULL;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        for (int j = t->byte_off[c]; j < t->byte_off[c + 1]; j++) {
            int k = t->by_byte[j], id = t->special[k];
            size_t l = t->off[id + 1] - t->off[id] - 1;
            if (l > len - i || !special_active(t, id, flags) || memcmp(text + i, t->strs + t->off[id], l) != 0)
                continue;
            if (n == cap) {
                cap = cap ? 2 * cap : 64;
                struct occ *no = realloc(o, cap * sizeof *no);
                if (!no) {
                    free(o);
                    return QP_ENOMEM;
                }
                o = no;
            }
            o[n++] = (struct occ){i, k};
        }
    }
    if (n > 1) qsort(o, n, sizeof *o, occ_cmp);
    *occ = o;
    *n_occ = n;
    return 0;
}

// Marks the whitespace that an lstrip/rstrip token swallows, up to the nearest taken byte (the
// edge of llama.cpp's fragment), as a dropped fragment.
static void strip_around(const char *text, size_t len, uint8_t *taken, size_t pos, size_t l, uint8_t attrs,
                         struct frag *out, size_t *n_out) {
    if (attrs & HX_ATTR_LSTRIP) {
        size_t a = pos;
        while (a > 0 && !taken[a - 1] && is_space((unsigned char)text[a - 1])) taken[--a] = 1;
        if (a < pos) out[(*n_out)++] = (struct frag){a, pos - a, -2};
    }
    if (attrs & HX_ATTR_RSTRIP) {
        size_t b = pos + l;
        while (b < len && !taken[b] && is_space((unsigned char)text[b])) taken[b++] = 1;
        if (b > pos + l) out[(*n_out)++] = (struct frag){pos + l, b - (pos + l), -2};
    }
}

// Splits text into special tokens and raw fragments as llama.cpp's tokenizer_st_partition:
// token by token in priority order, each taking its leftmost occurrences that do not overlap
// what is already taken. *frags malloc'd (in text order).
static int partition(const struct hx_tok *t, const char *text, size_t len, unsigned flags,
                     struct frag **frags, size_t *n_frags) {
    struct occ *occ = NULL;
    size_t n_occ = 0;
    int rc = t->n_special ? find_occurrences(t, text, len, flags, &occ, &n_occ) : 0;
    if (rc) return rc;
    // Taken occurrences and their strips (3 fragments each at most), then the raw gaps.
    struct frag *f = malloc((4 * n_occ + 2) * sizeof *f);
    uint8_t *taken = n_occ ? calloc(len, 1) : NULL;
    if (!f || (n_occ && !taken)) {
        free(occ);
        free(f);
        free(taken);
        return QP_ENOMEM;
    }
    size_t n = 0;
    for (size_t i = 0; i < n_occ; i++) {
        int id = t->special[occ[i].k];
        size_t pos = occ[i].pos, l = t->off[id + 1] - t->off[id] - 1;
        if (memchr(taken + pos, 1, l)) continue;
        memset(taken + pos, 1, l);
        f[n++] = (struct frag){pos, l, id};
        strip_around(text, len, taken, pos, l, t->attrs[id], f, &n);
    }
    free(occ);
    free(taken);
    if (n > 1) qsort(f, n, sizeof *f, frag_cmp);
    size_t n_taken = n, at = 0, m = n;
    for (size_t i = 0; i < n_taken; i++) { // gaps go after the taken ones, then one sort
        if (f[i].start > at) f[m++] = (struct frag){at, f[i].start - at, -1};
        at = f[i].start + f[i].len;
    }
    if (at < len || len == 0) f[m++] = (struct frag){at, len - at, -1};
    if (m > 1) qsort(f, m, sizeof *f, frag_cmp);
    *frags = f;
    *n_frags = m;
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Encoding

int hx_tok_encode(const struct hx_tok *t, const char *text, size_t len, unsigned flags, int **ids,
                  size_t *n) {
    *ids = NULL;
    *n = 0;
    // Indices inside the algorithms are 32-bit: texts of 1 GiB or more are refused.
    if (len >= INT32_MAX / 2) return QP_ENOMEM;
    struct frag *frags = NULL;
    size_t n_frags = 0;
    int rc = partition(t, text, len, flags, &frags, &n_frags);
    if (rc) return rc;
    int *out = malloc((2 * len + 3) * sizeof *out); // see hx_tokenizer.h for the bound
    struct hx_bpe_cache *cache = t->kind == HX_TOK_BPE ? hx_bpe_cache_create() : NULL;
    if (!out || (t->kind == HX_TOK_BPE && !cache)) {
        free(frags);
        free(out);
        hx_bpe_cache_destroy(cache);
        return QP_ENOMEM;
    }
    size_t n_out = 0;
    if ((flags & HX_TOK_ADD_BOS) && hx_tok_adds_bos(t)) out[n_out++] = t->bos;
    int prev_special = 1; // llama.cpp's is_prev_special: the text start counts as one
    int prefix = (flags & HX_TOK_SPACE_PREFIX) && t->add_space_prefix;
    for (size_t i = 0; i < n_frags && !rc; i++) {
        const struct frag *f = &frags[i];
        if (f->id >= 0) {
            out[n_out++] = f->id;
            prev_special = 1;
        } else if (f->id == -1) {
            // Raw fragments are never empty, except the one of an empty text, which gives
            // nothing (llama.cpp: no fragment at all, so no space prefix either).
            if (f->len > 0 && t->kind == HX_TOK_SPM) {
                rc = hx_spm_encode_fragment(t, text + f->start, f->len, prefix && prev_special, out, &n_out);
            } else if (f->len > 0) {
                rc = hx_bpe_encode_fragment(t, cache, text + f->start, f->len, f->start == 0, out, &n_out);
            }
            prev_special = 0;
        }
    }
    free(frags);
    hx_bpe_cache_destroy(cache);
    if (rc) {
        free(out);
        return rc;
    }
    *ids = out;
    *n = n_out;
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Decoding

// The bytes of one token, whatever came before: control and unknown tokens only with special
// (their text), user-defined tokens their text; "<0xNN>" tokens their byte (SPM: any token so
// spelled, as llama.cpp's token_to_piece; BPE: those typed BYTE); BPE normal tokens their
// code points mapped back to bytes. Returns the full length; writes at most cap bytes.
static size_t token_bytes(const struct hx_tok *t, int id, int special, char *out, size_t cap) {
    int type = t->types[id];
    if ((type == HX_TOK_CONTROL || type == HX_TOK_UNKNOWN) && !special) return 0;
    size_t len;
    const char *s = tok_text(t, id, &len);
    int byte = type == HX_TOK_BYTE || (t->kind == HX_TOK_SPM && type != HX_TOK_USER_DEFINED)
                   ? hx_tok__byte_token(s, len)
                   : -1;
    if (byte >= 0) {
        if (cap) out[0] = (char)byte;
        return 1;
    }
    if (t->kind == HX_TOK_BPE && !is_special_type(type)) return hx_bpe_token_bytes(t, id, out, cap);
    if (cap) memcpy(out, s, QP_MIN(len, cap));
    return len;
}

size_t hx_tok_piece(const struct hx_tok *t, int prev, int id, char *out, size_t cap) {
    if (id < 0 || id >= t->n_vocab || cap == 0) return 0;
    char small[64]; // almost every token: one pass, no allocation per generated token
    char *buf = small;
    size_t len = token_bytes(t, id, 0, small, sizeof small);
    if (len > sizeof small) {
        if (!(buf = malloc(len))) return 0;
        token_bytes(t, id, 0, buf, len);
    }
    const char *s = buf;
    // llama2.c's decode drops the space SPM put before the first word after BOS.
    if (t->kind == HX_TOK_SPM && prev == t->bos && t->types[id] != HX_TOK_BYTE && len > 0 && s[0] == ' ') {
        s++;
        len--;
    }
    len = QP_MIN(len, cap);
    memcpy(out, s, len);
    if (buf != small) free(buf);
    return len;
}

// 1 when the encoder prefixed a space (or "▁") to the raw text that starts after a token of
// this position: at the start, and after each special token.
static int decode_prefix_rule(const struct hx_tok *t, unsigned flags) {
    if (t->kind == HX_TOK_SPM) return (flags & HX_TOK_SPACE_PREFIX) && t->add_space_prefix;
    return t->meta != HX_META_NONE || t->prefix_space;
}

int hx_tok_decode(const struct hx_tok *t, const int *ids, size_t n, unsigned flags, char **text,
                  size_t *len) {
    *text = NULL;
    *len = 0;
    size_t cap = 64, w = 0;
    char *buf = malloc(cap);
    if (!buf) return QP_ENOMEM;
    int special = (flags & HX_TOK_PARSE_SPECIAL) != 0, rule = decode_prefix_rule(t, flags);
    int strip = rule; // strip one leading space of the next text piece
    size_t i = 0;
    if (n > 0 && (flags & HX_TOK_ADD_BOS) && hx_tok_adds_bos(t) && ids[0] == t->bos) i = 1; // the added BOS
    for (; i < n; i++) {
        int id = ids[i];
        if (id < 0 || id >= t->n_vocab) continue;
        // Written straight into the room left (cap > w always); a token that did not fit is
        // written again once the buffer has grown.
        size_t got = token_bytes(t, id, special, buf + w, cap - w - 1);
        if (w + got + 1 > cap) {
            while (w + got + 1 > cap) cap *= 2;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                return QP_ENOMEM;
            }
            buf = nb;
            token_bytes(t, id, special, buf + w, got);
        }
        if (is_special_type(t->types[id])) { // the encoder's fragment boundary
            w += got;
            strip = rule && t->meta != HX_META_FIRST;
            continue;
        }
        if (strip && got > 0) {
            if (buf[w] == ' ') memmove(buf + w, buf + w + 1, --got);
            strip = 0;
        }
        w += got;
    }
    buf[w] = '\0';
    *text = buf;
    *len = w;
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Writing as GGUF keys

// tokenizer.ggml.tokens: SPM's spaces back to "▁" (U+2581).
static int write_tokens(struct hx_gguf_writer *wr, const struct hx_tok *t) {
    int n = t->n_vocab;
    size_t total = 0;
    for (int i = 0; i < n; i++) total += 3 * (t->off[i + 1] - t->off[i]);
    char **strs = calloc((size_t)n, sizeof *strs);
    size_t *lens = calloc((size_t)n, sizeof *lens);
    char *arena = malloc(total ? total : 1);
    int rc = QP_ENOMEM;
    if (strs && lens && arena) {
        char *p = arena;
        for (int i = 0; i < n; i++) {
            size_t len;
            const char *s = tok_text(t, i, &len);
            strs[i] = p;
            for (size_t k = 0; k < len; k++) {
                if (s[k] == ' ' && t->kind == HX_TOK_SPM) {
                    memcpy(p, "\xe2\x96\x81", 3);
                    p += 3;
                } else {
                    *p++ = s[k];
                }
            }
            lens[i] = (size_t)(p - strs[i]);
        }
        rc = hx_gguf_writer_set_arr_str(wr, "tokenizer.ggml.tokens", (const char *const *)strs, lens, (uint64_t)n);
    }
    free(strs);
    free(lens);
    free(arena);
    return rc;
}

static int merge_rank_cmp(const void *a, const void *b) {
    const struct hx_merge_slot *x = a, *y = b;
    return (x->rank > y->rank) - (x->rank < y->rank);
}

// tokenizer.ggml.merges in rank order, "left right".
static int write_merges(struct hx_gguf_writer *wr, const struct hx_tok *t) {
    size_t n = 0, total = 0;
    struct hx_merge_slot *m = malloc((t->n_merges + 1) * sizeof *m);
    if (!m) return QP_ENOMEM;
    for (size_t i = 0; i < t->merge_cap; i++)
        if (t->merges[i].key != UINT64_MAX) m[n++] = t->merges[i];
    qsort(m, n, sizeof *m, merge_rank_cmp);
    for (size_t i = 0; i < n; i++) {
        int l = (int)(m[i].key >> 32), r = (int)(uint32_t)m[i].key;
        total += t->off[l + 1] - t->off[l] + t->off[r + 1] - t->off[r];
    }
    char **strs = calloc(n + 1, sizeof *strs);
    size_t *lens = calloc(n + 1, sizeof *lens);
    char *arena = malloc(total + 1);
    int rc = QP_ENOMEM;
    if (strs && lens && arena) {
        char *p = arena;
        for (size_t i = 0; i < n; i++) {
            size_t ll, lr;
            const char *l = tok_text(t, (int)(m[i].key >> 32), &ll);
            const char *r = tok_text(t, (int)(uint32_t)m[i].key, &lr);
            strs[i] = p;
            memcpy(p, l, ll);
            p[ll] = ' ';
            memcpy(p + ll + 1, r, lr);
            lens[i] = ll + 1 + lr;
            p += lens[i];
        }
        rc = hx_gguf_writer_set_arr_str(wr, "tokenizer.ggml.merges", (const char *const *)strs, lens, (uint64_t)n);
    }
    free(m);
    free(strs);
    free(lens);
    free(arena);
    return rc;
}

int hx_tok_write_gguf(const struct hx_tok *t, struct hx_gguf_writer *wr) {
    int n = t->n_vocab;
    if (n < 1) return QP_EINVAL;
    if (t->kind == HX_TOK_BPE && (t->bpe_mode != HX_BPE_BYTELEVEL || strcmp(t->pre_name, "tokenizer.json") == 0))
        return QP_ENOTSUP;
    int rc = write_tokens(wr, t);
    int32_t *types = malloc((size_t)n * sizeof *types);
    if (!types) return QP_ENOMEM;
    for (int i = 0; i < n; i++) types[i] = t->types[i];
    if (!rc && t->kind == HX_TOK_SPM)
        rc = hx_gguf_writer_set_arr(wr, "tokenizer.ggml.scores", HX_GGUF_FLOAT32, t->scores, (uint64_t)n);
    if (!rc) rc = hx_gguf_writer_set_arr(wr, "tokenizer.ggml.token_type", HX_GGUF_INT32, types, (uint64_t)n);
    free(types);
    if (!rc) rc = hx_gguf_writer_set_str(wr, "tokenizer.ggml.model", t->kind == HX_TOK_SPM ? "llama" : "gpt2");
    if (!rc && t->kind == HX_TOK_BPE) {
        rc = write_merges(wr, t);
        if (!rc) rc = hx_gguf_writer_set_str(wr, "tokenizer.ggml.pre", t->pre_name);
        if (!rc) rc = hx_gguf_writer_set_bool(wr, "tokenizer.ggml.add_bos_token", t->add_bos != 0);
    }
    return rc;
}
