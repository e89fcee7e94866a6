#!/bin/bash
# bench-gptq.sh — GPTQ's speed at the TinyLlama-1.1B shape, this checkout against an older
# quantizers/qz_gptq.c (tests/bench/bench_gptq.c says what is timed). The old file is taken from
# git (OLD=REV, default the merge base with main), compiled into the benchmark with its public
# names prefixed old_ and its static chol_lower exported; the rest links against this build's
# library (make first). Minutes of run time; prints the CPU first.
# Usage: scripts/bench-gptq.sh [SPEC]        e.g. OLD=main scripts/bench-gptq.sh gptq:bits=4:group=128
set -eu
cd "$(dirname "$0")/.."
old=${OLD:-$(git merge-base HEAD main)}
out=build/release/bench-gptq
lib=build/release/libqprobe.a
[ -f "$lib" ] || { echo "bench-gptq: $lib not found: run make first" >&2; exit 2; }
mkdir -p "$out"
git show "$old:quantizers/qz_gptq.c" > "$out/old_qz_gptq.c"
# one translation unit: the old file with renamed entry points, and a wrapper for its chol_lower
{
    echo '#define qz_gptq_quantize old_qz_gptq_quantize'
    echo '#define qz_gptq_inverse_factor old_qz_gptq_inverse_factor'
    echo '#include "old_qz_gptq.c"'
    echo 'int old_chol_lower(double *a, int64_t n);'
    echo 'int old_chol_lower(double *a, int64_t n) { return chol_lower(a, n); }'
} > "$out/old_unit.c"
# the old header must not be this checkout's (its prototypes differ): the old one beside it
git show "$old:quantizers/qz_gptq.h" > "$out/qz_gptq.h"
inc="-Ikernels -Iquantizers -Imetrics -Itasks $(pkg-config --cflags openblas 2>/dev/null || true)"
cflags="-std=c11 -D_GNU_SOURCE -fopenmp -ffp-contract=off -fno-math-errno -O2 -g"
libs="$(pkg-config --libs openblas 2>/dev/null || echo -lopenblas) -lm"
gcc $cflags -I"$out" $inc -c "$out/old_unit.c" -o "$out/old_unit.o"
gcc $cflags $inc -c tests/bench/bench_gptq.c -o "$out/bench_gptq.o"
gcc -fopenmp -o "$out/bench_gptq" "$out/bench_gptq.o" "$out/old_unit.o" "$lib" $libs
lscpu | grep 'Model name' || true
echo "old: quantizers/qz_gptq.c at $(git rev-parse --short "$old"); threads: ${OMP_NUM_THREADS:-all}"
# Debian's OpenBLAS does not know Zen 5; qprobe's main sets the same (kn_blas_coretype_needed)
OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-SkylakeX} "$out/bench_gptq" "$@"
