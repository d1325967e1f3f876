package network

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Port forwards in the kernel. A forward of a running guest is a DNAT
// rule in the forwards chain of the ip table, reached from the nat
// output hook (connections made on the host, loopback included) and the
// nat prerouting hook (connections from other hosts or namespaces, never
// from the bridge: guests reach the host only for DNS). A connection to a
// loopback address leaves by the bridge with its source rewritten to the
// bridge address (postrouting), which needs route_localnet on the bridge;
// the martians chain (prerouting, before connection tracking) drops what
// arrives from the bridge for 127.0.0.0/8, so route_localnet opens no way
// from the guests to the host's loopback services.
//
// The daemon's userspace forwarder (package portfwd) keeps listening on
// each forward's host side: it holds the port so that nothing else takes
// it, and carries what the kernel does not (IPv6 host addresses, and
// connections made while no rule is in place).

// Forward is one port forward as the kernel carries it.
type Forward struct {
	Proto     string         // "tcp" or "udp"
	Host      netip.AddrPort // 0.0.0.0: every local address
	GuestPort uint16
}

func (f Forward) l4() (byte, error) {
	switch f.Proto {
	case "tcp":
		return unix.IPPROTO_TCP, nil
	case "udp":
		return unix.IPPROTO_UDP, nil
	}
	return 0, fmt.Errorf("port forward %s: unknown protocol %q", f.Host, f.Proto)
}

// Kernel reports whether the kernel carries f: only IPv4 host addresses.
func (f Forward) Kernel() bool { return f.Host.Addr().Unmap().Is4() }

// loopback127 is the IPv4 loopback range.
var loopback127 = netip.MustParsePrefix("127.0.0.0/8")

// forwardComment is the comment of a forward rule: its owner, then the
// rule in nft syntax. Forward rules have their own owner prefix, so a
// guest's policy rewrite (SetGuest) never touches them.
func forwardComment(id, text string) string { return "banger: fwd " + id + ": " + text }

// forwardOwner returns the vm id of a forward rule, or "".
func forwardOwner(r *nftables.Rule) string { return commentOwner(r, "fwd") }

// forwardRule is f's DNAT rule for guest address guest.
func forwardRule(id string, guest netip.Addr, f Forward) (natRule, error) {
	proto, err := f.l4()
	if err != nil {
		return natRule{}, err
	}
	host := f.Host.Addr().Unmap()
	var match []expr.Any
	text := fmt.Sprintf("ip daddr %s", host)
	if host.IsUnspecified() {
		match, text = fibDaddrLocal(), "fib daddr type local"
	} else {
		match = daddr(host)
	}
	to := netip.AddrPortFrom(guest, f.GuestPort)
	text += fmt.Sprintf(" %s dport %d dnat to %s", f.Proto, f.Host.Port(), to)
	return natRule{chain: chainForwards, comment: forwardComment(id, text),
		exprs: cat(match, dport(proto, f.Host.Port()), dnatTo(to))}, nil
}

// SetForwards makes the forwards of the running guest vm id at address
// guest exactly fw (those the kernel carries; see Forward.Kernel),
// replacing its earlier ones in one transaction, and ends the tracked
// connections of the forwards it had that fw lacks. None: its removal.
func (m *Manager) SetForwards(ctx context.Context, id string, guest netip.Addr, fw []Forward) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var want []natRule
	loop := false
	for _, f := range fw {
		if !f.Kernel() {
			continue
		}
		if !guest.Is4() {
			return fmt.Errorf("forwards of vm %s: guest address %s is not IPv4", id, guest)
		}
		r, err := forwardRule(id, guest, f)
		if err != nil {
			return err
		}
		want = append(want, r)
		loop = loop || loopback127.Contains(f.Host.Addr().Unmap()) || f.Host.Addr().IsUnspecified()
	}
	m.ruleMu.Lock()
	defer m.ruleMu.Unlock()
	if len(want) > 0 {
		if _, err := m.EnsureNAT(ctx); err != nil {
			return err
		}
		if loop {
			if err := m.ensureRouteLocalnet(); err != nil {
				return err
			}
		}
	}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("opening nftables: %w", err)
	}
	d := ipTable()
	existing, err := ourChains(c, d.family)
	if err != nil {
		return err
	}
	if _, ok := existing[chainForwards]; !ok {
		return nil // no table or chain: no forwards to remove
	}
	ch := d.chain(chainForwards)
	have, err := c.GetRules(ch.Table, ch)
	if err != nil {
		return fmt.Errorf("listing rules of ip %s %s: %w", TableName, chainForwards, err)
	}
	var gone []string
	for _, r := range have {
		if forwardOwner(r) != id {
			continue
		}
		if !slices.ContainsFunc(want, func(w natRule) bool { return w.comment == ruleComment(r) }) {
			gone = append(gone, ruleComment(r))
		}
		_ = c.DelRule(r) // only fails without a handle; listed rules have one
	}
	for _, r := range want {
		c.AddRule(&nftables.Rule{Table: ch.Table, Chain: ch, Exprs: r.exprs,
			UserData: userdata.AppendString(nil, userdata.TypeComment, r.comment)})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("writing the port forwards of vm %s: %w", id, err)
	}
	if len(gone) > 0 {
		m.forgetForwarded(guest, have, gone)
	}
	return nil
}

