# fuzz.mk — coverage-guided fuzzing of qprobe's parsers with libFuzzer (clang, ASan + UBSan).
# Included by the main Makefile; the targets are tests/fuzz/fuzz_NAME.c (see tests/fuzz/fuzz.h).
#
#   make fuzz [FUZZ_SECONDS=30] [FUZZ_TARGETS="gguf spec"]   build, then run each target N s
#   make -j2 fuzz ...                                          two targets at a time
#   make fuzz-smoke                                            5 s per target (CI)
#   make fuzz-build                                            only build build/fuzz/fuzz_NAME
#   make fuzz-seeds                                            rewrite tests/fuzz/corpus/ seeds
#   make fuzz FUZZ_RECORD=1 ...     also log each run in tests/fuzz/log/NAME.tsv (the campaign)
#   make fuzz-merge [FUZZ_TARGETS=...]   minimise the grown corpus into tests/fuzz/corpus/NAME
#   make fuzz-table                 regenerate docs/FUZZ.md's table from tests/fuzz/log/
#   make fuzz ... FUZZ_SANITIZERS=undefined   the volume build: UBSan without ASan (below)
#
# A dictionary tests/fuzz/dict/NAME.dict, when present, is passed to the target (-dict).
# Each target links the parser sources it needs (FUZZ_LIB_SRC), compiled here with clang and
# -fsanitize=fuzzer-no-link,address,undefined into build/fuzz/obj/; the rest of qprobe is not
# linked. A run starts from the seeds in tests/fuzz/corpus/NAME (plus shared fixture files
# for some targets) and grows a working corpus in build/fuzz/corpus/NAME; it prints the
# executions it made. A crash, leak, hang (> 10 s per input), > 2 GB of memory or a failed check
# fails the run (non-zero exit) and leaves the input in build/fuzz/artifacts/NAME/: once the
# bug is fixed, copy it into tests/fuzz/regress/NAME/, where test_fuzz_regress replays it on
# every `make test`.

FUZZ_CC ?= clang
FUZZ_SECONDS ?= 30
FUZZ_DIR := build/fuzz

# The sanitizers the targets are built with. address,undefined (the default) is the build every
# finding, merge and replay uses. undefined leaves AddressSanitizer out, as OSS-Fuzz's separate
# UBSan builds do, for volume: 1.6x the executions a second (docs/FUZZ.md, "Two builds"). Its
# binaries and objects live in build/fuzz/undefined/; the working corpus, artifacts and logs are
# shared, so that `make fuzz-merge` replays what it grew under ASan before keeping any of it.
FUZZ_SANITIZERS ?= address,undefined
ifeq ($(FUZZ_SANITIZERS),address,undefined)
FUZZ_BUILD := $(FUZZ_DIR)
else ifeq ($(FUZZ_SANITIZERS),undefined)
FUZZ_BUILD := $(FUZZ_DIR)/undefined
else
$(error FUZZ_SANITIZERS must be address,undefined or undefined, not '$(FUZZ_SANITIZERS)')
endif
FUZZ_ALL := gguf safetensors llama2c tokenizer_bin spec tokenize sweep_config gate_rules task_jsonl \
            tokenizer_json gguf_bpe config_json task_dataset text prompts refcache
FUZZ_TARGETS ?= $(FUZZ_ALL)

# The whole library (LIB_SRC), compiled with the fuzz flags into one archive: a target links
# what it calls and nothing else, and a parser that starts calling another module needs no edit
# here (a hand-kept list of sources rotted as the CLI helpers grew).
FUZZ_LIB_SRC := $(LIB_SRC)
FUZZ_LIB_OBJ := $(FUZZ_LIB_SRC:%.c=$(FUZZ_BUILD)/obj/%.o)
FUZZ_LIB := $(FUZZ_BUILD)/libqprobe_fuzz.a
FUZZ_UTIL_OBJ := $(FUZZ_BUILD)/obj/tests/fuzz/fuzz_util.o
FUZZ_TARGET_OBJ := $(FUZZ_ALL:%=$(FUZZ_BUILD)/obj/tests/fuzz/fuzz_%.o)
FUZZ_BINS := $(FUZZ_ALL:%=$(FUZZ_BUILD)/fuzz_%)

