// rpt_gnuplot.c — finding and running gnuplot, writing its scripts (rpt_gnuplot.h).
#include "rpt_gnuplot.h"

#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "qp.h"

extern char **environ;

// ---------------------------------------------------------------------------------------------
// Finding gnuplot and its terminals

static int rpt_find_on_path(const char *prog, char *out, size_t cap) {
    const char *path = getenv("PATH");
    if (!path) return 0;
    while (1) {
        size_t len = strcspn(path, ":");
        // An empty PATH entry means the current directory.
        int n = len ? snprintf(out, cap, "%.*s/%s", (int)len, path, prog) : snprintf(out, cap, "./%s", prog);
        struct stat sb;
        if (n > 0 && (size_t)n < cap && stat(out, &sb) == 0 && S_ISREG(sb.st_mode) && access(out, X_OK) == 0)
            return 1;
        if (!path[len]) return 0;
        path += len + 1;
    }
}

// Does the listing of `set terminal` name terminal t (as the first word of a line)?
static int rpt_has_terminal(const char *listing, const char *t) {
    size_t tl = strlen(t);
    for (const char *p = listing; (p = strstr(p, t)) != NULL; p += tl) {
        int starts = p == listing || p[-1] == ' ' || p[-1] == '\n' || p[-1] == '\t' || p[-1] == ':';
        if (starts && (p[tl] == ' ' || p[tl] == '\t')) return 1;
    }
    return 0;
}

void rpt_gnuplot_probe(struct rpt_gnuplot *g) {
    memset(g, 0, sizeof *g);
    g->svg = 1;
    snprintf(g->png_term, sizeof g->png_term, "pngcairo");
    if (!rpt_find_on_path("gnuplot", g->exe, sizeof g->exe)) return;
    g->found = 1;

    int fds[2];
    if (pipe(fds) != 0) return;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 2);
    posix_spawn_file_actions_addclose(&fa, fds[0]);
    posix_spawn_file_actions_addclose(&fa, fds[1]);
    char *argv[] = {"gnuplot", "-e", "set terminal", NULL};
    pid_t pid;
    int rc = posix_spawn(&pid, g->exe, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    char buf[32768];
    size_t len = 0;
    ssize_t got;
    while (rc == 0 && len < sizeof buf - 1 && (got = read(fds[0], buf + len, sizeof buf - 1 - len)) != 0) {
        if (got < 0) {
            if (errno == EINTR) continue;
            break;
        }
        len += (size_t)got;
    }
    buf[len] = 0;
    close(fds[0]);
    if (rc == 0) waitpid(pid, NULL, 0);
    if (len == 0) return; // could not ask: keep the defaults
    g->svg = rpt_has_terminal(buf, "svg");
    if (rpt_has_terminal(buf, "pngcairo")) snprintf(g->png_term, sizeof g->png_term, "pngcairo");
    else if (rpt_has_terminal(buf, "png")) snprintf(g->png_term, sizeof g->png_term, "png");
    else g->png_term[0] = 0;
}

// ---------------------------------------------------------------------------------------------
// Files

FILE *rpt_file_open(const char *dir, const char *name, char *err) {
    char path[4352];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f) qp_fail(err, QP_EIO, "cannot write '%s': %s", path, strerror(errno));
    return f;
}

int rpt_file_close(FILE *f, const char *dir, const char *name, char *err) {
    int bad = ferror(f);
    int e = errno;
    if (fclose(f) != 0 && !bad) {
        bad = 1;
        e = errno;
    }
    if (bad) return qp_fail(err, QP_EIO, "cannot write '%s/%s': %s", dir, name, strerror(e));
    return 0;
}

void rpt_gp_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fprintf(f, "\\%c", *s);
        else if ((unsigned char)*s < 0x20) fputc(' ', f);
        else fputc(*s, f);
    }
    fputc('"', f);
}

void rpt_dat_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('\'', f);
        else if ((unsigned char)*s < 0x20) fputc(' ', f);
        else fputc(*s, f);
    }
    fputc('"', f);
}

