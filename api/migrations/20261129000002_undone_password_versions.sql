-- Password versions whose change was undone after its notice could not be confirmed by the
-- broker. The undo moves the version forward (never back), so "the stored version is at least
-- the notice's" no longer tells whether a change stands: a notice for a version listed here
-- announces a change that did not happen, and the worker drops it.
ALTER TABLE users ADD COLUMN undone_password_versions INTEGER[] NOT NULL DEFAULT '{}';
