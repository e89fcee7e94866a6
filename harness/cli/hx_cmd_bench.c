// hx_cmd_bench.c — `qprobe gemm-peak`: the fp32 matrix-product throughput this machine reaches, as
// the yardstick for the engine's speed figures (scripts/bench.sh, docs/BENCH.md): OpenBLAS's
// cblas_sgemm on large square matrices, and qprobe's own kernel (kn_ops.h pack_x / gemm_xp) on the
// shapes of a TinyLlama-1.1B prefill, split over threads exactly as kn_engine.c's kn_matmul does.
// Depends on harness/cli/hx_cli.h, the kernel table (kn_ops.h) and OpenBLAS; measures only, stores nothing.
#include <cblas.h>
#include <cjson/cJSON.h>
#include <getopt.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "hx_cli.h"
#include "kn_cpu.h"
#include "kn_ops.h"
#include "kn_qdot.h"
#include "kn_types.h"
#include "qp.h"

// Timing: one untimed warm-up, then at least BP_MIN_REPS timed runs, more (up to BP_MAX_REPS)
// while the timed runs have taken less than BP_BUDGET_S; the best (shortest) run counts. Two
// threads on a shared 2-CPU machine vary by several per cent, and the best run is the figure
// least disturbed by other jobs. The whole command stays under ~30 s on 2 CPUs.
#define BP_MIN_REPS 2
#define BP_MAX_REPS 5
#define BP_BUDGET_S 2.0

// Rows of activations in the engine shapes: one 512-token chunk of a perplexity run.
#define BP_ROWS 512

// ---------------------------------------------------------------------------------------------
// Types

// One measured product y (m, n) = x (m, k) . W^T.
struct bp_run {
    const char *backend; // "openblas" or "own"
    int m, n, k, threads, reps;
    double seconds; // best timed run
    double gflops;  // 2 m n k / seconds / 1e9
};

// The operands of one product. OpenBLAS: a (m, k), b (n, k) row-major, c (m, n).
// Own kernel: a = x (m, k) row-major, b = W packed in panels (ceil(n / KN_NR), k, KN_NR), c = y.
struct bp_job {
    int m, n, k, threads;
    const float *a, *b;
    float *c;
    const struct kn_ops *ops; // own kernel only
    float *xp;                // own kernel: the packed rows (kn_ops.h pack_x)
};

// Columns per task of the own kernel, as kn_engine.c's KN_NCG.
#define BP_NCG 128

// ---------------------------------------------------------------------------------------------
// Helpers

// Deterministic values in [-1, 1): a 64-bit LCG's top bits. Data never changes a GEMM's speed
// (no denormals, no NaNs here), but the same inputs every run keep it beyond doubt.
static void bp_fill(float *v, size_t n, uint64_t seed) {
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        v[i] = (float)((double)(s >> 40) / (double)(1ull << 24) * 2.0 - 1.0);
    }
}

// wp (ceil(n_out / KN_NR), n_in, KN_NR) := the panels of w (n_out, n_in), as kn_engine.c packs
// a linear layer (kn_ops.h pack_f32, one panel at a time). wp 64-byte aligned.
static void bp_pack(const struct kn_ops *ops, const float *w, int n_out, int n_in, float *wp) {
    for (int c0 = 0; c0 < n_out; c0 += KN_NR)
        ops->pack_f32(w + (size_t)c0 * n_in, (size_t)n_in, QP_MIN(KN_NR, n_out - c0), n_in,
                      wp + (size_t)c0 * n_in);
}

static void bp_blas(const struct bp_job *j) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, j->m, j->n, j->k, 1.0f, j->a, j->k, j->b,
                j->k, 0.0f, j->c, j->n);
}

