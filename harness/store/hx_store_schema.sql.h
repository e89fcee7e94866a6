// store_schema.sql.h — the SQLite schema of a qprobe study, version by version (docs/SCHEMA.md).
// Included by store.c only. Each entry migrates from user_version i to i + 1; a fresh database
// runs them all. Never edit a shipped migration: add the next one.
#ifndef HX_STORE_SCHEMA_SQL_H
#define HX_STORE_SCHEMA_SQL_H

static const char *const hx_store_migrations[] = {
    // --- version 1
    "CREATE TABLE run (\n"
    "  id INTEGER PRIMARY KEY,\n"
    "  identity TEXT NOT NULL UNIQUE,    -- SHA-256 of everything a result depends on\n"
    "  created TEXT NOT NULL,            -- UTC, ISO 8601\n"
    "  label TEXT,\n"
    "  model_path TEXT NOT NULL, model_sha256 TEXT NOT NULL, model_format TEXT,\n"
    "  dim INTEGER, hidden_dim INTEGER, n_layers INTEGER, n_heads INTEGER, n_kv_heads INTEGER,\n"
    "  vocab INTEGER, seq_len INTEGER, n_params INTEGER,\n"
    "  tokenizer TEXT, tokenizer_sha256 TEXT,\n"
    "  text_path TEXT, text_sha256 TEXT, text_bytes INTEGER, text_tokens INTEGER,\n"
    "  protocol TEXT, ctx INTEGER, stride INTEGER, score_from INTEGER, score_to INTEGER,\n"
    "  bos INTEGER, chunks INTEGER,\n"
    "  calib_path TEXT, calib_sha256 TEXT, calib_overlap_bytes INTEGER,\n"
    "  qprobe_version TEXT, qprobe_commit TEXT, isa TEXT, gemm TEXT, threads INTEGER, host TEXT,\n"
    "  config TEXT                       -- the sweep configuration, verbatim (NULL for eval)\n"
    ");\n"
    "CREATE TABLE variant (\n"
    "  id INTEGER PRIMARY KEY,\n"
    "  run_id INTEGER NOT NULL REFERENCES run(id),\n"
    "  spec TEXT NOT NULL,               -- verbatim, as printed by the spec grammar\n"
    "  ord INTEGER NOT NULL,             -- position in the sweep (0 = the reference)\n"
    "  is_reference INTEGER NOT NULL DEFAULT 0,\n"
    "  bits_per_weight REAL, weight_bytes INTEGER, n_weights INTEGER,\n"
    "  quant_seconds REAL, eval_seconds REAL, tokens INTEGER, tokens_per_second REAL,\n"
    "  finished TEXT NOT NULL,\n"
    "  UNIQUE (run_id, spec)\n"
    ");\n"
    "CREATE TABLE metric (\n"
    "  variant_id INTEGER NOT NULL REFERENCES variant(id),\n"
    "  suite TEXT NOT NULL,              -- 'ppl', 'kld', 'dp', 'top1', 'argmax', or a task suite\n"
    "  name TEXT NOT NULL,\n"
    "  value REAL, stderr REAL, n INTEGER,\n"
    "  PRIMARY KEY (variant_id, suite, name)\n"
    ");\n"
    "CREATE TABLE layer_error (\n"
    "  variant_id INTEGER NOT NULL REFERENCES variant(id),\n"
    "  layer INTEGER NOT NULL, site TEXT NOT NULL,\n"
    "  kind TEXT NOT NULL,               -- 'accumulated' or 'local'\n"
    "  rel_err REAL, cosine REAL, row_cosine REAL, rows INTEGER,\n"
    "  PRIMARY KEY (variant_id, layer, site, kind)\n"
    ");\n"
    "CREATE TABLE sensitivity (\n"
    "  variant_id INTEGER NOT NULL REFERENCES variant(id),\n"
    "  layer INTEGER NOT NULL,\n"
    "  tensor TEXT NOT NULL,             -- '' = the whole layer quantized alone\n"
    "  kld_mean REAL, kld_stderr REAL, top1 REAL, tokens INTEGER,\n"
    "  rank INTEGER,                     -- 1 = most sensitive (highest mean KLD)\n"
    "  PRIMARY KEY (variant_id, layer, tensor)\n"
    ");\n"
    "CREATE TABLE weight_stat (\n"
    "  run_id INTEGER NOT NULL REFERENCES run(id),\n"
    "  tensor TEXT NOT NULL, rows INTEGER, cols INTEGER,\n"
    "  mean REAL, std REAL, kurtosis REAL, max_abs REAL, max_over_std REAL,\n"
    "  frac_3sigma REAL, frac_6sigma REAL,\n"
    "  outlier_channels TEXT,            -- JSON array of input-channel indices, largest first\n"
    "  PRIMARY KEY (run_id, tensor)\n"
    ");\n"
    "CREATE TABLE act_stat (\n"
    "  run_id INTEGER NOT NULL REFERENCES run(id),\n"
    "  layer INTEGER NOT NULL, site TEXT NOT NULL, width INTEGER, rows INTEGER,\n"
    "  kurtosis REAL, max_abs REAL, median_channel_absmax REAL,\n"
    "  top_channels TEXT,                -- JSON array of [channel, absmax], largest first\n"
    "  PRIMARY KEY (run_id, layer, site)\n"
    ");\n"
    "CREATE TABLE grid_stat (\n"
    "  variant_id INTEGER NOT NULL REFERENCES variant(id),\n"
    "  tensor TEXT NOT NULL, format TEXT NOT NULL, n_codes INTEGER,\n"
    "  groups INTEGER, weights INTEGER, distinct_inputs INTEGER,\n"
    "  codes_used_mean REAL, codes_used_min INTEGER, collisions INTEGER,\n"
    "  zeroed INTEGER, clipped INTEGER, entropy_bits REAL,\n"
    "  rmse REAL, rel_err REAL,\n"
    "  identical_rows INTEGER, near_duplicate_rows INTEGER, -- embedding/output only\n"
    "  PRIMARY KEY (variant_id, tensor)\n"
    ");\n"
    "CREATE TABLE histogram (\n"
    "  run_id INTEGER NOT NULL REFERENCES run(id),\n"
    "  variant_id INTEGER REFERENCES variant(id), -- NULL: the unquantized model\n"
    "  kind TEXT NOT NULL,               -- 'weight_log10_abs', 'act_channel_absmax_log10', 'codes'\n"
    "  subject TEXT NOT NULL,            -- tensor or site name\n"
    "  bin INTEGER NOT NULL, lo REAL, hi REAL, count INTEGER NOT NULL\n"
    ");\n"
    "CREATE INDEX histogram_subject ON histogram (run_id, kind, subject);\n"
    "CREATE TABLE task_item (\n"
    "  variant_id INTEGER NOT NULL REFERENCES variant(id),\n"
    "  suite TEXT NOT NULL, item INTEGER NOT NULL,\n"
    "  gold INTEGER, pred INTEGER, pred_norm INTEGER,\n"
    "  correct INTEGER, correct_norm INTEGER, margin REAL,\n"
    "  PRIMARY KEY (variant_id, suite, item)\n"
    ");\n"
    "CREATE TABLE token (\n"
    "  variant_id INTEGER NOT NULL REFERENCES variant(id),\n"
    "  pos INTEGER NOT NULL,             -- index of the scored token in the protocol's order\n"
    "  token INTEGER, nll REAL, nll_ref REAL, kld REAL, dp REAL, top1_same INTEGER,\n"
    "  PRIMARY KEY (variant_id, pos)\n"
    ");\n",
    // --- version 2: which variants are the same model. SHA-256 over every 2-D weight as the engine
    // runs it (type, shape, bytes) and the activation quantization it runs with; NULL in rows
    // stored before version 2.
    "ALTER TABLE variant ADD COLUMN weights_sha256 TEXT;\n",
    // --- version 3: the CPU and every kernel family's path, next to isa (recorded, not part of
    // the identity: results do not depend on them)
    ("ALTER TABLE run ADD COLUMN cpu TEXT;     -- CPU model name and feature flags\n"
     "ALTER TABLE run ADD COLUMN kernels TEXT; -- each kernel family's path (kn_engine_kernels)\n"),
    // --- version 4: the model family (recorded, not part of the identity: the model's SHA-256,
    // config.json included for safetensors, already fixes it); NULL in runs stored before
    "ALTER TABLE run ADD COLUMN arch TEXT;    -- llama, qwen2, phi3, gemma2 (GGUF general.architecture)\n",
    // --- version 5: free-running generation (docs/GENERATION.md): one row per (variant, setup,
    // prompt) with the continuation, its description and the comparison with the reference's.
    "CREATE TABLE gen_item (\n"
    "  variant_id INTEGER NOT NULL REFERENCES variant(id),\n"
    "  setup TEXT NOT NULL,              -- prompts, L, temperature, seed (hx_gen_setup)\n"
    "  prompt INTEGER NOT NULL,          -- 0-based\n"
    "  prompt_text TEXT,\n"
    "  tokens TEXT NOT NULL,             -- the continuation's ids, space-separated, stop token included\n"
    "  text TEXT,                        -- the continuation decoded (stop token left out)\n"
    "  n_tokens INTEGER,\n"
    "  eos_pos INTEGER,                  -- position of the stop token; NULL: none within L\n"
    "  loop_start INTEGER, loop_period INTEGER, -- the cycle it ends in; NULL: none\n"
    "  distinct_1 REAL, distinct_2 REAL,\n"
    "  nll_self REAL,                    -- mean NLL per token under the model that generated it\n"
    "  ref_nll REAL,                     -- ... under the reference; NULL: not scored yet\n"
    "  first_div INTEGER,                -- first position differing from the reference's; NULL: identical\n"
    "  agree_k REAL,                     -- agreement with the reference's in the first K tokens\n"
    "  PRIMARY KEY (variant_id, setup, prompt)\n"
    ");\n",
    // --- version 6: how a sensitivity row was measured: 'exact' (only that layer or tensor
    // quantized, the KLD of a full pass) or 'estimate' (the variant's KLD split among layers by
    // their local error, docs/SWEEP.md "Sensitivity"); rows stored before version 6 are exact.
    "ALTER TABLE sensitivity ADD COLUMN method TEXT;\n"
    "UPDATE sensitivity SET method = 'exact';\n",
};

#endif
