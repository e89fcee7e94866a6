#!/bin/bash
# run.sh — runs every case of every test binary given, each in its own process, two at a time,
# and ends with exactly one line "N passed, N failed, N skipped". Exit 1 on any failure.
# Usage: tests/run.sh BIN...   (environment: QP_FIXTURES, QP_BIN, QP_JOBS, QP_TIMEOUT, QP_LOGS)
# A failing case's whole output is kept in QP_LOGS (default build/test-logs) as BIN.CASE.log;
# the summary shows its last 20 lines.
set -u
logs=${QP_LOGS:-build/test-logs}
mkdir -p "$logs" && logs=$(cd "$logs" && pwd)
rm -f "$logs"/*.log
jobs=${QP_JOBS:-2}
limit=${QP_TIMEOUT:-600}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/qprobe-tests.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
export QP_TMP="$tmp"
# Two cases run at a time on machines with as few as two CPUs, each possibly with two OpenMP
# threads: threads that spin at barriers while a preempted team member waits for a CPU turn a
# few seconds into minutes. Results never depend on this (fixed reduction order), only timing.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}

list="$tmp/cases"
: > "$list"
for bin in "$@"; do
    if ! names=$("$bin" --list); then
        echo "FAIL $(basename "$bin"): cannot list cases" >&2
        echo "$bin __list__" >> "$list"
        continue
    fi
    for n in $names; do echo "$bin $n" >> "$list"; done
done

run_one() {
    local bin=$1 name=$2 out rc t0 t1
    local tag
    tag="$(basename "$bin"):$name"
    if [ "$name" = "__list__" ]; then echo "FAIL $tag" > "$QP_TMP/r.$BASHPID.$RANDOM"; return; fi
    t0=$(date +%s.%N)
    out=$(cd "$QP_TMP" && timeout "$limit" "$bin" "$name" 2>&1)
    rc=$?
    t1=$(date +%s.%N)
    local secs
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
    local res="$QP_TMP/r.$(basename "$bin").$name"
    if [ $rc -eq 0 ]; then
        echo "PASS $tag (${secs}s)" > "$res"
    elif [ $rc -eq 77 ]; then
        { echo "SKIP $tag"; echo "$out" | tail -n 3; } > "$res"
    else
        printf '%s\n' "$out" > "$logs/$(basename "$bin").$name.log"
        { echo "FAIL $tag (exit $rc, ${secs}s; whole output: $logs/$(basename "$bin").$name.log)"
          echo "$out" | tail -n 20; } > "$res"
    fi
    cat "$res"
}
export -f run_one
export limit logs

xargs -P "$jobs" -L 1 bash -c 'run_one "$0" "$1"' < "$list"

pass=$(cat "$tmp"/r.* 2>/dev/null | grep -c '^PASS')
fail=$(cat "$tmp"/r.* 2>/dev/null | grep -c '^FAIL')
skip=$(cat "$tmp"/r.* 2>/dev/null | grep -c '^SKIP')
total=$(wc -l < "$list")
missing=$((total - pass - fail - skip))
fail=$((fail + missing))
if [ "$fail" -gt 0 ]; then
    echo
    echo "failures:"
    cat "$tmp"/r.* 2>/dev/null | grep '^FAIL' | sed 's/^/  /'
fi
# Skips are reported, never counted as passes; the last line is exactly "N passed, N failed".
echo "$skip skipped (not counted)"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
