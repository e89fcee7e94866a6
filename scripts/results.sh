#!/bin/bash
# results.sh — `make results`: docs/RESULTS.md, the calibrated-PTQ table (issue 4's evidence),
# generated from qprobe's own results, never typed. Cuts tinystories_val.txt in two at the first
# paragraph that starts at or after its middle: calibration on the first half, evaluation on the
# second half up to byte 693998, where the built-in task suites take their items (docs/TASKS.md).
# Then runs `qprobe sweep` with examples/ptq-stories260K.json and examples/ptq-llama2xs.json into
# fresh study databases under build/results/, and writes docs/RESULTS.md from them with sqlite3
# queries (one table per model, the protocol as stored with the run, and checks of the claims).
# About two minutes on two cores. RESULTS_REUSE=1 skips the sweeps and rewrites the document from
# the databases already there. Depends on qprobe, sqlite3, dd, awk, realpath and git.
set -euo pipefail
Q=${QPROBE:-build/release/qprobe}
F=${FIXTURES:-../shared/fixtures}
OUT=${RESULTS_DIR:-build/results}
DOC=${RESULTS_DOC:-docs/RESULTS.md}
command -v sqlite3 > /dev/null || { echo "results.sh: sqlite3 not found (apt-get install sqlite3)" >&2; exit 2; }

# The configurations' ${FIXTURES} and ${QPROBE_RESULTS_DATA}: relative paths in them are taken
# from their own directory (examples/), so these are given relative to it; the stored runs then
# hold no machine's absolute paths.
export FIXTURES=$(realpath --relative-to=examples "$F")
mkdir -p "$OUT/data"
export QPROBE_RESULTS_DATA=$(realpath --relative-to=examples "$OUT/data")

# --- The two halves.
T="$F/data/tinystories/tinystories_val.txt"
TASKS_FROM=693998 # the built-in task suites' items come from here on (docs/TASKS.md)
size=$(stat -c %s "$T")
mid=$((size / 2))
# Bytes from the middle to the end of the first blank line after it (paragraphs end in "\n\n").
skip=$(dd if="$T" bs=4096 iflag=skip_bytes skip="$mid" count=1 status=none |
       LC_ALL=C awk 'BEGIN { RS = "\n\n" } { if (length($0) > 4094) exit 1; print length($0) + 2; exit }') ||
    { echo "results.sh: no paragraph break within 4 KiB after byte $mid of '$T'" >&2; exit 2; }
H=$((mid + skip))
[ "$H" -lt "$TASKS_FROM" ] || { echo "results.sh: '$T' is too short ($size bytes)" >&2; exit 2; }
dd if="$T" of="$OUT/data/calib.txt" bs=65536 iflag=count_bytes count="$H" status=none
dd if="$T" of="$OUT/data/eval.txt" bs=65536 iflag=skip_bytes,count_bytes skip="$H" count=$((TASKS_FROM - H)) status=none

# --- The sweeps, each into a fresh database (the document describes exactly one run per model):
# examples/ptq-MODEL.json into MODEL.sqlite, examples/qat-MODEL.json into qat-MODEL.sqlite.
# RESULTS_THREADS=N overrides the configurations' thread count (the numbers do not depend on it).
models=(stories260K llama2xs)
for cfg in ptq qat; do
    for m in "${models[@]}"; do
        db="$OUT/$m.sqlite"
        [ "$cfg" = qat ] && db="$OUT/qat-$m.sqlite"
        [ "${RESULTS_REUSE:-0}" = 1 ] && [ -f "$db" ] && continue
        rm -f "$db" "$db-wal" "$db-shm"
        echo "results.sh: qprobe sweep -c examples/$cfg-$m.json --db $db" >&2
        "$Q" sweep -c "examples/$cfg-$m.json" --db "$db" ${RESULTS_THREADS:+-t "$RESULTS_THREADS"} >&2
    done
done

# --- The document.
sql() { sqlite3 -batch -noheader "$1" "$2"; }

