-- The price factor (market.PriceFactor, trading.proto's OrderRequest.price_factor): order value, turnover and P&L
-- are price x quantity x numerator / denominator. instrument_master keeps each contract's, from the scrip master;
-- order_ledger each order's (risk stamps it), so positions rebuilt from the ledger after a restart are valued by
-- it. Rows written before this migration, and every contract of the usual factor, are 1/1.
ALTER TABLE instrument_master
    ADD COLUMN price_factor_num bigint NOT NULL DEFAULT 1 CHECK (price_factor_num > 0),
    ADD COLUMN price_factor_den bigint NOT NULL DEFAULT 1 CHECK (price_factor_den > 0);

ALTER TABLE order_ledger
    ADD COLUMN price_factor_num bigint NOT NULL DEFAULT 1 CHECK (price_factor_num > 0),
    ADD COLUMN price_factor_den bigint NOT NULL DEFAULT 1 CHECK (price_factor_den > 0);
