// model.c — opens a model file of any supported format (model.h): detects the format, calls the
// format's loader, attaches the tokenizer, and owns every resource until hx_model_close.
#include "hx_model.h"
#include "hx_model_load.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hx_gguf.h"
#include "kn_blocks.h"
#include "qp.h"
#include "hx_tokenizer.h"

// ---------------------------------------------------------------------------------------------
// The read-only file mappings of the open models, for hx_release_source: only pages proven to
// belong to one are ever dropped (MADV_DONTNEED on anonymous memory would zero it).

#define HX_MAX_MAPS 64

static struct hx_map_range {
    const struct hx_model *owner;
    uintptr_t lo, hi;
} hx_maps[HX_MAX_MAPS];
static int hx_n_maps;
static pthread_mutex_t hx_maps_lock = PTHREAD_MUTEX_INITIALIZER;

// Records m's mapping (beyond HX_MAX_MAPS open models their pages are simply never released).
static void hx_maps_add(const struct hx_model *m) {
    const void *p = m->map;
    size_t n = m->map_len;
    if (m->gguf) hx_gguf_mapping(m->gguf, &p, &n);
    if (!p || !n) return;
    pthread_mutex_lock(&hx_maps_lock);
    if (hx_n_maps < HX_MAX_MAPS)
        hx_maps[hx_n_maps++] = (struct hx_map_range){m, (uintptr_t)p, (uintptr_t)p + n};
    pthread_mutex_unlock(&hx_maps_lock);
}

static void hx_maps_remove(const struct hx_model *m) {
    pthread_mutex_lock(&hx_maps_lock);
    for (int i = 0; i < hx_n_maps; i++)
        if (hx_maps[i].owner == m) hx_maps[i--] = hx_maps[--hx_n_maps];
    pthread_mutex_unlock(&hx_maps_lock);
}

void hx_release_source(const void *p, size_t n) {
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    const uintptr_t lo = ((uintptr_t)p + page - 1) & ~(page - 1), hi = ((uintptr_t)p + n) & ~(page - 1);
    if (!p || hi <= lo) return;
    pthread_mutex_lock(&hx_maps_lock);
    for (int i = 0; i < hx_n_maps; i++)
        if (lo >= hx_maps[i].lo && hi <= hx_maps[i].hi) {
            madvise((void *)lo, hi - lo, MADV_DONTNEED);
            break;
        }
    pthread_mutex_unlock(&hx_maps_lock);
}

void hx_model_close(struct hx_model *m) {
    if (!m) return;
    hx_maps_remove(m);
    if (m->tok) hx_tok_destroy(m->tok);
    if (m->gguf) hx_gguf_close(m->gguf);
    if (m->map) munmap(m->map, m->map_len);
    qp_owned_free(&m->owned);
    free(m->path);
    free(m);
}

void hx_model_release_pages(struct hx_model *m) {
    if (m->gguf) hx_gguf_release_pages(m->gguf);
    if (m->map) madvise(m->map, m->map_len, MADV_DONTNEED); // PROT_READ mappings only (loaders)
}

// Reads the first bytes of a file to tell the formats apart.
static int hx_sniff(const char *path, enum hx_format *fmt, char *err) {
    struct stat st;
    if (stat(path, &st) != 0)
        return qp_fail(err, QP_EIO, "cannot read '%s': %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) {
        *fmt = HX_FMT_SAFETENSORS;
        return 0;
    }
    int fd = open(path, O_RDONLY);
    if (fd < 0) return qp_fail(err, QP_EIO, "cannot read '%s': %s", path, strerror(errno));
    unsigned char head[9] = {0};
    ssize_t n = read(fd, head, sizeof head);
    close(fd);
    if (n < 0) return qp_fail(err, QP_EIO, "cannot read '%s': %s", path, strerror(errno));
    if (n >= 4 && memcmp(head, "GGUF", 4) == 0) {
        *fmt = HX_FMT_GGUF;
        return 0;
    }
    size_t len = strlen(path);
    if (len > 5 && strcmp(path + len - 5, ".gguf") == 0) { // named GGUF: let its reader say what is wrong
        *fmt = HX_FMT_GGUF;
        return 0;
    }
    // A safetensors file starts with a u64 header length that fits the file, then '{'. The '{'
    // alone is not enough: a llama2.c header whose third int has that low byte looks the same.
    uint64_t hdr = 0;
    for (int i = 7; i >= 0; i--) hdr = hdr << 8 | head[i];
    int st_head = n == 9 && head[8] == '{' && hdr >= 2 && hdr <= (uint64_t)st.st_size - 8;
    if ((len > 12 && strcmp(path + len - 12, ".safetensors") == 0) || st_head) {
        *fmt = HX_FMT_SAFETENSORS;
        return 0;
    }
    *fmt = HX_FMT_LLAMA2C;
    return 0;
}

