// cmd_synth.c — `qprobe synth`: writes a synthetic Llama model of a real shape (synth.h) as a
// GGUF that qprobe and llama.cpp load, for speed measurements at realistic sizes.
// Depends on harness/cli/hx_cli.h and harness/io/hx_synth.h; the shapes live in synth.c only.
#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hx_cli.h"
#include "kn_types.h"
#include "qp.h"
#include "hx_synth.h"

#define SYN_FIXTURES_DEFAULT "../shared/fixtures"

// Set by SIGINT/SIGTERM: the write stops between chunks and removes its temporary file.
static volatile int syn_stop;

static void syn_on_signal(int sig) {
    (void)sig;
    syn_stop = 1;
}

// ---------------------------------------------------------------------------------------------
// Help

// Weights of a shape with n_layers layers (norms included).
static int64_t syn_params(const struct hx_synth_shape *s, int n_layers) {
    int64_t hs = s->head_size ? s->head_size : s->dim / s->n_heads;
    int64_t d = s->dim, f = s->hidden_dim, kv = (int64_t)s->n_kv_heads * hs, q = (int64_t)s->n_heads * hs;
    int64_t layer = 2 * d * q + 2 * d * kv + 3 * d * f + 2 * d;
    return (s->tied ? 1 : 2) * (int64_t)s->vocab_size * d + n_layers * layer + d;
}

static void syn_print_shapes(FILE *f) {
    int n;
    const struct hx_synth_shape *s = hx_synth_shapes(&n);
    fprintf(f, "  %-16s %-6s %5s %6s %6s %5s %4s %6s %6s %9s  %s\n", "shape", "arch", "dim", "ffn", "layers",
            "heads", "kv", "ctx", "vocab", "f32 GB", "");
    for (int i = 0; i < n; i++) {
        fprintf(f, "  %-16s %-6s %5d %6d %6d %5d %4d %6d %6d %9.2f  %s\n", s[i].name, kn_arch_name(s[i].arch), s[i].dim,
                s[i].hidden_dim, s[i].n_layers, s[i].n_heads, s[i].n_kv_heads, s[i].seq_len,
                s[i].vocab_size, (double)syn_params(&s[i], s[i].n_layers) * 4 / 1e9, s[i].what);
    }
}

static void syn_usage(void) {
    printf("usage: qprobe synth --shape NAME [--seed S] -o OUT.gguf [--type f32|f16] [--layers N]\n"
           "                    [--vocab FILE] [-t N] [--json]\n"
           "       qprobe synth --arch llama|qwen2|phi3|gemma2 -o OUT.gguf [--seed S] ...\n"
           "       qprobe synth --list-shapes\n\n"
           "Writes a model of a real shape with deterministic synthetic weights as GGUF\n"
           "(llama.cpp key and tensor names, the family's vocabulary where one is available), for\n"
           "speed measurements at realistic sizes; --arch A writes the small test model of a family\n"
           "(512 tokens, peaked next-token distributions) that tests compare with llama.cpp.\n"
           "Matrices are Student-t (nu = %d) scaled by\n"
           "1/sqrt(fan_in); %d input channels of every q/k/v/gate/up matrix are scaled x%g and\n"
           "recorded in 'qprobe.synth.outlier_channels'. Same seed, same bytes, for any -t.\n"
           "The file is streamed tensor by tensor and renamed into place when complete; a\n"
           "failure or Ctrl-C leaves no partial file.\n\n"
           "  -s, --shape NAME      one of the shapes below\n"
           "      --seed S          unsigned 64-bit seed, decimal or 0x hex (default 0)\n"
           "  -o, --output FILE     the GGUF to write\n"
           "      --type T          f32 (default) or f16 for the matrices; norms stay f32\n"
           "      --layers N        override the shape's layer count (1..1024)\n"
           "  -a, --arch A          the small test model of family A (the shape A-tiny)\n"
           "      --vocab FILE      GGUF whose tokenizer.* keys are copied, or a tokenizer.json converted\n"
           "                        to them (default: the shape's, under $QPROBE_FIXTURES or %s)\n"
           "  -t, --threads N       generation threads (default: all CPUs)\n"
           "      --list-shapes     print the shapes and exit\n"
           "      --json            print the result as one JSON object\n\n"
           "exit status: 0 written, 2 bad options or vocabulary, an output that cannot be created,\n"
           "3 out of memory or the disk full, 130 interrupted.\n\n"
           "shapes:\n",
           HX_SYNTH_DOF, HX_SYNTH_N_OUTLIERS, (double)HX_SYNTH_OUTLIER_SCALE,
           SYN_FIXTURES_DEFAULT);
    syn_print_shapes(stdout);
    printf("\nexamples:\n"
           "  qprobe synth --list-shapes\n"
           "  qprobe synth --shape test-tiny -o tiny.gguf --vocab ggml-vocab-llama-spm.gguf\n"
           "  qprobe synth --shape tinyllama-1.1b --seed 7 --type f16 -o tl.gguf --json\n");
}

