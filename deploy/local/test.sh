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

# Private RabbitMQ nodes of an interrupted earlier run (tests/src/broker.rs starts them for the
# broker-restart test and stops them when it ends).
for node in $(epmd -names 2>/dev/null | awk '$2 ~ /^pwrtest-/ {print $2}'); do
  rabbitmqctl -q -n "$node@localhost" stop >/dev/null 2>&1 || true
done
rm -rf "${TMPDIR:-/tmp}"/pwr-rabbit-*

# The end-to-end tests deliver to a real SMTP server (aiosmtpd, tests/smtp/), parse the
# deployment files (PyYAML) and fuzz the HTTP API from its OpenAPI document (schemathesis):
# keep those in a virtualenv outside the clone so system Python stays untouched and reruns
# are instant.
VENV="${XDG_CACHE_HOME:-$HOME/.cache}/pwrecovery/smtp-venv"
if ! "$VENV/bin/python" -c 'import aiosmtpd, yaml, schemathesis' >/dev/null 2>&1; then
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
  fi
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r tests/requirements.txt
fi
export SMTP_SINK_PYTHON="$VENV/bin/python"
export SCHEMATHESIS="$VENV/bin/schemathesis"

# The browser test drives Debian's headless Chromium through chromedriver (test tools that
# download their own browser do not work on a closed network).
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "[test] installing chromium and chromium-driver"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi

export TEST_POSTGRES_URL="${TEST_POSTGRES_URL:-postgres://postgres:postgres@127.0.0.1:5432}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-0}"
# The end-to-end tests run the real binaries, which `cargo test` alone does not build.
cargo build --workspace --locked --bins
cargo test --workspace --locked "$@"
