// safetensors.c — Hugging Face safetensors + config.json reading and writing for
// LlamaForCausalLM checkpoints (see safetensors.h and model.h).
//
// Reading: config.json is parsed with cJSON into a kn_config; model.safetensors is mapped
// read-only and its JSON header is validated completely before any tensor is used (header
// length against the file size, every dtype, shape and data range, ranges tiling the data buffer
// exactly as the reference implementation requires). Tensors stay in the mapping as F32, F16 or
// BF16, except Q and K projections, which are converted to F32 in buffers the model owns while
// their rows are permuted from Hugging Face's rotate-half order into interleaved pairs.
// Writing does the inverse, atomically (temporary file, fsync, rename).
//
// Depends on kernels/ (qp.h, kn_types.h, kn_model.h), harness/io/hx_model_load.h, hx_tokenizer.h
// (a tokenizer.json beside config.json is the model's vocabulary) and cJSON; must not
// depend on quantizers/, metrics/, tasks/, reports/ or SQLite. Assumes a little-endian host
// (safetensors is little-endian; checked at compile time).
#include "hx_safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "hx_model.h"
#include "hx_model_load.h"
#include "hx_tokenizer.h"
#include "qp.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors I/O assumes little endian");

// ---------------------------------------------------------------------------------------------
// Types and limits.

// The safetensors dtypes, with their element sizes. Only F32, F16 and BF16 map to kn types
// (kn < 0: valid in a file, not usable as a Llama weight here).
struct st_dtype {
    const char *name;
    int size; // bytes per element
    int kn;   // enum kn_type, or -1
};

static const struct st_dtype st_dtypes[] = {
    {"BOOL", 1, -1},      {"U8", 1, -1},  {"I8", 1, -1},  {"F8_E5M2", 1, -1},
    {"F8_E4M3", 1, -1},   {"I16", 2, -1}, {"U16", 2, -1}, {"F16", 2, KN_F16},
    {"BF16", 2, KN_BF16}, {"I32", 4, -1}, {"U32", 4, -1}, {"F32", 4, KN_F32},
    {"F64", 8, -1},       {"I64", 8, -1}, {"U64", 8, -1},
};

#define ST_MAX_RANK 8
#define ST_MAX_HEADER (100u << 20)         // the reference implementation's limit (100 MB)
#define ST_MAX_CONFIG (16u << 20)          // config.json files are a few kB; refuse absurd ones
#define ST_MAX_JSON_INT 9007199254740992.0 // 2^53: every integer up to here is exact in a double
#define ST_NAME_LEN 96                     // longest tensor name we generate, with margin

// One header entry, decoded and checked against the data buffer.
struct st_entry {
    const char *name; // points into the cJSON tree
    const struct st_dtype *dt;
    int rank;
    uint64_t shape[ST_MAX_RANK];
    uint64_t begin, end; // byte range in the data buffer
};

// A mapped safetensors file being read.
struct st_reader {
    const char *path;    // the .safetensors file, for messages
    const uint8_t *data; // start of the data buffer (inside the mapping)
    uint64_t data_len;   // bytes in the data buffer
    cJSON *header;       // the parsed header object
};

// ---------------------------------------------------------------------------------------------
// Small helpers.

// Copies s into buf (n bytes), replacing non-printable bytes so that messages stay one line and
// truncating long (possibly hostile) strings.
static const char *st_clean(const char *s, char *buf, size_t n) {
    size_t i = 0;
    for (; s[i] && i + 1 < n; i++) buf[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    buf[i] = 0;
    if (s[i] && n > 4) memcpy(buf + n - 4, "...", 4);
    return buf;
}

// malloc'd "a" + "b" + "c"; NULL when out of memory.
static char *st_concat(const char *a, size_t a_len, const char *b) {
    size_t b_len = strlen(b);
    char *s = malloc(a_len + b_len + 1);
    if (!s) return NULL;
    memcpy(s, a, a_len);
    memcpy(s + a_len, b, b_len + 1);
    return s;
}

// A JSON number that is an integer in [0, max] (max <= 2^53), into *out. 0 or -1.
static int st_json_uint(const cJSON *v, double max, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= 0.0 && d <= max) || d != floor(d)) return -1;
    *out = (uint64_t)d;
    return 0;
}

// Source row of destination row r of a Q or K projection (rows of all heads concatenated).
// Within a head of head_size rows, interleaved row 2*i + j holds Hugging Face row
// j*(head_size/2) + i, for j in {0, 1}: Hugging Face rotates the pair (x[i], x[i + half]), the
// interleaved layout the pair (x[2i], x[2i + 1]).
static int64_t st_qk_src_row(int64_t r, int head_size, int to_hf) {
    int64_t h = r / head_size, k = r % head_size, half = head_size / 2;
    if (!to_hf) return h * head_size + (k % 2) * half + k / 2; // dst interleaved, src HF
    return h * head_size + 2 * (k % half) + k / half;          // dst HF, src interleaved
}

// Converts n elements of row `row` of a F32/F16/BF16 tensor with rows of n elements to F32.
// The source may be unaligned (it can sit anywhere in a mapping).
static void st_row_to_f32(int type, const void *data, int64_t row, int64_t n, float *out) {
    if (type == KN_F32) {
        memcpy(out, (const uint8_t *)data + (size_t)(row * n) * 4, (size_t)n * 4);
        return;
    }
    QP_ASSERT(type == KN_F16 || type == KN_BF16);
    const uint8_t *p = (const uint8_t *)data + (size_t)(row * n) * 2;
    for (int64_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        out[i] = type == KN_F16 ? qp_fp16_to_fp32(h) : qp_bf16_to_fp32(h);
    }
}

// ---------------------------------------------------------------------------------------------
// Permutation between the two RoPE row orders.

void hx_permute_qk(float *dst, const float *src, int n_head, int head_size, int n_in, int to_hf) {
    QP_ASSERT(n_head > 0 && head_size > 0 && head_size % 2 == 0 && n_in >= 0);
    QP_ASSERT(dst != src);
    int64_t rows = (int64_t)n_head * head_size;
    for (int64_t r = 0; r < rows; r++) {
        int64_t s = st_qk_src_row(r, head_size, to_hf);
        memcpy(dst + r * n_in, src + s * n_in, (size_t)n_in * sizeof(float));
    }
}

// ---------------------------------------------------------------------------------------------
// config.json.

// Reads a whole (small) file into a malloc'd, NUL-terminated buffer.
static int st_read_small(const char *path, size_t limit, char **out, size_t *len, char *err) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return qp_fail(err, QP_EIO, "cannot read '%s': %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return qp_fail(err, QP_EIO, "cannot read '%s': not a regular file", path);
    }
    if ((uint64_t)st.st_size > limit) {
        fclose(f);
        return qp_fail(err, QP_ERANGE, "cannot read '%s': file is %lld bytes, above the %zu limit",
                       path, (long long)st.st_size, limit);
    }
    size_t n = (size_t)st.st_size;
    char *buf = malloc(n + 1);
    if (!buf) {
        fclose(f);
        return qp_fail(err, QP_ENOMEM, "cannot read '%s': out of memory", path);
    }
    size_t got = fread(buf, 1, n, f);
    int bad = ferror(f) || got != n;
    fclose(f);
    if (bad) {
        free(buf);
        return qp_fail(err, QP_EIO, "cannot read '%s': short read", path);
    }
    buf[n] = 0;
    *out = buf;
    *len = n;
    return 0;
}

// Parses text as exactly one JSON value (trailing whitespace allowed). NULL with err set.
static cJSON *st_json_parse(const char *text, size_t len, const char *path, char *err) {
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!root) {
        long at = end ? (long)(end - text) : 0;
        qp_fail(err, QP_EFORMAT, "cannot read '%s': invalid JSON at byte %ld", path, at);
        return NULL;
    }
    for (const char *p = end; p < text + len; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            qp_fail(err, QP_EFORMAT,
                    "cannot read '%s': unexpected text after the JSON value at byte %ld", path,
                    (long)(p - text));
            cJSON_Delete(root);
            return NULL;
        }
    }
    return root;
}

// A key holding null counts as absent (Hugging Face writes null for unset options).
static const cJSON *st_key(const cJSON *obj, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsNull(v) ? NULL : v;
}

// A positive integer key; def < 0 means required.
static int st_cfg_int(const cJSON *root, const char *key, int def, int *out, const char *path,
                      char *err) {
    const cJSON *v = st_key(root, key);
    if (!v) {
        if (def < 0)
            return qp_fail(err, QP_ENOENT, "cannot read '%s': missing key '%s'", path, key);
        *out = def;
        return 0;
    }
    uint64_t u;
    if (!cJSON_IsNumber(v) || st_json_uint(v, ST_MAX_JSON_INT, &u) != 0)
        return qp_fail(err, QP_EFORMAT, "cannot read '%s': key '%s' is not a non-negative integer",
                       path, key);
    if (u == 0 || u > (uint64_t)INT32_MAX)
        return qp_fail(err, QP_ERANGE, "cannot read '%s': key '%s' is %llu, out of range", path,
                       key, (unsigned long long)u);
    *out = (int)u;
    return 0;
}

// A positive, finite float key (as float) with a default.
static int st_cfg_float(const cJSON *root, const char *key, float def, float *out, const char *path,
                        char *err) {
    const cJSON *v = st_key(root, key);
    if (!v) {
        *out = def;
        return 0;
    }
    if (!cJSON_IsNumber(v))
        return qp_fail(err, QP_EFORMAT, "cannot read '%s': key '%s' is not a number", path, key);
    double d = v->valuedouble;
    if (!(d > 0.0 && d <= FLT_MAX))
        return qp_fail(err, QP_ERANGE, "cannot read '%s': key '%s' is %g, out of range", path, key,
                       d);
    *out = (float)d;
    return 0;
}

