-- Jobs and events that follow a database change (sign-up, reset), written in the change's own
-- transaction and relayed to RabbitMQ with confirms by the api replicas: a crash between the
-- commit and the publish loses nothing. A row is deleted once the broker confirmed it.
CREATE TABLE outbox (
    id            bigserial PRIMARY KEY,
    -- Rows of one user go out in order: the relay takes only a user's oldest row.
    user_id       uuid,
    kind          text NOT NULL CHECK (kind IN ('job', 'event')),
    routing_key   text NOT NULL,
    message_id    uuid NOT NULL,
    body          bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- A relay is publishing the row until then; afterwards another one may take it over.
    claimed_until timestamptz
);

CREATE INDEX outbox_user_order ON outbox (user_id, id);