// forgetForwarded drops the tracked connections of removed forward rules
// (by comment), so that they end: their packets would otherwise still be
// translated. Failures are logged; the rules are gone either way.
func (m *Manager) forgetForwarded(guest netip.Addr, have []*nftables.Rule, gone []string) {
	for _, r := range have {
		if !slices.Contains(gone, ruleComment(r)) {
			continue
		}
		var proto, port uint64
		text := ruleComment(r)
		if i := strings.Index(text, " tcp dport "); i >= 0 {
			proto = unix.IPPROTO_TCP
			fmt.Sscanf(text[i+len(" tcp dport "):], "%d", &port)
		} else if i := strings.Index(text, " udp dport "); i >= 0 {
			proto = unix.IPPROTO_UDP
			fmt.Sscanf(text[i+len(" udp dport "):], "%d", &port)
		}
		if proto == 0 || port == 0 || !guest.IsValid() {
			continue
		}
		f := &netlink.ConntrackFilter{}
		err := errors.Join(f.AddProtocol(uint8(proto)), f.AddPort(netlink.ConntrackOrigDstPort, uint16(port)),
			f.AddIP(netlink.ConntrackReplySrcIP, guest.AsSlice()))
		if err == nil {
			_, err = netlink.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET, f)
		}
		if err != nil {
			m.log.Warn("dropping tracked connections of a removed port forward", "rule", text, "err", err)
		}
	}
}

// ForwardIDs returns the vm ids that have forward rules.
func (m *Manager) ForwardIDs(ctx context.Context) (map[string]bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("opening nftables: %w", err)
	}
	d := ipTable()
	out := map[string]bool{}
	existing, err := ourChains(c, d.family)
	if err != nil || existing == nil {
		return out, err
	}
	if _, ok := existing[chainForwards]; !ok {
		return out, nil
	}
	ch := d.chain(chainForwards)
	rules, err := c.GetRules(ch.Table, ch)
	if err != nil {
		return nil, fmt.Errorf("listing rules of ip %s %s: %w", TableName, chainForwards, err)
	}
	for _, r := range rules {
		if id := forwardOwner(r); id != "" {
			out[id] = true
		}
	}
	return out, nil
}

// ensureRouteLocalnet lets packets from and to 127.0.0.0/8 be routed by
// the bridge (net.ipv4.conf.BRIDGE.route_localnet), which forwards from a
// loopback address need. The martians rule keeps guests off loopback.
func (m *Manager) ensureRouteLocalnet() error {
	p := filepath.Join(filepath.Dir(m.forwardPath), "conf", m.cfg.BridgeName, "route_localnet")
	b, err := os.ReadFile(p)
	if err != nil {
		return fmt.Errorf("port forwards from loopback: reading %s (is bridge %s up?): %w", p, m.cfg.BridgeName, err)
	}
	if strings.TrimSpace(string(b)) == "1" {
		return nil
	}
	if err := os.WriteFile(p, []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("port forwards from loopback: enabling route_localnet on %s: %w", m.cfg.BridgeName, err)
	}
	m.log.Info("route_localnet enabled on the bridge for port forwards from loopback", "bridge", m.cfg.BridgeName)
	return nil
}

// fibDaddrLocal matches `fib daddr type local`: a destination address
// the host has.
func fibDaddrLocal() []expr.Any {
	return []expr.Any{
		&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: native32(unix.RTN_LOCAL)},
	}
}

// dnatTo is the verdict `dnat to ADDR:PORT`.
func dnatTo(to netip.AddrPort) []expr.Any {
	a := to.Addr().As4()
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: a[:]},
		&expr.Immediate{Register: 2, Data: binaryPort(to.Port())},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2, Specified: true},
	}
}

func binaryPort(p uint16) []byte { return []byte{byte(p >> 8), byte(p)} }
