// test_badinput.c — malformed model files through the real binary: each must give exit status
// 2 and exactly one line on stderr that names the file, never a crash or a partial result.
#include <stdint.h>

#include "qp_test.h"

// Writes len bytes to a scratch file and returns its path (static, rotating).
static const char *scratch(const char *name, const void *data, size_t len) {
    static char bufs[4][4096];
    static int next;
    char *p = bufs[next++ % 4];
    snprintf(p, 4096, "%s/%s", qpt_tmpdir(), name);
    FILE *f = fopen(p, "wb");
    QP_CHECK(f && fwrite(data, 1, len, f) == len);
    fclose(f);
    return p;
}

static void *fixture_bytes(const char *rel, size_t *len) {
    void *b = qpt_read_file(qpt_fixture(rel), len);
    QP_CHECK(b != NULL);
    return b;
}

// Runs `qprobe ppl` on model and checks: exit 2, one stderr line, naming the file, mentioning want.
static void expect_rejected(const char *model, const char *want) {
    char cmd[8192], *err = NULL;
    const char *text = scratch("text.txt", "Once upon a time there was a cat.", 33);
    snprintf(cmd, sizeof cmd, "'%s' ppl -m '%s' -z '%s' --text '%s' 2>&1 >/dev/null", qpt_qprobe(), model,
             qpt_fixture("models/llama2c/tok512.bin"), text);
    int rc = qpt_run(cmd, &err);
    QP_CHECK_MSG(rc == 2, "exit %d, stderr: %s", rc, err);
    size_t n = strlen(err);
    QP_CHECK_MSG(n > 0 && err[n - 1] == '\n' && memchr(err, '\n', n) == err + n - 1, "not one line: %s", err);
    QP_CHECK_MSG(strstr(err, model) != NULL, "does not name the file: %s", err);
    QP_CHECK_MSG(strstr(err, want) != NULL, "does not say '%s': %s", want, err);
    free(err);
}

#define STORIES "models/llama2c/stories260K.bin"
#define GGUF "golden/ppl/stories260K-F32.gguf"

QP_TEST(truncated_llama2c_file_should_be_rejected) {
    size_t len;
    char *b = fixture_bytes(STORIES, &len);
    expect_rejected(scratch("trunc.bin", b, len - 4096), "truncated");
    expect_rejected(scratch("short.bin", b, 20), "too short");
    free(b);
}

QP_TEST(llama2c_header_with_absurd_dimensions_should_be_rejected) {
    size_t len;
    char *b = fixture_bytes(STORIES, &len);
    int32_t dim = 1 << 30;
    memcpy(b, &dim, 4);
    expect_rejected(scratch("absurd.bin", b, len), "out of range");
    dim = 64;
    int32_t vocab = -2147483647 - 1;
    memcpy(b, &dim, 4);
    memcpy(b + 20, &vocab, 4);
    expect_rejected(scratch("vocab.bin", b, len), "vocab_size");
    free(b);
}

QP_TEST(llama2c_heads_not_dividing_dim_should_be_rejected) {
    size_t len;
    char *b = fixture_bytes(STORIES, &len);
    int32_t heads = 7;
    memcpy(b + 12, &heads, 4);
    expect_rejected(scratch("heads.bin", b, len), "does not divide dim");
    free(b);
}

QP_TEST(llama2c_nan_weight_should_be_rejected) {
    size_t len;
    char *b = fixture_bytes(STORIES, &len);
    uint32_t nan = 0x7fc00000u;
    memcpy(b + 28 + 4 * 5000, &nan, 4);
    expect_rejected(scratch("nan.bin", b, len), "NaN");
    free(b);
}

QP_TEST(text_file_passed_as_model_should_be_rejected) {
    const char *t = "This is not a model, only some words in a file.\n";
    expect_rejected(scratch("words.bin", t, strlen(t)), "not a llama2.c checkpoint");
}

QP_TEST(gguf_with_wrong_magic_should_be_rejected) {
    size_t len;
    char *b = fixture_bytes(GGUF, &len);
    memcpy(b, "GGUX", 4);
    expect_rejected(scratch("magic.gguf", b, len), "magic");
    free(b);
}

