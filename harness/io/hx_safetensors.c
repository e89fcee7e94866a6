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

// Is this a Llama config? architectures contains "LlamaForCausalLM", or model_type is "llama".
static int st_cfg_arch(const cJSON *root, const char *path, char *err) {
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
        if (strcmp(a->valuestring, "LlamaForCausalLM") == 0) return 0;
    }
    if (type && strcmp(type->valuestring, "llama") == 0) return 0;
    return qp_fail(err, QP_ENOTSUP,
                   "cannot read '%s': not a Llama model (needs architectures 'LlamaForCausalLM' or "
                   "model_type 'llama')",
                   path);
}

// Reads config.json into c and *tie (tie_word_embeddings). Options the engine does not
// implement (RoPE scaling, biases, other activations, a head_dim that is not dim / n_heads)
// are refused rather than silently evaluated wrongly.
static int st_config_read(const char *path, struct kn_config *c, int *tie, char *err) {
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
    if ((rc = st_cfg_arch(root, path, err))) goto done;
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
    if ((rc = st_cfg_bool(root, "tie_word_embeddings", 0, tie, path, err))) goto done;
    c->head_size = c->dim / c->n_heads;

    int head_dim, bias;
    if ((rc = st_cfg_int(root, "head_dim", c->head_size, &head_dim, path, err))) goto done;
    if (head_dim != c->head_size) {
        rc =
            qp_fail(err, QP_ENOTSUP,
                    "cannot read '%s': key 'head_dim' is %d, but hidden_size / num_attention_heads "
                    "is %d",
                    path, head_dim, c->head_size);
        goto done;
    }
    if (st_key(root, "rope_scaling")) {
        rc =
            qp_fail(err, QP_ENOTSUP, "cannot read '%s': key 'rope_scaling' is not supported", path);
        goto done;
    }
    const char *bias_keys[] = {"attention_bias", "mlp_bias"};
    for (size_t i = 0; i < QP_ARRAY_LEN(bias_keys); i++) {
        if ((rc = st_cfg_bool(root, bias_keys[i], 0, &bias, path, err))) goto done;
        if (bias) {
            rc = qp_fail(err, QP_ENOTSUP, "cannot read '%s': key '%s' (biases) is not supported",
                         path, bias_keys[i]);
            goto done;
        }
    }
    const cJSON *act = st_key(root, "hidden_act");
    if (act && (!cJSON_IsString(act) || strcmp(act->valuestring, "silu") != 0)) {
        rc = qp_fail(err, QP_ENOTSUP, "cannot read '%s': key 'hidden_act' must be \"silu\"", path);
        goto done;
    }
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

// Fills m->w from the mapped file r and config c.
static int st_fill(struct hx_model *m, const struct st_reader *r, int tie, char *err) {
    struct kn_weights *w = &m->w;
    const struct kn_config *c = &w->cfg;
    char name[ST_NAME_LEN];
    int rc;
    w->layers = qp_calloc_array((size_t)c->n_layers, sizeof *w->layers);
    if (!w->layers || qp_owned_add(&m->owned, w->layers) != 0) {
        w->layers = NULL;
        return qp_fail(err, QP_ENOMEM, "cannot read '%s': out of memory", r->path);
    }
    if ((rc = st_take(m, r, "model.embed_tokens.weight", 2, &w->tok_embd, err))) return rc;
    if ((rc = st_take(m, r, "model.norm.weight", 1, &w->out_norm, err))) return rc;
    for (int l = 0; l < c->n_layers; l++) {
        struct kn_layer_weights *lw = &w->layers[l];
        static const struct {
            const char *suffix;
            int rank;
            size_t offset;
        } parts[] = {
            {"input_layernorm.weight", 1, offsetof(struct kn_layer_weights, attn_norm)},
            {"self_attn.q_proj.weight", 2, offsetof(struct kn_layer_weights, wq)},
            {"self_attn.k_proj.weight", 2, offsetof(struct kn_layer_weights, wk)},
            {"self_attn.v_proj.weight", 2, offsetof(struct kn_layer_weights, wv)},
            {"self_attn.o_proj.weight", 2, offsetof(struct kn_layer_weights, wo)},
            {"post_attention_layernorm.weight", 1, offsetof(struct kn_layer_weights, ffn_norm)},
            {"mlp.gate_proj.weight", 2, offsetof(struct kn_layer_weights, w_gate)},
            {"mlp.down_proj.weight", 2, offsetof(struct kn_layer_weights, w_down)},
            {"mlp.up_proj.weight", 2, offsetof(struct kn_layer_weights, w_up)},
        };
        for (size_t i = 0; i < QP_ARRAY_LEN(parts); i++) {
            snprintf(name, sizeof name, "model.layers.%d.%s", l, parts[i].suffix);
            struct kn_tensor *t = (struct kn_tensor *)((char *)lw + parts[i].offset);
            if ((rc = st_take(m, r, name, parts[i].rank, t, err))) return rc;
        }
    }
    // Tied when config.json says so (Hugging Face then ignores lm_head.weight) or when the
    // checkpoint has no lm_head.weight at all.
    if (!tie && cJSON_GetObjectItemCaseSensitive(r->header, "lm_head.weight")) {
        if ((rc = st_take(m, r, "lm_head.weight", 2, &w->output, err))) return rc;
        w->tied = 0;
    } else {
        w->output = w->tok_embd;
        w->tied = 1;
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
    int tie = 0;
    int rc = st_paths(path, &st_path, &cfg_path, err);
    if (rc) return rc;

    if ((rc = st_config_read(cfg_path, &m->w.cfg, &tie, err))) goto done;
    if ((rc = kn_config_check(&m->w.cfg, msg))) {
        qp_fail(err, rc, "cannot read '%s': %s", cfg_path, msg);
        goto done;
    }
    if ((rc = st_open(m, &r, st_path, err))) goto done;
    if ((rc = st_fill(m, &r, tie, err))) goto done;
    if ((rc = kn_weights_check(&m->w, msg))) {
        qp_fail(err, rc, "cannot read '%s': %s", st_path, msg);
        goto done;
    }
    const struct kn_config *c = &m->w.cfg;
    char name[ST_NAME_LEN];
    for (int l = 0; l < c->n_layers; l++) {
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
    const struct kn_tensor *t;
    int rank;     // 1 or 2
    int qk_heads; // > 0: permute rows to HF order, this many heads
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

static int st_write_config(const struct kn_weights *w, const char *dir, int type, char *err) {
    const struct kn_config *c = &w->cfg;
    cJSON *root = cJSON_CreateObject();
    const char *arch = "LlamaForCausalLM";
    int ok = root != NULL;
    ok = ok && cJSON_AddItemToObject(root, "architectures", cJSON_CreateStringArray(&arch, 1));
    ok = ok && cJSON_AddStringToObject(root, "model_type", "llama");
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
    ok = ok && cJSON_AddStringToObject(root, "hidden_act", "silu");
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
static void st_write_tensor(FILE *f, const struct st_wtensor *wt, int type, float *row32,
                            void *rowout) {
    const struct kn_tensor *t = wt->t;
    size_t in_bytes = kn_row_bytes(t->type, t->ne0), out_bytes = kn_row_bytes(type, t->ne0);
    for (int64_t r = 0; r < t->ne1; r++) {
        int64_t s = wt->qk_heads > 0 ? st_qk_src_row(r, (int)(t->ne1 / wt->qk_heads), 1) : r;
        if (t->type == type) {
            fwrite((const uint8_t *)t->data + (size_t)s * in_bytes, 1, in_bytes, f);
            continue;
        }
        st_row_to_f32(t->type, t->data, s, t->ne0, row32);
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

// About 110 lines: the tensor list, the JSON header, the data and the two atomic renames share
// one set of buffers and temporary paths whose cleanup on every failure is in one place at the
// end; it reads top to bottom in file order. (A split is welcome when the writer next changes.)
int hx_safetensors_write(const struct kn_weights *w, const char *dir, enum kn_type type, char *err) {
    if (type != KN_F32 && type != KN_F16 && type != KN_BF16)
        return qp_fail(err, QP_EINVAL, "cannot write '%s': output type must be f32, f16 or bf16",
                       dir);
    char msg[QP_ERRLEN];
    int rc;
    if ((rc = kn_config_check(&w->cfg, msg)) || (rc = kn_weights_check(w, msg)))
        return qp_fail(err, rc, "cannot write '%s': %s", dir, msg);
    const struct kn_config *c = &w->cfg;
    QP_ASSERT(w->layers != NULL);

    // The tensor list, sorted by name as Hugging Face writes it.
    size_t n = 0, cap = (size_t)c->n_layers * 9 + 3;
    struct st_wtensor *ts = qp_calloc_array(cap, sizeof *ts);
    if (!ts) return qp_fail(err, QP_ENOMEM, "cannot write '%s': out of memory", dir);
#define ST_ADD(tensor, rank_, heads, ...)                                                          \
    do {                                                                                           \
        snprintf(ts[n].name, ST_NAME_LEN, __VA_ARGS__);                                            \
        ts[n].t = (tensor);                                                                        \
        ts[n].rank = (rank_);                                                                      \
        ts[n].qk_heads = (heads);                                                                  \
        n++;                                                                                       \
    } while (0)
    ST_ADD(&w->tok_embd, 2, 0, "model.embed_tokens.weight");
    ST_ADD(&w->out_norm, 1, 0, "model.norm.weight");
    if (!w->tied) ST_ADD(&w->output, 2, 0, "lm_head.weight");
    for (int l = 0; l < c->n_layers; l++) {
        const struct kn_layer_weights *lw = &w->layers[l];
        ST_ADD(&lw->attn_norm, 1, 0, "model.layers.%d.input_layernorm.weight", l);
        ST_ADD(&lw->wq, 2, c->n_heads, "model.layers.%d.self_attn.q_proj.weight", l);
        ST_ADD(&lw->wk, 2, c->n_kv_heads, "model.layers.%d.self_attn.k_proj.weight", l);
        ST_ADD(&lw->wv, 2, 0, "model.layers.%d.self_attn.v_proj.weight", l);
        ST_ADD(&lw->wo, 2, 0, "model.layers.%d.self_attn.o_proj.weight", l);
        ST_ADD(&lw->ffn_norm, 1, 0, "model.layers.%d.post_attention_layernorm.weight", l);
        ST_ADD(&lw->w_gate, 2, 0, "model.layers.%d.mlp.gate_proj.weight", l);
        ST_ADD(&lw->w_down, 2, 0, "model.layers.%d.mlp.down_proj.weight", l);
        ST_ADD(&lw->w_up, 2, 0, "model.layers.%d.mlp.up_proj.weight", l);
    }
#undef ST_ADD
    QP_ASSERT(n <= cap);
    qsort(ts, n, sizeof *ts, st_wtensor_cmp);

    // Offsets and the header, padded with spaces so that the data starts 8-byte aligned.
    struct st_text h = {0};
    uint64_t pos = 0;
    int64_t max_ne0 = 1;
    size_t out_size = (size_t)kn_row_bytes(type, 1);
    char *tmp = NULL, *final = NULL;
    float *row32 = NULL;
    void *rowout = NULL;
    FILE *f = NULL;
    st_text_printf(&h, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (size_t i = 0; i < n; i++) {
        const struct kn_tensor *t = ts[i].t;
        if (t->type != KN_F32 && t->type != KN_F16 && t->type != KN_BF16) {
            const struct kn_type_info *ti = kn_type_info(t->type);
            rc =
                qp_fail(err, QP_ENOTSUP,
                        "cannot write '%s': tensor '%s' has type %s; only f32, f16 and bf16 can be "
                        "written as safetensors",
                        dir, ts[i].name, ti ? ti->name : "?");
            goto done;
        }
        uint64_t bytes = (uint64_t)t->ne0 * (uint64_t)t->ne1 * out_size; // shapes checked above
        ts[i].begin = pos;
        ts[i].end = pos += bytes;
        max_ne0 = QP_MAX(max_ne0, t->ne0);
        if (ts[i].rank == 2)
            st_text_printf(
                &h, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%lld,%lld],\"data_offsets\":[%llu,%llu]}",
                ts[i].name, st_dtype_name(type), (long long)t->ne1, (long long)t->ne0,
                (unsigned long long)ts[i].begin, (unsigned long long)ts[i].end);
        else
            st_text_printf(
                &h, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%lld],\"data_offsets\":[%llu,%llu]}",
                ts[i].name, st_dtype_name(type), (long long)(t->ne0 * t->ne1),
                (unsigned long long)ts[i].begin, (unsigned long long)ts[i].end);
    }
    st_text_printf(&h, "}");
    while (!h.oom && h.len % 8 != 0) st_text_printf(&h, " ");
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
    if (rc) goto done;
    rc = st_write_config(w, dir, type, err);
done:
    free(h.p);
    free(tmp);
    free(final);
    qp_free(row32);
    qp_free(rowout);
    qp_free(ts);
    return rc;
}
