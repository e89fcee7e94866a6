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
           "      --json            print {text, tokens, ids, tokens_per_s, isa} as one JSON object\n");
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

int hx_cmd_generate(int argc, char **argv) {
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"tokenizer", required_argument, 0, 'z'},
        {"prompt", required_argument, 0, 'p'}, {"steps", required_argument, 0, 'n'},
        {"threads", required_argument, 0, 't'}, {"json", no_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},         {0, 0, 0, 0}};
    const char *model_path = NULL, *tok_path = NULL, *prompt = "";
    int steps = 256, threads = 1, json = 0, c, rc;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "m:z:p:n:t:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_path = optarg; break;
        case 'z': tok_path = optarg; break;
        case 'p': prompt = optarg; break;
        case 'n': if ((rc = hx_parse_int("generate", "-n", optarg, 1, 1 << 20, &steps))) return rc; break;
        case 't': if ((rc = hx_parse_int("generate", "-t", optarg, 1, 256, &threads))) return rc; break;
        case 'j': json = 1; break;
        case 'h': gen_usage(); return 0;
        default:
            return hx_usage_error("generate", "unknown or incomplete option '%s'; see 'qprobe generate --help'",
                                  argv[optind - 1]);
        }
    }
    if (optind < argc) return hx_usage_error("generate", "unexpected argument '%s'", argv[optind]);

    struct hx_model *m;
    if ((rc = hx_open_model("generate", model_path, tok_path, 1, &m))) return rc;
    char err[QP_ERRLEN];
    struct kn_engine *e = NULL;
    struct kn_state *s = NULL;
    int *ptoks = NULL;
    char *text = NULL;
    float *logits = NULL;
    int status = HX_EXIT_USAGE;
    int *gen_ids = NULL;
    const struct kn_config *cfg = &m->w.cfg;
    if (steps > cfg->seq_len) steps = cfg->seq_len;

    size_t n_prompt = 0;
    unsigned flags = HX_TOK_ADD_BOS | (prompt[0] ? HX_TOK_SPACE_PREFIX : 0);
    if (hx_tok_encode(m->tok, prompt, strlen(prompt), flags, &ptoks, &n_prompt)) {
        hx_usage_error("generate", "out of memory encoding the prompt");
        goto done;
    }
    if ((rc = kn_engine_create(&m->w, NULL, &e, err)) || (rc = kn_state_create(e, steps, steps, threads, &s, err))) {
        hx_usage_error("generate", "%s", err);
        goto done;
    }
    logits = qp_alloc_array((size_t)cfg->vocab_size, sizeof(float));
    if (!logits) goto done;

    size_t acc_len = 0, acc_cap = 256;
    text = calloc(acc_cap, 1);
    int token = ptoks[0], n_gen = 0;
    gen_ids = malloc((size_t)steps * sizeof *gen_ids); // the generated ids, for --json
    if (!gen_ids) goto done;
    double t0 = qp_now();
    // Prompt positions run one by one like run.c; the engine gives the same bits batched.
    for (int pos = 0; pos < steps; pos++) {
        kn_forward(s, &token, 1, logits, 0, NULL);
        int next;
        if ((size_t)pos < n_prompt - 1) {
            next = ptoks[pos + 1];
        } else {
            next = 0;
            for (int i = 1; i < cfg->vocab_size; i++)
                if (logits[i] > logits[next]) next = i;
            gen_ids[n_gen++] = next;
        }
        if (next == hx_tok_bos(m->tok)) break;
        char piece[512];
        size_t len = hx_tok_piece(m->tok, token, next, piece, sizeof piece);
        gen_emit(piece, len, &text, &acc_len, &acc_cap);
        token = next;
    }
    double dt = qp_now() - t0;
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "text", text);
        cJSON_AddNumberToObject(o, "tokens", n_gen);
        cJSON_AddItemToObject(o, "ids", cJSON_CreateIntArray(gen_ids, n_gen));
        cJSON_AddNumberToObject(o, "tokens_per_s", dt > 0 ? n_gen / dt : 0);
        cJSON_AddStringToObject(o, "isa", kn_engine_ops(e)->name);
        hx_print_json(o);
    } else {
        fputs(text, stdout);
        fputc('\n', stdout);
        fprintf(stderr, "qprobe generate: %d tokens, %.0f tok/s (%s)\n", n_gen, dt > 0 ? n_gen / dt : 0,
                kn_engine_ops(e)->name);
    }
    status = HX_EXIT_OK;
done:
    free(gen_ids);
    free(text);
    qp_free(logits);
    free(ptoks);
    kn_state_destroy(s);
    kn_engine_destroy(e);
    hx_model_close(m);
    return status;
}
