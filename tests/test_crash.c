// test_crash.c — crash safety: `qprobe sweep` of eight variants on a new study, killed with
// SIGKILL at moments spread over its whole run — the reference pass, each variant's
// quantization, evaluation and diagnostics, and inside commits — never leaves a corrupt
// database, never a variant without its rows, never one that differs from an uninterrupted
// run's, and `--resume` then ends with numbers identical to an uninterrupted run.
//
// Two kinds of moment, each run starting from an empty database:
//   - timed: SIGKILL from this process at evenly spread fractions of the uninterrupted run's
//     duration (wherever the run is then: mostly computation);
//   - in a commit: the fault shim (tests/fault/qp_fault.c, err=kill) makes qprobe kill itself at
//     its N-th write to the database or its WAL, N spread evenly over all the writes of the run,
//     so that the kill falls between the pages of a transaction or of a checkpoint.
// After each kill the database's state names the phase the kill hit (no reference yet, or how
// many variants were stored); the case prints how the moments fell.
// make test: 10 timed + 4 in commits; make reliability (QP_RELIABILITY=1): 40 + 10.
// Depends on qpt_study.h.
#include <signal.h>
#include <time.h>

#include "qpt_study.h"

#define SPECS "\"q8_0\", \"q4_0;act=q8\", \"rtn:bits=4:group=32:asym\", \"rtn:bits=3:group=32:sym\", \"nf4\", " \
              "\"q4_k\", \"q5_1\", \"rtn:bits=2:group=16:asym\""
#define N_VARIANTS 9 // with the reference

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// Starts the sweep (stdout and stderr discarded) with the environment entries env (may be NULL).
static pid_t start(const char *cfg, const char *db, char *const env[]) {
    pid_t pid = fork();
    QP_CHECK(pid >= 0);
    if (pid == 0) {
        int fd = open("/dev/null", O_WRONLY);
        dup2(fd, 1), dup2(fd, 2);
        for (int i = 0; env && env[i]; i++) putenv(env[i]);
        execl(qpt_qprobe(), "qprobe", "sweep", "-c", cfg, "--db", db, "-t", "1", "--resume", (char *)NULL);
        _exit(127);
    }
    return pid;
}

struct crash {
    char cfg[1024], ref[1024];
    char *ref_fp;
    double seconds;   // the uninterrupted run
    long long writes; // its writes (0: the shim is not built)
    int phase[N_VARIANTS + 1], kills;
};

// After a kill: consistent, every stored variant as in the uninterrupted run; then resumed to the
// same numbers. Counts the phase (variants stored) the kill fell in.
static void judge(struct crash *c, const char *db, const char *what) {
    int stored = 0;
    if (access(db, F_OK) == 0) {
        qpt_check_consistent(db, what);
        stored = qpt_check_stored_intact(db, c->ref, what);
    }
    c->phase[stored]++;
    c->kills++;
    char *err;
    int rc = qpt_sweep(NULL, c->cfg, db, 1, NULL, &err);
    QP_CHECK_MSG(rc == 0, "%s: --resume: exit %d: %s", what, rc, err);
    free(err);
    char *fp = qpt_study_fingerprint(db);
    QP_CHECK_MSG(strcmp(fp, c->ref_fp) == 0, "%s: resumed numbers differ from the uninterrupted run", what);
    free(fp);
}

static void kill_timed(struct crash *c, double at) {
    char what[96];
    snprintf(what, sizeof what, "kill at %.0f ms", 1000 * at);
    const char *db = qpt_scratch("killed.sqlite");
    qpt_db_remove(db);
    pid_t pid = start(c->cfg, db, NULL);
    usleep((useconds_t)(at * 1e6));
    kill(pid, SIGKILL);
    int st;
    QP_CHECK(waitpid(pid, &st, 0) == pid);
    judge(c, db, what);
}

static void kill_at_write(struct crash *c, long long n) {
    char what[96], fault[96], preload[4200], asan[] = "ASAN_OPTIONS=verify_asan_link_order=0";
    snprintf(what, sizeof what, "kill at write %lld of %lld", n, c->writes);
    snprintf(fault, sizeof fault, "QP_FAULT=op=write,n=%lld,err=kill", n);
    snprintf(preload, sizeof preload, "LD_PRELOAD=%s", qpt_fault_so());
    char *env[] = {fault, preload, asan, NULL};
    const char *db = qpt_scratch("killed.sqlite");
    qpt_db_remove(db);
    pid_t pid = start(c->cfg, db, env);
    int st;
    QP_CHECK(waitpid(pid, &st, 0) == pid);
    QP_CHECK_MSG(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "%s: the run was not killed (status %d)", what, st);
    judge(c, db, what);
}

QP_TEST(sigkill_at_many_moments_should_lose_nothing_finished_and_resume_identically) {
    int all = qpt_reliability(), n_timed = all ? 40 : 10, n_writes = all ? 10 : 4;
    struct crash c = {0};
    snprintf(c.cfg, sizeof c.cfg, "%s", qpt_study_config("crash.json", 6, SPECS));
    snprintf(c.ref, sizeof c.ref, "%s", qpt_scratch("uninterrupted.sqlite"));
    double t0 = now_s();
    QP_CHECK_INT_EQ(qpt_sweep(NULL, c.cfg, c.ref, 0, NULL, NULL), 0);
    c.seconds = now_s() - t0;
    QP_CHECK_INT_EQ(qpt_db_int(c.ref, "SELECT count(*) FROM variant"), N_VARIANTS);
    c.ref_fp = qpt_study_fingerprint(c.ref);

    for (int i = 0; i < n_timed; i++) kill_timed(&c, c.seconds * (i + 0.5) / n_timed);

    if (qpt_fault_so()) { // the writes of an uninterrupted run, counted by the shim
        char env[8192], report[1024];
        snprintf(report, sizeof report, "%s", qpt_scratch("count.report"));
        qpt_fault_env(env, sizeof env, "count", report);
        const char *db = qpt_scratch("counted.sqlite");
        QP_CHECK_INT_EQ(qpt_sweep(env, c.cfg, db, 0, NULL, NULL), 0);
        char *r = qpt_read_file(report, NULL);
        QP_CHECK(r && sscanf(r, "write %lld", &c.writes) == 1 && c.writes > n_writes);
        free(r);
        for (int j = 0; j < n_writes; j++) kill_at_write(&c, 1 + (long long)((double)c.writes * (j + 0.5) / n_writes));
    } else {
        fprintf(stderr, "libqpfault.so not built: no kills inside commits\n");
    }
    fprintf(stderr, "%d kills (uninterrupted run %.2f s, %lld writes): before the reference was stored %d", c.kills,
            c.seconds, c.writes, c.phase[0]);
    for (int k = 1; k <= N_VARIANTS; k++)
        if (c.phase[k]) fprintf(stderr, ", with the reference and %d variants stored %d", k - 1, c.phase[k]);
    fprintf(stderr, "; every one consistent and resumed identically\n");
    // The moments must reach past the reference into the variants: else the spread failed.
    int beyond = 0;
    for (int k = 2; k <= N_VARIANTS; k++) beyond += c.phase[k];
    QP_CHECK_MSG(beyond >= c.kills / 3, "only %d of %d kills fell after the first variant", beyond, c.kills);
    free(c.ref_fp);
}
