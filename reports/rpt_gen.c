// rpt_gen.c — generation table, silent-degradation detector and its evidence (rpt_gen.h).
#include "rpt_gen.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "met_gen.h"
#include "qp.h"
#include "rpt_gate.h"
#include "rpt_study.h"
#include "rpt_table.h"

struct rpt_gen {
    int n_v;
    unsigned char *silent; // (n_v)
    char **why;            // (n_v) the finding's reason, malloc'd for flagged variants
};

void rpt_gen_destroy(struct rpt_gen *g) {
    if (!g) return;
    for (int i = 0; g->why && i < g->n_v; i++) free(g->why[i]);
    free(g->why);
    free(g->silent);
    free(g);
}

int rpt_gen_n_silent(const struct rpt_gen *g) {
    int n = 0;
    for (int i = 0; i < g->n_v; i++) n += g->silent[i];
    return n;
}

// ---------------------------------------------------------------------------------------------
// The table

static void rpt_gen_table(const struct rpt_study *s, const struct rpt_gen *g, struct rpt_table *t) {
    const char *cols[] = {"spec", "#prompts", "#tokens|L", "#median_first_div|median first divergence",
                          "#identical_share|identical %", "#agree_k|agreement in the first K %", "@#k",
                          "#loop_rate|loops %", "#loop_rate_ref|reference loops %", "#distinct_2|distinct-2",
                          "#distinct_2_ref|reference distinct-2", "#eos_rate|EOS %",
                          "#ref_nll|reference NLL of its text", "#ref_nll_ref|reference NLL of its own text",
                          "#tokens_per_second|generated tokens/s", "silent|silent degradation", NULL};
    if (rpt_table_init(t, cols)) return;
    for (int i = 0; i < s->n_v; i++) {
        const struct rpt_variant *v = &s->v[i];
        double n = rpt_metric_get(v, "gen", "prompts", NULL);
        if (!isfinite(n) || rpt_table_row(t) < 0) continue;
        double share = rpt_metric_get(v, "gen", "identical_share", NULL);
        double agree = rpt_metric_get(v, "gen", "agree_k", NULL), k = rpt_metric_get(v, "gen", "k", NULL);
        double loop = rpt_metric_get(v, "gen", "loop_rate", NULL), loop_r = rpt_metric_get(v, "gen", "loop_rate_ref", NULL);
        double eos = rpt_metric_get(v, "gen", "eos_rate", NULL);
        rpt_table_text(t, 0, "%s", v->spec);
        rpt_table_num(t, 1, n, "%.0f");
        rpt_table_num(t, 2, rpt_metric_get(v, "gen", "tokens", NULL), "%.0f");
        rpt_table_num(t, 3, rpt_metric_get(v, "gen", "median_first_div", NULL), "%.1f");
        rpt_table_numtext(t, 4, share, "%.1f", 100 * share);
        rpt_table_numtext(t, 5, agree, isfinite(k) ? "%.1f (K %.0f)" : "%.1f", 100 * agree, k);
        rpt_table_num(t, 6, k, "%.0f");
        rpt_table_numtext(t, 7, loop, "%.1f", 100 * loop);
        rpt_table_numtext(t, 8, loop_r, "%.1f", 100 * loop_r);
        rpt_table_num(t, 9, rpt_metric_get(v, "gen", "distinct_2", NULL), "%.3f");
        rpt_table_num(t, 10, rpt_metric_get(v, "gen", "distinct_2_ref", NULL), "%.3f");
        rpt_table_numtext(t, 11, eos, "%.1f", 100 * eos);
        rpt_table_num(t, 12, rpt_metric_get(v, "gen", "ref_nll", NULL), "%.4f");
        rpt_table_num(t, 13, rpt_metric_get(v, "gen", "ref_nll_ref", NULL), "%.4f");
        rpt_table_num(t, 14, rpt_metric_get(v, "gen", "tokens_per_second", NULL), "%.0f");
        rpt_table_text(t, 15, "%s", g->silent[i] ? "yes" : "");
    }
}

// ---------------------------------------------------------------------------------------------
// The detector

