# reliability.mk — the fault-injection shim and the exhaustive reliability runs. Included by the
# main Makefile.
#
#   make reliability     every storage-fault position (tests/test_fault.c), kill -9 at 50
#                        moments (tests/test_crash.c) and the concurrent-writer races 20 times
#                        each, with QP_RELIABILITY=1; prints each case's summary. About 40
#                        minutes on 2 busy cores.
#
# libqpfault.so (tests/fault/qp_fault.c) is a test-only SQLite VFS shim that a test preloads into
# the real qprobe (LD_PRELOAD) to fail the N-th write, sync or truncate; it is built with the
# tests and never linked into qprobe. Not sanitized in the asan variant (it only forwards calls).

FAULT_SO := $(BUILD)/tests/libqpfault.so
RELIABILITY_CASES := \
    test_fault:storage_faults_while_storing_variants_should_fail_cleanly_and_resume_identically \
    test_fault:storage_faults_while_creating_a_study_should_fail_cleanly_and_resume_identically \
    test_crash:sigkill_at_many_moments_should_lose_nothing_finished_and_resume_identically \
    test_concurrent:two_evals_of_a_new_study_should_both_store_their_variant \
    test_concurrent:two_sweeps_of_one_configuration_should_store_each_variant_once \
    test_concurrent:two_sweeps_into_different_runs_of_one_database_should_both_finish

.PHONY: reliability

# make test needs the shim too (test_fault preloads it).
test: $(FAULT_SO)

$(FAULT_SO): tests/fault/qp_fault.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  SO      $@")
	$(Q)$(CC) $(filter-out -fopenmp,$(BASE_CFLAGS)) -O2 -fPIC -shared -o $@ $< $(shell pkg-config --libs sqlite3)

reliability: check-layers $(BIN) $(TEST_BIN) $(FAULT_SO)
	@QP_FIXTURES="$(abspath $(FIXTURES))" QP_BIN="$(abspath $(BIN))" QP_ROOT="$(CURDIR)" QP_RELIABILITY=1 \
	    sh tests/reliability.sh $(abspath $(BUILD)/tests) $(RELIABILITY_CASES)
