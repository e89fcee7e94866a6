#!/bin/bash
# bench-peer.sh — `make bench-peer [LLAMA_CPP=DIR]`: qprobe and llama.cpp on the same GGUF files,
# side by side, alternating, and the section "qprobe and llama.cpp side by side" of docs/BENCH.md
# (between its marker comments; bench.sh keeps the section when it rewrites the file).
#
# Files (build/bench-peer/, made once): the TinyLlama-1.1B shape from `qprobe synth --shape
# tinyllama-1.1b --seed 1 --type f16`, and with the peer `llama-quantize --pure` F32, Q8_0, Q4_0,
# Q4_K_M, Q5_K_M, Q6_K of it. Text: the first 40,853 bytes of tinystories_val.txt.
# Prefill: llama-perplexity -c 512 -b 512 --chunks 4 -t T against qprobe ppl --ctx 512 --chunks 4
# -t T (--act q8 for the quantized files), alternating, REPS times; the median tokens/s of each.
# Decode: llama-bench -p 0 -n 128 -t T against qprobe generate (128 tokens after a 512-token
# prompt, the prompt run as one batch), alternating, REPS times.
# Environment: QPROBE (binary), FIXTURES, LLAMA_CPP (the llama.cpp checkout with build/bin, or the
# bin folder itself; optional), REPS (3), THREADS (2), TYPES (all), DECODE_TYPES ("F16 Q4_0 Q8_0"),
# BENCH_PEER_WRITE (1: update docs/BENCH.md). Takes about 30 minutes on 2 CPUs with the peer.
set -euo pipefail
Q=${QPROBE:-build/release/qprobe}
F=${FIXTURES:-../shared/fixtures}
REPS=${REPS:-3}
T=${THREADS:-2}
TYPES=${TYPES:-F16 F32 Q8_0 Q4_0 Q4_K_M Q5_K_M Q6_K}
DECODE_TYPES=${DECODE_TYPES:-F16 Q4_0 Q8_0}
WRITE=${BENCH_PEER_WRITE:-1}
D=build/bench-peer
TEXT=$D/text.txt
mkdir -p "$D"
case $REPS in '' | *[!0-9]* | 0) echo "bench-peer: REPS='$REPS': expected a positive integer" >&2; exit 2 ;; esac

bin=
if [ -n "${LLAMA_CPP:-}" ]; then
    for b in "$LLAMA_CPP/build/bin" "$LLAMA_CPP/bin" "$LLAMA_CPP"; do
        [ -x "$b/llama-perplexity" ] && { bin=$b; break; }
    done
    [ -n "$bin" ] || { echo "bench-peer: no llama-perplexity under LLAMA_CPP='$LLAMA_CPP' (build/bin, bin or itself)" >&2; exit 2; }
fi

# ---------------------------------------------------------------------------------------------
# Files
[ -f "$TEXT" ] || head -c 40853 "$F/data/tinystories/tinystories_val.txt" > "$TEXT"
F16=$D/tinyllama-F16.gguf
if [ ! -f "$F16" ]; then
    echo "bench-peer: writing $F16 (2.2 GB)" >&2
    "$Q" synth --shape tinyllama-1.1b --seed 1 --type f16 -o "$F16" >&2
fi
file_of() { echo "$D/tinyllama-$1.gguf"; }
if [ -n "$bin" ]; then
    for t in $TYPES; do
        [ "$t" = F16 ] && continue
        f=$(file_of "$t")
        [ -f "$f" ] && continue
        echo "bench-peer: llama-quantize --pure $t" >&2
        "$bin/llama-quantize" --pure "$F16" "$f.tmp" "$t" 1 > "$D/quantize-$t.log" 2>&1 && mv "$f.tmp" "$f"
    done
fi

