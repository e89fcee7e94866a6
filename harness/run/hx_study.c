// study.c — a model, a text, and variants evaluated into the study database (study.h).
#include "hx_study.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sqlite3.h>

#include "hx_calib.h"
#include "hx_progress.h"
#include "hx_text.h"
#include "kn_cpu.h"
#include "kn_engine.h"
#include "kn_qdot.h"
#include "hx_lockstep.h"
#include "hx_refcache.h"
#include "hx_refeval.h"
#include "met_dist.h"
#include "met_grid.h"
#include "met_layer.h"
#include "met_outlier.h"
#include "hx_model.h"
#include "qp.h"
#include "qz_codes.h"
#include "qz_spec.h"
#include "qp_sha256.h"
#include "hx_store.h"
#include "hx_task_io.h"
#include "hx_tasks_run.h"
#include "hx_tokenizer.h"
#include "hx_variant.h"

// Activation statistics: a probe on the reference over the first act_chunks chunks.
struct hx_act_probe {
    struct met_act *acc; // (n_layers, KN_SITE_LOGITS)
};

struct hx_study {
    struct hx_study_opts o;
    struct hx_act_probe act; // the reference's activation statistics while they are collected
    int act_done;            // ... collected by the cache's reference pass
    struct hx_model *m;
    int *tokens;
    size_t n_tokens;
    struct kn_engine *ref; // the reference: the model as loaded, fp32 activations; NULL once
                           // released (hx_study_ref_release), made again when needed (hx_study_ref)
    const struct kn_ops *ops; // its kernel table (static: outlives the engine)
    struct hx_store *st;
    int64_t run_id, ref_id;
    // The reference cache (hx_refcache.h): what every variant is compared with.
    struct hx_refcache *rc;
    char rc_dir[4200];
    char model_sha[65], tok_sha[65], text_sha[65];
    struct hx_refcache_id rc_id;
    int bos;
    char prefix[64];
    struct hx_calib *cal;          // calibration windows (NULL: none given)
    struct task_suite **suites;    // (o.n_tasks)
    struct task_result **ref_task; // the reference's results per suite
    // Generation (o.gen on): the prompts, the reference's continuations, the setup they are stored
    // under.
    int gen_on;
    struct hx_gen_prompts gen_prompts;
    struct hx_gen_conts gen_ref;
    char gen_setup[256];
};

void hx_study_opts_default(struct hx_study_opts *o) {
    memset(o, 0, sizeof *o);
    o->protocol = HX_PROTO_LLAMACPP;
    o->ctx = 512;
    o->n_threads = qp_cpu_count();
    o->layer_chunks = 1;
    o->act_chunks = 4;
    o->grid = 1;
    o->sens_estimate = 1;
    o->calib_seqs = 128;
    o->calib_len = 512;
    hx_gen_opts_default(&o->gen);
}

int64_t hx_study_run_id(const struct hx_study *s) { return s->run_id; }
const char *hx_study_refcache_path(const struct hx_study *s) { return s->rc ? hx_refcache_path(s->rc) : ""; }
void hx_study_set_progress_prefix(struct hx_study *s, const char *prefix) {
    snprintf(s->prefix, sizeof s->prefix, "%s", prefix);
}

// ---------------------------------------------------------------------------------------------
// Helpers

// SHA-256 of a model: the file, or for a safetensors directory its two files in turn.
static int hx_hash_model(const char *path, char hex[65], char *err) {
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        char a[65], b[65], both[160], p[4096];
        snprintf(p, sizeof p, "%s/model.safetensors", path);
        int rc = qp_sha256_file(p, a, err);
        snprintf(p, sizeof p, "%s/config.json", path);
        if (!rc) rc = qp_sha256_file(p, b, err);
        if (rc) return rc;
        snprintf(both, sizeof both, "%s %s", a, b);
        qp_sha256_hex(both, strlen(both), hex);
        return 0;
    }
    return qp_sha256_file(path, hex, err);
}

static void hx_progress_maybe(struct hx_study *s, struct hx_progress *p, const char *label,
                              void (**fn)(void *, int, int, int64_t), void **ctx) {
    *fn = NULL;
    *ctx = NULL;
    if (s->o.quiet) return;
    hx_progress_init(p, label);
    *fn = hx_progress_cb;
    *ctx = p;
}

// The reference engine, made again when it was released. 0 or a QP_E* code with err.
static int hx_study_ref(struct hx_study *s, char *err) {
    if (s->ref) return 0;
    char msg[QP_ERRLEN];
    int rc = kn_engine_create(&s->m->w, NULL, &s->ref, msg);
    return rc ? qp_fail(err, rc == QP_ENOMEM ? rc : QP_ENOTSUP, "cannot run '%s': %s", s->o.model_path, msg) : 0;
}

// The reference engine released and the model file's pages dropped from the process: variants
// then run with one model in memory (the quantizers fault in what they read, one tensor at a time).
static void hx_study_ref_release(struct hx_study *s) {
    kn_engine_destroy(s->ref);
    s->ref = NULL;
    hx_model_release_pages(s->m);
}

// One row of table metric.
struct hx_metric_row {
    const char *suite, *name;
    double value, unc;
    int64_t n;
};

static int hx_store_metric_rows(struct hx_store *st, int64_t vid, const struct hx_metric_row *m, int n, char *err) {
    int rc = 0;
    for (int i = 0; i < n && !rc; i++)
        rc = hx_store_metric(st, vid, m[i].suite, m[i].name, m[i].value, m[i].unc, m[i].n, err);
    return rc;
}

// Stores a histogram (bins of met_outlier.h's fixed log10 edges).
static int hx_store_log10_hist(struct hx_store *st, int64_t run_id, int64_t variant_id, const char *kind,
                               const char *subject, const int64_t *hist, char *err) {
    for (int b = 0; b < MET_HIST_N; b++) {
        if (!hist[b]) continue;
        double lo = b == 0 ? 0.0 : met_hist_edge(b - 1);
        double hi = b == MET_HIST_N - 1 ? INFINITY : met_hist_edge(b);
        int rc = hx_store_exec(st, err,
                               "INSERT INTO histogram (run_id, variant_id, kind, subject, bin, lo, hi, count)"
                               " VALUES (?, NULLIF(?, 0), ?, ?, ?, ?, ?, ?)", // variant 0: the unquantized model
                               "iittIddi", run_id, variant_id, kind, subject, b, lo, hi, hist[b]);
        if (rc) return rc;
    }
    return 0;
}

// ---------------------------------------------------------------------------------------------
// The reference: weights, activations, perplexity (once per run)

int hx_store_weight_stats(struct hx_store *st, int64_t run_id, struct kn_weights *w,
                          struct hx_weight_stat_cb *cb, char *err) {
    int n = HX_N_WEIGHTS(w->cfg.n_layers), rc = 0;
    struct hx_weight_ref *refs = malloc((size_t)n * sizeof *refs);
    if (!refs) return qp_fail(err, QP_ENOMEM, "out of memory");
    hx_weight_refs(w, refs);
    for (int i = 0; i < n && !rc; i++) {
        if (i == 1 && w->tied) continue; // the classifier is the embedding
        const float *x;
        float *owned = NULL;
        const struct kn_tensor *t = refs[i].t;
        if ((rc = hx_tensor_f32(t, &x, &owned))) {
            rc = qp_fail(err, rc, "cannot read tensor %s of type %s", refs[i].name, kn_type_info(t->type)->name);
            break;
        }
        float *absmax = malloc((size_t)t->ne0 * sizeof(float));
        int64_t *idx = malloc((size_t)t->ne0 * sizeof(int64_t)), n_out = 0;
        struct met_wstats ws;
        if (!absmax || !idx) rc = qp_fail(err, QP_ENOMEM, "out of memory");
        if (!rc && met_weight_stats(x, t->ne1, t->ne0, &ws, absmax, err))
            rc = qp_fail(err, QP_EFORMAT, "tensor %s: %s", refs[i].name, err);
        if (!rc) rc = met_outlier_channels(absmax, t->ne0, MET_OUTLIER_K, idx, &n_out, NULL, err);
        if (!rc) {
            char json[1024];
            size_t k = (size_t)snprintf(json, sizeof json, "[");
            for (int64_t j = 0; j < n_out && j < 32 && k < sizeof json - 24; j++)
                k += (size_t)snprintf(json + k, sizeof json - k, "%s%lld", j ? "," : "", (long long)idx[j]);
            snprintf(json + k, sizeof json - k, "]");
            if (cb && cb->fn) cb->fn(cb->ctx, refs[i].name, t, &ws, idx, n_out);
            rc = hx_store_exec(st, err,
                               "INSERT INTO weight_stat (run_id, tensor, rows, cols, mean, std, kurtosis,"
                               " max_abs, max_over_std, frac_3sigma, frac_6sigma, outlier_channels)"
                               " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                               "itiiddddddd" "t", run_id, refs[i].name, (int64_t)t->ne1, (int64_t)t->ne0,
                               ws.mean, ws.sd, ws.kurtosis, ws.absmax, ws.absmax_over_sd, ws.frac_beyond_3sd,
                               ws.frac_beyond_6sd, json);
        }
        if (!rc) rc = hx_store_log10_hist(st, run_id, 0, "weight_log10_abs", refs[i].name, ws.hist, err);
        free(absmax);
        free(idx);
        qp_free(owned);
    }
    free(refs);
    return rc;
}


static void hx_act_probe_fn(void *p, enum kn_site site, int layer, const float *x, int n, int width,
                            int pos0) {
    (void)pos0;
    (void)width;
    if (site == KN_SITE_LOGITS) return;
    struct hx_act_probe *ap = p;
    met_act_add(&ap->acc[layer * KN_SITE_LOGITS + site], x, n);
}

