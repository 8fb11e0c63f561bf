#!/usr/bin/env bash
# The whole test suite: start (or install) the services, clear what earlier runs left
# behind, then run every test of the workspace against the real services.
set -euo pipefail
cd "$(dirname "$0")/../.."

bash deploy/local/services.sh

# Databases of earlier test runs (each test makes its own, named pwr_test_*).
PG_URL="postgres://postgres:postgres@127.0.0.1:5432/postgres"
for db in $(psql "$PG_URL" -Atqc "SELECT datname FROM pg_database WHERE datname LIKE 'pwr_test_%'"); do
  psql "$PG_URL" -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null
done

export TEST_POSTGRES_URL="${TEST_POSTGRES_URL:-postgres://postgres:postgres@127.0.0.1:5432}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-0}"
cargo test --workspace --locked "$@"
