// Package guestdns is the DNS server banger's guests use. It listens on
// the bridge address and forwards questions to the host's resolvers (the
// upstreams), answering each guest according to its egress policy: every
// name for a nat guest, none for a guest with no network, and only the
// allowed names for a guest with an allow policy. The addresses an allowed
// name resolves to are handed to the daemon (OnAnswer) before the guest
// sees them, so the firewall lets the guest reach them.
//
// Guests are told apart by source address, which banger's anti-spoofing
// rules make trustworthy on the bridge.
package guestdns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// ErrNoSuchHost reports a name that has no IPv4 address.
var ErrNoSuchHost = errors.New("does not resolve to an IPv4 address")

// Policy is what the server answers a guest.
type Policy struct {
	// All answers every question (a nat guest).
	All bool
	// Names are the names answered when All is false (lowercase, no
	// trailing dot); none: every question is refused.
	Names []string
}

func (p Policy) allows(name string) bool {
	if p.All {
		return true
	}
	for _, n := range p.Names {
		if n == name {
			return true
		}
	}
	return false
}

// AnswerFunc hears, before the guest does, the IPv4 addresses an allowed
// name of a guest's allow policy resolved to, and for how long they hold.
type AnswerFunc func(vmID, name string, addrs []netip.Addr, ttl time.Duration)

// Server answers guests' questions. Set Upstreams before Serve; the rest
// is safe for concurrent use.
type Server struct {
	// Upstreams are the resolvers questions go to, as host:port, tried in
	// order.
	Upstreams []string
	Log       *slog.Logger
	OnAnswer  AnswerFunc
	// Timeout bounds each upstream exchange (default 3 s).
	Timeout time.Duration

	mu      sync.Mutex // guards guests and servers
	guests  map[netip.Addr]guest
	servers []*dns.Server
}

type guest struct {
	vmID   string
	policy Policy
}

// SetGuest sets the policy of the guest at ip.
func (s *Server) SetGuest(ip netip.Addr, vmID string, p Policy) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.guests == nil {
		s.guests = map[netip.Addr]guest{}
	}
	s.guests[ip] = guest{vmID: vmID, policy: p}
}

// RemoveGuest forgets the guest at ip: its questions are refused.
func (s *Server) RemoveGuest(ip netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.guests, ip)
}

func (s *Server) guest(ip netip.Addr) (guest, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, ok := s.guests[ip]
	return g, ok
}

// Serve answers on pc (UDP) and ln (TCP) until Close. It returns once
// both serve.
func (s *Server) Serve(pc net.PacketConn, ln net.Listener) {
	if s.Log == nil {
		s.Log = slog.New(slog.DiscardHandler)
	}
	var started sync.WaitGroup
	h := dns.HandlerFunc(s.handle)
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}} {
		started.Add(1)
		srv.NotifyStartedFunc = started.Done
		s.mu.Lock()
		s.servers = append(s.servers, srv)
		s.mu.Unlock()
		go func() {
			if err := srv.ActivateAndServe(); err != nil {
				s.Log.Warn("guest dns server stopped", "err", err)
			}
		}()
	}
	started.Wait()
}

// Close stops serving.
func (s *Server) Close() {
	s.mu.Lock()
	servers := s.servers
	s.servers = nil
	s.mu.Unlock()
	for _, srv := range servers {
		srv.Shutdown()
	}
}

func (s *Server) handle(w dns.ResponseWriter, req *dns.Msg) {
	src := addrOf(w.RemoteAddr())
	g, known := s.guest(src)
	if len(req.Question) != 1 || req.Opcode != dns.OpcodeQuery {
		w.WriteMsg(refuse(req, dns.RcodeNotImplemented, ""))
		return
	}
	name := canonical(req.Question[0].Name)
	if !known || !g.policy.allows(name) {
		why := "not in this VM's allow list (banger --net allow=)"
		if !known {
			why = "not a banger guest"
		}
		s.Log.Debug("guest dns refused", "from", src, "name", name, "why", why)
		w.WriteMsg(refuse(req, dns.RcodeRefused, why))
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*s.timeout())
	defer cancel()
	resp, err := s.forward(ctx, req, w.LocalAddr().Network())
	if err != nil {
		s.Log.Warn("guest dns: no upstream answered", "name", name, "err", err)
		w.WriteMsg(refuse(req, dns.RcodeServerFailure, ""))
		return
	}
	if !g.policy.All && s.OnAnswer != nil && req.Question[0].Qtype == dns.TypeA && resp.Rcode == dns.RcodeSuccess {
		if addrs, ttl := aRecords(resp); len(addrs) > 0 {
			s.OnAnswer(g.vmID, name, addrs, ttl)
		}
	}
	resp.Id = req.Id
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
		size := dns.MinMsgSize
		if o := req.IsEdns0(); o != nil {
			size = int(o.UDPSize())
		}
		resp.Truncate(size)
	}
	w.WriteMsg(resp)
}

