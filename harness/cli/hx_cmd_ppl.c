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
           "      --json            print the figures as one JSON object\n",
           HX_CALIB_SEQS, HX_CALIB_LEN);
}

int hx_cmd_ppl(int argc, char **argv) {
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"tokenizer", required_argument, 0, 'z'},
        {"text", required_argument, 0, 'f'},  {"ctx", required_argument, 0, 'c'},
        {"protocol", required_argument, 0, 'P'}, {"threads", required_argument, 0, 't'},
        {"chunks", required_argument, 0, 'C'}, {"json", no_argument, 0, 'j'},
        {"quant", required_argument, 0, 'q'},  {"act", required_argument, 0, 'A'},
        {"calib", required_argument, 0, 'K'}, {"calib-seqs", required_argument, 0, 'S'},
        {"calib-len", required_argument, 0, 'L'},
        {"help", no_argument, 0, 'h'},        {0, 0, 0, 0}};
    const char *model_path = NULL, *tok_path = NULL, *text_path = NULL, *spec = NULL;
    int act_q8 = 0;
    const char *calib_path = NULL;
    int calib_seqs = HX_CALIB_SEQS, calib_len = HX_CALIB_LEN;
    struct hx_ppl_opts po = {.protocol = HX_PROTO_LLAMACPP, .ctx = 512, .n_threads = qp_cpu_count()};
    int json = 0, c, rc;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "m:z:f:c:t:q:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_path = optarg; break;
        case 'z': tok_path = optarg; break;
        case 'f': text_path = optarg; break;
        case 'c': if ((rc = hx_parse_int("ppl", "--ctx", optarg, 4, 1 << 20, &po.ctx))) return rc; break;
        case 'P':
            if (hx_protocol_parse(optarg, &po.protocol))
                return hx_usage_error("ppl", "--protocol '%s': expected llamacpp or full", optarg);
            break;
        case 't': if ((rc = hx_parse_int("ppl", "-t", optarg, 1, 256, &po.n_threads))) return rc; break;
        case 'C': if ((rc = hx_parse_int("ppl", "--chunks", optarg, 1, 1 << 30, &po.max_chunks))) return rc; break;
        case 'j': json = 1; break;
        case 'q': spec = optarg; break;
        case 'A':
            if (strcmp(optarg, "f32") && strcmp(optarg, "q8"))
                return hx_usage_error("ppl", "--act '%s': expected f32 or q8", optarg);
            act_q8 = strcmp(optarg, "q8") == 0;
            break;
        case 'K': calib_path = optarg; break;
        case 'S': if ((rc = hx_parse_int("ppl", "--calib-seqs", optarg, 1, 1 << 20, &calib_seqs))) return rc; break;
        case 'L': if ((rc = hx_parse_int("ppl", "--calib-len", optarg, 2, 1 << 20, &calib_len))) return rc; break;
        case 'h': ppl_usage(); return 0;
        default:
            return hx_usage_error("ppl", "unknown or incomplete option '%s'; see 'qprobe ppl --help'",
                                  argv[optind - 1]);
        }
    }
    if (optind < argc) return hx_usage_error("ppl", "unexpected argument '%s'", argv[optind]);
    if (!text_path) return hx_usage_error("ppl", "no text given (--text FILE); see 'qprobe ppl --help'");

    char err[QP_ERRLEN];
    struct qz_variant *variant = NULL;
    if (spec) {
        if (qz_variant_parse(spec, &variant, err)) return hx_usage_error("ppl", "%s", err);
        if (act_q8) {
            qz_variant_destroy(variant);
            return hx_usage_error("ppl", "--act goes with a model's own types; with -q say ';act=q8' in the spec");
        }
        if (hx_variant_needs_calib(variant) && !calib_path) {
            qz_variant_destroy(variant);
            return hx_usage_error("ppl", "'%s' needs calibration data: add --calib FILE (a text disjoint from --text)",
                                  spec);
        }
    }
    if (calib_path && !(variant && hx_variant_needs_calib(variant)))
        fprintf(stderr, "qprobe ppl: warning: --calib ignored: the variant needs no calibration\n");
    char *text = NULL;
    size_t len;
    if (hx_read_text(text_path, &text, &len, err)) {
        qz_variant_destroy(variant);
        return hx_usage_error("ppl", "%s", err);
    }
    struct hx_model *m;
    if ((rc = hx_open_model("ppl", model_path, tok_path, 1, &m))) {
        free(text);
        qz_variant_destroy(variant);
        return rc;
    }
    int status = HX_EXIT_USAGE;
    struct kn_engine *e = NULL;
    struct hx_quant_model *qm = NULL;
    char spec_canon[1024] = "";
    int *toks = NULL;
    size_t n_toks = 0;
    struct hx_ppl_result res = {0};
    struct hx_calib *cal = NULL;
    struct hx_calib_report report = {0};
    char *ctext = NULL;
    int64_t overlap = 0;
    if (po.ctx > m->w.cfg.seq_len)
        fprintf(stderr, "qprobe ppl: warning: --ctx %d exceeds the model's trained context %d\n", po.ctx,
                m->w.cfg.seq_len);

    if (len > 0 && text[len - 1] == '\n') len--; // llama.cpp drops one trailing newline
    double t_tok = qp_now();
    if (hx_tok_encode(m->tok, text, len, HX_TOK_ADD_BOS | HX_TOK_SPACE_PREFIX, &toks, &n_toks)) {
        hx_usage_error("ppl", "out of memory tokenizing '%s'", text_path);
        goto done;
    }
    t_tok = qp_now() - t_tok;
    if (hx_ppl_n_chunks(po.protocol, n_toks, po.ctx) < 1) {
        hx_usage_error("ppl", "cannot use '%s': %zu tokens, fewer than one window of %d", text_path, n_toks, po.ctx);
        goto done;
    }
    const struct kn_weights *weights = &m->w;
    if (variant && hx_variant_needs_calib(variant)) {
        size_t clen;
        if (hx_read_text(calib_path, &ctext, &clen, err)) {
            hx_usage_error("ppl", "%s", err);
            goto done;
        }
        if (hx_calib_create(m->tok, ctext, clen, calib_seqs, QP_MIN(calib_len, m->w.cfg.seq_len), &cal, err)) {
            hx_usage_error("ppl", "cannot calibrate on '%s': %s", calib_path, err);
            goto done;
        }
        cal->n_threads = po.n_threads;
        cal->report = &report;
        rc = hx_calib_overlap(ctext, cal->text_bytes, text, len, &overlap);
        if (rc < 0) {
            hx_usage_error("ppl", "out of memory comparing '%s' with '%s'", calib_path, text_path);
            goto done;
        }
        if (rc > 0) {
            hx_usage_error("ppl", "calibration text '%s' and evaluation text '%s' share %lld bytes in runs of %d bytes "
                           "or more; calibrate on a disjoint text", calib_path, text_path, (long long)overlap,
                           HX_OVERLAP_MIN_RUN);
            goto done;
        }
    }
    if (variant) {
        qz_variant_print(variant, spec_canon, sizeof spec_canon);
        double tq = qp_now();
        if ((rc = hx_quant_model_create_calib(&m->w, variant, cal, &qm, err))) {
            hx_usage_error("ppl", "cannot quantize '%s' as '%s': %s", model_path, spec_canon, err);
            if (rc == QP_ENUMERIC || rc == QP_ENOMEM) status = HX_EXIT_RUNTIME; // QAT diverged, out of memory
            goto done;
        }
        weights = &qm->w;
        act_q8 = qm->act_q8;
        hx_model_release_pages(m); // the source is read again only where the variant kept it
        if (!json)
            fprintf(stderr, "qprobe ppl: quantized as %s in %.2f s (%.3f bits per weight)\n", spec_canon,
                    qp_now() - tq, qm->bits_per_weight);
    }
    struct kn_engine_opts eo = {.act_q8 = act_q8, .act_int8 = variant ? hx_variant_act_int8(variant) : 0,
                                .act_scales = qm ? qm->act_scales : NULL}; // W8A8's static scales
    if ((rc = kn_engine_create_opts(weights, &eo, &e, err))) {
        hx_usage_error("ppl", "cannot run '%s': %s", model_path, err);
        goto done;
    }
    po.bos = hx_tok_bos(m->tok);
    struct hx_progress prog;
    hx_progress_init(&prog, "ppl");
    po.progress = hx_progress_cb;
    po.progress_ctx = &prog;
    rc = hx_ppl_run(e, toks, n_toks, &po, 0, &res, err);
    hx_progress_end(&prog);
    if (rc) {
        hx_usage_error("ppl", "%s", err);
        goto done;
    }
    double ppl = met_ppl(&res.nll), pe = met_ppl_stderr(&res.nll);
    double tps = res.seconds > 0 ? (double)res.tokens_processed / res.seconds : 0;
    const char *isa = kn_engine_ops(e)->name;
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "model", model_path);
        cJSON_AddStringToObject(o, "text", text_path);
        cJSON_AddStringToObject(o, "spec", variant ? spec_canon : "");
        cJSON_AddStringToObject(o, "act", act_q8 ? "q8" : "f32");
        cJSON_AddBoolToObject(o, "act_int8", eo.act_int8);
        if (cal) {
            cJSON_AddStringToObject(o, "calib", calib_path);
            cJSON_AddNumberToObject(o, "calib_seqs", cal->n_seqs);
            cJSON_AddNumberToObject(o, "calib_len", cal->seq_len);
            cJSON_AddNumberToObject(o, "calib_bytes", (double)cal->text_bytes);
            cJSON_AddNumberToObject(o, "calib_overlap_bytes", (double)overlap);
            cJSON_AddNumberToObject(o, "calib_seconds", report.seconds);
            cJSON *mods = cJSON_AddArrayToObject(o, "calib_modules");
            for (int i = 0; mods && i < report.n_modules; i++) { // per-module loss (calib.h)
                const struct hx_calib_module *md = &report.modules[i];
                cJSON *r = cJSON_CreateObject();
                cJSON_AddStringToObject(r, "tensor", md->name);
                cJSON_AddStringToObject(r, "method", md->method);
                cJSON_AddNumberToObject(r, "loss", md->loss);
                cJSON_AddNumberToObject(r, md->method[0] == 'g' ? "obs_loss" : "alpha", md->aux);
                if (md->method[0] == 'g') cJSON_AddNumberToObject(r, "damp", md->damp);
                cJSON_AddItemToArray(mods, r);
            }
        }
        if (qm) {
            cJSON_AddNumberToObject(o, "bits_per_weight", qm->bits_per_weight);
            cJSON_AddNumberToObject(o, "weight_bytes", (double)qm->bytes);
        }
        cJSON_AddStringToObject(o, "protocol", hx_protocol_name(po.protocol));
        cJSON_AddNumberToObject(o, "ctx", po.ctx);
        cJSON_AddNumberToObject(o, "chunks", res.n_chunks);
        cJSON_AddNumberToObject(o, "text_tokens", (double)n_toks);
        cJSON_AddNumberToObject(o, "tokens_scored", (double)res.nll.n);
        cJSON_AddNumberToObject(o, "tokens_processed", (double)res.tokens_processed);
        cJSON_AddNumberToObject(o, "mean_nll", met_nll_mean(&res.nll));
        cJSON_AddNumberToObject(o, "ppl", ppl);
        cJSON_AddNumberToObject(o, "ppl_stderr", pe);
        cJSON_AddNumberToObject(o, "seconds", res.seconds);
        cJSON_AddNumberToObject(o, "tokenize_seconds", t_tok);
        cJSON_AddNumberToObject(o, "tokens_per_s", tps);
        cJSON_AddNumberToObject(o, "threads", po.n_threads);
        cJSON_AddStringToObject(o, "isa", isa);
        cJSON_AddStringToObject(o, "gemm", kn_gemm_name(kn_engine_gemm(e)));
        cJSON_AddStringToObject(o, "panels", kn_engine_panels(e));
        hx_print_json(o);
    } else {
        printf("model       %s (dim %d, %d layers, vocab %d)\n", model_path, m->w.cfg.dim, m->w.cfg.n_layers,
               m->w.cfg.vocab_size);
        if (variant)
            printf("variant     %s (%.3f bits per weight, %.0f bytes of weights)\n", spec_canon,
                   qm->bits_per_weight, (double)qm->bytes);
        if (cal)
            printf("calibration %s: %d windows of %d tokens (%zu bytes), no overlap with the text\n", calib_path,
                   cal->n_seqs, cal->seq_len, cal->text_bytes);
        printf("activations %s\n", eo.act_int8 == KN_ACT_INT8_TENSOR ? "int8 per tensor, static scales (W8A8)"
                                    : eo.act_int8 ? "int8 per token (W8A8)"
                                    : act_q8   ? "q8 (per block, as llama.cpp's CPU dot products)"
                                               : "f32");
        printf("protocol    %s, ctx %d, %d chunks, %lld tokens scored of %zu\n", hx_protocol_name(po.protocol),
               po.ctx, res.n_chunks, (long long)res.nll.n, n_toks);
        printf("perplexity  %.4f ± %.5f\n", ppl, pe);
        printf("speed       %.0f tokens/s (%lld tokens in %.2f s, %d threads, %s, gemm %s, panels %s)\n",
               tps, (long long)res.tokens_processed, res.seconds, po.n_threads, isa,
               kn_gemm_name(kn_engine_gemm(e)), kn_engine_panels(e));
    }
    status = HX_EXIT_OK;
done:
    free(res.token_nll);
    hx_calib_report_clear(&report);
    hx_calib_destroy(cal);
    free(ctext);
    free(toks);
    free(text);
    kn_engine_destroy(e);
    hx_quant_model_destroy(qm);
    qz_variant_destroy(variant);
    hx_model_close(m);
    return status;
}
