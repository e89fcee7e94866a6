// hx_tok_pre.h — pre-tokenizers of byte-level BPE vocabularies: the regular expressions that cut
// a text into pieces before merging, compiled with PCRE2 (UTF + UCP, JIT where available).
//
// Semantics (llama.cpp's unicode_regex_split and Hugging Face's Split with behaviour Isolated):
// a pre-tokenizer is a list of expressions applied in turn; each one cuts every piece the
// previous ones left, keeping both the matches and the text between them as pieces (nothing is
// dropped), and a match never reaches across a piece (each piece is the whole subject, so
// look-ahead stops at its end). Invalid UTF-8 never matches (PCRE2_MATCH_INVALID_UTF), so such
// bytes end up in pieces of their own and survive byte for byte.
// Depends on kernels/qp.h and PCRE2 only.
#ifndef HX_TOK_PRE_H
#define HX_TOK_PRE_H

#include <stddef.h>

struct hx_pre;

// A piece of the text: bytes [start, start + len).
struct hx_span {
    size_t start, len;
};

// The expressions llama.cpp uses for tokenizer.ggml.pre = name (its llm_tokenizer_bpe table),
// and the flags it ties to that name: *ignore_merges (a pre-token that is a whole token is not
// merged, Llama 3 and Tekken) and *add_bos (its default before the GGUF's add_bos_token key).
// QP_ENOTSUP with "pre-tokenizer 'NAME' is not known (known: ...)" in err (no file name: the
// caller adds it) for other names.
int hx_pre_create_named(const char *name, struct hx_pre **out, int *ignore_merges, int *add_bos,
                        char *err);

// An empty pre-tokenizer, to which hx_pre_add appends expressions.
int hx_pre_create(struct hx_pre **out);
// Appends one expression (pattern[0..len), UTF-8). literal: match the string as it is (Hugging
// Face's {"String": ...} patterns). QP_EFORMAT with PCRE2's message and offset when it does not
// compile; QP_ENOMEM.
int hx_pre_add(struct hx_pre *p, const char *pattern, size_t len, int literal, char *err);
int hx_pre_count(const struct hx_pre *p);
// The i-th expression's source text.
const char *hx_pre_pattern(const struct hx_pre *p, int i);
void hx_pre_destroy(struct hx_pre *p);

// Scratch for splitting: owns PCRE2 match data and a JIT stack, and the span arrays. One per
// thread (hx_pre itself is read-only and shared).
struct hx_pre_scratch;
struct hx_pre_scratch *hx_pre_scratch_create(const struct hx_pre *p);
void hx_pre_scratch_destroy(struct hx_pre_scratch *s);

// Splits text[0..len) into pieces; *spans points into s (valid until the next call), *n their
// count (0 for an empty text). 0, QP_ENOMEM, or QP_EFORMAT when PCRE2 reports a matching error
// (message in err).
int hx_pre_split(const struct hx_pre *p, struct hx_pre_scratch *s, const char *text, size_t len,
                 const struct hx_span **spans, size_t *n, char *err);

// The known names for messages: "default, gpt-2, llama-bpe, ..." (static storage).
const char *hx_pre_known_names(void);

#endif
