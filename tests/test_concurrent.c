// test_concurrent.c — two qprobe processes writing one study at the same time, and studies that
// cannot be written at all. Two `eval`s of different variants started together on a new study
// (both evaluate the reference and score it on a task suite; one stores each, the other uses
// those rows), two sweeps of the same
// configuration with --resume (each variant stored once), and two sweeps into different runs
// of one database: every process exits 0, nothing is lost or stored twice, the database passes
// its integrity check and holds exactly the numbers of the same work done one process at a
// time. A writer that holds the lock longer than the other waits is named in the other's
// message. (Read-only databases and directories: tests/test_badinput.c.)
//
// make test repeats the races a few times; make reliability (QP_RELIABILITY=1) 20 times each.
// Depends on qpt_study.h.
#include <signal.h>
#include <sqlite3.h>
#include <time.h>

#include "qpt_study.h"

#define ROUNDS_TEST 3
#define ROUNDS_RELIABILITY 20

static int rounds(void) { return qpt_reliability() ? ROUNDS_RELIABILITY : ROUNDS_TEST; }

// Starts `qprobe ARGV...` with stdout and stderr into the scratch files OUT.stdout/OUT.stderr;
// returns its pid.
// OUT: the path prefix of a process's output files (in the scratch directory).
static const char *outp(const char *name) { return qpt_scratch(name); }

static pid_t spawn(const char *out, char *const argv[]) {
    char path[1100], full[1024];
    snprintf(full, sizeof full, "%s", outp(out));
    pid_t pid = fork();
    QP_CHECK(pid >= 0);
    if (pid == 0) {
        snprintf(path, sizeof path, "%s.stdout", full);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        snprintf(path, sizeof path, "%s.stderr", full);
        int fe = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0 || fe < 0) _exit(126);
        dup2(fd, 1), dup2(fe, 2);
        execv(qpt_qprobe(), argv);
        _exit(127);
    }
    return pid;
}

// Waits for pid; its exit status (fails the case when it died of a signal).
static int reap(pid_t pid, const char *out) {
    int st;
    QP_CHECK(waitpid(pid, &st, 0) == pid);
    char path[1100];
    snprintf(path, sizeof path, "%s.stderr", outp(out));
    char *err = qpt_read_file(path, NULL);
    QP_CHECK_MSG(WIFEXITED(st), "%s died of signal %d: %s", out, WTERMSIG(st), err ? err : "");
    int rc = WEXITSTATUS(st);
    if (rc != 0) fprintf(stderr, "%s: exit %d: %s", out, rc, err ? err : "");
    free(err);
    return rc;
}

// `qprobe eval` of spec into db on the fixture study (the text and options of qpt_study_config),
// with 8 items of a built-in task suite (the reference's task rows are stored once per run too).
static pid_t spawn_eval(const char *out, const char *db, const char *spec) {
    static char model[1024], tok[1024], text[1024];
    snprintf(model, sizeof model, "%s", qpt_fixture("models/llama2c/stories260K.bin"));
    snprintf(tok, sizeof tok, "%s", qpt_fixture("models/llama2c/tok512.bin"));
    snprintf(text, sizeof text, "%s", qpt_text_prefix(30000));
    static char fixtures[1024];
    snprintf(fixtures, sizeof fixtures, "%s", qpt_fixture("data/tinystories/tinystories_val.txt"));
    *strstr(fixtures, "/data/tinystories/") = 0;
    setenv("QPROBE_FIXTURES", fixtures, 1); // where eval finds the built-in suite's text
    char *argv[] = {"qprobe", "eval", "-m", model, "-z", tok, "--text", text, "--db", (char *)db, "-q", (char *)spec,
                    "--ctx", "128", "--act-chunks", "1", "-t", "1", "--tasks", "tinystories-cloze", "--task-limit", "8", NULL};
    return spawn(out, argv);
}

static pid_t spawn_sweep(const char *out, const char *cfg, const char *db, const char *label) {
    char *argv[] = {"qprobe", "sweep", "-c", (char *)cfg, "--db", (char *)db, "-t", "1", "--resume",
                    label ? "--label" : NULL, (char *)label, NULL};
    return spawn(out, argv);
}

// The fingerprint of every variant of db, each compared with the one in ref.
static void check_same_numbers(const char *db, const char *ref, const char *what) {
    char *a = qpt_study_fingerprint(db), *b = qpt_study_fingerprint(ref);
    QP_CHECK_MSG(strcmp(a, b) == 0, "%s: the numbers differ from the same work done one process at a time", what);
    free(a);
    free(b);
}

// One round of a race: a fresh database db, the two processes start() starts together (a, b),
// both must exit 0, and the database must be consistent. what names the round.
struct race {
    char db[1024], what[64];
};

static void race_start(struct race *rc, int r) {
    snprintf(rc->db, sizeof rc->db, "%s", qpt_scratch("together.sqlite"));
    snprintf(rc->what, sizeof rc->what, "round %d", r);
    qpt_db_remove(rc->db);
}

static void race_finish(const struct race *rc, pid_t a, pid_t b) {
    int ra = reap(a, "a"), rb = reap(b, "b");
    QP_CHECK_MSG(ra == 0 && rb == 0, "%s: exit %d and %d", rc->what, ra, rb);
    qpt_check_consistent(rc->db, rc->what);
}