static int st_cfg_bool(const cJSON *root, const char *key, int def, int *out, const char *path,
                       char *err) {
    const cJSON *v = st_key(root, key);
    if (!v) {
        *out = def;
        return 0;
    }
    if (!cJSON_IsBool(v))
        return qp_fail(err, QP_EFORMAT, "cannot read '%s': key '%s' is not true or false", path,
                       key);
    *out = cJSON_IsTrue(v) ? 1 : 0;
    return 0;
}

// The Hugging Face classes read here, with the family each is and what its checkpoints need:
// Llama and Mistral store Q and K rows for rotate-half RoPE, which llama.cpp's llama files (and
// the engine, for rope_neox = 0) interleave; the other families keep Hugging Face's order.
struct st_family {
    const char *cls;        // architectures[] entry
    const char *model_type; // model_type
    enum kn_arch arch;
    const char *act;        // the one hidden_act accepted
    int permute_qk;
};

static const struct st_family st_families[] = {
    {"LlamaForCausalLM", "llama", KN_ARCH_LLAMA, "silu", 1},
    {"MistralForCausalLM", "mistral", KN_ARCH_LLAMA, "silu", 1},
    {"Qwen2ForCausalLM", "qwen2", KN_ARCH_QWEN2, "silu", 0},
    {"Phi3ForCausalLM", "phi3", KN_ARCH_PHI3, "silu", 0},
    {"Gemma2ForCausalLM", "gemma2", KN_ARCH_GEMMA2, "gelu_pytorch_tanh", 0},
};

// The family of a config: the first architectures[] entry qprobe knows, else model_type.
static int st_cfg_arch(const cJSON *root, const struct st_family **fam, const char *path, char *err) {
    const cJSON *arch = st_key(root, "architectures");
    const cJSON *type = st_key(root, "model_type");
    if (arch && !cJSON_IsArray(arch))
        return qp_fail(err, QP_EFORMAT, "cannot read '%s': key 'architectures' is not an array",
                       path);
    if (type && !cJSON_IsString(type))
        return qp_fail(err, QP_EFORMAT, "cannot read '%s': key 'model_type' is not a string", path);
    const cJSON *a;
    cJSON_ArrayForEach(a, arch) {
        if (!cJSON_IsString(a))
            return qp_fail(err, QP_EFORMAT,
                           "cannot read '%s': key 'architectures' holds a non-string", path);
        for (size_t i = 0; i < QP_ARRAY_LEN(st_families); i++)
            if (strcmp(a->valuestring, st_families[i].cls) == 0) return *fam = &st_families[i], 0;
    }
    for (size_t i = 0; type && i < QP_ARRAY_LEN(st_families); i++)
        if (strcmp(type->valuestring, st_families[i].model_type) == 0) return *fam = &st_families[i], 0;
    char b[64];
    const cJSON *first = arch ? cJSON_GetArrayItem(arch, 0) : NULL;
    return qp_fail(err, QP_ENOTSUP,
                   "cannot read '%s': architecture '%s' is not supported (LlamaForCausalLM, MistralForCausalLM, "
                   "Qwen2ForCausalLM, Phi3ForCausalLM, Gemma2ForCausalLM)",
                   path, st_clean(first ? first->valuestring : type ? type->valuestring : "(none)", b, sizeof b));
}

// RoPE scaling from config.json, turned into the per-frequency divisors the engine takes
// (kn_weights' rope_freqs, rope_short/rope_long) by st_rope_tensors.
struct st_rope {
    int llama3;                        // rope_type "llama3"
    double factor, low, high, orig;    // its parameters
    float *shorts, *longs;             // longrope (Phi-3): head_size / 2 each, malloc'd
    int n_factors;
};

// A JSON array of n positive numbers into a malloc'd float array.
static int st_float_array(const cJSON *v, int n, float **out, const char *path, const char *key, char *err) {
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != n)
        return qp_fail(err, QP_EFORMAT, "cannot read '%s': key '%s' is not an array of %d numbers", path, key, n);
    *out = malloc((size_t)n * sizeof **out);
    if (!*out) return qp_fail(err, QP_ENOMEM, "cannot read '%s': out of memory", path);
    int i = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, v) {
        if (!cJSON_IsNumber(x) || !(x->valuedouble > 0 && x->valuedouble < 1e30))
            return qp_fail(err, QP_ERANGE, "cannot read '%s': key '%s' holds a value that is not a positive number",
                           path, key);
        (*out)[i++] = (float)x->valuedouble;
    }
    return 0;
}

static double st_num_or(const cJSON *obj, const char *key, double def) {
    const cJSON *v = st_key(obj, key);
    return cJSON_IsNumber(v) ? v->valuedouble : def;
}

// rope_scaling: linear (a frequency scale), llama3 (Llama 3.1+), longrope / su (Phi-3); any other
// type changes the math in a way the engine does not implement, and is refused by name.
static int st_cfg_rope(const cJSON *root, const struct st_family *fam, struct kn_config *c, struct st_rope *rope,
                       const char *path, char *err) {
    const cJSON *rs = st_key(root, "rope_scaling");
    if (!rs) return 0;
    if (!cJSON_IsObject(rs)) return qp_fail(err, QP_EFORMAT, "cannot read '%s': key 'rope_scaling' is not an object", path);
    const cJSON *t = st_key(rs, "rope_type");
    if (!t) t = st_key(rs, "type");
    const char *type = cJSON_IsString(t) ? t->valuestring : "";
    char b[40];
    if (strcmp(type, "linear") == 0) {
        double f = st_num_or(rs, "factor", 0);
        if (!(f > 0 && f < 1e6)) return qp_fail(err, QP_ERANGE, "cannot read '%s': rope_scaling.factor out of range", path);
        c->rope_freq_scale = f == 1.0 ? 0.0f : (float)(1.0 / f);
        return 0;
    }
    if (strcmp(type, "llama3") == 0 && fam->arch == KN_ARCH_LLAMA) {
        rope->llama3 = 1;
        rope->factor = st_num_or(rs, "factor", 8.0);
        rope->low = st_num_or(rs, "low_freq_factor", 1.0);
        rope->high = st_num_or(rs, "high_freq_factor", 4.0);
        rope->orig = st_num_or(rs, "original_max_position_embeddings", st_num_or(root, "original_max_position_embeddings", 8192));
        if (!(rope->factor > 0 && rope->low > 0 && rope->high > rope->low && rope->orig > 0))
            return qp_fail(err, QP_ERANGE, "cannot read '%s': rope_scaling (llama3) has parameters out of range", path);
        return 0;
    }
    if ((strcmp(type, "longrope") == 0 || strcmp(type, "su") == 0) && fam->arch == KN_ARCH_PHI3) {
        int orig = 0, rc;
        if ((rc = st_cfg_int(root, "original_max_position_embeddings", -1, &orig, path, err))) return rc;
        rope->n_factors = c->head_size / 2;
        if ((rc = st_float_array(st_key(rs, "long_factor"), rope->n_factors, &rope->longs, path, "rope_scaling.long_factor",
                                 err)) ||
            (rc = st_float_array(st_key(rs, "short_factor"), rope->n_factors, &rope->shorts, path,
                                 "rope_scaling.short_factor", err)))
            return rc;
        c->rope_ctx_orig = orig;
        // convert_hf_to_gguf.py's attention factor for longrope
        double scale = (double)c->seq_len / orig;
        c->rope_attn_factor = scale > 1.0 ? (float)sqrt(1.0 + log(scale) / log((double)orig)) : 1.0f;
        return 0;
    }
    return qp_fail(err, QP_ENOTSUP, "cannot read '%s': key 'rope_scaling' of type '%s' is not supported for %s", path,
                   st_clean(type, b, sizeof b), fam->cls);
}

// Keys that would change the math and that the family's block does not have: refused by name.
static int st_cfg_refuse(const cJSON *root, const struct st_family *fam, const char *path, char *err) {
    int rc, on;
    const char *bias_keys[] = {"attention_bias", "mlp_bias"};
    for (size_t i = 0; i < QP_ARRAY_LEN(bias_keys); i++) {
        if ((rc = st_cfg_bool(root, bias_keys[i], 0, &on, path, err))) return rc;
        if (on)
            return qp_fail(err, QP_ENOTSUP, "cannot read '%s': key '%s' (biases) is not supported for %s", path,
                           bias_keys[i], fam->cls);
    }
    if ((rc = st_cfg_bool(root, "use_sliding_window", 0, &on, path, err))) return rc;
    if (on) return qp_fail(err, QP_ENOTSUP, "cannot read '%s': key 'use_sliding_window' is not supported", path);
    const cJSON *prf = st_key(root, "partial_rotary_factor");
    if (prf && (!cJSON_IsNumber(prf) || prf->valuedouble != 1.0))
        return qp_fail(err, QP_ENOTSUP, "cannot read '%s': key 'partial_rotary_factor' (partial RoPE) is not supported",
                       path);
    const char *act_keys[] = {"hidden_act", "hidden_activation"};
    for (size_t i = 0; i < QP_ARRAY_LEN(act_keys); i++) {
        const cJSON *act = st_key(root, act_keys[i]);
        if (act && (!cJSON_IsString(act) || strcmp(act->valuestring, fam->act) != 0))
            return qp_fail(err, QP_ENOTSUP, "cannot read '%s': key '%s' must be \"%s\" for %s", path, act_keys[i],
                           fam->act, fam->cls);
    }
    return 0;
}

