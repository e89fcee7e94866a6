// cmd_convert.c — `qprobe convert`: writes a model (any readable format) as a GGUF that
// llama.cpp loads (F32/F16 matrices, llama.cpp blocks with -q, qat: trained first), or as a
// Hugging Face safetensors directory. parse -> variant -> write.
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "hx_cli.h"
#include "hx_gguf_model.h"
#include "hx_model.h"
#include "hx_safetensors.h"
#include "qp.h"
#include "qz_spec.h"
#include "hx_variant.h"
#include "hx_calib.h"
#include "hx_exit.h"
#include "hx_tokenizer.h"

static void conv_usage(void) {
    printf("usage: qprobe convert -m MODEL [-z TOKENIZER] -o OUT.gguf [--type f32|f16 | -q SPEC]\n"
           "                      [--calib FILE [--calib-seqs N] [--calib-len L] [-t N]]\n"
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
           "                        q4_k_m, q4_k;name~ffn_down=q6_k, ...) and write its blocks, or\n"
           "                        train it first with qat: (docs/QAT.md; needs --calib): qat:q4_0\n"
           "                        and the other llama.cpp grids are written as blocks, qat:bits=B\n"
           "                        grids as their f32 values\n"
           "      --calib FILE      training text for qat: (--calib-seqs, default 128 windows of\n"
           "                        --calib-len tokens, default 512 or the model's context)\n"
           "  -t, --threads N       threads for qat: training (default all CPUs)\n\n"
           "examples:\n"
           "  qprobe convert -m stories260K.bin -z tok512.bin -o stories260K.gguf\n"
           "  qprobe convert -m ./tinyllama-safetensors -o tinyllama-f16.gguf --type f16\n"
           "  qprobe convert -m stories260K.gguf -o stories260K-q4_k_m.gguf -q q4_k_m\n"
           "  qprobe convert -m stories260K.gguf -o qat-q4_0.gguf -q qat:q4_0 --calib train.txt\n"
           "  qprobe convert -m g2.gguf --safetensors -o g2-hf\n");
}

// -q qat:...: trains on the calibration windows (harness/run/hx_qat.h), then writes the variant's
// tensors as they are (blocks for llama.cpp grids, f32 values for RTN grids).
static int conv_qat(struct hx_model *m, const struct qz_variant *v, const char *calib, int seqs, int len, int threads,
                    const char *out, char *err) {
    char *text = NULL, why[QP_ERRLEN];
    size_t n;
    struct hx_calib *cal = NULL;
    struct hx_quant_model *q = NULL;
    if (!m->tok) return qp_fail(err, QP_EINVAL, "qat: needs the model's tokenizer for --calib (-z TOKENIZER)");
    int rc = hx_read_text(calib, &text, &n, err);
    if (!rc && (rc = hx_calib_create(m->tok, text, n, seqs, QP_MIN(len, m->w.cfg.seq_len), &cal, why)))
        qp_fail(err, rc, "cannot use '%s': %s", calib, why);
    if (!rc) {
        cal->n_threads = threads;
        rc = hx_quant_model_create_calib(&m->w, v, cal, &q, err);
    }
    if (!rc) rc = hx_gguf_model_write_as_is(&q->w, m->tok, out, hx_llama_ftype(&v->base), err);
    hx_quant_model_destroy(q);
    hx_calib_destroy(cal);
    free(text);
    return rc;
}

struct conv_opts {
    const char *model_path, *tok_path, *out, *spec, *calib;
    enum kn_type type;
    int safetensors, calib_seqs, calib_len, threads;
};

