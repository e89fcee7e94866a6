// cmd_inspect.c — `qprobe inspect`: the unquantized model's weight diagnostics (outlier tensors
// and channels, which block formats fit which shapes), printed and optionally stored.
#include <cjson/cJSON.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hx_cli.h"
#include "kn_types.h"
#include "met_outlier.h"
#include "hx_model.h"
#include "qp.h"
#include "qz_mix.h"
#include "qp_sha256.h"
#include "hx_store.h"
#include "hx_study.h"

static void inspect_usage(void) {
    printf("usage: qprobe inspect -m MODEL [-z TOKENIZER] [--db FILE] [--top N] [--json]\n\n"
           "Weight diagnostics of the unquantized model: per tensor the moments, Pearson kurtosis\n"
           "(normal = 3), max|w|/sigma, the share beyond 6 sigma and the outlier input channels (absmax\n"
           "above %g x the median channel), and which llama.cpp block formats fit its rows.\n\n"
           "  -m, --model FILE   the model\n"
           "  -z, --tokenizer    llama2.c tokenizer.bin (recorded only)\n"
           "      --db FILE      also store the statistics in a study database (tables weight_stat,\n"
           "                     histogram; docs/SCHEMA.md)\n"
           "      --top N        tensors listed, heaviest tails first (default 12; 0 = all)\n"
           "      --json         one JSON object per tensor, one per line\n\n"
           "examples:\n"
           "  qprobe inspect -m stories260K.bin\n"
           "  qprobe inspect -m model.gguf --top 0 --json\n"
           "  qprobe inspect -m model.gguf --db study.sqlite\n",
           MET_OUTLIER_K);
}

struct hx_inspect_row {
    char name[64];
    int64_t rows, cols;
    double sd, kurt, max_sd, frac6;
    int64_t n_out;
    int64_t chan[4];
    int type;
};

struct hx_inspect {
    struct hx_inspect_row *rows;
    int n, cap;
};

static void hx_inspect_cb(void *ctx, const char *name, const struct kn_tensor *t, const struct met_wstats *ws,
                          const int64_t *outliers, int64_t n_out) {
    struct hx_inspect *in = ctx;
    if (in->n == in->cap) return;
    struct hx_inspect_row *r = &in->rows[in->n++];
    snprintf(r->name, sizeof r->name, "%s", name);
    r->rows = t->ne1;
    r->cols = t->ne0;
    r->type = t->type;
    r->sd = ws->sd;
    r->kurt = ws->kurtosis;
    r->max_sd = ws->absmax_over_sd;
    r->frac6 = ws->frac_beyond_6sd;
    r->n_out = n_out;
    for (int i = 0; i < 4; i++) r->chan[i] = i < n_out ? outliers[i] : -1;
}

static int hx_by_kurtosis(const void *a, const void *b) {
    const struct hx_inspect_row *x = a, *y = b;
    double kx = isnan(x->kurt) ? -1 : x->kurt, ky = isnan(y->kurt) ? -1 : y->kurt;
    return kx < ky ? 1 : kx > ky ? -1 : strcmp(x->name, y->name);
}

struct inspect_args {
    const char *model_path, *tok_path, *db;
    int top, json;
};

