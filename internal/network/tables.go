package network

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// banger's rules live in two tables, both named TableName:
//
//	ip banger      postrouting  masquerade of the cidr leaving by another interface,
//	                            and of loopback sources leaving by the bridge
//	                            (port forwards from 127.0.0.1)
//	               martians     nothing from the bridge to 127.0.0.0/8
//	               prerouting   port forwards (jump forwards), not from the bridge
//	               output       port forwards of connections made on the host
//	               forwards     per forward: ... dport P dnat to GUEST:PORT
//	               forward      VM-to-VM (jump vm2vm), replies, then each guest's
//	                            egress policy (jump egress); anything else from the
//	                            bridge is dropped
//	               input        from the bridge only replies, DNS and ping to the
//	                            bridge address; the host's other services are not
//	                            reachable from guests
//	               vm2vm        per isolated guest: drops to and from it
//	               egress       per guest: ip saddr IP jump vm-ID
//	               vm-ID        the guest's policy (nat, none, allow)
//	bridge banger  prerouting   each frame from a guest's tap (jump guests) must carry
//	                            the guest's MAC and leased IP; frames from banger taps
//	                            no guest holds are dropped
//	               forward      bridged VM-to-VM frames of isolated guests (jump isolate)
//	               guests       per guest: iifname TAP jump vm-ID
//	               vm-ID        the guest's anti-spoofing checks
//	               isolate      per isolated guest: drops from and to its tap
//
// The base chains hold fixed rules that EnsureNAT keeps exactly as
// wanted; the regular chains hold per-guest rules written by SetGuest and
// RemoveGuest. The guest's leased IP identifies it in the ip table (the
// bridge table makes sure only that guest can send from it); its tap
// identifies it in the bridge table. A guest's source address can
// therefore be trusted from the ip table on, whether or not br_netfilter
// passes bridged frames through the ip hooks.

// Chains of banger's tables.
const (
	chainPostrouting = "postrouting"
	chainForward     = "forward"
	chainInput       = "input"
	chainPrerouting  = "prerouting"
	chainVM2VM       = "vm2vm"
	chainEgress      = "egress"
	chainGuests      = "guests"
	chainIsolate     = "isolate"
	chainOutput      = "output"
	chainMartians    = "martians"
	chainForwards    = "forwards"
	guestChainPrefix = "vm-"
)

// bridgeFilterPriority is the bridge family's "filter" priority.
const bridgeFilterPriority = -200

// tableDef is one of banger's tables: its base chains in order, and the
// regular chains the base chains jump to.
type tableDef struct {
	family  nftables.TableFamily
	base    []*nftables.Chain
	regular []string
}

func (d tableDef) table() *nftables.Table {
	return &nftables.Table{Family: d.family, Name: TableName}
}

func (d tableDef) chain(name string) *nftables.Chain {
	for _, c := range d.base {
		if c.Name == name {
			return c
		}
	}
	return &nftables.Chain{Name: name, Table: d.table()}
}

func ipTable() tableDef {
	t := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: TableName}
	accept := nftables.ChainPolicyAccept
	return tableDef{family: t.Family, regular: []string{chainVM2VM, chainEgress, chainForwards}, base: []*nftables.Chain{
		{Name: chainPostrouting, Table: t, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource},
		// Before connection tracking undoes the source NAT of the replies
		// to forwards from loopback (which then are for 127.0.0.1).
		{Name: chainMartians, Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRaw, Policy: &accept},
		{Name: chainPrerouting, Table: t, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest},
		{Name: chainOutput, Table: t, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest},
		// Policy accept: banger's tables never drop what other tables
		// allow, except traffic of its own guests.
		{Name: chainForward, Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept},
		{Name: chainInput, Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &accept},
	}}
}

func bridgeTable() tableDef {
	t := &nftables.Table{Family: nftables.TableFamilyBridge, Name: TableName}
	accept := nftables.ChainPolicyAccept
	prio := nftables.ChainPriorityRef(bridgeFilterPriority)
	return tableDef{family: t.Family, regular: []string{chainGuests, chainIsolate}, base: []*nftables.Chain{
		{Name: chainPrerouting, Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookPrerouting, Priority: prio, Policy: &accept},
		{Name: chainForward, Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookForward, Priority: prio, Policy: &accept},
	}}
}

func tableDefs() []tableDef { return []tableDef{ipTable(), bridgeTable()} }

// natRule is one rule banger wants, identified by its comment: the rule in
// nft syntax, without quotes so that `nft list ruleset` output stays valid
// nft input.
type natRule struct {
	chain   string
	comment string
	exprs   []expr.Any
}

