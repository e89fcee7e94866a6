// hx_progress.c — progress lines on stderr (hx_progress.h).
#include "hx_progress.h"

#include <stdio.h>
#include <unistd.h>

#include "qp.h"

void hx_progress_init(struct hx_progress *p, const char *label) {
    p->label = label;
    p->unit = "chunks";
    p->tty = isatty(STDERR_FILENO);
    p->t0 = qp_now();
    p->last_decile = 0;
}

void hx_progress_cb(void *ctx, int done, int total, int64_t tokens) {
    struct hx_progress *p = ctx;
    double dt = qp_now() - p->t0;
    double rate = dt > 0 ? (double)tokens / dt : 0;
    double eta = done > 0 ? dt * (total - done) / done : 0;
    char speed[48] = ""; // no tokens counted (layers of a quantizer): no rate
    if (tokens > 0) snprintf(speed, sizeof speed, ", %.0f tok/s", rate);
    if (p->tty) {
        int width = 30, fill = total ? done * width / total : width;
        fprintf(stderr, "\r%s [%.*s%*s] %d/%d %s%s, ETA %.0fs ", p->label, fill, "##############################",
                width - fill, "", done, total, p->unit, speed, eta);
        fflush(stderr);
    } else {
        int decile = total ? done * 4 / total : 4; // quiet: at 25 % steps
        if (decile > p->last_decile && done < total) {
            fprintf(stderr, "%s: %d/%d %s%s\n", p->label, done, total, p->unit, speed);
            p->last_decile = decile;
        }
    }
}

void hx_progress_end(struct hx_progress *p) {
    if (p->tty) fprintf(stderr, "\r\033[K");
}
