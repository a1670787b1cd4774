#!/usr/bin/env bash
# Benchmark of a no-change poll: the whole `infra-agent --once --config agent.toml`
# process when the remote's tip has not moved and the host is in sync
# (docs/BENCHMARKS.md, "--once: a poll when nothing changed").
#
#   bench/poll-nochange.sh [BIN]            (as root, with Docker running)
#
# BIN is an infra-agent binary to measure, with infra-agent-fetch beside it; without it
# the script builds `cargo build --release -p infra-agent`, then
# `cargo build --release -p infra-agent-fetch` (offline; two cargo commands, so the
# agent links no OpenSSL). In a temporary directory it writes a
# state repository (bench/pull-common.sh: host bench-01, one role of one directory and
# FILES `file` steps under WORK/root), commits it, and serves the commit three ways:
#   ssh   a git server container (the integration tests' image, systemd as PID 1, set
#         up as integration-tests/src/git_server.rs does: user git with git-shell, the
#         deploy key, a pinned ed25519 host key), reached on 127.0.0.1:PORT
#         (docker run -p 127.0.0.1:0:22): ssh://git@127.0.0.1:PORT/srv/git/infra.git;
#   file  the bare repository on this machine: file://WORK/remote.git (the floor);
#   dir   the same tree exported without .git (`git archive`): a plain directory,
#         which the agent reads as it is and without libgit2.
# Each has its own agent.toml and state_dir. Then:
#   1. converges once per origin and checks that the next run exits 0 with every step
#      in sync (and, for ssh and file, names the commit);
#   2. checks that a poll writes nothing into the mirror (no fetch: the tip is known)
#      and that the dir run never touches git: no WORK/state-dir/repo.git, and
#      `strace -f` shows none of the files libgit2 and OpenSSL open at init
#      (openssl.cnf, the CA bundle, gitconfig);
#   3. measures each origin, the whole process from exec to exit:
#      - wall time: hyperfine, WARMUP warm-up runs then RUNS timed runs;
#      - peak RSS: `/usr/bin/time -v` ("Maximum resident set size"), RSS_RUNS runs;
#   4. for reference (where the time goes): `git ls-remote` of the same branch over ssh
#      and file://, `infra-agent --version`, and the polls with SSL_CERT_FILE set to an
#      empty file (OpenSSL then loads no CA bundle when libgit2 starts; since a0a22ad
#      the agent runs its fetch helper so for SSH and local remotes, so these should
#      match the plain polls); system calls with `strace -f -c`;
#      and, when `perf` is installed, the CPU split by library over PERF_RUNS runs.
# The container and the temporary directory are removed on exit.
#
# Environment (all optional):
#   FILES=20                      file steps of the role (plus its directory)
#   RUNS=30 WARMUP=3 RSS_RUNS=10  repetitions
#   REF=1                         step 4 (0: skip it)
#   PERF_RUNS=20                  runs recorded by perf per origin (0: no perf)
#   BENCH_OUT=target/bench        where hyperfine's JSON and CSV exports are kept
#
# Needs: root (every step sets owner root), Docker with the integration tests' image
# (home-infra-test/bookworm:<hash>; `cargo test -p integration-tests` builds it), git,
# ssh and ssh-keygen. Installs hyperfine, time and strace with apt-get when missing.
# Network: none beyond 127.0.0.1 and the container; cargo builds with --offline.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/pull-common.sh
. "$ROOT/bench/pull-common.sh"

FILES=${FILES:-20}
RUNS=${RUNS:-30}
WARMUP=${WARMUP:-3}
RSS_RUNS=${RSS_RUNS:-10}
REF=${REF:-1}
PERF_RUNS=${PERF_RUNS:-20}
BENCH_OUT=${BENCH_OUT:-$ROOT/target/bench}
STEPS=$((FILES + 1))
IN_SYNC="0 changed, $STEPS in sync, 0 failed, 0 skipped"
LABEL=home-infra-bench.poll-nochange # value: the pid of the script that owns it
CT=bench-poll-$$-git

