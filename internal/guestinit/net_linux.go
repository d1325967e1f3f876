package guestinit

import (
	"fmt"
	"io"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"banger/internal/guestnet"
)

// parseGuestNet parses the network glue banger puts on the kernel command
// line: banger.net=addr=172.16.0.2/24,gw=172.16.0.1,dns=1.1.1.1
func parseGuestNet(s string) (guestnet.Config, error) {
	var g guestnet.Config
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
// without a network. The files are written only where the root is
// writable.
func configureGuest(con io.Writer, cmdline string) {
	if h := cmdlineValue(cmdline, "banger.hostname"); h != "" {
		if err := unix.Sethostname([]byte(h)); err != nil {
			fmt.Fprintf(con, "banger initrd: warning: hostname %s: %v\n", h, err)
		}
		_ = guestnet.WriteHostname("/", h)
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
		var nic netlink.Link
		if nic, err = guestnet.FirstNIC(); err == nil {
			err = guestnet.Apply(nic, g)
		}
	}
	if err != nil {
		fmt.Fprintf(con, "banger initrd: warning: network: %v\n", err)
		return
	}
	if len(g.DNS) > 0 {
		_ = guestnet.WriteResolvConf("/", g.DNS)
	}
}
