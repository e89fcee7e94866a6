// sweep.h — the sweep configuration (`qprobe sweep -c sweep.json`, docs/SWEEP.md): model, texts,
// protocol, diagnostics, task suites and the variants (an explicit list and grids), validated
// completely before any work. Every error names its JSON path:
//   "sweep.json: variants[3]: bad spec 'rtn:bits=9': ..." or "eval.ctx: must be an integer >= 4".
// Unknown keys are errors. Depends on cJSON, the spec grammar and eval.h.
#ifndef HX_SWEEP_H
#define HX_SWEEP_H

#include "hx_eval.h"
#include "hx_gen.h"

struct hx_sweep_config {
    char *path;              // the configuration file
    char *json;              // its text, stored with the run
    char *model, *tokenizer; // tokenizer may be NULL (GGUF models carry one)
    char *text;              // evaluation text
    char *calib;             // calibration text (NULL: none)
    int calib_sequences, calib_length, calib_allow_overlap;
    char *db;                // NULL when the configuration names none (then --db is required)
    char *label;
    enum hx_protocol protocol;
    int ctx, max_chunks, threads; // threads 0 = all CPUs
    int layer_chunks, act_chunks, sens_chunks, sens_tensors, sens_estimate, keep_tokens, grid;
    char **task_names;       // n_tasks suites: a built-in suite, a dataset name, or a JSONL path
                             // (resolved); as many as the file lists
    int *task_limits;        // items per suite (0 = all)
    int n_tasks;
    char **variants;         // canonical specs, in order, duplicates removed
    int n_variants;
    // "generate": {"prompts": N, "tokens": L, "prompt_tokens": P, "k": K, "temperature": T,
    // "seed": S, "prompts_file": FILE} (docs/GENERATION.md); gen.prompts_path points into
    // gen_prompts_file (resolved).
    struct hx_gen_opts gen;
    char *gen_prompts_file;
};

// Loads and validates path. Relative paths in the file are relative to the file's directory;
// "${NAME}" is replaced by the environment variable NAME (an error when unset). Input files
// must exist. 0, or QP_EINVAL/QP_EIO/QP_ENOMEM with one line in err. Free with
// hx_sweep_config_free.
int hx_sweep_config_load(const char *path, struct hx_sweep_config **out, char *err);
void hx_sweep_config_free(struct hx_sweep_config *c);

#endif
