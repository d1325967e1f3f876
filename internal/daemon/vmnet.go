package daemon

import (
	"context"
	"net/http"

	"banger/internal/api"
	"banger/internal/crashpoint"
	"banger/internal/store"
)

// vmPolicies is what the VMs need of the network for egress policies
// (netService has it; a vmNetwork without it serves only the default).
type vmPolicies interface {
	// checkPolicy refuses a policy whose host names do not resolve.
	checkPolicy(ctx context.Context, p api.NetPolicy) error
	// applyPolicy puts p in force for a running VM.
	applyPolicy(ctx context.Context, vmID string, p *api.NetPolicy) error
	// resolved is what a running VM's allowed host names resolve to.
	resolved(vmID string) map[string][]string
}

func (s *Server) netRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/vms/{name}/net", s.handleSetNet)
}

func (s *Server) handleSetNet(w http.ResponseWriter, r *http.Request) {
	var req api.SetNetRequest
	if err := decode(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	vm, err := s.vms.setNet(r.Context(), r.PathValue("name"), req)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, vm)
}

// createPolicy is the policy a create request asks for, checked.
func (m *vmManager) createPolicy(ctx context.Context, req api.CreateVMRequest) (api.NetPolicy, error) {
	p, err := api.ParseNet(req.Net)
	if err != nil {
		return p, api.Errorf(api.InvalidArgument, "%v", err)
	}
	p.Isolate = req.Isolate
	if err := m.checkPolicy(ctx, p); err != nil {
		return p, err
	}
	return p, nil
}

func (m *vmManager) checkPolicy(ctx context.Context, p api.NetPolicy) error {
	np, ok := m.net.(vmPolicies)
	if !ok {
		if p.EffectiveMode() != api.NetNAT || p.Isolate {
			return api.Errorf(api.Unavailable, "this daemon's network cannot enforce --net %s", p)
		}
		return nil
	}
	return np.checkPolicy(ctx, p)
}

// setNet changes a VM's policy: stored, and put in force at once when the
// VM runs (else at its next start). An empty Net keeps the mode and
// destinations; a nil Isolate keeps the isolation.
func (m *vmManager) setNet(ctx context.Context, name string, req api.SetNetRequest) (api.VM, error) {
	unlock, err := m.lock(ctx, name, "vm net")
	if err != nil {
		return api.VM{}, err
	}
	defer unlock()
	v, err := m.get(ctx, name)
	if err != nil {
		return api.VM{}, err
	}
	p := policyOf(v)
	if req.Net != "" {
		np, err := api.ParseNet(req.Net)
		if err != nil {
			return api.VM{}, api.Errorf(api.InvalidArgument, "%v", err)
		}
		p.Mode, p.Allow = np.Mode, np.Allow
	}
	if req.Isolate != nil {
		p.Isolate = *req.Isolate
	}
	p.Resolved = nil
	if err := m.checkPolicy(ctx, p); err != nil {
		return api.VM{}, err
	}
	old := v.Net
	v.Net = marshal(p)
	if err := m.store.UpdateVM(ctx, v); err != nil {
		return api.VM{}, err
	}
	crashpoint.Hit(crashpoint.NetAfterRecord)
	if np, ok := m.net.(vmPolicies); ok && m.machine(v.ID) != nil {
		if err := np.applyPolicy(ctx, v.ID, &p); err != nil {
			// The old policy stays in force; so does its record.
			v.Net = old
			m.store.UpdateVM(context.WithoutCancel(ctx), v)
			np.applyPolicy(context.WithoutCancel(ctx), v.ID, nil)
			return api.VM{}, err
		}
		crashpoint.Hit(crashpoint.NetAfterApply)
	}
	return m.view(ctx, v), nil
}

// netView is v's policy as vm inspect shows it: the mode filled in, and
// what its host names resolve to while it runs.
func (m *vmManager) netView(v store.VM) api.NetPolicy {
	p := policyOf(v)
	p.Mode = p.EffectiveMode()
	if np, ok := m.net.(vmPolicies); ok {
		p.Resolved = np.resolved(v.ID)
	}
	return p
}