// The family's block variant (kn_model.h) from its class and keys, as llama.cpp's converter and
// graph make it.
static int st_cfg_family(const cJSON *root, const struct st_family *fam, struct kn_config *c, const char *path,
                         char *err) {
    int rc, window = 0;
    c->arch = fam->arch;
    kn_config_set_family(c);
    const cJSON *sw = st_key(root, "sliding_window");
    if (sw && fam->arch != KN_ARCH_QWEN2 && (rc = st_cfg_int(root, "sliding_window", 0, &window, path, err))) return rc;
    // (Qwen2 configs carry a sliding_window that only use_sliding_window, refused, would apply)
    if (fam->arch != KN_ARCH_QWEN2) c->swa_window = window;
    if (fam->arch != KN_ARCH_GEMMA2) return 0;
    float qpas, cap;
    if ((rc = st_cfg_float(root, "query_pre_attn_scalar", (float)c->head_size, &qpas, path, err))) return rc;
    c->attn_scale = 1.0f / sqrtf(qpas);
    if ((rc = st_cfg_float(root, "attn_logit_softcapping", 0.0f, &cap, path, err))) return rc;
    c->attn_softcap = cap;
    if ((rc = st_cfg_float(root, "final_logit_softcapping", 0.0f, &cap, path, err))) return rc;
    c->final_softcap = cap;
    return 0;
}

// Reads config.json into c, *fam, *tie (tie_word_embeddings) and *rope. Options the engine does
// not implement (other RoPE scalings, biases where the family has none, other activations,
// partial RoPE) are refused rather than silently evaluated wrongly.
static int st_config_read(const char *path, struct kn_config *c, const struct st_family **fam, int *tie,
                          struct st_rope *rope, char *err) {
    char *text = NULL;
    size_t len = 0;
    int rc = st_read_small(path, ST_MAX_CONFIG, &text, &len, err);
    if (rc) return rc;
    cJSON *root = st_json_parse(text, len, path, err);
    free(text);
    if (!root) return QP_EFORMAT;

    memset(c, 0, sizeof *c);
    if (!cJSON_IsObject(root)) {
        rc = qp_fail(err, QP_EFORMAT, "cannot read '%s': top level is not a JSON object", path);
        goto done;
    }
    if ((rc = st_cfg_arch(root, fam, path, err))) goto done;
    if ((rc = st_cfg_int(root, "hidden_size", -1, &c->dim, path, err))) goto done;
    if ((rc = st_cfg_int(root, "intermediate_size", -1, &c->hidden_dim, path, err))) goto done;
    if ((rc = st_cfg_int(root, "num_hidden_layers", -1, &c->n_layers, path, err))) goto done;
    if ((rc = st_cfg_int(root, "num_attention_heads", -1, &c->n_heads, path, err))) goto done;
    if ((rc = st_cfg_int(root, "num_key_value_heads", c->n_heads, &c->n_kv_heads, path, err)))
        goto done;
    if ((rc = st_cfg_int(root, "vocab_size", -1, &c->vocab_size, path, err))) goto done;
    if ((rc = st_cfg_int(root, "max_position_embeddings", -1, &c->seq_len, path, err))) goto done;
    if ((rc = st_cfg_float(root, "rms_norm_eps", 1e-6f, &c->norm_eps, path, err))) goto done;
    if ((rc = st_cfg_float(root, "rope_theta", 10000.0f, &c->rope_theta, path, err))) goto done;
    if ((rc = st_cfg_bool(root, "tie_word_embeddings", (*fam)->arch == KN_ARCH_GEMMA2, tie, path, err))) goto done;
    if (!st_key(root, "head_dim") && c->dim % c->n_heads != 0) {
        rc = qp_fail(err, QP_ERANGE, "cannot read '%s': num_attention_heads %d does not divide hidden_size %d", path,
                     c->n_heads, c->dim);
        goto done;
    }
    if ((rc = st_cfg_int(root, "head_dim", c->dim / c->n_heads, &c->head_size, path, err))) goto done;
    if ((rc = st_cfg_refuse(root, *fam, path, err)) || (rc = st_cfg_family(root, *fam, c, path, err)) ||
        (rc = st_cfg_rope(root, *fam, c, rope, path, err)))
        goto done;
    rc = 0;
done:
    cJSON_Delete(root);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// The safetensors header.

// Decodes and checks one header entry against the data buffer.
static int st_entry_decode(const struct st_reader *r, const cJSON *item, struct st_entry *e,
                           char *err) {
    char nb[80], tb[40];
    const char *name = st_clean(item->string ? item->string : "", nb, sizeof nb);
    memset(e, 0, sizeof *e);
    e->name = item->string;
    if (!cJSON_IsObject(item))
        return qp_fail(err, QP_EFORMAT, "cannot read '%s': header entry '%s' is not an object",
                       r->path, name);

    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    if (!cJSON_IsString(dtype))
        return qp_fail(err, QP_EFORMAT, "cannot read '%s': tensor '%s' has no string 'dtype'",
                       r->path, name);
    for (size_t i = 0; i < QP_ARRAY_LEN(st_dtypes); i++)
        if (strcmp(dtype->valuestring, st_dtypes[i].name) == 0) e->dt = &st_dtypes[i];
    if (!e->dt)
        return qp_fail(err, QP_ENOTSUP, "cannot read '%s': tensor '%s' has unknown dtype '%s'",
                       r->path, name, st_clean(dtype->valuestring, tb, sizeof tb));

    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(item, "shape");
    if (!cJSON_IsArray(shape))
        return qp_fail(err, QP_EFORMAT, "cannot read '%s': tensor '%s' has no array 'shape'",
                       r->path, name);
    int rank = cJSON_GetArraySize(shape);
    if (rank > ST_MAX_RANK)
        return qp_fail(err, QP_ERANGE, "cannot read '%s': tensor '%s' has %d dimensions", r->path,
                       name, rank);
    uint64_t n = 1;
    const cJSON *d;
    int k = 0;
    cJSON_ArrayForEach(d, shape) {
        if (st_json_uint(d, ST_MAX_JSON_INT, &e->shape[k]) != 0)
            return qp_fail(err, QP_EFORMAT,
                           "cannot read '%s': tensor '%s' has a shape entry that is not a "
                           "non-negative integer",
                           r->path, name);
        if (__builtin_mul_overflow(n, e->shape[k], &n))
            return qp_fail(err, QP_ERANGE, "cannot read '%s': tensor '%s' has too many elements",
                           r->path, name);
        k++;
    }
    e->rank = rank;
    uint64_t bytes;
    if (__builtin_mul_overflow(n, (uint64_t)e->dt->size, &bytes))
        return qp_fail(err, QP_ERANGE, "cannot read '%s': tensor '%s' has too many elements",
                       r->path, name);

    const cJSON *off = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 ||
        st_json_uint(cJSON_GetArrayItem(off, 0), ST_MAX_JSON_INT, &e->begin) != 0 ||
        st_json_uint(cJSON_GetArrayItem(off, 1), ST_MAX_JSON_INT, &e->end) != 0 ||
        e->end < e->begin)
        return qp_fail(err, QP_EFORMAT,
                       "cannot read '%s': tensor '%s' needs 'data_offsets' [begin, end] with "
                       "0 <= begin <= end",
                       r->path, name);
    if (e->end > r->data_len)
        return qp_fail(err, QP_EFORMAT,
                       "cannot read '%s': tensor '%s' data [%llu, %llu) extends past end of file "
                       "(data buffer is %llu bytes)",
                       r->path, name, (unsigned long long)e->begin, (unsigned long long)e->end,
                       (unsigned long long)r->data_len);
    if (e->end - e->begin != bytes)
        return qp_fail(err, QP_EFORMAT,
                       "cannot read '%s': tensor '%s' has %llu bytes of data, but dtype %s and its "
                       "shape need %llu",
                       r->path, name, (unsigned long long)(e->end - e->begin), e->dt->name,
                       (unsigned long long)bytes);
    return 0;
}

static int st_entry_by_name(const void *a, const void *b) {
    return strcmp(((const struct st_entry *)a)->name, ((const struct st_entry *)b)->name);
}

