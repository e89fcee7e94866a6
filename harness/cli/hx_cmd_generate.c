// cmd_generate.c — `qprobe generate`: greedy decoding as llama2.c's run.c does it (-t 0): the
// prompt is encoded with BOS and a space prefix, every position (BOS and prompt included)
// counts toward -n, generation stops early at BOS (and at EOS, which run.c does not check: a
// vocabulary's end of text ends generation, as in llama.cpp), and pieces are printed as run.c's
// safe_printf prints them, followed by one newline.
#include <cjson/cJSON.h>
#include <ctype.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hx_cli.h"
#include "hx_exit.h"
#include "kn_engine.h"
#include "hx_model.h"
#include "qp.h"
#include "hx_tokenizer.h"

static void gen_usage(void) {
    printf("usage: qprobe generate -m MODEL [-z TOKENIZER] [-p PROMPT | --prompt-file FILE]\n"
           "                       [--prompt-tokens N] [-n STEPS] [-t N] [--act f32|q8] [--json]\n\n"
           "Greedy generation, byte-identical to llama2.c's `run MODEL -z TOK -t 0 -n STEPS -i PROMPT`.\n"
           "The prompt runs as one batch (the same logits as one token at a time), then one token at a time.\n\n"
           "  -m, --model FILE      llama2.c .bin, GGUF, or safetensors directory\n"
           "  -z, --tokenizer FILE  llama2.c tokenizer.bin (GGUF models carry their own)\n"
           "  -p, --prompt TEXT     prompt (default empty)\n"
           "      --prompt-file F   the prompt from a file (UTF-8)\n"
           "      --prompt-tokens N keep the first N tokens of the prompt (BOS included), e.g. for\n"
           "                        decode speed after a prompt of a given length\n"
           "  -n, --steps N         positions to run, BOS and prompt included (default 256,\n"
           "                        at most the model's context)\n"
           "  -t, --threads N       threads inside the forward pass (default 1)\n"
           "      --act A           f32 (default) or q8: packed weight types run on their blocks with\n"
           "                        activations quantized per block, as llama.cpp's CPU backend\n"
           "      --json            print {text, tokens, ids, tokens_per_s, decode_tokens_per_s,\n"
           "                        prompt_tokens, prompt_seconds, isa, kernels} as one JSON object\n\n"
           "Generation stops early at BOS or, where the vocabulary defines one, EOS.\n\n"
           "examples:\n"
           "  qprobe generate -m stories260K.bin -z tok512.bin -p 'Once upon a time' -n 64\n"
           "  qprobe generate -m model.gguf -p 'The capital of France is' -n 32 -t 2 --json\n"
           "  qprobe generate -m q4_0.gguf --act q8 --prompt-file prompt.txt -n 640 -t 2\n");
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

struct gen_opts {
    const char *model_path, *tok_path, *prompt, *prompt_file;
    int steps, threads, json, act_q8, prompt_tokens;
};

// Options into o; HX_CLI_HELP when --help was printed, else 0 or a usage error's exit status.
static int gen_parse(int argc, char **argv, struct gen_opts *o) {
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"tokenizer", required_argument, 0, 'z'},
        {"prompt", required_argument, 0, 'p'}, {"steps", required_argument, 0, 'n'},
        {"threads", required_argument, 0, 't'}, {"json", no_argument, 0, 'j'},
        {"act", required_argument, 0, 'a'}, {"prompt-file", required_argument, 0, 'f'},
        {"prompt-tokens", required_argument, 0, 'k'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    *o = (struct gen_opts){.prompt = "", .steps = 256, .threads = 1};
    int c, rc;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "m:z:p:n:t:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': o->model_path = optarg; break;
        case 'z': o->tok_path = optarg; break;
        case 'p': o->prompt = optarg; break;
        case 'f': o->prompt_file = optarg; break;
        case 'n': if ((rc = hx_parse_int("generate", "-n", optarg, 1, 1 << 20, &o->steps))) return rc; break;
        case 't': if ((rc = hx_parse_int("generate", "-t", optarg, 1, 256, &o->threads))) return rc; break;
        case 'k': if ((rc = hx_parse_int("generate", "--prompt-tokens", optarg, 1, 1 << 20, &o->prompt_tokens))) return rc; break;
        case 'a':
            if (strcmp(optarg, "f32") && strcmp(optarg, "q8"))
                return hx_usage_error("generate", "--act '%s': expected f32 or q8", optarg);
            o->act_q8 = strcmp(optarg, "q8") == 0;
            break;
        case 'j': o->json = 1; break;
        case 'h': gen_usage(); return HX_CLI_HELP;
        default: return hx_unknown_option("generate", argv);
        }
    }
    if (optind < argc) return hx_usage_error("generate", "unexpected argument '%s'", argv[optind]);
    return 0;
}

struct gen_result {
    char *text;
    int *ids; // the generated ids (steps), for --json
    int n_gen, n_prompt;
    double seconds, prompt_seconds;
};

