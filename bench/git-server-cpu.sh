#!/usr/bin/env bash
# Benchmark of the git server's side of polling: CPU time the server spends per
# no-change poll of `infra-agent --once`, against `git ls-remote` of the same branch
# (docs/BENCHMARKS.md, "The git server: CPU per poll"). Not for CI: it takes minutes.
#
#   bench/git-server-cpu.sh [BIN]            (as root, with Docker running)
#
# BIN is an infra-agent binary, with infra-agent-fetch beside it; without it the script
# builds `cargo build --release -p infra-agent`, then `cargo build --release -p
# infra-agent-fetch` (offline; two cargo commands, so the agent links no OpenSSL). It
# boots a git server container (the integration tests' image with systemd as PID 1, set up as
# integration-tests/src/git_server.rs does: user git with git-shell, the deploy key
# with `restrict`, a pinned ed25519 host key; sshd logs to journald), port 22 published
# on 127.0.0.1, and pushes into it a small state repository (bench/pull-common.sh: host
# bench-01, one role of one directory and FILES `file` steps). On this machine it
# prepares POLLERS simulated hosts: one state_dir converged with `--once`, copied
# POLLERS times, each with its own agent.toml (ssh://git@127.0.0.1:PORT/..., the deploy
# key, the pinned host key). Then, ROUNDS times:
#   - idle: the container's CPU over IDLE_SECONDS with no poll (its rate is subtracted);
#   - agent: POLLERS runs of `infra-agent --once --config agent-I.toml`, one per
#     simulated host, CONCURRENCY at a time; every one must exit 0 (in sync, no fetch);
#   - ls-remote: POLLERS runs of `git ls-remote URL refs/heads/main` with the OpenSSH
#     client and the same key, CONCURRENCY at a time.
# The server's CPU is the container's cgroup (cgroup v1 cpuacct.usage or v2 cpu.stat:
# every process in it: sshd and its children, git-shell, git-upload-pack, journald,
# systemd, logind). Per poll = (delta - idle rate x elapsed) / POLLERS. The CPU of the
# container's long-lived processes (from /proc/PID/stat) splits it: what is left is the
# per-connection processes. The clients' CPU (GNU time around each batch) and
# docker-proxy's (the userland proxy behind 127.0.0.1:PORT, outside the container) are
# printed too. The container and the temporary directory are removed on exit.
#
# Environment (all optional):
#   POLLERS=200        polls per batch (one simulated host each)
#   CONCURRENCY=1      polls at a time (sshd's MaxStartups is 10: keep it below)
#   ROUNDS=2           idle + agent + ls-remote, this many times
#   IDLE_SECONDS=10    length of each idle measurement
#   FILES=20           file steps of the role
#
# Needs: root, Docker with the integration tests' image (`cargo test -p
# integration-tests` builds it), git, ssh, ssh-keygen, GNU time. Network: none beyond
# 127.0.0.1 and the container; cargo builds with --offline.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/pull-common.sh
. "$ROOT/bench/pull-common.sh"

POLLERS=${POLLERS:-200}
CONCURRENCY=${CONCURRENCY:-1}
ROUNDS=${ROUNDS:-2}
IDLE_SECONDS=${IDLE_SECONDS:-10}
FILES=${FILES:-20}
STEPS=$((FILES + 1))
LABEL=home-infra-bench.git-server-cpu # value: the pid of the script that owns it
CT=bench-gitcpu-$$-git

