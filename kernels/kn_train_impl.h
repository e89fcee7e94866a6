// kn_train_impl.h — the body of the training forward, backward and loss (kn_train.h), written
// once for a real type. kn_train.c includes it twice: with KT_R = float (kn_train_*) and with
// KT_R = double (kn_train64_*). Not a header of its own: it defines functions, and only
// kn_train.c may include it. Expects, defined by the includer:
//   KT_R        the real type
//   KT_S        the workspace struct's tag (kn_train, kn_train64)
//   KT_PUB(x)   public name (kn_train_##x / kn_train64_##x)
//   KT_ST(x)    static helper name
//   KT_GEMM     cblas_sgemm / cblas_dgemm
//   KT_EXP      expf / exp
//   KT_TANH     tanhf / tanh
//   KT_F32      1 for the fp32 instantiation (the only one with effective weights), else 0
//
// It #undefs them at its end, so that the next inclusion can define them again.
//
// Shapes: n tokens of a window; D = dim, QD = q_dim (n_heads · head_size), KV = kv_dim,
// H = hidden, V = vocab, NH = n_heads, HS = head_size. Every buffer below is row-major, one token
// per row.

// Saved activations of one block.
struct KT_ST(layer_acts) {
    KT_R *x_in;  // block input, the residual stream           (n, D)
    KT_R *r1;    // attn RMSNorm's 1/rms per token               (n)
    KT_R *xb1;   // attn RMSNorm output                          (n, D)
    KT_R *q, *k; // after bias, RoPE (q: and attn_scale)         (n, QD), (n, KV)
    KT_R *v;     // after bias                                   (n, KV)
    KT_R *p;     // attention probabilities, per head             (NH, n, n); row i holds i+1 values
    KT_R *mix;   // attention output, input of wo                (n, QD)
    KT_R *ao;    // wo's output before the post-norm (post_norms) (n, D), else NULL
    KT_R *rp1;   // its 1/rms                                    (n)
    KT_R *x_mid; // residual after attention                     (n, D)
    KT_R *r2;    // ffn RMSNorm's 1/rms                          (n)
    KT_R *xb2;   // ffn RMSNorm output                           (n, D)
    KT_R *g, *u; // gate and up outputs                          (n, H)
    KT_R *h;     // act(g)·u, input of w_down                    (n, H)
    KT_R *fo;    // w_down's output before the post-norm         (n, D), else NULL
    KT_R *rp2;   // its 1/rms                                    (n)
};

struct KT_S {
    const struct kn_train_layout *L;
    int blas_threads;             // OpenBLAS's thread count before create, restored by destroy
    int max_n, nt, n;             // capacity, threads, tokens of the last forward
    int *tokens;                  // (max_n) of the last forward
    struct KT_ST(layer_acts) *la; // n_layers
    KT_R *x_fin, *rf, *xbf;       // final residual (n, D), 1/rms (n), final norm output (n, D)
    KT_R *logits;                 // (n, V), soft-capped when the family caps them
    KT_R *rope_cos, *rope_sin;    // (max_n, HS/2), the engine's float tables
    // Backward scratch
    KT_R *dx, *dxb, *dq, *dk, *dv, *dmix, *tmp; // (n, D) / (n, QD) / (n, KV) / (n, QD); tmp (n, max(D, H))
    KT_R *dg, *du, *dh;                          // (n, H)
    KT_R *dxbf;                                  // (n, D)
    KT_R *dpost;                                 // (n, D) post-norms only
    KT_R *dz;                                    // (n, V) final soft-cap only
    KT_R *scratch;                               // per thread: (nt, max_n, max_n); twice that
                                                 // with soft-capped scores (raw scores again)
    // Effective weights (fp32 only, kn_train_set_wsrc): the callback, which tensors it derives
    // (NULL: none), and the buffer a derived tensor is computed into (its largest).
    struct kn_train_wsrc ws;
    unsigned char *derived;
    float *wbuf;
    void **allocs;
    int n_allocs;
};

static KT_R *KT_ST(alloc)(struct KT_S *t, size_t n) {
    KT_R *p = qp_calloc_array(n ? n : 1, sizeof(KT_R));
    if (p) t->allocs[t->n_allocs++] = p;
    return p;
}

void KT_PUB(destroy)(struct KT_S *t) {
    if (!t) return;
    if (t->blas_threads > 1) openblas_set_num_threads(t->blas_threads);
    for (int i = 0; i < t->n_allocs; i++) qp_free(t->allocs[i]);
    qp_free(t->allocs);
    qp_free(t->derived);
    qp_free(t->wbuf);
    qp_free(t->la);
    qp_free(t->tokens);
    qp_free(t);
}

// The saved activations of every block; 0 or -1 (out of memory).
static int KT_ST(alloc_layers)(struct KT_S *t) {
    const struct kn_config *c = &t->L->cfg;
    size_t n = (size_t)t->max_n, D = (size_t)c->dim, H = (size_t)c->hidden_dim;
    size_t KV = (size_t)kn_kv_dim(c), QD = (size_t)kn_q_dim(c);
    int ok = 1, post = c->post_norms;
    for (int l = 0; l < c->n_layers && ok; l++) {
        struct KT_ST(layer_acts) *a = &t->la[l];
        ok = (a->x_in = KT_ST(alloc)(t, n * D)) && (a->r1 = KT_ST(alloc)(t, n)) &&
             (a->xb1 = KT_ST(alloc)(t, n * D)) && (a->q = KT_ST(alloc)(t, n * QD)) &&
             (a->k = KT_ST(alloc)(t, n * KV)) && (a->v = KT_ST(alloc)(t, n * KV)) &&
             (a->p = KT_ST(alloc)(t, (size_t)c->n_heads * n * n)) && (a->mix = KT_ST(alloc)(t, n * QD)) &&
             (a->x_mid = KT_ST(alloc)(t, n * D)) && (a->r2 = KT_ST(alloc)(t, n)) &&
             (a->xb2 = KT_ST(alloc)(t, n * D)) && (a->g = KT_ST(alloc)(t, n * H)) &&
             (a->u = KT_ST(alloc)(t, n * H)) && (a->h = KT_ST(alloc)(t, n * H)) &&
             (!post || ((a->ao = KT_ST(alloc)(t, n * D)) && (a->rp1 = KT_ST(alloc)(t, n)) &&
                        (a->fo = KT_ST(alloc)(t, n * D)) && (a->rp2 = KT_ST(alloc)(t, n))));
    }
    return ok ? 0 : -1;
}

