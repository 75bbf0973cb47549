-- Rollout groups: several apps' rollouts that move together (lock step) or in
-- order. The group document (`spec`) and the coordinator's `state` are opaque JSON.
-- `ord` gives a total creation order (timestamps can tie); listing newest first
-- walks it backwards. `finished_at` is set when the group leaves the active phases.
CREATE TABLE rollout_groups (
    ord          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    name         TEXT NOT NULL,
    phase        TEXT NOT NULL,
    spec         TEXT NOT NULL,
    state        TEXT NOT NULL,
    revision     INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    finished_at  INTEGER
);

-- The active groups, newest first: what the coordinator drives.
CREATE INDEX rollout_groups_active
    ON rollout_groups (ord) WHERE phase IN ('Progressing', 'Paused');

-- The group a rollout belongs to, if any (NULL for rollouts of their own).
ALTER TABLE rollouts ADD COLUMN group_id TEXT REFERENCES rollout_groups (id);
CREATE INDEX rollouts_by_group ON rollouts (group_id, ord);
