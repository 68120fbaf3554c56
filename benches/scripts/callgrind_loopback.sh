#!/usr/bin/env bash
# Kept for the old command line: benches/scripts/callgrind.sh loopback [N].
exec "$(dirname "$0")/callgrind.sh" loopback "$@"
