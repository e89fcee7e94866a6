// model.h — opening a model file of any supported format into kn_weights, with its tokenizer.
//
// Formats: llama2.c checkpoints (legacy version-0 header), GGUF (llama architecture; F32, F16,
// BF16 and llama.cpp quantized types), Hugging Face safetensors + config.json
// (LlamaForCausalLM). Tensors point into a read-only mapping where possible, otherwise into
// buffers the model owns. Depends on kernels/ and the other harness I/O modules.
#ifndef HX_MODEL_H
#define HX_MODEL_H

#include <stddef.h>

#include "kn_model.h"
#include "qp.h"

struct hx_gguf;
struct hx_tok;

enum hx_format { HX_FMT_LLAMA2C, HX_FMT_GGUF, HX_FMT_SAFETENSORS };

struct hx_model {
    struct kn_weights w;
    struct hx_tok *tok;       // NULL when no tokenizer is known
    enum hx_format format;
    char *path;               // as given
    struct hx_gguf *gguf;     // the reader, when GGUF
    void *map;                // a mapping owned by the model (llama2.c, safetensors)
    size_t map_len;
    struct qp_owned owned;    // buffers w points into, freed with the model
};

// Opens path (format detected from magic bytes, or a directory holding model.safetensors and
// config.json). tok_path: a tokenizer file (llama2.c tokenizer.bin, tokenizer.json or a GGUF
// vocabulary) that replaces the model's own, or NULL to use the model's own (GGUF keys, or the
// tokenizer.json beside a safetensors config.json) or none. On failure returns a QP_E* code, *out = NULL, and err "cannot read 'PATH': ...".
int hx_model_open(const char *path, const char *tok_path, struct hx_model **out, char *err);
void hx_model_close(struct hx_model *m);

// Drops the resident pages of the model's file mapping (every tensor stays readable: pages fault
// back in from the file). Call it when the weights were copied or quantized elsewhere and the
// source is rarely read again, so that peak memory is the result's, not source + result.
void hx_model_release_pages(struct hx_model *m);

// Drops the resident pages that lie wholly inside [p, p + n), if the range is part of the
// read-only file mapping of an open model; anything else (heap buffers, converted copies) is
// left alone, so callers may pass any tensor. The data stays readable (pages fault back in from
// the page cache). Lets a variant builder release each source tensor once it is quantized, so
// that peak memory is the variant plus one tensor, not source plus variant. Thread-safe.
void hx_release_source(const void *p, size_t n);

// The format loaders are private to harness/io/ (hx_model_load.h).

// ---------------------------------------------------------------------------------------------
// Naming the weights

// The GGUF name of each 2-D weight, for rules and reports: "token_embd.weight", "output.weight",
// "blk.L.attn_q.weight", ... (buf of at least 64 bytes).
void hx_tensor_name(char *buf, size_t cap, int layer, const char *what);

// The 2-D weights of a model in a fixed order: token_embd, output, then for each layer attn_q,
// attn_k, attn_v, attn_output, ffn_gate, ffn_up, ffn_down (HX_N_WEIGHTS(n_layers) entries).
#define HX_N_WEIGHTS(n_layers) (2 + 7 * (n_layers))
struct hx_weight_ref {
    char name[64];       // GGUF name, e.g. "blk.3.ffn_down.weight"
    int layer;           // -1 for token_embd and output
    const char *what;    // "attn_q", ..., "token_embd", "output"
    struct kn_tensor *t; // points into w
};
void hx_weight_refs(struct kn_weights *w, struct hx_weight_ref *out);

#endif
