// fuzz_util.c — helpers shared by the fuzz targets (see fuzz.h): failure reports, a scratch
// directory for the inputs the readers want as files, and checks of loaded models, tokenizers
// and task suites that the targets share.
//
// Depends on libc/POSIX, kernels/ (qp.h, kn_model.h, kn_types.h), the harness headers
// (model.h, gguf.h, tokenizer.h) and tasks/task.h (struct fields only); nothing else.
#include "fuzz.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hx_gguf.h"
#include "kn_model.h"
#include "kn_types.h"
#include "hx_model.h"
#include "qp.h"
#include "hx_tokenizer.h"
#include "task.h"

#define FZ_MAX_NAMES 32 // distinct scratch file names per process
#define FZ_NAME_LEN 64

// ---------------------------------------------------------------------------------------------
// AddressSanitizer's defaults for the libFuzzer binaries (ASAN_OPTIONS still overrides them).
// The default 256 MB quarantine keeps every freed block out of reuse, so that each input's
// allocations (tokenizer tables, BPE caches, model buffers) come from fresh pages the kernel must
// zero: in gguf_bpe a quarter of the time was clear_page (perf). An 8 MB quarantine still holds
// many inputs' worth of freed blocks (a use after free inside one input is caught as before) and
// made gguf_bpe about 2x faster (docs/FUZZ.md, "Speed").

#ifdef QP_LIBFUZZER
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "quarantine_size_mb=8"; }
#endif

// ---------------------------------------------------------------------------------------------
// Failures

void fuzz_fail(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "fuzz: %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

void fuzz_check_failed(const char *file, int line, const char *cond, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "fuzz: %s:%d: check failed: %s: ", file, line, cond);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

// ---------------------------------------------------------------------------------------------
// Scratch files

static char fz_dir[FUZZ_PATH_MAX - FZ_NAME_LEN - 2];
static char fz_names[FZ_MAX_NAMES][FZ_NAME_LEN];
static int fz_n_names;

static void fz_cleanup(void) {
    char path[FUZZ_PATH_MAX];
    for (int i = 0; i < fz_n_names; i++) {
        int n = snprintf(path, sizeof path, "%s/%s", fz_dir, fz_names[i]);
        if (n > 0 && (size_t)n < sizeof path) unlink(path);
    }
    rmdir(fz_dir);
}

static const char *fz_scratch_dir(void) {
    if (fz_dir[0]) return fz_dir;
    const char *root = getenv("QP_TMP");
    if (!root || !*root) root = getenv("TMPDIR");
    if (!root || !*root) root = P_tmpdir;
    int n = snprintf(fz_dir, sizeof fz_dir, "%s/qp-fuzz-XXXXXX", root);
    if (n < 0 || (size_t)n >= sizeof fz_dir)
        fuzz_fail(__FILE__, __LINE__, "scratch root '%s' is too long", root);
    if (!mkdtemp(fz_dir)) {
        int e = errno;
        fz_dir[0] = 0;
        fuzz_fail(__FILE__, __LINE__, "cannot create a scratch directory under '%s': %s", root,
                  strerror(e));
    }
    atexit(fz_cleanup);
    return fz_dir;
}

void fuzz_path(const char *name, char *path) {
    if (strlen(name) >= FZ_NAME_LEN || strchr(name, '/'))
        fuzz_fail(__FILE__, __LINE__, "bad scratch file name '%s'", name);
    const char *dir = fz_scratch_dir();
    int known = 0;
    for (int i = 0; i < fz_n_names && !known; i++) known = strcmp(fz_names[i], name) == 0;
    if (!known) {
        if (fz_n_names == FZ_MAX_NAMES)
            fuzz_fail(__FILE__, __LINE__, "more than %d scratch file names", FZ_MAX_NAMES);
        snprintf(fz_names[fz_n_names++], FZ_NAME_LEN, "%s", name);
    }
    int n = snprintf(path, FUZZ_PATH_MAX, "%s/%s", dir, name);
    if (n < 0 || n >= FUZZ_PATH_MAX) fuzz_fail(__FILE__, __LINE__, "scratch path too long");
}

void fuzz_write(const char *name, const void *data, size_t size, char *path) {
    fuzz_path(name, path);
    FILE *f = fopen(path, "wb");
    if (!f) fuzz_fail(__FILE__, __LINE__, "cannot write '%s': %s", path, strerror(errno));
    int bad = size > 0 && fwrite(data, 1, size, f) != size;
    if (fclose(f) != 0) bad = 1;
    if (bad) fuzz_fail(__FILE__, __LINE__, "cannot write '%s': %s", path, strerror(errno));
}

uint32_t fuzz_touch(const void *p, size_t n) {
    const volatile uint8_t *b = p;
    uint32_t sum = 0;
    for (size_t i = 0; i < n; i++) sum = sum * 31u + b[i];
    return sum;
}

// ---------------------------------------------------------------------------------------------
// UTF-8: RFC 3629 well-formed sequences (Table 3-7 of the Unicode standard, byte by byte),
// written apart from qprobe's qp_utf8_valid so that the two check each other.

int fuzz_utf8_ok(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t k;
        uint8_t lo = 0x80, hi = 0xbf;
        if (c < 0x80) k = 0;
        else if (c >= 0xc2 && c <= 0xdf) k = 1;
        else if (c >= 0xe0 && c <= 0xef) {
            k = 2;
            if (c == 0xe0) lo = 0xa0;       // overlong
            else if (c == 0xed) hi = 0x9f;  // surrogates
        } else if (c >= 0xf0 && c <= 0xf4) {
            k = 3;
            if (c == 0xf0) lo = 0x90;       // overlong
            else if (c == 0xf4) hi = 0x8f;  // above U+10FFFF
        } else return 0;
        if (n - i - 1 < k) return 0;
        for (size_t j = 1; j <= k; j++) {
            uint8_t b = s[i + j];
            if (b < (j == 1 ? lo : 0x80) || b > (j == 1 ? hi : 0xbf)) return 0;
        }
        i += k + 1;
    }
    return 1;
}

