-- Data tasks that SQL alone cannot do (they need the application's own code), run by the api
-- right after the migrations on every start; this records when each last ran.
CREATE TABLE maintenance_tasks (
    name    TEXT PRIMARY KEY,
    done_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
