// cmd_generate.c — `qprobe generate`: greedy decoding as llama2.c's run.c does it (-t 0): the
// prompt is encoded with BOS and a space prefix, every position (BOS and prompt included)
// counts toward -n, generation stops early at BOS, and pieces are printed as run.c's
// safe_printf prints them, followed by one newline.
#include <cjson/cJSON.h>
#include <ctype.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hx_cli.h"
#include "kn_engine.h"
#include "hx_model.h"
#include "qp.h"
#include "hx_tokenizer.h"

static void gen_usage(void) {
    printf("usage: qprobe generate -m MODEL [-z TOKENIZER] [-p PROMPT] [-n STEPS] [-t N] [--json]\n\n"
           "Greedy generation, byte-identical to llama2.c's `run MODEL -z TOK -t 0 -n STEPS -i PROMPT`.\n\n"
           "  -m, --model FILE      llama2.c .bin, GGUF, or safetensors directory\n"
           "  -z, --tokenizer FILE  llama2.c tokenizer.bin (GGUF models carry their own)\n"
           "  -p, --prompt TEXT     prompt (default empty)\n"
           "  -n, --steps N         positions to run, BOS and prompt included (default 256,\n"
           "                        at most the model's context)\n"
           "  -t, --threads N       threads inside the forward pass (default 1)\n"
           "      --json            print {text, tokens, tokens_per_s, isa} as one JSON object\n\n"
           "examples:\n"
           "  qprobe generate -m stories260K.bin -z tok512.bin -p 'Once upon a time' -n 64\n"
           "  qprobe generate -m model.gguf -p 'The capital of France is' -n 32 -t 2 --json\n");
}

// run.c's safe_printf: single bytes that are neither printable nor whitespace are dropped.
static void gen_emit(const char *piece, size_t len, char **acc, size_t *acc_len, size_t *acc_cap) {
    if (len == 0) return;
    if (len == 1 && !(isprint((unsigned char)piece[0]) || isspace((unsigned char)piece[0]))) return;
    size_t n = strnlen(piece, len); // %s stops at a NUL
    if (*acc_len + n + 1 > *acc_cap) {
        size_t cap = (*acc_cap + n + 1) * 2;
        char *nb = realloc(*acc, cap);
        if (!nb) return;
        *acc = nb;
        *acc_cap = cap;
    }
    memcpy(*acc + *acc_len, piece, n);
    *acc_len += n;
    (*acc)[*acc_len] = 0;
}

struct gen_args {
    const char *model_path, *tok_path, *prompt;
    int steps, threads, json;
};

// Options into a; HX_CLI_HELP when --help was printed, else 0 or a usage error's exit status.
static int gen_parse_opts(int argc, char **argv, struct gen_args *a) {
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"tokenizer", required_argument, 0, 'z'},
        {"prompt", required_argument, 0, 'p'}, {"steps", required_argument, 0, 'n'},
        {"threads", required_argument, 0, 't'}, {"json", no_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},         {0, 0, 0, 0}};
    int c, rc = 0;
    optind = 1;
    opterr = 0;
    while (!rc && (c = getopt_long(argc, argv, "m:z:p:n:t:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': a->model_path = optarg; break;
        case 'z': a->tok_path = optarg; break;
        case 'p': a->prompt = optarg; break;
        case 'n': rc = hx_parse_int("generate", "-n", optarg, 1, 1 << 20, &a->steps); break;
        case 't': rc = hx_parse_int("generate", "-t", optarg, 1, 256, &a->threads); break;
        case 'j': a->json = 1; break;
        case 'h': gen_usage(); return HX_CLI_HELP;
        default: return hx_unknown_option("generate", argv);
        }
    }
    if (!rc && optind < argc) rc = hx_usage_error("generate", "unexpected argument '%s'", argv[optind]);
    return rc;
}

// What decoding made.
struct gen_out {
    char *text;   // the pieces as run.c prints them (malloc'd)
    size_t len, cap;
    int n_gen;    // tokens generated (the prompt's not counted)
    double seconds;
};

