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
           "on its quantized variant, and says which answers flipped. A cloze suite is also scored in its\n"
           "greedy form (the generated last word, exact match); generate-until suites (JSONL with\n"
           "\"prompt\", \"answer\", \"until\") and NAME-greedy are scored by generation. See docs/TASKS.md.\n\n"
           "  -m, --model FILE      llama2.c .bin, GGUF, or safetensors directory\n"
           "  -z, --tokenizer FILE  llama2.c tokenizer.bin (GGUF models carry their own)\n"
           "      --suite S         built-in: tinystories-cloze, tinystories-nextsent;\n"
           "                        dataset: lambada, hellaswag, piqa, arc-easy, boolq (files under\n"
           "                        the fixtures directory); a cloze suite + -greedy (lambada-greedy);\n"
           "                        or a JSONL file of items\n"
           "  -q, --quant SPEC      also score the model quantized as SPEC (e.g. q4_0;act=q8, q4_k_m)\n"
           "                        and compare it with the unquantized reference\n"
           "      --limit N         only the first N items\n"
           "      --lenient         skip malformed records (counted) instead of stopping at the first\n"
           "      --ctx N           positions per sequence (default: the model's trained context);\n"
           "                        longer contexts are cut from the left, after BOS\n"
           "      --fixtures DIR    where datasets and tinystories_val.txt live (default:\n"
           "                        $QPROBE_FIXTURES, else ../shared/fixtures)\n"
           "  -t, --threads N       threads (default: all CPUs); results are the same for any N\n"
           "      --json            print the figures as one JSON object\n\n"
           "examples:\n"
           "  qprobe tasks -m stories260K.bin -z tok512.bin --suite tinystories-cloze --limit 200\n"
           "  qprobe tasks -m model.gguf --suite hellaswag -q q4_k_m --json\n"
           "  qprobe tasks -m model.gguf --suite items.jsonl --lenient -q 'q4_0;act=q8'\n");
}

