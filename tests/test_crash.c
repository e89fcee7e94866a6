// test_crash.c — crash safety: a sweep killed with SIGKILL at 20 pseudo-random moments never
// leaves a corrupt database, never loses a finished variant, and `--resume` ends with numbers
// identical to an uninterrupted run.
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>

#include "qp_test.h"

#define KILLS 20

static const char *tmp(const char *name) {
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", qpt_tmpdir(), name);
    return buf[k];
}

static char *config(void) {
    char json[8192];
    char model[1024], tok[1024], text[1024];
    snprintf(model, sizeof model, "%s", qpt_fixture("models/llama2c/stories260K.bin"));
    snprintf(tok, sizeof tok, "%s", qpt_fixture("models/llama2c/tok512.bin"));
    snprintf(text, sizeof text, "%s", qpt_text_prefix(30000));
    snprintf(json, sizeof json,
             "{\"model\": \"%s\", \"tokenizer\": \"%s\", \"eval\": {\"text\": \"%s\", \"ctx\": 128, \"chunks\": 6},\n"
             " \"diagnostics\": {\"layer_chunks\": 1, \"act_chunks\": 1, \"sensitivity_chunks\": 1},\n"
             " \"variants\": [\"q8_0\", \"q4_0;act=q8\", \"rtn:bits=4:group=32:asym\", \"rtn:bits=3:group=32:sym\","
             " \"nf4\", \"q4_k\", \"q5_1\", \"rtn:bits=2:group=16:asym\"]}\n",
             model, tok, text);
    char *path = strdup(tmp("crash.json"));
    FILE *f = fopen(path, "w");
    QP_CHECK(f != NULL);
    fputs(json, f);
    fclose(f);
    return path;
}

static pid_t start(const char *cfg, const char *db, int resume) {
    pid_t pid = fork();
    QP_CHECK(pid >= 0);
    if (pid == 0) {
        int fd = open("/dev/null", O_WRONLY);
        dup2(fd, 1), dup2(fd, 2);
        execl(qpt_qprobe(), "qprobe", "sweep", "-c", cfg, "--db", db, "-t", "1", resume ? "--resume" : NULL,
              (char *)NULL);
        _exit(127);
    }
    return pid;
}

static char *fingerprint(const char *db_path) {
    static const char *sql =
        "SELECT group_concat(x, '|') FROM (SELECT v.spec || m.suite || m.name || quote(m.value) || quote(m.stderr) AS x"
        " FROM metric m JOIN variant v ON v.id = m.variant_id"
        " UNION ALL SELECT v.spec || l.layer || l.site || l.kind || quote(l.rel_err) FROM layer_error l JOIN variant v ON v.id = l.variant_id"
        " UNION ALL SELECT v.spec || s.layer || s.tensor || quote(s.kld_mean) FROM sensitivity s JOIN variant v ON v.id = s.variant_id"
        " UNION ALL SELECT 'w' || tensor || quote(kurtosis) FROM weight_stat ORDER BY x)";
    return qpt_db_text(db_path, sql);
}

QP_TEST(sigkill_at_twenty_moments_should_lose_nothing_finished_and_resume_identically) {
    char *cfg = config();
    char ref_db[512], db[512];
    snprintf(ref_db, sizeof ref_db, "%s", tmp("ref.sqlite"));
    snprintf(db, sizeof db, "%s", tmp("killed.sqlite"));
    int status;
    pid_t pid = start(cfg, ref_db, 0);
    waitpid(pid, &status, 0);
    QP_CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "uninterrupted sweep failed: %d", status);
    int64_t total = qpt_db_int(ref_db, "SELECT count(*) FROM variant");
    QP_CHECK_INT_EQ(total, 9);

    uint64_t seed = 0x9e3779b97f4a7c15ull;
    int64_t stored = 0;
    int kills = 0;
    for (int i = 0; i < KILLS; i++) {
        seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17; // xorshift: reproducible moments
        useconds_t delay = 20000 + (useconds_t)(seed % 700000);   // 20 ms .. 720 ms
        pid = start(cfg, db, 1);
        usleep(delay);
        if (kill(pid, SIGKILL) == 0) kills++;
        waitpid(pid, &status, 0);
        if (access(db, F_OK) != 0) continue; // killed before the database was created
        QP_CHECK_MSG(qpt_db_int(db, "SELECT count(*) FROM pragma_integrity_check WHERE integrity_check = 'ok'") == 1,
                     "integrity check failed after kill %d", i);
        int64_t now = qpt_db_int(db, "SELECT count(*) FROM variant");
        QP_CHECK_MSG(now >= stored, "kill %d: %lld variants, fewer than the %lld stored before", i, (long long)now,
                     (long long)stored);
        // No variant row without its metrics: each variant is all or nothing.
        QP_CHECK_INT_EQ(qpt_db_int(db, "SELECT count(*) FROM variant v WHERE NOT EXISTS"
                                  " (SELECT 1 FROM metric m WHERE m.variant_id = v.id)"), 0);
        stored = now;
    }
    QP_CHECK(kills >= KILLS / 2);
    pid = start(cfg, db, 1);
    waitpid(pid, &status, 0);
    QP_CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "resume failed: %d", status);
    QP_CHECK_INT_EQ(qpt_db_int(db, "SELECT count(*) FROM variant"), total);
    char *a = fingerprint(ref_db), *b = fingerprint(db);
    QP_CHECK_MSG(strcmp(a, b) == 0, "resumed numbers differ from the uninterrupted run");
    free(a);
    free(b);
    free(cfg);
}
