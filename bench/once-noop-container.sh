#!/usr/bin/env bash
# Benchmark of a no-op `infra-agent --once --repo DIR` in a converged Debian bookworm
# container with systemd as PID 1 (docs/BENCHMARKS.md, "--once: no-op in a converged
# container").
#
#   bench/once-noop-container.sh            (as root, with Docker running)
#
# Builds the release binary and boots a container of the integration tests' image
# (home-infra-test/bookworm:<hash of integration-tests/images/bookworm.sh>, built here
# the way the harness builds it when it is missing), with the flags of
# /work/shared/TEST-HOSTS.md. Copies in the binary and a scratch copy of
# state-repo-example with one more inventory file, inventory/bench.toml, that puts the
# container's hostname (HOST) in a group running exactly first_boot, common and
# shell_env: 18 steps. Then, inside the container:
#   1. converges once: `--once` must exit 2 with 0 failed (packages come from the
#      machine's Debian mirror, as for the tests);
#   2. runs again: `--once` must exit 0 with `0 changed, 17 in sync, 0 failed,
#      1 skipped` (the `starship` step's `when` is false on bookworm); stops otherwise;
#   3. installs hyperfine, time and strace with apt-get, checks the run is still a no-op;
#   4. measures that no-op run, the whole process from exec to exit:
#      - wall time: hyperfine, WARMUP warm-up runs then RUNS timed runs;
#      - peak RSS: `/usr/bin/time -v` ("Maximum resident set size"), RSS_RUNS runs;
#      and checks after the measurements that the run is still a no-op;
#   5. for reference (where the time goes): times `infra-agent --version`,
#      `infra-agent check` of the same host and the one `systemctl show` the run
#      spawns, and counts the run's system calls with `strace -c`.
# The container is removed on exit.
#
# Environment (all optional):
#   RUNS=50 WARMUP=5 RSS_RUNS=15  repetitions
#   REF_RUNS=30                   timed runs of each reference command (0: skip step 5)
#   TARGET_MS=30 TARGET_MB=10     targets of the issue
#   BENCH_OUT=target/bench        where hyperfine's JSON and CSV exports are kept
#   BENCH_STRICT=1                exit 1 when a target is missed (default: report only)
#   DOCKER_API_VERSION            the daemon's API version (default: what it says, or 1.41)
#
# Network: cargo builds with --offline. The container reaches only the machine's own
# Debian mirror (apt-get in steps 1 and 3); building a missing image uses it too.

set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=${RUNS:-50}
WARMUP=${WARMUP:-5}
RSS_RUNS=${RSS_RUNS:-15}
REF_RUNS=${REF_RUNS:-30}
TARGET_MS=${TARGET_MS:-30}
TARGET_MB=${TARGET_MB:-10}
BENCH_OUT=${BENCH_OUT:-$ROOT/target/bench}
BIN=$ROOT/target/release/infra-agent
FETCH=$ROOT/target/release/infra-agent-fetch # the fetch helper, installed beside the agent
RECIPE=$ROOT/integration-tests/images/bookworm.sh
LOCK_FILE=/tmp/home-infra-test-image.lock # the harness's (integration-tests/src/image.rs)
HOST=noop-01                              # the container's hostname
GROUP=bench_noop
ROLES='"first_boot", "common", "shell_env"'
STEPS=20 # first_boot 6 + common 8 + shell_env 6 (state-repo-example/roles/)
# In sync but for the skipped ones: starship (bookworm) and nala-mirrors (off here).
IN_SYNC="0 changed, 18 in sync, 0 failed, 2 skipped"
LABEL=home-infra-bench.once-noop-container # value: the pid of the script that owns it
CT=bench-noop-$$-$HOST
REPO_IN=/srv/state # where the repository is in the container
ONCE_IN="infra-agent --once --repo $REPO_IN"

say() { printf '%s\n' "$*" >&2; }
die() {
    say "once-noop-container: $*"
    exit 1
}

((EUID == 0)) || die "run as root (Docker, and building the image with debootstrap)"

# --- Docker and the image ---------------------------------------------------------------

command -v docker >/dev/null || die "docker is missing: run .ci/run once, or see /work/shared/TEST-HOSTS.md"
docker info >/dev/null 2>&1 ||
    die "Docker is not running: run .ci/run or start dockerd; see /work/shared/TEST-HOSTS.md"
# The machine's docker client may be newer than Debian's daemon (API 1.41).
if [[ -z ${DOCKER_API_VERSION:-} ]]; then
    DOCKER_API_VERSION=$(docker version --format '{{.Server.APIVersion}}' 2>/dev/null || true)
fi
export DOCKER_API_VERSION=${DOCKER_API_VERSION:-1.41}

