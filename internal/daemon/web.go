package daemon

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/doctor"
	"banger/internal/web"
)

// webState is what GET /v1/version and doctor say of the web UI.
type webState struct {
	mu sync.Mutex // guards st
	st api.WebStatus
}

func (w *webState) get() api.WebStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.st
}

func (w *webState) set(st api.WebStatus) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.st = st
}

// serveWeb serves the web UI on web_listen_addr under g, with the same API
// handler the socket serves. A listener that cannot be opened (the port in
// use) does not stop the daemon: the error goes to the log and to doctor,
// and everything else goes on.
func (s *Server) serveWeb(ctx context.Context, g *errgroup.Group, apiHandler http.Handler) {
	addr := s.opts.Config.WebListenAddr
	remote := addr != "" && !config.WebLoopback(addr)
	st := api.WebStatus{Addr: addr, Remote: remote}
	if addr == "" {
		s.web.set(st)
		s.log.Info("web ui disabled (web_listen_addr = \"\")")
		return
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		st.Error = err.Error()
		s.web.set(st)
		s.log.Error("web ui not served: cannot listen; the daemon goes on without it", "addr", addr, "err", err,
			"fix", "free the port, or set web_listen_addr in config.toml, then banger daemon stop")
		return
	}
	st.URL = "http://" + ln.Addr().String() + "/"
	s.web.set(st)
	if remote {
		s.log.Warn("web ui reachable beyond loopback (web_allow_remote = true): it has no login", "url", st.URL)
	}
	h := web.New(web.Options{API: apiHandler, Remote: remote, Logger: s.log})
	srv := &http.Server{
		Handler:           h,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ReadHeaderTimeout: 10 * time.Second,
	}
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("web ui stopped", "err", err)
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		sctx, c := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer c()
		srv.Shutdown(sctx)
		return nil
	})
	s.log.Info("web ui serving", "url", st.URL)
}

// handleDoctor runs the host checks as the daemon sees the host, for the
// web UI's doctor page (banger doctor runs the same checks in the CLI).
func (s *Server) handleDoctor(w http.ResponseWriter, r *http.Request) {
	rep := doctor.Run(r.Context(), doctor.Options{
		Config:   s.opts.Config,
		StateDir: s.opts.Dirs.State,
		Web:      func(context.Context) (api.WebStatus, error) { return s.web.get(), nil },
	})
	writeJSON(w, http.StatusOK, rep)
}
