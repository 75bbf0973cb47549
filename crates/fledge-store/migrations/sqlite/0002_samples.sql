-- Chart samples of rollouts: both versions' health and the canary's weight, every
-- few seconds while a rollout is active. `snapshots` says how many recorded
-- snapshots a sample stands for (older samples of a long rollout are merged). The
-- arm columns are all NULL when that version had no reading.
CREATE TABLE samples (
    rollout_id               TEXT NOT NULL REFERENCES rollouts (id),
    at                       INTEGER NOT NULL,
    snapshots                INTEGER NOT NULL,
    phase                    TEXT,
    canary_weight            INTEGER NOT NULL,
    stable_version           TEXT,
    stable_request_rate      REAL,
    stable_error_rate        REAL,
    stable_p50_ms            REAL,
    stable_p95_ms            REAL,
    stable_p99_ms            REAL,
    stable_requests          INTEGER,
    stable_errors            INTEGER,
    stable_total_requests    INTEGER,
    canary_version           TEXT,
    canary_request_rate      REAL,
    canary_error_rate        REAL,
    canary_p50_ms            REAL,
    canary_p95_ms            REAL,
    canary_p99_ms            REAL,
    canary_requests          INTEGER,
    canary_errors            INTEGER,
    canary_total_requests    INTEGER,
    PRIMARY KEY (rollout_id, at)
) WITHOUT ROWID;
