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
//
// It #undefs them at its end, so that the next inclusion can define them again.
//
// Shapes: n tokens of a window; D = dim, KV = kv_dim, H = hidden, V = vocab, NH = n_heads,
// HS = head_size. Every buffer below is row-major, one token per row.

// Saved activations of one block.
struct KT_ST(layer_acts) {
    KT_R *x_in;  // block input, the residual stream           (n, D)
    KT_R *r1;    // attn RMSNorm's 1/rms per token               (n)
    KT_R *xb1;   // attn RMSNorm output                          (n, D)
    KT_R *q, *k; // after RoPE                                   (n, D), (n, KV)
    KT_R *v;     //                                              (n, KV)
    KT_R *p;     // attention probabilities, per head             (NH, n, n); row i holds i+1 values
    KT_R *mix;   // attention output, input of wo                (n, D)
    KT_R *x_mid; // residual after attention                     (n, D)
    KT_R *r2;    // ffn RMSNorm's 1/rms                          (n)
    KT_R *xb2;   // ffn RMSNorm output                           (n, D)
    KT_R *g, *u; // gate and up outputs                          (n, H)
    KT_R *h;     // silu(g)·u, input of w_down                   (n, H)
};

struct KT_S {
    const struct kn_train_layout *L;
    int blas_threads;             // OpenBLAS's thread count before create, restored by destroy
    int max_n, nt, n;             // capacity, threads, tokens of the last forward
    int *tokens;                  // (max_n) of the last forward
    struct KT_ST(layer_acts) *la; // n_layers
    KT_R *x_fin, *rf, *xbf;       // final residual (n, D), 1/rms (n), final norm output (n, D)
    KT_R *logits;                 // (n, V)
    KT_R *rope_cos, *rope_sin;    // (max_n, HS/2), the engine's float tables
    // Backward scratch
    KT_R *dx, *dxb, *dq, *dk, *dv, *dmix, *tmp; // (n, D) / (n, KV) / (n, D); tmp (n, max(D, H))
    KT_R *dg, *du, *dh;                          // (n, H)
    KT_R *dxbf;                                  // (n, D)
    KT_R *scratch;                               // per thread: (nt, max_n, max_n)
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
    qp_free(t->la);
    qp_free(t->tokens);
    qp_free(t);
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
    t->allocs = qp_calloc_array((size_t)(15 * nl + 32), sizeof(void *));
    t->la = qp_calloc_array((size_t)nl, sizeof *t->la);
    t->tokens = qp_calloc_array((size_t)max_tokens, sizeof(int));
    if (!t->allocs || !t->la || !t->tokens) {
        KT_PUB(destroy)(t);
        return qp_fail(err, QP_ENOMEM, "out of memory");
    }
    size_t n = (size_t)max_tokens, D = (size_t)c->dim, H = (size_t)c->hidden_dim;
    size_t KV = (size_t)c->n_kv_heads * c->head_size, V = (size_t)c->vocab_size;
    int ok = 1;
    for (int l = 0; l < nl; l++) {
        struct KT_ST(layer_acts) *a = &t->la[l];
        ok = ok && (a->x_in = KT_ST(alloc)(t, n * D)) && (a->r1 = KT_ST(alloc)(t, n)) &&
             (a->xb1 = KT_ST(alloc)(t, n * D)) && (a->q = KT_ST(alloc)(t, n * D)) &&
             (a->k = KT_ST(alloc)(t, n * KV)) && (a->v = KT_ST(alloc)(t, n * KV)) &&
             (a->p = KT_ST(alloc)(t, (size_t)c->n_heads * n * n)) && (a->mix = KT_ST(alloc)(t, n * D)) &&
             (a->x_mid = KT_ST(alloc)(t, n * D)) && (a->r2 = KT_ST(alloc)(t, n)) &&
             (a->xb2 = KT_ST(alloc)(t, n * D)) && (a->g = KT_ST(alloc)(t, n * H)) &&
             (a->u = KT_ST(alloc)(t, n * H)) && (a->h = KT_ST(alloc)(t, n * H));
    }
    size_t half = (size_t)c->head_size / 2;
    ok = ok && (t->x_fin = KT_ST(alloc)(t, n * D)) && (t->rf = KT_ST(alloc)(t, n)) &&
         (t->xbf = KT_ST(alloc)(t, n * D)) && (t->logits = KT_ST(alloc)(t, n * V)) &&
         (t->rope_cos = KT_ST(alloc)(t, n * half)) && (t->rope_sin = KT_ST(alloc)(t, n * half)) &&
         (t->dx = KT_ST(alloc)(t, n * D)) && (t->dxb = KT_ST(alloc)(t, n * D)) &&
         (t->dq = KT_ST(alloc)(t, n * D)) && (t->dk = KT_ST(alloc)(t, n * KV)) &&
         (t->dv = KT_ST(alloc)(t, n * KV)) && (t->dmix = KT_ST(alloc)(t, n * D)) &&
         (t->tmp = KT_ST(alloc)(t, n * QP_MAX(D, H))) && (t->dg = KT_ST(alloc)(t, n * H)) &&
         (t->du = KT_ST(alloc)(t, n * H)) && (t->dh = KT_ST(alloc)(t, n * H)) &&
         (t->dxbf = KT_ST(alloc)(t, n * D)) && (t->scratch = KT_ST(alloc)(t, (size_t)n_threads * n * n));
    if (!ok) {
        KT_PUB(destroy)(t);
        return qp_fail(err, QP_ENOMEM, "out of memory for training activations (%d tokens)", max_tokens);
    }
    // The engine's RoPE tables, computed the same way (float), so that both see the same angles.
    for (size_t pos = 0; pos < n; pos++)
        for (size_t i = 0; i < half; i++) {
            float freq = 1.0f / powf(c->rope_theta, (float)(2 * i) / (float)c->head_size);
            float val = (float)pos * freq;
            t->rope_cos[pos * half + i] = cosf(val);
            t->rope_sin[pos * half + i] = sinf(val);
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

// Interleaved RoPE of n_heads heads of one row at position pos; inverse = 1 rotates back (the
// transpose of the rotation, which is the backward of the forward rotation).
static void KT_ST(rope)(const struct KT_S *t, KT_R *vec, int n_heads, int pos, int inverse) {
    int hs = t->L->cfg.head_size, half = hs / 2;
    const KT_R *fc = t->rope_cos + (size_t)pos * half, *fs = t->rope_sin + (size_t)pos * half;
    for (int h = 0; h < n_heads; h++) {
        KT_R *v = vec + (size_t)h * hs;
        for (int i = 0; i < half; i++) {
            KT_R v0 = v[2 * i], v1 = v[2 * i + 1], c = fc[i], s = inverse ? -fs[i] : fs[i];
            v[2 * i] = v0 * c - v1 * s;
            v[2 * i + 1] = v0 * s + v1 * c;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Attention

// Attention runs per head as matrix products (one single-threaded BLAS call each, so a head's
// result does not depend on the thread that runs it), over the full n × n square: the causal
// mask zeroes P above the diagonal, which costs twice the multiply-adds of the triangle but runs
// at BLAS speed.

// Forward for query head h: P (n, n) = softmax(mask(Q_h K_gᵀ / sqrt(HS))), mix_h = P V_g.
static void KT_ST(attn_head_fwd)(const struct KT_S *t, const struct KT_ST(layer_acts) *a, int h, int n) {
    const struct kn_config *c = &t->L->cfg;
    int hs = c->head_size, D = c->dim, KV = c->n_kv_heads * hs, g = h / (c->n_heads / c->n_kv_heads);
    KT_R inv = (KT_R)1 / (KT_R)sqrtf((float)hs); // the engine divides by sqrtf(head_size)
    KT_R *P = a->p + (size_t)h * n * n;
    const KT_R *Q = a->q + (size_t)h * hs, *K = a->k + (size_t)g * hs, *Vg = a->v + (size_t)g * hs;
    KT_GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, hs, inv, Q, D, K, KV, 0, P, n);
    for (int i = 0; i < n; i++) {
        KT_R *pi = P + (size_t)i * n, mx = -INFINITY;
        for (int j = 0; j <= i; j++) mx = pi[j] > mx ? pi[j] : mx;
        double sum = 0;
        for (int j = 0; j <= i; j++) {
            pi[j] = KT_EXP(pi[j] - mx);
            sum += pi[j];
        }
        KT_R isum = (KT_R)(1.0 / sum);
        for (int j = 0; j <= i; j++) pi[j] *= isum;
        for (int j = i + 1; j < n; j++) pi[j] = 0;
    }
    KT_GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, hs, n, 1, P, n, Vg, KV, 0, a->mix + (size_t)h * hs, D);
}

// Backward for KV head g and its query heads, in head order: reads t->dmix, writes t->dq (those
// heads' slices, before the inverse RoPE) and t->dk, t->dv (head g's slices). ds: (n, n) scratch.
//   dP = dO Vᵀ, dV += Pᵀ dO, dS = P ∘ (dP − rowsum(P ∘ dP)) / sqrt(HS), dQ = dS K, dK += dSᵀ Q.
static void KT_ST(attn_kv_bwd)(const struct KT_S *t, const struct KT_ST(layer_acts) *a, int g, int n, KT_R *ds) {
    const struct kn_config *c = &t->L->cfg;
    int hs = c->head_size, D = c->dim, KV = c->n_kv_heads * hs, group = c->n_heads / c->n_kv_heads;
    KT_R inv = (KT_R)1 / (KT_R)sqrtf((float)hs);
    const KT_R *K = a->k + (size_t)g * hs, *Vg = a->v + (size_t)g * hs;
    KT_R *dK = t->dk + (size_t)g * hs, *dV = t->dv + (size_t)g * hs;
    for (int h = g * group; h < (g + 1) * group; h++) {
        const KT_R *P = a->p + (size_t)h * n * n, *dO = t->dmix + (size_t)h * hs, *Q = a->q + (size_t)h * hs;
        KT_R beta = h == g * group ? 0 : 1;
        KT_GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, hs, 1, dO, D, Vg, KV, 0, ds, n);
        KT_GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, n, hs, n, 1, P, n, dO, D, beta, dV, KV);
        for (int i = 0; i < n; i++) {
            const KT_R *pi = P + (size_t)i * n;
            KT_R *di = ds + (size_t)i * n;
            double dot = 0;
            for (int j = 0; j <= i; j++) dot += (double)pi[j] * di[j];
            for (int j = 0; j <= i; j++) di[j] = pi[j] * (di[j] - (KT_R)dot) * inv;
            for (int j = i + 1; j < n; j++) di[j] = 0;
        }
        KT_GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, hs, n, 1, ds, n, K, KV, 0, t->dq + (size_t)h * hs, D);
        KT_GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, n, hs, n, 1, ds, n, Q, D, beta, dK, KV);
    }
}

