// cmd_tasks.c — `qprobe tasks`: a task suite scored by log-likelihood on the reference model
// and, with -q, on a quantized variant; accuracy of each, the answers that flipped, McNemar's
// exact test and a paired bootstrap interval for the accuracy change; --json for scripts.
#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hx_cli.h"
#include "kn_engine.h"
#include "met_paired.h"
#include "hx_model.h"
#include "qp.h"
#include "qz_spec.h"
#include "hx_task_io.h"
#include "task_score.h"
#include "hx_tasks_run.h"
#include "hx_variant.h"

// ---------------------------------------------------------------------------------------------
// Output

static void tasks_usage(void) {
    printf("usage: qprobe tasks -m MODEL [-z TOKENIZER] --suite NAME|FILE [-q SPEC] [--limit N]\n"
           "                    [--lenient] [-t N] [--ctx N] [--fixtures DIR] [--json]\n\n"
           "Scores a task suite by log-likelihood (as lm-evaluation-harness) on the model and, with -q,\n"
           "on its quantized variant, and says which answers flipped. See docs/TASKS.md.\n\n"
           "  -m, --model FILE      llama2.c .bin, GGUF, or safetensors directory\n"
           "  -z, --tokenizer FILE  llama2.c tokenizer.bin (GGUF models carry their own)\n"
           "      --suite S         built-in: tinystories-cloze, tinystories-nextsent;\n"
           "                        dataset: lambada, hellaswag, piqa, arc-easy, boolq (files under\n"
           "                        the fixtures directory); or a JSONL file of items\n"
           "  -q, --quant SPEC      also score the model quantized as SPEC (e.g. q4_0;act=q8, q4_k_m)\n"
           "                        and compare it with the unquantized reference\n"
           "      --limit N         only the first N items\n"
           "      --lenient         skip malformed records (counted) instead of stopping at the first\n"
           "      --ctx N           positions per sequence (default: the model's trained context);\n"
           "                        longer contexts are cut from the left, after BOS\n"
           "      --fixtures DIR    where datasets and tinystories_val.txt live (default:\n"
           "                        $QPROBE_FIXTURES, else ../shared/fixtures)\n"
           "  -t, --threads N       threads (default: all CPUs); results are the same for any N\n"
           "      --json            print the figures as one JSON object\n");
}

static void tasks_print_model(const char *what, const struct task_result *r) {
    const struct task_summary *s = &r->sum;
    double ips = r->seconds > 0 ? r->n_items / r->seconds : 0;
    if (r->kind == TASK_MC)
        printf("%-11s acc %.4f ± %.4f   acc_norm %.4f ± %.4f", what, s->acc, s->acc_stderr, s->acc_norm,
               s->acc_norm_stderr);
    else
        printf("%-11s acc %.4f ± %.4f   target ppl %.3f   token ppl %.4f", what, s->acc, s->acc_stderr,
               s->target_ppl, s->token_ppl);
    printf("   (%d items%s, %.2f s, %.1f items/s)\n", s->n, s->n_skipped ? ", some too long" : "", r->seconds, ips);
    if (s->n_skipped) printf("%-11s %d items skipped: a continuation alone exceeds the window\n", "", s->n_skipped);
}

static cJSON *tasks_json_model(const struct task_result *r) {
    const struct task_summary *s = &r->sum;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "scored", s->n);
    cJSON_AddNumberToObject(o, "too_long", s->n_skipped);
    cJSON_AddNumberToObject(o, "acc", s->acc);
    cJSON_AddNumberToObject(o, "acc_stderr", s->acc_stderr);
    if (r->kind == TASK_MC) {
        cJSON_AddNumberToObject(o, "acc_norm", s->acc_norm);
        cJSON_AddNumberToObject(o, "acc_norm_stderr", s->acc_norm_stderr);
    } else {
        cJSON_AddNumberToObject(o, "target_ll_mean", s->ll_mean);
        cJSON_AddNumberToObject(o, "target_ppl", s->target_ppl);
        cJSON_AddNumberToObject(o, "token_ppl", s->token_ppl);
        cJSON_AddNumberToObject(o, "target_tokens", (double)s->target_tokens);
    }
    cJSON_AddNumberToObject(o, "seconds", r->seconds);
    cJSON_AddNumberToObject(o, "items_per_s", r->seconds > 0 ? r->n_items / r->seconds : 0);
    cJSON_AddNumberToObject(o, "tokens_processed", (double)r->tokens_processed);
    return o;
}

