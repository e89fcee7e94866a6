// cmd_merge.c — `qprobe merge OUT.sqlite IN.sqlite...`: joins study databases, typically the
// shards of one sweep (`qprobe sweep --shard I/N`). Runs are matched by identity (store.h); every
// input must hold the same runs. Variants already in OUT (by run and spec) are kept; the others
// are copied with every row that belongs to them. One transaction per input file.
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hx_cli.h"
#include "qp.h"
#include "hx_store.h"

// Tables whose rows belong to a variant (column variant_id) or to a run (column run_id, with
// variant_id NULL where the table has one).
static const char *const hx_variant_tables[] = {"metric", "layer_error", "sensitivity", "grid_stat",
                                                "task_item", "token", "histogram", "gen_item"};
static const char *const hx_run_tables[] = {"weight_stat", "act_stat", "histogram"};

static void merge_usage(void) {
    printf("usage: qprobe merge OUT.sqlite IN.sqlite [IN.sqlite ...]\n\n"
           "Joins study databases, e.g. the shards of one sweep, into OUT (created when missing).\n"
           "Every input must hold the same runs (same model, text, protocol and qprobe build); a\n"
           "variant already in OUT is kept, the others are copied with all their rows.\n\n"
           "examples:\n"
           "  qprobe merge study.sqlite shard0.sqlite shard1.sqlite shard2.sqlite\n"
           "  qprobe merge nightly.sqlite tonight.sqlite\n");
}

// "a, b, c" of table t's columns, and the same list with run_id / variant_id replaced by the new
// ids (rid / vid; vid < 0 keeps the column as it is).
static int hx_columns(sqlite3 *db, const char *table, char *cols, char *exprs, size_t cap, int64_t rid,
                      int64_t vid) {
    char sql[128];
    snprintf(sql, sizeof sql, "PRAGMA main.table_info(%s)", table);
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK) return -1;
    cols[0] = exprs[0] = 0;
    int n = 0;
    while (sqlite3_step(s) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(s, 1);
        if (strcmp(name, "id") == 0) continue; // a fresh rowid
        char e[96];
        if (strcmp(name, "run_id") == 0) snprintf(e, sizeof e, "%lld", (long long)rid);
        else if (strcmp(name, "variant_id") == 0 && vid >= 0) snprintf(e, sizeof e, "%lld", (long long)vid);
        else snprintf(e, sizeof e, "%s", name);
        size_t lc = strlen(cols), le = strlen(exprs);
        snprintf(cols + lc, cap - lc, "%s%s", n ? ", " : "", name);
        snprintf(exprs + le, cap - le, "%s%s", n ? ", " : "", e);
        n++;
    }
    sqlite3_finalize(s);
    return n > 0 ? 0 : -1;
}

static int hx_exec(sqlite3 *db, const char *sql, const char *what, char *err) {
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        int rc = qp_fail(err, hx_store_sqlite_code(db), "cannot merge %s: %s", what, msg ? msg : "error");
        sqlite3_free(msg);
        return rc;
    }
    return 0;
}

// Copies the rows of table whose `key` column equals old_id (and, for run-level rows of
// histogram, whose variant_id is NULL) with the new ids.
static int hx_copy_rows(sqlite3 *db, const char *table, const char *key, int64_t old_id, int64_t rid,
                        int64_t vid, const char *extra, const char *in, char *err) {
    char cols[2048], exprs[2048], *sql = malloc(8192);
    if (!sql) return qp_fail(err, QP_ENOMEM, "out of memory");
    int rc = 0;
    if (hx_columns(db, table, cols, exprs, sizeof cols, rid, vid)) {
        rc = qp_fail(err, QP_EIO, "cannot merge '%s': table %s missing", in, table);
    } else {
        snprintf(sql, 8192, "INSERT INTO main.%s (%s) SELECT %s FROM src.%s WHERE %s = %lld%s", table, cols,
                 exprs, table, key, (long long)old_id, extra);
        rc = hx_exec(db, sql, in, err);
    }
    free(sql);
    return rc;
}

