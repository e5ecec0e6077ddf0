-- Kotak logins refused since the last that worked, per set of credentials (shared/kotak/refusals.py). Kotak locks an
-- account after a few wrong MPINs, and the limit on them ([kotak] login_max_refusals) was per process: every restart
-- (Docker's restart policy, systemd, the trader again) sent the same wrong MPIN once more. Keyed by a sha256 of the
-- credentials with the TOTP seed, which holds enough entropy that the MPIN cannot be searched back out of it; the
-- credentials themselves are never stored. A login that works deletes its row.
CREATE TABLE kotak_login_refusals (
    fingerprint text PRIMARY KEY,
    refusals integer NOT NULL,
    last_at timestamptz NOT NULL DEFAULT now(),
    last_reason text NOT NULL
);
