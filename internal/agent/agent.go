// Package agent is the guest side of banger: it serves the daemon's
// requests (exec, files, sessions, reidentify after a restore, shutdown)
// over vsock or virtio-serial. The protocol lives in package guest.
package agent

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
	"golang.org/x/sys/unix"

	"banger/internal/guest"
	buildversion "banger/internal/version"
)

// handshakeTimeout bounds how long a connection may take to authenticate
// (a variable for tests).
var handshakeTimeout = 30 * time.Second

// Server answers agent requests. It is safe for concurrent use: every
// session and stream is served on its own goroutines.
type Server struct {
	logger   *slog.Logger
	powerOff func() error
	procs    procTable
	version  int    // protocol version spoken; guest.ProtocolVersion but in tests
	keyFile  string // the VM's agent key; guest.AgentKeyPath but in tests
	// sessions are the long-lived commands the agent owns; their output
	// is kept under sessionDir (guest.SessionDir but in tests).
	sessions   sessionTable
	sessionDir string
	// handshakes holds a token per connection still authenticating, so
	// unauthenticated peers cannot pile up goroutines.
	handshakes chan struct{}
	// root is where reidentify writes the guest's files ("/" but in
	// tests), sys what it changes in the kernel and the running system.
	root string
	sys  system
	// reidentifyMu serialises reidentify requests.
	reidentifyMu sync.Mutex
	// keyMu guards newKey: the agent key a reidentify put in force, which
	// takes precedence over keyFile (nil: none).
	keyMu  sync.Mutex
	newKey []byte
}

// maxHandshakes bounds the connections authenticating at once.
const maxHandshakes = 16

// NewServer returns a Server. powerOff is called after a Shutdown request
// has been answered; it should not return when it succeeds.
func NewServer(logger *slog.Logger, powerOff func() error) *Server {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Server{logger: logger, powerOff: powerOff, procs: procTable{pids: map[int]bool{}},
		version: guest.ProtocolVersion, keyFile: guest.AgentKeyPath,
		sessions: sessionTable{byName: map[string]*session{}}, sessionDir: guest.SessionDir,
		handshakes: make(chan struct{}, maxHandshakes), root: "/", sys: realSystem()}
}

// SetKeyFile makes s read the VM's agent key from path rather than from
// guest.AgentKeyPath: for an agent served in-process by a host's tests.
func (s *Server) SetKeyFile(path string) { s.keyFile = path }

// key returns the VM's agent key: the one the last reidentify set, else
// the key file's. The file is read for every handshake, so a key that
// appears later is used without a restart. Without a key every host is
// refused.
func (s *Server) key() []byte {
	s.keyMu.Lock()
	nk := s.newKey
	s.keyMu.Unlock()
	if nk != nil {
		return nk
	}
	k, err := ReadKeyFile(s.keyFile)
	if err != nil {
		s.logger.Error("no usable agent key: refusing every host", "err", err)
		return nil
	}
	return k
}

// setKey puts k in force for every later handshake.
func (s *Server) setKey(k []byte) {
	s.keyMu.Lock()
	defer s.keyMu.Unlock()
	s.newKey = append([]byte(nil), k...)
}

// ReadKeyFile reads an agent key file: KeySize bytes as hex.
func ReadKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 4*guest.KeySize))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	k, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(k) != guest.KeySize {
		return nil, fmt.Errorf("%s: not a hex key of %d bytes", path, guest.KeySize)
	}
	return k, nil
}

// accept runs the handshake on conn and logs a peer that fails it.
func (s *Server) accept(rw io.ReadWriter, peer string) (io.Reader, error) {
	r, err := guest.AcceptHost(rw, s.key)
	if errors.Is(err, guest.ErrUnauthenticated) {
		s.logger.Warn("refused an unauthenticated host", "peer", peer, "err", err)
	}
	return r, err
}

// procTable records the processes exec started, so that an init-mode
// reaper leaves them to their own Wait.
type procTable struct {
	mu   sync.Mutex // guards pids; held across start+record
	pids map[int]bool
}

// start runs startFn with the table locked and records the started pid.
func (t *procTable) start(startFn func() (int, error)) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	pid, err := startFn()
	if err == nil {
		t.pids[pid] = true
	}
	return pid, err
}

func (t *procTable) forget(pid int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.pids, pid)
}

// ServeConn serves one host connection (a vsock connection, or a test's
// socket): the handshake, then a yamux session until the host goes away
// or ctx is done. A host that fails authentication (or does not finish
// within handshakeTimeout, or comes while maxHandshakes others are
// authenticating) gets nothing. It closes conn, and returns nil when the
// host left.
func (s *Server) ServeConn(ctx context.Context, conn io.ReadWriteCloser, peer string) error {
	select {
	case s.handshakes <- struct{}{}:
	default:
		conn.Close()
		s.logger.Warn("refused a connection: too many handshakes in progress", "peer", peer)
		return errors.New("too many handshakes in progress")
	}
	hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	stop := context.AfterFunc(hctx, func() { conn.Close() })
	r, err := s.accept(conn, peer)
	stopped := stop()
	cancel()
	<-s.handshakes
	if err == nil && !stopped {
		err = errors.New("handshake timed out")
	}
	if err != nil {
		conn.Close()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("handshake: %w", err)
	}
	return s.serveSession(ctx, &splitConn{Reader: r, rwc: conn})
}

