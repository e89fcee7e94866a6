// fuzz.h — the fuzz targets of qprobe's parsers and the helpers they share.
//
// Every target is a plain function `int fuzz_NAME(const uint8_t *data, size_t size)` in
// tests/fuzz/fuzz_NAME.c that feeds arbitrary bytes to one parser and checks what it returns.
// Built with -DQP_LIBFUZZER (tests/fuzz/fuzz.mk) each file also defines LLVMFuzzerTestOneInput;
// built without, tests/test_fuzz_regress.c includes the files and replays saved inputs.
// A broken property calls fuzz_fail, which prints the reason and aborts: libFuzzer saves the
// input as a crash, the regression test case dies and fails. The targets always return 0.
//
// Depends on libc/POSIX and the harness headers (model.h, tokenizer.h) only.
#ifndef QP_FUZZ_H
#define QP_FUZZ_H

#include <stddef.h>
#include <stdint.h>

struct hx_model;
struct hx_tok;
struct task_suite;

// ---------------------------------------------------------------------------------------------
// Targets

int fuzz_gguf(const uint8_t *data, size_t size);
int fuzz_safetensors(const uint8_t *data, size_t size);
int fuzz_llama2c(const uint8_t *data, size_t size);
int fuzz_tokenizer_bin(const uint8_t *data, size_t size);
int fuzz_spec(const uint8_t *data, size_t size);
int fuzz_tokenize(const uint8_t *data, size_t size);
int fuzz_sweep_config(const uint8_t *data, size_t size);
int fuzz_gate_rules(const uint8_t *data, size_t size);
int fuzz_task_jsonl(const uint8_t *data, size_t size);
int fuzz_tokenizer_json(const uint8_t *data, size_t size);
int fuzz_gguf_bpe(const uint8_t *data, size_t size);
int fuzz_config_json(const uint8_t *data, size_t size);
int fuzz_task_dataset(const uint8_t *data, size_t size);
int fuzz_text(const uint8_t *data, size_t size);
int fuzz_prompts(const uint8_t *data, size_t size);
int fuzz_refcache(const uint8_t *data, size_t size);

// fuzz_tokenize encodes with a real tokenizer: this llama2.c tokenizer.bin of vocab_size tokens.
// Without a call, the first fuzz_tokenize loads $QP_FIXTURES/models/llama2c/tok512.bin (512
// tokens; QP_FIXTURES defaults to ../shared/fixtures). 0, or a QP_E* code with err (QP_ERRLEN
// bytes). The tokenizer lives until the process ends.
int fuzz_tokenize_init(const char *path, int vocab_size, char *err);

// fuzz_prompts encodes with the same tokenizer (its own copy): tok512.bin from root
// ($QP_FIXTURES, else ../shared/fixtures, when never called). 0, or a QP_E* code with err.
int fuzz_prompts_init(const char *root, char *err);

// fuzz_refcache builds two genuine reference caches of stories260K (root/models/llama2c) with
// qprobe's own reference pass into the scratch directory, once per process. 0, or a QP_E* code.
int fuzz_refcache_init(const char *root, char *err);

// ---------------------------------------------------------------------------------------------
// Helpers (fuzz_util.c)

// Reports a broken property ("fuzz: FILE:LINE: ...") on stderr and aborts.
_Noreturn void fuzz_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

// Reports a failed FUZZ_CHECK: the condition's text, then the formatted details.
_Noreturn void fuzz_check_failed(const char *file, int line, const char *cond, const char *fmt,
                                 ...) __attribute__((format(printf, 4, 5)));

// FUZZ_CHECK(cond, fmt, ...): a property of what a parser returned; the details say why.
#define FUZZ_CHECK(cond, ...)                                                                  \
    do {                                                                                       \
        if (!(cond)) fuzz_check_failed(__FILE__, __LINE__, #cond, __VA_ARGS__);                \
    } while (0)

#define FUZZ_PATH_MAX 4096

// Writes data[0..size) to NAME in this process's scratch directory (created on first use
// under $QP_TMP, else $TMPDIR, else the system's temporary directory; removed at exit) and puts
// the file's path into path (FUZZ_PATH_MAX bytes). NAME has no '/'. Aborts when it cannot write:
// a fuzz run without its input file would test nothing.
void fuzz_write(const char *name, const void *data, size_t size, char *path);

// The path NAME would have in the scratch directory (registered for removal at exit).
void fuzz_path(const char *name, char *path);

// 1 when s[0..n) is well-formed UTF-8 by RFC 3629 (no overlong forms, no surrogates, nothing
// above U+10FFFF); an empty string is. Independent of qprobe's own validator.
int fuzz_utf8_ok(const uint8_t *s, size_t n);

// Reads every byte of p[0..n) (so that a range past a buffer or mapping faults or is reported
// by AddressSanitizer) and returns a checksum the caller may ignore.
uint32_t fuzz_touch(const void *p, size_t n);

// Checks a model hx_model_open accepted, which came from a file of file_size bytes: the
// weights pass kn_weights_check, every tensor's bytes lie inside the file mapping (llama2.c,
// safetensors), inside its GGUF tensor (GGUF) or in a buffer the model owns, and its tokenizer,
// if any, matches the vocabulary and passes fuzz_check_tok.
void fuzz_check_model(const struct hx_model *m, size_t file_size);

// Checks a loaded tokenizer: special ids inside the vocabulary, every token readable, and
// encoding `text` (and a fixed sample) gives at most len + 2 ids, all in range, starting with
// BOS when asked for.
void fuzz_check_tok(const struct hx_tok *t, const uint8_t *text, size_t len);

// Checks a task suite a reader accepted: every item has a context and choices; multiple choice
// has >= 2 non-empty choices and gold in range, cloze one non-empty target. Returns the items.
int fuzz_check_suite(const struct task_suite *s);

#endif