// kn_matmul's fp32 path with prepacked weights: the rows packed once (row blocks over threads),
// then column groups of BP_NCG over threads.
static void bp_own(const struct bp_job *j) {
    const struct kn_ops *o = j->ops;
    const int xmr = o->xmr, n_blocks = (j->m + xmr - 1) / xmr, n_groups = (j->n + BP_NCG - 1) / BP_NCG;
    const size_t bs = (size_t)xmr * j->k;
#pragma omp parallel num_threads(j->threads) if (j->threads > 1)
    {
#pragma omp for schedule(static)
        for (int b = 0; b < n_blocks; b++)
            o->pack_x(j->a + (size_t)b * bs, (size_t)j->k, QP_MIN(xmr, j->m - b * xmr), j->k, j->xp + (size_t)b * bs);
#pragma omp for schedule(static)
        for (int g = 0; g < n_groups; g++)
            o->gemm_xp(j->xp, j->m, j->b + (size_t)g * BP_NCG * j->k, j->k, QP_MIN(BP_NCG, j->n - g * BP_NCG),
                       j->c + (size_t)g * BP_NCG, (size_t)j->n);
    }
}

// Times fn(j) as described at BP_MIN_REPS; fills r.
static void bp_time(void (*fn)(const struct bp_job *), const struct bp_job *j, const char *backend,
                    struct bp_run *r) {
    fn(j); // warm-up: page faults, thread start, caches
    double best = 1e30, spent = 0;
    int reps = 0;
    while (reps < BP_MIN_REPS || (reps < BP_MAX_REPS && spent < BP_BUDGET_S)) {
        double t0 = qp_now();
        fn(j);
        double dt = qp_now() - t0;
        spent += dt;
        best = QP_MIN(best, dt);
        reps++;
    }
    *r = (struct bp_run){.backend = backend, .m = j->m, .n = j->n, .k = j->k, .threads = j->threads,
                         .reps = reps, .seconds = best,
                         .gflops = 2.0 * j->m * j->n * (double)j->k / best / 1e9};
}

// "model name" of /proc/cpuinfo into buf, or "unknown".
static void bp_cpu_name(char *buf, size_t cap) {
    snprintf(buf, cap, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) != 0) continue;
        const char *v = strchr(line, ':');
        if (!v) break;
        v++;
        while (*v == ' ' || *v == '\t') v++;
        snprintf(buf, cap, "%s", v);
        buf[strcspn(buf, "\n")] = '\0';
        break;
    }
    fclose(f);
}

static const char *bp_blas_parallel(void) {
    switch (openblas_get_parallel()) {
    case 0: return "sequential";
    case 1: return "pthreads";
    case 2: return "openmp";
    default: return "unknown";
    }
}

static void bp_usage(void) {
    printf("usage: qprobe gemm-peak [-t N] [--json]\n\n"
           "fp32 matrix-product throughput of this machine, the yardstick for the engine's speed\n"
           "(make bench). Measured with 1 and with N threads, best of %d..%d timed runs after a\n"
           "warm-up (CLOCK_MONOTONIC), GFLOP/s = 2 M N K / seconds:\n"
           "  openblas  cblas_sgemm, square M = N = K = 2048 and 4096 (threads set with\n"
           "            openblas_set_num_threads)\n"
           "  own       qprobe's kernel (pack_x + gemm_xp of the best ISA, or QPROBE_ISA) on the\n"
           "            shapes of a TinyLlama-1.1B prefill chunk: x (%d, K) times weights K -> N\n"
           "            for 2048 -> 2048, 2048 -> 5632 and 5632 -> 2048, weights prepacked in\n"
           "            panels of %d columns, column groups of 128 split over OpenMP threads as the\n"
           "            engine does\n"
           "Takes about 20 s on 2 CPUs and 300 MB of memory.\n\n"
           "  -t, --threads N   the multi-threaded figure's threads (default: all CPUs)\n"
           "      --json        print the figures as one JSON object\n\n"
           "examples:\n"
           "  qprobe gemm-peak\n"
           "  qprobe gemm-peak -t 2 --json\n"
           "  QPROBE_ISA=avx2 qprobe gemm-peak -t 1\n",
           BP_MIN_REPS, BP_MAX_REPS, BP_ROWS, KN_NR);
}

// ---------------------------------------------------------------------------------------------
// The command

// Square sizes for OpenBLAS; engine shapes (n_in -> n_out) for the own kernel.
static const int bp_square[] = {2048, 4096};
static const int bp_engine[][2] = {{2048, 2048}, {2048, 5632}, {5632, 2048}};
#define BP_MAX_RUNS (2 * (QP_ARRAY_LEN(bp_square) + QP_ARRAY_LEN(bp_engine)))

