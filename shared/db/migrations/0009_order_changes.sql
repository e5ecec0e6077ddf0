-- OrderUpdate.changes_sent and changed_by_hand (trading.proto): how many changes of its terms NeoPulse has sent
-- for an order, and whether someone other than its strategy changed it (a trader's ModifyOrder, or a change made
-- in Kotak's app). Kept with the order's row so a restarted strategy goes on from them: its per-order limit on
-- changes (MOMENTUM_RSI max_reprices) holds across restarts, and an order a trader took over stays theirs.
-- Adding a column with a constant default rewrites no rows.
ALTER TABLE order_ledger
    ADD COLUMN changes_sent integer NOT NULL DEFAULT 0,
    ADD COLUMN changed_by_hand boolean NOT NULL DEFAULT false;
