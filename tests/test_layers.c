// test_layers.c — the layer order (scripts/check-layers.sh, docs/ARCHITECTURE.md): the checkout
// passes, and a copy of it with one include pointing up, one sideways and one third-party header
// in the wrong layer fails, naming each offending line.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qp_test.h"

static const char *root(void) {
    const char *r = getenv("QP_ROOT");
    if (!r) QP_SKIP("QP_ROOT not set (run through make test)");
    return r;
}

// A copy of the layer folders' sources in a scratch directory (the check reads nothing else).
static const char *copy_tree(void) {
    static char dir[1024];
    snprintf(dir, sizeof dir, "%s/tree", qpt_tmpdir());
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "mkdir -p '%s' && cd '%s' && tar cf - kernels quantizers metrics tasks harness reports "
             "scripts/check-layers.sh | tar xf - -C '%s'",
             dir, root(), dir);
    QP_CHECK_INT_EQ(qpt_run(cmd, NULL), 0);
    return dir;
}

static int check(const char *tree, char **out) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s/scripts/check-layers.sh' '%s' 2>&1", tree, tree);
    return qpt_run(cmd, out);
}

static void append(const char *tree, const char *file, const char *line) {
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", tree, file);
    FILE *f = fopen(path, "a");
    QP_CHECK(f != NULL);
    fprintf(f, "%s\n", line);
    fclose(f);
}

QP_TEST(checkout_should_follow_the_layer_order) {
    char *out = NULL;
    int rc = check(copy_tree(), &out);
    QP_CHECK_MSG(rc == 0, "check-layers failed on the checkout:\n%s", out ? out : "");
    free(out);
}

QP_TEST(check_layers_should_fail_on_an_upward_include) {
    const char *tree = copy_tree();
    append(tree, "kernels/kn_ops.h", "#include \"hx_study.h\"");
    char *out = NULL;
    QP_CHECK_INT_EQ(check(tree, &out), 1);
    QP_CHECK_MSG(out && strstr(out, "kernels/kn_ops.h:") && strstr(out, "points up (kernels -> harness/run)"),
                 "unexpected output:\n%s", out ? out : "");
    free(out);
}

QP_TEST(check_layers_should_fail_on_a_sideways_include) {
    const char *tree = copy_tree();
    append(tree, "metrics/met_ppl.c", "#include \"qz_spec.h\"");
    char *out = NULL;
    QP_CHECK_INT_EQ(check(tree, &out), 1);
    QP_CHECK_MSG(out && strstr(out, "metrics/met_ppl.c:") && strstr(out, "points sideways (metrics -> quantizers)"),
                 "unexpected output:\n%s", out ? out : "");
    free(out);
}

QP_TEST(check_layers_should_fail_on_sqlite_below_the_store) {
    const char *tree = copy_tree();
    append(tree, "harness/io/hx_model.c", "#include <sqlite3.h>");
    char *out = NULL;
    QP_CHECK_INT_EQ(check(tree, &out), 1);
    QP_CHECK_MSG(out && strstr(out, "harness/io/hx_model.c:") && strstr(out, "<sqlite3.h> is not for harness/io"),
                 "unexpected output:\n%s", out ? out : "");
    free(out);
}
