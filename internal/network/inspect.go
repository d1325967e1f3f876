package network

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// Info is what `banger network inspect` shows. It marshals to stable JSON.
type Info struct {
	Bridge     BridgeInfo `json:"bridge"`
	Taps       []Tap      `json:"taps"`
	NATRules   []string   `json:"nat_rules"`
	Forwarding bool       `json:"ip_forward"`
	Warnings   []string   `json:"warnings,omitempty"`
}

// BridgeInfo describes banger's bridge as configured and as found.
type BridgeInfo struct {
	Name    string       `json:"name"`
	IP      netip.Addr   `json:"ip"`
	CIDR    netip.Prefix `json:"cidr"`
	Exists  bool         `json:"exists"`
	State   string       `json:"state,omitempty"` // operational state, e.g. "up"
	Up      bool         `json:"up"`              // administratively up
	MAC     string       `json:"mac,omitempty"`
	Addrs   []string     `json:"addrs,omitempty"` // IPv4 addresses found on it
	Problem string       `json:"problem,omitempty"`
}

// Inspect reports the bridge, taps, banger's NAT rules and forwarding. It
// changes nothing. A bridge name taken by a foreign link is reported in
// Bridge.Problem rather than as an error.
func (m *Manager) Inspect(ctx context.Context) (Info, error) {
	info := Info{Bridge: BridgeInfo{Name: m.cfg.BridgeName, IP: m.cfg.BridgeIP, CIDR: m.cfg.CIDR}}
	br, err := m.bridge()
	if err != nil {
		info.Bridge.Problem = err.Error()
	}
	if br != nil {
		if err := fillBridgeInfo(&info.Bridge, br); err != nil {
			return Info{}, err
		}
	}
	if info.Taps, err = m.ListTaps(ctx); err != nil {
		return Info{}, err
	}
	if info.NATRules, err = m.NATRules(ctx); err != nil {
		return Info{}, err
	}
	if info.Forwarding, err = m.Forwarding(); err != nil {
		return Info{}, err
	}
	if !info.Forwarding {
		info.Warnings = append(info.Warnings, "ip forwarding is off: guests cannot reach beyond the host")
	}
	w, err := m.forwardDropWarnings()
	if err != nil {
		return Info{}, err
	}
	info.Warnings = append(info.Warnings, w...)
	return info, nil
}

func fillBridgeInfo(bi *BridgeInfo, br netlink.Link) error {
	a := br.Attrs()
	bi.Exists = true
	bi.State = a.OperState.String()
	bi.Up = a.Flags&net.FlagUp != 0
	bi.MAC = hwString(a.HardwareAddr)
	addrs, err := netlink.AddrList(br, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("listing addresses of %s: %w", a.Name, err)
	}
	for _, ad := range addrs {
		bi.Addrs = append(bi.Addrs, ad.IPNet.String())
	}
	return nil
}

// hwString formats a MAC for Info; empty when the link has none.
func hwString(hw net.HardwareAddr) string {
	if len(hw) == 0 {
		return ""
	}
	return hw.String()
}