((EUID == 0)) || die "run as root: the role sets owner and group root on every path"
install_tools hyperfine time:/usr/bin/time strace
command -v ssh >/dev/null || die "ssh (Debian package openssh-client) is needed"
docker_setup
remove_leftovers "$LABEL"
build_agent "${1:-}"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/poll-nochange.XXXXXX")
cleanup() {
    docker rm -f -v "$CT" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the repository, the server, the three agent.toml -----------------------------------

gen_small_repo "$WORK/src" "$WORK/root" "$FILES"
"$BIN" check --repo "$WORK/src" --hostname "$HOST" >"$WORK/check.out" 2>&1 ||
    { cat "$WORK/check.out" >&2; die "check of the generated repository failed"; }
commit_repo "$WORK/src" "$WORK/remote.git"
mkdir "$WORK/tree"
git -C "$WORK/src" archive main | tar -x -C "$WORK/tree"

say "starting the git server $CT from $IMAGE"
start_git_server "$CT" "$LABEL"
push_to_server "$CT" "$WORK/remote.git"
SSH_URL="ssh://git@127.0.0.1:$GIT_PORT/srv/git/infra.git"
FILE_URL="file://$WORK/remote.git"

write_agent_toml "$WORK/ssh.toml" "$SSH_URL" "$WORK/state-ssh" \
    "deploy_key = \"$DEPLOY_KEY\"" "known_hosts = \"$KNOWN_HOSTS\""
write_agent_toml "$WORK/file.toml" "$FILE_URL" "$WORK/state-file"
write_agent_toml "$WORK/dir.toml" "$WORK/tree" "$WORK/state-dir"

MODES=(ssh file dir)
declare -A WHAT=(
    [ssh]="ssh:// to the git server container"
    [file]="file:// (bare repository on this machine)"
    [dir]="--repo DIR (the same tree, no git)"
)
# once_cmd MODE: MODE's command as one string (for hyperfine); agent MODE runs it.
once_cmd() { printf '%s --once --config %s' "$BIN" "$WORK/$1.toml"; }
agent() { "$BIN" --once --config "$WORK/$1.toml"; }

# once MODE WANT_CODE WANT_SUMMARY: runs MODE's --once; stops unless it exits WANT_CODE
# and its last line starts with WANT_SUMMARY (a pattern).
once() {
    local mode=$1 want_code=$2 want_summary=$3 code=0 summary
    agent "$mode" >"$WORK/once.out" 2>"$WORK/once.err" || code=$?
    summary=$(tail -1 "$WORK/once.out")
    # shellcheck disable=SC2053 # a pattern
    if [[ $code != "$want_code" || $summary != $want_summary* ]]; then
        cat "$WORK/once.err" >&2
        tail -20 "$WORK/once.out" >&2
        die "$mode: --once exited $code ($summary), expected $want_code ($want_summary)"
    fi
}

say "converging: the first origin changes every step, the others find them in sync"
once ssh 2 "$STEPS changed, 0 in sync, 0 failed, 0 skipped"
once file 0 "$IN_SYNC"
once dir 0 "$IN_SYNC"
COMMIT=$(git -C "$WORK/src" rev-parse --short=12 main)
for mode in "${MODES[@]}"; do
    once "$mode" 0 "$IN_SYNC"
    first=$(head -1 "$WORK/once.out")
    case $mode in
    dir) [[ $first != commit* ]] || die "dir: the run names a commit: $first" ;;
    *) [[ $first == "commit $COMMIT "* ]] || die "$mode: the run does not name commit $COMMIT: $first" ;;
    esac
done
say "in sync: every origin's --once exits 0 with $IN_SYNC"

# --- what a poll touches ------------------------------------------------------------------

# A poll that finds the tip it has fetches nothing: the mirror is not written.
for mode in ssh file; do
    touch "$WORK/marker"
    sleep 0.01
    once "$mode" 0 "$IN_SYNC"
    written=$(find "$WORK/state-$mode/repo.git" -newer "$WORK/marker" | head -5)
    [[ -z $written ]] || die "$mode: a no-change poll wrote into the mirror: $written"
done
NO_FETCH="yes: a poll writes nothing into repo.git (find -newer)"

