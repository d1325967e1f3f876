#!/bin/sh
# Installs the Debian/Ubuntu packages banger needs on the host.
set -eu
pkgs="qemu-system-x86 qemu-utils e2fsprogs debootstrap nftables iproute2 kmod debian-archive-keyring ca-certificates openssh-client"
missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "install-deps: missing packages:$missing; run as root (sudo make install)" >&2
		exit 1
	fi
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
fi
# The unprivileged user QEMU (-runas) and the Firecracker jailer run VMs as.
if ! id banger-vmm >/dev/null 2>&1; then
	if [ "$(id -u)" != 0 ]; then
		echo "install-deps: user banger-vmm is missing; run as root (sudo make install)" >&2
		exit 1
	fi
	useradd --system --user-group --no-create-home --home-dir /nonexistent \
		--shell /usr/sbin/nologin --comment "banger VMM processes" banger-vmm
fi