// Every measured run, and the best figure per backend and thread count.
struct bp_result {
    const struct kn_ops *ops;
    int thr[2], n_thr;
    struct bp_run runs[BP_MAX_RUNS];
    int n_runs;
    double peak[2][2]; // [openblas, own][1 thread, N threads]
};

// Operand buffers sized for the largest case of each backend: 3 x 4096^2 floats for OpenBLAS;
// the own kernel takes x (512, <= 5632) from a, W (<= 5632 x 2048) from b, its panels into wp
// and y (512, <= 5632) into c.
struct bp_buffers {
    float *a, *b, *c, *wp, *xp; // xp: x (512, <= 5632) packed for the own kernel (kn_ops.h pack_x)
};

static void bp_buffers_free(struct bp_buffers *bb) {
    qp_free(bb->a);
    qp_free(bb->b);
    qp_free(bb->c);
    qp_free(bb->wp);
    qp_free(bb->xp);
}

static int bp_buffers_alloc(struct bp_buffers *bb, const struct kn_ops *ops) {
    size_t big = (size_t)4096 * 4096, wmax = (size_t)5632 * 2048;
    bb->a = qp_alloc_array(big, sizeof(float));
    bb->b = qp_alloc_array(big, sizeof(float));
    bb->c = qp_alloc_array(big, sizeof(float));
    bb->wp = qp_alloc_array(wmax, sizeof(float));
    bb->xp = qp_alloc_array((size_t)(BP_ROWS + ops->xmr) * 5632, sizeof(float));
    if (!bb->a || !bb->b || !bb->c || !bb->wp || !bb->xp) {
        bp_buffers_free(bb);
        return QP_ENOMEM;
    }
    bp_fill(bb->a, big, 1);
    bp_fill(bb->b, big, 2);
    memset(bb->c, 0, big * sizeof(float));
    return 0;
}

static void bp_record(struct bp_result *res, int backend, int t, int json) {
    struct bp_run *r = &res->runs[res->n_runs++];
    res->peak[backend][t] = QP_MAX(res->peak[backend][t], r->gflops);
    if (!json)
        fprintf(stderr, "gemm-peak: %s %dx%dx%d, %d thread(s): %.1f GFLOP/s\n", r->backend, r->m, r->n, r->k, r->threads,
                r->gflops);
}

// Own kernel first: OpenBLAS's pthreads spin for a while after each call and would take CPU
// from the OpenMP team that follows.
static void bp_measure(struct bp_result *res, const struct bp_buffers *bb, int json) {
    for (size_t s = 0; s < QP_ARRAY_LEN(bp_engine); s++) {
        int k = bp_engine[s][0], n = bp_engine[s][1];
        bp_pack(res->ops, bb->b, n, k, bb->wp); // W (n, k): the first n*k values of b
        for (int t = 0; t < res->n_thr; t++) {
            struct bp_job j = {.m = BP_ROWS, .n = n, .k = k, .threads = res->thr[t], .a = bb->a, .b = bb->wp,
                               .c = bb->c, .ops = res->ops, .xp = bb->xp};
            bp_time(bp_own, &j, "own", &res->runs[res->n_runs]);
            bp_record(res, 1, t, json);
        }
    }
    for (size_t s = 0; s < QP_ARRAY_LEN(bp_square); s++)
        for (int t = 0; t < res->n_thr; t++) {
            openblas_set_num_threads(res->thr[t]);
            int sq = bp_square[s];
            struct bp_job j = {.m = sq, .n = sq, .k = sq, .threads = openblas_get_num_threads(), .a = bb->a,
                               .b = bb->b, .c = bb->c};
            bp_time(bp_blas, &j, "openblas", &res->runs[res->n_runs]);
            bp_record(res, 0, t, json);
        }
    openblas_set_num_threads(1);
}