// Runs the prompt ptoks[0..n_prompt) as one batch, then greedy steps one token at a time, up to
// steps positions, until BOS or EOS; pieces go into r->text as run.c prints them.
static void gen_run(const struct hx_model *m, struct kn_state *s, const int *ptoks, int n_prompt, int steps,
                    float *logits, struct gen_result *r) {
    const struct kn_config *cfg = &m->w.cfg;
    size_t acc_len = 0, acc_cap = 256;
    r->text = calloc(acc_cap, 1);
    double t0 = qp_now();
    int np = n_prompt < steps ? n_prompt : steps;
    kn_forward(s, ptoks, np, logits, np - 1, NULL);
    r->prompt_seconds = qp_now() - t0;
    r->n_prompt = np;
    double t1 = qp_now();
    int token = ptoks[0];
    for (int pos = 0; pos < steps; pos++) {
        if (pos >= np) kn_forward(s, &token, 1, logits, 0, NULL);
        int next;
        if (pos < n_prompt - 1) {
            next = ptoks[pos + 1];
        } else {
            next = 0;
            for (int i = 1; i < cfg->vocab_size; i++)
                if (logits[i] > logits[next]) next = i;
            r->ids[r->n_gen++] = next;
        }
        if (next == hx_tok_bos(m->tok) || next == hx_tok_eos(m->tok)) break; // (-1: no such token)
        char piece[512];
        size_t len = hx_tok_piece(m->tok, token, next, piece, sizeof piece);
        gen_emit(piece, len, &r->text, &acc_len, &acc_cap);
        token = next;
    }
    r->seconds = qp_now() - t1;
}

static void gen_print(const struct gen_opts *o, const struct gen_result *r, const struct kn_engine *e) {
    char kernels[512];
    kn_engine_kernels(e, kernels, sizeof kernels);
    double tps = r->seconds > 0 ? r->n_gen / r->seconds : 0;
    if (o->json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "text", r->text);
        cJSON_AddNumberToObject(j, "tokens", r->n_gen);
        cJSON_AddItemToObject(j, "ids", cJSON_CreateIntArray(r->ids, r->n_gen));
        cJSON_AddNumberToObject(j, "tokens_per_s", tps);
        cJSON_AddNumberToObject(j, "decode_tokens_per_s", tps);
        cJSON_AddNumberToObject(j, "prompt_tokens", r->n_prompt);
        cJSON_AddNumberToObject(j, "prompt_seconds", r->prompt_seconds);
        cJSON_AddStringToObject(j, "act", o->act_q8 ? "q8" : "f32");
        cJSON_AddStringToObject(j, "isa", kn_engine_ops(e)->name);
        cJSON_AddStringToObject(j, "kernels", kernels);
        hx_print_json(j);
    } else {
        fputs(r->text, stdout);
        fputc('\n', stdout);
        fprintf(stderr, "qprobe generate: %d tokens, %.0f tok/s after a %d-token prompt (%s)\n", r->n_gen, tps,
                r->n_prompt, kernels);
    }
}

int hx_cmd_generate(int argc, char **argv) {
    struct gen_opts o;
    int rc = gen_parse(argc, argv, &o);
    if (rc) return rc == HX_CLI_HELP ? HX_EXIT_OK : rc;
    char err[QP_ERRLEN], *ptext = NULL;
    size_t plen = 0;
    if (o.prompt_file && (rc = hx_read_text(o.prompt_file, &ptext, &plen, err)))
        return hx_fail("generate", rc, "%s", err);
    const char *prompt = ptext ? ptext : o.prompt;
    if (!ptext) plen = strlen(prompt);
    struct hx_model *m;
    if ((rc = hx_open_model("generate", o.model_path, o.tok_path, 1, &m))) {
        free(ptext);
        return rc;
    }
    struct kn_engine *e = NULL;
    struct kn_state *s = NULL;
    int *ptoks = NULL, status = HX_EXIT_OK;
    float *logits = NULL;
    struct gen_result res = {0};
    const struct kn_config *cfg = &m->w.cfg;
    int steps = o.steps > cfg->seq_len ? cfg->seq_len : o.steps;
    size_t n_prompt = 0;
    unsigned flags = HX_TOK_ADD_BOS | (plen ? HX_TOK_SPACE_PREFIX : 0);
    // the model is a file mapping: the engine may copy matrices into its decoding layouts and drop them
    struct kn_engine_opts eo = {.act_q8 = o.act_q8, .release_source = hx_release_source};
    if (hx_tok_encode(m->tok, prompt, plen, flags, &ptoks, &n_prompt)) {
        status = hx_fail("generate", QP_ENOMEM, "out of memory encoding the prompt");
        goto done;
    }
    if (o.prompt_tokens && (size_t)o.prompt_tokens < n_prompt) n_prompt = (size_t)o.prompt_tokens;
    if (n_prompt == 0) { // an empty prompt and a vocabulary that adds no BOS (Qwen2)
        status = hx_usage_error("generate", "empty prompt, and the vocabulary adds no BOS to start from");
        goto done;
    }
    if (!(res.ids = malloc((size_t)steps * sizeof *res.ids))) {
        status = hx_fail("generate", QP_ENOMEM, "out of memory");
        goto done;
    }
    if ((rc = kn_engine_create_opts(&m->w, &eo, &e, err)) || (rc = kn_state_create(e, steps, steps, o.threads, &s, err))) {
        status = hx_fail("generate", rc, "%s", err);
        goto done;
    }
    if (!(logits = qp_alloc_array((size_t)cfg->vocab_size, sizeof(float)))) {
        status = hx_fail("generate", QP_ENOMEM, "out of memory");
        goto done;
    }
    gen_run(m, s, ptoks, (int)n_prompt, steps, logits, &res);
    gen_print(&o, &res, e);
done:
    free(res.ids);
    free(res.text);
    free(ptext);
    qp_free(logits);
    free(ptoks);
    kn_state_destroy(s);
    kn_engine_destroy(e);
    hx_model_close(m);
    return status;
}