QP_TEST(two_evals_of_a_new_study_should_both_store_their_variant) {
    char seq[1024];
    snprintf(seq, sizeof seq, "%s", qpt_scratch("sequential.sqlite"));
    QP_CHECK_INT_EQ(reap(spawn_eval("s1", seq, "q8_0"), "s1"), 0);
    QP_CHECK_INT_EQ(reap(spawn_eval("s2", seq, "q4_0"), "s2"), 0);
    for (int r = 0; r < rounds(); r++) {
        struct race rc;
        race_start(&rc, r);
        const char *db = rc.db, *what = rc.what;
        pid_t a = spawn_eval("a", db, "q8_0"), b = spawn_eval("b", db, "q4_0");
        race_finish(&rc, a, b);
        QP_CHECK_INT_EQ(qpt_db_int(db, "SELECT count(*) FROM variant WHERE spec = 'reference'"), 1);
        QP_CHECK_INT_EQ(qpt_db_int(db, "SELECT count(*) FROM variant"), 3);
        QP_CHECK_INT_EQ(qpt_db_int(db, "SELECT count(*) FROM run"), 1);
        QP_CHECK_INT_EQ(qpt_db_int(db, "SELECT count(*) FROM task_item"), 3 * 8);
        check_same_numbers(db, seq, what);
    }
}

QP_TEST(two_sweeps_of_one_configuration_should_store_each_variant_once) {
    char cfg[1024], seq[1024];
    snprintf(cfg, sizeof cfg, "%s", qpt_study_config("three.json", 1, "\"q8_0\", \"q4_0\", \"rtn:bits=4:group=32:asym\""));
    snprintf(seq, sizeof seq, "%s", qpt_scratch("sequential.sqlite"));
    QP_CHECK_INT_EQ(qpt_sweep(NULL, cfg, seq, 0, NULL, NULL), 0);
    for (int r = 0; r < rounds(); r++) {
        struct race rc;
        race_start(&rc, r);
        const char *db = rc.db, *what = rc.what;
        pid_t a = spawn_sweep("a", cfg, db, NULL), b = spawn_sweep("b", cfg, db, NULL);
        race_finish(&rc, a, b);
        QP_CHECK_INT_EQ(qpt_db_int(db, "SELECT count(*) FROM variant"), 4);
        check_same_numbers(db, seq, what);
    }
}

QP_TEST(two_sweeps_into_different_runs_of_one_database_should_both_finish) {
    char cfg[1024], seq[1024];
    snprintf(cfg, sizeof cfg, "%s", qpt_study_config("two.json", 1, "\"q8_0\", \"q4_0\""));
    snprintf(seq, sizeof seq, "%s", qpt_scratch("sequential.sqlite"));
    QP_CHECK_INT_EQ(reap(spawn_sweep("s1", cfg, seq, "first"), "s1"), 0);
    QP_CHECK_INT_EQ(reap(spawn_sweep("s2", cfg, seq, "second"), "s2"), 0);
    for (int r = 0; r < rounds(); r++) {
        struct race rc;
        race_start(&rc, r);
        const char *db = rc.db, *what = rc.what;
        pid_t a = spawn_sweep("a", cfg, db, "first"), b = spawn_sweep("b", cfg, db, "second");
        race_finish(&rc, a, b);
        QP_CHECK_INT_EQ(qpt_db_int(db, "SELECT count(*) FROM run"), 2);
        QP_CHECK_INT_EQ(qpt_db_int(db, "SELECT count(*) FROM variant"), 6);
        // Each run's numbers as in the sequential database (the fingerprint is per spec; compare
        // per run by label).
        static const char *sql =
            "SELECT group_concat(x, '|') FROM (SELECT r.label || v.spec || m.suite || m.name || quote(m.value) AS x"
            " FROM metric m JOIN variant v ON v.id = m.variant_id JOIN run r ON r.id = v.run_id ORDER BY x)";
        char *x = qpt_db_text(db, sql), *y = qpt_db_text(seq, sql);
        QP_CHECK_MSG(strcmp(x, y) == 0, "%s: the runs' numbers differ from sequential ones", what);
        free(x);
        free(y);
    }
}

QP_TEST(a_writer_that_outlasts_the_wait_should_be_named_in_the_message) {
    char cfg[1024], db[1024];
    snprintf(cfg, sizeof cfg, "%s", qpt_study_config("one.json", 1, "\"q8_0\""));
    snprintf(db, sizeof db, "%s", qpt_scratch("held.sqlite"));
    QP_CHECK_INT_EQ(qpt_sweep(NULL, cfg, db, 0, NULL, NULL), 0);
    // This process takes the write lock (as another qprobe storing a variant would) and keeps it.
    sqlite3 *h = NULL;
    QP_CHECK(sqlite3_open(db, &h) == SQLITE_OK);
    QP_CHECK(sqlite3_exec(h, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK);
    char *err;
    double t0 = (double)time(NULL);
    char cfg2[1024];
    snprintf(cfg2, sizeof cfg2, "%s", qpt_study_config("two.json", 1, "\"q8_0\", \"q4_0\""));
    int rc = qpt_sweep("QPROBE_DB_TIMEOUT_MS=300", cfg2, db, 1, NULL, &err);
    sqlite3_exec(h, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(h);
    QP_CHECK_MSG(rc == 2, "exit %d: %s", rc, err);
    QP_CHECK_MSG(time(NULL) - t0 < 30, "waited too long");
    char want[64];
    snprintf(want, sizeof want, "(pid %d: ", (int)getpid());
    QP_CHECK_MSG(strstr(err, "database is locked: another process is writing to it") && strstr(err, want) &&
                     strstr(err, "test_concurrent") && strstr(err, "waits (0.3 s; QPROBE_DB_TIMEOUT_MS"),
                 "does not name the writer: %s", err);
    free(err);
    // Released, the same sweep waits for nobody and finishes.
    QP_CHECK_INT_EQ(qpt_sweep(NULL, cfg2, db, 1, NULL, NULL), 0);
    QP_CHECK_INT_EQ(qpt_db_int(db, "SELECT count(*) FROM variant"), 3);
}