// ---------------------------------------------------------------------------------------------
// Forward

static const KT_R *KT_ST(param)(const struct KT_S *t, const KT_R *params, int kind, int layer) {
    return params + t->L->t[kn_train_index(t->L, kind, layer)].off;
}

static void KT_ST(block_fwd)(struct KT_S *t, const KT_R *P, int l, KT_R *x, int n) {
    const struct kn_config *c = &t->L->cfg;
    struct KT_ST(layer_acts) *a = &t->la[l];
    int D = c->dim, H = c->hidden_dim, KV = c->n_kv_heads * c->head_size;
    memcpy(a->x_in, x, (size_t)n * D * sizeof(KT_R));
    KT_ST(rmsnorm_fwd)(t, x, KT_ST(param)(t, P, KN_TP_ATTN_NORM, l), n, a->xb1, a->r1);
    KT_ST(mm_fwd)(t, a->xb1, n, KT_ST(param)(t, P, KN_TP_WQ, l), D, D, a->q);
    KT_ST(mm_fwd)(t, a->xb1, n, KT_ST(param)(t, P, KN_TP_WK, l), KV, D, a->k);
    KT_ST(mm_fwd)(t, a->xb1, n, KT_ST(param)(t, P, KN_TP_WV, l), KV, D, a->v);
#pragma omp parallel for num_threads(t->nt) schedule(static) if (t->nt > 1 && (int64_t)n * D >= KN_TRAIN_PAR_WORK / 4)
    for (int i = 0; i < n; i++) {
        KT_ST(rope)(t, a->q + (size_t)i * D, c->n_heads, i, 0);
        KT_ST(rope)(t, a->k + (size_t)i * KV, c->n_kv_heads, i, 0);
    }
#pragma omp parallel for num_threads(t->nt) schedule(static, 1) if (t->nt > 1 && (int64_t)n * n * D >= KN_TRAIN_PAR_WORK)
    for (int h = 0; h < c->n_heads; h++) KT_ST(attn_head_fwd)(t, a, h, n);
    KT_ST(mm_fwd)(t, a->mix, n, KT_ST(param)(t, P, KN_TP_WO, l), D, D, t->tmp);
    for (size_t i = 0; i < (size_t)n * D; i++) x[i] += t->tmp[i];
    memcpy(a->x_mid, x, (size_t)n * D * sizeof(KT_R));
    KT_ST(rmsnorm_fwd)(t, x, KT_ST(param)(t, P, KN_TP_FFN_NORM, l), n, a->xb2, a->r2);
    KT_ST(mm_fwd)(t, a->xb2, n, KT_ST(param)(t, P, KN_TP_GATE, l), H, D, a->g);
    KT_ST(mm_fwd)(t, a->xb2, n, KT_ST(param)(t, P, KN_TP_UP, l), H, D, a->u);
    for (size_t i = 0; i < (size_t)n * H; i++) {
        KT_R gi = a->g[i], sig = (KT_R)1 / ((KT_R)1 + KT_EXP(-gi));
        a->h[i] = gi * sig * a->u[i];
    }
    KT_ST(mm_fwd)(t, a->h, n, KT_ST(param)(t, P, KN_TP_DOWN, l), D, H, t->tmp);
    for (size_t i = 0; i < (size_t)n * D; i++) x[i] += t->tmp[i];
}

