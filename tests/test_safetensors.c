// test_safetensors.c — tests of harness/io/hx_safetensors.c: the Q/K row permutation, loading files
// whose bytes the test lays out itself (F32 and BF16, tied and untied), write → load round
// trips (synthetic and the real llama2.c fixture model), and one case per malformed input.
//
// The hand-built files are written byte by byte here, independently of hx_safetensors_write, and
// the expected Q/K row order is a hard-coded table, independent of hx_permute_qk. Depends on
// harness/ (model.h, safetensors.h) and kernels/; must not use cJSON or the writer to make inputs.
#include "qp_test.h"

#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hx_model.h"
#include "hx_model_load.h"
#include "hx_safetensors.h"
#include "kn_model.h"
#include "qp.h"

// ---------------------------------------------------------------------------------------------
// The tiny model the hand-built files hold.

enum { DIM = 8, HID = 12, NL = 2, NH = 2, NKV = 1, HS = 4, KVD = NKV * HS, VOCAB = 16, SEQ = 32 };

// Interleaved row k of a head of 4 rows holds Hugging Face row QK_ROWS4[k] (worked by hand from
// the definition: interleaved row 2i + j <- HF row j * (HS / 2) + i).
static const int QK_ROWS4[4] = {0, 2, 1, 3};

// Element idx of tensor tid: multiples of 1/8 in [-3.75, 3.75], exact in F32, F16 and BF16, and
// different from row to row.
static float tv(int tid, int idx) { return (float)((tid * 37 + idx * 11) % 61 - 30) / 8.0f; }

struct tt {
    char name[80];
    int rank, rows, cols; // rank 1: rows == 1
    int tid;
};

static const char *LAYER_PARTS[9] = {
    "input_layernorm.weight",  "self_attn.q_proj.weight", "self_attn.k_proj.weight",
    "self_attn.v_proj.weight", "self_attn.o_proj.weight", "post_attention_layernorm.weight",
    "mlp.gate_proj.weight",    "mlp.up_proj.weight",      "mlp.down_proj.weight",
};
static const int LAYER_SHAPES[9][3] = {
    // rank, rows, cols
    {1, 1, DIM}, {2, DIM, DIM}, {2, KVD, DIM}, {2, KVD, DIM}, {2, DIM, DIM},
    {1, 1, DIM}, {2, HID, DIM}, {2, HID, DIM}, {2, DIM, HID},
};

// tid of layer l, part p
static int layer_tid(int l, int p) { return 3 + l * 9 + p; }

// The tensors of the tiny model, in a deliberately unsorted file order.
static int tiny_tensors(struct tt *ts, int with_lm_head) {
    int n = 0;
    for (int l = NL - 1; l >= 0; l--) {
        for (int p = 0; p < 9; p++) {
            snprintf(ts[n].name, sizeof ts[n].name, "model.layers.%d.%s", l, LAYER_PARTS[p]);
            ts[n].rank = LAYER_SHAPES[p][0];
            ts[n].rows = LAYER_SHAPES[p][1];
            ts[n].cols = LAYER_SHAPES[p][2];
            ts[n].tid = layer_tid(l, p);
            n++;
        }
    }
    ts[n++] = (struct tt){"model.norm.weight", 1, 1, DIM, 1};
    if (with_lm_head) ts[n++] = (struct tt){"lm_head.weight", 2, VOCAB, DIM, 2};
    ts[n++] = (struct tt){"model.embed_tokens.weight", 2, VOCAB, DIM, 0};
    return n;
}

struct build_opt {
    int bf16;              // BF16 instead of F32
    int tied;              // no lm_head.weight
    const char *bad_dtype; // this tensor is declared with dtype "Q4_X"
    const char *omit;      // this tensor is left out
    const char *past_end;  // this tensor's data_offsets point beyond the data buffer
    const char *bad_shape; // this tensor's shape disagrees with its data_offsets
};

static void put_le(FILE *f, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++) fputc((int)((v >> (8 * i)) & 0xff), f);
}

