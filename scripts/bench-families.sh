#!/bin/bash
# bench-families.sh — the model families section of `make bench` (scripts/bench.sh calls it;
# it also runs alone): prefill tokens/s of synthetic models of real shapes, one per family, at 2
# threads, and llama.cpp's prompt processing on the same files beside them when LLAMA_CPP is set.
# Writes docs/BENCH-FAMILIES.md (a generated file: edit this script).
# Environment: QPROBE, FIXTURES, LLAMA_CPP (optional: a llama.cpp checkout with build/bin),
# BENCH_FAMILY_LAYERS (layers of each shape, default 2: the per-layer cost is what compares;
# 0 = the real count), BENCH_FAMILY_CHUNKS (512-token chunks, default 2).
# Each model is written once as F16 into build/bench/ (0.5-2.6 GB each at 2 layers).
set -euo pipefail
Q=${QPROBE:-build/release/qprobe}
F=${FIXTURES:-../shared/fixtures}
L=${BENCH_FAMILY_LAYERS:-2}
C=${BENCH_FAMILY_CHUNKS:-2}
TEXT=$F/data/wikitext-2-raw/wiki.test.raw
[ -f "$TEXT" ] || TEXT=$F/data/tinystories/tinystories_val.txt
out=docs/BENCH-FAMILIES.md
mkdir -p build/bench docs
field() { sed -n "s/.*\"$1\":\([^,}]*\).*/\1/p" | tr -d '"'; }

rows=()
for shape in llama-3.2-1b qwen2.5-0.5b qwen2.5-1.5b phi-3-mini gemma-2-2b llama-3-8b-block; do
    # llama.cpp builds Gemma 2 only with 26, 42 or 46 layers: gemma-2-2b keeps its 26.
    l=$L
    [ "$shape" = gemma-2-2b ] && l=0
    m=build/bench/$shape-L$l-f16.gguf
    lopt=()
    [ "$l" != 0 ] && lopt=(--layers "$l")
    if [ ! -f "$m" ]; then
        echo "bench-families: writing $m" >&2
        QP_FIXTURES=$F "$Q" synth --shape "$shape" --seed 1 --type f16 "${lopt[@]}" -o "$m" > /dev/null
    fi
    j=$("$Q" ppl -m "$m" --text "$TEXT" --ctx 512 --chunks "$C" -t 2 --json 2>/dev/null)
    arch=$("$Q" synth --list-shapes | awk -v s="$shape" '$1 == s { print $2 }')
    lc="—"
    if [ -n "${LLAMA_CPP:-}" ] && [ -x "$LLAMA_CPP/build/bin/llama-bench" ]; then
        lc=$( ("$LLAMA_CPP/build/bin/llama-bench" -m "$m" -p 512 -n 0 -t 2 -r 2 -o csv 2>/dev/null || true) |
             awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) if ($i ~ /avg_ts/) c = i } NR == 2 { gsub(/"/, "", $c); printf "%.1f", $c }')
        [ -n "$lc" ] || lc="failed"
    fi
    rows+=("| $shape | $arch | $([ "$l" = 0 ] && echo all || echo "$l") | $(echo "$j" | field isa) | $(printf '%.1f' "$(echo "$j" | field tokens_per_s)") | $lc |")
done

{
    echo "# Model families: prefill speed"
    echo
    echo "Measured by \`scripts/bench-families.sh\` (part of \`make bench\`) on $(date -u +%Y-%m-%d),"
    echo "$(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')). Each model is"
    echo "\`qprobe synth --shape S --seed 1 --type f16$([ "$L" != 0 ] && echo " --layers $L")\` (Gemma-2-2B: all 26 layers, the count llama.cpp needs;"
    echo "random weights, the real widths, vocabulary"
    echo "and block variant of the family; docs/SYNTH.md), run by \`qprobe ppl --ctx 512 --chunks $C -t 2\`"
    echo "(tokens/s: every token through the model, classifier on the scored half) and, with"
    echo "LLAMA_CPP set, by \`llama-bench -p 512 -n 0 -t 2\` (prompt processing, F16 weights)."
    echo
    echo "Not the same work: llama-bench's prompt processing computes logits for the last token only,"
    echo "qprobe's perplexity for the 256 scored tokens of each chunk. With 2 layers the classifier"
    echo "(128256 or 151936 rows) dominates qprobe's time, so only deep rows (Gemma-2-2B's 26 layers)"
    echo "compare the blocks; the GEMM itself is docs/BENCH.md's subject."
    echo
    echo "| shape | arch | layers | isa | qprobe tokens/s | llama.cpp pp512 t/s |"
    echo "|---|---|---:|---|---:|---:|"
    printf '%s\n' "${rows[@]}"
} > "$out"
cat "$out"