// ---------------------------------------------------------------------------------------------
// Tokenizers

// Encodes text with every flag combination and checks the ids.
static void fz_check_encode(const struct hx_tok *t, const char *text, size_t len) {
    int n_vocab = hx_tok_n_vocab(t);
    for (unsigned flags = 0; flags < 8; flags++) {
        int *ids = NULL;
        size_t n = 0;
        int rc = hx_tok_encode(t, text, len, flags, &ids, &n);
        FUZZ_CHECK(rc == 0, "encoding %zu bytes failed: %d", len, rc);
        FUZZ_CHECK(n <= 2 * len + 2, "%zu ids for %zu bytes", n, len);
        if ((flags & HX_TOK_ADD_BOS) && hx_tok_adds_bos(t)) FUZZ_CHECK(n >= 1 && ids[0] == hx_tok_bos(t), "no BOS");
        int prev = -1;
        for (size_t i = 0; i < n; i++) {
            FUZZ_CHECK(ids[i] >= 0 && ids[i] < n_vocab, "id %d at %zu outside vocabulary of %d",
                       ids[i], i, n_vocab);
            char piece[8];
            size_t got = hx_tok_piece(t, prev, ids[i], piece, sizeof piece);
            FUZZ_CHECK(got <= sizeof piece, "piece of %zu bytes into 8", got);
            prev = ids[i];
        }
        char *back = NULL;
        size_t back_len = 0;
        FUZZ_CHECK(hx_tok_decode(t, ids, n, flags, &back, &back_len) == 0 && back && back[back_len] == 0,
                   "decoding %zu ids failed", n);
        fuzz_touch(back, back_len);
        free(back);
        free(ids);
    }
}

void fuzz_check_tok(const struct hx_tok *t, const uint8_t *text, size_t len) {
    int n = hx_tok_n_vocab(t);
    FUZZ_CHECK(n > 0, "vocabulary of %d tokens", n);
    // -1: the vocabulary has none (BPE files often lack unk, Qwen2 a BOS).
    FUZZ_CHECK(hx_tok_bos(t) >= -1 && hx_tok_bos(t) < n, "bos %d", hx_tok_bos(t));
    FUZZ_CHECK(hx_tok_eos(t) >= -1 && hx_tok_eos(t) < n, "eos %d", hx_tok_eos(t));
    FUZZ_CHECK(hx_tok_unk(t) >= -1 && hx_tok_unk(t) < n, "unk %d", hx_tok_unk(t));
    FUZZ_CHECK(!hx_tok_adds_bos(t) || hx_tok_bos(t) >= 0, "adds a BOS it does not have");
    // Token strings are NUL-terminated copies; read each (bounded, so that huge forged
    // vocabularies stay fast) and ask for its piece after BOS and after another token.
    int limit = n < 4096 ? n : 4096;
    for (int id = 0; id < limit; id++) {
        size_t len_s = 0;
        const char *s = hx_tok_str(t, id, &len_s);
        FUZZ_CHECK(s != NULL && s[len_s] == '\0', "token %d not terminated", id);
        fuzz_touch(s, len_s);
        (void)hx_tok_score(t, id);
        (void)hx_tok_type(t, id);
        char piece[64];
        size_t got = hx_tok_piece(t, hx_tok_bos(t), id, piece, sizeof piece);
        FUZZ_CHECK(got <= sizeof piece, "piece of %zu bytes into %zu", got, sizeof piece);
        got = hx_tok_piece(t, -1, id, piece, 1);
        FUZZ_CHECK(got <= 1, "piece of %zu bytes into 1", got);
    }
    static const char sample[] = "Once upon a time, \xe2\x96\x81Lily saw a \xf0\x9f\x90\xb1\n\n"
                                 "<s> <0x41> \xff\xc3";
    fz_check_encode(t, sample, sizeof sample - 1);
    fz_check_encode(t, (const char *)text, len);
}