// splitConn reads from Reader and writes to and closes rwc.
type splitConn struct {
	io.Reader
	rwc io.ReadWriteCloser
}

func (c *splitConn) Write(p []byte) (int, error) { return c.rwc.Write(p) }
func (c *splitConn) Close() error                { return c.rwc.Close() }

// serveSession runs a yamux server session over conn until it ends.
func (s *Server) serveSession(ctx context.Context, conn io.ReadWriteCloser) error {
	sess, err := yamux.Server(conn, guest.YamuxConfig(s.logger))
	if err != nil {
		conn.Close()
		return fmt.Errorf("starting session: %w", err)
	}
	s.logger.Info("host connected")
	defer s.logger.Info("host disconnected")
	stop := context.AfterFunc(ctx, func() { sess.Close() })
	defer stop()
	defer sess.Close()
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, yamux.ErrSessionShutdown) || errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("accepting stream: %w", err)
		}
		go s.serveStream(ctx, st)
	}
}

// serveStream reads a stream's request and runs it.
func (s *Server) serveStream(ctx context.Context, conn net.Conn) {
	defer conn.Close()
	fw := guest.NewFrameWriter(conn)
	f, err := guest.ReadFrame(conn)
	if err != nil {
		s.logger.Debug("reading request", "err", err)
		return
	}
	var req guest.Request
	if err := guest.DecodeJSON(f, guest.FrameRequest, &req); err != nil {
		_ = fw.WriteError(invalid("%v", err))
		return
	}
	if req.Op != guest.OpHello && req.Version != s.version {
		_ = fw.WriteError(invalid("bangerd speaks protocol v%d, this agent v%d", req.Version, s.version))
		return
	}
	s.logger.Debug("request", "op", req.Op)
	if s.hostile(conn, &req) {
		return
	}
	switch {
	case req.Op == guest.OpHello:
		err = fw.WriteJSON(guest.FrameResponse, guest.Response{Hello: hello(s.version)})
	case req.Op == guest.OpExec && req.Exec != nil:
		err = s.exec(ctx, conn, fw, req.Exec)
	case req.Op == guest.OpPut && req.Put != nil:
		err = s.put(conn, fw, req.Put)
	case req.Op == guest.OpGet && req.Get != nil:
		err = s.get(fw, req.Get)
	case req.Op == guest.OpPutTar && req.PutTar != nil:
		err = s.putTar(ctx, conn, fw, req.PutTar)
	case req.Op == guest.OpSessionStart && req.SessionStart != nil:
		err = s.sessionStart(fw, req.SessionStart)
	case req.Op == guest.OpSessionList:
		err = s.sessionList(fw)
	case req.Op == guest.OpSessionAttach && req.SessionAttach != nil:
		err = s.sessionAttach(conn, fw, req.SessionAttach)
	case req.Op == guest.OpSessionControl && req.SessionControl != nil:
		err = s.sessionControl(fw, req.SessionControl)
	case req.Op == guest.OpReidentify && req.Reidentify != nil:
		err = s.reidentify(ctx, fw, req.Reidentify)
	case req.Op == guest.OpShutdown:
		err = s.shutdown(fw)
	default:
		err = fw.WriteError(invalid("unknown or incomplete request %q", req.Op))
	}
	if err != nil {
		s.logger.Warn("request ended", "op", req.Op, "err", err)
	}
}

func invalid(format string, args ...any) *guest.RemoteError {
	return &guest.RemoteError{Kind: guest.KindInvalid, Message: fmt.Sprintf(format, args...)}
}

// hello describes this guest.
func hello(version int) *guest.Info {
	info := &guest.Info{ProtocolVersion: version, AgentVersion: buildversion.String()}
	var uts unix.Utsname
	if unix.Uname(&uts) == nil {
		info.KernelRelease = string(bytes.TrimRight(uts.Release[:], "\x00"))
	}
	info.Hostname, _ = os.Hostname()
	for _, p := range []string{"/usr/sbin/sshd", "/usr/bin/sshd", "/sbin/sshd"} {
		if _, err := os.Stat(p); err == nil {
			info.SSHD = true
			break
		}
	}
	return info
}

// shutdown answers, then powers off in the background so that the answer
// leaves first.
func (s *Server) shutdown(fw *guest.FrameWriter) error {
	if s.powerOff == nil {
		return fw.WriteError(invalid("this agent cannot power off"))
	}
	if err := fw.WriteJSON(guest.FrameResponse, guest.Response{}); err != nil {
		return err
	}
	s.logger.Info("powering off on request")
	go func() {
		if err := s.powerOff(); err != nil {
			s.logger.Error("powering off", "err", err)
		}
	}()
	return nil
}
