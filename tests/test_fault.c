// test_fault.c — the study database under injected storage faults: the real `qprobe sweep`
// runs with the test-only VFS shim libqpfault.so preloaded (tests/fault/qp_fault.c), which
// fails the N-th xWrite, xSync or xTruncate with SQLITE_IOERR or SQLITE_FULL, once or from then
// on. For each position in turn the run must
//   - fail with exit status 3 and exactly one error line naming the database (the sweep's
//     "N variants into run ..." header aside), or absorb the fault with exit 0 and everything
//     stored (a failed checkpoint when the database is closed: the commits are in the WAL);
//   - leave a database that passes PRAGMA integrity_check, with no variant lacking its metrics,
//     every variant it reported finished stored, and every stored variant identical to an
//     undisturbed run's;
//   - and `--resume` without a fault must then give numbers identical to the undisturbed run.
// Two studies: one resumed from a database holding the reference and q8_0, so that the faults
// fall on the storing of q4_0 and rtn 4-bit (every write position of one variant, then the
// next), and one created from nothing (schema, run row, reference, variants).
// make test samples positions; make reliability (QP_RELIABILITY=1) tries every position of
// every operation with each error and mode. Depends on qpt_study.h; the shim is found beside
// the test binaries of the qprobe under test (QP_BIN's build directory).
#include "qpt_study.h"

enum { OP_WRITE, OP_SYNC, OP_TRUNCATE, OP_N };
static const char *const op_names[OP_N] = {"write", "sync", "truncate"};

#define SPECS "\"q8_0\", \"q4_0\", \"rtn:bits=4:group=32:asym\""
#define N_VARIANTS 4 // with the reference
// Write positions make test tries per study (spread evenly, first and last included); every
// sync and truncate position is tried in both.
#define SAMPLE_WRITES 8

struct fstudy {
    char cfg[1024];    // the configuration of the three variants
    char base[1024];   // the database each faulted run starts from ("" for a new study)
    char ref_fp_db[1024];
    char *ref_fp;      // the undisturbed study's fingerprint
    long long ops[OP_N];
    int tried, failed, absorbed;
};

// libqpfault.so of the build under test; skips when it was not built.
static const char *fault_so(void) {
    const char *so = qpt_fault_so();
    if (!so) QP_SKIP("libqpfault.so not built beside %s (make builds it with the tests)", qpt_qprobe());
    return so;
}

static void fault_env(char *env, size_t cap, const char *fault, const char *report) {
    fault_so();
    qpt_fault_env(env, cap, fault, report);
}

// The report the shim wrote at exit: operations seen, faults fired.
static void read_report(const char *path, long long ops[OP_N], long long *fired) {
    char *r = qpt_read_file(path, NULL);
    QP_CHECK_MSG(r != NULL, "the shim wrote no report '%s' (not loaded? bad QP_FAULT?)", path);
    long long n[OP_N + 1];
    QP_CHECK_MSG(sscanf(r, "write %lld\nsync %lld\ntruncate %lld\nfired %lld", &n[0], &n[1], &n[2], &n[3]) == 4,
                 "bad report: %s", r);
    for (int i = 0; i < OP_N; i++) ops[i] = n[i];
    *fired = n[3];
    free(r);
}

static void start_db(const struct fstudy *s, const char *db) {
    qpt_db_remove(db);
    if (s->base[0]) qpt_copy(s->base, db);
}

// The study: the base database (reference and q8_0) unless fresh, the undisturbed result, and
// how many operations of each kind a run from the base makes (the shim counting, failing none).
static void fstudy_setup(struct fstudy *s, int fresh) {
    memset(s, 0, sizeof *s);
    snprintf(s->cfg, sizeof s->cfg, "%s", qpt_study_config("full.json", 1, SPECS));
    if (!fresh) {
        snprintf(s->base, sizeof s->base, "%s", qpt_scratch("base.sqlite"));
        const char *base_cfg = qpt_study_config("base.json", 1, "\"q8_0\"");
        QP_CHECK_INT_EQ(qpt_sweep(NULL, base_cfg, s->base, 0, NULL, NULL), 0);
        char wal[1100];
        snprintf(wal, sizeof wal, "%s-wal", s->base);
        QP_CHECK_MSG(access(wal, F_OK) != 0, "the base database was not checkpointed on close");
    }
    snprintf(s->ref_fp_db, sizeof s->ref_fp_db, "%s", qpt_scratch("undisturbed.sqlite"));
    start_db(s, s->ref_fp_db);
    QP_CHECK_INT_EQ(qpt_sweep(NULL, s->cfg, s->ref_fp_db, 1, NULL, NULL), 0);
    s->ref_fp = qpt_study_fingerprint(s->ref_fp_db);
    QP_CHECK_INT_EQ(qpt_db_int(s->ref_fp_db, "SELECT count(*) FROM variant"), N_VARIANTS);

    const char *db = qpt_scratch("count.sqlite"), *report = qpt_scratch("count.report");
    char env[8192];
    fault_env(env, sizeof env, "count", report);
    start_db(s, db);
    QP_CHECK_INT_EQ(qpt_sweep(env, s->cfg, db, 1, NULL, NULL), 0);
    long long fired;
    read_report(report, s->ops, &fired);
    QP_CHECK_INT_EQ(fired, 0);
    char *fp = qpt_study_fingerprint(db);
    QP_CHECK_MSG(strcmp(fp, s->ref_fp) == 0, "the counting shim changed the results");
    free(fp);
    QP_CHECK_MSG(s->ops[OP_WRITE] > 10 && s->ops[OP_SYNC] > 0, "too few operations counted: %lld writes, %lld syncs",
                 s->ops[OP_WRITE], s->ops[OP_SYNC]);
}