static void bp_print_json(const struct bp_result *res, const char *cpu, long n_cpus, int n_threads) {
    const char *core = openblas_get_corename(), *config = openblas_get_config();
    int nt = res->n_thr - 1; // index of the N-thread figures (the 1-thread ones when N = 1)
    cJSON *o = cJSON_CreateObject(), *arr = cJSON_CreateArray();
    cJSON_AddStringToObject(o, "cpu", cpu);
    cJSON_AddNumberToObject(o, "cpus", (double)n_cpus);
    cJSON_AddStringToObject(o, "isa", res->ops->name);
    cJSON_AddStringToObject(o, "openblas_core", core ? core : "unknown");
    cJSON_AddStringToObject(o, "openblas_config", config ? config : "unknown");
    cJSON_AddStringToObject(o, "openblas_parallel", bp_blas_parallel());
    cJSON_AddNumberToObject(o, "threads", n_threads);
    for (int i = 0; i < res->n_runs; i++) {
        const struct bp_run *r = &res->runs[i];
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "backend", r->backend);
        cJSON_AddNumberToObject(j, "m", r->m);
        cJSON_AddNumberToObject(j, "n", r->n);
        cJSON_AddNumberToObject(j, "k", r->k);
        cJSON_AddNumberToObject(j, "threads", r->threads);
        cJSON_AddNumberToObject(j, "reps", r->reps);
        cJSON_AddNumberToObject(j, "seconds", r->seconds);
        cJSON_AddNumberToObject(j, "gflops", r->gflops);
        cJSON_AddItemToArray(arr, j);
    }
    cJSON_AddItemToObject(o, "runs", arr);
    // Flat peaks (best over shapes) for scripts: 1 thread and N threads.
    cJSON_AddNumberToObject(o, "peak_blas_1t", res->peak[0][0]);
    cJSON_AddNumberToObject(o, "peak_blas_nt", res->peak[0][nt]);
    cJSON_AddNumberToObject(o, "peak_own_1t", res->peak[1][0]);
    cJSON_AddNumberToObject(o, "peak_own_nt", res->peak[1][nt]);
    hx_print_json(o);
}

static void bp_print_text(const struct bp_result *res, const char *cpu, long n_cpus) {
    const char *core = openblas_get_corename(), *config = openblas_get_config();
    int nt = res->n_thr - 1;
    printf("cpu: %s, %ld CPUs; qprobe kernels: %s\n", cpu, n_cpus, res->ops->name);
    printf("openblas: core %s, %s build (%s)\n\n", core ? core : "unknown", bp_blas_parallel(), config ? config : "?");
    printf("%-9s %-22s %7s %5s %9s %9s\n", "backend", "M x N x K", "threads", "reps", "seconds", "GFLOP/s");
    for (int i = 0; i < res->n_runs; i++) {
        const struct bp_run *r = &res->runs[i];
        char shape[64];
        snprintf(shape, sizeof shape, "%d x %d x %d", r->m, r->n, r->k);
        printf("%-9s %-22s %7d %5d %9.4f %9.1f\n", r->backend, shape, r->threads, r->reps, r->seconds, r->gflops);
    }
    printf("\npeak GFLOP/s    1 thread  %d threads\n", res->thr[nt]);
    printf("  openblas      %8.1f  %9.1f\n", res->peak[0][0], res->peak[0][nt]);
    printf("  own kernel    %8.1f  %9.1f   (%.0f %% / %.0f %% of openblas)\n", res->peak[1][0], res->peak[1][nt],
           100 * res->peak[1][0] / res->peak[0][0], 100 * res->peak[1][nt] / res->peak[0][nt]);
}

