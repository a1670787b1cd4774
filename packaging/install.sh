#!/bin/sh
# Installs a built infra-agent and its systemd unit without a Debian package
# (tests, and infra-bootstrap until the .deb exists).
#
# usage: install.sh BINARY [DESTDIR]
#
#   BINARY   the built agent, e.g. target/release/infra-agent
#   DESTDIR  a directory to install into instead of the live system (tests,
#            image builds); empty or absent means this machine
#
# The agent fetches its repository from a URL through a second program,
# infra-agent-fetch, which it runs from its own directory. install.sh takes it
# from beside BINARY, or from FETCH_BINARY=FILE when that is set. Build the two
# with separate cargo commands (cargo build --release -p infra-agent, then
# cargo build --release -p infra-agent-fetch): built together, the agent links
# OpenSSL again (packaging/README.md).
#
# Installs:
#   DESTDIR/usr/bin/infra-agent                        0755
#   DESTDIR/usr/bin/infra-agent-fetch                  0755
#   DESTDIR/lib/systemd/system/infra-agent.service     0644
#   DESTDIR/etc/infra-agent/                           0700 (agent.toml, deploy key)
#   DESTDIR/var/lib/infra-agent/                       0700 (the default state_dir)
#
# Files are replaced by rename, so a running agent keeps its binary until it
# restarts. On the live system under systemd it runs `systemctl daemon-reload`.
# It never enables or starts the service: infra-bootstrap does that after the
# host's first converge. Existing configuration is left as it is.
set -eu

me=install.sh

fail() {
	printf '%s: error: %s\n' "$me" "$1" >&2
	if [ $# -gt 1 ]; then
		printf 'hint: %s\n' "$2" >&2
	fi
	exit 1
}

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
	printf 'usage: %s BINARY [DESTDIR]\n' "$me" >&2
	exit 64
fi
binary=$1
destdir=${2-}

here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
unit_src=$here/infra-agent.service
fetch=${FETCH_BINARY:-$(dirname -- "$binary")/infra-agent-fetch}

[ -f "$binary" ] || fail "$binary is not a file" \
	"build the agent first: cargo build --release -p infra-agent (target/release/infra-agent)"
[ -r "$binary" ] || fail "cannot read $binary" "run as a user that can read it"
[ -f "$fetch" ] || fail "$fetch is not a file; the agent fetches from a URL through it" \
	"build it beside the agent, in a cargo command of its own: cargo build --release -p infra-agent-fetch (or set FETCH_BINARY=FILE)"
[ -r "$fetch" ] || fail "cannot read $fetch" "run as a user that can read it"
[ -f "$unit_src" ] || fail "$unit_src is missing" \
	"run install.sh from a complete checkout (it installs the unit beside it)"

# Directories this script creates are 0755 unless said otherwise; files get the
# modes given to install(1).
umask 022

bin_dir=$destdir/usr/bin
unit_dir=$destdir/lib/systemd/system
# mkdir -p leaves the modes of existing directories (/usr/bin, /lib) alone.
mkdir -p "$bin_dir" "$unit_dir" "$destdir/var/lib"

# Copies $1 to $2 with mode $3 through a temporary file in the same directory, so
# $2 is either the old file or the complete new one, never half of it.
put() {
	tmp=$2.install-tmp.$$
	trap 'rm -f "$tmp"' EXIT
	install -m "$3" "$1" "$tmp" || fail "cannot write $tmp" "check that $(dirname -- "$2") is writable"
	mv -f "$tmp" "$2" || fail "cannot replace $2" "check that $(dirname -- "$2") is writable"
	trap - EXIT
}

# The helper first: an agent never starts beside a helper older than itself.
put "$fetch" "$bin_dir/infra-agent-fetch" 0755
put "$binary" "$bin_dir/infra-agent" 0755
put "$unit_src" "$unit_dir/infra-agent.service" 0644

# The configuration holds the deploy key and tokens; the state directory holds
# the originals of every file the agent changed. Root only, also when they
# already exist.
install -d -m 0700 "$destdir/etc/infra-agent" "$destdir/var/lib/infra-agent" ||
	fail "cannot create $destdir/etc/infra-agent or $destdir/var/lib/infra-agent"

if [ -z "$destdir" ] && [ -d /run/systemd/system ]; then
	systemctl daemon-reload || fail "systemctl daemon-reload failed" \
		"run it by hand; systemd has not read the new infra-agent.service yet"
fi

printf 'installed %s/usr/bin/infra-agent, %s/usr/bin/infra-agent-fetch and %s/lib/systemd/system/infra-agent.service\n' \
	"$destdir" "$destdir" "$destdir"
