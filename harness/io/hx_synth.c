// synth.c — synthetic models of real shapes, of every family, as GGUF (synth.h).
//
// Random numbers are counter-based: element i of a tensor is a pure function of (seed, tensor,
// i), a splitmix64 finalizer applied to (counter * golden ratio) XOR (the tensor's key), so rows
// are generated in parallel in any order and the bytes do not depend on the thread count.
// Matrices are Student-t (ν = 5, by inversion of its closed-form CDF, tabulated once per run),
// standardized to unit variance and scaled by 1/sqrt(fan_in) as trained Llama matrices roughly
// are; q/k/v/gate/up get HX_SYNTH_N_OUTLIERS input channels (columns) multiplied by
// HX_SYNTH_OUTLIER_SCALE. Norm vectors are 1 plus a
// little t noise; the embedding is normal with standard deviation 0.02 (Llama's init range).
//
// The metadata follows llama.cpp's convert_hf_to_gguf.py for the family (key names and order),
// the tokenizer.* keys are copied verbatim from the vocabulary file (a tokenizer.json is converted
// to them first, sy_vocab_open), and qprobe.synth.*
// keys record how the file was made. Tensor names are llama.cpp's.
//
// Depends on kernels/ (qp.h, kn_types.h, kn_model.h), harness/io/hx_gguf.h, hx_gguf_model.h and
// hx_tokenizer.h (a tokenizer.json vocabulary is converted to GGUF keys).
#include "hx_synth.h"

#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "hx_gguf.h"
#include "hx_gguf_model.h"
#include "hx_tokenizer.h"
#include "kn_model.h"
#include "kn_types.h"
#include "qp.h"

#define SY_EMBD_STD 0.02f   // token embedding: normal, Llama's initializer_range
#define SY_NORM_NOISE 0.02f // norm weights: 1 + this * (unit-variance t)
#define SY_BIAS_SCALE 0.5f  // q/k/v biases: this * (unit-variance t)
#define SY_MAX_HALF 4096    // head_size / 2 of any shape
#define SY_CHUNK_ELEMS ((int64_t)1 << 21) // elements generated per write (8 MB of f32)
#define SY_MAX_LAYERS 1024
#define SY_GOLDEN 0x9e3779b97f4a7c15ull
#define SY_GENERATOR "splitmix64 counter hash, tabulated inverse CDF; qprobe synth v1"

// ---------------------------------------------------------------------------------------------
// Shapes: the one table (cmd_synth prints it for --help and --list-shapes)

#define SY_VOCAB_LLAMA_SPM "models/gguf/ggml-vocab-llama-spm.gguf"
#define SY_VOCAB_TINY "golden/ppl/stories260K-F32.gguf" // stories260K's 512 SentencePiece tokens
#define SY_VOCAB_PHI3 "models/gguf/ggml-vocab-phi-3.gguf"
// The byte-level BPE families' own tokenizer.json (converted to tokenizer.ggml.* keys as llama.cpp's
// converter writes them): Llama 3's 128256 tokens; Qwen3's, whose 151643-token vocabulary Qwen2.5
// shares (its added tokens go to 151668), padded with "[PAD<id>]" to Qwen2.5's 151936 rows.
#define SY_VOCAB_LLAMA3 "models/tokenizers/llama3/tokenizer.json"
#define SY_VOCAB_QWEN "models/tokenizers/qwen3/tokenizer.json"
// Gemma's own SentencePiece vocabulary is not in the fixtures: Gemma 2 gets Llama 2's SPM
// vocabulary padded to its 256000 rows (real text tokenizes, for speed measurements).

// The families' small test models (`--arch`): 512 tokens, 64 wide, GQA 4/2 heads, shapes that
// exercise each variant (Gemma 2: 26 layers, the only small count llama.cpp builds, and a head
// of 32 so that q_dim = 128 differs from dim; Phi-3: long RoPE factors in use above a context
// of 64; windows shorter than a 128-token context), with a classifier (or tied embedding) large
// enough that next-token distributions are peaked and a wrong sign or scale shows.
static const struct hx_synth_shape sy_shapes[] = {
    {"tinyllama-1.1b", "TinyLlama-1.1B: 22 layers, GQA 32/4 heads, 1.10 B weights",
     2048, 5632, 22, 32, 4, 2048, 32000, 1e-5f, 10000.0f, .vocab = SY_VOCAB_LLAMA_SPM},
    {"llama-7b-block", "Llama-2-7B's width in 2 layers (MHA 32/32), 0.67 B weights",
     4096, 11008, 2, 32, 32, 4096, 32000, 1e-5f, 10000.0f, .vocab = SY_VOCAB_LLAMA_SPM},
    {"llama-2-7b", "Llama-2-7B: 32 layers, MHA 32/32, 6.74 B weights (F16: 13.5 GB)",
     4096, 11008, 32, 32, 32, 4096, 32000, 1e-5f, 10000.0f, .vocab = SY_VOCAB_LLAMA_SPM},
    {"test-tiny", "for tests: dim 64, 2 layers, GQA 4/2 heads, 4.1 M weights (mostly vocab)",
     64, 172, 2, 4, 2, 512, 32000, 1e-5f, 10000.0f, .vocab = SY_VOCAB_LLAMA_SPM},
    {"llama-3.2-1b", "Llama-3.2-1B: 16 layers, GQA 32/8, tied, Llama 3 RoPE scaling, 1.24 B weights",
     2048, 8192, 16, 32, 8, 131072, 128256, 1e-5f, 500000.0f, KN_ARCH_LLAMA, .tied = 1, .llama3_rope = 32.0f,
     .vocab = SY_VOCAB_LLAMA3},
    {"llama-3-8b-block", "Llama-3-8B's width in 2 layers (GQA 32/8), 1.9 B weights (vocab 128256)",
     4096, 14336, 2, 32, 8, 8192, 128256, 1e-5f, 500000.0f, KN_ARCH_LLAMA, .vocab = SY_VOCAB_LLAMA3},
    {"qwen2.5-0.5b", "Qwen2.5-0.5B: 24 layers, GQA 14/2, q/k/v biases, tied, 0.49 B weights",
     896, 4864, 24, 14, 2, 32768, 151936, 1e-6f, 1000000.0f, KN_ARCH_QWEN2, .tied = 1, .vocab = SY_VOCAB_QWEN},
    {"qwen2.5-1.5b", "Qwen2.5-1.5B: 28 layers, GQA 12/2, q/k/v biases, tied, 1.54 B weights",
     1536, 8960, 28, 12, 2, 32768, 151936, 1e-6f, 1000000.0f, KN_ARCH_QWEN2, .tied = 1, .vocab = SY_VOCAB_QWEN},
    {"phi-3-mini", "Phi-3-mini-4k: 32 layers, MHA 32/32, fused qkv and gate/up, window 2047, 3.82 B weights",
     3072, 8192, 32, 32, 32, 4096, 32064, 1e-5f, 10000.0f, KN_ARCH_PHI3, .swa_window = 2047, .vocab = SY_VOCAB_PHI3},
    {"gemma-2-2b", "Gemma-2-2B: 26 layers, GQA 8/4, head 256, post-norms, soft-caps, 2.61 B weights",
     2304, 9216, 26, 8, 4, 8192, 256000, 1e-6f, 10000.0f, KN_ARCH_GEMMA2, .head_size = 256, .tied = 1,
     .swa_window = 4096, .attn_softcap = 50.0f, .final_softcap = 30.0f, .vocab = SY_VOCAB_LLAMA_SPM, .pad_vocab = 1},
    {"llama-tiny", "test model (synth --arch llama): Llama 3 RoPE scaling, theta 5e5, GQA, tied",
     64, 160, 2, 4, 2, 256, 512, 1e-5f, 500000.0f, KN_ARCH_LLAMA, .tied = 1, .llama3_rope = 8.0f,
     .embd_std = 0.5f, .vocab = SY_VOCAB_TINY},
    {"qwen2-tiny", "test model (synth --arch qwen2): q/k/v biases, rotate-half RoPE, tied",
     64, 160, 2, 4, 2, 256, 512, 1e-6f, 1000000.0f, KN_ARCH_QWEN2, .tied = 1, .embd_std = 0.5f,
     .vocab = SY_VOCAB_TINY},
    {"phi3-tiny", "test model (synth --arch phi3): fused qkv and gate/up, window 40, long/short RoPE",
     64, 160, 2, 4, 2, 256, 512, 1e-5f, 10000.0f, KN_ARCH_PHI3, .rope_ctx_orig = 64, .swa_window = 40,
     .out_gain = 4.0f, .vocab = SY_VOCAB_TINY},
    {"gemma2-tiny", "test model (synth --arch gemma2): 26 layers, head 32, post-norms, caps 3/10, window 32",
     64, 128, 26, 4, 2, 256, 512, 1e-6f, 10000.0f, KN_ARCH_GEMMA2, .head_size = 32, .tied = 1, .swa_window = 32,
     .attn_softcap = 3.0f, .final_softcap = 10.0f, .embd_std = 0.125f, .out_gain = 4.0f, .vocab = SY_VOCAB_TINY},
};

