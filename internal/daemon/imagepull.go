package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"

	"banger/internal/api"
	"banger/internal/catalog"
	"banger/internal/image"
	"banger/internal/kernel"
)

// defaultKernel is the kernel an image boots unless told otherwise.
const defaultKernel = "generic-6.1"

// imagePullRoutes registers image pull, export and import.
func (s *Server) imagePullRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/images/pull", s.handleImagePull)
	mux.HandleFunc("POST /v1/images/export", s.handleImageExport)
	mux.HandleFunc("POST /v1/images/import", s.handleImageImport)
}

func (s *Server) handleImagePull(w http.ResponseWriter, r *http.Request) {
	var req api.PullImageRequest
	if err := decode(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	entry, isCatalog := catalog.Lookup(req.Ref)
	if !isCatalog && !strings.ContainsAny(req.Ref, "/:@") {
		writeErr(w, api.Errorf(api.InvalidArgument, "unknown image %q (catalog images: %s)", req.Ref, strings.Join(catalog.Names(), ", ")).
			WithHint("or give an OCI reference such as docker.io/library/alpine:3.20"))
		return
	}
	st := newStream(w)
	im, err := s.pullImage(r.Context(), req, entry, isCatalog, st)
	if err != nil {
		st.finish(nil, fmt.Errorf("pulling %s: %w", req.Ref, err))
		return
	}
	// A refresh replaced the image: the base of the old one goes once no
	// VM builds on it.
	s.vms.gcLayers(r.Context(), false)
	st.finish(imageView(im), nil)
}

// pullImage makes the image req asks for, unless it is there and no
// refresh was asked for. e is its catalog entry when isCatalog. Pulls of
// one name take turns: a second caller (say vm run pulling the default
// image) waits, then finds it made.
func (s *Server) pullImage(ctx context.Context, req api.PullImageRequest, e catalog.Entry, isCatalog bool, st *stream) (image.Image, error) {
	name := req.Name
	if name == "" && isCatalog {
		name = e.Name
	}
	if name == "" {
		ref, err := image.ParseRef(req.Ref)
		if err != nil {
			return image.Image{}, err
		}
		name = image.DefaultName(ref)
	}
	if err := image.ValidName(name); err != nil {
		return image.Image{}, err
	}
	defer s.pulls.lock(name)()
	if im, err := s.images.Get(name); err == nil && !req.Refresh {
		st.Log(fmt.Sprintf("image %s is already present (use --refresh to rebuild it)", name))
		return im, nil
	}
	kernelRef := req.KernelRef
	if kernelRef == "" {
		kernelRef = defaultKernel
		if isCatalog {
			kernelRef = e.KernelRef
		}
	}
	if err := s.ensureKernel(ctx, kernelRef, st); err != nil {
		if isCatalog {
			return image.Image{}, err
		}
		st.Log(fmt.Sprintf("warning: %v; the image is pulled anyway (later: banger kernel pull %s)", err, kernelRef))
	}
	cache := filepath.Join(s.opts.Dirs.Cache, "oci")
	if isCatalog {
		mirror := s.opts.Config.DebianMirror
		if mirror == "" && e.Kind == catalog.Debootstrap {
			mirror = kernel.HostMirror("/", e.Suite)
		}
		e.KernelRef = kernelRef
		return s.images.PullCatalog(ctx, e, image.CatalogOptions{Name: name, Mirror: mirror, SizeBytes: req.SizeBytes,
			CacheDir: cache, Progress: st.Progress})
	}
	return s.images.PullOCI(ctx, image.PullOptions{Ref: req.Ref, Name: name, KernelRef: kernelRef, SizeBytes: req.SizeBytes,
		CacheDir: cache, Progress: st.Progress})
}

// ensureKernel pulls a catalog kernel the image needs when it is missing.
func (s *Server) ensureKernel(ctx context.Context, name string, st *stream) error {
	if _, err := s.kernels.Get(name); err == nil {
		return nil
	}
	if _, ok := kernel.Catalog[name]; !ok {
		return fmt.Errorf("kernel %q is not installed (kernels: %s)", name, s.kernelNames())
	}
	st.Log("kernel " + name + " is not installed: pulling it first")
	if _, err := s.kernels.Pull(ctx, name, s.opts.Config.DebianMirror, st.Progress); err != nil && !errors.Is(err, kernel.ErrExist) {
		return fmt.Errorf("pulling kernel %s: %w", name, err)
	}
	return nil
}

func (s *Server) handleImageExport(w http.ResponseWriter, r *http.Request) {
	var req api.ExportImageRequest
	if err := decode(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	if !filepath.IsAbs(req.Output) {
		writeErr(w, api.Errorf(api.InvalidArgument, "-o %q must be an absolute path", req.Output))
		return
	}
	if _, err := s.images.Get(req.Name); err != nil {
		writeErr(w, err)
		return
	}
	st := newStream(w)
	sum, err := s.images.ExportBundle(r.Context(), req.Name, req.Output, st.Progress)
	if err != nil {
		st.finish(nil, err)
		return
	}
	st.finish(api.ExportImageResult{Path: req.Output, SHA256: sum}, nil)
}

func (s *Server) handleImageImport(w http.ResponseWriter, r *http.Request) {
	var req api.ImportImageRequest
	if err := decode(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	remote := strings.HasPrefix(req.Source, "http://") || strings.HasPrefix(req.Source, "https://")
	if !remote && !filepath.IsAbs(req.Source) {
		writeErr(w, api.Errorf(api.InvalidArgument, "bundle %q must be an absolute path or an http(s) URL", req.Source))
		return
	}
	st := newStream(w)
	im, err := s.images.ImportURL(r.Context(), req.Source, image.ImportOptions{Name: req.Name, SHA256: req.SHA256, Progress: st.Progress})
	if err != nil {
		st.finish(nil, fmt.Errorf("importing %s: %w", req.Source, err))
		return
	}
	st.finish(imageView(im), nil)
}
