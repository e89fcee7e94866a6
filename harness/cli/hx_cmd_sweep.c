// cmd_sweep.c — `qprobe sweep`: one model quantized under many configurations, everything measured
// and stored (study.h), resumable, shardable, interruptible.
#include <cjson/cJSON.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hx_cli.h"
#include "qp.h"
#include "hx_study.h"
#include "hx_sweep.h"

static volatile int hx_sweep_stop;

static void hx_sweep_on_signal(int sig) {
    hx_sweep_stop = 1;
    signal(sig, SIG_DFL); // a second Ctrl-C kills at once (the open transaction is rolled back)
}

static void sweep_usage(void) {
    printf("usage: qprobe sweep -c SWEEP.json [--db FILE] [--label TEXT] [--resume] [--shard I/N] [-t N]\n"
           "                    [--dry-run]\n\n"
           "Quantizes one model under every variant of the configuration (docs/SWEEP.md), evaluates\n"
           "each against the unquantized model on the same windows, and stores every number in the\n"
           "study database, one transaction per variant. The whole configuration is validated first.\n\n"
           "  -c, --config FILE   the sweep configuration (JSON)\n"
           "      --db FILE       study database (overrides the configuration's \"db\")\n"
           "      --label TEXT    the run's label (overrides the configuration's): a separate run of\n"
           "                      the same inputs, e.g. one per night in one database\n"
           "      --resume        continue an interrupted sweep: variants already stored are skipped\n"
           "      --shard I/N     run only variants I, I+N, I+2N, ... (0 <= I < N), e.g. one Slurm array\n"
           "                      task each; join the databases with 'qprobe merge'\n"
           "  -t, --threads N     threads (overrides the configuration; default all CPUs)\n"
           "      --dry-run       validate and list the variants, run nothing\n"
           "      --json          one JSON line per variant on stdout\n\n"
           "Ctrl-C discards the variant in flight (nothing half-written) and stops; --resume continues.\n"
           "exit status: 0 done, 2 bad configuration or input (a variant that is bad input, e.g. a file:\n"
           "of another shape), 3 out of memory or the database could not be written, 130 interrupted.\n\n"
           "examples:\n"
           "  qprobe sweep -c examples/sweep-stories260K.json --db study.sqlite\n"
           "  qprobe sweep -c sweep.json --dry-run\n"
           "  qprobe sweep -c sweep.json --db shard1.sqlite --shard 1/4 --resume --json\n");
}

static int hx_parse_shard(const char *s, int *i, int *n) {
    char *end;
    long a = strtol(s, &end, 10);
    if (end == s || *end != '/') return -1;
    const char *p = end + 1;
    long b = strtol(p, &end, 10);
    if (end == p || *end || b < 1 || b > 1 << 20 || a < 0 || a >= b) return -1;
    *i = (int)a;
    *n = (int)b;
    return 0;
}

struct sweep_args {
    const char *cfg_path, *db, *label;
    int resume, shard_i, shard_n, threads, dry, json;
};

