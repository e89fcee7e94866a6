// rpt_table.h — one table of the report, built once and written three ways: CSV (full
// precision, for spreadsheets and scripts), Markdown (summary.md) and HTML (sortable, index.html).
//
// A cell holds the text shown to people and, for numbers, the value itself: CSV writes the value
// with 10 significant digits and the HTML table sorts by it, whatever the display rounding.
// Depends on libc and kernels/qp.h only.
#ifndef RPT_TABLE_H
#define RPT_TABLE_H

#include <stdio.h>

struct rpt_cell {
    char *text;  // display text, owned (never NULL once set; "" for an empty cell)
    double num;  // the number behind the text (NaN: not a number, or missing)
    int is_num;
};

struct rpt_table {
    int n_cols;
    char **head;            // (n_cols) column names in CSV (snake_case), owned
    char **label;           // (n_cols) column names shown in HTML and Markdown, owned
    int *num_col;           // (n_cols) 1: a numeric column (right-aligned, numeric sort)
    int *csv_only;          // (n_cols) 1: written to CSV only (e.g. a standard error that the
                            //   display shows inside another cell as "3.50 ± 0.14")
    struct rpt_cell *cells; // (n_rows, n_cols) row-major, owned
    int n_rows, cap_rows;
    int oom;                // an allocation failed: the table is incomplete
};

// Initializes an empty table with the columns described by the NULL-terminated list cols, each
// "[FLAGS]csv_name[|shown name]": flags '#' a numeric column, '@' a CSV-only column; without a
// shown name the CSV name is shown. Free with rpt_table_deinit. 0 or QP_ENOMEM.
int rpt_table_init(struct rpt_table *t, const char *const *cols);
void rpt_table_deinit(struct rpt_table *t);

// Starts a new row; the cells are then set left to right by rpt_table_text / rpt_table_num
// (cells not set stay empty). Returns the row index, or -1 when out of memory.
int rpt_table_row(struct rpt_table *t);
// Sets cell (row, col) of the last row to a text (printf format).
void rpt_table_text(struct rpt_table *t, int col, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
// Sets cell (last row, col) to a number shown with fmt (one double conversion, e.g. "%.4f");
// NaN shows as an empty cell.
void rpt_table_num(struct rpt_table *t, int col, double v, const char *fmt);
// Sets cell (last row, col) to a number with display text given separately (e.g. "3.51 ± 0.14").
void rpt_table_numtext(struct rpt_table *t, int col, double v, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

// Writers. CSV: RFC 4180 quoting, numbers at full precision. Markdown: '|' escaped. HTML: one
// <table class="sortable" id=ID>, text escaped, numeric cells carry data-v for sorting.
void rpt_table_write_csv(const struct rpt_table *t, FILE *f);
void rpt_table_write_md(const struct rpt_table *t, FILE *f);
void rpt_table_write_html(const struct rpt_table *t, FILE *f, const char *id);

// Writes s HTML-escaped (& < > " ').
void rpt_html_escape(FILE *f, const char *s);

#endif
