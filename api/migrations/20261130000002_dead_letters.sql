-- Dead letters, moved out of the `mail.dead` queue by the workers: listing them is a query
-- (nothing is redelivered, reordered or counted against a delivery limit), replay publishes
-- with confirms and deletes only what the broker confirmed. They hold addresses and IPs, so
-- the workers delete rows older than DEAD_LETTER_RETENTION_DAYS.
CREATE TABLE dead_letters (
    id           bigserial PRIMARY KEY,
    -- The job id (AMQP message_id); archiving a redelivered dead letter again is a no-op.
    message_id   text UNIQUE,
    kind         text,
    reason       text,
    attempts     text[] NOT NULL DEFAULT '{}',
    -- The AMQP message as it was dead-lettered, for replay.
    body         bytea NOT NULL,
    message_type text,
    content_type text,
    headers      jsonb NOT NULL DEFAULT '{}',
    dead_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX dead_letters_dead_at ON dead_letters (dead_at);