// The sorted run identities of schema `db_name`, joined by ','; malloc'd.
static char *hx_identities(sqlite3 *db, const char *db_name) {
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT group_concat(identity, ',') FROM (SELECT identity FROM %s.run ORDER BY identity)", db_name);
    sqlite3_stmt *s;
    char *out = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW) {
        const char *t = (const char *)sqlite3_column_text(s, 0);
        out = strdup(t ? t : "");
    }
    sqlite3_finalize(s);
    return out;
}

static int hx_merge_one(struct hx_store *out, const char *in, int *n_copied, int *n_kept, char *err) {
    sqlite3 *db = hx_store_db(out);
    int rc = 0;
    sqlite3_stmt *runs = NULL, *vars = NULL;
    if ((rc = hx_store_begin(out, err))) return rc;
    if (sqlite3_prepare_v2(db, "SELECT id, identity FROM src.run ORDER BY id", -1, &runs, NULL) != SQLITE_OK)
        rc = qp_fail(err, QP_EIO, "cannot read '%s': %s", in, sqlite3_errmsg(db));
    while (!rc && sqlite3_step(runs) == SQLITE_ROW) {
        int64_t old_run = sqlite3_column_int64(runs, 0), rid = 0;
        const char *identity = (const char *)sqlite3_column_text(runs, 1);
        int found = 0;
        rc = hx_store_query_i64(out, err, &rid, &found, "SELECT id FROM main.run WHERE identity = ?", "t", identity);
        if (!rc && !found) {
            char cols[2048], exprs[2048], sql[4500];
            if (hx_columns(db, "run", cols, exprs, sizeof cols, 0, -1)) {
                rc = qp_fail(err, QP_EIO, "cannot merge '%s': table run missing", in);
                break;
            }
            snprintf(sql, sizeof sql, "INSERT INTO main.run (%s) SELECT %s FROM src.run WHERE id = %lld", cols, cols,
                     (long long)old_run);
            if ((rc = hx_exec(db, sql, in, err))) break;
            rid = sqlite3_last_insert_rowid(db);
            for (size_t t = 0; t < QP_ARRAY_LEN(hx_run_tables) && !rc; t++)
                rc = hx_copy_rows(db, hx_run_tables[t], "run_id", old_run, rid, -1,
                                  strcmp(hx_run_tables[t], "histogram") == 0 ? " AND variant_id IS NULL" : "", in, err);
        }
        if (rc) break;
        if (sqlite3_prepare_v2(db, "SELECT id, spec FROM src.variant WHERE run_id = ? ORDER BY id", -1, &vars, NULL) != SQLITE_OK) {
            rc = qp_fail(err, QP_EIO, "cannot read '%s': %s", in, sqlite3_errmsg(db));
            break;
        }
        sqlite3_bind_int64(vars, 1, old_run);
        while (!rc && sqlite3_step(vars) == SQLITE_ROW) {
            int64_t old_v = sqlite3_column_int64(vars, 0), vid;
            const char *spec = (const char *)sqlite3_column_text(vars, 1);
            if ((rc = hx_store_variant_find(out, rid, spec, &vid, err)) < 0) break;
            if (rc == 1) {
                rc = 0;
                (*n_kept)++;
                continue;
            }
            char cols[2048], exprs[2048], sql[4500];
            if (hx_columns(db, "variant", cols, exprs, sizeof cols, rid, -1)) {
                rc = qp_fail(err, QP_EIO, "cannot merge '%s': table variant missing", in);
                break;
            }
            snprintf(sql, sizeof sql, "INSERT INTO main.variant (%s) SELECT %s FROM src.variant WHERE id = %lld",
                     cols, exprs, (long long)old_v);
            if ((rc = hx_exec(db, sql, in, err))) break;
            vid = sqlite3_last_insert_rowid(db);
            for (size_t t = 0; t < QP_ARRAY_LEN(hx_variant_tables) && !rc; t++)
                rc = hx_copy_rows(db, hx_variant_tables[t], "variant_id", old_v, rid, vid, "", in, err);
            (*n_copied)++;
        }
        sqlite3_finalize(vars);
        vars = NULL;
    }
    sqlite3_finalize(runs);
    if (!rc) rc = hx_store_commit(out, err);
    if (rc) hx_store_rollback(out);
    return rc;
}

