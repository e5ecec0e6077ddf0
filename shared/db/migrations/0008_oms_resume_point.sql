-- Split mode: how far a stopped OMS had accounted for risk's decisions (services/oms/ledger_pg.py): every decision
-- at or below it was received or reported lost. Without it a restarted OMS resumed after the last decision in its
-- ledger, and reported a loss it had reported already at every start until its next order. One row per stream.
CREATE TABLE oms_resume_points (
    name text PRIMARY KEY,
    after_sequence bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
