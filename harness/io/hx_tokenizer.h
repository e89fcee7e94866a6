// hx_tokenizer.h — the one tokenizer interface of qprobe: every command and every model format
// encodes and decodes through struct hx_tok, whatever vocabulary the model file carries.
//
// Two algorithms behind it (docs/TOKENIZERS.md has the details and the evidence):
// - SPM (SentencePiece-style, llama.cpp's LLAMA_VOCAB_TYPE_SPM): llama2.c tokenizer.bin, GGUF
//   tokenizer.ggml.model = "llama". Merges by token score; "▁" (U+2581) is held as ' '
//   internally (turned back on export); unknown characters fall back to <0xNN> byte tokens.
// - BPE (byte-level, GPT-2 scheme, llama.cpp's LLAMA_VOCAB_TYPE_BPE): GGUF
//   tokenizer.ggml.model = "gpt2" with tokenizer.ggml.pre naming the pre-tokenizer, and Hugging
//   Face tokenizer.json with model BPE (ByteLevel, or Metaspace/SentencePiece-style with
//   byte_fallback). The text is split by the pre-tokenizer's regular expressions (PCRE2), each
//   piece's bytes are mapped to printable code points and merged by rank. Token strings are
//   stored as the file has them (e.g. "Ġthe" for " the").
//
// Special tokens (control, unknown and user-defined types; tokenizer.json's added tokens) are
// matched in the text before the algorithm runs, longest first, as llama.cpp's
// tokenizer_st_partition: user-defined (non-special added) tokens always, control tokens only with
// HX_TOK_PARSE_SPECIAL. By default text is text, as llama.cpp's perplexity tokenizes it.
//
// A tokenizer is immutable once loaded: encode/decode may run on many threads at once.
// Depends on kernels/qp*.h and harness/io/hx_gguf.h; the BPE parts use PCRE2 and cJSON.
#ifndef HX_TOKENIZER_H
#define HX_TOKENIZER_H

#include <stddef.h>

struct hx_gguf;
struct hx_gguf_writer;
struct hx_tok;

enum hx_tok_kind {
    HX_TOK_SPM = 1, // score-based SentencePiece merges
    HX_TOK_BPE = 2, // rank-based merges (byte-level or over characters with byte fallback)
};

enum hx_tok_type { // GGUF tokenizer.ggml.token_type values
    HX_TOK_NORMAL = 1,
    HX_TOK_UNKNOWN = 2,
    HX_TOK_CONTROL = 3,
    HX_TOK_USER_DEFINED = 4,
    HX_TOK_UNUSED = 5,
    HX_TOK_BYTE = 6,
};

// Encoding (and decoding) flags.
enum {
    // Prepend BOS when the vocabulary asks for one (GGUF add_bos_token, tokenizer.json's
    // TemplateProcessing or tokenizer_config.json add_bos_token; always for tokenizer.bin):
    // llama.cpp's add_special. A vocabulary that adds no BOS (Qwen2) gets none.
    HX_TOK_ADD_BOS = 1,
    // SPM: prepend one space to the text and to every text fragment after a special token, when
    // the vocabulary's add_space_prefix says so (default yes). Ignored by BPE vocabularies, whose
    // files say themselves whether they add a space (ByteLevel/Metaspace settings).
    HX_TOK_SPACE_PREFIX = 2,
    // Also match control tokens ("<|begin_of_text|>", "<s>") in the text; in decoding, print
    // control tokens' text instead of nothing.
    HX_TOK_PARSE_SPECIAL = 4,
};

// ---------------------------------------------------------------------------------------------
// Loading. All return 0 or a QP_E* code with "cannot read 'PATH': ..." in err (QP_ERRLEN) and
// *out = NULL; the tokenizer is freed with hx_tok_destroy.

// Any tokenizer file, by its contents: GGUF (magic "GGUF"; a vocab-only file is fine),
// tokenizer.json (first non-blank byte '{'), else llama2.c tokenizer.bin, which does not store
// its size: n_vocab > 0 gives it (a model's embedding rows), 0 counts the records to the end of
// the file. n_vocab is not checked against GGUF or tokenizer.json (see hx_tok_fit_rows).
int hx_tok_open(const char *path, int n_vocab, struct hx_tok **out, char *err);

// llama2.c tokenizer.bin: int32 max_token_length, then vocab_size records of
// (float32 score, int32 len, len bytes). BOS=1, EOS=2, UNK=0 as llama2.c assumes; types
// inferred as llama.cpp's converter does. Duplicate strings are accepted (the last id wins).
int hx_tok_load_llama2c(const char *path, int vocab_size, struct hx_tok **out, char *err);

// tokenizer.ggml.*: model "llama" (tokens, scores, token_type, bos/eos/unknown ids,
// add_bos_token, add_space_prefix) or "gpt2" (tokens, token_type, merges, pre, bos/eos ids,
// add_bos_token). Two ids for one non-empty string are refused, as llama.cpp refuses them; so are
// merges naming a string that is not a token, and pre-tokenizer names qprobe does not know (the
// message lists the known ones).
int hx_tok_from_gguf(const struct hx_gguf *g, struct hx_tok **out, char *err);

