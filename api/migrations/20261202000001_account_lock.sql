-- An account locked by its owner ("this wasn't me" in the password-changed notice) or by
-- support staff (`api accounts lock`): sign-in is refused until a reset sets a new password.
ALTER TABLE users ADD COLUMN locked_at timestamptz;

-- Free text an operator's action carries (`api accounts lock|revoke-sessions --reason`: the
-- reason and who acted). NULL for every row the services write on their own.
ALTER TABLE audit_events ADD COLUMN detail text;
