package network

import (
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
)

// bridgeState captures what EnsureBridge may change.
type bridgeState struct {
	Index int
	Alias string
	MAC   string
	Up    bool
	Addrs []string
}

func readBridge(name string) (bridgeState, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return bridgeState{}, err
	}
	addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return bridgeState{}, err
	}
	s := bridgeState{Index: l.Attrs().Index, Alias: l.Attrs().Alias,
		MAC: l.Attrs().HardwareAddr.String(), Up: l.Attrs().Flags&net.FlagUp != 0}
	for _, a := range addrs {
		s.Addrs = append(s.Addrs, a.IPNet.String())
	}
	return s, nil
}

func TestEnsureBridgeIdempotent(t *testing.T) {
	requireNetns(t)
	_, err := netlink.LinkByName("banger0") // from this unlocked, host-namespace goroutine
	hadHostBridge := err == nil
	ns := newNS(t, "br")
	m := testManager(t, nil)
	ctx := t.Context()
	var first, second bridgeState
	ns.must(t, "first EnsureBridge", func() (err error) {
		if err = m.EnsureBridge(ctx); err != nil {
			return err
		}
		first, err = readBridge("banger0")
		return err
	})
	want := bridgeState{Index: first.Index, Alias: "banger", MAC: MACFor("bridge:banger0").String(),
		Up: true, Addrs: []string{"172.16.0.1/24"}}
	if diff := cmp.Diff(want, first); diff != "" {
		t.Fatalf("bridge after EnsureBridge (-want +got):\n%s", diff)
	}
	ns.must(t, "second EnsureBridge", func() (err error) {
		if err = m.EnsureBridge(ctx); err != nil {
			return err
		}
		second, err = readBridge("banger0")
		return err
	})
	if diff := cmp.Diff(first, second); diff != "" {
		t.Fatalf("second EnsureBridge changed the bridge (-first +second):\n%s", diff)
	}
	// A stale address (e.g. an earlier cidr) is replaced; a downed bridge
	// comes back up.
	ns.ip(t, "addr", "add", "10.9.9.1/24", "dev", "banger0")
	ns.ip(t, "link", "set", "banger0", "down")
	ns.must(t, "EnsureBridge repair", func() error { return m.EnsureBridge(ctx) })
	ns.must(t, "read", func() (err error) { second, err = readBridge("banger0"); return err })
	if diff := cmp.Diff(first, second); diff != "" {
		t.Fatalf("EnsureBridge did not repair the bridge (-want +got):\n%s", diff)
	}
	if !hadHostBridge {
		if _, err := netlink.LinkByName("banger0"); err == nil {
			t.Errorf("a banger0 link appeared in the host namespace")
		}
	}
}

func TestEnsureBridgeRefusesForeignLink(t *testing.T) {
	requireNetns(t)
	tests := []struct {
		name  string
		setup []string
	}{
		{name: "veth link", setup: []string{"link", "add", "banger0", "type", "veth", "peer", "name", "other0"}},
		{name: "bridge without banger's alias", setup: []string{"link", "add", "banger0", "type", "bridge"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := newNS(t, "foreign")
			ns.ip(t, tt.setup...)
			before := ns.ip(t, "-d", "addr", "show", "dev", "banger0")
			m := testManager(t, nil)
			err := ns.do(func() error { return m.EnsureBridge(t.Context()) })
			if !errors.Is(err, ErrNotOurs) {
				t.Fatalf("EnsureBridge = %v, want ErrNotOurs", err)
			}
			t.Logf("refused: %v", err)
			if !strings.Contains(err.Error(), "banger0") || !strings.Contains(err.Error(), "bridge_name") {
				t.Errorf("error %q should name the link and say to set bridge_name", err)
			}
			if after := ns.ip(t, "-d", "addr", "show", "dev", "banger0"); after != before {
				t.Errorf("link changed:\nbefore %s\nafter %s", before, after)
			}
		})
	}
}

func TestEnsureBridgeRefusesOverlap(t *testing.T) {
	requireNetns(t)
	ns := newNS(t, "overlap")
	ns.ip(t, "link", "add", "corp0", "type", "veth", "peer", "name", "corp1")
	ns.ip(t, "link", "set", "corp1", "up")
	ns.ip(t, "addr", "add", "172.16.4.5/16", "dev", "corp0")
	ns.ip(t, "link", "set", "corp0", "up")
	before := ns.ip(t, "-br", "link")
	m := testManager(t, nil)
	err := ns.do(func() error { return m.EnsureBridge(t.Context()) })
	if !errors.Is(err, ErrOverlap) {
		t.Fatalf("EnsureBridge = %v, want ErrOverlap", err)
	}
	t.Logf("refused: %v", err)
	for _, want := range []string{"172.16.0.0/16 dev corp0", `cidr = "10.200.0.0/24"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	if after := ns.ip(t, "-br", "link"); after != before {
		t.Errorf("links changed:\nbefore %s\nafter %s", before, after)
	}

	// The suggestion is taken in the same namespace and works.
	m2 := testManager(t, func(c *Config) {
		c.CIDR = mustPrefix(t, "10.200.0.0/24")
		c.BridgeIP = mustAddr(t, "10.200.0.1")
	})
	ns.must(t, "EnsureBridge with the suggested cidr", func() error { return m2.EnsureBridge(t.Context()) })
	// The bridge's own route does not count as an overlap on a rerun.
	ns.must(t, "EnsureBridge again", func() error { return m2.EnsureBridge(t.Context()) })
}
