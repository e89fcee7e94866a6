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
#include "hx_model.h"
#include "hx_plan.h"
#include "hx_refcache.h"
#include "hx_text.h"
#include "hx_tokenizer.h"
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
           "                    [--dry-run] [--plan] [--budget MINUTES] [--reference-only]\n"
           "                    [--reference-db FILE] [--refcache DIR] [--build-reference]\n\n"
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
           "      --plan          print the estimated seconds of every variant (quantization, evaluation,\n"
           "                      diagnostics) from the model's shape and a short probe of this machine;\n"
           "                      run nothing (every sweep prints the same table first)\n"
           "      --budget MIN    fit the sweep into MIN minutes: drop or shorten optional diagnostics\n"
           "                      (exact sensitivity, generation prompts, grid, activation and layer\n"
           "                      chunks, in that order) and say which\n"
           "      --reference-only  evaluate the reference once (its cache, row, tasks, continuations)\n"
           "                      and stop: the first job of a sharded sweep\n"
           "      --reference-db FILE  take the run and its reference from FILE (the database of\n"
           "                      --reference-only) and its cache from FILE.refcache\n"
           "      --refcache DIR  the reference cache's directory (default: DB.refcache)\n"
           "      --build-reference  with --shard: build a missing reference cache here instead of\n"
           "                      refusing to run\n"
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
    const char *cfg_path, *db, *label, *refdb, *refcache;
    int resume, shard_i, shard_n, threads, dry, json, plan, reference_only, build_reference;
    int budget; // minutes, 0: none
};

