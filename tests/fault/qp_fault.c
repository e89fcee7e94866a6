// qp_fault.c — a test-only SQLite VFS shim that makes the N-th write, sync or truncate fail, for
// the fault-injection tests (tests/test_fault.c, make reliability; docs/BADINPUT.md).
//
// Built as a shared object (build/<variant>/tests/libqpfault.so), never linked into qprobe: a
// test runs the real binary with LD_PRELOAD=libqpfault.so (qprobe links libsqlite3 dynamically),
// and the constructor below registers the shim as the default VFS, wrapping the one SQLite had.
// Without QP_FAULT in the environment it registers nothing and qprobe runs as ever.
//
// QP_FAULT is a comma-separated list:
//   count                 fail nothing; count the operations
//   op=write|sync|truncate   which operation fails (xWrite, xSync, xTruncate of any file: the
//                         database, its WAL, a journal or a temporary file)
//   n=N                   the N-th such operation of the process (1-based) fails
//   err=full|ioerr|kill   with SQLITE_FULL (a full disk) or SQLITE_IOERR_WRITE / _FSYNC /
//                         _TRUNCATE (a failing disk); default ioerr; kill: the process kills
//                         itself with SIGKILL instead (a crash at exactly that point of a
//                         commit, for tests/test_crash.c; no report is written)
//   mode=once|sticky      only the N-th fails (a transient error), or every one from the N-th on
//                         (a disk that stays full or broken); default sticky
// QP_FAULT_REPORT=FILE: at exit the shim writes "write W\nsync S\ntruncate T\nfired F\n" there
// (operations seen, and how many it failed), so that a test learns how many positions a run has
// and whether its fault was reached.
//
// Depends on SQLite's VFS interface only. Not thread-safe beyond what qprobe needs: qprobe uses
// one connection from one thread.
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { QF_WRITE, QF_SYNC, QF_TRUNCATE, QF_N_OPS };
static const char *const qf_op_names[QF_N_OPS] = {"write", "sync", "truncate"};

static struct {
    int active;          // QP_FAULT was set and parsed
    int op;              // the failing operation (-1: count only)
    long long n;         // its 1-based position
    int full, sticky;    // SQLITE_FULL instead of an I/O error; every op from n on
    int kill;            // SIGKILL instead of an error
    long long seen[QF_N_OPS];
    long long fired;
    const char *report;
} qf = {.op = -1, .sticky = 1};

static sqlite3_vfs *qf_real;   // the VFS wrapped
static sqlite3_vfs qf_vfs;     // the shim
static sqlite3_io_methods qf_io[4]; // per iVersion 1..3 of the wrapped file's methods

// One open file: the shim's header, then the wrapped VFS's file (szOsFile bytes) right after it.
struct qf_file {
    sqlite3_file base;
    sqlite3_file *real;
};

static sqlite3_file *qf_real_file(sqlite3_file *f) { return ((struct qf_file *)f)->real; }

// 0 when the operation goes through; the error code it fails with otherwise.
static int qf_fault(int op) {
    long long k = ++qf.seen[op];
    if (!qf.active || qf.op != op) return 0;
    if (k != qf.n && !(qf.sticky && k > qf.n)) return 0;
    qf.fired++;
    if (qf.kill) raise(SIGKILL);
    if (qf.full) return SQLITE_FULL;
    static const int codes[QF_N_OPS] = {SQLITE_IOERR_WRITE, SQLITE_IOERR_FSYNC, SQLITE_IOERR_TRUNCATE};
    return codes[op];
}

// ---------------------------------------------------------------------------------------------
// File methods: the three that can fail, and the rest forwarded

static int qf_write(sqlite3_file *f, const void *p, int n, sqlite3_int64 off) {
    int rc = qf_fault(QF_WRITE);
    return rc ? rc : qf_real_file(f)->pMethods->xWrite(qf_real_file(f), p, n, off);
}
static int qf_sync(sqlite3_file *f, int flags) {
    int rc = qf_fault(QF_SYNC);
    return rc ? rc : qf_real_file(f)->pMethods->xSync(qf_real_file(f), flags);
}
static int qf_truncate(sqlite3_file *f, sqlite3_int64 size) {
    int rc = qf_fault(QF_TRUNCATE);
    return rc ? rc : qf_real_file(f)->pMethods->xTruncate(qf_real_file(f), size);
}

