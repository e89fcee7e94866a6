// rpt_table.c — report tables written as CSV, Markdown and HTML (rpt_table.h).
#include "rpt_table.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "qp.h"

// ---------------------------------------------------------------------------------------------
// Building

int rpt_table_init(struct rpt_table *t, const char *const *cols) {
    memset(t, 0, sizeof *t);
    int n = 0;
    while (cols[n]) n++;
    t->n_cols = n;
    t->head = calloc((size_t)n, sizeof *t->head);
    t->label = calloc((size_t)n, sizeof *t->label);
    t->num_col = calloc((size_t)n, sizeof *t->num_col);
    t->csv_only = calloc((size_t)n, sizeof *t->csv_only);
    if (!t->head || !t->label || !t->num_col || !t->csv_only) goto oom;
    for (int c = 0; c < n; c++) {
        const char *s = cols[c];
        for (;; s++) {
            if (*s == '#') t->num_col[c] = 1;
            else if (*s == '@') t->csv_only[c] = 1;
            else break;
        }
        const char *bar = strchr(s, '|');
        t->head[c] = bar ? strndup(s, (size_t)(bar - s)) : strdup(s);
        t->label[c] = strdup(bar ? bar + 1 : s);
        if (!t->head[c] || !t->label[c]) goto oom;
    }
    return 0;
oom:
    rpt_table_deinit(t);
    t->oom = 1; // writers then see an incomplete table
    return QP_ENOMEM;
}

void rpt_table_deinit(struct rpt_table *t) {
    for (int c = 0; t->head && c < t->n_cols; c++) free(t->head[c]);
    for (int c = 0; t->label && c < t->n_cols; c++) free(t->label[c]);
    for (int i = 0; t->cells && i < t->n_rows * t->n_cols; i++) free(t->cells[i].text);
    free(t->head);
    free(t->label);
    free(t->num_col);
    free(t->csv_only);
    free(t->cells);
    memset(t, 0, sizeof *t);
}

int rpt_table_row(struct rpt_table *t) {
    if (t->oom) return -1;
    if (t->n_rows == t->cap_rows) {
        int cap = t->cap_rows ? 2 * t->cap_rows : 16;
        struct rpt_cell *nc = realloc(t->cells, (size_t)cap * (size_t)t->n_cols * sizeof *nc);
        if (!nc) {
            t->oom = 1;
            return -1;
        }
        t->cells = nc;
        t->cap_rows = cap;
    }
    struct rpt_cell *row = t->cells + (size_t)t->n_rows * (size_t)t->n_cols;
    for (int c = 0; c < t->n_cols; c++) row[c] = (struct rpt_cell){NULL, NAN, 0};
    return t->n_rows++;
}

static struct rpt_cell *rpt_last_cell(struct rpt_table *t, int col) {
    QP_ASSERT(t->n_rows > 0 && col >= 0 && col < t->n_cols);
    return t->cells + (size_t)(t->n_rows - 1) * (size_t)t->n_cols + (size_t)col;
}

static void rpt_cell_vset(struct rpt_table *t, struct rpt_cell *c, const char *fmt, va_list ap) {
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0) {
        s = NULL;
        t->oom = 1;
    }
    free(c->text);
    c->text = s;
}

void rpt_table_text(struct rpt_table *t, int col, const char *fmt, ...) {
    if (t->oom) return;
    struct rpt_cell *c = rpt_last_cell(t, col);
    va_list ap;
    va_start(ap, fmt);
    rpt_cell_vset(t, c, fmt, ap);
    va_end(ap);
}

void rpt_table_num(struct rpt_table *t, int col, double v, const char *fmt) {
    if (t->oom) return;
    struct rpt_cell *c = rpt_last_cell(t, col);
    c->num = v;
    c->is_num = 1;
    free(c->text);
    c->text = NULL;
    if (isnan(v)) {
        c->text = strdup("");
    } else if (asprintf(&c->text, fmt, v) < 0) {
        c->text = NULL;
    }
    if (!c->text) t->oom = 1;
}

