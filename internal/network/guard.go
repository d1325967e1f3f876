package network

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Egress is what a guest may reach beyond the bridge.
type Egress int

const (
	// EgressNAT: whatever the host reaches, masqueraded, except the
	// link-local range 169.254.0.0/16 (cloud metadata services).
	EgressNAT Egress = iota
	// EgressNone: nothing; the guest is also cut off from other guests.
	EgressNone
	// EgressAllow: only Guest.Allow.
	EgressAllow
)

// LinkLocal is the range dropped for EgressNAT guests: it holds the cloud
// instance metadata services (169.254.169.254) and their credentials.
var LinkLocal = netip.MustParsePrefix("169.254.0.0/16")

// Dest is a destination an EgressAllow guest may reach: an address or
// range, on every port or only on Port (TCP and UDP).
type Dest struct {
	Prefix netip.Prefix
	Port   uint16 // 0: every port and protocol
}

func (d Dest) String() string {
	s := prefixText(d.Prefix)
	if d.Port != 0 {
		s += fmt.Sprintf(":%d", d.Port)
	}
	return s
}

// prefixText writes a /32 as its address, as nft lists it.
func prefixText(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.Masked().String()
}

// Guest is a running VM as banger's firewall sees it.
type Guest struct {
	VMID    string
	Tap     string
	IP      netip.Addr
	MAC     net.HardwareAddr
	Egress  Egress
	Allow   []Dest // for EgressAllow
	Isolate bool   // no traffic with other guests (always so for EgressNone)
}

func (g Guest) isolated() bool { return g.Isolate || g.Egress == EgressNone }

func (g Guest) check() error {
	if g.VMID == "" || strings.ContainsAny(g.VMID, " :\n\x00") || len(g.VMID) > 64 {
		return fmt.Errorf("guest rules: invalid vm id %q", g.VMID)
	}
	if g.Tap == "" || len(g.Tap) > ifNameMax {
		return fmt.Errorf("guest rules of %s: invalid tap %q", g.VMID, g.Tap)
	}
	if !g.IP.Is4() {
		return fmt.Errorf("guest rules of %s: address %s is not IPv4", g.VMID, g.IP)
	}
	if len(g.MAC) != 6 {
		return fmt.Errorf("guest rules of %s: invalid mac %q", g.VMID, g.MAC)
	}
	return nil
}

// guestComment is the comment of a per-guest rule: its owner, then the
// rule in nft syntax.
func guestComment(id, text string) string { return "banger: vm " + id + ": " + text }

// ruleOwner returns the vm id of a per-guest rule, or "".
func ruleOwner(r *nftables.Rule) string { return commentOwner(r, "vm") }

// commentOwner returns the vm id of a rule whose comment starts
// "banger: KIND ID:", or "".
func commentOwner(r *nftables.Rule, kind string) string {
	rest, ok := strings.CutPrefix(ruleComment(r), "banger: "+kind+" ")
	if !ok {
		return ""
	}
	id, _, _ := strings.Cut(rest, ":")
	return id
}

func guestChain(id string) string { return guestChainPrefix + id }

// ipRules are g's rules in the ip table, by chain.
func (g Guest) ipRules() []natRule {
	id, vc := g.VMID, guestChain(g.VMID)
	r := func(chain, text string, exprs ...any) natRule {
		return natRule{chain: chain, comment: guestComment(id, text), exprs: cat(exprs...)}
	}
	ip := g.IP.String()
	out := []natRule{r(chainEgress, fmt.Sprintf("ip saddr %s jump %s", ip, vc), saddr(g.IP), jump(vc))}
	if g.isolated() {
		out = append(out,
			r(chainVM2VM, fmt.Sprintf("ip saddr %s drop", ip), saddr(g.IP), drop()),
			r(chainVM2VM, fmt.Sprintf("ip daddr %s drop", ip), daddr(g.IP), drop()))
	}
	switch g.Egress {
	case EgressNAT:
		out = append(out,
			r(vc, fmt.Sprintf("ip daddr %s drop", LinkLocal), dnet(LinkLocal), drop()),
			r(vc, "accept", accept()))
	case EgressAllow:
		for _, d := range g.Allow {
			if d.Port == 0 {
				out = append(out, r(vc, fmt.Sprintf("ip daddr %s accept", prefixText(d.Prefix)), dnet(d.Prefix), accept()))
				continue
			}
			for _, p := range []struct {
				name string
				num  byte
			}{{"tcp", unix.IPPROTO_TCP}, {"udp", unix.IPPROTO_UDP}} {
				out = append(out, r(vc, fmt.Sprintf("ip daddr %s %s dport %d accept", prefixText(d.Prefix), p.name, d.Port),
					dnet(d.Prefix), dport(p.num, d.Port), accept()))
			}
		}
		out = append(out, r(vc, "drop", drop()))
	default:
		out = append(out, r(vc, "drop", drop()))
	}
	return out
}