// The workspace's own buffers (final norm, logits, RoPE tables, backward scratch); 0 or -1.
static int KT_ST(alloc_work)(struct KT_S *t) {
    const struct kn_config *c = &t->L->cfg;
    size_t n = (size_t)t->max_n, D = (size_t)c->dim, H = (size_t)c->hidden_dim, V = (size_t)c->vocab_size;
    size_t KV = (size_t)kn_kv_dim(c), QD = (size_t)kn_q_dim(c), half = (size_t)c->head_size / 2;
    size_t sc = (size_t)t->nt * n * n * (c->attn_softcap > 0 ? 2 : 1);
    int ok = (t->x_fin = KT_ST(alloc)(t, n * D)) && (t->rf = KT_ST(alloc)(t, n)) &&
             (t->xbf = KT_ST(alloc)(t, n * D)) && (t->logits = KT_ST(alloc)(t, n * V)) &&
             (t->rope_cos = KT_ST(alloc)(t, n * half)) && (t->rope_sin = KT_ST(alloc)(t, n * half)) &&
             (t->dx = KT_ST(alloc)(t, n * D)) && (t->dxb = KT_ST(alloc)(t, n * D)) &&
             (t->dq = KT_ST(alloc)(t, n * QD)) && (t->dk = KT_ST(alloc)(t, n * KV)) &&
             (t->dv = KT_ST(alloc)(t, n * KV)) && (t->dmix = KT_ST(alloc)(t, n * QD)) &&
             (t->tmp = KT_ST(alloc)(t, n * QP_MAX(D, H))) && (t->dg = KT_ST(alloc)(t, n * H)) &&
             (t->du = KT_ST(alloc)(t, n * H)) && (t->dh = KT_ST(alloc)(t, n * H)) &&
             (t->dxbf = KT_ST(alloc)(t, n * D)) && (t->scratch = KT_ST(alloc)(t, sc)) &&
             (!c->post_norms || (t->dpost = KT_ST(alloc)(t, n * D))) &&
             (!(c->final_softcap > 0) || (t->dz = KT_ST(alloc)(t, n * V)));
    return ok ? 0 : -1;
}

// The engine's RoPE tables (kn_rope_tables_fill, in float), so that both see the same angles —
// the long factors when the window exceeds the original context, as the engine chooses by its
// context. 0 or -1 (out of memory).
static int KT_ST(rope_tables)(struct KT_S *t) {
    const struct kn_train_layout *L = t->L;
    size_t m = (size_t)t->max_n * (size_t)(L->cfg.head_size / 2);
    float *co = qp_alloc_array(m ? m : 1, sizeof(float)), *si = qp_alloc_array(m ? m : 1, sizeof(float));
    if (co && si) {
        kn_rope_tables_fill(&L->cfg, L->rope_freqs, L->rope_short, L->rope_long, t->max_n, co, si);
        for (size_t i = 0; i < m; i++) t->rope_cos[i] = co[i], t->rope_sin[i] = si[i];
    }
    qp_free(co), qp_free(si);
    return co && si ? 0 : -1;
}

int KT_PUB(create)(const struct kn_train_layout *L, int max_tokens, int n_threads, struct KT_S **out,
                   char *err) {
    *out = NULL;
    const struct kn_config *c = &L->cfg;
    if (max_tokens < 1 || max_tokens > c->seq_len || n_threads < 1)
        return qp_fail(err, QP_EINVAL, "training window of %d tokens, %d threads: need 1..%d tokens and >= 1 thread",
                       max_tokens, n_threads, c->seq_len);
    struct KT_S *t = qp_calloc_array(1, sizeof *t);
    if (!t) return qp_fail(err, QP_ENOMEM, "out of memory");
    t->L = L;
    // Every matrix product is one single-threaded OpenBLAS call inside our own threads: its
    // pthreads pool would only spin against them (measured: 6x slower with 2 threads).
    t->blas_threads = openblas_get_num_threads();
    if (t->blas_threads > 1) openblas_set_num_threads(1);
    t->max_n = max_tokens;
    t->nt = n_threads;
    int nl = c->n_layers;
    t->allocs = qp_calloc_array((size_t)(19 * nl + 32), sizeof(void *));
    t->la = qp_calloc_array((size_t)nl, sizeof *t->la);
    t->tokens = qp_calloc_array((size_t)max_tokens, sizeof(int));
    if (!t->allocs || !t->la || !t->tokens) {
        KT_PUB(destroy)(t);
        return qp_fail(err, QP_ENOMEM, "out of memory");
    }
    if (KT_ST(alloc_layers)(t) || KT_ST(alloc_work)(t) || KT_ST(rope_tables)(t)) {
        KT_PUB(destroy)(t);
        return qp_fail(err, QP_ENOMEM, "out of memory for training activations (%d tokens)", max_tokens);
    }
    *out = t;
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Matrix products in fixed chunks (see kn_train.h, Determinism)

// Y (n, out) = X (n, in) · Wᵀ, W (out, in).
static void KT_ST(mm_fwd)(const struct KT_S *t, const KT_R *X, int n, const KT_R *W, int out, int in, KT_R *Y) {
    int nc = (out + KN_TRAIN_CHUNK - 1) / KN_TRAIN_CHUNK;
#pragma omp parallel for num_threads(t->nt) schedule(static) if (t->nt > 1 && nc > 1 && (int64_t)n * out * in >= KN_TRAIN_PAR_WORK)
    for (int ci = 0; ci < nc; ci++) {
        int r0 = ci * KN_TRAIN_CHUNK, m = QP_MIN(KN_TRAIN_CHUNK, out - r0);
        KT_GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, n, m, in, 1, X, in, W + (size_t)r0 * in, in, 0,
                Y + r0, out);
    }
}

