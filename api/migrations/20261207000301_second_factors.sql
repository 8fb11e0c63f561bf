-- Second factors (DESIGN.md §11). Expand-only: the previous release neither reads nor writes
-- these tables; an account's rows go with it (ON DELETE CASCADE: erasure, and nothing else,
-- deletes accounts).

-- An authenticator app's TOTP secret (RFC 6238), one per account. The secret is sealed with
-- AES-256-GCM under a key derived from a TOKEN_SECRETS entry (`key_id` names which; the
-- account id is the associated data, so a sealed secret cannot be moved to another account).
-- A row without `confirmed_at` is an enrolment waiting for its first code and protects
-- nothing yet. `last_step` is the newest 30-second step whose code was accepted: a code is
-- accepted once, and never one of an older step.
CREATE TABLE user_totp (
    user_id      UUID PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    sealed       BYTEA NOT NULL,
    key_id       TEXT NOT NULL,
    confirmed_at TIMESTAMPTZ,
    last_step    BIGINT NOT NULL DEFAULT 0,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Single-use recovery codes: SHA-256 over the account id and the code (80 random bits
-- each, so a copy of the table cannot be searched for them). Made ten at a time; a new set
-- replaces the old one.
CREATE TABLE recovery_codes (
    user_id    UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash  BYTEA NOT NULL,
    used_at    TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, code_hash)
);
