#!/bin/sh
# run.sh — runs one libFuzzer target for a fixed time and prints one summary line:
#   fuzz NAME: RUNS runs in SECS s (EXEC/s), corpus +NEW new inputs, COV edges, peak RSS MB MB: ok
# On a crash, leak, timeout or failed check it prints the end of the log, where the input was
# saved, and exits non-zero.
#
# Usage: tests/fuzz/run.sh NAME BINARY SECONDS MAX_LEN OUT_DIR SEED_DIR...
#   OUT_DIR/corpus/NAME     working corpus (grows from run to run; first corpus dir)
#   OUT_DIR/artifacts/NAME  crashing inputs
#   OUT_DIR/logs/NAME.log   the full libFuzzer log
# Seed directories that do not exist are skipped (the shared fixtures may be absent).
#
# Environment:
#   FUZZ_DICT=FILE      a libFuzzer dictionary (fuzz.mk passes tests/fuzz/dict/NAME.dict)
#   FUZZ_RECORD=FILE    append one tab-separated line for this session to FILE (the campaign
#                       log tests/fuzz/log/NAME.tsv that docs/FUZZ.md's table is made from):
#                       date, commit, seconds, executions, edges, features, corpus, result,
#                       sanitizers (seconds: the time the fuzzer ran, shorter than SECONDS when
#                       it stopped at a finding)
#   FUZZ_SANITIZERS     the sanitizers BINARY was built with, for the log (default
#                       address,undefined; fuzz.mk passes its own)
#   FUZZ_TMP=DIR        where the targets write their input files (default: /dev/shm when
#                       writable — the file-format targets are 2-3x faster on tmpfs — else
#                       OUT_DIR/tmp); each process makes and removes its own directory there
set -u
if [ $# -lt 5 ]; then
    echo "usage: $0 NAME BINARY SECONDS MAX_LEN OUT_DIR [SEED_DIR...]" >&2
    exit 2
fi
name=$1 bin=$2 secs=$3 max_len=$4 out=$5
shift 5
work="$out/corpus/$name"
art="$out/artifacts/$name"
sanitizers=${FUZZ_SANITIZERS:-address,undefined}
# One log per build, so that the two builds can fuzz one target at the same time.
if [ "$sanitizers" = address,undefined ]; then log="$out/logs/$name.log"; else log="$out/logs/$name.$sanitizers.log"; fi
mkdir -p "$work" "$art" "$out/logs"
if [ -n "${FUZZ_TMP:-}" ]; then
    scratch=$FUZZ_TMP
elif [ -d /dev/shm ] && [ -w /dev/shm ]; then
    scratch=/dev/shm
else
    scratch="$out/tmp/$name"
fi
mkdir -p "$scratch"
TMPDIR=$scratch
export TMPDIR
unset QP_TMP

seeds=""
for d in "$@"; do
    if [ -d "$d" ]; then seeds="$seeds $d"; fi
done
dict=""
if [ -n "${FUZZ_DICT:-}" ] && [ -f "$FUZZ_DICT" ]; then dict="-dict=$FUZZ_DICT"; fi

# -timeout: an input taking longer than 10 s counts as a hang (a crash); -rss_limit_mb: a
# parser asking for more than 2 GB on a small input is a bug too.
t0=$(date +%s)
# shellcheck disable=SC2086  # seeds is a list of directories without spaces
"$bin" -max_total_time="$secs" -max_len="$max_len" -timeout=10 -rss_limit_mb=2048 $dict \
    -print_final_stats=1 -artifact_prefix="$art/" "$work" $seeds > "$log" 2>&1
rc=$?
ran=$(( $(date +%s) - t0 ))

stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -n 1; }
runs=$(stat number_of_executed_units)
speed=$(stat average_exec_per_sec)
new=$(stat new_units_added)
rss=$(stat peak_rss_mb)
# The last status line: "#N  DONE  cov: EDGES ft: FEATURES corp: FILES/SIZE ...".
last=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -n 1)
cov=$(echo "$last" | sed -n 's/.*cov: \([0-9]*\).*/\1/p')
ft=$(echo "$last" | sed -n 's/.*ft: \([0-9]*\).*/\1/p')
corp=$(echo "$last" | sed -n 's/.*corp: \([0-9]*\)\/.*/\1/p')
saved=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)

if [ -n "${FUZZ_RECORD:-}" ]; then
    if [ $rc -eq 0 ]; then result=ok; else result="failed:$(basename "${saved:-exit$rc}")"; fi
    commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
    mkdir -p "$(dirname "$FUZZ_RECORD")"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$commit" "$ran" \
        "${runs:-0}" "${cov:-0}" "${ft:-0}" "${corp:-0}" "$result" "$sanitizers" >> "$FUZZ_RECORD"
fi

if [ $rc -eq 0 ]; then
    echo "fuzz $name ($sanitizers): ${runs:-?} runs in $secs s (${speed:-?}/s)," \
        "corpus +${new:-?} new inputs, ${cov:-?} edges, peak RSS ${rss:-?} MB: ok"
    exit 0
fi
echo "fuzz $name: FAILED (exit $rc) after ${runs:-?} runs; log: $log" >&2
tail -n 40 "$log" >&2
[ -n "$saved" ] && echo "fuzz $name: input saved as $saved (replay: $bin $saved)" >&2
exit 1
