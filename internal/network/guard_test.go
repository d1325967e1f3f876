package network

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// baseRules are NATRules of a Manager for 172.16.0.0/24 with no guests.
var baseRules = []string{
	"postrouting: ip saddr 172.16.0.0/24 oifname != banger0 masquerade",
	"postrouting: ip saddr 127.0.0.0/8 oifname banger0 masquerade",
	"martians: iifname banger0 ip daddr 127.0.0.0/8 drop",
	"prerouting: iifname banger0 return",
	"prerouting: jump forwards",
	"output: jump forwards",
	"forward: iifname banger0 oifname banger0 jump vm2vm",
	"forward: iifname banger0 oifname banger0 accept",
	"forward: iifname banger0 ct state established,related accept",
	"forward: oifname banger0 ct state established,related accept",
	"forward: iifname banger0 jump egress",
	"forward: iifname banger0 drop",
	"input: iifname banger0 ct state established,related accept",
	"input: iifname banger0 ip daddr 172.16.0.1 udp dport 53 accept",
	"input: iifname banger0 ip daddr 172.16.0.1 tcp dport 53 accept",
	"input: iifname banger0 ip daddr 172.16.0.1 icmp type echo-request accept",
	"input: iifname banger0 drop",
	"bridge prerouting: jump guests",
	"bridge prerouting: iifname bgtap* drop",
	"bridge forward: jump isolate",
}

// guestRules is how many rules a nat guest that is not isolated has.
const guestRules = 9

func setGuest(t *testing.T, host *testNS, m *Manager, g Guest) {
	t.Helper()
	host.must(t, "SetGuest "+g.VMID, func() error { return m.SetGuest(t.Context(), g) })
}

func mustContain(t *testing.T, what, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Fatalf("%s does not contain %q:\n%s", what, sub, s)
		}
	}
}

// policyWorld is a host namespace with banger's bridge and tables, an
// outside namespace serving HTTP at 198.51.100.2 (on the link), 192.0.2.10
// and 169.254.169.254 (both routed through it), and two guests.
type policyWorld struct {
	host, out   *testNS
	m           *Manager
	a, b        *testNS
	aIP, bIP    netip.Addr
	near, near2 string // two servers on 198.51.100.2
	far, meta   string // 192.0.2.10, 169.254.169.254
	gwHTTP      string // a host service on the bridge address
	gwDNS       string // the bridge address, tcp port 53
}

func newPolicyWorld(t *testing.T) *policyWorld {
	t.Helper()
	requireNetns(t)
	w := &policyWorld{host: newNS(t, "host"), out: newNS(t, "out"), m: testManager(t, nil)}
	requireThreadSysctl(t, w.host)
	ctx := t.Context()
	w.host.must(t, "EnsureBridge", func() error { return w.m.EnsureBridge(ctx) })
	w.host.must(t, "EnsureForwarding", func() error { _, err := w.m.EnsureForwarding(ctx); return err })
	w.host.must(t, "EnsureNAT", func() error { _, err := w.m.EnsureNAT(ctx); return err })
	w.host.ip(t, "link", "add", "wan0", "type", "veth", "peer", "name", "eth0", "netns", w.out.name)
	w.host.ip(t, "addr", "add", "198.51.100.1/24", "dev", "wan0")
	w.host.ip(t, "link", "set", "wan0", "up")
	w.host.ip(t, "route", "add", "192.0.2.10/32", "via", "198.51.100.2")
	w.host.ip(t, "route", "add", "169.254.169.254/32", "via", "198.51.100.2")
	w.out.ip(t, "addr", "add", "198.51.100.2/24", "dev", "eth0")
	w.out.ip(t, "addr", "add", "192.0.2.10/32", "dev", "lo")
	w.out.ip(t, "addr", "add", "169.254.169.254/32", "dev", "lo")
	w.out.ip(t, "link", "set", "eth0", "up")
	w.near = startEchoServer(t, w.out, "198.51.100.2:0")
	w.near2 = startEchoServer(t, w.out, "198.51.100.2:0")
	w.far = startEchoServer(t, w.out, "192.0.2.10:0")
	w.meta = startEchoServer(t, w.out, "169.254.169.254:0")
	w.gwHTTP = startEchoServer(t, w.host, "172.16.0.1:0")
	w.gwDNS = startEchoServer(t, w.host, "172.16.0.1:53")

	w.aIP, w.bIP = mustAddr(t, "172.16.0.2"), mustAddr(t, "172.16.0.3")
	w.a, w.b = newNS(t, "ga"), newNS(t, "gb")
	attachGuest(t, w.host, w.a, "vmnic0", w.m.GuestConfig(w.aIP, nil), "vm-a")
	attachGuest(t, w.host, w.b, "vmnic1", w.m.GuestConfig(w.bIP, nil), "vm-b")
	return w
}

func (w *policyWorld) guestA(e Egress, isolate bool, allow ...Dest) Guest {
	return Guest{VMID: "a", Tap: "vmnic0", IP: w.aIP, MAC: MACFor("vm-a"), Egress: e, Isolate: isolate, Allow: allow}
}

