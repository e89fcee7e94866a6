// cmd_ppl.c — `qprobe ppl`: perplexity of a text under a stated protocol (eval.h), printed with
// its uncertainty, the tokens scored and the speed; --json for scripts.
#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hx_calib.h"
#include "hx_cli.h"
#include "hx_eval.h"
#include "kn_engine.h"
#include "hx_model.h"
#include "qp.h"
#include "qz_spec.h"
#include "hx_tokenizer.h"
#include "hx_variant.h"

static void ppl_usage(void) {
    printf("usage: qprobe ppl -m MODEL [-z TOKENIZER] --text FILE [-q SPEC] [--act f32|q8] [--ctx N]\n"
           "                  [--protocol P] [-t N] [--chunks N] [--json]\n"
           "                  [--calib FILE [--calib-seqs N] [--calib-len L]]\n\n"
           "Perplexity of FILE. The text is tokenized once as a whole, with BOS and the SPM space\n"
           "prefix (one trailing newline dropped, as llama.cpp does).\n\n"
           "  -m, --model FILE      llama2.c .bin, GGUF, or safetensors directory\n"
           "  -z, --tokenizer FILE  llama2.c tokenizer.bin (GGUF models carry their own)\n"
           "      --text FILE       evaluation text (UTF-8)\n"
           "  -q, --quant SPEC      quantize the model first, e.g. q4_k_m, q4_0;act=q8,\n"
           "                        rtn:bits=4:group=32:asym, nf4:group=64:dq (see docs/SPECS.md)\n"
           "      --act A           without -q: run the model's own packed types with f32\n"
           "                        activations (default) or q8 (as llama.cpp's CPU backend)\n"
           "      --ctx N           window length in tokens (default 512)\n"
           "      --protocol P      llamacpp (default): chunks of ctx, first token of each chunk\n"
           "                        set to BOS, second half scored — llama-perplexity's numbers;\n"
           "                        full: every token of non-overlapping windows scored\n"
           "  -t, --threads N       threads (default: all CPUs); results are the same for any N\n"
           "      --chunks N        evaluate only the first N chunks\n"
           "      --calib FILE      calibration text for gptq, awq, smoothquant and ';imatrix' specs\n"
           "                        (see docs/PTQ.md); refused when it shares a run of 256 bytes or\n"
           "                        more with --text\n"
           "      --calib-seqs N    calibration windows (default %d; fewer when the text is shorter)\n"
           "      --calib-len L     tokens per window (default %d, or the model's context when shorter)\n"
           "      --json            print the figures as one JSON object\n\n"
           "examples:\n"
           "  qprobe ppl -m stories260K.bin -z tok512.bin --text eval.txt\n"
           "  qprobe ppl -m model.gguf --text wiki.test.raw -q 'q4_0;act=q8' --ctx 512 --json\n"
           "  qprobe ppl -m model.gguf --text eval.txt -q 'gptq:bits=4:group=32:asym' --calib calib.txt\n",
           HX_CALIB_SEQS, HX_CALIB_LEN);
}

// The command line, parsed.
struct ppl_args {
    const char *model_path, *tok_path, *text_path, *spec, *calib_path;
    int act_q8, json, calib_seqs, calib_len;
    struct hx_ppl_opts po;
};