QP_TEST(gguf_with_tensor_data_past_end_of_file_should_be_rejected) {
    size_t len;
    char *b = fixture_bytes(GGUF, &len);
    expect_rejected(scratch("cut.gguf", b, len - 1000), "past end");
    free(b);
}

QP_TEST(gguf_with_unknown_value_type_should_be_rejected) {
    size_t len;
    char *b = fixture_bytes(GGUF, &len);
    // header: magic, version, n_tensors, n_kv (24 bytes); first key: u64 length + bytes; then type
    uint64_t klen;
    memcpy(&klen, b + 24, 8);
    QP_CHECK(klen < 100);
    uint32_t bad = 99;
    memcpy(b + 32 + klen, &bad, 4);
    expect_rejected(scratch("vtype.gguf", b, len), "type");
    free(b);
}

QP_TEST(gguf_truncated_inside_metadata_should_be_rejected) {
    size_t len;
    char *b = fixture_bytes(GGUF, &len);
    expect_rejected(scratch("meta.gguf", b, 300), "cannot read");
    free(b);
}

QP_TEST(missing_model_file_should_be_rejected) {
    char p[4096];
    snprintf(p, sizeof p, "%s/nope.bin", qpt_tmpdir());
    expect_rejected(p, "No such file");
}

QP_TEST(empty_text_should_be_rejected) {
    char cmd[8192], *err = NULL;
    const char *text = scratch("empty.txt", "", 0);
    snprintf(cmd, sizeof cmd, "'%s' ppl -m '%s' -z '%s' --text '%s' 2>&1 >/dev/null", qpt_qprobe(),
             qpt_fixture(STORIES), qpt_fixture("models/llama2c/tok512.bin"), text);
    QP_CHECK_INT_EQ(qpt_run(cmd, &err), 2);
    QP_CHECK_MSG(strstr(err, text) && strstr(err, "empty"), "%s", err);
    free(err);
}

QP_TEST(text_shorter_than_one_window_should_be_rejected) {
    char cmd[8192], *err = NULL;
    const char *text = scratch("short.txt", "Once upon a time.", 17);
    snprintf(cmd, sizeof cmd, "'%s' ppl -m '%s' -z '%s' --text '%s' 2>&1 >/dev/null", qpt_qprobe(),
             qpt_fixture(STORIES), qpt_fixture("models/llama2c/tok512.bin"), text);
    QP_CHECK_INT_EQ(qpt_run(cmd, &err), 2);
    QP_CHECK_MSG(strstr(err, text) && strstr(err, "fewer than one window"), "%s", err);
    free(err);
}

QP_TEST(unknown_options_and_commands_should_exit_2) {
    char cmd[8192], *err = NULL;
    snprintf(cmd, sizeof cmd, "'%s' ppl --bogus 2>&1 >/dev/null", qpt_qprobe());
    QP_CHECK_INT_EQ(qpt_run(cmd, &err), 2);
    QP_CHECK(strstr(err, "--bogus") != NULL);
    free(err);
    snprintf(cmd, sizeof cmd, "'%s' frobnicate 2>&1 >/dev/null", qpt_qprobe());
    QP_CHECK_INT_EQ(qpt_run(cmd, &err), 2);
    free(err);
    snprintf(cmd, sizeof cmd, "'%s' ppl --ctx 0 2>&1 >/dev/null", qpt_qprobe());
    QP_CHECK_INT_EQ(qpt_run(cmd, &err), 2);
    free(err);
}

QP_TEST(help_should_be_available_on_every_command) {
    const char *cmds[] = {"generate", "ppl", "convert"};
    for (int i = 0; i < 3; i++) {
        char cmd[8192], *out = NULL;
        snprintf(cmd, sizeof cmd, "'%s' %s --help", qpt_qprobe(), cmds[i]);
        QP_CHECK_INT_EQ(qpt_run(cmd, &out), 0);
        QP_CHECK_MSG(strstr(out, "usage: qprobe") != NULL, "%s", out);
        free(out);
    }
}
