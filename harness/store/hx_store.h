// store.h — the SQLite study database (docs/SCHEMA.md): one file per study, schema versioned
// with PRAGMA user_version and forward migrations, WAL journal, one transaction per variant
// result so that a crash loses at most the variant in flight.
//
// A *run* is one model evaluated on one text under one protocol by one qprobe build; its identity
// (a SHA-256 over all of that) finds it again, so that `eval` invocations of several specs and a
// resumed sweep add to the same run. A *variant* is one spec within a run; the reference model is
// the variant with is_reference = 1.
//
// Only harness/ and reports/ include sqlite3.h. Depends on kernels/qp.h and SQLite.
#ifndef HX_STORE_H
#define HX_STORE_H

#include <stdint.h>

struct sqlite3;
struct hx_store;

#define HX_STORE_SCHEMA_VERSION 6

enum { HX_STORE_READONLY = 1 };

// Opens (creating and migrating when writable) the database at path. A database whose
// user_version is newer than this build's, a file that is not SQLite, or a locked or read-only
// database when writing are refused with a one-line message naming the file. Close with
// hx_store_close.
int hx_store_open(const char *path, int flags, struct hx_store **out, char *err);
void hx_store_close(struct hx_store *st);
struct sqlite3 *hx_store_db(struct hx_store *st); // for queries (reports, gate, tests)
// The QP_E* code of db's last SQLite error: QP_EWRITE for a disk that fills up or fails
// (SQLITE_FULL, SQLITE_IOERR: a runtime failure), QP_ENOMEM, else QP_EIO (a database that cannot
// be used: read-only, locked, not a database, corrupt: bad input).
int hx_store_sqlite_code(struct sqlite3 *db);
const char *hx_store_path(const struct hx_store *st);

// Transactions. begin takes the write lock at once (BEGIN IMMEDIATE, waiting up to the busy
// timeout for another writer). rollback is safe to call when no transaction is open.
int hx_store_begin(struct hx_store *st, char *err);
int hx_store_commit(struct hx_store *st, char *err);
void hx_store_rollback(struct hx_store *st);

// Runs one SQL statement with parameters bound from a format string, one letter per '?':
//   'i' int64_t, 'I' int (promoted), 'd' double (NaN and ±Inf stored as NULL), 't' const char *
//   (NULL → NULL). Rows, if any, are ignored. 0 or QP_EIO (the database cannot be
//   used: read-only, locked, corrupt), QP_EWRITE (disk full or I/O error) or QP_ENOMEM, with err.
int hx_store_exec(struct hx_store *st, char *err, const char *sql, const char *fmt, ...);
// The same for a statement whose first column of the first row is an integer: *out (0 and
// *found = 0 when there is no row; found may be NULL).
int hx_store_query_i64(struct hx_store *st, char *err, int64_t *out, int *found, const char *sql,
                       const char *fmt, ...);
int64_t hx_store_last_id(struct hx_store *st);

// --- runs and variants

// Everything that identifies a run and is recorded with it. Strings may be NULL (stored NULL).
struct hx_run_info {
    const char *label;
    const char *model_path, *model_sha256, *model_format;
    const char *arch; // the model family (kn_arch_name); recorded, implied by model_sha256
    int dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab, seq_len;
    int64_t n_params;
    const char *tokenizer, *tokenizer_sha256;
    const char *text_path, *text_sha256;
    int64_t text_bytes, text_tokens;
    const char *protocol;
    int ctx, stride, score_from, score_to, bos, chunks;
    const char *calib_path, *calib_sha256;
    int64_t calib_overlap_bytes;
    const char *isa, *gemm;
    const char *cpu, *kernels; // CPU model and flags; each kernel family's path
    int threads;
    const char *config;
};

// The identity of a run: SHA-256 over model/tokenizer/text/calibration hashes, the protocol
// fields, the qprobe version and commit, and the label (hex, 65 bytes). Thread count, ISA and
// host are recorded but not part of it: results do not depend on them. Nor is the family (arch):
// the model's hash already fixes it. Neither is the sweep
// configuration: a sweep extended by more variants, or `eval` runs of single variants, add to the
// same run (the configuration stored is the one that created the run).
void hx_run_identity(const struct hx_run_info *ri, char hex[65]);

// Finds the run with ri's identity or inserts it (in its own transaction). *created tells which.
int hx_store_run_get(struct hx_store *st, const struct hx_run_info *ri, int64_t *run_id,
                     int *created, char *err);

// The variant with this spec in the run: 1 and *variant_id when stored, 0 when not, <0 on error.
int hx_store_variant_find(struct hx_store *st, int64_t run_id, const char *spec, int64_t *variant_id,
                          char *err);

struct hx_variant_row {
    const char *spec;
    int ord, is_reference;
    double bits_per_weight;
    int64_t weight_bytes, n_weights;
    double quant_seconds, eval_seconds;
    int64_t tokens;
    const char *weights_sha256; // hx_weights_digest of the weights evaluated; NULL: not known
};

// Inserts the variant row (inside the caller's transaction) and returns its id.
int hx_store_variant_insert(struct hx_store *st, int64_t run_id, const struct hx_variant_row *v,
                            int64_t *variant_id, char *err);

// One metric row (inside the caller's transaction); stderr_ and n may be NaN / -1 for none.
int hx_store_metric(struct hx_store *st, int64_t variant_id, const char *suite, const char *name,
                    double value, double stderr_, int64_t n, char *err);

#endif
