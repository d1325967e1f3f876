package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"banger/internal/api"
	"banger/internal/guestdns"
	"banger/internal/network"
)

// Bounds on how often an allowed host name is looked up again: its TTL,
// but never more often than minRefresh nor less often than maxRefresh;
// after a failed lookup, retryRefresh. An address stays allowed for
// addrGrace past its TTL, since guests cache answers that long.
const (
	minRefresh   = 2 * time.Second
	maxRefresh   = time.Hour
	retryRefresh = 30 * time.Second
	addrGrace    = 30 * time.Second
)

// egressService keeps each running VM's egress policy in force: its
// firewall rules (network.Guest), what the guest DNS server answers it,
// and the addresses of its allowed host names, looked up on the host when
// the policy is applied, again as their TTLs expire, and whenever the
// guest's own lookups of them are answered.
type egressService struct {
	mgr       *network.Manager
	dns       *guestdns.Server
	upstreams []string // host:port of the resolvers names are looked up at
	log       *slog.Logger

	mu  sync.Mutex           // guards vms and the egressVMs in it
	vms map[string]*egressVM // by vm id, while the VM runs
}

// egressVM is the policy of one running VM.
type egressVM struct {
	guest  network.Guest // without Allow
	static []network.Dest
	hosts  []api.NetDest // the destinations named by host
	// addrs are, by host name, the addresses it resolved to and until
	// when each stays allowed.
	addrs  map[string]map[netip.Addr]time.Time
	cancel context.CancelFunc // ends the refresher
}

func newEgressService(mgr *network.Manager, dns *guestdns.Server, upstreams []string, log *slog.Logger) *egressService {
	e := &egressService{mgr: mgr, dns: dns, upstreams: upstreams, log: log, vms: map[string]*egressVM{}}
	dns.OnAnswer = e.answered
	return e
}

// check parses p's destinations and looks up its host names: a name that
// does not resolve is an error, never an allow-all.
func (e *egressService) check(ctx context.Context, p api.NetPolicy) error {
	dests, err := p.Dests()
	if err != nil {
		return api.Errorf(api.InvalidArgument, "%v", err)
	}
	for _, d := range dests {
		if d.Host == "" {
			continue
		}
		if _, _, err := guestdns.Lookup(ctx, e.upstreams, d.Host); err != nil {
			return api.Errorf(api.InvalidArgument, "--net allow=%s: %v (looked up at %v)", d.Host, err, e.upstreams).
				WithHint("check the name, or allow its address or CIDR instead")
		}
	}
	return nil
}

// apply puts policy p in force for the running guest g (its Egress,
// Isolate and Allow are taken from p), replacing what it had. Host names
// that do not resolve now allow nothing until they do; apply logs them
// and returns them.
func (e *egressService) apply(ctx context.Context, g network.Guest, p api.NetPolicy) (unresolved []string, err error) {
	dests, err := p.Dests()
	if err != nil {
		return nil, err
	}
	g.Isolate, g.Allow = p.Isolate, nil
	vm := &egressVM{addrs: map[string]map[netip.Addr]time.Time{}}
	switch p.EffectiveMode() {
	case api.NetNone:
		g.Egress = network.EgressNone
	case api.NetAllow:
		g.Egress = network.EgressAllow
	default:
		g.Egress = network.EgressNAT
	}
	vm.guest = g
	for _, d := range dests {
		if d.Host == "" {
			vm.static = append(vm.static, network.Dest{Prefix: d.Prefix, Port: d.Port})
			continue
		}
		vm.hosts = append(vm.hosts, d)
	}
	next := map[string]time.Time{}
	for _, name := range vm.names() {
		if !e.refresh(ctx, vm, name, next) {
			unresolved = append(unresolved, name)
		}
	}
	e.mu.Lock()
	old := e.vms[g.VMID]
	e.vms[g.VMID] = vm
	err = e.writeLocked(ctx, vm)
	e.mu.Unlock()
	if old != nil && old.cancel != nil {
		old.cancel()
	}
	if err != nil {
		return nil, err
	}
	pol := guestdns.Policy{All: g.Egress == network.EgressNAT, Names: vm.names()}
	e.dns.SetGuest(g.IP, g.VMID, pol)
	if len(next) > 0 {
		rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		vm.cancel = cancel
		go e.refresher(rctx, g.VMID, vm, next)
	}
	for _, n := range unresolved {
		e.log.Warn("allowed host name does not resolve; it allows nothing until it does", "vm", g.VMID, "name", n)
	}
	return unresolved, nil
}

// names are vm's allowed host names, each once.
func (vm *egressVM) names() []string {
	var out []string
	for _, d := range vm.hosts {
		if !slices.Contains(out, d.Host) {
			out = append(out, d.Host)
		}
	}
	return out
}

// allow is vm's destinations now: the static ones and, for each host
// destination, every address its name holds.
func (vm *egressVM) allow() []network.Dest {
	out := slices.Clone(vm.static)
	for _, d := range vm.hosts {
		addrs := slices.SortedFunc(maps.Keys(vm.addrs[d.Host]), netip.Addr.Compare)
		for _, a := range addrs {
			out = append(out, network.Dest{Prefix: netip.PrefixFrom(a, 32), Port: d.Port})
		}
	}
	return out
}

