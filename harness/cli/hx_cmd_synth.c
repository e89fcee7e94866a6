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
           "      --vocab FILE      GGUF whose tokenizer.* keys are copied (default: the shape's,\n"
           "                        under $QP_FIXTURES or %s; none for byte-level BPE families)\n"
           "  -t, --threads N       generation threads (default: all CPUs)\n"
           "      --list-shapes     print the shapes and exit\n"
           "      --json            print the result as one JSON object\n\n"
           "shapes:\n",
           HX_SYNTH_DOF, HX_SYNTH_N_OUTLIERS, (double)HX_SYNTH_OUTLIER_SCALE,
           SYN_FIXTURES_DEFAULT);
    syn_print_shapes(stdout);
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

int hx_cmd_synth(int argc, char **argv) {
    static const struct option opts[] = {
        {"shape", required_argument, 0, 's'},  {"seed", required_argument, 0, 'S'},
        {"output", required_argument, 0, 'o'}, {"type", required_argument, 0, 'T'},
        {"layers", required_argument, 0, 'L'}, {"vocab", required_argument, 0, 'V'},
        {"threads", required_argument, 0, 't'}, {"list-shapes", no_argument, 0, 'l'},
        {"json", no_argument, 0, 'j'},         {"help", no_argument, 0, 'h'},
        {"arch", required_argument, 0, 'a'},   {0, 0, 0, 0}};
    const char *shape_name = NULL, *out = NULL, *vocab = NULL, *arch = NULL;
    struct hx_synth_opts o = {.type = KN_F32, .n_threads = qp_cpu_count()};
    int json = 0, c, rc;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "s:o:t:a:h", opts, NULL)) != -1) {
        switch (c) {
        case 's': shape_name = optarg; break;
        case 'a': arch = optarg; break;
        case 'S':
            if (syn_parse_seed(optarg, &o.seed))
                return hx_usage_error("synth", "--seed '%s': expected an unsigned 64-bit integer "
                                      "(decimal or 0x hex)", optarg);
            break;
        case 'o': out = optarg; break;
        case 'T':
            if (strcmp(optarg, "f32") == 0) o.type = KN_F32;
            else if (strcmp(optarg, "f16") == 0) o.type = KN_F16;
            else return hx_usage_error("synth", "--type '%s': expected f32 or f16", optarg);
            break;
        case 'L':
            if ((rc = hx_parse_int("synth", "--layers", optarg, 1, 1024, &o.n_layers))) return rc;
            break;
        case 'V': vocab = optarg; break;
        case 't':
            if ((rc = hx_parse_int("synth", "--threads", optarg, 1, 1024, &o.n_threads))) return rc;
            break;
        case 'l': syn_print_shapes(stdout); return HX_EXIT_OK;
        case 'j': json = 1; break;
        case 'h': syn_usage(); return HX_EXIT_OK;
        default:
            return hx_usage_error("synth", "unknown or incomplete option '%s'; "
                                  "see 'qprobe synth --help'", argv[optind - 1]);
        }
    }
    if (optind < argc) return hx_usage_error("synth", "unexpected argument '%s'", argv[optind]);
    if (arch && shape_name) return hx_usage_error("synth", "give --shape or --arch, not both");
    if (arch && !(o.shape = hx_synth_arch_shape(arch)))
        return hx_usage_error("synth", "unknown architecture '%s' (llama, qwen2, phi3, gemma2)", arch);
    if (!arch && !shape_name)
        return hx_usage_error("synth", "no shape given (--shape NAME or --arch A); "
                              "see 'qprobe synth --list-shapes'");
    if (!arch && !(o.shape = hx_synth_shape_find(shape_name)))
        return hx_usage_error("synth", "unknown shape '%s'; see 'qprobe synth --list-shapes'",
                              shape_name);
    if (!out) return hx_usage_error("synth", "no output given (-o OUT.gguf)");

    char vocab_buf[4096];
    int default_vocab = vocab == NULL;
    if (default_vocab && o.shape->vocab && *o.shape->vocab) {
        const char *root = getenv("QP_FIXTURES");
        if (!root || !*root) root = SYN_FIXTURES_DEFAULT;
        snprintf(vocab_buf, sizeof vocab_buf, "%s/%s", root, o.shape->vocab);
        vocab = vocab_buf;
    }
    o.vocab = vocab; // NULL: no tokenizer (byte-level BPE vocabularies are not loadable yet)

    struct syn_progress prog = {.tty = isatty(STDERR_FILENO), .t0 = qp_now()};
    o.progress = syn_progress_cb;
    o.progress_ctx = &prog;
    struct hx_synth_info info;
    char err[QP_ERRLEN];
    syn_stop = 0;
    o.stop = &syn_stop;
    signal(SIGINT, syn_on_signal);
    signal(SIGTERM, syn_on_signal);
    rc = hx_synth_write(&o, out, &info, err);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    if (prog.tty) fprintf(stderr, "\r\033[K");
    if (rc == QP_EINTR) {
        fprintf(stderr, "qprobe synth: interrupted; '%s' not written\n", out);
        return 130;
    }
    if (rc) {
        if (default_vocab && vocab && access(vocab, R_OK) != 0)
            return hx_usage_error("synth", "%s (pass --vocab FILE or set QP_FIXTURES)", err);
        return hx_usage_error("synth", "%s", err);
    }

    const char *tname = o.type == KN_F16 ? "f16" : "f32";
    if (json) {
        cJSON *j = cJSON_CreateObject();
        cJSON *ch = cJSON_CreateArray();
        for (int k = 0; k < HX_SYNTH_N_OUTLIERS; k++)
            cJSON_AddItemToArray(ch, cJSON_CreateNumber(info.outliers[k]));
        char seed[32];
        snprintf(seed, sizeof seed, "%llu", (unsigned long long)o.seed);
        cJSON_AddStringToObject(j, "path", out);
        cJSON_AddStringToObject(j, "shape", o.shape->name);
        cJSON_AddStringToObject(j, "seed", seed); // a string: 64-bit values exceed a double
        cJSON_AddStringToObject(j, "type", tname);
        cJSON_AddNumberToObject(j, "layers", info.n_layers);
        cJSON_AddNumberToObject(j, "params", (double)info.n_params);
        cJSON_AddNumberToObject(j, "data_bytes", (double)info.data_bytes);
        cJSON_AddNumberToObject(j, "seconds", info.seconds);
        cJSON_AddItemToObject(j, "outlier_channels", ch);
        hx_print_json(j);
    } else {
        printf("wrote '%s': %s, %d layers, %s, seed %llu, %.3f B weights, %.2f GB in %.1f s "
               "(%.0f MB/s)\n",
               out, o.shape->name, info.n_layers, tname, (unsigned long long)o.seed,
               (double)info.n_params / 1e9, (double)info.data_bytes / 1e9, info.seconds,
               info.seconds > 0 ? (double)info.data_bytes / info.seconds / 1e6 : 0.0);
        printf("outlier input channels (q/k/v/gate/up, x%g):", (double)HX_SYNTH_OUTLIER_SCALE);
        for (int k = 0; k < HX_SYNTH_N_OUTLIERS; k++) printf(" %d", info.outliers[k]);
        printf("\n");
    }
    return HX_EXIT_OK;
}
