#!/bin/sh
# run.sh — runs one libFuzzer target for a fixed time and prints one summary line:
#   fuzz NAME: RUNS runs in SECS s (EXEC/s), corpus +NEW new inputs, peak RSS MB MB: ok
# On a crash, leak, timeout or failed check it prints the end of the log, where the input was
# saved, and exits non-zero.
#
# Usage: tests/fuzz/run.sh NAME BINARY SECONDS MAX_LEN OUT_DIR SEED_DIR...
#   OUT_DIR/corpus/NAME     working corpus (grows from run to run; first corpus dir)
#   OUT_DIR/artifacts/NAME  crashing inputs
#   OUT_DIR/logs/NAME.log   the full libFuzzer log
#   OUT_DIR/tmp/NAME        the target's scratch files (TMPDIR; left behind by a crash)
# Seed directories that do not exist are skipped (the shared fixtures may be absent).
set -u
if [ $# -lt 5 ]; then
    echo "usage: $0 NAME BINARY SECONDS MAX_LEN OUT_DIR [SEED_DIR...]" >&2
    exit 2
fi
name=$1 bin=$2 secs=$3 max_len=$4 out=$5
shift 5
work="$out/corpus/$name"
art="$out/artifacts/$name"
log="$out/logs/$name.log"
mkdir -p "$work" "$art" "$out/logs" "$out/tmp/$name"
TMPDIR="$out/tmp/$name"
export TMPDIR
unset QP_TMP

seeds=""
for d in "$@"; do
    if [ -d "$d" ]; then seeds="$seeds $d"; fi
done

# -timeout: an input taking longer than 10 s counts as a hang (a crash); -rss_limit_mb: a
# parser asking for more than 2 GB on a small input is a bug too.
# shellcheck disable=SC2086  # seeds is a list of directories without spaces
"$bin" -max_total_time="$secs" -max_len="$max_len" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$art/" "$work" $seeds > "$log" 2>&1
rc=$?

stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -n 1; }
runs=$(stat number_of_executed_units)
speed=$(stat average_exec_per_sec)
new=$(stat new_units_added)
rss=$(stat peak_rss_mb)
if [ $rc -eq 0 ]; then
    echo "fuzz $name: ${runs:-?} runs in $secs s (${speed:-?}/s)," \
        "corpus +${new:-?} new inputs, peak RSS ${rss:-?} MB: ok"
    exit 0
fi
echo "fuzz $name: FAILED (exit $rc) after ${runs:-?} runs; log: $log" >&2
tail -n 40 "$log" >&2
saved=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
[ -n "$saved" ] && echo "fuzz $name: input saved as $saved (replay: $bin $saved)" >&2
exit 1
