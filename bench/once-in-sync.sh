#!/usr/bin/env bash
# Benchmark of `infra-agent --once` on a host already in sync with a 100-file role
# (docs/BENCHMARKS.md, "--once: 100 files in sync").
#
#   bench/once-in-sync.sh            (as root)
#
# Builds the release binary, generates with bench/gen-files-role.sh a state repository
# in a temporary directory (one host, bench-01; one role of 8 directories and 100 files
# managed under WORK/root) and an agent.toml whose state_dir is WORK/state. Then:
#   1. converges once: `--once` must exit 2 (changes applied) and change all 108 steps;
#   2. waits 3 s (a host converged a while ago: see "Stamps" in ARCHITECTURE.md), runs
#      again: `--once` must exit 0 and report 108 steps in sync; stops otherwise;
#   3. measures that in-sync run, the whole process from exec to exit:
#      - wall time: hyperfine, WARMUP warm-up runs then RUNS timed runs; then the same
#        with the compiled-catalog cache removed before each run (a run right after a
#        change to the repository);
#      - peak RSS: `/usr/bin/time -v` ("Maximum resident set size"), RSS_RUNS runs;
#      and checks after the measurements that the run is still in sync.
#
# It must run as root: the role sets owner = "root" and group = "root" on every path,
# which only root can apply (the machine and CI run as root).
#
# Environment (all optional):
#   RUNS=50 WARMUP=5 RSS_RUNS=15  repetitions
#   TARGET_MS=10 TARGET_MB=10     targets of the issue
#   BENCH_OUT=target/bench        where hyperfine's JSON and CSV exports are kept
#   BENCH_STRICT=1                exit 1 when a target is missed (default: report only)
#
# Network: none, except `apt-get install hyperfine` when hyperfine is missing. cargo
# builds with --offline.

set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=${RUNS:-50}
WARMUP=${WARMUP:-5}
RSS_RUNS=${RSS_RUNS:-15}
TARGET_MS=${TARGET_MS:-10}
TARGET_MB=${TARGET_MB:-10}
BENCH_OUT=${BENCH_OUT:-$ROOT/target/bench}
BIN=$ROOT/target/release/infra-agent
HOST=bench-01
STEPS=108 # 8 directories + 100 files (see bench/gen-files-role.sh)

say() { printf '%s\n' "$*" >&2; }
die() {
    say "once-in-sync: $*"
    exit 1
}

((EUID == 0)) || die "run as root: the role sets owner and group root on every path"

# --- tools ------------------------------------------------------------------------------

if ! command -v hyperfine >/dev/null; then
    say "hyperfine is missing: installing it from the Debian mirror"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q hyperfine >&2; then
        apt-get update -q >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q hyperfine >&2
    fi
fi
[[ -x /usr/bin/time ]] || die "/usr/bin/time (Debian package \`time\`) is needed for peak RSS"

# --- build, generate, converge, verify --------------------------------------------------

say "building: cargo build --release -p infra-agent"
(cd "$ROOT" && cargo build --offline --release -p infra-agent >&2)
[[ -x $BIN ]] || die "$BIN was not built"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/once-in-sync.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
REPO=$WORK/repo
CFG=$WORK/agent.toml
"$ROOT/bench/gen-files-role.sh" "$REPO" "$WORK/root" >&2
cat >"$CFG" <<EOF
# agent.toml of the benchmark: the flags --repo and --hostname say the same.
repository = "$REPO"
hostname = "$HOST"
state_dir = "$WORK/state"
EOF

ONCE=("$BIN" --once --repo "$REPO" --hostname "$HOST" --config "$CFG")

# once WANT_CODE WANT_SUMMARY: runs --once, stops unless it exits WANT_CODE and its
# last line is WANT_SUMMARY.
once() {
    local want_code=$1 want_summary=$2 code=0 summary
    "${ONCE[@]}" >"$WORK/once.out" 2>"$WORK/once.err" || code=$?
    summary=$(tail -1 "$WORK/once.out")
    # The summary ends with the run's timing: " in T ms (P ms in programs it ran)".
    if [[ $code != "$want_code" || $summary != "$want_summary"* ]]; then
        cat "$WORK/once.err" >&2
        tail -20 "$WORK/once.out" >&2
        die "--once exited $code ($summary), expected $want_code ($want_summary)"
    fi
}
once 2 "$STEPS changed, 0 in sync, 0 failed, 0 skipped"
say "converged: $STEPS steps changed ($(find "$WORK/root" -type f | wc -l) files of $(find "$WORK/root" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%.0f", s / 1024 }') KiB under $WORK/root)"
# A host converged a while ago: the agent trusts a file's stamp (inode, size, times)
# only once nothing changed it for 2 s (host::Stamp), so let the converge age first.
sleep 3
once 0 "0 changed, $STEPS in sync, 0 failed, 0 skipped"
say "in sync: a second --once exits 0 with $STEPS steps in sync"

