// hx_main.c — the qprobe command line: one binary, subcommands. Only this file calls exit().
#include <cblas.h>
#include <cjson/cJSON.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hx_cli.h"
#include "kn_engine.h"
#include "kn_ops.h"
#include "qp.h"

#ifndef QP_COMMIT
#define QP_COMMIT "unknown"
#endif

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *what;
} hx_commands[] = {
    {"generate", hx_cmd_generate, "greedy text generation from a prompt"},
    {"eval", hx_cmd_eval, "one variant against the reference, every diagnostic, into a study database"},
    {"sweep", hx_cmd_sweep, "many variants of one model, everything measured and stored (resumable, shardable)"},
    {"merge", hx_cmd_merge, "join study databases (the shards of a sweep)"},
    {"gate", hx_cmd_gate, "pass/fail of a run against a baseline under rules (exit 1 on regression, JUnit XML)"},
    {"report", hx_cmd_report, "comparison report of a study: figures, index.html, summary.md, CSV"},
    {"inspect", hx_cmd_inspect, "weight outliers of the unquantized model and which formats fit its shapes"},
    {"ppl", hx_cmd_ppl, "perplexity of a text under a protocol (llamacpp or full)"},
    {"tasks", hx_cmd_tasks, "task suites by log-likelihood: accuracy, flips vs a quantized variant"},
    {"convert", hx_cmd_convert, "write a model as GGUF (f32 or f16)"},
    {"synth", hx_cmd_synth, "write a synthetic Llama model of a real shape as GGUF (speed tests)"},
    {"tokenize", hx_cmd_tokenize, "the token ids a text becomes with a model's vocabulary (or a tokenizer file)"},
    {"gemm-peak", hx_cmd_gemm_peak, "fp32 matrix-product GFLOP/s of this machine: OpenBLAS and own kernel"},
    {"kernel-bench", hx_cmd_kernel_bench, "every kernel family on every ISA path of this CPU, side by side"},
};

static void hx_main_usage(FILE *f) {
    fprintf(f, "usage: qprobe COMMAND [OPTIONS]    (qprobe COMMAND --help for its options)\n\n"
               "qprobe %s — evaluation and diagnostics for quantized language models.\n\n"
               "commands:\n", qp_version);
    for (size_t i = 0; i < QP_ARRAY_LEN(hx_commands); i++)
        fprintf(f, "  %-10s %s\n", hx_commands[i].name, hx_commands[i].what);
    fprintf(f, "\n%s", hx_exit_help);
    fprintf(f, "environment: QPROBE_ISA=ref|avx2|avx512 forces a kernel path (engine and k-quant search);\n"
               "QPROBE_GEMM=own|blas picks the matrix-product backend (own kernels, default, or OpenBLAS);\n"
               "QPROBE_PANELS=prepack|stream how the own GEMM holds its weights (default: by model size).\n\n"
               "examples:\n"
               "  qprobe ppl -m stories260K.bin -z tok512.bin --text eval.txt -q q4_k_m\n"
               "  qprobe sweep -c examples/sweep-stories260K.json --db study.sqlite\n"
               "  qprobe report --db study.sqlite -o report\n");
}

// Version, commit, the kernel paths this CPU runs and the one chosen, and the libraries' versions.
static int hx_main_version(void) {
    static const char *const isas[] = {"ref", "avx2", "avx512"};
    char supported[64] = "";
    for (size_t i = 0; i < QP_ARRAY_LEN(isas); i++)
        if (kn_ops_for(isas[i]))
            snprintf(supported + strlen(supported), sizeof supported - strlen(supported), "%s%s", i ? " " : "", isas[i]);
    const struct kn_ops *best = kn_ops_best();
    const char *core = openblas_get_corename(), *config = openblas_get_config();
    printf("qprobe %s (commit %s)\n", qp_version, QP_COMMIT);
    printf("kernels: %s supported; %s chosen%s\n", supported, best ? best->name : "none",
           getenv("QPROBE_ISA") && *getenv("QPROBE_ISA") ? " (QPROBE_ISA)" : "");
    printf("sqlite %s, cjson %s, openblas %s (core %s)\n", sqlite3_libversion(), cJSON_Version(),
           config ? config : "unknown", core ? core : "unknown");
    return HX_EXIT_OK;
}

int main(int argc, char **argv) {
    // A file-size limit (ulimit -f) must give a clean "file too large" error from write(), not a
    // kill in the middle of a database transaction.
    signal(SIGXFSZ, SIG_IGN);
    // OpenBLAS picks its kernels when it loads: if it picked half-speed ones for this CPU, set
    // OPENBLAS_CORETYPE and start again (once: the variable is then set).
    const char *core = kn_blas_coretype_needed(getenv("OPENBLAS_CORETYPE"));
    if (core && setenv("OPENBLAS_CORETYPE", core, 1) == 0) execv("/proc/self/exe", argv);
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        hx_main_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? HX_EXIT_USAGE : HX_EXIT_OK;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0) {
        char err[QP_ERRLEN];
        if (hx_kernel_env(err)) return hx_usage_error("--version", "%s", err);
        return hx_main_version();
    }
    char err[QP_ERRLEN];
    for (size_t i = 0; i < QP_ARRAY_LEN(hx_commands); i++) {
        if (strcmp(argv[1], hx_commands[i].name) != 0) continue;
        if (hx_kernel_env(err)) return hx_usage_error(argv[1], "%s", err);
        return hx_commands[i].fn(argc - 1, argv + 1);
    }
    fprintf(stderr, "qprobe: '%s' is not a command; see 'qprobe --help'\n", argv[1]);
    return HX_EXIT_USAGE;
}
