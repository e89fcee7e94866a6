// cmd_eval.c — `qprobe eval`: one variant against the reference, every diagnostic, into the study
// database (study.h).
#include <cjson/cJSON.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hx_cli.h"
#include "qp.h"
#include "qz_spec.h"
#include "hx_store.h"
#include "hx_study.h"

static void eval_usage(void) {
    printf("usage: qprobe eval -m MODEL [-z TOKENIZER] --text FILE --db STUDY.sqlite\n"
           "                   (-q SPEC | --vs FILE [--act f32|q8]) [options]\n\n"
           "Evaluates one variant against the unquantized model on the same windows and stores\n"
           "everything in the study database (docs/SCHEMA.md): perplexity of both, KLD(ref||variant)\n"
           "with percentiles, delta-p, top-1 agreement, the paired ln PPL ratio; per-layer error\n"
           "(accumulated and local) at every probe site; per-tensor weight error; and, once per run,\n"
           "the reference's weight and activation outlier statistics.\n\n"
           "  -m, --model FILE        the reference model (llama2.c .bin, GGUF, safetensors dir)\n"
           "  -z, --tokenizer FILE    llama2.c tokenizer.bin (GGUF models carry their own)\n"
           "      --text FILE         evaluation text\n"
           "      --db FILE           study database (created when missing)\n"
           "  -q, --quant SPEC        the variant, e.g. q4_0;act=q8 or rtn:bits=3:group=32 (docs/SPECS.md)\n"
           "      --vs FILE           or: a model file already quantized (e.g. llama.cpp's GGUF)\n"
           "      --act f32|q8        with --vs: activations (q8 = llama.cpp's CPU numerics)\n"
           "      --ctx N             window length (default 512)\n"
           "      --protocol P        llamacpp (default) or full (see qprobe ppl --help)\n"
           "      --chunks N          only the first N chunks\n"
           "      --layer-chunks N    chunks with per-layer error (default 1, 0 = off)\n"
           "      --act-chunks N      chunks with activation statistics of the reference (default 4)\n"
           "      --sensitivity N     isolated sensitivity: each layer quantized alone, KLD over\n"
           "                          N chunks (default 0 = off)\n"
           "      --sensitivity-tensors  ... and each tensor of each layer alone\n"
           "      --keep-tokens       store every scored token's NLL, KLD and delta-p\n"
           "      --tasks S1,S2       task suites scored for both models, with flips (docs/TASKS.md)\n"
           "      --task-limit N      items per suite (default all)\n"
           "      --calib FILE        calibration text for gptq/awq/smoothquant and ;imatrix specs\n"
           "      --calib-seqs N      calibration windows (default 128)\n"
           "      --calib-len L       tokens per window (default 512, at most the model's context)\n"
           "      --allow-overlap     record (instead of refusing) calibration text that overlaps the\n"
           "                          evaluation text\n"
           "      --label TEXT        a label, part of the run's identity\n"
           "      --resume            skip (instead of refusing) a variant already stored\n"
           "  -t, --threads N         threads (default: all CPUs); results are the same for any N\n"
           "      --json              print the figures as one JSON object\n\n"
           "The same model, text and protocol always go into the same run, so several eval\n"
           "invocations build one comparison.\n\n"
           "examples:\n"
           "  qprobe eval -m stories260K.bin -z tok512.bin --text eval.txt --db study.sqlite -q q4_k_m\n"
           "  qprobe eval -m model.gguf --text eval.txt --db study.sqlite -q 'gptq:bits=4:group=32' \\\n"
           "      --calib calib.txt --tasks tinystories-cloze --json\n"
           "  qprobe eval -m model.gguf --text eval.txt --db study.sqlite --vs model-Q4_K_M.gguf --act q8\n");
}

// The command line, parsed.
struct eval_args {
    struct hx_study_opts so;
    const char *spec, *vs, *act, *tasks;
    int json, task_limit;
};