// Options into a; HX_CLI_HELP when --help was printed, else 0 or a usage error's exit status.
static int sweep_parse_opts(int argc, char **argv, struct sweep_args *a) {
    enum { O_DB = 256, O_RESUME, O_SHARD, O_DRY, O_JSON, O_LABEL };
    static const struct option opts[] = {
        {"config", required_argument, 0, 'c'}, {"db", required_argument, 0, O_DB},
        {"resume", no_argument, 0, O_RESUME},  {"shard", required_argument, 0, O_SHARD},
        {"threads", required_argument, 0, 't'}, {"dry-run", no_argument, 0, O_DRY},
        {"json", no_argument, 0, O_JSON},      {"help", no_argument, 0, 'h'},
        {"label", required_argument, 0, O_LABEL},
        {0, 0, 0, 0}};
    int c, rc = 0;
    optind = 1;
    opterr = 0;
    while (!rc && (c = getopt_long(argc, argv, "c:t:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': a->cfg_path = optarg; break;
        case O_DB: a->db = optarg; break;
        case O_RESUME: a->resume = 1; break;
        case O_SHARD:
            if (hx_parse_shard(optarg, &a->shard_i, &a->shard_n))
                return hx_usage_error("sweep", "--shard '%s': expected I/N with 0 <= I < N", optarg);
            break;
        case 't': rc = hx_parse_int("sweep", "-t", optarg, 1, 256, &a->threads); break;
        case O_DRY: a->dry = 1; break;
        case O_JSON: a->json = 1; break;
        case O_LABEL: a->label = optarg; break;
        case 'h': sweep_usage(); return HX_CLI_HELP;
        default: return hx_unknown_option("sweep", argv);
        }
    }
    if (!rc && optind < argc) rc = hx_usage_error("sweep", "unexpected argument '%s'", argv[optind]);
    if (!rc && !a->cfg_path) rc = hx_usage_error("sweep", "no configuration given (-c FILE)");
    return rc;
}

// The study options the configuration and the command line give (tasks point into cfg).
static void sweep_study_opts(const struct hx_sweep_config *cfg, const struct sweep_args *a, const char *db,
                             struct hx_study_opts *so) {
    hx_study_opts_default(so);
    so->model_path = cfg->model;
    so->tok_path = cfg->tokenizer;
    so->text_path = cfg->text;
    so->db_path = db;
    so->label = a->label ? a->label : cfg->label;
    so->config_json = cfg->json;
    so->protocol = cfg->protocol;
    so->ctx = cfg->ctx;
    so->max_chunks = cfg->max_chunks;
    if (a->threads) so->n_threads = a->threads;
    else if (cfg->threads) so->n_threads = cfg->threads;
    so->layer_chunks = cfg->layer_chunks;
    so->act_chunks = cfg->act_chunks;
    so->sens_chunks = cfg->sens_chunks;
    so->sens_tensors = cfg->sens_tensors;
    so->sens_estimate = cfg->sens_estimate;
    so->keep_tokens = cfg->keep_tokens;
    so->grid = cfg->grid;
    so->resume = a->resume;
    so->calib_path = cfg->calib;
    so->calib_seqs = cfg->calib_sequences;
    so->calib_len = cfg->calib_length;
    so->allow_overlap = cfg->calib_allow_overlap;
    so->stop = &hx_sweep_stop;
    so->task_suites = (const char *const *)cfg->task_names;
    so->task_limits = cfg->task_limits;
    so->n_tasks = cfg->n_tasks;
    so->gen = cfg->gen;
}

static int sweep_is_mine(const struct sweep_args *a, int i) { return i % a->shard_n == a->shard_i; }

static void sweep_print_dry(const struct hx_sweep_config *cfg, const struct sweep_args *a) {
    printf("%d variants%s:\n", cfg->n_variants, a->shard_n > 1 ? " (this shard's marked *)" : "");
    for (int i = 0; i < cfg->n_variants; i++)
        printf("  %c %3d  %s\n", a->shard_n > 1 && sweep_is_mine(a, i) ? '*' : ' ', i + 1, cfg->variants[i]);
}

static void sweep_print_json(int index, const struct hx_variant_outcome *vo) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "index", index);
    cJSON_AddStringToObject(o, "spec", vo->spec);
    cJSON_AddBoolToObject(o, "skipped", vo->skipped);
    cJSON_AddNumberToObject(o, "variant_id", (double)vo->variant_id);
    if (!vo->skipped) {
        cJSON_AddNumberToObject(o, "bits_per_weight", vo->bits_per_weight);
        cJSON_AddNumberToObject(o, "ppl", vo->ppl);
        cJSON_AddNumberToObject(o, "kld_mean", vo->kld_mean);
        cJSON_AddNumberToObject(o, "top1", vo->same_top);
        if (vo->gen_prompts) {
            cJSON_AddNumberToObject(o, "gen_median_first_div", vo->gen.median_first_div);
            cJSON_AddNumberToObject(o, "gen_identical_share", vo->gen.identical_share);
        }
    }
    hx_print_json(o);
}

static void sweep_print_text(const char *prefix, const struct hx_variant_outcome *vo,
                             const struct hx_sweep_config *cfg) {
    if (vo->skipped) {
        printf("%s%-40s already stored, skipped\n", prefix, vo->spec);
        return;
    }
    printf("%s%-40s %6.3f bpw  PPL %8.4f (%+6.2f%%)  KLD %.5f  top-1 %6.2f%%", prefix, vo->spec, vo->bits_per_weight,
           vo->ppl, 100 * (vo->ppl / vo->ppl_ref - 1), vo->kld_mean, 100 * vo->same_top);
    for (int t = 0; t < vo->n_tasks; t++)
        printf("  %s %.3f (%+.3f, %d flipped)", cfg->task_names[t], vo->tasks[t].acc, vo->tasks[t].dacc,
               vo->tasks[t].flips_cw);
    if (vo->gen_prompts)
        printf("  generate: split at %.0f (median), %.0f%% identical", vo->gen.median_first_div,
               100 * vo->gen.identical_share);
    printf("\n");
}

