package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"banger/internal/api"
	"banger/internal/atomicfile"
	"banger/internal/config"
	"banger/internal/guestdns"
	"banger/internal/network"
	"banger/internal/store"
	"banger/internal/vmm"
)

// netState is the network config in force, recorded in the state
// directory so a config change can be checked against running VMs.
type netState struct {
	BridgeName string       `json:"bridge_name"`
	BridgeIP   netip.Addr   `json:"bridge_ip"`
	CIDR       netip.Prefix `json:"cidr"`
}

// netService wires internal/network to the VMs: one lease and one tap per
// VM, the bridge and NAT set up on the first start.
type netService struct {
	store    *store.Store
	mgr      *network.Manager
	log      *slog.Logger
	stateDir string       // whose network this daemon claims
	path     string       // network.json
	dns      []netip.Addr // given to guests when the guest DNS server cannot listen
	guestDNS *guestdns.Server
	egress   *egressService

	mu       sync.Mutex // guards ready, conflict, claim, dnsUp and dnsErr
	ready    bool
	conflict string         // why config.toml's network settings are not in force
	claim    *network.Claim // this daemon's hold on the namespace's network
	dnsUp    bool           // the guest DNS server listens on the bridge address
	dnsErr   string         // why it does not
}

// claimed takes the network namespace's claim once (network.TakeClaim):
// a second daemon on another state directory must not touch the bridge,
// taps and NAT of the first. The error names the holder.
func (ns *netService) claimed() error {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	return ns.claimLocked()
}

func (ns *netService) claimLocked() error {
	if ns.claim != nil {
		return nil
	}
	c, err := network.TakeClaim(ns.stateDir)
	if err != nil {
		return err
	}
	ns.claim = c
	return nil
}

// close gives the claim up as the daemon stops.
func (ns *netService) close() {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if ns.claim != nil {
		ns.claim.Release()
		ns.claim = nil
	}
	ns.guestDNS.Close()
}

// newNetService makes the network service of a daemon with config cfg
// on state directory stateDir. Network settings changed in cfg are not
// put in force while VMs still run on the old ones: conflict says so.
// vmmUser, when set, owns the taps the jailer hands to firecracker.
func newNetService(ctx context.Context, cfg config.Config, stateDir string, st *store.Store, log *slog.Logger, vmmUser *vmmUser) (*netService, error) {
	want := netState{BridgeName: cfg.BridgeName, BridgeIP: cfg.BridgeIP, CIDR: cfg.CIDR}
	ns := &netService{store: st, log: log, stateDir: stateDir, path: filepath.Join(stateDir, "network.json"), dns: cfg.DefaultDNS}
	use := want
	if old, err := ns.recorded(); err == nil && old != want {
		running, err := runningVMNames(ctx, st)
		if err != nil {
			return nil, err
		}
		if len(running) > 0 {
			use = old
			ns.conflict = fmt.Sprintf("config.toml sets bridge_name %s and cidr %s, but VMs %s still run on bridge %s with cidr %s; "+
				"stop them (banger vm stop %s), then restart the daemon (banger daemon restart)",
				want.BridgeName, want.CIDR, strings.Join(running, ", "), old.BridgeName, old.CIDR, strings.Join(running, " "))
			log.Warn("network config change refused while VMs run", "why", ns.conflict)
		}
	}
	ncfg := network.Config{
		BridgeName: use.BridgeName, BridgeIP: use.BridgeIP, CIDR: use.CIDR,
		PoolSize: cfg.TapPoolSize, Logger: log,
	}
	if cfg.JailerBin != "" && vmmUser != nil {
		// The jailed firecracker opens its tap as the vmm user.
		ncfg.TapOwner, ncfg.TapGroup = uint32(vmmUser.uid), uint32(vmmUser.gid)
	}
	mgr, err := network.New(ncfg)
	if err != nil {
		return nil, fmt.Errorf("network settings: %w", err)
	}
	ns.mgr = mgr
	if len(ns.dns) == 0 {
		ns.dns, _ = network.HostDNS()
	}
	// The guest DNS server asks default_dns, else the host's own
	// resolvers (loopback stubs included: the daemon asks them itself).
	upstream := cfg.DefaultDNS
	if len(upstream) == 0 {
		upstream, _ = network.HostResolvers()
	}
	upstream = slices.DeleteFunc(slices.Clone(upstream), func(a netip.Addr) bool { return a == use.BridgeIP })
	ns.guestDNS = &guestdns.Server{Upstreams: upstreamsOf(upstream), Log: log}
	ns.egress = newEgressService(mgr, ns.guestDNS, ns.guestDNS.Upstreams, log)
	return ns, nil
}

