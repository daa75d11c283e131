#!/usr/bin/env bash
# Kept for older instructions: installs every server the tests need
# (tools/ensure_servers.sh), PostgreSQL among them.
exec bash "$(dirname "$0")/ensure_servers.sh"