// The chunks with activation statistics.
static int hx_act_chunks(const struct hx_study *s) {
    int n = QP_MIN(s->o.act_chunks, hx_ppl_n_chunks(s->o.protocol, s->n_tokens, s->o.ctx));
    return s->o.max_chunks > 0 ? QP_MIN(n, s->o.max_chunks) : n;
}

// The accumulators of every site, (n_layers, KN_SITE_LOGITS). 0 or QP_ENOMEM with err.
static int hx_act_open(struct hx_study *s, char *err) {
    const struct kn_config *c = &s->m->w.cfg;
    int n_acc = c->n_layers * KN_SITE_LOGITS;
    if (!(s->act.acc = calloc((size_t)n_acc, sizeof(struct met_act)))) return qp_fail(err, QP_ENOMEM, "out of memory");
    for (int i = 0; i < n_acc; i++)
        if (met_act_init(&s->act.acc[i], kn_site_width(c, (enum kn_site)(i % KN_SITE_LOGITS))))
            return qp_fail(err, QP_ENOMEM, "out of memory");
    return 0;
}

static void hx_act_close(struct hx_study *s) {
    for (int i = 0; s->act.acc && i < s->m->w.cfg.n_layers * KN_SITE_LOGITS; i++) met_act_deinit(&s->act.acc[i]);
    free(s->act.acc);
    s->act.acc = NULL;
    s->act_done = 0;
}

// The reference over the first act chunks with the statistics probe (when the cache's reference
// pass did not collect them on its way).
static int hx_act_pass(struct hx_study *s, int n_chunks, char *err) {
    struct kn_state *st = NULL;
    int *buf = malloc((size_t)s->o.ctx * sizeof(int)), rc = hx_study_ref(s, err);
    if (!rc && !buf) rc = qp_fail(err, QP_ENOMEM, "out of memory");
    if (!rc) rc = kn_state_create(s->ref, s->o.ctx, s->o.ctx, s->o.n_threads, &st, err);
    struct kn_probe probe = {hx_act_probe_fn, &s->act, NULL};
    for (int ci = 0; ci < n_chunks && !rc; ci++) {
        struct hx_chunk ch = hx_chunk_of(s->o.protocol, s->n_tokens, s->o.ctx, ci);
        memcpy(buf, s->tokens + ch.start, (size_t)ch.len * sizeof(int));
        if (s->o.protocol == HX_PROTO_LLAMACPP && s->bos >= 0) buf[0] = s->bos;
        kn_state_reset(st);
        kn_forward(st, buf, ch.len, NULL, ch.len, &probe);
    }
    free(buf);
    kn_state_destroy(st);
    return rc;
}

// The reference's activation accumulators filled: by the cache's reference pass on its way, or
// else by a pass of their own. Run before the reference's transaction, so that the write lock is
// held only while rows are written (another process storing into the same study waits that
// long, not for the forward passes).
static int hx_act_ready(struct hx_study *s, char *err) {
    int n_chunks = hx_act_chunks(s), rc = 0;
    if (n_chunks < 1 || s->act_done) return 0;
    hx_act_close(s);
    rc = hx_act_open(s, err);
    if (!rc) rc = hx_act_pass(s, n_chunks, err);
    if (!rc) s->act_done = 1;
    return rc;
}

// Activation statistics of the reference (hx_act_ready first): table act_stat and its histograms.
static int hx_store_act_stats(struct hx_study *s, char *err) {
    const struct kn_config *c = &s->m->w.cfg;
    int n_acc = c->n_layers * KN_SITE_LOGITS, rc = 0;
    if (hx_act_chunks(s) < 1 || !s->act.acc) return 0;
    for (int i = 0; i < n_acc && !rc; i++) {
        if (!kn_site_used(c, (enum kn_site)(i % KN_SITE_LOGITS))) continue; // (post-norm sites)
        struct met_act_summary as;
        if ((rc = met_act_finish(&s->act.acc[i], &as, err))) break;
        int layer = i / KN_SITE_LOGITS;
        const char *site = kn_site_name((enum kn_site)(i % KN_SITE_LOGITS));
        char top[1024], subject[96];
        size_t k = (size_t)snprintf(top, sizeof top, "[");
        for (int j = 0; j < as.n_top && k < sizeof top - 40; j++)
            k += (size_t)snprintf(top + k, sizeof top - k, "%s[%lld,%.6g]", j ? "," : "",
                                  (long long)as.top_chan[j], (double)as.top_absmax[j]);
        snprintf(top + k, sizeof top - k, "]");
        rc = hx_store_exec(s->st, err,
                           "INSERT INTO act_stat (run_id, layer, site, width, rows, kurtosis, max_abs,"
                           " median_channel_absmax, top_channels) VALUES (?,?,?,?,?,?,?,?,?)",
                           "iItiiddd" "t", s->run_id, layer, site, as.width, as.rows, as.kurtosis, as.absmax,
                           as.median_chan_absmax, top);
        snprintf(subject, sizeof subject, "blk.%d.%s", layer, site);
        if (!rc) rc = hx_store_log10_hist(s->st, s->run_id, 0, "act_channel_absmax_log10", subject, as.chan_hist, err);
    }
    return rc;
}

// The reference's row, from the cache (its perplexity: met_token_nll of every scored token, as
// `qprobe ppl` computes it), with the weight and activation statistics, in one transaction.
static int hx_store_reference(struct hx_study *s, char *err) {
    struct met_nll nll = {0};
    for (int c = 0; c < hx_refcache_shape(s->rc)->n_chunks; c++) {
        const struct met_dist_ref *recs;
        const uint16_t *codes;
        int n = hx_refcache_chunk(s->rc, c, &recs, &codes);
        for (int k = 0; k < n; k++) met_nll_add(&nll, recs[k].nll_ppl);
    }
    char digest[65];
    hx_weights_digest(&s->m->w, 0, 0, NULL, digest);
    struct hx_variant_row v = {.spec = "reference", .ord = 0, .is_reference = 1, .bits_per_weight = NAN,
                               .eval_seconds = hx_refcache_seconds(s->rc),
                               .tokens = hx_refcache_tokens_processed(s->rc), .quant_seconds = NAN,
                               .weights_sha256 = digest[0] ? digest : NULL};
    int64_t vid;
    int stored = 0, rc = s->o.act_chunks > 0 ? hx_act_ready(s, err) : 0;
    if (!rc) rc = hx_store_begin(s->st, err);
    // Another process evaluating the same new run (two `eval`s of different variants started
    // together) may have stored the reference meanwhile: then its row is used, and this one's
    // numbers, the same, are dropped (under the write lock, so that exactly one is stored).
    if (!rc) stored = rc = hx_store_variant_find(s->st, s->run_id, "reference", &vid, err);
    if (rc == 1) rc = 0;
    if (!rc && !stored) {
        rc = hx_store_variant_insert(s->st, s->run_id, &v, &vid, err);
        if (!rc) rc = hx_store_metric(s->st, vid, "ppl", "ppl", met_ppl(&nll), met_ppl_stderr(&nll), nll.n, err);
        if (!rc) rc = hx_store_metric(s->st, vid, "ppl", "nll", met_nll_mean(&nll), NAN, nll.n, err);
        if (!rc) rc = hx_store_weight_stats(s->st, s->run_id, &s->m->w, NULL, err);
        if (!rc && s->o.act_chunks > 0) rc = hx_store_act_stats(s, err);
    }
    if (!rc) rc = hx_store_commit(s->st, err);
    if (rc) hx_store_rollback(s->st);
    hx_act_close(s);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// Task suites

static int hx_score_suite(struct hx_study *s, const struct kn_engine *e, int k, const char *who,
                          struct task_result **out, char *err) {
    char label[700];
    snprintf(label, sizeof label, "%s%s %s", s->prefix, who, s->suites[k]->name);
    struct hx_tasks_opts to = {.n_threads = s->o.n_threads, .label = s->o.quiet ? NULL : label};
    return hx_tasks_run(e, s->m->tok, s->suites[k], &to, out, err);
}

// One suite's results of variant vid (the reference when ref == NULL), with the paired statistics
// against ref: metric rows under suite "task:NAME" and one task_item row per scored item.
static int hx_store_task(struct hx_study *s, int64_t vid, int k, const struct task_result *r,
                         const struct task_result *ref, struct met_paired *pair, char *err) {
    char suite[160];
    snprintf(suite, sizeof suite, "task:%s", s->suites[k]->name);
    const struct task_summary *sm = &r->sum;
    struct hx_metric_row m[14];
    int n_m = 0, rc = 0;
    m[n_m++] = (struct hx_metric_row){suite, "acc", sm->acc, sm->acc_stderr, sm->n};
    if (r->kind == TASK_GEN) { // scored by generation (task_gen.h): acc is the exact match
        m[n_m++] = (struct hx_metric_row){suite, "exact_match", sm->acc, sm->acc_stderr, sm->n};
        m[n_m++] = (struct hx_metric_row){suite, "contains", sm->acc_norm, sm->acc_norm_stderr, sm->n};
    } else {
        m[n_m++] = (struct hx_metric_row){suite, "acc_norm", sm->acc_norm, sm->acc_norm_stderr, sm->n};
    }
    if (r->kind == TASK_CLOZE) m[n_m++] = (struct hx_metric_row){suite, "target_ppl", sm->target_ppl, NAN, sm->n};
    m[n_m++] = (struct hx_metric_row){suite, "items_per_second", r->seconds > 0 ? sm->n / r->seconds : NAN, NAN, sm->n};
    if (ref) {
        if ((rc = hx_tasks_compare(ref, r, 0, NULL, pair, err))) return rc;
        m[n_m++] = (struct hx_metric_row){suite, "flips_to_wrong", (double)pair->flips_cw, NAN, pair->n};
        m[n_m++] = (struct hx_metric_row){suite, "flips_to_right", (double)pair->flips_wc, NAN, pair->n};
        m[n_m++] = (struct hx_metric_row){suite, "mcnemar_p", pair->mcnemar_p, NAN, pair->n};
        m[n_m++] = (struct hx_metric_row){suite, "dacc", pair->delta, NAN, pair->n};
        m[n_m++] = (struct hx_metric_row){suite, "dacc_lo", pair->ci_lo, NAN, pair->n};
        m[n_m++] = (struct hx_metric_row){suite, "dacc_hi", pair->ci_hi, NAN, pair->n};
        m[n_m++] = (struct hx_metric_row){suite, "recovery", sm->acc / ref->sum.acc, NAN, pair->n};
    }
    rc = hx_store_metric_rows(s->st, vid, m, n_m, err);
    for (int i = 0; i < r->n_items && !rc; i++) {
        const struct task_item_result *it = &r->items[i];
        if (it->skipped) continue;
        rc = hx_store_exec(s->st, err,
                           "INSERT INTO task_item (variant_id, suite, item, gold, pred, pred_norm, correct,"
                           " correct_norm, margin) VALUES (?,?,?,?,?,?,?,?,?)",
                           "itIIIIIId", vid, s->suites[k]->name, i, s->suites[k]->items[i].gold, it->pred,
                           it->pred_norm, it->correct, it->correct_norm, it->margin);
    }
    return rc;
}

// The reference's results of suite k as stored before (its task_item rows and its accuracy):
// what the paired statistics of every variant need. 1 and *out, 0 when not stored, < 0 on error.
static int hx_task_load(struct hx_study *s, int64_t ref_id, int k, struct task_result **out, char *err) {
    char suite[160];
    double acc = NAN;
    int64_t have = 0;
    snprintf(suite, sizeof suite, "task:%s", s->suites[k]->name);
    int rc = hx_store_query_i64(s->st, err, &have, NULL,
                                "SELECT count(*) FROM metric WHERE variant_id = ? AND suite = ?", "it", ref_id, suite);
    if (rc || !have) return rc;
    if (task_result_create(s->suites[k], out)) return qp_fail(err, QP_ENOMEM, "out of memory");
    struct task_result *r = *out;
    for (int i = 0; i < r->n_items; i++) r->items[i].skipped = 1; // skipped items have no row
    sqlite3 *db = hx_store_db(s->st);
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(db, "SELECT item, pred, pred_norm, correct, correct_norm, margin, NULL FROM task_item"
                               " WHERE variant_id = ?1 AND suite = ?2 UNION ALL SELECT -1, 0, 0, 0, 0, 0, value"
                               " FROM metric WHERE variant_id = ?1 AND suite = ?3 AND name = 'acc'",
                           -1, &q, NULL) != SQLITE_OK)
        return qp_fail(err, hx_store_sqlite_code(db), "cannot read '%s': %s", s->o.db_path, sqlite3_errmsg(db));
    sqlite3_bind_int64(q, 1, ref_id);
    sqlite3_bind_text(q, 2, s->suites[k]->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, suite, -1, SQLITE_STATIC);
    while (sqlite3_step(q) == SQLITE_ROW) {
        int i = sqlite3_column_int(q, 0);
        if (i < 0) acc = sqlite3_column_double(q, 6);
        if (i < 0 || i >= r->n_items) continue;
        struct task_item_result *it = &r->items[i];
        it->skipped = 0;
        it->pred = sqlite3_column_int(q, 1);
        it->pred_norm = sqlite3_column_int(q, 2);
        it->correct = sqlite3_column_int(q, 3);
        it->correct_norm = sqlite3_column_int(q, 4);
        it->margin = sqlite3_column_double(q, 5);
        r->sum.n++;
    }
    sqlite3_finalize(q);
    r->sum.acc = acc;
    return 1;
}

