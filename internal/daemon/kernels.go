package daemon

import (
	"context"
	"fmt"
	"net/http"
	"os"

	"banger/internal/api"
	"banger/internal/kernel"
)

func (s *Server) kernelRoutes(mux *http.ServeMux) {
	del := func(_ context.Context, name string) error { return s.kernels.Delete(name) }
	users := func(ctx context.Context, name string) ([]string, error) {
		vms, err := s.store.VMsUsingKernel(ctx, name)
		if err != nil {
			return nil, err
		}
		snaps, err := s.store.SnapshotsUsingKernel(ctx, name)
		for _, sn := range snaps {
			vms = append(vms, "snapshot "+sn)
		}
		return vms, err
	}
	entryRoutes(s, mux, "kernel", s.kernels.List, s.kernels.Get, kernelView, users, del)
	mux.HandleFunc("POST /v1/kernels/pull", s.handleKernelPull)
	mux.HandleFunc("POST /v1/kernels/import", s.handleKernelImport)
	mux.HandleFunc("POST /v1/kernels/register", s.handleKernelRegister)
}

func kernelView(b kernel.Bundle) api.Kernel {
	return api.Kernel{Name: b.Name, Release: b.Release, Kernel: b.Kernel, Initrd: b.Initrd, Modules: b.Modules,
		Source: b.Source, SHA256: b.SHA256, CreatedAt: b.CreatedAt, SizeBytes: filesSize(b.Kernel, b.Initrd, b.Modules)}
}

// filesSize is the bytes the files at paths take; missing ones count 0.
func filesSize(paths ...string) int64 {
	var n int64
	for _, p := range paths {
		if fi, err := os.Stat(p); err == nil && p != "" {
			n += fi.Size()
		}
	}
	return n
}

func (s *Server) handleKernelPull(w http.ResponseWriter, r *http.Request) {
	var req api.PullKernelRequest
	if err := decode(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	if req.Mirror == "" {
		req.Mirror = s.opts.Config.DebianMirror
	}
	st := newStream(w)
	b, err := s.kernels.Pull(r.Context(), req.Name, req.Mirror, st.Progress)
	if err != nil {
		st.finish(nil, fmt.Errorf("pulling kernel %q: %w", req.Name, err))
		return
	}
	st.finish(kernelView(b), nil)
}

func (s *Server) handleKernelImport(w http.ResponseWriter, r *http.Request) {
	var req api.ImportKernelRequest
	if err := decode(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	st := newStream(w)
	b, err := s.kernels.ImportDeb(r.Context(), req.Deb, req.Name, st.Progress)
	if err != nil {
		st.finish(nil, fmt.Errorf("importing %s: %w", req.Deb, err))
		return
	}
	st.finish(kernelView(b), nil)
}

func (s *Server) handleKernelRegister(w http.ResponseWriter, r *http.Request) {
	var req api.RegisterKernelRequest
	if err := decode(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	b, err := s.kernels.Register(r.Context(), req.Name, req.Kernel, req.Initrd)
	if err != nil {
		writeErr(w, fmt.Errorf("registering kernel %q: %w", req.Name, err))
		return
	}
	writeJSON(w, http.StatusOK, kernelView(b))
}
