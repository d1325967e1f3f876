package daemon

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"banger/internal/api"
	"banger/internal/image"
)

func (s *Server) imageRoutes(mux *http.ServeMux) {
	entryRoutes(s, mux, "image", s.images.List, s.images.Get, imageView, s.imageUsers, s.deleteImage)
	mux.HandleFunc("POST /v1/images/register", s.handleImageRegister)
	mux.HandleFunc("POST /v1/images/{name}/warm", s.handleImageWarm)
	s.imagePullRoutes(mux)
}

// deleteImage deletes the image called name, then the bases of the layer
// store that were links to it (no VM builds on them: the caller checked).
func (s *Server) deleteImage(ctx context.Context, name string) error {
	// Its warm snapshots go with it: they are a cache of its boot.
	if err := s.vms.deleteWarmOf(ctx, name); err != nil {
		return err
	}
	if err := s.images.Delete(name); err != nil {
		return err
	}
	s.vms.gcLayers(ctx, false)
	return nil
}

func imageView(im image.Image) api.Image {
	return api.Image{Name: im.Name, Source: im.Source, Digest: im.Digest, Rootfs: im.Rootfs, SizeBytes: im.SizeBytes,
		KernelRef: im.KernelRef, Distro: im.Distro, HasSSHD: im.HasSSHD, Injected: im.Injected, CreatedAt: im.CreatedAt}
}

func (s *Server) handleImageRegister(w http.ResponseWriter, r *http.Request) {
	var req api.RegisterImageRequest
	if err := decode(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	if req.KernelRef == "" {
		writeErr(w, api.Errorf(api.InvalidArgument, "--kernel-ref is required (kernels: %s)", s.kernelNames()))
		return
	}
	if _, err := s.kernels.Get(req.KernelRef); err != nil {
		writeErr(w, api.Errorf(api.NotFound, "kernel %q is not installed (kernels: %s)", req.KernelRef, s.kernelNames()).
			WithHint("pull one with: banger kernel pull generic-6.1"))
		return
	}
	st := newStream(w)
	im, err := s.images.Register(r.Context(), req.Name, req.Rootfs, req.KernelRef, st.Progress)
	if err != nil {
		st.finish(nil, fmt.Errorf("registering image %q: %w", req.Name, err))
		return
	}
	st.finish(imageView(im), nil)
}

func (s *Server) kernelNames() string {
	bs, _ := s.kernels.List()
	var names []string
	for _, b := range bs {
		names = append(names, b.Name)
	}
	if len(names) == 0 {
		return "none yet"
	}
	return strings.Join(names, ", ")
}

// entryRoutes serves the entries of a store (images, kernels) under
// /v1/<kind>s: the list, one by name, and the delete of one no VM uses.
func entryRoutes[T, V any](s *Server, mux *http.ServeMux, kind string,
	list func() ([]T, error), get func(string) (T, error), view func(T) V,
	users func(context.Context, string) ([]string, error), del func(context.Context, string) error) {
	mux.HandleFunc("GET /v1/"+kind+"s", func(w http.ResponseWriter, r *http.Request) {
		items, err := list()
		if err != nil {
			writeErr(w, err)
			return
		}
		out := make([]V, 0, len(items))
		for _, it := range items {
			out = append(out, view(it))
		}
		writeJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("GET /v1/"+kind+"s/{name}", func(w http.ResponseWriter, r *http.Request) {
		it, err := get(r.PathValue("name"))
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, view(it))
	})
	mux.HandleFunc("DELETE /v1/"+kind+"s/{name}", func(w http.ResponseWriter, r *http.Request) {
		s.deleteUnused(w, r, kind, users, del)
	})
}

// deleteUnused deletes the image or kernel the request names unless VMs
// use it; then it names them.
func (s *Server) deleteUnused(w http.ResponseWriter, r *http.Request, kind string,
	users func(context.Context, string) ([]string, error), del func(context.Context, string) error) {
	name := r.PathValue("name")
	vms, err := users(r.Context(), name)
	if err != nil {
		writeErr(w, err)
		return
	}
	if len(vms) > 0 {
		writeErr(w, api.Errorf(api.Conflict, "%s %q is used by vms: %s", kind, name, strings.Join(vms, ", ")).
			WithHint("delete those first (banger vm delete, banger snapshot delete)"))
		return
	}
	if err := del(r.Context(), name); err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"deleted": name})
}

// handleImageWarm makes the image's warm snapshot ahead of time.
func (s *Server) handleImageWarm(w http.ResponseWriter, r *http.Request) {
	st := newStream(w)
	sn, err := s.vms.warmImage(r.Context(), r.PathValue("name"), st.Progress)
	if err != nil {
		st.finish(nil, err)
		return
	}
	st.finish(sn, nil)
}