// bridgeRules are g's rules in the bridge table: frames from its tap carry
// its MAC and, for IPv4 and ARP, its address (ARP probes: 0.0.0.0);
// anything else (IPv6, VLAN tags, other protocols) is dropped.
func (g Guest) bridgeRules() []natRule {
	id, vc := g.VMID, guestChain(g.VMID)
	r := func(chain, text string, exprs ...any) natRule {
		return natRule{chain: chain, comment: guestComment(id, text), exprs: cat(exprs...)}
	}
	mac, ip := g.MAC.String(), g.IP.String()
	out := []natRule{
		r(chainGuests, fmt.Sprintf("iifname %s jump %s", g.Tap, vc), iif(g.Tap), jump(vc)),
		r(vc, fmt.Sprintf("ether saddr != %s drop", mac), etherSaddr(g.MAC, expr.CmpOpNeq), drop()),
		r(vc, fmt.Sprintf("ether type ip ip saddr %s accept", ip), etherType(etherTypeIP), saddr(g.IP), accept()),
		r(vc, fmt.Sprintf("arp saddr ether %s arp saddr ip %s accept", mac, ip), arpSender(g.MAC, g.IP), accept()),
		r(vc, fmt.Sprintf("arp saddr ether %s arp saddr ip 0.0.0.0 accept", mac), arpSender(g.MAC, netip.IPv4Unspecified()), accept()),
		r(vc, "drop", drop()),
	}
	if g.isolated() {
		out = append(out,
			r(chainIsolate, fmt.Sprintf("iifname %s drop", g.Tap), iif(g.Tap), drop()),
			r(chainIsolate, fmt.Sprintf("oifname %s drop", g.Tap), oif(g.Tap), drop()))
	}
	return out
}

// SetGuest writes g's rules in both of banger's tables, replacing the
// ones it had, in one transaction: a guest is never seen half-updated.
// The tables are made first if they are missing (EnsureNAT).
func (m *Manager) SetGuest(ctx context.Context, g Guest) error {
	if err := g.check(); err != nil {
		return err
	}
	m.ruleMu.Lock()
	defer m.ruleMu.Unlock()
	if _, err := m.EnsureNAT(ctx); err != nil {
		return err
	}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("opening nftables: %w", err)
	}
	for _, d := range tableDefs() {
		rules := g.ipRules()
		if d.family == nftables.TableFamilyBridge {
			rules = g.bridgeRules()
		}
		if err := queueGuest(c, d, g.VMID, rules); err != nil {
			return err
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("writing the rules of vm %s: %w", g.VMID, err)
	}
	return nil
}

// queueGuest queues, on c, the replacement of the rules of vm id in table
// d by rules (none: its removal, chain included).
func queueGuest(c *nftables.Conn, d tableDef, id string, rules []natRule) error {
	existing, err := ourChains(c, d.family)
	if err != nil {
		return err
	}
	if existing == nil {
		if len(rules) == 0 {
			return nil // nothing to remove
		}
		return fmt.Errorf("nftables table %s %s is missing", familyName(d.family), TableName)
	}
	for _, name := range d.regular {
		if err := queueDelOwned(c, d.chain(name), id); err != nil {
			return err
		}
	}
	vc := d.chain(guestChain(id))
	if _, ok := existing[vc.Name]; ok {
		c.FlushChain(vc)
		if len(rules) == 0 {
			c.DelChain(vc)
		}
	} else if len(rules) > 0 {
		c.AddChain(vc)
	}
	// The guest's own chain first, so that the jumps to it find it.
	for _, own := range []bool{true, false} {
		for _, r := range rules {
			if (r.chain == vc.Name) != own {
				continue
			}
			ch := d.chain(r.chain)
			c.AddRule(&nftables.Rule{Table: ch.Table, Chain: ch, Exprs: r.exprs,
				UserData: userdata.AppendString(nil, userdata.TypeComment, r.comment)})
		}
	}
	return nil
}

