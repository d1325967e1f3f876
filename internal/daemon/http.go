package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/image"
	"banger/internal/kernel"
	"banger/internal/network"
	"banger/internal/store"
	"banger/internal/version"
	"banger/internal/vmm"
)

// toAPI maps an error to its API category, keeping an *api.Error as is.
// It is the one place where the sentinel errors of the stores, the
// network and the drivers get their category and, where it helps, a hint;
// their messages already say what failed.
func toAPI(err error) *api.Error {
	var e *api.Error
	var ne *net.OpError
	switch {
	case errors.As(err, &e):
		return e
	case errors.Is(err, context.Canceled):
		return api.Errorf(api.Canceled, "%s", err)
	case errors.Is(err, context.DeadlineExceeded):
		return api.Errorf(api.Timeout, "%s", err)
	case errors.Is(err, image.ErrNotExist):
		return api.Errorf(api.NotFound, "%s", err).WithHint("see banger image list, or add one with banger image register")
	case errors.Is(err, kernel.ErrNotExist):
		return api.Errorf(api.NotFound, "%s", err).WithHint("see banger kernel list; catalog kernels: " + strings.Join(kernel.CatalogNames(), ", "))
	case errors.Is(err, image.ErrNoImage):
		return api.Errorf(api.NotFound, "%s", err).WithHint("check the reference's repository and tag")
	case errors.Is(err, store.ErrNotExist), errors.Is(err, network.ErrNotExist):
		return api.Errorf(api.NotFound, "%s", err)
	case errors.Is(err, store.ErrExist), errors.Is(err, image.ErrExist), errors.Is(err, kernel.ErrExist),
		errors.Is(err, network.ErrExhausted), errors.Is(err, network.ErrOverlap), errors.Is(err, network.ErrNotOurs),
		errors.Is(err, network.ErrClaimed):
		return api.Errorf(api.Conflict, "%s", err)
	case errors.Is(err, image.ErrDigest):
		return api.Errorf(api.InvalidArgument, "%s", err).WithHint("the source served corrupt data; verified layers are kept, pull again")
	case errors.Is(err, image.ErrInvalid), errors.Is(err, kernel.ErrInvalid), errors.Is(err, image.ErrPlatform),
		errors.Is(err, image.ErrUnsafeEntry):
		return api.Errorf(api.InvalidArgument, "%s", err)
	case errors.Is(err, image.ErrNoSpace):
		return api.Errorf(api.Unavailable, "%s", err).WithHint("free space there (banger image delete removes an image no vm uses), then run the same command again")
	case errors.Is(err, network.ErrNoTun), errors.Is(err, network.ErrNoNetAdmin),
		errors.Is(err, vmm.ErrUnavailable):
		return api.Errorf(api.Unavailable, "%s", err)
	case errors.As(err, &ne):
		// The daemon dials out only to pull: registries, mirrors, bundles.
		return api.Errorf(api.Unavailable, "%s", err).WithHint("is the registry or mirror reachable from this host?")
	}
	return api.Errorf(api.Internal, "%s", err)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeErr(w http.ResponseWriter, err error) {
	e := toAPI(err)
	writeJSON(w, e.Code.HTTPStatus(), api.ErrorBody{Error: e})
}

func decode(r *http.Request, v any) error {
	if r.ContentLength == 0 {
		return nil
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return api.Errorf(api.InvalidArgument, "bad request body: %v", err)
	}
	return nil
}

// withVersion stamps every response with the daemon's build version.
func withVersion(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(api.VersionHeader, version.String())
		h.ServeHTTP(w, r)
	})
}

// stream is a progress stream: newline-delimited api.Events. It ends with
// exactly one result or error event.
type stream struct {
	mu sync.Mutex
	w  http.ResponseWriter
	f  http.Flusher
}

func newStream(w http.ResponseWriter) *stream {
	w.Header().Set("Content-Type", api.StreamContentType)
	w.WriteHeader(http.StatusOK)
	f, _ := w.(http.Flusher)
	s := &stream{w: w, f: f}
	s.flush()
	return s
}

func (s *stream) flush() {
	if s.f != nil {
		s.f.Flush()
	}
}

func (s *stream) send(ev api.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, _ := json.Marshal(ev)
	s.w.Write(append(b, '\n'))
	s.flush()
}

// Progress reports a phase, with done/total when known.
func (s *stream) Progress(phase string, done, total int64) {
	s.send(api.Event{Type: api.EventProgress, Phase: phase, Done: done, Total: total})
}

// Log sends a line for the user.
func (s *stream) Log(msg string) { s.send(api.Event{Type: api.EventLog, Message: msg}) }

// finish ends the stream with v or err.
func (s *stream) finish(v any, err error) {
	if err != nil {
		s.send(api.Event{Type: api.EventError, Error: toAPI(err)})
		return
	}
	b, _ := json.Marshal(v)
	s.send(api.Event{Type: api.EventResult, Result: b})
}

// progressFunc is the one progress callback (image.Progress, kernel.Progress);
// a stream's Progress method is one.
type progressFunc = image.Progress

// peerKey is the context key of the connecting process's credentials.
type peerKey struct{}

// peer is who is on the other end of an API connection (SO_PEERCRED).
type peer struct {
	uid, pid int
	err      error
}

// withPeer records the peer's credentials for peerCheck.
func withPeer(ctx context.Context, c net.Conn) context.Context {
	p := peer{uid: -1}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		p.err = errors.New("not a unix socket connection")
		return context.WithValue(ctx, peerKey{}, p)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		p.err = err
		return context.WithValue(ctx, peerKey{}, p)
	}
	cerr := raw.Control(func(fd uintptr) {
		var cred *unix.Ucred
		cred, p.err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if p.err == nil {
			p.uid, p.pid = int(cred.Uid), int(cred.Pid)
		}
	})
	if cerr != nil {
		p.err = cerr
	}
	return context.WithValue(ctx, peerKey{}, p)
}

// peerCheck serves only root and the user this daemon serves
// (config.InvokingUID); everyone else gets 403 with a reason, and a log
// line.
func (s *Server) peerCheck(h http.Handler) http.Handler {
	allowed := map[int]bool{0: true, os.Geteuid(): true, config.InvokingUID(): true}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, ok := r.Context().Value(peerKey{}).(peer)
		if !ok {
			p = peer{uid: -1, err: errors.New("no peer credentials")}
		}
		if p.err == nil && allowed[p.uid] {
			h.ServeHTTP(w, r)
			return
		}
		s.log.Warn("refused api connection", "uid", p.uid, "pid", p.pid, "err", p.err, "path", r.URL.Path)
		writeErr(w, api.Errorf(api.PermissionDenied, "bangerd (state directory %s) serves only root and uid %d, not uid %d",
			s.opts.Dirs.State, config.InvokingUID(), p.uid).
			WithHint("run banger as the user who started the daemon, or start your own daemon with BANGER_HOME set to a directory you own"))
	})
}
