#!/usr/bin/env bash
# Benchmark of `infra-agent check` on a generated fleet (docs/BENCHMARKS.md).
#
#   bench/check-fleet.sh
#
# Builds the release binary, generates a fleet of HOSTS hosts x STEPS steps with
# bench/gen-fleet.sh into a temporary directory, checks that it is valid, then measures
# the whole process of `infra-agent check --repo FLEET`:
#   - wall time: hyperfine, WARMUP warm-up runs then RUNS timed runs;
#   - peak RSS: `/usr/bin/time -v` ("Maximum resident set size"), RSS_RUNS runs;
# and the same for the bundled state-repo-example, for reference.
#
# Environment (all optional):
#   HOSTS=200 STEPS=30            size of the fleet
#   RUNS=30 WARMUP=3 RSS_RUNS=10  repetitions
#   TARGET_MS=200 TARGET_MB=30    targets of the issue
#   BENCH_OUT=target/bench        where hyperfine's JSON and CSV exports are kept
#   BENCH_STRICT=1                exit 1 when a target is missed (default: report only)
#
# Network: none, except `apt-get install hyperfine` when hyperfine is missing. cargo
# builds with --offline.

set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HOSTS=${HOSTS:-200}
STEPS=${STEPS:-30}
RUNS=${RUNS:-30}
WARMUP=${WARMUP:-3}
RSS_RUNS=${RSS_RUNS:-10}
TARGET_MS=${TARGET_MS:-200}
TARGET_MB=${TARGET_MB:-30}
BENCH_OUT=${BENCH_OUT:-$ROOT/target/bench}
BIN=$ROOT/target/release/infra-agent
EXAMPLE=$ROOT/state-repo-example

say() { printf '%s\n' "$*" >&2; }
die() {
    say "check-fleet: $*"
    exit 1
}

# --- tools ------------------------------------------------------------------------------

if ! command -v hyperfine >/dev/null; then
    say "hyperfine is missing: installing it from the Debian mirror"
    sudo=()
    ((EUID == 0)) || sudo=(sudo)
    if ! DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q hyperfine >&2; then
        "${sudo[@]}" apt-get update -q >&2
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q hyperfine >&2
    fi
fi
[[ -x /usr/bin/time ]] || die "/usr/bin/time (Debian package \`time\`) is needed for peak RSS"

# --- build, generate, verify ------------------------------------------------------------

say "building: cargo build --release -p infra-agent"
(cd "$ROOT" && cargo build --offline --release -p infra-agent >&2)
[[ -x $BIN ]] || die "$BIN was not built"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/check-fleet.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
FLEET=$WORK/fleet
"$ROOT/bench/gen-fleet.sh" "$FLEET" "$HOSTS" "$STEPS" >&2

# check must pass (exit 0) and render every host with exactly STEPS steps.
verify() {
    local repo=$1 want_hosts=$2 want_steps=$3 out
    if ! out=$("$BIN" check --repo "$repo" 2>"$WORK/check.err"); then
        cat "$WORK/check.err" >&2
        printf '%s\n' "$out" | tail -5 >&2
        die "infra-agent check --repo $repo failed"
    fi
    [[ -z $want_hosts ]] && return 0
    local hosts bad
    hosts=$(printf '%s\n' "$out" | grep -c '^ok ' || true)
    bad=$(printf '%s\n' "$out" | awk -v s="$want_steps" '/^ok / && $4 != s' | head -3)
    [[ $hosts == "$want_hosts" ]] || die "check rendered $hosts hosts, expected $want_hosts"
    [[ -z $bad ]] || die "hosts without $want_steps steps: $bad"
}
verify "$FLEET" "$HOSTS" "$STEPS"
verify "$EXAMPLE" "" ""
say "fleet valid: $HOSTS hosts x $STEPS steps ($(find "$FLEET" -type f | wc -l) files, $(du -sk "$FLEET" | cut -f1) KiB)"

# --- measure ----------------------------------------------------------------------------