// A line the sweep prints on stderr as it goes: the plan, the budget's notes, the header once the
// study is open, the ETA after each variant.
static int is_progress_line(const char *line) {
    const char *end = strchr(line, '\n');
    if (!end) return 0;
    if (strncmp(line, "plan: ", 6) == 0 || strncmp(line, "budget: ", 8) == 0) return 1;
    if (strncmp(line, "qprobe sweep: ", 14) != 0) return 0;
    const char *hdr = strstr(line, " variants into run "), *eta = strstr(line, "; ETA ");
    return (hdr && hdr < end) || (eta && eta < end);
}

// The error line of a failed sweep: one line, besides its progress lines, naming the database and
// the storage error.
static void check_error_line(const char *err, const char *db, const char *what) {
    const char *line = err;
    while (is_progress_line(line)) line = strchr(line, '\n') + 1;
    QP_CHECK_MSG(qpt_count_lines(line) == 1 && line[strlen(line) - 1] == '\n', "%s: not one error line: %s", what, err);
    QP_CHECK_MSG(strncmp(line, "qprobe sweep: ", 14) == 0, "%s: %s", what, err);
    char base[1024];
    snprintf(base, sizeof base, "%s", db);
    QP_CHECK_MSG(strstr(line, basename(base)) != NULL, "%s: does not name the database: %s", what, err);
    QP_CHECK_MSG(strstr(line, "disk I/O error") || strstr(line, "database or disk is full"),
                 "%s: does not name the storage error: %s", what, err);
}

// Every variant the sweep printed as finished (stdout lines "[k/n] SPEC  ... bpw ...").
static void check_reported_stored(const char *out, const char *db, const char *what) {
    if (!strchr(out, ']')) return; // nothing reported (and perhaps no schema to look in)
    for (const char *p = out; (p = strchr(p, ']')) != NULL; p++) {
        if (p[1] != ' ') continue;
        char spec[256];
        if (sscanf(p + 2, "%255s", spec) != 1) continue;
        const char *eol = strchr(p, '\n');
        if (!strstr(p, " bpw ") || (eol && strstr(p, " bpw ") > eol)) continue; // skipped: stored before
        char *fp = qpt_variant_fingerprint(db, spec);
        QP_CHECK_MSG(fp[0] != 0, "%s: '%s' was reported finished but is not stored", what, spec);
        free(fp);
    }
}

// One fault: the run, the database it leaves, and the resumed run.
static void fault_one(struct fstudy *s, int op, long long n, int full, int once) {
    char fault[128], what[160], env[8192];
    snprintf(fault, sizeof fault, "op=%s,n=%lld,err=%s,mode=%s", op_names[op], n, full ? "full" : "ioerr",
             once ? "once" : "sticky");
    snprintf(what, sizeof what, "%s%s", s->base[0] ? "resumed study, " : "new study, ", fault);
    const char *db = qpt_scratch("f.sqlite"), *report = qpt_scratch("f.report");
    fault_env(env, sizeof env, fault, report);
    start_db(s, db);
    char *out, *err;
    int rc = qpt_sweep(env, s->cfg, db, 1, &out, &err);
    long long ops[OP_N], fired;
    read_report(report, ops, &fired);
    QP_CHECK_MSG(fired >= 1, "%s: the fault was never reached (%lld %ss): the run is not deterministic", what,
                 ops[op], op_names[op]);
    s->tried++;
    if (rc == 3) {
        s->failed++;
        check_error_line(err, db, what);
    } else {
        QP_CHECK_MSG(rc == 0, "%s: exit %d: %s", what, rc, err);
        QP_CHECK_MSG(qpt_db_int(db, "SELECT count(*) FROM variant") == N_VARIANTS,
                     "%s: exit 0, but not every variant is stored: %s", what, err);
        s->absorbed++;
    }
    struct stat sb;
    if (stat(db, &sb) == 0 && sb.st_size > 0) {
        qpt_check_consistent(db, what);
        check_reported_stored(out, db, what);
        qpt_check_stored_intact(db, s->ref_fp_db, what);
    }
    free(out);
    free(err);
    rc = qpt_sweep(NULL, s->cfg, db, 1, NULL, &err);
    QP_CHECK_MSG(rc == 0, "%s: --resume afterwards: exit %d: %s", what, rc, err);
    free(err);
    char *fp = qpt_study_fingerprint(db);
    QP_CHECK_MSG(strcmp(fp, s->ref_fp) == 0, "%s: --resume gave numbers that differ from the undisturbed run", what);
    free(fp);
}

