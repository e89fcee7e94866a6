// rpt_html.h — what the report's pages share (rpt_report.c defines them): the style sheet, the
// table-sorting script, and the figures (inlined SVG). Depends on rpt_figs.h and libc.
#ifndef RPT_HTML_H
#define RPT_HTML_H

#include <stdio.h>

#include "rpt_figs.h"

extern const char rpt_css[]; // the <style> of every page
extern const char rpt_js[];  // sorts a table.sortable by the clicked column

// Copies the <svg> element of DIR/NAME.svg into f, prefixing its ids (and the references to
// them) with "NAME-" so that several gnuplot figures can share one page. 0, or -1 when unreadable.
int rpt_html_svg(FILE *f, const char *dir, const char *name);

// Each figure of figs as a <figure>: its title, the inlined SVG (or how to render it), the
// caption and links to its files.
void rpt_html_figures(FILE *f, const char *dir, const struct rpt_figs *figs);

#endif
