#!/bin/sh
# Installs the Debian/Ubuntu packages banger needs on the host.
set -eu
pkgs="qemu-system-x86 qemu-utils e2fsprogs debootstrap nftables iproute2 kmod debian-archive-keyring ca-certificates openssh-client"
missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -z "$missing" ]; then
	exit 0
fi
if [ "$(id -u)" != 0 ]; then
	echo "install-deps: missing packages:$missing; run as root (sudo make install)" >&2
	exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