FILE *rpt_gp_begin(const struct rpt_gnuplot *g, const char *dir, const char *name, const char *title,
                   int w, int h, char *err) {
    char file[512];
    snprintf(file, sizeof file, "%s.gp", name);
    FILE *f = rpt_file_open(dir, file, err);
    if (!f) return NULL;
    fprintf(f, "# %s.gp — %s\n", name, title);
    fprintf(f, "# Written by `qprobe report`. Restyle it and re-run `gnuplot %s.gp` in this folder:\n"
               "# it reads %s.dat and writes", name, name);
    if (g->svg) fprintf(f, " %s.svg", name);
    if (g->png_term[0]) fprintf(f, "%s %s.png", g->svg ? " and" : "", name);
    fprintf(f, ".\n\n");
    fprintf(f, "do for [qp_fmt in \"%s%s%s\"] {\n", g->svg ? "svg" : "", g->svg && g->png_term[0] ? " " : "",
            g->png_term[0] ? "png" : "");
    fprintf(f, "reset\n");
    // Text is plain (noenhanced): specs are full of '_' and '^', which would become sub- and
    // superscripts.
    fprintf(f, "if (qp_fmt eq \"svg\") {\n"
               "    set terminal svg size %d,%d noenhanced font \"Sans,14\" background \"#ffffff\"\n"
               "} else {\n"
               "    set terminal %s size %d,%d noenhanced font \"Sans,10\" background \"#ffffff\"\n"
               "}\n",
            w, h, g->png_term[0] ? g->png_term : "pngcairo", w, h);
    fprintf(f, "set output '%s.'.qp_fmt\n", name);
    fprintf(f, "set encoding utf8\nset datafile missing \"NaN\"\n");
    fprintf(f, "set grid lc rgb \"#dddddd\"\nset border lc rgb \"#555555\"\nset key noautotitle\n"
               "set style line 1 lc rgb \"#1f77b4\" lw 2 pt 7 ps 1.0\n"
               "set style line 2 lc rgb \"#d62728\" lw 2 pt 5 ps 1.0\n"
               "set style line 3 lc rgb \"#2ca02c\" lw 2 pt 9 ps 1.0\n"
               "set style line 4 lc rgb \"#ff7f0e\" lw 2 pt 11 ps 1.0\n"
               "set style line 5 lc rgb \"#9467bd\" lw 2 pt 13 ps 1.0\n"
               "set style line 6 lc rgb \"#8c564b\" lw 2 pt 15 ps 1.0\n"
               "set style line 7 lc rgb \"#e377c2\" lw 2 pt 4 ps 1.0\n"
               "set style line 8 lc rgb \"#7f7f7f\" lw 2 pt 6 ps 1.0\n"
               "set style line 9 lc rgb \"#bcbd22\" lw 2 pt 8 ps 1.0\n"
               "set style line 10 lc rgb \"#17becf\" lw 2 pt 10 ps 1.0\n\n");
    return f;
}

int rpt_gp_end(FILE *f, const char *dir, const char *name, char *err) {
    fprintf(f, "\nunset multiplot\nunset output\n}\n");
    char file[512];
    snprintf(file, sizeof file, "%s.gp", name);
    return rpt_file_close(f, dir, file, err);
}

// ---------------------------------------------------------------------------------------------
// Running

int rpt_gnuplot_run(const struct rpt_gnuplot *g, const char *dir, const char *name, char *err) {
    QP_ASSERT(g->found);
    char out_svg[4352], out_png[4352], script[512];
    snprintf(out_svg, sizeof out_svg, "%s/%s.svg", dir, name);
    snprintf(out_png, sizeof out_png, "%s/%s.png", dir, name);
    snprintf(script, sizeof script, "%s.gp", name);
    // Stale figures of an earlier report must not pass for new ones.
    unlink(out_svg);
    unlink(out_png);

    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addchdir_np(&fa, dir);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, "gnuplot.log", O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    char *argv[] = {"gnuplot", script, NULL};
    pid_t pid;
    int rc = posix_spawn(&pid, g->exe, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) return qp_fail(err, QP_EIO, "cannot run '%s': %s", g->exe, strerror(rc));
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) return qp_fail(err, QP_EIO, "cannot run '%s': %s", g->exe, strerror(errno));
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return qp_fail(err, QP_EIO, "gnuplot failed on '%s/%s' (see '%s/gnuplot.log')", dir, script, dir);
    struct stat sb;
    if (g->svg && (stat(out_svg, &sb) != 0 || sb.st_size == 0))
        return qp_fail(err, QP_EIO, "gnuplot wrote no '%s' (see '%s/gnuplot.log')", out_svg, dir);
    if (g->png_term[0] && (stat(out_png, &sb) != 0 || sb.st_size == 0))
        return qp_fail(err, QP_EIO, "gnuplot wrote no '%s' (see '%s/gnuplot.log')", out_png, dir);
    return 0;
}
