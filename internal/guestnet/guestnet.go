// Package guestnet gives a Linux guest its network identity from inside
// the guest: the NIC's MAC and address, the default route, the resolvers
// and the hostname. banger's initrd uses it at boot (internal/guestinit)
// and the agent after a restore from a snapshot (OpReidentify), so both
// paths configure a guest the same way.
package guestnet

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"banger/internal/atomicfile"
)

// Config is the IPv4 configuration of a guest's NIC.
type Config struct {
	Addr netip.Prefix     // the address and its prefix length
	GW   netip.Addr       // the default route; invalid: none
	DNS  []netip.Addr     // resolvers for /etc/resolv.conf
	MAC  net.HardwareAddr // the NIC's new address; nil: keep it (Replace only)
}

// FirstNIC returns the guest's first network device that is not the
// loopback: eth0 in a banger VM, whose only NIC is virtio-net.
func FirstNIC() (netlink.Link, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, err
	}
	for _, l := range links {
		if l.Type() == "device" && l.Attrs().Flags&net.FlagLoopback == 0 {
			return l, nil
		}
	}
	return nil, errors.New("no network interface found (is virtio_net loaded?)")
}

// Apply adds c's address to nic, brings it up and points the default
// route at c.GW: what a boot does on a fresh NIC. c.MAC is ignored.
func Apply(nic netlink.Link, c Config) error {
	if err := netlink.AddrReplace(nic, addr(c.Addr)); err != nil {
		return fmt.Errorf("address %s on %s: %w", c.Addr, nic.Attrs().Name, err)
	}
	if err := netlink.LinkSetUp(nic); err != nil {
		return fmt.Errorf("bringing %s up: %w", nic.Attrs().Name, err)
	}
	return defaultRoute(nic, c.GW)
}

// Replace makes c nic's whole identity, for a guest that had another one:
// the link loses every IPv4 address, gets c.Addr, takes c.MAC (when set)
// and announces itself with a gratuitous ARP where the kernel allows it,
// with the default route via c.GW. The MAC changes while the link is up
// where the driver can (virtio-net can: a down and up costs a restore
// about 150 ms under software emulation); a driver that cannot (EBUSY)
// has the link taken down for it and brought up again.
func Replace(nic netlink.Link, c Config) error {
	name := nic.Attrs().Name
	old, err := netlink.AddrList(nic, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("listing the addresses of %s: %w", name, err)
	}
	for _, a := range old {
		if err := netlink.AddrDel(nic, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("removing address %s from %s: %w", a.IPNet, name, err)
		}
	}
	if err := netlink.AddrAdd(nic, addr(c.Addr)); err != nil {
		return fmt.Errorf("address %s on %s: %w", c.Addr, name, err)
	}
	// Best effort: arp_notify makes the kernel send a gratuitous ARP when
	// the MAC changes or the link comes up, so neighbours forget whoever
	// had the address.
	_ = os.WriteFile(filepath.Join("/proc/sys/net/ipv4/conf", name, "arp_notify"), []byte("1\n"), 0o644)
	up := nic.Attrs().Flags&net.FlagUp != 0
	if c.MAC != nil && !bytes.Equal(nic.Attrs().HardwareAddr, c.MAC) {
		err := netlink.LinkSetHardwareAddr(nic, c.MAC)
		if errors.Is(err, unix.EBUSY) {
			if err := netlink.LinkSetDown(nic); err != nil {
				return fmt.Errorf("bringing %s down: %w", name, err)
			}
			up, err = false, netlink.LinkSetHardwareAddr(nic, c.MAC)
		}
		if err != nil {
			return fmt.Errorf("setting the MAC of %s to %s: %w", name, c.MAC, err)
		}
	}
	if !up {
		if err := netlink.LinkSetUp(nic); err != nil {
			return fmt.Errorf("bringing %s up: %w", name, err)
		}
	}
	return defaultRoute(nic, c.GW)
}

func addr(p netip.Prefix) *netlink.Addr {
	return &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
}

func defaultRoute(nic netlink.Link, gw netip.Addr) error {
	if !gw.IsValid() {
		return nil
	}
	r := &netlink.Route{LinkIndex: nic.Attrs().Index, Gw: gw.AsSlice()}
	if err := netlink.RouteReplace(r); err != nil {
		return fmt.Errorf("default route via %s: %w", gw, err)
	}
	return nil
}

// ResolvConf renders an /etc/resolv.conf naming dns.
func ResolvConf(dns []netip.Addr) string {
	var b strings.Builder
	for _, d := range dns {
		fmt.Fprintf(&b, "nameserver %s\n", d)
	}
	return b.String()
}

// WriteResolvConf replaces root's /etc/resolv.conf with one naming dns,
// unsynced (atomicfile.Replace): it is written afresh at each boot, and a
// reidentify syncs once for all its files. A symlink there (often to
// systemd-resolved's stub, which banger's guests do not run) is replaced
// by a file.
func WriteResolvConf(root string, dns []netip.Addr) error {
	p := filepath.Join(root, "etc/resolv.conf")
	if st, err := os.Lstat(p); err == nil && st.Mode()&os.ModeSymlink != 0 {
		if err := os.Remove(p); err != nil {
			return err
		}
	}
	return atomicfile.Replace(p, []byte(ResolvConf(dns)), 0o644)
}

// WriteHostname writes name to root's /etc/hostname and makes it resolve
// locally in /etc/hosts (sudo and others complain otherwise), unsynced
// like WriteResolvConf.
func WriteHostname(root, name string) error {
	if err := atomicfile.Replace(filepath.Join(root, "etc/hostname"), []byte(name+"\n"), 0o644); err != nil {
		return err
	}
	p := filepath.Join(root, "etc/hosts")
	old, err := os.ReadFile(p)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	hosts := HostsWithName(old, name)
	if bytes.Equal(hosts, old) {
		return nil
	}
	return atomicfile.Replace(p, hosts, 0o644)
}

// HostsWithName returns the /etc/hosts content hosts with name resolving
// locally: unchanged when some line names it already, else with the
// 127.0.1.1 line (Debian's place for the machine's own name, which a
// snapshot's guest has under its old name) naming it alone, else with
// such a line added. An empty file gets a localhost line too.
func HostsWithName(hosts []byte, name string) []byte {
	lines := strings.Split(string(hosts), "\n")
	for _, line := range lines {
		f := strings.Fields(line)
		for i, n := range f {
			if strings.HasPrefix(n, "#") {
				break
			}
			if i > 0 && n == name {
				return hosts
			}
		}
	}
	entry := "127.0.1.1\t" + name
	for i, line := range lines {
		if f := strings.Fields(line); len(f) > 0 && f[0] == "127.0.1.1" {
			lines[i] = entry
			return []byte(strings.Join(lines, "\n"))
		}
	}
	out := string(hosts)
	if out == "" {
		out = "127.0.0.1\tlocalhost\n"
	}
	if !strings.HasSuffix(out, "\n") {
		out += "\n"
	}
	return []byte(out + entry + "\n")
}
