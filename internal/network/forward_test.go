package network

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestForwards carries port forwards in the kernel between real
// namespaces: from the host's loopback and from another host to a guest,
// never from another guest; removing them ends them, their connections
// included, and leaves no rule.
func TestForwards(t *testing.T) {
	w := newPolicyWorld(t)
	ctx := t.Context()
	setGuest(t, w.host, w.m, w.guestA(EgressNone, false)) // forwards reach even a guest cut off from everything
	setGuest(t, w.host, w.m, w.guestB())
	web := startEchoServer(t, w.a, "172.16.0.2:8080")
	_ = web
	fw := []Forward{
		{Proto: "tcp", Host: netip.MustParseAddrPort("127.0.0.1:18080"), GuestPort: 8080},
		{Proto: "tcp", Host: netip.MustParseAddrPort("0.0.0.0:18081"), GuestPort: 8080},
		{Proto: "tcp", Host: netip.MustParseAddrPort("[::1]:18082"), GuestPort: 8080}, // userspace only
	}
	w.host.must(t, "SetForwards", func() error { return w.m.SetForwards(ctx, "a", w.aIP, fw) })
	w.host.must(t, "SetForwards again", func() error { return w.m.SetForwards(ctx, "a", w.aIP, fw) })

	var rules []string
	w.host.must(t, "NATRules", func() (err error) { rules, err = w.m.NATRules(ctx); return err })
	var ours []string
	for _, r := range rules {
		if strings.HasPrefix(r, "forwards: ") {
			ours = append(ours, r)
		}
	}
	want := []string{
		"forwards: fwd a: ip daddr 127.0.0.1 tcp dport 18080 dnat to 172.16.0.2:8080",
		"forwards: fwd a: fib daddr type local tcp dport 18081 dnat to 172.16.0.2:8080",
	}
	if !slices.Equal(ours, want) {
		t.Fatalf("forward rules:\n%s\nwant:\n%s", strings.Join(ours, "\n"), strings.Join(want, "\n"))
	}
	loop := mustAddr(t, "127.0.0.1")
	// From the host's loopback: the guest sees the bridge address.
	if got, err := guestGet(w.host, loop, "127.0.0.1:18080", 5*time.Second); err != nil || got != "172.16.0.1" {
		t.Fatalf("host -> 127.0.0.1:18080: %q, %v; want the guest to answer, seeing 172.16.0.1", got, err)
	}
	// From another host, to an address of this one, on the 0.0.0.0 forward
	// only: the guest sees the client.
	outIP := mustAddr(t, "198.51.100.2")
	if got, err := guestGet(w.out, outIP, "198.51.100.1:18081", 5*time.Second); err != nil || got != "198.51.100.2" {
		t.Fatalf("outside -> 198.51.100.1:18081: %q, %v; want the guest to answer, seeing 198.51.100.2", got, err)
	}
	reach(t, "outside to a loopback-only forward", w.out, outIP, "198.51.100.1:18080", false)
	// Another guest: not through the bridge address (guests reach the host
	// only for DNS), though it reaches the guest itself... unless that one
	// has no network, as here.
	reach(t, "guest b to a forward on the bridge address", w.b, w.bIP, "172.16.0.1:18081", false)

	// A connection open across the removal is ended with it.
	var conn net.Conn
	w.host.must(t, "dial", func() (err error) {
		conn, err = (&net.Dialer{Timeout: 5 * time.Second}).Dial("tcp", "127.0.0.1:18080")
		return err
	})
	defer conn.Close()
	w.host.must(t, "SetForwards none", func() error { return w.m.SetForwards(ctx, "a", w.aIP, nil) })
	conn.SetDeadline(time.Now().Add(3 * time.Second))
	conn.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
	if b := make([]byte, 64); true {
		if n, err := conn.Read(b); err == nil {
			t.Fatalf("a connection through a removed forward still answered: %q", b[:n])
		}
	}
	reach(t, "host after removal", w.host, loop, "127.0.0.1:18080", false)
	var ids map[string]bool
	w.host.must(t, "ForwardIDs", func() (err error) { ids, err = w.m.ForwardIDs(ctx); return err })
	if len(ids) != 0 {
		t.Fatalf("forward owners after removal: %v", ids)
	}
	w.host.must(t, "NATRules", func() (err error) { rules, err = w.m.NATRules(ctx); return err })
	for _, r := range rules {
		if strings.Contains(r, "dnat") {
			t.Fatalf("a forward rule is left: %s", r)
		}
	}
	// A guest's policy rewrite leaves another's forwards alone, and the
	// other way round.
	w.host.must(t, "SetForwards b", func() error { return w.m.SetForwards(ctx, "b", w.bIP, fw[:1]) })
	setGuest(t, w.host, w.m, w.guestB())
	w.host.must(t, "ForwardIDs", func() (err error) { ids, err = w.m.ForwardIDs(ctx); return err })
	if !ids["b"] || len(ids) != 1 {
		t.Fatalf("forward owners after a policy rewrite: %v", ids)
	}
}
