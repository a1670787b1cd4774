#!/usr/bin/env bash
# The base image of infra-stage's containers: Debian bookworm with systemd as PID 1
# and sshd, built from Debian's packages. Usage: bookworm.sh TAG
#
# infra-stage runs this (built into it) when the image TAG is missing; TAG names a
# hash of this file's text, so an edit here builds a new image the next time. Nothing
# is pulled from a registry: the root filesystem comes from the machine's own Debian
# mirror. Needs root, debootstrap and about 400 MB under /var/tmp.
#
# The mirror: $INFRA_STAGE_MIRROR, else the `URIs:` line of
# /etc/apt/sources.list.d/debian.sources, else the first `deb` line of
# /etc/apt/sources.list.
set -euo pipefail
tag=$1
sources=/etc/apt/sources.list.d/debian.sources
mirror=${INFRA_STAGE_MIRROR:-}
if [ -z "$mirror" ] && [ -f "$sources" ]; then
  mirror=$(awk '$1 == "URIs:" { print $2; exit }' "$sources")
fi
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
  mirror=$(awk '$1 == "deb" && $2 ~ /^https?:/ { print $2; exit }' /etc/apt/sources.list)
fi
if [ -z "$mirror" ]; then
  echo "no Debian mirror found in $sources or /etc/apt/sources.list; set INFRA_STAGE_MIRROR=http://..." >&2
  exit 1
fi
command -v debootstrap >/dev/null || {
  echo "debootstrap is not installed (apt-get install debootstrap)" >&2
  exit 1
}

rootfs=$(mktemp -d /var/tmp/infra-stage-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT

# nala, procps, curl and apt-utils save every staging host from downloading them.
debootstrap --variant=minbase \
  --include=systemd,systemd-sysv,openssh-server,dbus,sudo,ca-certificates,git,iproute2,nala,procps,curl,apt-utils \
  bookworm "$rootfs" "$mirror"

# apt in the containers uses the same mirror as this machine.
rm -f "$rootfs/etc/apt/sources.list"
if [ -f "$sources" ] && [ -z "${INFRA_STAGE_MIRROR:-}" ]; then
  cp "$sources" "$rootfs/etc/apt/sources.list.d/debian.sources"
else
  printf 'Types: deb\nURIs: %s\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$mirror" >"$rootfs/etc/apt/sources.list.d/debian.sources"
fi
# HTTPS inside containers trusts what this machine trusts.
cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
# Every container gets its own machine id at boot, and infra-stage gives each its
# own SSH host keys.
: >"$rootfs/etc/machine-id"
rm -f "$rootfs/var/lib/dbus/machine-id" "$rootfs"/etc/ssh/ssh_host_*
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*_Packages
# Units that have nothing to do in a container.
for unit in getty@tty1.service systemd-udevd.service systemd-udev-trigger.service \
  systemd-modules-load.service sys-kernel-config.mount sys-kernel-debug.mount \
  sys-kernel-tracing.mount systemd-remount-fs.service; do
  ln -sf /dev/null "$rootfs/etc/systemd/system/$unit"
done

tar --numeric-owner -C "$rootfs" -c . |
  docker import -c 'CMD ["/sbin/init"]' -c 'ENV container=docker' - "$tag"
