// fuzz_task_jsonl.c — fuzz target for the generic task JSONL reader (harness/task_io.[ch]).
//
// The input is written as a .jsonl file and read strictly and leniently. Strict reading either
// refuses it with a QP_E* code and ONE line "FILE:LINE: ..." (or a file-level message naming the
// file), or accepts it; every accepted item is well-formed: multiple choice with >= 2 non-empty
// choices and gold in range, or cloze with one non-empty target. A lenient read never returns
// fewer items than a strict one that succeeded.
//
// Depends on harness/io/hx_task_io.h, tasks/task.h and fuzz.h.
#include <string.h>

#include "fuzz.h"
#include "qp.h"
#include "task.h"
#include "hx_task_io.h"

int fuzz_task_jsonl(const uint8_t *data, size_t size) {
    char path[FUZZ_PATH_MAX], err[QP_ERRLEN] = "";
    fuzz_write("suite.jsonl", data, size, path);
    int strict_items = -1;
    for (int lenient = 0; lenient < 2; lenient++) {
        struct hx_task_read_opts o = {.lenient = lenient};
        struct task_suite *s = NULL;
        int rc = hx_task_read_jsonl(path, &o, &s, err);
        if (rc) {
            FUZZ_CHECK(s == NULL, "failed read left a suite");
            FUZZ_CHECK(rc < 0 && rc >= QP_EINTR, "unknown error code %d", rc);
            FUZZ_CHECK(err[0] && strchr(err, '\n') == NULL, "bad message '%s'", err);
            FUZZ_CHECK(strstr(err, path) != NULL, "message does not name the file: %s", err);
            continue;
        }
        int n = fuzz_check_suite(s);
        if (!lenient) strict_items = n;
        else FUZZ_CHECK(n >= strict_items, "lenient read gave %d items, strict %d", n, strict_items);
        task_suite_destroy(s);
    }
    return 0;
}

#ifdef QP_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_task_jsonl(data, size); }
#endif
