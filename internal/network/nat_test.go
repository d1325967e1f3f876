package network

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// requireThreadSysctl fails unless /proc/sys read from a thread inside ns
// shows ns's values, so EnsureForwarding cannot write the host's.
func requireThreadSysctl(t *testing.T, ns *testNS) {
	t.Helper()
	ns.exec(t, "sysctl", "-q", "-w", "net.ipv4.ip_default_ttl=33")
	var got string
	ns.must(t, "read ttl", func() error {
		b, err := os.ReadFile("/proc/sys/net/ipv4/ip_default_ttl")
		got = strings.TrimSpace(string(b))
		return err
	})
	if got != "33" {
		t.Fatalf("/proc/sys from a thread in %s shows ttl %s, want 33: refusing to touch sysctls", ns.name, got)
	}
}

// TestNATGuestReachesOutside builds three namespaces: "host" runs the
// Manager (bridge, forwarding, NAT); "outside" is the world, reached by a
// veth at 198.51.100.0/24 (TEST-NET-2) and serving HTTP; "guest" is a VM
// NIC: a veth whose host end is on the bridge, with an allocated address.
// Without NAT the guest cannot reach the server (the outside has no route
// back); with it the server sees the host's veth address.
func TestNATGuestReachesOutside(t *testing.T) {
	requireNetns(t)
	hostFwd := hostForwarding(t)
	host, outside, guest := newNS(t, "host"), newNS(t, "out"), newNS(t, "guest")
	requireThreadSysctl(t, host)
	m := testManager(t, nil)
	ctx := t.Context()

	ns := host
	ns.must(t, "EnsureBridge", func() error { return m.EnsureBridge(ctx) })
	checkEnsureForwarding(t, host, m)
	if got := hostForwarding(t); got != hostFwd {
		t.Fatalf("host ip_forward changed from %s to %s", hostFwd, got)
	}

	// The outside world.
	host.ip(t, "link", "add", "wan0", "type", "veth", "peer", "name", "eth0", "netns", outside.name)
	host.ip(t, "addr", "add", "198.51.100.1/24", "dev", "wan0")
	host.ip(t, "link", "set", "wan0", "up")
	outside.ip(t, "addr", "add", "198.51.100.2/24", "dev", "eth0")
	outside.ip(t, "link", "set", "eth0", "up")

	// The guest: address from the allocator, default route via the bridge.
	gaddr, err := m.Allocate(map[netip.Addr]bool{})
	if err != nil {
		t.Fatal(err)
	}
	gc := m.GuestConfig(gaddr, nil)
	attachGuest(t, host, guest, "vmnic0", gc, "vm-guest")

	srvAddr := startEchoServer(t, outside, "198.51.100.2:0")

	// The guest reaches the bridge IP (its gateway) directly.
	gwAddr := startEchoServer(t, host, net.JoinHostPort(gc.Gateway.String(), "0"))
	if got, err := guestGet(guest, gaddr, gwAddr, 5*time.Second); err != nil || got != gaddr.String() {
		t.Fatalf("guest -> gateway %s: got %q, %v; want it to see %s", gwAddr, got, err, gaddr)
	}
	// Before NAT: no way back from the outside.
	if got, err := guestGet(guest, gaddr, srvAddr, 2*time.Second); err == nil {
		t.Fatalf("guest reached %s without NAT (server saw %s)", srvAddr, got)
	}
	for i, want := range []bool{true, false} {
		ns.must(t, "EnsureNAT", func() error {
			changed, err := m.EnsureNAT(ctx)
			if changed != want {
				t.Errorf("EnsureNAT call %d changed = %v, want %v", i+1, changed, want)
			}
			return err
		})
	}
	// With the tables in place, traffic from the bridge is dropped until
	// the guest has rules of its own.
	if got, err := guestGet(guest, gaddr, srvAddr, time.Second); err == nil {
		t.Fatalf("guest without rules reached %s (server saw %s)", srvAddr, got)
	}
	setGuest(t, host, m, Guest{VMID: "vm-guest", Tap: "vmnic0", IP: gaddr, MAC: MACFor("vm-guest")})
	got, err := guestGet(guest, gaddr, srvAddr, 5*time.Second)
	if err != nil {
		t.Fatalf("guest -> %s through NAT: %v\n%s", srvAddr, err, host.exec(t, "nft", "list", "ruleset"))
	}
	if got != "198.51.100.1" {
		t.Fatalf("server saw the guest as %s, want the masquerade address 198.51.100.1", got)
	}
	t.Logf("guest %s reached %s; server saw %s", gaddr, srvAddr, got)

	checkSecondGuest(t, host, guest, m, gaddr, srvAddr)
	checkInspect(t, host, m)
}

