// Package session is the daemon's side of sessions: long-lived guest
// commands that the guest agent owns (they outlive the CLI, every attach
// and the daemon). The Manager records them in the store, mirrors their
// output to the host under a size cap, and serves one Unix socket per
// running session that any host tool can open (see docs/sessions.md).
package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"banger/internal/api"
	"banger/internal/crashpoint"
	"banger/internal/diskspace"
	"banger/internal/guest"
	"banger/internal/store"
)

// Options are what a Manager is made from.
type Options struct {
	Store *store.Store
	// Agent returns the agent client of the running VM with this id, or
	// an error when the VM is not running (an *api.Error with Conflict).
	Agent func(ctx context.Context, vmID string) (*guest.Client, error)
	// Listen opens a Unix socket at path for the user the daemon serves.
	Listen func(path string) (net.Listener, error)
	// SocketDir holds the sockets, one directory per VM; UID and GID own
	// those directories (the socket directory itself is theirs already).
	SocketDir string
	UID, GID  int
	// LogMax caps the host's mirror of each output stream of a session.
	LogMax int64
	Logger *slog.Logger
}

// Manager runs the sessions of all VMs.
type Manager struct {
	opts   Options
	ctx    context.Context // the daemon's: done when it stops
	cancel context.CancelFunc

	mu      sync.Mutex
	live    map[string]*live       // by key(vmID, name), while running
	vmLocks map[string]*sync.Mutex // by vm id: one start or adoption at a time
}

// live is a running session the manager serves.
type live struct {
	vm     store.VM
	rec    store.Session
	sock   string
	ln     net.Listener
	ctx    context.Context // done when the session ends or the daemon stops
	cancel context.CancelFunc
	done   chan struct{} // closed once the session ended (exited or lost)
	ended  sync.Once

	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	warning string // why the host copy of its output is behind, while it is
}

// warn sets (or, with "", clears) why l's host copy of its output is
// behind; it reports whether that changed.
func (l *live) warn(w string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	changed := l.warning != w
	l.warning = w
	return changed
}

// New returns a Manager; ctx bounds everything it runs.
func New(ctx context.Context, opts Options) *Manager {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(ctx)
	return &Manager{opts: opts, ctx: ctx, cancel: cancel, live: map[string]*live{}, vmLocks: map[string]*sync.Mutex{}}
}

func key(vmID, name string) string { return vmID + "/" + name }

// nameRE is what a session name may be (the agent checks the same).
var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// maxSocketPath is the longest path a Unix socket can have.
const maxSocketPath = 107

// Dir is where the host mirror of a VM's session's output is kept.
func Dir(vm store.VM, name string) string { return filepath.Join(vm.Dir, "sessions", name) }

func (m *Manager) socketPath(vm store.VM, name string) string {
	return filepath.Join(m.opts.SocketDir, vm.Name, name+".sock")
}

// Start starts a session in vm's guest and serves it.
func (m *Manager) Start(ctx context.Context, vm store.VM, req api.StartSessionRequest) (api.Session, error) {
	defer m.vmLock(vm.ID)()
	if err := m.checkStart(ctx, vm, &req); err != nil {
		return api.Session{}, err
	}
	cl, err := m.opts.Agent(ctx, vm.ID)
	if err != nil {
		return api.Session{}, err
	}
	info, err := cl.SessionStart(ctx, guest.SessionStartRequest{Name: req.Name, Argv: req.Argv, Env: req.Env,
		Dir: req.Dir, StdinMode: req.StdinMode, Rows: req.Rows, Cols: req.Cols})
	var re *guest.RemoteError
	if errors.As(err, &re) && re.Kind == guest.KindExist {
		// The guest runs one the host has no record of: a daemon killed
		// after starting it. Take it in, so it is listed and can be stopped.
		m.adoptLocked(ctx, vm, cl)
		return api.Session{}, guestErr(vm, req.Name, "starting", err).(*api.Error).
			WithHint(fmt.Sprintf("it was started before bangerd restarted; attach with banger vm session attach %s %s or stop it with banger vm session stop %s %s",
				vm.Name, req.Name, vm.Name, req.Name))
	}
	if err != nil {
		return api.Session{}, guestErr(vm, req.Name, "starting", err)
	}
	crashpoint.Hit(crashpoint.SessionAfterGuest)
	if err := m.begin(ctx, vm, info); err != nil {
		return api.Session{}, err
	}
	return m.Get(ctx, vm, req.Name)
}