# The harness's tag: home-infra-test/bookworm:<64-bit FNV-1a of the recipe's bytes, hex>
# (integration-tests/src/image.rs). Bash arithmetic wraps at 64 bits like wrapping_mul.
fnv1a() {
    local h=$((0xcbf29ce484222325)) b
    for b in $(od -An -v -tu1 "$1"); do
        h=$(((h ^ b) * 0x100000001b3))
    done
    printf '%016x' "$h"
}
IMAGE=home-infra-test/bookworm:$(fnv1a "$RECIPE")

if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
    command -v debootstrap >/dev/null ||
        die "the test image $IMAGE is missing and debootstrap is not installed: run the integration tests once (.ci/run, or \`cargo test -p integration-tests\`), which build it"
    say "the test image $IMAGE is missing: building it as the integration tests do (a few minutes, once)"
    # Under the harness's lock, so that a test run building it at the same time waits.
    (
        flock -w 1200 9 || die "another process held $LOCK_FILE for 20 minutes"
        docker image inspect "$IMAGE" >/dev/null 2>&1 || bash "$RECIPE" "$IMAGE" >&2
    ) 9>"$LOCK_FILE"
fi

# Leftovers of earlier runs of this script that were killed: their owner is gone.
docker ps -a --filter "label=$LABEL" --format "{{.Names}} {{.Label \"$LABEL\"}}" |
    while read -r name owner; do
        if ! kill -0 "$owner" 2>/dev/null; then
            say "removing the leftover container $name"
            docker rm -f -v "$name" >/dev/null || true
        fi
    done

# --- build, scratch repository ----------------------------------------------------------