# UBSan findings abort (so that libFuzzer records them) instead of printing and going on.
FUZZ_SAN := -fsanitize=$(FUZZ_SANITIZERS) -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_CFLAGS = $(BASE_CFLAGS) -O1 -g $(FUZZ_SAN) -fsanitize=fuzzer-no-link -DQP_LIBFUZZER \
              -fsanitize-coverage-ignorelist=tests/fuzz/coverage-ignore.txt -Itests/fuzz $(PKG_CFLAGS)

# Longest input per target: a few times the largest seed, and enough for the real tokenizer
# files added as extra seeds (tok512.bin is 6 kB).
FUZZ_MAXLEN_gguf := 16384
FUZZ_MAXLEN_safetensors := 8192
FUZZ_MAXLEN_llama2c := 4096
FUZZ_MAXLEN_tokenizer_bin := 8192
FUZZ_MAXLEN_spec := 4200
FUZZ_MAXLEN_tokenize := 1024
FUZZ_MAXLEN_sweep_config := 4096
FUZZ_MAXLEN_gate_rules := 4096
FUZZ_MAXLEN_task_jsonl := 4096
FUZZ_MAXLEN_tokenizer_json := 8192
FUZZ_MAXLEN_gguf_bpe := 4096
FUZZ_MAXLEN_config_json := 4096
FUZZ_MAXLEN_task_dataset := 4096
FUZZ_MAXLEN_text := 1024
FUZZ_MAXLEN_prompts := 4096
# refcache edits the genuine cache (4 bytes an edit); a raw file just over one header page
# reaches every header check (a whole genuine body cannot be guessed: its SHA-256 is checked).
FUZZ_MAXLEN_refcache := 4400

# Shared fixture directories added as read-only seed directories (skipped when absent; larger
# files are cut to the target's max_len).
FUZZ_EXTRA_gguf = $(FIXTURES)/models/gguf
FUZZ_EXTRA_tokenizer_bin = $(FIXTURES)/models/llama2c
FUZZ_EXTRA_tokenize = $(FIXTURES)/data/tinystories

FUZZ_RUNS := $(FUZZ_TARGETS:%=fuzz-run-%)

.PHONY: fuzz fuzz-smoke fuzz-build fuzz-seeds fuzz-merge fuzz-table fuzz-list $(FUZZ_ALL:%=fuzz-run-%) \
        $(FUZZ_ALL:%=fuzz-merge-%)

fuzz-build: $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/fuzz_%)

fuzz: $(FUZZ_RUNS)

fuzz-smoke:
	@$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=5

$(FUZZ_RUNS): fuzz-run-%: $(FUZZ_BUILD)/fuzz_%
	@QP_FIXTURES="$(abspath $(FIXTURES))" FUZZ_DICT=tests/fuzz/dict/$*.dict FUZZ_SANITIZERS=$(FUZZ_SANITIZERS) \
	    $(if $(FUZZ_RECORD),FUZZ_RECORD=tests/fuzz/log/$*.tsv) sh tests/fuzz/run.sh $* $< $(FUZZ_SECONDS) \
	    $(FUZZ_MAXLEN_$*) $(FUZZ_DIR) tests/fuzz/corpus/$* $(FUZZ_EXTRA_$*)

# Adds to tests/fuzz/corpus/NAME the inputs of the grown corpus that reach coverage the
# repository's corpus does not (libFuzzer -merge=1: smallest such inputs first); the seeds stay.
# First every input of the grown corpus runs once in the ASan build (-runs=0): the UBSan-only
# build grows the same corpus, and a merge skips an input that crashes without a word.
fuzz-merge: $(FUZZ_TARGETS:%=fuzz-merge-%)
ifneq ($(FUZZ_BUILD),$(FUZZ_DIR))
$(FUZZ_TARGETS:%=fuzz-merge-%):
	@echo "fuzz-merge replays under ASan: run it without FUZZ_SANITIZERS=$(FUZZ_SANITIZERS)" >&2; exit 2
