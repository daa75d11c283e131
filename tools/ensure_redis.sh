#!/usr/bin/env bash
# Make sure redis-server is installed (the RedisStore tests need a real one).
# Installs the Debian package when it is missing; does nothing otherwise.
set -euo pipefail

if command -v redis-server >/dev/null 2>&1; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends redis-server >/dev/null
# The package starts a system service; the tests start their own servers.
command -v redis-server >/dev/null
redis-server --version
