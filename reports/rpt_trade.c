// rpt_trade.c — the bits-per-weight figures (rpt_figs.h): each variant at its storage cost and its
// quality, coloured and shaped by method family with a legend, the Pareto frontier, the
// reference's line.
//
// Made to be read at a glance:
// - Variants with the same weights (rpt_study.h: same_as) are one point named by all of them.
// - The axes fit the data: a value far from all others (a 2-bit variant at perplexity 2000 among
//   points between 7 and 17) is clipped to the edge of the plot with its value written beside it,
//   instead of stretching the axis over five decades.
// - Labels are placed here, not by gnuplot: the plot area has fixed margins, so a point's pixel
//   position is known, and each label takes the first of eight places around its point that
//   overlaps no other label, no point and no edge. Frontier points choose first. A point whose
//   label fits nowhere gets a number, listed in a key beside the plot.
//
// Depends on rpt_figs.h (rpt_study.h, rpt_gnuplot.h), kernels/qp.h and libc.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qp.h"
#include "rpt_figs.h"

// Canvas and plot area (fractions of the canvas, fixed so that positions can be computed).
#define TR_W 1100
#define TR_H 640
#define TR_L 0.085
#define TR_R 0.64
#define TR_B 0.105
#define TR_T 0.915
// Label text: the script's variable qp_lf is the font, 11 px in SVG and the same size in PNG
// (pngcairo draws a point about 1.36 pixels tall: 8 points). The width of a character of a spec
// (lower case, digits, ':', '_') and the line height are slightly generous estimates for that
// size, so that a label judged free is free.
#define TR_CHAR_W 7.0
#define TR_LINE_H 14.0
#define TR_MARK 7.0 // half the side of a point marker (qp_ps), pixels

struct tr_point {
    int v;          // index of the group's first variant in s->v
    double x, y;    // bits per weight, the metric's value (true)
    double se;      // its standard error (0 when none)
    double y_draw;  // where it is drawn (y, or the edge when clipped)
    int clipped;    // +1 above the top edge, -1 below the bottom edge, 0 inside
    int family;     // rpt_families index
    int frontier;   // on the Pareto frontier
    char name[512]; // the group's specs, " = " between them
    double px, py;  // pixel position (y up from the bottom)
    int number;     // > 0: labelled by this number, listed in the key
};

struct tr_rect {
    double x0, y0, x1, y1;
};

struct tr_axis {
    int log;
    double lo, hi; // in data units
};

static double tr_t(const struct tr_axis *a, double v) { return a->log ? log10(v) : v; }

static double tr_frac(const struct tr_axis *a, double v) {
    return (tr_t(a, v) - tr_t(a, a->lo)) / (tr_t(a, a->hi) - tr_t(a, a->lo));
}

static int tr_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// ---------------------------------------------------------------------------------------------
// Axis ranges

void rpt_fit_clip(const double *t, int n, double min_gap, double *lo_keep, double *hi_keep) {
    *lo_keep = *hi_keep = 0;
    if (n <= 0) return;
    double *u = malloc((size_t)n * sizeof *u);
    if (!u) { // no clipping: the whole range
        *lo_keep = *hi_keep = t[0];
        for (int i = 1; i < n; i++) *lo_keep = fmin(*lo_keep, t[i]), *hi_keep = fmax(*hi_keep, t[i]);
        return;
    }
    memcpy(u, t, (size_t)n * sizeof *u);
    qsort(u, (size_t)n, sizeof *u, tr_cmp_double);
    int lo = 0, hi = n - 1, clipped = 0, budget = n >= 4 ? n / 4 : 0;
    while (clipped < budget && hi - lo >= 3) {
        double gap_hi = u[hi] - u[hi - 1], rest_hi = u[hi - 1] - u[lo];
        double gap_lo = u[lo + 1] - u[lo], rest_lo = u[hi] - u[lo + 1];
        int top = gap_hi > 1.5 * rest_hi && gap_hi > min_gap;
        int bot = gap_lo > 1.5 * rest_lo && gap_lo > min_gap;
        if (!top && !bot) break;
        if (top && (!bot || gap_hi >= gap_lo)) hi--;
        else lo++;
        clipped++;
    }
    *lo_keep = u[lo];
    *hi_keep = u[hi];
    free(u);
}

