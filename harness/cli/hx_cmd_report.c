// rpt_cmd.c — `qprobe report`: the comparison report of a study database (rpt_report.h).
// The top layer: uses harness/cli/hx_cli.h for option plumbing; nothing includes this file's symbols
// but the command table in harness/cli/hx_main.c.
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hx_cli.h"
#include "qp.h"
#include "rpt_report.h"

static void report_usage(void) {
    printf("usage: qprobe report --db STUDY.sqlite [--run ID] -o DIR [--variants SPEC,...] [--gate FILE]\n"
           "                     [--history] [--rules FILE]\n\n"
           "Writes the comparison report of one run of a study database into DIR (docs/REPORT.md):\n"
           "  index.html     self-contained page: findings, sortable variant table, every figure as\n"
           "                 inline SVG, every table, the run's protocol and provenance\n"
           "  summary.md     the variant table, the protocol and the top findings in Markdown\n"
           "  *.csv          variants, layers, sensitivity, weights, activations, grid, tasks\n"
           "  NAME.gp/.dat   one gnuplot script and its data per figure, rendered to NAME.svg and\n"
           "                 NAME.png (re-run `gnuplot NAME.gp` in DIR after restyling)\n\n"
           "Figures: bits per weight vs perplexity, mean KLD, top-1 agreement and task accuracy (Pareto\n"
           "frontier, reference line); per-layer error accumulation; weight and activation outlier\n"
           "histograms; grid collapse vs bits; task accuracy with intervals and flips; throughput and\n"
           "size. Figures without data in the run are skipped. Without gnuplot on PATH, everything but\n"
           "the rendered figures is still written (one warning).\n\n"
           "  --db FILE           the study database (read only)\n"
           "  --run ID            the run to report (default: the latest)\n"
           "  -o, --out DIR       output folder (created when missing; files in it are replaced)\n"
           "  --variants LIST     comma-separated specs for the per-layer figure (default: up to 6,\n"
           "                      the worst by mean KLD and the best)\n"
           "  --gate FILE         JUnit XML of `qprobe gate --junit`: adds a gate column\n"
           "  --history           write the history page (trends.html) even for a study of one run\n"
           "                      (written anyway when the study has several runs)\n"
           "  --rules FILE        gate rules (docs/GATE.md) judging every run of the history\n\n"
           "exit status: 0 written, 2 bad usage or input (an unusable database, an output folder that\n"
           "cannot be created), 3 a runtime failure: out of memory, or written but gnuplot failed on\n"
           "a figure (see DIR/gnuplot.log).\n\n"
           "examples:\n"
           "  qprobe report --db study.sqlite -o report\n"
           "  qprobe report --db study.sqlite --run 2 -o report --gate gate.xml\n"
           "  qprobe report --db nightly.sqlite -o report --history --rules examples/gate.json\n"
           "  qprobe report --db study.sqlite -o report --variants 'q4_0;act=q8,q4_k_m,rtn:bits=4:group=32:asym'\n");
}

int hx_cmd_report(int argc, char **argv) {
    enum { O_DB = 256, O_RUN, O_VARIANTS, O_GATE, O_HISTORY, O_RULES };
    static const struct option opts[] = {
        {"db", required_argument, 0, O_DB},     {"run", required_argument, 0, O_RUN},
        {"out", required_argument, 0, 'o'},     {"variants", required_argument, 0, O_VARIANTS},
        {"gate", required_argument, 0, O_GATE}, {"help", no_argument, 0, 'h'},
        {"history", no_argument, 0, O_HISTORY}, {"rules", required_argument, 0, O_RULES},
        {0, 0, 0, 0}};
    struct rpt_opts o = {0};
    int c, rc, run = 0;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
        switch (c) {
        case O_DB: o.db_path = optarg; break;
        case O_RUN: if ((rc = hx_parse_int("report", "--run", optarg, 1, 2147483647, &run))) return rc; break;
        case 'o': o.out_dir = optarg; break;
        case O_VARIANTS: o.variants = optarg; break;
        case O_GATE: o.gate_path = optarg; break;
        case O_HISTORY: o.history = 1; break;
        case O_RULES: o.rules_path = optarg; break;
        case 'h': report_usage(); return HX_EXIT_OK;
        default: return hx_unknown_option("report", argv);
        }
    }
    if (optind < argc) return hx_usage_error("report", "unexpected argument '%s'", argv[optind]);
    if (!o.db_path) return hx_usage_error("report", "no database given (--db FILE)");
    if (!o.out_dir) return hx_usage_error("report", "no output folder given (-o DIR)");
    o.run_id = run;

    struct rpt_outcome out;
    char err[QP_ERRLEN];
    if ((rc = rpt_report_write(&o, &out, err))) return hx_fail("report", rc, "%s", err);
    if (!out.gnuplot_found)
        fprintf(stderr, "qprobe report: warning: gnuplot not found on PATH: %d figures written as scripts "
                        "(%s/*.gp) but not rendered; install gnuplot and run them there\n",
                out.n_figs, o.out_dir);
    else if (out.gnuplot_unusable)
        fprintf(stderr, "qprobe report: warning: this gnuplot has neither an svg nor a png terminal: figures "
                        "not rendered\n");
    else if (out.n_render_failed)
        fprintf(stderr, "qprobe report: %d of %d figures not rendered: %s\n", out.n_render_failed, out.n_figs,
                out.render_err);
    printf("report of run %lld (%d variants): %d figures, %d rendered, in %s/index.html and %s/summary.md\n",
           (long long)out.run_id, out.n_variants, out.n_figs, out.n_rendered, o.out_dir, o.out_dir);
    return out.n_render_failed ? HX_EXIT_RUNTIME : HX_EXIT_OK; // gnuplot failed: not a failed check
}
