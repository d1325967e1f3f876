package daemon

import (
	"context"
	"net/http"

	"banger/internal/api"
)

func (s *Server) snapshotRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/vms/{name}/pause", func(w http.ResponseWriter, r *http.Request) { s.handlePause(w, r, true) })
	mux.HandleFunc("POST /v1/vms/{name}/resume", func(w http.ResponseWriter, r *http.Request) { s.handlePause(w, r, false) })
	mux.HandleFunc("POST /v1/vms/{name}/snapshot", s.handleSnapshot)
	mux.HandleFunc("POST /v1/vms/{name}/fork", s.handleFork)
	mux.HandleFunc("GET /v1/snapshots", s.handleSnapshotList)
	mux.HandleFunc("GET /v1/snapshots/{name}", s.handleSnapshotInspect)
	mux.HandleFunc("DELETE /v1/snapshots/{name}", s.handleSnapshotDelete)
}

func (s *Server) handlePause(w http.ResponseWriter, r *http.Request, paused bool) {
	vm, err := s.vms.pause(r.Context(), r.PathValue("name"), paused)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, vm)
}

func (s *Server) handleSnapshot(w http.ResponseWriter, r *http.Request) {
	var req api.SnapshotVMRequest
	if err := decode(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	sn, err := s.vms.snapshot(r.Context(), r.PathValue("name"), req)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, sn)
}

func (s *Server) handleFork(w http.ResponseWriter, r *http.Request) {
	var req api.ForkVMRequest
	if err := decode(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	st := newStream(w)
	vm, err := s.vms.fork(r.Context(), r.PathValue("name"), req, st.Progress)
	logWarnings(st, vm)
	st.finish(vm, err)
}

func (s *Server) handleSnapshotList(w http.ResponseWriter, r *http.Request) {
	out, err := s.vms.listSnapshots(r.Context())
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleSnapshotInspect(w http.ResponseWriter, r *http.Request) {
	sn, err := s.vms.getSnapshot(r.Context(), r.PathValue("name"))
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, s.vms.snapView(r.Context(), sn))
}

func (s *Server) handleSnapshotDelete(w http.ResponseWriter, r *http.Request) {
	if err := s.vms.deleteSnapshot(r.Context(), r.PathValue("name")); err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"deleted": r.PathValue("name")})
}

// imageUsers are the VMs, and the snapshots, made from an image: while
// there are any it cannot be deleted.
func (s *Server) imageUsers(ctx context.Context, name string) ([]string, error) {
	vms, err := s.store.VMsUsingImage(ctx, name)
	if err != nil {
		return nil, err
	}
	snaps, err := s.store.SnapshotsUsingImage(ctx, name, api.SnapshotWarm)
	if err != nil {
		return nil, err
	}
	for _, sn := range snaps {
		vms = append(vms, "snapshot "+sn)
	}
	return vms, nil
}
