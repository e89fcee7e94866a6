// cmd_convert.c — `qprobe convert`: writes a model (any readable format) as a GGUF that
// llama.cpp loads, with its tokenizer; F32 or F16 matrices.
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "hx_cli.h"
#include "hx_gguf_model.h"
#include "hx_model.h"
#include "hx_safetensors.h"
#include "qp.h"
#include "qz_spec.h"
#include "hx_variant.h"

static void conv_usage(void) {
    printf("usage: qprobe convert -m MODEL [-z TOKENIZER] -o OUT.gguf [--type f32|f16 | -q SPEC]\n"
           "       qprobe convert -m MODEL --safetensors -o DIR [--type f32|f16|bf16]\n\n"
           "Writes MODEL as GGUF (its family's llama.cpp architecture, tensor names and tokenizer\n"
           "keys), or as a Hugging Face directory (model.safetensors + config.json of the family's\n"
           "class: Llama/Mistral, Qwen2, Phi3, Gemma2ForCausalLM). Files are written atomically:\n"
           "a failed run leaves no partial OUT.\n\n"
           "  -m, --model FILE      llama2.c .bin, GGUF, or safetensors directory\n"
           "  -z, --tokenizer FILE  llama2.c tokenizer.bin to embed (GGUF inputs carry their own)\n"
           "  -o, --output FILE     the GGUF to write\n"
           "      --type T          f32 (default) or f16 for the 2-D weights; norms stay f32\n"
           "                        (safetensors: every tensor, also bf16)\n"
           "      --safetensors     write the directory OUT (created if missing) instead of GGUF\n"
           "  -q, --quant SPEC      quantize first with a llama.cpp-format spec (q8_0, q4_0,\n"
           "                        q4_k_m, q4_k;name~ffn_down=q6_k, ...) and write its blocks\n");
}

int hx_cmd_convert(int argc, char **argv) {
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"tokenizer", required_argument, 0, 'z'},
        {"output", required_argument, 0, 'o'}, {"type", required_argument, 0, 'T'},
        {"quant", required_argument, 0, 'q'}, {"safetensors", no_argument, 0, 'S'},
        {"help", no_argument, 0, 'h'},        {0, 0, 0, 0}};
    const char *model_path = NULL, *tok_path = NULL, *out = NULL, *spec = NULL;
    int type = KN_F32, c, rc, st = 0;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "m:z:o:q:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_path = optarg; break;
        case 'z': tok_path = optarg; break;
        case 'o': out = optarg; break;
        case 'T':
            if (strcmp(optarg, "f32") == 0) type = KN_F32;
            else if (strcmp(optarg, "f16") == 0) type = KN_F16;
            else if (strcmp(optarg, "bf16") == 0) type = KN_BF16;
            else return hx_usage_error("convert", "--type '%s': expected f32, f16 or bf16", optarg);
            break;
        case 'q': spec = optarg; break;
        case 'S': st = 1; break;
        case 'h': conv_usage(); return 0;
        default:
            return hx_usage_error("convert", "unknown or incomplete option '%s'; see 'qprobe convert --help'",
                                  argv[optind - 1]);
        }
    }
    if (optind < argc) return hx_usage_error("convert", "unexpected argument '%s'", argv[optind]);
    if (!out) return hx_usage_error("convert", "no output given (-o OUT.gguf)");
    if (type == KN_BF16 && !st) return hx_usage_error("convert", "--type bf16 is for --safetensors only");
    if (st && spec) return hx_usage_error("convert", "-q writes llama.cpp blocks, which only GGUF holds");
    char err[QP_ERRLEN];
    struct qz_variant *v = NULL;
    if (spec) {
        if (qz_variant_parse(spec, &v, err)) return hx_usage_error("convert", "%s", err);
        enum qz_method me = v->base.method;
        if (me != QZ_GGML && me != QZ_GGML_MIX && me != QZ_F16 && me != QZ_F32) {
            qz_variant_destroy(v);
            return hx_usage_error("convert", "-q '%s': only llama.cpp formats (f16, q8_0 ... q6_k, iq4_nl, mixes) can be written as GGUF; other specs run as fake quantization", spec);
        }
    }
    struct hx_model *m;
    if ((rc = hx_open_model("convert", model_path, tok_path, 0, &m))) {
        qz_variant_destroy(v);
        return rc;
    }
    if (st) {
        if (mkdir(out, 0755) != 0 && errno != EEXIST)
            rc = qp_fail(err, QP_EIO, "cannot create directory '%s': %s", out, strerror(errno));
        else
            rc = hx_safetensors_write(&m->w, out, type, err);
    } else if (v) {
        struct hx_quant_model *q = NULL;
        rc = hx_quant_model_create(&m->w, v, &q, err);
        if (!rc) rc = hx_gguf_model_write_as_is(&q->w, m->tok, out, hx_llama_ftype(&v->base), err);
        hx_quant_model_destroy(q);
        qz_variant_destroy(v);
    } else {
        rc = hx_gguf_model_write(&m->w, m->tok, out, type, err);
    }
    hx_model_close(m);
    if (rc) return hx_usage_error("convert", "%s", err);
    return HX_EXIT_OK;
}
