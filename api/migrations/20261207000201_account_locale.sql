-- The language of the account's emails (a BCP 47 tag such as 'de' or 'pt-BR'), negotiated from
-- Accept-Language at sign-up (or at the first sign-in of an imported account): later emails
-- (the password-changed notice, a reset requested from another device) are written in it,
-- whatever the language of the browser that caused them. NULL: the requester's language.
-- Expand-only: the previous release neither reads nor writes it.
ALTER TABLE users ADD COLUMN locale TEXT;
