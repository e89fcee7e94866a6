// make_seeds.c — writes the seed corpora of the fuzz targets (tests/fuzz/corpus/NAME/), small
// valid inputs the fuzzer mutates: a tiny Llama model (dim 4, hidden 4, 1 layer, 2 heads of
// size 2, 1 KV head, vocabulary 8, context 2) as a llama2.c checkpoint, as GGUF (F32 and F16,
// written by qprobe's GGUF model writer) and as safetensors (F32, BF16, F16 untied, written by
// qprobe's safetensors writer); its 8-token tokenizer.bin; a GGUF holding every value type and
// a few quantized tensors; truncated copies; spec strings and texts.
//
// Usage: make_seeds DIR   (make fuzz-seeds runs it on tests/fuzz/corpus). Files are
// overwritten; nothing else in DIR is touched. Exit status 0, or 1 with a message.
// Depends on harness/ (model.h, gguf.h, gguf_model.h, safetensors.h) and kernels/.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hx_gguf.h"
#include "hx_gguf_model.h"
#include "kn_blocks.h"
#include "kn_blocks_k.h"
#include "kn_types.h"
#include "hx_model.h"
#include "qp.h"
#include "hx_safetensors.h"

enum { DIM = 4, HID = 4, NL = 1, NH = 2, NKV = 1, HS = DIM / NH, VOCAB = 8, SEQ = 2 };

#define PATH_LEN 4096

// ---------------------------------------------------------------------------------------------
// Byte buffers and files

struct bytes {
    uint8_t *p;
    size_t n, cap;
};

static int put(struct bytes *b, const void *src, size_t n) {
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n) cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) return -1;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
    return 0;
}

static int put_i32(struct bytes *b, int32_t v) { return put(b, &v, 4); } // little-endian host
static int put_f32(struct bytes *b, float v) { return put(b, &v, 4); }

static int write_file(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "make_seeds: cannot write '%s': %s\n", path, strerror(errno));
        return -1;
    }
    int bad = n > 0 && fwrite(p, 1, n, f) != n;
    if (fclose(f) != 0 || bad) {
        fprintf(stderr, "make_seeds: cannot write '%s'\n", path);
        return -1;
    }
    return 0;
}

// Reads a whole file into b (appending).
static int read_into(const char *path, struct bytes *b) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "make_seeds: cannot read '%s': %s\n", path, strerror(errno));
        return -1;
    }
    uint8_t buf[4096];
    size_t got;
    int rc = 0;
    while (rc == 0 && (got = fread(buf, 1, sizeof buf, f)) > 0) rc = put(b, buf, got);
    fclose(f);
    return rc;
}

// Writes DIR/TARGET/NAME with the first n bytes of p.
static int seed(const char *dir, const char *target, const char *name, const void *p, size_t n) {
    char path[PATH_LEN];
    snprintf(path, sizeof path, "%s/%s", dir, target);
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "make_seeds: cannot create '%s': %s\n", path, strerror(errno));
        return -1;
    }
    snprintf(path, sizeof path, "%s/%s/%s", dir, target, name);
    return write_file(path, p, n);
}

// ---------------------------------------------------------------------------------------------
// The tiny model and tokenizer

// Weight i of the checkpoint: multiples of 1/8 in [-0.75, 0.75], exact in F16 and BF16.
static float weight(int i) { return (float)((i * 7) % 13 - 6) / 8.0f; }

// llama2.c checkpoint; untied: vocab_size stored negative and a classifier appended.
static int make_llama2c(struct bytes *b, int untied) {
    int32_t h[7] = {DIM, HID, NL, NH, NKV, untied ? -VOCAB : VOCAB, SEQ};
    int rc = 0;
    for (int i = 0; i < 7; i++) rc |= put_i32(b, h[i]);
    int kv = NKV * HS;
    int floats = VOCAB * DIM + NL * (2 * DIM + 2 * DIM * DIM + 2 * kv * DIM + 3 * HID * DIM) + DIM +
                 SEQ * HS + (untied ? VOCAB * DIM : 0);
    for (int i = 0; i < floats; i++) rc |= put_f32(b, weight(i));
    return rc;
}