mkdir -p "$BENCH_OUT"

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# wall NAME REPO: hyperfine, then "median min max mean stddev" in ms on stdout.
wall() {
    local name=$1 repo=$2
    hyperfine --shell=none --warmup "$WARMUP" --runs "$RUNS" --style basic \
        --command-name "$name" \
        --export-json "$BENCH_OUT/$name.json" --export-csv "$BENCH_OUT/$name.csv" \
        "$BIN check --repo $repo" >&2
    # CSV columns: command,mean,stddev,median,user,system,min,max (seconds)
    awk -F, 'NR == 2 { printf "%.1f %.1f %.1f %.1f %.1f\n", $4 * 1000, $7 * 1000, $8 * 1000, $2 * 1000, $3 * 1000 }' \
        "$BENCH_OUT/$name.csv"
}

# rss REPO: median, min and max peak RSS in MB (1 MB = 1024 KiB) over RSS_RUNS runs.
rss() {
    local repo=$1 i kb
    : >"$WORK/rss"
    for ((i = 0; i < RSS_RUNS; i++)); do
        /usr/bin/time -v "$BIN" check --repo "$repo" >/dev/null 2>"$WORK/time.out" ||
            die "check failed under /usr/bin/time"
        kb=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$WORK/time.out")
        echo "$kb" >>"$WORK/rss"
    done
    printf '%s %s %s\n' \
        "$(median <"$WORK/rss" | awk '{ printf "%.1f", $1 / 1024 }')" \
        "$(sort -n "$WORK/rss" | head -1 | awk '{ printf "%.1f", $1 / 1024 }')" \
        "$(sort -n "$WORK/rss" | tail -1 | awk '{ printf "%.1f", $1 / 1024 }')"
}

fleet_name="check-fleet-${HOSTS}x${STEPS}"
say ""
say "== $fleet_name: wall time"
res=$(wall "$fleet_name" "$FLEET")
read -r f_med f_min f_max f_mean f_sd <<<"$res"
say "== $fleet_name: peak RSS"
res=$(rss "$FLEET")
read -r f_rss f_rss_min f_rss_max <<<"$res"
say "== check-example: wall time"
res=$(wall check-example "$EXAMPLE")
read -r e_med e_min e_max e_mean e_sd <<<"$res"
say "== check-example: peak RSS"
res=$(rss "$EXAMPLE")
read -r e_rss e_rss_min e_rss_max <<<"$res"

verdict() { awk -v v="$1" -v t="$2" 'BEGIN { print (v <= t) ? "met" : "MISSED" }'; }
wall_ok=$(verdict "$f_med" "$TARGET_MS")
rss_ok=$(verdict "$f_rss" "$TARGET_MB")

cat <<EOF

infra-agent check ($(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)); $(nproc) CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
runs: wall $RUNS (+$WARMUP warm-up) with hyperfine, peak RSS $RSS_RUNS with /usr/bin/time -v

repository                   wall median    min     max    mean ± sd       peak RSS median (min-max)
fleet ${HOSTS} hosts x ${STEPS} steps $(printf '%9.1f ms %6.1f %7.1f %6.1f ± %-6.1f %8.1f MB (%s-%s)' "$f_med" "$f_min" "$f_max" "$f_mean" "$f_sd" "$f_rss" "$f_rss_min" "$f_rss_max")
state-repo-example         $(printf '%9.1f ms %6.1f %7.1f %6.1f ± %-6.1f %8.1f MB (%s-%s)' "$e_med" "$e_min" "$e_max" "$e_mean" "$e_sd" "$e_rss" "$e_rss_min" "$e_rss_max")

target wall <= $TARGET_MS ms: $wall_ok (median $f_med ms)
target RSS  <= $TARGET_MB MB: $rss_ok (median $f_rss MB)
hyperfine exports: $BENCH_OUT/$fleet_name.json, $BENCH_OUT/check-example.json
EOF

if [[ ${BENCH_STRICT:-0} == 1 && ($wall_ok != met || $rss_ok != met) ]]; then
    exit 1
fi