// begin records the session the guest of vm started (info) and serves it.
func (m *Manager) begin(ctx context.Context, vm store.VM, info guest.SessionInfo) error {
	// A session of this name that ended earlier is replaced, logs and all.
	os.RemoveAll(Dir(vm, info.Name))
	rec := store.Session{VMID: vm.ID, Name: info.Name, Argv: info.Argv, Dir: info.Dir, StdinMode: info.StdinMode,
		State: api.SessionRunning, PID: info.PID, ExitCode: -1, StartedAt: info.StartedAt}
	if err := m.opts.Store.PutSession(context.WithoutCancel(ctx), rec); err != nil {
		return err
	}
	crashpoint.Hit(crashpoint.SessionAfterRecord)
	if err := m.serve(vm, rec); err != nil {
		m.opts.Logger.Error("serving session", "vm", vm.Name, "session", rec.Name, "err", err)
		return err
	}
	return nil
}

func (m *Manager) checkStart(ctx context.Context, vm store.VM, req *api.StartSessionRequest) error {
	if !nameRE.MatchString(req.Name) {
		return api.Errorf(api.InvalidArgument, "session name %q: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", req.Name)
	}
	if len(req.Argv) == 0 {
		return api.Errorf(api.InvalidArgument, "session %q: no command given", req.Name).
			WithHint(fmt.Sprintf("banger vm session start %s --name %s -- CMD...", vm.Name, req.Name))
	}
	switch req.StdinMode {
	case "":
		req.StdinMode = guest.StdinPipe
	case guest.StdinPipe, guest.StdinTTY, guest.StdinNull:
	default:
		return api.Errorf(api.InvalidArgument, "stdin mode %q: want pipe, tty or null", req.StdinMode)
	}
	if p := m.socketPath(vm, req.Name); len(p) > maxSocketPath {
		return api.Errorf(api.InvalidArgument, "session %q of vm %q: its socket path %s is longer than a Unix socket allows (%d bytes)",
			req.Name, vm.Name, p, maxSocketPath).WithHint("use a shorter session or VM name, or a shorter BANGER_HOME")
	}
	if old, err := m.opts.Store.SessionByName(ctx, vm.ID, req.Name); err == nil && old.State == api.SessionRunning {
		return api.Errorf(api.Conflict, "session %q already runs in vm %q", req.Name, vm.Name).
			WithHint(fmt.Sprintf("attach with banger vm session attach %s %s, stop it with banger vm session stop %s %s, or choose another --name",
				vm.Name, req.Name, vm.Name, req.Name))
	}
	return nil
}

// guestErr turns an agent's error about session name into an API error.
func guestErr(vm store.VM, name, doing string, err error) error {
	var re *guest.RemoteError
	switch {
	case errors.As(err, &re) && re.Kind == guest.KindExist:
		return api.Errorf(api.Conflict, "session %q already runs in vm %q", name, vm.Name)
	case errors.As(err, &re) && re.Kind == guest.KindNotExist:
		return api.Errorf(api.NotFound, "%s session %q in vm %q: %s", doing, name, vm.Name, re.Message)
	case errors.As(err, &re) && re.Kind == guest.KindInvalid:
		return api.Errorf(api.InvalidArgument, "%s session %q in vm %q: %s", doing, name, vm.Name, re.Message)
	}
	return fmt.Errorf("%s session %q in vm %q: %w", doing, name, vm.Name, err)
}

