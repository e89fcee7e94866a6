#!/bin/bash
# demo.sh — `make demo`: the main job on the fixture model, written to report/.
# Today: greedy generation and perplexity of stories260K under both protocols, each figure set
# beside llama.cpp's golden figure for the same protocol. The sweep over quantization
# configurations, the gate and the plots join it as they land.
set -euo pipefail
Q=${QPROBE:-build/release/qprobe}
F=${FIXTURES:-../shared/fixtures}
M=$F/models/llama2c/stories260K.bin
Z=$F/models/llama2c/tok512.bin
R=report
mkdir -p "$R"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
head -c 200000 "$F/data/tinystories/tinystories_val.txt" > "$tmp/eval_200000B.txt"

field() { sed -n "s/.*\"$1\":\([^,}]*\).*/\1/p" | tr -d '"'; }

echo "qprobe demo: generating" >&2
"$Q" generate -m "$M" -z "$Z" -n 200 > "$R/generate.txt" 2>/dev/null
echo "qprobe demo: perplexity (3 runs)" >&2
"$Q" ppl -m "$M" -z "$Z" --text "$tmp/eval_200000B.txt" --ctx 512 --json > "$R/ppl_c512.json" 2>/dev/null
"$Q" ppl -m "$M" -z "$Z" --text "$tmp/eval_200000B.txt" --ctx 128 --json > "$R/ppl_c128.json" 2>/dev/null
"$Q" ppl -m "$M" -z "$Z" --text "$tmp/eval_200000B.txt" --ctx 512 --protocol full --json > "$R/ppl_full.json" 2>/dev/null

row() { # label json golden
    local j; j=$(cat "$1")
    printf '| %s | %s | %s | %s | %.4f ± %.5f | %s | %.0f |\n' "$2" "$(echo "$j" | field protocol)" \
        "$(echo "$j" | field ctx)" "$(echo "$j" | field tokens_scored)" "$(echo "$j" | field ppl)" \
        "$(echo "$j" | field ppl_stderr)" "$3" "$(echo "$j" | field tokens_per_s)"
}
{
    echo "# qprobe report: stories260K"
    echo
    echo "Model \`stories260K.bin\` (llama2.c, 260K parameters) with \`tok512.bin\`; text: the first"
    echo "200,000 bytes of \`tinystories_val.txt\` (llama.cpp's golden protocol, see"
    echo "\`fixtures/golden/ppl/README.md\`)."
    echo
    echo "## Perplexity"
    echo
    echo "| run | protocol | ctx | tokens scored | qprobe PPL | llama.cpp PPL | tokens/s |"
    echo "|---|---|---:|---:|---:|---:|---:|"
    row "$R/ppl_c512.json" "f32" "4.1051 ± 0.03404"
    row "$R/ppl_c128.json" "f32" "4.2201 ± 0.03517"
    row "$R/ppl_full.json" "f32" "—"
    echo
    echo "## Greedy generation (200 positions, as llama2.c's run.c -t 0)"
    echo
    echo '```'
    cat "$R/generate.txt"
    echo '```'
} > "$R/summary.md"
echo "qprobe demo: wrote $R/summary.md" >&2
cat "$R/summary.md"
