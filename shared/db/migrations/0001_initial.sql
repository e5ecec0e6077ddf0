-- NeoPulse schema v1: instrument master, daily-partitioned ticks, the order ledger and its event log.
-- Money is integer paise (bigint) everywhere, as in the protos: no rounding, no float, sums stay exact.

CREATE TABLE instrument_master (
    instrument_token  bigint      NOT NULL,
    -- Kotak tokens are unique within a segment only (an NSE and a BSE token can be equal).
    exchange_segment  text        NOT NULL,
    symbol            text        NOT NULL,
    tick_size         bigint      NOT NULL,            -- paise
    lot_size          bigint      NOT NULL,
    freeze_qty        bigint      NOT NULL DEFAULT 0,  -- 0 = no exchange freeze limit
    name              text        NOT NULL DEFAULT '',
    isin              text        NOT NULL DEFAULT '',
    price_band_bps    bigint      NOT NULL DEFAULT 0,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instrument_token, exchange_segment)
);
CREATE INDEX instrument_master_symbol ON instrument_master (symbol, exchange_segment);

-- One partition per IST day, market_ticks_YYYY_MM_DD, created ahead and on the fly (shared/db/partitions.py).
-- ts keeps microseconds; seq is assigned by the writer so two ticks of one token in one microsecond both fit.
CREATE TABLE market_ticks (
    ts                timestamptz NOT NULL,
    token             bigint      NOT NULL,
    seq               bigint      NOT NULL,
    exchange_segment  text        NOT NULL,
    ltp               bigint      NOT NULL,  -- paise
    ltq               bigint      NOT NULL,
    volume            bigint      NOT NULL,  -- cumulative day volume
    bid               bigint      NOT NULL,
    ask               bigint      NOT NULL,
    bid_qty           bigint      NOT NULL,
    ask_qty           bigint      NOT NULL,
    open              bigint      NOT NULL,
    high              bigint      NOT NULL,
    low               bigint      NOT NULL,
    close             bigint      NOT NULL,
    oi                bigint      NOT NULL,
    atp               bigint      NOT NULL,
    PRIMARY KEY (token, ts, seq)
) PARTITION BY RANGE (ts);

-- One row per order, updated in place; enum values are the proto names without prefix (PENDING_NEW, BUY, LIMIT).
CREATE TABLE order_ledger (
    internal_id        uuid        PRIMARY KEY,
    client_order_id    text        NOT NULL UNIQUE,
    exchange_id        text        NOT NULL DEFAULT '',
    strategy_tag       text        NOT NULL DEFAULT '',
    signal_id          text        NOT NULL DEFAULT '',
    status             text        NOT NULL,
    previous_status    text        NOT NULL DEFAULT 'UNSPECIFIED',
    side               text        NOT NULL,
    quantity           bigint      NOT NULL,
    price              bigint      NOT NULL DEFAULT 0,  -- paise; 0 for market orders
    trigger            bigint      NOT NULL DEFAULT 0,  -- paise
    order_type         text        NOT NULL,
    product            text        NOT NULL,
    validity           text        NOT NULL DEFAULT 'UNSPECIFIED',
    token              bigint      NOT NULL,
    exchange_segment   text        NOT NULL DEFAULT '',
    symbol             text        NOT NULL DEFAULT '',
    filled_qty         bigint      NOT NULL DEFAULT 0,
    avg_price          bigint      NOT NULL DEFAULT 0,  -- paise
    last_fill_qty      bigint      NOT NULL DEFAULT 0,
    last_fill_price    bigint      NOT NULL DEFAULT 0,
    last_fill_charges  bigint      NOT NULL DEFAULT 0,
    reason             text        NOT NULL DEFAULT '',
    last_sequence      bigint      NOT NULL DEFAULT 0,
    last_ts_ns         bigint      NOT NULL DEFAULT 0,
    tick_recv_ns       bigint      NOT NULL DEFAULT 0,
    metadata           jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL
);
CREATE INDEX order_ledger_open ON order_ledger (status) WHERE status NOT IN ('TRADED', 'REJECTED', 'CANCELLED');
CREATE INDEX order_ledger_created ON order_ledger (created_at DESC);
CREATE INDEX order_ledger_strategy ON order_ledger (strategy_tag, created_at DESC);

-- Append-only: every transition of every order, with its fill delta and the broker exchange that caused it.
CREATE TABLE order_events (
    event_id      bigserial   PRIMARY KEY,
    internal_id   uuid        NOT NULL REFERENCES order_ledger (internal_id),
    sequence      bigint      NOT NULL,
    status        text        NOT NULL,
    fill_qty      bigint      NOT NULL DEFAULT 0,
    fill_price    bigint      NOT NULL DEFAULT 0,  -- paise
    fill_charges  bigint      NOT NULL DEFAULT 0,  -- paise
    payload       jsonb       NOT NULL,
    ts            timestamptz NOT NULL
);
-- Recording the same update twice (a retry after a crash) appends it once.
CREATE UNIQUE INDEX order_events_once ON order_events (internal_id, sequence) WHERE sequence > 0;
CREATE INDEX order_events_order ON order_events (internal_id, event_id);
CREATE INDEX order_events_fills ON order_events (ts) WHERE fill_qty > 0;