// Options into a; HX_CLI_HELP when --help was printed, else 0 or a usage error's exit status.
static int ppl_parse_opts(int argc, char **argv, struct ppl_args *a) {
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"tokenizer", required_argument, 0, 'z'},
        {"text", required_argument, 0, 'f'},  {"ctx", required_argument, 0, 'c'},
        {"protocol", required_argument, 0, 'P'}, {"threads", required_argument, 0, 't'},
        {"chunks", required_argument, 0, 'C'}, {"json", no_argument, 0, 'j'},
        {"quant", required_argument, 0, 'q'},  {"act", required_argument, 0, 'A'},
        {"calib", required_argument, 0, 'K'}, {"calib-seqs", required_argument, 0, 'S'},
        {"calib-len", required_argument, 0, 'L'},
        {"help", no_argument, 0, 'h'},        {0, 0, 0, 0}};
    int c, rc = 0;
    optind = 1;
    opterr = 0;
    while (!rc && (c = getopt_long(argc, argv, "m:z:f:c:t:q:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': a->model_path = optarg; break;
        case 'z': a->tok_path = optarg; break;
        case 'f': a->text_path = optarg; break;
        case 'c': rc = hx_parse_int("ppl", "--ctx", optarg, 4, 1 << 20, &a->po.ctx); break;
        case 'P':
            if (hx_protocol_parse(optarg, &a->po.protocol))
                return hx_usage_error("ppl", "--protocol '%s': expected llamacpp or full", optarg);
            break;
        case 't': rc = hx_parse_int("ppl", "-t", optarg, 1, 256, &a->po.n_threads); break;
        case 'C': rc = hx_parse_int("ppl", "--chunks", optarg, 1, 1 << 30, &a->po.max_chunks); break;
        case 'j': a->json = 1; break;
        case 'q': a->spec = optarg; break;
        case 'A':
            if (strcmp(optarg, "f32") && strcmp(optarg, "q8"))
                return hx_usage_error("ppl", "--act '%s': expected f32 or q8", optarg);
            a->act_q8 = strcmp(optarg, "q8") == 0;
            break;
        case 'K': a->calib_path = optarg; break;
        case 'S': rc = hx_parse_int("ppl", "--calib-seqs", optarg, 1, 1 << 20, &a->calib_seqs); break;
        case 'L': rc = hx_parse_int("ppl", "--calib-len", optarg, 2, 1 << 20, &a->calib_len); break;
        case 'h': ppl_usage(); return HX_CLI_HELP;
        default: return hx_unknown_option("ppl", argv);
        }
    }
    if (!rc && optind < argc) rc = hx_usage_error("ppl", "unexpected argument '%s'", argv[optind]);
    if (!rc && !a->text_path) rc = hx_usage_error("ppl", "no text given (--text FILE); see 'qprobe ppl --help'");
    return rc;
}

// The variant (-q), checked against the other options before any work; *v NULL without -q.
static int ppl_parse_variant(const struct ppl_args *a, struct qz_variant **v) {
    char err[QP_ERRLEN];
    *v = NULL;
    if (a->spec) {
        if (qz_variant_parse(a->spec, v, err)) return hx_usage_error("ppl", "%s", err);
        if (a->act_q8)
            return hx_usage_error("ppl", "--act goes with a model's own types; with -q say ';act=q8' in the spec");
        if (hx_variant_needs_calib(*v) && !a->calib_path)
            return hx_usage_error("ppl", "'%s' needs calibration data: add --calib FILE (a text disjoint from --text)",
                                  a->spec);
    }
    if (a->calib_path && !(*v && hx_variant_needs_calib(*v)))
        fprintf(stderr, "qprobe ppl: warning: --calib ignored: the variant needs no calibration\n");
    return 0;
}

// Everything the run made, for the printers.
struct ppl_state {
    const struct ppl_args *a;
    struct qz_variant *v;
    char *text;
    size_t len;
    struct hx_model *m;
    int *toks;
    size_t n_toks;
    double t_tok;
    struct hx_calib *cal;
    struct hx_calib_report report;
    int64_t overlap;
    struct hx_quant_model *qm;
    char spec[1024];
    struct kn_engine_opts eo;
    struct kn_engine *e;
    struct hx_ppl_result res;
};

static void ppl_state_free(struct ppl_state *r) {
    free(r->res.token_nll);
    hx_calib_report_clear(&r->report);
    hx_calib_destroy(r->cal);
    free(r->toks);
    free(r->text);
    kn_engine_destroy(r->e);
    hx_quant_model_destroy(r->qm);
    hx_model_close(r->m);
}

// The text read and tokenized whole, with BOS and the SPM prefix, one trailing newline dropped.
static int ppl_load(struct ppl_state *r, char *err) {
    const struct ppl_args *a = r->a;
    int rc = hx_read_text(a->text_path, &r->text, &r->len, err);
    if (rc) return hx_fail("ppl", rc, "%s", err);
    if ((rc = hx_open_model("ppl", a->model_path, a->tok_path, 1, &r->m))) return rc;
    if (a->po.ctx > r->m->w.cfg.seq_len)
        fprintf(stderr, "qprobe ppl: warning: --ctx %d exceeds the model's trained context %d\n", a->po.ctx,
                r->m->w.cfg.seq_len);
    if (r->len > 0 && r->text[r->len - 1] == '\n') r->len--; // llama.cpp drops one trailing newline
    r->t_tok = qp_now();
    if (hx_tok_encode(r->m->tok, r->text, r->len, HX_TOK_ADD_BOS | HX_TOK_SPACE_PREFIX, &r->toks, &r->n_toks))
        return hx_fail("ppl", QP_ENOMEM, "out of memory tokenizing '%s'", a->text_path);
    r->t_tok = qp_now() - r->t_tok;
    if (hx_ppl_n_chunks(a->po.protocol, r->n_toks, a->po.ctx) < 1)
        return hx_usage_error("ppl", "cannot use '%s': %zu tokens, fewer than one window of %d", a->text_path,
                              r->n_toks, a->po.ctx);
    return 0;
}

