// hx_tok_json.c — Hugging Face tokenizer.json (+ tokenizer_config.json) into a BPE tokenizer
// (see hx_tokenizer.h for what is read). Parsed with cJSON after a UTF-8 check of the whole
// file; every part is validated before use, and whatever changes the tokens and is not
// implemented (another model type, normalizer, pre-tokenizer, Split behaviour, dropout) is
// refused by name rather than approximated.
//
// Mapping to the engine (hx_tok_bpe.c): a ByteLevel pre-tokenizer makes a byte-level
// vocabulary, its Split expressions (and ByteLevel's own GPT-2 expression when use_regex) the
// pre-tokenizer; Metaspace or the older Prepend("▁") + Replace(" ", "▁") normalizer makes a
// character-mode vocabulary (SentencePiece-style, byte_fallback to <0xNN>). Added tokens become
// control (special) or user-defined tokens, matched before the model as llama.cpp does with the
// GGUF its converter writes from this file.
// Depends on kernels/qp*.h, cJSON, hx_tok_pre.h and the tokenizer's inside.
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hx_tok_impl.h"
#include "hx_tok_pre.h"
#include "qp.h"
#include "qp_utf8.h"

#define JSON_MAX_BYTES ((size_t)1 << 30) // the largest real tokenizer.json files are ~30 MB

// Hugging Face's ByteLevel expression (GPT-2's, with the final "|\s+").
#define RX_BYTELEVEL "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
// The Split expressions of Llama 3 and Qwen2 as their tokenizer.json files spell them: such a
// file is written to GGUF with llama.cpp's name for it.
#define RX_HF_LLAMA3                                                                                \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|" \
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RX_HF_QWEN2                                                                                 \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"     \
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

// What the loader gathers before building the tokenizer.
struct jload {
    const char *path;
    char *err;
    const cJSON *vocab, *merges, *added;
    int n;          // tokens: 1 + the largest id
    int byte_level; // a ByteLevel pre-tokenizer was seen
    int n_split;    // Split/Digits expressions
    int first_stage; // the pre-tokenizer stage being read is the first
    struct hx_tok *t;
};

static int jfail(struct jload *j, int code, const char *fmt, const char *what) {
    char msg[QP_ERRLEN];
    snprintf(msg, sizeof msg, fmt, what);
    return qp_fail(j->err, code, "cannot read '%s': %s", j->path, msg);
}

static const char *jstr(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int jbool(const cJSON *o, const char *key, int def) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : def;
}

// A token id: an integral number in [0, INT32_MAX / 2).
static int jid(const cJSON *v, int *out) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= 0 && d < INT32_MAX / 2) || d != (double)(int)d) return -1;
    *out = (int)d;
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Reading and parsing the file

// 1 when d[0..n) ends inside a string or with an object or array still open: a file cut short,
// which deserves that message rather than cJSON's position.
static int json_unclosed(const char *d, size_t n) {
    long depth = 0;
    int in_str = 0;
    for (size_t i = 0; i < n; i++) {
        char c = d[i];
        if (in_str) {
            if (c == '\\') i++;
            else if (c == '"') in_str = 0;
        } else if (c == '"') {
            in_str = 1;
        } else if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            depth--;
        }
    }
    return in_str || depth > 0;
}