const KT_R *KT_PUB(forward)(struct KT_S *t, const KT_R *P, const int *tokens, int n) {
    const struct kn_train_layout *L = t->L;
    const struct kn_config *c = &L->cfg;
    QP_ASSERT(n >= 1 && n <= t->max_n);
    int D = c->dim;
    const KT_R *E = KT_ST(param)(t, P, KN_TP_EMBED, -1);
    KT_R *x = t->x_fin; // the residual stream, left as the final block's output
    for (int i = 0; i < n; i++) {
        QP_ASSERT(tokens[i] >= 0 && tokens[i] < c->vocab_size);
        t->tokens[i] = tokens[i];
        memcpy(x + (size_t)i * D, E + (size_t)tokens[i] * D, (size_t)D * sizeof(KT_R));
    }
    t->n = n;
    for (int l = 0; l < c->n_layers; l++) KT_ST(block_fwd)(t, P, l, x, n);
    KT_ST(rmsnorm_fwd)(t, x, KT_ST(param)(t, P, KN_TP_OUT_NORM, -1), n, t->xbf, t->rf);
    const KT_R *W = L->tied ? E : KT_ST(param)(t, P, KN_TP_OUTPUT, -1);
    KT_ST(mm_fwd)(t, t->xbf, n, W, c->vocab_size, D, t->logits);
    return t->logits;
}

