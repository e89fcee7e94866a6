// fuzz_sweep_config.c — fuzz target for the sweep configuration (harness/sweep.[ch]).
//
// The input is written to a file and loaded as a configuration. It is either refused with a
// QP_E* code and ONE line that names the file, or accepted; an accepted configuration has at
// least one variant, every variant is a canonical spec (it parses and prints back to itself),
// and its numbers are in their documented ranges. Paths in the input resolve against the
// scratch directory, so most are refused as missing files: the seeds name real files through
// ${QP_FIXTURES}, which run.sh sets.
//
// Depends on harness/run/hx_sweep.h, quantizers/qz_spec.h and fuzz.h.
#include <string.h>

#include "fuzz.h"
#include "qp.h"
#include "qz_spec.h"
#include "hx_sweep.h"

int fuzz_sweep_config(const uint8_t *data, size_t size) {
    char path[FUZZ_PATH_MAX], err[QP_ERRLEN] = "";
    fuzz_write("sweep.json", data, size, path);
    struct hx_sweep_config *cfg = NULL;
    int rc = hx_sweep_config_load(path, &cfg, err);
    if (rc) {
        FUZZ_CHECK(cfg == NULL, "failed load left a configuration");
        FUZZ_CHECK(rc < 0 && rc >= QP_EINTR, "unknown error code %d", rc);
        FUZZ_CHECK(err[0] && strchr(err, '\n') == NULL, "bad message '%s'", err);
        FUZZ_CHECK(strstr(err, path) != NULL, "message does not name the file: %s", err);
        return 0;
    }
    FUZZ_CHECK(cfg->n_variants > 0 && cfg->model && cfg->text, "accepted without variants, model or text");
    FUZZ_CHECK(cfg->ctx >= 4 && cfg->max_chunks >= 0 && cfg->threads >= 0, "numbers out of range");
    for (int i = 0; i < cfg->n_variants; i++) {
        struct qz_variant *v = NULL;
        char canon[QZ_SPEC_MAX + 1];
        FUZZ_CHECK(qz_variant_parse(cfg->variants[i], &v, err) == 0, "variant %d '%s' does not parse: %s", i,
                   cfg->variants[i], err);
        qz_variant_print(v, canon, sizeof canon);
        FUZZ_CHECK(strcmp(canon, cfg->variants[i]) == 0, "variant '%s' is not canonical ('%s')", cfg->variants[i],
                   canon);
        qz_variant_destroy(v);
    }
    hx_sweep_config_free(cfg);
    return 0;
}

#ifdef QP_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_sweep_config(data, size); }
#endif