// checkSecondGuest attaches a second VM with the next address: it talks
// to the first one directly (traffic inside the bridge is not
// masqueraded) and reaches the outside through the masquerade.
func checkSecondGuest(t *testing.T, host, guest *testNS, m *Manager, gaddr netip.Addr, srvAddr string) {
	t.Helper()
	g2addr, err := m.Allocate(map[netip.Addr]bool{gaddr: true})
	if err != nil {
		t.Fatal(err)
	}
	guest2 := newNS(t, "guest2")
	attachGuest(t, host, guest2, "vmnic1", m.GuestConfig(g2addr, nil), "vm-guest2")
	setGuest(t, host, m, Guest{VMID: "vm-guest2", Tap: "vmnic1", IP: g2addr, MAC: MACFor("vm-guest2")})
	g1srv := startEchoServer(t, guest, net.JoinHostPort(gaddr.String(), "0"))
	if got, err := guestGet(guest2, g2addr, g1srv, 5*time.Second); err != nil || got != g2addr.String() {
		t.Fatalf("guest2 %s -> guest %s: got %q, %v; want the peer to see %s", g2addr, g1srv, got, err, g2addr)
	}
	if got, err := guestGet(guest2, g2addr, srvAddr, 5*time.Second); err != nil || got != "198.51.100.1" {
		t.Fatalf("guest2 -> outside: got %q, %v; want 198.51.100.1", got, err)
	}
	t.Logf("guest2 %s reached guest %s directly and the outside through NAT", g2addr, gaddr)
}

// checkInspect acquires a tap and checks Inspect shows the whole setup.
func checkInspect(t *testing.T, host *testNS, m *Manager) {
	t.Helper()
	var tap string
	host.must(t, "AcquireTap", func() (err error) { tap, err = m.AcquireTap(t.Context(), "vm-guest"); return err })
	var info Info
	host.must(t, "Inspect", func() (err error) { info, err = m.Inspect(t.Context()); return err })
	b, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("inspect: %s", b)
	want := BridgeInfo{Name: "banger0", IP: mustAddr(t, "172.16.0.1"), CIDR: mustPrefix(t, "172.16.0.0/24"),
		Exists: true, State: "up", Up: true, MAC: MACFor("bridge:banger0").String(), Addrs: []string{"172.16.0.1/24"}}
	if diff := cmp.Diff(want, info.Bridge, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
		cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("Inspect bridge (-want +got):\n%s", diff)
	}
	if len(info.Taps) != 1 || info.Taps[0].Name != tap || info.Taps[0].VMID != "vm-guest" {
		t.Errorf("Inspect taps = %+v, want %s of vm-guest", info.Taps, tap)
	}
	if !info.Forwarding || len(info.NATRules) != len(baseRules)+2*guestRules || len(info.Warnings) != 0 {
		t.Errorf("Inspect = %s", b)
	}
}

// checkEnsureForwarding runs EnsureForwarding twice in ns: the first call
// turns forwarding on, the second finds it on.
func checkEnsureForwarding(t *testing.T, ns *testNS, m *Manager) {
	t.Helper()
	for i, want := range []bool{true, false} {
		ns.must(t, "EnsureForwarding", func() error {
			changed, err := m.EnsureForwarding(t.Context())
			if changed != want {
				t.Errorf("EnsureForwarding call %d changed = %v, want %v", i+1, changed, want)
			}
			return err
		})
	}
	if got := strings.TrimSpace(ns.exec(t, "cat", "/proc/sys/net/ipv4/ip_forward")); got != "1" {
		t.Fatalf("ip_forward in %s = %s, want 1", ns.name, got)
	}
}

