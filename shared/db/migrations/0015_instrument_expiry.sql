-- Instrument.expiry_ns (market.proto): the day a derivative contract expires, UTC nanoseconds of 00:00 IST that day,
-- from the scrip master. Kept so that a start from today's stored rows (a scrip master that cannot be read) and a
-- replay of a stored day know a contract's expiry: risk refuses entries in an expired one (CONTRACT_EXPIRED) and
-- strategies skip them. 0 for none (shares, indices, and rows written before this migration, until the next
-- scrip master rewrites them). A constant default rewrites no rows.
ALTER TABLE instrument_master
    ADD COLUMN expiry_ns bigint NOT NULL DEFAULT 0;