// serve opens rec's socket and starts mirroring its output.
func (m *Manager) serve(vm store.VM, rec store.Session) error {
	sock := m.socketPath(vm, rec.Name)
	dir := filepath.Dir(sock)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if os.Geteuid() == 0 && m.opts.UID != 0 {
		if err := os.Lchown(dir, m.opts.UID, m.opts.GID); err != nil {
			return err
		}
	}
	ln, err := m.opts.Listen(sock)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(m.ctx)
	l := &live{vm: vm, rec: rec, sock: sock, ln: ln, ctx: ctx, cancel: cancel,
		done: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	m.mu.Lock()
	if old := m.live[key(vm.ID, rec.Name)]; old != nil {
		old.cancel()
	}
	m.live[key(vm.ID, rec.Name)] = l
	m.mu.Unlock()
	go m.accept(l)
	go m.mirror(l)
	return nil
}

func (m *Manager) running(vmID, name string) *live {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.live[key(vmID, name)]
}

// end records that l ended (exited with st, or lost for reason), stops
// serving its socket and, when lost, ends every attach.
func (m *Manager) end(l *live, st *guest.ExitStatus, reason string) {
	m.mu.Lock()
	if m.live[key(l.vm.ID, l.rec.Name)] == l {
		delete(m.live, key(l.vm.ID, l.rec.Name))
	}
	m.mu.Unlock()
	l.ended.Do(func() { m.record(l, st, reason) })
}

func (m *Manager) record(l *live, st *guest.ExitStatus, reason string) {
	rec := l.rec
	rec.EndedAt = time.Now()
	if st != nil {
		rec.State, rec.ExitCode, rec.ExitSignal = api.SessionExited, st.Code, st.Signal
	} else {
		rec.State, rec.Reason = api.SessionLost, reason
	}
	if m.ctx.Err() == nil {
		if _, err := m.opts.Store.EndSession(context.WithoutCancel(m.ctx), rec); err != nil {
			m.opts.Logger.Error("recording the end of a session", "vm", l.vm.Name, "session", rec.Name, "err", err)
		}
		m.opts.Logger.Info("session ended", "vm", l.vm.Name, "session", rec.Name, "state", rec.State,
			"exit_code", rec.ExitCode, "reason", reason)
	}
	close(l.done)
	l.ln.Close()
	os.Remove(l.sock)
	if st == nil {
		l.closeConns()
	}
	l.cancel()
}

func (l *live) closeConns() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for c := range l.conns {
		c.Close()
	}
}

// mirror copies the session's output to the host until it ends,
// reconnecting when the agent connection breaks, and records the end.
// While the host's file system is full it waits, with a warning on the
// session: the guest keeps the output, and the copy goes on from the
// byte it reached once there is room, so nothing is lost.
func (m *Manager) mirror(l *live) {
	dir := Dir(l.vm, l.rec.Name)
	var out, errs *mirror
	defer func() {
		if out != nil {
			out.Close()
		}
		if errs != nil {
			errs.Close()
		}
	}()
	for backoff := time.Duration(0); ; backoff = min(2*backoff+100*time.Millisecond, 2*time.Second) {
		var err error
		if out == nil {
			out, err = openMirror(dir, "stdout", m.opts.LogMax)
		}
		if err == nil && errs == nil {
			errs, err = openMirror(dir, "stderr", m.opts.LogMax)
		}
		var st *guest.ExitStatus
		lost := ""
		if err != nil && !diskspace.IsFull(err) {
			lost = fmt.Sprintf("cannot keep its output on the host: %v", err)
		} else if err == nil {
			st, lost, err = m.mirrorOnce(l, out, errs)
		}
		switch {
		case l.ctx.Err() != nil:
			return // the daemon stops, or VMGone ended the session
		case st != nil:
			m.end(l, st, "")
			return
		case lost != "":
			m.end(l, nil, lost)
			return
		case diskspace.IsFull(err):
			w := fmt.Sprintf("the host copy of its output waits at %d bytes of stdout and %d of stderr: %s is full "+
				"(the guest keeps the output, and the copy goes on, and the session's end is recorded, once there is room there)",
				mirrorSize(dir, "stdout"), mirrorSize(dir, "stderr"), diskspace.Describe(dir))
			if l.warn(w) {
				m.opts.Logger.Warn("session output waits for disk space", "vm", l.vm.Name, "session", l.rec.Name, "dir", dir, "err", err)
			}
			backoff = time.Second
		default:
			m.opts.Logger.Debug("session mirror interrupted; retrying", "vm", l.vm.Name, "session", l.rec.Name, "err", err)
		}
		select {
		case <-l.ctx.Done():
			return
		case <-time.After(backoff):
		}
	}
}

