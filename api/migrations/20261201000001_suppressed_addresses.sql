-- Addresses whose mailbox does not exist (a permanent 5.1.x answer to a delivery): no more
-- mail is sent to them until their owner shows up (a successful sign-in or reset) or an
-- operator removes them (`mail-worker suppression remove ADDRESS`). Sending on would keep
-- bouncing and cost the sender's reputation with every provider.
CREATE TABLE suppressed_addresses (
    -- The address key (the whole address lower-cased, as users.email_key).
    address_key   TEXT PRIMARY KEY,
    -- The provider's answer that put it here (addresses redacted).
    reason        TEXT NOT NULL,
    suppressed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
