// test_badinput.c — the bad-input catalogue (docs/BADINPUT.md), end to end through the real
// binary: corrupt, truncated or absurd model files (llama2.c, GGUF, safetensors), tokenizers,
// texts, specs and options, and study databases that cannot be written. Each must give exit
// status 2 (3 for a runtime failure: the disk filling up while a variant is stored) and exactly
// one line on stderr that names the file and says why — never a crash, a hang or a partial
// result — and a study database must afterwards hold no half-written variant.
//
// Inputs are made by corrupting copies of the shared fixtures in this case's scratch directory;
// the library is used only to write a safetensors copy of the fixture model. Every case runs the
// qprobe binary (QP_BIN). Depends on the test framework, SQLite (to inspect and lock databases)
// and harness/io/hx_model.h + safetensors.h; on nothing else of qprobe.
#include <errno.h>
#include <grp.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hx_model.h"
#include "qp.h"
#include "qp_test.h"
#include "hx_safetensors.h"

#define STORIES "models/llama2c/stories260K.bin"
#define TOK512 "models/llama2c/tok512.bin"
#define GGUF "golden/ppl/stories260K-F32.gguf"
#define GGUF_F16 "golden/ppl/stories260K-F16.gguf"
#define GGUF_Q4_0 "golden/ppl/stories260K-Q4_0_pure_ffndownF16.gguf"

// The application_id of a qprobe study ('qprb'), as harness/store/hx_store.c sets it.
#define STUDY_APP_ID 1903194722
// The user `nobody`, for the read-only database case when the tests run as root.
#define NOBODY 65534
// RLIMIT_FSIZE for the disk-full case, in ulimit -f blocks (512 bytes in dash, 1024 in bash):
// 64 or 128 kB, above SQLite's 32 kB shared-memory file but far below what one variant writes
// (~400 kB of WAL) and below the database file itself (~900 kB).
#define FSIZE_BLOCKS 128

// ---------------------------------------------------------------------------------------------
// Helpers: files

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

// A fixture's bytes (malloc'd, caller frees).
static void *fixture_bytes(const char *rel, size_t *len) {
    void *b = qpt_read_file(qpt_fixture(rel), len);
    QP_CHECK(b != NULL);
    return b;
}

// A path in the scratch directory (static, rotating).
static const char *scratch_path(const char *name) {
    static char bufs[4][4096];
    static int next;
    char *p = bufs[next++ % 4];
    snprintf(p, 4096, "%s/%s", qpt_tmpdir(), name);
    return p;
}

static void put_i32(void *b, size_t off, int32_t v) { memcpy((char *)b + off, &v, 4); }
static void put_u32(void *b, size_t off, uint32_t v) { memcpy((char *)b + off, &v, 4); }
static void put_u64(void *b, size_t off, uint64_t v) { memcpy((char *)b + off, &v, 8); }
static uint32_t get_u32(const void *b, size_t off) {
    uint32_t v;
    memcpy(&v, (const char *)b + off, 4);
    return v;
}
static uint64_t get_u64(const void *b, size_t off) {
    uint64_t v;
    memcpy(&v, (const char *)b + off, 8);
    return v;
}

// ---------------------------------------------------------------------------------------------
// Helpers: running qprobe and judging its error