// Options: the thread count and --json; HX_CLI_HELP when --help was printed.
static int bp_parse_opts(int argc, char **argv, int *n_threads, int *json) {
    static const struct option opts[] = {{"threads", required_argument, 0, 't'},
                                         {"json", no_argument, 0, 'j'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    int c, rc = 0;
    optind = 1;
    opterr = 0;
    while (!rc && (c = getopt_long(argc, argv, "t:h", opts, NULL)) != -1) {
        switch (c) {
        case 't': rc = hx_parse_int("gemm-peak", "--threads", optarg, 1, 1024, n_threads); break;
        case 'j': *json = 1; break;
        case 'h': bp_usage(); return HX_CLI_HELP;
        default: return hx_unknown_option("gemm-peak", argv);
        }
    }
    if (!rc && optind < argc) rc = hx_usage_error("gemm-peak", "unexpected argument '%s'", argv[optind]);
    return rc;
}

int hx_cmd_gemm_peak(int argc, char **argv) {
    int n_threads = qp_cpu_count(), json = 0;
    int rc = bp_parse_opts(argc, argv, &n_threads, &json);
    if (rc) return rc == HX_CLI_HELP ? HX_EXIT_OK : rc;
    struct bp_result res = {.ops = kn_ops_best(), .thr = {1, n_threads}, .n_thr = n_threads > 1 ? 2 : 1};
    struct bp_buffers bb = {0};
    if (bp_buffers_alloc(&bb, res.ops)) return hx_fail("gemm-peak", QP_ENOMEM, "out of memory (needs about 300 MB)");
    bp_measure(&res, &bb, json);
    bp_buffers_free(&bb);
    char cpu[256];
    bp_cpu_name(cpu, sizeof cpu);
    long n_cpus = sysconf(_SC_NPROCESSORS_ONLN);
    if (json) bp_print_json(&res, cpu, n_cpus, n_threads);
    else bp_print_text(&res, cpu, n_cpus);
    return HX_EXIT_OK;
}

// ---------------------------------------------------------------------------------------------
// `qprobe kernel-bench`: every kernel family on every ISA path this CPU runs, side by side, one
// thread, so that `make bench` shows that dispatch picks the fastest path of each family.


#define KB_ISAS 3
static const char *const kb_isas[KB_ISAS] = {"ref", "avx2", "avx512"};

// Thread CPU seconds: a shared machine's other jobs take wall time, not this thread's CPU time.
static double kb_cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

struct kb_ctx {
    const struct kn_ops *ops;
    const struct kn_qtype *qt;
    float *x, *y, *wp, *xp, *s;
    uint16_t *h;
    uint8_t *wq, *aq;
};

// Best of three timed runs after a warm-up; returns the work units per second (units: per call).
static double kb_rate(void (*fn)(struct kb_ctx *), struct kb_ctx *c, double units) {
    fn(c);
    double best = 1e30;
    for (int r = 0; r < 3; r++) {
        double t0 = kb_cpu_now();
        fn(c);
        best = QP_MIN(best, kb_cpu_now() - t0);
    }
    return units / QP_MAX(best, 1e-9);
}

enum { KB_M = 64, KB_K = 2048, KB_N = 512, KB_KEYS = 512, KB_HS = 64, KB_Q = 32, KB_QROWS = 32 };

static void kb_fma(struct kb_ctx *c) { c->ops->fma_loop(1 << 22); }
static void kb_gemm(struct kb_ctx *c) {
    c->ops->pack_x(c->x, KB_K, KB_M, KB_K, c->xp);
    for (int g = 0; g < KB_N; g += 128) c->ops->gemm_xp(c->xp, KB_M, c->wp + (size_t)g * KB_K, KB_K, 128, c->y + g, KB_N);
}
static void kb_pack16(struct kb_ctx *c) {
    for (int p = 0; p < KB_N; p += KN_NR) c->ops->pack_f16(c->h + (size_t)p * KB_K, KB_K, KN_NR, KB_K, c->wp + (size_t)p * KB_K);
}
static void kb_attn(struct kb_ctx *c) {
    c->ops->attend_rows(c->y, KB_HS, c->x, KB_HS, KB_Q, c->x, KB_KEYS + KB_Q, c->x + 4096, KB_HS, KB_KEYS, c->s,
                        KB_KEYS + KB_Q + 16);
}
static void kb_rows(struct kb_ctx *c) {
    for (int r = 0; r < 16; r++) {
        c->ops->rmsnorm(c->y + (size_t)r * KB_K, c->x + (size_t)r * KB_K, c->x, KB_K, 1e-5f);
        c->ops->swiglu(c->y + (size_t)r * KB_K, c->y + (size_t)r * KB_K, c->x + (size_t)r * KB_K, KB_K);
    }
}
static void kb_tile(struct kb_ctx *c) {
    size_t wb = kn_row_bytes(c->qt->wtype, KB_K), ab = kn_row_bytes(c->qt->act_type, KB_K);
    for (int j = 0; j < KB_QROWS; j += 16) c->qt->dot_tile(c->wq + j * wb, wb, 16, c->aq, ab, KB_M, KB_K, c->y + j, KB_QROWS);
}
static void kb_dot(struct kb_ctx *c) {
    size_t wb = kn_row_bytes(c->qt->wtype, KB_K);
    for (int j = 0; j < KB_N; j++) c->y[j] = c->qt->dot(c->wq + j * wb, c->aq, KB_K);
}

// One table row: a family's rate on each ISA path; "*" marks the path dispatch picks, and a
// note names a faster path when there is one (more than 5 % faster).
static void kb_row(const char *family, const char *unit, const double rate[KB_ISAS], const char *chosen) {
    printf("| %s | %s |", family, unit);
    int best = -1, pick = -1;
    for (int i = 0; i < KB_ISAS; i++) {
        if (rate[i] > 0) printf(" %.1f%s |", rate[i], strcmp(kb_isas[i], chosen) == 0 ? " *" : "");
        else printf(" — |");
        if (rate[i] > 0 && (best < 0 || rate[i] > rate[best])) best = i;
        if (strcmp(kb_isas[i], chosen) == 0) pick = i;
    }
    if (pick >= 0 && best >= 0 && rate[best] > 1.05 * rate[pick]) printf(" %s is faster |\n", kb_isas[best]);
    else printf(" chosen is fastest |\n");
}

static int kb_alloc(struct kb_ctx *c) {
    c->x = qp_alloc_array((size_t)KB_M * KB_K + 8192 * 4, sizeof(float));
    c->y = qp_alloc_array((size_t)KB_M * KB_N + KB_K * 16, sizeof(float));
    c->wp = qp_alloc_array((size_t)KB_N * KB_K, sizeof(float));
    c->xp = qp_alloc_array((size_t)(KB_M + 16) * KB_K, sizeof(float));
    c->s = qp_alloc_array((size_t)KB_Q * (KB_KEYS + KB_Q + 16), sizeof(float));
    c->h = qp_alloc_array((size_t)KB_N * KB_K, sizeof(uint16_t));
    c->wq = qp_alloc_array((size_t)KB_N * KB_K, 2);
    c->aq = qp_alloc_array((size_t)KB_M * KB_K, 2);
    if (!c->x || !c->y || !c->wp || !c->xp || !c->s || !c->h || !c->wq || !c->aq) return QP_ENOMEM;
    bp_fill(c->x, (size_t)KB_M * KB_K + 8192 * 4, 3);
    bp_fill(c->wp, (size_t)KB_N * KB_K, 4);
    for (size_t i = 0; i < (size_t)KB_N * KB_K; i++) c->h[i] = qp_fp32_to_fp16(c->wp[i]);
    return 0;
}

static void kb_free(struct kb_ctx *c) {
    qp_free(c->x), qp_free(c->y), qp_free(c->wp), qp_free(c->xp), qp_free(c->s), qp_free(c->h), qp_free(c->wq),
        qp_free(c->aq);
}

// Weight rows of type t: each row quantized from random floats by the reference path of
// kn_qtype's activation quantizer is not a weight quantizer, so rows are random bytes with
// their fp16 scales kept finite (the speed does not depend on the values).
static void kb_fill_q(struct kb_ctx *c, enum kn_type t) {
    const struct kn_type_info *ti = kn_type_info(t);
    size_t wb = kn_row_bytes(t, KB_K);
    uint64_t st = 7;
    for (size_t i = 0; i < wb * KB_N; i++) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        c->wq[i] = (uint8_t)(st >> 56) & 0x3f; // small values: finite fp16 fields everywhere
    }
    (void)ti;
    const struct kn_qtype *r = kn_qtype_for_isa(t, "ref");
    size_t ab = kn_row_bytes(r->act_type, KB_K);
    for (int m = 0; m < KB_M; m++) r->quantize_act(c->x + (size_t)(m % 8) * KB_K, c->aq + m * ab, KB_K);
}

int hx_cmd_kernel_bench(int argc, char **argv) {
    if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("usage: qprobe kernel-bench\n\nEvery kernel family on every ISA path this CPU runs (ref, avx2, avx512),\n"
               "one thread, thread CPU time, best of 3: a Markdown table; '*' marks the path dispatch\n"
               "picks (QPROBE_ISA forces one). Takes about 10 s.\n");
        return HX_EXIT_OK;
    }
    if (argc > 1) return hx_usage_error("kernel-bench", "unexpected argument '%s'", argv[1]);
    struct kb_ctx c = {0};
    if (kb_alloc(&c)) {
        kb_free(&c);
        fprintf(stderr, "qprobe kernel-bench: out of memory\n");
        return HX_EXIT_FAIL;
    }
    const char *chosen = kn_ops_best()->name;
    char flags[128];
    printf("CPU: %s; %s. One thread; rates in thread CPU time.\n\n", kn_cpu()->model, kn_cpu_flags(flags, sizeof flags));
    printf("| kernel family | unit | ref | avx2 | avx512 | |\n|---|---|---:|---:|---:|---|\n");
    static const struct { const char *name, *unit; void (*fn)(struct kb_ctx *); double units; } fam[] = {
        {"FMA peak (registers only)", "GFLOP/s", kb_fma, 0},
        {"fp32 GEMM (pack_x + gemm_xp), 64 x 512 x 2048", "GFLOP/s", kb_gemm, 2e-9 * KB_M * KB_N * KB_K},
        {"F16 panel packing", "G weights/s", kb_pack16, 1e-9 * KB_N * KB_K},
        {"attention, 32 queries x 512 keys x 64", "GFLOP/s", kb_attn, 1e-9 * 4.0 * KB_Q * KB_KEYS * KB_HS},
        {"rmsnorm + swiglu", "G values/s", kb_rows, 1e-9 * 16 * KB_K},
    };
    for (size_t f = 0; f < QP_ARRAY_LEN(fam); f++) {
        double rate[KB_ISAS] = {0};
        for (int i = 0; i < KB_ISAS; i++) {
            if (!(c.ops = kn_ops_for(kb_isas[i]))) continue;
            if (fam[f].fn == kb_fma) {
                double t0 = kb_cpu_now(), flops = c.ops->fma_loop(1 << 22);
                rate[i] = flops / QP_MAX(kb_cpu_now() - t0, 1e-9) * 1e-9;
            } else {
                rate[i] = kb_rate(fam[f].fn, &c, fam[f].units);
            }
        }
        kb_row(fam[f].name, fam[f].unit, rate, chosen);
    }
    static const enum kn_type qtypes[] = {KN_Q8_0, KN_Q4_0, KN_Q4_1, KN_Q5_0, KN_Q5_1, KN_IQ4_NL,
                                          KN_Q2_K, KN_Q3_K, KN_Q4_K, KN_Q5_K, KN_Q6_K};
    for (size_t q = 0; q < QP_ARRAY_LEN(qtypes); q++) {
        kb_fill_q(&c, qtypes[q]);
        const char *qchosen = kn_qtype_for(qtypes[q])->isa;
        double tile[KB_ISAS] = {0}, dot[KB_ISAS] = {0};
        for (int i = 0; i < KB_ISAS; i++) {
            if (!kn_ops_for(kb_isas[i]) || !(c.qt = kn_qtype_for_isa(qtypes[q], kb_isas[i])) ||
                strcmp(c.qt->isa, kb_isas[i]) != 0)
                continue; // this CPU runs another table's kernels under that name
            tile[i] = kb_rate(kb_tile, &c, 1e-9 * KB_QROWS * KB_M * KB_K);
            dot[i] = kb_rate(kb_dot, &c, 1e-9 * KB_N * (double)kn_row_bytes(qtypes[q], KB_K));
        }
        char name[96];
        snprintf(name, sizeof name, "act=q8 tile %s, 32 x 64 x 2048", kn_type_info(qtypes[q])->name);
        kb_row(name, "GMAC/s", tile, qchosen);
        snprintf(name, sizeof name, "act=q8 one-row dot %s (decode)", kn_type_info(qtypes[q])->name);
        kb_row(name, "GB/s of weights", dot, qchosen);
    }
    kb_free(&c);
    return HX_EXIT_OK;
}
