-- Heartbeats, daemon runs, the occurrence ledger and the deployment history (explain, status).
-- A live daemon's row, rewritten every few seconds and removed when it stops cleanly.
CREATE TABLE heartbeats (
    replica_id TEXT PRIMARY KEY,
    listen TEXT NOT NULL,
    started_at TEXT NOT NULL,
    last_seen TEXT NOT NULL
);
-- One row per run of a daemon (updated in place): the gaps between runs are the downtime.
CREATE TABLE daemon_runs (
    replica_id TEXT NOT NULL,
    started_at TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    PRIMARY KEY (replica_id, started_at)
);
CREATE INDEX daemon_runs_seen ON daemon_runs (last_seen);
-- Deliveries that made no event (refused, filtered) and repeats (deduplicated).
CREATE TABLE occurrences (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    workflow_id TEXT NOT NULL,
    trigger_id TEXT NOT NULL,
    trigger_type TEXT NOT NULL,
    at TEXT NOT NULL,
    outcome TEXT NOT NULL,
    reason TEXT NOT NULL,
    execution_id TEXT
);
CREATE INDEX occurrences_workflow ON occurrences (workflow_id, at);
CREATE INDEX occurrences_trigger ON occurrences (workflow_id, trigger_id, id);
-- When each workflow was deployed or resumed (active) and paused.
CREATE TABLE deployment_log (
    workflow_id TEXT NOT NULL,
    at TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('active', 'paused'))
);
CREATE INDEX deployment_log_workflow ON deployment_log (workflow_id, at);
INSERT INTO deployment_log (workflow_id, at, state)
    SELECT workflow_id, active_since, 'active' FROM deployments;
INSERT INTO deployment_log (workflow_id, at, state)
    SELECT workflow_id, updated_at, 'paused' FROM deployments WHERE state = 'paused';
