// test_store.c — the SQLite study store: schema creation and versioning, refusal of foreign and
// newer databases, run identity, transactions that leave nothing half-written; SHA-256 vectors.
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include "qp.h"
#include "qp_test.h"
#include "qp_sha256.h"
#include "hx_store.h"
#include "hx_store_schema.sql.h"

static const char *db_path(const char *name) {
    static char buf[512];
    snprintf(buf, sizeof buf, "%s/%s", qpt_tmpdir(), name);
    return buf;
}

static struct hx_run_info sample_run(void) {
    struct hx_run_info ri = {0};
    ri.model_path = "m.bin";
    ri.model_sha256 = "aa";
    ri.text_sha256 = "bb";
    ri.protocol = "llamacpp";
    ri.ctx = 512;
    ri.dim = 64;
    ri.text_bytes = 5000000000LL; // beyond 32 bits: int64 binding
    return ri;
}

static int64_t count_rows(sqlite3 *db, const char *sql) {
    sqlite3_stmt *s;
    QP_CHECK(sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK);
    QP_CHECK(sqlite3_step(s) == SQLITE_ROW);
    int64_t n = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return n;
}

QP_TEST(sha256_should_match_fips_vectors) {
    char hex[65];
    qp_sha256_hex("", 0, hex);
    QP_CHECK_STR_EQ(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    qp_sha256_hex("abc", 3, hex);
    QP_CHECK_STR_EQ(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    qp_sha256_hex(m, strlen(m), hex);
    QP_CHECK_STR_EQ(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    // One million 'a', fed in uneven pieces through the streaming interface.
    struct qp_sha256 s;
    qp_sha256_init(&s);
    char a[1000];
    memset(a, 'a', sizeof a);
    size_t left = 1000000, step = 1;
    while (left) {
        size_t n = step < left ? step : left;
        if (n > sizeof a) n = sizeof a;
        qp_sha256_update(&s, a, n);
        left -= n;
        step = step % 997 + 13;
    }
    qp_sha256_final(&s, hex);
    QP_CHECK_STR_EQ(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

QP_TEST(sha256_file_should_equal_sha256sum) {
    const char *path = qpt_fixture("models/llama2c/tok512.bin");
    char hex[65], err[QP_ERRLEN], cmd[1024], *out = NULL;
    QP_CHECK_INT_EQ(qp_sha256_file(path, hex, err), 0);
    snprintf(cmd, sizeof cmd, "sha256sum '%s'", path);
    QP_CHECK_INT_EQ(qpt_run(cmd, &out), 0);
    QP_CHECK(strncmp(out, hex, 64) == 0);
    free(out);
    QP_CHECK(qp_sha256_file(db_path("missing"), hex, err) == QP_EIO);
    QP_CHECK(strstr(err, "missing") != NULL);
}

QP_TEST(store_should_create_schema_wal_and_version) {
    char err[QP_ERRLEN];
    struct hx_store *st;
    QP_CHECK_INT_EQ(hx_store_open(db_path("a.sqlite"), 0, &st, err), 0);
    sqlite3 *db = hx_store_db(st);
    QP_CHECK_INT_EQ(count_rows(db, "PRAGMA user_version"), HX_STORE_SCHEMA_VERSION);
    QP_CHECK_INT_EQ(count_rows(db, "SELECT count(*) FROM sqlite_master WHERE name IN ('run','variant',"
                                   "'metric','layer_error','sensitivity','weight_stat','act_stat',"
                                   "'grid_stat','histogram','task_item','token')"), 11);
    sqlite3_stmt *s;
    QP_CHECK(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &s, NULL) == SQLITE_OK);
    QP_CHECK(sqlite3_step(s) == SQLITE_ROW);
    QP_CHECK_STR_EQ((const char *)sqlite3_column_text(s, 0), "wal");
    sqlite3_finalize(s);
    hx_store_close(st);
    // Reopening an existing study neither fails nor migrates again.
    QP_CHECK_INT_EQ(hx_store_open(db_path("a.sqlite"), HX_STORE_READONLY, &st, err), 0);
    hx_store_close(st);
}

QP_TEST(version_1_study_should_migrate_to_the_current_version_keeping_its_rows_without_weight_digests) {
    char err[QP_ERRLEN];
    struct hx_store *st;
    sqlite3 *db;
    // A study as qprobe wrote it at schema version 1: migration 0 only, one run and one variant.
    QP_CHECK(sqlite3_open(db_path("v1.sqlite"), &db) == SQLITE_OK);
    QP_CHECK(sqlite3_exec(db, hx_store_migrations[0], NULL, NULL, NULL) == SQLITE_OK);
    QP_CHECK(sqlite3_exec(db, "PRAGMA user_version = 1; PRAGMA application_id = 1903194722;"
                              "INSERT INTO run (id, identity, created, model_path, model_sha256) VALUES (1, 'x', 't', 'm', 'h');"
                              "INSERT INTO variant (run_id, spec, ord, finished) VALUES (1, 'q8_0', 1, 't');",
                          NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);
    // Read-only, a version-1 study is refused with the way out in the message.
    QP_CHECK(hx_store_open(db_path("v1.sqlite"), HX_STORE_READONLY, &st, err) == QP_EFORMAT);
    QP_CHECK_MSG(strstr(err, "open it once for writing"), "%s", err);
    // Opened for writing it becomes the current version: the variant is kept, its digest NULL, and new rows
    // store one.
    QP_CHECK_INT_EQ(hx_store_open(db_path("v1.sqlite"), 0, &st, err), 0);
    db = hx_store_db(st);
    QP_CHECK_INT_EQ(count_rows(db, "PRAGMA user_version"), HX_STORE_SCHEMA_VERSION);
    QP_CHECK_INT_EQ(count_rows(db, "SELECT count(*) FROM variant WHERE spec = 'q8_0' AND weights_sha256 IS NULL"), 1);
    struct hx_variant_row v = {.spec = "q4_0", .ord = 2, .bits_per_weight = 4.5, .weights_sha256 = "abc"};
    int64_t vid;
    QP_CHECK_INT_EQ(hx_store_begin(st, err), 0);
    QP_CHECK_INT_EQ(hx_store_variant_insert(st, 1, &v, &vid, err), 0);
    QP_CHECK_INT_EQ(hx_store_commit(st, err), 0);
    QP_CHECK_INT_EQ(count_rows(db, "SELECT count(*) FROM variant WHERE weights_sha256 = 'abc'"), 1);
    hx_store_close(st);
}

// Version 4 records the model family with the run: a version-3 run keeps NULL, a new run stores
// the name; the family is not part of the run's identity (the model's hash already fixes it).
QP_TEST(version_3_study_should_migrate_to_the_current_version_and_new_runs_should_record_their_family) {
    char err[QP_ERRLEN];
    struct hx_store *st;
    sqlite3 *db;
    QP_CHECK(sqlite3_open(db_path("v3.sqlite"), &db) == SQLITE_OK);
    for (int i = 0; i < 3; i++) QP_CHECK(sqlite3_exec(db, hx_store_migrations[i], NULL, NULL, NULL) == SQLITE_OK);
    QP_CHECK(sqlite3_exec(db, "PRAGMA user_version = 3; PRAGMA application_id = 1903194722;"
                              "INSERT INTO run (id, identity, created, model_path, model_sha256) VALUES (1, 'x', 't', 'm', 'h');",
                          NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);
    QP_CHECK_INT_EQ(hx_store_open(db_path("v3.sqlite"), 0, &st, err), 0);
    db = hx_store_db(st);
    QP_CHECK_INT_EQ(count_rows(db, "PRAGMA user_version"), HX_STORE_SCHEMA_VERSION);
    QP_CHECK_INT_EQ(count_rows(db, "SELECT count(*) FROM run WHERE id = 1 AND arch IS NULL"), 1);
    struct hx_run_info ri = {.model_path = "q.gguf", .model_sha256 = "abcd", .arch = "qwen2", .protocol = "llama.cpp"};
    char id_qwen[65], id_none[65];
    hx_run_identity(&ri, id_qwen);
    int64_t run_id;
    int created;
    QP_CHECK_INT_EQ(hx_store_run_get(st, &ri, &run_id, &created, err), 0);
    QP_CHECK(created && run_id != 1);
    QP_CHECK_INT_EQ(count_rows(db, "SELECT count(*) FROM run WHERE arch = 'qwen2'"), 1);
    ri.arch = NULL;
    hx_run_identity(&ri, id_none);
    QP_CHECK_STR_EQ(id_qwen, id_none);
    hx_store_close(st);
}

QP_TEST(store_should_refuse_newer_schema_and_foreign_databases) {
    char err[QP_ERRLEN];
    struct hx_store *st;
    sqlite3 *db;
    QP_CHECK(sqlite3_open(db_path("newer.sqlite"), &db) == SQLITE_OK);
    QP_CHECK(sqlite3_exec(db, "PRAGMA application_id = 1903194722; PRAGMA user_version = 99;"
                              "CREATE TABLE x(a)", NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);
    QP_CHECK(hx_store_open(db_path("newer.sqlite"), 0, &st, err) == QP_ENOTSUP);
    QP_CHECK_MSG(strstr(err, "newer") && strstr(err, "newer.sqlite"), "%s", err);

    QP_CHECK(sqlite3_open(db_path("other.sqlite"), &db) == SQLITE_OK);
    QP_CHECK(sqlite3_exec(db, "CREATE TABLE x(a)", NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);
    QP_CHECK(hx_store_open(db_path("other.sqlite"), 0, &st, err) == QP_EFORMAT);
    QP_CHECK_MSG(strstr(err, "not a qprobe study"), "%s", err);

    FILE *f = fopen(db_path("text.sqlite"), "w");
    fputs("this is not a database at all, just some text that is long enough to be a header....\n", f);
    fclose(f);
    QP_CHECK(hx_store_open(db_path("text.sqlite"), 0, &st, err) < 0);
    QP_CHECK_MSG(strstr(err, "text.sqlite"), "%s", err);
    QP_CHECK(hx_store_open(db_path("absent.sqlite"), HX_STORE_READONLY, &st, err) == QP_EIO);
}

QP_TEST(store_should_refuse_a_read_only_database_for_writing) {
    if (geteuid() == 0) {
        // root ignores file permissions: check SQLite's own read-only mode instead.
        char err[QP_ERRLEN];
        struct hx_store *st;
        QP_CHECK_INT_EQ(hx_store_open(db_path("ro.sqlite"), 0, &st, err), 0);
        hx_store_close(st);
        // Opening with SQLite's read-only flag and then writing must fail cleanly.
        QP_CHECK_INT_EQ(hx_store_open(db_path("ro.sqlite"), HX_STORE_READONLY, &st, err), 0);
        QP_CHECK(hx_store_exec(st, err, "INSERT INTO histogram (run_id, kind, subject, bin, count)"
                                        " VALUES (1, 'k', 's', 0, 0)", "") < 0);
        QP_CHECK_MSG(strstr(err, "ro.sqlite") && strstr(err, "readonly"), "%s", err);
        hx_store_close(st);
        return;
    }
    char err[QP_ERRLEN];
    struct hx_store *st;
    QP_CHECK_INT_EQ(hx_store_open(db_path("ro.sqlite"), 0, &st, err), 0);
    hx_store_close(st);
    chmod(db_path("ro.sqlite"), 0444);
    QP_CHECK(hx_store_open(db_path("ro.sqlite"), 0, &st, err) < 0);
}

QP_TEST(run_identity_should_find_the_same_run_and_separate_others) {
    char err[QP_ERRLEN];
    struct hx_store *st;
    QP_CHECK_INT_EQ(hx_store_open(db_path("r.sqlite"), 0, &st, err), 0);
    struct hx_run_info ri = sample_run();
    int64_t a, b, c;
    int created;
    QP_CHECK_INT_EQ(hx_store_run_get(st, &ri, &a, &created, err), 0);
    QP_CHECK_INT_EQ(created, 1);
    ri.threads = 7; // recorded, not part of the identity
    QP_CHECK_INT_EQ(hx_store_run_get(st, &ri, &b, &created, err), 0);
    QP_CHECK_INT_EQ(created, 0);
    QP_CHECK_INT_EQ(a, b);
    ri.ctx = 128;
    QP_CHECK_INT_EQ(hx_store_run_get(st, &ri, &c, &created, err), 0);
    QP_CHECK_INT_EQ(created, 1);
    QP_CHECK(c != a);
    QP_CHECK_INT_EQ(count_rows(hx_store_db(st), "SELECT text_bytes FROM run WHERE id = 1"), 5000000000LL);
    hx_store_close(st);
}

QP_TEST(rolled_back_variant_should_leave_nothing_behind) {
    char err[QP_ERRLEN];
    struct hx_store *st;
    QP_CHECK_INT_EQ(hx_store_open(db_path("t.sqlite"), 0, &st, err), 0);
    struct hx_run_info ri = sample_run();
    int64_t run, vid;
    int created;
    QP_CHECK_INT_EQ(hx_store_run_get(st, &ri, &run, &created, err), 0);
    struct hx_variant_row v = {.spec = "q4_0", .ord = 1, .bits_per_weight = 4.5, .tokens = 10,
                               .eval_seconds = 2.0};
    QP_CHECK_INT_EQ(hx_store_begin(st, err), 0);
    QP_CHECK_INT_EQ(hx_store_variant_insert(st, run, &v, &vid, err), 0);
    QP_CHECK_INT_EQ(hx_store_metric(st, vid, "ppl", "ppl", 4.5, 0.03, 100, err), 0);
    hx_store_rollback(st);
    QP_CHECK_INT_EQ(hx_store_variant_find(st, run, "q4_0", &vid, err), 0);
    QP_CHECK_INT_EQ(count_rows(hx_store_db(st), "SELECT count(*) FROM metric"), 0);

    QP_CHECK_INT_EQ(hx_store_begin(st, err), 0);
    QP_CHECK_INT_EQ(hx_store_variant_insert(st, run, &v, &vid, err), 0);
    QP_CHECK_INT_EQ(hx_store_metric(st, vid, "ppl", "ppl", 4.5, 0.03, 100, err), 0);
    QP_CHECK_INT_EQ(hx_store_metric(st, vid, "kld", "mean", 0.01, NAN, -1, err), 0);
    // A duplicate key fails inside the transaction and names the file.
    QP_CHECK(hx_store_metric(st, vid, "ppl", "ppl", 1, 1, 1, err) < 0);
    QP_CHECK_MSG(strstr(err, "t.sqlite") && strstr(err, "UNIQUE"), "%s", err);
    QP_CHECK_INT_EQ(hx_store_commit(st, err), 0);
    int64_t found;
    QP_CHECK_INT_EQ(hx_store_variant_find(st, run, "q4_0", &found, err), 1);
    QP_CHECK_INT_EQ(found, vid);
    QP_CHECK_INT_EQ(count_rows(hx_store_db(st), "SELECT count(*) FROM metric WHERE stderr IS NULL"), 1);
    QP_CHECK_INT_EQ(count_rows(hx_store_db(st), "SELECT CAST(tokens_per_second AS INTEGER) FROM variant"), 5);
    hx_store_close(st);
}

QP_TEST(a_second_writer_should_wait_then_fail_cleanly_when_locked) {
    char err[QP_ERRLEN];
    struct hx_store *st;
    QP_CHECK_INT_EQ(hx_store_open(db_path("l.sqlite"), 0, &st, err), 0);
    sqlite3 *other;
    QP_CHECK(sqlite3_open(db_path("l.sqlite"), &other) == SQLITE_OK);
    QP_CHECK(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_busy_timeout(hx_store_db(st), 50); // keep the test short
    QP_CHECK(hx_store_begin(st, err) < 0);
    QP_CHECK_MSG(strstr(err, "l.sqlite") && strstr(err, "locked"), "%s", err);
    sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(other);
    QP_CHECK_INT_EQ(hx_store_begin(st, err), 0);
    hx_store_rollback(st);
    hx_store_close(st);
}