// Writes a safetensors file for the tiny model: u64 header length, header JSON padded with
// spaces to a multiple of 8, then each tensor's little-endian elements.
static void build_file(const char *path, const struct build_opt *o) {
    struct tt ts[32];
    int n = tiny_tensors(ts, !o->tied);
    int esize = o->bf16 ? 2 : 4;
    uint64_t total = 0;
    for (int i = 0; i < n; i++)
        if (!(o->omit && strcmp(ts[i].name, o->omit) == 0))
            total += (uint64_t)ts[i].rows * ts[i].cols * esize;

    static char hdr[16384];
    int len = snprintf(hdr, sizeof hdr, "{\"__metadata__\":{\"format\":\"pt\"}");
    uint64_t pos = 0;
    for (int i = 0; i < n; i++) {
        if (o->omit && strcmp(ts[i].name, o->omit) == 0) continue;
        uint64_t bytes = (uint64_t)ts[i].rows * ts[i].cols * esize;
        uint64_t b = pos, e = pos + bytes;
        if (o->past_end && strcmp(ts[i].name, o->past_end) == 0) b = total + 8, e = b + bytes;
        int cols = ts[i].cols;
        if (o->bad_shape && strcmp(ts[i].name, o->bad_shape) == 0) cols += 1;
        const char *dt = o->bf16 ? "BF16" : "F32";
        if (o->bad_dtype && strcmp(ts[i].name, o->bad_dtype) == 0) dt = "Q4_X";
        char shape[64];
        if (ts[i].rank == 2)
            snprintf(shape, sizeof shape, "[%d,%d]", ts[i].rows, cols);
        else
            snprintf(shape, sizeof shape, "[%d]", cols);
        len +=
            snprintf(hdr + len, sizeof hdr - (size_t)len,
                     ", \"%s\": {\"dtype\": \"%s\", \"shape\": %s, \"data_offsets\": [%llu, %llu]}",
                     ts[i].name, dt, shape, (unsigned long long)b, (unsigned long long)e);
        pos += bytes;
    }
    len += snprintf(hdr + len, sizeof hdr - (size_t)len, "}");
    while (len % 8) hdr[len++] = ' ';
    QP_CHECK(len < (int)sizeof hdr);

    FILE *f = fopen(path, "wb");
    QP_CHECK(f != NULL);
    put_le(f, (uint64_t)len, 8);
    fwrite(hdr, 1, (size_t)len, f);
    for (int i = 0; i < n; i++) {
        if (o->omit && strcmp(ts[i].name, o->omit) == 0) continue;
        for (int k = 0; k < ts[i].rows * ts[i].cols; k++) {
            float v = tv(ts[i].tid, k);
            uint32_t bits;
            memcpy(&bits, &v, 4);
            if (o->bf16) {
                QP_CHECK((bits & 0xffff) == 0); // exact in BF16
                put_le(f, bits >> 16, 2);
            } else {
                put_le(f, bits, 4);
            }
        }
    }
    QP_CHECK(fclose(f) == 0);
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    QP_CHECK(f != NULL);
    fputs(text, f);
    QP_CHECK(fclose(f) == 0);
}

// config.json for the tiny model. hidden: the "hidden_size" member with its comma, or "".
static void write_config(const char *dir, const char *hidden, int heads, int tied) {
    char text[1024], path[4096];
    snprintf(text, sizeof text,
             "{\n  \"architectures\": [\"LlamaForCausalLM\"],\n  %s\"intermediate_size\": %d,\n"
             "  \"num_hidden_layers\": %d,\n  \"num_attention_heads\": %d,\n"
             "  \"num_key_value_heads\": %d,\n  \"vocab_size\": %d,\n"
             "  \"max_position_embeddings\": %d,\n  \"rms_norm_eps\": 1e-05,\n"
             "  \"tie_word_embeddings\": %s,\n  \"torch_dtype\": \"float32\"\n}\n",
             hidden, HID, NL, heads, NKV, VOCAB, SEQ, tied ? "true" : "false");
    snprintf(path, sizeof path, "%s/config.json", dir);
    write_text(path, text);
}

// The text of a file with all whitespace removed (caller frees), to look for "key":value.
static char *read_squeezed(const char *path) {
    char *t = qpt_read_file(path, NULL);
    QP_CHECK_MSG(t != NULL, "cannot read '%s'", path);
    size_t k = 0;
    for (size_t i = 0; t[i]; i++)
        if (t[i] != ' ' && t[i] != '\t' && t[i] != '\n' && t[i] != '\r') t[k++] = t[i];
    t[k] = 0;
    return t;
}

static const char *join(const char *dir, const char *name) {
    static char buf[4][4096];
    static int k;
    char *b = buf[k++ % 4], t[4096];
    snprintf(t, sizeof t, "%s/%s", dir, name); // (dir may be an older result, in buf too)
    memcpy(b, t, sizeof t);
    return b;
}

static const char *subdir(const char *name) {
    const char *d = join(qpt_tmpdir(), name);
    QP_CHECK(mkdir(d, 0700) == 0);
    return d;
}

// Loads with hx_safetensors_load into a fresh model; NULL (and *rc, err) on failure.
static struct hx_model *load(const char *path, int *rc, char *err) {
    struct hx_model *m = calloc(1, sizeof *m);
    QP_CHECK(m != NULL);
    err[0] = 0;
    *rc = hx_safetensors_load(m, path, err);
    if (*rc) {
        QP_CHECK_MSG(strchr(err, '\n') == NULL, "message is not one line: %s", err);
        hx_model_close(m);
        return NULL;
    }
    return m;
}

