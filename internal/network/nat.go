package network

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// Chains of banger's table.
const (
	chainPostrouting = "postrouting"
	chainForward     = "forward"
)

// EnsureForwarding turns IPv4 forwarding on in the current network
// namespace when it is off, and reports whether it changed anything.
func (m *Manager) EnsureForwarding(ctx context.Context) (changed bool, err error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	on, err := m.Forwarding()
	if err != nil || on {
		return false, err
	}
	if err := os.WriteFile(m.forwardPath, []byte("1\n"), 0o644); err != nil {
		return false, fmt.Errorf("enabling ip forwarding: %w", err)
	}
	m.log.Info("ip forwarding enabled", "path", m.forwardPath)
	return true, nil
}

// Forwarding reports whether IPv4 forwarding is on.
func (m *Manager) Forwarding() (bool, error) {
	b, err := os.ReadFile(m.forwardPath)
	if err != nil {
		return false, fmt.Errorf("reading ip forwarding: %w", err)
	}
	return strings.TrimSpace(string(b)) == "1", nil
}

// natRule is one rule banger wants, identified by its comment: the rule in
// nft syntax, without quotes so that `nft list ruleset` output stays valid
// nft input.
type natRule struct {
	chain   string
	comment string
	exprs   []expr.Any
}

// wantedRules returns banger's rules for the configured bridge and cidr:
// masquerade of the cidr leaving by any other interface, and forward
// accepts for traffic from the bridge and replies to it.
func (m *Manager) wantedRules() []natRule {
	br, cidr := m.cfg.BridgeName, m.cfg.CIDR
	mask := net4(cidr.Bits())
	network := cidr.Addr().As4()
	return []natRule{
		{chain: chainPostrouting,
			comment: fmt.Sprintf("banger: ip saddr %s oifname != %s masquerade", cidr, br),
			exprs: []expr.Any{
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
				&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask[:], Xor: []byte{0, 0, 0, 0}},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: network[:]},
				&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
				&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname(br)},
				&expr.Masq{},
			}},
		{chain: chainForward,
			comment: fmt.Sprintf("banger: iifname %s accept", br),
			exprs: []expr.Any{
				&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(br)},
				&expr.Verdict{Kind: expr.VerdictAccept},
			}},
		{chain: chainForward,
			comment: fmt.Sprintf("banger: oifname %s ct state established,related accept", br),
			exprs: []expr.Any{
				&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(br)},
				&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
				&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
					Mask: native32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED), Xor: []byte{0, 0, 0, 0}},
				&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 0, 0, 0}},
				&expr.Verdict{Kind: expr.VerdictAccept},
			}},
	}
}

// chainOrder is the order chains are created and listed in.
var chainOrder = []string{chainPostrouting, chainForward}

// bangerTable and bangerChains describe banger's table; the forward chain
// accepts by default so it never drops what other tables allow.
func bangerTable() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyIPv4, Name: TableName}
}

func bangerChains(t *nftables.Table) map[string]*nftables.Chain {
	accept := nftables.ChainPolicyAccept
	return map[string]*nftables.Chain{
		chainPostrouting: {Name: chainPostrouting, Table: t, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource},
		chainForward: {Name: chainForward, Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept},
	}
}

// EnsureNAT makes banger's nftables table (family ip, name TableName) hold
// exactly the wanted rules: it adds what is missing and deletes duplicates
// and rules of an older configuration, in one transaction, and reports
// whether it changed anything. Other tables are never touched.
func (m *Manager) EnsureNAT(ctx context.Context) (changed bool, err error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	c, err := nftables.New()
	if err != nil {
		return false, fmt.Errorf("opening nftables: %w", err)
	}
	table := bangerTable()
	existing, err := m.ourChains(c)
	if err != nil {
		return false, err
	}
	if existing == nil {
		c.AddTable(table)
		changed = true
	}
	chains := bangerChains(table)
	have := map[string][]*nftables.Rule{}
	for _, name := range chainOrder {
		ch := chains[name]
		if _, ok := existing[name]; !ok {
			c.AddChain(ch)
			changed = true
			continue
		}
		if have[name], err = c.GetRules(table, ch); err != nil {
			return false, fmt.Errorf("listing rules of %s %s: %w", TableName, name, err)
		}
	}
	if m.syncRules(c, chains, have) {
		changed = true
	}
	if !changed {
		return false, nil
	}
	if err := c.Flush(); err != nil {
		return false, fmt.Errorf("writing nftables table %s: %w", TableName, err)
	}
	m.log.Info("nat rules updated", "table", TableName, "cidr", m.cfg.CIDR.String())
	return true, nil
}

