-- History filtered by status reads the failed events of a workflow (or of all) by their own
-- index, whatever the number of events: partial, so recording and dispatching an event cost
-- it nothing, only a failure adds an entry. (Pending ones are read by wfsched_events_due.)
CREATE INDEX wfsched_events_failed ON wfsched_events (workflow_id, execution_id)
    WHERE status = 'failed';
-- The dashboard's search by id or name (and its count) reads this instead of the documents.
CREATE INDEX wfsched_deployments_names ON wfsched_deployments (workflow_id, name);
