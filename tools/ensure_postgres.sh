#!/usr/bin/env bash
# Make sure the PostgreSQL server binaries are installed (the outbox's
# PostgreSQL store tests start their own server with initdb and pg_ctl).
# Installs the Debian package when they are missing; does nothing otherwise.
# Debian keeps initdb and pg_ctl in /usr/lib/postgresql/<version>/bin, off
# PATH: the tests look there.
set -euo pipefail

if command -v initdb >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
# The package starts a system cluster; the tests start their own servers.
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
ls -d /usr/lib/postgresql/*/bin