static int st_entry_by_offset(const void *a, const void *b) {
    const struct st_entry *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

// Checks every entry of the header, that names are unique, and that the data ranges tile the
// data buffer with neither gaps nor overlaps (as the reference implementation requires).
static int st_header_check(const struct st_reader *r, char *err) {
    if (!cJSON_IsObject(r->header))
        return qp_fail(err, QP_EFORMAT, "cannot read '%s': header is not a JSON object", r->path);
    int n = cJSON_GetArraySize(r->header);
    struct st_entry *es = qp_calloc_array((size_t)n + 1, sizeof *es);
    if (!es) return qp_fail(err, QP_ENOMEM, "cannot read '%s': out of memory", r->path);
    int rc = 0, k = 0;
    char nb[80];
    const cJSON *item;
    cJSON_ArrayForEach(item, r->header) {
        if (!item->string) continue; // cannot happen in an object; be safe
        if (strcmp(item->string, "__metadata__") == 0) {
            if (!cJSON_IsObject(item)) {
                rc = qp_fail(err, QP_EFORMAT, "cannot read '%s': '__metadata__' is not an object",
                             r->path);
                goto done;
            }
            continue;
        }
        if ((rc = st_entry_decode(r, item, &es[k], err))) goto done;
        k++;
    }
    qsort(es, (size_t)k, sizeof *es, st_entry_by_name);
    for (int i = 1; i < k; i++) {
        if (strcmp(es[i - 1].name, es[i].name) == 0) {
            rc = qp_fail(err, QP_EFORMAT,
                         "cannot read '%s': tensor '%s' appears twice in the header", r->path,
                         st_clean(es[i].name, nb, sizeof nb));
            goto done;
        }
    }
    qsort(es, (size_t)k, sizeof *es, st_entry_by_offset);
    uint64_t pos = 0;
    for (int i = 0; i < k; i++) {
        if (es[i].begin != pos) {
            rc = qp_fail(err, QP_EFORMAT,
                         "cannot read '%s': tensor '%s' data starts at %llu, expected %llu (data "
                         "ranges must not overlap or leave gaps)",
                         r->path, st_clean(es[i].name, nb, sizeof nb),
                         (unsigned long long)es[i].begin, (unsigned long long)pos);
            goto done;
        }
        pos = es[i].end;
    }
    if (pos != r->data_len)
        rc = qp_fail(err, QP_EFORMAT,
                     "cannot read '%s': %llu bytes after the last tensor's data at end of file",
                     r->path, (unsigned long long)(r->data_len - pos));
done:
    qp_free(es);
    return rc;
}

// Maps path and parses its header into r (r->header owned by the caller afterwards).
static int st_open(struct hx_model *m, struct st_reader *r, const char *path, char *err) {
    memset(r, 0, sizeof *r);
    r->path = path;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return qp_fail(err, QP_EIO, "cannot read '%s': %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return qp_fail(err, QP_EIO, "cannot read '%s': not a regular file", path);
    }
    uint64_t size = (uint64_t)st.st_size;
    if (size < 8) {
        close(fd);
        return qp_fail(err, QP_EFORMAT,
                       "cannot read '%s': %llu bytes is too short for a safetensors file", path,
                       (unsigned long long)size);
    }
    void *map = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd);
    if (map == MAP_FAILED)
        return qp_fail(err, QP_EIO, "cannot read '%s': mmap: %s", path, strerror(map_errno));
    QP_ASSERT(m->map == NULL);
    m->map = map;
    m->map_len = (size_t)size;

    const uint8_t *base = map;
    uint64_t n;
    memcpy(&n, base, 8); // little endian
    if (n > size - 8)
        return qp_fail(err, QP_EFORMAT,
                       "cannot read '%s': header length %llu extends past end of file (%llu bytes)",
                       path, (unsigned long long)n, (unsigned long long)size);
    if (n > ST_MAX_HEADER)
        return qp_fail(err, QP_ERANGE, "cannot read '%s': header length %llu is above the %u limit",
                       path, (unsigned long long)n, ST_MAX_HEADER);
    const char *text = (const char *)base + 8;
    const char *end = NULL;
    r->header = cJSON_ParseWithLengthOpts(text, (size_t)n, &end, 0);
    if (!r->header)
        return qp_fail(err, QP_EFORMAT, "cannot read '%s': header is not valid JSON (at byte %ld)",
                       path, end ? (long)(end - text) + 8 : 8L);
    for (const char *p = end; p < text + n; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
            return qp_fail(err, QP_EFORMAT,
                           "cannot read '%s': unexpected bytes after the header JSON at byte %ld",
                           path, (long)(p - text) + 8);
    r->data = base + 8 + n;
    r->data_len = size - 8 - n;
    return st_header_check(r, err);
}

// Fills t from the tensor called name, which must have `rank` dimensions (1: (n) as ne0 = n,
// ne1 = 1; 2: (rows, cols) as ne0 = cols, ne1 = rows) and dtype F32, F16 or BF16. Data stays in
// the mapping unless it is misaligned for its element type, then it is copied into a buffer the
// model owns. Returns 0, QP_ENOENT when the tensor is absent (message set), or another error.
static int st_take(struct hx_model *m, const struct st_reader *r, const char *name, int rank,
                   struct kn_tensor *t, char *err) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(r->header, name);
    if (!item)
        return qp_fail(err, QP_ENOENT, "cannot read '%s': tensor '%s' is missing", r->path, name);
    struct st_entry e;
    int rc = st_entry_decode(r, item, &e, err);
    if (rc) return rc;
    if (e.dt->kn < 0)
        return qp_fail(err, QP_ENOTSUP,
                       "cannot read '%s': tensor '%s' has dtype %s; only F32, F16 and BF16 are "
                       "supported",
                       r->path, name, e.dt->name);
    if (e.rank != rank)
        return qp_fail(err, QP_EFORMAT,
                       "cannot read '%s': tensor '%s' has %d dimensions, expected %d", r->path,
                       name, e.rank, rank);
    t->type = e.dt->kn;
    t->ne0 = (int64_t)(rank == 2 ? e.shape[1] : e.shape[0]);
    t->ne1 = rank == 2 ? (int64_t)e.shape[0] : 1;
    const uint8_t *p = r->data + e.begin;
    if ((uintptr_t)p % (uintptr_t)e.dt->size != 0) {
        size_t bytes = (size_t)(e.end - e.begin);
        void *copy = qp_alloc(bytes);
        if (!copy || qp_owned_add(&m->owned, copy) != 0) // qp_owned_add frees copy when it fails
            return qp_fail(err, QP_ENOMEM, "cannot read '%s': out of memory", r->path);
        memcpy(copy, p, bytes);
        p = copy;
    }
    t->data = p;
    return 0;
}

