package agent

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"banger/internal/guest"
)

// Sessions live in the agent's memory: the agent owns their processes
// and appends their output to files under its session directory. If the
// agent restarts, its sessions are forgotten (their files stay until a
// session of the same name replaces them).

// Output streams of a session, as indexes.
const (
	streamStdout = 0
	streamStderr = 1
)

var (
	streamFiles  = [2]string{"stdout", "stderr"}
	streamFrames = [2]guest.FrameType{guest.FrameStdout, guest.FrameStderr}
)

// sessionTable holds the agent's sessions by name.
type sessionTable struct {
	mu     sync.Mutex // guards byName; held across a start, so a name is taken once
	byName map[string]*session
}

// session is one long-lived command the agent owns.
type session struct {
	info guest.SessionInfo // the fixed fields: Name, Argv, Dir, StdinMode, PID, StartedAt
	dir  string            // where its output files are
	proc *process

	inputMu sync.Mutex // serializes writes to proc.stdin, so chunks interleave whole

	mu          sync.Mutex // guards the fields below
	out         [2]*os.File
	size        [2]int64          // bytes appended to each output file
	order       writeOrder        // how the two grew
	changed     chan struct{}     // closed, and replaced, at every change
	exit        *guest.ExitStatus // set once exited and all output is appended
	endedAt     time.Time
	attached    int  // attaches open with Input
	stdinClosed bool // by a control request
	writeErr    bool // an append failed (logged once)
}

// writeOrder remembers the order in which a session's two output streams
// grew, so that readers replay them interleaved as they were written.
// Each run is a stretch of one stream; appends to the stream of the last
// run extend it. Only the latest maxRuns runs are kept: output before
// base is replayed stream by stream.
type writeOrder struct {
	runs    []run
	dropped int64    // runs forgotten from the front
	base    [2]int64 // ends of the forgotten runs, per stream
}

type run struct {
	stream int
	end    int64 // the stream's size at the end of the run
}

// maxRuns caps a session's writeOrder (16 bytes a run); a variable for tests.
var maxRuns = 1 << 16

func (o *writeOrder) add(stream int, end int64) {
	if n := len(o.runs); n > 0 && o.runs[n-1].stream == stream {
		o.runs[n-1].end = end
		return
	}
	if len(o.runs) >= maxRuns {
		half := len(o.runs) / 2
		for _, r := range o.runs[:half] {
			o.base[r.stream] = r.end
		}
		o.runs = append(o.runs[:0], o.runs[half:]...)
		o.dropped += int64(half)
	}
	o.runs = append(o.runs, run{stream: stream, end: end})
}

// SetSessionDir makes s keep session output under dir rather than
// guest.SessionDir: for an agent served in-process by tests.
func (s *Server) SetSessionDir(dir string) { s.sessionDir = dir }

// sessionStart runs one OpSessionStart stream.
func (s *Server) sessionStart(fw *guest.FrameWriter, req *guest.SessionStartRequest) error {
	ss, err := s.startSession(req)
	if err != nil {
		return fw.WriteError(err)
	}
	info := ss.snapshotInfo()
	return fw.WriteJSON(guest.FrameResponse, guest.Response{Session: &info})
}

