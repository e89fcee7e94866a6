#!/bin/bash
# arch-golden.sh — regenerates tests/golden/arch/*.txt: llama.cpp's perplexity and greedy tokens on
# the small model of each family that `qprobe synth --arch A --seed 1` writes. tests/test_arch.c
# compares qprobe with these files; llama.cpp itself is not needed to run the tests.
# Usage: LLAMA_CPP=DIR scripts/arch-golden.sh   (DIR holds build/bin/llama-perplexity, llama-cli,
# llama-tokenize; the README names the commit the files came from). Environment: QPROBE, FIXTURES.
set -euo pipefail
Q=${QPROBE:-build/release/qprobe}
F=${FIXTURES:-../shared/fixtures}
: "${LLAMA_CPP:?set LLAMA_CPP to a llama.cpp checkout with its binaries in build/bin}"
B=$LLAMA_CPP/build/bin
out=tests/golden/arch
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
mkdir -p "$out"
# The text: the first 8192 bytes of TinyStories' validation text (tests write the same prefix).
head -c 8192 "$F/data/tinystories/tinystories_val.txt" > "$tmp/text.txt"
commit=$(git -C "$LLAMA_CPP" rev-parse --short=8 HEAD 2>/dev/null || echo unknown)

for arch in llama qwen2 phi3 gemma2; do
    m=$tmp/$arch.gguf
    QP_FIXTURES=$F "$Q" synth --arch "$arch" --seed 1 -o "$m" -t 2 > /dev/null 2>&1
    sha=$(sha256sum "$m" | cut -c1-64)
    ppl=$("$B/llama-perplexity" -m "$m" -f "$tmp/text.txt" -c 128 --chunks 4 -ctk f32 -ctv f32 -t 2 2>&1 |
          sed -n 's/^Final estimate: PPL = \([0-9.]*\).*/\1/p')
    {
        echo "# llama.cpp $commit on 'qprobe synth --arch $arch --seed 1' (scripts/arch-golden.sh)"
        echo "model_sha256 $sha"
        echo "ppl_ctx128_chunks4 $ppl"
        for prompt in "The little dog" "Lily and Ben"; do
            # llama-cli -v logs every batch it evaluates ("eval: [ 'piece':id, ... ]"): the prompt,
            # then each generated token as it is fed back.
            ids=$("$B/llama-cli" -m "$m" -p "$prompt" -n 24 -c 128 --temp 0 -ctk f32 -ctv f32 -no-cnv -t 2 -v 2>&1 |
                  grep -a -o "eval: \[.*\]" | tail -n +2 | sed -n 's/.*:\([0-9]*\) \]$/\1/p' | tr '\n' ' ')
            echo "greedy_ctx128 \"$prompt\" ${ids% }"
        done
    } > "$out/$arch.txt"
    echo "arch-golden: $out/$arch.txt" >&2
done