// Loads the configured suites and the reference's results on each: as stored, or scored (and
// stored) when the run has none yet (a run created without tasks gets them later).
static int hx_study_tasks_open(struct hx_study *s, int64_t ref_id, char *err) {
    int n = s->o.n_tasks, rc = 0;
    s->suites = calloc((size_t)n, sizeof *s->suites);
    s->ref_task = calloc((size_t)n, sizeof *s->ref_task);
    if (!s->suites || !s->ref_task) return qp_fail(err, QP_ENOMEM, "out of memory");
    for (int k = 0; k < n && !rc; k++) {
        struct hx_task_read_opts ro = {.limit = s->o.task_limits ? s->o.task_limits[k] : 0};
        rc = hx_task_open(s->o.task_suites[k], hx_task_fixtures(s->o.fixtures), &ro, &s->suites[k], err);
    }
    for (int k = 0; k < n && !rc; k++) {
        char suite[160];
        int64_t n_rows = 0;
        snprintf(suite, sizeof suite, "task:%s", s->suites[k]->name);
        int have = hx_task_load(s, ref_id, k, &s->ref_task[k], err);
        if (have) {
            rc = have < 0 ? have : 0;
            continue;
        }
        if (s->o.cache_read_only)
            rc = qp_fail(err, QP_ENOENT, "the reference of run %lld in '%s' has no results of task suite '%s' "
                         "(score them with 'qprobe sweep --reference-only')", (long long)s->run_id, s->o.db_path,
                         s->suites[k]->name);
        if (!rc) rc = hx_study_ref(s, err);
        if (!rc) rc = hx_score_suite(s, s->ref, k, "reference", &s->ref_task[k], err);
        // Looked up again under the write lock: another process scoring the same suite may have
        // stored it meanwhile, and then its rows are kept.
        if (!rc) rc = hx_store_begin(s->st, err);
        if (!rc)
            rc = hx_store_query_i64(s->st, err, &n_rows, NULL,
                                    "SELECT count(*) FROM metric WHERE variant_id = ? AND suite = ?", "it", ref_id, suite);
        if (!rc && !n_rows) rc = hx_store_task(s, ref_id, k, s->ref_task[k], NULL, NULL, err);
        if (!rc) rc = hx_store_commit(s->st, err);
        hx_store_rollback(s->st);
    }
    return rc;
}

// ---------------------------------------------------------------------------------------------
// Generation: the prompts and the reference's continuations (docs/GENERATION.md)

