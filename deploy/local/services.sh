#!/usr/bin/env bash
# Makes sure PostgreSQL, Redis and RabbitMQ are installed (Debian/Ubuntu packages) and running
# on 127.0.0.1 with their standard ports, and that PostgreSQL accepts the local development
# login postgres:postgres over TCP. Safe to run again: it only acts on what is missing.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
APT_UPDATED=0

say() { printf '[services] %s\n' "$*"; }

apt_install() {
  if [ "$APT_UPDATED" -eq 0 ]; then
    say "apt-get update"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    APT_UPDATED=1
  fi
  say "installing $*"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() { # name seconds command...
  local name=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      say "$name did not become ready within ${secs}s"; return 1
    fi
    sleep 0.5
  done
}

# --- PostgreSQL ---------------------------------------------------------------------------
PG_URL="postgres://postgres:postgres@127.0.0.1:5432/postgres"
command -v pg_ctlcluster >/dev/null 2>&1 || apt_install postgresql postgresql-client
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  say "starting PostgreSQL"
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n 1)" main start || true
fi
wait_for PostgreSQL 60 pg_isready -q -h 127.0.0.1 -p 5432
if ! psql "$PG_URL" -Atqc 'SELECT 1' >/dev/null 2>&1; then
  # A fresh Debian cluster wants a password over TCP: give the postgres role the local
  # development password the default URLs use.
  say "setting the local development password of the postgres role"
  $SUDO runuser -u postgres -- psql -qc "ALTER USER postgres PASSWORD 'postgres'" >/dev/null
fi
psql "$PG_URL" -Atqc 'SELECT 1' >/dev/null

# --- Redis ---------------------------------------------------------------------------------
command -v redis-server >/dev/null 2>&1 || apt_install redis-server redis-tools
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  say "starting Redis"
  $SUDO mkdir -p /var/lib/redis /var/log/redis
  $SUDO redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
wait_for Redis 30 redis-cli -h 127.0.0.1 -p 6379 ping

# --- RabbitMQ ------------------------------------------------------------------------------
command -v rabbitmq-server >/dev/null 2>&1 || apt_install rabbitmq-server
if ! port_open 5672; then
  say "starting RabbitMQ (takes a few seconds)"
  $SUDO rabbitmq-server -detached || true
fi
wait_for RabbitMQ 90 port_open 5672

say "PostgreSQL, Redis and RabbitMQ are up on 127.0.0.1"