static int qf_close(sqlite3_file *f) { return qf_real_file(f)->pMethods->xClose(qf_real_file(f)); }
static int qf_read(sqlite3_file *f, void *p, int n, sqlite3_int64 off) {
    return qf_real_file(f)->pMethods->xRead(qf_real_file(f), p, n, off);
}
static int qf_file_size(sqlite3_file *f, sqlite3_int64 *size) {
    return qf_real_file(f)->pMethods->xFileSize(qf_real_file(f), size);
}
static int qf_lock(sqlite3_file *f, int l) { return qf_real_file(f)->pMethods->xLock(qf_real_file(f), l); }
static int qf_unlock(sqlite3_file *f, int l) { return qf_real_file(f)->pMethods->xUnlock(qf_real_file(f), l); }
static int qf_check_lock(sqlite3_file *f, int *out) {
    return qf_real_file(f)->pMethods->xCheckReservedLock(qf_real_file(f), out);
}
static int qf_control(sqlite3_file *f, int op, void *arg) {
    return qf_real_file(f)->pMethods->xFileControl(qf_real_file(f), op, arg);
}
static int qf_sector(sqlite3_file *f) { return qf_real_file(f)->pMethods->xSectorSize(qf_real_file(f)); }
static int qf_device(sqlite3_file *f) {
    return qf_real_file(f)->pMethods->xDeviceCharacteristics(qf_real_file(f));
}
static int qf_shm_map(sqlite3_file *f, int pg, int pgsz, int extend, void volatile **pp) {
    return qf_real_file(f)->pMethods->xShmMap(qf_real_file(f), pg, pgsz, extend, pp);
}
static int qf_shm_lock(sqlite3_file *f, int off, int n, int flags) {
    return qf_real_file(f)->pMethods->xShmLock(qf_real_file(f), off, n, flags);
}
static void qf_shm_barrier(sqlite3_file *f) { qf_real_file(f)->pMethods->xShmBarrier(qf_real_file(f)); }
static int qf_shm_unmap(sqlite3_file *f, int del) {
    return qf_real_file(f)->pMethods->xShmUnmap(qf_real_file(f), del);
}
static int qf_fetch(sqlite3_file *f, sqlite3_int64 off, int n, void **pp) {
    return qf_real_file(f)->pMethods->xFetch(qf_real_file(f), off, n, pp);
}
static int qf_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p) {
    return qf_real_file(f)->pMethods->xUnfetch(qf_real_file(f), off, p);
}

// ---------------------------------------------------------------------------------------------
// The VFS: xOpen wraps the file, everything else is the wrapped VFS's own

static int qf_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out_flags) {
    (void)vfs;
    struct qf_file *qfile = (struct qf_file *)f;
    qfile->base.pMethods = NULL;
    qfile->real = (sqlite3_file *)&qfile[1];
    int rc = qf_real->xOpen(qf_real, name, qfile->real, flags, out_flags);
    const sqlite3_io_methods *m = qfile->real->pMethods;
    if (m) {
        // Offer only the methods the wrapped file has, so that SQLite never calls one it lacks.
        int v = m->iVersion < 1 ? 1 : m->iVersion > 3 ? 3 : m->iVersion;
        qfile->base.pMethods = &qf_io[v];
    }
    return rc;
}

static int qf_delete(sqlite3_vfs *v, const char *name, int sync) { (void)v; return qf_real->xDelete(qf_real, name, sync); }
static int qf_access(sqlite3_vfs *v, const char *name, int flags, int *out) {
    (void)v;
    return qf_real->xAccess(qf_real, name, flags, out);
}
static int qf_full_path(sqlite3_vfs *v, const char *name, int n, char *out) {
    (void)v;
    return qf_real->xFullPathname(qf_real, name, n, out);
}
static void *qf_dl_open(sqlite3_vfs *v, const char *name) { (void)v; return qf_real->xDlOpen(qf_real, name); }
static void qf_dl_error(sqlite3_vfs *v, int n, char *msg) { (void)v; qf_real->xDlError(qf_real, n, msg); }
static void (*qf_dl_sym(sqlite3_vfs *v, void *h, const char *sym))(void) {
    (void)v;
    return qf_real->xDlSym(qf_real, h, sym);
}
static void qf_dl_close(sqlite3_vfs *v, void *h) { (void)v; qf_real->xDlClose(qf_real, h); }
static int qf_random(sqlite3_vfs *v, int n, char *out) { (void)v; return qf_real->xRandomness(qf_real, n, out); }
static int qf_sleep(sqlite3_vfs *v, int us) { (void)v; return qf_real->xSleep(qf_real, us); }
static int qf_time(sqlite3_vfs *v, double *out) { (void)v; return qf_real->xCurrentTime(qf_real, out); }
static int qf_last_error(sqlite3_vfs *v, int n, char *out) {
    (void)v;
    return qf_real->xGetLastError ? qf_real->xGetLastError(qf_real, n, out) : 0;
}
static int qf_time64(sqlite3_vfs *v, sqlite3_int64 *out) { (void)v; return qf_real->xCurrentTimeInt64(qf_real, out); }