// Options into o; HX_CLI_HELP when --help was printed, else 0 or a usage error's exit status.
static int conv_parse(int argc, char **argv, struct conv_opts *o) {
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"tokenizer", required_argument, 0, 'z'},
        {"output", required_argument, 0, 'o'}, {"type", required_argument, 0, 'T'},
        {"quant", required_argument, 0, 'q'}, {"safetensors", no_argument, 0, 'W'},
        {"calib", required_argument, 0, 'c'}, {"calib-seqs", required_argument, 0, 'S'},
        {"calib-len", required_argument, 0, 'L'}, {"threads", required_argument, 0, 't'},
        {"help", no_argument, 0, 'h'},        {0, 0, 0, 0}};
    *o = (struct conv_opts){.type = KN_F32, .calib_seqs = HX_CALIB_SEQS, .calib_len = HX_CALIB_LEN,
                            .threads = qp_cpu_count()};
    int c, rc = 0;
    optind = 1;
    opterr = 0;
    while (!rc && (c = getopt_long(argc, argv, "m:z:o:q:t:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': o->model_path = optarg; break;
        case 'z': o->tok_path = optarg; break;
        case 'o': o->out = optarg; break;
        case 'T':
            if (strcmp(optarg, "f32") == 0) o->type = KN_F32;
            else if (strcmp(optarg, "f16") == 0) o->type = KN_F16;
            else if (strcmp(optarg, "bf16") == 0) o->type = KN_BF16;
            else return hx_usage_error("convert", "--type '%s': expected f32, f16 or bf16", optarg);
            break;
        case 'q': o->spec = optarg; break;
        case 'W': o->safetensors = 1; break;
        case 'c': o->calib = optarg; break;
        case 'S': rc = hx_parse_int("convert", "--calib-seqs", optarg, 1, 1 << 20, &o->calib_seqs); break;
        case 'L': rc = hx_parse_int("convert", "--calib-len", optarg, 2, 1 << 20, &o->calib_len); break;
        case 't': rc = hx_parse_int("convert", "-t", optarg, 1, 256, &o->threads); break;
        case 'h': conv_usage(); return HX_CLI_HELP;
        default: return hx_unknown_option("convert", argv);
        }
    }
    if (rc) return rc;
    if (optind < argc) return hx_usage_error("convert", "unexpected argument '%s'", argv[optind]);
    if (!o->out) return hx_usage_error("convert", "no output given (-o OUT.gguf)");
    if (o->type == KN_BF16 && !o->safetensors) return hx_usage_error("convert", "--type bf16 is for --safetensors only");
    if (o->safetensors && o->spec) return hx_usage_error("convert", "-q writes llama.cpp blocks, which only GGUF holds");
    return 0;
}

// The variant of -q SPEC (NULL without one): 0 or a usage error's exit status.
static int conv_variant(const struct conv_opts *o, struct qz_variant **out) {
    char err[QP_ERRLEN];
    *out = NULL;
    if (!o->spec) return 0;
    struct qz_variant *v;
    if (qz_variant_parse(o->spec, &v, err)) return hx_usage_error("convert", "%s", err);
    enum qz_method me = v->base.method;
    if (me == QZ_QAT && !o->calib) {
        qz_variant_destroy(v);
        return hx_usage_error("convert", "-q '%s': qat: trains on calibration text: add --calib FILE", o->spec);
    }
    if (me != QZ_GGML && me != QZ_GGML_MIX && me != QZ_F16 && me != QZ_F32 && me != QZ_QAT) {
        qz_variant_destroy(v);
        return hx_usage_error("convert", "-q '%s': only llama.cpp formats (f16, q8_0 ... q6_k, iq4_nl, mixes) can be written as GGUF; other specs run as fake quantization", o->spec);
    }
    *out = v;
    return 0;
}

// Writes m as o asks (v: the -q variant or NULL); 0 or a QP_E* code with err.
static int conv_write(const struct conv_opts *o, struct hx_model *m, const struct qz_variant *v, char *err) {
    if (o->safetensors) {
        if (mkdir(o->out, 0755) != 0 && errno != EEXIST)
            return qp_fail(err, QP_EIO, "cannot create directory '%s': %s", o->out, strerror(errno));
        return hx_safetensors_write(&m->w, o->out, o->type, err);
    }
    if (v && v->base.method == QZ_QAT)
        return conv_qat(m, v, o->calib, o->calib_seqs, o->calib_len, o->threads, o->out, err);
    if (!v) return hx_gguf_model_write(&m->w, m->tok, o->out, o->type, err);
    struct hx_quant_model *q = NULL;
    int rc = hx_quant_model_create(&m->w, v, &q, err);
    if (!rc) rc = hx_gguf_model_write_as_is(&q->w, m->tok, o->out, hx_llama_ftype(&v->base), err);
    hx_quant_model_destroy(q);
    return rc;
}

int hx_cmd_convert(int argc, char **argv) {
    struct conv_opts o;
    struct qz_variant *v = NULL;
    int rc = conv_parse(argc, argv, &o);
    if (rc) return rc == HX_CLI_HELP ? HX_EXIT_OK : rc;
    if ((rc = conv_variant(&o, &v))) return rc;
    struct hx_model *m;
    if ((rc = hx_open_model("convert", o.model_path, o.tok_path, 0, &m))) {
        qz_variant_destroy(v);
        return rc;
    }
    char err[QP_ERRLEN];
    rc = conv_write(&o, m, v, err);
    qz_variant_destroy(v);
    hx_model_close(m);
    if (rc) return hx_fail("convert", rc, "%s", err);
    return HX_EXIT_OK;
}
