#!/usr/bin/env bash
# Make sure the real servers the tests start are installed: redis-server (the
# RedisStore tests) and nginx (the worker-death test behind a reverse proxy).
# Installs the missing Debian packages in one go; does nothing otherwise.
set -euo pipefail

missing=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
have redis-server || missing+=(redis-server)
have nginx || missing+=(nginx)
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The packages may start system services; the tests start their own servers.
have redis-server && have nginx
echo "installed: ${missing[*]}"