static int json_parse_file(const char *path, size_t limit, cJSON **root, char *err) {
    char *data;
    size_t size;
    int rc = hx_tok__read_file(path, limit, &data, &size, err);
    if (rc) return rc;
    size_t bad = qp_utf8_bad_at(data, size);
    if (bad < size) {
        free(data);
        return qp_fail(err, QP_EFORMAT, "cannot read '%s': not valid UTF-8 at byte %zu", path, bad);
    }
    const char *end = NULL;
    *root = cJSON_ParseWithLengthOpts(data, size, &end, 0);
    if (!*root) {
        size_t at = end && end >= data && end <= data + size ? (size_t)(end - data) : size;
        rc = json_unclosed(data, size) ? qp_fail(err, QP_EFORMAT, "cannot read '%s': the JSON ends early (truncated?)", path)
                                       : qp_fail(err, QP_EFORMAT, "cannot read '%s': not valid JSON near byte %zu", path, at);
    } else if (!cJSON_IsObject(*root)) {
        cJSON_Delete(*root);
        *root = NULL;
        rc = qp_fail(err, QP_EFORMAT, "cannot read '%s': the top level is not a JSON object", path);
    } else {
        // Anything after the value other than white space is an error (a second document).
        for (const char *p = end; p && p < data + size && !rc; p++)
            if (*p != ' ' && *p != '\n' && *p != '\r' && *p != '\t') {
                cJSON_Delete(*root);
                *root = NULL;
                rc = qp_fail(err, QP_EFORMAT, "cannot read '%s': text after the JSON value at byte %zu", path,
                             (size_t)(p - data));
            }
    }
    free(data);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// Model: vocab, added tokens, merges

// The number of ids (1 + the largest) over vocab and added_tokens, with every entry checked.
// Holes become "[PAD<id>]" tokens; more holes than max(listed entries, HX_TOK_JSON_MAX_HOLES)
// is refused: a 4.6 kB file with one id of 23e6 made a 23-million-token vocabulary (1.1 GB,
// 28 s; found by fuzz_tokenizer_json), and real files have few holes if any.
#define HX_TOK_JSON_MAX_HOLES 65536
static int count_ids(struct jload *j) {
    int max = -1, listed = 0;
    if (!cJSON_IsObject(j->vocab)) return jfail(j, QP_EFORMAT, "model.vocab is not an object%s", "");
    for (const cJSON *e = j->vocab->child; e; e = e->next) {
        int id = 0;
        if (jid(e, &id)) return jfail(j, QP_EFORMAT, "model.vocab entry '%.60s' is not a token id", e->string);
        if (!*e->string) return jfail(j, QP_EFORMAT, "model.vocab has an empty string%s", "");
        max = QP_MAX(max, id);
        listed++;
    }
    if (j->added && !cJSON_IsArray(j->added)) return jfail(j, QP_EFORMAT, "added_tokens is not an array%s", "");
    for (const cJSON *a = j->added ? j->added->child : NULL; a; a = a->next) {
        int id = 0;
        const char *content = jstr(a, "content");
        if (!content || !*content || jid(cJSON_GetObjectItemCaseSensitive(a, "id"), &id))
            return jfail(j, QP_EFORMAT, "an added token lacks an id or its content%s", "");
        max = QP_MAX(max, id);
        listed++;
    }
    if (max < 0) return jfail(j, QP_EFORMAT, "model.vocab is empty%s", "");
    if ((int64_t)max + 1 - listed > QP_MAX(listed, HX_TOK_JSON_MAX_HOLES)) {
        char what[96];
        snprintf(what, sizeof what, "%d ids listed, the largest %d", listed, max);
        return jfail(j, QP_EFORMAT, "token ids leave more holes than tokens (%s)", what);
    }
    j->n = max + 1;
    return 0;
}

// Places every string at its id: two strings for one id, or one string twice with two ids in
// model.vocab, are refused; an added token may repeat its vocab entry. Holes become unused
// "[PAD<id>]" tokens, as llama.cpp's converter fills them.
static int place_strings(struct jload *j, const char **by_id) {
    for (const cJSON *e = j->vocab->child; e; e = e->next) {
        int id = 0;
        jid(e, &id);
        if (by_id[id] && strcmp(by_id[id], e->string) != 0) {
            char what[160];
            snprintf(what, sizeof what, "'%.60s' and '%.60s' both have id %d in model.vocab", by_id[id], e->string, id);
            return jfail(j, QP_EFORMAT, "%s", what);
        }
        by_id[id] = e->string;
    }
    for (const cJSON *a = j->added ? j->added->child : NULL; a; a = a->next) {
        int id = 0;
        jid(cJSON_GetObjectItemCaseSensitive(a, "id"), &id);
        const char *content = jstr(a, "content");
        if (by_id[id] && strcmp(by_id[id], content) != 0) {
            char what[160];
            snprintf(what, sizeof what, "added token '%.60s' has the id %d of '%.60s'", content, id, by_id[id]);
            return jfail(j, QP_EFORMAT, "%s", what);
        }
        by_id[id] = content;
    }
    return 0;
}

static int build_vocab(struct jload *j) {
    const char **by_id = calloc((size_t)j->n, sizeof *by_id);
    if (!by_id) return jfail(j, QP_ENOMEM, "out of memory%s", "");
    int rc = place_strings(j, by_id);
    size_t bytes = 0;
    for (int id = 0; id < j->n && !rc; id++) bytes += by_id[id] ? strlen(by_id[id]) : 24;
    struct hx_tok *t = rc ? NULL : hx_tok__alloc(j->n, bytes);
    if (!rc && !t) rc = jfail(j, QP_ENOMEM, "out of memory%s", "");
    for (int id = 0; id < j->n && !rc; id++) {
        char pad[32];
        const char *s = by_id[id];
        if (!s) {
            snprintf(pad, sizeof pad, "[PAD%d]", id);
            s = pad;
            t->types[id] = HX_TOK_UNUSED;
        }
        hx_tok__push(t, id, s, strlen(s));
    }
    free(by_id);
    j->t = t;
    return rc;
}

// Types and attributes of the added tokens: special -> control, else user-defined.
static void added_types(struct jload *j) {
    for (const cJSON *a = j->added ? j->added->child : NULL; a; a = a->next) {
        int id = 0;
        jid(cJSON_GetObjectItemCaseSensitive(a, "id"), &id);
        j->t->types[id] = jbool(a, "special", 0) ? HX_TOK_CONTROL : HX_TOK_USER_DEFINED;
        j->t->attrs[id] = (uint8_t)((jbool(a, "lstrip", 0) ? HX_ATTR_LSTRIP : 0) |
                                    (jbool(a, "rstrip", 0) ? HX_ATTR_RSTRIP : 0));
    }
}

// One merge, as "a b" or ["a", "b"].
static int merge_parts(const cJSON *m, const char **l, size_t *ll, const char **r, size_t *rl) {
    if (cJSON_IsString(m)) {
        const char *s = m->valuestring, *sp = *s ? strchr(s + 1, ' ') : NULL;
        if (!sp) return -1;
        *l = s;
        *ll = (size_t)(sp - s);
        *r = sp + 1;
        *rl = strlen(sp + 1);
        return 0;
    }
    if (!cJSON_IsArray(m) || cJSON_GetArraySize(m) != 2) return -1;
    const cJSON *a = m->child, *b = a->next;
    if (!cJSON_IsString(a) || !cJSON_IsString(b)) return -1;
    *l = a->valuestring;
    *ll = strlen(a->valuestring);
    *r = b->valuestring;
    *rl = strlen(b->valuestring);
    return 0;
}

static int build_merges(struct jload *j) {
    struct hx_tok *t = j->t;
    int n = j->merges ? cJSON_GetArraySize(j->merges) : 0;
    if (j->merges && !cJSON_IsArray(j->merges)) return jfail(j, QP_EFORMAT, "model.merges is not an array%s", "");
    if (hx_bpe_merges_init(t, (size_t)n)) return jfail(j, QP_ENOMEM, "out of memory%s", "");
    char *scratch = malloc(2 * t->max_len + 2);
    if (!scratch) return jfail(j, QP_ENOMEM, "out of memory%s", "");
    int rank = 0, rc = 0;
    for (const cJSON *m = j->merges ? j->merges->child : NULL; m && !rc; m = m->next, rank++) {
        const char *l, *r;
        size_t ll, rl;
        if (merge_parts(m, &l, &ll, &r, &rl)) {
            char what[64];
            snprintf(what, sizeof what, "merge %d is neither \"a b\" nor [\"a\", \"b\"]", rank);
            rc = jfail(j, QP_EFORMAT, "%s", what);
        } else if (ll > t->max_len || rl > t->max_len) {
            char what[64];
            snprintf(what, sizeof what, "merge %d names a string longer than any token", rank);
            rc = jfail(j, QP_EFORMAT, "%s", what);
        } else {
            rc = hx_bpe_add_merge(t, l, ll, r, rl, rank, scratch, j->path, j->err);
        }
    }
    free(scratch);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// Normalizer, pre-tokenizer, post-processor, decoder

static int is_meta_char(const char *s) { return s && strcmp(s, "\xe2\x96\x81") == 0; }

// null, NFC (not applied: llama.cpp does not either, and NFC text is unchanged by it), or the
// SentencePiece pair Prepend("▁") + Replace(" " -> "▁") as a Sequence.
static int read_normalizer(struct jload *j, const cJSON *n) {
    if (!n || cJSON_IsNull(n)) return 0;
    const char *type = jstr(n, "type");
    if (!type) return jfail(j, QP_EFORMAT, "normalizer has no type%s", "");
    if (strcmp(type, "NFC") == 0) return 0;
    if (strcmp(type, "Prepend") == 0) {
        if (!is_meta_char(jstr(n, "prepend"))) return jfail(j, QP_ENOTSUP, "normalizer Prepend of other than \"▁\" is not supported%s", "");
        j->t->meta = HX_META_ALWAYS;
        return 0;
    }
    if (strcmp(type, "Replace") == 0) {
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(n, "pattern");
        const char *from = jstr(p, "String"), *to = jstr(n, "content");
        if (!from || strcmp(from, " ") != 0 || !is_meta_char(to))
            return jfail(j, QP_ENOTSUP, "normalizer Replace other than \" \" -> \"▁\" is not supported%s", "");
        j->t->meta_replace = 1;
        return 0;
    }
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(n, "normalizers");
        if (!cJSON_IsArray(list)) return jfail(j, QP_EFORMAT, "normalizer Sequence has no list%s", "");
        for (const cJSON *e = list->child; e; e = e->next) {
            int rc = read_normalizer(j, e);
            if (rc) return rc;
        }
        return 0;
    }
    return jfail(j, QP_ENOTSUP, "normalizer '%.40s' is not supported", type);
}

static int add_expr(struct jload *j, const char *pattern, int literal) {
    if (!j->t->pre && hx_pre_create(&j->t->pre)) return jfail(j, QP_ENOMEM, "out of memory%s", "");
    char msg[QP_ERRLEN];
    int rc = hx_pre_add(j->t->pre, pattern, strlen(pattern), literal, msg);
    if (rc) return jfail(j, rc, "%s", msg);
    j->n_split++;
    return 0;
}

static int read_split(struct jload *j, const cJSON *p) {
    const char *behavior = jstr(p, "behavior");
    if (!behavior || strcmp(behavior, "Isolated") != 0)
        return jfail(j, QP_ENOTSUP, "pre-tokenizer Split with behavior '%.40s' is not supported (only Isolated)",
                     behavior ? behavior : "(none)");
    if (jbool(p, "invert", 0)) return jfail(j, QP_ENOTSUP, "pre-tokenizer Split with invert is not supported%s", "");
    const cJSON *pat = cJSON_GetObjectItemCaseSensitive(p, "pattern");
    const char *rx = jstr(pat, "Regex"), *lit = jstr(pat, "String");
    if (!rx && !lit) return jfail(j, QP_EFORMAT, "pre-tokenizer Split has no Regex or String pattern%s", "");
    return add_expr(j, rx ? rx : lit, rx == NULL);
}

static int read_metaspace(struct jload *j, const cJSON *p) {
    if (!is_meta_char(jstr(p, "replacement")))
        return jfail(j, QP_ENOTSUP, "pre-tokenizer Metaspace with a replacement other than \"▁\" is not supported%s", "");
    const char *scheme = jstr(p, "prepend_scheme");
    struct hx_tok *t = j->t;
    if (!scheme) t->meta = jbool(p, "add_prefix_space", 1) ? HX_META_ALWAYS : HX_META_NONE;
    else if (strcmp(scheme, "always") == 0) t->meta = HX_META_ALWAYS;
    else if (strcmp(scheme, "first") == 0) t->meta = HX_META_FIRST;
    else if (strcmp(scheme, "never") == 0) t->meta = HX_META_NONE;
    else return jfail(j, QP_ENOTSUP, "Metaspace prepend_scheme '%.40s' is not supported", scheme);
    t->meta_if_missing = 1;
    t->meta_split = jbool(p, "split", 1);
    t->meta_replace = 1;
    return 0;
}

static int read_pre(struct jload *j, const cJSON *p) {
    if (!p || cJSON_IsNull(p)) return 0;
    const char *type = jstr(p, "type");
    if (!type) return jfail(j, QP_EFORMAT, "pre_tokenizer has no type%s", "");
    int first = j->first_stage;
    j->first_stage = 0;
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(p, "pretokenizers");
        if (!cJSON_IsArray(list)) return jfail(j, QP_EFORMAT, "pre_tokenizer Sequence has no list%s", "");
        j->first_stage = first;
        for (const cJSON *e = list->child; e; e = e->next) {
            int rc = read_pre(j, e);
            if (rc) return rc;
        }
        return 0;
    }
    if (strcmp(type, "Split") == 0) return read_split(j, p);
    if (strcmp(type, "Digits") == 0) return add_expr(j, jbool(p, "individual_digits", 0) ? "\\p{N}" : "\\p{N}+", 0);
    if (strcmp(type, "Metaspace") == 0) return read_metaspace(j, p);
    if (strcmp(type, "ByteLevel") == 0) {
        j->byte_level = 1;
        // Hugging Face prepends the space to every piece the earlier stages made; only the
        // first stage, where that piece is the whole text, is implemented.
        if (jbool(p, "add_prefix_space", 0)) {
            if (!first) return jfail(j, QP_ENOTSUP, "ByteLevel add_prefix_space after another pre-tokenizer is not supported%s", "");
            j->t->prefix_space = 1;
        }
        return jbool(p, "use_regex", 1) ? add_expr(j, RX_BYTELEVEL, 0) : 0;
    }
    return jfail(j, QP_ENOTSUP, "pre-tokenizer '%.40s' is not supported", type);
}

