# shellcheck shell=bash
# Shared by the benchmarks of pulling from git (docs/BENCHMARKS.md): poll-nochange.sh,
# daemon-idle.sh and git-server-cpu.sh source this file; it is not run on its own.
#
# It provides:
#   say, die                      messages on stderr (die exits 1)
#   build_agent [BIN]             BIN=... the release binary (built when no argument),
#                                 FETCH=... infra-agent-fetch beside it (built too)
#   gen_small_repo DIR ROOT N     a state repository: host bench-01, one role of one
#                                 directory (ROOT) and N `file` steps under it
#   commit_repo DIR BARE          commits DIR (git init) and makes the bare clone BARE
#   write_agent_toml FILE REPO STATE [KEY = VALUE lines...]
#   median, min, max              of numbers on stdin, one a line
#   stat_ms FILE                  "median min max" of FILE (numbers, one a line)
#   install_tools PKG...          apt-get install of missing Debian packages
#   docker_setup                  checks Docker, sets IMAGE (the integration tests' image)
#   start_git_server NAME LABEL   boots a git server container (as the test harness's
#                                 integration-tests/src/git_server.rs sets one up) with
#                                 sshd published on 127.0.0.1; sets GIT_PORT, GIT_CT_ID,
#                                 DEPLOY_KEY, KNOWN_HOSTS (files under WORK)
#   push_to_server NAME BARE      copies the bare repository BARE into the server
#   cgroup_cpu_usec ID            CPU time used so far by a container's processes (µs)
#
# The caller sets ROOT (the checkout), WORK (a temporary directory it removes on exit)
# and `set -euo pipefail` before sourcing.

export LC_ALL=C
HOST=${HOST:-bench-01}

say() { printf '%s\n' "$*" >&2; }
die() {
    say "${0##*/}: $*"
    exit 1
}

# build_agent [BIN]: sets BIN, and FETCH, the fetch helper infra-agent-fetch beside it
# (the agent runs it from its own directory to fetch from a URL). With no argument,
# builds both release binaries (offline), each in a cargo command of its own: built in
# one, the agent would link OpenSSL, as the shipped agent does not.
build_agent() {
    if [[ -n ${1:-} ]]; then
        BIN=$(realpath "$1")
    else
        say "building: cargo build --release -p infra-agent"
        (cd "$ROOT" && cargo build --offline --release -p infra-agent >&2)
        say "building: cargo build --release -p infra-agent-fetch"
        (cd "$ROOT" && cargo build --offline --release -p infra-agent-fetch >&2)
        BIN=$ROOT/target/release/infra-agent
    fi
    [[ -x $BIN ]] || die "$BIN is not an executable"
    FETCH=$(dirname "$BIN")/infra-agent-fetch
    [[ -x $FETCH ]] || die "$FETCH is missing; the agent fetches from a URL through it: build it beside BIN in a cargo command of its own (cargo build --release -p infra-agent-fetch)"
}

