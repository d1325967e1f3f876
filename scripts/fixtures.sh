#!/bin/bash
# Builds the end-to-end test fixtures once into $BANGER_FIXTURES:
#   linux-image-*-cloud-amd64.deb  Debian's cloud kernel package (apt-get download)
#   rootfs.ext4                    a debootstrapped bookworm minbase with systemd,
#                                  udev and openssh-server, as an ext4 image
# Existing fixtures are kept; delete the directory to rebuild.
set -euo pipefail
dir="${BANGER_FIXTURES:-/var/tmp/banger-fixtures}"
mkdir -p "$dir"
cd "$dir"

if ! ls linux-image-*-cloud-amd64_*.deb >/dev/null 2>&1; then
	pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
	echo "fixtures: downloading $pkg" >&2
	apt-get download "$pkg"
fi

if [ ! -f rootfs.ext4 ]; then
	mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
	tmp=$(mktemp -d "$dir/rootfs.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	echo "fixtures: debootstrap bookworm minbase into $tmp" >&2
	debootstrap --variant=minbase \
		--include=systemd-sysv,udev,openssh-server,iproute2,kmod,procps,iputils-ping,wget,git \
		bookworm "$tmp" "$mirror" >"$dir/debootstrap.log" 2>&1 || {
		tail -30 "$dir/debootstrap.log" >&2
		exit 1
	}
	echo fixture >"$tmp/etc/hostname"
	rm -f "$tmp"/etc/ssh/ssh_host_*
	chroot "$tmp" apt-get clean
	mkfs.ext4 -q -F -L rootfs -d "$tmp" rootfs.ext4.tmp 1G
	mv rootfs.ext4.tmp rootfs.ext4
fi
ls -la "$dir"
