// tokenizer.h — SentencePiece-style BPE tokenizer (llama2.c tokenizer.bin or a GGUF's
// tokenizer.ggml.* for model "llama"), matching llama.cpp's SPM tokenizer and llama2.c's encode.
//
// Internally token strings hold plain spaces: GGUF's "▁" (U+2581) is turned into ' ' on load and
// back on export, so both sources tokenize through one code path.
// Encoding: (optional) one space prepended, then the text is split into UTF-8 characters; the
// adjacent pair whose concatenation is a vocabulary entry with the highest score is merged
// repeatedly (leftmost pair on ties); each final piece that is not an entry falls back to its
// bytes as <0xNN> tokens. O(n log n) in the text length.
// Depends on kernels/qp.h and harness/io/hx_gguf.h.
#ifndef HX_TOKENIZER_H
#define HX_TOKENIZER_H

#include <stddef.h>

struct hx_gguf;
struct hx_tok;

enum hx_tok_type { // GGUF tokenizer.ggml.token_type values
    HX_TOK_NORMAL = 1,
    HX_TOK_UNKNOWN = 2,
    HX_TOK_CONTROL = 3,
    HX_TOK_USER_DEFINED = 4,
    HX_TOK_UNUSED = 5,
    HX_TOK_BYTE = 6,
};

// Encoding flags.
enum {
    HX_TOK_ADD_BOS = 1,      // prepend BOS
    HX_TOK_SPACE_PREFIX = 2, // prepend one space when the text is not empty (SPM add_space_prefix)
};

// llama2.c tokenizer.bin: int32 max_token_length, then vocab_size records of
// (float32 score, int32 len, len bytes). vocab_size comes from the model header.
// BOS=1, EOS=2, UNK=0 as llama2.c assumes; types inferred as llama.cpp's converter does.
int hx_tok_load_llama2c(const char *path, int vocab_size, struct hx_tok **out, char *err);
// tokenizer.ggml.{model,tokens,scores,token_type,bos_token_id,eos_token_id,unknown_token_id}.
int hx_tok_from_gguf(const struct hx_gguf *g, struct hx_tok **out, char *err);
void hx_tok_destroy(struct hx_tok *t);

int hx_tok_n_vocab(const struct hx_tok *t);
int hx_tok_bos(const struct hx_tok *t);
int hx_tok_eos(const struct hx_tok *t);
int hx_tok_unk(const struct hx_tok *t);
// The stored string of id (spaces, not "▁"), its score and type.
const char *hx_tok_str(const struct hx_tok *t, int id, size_t *len);
float hx_tok_score(const struct hx_tok *t, int id);
int hx_tok_type(const struct hx_tok *t, int id);

// Encodes text[0..len). *ids is malloc'd (caller frees), *n its count. Returns 0 or QP_ENOMEM.
int hx_tok_encode(const struct hx_tok *t, const char *text, size_t len, unsigned flags, int **ids,
                  size_t *n);

// The bytes a token prints, as llama2.c's decode(prev, token): a leading space is dropped right
// after BOS, "<0xNN>" byte tokens become that byte. Returns the length written into out
// (at most cap, cap >= 8 is always enough for byte tokens; longer pieces are truncated).
size_t hx_tok_piece(const struct hx_tok *t, int prev, int id, char *out, size_t cap);

#endif
