package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"

	"banger/internal/api"
	"banger/internal/crashpoint"
	"banger/internal/network"
	"banger/internal/portfwd"
	"banger/internal/store"
)

// A VM's port forwards are rows of the ports table, kept while it is
// stopped; bangerd listens on them (portfwd) while the VM runs: from its
// start (before the VMM boots, so a port taken on the host fails the
// start with nothing made), or its adoption by a restarted daemon, until
// it stops.

func (s *Server) portRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/vms/{name}/ports", s.handleListPorts)
	mux.HandleFunc("POST /v1/vms/{name}/ports", s.handleAddPorts)
	mux.HandleFunc("DELETE /v1/vms/{name}/ports", s.handleRemovePorts)
	mux.HandleFunc("DELETE /v1/vms/{name}/ports/{proto}/{host_addr}/{host_port}", s.handleRemovePort)
}

func (s *Server) handleListPorts(w http.ResponseWriter, r *http.Request) {
	v, err := s.vms.get(r.Context(), r.PathValue("name"))
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, s.vms.portsView(r.Context(), v.ID))
}

func (s *Server) handleAddPorts(w http.ResponseWriter, r *http.Request) {
	var req api.AddPortsRequest
	if err := decode(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	out, err := s.vms.addPorts(r.Context(), r.PathValue("name"), req.Ports)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// handleRemovePorts removes the forwards named by the spec query
// parameters (repeated), all or none.
func (s *Server) handleRemovePorts(w http.ResponseWriter, r *http.Request) {
	out, err := s.vms.removePorts(r.Context(), r.PathValue("name"), r.URL.Query()["spec"])
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// handleRemovePort removes the one forward its path names.
func (s *Server) handleRemovePort(w http.ResponseWriter, r *http.Request) {
	spec := fmt.Sprintf("%s:%s/%s", r.PathValue("host_addr"), r.PathValue("host_port"), r.PathValue("proto"))
	if a, err := netip.ParseAddr(r.PathValue("host_addr")); err == nil && a.Is6() {
		spec = fmt.Sprintf("[%s]:%s/%s", a, r.PathValue("host_port"), r.PathValue("proto"))
	}
	out, err := s.vms.removePorts(r.Context(), r.PathValue("name"), []string{spec})
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// parsePorts reads -p specs, refusing the same host side twice.
func parsePorts(specs []string) ([]store.Port, error) {
	var out []store.Port
	seen := map[string]bool{}
	for _, s := range specs {
		p, err := api.ParsePortForward(s)
		if err != nil {
			return nil, err
		}
		if seen[p.Key()] {
			return nil, api.Errorf(api.InvalidArgument, "port forward %s is given twice", p.Key())
		}
		seen[p.Key()] = true
		out = append(out, store.Port{Proto: p.Proto, HostAddr: p.HostAddr, HostPort: p.HostPort, GuestPort: p.GuestPort})
	}
	return out, nil
}

// checkNewPorts checks that forwards ps can be added: no other forward
// has (or overlaps) their host side, and the host can listen there now.
func (m *vmManager) checkNewPorts(ctx context.Context, ps []store.Port) error {
	if len(ps) == 0 {
		return nil
	}
	if err := m.store.CheckPorts(ctx, ps); err != nil {
		return portError(err)
	}
	return portError(portfwd.Check(rules(ps)))
}

// addPorts records forwards of the VM called name, all or none, and
// listens on them at once when it runs.
func (m *vmManager) addPorts(ctx context.Context, name string, specs []string) ([]api.PortForward, error) {
	if len(specs) == 0 {
		return nil, api.Errorf(api.InvalidArgument, "no port forward given: use %s", api.PortSyntax)
	}
	ps, err := parsePorts(specs)
	if err != nil {
		return nil, err
	}
	unlock, err := m.lock(ctx, name, "vm port add")
	if err != nil {
		return nil, err
	}
	defer unlock()
	v, err := m.get(ctx, name)
	if err != nil {
		return nil, err
	}
	if err := m.checkNewPorts(ctx, ps); err != nil {
		return nil, err
	}
	if err := m.store.AddPorts(ctx, v.ID, ps); err != nil {
		return nil, portError(err)
	}
	crashpoint.Hit(crashpoint.PortAfterRecord)
	if m.machine(v.ID) != nil {
		if err := m.listenPorts(ctx, v, ps); err != nil {
			m.store.RemovePorts(context.WithoutCancel(ctx), v.ID, ps)
			return nil, err
		}
		crashpoint.Hit(crashpoint.PortAfterListen)
	}
	return m.portsView(ctx, v.ID), nil
}

// removePorts removes forwards of the VM called name, all or none, and
// ends the connections they carry.
func (m *vmManager) removePorts(ctx context.Context, name string, specs []string) ([]api.PortForward, error) {
	if len(specs) == 0 {
		return nil, api.Errorf(api.InvalidArgument, "no port forward given: use [HOST_ADDR:]HOST_PORT[/tcp|/udp] or %s", api.PortSyntax)
	}
	var keys []store.Port
	seen := map[string]bool{}
	for _, s := range specs {
		p, err := api.ParsePortKey(s)
		if err != nil {
			return nil, err
		}
		if !seen[p.Key()] {
			seen[p.Key()] = true
			keys = append(keys, store.Port{Proto: p.Proto, HostAddr: p.HostAddr, HostPort: p.HostPort, GuestPort: p.GuestPort})
		}
	}
	unlock, err := m.lock(ctx, name, "vm port remove")
	if err != nil {
		return nil, err
	}
	defer unlock()
	v, err := m.get(ctx, name)
	if err != nil {
		return nil, err
	}
	removed, err := m.store.RemovePorts(ctx, v.ID, keys)
	if errors.Is(err, store.ErrNotExist) {
		return nil, api.Errorf(api.NotFound, "vm %q has no %v", v.Name, err).WithHint("see banger vm port list " + v.Name)
	}
	if err != nil {
		return nil, err
	}
	if len(removed) > 0 {
		m.ports.Close(v.ID, rules(removed)...)
	}
	return m.portsView(ctx, v.ID), nil
}

// openPorts listens on every recorded forward of v, all or none.
func (m *vmManager) openPorts(ctx context.Context, v store.VM) error {
	ps, err := m.store.PortsOf(ctx, v.ID)
	if err != nil || len(ps) == 0 {
		return err
	}
	return m.listenPorts(ctx, v, ps)
}

// listenPorts listens on forwards ps of v, all or none.
func (m *vmManager) listenPorts(ctx context.Context, v store.VM, ps []store.Port) error {
	l, err := m.net.lease(ctx, v.ID)
	if err != nil {
		return fmt.Errorf("vm %q port forwards: %w", v.Name, err)
	}
	if !l.IP.IsValid() {
		return api.Errorf(api.Conflict, "vm %q has no address to forward ports to", v.Name)
	}
	return portError(m.ports.Open(v.ID, l.IP, rules(ps)))
}

// reopenPorts listens on the forwards of a VM a restarted daemon adopted.
// What cannot listen (the port was taken while no daemon held it) is a
// warning of the VM's, which runs on.
func (m *vmManager) reopenPorts(ctx context.Context, v store.VM) {
	ps, err := m.store.PortsOf(ctx, v.ID)
	if err != nil {
		m.log.Error("reading port forwards", "vm", v.Name, "err", err)
		return
	}
	for _, p := range ps {
		if err := m.listenPorts(ctx, v, []store.Port{p}); err != nil {
			m.log.Warn("port forward not restored", "vm", v.Name, "err", err)
			m.mu.Lock()
			m.warnings[v.ID] = append(m.warnings[v.ID], fmt.Sprintf("port forward %s not restored: %v", p.Key(), err))
			m.mu.Unlock()
		}
	}
}

// portsView is the VM's forwards as the API shows them.
func (m *vmManager) portsView(ctx context.Context, id string) []api.PortForward {
	ps, err := m.store.PortsOf(ctx, id)
	if err != nil {
		return nil
	}
	out := []api.PortForward{}
	for _, p := range ps {
		out = append(out, api.PortForward{Proto: p.Proto, HostAddr: p.HostAddr, HostPort: p.HostPort, GuestPort: p.GuestPort,
			Active: m.ports.Active(id, rule(p))})
	}
	return out
}

func rule(p store.Port) portfwd.Rule {
	a, _ := netip.ParseAddr(p.HostAddr)
	return portfwd.Rule{Proto: p.Proto, Host: netip.AddrPortFrom(a, uint16(p.HostPort)), GuestPort: uint16(p.GuestPort)}
}

func rules(ps []store.Port) []portfwd.Rule {
	out := make([]portfwd.Rule, len(ps))
	for i, p := range ps {
		out[i] = rule(p)
	}
	return out
}

// portError gives the forwarder's and the store's errors their API
// category and what to do next.
func portError(err error) error {
	var inUse *portfwd.InUseError
	var taken *store.PortTakenError
	var le *portfwd.ListenError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &inUse):
		return api.Errorf(api.Conflict, "%v", err).
			WithHint("pick another host port, or stop what listens on " + inUse.Rule.Host.String())
	case errors.As(err, &taken):
		return api.Errorf(api.Conflict, "%v", err).
			WithHint(fmt.Sprintf("pick another host port, or remove that forward: banger vm port rm %s %s", taken.VM, taken.Other.Key()))
	case errors.As(err, &le):
		return api.Errorf(api.InvalidArgument, "%v", err).
			WithHint("HOST_ADDR must be an address of this host: 127.0.0.1 (the default), 0.0.0.0 for every interface, or one an interface has")
	}
	return err
}

// checkCreatePorts checks the forwards of a VM about to be created.
func (m *vmManager) checkCreatePorts(ctx context.Context, specs []string) error {
	ps, err := parsePorts(specs)
	if err != nil {
		return err
	}
	return m.checkNewPorts(ctx, ps)
}

// recordCreatePorts records the forwards of the VM id being created.
func (m *vmManager) recordCreatePorts(ctx context.Context, id string, specs []string) error {
	ps, err := parsePorts(specs)
	if err != nil || len(ps) == 0 {
		return err
	}
	return portError(m.store.AddPorts(ctx, id, ps))
}

// closePortsUnlessRunning ends the forwards of a VM whose start did not
// leave a machine running.
func (m *vmManager) closePortsUnlessRunning(id string) {
	if m.machine(id) == nil {
		m.ports.Close(id)
	}
}

// SetForwards carries the forwards of the running VM id in the kernel
// (banger's nftables table; see network.SetForwards): it is the
// Forwarder's Kernel. It sets the network up first (ensure), as forwards
// open before the VM's tap; a daemon that cannot (another holds the
// network's claim) leaves them to userspace.
func (ns *netService) SetForwards(ctx context.Context, id string, guest netip.Addr, rs []portfwd.Rule) error {
	if len(rs) > 0 {
		if err := ns.ensure(ctx); err != nil {
			return err
		}
	} else if ns.claimed() != nil {
		return nil // another daemon's network: none of ours is there
	}
	fw := make([]network.Forward, len(rs))
	for i, r := range rs {
		fw[i] = network.Forward{Proto: r.Proto, Host: r.Host, GuestPort: r.GuestPort}
	}
	return ns.mgr.SetForwards(ctx, id, guest, fw)
}

// restoreForwards removes the kernel forwards of VMs that are not
// running; those of running VMs were rewritten as they were adopted.
func (ns *netService) restoreForwards(ctx context.Context, running map[string]bool) error {
	have, err := ns.mgr.ForwardIDs(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for id := range have {
		if !running[id] {
			ns.log.Info("removing port forwards of a vm that is not running", "vm", id)
			errs = append(errs, ns.mgr.SetForwards(ctx, id, netip.Addr{}, nil))
		}
	}
	return errors.Join(errs...)
}
