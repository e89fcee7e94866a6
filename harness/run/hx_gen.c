// hx_gen.c — free-running generation, reference against variant (hx_gen.h).
#include "hx_gen.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "hx_store.h"
#include "hx_text.h"
#include "hx_tokenizer.h"
#include "kn_engine.h"
#include "qp.h"
#include "qp_sha256.h"
#include "qp_utf8.h"

#define HX_GEN_MAX_BATCH 64    // tokens per kn_forward call when a prompt or a scoring runs
#define HX_GEN_SNAP 32         // how far a prompt cut from the text moves to start a word

// ---------------------------------------------------------------------------------------------
// Options

void hx_gen_opts_default(struct hx_gen_opts *o) {
    memset(o, 0, sizeof *o);
    o->n_tokens = 64;
    o->prompt_tokens = HX_GEN_PROMPT_TOKENS;
    o->k = HX_GEN_K;
    o->seed = 1;
}

int hx_gen_parse_spec(const char *s, struct hx_gen_opts *o, char *err) {
    char *end;
    errno = 0;
    long n = strtol(s, &end, 10), l = 0;
    int ok = end != s && *end == ':' && n >= 1 && n <= 100000 && !errno;
    if (ok) {
        const char *p = end + 1;
        l = strtol(p, &end, 10);
        ok = end != p && !*end && l >= 1 && l <= 1 << 20 && !errno;
    }
    if (!ok) return qp_fail(err, QP_EINVAL, "'%s': expected N:L, N prompts (1..100000) of L tokens (>= 1)", s);
    o->n_prompts = (int)n;
    o->n_tokens = (int)l;
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Prompts

void hx_gen_prompts_free(struct hx_gen_prompts *p) {
    for (int i = 0; i < p->n; i++) {
        if (p->tok) free(p->tok[i]);
        if (p->text) free(p->text[i]);
    }
    free(p->tok);
    free(p->n_tok);
    free(p->text);
    free(p->where);
    memset(p, 0, sizeof *p);
}

static int hx_gen_prompts_alloc(struct hx_gen_prompts *p, int n) {
    memset(p, 0, sizeof *p);
    p->tok = calloc((size_t)QP_MAX(n, 1), sizeof *p->tok);
    p->n_tok = calloc((size_t)QP_MAX(n, 1), sizeof *p->n_tok);
    p->text = calloc((size_t)QP_MAX(n, 1), sizeof *p->text);
    p->where = calloc((size_t)QP_MAX(n, 1), sizeof *p->where);
    if (!p->tok || !p->n_tok || !p->text || !p->where) {
        hx_gen_prompts_free(p);
        return QP_ENOMEM;
    }
    return 0;
}

// 1 when token id, following prev, starts a word: its bytes begin with whitespace, or prev's end
// with a newline.
static int hx_gen_word_start(const struct hx_tok *tok, int prev, int id) {
    char a[64], b[64];
    size_t na = hx_tok_piece(tok, prev, id, a, sizeof a), nb = hx_tok_piece(tok, -1, prev, b, sizeof b);
    return (na > 0 && (a[0] == ' ' || a[0] == '\n')) || (nb > 0 && b[nb - 1] == '\n');
}

int hx_gen_prompts_from_text(const int *tokens, size_t n_tokens, int bos, const struct hx_tok *tok,
                             const struct hx_gen_opts *o, struct hx_gen_prompts *out, char *err) {
    int N = o->n_prompts, P = o->prompt_tokens;
    int64_t span = (int64_t)n_tokens - 1 - P - HX_GEN_SNAP;
    if (N < 1 || P < 1 || span < N)
        return qp_fail(err, QP_EINVAL, "the evaluation text (%zu tokens) is too short for %d prompts of %d tokens",
                       n_tokens, N, P);
    if (hx_gen_prompts_alloc(out, N)) return qp_fail(err, QP_ENOMEM, "out of memory");
    snprintf(out->source, sizeof out->source, "text@%dx%d", N, P);
    for (int i = 0; i < N; i++) {
        int64_t off = 1 + (int64_t)i * span / N, end = off + HX_GEN_SNAP;
        while (off < end && !hx_gen_word_start(tok, tokens[off - 1], tokens[off])) off++;
        if (off == end) off = 1 + (int64_t)i * span / N; // no word start nearby: keep the offset
        // End before a word start too (at most P/2 tokens earlier), so that the prompt does not
        // stop inside a word.
        int len = P;
        while (len > P / 2 && !hx_gen_word_start(tok, tokens[off + len - 1], tokens[off + len])) len--;
        if (len == P / 2) len = P;
        int has_bos = bos >= 0, n = len + has_bos;
        size_t tl;
        if (!(out->tok[i] = malloc((size_t)n * sizeof(int))) ||
            hx_tok_decode(tok, tokens + off, (size_t)len, HX_TOK_SPACE_PREFIX, &out->text[i], &tl)) {
            hx_gen_prompts_free(out);
            return qp_fail(err, QP_ENOMEM, "out of memory");
        }
        if (has_bos) out->tok[i][0] = bos;
        memcpy(out->tok[i] + has_bos, tokens + off, (size_t)len * sizeof(int));
        out->n_tok[i] = n;
        out->where[i] = off;
    }
    out->n = N;
    return 0;
}

// Line s[0..n) (number line) as a prompt's text: the line itself, or a JSONL record's "prompt".
// *text malloc'd. QP_EFORMAT with "PATH:LINE: ..." when malformed.
static int hx_gen_line_text(const char *path, int64_t line, const char *s, size_t n, int jsonl, char **text,
                            char *err) {
    if (memchr(s, 0, n)) return qp_fail(err, QP_EFORMAT, "%s:%lld: contains a NUL byte", path, (long long)line);
    if (!qp_utf8_valid(s, n)) return qp_fail(err, QP_EFORMAT, "%s:%lld: is not valid UTF-8", path, (long long)line);
    if (!jsonl) {
        *text = strndup(s, n);
        return *text ? 0 : qp_fail(err, QP_ENOMEM, "out of memory");
    }
    const char *end = NULL;
    cJSON *obj = cJSON_ParseWithLengthOpts(s, n, &end, 0);
    const cJSON *pr = obj ? cJSON_GetObjectItemCaseSensitive(obj, "prompt") : NULL;
    int rc = 0;
    size_t used = obj && end ? (size_t)(end - s) : n;
    while (used < n && strchr(" \t\v\f\r", s[used]) && s[used]) used++;
    if (!obj) rc = qp_fail(err, QP_EFORMAT, "%s:%lld: invalid JSON", path, (long long)line);
    else if (used < n) // as the task reader: one record a line, nothing after it
        rc = qp_fail(err, QP_EFORMAT, "%s:%lld: text after the JSON value", path, (long long)line);
    else if (!cJSON_IsObject(obj)) rc = qp_fail(err, QP_EFORMAT, "%s:%lld: not a JSON object", path, (long long)line);
    else if (!pr) rc = qp_fail(err, QP_EFORMAT, "%s:%lld: missing \"prompt\"", path, (long long)line);
    else if (!cJSON_IsString(pr)) rc = qp_fail(err, QP_EFORMAT, "%s:%lld: \"prompt\" is not a string", path, (long long)line);
    else if (!(*text = strdup(pr->valuestring))) rc = qp_fail(err, QP_ENOMEM, "out of memory");
    cJSON_Delete(obj);
    return rc;
}

// Encodes prompt i's text and checks that it fits the context with the generated tokens.
static int hx_gen_encode_prompt(const char *path, int64_t line, const struct hx_tok *tok, int ctx, int L,
                                struct hx_gen_prompts *p, int i, char *err) {
    const char *t = p->text[i];
    size_t n;
    unsigned flags = HX_TOK_ADD_BOS | (*t ? HX_TOK_SPACE_PREFIX : 0);
    if (hx_tok_encode(tok, t, strlen(t), flags, &p->tok[i], &n)) return qp_fail(err, QP_ENOMEM, "out of memory");
    if (n == 0) return qp_fail(err, QP_EFORMAT, "%s:%lld: the prompt has no token", path, (long long)line);
    if ((int64_t)n + L > ctx)
        return qp_fail(err, QP_EFORMAT,
                       "%s:%lld: the prompt is %zu tokens; with %d generated tokens it needs %lld positions, more "
                       "than the model's context of %d",
                       path, (long long)line, n, L, (long long)n + L, ctx);
    int vocab = hx_tok_n_vocab(tok);
    for (size_t j = 0; j < n; j++)
        if (p->tok[i][j] < 0 || p->tok[i][j] >= vocab)
            return qp_fail(err, QP_EFORMAT, "%s:%lld: token %d outside the vocabulary", path, (long long)line, p->tok[i][j]);
    p->n_tok[i] = (int)n;
    p->where[i] = line;
    return 0;
}

int hx_gen_prompts_read(const char *path, const struct hx_tok *tok, int ctx, const struct hx_gen_opts *o,
                        struct hx_gen_prompts *out, char *err) {
    char *buf = NULL;
    size_t len = 0;
    memset(out, 0, sizeof *out);
    int rc = hx_read_bytes(path, &buf, &len, err);
    if (rc) return rc;
    int cap = 0, jsonl = -1;
    int64_t line = 0;
    for (size_t pos = 0; pos < len && !rc && (o->n_prompts <= 0 || out->n < o->n_prompts);) {
        char *s = buf + pos, *nl = memchr(s, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - s) : len - pos;
        pos += n + (nl ? 1 : 0);
        line++;
        if (n > 0 && s[n - 1] == '\r') n--;
        size_t k = 0;
        while (k < n && s[k] && strchr(" \t\v\f", s[k])) k++; // strchr would match the NUL too
        if (k == n) continue; // blank
        if (jsonl < 0) jsonl = s[k] == '{';
        if (out->n == cap) {
            struct hx_gen_prompts grown;
            cap = cap ? 2 * cap : 16;
            if (hx_gen_prompts_alloc(&grown, cap)) {
                rc = qp_fail(err, QP_ENOMEM, "out of memory");
                break;
            }
            for (int i = 0; i < out->n; i++) {
                grown.tok[i] = out->tok[i], grown.n_tok[i] = out->n_tok[i];
                grown.text[i] = out->text[i], grown.where[i] = out->where[i];
            }
            grown.n = out->n;
            free(out->tok), free(out->n_tok), free(out->text), free(out->where);
            *out = grown;
        }
        int i = out->n++;
        rc = hx_gen_line_text(path, line, s, n, jsonl, &out->text[i], err);
        if (!rc) rc = hx_gen_encode_prompt(path, line, tok, ctx, o->n_tokens, out, i, err);
    }
    if (!rc && out->n == 0)
        rc = qp_fail(err, QP_EFORMAT, "%s:%lld: no prompt in the file (%s)", path, (long long)QP_MAX(line, 1),
                     len ? "only blank lines" : "it is empty");
    if (!rc) {
        char hex[65];
        qp_sha256_hex(buf, len, hex);
        snprintf(out->source, sizeof out->source, "file:%.12s", hex);
    }
    free(buf);
    if (rc) hx_gen_prompts_free(out);
    return rc;
}

void hx_gen_setup(const struct hx_gen_prompts *p, const struct hx_gen_opts *o, char *buf, size_t cap) {
    if (o->temperature > 0)
        snprintf(buf, cap, "%s n=%d L=%d T=%.17g seed=%llu", p->source, p->n, o->n_tokens, o->temperature,
                 (unsigned long long)o->seed);
    else
        snprintf(buf, cap, "%s n=%d L=%d greedy", p->source, p->n, o->n_tokens);
}

// ---------------------------------------------------------------------------------------------
// Continuations

int hx_gen_conts_init(struct hx_gen_conts *c, int n) {
    memset(c, 0, sizeof *c);
    c->tok = calloc((size_t)QP_MAX(n, 1), sizeof *c->tok);
    c->n_tok = calloc((size_t)QP_MAX(n, 1), sizeof *c->n_tok);
    c->stopped = calloc((size_t)QP_MAX(n, 1), 1);
    c->nll_self = calloc((size_t)QP_MAX(n, 1), sizeof *c->nll_self);
    if (!c->tok || !c->n_tok || !c->stopped || !c->nll_self) {
        hx_gen_conts_free(c);
        return QP_ENOMEM;
    }
    c->n = n;
    return 0;
}

void hx_gen_conts_free(struct hx_gen_conts *c) {
    for (int i = 0; c->tok && i < c->n; i++) free(c->tok[i]);
    free(c->tok);
    free(c->n_tok);
    free(c->stopped);
    free(c->nll_self);
    memset(c, 0, sizeof *c);
}

// One thread's engine state and logits.
struct hx_gen_worker {
    struct kn_state *st;
    float *logits; // (HX_GEN_MAX_BATCH, vocab)
    int64_t tokens;
};

// The workers of a parallel loop over n prompts with e: outer states, threads inside each.
struct hx_gen_pool {
    struct hx_gen_worker *w;
    int outer;
};

static void hx_gen_pool_free(struct hx_gen_pool *pl) {
    for (int t = 0; pl->w && t < pl->outer; t++) {
        kn_state_destroy(pl->w[t].st);
        qp_free(pl->w[t].logits);
    }
    free(pl->w);
}

static int hx_gen_pool_init(const struct kn_engine *e, int n, int n_threads, int max_ctx, struct hx_gen_pool *pl,
                            char *err) {
    int threads = QP_MAX(1, n_threads), vocab = kn_engine_config(e)->vocab_size, rc = 0;
    pl->outer = n >= threads ? threads : 1; // prompt-parallel, or threads inside each forward
    int inner = pl->outer == 1 ? threads : 1;
    if (!(pl->w = calloc((size_t)pl->outer, sizeof *pl->w))) return qp_fail(err, QP_ENOMEM, "out of memory");
    for (int t = 0; t < pl->outer && !rc; t++) {
        rc = kn_state_create(e, max_ctx, QP_MIN(max_ctx, HX_GEN_MAX_BATCH), inner, &pl->w[t].st, err);
        if (!rc && !(pl->w[t].logits = qp_alloc_array((size_t)HX_GEN_MAX_BATCH * vocab, sizeof(float))))
            rc = qp_fail(err, QP_ENOMEM, "out of memory for logits");
    }
    if (rc) hx_gen_pool_free(pl);
    return rc;
}

// splitmix64: one stream per prompt, the same for every model (coupled sampling).
static uint64_t hx_gen_rng(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

// The next token from one row of logits: argmax (first index on ties) or, at temperature T > 0,
// a draw from softmax(x / T) by the Gumbel-max trick: argmax_j of (x_j - max) / T + g_j with
// g_j = -log(-log(u_j)), one uniform u_j in (0, 1) per vocabulary entry and step, in fp64. Two
// models fed the same stream pick the same token unless their perturbed maxima differ, which
// couples them far more tightly than an inverse-CDF draw over token ids (whose mismatch grows
// with the CDF differences summed over the whole vocabulary). *lp = log p(token) at T = 1.
static int hx_gen_pick(const struct kn_ops *ops, const float *row, int vocab, double T, uint64_t *rng, double *lp) {
    float mx;
    double lse = ops->logsumexp(row, vocab, &mx);
    int pick = 0;
    if (T <= 0) {
        while (row[pick] != mx) pick++;
    } else {
        double best = -INFINITY;
        for (int j = 0; j < vocab; j++) {
            double u = ((double)(hx_gen_rng(rng) >> 11) + 0.5) * 0x1.0p-53; // in (0, 1)
            double v = ((double)row[j] - mx) / T - log(-log(u));
            if (v > best) best = v, pick = j;
        }
    }
    *lp = (double)row[pick] - lse;
    return pick;
}

// Runs toks[0..n) from the state's position; the logits of the last row into w->logits.
static void hx_gen_prefill(struct hx_gen_worker *w, const int *toks, int n) {
    for (int a = 0; a < n; a += HX_GEN_MAX_BATCH) {
        int m = QP_MIN(HX_GEN_MAX_BATCH, n - a), last = a + m == n;
        kn_forward(w->st, toks + a, m, last ? w->logits : NULL, m - 1, NULL);
    }
    w->tokens += n;
}

// One prompt's continuation into c (slot i). 0 or QP_ENOMEM.
static int hx_gen_one(const struct kn_engine *e, struct hx_gen_worker *w, const int *pt, int np, int L, double T,
                      uint64_t seed, int i, const int stop[2], struct hx_gen_conts *c) {
    int vocab = kn_engine_config(e)->vocab_size, n = 0;
    int *out = malloc((size_t)QP_MAX(L, 1) * sizeof *out);
    if (!out) return QP_ENOMEM;
    uint64_t rng = seed ^ (0x9e3779b97f4a7c15ULL * (uint64_t)(i + 1));
    double nll = 0;
    kn_state_reset(w->st);
    hx_gen_prefill(w, pt, np);
    while (n < L) {
        double lp;
        int t = hx_gen_pick(kn_engine_ops(e), w->logits, vocab, T, &rng, &lp);
        out[n++] = t;
        nll -= lp;
        if (t == stop[0] || t == stop[1]) {
            c->stopped[i] = 1;
            break;
        }
        if (n < L) {
            kn_forward(w->st, &t, 1, w->logits, 0, NULL);
            w->tokens++;
        }
    }
    c->tok[i] = out;
    c->n_tok[i] = n;
    c->nll_self[i] = n ? nll / n : NAN;
    return 0;
}

static int hx_gen_max_ctx(const struct hx_gen_prompts *p, int L) {
    int m = 1;
    for (int i = 0; i < p->n; i++) m = QP_MAX(m, p->n_tok[i] + L);
    return m;
}

int hx_gen_run(const struct kn_engine *e, const struct hx_tok *tok, const struct hx_gen_prompts *p,
               const struct hx_gen_opts *o, int n_threads, void (*progress)(void *, int, int, int64_t),
               void *progress_ctx, struct hx_gen_conts *out, char *err) {
    int max_ctx = hx_gen_max_ctx(p, o->n_tokens), stop[2] = {hx_tok_eos(tok), hx_tok_bos(tok)};
    if (max_ctx > kn_engine_config(e)->seq_len)
        return qp_fail(err, QP_EINVAL, "a prompt with %d generated tokens needs %d positions, more than the model's "
                                       "context of %d", o->n_tokens, max_ctx, kn_engine_config(e)->seq_len);
    if (hx_gen_conts_init(out, p->n)) return qp_fail(err, QP_ENOMEM, "out of memory");
    struct hx_gen_pool pl;
    int rc = hx_gen_pool_init(e, p->n, n_threads, max_ctx, &pl, err), done = 0, failed = 0;
    if (rc) {
        hx_gen_conts_free(out);
        return rc;
    }
    double t0 = qp_now();
#pragma omp parallel for num_threads(pl.outer) schedule(dynamic, 1) if (pl.outer > 1)
    for (int i = 0; i < p->n; i++) {
        int t = omp_get_thread_num();
        int irc = hx_gen_one(e, &pl.w[t], p->tok[i], p->n_tok[i], o->n_tokens, o->temperature, o->seed, i, stop, out);
#pragma omp critical(hx_gen_progress)
        {
            failed |= irc != 0;
            done++;
            if (progress && omp_get_thread_num() == 0) progress(progress_ctx, done, p->n, 0);
        }
    }
    out->seconds = qp_now() - t0;
    for (int i = 0; i < p->n; i++) out->tokens += out->n_tok[i];
    if (progress) progress(progress_ctx, p->n, p->n, out->tokens);
    hx_gen_pool_free(&pl);
    if (failed) {
        hx_gen_conts_free(out);
        return qp_fail(err, QP_ENOMEM, "out of memory");
    }
    return 0;
}

// The reference's mean NLL per token of cont[0..nc) after prompt pt[0..np).
static double hx_gen_score_one(const struct kn_engine *ref, struct hx_gen_worker *w, const int *pt, int np,
                               const int *cont, int nc, int *seq) {
    const struct kn_ops *ops = kn_engine_ops(ref);
    int vocab = kn_engine_config(ref)->vocab_size, n = np + nc;
    if (nc == 0) return NAN;
    memcpy(seq, pt, (size_t)np * sizeof *seq);
    memcpy(seq + np, cont, (size_t)nc * sizeof *seq);
    double nll = 0;
    kn_state_reset(w->st);
    // Row q of seq predicts seq[q + 1]; rows np - 1 .. n - 2 score the continuation.
    for (int a = 0; a < n - 1; a += HX_GEN_MAX_BATCH) {
        int m = QP_MIN(HX_GEN_MAX_BATCH, n - 1 - a), fl = QP_MAX(0, np - 1 - a);
        kn_forward(w->st, seq + a, m, fl < m ? w->logits : NULL, fl, NULL);
        for (int r = fl; r < m; r++) {
            float mx;
            const float *row = w->logits + (size_t)(r - fl) * vocab;
            nll -= (double)row[seq[a + r + 1]] - ops->logsumexp(row, vocab, &mx);
        }
    }
    return nll / nc;
}

int hx_gen_score(const struct kn_engine *ref, const struct hx_gen_prompts *p, const struct hx_gen_conts *c,
                 int n_threads, double *nll, char *err) {
    int max_ctx = 1, vocab = kn_engine_config(ref)->vocab_size;
    for (int i = 0; i < p->n; i++) {
        max_ctx = QP_MAX(max_ctx, p->n_tok[i] + c->n_tok[i]);
        for (int j = 0; j < c->n_tok[i]; j++)
            if (c->tok[i][j] < 0 || c->tok[i][j] >= vocab)
                return qp_fail(err, QP_EFORMAT, "continuation %d: token %d outside the vocabulary of %d", i, c->tok[i][j], vocab);
    }
    if (max_ctx > kn_engine_config(ref)->seq_len)
        return qp_fail(err, QP_EINVAL, "a continuation needs %d positions, more than the model's context", max_ctx);
    struct hx_gen_pool pl;
    int rc = hx_gen_pool_init(ref, p->n, n_threads, max_ctx, &pl, err), failed = 0;
    if (rc) return rc;
#pragma omp parallel for num_threads(pl.outer) schedule(dynamic, 1) if (pl.outer > 1)
    for (int i = 0; i < p->n; i++) {
        int *seq = malloc((size_t)(p->n_tok[i] + c->n_tok[i] + 1) * sizeof *seq);
        if (!seq) {
#pragma omp atomic write
            failed = 1;
            continue;
        }
        nll[i] = hx_gen_score_one(ref, &pl.w[omp_get_thread_num()], p->tok[i], p->n_tok[i], c->tok[i], c->n_tok[i], seq);
        free(seq);
    }
    hx_gen_pool_free(&pl);
    return failed ? qp_fail(err, QP_ENOMEM, "out of memory") : 0;
}

void hx_gen_compare(const struct hx_gen_conts *ref, const struct hx_gen_conts *var, const double *nll, int k,
                    struct met_gen_pair *pairs) {
    for (int i = 0; i < ref->n; i++) {
        met_gen_compare(ref->tok[i], ref->n_tok[i], ref->stopped[i], var->tok[i], var->n_tok[i], var->stopped[i], k,
                        &pairs[i]);
        pairs[i].ref_nll_var = nll ? nll[i] : NAN;
        pairs[i].ref_nll_ref = ref->nll_self[i]; // the reference generated it: its own NLL
    }
}

// ---------------------------------------------------------------------------------------------
// The store

// Token ids as "12 7 301" (malloc'd).
static char *hx_gen_ids_text(const int *t, int n) {
    char *s = malloc((size_t)n * 12 + 1);
    if (!s) return NULL;
    size_t k = 0;
    s[0] = 0;
    for (int i = 0; i < n; i++) k += (size_t)sprintf(s + k, i ? " %d" : "%d", t[i]);
    return s;
}

int hx_gen_store(struct hx_store *st, int64_t vid, const char *setup, const struct hx_tok *tok,
                 const struct hx_gen_prompts *p, const struct hx_gen_conts *c, const struct met_gen_pair *pairs,
                 char *err) {
    int rc = 0;
    for (int i = 0; i < p->n && !rc; i++) {
        struct met_gen_cont d;
        met_gen_describe(c->tok[i], c->n_tok[i], c->stopped[i], &d);
        char *ids = hx_gen_ids_text(c->tok[i], c->n_tok[i]), *text = NULL;
        size_t tl;
        int body = c->n_tok[i] - (c->stopped[i] ? 1 : 0);
        if (!ids || hx_tok_decode(tok, c->tok[i], (size_t)body, 0, &text, &tl)) {
            free(ids);
            return qp_fail(err, QP_ENOMEM, "out of memory");
        }
        double ref_nll = pairs ? pairs[i].ref_nll_var : c->nll_self[i];
        double first = pairs && pairs[i].first_div >= 0 ? pairs[i].first_div : NAN; // NULL: identical
        rc = hx_store_exec(st, err,
                           "INSERT INTO gen_item (variant_id, setup, prompt, prompt_text, tokens, text, n_tokens,"
                           " eos_pos, loop_start, loop_period, distinct_1, distinct_2, nll_self, ref_nll, first_div,"
                           " agree_k) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                           "itItttI" "ddddddddd", vid, setup, i, p->text[i], ids, text, c->n_tok[i],
                           d.eos_pos >= 0 ? (double)d.eos_pos : NAN, d.loop_start >= 0 ? (double)d.loop_start : NAN,
                           d.loop_period >= 0 ? (double)d.loop_period : NAN, d.distinct1, d.distinct2,
                           c->nll_self[i], ref_nll, first, pairs ? pairs[i].agree_k : 1.0);
        free(ids);
        free(text);
    }
    return rc;
}

int hx_gen_store_summary(struct hx_store *st, int64_t vid, const struct met_gen_summary *s,
                         const struct hx_gen_opts *o, const struct hx_gen_conts *c, int is_ref, char *err) {
    struct {
        const char *name;
        double v;
    } m[] = {
        {"prompts", s->n}, {"tokens", o->n_tokens}, {"temperature", o->temperature},
        {"tokens_per_second", c->seconds > 0 ? (double)c->tokens / c->seconds : NAN},
        {"loop_rate", s->loop_rate_var}, {"distinct_2", s->distinct2_var}, {"eos_rate", s->eos_rate_var},
        {"ref_nll", s->ref_nll_var},
        // The comparison with the reference (not stored for the reference itself):
        {"k", o->k}, {"median_first_div", s->median_first_div}, {"identical_share", s->identical_share},
        {"agree_k", s->agree_k}, {"loop_rate_ref", s->loop_rate_ref},
        {"loop_rate_increase", s->loop_rate_var - s->loop_rate_ref}, {"distinct_2_ref", s->distinct2_ref},
        {"eos_rate_ref", s->eos_rate_ref}, {"ref_nll_ref", s->ref_nll_ref},
        {"ref_nll_increase", s->ref_nll_var - s->ref_nll_ref},
    };
    int n = is_ref ? 8 : (int)QP_ARRAY_LEN(m), rc = 0;
    for (int i = 0; i < n && !rc; i++) rc = hx_store_metric(st, vid, "gen", m[i].name, m[i].v, NAN, s->n, err);
    return rc;
}

// Parses "12 7 301" into t (room for cap ids); the count, or -1 when malformed or too long.
static int hx_gen_ids_parse(const char *s, int *t, int cap) {
    int n = 0;
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 0 || v > INT32_MAX || n == cap) return -1;
        t[n++] = (int)v;
        s = end;
        while (*s == ' ') s++;
    }
    return n;
}