# The files libgit2's and OpenSSL's initialisation open; the dir run must open none.
MARKERS='openssl\.cnf|ca-certificates\.crt|/etc/ssl/certs|gitconfig|repo\.git'
declare -A OPENS
for mode in "${MODES[@]}"; do
    strace -f -qq -e trace=openat,open,newfstatat,statx,access,mkdir -o "$WORK/$mode.open" \
        "$BIN" --once --config "$WORK/$mode.toml" >/dev/null
    OPENS[$mode]=$(grep -cE "$MARKERS" "$WORK/$mode.open" || true)
done
[[ ! -e $WORK/state-dir/repo.git ]] || die "dir: $WORK/state-dir/repo.git was created"
((OPENS[dir] == 0)) || { grep -E "$MARKERS" "$WORK/dir.open" >&2; die "dir: the run opened git or OpenSSL files"; }
((OPENS[file] > 0)) || die "file: strace saw none of the git files (the check would prove nothing)"
# Since a4ead09 the agent links no OpenSSL (its fetch helper does): expect none.
LOADER_LIBS=$(grep -oE '"/[^"]*lib(ssl|crypto)\.so[^"]*"' "$WORK/dir.open" | tr -d '"' | paste -sd' ' || true)
NO_GIT="yes: no repo.git; 0 opens of openssl.cnf, the CA bundle, gitconfig or repo.git (file: ${OPENS[file]}, ssh: ${OPENS[ssh]})"

# --- measure ----------------------------------------------------------------------------

mkdir -p "$BENCH_OUT"

# wall NAME COMMAND: hyperfine (it fails on a non-zero exit); prints "median min max mean
# stddev user system" in ms.
wall() {
    local name=$1 command=$2
    hyperfine --shell=none --warmup "$WARMUP" --runs "$RUNS" --style basic \
        --command-name "$name" \
        --export-json "$BENCH_OUT/$name.json" --export-csv "$BENCH_OUT/$name.csv" \
        "$command" >&2
    # CSV columns: command,mean,stddev,median,user,system,min,max (seconds)
    awk -F, 'NR == 2 { printf "%.1f %.1f %.1f %.1f %.1f %.1f %.1f\n", $4 * 1000, $7 * 1000, $8 * 1000, $2 * 1000, $3 * 1000, $5 * 1000, $6 * 1000 }' \
        "$BENCH_OUT/$name.csv"
}

# rss MODE: "median min max" peak RSS in MB (1 MB = 1024 KiB) over RSS_RUNS runs.
rss() {
    local i kb
    : >"$WORK/rss"
    for ((i = 0; i < RSS_RUNS; i++)); do
        /usr/bin/time -v "$BIN" --once --config "$WORK/$1.toml" >/dev/null 2>"$WORK/time.out" ||
            { tail -5 "$WORK/time.out" >&2; die "$1: --once did not exit 0 under /usr/bin/time"; }
        kb=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$WORK/time.out")
        awk -v k="$kb" 'BEGIN { printf "%.2f\n", k / 1024 }' >>"$WORK/rss"
    done
    stat_ms "$WORK/rss"
}

declare -A W R
for mode in "${MODES[@]}"; do
    say ""
    say "== poll-nochange-$mode: ${WHAT[$mode]}"
    W[$mode]=$(wall "poll-nochange-$mode" "$(once_cmd "$mode")")
    R[$mode]=$(rss "$mode")
done
# Nothing drifted while measuring.
for mode in "${MODES[@]}"; do once "$mode" 0 "$IN_SYNC"; done

# --- where the time goes (reference) -------------------------------------------------------