// ---------------------------------------------------------------------------------------------
// Options

// An unsigned 64-bit seed: decimal, or hexadecimal after "0x". 0 or -1.
static int syn_parse_seed(const char *s, uint64_t *out) {
    int base = 10;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        s += 2;
    }
    if (!(base == 16 ? isxdigit((unsigned char)s[0]) : isdigit((unsigned char)s[0])))
        return -1; // also refuses signs and spaces, which strtoull would accept
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, base);
    if (errno || *end) return -1;
    *out = (uint64_t)v;
    return 0;
}

// Progress on stderr: one self-overwriting line on a terminal, 25 % steps otherwise.
struct syn_progress {
    int tty, last;
    double t0;
};

static void syn_progress_cb(void *ctx, int done, int total, uint64_t bytes) {
    struct syn_progress *p = ctx;
    double dt = qp_now() - p->t0;
    double mbs = dt > 0 ? (double)bytes / dt / 1e6 : 0;
    if (p->tty) {
        fprintf(stderr, "\rsynth: %d/%d tensors, %.2f GB, %.0f MB/s ", done, total,
                (double)bytes / 1e9, mbs);
        fflush(stderr);
    } else if (done * 4 / total > p->last && done < total) {
        p->last = done * 4 / total;
        fprintf(stderr, "synth: %d/%d tensors, %.2f GB, %.0f MB/s\n", done, total,
                (double)bytes / 1e9, mbs);
    }
}

struct syn_args {
    const char *shape_name, *arch, *out, *vocab;
    struct hx_synth_opts o;
    int json, default_vocab;
    char vocab_buf[4096];
};

// The shape (--shape or --arch) and the vocabulary (--vocab, else the shape's under the
// fixtures; NULL where the shape has none): 0 or a usage error's exit status.
static int syn_resolve(struct syn_args *a) {
    if (a->arch && a->shape_name) return hx_usage_error("synth", "give --shape or --arch, not both");
    if (a->arch && !(a->o.shape = hx_synth_arch_shape(a->arch)))
        return hx_usage_error("synth", "unknown architecture '%s' (llama, qwen2, phi3, gemma2)", a->arch);
    if (!a->arch && !a->shape_name)
        return hx_usage_error("synth", "no shape given (--shape NAME or --arch A); see 'qprobe synth --list-shapes'");
    if (!a->arch && !(a->o.shape = hx_synth_shape_find(a->shape_name)))
        return hx_usage_error("synth", "unknown shape '%s'; see 'qprobe synth --list-shapes'", a->shape_name);
    if (!a->out) return hx_usage_error("synth", "no output given (-o OUT.gguf)");
    a->default_vocab = a->vocab == NULL;
    if (a->default_vocab && a->o.shape->vocab && *a->o.shape->vocab) {
        const char *root = getenv("QPROBE_FIXTURES"); // as the task suites find theirs
        if (!root || !*root) root = getenv("QP_FIXTURES"); // (the tests' name)
        if (!root || !*root) root = SYN_FIXTURES_DEFAULT;
        snprintf(a->vocab_buf, sizeof a->vocab_buf, "%s/%s", root, a->o.shape->vocab);
        a->vocab = a->vocab_buf;
    }
    a->o.vocab = a->vocab; // NULL: no tokenizer keys
    return 0;
}

// Options into a; HX_CLI_HELP when --help or --list-shapes printed, else 0 or a usage error's
// exit status.
static int syn_parse_opts(int argc, char **argv, struct syn_args *a) {
    static const struct option opts[] = {
        {"shape", required_argument, 0, 's'},  {"seed", required_argument, 0, 'S'},
        {"output", required_argument, 0, 'o'}, {"type", required_argument, 0, 'T'},
        {"layers", required_argument, 0, 'L'}, {"vocab", required_argument, 0, 'V'},
        {"threads", required_argument, 0, 't'}, {"list-shapes", no_argument, 0, 'l'},
        {"json", no_argument, 0, 'j'},         {"help", no_argument, 0, 'h'},
        {"arch", required_argument, 0, 'a'},   {0, 0, 0, 0}};
    int c, rc = 0;
    optind = 1;
    opterr = 0;
    while (!rc && (c = getopt_long(argc, argv, "s:o:t:a:h", opts, NULL)) != -1) {
        switch (c) {
        case 's': a->shape_name = optarg; break;
        case 'a': a->arch = optarg; break;
        case 'S':
            if (syn_parse_seed(optarg, &a->o.seed))
                return hx_usage_error("synth", "--seed '%s': expected an unsigned 64-bit integer "
                                      "(decimal or 0x hex)", optarg);
            break;
        case 'o': a->out = optarg; break;
        case 'T':
            if (strcmp(optarg, "f32") == 0) a->o.type = KN_F32;
            else if (strcmp(optarg, "f16") == 0) a->o.type = KN_F16;
            else return hx_usage_error("synth", "--type '%s': expected f32 or f16", optarg);
            break;
        case 'L': rc = hx_parse_int("synth", "--layers", optarg, 1, 1024, &a->o.n_layers); break;
        case 'V': a->vocab = optarg; break;
        case 't': rc = hx_parse_int("synth", "--threads", optarg, 1, 1024, &a->o.n_threads); break;
        case 'l': syn_print_shapes(stdout); return HX_CLI_HELP;
        case 'j': a->json = 1; break;
        case 'h': syn_usage(); return HX_CLI_HELP;
        default: return hx_unknown_option("synth", argv);
        }
    }
    if (rc) return rc;
    if (optind < argc) return hx_usage_error("synth", "unexpected argument '%s'", argv[optind]);
    return syn_resolve(a);
}


