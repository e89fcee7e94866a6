// fuzz_task_dataset.c — fuzz target for the real task datasets' readers (harness/io/hx_task_io.c:
// LAMBADA, HellaSwag, PIQA with its labels file, ARC, BoolQ); fuzz_task_jsonl does the generic
// JSONL formats.
//
// Input: the first byte chooses the reader (its value modulo 5: 0 LAMBADA, 1 HellaSwag, 2 PIQA,
// 3 ARC, 4 BoolQ); the rest is the dataset file. For PIQA the rest is split at its first NUL
// byte: the records before it, the labels file after it (empty without a NUL).
//
// Properties, strict and lenient: a refused file gives a QP_E* code, no suite and one line
// naming the file it is about (the dataset or the labels); an accepted suite holds only
// well-formed items (multiple choice: >= 2 non-empty choices and gold in range; cloze: one
// non-empty target), and a lenient read never gives fewer items than a strict one that
// succeeded. A limit of 1 never gives more than one item.
//
// Depends on harness/io/hx_task_io.h, tasks/task.h and fuzz.h.
#include <string.h>

#include "fuzz.h"
#include "hx_task_io.h"
#include "qp.h"
#include "task.h"

enum { FD_LAMBADA, FD_HELLASWAG, FD_PIQA, FD_ARC, FD_BOOLQ, FD_N };

static int fd_read(int kind, const char *path, const char *labels, const struct hx_task_read_opts *o,
                   struct task_suite **s, char *err) {
    switch (kind) {
    case FD_LAMBADA: return hx_task_read_lambada(path, o, s, err);
    case FD_HELLASWAG: return hx_task_read_hellaswag(path, o, s, err);
    case FD_PIQA: return hx_task_read_piqa(path, labels, o, s, err);
    case FD_ARC: return hx_task_read_arc(path, o, s, err);
    default: return hx_task_read_boolq(path, o, s, err);
    }
}

int fuzz_task_dataset(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    int kind = data[0] % FD_N;
    const uint8_t *body = data + 1;
    size_t n = size - 1, n_labels = 0;
    const uint8_t *labels = NULL;
    if (kind == FD_PIQA) {
        const uint8_t *nul = memchr(body, 0, n);
        if (nul) {
            labels = nul + 1;
            n_labels = n - (size_t)(labels - body);
            n = (size_t)(nul - body);
        }
    }
    char path[FUZZ_PATH_MAX], lpath[FUZZ_PATH_MAX], err[QP_ERRLEN];
    fuzz_write("dataset.jsonl", body, n, path);
    fuzz_write("labels.lst", labels ? labels : (const uint8_t *)"", n_labels, lpath);
    int strict_items = -1;
    for (int mode = 0; mode < 3; mode++) { // strict, lenient, lenient with a limit of 1
        struct hx_task_read_opts o = {.lenient = mode > 0, .limit = mode == 2 ? 1 : 0};
        struct task_suite *s = NULL;
        err[0] = 0;
        int rc = fd_read(kind, path, lpath, &o, &s, err);
        if (rc) {
            FUZZ_CHECK(s == NULL, "failed read left a suite");
            FUZZ_CHECK(rc < 0 && rc >= QP_EINTR, "unknown error code %d", rc);
            FUZZ_CHECK(err[0] && strchr(err, '\n') == NULL, "bad message '%s'", err);
            FUZZ_CHECK(strstr(err, path) || strstr(err, lpath), "message names no file: %s", err);
            continue;
        }
        int items = fuzz_check_suite(s);
        if (mode == 0) strict_items = items;
        if (mode == 1) FUZZ_CHECK(items >= strict_items, "lenient read gave %d items, strict %d", items, strict_items);
        if (mode == 2) FUZZ_CHECK(items <= 1, "limit 1 gave %d items", items);
        task_suite_destroy(s);
    }
    return 0;
}

#ifdef QP_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_task_dataset(data, size); }
#endif
