-- Pruning finds expired events by status and age without scanning the table. Partial: a
-- pending event (the one every webhook inserts) costs this index nothing until it is
-- dispatched or failed. Queries must repeat the IN term for SQLite to use it.
CREATE INDEX events_age ON events (status, fired_at) WHERE status IN ('dispatched', 'failed');