// The limits of spec: the rules' where set, else the defaults (NaN: no limit). L: tokens generated.
struct rpt_gen_limits {
    double ppl_pct, kld, first_div, identical, loop_inc;
};

static void rpt_gen_limits_for(const struct rpt_gate_rules *rules, const char *spec, double L,
                               struct rpt_gen_limits *out) {
    struct rpt_gate_limits lim;
    memset(&lim, 0, sizeof lim);
    if (rules) rpt_gate_rules_for(rules, spec, &lim);
#define RPT_GEN_LIM(rule, dflt) (lim.set[rule] ? lim.limit[rule] : (dflt))
    out->ppl_pct = RPT_GEN_LIM(RPT_GATE_PPL_INCREASE, RPT_GEN_DEFAULT_PPL_PCT);
    out->kld = RPT_GEN_LIM(RPT_GATE_KLD_MEAN, RPT_GEN_DEFAULT_KLD);
    out->first_div = RPT_GEN_LIM(RPT_GATE_FIRST_DIV, L / 4);
    out->identical = RPT_GEN_LIM(RPT_GATE_IDENTICAL, NAN);
    out->loop_inc = RPT_GEN_LIM(RPT_GATE_LOOP_INC, RPT_GEN_DEFAULT_LOOP_INC);
#undef RPT_GEN_LIM
}

// What diverges in v's generation (nothing when it does not): the reasons into why.
static int rpt_gen_diverges(const struct rpt_variant *v, const struct rpt_gen_limits *lim, char *why, size_t cap,
                            size_t *len) {
    double L = rpt_metric_get(v, "gen", "tokens", NULL), n = rpt_metric_get(v, "gen", "prompts", NULL);
    double fd = rpt_metric_get(v, "gen", "median_first_div", NULL), share = rpt_metric_get(v, "gen", "identical_share", NULL);
    double inc = rpt_metric_get(v, "gen", "loop_rate_increase", NULL);
    int bad = 0;
    if (isfinite(fd) && isfinite(lim->first_div) && fd < lim->first_div) {
        rpt_catf(why, cap, len, "its continuations split from the reference's early: median first divergence at "
                    "token %.0f of %.0f (limit %.0f), %.0f of %.0f prompts identical", fd, L, lim->first_div,
                    share * n, n);
        bad = 1;
    } else if (isfinite(share) && isfinite(lim->identical) && share < lim->identical) {
        rpt_catf(why, cap, len, "only %.0f of %.0f continuations are identical to the reference's (%.0f%%, limit "
                    "%.0f%%)", share * n, n, 100 * share, 100 * lim->identical);
        bad = 1;
    }
    if (isfinite(inc) && isfinite(lim->loop_inc) && inc > lim->loop_inc) {
        rpt_catf(why, cap, len, "%sit falls into loops in %.0f%% more prompts than the reference", bad ? "; " : "",
                    100 * inc);
        bad = 1;
    }
    return bad;
}

// Task suites that v flips significantly with acc below the reference's, appended to why.
static int rpt_gen_flips(const struct rpt_study *s, const struct rpt_variant *v, char *why, size_t cap, size_t *len,
                         int after) {
    int n = 0;
    for (int k = 0; k < s->n_tasks && s->ref >= 0; k++) {
        char suite[160];
        snprintf(suite, sizeof suite, "task:%s", s->tasks[k]);
        double p = rpt_metric_get(v, suite, "mcnemar_p", NULL), acc = rpt_metric_get(v, suite, "acc", NULL);
        double ref = rpt_metric_get(&s->v[s->ref], suite, "acc", NULL);
        if (!(p < RPT_GATE_FLIP_ALPHA && acc < ref)) continue;
        rpt_catf(why, cap, len, "%stask `%s` flips significantly (McNemar p = %.3g, %.0f right→wrong, acc %.3f vs "
                    "%.3f)", after || n ? "; " : "", s->tasks[k], p, rpt_metric_get(v, suite, "flips_to_wrong", NULL),
                    acc, ref);
        n++;
    }
    return n;
}

