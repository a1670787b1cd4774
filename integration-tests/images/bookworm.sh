#!/usr/bin/env bash
# The Debian bookworm base image of the container tests (see /work/shared/TEST-HOSTS.md
# and integration-tests/src/image.rs). Usage: bookworm.sh TAG
#
# The harness tags the image with a hash of this file's text: any edit here builds a
# new image the next time the tests run. Nothing is pulled: the root filesystem comes
# from the machine's own Debian mirror, read at run time from its sources file.
set -euo pipefail
tag=$1
sources=/etc/apt/sources.list.d/debian.sources
mirror=$(awk '$1 == "URIs:" { print $2; exit }' "$sources")
[ -n "$mirror" ] || { echo "no URIs: line in $sources" >&2; exit 1; }

rootfs=$(mktemp -d /var/tmp/home-infra-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT

# nala, procps, curl and apt-utils are here so later tests need not download them.
debootstrap --variant=minbase \
  --include=systemd,systemd-sysv,openssh-server,dbus,sudo,ca-certificates,git,iproute2,nala,procps,curl,apt-utils \
  bookworm "$rootfs" "$mirror"

# apt in the containers uses the machine's sources (so the same mirror).
rm -f "$rootfs/etc/apt/sources.list"
cp "$sources" "$rootfs/etc/apt/sources.list.d/debian.sources"
# HTTPS inside containers trusts what the machine trusts.
cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
# Every container gets its own machine id at boot.
: >"$rootfs/etc/machine-id"
rm -f "$rootfs/var/lib/dbus/machine-id"
# No downloaded packages or lists in the image: tests run `apt-get update` themselves.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*_Packages
# Units that have nothing to do in a container.
for unit in getty@tty1.service systemd-udevd.service systemd-udev-trigger.service \
  systemd-modules-load.service sys-kernel-config.mount sys-kernel-debug.mount \
  sys-kernel-tracing.mount systemd-remount-fs.service; do
  ln -sf /dev/null "$rootfs/etc/systemd/system/$unit"
done

tar --numeric-owner -C "$rootfs" -c . |
  docker import -c 'CMD ["/sbin/init"]' -c 'ENV container=docker' - "$tag"
