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
    printf("usage: qprobe sweep -c SWEEP.json [--db FILE] [--resume] [--shard I/N] [-t N] [--dry-run]\n\n"
           "Quantizes one model under every variant of the configuration (docs/SWEEP.md), evaluates\n"
           "each against the unquantized model on the same windows, and stores every number in the\n"
           "study database, one transaction per variant. The whole configuration is validated first.\n\n"
           "  -c, --config FILE   the sweep configuration (JSON)\n"
           "      --db FILE       study database (overrides the configuration's \"db\")\n"
           "      --resume        continue an interrupted sweep: variants already stored are skipped\n"
           "      --shard I/N     run only variants I, I+N, I+2N, ... (0 <= I < N), e.g. one Slurm array\n"
           "                      task each; join the databases with 'qprobe merge'\n"
           "  -t, --threads N     threads (overrides the configuration; default all CPUs)\n"
           "      --dry-run       validate and list the variants, run nothing\n"
           "      --json          one JSON line per variant on stdout\n\n"
           "Ctrl-C discards the variant in flight (nothing half-written) and stops; --resume continues.\n"
           "exit status: 0 done, 2 bad configuration or input, 3 runtime failure (out of memory, QAT\n"
           "diverged), 130 interrupted.\n");
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

int hx_cmd_sweep(int argc, char **argv) {
    enum { O_DB = 256, O_RESUME, O_SHARD, O_DRY, O_JSON };
    static const struct option opts[] = {
        {"config", required_argument, 0, 'c'}, {"db", required_argument, 0, O_DB},
        {"resume", no_argument, 0, O_RESUME},  {"shard", required_argument, 0, O_SHARD},
        {"threads", required_argument, 0, 't'}, {"dry-run", no_argument, 0, O_DRY},
        {"json", no_argument, 0, O_JSON},      {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    const char *cfg_path = NULL, *db = NULL;
    int resume = 0, shard_i = 0, shard_n = 1, threads = 0, dry = 0, json = 0, c, rc;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "c:t:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': cfg_path = optarg; break;
        case O_DB: db = optarg; break;
        case O_RESUME: resume = 1; break;
        case O_SHARD:
            if (hx_parse_shard(optarg, &shard_i, &shard_n))
                return hx_usage_error("sweep", "--shard '%s': expected I/N with 0 <= I < N", optarg);
            break;
        case 't': if ((rc = hx_parse_int("sweep", "-t", optarg, 1, 256, &threads))) return rc; break;
        case O_DRY: dry = 1; break;
        case O_JSON: json = 1; break;
        case 'h': sweep_usage(); return 0;
        default:
            return hx_usage_error("sweep", "unknown or incomplete option '%s'; see 'qprobe sweep --help'",
                                  argv[optind - 1]);
        }
    }
    if (optind < argc) return hx_usage_error("sweep", "unexpected argument '%s'", argv[optind]);
    if (!cfg_path) return hx_usage_error("sweep", "no configuration given (-c FILE)");
    char err[QP_ERRLEN];
    struct hx_sweep_config *cfg;
    if (hx_sweep_config_load(cfg_path, &cfg, err)) return hx_usage_error("sweep", "%s", err);
    int mine = 0;
    for (int i = 0; i < cfg->n_variants; i++) mine += i % shard_n == shard_i;
    if (dry) {
        printf("%d variants%s:\n", cfg->n_variants, shard_n > 1 ? " (this shard's marked *)" : "");
        for (int i = 0; i < cfg->n_variants; i++)
            printf("  %c %3d  %s\n", shard_n > 1 && i % shard_n == shard_i ? '*' : ' ', i + 1, cfg->variants[i]);
        hx_sweep_config_free(cfg);
        return 0;
    }
    if (!db) db = cfg->db;
    if (!db) {
        hx_sweep_config_free(cfg);
        return hx_usage_error("sweep", "no database: give --db FILE or \"db\" in '%s'", cfg_path);
    }

    struct hx_study_opts so;
    hx_study_opts_default(&so);
    so.model_path = cfg->model;
    so.tok_path = cfg->tokenizer;
    so.text_path = cfg->text;
    so.db_path = db;
    so.label = cfg->label;
    so.config_json = cfg->json;
    so.protocol = cfg->protocol;
    so.ctx = cfg->ctx;
    so.max_chunks = cfg->max_chunks;
    if (threads) so.n_threads = threads;
    else if (cfg->threads) so.n_threads = cfg->threads;
    so.layer_chunks = cfg->layer_chunks;
    so.act_chunks = cfg->act_chunks;
    so.sens_chunks = cfg->sens_chunks;
    so.sens_tensors = cfg->sens_tensors;
    so.keep_tokens = cfg->keep_tokens;
    so.grid = cfg->grid;
    so.resume = resume;
    so.calib_path = cfg->calib;
    so.calib_seqs = cfg->calib_sequences;
    so.calib_len = cfg->calib_length;
    so.allow_overlap = cfg->calib_allow_overlap;
    so.stop = &hx_sweep_stop;
    const char *suites[64];
    int limits[64];
    if (cfg->n_tasks > 64) {
        hx_sweep_config_free(cfg);
        return hx_usage_error("sweep", "%s: tasks: at most 64 suites", cfg_path);
    }
    for (int i = 0; i < cfg->n_tasks; i++) {
        suites[i] = cfg->tasks[i].suite;
        limits[i] = cfg->tasks[i].limit;
    }
    so.task_suites = suites;
    so.task_limits = limits;
    so.n_tasks = cfg->n_tasks;
    hx_sweep_stop = 0;
    signal(SIGINT, hx_sweep_on_signal);
    signal(SIGTERM, hx_sweep_on_signal);

    int status = HX_EXIT_OK, stored = 0, skipped = 0;
    struct hx_study *s = NULL;
    double t0 = qp_now();
    if ((rc = hx_study_open(&so, &s, err))) {
        status = rc == QP_EINTR ? 130 : hx_usage_error("sweep", "%s", err);
        if (rc == QP_EINTR) fprintf(stderr, "qprobe sweep: interrupted while evaluating the reference; nothing stored\n");
        goto done;
    }
    if (!json)
        fprintf(stderr, "qprobe sweep: %d variants%s into run %lld of %s\n", mine,
                shard_n > 1 ? " (this shard)" : "", (long long)hx_study_run_id(s), db);
    int k = 0;
    for (int i = 0; i < cfg->n_variants && !hx_sweep_stop; i++) {
        if (i % shard_n != shard_i) continue;
        char prefix[64];
        snprintf(prefix, sizeof prefix, "[%d/%d] ", ++k, mine);
        hx_study_set_progress_prefix(s, prefix);
        struct hx_variant_outcome vo;
        rc = hx_study_variant(s, cfg->variants[i], i + 1, &vo, err);
        if (rc == QP_EINTR) break;
        if (rc) {
            status = hx_usage_error("sweep", "variant %d '%s': %s", i + 1, cfg->variants[i], err);
            if (rc == QP_ENUMERIC || rc == QP_ENOMEM) status = HX_EXIT_RUNTIME; // QAT diverged, out of memory
            goto done;
        }
        if (vo.skipped) skipped++;
        else stored++;
        if (json) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddNumberToObject(o, "index", i + 1);
            cJSON_AddStringToObject(o, "spec", vo.spec);
            cJSON_AddBoolToObject(o, "skipped", vo.skipped);
            cJSON_AddNumberToObject(o, "variant_id", (double)vo.variant_id);
            if (!vo.skipped) {
                cJSON_AddNumberToObject(o, "bits_per_weight", vo.bits_per_weight);
                cJSON_AddNumberToObject(o, "ppl", vo.ppl);
                cJSON_AddNumberToObject(o, "kld_mean", vo.kld_mean);
                cJSON_AddNumberToObject(o, "top1", vo.same_top);
            }
            hx_print_json(o);
        } else if (vo.skipped) {
            printf("%s%-40s already stored, skipped\n", prefix, vo.spec);
        } else {
            printf("%s%-40s %6.3f bpw  PPL %8.4f (%+6.2f%%)  KLD %.5f  top-1 %6.2f%%", prefix, vo.spec,
                   vo.bits_per_weight, vo.ppl, 100 * (vo.ppl / vo.ppl_ref - 1), vo.kld_mean, 100 * vo.same_top);
            for (int t = 0; t < cfg->n_tasks && t < 8; t++)
                printf("  %s %.3f (%+.3f, %d flipped)", cfg->tasks[t].suite, vo.task_acc[t], vo.task_dacc[t],
                       vo.task_flips_cw[t]);
            printf("\n");
        }
        fflush(stdout);
    }
    if (hx_sweep_stop) {
        fprintf(stderr, "qprobe sweep: interrupted: %d variants stored, the one in flight discarded; "
                        "run again with --resume to continue\n", stored);
        status = 130;
    } else if (!json) {
        fprintf(stderr, "qprobe sweep: done in %.1f s: %d stored, %d already there\n", qp_now() - t0, stored, skipped);
    }
done:
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    hx_study_close(s);
    hx_sweep_config_free(cfg);
    return status;
}