# One row per variant of the run: the metrics the table shows.
METRICS="
WITH m AS (
  SELECT v.ord, v.spec, v.is_reference AS ref, v.bits_per_weight AS bpw, v.quant_seconds AS qs,
         max(CASE WHEN x.suite = 'ppl' AND x.name = 'ppl' THEN x.value END) AS ppl,
         max(CASE WHEN x.suite = 'ppl' AND x.name = 'ppl' THEN x.stderr END) AS ppl_se,
         max(CASE WHEN x.suite = 'ppl' AND x.name = 'ppl_ref' THEN x.value END) AS ppl_ref,
         max(CASE WHEN x.suite = 'kld' AND x.name = 'mean' THEN x.value END) AS kld,
         max(CASE WHEN x.suite = 'kld' AND x.name = 'mean' THEN x.stderr END) AS kld_se,
         max(CASE WHEN x.suite = 'kld' AND x.name = 'p99' THEN x.value END) AS p99,
         max(CASE WHEN x.suite = 'top1' AND x.name = 'agreement' THEN x.value END) AS top1,
         max(CASE WHEN x.suite = 'top1' AND x.name = 'agreement' THEN x.stderr END) AS top1_se
  FROM variant v JOIN metric x ON x.variant_id = v.id
  WHERE v.run_id = (SELECT max(id) FROM run)
  GROUP BY v.id)"

TABLE="$METRICS
SELECT '| spec | bpw | PPL ± | ΔPPL % | mean KLD ± | KLD p99 | top-1 % ± |'
UNION ALL SELECT '|---|---:|---:|---:|---:|---:|---:|'
UNION ALL SELECT * FROM (
  SELECT CASE WHEN ref THEN printf('| fp32 (reference) | 32 | %.4f ± %.4f | | | | |', ppl, ppl_se)
         ELSE printf('| \`%s\` | %.3f | %.4f ± %.4f | %+.2f | %.5f ± %.5f | %.4f | %.2f ± %.2f |',
                     replace(spec, '|', '\\|'), bpw, ppl, ppl_se, 100.0 * (ppl / ppl_ref - 1), kld, kld_se,
                     p99, 100.0 * top1, 100.0 * top1_se) END
  FROM m ORDER BY ord);"

PROTOCOL="
WITH r AS (SELECT * FROM run WHERE id = (SELECT max(id) FROM run))
SELECT printf('- Model \`%s\` (sha256 %s…): dim %d, hidden %d, %d layers, %d/%d heads, vocab %d, trained context %d, %d parameters.',
              replace(model_path, rtrim(model_path, replace(model_path, '/', '')), ''), substr(model_sha256, 1, 12),
              dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab, seq_len, n_params) FROM r
UNION ALL SELECT printf('- Evaluation: %d bytes (%d tokens, sha256 %s…), protocol %s: %d windows of %d tokens, BOS first, each scored by its predictions at positions %d–%d (%s tokens in all); KLD, ΔPPL and top-1 against the fp32 model on the same windows.',
              text_bytes, text_tokens, substr(text_sha256, 1, 12), protocol, chunks, ctx, score_from, score_to,
              (SELECT x.n FROM metric x JOIN variant v ON v.id = x.variant_id
               WHERE v.run_id = r.id AND x.suite = 'ppl' AND x.name = 'ppl' LIMIT 1)) FROM r
UNION ALL SELECT printf('- Calibration: %d windows of %d tokens from the start of the first half (sha256 %s…); %d bytes shared with the evaluation text in runs of 256 bytes or more.',
              json_extract(config, '\$.calibration.sequences'), json_extract(config, '\$.calibration.length'),
              substr(calib_sha256, 1, 12), calib_overlap_bytes) FROM r
UNION ALL SELECT printf('- qprobe %s (commit %s, as the binary records it), %s kernels, GEMM %s, %d threads; run %s.',
              qprobe_version, qprobe_commit, isa, gemm, threads, created) FROM r;"