// This shard's variants, one after the other, until done, a failure or a stop; the exit status.
static int sweep_variants(struct hx_study *s, const struct hx_sweep_config *cfg, const struct sweep_args *a,
                          int mine, int *stored, int *skipped) {
    char err[QP_ERRLEN];
    for (int i = 0, k = 0; i < cfg->n_variants && !hx_sweep_stop; i++) {
        if (!sweep_is_mine(a, i)) continue;
        char prefix[64];
        snprintf(prefix, sizeof prefix, "[%d/%d] ", ++k, mine);
        hx_study_set_progress_prefix(s, prefix);
        struct hx_variant_outcome vo;
        int rc = hx_study_variant(s, cfg->variants[i], i + 1, &vo, err);
        if (rc == 0 && a->json) sweep_print_json(i + 1, &vo);
        else if (rc == 0) sweep_print_text(prefix, &vo, cfg);
        fflush(stdout);
        if (rc == 0) ++*(vo.skipped ? skipped : stored);
        hx_variant_outcome_clear(&vo);
        if (rc == QP_EINTR) break;
        if (rc) return hx_fail("sweep", rc, "variant %d '%s': %s", i + 1, cfg->variants[i], err);
    }
    return HX_EXIT_OK;
}

// The study opened (the reference evaluated when the run is new), then the variants.
static int sweep_run(const struct hx_sweep_config *cfg, const struct sweep_args *a, const char *db) {
    struct hx_study_opts so;
    sweep_study_opts(cfg, a, db, &so);
    char err[QP_ERRLEN];
    int mine = 0, stored = 0, skipped = 0;
    for (int i = 0; i < cfg->n_variants; i++) mine += sweep_is_mine(a, i);
    double t0 = qp_now();
    struct hx_study *s = NULL;
    int rc = hx_study_open(&so, &s, err);
    if (rc == QP_EINTR) {
        fprintf(stderr, "qprobe sweep: interrupted while evaluating the reference; nothing stored\n");
        return HX_EXIT_INTERRUPTED;
    }
    if (rc) return hx_fail("sweep", rc, "%s", err);
    if (!a->json)
        fprintf(stderr, "qprobe sweep: %d variants%s into run %lld of %s\n", mine,
                a->shard_n > 1 ? " (this shard)" : "", (long long)hx_study_run_id(s), db);
    int status = sweep_variants(s, cfg, a, mine, &stored, &skipped);
    if (status == HX_EXIT_OK && !hx_sweep_stop && (rc = hx_study_finish(s, NULL, err)))
        status = rc == QP_EINTR ? HX_EXIT_INTERRUPTED : hx_fail("sweep", rc, "%s", err);
    if (status == HX_EXIT_OK && hx_sweep_stop) {
        fprintf(stderr, "qprobe sweep: interrupted: %d variants stored, the one in flight discarded; "
                        "run again with --resume to continue\n", stored);
        status = HX_EXIT_INTERRUPTED;
    } else if (status == HX_EXIT_OK && !a->json) {
        fprintf(stderr, "qprobe sweep: done in %.1f s: %d stored, %d already there\n", qp_now() - t0, stored, skipped);
    }
    hx_study_close(s);
    return status;
}

int hx_cmd_sweep(int argc, char **argv) {
    struct sweep_args a = {.shard_n = 1};
    int rc = sweep_parse_opts(argc, argv, &a);
    if (rc) return rc == HX_CLI_HELP ? HX_EXIT_OK : rc;
    char err[QP_ERRLEN];
    struct hx_sweep_config *cfg;
    if ((rc = hx_sweep_config_load(a.cfg_path, &cfg, err))) return hx_fail("sweep", rc, "%s", err);
    const char *db = a.db ? a.db : cfg->db;
    if (a.dry) {
        sweep_print_dry(cfg, &a);
        rc = HX_EXIT_OK;
    } else if (!db) {
        rc = hx_usage_error("sweep", "no database: give --db FILE or \"db\" in '%s'", a.cfg_path);
    } else {
        hx_sweep_stop = 0;
        signal(SIGINT, hx_sweep_on_signal);
        signal(SIGTERM, hx_sweep_on_signal);
        rc = sweep_run(cfg, &a, db);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
    }
    hx_sweep_config_free(cfg);
    return rc;
}
