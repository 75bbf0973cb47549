-- Apps registered with fledge: the config is opaque JSON owned by the server.
CREATE TABLE apps (
    name        TEXT PRIMARY KEY NOT NULL,
    config      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- One row per rollout. `ord` gives a total creation order (timestamps can tie);
-- `last_seq` is the seq of the rollout's newest event, so that events get gapless
-- per-rollout numbers under the row's write lock.
CREATE TABLE rollouts (
    ord          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    app          TEXT NOT NULL,
    version      TEXT NOT NULL,
    phase        TEXT NOT NULL,
    spec_text    TEXT NOT NULL,
    spec         TEXT NOT NULL,
    state        TEXT NOT NULL,
    revision     INTEGER NOT NULL,
    last_seq     INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    finished_at  INTEGER
);

-- At most one active rollout per app, enforced by the database so that racing
-- creators cannot both win.
CREATE UNIQUE INDEX rollouts_one_active_per_app
    ON rollouts (app) WHERE phase IN ('Pending', 'Progressing', 'Paused');
CREATE INDEX rollouts_by_app ON rollouts (app, ord);
CREATE INDEX rollouts_by_phase ON rollouts (phase, ord);

-- Append-only history. `id` is global (live streams resume from it), `seq` counts
-- per rollout from 1 without gaps.
CREATE TABLE events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    rollout_id  TEXT NOT NULL REFERENCES rollouts (id),
    seq         INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    actor       TEXT NOT NULL,
    message     TEXT NOT NULL,
    evidence    TEXT NOT NULL,
    UNIQUE (rollout_id, seq)
);

-- Leader leases with a fencing epoch that grows with every new holder.
CREATE TABLE leases (
    name        TEXT PRIMARY KEY NOT NULL,
    holder      TEXT,
    epoch       INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