// Writes the model, interruptible by SIGINT/SIGTERM; the exit status.
static int syn_run(struct syn_args *a, struct hx_synth_info *info) {
    struct syn_progress prog = {.tty = isatty(STDERR_FILENO), .t0 = qp_now()};
    a->o.progress = syn_progress_cb;
    a->o.progress_ctx = &prog;
    char err[QP_ERRLEN];
    syn_stop = 0;
    a->o.stop = &syn_stop;
    signal(SIGINT, syn_on_signal);
    signal(SIGTERM, syn_on_signal);
    int rc = hx_synth_write(&a->o, a->out, info, err);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    if (prog.tty) fprintf(stderr, "\r\033[K");
    if (rc == QP_EINTR) {
        fprintf(stderr, "qprobe synth: interrupted; '%s' not written\n", a->out);
        return HX_EXIT_INTERRUPTED;
    }
    if (rc && a->default_vocab && a->vocab && access(a->vocab, R_OK) != 0)
        return hx_fail("synth", rc, "%s (pass --vocab FILE or set QPROBE_FIXTURES)", err);
    return rc ? hx_fail("synth", rc, "%s", err) : HX_EXIT_OK;
}

static void syn_print_json(const struct syn_args *a, const struct hx_synth_info *info) {
    cJSON *j = cJSON_CreateObject();
    cJSON *ch = cJSON_CreateArray();
    for (int k = 0; k < HX_SYNTH_N_OUTLIERS; k++) cJSON_AddItemToArray(ch, cJSON_CreateNumber(info->outliers[k]));
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)a->o.seed);
    cJSON_AddStringToObject(j, "path", a->out);
    cJSON_AddStringToObject(j, "shape", a->o.shape->name);
    cJSON_AddStringToObject(j, "seed", seed); // a string: 64-bit values exceed a double
    cJSON_AddStringToObject(j, "type", a->o.type == KN_F16 ? "f16" : "f32");
    cJSON_AddNumberToObject(j, "layers", info->n_layers);
    cJSON_AddNumberToObject(j, "params", (double)info->n_params);
    cJSON_AddNumberToObject(j, "data_bytes", (double)info->data_bytes);
    cJSON_AddNumberToObject(j, "seconds", info->seconds);
    cJSON_AddItemToObject(j, "outlier_channels", ch);
    hx_print_json(j);
}

static void syn_print_text(const struct syn_args *a, const struct hx_synth_info *info) {
    printf("wrote '%s': %s, %d layers, %s, seed %llu, %.3f B weights, %.2f GB in %.1f s (%.0f MB/s)\n", a->out,
           a->o.shape->name, info->n_layers, a->o.type == KN_F16 ? "f16" : "f32", (unsigned long long)a->o.seed,
           (double)info->n_params / 1e9, (double)info->data_bytes / 1e9, info->seconds,
           info->seconds > 0 ? (double)info->data_bytes / info->seconds / 1e6 : 0.0);
    printf("outlier input channels (q/k/v/gate/up, x%g):", (double)HX_SYNTH_OUTLIER_SCALE);
    for (int k = 0; k < HX_SYNTH_N_OUTLIERS; k++) printf(" %d", info->outliers[k]);
    printf("\n");
}

int hx_cmd_synth(int argc, char **argv) {
    struct syn_args a = {.o = {.type = KN_F32, .n_threads = qp_cpu_count()}};
    struct hx_synth_info info;
    int rc = syn_parse_opts(argc, argv, &a);
    if (!rc) rc = syn_run(&a, &info);
    if (!rc && a.json) syn_print_json(&a, &info);
    else if (!rc) syn_print_text(&a, &info);
    return rc == HX_CLI_HELP ? HX_EXIT_OK : rc;
}
