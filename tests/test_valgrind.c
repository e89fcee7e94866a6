// test_valgrind.c — the qprobe binary under valgrind's memcheck: `generate` and `ppl` (unquantized,
// a k-quant run on dequantized panels, and a legacy block format with q8 activations) on the
// fixture model, one chunk of a short text, one thread. Any memory error or definitely lost block
// makes valgrind exit 99 (--error-exitcode); "possibly lost" and still-reachable blocks (runtime
// pools such as OpenMP's) do not count. Each run must also print what the uninstrumented binary
// prints, so that a pass means the real work ran under memcheck.
//
// Skipped when valgrind is not installed or QP_BIN is an AddressSanitizer build (the two cannot
// be combined). Suppressions, if ever needed, go in tests/valgrind.supp (used when present).
// Depends on the test framework only: it runs the binary, links nothing of qprobe.
#include <string.h>
#include <unistd.h>

#include "qp_test.h"

#define STORIES "models/llama2c/stories260K.bin"
#define TOK512 "models/llama2c/tok512.bin"
// Tokens of text: one chunk of 128 needs a little more than 128 tokens (~600 bytes of stories).
#define TEXT_BYTES 2000
#define CTX "128"
// Relative difference allowed between perplexities with and without valgrind. Its emulation of
// SSE/AVX/FMA arithmetic is exact, so they agree to the last bit in practice; the tolerance only
// keeps the case about memory, not about a libm build detail under emulation.
#define PPL_TOL 1e-9

// Skips unless valgrind can run QP_BIN.
static void need_valgrind(void) {
    if (qpt_run("command -v valgrind >/dev/null 2>&1", NULL) != 0) QP_SKIP("valgrind is not installed");
    size_t len;
    char *bin = qpt_read_file(qpt_qprobe(), &len);
    QP_CHECK(bin != NULL);
    int asan = memmem(bin, len, "__asan_init", 11) != NULL;
    free(bin);
    if (asan) QP_SKIP("QP_BIN is an AddressSanitizer build; valgrind cannot run it");
}

// Runs `qprobe ARGS` under memcheck and checks its verdict; returns stdout (malloc'd).
// --trace-children: qprobe may re-execute itself once (OPENBLAS_CORETYPE); check that run too.
static char *memcheck(const char *name, const char *args) {
    char log[4200], supp[4200] = "", cmd[16384];
    snprintf(log, sizeof log, "%s/%s.valgrind.log", qpt_tmpdir(), name);
    const char *root = getenv("QP_ROOT");
    if (root && *root) {
        char p[4096];
        snprintf(p, sizeof p, "%s/tests/valgrind.supp", root);
        if (access(p, R_OK) == 0) snprintf(supp, sizeof supp, "--suppressions='%s'", p);
    }
    snprintf(cmd, sizeof cmd,
             "valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite "
             "--trace-children=yes %s --log-file='%s' '%s' %s 2>/dev/null",
             supp, log, qpt_qprobe(), args);
    char *out = NULL;
    int rc = qpt_run(cmd, &out);
    char *text = qpt_read_file(log, NULL);
    const char *tail = text ? text + (strlen(text) > 3000 ? strlen(text) - 3000 : 0) : "(no log)";
    QP_CHECK_MSG(rc == 0, "valgrind exit %d for 'qprobe %s'; log %s:\n%s", rc, args, log, tail);
    QP_CHECK_MSG(text && strstr(text, "ERROR SUMMARY: 0 errors") && strstr(text, "definitely lost: 0 bytes"),
                 "no clean summary in %s:\n%s", log, tail);
    free(text);
    QP_CHECK(out != NULL);
    return out;
}

// The same command without valgrind; returns stdout (malloc'd).
static char *native(const char *args) {
    char cmd[16384], *out = NULL;
    snprintf(cmd, sizeof cmd, "'%s' %s 2>/dev/null", qpt_qprobe(), args);
    QP_CHECK_INT_EQ(qpt_run(cmd, &out), 0);
    QP_CHECK(out != NULL);
    return out;
}

// ppl with extra options (e.g. a spec) under memcheck; its perplexity must equal the native one.
static void ppl_case(const char *name, const char *extra) {
    need_valgrind();
    char args[12288];
    snprintf(args, sizeof args, "ppl -m '%s' -z '%s' --text '%s' --chunks 1 --ctx " CTX " -t 1 --json %s",
             qpt_fixture(STORIES), qpt_fixture(TOK512), qpt_text_prefix(TEXT_BYTES), extra);
    char *want = native(args), *got = memcheck(name, args);
    QP_CHECK_NEAR(qpt_json_num(got, "ppl"), qpt_json_num(want, "ppl"), PPL_TOL);
    QP_CHECK_INT_EQ(qpt_json_num(got, "tokens_scored"), qpt_json_num(want, "tokens_scored"));
    free(want);
    free(got);
}

QP_TEST(generate_should_be_memcheck_clean_without_definite_leaks) {
    need_valgrind();
    char args[12288];
    snprintf(args, sizeof args, "generate -m '%s' -z '%s' -p 'Once upon a time' -n 40 -t 1", qpt_fixture(STORIES),
             qpt_fixture(TOK512));
    char *want = native(args), *got = memcheck("generate", args);
    QP_CHECK_MSG(strlen(want) > 40, "native output too short: '%s'", want);
    QP_CHECK_STR_EQ(got, want); // greedy text byte for byte
    free(want);
    free(got);
}

QP_TEST(ppl_should_be_memcheck_clean_without_definite_leaks) {
    ppl_case("ppl_f32", "");
}

QP_TEST(ppl_of_a_k_quant_should_be_memcheck_clean_without_definite_leaks) {
    ppl_case("ppl_q4_k_m", "-q q4_k_m");
}

QP_TEST(ppl_with_q8_activations_should_be_memcheck_clean_without_definite_leaks) {
    ppl_case("ppl_q4_0_q8", "-q 'q4_0;act=q8'");
}
