#!/usr/bin/env python3
"""sens-agreement.py — how well the free per-layer sensitivity estimate ranks the layers as the exact
isolated sensitivity does (docs/SWEEP.md, "Sensitivity").

For each model, two sweeps of the demo's variants on the same windows: one with the default
estimate, one with `sensitivity_chunks` (each layer quantized alone, a full pass each). Per variant
the Spearman rank correlation of the two per-layer rankings, and whether the estimate's worst layer
is the exact one's. Prints a Markdown table.

usage: scripts/sens-agreement.py [QPROBE] [FIXTURES]   (defaults: build/release/qprobe, ../shared/fixtures)
"""
import json
import os
import sqlite3
import subprocess
import sys
import tempfile

Q = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build/release/qprobe")
F = os.path.abspath(sys.argv[2] if len(sys.argv) > 2 else "../shared/fixtures")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ["stories260K", "llama2xs_tinystories_model"]
CHUNKS, CTX, LAYER_CHUNKS, SENS_CHUNKS = 40, 256, 2, 8


def ranks(v):
    order = sorted(range(len(v)), key=lambda i: v[i])
    r = [0.0] * len(v)
    i = 0
    while i < len(v):
        j = i
        while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2
        i = j + 1
    return r


def spearman(a, b):
    ra, rb = ranks(a), ranks(b)
    n = len(a)
    ma, mb = sum(ra) / n, sum(rb) / n
    num = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    den = (sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb)) ** 0.5
    return num / den if den else float("nan")


def variants():
    # The demo sweep's variants, as the example configuration lists them (grids expanded by qprobe).
    env = dict(os.environ, FIXTURES=F)
    out = subprocess.run([Q, "sweep", "-c", os.path.join(ROOT, "examples/sweep-stories260K.json"), "--dry-run"],
                         env=env, capture_output=True, text=True, check=True).stdout
    return [line.split(None, 1)[1].strip() for line in out.splitlines()[1:] if line.strip()]


def sweep(tmp, model, exact):
    cfg = {
        "model": f"{F}/models/llama2c/{model}.bin", "tokenizer": f"{F}/models/llama2c/tok512.bin",
        "eval": {"text": os.path.join(ROOT, "fixtures/made/tinystories-eval.txt"), "ctx": CTX, "chunks": CHUNKS},
        "calibration": {"text": os.path.join(ROOT, "fixtures/made/tinystories-calib.txt"), "sequences": 64,
                        "length": CTX},
        "diagnostics": {"layer_chunks": LAYER_CHUNKS, "act_chunks": 1, "grid": False,
                        "sensitivity_chunks": SENS_CHUNKS if exact else 0},
        "variants": VARIANTS, "threads": 2}
    path = os.path.join(tmp, f"{model}-{exact}.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    db = os.path.join(tmp, f"{model}-{exact}.sqlite")
    subprocess.run([Q, "sweep", "-c", path, "--db", db], check=True, capture_output=True)
    con = sqlite3.connect(db)
    per = {}
    for spec, layer, kld in con.execute("SELECT v.spec, s.layer, s.kld_mean FROM sensitivity s JOIN variant v"
                                        " ON v.id = s.variant_id WHERE s.tensor = '' ORDER BY v.ord, s.layer"):
        per.setdefault(spec, []).append(kld)
    return per


VARIANTS = variants()
print(f"| model | variants | mean Spearman | min | max | worst layer found | within the exact top 2 |")
print("|---|---:|---:|---:|---:|---:|---:|")
rows = []
with tempfile.TemporaryDirectory() as tmp:
    for model in MODELS:
        est, ex = sweep(tmp, model, False), sweep(tmp, model, True)
        rho, hit, top2 = [], 0, 0
        for spec in ex:
            a, b = ex[spec], est[spec]
            rho.append(spearman(a, b))
            worst_est = max(range(len(b)), key=lambda i: b[i])
            order = sorted(range(len(a)), key=lambda i: -a[i])
            hit += worst_est == order[0]
            top2 += worst_est in order[:2]
            rows.append(f"| {model} | `{spec}` | {rho[-1]:+.2f} | exact {', '.join(f'{x:.2e}' for x in a)} |")
        n = len(rho)
        print(f"| {model} | {n} | {sum(rho) / n:+.2f} | {min(rho):+.2f} | {max(rho):+.2f} | {hit} of {n} | {top2} of {n} |")
print()
print("| model | variant | Spearman | exact per-layer KLD |")
print("|---|---|---:|---|")
print("\n".join(rows))
