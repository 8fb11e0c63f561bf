#!/usr/bin/env bash
# The whole test suite: start (or install) the services, clear what earlier runs left behind,
# and run every test of the workspace against the real services. The lint gate is its own
# step, before this one: deploy/local/lint.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."

bash deploy/local/services.sh

# Databases of earlier test runs (each test makes its own, named pwr_test_*).
PG_URL="postgres://postgres:postgres@127.0.0.1:5432/postgres"
for db in $(psql "$PG_URL" -Atqc "SELECT datname FROM pg_database WHERE datname LIKE 'pwr_test_%'"); do
  psql "$PG_URL" -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null
done

# Private RabbitMQ nodes of an interrupted earlier run (tests/src/broker.rs starts them for the
# broker-restart test and stops them when it ends).
for node in $(epmd -names 2>/dev/null | awk '$2 ~ /^pwrtest-/ {print $2}'); do
  rabbitmqctl -q -n "$node@localhost" stop >/dev/null 2>&1 || true
done
rm -rf "${TMPDIR:-/tmp}"/pwr-rabbit-*
# Private Redis Cluster nodes and PgBouncers of an interrupted earlier run (the tests start
# them on free ports and remove them when they end). The machine's own Redis is no cluster.
pkill -f 'redis-server 127\.0\.0\.1:[0-9]+ \[cluster\]' 2>/dev/null || true
pkill -f 'redis-server 127\.0\.0\.1:[0-9]+ \[sentinel\]' 2>/dev/null || true
pkill -f 'pgbouncer .*pwr-pgbouncer-' 2>/dev/null || true
# The TLS tests' private PostgreSQL instances (tests/src/tls.rs).
pkill -QUIT -f 'postgres -D .*/pwr-pg-tls-' 2>/dev/null || true
rm -rf "${TMPDIR:-/tmp}"/pwr-redis-cluster-* "${TMPDIR:-/tmp}"/pwr-redis-sentinel-* \
  "${TMPDIR:-/tmp}"/pwr-pgbouncer-* "${TMPDIR:-/tmp}"/pwr-pg-tls-* \
  "${TMPDIR:-/tmp}"/pwr-redis-tls-* "${TMPDIR:-/tmp}"/pwr-ca-*

source deploy/local/venv.sh

# The browser test drives Debian's headless Chromium through chromedriver (test tools that
# download their own browser do not work on a closed network).
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "[test] installing chromium and chromium-driver"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi

# The PgBouncer test starts Debian's pgbouncer itself.
bash deploy/local/pgbouncer.sh

# `promtool check rules` for deploy/observability/alerts.yml (tests/tests/observability.rs).
if ! command -v promtool >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "[test] installing prometheus (for promtool)"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

export TEST_POSTGRES_URL="${TEST_POSTGRES_URL:-postgres://postgres:postgres@127.0.0.1:5432}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-0}"
# The end-to-end tests run the real binaries, which `cargo test` alone does not build. Built
# with the test targets in one invocation: the dependencies are compiled once, with the
# features the tests' dev-dependencies add, instead of once for the binaries and again for
# the tests.
cargo build --workspace --locked --bins --tests
cargo test --workspace --locked "$@"
