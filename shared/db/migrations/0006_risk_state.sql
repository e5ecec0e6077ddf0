-- Risk's trading state that must outlive a restart (services/risk/state.py): the kill switch, engaged until
-- someone releases it, and the day's state (REDUCING or HALTED by the daily loss never relaxes by itself within
-- the day). Without it a restarted risk module came back ACTIVE and accepted orders. One row per name.
CREATE TABLE risk_state (
    name text PRIMARY KEY,
    value jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
