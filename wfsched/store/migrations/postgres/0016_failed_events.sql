-- History filtered by status reads the failed events of a workflow (or of all) by their own
-- index, whatever the number of events: partial, so recording and dispatching an event cost
-- it nothing, only a failure adds an entry. (Pending ones are read by wfsched_events_due.)
CREATE INDEX wfsched_events_failed ON wfsched_events (workflow_id, execution_id)
    WHERE status = 'failed';
