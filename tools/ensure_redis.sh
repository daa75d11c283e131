#!/usr/bin/env bash
# Kept for the README's older instructions: installs every server the tests
# need (tools/ensure_servers.sh), redis-server among them.
exec bash "$(dirname "$0")/ensure_servers.sh"