// Fits the y axis to the points and the reference value ref (NaN: none); marks clipped points
// and sets their drawn position just inside the edge.
static void tr_fit_y(struct tr_point *pt, int n, double ref, int logy, int share, struct tr_axis *ay) {
    double *t = malloc((size_t)(n > 0 ? n : 1) * sizeof *t);
    ay->log = logy;
    double lo, hi;
    if (!t) {
        lo = hi = 0;
    } else {
        for (int i = 0; i < n; i++) t[i] = logy ? log10(pt[i].y) : pt[i].y;
        double mag = 0;
        for (int i = 0; i < n; i++) mag = fmax(mag, fabs(t[i]));
        // Clipping needs a real gap: half a decade on a log axis, a tenth of the values' size
        // on a linear one (0.99 against 0.992 is no outlier).
        rpt_fit_clip(t, n, logy ? 0.5 : 0.1 * mag, &lo, &hi);
    }
    free(t);
    for (int i = 0; i < n; i++) {
        double ti = logy ? log10(pt[i].y) : pt[i].y;
        pt[i].clipped = ti > hi ? 1 : ti < lo ? -1 : 0;
        if (!pt[i].clipped && !logy) { // the error bars of kept points stay inside
            hi = fmax(hi, pt[i].y + pt[i].se);
            lo = fmin(lo, pt[i].y - pt[i].se);
        }
    }
    if (isfinite(ref) && (!logy || ref > 0)) {
        double tr = logy ? log10(ref) : ref;
        lo = fmin(lo, tr);
        hi = fmax(hi, tr);
    }
    double span = hi - lo;
    if (!(span > 0)) span = logy ? 0.2 : fmax(fabs(hi) * 0.1, 0.01);
    double pad = 0.08 * span;
    int any_clipped = 0;
    for (int i = 0; i < n; i++) any_clipped |= pt[i].clipped != 0;
    // Room for the clipped points' markers at the edge.
    double tlo = lo - pad - (any_clipped ? 0.04 * span : 0), thi = hi + pad + (any_clipped ? 0.04 * span : 0);
    if (share && !logy) {
        tlo = fmax(tlo, 0.0);
        thi = fmin(thi, 1.02);
    }
    ay->lo = logy ? pow(10, tlo) : tlo;
    ay->hi = logy ? pow(10, thi) : thi;
    double edge = 0.025 * (thi - tlo);
    for (int i = 0; i < n; i++) {
        double y = pt[i].y;
        if (pt[i].clipped > 0) y = logy ? pow(10, thi - edge) : thi - edge;
        if (pt[i].clipped < 0) y = logy ? pow(10, tlo + edge) : tlo + edge;
        pt[i].y_draw = y;
    }
}

static void tr_fit_x(const struct tr_point *pt, int n, struct tr_axis *ax) {
    double lo = INFINITY, hi = -INFINITY;
    for (int i = 0; i < n; i++) {
        lo = fmin(lo, pt[i].x);
        hi = fmax(hi, pt[i].x);
    }
    double span = hi - lo, pad = span > 0 ? 0.07 * span : 0.5;
    ax->log = 0;
    ax->lo = fmax(0, lo - pad);
    ax->hi = hi + pad;
}