# ---------------------------------------------------------------------------------------------
# Runs; each prints one number (tokens/s) or "-" when it failed.
field() { sed -n "s/.*\"$1\":\([^,}]*\).*/\1/p" | tr -d '"'; }
fieldstr() { sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p"; } # a string field that may hold commas
median() { tr ' ' '\n' | grep -v '^-*$' | sort -g | awk '{a[NR]=$1} END {if (NR == 0) print "-"; else if (NR % 2) printf "%.2f\n", a[(NR+1)/2]; else printf "%.2f\n", (a[NR/2]+a[NR/2+1])/2}'; }
num() { awk '{ if ($1 + 0 == $1 && $1 != "") printf "%.2f\n", $1; else print "-" }'; } # one figure, 2 decimals
act_of() { case $1 in F16 | F32) echo f32 ;; *) echo q8 ;; esac; }

q_ppl() { # file type; the JSON is kept in $D/last-ppl.json for the kernel paths
    "$Q" ppl -m "$1" --text "$TEXT" --ctx 512 --chunks 4 -t "$T" --act "$(act_of "$2")" --json > "$D/last-ppl.json" 2>/dev/null ||
        { echo -; return; }
    field tokens_per_s < "$D/last-ppl.json" | num
}
l_ppl() { # file
    "$bin/llama-perplexity" -m "$1" -f "$TEXT" -c 512 -b 512 --chunks 4 -t "$T" 2>&1 |
        sed -n 's/.*prompt eval time.*, *\([0-9.]*\) tokens per second.*/\1/p' | head -1 | num | grep . || echo -
}
PROMPT=$D/prompt.txt
[ -f "$PROMPT" ] || head -c 2400 "$TEXT" > "$PROMPT" # about 560 tokens; generate keeps the first 512
q_gen() { # file type
    "$Q" generate -m "$1" --prompt-file "$PROMPT" --prompt-tokens 512 -n 640 -t "$T" --act "$(act_of "$2")" --json 2>/dev/null |
        field decode_tokens_per_s | num | grep . || echo -
}
l_gen() { # file
    "$bin/llama-bench" -m "$1" -p 0 -n 128 -t "$T" -r 1 -o json 2>/dev/null | field avg_ts | head -1 | num | grep . || echo -
}

# measure KIND TYPE FILE: REPS alternating passes of qprobe and (with the peer) llama.cpp; prints
# the table row (type, act, medians, ratio, the passes).
measure() {
    local kind=$1 t=$2 f=$3 qs=() ls=() r qm lm ratio
    for ((r = 1; r <= REPS; r++)); do
        if [ "$kind" = prefill ]; then qs+=("$(q_ppl "$f" "$t")"); else qs+=("$(q_gen "$f" "$t")"); fi
        if [ -n "$bin" ]; then
            if [ "$kind" = prefill ]; then ls+=("$(l_ppl "$f")"); else ls+=("$(l_gen "$f")"); fi
        fi
        echo "bench-peer: $t $kind pass $r: qprobe ${qs[-1]}${bin:+, llama.cpp ${ls[-1]}} tokens/s" >&2
    done
    qm=$(echo "${qs[*]}" | median)
    lm=-
    [ -n "$bin" ] && lm=$(echo "${ls[*]}" | median)
    ratio=$(awk -v a="$qm" -v b="$lm" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b }')
    echo "| $t | $(act_of "$t") | $lm | $qm | $ratio | ${ls[*]:-} | ${qs[*]} |"
}

rows=(); drows=(); kern=()
for t in $TYPES; do
    f=$(file_of "$t")
    [ -f "$f" ] || { echo "bench-peer: $f missing (needs LLAMA_CPP to make it), skipped" >&2; continue; }
    rows+=("$(measure prefill "$t" "$f")")
    j=$(cat "$D/last-ppl.json" 2>/dev/null || true)
    kern+=("| $t | $(echo "$j" | field isa) | $(echo "$j" | field gemm), $(echo "$j" | field panels) panels | $(echo "$j" | fieldstr kernels) |")
done
for t in $DECODE_TYPES; do
    f=$(file_of "$t")
    [ -f "$f" ] && drows+=("$(measure decode "$t" "$f")")