// Decides variant i; on silent degradation the finding's text into g->why[i].
static int rpt_gen_decide(const struct rpt_study *s, const struct rpt_gate_rules *rules, struct rpt_gen *g, int i) {
    const struct rpt_variant *v = &s->v[i];
    double ref_ppl = rpt_metric_get(v, "ppl", "ppl_ref", NULL);
    if (!isfinite(ref_ppl)) ref_ppl = rpt_ref_ppl(s);
    double dppl = 100 * (rpt_metric_get(v, "ppl", "ppl", NULL) / ref_ppl - 1), kld = rpt_metric_get(v, "kld", "mean", NULL);
    struct rpt_gen_limits lim;
    rpt_gen_limits_for(rules, v->spec, rpt_metric_get(v, "gen", "tokens", NULL), &lim);
    if (!(dppl <= lim.ppl_pct && kld <= lim.kld)) return 0; // not harmless (or not measured)
    char why[1400];
    size_t len = 0;
    rpt_catf(why, sizeof why, &len, "`%s`: ΔPPL %+.2f%% (limit %.3g%%), mean KLD %.4g (limit %.3g), but ", v->spec,
                dppl, lim.ppl_pct, kld, lim.kld);
    int gen = rpt_gen_diverges(v, &lim, why, sizeof why, &len);
    int flips = rpt_gen_flips(s, v, why, sizeof why, &len, gen);
    if (!gen && !flips) return 0;
    rpt_catf(why, sizeof why, &len, ".");
    g->silent[i] = 1;
    return (g->why[i] = strdup(why)) ? 0 : QP_ENOMEM;
}

int rpt_gen_build(const struct rpt_study *s, const char *rules_path, struct rpt_table *t,
                  void (*finding)(void *, const char *), void *ctx, struct rpt_gen **out, char *err) {
    *out = NULL;
    struct rpt_gate_rules *rules = NULL;
    int rc = rules_path ? rpt_gate_rules_load(rules_path, &rules, err) : 0;
    if (rc) return rc;
    struct rpt_gen *g = calloc(1, sizeof *g);
    if (g) {
        g->n_v = s->n_v;
        g->silent = calloc((size_t)QP_MAX(s->n_v, 1), 1);
        g->why = calloc((size_t)QP_MAX(s->n_v, 1), sizeof *g->why);
    }
    if (!g || !g->silent || !g->why) rc = qp_fail(err, QP_ENOMEM, "out of memory");
    int any_gen = 0;
    for (int i = 0; i < s->n_v && !rc; i++) {
        if (s->v[i].is_reference) continue;
        any_gen |= isfinite(rpt_metric_get(&s->v[i], "gen", "prompts", NULL));
        if ((rc = rpt_gen_decide(s, rules, g, i))) rc = qp_fail(err, rc, "out of memory");
    }
    int n = rc ? 0 : rpt_gen_n_silent(g);
    if (n) { // a heading, then one sub-item per variant (the page folds long lists)
        char head[400];
        snprintf(head, sizeof head, "Silent degradation in %d variant%s: perplexity and KLD within their limits%s, "
                 "yet free-running generation diverges from the reference's or task answers flip (evidence: "
                 "index.html, \"Silent degradation\"):", n, n == 1 ? "" : "s",
                 rules ? " (the rules' for each spec)" : " (3 % and 0.05 without --rules)");
        finding(ctx, head);
        for (int i = 0; i < s->n_v; i++) {
            if (!g->silent[i]) continue;
            char item[1500];
            snprintf(item, sizeof item, "  - %s", g->why[i]);
            finding(ctx, item);
        }
    }
    if (!rc && any_gen && !n)
        finding(ctx, "Generation: no variant whose perplexity and KLD look harmless diverges in free-running "
                     "generation (table \"Generation\").");
    if (!rc) rpt_gen_table(s, g, t);
    rpt_gate_rules_destroy(rules);
    if (rc) {
        rpt_gen_destroy(g);
        return rc;
    }
    *out = g;
    return 0;
}

// ---------------------------------------------------------------------------------------------
// The evidence

// text[0..split) plain, the rest marked; both HTML-escaped.
static void rpt_gen_split_text(FILE *f, const char *text, size_t split) {
    char *head = strndup(text, split);
    if (head) rpt_html_escape(f, head);
    free(head);
    if (text[split]) {
        fputs("<mark>", f);
        rpt_html_escape(f, text + split);
        fputs("</mark>", f);
    }
}