// The variant's model: calibration prepared when it needs some, then quantized.
static int ppl_quantize(struct ppl_state *r, char *err) {
    const struct ppl_args *a = r->a;
    int rc;
    if (hx_variant_needs_calib(r->v)) {
        struct hx_calib_setup cs = {.path = a->calib_path, .n_seqs = a->calib_seqs, .seq_len = a->calib_len,
                                    .n_threads = a->po.n_threads};
        if ((rc = hx_calib_prepare(&cs, r->m->tok, r->m->w.cfg.seq_len, a->text_path, r->text, r->len, &r->cal,
                                   &r->overlap, err)))
            return hx_fail("ppl", rc, "%s", err);
        r->cal->report = &r->report;
    }
    qz_variant_print(r->v, r->spec, sizeof r->spec);
    double tq = qp_now();
    if ((rc = hx_quant_model_create_calib(&r->m->w, r->v, r->cal, &r->qm, err)))
        return hx_fail("ppl", rc, "cannot quantize '%s' as '%s': %s", a->model_path, r->spec, err);
    hx_quant_model_engine_opts(r->qm, &r->eo);
    hx_model_release_pages(r->m); // the source is read again only where the variant kept it
    if (!a->json)
        fprintf(stderr, "qprobe ppl: quantized as %s in %.2f s (%.3f bits per weight)\n", r->spec, qp_now() - tq,
                r->qm->bits_per_weight);
    return 0;
}

// The model (or its variant) run over the text under the protocol.
static int ppl_run(struct ppl_state *r) {
    char err[QP_ERRLEN];
    int rc = ppl_load(r, err);
    r->eo.act_q8 = r->a->act_q8;
    if (!rc && r->v) rc = ppl_quantize(r, err);
    if (rc) return rc;
    const struct kn_weights *w = r->qm ? &r->qm->w : &r->m->w;
    if ((rc = kn_engine_create_opts(w, &r->eo, &r->e, err)))
        return hx_fail("ppl", rc, "cannot run '%s': %s", r->a->model_path, err);
    struct hx_ppl_opts po = r->a->po;
    po.bos = hx_tok_bos_added(r->m->tok);
    struct hx_progress prog;
    hx_progress_init(&prog, "ppl");
    po.progress = hx_progress_cb;
    po.progress_ctx = &prog;
    rc = hx_ppl_run(r->e, r->toks, r->n_toks, &po, 0, &r->res, err);
    hx_progress_end(&prog);
    return rc ? hx_fail("ppl", rc, "%s", err) : HX_EXIT_OK;
}

// The calibration's figures and the per-module losses of calibrated methods (hx_calib.h).
static void ppl_json_calib(cJSON *o, const struct ppl_state *r) {
    cJSON_AddStringToObject(o, "calib", r->a->calib_path);
    cJSON_AddNumberToObject(o, "calib_seqs", r->cal->n_seqs);
    cJSON_AddNumberToObject(o, "calib_len", r->cal->seq_len);
    cJSON_AddNumberToObject(o, "calib_bytes", (double)r->cal->text_bytes);
    cJSON_AddNumberToObject(o, "calib_overlap_bytes", (double)r->overlap);
    cJSON_AddNumberToObject(o, "calib_seconds", r->report.seconds);
    cJSON *mods = cJSON_AddArrayToObject(o, "calib_modules");
    for (int i = 0; mods && i < r->report.n_modules; i++) {
        const struct hx_calib_module *md = &r->report.modules[i];
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "tensor", md->name);
        cJSON_AddStringToObject(m, "method", qz_method_name(md->method));
        cJSON_AddNumberToObject(m, "loss", md->loss);
        cJSON_AddNumberToObject(m, md->method == QZ_GPTQ ? "obs_loss" : "alpha", md->aux);
        if (md->method == QZ_GPTQ) cJSON_AddNumberToObject(m, "damp", md->damp);
        cJSON_AddItemToArray(mods, m);
    }
}