// queueDelOwned queues the deletion of the rules of vm id in chain ch.
func queueDelOwned(c *nftables.Conn, ch *nftables.Chain, id string) error {
	rules, err := c.GetRules(ch.Table, ch)
	if err != nil {
		return fmt.Errorf("listing rules of %s %s %s: %w", familyName(ch.Table.Family), TableName, ch.Name, err)
	}
	for _, r := range rules {
		if ruleOwner(r) == id {
			_ = c.DelRule(r) // only fails without a handle; listed rules have one
		}
	}
	return nil
}

// RemoveGuest deletes every rule of vm id from banger's tables. A guest
// without rules, or missing tables, is no error.
func (m *Manager) RemoveGuest(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.ruleMu.Lock()
	defer m.ruleMu.Unlock()
	return m.removeGuestLocked(id)
}

func (m *Manager) removeGuestLocked(id string) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("opening nftables: %w", err)
	}
	for _, d := range tableDefs() {
		if err := queueGuest(c, d, id, nil); err != nil {
			return err
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("removing the rules of vm %s: %w", id, err)
	}
	return nil
}

// GuestIDs returns the vm ids that have rules in banger's tables.
func (m *Manager) GuestIDs(ctx context.Context) (map[string]bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("opening nftables: %w", err)
	}
	out := map[string]bool{}
	for _, d := range tableDefs() {
		chains, err := ourChains(c, d.family)
		if err != nil {
			return nil, err
		}
		for name, ch := range chains {
			if id, ok := strings.CutPrefix(name, guestChainPrefix); ok {
				out[id] = true
				continue
			}
			if !slices.Contains(d.regular, name) {
				continue
			}
			rules, err := c.GetRules(ch.Table, ch)
			if err != nil {
				return nil, fmt.Errorf("listing rules of %s %s %s: %w", familyName(d.family), TableName, name, err)
			}
			for _, r := range rules {
				if id := ruleOwner(r); id != "" {
					out[id] = true
				}
			}
		}
	}
	return out, nil
}

// SyncGuests makes banger's tables hold the rules of exactly guests: the
// rules of any other vm go, and each guest's are rewritten. It is what a
// daemon runs at start, from its state.
func (m *Manager) SyncGuests(ctx context.Context, guests []Guest) error {
	have, err := m.GuestIDs(ctx)
	if err != nil {
		return err
	}
	keep := map[string]bool{}
	for _, g := range guests {
		keep[g.VMID] = true
	}
	var errs []error
	for id := range have {
		if !keep[id] {
			if err := m.RemoveGuest(ctx, id); err != nil {
				errs = append(errs, err)
			} else {
				m.log.Info("removed rules of a vm that is not running", "vm", id)
			}
		}
	}
	for _, g := range guests {
		if err := m.SetGuest(ctx, g); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ForgetConnections drops the connection tracking entries of connections
// that ip opened, so that a tightened policy also ends them: replies of
// tracked connections are accepted before a guest's policy is consulted.
// It returns how many it dropped.
func (m *Manager) ForgetConnections(ip netip.Addr) (uint, error) {
	f := &netlink.ConntrackFilter{}
	if err := f.AddIP(netlink.ConntrackOrigSrcIP, ip.AsSlice()); err != nil {
		return 0, err
	}
	n, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET, f)
	if err != nil {
		return n, fmt.Errorf("dropping tracked connections of %s: %w", ip, err)
	}
	return n, nil
}
