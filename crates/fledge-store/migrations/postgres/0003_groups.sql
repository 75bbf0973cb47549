-- Rollout groups: several apps' rollouts that move together (lock step) or in
-- order. The group document (`spec`) and the coordinator's `state` are opaque JSON,
-- kept as TEXT like every other JSON column. `ord` gives a total creation order
-- (timestamps can tie); listing newest first walks its index backwards.
-- `finished_at` is set when the group leaves the active phases.
CREATE TABLE rollout_groups (
    ord          BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    phase        TEXT NOT NULL,
    spec         TEXT NOT NULL,
    state        TEXT NOT NULL,
    revision     BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    finished_at  BIGINT
);

-- The active groups, newest first: what the coordinator drives.
CREATE INDEX rollout_groups_active
    ON rollout_groups (ord) WHERE phase IN ('Progressing', 'Paused');

-- The group a rollout belongs to, if any (NULL for rollouts of their own).
ALTER TABLE rollouts ADD COLUMN group_id TEXT REFERENCES rollout_groups (id);
CREATE INDEX rollouts_by_group ON rollouts (group_id, ord);
