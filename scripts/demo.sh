#!/bin/bash
# demo.sh — `make demo`: the main job on the fixture model. Runs the example sweep
# (examples/sweep-stories260K.json: stories260K under about fifteen quantizations, every
# diagnostic), gates it with examples/gate.json against the unquantized model, and writes the
# report to report/ (index.html, summary.md, plots, CSV). Re-running resumes: variants already
# in report/study.sqlite are not evaluated again.
set -euo pipefail
Q=${QPROBE:-build/release/qprobe}
F=${FIXTURES:-$([ -d ../shared/fixtures ] && echo ../shared/fixtures || echo fixtures)}
# The evaluation and calibration slices of the TinyStories text (fixtures/MANIFEST, cut into
# fixtures/made/ from F's tinystories_val.txt when missing).
scripts/fixtures.sh "$F" made/tinystories-calib.txt made/tinystories-eval.txt >/dev/null ||
    { echo "qprobe demo: the fixtures in '$F' are incomplete (make fixtures)" >&2; exit 2; }
# The configuration's ${FIXTURES}: relative paths in it are taken from its own directory
# (examples/), so it is given relative to that; the report then shows no machine's absolute paths.
export FIXTURES=$(realpath --relative-to=examples "$F")
export QPROBE_FIXTURES="$F" # where the task suites' data lives
R=report
mkdir -p "$R"

echo "qprobe demo: sweep (examples/sweep-stories260K.json) into $R/study.sqlite" >&2
"$Q" sweep -c examples/sweep-stories260K.json --db "$R/study.sqlite" --resume

echo "qprobe demo: gate (examples/gate.json, baseline: the unquantized model)" >&2
set +e
"$Q" gate --db "$R/study.sqlite" --baseline reference --rules examples/gate.json --junit "$R/gate.xml" \
    > "$R/gate.txt"
gate=$?
set -e
cat "$R/gate.txt"
if [ "$gate" -eq 2 ]; then
    echo "qprobe demo: the gate could not run" >&2
    exit 2
fi

echo "qprobe demo: report" >&2
"$Q" report --db "$R/study.sqlite" -o "$R" --gate "$R/gate.xml" --rules examples/gate.json
echo "qprobe demo: wrote $R/index.html and $R/summary.md (gate exit status $gate:" \
     "$([ "$gate" -eq 0 ] && echo all variants pass || echo some variants regress, as the example intends))" >&2
