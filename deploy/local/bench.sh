#!/usr/bin/env bash
# The benchmarks: start (or install) the services, install the test SMTP server, build the
# release binaries, then run every section and print one table (see BENCHMARKS.md).
#   ./deploy/local/bench.sh                          # prints the table, writes artifacts/bench/latest.md
#   ./deploy/local/bench.sh --update BENCHMARKS.md   # also puts the table into BENCHMARKS.md
#   BENCH_SECTION=flask ./deploy/local/bench.sh      # one section (here: against the Flask seed)
set -euo pipefail
cd "$(dirname "$0")/../.."

bash deploy/local/services.sh
# Section 16 starts Debian's pgbouncer itself.
bash deploy/local/pgbouncer.sh

# `bench flask` loads the Flask seed and the product with wrk, as the seed's own bench does.
if ! command -v wrk >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi

source deploy/local/venv.sh
export TEST_POSTGRES_URL="${TEST_POSTGRES_URL:-postgres://postgres:postgres@127.0.0.1:5432}"

echo "[bench] building release binaries"
SECONDS=0
cargo build --release --locked -p api -p mail-worker -p bench
echo "[bench] release build took ${SECONDS}s"

# The measurements share the machine with whatever else runs; say so when it is busy.
read -r load1 _ < /proc/loadavg
echo "[bench] load average before the run: $load1 (figures are noisy above ~1 on 2 cores)"
exec "${CARGO_TARGET_DIR:-target}/release/bench" "${BENCH_SECTION:-all}" "$@"