// startSession validates req, starts its process and records it. Nothing
// is changed when it fails.
func (s *Server) startSession(req *guest.SessionStartRequest) (*session, error) {
	if err := guest.ValidateSessionName(req.Name); err != nil {
		return nil, err
	}
	if len(req.Argv) == 0 || req.Argv[0] == "" {
		return nil, invalid("session %q: empty command", req.Name)
	}
	mode := cmp.Or(req.StdinMode, guest.StdinPipe)
	if mode != guest.StdinPipe && mode != guest.StdinTTY && mode != guest.StdinNull {
		return nil, invalid("session %q: bad stdin mode %q (want %s, %s or %s)",
			req.Name, req.StdinMode, guest.StdinPipe, guest.StdinTTY, guest.StdinNull)
	}
	cmd, err := newCommand(req.Argv, req.Env, req.Dir, mode == guest.StdinTTY)
	if err != nil {
		return nil, sessionStartError(req.Name, err)
	}

	t := &s.sessions
	t.mu.Lock()
	defer t.mu.Unlock()
	if old := t.byName[req.Name]; old != nil && old.running() {
		return nil, &guest.RemoteError{Kind: guest.KindExist, Message: fmt.Sprintf(
			"session %q is running already (pid %d): stop it or pick another name", req.Name, old.info.PID)}
	}
	if err := os.MkdirAll(s.sessionDir, 0o700); err != nil {
		return nil, fmt.Errorf("session directory: %w", err)
	}
	tmp, err := os.MkdirTemp(s.sessionDir, ".new-"+req.Name+"-")
	if err != nil {
		return nil, fmt.Errorf("session directory: %w", err)
	}
	ss := &session{changed: make(chan struct{})}
	fail := func(err error) (*session, error) {
		closeFiles(ss.out[:])
		os.RemoveAll(tmp)
		return nil, err
	}
	for i, name := range streamFiles {
		if ss.out[i], err = os.OpenFile(filepath.Join(tmp, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600); err != nil {
			return fail(fmt.Errorf("session output: %w", err))
		}
	}
	p, err := s.startCommand(cmd, procSpec{tty: mode == guest.StdinTTY, rows: req.Rows, cols: req.Cols,
		nullStdin: mode == guest.StdinNull})
	if err != nil {
		return fail(sessionStartError(req.Name, err))
	}
	ss.proc = p
	ss.dir = filepath.Join(s.sessionDir, req.Name)
	ss.info = guest.SessionInfo{Name: req.Name, Argv: req.Argv, Dir: p.cmd.Dir, StdinMode: mode,
		PID: p.pid, StartedAt: time.Now().UTC()}
	if err := replaceDir(tmp, ss.dir); err != nil {
		_ = unix.Kill(-p.pid, unix.SIGKILL)
		_ = p.cmd.Wait()
		p.closeAll()
		s.procs.forget(p.pid)
		return fail(fmt.Errorf("session output: %w", err))
	}
	t.byName[req.Name] = ss
	s.logger.Info("session started", "name", req.Name, "pid", p.pid, "argv", req.Argv)
	go s.runSession(ss)
	return ss, nil
}

// sessionStartError explains why a session's command cannot run.
func sessionStartError(name string, err error) error {
	var ce *commandError
	if !errors.As(err, &ce) {
		return err
	}
	msg := strings.TrimPrefix(ce.msg, "sh: ")
	if ce.code == 127 {
		return &guest.RemoteError{Kind: guest.KindNotExist, Message: fmt.Sprintf(
			"session %q: command %s (install it in the guest or give its full path)", name, msg)}
	}
	return invalid("session %q: cannot execute %s", name, msg)
}

// replaceDir puts directory tmp in place of dir, removing what dir held.
// Open descriptors on the old files stay readable.
func replaceDir(tmp, dir string) error {
	if _, err := os.Lstat(dir); err == nil {
		old := tmp + ".old"
		if err := os.Rename(dir, old); err != nil {
			return err
		}
		defer os.RemoveAll(old)
	}
	return os.Rename(tmp, dir)
}

// runSession appends the session's output to its files until its process
// exits and the output ends, then records how it exited.
func (s *Server) runSession(ss *session) {
	p := ss.proc
	var pumps sync.WaitGroup
	for i, f := range p.output {
		pumps.Go(func() { ss.record(s, i, f) })
	}
	waitErr := p.cmd.Wait()
	ended := time.Now().UTC()
	s.drainOutput(p, &pumps)
	s.procs.forget(p.pid)
	st := exitStatus(p.cmd, waitErr)
	ss.mu.Lock()
	ss.exit, ss.endedAt = &st, ended
	closeFiles(ss.out[:])
	ss.broadcastLocked()
	ss.mu.Unlock()
	s.logger.Info("session exited", "name", ss.info.Name, "pid", p.pid, "code", st.Code)
}

// record appends what f yields to the session's output stream.
func (ss *session) record(s *Server, stream int, f *os.File) {
	buf := make([]byte, guest.ChunkSize)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			ss.append(s, stream, buf[:n])
		}
		if err != nil {
			return
		}
	}
}

func (ss *session) append(s *Server, stream int, p []byte) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	n, err := ss.out[stream].Write(p)
	if n > 0 {
		ss.size[stream] += int64(n)
		ss.order.add(stream, ss.size[stream])
		ss.broadcastLocked()
	}
	if err != nil && !ss.writeErr {
		ss.writeErr = true
		s.logger.Error("keeping session output; output is lost", "name", ss.info.Name, "err", err)
	}
}

// broadcastLocked wakes everyone waiting for a change.
func (ss *session) broadcastLocked() {
	close(ss.changed)
	ss.changed = make(chan struct{})
}

func (ss *session) running() bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.exit == nil
}

func (ss *session) snapshotInfo() guest.SessionInfo {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.infoLocked()
}