int hx_gen_load_ref(struct hx_store *st, int64_t ref_id, const char *setup, int n, struct hx_gen_conts *out,
                    char *err) {
    sqlite3 *db = hx_store_db(st);
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(db, "SELECT prompt, tokens, n_tokens, eos_pos, nll_self FROM gen_item"
                               " WHERE variant_id = ? AND setup = ? ORDER BY prompt", -1, &q, NULL) != SQLITE_OK)
        return qp_fail(err, hx_store_sqlite_code(db), "cannot read '%s': %s", hx_store_path(st), sqlite3_errmsg(db));
    sqlite3_bind_int64(q, 1, ref_id);
    sqlite3_bind_text(q, 2, setup, -1, SQLITE_STATIC);
    int rc = hx_gen_conts_init(out, n) ? qp_fail(err, QP_ENOMEM, "out of memory") : 0, got = 0, step = SQLITE_DONE;
    while (!rc && (step = sqlite3_step(q)) == SQLITE_ROW) {
        int i = sqlite3_column_int(q, 0), m = sqlite3_column_int(q, 2);
        const char *ids = (const char *)sqlite3_column_text(q, 1);
        if (i != got || i >= n || m < 0 || m > (1 << 24) || !ids) {
            rc = qp_fail(err, QP_EFORMAT, "'%s': the reference's generation rows of setup '%s' are not prompts 0..%d",
                         hx_store_path(st), setup, n - 1);
            break;
        }
        if (!(out->tok[i] = malloc((size_t)QP_MAX(m, 1) * sizeof(int)))) rc = qp_fail(err, QP_ENOMEM, "out of memory");
        else if ((out->n_tok[i] = hx_gen_ids_parse(ids, out->tok[i], m)) != m)
            rc = qp_fail(err, QP_EFORMAT, "'%s': reference generation row %d: bad token list", hx_store_path(st), i);
        out->stopped[i] = sqlite3_column_type(q, 3) != SQLITE_NULL;
        out->nll_self[i] = sqlite3_column_type(q, 4) == SQLITE_NULL ? NAN : sqlite3_column_double(q, 4);
        got++;
    }
    if (!rc && step != SQLITE_DONE)
        rc = qp_fail(err, hx_store_sqlite_code(db), "cannot read '%s': %s", hx_store_path(st), sqlite3_errmsg(db));
    sqlite3_finalize(q);
    if (!rc && got != 0 && got != n)
        rc = qp_fail(err, QP_EFORMAT, "'%s': the reference has %d generation rows of setup '%s', not %d",
                     hx_store_path(st), got, setup, n);
    if (rc || got == 0) hx_gen_conts_free(out);
    return rc ? rc : got > 0;
}
