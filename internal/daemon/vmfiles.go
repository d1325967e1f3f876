package daemon

import (
	"context"
	"fmt"
	"io/fs"
	"net/http"
	"strconv"

	"banger/internal/api"
	"banger/internal/guest"
)

func (s *Server) fileRoutes(mux *http.ServeMux) {
	mux.HandleFunc("PUT /v1/vms/{name}/files", s.handlePutFile)
	mux.HandleFunc("GET /v1/vms/{name}/files", s.handleGetFile)
}

// agentFor returns the agent of a running VM named in the request.
func (s *Server) agentFor(r *http.Request) (*guest.Client, error) {
	v, err := s.vms.get(r.Context(), r.PathValue("name"))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(r.Context(), agentDialTimeout)
	defer cancel()
	a, err := s.vms.agent(ctx, v)
	if err != nil {
		return nil, fmt.Errorf("vm %q: %w", v.Name, err)
	}
	return a, nil
}

func (s *Server) handlePutFile(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	path := q.Get("path")
	if path == "" || path[0] != '/' {
		writeErr(w, api.Errorf(api.InvalidArgument, "path %q must be absolute in the guest", path))
		return
	}
	mode := fs.FileMode(0o644)
	if ms := q.Get("mode"); ms != "" {
		v, err := strconv.ParseUint(ms, 8, 32)
		if err != nil {
			writeErr(w, api.Errorf(api.InvalidArgument, "mode %q is not octal", ms))
			return
		}
		mode = fs.FileMode(v)
	}
	a, err := s.agentFor(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	if err := a.Put(r.Context(), path, mode, 0, 0, r.Body); err != nil {
		writeErr(w, fmt.Errorf("vm %q: %w", r.PathValue("name"), err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"path": path})
}

// lazyWriter sends the 200 header only when the first byte arrives, so an
// error before that can still be an error response.
type lazyWriter struct {
	w       http.ResponseWriter
	started bool
}

func (l *lazyWriter) Write(p []byte) (int, error) {
	if !l.started {
		l.w.Header().Set("Content-Type", "application/octet-stream")
		l.w.WriteHeader(http.StatusOK)
		l.started = true
	}
	return l.w.Write(p)
}

func (s *Server) handleGetFile(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Query().Get("path")
	a, err := s.agentFor(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	lw := &lazyWriter{w: w}
	_, err = a.Get(r.Context(), path, lw)
	switch {
	case err == nil && !lw.started:
		lw.Write(nil) // an empty file
	case err != nil && !lw.started:
		if ge := guest.ToRemoteError(err); ge.Kind == guest.KindNotExist {
			err = api.Errorf(api.NotFound, "%s does not exist in the guest of vm %q", path, r.PathValue("name"))
		}
		writeErr(w, fmt.Errorf("vm %q: %w", r.PathValue("name"), err))
	case err != nil:
		panic(http.ErrAbortHandler) // the client sees a truncated body, not a short file
	}
}
