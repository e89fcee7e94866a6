#!/bin/sh
# table.sh — the fuzzing campaign's table in docs/FUZZ.md, made from the per-target session logs.
#
# Usage: tests/fuzz/table.sh LOG_DIR CORPUS_DIR DOC
#   LOG_DIR/NAME.tsv   one line per fuzzing session (run.sh with FUZZ_RECORD): date, commit,
#                      seconds, executions, edges, features, corpus entries, result, sanitizers
#                      (absent in the first sessions' lines: address,undefined)
#   CORPUS_DIR/NAME/   the repository's minimised corpus (its file count is the corpus size)
# Replaces the lines between "<!-- fuzz-table -->" and "<!-- /fuzz-table -->" in DOC with a
# Markdown table: per target the sessions, total executions (and how many of them ran in the
# build without AddressSanitizer) and hours (wall time of the single-threaded fuzzer, at nice 19
# on a shared machine) across all of them,
# the corpus kept, the most edges and features a session reached, and the sessions that ended
# in a finding (crash, leak, timeout, failed check). Later sessions append to the logs, so the
# totals grow; nothing in the table is typed by hand.
set -eu
if [ $# -ne 3 ]; then
    echo "usage: $0 LOG_DIR CORPUS_DIR DOC" >&2
    exit 2
fi
logs=$1 corpus=$2 doc=$3
grep -q '^<!-- fuzz-table -->$' "$doc" || { echo "$doc: no '<!-- fuzz-table -->' line" >&2; exit 2; }

# Thousands separated by spaces: 12 345 678.
group='function group(x,   s, r) {
    s = sprintf("%d", x); r = ""
    while (length(s) > 3) { r = " " substr(s, length(s) - 2) r; s = substr(s, 1, length(s) - 3) }
    return s r
}
'
table=$(mktemp)
trap 'rm -f "$table" "$table.doc"' EXIT
{
    echo "| target | sessions | executions | of them UBSan only | hours | corpus | edges | features | findings |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    for f in "$logs"/*.tsv; do
        [ -f "$f" ] || continue
        name=$(basename "$f" .tsv)
        n_corpus=$(find "$corpus/$name" -type f 2>/dev/null | wc -l)
        awk -F '\t' -v name="$name" -v corp="$n_corpus" "$group"'
            { n++; secs += $3; runs += $4; if ($9 == "undefined") ub += $4
              if ($5 > cov) cov = $5; if ($6 > ft) ft = $6; if ($8 != "ok") bad++ }
            END {
                if (n == 0) exit
                printf "| `%s` | %d | %s | %s | %.2f | %d | %d | %d | %d |\n", name, n, group(runs),
                       group(ub), secs / 3600, corp, cov, ft, bad
            }' "$f"
    done
    awk -F '\t' "$group"'{ runs += $4; secs += $3; if ($9 == "undefined") ub += $4 } END {
        printf "| **all** | | **%s** | **%s** | **%.2f** | | | | |\n", group(runs), group(ub), secs / 3600 }' \
        "$logs"/*.tsv
} > "$table"

awk -v t="$table" '
    /^<!-- fuzz-table -->$/ { print; while ((getline l < t) > 0) print l; skip = 1; next }
    /^<!-- \/fuzz-table -->$/ { skip = 0 }
    !skip' "$doc" > "$table.doc"
cat "$table.doc" > "$doc"