// Positions of op to try: every one (reliability), else every sync and truncate and
// SAMPLE_WRITES writes spread from the first to the last. Error and mode alternate in the sample;
// the exhaustive set tries each position with `combos` of (ioerr sticky, full once, full
// sticky, ioerr once).
static void fault_all(struct fstudy *s, int combos) {
    static const int full_of[4] = {0, 1, 1, 0}, once_of[4] = {0, 1, 0, 1};
    int all = qpt_reliability(), k = 0;
    for (int op = 0; op < OP_N; op++) {
        long long n_ops = s->ops[op];
        long long steps = all || op != OP_WRITE || n_ops <= SAMPLE_WRITES ? n_ops : SAMPLE_WRITES;
        for (long long i = 0; i < steps; i++) {
            long long pos = steps == n_ops ? i + 1 : 1 + i * (n_ops - 1) / (steps - 1);
            if (all)
                for (int c = 0; c < combos; c++) fault_one(s, op, pos, full_of[c], once_of[c]);
            else
                fault_one(s, op, pos, full_of[k % 4], once_of[k % 4]), k++;
        }
    }
    fprintf(stderr, "%s study: %lld writes, %lld syncs, %lld truncates; %d faults tried: %d failed with exit 3, "
                    "%d absorbed (exit 0, everything stored); every one consistent and resumed identically\n",
            s->base[0] ? "resumed" : "new", s->ops[OP_WRITE], s->ops[OP_SYNC], s->ops[OP_TRUNCATE], s->tried,
            s->failed, s->absorbed);
    QP_CHECK(s->failed > 0);
    free(s->ref_fp);
}

QP_TEST(storage_faults_while_storing_variants_should_fail_cleanly_and_resume_identically) {
    fault_so();
    struct fstudy s;
    fstudy_setup(&s, 0);
    fault_all(&s, 4);
}

QP_TEST(storage_faults_while_creating_a_study_should_fail_cleanly_and_resume_identically) {
    fault_so();
    struct fstudy s;
    fstudy_setup(&s, 1);
    fault_all(&s, 2);
}

QP_TEST(fault_shim_without_configuration_should_change_nothing) {
    // QP_FAULT unset: the shim registers no VFS; a bad QP_FAULT is refused by the shim, which
    // then stays out of the way (and writes no report).
    char env[8192];
    char cfg[1024];
    snprintf(cfg, sizeof cfg, "%s", qpt_study_config("one.json", 1, "\"q8_0\""));
    const char *plain = qpt_scratch("plain.sqlite"), *shimmed = qpt_scratch("shimmed.sqlite");
    QP_CHECK_INT_EQ(qpt_sweep(NULL, cfg, plain, 0, NULL, NULL), 0);
    snprintf(env, sizeof env, "LD_PRELOAD='%s' ASAN_OPTIONS=\"${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0\"",
             fault_so()); // the shim loaded, QP_FAULT unset
    QP_CHECK_INT_EQ(qpt_sweep(env, cfg, shimmed, 0, NULL, NULL), 0);
    char *a = qpt_study_fingerprint(plain), *b = qpt_study_fingerprint(shimmed);
    QP_CHECK_STR_EQ(a, b);
    free(a);
    free(b);
    const char *bad_report = qpt_scratch("bad.report");
    fault_env(env, sizeof env, "op=read,n=1", bad_report);
    char *err;
    qpt_db_remove(shimmed);
    QP_CHECK_INT_EQ(qpt_sweep(env, cfg, shimmed, 0, NULL, &err), 0);
    QP_CHECK_MSG(strstr(err, "libqpfault: bad QP_FAULT") != NULL, "%s", err);
    QP_CHECK(access(bad_report, F_OK) != 0);
    free(err);
}
