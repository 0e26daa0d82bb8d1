#!/usr/bin/env bash
# Runs every whole-run benchmark of mdebulk (pacing, overhead, scale, tenants) and
# prints one markdown table with the numbers, the targets and the machine.
#
#   benches/run_all.sh          quick: pacing for N = 100, 500, 1500 (about 5 minutes in all)
#   benches/run_all.sh full     pacing for N = 100, 500, 1500, 1600 (about 10 minutes in all)
#
# The benchmarks' own output goes to stderr as they run; the table goes to
# stdout. Build once (release profile, `cargo bench --no-run`), then run.
# Exit status: 0 when every row met its target, 1 otherwise.

set -euo pipefail
cd "$(dirname "$0")/.."

mode="${1:-quick}"
case "$mode" in
    quick) pacing_args=(100 500 1500) ;;
    full) pacing_args=(100 500 1500 1600) ;;
    *)
        echo "usage: benches/run_all.sh [quick|full]" >&2
        exit 2
        ;;
esac

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
log="$work/bench.log"
export MDEBULK_BENCH_TABLE=1

echo "== building (release profile, once)" >&2
cargo bench --no-run --bench pacing --bench overhead --bench scale --bench tenants >&2

run() {
    local name="$1"
    shift
    echo "== $name $*" >&2
    cargo bench -q --bench "$name" -- "$@" | tee -a "$log" | grep -v '^@row ' >&2
}

run pacing "${pacing_args[@]}"
run overhead
run scale
run tenants

cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
mem="$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"

echo
echo "Machine: $(nproc) CPUs, ${cpu}, ${mem} RAM, $(uname -sr), $(rustc --version | cut -d' ' -f1-2)."
echo "Command: \`benches/run_all.sh $mode\` ($(date -u +%Y-%m-%d))."
echo
echo "| Bench | Case | Result | Target | Met |"
echo "|---|---|---|---|---|"
sed -n 's/^@row //p' "$log"

if grep -q '^@row .*| \*\*no\*\* |$' "$log"; then
    exit 1
fi
