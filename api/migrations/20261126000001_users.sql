-- Accounts. One row per registered address.
CREATE TABLE users (
    id                UUID PRIMARY KEY,
    -- The address mail is sent to: trimmed, NFC, domain lower-cased, local part as typed.
    email             TEXT NOT NULL,
    -- The whole address lower-cased. Uniqueness and lookups use this, so "Ann@x.org" and
    -- "ann@x.org" cannot become two accounts.
    email_key         TEXT NOT NULL,
    -- argon2id PHC string (algorithm, parameters and salt included, so parameters can change
    -- without a migration).
    password_hash     TEXT NOT NULL,
    -- Bumped on every password change. Reset links and sessions carry the version they were
    -- issued under and die when it moves.
    password_version  INTEGER NOT NULL DEFAULT 1,
    email_verified_at TIMESTAMPTZ,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT users_email_key_unique UNIQUE (email_key)
);
