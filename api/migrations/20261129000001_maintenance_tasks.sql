-- One-off data tasks that SQL alone cannot do (they need the application's own code), run by
-- the api right after the migrations and recorded here so they run once per database.
CREATE TABLE maintenance_tasks (
    name    TEXT PRIMARY KEY,
    done_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
