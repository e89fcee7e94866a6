// test_readme.c — every command of the README's usage block runs as written on a fresh copy of
// the repository: its tracked files (what a clone has) copied into a scratch folder, with the
// qprobe this build made in place of `make -j2` (the build itself is what `make test` tests).
//
// The long commands are shortened with their own options, each named here: the sweep runs one
// shard of 18 (`--shard 0/18`: the reference and one variant, every diagnostic and both task
// suites), `eval` and `ppl` one chunk (`--chunks 1`; `eval` 40 task items, `--task-limit 40`),
// `synth` one layer (`--layers 1`). FIXTURES
// is the one the tests use (a fresh clone elsewhere would have `make fixtures` download it).
#include <sys/stat.h>
#include <unistd.h>

#include "qp.h"
#include "qp_test.h"

static const char *root(void) {
    const char *r = getenv("QP_ROOT");
    return r && *r ? r : ".";
}

// The lines of the ```sh block under "## Usage" (malloc'd, one string with newlines).
static char *usage_block(void) {
    char path[2048];
    snprintf(path, sizeof path, "%s/README.md", root());
    char *md = qpt_read_file(path, NULL);
    QP_CHECK_MSG(md != NULL, "cannot read %s", path);
    char *sec = strstr(md, "\n## Usage\n");
    QP_CHECK_MSG(sec != NULL, "README.md has no '## Usage' section");
    char *start = strstr(sec, "```sh\n");
    QP_CHECK(start != NULL);
    start += 6;
    char *end = strstr(start, "```");
    QP_CHECK(end != NULL);
    char *block = strndup(start, (size_t)(end - start));
    free(md);
    return block;
}

// The shortening of one command (see the header), or "".
static const char *shortening(const char *line) {
    if (strncmp(line, "$Q sweep ", 9) == 0) return " --shard 0/18 --build-reference"; // a shard that may run the reference
    if (strncmp(line, "$Q eval ", 8) == 0) return " --chunks 1 --task-limit 40";
    if (strncmp(line, "$Q ppl ", 7) == 0) return " --chunks 1";
    if (strncmp(line, "$Q synth ", 9) == 0) return " --layers 1";
    return "";
}

QP_TEST(every_readme_usage_command_should_run_as_written_on_a_fresh_copy) {
    const char *fixtures = getenv("QP_FIXTURES");
    if (!fixtures || !*fixtures) QP_SKIP("QP_FIXTURES not set");
    qpt_fixture("models/llama2c/stories260K.bin");
    qpt_fixture("data/hellaswag/hellaswag_val_full.txt");
    qpt_fixture("models/gguf/ggml-vocab-llama-spm.gguf");
    if (qpt_run("git --version >/dev/null 2>&1", NULL) != 0) QP_SKIP("git is not installed");
    // The fresh copy: the tracked files as they are in the working tree.
    char dir[1100], cmd[8192];
    snprintf(dir, sizeof dir, "%s/clone", qpt_tmpdir());
    snprintf(cmd, sizeof cmd,
             "mkdir -p '%s/build/release' && cd '%s' && git ls-files -z | xargs -0 cp --parents -t '%s' && "
             "cp '%s' '%s/build/release/qprobe'",
             dir, root(), dir, qpt_qprobe(), dir);
    QP_CHECK_MSG(qpt_run(cmd, NULL) == 0, "cannot copy the repository: %s", cmd);

    // One script: each command, then a marker with its exit status.
    char *block = usage_block(), script[1200];
    snprintf(script, sizeof script, "%s/readme.sh", dir);
    FILE *f = fopen(script, "w");
    QP_CHECK(f != NULL);
    // A user's shell, not make's: under `make -C DIR test` MAKEFLAGS carries -w, and the README's
    // `$(make -s fixtures-dir)` then printed make's "Entering directory" lines into the path (the
    // fresh-clone failure seen at the ends of stops 27 and 29).
    fprintf(f, "unset MAKEFLAGS MFLAGS MAKELEVEL MAKEOVERRIDES GNUMAKEFLAGS\ncd '%s'\nexport FIXTURES='%s'\n", dir,
            fixtures);
    int n = 0;
    const char *lines[64];
    for (char *line = strtok(block, "\n"); line && n < 64; line = strtok(NULL, "\n")) {
        if (!*line || *line == '#') continue;
        lines[n] = line;
        char cmdline[4096];
        snprintf(cmdline, sizeof cmdline, "%s", line);
        // The comment, if any, goes; the shortening is appended to the command.
        char *hash = strstr(cmdline, "  #");
        if (hash) *hash = 0;
        for (size_t l = strlen(cmdline); l && cmdline[l - 1] == ' '; l--) cmdline[l - 1] = 0;
        // `make -j2` is this build's binary, copied above.
        if (strncmp(cmdline, "make -j2 && ", 12) == 0) memmove(cmdline, cmdline + 12, strlen(cmdline + 12) + 1);
        fprintf(f, "%s%s\necho \"@@ %d $?\"\n", cmdline, shortening(cmdline), n);
        n++;
    }
    fclose(f);
    QP_CHECK(n >= 10);
    char *out = NULL;
    snprintf(cmd, sizeof cmd, "bash '%s' 2>&1", script);
    qpt_run(cmd, &out);
    QP_CHECK(out != NULL);
    // Every command exits 0; the gate may exit 1 (a regression is its answer, not a failure).
    int seen = 0;
    for (const char *p = strstr(out, "@@ "); p; p = strstr(p + 1, "@@ ")) {
        int i, rc;
        QP_CHECK(sscanf(p, "@@ %d %d", &i, &rc) == 2);
        seen++;
        QP_CHECK(i >= 0 && i < n);
        const char *line = lines[i];
        int gate = strncmp(line, "$Q gate ", 8) == 0;
        QP_CHECK_MSG(rc == 0 || (gate && rc == 1), "README command %d exited %d: %s\n--- output:\n%s", i, rc, line,
                     out);
    }
    QP_CHECK_INT_EQ(seen, n);
    free(out);
    free(block);
    // What the commands leave: the study, the report with its history page, the GGUF.
    static const char *const made[] = {"study.sqlite", "gate.xml", "report/index.html", "report/trends.html", "q.gguf",
                                       "fixtures/made/tinystories-eval.txt"};
    for (size_t i = 0; i < QP_ARRAY_LEN(made); i++) {
        char p[1400];
        struct stat sb;
        snprintf(p, sizeof p, "%s/%s", dir, made[i]);
        QP_CHECK_MSG(stat(p, &sb) == 0 && sb.st_size > 0, "no %s after the README's commands", made[i]);
    }
    snprintf(cmd, sizeof cmd, "rm -f '%s/tinyllama.gguf'", dir);
    qpt_run(cmd, NULL);
}
