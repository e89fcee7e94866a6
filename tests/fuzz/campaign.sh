#!/bin/sh
# campaign.sh — a long fuzzing campaign in the background: every target in turn, one at a time,
# at the lowest CPU priority, each slice logged in tests/fuzz/log/NAME.tsv (make fuzz
# FUZZ_RECORD=1). Rounds repeat until HOURS have passed or the file STOP_FILE exists; a target
# whose logged executions (across all sessions) reach GOAL is left out of later rounds, so that
# the slow file-format targets get the time.
#
# Usage: tests/fuzz/campaign.sh [SLICE_SECONDS [HOURS [GOAL]]]   (defaults 300, 3, 10000000)
#   FUZZ_TARGETS="gguf spec"   only these targets (default: all of fuzz.mk's)
#   STOP_FILE                  default build/fuzz/STOP: touch it to end after the current slice
# Afterwards: make fuzz-merge (minimise the grown corpora into tests/fuzz/corpus/) and
# make fuzz-table (docs/FUZZ.md).
set -u
slice=${1:-300}
hours=${2:-3}
goal=${3:-10000000}
stop=${STOP_FILE:-build/fuzz/STOP}
targets=${FUZZ_TARGETS:-$(make -s --no-print-directory fuzz-list)}
rm -f "$stop"
end=$(( $(date +%s) + hours * 3600 ))

total() { awk -F '\t' '{ s += $4 } END { print s + 0 }' "tests/fuzz/log/$1.tsv" 2>/dev/null || echo 0; }

round=0
while [ "$(date +%s)" -lt "$end" ] && [ ! -e "$stop" ]; do
    round=$((round + 1))
    ran=0
    for t in $targets; do
        [ "$(date +%s)" -lt "$end" ] && [ ! -e "$stop" ] || break
        [ "$(total "$t")" -lt "$goal" ] || continue
        echo "campaign round $round: $t ($(total "$t") executions so far)"
        nice -n 19 make -s --no-print-directory "fuzz-run-$t" FUZZ_SECONDS="$slice" FUZZ_RECORD=1 || true
        ran=1
    done
    [ $ran -eq 1 ] || break # every target reached the goal
done
echo "campaign: done after $round rounds"