func (ns *netService) recorded() (netState, error) {
	var st netState
	f, err := openNoFollow(ns.path, os.O_RDONLY, 0)
	if err != nil {
		return st, err
	}
	defer f.Close()
	return st, json.NewDecoder(io.LimitReader(f, 1<<16)).Decode(&st)
}

func (ns *netService) record() error {
	c := ns.mgr.Config()
	b, _ := json.Marshal(netState{BridgeName: c.BridgeName, BridgeIP: c.BridgeIP, CIDR: c.CIDR})
	return atomicfile.WriteFile(ns.path, b, 0o600)
}

// ensure sets up the bridge, forwarding, NAT and the tap pool once.
func (ns *netService) ensure(ctx context.Context) error {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if ns.ready {
		return nil
	}
	if err := ns.claimLocked(); err != nil {
		return err
	}
	if err := ns.mgr.Setup(ctx); err != nil {
		return err
	}
	if err := ns.record(); err != nil {
		return err
	}
	ns.ready = true
	ns.startDNSLocked()
	return nil
}

// lease gives the VM its address (kept across restarts of the VM).
func (ns *netService) lease(ctx context.Context, vmID string) (store.Lease, error) {
	ns.mu.Lock()
	conflict := ns.conflict
	ns.mu.Unlock()
	if conflict != "" {
		return store.Lease{}, api.Errorf(api.Conflict, "%s", conflict)
	}
	if err := ns.claimed(); err != nil {
		return store.Lease{}, err
	}
	if old, err := ns.store.LeaseOf(ctx, vmID); err == nil && !ns.mgr.Config().CIDR.Contains(old.IP) {
		// The cidr changed while this VM was stopped: it gets a new address.
		if err := ns.store.ReleaseLeases(ctx, vmID); err != nil {
			return store.Lease{}, err
		}
	}
	l, err := ns.store.AllocateLease(ctx, vmID, network.MACFor(vmID).String(), ns.mgr.Allocate)
	if err != nil {
		return l, err
	}
	return l, nil
}

// attach gives the VM its tap and returns its network interface and the
// kernel argument that configures the guest's side.
func (ns *netService) attach(ctx context.Context, vmID string) (vmm.NIC, string, error) {
	if err := ns.ensure(ctx); err != nil {
		return vmm.NIC{}, "", err
	}
	l, err := ns.lease(ctx, vmID)
	if err != nil {
		return vmm.NIC{}, "", err
	}
	tap, err := ns.mgr.AcquireTap(ctx, vmID)
	if err != nil {
		return vmm.NIC{}, "", err
	}
	if err := ns.store.SetLeaseTap(ctx, vmID, tap); err != nil {
		ns.mgr.ReleaseTap(context.WithoutCancel(ctx), tap)
		return vmm.NIC{}, "", err
	}
	// The policy is in force before the guest can send anything.
	if err := ns.applyPolicy(ctx, vmID, nil); err != nil {
		ns.detach(context.WithoutCancel(ctx), vmID)
		return vmm.NIC{}, "", err
	}
	go ns.mgr.FillPool(context.WithoutCancel(ctx))
	gc := ns.mgr.GuestConfig(l.IP, ns.guestResolvers())
	return vmm.NIC{ID: "eth0", Tap: tap, MAC: l.MAC}, gc.BangerNetArg(), nil
}

// detach removes the VM's tap; its lease stays until the VM is deleted.
func (ns *netService) detach(ctx context.Context, vmID string) {
	// Its rules go first: the tap may go to another VM next.
	if err := ns.egress.remove(ctx, vmID); err != nil {
		ns.log.Warn("removing the rules of a vm", "vm", vmID, "err", err)
	}
	l, err := ns.store.LeaseOf(ctx, vmID)
	if err != nil || l.Tap == "" {
		return
	}
	if err := ns.mgr.ReleaseTap(ctx, l.Tap); err != nil {
		ns.log.Warn("releasing tap", "tap", l.Tap, "err", err)
	}
	ns.store.SetLeaseTap(ctx, vmID, "")
}

