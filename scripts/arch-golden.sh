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

# "name type sha256[:16]" of every tensor of a GGUF file (its bytes, trailing zeros dropped), read
# with Python's standard library only.
cat > "$tmp/tensors.py" <<'PY'
import hashlib, struct, sys
b = open(sys.argv[1], 'rb').read()
assert b[:4] == b'GGUF'
_, nt, nkv = struct.unpack_from('<IQQ', b, 4)
o, align = 24, 32
def rstr(o):
    n, = struct.unpack_from('<Q', b, o)
    return b[o + 8:o + 8 + n].decode(), o + 8 + n
size = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
def skip(t, o):
    if t == 8: return rstr(o)[1]
    if t == 9:
        et, n = struct.unpack_from('<IQ', b, o); o += 12
        for _ in range(n): o = skip(et, o)
        return o
    return o + size[t]
for _ in range(nkv):
    k, o = rstr(o); t, = struct.unpack_from('<I', b, o); o += 4
    if k == 'general.alignment': align, = struct.unpack_from('<I', b, o)
    o = skip(t, o)
infos = []
for _ in range(nt):
    name, o = rstr(o); nd, = struct.unpack_from('<I', b, o); o += 4 + 8 * nd
    t, off = struct.unpack_from('<IQ', b, o); o += 12
    infos.append((name, t, off))
data = (o + align - 1) // align * align
ends = sorted(set(i[2] for i in infos[1:] + infos[:1])) + [len(b) - data]
for name, t, off in sorted(infos):
    end = min(x for x in ends if x > off)
    print(name, t, hashlib.sha256(b[data + off:data + end].rstrip(b'\0')).hexdigest()[:16])
PY

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
        # llama-quantize's Q4_K_M of the same file: every tensor's type and bytes
        "$B/llama-quantize" "$m" "$tmp/q.gguf" Q4_K_M 2 > /dev/null 2>&1
        python3 "$tmp/tensors.py" "$tmp/q.gguf" | sed 's/^/q4_k_m_tensor /'
    } > "$out/$arch.txt"
    echo "arch-golden: $out/$arch.txt" >&2
done