((EUID == 0)) || die "run as root: the role sets owner and group root on every path"
((POLLERS >= 1 && CONCURRENCY >= 1 && ROUNDS >= 1)) || die "POLLERS, CONCURRENCY and ROUNDS must be at least 1"
install_tools time:/usr/bin/time
command -v ssh >/dev/null || die "ssh (Debian package openssh-client) is needed"
docker_setup
remove_leftovers "$LABEL"
build_agent "${1:-}"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/git-server-cpu.XXXXXX")
cleanup() {
    docker rm -f -v "$CT" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

gen_small_repo "$WORK/src" "$WORK/root" "$FILES"
commit_repo "$WORK/src" "$WORK/remote.git"
say "starting the git server $CT from $IMAGE"
start_git_server "$CT" "$LABEL"
push_to_server "$CT" "$WORK/remote.git"
URL="ssh://git@127.0.0.1:$GIT_PORT/srv/git/infra.git"
SSH_KEYS=("deploy_key = \"$DEPLOY_KEY\"" "known_hosts = \"$KNOWN_HOSTS\"")

# --- the simulated hosts ------------------------------------------------------------------

write_agent_toml "$WORK/agent-0.toml" "$URL" "$WORK/state-0" "${SSH_KEYS[@]}"
code=0
"$BIN" --once --config "$WORK/agent-0.toml" >"$WORK/once.out" 2>&1 || code=$?
((code == 2)) || { tail -20 "$WORK/once.out" >&2; die "the first --once exited $code, expected 2"; }
code=0
"$BIN" --once --config "$WORK/agent-0.toml" >"$WORK/once.out" 2>&1 || code=$?
[[ $code == 0 && $(tail -1 "$WORK/once.out") == "0 changed, $STEPS in sync, 0 failed, 0 skipped"* ]] ||
    { tail -20 "$WORK/once.out" >&2; die "the second --once exited $code, not in sync"; }
for ((i = 1; i < POLLERS; i++)); do
    cp -a "$WORK/state-0" "$WORK/state-$i"
    write_agent_toml "$WORK/agent-$i.toml" "$URL" "$WORK/state-$i" "${SSH_KEYS[@]}"
done
say "$POLLERS simulated hosts, each in sync with its own state_dir and mirror"

# One poll each; xargs runs them CONCURRENCY at a time. A failed poll fails the batch.
cat >"$WORK/poll-agent" <<EOF
#!/bin/sh
exec "$BIN" --once --config "$WORK/agent-\$1.toml" >/dev/null 2>>"$WORK/poll.err"
EOF
cat >"$WORK/poll-ls-remote" <<EOF
#!/bin/sh
GIT_SSH_COMMAND="ssh -i $DEPLOY_KEY -o UserKnownHostsFile=$KNOWN_HOSTS -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes -o BatchMode=yes"
export GIT_SSH_COMMAND
exec git ls-remote "$URL" refs/heads/main >/dev/null 2>>"$WORK/poll.err"
EOF
chmod +x "$WORK/poll-agent" "$WORK/poll-ls-remote"
"$WORK/poll-ls-remote" 0 || { cat "$WORK/poll.err" >&2; die "git ls-remote over ssh failed"; }

# --- accounting -------------------------------------------------------------------------------

# proc_ticks PID: utime + stime of a process (clock ticks; 0 when it is gone).
proc_ticks() {
    local stat
    local -a f
    read -r -d '' stat <"/proc/$1/stat" 2>/dev/null || true
    [[ -n $stat ]] || { echo 0; return; }
    read -r -a f <<<"${stat##*) }"
    echo $((f[11] + f[12]))
}
CLK_TCK=$(getconf CLK_TCK)
# The container's long-lived processes (host pids) and the proxy behind the port.
mapfile -t LONG < <(docker top "$CT" -o pid,comm | awk 'NR > 1 { print $1 " " $2 }')
PROXY=$(ps -eo pid=,args= | awk -v p="$GIT_PORT" '$2 ~ /docker-proxy$/ && $0 ~ ("-host-port " p " ") { print $1; exit }')

# snapshot: "cgroup_usec time_s proxy_ticks name=ticks..." of now.
snapshot() {
    local line out
    out="$(cgroup_cpu_usec "$GIT_CT_ID") $EPOCHREALTIME $([[ -n $PROXY ]] && proc_ticks "$PROXY" || echo 0)"
    for line in "${LONG[@]}"; do
        out+=" ${line#* }=$(proc_ticks "${line%% *}")"
    done
    echo "$out"
}

# batch NAME SCRIPT: runs POLLERS polls; prints "elapsed_s cgroup_usec client_user_s
# client_sys_s proxy_ticks long=ticks..." (deltas).
batch() {
    local name=$1 script=$2 before after times code=0
    : >"$WORK/poll.err"
    before=$(snapshot)
    # shellcheck disable=SC2016 # expanded by sh
    /usr/bin/time -f '%U %S' -o "$WORK/times" \
        sh -c 'seq 0 $(($1 - 1)) | xargs -P "$2" -n 1 "$3"' sh "$POLLERS" "$CONCURRENCY" "$script" || code=$?
    after=$(snapshot)
    ((code == 0)) || { head -20 "$WORK/poll.err" >&2; die "$name: a poll failed (xargs exit $code)"; }
    times=$(tail -1 "$WORK/times")
    awk -v b="$before" -v a="$after" -v t="$times" 'BEGIN {
        nb = split(b, B, " "); split(a, A, " "); split(t, T, " ")
        printf "%.3f %d %s %s %d", A[2] - B[2], A[1] - B[1], T[1], T[2], A[3] - B[3]
        for (i = 4; i <= nb; i++) { split(B[i], x, "="); split(A[i], y, "="); printf " %s=%d", x[1], y[2] - x[2] }
        printf "\n" }'
}