static void ppl_print_json(const struct ppl_state *r) {
    const struct ppl_args *a = r->a;
    const struct hx_ppl_result *res = &r->res;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "model", a->model_path);
    cJSON_AddStringToObject(o, "text", a->text_path);
    cJSON_AddStringToObject(o, "spec", r->v ? r->spec : "");
    cJSON_AddStringToObject(o, "act", r->eo.act_q8 ? "q8" : "f32");
    cJSON_AddBoolToObject(o, "act_int8", r->eo.act_int8);
    if (r->cal) ppl_json_calib(o, r);
    if (r->qm) {
        cJSON_AddNumberToObject(o, "bits_per_weight", r->qm->bits_per_weight);
        cJSON_AddNumberToObject(o, "weight_bytes", (double)r->qm->bytes);
    }
    cJSON_AddStringToObject(o, "protocol", hx_protocol_name(a->po.protocol));
    cJSON_AddNumberToObject(o, "ctx", a->po.ctx);
    cJSON_AddNumberToObject(o, "chunks", res->n_chunks);
    cJSON_AddNumberToObject(o, "text_tokens", (double)r->n_toks);
    cJSON_AddNumberToObject(o, "tokens_scored", (double)res->nll.n);
    cJSON_AddNumberToObject(o, "tokens_processed", (double)res->tokens_processed);
    cJSON_AddNumberToObject(o, "mean_nll", met_nll_mean(&res->nll));
    cJSON_AddNumberToObject(o, "ppl", met_ppl(&res->nll));
    cJSON_AddNumberToObject(o, "ppl_stderr", met_ppl_stderr(&res->nll));
    cJSON_AddNumberToObject(o, "seconds", res->seconds);
    cJSON_AddNumberToObject(o, "tokenize_seconds", r->t_tok);
    cJSON_AddNumberToObject(o, "tokens_per_s", res->seconds > 0 ? (double)res->tokens_processed / res->seconds : 0);
    cJSON_AddNumberToObject(o, "threads", a->po.n_threads);
    cJSON_AddStringToObject(o, "isa", kn_engine_ops(r->e)->name);
    cJSON_AddStringToObject(o, "gemm", kn_gemm_name(kn_engine_gemm(r->e)));
    cJSON_AddStringToObject(o, "panels", kn_engine_panels(r->e));
    char kernels[512];
    cJSON_AddStringToObject(o, "kernels", kn_engine_kernels(r->e, kernels, sizeof kernels));
    hx_print_json(o);
}

static void ppl_print_text(const struct ppl_state *r) {
    const struct ppl_args *a = r->a;
    const struct hx_ppl_result *res = &r->res;
    const struct kn_config *cfg = &r->m->w.cfg;
    printf("model       %s (dim %d, %d layers, vocab %d)\n", a->model_path, cfg->dim, cfg->n_layers, cfg->vocab_size);
    if (r->v)
        printf("variant     %s (%.3f bits per weight, %.0f bytes of weights)\n", r->spec, r->qm->bits_per_weight,
               (double)r->qm->bytes);
    if (r->cal)
        printf("calibration %s: %d windows of %d tokens (%zu bytes), no overlap with the text\n", a->calib_path,
               r->cal->n_seqs, r->cal->seq_len, r->cal->text_bytes);
    printf("activations %s\n", r->eo.act_int8 == KN_ACT_INT8_TENSOR ? "int8 per tensor, static scales (W8A8)"
                               : r->eo.act_int8                    ? "int8 per token (W8A8)"
                               : r->eo.act_q8 ? "q8 (per block, as llama.cpp's CPU dot products)"
                                              : "f32");
    printf("protocol    %s, ctx %d, %d chunks, %lld tokens scored of %zu\n", hx_protocol_name(a->po.protocol),
           a->po.ctx, res->n_chunks, (long long)res->nll.n, r->n_toks);
    printf("perplexity  %.4f ± %.5f\n", met_ppl(&res->nll), met_ppl_stderr(&res->nll));
    printf("speed       %.0f tokens/s (%lld tokens in %.2f s, %d threads, %s, gemm %s, panels %s)\n",
           res->seconds > 0 ? (double)res->tokens_processed / res->seconds : 0, (long long)res->tokens_processed,
           res->seconds, a->po.n_threads, kn_engine_ops(r->e)->name, kn_gemm_name(kn_engine_gemm(r->e)),
           kn_engine_panels(r->e));
}

int hx_cmd_ppl(int argc, char **argv) {
    struct ppl_args a = {.calib_seqs = HX_CALIB_SEQS, .calib_len = HX_CALIB_LEN,
                         .po = {.protocol = HX_PROTO_LLAMACPP, .ctx = 512, .n_threads = qp_cpu_count()}};
    struct ppl_state r = {.a = &a};
    int rc = ppl_parse_opts(argc, argv, &a);
    if (!rc) rc = ppl_parse_variant(&a, &r.v);
    if (!rc) rc = ppl_run(&r);
    if (!rc && a.json) ppl_print_json(&r);
    else if (!rc) ppl_print_text(&r);
    ppl_state_free(&r);
    qz_variant_destroy(r.v);
    return rc == HX_CLI_HELP ? HX_EXIT_OK : rc;
}