// Replaces a Q or K projection (any of F32/F16/BF16, in HF row order) by an F32 copy in
// interleaved row order, owned by the model.
static int st_qk_convert(struct hx_model *m, struct kn_tensor *t, int n_head, int head_size,
                         const char *path, const char *name, char *err) {
    if (t->ne1 != (int64_t)n_head * head_size || head_size % 2 != 0)
        return qp_fail(err, QP_EFORMAT,
                       "cannot read '%s': tensor '%s' has %lld rows, expected %lld", path, name,
                       (long long)t->ne1, (long long)n_head * head_size);
    size_t count;
    if (qp_mul_overflow((size_t)t->ne0, (size_t)t->ne1, &count))
        return qp_fail(err, QP_ERANGE, "cannot read '%s': tensor '%s' is too large", path, name);
    float *dst = qp_alloc_array(count, sizeof(float));
    if (!dst || qp_owned_add(&m->owned, dst) != 0)
        return qp_fail(err, QP_ENOMEM, "cannot read '%s': out of memory", path);
    for (int64_t row = 0; row < t->ne1; row++)
        st_row_to_f32(t->type, t->data, st_qk_src_row(row, head_size, 0), t->ne0,
                      dst + row * t->ne0);
    t->type = KN_F32;
    t->data = dst;
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Loading.

// The safetensors file and config.json for path (a directory or a .safetensors file).
static int st_paths(const char *path, char **st_path, char **cfg_path, char *err) {
    *st_path = *cfg_path = NULL;
    struct stat st;
    if (stat(path, &st) != 0)
        return qp_fail(err, QP_EIO, "cannot read '%s': %s", path, strerror(errno));
    size_t len = strlen(path);
    if (S_ISDIR(st.st_mode)) {
        while (len > 1 && path[len - 1] == '/') len--;
        *st_path = st_concat(path, len, "/model.safetensors");
        *cfg_path = st_concat(path, len, "/config.json");
    } else {
        const char *slash = strrchr(path, '/');
        *st_path = st_concat(path, len, "");
        *cfg_path = st_concat(path, slash ? (size_t)(slash - path + 1) : 0, "config.json");
    }
    if (!*st_path || !*cfg_path) {
        free(*st_path);
        free(*cfg_path);
        *st_path = *cfg_path = NULL;
        return qp_fail(err, QP_ENOMEM, "cannot read '%s': out of memory", path);
    }
    return 0;
}

// The tensors the loader took, to refuse a checkpoint with tensors the block does not use.
struct st_taken {
    const char **names;
    int n, cap;
};

static int st_mark(struct st_taken *tk, const char *name) {
    if (tk->n == tk->cap) {
        int cap = tk->cap ? 2 * tk->cap : 64;
        const char **nn = realloc(tk->names, (size_t)cap * sizeof *nn);
        if (!nn) return QP_ENOMEM;
        tk->names = nn;
        tk->cap = cap;
    }
    tk->names[tk->n++] = name;
    return 0;
}

// st_take, recording the name (a string inside r->header).
static int st_take_mark(struct hx_model *m, const struct st_reader *r, struct st_taken *tk, const char *name, int rank,
                        struct kn_tensor *t, char *err) {
    int rc = st_take(m, r, name, rank, t, err);
    if (rc) return rc;
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(r->header, name);
    if (st_mark(tk, item->string)) return qp_fail(err, QP_ENOMEM, "cannot read '%s': out of memory", r->path);
    return 0;
}

// Replaces t (any of F32/F16/BF16) by an owned F32 copy of rows [r0, r0 + rows), each element
// plus `add` (Gemma's norms store w - 1; llama.cpp's converter adds the 1 in fp32).
static int st_f32_rows(struct hx_model *m, struct kn_tensor *t, int64_t r0, int64_t rows, float add, const char *path,
                       char *err) {
    float *dst = qp_alloc_array((size_t)(rows * t->ne0), sizeof(float));
    if (qp_owned_add(&m->owned, dst)) return qp_fail(err, QP_ENOMEM, "cannot read '%s': out of memory", path);
    for (int64_t r = 0; r < rows; r++) {
        float *o = dst + r * t->ne0;
        st_row_to_f32(t->type, t->data, r0 + r, t->ne0, o);
        if (add != 0.0f)
            for (int64_t i = 0; i < t->ne0; i++) o[i] = o[i] + add;
    }
    *t = (struct kn_tensor){KN_F32, t->ne0, rows, dst};
    return 0;
}

// Splits a fused tensor (Phi-3's qkv_proj, gate_up_proj) into F32 views of its row ranges.
// The copy keeps them independent of the mapping's alignment; a wrong size is refused by name.
static int st_split(struct hx_model *m, const struct st_reader *r, struct st_taken *tk, const char *name,
                    struct kn_tensor *const *dst, const int64_t *rows, int n, char *err) {
    struct kn_tensor t;
    int rc = st_take_mark(m, r, tk, name, 2, &t, err);
    if (rc) return rc;
    int64_t total = 0;
    for (int i = 0; i < n; i++) total += rows[i];
    if (t.ne1 != total)
        return qp_fail(err, QP_EFORMAT, "cannot read '%s': fused tensor '%s' has %lld rows, expected %lld", r->path, name,
                       (long long)t.ne1, (long long)total);
    for (int i = 0, r0 = 0; i < n; r0 += (int)rows[i], i++) {
        *dst[i] = t;
        if ((rc = st_f32_rows(m, dst[i], r0, rows[i], 0.0f, r->path, err))) return rc;
    }
    return 0;
}

// Hugging Face's names of one layer's tensors for the family: (name suffix, rank, field).
struct st_part {
    const char *suffix;
    int rank;
    size_t offset;
};
#define ST_P(s, rank, f) {s, rank, offsetof(struct kn_layer_weights, f)}
static const struct st_part st_parts_llama[] = {
    ST_P("input_layernorm.weight", 1, attn_norm),         ST_P("self_attn.q_proj.weight", 2, wq),
    ST_P("self_attn.k_proj.weight", 2, wk),              ST_P("self_attn.v_proj.weight", 2, wv),
    ST_P("self_attn.o_proj.weight", 2, wo),              ST_P("post_attention_layernorm.weight", 1, ffn_norm),
    ST_P("mlp.gate_proj.weight", 2, w_gate),             ST_P("mlp.down_proj.weight", 2, w_down),
    ST_P("mlp.up_proj.weight", 2, w_up),                 {NULL, 0, 0}};
static const struct st_part st_parts_qwen2[] = {
    ST_P("input_layernorm.weight", 1, attn_norm),         ST_P("self_attn.q_proj.weight", 2, wq),
    ST_P("self_attn.k_proj.weight", 2, wk),              ST_P("self_attn.v_proj.weight", 2, wv),
    ST_P("self_attn.q_proj.bias", 1, bq),                ST_P("self_attn.k_proj.bias", 1, bk),
    ST_P("self_attn.v_proj.bias", 1, bv),                ST_P("self_attn.o_proj.weight", 2, wo),
    ST_P("post_attention_layernorm.weight", 1, ffn_norm), ST_P("mlp.gate_proj.weight", 2, w_gate),
    ST_P("mlp.down_proj.weight", 2, w_down),             ST_P("mlp.up_proj.weight", 2, w_up),
    {NULL, 0, 0}};
static const struct st_part st_parts_phi3[] = { // + the fused qkv_proj and gate_up_proj
    ST_P("input_layernorm.weight", 1, attn_norm),         ST_P("self_attn.o_proj.weight", 2, wo),
    ST_P("post_attention_layernorm.weight", 1, ffn_norm), ST_P("mlp.down_proj.weight", 2, w_down),
    {NULL, 0, 0}};
static const struct st_part st_parts_gemma2[] = { // every norm stores w - 1
    ST_P("input_layernorm.weight", 1, attn_norm),             ST_P("self_attn.q_proj.weight", 2, wq),
    ST_P("self_attn.k_proj.weight", 2, wk),                  ST_P("self_attn.v_proj.weight", 2, wv),
    ST_P("self_attn.o_proj.weight", 2, wo),                  ST_P("post_attention_layernorm.weight", 1, attn_post_norm),
    ST_P("pre_feedforward_layernorm.weight", 1, ffn_norm),   ST_P("post_feedforward_layernorm.weight", 1, ffn_post_norm),
    ST_P("mlp.gate_proj.weight", 2, w_gate),                 ST_P("mlp.down_proj.weight", 2, w_down),
    ST_P("mlp.up_proj.weight", 2, w_up),                     {NULL, 0, 0}};
#undef ST_P

static const struct st_part *st_parts_of(enum kn_arch a) {
    switch (a) {
    case KN_ARCH_QWEN2: return st_parts_qwen2;
    case KN_ARCH_PHI3: return st_parts_phi3;
    case KN_ARCH_GEMMA2: return st_parts_gemma2;
    default: return st_parts_llama;
    }
}

static int st_fill_layer(struct hx_model *m, const struct st_reader *r, struct st_taken *tk, int l, char *err) {
    const struct kn_config *c = &m->w.cfg;
    struct kn_layer_weights *lw = &m->w.layers[l];
    char name[ST_NAME_LEN];
    int rc, gemma = c->arch == KN_ARCH_GEMMA2;
    for (const struct st_part *p = st_parts_of(c->arch); p->suffix; p++) {
        snprintf(name, sizeof name, "model.layers.%d.%s", l, p->suffix);
        struct kn_tensor *t = (struct kn_tensor *)((char *)lw + p->offset);
        if ((rc = st_take_mark(m, r, tk, name, p->rank, t, err))) return rc;
        if (gemma && p->rank == 1 && (rc = st_f32_rows(m, t, 0, 1, 1.0f, r->path, err))) return rc;
    }
    if (c->fused_qkv) {
        struct kn_tensor *dst[3] = {&lw->wq, &lw->wk, &lw->wv};
        int64_t rows[3] = {kn_q_dim(c), kn_kv_dim(c), kn_kv_dim(c)};
        snprintf(name, sizeof name, "model.layers.%d.self_attn.qkv_proj.weight", l);
        if ((rc = st_split(m, r, tk, name, dst, rows, 3, err))) return rc;
    }
    if (c->fused_gate_up) {
        struct kn_tensor *dst[2] = {&lw->w_gate, &lw->w_up};
        int64_t rows[2] = {c->hidden_dim, c->hidden_dim};
        snprintf(name, sizeof name, "model.layers.%d.mlp.gate_up_proj.weight", l);
        if ((rc = st_split(m, r, tk, name, dst, rows, 2, err))) return rc;
    }
    return 0;
}

// Every tensor of the checkpoint must have been taken (Hugging Face's own rotary_emb.inv_freq
// buffers aside, which llama.cpp's converter also drops): one the block does not use would make
// qprobe evaluate another model.
static int st_check_taken(const struct st_reader *r, const struct st_taken *tk, const struct st_family *fam,
                          char *err) {
    const cJSON *item;
    cJSON_ArrayForEach(item, r->header) {
        const char *n = item->string;
        if (!n || strcmp(n, "__metadata__") == 0) continue;
        size_t len = strlen(n);
        if (len > 20 && strcmp(n + len - 20, ".rotary_emb.inv_freq") == 0) continue;
        int found = 0;
        for (int i = 0; i < tk->n && !found; i++) found = tk->names[i] == n;
        char b[80];
        if (!found)
            return qp_fail(err, QP_ENOTSUP, "cannot read '%s': tensor '%s' is not part of a %s block qprobe implements",
                           r->path, st_clean(n, b, sizeof b), fam->cls);
    }
    return 0;
}

// Fills m->w from the mapped file r and config c.
static int st_fill(struct hx_model *m, const struct st_reader *r, const struct st_family *fam, int tie,
                   struct st_taken *tk, char *err) {
    struct kn_weights *w = &m->w;
    const struct kn_config *c = &w->cfg;
    int rc;
    w->layers = qp_calloc_array((size_t)c->n_layers, sizeof *w->layers);
    if (!w->layers || qp_owned_add(&m->owned, w->layers) != 0) {
        w->layers = NULL;
        return qp_fail(err, QP_ENOMEM, "cannot read '%s': out of memory", r->path);
    }
    if ((rc = st_take_mark(m, r, tk, "model.embed_tokens.weight", 2, &w->tok_embd, err))) return rc;
    if ((rc = st_take_mark(m, r, tk, "model.norm.weight", 1, &w->out_norm, err))) return rc;
    if (c->arch == KN_ARCH_GEMMA2 && (rc = st_f32_rows(m, &w->out_norm, 0, 1, 1.0f, r->path, err))) return rc;
    for (int l = 0; l < c->n_layers; l++)
        if ((rc = st_fill_layer(m, r, tk, l, err))) return rc;
    // Tied when config.json says so (Hugging Face then ignores lm_head.weight) or when the
    // checkpoint has no lm_head.weight at all.
    const cJSON *head = cJSON_GetObjectItemCaseSensitive(r->header, "lm_head.weight");
    if (!tie && head) {
        if ((rc = st_take_mark(m, r, tk, "lm_head.weight", 2, &w->output, err))) return rc;
        w->tied = 0;
    } else {
        if (head && st_mark(tk, head->string)) return qp_fail(err, QP_ENOMEM, "cannot read '%s': out of memory", r->path);
        w->output = w->tok_embd;
        w->tied = w->embd_only = 1;
    }
    return st_check_taken(r, tk, fam, err);
}

// The RoPE factor tensors of config.json's rope_scaling, owned by the model: Llama 3's as
// convert_hf_to_gguf.py computes them (in double here), Phi-3's long and short factors as given.
static int st_rope_tensors(struct hx_model *m, const struct st_rope *rope, const char *path, char *err) {
    const struct kn_config *c = &m->w.cfg;
    int half = c->head_size / 2;
    if (rope->llama3) {
        float *f = qp_alloc_array((size_t)half, sizeof(float));
        if (qp_owned_add(&m->owned, f)) return qp_fail(err, QP_ENOMEM, "cannot read '%s': out of memory", path);
        for (int i = 0; i < half; i++) {
            double freq = 1.0 / pow(c->rope_theta, 2.0 * i / c->head_size), wavelen = 2 * M_PI / freq;
            double lo_wl = rope->orig / rope->low, hi_wl = rope->orig / rope->high;
            double smooth = (rope->orig / wavelen - rope->low) / (rope->high - rope->low);
            f[i] = (float)(wavelen < hi_wl ? 1.0 : wavelen > lo_wl ? rope->factor
                                                                   : 1.0 / ((1 - smooth) / rope->factor + smooth));
        }
        m->w.rope_freqs = (struct kn_tensor){KN_F32, half, 1, f};
    }
    if (rope->longs) {
        float *lf = qp_alloc_array((size_t)half, sizeof(float));
        if (qp_owned_add(&m->owned, lf)) return qp_fail(err, QP_ENOMEM, "cannot read '%s': out of memory", path);
        float *sf = qp_alloc_array((size_t)half, sizeof(float));
        if (qp_owned_add(&m->owned, sf)) return qp_fail(err, QP_ENOMEM, "cannot read '%s': out of memory", path);
        memcpy(lf, rope->longs, (size_t)half * sizeof(float));
        memcpy(sf, rope->shorts, (size_t)half * sizeof(float));
        m->w.rope_long = (struct kn_tensor){KN_F32, half, 1, lf};
        m->w.rope_short = (struct kn_tensor){KN_F32, half, 1, sf};
    }
    return 0;
}

// tokenizer.json beside config.json, when there is one: the model's own vocabulary.
static int st_tokenizer(struct hx_model *m, const char *cfg_path, char *err) {
    const char *slash = strrchr(cfg_path, '/');
    char *tok_path = st_concat(cfg_path, slash ? (size_t)(slash - cfg_path + 1) : 0, "tokenizer.json");
    if (!tok_path) return qp_fail(err, QP_ENOMEM, "cannot read '%s': out of memory", cfg_path);
    int rc = 0;
    if (access(tok_path, F_OK) == 0) {
        rc = hx_tok_load_json(tok_path, &m->tok, err);
        if (!rc) rc = hx_tok_fit_rows(m->tok, m->w.cfg.vocab_size, tok_path, err);
    }
    free(tok_path);
    return rc;
}

int hx_safetensors_load(struct hx_model *m, const char *path, char *err) {
    char *st_path, *cfg_path;
    char msg[QP_ERRLEN];
    struct st_reader r = {0};
    struct st_rope rope = {0};
    struct st_taken tk = {0};
    const struct st_family *fam = NULL;
    int tie = 0;
    int rc = st_paths(path, &st_path, &cfg_path, err);
    if (rc) return rc;

    if ((rc = st_config_read(cfg_path, &m->w.cfg, &fam, &tie, &rope, err))) goto done;
    if ((rc = kn_config_check(&m->w.cfg, msg))) {
        qp_fail(err, rc, "cannot read '%s': %s", cfg_path, msg);
        goto done;
    }
    if ((rc = st_open(m, &r, st_path, err))) goto done;
    if ((rc = st_fill(m, &r, fam, tie, &tk, err))) goto done;
    if ((rc = st_rope_tensors(m, &rope, cfg_path, err))) goto done;
    if ((rc = kn_weights_check(&m->w, msg))) {
        qp_fail(err, rc, "cannot read '%s': %s", st_path, msg);
        goto done;
    }
    const struct kn_config *c = &m->w.cfg;
    char name[ST_NAME_LEN];
    for (int l = 0; fam->permute_qk && l < c->n_layers; l++) {
        snprintf(name, sizeof name, "model.layers.%d.self_attn.q_proj.weight", l);
        if ((rc = st_qk_convert(m, &m->w.layers[l].wq, c->n_heads, c->head_size, st_path, name,
                                err)))
            goto done;
        snprintf(name, sizeof name, "model.layers.%d.self_attn.k_proj.weight", l);
        if ((rc = st_qk_convert(m, &m->w.layers[l].wk, c->n_kv_heads, c->head_size, st_path, name,
                                err)))
            goto done;
    }
    if ((rc = st_tokenizer(m, cfg_path, err))) goto done;
    m->format = HX_FMT_SAFETENSORS;
done:
    free(rope.longs);
    free(rope.shorts);
    free(tk.names);
    cJSON_Delete(r.header);
    free(st_path);
    free(cfg_path);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// Writing.

// A growable text buffer; oom set (and text dropped) when an allocation fails.
struct st_text {
    char *p;
    size_t len, cap;
    int oom;
};

static void st_text_printf(struct st_text *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void st_text_printf(struct st_text *b, const char *fmt, ...) {
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if (b->p && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + (size_t)n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            free(b->p);
            b->p = NULL;
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

// One tensor to write.
struct st_wtensor {
    char name[ST_NAME_LEN];
    const struct kn_tensor *t; // the first part
    const struct kn_tensor *parts[3]; // row-wise concatenated (Phi-3's fused tensors)
    int n_parts;
    int64_t rows;  // of all parts
    int rank;     // 1 or 2
    int qk_heads; // > 0: permute rows to HF order, this many heads
    float add;    // added to every element (Gemma's norms are stored as w - 1)
    uint64_t begin, end;
};

static int st_wtensor_cmp(const void *a, const void *b) {
    return strcmp(((const struct st_wtensor *)a)->name, ((const struct st_wtensor *)b)->name);
}

static const char *st_dtype_name(int type) {
    return type == KN_F32 ? "F32" : type == KN_F16 ? "F16" : "BF16";
}

// Opens dir/name.tmp for writing; *tmp and *final are malloc'd paths.
static FILE *st_create(const char *dir, const char *name, char **tmp, char **final, char *err) {
    size_t len = strlen(dir);
    while (len > 1 && dir[len - 1] == '/') len--;
    char *base = st_concat(dir, len, "/");
    *final = base ? st_concat(base, strlen(base), name) : NULL;
    *tmp = *final ? st_concat(*final, strlen(*final), ".tmp") : NULL;
    free(base);
    if (!*tmp) {
        free(*final);
        *final = NULL;
        qp_fail(err, QP_ENOMEM, "cannot write '%s': out of memory", dir);
        return NULL;
    }
    FILE *f = fopen(*tmp, "wb");
    if (!f) qp_fail(err, QP_EIO, "cannot write '%s': %s", *tmp, strerror(errno));
    return f;
}

// Flushes, fsyncs and closes f, then renames tmp to final and syncs the directory.
// f is closed and tmp removed on failure as well.
static int st_commit(FILE *f, const char *dir, const char *tmp, const char *final, char *err) {
    int bad = ferror(f) != 0;
    int e = bad ? EIO : 0;
    if (fflush(f) != 0 && !e) e = errno;
    if (fsync(fileno(f)) != 0 && !e) e = errno;
    if (fclose(f) != 0 && !e) e = errno;
    if (e || bad) {
        unlink(tmp);
        return qp_fail(err, QP_EWRITE, "cannot write '%s': %s", tmp, strerror(e ? e : EIO));
    }
    if (rename(tmp, final) != 0) {
        e = errno;
        unlink(tmp);
        return qp_fail(err, QP_EWRITE, "cannot rename '%s' to '%s': %s", tmp, final, strerror(e));
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) { // best effort: makes the rename itself durable
        (void)fsync(dfd);
        close(dfd);
    }
    return 0;
}

// The shortest decimal that reads back as f (as a double, then rounded to float), so that
// config.json says 1e-05 rather than 9.99999974737875e-06.
static double st_float_json(float f) {
    char buf[32];
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
        double d = strtod(buf, NULL);
        if ((float)d == f) return d;
    }
    return (double)f;
}

// The rope_scaling object that gives back w's RoPE factors, or NULL with *ok = 1 when there are
// none; *ok = 0 when the factors have no config.json form (then the write is refused).
static cJSON *st_rope_json(const struct kn_weights *w, int *ok) {
    const struct kn_config *c = &w->cfg;
    int half = c->head_size / 2;
    *ok = 1;
    if (w->rope_freqs.data) { // Llama 3: factor = the largest divisor, low 1, high 4, 8192
        const float *f = w->rope_freqs.data;
        struct st_rope r = {.llama3 = 1, .factor = 1, .low = 1, .high = 4, .orig = 8192};
        for (int i = 0; i < half; i++) r.factor = fmax(r.factor, f[i]);
        for (int i = 0; i < half && *ok; i++) {
            double freq = 1.0 / pow(c->rope_theta, 2.0 * i / c->head_size), wl = 2 * M_PI / freq;
            double sm = (r.orig / wl - r.low) / (r.high - r.low);
            double want = wl < r.orig / r.high ? 1.0 : wl > r.orig / r.low ? r.factor : 1.0 / ((1 - sm) / r.factor + sm);
            *ok = fabs(want - f[i]) <= 1e-6 * want;
        }
        if (!*ok || c->arch != KN_ARCH_LLAMA) return *ok = 0, NULL;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "rope_type", "llama3");
        cJSON_AddNumberToObject(o, "factor", st_float_json((float)r.factor));
        cJSON_AddNumberToObject(o, "low_freq_factor", r.low);
        cJSON_AddNumberToObject(o, "high_freq_factor", r.high);
        cJSON_AddNumberToObject(o, "original_max_position_embeddings", r.orig);
        return o;
    }
    if (w->rope_long.data) { // Phi-3 longrope; the attention factor is implied by the contexts
        double scale = (double)c->seq_len / c->rope_ctx_orig;
        float af = scale > 1.0 ? (float)sqrt(1.0 + log(scale) / log((double)c->rope_ctx_orig)) : 1.0f;
        if (c->arch != KN_ARCH_PHI3 || c->rope_ctx_orig <= 0 || af != c->rope_attn_factor) return *ok = 0, NULL;
        cJSON *o = cJSON_CreateObject(), *lf = cJSON_CreateArray(), *sf = cJSON_CreateArray();
        for (int i = 0; i < half; i++) {
            cJSON_AddItemToArray(lf, cJSON_CreateNumber(st_float_json(((const float *)w->rope_long.data)[i])));
            cJSON_AddItemToArray(sf, cJSON_CreateNumber(st_float_json(((const float *)w->rope_short.data)[i])));
        }
        cJSON_AddStringToObject(o, "type", "longrope");
        cJSON_AddItemToObject(o, "long_factor", lf);
        cJSON_AddItemToObject(o, "short_factor", sf);
        return o;
    }
    if (c->rope_freq_scale > 0 && c->rope_freq_scale != 1.0f) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "type", "linear");
        cJSON_AddNumberToObject(o, "factor", st_float_json(1.0f / c->rope_freq_scale));
        return o;
    }
    *ok = c->rope_attn_factor == 0;
    return NULL;
}

// Gemma's query_pre_attn_scalar q for a query scale s = 1/sqrtf(q): the integer (head sizes are)
// whose scale is s bit for bit, else the nearest decimal.
static double st_qpas(float s) {
    double q = 1.0 / ((double)s * s), r = floor(q + 0.5);
    return 1.0f / sqrtf((float)r) == s ? r : q;
}

// The family's own keys.
static int st_config_family(cJSON *root, const struct kn_config *c) {
    int ok = 1;
    if (c->head_size * c->n_heads != c->dim || c->arch == KN_ARCH_GEMMA2)
        ok = ok && cJSON_AddNumberToObject(root, "head_dim", c->head_size);
    if (c->swa_window > 0 || c->arch == KN_ARCH_PHI3)
        ok = ok && cJSON_AddNumberToObject(root, "sliding_window", c->swa_window);
    if (c->rope_ctx_orig > 0) ok = ok && cJSON_AddNumberToObject(root, "original_max_position_embeddings", c->rope_ctx_orig);
    if (c->arch == KN_ARCH_QWEN2) ok = ok && cJSON_AddBoolToObject(root, "use_sliding_window", 0);
    if (c->arch == KN_ARCH_GEMMA2) {
        ok = ok && cJSON_AddStringToObject(root, "hidden_activation", "gelu_pytorch_tanh");
        ok = ok && cJSON_AddNumberToObject(root, "query_pre_attn_scalar", st_qpas(c->attn_scale));
        ok = ok && cJSON_AddNumberToObject(root, "attn_logit_softcapping", st_float_json(c->attn_softcap));
        ok = ok && cJSON_AddNumberToObject(root, "final_logit_softcapping", st_float_json(c->final_softcap));
    }
    return ok;
}

// The family and block variant a config.json of w's class gives back (st_cfg_family), so that
// a model the class cannot express is refused instead of written as another one.
static const struct st_family *st_family_of(const struct kn_weights *w) {
    const struct kn_config *c = &w->cfg;
    const struct st_family *fam = NULL;
    for (size_t i = 0; i < QP_ARRAY_LEN(st_families) && !fam; i++)
        if (st_families[i].arch == c->arch) fam = &st_families[i];
    if (c->arch == KN_ARCH_LLAMA && c->swa_window > 0) fam = &st_families[1]; // Mistral
    struct kn_config want = *c;
    kn_config_set_family(&want);
    int gemma = c->arch == KN_ARCH_GEMMA2;
    if (!gemma) want.attn_scale = want.attn_softcap = want.final_softcap = 0;
    if (c->arch == KN_ARCH_QWEN2) want.swa_window = 0;
    if (gemma && !(c->attn_scale > 0)) return NULL;
    return fam && memcmp(&want, c, sizeof want) == 0 ? fam : NULL;
}

static int st_write_config(const struct kn_weights *w, const char *dir, int type, char *err) {
    const struct kn_config *c = &w->cfg;
    const struct st_family *fam = st_family_of(w);
    int rope_ok;
    cJSON *rope = fam ? st_rope_json(w, &rope_ok) : NULL;
    if (!fam || !rope_ok) {
        cJSON_Delete(rope);
        return qp_fail(err, QP_ENOTSUP, "cannot write '%s': this %s model's block (scales, biases, norms or RoPE "
                       "factors) has no config.json form", dir, kn_arch_name(c->arch));
    }
    cJSON *root = cJSON_CreateObject();
    const char *arch = fam->cls;
    int ok = root != NULL;
    ok = ok && cJSON_AddItemToObject(root, "architectures", cJSON_CreateStringArray(&arch, 1));
    ok = ok && cJSON_AddStringToObject(root, "model_type", fam->model_type);
    ok = ok && cJSON_AddNumberToObject(root, "hidden_size", c->dim);
    ok = ok && cJSON_AddNumberToObject(root, "intermediate_size", c->hidden_dim);
    ok = ok && cJSON_AddNumberToObject(root, "num_hidden_layers", c->n_layers);
    ok = ok && cJSON_AddNumberToObject(root, "num_attention_heads", c->n_heads);
    ok = ok && cJSON_AddNumberToObject(root, "num_key_value_heads", c->n_kv_heads);
    ok = ok && cJSON_AddNumberToObject(root, "vocab_size", c->vocab_size);
    ok = ok && cJSON_AddNumberToObject(root, "max_position_embeddings", c->seq_len);
    ok = ok && cJSON_AddNumberToObject(root, "rms_norm_eps", st_float_json(c->norm_eps));
    ok = ok && cJSON_AddNumberToObject(root, "rope_theta", st_float_json(c->rope_theta));
    ok = ok && cJSON_AddBoolToObject(root, "tie_word_embeddings", w->tied ? 1 : 0);
    ok = ok && cJSON_AddStringToObject(root, "hidden_act", fam->act);
    ok = ok && st_config_family(root, c);
    if (rope) ok = ok && cJSON_AddItemToObject(root, "rope_scaling", rope);
    ok = ok && cJSON_AddStringToObject(root, "torch_dtype",
                                       type == KN_F32   ? "float32"
                                       : type == KN_F16 ? "float16"
                                                        : "bfloat16");
    char *text = ok ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    if (!text) return qp_fail(err, QP_ENOMEM, "cannot write '%s': out of memory", dir);

    char *tmp, *final;
    FILE *f = st_create(dir, "config.json", &tmp, &final, err);
    int rc = QP_EIO;
    if (f) {
        fputs(text, f);
        fputc('\n', f);
        rc = st_commit(f, dir, tmp, final, err);
    } else if (!tmp) {
        rc = QP_ENOMEM;
    }
    cJSON_free(text);
    free(tmp);
    free(final);
    return rc;
}

// Writes one tensor's rows as `type`, permuting Q/K rows into HF order.
// Writes one tensor's rows as `type`: the parts one after the other, Q/K rows permuted into HF
// order, `add` applied (then always through fp32).
static void st_write_tensor(FILE *f, const struct st_wtensor *wt, int type, float *row32,
                            void *rowout) {
    for (int p = 0; p < wt->n_parts; p++) {
        const struct kn_tensor *t = wt->parts[p];
        size_t in_bytes = kn_row_bytes(t->type, t->ne0), out_bytes = kn_row_bytes(type, t->ne0);
        for (int64_t r = 0; r < t->ne1; r++) {
            int64_t s = wt->qk_heads > 0 ? st_qk_src_row(r, (int)(t->ne1 / wt->qk_heads), 1) : r;
            if (t->type == type && wt->add == 0.0f) {
                fwrite((const uint8_t *)t->data + (size_t)s * in_bytes, 1, in_bytes, f);
                continue;
            }
            st_row_to_f32(t->type, t->data, s, t->ne0, row32);
            if (wt->add != 0.0f)
                for (int64_t i = 0; i < t->ne0; i++) row32[i] = row32[i] + wt->add;
            if (type == KN_F32) {
                memcpy(rowout, row32, out_bytes);
            } else {
                uint16_t *o = rowout;
                for (int64_t i = 0; i < t->ne0; i++)
                    o[i] = type == KN_F16 ? qp_fp32_to_fp16(row32[i]) : qp_fp32_to_bf16(row32[i]);
            }
            fwrite(rowout, 1, out_bytes, f);
        }
    }
}

// The tensor list of w in the family's Hugging Face names (unsorted); *n gets the count.
static size_t st_wlist(const struct kn_weights *w, struct st_wtensor *ts) {
    const struct kn_config *c = &w->cfg;
    int gemma = c->arch == KN_ARCH_GEMMA2, llama = c->arch == KN_ARCH_LLAMA;
    float nadd = gemma ? -1.0f : 0.0f;
    size_t n = 0;
#define ST_ADD(tensor, rank_, heads, add_, ...)                                                    \
    do {                                                                                           \
        snprintf(ts[n].name, ST_NAME_LEN, __VA_ARGS__);                                            \
        ts[n].t = ts[n].parts[0] = (tensor);                                                       \
        ts[n].n_parts = 1;                                                                         \
        ts[n].rows = (tensor)->ne1;                                                                \
        ts[n].rank = (rank_);                                                                      \
        ts[n].qk_heads = (heads);                                                                  \
        ts[n].add = (add_);                                                                        \
        n++;                                                                                       \
    } while (0)
#define ST_MORE(tensor)                                                                            \
    do {                                                                                           \
        ts[n - 1].parts[ts[n - 1].n_parts++] = (tensor);                                           \
        ts[n - 1].rows += (tensor)->ne1;                                                           \
    } while (0)
    ST_ADD(&w->tok_embd, 2, 0, 0.0f, "model.embed_tokens.weight");
    ST_ADD(&w->out_norm, 1, 0, nadd, "model.norm.weight");
    if (!w->tied) ST_ADD(&w->output, 2, 0, 0.0f, "lm_head.weight");
    for (int l = 0; l < c->n_layers; l++) {
        const struct kn_layer_weights *lw = &w->layers[l];
        ST_ADD(&lw->attn_norm, 1, 0, nadd, "model.layers.%d.input_layernorm.weight", l);
        if (c->fused_qkv) {
            ST_ADD(&lw->wq, 2, 0, 0.0f, "model.layers.%d.self_attn.qkv_proj.weight", l);
            ST_MORE(&lw->wk);
            ST_MORE(&lw->wv);
        } else {
            ST_ADD(&lw->wq, 2, llama ? c->n_heads : 0, 0.0f, "model.layers.%d.self_attn.q_proj.weight", l);
            ST_ADD(&lw->wk, 2, llama ? c->n_kv_heads : 0, 0.0f, "model.layers.%d.self_attn.k_proj.weight", l);
            ST_ADD(&lw->wv, 2, 0, 0.0f, "model.layers.%d.self_attn.v_proj.weight", l);
        }
        if (c->has_qkv_bias) {
            ST_ADD(&lw->bq, 1, 0, 0.0f, "model.layers.%d.self_attn.q_proj.bias", l);
            ST_ADD(&lw->bk, 1, 0, 0.0f, "model.layers.%d.self_attn.k_proj.bias", l);
            ST_ADD(&lw->bv, 1, 0, 0.0f, "model.layers.%d.self_attn.v_proj.bias", l);
        }
        ST_ADD(&lw->wo, 2, 0, 0.0f, "model.layers.%d.self_attn.o_proj.weight", l);
        if (gemma) {
            ST_ADD(&lw->attn_post_norm, 1, 0, nadd, "model.layers.%d.post_attention_layernorm.weight", l);
            ST_ADD(&lw->ffn_norm, 1, 0, nadd, "model.layers.%d.pre_feedforward_layernorm.weight", l);
            ST_ADD(&lw->ffn_post_norm, 1, 0, nadd, "model.layers.%d.post_feedforward_layernorm.weight", l);
        } else {
            ST_ADD(&lw->ffn_norm, 1, 0, 0.0f, "model.layers.%d.post_attention_layernorm.weight", l);
        }
        if (c->fused_gate_up) {
            ST_ADD(&lw->w_gate, 2, 0, 0.0f, "model.layers.%d.mlp.gate_up_proj.weight", l);
            ST_MORE(&lw->w_up);
        } else {
            ST_ADD(&lw->w_gate, 2, 0, 0.0f, "model.layers.%d.mlp.gate_proj.weight", l);
            ST_ADD(&lw->w_up, 2, 0, 0.0f, "model.layers.%d.mlp.up_proj.weight", l);
        }
        ST_ADD(&lw->w_down, 2, 0, 0.0f, "model.layers.%d.mlp.down_proj.weight", l);
    }
#undef ST_ADD
#undef ST_MORE
    return n;
}

// Offsets and the JSON header of ts[0..n) (sorted), padded with spaces so that the data starts
// 8-byte aligned; *max_ne0 gets the widest row. Only f32/f16/bf16 sources can be written.
static int st_header(struct st_wtensor *ts, size_t n, enum kn_type type, const char *dir, struct st_text *h,
                     int64_t *max_ne0, char *err) {
    uint64_t pos = 0;
    size_t out_size = (size_t)kn_row_bytes(type, 1);
    *max_ne0 = 1;
    st_text_printf(h, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (size_t i = 0; i < n; i++) {
        const struct kn_tensor *t = ts[i].t;
        for (int p = 0; p < ts[i].n_parts; p++) {
            const struct kn_tensor *tp = ts[i].parts[p];
            if (tp->type != KN_F32 && tp->type != KN_F16 && tp->type != KN_BF16) {
                const struct kn_type_info *ti = kn_type_info(tp->type);
                return qp_fail(err, QP_ENOTSUP,
                               "cannot write '%s': tensor '%s' has type %s; only f32, f16 and bf16 can be "
                               "written as safetensors",
                               dir, ts[i].name, ti ? ti->name : "?");
            }
        }
        uint64_t bytes = (uint64_t)t->ne0 * (uint64_t)ts[i].rows * out_size; // shapes checked above
        ts[i].begin = pos;
        ts[i].end = pos += bytes;
        *max_ne0 = QP_MAX(*max_ne0, t->ne0);
        if (ts[i].rank == 2)
            st_text_printf(h, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%lld,%lld],\"data_offsets\":[%llu,%llu]}",
                           ts[i].name, st_dtype_name(type), (long long)ts[i].rows, (long long)t->ne0,
                           (unsigned long long)ts[i].begin, (unsigned long long)ts[i].end);
        else
            st_text_printf(h, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%lld],\"data_offsets\":[%llu,%llu]}",
                           ts[i].name, st_dtype_name(type), (long long)(t->ne0 * t->ne1),
                           (unsigned long long)ts[i].begin, (unsigned long long)ts[i].end);
    }
    st_text_printf(h, "}");
    while (!h->oom && h->len % 8 != 0) st_text_printf(h, " ");
    return 0;
}

