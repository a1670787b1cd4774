#!/bin/sh
# Builds the Debian package infra-agent_<version>_amd64.deb from a built agent
# and its fetch helper.
#
# usage: build-deb.sh [BINARY] [OUTDIR]
#
#   BINARY  the built agent; default target/release/infra-agent of this
#           checkout, built with `cargo build --release -p infra-agent` when
#           it is missing
#   OUTDIR  where the package goes; default the directory of BINARY (so
#           target/release/, beside infra-bootstrap, which looks there)
#
# The fetch helper infra-agent-fetch (the agent runs it from its own directory
# to fetch from a URL) is taken from beside BINARY, or from FETCH_BINARY=FILE
# when that is set. Without BINARY and FETCH_BINARY it is
# target/release/infra-agent-fetch, built when missing with
# `cargo build --release -p infra-agent-fetch`, a cargo command of its own:
# built in one command with the agent, cargo gives the agent the helper's
# OpenSSL, and this script refuses an agent that links OpenSSL.
#
# Needs dpkg-deb, and objdump and strip (binutils); no debhelper, no root.
# Prints the path of the package on its last line.
#
# The package holds:
#   /usr/bin/infra-agent                                 0755 (stripped)
#   /usr/bin/infra-agent-fetch                           0755 (stripped)
#   /lib/systemd/system/infra-agent.service              0644
#   /usr/share/doc/infra-agent/agent.toml.example        0644
#   /usr/share/doc/infra-agent/copyright, changelog.gz   0644
# and the maintainer scripts of packaging/debian/ (README.md says what they do).
# The version is what `BINARY --version` prints; Depends is read from the
# libraries the two programs link (objdump), plus systemd.
set -eu

me=build-deb.sh

fail() {
	printf '%s: error: %s\n' "$me" "$1" >&2
	if [ $# -gt 1 ]; then
		printf 'hint: %s\n' "$2" >&2
	fi
	exit 1
}

if [ $# -gt 2 ]; then
	printf 'usage: %s [BINARY] [OUTDIR]\n' "$me" >&2
	exit 64
fi

here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
top=$(dirname -- "$here")

for tool in dpkg-deb objdump strip; do
	command -v "$tool" >/dev/null 2>&1 || fail "$tool is not installed" \
		"install it: apt-get install dpkg-dev binutils"
done

# Builds package $1 of the workspace in release, in a cargo command of its own.
cargo_build() {
	echo "$me: building: cargo build --release -p $1" >&2
	(cd "$top" && cargo build --release --locked -p "$1") ||
		fail "cargo build --release -p $1 failed" "see the compiler's messages above"
}

if [ $# -ge 1 ] && [ -n "$1" ]; then
	binary=$1
	[ -f "$binary" ] || fail "$binary is not a file" \
		"build the agent first: cargo build --release -p infra-agent (target/release/infra-agent)"
	fetch=${FETCH_BINARY:-$(dirname -- "$binary")/infra-agent-fetch}
else
	binary=$top/target/release/infra-agent
	[ -f "$binary" ] || cargo_build infra-agent
	fetch=${FETCH_BINARY:-$top/target/release/infra-agent-fetch}
	[ -n "${FETCH_BINARY:-}" ] || [ -f "$fetch" ] || cargo_build infra-agent-fetch
fi
[ -f "$fetch" ] || fail "$fetch is not a file; the package ships the fetch helper beside the agent" \
	"build it in a cargo command of its own: cargo build --release -p infra-agent-fetch (or set FETCH_BINARY=FILE)"
outdir=${2:-$(dirname -- "$binary")}

# Only x86-64 ELFs go into an amd64 package.
for program in "$binary" "$fetch"; do
	format=$(objdump -f "$program" 2>/dev/null | sed -n 's/.*file format //p')
	[ "$format" = elf64-x86-64 ] || fail "$program is not an x86-64 program (objdump says: ${format:-not an ELF file})" \
		"build it for x86_64-unknown-linux-gnu; only amd64 packages are built"
done

# The shared libraries program $1 links (its NEEDED entries), one a line.
needed() {
	objdump -p "$1" | awk '$1 == "NEEDED" { print $2 }'
}

# The split is the point of the helper: the agent, which runs every few
# minutes, loads no OpenSSL; only infra-agent-fetch does, when it fetches.
for lib in $(needed "$binary"); do
	case "$lib" in
	libssl.so.* | libcrypto.so.*)
		fail "$binary links $lib: it was built in one cargo command with infra-agent-fetch, which gave it OpenSSL" \
			"build the two with separate commands: cargo build --release -p infra-agent, then cargo build --release -p infra-agent-fetch"
		;;
	esac
done

# `infra-agent 0.1.0` -> 0.1.0
version=$("$binary" --version 2>/dev/null | sed -n 's/^infra-agent \([0-9][A-Za-z0-9.+~-]*\)$/\1/p') || true
[ -n "$version" ] || fail "$binary --version did not print \`infra-agent VERSION\`" \
	"check that $binary is the infra-agent binary and runs on this machine"

# Depends, from the shared libraries the two programs link. Each library is mapped
# to the Debian package that ships it; a library not in this table stops the build,
# because a package that forgets a dependency installs fine and fails at run time.
glibc=$(for program in "$binary" "$fetch"; do objdump -T "$program"; done |
	grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -u -V | tail -n 1)
[ -n "$glibc" ] || fail "cannot read the glibc symbol versions of $binary and $fetch" \
	"check that both are dynamically linked Linux programs"
needs_gcc=no needs_ssl=no needs_zlib=no
for program in "$binary" "$fetch"; do
	needs_libc=no
	for lib in $(needed "$program"); do
		case "$lib" in
		libc.so.6 | ld-linux-x86-64.so.2 | libm.so.6 | libpthread.so.0 | libdl.so.2 | librt.so.1 | libutil.so.1)
			needs_libc=yes
			;;
		libgcc_s.so.1) needs_gcc=yes ;;
		# OpenSSL 3: libssl3 up to Debian 12 and Ubuntu 22.04, libssl3t64 from
		# Debian 13 and Ubuntu 24.04 on (the 64-bit time_t transition renamed it).
		libssl.so.3 | libcrypto.so.3) needs_ssl=yes ;;
		libz.so.1) needs_zlib=yes ;;
		*)
			fail "$program links $lib, and $me does not know which package provides it" \
				"add it to the table in $me (\`dpkg -S $lib\` on a Debian machine names the package)"
			;;
		esac
	done
	[ "$needs_libc" = yes ] || fail "$program does not link libc.so.6" "build a dynamically linked glibc binary"