// Explicit tics for a log axis over [lo, hi]: 1-2-5 (or denser) values of each decade, so that a
// range inside one decade still has four or more labelled tics.
static void tr_log_tics(FILE *f, const char *axis, double lo, double hi) {
    static const double sets[4][12] = {{1}, {1, 2, 5}, {1, 1.5, 2, 3, 5, 7}, {1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8, 9}};
    static const int sizes[4] = {1, 3, 6, 12};
    int k0 = (int)floor(log10(lo)), k1 = (int)ceil(log10(hi));
    int pick = 3;
    for (int s = 0; s < 4; s++) {
        int cnt = 0;
        for (int k = k0; k <= k1; k++)
            for (int m = 0; m < sizes[s]; m++) {
                double v = sets[s][m] * pow(10, k);
                cnt += v >= lo && v <= hi;
            }
        if (cnt >= 4) {
            pick = s;
            break;
        }
    }
    int step = (k1 - k0) > 10 ? (k1 - k0 + 9) / 10 : 1; // at most about ten decades labelled
    fprintf(f, "set %stics (", axis);
    int first = 1;
    for (int k = k0; k <= k1; k++) {
        if (pick == 0 && (k - k0) % step) continue;
        for (int m = 0; m < sizes[pick]; m++) {
            double v = sets[pick][m] * pow(10, k);
            if (v < lo || v > hi) continue;
            fprintf(f, "%s\"%g\" %.10g", first ? "" : ", ", v, v);
            first = 0;
        }
    }
    fprintf(f, ")\nset m%stics 10\n", axis);
}

// ---------------------------------------------------------------------------------------------
// Label placement

static int tr_overlap(const struct tr_rect *a, const struct tr_rect *b) {
    return a->x0 < b->x1 && b->x0 < a->x1 && a->y0 < b->y1 && b->y0 < a->y1;
}

struct tr_placer {
    struct tr_rect *used; // labels placed and point markers
    int n_used;
    struct tr_rect area;  // the plot area, pixels
};

// The places around a point, in order of preference: right, left, then above and below to the
// right, to the left and centred. dx, dy: the anchor's offset in pixels; align: 'l', 'r', 'c'.
static const struct {
    double dx, dy;
    char align;
} tr_places[8] = {{10, 0, 'l'}, {-10, 0, 'r'}, {5, 13, 'l'}, {5, -13, 'l'},
                  {-5, 13, 'r'}, {-5, -13, 'r'}, {0, 15, 'c'}, {0, -15, 'c'}};

static struct tr_rect tr_label_rect(double px, double py, int place, double w) {
    double ax = px + tr_places[place].dx, ay = py + tr_places[place].dy;
    double x0 = tr_places[place].align == 'l' ? ax : tr_places[place].align == 'r' ? ax - w : ax - w / 2;
    return (struct tr_rect){x0, ay - TR_LINE_H / 2, x0 + w, ay + TR_LINE_H / 2};
}

// The first free place for a label of width w at (px, py), or -1.
static int tr_find_place(const struct tr_placer *pl, double px, double py, double w) {
    for (int p = 0; p < 8; p++) {
        struct tr_rect r = tr_label_rect(px, py, p, w);
        if (r.x0 < pl->area.x0 || r.x1 > pl->area.x1 || r.y0 < pl->area.y0 || r.y1 > pl->area.y1) continue;
        int free_ = 1;
        for (int k = 0; k < pl->n_used && free_; k++) free_ = !tr_overlap(&r, &pl->used[k]);
        if (free_) return p;
    }
    return -1;
}

// Writes `set label` for text at place p of the point, in screen coordinates.
static void tr_emit_label(FILE *f, double px, double py, int p, const char *text, const char *color) {
    double ax = (px + tr_places[p].dx) / TR_W, ay = (py + tr_places[p].dy) / TR_H;
    fprintf(f, "set label ");
    rpt_gp_str(f, text);
    fprintf(f, " at screen %.5f, screen %.5f %s front font qp_lf tc rgb \"%s\"\n", ax, ay,
            tr_places[p].align == 'l' ? "left" : tr_places[p].align == 'r' ? "right" : "center", color);
}

// The label of a point: its names, and for a clipped point the value it was clipped from.
static void tr_label_text(const struct tr_point *p, char *out, size_t cap) {
    if (p->clipped) snprintf(out, cap, "%s %s %.4g", p->name, p->clipped > 0 ? "↑" : "↓", p->y);
    else snprintf(out, cap, "%s", p->name);
}

// Utf-8 aware width estimate: continuation bytes do not advance.
static double tr_text_w(const char *s) {
    int n = 0;
    for (; *s; s++) n += ((unsigned char)*s & 0xC0) != 0x80;
    return n * TR_CHAR_W;
}