refs=()
if ((REF)); then
    say ""
    say "== reference commands"
    : >"$WORK/empty.pem"
    ssh_cmd="ssh -i $DEPLOY_KEY -o UserKnownHostsFile=$KNOWN_HOSTS -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes -o BatchMode=yes"
    # ref NAME LABEL COMMAND
    ref() {
        local res med min _max _mean _sd user sys
        res=$(wall "poll-nochange-ref-$1" "$3")
        read -r med min _max _mean _sd user sys <<<"$res"
        refs+=("$(printf '  %-58s median %6.1f ms (min %6.1f)  user %5.1f  sys %4.1f' "$2" "$med" "$min" "$user" "$sys")")
    }
    ref ls-remote-ssh "git ls-remote over ssh (OpenSSH client)" \
        "env 'GIT_SSH_COMMAND=$ssh_cmd' git ls-remote $SSH_URL refs/heads/main"
    ref ls-remote-file "git ls-remote file://" "git ls-remote $FILE_URL refs/heads/main"
    ref version "infra-agent --version (process start)" "$BIN --version"
    ref file-no-ca "file poll, SSL_CERT_FILE=empty file (the default)" \
        "env SSL_CERT_FILE=$WORK/empty.pem $(once_cmd file)"
    ref ssh-no-ca "ssh poll, SSL_CERT_FILE=empty file (the default)" \
        "env SSL_CERT_FILE=$WORK/empty.pem $(once_cmd ssh)"
    for mode in "${MODES[@]}"; do
        strace -f -c -o "$WORK/$mode.strace" "$BIN" --once --config "$WORK/$mode.toml" >/dev/null
        # Columns: % time, seconds, usecs/call, calls, [errors,] syscall.
        calls=$(awk '$NF == "total" { print $4 }' "$WORK/$mode.strace")
        top=$(awk '$1 ~ /^[0-9.]+$/ && $NF != "total" { print $4 " " $NF }' "$WORK/$mode.strace" |
            sort -rn | head -4 | awk '{ printf "%s%s %s", (NR > 1 ? ", " : ""), $1, $2 }')
        refs+=("$(printf '  system calls, %-4s (strace -f -c): %5s; most: %s' "$mode" "$calls" "$top")")
    done
    if ((PERF_RUNS > 0)) && command -v perf >/dev/null &&
        perf record -q -e cpu-clock -o "$WORK/probe.perf" -- true >/dev/null 2>&1; then
        for mode in file ssh; do
            # shellcheck disable=SC2016 # expanded by sh
            perf record -q -e cpu-clock -F 5000 -o "$WORK/$mode.perf" -- \
                sh -c 'n=$1; shift; i=0; while [ $i -lt "$n" ]; do "$@" >/dev/null 2>&1 || exit 1; i=$((i + 1)); done' \
                sh "$PERF_RUNS" "$BIN" --once --config "$WORK/$mode.toml" 2>/dev/null ||
                { say "perf record of the $mode poll failed: no CPU split"; continue; }
            split=$(perf report -i "$WORK/$mode.perf" --sort dso --stdio 2>/dev/null |
                awk '$1 ~ /%$/ && $1 + 0 >= 1 { printf "%s%s %s", (n++ ? ", " : ""), $1, $2 }')
            refs+=("  CPU by library, $mode poll (perf, cpu-clock, $PERF_RUNS runs): $split")
        done
    fi
fi

# --- summary ----------------------------------------------------------------------------

cat <<EOF

infra-agent --once, no-change poll ($(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)); $STEPS steps in sync ($FILES files)
machine: $(nproc) CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo); load $(cut -d' ' -f1-3 /proc/loadavg)
git server: $IMAGE, $(docker exec "$CT" sh -c 'ssh -V 2>&1'), $(docker exec "$CT" git --version)
runs: wall $RUNS (+$WARMUP warm-up) with $(hyperfine --version), peak RSS $RSS_RUNS with /usr/bin/time -v

origin                                         wall median    min     max    mean ± sd       user   sys    peak RSS median (min-max)
EOF
for mode in "${MODES[@]}"; do
    read -r w_med w_min w_max w_mean w_sd w_user w_sys <<<"${W[$mode]}"
    read -r r_med r_min r_max <<<"${R[$mode]}"
    printf '%-44s %8.1f ms %6.1f %7.1f %6.1f ± %-6.1f %6.1f %5.1f %8.1f MB (%.1f-%.1f)\n' \
        "${WHAT[$mode]}" "$w_med" "$w_min" "$w_max" "$w_mean" "$w_sd" "$w_user" "$w_sys" "$r_med" "$r_min" "$r_max"
done
cat <<EOF

no fetch when the tip is known: $NO_FETCH
--repo DIR never touches git: $NO_GIT
  (OpenSSL libraries the dynamic loader maps for the agent: ${LOADER_LIBS:-none})
EOF
if ((${#refs[@]})); then
    printf '\nreference:\n'
    printf '%s\n' "${refs[@]}"
fi
printf 'hyperfine exports: %s/poll-nochange-*.json, .csv\n' "$BENCH_OUT"
