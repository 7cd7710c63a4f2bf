-- Events partitioned by fired_at (wfsched/store/postgres/partitions.py explains the design).
-- The existing table becomes the DEFAULT partition in place: no row is copied, every row and
-- dedupe key stays; its rows are pruned row by row as they expire, new rows go to the time
-- partitions that the store creates (and moves rows of their range into) from now on.
ALTER TABLE wfsched_events RENAME TO wfsched_events_default;
ALTER TABLE wfsched_events_default DROP CONSTRAINT wfsched_events_workflow_id_dedupe_key_key;
ALTER TABLE wfsched_events_default DROP CONSTRAINT wfsched_events_pkey;
DROP INDEX wfsched_events_due;
DROP INDEX wfsched_events_workflow;
DROP INDEX wfsched_events_trigger;

-- A unique index of a partitioned table must contain the partition key, so the dedupe key's
-- uniqueness lives here, unpartitioned; a row is inserted in the same statement as its event.
CREATE TABLE wfsched_event_keys (
    workflow_id TEXT COLLATE "C" NOT NULL,
    dedupe_key TEXT COLLATE "C" NOT NULL,
    execution_id TEXT COLLATE "C" NOT NULL,
    fired_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (workflow_id, dedupe_key)
);
INSERT INTO wfsched_event_keys (workflow_id, dedupe_key, execution_id, fired_at)
SELECT workflow_id, dedupe_key, execution_id, fired_at FROM wfsched_events_default;

CREATE TABLE wfsched_events (
    execution_id TEXT COLLATE "C" NOT NULL,
    workflow_id TEXT COLLATE "C" NOT NULL,
    trigger_id TEXT COLLATE "C" NOT NULL,
    trigger_type TEXT NOT NULL,
    dedupe_key TEXT COLLATE "C" NOT NULL,
    scheduled_at TIMESTAMPTZ,
    fired_at TIMESTAMPTZ NOT NULL,
    payload JSONB NOT NULL,
    status TEXT NOT NULL CONSTRAINT wfsched_events_status_check
        CHECK (status IN ('pending', 'dispatched', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    next_attempt_at TIMESTAMPTZ,
    claimed_by TEXT,
    claimed_until TIMESTAMPTZ,
    dispatched_at TIMESTAMPTZ,
    PRIMARY KEY (execution_id, fired_at)
) PARTITION BY RANGE (fired_at);
CREATE INDEX wfsched_events_due ON wfsched_events (next_attempt_at) WHERE status = 'pending';
CREATE INDEX wfsched_events_workflow ON wfsched_events (workflow_id, execution_id);
CREATE INDEX wfsched_events_trigger ON wfsched_events (workflow_id, trigger_id, execution_id);
CREATE INDEX wfsched_events_age ON wfsched_events (status, fired_at)
    WHERE status IN ('dispatched', 'failed');
ALTER TABLE wfsched_events ATTACH PARTITION wfsched_events_default DEFAULT;

-- The time partitions: one row per attached partition, written with its DDL.
CREATE TABLE wfsched_partitions (
    name TEXT PRIMARY KEY,
    lo TIMESTAMPTZ NOT NULL,
    hi TIMESTAMPTZ NOT NULL
);
