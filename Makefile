# qprobe — one non-recursive Makefile.
#
#   make               build build/release/qprobe (installs missing Debian packages first)
#   make test          build and run every test case, each in its own process
#   make demo          run the main job on the fixture model and write report/
#   make bench         print the speed table
#   make bench-peer [LLAMA_CPP=DIR]   qprobe and llama.cpp side by side (docs/BENCH.md)
#   make VARIANT=debug|asan ...   other build variants under build/<variant>/
#   make asan-test     the whole suite under AddressSanitizer + UBSan
#   make reliability   every storage-fault position, kill -9 at 50 moments, concurrent writers
#   V=1                show full commands
#
#   make fixtures      the real models and data of fixtures/MANIFEST into FIXTURES (checked,
#                      downloaded when missing); make -s fixtures-dir prints that folder
#
# FIXTURES: where the real models and data are (never copied into the repository). Unless set,
# the first of ../shared/fixtures and this repository's fixtures/ that exists; fixtures/ when
# neither does (where `make fixtures` downloads them).

ifeq ($(origin FIXTURES),undefined)
FIXTURES := $(firstword $(wildcard ../shared/fixtures) fixtures)
endif
VARIANT ?= release
BUILD := build/$(VARIANT)

CC ?= cc
ifeq ($(origin CC),default)
CC := gcc
endif

# The layers, bottom to top (docs/ARCHITECTURE.md): each may include only from the ones before
# it; make check-layers enforces it.
LAYERS := kernels quantizers metrics tasks harness/io harness/store harness/run reports harness/cli
PKGS := sqlite3 libcjson openblas libpcre2-8
# Evaluated lazily (=), so that they see packages the setup step installs first.
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS = $(shell pkg-config --libs $(PKGS) 2>/dev/null)

GIT_COMMIT := $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)

WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 \
        -Wno-format-nonliteral -Werror
# No -ffast-math; -ffp-contract=off so that the scalar reference and the SIMD kernels perform
# exactly the operations written (fused multiply-adds only where a kernel asks for them).
BASE_CFLAGS := -std=c11 -D_GNU_SOURCE -fopenmp -ffp-contract=off -fno-math-errno $(WARN) \
               -MMD -MP $(LAYERS:%=-I%) -DQP_COMMIT=\"$(GIT_COMMIT)\"

ifeq ($(VARIANT),release)
OPT := -O2 -g
else ifeq ($(VARIANT),debug)
OPT := -O0 -g3
else ifeq ($(VARIANT),asan)
OPT := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
else
$(error unknown VARIANT '$(VARIANT)': use release, debug or asan)
endif

CFLAGS_ALL = $(BASE_CFLAGS) $(OPT) $(PKG_CFLAGS) $(CFLAGS)
LDLIBS_ALL = $(OPT) -fopenmp $(PKG_LIBS) -lm $(LDLIBS)

# Per-ISA kernel files are compiled with that ISA's flags only; the rest is baseline x86-64.
ISA_AVX2 := -mavx2 -mfma -mf16c
ISA_AVX512 := -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mavx2 -mfma -mf16c