// ---------------------------------------------------------------------------------------------
// Configuration, registration, report

// Parses QP_FAULT; 0, or -1 with a message on stderr (the shim then stays out of the way and the
// test, finding no report, fails).
static int qf_parse(const char *spec) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", spec);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (strcmp(tok, "count") == 0) continue;
        char *eq = strchr(tok, '=');
        if (!eq) goto bad;
        *eq = 0;
        const char *v = eq + 1;
        if (strcmp(tok, "op") == 0) {
            qf.op = -1;
            for (int i = 0; i < QF_N_OPS; i++)
                if (strcmp(v, qf_op_names[i]) == 0) qf.op = i;
            if (qf.op < 0) goto bad;
        } else if (strcmp(tok, "n") == 0) {
            char *end;
            qf.n = strtoll(v, &end, 10);
            if (*end || qf.n < 1) goto bad;
        } else if (strcmp(tok, "err") == 0) {
            if (strcmp(v, "full") && strcmp(v, "ioerr") && strcmp(v, "kill")) goto bad;
            qf.full = strcmp(v, "full") == 0;
            qf.kill = strcmp(v, "kill") == 0;
        } else if (strcmp(tok, "mode") == 0) {
            if (strcmp(v, "once") && strcmp(v, "sticky")) goto bad;
            qf.sticky = strcmp(v, "sticky") == 0;
        } else {
            goto bad;
        }
    }
    if (qf.op >= 0 && qf.n < 1) goto bad;
    return 0;
bad:
    fprintf(stderr, "libqpfault: bad QP_FAULT '%s'\n", spec);
    return -1;
}

__attribute__((destructor)) static void qf_report(void) {
    if (!qf.active || !qf.report) return;
    FILE *f = fopen(qf.report, "w");
    if (!f) return;
    for (int i = 0; i < QF_N_OPS; i++) fprintf(f, "%s %lld\n", qf_op_names[i], qf.seen[i]);
    fprintf(f, "fired %lld\n", qf.fired);
    fclose(f);
}

__attribute__((constructor)) static void qf_init(void) {
    const char *spec = getenv("QP_FAULT");
    if (!spec || !*spec || qf_parse(spec)) return;
    qf.report = getenv("QP_FAULT_REPORT");
    if (sqlite3_initialize() != SQLITE_OK || !(qf_real = sqlite3_vfs_find(NULL))) return;
    qf_vfs = *qf_real;
    qf_vfs.zName = "qpfault";
    qf_vfs.pNext = NULL;
    qf_vfs.szOsFile = (int)sizeof(struct qf_file) + qf_real->szOsFile;
    qf_vfs.xOpen = qf_open;
    qf_vfs.xDelete = qf_delete;
    qf_vfs.xAccess = qf_access;
    qf_vfs.xFullPathname = qf_full_path;
    qf_vfs.xDlOpen = qf_dl_open;
    qf_vfs.xDlError = qf_dl_error;
    qf_vfs.xDlSym = qf_dl_sym;
    qf_vfs.xDlClose = qf_dl_close;
    qf_vfs.xRandomness = qf_random;
    qf_vfs.xSleep = qf_sleep;
    qf_vfs.xCurrentTime = qf_time;
    qf_vfs.xGetLastError = qf_last_error;
    if (qf_real->iVersion >= 2 && qf_real->xCurrentTimeInt64) qf_vfs.xCurrentTimeInt64 = qf_time64;
    // Version 3's system-call overrides (xSetSystemCall...) stay the wrapped VFS's: they act on
    // its globals, which is what a caller of them wants.
    for (int v = 1; v <= 3; v++) {
        qf_io[v] = (sqlite3_io_methods){v, qf_close, qf_read, qf_write, qf_truncate, qf_sync, qf_file_size,
                                        qf_lock, qf_unlock, qf_check_lock, qf_control, qf_sector, qf_device,
                                        v >= 2 ? qf_shm_map : NULL, v >= 2 ? qf_shm_lock : NULL,
                                        v >= 2 ? qf_shm_barrier : NULL, v >= 2 ? qf_shm_unmap : NULL,
                                        v >= 3 ? qf_fetch : NULL, v >= 3 ? qf_unfetch : NULL};
    }
    if (sqlite3_vfs_register(&qf_vfs, 1) == SQLITE_OK) qf.active = 1;
}