// The reference's continuations of this setup: read from the study when stored, else generated
// and stored (with its own summary metrics when it has none yet) in one transaction.
static int hx_study_gen_open(struct hx_study *s, int64_t ref_id, char *err) {
    const struct hx_gen_opts *g = &s->o.gen;
    s->gen_on = g->n_prompts > 0 || g->prompts_path;
    if (!s->gen_on) return 0;
    int rc = g->prompts_path
                 ? hx_gen_prompts_read(g->prompts_path, s->m->tok, s->m->w.cfg.seq_len, g, &s->gen_prompts, err)
                 : hx_gen_prompts_from_text(s->tokens, s->n_tokens, s->bos, s->m->tok, g, &s->gen_prompts, err);
    if (rc) return rc;
    hx_gen_setup(&s->gen_prompts, g, s->gen_setup, sizeof s->gen_setup);
    int have = hx_gen_load_ref(s->st, ref_id, s->gen_setup, s->gen_prompts.n, &s->gen_ref, err);
    if (have) return have < 0 ? have : 0;
    if (s->o.cache_read_only)
        return qp_fail(err, QP_ENOENT, "the reference of run %lld in '%s' has no continuations of '%s' (generate them "
                       "with 'qprobe sweep --reference-only')", (long long)s->run_id, s->o.db_path, s->gen_setup);
    if ((rc = hx_study_ref(s, err))) return rc;
    struct hx_progress prog;
    void (*fn)(void *, int, int, int64_t);
    void *ctx;
    hx_progress_maybe(s, &prog, "reference generate", &fn, &ctx);
    rc = hx_gen_run(s->ref, s->m->tok, &s->gen_prompts, g, s->o.n_threads, fn, ctx, &s->gen_ref, err);
    if (fn) hx_progress_end(&prog);
    int64_t stored = 0;
    if (!rc)
        rc = hx_store_query_i64(s->st, err, &stored, NULL,
                                "SELECT count(*) FROM metric WHERE variant_id = ? AND suite = 'gen'", "i", ref_id);
    struct met_gen_pair *pairs = rc ? NULL : calloc((size_t)s->gen_prompts.n, sizeof *pairs);
    double *scratch = rc ? NULL : calloc((size_t)s->gen_prompts.n, sizeof *scratch);
    if (!rc && (!pairs || !scratch)) rc = qp_fail(err, QP_ENOMEM, "out of memory");
    if (!rc) rc = hx_store_begin(s->st, err);
    if (!rc) rc = hx_gen_store(s->st, ref_id, s->gen_setup, s->m->tok, &s->gen_prompts, &s->gen_ref, NULL, err);
    if (!rc && !stored) {
        struct met_gen_summary sum; // the reference against itself: its own loop, distinct, EOS, NLL
        hx_gen_compare(&s->gen_ref, &s->gen_ref, s->gen_ref.nll_self, g->k, pairs);
        met_gen_summarize(pairs, s->gen_prompts.n, g->n_tokens, scratch, &sum);
        rc = hx_gen_store_summary(s->st, ref_id, &sum, g, &s->gen_ref, 1, err);
    }
    if (!rc) rc = hx_store_commit(s->st, err);
    hx_store_rollback(s->st);
    free(pairs);
    free(scratch);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// Open / close

// The text (one trailing newline dropped, as llama.cpp and `qprobe ppl` do), the model, its
// tokens and the reference engine. *text is the caller's to free.
static int hx_study_load(struct hx_study *s, char **text, size_t *len, char *err) {
    const struct hx_study_opts *o = &s->o;
    char msg[QP_ERRLEN];
    int rc = hx_read_text(o->text_path, text, len, err);
    if (!rc) rc = hx_model_open(o->model_path, o->tok_path, &s->m, err);
    if (rc) return rc;
    if (!s->m->tok) return qp_fail(err, QP_EINVAL, "cannot use '%s': no tokenizer (give one with -z)", o->model_path);
    if (*len > 0 && (*text)[*len - 1] == '\n') (*len)--;
    if (hx_tok_encode(s->m->tok, *text, *len, HX_TOK_ADD_BOS | HX_TOK_SPACE_PREFIX, &s->tokens, &s->n_tokens))
        return qp_fail(err, QP_ENOMEM, "out of memory tokenizing '%s'", o->text_path);
    if (hx_ppl_n_chunks(o->protocol, s->n_tokens, o->ctx) < 1)
        return qp_fail(err, QP_EINVAL, "cannot use '%s': %zu tokens, fewer than one window of %d", o->text_path,
                       s->n_tokens, o->ctx);
    s->bos = hx_tok_bos_added(s->m->tok); // -1: the vocabulary adds no BOS
    if ((rc = kn_engine_create(&s->m->w, NULL, &s->ref, msg)))
        return qp_fail(err, rc == QP_ENOMEM ? rc : QP_ENOTSUP, "cannot run '%s': %s", o->model_path, msg);
    s->ops = kn_engine_ops(s->ref);
    return 0;
}

// The 2-D weights of the model (the classifier once when tied to the embedding); -1 when out of
// memory.
static int64_t hx_study_n_params(struct kn_weights *w) {
    int n = HX_N_WEIGHTS(w->cfg.n_layers);
    struct hx_weight_ref *refs = malloc((size_t)n * sizeof *refs);
    if (!refs) return -1;
    hx_weight_refs(w, refs);
    int64_t n_params = 0;
    for (int i = 0; i < n; i++)
        if (!(i == 1 && w->tied)) n_params += refs[i].t->ne0 * refs[i].t->ne1;
    free(refs);
    return n_params;
}

// The run's identity: the hashes of model, tokenizer, text and calibration text with the shape
// and protocol; finds or creates the run row.
static int hx_study_run_row(struct hx_study *s, size_t text_len, const char *calib_sha, int64_t overlap,
                            char *err) {
    const struct hx_study_opts *o = &s->o;
    const struct kn_config *c = &s->m->w.cfg;
    static const char *const fmt_names[] = {"llama2c", "gguf", "safetensors"};
    char *model_sha = s->model_sha, *tok_sha = s->tok_sha, *text_sha = s->text_sha;
    int rc = hx_hash_model(o->model_path, model_sha, err);
    if (!rc) rc = qp_sha256_file(o->text_path, text_sha, err);
    if (!rc && o->tok_path) rc = qp_sha256_file(o->tok_path, tok_sha, err);
    if (rc) return rc;
    if (!o->tok_path) memcpy(tok_sha, model_sha, 65); // the model carries its tokenizer
    int64_t n_params = hx_study_n_params(&s->m->w);
    if (n_params < 0) return qp_fail(err, QP_ENOMEM, "out of memory");
    struct hx_chunk ch0 = hx_chunk_of(o->protocol, s->n_tokens, o->ctx, 0);
    int n_chunks = hx_ppl_n_chunks(o->protocol, s->n_tokens, o->ctx);
    if (o->max_chunks > 0) n_chunks = QP_MIN(n_chunks, o->max_chunks);
    char cpu[256], flags[128], kernels[600], ops_kernels[512];
    snprintf(cpu, sizeof cpu, "%s; %s", kn_cpu()->model, kn_cpu_flags(flags, sizeof flags));
    const struct kn_qtype *q8 = kn_qtype_for(KN_Q4_0);
    snprintf(kernels, sizeof kernels, "%s; act=q8 %s", kn_engine_kernels(s->ref, ops_kernels, sizeof ops_kernels),
             q8 ? q8->isa : "none");
    struct hx_run_info ri = {
        .label = o->label, .model_path = o->model_path, .model_sha256 = model_sha,
        .model_format = fmt_names[s->m->format], .arch = kn_arch_name(c->arch), .dim = c->dim, .hidden_dim = c->hidden_dim,
        .n_layers = c->n_layers, .n_heads = c->n_heads, .n_kv_heads = c->n_kv_heads, .vocab = c->vocab_size,
        .seq_len = c->seq_len, .n_params = n_params,
        .tokenizer = o->tok_path ? o->tok_path : "(model)", .tokenizer_sha256 = tok_sha,
        .text_path = o->text_path, .text_sha256 = text_sha, .text_bytes = (int64_t)text_len,
        .text_tokens = (int64_t)s->n_tokens, .protocol = hx_protocol_name(o->protocol), .ctx = o->ctx,
        .stride = o->ctx, .score_from = ch0.first, .score_to = ch0.last, .bos = s->bos, .chunks = n_chunks,
        .isa = kn_engine_ops(s->ref)->name, .gemm = kn_gemm_name(kn_engine_gemm(s->ref)), .cpu = cpu,
        .kernels = kernels, .threads = o->n_threads, .config = o->config_json, .calib_path = o->calib_path,
        .calib_sha256 = calib_sha, .calib_overlap_bytes = overlap};
    int created;
    return hx_store_run_get(s->st, &ri, &s->run_id, &created, err);
}

// The reference cache of this run: opened when it is there and whole, else built by one reference
// pass (a foreign, truncated or corrupt file is named in one line and replaced), or refused when
// this study may only read it (a shard, cache_read_only).
static int hx_study_cache(struct hx_study *s, int want_act, char *err) {
    const struct hx_study_opts *o = &s->o;
    if (o->refcache_dir) snprintf(s->rc_dir, sizeof s->rc_dir, "%s", o->refcache_dir);
    else hx_refcache_dir_for(o->db_path, s->rc_dir, sizeof s->rc_dir);
    int n_chunks = hx_ppl_n_chunks(o->protocol, s->n_tokens, o->ctx);
    if (o->max_chunks > 0) n_chunks = QP_MIN(n_chunks, o->max_chunks);
    s->rc_id = (struct hx_refcache_id){.model_sha256 = s->model_sha, .tokenizer_sha256 = s->tok_sha,
                                       .text_sha256 = s->text_sha, .gemm = kn_gemm_name(kn_engine_gemm(s->ref)),
                                       .protocol = o->protocol, .ctx = o->ctx, .bos = s->bos, .n_chunks = n_chunks,
                                       .layer_chunks = o->layer_chunks, .n_tokens = s->n_tokens};
    int rc = hx_refcache_open(s->rc_dir, &s->rc_id, &s->m->w.cfg, &s->rc, err);
    if (rc == 1) return 0;
    if (o->cache_read_only)
        return rc < 0 ? rc
                      : qp_fail(err, QP_ENOENT, "no reference cache for this run in '%s': run 'qprobe sweep "
                                "--reference-only' first, or give --build-reference", s->rc_dir);
    if (rc < 0) fprintf(stderr, "qprobe: %s; rebuilding it\n", err); // even when quiet: a warning
    struct hx_refcache_build b = {.ref = s->ref, .tokens = s->tokens, .n_tokens = s->n_tokens,
                                  .n_threads = o->n_threads, .quiet = o->quiet, .stop = o->stop};
    struct kn_probe act = {hx_act_probe_fn, &s->act, NULL};
    if (want_act && hx_act_chunks(s) > 0) { // the reference's activation statistics on the way
        hx_act_close(s);
        if ((rc = hx_act_open(s, err))) return rc;
        b.extra = &act;
        b.extra_chunks = hx_act_chunks(s);
    }
    struct hx_progress prog;
    hx_progress_maybe(s, &prog, "reference", &b.progress, &b.progress_ctx);
    rc = hx_refcache_build(s->rc_dir, &s->rc_id, &b, &s->rc, err);
    if (b.progress) hx_progress_end(&prog);
    s->act_done = !rc && b.extra && hx_refcache_built(s->rc); // (not when another process built it)
    return rc;
}

// The reference's part of the run: its cache, its row (stored when the run is new), its task
// results and continuations; then the reference engine is released: variants run alone.
static int hx_study_reference(struct hx_study *s, char *err) {
    int64_t ref_id = 0;
    int have_ref = hx_store_variant_find(s->st, s->run_id, "reference", &ref_id, err), rc = 0;
    if (have_ref < 0) return have_ref;
    if (!have_ref && s->o.cache_read_only)
        return qp_fail(err, QP_ENOENT, "run %lld of '%s' has no reference yet: give --reference-db with the "
                       "database of 'qprobe sweep --reference-only'", (long long)s->run_id, s->o.db_path);
    rc = hx_study_cache(s, !have_ref, err);
    if (!rc && !have_ref) {
        rc = hx_store_reference(s, err);
        if (!rc)
            rc = hx_store_query_i64(s->st, err, &ref_id, NULL,
                                    "SELECT id FROM variant WHERE run_id = ? AND is_reference = 1", "i", s->run_id);
    }
    if (!rc && s->o.n_tasks > 0) rc = hx_study_tasks_open(s, ref_id, err);
    if (!rc) rc = hx_study_gen_open(s, ref_id, err);
    s->ref_id = ref_id;
    hx_study_ref_release(s);
    return rc;
}

int hx_study_open(const struct hx_study_opts *o, struct hx_study **out, char *err) {
    *out = NULL;
    struct hx_study *s = calloc(1, sizeof *s);
    if (!s) return qp_fail(err, QP_ENOMEM, "out of memory");
    s->o = *o;
    char *text = NULL, calib_sha[65];
    size_t len = 0;
    int64_t overlap = 0;
    // The database first: one that cannot be written (read-only, locked out, not a study) is
    // refused before the model is loaded and the reference evaluated.
    int rc = hx_store_open(o->db_path, 0, &s->st, err);
    if (!rc) rc = hx_study_load(s, &text, &len, err);
    if (!rc && o->calib_path) {
        struct hx_calib_setup cs = {.path = o->calib_path, .n_seqs = o->calib_seqs, .seq_len = o->calib_len,
                                    .n_threads = o->n_threads, .allow_overlap = o->allow_overlap, .can_allow = 1};
        rc = qp_sha256_file(o->calib_path, calib_sha, err);
        if (!rc) rc = hx_calib_prepare(&cs, s->m->tok, s->m->w.cfg.seq_len, o->text_path, text, len, &s->cal,
                                       &overlap, err);
        if (!rc) s->cal->stop = o->stop; // QAT polls it (hx_qat.h)
    }
    if (!rc) rc = hx_study_run_row(s, len, o->calib_path ? calib_sha : NULL, overlap, err);
    if (!rc) rc = hx_study_reference(s, err);
    free(text);
    if (rc) {
        hx_study_close(s);
        return rc;
    }
    *out = s;
    return 0;
}

void hx_study_close(struct hx_study *s) {
    if (!s) return;
    for (int k = 0; k < s->o.n_tasks; k++) {
        if (s->suites) task_suite_destroy(s->suites[k]);
        if (s->ref_task) task_result_destroy(s->ref_task[k]);
    }
    free(s->suites);
    free(s->ref_task);
    hx_gen_prompts_free(&s->gen_prompts);
    hx_gen_conts_free(&s->gen_ref);
    hx_calib_destroy(s->cal);
    hx_store_close(s->st);
    hx_refcache_close(s->rc);
    if (s->m) hx_act_close(s);
    kn_engine_destroy(s->ref);
    free(s->tokens);
    hx_model_close(s->m);
    free(s);
}

// ---------------------------------------------------------------------------------------------
// One variant

// Grid collapse is measured on at most this many weights per tensor (whole rows from the top):
// enough for stable shares, and bounded for 7B-class tensors.
#define HX_GRID_MAX_WEIGHTS (1 << 22)

static int hx_grid_cb(void *ctx, const struct qz_group *g) {
    return met_grid_add(ctx, g->x, g->codes, g->dq, g->n, g->lo, g->hi, NULL);
}

// Per-tensor weight error of the quantized model against the source (rmse and relative
// Frobenius error) and, where the format has integer codes, its grid collapse; for the
// embedding and the classifier also the rows that became (near-)duplicates. Table grid_stat,
// code histograms in table histogram.
static int hx_store_weight_error(struct hx_study *s, int64_t vid, struct kn_weights *qw,
                                 const struct qz_variant *v, char *err) {
    int L = qw->cfg.n_layers, n = HX_N_WEIGHTS(L), rc = 0;
    struct hx_weight_ref *src = malloc((size_t)n * sizeof *src), *dst = malloc((size_t)n * sizeof *dst);
    float *oa = NULL, *ob = NULL; // fp32 copies of the two tensors, reused from tensor to tensor
    size_t ca = 0, cb = 0;
    if (!src || !dst) rc = qp_fail(err, QP_ENOMEM, "out of memory");
    if (!rc) {
        hx_weight_refs(&s->m->w, src);
        hx_weight_refs(qw, dst);
    }
    for (int i = 0; i < n && !rc; i++) {
        const float *a, *b;
        const struct kn_tensor *t = src[i].t;
        if (hx_tensor_f32_buf(t, &a, &oa, &ca) || hx_tensor_f32_buf(dst[i].t, &b, &ob, &cb)) {
            rc = qp_fail(err, QP_ENOMEM, "cannot read tensor %s", src[i].name);
            break;
        }
        struct met_err e;
        struct met_err_result r;
        met_err_init(&e);
        met_err_add(&e, a, b, (int)t->ne1, (int)t->ne0);
        met_err_finish(&e, &r);
        double rmse = r.n ? sqrt(e.sse / (double)r.n) : 0.0;
        char format[512];
        struct qz_base base;
        int n_codes = -1;
        if (v) {
            hx_tensor_base(v, src[i].name, &s->m->w, t->ne0, &base);
            qz_base_print(&base, format, sizeof format);
            n_codes = s->o.grid ? qz_codes_n(&base) : -1;
        } else {
            snprintf(format, sizeof format, "%s", kn_type_info(dst[i].t->type)->name);
        }
        struct met_grid g = {0};
        int have_grid = 0;
        if (n_codes > 0) {
            int64_t rows = QP_MIN(t->ne1, QP_MAX(1, HX_GRID_MAX_WEIGHTS / t->ne0));
            if ((rc = met_grid_init(&g, n_codes))) rc = qp_fail(err, rc, "out of memory");
            else if ((rc = qz_codes_walk(&base, a, rows, t->ne0, hx_grid_cb, &g, err))) rc = qp_fail(err, rc, "grid of %s: %s", src[i].name, err);
            else have_grid = 1;
        }
        struct met_vec_collapse vc;
        int have_vc = 0;
        if (!rc && s->o.grid && src[i].layer < 0) {
            char msg[QP_ERRLEN];
            if (met_vec_collapse(s->ops, a, b, t->ne1, t->ne0, MET_NEAR_AUTO, &vc, msg) == 0) have_vc = 1;
        }
        if (!rc)
            rc = hx_store_exec(s->st, err,
                               "INSERT INTO grid_stat (variant_id, tensor, format, n_codes, groups, weights,"
                               " distinct_inputs, codes_used_mean, codes_used_min, collisions, zeroed, clipped,"
                               " entropy_bits, rmse, rel_err, identical_rows, near_duplicate_rows)"
                               " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                               "ittddiddddddddddd", vid, src[i].name, format, have_grid ? (double)n_codes : NAN,
                               have_grid ? (double)g.groups : NAN, (int64_t)(t->ne0 * t->ne1),
                               have_grid ? (double)g.distinct_inputs : NAN, have_grid ? met_grid_mean_codes(&g) : NAN,
                               have_grid ? (double)g.min_codes : NAN, have_grid ? (double)g.collisions : NAN,
                               have_grid ? (double)g.zeroed : NAN, have_grid ? (double)g.clipped : NAN,
                               have_grid ? met_grid_entropy_bits(&g) : NAN, rmse, r.rel_err,
                               have_vc ? (double)vc.exact_new : NAN, have_vc ? (double)vc.near_new : NAN);
        for (int c = 0; have_grid && !rc && c < n_codes; c++)
            if (g.code_hist[c])
                rc = hx_store_exec(s->st, err,
                                   "INSERT INTO histogram (run_id, variant_id, kind, subject, bin, lo, hi, count)"
                                   " VALUES (?,?,'codes',?,?,?,?,?)",
                                   "iitIddi", s->run_id, vid, src[i].name, c, (double)c, (double)(c + 1), g.code_hist[c]);
        if (have_grid || n_codes > 0) met_grid_deinit(&g);
        // The source's pages go again (one model in memory); unless the variant runs on them.
        if (t->data != dst[i].t->data) hx_release_source(t->data, kn_row_bytes(t->type, t->ne0) * (size_t)t->ne1);
    }
    qp_free(oa);
    qp_free(ob);
    free(src);
    free(dst);
    return rc;
}

static int hx_store_dist(struct hx_store *st, int64_t vid, const struct met_dist_summary *d, char *err) {
    int64_t n = d->n;
    struct hx_metric_row m[11 + 2 * MET_PCT_N] = {
        {"ppl", "ppl", d->ppl_var, d->ppl_var_unc, n},       {"ppl", "nll", d->nll_var, d->nll_var_unc, n},
        {"ppl", "ppl_ref", d->ppl_ref, d->ppl_ref_unc, n},   {"ppl", "ln_ratio", d->ln_ratio, d->ln_ratio_unc, n},
        {"ppl", "ratio", d->ppl_ratio, d->ppl_ratio_unc, n}, {"ppl", "diff", d->ppl_diff, d->ppl_diff_unc, n},
        {"ppl", "nll_cor", d->nll_cor, NAN, n},              {"kld", "mean", d->kld_mean, d->kld_unc, n},
        {"dp", "mean", d->dp_mean, d->dp_unc, n},            {"dp", "rms", d->dp_rms, d->dp_rms_unc, n},
        {"top1", "agreement", d->same_top, d->same_top_unc, n}};
    for (int k = 0; k < MET_PCT_N; k++) {
        m[11 + 2 * k] = (struct hx_metric_row){"kld", met_pct_name[k], d->kld_pct[k], NAN, n};
        m[12 + 2 * k] = (struct hx_metric_row){"dp", met_pct_name[k], d->dp_pct[k], NAN, n};
    }
    return hx_store_metric_rows(st, vid, m, (int)QP_ARRAY_LEN(m), err);
}

static int hx_store_layers(struct hx_store *st, int64_t vid, const struct kn_config *c,
                           const struct hx_lockstep_result *lr, char *err) {
    int rc = 0;
    for (int l = 0; l <= lr->n_layers && !rc; l++)
        for (int site = 0; site < KN_SITE_COUNT && !rc; site++) {
            if ((l == lr->n_layers) != (site == KN_SITE_LOGITS)) continue;
            if (!kn_site_used(c, (enum kn_site)site)) continue; // the family has no such site
            for (int kind = 0; kind < 2 && !rc; kind++) {
                if (kind == 1 && site == KN_SITE_LOGITS) continue;
                const struct met_err *e = (kind ? lr->loc : lr->acc) + hx_layer_index(l, (enum kn_site)site);
                struct met_err_result r;
                met_err_finish(e, &r);
                rc = hx_store_exec(st, err,
                                   "INSERT INTO layer_error (variant_id, layer, site, kind, rel_err, cosine,"
                                   " row_cosine, rows) VALUES (?,?,?,?,?,?,?,?)",
                                   "iIttdddi", vid, l, kn_site_name((enum kn_site)site),
                                   kind ? "local" : "accumulated", r.rel_err, r.cos, r.row_cos_mean, r.rows);
            }
        }
    return rc;
}

// Every scored token (with --keep-tokens), in the protocol's order, with the token it predicts.
static int hx_store_tokens(struct hx_study *s, int64_t vid, const struct hx_lockstep_result *lr, char *err) {
    size_t i = 0;
    for (int ci = 0; ci < lr->n_chunks; ci++) {
        struct hx_chunk ch = hx_chunk_of(s->o.protocol, s->n_tokens, s->o.ctx, ci);
        for (int j = ch.first; j <= ch.last && i < lr->n_tokens; j++, i++) {
            const struct met_dist_tok *t = &lr->tokens[i];
            int rc = hx_store_exec(s->st, err,
                                   "INSERT INTO token (variant_id, pos, token, nll, nll_ref, kld, dp, top1_same)"
                                   " VALUES (?,?,?,?,?,?,?,?)",
                                   "iiIddddI", vid, (int64_t)i, s->tokens[ch.start + j + 1], t->nll_var, t->nll_ref,
                                   t->kld, t->dp, t->same_top);
            if (rc) return rc;
        }
    }
    return 0;
}

// Isolated sensitivity, per layer (and, exact only, per tensor): how much KLD the variant's
// quantization of that layer alone costs. Rank 1 = the most harmful.
//  - exact (opt-in, sens_chunks > 0): the reference with only layer l (or one tensor of it) taken
//    from the quantized model, its mean KLD against the cache over sens_chunks chunks: one full
//    pass per layer (and tensor);
//  - estimate (the default, free): the variant's own mean KLD split among the layers in
//    proportion to their local error energy at the residual stream leaving the block,
//    w_l = |y_l(var, x_ref) - y_l(ref)|^2 / |y_l(ref)|^2 from the local pass (the squared local
//    relative error at resid_out): the relative perturbation a layer adds, given exact input.
//    Its agreement with the exact ranking is measured in docs/SWEEP.md ("Sensitivity").
struct hx_sens {
    int layer, tensor; // tensor -1: the whole layer
    double kld, kld_unc, top1;
    int64_t n;
};

static int hx_sens_cmp(const void *a, const void *b) {
    const struct hx_sens *x = a, *y = b;
    if (x->kld != y->kld) return x->kld > y->kld ? -1 : 1;
    if (x->layer != y->layer) return x->layer - y->layer;
    return x->tensor - y->tensor;
}

// sv[0..n) ranked (layers among layers, each layer's tensors among all tensors) and stored with
// method; *worst: the rank-1 layer.
static int hx_sens_store(struct hx_study *s, int64_t vid, struct hx_sens *sv, int n, const char *method, int *worst,
                         char *err) {
    static const char *what[] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};
    qsort(sv, (size_t)n, sizeof *sv, hx_sens_cmp);
    int rank_l = 0, rank_t = 0, rc = 0;
    *worst = -1;
    for (int i = 0; i < n && !rc; i++) {
        int rank = sv[i].tensor < 0 ? ++rank_l : ++rank_t;
        if (sv[i].tensor < 0 && rank == 1) *worst = sv[i].layer;
        rc = hx_store_exec(s->st, err,
                           "INSERT INTO sensitivity (variant_id, layer, tensor, kld_mean, kld_stderr, top1,"
                           " tokens, rank, method) VALUES (?,?,?,?,?,?,?,?,?)",
                           "iItdddiIt", vid, sv[i].layer, sv[i].tensor < 0 ? "" : what[sv[i].tensor], sv[i].kld,
                           sv[i].kld_unc, sv[i].top1, sv[i].n, rank, method);
    }
    return rc;
}

