-- The languages of the account's emails, most wanted first: the BCP 47 tags its sign-up's
-- Accept-Language asked for (or, when it asked for none, its first sign-in's), comma-separated,
-- lower case ('de', 'it-ch,de'). Later emails (the password-changed notice, a reset requested
-- from another device) are written in the first of them the worker has templates for,
-- whatever the language of the browser that caused them. NULL: the requester's languages.
-- Expand-only: the previous release neither reads nor writes it.
ALTER TABLE users ADD COLUMN locale TEXT;
