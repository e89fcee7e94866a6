// hx_cmd_tokenize.c — `qprobe tokenize`: the token ids (or pieces) qprobe feeds the engine for a
// text, with whatever vocabulary the model file carries or -z names; optionally writes that
// vocabulary as a vocab-only GGUF for llama.cpp's tools (docs/TOKENIZERS.md).
#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hx_cli.h"
#include "hx_gguf_model.h"
#include "hx_model.h"
#include "hx_text.h"
#include "hx_tokenizer.h"
#include "qp.h"
#include "qp_utf8.h"

static void tok_usage(void) {
    printf("usage: qprobe tokenize (-m MODEL | -z TOKENIZER) --text FILE [--ids | --pieces] [--json]\n"
           "                       [--parse-special] [--no-bos] [--stats] [--write-gguf OUT.gguf]\n\n"
           "Prints the tokens qprobe feeds the engine for FILE: BOS when the vocabulary adds one, SPM's\n"
           "space prefix, text matched as text (control tokens only with --parse-special).\n\n"
           "  -m, --model FILE      a model: its own vocabulary (GGUF keys, tokenizer.json beside a\n"
           "                        safetensors config.json)\n"
           "  -z, --tokenizer FILE  a tokenizer file instead: llama2.c tokenizer.bin, Hugging Face\n"
           "                        tokenizer.json, or a (vocab-only) GGUF\n"
           "      --text FILE       the text (UTF-8)\n"
           "      --ids             one line of token ids (the default)\n"
           "      --pieces          one token per line: id, TAB, the bytes it stands for (\\n, \\t, \\\\ and\n"
           "                        \\xNN escaped)\n"
           "      --json            one JSON object: tokenizer, bytes, n_tokens, ids (and pieces)\n"
           "      --parse-special   match control tokens written in the text (\"<|begin_of_text|>\")\n"
           "      --no-bos          no BOS even if the vocabulary adds one\n"
           "      --stats           also print count and speed on stderr\n"
           "      --write-gguf OUT  write the vocabulary as a vocab-only GGUF (llama-tokenize -m OUT);\n"
           "                        --text is then optional\n\n"
           "examples:\n"
           "  qprobe tokenize -z tokenizer.json --text prompt.txt --pieces\n"
           "  qprobe tokenize -m model.gguf --text wiki.test.raw --json --stats\n");
}

struct tok_opts {
    const char *model, *tok, *text, *gguf_out;
    int pieces, json, stats;
    unsigned flags;
};

static int tok_parse(int argc, char **argv, struct tok_opts *o) {
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"tokenizer", required_argument, 0, 'z'},
        {"text", required_argument, 0, 'f'},  {"ids", no_argument, 0, 'i'},
        {"pieces", no_argument, 0, 'P'},      {"json", no_argument, 0, 'j'},
        {"parse-special", no_argument, 0, 'S'}, {"no-bos", no_argument, 0, 'B'},
        {"stats", no_argument, 0, 's'},       {"write-gguf", required_argument, 0, 'g'},
        {"help", no_argument, 0, 'h'},        {0, 0, 0, 0}};
    int c, no_bos = 0;
    *o = (struct tok_opts){0};
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "m:z:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': o->model = optarg; break;
        case 'z': o->tok = optarg; break;
        case 'f': o->text = optarg; break;
        case 'i': o->pieces = 0; break;
        case 'P': o->pieces = 1; break;
        case 'j': o->json = 1; break;
        case 'S': o->flags |= HX_TOK_PARSE_SPECIAL; break;
        case 'B': no_bos = 1; break;
        case 's': o->stats = 1; break;
        case 'g': o->gguf_out = optarg; break;
        case 'h': tok_usage(); return -1;
        default:
            return hx_usage_error("tokenize", "unknown or incomplete option '%s'; see 'qprobe tokenize --help'",
                                  argv[optind - 1]);
        }
    }
    if (optind < argc) return hx_usage_error("tokenize", "unexpected argument '%s'", argv[optind]);
    if (!o->model && !o->tok) return hx_usage_error("tokenize", "no vocabulary given (-m MODEL or -z TOKENIZER)");
    if (!o->text && !o->gguf_out) return hx_usage_error("tokenize", "no text given (--text FILE)");
    o->flags |= HX_TOK_SPACE_PREFIX | (no_bos ? 0 : HX_TOK_ADD_BOS);
    return 0;
}

// The vocabulary: the model's (with -z replacing it), or -z alone. *model may stay NULL.
static int tok_open(const struct tok_opts *o, struct hx_model **model, struct hx_tok **tok) {
    *model = NULL;
    *tok = NULL;
    if (o->model) {
        int rc = hx_open_model("tokenize", o->model, o->tok, 1, model);
        if (rc) return rc;
        *tok = (*model)->tok;
        return 0;
    }
    char err[QP_ERRLEN];
    if (hx_tok_open(o->tok, 0, tok, err)) return hx_usage_error("tokenize", "%s", err);
    return 0;
}