// Greedy decoding from the prompt's tokens: prompt positions run one by one like run.c (the
// engine gives the same bits batched), then the argmax, until steps positions or BOS.
static int gen_decode(struct kn_state *s, const struct hx_tok *tok, const int *ptoks, size_t n_prompt, int steps,
                      int vocab, struct gen_out *o) {
    float *logits = qp_alloc_array((size_t)vocab, sizeof(float));
    o->cap = 256;
    o->text = calloc(o->cap, 1);
    if (!logits || !o->text) {
        qp_free(logits);
        return QP_ENOMEM;
    }
    int token = ptoks[0];
    double t0 = qp_now();
    for (int pos = 0; pos < steps; pos++) {
        kn_forward(s, &token, 1, logits, 0, NULL);
        int next = 0;
        if ((size_t)pos < n_prompt - 1) {
            next = ptoks[pos + 1];
        } else {
            for (int i = 1; i < vocab; i++)
                if (logits[i] > logits[next]) next = i;
            o->n_gen++;
        }
        if (next == hx_tok_bos(tok)) break;
        char piece[512];
        size_t len = hx_tok_piece(tok, token, next, piece, sizeof piece);
        gen_emit(piece, len, &o->text, &o->len, &o->cap);
        token = next;
    }
    o->seconds = qp_now() - t0;
    qp_free(logits);
    return 0;
}

// The model opened, the prompt encoded, the engine built and the text decoded; the exit status.
static int gen_run(const struct gen_args *a, struct gen_out *o, char *isa, size_t isa_cap) {
    struct hx_model *m;
    int rc = hx_open_model("generate", a->model_path, a->tok_path, 1, &m);
    if (rc) return rc;
    char err[QP_ERRLEN];
    struct kn_engine *e = NULL;
    struct kn_state *s = NULL;
    int *ptoks = NULL, steps = QP_MIN(a->steps, m->w.cfg.seq_len);
    size_t n_prompt = 0;
    unsigned flags = HX_TOK_ADD_BOS | (a->prompt[0] ? HX_TOK_SPACE_PREFIX : 0);
    if (hx_tok_encode(m->tok, a->prompt, strlen(a->prompt), flags, &ptoks, &n_prompt))
        rc = hx_fail("generate", QP_ENOMEM, "out of memory encoding the prompt");
    else if ((rc = kn_engine_create(&m->w, NULL, &e, err)) || (rc = kn_state_create(e, steps, steps, a->threads, &s, err)))
        rc = hx_fail("generate", rc, "%s", err);
    else if ((rc = gen_decode(s, m->tok, ptoks, n_prompt, steps, m->w.cfg.vocab_size, o)))
        rc = hx_fail("generate", rc, "out of memory");
    if (e) snprintf(isa, isa_cap, "%s", kn_engine_ops(e)->name);
    free(ptoks);
    kn_state_destroy(s);
    kn_engine_destroy(e);
    hx_model_close(m);
    return rc;
}

static void gen_print(const struct gen_args *a, const struct gen_out *o, const char *isa) {
    double tps = o->seconds > 0 ? o->n_gen / o->seconds : 0;
    if (a->json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "text", o->text);
        cJSON_AddNumberToObject(j, "tokens", o->n_gen);
        cJSON_AddNumberToObject(j, "tokens_per_s", tps);
        cJSON_AddStringToObject(j, "isa", isa);
        hx_print_json(j);
        return;
    }
    fputs(o->text, stdout);
    fputc('\n', stdout);
    fprintf(stderr, "qprobe generate: %d tokens, %.0f tok/s (%s)\n", o->n_gen, tps, isa);
}

int hx_cmd_generate(int argc, char **argv) {
    struct gen_args a = {.prompt = "", .steps = 256, .threads = 1};
    struct gen_out o = {0};
    char isa[32] = "";
    int rc = gen_parse_opts(argc, argv, &a);
    if (!rc) rc = gen_run(&a, &o, isa, sizeof isa);
    if (!rc) gen_print(&a, &o, isa);
    free(o.text);
    return rc == HX_CLI_HELP ? HX_EXIT_OK : rc;
}
