// rpt_gnuplot.h — gnuplot as an external program: finding it, learning which terminals it has,
// writing plot scripts that render one figure as SVG and PNG, and running them.
//
// Each figure NAME is a script NAME.gp plus its data NAME.dat in the report folder; the script
// names its files relative to that folder, so that a user can restyle it and re-run
// `gnuplot NAME.gp` there. Only reports/ runs gnuplot. Depends on kernels/qp.h, libc, POSIX.
#ifndef RPT_GNUPLOT_H
#define RPT_GNUPLOT_H

#include <stdio.h>

struct rpt_gnuplot {
    int found;           // 1: an executable gnuplot is on PATH
    char exe[4096];      // its path
    int svg;             // the 'svg' terminal is available
    char png_term[16];   // "pngcairo", else "png", else "" (no PNG terminal)
};

// Looks for gnuplot on PATH and asks it (`gnuplot -e 'set terminal'`) for its terminals. Without
// gnuplot, found = 0 and the scripts are written for svg + pngcairo (a common gnuplot build).
void rpt_gnuplot_probe(struct rpt_gnuplot *g);

// Opens DIR/NAME.gp and writes the preamble: a loop over the output formats whose body (written
// by the caller, ending with rpt_gp_end) draws the figure once per format into NAME.svg and
// NAME.png at w × h pixels. title goes into the script's header comment. NULL with err (QP_ERRLEN)
// when the file cannot be created.
FILE *rpt_gp_begin(const struct rpt_gnuplot *g, const char *dir, const char *name, const char *title,
                   int w, int h, char *err);
// Closes the loop and the file. 0 or QP_EIO (write error) with err naming DIR/NAME.gp.
int rpt_gp_end(FILE *f, const char *dir, const char *name, char *err);

// Opens DIR/NAME for writing (data files). NULL with err naming the file.
FILE *rpt_file_open(const char *dir, const char *name, char *err);
// Closes f; QP_EIO with err naming DIR/NAME when a write failed.
int rpt_file_close(FILE *f, const char *dir, const char *name, char *err);

// Runs `gnuplot NAME.gp` in dir (stdin /dev/null, stdout and stderr appended to
// DIR/gnuplot.log). 0 when gnuplot exits 0 and wrote every output file it was asked for;
// QP_EIO with err otherwise.
int rpt_gnuplot_run(const struct rpt_gnuplot *g, const char *dir, const char *name, char *err);

// Writes s as a gnuplot string literal in double quotes (", \ and control characters escaped),
// for titles and labels (scripts use noenhanced text, so '_' and '^' print as themselves).
void rpt_gp_str(FILE *f, const char *s);
// Writes s as a quoted string field of a data file: gnuplot's data files cannot escape a double
// quote, so a double quote becomes a single one and control characters become spaces.
void rpt_dat_str(FILE *f, const char *s);

#endif