// forward asks the upstreams in order, over network ("udp" or "tcp"; a
// truncated UDP answer is asked again over TCP).
func (s *Server) forward(ctx context.Context, req *dns.Msg, network string) (*dns.Msg, error) {
	if len(s.Upstreams) == 0 {
		return nil, errors.New("no upstream resolvers (set default_dns in config.toml)")
	}
	var errs []error
	for _, up := range s.Upstreams {
		resp, err := s.exchange(ctx, req, network, up)
		if err == nil && resp.Truncated && network == "udp" {
			resp, err = s.exchange(ctx, req, "tcp", up)
		}
		if err == nil {
			return resp, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", up, err))
	}
	return nil, errors.Join(errs...)
}

func (s *Server) exchange(ctx context.Context, req *dns.Msg, network, up string) (*dns.Msg, error) {
	c := &dns.Client{Net: network, Timeout: s.timeout()}
	q := req.Copy()
	q.Id = dns.Id()
	resp, _, err := c.ExchangeContext(ctx, q, up)
	return resp, err
}

func (s *Server) timeout() time.Duration {
	if s.Timeout > 0 {
		return s.Timeout
	}
	return 3 * time.Second
}

// Lookup asks upstreams for the IPv4 addresses of name, following the
// CNAMEs of the answer, and returns them with the time they hold (the
// smallest TTL of the answer, at least a second).
func Lookup(ctx context.Context, upstreams []string, name string) ([]netip.Addr, time.Duration, error) {
	s := &Server{Upstreams: upstreams}
	req := new(dns.Msg)
	req.SetQuestion(dns.Fqdn(name), dns.TypeA)
	resp, err := s.forward(ctx, req, "udp")
	if err != nil {
		return nil, 0, fmt.Errorf("looking up %s: %w", name, err)
	}
	if resp.Rcode != dns.RcodeSuccess {
		return nil, 0, fmt.Errorf("%s: %w (%s)", name, ErrNoSuchHost, dns.RcodeToString[resp.Rcode])
	}
	addrs, ttl := aRecords(resp)
	if len(addrs) == 0 {
		return nil, 0, fmt.Errorf("%s: %w (no A record)", name, ErrNoSuchHost)
	}
	return addrs, ttl, nil
}

// aRecords returns the A records of an answer and the smallest TTL of
// its records (at least a second).
func aRecords(m *dns.Msg) ([]netip.Addr, time.Duration) {
	var out []netip.Addr
	ttl := uint32(0)
	for _, rr := range m.Answer {
		h := rr.Header()
		if ttl == 0 || h.Ttl < ttl {
			ttl = h.Ttl
		}
		if a, ok := rr.(*dns.A); ok {
			if ip, ok := netip.AddrFromSlice(a.A.To4()); ok {
				out = append(out, ip)
			}
		}
	}
	return out, max(time.Duration(ttl)*time.Second, time.Second)
}

// refuse is the reply to req with rcode and, when the guest asked with
// EDNS, an extended error saying why.
func refuse(req *dns.Msg, rcode int, why string) *dns.Msg {
	m := new(dns.Msg)
	m.SetRcode(req, rcode)
	if o := req.IsEdns0(); o != nil && why != "" {
		opt := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}
		opt.SetUDPSize(dns.DefaultMsgSize)
		opt.Option = append(opt.Option, &dns.EDNS0_EDE{InfoCode: dns.ExtendedErrorCodeProhibited, ExtraText: "banger: " + why})
		m.Extra = append(m.Extra, opt)
	}
	return m
}

func canonical(name string) string { return strings.ToLower(strings.TrimSuffix(name, ".")) }

func addrOf(a net.Addr) netip.Addr {
	var ip net.IP
	switch v := a.(type) {
	case *net.UDPAddr:
		ip = v.IP
	case *net.TCPAddr:
		ip = v.IP
	}
	out, _ := netip.AddrFromSlice(ip)
	return out.Unmap()
}