// The BOS rule of a TemplateProcessing (also inside a Sequence): a SpecialToken before $A.
static int read_post(struct jload *j, const cJSON *p, const char **bos_name) {
    if (!p || cJSON_IsNull(p)) return 0;
    const char *type = jstr(p, "type");
    if (!type) return jfail(j, QP_EFORMAT, "post_processor has no type%s", "");
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(p, "processors");
        for (const cJSON *e = cJSON_IsArray(list) ? list->child : NULL; e; e = e->next) {
            int rc = read_post(j, e, bos_name);
            if (rc) return rc;
        }
        return 0;
    }
    if (strcmp(type, "ByteLevel") == 0) return 0; // offsets only
    if (strcmp(type, "TemplateProcessing") != 0)
        return jfail(j, QP_ENOTSUP, "post_processor '%.40s' is not supported", type);
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(p, "single");
    const cJSON *first = cJSON_IsArray(single) ? single->child : NULL;
    const cJSON *sp = first ? cJSON_GetObjectItemCaseSensitive(first, "SpecialToken") : NULL;
    if (sp) { // add_bos is set with the id, once the vocabulary can be searched (read_config)
        *bos_name = jstr(sp, "id");
        if (!*bos_name) return jfail(j, QP_EFORMAT, "post_processor TemplateProcessing names no special token%s", "");
    }
    return 0;
}

