// rpt_html.h — what the report's pages share (rpt_report.c defines them): the style sheet, the
// table-sorting script, and inlining a rendered SVG figure. Depends on libc.
#ifndef RPT_HTML_H
#define RPT_HTML_H

#include <stdio.h>

extern const char rpt_css[]; // the <style> of every page
extern const char rpt_js[];  // sorts a table.sortable by the clicked column

// Copies the <svg> element of DIR/NAME.svg into f, prefixing its ids (and the references to
// them) with "NAME-" so that several gnuplot figures can share one page. 0, or -1 when unreadable.
int rpt_html_svg(FILE *f, const char *dir, const char *name);

#endif
