// Package daemon is bangerd: it owns the state database, the VMM processes
// and the image and kernel stores, and serves the HTTP/JSON API on a Unix
// socket that only the invoking user (and root) can open.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"golang.org/x/sync/errgroup"

	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/guest"
	"banger/internal/image"
	"banger/internal/kernel"
	"banger/internal/portfwd"
	"banger/internal/session"
	"banger/internal/store"
	"banger/internal/version"
)

// Options configure a Server.
type Options struct {
	Dirs   config.Dirs
	Config config.Config
	Logger *slog.Logger
	// AgentBin is the static guest agent put into initrds and images.
	AgentBin string
}

// Server is one running bangerd.
type Server struct {
	opts    Options
	log     *slog.Logger
	store   *store.Store
	started time.Time

	// shutdown is called to stop Run, e.g. by POST /v1/shutdown.
	shutdown context.CancelFunc
	// vmmUser is who VMMs run as; nil: root.
	vmmUser *vmmUser

	vms      *vmManager
	sessions *session.Manager
	net      *netService
	images   *image.Store
	kernels  *kernel.Store
	pulls    keyedMutex // by image name: one pull of a name at a time
	events   *eventBus  // VM changes, for GET /v1/events
	web      webState
}

// Run serves until ctx is done. It takes the state directory's lock
// first: a second daemon on the same directory gets ErrAlreadyRunning.
func Run(ctx context.Context, opts Options) error {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if err := prepareStateDir(opts.Dirs); err != nil {
		return err
	}
	lock, err := waitLock(ctx, opts.Dirs)
	if err != nil {
		return err
	}
	defer lock.release()

	dbPath := filepath.Join(opts.Dirs.State, "state.db")
	if err := privateFile(dbPath); err != nil {
		return err
	}
	st, err := store.Open(ctx, dbPath)
	if err != nil {
		return err
	}
	defer st.Close()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := newServer(ctx, opts, st, cancel)
	if err != nil {
		return err
	}
	defer s.net.close()
	defer s.vms.close()
	defer s.sessions.Close()
	if err := s.vms.adoptAll(ctx); err != nil {
		s.log.Error("re-adopting vms", "err", err)
	}
	s.sessions.Restore(ctx, func(id string) bool { return s.vms.machine(id) != nil })
	if err := s.net.reconcile(ctx); err != nil {
		s.log.Error("reconciling network", "err", err)
	}
	return s.serve(ctx)
}

// newServer wires the daemon's parts together over the state st: the
// image and kernel stores (cleaning what a killed pull left), the VMM
// user and drivers, the network and the VMs.
func newServer(ctx context.Context, opts Options, st *store.Store, shutdown context.CancelFunc) (*Server, error) {
	s := &Server{opts: opts, log: opts.Logger, store: st, started: time.Now(), shutdown: shutdown, events: newEventBus()}
	st.OnVMChange(s.events.vmChanged)
	s.images = &image.Store{Dir: filepath.Join(opts.Dirs.State, "images"), AgentBin: opts.AgentBin,
		Limits: image.Limits{Bytes: opts.Config.ImageMaxBytes, Entries: opts.Config.ImageMaxEntries}}
	s.kernels = &kernel.Store{
		Dir:      filepath.Join(opts.Dirs.State, "kernels"),
		CacheDir: filepath.Join(opts.Dirs.Cache, "downloads"),
		AgentBin: opts.AgentBin,
		Logger:   opts.Logger,
		Keyring:  opts.Config.DebianKeyring,
	}
	// What a daemon killed mid-pull left: staging trees (and debootstrap's
	// mounts in them), partial blobs, an image moved aside mid-replace.
	s.images.RemoveStale(s.started, filepath.Join(opts.Dirs.Cache, "oci"))
	s.kernels.RemoveStale(s.started)
	s.vmmUser = ensureVMMUser(ctx, opts.Logger)
	drivers, def := newDrivers(opts.Config, opts.Logger, s.vmmUser)
	s.log.Info("vmm chosen", "vmm", def.VMM, "accel", def.Accel, "reason", def.Reason)
	var err error
	if s.net, err = newNetService(ctx, opts.Config, opts.Dirs.State, st, s.log, s.vmmUser); err != nil {
		return nil, err
	}
	s.sessions = session.New(ctx, session.Options{
		Store: st,
		// s.vms is set below, before anything can start a session.
		Agent:     func(ctx context.Context, id string) (*guest.Client, error) { return s.vms.agentByID(ctx, id) },
		Listen:    listen,
		SocketDir: filepath.Join(opts.Dirs.RunDir(), "sessions"),
		UID:       config.InvokingUID(), GID: config.InvokingGID(),
		LogMax: int64(opts.Config.SessionLogMaxMiB) << 20,
		Logger: s.log,
	})
	ports := portfwd.New(ctx, s.log)
	ports.Kernel = s.net
	s.vms = newVMManager(vmParts{
		store: st, images: s.images, kernels: s.kernels, net: s.net, drivers: drivers, def: def.VMM, log: s.log,
		sessions: s.sessions, ports: ports,
		cfg: vmSettings{
			VMsDir:        filepath.Join(opts.Dirs.State, "vms"),
			DefaultImage:  opts.Config.DefaultImageName,
			ConsoleLogMax: int64(opts.Config.ConsoleLogMaxMiB) << 20,
			VCPUs:         opts.Config.VMCPUs,
			MemoryMiB:     opts.Config.VMMemoryMiB,
			DiskBytes:     opts.Config.VMDiskBytes,
			UserSSHKey:    opts.Config.SSHKey(opts.Dirs),
			WarmStart:     opts.Config.WarmStart,
			Credentials: credentialSettings{Files: opts.Config.Credentials(config.UserHome()),
				UID: config.InvokingUID(), GID: config.InvokingGID()},
		},
	})
	return s, nil
}