const struct hx_synth_shape *hx_synth_arch_shape(const char *arch) {
    static const char *const names[][2] = {
        {"llama", "llama-tiny"}, {"qwen2", "qwen2-tiny"}, {"phi3", "phi3-tiny"}, {"gemma2", "gemma2-tiny"}};
    for (size_t i = 0; i < QP_ARRAY_LEN(names); i++)
        if (strcmp(arch, names[i][0]) == 0) return hx_synth_shape_find(names[i][1]);
    return NULL;
}

const struct hx_synth_shape *hx_synth_shapes(int *n) {
    *n = (int)QP_ARRAY_LEN(sy_shapes);
    return sy_shapes;
}

const struct hx_synth_shape *hx_synth_shape_find(const char *name) {
    for (size_t i = 0; i < QP_ARRAY_LEN(sy_shapes); i++)
        if (strcmp(sy_shapes[i].name, name) == 0) return &sy_shapes[i];
    return NULL;
}

// ---------------------------------------------------------------------------------------------
// Random numbers

// splitmix64's output function: a bijection of 64-bit words with full avalanche.
static inline uint64_t sy_mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// The key of random stream `stream` (a tensor) under seed.
static uint64_t sy_key(uint64_t seed, uint64_t stream) {
    return sy_mix(sy_mix(seed + SY_GOLDEN) ^ sy_mix(stream * SY_GOLDEN + 0x632be59bd9b4e019ull));
}

// Word number ctr of a stream. XOR (not addition) with the key keeps different tensors'
// counter ranges from lining up as shifted copies of one sequence.
static inline uint64_t sy_bits(uint64_t key, uint64_t ctr) {
    return sy_mix((ctr * SY_GOLDEN) ^ key);
}

// Draws are by inversion: a uniform e in (0, 1) from 32 bits of a word is the two-sided tail
// probability P(|X| > x), the sign is another bit. The quantile x(e) is read from a table in
// "octave" coordinates, exact at e = 2^-k (1 + j/64) for k = 1..33, j = 0..64, linear in
// between: the octave and the sub-step come straight out of e's double bits, so a draw is one
// hash, one lookup and one lerp (no rejection, no libm call), and the tails are resolved down
// to e = 2^-33 (|t| ≈ 175 for ν = 5, 6.4 for the normal); the relative interpolation error
// is below 3e-5.
#define SY_OCTAVES 33
#define SY_SUB 64

struct sy_qtab {
    float v[SY_OCTAVES][SY_SUB + 1]; // v[k-1][j] = x(2^-k (1 + j/64)), unit variance
};

// Two-sided tails P(|X| > x) of Student-t with 5 degrees of freedom (closed form for odd ν:
// F = 1/2 + (θ + sin θ (cos θ + 2/3 cos³ θ)) / π, θ = atan(x / sqrt 5)) and of the normal.
static double sy_tail_t5(double x) {
    double th = atan(x / sqrt(5.0)), c = cos(th);
    return 1.0 - 2.0 / M_PI * (th + sin(th) * (c + 2.0 / 3.0 * c * c * c));
}

static double sy_tail_normal(double x) { return erfc(x / sqrt(2.0)); }

// Fills q by bisection on tail (decreasing from 1 at 0 to below 2^-33 at hi), scaled by unit.
static void sy_qtab_init(struct sy_qtab *q, double (*tail)(double), double hi, double unit) {
    for (int k = 1; k <= SY_OCTAVES; k++) {
        for (int j = 0; j <= SY_SUB; j++) {
            double e = ldexp(1.0 + (double)j / SY_SUB, -k), lo = 0.0, up = hi;
            for (int it = 0; it < 80; it++) {
                double mid = 0.5 * (lo + up);
                if (tail(mid) > e) lo = mid;
                else up = mid;
            }
            q->v[k - 1][j] = (float)(unit * 0.5 * (lo + up));
        }
    }
}

// Draw number ctr of a stream from the distribution tabulated in q.
static inline float sy_draw(const struct sy_qtab *q, uint64_t key, uint64_t ctr) {
    uint64_t b = sy_bits(key, ctr);
    double e = ((double)(uint32_t)b + 0.5) * 0x1p-32; // exact: 2^-33 .. 1 - 2^-33
    uint64_t eb;
    memcpy(&eb, &e, sizeof eb);
    int k = 1023 - (int)(eb >> 52);                   // e in [2^-k, 2^-k+1), k = 1..33
    uint64_t mant = eb & ((1ull << 52) - 1);
    int j = (int)(mant >> 46);                        // top 6 bits: the sub-step
    float w = (float)(mant & ((1ull << 46) - 1)) * 0x1p-46f;
    const float *row = q->v[k - 1];
    float x = row[j] + w * (row[j + 1] - row[j]);
    return (b >> 63) ? -x : x;
}