static int hx_sensitivity_estimate(struct hx_study *s, int64_t vid, const struct hx_lockstep_result *lr,
                                   double kld_mean, int *worst, char *err) {
    int L = lr->n_layers;
    struct hx_sens *sv = calloc((size_t)L, sizeof *sv);
    if (!sv) return qp_fail(err, QP_ENOMEM, "out of memory");
    double total = 0;
    for (int l = 0; l < L; l++) {
        const struct met_err *e = &lr->loc[hx_layer_index(l, KN_SITE_RESID_OUT)];
        sv[l] = (struct hx_sens){l, -1, e->rr > 0 ? e->sse / e->rr : 0, NAN, NAN, e->rows};
        total += sv[l].kld;
    }
    for (int l = 0; l < L; l++) sv[l].kld = total > 0 ? kld_mean * sv[l].kld / total : 0;
    int rc = hx_sens_store(s, vid, sv, L, "estimate", worst, err);
    free(sv);
    return rc;
}

// The model with only layer l (t < 0) or its tensor t taken from qw, in w (layers: room for
// n_layers).
static void hx_sens_model(const struct kn_weights *src, const struct kn_weights *qw, int l, int t,
                          struct kn_layer_weights *layers, struct kn_weights *w) {
    *w = *src;
    memcpy(layers, src->layers, (size_t)src->cfg.n_layers * sizeof *layers);
    w->layers = layers;
    if (t < 0) {
        layers[l] = qw->layers[l];
        return;
    }
    struct kn_tensor *d[] = {&layers[l].wq, &layers[l].wk, &layers[l].wv, &layers[l].wo,
                             &layers[l].w_gate, &layers[l].w_up, &layers[l].w_down};
    const struct kn_layer_weights *q = &qw->layers[l];
    const struct kn_tensor *from[] = {&q->wq, &q->wk, &q->wv, &q->wo, &q->w_gate, &q->w_up, &q->w_down};
    *d[t] = *from[t];
}