// Runs `PREFIX 'qprobe' ARGS` in a shell with stdout discarded (prefix: environment settings or
// a `ulimit` command, may be ""). Returns the exit status; *err = stderr (malloc'd).
static int qprobe_err(char **err, const char *prefix, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int qprobe_err(char **err, const char *prefix, const char *fmt, ...) {
    char args[12288], cmd[16384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "%s'%s' %s 2>&1 >/dev/null", prefix, qpt_qprobe(), args);
    *err = NULL;
    int rc = qpt_run(cmd, err);
    QP_CHECK(*err != NULL);
    return rc;
}

// The catalogue's contract: exit status (2 for bad input, 3 for a runtime failure such as a full
// disk), exactly one line on stderr, naming file, saying want. Frees err.
static void expect_failure(int rc, int status, char *err, const char *file, const char *want) {
    size_t n = strlen(err);
    QP_CHECK_MSG(rc == status, "exit %d (expected %d), stderr: %s", rc, status, err);
    QP_CHECK_MSG(n > 0 && err[n - 1] == '\n' && memchr(err, '\n', n) == err + n - 1, "not one line: %s", err);
    QP_CHECK_MSG(!file || strstr(err, file) != NULL, "does not name '%s': %s", file, err);
    QP_CHECK_MSG(strstr(err, want) != NULL, "does not say '%s': %s", want, err);
    free(err);
}

static void expect_error(int rc, char *err, const char *file, const char *want) {
    expect_failure(rc, 2, err, file, want);
}

// Runs `qprobe ppl` on model (with tokenizer tok) and checks the contract for file.
static void expect_ppl_rejected(const char *model, const char *tok, const char *file, const char *want) {
    char *err;
    const char *text = scratch("text.txt", "Once upon a time there was a cat.", 33);
    int rc = qprobe_err(&err, "", "ppl -m '%s' -z '%s' --text '%s'", model, tok, text);
    expect_error(rc, err, file, want);
}

// A model the binary must refuse, with the fixture tokenizer.
static void expect_rejected(const char *model, const char *want) {
    expect_ppl_rejected(model, qpt_fixture(TOK512), model, want);
}

// A tokenizer the binary must refuse, with the fixture model.
static void expect_tok_rejected(const char *tok, const char *want) {
    expect_ppl_rejected(qpt_fixture(STORIES), tok, tok, want);
}

// `qprobe ppl` of the fixture model on text must fail naming the text.
static void expect_text_rejected(const char *text, const char *want) {
    char *err;
    int rc = qprobe_err(&err, "", "ppl -m '%s' -z '%s' --text '%s'", qpt_fixture(STORIES), qpt_fixture(TOK512), text);
    expect_error(rc, err, text, want);
}

// `qprobe ppl` of the fixture model and tokenizer on a short text with extra options opts must
// fail naming file (an option or a spec) and saying want.
static void expect_ppl_opts_rejected(const char *opts, const char *file, const char *want) {
    char *err;
    int rc = qprobe_err(&err, "", "ppl -m '%s' -z '%s' --text '%s' %s", qpt_fixture(STORIES), qpt_fixture(TOK512),
                        qpt_text_prefix(1500), opts);
    expect_error(rc, err, file, want);
}

// ---------------------------------------------------------------------------------------------
// Helpers: GGUF layout (of the trusted fixtures; every offset is a file offset)

// Offset just past a value of the given type starting at pos.
static size_t gg_skip(const uint8_t *b, size_t pos, uint32_t type) {
    static const size_t sizes[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    if (type == 8) return pos + 8 + (size_t)get_u64(b, pos);
    if (type == 9) {
        uint32_t et = get_u32(b, pos);
        uint64_t n = get_u64(b, pos + 4);
        pos += 12;
        for (uint64_t i = 0; i < n; i++) pos = gg_skip(b, pos, et);
        return pos;
    }
    QP_CHECK(type < 13);
    return pos + sizes[type];
}

// Offset of the length field of key's name (its value follows at + 8 + strlen(key) + 4), or of
// the first tensor info when key is NULL.
static size_t gg_key(const uint8_t *b, const char *key) {
    uint64_t n_kv = get_u64(b, 16);
    size_t pos = 24;
    for (uint64_t i = 0; i < n_kv; i++) {
        uint64_t klen = get_u64(b, pos);
        if (key && klen == strlen(key) && memcmp(b + pos + 8, key, klen) == 0) return pos;
        size_t v = pos + 8 + (size_t)klen;
        pos = gg_skip(b, v + 4, get_u32(b, v));
    }
    QP_CHECK_MSG(key == NULL, "no key '%s' in the fixture", key ? key : "");
    return pos;
}

// Offset of key's value.
static size_t gg_value(const uint8_t *b, const char *key) { return gg_key(b, key) + 8 + strlen(key) + 4; }

// Offset of the tensor info called name (its name length field); *data_at = the offset of its
// data (the data section starts at the next multiple of 32 after the last info).
static size_t gg_tensor(const uint8_t *b, const char *name, size_t *data_at) {
    uint64_t n_t = get_u64(b, 8);
    size_t pos = gg_key(b, NULL), found = 0;
    uint64_t rel = 0;
    for (uint64_t i = 0; i < n_t; i++) {
        size_t at = pos;
        uint64_t nlen = get_u64(b, pos);
        int match = nlen == strlen(name) && memcmp(b + pos + 8, name, nlen) == 0;
        pos += 8 + (size_t)nlen;
        uint32_t nd = get_u32(b, pos);
        pos += 4 + 8 * (size_t)nd + 4;
        if (match) {
            found = at;
            rel = get_u64(b, pos);
        }
        pos += 8;
    }
    QP_CHECK_MSG(found != 0, "no tensor '%s' in the fixture", name);
    if (data_at) *data_at = (pos + 31) / 32 * 32 + (size_t)rel;
    return found;
}

// Offset of the data-offset field of tensor name's info (after its name, n_dims, dims, type).
static size_t gg_tensor_offset_at(const uint8_t *b, const char *name) {
    size_t info = gg_tensor(b, name, NULL);
    size_t p = info + 8 + (size_t)get_u64(b, info);
    return p + 4 + 8 * (size_t)get_u32(b, p) + 4;
}

// ---------------------------------------------------------------------------------------------
// Helpers: study databases

// The eval arguments shared by the database cases (short text, one chunk of 128 tokens).
#define EVAL_FMT "eval -m '%s' -z '%s' --text '%s' --db '%s' -q %s --ctx 128 --chunks 1 --act-chunks 1 -t 1"
#define EVAL_ARGS(db, spec) qpt_fixture(STORIES), qpt_fixture(TOK512), qpt_text_prefix(1500), db, spec

// A study database as a nightly job finds it: the reference and q8_0 of the fixture model.
static const char *study_db(const char *name) {
    const char *db = scratch_path(name);
    char *err;
    int rc = qprobe_err(&err, "", EVAL_FMT, EVAL_ARGS(db, "q8_0"));
    QP_CHECK_MSG(rc == 0, "making the study failed (%d): %s", rc, err);
    free(err);
    return db;
}

// Opens an existing database (create: or makes a new one).
static sqlite3 *db_open(const char *path, int create) {
    sqlite3 *db = NULL;
    int flags = SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0);
    QP_CHECK_MSG(sqlite3_open_v2(path, &db, flags, NULL) == SQLITE_OK, "cannot open '%s'", path);
    return db;
}

static int64_t db_int(sqlite3 *db, const char *sql) {
    sqlite3_stmt *s = NULL;
    QP_CHECK_MSG(sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK, "%s: %s", sql, sqlite3_errmsg(db));
    QP_CHECK_MSG(sqlite3_step(s) == SQLITE_ROW, "%s: no row", sql);
    int64_t v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return v;
}

static void db_exec(sqlite3 *db, const char *sql) {
    QP_CHECK_MSG(sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK, "%s: %s", sql, sqlite3_errmsg(db));
}

// After a refused write: the database passes integrity_check and holds exactly the reference
// and q8_0, nothing of the variant that failed (not its row, not a metric of it).
static void expect_study_intact(const char *path) {
    sqlite3 *db = db_open(path, 0);
    sqlite3_stmt *s = NULL;
    QP_CHECK(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &s, NULL) == SQLITE_OK);
    QP_CHECK(sqlite3_step(s) == SQLITE_ROW);
    QP_CHECK_MSG(strcmp((const char *)sqlite3_column_text(s, 0), "ok") == 0, "integrity_check: %s",
                 sqlite3_column_text(s, 0));
    sqlite3_finalize(s);
    QP_CHECK_INT_EQ(db_int(db, "SELECT count(*) FROM variant"), 2);
    QP_CHECK_INT_EQ(db_int(db, "SELECT count(*) FROM variant WHERE spec IN ('reference', 'q8_0')"), 2);
    QP_CHECK_INT_EQ(db_int(db, "SELECT count(*) FROM metric WHERE variant_id NOT IN (SELECT id FROM variant)"), 0);
    sqlite3_close(db);
}