say "building: cargo build --release -p infra-agent"
(cd "$ROOT" && cargo build --offline --release -p infra-agent >&2)
[[ -x $BIN ]] || die "$BIN was not built"
# A cargo command of its own: built in one with the agent, the agent would link OpenSSL.
say "building: cargo build --release -p infra-agent-fetch"
(cd "$ROOT" && cargo build --offline --release -p infra-agent-fetch >&2)
[[ -x $FETCH ]] || die "$FETCH was not built"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/once-noop-container.XXXXXX")
cleanup() {
    docker rm -f -v "$CT" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

REPO=$WORK/repo
cp -r "$ROOT/state-repo-example" "$REPO"
# A third environment besides production and staging: only HOST, only three roles.
cat >"$REPO/inventory/bench.toml" <<EOF
# The benchmark's container (bench/once-noop-container.sh): three roles of the example.
[groups.$GROUP]
hosts = ["$HOST"]
roles = [$ROLES]
EOF
# Never a real `nala fetch` (it contacts mirror lists and many mirrors): off, as in staging.
cat >"$REPO/group_data/$GROUP.toml" <<EOF
[apt]
nala_fetch = false
EOF
# Stop early unless the repository is valid and gives HOST exactly these steps.
want_check="$STEPS steps (groups: all, $GROUP; roles: first_boot, common, shell_env)"
"$BIN" check --repo "$REPO" --hostname "$HOST" >"$WORK/check.out" 2>&1 ||
    { cat "$WORK/check.out" >&2; die "check of the scratch repository failed"; }
grep -qF "$want_check" "$WORK/check.out" ||
    { cat "$WORK/check.out" >&2; die "check did not report: $want_check"; }

# --- boot the container -------------------------------------------------------------------

say "starting $CT from $IMAGE"
# The flags of /work/shared/TEST-HOSTS.md, as integration-tests/src/test_host.rs passes them.
docker run -d --name "$CT" --hostname "$HOST" --label "$LABEL=$$" \
    --cap-add SYS_ADMIN --cap-add NET_ADMIN --security-opt seccomp=unconfined \
    --tmpfs /run --tmpfs /run/lock --tmpfs /tmp \
    -v /sys/fs/cgroup:/sys/fs/cgroup:ro \
    -p 127.0.0.1:0:22 "$IMAGE" /sbin/init >/dev/null
# Poll until systemd is up: at most 90 s (and 1800 polls).
booted=
boot_start=$SECONDS
for ((i = 0; i < 1800 && SECONDS - boot_start < 90; i++)); do
    state=$(docker exec "$CT" systemctl is-system-running 2>/dev/null || true)
    if [[ $state == running || $state == degraded ]]; then
        booted=$state
        break
    fi
    sleep 0.05
done
[[ -n $booted ]] || { docker logs --tail 40 "$CT" >&2; die "$CT did not boot (last state: ${state:-none})"; }
say "booted: systemd is $booted"

docker cp "$BIN" "$CT:/usr/local/bin/infra-agent" >/dev/null
docker cp "$FETCH" "$CT:/usr/local/bin/infra-agent-fetch" >/dev/null
docker exec "$CT" mkdir -p "$REPO_IN"
docker cp "$REPO/." "$CT:$REPO_IN" >/dev/null
docker exec "$CT" chown -R root:root "$REPO_IN"

# in_ct ARGS...: runs ARGS in the container as root (bounded by 10 minutes).
in_ct() { timeout 600 docker exec -e NO_COLOR=1 "$CT" "$@"; }

# once WANT_CODE WANT_SUMMARY: runs the no-op command once in the container, stops unless
# it exits WANT_CODE and its last line is WANT_SUMMARY (a pattern for [[ == ]]).
once() {
    local want_code=$1 want_summary=$2 code=0 summary
    in_ct $ONCE_IN >"$WORK/once.out" 2>"$WORK/once.err" || code=$?
    summary=$(tail -1 "$WORK/once.out")
    # shellcheck disable=SC2053 # WANT_SUMMARY is a pattern
    # The summary ends with the run's timing: " in T ms (P ms in programs it ran)".
    if [[ $code != "$want_code" || $summary != $want_summary* ]]; then
        cat "$WORK/once.err" >&2
        tail -40 "$WORK/once.out" >&2
        die "--once exited $code ($summary), expected $want_code ($want_summary)"
    fi
    printf '%s\n' "$summary"
}

# --- converge, verify, tools ----------------------------------------------------------------

say "converging: $ONCE_IN (packages from the Debian mirror)"
start=$SECONDS
summary=$(once 2 "* changed, * in sync, 0 failed, * skipped")
say "converged in $((SECONDS - start)) s: $summary"
FIRST_CONVERGE=$summary
once 0 "$IN_SYNC" >/dev/null
say "no-op: a second --once exits 0 with $IN_SYNC"

say "installing hyperfine, time and strace in the container"
if ! in_ct env DEBIAN_FRONTEND=noninteractive apt-get install -y -q hyperfine time strace >"$WORK/apt.out" 2>&1; then
    in_ct env DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$WORK/apt.out" 2>&1 &&
        in_ct env DEBIAN_FRONTEND=noninteractive apt-get install -y -q hyperfine time strace >>"$WORK/apt.out" 2>&1 ||
        { tail -20 "$WORK/apt.out" >&2; die "apt-get install hyperfine time strace failed"; }
fi
HYPERFINE_VERSION=$(in_ct hyperfine --version)
# The tools changed dpkg's database, not what the roles manage.
once 0 "$IN_SYNC" >/dev/null

# --- measure ----------------------------------------------------------------------------

mkdir -p "$BENCH_OUT"
NAME=once-noop-container

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# hyperfine_in NAME RUNS COMMAND: hyperfine in the container (it fails on a non-zero
# exit); copies the exports to BENCH_OUT and prints "median min max mean stddev user
# system" in ms on stdout (two decimals: the verdict is not decided by rounding).
hyperfine_in() {
    local name=$1 runs=$2 command=$3
    in_ct hyperfine --shell=none --warmup "$WARMUP" --runs "$runs" --style basic \
        --command-name "$name" \
        --export-json "/tmp/$name.json" --export-csv "/tmp/$name.csv" \
        "$command" >&2
    # (`docker cp` does not see the container's /tmp, a tmpfs.)
    in_ct cat "/tmp/$name.json" >"$BENCH_OUT/$name.json"
    in_ct cat "/tmp/$name.csv" >"$BENCH_OUT/$name.csv"
    # CSV columns: command,mean,stddev,median,user,system,min,max (seconds)
    awk -F, 'NR == 2 { printf "%.2f %.2f %.2f %.2f %.2f %.2f %.2f\n", $4 * 1000, $7 * 1000, $8 * 1000, $2 * 1000, $3 * 1000, $5 * 1000, $6 * 1000 }' \
        "$BENCH_OUT/$name.csv"
}

# rss: median, min and max peak RSS in MB (1 MB = 1024 KiB) over RSS_RUNS runs, inside
# the container. GNU time reads it from wait4: the largest of the process and the
# children it waited for (here, the one `systemctl show`).
rss() {
    # shellcheck disable=SC2016 # expanded by the container's shell
    in_ct sh -c 'i=0; while [ $i -lt "$1" ]; do
        /usr/bin/time -v '"$ONCE_IN"' >/dev/null 2>/tmp/time.out || exit 1
        awk -F": " "/Maximum resident set size/ { print \$2 }" /tmp/time.out
        i=$((i + 1)); done' sh "$RSS_RUNS" >"$WORK/rss" ||
        die "--once did not exit 0 under /usr/bin/time"
    [[ $(wc -l <"$WORK/rss") == "$RSS_RUNS" ]] || die "no RSS figure from /usr/bin/time -v"
    printf '%s %s %s\n' \
        "$(median <"$WORK/rss" | awk '{ printf "%.1f", $1 / 1024 }')" \
        "$(sort -n "$WORK/rss" | head -1 | awk '{ printf "%.1f", $1 / 1024 }')" \
        "$(sort -n "$WORK/rss" | tail -1 | awk '{ printf "%.1f", $1 / 1024 }')"
}

say ""
say "== $NAME: wall time (inside the container)"
res=$(hyperfine_in "$NAME" "$RUNS" "$ONCE_IN")
read -r w_med w_min w_max w_mean w_sd w_user w_sys <<<"$res"
say "== $NAME: peak RSS (inside the container)"
res=$(rss)
read -r r_med r_min r_max <<<"$res"
# Nothing drifted while measuring: every timed run was a no-op.
once 0 "$IN_SYNC" >/dev/null

# --- where the time goes (reference) ---------------------------------------------------------

refs=()
if ((REF_RUNS > 0)); then
    say "== reference: process start, load and render, the one child process"
    # ref NAME COMMAND [LABEL]
    ref() {
        local res med min
        res=$(hyperfine_in "$NAME-ref-$1" "$REF_RUNS" "$2")
        read -r med min _ <<<"$res"
        refs+=("$(printf '  %-56s median %5.1f ms  (min %.1f)' "${3:-$2}" "$med" "$min")")
    }
    ref version "infra-agent --version"
    ref check "infra-agent check --repo $REPO_IN --hostname $HOST"
    # The command the service step runs (agent/src/resource/service.rs).
    ref systemctl "systemctl show --property=Id,LoadState,ActiveState,SubState,UnitFileState,NeedDaemonReload -- ssh.service" \
        "systemctl show --property=... -- ssh.service"
    # System calls: the agent alone, and with the processes it starts.
    sys_agent=$(in_ct sh -c "strace -c -o /tmp/strace.out $ONCE_IN >/dev/null && awk '\$NF == \"total\" { print \$4 }' /tmp/strace.out")
    sys_all=$(in_ct sh -c "strace -f -c -o /tmp/strace.out $ONCE_IN >/dev/null && awk '\$NF == \"total\" { print \$4 }' /tmp/strace.out")
    execs=$(in_ct sh -c "strace -f -qq -e trace=execve -e status=successful -o /tmp/strace.out $ONCE_IN >/dev/null && grep -o 'execve(\"[^\"]*\"' /tmp/strace.out | cut -d'\"' -f2 | paste -sd' '")
    refs+=("  system calls (strace -c): $sys_agent by the agent, $sys_all with its children; programs run: $execs")
    once 0 "$IN_SYNC" >/dev/null
fi

verdict() { awk -v v="$1" -v t="$2" 'BEGIN { print (v <= t) ? "met" : "MISSED" }'; }
wall_ok=$(verdict "$w_med" "$TARGET_MS")
rss_ok=$(verdict "$r_med" "$TARGET_MB")

cat <<EOF

infra-agent --once, no-op in a converged container ($(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)); image $IMAGE
machine: $(nproc) CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo); load $(cut -d' ' -f1-3 /proc/loadavg)
runs: wall $RUNS (+$WARMUP warm-up) with $HYPERFINE_VERSION, peak RSS $RSS_RUNS with /usr/bin/time -v, all inside the container

run                                       wall median    min     max    mean ± sd        user   sys    peak RSS median (min-max)
first_boot+common+shell_env ($STEPS steps) $(printf '%8.2f ms %6.1f %7.1f %6.1f ± %-6.1f %6.1f %5.1f %8.1f MB (%s-%s)' "$w_med" "$w_min" "$w_max" "$w_mean" "$w_sd" "$w_user" "$w_sys" "$r_med" "$r_min" "$r_max")
EOF
if ((${#refs[@]})); then
    printf '\nreference (in the same container):\n'
    printf '%s\n' "${refs[@]}"
fi
cat <<EOF

first converge (one run; the agent's own time is the total minus the programs it ran):
  $FIRST_CONVERGE

target wall <= $TARGET_MS ms: $wall_ok (median $w_med ms)
target RSS  <= $TARGET_MB MB: $rss_ok (median $r_med MB)
not measured here (quoted from the issue): pyinfra about 2 s, ansible-pull about 20 s for a similar no-op
hyperfine exports: $BENCH_OUT/$NAME*.json, $BENCH_OUT/$NAME*.csv
EOF

if [[ ${BENCH_STRICT:-0} == 1 && ($wall_ok != met || $rss_ok != met) ]]; then
    exit 1
fi