static int tr_order_cmp(const void *a, const void *b, void *ctx) {
    const struct tr_point *pt = ctx;
    const struct tr_point *p = &pt[*(const int *)a], *q = &pt[*(const int *)b];
    // Frontier and clipped points first (they carry the message), then by bits per weight.
    int pa = p->frontier || p->clipped, pb = q->frontier || q->clipped;
    if (pa != pb) return pb - pa;
    return (p->x > q->x) - (p->x < q->x);
}

// Places every label; numbers the points whose label does not fit (returns how many).
static int tr_place_labels(FILE *f, struct tr_point *pt, int n) {
    struct tr_placer pl = {.area = {TR_L * TR_W, TR_B * TR_H, TR_R * TR_W, TR_T * TR_H}};
    pl.used = calloc((size_t)(2 * n + 1), sizeof *pl.used);
    int *order = calloc((size_t)(n + 1), sizeof *order), numbered = 0;
    if (!pl.used || !order) {
        free(pl.used);
        free(order);
        return 0;
    }
    for (int i = 0; i < n; i++) {
        pl.used[pl.n_used++] = (struct tr_rect){pt[i].px - TR_MARK, pt[i].py - TR_MARK, pt[i].px + TR_MARK, pt[i].py + TR_MARK};
        order[i] = i;
    }
    qsort_r(order, (size_t)n, sizeof *order, tr_order_cmp, pt);
    // Numbers follow bits per weight, so that the key reads left to right.
    int *numbered_idx = calloc((size_t)(n + 1), sizeof *numbered_idx);
    for (int k = 0; k < n; k++) {
        struct tr_point *p = &pt[order[k]];
        char text[600];
        tr_label_text(p, text, sizeof text);
        double w = tr_text_w(text);
        int place = tr_find_place(&pl, p->px, p->py, w);
        if (place >= 0) {
            pl.used[pl.n_used++] = tr_label_rect(p->px, p->py, place, w);
            tr_emit_label(f, p->px, p->py, place, text, "#222222");
        } else if (numbered_idx) {
            numbered_idx[numbered++] = order[k];
        }
    }
    // Number the rest in order of bits per weight; a number is short and takes any free place
    // (the first one when none is free).
    for (int a = 0; a < numbered; a++)
        for (int b = a + 1; b < numbered; b++)
            if (pt[numbered_idx[b]].x < pt[numbered_idx[a]].x) {
                int t = numbered_idx[a];
                numbered_idx[a] = numbered_idx[b];
                numbered_idx[b] = t;
            }
    for (int a = 0; a < numbered; a++) {
        struct tr_point *p = &pt[numbered_idx[a]];
        p->number = a + 1;
        char text[16];
        snprintf(text, sizeof text, "%d", a + 1);
        double w = tr_text_w(text);
        int place = tr_find_place(&pl, p->px, p->py, w);
        if (place < 0) place = 0;
        pl.used[pl.n_used++] = tr_label_rect(p->px, p->py, place, w);
        tr_emit_label(f, p->px, p->py, place, text, "#000000");
    }
    free(numbered_idx);
    free(order);
    free(pl.used);
    return numbered;
}

// ---------------------------------------------------------------------------------------------
// One figure

struct tr_spec {
    const char *name, *title, *ylabel;
    const char *suite, *metric;
    int lower_better, logy, share;
    double ref;            // the reference's value (NaN: none)
    const char *ref_label;
    const char *caption;
};

// The points of one metric: one per group of identical variants with finite bits and value.
static int tr_collect(const struct rpt_study *s, const struct tr_spec *sp, struct tr_point *pt) {
    int n = 0;
    for (int i = 0; i < s->n_v; i++) {
        const struct rpt_variant *v = &s->v[i];
        if (v->is_reference || v->same_as != i) continue;
        double se, y = rpt_metric_get(v, sp->suite, sp->metric, &se);
        if (!isfinite(v->bpw) || !isfinite(y) || (sp->logy && y <= 0)) continue;
        struct tr_point *p = &pt[n++];
        memset(p, 0, sizeof *p);
        p->v = i;
        p->x = v->bpw;
        p->y = y;
        p->se = isfinite(se) ? se : 0.0;
        p->family = rpt_family_of(v->spec);
        rpt_group_label(s, i, " = ", p->name, sizeof p->name);
    }
    return n;
}