// Every weight of the model must be finite: a NaN or an infinity (from a broken conversion or a
// corrupt download) would silently poison every metric. Plain types are scanned in place,
// packed types row by row after dequantization (their fp16 scales can hold one too).
static int hx_check_tensor(const char *path, const char *name, const struct kn_tensor *t, char *err) {
    if (t->type != KN_F32 && !kn_type_has_dequant(t->type)) return 0; // cannot read: the engine refuses it later
    if (t->type == KN_F16 || t->type == KN_BF16) { // all-ones exponent = not finite: one pass of
        const uint16_t *h = t->data;              // integer tests, rows converted only to report
        uint16_t e = t->type == KN_F16 ? 0x7C00 : 0x7F80;
        unsigned bad = 0;
        for (int64_t i = 0; i < t->ne0 * t->ne1; i++) bad |= (h[i] & e) == e;
        if (!bad) return 0;
    }
    size_t rb = kn_row_bytes(t->type, t->ne0);
    float *row = t->type == KN_F32 ? NULL : malloc((size_t)t->ne0 * sizeof(float));
    if (t->type != KN_F32 && !row) return qp_fail(err, QP_ENOMEM, "cannot read '%s': out of memory", path);
    int rc = 0;
    for (int64_t r = 0; r < t->ne1 && !rc; r++) {
        const float *x = (const float *)((const uint8_t *)t->data + (size_t)r * rb);
        if (row) {
            kn_dequantize_row(t->type, (const uint8_t *)t->data + (size_t)r * rb, row, t->ne0);
            x = row;
        }
        for (int64_t c = 0; c < t->ne0; c++)
            if (!isfinite(x[c])) {
                rc = qp_fail(err, QP_EFORMAT, "cannot read '%s': tensor %s has %s at row %lld, column %lld", path,
                             name, isnan(x[c]) ? "a NaN" : "an infinite value", (long long)r, (long long)c);
                break;
            }
    }
    free(row);
    return rc;
}

static int hx_check_finite(const struct hx_model *m, char *err) {
    struct kn_weights w = m->w;
    int L = w.cfg.n_layers, n = HX_N_WEIGHTS(L), rc = 0;
    struct hx_weight_ref *refs = malloc((size_t)n * sizeof *refs);
    if (!refs) return qp_fail(err, QP_ENOMEM, "cannot read '%s': out of memory", m->path);
    hx_weight_refs(&w, refs);
    // Each matrix read here is released at once: this scan must not make the whole file resident
    // (the run may build a variant and never read most of it again; pages fault back cheaply).
    for (int i = 0; i < n && !rc; i++)
        if (!(i == 1 && w.tied)) {
            const struct kn_tensor *t = refs[i].t;
            rc = hx_check_tensor(m->path, refs[i].name, t, err);
            if (t->data) hx_release_source(t->data, kn_row_bytes(t->type, t->ne0) * (size_t)t->ne1);
        }
    for (int l = 0; l < L && !rc; l++) {
        const struct kn_layer_weights *lw = &w.layers[l];
        const struct {
            const char *tag;
            const struct kn_tensor *t;
        } vec[] = {{"attn_norm.weight", &lw->attn_norm},        {"ffn_norm.weight", &lw->ffn_norm},
                   {"attn_q.bias", &lw->bq},                   {"attn_k.bias", &lw->bk},
                   {"attn_v.bias", &lw->bv},                   {"post_attention_norm.weight", &lw->attn_post_norm},
                   {"post_ffw_norm.weight", &lw->ffn_post_norm}};
        for (size_t i = 0; i < QP_ARRAY_LEN(vec) && !rc; i++) {
            char name[80];
            snprintf(name, sizeof name, "blk.%d.%s", l, vec[i].tag);
            if (vec[i].t->data) rc = hx_check_tensor(m->path, name, vec[i].t, err);
        }
    }
    if (!rc) rc = hx_check_tensor(m->path, "output_norm.weight", &w.out_norm, err);
    const struct kn_tensor *rope[] = {&w.rope_freqs, &w.rope_short, &w.rope_long};
    static const char *rope_names[] = {"rope_freqs.weight", "rope_factors_short.weight", "rope_factors_long.weight"};
    for (int i = 0; i < 3 && !rc; i++) // a zero or negative divisor is as bad as a NaN
        if (rope[i]->data) {
            rc = hx_check_tensor(m->path, rope_names[i], rope[i], err);
            for (int64_t j = 0; !rc && j < rope[i]->ne0; j++)
                if (!(((const float *)rope[i]->data)[j] > 0))
                    rc = qp_fail(err, QP_EFORMAT, "cannot read '%s': tensor %s has a factor <= 0 at %lld", m->path,
                                 rope_names[i], (long long)j);
        }
    free(refs);
    return rc;
}