// Options into a; HX_CLI_HELP when --help was printed, else 0 or a usage error's exit status.
static int inspect_parse_opts(int argc, char **argv, struct inspect_args *a) {
    enum { O_DB = 256, O_TOP, O_JSON };
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"tokenizer", required_argument, 0, 'z'},
        {"db", required_argument, 0, O_DB},   {"top", required_argument, 0, O_TOP},
        {"json", no_argument, 0, O_JSON},     {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    int c, rc = 0;
    optind = 1;
    opterr = 0;
    while (!rc && (c = getopt_long(argc, argv, "m:z:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': a->model_path = optarg; break;
        case 'z': a->tok_path = optarg; break;
        case O_DB: a->db = optarg; break;
        case O_TOP: rc = hx_parse_int("inspect", "--top", optarg, 0, 1 << 20, &a->top); break;
        case O_JSON: a->json = 1; break;
        case 'h': inspect_usage(); return HX_CLI_HELP;
        default: return hx_unknown_option("inspect", argv);
        }
    }
    if (!rc && optind < argc) rc = hx_usage_error("inspect", "unexpected argument '%s'", argv[optind]);
    if (!rc && !a->model_path) rc = hx_usage_error("inspect", "no model given (-m FILE)");
    return rc;
}

// The study database of --db and the inspect run in it; *st stays NULL when that run already
// holds the statistics (they are then printed from a fresh computation, nothing stored twice).
static int inspect_open_store(const struct inspect_args *a, const struct kn_config *cfg, struct hx_store **st,
                              int64_t *run_id, char *err) {
    char sha[65], tsha[65];
    int created, rc = qp_sha256_file(a->model_path, sha, err);
    if (!rc && a->tok_path) rc = qp_sha256_file(a->tok_path, tsha, err);
    if (!rc) rc = hx_store_open(a->db, 0, st, err);
    if (rc) return rc;
    struct hx_run_info ri = {.label = "inspect", .model_path = a->model_path, .model_sha256 = sha,
                             .dim = cfg->dim, .hidden_dim = cfg->hidden_dim, .n_layers = cfg->n_layers,
                             .n_heads = cfg->n_heads, .n_kv_heads = cfg->n_kv_heads, .vocab = cfg->vocab_size,
                             .seq_len = cfg->seq_len, .tokenizer = a->tok_path,
                             .tokenizer_sha256 = a->tok_path ? tsha : NULL};
    int64_t n_stored = 0;
    rc = hx_store_run_get(*st, &ri, run_id, &created, err);
    if (!rc) rc = hx_store_query_i64(*st, err, &n_stored, NULL, "SELECT count(*) FROM weight_stat WHERE run_id = ?", "i",
                                     *run_id);
    if (rc || n_stored > 0) {
        hx_store_close(*st);
        *st = NULL;
    }
    return rc;
}

// The weight statistics of every tensor, through cb: stored into st (run_id) in one
// transaction, or, without st, computed into a throwaway in-memory store.
static int inspect_compute(struct hx_store *st, int64_t run_id, struct hx_model *m, struct hx_weight_stat_cb *cb,
                           char *err) {
    struct hx_store *mem = NULL;
    int rc = 0;
    if (!st) {
        int created;
        struct hx_run_info ri = {.model_path = m->path, .model_sha256 = "-"};
        rc = hx_store_open(":memory:", 0, &mem, err);
        if (!rc) rc = hx_store_run_get(mem, &ri, &run_id, &created, err);
        st = mem;
    }
    if (!rc) rc = hx_store_begin(st, err);
    if (!rc) rc = hx_store_weight_stats(st, run_id, &m->w, cb, err);
    if (!rc && !mem) rc = hx_store_commit(st, err);
    if (st) hx_store_rollback(st);
    hx_store_close(mem);
    return rc;
}

static void inspect_print_json(const struct hx_inspect *in, int shown) {
    for (int i = 0; i < shown; i++) {
        const struct hx_inspect_row *r = &in->rows[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "tensor", r->name);
        cJSON_AddNumberToObject(o, "rows", (double)r->rows);
        cJSON_AddNumberToObject(o, "cols", (double)r->cols);
        cJSON_AddNumberToObject(o, "std", r->sd);
        cJSON_AddNumberToObject(o, "kurtosis", r->kurt);
        cJSON_AddNumberToObject(o, "max_over_std", r->max_sd);
        cJSON_AddNumberToObject(o, "frac_6sigma", r->frac6);
        cJSON *ch = cJSON_AddArrayToObject(o, "outlier_channels");
        for (int k = 0; k < 4 && r->chan[k] >= 0; k++) cJSON_AddItemToArray(ch, cJSON_CreateNumber((double)r->chan[k]));
        cJSON_AddStringToObject(o, "k_quant_fits", r->cols % 256 == 0 ? "yes" : "no");
        hx_print_json(o);
    }
}

// Which block formats fit: legacy blocks of 32 and k-quant super-blocks of 256.
static void inspect_print_fits(const struct hx_inspect *in) {
    int fit32 = 0, fit256 = 0;
    for (int i = 0; i < in->n; i++) {
        fit32 += in->rows[i].cols % 32 == 0;
        fit256 += in->rows[i].cols % 256 == 0;
    }
    printf("\nblock formats: rows of %d/%d tensors fit 32-blocks (q4_0, q8_0, ...), %d/%d fit 256-blocks (k-quants)\n",
           fit32, in->n, fit256, in->n);
    for (int i = 0; i < in->n; i++)
        if (in->rows[i].cols % 256) {
            int fb = qz_fallback_type(KN_Q4_K, in->rows[i].cols);
            printf("  %-26s row of %lld: q4_k falls back to %s\n", in->rows[i].name, (long long)in->rows[i].cols,
                   kn_type_info(fb)->name);
        }
}

static void inspect_print_text(const struct hx_inspect *in, int shown, const char *model_path,
                               const struct kn_config *cfg) {
    printf("model %s: dim %d, hidden %d, %d layers, %d heads (%d kv), vocab %d\n\n", model_path, cfg->dim,
           cfg->hidden_dim, cfg->n_layers, cfg->n_heads, cfg->n_kv_heads, cfg->vocab_size);
    printf("%-26s %11s %9s %9s %8s %9s  %s\n", "tensor (heaviest tails)", "shape", "sigma", "kurtosis", "max/sig",
           ">6sig", "outlier input channels");
    for (int i = 0; i < shown; i++) {
        const struct hx_inspect_row *r = &in->rows[i];
        char shape[32], chans[64] = "-";
        snprintf(shape, sizeof shape, "%lldx%lld", (long long)r->rows, (long long)r->cols);
        if (r->n_out > 0) {
            size_t k = 0;
            for (int j = 0; j < 4 && r->chan[j] >= 0; j++)
                k += (size_t)snprintf(chans + k, sizeof chans - k, "%s%lld", j ? "," : "", (long long)r->chan[j]);
            if (r->n_out > 4) snprintf(chans + k, sizeof chans - k, " (+%lld)", (long long)(r->n_out - 4));
        }
        printf("%-26s %11s %9.4g %9.2f %8.1f %8.2e  %s\n", r->name, shape, r->sd, r->kurt, r->max_sd, r->frac6, chans);
    }
    inspect_print_fits(in);
}

int hx_cmd_inspect(int argc, char **argv) {
    struct inspect_args a = {.top = 12};
    int rc = inspect_parse_opts(argc, argv, &a);
    if (rc) return rc == HX_CLI_HELP ? HX_EXIT_OK : rc;
    struct hx_model *m;
    if ((rc = hx_open_model("inspect", a.model_path, a.tok_path, 0, &m))) return rc;
    char err[QP_ERRLEN];
    struct hx_store *st = NULL;
    int64_t run_id = 0;
    int n = HX_N_WEIGHTS(m->w.cfg.n_layers);
    struct hx_inspect in = {calloc((size_t)n, sizeof(struct hx_inspect_row)), 0, n};
    struct hx_weight_stat_cb cb = {hx_inspect_cb, &in};
    if (!in.rows) rc = hx_fail("inspect", QP_ENOMEM, "out of memory");
    else if (a.db && (rc = inspect_open_store(&a, &m->w.cfg, &st, &run_id, err))) rc = hx_fail("inspect", rc, "%s", err);
    else if ((rc = inspect_compute(st, run_id, m, &cb, err)))
        rc = hx_fail("inspect", rc, "cannot inspect '%s': %s", a.model_path, err);
    if (!rc) {
        qsort(in.rows, (size_t)in.n, sizeof *in.rows, hx_by_kurtosis);
        int shown = a.top > 0 && a.top < in.n ? a.top : in.n;
        if (a.json) inspect_print_json(&in, shown);
        else inspect_print_text(&in, shown, a.model_path, &m->w.cfg);
        if (!a.json && st) printf("\nstored in %s (run %lld)\n", a.db, (long long)run_id);
    }
    free(in.rows);
    hx_store_close(st);
    hx_model_close(m);
    return rc;
}
