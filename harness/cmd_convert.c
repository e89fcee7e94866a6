// cmd_convert.c — `qprobe convert`: writes a model (any readable format) as a GGUF that
// llama.cpp loads, with its tokenizer; F32 or F16 matrices.
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "gguf_model.h"
#include "model.h"
#include "qp.h"

static void conv_usage(void) {
    printf("usage: qprobe convert -m MODEL [-z TOKENIZER] -o OUT.gguf [--type f32|f16]\n\n"
           "Writes MODEL as GGUF (llama architecture, llama.cpp tensor names and tokenizer keys).\n"
           "The file is written atomically: a failed run leaves no partial OUT.\n\n"
           "  -m, --model FILE      llama2.c .bin, GGUF, or safetensors directory\n"
           "  -z, --tokenizer FILE  llama2.c tokenizer.bin to embed (GGUF inputs carry their own)\n"
           "  -o, --output FILE     the GGUF to write\n"
           "      --type T          f32 (default) or f16 for the 2-D weights; norms stay f32\n");
}

int hx_cmd_convert(int argc, char **argv) {
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"tokenizer", required_argument, 0, 'z'},
        {"output", required_argument, 0, 'o'}, {"type", required_argument, 0, 'T'},
        {"help", no_argument, 0, 'h'},        {0, 0, 0, 0}};
    const char *model_path = NULL, *tok_path = NULL, *out = NULL;
    int type = KN_F32, c, rc;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "m:z:o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_path = optarg; break;
        case 'z': tok_path = optarg; break;
        case 'o': out = optarg; break;
        case 'T':
            if (strcmp(optarg, "f32") == 0) type = KN_F32;
            else if (strcmp(optarg, "f16") == 0) type = KN_F16;
            else return hx_usage_error("convert", "--type '%s': expected f32 or f16", optarg);
            break;
        case 'h': conv_usage(); return 0;
        default:
            return hx_usage_error("convert", "unknown or incomplete option '%s'; see 'qprobe convert --help'",
                                  argv[optind - 1]);
        }
    }
    if (optind < argc) return hx_usage_error("convert", "unexpected argument '%s'", argv[optind]);
    if (!out) return hx_usage_error("convert", "no output given (-o OUT.gguf)");
    struct hx_model *m;
    if ((rc = hx_open_model("convert", model_path, tok_path, 0, &m))) return rc;
    char err[QP_ERRLEN];
    rc = hx_gguf_model_write(&m->w, m->tok, out, type, err);
    hx_model_close(m);
    if (rc) return hx_usage_error("convert", "%s", err);
    return HX_EXIT_OK;
}