// attachGuest plays a VM NIC: a veth from host's bridge into guest, where
// eth0 gets the VM's MAC, address and default route.
func attachGuest(t *testing.T, host, guest *testNS, hostEnd string, gc GuestConfig, vmID string) {
	t.Helper()
	host.ip(t, "link", "add", hostEnd, "type", "veth", "peer", "name", "eth0", "netns", guest.name)
	host.ip(t, "link", "set", hostEnd, "master", "banger0", "up")
	guest.ip(t, "link", "set", "eth0", "address", MACFor(vmID).String())
	guest.ip(t, "addr", "add", gc.Address.String(), "dev", "eth0")
	guest.ip(t, "link", "set", "eth0", "up")
	guest.ip(t, "route", "add", "default", "via", gc.Gateway.String())
}

// startEchoServer serves HTTP on addr inside ns (the listening socket is
// made there) and answers each request with the client's IP.
func startEchoServer(t *testing.T, ns *testNS, addr string) string {
	t.Helper()
	var ln net.Listener
	ns.must(t, "listen "+addr, func() (err error) { ln, err = net.Listen("tcp", addr); return err })
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		fmt.Fprint(w, host)
	}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// guestGet sends GET / to addr from a socket made inside the guest
// namespace and bound to the guest's address (so it can never leave from
// another namespace), and returns the body.
func guestGet(guest *testNS, from netip.Addr, addr string, timeout time.Duration) (string, error) {
	var conn net.Conn
	err := guest.do(func() (err error) {
		d := net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{IP: from.AsSlice()}}
		conn, err = d.Dial("tcp", addr)
		return err
	})
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(conn, "GET / HTTP/1.0\r\nHost: outside\r\n\r\n"); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return string(body), err
}

