// gguf_model.h — a Llama model as GGUF: hx_gguf_model_load (declared in hx_model_load.h, private to harness/io/) reads one into
// kn_weights; hx_gguf_model_write writes kn_weights (and a tokenizer) as a GGUF that llama.cpp
// loads, laid out as llama.cpp's llama2.c converter lays it out.
// hx_gguf_stream_* writes a GGUF whose tensors are produced piece by piece (qprobe synth),
// never holding them all in memory.
// Depends on kernels/ (qp.h, kn_model.h), harness/io/hx_gguf.h and harness/io/hx_tokenizer.h.
#ifndef HX_GGUF_MODEL_H
#define HX_GGUF_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "kn_model.h"

struct hx_tok;

// Writes w (tensors F32, F16 or BF16) to path as GGUF v3, atomically. type is KN_F32 or
// KN_F16: the type of every 2-D matrix (norm vectors stay F32, as llama.cpp keeps them).
// tok may be NULL (no tokenizer keys). When w->tied, no output.weight is written.
// Returns 0, QP_EINVAL (bad type, inconsistent weights or vocabulary), QP_ENOTSUP (a source
// tensor of a quantized type), QP_ENOMEM, QP_EIO (cannot create the file) or QP_EWRITE (a
// write failed: disk full, I/O error), with err "cannot write 'PATH': ...".
// Nothing of w or tok is modified or kept.
int hx_gguf_model_write(const struct kn_weights *w, const struct hx_tok *tok, const char *path,
                        enum kn_type type, char *err);

// Writes w with every tensor in the type it has (a quantized variant: llama.cpp block types,
// f16, f32; norms must be f32), plus general.quantization_version = 2 and the given
// general.file_type (llama.cpp's llama_ftype number). Same errors as above.
int hx_gguf_model_write_as_is(const struct kn_weights *w, const struct hx_tok *tok,
                              const char *path, int file_type, char *err);

// Writes only the vocabulary (no tensors) as a GGUF that llama.cpp's tools load with
// vocab_only, like its own models/ggml-vocab-*.gguf: tokenizer keys, architecture "llama" with
// placeholder hyperparameters (llama.cpp requires them; they describe no weights). Returns 0,
// QP_ENOTSUP (a vocabulary llama.cpp has no name for, see hx_tok_write_gguf), QP_ENOMEM or
// QP_EIO, with err "cannot write 'PATH': ...".
int hx_gguf_vocab_write(const struct hx_tok *tok, const char *path, char *err);

// ---------------------------------------------------------------------------------------------
// Streaming writer, for models too large to hold in memory: the header (key/values and tensor
// infos) goes out first, then the tensors' bytes in the order the infos list them, as the caller
// produces them. Same file layout as hx_gguf_writer_write (GGUF v3, alignment 32, each tensor
// at a multiple of 32 bytes, zero padding), written to a temporary file next to path that
// hx_gguf_stream_finish renames into place; on any failure the temporary file is removed.

struct hx_gguf_kv;
struct hx_gguf_stream;

// A tensor to be streamed: ne[0] is the contiguous dimension, unused dims are 1.
struct hx_gguf_stream_tensor {
    const char *name;
    int type;      // ggml type id (enum kn_type)
    int n_dims;    // 1..4
    int64_t ne[4];
};

// Creates the temporary file and writes the header: kvs[0..n_kv) in order (values as the GGUF
// reader returns them, so keys copied from another file pass straight through; numeric array
// elements are taken as raw little-endian bytes) and the tensor infos. Nothing of kvs or
// tensors is kept (the names are copied). On success *out is the stream, to be ended with
// hx_gguf_stream_finish or hx_gguf_stream_abort; on failure *out is NULL and no file is left.
// Errors: QP_EINVAL (bad type, shape or value, duplicate tensor name), QP_ENOMEM, QP_EIO (cannot create the file), with
// err "cannot write 'PATH': ...".
int hx_gguf_stream_open(const char *path, const struct hx_gguf_kv *kvs, int64_t n_kv,
                        const struct hx_gguf_stream_tensor *tensors, int64_t n_tensors,
                        struct hx_gguf_stream **out, char *err);

// Appends n bytes of tensor data; a call may end inside a tensor or span several. Padding
// between tensors is written here. QP_EINVAL when more bytes arrive than the tensors hold,
// QP_EWRITE on a write error (disk full): the stream is then failed and only abort remains.
int hx_gguf_stream_write(struct hx_gguf_stream *s, const void *data, size_t n, char *err);

// Total bytes of tensor data the stream expects (sum of the tensors' sizes, without padding).
uint64_t hx_gguf_stream_data_bytes(const struct hx_gguf_stream *s);

// Checks that every tensor byte arrived, flushes, fsyncs and renames the file into place;
// frees s in every case (on failure the temporary file is removed). 0, QP_EINVAL (data
// missing) or QP_EWRITE.
int hx_gguf_stream_finish(struct hx_gguf_stream *s, char *err);

// Removes the temporary file and frees s. s may be NULL.
void hx_gguf_stream_abort(struct hx_gguf_stream *s);

#endif