func (w *policyWorld) guestB() Guest {
	return Guest{VMID: "b", Tap: "vmnic1", IP: w.bIP, MAC: MACFor("vm-b")}
}

// reach checks whether guest ns, sending from from, gets an answer from
// addr: within 5 s when it should, and not within 1 s when it should not.
func reach(t *testing.T, what string, ns *testNS, from netip.Addr, addr string, want bool) {
	t.Helper()
	timeout := time.Second
	if want {
		timeout = 5 * time.Second
	}
	got, err := guestGet(ns, from, addr, timeout)
	switch {
	case want && err != nil:
		t.Errorf("%s: %s -> %s: %v, want an answer", what, from, addr, err)
	case !want && err == nil:
		t.Errorf("%s: %s -> %s answered (server saw %s), want it dropped", what, from, addr, got)
	}
}

// TestGuestPolicies runs each egress policy, isolation and the
// anti-spoofing checks against real traffic between namespaces.
func TestGuestPolicies(t *testing.T) {
	w := newPolicyWorld(t)
	ctx := t.Context()
	aSrv := startEchoServer(t, w.a, net.JoinHostPort(w.aIP.String(), "0"))
	bSrv := startEchoServer(t, w.b, net.JoinHostPort(w.bIP.String(), "0"))
	setGuest(t, w.host, w.m, w.guestB())

	t.Run("nat", func(t *testing.T) {
		setGuest(t, w.host, w.m, w.guestA(EgressNAT, false))
		reach(t, "nat: outside on the link", w.a, w.aIP, w.near, true)
		reach(t, "nat: routed outside", w.a, w.aIP, w.far, true)
		reach(t, "nat: metadata address", w.a, w.aIP, w.meta, false)
		reach(t, "nat: other guest", w.a, w.aIP, bSrv, true)
		reach(t, "nat: other guest back", w.b, w.bIP, aSrv, true)
		reach(t, "nat: host service on the bridge address", w.a, w.aIP, w.gwHTTP, false)
		reach(t, "nat: dns port on the bridge address", w.a, w.aIP, w.gwDNS, true)
	})
	t.Run("allow", func(t *testing.T) {
		setGuest(t, w.host, w.m, w.guestA(EgressAllow, false, Dest{Prefix: mustPrefix(t, "192.0.2.10/32")}))
		reach(t, "allow: the allowed address", w.a, w.aIP, w.far, true)
		reach(t, "allow: another address", w.a, w.aIP, w.near, false)
		reach(t, "allow: other guest", w.a, w.aIP, bSrv, true)
		_, port, _ := net.SplitHostPort(w.near)
		d, err := netip.ParseAddrPort("198.51.100.2:" + port)
		if err != nil {
			t.Fatal(err)
		}
		setGuest(t, w.host, w.m, w.guestA(EgressAllow, false, Dest{Prefix: mustPrefix(t, "198.51.100.0/24"), Port: d.Port()}))
		reach(t, "allow with port: that port", w.a, w.aIP, w.near, true)
		reach(t, "allow with port: another port", w.a, w.aIP, w.near2, false)
		reach(t, "allow with port: an address outside the range", w.a, w.aIP, w.far, false)
	})
	t.Run("none", func(t *testing.T) {
		setGuest(t, w.host, w.m, w.guestA(EgressNone, false))
		reach(t, "none: outside", w.a, w.aIP, w.near, false)
		reach(t, "none: routed outside", w.a, w.aIP, w.far, false)
		reach(t, "none: other guest", w.a, w.aIP, bSrv, false)
		reach(t, "none: from other guest", w.b, w.bIP, aSrv, false)
		reach(t, "none: dns port on the bridge address", w.a, w.aIP, w.gwDNS, true)
	})
	t.Run("isolate", func(t *testing.T) {
		setGuest(t, w.host, w.m, w.guestA(EgressNAT, true))
		reach(t, "isolated: outside", w.a, w.aIP, w.near, true)
		reach(t, "isolated: other guest", w.a, w.aIP, bSrv, false)
		reach(t, "isolated: from other guest", w.b, w.bIP, aSrv, false)
		setGuest(t, w.host, w.m, w.guestA(EgressNAT, false))
		reach(t, "isolation lifted: other guest", w.a, w.aIP, bSrv, true)
	})
	t.Run("spoofing", func(t *testing.T) {
		// Answers to a spoofed source go to its owner, so what counts is
		// what arrives: datagrams at sinks outside and in b.
		outSink := startUDPSink(t, w.out, "198.51.100.2:0")
		bSink := startUDPSink(t, w.b, net.JoinHostPort(w.bIP.String(), "0"))
		sends := func(what string, from netip.Addr, sink *udpSink, want bool) {
			t.Helper()
			marker := what + " " + from.String()
			sink.send(t, w.a, from, marker)
			if got := sink.saw(marker, want); got != want {
				t.Errorf("%s: datagram from %s to %s arrived = %v, want %v", what, from, sink.addr, got, want)
			}
		}
		sends("a as itself: outside", w.aIP, outSink, true)
		sends("a as itself: b", w.aIP, bSink, true)
		// a sends from b's address, then from one nobody holds.
		w.a.ip(t, "addr", "add", w.bIP.String()+"/32", "dev", "eth0")
		sends("a as b: outside", w.bIP, outSink, false)
		reach(t, "a as b: the bridge's dns", w.a, w.bIP, w.gwDNS, false)
		w.a.ip(t, "addr", "del", w.bIP.String()+"/32", "dev", "eth0")
		other := mustAddr(t, "172.16.0.77")
		w.a.ip(t, "addr", "add", other.String()+"/32", "dev", "eth0")
		sends("a as .77: b", other, bSink, false)
		sends("a as .77: outside", other, outSink, false)
		w.a.ip(t, "addr", "del", other.String()+"/32", "dev", "eth0")
		// a with b's MAC: nothing it sends passes (nor does the bridge
		// learn b's MAC on a's port).
		w.a.ip(t, "link", "set", "eth0", "address", MACFor("vm-b").String())
		// The change flushed a's neighbours; with the gateway's and b's
		// given, a's frames go out without ARP (which would be dropped
		// for its sender MAC).
		w.a.ip(t, "neigh", "replace", "172.16.0.1", "lladdr", MACFor("bridge:banger0").String(), "dev", "eth0")
		w.a.ip(t, "neigh", "replace", w.bIP.String(), "lladdr", MACFor("vm-b").String(), "dev", "eth0")
		sends("a with b's mac: outside", w.aIP, outSink, false)
		sends("a with b's mac: b", w.aIP, bSink, false)
		reach(t, "b while a claims its mac: outside", w.b, w.bIP, w.near, true)
		w.a.ip(t, "link", "set", "eth0", "address", MACFor("vm-a").String())
		reach(t, "a itself again: outside", w.a, w.aIP, w.near, true)
	})
	t.Run("remove and sync", func(t *testing.T) {
		var rules []string
		w.host.must(t, "RemoveGuest", func() error { return w.m.RemoveGuest(ctx, "a") })
		w.host.must(t, "NATRules", func() (err error) { rules, err = w.m.NATRules(ctx); return err })
		if len(rules) != len(baseRules)+guestRules || strings.Contains(strings.Join(rules, "\n"), "vm a:") {
			t.Errorf("rules after RemoveGuest(a):\n%s", strings.Join(rules, "\n"))
		}
		reach(t, "a without rules: outside", w.a, w.aIP, w.near, false)
		w.host.must(t, "RemoveGuest again", func() error { return w.m.RemoveGuest(ctx, "a") })
		w.host.must(t, "SyncGuests", func() error { return w.m.SyncGuests(ctx, []Guest{w.guestA(EgressNAT, false)}) })
		var ids map[string]bool
		w.host.must(t, "GuestIDs", func() (err error) { ids, err = w.m.GuestIDs(ctx); return err })
		if diff := cmp.Diff(map[string]bool{"a": true}, ids); diff != "" {
			t.Errorf("guests after SyncGuests([a]) (-want +got):\n%s", diff)
		}
		reach(t, "a after sync: outside", w.a, w.aIP, w.near, true)
		reach(t, "b after sync (no rules): outside", w.b, w.bIP, w.near, false)
		table := w.host.exec(t, "nft", "list", "ruleset")
		w.host.exec(t, "nft", "-c", table) // the listing is valid nft input
	})
}