// writeLocked writes vm's rules; e.mu is held.
func (e *egressService) writeLocked(ctx context.Context, vm *egressVM) error {
	g := vm.guest
	g.Allow = vm.allow()
	if err := e.mgr.SetGuest(ctx, g); err != nil {
		return fmt.Errorf("vm %s egress rules: %w", g.VMID, err)
	}
	return nil
}

// refresh looks name up again for vm, merges the answer into vm.addrs,
// prunes what expired, and sets next[name] to when to look again. It
// reports whether the lookup succeeded. vm may be in e.vms: refresh takes
// e.mu to change it.
func (e *egressService) refresh(ctx context.Context, vm *egressVM, name string, next map[string]time.Time) bool {
	addrs, ttl, err := guestdns.Lookup(ctx, e.upstreams, name)
	now := time.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	if err != nil {
		next[name] = now.Add(retryRefresh)
		e.log.Warn("looking up an allowed host name", "vm", vm.guest.VMID, "name", name, "err", err)
	} else {
		vm.learnLocked(name, addrs, ttl, now)
		next[name] = now.Add(min(max(ttl, minRefresh), maxRefresh))
	}
	for a, until := range vm.addrs[name] {
		if until.Before(now) {
			delete(vm.addrs[name], a)
		}
	}
	return err == nil
}

// learnLocked records that name holds addrs for ttl, and reports whether
// any of them is new.
func (vm *egressVM) learnLocked(name string, addrs []netip.Addr, ttl time.Duration, now time.Time) bool {
	if vm.addrs[name] == nil {
		vm.addrs[name] = map[netip.Addr]time.Time{}
	}
	added := false
	for _, a := range addrs {
		if _, ok := vm.addrs[name][a]; !ok {
			added = true
		}
		vm.addrs[name][a] = now.Add(ttl + addrGrace)
	}
	return added
}

// refresher looks vm's names up again as they expire, rewriting its rules
// when their addresses change, until ctx ends.
func (e *egressService) refresher(ctx context.Context, id string, vm *egressVM, next map[string]time.Time) {
	for {
		first := time.Time{}
		for _, t := range next {
			if first.IsZero() || t.Before(first) {
				first = t
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(first)):
		}
		e.mu.Lock()
		before := fmt.Sprint(vm.allow())
		e.mu.Unlock()
		for name, t := range next {
			if !t.After(time.Now()) {
				e.refresh(ctx, vm, name, next)
			}
		}
		e.mu.Lock()
		if ctx.Err() == nil && e.vms[id] == vm && fmt.Sprint(vm.allow()) != before {
			if err := e.writeLocked(ctx, vm); err != nil {
				e.log.Warn("rewriting egress rules after a lookup", "vm", id, "err", err)
			} else {
				e.log.Info("allowed addresses changed", "vm", id, "allow", fmt.Sprint(vm.allow()))
			}
		}
		e.mu.Unlock()
	}
}

// answered is the guest DNS server's OnAnswer: addresses a guest was
// told for one of its allowed names become allowed before it hears them.
func (e *egressService) answered(id, name string, addrs []netip.Addr, ttl time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	vm := e.vms[id]
	if vm == nil || !slices.Contains(vm.names(), name) {
		return
	}
	if !vm.learnLocked(name, addrs, ttl, time.Now()) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.writeLocked(ctx, vm); err != nil {
		e.log.Warn("allowing addresses a guest looked up", "vm", id, "name", name, "err", err)
	}
}

// remove takes vm id's policy out of force: its rules go, its questions
// are refused.
func (e *egressService) remove(ctx context.Context, id string) error {
	e.mu.Lock()
	vm := e.vms[id]
	delete(e.vms, id)
	e.mu.Unlock()
	if vm != nil {
		if vm.cancel != nil {
			vm.cancel()
		}
		e.dns.RemoveGuest(vm.guest.IP)
	}
	return e.mgr.RemoveGuest(ctx, id)
}

// resolved is what vm id's host names resolve to now, for vm inspect;
// nil when it has none or is not running.
func (e *egressService) resolved(id string) map[string][]string {
	e.mu.Lock()
	defer e.mu.Unlock()
	vm := e.vms[id]
	if vm == nil || len(vm.hosts) == 0 {
		return nil
	}
	out := map[string][]string{}
	for _, name := range vm.names() {
		list := []string{}
		for _, a := range slices.SortedFunc(maps.Keys(vm.addrs[name]), netip.Addr.Compare) {
			list = append(list, a.String())
		}
		out[name] = list
	}
	return out
}

// upstreamsOf renders resolvers as host:port on port 53.
func upstreamsOf(addrs []netip.Addr) []string {
	var out []string
	for _, a := range addrs {
		out = append(out, net.JoinHostPort(a.String(), "53"))
	}
	return out
}