else
$(FUZZ_TARGETS:%=fuzz-merge-%): fuzz-merge-%: $(FUZZ_DIR)/fuzz_%
	@mkdir -p tests/fuzz/corpus/$* $(FUZZ_DIR)/corpus/$*
	@n0=$$(ls tests/fuzz/corpus/$* | wc -l); \
	export QP_FIXTURES="$(abspath $(FIXTURES))" TMPDIR=$$( [ -w /dev/shm ] && echo /dev/shm || echo /tmp ); \
	mkdir -p $(FUZZ_DIR)/artifacts/$* $(FUZZ_DIR)/logs; \
	$< -runs=0 -max_len=$(FUZZ_MAXLEN_$*) -timeout=10 -rss_limit_mb=2048 \
	    -artifact_prefix=$(FUZZ_DIR)/artifacts/$*/ $(FUZZ_DIR)/corpus/$* > $(FUZZ_DIR)/logs/$*.replay.log 2>&1 || \
	    { tail -n 30 $(FUZZ_DIR)/logs/$*.replay.log; echo "fuzz-merge $*: an input of $(FUZZ_DIR)/corpus/$* fails under ASan (saved in $(FUZZ_DIR)/artifacts/$*/)" >&2; exit 1; }; \
	$< -merge=1 -max_len=$(FUZZ_MAXLEN_$*) -timeout=10 -rss_limit_mb=2048 tests/fuzz/corpus/$* \
	    $(FUZZ_DIR)/corpus/$* > $(FUZZ_DIR)/logs/$*.merge.log 2>&1 || { tail -n 20 $(FUZZ_DIR)/logs/$*.merge.log; exit 1; }; \
	echo "fuzz-merge $*: $$n0 -> $$(ls tests/fuzz/corpus/$* | wc -l) inputs in tests/fuzz/corpus/$*"
endif

fuzz-list:
	@echo $(FUZZ_ALL)

fuzz-table:
	@sh tests/fuzz/table.sh tests/fuzz/log tests/fuzz/corpus docs/FUZZ.md

$(FUZZ_BUILD)/obj/%.o: %.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  FUZZCC  $<")
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -c $< -o $@

# Per-ISA files with their ISA's flags, as in the main build.
$(FUZZ_BUILD)/obj/%_avx2.o: %_avx2.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  FUZZCC  $< (avx2)")
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) $(ISA_AVX2) -c $< -o $@

$(FUZZ_BUILD)/obj/%_avx512.o: %_avx512.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  FUZZCC  $< (avx512)")
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) $(ISA_AVX512) -c $< -o $@

$(FUZZ_LIB): $(FUZZ_LIB_OBJ)
	@$(if $(Q),echo "  AR      $@")
	$(Q)rm -f $@ && ar rcs $@ $^

$(FUZZ_BINS): $(FUZZ_BUILD)/fuzz_%: $(FUZZ_BUILD)/obj/tests/fuzz/fuzz_%.o $(FUZZ_UTIL_OBJ) \
                                   $(FUZZ_LIB)
	@$(if $(Q),echo "  FUZZLD  $@")
	$(Q)$(FUZZ_CC) -fsanitize=fuzzer $(FUZZ_SAN) -fopenmp -o $@ $^ $(PKG_LIBS) -lm

# The seed generator is an ordinary program built against the release library.
$(FUZZ_DIR)/make_seeds: tests/fuzz/make_seeds.c $(LIB)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS_ALL) -o $@ $< $(LIB) $(LDLIBS_ALL)

fuzz-seeds: $(FUZZ_DIR)/make_seeds
	$(FUZZ_DIR)/make_seeds tests/fuzz/corpus

-include $(FUZZ_LIB_OBJ:.o=.d) $(FUZZ_UTIL_OBJ:.o=.d) $(FUZZ_TARGET_OBJ:.o=.d) \
         $(FUZZ_DIR)/make_seeds.d