static void tr_frontier(struct tr_point *pt, int n, int lower_better) {
    double *x = calloc((size_t)n + 1, sizeof *x), *y = calloc((size_t)n + 1, sizeof *y);
    int *on = calloc((size_t)n + 1, sizeof *on);
    if (x && y && on) {
        for (int i = 0; i < n; i++) {
            x[i] = pt[i].x;
            y[i] = pt[i].y;
        }
        rpt_pareto(x, y, n, lower_better, on);
        for (int i = 0; i < n; i++) pt[i].frontier = on[i];
    }
    free(x);
    free(y);
    free(on);
}

static int tr_x_cmp(const void *a, const void *b) {
    const struct tr_point *p = a, *q = b;
    return (p->x > q->x) - (p->x < q->x);
}

// NAME.dat: one block per family present (x, y drawn, s.e., y, names), then the frontier.
static int tr_write_dat(const char *dir, const struct tr_spec *sp, const struct tr_point *pt, int n,
                        int *fam_index, char *err) {
    FILE *f = rpt_dat_open(dir, sp->name, sp->title, err);
    if (!f) return QP_EIO;
    int block = 0;
    for (int fam = 0; fam < RPT_N_FAMILIES; fam++) {
        fam_index[fam] = -1;
        int any = 0;
        for (int i = 0; i < n; i++) any |= pt[i].family == fam;
        if (!any) continue;
        fam_index[fam] = block;
        fprintf(f, "%s# index %d: %s — bits_per_weight y_drawn stderr y names (y_drawn differs from y where the "
                   "point is clipped to the plot's edge)\n", block ? "\n\n" : "", block, rpt_families[fam].name);
        for (int i = 0; i < n; i++) {
            if (pt[i].family != fam) continue;
            rpt_dat_num(f, pt[i].x);
            rpt_dat_num(f, pt[i].y_draw);
            rpt_dat_num(f, pt[i].clipped ? 0.0 : pt[i].se);
            rpt_dat_num(f, pt[i].y);
            fputc(' ', f);
            rpt_dat_str(f, pt[i].name);
            fputc('\n', f);
        }
        block++;
    }
    fprintf(f, "\n\n# index %d: the Pareto frontier (no other variant has at most as many bits and a better value)\n",
            block);
    for (int i = 0; i < n; i++) {
        if (!pt[i].frontier) continue;
        rpt_dat_num(f, pt[i].x);
        rpt_dat_num(f, pt[i].y_draw);
        fputc('\n', f);
    }
    return rpt_dat_close(f, dir, sp->name, err);
}

// The numbered key beside the plot, under the legend (n_legend entries tall).
static void tr_number_key(FILE *f, const struct tr_point *pt, int n, int n_legend) {
    double y = TR_T * TR_H - (n_legend + 1.6) * 16.0;
    fprintf(f, "set label \"numbered points:\" at screen %.5f, screen %.5f left font qp_lf tc rgb \"#444444\"\n",
            (TR_R + 0.03), y / TR_H);
    for (int k = 1; k <= n; k++)
        for (int i = 0; i < n; i++) {
            if (pt[i].number != k) continue;
            y -= TR_LINE_H + 1;
            char text[600], line[640];
            tr_label_text(&pt[i], text, sizeof text);
            snprintf(line, sizeof line, "%d  %s", k, text);
            fprintf(f, "set label ");
            rpt_gp_str(f, line);
            fprintf(f, " at screen %.5f, screen %.5f left font qp_lf tc rgb \"#222222\"\n", TR_R + 0.03, y / TR_H);
        }
}

