// hx_progress.h — progress of long work on stderr: a self-overwriting line with rate and ETA on
// a terminal, a few plain lines otherwise (logs of batch jobs). Depends on kernels/qp.h only.
#ifndef HX_PROGRESS_H
#define HX_PROGRESS_H

#include <stdint.h>

struct hx_progress {
    const char *label;
    const char *unit; // what done and total count: "chunks" (hx_progress_init's default), "layers"
    int tty;
    double t0;
    int last_decile;
};
void hx_progress_init(struct hx_progress *p, const char *label);
// Reports done of total units (chunks), tokens processed so far; matches hx_ppl_opts.progress.
void hx_progress_cb(void *p, int done, int total, int64_t tokens);
void hx_progress_end(struct hx_progress *p);

#endif
