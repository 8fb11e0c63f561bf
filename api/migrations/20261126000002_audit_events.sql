-- Security audit trail: one row per reset attempt, forgot-password decision and other
-- security-relevant outcome. Append-only; addresses are stored only as HMAC pseudonyms.
CREATE TABLE audit_events (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- What was attempted, e.g. 'password_reset', 'password_reset_request', 'email_verify'.
    action       TEXT NOT NULL,
    -- How it ended, e.g. 'success', 'token_expired', 'token_used', 'weak_password', 'sent'.
    outcome      TEXT NOT NULL,
    -- Known when the token named a user; NULL for unknown addresses and unreadable tokens.
    -- No foreign key: audit rows outlive deleted accounts.
    user_id      UUID,
    ip           INET,
    address_hash TEXT,
    request_id   TEXT
);

CREATE INDEX audit_events_user_idx ON audit_events (user_id, occurred_at DESC);
CREATE INDEX audit_events_time_idx ON audit_events (occurred_at DESC);
