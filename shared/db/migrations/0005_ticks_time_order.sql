-- All tokens' ticks in (ts, seq) order, a page at a time from a key (queries.ticks_page, replay): without an index
-- in that order every page sorted the rest of its range, so reading a day was quadratic. Defined on the parent, so
-- every partition has it, those made later by partitions.ensure_days (CREATE TABLE ... PARTITION OF) too.
-- Costs the tick writer's COPY about 17% of its rows/s (measured against no index and a BRIN on ts, 2026-11-26).
CREATE INDEX market_ticks_ts_seq ON market_ticks (ts, seq);
