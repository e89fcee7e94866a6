// rpt_gate_cmd.c — `qprobe gate`: the regression gate of nightly jobs (rpt_gate.h, docs/GATE.md).
// Reads the study read-only; exit 0 when every check passes, 1 on any regression, 2 on an error.
//
// Depends on harness/cli/hx_cli.h and harness/store/hx_store.h for the command plumbing; only main() exits.
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hx_cli.h"
#include "qp.h"
#include "rpt_gate.h"
#include "hx_store.h"

static void rpt_gate_usage(void) {
    printf("usage: qprobe gate --db STUDY.sqlite [--run ID] --baseline reference|previous|RUN_ID|OTHER.sqlite\n"
           "                   --rules GATE.json [--junit OUT.xml]\n\n"
           "Checks every variant of one run of a study against a baseline under the limits of a\n"
           "rules file (docs/GATE.md) and prints a table: variant x rule, value, limit, PASS/FAIL.\n\n"
           "      --db FILE         the study database (read only)\n"
           "      --run ID          the run to check (default: the latest, highest id)\n"
           "      --baseline B      reference: the run's own unquantized model;\n"
           "                        previous: the run before it in the same database;\n"
           "                        RUN_ID: an earlier run of the same database;\n"
           "                        FILE: the latest run of another database with the same model\n"
           "                        (variants are matched by spec)\n"
           "      --rules FILE      the limits, e.g. examples/gate.json\n"
           "      --junit FILE      also write JUnit XML (one testcase per variant and rule)\n\n"
           "exit status: 0 every check passed, 1 a regression, 2 an error (bad database, no such run,\n"
           "bad rules, no baseline, a JUnit file that cannot be created), 3 out of memory or the JUnit\n"
           "file could not be written.\n\n"
           "examples:\n"
           "  qprobe gate --db study.sqlite --baseline reference --rules examples/gate.json\n"
           "  qprobe gate --db tonight.sqlite --baseline last-night.sqlite --rules gate.json --junit gate.xml\n"
           "  qprobe gate --db study.sqlite --run 3 --baseline 2 --rules gate.json\n");
}

static int rpt_gate_parse_run(const char *val, int64_t *out) {
    char *end;
    errno = 0;
    long long v = strtoll(val, &end, 10);
    if (errno || end == val || *end || v <= 0)
        return hx_usage_error("gate", "--run '%s': expected a positive run id", val);
    *out = v;
    return 0;
}

int hx_cmd_gate(int argc, char **argv) {
    enum { O_DB = 256, O_RUN, O_BASE, O_RULES, O_JUNIT };
    static const struct option opts[] = {
        {"db", required_argument, 0, O_DB},       {"run", required_argument, 0, O_RUN},
        {"baseline", required_argument, 0, O_BASE}, {"rules", required_argument, 0, O_RULES},
        {"junit", required_argument, 0, O_JUNIT}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    const char *db_path = NULL, *base_arg = NULL, *rules_path = NULL, *junit = NULL;
    int64_t run_id = 0;
    int c, rc;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_DB: db_path = optarg; break;
        case O_RUN: if ((rc = rpt_gate_parse_run(optarg, &run_id))) return rc; break;
        case O_BASE: base_arg = optarg; break;
        case O_RULES: rules_path = optarg; break;
        case O_JUNIT: junit = optarg; break;
        case 'h': rpt_gate_usage(); return HX_EXIT_OK;
        default: return hx_unknown_option("gate", argv);
        }
    }
    if (optind < argc) return hx_usage_error("gate", "unexpected argument '%s'", argv[optind]);
    if (!db_path) return hx_usage_error("gate", "no database given (--db FILE)");
    if (!base_arg) return hx_usage_error("gate", "no baseline given (--baseline reference|previous|RUN_ID|FILE)");
    if (!rules_path) return hx_usage_error("gate", "no rules given (--rules FILE)");

    char err[QP_ERRLEN];
    struct rpt_gate_baseline base;
    if ((rc = rpt_gate_baseline_parse(base_arg, &base, err))) return hx_fail("gate", rc, "%s", err);
    // The rules first: a bad rules file is reported whatever the state of the database.
    struct rpt_gate_rules *rules;
    if ((rc = rpt_gate_rules_load(rules_path, &rules, err))) return hx_fail("gate", rc, "%s", err);
    struct hx_store *st;
    if ((rc = hx_store_open(db_path, HX_STORE_READONLY, &st, err))) {
        rpt_gate_rules_destroy(rules);
        return hx_fail("gate", rc, "%s", err);
    }
    struct rpt_gate_result *res;
    rc = rpt_gate_evaluate(st, run_id, &base, rules, &res, err);
    hx_store_close(st);
    rpt_gate_rules_destroy(rules);
    if (rc) return hx_fail("gate", rc, "%s", err);
    rpt_gate_print(stdout, res);
    fflush(stdout);
    int status = res->n_fail ? HX_EXIT_FAIL : HX_EXIT_OK;
    if (junit && (rc = rpt_gate_write_junit(junit, res, err))) status = hx_fail("gate", rc, "%s", err);
    rpt_gate_result_destroy(res);
    return status;
}