// Loads path, which must succeed (the failure's message otherwise).
static struct hx_model *load_ok(const char *path) {
    char err[QP_ERRLEN];
    int rc;
    struct hx_model *m = load(path, &rc, err);
    QP_CHECK_MSG(m, "load failed: %s", err);
    return m;
}

// Writes w as safetensors of type into a new scratch folder "out", which must succeed; returns it.
static const char *write_out(const struct kn_weights *w, int type) {
    char err[QP_ERRLEN];
    const char *dir = subdir("out");
    QP_CHECK_MSG(hx_safetensors_write(w, dir, type, err) == 0, "write: %s", err);
    return dir;
}

// Element i of an F32/F16/BF16 tensor; BF16 decoded here by shifting, independently of qp.c.
static float tget(const struct kn_tensor *t, int64_t i) {
    const uint8_t *p = t->data;
    if (t->type == KN_F32) {
        float v;
        memcpy(&v, p + 4 * i, 4);
        return v;
    }
    uint16_t h;
    memcpy(&h, p + 2 * i, 2);
    if (t->type == KN_F16) return qp_fp16_to_fp32(h);
    QP_CHECK_INT_EQ(t->type, KN_BF16);
    uint32_t bits = (uint32_t)h << 16;
    float v;
    memcpy(&v, &bits, 4);
    return v;
}

// t must hold tensor tid with the given shape, rows in file order (or permuted for Q/K).
static void check_values(const struct kn_tensor *t, int type, int rows, int cols, int tid, int qk,
                         const char *what) {
    QP_CHECK_MSG(t->type == type, "%s: type %d, expected %d", what, t->type, type);
    QP_CHECK_MSG(t->ne0 == cols && t->ne1 == rows, "%s: shape (%lld, %lld)", what,
                 (long long)t->ne1, (long long)t->ne0);
    for (int r = 0; r < rows; r++) {
        int src = qk ? (r / HS) * HS + QK_ROWS4[r % HS] : r;
        for (int c = 0; c < cols; c++) {
            float got = tget(t, (int64_t)r * cols + c), want = tv(tid, src * cols + c);
            QP_CHECK_MSG(got == want, "%s[%d][%d] = %g, expected %g (source row %d)", what, r, c,
                         got, want, src);
        }
    }
}