done
depends="libc6 (>= $glibc)"
[ "$needs_gcc" = no ] || depends="$depends, libgcc-s1"
[ "$needs_ssl" = no ] || depends="$depends, libssl3 (>= 3.0.0) | libssl3t64 (>= 3.0.0)"
[ "$needs_zlib" = no ] || depends="$depends, zlib1g"
# The unit, `systemd-run` for package transactions, `systemctl` for services.
depends="$depends, systemd"

maintainer=${DEB_MAINTAINER:-home-infra maintainers <home-infra@localhost>}
# The changelog's date: SOURCE_DATE_EPOCH for reproducible builds, else now.
date=$(date -u -R ${SOURCE_DATE_EPOCH:+-d "@$SOURCE_DATE_EPOCH"})

mkdir -p "$outdir" || fail "cannot create $outdir" "check that its parent is writable"
umask 022
work=$(mktemp -d "${TMPDIR:-/tmp}/infra-agent-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
doc=$root/usr/share/doc/infra-agent
mkdir -p "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" "$doc"

strip --strip-unneeded --remove-section=.comment --remove-section=.note \
	-o "$root/usr/bin/infra-agent" "$binary" || fail "strip failed on $binary"
strip --strip-unneeded --remove-section=.comment --remove-section=.note \
	-o "$root/usr/bin/infra-agent-fetch" "$fetch" || fail "strip failed on $fetch"
chmod 0755 "$root/usr/bin/infra-agent" "$root/usr/bin/infra-agent-fetch"
install -m 0644 "$here/infra-agent.service" "$root/lib/systemd/system/infra-agent.service"
install -m 0644 "$here/agent.toml.example" "$doc/agent.toml.example"
install -m 0644 "$here/debian/copyright" "$doc/copyright"
printf 'infra-agent (%s) unstable; urgency=medium\n\n  * Built by packaging/build-deb.sh from the home-infra workspace.\n\n -- %s  %s\n' \
	"$version" "$maintainer" "$date" | gzip -9 -n >"$doc/changelog.gz"
chmod 0644 "$doc/changelog.gz"
for script in postinst prerm postrm; do
	install -m 0755 "$here/debian/$script" "$root/DEBIAN/$script"
done

(cd "$root" && find usr lib -type f -print0 | sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/md5sums"
size=$(du -k -s --exclude=DEBIAN "$root" | cut -f1)

cat >"$root/DEBIAN/control" <<EOF
Package: infra-agent
Version: $version
Architecture: amd64
Maintainer: $maintainer
Installed-Size: $size
Depends: $depends
Recommends: openssh-client
Suggests: nala
Section: admin
Priority: optional
Description: pull-based configuration agent for Debian hosts
 infra-agent pulls a state repository from git and converges this host to
 what it describes: packages, files and templates, services, users and keys,
 commands and Docker compose projects. It runs as a systemd service, never
 applies a commit that does not render, reverts hand edits, and reports
 through "infra-agent status", the journal and a Prometheus textfile.
 .
 infra-agent-fetch, beside it, fetches the repository from its URL in a
 process of its own, so the agent itself loads no OpenSSL.
 .
 The service starts only once /etc/infra-agent/agent.toml exists.
EOF
chmod 0644 "$root/DEBIAN/control"

deb=$outdir/infra-agent_${version}_amd64.deb
tmp=$outdir/.infra-agent_${version}_amd64.deb.tmp.$$
dpkg-deb --root-owner-group -Zxz --build "$root" "$tmp" >/dev/null ||
	{
		rm -f "$tmp"
		fail "dpkg-deb could not build the package" "see its message above"
	}
mv -f "$tmp" "$deb" || fail "cannot write $deb" "check that $outdir is writable"
echo "$deb"
