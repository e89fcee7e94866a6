// llama2c.c — llama2.c checkpoints, legacy (version 0) layout: a header of 7 int32
// (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len), then float32 tensors:
// token embedding, attention norms, wq, wk, wv, wo, MLP norms, w1, w2, w3, final norm, the two
// legacy RoPE tables (seq_len * head_size / 2 floats each, unused: the engine computes RoPE),
// and, when vocab_size is negative, an unshared classifier.
//
// The file is mapped read-only and the tensors point into the mapping.
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hx_model.h"
#include "hx_model_load.h"
#include "qp.h"

static struct kn_tensor hx_f32_tensor(const float **cursor, int64_t ne0, int64_t ne1) {
    struct kn_tensor t = {KN_F32, ne0, ne1, *cursor};
    *cursor += ne0 * ne1;
    return t;
}

// Returns the index of the first non-finite value, or -1.
static int64_t hx_first_nonfinite(const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return i;
    return -1;
}

// Maps path read-only into m (m->map, m->map_len), at least a header's 28 bytes.
static int l2c_map(struct hx_model *m, const char *path, char *err) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return qp_fail(err, QP_EIO, "cannot read '%s': %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return qp_fail(err, QP_EIO, "cannot read '%s': %s", path, strerror(errno));
    }
    size_t size = (size_t)st.st_size;
    if (size < 28) {
        close(fd);
        return qp_fail(err, QP_EFORMAT, "cannot read '%s': file of %zu bytes is too short for a llama2.c header",
                       path, size);
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return qp_fail(err, QP_EIO, "cannot map '%s': %s", path, strerror(errno));
    m->map = map;
    m->map_len = size;
    return 0;
}

// The configuration from the header's 7 int32; *shared: the classifier is the embedding
// (a positive vocab_size).
static int l2c_header(struct hx_model *m, const char *path, int *shared, char *err) {
    int32_t h[7];
    memcpy(h, m->map, sizeof h);
    struct kn_config *c = &m->w.cfg;
    c->dim = h[0];
    c->hidden_dim = h[1];
    c->n_layers = h[2];
    c->n_heads = h[3];
    c->n_kv_heads = h[4];
    *shared = h[5] > 0;
    c->vocab_size = h[5] == INT32_MIN ? 0 : (h[5] < 0 ? -h[5] : h[5]);
    c->seq_len = h[6];
    c->head_size = c->n_heads > 0 ? c->dim / c->n_heads : 0;
    if (c->n_heads > 0 && c->dim % c->n_heads != 0) // (other formats may have heads of any size)
        return qp_fail(err, QP_ERANGE, "cannot read '%s': not a llama2.c checkpoint: n_heads %d does not divide dim %d",
                       path, c->n_heads, c->dim);
    c->norm_eps = 1e-5f;
    c->rope_theta = 10000.0f;
    char why[QP_ERRLEN];
    int rc = kn_config_check(c, why);
    if (rc) return qp_fail(err, rc, "cannot read '%s': not a llama2.c checkpoint: %s", path, why);
    return 0;
}

// Checks that the file holds exactly the floats the header asks for, all finite.
static int l2c_check_floats(const struct hx_model *m, const char *path, int shared, char *err) {
    const struct kn_config *c = &m->w.cfg;
    size_t size = m->map_len;
    // All products fit in int64: kn_config_check bounds every factor.
    int64_t dim = c->dim, hid = c->hidden_dim, L = c->n_layers, V = c->vocab_size;
    int64_t kv_dim = (int64_t)c->n_kv_heads * c->head_size;
    int64_t n_floats = V * dim + L * dim + L * dim * dim + 2 * L * kv_dim * dim + L * dim * dim +
                       L * dim + 3 * L * hid * dim + dim + (int64_t)c->seq_len * c->head_size +
                       (shared ? 0 : V * dim);
    int64_t expect = 28 + 4 * n_floats;
    if ((int64_t)size != expect)
        return qp_fail(err, QP_EFORMAT,
                       "cannot read '%s': %s: header (dim %d, hidden %d, layers %d, heads %d/%d, vocab %d, seq %d) needs %lld bytes, file has %zu",
                       path, (int64_t)size < expect ? "truncated" : "size does not match header",
                       c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->vocab_size,
                       c->seq_len, (long long)expect, size);
    const float *all = (const float *)((const char *)m->map + 28);
    int64_t bad = hx_first_nonfinite(all, n_floats);
    if (bad >= 0)
        return qp_fail(err, QP_EFORMAT, "cannot read '%s': weight %lld (byte offset %lld) is %s",
                       path, (long long)bad, (long long)(28 + 4 * bad),
                       isnan(all[bad]) ? "NaN" : "infinite");
    return 0;
}

// The tensors, pointing into the mapping in the file's fixed order.
static int l2c_tensors(struct hx_model *m, const char *path, int shared, char *err) {
    const struct kn_config *c = &m->w.cfg;
    int64_t dim = c->dim, hid = c->hidden_dim, L = c->n_layers, V = c->vocab_size;
    int64_t kv_dim = (int64_t)c->n_kv_heads * c->head_size;
    struct kn_layer_weights *layers = qp_calloc_array((size_t)L, sizeof *layers);
    if (!layers || qp_owned_add(&m->owned, layers))
        return qp_fail(err, QP_ENOMEM, "cannot read '%s': out of memory", path);
    m->w.layers = layers;

    const float *p = (const float *)((const char *)m->map + 28);
    m->w.tok_embd = hx_f32_tensor(&p, dim, V);
    for (int l = 0; l < L; l++) layers[l].attn_norm = hx_f32_tensor(&p, dim, 1);
    for (int l = 0; l < L; l++) layers[l].wq = hx_f32_tensor(&p, dim, dim);
    for (int l = 0; l < L; l++) layers[l].wk = hx_f32_tensor(&p, dim, kv_dim);
    for (int l = 0; l < L; l++) layers[l].wv = hx_f32_tensor(&p, dim, kv_dim);
    for (int l = 0; l < L; l++) layers[l].wo = hx_f32_tensor(&p, dim, dim);
    for (int l = 0; l < L; l++) layers[l].ffn_norm = hx_f32_tensor(&p, dim, 1);
    for (int l = 0; l < L; l++) layers[l].w_gate = hx_f32_tensor(&p, dim, hid);
    for (int l = 0; l < L; l++) layers[l].w_down = hx_f32_tensor(&p, hid, dim);
    for (int l = 0; l < L; l++) layers[l].w_up = hx_f32_tensor(&p, dim, hid);
    m->w.out_norm = hx_f32_tensor(&p, dim, 1);
    p += (int64_t)c->seq_len * c->head_size; // freq_cis_real and freq_cis_imag
    if (shared) {
        m->w.output = m->w.tok_embd;
        m->w.tied = 1;
    } else {
        m->w.output = hx_f32_tensor(&p, dim, V);
    }
    return 0;
}

// The checks of the header and the file size, then the tensors laid out in the file's fixed
// order — one read of the format from top to bottom, as llama2.c's run.c has it.
int hx_llama2c_load(struct hx_model *m, const char *path, char *err) {
    m->format = HX_FMT_LLAMA2C;
    int shared, rc = l2c_map(m, path, err);
    if (!rc) rc = l2c_header(m, path, &shared, err);
    if (!rc) rc = l2c_check_floats(m, path, shared, err);
    if (!rc) rc = l2c_tensors(m, path, shared, err);
    if (rc) return rc;
    char why[QP_ERRLEN];
    rc = kn_weights_check(&m->w, why);
    if (rc) return qp_fail(err, rc, "cannot read '%s': %s", path, why);
    return 0;
}