# Checks of the issue's claims, each computed from the stored numbers.
CHECKS="$METRICS,
  cmp AS (SELECT a.spec AS s, b.spec AS base, a.ppl AS p, b.ppl AS bp, a.kld AS k, b.kld AS bk
          FROM m a JOIN m b ON b.spec = replace(replace(a.spec, 'gptq:', 'rtn:'), 'awq:', 'rtn:')
          WHERE a.spec LIKE 'gptq:%' OR a.spec LIKE 'awq:%'
          UNION ALL
          SELECT a.spec, b.spec, a.ppl, b.ppl, a.kld, b.kld FROM m a JOIN m b ON b.spec = 'q4_k_m'
          WHERE a.spec = 'q4_k_m;imatrix'),
  best AS (SELECT CASE WHEN spec LIKE '%act=tensor' THEN 'w8a8:act=tensor' ELSE 'w8a8' END AS base, spec, kld, ppl,
                  row_number() OVER (PARTITION BY spec LIKE '%act=tensor' ORDER BY kld) AS r
           FROM m WHERE spec LIKE 'smoothquant:%')
SELECT printf('- \`%s\` against \`%s\`: PPL %.4f vs %.4f, mean KLD %.5f vs %.5f — %s.', s, base, p, bp, k, bk,
              CASE WHEN p < bp AND k < bk THEN 'lower on both'
                   WHEN p < bp THEN 'lower PPL only' WHEN k < bk THEN 'lower KLD only' ELSE 'not lower' END)
FROM cmp
UNION ALL
SELECT printf('- best SmoothQuant of the α sweep, \`%s\`, against \`%s\`: mean KLD %.5f vs %.5f, PPL %.4f vs %.4f — %s.',
              b.spec, b.base, b.kld, w.kld, b.ppl, w.ppl, CASE WHEN b.kld < w.kld THEN 'lower KLD' ELSE 'not lower' END)
FROM best b JOIN m w ON w.spec = b.base WHERE b.r = 1;"

# QAT (examples/qat-MODEL.json): the table with training steps and seconds, and the checks
# against RTN, GPTQ and AWQ on the same grid.
QAT_TABLE="$METRICS,
  q AS (SELECT *, CASE WHEN spec LIKE 'qat:%'
                  THEN CAST(substr(spec, instr(spec, ':steps=') + 7,
                                   instr(substr(spec, instr(spec, ':steps=') + 7) || ':', ':') - 1) AS INTEGER) END AS steps
        FROM m)
SELECT '| spec | bpw | PPL ± | ΔPPL % | mean KLD ± | KLD p99 | top-1 % ± | steps | seconds | training tok/s |'
UNION ALL SELECT '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|'
UNION ALL SELECT * FROM (
  SELECT CASE WHEN ref THEN printf('| fp32 (reference) | 32 | %.4f ± %.4f | | | | | | | |', ppl, ppl_se)
         ELSE printf('| \`%s\` | %.3f | %.4f ± %.4f | %+.2f | %.5f ± %.5f | %.4f | %.2f ± %.2f | %s | %.1f | %s |',
                     spec, bpw, ppl, ppl_se, 100.0 * (ppl / ppl_ref - 1), kld, kld_se, p99, 100.0 * top1,
                     100.0 * top1_se, coalesce(steps, ''), qs,
                     CASE WHEN steps IS NULL THEN '' ELSE printf('%.0f', steps * 4.0 *
                       (SELECT json_extract(config, '\$.calibration.length') FROM run WHERE id = (SELECT max(id) FROM run))
                       / qs) END) END
  FROM q ORDER BY ord);"

QAT_CHECKS="$METRICS
SELECT printf('- \`%s\` against \`%s\`: PPL %.4f vs %.4f, mean KLD %.5f vs %.5f — %s.', a.spec, b.spec, a.ppl, b.ppl,
              a.kld, b.kld, CASE WHEN a.ppl < b.ppl AND a.kld < b.kld THEN 'lower on both'
                                 WHEN a.ppl < b.ppl THEN 'lower PPL only' WHEN a.kld < b.kld THEN 'lower KLD only'
                                 ELSE 'not lower' END)
FROM m a JOIN m b ON b.spec IN (replace(substr(a.spec, 1, instr(a.spec, ':steps=') - 1), 'qat:', 'rtn:'),
                                replace(substr(a.spec, 1, instr(a.spec, ':steps=') - 1), 'qat:', 'gptq:'),
                                replace(substr(a.spec, 1, instr(a.spec, ':steps=') - 1), 'qat:', 'awq:'))
WHERE a.spec LIKE 'qat:%' ORDER BY a.ord, b.ord;"