// Options into a; HX_CLI_HELP when --help was printed, else 0 or the exit status of a usage
// error (printed).
static int eval_parse_opts(int argc, char **argv, struct eval_args *a) {
    enum { O_TEXT = 256, O_DB, O_VS, O_ACT, O_CTX, O_PROTO, O_CHUNKS, O_LAYER, O_ACTCH, O_SENS,
           O_SENS_T, O_KEEP, O_LABEL, O_RESUME, O_JSON, O_TASKS, O_TLIMIT, O_CALIB, O_CSEQS, O_CLEN, O_OVERLAP };
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},      {"tokenizer", required_argument, 0, 'z'},
        {"text", required_argument, 0, O_TEXT},    {"db", required_argument, 0, O_DB},
        {"quant", required_argument, 0, 'q'},      {"vs", required_argument, 0, O_VS},
        {"act", required_argument, 0, O_ACT},      {"ctx", required_argument, 0, O_CTX},
        {"protocol", required_argument, 0, O_PROTO}, {"chunks", required_argument, 0, O_CHUNKS},
        {"layer-chunks", required_argument, 0, O_LAYER}, {"act-chunks", required_argument, 0, O_ACTCH},
        {"sensitivity", required_argument, 0, O_SENS}, {"sensitivity-tensors", no_argument, 0, O_SENS_T},
        {"keep-tokens", no_argument, 0, O_KEEP},   {"label", required_argument, 0, O_LABEL},
        {"resume", no_argument, 0, O_RESUME},      {"threads", required_argument, 0, 't'},
        {"json", no_argument, 0, O_JSON},          {"help", no_argument, 0, 'h'},
        {"tasks", required_argument, 0, O_TASKS},  {"task-limit", required_argument, 0, O_TLIMIT},
        {"calib", required_argument, 0, O_CALIB},  {"calib-seqs", required_argument, 0, O_CSEQS},
        {"calib-len", required_argument, 0, O_CLEN}, {"allow-overlap", no_argument, 0, O_OVERLAP},
        {0, 0, 0, 0}};
    struct hx_study_opts *so = &a->so;
    int c, rc = 0;
    optind = 1;
    opterr = 0;
    while (!rc && (c = getopt_long(argc, argv, "m:z:q:t:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': so->model_path = optarg; break;
        case 'z': so->tok_path = optarg; break;
        case O_TEXT: so->text_path = optarg; break;
        case O_DB: so->db_path = optarg; break;
        case 'q': a->spec = optarg; break;
        case O_VS: a->vs = optarg; break;
        case O_ACT:
            if (strcmp(optarg, "f32") && strcmp(optarg, "q8"))
                return hx_usage_error("eval", "--act '%s': expected f32 or q8", optarg);
            a->act = optarg;
            break;
        case O_CTX: rc = hx_parse_int("eval", "--ctx", optarg, 4, 1 << 20, &so->ctx); break;
        case O_PROTO:
            if (hx_protocol_parse(optarg, &so->protocol))
                return hx_usage_error("eval", "--protocol '%s': expected llamacpp or full", optarg);
            break;
        case O_CHUNKS: rc = hx_parse_int("eval", "--chunks", optarg, 1, 1 << 30, &so->max_chunks); break;
        case O_LAYER: rc = hx_parse_int("eval", "--layer-chunks", optarg, 0, 1 << 30, &so->layer_chunks); break;
        case O_ACTCH: rc = hx_parse_int("eval", "--act-chunks", optarg, 0, 1 << 30, &so->act_chunks); break;
        case O_SENS: rc = hx_parse_int("eval", "--sensitivity", optarg, 0, 1 << 30, &so->sens_chunks); break;
        case O_SENS_T: so->sens_tensors = 1; break;
        case O_KEEP: so->keep_tokens = 1; break;
        case O_LABEL: so->label = optarg; break;
        case O_RESUME: so->resume = 1; break;
        case 't': rc = hx_parse_int("eval", "-t", optarg, 1, 256, &so->n_threads); break;
        case O_JSON: a->json = 1; break;
        case O_TASKS: a->tasks = optarg; break;
        case O_CALIB: so->calib_path = optarg; break;
        case O_CSEQS: rc = hx_parse_int("eval", "--calib-seqs", optarg, 1, 1 << 20, &so->calib_seqs); break;
        case O_CLEN: rc = hx_parse_int("eval", "--calib-len", optarg, 2, 1 << 20, &so->calib_len); break;
        case O_OVERLAP: so->allow_overlap = 1; break;
        case O_TLIMIT: rc = hx_parse_int("eval", "--task-limit", optarg, 1, 1 << 30, &a->task_limit); break;
        case 'h': eval_usage(); return HX_CLI_HELP;
        default: return hx_unknown_option("eval", argv);
        }
    }
    if (!rc && optind < argc) rc = hx_usage_error("eval", "unexpected argument '%s'", argv[optind]);
    return rc;
}

// What the options must say together; the variant as hx_study_variant takes it into variant.
static int eval_check_args(struct eval_args *a, char *variant, size_t cap) {
    struct hx_study_opts *so = &a->so;
    if (!so->model_path) return hx_usage_error("eval", "no model given (-m FILE)");
    if (!so->text_path) return hx_usage_error("eval", "no text given (--text FILE)");
    if (!so->db_path) return hx_usage_error("eval", "no database given (--db FILE)");
    if (!!a->spec == !!a->vs) return hx_usage_error("eval", "give exactly one variant: -q SPEC or --vs FILE");
    if (a->act && !a->vs) return hx_usage_error("eval", "--act goes with --vs; with -q say ';act=q8' in the spec");
    if (so->sens_tensors && !so->sens_chunks) so->sens_chunks = 1;
    so->quiet = a->json;
    if (a->vs) {
        if (strlen(a->vs) > 4000) return hx_usage_error("eval", "--vs path too long");
        snprintf(variant, cap, "file:%s%s", a->vs, a->act && strcmp(a->act, "q8") == 0 ? ";act=q8" : "");
        return 0;
    }
    snprintf(variant, cap, "%s", a->spec);
    char err[QP_ERRLEN];
    struct qz_variant *v; // a bad spec is reported before any work
    if (qz_variant_parse(a->spec, &v, err)) return hx_usage_error("eval", "%s", err);
    qz_variant_destroy(v);
    return 0;
}

