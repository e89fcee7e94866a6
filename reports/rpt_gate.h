// rpt_gate.h — the regression gate (`qprobe gate`, docs/GATE.md): limits per metric read from a
// JSON rules file, checked for every variant of one run of a study database against a baseline
// (the run's reference model, an earlier run, or a run in another database), reported as a table
// and as JUnit XML.
//
// The rules file is {"defaults": {LIMITS}, "variants": [{"match": GLOB, LIMITS}, ...]}; LIMITS
// are the keys of enum rpt_gate_rule (rpt_gate_rule_key) with non-negative numbers, or null to
// lift a limit set earlier. An entry applies to a variant when its glob (fnmatch, or any glob of
// an array) matches the spec; later entries override earlier ones.
//
// Depends on kernels/qp.h, harness/store/hx_store.h, SQLite and cJSON; nothing depends on it but the
// `gate` command (rpt_gate_cmd.c).
#ifndef RPT_GATE_H
#define RPT_GATE_H

#include <stdint.h>
#include <stdio.h>

struct hx_store;

// ---------------------------------------------------------------------------------------------
// Rules

enum rpt_gate_rule {
    RPT_GATE_PPL_INCREASE, // max_ppl_increase_pct: 100 (ppl - ppl_baseline) / ppl_baseline
    RPT_GATE_KLD_MEAN,     // max_kld_mean: metric kld/mean of the variant
    RPT_GATE_KLD_P99,      // max_kld_p99: metric kld/p99
    RPT_GATE_TOP1,         // min_top1: metric top1/agreement, in [0, 1]
    RPT_GATE_RECOVERY,     // min_recovery: worst acc / baseline acc over the task suites
    RPT_GATE_FLIPS,        // max_significant_flips: task suites with McNemar p < 0.05, acc down
    // Free-running generation against the reference (docs/GENERATION.md), metrics gen/NAME:
    RPT_GATE_IDENTICAL,    // min_identical_share: share of prompts continued identically over L tokens
    RPT_GATE_LOOP_INC,     // max_loop_rate_increase: loop rate minus the reference's
    RPT_GATE_FIRST_DIV,    // min_median_first_divergence: median first differing position (tokens)
    RPT_GATE_N_RULES
};

// Silent degradation (docs/GATE.md): the teacher-forced rules pass (max_ppl_increase_pct and
// max_kld_mean, those of them that are set, at least one) while a generation rule or
// max_significant_flips fails. 1 when the checks of one variant, checks[0..n), say so; then
// what[] names the failed rules ("min_identical_share, max_significant_flips").
struct rpt_gate_check;
int rpt_gate_silent(const struct rpt_gate_check *checks, int n, char *what, size_t cap);

// The significance level of max_significant_flips.
#define RPT_GATE_FLIP_ALPHA 0.05

// The rules-file key of a rule ("max_kld_mean"); never NULL for a valid rule.
const char *rpt_gate_rule_key(enum rpt_gate_rule rule);

// The limits that apply to one variant: limit[r] is meaningful where set[r] is 1.
struct rpt_gate_limits {
    int set[RPT_GATE_N_RULES];
    double limit[RPT_GATE_N_RULES];
};

struct rpt_gate_rules; // opaque

// Parses a rules document of len bytes; name (the file's path) is quoted in messages. A bad
// document gets QP_EFORMAT and a one-line message naming the JSON path of the fault:
// "cannot use rules 'gate.json': variants[1].max_kld_mean: must be a non-negative number".
// *out is NULL on failure; free it with rpt_gate_rules_destroy.
int rpt_gate_rules_parse(const char *text, size_t len, const char *name, struct rpt_gate_rules **out,
                         char *err);
// Reads and parses the rules file at path (QP_EIO when it cannot be read).
int rpt_gate_rules_load(const char *path, struct rpt_gate_rules **out, char *err);
void rpt_gate_rules_destroy(struct rpt_gate_rules *rules);

// The rules document's top-level "comment" (NULL when none) and the SHA-256 (hex) of its bytes,
// which names the rule set in the report's history.
const char *rpt_gate_rules_comment(const struct rpt_gate_rules *rules);
const char *rpt_gate_rules_sha256(const struct rpt_gate_rules *rules);

