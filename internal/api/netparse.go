package api

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// NetForms lists what --net accepts; errors about a policy end with it.
const NetForms = "--net takes nat (the default: whatever the host reaches), none (nothing beyond the bridge, " +
	"not even other VMs) or allow=DEST[,DEST...] where DEST is a HOST name, an IP or a CIDR, each optionally " +
	"with :PORT (e.g. allow=github.com,192.0.2.7:22,10.0.0.0/8:443)"

// MaxAllow bounds the destinations of one allow policy.
const MaxAllow = 64

// NetDest is one destination of an allow policy.
type NetDest struct {
	// Host is a host name (lowercase, no trailing dot), or "" for an
	// address or range.
	Host string
	// Prefix is the address (a /32) or range; invalid for a host name.
	Prefix netip.Prefix
	// Port limits the destination to one TCP and UDP port; 0: all.
	Port uint16
}

// String is d in --net syntax.
func (d NetDest) String() string {
	s := d.Host
	if s == "" {
		s = d.Prefix.String()
		if d.Prefix.IsSingleIP() {
			s = d.Prefix.Addr().String()
		}
	}
	if d.Port != 0 {
		s += ":" + strconv.Itoa(int(d.Port))
	}
	return s
}

// ParseNet reads a policy in --net syntax: "" or "nat", "none", or
// "allow=DEST[,DEST...]". The policy's Allow holds the destinations in
// their canonical form (ParseNetDest, then String), without duplicates.
// Errors name the bad part and end with NetForms.
func ParseNet(s string) (NetPolicy, error) {
	mode, list, hasList := strings.Cut(strings.TrimSpace(s), "=")
	switch {
	case (mode == "" || mode == NetNAT) && !hasList:
		return NetPolicy{Mode: NetNAT}, nil
	case mode == NetNone && !hasList:
		return NetPolicy{Mode: NetNone}, nil
	case mode != NetAllow:
		return NetPolicy{}, fmt.Errorf("--net %q: unknown policy; %s", s, NetForms)
	case strings.TrimSpace(list) == "":
		return NetPolicy{}, fmt.Errorf("--net %q: allow= needs at least one destination; %s", s, NetForms)
	}
	p := NetPolicy{Mode: NetAllow}
	seen := map[string]bool{}
	for _, part := range strings.Split(list, ",") {
		d, err := ParseNetDest(part)
		if err != nil {
			return NetPolicy{}, fmt.Errorf("--net %q: %w; %s", s, err, NetForms)
		}
		if c := d.String(); !seen[c] {
			seen[c] = true
			p.Allow = append(p.Allow, c)
		}
	}
	if len(p.Allow) > MaxAllow {
		return NetPolicy{}, fmt.Errorf("--net: %d destinations, at most %d are allowed (use a CIDR for a range)", len(p.Allow), MaxAllow)
	}
	return p, nil
}

// ParseNetDest reads one DEST of an allow policy: HOST, IP or CIDR, each
// optionally followed by :PORT.
func ParseNetDest(s string) (NetDest, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return NetDest{}, fmt.Errorf("empty destination")
	}
	if strings.Count(s, ":") > 1 || strings.HasPrefix(s, "[") {
		return NetDest{}, fmt.Errorf("destination %q: IPv6 is not supported (guests have IPv4 only)", s)
	}
	var d NetDest
	host, port, hasPort := strings.Cut(s, ":")
	if hasPort {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return NetDest{}, fmt.Errorf("destination %q: port %q must be a number from 1 to 65535", s, port)
		}
		d.Port = uint16(n)
	}
	if strings.Contains(host, "/") {
		p, err := netip.ParsePrefix(host)
		if err != nil || !p.Addr().Is4() {
			return NetDest{}, fmt.Errorf("destination %q: %q is not an IPv4 CIDR such as 10.0.0.0/8", s, host)
		}
		d.Prefix = p.Masked()
		return d, nil
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if !a.Is4() {
			return NetDest{}, fmt.Errorf("destination %q: IPv6 is not supported (guests have IPv4 only)", s)
		}
		d.Prefix = netip.PrefixFrom(a, 32)
		return d, nil
	}
	name, err := hostName(host)
	if err != nil {
		return NetDest{}, fmt.Errorf("destination %q: %w", s, err)
	}
	d.Host = name
	return d, nil
}

// hostName checks a DNS host name and returns it lowercased, without a
// trailing dot.
func hostName(s string) (string, error) {
	name := strings.ToLower(strings.TrimSuffix(s, "."))
	if name == "" || len(name) > 253 {
		return "", fmt.Errorf("%q is not a host name", s)
	}
	letters := false
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return "", fmt.Errorf("%q is not a host name (labels of 1 to 63 letters, digits, '-' or '_', not starting or ending with '-')", s)
		}
		for _, c := range label {
			switch {
			case c >= 'a' && c <= 'z', c == '_':
				letters = true
			case c >= '0' && c <= '9', c == '-':
			default:
				return "", fmt.Errorf("%q is not a host name: %q is not allowed in one", s, c)
			}
		}
	}
	if !letters {
		return "", fmt.Errorf("%q is neither an IPv4 address nor a host name", s)
	}
	return name, nil
}

// Dests parses the policy's Allow.
func (p NetPolicy) Dests() ([]NetDest, error) {
	out := make([]NetDest, 0, len(p.Allow))
	for _, s := range p.Allow {
		d, err := ParseNetDest(s)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

// EffectiveMode is p.Mode with the default filled in.
func (p NetPolicy) EffectiveMode() string {
	if p.Mode == "" {
		return NetNAT
	}
	return p.Mode
}

// String is the policy in --net syntax, plus " --isolate" when set.
func (p NetPolicy) String() string {
	s := p.EffectiveMode()
	if s == NetAllow {
		s += "=" + strings.Join(p.Allow, ",")
	}
	if p.Isolate {
		s += " --isolate"
	}
	return s
}
