#!/usr/bin/env bash
# Runs the whole product on this machine without Docker: installs and starts PostgreSQL,
# Redis and RabbitMQ when missing, creates the database, builds and starts the api (and the
# mail-worker), and stops them on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/../.."

bash deploy/local/services.sh

if [ ! -f .env ]; then
  secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
  sed -e "s/^TOKEN_SECRETS=.*/TOKEN_SECRETS=$secret/" \
      -e "s/^COOKIE_SECURE=.*/COOKIE_SECURE=false/" \
      -e "s/^LOG_FORMAT=.*/LOG_FORMAT=pretty/" .env.example > .env
  echo "[run] wrote .env with a fresh TOKEN_SECRETS (edit it to change settings)"
fi
set -a; . ./.env; set +a

db=$(basename "${DATABASE_URL%%\?*}")
server="${DATABASE_URL%/*}"
if ! psql "$server/postgres" -Atqc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1; then
  psql "$server/postgres" -qc "CREATE DATABASE \"$db\""
  echo "[run] created database $db"
fi

cargo build --release --locked -p api -p mail-worker
bin="${CARGO_TARGET_DIR:-target}/release"
"$bin/api" migrate

pids=()
cleanup() { kill -TERM "${pids[@]}" 2>/dev/null || true; wait || true; }
trap cleanup INT TERM EXIT

"$bin/api" & pids+=($!)
"$bin/mail-worker" & pids+=($!)

echo "[run] api on http://$API_BIND  (try: curl -s -XPOST http://$API_BIND/v1/password/forgot -H 'content-type: application/json' -d '{\"email\":\"you@example.com\"}')"
if [ "${MAIL_TRANSPORT:-smtp}" = "file" ]; then
  echo "[run] emails are written as .eml files to $(realpath -m "${MAIL_FILE_DIR:-./mail-out}")"
else
  echo "[run] emails are delivered over SMTP to ${SMTP_URL%%\?*}" | sed -E 's#//[^@/]*@#//***@#'
fi
echo "[run] worker health: http://$WORKER_HTTP_BIND/readyz"
echo "[run] Ctrl-C stops everything"
wait -n "${pids[@]}"
