// hx_tok_impl.h — the inside of struct hx_tok, shared by the tokenizer's files only
// (hx_tokenizer.c: common vocabulary, special tokens, SPM, llama2.c and GGUF loading, decoding;
// hx_tok_bpe.c: byte-level BPE; hx_tok_pre.c: pre-tokenizer expressions; hx_tok_json.c:
// tokenizer.json). Nothing outside those files includes it: the rest of qprobe sees
// hx_tokenizer.h. Depends on kernels/qp.h.
#ifndef HX_TOK_IMPL_H
#define HX_TOK_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "hx_tokenizer.h"

struct hx_pre;

// A hash slot: the id of a token (-1 when empty) and the top 32 bits of its string's hash, which
// settle most failed lookups without touching the strings.
struct hx_tok_slot {
    uint32_t tag;
    int32_t id;
};

// One merge of the rank table: the pair (left id, right id) packed as left << 32 | right, the
// merge's rank (its line in the file) and the id of the joined token. key == UINT64_MAX: empty.
struct hx_merge_slot {
    uint64_t key;
    int32_t rank;
    int32_t id;
};

// Per-token attributes beyond the type (llama.cpp's LLAMA_TOKEN_ATTR_LSTRIP/RSTRIP).
enum { HX_ATTR_LSTRIP = 1, HX_ATTR_RSTRIP = 2 };

// How BPE turns a pre-token into initial symbols.
enum hx_bpe_mode {
    HX_BPE_BYTELEVEL = 1, // every byte is the token of its GPT-2 code point ("Ġ" for ' ')
    HX_BPE_CHARS = 2,     // UTF-8 characters; unknown ones go to <0xNN> (byte_fallback) or unk
};

// Metaspace (tokenizer.json SentencePiece-style): ' ' becomes "▁" and "▁" is prepended.
enum hx_meta_prepend { HX_META_NONE = 0, HX_META_ALWAYS = 1, HX_META_FIRST = 2 };

struct hx_tok {
    enum hx_tok_kind kind;
    int n_vocab;
    int bos, eos, unk;    // -1 when the vocabulary has none
    int add_bos;          // HX_TOK_ADD_BOS prepends bos
    int add_space_prefix; // SPM: HX_TOK_SPACE_PREFIX prepends a space
    size_t max_len;       // longest token string, bytes; longer candidates are never looked up
    char *strs;           // all token strings back to back, each followed by a NUL
    size_t *off;          // (n_vocab + 1) offsets into strs; string i is [off[i], off[i+1] - 1)
    float *scores;        // (n_vocab)
    int *types;           // (n_vocab) enum hx_tok_type
    uint8_t *attrs;       // (n_vocab) HX_ATTR_* bits
    struct hx_tok_slot *table; // (table_cap) open-addressing string -> id
    size_t table_cap;          // a power of two, at least twice n_vocab
    uint64_t seed;             // of qp_hash_bytes, random per tokenizer (see qp.h)
    // SPM: the token each byte falls back to (<0xNN>, else the 1-byte string, else unk).
    // BPE byte-level: the token of the byte's GPT-2 code point (-1 when absent).
    // BPE chars: the <0xNN> token (-1 when absent).
    int byte_id[256];
    // SPM: bit (a << 8 | b) set when bytes a, b are adjacent in some entry: a boundary between
    // two characters whose bytes do not join can never be merged across.
    uint8_t join[256 * 256 / 8];
    // Special tokens matched before the algorithm (control, unknown, user-defined), longest
    // first, ties by id; n_special of them. by_byte holds their indices into special grouped by
    // first byte (group b is by_byte[byte_off[b] .. byte_off[b + 1]), each in special's order).
    int *special;
    int n_special;
    int *by_byte;
    int byte_off[257];
    // BPE
    enum hx_bpe_mode bpe_mode;
    struct hx_merge_slot *merges; // (merge_cap) open addressing, a power of two
    size_t merge_cap, n_merges;
    int ignore_merges;        // a pre-token that is a whole token is taken as it is (Llama 3)
    int byte_fallback;        // HX_BPE_CHARS: unknown characters become <0xNN> tokens
    int fuse_unk;             // HX_BPE_CHARS: consecutive unknown characters give one unk
    struct hx_pre *pre;       // the pre-tokenizer (NULL: the whole fragment is one pre-token)
    int prefix_space;         // ByteLevel add_prefix_space: ' ' before a text not starting with one
    enum hx_meta_prepend meta; // Metaspace / Prepend("▁") + Replace(" ", "▁") normalizer
    int meta_split;           // Metaspace split: each "▁" starts a pre-token
    int meta_if_missing;      // Metaspace: prepend only when the text does not start with "▁"
    int meta_replace;         // ' ' becomes "▁" (Metaspace, or the Replace normalizer)
    char pre_name[48];        // "llama-bpe", "tokenizer.json", ...
    const char *source;       // "tokenizer.bin", "gguf" or "tokenizer.json" (static string)
    char describe[160];
};