// Runs cmd in a shell as the user nobody (the caller is root); returns its exit status and
// *out its stdout (malloc'd).
static int run_as_nobody(const char *cmd, char **out) {
    int fd[2];
    QP_CHECK(pipe(fd) == 0);
    pid_t pid = fork();
    QP_CHECK(pid >= 0);
    if (pid == 0) {
        dup2(fd[1], STDOUT_FILENO);
        close(fd[0]);
        close(fd[1]);
        if (setgroups(0, NULL) != 0 || setgid(NOBODY) != 0 || setuid(NOBODY) != 0) _exit(126);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    close(fd[1]);
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    QP_CHECK(buf != NULL);
    ssize_t got;
    while ((got = read(fd[0], buf + len, cap - len - 1)) > 0 || (got < 0 && errno == EINTR)) {
        if (got < 0) continue;
        len += (size_t)got;
        if (cap - len < 2) {
            buf = realloc(buf, cap *= 2);
            QP_CHECK(buf != NULL);
        }
    }
    buf[len] = 0;
    close(fd[0]);
    int st;
    QP_CHECK(waitpid(pid, &st, 0) == pid);
    *out = buf;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

// Gives others the right to traverse (not to list) every directory above path that lacks it,
// so that nobody can reach the scratch directory under the runner's private temporary root.
static void open_ancestors(const char *path) {
    char p[4096];
    snprintf(p, sizeof p, "%s", path);
    for (char *slash = strrchr(p, '/'); slash && slash != p; slash = strrchr(p, '/')) {
        *slash = 0;
        struct stat sb;
        if (stat(p, &sb) == 0 && !(sb.st_mode & S_IXOTH)) QP_CHECK(chmod(p, (sb.st_mode & 07777) | S_IXOTH) == 0);
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers: safetensors

// A safetensors directory holding the fixture model (written by the library), under dir_name.
static const char *safetensors_dir(const char *dir_name) {
    char err[QP_ERRLEN];
    struct hx_model *m = NULL;
    QP_CHECK_MSG(hx_model_open(qpt_fixture(STORIES), NULL, &m, err) == 0, "%s", err);
    const char *dir = scratch_path(dir_name);
    QP_CHECK(mkdir(dir, 0755) == 0);
    QP_CHECK_MSG(hx_safetensors_write(&m->w, dir, KN_F32, err) == 0, "%s", err);
    hx_model_close(m);
    return dir;
}

// File offset of tensor name's data in a safetensors file's bytes b.
static size_t st_tensor_data(const char *b, const char *name) {
    uint64_t hlen = get_u64(b, 0);
    char key[256];
    snprintf(key, sizeof key, "\"%s\"", name);
    const char *k = strstr(b + 8, key);
    QP_CHECK_MSG(k && (uint64_t)(k - b) < 8 + hlen, "no tensor '%s'", name);
    const char *o = strstr(k, "\"data_offsets\"");
    QP_CHECK(o != NULL);
    o = strchr(o, '[');
    QP_CHECK(o != NULL);
    return 8 + (size_t)hlen + (size_t)strtoull(o + 1, NULL, 10);
}

// ---------------------------------------------------------------------------------------------
// llama2.c checkpoints

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

QP_TEST(llama2c_absurd_seq_len_should_be_rejected_before_allocating) {
    size_t len;
    char *b = fixture_bytes(STORIES, &len);
    put_i32(b, 24, 2000000000); // seq_len: a KV cache of terabytes if believed
    expect_rejected(scratch("seq.bin", b, len), "seq_len 2000000000 out of range");
    free(b);
}

QP_TEST(llama2c_negative_dimensions_should_be_rejected) {
    size_t len;
    char *b = fixture_bytes(STORIES, &len);
    put_i32(b, 0, -64); // dim
    expect_rejected(scratch("negdim.bin", b, len), "dim -64 out of range");
    put_i32(b, 0, 64);
    put_i32(b, 4, -172); // hidden_dim
    expect_rejected(scratch("neghid.bin", b, len), "hidden_dim -172 out of range");
    free(b);
}

QP_TEST(llama2c_infinite_weight_should_be_rejected_with_its_offset) {
    size_t len;
    char *b = fixture_bytes(STORIES, &len);
    put_u32(b, 28 + 4 * 123456, 0xff800000u); // -inf, in the ffn_gate weights
    expect_rejected(scratch("inf.bin", b, len), "weight 123456 (byte offset 493852) is infinite");
    free(b);
}

QP_TEST(text_file_passed_as_model_should_be_rejected) {
    const char *t = "This is not a model, only some words in a file.\n";
    expect_rejected(scratch("words.bin", t, strlen(t)), "not a llama2.c checkpoint");
}

QP_TEST(missing_model_file_should_be_rejected) {
    expect_rejected(scratch_path("nope.bin"), "No such file");
}

// ---------------------------------------------------------------------------------------------
// tokenizer.bin

QP_TEST(truncated_tokenizer_should_be_rejected) {
    size_t len;
    char *b = fixture_bytes(TOK512, &len);
    expect_tok_rejected(scratch("tok_cut.bin", b, len - 3), "token 511 (length");
    expect_tok_rejected(scratch("tok_half.bin", b, len / 2), "file too short for 512 tokens");
    expect_tok_rejected(scratch("tok_tiny.bin", b, 3), "too short for a tokenizer header");
    free(b);
}

QP_TEST(tokenizer_with_absurd_max_token_length_should_be_rejected) {
    size_t len;
    char *b = fixture_bytes(TOK512, &len);
    put_i32(b, 0, INT32_MAX); // llama2.c's run.c would malloc(2 * max_token_length + 3)
    expect_tok_rejected(scratch("tok_maxlen.bin", b, len), "max_token_length 2147483647 is longer than the file");
    put_i32(b, 0, -7);
    expect_tok_rejected(scratch("tok_neglen.bin", b, len), "negative max_token_length -7");
    free(b);
}

QP_TEST(tokenizer_of_another_vocabulary_size_should_be_rejected) {
    // Llama 2's 32000 tokens with the 512-token model: the first 512 records would load, as
    // the wrong strings.
    const char *big = qpt_fixture("models/llama2c/tokenizer.bin");
    expect_tok_rejected(big, "more than the model's 512 tokens");
}

// ---------------------------------------------------------------------------------------------
// GGUF

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

QP_TEST(gguf_tensor_dims_whose_product_overflows_int64_should_be_rejected) {
    size_t len;
    uint8_t *b = fixture_bytes(GGUF, &len);
    size_t at = gg_tensor(b, "token_embd.weight", NULL) + 8 + strlen("token_embd.weight");
    QP_CHECK_INT_EQ(get_u32(b, at), 2);
    put_u64(b, at + 4, 1ull << 40); // 2^40 x 2^40 elements
    put_u64(b, at + 12, 1ull << 40);
    expect_rejected(scratch("dims.gguf", b, len), "element count overflows int64");
    free(b);
}

QP_TEST(gguf_with_absurd_tensor_count_should_be_rejected_before_allocating) {
    size_t len;
    uint8_t *b = fixture_bytes(GGUF, &len);
    put_u64(b, 8, 1ull << 60);
    expect_rejected(scratch("ntensors.gguf", b, len), "tensor count 1152921504606846976 is more than the file can hold");
    free(b);
}

QP_TEST(gguf_with_absurd_key_value_count_should_be_rejected_before_allocating) {
    size_t len;
    uint8_t *b = fixture_bytes(GGUF, &len);
    put_u64(b, 16, UINT64_MAX);
    expect_rejected(scratch("nkv.gguf", b, len), "key/value count 18446744073709551615 is more than the file can hold");
    free(b);
}

QP_TEST(gguf_string_length_past_end_of_file_should_be_rejected) {
    size_t len;
    uint8_t *b = fixture_bytes(GGUF, &len);
    size_t at = gg_key(b, "general.architecture");
    put_u64(b, gg_value(b, "general.architecture"), 1ull << 40); // its value: u64 length + bytes
    char want[160];
    snprintf(want, sizeof want, "string of 1099511627776 bytes at offset %zu extends past end of file",
             at + 8 + strlen("general.architecture") + 4);
    expect_rejected(scratch("strlen.gguf", b, len), want);
    free(b);
}

QP_TEST(gguf_with_absurd_vocabulary_array_length_should_be_rejected) {
    size_t len;
    uint8_t *b = fixture_bytes(GGUF, &len);
    size_t v = gg_value(b, "tokenizer.ggml.tokens"); // array: element type u32, count u64
    QP_CHECK_INT_EQ(get_u32(b, v), 8);
    QP_CHECK_INT_EQ(get_u64(b, v + 4), 512);
    put_u64(b, v + 4, 1ull << 59);
    expect_rejected(scratch("vocab.gguf", b, len), "array of 576460752303423488 elements");
    free(b);
}

QP_TEST(gguf_with_absurd_context_length_should_be_rejected) {
    size_t len;
    uint8_t *b = fixture_bytes(GGUF, &len);
    put_u32(b, gg_value(b, "llama.context_length"), 2000000000u);
    expect_rejected(scratch("ctx.gguf", b, len), "seq_len 2000000000 out of range");
    put_u32(b, gg_value(b, "llama.context_length"), 0xffffffffu); // above INT_MAX
    expect_rejected(scratch("ctx2.gguf", b, len), "llama.context_length = 4294967295 is out of range");
    free(b);
}

QP_TEST(gguf_alignment_not_a_power_of_two_should_be_rejected) {
    size_t len;
    uint8_t *b = fixture_bytes(GGUF, &len);
    // The fixture has no general.alignment: rename llama.block_count (same length, uint32) to it.
    size_t at = gg_key(b, "llama.block_count");
    QP_CHECK(strlen("llama.block_count") == strlen("general.alignment"));
    memcpy(b + at + 8, "general.alignment", strlen("general.alignment"));
    put_u32(b, gg_value(b, "general.alignment"), 48);
    expect_rejected(scratch("align.gguf", b, len), "general.alignment 48 is not a power of two");
    free(b);
}

QP_TEST(gguf_tensor_not_aligned_to_its_element_size_should_be_rejected) {
    // general.alignment 1 (a power of two, so accepted) lets a tensor start anywhere: the first
    // F32 tensor moved 2 bytes on would be read as floats at a misaligned address.
    size_t len;
    uint8_t *b = fixture_bytes(GGUF, &len);
    size_t at = gg_key(b, "llama.block_count");
    memcpy(b + at + 8, "general.alignment", strlen("general.alignment"));
    put_u32(b, gg_value(b, "general.alignment"), 1);
    size_t off_at = gg_tensor_offset_at(b, "token_embd.weight");
    put_u64(b, off_at, get_u64(b, off_at) + 2);
    expect_rejected(scratch("misaligned.gguf", b, len),
                    "tensor 'token_embd.weight' starts at file offset 14154, not aligned to the 4 bytes of its f32 "
                    "elements (general.alignment 1)");
    free(b);
}

QP_TEST(gguf_tensor_offset_off_the_alignment_should_be_rejected) {
    size_t len;
    uint8_t *b = fixture_bytes(GGUF, &len);
    size_t off_at = gg_tensor_offset_at(b, "token_embd.weight");
    put_u64(b, off_at, get_u64(b, off_at) + 4);
    expect_rejected(scratch("offset.gguf", b, len),
                    "tensor 'token_embd.weight' has offset 4, not a multiple of the alignment 32");
    free(b);
}

QP_TEST(gguf_duplicate_tensor_name_should_be_rejected) {
    size_t len;
    uint8_t *b = fixture_bytes(GGUF, &len);
    size_t at = gg_tensor(b, "blk.0.attn_k.weight", NULL);
    memcpy(b + at + 8, "blk.0.attn_q.weight", strlen("blk.0.attn_q.weight"));
    expect_rejected(scratch("dup.gguf", b, len), "duplicate tensor name 'blk.0.attn_q.weight'");
    free(b);
}

QP_TEST(gguf_f32_nan_weight_should_be_rejected_naming_tensor_row_and_column) {
    size_t len, data;
    uint8_t *b = fixture_bytes(GGUF, &len);
    gg_tensor(b, "blk.2.ffn_up.weight", &data); // rows of 64 floats
    put_u32(b, data + 4 * (10 * 64 + 33), 0x7fc00000u);
    expect_rejected(scratch("nan.gguf", b, len), "tensor blk.2.ffn_up.weight has a NaN at row 10, column 33");
    free(b);
}

QP_TEST(gguf_f16_infinite_weight_should_be_rejected_naming_tensor_row_and_column) {
    size_t len, data;
    uint8_t *b = fixture_bytes(GGUF_F16, &len);
    gg_tensor(b, "blk.3.attn_v.weight", &data); // rows of 64 halves
    uint16_t inf = 0x7c00;
    memcpy(b + data + 2 * (31 * 64 + 0), &inf, 2);
    expect_rejected(scratch("inf16.gguf", b, len), "tensor blk.3.attn_v.weight has an infinite value at row 31, column 0");
    free(b);
}

QP_TEST(gguf_q4_0_block_with_nan_scale_should_be_rejected) {
    size_t len, data;
    uint8_t *b = fixture_bytes(GGUF_Q4_0, &len);
    gg_tensor(b, "blk.1.attn_q.weight", &data); // rows of 2 blocks of 18 bytes (fp16 d, 16 nibble bytes)
    uint16_t nan = 0x7e00;
    memcpy(b + data + 18 * (5 * 2 + 1), &nan, 2); // row 5, second block
    expect_rejected(scratch("nanq.gguf", b, len), "tensor blk.1.attn_q.weight has a NaN at row 5, column 32");
    free(b);
}

QP_TEST(gguf_vocabulary_only_file_should_be_rejected_as_having_no_weights) {
    const char *v = qpt_fixture("models/gguf/ggml-vocab-llama-spm.gguf");
    char *err;
    int rc = qprobe_err(&err, "", "inspect -m '%s'", v);
    expect_error(rc, err, v, "tensor 'token_embd.weight' is missing");
}

// ---------------------------------------------------------------------------------------------
// safetensors

QP_TEST(safetensors_infinite_weight_should_be_rejected_naming_tensor_row_and_column) {
    const char *dir = safetensors_dir("st_inf");
    char file[4200];
    snprintf(file, sizeof file, "%s/model.safetensors", dir);
    size_t len;
    char *b = qpt_read_file(file, &len);
    QP_CHECK(b != NULL);
    size_t at = st_tensor_data(b, "model.layers.4.mlp.up_proj.weight"); // (172, 64), not permuted
    put_u32(b, at + 4 * (171 * 64 + 63), 0x7f800000u);
    scratch("st_inf/model.safetensors", b, len);
    expect_rejected(dir, "tensor blk.4.ffn_up.weight has an infinite value at row 171, column 63");
    free(b);
}

QP_TEST(safetensors_header_length_past_end_of_file_should_be_rejected) {
    const char *dir = safetensors_dir("st_hlen");
    char file[4200];
    snprintf(file, sizeof file, "%s/model.safetensors", dir);
    size_t len;
    char *b = qpt_read_file(file, &len);
    QP_CHECK(b != NULL);
    put_u64(b, 0, (uint64_t)len);
    scratch("st_hlen/model.safetensors", b, len);
    char want[128];
    snprintf(want, sizeof want, "header length %zu extends past end of file", len);
    expect_ppl_rejected(dir, qpt_fixture(TOK512), file, want);
    free(b);
}

QP_TEST(safetensors_header_that_is_not_json_should_be_rejected) {
    const char *dir = safetensors_dir("st_json");
    char file[4200];
    snprintf(file, sizeof file, "%s/model.safetensors", dir);
    size_t len;
    char *b = qpt_read_file(file, &len);
    QP_CHECK(b != NULL && b[8] == '{');
    char *colon = memchr(b + 8, ':', (size_t)get_u64(b, 0));
    QP_CHECK(colon != NULL);
    *colon = ';'; // {"name";{...}
    scratch("st_json/model.safetensors", b, len);
    expect_ppl_rejected(dir, qpt_fixture(TOK512), file, "header is not valid JSON");
    free(b);
}

// A safetensors directory of the fixture whose config.json has edit applied: the text from is
// replaced by to (which must occur).
static const char *safetensors_config_edited(const char *dir_name, const char *from, const char *to, char *cfg,
                                             size_t cap) {
    const char *dir = safetensors_dir(dir_name);
    snprintf(cfg, cap, "%s/config.json", dir);
    char *text = qpt_read_file(cfg, NULL);
    QP_CHECK(text != NULL);
    char *at = strstr(text, from);
    QP_CHECK_MSG(at != NULL, "no '%s' in the written config.json: %s", from, text);
    FILE *f = fopen(cfg, "w");
    QP_CHECK(f != NULL);
    fprintf(f, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
    QP_CHECK(fclose(f) == 0);
    free(text);
    return dir;
}

QP_TEST(safetensors_config_with_a_fractional_size_should_be_rejected) {
    char cfg[4200];
    const char *dir = safetensors_config_edited("st_frac", "\"hidden_size\":\t64", "\"hidden_size\":\t64.5", cfg, sizeof cfg);
    expect_ppl_rejected(dir, qpt_fixture(TOK512), cfg, "key 'hidden_size' is not a non-negative integer");
}

QP_TEST(safetensors_config_cut_short_should_be_rejected) {
    char cfg[4200];
    const char *dir = safetensors_config_edited("st_cut", "\"hidden_size\":\t64", "\"hidden_size\":\t64}", cfg, sizeof cfg);
    // Cut the file right after that brace's key: the object no longer closes.
    char *text = qpt_read_file(cfg, NULL);
    QP_CHECK(text != NULL);
    char *brace = strstr(text, "64}");
    QP_CHECK(brace != NULL);
    FILE *f = fopen(cfg, "w");
    QP_CHECK(f && fwrite(text, 1, (size_t)(brace - text) + 2, f) == (size_t)(brace - text) + 2 && fclose(f) == 0);
    free(text);
    expect_ppl_rejected(dir, qpt_fixture(TOK512), cfg, "JSON");
}

QP_TEST(safetensors_directory_without_config_json_should_be_rejected) {
    const char *dir = safetensors_dir("st_nocfg");
    char cfg[4200];
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    QP_CHECK(unlink(cfg) == 0);
    expect_ppl_rejected(dir, qpt_fixture(TOK512), cfg, "No such file or directory");
}

// ---------------------------------------------------------------------------------------------
// tokenizer.json and GGUF BPE vocabularies (refused by `ppl -z` and `tokenize -z`)

QP_TEST(tokenizer_json_cut_short_should_be_rejected) {
    size_t len;
    char *t = qpt_read_fixture("models/tokenizers/llama3/tokenizer.json", &len);
    expect_tok_rejected(scratch("cut.json", t, len / 2), "the JSON ends early (truncated?)");
    free(t);
}

// The gpt-2 vocabulary GGUF with the bytes at the first occurrence of from replaced by to (same
// length); refused by `qprobe tokenize` (its 50257 tokens do not fit the fixture model).
static void expect_bpe_vocab_rejected(const char *name, const void *from, const void *to, size_t n, const char *want) {
    size_t len;
    uint8_t *b = fixture_bytes("models/gguf/ggml-vocab-gpt-2.gguf", &len);
    uint8_t *at = memmem(b, len, from, n);
    QP_CHECK_MSG(at != NULL, "%s: pattern not in the fixture", name);
    memcpy(at, to, n);
    const char *path = scratch(name, b, len);
    free(b);
    char *err;
    int rc = qprobe_err(&err, "", "tokenize -z '%s' --text '%s'", path, scratch("t.txt", "Hello world", 11));
    expect_error(rc, err, path, want);
}

QP_TEST(gguf_bpe_merge_without_a_space_should_be_rejected_naming_it) {
    expect_bpe_vocab_rejected("merge.gguf", "\xc4\xa0 t", "\xc4\xa0_t", 4,
                              "merge 0 '\xc4\xa0_t' is not two tokens separated by a space");
}

QP_TEST(gguf_bpe_eos_id_outside_the_vocabulary_should_be_rejected) {
    // tokenizer.ggml.eos_token_id (uint32 50256) made 0x00ffc450
    expect_bpe_vocab_rejected("eos.gguf", "eos_token_id\x04\x00\x00\x00\x50\xc4\x00\x00",
                              "eos_token_id\x04\x00\x00\x00\x50\xc4\xff\x00", 20,
                              "token id 16761936 is outside the vocabulary of 50257");
}

// ---------------------------------------------------------------------------------------------
// Texts

QP_TEST(empty_text_should_be_rejected) {
    expect_text_rejected(scratch("empty.txt", "", 0), "the text is empty");
}

QP_TEST(text_shorter_than_one_window_should_be_rejected) {
    expect_text_rejected(scratch("short.txt", "Once upon a time.", 17), "fewer than one window");
}

QP_TEST(text_that_is_not_utf8_should_be_rejected_with_the_byte_offset) {
    // Latin-1 "café" inside otherwise plain text: 0xe9 followed by a space is no UTF-8 sequence.
    const char t[] = "Once upon a time in a caf\xe9 there was a cat.";
    expect_text_rejected(scratch("latin1.txt", t, sizeof t - 1), "not valid UTF-8 at byte 25");
}

QP_TEST(text_that_is_a_directory_should_be_rejected) {
    const char *d = scratch_path("a_directory.txt");
    QP_CHECK(mkdir(d, 0755) == 0);
    expect_text_rejected(d, "Is a directory");
}

QP_TEST(text_with_nul_bytes_should_be_rejected) {
    const char t[] = "Once upon a time\0there was a cat.";
    expect_text_rejected(scratch("nul.txt", t, sizeof t - 1), "contains NUL bytes");
}

// ---------------------------------------------------------------------------------------------
// Specs and options

QP_TEST(unknown_spec_should_be_rejected_listing_the_valid_forms) {
    char *err;
    int rc = qprobe_err(&err, "", "ppl -m '%s' -z '%s' --text '%s' -q q5_x", qpt_fixture(STORIES),
                        qpt_fixture(TOK512), qpt_text_prefix(1500));
    QP_CHECK_MSG(strstr(err, "valid forms:") && strstr(err, "q8_0") && strstr(err, "rtn:bits="), "%s", err);
    expect_error(rc, err, "'q5_x'", "bad spec");
}

QP_TEST(group_larger_than_the_row_should_be_rejected_naming_the_tensor) {
    char *err;
    const char *m = qpt_fixture(STORIES);
    int rc = qprobe_err(&err, "", "ppl -m '%s' -z '%s' --text '%s' -q rtn:bits=4:group=128:sym", m,
                        qpt_fixture(TOK512), qpt_text_prefix(1500));
    expect_error(rc, err, m, "group of 128 is larger than the rows of token_embd.weight (64 values)");
}

QP_TEST(zero_context_should_be_refused) {
    expect_ppl_opts_rejected("--ctx 0", "--ctx '0'", "expected an integer in 4..");
}

QP_TEST(zero_threads_should_be_refused) {
    expect_ppl_opts_rejected("-t 0", "-t '0'", "expected an integer in 1..256");
}

QP_TEST(negative_chunk_count_should_be_refused) {
    expect_ppl_opts_rejected("--chunks -1", "--chunks '-1'", "expected an integer in 1..");
}

QP_TEST(unknown_options_and_commands_should_exit_2) {
    char *err;
    int rc = qprobe_err(&err, "", "ppl --bogus");
    expect_error(rc, err, "--bogus", "unknown");
    rc = qprobe_err(&err, "", "frobnicate");
    QP_CHECK_INT_EQ(rc, 2);
    QP_CHECK_MSG(strstr(err, "frobnicate") != NULL, "%s", err);
    free(err);
}

QP_TEST(help_should_be_available_on_every_command) {
    const char *cmds[] = {"generate", "ppl",   "eval",  "sweep", "convert", "inspect",
                          "merge",    "report", "gate", "tasks", "synth",   "gemm-peak"};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        char cmd[8192], *out = NULL;
        snprintf(cmd, sizeof cmd, "'%s' %s --help", qpt_qprobe(), cmds[i]);
        QP_CHECK_INT_EQ(qpt_run(cmd, &out), 0);
        QP_CHECK_MSG(strstr(out, "usage: qprobe") != NULL, "%s: %s", cmds[i], out);
        free(out);
    }
}

QP_TEST(gemm_peak_should_reject_bad_arguments_with_exit_2) {
    char *err;
    int rc = qprobe_err(&err, "", "gemm-peak -t 0");
    expect_error(rc, err, "--threads", "1..1024");
    rc = qprobe_err(&err, "", "gemm-peak --bogus");
    expect_error(rc, err, "--bogus", "unknown");
    rc = qprobe_err(&err, "", "gemm-peak extra");
    expect_error(rc, err, "extra", "unexpected argument");
}

QP_TEST(eval_against_a_model_of_another_shape_should_be_rejected_naming_it) {
    const char *other = qpt_fixture("models/llama2c/aidreams260K.bin"); // 4 layers, 4 heads
    const char *db = scratch_path("shape.sqlite");
    char *err;
    int rc = qprobe_err(&err, "",
                        "eval -m '%s' -z '%s' --text '%s' --db '%s' --vs '%s' --ctx 128 --chunks 1 --act-chunks 1 -t 1",
                        qpt_fixture(STORIES), qpt_fixture(TOK512), qpt_text_prefix(1500), db, other);
    expect_error(rc, err, other, "the variant's shape differs");
    sqlite3 *s = db_open(db, 0);
    QP_CHECK_INT_EQ(db_int(s, "SELECT count(*) FROM variant WHERE is_reference = 0"), 0);
    sqlite3_close(s);
}

QP_TEST(convert_into_a_missing_directory_should_be_rejected) {
    const char *out = scratch_path("no/such/dir/out.gguf");
    char *err;
    int rc = qprobe_err(&err, "", "convert -m '%s' -z '%s' -o '%s'", qpt_fixture(STORIES), qpt_fixture(TOK512), out);
    expect_error(rc, err, out, "No such file or directory");
}

QP_TEST(qat_spec_with_zero_steps_should_be_rejected_naming_the_field) {
    expect_ppl_opts_rejected("-q qat:q4_0:steps=0", "qat:q4_0:steps=0", "'steps=0': steps must be an integer 1..100000000");
}

QP_TEST(qat_spec_without_calibration_text_should_be_rejected) {
    expect_ppl_opts_rejected("-q qat:q4_0", "qat:q4_0", "needs calibration data: add --calib FILE");
}

QP_TEST(sweep_grid_with_a_bad_activation_should_be_rejected_with_its_json_path) {
    char json[8192];
    snprintf(json, sizeof json,
             "{\"model\": \"%s\", \"tokenizer\": \"%s\", \"eval\": {\"text\": \"%s\", \"ctx\": 128},\n"
             " \"variants\": [\"q8_0\"], \"grid\": [{\"method\": \"ggml\", \"types\": [\"q4_0\"], \"act\": [\"f32\", \"int4\"]}]}\n",
             qpt_fixture(STORIES), qpt_fixture(TOK512), qpt_text_prefix(1500));
    const char *cfg = scratch("grid.json", json, strlen(json));
    char *err;
    int rc = qprobe_err(&err, "", "sweep -c '%s' --db '%s'", cfg, scratch_path("grid.sqlite"));
    expect_error(rc, err, cfg, "grid[0].act");
    QP_CHECK(access(scratch_path("grid.sqlite"), F_OK) != 0);
}

QP_TEST(task_dataset_with_a_broken_record_should_be_rejected_naming_file_and_line) {
    // A fixtures directory whose ARC-Easy test file has a record without its answer key.
    char dir[4096], path[4200];
    snprintf(dir, sizeof dir, "%s", scratch_path("fx"));
    snprintf(path, sizeof path, "%s/data", dir);
    QP_CHECK(mkdir(dir, 0755) == 0 && mkdir(path, 0755) == 0);
    snprintf(path, sizeof path, "%s/data/arc_easy", dir);
    QP_CHECK(mkdir(path, 0755) == 0);
    static const char arc[] =
        "{\"id\":\"a\",\"question\":{\"stem\":\"Which is a fruit?\",\"choices\":[{\"text\":\"apple\",\"label\":\"A\"},"
        "{\"text\":\"rock\",\"label\":\"B\"}]},\"answerKey\":\"A\"}\n"
        "{\"id\":\"b\",\"question\":{\"stem\":\"Which is blue?\",\"choices\":[{\"text\":\"sky\",\"label\":\"A\"},"
        "{\"text\":\"grass\",\"label\":\"B\"}]}}\n";
    snprintf(path, sizeof path, "%s/data/arc_easy/ARC-Easy-Test.jsonl", dir);
    FILE *f = fopen(path, "w");
    QP_CHECK(f && fputs(arc, f) >= 0 && fclose(f) == 0);
    char *err;
    int rc = qprobe_err(&err, "", "tasks -m '%s' -z '%s' --suite arc-easy --fixtures '%s'", qpt_fixture(STORIES),
                        qpt_fixture(TOK512), dir);
    expect_error(rc, err, "ARC-Easy-Test.jsonl:2:", "answerKey");
}

// ---------------------------------------------------------------------------------------------
// Study databases

QP_TEST(study_database_that_is_a_directory_should_be_refused) {
    const char *dir = scratch_path("a_directory.sqlite");
    QP_CHECK(mkdir(dir, 0755) == 0);
    char *err;
    int rc = qprobe_err(&err, "", EVAL_FMT, EVAL_ARGS(dir, "q4_0"));
    expect_error(rc, err, dir, "Is a directory");
}

QP_TEST(merge_of_a_file_that_is_not_a_database_should_be_rejected) {
    const char *junk = scratch("junk.sqlite", "this is not SQLite, only text pretending\n", 41);
    const char *out = scratch_path("merged.sqlite");
    char *err;
    int rc = qprobe_err(&err, "", "merge '%s' '%s'", out, junk);
    expect_error(rc, err, junk, "file is not a database");
    QP_CHECK_MSG(access(out, F_OK) != 0, "a failed merge left '%s'", out);
}

// Runs cmd (stderr to its stdout) with the directory dir read-only for it: as nobody with dir
// 0755 (root's) when the tests run as root — permission bits do not bind root —, else with dir
// made 0555 for the run. As root, probe (a shell test) must first pass for nobody, or the case
// is skipped: nobody must reach the database, the fixtures and the binary.
static int run_with_dir_read_only(const char *cmd, const char *dir, const char *probe, char **err) {
    int rc;
    if (geteuid() == 0) {
        QP_CHECK(chmod(dir, 0755) == 0);
        open_ancestors(dir);
        char *out = NULL;
        int reach = run_as_nobody(probe, &out);
        free(out);
        if (reach != 0) QP_SKIP("user nobody cannot reach the database, the fixtures or QP_BIN");
        rc = run_as_nobody(cmd, err);
    } else {
        QP_CHECK(chmod(dir, 0555) == 0);
        rc = qpt_run(cmd, err);
        QP_CHECK(chmod(dir, 0700) == 0);
    }
    QP_CHECK(*err != NULL);
    return rc;
}

QP_TEST(read_only_study_database_should_be_refused_and_left_unchanged) {
    const char *db = study_db("ro.sqlite");
    const char *text = qpt_text_prefix(1500);
    QP_CHECK(chmod(db, 0444) == 0 && chmod(text, 0644) == 0);
    char cmd[16384], probe[16384], *err = NULL;
    snprintf(cmd, sizeof cmd, "'%s' " EVAL_FMT " 2>&1 >/dev/null", qpt_qprobe(), EVAL_ARGS(db, "q4_0"));
    snprintf(probe, sizeof probe, "test -r '%s' && test -r '%s' && test -r '%s' && test -x '%s'", db, text,
             qpt_fixture(STORIES), qpt_qprobe());
    int rc = run_with_dir_read_only(cmd, qpt_tmpdir(), probe, &err);
    QP_CHECK(chmod(db, 0644) == 0);
    expect_error(rc, err, db, "the study database is read-only (Permission denied)");
    expect_study_intact(db);
}

QP_TEST(read_only_directory_should_be_refused_before_the_model_is_opened) {
    const char *db = study_db("rodir.sqlite");
    QP_CHECK(chmod(db, 0666) == 0); // the file writable: only the directory is read-only
    // The model and text do not exist: an error about the database shows it was refused first,
    // before any model was loaded or reference evaluated.
    char cmd[16384], probe[8192], *err = NULL;
    snprintf(cmd, sizeof cmd, "'%s' eval -m /nonexistent/model.bin --text /nonexistent/text.txt --db '%s' -q q4_0 2>&1 >/dev/null",
             qpt_qprobe(), db);
    snprintf(probe, sizeof probe, "test -w '%s' && test -x '%s'", db, qpt_qprobe());
    int rc = run_with_dir_read_only(cmd, qpt_tmpdir(), probe, &err);
    QP_CHECK(chmod(db, 0644) == 0);
    expect_error(rc, err, db, "is read-only (Permission denied); SQLite keeps the study's journal (-wal, -shm) beside it");
    expect_study_intact(db);
}

QP_TEST(study_database_locked_by_another_writer_should_be_refused_quickly) {
    const char *db = study_db("locked.sqlite");
    sqlite3 *other = db_open(db, 0);
    db_exec(other, "BEGIN IMMEDIATE"); // holds the write lock for the whole run
    char *err;
    int rc = qprobe_err(&err, "QPROBE_DB_TIMEOUT_MS=200 ", EVAL_FMT, EVAL_ARGS(db, "q4_0"));
    db_exec(other, "ROLLBACK");
    sqlite3_close(other);
    expect_error(rc, err, db, "database is locked");
    expect_study_intact(db);
}

QP_TEST(study_database_of_a_newer_schema_should_be_refused_and_left_unchanged) {
    const char *db = scratch_path("future.sqlite");
    sqlite3 *s = db_open(db, 1);
    db_exec(s, "PRAGMA application_id = 1903194722; PRAGMA user_version = 99;"
               " CREATE TABLE variant_v99 (id INTEGER PRIMARY KEY)");
    sqlite3_close(s);
    char *err;
    int rc = qprobe_err(&err, "", EVAL_FMT, EVAL_ARGS(db, "q4_0"));
    expect_error(rc, err, db, "schema version 99 is newer than this qprobe's");
    s = db_open(db, 0);
    QP_CHECK_INT_EQ(db_int(s, "PRAGMA user_version"), 99);
    QP_CHECK_INT_EQ(db_int(s, "PRAGMA application_id"), STUDY_APP_ID);
    QP_CHECK_INT_EQ(db_int(s, "SELECT count(*) FROM sqlite_master"), 1); // no qprobe table added
    sqlite3_close(s);
}

QP_TEST(foreign_sqlite_database_should_be_refused_and_left_unchanged) {
    const char *db = scratch_path("someone_elses.sqlite");
    sqlite3 *s = db_open(db, 1);
    db_exec(s, "CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('keep me')");
    sqlite3_close(s);
    char *err;
    int rc = qprobe_err(&err, "", EVAL_FMT, EVAL_ARGS(db, "q4_0"));
    expect_error(rc, err, db, "a SQLite database, but not a qprobe study");
    s = db_open(db, 0);
    QP_CHECK_INT_EQ(db_int(s, "SELECT count(*) FROM sqlite_master"), 1);
    QP_CHECK_INT_EQ(db_int(s, "SELECT count(*) FROM notes WHERE body = 'keep me'"), 1);
    QP_CHECK_INT_EQ(db_int(s, "PRAGMA user_version"), 0);
    sqlite3_close(s);
}

QP_TEST(disk_full_while_storing_a_variant_should_fail_cleanly_and_store_nothing_of_it) {
    const char *db = study_db("full.sqlite");
    char *err, prefix[64];
    // qprobe ignores SIGXFSZ, so the write beyond the limit fails with EFBIG and SQLite reports
    // an I/O error (it does not keep the errno); the variant's transaction is rolled back.
    snprintf(prefix, sizeof prefix, "ulimit -f %d; ", FSIZE_BLOCKS);
    int rc = qprobe_err(&err, prefix, EVAL_FMT, EVAL_ARGS(db, "q4_0"));
    QP_CHECK_MSG(strstr(err, "cannot write '") != NULL, "not a failed write: %s", err);
    expect_failure(rc, 3, err, db, "': disk I/O error"); // a runtime I/O failure: exit 3 (was 2)
    expect_study_intact(db);
}