static void check_tiny(const struct hx_model *m, int type, int tied) {
    const struct kn_config *c = &m->w.cfg;
    QP_CHECK_INT_EQ(m->format, HX_FMT_SAFETENSORS);
    QP_CHECK(m->tok == NULL);
    QP_CHECK_INT_EQ(c->dim, DIM);
    QP_CHECK_INT_EQ(c->hidden_dim, HID);
    QP_CHECK_INT_EQ(c->n_layers, NL);
    QP_CHECK_INT_EQ(c->n_heads, NH);
    QP_CHECK_INT_EQ(c->n_kv_heads, NKV);
    QP_CHECK_INT_EQ(c->vocab_size, VOCAB);
    QP_CHECK_INT_EQ(c->seq_len, SEQ);
    QP_CHECK_INT_EQ(c->head_size, HS);
    const struct kn_weights *w = &m->w;
    check_values(&w->tok_embd, type, VOCAB, DIM, 0, 0, "tok_embd");
    check_values(&w->out_norm, type, 1, DIM, 1, 0, "out_norm");
    QP_CHECK_INT_EQ(w->tied, tied);
    if (tied) {
        QP_CHECK(w->output.data == w->tok_embd.data);
        check_values(&w->output, type, VOCAB, DIM, 0, 0, "output");
    } else {
        check_values(&w->output, type, VOCAB, DIM, 2, 0, "output");
    }
    for (int l = 0; l < NL; l++) {
        const struct kn_layer_weights *lw = &w->layers[l];
        const struct kn_tensor *parts[9] = {&lw->attn_norm, &lw->wq,   &lw->wk,
                                            &lw->wv,        &lw->wo,   &lw->ffn_norm,
                                            &lw->w_gate,    &lw->w_up, &lw->w_down};
        for (int p = 0; p < 9; p++) {
            char what[64];
            snprintf(what, sizeof what, "layer %d %s", l, LAYER_PARTS[p]);
            int qk = p == 1 || p == 2; // Q and K: always F32, rows permuted
            check_values(parts[p], qk ? KN_F32 : type, LAYER_SHAPES[p][1], LAYER_SHAPES[p][2],
                         layer_tid(l, p), qk, what);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Permutation.

QP_TEST(permute_qk_should_match_hand_checked_orders) {
    // Rows filled with their own index.
    float src[16], dst[16];
    for (int r = 0; r < 16; r++) src[r] = (float)r;
    // head_size 4, two heads, HF -> interleaved: rows [0,2,1,3 | 4,6,5,7].
    hx_permute_qk(dst, src, 2, 4, 1, 0);
    const float want4[8] = {0, 2, 1, 3, 4, 6, 5, 7};
    for (int r = 0; r < 8; r++) QP_CHECK_INT_EQ(dst[r], want4[r]);
    // The same order back (for head_size 4 the permutation is its own inverse).
    hx_permute_qk(dst, src, 2, 4, 1, 1);
    for (int r = 0; r < 8; r++) QP_CHECK_INT_EQ(dst[r], want4[r]);
    // head_size 8, HF -> interleaved: interleaved 2i+j <- HF 4j+i.
    hx_permute_qk(dst, src, 2, 8, 1, 0);
    const float want8[16] = {0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15};
    for (int r = 0; r < 16; r++) QP_CHECK_INT_EQ(dst[r], want8[r]);
    // head_size 8, interleaved -> HF: HF 4j+i <- interleaved 2i+j.
    hx_permute_qk(dst, src, 2, 8, 1, 1);
    const float want8h[16] = {0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15};
    for (int r = 0; r < 16; r++) QP_CHECK_INT_EQ(dst[r], want8h[r]);
}

QP_TEST(permute_qk_should_be_identity_after_to_hf_and_back) {
    enum { H = 3, S = 6, N = 5 };
    float a[H * S * N], b[H * S * N], c[H * S * N];
    for (int i = 0; i < H * S * N; i++) a[i] = (float)(i * 7 % 23) - 11.5f + (float)i / 1024;
    hx_permute_qk(b, a, H, S, N, 1);
    QP_CHECK(memcmp(a, b, sizeof a) != 0);
    hx_permute_qk(c, b, H, S, N, 0);
    QP_CHECK(memcmp(a, c, sizeof a) == 0);
    hx_permute_qk(b, a, H, S, N, 0);
    hx_permute_qk(c, b, H, S, N, 1);
    QP_CHECK(memcmp(a, c, sizeof a) == 0);
}

// ---------------------------------------------------------------------------------------------
// Hand-built files.

QP_TEST(load_should_read_hand_built_f32_untied) {
    const char *dir = subdir("m");
    build_file(join(dir, "model.safetensors"), &(struct build_opt){0});
    write_config(dir, "\"hidden_size\": 8,\n  ", NH, 0);
    struct hx_model *m = load_ok(dir);
    check_tiny(m, KN_F32, 0);
    QP_CHECK(m->w.cfg.norm_eps == 1e-5f);
    QP_CHECK(m->w.cfg.rope_theta == 10000.0f); // default
    hx_model_close(m);
}

QP_TEST(load_should_read_hand_built_bf16_tied_from_file_path) {
    const char *dir = subdir("m");
    build_file(join(dir, "weights.safetensors"), &(struct build_opt){.bf16 = 1, .tied = 1});
    // model_type instead of architectures; defaults for rms_norm_eps and tie_word_embeddings
    // (tied because lm_head.weight is absent); rope_theta given.
    write_text(join(dir, "config.json"),
               "{\"model_type\": \"llama\", \"hidden_size\": 8, \"intermediate_size\": 12, "
               "\"num_hidden_layers\": 2, \"num_attention_heads\": 2, \"num_key_value_heads\": 1, "
               "\"vocab_size\": 16, \"max_position_embeddings\": 32, \"rope_theta\": 500000.0, "
               "\"rope_scaling\": null}");
    struct hx_model *m = load_ok(join(dir, "weights.safetensors"));
    check_tiny(m, KN_BF16, 1);
    QP_CHECK(m->w.cfg.norm_eps == 1e-6f);
    QP_CHECK(m->w.cfg.rope_theta == 500000.0f);
    // BF16 stays in place: bit patterns straight from the file.
    uint16_t h;
    memcpy(&h, m->w.tok_embd.data, 2);
    QP_CHECK_INT_EQ(h, 0xc070); // tv(0, 0) = -30/8 = -3.75 = -1.111b * 2^1: bf16 0xc070
    hx_model_close(m);
}

QP_TEST(load_should_tie_when_config_says_so_even_with_lm_head) {
    const char *dir = subdir("m");
    build_file(join(dir, "model.safetensors"), &(struct build_opt){0});
    write_config(dir, "\"hidden_size\": 8,\n  ", NH, 1);
    struct hx_model *m = load_ok(dir);
    check_tiny(m, KN_F32, 1);
    hx_model_close(m);
}

// ---------------------------------------------------------------------------------------------
// Write -> load round trips.

// BF16 tensors in place are copied as they are; Q/K (F32 after loading) go back to HF order.
QP_TEST(write_should_round_trip_a_loaded_bf16_model_as_bf16_and_f32) {
    const char *dir = subdir("m");
    build_file(join(dir, "model.safetensors"), &(struct build_opt){.bf16 = 1, .tied = 1});
    write_config(dir, "\"hidden_size\": 8,\n  ", NH, 1);
    struct hx_model *m = load_ok(dir);
    char err[QP_ERRLEN];
    int rc;
    const int types[2] = {KN_BF16, KN_F32};
    for (int k = 0; k < 2; k++) {
        const char *out = subdir(k ? "out32" : "out16");
        QP_CHECK_MSG(hx_safetensors_write(&m->w, out, types[k], err) == 0, "write: %s", err);
        struct hx_model *m2 = load(out, &rc, err);
        QP_CHECK_MSG(m2, "reload failed: %s", err);
        check_tiny(m2, types[k], 1);
        hx_model_close(m2);
    }
    hx_model_close(m);
}

// A kn_weights with its own storage.
struct mem_model {
    struct kn_weights w;
    struct kn_layer_weights layers[3];
    float *bufs[64];
    int nb;
};

static uint32_t lcg(uint32_t *s) {
    *s = *s * 1664525u + 1013904223u;
    return *s;
}

// raw: any 32-bit pattern (NaNs, infinities, subnormals included); else finite k/64 values.
static void mem_tensor(struct mem_model *mm, struct kn_tensor *t, int rows, int cols, int raw,
                       uint32_t *seed) {
    float *p = malloc(sizeof(float) * (size_t)rows * cols);
    QP_CHECK(p != NULL);
    for (int i = 0; i < rows * cols; i++) {
        uint32_t u = lcg(seed);
        if (raw)
            memcpy(&p[i], &u, 4);
        else
            p[i] = (float)((int)(u >> 16) % 2001 - 1000) / 64.0f;
    }
    mm->bufs[mm->nb++] = p;
    *t = (struct kn_tensor){KN_F32, cols, rows, p};
}

static void mem_model_init(struct mem_model *mm, int tied, int raw) {
    memset(mm, 0, sizeof *mm);
    struct kn_config *c = &mm->w.cfg;
    *c = (struct kn_config){.dim = 16,
                            .hidden_dim = 24,
                            .n_layers = 3,
                            .n_heads = 4,
                            .n_kv_heads = 2,
                            .vocab_size = 20,
                            .seq_len = 64,
                            .head_size = 4,
                            .norm_eps = 1e-5f,
                            .rope_theta = 10000.0f};
    uint32_t seed = 12345;
    int kv = c->n_kv_heads * c->head_size;
    mm->w.layers = mm->layers;
    mem_tensor(mm, &mm->w.tok_embd, c->vocab_size, c->dim, raw, &seed);
    mem_tensor(mm, &mm->w.out_norm, 1, c->dim, raw, &seed);
    if (tied)
        mm->w.output = mm->w.tok_embd;
    else
        mem_tensor(mm, &mm->w.output, c->vocab_size, c->dim, raw, &seed);
    mm->w.tied = tied;
    for (int l = 0; l < c->n_layers; l++) {
        struct kn_layer_weights *lw = &mm->layers[l];
        mem_tensor(mm, &lw->attn_norm, 1, c->dim, raw, &seed);
        mem_tensor(mm, &lw->wq, c->dim, c->dim, raw, &seed);
        mem_tensor(mm, &lw->wk, kv, c->dim, raw, &seed);
        mem_tensor(mm, &lw->wv, kv, c->dim, raw, &seed);
        mem_tensor(mm, &lw->wo, c->dim, c->dim, raw, &seed);
        mem_tensor(mm, &lw->ffn_norm, 1, c->dim, raw, &seed);
        mem_tensor(mm, &lw->w_gate, c->hidden_dim, c->dim, raw, &seed);
        mem_tensor(mm, &lw->w_down, c->dim, c->hidden_dim, raw, &seed);
        mem_tensor(mm, &lw->w_up, c->hidden_dim, c->dim, raw, &seed);
    }
}

static void mem_model_deinit(struct mem_model *mm) {
    for (int i = 0; i < mm->nb; i++) free(mm->bufs[i]);
}

static void check_same_tensor(const struct kn_tensor *a, const struct kn_tensor *b,
                              const char *what) {
    QP_CHECK_MSG(a->type == b->type && a->ne0 == b->ne0 && a->ne1 == b->ne1,
                 "%s: type/shape differ: %d (%lld, %lld) vs %d (%lld, %lld)", what, a->type,
                 (long long)a->ne1, (long long)a->ne0, b->type, (long long)b->ne1,
                 (long long)b->ne0);
    size_t bytes = kn_row_bytes(a->type, a->ne0) * (size_t)a->ne1;
    QP_CHECK_MSG(memcmp(a->data, b->data, bytes) == 0, "%s: data differ", what);
}

// Every tensor and hyperparameter of b equals a's, bit for bit.
static void check_same_weights(const struct kn_weights *a, const struct kn_weights *b) {
    QP_CHECK_INT_EQ(a->cfg.dim, b->cfg.dim);
    QP_CHECK_INT_EQ(a->cfg.hidden_dim, b->cfg.hidden_dim);
    QP_CHECK_INT_EQ(a->cfg.n_layers, b->cfg.n_layers);
    QP_CHECK_INT_EQ(a->cfg.n_heads, b->cfg.n_heads);
    QP_CHECK_INT_EQ(a->cfg.n_kv_heads, b->cfg.n_kv_heads);
    QP_CHECK_INT_EQ(a->cfg.vocab_size, b->cfg.vocab_size);
    QP_CHECK_INT_EQ(a->cfg.seq_len, b->cfg.seq_len);
    QP_CHECK_INT_EQ(a->cfg.head_size, b->cfg.head_size);
    QP_CHECK(a->cfg.norm_eps == b->cfg.norm_eps);
    QP_CHECK(a->cfg.rope_theta == b->cfg.rope_theta);
    QP_CHECK_INT_EQ(a->tied, b->tied);
    check_same_tensor(&a->tok_embd, &b->tok_embd, "tok_embd");
    check_same_tensor(&a->out_norm, &b->out_norm, "out_norm");
    check_same_tensor(&a->output, &b->output, "output");
    if (b->tied) QP_CHECK(b->output.data == b->tok_embd.data);
    for (int l = 0; l < a->cfg.n_layers; l++) {
        const struct kn_layer_weights *x = &a->layers[l], *y = &b->layers[l];
        char what[48];
#define SAME(f)                                                                                    \
    do {                                                                                           \
        snprintf(what, sizeof what, "layer %d " #f, l);                                            \
        check_same_tensor(&x->f, &y->f, what);                                                     \
    } while (0)
        SAME(attn_norm);
        SAME(wq);
        SAME(wk);
        SAME(wv);
        SAME(wo);
        SAME(ffn_norm);
        SAME(w_gate);
        SAME(w_down);
        SAME(w_up);
#undef SAME
    }
}

QP_TEST(write_then_load_should_be_bit_exact_for_f32_untied) {
    struct mem_model mm;
    mem_model_init(&mm, 0, 1);
    const char *dir = write_out(&mm.w, KN_F32);
    struct hx_model *m = load_ok(dir);
    check_same_weights(&mm.w, &m->w);
    hx_model_close(m);
    mem_model_deinit(&mm);
}

QP_TEST(write_then_load_should_be_bit_exact_for_f32_tied) {
    struct mem_model mm;
    mem_model_init(&mm, 1, 1);
    const char *dir = write_out(&mm.w, KN_F32);
    struct hx_model *m = load_ok(dir);
    check_same_weights(&mm.w, &m->w);
    hx_model_close(m);
    // config.json says tied, and no lm_head.weight was written.
    char *cfg = read_squeezed(join(dir, "config.json"));
    QP_CHECK(strstr(cfg, "\"tie_word_embeddings\":true"));
    QP_CHECK(strstr(cfg, "\"rms_norm_eps\":1e-05"));
    QP_CHECK(strstr(cfg, "\"torch_dtype\":\"float32\""));
    QP_CHECK(strstr(cfg, "\"architectures\":[\"LlamaForCausalLM\"]"));
    free(cfg);
    char *st = qpt_read_file(join(dir, "model.safetensors"), NULL);
    QP_CHECK(st && !strstr(st + 8, "lm_head"));
    free(st);
    mem_model_deinit(&mm);
}

QP_TEST(write_should_sort_tensors_and_pad_header_to_8_bytes) {
    struct mem_model mm;
    mem_model_init(&mm, 0, 0);
    const char *dir = write_out(&mm.w, KN_BF16);
    size_t len;
    char *st = qpt_read_file(join(dir, "model.safetensors"), &len);
    QP_CHECK(st && len > 8);
    uint64_t n = 0;
    for (int i = 0; i < 8; i++) n |= (uint64_t)(uint8_t)st[i] << (8 * i);
    QP_CHECK_INT_EQ(n % 8, 0);
    QP_CHECK(n + 8 <= len);
    // Names appear in strcmp order ("layers.10" would sort before "layers.2", as HF writes).
    const char *names[] = {"\"lm_head.weight\"",
                           "\"model.embed_tokens.weight\"",
                           "\"model.layers.0.input_layernorm.weight\"",
                           "\"model.layers.0.mlp.down_proj.weight\"",
                           "\"model.layers.0.self_attn.v_proj.weight\"",
                           "\"model.layers.1.input_layernorm.weight\"",
                           "\"model.layers.2.self_attn.v_proj.weight\"",
                           "\"model.norm.weight\""};
    char *hdr = strndup(st + 8, (size_t)n);
    const char *prev = hdr;
    for (size_t i = 0; i < QP_ARRAY_LEN(names); i++) {
        const char *at = strstr(hdr, names[i]);
        QP_CHECK_MSG(at && at > prev, "%s missing or out of order", names[i]);
        prev = at;
    }
    QP_CHECK(strstr(hdr, "\"dtype\":\"BF16\""));
    QP_CHECK(!strstr(hdr, "\"dtype\":\"F32\""));
    QP_CHECK(hdr[n - 1] == ' ' || hdr[n - 1] == '}');
    free(hdr);
    free(st);
    char *cfg = read_squeezed(join(dir, "config.json"));
    QP_CHECK(strstr(cfg, "\"torch_dtype\":\"bfloat16\""));
    QP_CHECK(strstr(cfg, "\"tie_word_embeddings\":false"));
    free(cfg);
    // No temporary files are left behind.
    QP_CHECK(access(join(dir, "model.safetensors.tmp"), F_OK) != 0);
    QP_CHECK(access(join(dir, "config.json.tmp"), F_OK) != 0);
    mem_model_deinit(&mm);
}

// F16 output: every value is the F16 rounding of the original (values chosen in F16 range).
QP_TEST(write_f16_then_load_should_round_each_value_to_f16) {
    struct mem_model mm;
    mem_model_init(&mm, 0, 0);
    const char *dir = write_out(&mm.w, KN_F16);
    struct hx_model *m = load_ok(dir);
    QP_CHECK_INT_EQ(m->w.tok_embd.type, KN_F16);
    QP_CHECK_INT_EQ(m->w.layers[0].wq.type, KN_F32); // Q/K converted on load
    const struct kn_tensor *pairs[][2] = {{&mm.w.tok_embd, &m->w.tok_embd},
                                          {&mm.w.output, &m->w.output},
                                          {&mm.w.layers[1].wq, &m->w.layers[1].wq},
                                          {&mm.w.layers[2].wk, &m->w.layers[2].wk},
                                          {&mm.w.layers[2].w_down, &m->w.layers[2].w_down}};
    for (size_t k = 0; k < QP_ARRAY_LEN(pairs); k++) {
        const struct kn_tensor *a = pairs[k][0], *b = pairs[k][1];
        QP_CHECK(a->ne0 == b->ne0 && a->ne1 == b->ne1);
        for (int64_t i = 0; i < a->ne0 * a->ne1; i++) {
            float x = ((const float *)a->data)[i];
            float want = qp_fp16_to_fp32(qp_fp32_to_fp16(x));
            QP_CHECK_MSG(tget(b, i) == want, "pair %zu element %lld: %g vs %g", k, (long long)i,
                         tget(b, i), want);
        }
    }
    hx_model_close(m);
    mem_model_deinit(&mm);
}

QP_TEST(write_should_refuse_types_other_than_f32_f16_bf16) {
    struct mem_model mm;
    mem_model_init(&mm, 0, 0);
    mm.layers[0].wv.type = KN_I32; // same row size as F32, so only the writer objects
    char err[QP_ERRLEN];
    const char *dir = subdir("out");
    QP_CHECK_INT_EQ(hx_safetensors_write(&mm.w, dir, KN_F32, err), QP_ENOTSUP);
    QP_CHECK_MSG(strstr(err, "model.layers.0.self_attn.v_proj.weight") && strstr(err, dir), "%s",
                 err);
    QP_CHECK(access(join(dir, "model.safetensors"), F_OK) != 0);
    mm.layers[0].wv.type = KN_F32;
    QP_CHECK_INT_EQ(hx_safetensors_write(&mm.w, dir, KN_Q8_0, err), QP_EINVAL);
    mem_model_deinit(&mm);
}

QP_TEST(write_should_fail_cleanly_into_a_missing_directory) {
    struct mem_model mm;
    mem_model_init(&mm, 0, 0);
    char err[QP_ERRLEN];
    const char *dir = join(qpt_tmpdir(), "no/such/dir");
    QP_CHECK_INT_EQ(hx_safetensors_write(&mm.w, dir, KN_F32, err), QP_EIO);
    QP_CHECK_MSG(strstr(err, dir) && strstr(err, "cannot write"), "%s", err);
    mem_model_deinit(&mm);
}

QP_TEST(write_then_load_should_reproduce_stories260K_bit_for_bit) {
    const char *path = qpt_fixture("models/llama2c/stories260K.bin");
    struct hx_model *src = NULL;
    char err[QP_ERRLEN];
    int rc = hx_model_open(path, NULL, &src, err);
    QP_CHECK_MSG(rc == 0, "open: %s", err);
    struct hx_model *m = load_ok(write_out(&src->w, KN_F32));
    check_same_weights(&src->w, &m->w);
    hx_model_close(m);
    hx_model_close(src);
}

// ---------------------------------------------------------------------------------------------
// Malformed inputs: each gives its error code and a one-line message naming the file.

static void expect_fail(const char *dir, int want_rc, const char *file, const char *phrase) {
    char err[QP_ERRLEN];
    int rc;
    struct hx_model *m = load(dir, &rc, err);
    QP_CHECK_MSG(m == NULL, "load of a malformed model succeeded");
    QP_CHECK_MSG(rc == want_rc, "rc %d (%s), expected %d; message: %s", rc, qp_strerror(rc),
                 want_rc, err);
    QP_CHECK_MSG(strstr(err, file) != NULL, "message does not name '%s': %s", file, err);
    QP_CHECK_MSG(strstr(err, phrase) != NULL, "message lacks '%s': %s", phrase, err);
}

// A directory with a good config.json and a model.safetensors built with o.
static const char *bad_model(const struct build_opt *o) {
    const char *dir = subdir("bad");
    build_file(join(dir, "model.safetensors"), o);
    write_config(dir, "\"hidden_size\": 8,\n  ", NH, 0);
    return dir;
}

QP_TEST(load_should_reject_header_length_beyond_file) {
    const char *dir = bad_model(&(struct build_opt){0});
    const char *st = join(dir, "model.safetensors");
    struct stat sb;
    QP_CHECK(stat(st, &sb) == 0);
    FILE *f = fopen(st, "r+b");
    QP_CHECK(f != NULL);
    put_le(f, (uint64_t)sb.st_size, 8); // 8 + N > file size
    fclose(f);
    expect_fail(dir, QP_EFORMAT, st, "header length");
}

QP_TEST(load_should_reject_header_that_is_not_json) {
    const char *dir = subdir("bad");
    write_config(dir, "\"hidden_size\": 8,\n  ", NH, 0);
    const char *st = join(dir, "model.safetensors");
    FILE *f = fopen(st, "wb");
    QP_CHECK(f != NULL);
    put_le(f, 16, 8);
    fputs("this is not json", f);
    fclose(f);
    expect_fail(dir, QP_EFORMAT, st, "not valid JSON");
}

QP_TEST(load_should_reject_tensor_offsets_past_end) {
    const char *dir =
        bad_model(&(struct build_opt){.past_end = "model.layers.1.self_attn.v_proj.weight"});
    expect_fail(dir, QP_EFORMAT, join(dir, "model.safetensors"), "extends past end of file");
    expect_fail(dir, QP_EFORMAT, join(dir, "model.safetensors"),
                "model.layers.1.self_attn.v_proj.weight");
}

QP_TEST(load_should_reject_offsets_inconsistent_with_shape) {
    const char *dir =
        bad_model(&(struct build_opt){.bad_shape = "model.layers.0.mlp.down_proj.weight"});
    expect_fail(dir, QP_EFORMAT, join(dir, "model.safetensors"),
                "model.layers.0.mlp.down_proj.weight");
    expect_fail(dir, QP_EFORMAT, join(dir, "model.safetensors"),
                "has 384 bytes of data, but dtype F32 and its shape need 416"); // 8*12*4, 8*13*4
}

QP_TEST(load_should_reject_unknown_dtype) {
    const char *dir = bad_model(&(struct build_opt){.bad_dtype = "model.norm.weight"});
    expect_fail(dir, QP_ENOTSUP, join(dir, "model.safetensors"), "unknown dtype 'Q4_X'");
}

QP_TEST(load_should_reject_missing_tensor) {
    const char *dir = bad_model(&(struct build_opt){.omit = "model.layers.1.mlp.up_proj.weight"});
    expect_fail(dir, QP_ENOENT, join(dir, "model.safetensors"),
                "tensor 'model.layers.1.mlp.up_proj.weight' is missing");
}

QP_TEST(load_should_reject_config_with_bad_json) {
    const char *dir = bad_model(&(struct build_opt){0});
    write_text(join(dir, "config.json"), "{\"hidden_size\": 8,, \"vocab_size\": 16}");
    expect_fail(dir, QP_EFORMAT, join(dir, "config.json"), "invalid JSON");
}

QP_TEST(load_should_reject_config_without_hidden_size) {
    const char *dir = bad_model(&(struct build_opt){0});
    write_config(dir, "", NH, 0);
    expect_fail(dir, QP_ENOENT, join(dir, "config.json"), "'hidden_size'");
}

QP_TEST(load_should_reject_config_with_wrongly_typed_key) {
    const char *dir = bad_model(&(struct build_opt){0});
    write_config(dir, "\"hidden_size\": \"8\",\n  ", NH, 0);
    expect_fail(dir, QP_EFORMAT, join(dir, "config.json"), "'hidden_size'");
}

QP_TEST(load_should_reject_config_with_heads_not_dividing_dim) {
    const char *dir = bad_model(&(struct build_opt){0});
    write_config(dir, "\"hidden_size\": 8,\n  ", 3, 0);
    expect_fail(dir, QP_ERANGE, join(dir, "config.json"), "cannot read '");
}