// tokenizer.bin with VOCAB tokens; ids 0..2 are the specials llama2.c stores.
static int make_tokenizer(struct bytes *b) {
    static const char *const toks[VOCAB] = {"<unk>", "\n<s>\n", "\n</s>\n", " a", "a",
                                            " ",     "<0x41>", "b"};
    int rc = put_i32(b, 6);
    for (int i = 0; i < VOCAB; i++) {
        rc |= put_f32(b, (float)-i);
        rc |= put_i32(b, (int32_t)strlen(toks[i]));
        rc |= put(b, toks[i], strlen(toks[i]));
    }
    return rc;
}

// A GGUF with every value type, nested arrays, an alignment of 64 and a few quantized tensors.
static int make_values_gguf(const char *path, char *err) {
    struct hx_gguf_writer *w;
    if (hx_gguf_writer_create(&w)) return QP_ENOMEM;
    int rc = 0;
    rc |= hx_gguf_writer_set_u32(w, "general.alignment", 64);
    rc |= hx_gguf_writer_set_str(w, "general.architecture", "llama");
    rc |= hx_gguf_writer_set_i32(w, "i32", -7);
    rc |= hx_gguf_writer_set_u64(w, "u64", 1ull << 40);
    rc |= hx_gguf_writer_set_f32(w, "f32", 0.5f);
    rc |= hx_gguf_writer_set_bool(w, "bool", true);
    static const uint8_t u8[3] = {1, 2, 3};
    static const int16_t i16[2] = {-1, 300};
    static const double f64[2] = {1.5, -2.25};
    rc |= hx_gguf_writer_set_arr(w, "arr.u8", HX_GGUF_UINT8, u8, 3);
    rc |= hx_gguf_writer_set_arr(w, "arr.i16", HX_GGUF_INT16, i16, 2);
    rc |= hx_gguf_writer_set_arr(w, "arr.f64", HX_GGUF_FLOAT64, f64, 2);
    const char *strs[2] = {"x", "\xe2\x96\x81y"};
    size_t lens[2] = {1, 4};
    rc |= hx_gguf_writer_set_arr_str(w, "arr.str", strs, lens, 2);
    // An array of two arrays: [[int8 -1, 2], []].
    static const int8_t i8[2] = {-1, 2};
    struct hx_gguf_value inner[2] = {
        {.type = HX_GGUF_ARRAY, .v.arr = {.type = HX_GGUF_INT8, .n = 2, .data = (const void *)i8}},
        {.type = HX_GGUF_ARRAY, .v.arr = {.type = HX_GGUF_UINT16, .n = 0}},
    };
    struct hx_gguf_value outer = {.type = HX_GGUF_ARRAY,
                                  .v.arr = {.type = HX_GGUF_ARRAY, .n = 2, .items = inner}};
    rc |= hx_gguf_writer_set_value(w, "arr.nested", &outer);
    static uint8_t q8[sizeof(struct kn_block_q8_0)], q4k[sizeof(struct kn_block_q4_K)], f16[2 * 3 * 2];
    int64_t ne_q8[1] = {32}, ne_q4k[2] = {256, 1}, ne_f16[3] = {3, 2, 1};
    for (size_t i = 0; i < sizeof q8; i++) q8[i] = (uint8_t)(i * 5);
    for (size_t i = 0; i < sizeof q4k; i++) q4k[i] = (uint8_t)(i * 3);
    rc |= hx_gguf_writer_add_tensor(w, "q8", KN_Q8_0, 1, ne_q8, q8, sizeof q8);
    rc |= hx_gguf_writer_add_tensor(w, "q4k", KN_Q4_K, 2, ne_q4k, q4k, sizeof q4k);
    rc |= hx_gguf_writer_add_tensor(w, "f16", KN_F16, 3, ne_f16, f16, sizeof f16);
    if (rc == 0) rc = hx_gguf_writer_write(w, path, err);
    else rc = QP_EINVAL;
    hx_gguf_writer_destroy(w);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// Text seeds

static const char *const specs[] = {
    "q4_k",
    "q4_K_m;keep=embed,output",
    "rtn:bits=4:group=32:asym:clip=mse",
    "rtn:bits=8:channel:sym;act=q8",
    "nf4:dq",
    "fp4:group=128",
    "gptq:bits=4:group=128:asym:actorder:static:damp=0.1",
    "gptq:q4_k:damp=0.05",
    "awq:bits=3:group=64:asym",
    "smoothquant:alpha=0.75",
    "q8_0;act=q8;name~blk\\.[0-9]+\\.ffn_down=q6_k;keep=norm,attn_v",
    "bf16;name~^output=f32;name~(attn_q|attn_k)=iq4_nl",
};

// First byte: encoding flags (bit 0 BOS, bit 1 space prefix), then the text. Lengths are
// those of the literals: a text may hold NUL bytes.
#define TEXT(lit) {lit, sizeof lit - 1}
static const struct {
    const char *s;
    size_t n;
} texts[] = {
    TEXT("\x03Once upon a time, there was a little girl named Lily. She loved to play outside."),
    TEXT("\x01\xe2\x96\x81hello\n\nworld  \t tabs"),
    TEXT("\x00\xff\xfe\xc3(\xe2\x96"),
    TEXT("\x02\xe6\x97\xa5\xe6\x9c\xac text \xf0\x9f\x90\xb1 <s> <0x41>"),
};
#undef TEXT

// ---------------------------------------------------------------------------------------------
// Main

static int run(const char *out, const char *tmp) {
    char path[PATH_LEN], tok_path[PATH_LEN], err[QP_ERRLEN] = "";
    struct bytes ck = {0}, ck_untied = {0}, tok = {0};
    int rc = make_llama2c(&ck, 0) | make_llama2c(&ck_untied, 1) | make_tokenizer(&tok);
    if (rc) return -1;

    // llama2c: tied, untied, a header-only cut.
    rc |= seed(out, "llama2c", "tiny_tied.bin", ck.p, ck.n);
    rc |= seed(out, "llama2c", "tiny_untied.bin", ck_untied.p, ck_untied.n);
    rc |= seed(out, "llama2c", "tiny_cut.bin", ck.p, 40);
    // tokenizer_bin: the tokenizer and a cut in the middle of a record.
    rc |= seed(out, "tokenizer_bin", "tok8.bin", tok.p, tok.n);
    rc |= seed(out, "tokenizer_bin", "tok8_cut.bin", tok.p, tok.n - 3);
    if (rc) return -1;

    // The model through qprobe's loaders, then out through its writers.
    snprintf(path, sizeof path, "%s/tiny.bin", tmp);
    snprintf(tok_path, sizeof tok_path, "%s/tok.bin", tmp);
    if (write_file(path, ck.p, ck.n) || write_file(tok_path, tok.p, tok.n)) return -1;
    struct hx_model *m = NULL;
    if (hx_model_open(path, tok_path, &m, err)) {
        fprintf(stderr, "make_seeds: %s\n", err);
        return -1;
    }
    static const struct {
        const char *name;
        int type;
    } ggufs[] = {{"tiny_f32.gguf", KN_F32}, {"tiny_f16.gguf", KN_F16}};
    for (size_t i = 0; i < QP_ARRAY_LEN(ggufs) && rc == 0; i++) {
        struct bytes g = {0};
        snprintf(path, sizeof path, "%s/%s", tmp, ggufs[i].name);
        rc = hx_gguf_model_write(&m->w, m->tok, path, ggufs[i].type, err);
        if (rc == 0) rc = read_into(path, &g);
        if (rc == 0) rc = seed(out, "gguf", ggufs[i].name, g.p, g.n);
        if (rc == 0 && i == 0) {
            rc |= seed(out, "gguf", "tiny_f32_cut_header.gguf", g.p, 48);
            rc |= seed(out, "gguf", "tiny_f32_cut_half.gguf", g.p, g.n / 2);
        }
        free(g.p);
    }
    if (rc == 0) {
        struct bytes g = {0};
        snprintf(path, sizeof path, "%s/values.gguf", tmp);
        rc = make_values_gguf(path, err);
        if (rc == 0) rc = read_into(path, &g);
        if (rc == 0) rc = seed(out, "gguf", "values.gguf", g.p, g.n);
        free(g.p);
    }

    // safetensors: mode byte 0 = model only (the target's built-in config), 1 = config.json,
    // NUL, model.
    static const struct {
        const char *name;
        int type, untie, with_config;
    } sts[] = {
        {"tiny_f32", KN_F32, 0, 0},
        {"tiny_bf16_config", KN_BF16, 0, 1},
        {"tiny_f16_untied_config", KN_F16, 1, 1},
    };
    float *lm_head = NULL;
    for (size_t i = 0; i < QP_ARRAY_LEN(sts) && rc == 0; i++) {
        struct kn_weights w = m->w;
        if (sts[i].untie) { // a classifier of its own (the negated embedding)
            lm_head = malloc(sizeof(float) * VOCAB * DIM);
            if (!lm_head) return -1;
            for (int k = 0; k < VOCAB * DIM; k++) lm_head[k] = -((const float *)w.tok_embd.data)[k];
            w.output.data = lm_head;
            w.tied = 0;
        }
        snprintf(path, sizeof path, "%s/st%zu", tmp, i);
        if (mkdir(path, 0755) != 0 && errno != EEXIST) return -1;
        rc = hx_safetensors_write(&w, path, sts[i].type, err);
        struct bytes s = {0};
        uint8_t mode = (uint8_t)sts[i].with_config;
        rc = rc ? rc : put(&s, &mode, 1);
        char file[PATH_LEN + 32];
        if (rc == 0 && sts[i].with_config) {
            snprintf(file, sizeof file, "%s/config.json", path);
            uint8_t nul = 0;
            rc = read_into(file, &s);
            if (rc == 0) rc = put(&s, &nul, 1);
        }
        snprintf(file, sizeof file, "%s/model.safetensors", path);
        if (rc == 0) rc = read_into(file, &s);
        char name[64];
        snprintf(name, sizeof name, "%s.st", sts[i].name);
        if (rc == 0) rc = seed(out, "safetensors", name, s.p, s.n);
        free(s.p);
        free(lm_head);
        lm_head = NULL;
    }
    hx_model_close(m);
    if (rc) {
        fprintf(stderr, "make_seeds: %s\n", err[0] ? err : "cannot write a seed");
        return -1;
    }

    for (size_t i = 0; i < QP_ARRAY_LEN(specs) && rc == 0; i++) {
        char name[32];
        snprintf(name, sizeof name, "spec%02zu.txt", i);
        rc = seed(out, "spec", name, specs[i], strlen(specs[i]));
    }
    for (size_t i = 0; i < QP_ARRAY_LEN(texts) && rc == 0; i++) {
        char name[32];
        snprintf(name, sizeof name, "text%02zu.txt", i);
        rc = seed(out, "tokenize", name, texts[i].s, texts[i].n);
    }
    free(ck.p);
    free(ck_untied.p);
    free(tok.p);
    return rc ? -1 : 0;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: make_seeds DIR\n");
        return 1;
    }
    if (mkdir(argv[1], 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "make_seeds: cannot create '%s': %s\n", argv[1], strerror(errno));
        return 1;
    }
    const char *root = getenv("TMPDIR");
    char tmp[PATH_LEN / 4]; // short, so that the paths built from it always fit
    snprintf(tmp, sizeof tmp, "%s/qp-seeds-XXXXXX", root && *root ? root : P_tmpdir);
    if (!mkdtemp(tmp)) {
        fprintf(stderr, "make_seeds: cannot create a scratch directory: %s\n", strerror(errno));
        return 1;
    }
    int rc = run(argv[1], tmp);
    char cmd[PATH_LEN + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0) fprintf(stderr, "make_seeds: cannot remove '%s'\n", tmp);
    return rc ? 1 : 0;
}
