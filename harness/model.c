// model.c — opens a model file of any supported format (model.h): detects the format, calls the
// format's loader, attaches the tokenizer, and owns every resource until hx_model_close.
#include "model.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gguf.h"
#include "qp.h"
#include "tokenizer.h"

int hx_model_own(struct hx_model *m, void *buf) {
    if (m->n_owned == m->cap_owned) {
        int cap = m->cap_owned ? 2 * m->cap_owned : 16;
        void **nb = realloc(m->owned, (size_t)cap * sizeof *nb);
        if (!nb) {
            qp_free(buf);
            return QP_ENOMEM;
        }
        m->owned = nb;
        m->cap_owned = cap;
    }
    m->owned[m->n_owned++] = buf;
    return 0;
}

void hx_model_close(struct hx_model *m) {
    if (!m) return;
    if (m->tok) hx_tok_destroy(m->tok);
    if (m->gguf) hx_gguf_close(m->gguf);
    if (m->map) munmap(m->map, m->map_len);
    for (int i = 0; i < m->n_owned; i++) qp_free(m->owned[i]);
    free(m->owned);
    free(m->path);
    free(m);
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
    if ((len > 12 && strcmp(path + len - 12, ".safetensors") == 0) || (n == 9 && head[8] == '{')) {
        *fmt = HX_FMT_SAFETENSORS;
        return 0;
    }
    *fmt = HX_FMT_LLAMA2C;
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
    if (rc) {
        hx_model_close(m);
        return rc;
    }
    if (tok_path) {
        struct hx_tok *t = NULL;
        rc = hx_tok_load_llama2c(tok_path, m->w.cfg.vocab_size, &t, err);
        if (rc) {
            hx_model_close(m);
            return rc;
        }
        if (m->tok) hx_tok_destroy(m->tok);
        m->tok = t;
    }
    *out = m;
    return 0;
}
