#!/usr/bin/env bash
# Make sure what the test suite needs is on this machine and running:
# PostgreSQL (127.0.0.1:5432, database `test`), Redis (127.0.0.1:6379), Chromium, docker-compose.
set -euo pipefail

apt_install() {
  if [ "$(id -u)" != 0 ]; then
    echo "need root to apt-get install $*; install it yourself" >&2
    return 1
  fi
  if [ -z "${_APT_UPDATED:-}" ]; then apt-get update -q >/dev/null; _APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null
}

command -v chromium >/dev/null || apt_install chromium
command -v docker-compose >/dev/null || apt_install docker-compose

if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  command -v pg_ctlcluster >/dev/null || apt_install postgresql
  echo "starting PostgreSQL"
  service postgresql start || pg_ctlcluster --skip-systemctl-redirect 15 main start
  for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
pg_isready -h 127.0.0.1 -p 5432

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  command -v redis-server >/dev/null || apt_install redis-server
  echo "starting Redis"
  service redis-server start || redis-server --daemonize yes --save "" --appendonly no
  for _ in $(seq 30); do redis-cli ping >/dev/null 2>&1 && break; sleep 1; done
fi
echo "redis: $(redis-cli -h 127.0.0.1 -p 6379 ping)"
