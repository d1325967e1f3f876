package daemon

import (
	"context"
	"encoding/json"
	"net/http"
	"path"
	"path/filepath"

	"banger/internal/api"
	"banger/internal/store"
)

// handleSetWorkspaceSource records where the VM's workspace was copied
// from (the CLI sends it once the copy is in, whichever way it went).
func (s *Server) handleSetWorkspaceSource(w http.ResponseWriter, r *http.Request) {
	var src api.WorkspaceSource
	if err := decode(r, &src); err != nil {
		writeErr(w, err)
		return
	}
	vm, err := s.vms.setWorkspace(r.Context(), r.PathValue("name"), src)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, vm)
}

// setWorkspace records src as the workspace of the VM called name,
// replacing any earlier one. Both paths must be absolute.
func (m *vmManager) setWorkspace(ctx context.Context, name string, src api.WorkspaceSource) (api.VM, error) {
	if !filepath.IsAbs(src.HostPath) {
		return api.VM{}, api.Errorf(api.InvalidArgument, "workspace host path %q must be absolute", src.HostPath)
	}
	if !path.IsAbs(src.GuestPath) {
		return api.VM{}, api.Errorf(api.InvalidArgument, "workspace guest path %q must be absolute", src.GuestPath)
	}
	src.HostPath, src.GuestPath = filepath.Clean(src.HostPath), path.Clean(src.GuestPath)
	unlock, err := m.lock(ctx, name, "vm workspace")
	if err != nil {
		return api.VM{}, err
	}
	defer unlock()
	v, err := m.get(ctx, name)
	if err != nil {
		return api.VM{}, err
	}
	v.Workspace = marshal(src)
	if err := m.store.UpdateVM(ctx, v); err != nil {
		return api.VM{}, err
	}
	return m.view(ctx, v), nil
}

// workspaceOf is the recorded workspace source of v, nil when it has none.
func workspaceOf(v store.VM) *api.WorkspaceSource {
	var src api.WorkspaceSource
	if err := json.Unmarshal([]byte(v.Workspace), &src); err != nil || src.HostPath == "" {
		return nil
	}
	return &src
}