# install_tools PKG...: installs the Debian packages whose command is missing
# (name:command pairs, or a name that is its command).
install_tools() {
    local want=() spec pkg cmd
    for spec in "$@"; do
        pkg=${spec%%:*}
        cmd=${spec#*:}
        command -v "$cmd" >/dev/null || want+=("$pkg")
    done
    ((${#want[@]})) || return 0
    say "installing ${want[*]} from the Debian mirror"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${want[@]}" >&2; then
        apt-get update -q >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${want[@]}" >&2
    fi
}

# gen_small_repo DIR ROOT N: a small state repository. One host, bench-01 (group bench);
# the `all` group runs the role `app`: the directory ROOT, then N `file` steps with
# inline content of 3 to 6 lines that use {{data...}} and {{host...}}, mode 0644 or
# 0600, owner and group root. The output depends only on the arguments.
gen_small_repo() {
    local out=$1 managed=$2 n=$3 i mode
    mkdir -p "$out"/{inventory,group_data,roles}
    cat >"$out/infra.toml" <<'EOF'
# Synthetic repository for benchmarking pulls (bench/pull-common.sh).
format = 1
EOF
    cat >"$out/inventory/production.toml" <<EOF
[groups.all]
roles = ["app"]

[groups.bench]
hosts = ["$HOST"]
EOF
    cat >"$out/group_data/all.toml" <<EOF
root = "$managed"
domain = "example.internal"

[app]
name = "orchard"
version = "4.12.3"
port = 8100
workers = 4
EOF
    {
        printf '[[step]]\nid = "root"\ntype = "directory"\npath = "{{data.root}}"\nowner = "root"\ngroup = "root"\nmode = "0755"\n'
        for ((i = 1; i <= n; i++)); do
            mode=0644
            ((i % 4 == 0)) && mode=0600
            cat <<EOF

[[step]]
id = "conf-$i"
type = "file"
path = "{{data.root}}/conf-$i.conf"
content = """
# conf-$i of {{data.app.name}} {{data.app.version}} on {{host.name}} ({{host.env}})
listen = {{data.app.port}}
workers = {{data.app.workers}}
domain = "{{data.domain}}"
"""
owner = "root"
group = "root"
mode = "$mode"
requires = ["root"]
EOF
        done
    } >"$out/roles/app.toml"
}

# commit_repo DIR BARE: makes DIR a git repository with one commit on main, and BARE a
# bare clone of it (what a git server serves).
commit_repo() {
    local dir=$1 bare=$2
    git -C "$dir" init -q -b main
    git -C "$dir" add -A
    git -C "$dir" -c user.name=bench -c user.email=bench@example.invalid \
        commit -q -m "benchmark repository"
    git clone -q --bare "$dir" "$bare"
}

# write_agent_toml FILE REPOSITORY STATE_DIR [LINE...]: an agent.toml for HOST whose
# records go to STATE_DIR, the textfile collector off; extra lines are appended.
write_agent_toml() {
    local file=$1 repository=$2 state=$3
    shift 3
    {
        printf '# agent.toml of a benchmark (bench/pull-common.sh)\n'
        printf 'repository = "%s"\nhostname = "%s"\nstate_dir = "%s"\ntextfile_dir = ""\n' \
            "$repository" "$HOST" "$state"
        local line
        for line in "$@"; do printf '%s\n' "$line"; done
    } >"$file"
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
stat_ms() { printf '%s %s %s\n' "$(median <"$1")" "$(sort -g "$1" | head -1)" "$(sort -g "$1" | tail -1)"; }

# --- Docker: the integration tests' image, a git server container -----------------------

# docker_setup: checks Docker and sets IMAGE to the tag the test harness uses
# (home-infra-test/bookworm:<64-bit FNV-1a of integration-tests/images/bookworm.sh>, see
# integration-tests/src/image.rs). The image must exist: run the integration tests once.
docker_setup() {
    command -v docker >/dev/null || die "docker is missing: see /work/shared/TEST-HOSTS.md"
    docker info >/dev/null 2>&1 || die "Docker is not running: start dockerd (see /work/shared/TEST-HOSTS.md)"
    if [[ -z ${DOCKER_API_VERSION:-} ]]; then
        DOCKER_API_VERSION=$(docker version --format '{{.Server.APIVersion}}' 2>/dev/null || true)
    fi
    export DOCKER_API_VERSION=${DOCKER_API_VERSION:-1.41}
    local recipe=$ROOT/integration-tests/images/bookworm.sh h=$((0xcbf29ce484222325)) b
    for b in $(od -An -v -tu1 "$recipe"); do
        h=$(((h ^ b) * 0x100000001b3))
    done
    IMAGE=home-infra-test/bookworm:$(printf '%016x' "$h")
    docker image inspect "$IMAGE" >/dev/null 2>&1 ||
        die "the test image $IMAGE is missing: run the integration tests once (\`cargo test -p integration-tests\`), which build it"
}

# remove_leftovers LABEL: removes containers of earlier runs (labelled with their
# owner's pid) whose owner is gone.
remove_leftovers() {
    local label=$1 name owner
    docker ps -a --filter "label=$label" --format "{{.Names}} {{.Label \"$label\"}}" |
        while read -r name owner; do
            if ! kill -0 "$owner" 2>/dev/null; then
                say "removing the leftover container $name"
                docker rm -f -v "$name" >/dev/null || true
            fi
        done
}

# The server's setup once systemd has booted, as integration-tests/src/git_server.rs
# does it: a `git` user whose shell is git-shell, the deploy key (`restrict`) its only
# authorized key, an empty bare repository, and a fresh ed25519 host key, the only one
# sshd offers. $1: the deploy key's public line.
# shellcheck disable=SC2016 # expanded by the container's shell
GIT_SERVER_SETUP='set -eu
useradd --system --home-dir /srv/git --create-home --password "*" --shell /usr/bin/git-shell git
install -d -o git -g git -m 0700 /srv/git/.ssh
printf "restrict %s\n" "$1" > /srv/git/.ssh/authorized_keys
chown git:git /srv/git/.ssh/authorized_keys
chmod 0600 /srv/git/.ssh/authorized_keys
printf "HostKey /etc/ssh/ssh_host_ed25519_key\n" > /etc/ssh/sshd_config.d/git-server.conf
rm -f /etc/ssh/ssh_host_*
ssh-keygen -q -t ed25519 -N "" -C git -f /etc/ssh/ssh_host_ed25519_key
systemctl restart ssh.service'

# start_git_server NAME LABEL: boots NAME from IMAGE with systemd as PID 1 (the flags of
# integration-tests/src/test_host.rs), port 22 published on 127.0.0.1 only, and sets it
# up as a git server. Sets GIT_PORT, GIT_CT_ID, DEPLOY_KEY and KNOWN_HOSTS.
start_git_server() {
    local name=$1 label=$2 state i start
    docker run -d --name "$name" --hostname git --label "$label=$$" \
        --cap-add SYS_ADMIN --cap-add NET_ADMIN --security-opt seccomp=unconfined \
        --tmpfs /run --tmpfs /run/lock --tmpfs /tmp \
        -v /sys/fs/cgroup:/sys/fs/cgroup:ro \
        -p 127.0.0.1:0:22 "$IMAGE" /sbin/init >/dev/null
    start=$SECONDS
    state=
    for ((i = 0; i < 1800 && SECONDS - start < 90; i++)); do
        state=$(docker exec "$name" systemctl is-system-running 2>/dev/null || true)
        [[ $state == running || $state == degraded ]] && break
        sleep 0.05
    done
    [[ $state == running || $state == degraded ]] ||
        { docker logs --tail 40 "$name" >&2; die "$name did not boot (last state: ${state:-none})"; }
    DEPLOY_KEY=$WORK/deploy_key
    KNOWN_HOSTS=$WORK/known_hosts
    ssh-keygen -q -t ed25519 -N '' -C 'benchmark deploy key' -f "$DEPLOY_KEY"
    docker exec "$name" sh -c "$GIT_SERVER_SETUP" setup "$(cat "$DEPLOY_KEY.pub")" >&2
    start=$SECONDS
    until docker exec "$name" ss -Hltn 'sport = :22' | grep -q .; do
        ((SECONDS - start < 20)) || die "sshd in $name does not listen on port 22"
        sleep 0.05
    done
    GIT_PORT=$(docker port "$name" 22/tcp | awk -F: 'NR == 1 { print $NF }')
    [[ $GIT_PORT =~ ^[0-9]+$ ]] || die "no published port for $name"
    # shellcheck disable=SC2034 # for the caller
    GIT_CT_ID=$(docker inspect --format '{{.Id}}' "$name")
    # known_hosts names a port other than 22 as [host]:port.
    docker exec "$name" cat /etc/ssh/ssh_host_ed25519_key.pub |
        awk -v h="[127.0.0.1]:$GIT_PORT" '{ print h, $1, $2 }' >"$KNOWN_HOSTS"
}

# push_to_server NAME BARE: the bare repository BARE becomes /srv/git/infra.git.
push_to_server() {
    local name=$1 bare=$2
    docker cp "$bare" "$name:/srv/git/infra.git" >/dev/null
    docker exec "$name" chown -R git:git /srv/git/infra.git
}

# cgroup_cpu_usec ID: CPU time (µs) used so far by every process of container ID, from
# cgroup v1 cpuacct.usage or cgroup v2 cpu.stat (Docker's cgroupfs or systemd driver),
# as integration-tests/src/git_server.rs reads it.
cgroup_cpu_usec() {
    local id=$1 group controller
    for group in "docker/$id" "system.slice/docker-$id.scope"; do
        for controller in cpuacct cpu,cpuacct; do
            if [[ -r /sys/fs/cgroup/$controller/$group/cpuacct.usage ]]; then
                echo $(($(cat "/sys/fs/cgroup/$controller/$group/cpuacct.usage") / 1000))
                return
            fi
        done
        if [[ -r /sys/fs/cgroup/$group/cpu.stat ]]; then
            awk '$1 == "usage_usec" { print $2 }' "/sys/fs/cgroup/$group/cpu.stat"
            return
        fi
    done
    die "no cgroup CPU accounting file for container $id under /sys/fs/cgroup"
}