// The tensor list of w sorted by name as Hugging Face writes it (*out, caller frees with
// qp_free), or a refusal when the family's block has no config.json form.
static int st_wlist_sorted(const struct kn_weights *w, const char *dir, struct st_wtensor **out, size_t *n,
                           char *err) {
    size_t cap = (size_t)w->cfg.n_layers * 13 + 3;
    struct st_wtensor *ts = qp_calloc_array(cap, sizeof *ts);
    if (!ts) return qp_fail(err, QP_ENOMEM, "cannot write '%s': out of memory", dir);
    *n = st_wlist(w, ts);
    QP_ASSERT(*n <= cap);
    int rope_ok = 1;
    cJSON_Delete(st_family_of(w) ? st_rope_json(w, &rope_ok) : NULL);
    if (!st_family_of(w) || !rope_ok) { // refused before any file is written
        qp_free(ts);
        return qp_fail(err, QP_ENOTSUP, "cannot write '%s': this %s model's block (scales, biases, norms or RoPE "
                       "factors) has no config.json form", dir, kn_arch_name(w->cfg.arch));
    }
    qsort(ts, *n, sizeof *ts, st_wtensor_cmp);
    *out = ts;
    return 0;
}

// The tensor list, the JSON header, the data and the two atomic renames (model.safetensors,
// config.json) share one set of buffers and temporary paths, freed in one place at the end.
int hx_safetensors_write(const struct kn_weights *w, const char *dir, enum kn_type type, char *err) {
    if (type != KN_F32 && type != KN_F16 && type != KN_BF16)
        return qp_fail(err, QP_EINVAL, "cannot write '%s': output type must be f32, f16 or bf16",
                       dir);
    char msg[QP_ERRLEN];
    int rc;
    if ((rc = kn_config_check(&w->cfg, msg)) || (rc = kn_weights_check(w, msg)))
        return qp_fail(err, rc, "cannot write '%s': %s", dir, msg);
    QP_ASSERT(w->layers != NULL);
    struct st_wtensor *ts = NULL;
    size_t n = 0;
    if ((rc = st_wlist_sorted(w, dir, &ts, &n, err))) return rc;
    struct st_text h = {0};
    int64_t max_ne0 = 1;
    char *tmp = NULL, *final = NULL;
    float *row32 = NULL;
    void *rowout = NULL;
    FILE *f = NULL;
    if ((rc = st_header(ts, n, type, dir, &h, &max_ne0, err))) goto done;
    row32 = qp_alloc_array((size_t)max_ne0, sizeof(float));
    rowout = qp_alloc_array((size_t)max_ne0, sizeof(float));
    if (h.oom || !row32 || !rowout) {
        rc = qp_fail(err, QP_ENOMEM, "cannot write '%s': out of memory", dir);
        goto done;
    }
    f = st_create(dir, "model.safetensors", &tmp, &final, err);
    if (!f) {
        rc = tmp ? QP_EIO : QP_ENOMEM;
        goto done;
    }
    uint64_t hlen = h.len;
    fwrite(&hlen, 8, 1, f); // little endian
    fwrite(h.p, 1, h.len, f);
    for (size_t i = 0; i < n && !ferror(f); i++) st_write_tensor(f, &ts[i], type, row32, rowout);
    rc = st_commit(f, dir, tmp, final, err);
    if (!rc) rc = st_write_config(w, dir, type, err);
done:
    free(h.p);
    free(tmp);
    free(final);
    qp_free(row32);
    qp_free(rowout);
    qp_free(ts);
    return rc;
}
