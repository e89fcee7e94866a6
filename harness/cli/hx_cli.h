// cli.h — the qprobe commands and the plumbing they share: reading texts, opening models with
// one-line errors, progress on stderr, JSON output.
//
// Commands return the process exit status (hx_exit.h: 0 ok, 1 failed check, 2 bad usage or
// input, 3 runtime failure, 130 interrupted); only main() exits.
#ifndef HX_CLI_H
#define HX_CLI_H

#include <stddef.h>
#include <stdint.h>

#include "hx_exit.h"
#include "hx_progress.h"
#include "hx_text.h"

struct hx_model;
struct cJSON;


int hx_cmd_generate(int argc, char **argv);
int hx_cmd_ppl(int argc, char **argv);
int hx_cmd_convert(int argc, char **argv);
int hx_cmd_tasks(int argc, char **argv);
int hx_cmd_eval(int argc, char **argv);
int hx_cmd_inspect(int argc, char **argv);
int hx_cmd_sweep(int argc, char **argv);
int hx_cmd_merge(int argc, char **argv);
// Merges the study in_path into out_path (created when missing) as `qprobe merge` does, printing
// nothing but an error (as cmd); the exit status. For `sweep --reference-db`.
int hx_merge_into(const char *cmd, const char *out_path, const char *in_path);
int hx_cmd_synth(int argc, char **argv);
int hx_cmd_gate(int argc, char **argv);
int hx_cmd_report(int argc, char **argv);
int hx_cmd_tokenize(int argc, char **argv);
int hx_cmd_gemm_peak(int argc, char **argv);
int hx_cmd_kernel_bench(int argc, char **argv);

// Opens a model (+ tokenizer) for cmd; on failure prints the one-line error and returns its exit
// status (hx_exit.h). need_tok: fail when the model has no tokenizer.
int hx_open_model(const char *cmd, const char *path, const char *tok, int need_tok,
                  struct hx_model **out);

// What a command's option parser returns when it printed --help: the command exits 0.
#define HX_CLI_HELP (-1)

// "unknown or incomplete option 'ARG'; see 'qprobe CMD --help'" for the option getopt_long just
// refused (argv[optind - 1]); returns HX_EXIT_USAGE.
int hx_unknown_option(const char *cmd, char **argv);

// Task suites named on a command line or in a configuration, each with its item limit; as many
// as given (no fixed cap).
struct hx_task_list {
    char **names; // n suite names (owned)
    int *limits;  // n item limits (0 = all)
    int n;
};
// Appends one suite. 0 or QP_ENOMEM.
int hx_task_list_add(struct hx_task_list *l, const char *name, int limit);
// Appends every name of a comma-separated list (empty names skipped), each with limit.
int hx_task_list_split(struct hx_task_list *l, const char *csv, int limit);
void hx_task_list_free(struct hx_task_list *l);

// Parses a positive int option value; returns 0 or prints an error and returns HX_EXIT_USAGE.
int hx_parse_int(const char *cmd, const char *opt, const char *val, int lo, int hi, int *out);

// Reads the kernel choices from the environment and passes them down to kernels/ (kn_ops_force,
// kn_engine_defaults): QPROBE_ISA=ref|avx2|avx512 (a kernel level; unset: the best this CPU
// runs), QPROBE_GEMM=own|blas, QPROBE_PANELS=prepack|stream (unset: by model size). Unset or
// empty variables leave the defaults. QP_EINVAL or QP_ENOTSUP with a message naming the
// variable. main() calls it once before running a command.
int hx_kernel_env(char *err);

// Prints a cJSON object on stdout as one line and deletes it.
void hx_print_json(struct cJSON *obj);

#endif
