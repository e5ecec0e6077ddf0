-- What this database holds (shared/db/stamp.py): paper or live trading, on a simulated or the real market, recorded
-- by the first run that used it. Without it a live start on a paper run's data dir rebuilt its positions from the
-- paper fills (then squared them off with real orders) and warmed its strategies from the simulator's candles, stored
-- under Kotak's real tokens. One row per key ('trading', 'market'); a start of another kind is refused.
CREATE TABLE neopulse_meta (
    key text PRIMARY KEY,
    value text NOT NULL,
    set_at timestamptz NOT NULL DEFAULT now()
);