static int read_decoder(struct jload *j, const cJSON *d) {
    if (!d || cJSON_IsNull(d)) return 0;
    const char *type = jstr(d, "type");
    if (!type) return jfail(j, QP_EFORMAT, "decoder has no type%s", "");
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(d, "decoders");
        for (const cJSON *e = cJSON_IsArray(list) ? list->child : NULL; e; e = e->next) {
            int rc = read_decoder(j, e);
            if (rc) return rc;
        }
        return 0;
    }
    // The decoders whose inverse hx_tok_decode performs: byte map, "▁" -> ' ', <0xNN> bytes,
    // joining, and stripping the prefixed space.
    static const char *const known[] = {"ByteLevel", "Metaspace", "Replace", "ByteFallback", "Fuse", "Strip"};
    for (size_t i = 0; i < QP_ARRAY_LEN(known); i++)
        if (strcmp(type, known[i]) == 0) return 0;
    return jfail(j, QP_ENOTSUP, "decoder '%.40s' is not supported", type);
}

// ---------------------------------------------------------------------------------------------
// Assembling

static int read_model_flags(struct jload *j, const cJSON *model) {
    const char *type = jstr(model, "type");
    if (type && strcmp(type, "BPE") != 0)
        return jfail(j, QP_ENOTSUP, "model type '%.40s' is not supported (only BPE)", type);
    const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (cJSON_IsNumber(dropout) && dropout->valuedouble > 0)
        return jfail(j, QP_ENOTSUP, "BPE dropout is not supported (it makes tokenization random)%s", "");
    const char *csp = jstr(model, "continuing_subword_prefix"), *eow = jstr(model, "end_of_word_suffix");
    if ((csp && *csp) || (eow && *eow))
        return jfail(j, QP_ENOTSUP, "BPE continuing_subword_prefix/end_of_word_suffix are not supported%s", "");
    struct hx_tok *t = j->t;
    t->byte_fallback = jbool(model, "byte_fallback", 0);
    t->ignore_merges = jbool(model, "ignore_merges", 0);
    t->fuse_unk = jbool(model, "fuse_unk", 0);
    const char *unk = jstr(model, "unk_token");
    if (unk) {
        t->unk = hx_tok__lookup(t, unk, strlen(unk));
        if (t->unk < 0) return jfail(j, QP_EFORMAT, "model.unk_token '%.60s' is not a token", unk);
        if (t->types[t->unk] == HX_TOK_NORMAL || t->types[t->unk] == HX_TOK_CONTROL) t->types[t->unk] = HX_TOK_UNKNOWN;
    }
    return 0;
}