# --- measure ----------------------------------------------------------------------------

mkdir -p "$BENCH_OUT"
NAME=once-in-sync-100-files

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# wall NAME [HYPERFINE-ARGS...]: hyperfine (which fails on a non-zero exit), then
# "median min max mean stddev user system" in ms on stdout.
wall() {
    local name=$1
    shift
    hyperfine --shell=none --warmup "$WARMUP" --runs "$RUNS" --style basic \
        --command-name "$name" "$@" \
        --export-json "$BENCH_OUT/$name.json" --export-csv "$BENCH_OUT/$name.csv" \
        "${ONCE[*]}" >&2
    # CSV columns: command,mean,stddev,median,user,system,min,max (seconds)
    awk -F, 'NR == 2 { printf "%.1f %.1f %.1f %.1f %.1f %.1f %.1f\n", $4 * 1000, $7 * 1000, $8 * 1000, $2 * 1000, $3 * 1000, $5 * 1000, $6 * 1000 }' \
        "$BENCH_OUT/$name.csv"
}

# rss: median, min and max peak RSS in MB (1 MB = 1024 KiB) over RSS_RUNS runs.
rss() {
    local i kb
    : >"$WORK/rss"
    for ((i = 0; i < RSS_RUNS; i++)); do
        /usr/bin/time -v "${ONCE[@]}" >/dev/null 2>"$WORK/time.out" ||
            die "--once did not exit 0 under /usr/bin/time"
        kb=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$WORK/time.out")
        echo "$kb" >>"$WORK/rss"
    done
    printf '%s %s %s\n' \
        "$(median <"$WORK/rss" | awk '{ printf "%.1f", $1 / 1024 }')" \
        "$(sort -n "$WORK/rss" | head -1 | awk '{ printf "%.1f", $1 / 1024 }')" \
        "$(sort -n "$WORK/rss" | tail -1 | awk '{ printf "%.1f", $1 / 1024 }')"
}

say ""
say "== $NAME: wall time"
res=$(wall "$NAME")
read -r w_med w_min w_max w_mean w_sd w_user w_sys <<<"$res"
# The same run right after a change to the repository: the compiled catalog the last
# run kept (state_dir/catalog.cache) is removed before each timed run.
say "== $NAME-cold: wall time, compiling the catalog every run"
res=$(wall "$NAME-cold" --prepare "rm -f $WORK/state/catalog.cache")
read -r c_med c_min c_max c_mean c_sd c_user c_sys <<<"$res"
say "== $NAME: peak RSS"
res=$(rss)
read -r r_med r_min r_max <<<"$res"
# Nothing drifted while measuring: every timed run was an in-sync run.
once 0 "0 changed, $STEPS in sync, 0 failed, 0 skipped"

verdict() { awk -v v="$1" -v t="$2" 'BEGIN { print (v <= t) ? "met" : "MISSED" }'; }
wall_ok=$(verdict "$w_med" "$TARGET_MS")
rss_ok=$(verdict "$r_med" "$TARGET_MB")

cat <<EOF

infra-agent --once, in sync ($(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)); $(nproc) CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo); load $(cut -d' ' -f1-3 /proc/loadavg)
runs: wall $RUNS (+$WARMUP warm-up) with hyperfine, peak RSS $RSS_RUNS with /usr/bin/time -v

run                           wall median    min     max    mean ± sd        user   sys    peak RSS median (min-max)
100 files in sync ($STEPS steps) $(printf '%8.1f ms %6.1f %7.1f %6.1f ± %-6.1f %6.1f %5.1f %8.1f MB (%s-%s)' "$w_med" "$w_min" "$w_max" "$w_mean" "$w_sd" "$w_user" "$w_sys" "$r_med" "$r_min" "$r_max")
same, catalog compiled      $(printf '%8.1f ms %6.1f %7.1f %6.1f ± %-6.1f %6.1f %5.1f' "$c_med" "$c_min" "$c_max" "$c_mean" "$c_sd" "$c_user" "$c_sys")

target wall <= $TARGET_MS ms: $wall_ok (median $w_med ms)
target RSS  <= $TARGET_MB MB: $rss_ok (median $r_med MB)
hyperfine exports: $BENCH_OUT/$NAME.json, $BENCH_OUT/$NAME.csv
EOF

if [[ ${BENCH_STRICT:-0} == 1 && ($wall_ok != met || $rss_ok != met) ]]; then
    exit 1
fi