// TestEnsureNATNoDuplicates runs EnsureNAT twice and with a changed cidr,
// reading the table back with nft: exactly the wanted rules, and another
// table's rules untouched.
func TestEnsureNATNoDuplicates(t *testing.T) {
	requireNetns(t)
	ns := newNS(t, "nft")
	ns.exec(t, "nft", "add table ip other; add chain ip other xfwd { type filter hook forward priority 10; policy drop; }; add rule ip other xfwd counter accept")
	other := ns.exec(t, "nft", "list", "table", "ip", "other")
	m := testManager(t, nil)
	ctx := t.Context()
	for range 2 {
		ns.must(t, "EnsureNAT", func() error { _, err := m.EnsureNAT(ctx); return err })
	}
	table := ns.exec(t, "nft", "list", "table", "ip", TableName)
	t.Logf("nft list table ip banger:\n%s", table)
	var ruleLines []string
	for line := range strings.Lines(table) {
		if strings.Contains(line, "comment") {
			ruleLines = append(ruleLines, strings.TrimSpace(line))
		}
	}
	wantLines := []string{
		`ip saddr 172.16.0.0/24 oifname != "banger0" masquerade comment "banger: ip saddr 172.16.0.0/24 oifname != banger0 masquerade"`,
		`ip saddr 127.0.0.0/8 oifname "banger0" masquerade comment "banger: ip saddr 127.0.0.0/8 oifname banger0 masquerade"`,
		`iifname "banger0" ip daddr 127.0.0.0/8 drop comment "banger: iifname banger0 ip daddr 127.0.0.0/8 drop"`,
		`iifname "banger0" return comment "banger: iifname banger0 return"`,
		`jump forwards comment "banger: jump forwards"`,
		`jump forwards comment "banger: jump forwards"`,
		`iifname "banger0" oifname "banger0" jump vm2vm comment "banger: iifname banger0 oifname banger0 jump vm2vm"`,
		`iifname "banger0" oifname "banger0" accept comment "banger: iifname banger0 oifname banger0 accept"`,
		`iifname "banger0" ct state established,related accept comment "banger: iifname banger0 ct state established,related accept"`,
		`oifname "banger0" ct state established,related accept comment "banger: oifname banger0 ct state established,related accept"`,
		`iifname "banger0" jump egress comment "banger: iifname banger0 jump egress"`,
		`iifname "banger0" drop comment "banger: iifname banger0 drop"`,
		`iifname "banger0" ct state established,related accept comment "banger: iifname banger0 ct state established,related accept"`,
		`iifname "banger0" ip daddr 172.16.0.1 udp dport 53 accept comment "banger: iifname banger0 ip daddr 172.16.0.1 udp dport 53 accept"`,
		`iifname "banger0" ip daddr 172.16.0.1 tcp dport 53 accept comment "banger: iifname banger0 ip daddr 172.16.0.1 tcp dport 53 accept"`,
		`iifname "banger0" ip daddr 172.16.0.1 icmp type echo-request accept comment "banger: iifname banger0 ip daddr 172.16.0.1 icmp type echo-request accept"`,
		`iifname "banger0" drop comment "banger: iifname banger0 drop"`,
	}
	if diff := cmp.Diff(wantLines, ruleLines); diff != "" {
		t.Errorf("rules in the table after two EnsureNAT (-want +got):\n%s", diff)
	}
	bridge := ns.exec(t, "nft", "list", "table", "bridge", TableName)
	t.Logf("nft list table bridge banger:\n%s", bridge)
	mustContain(t, "bridge table", bridge, `jump guests comment "banger: jump guests"`,
		`iifname "bgtap*" drop comment "banger: iifname bgtap* drop"`, `jump isolate comment "banger: jump isolate"`)
	ns.exec(t, "nft", "-c", bridge)
	// The listing is valid nft input (no quotes inside comments).
	ns.exec(t, "nft", "-c", table)

	// A new cidr replaces the old rule rather than adding beside it.
	m2 := testManager(t, func(c *Config) {
		c.CIDR = mustPrefix(t, "10.200.3.0/24")
		c.BridgeIP = mustAddr(t, "10.200.3.1")
	})
	var rules []string
	ns.must(t, "EnsureNAT new cidr", func() error { _, err := m2.EnsureNAT(ctx); return err })
	ns.must(t, "NATRules", func() (err error) { rules, err = m2.NATRules(ctx); return err })
	wantRules := append([]string{"postrouting: ip saddr 10.200.3.0/24 oifname != banger0 masquerade"}, baseRules[1:]...)
	for i, r := range wantRules {
		wantRules[i] = strings.ReplaceAll(r, "172.16.0.1", "10.200.3.1")
	}
	if diff := cmp.Diff(wantRules, rules); diff != "" {
		t.Errorf("NATRules (-want +got):\n%s", diff)
	}
	if got := ns.exec(t, "nft", "list", "table", "ip", "other"); got != other {
		t.Errorf("table other changed:\nbefore %s\nafter %s", other, got)
	}
	var info Info
	ns.must(t, "Inspect", func() (err error) { info, err = m2.Inspect(ctx); return err })
	if !strings.Contains(strings.Join(info.Warnings, "\n"), "chain xfwd in table ip other has policy drop") {
		t.Errorf("Inspect warnings %q do not mention the dropping forward chain", info.Warnings)
	}
	ns.must(t, "RemoveNAT", func() error { return m2.RemoveNAT(ctx) })
	if out := ns.exec(t, "nft", "list", "tables"); strings.Contains(out, TableName) || !strings.Contains(out, "other") {
		t.Errorf("tables after RemoveNAT: %s", out)
	}
}

// TestSetupIdempotent runs Setup twice: the second run changes nothing
// (same links, same ruleset, same forwarding).
func TestSetupIdempotent(t *testing.T) {
	requireNetns(t)
	hostFwd := hostForwarding(t)
	ns := newNS(t, "setup")
	requireThreadSysctl(t, ns)
	m := testManager(t, nil)
	snapshot := func() string {
		return ns.ip(t, "-o", "link") + ns.ip(t, "-o", "addr") + ns.exec(t, "nft", "list", "ruleset") +
			ns.exec(t, "cat", "/proc/sys/net/ipv4/ip_forward")
	}
	ns.must(t, "Setup", func() error { return m.Setup(t.Context()) })
	first := snapshot()
	ns.must(t, "Setup again", func() error { return m.Setup(t.Context()) })
	if second := snapshot(); second != first {
		t.Errorf("second Setup changed the namespace:\nfirst:\n%s\nsecond:\n%s", first, second)
	}
	var taps []Tap
	ns.must(t, "ListTaps", func() (err error) { taps, err = m.ListTaps(t.Context()); return err })
	if len(taps) != 2 || !taps[0].Pool || !taps[1].Pool {
		t.Errorf("taps after Setup = %+v, want 2 spares", taps)
	}
	if got := hostForwarding(t); got != hostFwd {
		t.Fatalf("host ip_forward changed from %s to %s", hostFwd, got)
	}
}