// Exact sensitivity, computed before the variant's transaction (it runs the engine once per
// layer or tensor), so that the write lock is held only while rows are written. *out: n entries,
// malloc'd, unsorted (hx_sens_store ranks them).
static int hx_sensitivity(struct hx_study *s, const struct kn_weights *qw, const struct kn_engine_opts *eo,
                          struct hx_sens **out, int *n_out, char *err) {
    int L = s->m->w.cfg.n_layers, per = s->o.sens_tensors ? 8 : 1, rc = 0, n = 0;
    struct hx_sens *sv = calloc((size_t)L * per, sizeof *sv);
    struct kn_layer_weights *layers = malloc((size_t)L * sizeof *layers);
    if (!sv || !layers) rc = qp_fail(err, QP_ENOMEM, "out of memory");
    struct hx_lockstep_opts lo = {.protocol = s->o.protocol, .ctx = s->o.ctx, .n_threads = s->o.n_threads,
                                  .bos = s->bos, .max_chunks = s->o.sens_chunks, .stop = s->o.stop};
    for (int l = 0; l < L && !rc; l++)
        for (int t = -1; t < (s->o.sens_tensors ? 7 : 0) && !rc; t++) {
            struct kn_weights w;
            hx_sens_model(&s->m->w, qw, l, t, layers, &w);
            struct kn_engine *e = NULL;
            struct hx_lockstep_result lr;
            if ((rc = kn_engine_create_opts(&w, eo, &e, err))) break;
            rc = hx_refeval_run(s->rc, e, s->tokens, s->n_tokens, &lo, &lr, err);
            kn_engine_destroy(e);
            hx_model_release_pages(s->m); // the source's layers went through this pass
            if (rc) break;
            struct met_dist_summary d;
            met_dist_finish(lr.dist, &d);
            sv[n++] = (struct hx_sens){l, t, d.kld_mean, d.kld_unc, d.same_top, d.n};
            hx_lockstep_result_free(&lr);
        }
    free(layers);
    if (rc) {
        free(sv);
        sv = NULL;
        n = 0;
    }
    *out = sv;
    *n_out = n;
    return rc;
}

// "file:PATH[;act=q8]": an already quantized model file.
static int hx_parse_file_spec(const char *spec, char *path, size_t cap, int *act_q8) {
    const char *p = spec + 5, *semi = strrchr(p, ';');
    *act_q8 = 0;
    size_t n = strlen(p);
    if (semi && strcmp(semi, ";act=q8") == 0) {
        *act_q8 = 1;
        n = (size_t)(semi - p);
    } else if (semi && strcmp(semi, ";act=f32") == 0) {
        n = (size_t)(semi - p);
    }
    if (n == 0 || n >= cap) return QP_EINVAL;
    memcpy(path, p, n);
    path[n] = 0;
    return 0;
}

// One variant in the making: its weights (a quantized model, or a file's own), what it costs in
// storage, and what it gave.
struct hx_vrun {
    const char *spec;          // canonical (the outcome's)
    struct qz_variant *v;      // NULL for a file: variant
    struct hx_model *fm;       // the file of a file: variant
    struct hx_quant_model *qm; // the quantized model of a spec
    const struct kn_weights *w;
    struct kn_engine_opts eo;  // the options the variant runs with
    double bpw, quant_seconds;
    int64_t bytes, n_weights;
    struct kn_engine *e;
    struct hx_lockstep_result lr;
    struct met_dist_summary d;
    struct hx_calib_report crep;
    struct task_result **tasks; // (o.n_tasks)
    struct hx_gen_conts gen;    // the variant's continuations (gen_on)
    struct met_gen_pair *gen_pairs; // (prompts) against the reference's
    struct met_gen_summary gen_sum;
};

static void hx_vrun_free(struct hx_study *s, struct hx_vrun *r) {
    hx_calib_report_clear(&r->crep);
    for (int k = 0; r->tasks && k < s->o.n_tasks; k++) task_result_destroy(r->tasks[k]);
    free(r->tasks);
    hx_gen_conts_free(&r->gen);
    free(r->gen_pairs);
    hx_lockstep_result_free(&r->lr);
    kn_engine_destroy(r->e);
    hx_quant_model_destroy(r->qm);
    hx_model_close(r->fm);
    qz_variant_destroy(r->v);
}