// The limits for a spec: the defaults, then every matching variants[] entry in order.
void rpt_gate_rules_for(const struct rpt_gate_rules *rules, const char *spec,
                        struct rpt_gate_limits *out);

// ---------------------------------------------------------------------------------------------
// Baseline

enum rpt_gate_base_kind {
    RPT_GATE_BASE_REFERENCE, // the reference variant (is_reference = 1) of the current run
    RPT_GATE_BASE_RUN,       // another run of the same database, variants matched by spec
    RPT_GATE_BASE_FILE,      // the latest run of another database with the same model_sha256
    RPT_GATE_BASE_PREVIOUS,  // the run before the current one in the same database (the highest
                             // lower id), variants matched by spec
};

struct rpt_gate_baseline {
    enum rpt_gate_base_kind kind;
    int64_t run_id;   // RPT_GATE_BASE_RUN
    const char *path; // RPT_GATE_BASE_FILE; borrowed from the caller
};

// Reads the --baseline argument: "reference", "previous", a run id (digits only), or a database
// path (write ./123 or ./previous for a file with such a name). QP_EINVAL when empty.
int rpt_gate_baseline_parse(const char *arg, struct rpt_gate_baseline *out, char *err);

// ---------------------------------------------------------------------------------------------
// Checks

enum rpt_gate_status { RPT_GATE_PASS, RPT_GATE_FAIL, RPT_GATE_SKIP };

#define RPT_GATE_DETAIL 256

// One (variant, rule) check. rule is a rules key, or "variant_present" for a variant of the
// baseline that the current run lacks.
struct rpt_gate_check {
    char *spec;       // owned by the result
    const char *rule; // static string
    enum rpt_gate_status status;
    double value, limit;          // NaN when there is none (skipped, metric missing)
    char detail[RPT_GATE_DETAIL]; // the numbers of a failure, the reason of a skip
};

struct rpt_gate_result {
    int64_t run_id;      // the current run
    int64_t base_run_id; // the baseline's run (the current run for RPT_GATE_BASE_REFERENCE)
    char current[1100];  // "run 2 of 'study.sqlite'"
    char baseline[1100]; // "the reference of run 2", "run 1", "run 3 of 'old.sqlite'"
    struct rpt_gate_check *checks;
    int n_checks, n_pass, n_fail, n_skip;
    int n_variants;      // variants of the current run that were checked (reference excluded)
    int n_variants_fail; // ... of which at least one check failed (disappeared ones included)
    char **notes;        // one-line remarks ("q5_k: new, no baseline: ..."), n_notes of them
    int n_notes;
};

// Checks every non-reference variant of run_id (<= 0: the latest run, the highest id) of the
// study st against the baseline under the rules. Errors (no such run, no runs, no baseline, an
// unreadable or foreign baseline database, a baseline that is the current run) return a negative
// QP_E* code with a one-line message; regressions are not errors but failed checks in *out.
// *out is NULL on failure; free it with rpt_gate_result_destroy.
int rpt_gate_evaluate(struct hx_store *st, int64_t run_id, const struct rpt_gate_baseline *base,
                      const struct rpt_gate_rules *rules, struct rpt_gate_result **out, char *err);
void rpt_gate_result_destroy(struct rpt_gate_result *res);

// The summary on f: a header, one row per check (variant, rule, value, limit, PASS/FAIL/SKIP,
// detail), the notes, and a final line beginning "gate: PASS" or "gate: FAIL".
void rpt_gate_print(FILE *f, const struct rpt_gate_result *res);

// Writes JUnit XML: one <testsuite name="qprobe-gate">, one <testcase classname="SPEC"
// name="RULE"> per check with <failure> or <skipped>, every string XML-escaped (control bytes
// and invalid UTF-8 become '?'). Written to a temporary file beside path, synced, then renamed
// over path, so a reader never sees half a file. 0 or QP_EIO with err.
int rpt_gate_write_junit(const char *path, const struct rpt_gate_result *res, char *err);

#endif
