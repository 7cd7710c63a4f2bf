-- Identifier columns use COLLATE "C" (byte order), so "sorted by id", "newest first" (ULIDs)
-- and max(execution_id) match the SQLite backend whatever the database's locale is.
CREATE TABLE wfsched_meta (
    key TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO wfsched_meta (key, value) VALUES ('revision', 0), ('fence', 0);

CREATE TABLE wfsched_deployments (
    workflow_id TEXT COLLATE "C" PRIMARY KEY,
    name TEXT NOT NULL,
    document JSONB NOT NULL,
    spec_hash TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('active', 'paused')),
    revision BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    active_since TIMESTAMPTZ NOT NULL
);

CREATE TABLE wfsched_trigger_state (
    workflow_id TEXT COLLATE "C" NOT NULL REFERENCES wfsched_deployments (workflow_id) ON DELETE CASCADE,
    trigger_id TEXT COLLATE "C" NOT NULL,
    type TEXT NOT NULL,
    cursor JSONB,
    health TEXT NOT NULL DEFAULT 'healthy',
    last_error TEXT,
    fence BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (workflow_id, trigger_id)
);

CREATE TABLE wfsched_events (
    execution_id TEXT COLLATE "C" PRIMARY KEY,
    workflow_id TEXT COLLATE "C" NOT NULL,
    trigger_id TEXT COLLATE "C" NOT NULL,
    trigger_type TEXT NOT NULL,
    dedupe_key TEXT COLLATE "C" NOT NULL,
    scheduled_at TIMESTAMPTZ,
    fired_at TIMESTAMPTZ NOT NULL,
    payload JSONB NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'dispatched', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    next_attempt_at TIMESTAMPTZ,
    claimed_by TEXT,
    claimed_until TIMESTAMPTZ,
    dispatched_at TIMESTAMPTZ,
    UNIQUE (workflow_id, dedupe_key)
);
CREATE INDEX wfsched_events_due ON wfsched_events (next_attempt_at) WHERE status = 'pending';
CREATE INDEX wfsched_events_workflow ON wfsched_events (workflow_id, execution_id);
CREATE INDEX wfsched_events_trigger ON wfsched_events (workflow_id, trigger_id, execution_id);