void hx_synth_outliers(uint64_t seed, int dim, int out[HX_SYNTH_N_OUTLIERS]) {
    QP_ASSERT(dim >= HX_SYNTH_N_OUTLIERS);
    uint64_t key = sy_key(seed, UINT64_MAX); // a stream no tensor uses
    int n = 0;
    for (uint64_t ctr = 0; n < HX_SYNTH_N_OUTLIERS; ctr++) {
        int c = (int)(sy_bits(key, ctr) % (uint64_t)dim);
        int dup = 0;
        for (int k = 0; k < n; k++) dup |= out[k] == c;
        if (dup) continue;
        int k = n++;
        for (; k > 0 && out[k - 1] > c; k--) out[k] = out[k - 1]; // keep ascending
        out[k] = c;
    }
}

// ---------------------------------------------------------------------------------------------
// Tensors

enum sy_kind {
    SY_EMBD, SY_ATTN_NORM, SY_Q, SY_K, SY_V, SY_O, SY_FFN_NORM, SY_GATE, SY_UP, SY_DOWN,
    SY_OUT_NORM, SY_OUTPUT, SY_BQ, SY_BK, SY_BV, SY_POST_ATTN, SY_POST_FFN,
    SY_FIXED, // values computed, not drawn (RoPE factors)
};

#define SY_MAX_PARTS 3

// A tensor to generate: one kind, or the row-wise concatenation of parts (a fused attn_qkv or
// gate/up), each part drawn exactly as its unfused tensor would be.
struct sy_tensor {
    char name[48];
    enum sy_kind kind;
    int64_t ne0;  // input width (contiguous)
    int64_t ne1;  // rows (outputs); 1 for vectors
    int type;     // stored type
    uint64_t key; // its random stream
    float gain;   // embedding: its standard deviation; matrices and biases: a multiplier
    const float *fixed; // SY_FIXED: the values (ne0)
    int n_parts;  // > 0: fused
    struct { enum sy_kind kind; int64_t rows; uint64_t key; } part[SY_MAX_PARTS];
};

static int sy_is_norm(enum sy_kind k) {
    return k == SY_ATTN_NORM || k == SY_FFN_NORM || k == SY_OUT_NORM || k == SY_POST_ATTN || k == SY_POST_FFN;
}

static int sy_is_vector(enum sy_kind k) {
    return sy_is_norm(k) || k == SY_BQ || k == SY_BK || k == SY_BV || k == SY_FIXED;
}

static int sy_has_outliers(enum sy_kind k) {
    return k == SY_Q || k == SY_K || k == SY_V || k == SY_GATE || k == SY_UP;
}

// The two distributions, unit variance: matrices and norms draw from t5, the embedding from
// the normal.
struct sy_dists {
    struct sy_qtab t5, normal;
};

_Static_assert(HX_SYNTH_DOF == 5, "sy_tail_t5 is the closed form for 5 degrees of freedom");

static void sy_dists_init(struct sy_dists *d) {
    // t5's variance is ν/(ν-2) = 5/3; 1e4 and 12 lie beyond the 2^-33 tails.
    sy_qtab_init(&d->t5, sy_tail_t5, 1e4, sqrt(3.0 / 5.0));
    sy_qtab_init(&d->normal, sy_tail_normal, 12.0, 1.0);
}

// Row `row` of an unfused tensor of this kind, key and width into out.
static void sy_row_of(const struct sy_dists *d, enum sy_kind kind, uint64_t key, int64_t ne0, float gain,
                      int64_t row, const uint8_t *outlier, float *out) {
    uint64_t base = (uint64_t)row * (uint64_t)ne0;
    if (kind == SY_EMBD) {
        float sd = gain > 0 ? gain : SY_EMBD_STD;
        for (int64_t c = 0; c < ne0; c++) out[c] = sd * sy_draw(&d->normal, key, base + (uint64_t)c);
    } else if (sy_is_norm(kind)) {
        float g = gain > 0 ? gain : 1.0f;
        for (int64_t c = 0; c < ne0; c++)
            out[c] = g * (1.0f + SY_NORM_NOISE * sy_draw(&d->t5, key, base + (uint64_t)c));
    } else if (kind == SY_BQ || kind == SY_BK || kind == SY_BV) {
        for (int64_t c = 0; c < ne0; c++) out[c] = SY_BIAS_SCALE * sy_draw(&d->t5, key, base + (uint64_t)c);
    } else {
        float s = (gain > 0 ? gain : 1.0f) / sqrtf((float)ne0);
        int planted = sy_has_outliers(kind);
        for (int64_t c = 0; c < ne0; c++) {
            float x = s * sy_draw(&d->t5, key, base + (uint64_t)c);
            out[c] = planted && outlier[c] ? x * HX_SYNTH_OUTLIER_SCALE : x;
        }
    }
}

// Row `row` of t into out (t->ne0 floats). outlier: (ne0) 1 for the planted input channels.
static void sy_row(const struct sy_dists *d, const struct sy_tensor *t, int64_t row,
                   const uint8_t *outlier, float *out) {
    if (t->kind == SY_FIXED) {
        memcpy(out, t->fixed, (size_t)t->ne0 * sizeof(float));
        return;
    }
    if (!t->n_parts) {
        sy_row_of(d, t->kind, t->key, t->ne0, t->gain, row, outlier, out);
        return;
    }
    int p = 0;
    while (row >= t->part[p].rows) row -= t->part[p++].rows;
    sy_row_of(d, t->part[p].kind, t->part[p].key, t->ne0, t->gain, row, outlier, out);
}

// The RoPE factor vectors of a shape (head_size / 2 each): Llama 3's rope_freqs as
// convert_hf_to_gguf.py computes them (factor, low 1, high 4, original context 8192); Phi-3-like
// short factors near 1 and long factors growing to 4 over the low frequencies.
struct sy_rope {
    float freqs[SY_MAX_HALF], shorts[SY_MAX_HALF], longs[SY_MAX_HALF];
};

static void sy_rope_init(struct sy_rope *r, const struct hx_synth_shape *sh, int head_size) {
    int half = head_size / 2;
    for (int i = 0; i < half; i++) {
        double freq = 1.0 / pow(sh->rope_theta, 2.0 * i / head_size), wavelen = 2 * M_PI / freq;
        double f = sh->llama3_rope, old = 8192, low = old / 1.0, high = old / 4.0, smooth = (old / wavelen - 1) / (4 - 1);
        r->freqs[i] = (float)(wavelen < high ? 1.0 : wavelen > low ? f : 1.0 / ((1 - smooth) / f + smooth));
        double u = half > 1 ? (double)i / (half - 1) : 0;
        r->shorts[i] = (float)(1.0 + 0.05 * u);
        r->longs[i] = (float)(1.0 + 3.0 * u * u);
    }
}