// A tokenizer_config.json token entry: a string or {"content": string}; NULL when absent.
static const char *config_token(const cJSON *cfg, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (cJSON_IsString(v)) return v->valuestring;
    return cJSON_IsObject(v) ? jstr(v, "content") : NULL;
}

static int token_id(struct jload *j, const char *name, const char *what, int *id) {
    *id = hx_tok__lookup(j->t, name, strlen(name));
    if (*id < 0) {
        char msg[160];
        snprintf(msg, sizeof msg, "%s '%.60s' is not a token", what, name);
        return jfail(j, QP_EFORMAT, "%s", msg);
    }
    return 0;
}

// tokenizer_config.json beside the file: bos/eos names, add_bos_token when no template says.
static int read_config(struct jload *j, const char *bos_from_template) {
    const char *slash = strrchr(j->path, '/');
    size_t dir = slash ? (size_t)(slash - j->path + 1) : 0;
    char *cpath = malloc(dir + sizeof "tokenizer_config.json");
    if (!cpath) return jfail(j, QP_ENOMEM, "out of memory%s", "");
    memcpy(cpath, j->path, dir);
    strcpy(cpath + dir, "tokenizer_config.json");
    cJSON *cfg = NULL;
    FILE *f = fopen(cpath, "rb");
    int rc = 0;
    if (f) {
        fclose(f);
        rc = json_parse_file(cpath, 64u << 20, &cfg, j->err);
    }
    free(cpath);
    const char *bos = bos_from_template ? bos_from_template : config_token(cfg, "bos_token");
    const char *eos = config_token(cfg, "eos_token");
    if (!rc) j->t->add_bos = bos_from_template ? 1 : jbool(cfg, "add_bos_token", 0);
    if (!rc && bos) rc = token_id(j, bos, "the BOS token", &j->t->bos);
    if (!rc && eos) rc = token_id(j, eos, "the EOS token", &j->t->eos);
    cJSON_Delete(cfg);
    return rc;
}