// ---------------------------------------------------------------------------------------------
// Backward

static KT_R *KT_ST(grad)(const struct KT_S *t, KT_R *G, int kind, int layer) {
    return G + t->L->t[kn_train_index(t->L, kind, layer)].off;
}

// Backward through block l: t->dx holds dL/d(block output) on entry, dL/d(block input) on exit.
static void KT_ST(block_bwd)(struct KT_S *t, const KT_R *P, KT_R *G, int l, int n) {
    const struct kn_config *c = &t->L->cfg;
    const struct KT_ST(layer_acts) *a = &t->la[l];
    int D = c->dim, H = c->hidden_dim, KV = c->n_kv_heads * c->head_size;
    // MLP: x_out = x_mid + W_down h.
    KT_ST(mm_dw)(t, t->dx, n, a->h, D, H, KT_ST(grad)(t, G, KN_TP_DOWN, l));
    KT_ST(mm_dx)(t, t->dx, n, KT_ST(param)(t, P, KN_TP_DOWN, l), D, H, t->dh, 0);
    for (size_t i = 0; i < (size_t)n * H; i++) {
        KT_R gi = a->g[i], sig = (KT_R)1 / ((KT_R)1 + KT_EXP(-gi)), silu = gi * sig;
        t->du[i] = t->dh[i] * silu;
        t->dg[i] = t->dh[i] * a->u[i] * (sig + silu * ((KT_R)1 - sig));
    }
    KT_ST(mm_dw)(t, t->dg, n, a->xb2, H, D, KT_ST(grad)(t, G, KN_TP_GATE, l));
    KT_ST(mm_dw)(t, t->du, n, a->xb2, H, D, KT_ST(grad)(t, G, KN_TP_UP, l));
    KT_ST(mm_dx)(t, t->dg, n, KT_ST(param)(t, P, KN_TP_GATE, l), H, D, t->dxb, 0);
    KT_ST(mm_dx)(t, t->du, n, KT_ST(param)(t, P, KN_TP_UP, l), H, D, t->dxb, 1);
    KT_ST(rmsnorm_bwd)(t, a->x_mid, KT_ST(param)(t, P, KN_TP_FFN_NORM, l), a->r2, t->dxb, n,
                       KT_ST(grad)(t, G, KN_TP_FFN_NORM, l), t->dx);
    // Attention: x_mid = x_in + W_o mix.
    KT_ST(mm_dw)(t, t->dx, n, a->mix, D, D, KT_ST(grad)(t, G, KN_TP_WO, l));
    KT_ST(mm_dx)(t, t->dx, n, KT_ST(param)(t, P, KN_TP_WO, l), D, D, t->dmix, 0);
#pragma omp parallel for num_threads(t->nt) schedule(static, 1) if (t->nt > 1 && (int64_t)n * n * D >= KN_TRAIN_PAR_WORK)
    for (int g = 0; g < c->n_kv_heads; g++)
        KT_ST(attn_kv_bwd)(t, a, g, n, t->scratch + (size_t)omp_get_thread_num() * t->max_n * t->max_n);
#pragma omp parallel for num_threads(t->nt) schedule(static) if (t->nt > 1 && (int64_t)n * D >= KN_TRAIN_PAR_WORK / 4)
    for (int i = 0; i < n; i++) {
        KT_ST(rope)(t, t->dq + (size_t)i * D, c->n_heads, i, 1);
        KT_ST(rope)(t, t->dk + (size_t)i * KV, c->n_kv_heads, i, 1);
    }
    KT_ST(mm_dw)(t, t->dq, n, a->xb1, D, D, KT_ST(grad)(t, G, KN_TP_WQ, l));
    KT_ST(mm_dw)(t, t->dk, n, a->xb1, KV, D, KT_ST(grad)(t, G, KN_TP_WK, l));
    KT_ST(mm_dw)(t, t->dv, n, a->xb1, KV, D, KT_ST(grad)(t, G, KN_TP_WV, l));
    KT_ST(mm_dx)(t, t->dq, n, KT_ST(param)(t, P, KN_TP_WQ, l), D, D, t->dxb, 0);
    KT_ST(mm_dx)(t, t->dk, n, KT_ST(param)(t, P, KN_TP_WK, l), KV, D, t->dxb, 1);
    KT_ST(mm_dx)(t, t->dv, n, KT_ST(param)(t, P, KN_TP_WV, l), KV, D, t->dxb, 1);
    KT_ST(rmsnorm_bwd)(t, a->x_in, KT_ST(param)(t, P, KN_TP_ATTN_NORM, l), a->r1, t->dxb, n,
                       KT_ST(grad)(t, G, KN_TP_ATTN_NORM, l), t->dx);
}

