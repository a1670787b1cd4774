#!/usr/bin/env bash
# Benchmark of the idle daemon: what one no-op cycle costs, and the daemon's memory over
# CYCLES cycles (docs/BENCHMARKS.md, "The daemon: idle cycles").
#
#   bench/daemon-idle.sh [BIN]            (as root)
#
# BIN is an infra-agent binary to measure, with infra-agent-fetch beside it; without it
# the script builds `cargo build --release -p infra-agent`, then
# `cargo build --release -p infra-agent-fetch` (offline; two cargo commands, so the
# agent links no OpenSSL). In a temporary directory it writes a
# state repository (bench/pull-common.sh: host bench-01, one role of one directory and
# FILES `file` steps under WORK/root), commits it into a bare repository, and writes an
# agent.toml: repository = "file://WORK/remote.git", state_dir = WORK/state,
# interval = 1, splay = 0 (watch_drift stays on, as by default). Then:
#   1. converges with `--once` (exit 2, every step changed), so the mirror exists and
#      the host is in sync;
#   2. starts the daemon (`infra-agent --config agent.toml`, in the foreground of a
#      background job: it logs warnings and errors to stderr) and follows it through
#      CYCLES cycles, reading status.json (runs_total, last_run.duration_ms) every 50 ms.
#      After each cycle it samples /proc/PID/stat (utime + stime of the daemon and its
#      children) and /proc/PID/status (VmRSS, VmHWM, RssAnon, RssFile, Threads), and
#      Pss from /proc/PID/smaps_rollup;
#   3. stops the daemon with SIGTERM (it must exit 0) and checks that every cycle in
#      its history was a no-op and that it printed nothing on stderr;
#   4. reports: the cycle's duration (the agent's own duration_ms, and the time from
#      one cycle's start to the next's less the interval), CPU time per cycle ((CPU at the last cycle - CPU at
#      cycle 1) / (CYCLES - 1)), VmRSS after cycles 1, 10, 50 and 100 (of CYCLES), the
#      growth from cycle 10 to the last, and the largest mappings at the end;
#   5. for reference, REF_CYCLES cycles of two more daemons: one with a plain directory
#      as its repository (no libgit2), one on the same file:// remote with
#      SSL_CERT_FILE set to an empty file (OpenSSL then loads no CA bundle when the
#      fetch helper's libgit2 starts). Since a0a22ad the agent runs its helper that way
#      for every SSH and local remote, so the two file:// daemons should measure the
#      same; a gap between them means the helper parses the bundle again.
# The daemons are stopped and the temporary directory removed on exit (trap).
#
# Environment (all optional):
#   FILES=20          file steps of the role (plus its directory)
#   CYCLES=100        cycles of the measured daemon (at least 10)
#   REF_CYCLES=20     cycles of each reference daemon (0: skip step 5)
#   TARGET_MB=10      the idle RSS target (VmRSS after the last cycle)
#   BENCH_OUT=target/bench   where the per-cycle samples (TSV) are kept
#   BENCH_STRICT=1    exit 1 when the RSS target is missed or RSS grew
#
# Needs: root (every step sets owner root), git. Network: none; cargo builds offline.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/pull-common.sh
. "$ROOT/bench/pull-common.sh"

FILES=${FILES:-20}
CYCLES=${CYCLES:-100}
REF_CYCLES=${REF_CYCLES:-20}
TARGET_MB=${TARGET_MB:-10}
BENCH_OUT=${BENCH_OUT:-$ROOT/target/bench}
STEPS=$((FILES + 1))
INTERVAL=1
# Growth from cycle 10 to the last cycle that still counts as "no growth" (page-cache
# and allocator noise: a few pages).
GROWTH_SLACK_KB=256

