-- History filtered by status reads the failed events of a workflow (or of all) by their own
-- index, whatever the number of events: partial, so recording and dispatching an event cost
-- it nothing, only a failure adds an entry. (Pending ones are read by events_due.)
CREATE INDEX events_failed ON events (workflow_id, execution_id) WHERE status = 'failed';
-- The dashboard's search by id or name (and its count) reads this instead of the documents.
CREATE INDEX deployments_names ON deployments (workflow_id, name);