LIB_SRC := $(filter-out harness/cli/hx_main.c,$(foreach d,$(LAYERS),$(wildcard $(d)/*.c)))
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o)
MAIN_OBJ := $(BUILD)/harness/cli/hx_main.o
LIB := $(BUILD)/libqprobe.a
BIN := $(BUILD)/qprobe

TEST_SRC := $(wildcard tests/test_*.c)
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
TEST_FW := $(BUILD)/tests/qp_test.o

DEPS_STAMP := build/.deps-ok

ifeq ($(V),1)
Q :=
else
Q := @
endif

.SECONDARY:
.PHONY: all test asan-test demo bench bench-peer clean deps check-fixtures results check-layers made-fixtures fixtures fixtures-dir
all: $(BIN)

$(DEPS_STAMP):
	@mkdir -p build
	@if ! pkg-config --exists $(PKGS) 2>/dev/null || ! command -v gnuplot >/dev/null 2>&1; then \
	    sh scripts/setup-deps.sh || exit 1; \
	fi
	@pkg-config --exists $(PKGS) || { echo "qprobe: pkg-config cannot find: $(PKGS) (install libsqlite3-dev libcjson-dev libopenblas-dev libpcre2-dev)" >&2; exit 1; }
	@touch $@

deps: $(DEPS_STAMP)

$(BUILD)/%.o: %.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS_ALL) -c $< -o $@

$(BUILD)/kernels/%_avx2.o: kernels/%_avx2.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $< (avx2)")
	$(Q)$(CC) $(CFLAGS_ALL) $(ISA_AVX2) -c $< -o $@

$(BUILD)/quantizers/%_avx2.o: quantizers/%_avx2.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $< (avx2)")
	$(Q)$(CC) $(CFLAGS_ALL) $(ISA_AVX2) -c $< -o $@

$(BUILD)/kernels/%_avx512.o: kernels/%_avx512.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $< (avx512)")
	$(Q)$(CC) $(CFLAGS_ALL) $(ISA_AVX512) -c $< -o $@

# The commit is compiled into store.o (it is part of every run's identity) and main.o (qprobe
# --version): rebuild them when HEAD moves, through a stamp that changes only then.
COMMIT_STAMP := $(BUILD)/.commit
$(COMMIT_STAMP): FORCE | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	@echo '$(GIT_COMMIT)' | cmp -s - $@ 2>/dev/null || echo '$(GIT_COMMIT)' > $@
$(BUILD)/harness/store/hx_store.o: $(COMMIT_STAMP)
$(BUILD)/harness/cli/hx_main.o: $(COMMIT_STAMP)
.PHONY: FORCE
FORCE:

$(LIB): $(LIB_OBJ)
	@$(if $(Q),echo "  AR      $@")
	$(Q)rm -f $@ && ar rcs $@ $^

$(BIN): $(MAIN_OBJ) $(LIB)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) -o $@ $^ $(LDLIBS_ALL)

$(BUILD)/tests/%.o: tests/%.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS_ALL) -Itests -Wno-missing-prototypes -c $< -o $@

$(BUILD)/tests/test_%: $(BUILD)/tests/test_%.o $(TEST_FW) $(LIB)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) -o $@ $^ $(LDLIBS_ALL)

check-layers:
	@scripts/check-layers.sh

# The made fixture files (cut from the shared text by fixtures/MANIFEST) that some tests read;
# without the shared text the tests that need them skip and say so.
made-fixtures:
	@if [ -f "$(FIXTURES)/data/tinystories/tinystories_val.txt" ]; then \
	    scripts/fixtures.sh "$(FIXTURES)" made/tinystories-calib.txt made/tinystories-eval.txt >/dev/null; fi

test: check-layers made-fixtures $(BIN) $(TEST_BIN)
	@QP_FIXTURES="$(abspath $(FIXTURES))" QPROBE_FIXTURES="$(abspath $(FIXTURES))" QP_BIN="$(abspath $(BIN))" QP_ROOT="$(CURDIR)" \
	    tests/run.sh $(abspath $(TEST_BIN))

asan-test:
	@$(MAKE) --no-print-directory VARIANT=asan test

check-fixtures:
	@test -f "$(FIXTURES)/models/llama2c/stories260K.bin" || { \
	    echo "qprobe: fixtures not found at '$(FIXTURES)': run 'make fixtures' (downloads them, fixtures/MANIFEST) or set FIXTURES=..." >&2; exit 2; }
	@scripts/fixtures.sh "$(FIXTURES)" made/tinystories-calib.txt made/tinystories-eval.txt >/dev/null

fixtures:
	@scripts/fixtures.sh "$(FIXTURES)"

fixtures-dir:
	@echo "$(abspath $(FIXTURES))"

demo: $(BIN) check-fixtures
	@FIXTURES="$(FIXTURES)" QPROBE="$(BIN)" scripts/demo.sh

results: $(BIN) check-fixtures
	@FIXTURES="$(FIXTURES)" QPROBE="$(BIN)" scripts/results.sh

bench: $(BIN) check-fixtures
	@FIXTURES="$(FIXTURES)" QPROBE="$(BIN)" scripts/bench.sh

bench-peer: $(BIN) check-fixtures
	@FIXTURES="$(FIXTURES)" QPROBE="$(BIN)" LLAMA_CPP="$(LLAMA_CPP)" scripts/bench-peer.sh
	@FIXTURES="$(FIXTURES)" QPROBE="$(BIN)" scripts/quant_ppl.sh

clean:
	rm -rf build

-include $(LIB_OBJ:.o=.d) $(MAIN_OBJ:.o=.d) $(TEST_BIN:=.d) $(TEST_FW:.o=.d)
-include tests/fuzz/fuzz.mk
include tests/reliability.mk
