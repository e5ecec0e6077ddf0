-- Instrument.is_index (market.proto): an index such as Nifty 50, whose ticks carry its value. Kept so a replay of
-- a stored day knows its indices as such (risk refuses an order for one; a strategy cannot trade one). Rows
-- written before this migration are instruments that trade. A constant default rewrites no rows.
ALTER TABLE instrument_master
    ADD COLUMN is_index boolean NOT NULL DEFAULT false;