// llama.cpp's name for the pre-tokenizer when the file spells one it knows, so that the
// vocabulary can be written as GGUF; "tokenizer.json" otherwise.
static void name_pre(struct jload *j) {
    struct hx_tok *t = j->t;
    const char *name = "tokenizer.json";
    int n = t->pre ? hx_pre_count(t->pre) : 0;
    if (t->bpe_mode == HX_BPE_BYTELEVEL && !t->prefix_space && n == 1) {
        const char *p = hx_pre_pattern(t->pre, 0);
        if (strcmp(p, RX_HF_LLAMA3) == 0) name = "llama-bpe";
        else if (strcmp(p, RX_HF_QWEN2) == 0) name = "qwen2";
        else if (strcmp(p, RX_BYTELEVEL) == 0) name = "gpt-2";
    }
    snprintf(t->pre_name, sizeof t->pre_name, "%s", name);
}

static int load_root(struct jload *j, const cJSON *root) {
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(model)) return jfail(j, QP_EFORMAT, "no \"model\" object%s", "");
    j->vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    j->merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    j->added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    const char *bos_name = NULL;
    int rc = count_ids(j);
    if (!rc) rc = build_vocab(j);
    if (rc) return rc;
    struct hx_tok *t = j->t;
    t->kind = HX_TOK_BPE;
    t->source = "tokenizer.json";
    added_types(j);
    j->first_stage = 1;
    if (!rc) rc = read_normalizer(j, cJSON_GetObjectItemCaseSensitive(root, "normalizer"));
    if (!rc) rc = read_pre(j, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"));
    if (!rc) rc = read_post(j, cJSON_GetObjectItemCaseSensitive(root, "post_processor"), &bos_name);
    if (!rc) rc = read_decoder(j, cJSON_GetObjectItemCaseSensitive(root, "decoder"));
    if (rc) return rc;
    if (j->byte_level && (t->meta != HX_META_NONE || t->meta_replace))
        return jfail(j, QP_ENOTSUP, "ByteLevel together with Metaspace/Prepend is not supported%s", "");
    if ((t->meta != HX_META_NONE || t->meta_replace) && j->n_split)
        return jfail(j, QP_ENOTSUP, "Metaspace together with Split expressions is not supported%s", "");
    t->bpe_mode = j->byte_level ? HX_BPE_BYTELEVEL : HX_BPE_CHARS;
    t->byte_fallback = jbool(model, "byte_fallback", 0);
    // Character mode: "<0xNN>" entries are the byte_fallback tokens.
    for (int id = 0; id < t->n_vocab && t->bpe_mode == HX_BPE_CHARS && t->byte_fallback; id++)
        if (t->types[id] == HX_TOK_NORMAL && hx_tok__byte_token(t->strs + t->off[id], t->off[id + 1] - t->off[id] - 1) >= 0)
            t->types[id] = HX_TOK_BYTE;
    // Strings must be unique to be looked up: two ids for one string are only possible between
    // an added token and its own vocab entry, which place_strings made one.
    if ((rc = hx_tok__finish(t, j->path, 0, j->err))) return rc;
    if ((rc = read_model_flags(j, model))) return rc;
    if ((rc = read_config(j, bos_name))) return rc;
    if (t->add_bos && t->bos < 0) return jfail(j, QP_EFORMAT, "a BOS token is to be added but none is named%s", "");
    if ((rc = build_merges(j))) return rc;
    hx_bpe_finish(t);
    name_pre(j);
    snprintf(t->describe, sizeof t->describe, "bpe (tokenizer.json, %s, pre '%s', %d tokens, %zu merges)",
             t->bpe_mode == HX_BPE_BYTELEVEL ? "byte-level" : "metaspace", t->pre_name, t->n_vocab, t->n_merges);
    return 0;
}

int hx_tok_load_json(const char *path, struct hx_tok **out, char *err) {
    *out = NULL;
    cJSON *root = NULL;
    int rc = json_parse_file(path, JSON_MAX_BYTES, &root, err);
    if (rc) return rc;
    struct jload j = {.path = path, .err = err};
    rc = load_root(&j, root);
    cJSON_Delete(root);
    if (rc) {
        hx_tok_destroy(j.t);
        return rc;
    }
    *out = j.t;
    return 0;
}