void KT_PUB(backward)(struct KT_S *t, const KT_R *P, const KT_R *dlogits, KT_R *G) {
    const struct kn_train_layout *L = t->L;
    const struct kn_config *c = &L->cfg;
    int n = t->n, D = c->dim, V = c->vocab_size;
    QP_ASSERT(n >= 1);
    // Classifier and final norm.
    const KT_R *W = L->tied ? KT_ST(param)(t, P, KN_TP_EMBED, -1) : KT_ST(param)(t, P, KN_TP_OUTPUT, -1);
    KT_R *dW = L->tied ? KT_ST(grad)(t, G, KN_TP_EMBED, -1) : KT_ST(grad)(t, G, KN_TP_OUTPUT, -1);
    KT_ST(mm_dw)(t, dlogits, n, t->xbf, V, D, dW);
    KT_ST(mm_dx)(t, dlogits, n, W, V, D, t->dxbf, 0);
    memset(t->dx, 0, (size_t)n * D * sizeof(KT_R));
    KT_ST(rmsnorm_bwd)(t, t->x_fin, KT_ST(param)(t, P, KN_TP_OUT_NORM, -1), t->rf, t->dxbf, n,
                       KT_ST(grad)(t, G, KN_TP_OUT_NORM, -1), t->dx);
    for (int l = c->n_layers - 1; l >= 0; l--) KT_ST(block_bwd)(t, P, G, l, n);
    // Embedding: scatter in token order (one thread; repeated tokens add in a fixed order).
    KT_R *dE = KT_ST(grad)(t, G, KN_TP_EMBED, -1);
    for (int i = 0; i < n; i++) {
        KT_R *row = dE + (size_t)t->tokens[i] * D;
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

#undef KT_R
#undef KT_S
#undef KT_PUB
#undef KT_ST
#undef KT_GEMM
#undef KT_EXP