// serve answers the API on the daemon's socket until ctx is done.
func (s *Server) serve(ctx context.Context) error {
	ln, err := listen(s.opts.Dirs.Socket())
	if err != nil {
		return err
	}
	mux := s.routes()
	srv := &http.Server{
		Handler:     withVersion(s.peerCheck(mux)),
		BaseContext: func(net.Listener) context.Context { return ctx },
		ConnContext: withPeer,
	}
	g, gctx := errgroup.WithContext(ctx)
	s.serveWeb(gctx, g, withVersion(mux))
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, c := context.WithTimeout(context.WithoutCancel(gctx), 5*time.Second)
		defer c()
		srv.Shutdown(sctx)
		os.Remove(s.opts.Dirs.Socket())
		return nil
	})
	s.log.Info("bangerd serving", "socket", s.opts.Dirs.Socket(), "version", version.String(), "pid", os.Getpid())
	return g.Wait()
}

// listen opens the API socket in the run directory (0700, owned by the
// user the daemon serves). We hold the lock, so any socket file left is
// stale (from a killed daemon) and is replaced. The socket is 0600 and
// handed to that user; peerCheck still checks every connection's uid.
func listen(path string) (net.Listener, error) {
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("removing stale socket %s: %w", path, err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", path, err)
	}
	if err := chmodNoFollow(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	if uid := config.InvokingUID(); os.Geteuid() == 0 && uid != 0 {
		if err := os.Lchown(path, uid, config.InvokingGID()); err != nil {
			ln.Close()
			return nil, fmt.Errorf("handing %s to uid %d: %w", path, uid, err)
		}
	}
	return ln, nil
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/version", s.handleVersion)
	mux.HandleFunc("POST /v1/shutdown", s.handleShutdown)
	mux.HandleFunc("GET /v1/network", s.handleNetwork)
	mux.HandleFunc("GET /v1/events", s.handleEvents)
	mux.HandleFunc("GET /v1/doctor", s.handleDoctor)
	s.vmRoutes(mux)
	s.sessionRoutes(mux)
	s.kernelRoutes(mux)
	s.imageRoutes(mux)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeErr(w, api.Errorf(api.NotFound, "no API endpoint %s %s (is this banger older than bangerd?)", r.Method, r.URL.Path))
	})
	return mux
}

func (s *Server) handleVersion(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.versionInfo())
}

func (s *Server) versionInfo() api.VersionInfo {
	return api.VersionInfo{
		Version:    version.String(),
		APIVersion: api.Version,
		PID:        os.Getpid(),
		StateDir:   s.opts.Dirs.State,
		StartedAt:  s.started,
		Web:        s.web.get(),
		Goroutines: runtime.NumGoroutine(),
	}
}

func (s *Server) handleShutdown(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "stopping"})
	go s.shutdown()
}