((EUID == 0)) || die "run as root: the role sets owner and group root on every path"
((CYCLES >= 10)) || die "CYCLES must be at least 10"
build_agent "${1:-}"
CLK_TCK=$(getconf CLK_TCK)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/daemon-idle.XXXXXX")
DAEMON_PIDS=()
cleanup() {
    local pid
    for pid in "${DAEMON_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${DAEMON_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

gen_small_repo "$WORK/src" "$WORK/root" "$FILES"
"$BIN" check --repo "$WORK/src" --hostname "$HOST" >"$WORK/check.out" 2>&1 ||
    { cat "$WORK/check.out" >&2; die "check of the generated repository failed"; }
commit_repo "$WORK/src" "$WORK/remote.git"
mkdir "$WORK/tree"
git -C "$WORK/src" archive main | tar -x -C "$WORK/tree"
: >"$WORK/empty.pem"

DAEMON_KEYS=("interval = $INTERVAL" "splay = 0")
write_agent_toml "$WORK/file.toml" "file://$WORK/remote.git" "$WORK/state" "${DAEMON_KEYS[@]}"
write_agent_toml "$WORK/dir.toml" "$WORK/tree" "$WORK/state-dir" "${DAEMON_KEYS[@]}"
write_agent_toml "$WORK/noca.toml" "file://$WORK/remote.git" "$WORK/state-noca" "${DAEMON_KEYS[@]}"

# converge CFG WANT_CODE WANT_SUMMARY: one --once; stops unless it exits as expected.
converge() {
    local code=0 summary
    "$BIN" --once --config "$1" >"$WORK/once.out" 2>"$WORK/once.err" || code=$?
    summary=$(tail -1 "$WORK/once.out")
    if [[ $code != "$2" || $summary != "$3"* ]]; then
        cat "$WORK/once.err" >&2
        tail -20 "$WORK/once.out" >&2
        die "--once --config $1 exited $code ($summary), expected $2 ($3)"
    fi
}
converge "$WORK/file.toml" 2 "$STEPS changed, 0 in sync, 0 failed, 0 skipped"
for cfg in file dir noca; do
    converge "$WORK/$cfg.toml" 0 "0 changed, $STEPS in sync, 0 failed, 0 skipped"
done
say "in sync: --once exits 0 with $STEPS steps in sync from each repository"

# --- follow a daemon ------------------------------------------------------------------------

# follow NAME CFG STATE N [VAR=VALUE...]: runs the daemon with CFG (and the environment
# assignments) for N cycles, sampling after each; writes WORK/NAME.tsv (cycle, started_at,
# duration_ms, CPU ticks, VmRSS, VmHWM, RssAnon, RssFile, Pss in kB, threads) and
# WORK/NAME.maps (the largest mappings at the end), then stops it with SIGTERM.
follow() {
    local name=$1 cfg=$2 state=$3 n=$4
    shift 4
    local pid base total=0 seen=0 k status stat line deadline code=0
    local -a f
    local s_rss s_hwm s_anon s_file s_pss s_thr dur cpu started
    read_total() {
        status=
        if [[ -r $state/status.json ]]; then
            read -r -d '' status <"$state/status.json" || true
        fi
        total=0
        dur=0
        started=
        [[ $status =~ \"runs_total\":\ ([0-9]+) ]] && total=${BASH_REMATCH[1]}
        [[ $status =~ \"duration_ms\":\ ([0-9]+) ]] && dur=${BASH_REMATCH[1]}
        [[ $status =~ \"started_at\":\ \"([^\"]+)\" ]] && started=${BASH_REMATCH[1]}
        return 0
    }
    read_total
    base=$total
    env "$@" "$BIN" --config "$cfg" 2>"$WORK/$name.err" &
    pid=$!
    DAEMON_PIDS+=("$pid")
    printf 'cycle\tstarted_at\tduration_ms\tcpu_ticks\tvmrss_kb\tvmhwm_kb\trssanon_kb\trssfile_kb\tpss_kb\tthreads\n' >"$WORK/$name.tsv"
    deadline=$((SECONDS + n * (INTERVAL + 10) + 30))
    while ((seen < n)); do
        ((SECONDS < deadline)) || die "$name: the daemon did not finish $n cycles in time"
        kill -0 "$pid" 2>/dev/null || { cat "$WORK/$name.err" >&2; die "$name: the daemon exited"; }
        sleep 0.05
        read_total
        k=$((total - base))
        ((k > seen)) || continue
        ((k == seen + 1)) || say "$name: cycles $((seen + 1))..$k finished between two samples"
        seen=$k
        read -r -d '' stat <"/proc/$pid/stat" || true
        # Fields after the command: state is field 3; utime..cstime are fields 14-17.
        read -r -a f <<<"${stat##*) }"
        cpu=$((f[11] + f[12] + f[13] + f[14]))
        s_rss=0 s_hwm=0 s_anon=0 s_file=0 s_thr=0 s_pss=0
        while read -r line; do
            case $line in
            VmRSS:*) s_rss=${line//[!0-9]/} ;;
            VmHWM:*) s_hwm=${line//[!0-9]/} ;;
            RssAnon:*) s_anon=${line//[!0-9]/} ;;
            RssFile:*) s_file=${line//[!0-9]/} ;;
            Threads:*) s_thr=${line//[!0-9]/} ;;
            esac
        done <"/proc/$pid/status"
        while read -r line; do
            [[ $line == Pss:* ]] && s_pss=${line//[!0-9]/}
        done <"/proc/$pid/smaps_rollup"
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$k" "$started" "$dur" "$cpu" \
            "$s_rss" "$s_hwm" "$s_anon" "$s_file" "$s_pss" "$s_thr" >>"$WORK/$name.tsv"
    done
    # The largest mappings by resident size, named by file ("anonymous" for the heap and
    # thread stacks).
    awk '/^[0-9a-f]+-[0-9a-f]+ / { name = ($6 == "") ? "anonymous" : $6 } /^Rss:/ { r[name] += $2 }
        END { for (m in r) printf "%d %s\n", r[m], m }' "/proc/$pid/smaps" |
        sort -rn | head -6 >"$WORK/$name.maps"
    kill -TERM "$pid"
    wait "$pid" || code=$?
    local keep=() p
    for p in "${DAEMON_PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
    DAEMON_PIDS=("${keep[@]}")
    ((code == 0)) || die "$name: the daemon exited $code after SIGTERM"
    # Every cycle of the daemon kept in history (not the --once runs before it) was a
    # no-op run of all steps.
    local bad
    bad=$(grep -L '"trigger": "once"' "$state"/history/*.json |
        xargs -r grep -L '"outcome": "in_sync"' | head -3 || true)
    [[ -z $bad ]] || die "$name: cycles that were not no-ops: $bad"
}

# row NAME COLUMN CYCLE: a column's value at a cycle of WORK/NAME.tsv.
row() { awk -F'\t' -v c="$2" -v k="$3" 'NR > 1 && $1 == k { print $c }' "$WORK/$1.tsv"; }
kb_mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
# cpu_per_cycle NAME N: ms of CPU per cycle between cycle 1 and cycle N.
cpu_per_cycle() {
    local a b
    a=$(row "$1" 4 1)
    b=$(row "$1" 4 "$2")
    awk -v a="$a" -v b="$b" -v n="$2" -v t="$CLK_TCK" 'BEGIN { printf "%.1f", (b - a) * 1000 / t / (n - 1) }'
}

say "following the daemon (file:// remote, interval $INTERVAL s, splay 0) through $CYCLES cycles"
follow main "$WORK/file.toml" "$WORK/state" "$CYCLES"
[[ ! -s $WORK/main.err ]] || { cat "$WORK/main.err" >&2; die "the daemon printed warnings or errors"; }

refs=()
if ((REF_CYCLES > 0)); then
    ((REF_CYCLES >= 2)) || die "REF_CYCLES must be 0 or at least 2"
    say "reference: a plain directory as the repository, $REF_CYCLES cycles"
    follow dir "$WORK/dir.toml" "$WORK/state-dir" "$REF_CYCLES"
    say "reference: file:// with SSL_CERT_FILE=$WORK/empty.pem, $REF_CYCLES cycles"
    follow noca "$WORK/noca.toml" "$WORK/state-noca" "$REF_CYCLES" "SSL_CERT_FILE=$WORK/empty.pem"
    for name in dir noca; do
        case $name in
        dir) what="--repo DIR (a plain directory: no libgit2)" ;;
        noca) what="file://, SSL_CERT_FILE=empty file (the default)" ;;
        esac
        awk -F'\t' 'NR > 2 { print $3 }' "$WORK/$name.tsv" >"$WORK/$name.dur"
        refs+=("$(printf '  %-48s VmRSS %5s MB after cycle %d (Pss %s MB); CPU %5s ms/cycle; duration_ms median %s' \
            "$what" "$(kb_mb "$(row "$name" 5 "$REF_CYCLES")")" "$REF_CYCLES" \
            "$(kb_mb "$(row "$name" 9 "$REF_CYCLES")")" "$(cpu_per_cycle "$name" "$REF_CYCLES")" \
            "$(median <"$WORK/$name.dur")")")
    done
fi

mkdir -p "$BENCH_OUT"
cp "$WORK/main.tsv" "$BENCH_OUT/daemon-idle.tsv"

# --- summary ----------------------------------------------------------------------------

# Cycle 1 is the start-up cycle; the steady cycles are 2..CYCLES.
awk -F'\t' 'NR > 2 { print $3 }' "$WORK/main.tsv" >"$WORK/dur"
# Start to start, less the interval: the cycle and what the daemon does around it.
awk -F'\t' 'NR > 1 { print $2 }' "$WORK/main.tsv" | while read -r t; do date -d "$t" +%s.%N; done |
    awk -v i="$INTERVAL" 'NR > 1 { printf "%.1f\n", ($1 - prev - i) * 1000 } { prev = $1 }' >"$WORK/gap"
read -r d_med d_min d_max <<<"$(stat_ms "$WORK/dur")"
read -r g_med g_min g_max <<<"$(stat_ms "$WORK/gap")"
cpu=$(cpu_per_cycle main "$CYCLES")
first_cpu=$(awk -v a="$(row main 4 1)" -v t="$CLK_TCK" 'BEGIN { printf "%.0f", a * 1000 / t }')
last_rss=$(row main 5 "$CYCLES")
growth=$(($(row main 5 "$CYCLES") - $(row main 5 10)))
rss_ok=$(awk -v v="$last_rss" -v t="$TARGET_MB" 'BEGIN { print (v / 1024 <= t) ? "met" : "MISSED" }')
growth_ok=$( ((growth <= GROWTH_SLACK_KB)) && echo "no growth" || echo "GREW")

cat <<EOF

infra-agent daemon, idle ($(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)); file:// remote, $STEPS steps in sync ($FILES files), interval $INTERVAL s, splay 0
machine: $(nproc) CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo); load $(cut -d' ' -f1-3 /proc/loadavg)

one no-op cycle (cycles 2..$CYCLES):
  duration_ms (status.json, the agent's own)   median $d_med ms (min $d_min, max $d_max)
  start to start, less the interval             median $g_med ms (min $g_min, max $g_max)
  CPU time per cycle (utime+stime, /proc)       $cpu ms  (start-up and cycle 1 together: $first_cpu ms)

memory after cycle N (MB = 1024 KiB):
  cycle   VmRSS   VmHWM   RssAnon  RssFile  Pss    threads
EOF
samples=()
for k in 1 10 50 100; do ((k < CYCLES)) && samples+=("$k"); done
samples+=("$CYCLES")
for k in "${samples[@]}"; do
    printf '  %5d %6s  %6s  %7s  %7s  %5s  %s\n' "$k" \
        "$(kb_mb "$(row main 5 "$k")")" "$(kb_mb "$(row main 6 "$k")")" "$(kb_mb "$(row main 7 "$k")")" \
        "$(kb_mb "$(row main 8 "$k")")" "$(kb_mb "$(row main 9 "$k")")" "$(row main 10 "$k")"
done
cat <<EOF
  growth from cycle 10 to cycle $CYCLES: $growth kB ($growth_ok; slack $GROWTH_SLACK_KB kB)

largest mappings after cycle $CYCLES (resident):
$(awk '{ printf "  %6.1f MB  %s\n", $1 / 1024, $2 }' "$WORK/main.maps")
EOF
if ((${#refs[@]})); then
    printf '\nreference daemons (%d cycles each):\n' "$REF_CYCLES"
    printf '%s\n' "${refs[@]}"
fi
cat <<EOF

target VmRSS <= $TARGET_MB MB after cycle $CYCLES: $rss_ok ($(kb_mb "$last_rss") MB)
per-cycle samples: $BENCH_OUT/daemon-idle.tsv
EOF

if [[ ${BENCH_STRICT:-0} == 1 && ($rss_ok != met || $growth_ok != "no growth") ]]; then
    exit 1
fi