// Every input must be a study of this schema, none the output, and all must hold the same runs;
// the exit status.
static int merge_check_inputs(const char *out_path, char **in, int n_in) {
    char err[QP_ERRLEN], *first_ids = NULL;
    int status = HX_EXIT_OK, rc;
    for (int i = 0; i < n_in && status == HX_EXIT_OK; i++) {
        struct hx_store *st;
        if (strcmp(in[i], out_path) == 0) {
            status = hx_usage_error("merge", "'%s' is both the output and an input", out_path);
            break;
        }
        if ((rc = hx_store_open(in[i], HX_STORE_READONLY, &st, err))) {
            status = hx_fail("merge", rc, "%s", err);
            break;
        }
        char *ids = hx_identities(hx_store_db(st), "main");
        hx_store_close(st);
        if (!ids) status = hx_usage_error("merge", "cannot read '%s': no runs table", in[i]);
        else if (!first_ids) first_ids = ids;
        else if (strcmp(ids, first_ids) != 0)
            status = hx_usage_error("merge", "cannot merge '%s': its runs differ from those of '%s' "
                                             "(another model, text, protocol or qprobe build)", in[i], in[0]);
        if (ids != first_ids) free(ids);
    }
    free(first_ids);
    return status;
}

// One input attached to the output as "src" and merged in; the exit status.
static int merge_attach_one(struct hx_store *out, const char *in, int *copied, int *kept) {
    char err[QP_ERRLEN];
    sqlite3 *db = hx_store_db(out);
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(db, "ATTACH ? AS src", -1, &s, NULL) != SQLITE_OK)
        return hx_fail("merge", hx_store_sqlite_code(db), "cannot attach '%s': %s", in, sqlite3_errmsg(db));
    sqlite3_bind_text(s, 1, in, -1, SQLITE_STATIC);
    int ok = sqlite3_step(s) == SQLITE_DONE;
    sqlite3_finalize(s);
    if (!ok) return hx_fail("merge", hx_store_sqlite_code(db), "cannot attach '%s': %s", in, sqlite3_errmsg(db));
    int rc = hx_merge_one(out, in, copied, kept, err);
    sqlite3_exec(db, "DETACH src", NULL, NULL, NULL);
    return rc ? hx_fail("merge", rc, "%s", err) : HX_EXIT_OK;
}

int hx_merge_into(const char *cmd, const char *out_path, const char *in_path) {
    char *in[] = {(char *)in_path};
    int status = merge_check_inputs(out_path, in, 1), rc, copied = 0, kept = 0;
    if (status) return status;
    char err[QP_ERRLEN];
    struct hx_store *out;
    if ((rc = hx_store_open(out_path, 0, &out, err))) return hx_fail(cmd, rc, "%s", err);
    status = merge_attach_one(out, in_path, &copied, &kept);
    hx_store_close(out);
    return status;
}

int hx_cmd_merge(int argc, char **argv) {
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        merge_usage();
        return HX_EXIT_OK;
    }
    if (argc < 3) return hx_usage_error("merge", "expected OUT.sqlite and at least one IN.sqlite; see 'qprobe merge --help'");
    const char *out_path = argv[1];
    int status = merge_check_inputs(out_path, argv + 2, argc - 2), rc;
    if (status) return status;
    char err[QP_ERRLEN];
    struct hx_store *out;
    if ((rc = hx_store_open(out_path, 0, &out, err))) return hx_fail("merge", rc, "%s", err);
    int copied = 0, kept = 0;
    for (int i = 2; i < argc && status == HX_EXIT_OK; i++) status = merge_attach_one(out, argv[i], &copied, &kept);
    hx_store_close(out);
    if (status == HX_EXIT_OK)
        printf("merged %d inputs into %s: %d variants copied, %d already there\n", argc - 2, out_path, copied, kept);
    return status;
}