// A file: variant: the file opened, its shape checked against the reference's (here, not only
// in the lockstep, so that the message names the file), its bits per weight as stored.
static int hx_vrun_file(struct hx_study *s, const char *spec, struct hx_vrun *r, char *err) {
    char path[4096], msg[QP_ERRLEN];
    if (hx_parse_file_spec(spec, path, sizeof path, &r->eo.act_q8))
        return qp_fail(err, QP_EINVAL, "bad variant '%s': expected file:PATH[;act=q8]", spec);
    int rc = hx_model_open(path, NULL, &r->fm, msg);
    if (rc) return qp_fail(err, rc == QP_ENOMEM ? rc : QP_EINVAL, "%s", msg);
    r->w = &r->fm->w;
    const struct kn_config *a = &s->m->w.cfg, *b = &r->w->cfg;
    if (b->dim != a->dim || b->hidden_dim != a->hidden_dim || b->n_layers != a->n_layers ||
        b->n_heads != a->n_heads || b->n_kv_heads != a->n_kv_heads || b->vocab_size != a->vocab_size)
        return qp_fail(err, QP_EINVAL,
                       "cannot use '%s': the variant's shape differs from the reference's (dim %d, hidden %d, "
                       "layers %d, heads %d/%d, vocab %d; the reference has %d, %d, %d, %d/%d, %d)",
                       path, b->dim, b->hidden_dim, b->n_layers, b->n_heads, b->n_kv_heads, b->vocab_size, a->dim,
                       a->hidden_dim, a->n_layers, a->n_heads, a->n_kv_heads, a->vocab_size);
    int n = HX_N_WEIGHTS(b->n_layers);
    struct hx_weight_ref *refs = malloc((size_t)n * sizeof *refs);
    if (!refs) return qp_fail(err, QP_ENOMEM, "out of memory");
    hx_weight_refs(&r->fm->w, refs);
    r->bytes = r->n_weights = 0;
    for (int i = 0; i < n; i++) {
        r->bytes += (int64_t)kn_row_bytes(refs[i].t->type, refs[i].t->ne0) * refs[i].t->ne1;
        r->n_weights += refs[i].t->ne0 * refs[i].t->ne1;
    }
    free(refs);
    r->bpw = 8.0 * (double)r->bytes / (double)r->n_weights;
    return 0;
}

// A spec: the model quantized under it (with the study's calibration when it needs one).
static int hx_vrun_quantize(struct hx_study *s, struct hx_vrun *r, char *err) {
    if (hx_variant_needs_calib(r->v) && !s->cal)
        return qp_fail(err, QP_EINVAL, "variant '%s' needs calibration text (--calib FILE)", r->spec);
    double t0 = qp_now();
    char label[700];
    snprintf(label, sizeof label, "%s%s quantize", s->prefix, r->spec);
    if (s->cal) s->cal->report = &r->crep, s->cal->progress_label = s->o.quiet ? NULL : label;
    int rc = hx_quant_model_create_calib(&s->m->w, r->v, s->cal, &r->qm, err);
    if (s->cal) s->cal->report = NULL, s->cal->progress_label = NULL;
    if (rc) return rc;
    r->quant_seconds = qp_now() - t0;
    hx_model_release_pages(s->m); // what calibration read of the source (the variant's own kept parts fault back)
    r->w = &r->qm->w;
    hx_quant_model_engine_opts(r->qm, &r->eo);
    r->bpw = r->qm->bits_per_weight;
    r->bytes = (int64_t)r->qm->bytes;
    r->n_weights = r->qm->n_weights;
    return 0;
}

// The variant's continuations and their comparison with the reference's; the reference's NLL of
// them (the step that needs the reference model) comes in hx_study_finish.
static int hx_vrun_generate(struct hx_study *s, struct hx_vrun *r, char *err) {
    if (s->o.stop && *s->o.stop) return qp_fail(err, QP_EINTR, "interrupted");
    const struct hx_gen_prompts *p = &s->gen_prompts;
    char label[700];
    snprintf(label, sizeof label, "%s%s generate", s->prefix, r->spec);
    struct hx_progress prog;
    void (*fn)(void *, int, int, int64_t);
    void *ctx;
    hx_progress_maybe(s, &prog, label, &fn, &ctx);
    int rc = hx_gen_run(r->e, s->m->tok, p, &s->o.gen, s->o.n_threads, fn, ctx, &r->gen, err);
    if (fn) hx_progress_end(&prog);
    double *scratch = calloc((size_t)p->n, sizeof *scratch);
    if (!rc && (!scratch || !(r->gen_pairs = calloc((size_t)p->n, sizeof *r->gen_pairs))))
        rc = qp_fail(err, QP_ENOMEM, "out of memory");
    if (!rc) {
        hx_gen_compare(&s->gen_ref, &r->gen, NULL, s->o.gen.k, r->gen_pairs); // ref_nll: hx_study_finish
        met_gen_summarize(r->gen_pairs, p->n, s->o.gen.n_tokens, scratch, &r->gen_sum);
    }
    free(scratch);
    return rc;
}

// The variant alone over the study's windows against the reference cache, then every task suite.
static int hx_vrun_evaluate(struct hx_study *s, struct hx_vrun *r, char *err) {
    int rc = kn_engine_create_opts(r->w, &r->eo, &r->e, err);
    if (rc) return rc;
    struct hx_lockstep_opts lo = {.protocol = s->o.protocol, .ctx = s->o.ctx, .n_threads = s->o.n_threads,
                                  .bos = s->bos, .max_chunks = s->o.max_chunks,
                                  .layer_chunks = s->o.layer_chunks, .keep_tokens = s->o.keep_tokens,
                                  .stop = s->o.stop};
    struct hx_progress prog;
    char label[600];
    snprintf(label, sizeof label, "%s%s", s->prefix, r->spec);
    hx_progress_maybe(s, &prog, label, &lo.progress, &lo.progress_ctx);
    rc = hx_refeval_run(s->rc, r->e, s->tokens, s->n_tokens, &lo, &r->lr, err);
    if (lo.progress) hx_progress_end(&prog);
    if (rc) return rc;
    met_dist_finish(r->lr.dist, &r->d);
    if (s->o.n_tasks > 0 && !(r->tasks = calloc((size_t)s->o.n_tasks, sizeof *r->tasks)))
        return qp_fail(err, QP_ENOMEM, "out of memory");
    for (int k = 0; k < s->o.n_tasks && !rc; k++) {
        if (s->o.stop && *s->o.stop) rc = qp_fail(err, QP_EINTR, "interrupted");
        else rc = hx_score_suite(s, r->e, k, r->spec, &r->tasks[k], err);
    }
    if (!rc && s->gen_on) rc = hx_vrun_generate(s, r, err);
    return rc;
}

// A variant found stored (how: "" at the start, or how it came to be stored meanwhile): 1 and
// out->skipped under --resume, else refused.
static int hx_vrun_found(struct hx_study *s, const char *spec, int64_t vid, const char *how,
                         struct hx_variant_outcome *out, char *err) {
    if (!s->o.resume)
        return qp_fail(err, QP_EINVAL, "variant '%s' is already stored in run %lld of '%s'%s (use --resume to skip it)",
                       spec, (long long)s->run_id, s->o.db_path, how);
    out->skipped = 1;
    out->variant_id = vid;
    return 1;
}

// Everything of the variant in one transaction (a failure rolls all of it back); the tasks'
// figures also go to out.
static int hx_vrun_store(struct hx_study *s, struct hx_vrun *r, int ord, int64_t *vid,
                         struct hx_variant_outcome *out, char *err) {
    const struct hx_lockstep_result *lr = &r->lr;
    char digest[65]; // before the transaction: hashing a large model takes a while
    hx_weights_digest(r->w, r->eo.act_q8, r->eo.act_int8, r->eo.act_scales, digest);
    struct hx_variant_row row = {.spec = r->spec, .ord = ord, .bits_per_weight = r->bpw, .weight_bytes = r->bytes,
                                 .n_weights = r->n_weights, .quant_seconds = r->v ? r->quant_seconds : NAN,
                                 .eval_seconds = lr->seconds, .tokens = lr->tokens_processed,
                                 .weights_sha256 = digest[0] ? digest : NULL};
    struct hx_sens *sens = NULL;
    int n_sens = 0, rc = s->o.sens_chunks > 0 ? hx_sensitivity(s, r->w, &r->eo, &sens, &n_sens, err) : 0;
    if (!rc) rc = hx_store_begin(s->st, err);
    // Stored meanwhile by another process on the same study (the same spec in the same run):
    // refused as any stored variant is (skipped under --resume), and nothing written twice.
    int64_t other;
    int found = rc ? 0 : hx_store_variant_find(s->st, s->run_id, r->spec, &other, err);
    if (found < 0) rc = found;
    else if (found) {
        hx_store_rollback(s->st);
        free(sens);
        return hx_vrun_found(s, r->spec, other, " by another process while this one evaluated it", out, err);
    }
    if (!rc) rc = hx_store_variant_insert(s->st, s->run_id, &row, vid, err);
    if (!rc) rc = hx_store_dist(s->st, *vid, &r->d, err);
    if (!rc) rc = hx_store_metric(s->st, *vid, "argmax", "distinct_ref", lr->distinct_argmax_ref, NAN, r->d.n, err);
    if (!rc) rc = hx_store_metric(s->st, *vid, "argmax", "distinct_var", lr->distinct_argmax_var, NAN, r->d.n, err);
    if (!rc && lr->acc) rc = hx_store_layers(s->st, *vid, &s->m->w.cfg, lr, err);
    if (!rc && lr->tokens) rc = hx_store_tokens(s, *vid, lr, err);
    if (!rc) rc = hx_store_weight_error(s, *vid, (struct kn_weights *)r->w, r->v, err);
    if (!rc && s->o.sens_chunks > 0) rc = hx_sens_store(s, *vid, sens, n_sens, "exact", &out->worst_layer, err);
    else if (!rc && s->o.sens_estimate && lr->acc) {
        rc = hx_sensitivity_estimate(s, *vid, lr, r->d.kld_mean, &out->worst_layer, err);
        out->worst_estimated = 1;
    }
    for (int i = 0; i < r->crep.n_modules && !rc; i++) { // per-module loss of calibrated methods
        char suite[32];
        snprintf(suite, sizeof suite, "calib:%s", qz_method_name(r->crep.modules[i].method));
        rc = hx_store_metric(s->st, *vid, suite, r->crep.modules[i].name, r->crep.modules[i].loss, NAN, -1, err);
    }
    for (int k = 0; k < s->o.n_tasks && !rc; k++) {
        struct met_paired pair;
        rc = hx_store_task(s, *vid, k, r->tasks[k], s->ref_task[k], &pair, err);
        if (!rc) out->tasks[k] = (struct hx_task_outcome){r->tasks[k]->sum.acc, pair.delta, (int)pair.flips_cw};
    }
    if (!rc && r->gen_pairs)
        rc = hx_gen_store(s->st, *vid, s->gen_setup, s->m->tok, &s->gen_prompts, &r->gen, r->gen_pairs, err);
    if (!rc && r->gen_pairs) rc = hx_gen_store_summary(s->st, *vid, &r->gen_sum, &s->o.gen, &r->gen, 0, err);
    if (!rc) rc = hx_store_commit(s->st, err);
    hx_store_rollback(s->st);
    free(sens);
    return rc;
}