# idle: "elapsed_s cgroup_usec" over IDLE_SECONDS.
idle() {
    local before after
    before=$(snapshot)
    sleep "$IDLE_SECONDS"
    after=$(snapshot)
    awk -v b="$before" -v a="$after" 'BEGIN { split(b, B, " "); split(a, A, " "); printf "%.3f %d\n", A[2] - B[2], A[1] - B[1] }'
}

# --- measure ----------------------------------------------------------------------------

declare -a RESULTS
touch "$WORK/marker"
for ((r = 1; r <= ROUNDS; r++)); do
    say "round $r/$ROUNDS: idle ${IDLE_SECONDS} s"
    read -r idle_s idle_us <<<"$(idle)"
    rate=$(awk -v s="$idle_s" -v u="$idle_us" 'BEGIN { printf "%.1f", u / s }')
    for kind in agent ls-remote; do
        say "round $r/$ROUNDS: $POLLERS polls with $kind, $CONCURRENCY at a time"
        res=$(batch "$kind" "$WORK/poll-$kind")
        RESULTS+=("$r $kind $rate $res")
    done
done
# No poll fetched: nothing was written into any simulated host's mirror.
written=$(find "$WORK"/state-*/repo.git -newer "$WORK/marker" | head -3)
[[ -z $written ]] || die "a poll wrote into a mirror (a fetch?): $written"

# --- summary ----------------------------------------------------------------------------

cat <<EOF

git server CPU per no-change poll ($(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)); $POLLERS polls per batch, $CONCURRENCY at a time, $ROUNDS rounds
machine: $(nproc) CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo); load $(cut -d' ' -f1-3 /proc/loadavg)
git server: $IMAGE (systemd, sshd, journald), $(docker exec "$CT" sh -c 'ssh -V 2>&1'), $(docker exec "$CT" git --version)
client: infra-agent (libgit2 + libssh2) and $(git --version) with $(ssh -V 2>&1 | cut -d, -f1)
server CPU: the container's cgroup ($(cgroup_cpu_usec "$GIT_CT_ID" >/dev/null && echo ok)), less its idle rate; ms per poll

round client      wall/poll  server CPU/poll  (raw)   idle rate   long-lived processes per poll            client CPU/poll  docker-proxy/poll
EOF
for line in "${RESULTS[@]}"; do
    awk -v n="$POLLERS" -v tck="$CLK_TCK" -v l="$line" 'BEGIN {
        k = split(l, F, " ")
        r = F[1]; kind = F[2]; rate = F[3]; el = F[4]; us = F[5]; cu = F[6]; cs = F[7]; px = F[8]
        net = us - rate * el
        long = ""; lsum = 0
        for (i = 9; i <= k; i++) { split(F[i], x, "="); ms = x[2] * 1000 / tck / n; lsum += ms; long = long sprintf("%s %.2f ", x[1], ms) }
        printf "%5s %-10s %7.1f ms  %9.2f ms  (%6.2f)  %5.0f us/s  %-40s %6.2f ms  %8.2f ms\n",
            r, kind, el * 1000 / n, net / 1000 / n, us / 1000 / n, rate, long, (cu + cs) * 1000 / n, px * 1000 / tck / n
    }'
done
printf '%s\n' "${RESULTS[@]}" | awk -v n="$POLLERS" '{ net = $5 - $3 * $4; s[$2] += net / 1000 / n; c[$2]++ }
    END { printf "\nmean over rounds, server CPU per poll: agent %.2f ms, git ls-remote %.2f ms (ratio %.2f)\n",
        s["agent"] / c["agent"], s["ls-remote"] / c["ls-remote"], (s["agent"] / c["agent"]) / (s["ls-remote"] / c["ls-remote"]) }'