// dX (n, in) = beta · dX + dY (n, out) · W (out, in).
static void KT_ST(mm_dx)(const struct KT_S *t, const KT_R *dY, int n, const KT_R *W, int out, int in, KT_R *dX,
                         KT_R beta) {
    int nc = (in + KN_TRAIN_CHUNK - 1) / KN_TRAIN_CHUNK;
#pragma omp parallel for num_threads(t->nt) schedule(static) if (t->nt > 1 && nc > 1 && (int64_t)n * out * in >= KN_TRAIN_PAR_WORK)
    for (int ci = 0; ci < nc; ci++) {
        int c0 = ci * KN_TRAIN_CHUNK, m = QP_MIN(KN_TRAIN_CHUNK, in - c0);
        KT_GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, m, out, 1, dY, out, W + c0, in, beta, dX + c0, in);
    }
}

// dW (out, in) += dY (n, out)ᵀ · X (n, in).
static void KT_ST(mm_dw)(const struct KT_S *t, const KT_R *dY, int n, const KT_R *X, int out, int in, KT_R *dW) {
    int nc = (out + KN_TRAIN_CHUNK - 1) / KN_TRAIN_CHUNK;
#pragma omp parallel for num_threads(t->nt) schedule(static) if (t->nt > 1 && nc > 1 && (int64_t)n * out * in >= KN_TRAIN_PAR_WORK)
    for (int ci = 0; ci < nc; ci++) {
        int r0 = ci * KN_TRAIN_CHUNK, m = QP_MIN(KN_TRAIN_CHUNK, out - r0);
        KT_GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, m, in, n, 1, dY + r0, out, X, in, 1, dW + (size_t)r0 * in,
                in);
    }
}

// ---------------------------------------------------------------------------------------------
// Row-wise pieces

// y = w · (x · r), r = 1/sqrt(Σx²/D + eps) with Σx² in fp64; r saved per row.
static void KT_ST(rmsnorm_fwd)(const struct KT_S *t, const KT_R *x, const KT_R *w, int n, KT_R *y, KT_R *r) {
    int D = t->L->cfg.dim;
    double eps = t->L->cfg.norm_eps;
#pragma omp parallel for num_threads(t->nt) schedule(static) if (t->nt > 1 && (int64_t)n * D >= KN_TRAIN_PAR_WORK / 4)
    for (int i = 0; i < n; i++) {
        const KT_R *xi = x + (size_t)i * D;
        double ss = 0;
        for (int j = 0; j < D; j++) ss += (double)xi[j] * xi[j];
        KT_R ri = (KT_R)(1.0 / sqrt(ss / D + eps));
        r[i] = ri;
        for (int j = 0; j < D; j++) y[(size_t)i * D + j] = w[j] * (xi[j] * ri);
    }
}

// Given dy of y = w·x·r: dw += Σ_rows dy·x·r (one thread, token order), and
// dx_j (+)= r w_j dy_j − x_j r³/D Σ_k dy_k w_k x_k (rows over threads; accumulate: add into dx).
static void KT_ST(rmsnorm_bwd)(const struct KT_S *t, const KT_R *x, const KT_R *w, const KT_R *r, const KT_R *dy,
                               int n, KT_R *dw, KT_R *dx) {
    int D = t->L->cfg.dim;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < D; j++) dw[j] += dy[(size_t)i * D + j] * x[(size_t)i * D + j] * r[i];
#pragma omp parallel for num_threads(t->nt) schedule(static) if (t->nt > 1 && (int64_t)n * D >= KN_TRAIN_PAR_WORK / 4)
    for (int i = 0; i < n; i++) {
        const KT_R *xi = x + (size_t)i * D, *dyi = dy + (size_t)i * D;
        double s = 0;
        for (int j = 0; j < D; j++) s += (double)dyi[j] * w[j] * xi[j];
        KT_R ri = r[i], c = (KT_R)(s * (double)ri * ri * ri / D);
        for (int j = 0; j < D; j++) dx[(size_t)i * D + j] += ri * w[j] * dyi[j] - xi[j] * c;
    }
}

// RoPE of n_heads heads of one row at position pos: pairs (2i, 2i + 1), or (i, i + HS/2) for
// rope_neox; inverse = 1 applies the transpose (the backward of the forward: with the attention
// factor folded into cos and sin the rotation is scaled, and its transpose is what dL/dx needs).
static void KT_ST(rope)(const struct KT_S *t, KT_R *vec, int n_heads, int pos, int inverse) {
    int hs = t->L->cfg.head_size, half = hs / 2, neox = t->L->cfg.rope_neox;
    const KT_R *fc = t->rope_cos + (size_t)pos * half, *fs = t->rope_sin + (size_t)pos * half;
    for (int h = 0; h < n_heads; h++) {
        KT_R *v = vec + (size_t)h * hs;
        for (int i = 0; i < half; i++) {
            int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
            KT_R v0 = v[a], v1 = v[b], c = fc[i], s = inverse ? -fs[i] : fs[i];
            v[a] = v0 * c - v1 * s;
            v[b] = v0 * s + v1 * c;
        }
    }
}

// The MLP's gating h = act(g)·u over m values: silu(g) = g·σ(g), or GELU with tanh (Gemma),
// 0.5 g (1 + tanh(sqrt(2/π) g (1 + 0.044715 g²))) evaluated as the engine does (kn_block.c).
#define KT_GELU_C ((KT_R)0.79788456080286535588)
#define KT_GELU_A ((KT_R)0.044715)