static void hx_vrun_outcome(const struct hx_vrun *r, int64_t vid, struct hx_variant_outcome *out) {
    const struct met_dist_summary *d = &r->d;
    out->variant_id = vid;
    out->bits_per_weight = r->bpw;
    out->ppl = d->ppl_var;
    out->ppl_unc = d->ppl_var_unc;
    out->ppl_ref = d->ppl_ref;
    out->ln_ratio = d->ln_ratio;
    out->ln_ratio_unc = d->ln_ratio_unc;
    out->kld_mean = d->kld_mean;
    out->kld_unc = d->kld_unc;
    out->kld_p99 = d->kld_pct[MET_PCT_99];
    out->same_top = d->same_top;
    out->same_top_unc = d->same_top_unc;
    out->seconds = r->lr.seconds;
    if (r->gen_pairs) {
        out->gen_prompts = r->gen_sum.n;
        out->gen = r->gen_sum;
    }
    out->tokens_per_second = r->lr.seconds > 0 ? (double)r->lr.tokens_processed / r->lr.seconds : NAN;
}

// The variant's canonical spec in out->spec; 1 when it is already stored (skipped under
// --resume, else refused), 0 when it is to be run.
static int hx_vrun_find(struct hx_study *s, struct hx_variant_outcome *out, char *err) {
    int64_t vid;
    int found = hx_store_variant_find(s->st, s->run_id, out->spec, &vid, err);
    if (found <= 0) return found;
    return hx_vrun_found(s, out->spec, vid, "", out, err);
}

int hx_study_variant(struct hx_study *s, const char *spec, int ord, struct hx_variant_outcome *out,
                     char *err) {
    memset(out, 0, sizeof *out);
    out->worst_layer = -1;
    struct hx_vrun r = {.spec = out->spec};
    int rc = 0;
    if (s->o.n_tasks > 0 && !(out->tasks = calloc((size_t)s->o.n_tasks, sizeof *out->tasks)))
        return qp_fail(err, QP_ENOMEM, "out of memory");
    out->n_tasks = s->o.n_tasks;
    if (strncmp(spec, "file:", 5) == 0) {
        snprintf(out->spec, sizeof out->spec, "%s", spec);
        rc = hx_vrun_file(s, spec, &r, err);
    } else if (!(rc = qz_variant_parse(spec, &r.v, err))) {
        qz_variant_print(r.v, out->spec, sizeof out->spec);
    }
    if (!rc) rc = hx_vrun_find(s, out, err);
    if (rc == 0 && r.v) rc = hx_vrun_quantize(s, &r, err);
    if (rc == 0) rc = hx_vrun_evaluate(s, &r, err);
    int64_t vid = 0;
    if (rc == 0) rc = hx_vrun_store(s, &r, ord, &vid, out, err);
    if (rc == 0) hx_vrun_outcome(&r, vid, out);
    if (rc == 0) out->gen_tokens = s->o.gen.n_tokens;
    hx_vrun_free(s, &r);
    return rc < 0 ? rc : 0; // 1: found and skipped
}

// ---------------------------------------------------------------------------------------------
// The end of a study: the reference's NLL of the variants' continuations

// The variants of this run whose continuations have no reference NLL yet: their ids (malloc'd, *n).
static int hx_gen_unscored(struct hx_study *s, int64_t **ids, int *n, char *err) {
    sqlite3 *db = hx_store_db(s->st);
    sqlite3_stmt *q = NULL;
    *ids = NULL;
    *n = 0;
    if (sqlite3_prepare_v2(db, "SELECT DISTINCT g.variant_id FROM gen_item g JOIN variant v ON v.id = g.variant_id"
                               " WHERE v.run_id = ? AND v.is_reference = 0 AND g.setup = ? AND g.ref_nll IS NULL"
                               " ORDER BY g.variant_id", -1, &q, NULL) != SQLITE_OK)
        return qp_fail(err, hx_store_sqlite_code(db), "cannot read '%s': %s", s->o.db_path, sqlite3_errmsg(db));
    sqlite3_bind_int64(q, 1, s->run_id);
    sqlite3_bind_text(q, 2, s->gen_setup, -1, SQLITE_STATIC);
    int rc = 0;
    while (!rc && sqlite3_step(q) == SQLITE_ROW) {
        int64_t *g = realloc(*ids, (size_t)(*n + 1) * sizeof **ids);
        if (!g) rc = qp_fail(err, QP_ENOMEM, "out of memory");
        else (*ids = g)[(*n)++] = sqlite3_column_int64(q, 0);
    }
    sqlite3_finalize(q);
    return rc;
}

// Variant vid's continuations scored by the reference: gen_item.ref_nll and the metrics
// gen/ref_nll and gen/ref_nll_increase, in one transaction. *sum: its summary.
static int hx_gen_score_variant(struct hx_study *s, int64_t vid, struct met_gen_summary *sum, char *err) {
    const struct hx_gen_prompts *p = &s->gen_prompts;
    struct hx_gen_conts c;
    int rc = hx_gen_load_ref(s->st, vid, s->gen_setup, p->n, &c, err); // any variant's rows
    if (rc <= 0) return rc ? rc : qp_fail(err, QP_EFORMAT, "variant %lld has no continuations", (long long)vid);
    double *nll = calloc((size_t)p->n, sizeof *nll), *scratch = calloc((size_t)p->n, sizeof *scratch);
    struct met_gen_pair *pairs = calloc((size_t)p->n, sizeof *pairs);
    rc = nll && scratch && pairs ? hx_gen_score(s->ref, p, &c, s->o.n_threads, nll, err)
                                 : qp_fail(err, QP_ENOMEM, "out of memory");
    if (!rc) {
        hx_gen_compare(&s->gen_ref, &c, nll, s->o.gen.k, pairs);
        met_gen_summarize(pairs, p->n, s->o.gen.n_tokens, scratch, sum);
        rc = hx_store_begin(s->st, err);
    }
    for (int i = 0; i < p->n && !rc; i++)
        rc = hx_store_exec(s->st, err, "UPDATE gen_item SET ref_nll = ? WHERE variant_id = ? AND setup = ? AND prompt = ?",
                           "ditI", nll[i], vid, s->gen_setup, i);
    if (!rc)
        rc = hx_store_exec(s->st, err, "DELETE FROM metric WHERE variant_id = ? AND suite = 'gen' AND name IN"
                           " ('ref_nll', 'ref_nll_increase')", "i", vid);
    if (!rc) rc = hx_store_metric(s->st, vid, "gen", "ref_nll", sum->ref_nll_var, NAN, sum->n, err);
    if (!rc)
        rc = hx_store_metric(s->st, vid, "gen", "ref_nll_increase", sum->ref_nll_var - sum->ref_nll_ref, NAN, sum->n,
                             err);
    if (!rc) rc = hx_store_commit(s->st, err);
    hx_store_rollback(s->st);
    free(nll), free(scratch), free(pairs);
    hx_gen_conts_free(&c);
    return rc;
}

int hx_study_finish(struct hx_study *s, struct hx_variant_outcome *vo, char *err) {
    if (!s->gen_on) return 0;
    int64_t *ids;
    int n, rc = hx_gen_unscored(s, &ids, &n, err);
    if (!rc && n > 0) rc = hx_study_ref(s, err);
    if (!rc && n > 0 && !s->o.quiet)
        fprintf(stderr, "qprobe: the reference scores the continuations of %d variant%s\n", n, n > 1 ? "s" : "");
    for (int i = 0; i < n && !rc; i++) {
        if (s->o.stop && *s->o.stop) rc = qp_fail(err, QP_EINTR, "interrupted");
        struct met_gen_summary sum;
        if (!rc) rc = hx_gen_score_variant(s, ids[i], &sum, err);
        if (!rc && vo && vo->variant_id == ids[i]) vo->gen.ref_nll_var = sum.ref_nll_var;
    }
    free(ids);
    hx_study_ref_release(s);
    return rc;
}

void hx_variant_outcome_clear(struct hx_variant_outcome *o) {
    free(o->tasks);
    o->tasks = NULL;
    o->n_tasks = 0;
}