void rpt_table_numtext(struct rpt_table *t, int col, double v, const char *fmt, ...) {
    if (t->oom) return;
    struct rpt_cell *c = rpt_last_cell(t, col);
    c->num = v;
    c->is_num = 1;
    va_list ap;
    va_start(ap, fmt);
    rpt_cell_vset(t, c, fmt, ap);
    va_end(ap);
}

static const struct rpt_cell *rpt_cell_at(const struct rpt_table *t, int r, int c) {
    return t->cells + (size_t)r * (size_t)t->n_cols + (size_t)c;
}

static const char *rpt_cell_str(const struct rpt_cell *c) { return c->text ? c->text : ""; }

// ---------------------------------------------------------------------------------------------
// Writers

static void rpt_csv_field(FILE *f, const char *s) {
    if (!strpbrk(s, ",\"\r\n")) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

void rpt_table_write_csv(const struct rpt_table *t, FILE *f) {
    for (int c = 0; c < t->n_cols; c++) {
        if (c) fputc(',', f);
        rpt_csv_field(f, t->head[c]);
    }
    fputs("\r\n", f);
    for (int r = 0; r < t->n_rows; r++) {
        for (int c = 0; c < t->n_cols; c++) {
            const struct rpt_cell *cell = rpt_cell_at(t, r, c);
            if (c) fputc(',', f);
            if (cell->is_num) {
                // The value itself, not its rounded display; missing values are empty fields.
                if (isfinite(cell->num)) fprintf(f, "%.10g", cell->num);
            } else {
                rpt_csv_field(f, rpt_cell_str(cell));
            }
        }
        fputs("\r\n", f);
    }
}

static void rpt_md_field(FILE *f, const char *s) {
    for (; *s; s++) {
        if (*s == '|') fputs("\\|", f);
        else if (*s == '\n' || *s == '\r') fputc(' ', f);
        else fputc(*s, f);
    }
}

void rpt_table_write_md(const struct rpt_table *t, FILE *f) {
    fputc('|', f);
    for (int c = 0; c < t->n_cols; c++) {
        if (t->csv_only[c]) continue;
        fputc(' ', f);
        rpt_md_field(f, t->label[c]);
        fputs(" |", f);
    }
    fputs("\n|", f);
    for (int c = 0; c < t->n_cols; c++)
        if (!t->csv_only[c]) fputs(t->num_col[c] ? "---:|" : "---|", f);
    fputc('\n', f);
    for (int r = 0; r < t->n_rows; r++) {
        fputc('|', f);
        for (int c = 0; c < t->n_cols; c++) {
            if (t->csv_only[c]) continue;
            fputc(' ', f);
            rpt_md_field(f, rpt_cell_str(rpt_cell_at(t, r, c)));
            fputs(" |", f);
        }
        fputc('\n', f);
    }
}

void rpt_html_escape(FILE *f, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&#39;", f); break;
        default: fputc(*s, f);
        }
    }
}

void rpt_table_write_html(const struct rpt_table *t, FILE *f, const char *id) {
    fprintf(f, "<table class=\"sortable\" id=\"");
    rpt_html_escape(f, id);
    fputs("\">\n<thead><tr>", f);
    for (int c = 0; c < t->n_cols; c++) {
        if (t->csv_only[c]) continue;
        fputs(t->num_col[c] ? "<th class=\"n\">" : "<th>", f);
        rpt_html_escape(f, t->label[c]);
        fputs("</th>", f);
    }
    fputs("</tr></thead>\n<tbody>\n", f);
    for (int r = 0; r < t->n_rows; r++) {
        fputs("<tr>", f);
        for (int c = 0; c < t->n_cols; c++) {
            if (t->csv_only[c]) continue;
            const struct rpt_cell *cell = rpt_cell_at(t, r, c);
            if (cell->is_num && isfinite(cell->num)) fprintf(f, "<td class=\"n\" data-v=\"%.10g\">", cell->num);
            else if (t->num_col[c]) fputs("<td class=\"n\">", f);
            else fputs("<td>", f);
            rpt_html_escape(f, rpt_cell_str(cell));
            fputs("</td>", f);
        }
        fputs("</tr>\n", f);
    }
    fputs("</tbody></table>\n", f);
}