static void tasks_print_model(const char *what, const struct task_result *r) {
    const struct task_summary *s = &r->sum;
    double ips = r->seconds > 0 ? r->n_items / r->seconds : 0;
    if (r->kind == TASK_GEN)
        printf("%-11s exact match %.4f ± %.4f   contains %.4f", what, s->acc, s->acc_stderr, s->acc_norm);
    else if (r->kind == TASK_MC)
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
    cJSON_AddNumberToObject(o, r->kind == TASK_GEN ? "exact_match" : "acc", s->acc);
    cJSON_AddNumberToObject(o, r->kind == TASK_GEN ? "exact_match_stderr" : "acc_stderr", s->acc_stderr);
    if (r->kind == TASK_GEN) {
        cJSON_AddNumberToObject(o, "contains", s->acc_norm);
    } else if (r->kind == TASK_MC) {
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

struct tasks_args {
    const char *model_path, *tok_path, *suite_name, *spec, *fixtures;
    struct hx_task_read_opts ro;
    struct hx_tasks_opts to;
    int json;
};

// Options into a; HX_CLI_HELP when --help was printed, else 0 or a usage error's exit status.
static int tasks_parse_opts(int argc, char **argv, struct tasks_args *a) {
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},    {"tokenizer", required_argument, 0, 'z'},
        {"suite", required_argument, 0, 's'},    {"quant", required_argument, 0, 'q'},
        {"limit", required_argument, 0, 'L'},    {"lenient", no_argument, 0, 'l'},
        {"threads", required_argument, 0, 't'},  {"ctx", required_argument, 0, 'c'},
        {"fixtures", required_argument, 0, 'F'}, {"json", no_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},           {0, 0, 0, 0}};
    int c, rc = 0;
    optind = 1;
    opterr = 0;
    while (!rc && (c = getopt_long(argc, argv, "m:z:q:t:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': a->model_path = optarg; break;
        case 'z': a->tok_path = optarg; break;
        case 's': a->suite_name = optarg; break;
        case 'q': a->spec = optarg; break;
        case 'L': rc = hx_parse_int("tasks", "--limit", optarg, 1, 1 << 30, &a->ro.limit); break;
        case 'l': a->ro.lenient = 1; break;
        case 't': rc = hx_parse_int("tasks", "-t", optarg, 1, 256, &a->to.n_threads); break;
        case 'c': rc = hx_parse_int("tasks", "--ctx", optarg, 2, 1 << 20, &a->to.window); break;
        case 'F': a->fixtures = optarg; break;
        case 'j': a->json = 1; break;
        case 'h': tasks_usage(); return HX_CLI_HELP;
        default: return hx_unknown_option("tasks", argv);
        }
    }
    if (!rc && optind < argc) rc = hx_usage_error("tasks", "unexpected argument '%s'", argv[optind]);
    if (!rc && !a->suite_name) rc = hx_usage_error("tasks", "no suite given (--suite NAME|FILE); see 'qprobe tasks --help'");
    if (!rc && !a->model_path) rc = hx_usage_error("tasks", "no model given (-m MODEL); see 'qprobe tasks --help'");
    return rc;
}

// What the run made, for the printers.
struct tasks_state {
    struct tasks_args *a;
    struct qz_variant *v;
    struct task_suite *suite;
    struct hx_model *m;
    int window;
    struct kn_engine *e_ref, *e_var;
    struct hx_quant_model *qm;
    struct task_result *r_ref, *r_var;
    struct met_paired paired;
    // A cloze suite's greedy form beside its log-likelihood acc (NULL otherwise).
    struct task_result *g_ref, *g_var;
    struct met_paired g_paired;
    char spec[1024];
};

static void tasks_state_free(struct tasks_state *r) {
    task_result_destroy(r->r_ref);
    task_result_destroy(r->r_var);
    task_result_destroy(r->g_ref);
    task_result_destroy(r->g_var);
    kn_engine_destroy(r->e_ref);
    kn_engine_destroy(r->e_var);
    hx_quant_model_destroy(r->qm);
    hx_model_close(r->m);
    task_suite_destroy(r->suite);
    qz_variant_destroy(r->v);
}

// The variant quantized, scored and compared with the reference.
static int tasks_run_variant(struct tasks_state *r, char *err) {
    struct tasks_args *a = r->a;
    int rc;
    qz_variant_print(r->v, r->spec, sizeof r->spec);
    if ((rc = hx_quant_model_create(&r->m->w, r->v, &r->qm, err)))
        return hx_fail("tasks", rc, "cannot quantize '%s' as '%s': %s", a->model_path, r->spec, err);
    struct kn_engine_opts eo = {0};
    hx_quant_model_engine_opts(r->qm, &eo); // W8A8 variants run with int8 activations
    if ((rc = kn_engine_create_opts(&r->qm->w, &eo, &r->e_var, err)))
        return hx_fail("tasks", rc, "cannot run '%s' as '%s': %s", a->model_path, r->spec, err);
    a->to.label = "tasks variant";
    if ((rc = hx_tasks_run(r->e_var, r->m->tok, r->suite, &a->to, &r->r_var, err)))
        return hx_fail("tasks", rc, "cannot score '%s' as '%s': %s", a->suite_name, r->spec, err);
    if (r->r_ref->sum.n == 0) return hx_usage_error("tasks", "cannot compare: no item was scored");
    if ((rc = hx_tasks_compare(r->r_ref, r->r_var, 0, NULL, &r->paired, err)))
        return hx_fail("tasks", rc, "cannot compare: %s", err);
    if (r->g_ref && (rc = hx_tasks_run_greedy(r->e_var, r->m->tok, r->suite, &a->to, &r->g_var, err)))
        return hx_fail("tasks", rc, "cannot score '%s' greedily as '%s': %s", a->suite_name, r->spec, err);
    if (r->g_ref && r->g_ref->sum.n && (rc = hx_tasks_compare(r->g_ref, r->g_var, 0, NULL, &r->g_paired, err)))
        return hx_fail("tasks", rc, "cannot compare: %s", err);
    return 0;
}

// The suite and the model opened, the reference scored, then the variant (-q).
static int tasks_run(struct tasks_state *r) {
    struct tasks_args *a = r->a;
    char err[QP_ERRLEN];
    int rc;
    if (a->spec && (rc = qz_variant_parse(a->spec, &r->v, err))) return hx_usage_error("tasks", "%s", err);
    if ((rc = hx_task_open(a->suite_name, a->fixtures, &a->ro, &r->suite, err))) return hx_fail("tasks", rc, "%s", err);
    if ((rc = hx_open_model("tasks", a->model_path, a->tok_path, 1, &r->m))) return rc;
    r->window = a->to.window ? a->to.window : r->m->w.cfg.seq_len;
    if (r->window > r->m->w.cfg.seq_len)
        fprintf(stderr, "qprobe tasks: warning: --ctx %d exceeds the model's trained context %d\n", r->window,
                r->m->w.cfg.seq_len);
    if (r->suite->n_skipped)
        fprintf(stderr, "qprobe tasks: %lld malformed records skipped (--lenient)\n", (long long)r->suite->n_skipped);
    struct kn_engine_opts eo = {.act_q8 = 0};
    if ((rc = kn_engine_create_opts(&r->m->w, &eo, &r->e_ref, err)))
        return hx_fail("tasks", rc, "cannot run '%s': %s", a->model_path, err);
    a->to.label = "tasks reference";
    if ((rc = hx_tasks_run(r->e_ref, r->m->tok, r->suite, &a->to, &r->r_ref, err)))
        return hx_fail("tasks", rc, "cannot score '%s': %s", a->suite_name, err);
    // A cloze suite: its greedy form beside (lm-eval's lambada_openai acc is the log-likelihood
    // is_greedy; the generated word is the exact match).
    if (r->suite->kind == TASK_CLOZE && !r->suite->generate &&
        (rc = hx_tasks_run_greedy(r->e_ref, r->m->tok, r->suite, &a->to, &r->g_ref, err)))
        return hx_fail("tasks", rc, "cannot score '%s' greedily: %s", a->suite_name, err);
    return r->v ? tasks_run_variant(r, err) : 0;
}

static void tasks_print_json(const struct tasks_state *r) {
    const struct tasks_args *a = r->a;
    const struct task_suite *suite = r->suite;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "suite", suite->name);
    cJSON_AddStringToObject(o, "kind", suite->kind == TASK_MC ? "mc" : suite->kind == TASK_CLOZE ? "cloze" : "gen");
    cJSON_AddBoolToObject(o, "generate", suite->generate);
    cJSON_AddNumberToObject(o, "n", suite->n_items);
    cJSON_AddNumberToObject(o, "skipped_records", (double)suite->n_skipped);
    cJSON_AddStringToObject(o, "model", a->model_path);
    cJSON_AddStringToObject(o, "spec", r->v ? r->spec : "");
    if (r->qm) cJSON_AddNumberToObject(o, "bits_per_weight", r->qm->bits_per_weight);
    cJSON_AddNumberToObject(o, "window", r->window);
    cJSON_AddNumberToObject(o, "threads", a->to.n_threads);
    cJSON_AddStringToObject(o, "isa", kn_engine_ops(r->e_ref)->name);
    cJSON_AddItemToObject(o, "reference", tasks_json_model(r->r_ref));
    if (r->r_var) {
        cJSON_AddItemToObject(o, "variant", tasks_json_model(r->r_var));
        cJSON_AddItemToObject(o, "paired", tasks_json_paired(&r->paired));
    }
    if (r->g_ref) { // the greedy form of a cloze suite
        cJSON *g = cJSON_AddObjectToObject(o, "greedy");
        cJSON_AddItemToObject(g, "reference", tasks_json_model(r->g_ref));
        if (r->g_var) {
            cJSON_AddItemToObject(g, "variant", tasks_json_model(r->g_var));
            cJSON_AddItemToObject(g, "paired", tasks_json_paired(&r->g_paired));
        }
    }
    hx_print_json(o);
}