func rule(chain, comment string, exprs ...any) natRule {
	return natRule{chain: chain, comment: "banger: " + comment, exprs: cat(exprs...)}
}

// wantedRules returns the fixed rules of the base chains of table family
// f, in order.
func (m *Manager) wantedRules(f nftables.TableFamily) []natRule {
	br, cidr, gw := m.cfg.BridgeName, m.cfg.CIDR, m.cfg.BridgeIP
	if f == nftables.TableFamilyBridge {
		return []natRule{
			rule(chainPrerouting, "jump "+chainGuests, jump(chainGuests)),
			rule(chainPrerouting, fmt.Sprintf("iifname %s* drop", m.cfg.TapPrefix), iif(m.cfg.TapPrefix+"*"), drop()),
			rule(chainForward, "jump "+chainIsolate, jump(chainIsolate)),
		}
	}
	both := cat(iif(br), oif(br))
	return []natRule{
		rule(chainPostrouting, fmt.Sprintf("ip saddr %s oifname != %s masquerade", cidr, br),
			ipAddr(12, cidr, expr.CmpOpEq), ifMatch(expr.MetaKeyOIFNAME, br, expr.CmpOpNeq), &expr.Masq{}),
		rule(chainPostrouting, fmt.Sprintf("ip saddr %s oifname %s masquerade", loopback127, br),
			ipAddr(12, loopback127, expr.CmpOpEq), oif(br), &expr.Masq{}),
		rule(chainMartians, fmt.Sprintf("iifname %s ip daddr %s drop", br, loopback127), iif(br), dnet(loopback127), drop()),
		rule(chainPrerouting, fmt.Sprintf("iifname %s return", br), iif(br), &expr.Verdict{Kind: expr.VerdictReturn}),
		rule(chainPrerouting, "jump "+chainForwards, jump(chainForwards)),
		rule(chainOutput, "jump "+chainForwards, jump(chainForwards)),
		rule(chainForward, fmt.Sprintf("iifname %s oifname %s jump %s", br, br, chainVM2VM), both, jump(chainVM2VM)),
		rule(chainForward, fmt.Sprintf("iifname %s oifname %s accept", br, br), both, accept()),
		rule(chainForward, fmt.Sprintf("iifname %s ct state established,related accept", br), iif(br), ctEstablished(), accept()),
		rule(chainForward, fmt.Sprintf("oifname %s ct state established,related accept", br), oif(br), ctEstablished(), accept()),
		rule(chainForward, fmt.Sprintf("iifname %s jump %s", br, chainEgress), iif(br), jump(chainEgress)),
		rule(chainForward, fmt.Sprintf("iifname %s drop", br), iif(br), drop()),
		rule(chainInput, fmt.Sprintf("iifname %s ct state established,related accept", br), iif(br), ctEstablished(), accept()),
		rule(chainInput, fmt.Sprintf("iifname %s ip daddr %s udp dport 53 accept", br, gw), iif(br), daddr(gw), dport(unix.IPPROTO_UDP, 53), accept()),
		rule(chainInput, fmt.Sprintf("iifname %s ip daddr %s tcp dport 53 accept", br, gw), iif(br), daddr(gw), dport(unix.IPPROTO_TCP, 53), accept()),
		rule(chainInput, fmt.Sprintf("iifname %s ip daddr %s icmp type echo-request accept", br, gw), iif(br), daddr(gw), icmpEcho(), accept()),
		rule(chainInput, fmt.Sprintf("iifname %s drop", br), iif(br), drop()),
	}
}

// EnsureNAT makes banger's tables (ip and bridge, both named TableName)
// hold exactly the wanted fixed rules: a base chain whose rules differ
// from the wanted ones (missing, duplicated, reordered, of an older
// configuration) is rewritten whole, in one transaction with the rest,
// and EnsureNAT reports whether it changed anything. The per-guest rules
// of the regular chains are left as they are (see SetGuest). Other tables
// are never touched.
func (m *Manager) EnsureNAT(ctx context.Context) (changed bool, err error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	c, err := nftables.New()
	if err != nil {
		return false, fmt.Errorf("opening nftables: %w", err)
	}
	for _, d := range tableDefs() {
		ch, err := m.ensureTable(c, d)
		if err != nil {
			return false, err
		}
		changed = changed || ch
	}
	if !changed {
		return false, nil
	}
	if err := c.Flush(); err != nil {
		return false, fmt.Errorf("writing nftables tables %s: %w", TableName, err)
	}
	m.log.Info("nftables rules updated", "table", TableName, "cidr", m.cfg.CIDR.String())
	return true, nil
}

