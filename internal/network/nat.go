package network

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
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
