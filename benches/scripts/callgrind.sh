#!/usr/bin/env bash
# Instructions per request, counted by callgrind: steady where wall time on a shared machine
# is not. Each stack runs N requests inside the bench's `callgrind_loop` with collection
# switched on only there; the count divided by N (plus the warm-up) is the per-request cost.
#
#   benches/scripts/callgrind.sh hot_path [N]   (default N = 20000; needs valgrind)
#       the hot path (benches/hot_path.rs), each body shape and stack
#   benches/scripts/callgrind.sh loopback [N]   (default N = 2000)
#       the whole loopback stack (hyper-util client, layer, local hyper server, one thread);
#       user space only: the kernel's socket work is not counted, so the ratio between stacks
#       is an upper bound on the real one
#
# Prints a Markdown table and writes <criterion dir>/<bench>/callgrind.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
bench="${1:?usage: callgrind.sh hot_path|loopback [N]}"
case "$bench" in
hot_path)
    n="${2:-20000}" var=HOT_PATH_CALLGRIND warm=16 digits=2
    cases="empty/bare empty/add_authorization empty/rwlock_token empty/replay_floor empty/withings empty/withings_budget
           json_1k/bare json_1k/add_authorization json_1k/rwlock_token json_1k/replay_floor json_1k/withings json_1k/withings_budget"
    ;;
loopback)
    n="${2:-2000}" var=LOOPBACK_CALLGRIND warm=64 digits=3
    cases="bare add_authorization withings"
    ;;
*)
    echo "unknown bench $bench (hot_path or loopback)" >&2
    exit 2
    ;;
esac
target="${CARGO_TARGET_DIR:-target}"
out="${CRITERION_HOME:-$target/criterion}/$bench"
mkdir -p "$out"
exe=$(cargo bench --bench "$bench" --no-run --message-format=json 2>/dev/null |
    BENCH="$bench" python3 -c 'import json,os,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == os.environ["BENCH"] and m.get("executable"):
        print(m["executable"])')
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
json="{"
echo "| stack | instructions / request | vs add_authorization |"
echo "|---|---:|---:|"
group="" floor=""
for stack in $cases; do
    # The ratio is to add_authorization of the same body shape (hot_path) or of the run.
    shape=$(dirname "$stack")
    [ "$shape" = "$group" ] || { group=$shape; floor=""; }
    env "$var=$stack/$n" valgrind --tool=callgrind \
        --callgrind-out-file="$tmp/cg.out" --toggle-collect='*callgrind_loop*' \
        "$exe" --bench >"$tmp/stdout" 2>"$tmp/stderr" || { cat "$tmp/stderr"; exit 1; }
    grep -q "CALLGRIND $stack $n" "$tmp/stdout"
    total=$(grep -E '^(summary|totals):' "$tmp/cg.out" | tail -1 | awk '{print $2}')
    # The warm-up call of callgrind_loop is counted too.
    per=$(python3 -c "print(f'{$total / ($n + $warm):.0f}')")
    [ "$(basename "$stack")" = add_authorization ] && floor=$per
    ratio=""
    [ -n "$floor" ] && ratio=$(python3 -c "print(f'{$per / $floor:.${digits}f}x')")
    echo "| $stack | $per | $ratio |"
    json="$json\"$stack\": $per, "
done
echo "${json%, }}" >"$out/callgrind.json"