static void KT_ST(gate_fwd)(const struct KT_S *t, const KT_R *g, const KT_R *u, KT_R *h, size_t m) {
    if (t->L->cfg.act == KN_ACT_GELU_TANH) {
        for (size_t i = 0; i < m; i++) {
            KT_R x = g[i];
            h[i] = (KT_R)0.5 * x * ((KT_R)1 + KT_TANH(KT_GELU_C * x * ((KT_R)1 + KT_GELU_A * x * x))) * u[i];
        }
        return;
    }
    for (size_t i = 0; i < m; i++) {
        KT_R gi = g[i], sig = (KT_R)1 / ((KT_R)1 + KT_EXP(-gi));
        h[i] = gi * sig * u[i];
    }
}

// Given dh: du = dh·act(g), dg = dh·u·act'(g).
static void KT_ST(gate_bwd)(const struct KT_S *t, const KT_R *g, const KT_R *u, const KT_R *dh, KT_R *dg, KT_R *du,
                            size_t m) {
    if (t->L->cfg.act == KN_ACT_GELU_TANH) {
        for (size_t i = 0; i < m; i++) {
            KT_R x = g[i], th = KT_TANH(KT_GELU_C * x * ((KT_R)1 + KT_GELU_A * x * x));
            KT_R act = (KT_R)0.5 * x * ((KT_R)1 + th);
            KT_R dact = (KT_R)0.5 * ((KT_R)1 + th) +
                        (KT_R)0.5 * x * ((KT_R)1 - th * th) * KT_GELU_C * ((KT_R)1 + (KT_R)3 * KT_GELU_A * x * x);
            du[i] = dh[i] * act;
            dg[i] = dh[i] * u[i] * dact;
        }
        return;
    }
    for (size_t i = 0; i < m; i++) {
        KT_R gi = g[i], sig = (KT_R)1 / ((KT_R)1 + KT_EXP(-gi)), silu = gi * sig;
        du[i] = dh[i] * silu;
        dg[i] = dh[i] * u[i] * (sig + silu * ((KT_R)1 - sig));
    }
}

// ---------------------------------------------------------------------------------------------
// Attention

// Attention runs per head as matrix products (one single-threaded BLAS call each, so a head's
// result does not depend on the thread that runs it), over the full n × n square: the causal
// mask (and a sliding window's) zeroes P outside each row's keys, which costs twice the
// multiply-adds of the triangle but runs at BLAS speed.

// The scores' factor: 1/sqrt(HS), except with soft-capped scores, which the engine caps
// unscaled (the queries carry attn_scale).
static KT_R KT_ST(score_scale)(const struct kn_config *c) {
    return c->attn_softcap > 0 ? (KT_R)1 : (KT_R)1 / (KT_R)sqrtf((float)c->head_size);
}

// The first key query row i sees in layer l: 0, or i − window + 1 in a sliding-window layer.
static int KT_ST(first_key)(const struct kn_config *c, int l, int i) {
    int w = kn_layer_swa(c, l) ? c->swa_window : 0;
    return w > 0 && i - w + 1 > 0 ? i - w + 1 : 0;
}

// Forward for query head h of layer l: P (n, n) = softmax(mask(cap(α Q_h K_gᵀ))), mix_h = P V_g.
static void KT_ST(attn_head_fwd)(const struct KT_S *t, const struct KT_ST(layer_acts) * a, int l, int h, int n) {
    const struct kn_config *c = &t->L->cfg;
    int hs = c->head_size, QD = kn_q_dim(c), KV = kn_kv_dim(c), g = h / (c->n_heads / c->n_kv_heads);
    KT_R alpha = KT_ST(score_scale)(c), cap = (KT_R)c->attn_softcap, icap = cap > 0 ? (KT_R)1 / cap : 0;
    KT_R *P = a->p + (size_t)h * n * n;
    const KT_R *Q = a->q + (size_t)h * hs, *K = a->k + (size_t)g * hs, *Vg = a->v + (size_t)g * hs;
    KT_GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, hs, alpha, Q, QD, K, KV, 0, P, n);
    for (int i = 0; i < n; i++) {
        KT_R *pi = P + (size_t)i * n, mx = -INFINITY;
        int k0 = KT_ST(first_key)(c, l, i);
        if (cap > 0) // c·tanh(s/c), as the engine's kn_softcap
            for (int j = k0; j <= i; j++) pi[j] = KT_TANH(pi[j] * icap) * cap;
        for (int j = k0; j <= i; j++) mx = pi[j] > mx ? pi[j] : mx;
        double sum = 0;
        for (int j = k0; j <= i; j++) {
            pi[j] = KT_EXP(pi[j] - mx);
            sum += pi[j];
        }
        KT_R isum = (KT_R)(1.0 / sum);
        for (int j = 0; j < k0; j++) pi[j] = 0;
        for (int j = k0; j <= i; j++) pi[j] *= isum;
        for (int j = i + 1; j < n; j++) pi[j] = 0;
    }
    KT_GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, hs, n, 1, P, n, Vg, KV, 0, a->mix + (size_t)h * hs, QD);
}

// dS of one head from dP (in ds, overwritten): softmax's backward per row over its keys, times
// the cap's derivative 1 − tanh² (raw: the head's uncapped scores, recomputed) and α.
static void KT_ST(attn_dscores)(const struct KT_S *t, const KT_R *P, int l, int n, const KT_R *raw, KT_R *ds) {
    const struct kn_config *c = &t->L->cfg;
    KT_R alpha = KT_ST(score_scale)(c), icap = c->attn_softcap > 0 ? (KT_R)1 / (KT_R)c->attn_softcap : 0;
    for (int i = 0; i < n; i++) {
        const KT_R *pi = P + (size_t)i * n;
        KT_R *di = ds + (size_t)i * n;
        int k0 = KT_ST(first_key)(c, l, i);
        double dot = 0;
        for (int j = k0; j <= i; j++) dot += (double)pi[j] * di[j];
        for (int j = 0; j < k0; j++) di[j] = 0;
        for (int j = k0; j <= i; j++) {
            KT_R v = pi[j] * (di[j] - (KT_R)dot);
            if (raw) {
                KT_R th = KT_TANH(raw[(size_t)i * n + j] * icap);
                v = v * ((KT_R)1 - th * th);
            }
            di[j] = v * alpha;
        }
        for (int j = i + 1; j < n; j++) di[j] = 0;
    }
}