static cJSON *tasks_json_paired(const struct met_paired *p) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "compared", (double)p->n);
    cJSON_AddNumberToObject(o, "both_correct", (double)p->both_correct);
    cJSON_AddNumberToObject(o, "both_wrong", (double)p->both_wrong);
    cJSON_AddNumberToObject(o, "flips_correct_to_wrong", (double)p->flips_cw);
    cJSON_AddNumberToObject(o, "flips_wrong_to_correct", (double)p->flips_wc);
    cJSON_AddNumberToObject(o, "delta_acc", p->delta);
    cJSON_AddNumberToObject(o, "mcnemar_p", p->mcnemar_p);
    cJSON_AddNumberToObject(o, "ci_lo", p->ci_lo);
    cJSON_AddNumberToObject(o, "ci_hi", p->ci_hi);
    cJSON_AddNumberToObject(o, "ci_level", p->level);
    cJSON_AddNumberToObject(o, "bootstrap_resamples", p->n_boot);
    return o;
}

// ---------------------------------------------------------------------------------------------
// The command

int hx_cmd_tasks(int argc, char **argv) {
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},    {"tokenizer", required_argument, 0, 'z'},
        {"suite", required_argument, 0, 's'},    {"quant", required_argument, 0, 'q'},
        {"limit", required_argument, 0, 'L'},    {"lenient", no_argument, 0, 'l'},
        {"threads", required_argument, 0, 't'},  {"ctx", required_argument, 0, 'c'},
        {"fixtures", required_argument, 0, 'F'}, {"json", no_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},           {0, 0, 0, 0}};
    const char *model_path = NULL, *tok_path = NULL, *suite_name = NULL, *spec = NULL, *fixtures = NULL;
    struct hx_task_read_opts ro = {0};
    struct hx_tasks_opts to = {.n_threads = qp_cpu_count()};
    int json = 0, c, rc;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "m:z:q:t:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_path = optarg; break;
        case 'z': tok_path = optarg; break;
        case 's': suite_name = optarg; break;
        case 'q': spec = optarg; break;
        case 'L': if ((rc = hx_parse_int("tasks", "--limit", optarg, 1, 1 << 30, &ro.limit))) return rc; break;
        case 'l': ro.lenient = 1; break;
        case 't': if ((rc = hx_parse_int("tasks", "-t", optarg, 1, 256, &to.n_threads))) return rc; break;
        case 'c': if ((rc = hx_parse_int("tasks", "--ctx", optarg, 2, 1 << 20, &to.window))) return rc; break;
        case 'F': fixtures = optarg; break;
        case 'j': json = 1; break;
        case 'h': tasks_usage(); return 0;
        default:
            return hx_usage_error("tasks", "unknown or incomplete option '%s'; see 'qprobe tasks --help'",
                                  argv[optind - 1]);
        }
    }
    if (optind < argc) return hx_usage_error("tasks", "unexpected argument '%s'", argv[optind]);
    if (!suite_name) return hx_usage_error("tasks", "no suite given (--suite NAME|FILE); see 'qprobe tasks --help'");
    if (!model_path) return hx_usage_error("tasks", "no model given (-m MODEL); see 'qprobe tasks --help'");

    char err[QP_ERRLEN];
    struct qz_variant *variant = NULL;
    if (spec && qz_variant_parse(spec, &variant, err)) return hx_usage_error("tasks", "%s", err);
    struct task_suite *suite = NULL;
    if (hx_task_open(suite_name, fixtures, &ro, &suite, err)) {
        qz_variant_destroy(variant);
        return hx_usage_error("tasks", "%s", err);
    }
    struct hx_model *m;
    if ((rc = hx_open_model("tasks", model_path, tok_path, 1, &m))) {
        task_suite_destroy(suite);
        qz_variant_destroy(variant);
        return rc;
    }
    int status = HX_EXIT_USAGE;
    struct kn_engine *e_ref = NULL, *e_var = NULL;
    struct hx_quant_model *qm = NULL;
    struct task_result *r_ref = NULL, *r_var = NULL;
    struct met_paired paired;
    char spec_canon[1024] = "";
    int window = to.window ? to.window : m->w.cfg.seq_len;
    if (window > m->w.cfg.seq_len)
        fprintf(stderr, "qprobe tasks: warning: --ctx %d exceeds the model's trained context %d\n", window,
                m->w.cfg.seq_len);
    if (suite->n_skipped)
        fprintf(stderr, "qprobe tasks: %lld malformed records skipped (--lenient)\n", (long long)suite->n_skipped);

    struct kn_engine_opts eo = {.act_q8 = 0};
    if ((rc = kn_engine_create_opts(&m->w, &eo, &e_ref, err))) {
        hx_usage_error("tasks", "cannot run '%s': %s", model_path, err);
        goto done;
    }
    to.label = "tasks reference";
    if ((rc = hx_tasks_run(e_ref, m->tok, suite, &to, &r_ref, err))) {
        hx_usage_error("tasks", "cannot score '%s': %s", suite_name, err);
        goto done;
    }
    if (variant) {
        qz_variant_print(variant, spec_canon, sizeof spec_canon);
        if ((rc = hx_quant_model_create(&m->w, variant, &qm, err))) {
            hx_usage_error("tasks", "cannot quantize '%s' as '%s': %s", model_path, spec_canon, err);
            goto done;
        }
        eo.act_q8 = qm->act_q8;
        eo.act_int8 = qm->act_int8; // W8A8 variants run with int8 activations
        eo.act_scales = qm->act_scales;
        if ((rc = kn_engine_create_opts(&qm->w, &eo, &e_var, err))) {
            hx_usage_error("tasks", "cannot run '%s' as '%s': %s", model_path, spec_canon, err);
            goto done;
        }
        to.label = "tasks variant";
        if ((rc = hx_tasks_run(e_var, m->tok, suite, &to, &r_var, err))) {
            hx_usage_error("tasks", "cannot score '%s' as '%s': %s", suite_name, spec_canon, err);
            goto done;
        }
        if (r_ref->sum.n == 0 || hx_tasks_compare(r_ref, r_var, 0, NULL, &paired, err)) {
            hx_usage_error("tasks", "cannot compare: %s", r_ref->sum.n ? err : "no item was scored");
            goto done;
        }
    }

    const char *isa = kn_engine_ops(e_ref)->name;
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "suite", suite->name);
        cJSON_AddStringToObject(o, "kind", suite->kind == TASK_MC ? "mc" : "cloze");
        cJSON_AddNumberToObject(o, "n", suite->n_items);
        cJSON_AddNumberToObject(o, "skipped_records", (double)suite->n_skipped);
        cJSON_AddStringToObject(o, "model", model_path);
        cJSON_AddStringToObject(o, "spec", variant ? spec_canon : "");
        if (qm) cJSON_AddNumberToObject(o, "bits_per_weight", qm->bits_per_weight);
        cJSON_AddNumberToObject(o, "window", window);
        cJSON_AddNumberToObject(o, "threads", to.n_threads);
        cJSON_AddStringToObject(o, "isa", isa);
        cJSON_AddItemToObject(o, "reference", tasks_json_model(r_ref));
        if (r_var) {
            cJSON_AddItemToObject(o, "variant", tasks_json_model(r_var));
            cJSON_AddItemToObject(o, "paired", tasks_json_paired(&paired));
        }
        hx_print_json(o);
    } else {
        printf("suite       %s: %s, %d items", suite->name, task_kind_name(suite->kind), suite->n_items);
        if (suite->n_skipped) printf(" (%lld malformed records skipped)", (long long)suite->n_skipped);
        printf("\nmodel       %s (dim %d, %d layers, vocab %d), window %d, %d threads, %s\n", model_path,
               m->w.cfg.dim, m->w.cfg.n_layers, m->w.cfg.vocab_size, window, to.n_threads, isa);
        tasks_print_model("reference", r_ref);
        if (r_var) {
            printf("variant     %s (%.3f bits per weight)\n", spec_canon, qm->bits_per_weight);
            tasks_print_model("", r_var);
            printf("flips       correct→wrong %lld, wrong→correct %lld of %lld; McNemar exact p = %.4g\n",
                   (long long)paired.flips_cw, (long long)paired.flips_wc, (long long)paired.n, paired.mcnemar_p);
            printf("Δacc        %+.4f, %.0f%% paired bootstrap interval [%+.4f, %+.4f] (%d resamples)\n",
                   paired.delta, paired.level * 100, paired.ci_lo, paired.ci_hi, paired.n_boot);
        }
    }
    status = HX_EXIT_OK;
done:
    task_result_destroy(r_ref);
    task_result_destroy(r_var);
    kn_engine_destroy(e_ref);
    kn_engine_destroy(e_var);
    hx_quant_model_destroy(qm);
    hx_model_close(m);
    task_suite_destroy(suite);
    qz_variant_destroy(variant);
    return status;
}
