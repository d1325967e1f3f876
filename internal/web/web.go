// Package web is bangerd's browser UI: a few static pages (embedded, no
// CDN) that drive the daemon through its own API, mounted under /api/, so
// the page can do nothing the CLI cannot and sees the same state.
//
// Security: the UI has no login. By default it listens on loopback only;
// every request must name a loopback Host (so a DNS-rebinding page cannot
// reach it), and every state-changing request must come from the page's
// own Origin and carry the per-daemon token embedded in the page (CSRF).
// Only the API endpoints the pages need are mounted: no file transfer, no
// exec, no ssh details, no daemon shutdown.
package web

import (
	"bytes"
	"context"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"

	"banger/internal/api"
)

//go:embed assets
var assets embed.FS

var indexTmpl = template.Must(template.ParseFS(assets, "assets/index.html"))

// TokenHeader carries the CSRF token on state-changing requests.
const TokenHeader = "X-Banger-Token"

// Options configure a Handler.
type Options struct {
	// API is the daemon's API handler, the same one its Unix socket
	// serves (paths /v1/...).
	API http.Handler
	// Remote is set when web_allow_remote let a non-loopback address in:
	// any Host is accepted and the page shows a warning.
	Remote bool
	Logger *slog.Logger
}

// Handler serves the UI.
type Handler struct {
	opts  Options
	token string
	mux   *http.ServeMux
}

// New returns the UI's handler with a fresh random token: each daemon
// start makes a new one, so a page from an earlier daemon must fetch the
// page again (app.js does) before it can change anything.
func New(o Options) *Handler {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	b := make([]byte, 32)
	rand.Read(b)
	h := &Handler{opts: o, token: hex.EncodeToString(b), mux: http.NewServeMux()}
	static, _ := fs.Sub(assets, "assets")
	h.mux.HandleFunc("GET /{$}", h.index)
	h.mux.Handle("GET /assets/", http.StripPrefix("/assets/", http.FileServerFS(static)))
	h.mux.HandleFunc("GET /ws/vms/{name}/sessions/{session}", h.terminal)
	h.apiRoutes()
	return h
}

// Token is this handler's CSRF token.
func (h *Handler) Token() string { return h.token }

// apiRoutes mounts, under /api, the API endpoints the pages use and no
// others.
func (h *Handler) apiRoutes() {
	fwd := http.StripPrefix("/api", h.opts.API)
	for _, p := range []string{
		"GET /api/v1/version",
		"GET /api/v1/events",
		"GET /api/v1/doctor",
		"GET /api/v1/vms",
		"GET /api/v1/vms/{name}",
		"DELETE /api/v1/vms/{name}",
		"POST /api/v1/vms/{name}/start",
		"POST /api/v1/vms/{name}/stop",
		"POST /api/v1/vms/{name}/snapshot",
		"POST /api/v1/vms/{name}/fork",
		"GET /api/v1/vms/{name}/logs",
		"GET /api/v1/vms/{name}/sessions",
		"POST /api/v1/vms/{name}/sessions",
		"GET /api/v1/vms/{name}/sessions/{session}",
		"POST /api/v1/vms/{name}/sessions/{session}/stop",
		"POST /api/v1/vms/{name}/sessions/{session}/resize",
		"GET /api/v1/vms/{name}/sessions/{session}/logs",
		"GET /api/v1/images",
		"GET /api/v1/kernels",
	} {
		h.mux.Handle(p, fwd)
	}
	h.mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, api.Errorf(api.NotFound, "%s %s is not available from the web UI", r.Method, strings.TrimPrefix(r.URL.Path, "/api")).
			WithHint("use the banger CLI"))
	})
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	// The page loads only its own files and talks only to its origin.
	hdr.Set("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'")
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Referrer-Policy", "no-referrer")
	if err := h.check(r); err != nil {
		h.opts.Logger.Warn("refused web request", "method", r.Method, "path", r.URL.Path,
			"origin", r.Header.Get("Origin"), "host", r.Host, "remote", r.RemoteAddr, "err", err.Message)
		writeError(w, err)
		return
	}
	h.mux.ServeHTTP(w, r)
}

func (h *Handler) index(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	indexTmpl.Execute(w, struct {
		Token  string
		Remote bool
	}{h.token, h.opts.Remote})
}

func writeError(w http.ResponseWriter, e *api.Error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.Code.HTTPStatus())
	json.NewEncoder(w).Encode(api.ErrorBody{Error: e})
}

// call sends one request to the API in process and decodes its JSON
// answer into out: the UI's own server side is a client of the API too.
func (h *Handler) call(ctx context.Context, method, path string, body, out any) error {
	var rd bytes.Buffer
	if body != nil {
		json.NewEncoder(&rd).Encode(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, path, &rd)
	if err != nil {
		return err
	}
	req.ContentLength = int64(rd.Len())
	rec := &recorder{header: http.Header{}, status: http.StatusOK}
	h.opts.API.ServeHTTP(rec, req)
	if rec.status >= 300 {
		var eb api.ErrorBody
		if json.Unmarshal(rec.body.Bytes(), &eb) == nil && eb.Error != nil {
			return eb.Error
		}
		return fmt.Errorf("%s %s: status %d", method, path, rec.status)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(rec.body.Bytes(), out)
}

// recorder is the ResponseWriter of an in-process API call.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) Write(p []byte) (int, error) { return r.body.Write(p) }
func (r *recorder) WriteHeader(code int)        { r.status = code }