// Backward for KV head g of layer l and its query heads, in head order: reads t->dmix, writes
// t->dq (those heads' slices, w.r.t. the saved q) and t->dk, t->dv (head g's slices).
// ds: (n, n) scratch, raw: another (n, n) with soft-capped scores, else NULL.
//   dP = dO Vᵀ, dV += Pᵀ dO, dS (attn_dscores), dQ = dS K, dK += dSᵀ Q.
static void KT_ST(attn_kv_bwd)(const struct KT_S *t, const struct KT_ST(layer_acts) * a, int l, int g, int n,
                               KT_R *ds, KT_R *raw) {
    const struct kn_config *c = &t->L->cfg;
    int hs = c->head_size, QD = kn_q_dim(c), KV = kn_kv_dim(c), group = c->n_heads / c->n_kv_heads;
    const KT_R *K = a->k + (size_t)g * hs, *Vg = a->v + (size_t)g * hs;
    KT_R *dK = t->dk + (size_t)g * hs, *dV = t->dv + (size_t)g * hs;
    for (int h = g * group; h < (g + 1) * group; h++) {
        const KT_R *P = a->p + (size_t)h * n * n, *dO = t->dmix + (size_t)h * hs, *Q = a->q + (size_t)h * hs;
        KT_R beta = h == g * group ? 0 : 1;
        KT_GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, hs, 1, dO, QD, Vg, KV, 0, ds, n);
        KT_GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, n, hs, n, 1, P, n, dO, QD, beta, dV, KV);
        if (raw) // the forward's call again: the same scores, bit for bit
            KT_GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, hs, KT_ST(score_scale)(c), Q, QD, K, KV, 0, raw, n);
        KT_ST(attn_dscores)(t, P, l, n, raw, ds);
        KT_GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, hs, n, 1, ds, n, K, KV, 0, t->dq + (size_t)h * hs, QD);
        KT_GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, n, hs, n, 1, ds, n, Q, QD, beta, dK, KV);
    }
}

// ---------------------------------------------------------------------------------------------
// Forward

static const KT_R *KT_ST(param)(const struct KT_S *t, const KT_R *params, int kind, int layer) {
    return params + t->L->t[kn_train_index(t->L, kind, layer)].off;
}

// Matrix (kind, layer) as the products use it: its parameters, or its effective weights computed
// into t->wbuf (chunks of rows over threads: a row's values are the callback's whoever computes
// them), valid until the next call.
static const KT_R *KT_ST(weight)(struct KT_S *t, const KT_R *P, int kind, int layer) {
    int i = kn_train_index(t->L, kind, layer);
    const struct kn_tparam *tp = &t->L->t[i];
    if (!t->derived || !t->derived[i]) return P + tp->off;
#if KT_F32
    int64_t rows = tp->rows, cols = tp->cols, nc = (rows + KN_TRAIN_CHUNK - 1) / KN_TRAIN_CHUNK;
#pragma omp parallel for num_threads(t->nt) schedule(static) if (t->nt > 1 && nc > 1 && rows * cols >= KN_TRAIN_PAR_WORK / 4)
    for (int64_t ci = 0; ci < nc; ci++) {
        int64_t r0 = ci * KN_TRAIN_CHUNK, r1 = QP_MIN(rows, r0 + KN_TRAIN_CHUNK);
        t->ws.rows(t->ws.ctx, i, P, r0, r1, t->wbuf + r0 * cols);
    }
    return t->wbuf;
#else
    QP_ASSERT(0); // the fp64 path has no effective weights
    return P + tp->off;
#endif
}

// The embedding row of token tok (effective when derived) into x (dim values), times embd_scale.
static void KT_ST(embed_row)(const struct KT_S *t, const KT_R *P, int tok, KT_R *x) {
    const struct kn_config *c = &t->L->cfg;
    int D = c->dim, i = kn_train_index(t->L, KN_TP_EMBED, -1);
#if KT_F32
    if (t->derived && t->derived[i]) t->ws.rows(t->ws.ctx, i, P, tok, tok + 1, x);
    else
#endif
        memcpy(x, P + t->L->t[i].off + (size_t)tok * D, (size_t)D * sizeof(KT_R));
    if (c->embd_scale > 0)
        for (int j = 0; j < D; j++) x[j] = x[j] * (KT_R)c->embd_scale;
}

// q, k, v of the normed rows: products, biases, RoPE, the query scale.
static void KT_ST(qkv_fwd)(struct KT_S *t, const KT_R *P, int l, struct KT_ST(layer_acts) * a, int n) {
    const struct kn_config *c = &t->L->cfg;
    int D = c->dim, QD = kn_q_dim(c), KV = kn_kv_dim(c);
    KT_ST(mm_fwd)(t, a->xb1, n, KT_ST(weight)(t, P, KN_TP_WQ, l), QD, D, a->q);
    KT_ST(mm_fwd)(t, a->xb1, n, KT_ST(weight)(t, P, KN_TP_WK, l), KV, D, a->k);
    KT_ST(mm_fwd)(t, a->xb1, n, KT_ST(weight)(t, P, KN_TP_WV, l), KV, D, a->v);
    const KT_R *bq = c->has_qkv_bias ? KT_ST(param)(t, P, KN_TP_BQ, l) : NULL;
    const KT_R *bk = bq ? KT_ST(param)(t, P, KN_TP_BK, l) : NULL, *bv = bq ? KT_ST(param)(t, P, KN_TP_BV, l) : NULL;
    KT_R qs = (KT_R)c->attn_scale;
#pragma omp parallel for num_threads(t->nt) schedule(static) if (t->nt > 1 && (int64_t)n * D >= KN_TRAIN_PAR_WORK / 4)
    for (int i = 0; i < n; i++) {
        KT_R *q = a->q + (size_t)i * QD, *k = a->k + (size_t)i * KV, *v = a->v + (size_t)i * KV;
        if (bq) {
            for (int j = 0; j < QD; j++) q[j] = q[j] + bq[j];
            for (int j = 0; j < KV; j++) k[j] = k[j] + bk[j];
            for (int j = 0; j < KV; j++) v[j] = v[j] + bv[j];
        }
        KT_ST(rope)(t, q, c->n_heads, i, 0);
        KT_ST(rope)(t, k, c->n_kv_heads, i, 0);
        if (qs > 0)
            for (int j = 0; j < QD; j++) q[j] = q[j] * qs;
    }
}