// The tokenizer given with -z, replacing the model's own: tokenizer.bin, tokenizer.json or a
// GGUF vocabulary, whose size must fit the embedding rows.
static int hx_model_tokenizer(struct hx_model *m, const char *tok_path, char *err) {
    struct hx_tok *t = NULL;
    int rows = m->w.cfg.vocab_size;
    int rc = hx_tok_open(tok_path, rows, &t, err);
    if (!rc && strcmp(hx_tok_source(t), "tokenizer.bin") == 0) {
        // tokenizer.bin does not store its size: a file that also loads with one token more
        // was made for a larger vocabulary (e.g. Llama 2's 32000 with a 512-token model), and
        // its first records would silently stand in for the model's tokens.
        struct hx_tok *more = NULL;
        char ignored[QP_ERRLEN];
        if (hx_tok_load_llama2c(tok_path, rows + 1, &more, ignored) == 0) {
            hx_tok_destroy(more);
            rc = qp_fail(err, QP_EFORMAT,
                         "cannot read '%s': it holds more than the model's %d tokens (a tokenizer for another model?)",
                         tok_path, rows);
        }
    } else if (!rc) {
        rc = hx_tok_fit_rows(t, rows, tok_path, err);
    }
    if (rc) {
        hx_tok_destroy(t);
        return rc;
    }
    if (m->tok) hx_tok_destroy(m->tok);
    m->tok = t;
    return 0;
}

int hx_model_open(const char *path, const char *tok_path, struct hx_model **out, char *err) {
    *out = NULL;
    enum hx_format fmt = HX_FMT_LLAMA2C;
    int rc = hx_sniff(path, &fmt, err);
    if (rc) return rc;
    struct hx_model *m = calloc(1, sizeof *m);
    if (!m || !(m->path = strdup(path))) {
        free(m);
        return qp_fail(err, QP_ENOMEM, "cannot read '%s': out of memory", path);
    }
    switch (fmt) {
    case HX_FMT_GGUF: rc = hx_gguf_model_load(m, path, err); break;
    case HX_FMT_SAFETENSORS: rc = hx_safetensors_load(m, path, err); break;
    case HX_FMT_LLAMA2C: rc = hx_llama2c_load(m, path, err); break;
    }
    if (!rc) hx_maps_add(m);
    if (!rc) rc = hx_check_finite(m, err);
    if (rc) {
        hx_model_close(m);
        return rc;
    }
    if (tok_path && (rc = hx_model_tokenizer(m, tok_path, err))) {
        hx_model_close(m);
        return rc;
    }
    *out = m;
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Naming the weights

void hx_tensor_name(char *buf, size_t cap, int layer, const char *what) {
    if (layer < 0) snprintf(buf, cap, "%s.weight", what);
    else snprintf(buf, cap, "blk.%d.%s.weight", layer, what);
}

void hx_weight_refs(struct kn_weights *w, struct hx_weight_ref *out) {
    static const char *what[] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};
    int k = 0;
    out[k] = (struct hx_weight_ref){.layer = -1, .what = "token_embd", .t = &w->tok_embd};
    hx_tensor_name(out[k].name, sizeof out[k].name, -1, "token_embd");
    k++;
    out[k] = (struct hx_weight_ref){.layer = -1, .what = "output", .t = &w->output};
    hx_tensor_name(out[k].name, sizeof out[k].name, -1, "output");
    k++;
    for (int l = 0; l < w->cfg.n_layers; l++) {
        struct kn_layer_weights *lw = &w->layers[l];
        struct kn_tensor *t[] = {&lw->wq, &lw->wk, &lw->wv, &lw->wo, &lw->w_gate, &lw->w_up, &lw->w_down};
        for (int i = 0; i < 7; i++, k++) {
            out[k] = (struct hx_weight_ref){.layer = l, .what = what[i], .t = t[i]};
            hx_tensor_name(out[k].name, sizeof out[k].name, l, what[i]);
        }
    }
}
