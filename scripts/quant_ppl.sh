#!/bin/bash
# quant_ppl.sh — act=q8 perplexity of every golden llama.cpp variant of stories260K, on
# llama.cpp's own file and on qprobe's quantization of the F32 model, against summary.csv
# (whole 200,000-byte text, ctx 512, 190 chunks). Writes docs/QUANT_PPL.md. About 5 minutes.
set -euo pipefail
Q=${QPROBE:-build/release/qprobe}
F=${FIXTURES:-../shared/fixtures}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
head -c 200000 "$F/data/tinystories/tinystories_val.txt" > "$tmp/eval.txt"
field() { sed -n "s/.*\"$1\":\([^,}]*\).*/\1/p" | tr -d '"'; }
out=docs/QUANT_PPL.md
{
echo "# act=q8 perplexity against llama.cpp (stories260K)"
echo
echo "Whole golden text (200,000 bytes, ctx 512, 190 chunks, 48,450 scored tokens), measured by"
echo "\`scripts/quant_ppl.sh\` on $(date -u +%Y-%m-%d). \"llama.cpp\" is the plain-run PPL in"
echo "\`golden/ppl/summary.csv\`; the tolerance is 0.1 %."
echo
echo "| variant | spec (qprobe's own quantization) | bpw | llama.cpp | qprobe on llama.cpp's file | Δ | qprobe on own quantization | Δ |"
echo "|---|---|---:|---:|---:|---:|---:|---:|"
} > "$out"
while IFS=, read -r label spec want; do
    a=$("$Q" ppl -m "$F/golden/ppl/stories260K-$label.gguf" --act q8 --text "$tmp/eval.txt" -t 2 --json 2>/dev/null)
    b=$("$Q" ppl -m "$F/models/llama2c/stories260K.bin" -z "$F/models/llama2c/tok512.bin" -q "$spec" --text "$tmp/eval.txt" -t 2 --json 2>/dev/null)
    pa=$(echo "$a" | field ppl); pb=$(echo "$b" | field ppl); bpw=$(echo "$b" | field bits_per_weight)
    printf '| %s | `%s` | %.3f | %s | %.4f | %+.3f %% | %.4f | %+.3f %% |\n' "$label" "$spec" "$bpw" "$want" "$pa" \
        "$(awk -v x="$pa" -v y="$want" 'BEGIN{print 100*(x/y-1)}')" "$pb" "$(awk -v x="$pb" -v y="$want" 'BEGIN{print 100*(x/y-1)}')" >> "$out"
done <<'LIST'
Q8_0_ffndownF16,q8_0;act=q8,4.1110
Q5_0_rules_ffndownF16,q5_0;name~^output=q6_k;act=q8,4.1987
Q5_0_pure_ffndownF16,q5_0;act=q8,4.2346
Q4_K_M,q4_k_m;act=q8,4.1825
Q4_0_rules_ffndownF16,q4_0;name~^output=q6_k;act=q8,4.4334
Q4_0_pure_ffndownF16,q4_0;act=q8,4.5266
LIST
echo >> "$out"
echo "bpw counts the 2-D weights only (scales included); llama.cpp's BPW is file size × 8 / parameters." >> "$out"
cat "$out"