// x += y, after the post-norm w (post_norms: the pre-norm y saved in keep, its 1/rms in r).
static void KT_ST(residual_fwd)(struct KT_S *t, KT_R *x, KT_R *y, const KT_R *w, KT_R *keep, KT_R *r, int n) {
    size_t m = (size_t)n * t->L->cfg.dim;
    if (w) {
        memcpy(keep, y, m * sizeof(KT_R));
        KT_ST(rmsnorm_fwd)(t, keep, w, n, y, r);
    }
    for (size_t i = 0; i < m; i++) x[i] += y[i];
}

static void KT_ST(block_fwd)(struct KT_S *t, const KT_R *P, int l, KT_R *x, int n) {
    const struct kn_config *c = &t->L->cfg;
    struct KT_ST(layer_acts) *a = &t->la[l];
    int D = c->dim, H = c->hidden_dim, QD = kn_q_dim(c), post = c->post_norms;
    memcpy(a->x_in, x, (size_t)n * D * sizeof(KT_R));
    KT_ST(rmsnorm_fwd)(t, x, KT_ST(param)(t, P, KN_TP_ATTN_NORM, l), n, a->xb1, a->r1);
    KT_ST(qkv_fwd)(t, P, l, a, n);
#pragma omp parallel for num_threads(t->nt) schedule(static, 1) if (t->nt > 1 && (int64_t)n * n * QD >= KN_TRAIN_PAR_WORK)
    for (int h = 0; h < c->n_heads; h++) KT_ST(attn_head_fwd)(t, a, l, h, n);
    KT_ST(mm_fwd)(t, a->mix, n, KT_ST(weight)(t, P, KN_TP_WO, l), D, QD, t->tmp);
    KT_ST(residual_fwd)(t, x, t->tmp, post ? KT_ST(param)(t, P, KN_TP_ATTN_POST, l) : NULL, a->ao, a->rp1, n);
    memcpy(a->x_mid, x, (size_t)n * D * sizeof(KT_R));
    KT_ST(rmsnorm_fwd)(t, x, KT_ST(param)(t, P, KN_TP_FFN_NORM, l), n, a->xb2, a->r2);
    KT_ST(mm_fwd)(t, a->xb2, n, KT_ST(weight)(t, P, KN_TP_GATE, l), H, D, a->g);
    KT_ST(mm_fwd)(t, a->xb2, n, KT_ST(weight)(t, P, KN_TP_UP, l), H, D, a->u);
    KT_ST(gate_fwd)(t, a->g, a->u, a->h, (size_t)n * H);
    KT_ST(mm_fwd)(t, a->h, n, KT_ST(weight)(t, P, KN_TP_DOWN, l), D, H, t->tmp);
    KT_ST(residual_fwd)(t, x, t->tmp, post ? KT_ST(param)(t, P, KN_TP_FFN_POST, l) : NULL, a->fo, a->rp2, n);
}

const KT_R *KT_PUB(forward)(struct KT_S *t, const KT_R *P, const int *tokens, int n) {
    const struct kn_train_layout *L = t->L;
    const struct kn_config *c = &L->cfg;
    QP_ASSERT(n >= 1 && n <= t->max_n);
    int D = c->dim, V = c->vocab_size;
    KT_R *x = t->x_fin; // the residual stream, left as the final block's output
    for (int i = 0; i < n; i++) {
        QP_ASSERT(tokens[i] >= 0 && tokens[i] < c->vocab_size);
        t->tokens[i] = tokens[i];
        KT_ST(embed_row)(t, P, tokens[i], x + (size_t)i * D);
    }
    t->n = n;
    for (int l = 0; l < c->n_layers; l++) KT_ST(block_fwd)(t, P, l, x, n);
    KT_ST(rmsnorm_fwd)(t, x, KT_ST(param)(t, P, KN_TP_OUT_NORM, -1), n, t->xbf, t->rf);
    const KT_R *W = KT_ST(weight)(t, P, L->tied ? KN_TP_EMBED : KN_TP_OUTPUT, -1);
    KT_ST(mm_fwd)(t, t->xbf, n, W, V, D, t->logits);
    if (c->final_softcap > 0) { // c·tanh(z/c), as the engine's kn_softcap
        KT_R cap = (KT_R)c->final_softcap, icap = (KT_R)1 / cap;
        for (size_t i = 0; i < (size_t)n * V; i++) t->logits[i] = KT_TANH(t->logits[i] * icap) * cap;
    }
    return t->logits;
}

// ---------------------------------------------------------------------------------------------
// Backward

static KT_R *KT_ST(grad)(const struct KT_S *t, KT_R *G, int kind, int layer) {
    return G + t->L->t[kn_train_index(t->L, kind, layer)].off;
}

// The gradient reaching the input of a residual branch's post-norm: dy itself without post-norms,
// else (post_norms) its backward into t->dpost, adding into the post-norm weight's gradient.
static const KT_R *KT_ST(post_bwd)(struct KT_S *t, const KT_R *P, KT_R *G, int kind, int l, const KT_R *keep,
                                   const KT_R *r, const KT_R *dy, int n) {
    if (!t->L->cfg.post_norms) return dy;
    memset(t->dpost, 0, (size_t)n * t->L->cfg.dim * sizeof(KT_R));
    KT_ST(rmsnorm_bwd)(t, keep, KT_ST(param)(t, P, kind, l), r, dy, n, KT_ST(grad)(t, G, kind, l), t->dpost);
    return t->dpost;
}