// The tensor list being built: room for n (sy_tensors counts), i used.
struct sy_list {
    struct sy_tensor *ts;
    int i, n;
    uint64_t seed;
    int type; // the stored type of matrices
};

// The random stream of tensor kind in layer (-1: not in a layer). The Llama 2 kinds keep their
// streams from before the families came (same seed, same bytes); the newer kinds have a range
// of their own.
static uint64_t sy_key_of(uint64_t seed, enum sy_kind kind, int layer) {
    int newer = kind >= 16 || kind == SY_BQ || kind == SY_BK || kind == SY_BV;
    return sy_key(seed, (newer ? (1ull << 40) : 0) + (uint64_t)(layer + 1) * 16 + (uint64_t)kind);
}

// Appends tensor (name printf-style) of kind in layer, ne0 wide and ne1 rows; returns it.
static struct sy_tensor *sy_add(struct sy_list *L, enum sy_kind kind, int layer, int64_t ne0, int64_t ne1,
                                const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static struct sy_tensor *sy_add(struct sy_list *L, enum sy_kind kind, int layer, int64_t ne0, int64_t ne1,
                                const char *fmt, ...) {
    QP_ASSERT(L->i < L->n);
    struct sy_tensor *t = &L->ts[L->i++];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
    t->kind = kind;
    t->ne0 = ne0;
    t->ne1 = ne1;
    t->type = sy_is_vector(kind) ? KN_F32 : L->type;
    t->key = sy_key_of(L->seed, kind, layer);
    return t;
}

// Makes t a fused tensor of n parts of layer: kinds[k] with rows[k] rows each, in that order.
static void sy_fuse(const struct sy_list *L, struct sy_tensor *t, int layer, const enum sy_kind *kinds,
                    const int64_t *rows, int n) {
    t->n_parts = n;
    for (int k = 0; k < n; k++) {
        t->part[k].kind = kinds[k];
        t->part[k].rows = rows[k];
        t->part[k].key = sy_key_of(L->seed, kinds[k], layer);
    }
}

// The tensors of block l, in the converter's order.
static void sy_layer_tensors(struct sy_list *L, const struct kn_config *c, int l) {
    int64_t dim = c->dim, hid = c->hidden_dim, kv = kn_kv_dim(c), q = kn_q_dim(c);
    sy_add(L, SY_ATTN_NORM, l, dim, 1, "blk.%d.attn_norm.weight", l);
    if (c->fused_qkv) {
        struct sy_tensor *t = sy_add(L, SY_Q, l, dim, q + 2 * kv, "blk.%d.attn_qkv.weight", l);
        sy_fuse(L, t, l, (const enum sy_kind[]){SY_Q, SY_K, SY_V}, (const int64_t[]){q, kv, kv}, 3);
    } else {
        sy_add(L, SY_Q, l, dim, q, "blk.%d.attn_q.weight", l);
        sy_add(L, SY_K, l, dim, kv, "blk.%d.attn_k.weight", l);
        sy_add(L, SY_V, l, dim, kv, "blk.%d.attn_v.weight", l);
    }
    if (c->has_qkv_bias) {
        sy_add(L, SY_BQ, l, q, 1, "blk.%d.attn_q.bias", l);
        sy_add(L, SY_BK, l, kv, 1, "blk.%d.attn_k.bias", l);
        sy_add(L, SY_BV, l, kv, 1, "blk.%d.attn_v.bias", l);
    }
    sy_add(L, SY_O, l, q, dim, "blk.%d.attn_output.weight", l);
    if (c->post_norms) sy_add(L, SY_POST_ATTN, l, dim, 1, "blk.%d.post_attention_norm.weight", l);
    sy_add(L, SY_FFN_NORM, l, dim, 1, "blk.%d.ffn_norm.weight", l);
    if (c->fused_gate_up) {
        struct sy_tensor *t = sy_add(L, SY_GATE, l, dim, 2 * hid, "blk.%d.ffn_up.weight", l);
        sy_fuse(L, t, l, (const enum sy_kind[]){SY_GATE, SY_UP}, (const int64_t[]){hid, hid}, 2);
    } else {
        sy_add(L, SY_GATE, l, dim, hid, "blk.%d.ffn_gate.weight", l);
        sy_add(L, SY_UP, l, dim, hid, "blk.%d.ffn_up.weight", l);
    }
    sy_add(L, SY_DOWN, l, hid, dim, "blk.%d.ffn_down.weight", l);
    if (c->post_norms) sy_add(L, SY_POST_FFN, l, dim, 1, "blk.%d.post_ffw_norm.weight", l);
}

// The tensor list in llama.cpp's names and the converter's order: RoPE factors, token_embd, per
// layer attn_norm, q, k, v (or attn_qkv), biases, output, post-attention norm, ffn_norm, gate, up
// (or the fused up), down, post-FFN norm, then output_norm and output (untied). *n_out gets the
// count; the array is malloc'd (caller frees), NULL when out of memory.
static struct sy_tensor *sy_tensors(const struct hx_synth_shape *sh, const struct kn_config *c, uint64_t seed,
                                    int type, const struct sy_rope *rope, int *n_out) {
    struct sy_list L = {.n = 6 + 16 * c->n_layers, .seed = seed, .type = type};
    if (!(L.ts = calloc((size_t)L.n, sizeof *L.ts))) return NULL;
    int64_t dim = c->dim, half = c->head_size / 2;
    if (sh->llama3_rope > 0) sy_add(&L, SY_FIXED, -1, half, 1, "rope_freqs.weight")->fixed = rope->freqs;
    if (sh->rope_ctx_orig > 0) {
        sy_add(&L, SY_FIXED, -1, half, 1, "rope_factors_long.weight")->fixed = rope->longs;
        sy_add(&L, SY_FIXED, -1, half, 1, "rope_factors_short.weight")->fixed = rope->shorts;
    }
    sy_add(&L, SY_EMBD, -1, dim, c->vocab_size, "token_embd.weight")->gain = sh->embd_std;
    for (int l = 0; l < c->n_layers; l++) sy_layer_tensors(&L, c, l);
    struct sy_tensor *t = sy_add(&L, SY_OUT_NORM, -1, dim, 1, "output_norm.weight");
    if (sh->tied) t->gain = sh->out_gain; // the classifier is the embedding: scale its input
    else sy_add(&L, SY_OUTPUT, -1, dim, c->vocab_size, "output.weight")->gain = sh->out_gain;
    *n_out = L.i;
    return L.ts;
}

// ---------------------------------------------------------------------------------------------
// Metadata

static struct hx_gguf_kv sy_kv_str(const char *key, const char *s) {
    struct hx_gguf_kv kv = {.key = key, .val.type = HX_GGUF_STRING};
    kv.val.v.str.ptr = s;
    kv.val.v.str.len = strlen(s);
    return kv;
}

static struct hx_gguf_kv sy_kv_u32(const char *key, uint32_t v) {
    struct hx_gguf_kv kv = {.key = key, .val.type = HX_GGUF_UINT32};
    kv.val.v.u = v;
    return kv;
}

static struct hx_gguf_kv sy_kv_u64(const char *key, uint64_t v) {
    struct hx_gguf_kv kv = {.key = key, .val.type = HX_GGUF_UINT64};
    kv.val.v.u = v;
    return kv;
}

static struct hx_gguf_kv sy_kv_f32(const char *key, float v) {
    struct hx_gguf_kv kv = {.key = key, .val.type = HX_GGUF_FLOAT32};
    kv.val.v.f = v;
    return kv;
}

// An INT32 array; data is little-endian int32 (the host's order on x86-64), borrowed.
static struct hx_gguf_kv sy_kv_i32s(const char *key, const int32_t *data, uint64_t n) {
    struct hx_gguf_kv kv = {.key = key, .val.type = HX_GGUF_ARRAY};
    kv.val.v.arr.type = HX_GGUF_INT32;
    kv.val.v.arr.n = n;
    kv.val.v.arr.data = (const uint8_t *)data;
    return kv;
}

// Checks that vocab is a llama (SPM) or gpt2 (byte-level BPE) vocabulary of the shape's size.
static int sy_check_vocab(const struct hx_gguf *g, const struct hx_synth_shape *sh, char *err) {
    const char *path = hx_gguf_path(g), *model;
    size_t len;
    int rc = hx_gguf_get_str(g, "tokenizer.ggml.model", &model, &len);
    if (rc) return qp_fail(err, rc == QP_ENOENT ? QP_ENOENT : QP_EFORMAT,
                           "cannot use '%s' as vocabulary: no string key 'tokenizer.ggml.model'",
                           path);
    if (!(len == 5 && memcmp(model, "llama", 5) == 0) && !(len == 4 && memcmp(model, "gpt2", 4) == 0)) {
        return qp_fail(err, QP_EFORMAT,
                       "cannot use '%s' as vocabulary: tokenizer model '%.*s' is not 'llama' or 'gpt2'",
                       path, (int)QP_MIN(len, (size_t)64), model);
    }
    const struct hx_gguf_kv *tok = hx_gguf_find(g, "tokenizer.ggml.tokens");
    if (!tok || tok->val.type != HX_GGUF_ARRAY || tok->val.v.arr.type != HX_GGUF_STRING) {
        return qp_fail(err, QP_EFORMAT,
                       "cannot use '%s' as vocabulary: no string array 'tokenizer.ggml.tokens'",
                       path);
    }
    // Fewer tokens than the shape's rows: padded with "[PAD<id>]" tokens (sy_pad_vocab), as
    // llama.cpp's converter pads a vocabulary smaller than the embedding.
    if (tok->val.v.arr.n > (uint64_t)sh->vocab_size || (tok->val.v.arr.n < (uint64_t)sh->vocab_size && !sh->pad_vocab)) {
        return qp_fail(err, QP_EFORMAT,
                       "cannot use '%s' as vocabulary: it has %llu tokens, shape '%s' needs %d",
                       path, (unsigned long long)tok->val.v.arr.n, sh->name, sh->vocab_size);
    }
    return 0;
}

// The vocabulary's token, score and type arrays extended to n tokens: ids from the file's count
// on are "[PAD<id>]", score -1000, type UNUSED (5). The buffers live in *pad (freed by the caller).
struct sy_pad {
    struct hx_gguf_value *items;
    char *text;
    float *scores;
    int32_t *types;
};

static int sy_pad_vocab(struct hx_gguf_kv *kvs, int64_t nk, uint64_t n, struct sy_pad *pad) {
    for (int64_t i = 0; i < nk; i++) {
        struct hx_gguf_value *v = &kvs[i].val;
        if (v->type != HX_GGUF_ARRAY || v->v.arr.n >= n) continue;
        uint64_t have = v->v.arr.n;
        if (strcmp(kvs[i].key, "tokenizer.ggml.tokens") == 0 && v->v.arr.type == HX_GGUF_STRING) {
            pad->items = calloc(n, sizeof *pad->items);
            pad->text = malloc((size_t)(n - have) * 24);
            if (!pad->items || !pad->text) return QP_ENOMEM;
            memcpy(pad->items, v->v.arr.items, (size_t)have * sizeof *pad->items);
            for (uint64_t k = have; k < n; k++) {
                char *t = pad->text + (k - have) * 24;
                pad->items[k].type = HX_GGUF_STRING;
                pad->items[k].v.str.ptr = t;
                pad->items[k].v.str.len = (uint64_t)snprintf(t, 24, "[PAD%llu]", (unsigned long long)k);
            }
            v->v.arr.items = pad->items;
        } else if (strcmp(kvs[i].key, "tokenizer.ggml.scores") == 0 && v->v.arr.type == HX_GGUF_FLOAT32) {
            if (!(pad->scores = malloc((size_t)n * sizeof(float)))) return QP_ENOMEM;
            memcpy(pad->scores, v->v.arr.data, (size_t)have * sizeof(float));
            for (uint64_t k = have; k < n; k++) pad->scores[k] = -1000.0f;
            v->v.arr.data = (const uint8_t *)pad->scores;
        } else if (strcmp(kvs[i].key, "tokenizer.ggml.token_type") == 0 && v->v.arr.type == HX_GGUF_INT32) {
            if (!(pad->types = malloc((size_t)n * sizeof(int32_t)))) return QP_ENOMEM;
            memcpy(pad->types, v->v.arr.data, (size_t)have * sizeof(int32_t));
            for (uint64_t k = have; k < n; k++) pad->types[k] = 5;
            v->v.arr.data = (const uint8_t *)pad->types;
        } else {
            continue;
        }
        v->v.arr.n = n;
    }
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Writing

// Fails early when the file system holding path has clearly too little room (the write itself
// still reports ENOSPC when space runs out later).
static int sy_check_space(const char *path, uint64_t need, char *err) {
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return qp_fail(err, QP_EIO, "cannot write '%s': is a directory", path);
    char dir[4096];
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == path) snprintf(dir, sizeof dir, "/");
    else
        snprintf(dir, sizeof dir, "%.*s", (int)QP_MIN((size_t)(slash - path), sizeof dir - 1),
                 path);
    struct statvfs vs;
    if (statvfs(dir, &vs) != 0) return 0; // the temporary file's creation reports the problem
    uint64_t avail = (uint64_t)vs.f_bavail * (uint64_t)vs.f_frsize;
    if (avail < need) {
        return qp_fail(err, QP_EWRITE, // a disk that is full is a runtime failure, as ENOSPC later is
                       "cannot write '%s': needs %.2f GB, only %.2f GB free on its file system",
                       path, (double)need / 1e9, (double)avail / 1e9);
    }
    return 0;
}

// A chunk of rows of one tensor: the unit generated in parallel and then written.
struct sy_job {
    int tensor;     // index into the tensor list; -1: none
    int64_t r0;     // first row
    int64_t rows;
};

// The chunk after *j (or the first, when j->tensor < 0): at most chunk_elems elements, at
// least one row. Returns 0 past the last tensor.
static int sy_next(const struct sy_tensor *ts, int n, int64_t chunk_elems, struct sy_job *j) {
    if (j->tensor < 0) *j = (struct sy_job){.tensor = 0, .r0 = 0, .rows = 0};
    j->r0 += j->rows;
    if (j->r0 >= ts[j->tensor].ne1) {
        if (++j->tensor >= n) return 0;
        j->r0 = 0;
    }
    const struct sy_tensor *t = &ts[j->tensor];
    j->rows = QP_MIN(QP_MAX((int64_t)1, chunk_elems / t->ne0), t->ne1 - j->r0);
    return 1;
}

// Buffers of the pipeline: two output chunks (generate one while the other is written) and a
// row of floats per thread for f16 output.
struct sy_bufs {
    void *out[2];    // chunk_elems elements of the output type each
    float *scratch;  // (n_threads, max_ne0) floats, f16 only
    int64_t max_ne0;
};

// Generates every tensor into the stream: chunk k is generated by the thread team while one
// thread writes chunk k-1 and then joins the generation (dynamic schedule; every row is a
// pure function of its index, so the bytes do not depend on who computes what).
static int sy_generate(const struct hx_synth_opts *o, const char *path,
                       struct hx_gguf_stream *st, const struct sy_dists *d,
                       const struct sy_tensor *ts, int n,
                       const uint8_t *outlier, const struct sy_bufs *b, int64_t chunk_elems,
                       char *err) {
    struct sy_job cur = {.tensor = -1}, prev = {.tensor = -1};
    int have = sy_next(ts, n, chunk_elems, &cur), slot = 0, wrc = 0;
    uint64_t bytes = 0;
    while (have || prev.tensor >= 0) {
        if (o->stop && *o->stop) return qp_fail(err, QP_EINTR, "cannot write '%s': interrupted",
                                                path);
#pragma omp parallel num_threads(o->n_threads) if (o->n_threads > 1)
        {
#pragma omp single nowait
            if (prev.tensor >= 0) {
                const struct sy_tensor *t = &ts[prev.tensor];
                size_t nb = (size_t)(prev.rows * t->ne0) * (t->type == KN_F16 ? 2 : 4);
                wrc = hx_gguf_stream_write(st, b->out[slot ^ 1], nb, err);
                bytes += nb;
                if (!wrc && o->progress && prev.r0 + prev.rows == t->ne1)
                    o->progress(o->progress_ctx, prev.tensor + 1, n, bytes);
            }
            if (have) {
                const struct sy_tensor *t = &ts[cur.tensor];
                int f16 = t->type == KN_F16;
#pragma omp for schedule(dynamic, 1)
                for (int64_t r = 0; r < cur.rows; r++) {
                    if (f16) {
                        float *row = b->scratch + (int64_t)omp_get_thread_num() * b->max_ne0;
                        uint16_t *dst = (uint16_t *)b->out[slot] + r * t->ne0;
                        sy_row(d, t, cur.r0 + r, outlier, row);
                        for (int64_t c = 0; c < t->ne0; c++) dst[c] = qp_fp32_to_fp16(row[c]);
                    } else {
                        sy_row(d, t, cur.r0 + r, outlier, (float *)b->out[slot] + r * t->ne0);
                    }
                }
            }
        }
        if (wrc) return wrc;
        prev = have ? cur : (struct sy_job){.tensor = -1};
        if (have) have = sy_next(ts, n, chunk_elems, &cur);
        slot ^= 1;
    }
    return 0;
}

// The config a loader derives from the file synth writes for o's shape (kn_model.h's family
// fields as llama.cpp's defaults set them), checked.
static int sy_config(const struct hx_synth_opts *o, const char *path, struct kn_config *c, char *err) {
    const struct hx_synth_shape *sh = o->shape;
    if (!sh || o->n_threads < 1 || (o->type != KN_F32 && o->type != KN_F16) ||
        o->n_layers < 0 || o->n_layers > SY_MAX_LAYERS)
        return qp_fail(err, QP_EINVAL, "cannot write '%s': bad synth options", path);
    int n_layers = o->n_layers ? o->n_layers : sh->n_layers;
    *c = (struct kn_config){
        .dim = sh->dim, .hidden_dim = sh->hidden_dim, .n_layers = n_layers, .n_heads = sh->n_heads,
        .n_kv_heads = sh->n_kv_heads, .vocab_size = sh->vocab_size, .seq_len = sh->seq_len,
        .head_size = sh->head_size ? sh->head_size : sh->dim / sh->n_heads, .norm_eps = sh->norm_eps,
        .rope_theta = sh->rope_theta, .arch = sh->arch, .swa_window = sh->swa_window,
        .rope_ctx_orig = sh->rope_ctx_orig,
    };
    kn_config_set_family(c);
    if (sh->rope_ctx_orig > 0) // convert_hf_to_gguf.py's longrope attention factor
        c->rope_attn_factor = (float)sqrt(1.0 + log((double)sh->seq_len / sh->rope_ctx_orig) / log(sh->rope_ctx_orig));
    if (sh->arch == KN_ARCH_GEMMA2) {
        c->attn_scale = 1.0f / sqrtf((float)(n_layers == 46 ? c->dim / c->n_heads : c->head_size));
        c->attn_softcap = sh->attn_softcap;
        c->final_softcap = sh->final_softcap;
    }
    char msg[QP_ERRLEN];
    int rc = kn_config_check(c, msg);
    if (rc) return qp_fail(err, QP_EINVAL, "cannot write '%s': %s", path, msg);
    if (c->head_size / 2 > SY_MAX_HALF) return qp_fail(err, QP_EINVAL, "cannot write '%s': head too large", path);
    return 0;
}

// Key names built for the family keys ("ARCH.suffix"), alive as long as the key list.
struct sy_keys {
    char name[24][64];
    int n;
};

static const char *sy_akey(struct sy_keys *k, enum kn_arch a, const char *suffix) {
    QP_ASSERT(k->n < 24);
    snprintf(k->name[k->n], sizeof k->name[0], "%s.%s", kn_arch_name(a), suffix);
    return k->name[k->n++];
}

// The model's hyperparameter keys in convert_hf_to_gguf.py's order, then the family's own.
static int64_t sy_model_kvs(struct hx_gguf_kv *kvs, struct sy_keys *k, const struct kn_config *c, enum kn_type type) {
    enum kn_arch a = c->arch;
    int64_t nk = 0;
    kvs[nk++] = sy_kv_u32(sy_akey(k, a, "block_count"), (uint32_t)c->n_layers);
    kvs[nk++] = sy_kv_u32(sy_akey(k, a, "context_length"), (uint32_t)c->seq_len);
    kvs[nk++] = sy_kv_u32(sy_akey(k, a, "embedding_length"), (uint32_t)c->dim);
    kvs[nk++] = sy_kv_u32(sy_akey(k, a, "feed_forward_length"), (uint32_t)c->hidden_dim);
    kvs[nk++] = sy_kv_u32(sy_akey(k, a, "attention.head_count"), (uint32_t)c->n_heads);
    kvs[nk++] = sy_kv_u32(sy_akey(k, a, "attention.head_count_kv"), (uint32_t)c->n_kv_heads);
    kvs[nk++] = sy_kv_f32(sy_akey(k, a, "rope.freq_base"), c->rope_theta);
    kvs[nk++] = sy_kv_f32(sy_akey(k, a, "attention.layer_norm_rms_epsilon"), c->norm_eps);
    kvs[nk++] = sy_kv_u32("general.file_type", type == KN_F16 ? 1 : 0); // llama_ftype
    kvs[nk++] = sy_kv_u32(sy_akey(k, a, "vocab_size"), (uint32_t)c->vocab_size);
    kvs[nk++] = sy_kv_u32(sy_akey(k, a, "rope.dimension_count"), (uint32_t)c->head_size);
    if (c->head_size * c->n_heads != c->dim) {
        kvs[nk++] = sy_kv_u32(sy_akey(k, a, "attention.key_length"), (uint32_t)c->head_size);
        kvs[nk++] = sy_kv_u32(sy_akey(k, a, "attention.value_length"), (uint32_t)c->head_size);
    }
    if (c->rope_ctx_orig > 0) {
        kvs[nk++] = sy_kv_u32(sy_akey(k, a, "rope.scaling.original_context_length"), (uint32_t)c->rope_ctx_orig);
        kvs[nk++] = sy_kv_f32(sy_akey(k, a, "rope.scaling.attn_factor"), c->rope_attn_factor);
    }
    if (a == KN_ARCH_PHI3 || a == KN_ARCH_GEMMA2)
        kvs[nk++] = sy_kv_u32(sy_akey(k, a, "attention.sliding_window"), (uint32_t)c->swa_window);
    if (a == KN_ARCH_GEMMA2) {
        kvs[nk++] = sy_kv_f32(sy_akey(k, a, "attn_logit_softcapping"), c->attn_softcap);
        kvs[nk++] = sy_kv_f32(sy_akey(k, a, "final_logit_softcapping"), c->final_softcap);
    }
    return nk;
}

// Room for the key/values besides the vocabulary's.
#define SY_N_KV_OWN 40

// Key/values in convert_hf_to_gguf.py's order, then the vocabulary's tokenizer.* keys as they
// are (voc may be NULL), then qprobe's record of how the weights were made. kvs has room for
// hx_gguf_n_kv(voc) + SY_N_KV_OWN; name (96 bytes) holds general.name, keys the family key names,
// outl32 the outlier channels. Returns the count.
static int64_t sy_kvs(const struct hx_synth_opts *o, const struct kn_config *c, const struct hx_gguf *voc,
                      const int32_t *outl32, char *name, struct sy_keys *keys, struct hx_gguf_kv *kvs) {
    const struct hx_synth_shape *sh = o->shape;
    snprintf(name, 96, "synth-%s", sh->name);
    // llama.cpp gives "phi3" models' special tokens attributes by text, and fails on a
    // vocabulary without "<|endoftext|>": the small model's name must not say phi3.
    if (sh->arch == KN_ARCH_PHI3 && sh->vocab && strcmp(sh->vocab, SY_VOCAB_PHI3) != 0)
        snprintf(name, 96, "synth-fused-tiny");
    int64_t nk = 0;
    kvs[nk++] = sy_kv_str("general.architecture", kn_arch_name(c->arch));
    kvs[nk++] = sy_kv_str("general.name", name);
    nk += sy_model_kvs(kvs + nk, keys, c, o->type);
    for (int64_t i = 0; voc && i < hx_gguf_n_kv(voc); i++) {
        const struct hx_gguf_kv *kv = hx_gguf_kv(voc, i);
        if (strncmp(kv->key, "tokenizer.", 10) == 0) kvs[nk++] = *kv;
    }
    kvs[nk++] = sy_kv_str("qprobe.synth.shape", sh->name);
    kvs[nk++] = sy_kv_u64("qprobe.synth.seed", o->seed);
    kvs[nk++] = sy_kv_str("qprobe.synth.generator", SY_GENERATOR);
    kvs[nk++] = sy_kv_f32("qprobe.synth.student_t_dof", (float)HX_SYNTH_DOF);
    kvs[nk++] = sy_kv_f32("qprobe.synth.outlier_scale", HX_SYNTH_OUTLIER_SCALE);
    kvs[nk++] = sy_kv_i32s("qprobe.synth.outlier_channels", outl32, HX_SYNTH_N_OUTLIERS);
    QP_ASSERT(nk <= (voc ? hx_gguf_n_kv(voc) : 0) + SY_N_KV_OWN);
    return nk;
}

// The two chunk buffers (about SY_CHUNK_ELEMS elements, at least one row of the widest tensor)
// and, for f16, one fp32 row per thread. Returns the chunk's elements, or 0 when out of memory.
static int64_t sy_bufs_alloc(const struct hx_synth_opts *o, const struct sy_tensor *ts, int n_t, struct sy_bufs *b) {
    b->max_ne0 = 1;
    for (int i = 0; i < n_t; i++) b->max_ne0 = QP_MAX(b->max_ne0, ts[i].ne0);
    int64_t chunk = QP_MAX(SY_CHUNK_ELEMS, b->max_ne0);
    size_t esize = o->type == KN_F16 ? 2 : 4;
    b->out[0] = qp_alloc_array((size_t)chunk, esize);
    b->out[1] = qp_alloc_array((size_t)chunk, esize);
    if (o->type == KN_F16) b->scratch = qp_alloc_array((size_t)o->n_threads * (size_t)b->max_ne0, sizeof(float));
    return b->out[0] && b->out[1] && (o->type != KN_F16 || b->scratch) ? chunk : 0;
}

// The tensor infos of the stream; the data bytes and the weight count.
static void sy_stream_tensors(const struct sy_tensor *ts, int n_t, struct hx_gguf_stream_tensor *sts,
                              uint64_t *data_bytes, int64_t *n_params) {
    *data_bytes = 0;
    *n_params = 0;
    for (int i = 0; i < n_t; i++) {
        *data_bytes += kn_row_bytes(ts[i].type, ts[i].ne0) * (uint64_t)ts[i].ne1;
        sts[i] = (struct hx_gguf_stream_tensor){
            .name = ts[i].name, .type = ts[i].type, .n_dims = ts[i].ne1 == 1 ? 1 : 2,
            .ne = {ts[i].ne0, ts[i].ne1, 1, 1}};
        *n_params += ts[i].ne0 * ts[i].ne1;
    }
}

// The header and every tensor streamed to path (through a temporary file renamed at the end).
static int sy_stream(const struct hx_synth_opts *o, const char *path, const struct hx_gguf_kv *kvs, int64_t nk,
                     const struct hx_gguf_stream_tensor *sts, const struct sy_tensor *ts, int n_t, uint64_t data_bytes,
                     const uint8_t *outlier, struct sy_bufs *bufs, int64_t chunk, char *err) {
    struct sy_dists *dists = malloc(sizeof *dists);
    if (!dists) return qp_fail(err, QP_ENOMEM, "cannot write '%s': out of memory", path);
    sy_dists_init(dists);
    struct hx_gguf_stream *st = NULL;
    // Room for the data, its padding and the header (a BPE vocabulary is a few MB).
    int rc = sy_check_space(path, data_bytes + (uint64_t)n_t * 32 + (16u << 20), err);
    if (!rc) rc = hx_gguf_stream_open(path, kvs, nk, sts, n_t, &st, err);
    if (!rc) {
        QP_ASSERT(hx_gguf_stream_data_bytes(st) == data_bytes);
        rc = sy_generate(o, path, st, dists, ts, n_t, outlier, bufs, chunk, err);
    }
    if (!rc) rc = hx_gguf_stream_finish(st, err);
    else hx_gguf_stream_abort(st);
    free(dists);
    return rc;
}

// The metadata and the tensors of the model written to path; voc may be NULL.
static int sy_write(const struct hx_synth_opts *o, const struct kn_config *c, const struct hx_gguf *voc,
                    const char *path, struct hx_synth_info *info, char *err) {
    int outl[HX_SYNTH_N_OUTLIERS];
    int32_t outl32[HX_SYNTH_N_OUTLIERS];
    hx_synth_outliers(o->seed, c->dim, outl);
    for (int k = 0; k < HX_SYNTH_N_OUTLIERS; k++) outl32[k] = outl[k];
    struct sy_rope *rope = malloc(sizeof *rope);
    if (rope) sy_rope_init(rope, o->shape, c->head_size);
    int n_t = 0, rc = 0;
    struct sy_tensor *ts = rope ? sy_tensors(o->shape, c, o->seed, o->type, rope, &n_t) : NULL;
    struct hx_gguf_kv *kvs = calloc((size_t)((voc ? hx_gguf_n_kv(voc) : 0) + SY_N_KV_OWN), sizeof *kvs);
    struct hx_gguf_stream_tensor *sts = calloc((size_t)(n_t ? n_t : 1), sizeof *sts);
    uint8_t *outlier = calloc((size_t)c->dim, 1);
    struct sy_bufs bufs = {0};
    struct sy_pad pad = {0};
    struct sy_keys keys = {0};
    int64_t chunk = ts ? sy_bufs_alloc(o, ts, n_t, &bufs) : 0, nk = 0;
    char name[96];
    if (ts && kvs) nk = sy_kvs(o, c, voc, outl32, name, &keys, kvs);
    if (!ts || !kvs || !sts || !outlier || !chunk || (voc && sy_pad_vocab(kvs, nk, (uint64_t)c->vocab_size, &pad)))
        rc = qp_fail(err, QP_ENOMEM, "cannot write '%s': out of memory", path);
    if (!rc) {
        for (int k = 0; k < HX_SYNTH_N_OUTLIERS; k++) outlier[outl[k]] = 1;
        int64_t n_params;
        uint64_t data_bytes;
        sy_stream_tensors(ts, n_t, sts, &data_bytes, &n_params);
        rc = sy_stream(o, path, kvs, nk, sts, ts, n_t, data_bytes, outlier, &bufs, chunk, err);
        if (!rc && info)
            *info = (struct hx_synth_info){.n_layers = c->n_layers, .n_params = n_params, .data_bytes = data_bytes};
        if (!rc && info) memcpy(info->outliers, outl, sizeof outl);
    }
    free(pad.items);
    free(pad.text);
    free(pad.scores);
    free(pad.types);
    free(rope);
    free(ts);
    free(kvs);
    free(sts);
    free(outlier);
    qp_free(bufs.out[0]);
    qp_free(bufs.out[1]);
    qp_free(bufs.scratch);
    return rc;
}

// Whether the file at path starts with GGUF's magic.
static int sy_is_gguf(const char *path) {
    FILE *f = fopen(path, "rb");
    char magic[4] = {0};
    int yes = f && fread(magic, 1, 4, f) == 4 && memcmp(magic, "GGUF", 4) == 0;
    if (f) fclose(f);
    return yes;
}

// The vocabulary as GGUF keys: a GGUF as it is; any other tokenizer file (tokenizer.json,
// tokenizer.bin) loaded, padded to the shape's rows (hx_tok_fit_rows, as llama.cpp's converter
// pads), written as a vocab-only GGUF next to path (hx_gguf_vocab_write: the keys llama.cpp's
// converter writes) and opened; the file is removed at once (the mapping stays valid).
static int sy_vocab_open(const struct hx_synth_opts *o, const char *path, struct hx_gguf **out, char *err) {
    *out = NULL;
    if (sy_is_gguf(o->vocab)) return hx_gguf_open(o->vocab, out, err);
    struct hx_tok *tok = NULL;
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.vocab.tmp", path);
    int rc = hx_tok_open(o->vocab, 0, &tok, err);
    if (!rc) rc = hx_tok_fit_rows(tok, o->shape->vocab_size, o->vocab, err);
    if (!rc && (rc = hx_gguf_vocab_write(tok, tmp, err)) == QP_ENOTSUP)
        rc = qp_fail(err, rc, "cannot use '%s' as vocabulary: llama.cpp has no pre-tokenizer name for it", o->vocab);
    hx_tok_destroy(tok);
    if (rc) return rc;
    rc = hx_gguf_open(tmp, out, err);
    unlink(tmp);
    return rc;
}

int hx_synth_write(const struct hx_synth_opts *o, const char *path, struct hx_synth_info *info,
                   char *err) {
    double t0 = qp_now();
    struct kn_config c;
    struct hx_gguf *voc = NULL;
    int rc = sy_config(o, path, &c, err);
    if (rc) return rc;
    if (o->vocab) {
        if ((rc = sy_vocab_open(o, path, &voc, err))) return rc;
        if ((rc = sy_check_vocab(voc, o->shape, err))) {
            hx_gguf_close(voc);
            return rc;
        }
    }
    rc = sy_write(o, &c, voc, path, info, err);
    if (!rc && info) info->seconds = qp_now() - t0;
    if (voc) hx_gguf_close(voc);
    return rc;
}