static int tr_write_gp(const struct rpt_gnuplot *g, const char *dir, const struct tr_spec *sp, struct tr_point *pt,
                       int n, const int *fam_index, const struct tr_axis *ax, const struct tr_axis *ay, char *err) {
    FILE *f = rpt_gp_begin(g, dir, sp->name, sp->title, TR_W, TR_H, err);
    if (!f) return QP_EIO;
    fprintf(f, "qp_lf = (qp_fmt eq \"svg\") ? \",11\" : \",8\"\nqp_ps = (qp_fmt eq \"svg\") ? 0.8 : 1.1\n");
    fprintf(f, "set title ");
    rpt_gp_str(f, sp->title);
    fprintf(f, "\nset xlabel \"bits per weight\"\nset ylabel ");
    rpt_gp_str(f, sp->ylabel);
    // Fixed margins: the label positions below are computed for exactly this plot area.
    fprintf(f, "\nset lmargin at screen %.3f\nset rmargin at screen %.3f\nset bmargin at screen %.3f\n"
               "set tmargin at screen %.3f\n", TR_L, TR_R, TR_B, TR_T);
    fprintf(f, "set xrange [%.10g:%.10g]\nset yrange [%.10g:%.10g]\n", ax->lo, ax->hi, ay->lo, ay->hi);
    if (ay->log) {
        fprintf(f, "set logscale y\n");
        tr_log_tics(f, "y", ay->lo, ay->hi);
    }
    for (int i = 0; i < n; i++) {
        pt[i].px = (TR_L + tr_frac(ax, pt[i].x) * (TR_R - TR_L)) * TR_W;
        pt[i].py = (TR_B + tr_frac(ay, pt[i].y_draw) * (TR_T - TR_B)) * TR_H;
    }
    int numbered = tr_place_labels(f, pt, n);
    int n_legend = 1 + isfinite(sp->ref);
    for (int fam = 0; fam < RPT_N_FAMILIES; fam++) n_legend += fam_index[fam] >= 0;
    if (numbered) tr_number_key(f, pt, n, n_legend);
    fprintf(f, "set key at screen %.3f, screen %.3f left top Left reverse samplen 1.5 spacing 1.15 font qp_lf "
               "box lc rgb \"#cccccc\"\n", TR_R + 0.02, TR_T);
    int block_frontier = 0;
    for (int fam = 0; fam < RPT_N_FAMILIES; fam++) block_frontier += fam_index[fam] >= 0;
    fprintf(f, "plot '%s.dat' index %d using 1:2 with lines dt 2 lw 1.5 lc rgb \"#666666\" title \"Pareto frontier "
               "(%s)\"", sp->name, block_frontier, sp->lower_better ? "lower is better" : "higher is better");
    if (isfinite(sp->ref)) {
        fprintf(f, ", \\\n     %.10g with lines dt 3 lw 1.5 lc rgb \"#444444\" title ", sp->ref);
        rpt_gp_str(f, sp->ref_label);
    }
    for (int fam = 0; fam < RPT_N_FAMILIES; fam++) {
        if (fam_index[fam] < 0) continue;
        fprintf(f, ", \\\n     '%s.dat' index %d using 1:2:3 with yerrorbars lw 1.5 lc rgb \"%s\" pt %d ps qp_ps title ",
                sp->name, fam_index[fam], rpt_families[fam].color, rpt_families[fam].pt);
        rpt_gp_str(f, rpt_families[fam].name);
    }
    fputc('\n', f);
    return rpt_gp_end(f, dir, sp->name, err);
}

