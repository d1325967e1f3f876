package guestinit

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"banger/internal/atomicfile"
)

// guestNet is the network glue banger puts on the kernel command line:
// banger.net=addr=172.16.0.2/24,gw=172.16.0.1,dns=1.1.1.1
type guestNet struct {
	Addr netip.Prefix
	GW   netip.Addr
	DNS  []netip.Addr
}

func parseGuestNet(s string) (guestNet, error) {
	var g guestNet
	for _, kv := range strings.Split(s, ",") {
		k, v, _ := strings.Cut(kv, "=")
		var err error
		switch k {
		case "addr":
			g.Addr, err = netip.ParsePrefix(v)
		case "gw":
			g.GW, err = netip.ParseAddr(v)
		case "dns":
			var a netip.Addr
			if a, err = netip.ParseAddr(v); err == nil {
				g.DNS = append(g.DNS, a)
			}
		}
		if err != nil {
			return g, fmt.Errorf("banger.net %q: %w", s, err)
		}
	}
	if !g.Addr.IsValid() {
		return g, fmt.Errorf("banger.net %q: no addr", s)
	}
	return g, nil
}

// cmdlineValue returns the value of key=... on the kernel command line.
func cmdlineValue(cmdline, key string) string {
	for _, tok := range splitCmdline(cmdline) {
		if tok == "--" {
			return ""
		}
		if k, v, ok := strings.Cut(tok, "="); ok && k == key {
			return unquote(v)
		}
	}
	return ""
}

// configureGuest applies banger's hostname and network glue inside the
// new root, before its init starts: the hostname, lo, the first NIC's
// address and default route, and /etc/resolv.conf. Problems are reported
// on the console and do not stop the boot: exec over the agent still works
// without a network.
func configureGuest(con io.Writer, cmdline string) {
	if h := cmdlineValue(cmdline, "banger.hostname"); h != "" {
		if err := unix.Sethostname([]byte(h)); err != nil {
			fmt.Fprintf(con, "banger initrd: warning: hostname %s: %v\n", h, err)
		}
		writeIfRW("/etc/hostname", h+"\n")
		ensureHostsEntry(h)
	}
	if lo, err := netlink.LinkByName("lo"); err == nil {
		netlink.LinkSetUp(lo)
	}
	s := cmdlineValue(cmdline, "banger.net")
	if s == "" {
		return
	}
	g, err := parseGuestNet(s)
	if err == nil {
		err = applyGuestNet(g)
	}
	if err != nil {
		fmt.Fprintf(con, "banger initrd: warning: network: %v\n", err)
		return
	}
	if len(g.DNS) > 0 {
		var b strings.Builder
		for _, d := range g.DNS {
			fmt.Fprintf(&b, "nameserver %s\n", d)
		}
		os.Remove("/etc/resolv.conf") // may be a dangling symlink to systemd-resolved
		writeIfRW("/etc/resolv.conf", b.String())
	}
}

func applyGuestNet(g guestNet) error {
	links, err := netlink.LinkList()
	if err != nil {
		return err
	}
	var nic netlink.Link
	for _, l := range links {
		if l.Type() == "device" && l.Attrs().Flags&net.FlagLoopback == 0 {
			nic = l
			break
		}
	}
	if nic == nil {
		return fmt.Errorf("no network interface found (is virtio_net loaded?)")
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: g.Addr.Addr().AsSlice(), Mask: net.CIDRMask(g.Addr.Bits(), 32)}}
	if err := netlink.AddrReplace(nic, addr); err != nil {
		return fmt.Errorf("address %s on %s: %w", g.Addr, nic.Attrs().Name, err)
	}
	if err := netlink.LinkSetUp(nic); err != nil {
		return fmt.Errorf("bringing %s up: %w", nic.Attrs().Name, err)
	}
	if g.GW.IsValid() {
		r := &netlink.Route{LinkIndex: nic.Attrs().Index, Gw: g.GW.AsSlice()}
		if err := netlink.RouteReplace(r); err != nil {
			return fmt.Errorf("default route via %s: %w", g.GW, err)
		}
	}
	return nil
}

func writeIfRW(path, content string) {
	_ = atomicfile.WriteFile(path, []byte(content), 0o644)
}

// ensureHostsEntry makes the hostname resolve locally (sudo and others
// complain otherwise).
func ensureHostsEntry(h string) {
	b, err := os.ReadFile("/etc/hosts")
	if err != nil && !os.IsNotExist(err) {
		return
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		for _, name := range f[min(1, len(f)):] {
			if name == h {
				return
			}
		}
	}
	if len(b) == 0 {
		b = []byte("127.0.0.1\tlocalhost\n")
	}
	if b[len(b)-1] != '\n' {
		b = append(b, '\n')
	}
	writeIfRW("/etc/hosts", string(b)+"127.0.1.1\t"+h+"\n")
}
