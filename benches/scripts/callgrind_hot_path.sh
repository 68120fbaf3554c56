#!/usr/bin/env bash
# Instructions per request on the hot path, counted by callgrind: steady where wall time on a
# shared machine is not. Each stack runs N requests inside `callgrind_loop` (benches/hot_path.rs)
# with collection switched on only there; the count divided by N is the per-request cost.
#
#   benches/scripts/callgrind_hot_path.sh [N]        (default N = 20000; needs valgrind)
#
# Prints a Markdown table and writes <criterion dir>/hot_path/callgrind.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
n="${1:-20000}"
target="${CARGO_TARGET_DIR:-target}"
out="${CRITERION_HOME:-$target/criterion}/hot_path"
mkdir -p "$out"
exe=$(cargo bench --bench hot_path --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "hot_path" and m.get("executable"):
        print(m["executable"])')
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
json="{"
echo "| shape | stack | instructions / request | vs add_authorization |"
echo "|---|---|---:|---:|"
for shape in empty json_1k; do
    floor=""
    for stack in bare add_authorization rwlock_token replay_floor withings; do
        HOT_PATH_CALLGRIND="$shape/$stack/$n" valgrind --tool=callgrind \
            --callgrind-out-file="$tmp/cg.out" --toggle-collect='*callgrind_loop*' \
            "$exe" --bench >"$tmp/stdout" 2>"$tmp/stderr" || { cat "$tmp/stderr"; exit 1; }
        grep -q "CALLGRIND $shape/$stack $n" "$tmp/stdout"
        total=$(grep -E '^(summary|totals):' "$tmp/cg.out" | tail -1 | awk '{print $2}')
        # The warm-up call of callgrind_loop (16 requests) is counted too.
        per=$(python3 -c "print(f'{$total / ($n + 16):.0f}')")
        [ "$stack" = add_authorization ] && floor=$per
        ratio=""
        [ -n "$floor" ] && ratio=$(python3 -c "print(f'{$per / $floor:.2f}x')")
        echo "| $shape | $stack | $per | $ratio |"
        json="$json\"$shape/$stack\": $per, "
    done
done
echo "${json%, }}" >"$out/callgrind.json"