// Hugging Face tokenizer.json, plus tokenizer_config.json from the same directory when present
// (bos_token/eos_token, add_bos_token). Model BPE only (vocab; merges as "a b" or ["a", "b"];
// byte_fallback; ignore_merges; unk_token); pre-tokenizers Sequence, Split (Regex or String
// pattern, behaviour Isolated), ByteLevel, Metaspace, Digits; normalizers null, NFC (not applied,
// as llama.cpp; see docs/TOKENIZERS.md), Prepend/Replace for SentencePiece-style files;
// added_tokens; post_processor TemplateProcessing for the BOS rule. Anything else is refused by
// name.
int hx_tok_load_json(const char *path, struct hx_tok **out, char *err);

void hx_tok_destroy(struct hx_tok *t);

// Matches the vocabulary to a model's embedding rows (path names the model in messages): equal
// sizes pass; a tokenizer.json vocabulary smaller than the rows is padded with unused tokens
// "[PAD<id>]" (as llama.cpp's converter pads Qwen2's 151665 to 151936); anything else is
// QP_EFORMAT "the tokenizer has N tokens, the model M".
int hx_tok_fit_rows(struct hx_tok *t, int rows, const char *path, char *err);

// Writes the vocabulary as tokenizer.ggml.* keys (model "llama" or "gpt2" with merges and pre),
// as llama.cpp's converter would, so that a GGUF qprobe writes carries the same tokenizer.
// BPE vocabularies from tokenizer.json are written only when their pre-tokenizer is one llama.cpp
// knows by name (QP_ENOTSUP otherwise). Returns 0 or a QP_E* code.
int hx_tok_write_gguf(const struct hx_tok *t, struct hx_gguf_writer *w);

// ---------------------------------------------------------------------------------------------
// Accessors. Ids are -1 where the vocabulary has none (BPE files often lack unk; Qwen2 has no
// BOS).

enum hx_tok_kind hx_tok_kind(const struct hx_tok *t);
int hx_tok_n_vocab(const struct hx_tok *t);
int hx_tok_bos(const struct hx_tok *t);
int hx_tok_eos(const struct hx_tok *t);
int hx_tok_unk(const struct hx_tok *t);
int hx_tok_adds_bos(const struct hx_tok *t); // 1 when HX_TOK_ADD_BOS prepends hx_tok_bos
// The BOS id when the vocabulary adds one, else -1: what a perplexity window starts with.
int hx_tok_bos_added(const struct hx_tok *t);
// One line naming the source and algorithm, e.g. "bpe (gguf gpt2, pre 'llama-bpe', 128256
// tokens, 280147 merges)". Static storage of the tokenizer.
const char *hx_tok_describe(const struct hx_tok *t);
// The kind of file it came from: "tokenizer.bin", "gguf" or "tokenizer.json".
const char *hx_tok_source(const struct hx_tok *t);
// The BPE pre-tokenizer name ("llama-bpe", "tokenizer.json"), "" for SPM.
const char *hx_tok_pre_name(const struct hx_tok *t);
// The stored string of id (SPM: spaces, not "▁"; BPE: as in the file), its score and type.
const char *hx_tok_str(const struct hx_tok *t, int id, size_t *len);
float hx_tok_score(const struct hx_tok *t, int id);
int hx_tok_type(const struct hx_tok *t, int id);

// ---------------------------------------------------------------------------------------------
// Encoding and decoding

// Encodes text[0..len) (any bytes; invalid UTF-8 is kept byte for byte by BPE vocabularies).
// *ids is malloc'd (caller frees), *n its count (at most 2 * len + 2). Returns 0, QP_ENOMEM, or
// QP_EFORMAT when a pre-tokenizer expression fails at run time (PCRE2 match limit).
int hx_tok_encode(const struct hx_tok *t, const char *text, size_t len, unsigned flags, int **ids,
                  size_t *n);

// The bytes of ids[0..n) as text: the inverse of hx_tok_encode with the same flags, so that
// decode(encode(text)) == text byte for byte (except SPM's "▁" in the text, which encodes as a
// space, and lstrip/rstrip special tokens, which swallow spaces). Control tokens print nothing
// unless HX_TOK_PARSE_SPECIAL. *text is malloc'd and NUL-terminated, *len its length.
// Returns 0 or QP_ENOMEM.
int hx_tok_decode(const struct hx_tok *t, const int *ids, size_t n, unsigned flags, char **text,
                  size_t *len);

// The bytes one token prints, for streaming output, as llama2.c's decode(prev, token): SPM drops
// a leading space right after BOS, "<0xNN>" byte tokens become that byte, BPE maps its code
// points back to bytes, user-defined tokens print their text, control tokens nothing. Returns
// the length written into out (at most cap; cap >= 8 is always enough for byte tokens; longer
// pieces are truncated).
size_t hx_tok_piece(const struct hx_tok *t, int prev, int id, char *out, size_t cap);

#endif