// Backward of the MLP of block l: adds into t->dx (the residual's gradient) and the MLP's weights.
static void KT_ST(mlp_bwd)(struct KT_S *t, const KT_R *P, KT_R *G, int l, int n) {
    const struct kn_config *c = &t->L->cfg;
    const struct KT_ST(layer_acts) *a = &t->la[l];
    int D = c->dim, H = c->hidden_dim;
    const KT_R *dy = KT_ST(post_bwd)(t, P, G, KN_TP_FFN_POST, l, a->fo, a->rp2, t->dx, n);
    KT_ST(mm_dw)(t, dy, n, a->h, D, H, KT_ST(grad)(t, G, KN_TP_DOWN, l));
    KT_ST(mm_dx)(t, dy, n, KT_ST(weight)(t, P, KN_TP_DOWN, l), D, H, t->dh, 0);
    KT_ST(gate_bwd)(t, a->g, a->u, t->dh, t->dg, t->du, (size_t)n * H);
    KT_ST(mm_dw)(t, t->dg, n, a->xb2, H, D, KT_ST(grad)(t, G, KN_TP_GATE, l));
    KT_ST(mm_dw)(t, t->du, n, a->xb2, H, D, KT_ST(grad)(t, G, KN_TP_UP, l));
    KT_ST(mm_dx)(t, t->dg, n, KT_ST(weight)(t, P, KN_TP_GATE, l), H, D, t->dxb, 0);
    KT_ST(mm_dx)(t, t->du, n, KT_ST(weight)(t, P, KN_TP_UP, l), H, D, t->dxb, 1);
    KT_ST(rmsnorm_bwd)(t, a->x_mid, KT_ST(param)(t, P, KN_TP_FFN_NORM, l), a->r2, t->dxb, n,
                       KT_ST(grad)(t, G, KN_TP_FFN_NORM, l), t->dx);
}

// From dq, dk, dv w.r.t. the saved (post-RoPE) q, k and v to their gradients w.r.t. the products'
// outputs: the query scale, inverse RoPE, and the biases' gradients (token order, one thread).
static void KT_ST(qkv_bwd)(struct KT_S *t, KT_R *G, int l, int n) {
    const struct kn_config *c = &t->L->cfg;
    int QD = kn_q_dim(c), KV = kn_kv_dim(c), D = c->dim;
    KT_R qs = (KT_R)c->attn_scale;
#pragma omp parallel for num_threads(t->nt) schedule(static) if (t->nt > 1 && (int64_t)n * D >= KN_TRAIN_PAR_WORK / 4)
    for (int i = 0; i < n; i++) {
        KT_R *dq = t->dq + (size_t)i * QD;
        if (qs > 0)
            for (int j = 0; j < QD; j++) dq[j] = dq[j] * qs;
        KT_ST(rope)(t, dq, c->n_heads, i, 1);
        KT_ST(rope)(t, t->dk + (size_t)i * KV, c->n_kv_heads, i, 1);
    }
    if (!c->has_qkv_bias) return;
    KT_R *gq = KT_ST(grad)(t, G, KN_TP_BQ, l), *gk = KT_ST(grad)(t, G, KN_TP_BK, l), *gv = KT_ST(grad)(t, G, KN_TP_BV, l);
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < QD; j++) gq[j] += t->dq[(size_t)i * QD + j];
        for (int j = 0; j < KV; j++) gk[j] += t->dk[(size_t)i * KV + j];
        for (int j = 0; j < KV; j++) gv[j] += t->dv[(size_t)i * KV + j];
    }
}

// Backward of the attention of block l: adds into t->dx and the attention's weights.
static void KT_ST(attn_bwd)(struct KT_S *t, const KT_R *P, KT_R *G, int l, int n) {
    const struct kn_config *c = &t->L->cfg;
    const struct KT_ST(layer_acts) *a = &t->la[l];
    int D = c->dim, QD = kn_q_dim(c), KV = kn_kv_dim(c);
    size_t nn = (size_t)t->max_n * t->max_n;
    const KT_R *dy = KT_ST(post_bwd)(t, P, G, KN_TP_ATTN_POST, l, a->ao, a->rp1, t->dx, n);
    KT_ST(mm_dw)(t, dy, n, a->mix, D, QD, KT_ST(grad)(t, G, KN_TP_WO, l));
    KT_ST(mm_dx)(t, dy, n, KT_ST(weight)(t, P, KN_TP_WO, l), D, QD, t->dmix, 0);
#pragma omp parallel for num_threads(t->nt) schedule(static, 1) if (t->nt > 1 && (int64_t)n * n * QD >= KN_TRAIN_PAR_WORK)
    for (int g = 0; g < c->n_kv_heads; g++) {
        KT_R *ds = t->scratch + (size_t)omp_get_thread_num() * nn;
        KT_R *raw = c->attn_softcap > 0 ? t->scratch + ((size_t)t->nt + (size_t)omp_get_thread_num()) * nn : NULL;
        KT_ST(attn_kv_bwd)(t, a, l, g, n, ds, raw);
    }
    KT_ST(qkv_bwd)(t, G, l, n);
    KT_ST(mm_dw)(t, t->dq, n, a->xb1, QD, D, KT_ST(grad)(t, G, KN_TP_WQ, l));
    KT_ST(mm_dw)(t, t->dk, n, a->xb1, KV, D, KT_ST(grad)(t, G, KN_TP_WK, l));
    KT_ST(mm_dw)(t, t->dv, n, a->xb1, KV, D, KT_ST(grad)(t, G, KN_TP_WV, l));
    KT_ST(mm_dx)(t, t->dq, n, KT_ST(weight)(t, P, KN_TP_WQ, l), QD, D, t->dxb, 0);
    KT_ST(mm_dx)(t, t->dk, n, KT_ST(weight)(t, P, KN_TP_WK, l), KV, D, t->dxb, 1);
    KT_ST(mm_dx)(t, t->dv, n, KT_ST(weight)(t, P, KN_TP_WV, l), KV, D, t->dxb, 1);
    KT_ST(rmsnorm_bwd)(t, a->x_in, KT_ST(param)(t, P, KN_TP_ATTN_NORM, l), a->r1, t->dxb, n,
                       KT_ST(grad)(t, G, KN_TP_ATTN_NORM, l), t->dx);
}