func (ss *session) infoLocked() guest.SessionInfo {
	info := ss.info
	info.State = guest.SessionRunning
	if ss.exit != nil {
		st := *ss.exit
		info.State, info.Exit, info.EndedAt = guest.SessionExited, &st, ss.endedAt
	}
	info.StdoutBytes, info.StderrBytes = ss.size[streamStdout], ss.size[streamStderr]
	info.Attached = ss.attached
	return info
}

// lookupLocked returns the named session; the error lists the sessions there
// are. The caller holds t.mu.
func (t *sessionTable) lookupLocked(name string) (*session, error) {
	if ss := t.byName[name]; ss != nil {
		return ss, nil
	}
	names := make([]string, 0, len(t.byName))
	for n := range t.byName {
		names = append(names, n)
	}
	slices.Sort(names)
	have := "there are none"
	if len(names) > 0 {
		have = "there are: " + strings.Join(names, ", ")
	}
	return nil, &guest.RemoteError{Kind: guest.KindNotExist, Message: fmt.Sprintf("no session %q in the guest (%s)", name, have)}
}

func (t *sessionTable) lookup(name string) (*session, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lookupLocked(name)
}

// sessionList runs one OpSessionList stream.
func (s *Server) sessionList(fw *guest.FrameWriter) error {
	s.sessions.mu.Lock()
	all := make([]*session, 0, len(s.sessions.byName))
	for _, ss := range s.sessions.byName {
		all = append(all, ss)
	}
	s.sessions.mu.Unlock()
	infos := make([]guest.SessionInfo, 0, len(all))
	for _, ss := range all {
		infos = append(infos, ss.snapshotInfo())
	}
	slices.SortFunc(infos, func(a, b guest.SessionInfo) int {
		return cmp.Or(a.StartedAt.Compare(b.StartedAt), strings.Compare(a.Name, b.Name))
	})
	return fw.WriteJSON(guest.FrameResponse, guest.Response{Sessions: infos})
}

// sessionControl runs one OpSessionControl stream.
func (s *Server) sessionControl(fw *guest.FrameWriter, req *guest.SessionControlRequest) error {
	ss, err := s.sessions.lookup(req.Name)
	if err == nil {
		err = ss.control(req)
	}
	if err != nil {
		return fw.WriteError(err)
	}
	info := ss.snapshotInfo()
	return fw.WriteJSON(guest.FrameResponse, guest.Response{Session: &info})
}

// control checks the whole request, then acts on it.
func (ss *session) control(req *guest.SessionControlRequest) error {
	resize := req.Rows != 0 || req.Cols != 0
	if req.Signal == 0 && !resize && !req.CloseStdin {
		return nil
	}
	name := ss.info.Name
	ss.mu.Lock()
	exit := ss.exit
	ss.mu.Unlock()
	switch {
	case exit != nil:
		return invalid("session %q has exited (exit code %d); see its output", name, exit.Code)
	case req.Signal < 0 || req.Signal > 64:
		return invalid("session %q: bad signal %d (want 1 to 64)", name, req.Signal)
	case resize && ss.proc.tty == nil:
		return invalid("session %q has no tty to resize (stdin mode %s)", name, ss.info.StdinMode)
	case resize && (req.Rows == 0 || req.Cols == 0):
		return invalid("session %q: resizing needs both rows and columns (got %dx%d)", name, req.Rows, req.Cols)
	case req.CloseStdin && ss.proc.stdin == nil:
		return invalid("session %q has no stdin to close (stdin mode %s)", name, ss.info.StdinMode)
	}
	if resize {
		if err := pty.Setsize(ss.proc.tty, &pty.Winsize{Rows: req.Rows, Cols: req.Cols}); err != nil {
			return fmt.Errorf("resizing session %q: %w", name, err)
		}
	}
	if req.CloseStdin {
		ss.closeStdin()
	}
	if req.Signal != 0 {
		err := unix.Kill(-ss.info.PID, unix.Signal(req.Signal))
		if err != nil && !errors.Is(err, unix.ESRCH) { // ESRCH: it is exiting
			return fmt.Errorf("signalling session %q: %w", name, err)
		}
	}
	return nil
}

// closeStdin closes the session's stdin pipe, or types ^D on its tty.
func (ss *session) closeStdin() {
	if ss.proc.tty != nil {
		_ = ss.writeInput([]byte{4})
		return
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if !ss.stdinClosed {
		ss.stdinClosed = true
		ss.proc.stdin.Close() // wakes a writer blocked on a full pipe
	}
}

// writeInput writes one chunk to the session's stdin.
func (ss *session) writeInput(p []byte) error {
	ss.inputMu.Lock()
	defer ss.inputMu.Unlock()
	_, err := ss.proc.stdin.Write(p)
	return err
}