// reconcile runs at daemon start: leases of deleted VMs go, and taps of
// VMs that are not running go. NAT rules are brought back in line when
// the bridge exists.
func (ns *netService) reconcile(ctx context.Context) error {
	if _, err := ns.store.PruneLeases(ctx); err != nil {
		return err
	}
	running, err := runningVMIDs(ctx, ns.store)
	if err != nil {
		return err
	}
	if err := ns.claimed(); err != nil {
		// Another daemon's taps: leave them alone.
		ns.log.Warn("not reconciling the network", "err", err)
		return nil
	}
	info, err := ns.mgr.Inspect(ctx)
	if err != nil || !info.Bridge.Exists {
		return nil
	}
	removed, err := ns.mgr.Reconcile(ctx, running)
	for _, t := range removed {
		ns.log.Info("removed stale tap", "tap", t.Name, "vm", t.VMID)
		ns.store.SetLeaseTap(ctx, t.VMID, "")
	}
	if err != nil {
		return err
	}
	if _, err := ns.mgr.EnsureNAT(ctx); err != nil {
		return err
	}
	ns.startDNS()
	return errors.Join(ns.restorePolicies(ctx, running), ns.restoreForwards(ctx, running))
}

// networkView is GET /v1/network.
type networkView struct {
	network.Info
	Leases   []leaseView `json:"leases"`
	Conflict string      `json:"conflict,omitempty"`
	// GuestDNS is where guests' questions go, or why they cannot.
	GuestDNS guestDNSView `json:"guest_dns"`
	// NotOwner says why this daemon may not touch the namespace's network
	// (another daemon holds it).
	NotOwner string `json:"not_owner,omitempty"`
}

type guestDNSView struct {
	Listen    string   `json:"listen,omitempty"`
	Upstreams []string `json:"upstreams"`
	Problem   string   `json:"problem,omitempty"`
}

type leaseView struct {
	IP  string `json:"ip"`
	VM  string `json:"vm"`
	MAC string `json:"mac"`
	Tap string `json:"tap,omitempty"`
}

func (s *Server) handleNetwork(w http.ResponseWriter, r *http.Request) {
	info, err := s.net.mgr.Inspect(r.Context())
	if err != nil {
		writeErr(w, err)
		return
	}
	ls, err := s.store.Leases(r.Context())
	if err != nil {
		writeErr(w, err)
		return
	}
	out := networkView{Info: info, Leases: []leaseView{}, Conflict: s.net.conflict}
	s.net.mu.Lock()
	out.GuestDNS = guestDNSView{Upstreams: append([]string{}, s.net.guestDNS.Upstreams...), Problem: s.net.dnsErr}
	if s.net.dnsUp {
		out.GuestDNS.Listen = net.JoinHostPort(s.net.mgr.Config().BridgeIP.String(), "53")
	}
	s.net.mu.Unlock()
	if err := s.net.claimed(); err != nil {
		out.NotOwner = err.Error()
	}
	for _, l := range ls {
		name := l.VMID
		if v, err := s.store.VMByName(r.Context(), l.VMID); err == nil {
			name = v.Name
		}
		out.Leases = append(out.Leases, leaseView{IP: l.IP.String(), VM: name, MAC: l.MAC, Tap: l.Tap})
	}
	writeJSON(w, http.StatusOK, out)
}

// runningVMIDs are the VMs whose VMM may be alive.
func runningVMIDs(ctx context.Context, st *store.Store) (map[string]bool, error) {
	vms, err := st.ListVMs(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, v := range vms {
		if v.State == api.StateRunning || v.State == api.StateStarting || (v.State == api.StateFailed && v.Handle != "{}") {
			out[v.ID] = true
		}
	}
	return out, nil
}

func runningVMNames(ctx context.Context, st *store.Store) ([]string, error) {
	ids, err := runningVMIDs(ctx, st)
	if err != nil {
		return nil, err
	}
	var names []string
	for id := range ids {
		if v, err := st.VMByName(ctx, id); err == nil {
			names = append(names, v.Name)
		}
	}
	return names, nil
}
