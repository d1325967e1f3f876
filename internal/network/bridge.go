package network

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// bridgeAlias marks a bridge as banger's (the link's ifalias).
const bridgeAlias = "banger"

// EnsureBridge makes the bridge exist, carry BridgeIP/len(CIDR) and be up.
// It looks first and acts only on what differs, so calling it again is a
// no-op. It refuses, changing nothing, when a link of that name exists but
// is not a bridge marked as banger's, or when CIDR overlaps a host route
// that is not the bridge's own.
func (m *Manager) EnsureBridge(ctx context.Context) error {
	if err := m.Preflight(ctx); err != nil {
		return err
	}
	br, err := m.bridge()
	if err != nil {
		return err
	}
	brIndex := 0
	if br != nil {
		brIndex = br.Attrs().Index
	}
	if err := m.checkOverlap(brIndex); err != nil {
		return err
	}
	if br == nil {
		if br, err = m.createBridge(); err != nil {
			return err
		}
	}
	if err := m.ensureBridgeAddr(br); err != nil {
		return err
	}
	if br.Attrs().Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(br); err != nil {
			return fmt.Errorf("bringing up bridge %s: %w", m.cfg.BridgeName, err)
		}
		m.log.Info("bridge up", "bridge", m.cfg.BridgeName)
	}
	return nil
}

// bridge returns banger's bridge, nil when no link has its name, or an
// error wrapping ErrNotOurs when the name belongs to something else.
func (m *Manager) bridge() (netlink.Link, error) {
	name := m.cfg.BridgeName
	l, err := netlink.LinkByName(name)
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("looking up bridge %s: %w", name, err)
	}
	if l.Type() != "bridge" || l.Attrs().Alias != bridgeAlias {
		return nil, fmt.Errorf("bridge_name %s: %w (it is a %s link with alias %q; banger's is a bridge with alias %q); set another bridge_name in config.toml or remove that link",
			name, ErrNotOurs, l.Type(), l.Attrs().Alias, bridgeAlias)
	}
	return l, nil
}

func (m *Manager) createBridge() (netlink.Link, error) {
	name := m.cfg.BridgeName
	la := netlink.NewLinkAttrs()
	la.Name = name
	// A fixed MAC keeps the gateway's ARP entry valid in guests when taps
	// come and go (a bridge otherwise takes its lowest port's MAC).
	la.HardwareAddr = MACFor("bridge:" + name)
	br := &netlink.Bridge{LinkAttrs: la}
	if err := netlink.LinkAdd(br); err != nil {
		return nil, fmt.Errorf("creating bridge %s: %w", name, err)
	}
	if err := netlink.LinkSetAlias(br, bridgeAlias); err != nil {
		_ = netlink.LinkDel(br)
		return nil, fmt.Errorf("marking bridge %s: %w", name, err)
	}
	l, err := netlink.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("looking up new bridge %s: %w", name, err)
	}
	m.log.Info("bridge created", "bridge", name)
	return l, nil
}

// ensureBridgeAddr leaves BridgeIP/len(CIDR) as the bridge's only IPv4
// address.
func (m *Manager) ensureBridgeAddr(br netlink.Link) error {
	want := netip.PrefixFrom(m.cfg.BridgeIP, m.cfg.CIDR.Bits())
	have, err := netlink.AddrList(br, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("listing addresses of %s: %w", m.cfg.BridgeName, err)
	}
	found := false
	for _, a := range have {
		if p, ok := prefixOf(a.IPNet); ok && p == want {
			found = true
			continue
		}
		if err := netlink.AddrDel(br, &a); err != nil {
			return fmt.Errorf("removing stale address %s from %s: %w", a.IPNet, m.cfg.BridgeName, err)
		}
		m.log.Info("stale bridge address removed", "bridge", m.cfg.BridgeName, "addr", a.IPNet.String())
	}
	if found {
		return nil
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: want.Addr().AsSlice(), Mask: net.CIDRMask(want.Bits(), 32)}}
	if err := netlink.AddrAdd(br, addr); err != nil {
		return fmt.Errorf("adding %s to %s: %w", want, m.cfg.BridgeName, err)
	}
	m.log.Info("bridge address added", "bridge", m.cfg.BridgeName, "addr", want.String())
	return nil
}

// checkOverlap refuses a cidr that overlaps an IPv4 route of the main table
// other than the default route and the bridge's own routes.
func (m *Manager) checkOverlap(bridgeIndex int) error {
	routes, err := hostRoutes(bridgeIndex)
	if err != nil {
		return err
	}
	for _, r := range routes {
		if !r.dst.Overlaps(m.cfg.CIDR) {
			continue
		}
		hint := "choose a cidr that no host route covers"
		if free, ok := suggestCIDR(routes, m.cfg.CIDR.Bits()); ok {
			hint = fmt.Sprintf("set a free cidr in config.toml, e.g. cidr = %q (and a bridge_ip inside it)", free)
		}
		return fmt.Errorf("cidr %s %w %s; %s", m.cfg.CIDR, ErrOverlap, r, hint)
	}
	return nil
}

// hostRoute is a route of the host that banger must not shadow.
type hostRoute struct {
	dst  netip.Prefix
	dev  string
	orig string
}

func (r hostRoute) String() string { return r.orig }

// hostRoutes lists IPv4 routes of the main table, skipping default routes
// and those on the link with index skipIndex (the bridge).
func hostRoutes(skipIndex int) ([]hostRoute, error) {
	rs, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("listing host routes: %w", err)
	}
	var out []hostRoute
	for _, r := range rs {
		if r.Dst == nil || (skipIndex != 0 && r.LinkIndex == skipIndex) {
			continue
		}
		p, ok := prefixOf(r.Dst)
		if !ok || p.Bits() == 0 {
			continue
		}
		dev := ""
		if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
			dev = l.Attrs().Name
		}
		orig := p.String()
		if dev != "" {
			orig += " dev " + dev
		}
		if r.Gw != nil {
			orig += " via " + r.Gw.String()
		}
		out = append(out, hostRoute{dst: p, dev: dev, orig: orig})
	}
	return out, nil
}

// suggestCIDR returns the first prefix of the given size starting at
// 172.16.N.0 or 10.200.N.0 (N = 0..255) that overlaps none of routes.
func suggestCIDR(routes []hostRoute, bits int) (netip.Prefix, bool) {
	for _, base := range [][2]byte{{172, 16}, {10, 200}} {
		for n := 0; n < 256; n++ {
			p := netip.PrefixFrom(netip.AddrFrom4([4]byte{base[0], base[1], byte(n), 0}), bits).Masked()
			free := true
			for _, r := range routes {
				if r.dst.Overlaps(p) {
					free = false
					break
				}
			}
			if free {
				return p, true
			}
		}
	}
	return netip.Prefix{}, false
}

// prefixOf converts an IPv4 net.IPNet to a netip.Prefix.
func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}