// The piece of id (a control token's text with --parse-special) with \n, \t, \\ and bytes
// outside printable UTF-8 escaped, into a malloc'd string.
static char *tok_piece_escaped(const struct hx_tok *t, int id, unsigned flags) {
    char raw[1024];
    size_t len = hx_tok_piece(t, -1, id, raw, sizeof raw);
    int type = hx_tok_type(t, id);
    if ((flags & HX_TOK_PARSE_SPECIAL) && (type == HX_TOK_CONTROL || type == HX_TOK_UNKNOWN)) {
        const char *s = hx_tok_str(t, id, &len);
        len = QP_MIN(len, sizeof raw);
        memcpy(raw, s, len);
    }
    char *out = malloc(4 * len + 1);
    size_t w = 0;
    for (size_t i = 0; out && i < len;) {
        unsigned char c = (unsigned char)raw[i];
        size_t n = qp_utf8_seq((const unsigned char *)raw + i, len - i, NULL);
        if (c == '\n' || c == '\t' || c == '\\') {
            w += (size_t)sprintf(out + w, "\\%c", c == '\n' ? 'n' : c == '\t' ? 't' : '\\');
            i++;
        } else if (n == 0 || c < 0x20 || c == 0x7f) {
            w += (size_t)sprintf(out + w, "\\x%02X", c);
            i++;
        } else {
            memcpy(out + w, raw + i, n);
            w += n;
            i += n;
        }
    }
    if (out) out[w] = '\0';
    return out;
}

static int tok_print_text(const struct hx_tok *t, const int *ids, size_t n, const struct tok_opts *o) {
    for (size_t i = 0; i < n; i++) {
        if (!o->pieces) {
            printf(i ? " %d" : "%d", ids[i]);
            continue;
        }
        char *p = tok_piece_escaped(t, ids[i], o->flags);
        if (!p) return QP_ENOMEM;
        printf("%d\t%s\n", ids[i], p);
        free(p);
    }
    if (!o->pieces) putchar('\n');
    return 0;
}

static int tok_print_json(const struct hx_tok *t, const int *ids, size_t n, size_t bytes, const struct tok_opts *o) {
    cJSON *obj = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(obj, "ids");
    cJSON *pieces = o->pieces ? cJSON_AddArrayToObject(obj, "pieces") : NULL;
    cJSON_AddStringToObject(obj, "tokenizer", hx_tok_describe(t));
    cJSON_AddNumberToObject(obj, "bytes", (double)bytes);
    cJSON_AddNumberToObject(obj, "n_tokens", (double)n);
    for (size_t i = 0; i < n; i++) {
        cJSON_AddItemToArray(arr, cJSON_CreateNumber(ids[i]));
        if (!pieces) continue;
        char *p = tok_piece_escaped(t, ids[i], o->flags);
        if (!p) {
            cJSON_Delete(obj);
            return QP_ENOMEM;
        }
        cJSON_AddItemToArray(pieces, cJSON_CreateString(p));
        free(p);
    }
    hx_print_json(obj);
    return 0;
}

static double tok_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int tok_run(const struct tok_opts *o, const struct hx_tok *t) {
    char err[QP_ERRLEN], *text;
    size_t len, n;
    int *ids;
    if (hx_read_text(o->text, &text, &len, err)) return hx_usage_error("tokenize", "%s", err);
    double t0 = tok_now();
    int rc = hx_tok_encode(t, text, len, o->flags, &ids, &n);
    double dt = tok_now() - t0;
    free(text);
    if (rc) {
        fprintf(stderr, "qprobe tokenize: cannot tokenize '%s': %s\n", o->text, qp_strerror(rc));
        return rc == QP_ENOMEM ? 3 : HX_EXIT_USAGE;
    }
    if (o->stats)
        fprintf(stderr, "qprobe tokenize: %zu tokens from %zu bytes in %.3f s (%.1f MB/s), %s\n", n, len, dt,
                (double)len / 1e6 / (dt > 0 ? dt : 1e-9), hx_tok_describe(t));
    rc = o->json ? tok_print_json(t, ids, n, len, o) : tok_print_text(t, ids, n, o);
    free(ids);
    if (rc) fprintf(stderr, "qprobe tokenize: out of memory\n");
    return rc ? 3 : HX_EXIT_OK;
}

int hx_cmd_tokenize(int argc, char **argv) {
    struct tok_opts o;
    int rc = tok_parse(argc, argv, &o);
    if (rc) return rc < 0 ? HX_EXIT_OK : rc;
    struct hx_model *m;
    struct hx_tok *t;
    if ((rc = tok_open(&o, &m, &t))) return rc;
    char err[QP_ERRLEN];
    if (o.gguf_out && hx_gguf_vocab_write(t, o.gguf_out, err)) rc = hx_usage_error("tokenize", "%s", err);
    if (!rc && o.text) rc = tok_run(&o, t);
    if (m) hx_model_close(m);
    else hx_tok_destroy(t);
    return rc;
}