// mirrorOnce follows the session over one agent stream. It returns the
// exit status once the session exited, a reason once it is known to be
// lost, or the error that broke the stream.
func (m *Manager) mirrorOnce(l *live, out, errs *mirror) (*guest.ExitStatus, string, error) {
	actx, cancel := context.WithTimeout(l.ctx, 30*time.Second)
	cl, err := m.opts.Agent(actx, l.vm.ID)
	cancel()
	if err != nil {
		if api.CodeOf(err) == api.Conflict {
			return nil, "the vm stopped", err
		}
		return nil, "", err
	}
	st, _, err := cl.SessionAttach(l.ctx, guest.SessionAttachRequest{Name: l.rec.Name,
		StdoutOffset: out.end(), StderrOffset: errs.end(), Follow: true})
	if errors.Is(err, fs.ErrNotExist) {
		return nil, "the guest no longer has it: the guest rebooted or its agent restarted", err
	}
	if err != nil {
		return nil, "", err
	}
	defer st.Close()
	for {
		f, err := st.Recv()
		if err != nil {
			return nil, "", err
		}
		switch f.Type {
		case guest.FrameStdout:
			_, err = out.Write(f.Payload)
		case guest.FrameStderr:
			_, err = errs.Write(f.Payload)
		case guest.FrameExit:
			var es guest.ExitStatus
			if err := guest.DecodeJSON(f, guest.FrameExit, &es); err != nil {
				return nil, "", err
			}
			return &es, "", nil
		case guest.FrameEOF:
			return nil, "", errors.New("the agent ended a followed attach")
		}
		if diskspace.IsFull(err) {
			return nil, "", err // mirror waits for room
		}
		if err != nil {
			return nil, fmt.Sprintf("cannot keep its output on the host: %v", err), err
		}
		if f.Type == guest.FrameStdout || f.Type == guest.FrameStderr {
			l.warn("") // there is room again
		}
	}
}

// accept serves l's socket: each connection is one attach.
func (m *Manager) accept(l *live) {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		go m.attach(l, c)
	}
}

// attach bridges one socket client to the session: what it writes goes
// to the session's stdin (dropped in null mode), the session's stdout
// (its terminal in tty mode) comes back, all as plain bytes. The client
// closing its side (EOF) detaches; the session ending closes the
// connection once its last output is sent.
func (m *Manager) attach(l *live, c net.Conn) {
	defer c.Close()
	l.mu.Lock()
	l.conns[c] = struct{}{}
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		delete(l.conns, c)
		l.mu.Unlock()
	}()
	if isDone(l.done) {
		return
	}
	actx, cancel := context.WithTimeout(l.ctx, 30*time.Second)
	cl, err := m.opts.Agent(actx, l.vm.ID)
	cancel()
	if err != nil {
		return
	}
	input := l.rec.StdinMode != guest.StdinNull
	st, _, err := cl.SessionAttach(l.ctx, guest.SessionAttachRequest{Name: l.rec.Name,
		StdoutOffset: -1, StderrOffset: -1, Stdout: true, Follow: true, Input: input})
	if err != nil {
		m.opts.Logger.Debug("attaching to a session", "vm", l.vm.Name, "session", l.rec.Name, "err", err)
		return
	}
	defer st.Close()
	go func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := c.Read(buf)
			if n > 0 && input {
				if _, werr := st.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		st.Close() // detach: the session goes on
	}()
	for {
		f, err := st.Recv()
		if err != nil || f.Type == guest.FrameExit || f.Type == guest.FrameEOF {
			return
		}
		if f.Type == guest.FrameStdout {
			if _, err := c.Write(f.Payload); err != nil {
				return
			}
		}
	}
}

