-- Chart samples of rollouts: both versions' health and the canary's weight, every
-- few seconds while a rollout is active. `snapshots` says how many recorded
-- snapshots a sample stands for (older samples of a long rollout are merged). The
-- arm columns are all NULL when that version had no reading.
CREATE TABLE samples (
    rollout_id               TEXT NOT NULL REFERENCES rollouts (id),
    at                       BIGINT NOT NULL,
    snapshots                BIGINT NOT NULL,
    phase                    TEXT,
    canary_weight            BIGINT NOT NULL,
    stable_version           TEXT,
    stable_request_rate      DOUBLE PRECISION,
    stable_error_rate        DOUBLE PRECISION,
    stable_p50_ms            DOUBLE PRECISION,
    stable_p95_ms            DOUBLE PRECISION,
    stable_p99_ms            DOUBLE PRECISION,
    stable_requests          BIGINT,
    stable_errors            BIGINT,
    stable_total_requests    BIGINT,
    canary_version           TEXT,
    canary_request_rate      DOUBLE PRECISION,
    canary_error_rate        DOUBLE PRECISION,
    canary_p50_ms            DOUBLE PRECISION,
    canary_p95_ms            DOUBLE PRECISION,
    canary_p99_ms            DOUBLE PRECISION,
    canary_requests          BIGINT,
    canary_errors            BIGINT,
    canary_total_requests    BIGINT,
    PRIMARY KEY (rollout_id, at)
);