// dL/d(pre-cap logits) of soft-capped logits l = c·tanh(z/c): dl · (1 − (l/c)²), into t->dz.
static const KT_R *KT_ST(softcap_bwd)(struct KT_S *t, const KT_R *dlogits, int n) {
    const struct kn_config *c = &t->L->cfg;
    if (!(c->final_softcap > 0)) return dlogits;
    KT_R icap = (KT_R)1 / (KT_R)c->final_softcap;
    for (size_t i = 0; i < (size_t)n * c->vocab_size; i++) {
        KT_R th = t->logits[i] * icap;
        t->dz[i] = dlogits[i] * ((KT_R)1 - th * th);
    }
    return t->dz;
}

void KT_PUB(backward)(struct KT_S *t, const KT_R *P, const KT_R *dlogits, KT_R *G) {
    const struct kn_train_layout *L = t->L;
    const struct kn_config *c = &L->cfg;
    int n = t->n, D = c->dim, V = c->vocab_size;
    QP_ASSERT(n >= 1);
    // Classifier and final norm.
    const KT_R *dz = KT_ST(softcap_bwd)(t, dlogits, n);
    KT_R *dW = L->tied ? KT_ST(grad)(t, G, KN_TP_EMBED, -1) : KT_ST(grad)(t, G, KN_TP_OUTPUT, -1);
    KT_ST(mm_dw)(t, dz, n, t->xbf, V, D, dW);
    KT_ST(mm_dx)(t, dz, n, KT_ST(weight)(t, P, L->tied ? KN_TP_EMBED : KN_TP_OUTPUT, -1), V, D, t->dxbf, 0);
    memset(t->dx, 0, (size_t)n * D * sizeof(KT_R));
    KT_ST(rmsnorm_bwd)(t, t->x_fin, KT_ST(param)(t, P, KN_TP_OUT_NORM, -1), t->rf, t->dxbf, n,
                       KT_ST(grad)(t, G, KN_TP_OUT_NORM, -1), t->dx);
    // Blocks: t->dx holds dL/d(block output) on entry, dL/d(block input) on exit.
    for (int l = c->n_layers - 1; l >= 0; l--) {
        KT_ST(mlp_bwd)(t, P, G, l, n);
        KT_ST(attn_bwd)(t, P, G, l, n);
    }
    // Embedding: scatter in token order (one thread; repeated tokens add in a fixed order).
    KT_R *dE = KT_ST(grad)(t, G, KN_TP_EMBED, -1), es = c->embd_scale > 0 ? (KT_R)c->embd_scale : 1;
    for (int i = 0; i < n; i++) {
        KT_R *row = dE + (size_t)t->tokens[i] * D;
        if (c->embd_scale > 0)
            for (int j = 0; j < D; j++) row[j] += t->dx[(size_t)i * D + j] * es;
        else
            for (int j = 0; j < D; j++) row[j] += t->dx[(size_t)i * D + j];
    }
}

// ---------------------------------------------------------------------------------------------
// Loss

void KT_PUB(loss)(const KT_R *logits, const KT_R *teacher, const int *targets, int n, int vocab,
                  double ce_weight, double scale, int n_threads, KT_R *dlogits, double *rows, double *kl,
                  double *ce) {
    double *row_kl = rows, *row_ce = rows + n;
#pragma omp parallel for num_threads(n_threads) schedule(static) if (n_threads > 1 && (int64_t)n * vocab >= KN_TRAIN_PAR_WORK / 4)
    for (int i = 0; i < n; i++) {
        const KT_R *z = logits + (size_t)i * vocab, *zt = teacher + (size_t)i * vocab;
        KT_R *dz = dlogits + (size_t)i * vocab;
        double ms = -INFINITY, mt = -INFINITY, ss = 0, st = 0;
        for (int v = 0; v < vocab; v++) ms = fmax(ms, z[v]), mt = fmax(mt, zt[v]);
        for (int v = 0; v < vocab; v++) ss += exp(z[v] - ms), st += exp(zt[v] - mt);
        double lzs = ms + log(ss), lzt = mt + log(st), k = 0;
        int tg = targets && ce_weight > 0 ? targets[i] : -1;
        for (int v = 0; v < vocab; v++) {
            double lps = z[v] - lzs, lpt = zt[v] - lzt, ps = exp(lps), pt = exp(lpt);
            if (pt != 0) k += pt * (lpt - lps); // 0 log 0 = 0; a NaN anywhere propagates
            double gz = ps - pt;
            if (v == tg) gz += ce_weight * (ps - 1.0);
            else if (tg >= 0) gz += ce_weight * ps;
            dz[v] = (KT_R)(scale * gz);
        }
        row_kl[i] = k;
        row_ce[i] = tg >= 0 ? -(z[tg] - lzs) : 0.0;
    }
    double sk = 0, sc = 0;
    for (int i = 0; i < n; i++) sk += row_kl[i], sc += row_ce[i];
    if (kl) *kl = sk;
    if (ce) *ce = sc;
}

#undef KT_GELU_C
#undef KT_GELU_A
#undef KT_R
#undef KT_S
#undef KT_PUB
#undef KT_ST
#undef KT_GEMM
#undef KT_EXP
#undef KT_TANH
#undef KT_F32
