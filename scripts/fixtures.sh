#!/bin/bash
# Builds the end-to-end test fixtures into $BANGER_FIXTURES:
#   linux-image-*-cloud-amd64.deb  Debian's cloud kernel package (apt-get download)
#   rootfs.ext4                    a debootstrapped bookworm minbase with systemd,
#                                  udev and openssh-server, as an ext4 image
#   rootfs.ext4.recipe             the recipe rootfs.ext4 was built from
# A fixture is kept while its recipe is unchanged: change the package list
# or any step below and the next run rebuilds rootfs.ext4 (bump
# recipe_version when changing a step that the recipe line does not show).
set -euo pipefail
dir="${BANGER_FIXTURES:-/var/tmp/banger-fixtures}"
mkdir -p "$dir"
cd "$dir"

if ! ls linux-image-*-cloud-amd64_*.deb >/dev/null 2>&1; then
	pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
	echo "fixtures: downloading $pkg" >&2
	apt-get download "$pkg"
fi

recipe_version=2
suite=bookworm
include=systemd-sysv,udev,openssh-server,iproute2,kmod,procps,iputils-ping,wget,git
size=1G
recipe="v$recipe_version suite=$suite variant=minbase include=$include size=$size hostname=fixture no-host-keys"

if [ -f rootfs.ext4 ] && [ "$(cat rootfs.ext4.recipe 2>/dev/null)" != "$recipe" ]; then
	echo "fixtures: rootfs.ext4 was built from another recipe ($(cat rootfs.ext4.recipe 2>/dev/null || echo none)); rebuilding" >&2
	rm -f rootfs.ext4 rootfs.ext4.recipe
fi
if [ ! -f rootfs.ext4 ]; then
	mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
	tmp=$(mktemp -d "$dir/rootfs.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	echo "fixtures: debootstrap $suite minbase into $tmp" >&2
	debootstrap --variant=minbase --include="$include" \
		"$suite" "$tmp" "$mirror" >"$dir/debootstrap.log" 2>&1 || {
		tail -30 "$dir/debootstrap.log" >&2
		exit 1
	}
	echo fixture >"$tmp/etc/hostname"
	rm -f "$tmp"/etc/ssh/ssh_host_*
	chroot "$tmp" apt-get clean
	mkfs.ext4 -q -F -L rootfs -d "$tmp" rootfs.ext4.tmp "$size"
	mv rootfs.ext4.tmp rootfs.ext4
	echo "$recipe" >rootfs.ext4.recipe
fi
ls -la "$dir"
