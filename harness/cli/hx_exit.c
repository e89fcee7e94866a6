// hx_exit.c — QP_E* codes to exit statuses (hx_exit.h).
#include "hx_exit.h"

#include <stdarg.h>
#include <stdio.h>

#include "qp.h"

const char hx_exit_help[] =
    "exit status: 0 ok; 1 a failed check (the gate found a regression); 2 bad usage or input\n"
    "(options, specs, configurations, files that cannot be read or are malformed, an unusable\n"
    "database); 3 a runtime failure (out of memory, disk full or an I/O error while writing,\n"
    "training diverged);\n"
    "130 interrupted.\n";

int hx_exit_status(int code) {
    switch (code) {
    case QP_OK: return HX_EXIT_OK;
    case QP_EINVAL:
    case QP_EFORMAT:
    case QP_ERANGE:
    case QP_ENOTSUP:
    case QP_ENOENT:
    case QP_EIO: return HX_EXIT_USAGE;
    case QP_EINTR: return HX_EXIT_INTERRUPTED;
    case QP_ENOMEM:
    case QP_EWRITE:
    case QP_ENUMERIC: // QAT training diverged
    default: return HX_EXIT_RUNTIME;
    }
}

static void hx_vmessage(const char *cmd, const char *fmt, va_list ap) {
    fprintf(stderr, "qprobe %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

int hx_fail(const char *cmd, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    hx_vmessage(cmd, fmt, ap);
    va_end(ap);
    return hx_exit_status(code);
}

int hx_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    hx_vmessage(cmd, fmt, ap);
    va_end(ap);
    return HX_EXIT_USAGE;
}
