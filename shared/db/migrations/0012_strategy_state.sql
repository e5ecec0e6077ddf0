-- What the operator (and NeoPulse) set on a strategy that must outlive a restart (services/strategy/state.py): a
-- pause, the parameters changed at run time, the day its loss limit stopped it. Without it a restarted NeoPulse
-- traded a strategy the operator had paused, with the parameters of its config file. One row per strategy name.
CREATE TABLE strategy_state (
    name text PRIMARY KEY,
    value jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