static int tr_figure(const struct rpt_study *s, const struct rpt_gnuplot *g, const char *dir, struct rpt_figs *o,
                     const struct tr_spec *sp, char *err) {
    struct tr_point *pt = calloc((size_t)s->n_v + 1, sizeof *pt);
    if (!pt) return qp_fail(err, QP_ENOMEM, "out of memory");
    int n = tr_collect(s, sp, pt), rc = 0;
    if (n == 0) {
        rpt_fig_skip(o, "%s: no variant has both bits per weight and %s/%s", sp->name, sp->suite, sp->metric);
        free(pt);
        return 0;
    }
    qsort(pt, (size_t)n, sizeof *pt, tr_x_cmp);
    tr_frontier(pt, n, sp->lower_better);
    struct tr_axis ax, ay;
    tr_fit_x(pt, n, &ax);
    tr_fit_y(pt, n, sp->ref, sp->logy, sp->share, &ay);
    int fam_index[RPT_N_FAMILIES];
    rc = tr_write_dat(dir, sp, pt, n, fam_index, err);
    if (!rc) rc = tr_write_gp(g, dir, sp, pt, n, fam_index, &ax, &ay, err);
    if (!rc && !rpt_fig_add(o, sp->name, sp->title, sp->caption)) rpt_fig_skip(o, "%s: too many figures", sp->name);
    free(pt);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// The figures

#define TR_HOW_TO_READ                                                                                          \
    " Colour and shape give the method family (legend); variants with identical weights are one point named "   \
    "by all of them (a = b); a value far outside the others is drawn at the edge with its value and an arrow; " \
    "points whose name does not fit are numbered and listed beside the plot."

static void tr_safe_name(char *out, size_t cap, const char *prefix, const char *s) {
    size_t n = (size_t)snprintf(out, cap, "%s", prefix);
    for (; *s && n + 1 < cap; s++) {
        char c = *s;
        out[n++] = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ? c : '_';
    }
    out[n] = 0;
}

int rpt_trade_figs(const struct rpt_study *s, const struct rpt_gnuplot *g, const char *dir, struct rpt_figs *o,
                   char *err) {
    char label[160];
    double ref_ppl = rpt_ref_ppl(s);
    snprintf(label, sizeof label, "reference (%.4f)", ref_ppl);
    const struct tr_spec figs[3] = {
        {"bpw_ppl", "Bits per weight vs perplexity", "perplexity (lower is better; log scale)", "ppl", "ppl", 1, 1, 0,
         ref_ppl, label,
         "Each point is a variant at its storage cost (bits per weight, scales and minimums included) and its "
         "perplexity on the run's text (log scale), ±1 standard error. The dashed line joins the Pareto frontier: "
         "the variants no other variant beats with fewer bits. The dotted line is the unquantized reference." TR_HOW_TO_READ},
        {"bpw_kld", "Bits per weight vs mean KL divergence from the reference",
         "mean KLD(reference || variant), nats (log scale)", "kld", "mean", 1, 1, 0, NAN, "",
         "Mean per-token KL divergence of each variant's next-token distribution from the reference's (log scale; "
         "0 would be the reference itself), ±1 standard error, with the Pareto frontier." TR_HOW_TO_READ},
        {"bpw_top1", "Bits per weight vs top-1 agreement with the reference", "top-1 agreement (higher is better)",
         "top1", "agreement", 0, 0, 1, 1.0, "reference (1, by definition)",
         "Share of scored tokens whose most likely next token is the reference's, ±1 standard error, with the "
         "Pareto frontier (fewer bits, higher agreement)." TR_HOW_TO_READ},
    };
    int rc = 0;
    for (int k = 0; k < 3 && !rc; k++) rc = tr_figure(s, g, dir, o, &figs[k], err);
    for (int t = 0; !rc && t < s->n_tasks; t++) {
        char name[64], suite[160], title[160], ylabel[200], ref_label[160];
        tr_safe_name(name, sizeof name, "bpw_task_", s->tasks[t]);
        snprintf(suite, sizeof suite, "task:%s", s->tasks[t]);
        snprintf(title, sizeof title, "Bits per weight vs accuracy on %s", s->tasks[t]);
        snprintf(ylabel, sizeof ylabel, "%s accuracy (higher is better)", s->tasks[t]);
        double ref = s->ref >= 0 ? rpt_metric_get(&s->v[s->ref], suite, "acc", NULL) : NAN;
        snprintf(ref_label, sizeof ref_label, "reference (%.4f)", ref);
        struct tr_spec sp = {name, title, ylabel, suite, "acc", 0, 0, 1, ref, ref_label,
                             "Task accuracy of each variant (log-likelihood scoring), ±1 standard error, with the "
                             "Pareto frontier and the reference's accuracy." TR_HOW_TO_READ};
        rc = tr_figure(s, g, dir, o, &sp, err);
    }
    return rc;
}
