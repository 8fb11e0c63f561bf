#!/usr/bin/env bash
# Installs Debian's pgbouncer when it is missing. The PgBouncer test and the bench's PgBouncer
# section start it themselves (transaction pooling, on a free port); the package's own service
# is not needed (and not started on machines without systemd).
set -euo pipefail
if ! command -v pgbouncer >/dev/null 2>&1 && [ ! -x /usr/sbin/pgbouncer ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "[local] installing pgbouncer"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null
fi
