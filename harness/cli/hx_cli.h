// cli.h — the qprobe commands and the plumbing they share: reading texts, opening models with
// one-line errors, progress on stderr, JSON output.
//
// Commands return the process exit status (0 ok, 1 failed check or regression, 2 bad usage or
// input); only main() exits.
#ifndef HX_CLI_H
#define HX_CLI_H

#include <stddef.h>
#include <stdint.h>

#include "hx_progress.h"
#include "hx_text.h"

struct hx_model;
struct cJSON;

#define HX_EXIT_OK 0
#define HX_EXIT_FAIL 1
#define HX_EXIT_USAGE 2
#define HX_EXIT_RUNTIME 3 // a runtime failure: out of memory, training diverged (QP_ENUMERIC)

int hx_cmd_generate(int argc, char **argv);
int hx_cmd_ppl(int argc, char **argv);
int hx_cmd_convert(int argc, char **argv);
int hx_cmd_tasks(int argc, char **argv);
int hx_cmd_eval(int argc, char **argv);
int hx_cmd_inspect(int argc, char **argv);
int hx_cmd_sweep(int argc, char **argv);
int hx_cmd_merge(int argc, char **argv);
int hx_cmd_synth(int argc, char **argv);
int hx_cmd_gate(int argc, char **argv);
int hx_cmd_report(int argc, char **argv);

// Prints "qprobe CMD: MSG" to stderr and returns HX_EXIT_USAGE.
int hx_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// Opens a model (+ tokenizer) for cmd; on failure prints the one-line error and returns
// HX_EXIT_USAGE. need_tok: fail when the model has no tokenizer.
int hx_open_model(const char *cmd, const char *path, const char *tok, int need_tok,
                  struct hx_model **out);

// Parses a positive int option value; returns 0 or prints an error and returns HX_EXIT_USAGE.
int hx_parse_int(const char *cmd, const char *opt, const char *val, int lo, int hi, int *out);

// Prints a cJSON object on stdout as one line and deletes it.
void hx_print_json(struct cJSON *obj);

#endif
