#!/usr/bin/env bash
# Kept for the old command line: benches/scripts/callgrind.sh hot_path [N].
exec "$(dirname "$0")/callgrind.sh" hot_path "$@"