func isDone(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// VMGone ends every running session of the VM with vmID: its VM stopped
// (reason says how), so they are lost; their logs stay.
func (m *Manager) VMGone(vmID, reason string) {
	m.mu.Lock()
	var gone []*live
	for _, l := range m.live {
		if l.vm.ID == vmID {
			gone = append(gone, l)
		}
	}
	m.mu.Unlock()
	for _, l := range gone {
		m.end(l, nil, reason)
	}
	// Records of sessions no daemon served (for one, a VM that stopped
	// while no daemon ran) end too.
	if m.ctx.Err() != nil {
		return
	}
	recs, _ := m.opts.Store.ListSessions(m.ctx, vmID)
	for _, rec := range recs {
		if rec.State == api.SessionRunning && m.running(vmID, rec.Name) == nil {
			rec.State, rec.Reason, rec.EndedAt = api.SessionLost, reason, time.Now()
			m.opts.Store.EndSession(m.ctx, rec)
		}
	}
}

// Forget drops what is served for the VM with vmID before it is deleted.
// Its records and mirrors go with the VM's row and directory.
func (m *Manager) Forget(vm store.VM) {
	m.VMGone(vm.ID, "the vm was deleted")
	os.RemoveAll(filepath.Join(m.opts.SocketDir, vm.Name))
}

// Restore serves again the sessions an earlier daemon served, at its
// start: those of running VMs resume (they may have ended meanwhile; the
// mirror catches up and records it), the others are lost. running
// reports whether a VM's VMM runs.
func (m *Manager) Restore(ctx context.Context, running func(vmID string) bool) {
	recs, err := m.opts.Store.ListSessions(ctx, "")
	if err != nil {
		m.opts.Logger.Error("listing sessions", "err", err)
		return
	}
	for _, rec := range recs {
		if rec.State != api.SessionRunning {
			continue
		}
		vm, err := m.opts.Store.VMByName(ctx, rec.VMID)
		if err != nil {
			continue
		}
		if !running(vm.ID) {
			rec.State, rec.Reason, rec.EndedAt = api.SessionLost, "its vm was not running when bangerd started", time.Now()
			m.opts.Store.EndSession(ctx, rec)
			continue
		}
		if err := m.serve(vm, rec); err != nil {
			m.opts.Logger.Error("serving session again", "vm", vm.Name, "session", rec.Name, "err", err)
			continue
		}
		m.opts.Logger.Info("serving session again", "vm", vm.Name, "session", rec.Name)
	}
	go m.adoptRunning(running)
}

// Close stops serving (the sessions go on in their guests).
func (m *Manager) Close() {
	m.cancel()
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, l := range m.live {
		l.ln.Close()
		os.Remove(l.sock)
		l.closeConns()
		delete(m.live, k)
	}
}

// Get returns the session of vm called name.
func (m *Manager) Get(ctx context.Context, vm store.VM, name string) (api.Session, error) {
	rec, err := m.opts.Store.SessionByName(ctx, vm.ID, name)
	if errors.Is(err, store.ErrNotExist) {
		return api.Session{}, m.notFound(ctx, vm, name)
	}
	if err != nil {
		return api.Session{}, err
	}
	return m.view(vm, rec), nil
}

func (m *Manager) notFound(ctx context.Context, vm store.VM, name string) error {
	recs, _ := m.opts.Store.ListSessions(ctx, vm.ID)
	var names []string
	for _, r := range recs {
		names = append(names, r.Name)
	}
	have := "it has none"
	if len(names) > 0 {
		have = "it has: " + strings.Join(names, ", ")
	}
	return api.Errorf(api.NotFound, "vm %q has no session %q (%s)", vm.Name, name, have).
		WithHint(fmt.Sprintf("banger vm session list %s", vm.Name))
}

// List returns vm's sessions, oldest first.
func (m *Manager) List(ctx context.Context, vm store.VM) ([]api.Session, error) {
	recs, err := m.opts.Store.ListSessions(ctx, vm.ID)
	if err != nil {
		return nil, err
	}
	out := []api.Session{}
	for _, r := range recs {
		out = append(out, m.view(vm, r))
	}
	return out, nil
}

func (m *Manager) view(vm store.VM, r store.Session) api.Session {
	s := api.Session{VM: vm.Name, Name: r.Name, Argv: r.Argv, Dir: r.Dir, StdinMode: r.StdinMode, State: r.State,
		PID: r.PID, Signal: r.ExitSignal, Reason: r.Reason, StartedAt: r.StartedAt, EndedAt: r.EndedAt,
		StdoutBytes: mirrorSize(Dir(vm, r.Name), "stdout"), StderrBytes: mirrorSize(Dir(vm, r.Name), "stderr")}
	if r.State == api.SessionExited {
		code := r.ExitCode
		s.ExitCode = &code
	}
	if l := m.running(vm.ID, r.Name); l != nil {
		s.Socket = l.sock
		l.mu.Lock()
		s.Attached = len(l.conns)
		s.Warning = l.warning
		l.mu.Unlock()
	}
	return s
}

// Stop sends sig to a running session and waits up to timeout for it to
// end, then kills it.
func (m *Manager) Stop(ctx context.Context, vm store.VM, name string, sig syscall.Signal, timeout time.Duration) (api.Session, error) {
	s, err := m.Get(ctx, vm, name)
	if err != nil {
		return s, err
	}
	l := m.running(vm.ID, name)
	if l == nil {
		return s, notRunning(s)
	}
	cl, err := m.opts.Agent(ctx, vm.ID)
	if err != nil {
		return s, err
	}
	for _, sg := range []syscall.Signal{sig, syscall.SIGKILL} {
		if _, err := cl.SessionControl(ctx, guest.SessionControlRequest{Name: name, Signal: int(sg)}); err != nil {
			return s, guestErr(vm, name, "stopping", err)
		}
		select {
		case <-l.done:
			return m.Get(ctx, vm, name)
		case <-ctx.Done():
			return s, ctx.Err()
		case <-time.After(timeout):
		}
		timeout = 10 * time.Second
	}
	return s, api.Errorf(api.Timeout, "session %q of vm %q did not end after SIGKILL", name, vm.Name)
}

func notRunning(s api.Session) error {
	var e *api.Error
	switch {
	case s.State == api.SessionExited:
		e = api.Errorf(api.Conflict, "session %q of vm %q is not running: it exited with code %d", s.Name, s.VM, *s.ExitCode)
	default:
		e = api.Errorf(api.Conflict, "session %q of vm %q is not running: it was lost (%s)", s.Name, s.VM, s.Reason)
	}
	return e.WithHint(fmt.Sprintf("its output is in banger vm session logs %s %s", s.VM, s.Name))
}

// Resize changes the terminal size of a running tty session.
func (m *Manager) Resize(ctx context.Context, vm store.VM, name string, rows, cols uint16) error {
	s, err := m.Get(ctx, vm, name)
	if err != nil {
		return err
	}
	if m.running(vm.ID, name) == nil {
		return notRunning(s)
	}
	if s.StdinMode != guest.StdinTTY {
		return api.Errorf(api.InvalidArgument, "session %q of vm %q has no terminal to resize (stdin mode %s)", name, vm.Name, s.StdinMode)
	}
	cl, err := m.opts.Agent(ctx, vm.ID)
	if err != nil {
		return err
	}
	_, err = cl.SessionControl(ctx, guest.SessionControlRequest{Name: name, Rows: rows, Cols: cols})
	if err != nil {
		return guestErr(vm, name, "resizing", err)
	}
	return nil
}

// Streams a session's logs can be read from.
var Streams = []string{"stdout", "stderr"}

// Logs writes what the host mirror of stream holds to w (fromEnd: only
// what comes next); with follow it goes on until the session ends or ctx
// is done.
func (m *Manager) Logs(ctx context.Context, vm store.VM, name, stream string, fromEnd, follow bool, w io.Writer) error {
	if !slices.Contains(Streams, stream) {
		return api.Errorf(api.InvalidArgument, "stream %q: want stdout or stderr", stream)
	}
	if _, err := m.Get(ctx, vm, name); err != nil {
		return err
	}
	ended := func() bool { return m.running(vm.ID, name) == nil }
	return copyMirror(w, Dir(vm, name), stream, fromEnd, follow, ended, ctx.Done())
}
