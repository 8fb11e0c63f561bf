-- The relay pass that holds a claimed outbox row (one id per pass): a relay deletes or
-- releases only rows it still holds, so a pass that outlived its lease cannot touch rows
-- another relay has taken over.
ALTER TABLE outbox ADD COLUMN claimed_by uuid;
