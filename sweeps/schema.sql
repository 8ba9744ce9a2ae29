-- The sweep store: one SQLite file, `<sweep dir>/hxt.sqlite`, written only by the driver.
-- analysis/ reads it with plain SQL; change both sides together.

PRAGMA application_id = 1752724529;  -- 0x68787431, "hxt1": marks the file as an hxt store

CREATE TABLE IF NOT EXISTS sweep (
    -- name, created_at, git_commit and hxt_version (of the first run), shared (JSON of the settings
    -- every run shares), config_hash (hash of the set of every run id in the store) and config_toml
    -- (the latest sweep file; every one is kept in `configs`)
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS configs (   -- every sweep file text this directory has run, oldest first
    seq         INTEGER PRIMARY KEY,
    config_hash TEXT NOT NULL,         -- hash of the set of the file's run ids
    config_toml TEXT NOT NULL,
    added_at    TEXT NOT NULL,
    git_commit  TEXT,
    n_runs      INTEGER NOT NULL,      -- runs the file describes
    runs_added  INTEGER NOT NULL       -- of them, runs the store did not hold yet
);

CREATE TABLE IF NOT EXISTS runs (
    run_id         TEXT PRIMARY KEY,   -- hash of the canonical run config (+ package version)
    config_json    TEXT NOT NULL,      -- the canonical run config
    task           TEXT NOT NULL,      -- registry name
    task_params    TEXT NOT NULL,      -- JSON of the task's structural parameters
    arch           TEXT NOT NULL,      -- architecture label, e.g. "GGGA", "G-noneg"
    pattern        TEXT NOT NULL,      -- mixer pattern, e.g. "GGGA"
    neg_eigval     INTEGER NOT NULL,   -- 1 if recurrent mixers may have negative eigenvalues
    target_params  INTEGER NOT NULL,   -- the size axis (non-embedding parameters asked for)
    lr             REAL NOT NULL,
    seed           INTEGER NOT NULL,
    status         TEXT NOT NULL,      -- pending | running | done | failed | diverged
    attempts       INTEGER NOT NULL DEFAULT 0,
    error          TEXT,               -- last error text (failed) or the diverging step (diverged)
    n_params       INTEGER,            -- non-embedding parameters of the built model
    n_params_total INTEGER,            -- all parameters
    state_size     INTEGER,            -- elements of recurrent state / KV cache at the eval length
    d_model        INTEGER,
    n_layers       INTEGER,
    steps          INTEGER,            -- optimiser steps taken
    final_loss     REAL,
    train_acc      REAL,               -- training accuracy when training stopped
    solved_step    INTEGER,            -- step at which the early-stop accuracy was reached, or NULL
    started_at     TEXT,
    finished_at    TEXT,
    wall_seconds   REAL,
    device         TEXT,               -- e.g. "cpu", "NVIDIA H100 80GB HBM3"
    git_commit     TEXT,
    step_mode      TEXT,               -- "graph" (captured CUDA graph steps) or "eager"
    capture_error  TEXT,               -- why capture fell back to eager steps, if it did
    pack_size      INTEGER             -- runs trained together as one stacked model
);

CREATE TABLE IF NOT EXISTS metrics (   -- the training curve
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    step   INTEGER NOT NULL,
    loss   REAL NOT NULL,
    acc    REAL NOT NULL,              -- per-token accuracy on supervised positions
    lr     REAL,
    PRIMARY KEY (run_id, step)
);

CREATE TABLE IF NOT EXISTS evals (     -- held-out evaluation, one row per difficulty bin and slice
    run_id      TEXT NOT NULL REFERENCES runs(run_id),
    knob        TEXT NOT NULL,         -- the knob binned along, e.g. "length", "num_swaps"
    value       INTEGER NOT NULL,      -- the knob's value in this bin
    in_range    INTEGER NOT NULL,      -- 1 if the value lies inside the training range
    slice       TEXT NOT NULL,         -- "all", or a meta slice such as "moved"
    n           INTEGER NOT NULL,      -- examples evaluated
    n_tokens    INTEGER NOT NULL,      -- supervised positions evaluated
    token_acc   REAL NOT NULL,
    seq_acc     REAL NOT NULL,
    scaled_acc  REAL NOT NULL,         -- (token_acc - chance) / (1 - chance)
    chance      REAL NOT NULL,
    loss        REAL NOT NULL,         -- mean cross-entropy on supervised positions
    PRIMARY KEY (run_id, knob, value, slice)
);
