-- Instants are TEXT 'YYYY-MM-DDTHH:MM:SS.ffffffZ' in UTC: fixed width, so they sort as text.
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO meta (key, value) VALUES ('revision', 0), ('fence', 0);

CREATE TABLE deployments (
    workflow_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    document TEXT NOT NULL,
    spec_hash TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('active', 'paused')),
    revision INTEGER NOT NULL,
    updated_at TEXT NOT NULL,
    active_since TEXT NOT NULL
);

CREATE TABLE trigger_state (
    workflow_id TEXT NOT NULL REFERENCES deployments (workflow_id) ON DELETE CASCADE,
    trigger_id TEXT NOT NULL,
    type TEXT NOT NULL,
    cursor TEXT,
    health TEXT NOT NULL DEFAULT 'healthy',
    last_error TEXT,
    fence INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (workflow_id, trigger_id)
);

CREATE TABLE events (
    execution_id TEXT PRIMARY KEY,
    workflow_id TEXT NOT NULL,
    trigger_id TEXT NOT NULL,
    trigger_type TEXT NOT NULL,
    dedupe_key TEXT NOT NULL,
    scheduled_at TEXT,
    fired_at TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'dispatched', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    next_attempt_at TEXT,
    claimed_by TEXT,
    claimed_until TEXT,
    dispatched_at TEXT,
    UNIQUE (workflow_id, dedupe_key)
);
CREATE INDEX events_due ON events (next_attempt_at) WHERE status = 'pending';
CREATE INDEX events_workflow ON events (workflow_id, execution_id);
CREATE INDEX events_trigger ON events (workflow_id, trigger_id, execution_id);
