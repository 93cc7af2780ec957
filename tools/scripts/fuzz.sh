#!/usr/bin/env bash
# Coverage-guided fuzzing of every input surface (cargo-fuzz / libFuzzer on the nightly toolchain), with
# debug assertions and overflow checks on. Runs each target for a time or a number of executions, then
# prints one table: executions, exec/s, coverage (edges, features), corpus size and crashes per target.
#
#   tools/scripts/fuzz.sh [--time SECS] [--runs N] [--jobs J] [--sanitizer none|address] [--cmin] [TARGET...]
#
# Defaults: 60 s per target, all targets, as many targets at once as there are cores, no sanitizer (Rust
# code; `--sanitizer address` for the unsafe parts at about half the speed). New corpus entries go to
# fuzz/corpus/TARGET; `--cmin` minimises each corpus afterwards (what the repository commits). Crashes land
# in fuzz/artifacts/TARGET and make the script exit non-zero. Logs: fuzz/logs/TARGET.log.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
TIME=60 RUNS=0 JOBS=$(nproc) SAN=none CMIN=0 TARGETS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --time) TIME="$2"; shift 2 ;;
        --runs) RUNS="$2"; shift 2 ;;
        --jobs) JOBS="$2"; shift 2 ;;
        --sanitizer) SAN="$2"; shift 2 ;;
        --cmin) CMIN=1; shift ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
        *) TARGETS+=("$1"); shift ;;
    esac
done
ALL=(vfio_decode vfio_server device_regs stack_rx driver_writeback backend_vnet stack_rx6 stack_nat stack_l2)
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=("${ALL[@]}")
for t in "${TARGETS[@]}"; do
    [[ " ${ALL[*]} " == *" $t "* ]] || { echo "fuzz.sh: unknown target $t (targets: ${ALL[*]})" >&2; exit 2; }
done

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "[fuzz] installing the nightly toolchain" >&2
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "[fuzz] installing cargo-fuzz (a few minutes, once)" >&2
    cargo install cargo-fuzz --locked
fi
FUZZ=(cargo +nightly fuzz)
echo "[fuzz] building targets (sanitizer: $SAN)" >&2
"${FUZZ[@]}" build --fuzz-dir fuzz/targets -O -a -s "$SAN" >&2

mkdir -p fuzz/logs
run_one() {
    local t="$1"
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    local args=(-max_total_time="$TIME" -print_final_stats=1 -timeout=10 -artifact_prefix="fuzz/artifacts/$t/")
    [ "$RUNS" -gt 0 ] && args+=(-runs="$RUNS")
    echo "[fuzz] $t: started" >&2
    set +e
    "${FUZZ[@]}" run --fuzz-dir fuzz/targets -O -a -s "$SAN" "$t" "fuzz/corpus/$t" -- "${args[@]}" > "fuzz/logs/$t.log" 2>&1
    echo $? > "fuzz/logs/$t.rc"
    set -e
    echo "[fuzz] $t: finished" >&2
}
running=0
for t in "${TARGETS[@]}"; do
    run_one "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$JOBS" ]; then
        wait -n
        running=$((running - 1))
    fi
done
wait

if [ "$CMIN" = 1 ]; then
    for t in "${TARGETS[@]}"; do
        echo "[fuzz] minimising the $t corpus" >&2
        "${FUZZ[@]}" cmin --fuzz-dir fuzz/targets -O -a -s "$SAN" "$t" "fuzz/corpus/$t" >> "fuzz/logs/$t.log" 2>&1
    done
fi

status=0
printf '\n%-18s %12s %8s %8s %8s %8s %8s\n' target executions exec/s edges features corpus crashes
for t in "${TARGETS[@]}"; do
    log="fuzz/logs/$t.log"
    execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | tail -1 | awk '{print $2}')
    speed=$(grep -o 'exec/s: [0-9]*' "$log" | tail -1 | awk '{print $2}')
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | awk '{print $2}')
    ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | awk '{print $2}')
    corpus=$(find "fuzz/corpus/$t" -type f | wc -l)
    crashes=$(find "fuzz/artifacts/$t" -type f | wc -l)
    rc=$(cat "fuzz/logs/$t.rc" 2>/dev/null || echo 1)
    if [ "$rc" != 0 ] && [ "$crashes" = 0 ]; then crashes="rc=$rc"; fi
    [ "$rc" = 0 ] && [ "$crashes" = 0 ] || status=1
    printf '%-18s %12s %8s %8s %8s %8s %8s\n' "$t" "${execs:-?}" "${speed:-?}" "${cov:-?}" "${ft:-?}" "$corpus" "$crashes"
done
[ "$status" = 0 ] || echo "[fuzz] crashes or failed runs: see fuzz/artifacts/ and fuzz/logs/" >&2
exit "$status"