// Options into a; HX_CLI_HELP when --help was printed, else 0 or a usage error's exit status.
static int sweep_parse_opts(int argc, char **argv, struct sweep_args *a) {
    enum { O_DB = 256, O_RESUME, O_SHARD, O_DRY, O_JSON, O_LABEL, O_PLAN, O_BUDGET, O_REFONLY, O_REFDB, O_RCDIR,
           O_BUILD };
    static const struct option opts[] = {
        {"config", required_argument, 0, 'c'}, {"db", required_argument, 0, O_DB},
        {"resume", no_argument, 0, O_RESUME},  {"shard", required_argument, 0, O_SHARD},
        {"threads", required_argument, 0, 't'}, {"dry-run", no_argument, 0, O_DRY},
        {"json", no_argument, 0, O_JSON},      {"help", no_argument, 0, 'h'},
        {"label", required_argument, 0, O_LABEL}, {"plan", no_argument, 0, O_PLAN},
        {"budget", required_argument, 0, O_BUDGET}, {"reference-only", no_argument, 0, O_REFONLY},
        {"reference-db", required_argument, 0, O_REFDB}, {"refcache", required_argument, 0, O_RCDIR},
        {"build-reference", no_argument, 0, O_BUILD},
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
        case O_PLAN: a->plan = 1; break;
        case O_BUDGET: rc = hx_parse_int("sweep", "--budget", optarg, 1, 1 << 20, &a->budget); break;
        case O_REFONLY: a->reference_only = 1; break;
        case O_REFDB: a->refdb = optarg; break;
        case O_RCDIR: a->refcache = optarg; break;
        case O_BUILD: a->build_reference = 1; break;
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

// ---------------------------------------------------------------------------------------------
// The plan: what the sweep will cost (harness/run/hx_plan.h)

// This shard's variants, the model opened and the text's chunks counted: the plan's input.
struct sweep_plan {
    struct hx_model *m;
    const char **specs;
    int *index; // each row's position in the configuration
    struct hx_plan_in in;
    struct hx_plan_diag d;
    struct hx_plan_speed sp;
    struct hx_plan p;
};

static void sweep_plan_free(struct sweep_plan *pl) {
    free(pl->p.rows);
    free(pl->specs);
    free(pl->index);
    hx_model_close(pl->m);
}

static int sweep_plan_chunks(const struct hx_sweep_config *cfg, const struct hx_tok *tok, char *err) {
    char *text;
    size_t len, n = 0;
    int *ids = NULL, rc = hx_read_text(cfg->text, &text, &len, err);
    if (rc) return rc;
    if (len > 0 && text[len - 1] == '\n') len--;
    if (hx_tok_encode(tok, text, len, HX_TOK_ADD_BOS | HX_TOK_SPACE_PREFIX, &ids, &n)) rc = QP_ENOMEM;
    free(text);
    free(ids);
    if (rc) return qp_fail(err, rc, "out of memory");
    int c = hx_ppl_n_chunks(cfg->protocol, n, cfg->ctx);
    return cfg->max_chunks > 0 ? QP_MIN(c, cfg->max_chunks) : c;
}

static int sweep_plan_make(const struct hx_sweep_config *cfg, const struct sweep_args *a, const struct hx_study_opts *so,
                           struct sweep_plan *pl, char *err) {
    memset(pl, 0, sizeof *pl);
    int rc = hx_model_open(cfg->model, cfg->tokenizer, &pl->m, err), n = 0;
    int chunks = rc ? rc : pl->m->tok ? sweep_plan_chunks(cfg, pl->m->tok, err) : 1;
    if (chunks < 0) return chunks;
    pl->specs = calloc((size_t)QP_MAX(cfg->n_variants, 1), sizeof *pl->specs);
    pl->index = calloc((size_t)QP_MAX(cfg->n_variants, 1), sizeof *pl->index);
    if (!pl->specs || !pl->index) return qp_fail(err, QP_ENOMEM, "out of memory");
    for (int i = 0; i < cfg->n_variants; i++)
        if (sweep_is_mine(a, i)) pl->index[n] = i, pl->specs[n++] = cfg->variants[i];
    pl->in = (struct hx_plan_in){.w = &pl->m->w, .n_chunks = chunks, .ctx = so->ctx, .n_threads = so->n_threads,
                                 .calib_seqs = so->calib_path ? so->calib_seqs : 0, .calib_len = so->calib_len,
                                 .n_tasks = so->n_tasks, .ref_cached = so->cache_read_only, .variants = pl->specs,
                                 .n_variants = n};
    pl->d = (struct hx_plan_diag){so->layer_chunks, so->act_chunks, so->sens_chunks, so->sens_tensors,
                                  so->sens_estimate, so->grid, so->gen.n_prompts, so->gen.n_tokens,
                                  so->gen.prompt_tokens};
    if ((rc = hx_plan_probe(&pl->m->w, so->ctx, so->n_threads, &pl->sp, err))) return rc;
    return hx_plan_make(&pl->in, &pl->d, &pl->sp, &pl->p, err);
}

static void sweep_plan_print(FILE *f, const struct sweep_plan *pl) {
    const struct hx_plan_speed *sp = &pl->sp;
    fprintf(f, "plan: %d variants, %d chunks of %d tokens, %d threads; this machine: %.1f tokens/s in a %d-token window "
               "(%.3f ms per token + %.3f s per pass over the weights), %.1f GFLOP/s (fp64 dgemm %.1f)\n",
            pl->p.n, pl->in.n_chunks, pl->in.ctx, pl->in.n_threads, pl->in.ctx / (sp->tok_s * pl->in.ctx + sp->pass_s),
            pl->in.ctx, 1e3 * sp->tok_s, sp->pass_s, sp->gflops, sp->f64_gflops);
    fprintf(f, "plan:   reference pass %8.0f s%s\n", pl->p.ref, pl->in.ref_cached ? " (read from its cache)" : " (once per run)");
    fprintf(f, "plan:   %3s  %-36s %8s %8s %8s %8s\n", "#", "variant", "quant s", "eval s", "diag s", "total s");
    for (int i = 0; i < pl->p.n; i++) {
        const struct hx_plan_row *r = &pl->p.rows[i];
        fprintf(f, "plan:   %3d  %-36.36s %8.0f %8.0f %8.0f %8.0f\n", pl->index[i] + 1, pl->specs[i], r->quant, r->eval,
                r->diag, r->total);
    }
    fprintf(f, "plan:   total %.0f s (%.1f min)%s\n", pl->p.total, pl->p.total / 60,
            pl->in.n_tasks ? "; task suites not in the estimate" : "");
}

// The plan printed (stdout with --plan, else stderr) and, with --budget, applied to so.
static int sweep_plan(const struct hx_sweep_config *cfg, const struct sweep_args *a, struct hx_study_opts *so,
                      struct sweep_plan *pl) {
    char err[QP_ERRLEN], notes[1024];
    int rc = sweep_plan_make(cfg, a, so, pl, err);
    if (rc) return hx_fail("sweep", rc, "%s", err);
    if (a->budget > 0) {
        int fits = hx_plan_fit(&pl->in, &pl->d, &pl->sp, &pl->p, 60.0 * a->budget, notes, sizeof notes);
        so->layer_chunks = pl->d.layer_chunks, so->act_chunks = pl->d.act_chunks, so->grid = pl->d.grid;
        so->sens_chunks = pl->d.sens_chunks, so->sens_tensors = pl->d.sens_tensors;
        so->sens_estimate = pl->d.sens_estimate, so->gen.n_prompts = pl->d.gen_prompts;
        if (notes[0]) fprintf(a->plan ? stdout : stderr, "budget: %d min: %s\n", a->budget, notes);
        if (!fits)
            fprintf(a->plan ? stdout : stderr, "budget: %d min is not enough: the plan needs %.0f min with every "
                    "optional diagnostic dropped\n", a->budget, pl->p.total / 60);
    }
    if (!a->json || a->plan) sweep_plan_print(a->plan ? stdout : stderr, pl);
    // Closed before the study opens the model again: the probe ran every weight, and those pages
    // would otherwise stay resident beside the study's mapping for the whole sweep (1.8 GB on
    // the TinyLlama shape). Only the rows are needed from here on (the ETA).
    hx_model_close(pl->m);
    pl->m = NULL;
    pl->in.w = NULL;
    return HX_EXIT_OK;
}

// The sweep's ETA after variant k of the plan's rows is done, elapsed seconds into the variants:
// the planned seconds left, scaled by how the done ones compared with their plan.
static void sweep_eta(const struct sweep_plan *pl, int k, double elapsed) {
    double done = 0, left = 0;
    for (int i = 0; i < pl->p.n; i++) *(i <= k ? &done : &left) += pl->p.rows[i].total;
    double scale = done > 0 ? elapsed / done : 1;
    fprintf(stderr, "qprobe sweep: %d of %d variants in %.0f s (planned %.0f s); ETA %.0f s; peak RSS %.0f MiB\n",
            k + 1, pl->p.n, elapsed, done, left * scale, qp_peak_rss_mib());
}

// This shard's variants, one after the other, until done, a failure or a stop; the exit status.
static int sweep_variants(struct hx_study *s, const struct hx_sweep_config *cfg, const struct sweep_args *a,
                          int mine, const struct sweep_plan *pl, int *stored, int *skipped) {
    char err[QP_ERRLEN];
    double t0 = qp_now();
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
        if (rc == 0 && !a->json) sweep_eta(pl, k - 1, qp_now() - t0); // also after the last: its peak RSS
        hx_variant_outcome_clear(&vo);
        if (rc == QP_EINTR) break;
        if (rc) return hx_fail("sweep", rc, "variant %d '%s': %s", i + 1, cfg->variants[i], err);
    }
    return HX_EXIT_OK;
}

// After --reference-only: what is there for the shards.
static void sweep_print_reference(struct hx_study *s, const char *db) {
    printf("reference of run %lld stored in %s; its cache: %s\n", (long long)hx_study_run_id(s), db,
           hx_study_refcache_path(s));
}

// The study opened (the reference evaluated when the run is new, or taken from --reference-db),
// then the variants; first the plan.
static int sweep_run(const struct hx_sweep_config *cfg, const struct sweep_args *a, const char *db) {
    struct hx_study_opts so;
    sweep_study_opts(cfg, a, db, &so);
    char err[QP_ERRLEN], rcdir[4200];
    if (a->refcache) so.refcache_dir = a->refcache;
    else if (a->refdb) hx_refcache_dir_for(a->refdb, rcdir, sizeof rcdir), so.refcache_dir = rcdir;
    so.cache_read_only = a->shard_n > 1 && !a->build_reference && !a->reference_only;
    int status = a->refdb ? hx_merge_into("sweep", db, a->refdb) : HX_EXIT_OK, mine = 0, stored = 0, skipped = 0;
    struct sweep_plan pl = {0};
    if (!status && !a->reference_only) status = sweep_plan(cfg, a, &so, &pl);
    if (status || a->plan) {
        sweep_plan_free(&pl);
        return status;
    }
    for (int i = 0; i < cfg->n_variants; i++) mine += sweep_is_mine(a, i);
    double t0 = qp_now();
    struct hx_study *s = NULL;
    int rc = hx_study_open(&so, &s, err);
    if (rc == QP_EINTR) fprintf(stderr, "qprobe sweep: interrupted while evaluating the reference; nothing stored\n");
    if (rc) {
        sweep_plan_free(&pl);
        return rc == QP_EINTR ? HX_EXIT_INTERRUPTED : hx_fail("sweep", rc, "%s", err);
    }
    if (a->reference_only) {
        sweep_print_reference(s, db);
        hx_study_close(s);
        return HX_EXIT_OK;
    }
    if (!a->json)
        fprintf(stderr, "qprobe sweep: %d variants%s into run %lld of %s (reference %.0f s; peak RSS %.0f MiB)\n", mine,
                a->shard_n > 1 ? " (this shard)" : "", (long long)hx_study_run_id(s), db, qp_now() - t0,
                qp_peak_rss_mib());
    status = sweep_variants(s, cfg, a, mine, &pl, &stored, &skipped);
    if (status == HX_EXIT_OK && !hx_sweep_stop && (rc = hx_study_finish(s, NULL, err)))
        status = rc == QP_EINTR ? HX_EXIT_INTERRUPTED : hx_fail("sweep", rc, "%s", err);
    if (status == HX_EXIT_OK && hx_sweep_stop) {
        fprintf(stderr, "qprobe sweep: interrupted: %d variants stored, the one in flight discarded; "
                        "run again with --resume to continue\n", stored);
        status = HX_EXIT_INTERRUPTED;
    } else if (status == HX_EXIT_OK && !a->json) {
        fprintf(stderr, "qprobe sweep: done in %.1f s: %d stored, %d already there; peak RSS %.0f MiB\n", qp_now() - t0,
                stored, skipped, qp_peak_rss_mib());
    }
    hx_study_close(s);
    sweep_plan_free(&pl);
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
    } else if (!db && a.plan) {
        rc = sweep_run(cfg, &a, "(none)");
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