// udpSink records the datagrams that reach it.
type udpSink struct {
	addr string
	got  chan string
}

func startUDPSink(t *testing.T, ns *testNS, addr string) *udpSink {
	t.Helper()
	var pc net.PacketConn
	ns.must(t, "listen udp "+addr, func() (err error) { pc, err = net.ListenPacket("udp", addr); return err })
	t.Cleanup(func() { pc.Close() })
	s := &udpSink{addr: pc.LocalAddr().String(), got: make(chan string, 64)}
	go func() {
		buf := make([]byte, 512)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			s.got <- string(buf[:n])
		}
	}()
	return s
}

// send sends marker to the sink three times from a socket made in ns and
// bound to from.
func (s *udpSink) send(t *testing.T, ns *testNS, from netip.Addr, marker string) {
	t.Helper()
	ns.must(t, "send udp", func() error {
		c, err := net.DialUDP("udp", &net.UDPAddr{IP: from.AsSlice()}, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(s.addr)))
		if err != nil {
			return err
		}
		defer c.Close()
		for range 3 {
			c.Write([]byte(marker))
			time.Sleep(50 * time.Millisecond)
		}
		return nil
	})
}

// saw reports whether marker arrived: within 3 s when expected, else
// within 1 s (a dropped datagram never comes).
func (s *udpSink) saw(marker string, expected bool) bool {
	wait := time.Second
	if expected {
		wait = 3 * time.Second
	}
	deadline := time.After(wait)
	for {
		select {
		case m := <-s.got:
			if m == marker {
				return true
			}
		case <-deadline:
			return false
		}
	}
}
