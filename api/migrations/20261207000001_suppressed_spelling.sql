-- The spellings that bounced. Mail goes to an account's stored spelling, but a notice to an
-- address without an account goes to the spelling a stranger typed; mailbox names may be
-- case-sensitive at the receiving server, so a stranger's spelling that does not exist must not
-- suppress the owner's spelling of the same address key. A row with spellings suppresses those
-- spellings only; a row without (written before this column, or by a worker of the previous
-- release during a rolling deploy) every spelling of its key.
-- Expand-only: a worker of the previous release reads the key alone and suppresses more, never less.
ALTER TABLE suppressed_addresses ADD COLUMN addresses TEXT[];
