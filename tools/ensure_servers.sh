#!/usr/bin/env bash
# Make sure the real servers the tests start are installed (Debian packages):
# redis-server (the RedisStore tests), nginx (the worker-death test behind a
# reverse proxy) and PostgreSQL (the outbox's PostgreSQL store: the tests run
# initdb and pg_ctl themselves; Debian keeps them in
# /usr/lib/postgresql/<version>/bin, off PATH, and the tests look there).
# Installs what is missing in one go; does nothing otherwise.
set -euo pipefail

missing=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
have_postgres() {
    command -v initdb >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}
have redis-server || missing+=(redis-server)
have nginx || missing+=(nginx)
have_postgres || missing+=(postgresql)
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The packages may start system services; the tests start their own servers.
have redis-server && have nginx && have_postgres
echo "installed: ${missing[*]}"
