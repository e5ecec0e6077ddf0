-- OrderUpdate.reason_code (trading.proto): why the OMS or the broker ended or recovered an order, as a code
-- a program can match. Orders the OMS gave up on (placement outcome unknown) were recognised by their
-- reason text until now; those rows get their code here, so a restart still finds and adopts them.
ALTER TABLE order_ledger ADD COLUMN reason_code text NOT NULL DEFAULT '';

UPDATE order_ledger SET reason_code = 'OUTCOME_UNKNOWN'
WHERE status = 'REJECTED'
  AND (reason LIKE 'placement outcome unknown%' OR reason LIKE '%the broker has no order tagged%');