// syncRules queues deletion of unwanted or duplicate rules and addition of
// missing ones; it reports whether it queued anything.
func (m *Manager) syncRules(c *nftables.Conn, chains map[string]*nftables.Chain, have map[string][]*nftables.Rule) bool {
	want := map[string]bool{}
	for _, r := range m.wantedRules() {
		want[r.chain+"\x00"+r.comment] = true
	}
	seen := map[string]bool{}
	queued := false
	for chain, rules := range have {
		for _, r := range rules {
			key := chain + "\x00" + ruleComment(r)
			if want[key] && !seen[key] {
				seen[key] = true
				continue
			}
			_ = c.DelRule(r) // only fails without a handle; listed rules have one
			queued = true
		}
	}
	for _, r := range m.wantedRules() {
		if seen[r.chain+"\x00"+r.comment] {
			continue
		}
		ch := chains[r.chain]
		c.AddRule(&nftables.Rule{Table: ch.Table, Chain: ch, Exprs: r.exprs,
			UserData: userdata.AppendString(nil, userdata.TypeComment, r.comment)})
		queued = true
	}
	return queued
}

// RemoveNAT deletes banger's table, if present.
func (m *Manager) RemoveNAT(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("opening nftables: %w", err)
	}
	existing, err := m.ourChains(c)
	if err != nil || existing == nil {
		return err
	}
	c.DelTable(bangerTable())
	if err := c.Flush(); err != nil {
		return fmt.Errorf("deleting nftables table %s: %w", TableName, err)
	}
	return nil
}

// ourChains returns the chains of banger's table by name, or nil when the
// table does not exist.
func (m *Manager) ourChains(c *nftables.Conn) (map[string]*nftables.Chain, error) {
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
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
	all, err := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
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

// NATRules returns banger's rules as text, "<chain>: <rule>", in chain
// order. Only banger's table is read.
func (m *Manager) NATRules(ctx context.Context) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("opening nftables: %w", err)
	}
	chains, err := m.ourChains(c)
	if err != nil {
		return nil, err
	}
	out := []string{}
	for _, name := range chainOrder {
		ch, ok := chains[name]
		if !ok {
			continue
		}
		rules, err := c.GetRules(ch.Table, ch)
		if err != nil {
			return nil, fmt.Errorf("listing rules of %s %s: %w", TableName, name, err)
		}
		for _, r := range rules {
			text := ruleComment(r)
			if text == "" {
				text = fmt.Sprintf("(rule without comment, handle %d)", r.Handle)
			}
			out = append(out, name+": "+strings.TrimPrefix(text, "banger: "))
		}
	}
	return out, nil
}

// forwardDropWarnings names base forward chains of other tables whose
// policy is drop: they drop guest traffic whatever banger's table accepts,
// and banger does not edit other tables.
func (m *Manager) forwardDropWarnings() ([]string, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("opening nftables: %w", err)
	}
	chains, err := c.ListChains()
	if err != nil {
		return nil, fmt.Errorf("listing nftables chains: %w", err)
	}
	var out []string
	for _, ch := range chains {
		if ch.Table.Name == TableName || ch.Hooknum == nil || *ch.Hooknum != *nftables.ChainHookForward {
			continue
		}
		if ch.Policy == nil || *ch.Policy != nftables.ChainPolicyDrop {
			continue
		}
		out = append(out, fmt.Sprintf("chain %s in table %s %s has policy drop: guests reach the outside only if it accepts "+
			"traffic from and to %s (with Docker: iptables -I DOCKER-USER -i %s -j ACCEPT and "+
			"iptables -I DOCKER-USER -o %s -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT)",
			ch.Name, familyName(ch.Table.Family), ch.Table.Name, m.cfg.BridgeName, m.cfg.BridgeName, m.cfg.BridgeName))
	}
	return out, nil
}

func familyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyIPv6:
		return "ip6"
	case nftables.TableFamilyINet:
		return "inet"
	case nftables.TableFamilyBridge:
		return "bridge"
	case nftables.TableFamilyARP:
		return "arp"
	case nftables.TableFamilyNetdev:
		return "netdev"
	}
	return fmt.Sprintf("family(%d)", f)
}

func ruleComment(r *nftables.Rule) string {
	s, _ := userdata.GetString(r.UserData, userdata.TypeComment)
	return s
}

// ifname returns name as nftables compares interface names: NUL padded to
// IFNAMSIZ.
func ifname(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

// net4 returns the IPv4 netmask of the given length in network order.
func net4(bits int) [4]byte {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], ^uint32(0)<<(32-bits))
	return b
}

func native32(v uint32) []byte {
	b := make([]byte, 4)
	binary.NativeEndian.PutUint32(b, v)
	return b
}
