package network

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func addrs(ss ...string) map[netip.Addr]bool {
	m := make(map[netip.Addr]bool, len(ss))
	for _, s := range ss {
		m[netip.MustParseAddr(s)] = true
	}
	return m
}

// fill marks every host of 172.16.0.0/24 from .2 to .254 as used.
func fillSlash24() map[netip.Addr]bool {
	m := map[netip.Addr]bool{}
	for a := netip.MustParseAddr("172.16.0.2"); a != netip.MustParseAddr("172.16.0.255"); a = a.Next() {
		m[a] = true
	}
	return m
}

func TestAllocate(t *testing.T) {
	p24 := netip.MustParsePrefix("172.16.0.0/24")
	gw := netip.MustParseAddr("172.16.0.1")
	tests := []struct {
		name    string
		cidr    netip.Prefix
		gw      netip.Addr
		inUse   map[netip.Addr]bool
		want    string
		wantErr string
	}{
		{name: "empty pool skips network and gateway", cidr: p24, gw: gw, want: "172.16.0.2"},
		{name: "sequential", cidr: p24, gw: gw, inUse: addrs("172.16.0.2", "172.16.0.3"), want: "172.16.0.4"},
		{name: "fragmentation takes the lowest hole", cidr: p24, gw: gw,
			inUse: addrs("172.16.0.2", "172.16.0.4", "172.16.0.5", "172.16.0.7"), want: "172.16.0.3"},
		{name: "reuse of a released address", cidr: p24, gw: gw,
			inUse: func() map[netip.Addr]bool {
				m := fillSlash24()
				delete(m, netip.MustParseAddr("172.16.0.77"))
				return m
			}(),
			want: "172.16.0.77"},
		{name: "last host before broadcast", cidr: p24, gw: gw,
			inUse: func() map[netip.Addr]bool {
				m := fillSlash24()
				delete(m, netip.MustParseAddr("172.16.0.254"))
				return m
			}(),
			want: "172.16.0.254"},
		{name: "gateway in the middle", cidr: p24, gw: netip.MustParseAddr("172.16.0.3"),
			inUse: addrs("172.16.0.1", "172.16.0.2"), want: "172.16.0.4"},
		{name: "exhausted /24", cidr: p24, gw: gw, inUse: fillSlash24(),
			wantErr: "all 253 addresses of 172.16.0.0/24 are in use; set a wider cidr in config.toml, e.g. 172.16.0.0/20"},
		{name: "/30 has one guest beside the gateway", cidr: netip.MustParsePrefix("10.0.0.4/30"),
			gw: netip.MustParseAddr("10.0.0.5"), want: "10.0.0.6"},
		{name: "/30 exhausted", cidr: netip.MustParsePrefix("10.0.0.4/30"),
			gw: netip.MustParseAddr("10.0.0.5"), inUse: addrs("10.0.0.6"),
			wantErr: "all 1 addresses of 10.0.0.4/30 are in use; set a wider cidr in config.toml, e.g. 10.0.0.0/26"},
		{name: "/31 uses both addresses", cidr: netip.MustParsePrefix("10.0.0.8/31"),
			gw: netip.MustParseAddr("10.0.0.8"), want: "10.0.0.9"},
		{name: "/31 exhausted", cidr: netip.MustParsePrefix("10.0.0.8/31"),
			gw: netip.MustParseAddr("10.0.0.8"), inUse: addrs("10.0.0.9"),
			wantErr: "all 1 addresses of 10.0.0.8/31 are in use; set a wider cidr in config.toml, e.g. 10.0.0.0/27"},
		{name: "unmasked cidr is masked", cidr: netip.MustParsePrefix("172.16.0.9/24"), gw: gw, want: "172.16.0.2"},
		{name: "addresses outside the cidr do not count", cidr: netip.MustParsePrefix("10.0.0.4/30"),
			gw: netip.MustParseAddr("10.0.0.5"), inUse: addrs("10.0.0.1", "10.0.0.9"), want: "10.0.0.6"},
		{name: "ipv6 refused", cidr: netip.MustParsePrefix("fd00::/64"), gw: netip.MustParseAddr("fd00::1"),
			wantErr: "must be an IPv4 prefix"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Allocate(tt.cidr, tt.gw, tt.inUse)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Allocate() error = %v, want containing %q", err, tt.wantErr)
				}
				if strings.HasPrefix(tt.wantErr, "all ") && !errors.Is(err, ErrExhausted) {
					t.Errorf("error %v does not wrap ErrExhausted", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Allocate() error = %v", err)
			}
			if got.String() != tt.want {
				t.Errorf("Allocate() = %s, want %s", got, tt.want)
			}
		})
	}
}

// TestAllocateFillsPool allocates until exhaustion, releasing one address in
// the middle, and checks every address is handed out exactly once.
func TestAllocateFillsPool(t *testing.T) {
	cidr := netip.MustParsePrefix("192.168.50.0/28")
	gw := netip.MustParseAddr("192.168.50.1")
	inUse := map[netip.Addr]bool{}
	for range 13 {
		a, err := Allocate(cidr, gw, inUse)
		if err != nil {
			t.Fatalf("Allocate() after %d: %v", len(inUse), err)
		}
		if inUse[a] || a == gw {
			t.Fatalf("Allocate() returned %s twice or the gateway", a)
		}
		inUse[a] = true
	}
	if _, err := Allocate(cidr, gw, inUse); !errors.Is(err, ErrExhausted) {
		t.Fatalf("Allocate() on a full /28 = %v, want ErrExhausted", err)
	}
	delete(inUse, netip.MustParseAddr("192.168.50.9"))
	if a, err := Allocate(cidr, gw, inUse); err != nil || a.String() != "192.168.50.9" {
		t.Fatalf("Allocate() after release = %v, %v; want 192.168.50.9", a, err)
	}
}

func TestMACFor(t *testing.T) {
	a, b := MACFor("vm-1"), MACFor("vm-1")
	if a.String() != b.String() {
		t.Fatalf("MACFor not deterministic: %s vs %s", a, b)
	}
	if MACFor("vm-2").String() == a.String() {
		t.Fatalf("MACFor(vm-1) == MACFor(vm-2) = %s", a)
	}
	if len(a) != 6 || a[0]&0x01 != 0 || a[0]&0x02 == 0 {
		t.Fatalf("MACFor = %s: want 6 bytes, unicast, locally administered", a)
	}
}
