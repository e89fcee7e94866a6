#!/bin/sh
# reliability.sh — runs the exhaustive reliability cases one after the other (make reliability;
# QP_RELIABILITY=1 in the environment), each in its own scratch directory, and prints what each
# one reports (its summary lines on stderr) and PASS/FAIL with the time it took.
# Usage: tests/reliability.sh TEST_DIR BINARY:CASE...
set -u
dir=$1
shift
tmp=$(mktemp -d "${TMPDIR:-/tmp}/qprobe-reliability.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
export QP_TMP="$tmp"
failed=0
for bc in "$@"; do
    bin=${bc%%:*} case=${bc#*:}
    t0=$(date +%s)
    out=$(cd "$tmp" && "$dir/$bin" "$case" 2>&1)
    rc=$?
    secs=$(( $(date +%s) - t0 ))
    echo "$out" | grep -v '^  replay' | tail -n 5 | sed 's/^/    /'
    if [ $rc -eq 0 ]; then echo "PASS $bin:$case (${secs}s)"
    elif [ $rc -eq 77 ]; then echo "SKIP $bin:$case"
    else echo "FAIL $bin:$case (exit $rc, ${secs}s)"; failed=$((failed + 1)); fi
done
[ $failed -eq 0 ]
