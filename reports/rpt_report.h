// rpt_report.h — the comparison report of one run of a study database: figures (gnuplot, SVG and
// PNG), a self-contained index.html, summary.md and CSV exports of every table (docs/REPORT.md).
//
// The top layer: depends on rpt_study.h, rpt_figs.h, rpt_gnuplot.h, rpt_table.h, SQLite,
// kernels/qp.h and libc. Nothing below reports/ depends on it.
#ifndef RPT_REPORT_H
#define RPT_REPORT_H

#include <stdint.h>

#include "qp.h"

struct rpt_opts {
    const char *db_path;   // the study database (opened read-only)
    int64_t run_id;        // 0: the latest run
    const char *out_dir;   // created (with its parents) when missing
    const char *variants;  // comma-separated specs for the per-layer figure; NULL: default choice
    const char *gate_path; // JUnit XML of `qprobe gate --junit` for a gate column; NULL: none
    int history;           // 1: write the history (trends.html) even for a study of one run
    const char *rules_path; // gate rules judging every run of the history (implies history); NULL
};

struct rpt_outcome {
    int64_t run_id;
    int n_variants;               // variants of the run, the reference included
    int n_figs;                   // figures written (scripts and data)
    int n_rendered;               // figures gnuplot rendered
    int gnuplot_found;            // 0: no gnuplot on PATH (figures written, not rendered)
    int gnuplot_unusable;         // gnuplot found but it has neither an svg nor a png terminal
    char render_err[QP_ERRLEN];   // the first rendering failure, "" when none
    int n_render_failed;
    int n_runs_history;           // runs on the history page, 0 when none was written
};

// Writes the report of o->run_id of o->db_path into o->out_dir. Returns 0 when every file but the
// rendered figures was written (rendering problems are in *out: a missing gnuplot is not an
// error); otherwise a negative QP_E* code with a one-line message in err (QP_ERRLEN bytes) naming
// the file and the cause: the database missing, not a study or unreadable, no such run, an
// unknown spec in --variants, an unreadable gate file, or a report file that cannot be written.
int rpt_report_write(const struct rpt_opts *o, struct rpt_outcome *out, char *err);

#endif