done

# ---------------------------------------------------------------------------------------------
# Report
cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p')
flags=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx|avx2|fma|f16c|avx512f|avx512bw|avx512vl|avx512dq|avx512_vnni|avx_vnni|avx512_bf16|avx512_fp16|amx_tile|amx_int8|amx_bf16)$' | tr '\n' ' ')
load=$(cut -d' ' -f1-3 /proc/loadavg)
section() {
    echo "<!-- bench-peer: generated by scripts/bench-peer.sh (make bench-peer); edit the script -->"
    echo "## qprobe and llama.cpp side by side"
    echo
    echo "Measured by \`make bench-peer${bin:+ LLAMA_CPP=...}\` on $(date +%Y-%m-%d): $cpu, $(nproc) CPUs,"
    echo "flags: $flags; load average at the end $load (the note says whether the machine was idle)."
    if [ -n "$bin" ]; then
        echo "Peer: llama.cpp $(git -C "$(dirname "$(dirname "$bin")")" rev-parse --short=8 HEAD 2>/dev/null || echo '(commit unknown)'), built outside the repository (LLAMA_CPP)."
    else
        echo "No peer: run \`make bench-peer LLAMA_CPP=DIR\` (DIR: a llama.cpp build, e.g. at the golden commit c392e509) to add llama.cpp's columns."
    fi
    echo
    echo "Files: TinyLlama-1.1B shape, \`qprobe synth --shape tinyllama-1.1b --seed 1 --type f16\`, and"
    echo "\`llama-quantize --pure\` of it; text: the first 40,853 bytes of tinystories_val.txt."
    echo "Prefill: \`llama-perplexity -c 512 -b 512 --chunks 4 -t $T\` and \`qprobe ppl --ctx 512 --chunks 4 -t $T\`"
    echo "(\`--act q8\` for quantized files), alternating, $REPS passes each; tokens/s is the median pass"
    echo "(llama.cpp's \"prompt eval\" figure; qprobe's evaluation time), the passes listed after it."
    echo
    echo "| file | qprobe act | llama.cpp tok/s | qprobe tok/s | ratio | llama.cpp passes | qprobe passes |"
    echo "|---|---|---:|---:|---:|---|---|"
    printf '%s\n' "${rows[@]}"
    echo
    echo "Decode: \`llama-bench -p 0 -n 128 -t $T\` (128 tokens from an empty context: this llama-bench"
    echo "has no depth option) and \`qprobe generate\` (128 tokens after a 512-token prompt run as one batch),"
    echo "alternating, $REPS passes each."
    echo
    echo "| file | qprobe act | llama.cpp tok/s | qprobe tok/s | ratio | llama.cpp passes | qprobe passes |"
    echo "|---|---|---:|---:|---:|---|---|"
    printf '%s\n' "${drows[@]}"
    echo
    echo "Kernel paths qprobe took (its last prefill pass per file):"
    echo
    echo "| file | table | fp32 GEMM | kernel families |"
    echo "|---|---|---|---|"
    printf '%s\n' "${kern[@]}"
    echo "<!-- /bench-peer -->"
}
out=$(section)
echo "$out"
[ -n "$bin" ] || echo "bench-peer: add llama.cpp's figures with: make bench-peer LLAMA_CPP=DIR (a llama.cpp build with build/bin/llama-perplexity)" >&2
if [ "$WRITE" = 1 ]; then
    doc=docs/BENCH.md
    touch "$doc"
    awk -v new="$out" '
        /^<!-- bench-peer/ { skip = 1; if (!done) { print new; done = 1 } next }
        /^<!-- \/bench-peer -->/ { skip = 0; next }
        !skip { print }
        END { if (!done) { print ""; print new } }' "$doc" > "$doc.tmp" && mv "$doc.tmp" "$doc"
    echo "bench-peer: wrote the side-by-side section of $doc" >&2
fi