// ensureTable queues what table d lacks or has wrong on c and reports
// whether it queued anything.
func (m *Manager) ensureTable(c *nftables.Conn, d tableDef) (bool, error) {
	existing, err := ourChains(c, d.family)
	if err != nil {
		return false, err
	}
	queued := false
	if existing == nil {
		c.AddTable(d.table())
		queued = true
	}
	for _, name := range d.regular {
		if _, ok := existing[name]; !ok {
			c.AddChain(d.chain(name))
			queued = true
		}
	}
	want := m.wantedRules(d.family)
	for _, ch := range d.base {
		var have []*nftables.Rule
		if _, ok := existing[ch.Name]; !ok {
			c.AddChain(ch)
		} else if have, err = c.GetRules(ch.Table, ch); err != nil {
			return false, fmt.Errorf("listing rules of %s %s %s: %w", familyName(d.family), TableName, ch.Name, err)
		}
		var wantHere []natRule
		for _, r := range want {
			if r.chain == ch.Name {
				wantHere = append(wantHere, r)
			}
		}
		if _, ok := existing[ch.Name]; ok && sameRules(have, wantHere) {
			continue
		}
		if len(have) > 0 {
			c.FlushChain(ch)
		}
		for _, r := range wantHere {
			c.AddRule(&nftables.Rule{Table: ch.Table, Chain: ch, Exprs: r.exprs,
				UserData: userdata.AppendString(nil, userdata.TypeComment, r.comment)})
		}
		queued = true
	}
	return queued, nil
}

// sameRules reports whether have are exactly want, in order, by comment.
func sameRules(have []*nftables.Rule, want []natRule) bool {
	if len(have) != len(want) {
		return false
	}
	for i, r := range have {
		if ruleComment(r) != want[i].comment {
			return false
		}
	}
	return true
}

// RemoveNAT deletes banger's tables, if present.
func (m *Manager) RemoveNAT(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("opening nftables: %w", err)
	}
	queued := false
	for _, d := range tableDefs() {
		existing, err := ourChains(c, d.family)
		if err != nil {
			return err
		}
		if existing != nil {
			c.DelTable(d.table())
			queued = true
		}
	}
	if !queued {
		return nil
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("deleting nftables tables %s: %w", TableName, err)
	}
	return nil
}

// ourChains returns the chains of banger's table of family f by name, or
// nil when the table does not exist.
func ourChains(c *nftables.Conn, f nftables.TableFamily) (map[string]*nftables.Chain, error) {
	tables, err := c.ListTablesOfFamily(f)
	if err != nil {
		return nil, fmt.Errorf("listing nftables tables: %w", err)
	}
	found := false
	for _, t := range tables {
		found = found || t.Name == TableName
	}
	if !found {
		return nil, nil
	}
	all, err := c.ListChainsOfTableFamily(f)
	if err != nil {
		return nil, fmt.Errorf("listing nftables chains: %w", err)
	}
	out := map[string]*nftables.Chain{}
	for _, ch := range all {
		if ch.Table.Name == TableName {
			out[ch.Name] = ch
		}
	}
	return out, nil
}

// NATRules returns every rule of banger's tables as text, "<chain>: <rule>"
// for the ip table and "bridge <chain>: <rule>" for the bridge table: the
// base chains in order, then the regular chains by name. Only banger's
// tables are read.
func (m *Manager) NATRules(ctx context.Context) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("opening nftables: %w", err)
	}
	out := []string{}
	for _, d := range tableDefs() {
		chains, err := ourChains(c, d.family)
		if err != nil {
			return nil, err
		}
		var names []string
		for _, ch := range d.base {
			names = append(names, ch.Name)
		}
		var rest []string
		for name := range chains {
			if !slices.Contains(names, name) {
				rest = append(rest, name)
			}
		}
		slices.Sort(rest)
		prefix := ""
		if d.family == nftables.TableFamilyBridge {
			prefix = "bridge "
		}
		for _, name := range append(names, rest...) {
			ch, ok := chains[name]
			if !ok {
				continue
			}
			rules, err := c.GetRules(ch.Table, ch)
			if err != nil {
				return nil, fmt.Errorf("listing rules of %s %s %s: %w", familyName(d.family), TableName, name, err)
			}
			for _, r := range rules {
				text := ruleComment(r)
				if text == "" {
					text = fmt.Sprintf("(rule without comment, handle %d)", r.Handle)
				}
				out = append(out, prefix+name+": "+strings.TrimPrefix(text, "banger: "))
			}
		}
	}
	return out, nil
}