// ---------------------------------------------------------------------------------------------
// Shared by the loaders (hx_tokenizer.c)

// Allocates a tokenizer of n tokens whose strings take str_bytes bytes in total (without NULs).
// scores, types and attrs are zeroed/NORMAL. NULL when out of memory.
struct hx_tok *hx_tok__alloc(int n, size_t str_bytes);
// Stores the next token's string (ids in order, each called once, id 0 first).
void hx_tok__push(struct hx_tok *t, int id, const char *s, size_t len);
// The id of the token whose string is exactly s[0..len), or -1.
int hx_tok__lookup(const struct hx_tok *t, const char *s, size_t len);
// Builds the string table, checks the bos/eos/unk ids and collects the special tokens.
// dup_ok: two ids for one string are accepted (the last wins) instead of refused. Empty strings
// are never looked up (llama.cpp renames them "[EMPTY_<id>]").
int hx_tok__finish(struct hx_tok *t, const char *path, int dup_ok, char *err);
// GGUF helpers shared by the two GGUF loaders (hx_tokenizer.c): the token arrays ("▁" to ' '
// when unescape), a token id key (def when absent), a bool key (unchanged when absent).
struct hx_gguf;
int hx_tok__gguf_tokens(const struct hx_gguf *g, int unescape, struct hx_tok **out, char *err);
int hx_tok__gguf_id(const struct hx_gguf *g, const char *key, int def, int *out, char *err);
int hx_tok__gguf_bool(const struct hx_gguf *g, const char *key, int *out, char *err);
// Reads a whole file into a malloc'd buffer with one NUL after it.
int hx_tok__read_file(const char *path, size_t limit, char **data, size_t *size, char *err);

// ---------------------------------------------------------------------------------------------
// SPM (hx_tok_spm.c)

// Encodes one text fragment with score-based merges (a space first when prefix) and appends its
// ids to out (room for len + 2 more). 0 or QP_ENOMEM.
int hx_spm_encode_fragment(const struct hx_tok *t, const char *text, size_t len, int prefix,
                           int *out, size_t *n_out);
// If s[0..len) is exactly "<0xHH>" (hex digits in either case), the byte; else -1.
int hx_tok__byte_token(const char *s, size_t len);
// Fills join (the SPM segmentation bitmap) from the strings.
void hx_spm_build_join(struct hx_tok *t);

// ---------------------------------------------------------------------------------------------
// BPE (hx_tok_bpe.c)

// The GPT-2 byte-to-code-point map: the UTF-8 of byte b's printable stand-in into out (2 bytes
// room); returns its length (1 or 2).
size_t hx_bpe_byte_char(unsigned b, char *out);
// The inverse: the byte whose stand-in starts s[0..len) (consuming *used bytes), or -1.
int hx_bpe_char_byte(const char *s, size_t len, size_t *used);
// Adds merge number rank (left, right) -> joined token; the first of two equal pairs wins.
// Call hx_bpe_merges_init first with the count. 0 or QP_ENOMEM.
int hx_bpe_merges_init(struct hx_tok *t, size_t n_merges);
void hx_bpe_merge_add(struct hx_tok *t, int left, int right, int rank, int id);
// Adds merge rank (l, r) by strings: QP_EFORMAT naming path when either or their join is not a
// token. scratch: room for ll + rl bytes.
int hx_bpe_add_merge(struct hx_tok *t, const char *l, size_t ll, const char *r, size_t rl, int rank,
                     char *scratch, const char *path, char *err);
// Finishes a BPE vocabulary after hx_tok__finish: the byte tables.
void hx_bpe_finish(struct hx_tok *t);
// Encodes one text fragment (no special tokens inside) and appends its ids to out (room for
// 2 * len + 2). 0, QP_ENOMEM or QP_EFORMAT (err gets why).
struct hx_bpe_cache;
int hx_bpe_encode_fragment(const struct hx_tok *t, struct hx_bpe_cache *cache, const char *text,
                           size_t len, int first, int *out, size_t *n_out);
struct hx_bpe_cache *hx_bpe_cache_create(void);
void hx_bpe_cache_destroy(struct hx_bpe_cache *c);
// The bytes token id stands for (byte-level map undone, "▁" back to ' ' for Metaspace, <0xNN>
// as its byte) into out (cap bytes); returns the full length (may exceed cap: then truncated).
size_t hx_bpe_token_bytes(const struct hx_tok *t, int id, char *out, size_t cap);
// Loads tokenizer.ggml.* of model "gpt2" (hx_tokenizer.c dispatches).
int hx_bpe_from_gguf(const struct hx_gguf *g, struct hx_tok **out, char *err);
void hx_bpe_free(struct hx_tok *t);

#endif
