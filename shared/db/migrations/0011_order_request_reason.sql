-- OrderRequest.reason (trading.proto): why an order was placed, its strategy's signal reason ("stop loss 1%: tick
-- ...") or a trader's note. Kept with the order's row so ListOrders, the fills' notifications and a restart show it.
-- Adding a column with a constant default rewrites no rows.
ALTER TABLE order_ledger ADD COLUMN request_reason text NOT NULL DEFAULT '';
