-- The cost signature of an imported password hash: its scheme and cost parameters, without
-- salt or output (`bcrypt:12`, `pbkdf2-sha256:600000:32`, `scrypt:32768:8:1`,
-- `argon2id:19:65536:3:4`; see api/src/foreign_hash.rs). NULL for every hash this service
-- made. The api times a verification of the costliest signature still stored and answers
-- every refused sign-in no sooner than that (api/src/refusal_floor.rs), so timing does not
-- tell an imported account from an address without one.
-- Expand-only: a release that does not know the column writes no signature and reads none.
ALTER TABLE users ADD COLUMN imported_hash_signature TEXT;

-- Only the imported accounts that have not signed in yet are in it, so reading the distinct
-- signatures walks a few index entries, not the table. (Built on a column that is NULL in
-- every row: nothing to sort, one read of the table.)
CREATE INDEX users_imported_hash_signature ON users (imported_hash_signature)
    WHERE imported_hash_signature IS NOT NULL;

-- A new password hash (the argon2id stored at the first sign-in, a reset, a lock) is this
-- service's own, so the signature goes with the hash it described. In the database rather
-- than beside each UPDATE: no writer can leave a stale signature behind, a previous release's
-- during a rolling deploy included (a stale one would keep refusals slower than they need be).
CREATE FUNCTION users_forget_imported_hash_signature() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.imported_hash_signature := NULL;
    RETURN NEW;
END
$$;

CREATE TRIGGER users_password_hash_replaced
    BEFORE UPDATE OF password_hash ON users
    FOR EACH ROW
    WHEN (NEW.password_hash IS DISTINCT FROM OLD.password_hash)
    EXECUTE FUNCTION users_forget_imported_hash_signature();
