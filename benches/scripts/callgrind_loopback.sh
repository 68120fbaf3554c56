#!/usr/bin/env bash
# Instructions per request through the whole loopback stack (hyper-util client, layer, local
# hyper server, all on one thread), counted by callgrind. User space only: the kernel's socket
# work is not counted, so the ratio between stacks is an upper bound on the real one.
#
#   benches/scripts/callgrind_loopback.sh [N]        (default N = 2000; needs valgrind)
#
# Prints a Markdown table and writes <criterion dir>/loopback/callgrind.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
n="${1:-2000}"
target="${CARGO_TARGET_DIR:-target}"
out="${CRITERION_HOME:-$target/criterion}/loopback"
mkdir -p "$out"
exe=$(cargo bench --bench loopback --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "loopback" and m.get("executable"):
        print(m["executable"])')
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
json="{"
floor=""
echo "| stack | instructions / request (user space) | vs add_authorization |"
echo "|---|---:|---:|"
for stack in bare add_authorization withings; do
    LOOPBACK_CALLGRIND="$stack/$n" valgrind --tool=callgrind \
        --callgrind-out-file="$tmp/cg.out" --toggle-collect='*callgrind_loop*' \
        "$exe" --bench >"$tmp/stdout" 2>"$tmp/stderr" || { cat "$tmp/stderr"; exit 1; }
    grep -q "CALLGRIND $stack $n" "$tmp/stdout"
    total=$(grep -E '^(summary|totals):' "$tmp/cg.out" | tail -1 | awk '{print $2}')
    # The warm-up call of callgrind_loop (64 requests) is counted too.
    per=$(python3 -c "print(f'{$total / ($n + 64):.0f}')")
    [ "$stack" = add_authorization ] && floor=$per
    ratio=""
    [ -n "$floor" ] && ratio=$(python3 -c "print(f'{$per / $floor:.3f}x')")
    echo "| $stack | $per | $ratio |"
    json="$json\"$stack\": $per, "
done
echo "${json%, }}" >"$out/callgrind.json"
