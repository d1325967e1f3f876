package guestdns

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/miekg/dns"
)

// upstream serves a tiny zone on 127.0.0.1 (UDP and TCP on one port):
// a.test A 192.0.2.10 (ttl 30), alias.test CNAME a.test (ttl 5), and
// NXDOMAIN for the rest. It counts the questions it gets.
type upstream struct {
	addr string
	mu   sync.Mutex
	asks []string
}

func startUpstream(t *testing.T) *upstream {
	t.Helper()
	u := &upstream{}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		q := r.Question[0]
		q.Name = strings.ToLower(q.Name)
		u.mu.Lock()
		u.asks = append(u.asks, q.Name)
		u.mu.Unlock()
		m := new(dns.Msg)
		m.SetReply(r)
		a := func(name string, ttl uint32) dns.RR {
			rr, _ := dns.NewRR(fmt.Sprintf("%s %d IN A 192.0.2.10", name, ttl))
			return rr
		}
		switch {
		case q.Name == "a.test." && q.Qtype == dns.TypeA:
			m.Answer = []dns.RR{a("a.test.", 30)}
		case q.Name == "alias.test." && q.Qtype == dns.TypeA:
			cn, _ := dns.NewRR("alias.test. 5 IN CNAME a.test.")
			m.Answer = []dns.RR{cn, a("a.test.", 30)}
		case q.Name == "a.test." || q.Name == "alias.test.":
		default:
			m.Rcode = dns.RcodeNameError
		}
		w.WriteMsg(m)
	})
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	u.addr = pc.LocalAddr().String()
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}} {
		go srv.ActivateAndServe()
		t.Cleanup(func() { srv.Shutdown() })
	}
	return u
}

type answer struct {
	VM, Name string
	Addrs    []netip.Addr
	TTL      time.Duration
}

// startServer runs a Server on 127.0.0.1 forwarding to up, recording
// what it hands OnAnswer.
func startServer(t *testing.T, up string) (*Server, string, func() []answer) {
	t.Helper()
	var mu sync.Mutex
	var got []answer
	s := &Server{Upstreams: []string{up}, OnAnswer: func(vm, name string, addrs []netip.Addr, ttl time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, answer{vm, name, addrs, ttl})
	}}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	s.Serve(pc, ln)
	t.Cleanup(s.Close)
	return s, pc.LocalAddr().String(), func() []answer {
		mu.Lock()
		defer mu.Unlock()
		out := got
		got = nil
		return out
	}
}

func ask(t *testing.T, server, network, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.SetEdns0(1232, false)
	c := &dns.Client{Net: network, Timeout: 3 * time.Second}
	r, _, err := c.Exchange(m, server)
	if err != nil {
		t.Fatalf("asking %s for %s over %s: %v", server, name, network, err)
	}
	return r
}

var localhost = netip.MustParseAddr("127.0.0.1")

func TestServerPolicies(t *testing.T) {
	up := startUpstream(t)
	s, addr, answers := startServer(t, up.addr)
	rcode := func(network, name string) int { return ask(t, addr, network, name, dns.TypeA).Rcode }

	// Not a guest: refused, with the reason.
	r := ask(t, addr, "udp", "a.test.", dns.TypeA)
	if r.Rcode != dns.RcodeRefused || !strings.Contains(r.String(), "not a banger guest") {
		t.Errorf("question from an unknown address:\n%s", r)
	}

	s.SetGuest(localhost, "vm1", Policy{All: true})
	for _, network := range []string{"udp", "tcp"} {
		r := ask(t, addr, network, "A.Test.", dns.TypeA)
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
			t.Errorf("nat guest, %s, a.test:\n%s", network, r)
		}
		if got := rcode(network, "nope.test."); got != dns.RcodeNameError {
			t.Errorf("nat guest, %s, nope.test: rcode %s, want NXDOMAIN from upstream", network, dns.RcodeToString[got])
		}
	}
	if got := answers(); len(got) != 0 {
		t.Errorf("OnAnswer heard %v for a nat guest, want nothing", got)
	}

	s.SetGuest(localhost, "vm1", Policy{Names: []string{"alias.test"}})
	r = ask(t, addr, "udp", "alias.test.", dns.TypeA)
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 2 {
		t.Errorf("allow guest, alias.test:\n%s", r)
	}
	want := []answer{{"vm1", "alias.test", []netip.Addr{netip.MustParseAddr("192.0.2.10")}, 5 * time.Second}}
	if diff := cmp.Diff(want, answers(), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("OnAnswer (-want +got):\n%s", diff)
	}
	if got := ask(t, addr, "udp", "alias.test.", dns.TypeAAAA).Rcode; got != dns.RcodeSuccess {
		t.Errorf("allow guest, AAAA of an allowed name: %s, want NOERROR", dns.RcodeToString[got])
	}
	up.mu.Lock()
	before := len(up.asks)
	up.mu.Unlock()
	for _, name := range []string{"a.test.", "nope.test.", "sub.alias.test."} {
		r := ask(t, addr, "udp", name, dns.TypeA)
		if r.Rcode != dns.RcodeRefused || !strings.Contains(r.String(), "allow list") {
			t.Errorf("allow guest, %s:\n%s", name, r)
		}
	}
	up.mu.Lock()
	if len(up.asks) != before {
		t.Errorf("refused names reached the upstream: %v", up.asks[before:])
	}
	up.mu.Unlock()

	s.SetGuest(localhost, "vm1", Policy{})
	if got := rcode("tcp", "alias.test."); got != dns.RcodeRefused {
		t.Errorf("none guest: %s, want REFUSED", dns.RcodeToString[got])
	}
	s.RemoveGuest(localhost)
	if got := rcode("udp", "a.test."); got != dns.RcodeRefused {
		t.Errorf("removed guest: %s, want REFUSED", dns.RcodeToString[got])
	}
}

func TestServerUpstreamDown(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0") // never answers
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	up := startUpstream(t)
	s, addr, _ := startServer(t, pc.LocalAddr().String())
	s.Timeout = 300 * time.Millisecond
	s.SetGuest(localhost, "vm1", Policy{All: true})
	if got := ask(t, addr, "udp", "a.test.", dns.TypeA).Rcode; got != dns.RcodeServerFailure {
		t.Errorf("with a dead upstream: %s, want SERVFAIL", dns.RcodeToString[got])
	}
	s.Upstreams = []string{pc.LocalAddr().String(), up.addr}
	if got := ask(t, addr, "udp", "a.test.", dns.TypeA).Rcode; got != dns.RcodeSuccess {
		t.Errorf("with a dead upstream, then a live one: %s, want NOERROR", dns.RcodeToString[got])
	}
}

func TestLookup(t *testing.T) {
	up := startUpstream(t)
	ctx := t.Context()
	addrs, ttl, err := Lookup(ctx, []string{up.addr}, "alias.test")
	if err != nil || len(addrs) != 1 || addrs[0] != netip.MustParseAddr("192.0.2.10") || ttl != 5*time.Second {
		t.Errorf("Lookup(alias.test) = %v, %v, %v", addrs, ttl, err)
	}
	for _, name := range []string{"nope.test"} {
		if _, _, err := Lookup(ctx, []string{up.addr}, name); err == nil || !strings.Contains(err.Error(), "does not resolve") {
			t.Errorf("Lookup(%s) = %v, want does not resolve", name, err)
		}
	}
	if _, _, err := Lookup(ctx, nil, "a.test"); err == nil || !strings.Contains(err.Error(), "default_dns") {
		t.Errorf("Lookup without upstreams = %v", err)
	}
}
