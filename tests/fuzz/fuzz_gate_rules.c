// fuzz_gate_rules.c — fuzz target for the gate's rules (reports/rpt_gate.[ch]).
//
// The input is a rules document. It is either refused with a QP_E* code and ONE line that
// names the document, or accepted; the limits of an accepted document, asked for a few specs,
// are finite and non-negative wherever they are set.
//
// Depends on reports/rpt_gate.h and fuzz.h.
#include <math.h>
#include <string.h>

#include "fuzz.h"
#include "qp.h"
#include "rpt_gate.h"

int fuzz_gate_rules(const uint8_t *data, size_t size) {
    char err[QP_ERRLEN] = "";
    struct rpt_gate_rules *rules = NULL;
    int rc = rpt_gate_rules_parse((const char *)data, size, "gate.json", &rules, err);
    if (rc) {
        FUZZ_CHECK(rules == NULL, "failed parse left rules");
        FUZZ_CHECK(rc < 0 && rc >= QP_EINTR, "unknown error code %d", rc);
        FUZZ_CHECK(err[0] && strchr(err, '\n') == NULL, "bad message '%s'", err);
        FUZZ_CHECK(strstr(err, "gate.json") != NULL, "message does not name the document: %s", err);
        return 0;
    }
    static const char *const specs[] = {"q8_0", "rtn:bits=2:group=32:asym", "nf4:group=64", ""};
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        struct rpt_gate_limits lim;
        rpt_gate_rules_for(rules, specs[i], &lim);
        for (int r = 0; r < RPT_GATE_N_RULES; r++)
            FUZZ_CHECK(!lim.set[r] || (isfinite(lim.limit[r]) && lim.limit[r] >= 0), "limit %d of '%s' is %g", r,
                       specs[i], lim.limit[r]);
    }
    rpt_gate_rules_destroy(rules);
    return 0;
}

#ifdef QP_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_gate_rules(data, size); }
#endif
