-- Heartbeats, daemon runs, the occurrence ledger and the deployment history (explain, status).
-- A live daemon's row, rewritten every few seconds and removed when it stops cleanly.
CREATE TABLE wfsched_heartbeats (
    replica_id TEXT COLLATE "C" PRIMARY KEY,
    listen TEXT NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    last_seen TIMESTAMPTZ NOT NULL
);
-- One row per run of a daemon (updated in place): the gaps between runs are the downtime.
CREATE TABLE wfsched_daemon_runs (
    replica_id TEXT COLLATE "C" NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    last_seen TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (replica_id, started_at)
);
CREATE INDEX wfsched_daemon_runs_seen ON wfsched_daemon_runs (last_seen);
-- Deliveries that made no event (refused, filtered) and repeats (deduplicated).
CREATE TABLE wfsched_occurrences (
    id BIGSERIAL PRIMARY KEY,
    workflow_id TEXT COLLATE "C" NOT NULL,
    trigger_id TEXT COLLATE "C" NOT NULL,
    trigger_type TEXT NOT NULL,
    at TIMESTAMPTZ NOT NULL,
    outcome TEXT NOT NULL,
    reason TEXT NOT NULL,
    execution_id TEXT
);
CREATE INDEX wfsched_occurrences_workflow ON wfsched_occurrences (workflow_id, at);
CREATE INDEX wfsched_occurrences_trigger ON wfsched_occurrences (workflow_id, trigger_id, id);
-- When each workflow was deployed or resumed (active) and paused.
CREATE TABLE wfsched_deployment_log (
    workflow_id TEXT COLLATE "C" NOT NULL,
    at TIMESTAMPTZ NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('active', 'paused'))
);
CREATE INDEX wfsched_deployment_log_workflow ON wfsched_deployment_log (workflow_id, at);
INSERT INTO wfsched_deployment_log (workflow_id, at, state)
    SELECT workflow_id, active_since, 'active' FROM wfsched_deployments;
INSERT INTO wfsched_deployment_log (workflow_id, at, state)
    SELECT workflow_id, updated_at, 'paused' FROM wfsched_deployments WHERE state = 'paused';