static int rpt_gen_evidence(const struct rpt_study *s, int i, FILE *f, char *err) {
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(s->db,
                           "SELECT v.prompt, v.first_div, v.prompt_text, r.text, v.text, r.ref_nll, v.ref_nll"
                           " FROM gen_item v JOIN gen_item r ON r.variant_id = ? AND r.setup = v.setup"
                           " AND r.prompt = v.prompt WHERE v.variant_id = ? AND v.first_div IS NOT NULL"
                           " ORDER BY v.first_div, v.prompt LIMIT ?", -1, &q, NULL) != SQLITE_OK)
        return qp_fail(err, QP_EIO, "cannot read '%s': %s", s->path, sqlite3_errmsg(s->db));
    sqlite3_bind_int64(q, 1, s->v[s->ref].id);
    sqlite3_bind_int64(q, 2, s->v[i].id);
    sqlite3_bind_int(q, 3, RPT_GEN_EVIDENCE);
    int step, rows = 0;
    while ((step = sqlite3_step(q)) == SQLITE_ROW) {
        if (!rows++)
            fputs("<table class=\"gen\"><thead><tr><th>prompt</th><th>split at token</th><th>reference</th>"
                  "<th>variant</th></tr></thead><tbody>\n", f);
        const char *prompt = (const char *)sqlite3_column_text(q, 2), *a = (const char *)sqlite3_column_text(q, 3);
        const char *b = (const char *)sqlite3_column_text(q, 4);
        if (!prompt) prompt = "";
        if (!a) a = "";
        if (!b) b = "";
        size_t split = met_gen_common_bytes(a, b);
        fprintf(f, "<tr><td class=\"pre\">%d: ", sqlite3_column_int(q, 0));
        rpt_html_escape(f, prompt);
        fprintf(f, "</td><td class=\"n\">%d</td><td class=\"pre\">", sqlite3_column_int(q, 1));
        rpt_gen_split_text(f, a, split);
        fprintf(f, "<br><span class=\"files\">reference NLL %.3f per token</span></td><td class=\"pre\">",
                sqlite3_column_double(q, 5));
        rpt_gen_split_text(f, b, split);
        if (sqlite3_column_type(q, 6) != SQLITE_NULL)
            fprintf(f, "<br><span class=\"files\">reference NLL %.3f per token</span>", sqlite3_column_double(q, 6));
        fputs("</td></tr>\n", f);
    }
    if (rows) fputs("</tbody></table>\n", f);
    int rc = step == SQLITE_DONE ? 0 : qp_fail(err, QP_EIO, "cannot read '%s': %s", s->path, sqlite3_errmsg(s->db));
    sqlite3_finalize(q);
    return rc;
}

int rpt_gen_write_html(const struct rpt_gen *g, const struct rpt_study *s, FILE *f, char *err) {
    if (!rpt_gen_n_silent(g)) return 0;
    fputs("<h2 id=\"silent\">Silent degradation</h2>\n<p class=\"files\">Variants whose perplexity and KLD look "
          "harmless while their free-running generation diverges from the reference's or task answers flip "
          "(docs/GENERATION.md). Per variant, the prompts where its continuation splits from the reference's "
          "earliest; the shared beginning is plain, the rest <mark>marked</mark>.</p>\n"
          "<style>table.gen td.pre{white-space:pre-wrap;max-width:36em}</style>\n", f);
    int rc = 0;
    for (int i = 0; i < s->n_v && !rc; i++) {
        if (!g->silent[i]) continue;
        fputs("<h3>", f);
        rpt_html_escape(f, s->v[i].spec);
        fputs("</h3>\n<p>", f);
        // The finding without its "`SPEC`: " (the heading names the spec).
        rpt_html_escape(f, g->why[i] + strlen(s->v[i].spec) + 4);
        fputs("</p>\n", f);
        if (s->ref >= 0) rc = rpt_gen_evidence(s, i, f, err);
    }
    return rc;
}