static void eval_print_json(const struct hx_variant_outcome *vo, int64_t run_id) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "spec", vo->spec);
    cJSON_AddBoolToObject(o, "skipped", vo->skipped);
    cJSON_AddNumberToObject(o, "run_id", (double)run_id);
    cJSON_AddNumberToObject(o, "variant_id", (double)vo->variant_id);
    if (!vo->skipped) {
        cJSON_AddNumberToObject(o, "bits_per_weight", vo->bits_per_weight);
        cJSON_AddNumberToObject(o, "ppl", vo->ppl);
        cJSON_AddNumberToObject(o, "ppl_stderr", vo->ppl_unc);
        cJSON_AddNumberToObject(o, "ppl_ref", vo->ppl_ref);
        cJSON_AddNumberToObject(o, "ln_ppl_ratio", vo->ln_ratio);
        cJSON_AddNumberToObject(o, "ln_ppl_ratio_stderr", vo->ln_ratio_unc);
        cJSON_AddNumberToObject(o, "kld_mean", vo->kld_mean);
        cJSON_AddNumberToObject(o, "kld_stderr", vo->kld_unc);
        cJSON_AddNumberToObject(o, "kld_p99", vo->kld_p99);
        cJSON_AddNumberToObject(o, "top1", vo->same_top);
        cJSON_AddNumberToObject(o, "top1_stderr", vo->same_top_unc);
        cJSON_AddNumberToObject(o, "worst_layer", vo->worst_layer);
        cJSON_AddNumberToObject(o, "tokens_per_s", vo->tokens_per_second);
    }
    hx_print_json(o);
}

static void eval_print_text(const struct hx_variant_outcome *vo, int64_t run_id, const char *db) {
    if (vo->skipped) {
        printf("variant %s already stored (run %lld, variant %lld): skipped\n", vo->spec, (long long)run_id,
               (long long)vo->variant_id);
        return;
    }
    printf("variant     %s (%.3f bits per weight)\n", vo->spec, vo->bits_per_weight);
    printf("perplexity  %.4f ± %.5f (reference %.4f), ln ratio %+.5f ± %.5f\n", vo->ppl, vo->ppl_unc, vo->ppl_ref,
           vo->ln_ratio, vo->ln_ratio_unc);
    printf("KLD         mean %.6f ± %.6f, p99 %.6f\n", vo->kld_mean, vo->kld_unc, vo->kld_p99);
    printf("top-1       %.3f%% ± %.3f%% agreement with the reference\n", 100 * vo->same_top, 100 * vo->same_top_unc);
    if (vo->worst_layer >= 0) printf("sensitivity layer %d hurts most when quantized alone\n", vo->worst_layer);
    printf("stored      run %lld, variant %lld in %s (%.0f tokens/s)\n", (long long)run_id, (long long)vo->variant_id,
           db, vo->tokens_per_second);
}

// The study opened, the variant evaluated and stored, its figures printed.
static int eval_run(struct eval_args *a, const char *variant, struct hx_task_list *tl) {
    char err[QP_ERRLEN];
    a->so.task_suites = (const char *const *)tl->names;
    a->so.task_limits = tl->limits;
    a->so.n_tasks = tl->n;
    struct hx_study *s;
    int rc = hx_study_open(&a->so, &s, err);
    if (rc) return hx_fail("eval", rc, "%s", err);
    struct hx_variant_outcome vo;
    rc = hx_study_variant(s, variant, 1, &vo, err);
    int status = rc ? hx_fail("eval", rc, "%s", err) : HX_EXIT_OK;
    if (!rc && a->json) eval_print_json(&vo, hx_study_run_id(s));
    else if (!rc) eval_print_text(&vo, hx_study_run_id(s), a->so.db_path);
    hx_variant_outcome_clear(&vo);
    hx_study_close(s);
    return status;
}

int hx_cmd_eval(int argc, char **argv) {
    struct eval_args a = {0};
    hx_study_opts_default(&a.so);
    char variant[4200];
    int rc = eval_parse_opts(argc, argv, &a);
    if (!rc) rc = eval_check_args(&a, variant, sizeof variant);
    if (rc) return rc == HX_CLI_HELP ? HX_EXIT_OK : rc;
    struct hx_task_list tl = {0};
    if (a.tasks && (rc = hx_task_list_split(&tl, a.tasks, a.task_limit)))
        return hx_fail("eval", rc, "out of memory");
    rc = eval_run(&a, variant, &tl);
    hx_task_list_free(&tl);
    return rc;
}
