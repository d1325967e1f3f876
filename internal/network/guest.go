package network

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"strings"
)

// GuestConfig is what a guest needs to reach the network: its address with
// the cidr's prefix length, the gateway (the bridge IP) and resolvers.
type GuestConfig struct {
	Address netip.Prefix `json:"address"`
	Gateway netip.Addr   `json:"gateway"`
	DNS     []netip.Addr `json:"dns,omitempty"`
}

// KernelArgs returns the kernel command line arguments that carry c: the
// kernel's own ip= form (ip=<client>::<gw>:<mask>::eth0:off[:<dns0>[:<dns1>]])
// and banger's banger.net= form (see BangerNetArg).
func (c GuestConfig) KernelArgs() []string {
	return []string{c.IPArg(), c.BangerNetArg()}
}

// IPArg renders the kernel's ip= argument (Documentation/admin-guide/nfs/
// nfsroot.rst) for eth0 with autoconfiguration off and up to two resolvers.
func (c GuestConfig) IPArg() string {
	mask := net.IP(net.CIDRMask(c.Address.Bits(), 32)).String()
	s := fmt.Sprintf("ip=%s::%s:%s::eth0:off", c.Address.Addr(), c.Gateway, mask)
	for i, d := range c.DNS {
		if i == 2 {
			break
		}
		s += ":" + d.String()
	}
	return s
}

// BangerNetArg renders banger.net=addr=<ip/len>,gw=<ip>[,dns=<ip>]... which
// ParseBangerNet reads back.
func (c GuestConfig) BangerNetArg() string {
	var b strings.Builder
	fmt.Fprintf(&b, "banger.net=addr=%s,gw=%s", c.Address, c.Gateway)
	for _, d := range c.DNS {
		fmt.Fprintf(&b, ",dns=%s", d)
	}
	return b.String()
}

// ResolvConf renders an /etc/resolv.conf naming c's resolvers.
func (c GuestConfig) ResolvConf() string {
	var b strings.Builder
	for _, d := range c.DNS {
		fmt.Fprintf(&b, "nameserver %s\n", d)
	}
	return b.String()
}

// ParseBangerNet parses the value of a banger.net= argument (with or
// without the "banger.net=" prefix).
func ParseBangerNet(s string) (GuestConfig, error) {
	var c GuestConfig
	s = strings.TrimPrefix(s, "banger.net=")
	for field := range strings.SplitSeq(s, ",") {
		k, v, ok := strings.Cut(field, "=")
		if !ok {
			return GuestConfig{}, fmt.Errorf("banger.net field %q: want key=value", field)
		}
		var err error
		switch k {
		case "addr":
			c.Address, err = netip.ParsePrefix(v)
		case "gw":
			c.Gateway, err = netip.ParseAddr(v)
		case "dns":
			var a netip.Addr
			a, err = netip.ParseAddr(v)
			c.DNS = append(c.DNS, a)
		default:
			err = errors.New("unknown key (valid: addr, gw, dns)")
		}
		if err != nil {
			return GuestConfig{}, fmt.Errorf("banger.net field %q: %w", field, err)
		}
	}
	if !c.Address.IsValid() {
		return GuestConfig{}, errors.New("banger.net: addr is missing")
	}
	return c, nil
}

// Resolver files HostDNS reads: the usual one, then the upstream list of
// systemd-resolved for hosts whose resolv.conf names only its stub.
var resolvConfPaths = []string{"/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"}

// HostDNS returns the host's resolvers that a guest behind the bridge can
// reach (see ParseResolvConf), from the first file of resolvConfPaths that
// names any. It returns none when no file does; the caller then uses
// default_dns or nothing.
func HostDNS() ([]netip.Addr, error) { return hostResolvers(false) }

// HostResolvers returns the resolvers the host itself uses, loopback
// stubs such as systemd-resolved's 127.0.0.53 included: what banger's
// guest DNS server asks on the guests' behalf.
func HostResolvers() ([]netip.Addr, error) { return hostResolvers(true) }

func hostResolvers(loopback bool) ([]netip.Addr, error) {
	for _, p := range resolvConfPaths {
		addrs, err := readResolvConf(p, loopback)
		if err != nil {
			return nil, err
		}
		if len(addrs) > 0 {
			return addrs, nil
		}
	}
	return nil, nil
}

func readResolvConf(path string, loopback bool) ([]netip.Addr, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading host resolvers: %w", err)
	}
	defer f.Close()
	return parseResolvConf(f, loopback)
}

// ParseResolvConf returns the IPv4 nameservers of a resolv.conf, skipping
// those a guest cannot use through the bridge: loopback stubs such as
// systemd-resolved's 127.0.0.53, the unspecified address, and IPv6 ones
// (guests get IPv4 only).
func ParseResolvConf(r io.Reader) ([]netip.Addr, error) { return parseResolvConf(r, false) }

func parseResolvConf(r io.Reader, loopback bool) ([]netip.Addr, error) {
	var out []netip.Addr
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		a, err := netip.ParseAddr(f[1])
		if err != nil || !a.Is4() || (a.IsLoopback() && !loopback) || a.IsUnspecified() {
			continue
		}
		out = append(out, a)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading resolv.conf: %w", err)
	}
	return out, nil
}
