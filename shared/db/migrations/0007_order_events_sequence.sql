-- The OMS asks for the highest event sequence at every start (PgLedger.max_sequence): without an index on it
-- that was a scan of all of order_events (0.6 s warm at 2M events, bound by the disk when cold). With it, one
-- step down the index. Building it reads the table once, at this migration.
CREATE INDEX order_events_sequence ON order_events (sequence);