static void tasks_print_paired(const char *what, const struct met_paired *p) {
    printf("%sflips%*s correct→wrong %lld, wrong→correct %lld of %lld; McNemar exact p = %.4g\n", what,
           (int)(7 - strlen(what)), "", (long long)p->flips_cw, (long long)p->flips_wc, (long long)p->n, p->mcnemar_p);
    printf("%sΔacc%*s %+.4f, %.0f%% paired bootstrap interval [%+.4f, %+.4f] (%d resamples)\n", what,
           (int)(8 - strlen(what)), "", p->delta, p->level * 100, p->ci_lo, p->ci_hi, p->n_boot);
}

static void tasks_print_text(const struct tasks_state *r) {
    const struct task_suite *suite = r->suite;
    const struct met_paired *p = &r->paired;
    printf("suite       %s: %s, %d items", suite->name, task_kind_name(suite->kind), suite->n_items);
    if (suite->n_skipped) printf(" (%lld malformed records skipped)", (long long)suite->n_skipped);
    printf("\nmodel       %s (dim %d, %d layers, vocab %d), window %d, %d threads, %s\n", r->a->model_path,
           r->m->w.cfg.dim, r->m->w.cfg.n_layers, r->m->w.cfg.vocab_size, r->window, r->a->to.n_threads,
           kn_engine_ops(r->e_ref)->name);
    tasks_print_model("reference", r->r_ref);
    if (r->g_ref) tasks_print_model("  greedy", r->g_ref);
    if (!r->r_var) return;
    printf("variant     %s (%.3f bits per weight)\n", r->spec, r->qm->bits_per_weight);
    tasks_print_model("", r->r_var);
    if (r->g_var) tasks_print_model("  greedy", r->g_var);
    tasks_print_paired("", p);
    if (r->g_var && r->g_ref->sum.n) tasks_print_paired("greedy ", &r->g_paired);
}

int hx_cmd_tasks(int argc, char **argv) {
    struct tasks_args a = {.to = {.n_threads = qp_cpu_count()}};
    struct tasks_state r = {.a = &a};
    int rc = tasks_parse_opts(argc, argv, &a);
    if (!rc) rc = tasks_run(&r);
    if (!rc && a.json) tasks_print_json(&r);
    else if (!rc) tasks_print_text(&r);
    tasks_state_free(&r);
    return rc == HX_CLI_HELP ? HX_EXIT_OK : rc;
}
