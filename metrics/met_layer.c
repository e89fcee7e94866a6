// met_layer.c — hidden-state error accumulators (met_layer.h).
#include "met_layer.h"

#include <math.h>
#include <string.h>

#include "qp.h"

// ---------------------------------------------------------------------------------------------
// Helpers

// Cosine from <a,b>, |a|^2, |b|^2: 1 when both norms are 0, 0 when one is, clamped to [-1, 1]
// (rounding can put |<a,b>| a hair above |a||b| when a and b are parallel).
static double cosine(double ab, double aa, double bb) {
    if (aa == 0 && bb == 0) return 1.0;
    if (aa == 0 || bb == 0) return 0.0;
    double c = ab / sqrt(aa * bb);
    return c > 1 ? 1.0 : c < -1 ? -1.0 : c;
}

// ---------------------------------------------------------------------------------------------
// Public functions

void met_err_init(struct met_err *e) { memset(e, 0, sizeof *e); }

void met_err_add(struct met_err *e, const float *ref, const float *var, int rows, int width) {
    QP_ASSERT(rows >= 0 && width >= 0);
    for (int r = 0; r < rows; r++) {
        const float *a = ref + (size_t)r * (size_t)width, *b = var + (size_t)r * (size_t)width;
        double sse = 0, aa = 0, bb = 0, ab = 0;
        for (int i = 0; i < width; i++) {
            double x = a[i], y = b[i], d = y - x;
            sse += d * d;
            aa += x * x;
            bb += y * y;
            ab += x * y;
        }
        e->sse += sse;
        e->rr += aa;
        e->vv += bb;
        e->rv += ab;
        e->row_cos += cosine(ab, aa, bb);
    }
    e->rows += rows;
    e->n += (int64_t)rows * width;
}

void met_err_merge(struct met_err *dst, const struct met_err *src) {
    dst->sse += src->sse;
    dst->rr += src->rr;
    dst->vv += src->vv;
    dst->rv += src->rv;
    dst->row_cos += src->row_cos;
    dst->rows += src->rows;
    dst->n += src->n;
}

void met_err_finish(const struct met_err *e, struct met_err_result *out) {
    if (e->rr > 0)
        out->rel_err = sqrt(e->sse / e->rr);
    else
        out->rel_err = e->sse > 0 ? INFINITY : 0.0;
    out->cos = cosine(e->rv, e->rr, e->vv);
    out->row_cos_mean = e->rows ? e->row_cos / (double)e->rows : 1.0; // no rows: both empty
    out->rows = e->rows;
    out->n = e->n;
}