# One model's section: db, a suffix for its title, the table query, what the checks are, the checks query.
section() {
    echo
    echo "## $(sql "$1" "SELECT replace(model_path, rtrim(model_path, replace(model_path, '/', '')), '') FROM run WHERE id = (SELECT max(id) FROM run);")$2"
    echo
    sql "$1" "$PROTOCOL"
    echo
    sql "$1" "$3"
    echo
    echo "Checks ($4):"
    echo
    sql "$1" "$5"
}

SECONDS_SQL="$METRICS
SELECT group_concat(printf('\`%s\` %.1f s', spec, qs), ', ') FROM m
WHERE spec LIKE 'gptq:%' OR spec LIKE 'awq:%' OR spec LIKE 'smoothquant:alpha=0.5' OR spec LIKE 'q4_k_m;imatrix';"

{
    echo "# Results: calibrated PTQ on held-out TinyStories"
    echo
    echo "<!-- Generated by \`make results\` (scripts/results.sh) from qprobe's study databases; do not edit. -->"
    echo
    echo "GPTQ, AWQ, SmoothQuant W8A8 and llama.cpp's imatrix against round-to-nearest, with the same"
    echo "bits and groups, on text the calibration did not see: the first half"
    echo "of \`data/tinystories/tinystories_val.txt\` (bytes [0, $H), cut at the first paragraph at or"
    echo "after the middle) calibrates, the second half up to byte $TASKS_FROM (bytes [$H, $TASKS_FROM);"
    echo "the built-in task suites take their items from there on) is evaluated. Configurations:"
    echo "\`examples/ptq-stories260K.json\`, \`examples/ptq-llama2xs.json\`; methods and their deviations"
    echo "from the papers: docs/PTQ.md; specs: docs/SPECS.md; the columns: docs/SCHEMA.md. Generated"
    echo "from the tree at \`$(git describe --always --dirty --abbrev=12 2>/dev/null || echo unknown)\`."
    echo
    echo "bpw: bits per weight of the 2-D weights as stored (W8A8 keeps the embedding and the classifier"
    echo "in fp32, as SmoothQuant does). PPL ±: perplexity with its one-sigma uncertainty; ΔPPL: against"
    echo "the fp32 model on the same windows; KLD: mean per-token KL divergence from the fp32 model's"
    echo "next-token distribution ± one sigma, and its 99th percentile; top-1: share of scored tokens"
    echo "whose most likely next token is the fp32 model's. W8A8 rows run with int8 activations, per"
    echo "token (dynamic) or, with \`act=tensor\`, one static scale per linear input from calibration."
    for m in "${models[@]}"; do
        db="$OUT/$m.sqlite"
        section "$db" "" "$TABLE" "issue 4's evidence; the SmoothQuant α is the best of the sweep on this text" "$CHECKS"
        echo
        echo "Quantization time, calibration statistics included ($(sql "$db" "SELECT threads FROM run WHERE id = (SELECT max(id) FROM run);") threads, shared machine): $(sql "$db" "$SECONDS_SQL")."
    done
    echo
    echo "# Quantization-aware training against PTQ at 3 and 2 bits"
    echo
    echo "\`qat:\` (docs/QAT.md) trains the quantized model to match the fp32 one (KL divergence of the"
    echo "next-token distributions, straight-through weights, learned group scales) on the same first half of"
    echo "the text that calibrates GPTQ and AWQ, and is evaluated on the same second half. Every row uses the"
    echo "same grid: 3 or 2 bits, groups of 32, asymmetric, fp16 scales. steps: optimizer steps of 4 windows;"
    echo "seconds: the variant's quantization time (training, or GPTQ/AWQ calibration; shared machine);"
    echo "training tok/s: steps · 4 · window length / seconds. Configurations: \`examples/qat-stories260K.json\`,"
    echo "\`examples/qat-llama2xs.json\`."
    for m in "${models[@]}"; do
        section "$OUT/qat-$m.sqlite" ", QAT" "$QAT_TABLE" "issue 19's evidence: QAT against each PTQ method on its grid" "$QAT_CHECKS"
    done
} > "$DOC.tmp"
mv "$DOC.tmp" "$DOC"
echo "results.sh: wrote $DOC" >&2