// ---------------------------------------------------------------------------------------------
// Models

// Checks one weight tensor: its bytes lie inside the model's mapping, inside the GGUF tensor
// holding the same data, or in a heap buffer (read in full, so AddressSanitizer sees overruns).
static void fz_check_tensor(const struct hx_model *m, const struct kn_tensor *t, const char *what,
                            int layer) {
    FUZZ_CHECK(t->data != NULL, "%s (layer %d) has no data", what, layer);
    FUZZ_CHECK(t->ne0 > 0 && t->ne1 > 0, "%s (layer %d) has shape %lld x %lld", what, layer,
               (long long)t->ne1, (long long)t->ne0);
    size_t row = kn_row_bytes(t->type, t->ne0), bytes;
    FUZZ_CHECK(row > 0, "%s (layer %d): row of %lld elements of type %d", what, layer,
               (long long)t->ne0, t->type);
    FUZZ_CHECK(qp_mul_overflow(row, (size_t)t->ne1, &bytes) == 0, "%s: byte size overflows", what);
    const uint8_t *p = t->data;
    if (m->map) {
        const uint8_t *lo = m->map, *hi = lo + m->map_len;
        if (p >= lo && p < hi) {
            FUZZ_CHECK(bytes <= (size_t)(hi - p), "%s (layer %d): %zu bytes at file offset %zu "
                       "run past the %zu-byte mapping", what, layer, bytes, (size_t)(p - lo),
                       m->map_len);
            fuzz_touch(p, bytes);
            return;
        }
    }
    if (m->gguf) {
        // GGUF tensors may share or overlap data: any one that starts here and is long enough.
        int64_t n = hx_gguf_n_tensors(m->gguf);
        for (int64_t i = 0; i < n; i++) {
            const struct hx_gguf_tensor *gt = hx_gguf_tensor(m->gguf, i);
            if (gt->data != t->data || bytes > gt->nbytes) continue;
            fuzz_touch(p, bytes);
            return;
        }
    }
    int owned = qp_owned_has(&m->owned, t->data);
    FUZZ_CHECK(owned, "%s (layer %d): %zu bytes neither inside the file nor in a buffer the "
               "model owns", what, layer, bytes);
    fuzz_touch(p, bytes);
}

void fuzz_check_model(const struct hx_model *m, size_t file_size) {
    char why[QP_ERRLEN];
    int rc = kn_weights_check(&m->w, why);
    FUZZ_CHECK(rc == 0, "accepted model fails kn_weights_check: %s", why);
    FUZZ_CHECK(m->map == NULL || m->map_len == file_size,
               "mapping of %zu bytes for a %zu-byte file", m->map_len, file_size);
    const struct kn_weights *w = &m->w;
    fz_check_tensor(m, &w->tok_embd, "token_embd", -1);
    fz_check_tensor(m, &w->out_norm, "output_norm", -1);
    fz_check_tensor(m, &w->output, "output", -1);
    FUZZ_CHECK(!w->tied || w->output.data == w->tok_embd.data, "tied but output has own data");
    for (int l = 0; l < w->cfg.n_layers; l++) {
        const struct kn_layer_weights *L = &w->layers[l];
        fz_check_tensor(m, &L->attn_norm, "attn_norm", l);
        fz_check_tensor(m, &L->wq, "attn_q", l);
        fz_check_tensor(m, &L->wk, "attn_k", l);
        fz_check_tensor(m, &L->wv, "attn_v", l);
        fz_check_tensor(m, &L->wo, "attn_output", l);
        fz_check_tensor(m, &L->ffn_norm, "ffn_norm", l);
        fz_check_tensor(m, &L->w_gate, "ffn_gate", l);
        fz_check_tensor(m, &L->w_down, "ffn_down", l);
        fz_check_tensor(m, &L->w_up, "ffn_up", l);
    }
    if (m->tok) {
        FUZZ_CHECK(hx_tok_n_vocab(m->tok) == w->cfg.vocab_size, "tokenizer has %d tokens, model %d",
                   hx_tok_n_vocab(m->tok), w->cfg.vocab_size);
        static const uint8_t text[] = "The cat sat.";
        fuzz_check_tok(m->tok, text, sizeof text - 1);
    }
}

int fuzz_check_suite(const struct task_suite *s) {
    for (int i = 0; i < s->n_items; i++) {
        const struct task_item *it = &s->items[i];
        FUZZ_CHECK(it->context != NULL && it->choices != NULL, "item %d without context or choices", i);
        if (s->kind == TASK_CLOZE) {
            FUZZ_CHECK(it->n_choices == 1 && it->choices[0][0], "cloze item %d without a target", i);
        } else {
            FUZZ_CHECK(it->n_choices >= 2 && it->gold >= 0 && it->gold < it->n_choices, "bad item %d", i);
            for (int k = 0; k < it->n_choices; k++) FUZZ_CHECK(it->choices[k][0], "empty choice in item %d", i);
        }
    }
    return s->n_items;
}
