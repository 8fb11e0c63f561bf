-- Passkeys (WebAuthn), DESIGN.md §11: a second factor, and a way to sign in without the
-- address and password. Expand-only: the previous release neither reads nor writes the table
-- (MFA_ENROLMENT=off while it still runs: deploy/README.md). `passkey` is webauthn-rs's record
-- of the credential (its id, public key, counter, backup flags), updated after each use.
CREATE TABLE passkeys (
    credential_id BYTEA PRIMARY KEY,
    user_id       UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    passkey       JSONB NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_used_at  TIMESTAMPTZ,
    -- Set by a lock ("this wasn't me", or support's): the passkey still counts as the
    -- account's factor (a reset asks for one) but proves nothing until its owner removes it,
    -- so one an intruder added cannot outlive the lock and the reset.
    suspended_at  TIMESTAMPTZ
);
CREATE INDEX passkeys_user ON passkeys (user_id);
