// hx_model_load.h — the loader interface, private to harness/io/: what hx_model_open (hx_model.c)
// calls for each format, and what a new format's loader implements. Nothing outside harness/io/
// includes it (the tests and fuzz targets excepted, which drive the loaders one by one).
//
// A loader fills the fields of m it knows (w, format, map/map_len or gguf, tok) and registers
// every buffer w points into with qp_owned_add(&m->owned, ...). On failure it returns a QP_E*
// code with err "cannot read 'PATH': ..." and leaves m for hx_model_close to free (whatever it
// attached is released there). It calls no function of hx_model.c: the dependency points from
// hx_model.c to the loaders only.
// Depends on harness/io/hx_model.h.
#ifndef HX_MODEL_LOAD_H
#define HX_MODEL_LOAD_H

#include "hx_model.h"

// m is zeroed by the caller except path.
int hx_llama2c_load(struct hx_model *m, const char *path, char *err);
int hx_gguf_model_load(struct hx_model *m, const char *path, char *err);
int hx_safetensors_load(struct hx_model *m, const char *path, char *err);

#endif
