// hx_exit.h — qprobe's exit statuses and the one place a QP_E* code becomes one. Every command
// returns what hx_exit_status (or hx_fail / hx_usage_error, which print first) gives; only
// main() exits.
//
//   0    ok
//   1    a failed check: the gate found a regression (qprobe gate)
//   2    bad usage or bad input: unknown option, bad spec or configuration, a file that cannot
//        be opened or read or is not what it claims to be, an output path that cannot be
//        created, a study database that cannot be used (read-only, locked, of another schema)
//        — QP_EINVAL, QP_EFORMAT, QP_ERANGE, QP_ENOTSUP, QP_ENOENT, QP_EIO
//   3    a runtime failure: out of memory (QP_ENOMEM), or writing an output or the study
//        database failed while running (disk full, I/O error: QP_EWRITE)
//   130  interrupted (Ctrl-C, SIGTERM; QP_EINTR): nothing half-written is left
// Depends on kernels/qp.h only.
#ifndef HX_EXIT_H
#define HX_EXIT_H

enum hx_exit {
    HX_EXIT_OK = 0,
    HX_EXIT_FAIL = 1,
    HX_EXIT_USAGE = 2,
    HX_EXIT_RUNTIME = 3,
    HX_EXIT_INTERRUPTED = 130,
};

// The exit status for a fallible function's result (0 or a QP_E* code), as listed above. A code
// this table does not know is a runtime failure.
int hx_exit_status(int code);

// Prints "qprobe CMD: MSG" on stderr (one line) and returns hx_exit_status(code).
int hx_fail(const char *cmd, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

// Prints "qprobe CMD: MSG" and returns HX_EXIT_USAGE: for options and arguments.
int hx_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// The lines `qprobe --help` and the README print for the statuses above.
extern const char hx_exit_help[];

#endif
